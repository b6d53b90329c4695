/*
 * bench/kinds.c -- every attention kind's forward and forward+backward time at one shape, and
 * its ratio to the dense kind's, measured in the same invocation (interleaved repetitions, best
 * of each), so that a loaded machine moves both sides alike.
 *
 * usage: bench_kinds [--B 8] [--T 256] [--NH 4] [--HS 32] [--reps 20] [--threads 2] [--rope 1]
 *                    [--segment 64] [--delta 0|1]
 *
 * The attention layer alone, as the model calls it (qkv in, per-head outputs out, saved
 * activations, workspace); random inputs. Kinds take their default options, except infini's
 * segment length (--segment, default T/4: the memory is read in three segments of four) and
 * update rule (--delta 1: linear + delta). A kind's own tensors (its parameter table, e.g.
 * infini's gates) are initialised as the table says. A kind without a backward is timed forward
 * only.
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
    int n_params;                               /* tensors in the kind's table */
    float *params[MNEMO_ATTN_MAX_PARAMS], *dparams[MNEMO_ATTN_MAX_PARAMS];
    double fwd, both; /* best seconds (both: 0 without a backward) */
};

static int setup(struct kind_run *k, int kind, int B, int T, int NH, int HS, int rope,
                 int segment, int delta, const float *qkv, const float *dout)
{
    memset(k, 0, sizeof(*k));
    k->ops = mnemo_attn_ops_get(kind);
    if (!k->ops || !k->ops->forward) return -1;
    /* the layer's cfg from a one-layer model of this shape, every option at its default but
     * infini's two */
    struct mnemo_model_config mc;
    mnemo_model_config_default(&mc);
    mc.n_layer = 1, mc.n_head = NH, mc.d_model = NH * HS, mc.n_ctx = T, mc.attn_kind = kind;
    mc.pos = rope ? MNEMO_POS_ROPE : MNEMO_POS_LEARNED;
    char opts[96] = "";
    if (kind == MNEMO_ATTN_KIND_INFINI)
        snprintf(opts, sizeof(opts), "segment=%d,mem_update=%s", segment, delta ? "delta" : "linear");
    if (mnemo_attn_cfg_make(&k->cfg, &mc, opts, 0) != MNEMO_OK) {
        fprintf(stderr, "bench_kinds: %s: %s\n", k->ops->name, mnemo_last_error());
        return -1;
    }
    size_t n_out = (size_t)B * T * NH * HS;
    struct mnemo_attn_io *io = &k->io;
    io->B = B, io->T = T, io->qkv = qkv, io->dout = dout;
    io->out = mni_alloc(n_out * sizeof(float));
    io->dqkv = mni_alloc(3 * n_out * sizeof(float));
    io->act = mni_alloc(k->ops->act_bytes(&k->cfg, B, T));
    io->scratch = mni_alloc(k->ops->scratch_bytes(&k->cfg, B, T));
    if (!io->out || !io->dqkv || !io->act || !io->scratch) return -1;
    /* the kind's tensors, initialised as its table says */
    struct mnemo_attn_param tab[MNEMO_ATTN_MAX_PARAMS];
    k->n_params = k->ops->params ? k->ops->params(&k->cfg, tab) : 0;
    struct mni_rng rng;
    mni_rng_seed(&rng, 7);
    int custom = 0;
    for (int i = 0; i < k->n_params; i++) {
        size_t n = tab[i].shape[0] * (tab[i].ndim == 2 ? tab[i].shape[1] : 1);
        k->params[i] = mni_alloc((n ? n : 1) * sizeof(float)); /* zero-filled */
        k->dparams[i] = mni_alloc((n ? n : 1) * sizeof(float));
        if (!k->params[i] || !k->dparams[i]) return -1;
        for (size_t j = 0; j < n; j++)
            k->params[i][j] = tab[i].init == MNEMO_ATTN_INIT_CONST    ? tab[i].init_value
                              : tab[i].init == MNEMO_ATTN_INIT_NORMAL ? tab[i].init_value *
                                                                            mni_rng_normal(&rng)
                                                                      : 0.0f;
        custom |= tab[i].init == MNEMO_ATTN_INIT_KIND;
    }
    if (custom && k->ops->init_params) k->ops->init_params(&k->cfg, 0, 7, k->params);
    io->params = (const float *const *)k->params;
    io->dparams = k->dparams;
    io->aux_grad = 1.0f / (float)B;
    k->fwd = k->both = 1e30;
    if (!k->ops->backward) k->both = 0;
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
            if (kr->ops->backward && kr->ops->backward(&kr->cfg, &kr->io) != MNEMO_OK) {
                fprintf(stderr, "bench_kinds: %s backward: %s\n", kr->ops->name, mnemo_last_error());
                return 1;
            }
            double t2 = mni_now();
            if (r == 0) continue; /* warm-up: first touch of the buffers */
            if (t1 - t0 < kr->fwd) kr->fwd = t1 - t0;
            if (kr->ops->backward && t2 - t0 < kr->both) kr->both = t2 - t0;
        }
    }
    printf("bench_kinds: B=%d T=%d NH=%d HS=%d rope=%d, %d thread(s), best of %d interleaved reps; "
           "infini: segment %d, %s\n", B, T, NH, HS, rope, threads, reps, segment,
           delta ? "linear + delta" : "linear");
    printf("  %-10s | %10s %10s | %12s %12s\n", "kind", "fwd ms", "fwd+bwd ms", "fwd / dense",
           "f+b / dense");
    for (int k = 0; k < n; k++) {
        if (!runs[k].ops->backward) { /* forward only */
            printf("  %-10s | %10.3f %10s | %11.3fx %12s\n", runs[k].ops->name, 1e3 * runs[k].fwd,
                   "-", runs[k].fwd / runs[0].fwd, "-");
            continue;
        }
        printf("  %-10s | %10.3f %10.3f | %11.3fx %11.3fx\n", runs[k].ops->name, 1e3 * runs[k].fwd,
               1e3 * runs[k].both, runs[k].fwd / runs[0].fwd, runs[k].both / runs[0].both);
    }
    return 0;
}
