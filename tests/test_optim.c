/*
 * test_optim.c -- the optimizers: Newton-Schulz against a naive double-precision reference and
 * its orthogonalising effect, and one Muon step of a whole model against a naive step (Muon on
 * the blocks' matrices, q/k/v as separate blocks; AdamW, bit for bit, on everything else).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kern/kern.h"
#include "model.h"
#include "optim.h"
#include "testutil.h"

/* The quintic iteration written out directly: full Gram and full products, in double. */
static void ns_naive(float *Xf, int r, int c)
{
    const double qa = 3.4445, qb = -4.7750, qc = 2.0315;
    const int tall = r > c, k = tall ? c : r;
    double *X = malloc(sizeof(double) * r * c), *Y = malloc(sizeof(double) * r * c);
    double *G = malloc(sizeof(double) * k * k), *P = malloc(sizeof(double) * k * k);
    double ss = 0;
    for (int i = 0; i < r * c; i++) ss += (double)Xf[i] * Xf[i];
    for (int i = 0; i < r * c; i++) X[i] = Xf[i] / (sqrt(ss) + 1e-7);
    for (int it = 0; it < 5; it++) {
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                double s = 0;
                if (!tall)
                    for (int t = 0; t < c; t++) s += X[i * c + t] * X[j * c + t];
                else
                    for (int t = 0; t < r; t++) s += X[t * c + i] * X[t * c + j];
                G[i * k + j] = s;
            }
        for (int i = 0; i < k; i++)
            for (int j = 0; j < k; j++) {
                double s = 0;
                for (int t = 0; t < k; t++) s += G[i * k + t] * G[t * k + j];
                P[i * k + j] = qb * G[i * k + j] + qc * s;
            }
        for (int i = 0; i < r; i++)
            for (int j = 0; j < c; j++) {
                double s = 0;
                if (!tall)
                    for (int t = 0; t < k; t++) s += P[i * k + t] * X[t * c + j];
                else
                    for (int t = 0; t < k; t++) s += X[i * c + t] * P[t * k + j];
                Y[i * c + j] = qa * X[i * c + j] + s;
            }
        memcpy(X, Y, sizeof(double) * r * c);
    }
    for (int i = 0; i < r * c; i++) Xf[i] = (float)X[i];
    free(X);
    free(Y);
    free(G);
    free(P);
}

static void test_newton_schulz(void **s)
{
    (void)s;
    const int shapes[][2] = {{16, 64}, {64, 16}, {32, 32}, {24, 96}, {96, 24}, {5, 7}};
    for (size_t t = 0; t < sizeof(shapes) / sizeof(shapes[0]); t++) {
        const int r = shapes[t][0], c = shapes[t][1], k = r < c ? r : c;
        float *x = malloc(sizeof(float) * r * c), *want = malloc(sizeof(float) * r * c);
        float *work = malloc(sizeof(float) * mni_newton_schulz_work(r, c));
        tu_fill_normal(x, (size_t)r * c, 3.0f, 100 + t);
        memcpy(want, x, sizeof(float) * r * c);
        mni_newton_schulz(x, r, c, work);
        ns_naive(want, r, c);
        char label[64];
        snprintf(label, sizeof(label), "newton-schulz %dx%d", r, c);
        TU_ASSERT_CLOSE(label, x, want, (size_t)r * c, 1e-5f, 1e-3f);
        /* orthogonalising: the k x k Gram matrix of the result is near the identity (a random
         * matrix wider than tall by 4x has no tiny singular values) */
        if (r * 4 == c || c * 4 == r) {
            double diag_lo = 1e9, diag_hi = 0, off = 0;
            for (int i = 0; i < k; i++)
                for (int j = 0; j < k; j++) {
                    double g = 0;
                    for (int u = 0; u < (r > c ? r : c); u++)
                        g += r < c ? (double)x[i * c + u] * x[j * c + u]
                                   : (double)x[u * c + i] * x[u * c + j];
                    if (i == j) diag_lo = fmin(diag_lo, g), diag_hi = fmax(diag_hi, g);
                    else off = fmax(off, fabs(g));
                }
            printf("%s: Gram diagonal in [%.3f, %.3f], largest off-diagonal %.3f\n", label,
                   diag_lo, diag_hi, off);
            assert_true(diag_lo > 0.45 && diag_hi < 1.3 && off < 0.3);
        }
        free(x);
        free(want);
        free(work);
    }
}

