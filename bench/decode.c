/*
 * bench/decode.c -- streaming decode cost against stream length: dense attention (a KV cache of
 * every token) beside selective attention pruned to a per-layer budget, in one invocation.
 *
 * Both models have the same shape and random weights (the cost of a decode step does not depend
 * on what the weights say; what they say is the experiments' business). Tokens are fed one at a
 * time; at each checkpoint (1K, 2K, 4K, ... tokens) the program reports the tokens/s over the
 * last 256 tokens before it and the attention state's live bytes. A pruned stream's cost per
 * token should follow the budget, not the stream length.
 *
 * usage: bench_decode [--len 16384] [--budget 64] [--d_model 128] [--n_layer 4] [--n_head 4]
 *                     [--threads 1] [--out FILE.jsonl]
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mnemo.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct point {
    int pos;
    double tok_s;
    size_t live;
};

/* Streams len random tokens; fills pts at positions 1024 * 2^k. Returns the number of points. */
static int stream(const struct mnemo_model_config *c, int len, int budget, struct point *pts)
{
    struct mnemo_model *m;
    if (mnemo_model_create(&m, c) != MNEMO_OK) {
        fprintf(stderr, "bench_decode: %s\n", mnemo_last_error());
        exit(1);
    }
    mnemo_model_init(m, 1);
    char opts[64]; /* the same budget in every layer: the session option budget=K */
    snprintf(opts, sizeof(opts), "budget=%d", budget);
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = 1;
    sc.attn_opts = budget ? opts : NULL;
    struct mnemo_session *s;
    if (mnemo_session_create_ex(&s, m, &sc) != MNEMO_OK) {
        fprintf(stderr, "bench_decode: %s\n", mnemo_last_error());
        exit(1);
    }
    uint64_t rng = 12345;
    int np = 0, next = 1024;
    double t_win = now();
    for (int i = 0; i < len; i++) {
        if (i == next - 256) t_win = now();
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        uint16_t tok = i == 0 ? MNEMO_TOK_BOS : (uint16_t)((rng >> 33) % 256);
        const float *lg;
        if (mnemo_session_feed(s, &tok, 1, &lg) != MNEMO_OK) {
            fprintf(stderr, "bench_decode: at %d: %s\n", i, mnemo_last_error());
            exit(1);
        }
        if (i + 1 == next) {
            pts[np].pos = next;
            pts[np].tok_s = 256.0 / (now() - t_win);
            pts[np].live = mnemo_session_live_bytes(s);
            np++;
            next *= 2;
        }
    }
    mnemo_session_free(s);
    mnemo_model_free(m);
    return np;
}

int main(int argc, char **argv)
{
    int len = 16384, budget = 64, d = 128, L = 4, H = 4, threads = 1;
    const char *out = NULL;
    static const char usage[] = "usage: bench_decode [--len 16384] [--budget 64] [--d_model 128] "
                                "[--n_layer 4] [--n_head 4] [--threads 1] [--out FILE.jsonl]\n";
    for (int i = 1; i < argc; i += 2) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return 0;
        }
        if (i + 1 == argc) {
            fprintf(stderr, "bench_decode: '%s' needs a value\n", argv[i]);
            return 2;
        }
        if (!strcmp(argv[i], "--len")) len = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--budget")) budget = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--d_model")) d = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--n_layer")) L = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--n_head")) H = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else {
            fprintf(stderr, "bench_decode: unknown option '%s' (%s)\n", argv[i], "see --help");
            return 2;
        }
    }
    if (len < 1024 || budget < 2 || threads < 1) {
        fprintf(stderr, "bench_decode: need --len >= 1024, --budget >= 2, --threads >= 1\n");
        return 2;
    }
    mnemo_set_threads(threads);
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = L, c.d_model = d, c.n_head = H, c.vocab = MNEMO_TOK_VOCAB, c.n_ctx = len;
    c.attn_kind = MNEMO_ATTN_KIND_DENSE;
    struct point pd[32], ps[32];
    int nd = stream(&c, len, 0, pd);
    c.attn_kind = MNEMO_ATTN_KIND_SELECTIVE;
    int ns = stream(&c, len, budget, ps);
    printf("bench_decode: L=%d d=%d H=%d, one token per step, %d thread(s); selective budget %d "
           "per layer\n", L, d, H, threads, budget);
    printf("  %8s | %12s %12s | %12s %12s | %s\n", "tokens", "dense tok/s", "dense KV KiB",
           "pruned tok/s", "pruned KiB", "speed ratio");
    FILE *f = out ? fopen(out, "w") : NULL;
    if (out && !f) {
        fprintf(stderr, "bench_decode: cannot write '%s'\n", out);
        return 1;
    }
    for (int k = 0; k < nd && k < ns; k++) {
        printf("  %8d | %12.0f %12.1f | %12.0f %12.1f | %.2fx\n", pd[k].pos, pd[k].tok_s,
               pd[k].live / 1024.0, ps[k].tok_s, ps[k].live / 1024.0, ps[k].tok_s / pd[k].tok_s);
        if (f)
            fprintf(f, "{\"tokens\":%d,\"dense_tok_s\":%.1f,\"dense_live_bytes\":%zu,"
                       "\"pruned_tok_s\":%.1f,\"pruned_live_bytes\":%zu,\"budget\":%d}\n",
                    pd[k].pos, pd[k].tok_s, pd[k].live, ps[k].tok_s, ps[k].live, budget);
    }
    if (f) fclose(f);
    return 0;
}
