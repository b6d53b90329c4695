/*
 * ref_attn.c -- dumps one attention kind's layer for tests/ref/check_attn.py: random q, k, v,
 * the kind's parameters and an upstream gradient in; the fast path's output, auxiliary loss
 * and gradients out (training mode, objective sum(out * dout) + aux_loss). The checker
 * recomputes all of it in float64 with the kind's PyTorch function (tests/ref/attn_ref.py).
 *
 * usage: ref_attn --kind NAME [--opts K=V,...] --out DIR [--B 2] [--T 37] [--NH 2] [--HS 16]
 *                 [--rope 1] [--layer 1] [--n_layer 2] [--seed 5]
 * Writes DIR/attn.safetensors: qkv (B,T,3,NH,HS), dout, out (B,T,NH,HS), dqkv, aux (1),
 * param.<name> and grad.<name> for each of the kind's tensors, write_weights (B,S) for infini
 * with mem_repeat; for a kind that carries a state (CAP_CARRY), prev_qkv (the lanes' previous
 * windows, run first in evaluation mode) and carry_out (U8, the state after the window, which
 * ran with the previous windows' carry); metadata kind, opts (the canonical list), B, T, NH, HS, rope, rope_theta,
 * layer, n_layer, seed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attn/attn_int.h"
#include "mni.h"
#include "mnemo_attn.h"
#include "st.h"

static void fill(float *x, size_t n, uint64_t seed)
{
    struct mni_rng r;
    mni_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = mni_rng_normal(&r);
}

int main(int argc, char **argv)
{
    const char *kind = NULL, *opts = "", *out = NULL;
    int B = 2, T = 37, NH = 2, HS = 16, rope = 1, layer = 1, n_layer = 2, seed = 5;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            printf("usage: ref_attn --kind NAME [--opts K=V,...] --out DIR [--B 2] [--T 37] [--NH 2]\n"
                   "                [--HS 16] [--rope 1] [--layer 1] [--n_layer 2] [--seed 5]\n");
            return 0;
        }
        if (i + 1 == argc) {
            fprintf(stderr, "ref_attn: %s needs a value\n", argv[i]);
            return 2;
        }
        const char *a = argv[i], *v = argv[++i];
        if (!strcmp(a, "--kind")) kind = v;
        else if (!strcmp(a, "--opts")) opts = v;
        else if (!strcmp(a, "--out")) out = v;
        else if (!strcmp(a, "--B")) B = atoi(v);
        else if (!strcmp(a, "--T")) T = atoi(v);
        else if (!strcmp(a, "--NH")) NH = atoi(v);
        else if (!strcmp(a, "--HS")) HS = atoi(v);
        else if (!strcmp(a, "--rope")) rope = atoi(v);
        else if (!strcmp(a, "--layer")) layer = atoi(v);
        else if (!strcmp(a, "--n_layer")) n_layer = atoi(v);
        else if (!strcmp(a, "--seed")) seed = atoi(v);
        else {
            fprintf(stderr, "ref_attn: unknown option %s\n", a);
            return 2;
        }
    }
    if (!kind || !out) {
        fprintf(stderr, "ref_attn: give --kind and --out\n");
        return 2;
    }
    struct mnemo_model_config mc;
    mnemo_model_config_default(&mc);
    mc.attn_kind = mnemo_attn_kind_from_name(kind);
    mc.n_head = NH, mc.d_model = NH * HS, mc.n_ctx = T, mc.n_layer = n_layer;
    mc.pos = rope ? MNEMO_POS_ROPE : MNEMO_POS_LEARNED;
    struct mnemo_attn_cfg cfg;
    if (mc.attn_kind < 0 || mnemo_attn_cfg_make(&cfg, &mc, opts, layer) != MNEMO_OK) {
        fprintf(stderr, "ref_attn: %s\n", mc.attn_kind < 0 ? "unknown kind" : mnemo_last_error());
        return 2;
    }
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(mc.attn_kind);
    const size_t n_out = (size_t)B * T * NH * HS;
    float *qkv = malloc(3 * n_out * sizeof(float)), *dout = malloc(n_out * sizeof(float));
    float *o = malloc(n_out * sizeof(float)), *dqkv = malloc(3 * n_out * sizeof(float));
    void *act = mni_alloc(ops->act_bytes(&cfg, B, T)), *scr = mni_alloc(ops->scratch_bytes(&cfg, B, T));
    if (!qkv || !dout || !o || !dqkv || !act || !scr) return 1;
    fill(qkv, 3 * n_out, 100 + (uint64_t)seed);
    fill(dout, n_out, 200 + (uint64_t)seed);
    struct mnemo_attn_param tab[MNEMO_ATTN_MAX_PARAMS];
    const int np = ops->params ? ops->params(&cfg, tab) : 0;
    float *kp[MNEMO_ATTN_MAX_PARAMS], *kg[MNEMO_ATTN_MAX_PARAMS];
    for (int i = 0; i < np; i++) {
        const size_t n = tab[i].shape[0] * (tab[i].ndim == 2 ? tab[i].shape[1] : 1);
        kp[i] = malloc(n * sizeof(float));
        kg[i] = calloc(n, sizeof(float));
        if (!kp[i] || !kg[i]) return 1;
        fill(kp[i], n, 300 + (uint64_t)i);
    }
    /* a kind that carries a state: the lanes' previous windows first, their carry in */
    const size_t ncarry = ops->carry_bytes ? (size_t)B * ops->carry_bytes(&cfg) : 0;
    float *prev = ncarry ? malloc(3 * n_out * sizeof(float)) : NULL;
    void *carry = ncarry ? mni_alloc(ncarry) : NULL, *carry_out = ncarry ? mni_alloc(ncarry) : NULL;
    if (ncarry && (!prev || !carry || !carry_out)) return 1;
    struct mnemo_attn_io io = {0};
    if (ncarry) {
        fill(prev, 3 * n_out, 400 + (uint64_t)seed);
        io.B = B, io.T = T, io.layer = layer, io.qkv = prev, io.out = o, io.act = act;
        io.scratch = scr, io.params = (const float *const *)kp, io.carry_out = carry;
        if (ops->forward(&cfg, &io) != MNEMO_OK) {
            fprintf(stderr, "ref_attn: forward: %s\n", mnemo_last_error());
            return 1;
        }
    }
    io = (struct mnemo_attn_io){0};
    io.carry = carry, io.carry_out = carry_out;
    io.B = B, io.T = T, io.layer = layer, io.training = 1, io.seed = 1000 + (uint64_t)seed;
    io.qkv = qkv, io.out = o, io.dout = dout, io.dqkv = dqkv, io.act = act, io.scratch = scr;
    io.params = (const float *const *)kp, io.dparams = kg;
    if (ops->forward(&cfg, &io) != MNEMO_OK) {
        fprintf(stderr, "ref_attn: forward: %s\n", mnemo_last_error());
        return 1;
    }
    const float aux = (float)io.aux_loss;
    io.aux_grad = 1.0f;
    if (ops->backward(&cfg, &io) != MNEMO_OK) {
        fprintf(stderr, "ref_attn: backward: %s\n", mnemo_last_error());
        return 1;
    }
    /* infini's write weights of this call, so that the checker folds with the same ones */
    float *ww = NULL;
    size_t S = 0;
    if (mc.attn_kind == MNEMO_ATTN_KIND_INFINI) {
        const int N = mni_inf_segment(&cfg);
        S = (size_t)(T + N - 1) / N;
        ww = malloc((size_t)B * S * sizeof(float));
        if (!ww) return 1;
        if (!mni_inf_write_weights(&cfg, &io, ww))
            for (size_t i = 0; i < (size_t)B * S; i++) ww[i] = 1.0f;
    }
    mkdir(out, 0777);
    struct mni_st_tensor t[10 + 2 * MNEMO_ATTN_MAX_PARAMS];
    char names[2 * MNEMO_ATTN_MAX_PARAMS][96];
    size_t n = 0;
