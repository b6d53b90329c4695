/*
 * bench/scaling.c -- the attention layer of every kind (or the ones named) over growing windows:
 * forward and forward + backward time, the useful GFLOP/s (only the products the kind's pattern
 * computes: its flops_per_token; backward counted as twice the forward) and the memory the layer
 * declares (saved activations + workspace), with the dense kind measured at every T in the same
 * invocation as the baseline of the ratios (interleaved repetitions, best of each).
 *
 * A second baseline for each other kind: the dense kernel on the same number of keys per query.
 * A kind whose queries see k keys on average (flops_per_token / (4 NH HS)) is set beside dense
 * attention over windows of Te = 2k - 1 tokens (k keys on average too), as many windows as cover
 * the B T tokens: the same products per query, done by the dense kernel. Block attention without
 * its previous block IS that computation; for the others it is the work a query does at their
 * span without their pattern. "x eq-dense" is the kind's f+b rate over that run's: what the
 * pattern engine costs beyond the short spans themselves. (Only where Te < T.)
 *
 * usage: bench_scaling [--T 1024,4096,16384,65536] [--B 1] [--NH 4] [--HS 64] [--reps 3]
 *                      [--threads 2] [--kinds window,block,...] [--opts KIND:K=V,...;...]
 *                      [--max_dense_T 65536] [--out results.jsonl]
 *
 * Kinds run with the options of --opts (e.g. "window:w=256"), else their defaults. One JSON
 * object per (kind, T) goes to --out when given.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kind_opts.h"
#include "mni.h"
#include "mnemo_attn.h"

struct run {
    const struct mnemo_attn_ops *ops;
    struct mnemo_attn_cfg cfg;
    struct mnemo_attn_io io;
    float *kp[MNEMO_ATTN_MAX_PARAMS], *kg[MNEMO_ATTN_MAX_PARAMS];
    double fwd, both, bytes;
    int eq; /* index of the kind's equal-keys dense run, or -1 */
};

static void free_run(struct run *r)
{
    mni_free(r->io.out), mni_free(r->io.dqkv), mni_free(r->io.act), mni_free(r->io.scratch);
    for (int i = 0; i < MNEMO_ATTN_MAX_PARAMS; i++) mni_free(r->kp[i]), mni_free(r->kg[i]);
    memset(r, 0, sizeof(*r));
}

static int setup(struct run *r, int kind, const char *opts, int B, int T, int NH, int HS,
                 const float *qkv, const float *dout)
{
    memset(r, 0, sizeof(*r));
    r->ops = mnemo_attn_ops_get(kind);
    struct mnemo_model_config mc;
    mnemo_model_config_default(&mc);
    mc.attn_kind = kind, mc.n_head = NH, mc.d_model = NH * HS, mc.n_ctx = T, mc.n_layer = 1;
    if (mnemo_attn_cfg_make(&r->cfg, &mc, opts, 0) != MNEMO_OK) {
        fprintf(stderr, "bench_scaling: %s\n", mnemo_last_error());
        return -1;
    }
    struct mnemo_attn_param t[MNEMO_ATTN_MAX_PARAMS];
    const int np = r->ops->params ? r->ops->params(&r->cfg, t) : 0;
    for (int i = 0; i < np; i++) {
        size_t n = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        r->kp[i] = mni_alloc(n * sizeof(float));
        r->kg[i] = mni_alloc(n * sizeof(float));
        if (!r->kp[i] || !r->kg[i]) return -1;
    }
    const size_t n_out = (size_t)B * T * NH * HS;
    const size_t act = r->ops->act_bytes(&r->cfg, B, T), scr = r->ops->scratch_bytes(&r->cfg, B, T);
    struct mnemo_attn_io *io = &r->io;
    io->B = B, io->T = T, io->qkv = qkv, io->dout = dout, io->training = 1;
    io->out = mni_alloc(n_out * sizeof(float));
    io->dqkv = mni_alloc(3 * n_out * sizeof(float));
    io->act = mni_alloc(act);
    io->scratch = mni_alloc(scr);
    io->params = (const float *const *)r->kp, io->dparams = r->kg;
    r->bytes = (double)act + (double)scr;
    r->fwd = r->both = 1e30;
    r->eq = -1;
    return io->out && io->dqkv && io->act && io->scratch ? 0 : -1;
}