/* One Muon (+ AdamW) step on a small model against a naive one. */
static void test_muon_step(void **s)
{
    (void)s;
    const int L = 2, C = 16;
    struct mnemo_model *m = tu_model(L, C, 2, 8, 40, MNEMO_POS_ROPE, 7);
    assert_int_equal(mni_model_alloc_grads(m), MNEMO_OK);
    const size_t n = m->n_params;
    float *am = malloc(n * sizeof(float)), *av = malloc(n * sizeof(float));
    tu_fill_normal(m->grads, n, 0.5f, 11);
    tu_fill_normal(am, n, 0.1f, 12);
    tu_fill_uniform(av, n, 0.0f, 0.01f, 13);
    struct mnemo_train_config tc;
    mnemo_train_config_default(&tc);
    tc.optimizer = MNEMO_OPT_MUON;
    tc.momentum = 0.9f;
    tc.weight_decay = 0.1f;
    const float lr = 0.02f, clip = 0.5f;
    const int t = 3;

    /* the naive step: AdamW on a copy (every tensor), Muon by hand on the matrices */
    float *p0 = malloc(n * sizeof(float)), *g0 = malloc(n * sizeof(float));
    float *want_p = malloc(n * sizeof(float)), *want_m = malloc(n * sizeof(float));
    float *want_v = malloc(n * sizeof(float)), *m0 = malloc(n * sizeof(float));
    float *v0 = malloc(n * sizeof(float));
    memcpy(p0, m->params, n * sizeof(float));
    memcpy(g0, m->grads, n * sizeof(float));
    memcpy(want_m, am, n * sizeof(float));
    memcpy(want_v, av, n * sizeof(float));
    memcpy(m0, am, n * sizeof(float));
    memcpy(v0, av, n * sizeof(float));
    mni_adamw_step(m, want_m, want_v, t, lr, clip, &tc);
    memcpy(want_p, m->params, n * sizeof(float));
    int checked = 0;
    for (int id = 0; id < MNI_P_COUNT; id++) {
        if (!mni_muon_param(id)) continue;
        const struct mni_param_info *pi = &m->pinfo[id];
        const int blocks = id == MNI_P_QKVW ? 3 : 1, r = (int)pi->d0 / blocks, c = (int)pi->d1;
        for (int l = 0; l < L; l++)
            for (int b = 0; b < blocks; b++) {
                size_t o = pi->offset + l * pi->numel + (size_t)b * r * c;
                float *X = malloc(sizeof(float) * r * c);
                for (int i = 0; i < r * c; i++) {
                    float g = g0[o + i] * clip;
                    want_m[o + i] = tc.momentum * m0[o + i] + g;
                    want_v[o + i] = v0[o + i]; /* untouched */
                    X[i] = g + tc.momentum * want_m[o + i];
                }
                ns_naive(X, r, c);
                float sc = 0.2f * sqrtf((float)(r > c ? r : c));
                for (int i = 0; i < r * c; i++)
                    want_p[o + i] = (1 - lr * tc.weight_decay) * p0[o + i] - lr * sc * X[i];
                free(X);
                checked++;
            }
    }
    assert_int_equal(checked, 6 * L);

    memcpy(m->params, p0, n * sizeof(float));
    memcpy(m->grads, g0, n * sizeof(float));
    float *work = malloc(mni_optim_work_floats(m, &tc, 2) * sizeof(float));
    mni_optim_step(m, am, av, work, 2, t, lr, clip, &tc);
    for (int id = 0; id < MNI_P_COUNT; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        size_t o = pi->offset, k = pi->numel * (pi->per_layer ? (size_t)L : 1);
        if (!k) continue;
        if (mni_muon_param(id)) {
            TU_ASSERT_CLOSE(pi->name, m->params + o, want_p + o, k, 1e-6f, 1e-5f);
            TU_ASSERT_CLOSE(pi->name, am + o, want_m + o, k, 0.0f, 1e-6f);
            assert_memory_equal(av + o, want_v + o, k * sizeof(float));
        } else { /* AdamW's own update, exactly */
            assert_memory_equal(m->params + o, want_p + o, k * sizeof(float));
            assert_memory_equal(am + o, want_m + o, k * sizeof(float));
            assert_memory_equal(av + o, want_v + o, k * sizeof(float));
        }
    }
    /* with AdamW chosen, the step is mni_adamw_step exactly */
    tc.optimizer = MNEMO_OPT_ADAMW;
    memcpy(m->params, p0, n * sizeof(float));
    memcpy(m->grads, g0, n * sizeof(float));
    memcpy(am, m0, n * sizeof(float));
    memcpy(av, v0, n * sizeof(float));
    assert_int_equal(mni_optim_work_floats(m, &tc, 2), 0);
    mni_optim_step(m, am, av, NULL, 2, t, lr, clip, &tc);
    float *pa = malloc(n * sizeof(float));
    memcpy(pa, m->params, n * sizeof(float));
    memcpy(m->params, p0, n * sizeof(float));
    memcpy(m->grads, g0, n * sizeof(float));
    float *am2 = malloc(n * sizeof(float)), *av2 = malloc(n * sizeof(float));
    tu_fill_normal(am2, n, 0.1f, 12);
    tu_fill_uniform(av2, n, 0.0f, 0.01f, 13);
    mni_adamw_step(m, am2, av2, t, lr, clip, &tc);
    assert_memory_equal(pa, m->params, n * sizeof(float));
    free(am2);
    free(av2);
    free(pa);
    free(work);
    free(p0);
    free(g0);
    free(want_p);
    free(want_m);
    free(want_v);
    free(m0);
    free(v0);
    free(am);
    free(av);
    mnemo_model_free(m);
}

