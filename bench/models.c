/*
 * bench/models.c -- every attention kind in a whole model at one shape, beside dense in the same
 * invocation: a training step (forward, backward, optimizer; mnemo_bench_train) and one-token
 * decode through a session (tokens/s over a stream of --decode tokens after a prompt of
 * --prompt, and the attention state held at the end). Random weights: the cost of a step does
 * not depend on what the weights say.
 *
 * usage: bench_models [--n_layer 4] [--d_model 256] [--n_head 4] [--T 256] [--B 8] [--steps 5]
 *                     [--prompt 128] [--decode 128] [--threads 2] [--kinds K1,K2]
 *                     [--opts KIND:K=V,...;...] [--out results.jsonl]
 * The sessions use the kinds' default session options (a dense cache holds the whole window,
 * so --prompt + --decode must fit n_ctx = T for the kinds that are not bounded).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kind_opts.h"
#include "mni.h"
#include "mnemo.h"
#include "mnemo_attn.h"

struct row {
    const char *name;
    double step_s, tok_s, state_kib;
};

/* tokens/s of one-token feeds after a prompt, and the state held at the end. */
static int decode(const struct mnemo_model_config *mc, int prompt, int n, double *tok_s,
                  double *kib)
{
    struct mnemo_model *m;
    if (mnemo_model_create(&m, mc) != MNEMO_OK) return -1;
    mnemo_model_init(m, 1);
    struct mnemo_session *s;
    if (mnemo_session_create(&s, m, 64) != MNEMO_OK) {
        mnemo_model_free(m);
        return -1;
    }
    uint16_t tok[64];
    const float *lg;
    struct mni_rng r;
    mni_rng_seed(&r, 3);
    for (int i = 0; i < 64; i++) tok[i] = (uint16_t)mni_rng_below(&r, 256);
    int rc = 0;
    for (int p = 0; p < prompt && !rc; p += 64)
        rc = mnemo_session_feed(s, tok, prompt - p < 64 ? prompt - p : 64, &lg) != MNEMO_OK;
    const double t0 = mni_now();
    for (int i = 0; i < n && !rc; i++) rc = mnemo_session_feed(s, tok + (i & 63), 1, &lg) != MNEMO_OK;
    *tok_s = n / (mni_now() - t0);
    *kib = (double)mnemo_session_live_bytes(s) / 1024.0;
    mnemo_session_free(s);
    mnemo_model_free(m);
    return rc ? -1 : 0;
}

int main(int argc, char **argv)
{
    struct mnemo_model_config mc;
    mnemo_model_config_default(&mc);
    mc.vocab = 256;
    int B = 8, steps = 5, prompt = 128, n_dec = 128, threads = 2;
    const char *kinds = NULL, *spec = "", *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_models [--n_layer 4] [--d_model 256] [--n_head 4] [--T 256] [--B 8]\n"
                   "                    [--steps 5] [--prompt 128] [--decode 128] [--threads 2]\n"
                   "                    [--kinds K1,K2] [--opts KIND:K=V,...;...] [--out FILE.jsonl]\n"
                   "Every kind's training step and one-token decode beside dense's, same run.\n");
            return 0;
        }
        if (i + 1 == argc) {
            fprintf(stderr, "bench_models: option '%s' needs a value\n", argv[i]);
            return 2;
        }
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--n_layer")) mc.n_layer = atoi(v);
        else if (!strcmp(a, "--d_model")) mc.d_model = atoi(v);
        else if (!strcmp(a, "--n_head")) mc.n_head = atoi(v);
        else if (!strcmp(a, "--T")) mc.n_ctx = atoi(v);
        else if (!strcmp(a, "--B")) B = atoi(v);
        else if (!strcmp(a, "--steps")) steps = atoi(v);
        else if (!strcmp(a, "--prompt")) prompt = atoi(v);
        else if (!strcmp(a, "--decode")) n_dec = atoi(v);
        else if (!strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "--kinds")) kinds = v;
        else if (!strcmp(a, "--opts")) spec = v;
        else if (!strcmp(a, "--out")) out = v;
        else {
            fprintf(stderr, "bench_models: unknown option '%s' (see --help)\n", a);
            return 2;
        }
    }
    if (B < 1 || steps < 1 || prompt < 0 || n_dec < 1 || threads < 1 ||
        mnemo_set_threads(threads) != MNEMO_OK) {
        fprintf(stderr, "bench_models: --B, --steps, --decode, --threads must be >= 1\n");
        return 2;
    }
    FILE *fo = out ? fopen(out, "a") : NULL;
    if (out && !fo) {
        fprintf(stderr, "bench_models: cannot write '%s'\n", out);
        return 1;
    }
    printf("bench_models: L=%d d=%d H=%d T=%d B=%d, %d thread(s); decode %d tokens after %d\n",
           mc.n_layer, mc.d_model, mc.n_head, mc.n_ctx, B, threads, n_dec, prompt);
    printf("  %-11s | %10s %9s | %10s %9s | %10s | %s\n", "kind", "step ms", "/ dense", "decode t/s",
           "/ dense", "state KiB", "options");
    struct row dense = {0};
    for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
        const char *name = mnemo_attn_kind_name(k);
        if (k != MNEMO_ATTN_KIND_DENSE && kinds && !strstr(kinds, name)) continue;
        char buf[256];
        struct mnemo_model_config c = mc;
        c.attn_kind = k;
        c.attn_opts = bench_kind_opts(spec, name, buf, sizeof(buf));
        struct mnemo_bench_result br;
        struct row r = {name, 0, 0, 0};
        if (mnemo_bench_train(&c, B, c.n_ctx, steps, 1, &br) != MNEMO_OK ||
            decode(&c, prompt, n_dec, &r.tok_s, &r.state_kib) != 0) {
            fprintf(stderr, "bench_models: %s: %s\n", name, mnemo_last_error());
            if (k == MNEMO_ATTN_KIND_DENSE) return 1;
            continue;
        }
        r.step_s = br.step_s;
        if (k == MNEMO_ATTN_KIND_DENSE) dense = r;
        printf("  %-11s | %10.1f %8.2fx | %10.0f %8.2fx | %10.1f | %s\n", name, 1e3 * r.step_s,
               r.step_s / dense.step_s, r.tok_s, r.tok_s / dense.tok_s, r.state_kib,
               c.attn_opts[0] ? c.attn_opts : "defaults");
        if (fo)
            fprintf(fo, "{\"kind\":\"%s\",\"opts\":\"%s\",\"n_layer\":%d,\"d_model\":%d,\"n_head\":%d,"
                    "\"T\":%d,\"B\":%d,\"threads\":%d,\"step_s\":%.6g,\"step_vs_dense\":%.4g,"
                    "\"decode_tok_s\":%.1f,\"decode_vs_dense\":%.4g,\"state_kib\":%.1f}\n",
                    name, c.attn_opts, mc.n_layer, mc.d_model, mc.n_head, mc.n_ctx, B, threads,
                    r.step_s, r.step_s / dense.step_s, r.tok_s, r.tok_s / dense.tok_s, r.state_kib);
    }
    if (fo) fclose(fo);
    return 0;
}
