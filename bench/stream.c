/*
 * bench/stream.c -- a trained model reading a long stream: resident memory, tokens/s, the
 * attention state's live bytes and the loss, at checkpoints from 10K tokens to the end
 * (default 1M), checking that every logit stays finite.
 *
 * The token file is fed from its start, in chunks, through one session that is never reset
 * (cycling through the file when the stream is longer than it). A kind whose state is bounded
 * (infini; selective with --budget) reads any length; dense stops at n_ctx with its error.
 * At each checkpoint (10K, 20K, 50K, 100K, 200K, 500K, 1M, ...): tokens/s and bits per byte of
 * the predictions since the previous checkpoint, the process's resident set (VmRSS) and the
 * attention state's live bytes. Any non-finite logit stops the run with an error.
 *
 * usage: bench_stream --model CKPT --data TOKENS [--len 1000000] [--chunk 64] [--budget K]
 *                     [--attn_opt K=V,...] [--every N] [--threads 1] [--out FILE.jsonl]
 * --len 0 streams the file once (BOS and its tokens but the last: every token predicted once).
 * --attn_opt gives any session options of the kind (e.g. a dense model's window=252,sinks=4);
 * --budget K is budget=K. --every N reports every N tokens instead of at 10K, 20K, 50K, ...
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "mni.h"
#include "mnemo.h"

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof(line), f))
        if (!strncmp(line, "VmRSS:", 6)) kib = atol(line + 6);
    if (f) fclose(f);
    return kib;
}

static long next_mark(long m) /* 10K, 20K, 50K, 100K, ... */
{
    long p = 1;
    while (p * 10 <= m) p *= 10;
    long d = m / p;
    return d < 2 ? 2 * p : d < 5 ? 5 * p : 10 * p;
}

