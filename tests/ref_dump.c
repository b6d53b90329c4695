/*
 * ref_dump.c -- the C side of the end-to-end reference test (tests/ref/check_ref.py).
 *
 * Builds a small random model, writes it as a checkpoint, and writes what mnemo computes on a
 * fixed batch: logits, loss, the kinds' auxiliary loss, every parameter gradient (the
 * transformer's tensors and the attention kind's, e.g. infini's gates blocks.{l}.attn.gate), and
 * the losses of 10 training steps (forward, backward, global-norm clipping, AdamW or Muon with
 * constant lr, each tensor at its table's learning-rate multiplier) on that same batch. An
 * independent PyTorch implementation loads the checkpoint and must reproduce all of it.
 * Protocol: docs/internals/reference-tests.md.
 *
 * usage: ref_dump --out DIR [--pos rope|learned] [--optimizer adamw|muon]
 *                 [--attn dense|selective|infini] [--mem_eps X] (selective's memory loss, tau 2)
 *                 [--segment N] [--mem_update linear|delta] (infini; the gates train at the
 *                 default gate_lr_mult)
 * The kind's options are the model's ("mem_eps=X,mem_tau=2", "segment=N,mem_update=R"): the
 * checkpoint carries them as attn.<key> metadata, the dump's metadata repeats the training ones.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "attn/attn_int.h"
#include "model.h"
#include "optim.h"
#include "st.h"

#define STEPS 10

static void die(const char *what)
{
    fprintf(stderr, "ref_dump: %s: %s\n", what, mnemo_last_error());
    exit(1);
}

int main(int argc, char **argv)
{
    const char *out = NULL, *pos = "rope", *optim = "adamw", *attn = "dense", *rule = "linear";
    float mem_eps = 0.0f;
    int segment = 0;
    int bad = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--out")) out = argv[i + 1];
        else if (!strcmp(argv[i], "--pos")) pos = argv[i + 1];
        else if (!strcmp(argv[i], "--optimizer")) optim = argv[i + 1];
        else if (!strcmp(argv[i], "--attn")) attn = argv[i + 1];
        else if (!strcmp(argv[i], "--mem_eps")) mem_eps = strtof(argv[i + 1], NULL);
        else if (!strcmp(argv[i], "--segment")) segment = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--mem_update")) rule = argv[i + 1];
        else bad = 1;
    }
    if (!out || bad || mnemo_optimizer_from_name(optim) < 0 || mnemo_attn_kind_from_name(attn) < 0 ||
        (strcmp(rule, "linear") && strcmp(rule, "delta"))) {
        fprintf(stderr, "usage: ref_dump --out DIR [--pos rope|learned] [--optimizer adamw|muon] "
                        "[--attn dense|selective|infini] [--segment N] [--mem_update linear|delta]\n");
        return 2;
    }
    mkdir(out, 0777);
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = 2;
    c.d_model = 64;
    c.n_head = 4;
    c.n_ctx = 32;
    c.pos = strcmp(pos, "learned") ? MNEMO_POS_ROPE : MNEMO_POS_LEARNED;
    c.attn_kind = mnemo_attn_kind_from_name(attn);
    char opts[128] = "";
    if (c.attn_kind == MNEMO_ATTN_KIND_INFINI)
        snprintf(opts, sizeof(opts), "segment=%d,mem_update=%s", segment, rule);
    c.attn_opts = opts;
    struct mnemo_model *m;
    if (mnemo_model_create(&m, &c) != MNEMO_OK) die("create");
    mnemo_model_init(m, 42);
    if (mem_eps > 0) { /* a training option of the kind: set on the model */
        snprintf(opts, sizeof(opts), "mem_eps=%.9g,mem_tau=2", (double)mem_eps);
        if (mnemo_model_set_attn_opts(m, opts) != MNEMO_OK) die("memory loss");
    }
    /* the training options the model holds, as the dump's metadata repeats them */
    double o_eps = 0, o_tau = 2, o_gate = 1;
    if (c.attn_kind == MNEMO_ATTN_KIND_SELECTIVE) {
        o_eps = m->lcfg[0].opt[MNI_SEL_OPT_MEM_EPS];
        o_tau = m->lcfg[0].opt[MNI_SEL_OPT_MEM_TAU];
    }
    if (c.attn_kind == MNEMO_ATTN_KIND_INFINI) {
        o_gate = m->lcfg[0].opt[MNI_INF_OPT_GATE_LR_MULT];
        if (m->n_kparams != 1 || m->pinfo[MNI_P_COUNT].lr_mult != (float)o_gate ||
            m->pinfo[MNI_P_COUNT].decay)
            die("the gates' optimizer row");
    }
    /* perturb everything (biases, LayerNorm gains, ...) so that every gradient is exercised */
    struct mni_rng r;
    mni_rng_seed(&r, 4242);
    size_t V = (size_t)m->cfg.vocab, C = (size_t)m->cfg.d_model;
    for (int id = 0; id < m->n_pinfo; id++) { /* the kind's tensors too (infini's gates) */
        const struct mni_param_info *pi = &m->pinfo[id];
        size_t n = pi->numel * (pi->per_layer ? (size_t)c.n_layer : 1);
        float *p = m->params + pi->offset;
        for (size_t i = 0; i < n; i++) {
            if (id == MNI_P_WTE && i >= V * C) break; /* padding rows stay zero */
            p[i] += 0.05f * mni_rng_normal(&r);
        }
    }
    char path[1024];
    snprintf(path, sizeof(path), "%s/model.safetensors", out);
    if (mnemo_model_save(m, path) != MNEMO_OK) die("save model");

    const int B = 3, T = 32;
    const size_t N = (size_t)B * T;
    uint16_t x[96], y[96];
    int32_t xi[96], yi[96];
    for (size_t i = 0; i < N; i++) {
        x[i] = (uint16_t)(i % T == 0 ? MNEMO_TOK_BOS : mni_rng_below(&r, V - 1));
        y[i] = (uint16_t)mni_rng_below(&r, V - 1);
        xi[i] = x[i];
        yi[i] = y[i];
    }
    float loss;
    if (mnemo_model_forward(m, x, y, B, T, &loss) != MNEMO_OK) die("forward");
    float aux = (float)mnemo_model_aux_loss(m);
    size_t Vp = (size_t)m->cfg.vocab_padded;
    float *logits = malloc(N * Vp * sizeof(float));
    memcpy(logits, mnemo_model_logits(m), N * Vp * sizeof(float));
    mnemo_model_zero_grad(m);
    if (mnemo_model_backward(m, 1.0f) != MNEMO_OK) die("backward");
    float *grads0 = malloc(m->n_params * sizeof(float));
    memcpy(grads0, m->grads, m->n_params * sizeof(float));

    /* 10 steps of training on the same batch */
    struct mnemo_train_config tc;
    mnemo_train_config_default(&tc);
    tc.lr = 1e-3f;
    tc.beta1 = 0.9f;
    tc.beta2 = 0.95f;
    tc.eps = 1e-8f;
    tc.weight_decay = 0.1f;
    tc.grad_clip = 1.0f;
    tc.optimizer = mnemo_optimizer_from_name(optim);
    tc.momentum = 0.9f;
    if (tc.optimizer == MNEMO_OPT_MUON) tc.weight_decay = 5.0f; /* so that its decay shows in 10 steps */
    float *work = malloc((mni_optim_work_floats(m, &tc, 2) + 1) * sizeof(float));
    float *am = calloc(m->n_params, sizeof(float)), *av = calloc(m->n_params, sizeof(float));
    float step_losses[STEPS];
    int clipped = 0;
    for (int s = 0; s < STEPS; s++) {
        if (mnemo_model_forward(m, x, y, B, T, &step_losses[s]) != MNEMO_OK) die("forward");
        mnemo_model_zero_grad(m);
        if (mnemo_model_backward(m, 1.0f) != MNEMO_OK) die("backward");
        double gn = mni_grad_norm(m);
        float clip = gn > tc.grad_clip ? (float)(tc.grad_clip / gn) : 1.0f;
        clipped += clip < 1.0f;
        mni_optim_step(m, am, av, work, 2, s, tc.lr, clip, &tc);
    }

    /* the dump: inputs, outputs, gradients of the initial model, step losses */
    size_t max_t = 8 + (size_t)m->n_pinfo * (size_t)c.n_layer;
    struct mni_st_tensor *t = calloc(max_t, sizeof(*t));
    char (*names)[96] = calloc(max_t, sizeof(*names));
    size_t n = 0;
    t[n++] = (struct mni_st_tensor){.name = "x", .dtype = MNI_ST_I32, .ndim = 2, .shape = {B, T}, .data = xi};
    t[n++] = (struct mni_st_tensor){.name = "y", .dtype = MNI_ST_I32, .ndim = 2, .shape = {B, T}, .data = yi};
    t[n++] = (struct mni_st_tensor){.name = "logits", .dtype = MNI_ST_F32, .ndim = 3, .shape = {B, T, Vp}, .data = logits};
    t[n++] = (struct mni_st_tensor){.name = "loss", .dtype = MNI_ST_F32, .ndim = 1, .shape = {1}, .data = &loss};
    t[n++] = (struct mni_st_tensor){.name = "step_losses", .dtype = MNI_ST_F32, .ndim = 1, .shape = {STEPS}, .data = step_losses};
    t[n++] = (struct mni_st_tensor){.name = "aux_loss", .dtype = MNI_ST_F32, .ndim = 1, .shape = {1}, .data = &aux};
    for (int id = 0; id < m->n_pinfo; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        if (!pi->numel) continue;
        for (int l = 0; l < (pi->per_layer ? c.n_layer : 1); l++) {
            char nm[80];
            snprintf(nm, sizeof(nm), pi->name, l);
            snprintf(names[n], sizeof(names[n]), "grad.%s", nm);
            t[n].name = names[n];
            t[n].dtype = MNI_ST_F32;
            t[n].ndim = pi->d1 ? 2 : 1;
            t[n].shape[0] = pi->d0;
            t[n].shape[1] = pi->d1;
            t[n].data = grads0 + pi->offset + (pi->per_layer ? (size_t)l * pi->numel : 0);
            n++;
        }
    }
    char lr[32], b1[32], b2[32], eps[32], wd[32], gc[32], st[32], mo[32], me[32], gm[32];
    snprintf(lr, sizeof(lr), "%.9g", (double)tc.lr);
    snprintf(b1, sizeof(b1), "%.9g", (double)tc.beta1);
    snprintf(b2, sizeof(b2), "%.9g", (double)tc.beta2);
    snprintf(eps, sizeof(eps), "%.9g", (double)tc.eps);
    snprintf(wd, sizeof(wd), "%.9g", (double)tc.weight_decay);
    snprintf(gc, sizeof(gc), "%.9g", (double)tc.grad_clip);
    snprintf(st, sizeof(st), "%d", STEPS);
    snprintf(mo, sizeof(mo), "%.9g", (double)tc.momentum);
    char mt[32];
    snprintf(me, sizeof(me), "%.9g", o_eps);
    snprintf(mt, sizeof(mt), "%.9g", o_tau);
    snprintf(gm, sizeof(gm), "%.9g", o_gate);
    const char *kv[] = {"lr", lr, "beta1", b1, "beta2", b2, "eps", eps, "weight_decay", wd,
                        "grad_clip", gc, "steps", st, "optimizer", optim, "momentum", mo,
                        "mem_eps", me, "mem_tau", mt, "gate_lr_mult", gm};
    snprintf(path, sizeof(path), "%s/dump.safetensors", out);
    if (mni_st_write(path, t, n, kv, 12) != MNEMO_OK) die("write dump");
    printf("ref_dump: %s positions, %s attention, %s, loss %.6f, %d of %d steps clipped, wrote %s\n",
           pos, attn, optim, (double)loss, clipped, STEPS, path);
    free(t);
    free(names);
    free(logits);
    free(grads0);
    free(am);
    free(av);
    free(work);
    mnemo_model_free(m);
    return 0;
}