#define T4(nm, p, a, b, c, d)                                                                  \
    t[n++] = (struct mni_st_tensor){nm, MNI_ST_F32, 4, {(size_t)(a), (size_t)(b), (size_t)(c), (size_t)(d)}, p}
    T4("qkv", qkv, B, T, 3 * NH, HS);
    T4("dqkv", dqkv, B, T, 3 * NH, HS);
    T4("out", o, B, T, NH, HS);
    T4("dout", dout, B, T, NH, HS);
#undef T4
    t[n++] = (struct mni_st_tensor){"aux", MNI_ST_F32, 1, {1}, &aux};
    if (ww) t[n++] = (struct mni_st_tensor){"write_weights", MNI_ST_F32, 2, {(size_t)B, S}, ww};
    if (ncarry) {
        t[n++] = (struct mni_st_tensor){"prev_qkv", MNI_ST_F32, 4,
                                        {(size_t)B, (size_t)T, 3 * (size_t)NH, (size_t)HS}, prev};
        t[n++] = (struct mni_st_tensor){"carry_out", MNI_ST_U8, 1, {ncarry}, carry_out};
    }
    for (int i = 0; i < np; i++) {
        snprintf(names[2 * i], sizeof(names[0]), "param.%s", tab[i].name);
        snprintf(names[2 * i + 1], sizeof(names[0]), "grad.%s", tab[i].name);
        t[n++] = (struct mni_st_tensor){names[2 * i], MNI_ST_F32, tab[i].ndim,
                                        {tab[i].shape[0], tab[i].shape[1]}, kp[i]};
        t[n++] = (struct mni_st_tensor){names[2 * i + 1], MNI_ST_F32, tab[i].ndim,
                                        {tab[i].shape[0], tab[i].shape[1]}, kg[i]};
    }
    char canon[1024], vals[9][32], path[4096];
    mnemo_attn_opts_format(&cfg, 1, 7u, 1, canon, sizeof(canon));
    snprintf(vals[0], 32, "%d", B), snprintf(vals[1], 32, "%d", T), snprintf(vals[2], 32, "%d", NH);
    snprintf(vals[3], 32, "%d", HS), snprintf(vals[4], 32, "%d", rope);
    snprintf(vals[5], 32, "%.9g", (double)cfg.rope_theta), snprintf(vals[6], 32, "%d", layer);
    snprintf(vals[7], 32, "%d", n_layer), snprintf(vals[8], 32, "%d", seed);
    const char *kv[] = {"kind", kind, "opts", canon, "B", vals[0], "T", vals[1], "NH", vals[2],
                        "HS", vals[3], "rope", vals[4], "rope_theta", vals[5], "layer", vals[6],
                        "n_layer", vals[7], "seed", vals[8]};
    snprintf(path, sizeof(path), "%s/attn.safetensors", out);
    if (mni_st_write(path, t, n, kv, sizeof(kv) / sizeof(kv[0]) / 2) != MNEMO_OK) {
        fprintf(stderr, "ref_attn: %s\n", mnemo_last_error());
        return 1;
    }
    return 0;
}