/* One optimizer step (t = 0, lr) of m from parameters p0 with fresh moments; the parameters
 * are left in m->params, the moments in am, av (n floats each). */
static void one_step(struct mnemo_model *m, struct mnemo_train_config *tc, const float *p0,
                     float *am, float *av, float lr)
{
    const size_t n = m->n_params;
    memcpy(m->params, p0, n * sizeof(float));
    memset(am, 0, n * sizeof(float)), memset(av, 0, n * sizeof(float));
    float *work = malloc((mni_optim_work_floats(m, tc, 1) + 1) * sizeof(float));
    mni_optim_step(m, am, av, work, 1, 0, lr, 1.0f, tc);
    free(work);
}

/* The per-tensor optimizer table: the attention kind's own tensors (Infini-attention's gates,
 * blocks.{l}.attn.gate) step as their table row says: lr * gate_lr_mult (the option, 30 by
 * default; changing it changes the step) and no weight decay, under AdamW and under Muon (which
 * leaves them to AdamW); the other tensors are unchanged by the multiplier. A row's decay and
 * trained flags are obeyed (a buffer is not stepped). Checked against mni_adamw_ref. */
static void test_gate_group(void **s)
{
    (void)s;
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = 2, c.d_model = 16, c.n_head = 4, c.n_ctx = 8, c.vocab = 40;
    c.attn_kind = MNEMO_ATTN_KIND_INFINI;
    struct mnemo_model *m;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_OK);
    mnemo_model_init(m, 3);
    assert_int_equal(mni_model_alloc_grads(m), MNEMO_OK);
    assert_int_equal(m->n_kparams, 1);
    assert_int_equal(m->n_pinfo, MNI_P_COUNT + 1);
    struct mni_param_info *gi = &m->pinfo[MNI_P_COUNT];
    assert_string_equal(gi->name, "blocks.%d.attn.gate");
    assert_int_equal(gi->per_layer, 1);
    assert_int_equal(gi->numel, 4); /* one gate per head and layer */
    assert_true(gi->lr_mult == 30.0f); /* gate_lr_mult's default */
    assert_int_equal(gi->decay, 0);
    assert_int_equal(gi->trained, 1);
    const size_t n = m->n_params, go = gi->offset, gn = 2 * gi->numel;
    tu_fill_normal(m->params + go, gn, 1.0f, 5); /* gates away from 0, so decay would show */
    tu_fill_normal(m->grads, n, 0.5f, 6);
    float *p0 = malloc(n * sizeof(float)), *am = calloc(n, sizeof(float)), *av = calloc(n, sizeof(float));
    memcpy(p0, m->params, n * sizeof(float));
    struct mnemo_train_config tc;
    mnemo_train_config_default(&tc);
    tc.weight_decay = 0.5f;
    const float lr = 0.01f;
    const float bc1 = 1.0f - tc.beta1, bc2 = 1.0f - tc.beta2; /* t = 0 */
    const float mults[2] = {30.0f, 7.5f};
    for (int k = 0; k < 2; k++) {
        if (k == 1) { /* the option changes the row's multiplier, and so the step */
            assert_int_equal(mnemo_model_set_attn_opts(m, "gate_lr_mult=7.5"), MNEMO_OK);
            gi = &m->pinfo[MNI_P_COUNT];
            assert_true(gi->lr_mult == 7.5f);
            assert_int_equal(gi->offset, go);
        }
        for (int opt = 0; opt < MNEMO_OPT_COUNT; opt++) {
            tc.optimizer = opt;
            one_step(m, &tc, p0, am, av, lr);
            float want[8], wm[8] = {0}, wv[8] = {0};
            memcpy(want, p0 + go, gn * sizeof(float));
            mni_adamw_ref(want, wm, wv, m->grads + go, gn, lr * mults[k], tc.beta1, tc.beta2,
                          tc.eps, 0.0f, bc1, bc2);
            TU_ASSERT_CLOSE("gates", m->params + go, want, gn, 1e-6f, 1e-5f);
            /* a bias (AdamW, no decay, plain lr) is not affected by the multiplier */
            const struct mni_param_info *bi = &m->pinfo[MNI_P_LN1B];
            float wb[32], bm[32] = {0}, bv[32] = {0};
            memcpy(wb, p0 + bi->offset, 32 * sizeof(float));
            mni_adamw_ref(wb, bm, bv, m->grads + bi->offset, 32, lr, tc.beta1, tc.beta2, tc.eps,
                          0.0f, bc1, bc2);
            TU_ASSERT_CLOSE("ln1 bias", m->params + bi->offset, wb, 32, 1e-6f, 1e-5f);
        }
    }
    /* a bad multiplier is refused, named, and changes nothing */
    assert_int_equal(mnemo_model_set_attn_opts(m, "gate_lr_mult=0"), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "gate_lr_mult"));
    assert_true(m->pinfo[MNI_P_COUNT].lr_mult == 7.5f);
    /* the table's flags are obeyed: decay on (it takes the weight decay) ... */
    tc.optimizer = MNEMO_OPT_ADAMW;
    m->pinfo[MNI_P_COUNT].decay = 1;
    one_step(m, &tc, p0, am, av, lr);
    {
        float want[8], wm[8] = {0}, wv[8] = {0};
        memcpy(want, p0 + go, gn * sizeof(float));
        mni_adamw_ref(want, wm, wv, m->grads + go, gn, lr * 7.5f, tc.beta1, tc.beta2, tc.eps,
                      tc.weight_decay, bc1, bc2);
        TU_ASSERT_CLOSE("gates with decay", m->params + go, want, gn, 1e-6f, 1e-5f);
    }
    /* ... and a buffer (trained 0) is left alone, moments included */
    m->pinfo[MNI_P_COUNT].decay = 0;
    m->pinfo[MNI_P_COUNT].trained = 0;
    for (int opt = 0; opt < MNEMO_OPT_COUNT; opt++) {
        tc.optimizer = opt;
        one_step(m, &tc, p0, am, av, lr);
        assert_memory_equal(m->params + go, p0 + go, gn * sizeof(float));
        for (size_t i = 0; i < gn; i++) assert_true(am[go + i] == 0.0f && av[go + i] == 0.0f);
        assert_true(memcmp(m->params, p0, go * sizeof(float)) != 0); /* the rest stepped */
    }
    free(p0), free(am), free(av);
    mnemo_model_free(m);
}

static void test_optimizer_names(void **s)
{
    (void)s;
    assert_string_equal(mnemo_optimizer_name(MNEMO_OPT_ADAMW), "adamw");
    assert_string_equal(mnemo_optimizer_name(MNEMO_OPT_MUON), "muon");
    assert_null(mnemo_optimizer_name(MNEMO_OPT_COUNT));
    assert_null(mnemo_optimizer_name(-1));
    assert_int_equal(mnemo_optimizer_from_name("muon"), MNEMO_OPT_MUON);
    assert_int_equal(mnemo_optimizer_from_name("sgd"), -1);
    assert_int_equal(mnemo_optimizer_from_name(NULL), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_newton_schulz),
        cmocka_unit_test(test_muon_step),
        cmocka_unit_test(test_gate_group),
        cmocka_unit_test(test_optimizer_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
