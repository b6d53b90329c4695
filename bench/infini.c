/*
 * bench/infini.c -- Infini-attention beside dense attention at the same model shape, in one run
 * (issue 4, item 5): the training step, and streaming tokens/s against stream length.
 *
 *   training   ms/step and tokens/s of the infini model (linear and/or delta memory update) and
 *              of the dense model, random tokens, AdamW; median of --steps steps, best of
 *              --rounds interleaved rounds (dense, linear, delta, dense, ...), so that a loaded
 *              machine moves every side alike. Ratios are to dense.
 *   streaming  one session per rule fed random tokens in chunks of --chunk (1: decode), never
 *              reset, to --len tokens (default 1M); tokens/s over the last tokens before each
 *              checkpoint (10K, 100K, 1M, ..., and --len; the best of 4 parts of up to 2048
 *              tokens, a loaded machine's pauses cost less so), and the state's live bytes. The dense model cannot stream past its window (n_ctx): its decode cost per
 *              token is measured inside the window, over the whole window and over its last
 *              quarter (where it is highest), best of 3 fresh sessions, first and then again
 *              right after every infini figure; each ratio uses the dense figure next to it.
 *
 * Weights are random (mnemo_model_init): the cost of a step does not depend on what they say.
 * Cost per token flat in the stream length is the claim the streaming table checks.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mni.h"
#include "mnemo.h"

static const char USAGE[] =
    "usage: bench_infini [options]\n"
    "  --n_layer N        transformer blocks [4]\n"
    "  --d_model N        model width [128]\n"
    "  --n_head N         attention heads [4]\n"
    "  --n_ctx N          training window T, and the dense model's streaming window [512]\n"
    "  --segment N        infini segment length, 1 <= N <= n_ctx [64]\n"
    "  --mem_update R     linear, delta or both [both]\n"
    "  --batch N          training windows per step [8]\n"
    "  --steps N          timed training steps per round (median) [5]\n"
    "  --warmup N         untimed training steps first [1]\n"
    "  --rounds N         interleaved training rounds (best median kept) [2]\n"
    "  --threads N        training threads [2]\n"
    "  --len N            streamed tokens per rule, >= 1 [1000000]\n"
    "  --chunk N          tokens per session call (1 = decode) [1]\n"
    "  --stream_threads N streaming threads [1]\n"
    "  --no_train         streaming only;  --no_stream  training only\n"
    "Unless OMP_WAIT_POLICY is set, the program re-executes itself with OMP_WAIT_POLICY=passive\n"
    "(as the mnemo tool does; docs/internals/threading.md).\n";

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "bench_infini: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see bench_infini --help)\n");
    va_end(ap);
    exit(2);
}

static long parse_long(const char *opt, const char *v, long lo)
{
    char *end = NULL;
    if (!v) die("%s needs a value", opt);
    long x = strtol(v, &end, 10);
    if (end == v || *end || x < lo) die("%s needs an integer >= %ld, got '%s'", opt, lo, v);
    return x;
}

static struct mnemo_model *new_model(const struct mnemo_model_config *c)
{
    struct mnemo_model *m;
    if (mnemo_model_create(&m, c) != MNEMO_OK) {
        fprintf(stderr, "bench_infini: %s\n", mnemo_last_error());
        exit(1);
    }
    mnemo_model_init(m, 1);
    return m;
}

/* A session fed random tokens (BOS first), at most chunk per call. */
struct feeder {
    struct mnemo_session *s;
    uint64_t rng;
    long pos;
    int chunk;
    uint16_t *x;
};

static void feed(struct feeder *f, int n)
{
    for (int i = 0; i < n; i++) {
        f->rng = f->rng * 6364136223846793005ULL + 1442695040888963407ULL;
        f->x[i] = f->pos + i == 0 ? MNEMO_TOK_BOS : (uint16_t)((f->rng >> 33) % 256);
    }
    const float *lg;
    if (mnemo_session_feed(f->s, f->x, n, &lg) != MNEMO_OK) {
        fprintf(stderr, "bench_infini: at token %ld: %s\n", f->pos, mnemo_last_error());
        exit(1);
    }
    f->pos += n;
}

static void feeder_init(struct feeder *f, struct mnemo_model *m, int chunk)
{
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = chunk;
    memset(f, 0, sizeof(*f));
    f->rng = 12345, f->chunk = chunk;
    f->x = malloc((size_t)chunk * sizeof(uint16_t));
    if (!f->x || mnemo_session_create_ex(&f->s, m, &sc) != MNEMO_OK) {
        fprintf(stderr, "bench_infini: %s\n", f->x ? mnemo_last_error() : "out of memory");
        exit(1);
    }
}