static int time_once(struct run *r, int keep)
{
    double t0 = mni_now();
    if (r->ops->forward(&r->cfg, &r->io) != MNEMO_OK) return -1;
    double t1 = mni_now();
    if (r->ops->backward(&r->cfg, &r->io) != MNEMO_OK) return -1;
    double t2 = mni_now();
    if (keep) {
        if (t1 - t0 < r->fwd) r->fwd = t1 - t0;
        if (t2 - t0 < r->both) r->both = t2 - t0;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int B = 1, NH = 4, HS = 64, reps = 3, threads = 2, max_dense = 65536;
    const char *Ts = "1024,4096,16384,65536", *kinds = NULL, *spec = "window:w=256", *out = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_scaling [--T 1024,4096,16384,65536] [--B 1] [--NH 4] [--HS 64]\n"
                   "                     [--reps 3] [--threads 2] [--kinds K1,K2] [--opts KIND:K=V,...;...]\n"
                   "                     [--max_dense_T 65536] [--out results.jsonl]\n"
                   "Every kind's attention layer (forward, forward + backward) at each window\n"
                   "length beside dense's, useful GFLOP/s and declared memory.\n");
            return 0;
        }
        if (i + 1 == argc) {
            fprintf(stderr, "bench_scaling: option '%s' needs a value\n", argv[i]);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(argv[i - 1], "--T")) Ts = v;
        else if (!strcmp(argv[i - 1], "--B")) B = atoi(v);
        else if (!strcmp(argv[i - 1], "--NH")) NH = atoi(v);
        else if (!strcmp(argv[i - 1], "--HS")) HS = atoi(v);
        else if (!strcmp(argv[i - 1], "--reps")) reps = atoi(v);
        else if (!strcmp(argv[i - 1], "--threads")) threads = atoi(v);
        else if (!strcmp(argv[i - 1], "--kinds")) kinds = v;
        else if (!strcmp(argv[i - 1], "--opts")) spec = v;
        else if (!strcmp(argv[i - 1], "--max_dense_T")) max_dense = atoi(v);
        else if (!strcmp(argv[i - 1], "--out")) out = v;
        else {
            fprintf(stderr, "bench_scaling: unknown option '%s' (see --help)\n", argv[i - 1]);
            return 2;
        }
    }
    if (B < 1 || NH < 1 || HS < 2 || reps < 1 || threads < 1) {
        fprintf(stderr, "bench_scaling: B, NH, reps, threads must be >= 1 and HS >= 2\n");
        return 2;
    }
    if (mnemo_set_threads(threads) != MNEMO_OK) return 2;
    FILE *fo = out ? fopen(out, "a") : NULL;
    if (out && !fo) {
        fprintf(stderr, "bench_scaling: cannot write '%s'\n", out);
        return 1;
    }
    printf("bench_scaling: B=%d NH=%d HS=%d, %d thread(s), best of %d interleaved reps\n", B, NH,
           HS, threads, reps);
    printf("  %-11s %7s | %10s %10s | %8s %8s | %9s | %8s | %6s %8s %10s\n", "kind", "T",
           "fwd ms", "f+b ms", "fwd GF/s", "f+b GF/s", "f+b/dense", "MiB", "eq-Te", "GF/s",
           "x eq-dense");
    for (const char *tp = Ts; *tp;) {
        const int T = atoi(tp);
        tp += strcspn(tp, ",");
        tp += *tp == ',';
        if (T < 1) continue;
        /* room for the equal-keys dense runs too: at most B T + 2 T tokens */
        const size_t n_out = ((size_t)B * T + 2 * (size_t)T) * NH * HS;
        float *qkv = mni_alloc(3 * n_out * sizeof(float)), *dout = mni_alloc(n_out * sizeof(float));
        if (!qkv || !dout) return 1;
        struct mni_rng rng;
        mni_rng_seed(&rng, 1);
        for (size_t i = 0; i < 3 * n_out; i++) qkv[i] = mni_rng_normal(&rng);
        for (size_t i = 0; i < n_out; i++) dout[i] = mni_rng_normal(&rng);
        struct run runs[2 * MNEMO_ATTN_KIND_COUNT];
        int n = 0;
        for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
            const char *name = mnemo_attn_kind_name(k);
            if (k == MNEMO_ATTN_KIND_DENSE ? T > max_dense
                                           : kinds && !strstr(kinds, name))
                continue;
            char buf[256];
            if (setup(&runs[n], k, bench_kind_opts(spec, name, buf, sizeof(buf)), B, T, NH, HS, qkv,
                      dout) == 0)
                n++;
            else
                free_run(&runs[n]);
        }
        const int n_kinds = n;
        for (int k = 0; k < n_kinds; k++) {
            struct run *r = &runs[k];
            if (r->ops == mnemo_attn_ops_get(MNEMO_ATTN_KIND_DENSE)) continue;
            const double keys = r->ops->flops_per_token(&r->cfg, T) / (4.0 * NH * HS);
            const int Te = keys < 1 ? 1 : (int)(2 * keys - 0.5); /* 2k - 1, rounded */
            const int Be = (int)(((long)B * T + Te - 1) / Te);
            if (Te >= T) continue; /* not a short span: dense at T is the baseline */
            if (setup(&runs[n], MNEMO_ATTN_KIND_DENSE, "", Be, Te, NH, HS, qkv, dout) == 0)
                r->eq = n++;
            else
                free_run(&runs[n]);
        }
        for (int r = 0; r <= reps; r++)
            for (int k = 0; k < n; k++)
                if (time_once(&runs[k], r > 0)) {
                    fprintf(stderr, "bench_scaling: %s: %s\n", runs[k].ops->name, mnemo_last_error());
                    return 1;
                }
        const double dense = runs[0].ops == mnemo_attn_ops_get(MNEMO_ATTN_KIND_DENSE) ? runs[0].both : 0;
        for (int k = 0; k < n_kinds; k++) {
            struct run *r = &runs[k];
            const double f = r->ops->flops_per_token(&r->cfg, T) * T * B; /* forward FLOPs */
            double eq_rate = 0;
            int eq_T = 0;
            if (r->eq >= 0) {
                const struct run *e = &runs[r->eq];
                eq_T = e->io.T;
                eq_rate = 3 * e->ops->flops_per_token(&e->cfg, e->io.T) * e->io.T * e->io.B /
                          e->both / 1e9;
            }
            printf("  %-11s %7d | %10.2f %10.2f | %8.1f %8.1f | %8.2fx | %8.1f", r->ops->name, T,
                   1e3 * r->fwd, 1e3 * r->both, f / r->fwd / 1e9, 3 * f / r->both / 1e9,
                   dense > 0 ? dense / r->both : 0.0, r->bytes / 1048576.0);
            if (eq_T)
                printf(" | %6d %8.1f %9.2fx\n", eq_T, eq_rate, 3 * f / r->both / 1e9 / eq_rate);
            else
                printf(" |\n");
            if (fo) {
                char o[512];
                mnemo_attn_opts_format(&r->cfg, 1, 1u << MNEMO_ATTN_SCOPE_MODEL, 1, o, sizeof(o));
                fprintf(fo, "{\"kind\":\"%s\",\"opts\":\"%s\",\"B\":%d,\"T\":%d,\"NH\":%d,\"HS\":%d,"
                        "\"threads\":%d,\"fwd_s\":%.6g,\"fwd_bwd_s\":%.6g,\"fwd_gflops\":%.4g,"
                        "\"fwd_bwd_gflops\":%.4g,\"speedup_vs_dense\":%.4g,\"bytes\":%.0f,"
                        "\"eq_dense_T\":%d,\"eq_dense_fwd_bwd_gflops\":%.4g}\n",
                        r->ops->name, o, B, T, NH, HS, threads, r->fwd, r->both,
                        f / r->fwd / 1e9, 3 * f / r->both / 1e9, dense > 0 ? dense / r->both : 0.0,
                        r->bytes, eq_T, eq_rate);
            }
        }
        for (int k = 0; k < n; k++) free_run(&runs[k]);
        mni_free(qkv), mni_free(dout);
    }
    if (fo) fclose(fo);
    return 0;
}
