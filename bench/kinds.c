/*
 * bench/kinds.c -- every attention kind's forward and forward+backward time at one shape, and
 * its ratio to the dense kind's, measured in the same invocation (interleaved repetitions, best
 * of each), so that a loaded machine moves both sides alike.
 *
 * usage: bench_kinds [--B 8] [--T 256] [--NH 4] [--HS 32] [--reps 20] [--threads 2] [--rope 1]
 *                    [--segment 64] [--delta 0|1]
 *
 * The attention layer alone, as the model calls it (qkv in, per-head outputs out, saved
 * activations, workspace); random inputs. Kinds take their default settings, except infini's
 * segment length (--segment, default T/4: the memory is read in three segments of four) and
 * update rule (--delta 1: linear + delta).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mni.h"
#include "mnemo_attn.h"

struct kind_run {
    const struct mnemo_attn_ops *ops;
    struct mnemo_attn_cfg cfg;
    struct mnemo_attn_io io;
    float *params, *dparams;
    double fwd, both; /* best seconds */
};

static int setup(struct kind_run *k, int kind, int B, int T, int NH, int HS, int rope,
                 int segment, int delta, const float *qkv, const float *dout)
{
    memset(k, 0, sizeof(*k));
    k->ops = mnemo_attn_ops_get(kind);
    k->cfg = (struct mnemo_attn_cfg){.kind = kind, .n_head = NH, .head_dim = HS, .n_ctx = T,
                                     .rope = rope, .rope_theta = 10000.0f};
    if (kind == MNEMO_ATTN_KIND_INFINI) {
        k->cfg.segment = segment;
        k->cfg.mem_update = delta ? MNEMO_MEM_DELTA : MNEMO_MEM_LINEAR;
    }
    if (k->ops->validate(&k->cfg) != MNEMO_OK) {
        fprintf(stderr, "bench_kinds: %s: %s\n", k->ops->name, mnemo_last_error());
        return -1;
    }
    size_t n_out = (size_t)B * T * NH * HS, np = k->ops->n_params(&k->cfg);
    struct mnemo_attn_io *io = &k->io;
    io->B = B, io->T = T, io->qkv = qkv, io->dout = dout;
    io->out = mni_alloc(n_out * sizeof(float));
    io->dqkv = mni_alloc(3 * n_out * sizeof(float));
    io->act = mni_alloc(k->ops->act_bytes(&k->cfg, B, T));
    io->scratch = mni_alloc(k->ops->scratch_bytes(&k->cfg, B, T));
    k->params = mni_alloc((np ? np : 1) * sizeof(float));
    k->dparams = mni_alloc((np ? np : 1) * sizeof(float));
    if (!io->out || !io->dqkv || !io->act || !io->scratch || !k->params || !k->dparams) return -1;
    memset(k->params, 0, (np ? np : 1) * sizeof(float));
    io->params = k->params, io->dparams = k->dparams;
    k->fwd = k->both = 1e30;
    return 0;
}

int main(int argc, char **argv)
{
    int B = 8, T = 256, NH = 4, HS = 32, reps = 20, threads = 2, rope = 1, segment = 0, delta = 0;
    for (int i = 1; i < argc; i++) {
        int *p = NULL;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench_kinds [--B 8] [--T 256] [--NH 4] [--HS 32] [--reps 20]\n"
                   "                   [--threads 2] [--rope 1] [--segment T/4] [--delta 0|1]\n"
                   "Every attention kind's layer, forward and forward + backward, best of\n"
                   "--reps interleaved repetitions, and its ratio to dense in the same run.\n"
                   "--segment and --delta set infini's segment length and update rule (1: delta).\n");
            return 0;
        }
        if (!strcmp(argv[i], "--B")) p = &B;
        else if (!strcmp(argv[i], "--T")) p = &T;
        else if (!strcmp(argv[i], "--NH")) p = &NH;
        else if (!strcmp(argv[i], "--HS")) p = &HS;
        else if (!strcmp(argv[i], "--reps")) p = &reps;
        else if (!strcmp(argv[i], "--threads")) p = &threads;
        else if (!strcmp(argv[i], "--rope")) p = &rope;
        else if (!strcmp(argv[i], "--segment")) p = &segment;
        else if (!strcmp(argv[i], "--delta")) p = &delta;
        if (!p || i + 1 == argc) {
            fprintf(stderr, "bench_kinds: unknown option or missing value '%s' "
                            "(see bench_kinds --help)\n", argv[i]);
            return 2;
        }
        *p = atoi(argv[++i]);
    }
    if (B < 1 || T < 1 || NH < 1 || HS < 2 || reps < 1 || threads < 1) {
        fprintf(stderr, "bench_kinds: B, T, NH, reps, threads must be >= 1 and HS >= 2\n");
        return 2;
    }
    if (segment == 0) segment = T / 4 > 0 ? T / 4 : 1;
    mnemo_set_threads(threads);
    size_t n_out = (size_t)B * T * NH * HS;
    float *qkv = mni_alloc(3 * n_out * sizeof(float)), *dout = mni_alloc(n_out * sizeof(float));
    if (!qkv || !dout) return 1;
    struct mni_rng rng;
    mni_rng_seed(&rng, 1);
    for (size_t i = 0; i < 3 * n_out; i++) qkv[i] = mni_rng_normal(&rng);
    for (size_t i = 0; i < n_out; i++) dout[i] = mni_rng_normal(&rng);
    struct kind_run runs[MNEMO_ATTN_KIND_COUNT];
    int n = 0;
    for (int kind = 0; kind < MNEMO_ATTN_KIND_COUNT; kind++) {
        if (setup(&runs[n], kind, B, T, NH, HS, rope, segment, delta, qkv, dout) == 0) n++;
        else if (kind == MNEMO_ATTN_KIND_DENSE) return 1; /* the baseline of every ratio */
    }
    /* interleaved: rep r of every kind before rep r + 1 of any */
    for (int r = 0; r < reps + 1; r++) {
        for (int k = 0; k < n; k++) {
            struct kind_run *kr = &runs[k];
            double t0 = mni_now();
            if (kr->ops->forward(&kr->cfg, &kr->io) != MNEMO_OK) {
                fprintf(stderr, "bench_kinds: %s forward: %s\n", kr->ops->name, mnemo_last_error());
                return 1;
            }
            double t1 = mni_now();
            if (kr->ops->backward(&kr->cfg, &kr->io) != MNEMO_OK) {
                fprintf(stderr, "bench_kinds: %s backward: %s\n", kr->ops->name, mnemo_last_error());
                return 1;
            }
            double t2 = mni_now();
            if (r == 0) continue; /* warm-up: first touch of the buffers */
            if (t1 - t0 < kr->fwd) kr->fwd = t1 - t0;
            if (t2 - t0 < kr->both) kr->both = t2 - t0;
        }
    }
    printf("bench_kinds: B=%d T=%d NH=%d HS=%d rope=%d, %d thread(s), best of %d interleaved reps; "
           "infini: segment %d, %s\n", B, T, NH, HS, rope, threads, reps, segment,
           delta ? "linear + delta" : "linear");
    printf("  %-10s | %10s %10s | %12s %12s\n", "kind", "fwd ms", "fwd+bwd ms", "fwd / dense",
           "f+b / dense");
    for (int k = 0; k < n; k++)
        printf("  %-10s | %10.3f %10.3f | %11.3fx %11.3fx\n", runs[k].ops->name, 1e3 * runs[k].fwd,
               1e3 * runs[k].both, runs[k].fwd / runs[0].fwd, runs[k].both / runs[0].both);
    return 0;
}