/* Feeds up to position `to`, timing the tokens from `from` on; returns their tokens/s. */
static double feed_to(struct feeder *f, long from, long to)
{
    double t0 = 0;
    if (f->pos >= from) t0 = mni_now();
    while (f->pos < to) {
        long lim = f->pos < from ? from : to;
        int n = lim - f->pos < f->chunk ? (int)(lim - f->pos) : f->chunk;
        feed(f, n);
        if (f->pos == from) t0 = mni_now();
    }
    return (double)(to - from) / (mni_now() - t0);
}

/* The dense model's decode inside its window of T tokens, best of 3 fresh sessions: tokens/s
 * over the window (*all) and over its last quarter (*last, its costliest stretch); *kib: the KV
 * cache when full. */
static void dense_decode(struct mnemo_model *md, int chunk, int T, double *all, double *last,
                         double *kib)
{
    *all = *last = 0;
    for (int rep = 0; rep < 3; rep++) {
        struct feeder fd;
        feeder_init(&fd, md, chunk);
        const long q = T - (T / 4 > 0 ? T / 4 : 1);
        const double t0 = mni_now();
        feed_to(&fd, 0, q);
        const double l = feed_to(&fd, q, T), a = (double)T / (mni_now() - t0);
        *last = l > *last ? l : *last;
        *all = a > *all ? a : *all;
        *kib = mnemo_session_live_bytes(fd.s) / 1024.0;
        mnemo_session_free(fd.s), free(fd.x);
    }
}

#define MAX_MARKS 16