int main(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *out = NULL;
    long len = 1000000;
    int chunk = 64, budget = 0, threads = 1;
    long every = 0;
    const char *attn_opt = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            printf("usage: bench_stream --model CKPT --data TOKENS [--len 1000000] [--chunk 64] "
                   "[--budget K] [--attn_opt K=V,...] [--every N] [--threads 1] "
                   "[--out FILE.jsonl]\n");
            return 0;
        }
        if (!v) {
            fprintf(stderr, "bench_stream: '%s' needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--data")) data = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--len")) len = atol(v);
        else if (!strcmp(a, "--chunk")) chunk = atoi(v);
        else if (!strcmp(a, "--budget")) budget = atoi(v);
        else if (!strcmp(a, "--attn_opt")) attn_opt = v;
        else if (!strcmp(a, "--every")) every = atol(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else {
            fprintf(stderr, "bench_stream: unknown option '%s' (see --help)\n", a);
            return 2;
        }
        i++;
    }
    if (!model || !data || len < 0 || chunk < 1 || budget < 0 || threads < 1 || every < 0 ||
        (budget && attn_opt)) {
        fprintf(stderr, "bench_stream: need --model and --data, --len >= 0, --chunk >= 1, "
                        "--threads >= 1, --every >= 0, not both --budget and --attn_opt\n");
        return 2;
    }
    mnemo_set_threads(threads);
    struct mnemo_model *m;
    if (mnemo_model_load(&m, model) != MNEMO_OK) {
        fprintf(stderr, "bench_stream: %s\n", mnemo_last_error());
        return 1;
    }
    const struct mnemo_model_config *c = mnemo_model_get_config(m);
    struct mni_tokens tk;
    if (mni_tokens_read_for(&tk, data, c->vocab) != MNEMO_OK) {
        fprintf(stderr, "bench_stream: %s\n", mnemo_last_error());
        return 1;
    }
    if (tk.n < 2) {
        fprintf(stderr, "bench_stream: '%s' holds fewer than 2 tokens\n", data);
        return 1;
    }
    if (len == 0) len = (long)tk.n;
    uint16_t *x = malloc((size_t)chunk * sizeof(uint16_t));
    if (!x) {
        fprintf(stderr, "bench_stream: out of memory\n");
        return 1;
    }
    /* --budget K: the session option budget=K in every layer; without it the full cache. The
     * session options a checkpoint carries (budgets a prune-search stored) are not used: the
     * run is what the command line says. */
    char opts[64];
    snprintf(opts, sizeof(opts), "budget=%d", budget);
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = chunk;
    sc.attn_opts = budget ? opts : attn_opt;
    sc.no_model_opts = 1;
    struct mnemo_session *s;
    if (mnemo_session_create_ex(&s, m, &sc) != MNEMO_OK) {
        fprintf(stderr, "bench_stream: %s\n", mnemo_last_error());
        return 1;
    }
    FILE *fo = out ? fopen(out, "w") : NULL;
    if (out && !fo) {
        fprintf(stderr, "bench_stream: cannot write '%s'\n", out);
        return 1;
    }
    printf("bench_stream: %s (%s attention, n_ctx %d), %ld tokens of %s in chunks of %d, %d "
           "thread(s)%s\n", model, mnemo_attn_kind_name(c->attn_kind), c->n_ctx, len, data, chunk,
           threads, budget ? ", with a budget" : attn_opt ? ", session options " : "");
    if (attn_opt && !budget) printf("  session options: %s\n", attn_opt);
    printf("  %9s | %9s | %8s | %10s | %12s | %12s\n", "tokens", "tok/s", "bits/B", "RSS KiB",
           "state KiB", "state bound");
    const int Vp = c->vocab_padded, V = c->vocab;
    long pos = 0, mark = every ? every : 10000, since = 0;
    uint64_t src = 0; /* next token of the file to feed */
    double t_mark = mni_now(), nll = 0;
    int first = 1, rc = 0;
    while (pos < len) {
        int n = len - pos < chunk ? (int)(len - pos) : chunk;
        if (mark - pos < n) n = (int)(mark - pos);
        for (int i = 0; i < n; i++) {
            if (first) {
                x[i] = MNEMO_TOK_BOS;
                first = 0;
                continue;
            }
            x[i] = tk.tok[src];
            src = src + 1 < tk.n ? src + 1 : 0;
        }
        const float *lg;
        if (mnemo_session_feed(s, x, n, &lg) != MNEMO_OK) {
            fprintf(stderr, "bench_stream: at token %ld: %s\n", pos, mnemo_last_error());
            rc = 1;
            break;
        }
        /* every logit finite; the loss of predicting the next file token */
        for (int i = 0; i < n; i++) {
            const float *r = lg + (size_t)i * Vp;
            float mx = r[0];
            for (int v = 0; v < V; v++) {
                if (!isfinite(r[v])) {
                    fprintf(stderr, "bench_stream: logit %d of token %ld is %g\n", v, pos + i, (double)r[v]);
                    return 1;
                }
                mx = r[v] > mx ? r[v] : mx;
            }
            double se = 0;
            for (int v = 0; v < V; v++) se += exp((double)(r[v] - mx));
            /* the token that follows position pos + i is the one fed next: src after this
             * chunk minus (n - 1 - i), cyclically */
            uint64_t back = (uint64_t)(n - 1 - i) % tk.n;
            uint64_t nxt = (src + tk.n - back) % tk.n;
            nll += (double)mx + log(se) - (double)r[tk.tok[nxt]];
        }
        pos += n;
        since += n;
        if (pos == mark || pos == len) {
            double dt = mni_now() - t_mark;
            double bpb = nll / (double)since / 0.69314718055994531;
            long rss = rss_kib();
            printf("  %9ld | %9.0f | %8.4f | %10ld | %12.1f | %12.1f\n", pos, (double)since / dt, bpb,
                   rss, mnemo_session_live_bytes(s) / 1024.0, mnemo_session_state_bytes(s) / 1024.0);
            fflush(stdout);
            if (fo)
                fprintf(fo, "{\"tokens\":%ld,\"tok_s\":%.1f,\"bpb\":%.5f,\"rss_kib\":%ld,"
                            "\"state_live_bytes\":%zu,\"state_bytes\":%zu,\"session\":\"%s\"}\n",
                        pos, (double)since / dt, bpb, rss, mnemo_session_live_bytes(s),
                        mnemo_session_state_bytes(s), sc.attn_opts ? sc.attn_opts : "");
            mark = every ? mark + every : next_mark(mark);
            since = 0;
            nll = 0;
            t_mark = mni_now();
        }
    }
    if (fo) fclose(fo);
    free(x);
    mnemo_session_free(s);
    mni_tokens_free(&tk);
    mnemo_model_free(m);
    return rc;
}