int main(int argc, char **argv)
{
    if (!getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "passive", 1) == 0) {
        setenv("GOMP_SPINCOUNT", "3000", 0);
        execv("/proc/self/exe", argv);
    }
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = 4, c.d_model = 128, c.n_head = 4, c.n_ctx = 512, c.vocab = MNEMO_TOK_VOCAB;
    int segment = 64, B = 8, steps = 5, warmup = 1, rounds = 2, threads = 2, chunk = 1;
    int sthreads = 1, do_train = 1, do_stream = 1;
    long len = 1000000;
    const char *rule = "both";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        }
        if (!strcmp(a, "--no_train")) {
            do_train = 0;
            continue;
        }
        if (!strcmp(a, "--no_stream")) {
            do_stream = 0;
            continue;
        }
        i++;
        if (!strcmp(a, "--n_layer")) c.n_layer = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--d_model")) c.d_model = (int)parse_long(a, v, 2);
        else if (!strcmp(a, "--n_head")) c.n_head = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--n_ctx")) c.n_ctx = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--segment")) segment = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--batch")) B = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--steps")) steps = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--warmup")) warmup = (int)parse_long(a, v, 0);
        else if (!strcmp(a, "--rounds")) rounds = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--threads")) threads = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--len")) len = parse_long(a, v, 1);
        else if (!strcmp(a, "--chunk")) chunk = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--stream_threads")) sthreads = (int)parse_long(a, v, 1);
        else if (!strcmp(a, "--mem_update")) {
            if (!v || (strcmp(v, "both") && strcmp(v, "linear") && strcmp(v, "delta")))
                die("--mem_update '%s': expected linear, delta or both", v ? v : "(missing)");
            rule = v;
        } else {
            die("unknown option '%s'", a);
        }
    }
    if (segment > c.n_ctx) die("--segment %d must be <= --n_ctx %d", segment, c.n_ctx);
    /* infini's update rules (its option mem_update) */
    static const char *const rule_names[2] = {"linear", "delta"};
    const char *rules[2];
    int n_rules = 0;
    for (int r = 0; r < 2; r++)
        if (!strcmp(rule, "both") || !strcmp(rule, rule_names[r])) rules[n_rules++] = rule_names[r];

    /* the configs: [0] dense, [1..] infini per rule; every one is checked by model_create */
    struct mnemo_model_config cf[3];
    char opts[2][64];
    cf[0] = c;
    cf[0].attn_kind = MNEMO_ATTN_KIND_DENSE;
    for (int r = 0; r < n_rules; r++) {
        cf[1 + r] = c;
        cf[1 + r].attn_kind = MNEMO_ATTN_KIND_INFINI;
        snprintf(opts[r], sizeof(opts[r]), "segment=%d,mem_update=%s", segment, rules[r]);
        cf[1 + r].attn_opts = opts[r];
    }
    const char *name[3] = {"dense", NULL, NULL};
    char names[2][32];
    for (int r = 0; r < n_rules; r++) {
        snprintf(names[r], sizeof(names[r]), "infini %s", rules[r]);
        name[1 + r] = names[r];
    }
    printf("bench_infini: L=%d d=%d H=%d (head dim %d) T=%d, infini segment %d, random weights\n",
           c.n_layer, c.d_model, c.n_head, c.d_model / c.n_head, c.n_ctx, segment);

    if (do_train) {
        mnemo_set_threads(threads);
        struct mnemo_bench_result best[3];
        for (int k = 0; k < 1 + n_rules; k++) best[k].step_s = 1e30;
        for (int round = 0; round < rounds; round++)
            for (int k = 0; k < 1 + n_rules; k++) {
                struct mnemo_bench_result res;
                if (mnemo_bench_train_opt(&cf[k], B, c.n_ctx, steps, warmup, MNEMO_OPT_ADAMW,
                                          &res) != MNEMO_OK) {
                    fprintf(stderr, "bench_infini: %s training: %s\n", name[k], mnemo_last_error());
                    return 1;
                }
                if (res.step_s < best[k].step_s) best[k] = res;
            }
        printf("training step: B=%d, AdamW, %d thread(s), median of %d steps, best of %d "
               "interleaved rounds\n", B, threads, steps, rounds);
        printf("  %-14s | %9s | %9s | %12s | %14s\n", "model", "ms/step", "tokens/s",
               "step / dense", "tokens/s ratio");
        for (int k = 0; k < 1 + n_rules; k++)
            printf("  %-14s | %9.1f | %9.0f | %11.3fx | %13.3fx\n", name[k], 1e3 * best[k].step_s,
                   best[k].tokens_per_s, best[k].step_s / best[0].step_s,
                   best[k].tokens_per_s / best[0].tokens_per_s);
    }

    if (do_stream) {
        mnemo_set_threads(sthreads);
        struct mnemo_model *md = new_model(&cf[0]);
        double d_all, d_last, d_kib;
        dense_decode(md, chunk, c.n_ctx, &d_all, &d_last, &d_kib);
        long marks[MAX_MARKS];
        int n_marks = 0;
        for (long mk = 10000; mk < len && n_marks < MAX_MARKS - 1; mk *= 10) marks[n_marks++] = mk;
        marks[n_marks++] = len;
        double tps[2][MAX_MARKS], dns[2][MAX_MARKS], kib[2][MAX_MARKS], bound_kib = 0;
        for (int r = 0; r < n_rules; r++) {
            struct mnemo_model *mi = new_model(&cf[1 + r]);
            struct feeder fi;
            feeder_init(&fi, mi, chunk);
            for (int k = 0; k < n_marks; k++) {
                /* the window: 8192 tokens or half the stretch, in 4 parts of a whole number of
                 * segments (when they are longer than one); the best part counts */
                long w = marks[k] / 8 < 2048 ? marks[k] / 8 : 2048;
                w = w > segment ? w / segment * segment : (w > 0 ? w : 1);
                feed_to(&fi, fi.pos, marks[k] - 4 * w > fi.pos ? marks[k] - 4 * w : fi.pos);
                tps[r][k] = 0;
                while (fi.pos < marks[k]) {
                    const long to = fi.pos + w < marks[k] ? fi.pos + w : marks[k];
                    const double x = feed_to(&fi, fi.pos, to);
                    tps[r][k] = x > tps[r][k] ? x : tps[r][k];
                }
                kib[r][k] = mnemo_session_live_bytes(fi.s) / 1024.0;
                double all, kb; /* dense again, now: the load of the machine drifts */
                dense_decode(md, chunk, c.n_ctx, &all, &dns[r][k], &kb);
            }
            bound_kib = mnemo_session_state_bytes(fi.s) / 1024.0;
            mnemo_session_free(fi.s), free(fi.x), mnemo_model_free(mi);
        }
        mnemo_model_free(md);
        printf("streaming: chunks of %d token(s), %d thread(s); tokens/s: best of 4 parts of the "
               "last tokens before each position (up to 4 x 2048)\n", chunk, sthreads);
        printf("  dense, inside its window of %d (best of 3): %.0f tokens/s over the window, %.0f "
               "over its last quarter; KV cache %.1f KiB at %d\n", c.n_ctx, d_all, d_last, d_kib,
               c.n_ctx);
        printf("  infini state: bound %.1f KiB whatever the length; live = the memory + the tokens "
               "of the current segment\n", bound_kib);
        printf("  dense = its last quarter again, measured right after each infini figure; the "
               "ratio is to it\n");
        printf("  %10s", "position");
        for (int r = 0; r < n_rules; r++)
            printf(" | %-14s %7s %8s %9s", name[1 + r], "dense", "ratio", "live KiB");
        printf("\n");
        for (int k = 0; k < n_marks; k++) {
            printf("  %10ld", marks[k]);
            for (int r = 0; r < n_rules; r++)
                printf(" | %14.0f %7.0f %7.3fx %9.1f", tps[r][k], dns[r][k], tps[r][k] / dns[r][k],
                       kib[r][k]);
            printf("\n");
        }
    }
    return 0;
}
