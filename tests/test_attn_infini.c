/*
 * test_attn_infini.c -- the Infini-attention kind: its registration, options and parameter
 * table; the fast ops (mni_attn_infini) against the reference ops (mni_attn_infini_ref) (forward,
 * backward and the gate gradient; one segment, many, a short last segment; linear and delta
 * rules; RoPE on and off; with and without the write weights of option mem_repeat), the
 * reference against finite differences (every qkv entry and every gate, and a case whose loss
 * sits in the last segment only, so that every gradient of the earlier segments comes through
 * the memory), write weights as repetitions of a segment, a hand-computed case for both update
 * rules (with and without write weights), the kind with closed gates against the dense kind
 * over segment windows, and the streaming
 * session (token by token and in chunks across segment boundaries, and far past n_ctx) against
 * the training forward, with its state bytes constant in the stream length.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "mnemo_attn.h"
#include "testutil.h"

#define FD_TOL 2e-3
#define NH_MAX 8

/* The fast path and its naive reference (each sizes its own buffers: the scratch differs). */
static const struct mnemo_attn_ops *const FAST = &mni_attn_infini, *const REF = &mni_attn_infini_ref;

/* A cfg by hand (not validated; testutil's: the shape, one layer, causal, every option at its
 * table's default), then segment N and the update rule. */
static struct mnemo_attn_cfg make_cfg(int NH, int HS, int n_ctx, int seg, int rope, int delta)
{
    struct mnemo_attn_cfg c = tu_attn_cfg(MNEMO_ATTN_KIND_INFINI, NH, HS, n_ctx, rope);
    c.opt[MNI_INF_OPT_SEGMENT] = seg;
    c.opt[MNI_INF_OPT_MEM_UPDATE] = delta ? 1 : 0; // linear|delta
    return c;
}

/* The gate logits (one per head, the kind's one tensor "gate") and their gradients, beside the
 * tu_attn_bufs; the mode of the next run(): training (with option mem_repeat > 1 the segments'
 * write weights are drawn from the seed) or evaluation. */
static float beta[NH_MAX], dbeta[NH_MAX];
static int run_training;
static uint64_t run_seed;

static struct mnemo_attn_io make_io(struct tu_attn_bufs *b)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    io.training = run_training;
    io.seed = run_seed;
    return io;
}

static void run(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                struct tu_attn_bufs *b, int backward)
{
    const float *const params[1] = {beta};
    float *const dparams[1] = {dbeta};
    struct mnemo_attn_io io = make_io(b);
    io.params = params;
    io.dparams = dparams;
    if (backward) memset(dbeta, 0, sizeof(dbeta));
    enum mnemo_status st = backward ? ops->backward(cfg, &io) : ops->forward(cfg, &io);
    if (st != MNEMO_OK)
        fail_msg("%s %s: %s", ops->is_ref ? "ref" : "fast", backward ? "backward" : "forward",
                 mnemo_last_error());
}

/* One step() of n tokens (layer 0) with the gates beta. */
static enum mnemo_status step(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                              void *state, float *out, const float *qkv, int n, void *scratch)
{
    const float *const params[1] = {beta};
    struct mnemo_attn_step st = {n, 0, state, params, qkv, out, scratch};
    return ops->step(cfg, &st);
}

/* The write weights (B,S) a call of B windows of T tokens draws from seed in training (NULL
 * when it does not weigh its segments); caller frees. */
static float *drawn_weights(const struct mnemo_attn_cfg *cfg, int B, int T, uint64_t seed)
{
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    float *w = malloc(sizeof(float) * (size_t)B * S);
    assert_non_null(w);
    struct mnemo_attn_io io;
    memset(&io, 0, sizeof(io));
    io.B = B, io.T = T, io.training = 1, io.seed = seed;
    if (!mni_inf_write_weights(cfg, &io, w)) {
        free(w);
        return NULL;
    }
    return w;
}

/* A model config of this attention shape, for mnemo_attn_cfg_make. */
static void model_config(struct mnemo_model_config *mc, int NH, int HS, int n_ctx)
{
    mnemo_model_config_default(mc);
    mc->attn_kind = MNEMO_ATTN_KIND_INFINI;
    mc->n_layer = 1;
    mc->n_head = NH;
    mc->d_model = NH * HS;
    mc->n_ctx = n_ctx;
    mc->pos = MNEMO_POS_ROPE;
    mc->rope_theta = 10000.0f;
}

static void test_registry_and_validate(void **s)
{
    (void)s;
    assert_ptr_equal(mnemo_attn_ops_get(MNEMO_ATTN_KIND_INFINI), &mni_attn_infini);
    assert_ptr_equal(mnemo_attn_ops_get_ref(MNEMO_ATTN_KIND_INFINI), &mni_attn_infini_ref);
    assert_int_equal(FAST->is_ref, 0);
    assert_int_equal(REF->is_ref, 1);
    assert_string_equal(REF->name, "infini");
    assert_string_equal(mnemo_attn_kind_name(MNEMO_ATTN_KIND_INFINI), "infini");
    assert_int_equal(mnemo_attn_kind_from_name("infini"), MNEMO_ATTN_KIND_INFINI);
    /* the options: the update rule by name, case-sensitive, only its two names */
    assert_int_equal(FAST->n_opts, MNI_INF_OPT_COUNT);
    assert_int_equal(mnemo_attn_opt_find(MNEMO_ATTN_KIND_INFINI, "mem_update"), MNI_INF_OPT_MEM_UPDATE);
    assert_int_equal(mnemo_attn_opt_find(MNEMO_ATTN_KIND_INFINI, "segment"), MNI_INF_OPT_SEGMENT);
    assert_int_equal(mnemo_attn_opt_find(MNEMO_ATTN_KIND_INFINI, "mem_repeat"), MNI_INF_OPT_MEM_REPEAT);
    struct mnemo_model_config mc;
    model_config(&mc, 3, 8, 16);
    struct mnemo_attn_cfg c;
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "mem_update=delta,segment=4", -1), MNEMO_OK);
    assert_int_equal((int)c.opt[MNI_INF_OPT_MEM_UPDATE], 1);
    assert_int_equal(mni_inf_segment(&c), 4);
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "mem_update=linear", -1), MNEMO_OK);
    assert_int_equal((int)c.opt[MNI_INF_OPT_MEM_UPDATE], 0);
    assert_int_equal(mni_inf_segment(&c), 16); // 0 = n_ctx
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "mem_update=Delta", -1), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "mem_update=2", -1), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "mem_update"));
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "segment=17", -1), MNEMO_ERR_ARG); // > n_ctx
    assert_non_null(strstr(mnemo_last_error(), "segment"));
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "budget=4", -1), MNEMO_ERR_ARG); // selective's
    /* the parameter table: one gate logit per head, initialised to 0, its own learning rate */
    c = make_cfg(3, 8, 16, 4, 1, 0);
    assert_int_equal(FAST->validate(&c), MNEMO_OK);
    struct mnemo_attn_param tab[MNEMO_ATTN_MAX_PARAMS];
    assert_int_equal(FAST->params(&c, tab), 1);
    assert_string_equal(tab[0].name, "gate");
    assert_int_equal(tab[0].ndim, 1);
    assert_int_equal((int)tab[0].shape[0], 3);
    assert_int_equal(tab[0].init, MNEMO_ATTN_INIT_ZERO);
    assert_true(tab[0].lr_mult == 30.0f); // gate_lr_mult's default
    assert_int_equal(tab[0].decay, 0);
    assert_int_equal(tab[0].trained, 1);
    /* validate, by hand-built cfgs */
    c.opt[MNI_INF_OPT_SEGMENT] = 17; // > n_ctx
    assert_int_equal(FAST->validate(&c), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "segment"));
    c.opt[MNI_INF_OPT_SEGMENT] = -1;
    assert_int_equal(FAST->validate(&c), MNEMO_ERR_ARG);
    c = make_cfg(3, 8, 16, 0, 1, 0);
    c.opt[MNI_INF_OPT_MEM_REPEAT] = 0.5; // 0 (off) or >= 1
    assert_int_equal(FAST->validate(&c), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "mem_repeat"));
    c = make_cfg(3, 7, 16, 0, 1, 0);
    assert_int_equal(FAST->validate(&c), MNEMO_ERR_ARG);
    c = make_cfg(3, 8, 16, 0, 1, 0);
    c.kind = MNEMO_ATTN_KIND_DENSE;
    assert_int_equal(FAST->validate(&c), MNEMO_ERR_ARG);
    /* a missing gate buffer is an error, not a crash (fast and reference) */
    c = make_cfg(1, 4, 8, 4, 1, 0);
    for (int r = 0; r < 2; r++) {
        const struct mnemo_attn_ops *ops = r ? REF : FAST;
        struct tu_attn_bufs b;
        tu_attn_bufs_init(&b, ops, &c, 1, 8);
        struct mnemo_attn_io io = tu_attn_io(&b);
        assert_int_equal(ops->forward(&c, &io), MNEMO_ERR_ARG);
        const float *const none[1] = {NULL};
        io.params = none;
        assert_int_equal(ops->forward(&c, &io), MNEMO_ERR_ARG);
        tu_attn_bufs_free(&b);
    }
}

/* Shapes: N dividing T (one dense call for all segments) or not (a short last segment, and a
 * window shorter than N), one segment (no memory read at all), one token per segment (N = 1),
 * T below n_ctx, both rules, RoPE on and off, head widths not a multiple of 8, and segments
 * longer than the fast path's blocks of 64 rows (a full and a partial block per segment). */
struct shape {
    int B, T, n_ctx, NH, HS, N, rope, delta;
};
static const struct shape shapes[] = {
    {2, 37, 40, 3, 8, 8, 1, 0},  {2, 37, 40, 3, 8, 8, 1, 1}, {1, 16, 16, 1, 4, 16, 0, 0},
    {2, 48, 48, 2, 16, 12, 1, 1}, {3, 50, 64, 2, 6, 7, 1, 0}, {1, 5, 8, 4, 2, 1, 0, 1},
    {2, 64, 64, 4, 32, 16, 1, 0}, {2, 64, 64, 4, 32, 16, 1, 1}, {1, 9, 32, 2, 8, 20, 1, 1},
    {1, 300, 300, 2, 8, 130, 1, 1}, {2, 200, 200, 1, 16, 70, 0, 0},
};

static void fill_beta(int NH, uint64_t seed)
{
    tu_fill_normal(beta, NH_MAX, 1.0f, seed);
    for (int h = NH; h < NH_MAX; h++) beta[h] = 0.0f;
}

/* mem_repeat of the weighted cases: write weights log-uniform in [1, e^2.5 = 12.2). */
#define REPEAT 12.182494f

static void test_fast_vs_ref(void **s)
{
    (void)s;
    for (size_t c = 0; c < 2 * sizeof(shapes) / sizeof(shapes[0]); c++) {
        const struct shape *sh = &shapes[c / 2];
        const int weighted = c % 2, S = (sh->T + sh->N - 1) / sh->N;
        if (weighted && S < 2) continue; // nothing is folded
        struct mnemo_attn_cfg cfg = make_cfg(sh->NH, sh->HS, sh->n_ctx, sh->N, sh->rope, sh->delta);
        // both run in training; only the weighted cases set mem_repeat, so only they draw
        if (weighted) cfg.opt[MNI_INF_OPT_MEM_REPEAT] = REPEAT;
        run_training = 1;
        run_seed = 400 + c;
        float *ww = drawn_weights(&cfg, sh->B, sh->T, run_seed);
        assert_true(weighted == (ww != NULL));
        float wmax = 1.0f;
        for (int i = 0; ww && i < sh->B * S; i++) {
            assert_true(ww[i] >= 1.0f && ww[i] <= REPEAT);
            wmax = fmaxf(wmax, ww[i]);
        }
        if (weighted) assert_true(wmax > 1.5f); // the weights are really exercised
        free(ww);
        struct tu_attn_bufs f, r;
        tu_attn_bufs_init(&f, FAST, &cfg, sh->B, sh->T);
        tu_attn_bufs_init(&r, REF, &cfg, sh->B, sh->T);
        tu_fill_normal(f.qkv, f.nqkv, 1.0f, 100 + c);
        tu_fill_normal(f.dout, f.nout, 1.0f, 200 + c);
        memcpy(r.qkv, f.qkv, f.nqkv * sizeof(float));
        memcpy(r.dout, f.dout, f.nout * sizeof(float));
        fill_beta(sh->NH, 300 + c);
        run(FAST, &cfg, &f, 0);
        run(REF, &cfg, &r, 0);
        double ef = tu_rel_max_err(f.out, r.out, f.nout);
        run(FAST, &cfg, &f, 1);
        float db_fast[NH_MAX];
        memcpy(db_fast, dbeta, sizeof(db_fast));
        run(REF, &cfg, &r, 1);
        double eb = tu_rel_max_err(f.dqkv, r.dqkv, f.nqkv);
        double eg = tu_rel_max_err(db_fast, dbeta, (size_t)sh->NH);
        print_message("fast/ref  B=%d T=%d N=%d NH=%d HS=%d rope=%d %s%s: forward %.2e, backward "
                      "%.2e, gates %.2e (dbeta[0] %.4g)\n", sh->B, sh->T, sh->N, sh->NH, sh->HS,
                      sh->rope, sh->delta ? "delta" : "linear", weighted ? " weighted" : "", ef,
                      eb, eg, (double)dbeta[0]);
        assert_true(ef < 2e-5);
        assert_true(eb < 1e-4);
        if (sh->T > sh->N) assert_true(eg < 1e-4); // with one segment the gates are unused
        else assert_true(db_fast[0] == 0.0f && dbeta[0] == 0.0f);
        tu_attn_bufs_free(&f);
        tu_attn_bufs_free(&r);
    }
    run_training = 0;
    run_seed = 0;
}

/* The finite differences run on the reference (double inside: the differences are clean). */
static double loss_of(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b)
{
    run(REF, cfg, b, 0);
    double L = 0;
    for (size_t i = 0; i < b->nout; i++) L += (double)b->out[i] * b->dout[i];
    return L;
}

/* d(loss)/dx by central differences at steps h and 2h, Richardson-combined. */
static double fd_at(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b, float *x)
{
    const float keep = *x;
    double cd[2];
    for (int k = 0; k < 2; k++) {
        *x = keep + (k + 1) * 1e-2f;
        const float xp = *x;
        const double Lp = loss_of(cfg, b);
        *x = keep - (k + 1) * 1e-2f;
        const float xm = *x;
        const double Lm = loss_of(cfg, b);
        cd[k] = (Lp - Lm) / ((double)xp - xm);
    }
    *x = keep;
    return (4 * cd[0] - cd[1]) / 3;
}

static double rel_err(double fd, double an) { return fabs(fd - an) / (1e-2 + fabs(an)); }

/* Every qkv entry and every gate of the reference against finite differences. last_only: the
 * loss reads only the last segment, so the earlier segments' gradients all come through the
 * memory (and must be non-zero there). R > 1: a training call with mem_repeat = R, its
 * segments folded with the write weights drawn from seed (the same in every call). */
static void check_fd(int B, int T, int NH, int HS, int N, int rope, int delta, int last_only,
                     double R, uint64_t seed)
{
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, T, N, rope, delta);
    cfg.opt[MNI_INF_OPT_MEM_REPEAT] = R;
    run_training = 1;
    run_seed = seed;
    float *ww = drawn_weights(&cfg, B, T, seed);
    assert_true((R > 1) == (ww != NULL));
    free(ww);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, REF, &cfg, B, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, seed);
    tu_fill_normal(b.dout, b.nout, 1.0f, seed + 1);
    fill_beta(NH, seed + 2);
    const size_t C = (size_t)NH * HS;
    const int last0 = (T - 1) / N * N;
    if (last_only)
        for (int bb = 0; bb < B; bb++)
            memset(b.dout + (size_t)bb * T * C, 0, (size_t)last0 * C * sizeof(float));
    run(REF, &cfg, &b, 0);
    run(REF, &cfg, &b, 1);
    float dbeta_an[NH_MAX];
    memcpy(dbeta_an, dbeta, sizeof(dbeta_an));
    double worst = 0, early = 0;
    for (size_t i = 0; i < b.nqkv; i++) {
        double fd = fd_at(&cfg, &b, &b.qkv[i]), an = b.dqkv[i], err = rel_err(fd, an);
        if (err > FD_TOL)
            fail_msg("qkv[%zu] (B=%d T=%d N=%d NH=%d HS=%d rope=%d delta=%d R=%g): analytic %.7g, "
                     "fd %.7g", i, B, T, N, NH, HS, rope, delta, R, an, fd);
        worst = fmax(worst, err);
        if ((int)(i / (3 * C)) % T < last0) early = fmax(early, fabs(an));
    }
    for (int h = 0; h < NH; h++) {
        double fd = fd_at(&cfg, &b, &beta[h]), err = rel_err(fd, dbeta_an[h]);
        if (err > FD_TOL) fail_msg("beta[%d]: analytic %.7g, fd %.7g", h, (double)dbeta_an[h], fd);
        assert_true(fabs(dbeta_an[h]) > 1e-3); // the gate gradient is really exercised
        worst = fmax(worst, err);
    }
    print_message("fd        B=%d T=%d N=%d NH=%d HS=%d rope=%d %s%s%s: worst rel err %.2e, "
                  "largest earlier-segment grad %.3g\n", B, T, N, NH, HS, rope,
                  delta ? "delta" : "linear", R > 1 ? " weighted" : "",
                  last_only ? " (loss in last segment)" : "", worst, early);
    if (last_only) assert_true(early > 1e-2);
    tu_attn_bufs_free(&b);
    run_training = 0;
    run_seed = 0;
}

static void test_ref_vs_fd(void **s)
{
    (void)s;
    check_fd(1, 10, 2, 4, 3, 1, 0, 0, 0, 11); // 4 segments, the last short
    check_fd(1, 10, 2, 4, 3, 1, 1, 0, 0, 12);
    check_fd(2, 8, 1, 6, 4, 0, 1, 0, 0, 13);
    check_fd(1, 9, 2, 4, 3, 1, 0, 1, 0, 14); // BPTT: the loss only in segment 2
    check_fd(1, 9, 2, 4, 3, 0, 1, 1, 0, 15);
    // with write weights (2 windows x 4 segments)
    check_fd(2, 10, 2, 4, 3, 1, 0, 0, REPEAT, 17);
    check_fd(2, 10, 2, 4, 3, 1, 1, 0, REPEAT, 18);
    check_fd(2, 9, 1, 4, 3, 0, 1, 1, REPEAT, 19);
}

/* A write weight c means "as if the segment occurred c times": under the linear rule, a window
 * [A, B, C] whose write weights give A three times B's weight reads in C exactly what the
 * unweighted window [A, A, A, B, C] reads there (local attention sees only its own segment, at
 * positions within it; the read-out is normalised, so weights show only through their ratios:
 * with A alone in memory no weight could show). The weights are drawn from the call's seed,
 * log-uniformly in [1, R] (R = option mem_repeat, in training): R is chosen here so that this
 * seed's draws have c_A = 3 c_B exactly (up to float rounding). Fast path and reference. Also:
 * the draws lie in [1, R] and depend on the seed; none are drawn in evaluation or with
 * mem_repeat <= 1, and then a training forward is the unweighted one, bit for bit. */
static void test_write_weight_is_repetition(void **s)
{
    (void)s;
    const int NH = 2, HS = 8, N = 5;
    struct mnemo_attn_cfg c3 = make_cfg(NH, HS, 5 * N, N, 1, 0);
    /* a seed whose draws at R = 10 are far enough apart (c_A > 1.5 c_B) */
    c3.opt[MNI_INF_OPT_MEM_REPEAT] = 10;
    uint64_t seed = 0;
    for (uint64_t sd = 1; sd < 100 && !seed; sd++) {
        float *w = drawn_weights(&c3, 1, 3 * N, sd);
        assert_non_null(w);
        for (int i = 0; i < 3; i++) assert_true(w[i] >= 1.0f && w[i] <= 10.0f);
        if (w[0] > 1.5f * w[1]) seed = sd;
        free(w);
    }
    assert_true(seed != 0);
    {
        float *w = drawn_weights(&c3, 1, 3 * N, seed), *w2 = drawn_weights(&c3, 1, 3 * N, seed + 1);
        assert_true(memcmp(w, w2, 3 * sizeof(float)) != 0); // another seed, other draws
        free(w), free(w2);
        struct mnemo_attn_io io;
        memset(&io, 0, sizeof(io));
        io.B = 1, io.T = 3 * N, io.seed = seed;
        float none[3];
        assert_int_equal(mni_inf_write_weights(&c3, &io, none), 0); // evaluation: none drawn
        struct mnemo_attn_cfg c1 = c3;
        c1.opt[MNI_INF_OPT_MEM_REPEAT] = 1;
        io.training = 1;
        assert_int_equal(mni_inf_write_weights(&c1, &io, none), 0); // [1, 1]: nothing to draw
    }
    /* w = R^u with u uniform: u_A - u_B = ln(w_A / w_B) / ln R, so R' = 3^(1 / (u_A - u_B))
     * makes the ratio 3 (two rounds, against the float rounding of the draws) */
    for (int it = 0; it < 2; it++) {
        float *w = drawn_weights(&c3, 1, 3 * N, seed);
        const double du = log((double)w[0] / w[1]) / log(c3.opt[MNI_INF_OPT_MEM_REPEAT]);
        c3.opt[MNI_INF_OPT_MEM_REPEAT] = exp(log(3.0) / du);
        free(w);
    }
    float *w = drawn_weights(&c3, 1, 3 * N, seed);
    const double ratio = (double)w[0] / w[1];
    print_message("write weights of seed %llu at mem_repeat %.6g: %.6g %.6g %.6g (A/B %.8f)\n",
                  (unsigned long long)seed, c3.opt[MNI_INF_OPT_MEM_REPEAT], (double)w[0],
                  (double)w[1], (double)w[2], ratio);
    assert_true(fabs(ratio - 3.0) < 1e-5);
    assert_true(w[1] > 1.01f); // B's weight is not 1 either: only the ratio is matched
    free(w);
    assert_int_equal(FAST->validate(&c3), MNEMO_OK);
    struct mnemo_attn_cfg c0 = c3; // no write weights
    c0.opt[MNI_INF_OPT_MEM_REPEAT] = 0;
    for (int r = 0; r < 2; r++) {
        const struct mnemo_attn_ops *ops = r ? REF : FAST;
        struct tu_attn_bufs w3, w5;
        tu_attn_bufs_init(&w3, ops, &c3, 1, 3 * N);
        tu_attn_bufs_init(&w5, ops, &c3, 1, 5 * N);
        tu_fill_normal(w3.qkv, w3.nqkv, 1.0f, 31);
        const size_t seg = (size_t)N * 3 * NH * HS; // floats of qkv per segment
        for (int k = 0; k < 3; k++) memcpy(w5.qkv + k * seg, w3.qkv, seg * sizeof(float));
        memcpy(w5.qkv + 3 * seg, w3.qkv + seg, 2 * seg * sizeof(float));
        fill_beta(NH, 32);
        run_training = 1, run_seed = seed;
        run(ops, &c3, &w3, 0); // weighted
        run_training = 0, run_seed = 0;
        run(ops, &c3, &w5, 0); // evaluation: unweighted
        const size_t out_seg = (size_t)N * NH * HS;
        double e = tu_rel_max_err(w3.out + 2 * out_seg, w5.out + 4 * out_seg, out_seg);
        print_message("weights 3c, c = three copies and one (%s): rel err %.2e\n",
                      r ? "ref" : "fast", e);
        assert_true(e < 1e-5);
        // and the weights matter: unweighted (evaluation), the window reads something else
        run(ops, &c3, &w3, 0);
        assert_true(tu_rel_max_err(w3.out + 2 * out_seg, w5.out + 4 * out_seg, out_seg) > 1e-3);
        // training without mem_repeat is that unweighted forward, bit for bit
        float *ev = malloc(w3.nout * sizeof(float));
        assert_non_null(ev);
        memcpy(ev, w3.out, w3.nout * sizeof(float));
        run_training = 1, run_seed = seed;
        run(ops, &c0, &w3, 0);
        assert_memory_equal(ev, w3.out, w3.nout * sizeof(float));
        run_training = 0, run_seed = 0;
        free(ev);
        tu_attn_bufs_free(&w3);
        tu_attn_bufs_free(&w5);
    }
}

/* N = 1, one head of width 2, no RoPE: every token is its own segment, so A_dot,t = v_t and the
 * memory is a normalised sum over the earlier tokens, computed here by hand:
 *   linear: A_mem,2 = (c0 a0 v0 + c1 a1 v1) / (c0 a0 + c1 a1),  a_j = sigma(q_2) . sigma(k_j)
 *   delta:  u_1 = v1 - v0 (the memory holds only v0), A_mem,2 = (c0 a0 v0 + c1 a1 u_1) / (c0 a0 + c1 a1)
 * and A_mem,1 = v0 under both rules, with c_s the write weight of segment s: 1, or (training
 * with mem_repeat) the weights the call draws from its seed, known from mni_inf_write_weights. */
static void test_hand_case(void **s)
{
    (void)s;
    const float q[3][2] = {{0.3f, -0.2f}, {1.0f, -1.5f}, {-0.4f, 0.8f}};
    const float k[3][2] = {{0.5f, -2.0f}, {-1.0f, 0.7f}, {0.2f, 0.1f}};
    const float v[3][2] = {{1.0f, 2.0f}, {-3.0f, 0.5f}, {0.25f, -1.0f}};
    for (int r = 0; r < 2; r++)
        for (int delta = 0; delta < 2; delta++)
            for (int weighted = 0; weighted < 2; weighted++) {
                const struct mnemo_attn_ops *ops = r ? REF : FAST;
                struct mnemo_attn_cfg c = make_cfg(1, 2, 3, 1, 0, delta);
                double cw[2] = {1.0, 1.0};
                if (weighted) {
                    c.opt[MNI_INF_OPT_MEM_REPEAT] = REPEAT;
                    run_training = 1, run_seed = 61 + (uint64_t)delta;
                    float *w = drawn_weights(&c, 1, 3, run_seed);
                    assert_non_null(w);
                    cw[0] = w[0], cw[1] = w[1];
                    free(w);
                    assert_true(fabs(cw[0] - cw[1]) > 0.5); // the weights really differ
                }
                struct tu_attn_bufs b;
                tu_attn_bufs_init(&b, ops, &c, 1, 3);
                for (int t = 0; t < 3; t++)
                    for (int d = 0; d < 2; d++) {
                        b.qkv[t * 6 + d] = q[t][d];
                        b.qkv[t * 6 + 2 + d] = k[t][d];
                        b.qkv[t * 6 + 4 + d] = v[t][d];
                    }
                beta[0] = 0.7f;
                run(ops, &c, &b, 0);
                run_training = 0, run_seed = 0;
                const double g = 1 / (1 + exp(-0.7));
#define SIG(x) ((x) > 0 ? (x) + 1.0 : exp(x))
                double a[2];
                for (int j = 0; j < 2; j++)
                    a[j] = cw[j] * (SIG(q[2][0]) * SIG(k[j][0]) + SIG(q[2][1]) * SIG(k[j][1]));
#undef SIG
                for (int d = 0; d < 2; d++) {
                    const double u1 = delta ? v[1][d] - v[0][d] : v[1][d];
                    const double want0 = v[0][d], want1 = g * v[0][d] + (1 - g) * v[1][d];
                    const double want2 =
                        g * (a[0] * v[0][d] + a[1] * u1) / (a[0] + a[1]) + (1 - g) * v[2][d];
                    const double a0 = a[0] / cw[0], a1 = a[1] / cw[1]; // unweighted
                    if (weighted && d == 0) // the weights show in the expectation itself
                        assert_true(fabs(want2 - (g * (a0 * v[0][d] + a1 * u1) / (a0 + a1) +
                                                  (1 - g) * v[2][d])) > 1e-3);
                    assert_true(fabs(b.out[d] - want0) < 1e-6);
                    assert_true(fabs(b.out[2 + d] - want1) < 1e-6);
                    if (fabs(b.out[4 + d] - want2) > 1e-5)
                        fail_msg("hand case ref=%d delta=%d weighted=%d (c %.5g %.5g) d=%d: got "
                                 "%.7g, want %.7g", r, delta, weighted, cw[0], cw[1], d,
                                 (double)b.out[4 + d], want2);
                }
                tu_attn_bufs_free(&b);
            }
}

/* With the gates shut (beta = -40, g = 4e-18), every segment is plain causal attention over its
 * own tokens at positions 0..n-1: the dense kind over windows of N tokens (an independent
 * implementation of the local part, including the RoPE positions). */
static void test_closed_gates_are_dense_segments(void **s)
{
    (void)s;
    const int B = 2, N = 12, S = 4, T = N * S, NH = 3, HS = 8;
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        const struct mnemo_attn_ops *ops = use_ref ? REF : FAST;
        struct mnemo_attn_cfg ci = make_cfg(NH, HS, T, N, 1, 1);
        struct mnemo_attn_cfg cd;
        mni_inf_dense_cfg(&cd, &ci);
        struct tu_attn_bufs a, d;
        tu_attn_bufs_init(&a, ops, &ci, B, T);
        tu_attn_bufs_init(&d, &mni_attn_dense, &cd, B * S, N);
        tu_fill_normal(a.qkv, a.nqkv, 1.0f, 77);
        memcpy(d.qkv, a.qkv, a.nqkv * sizeof(float));
        for (int h = 0; h < NH; h++) beta[h] = -40.0f;
        run(ops, &ci, &a, 0);
        struct mnemo_attn_io io = tu_attn_io(&d);
        assert_int_equal(mni_attn_dense.forward(&cd, &io), MNEMO_OK);
        double e = tu_rel_max_err(a.out, d.out, a.nout);
        print_message("closed gates = dense per segment (ref=%d): max rel err %.2e\n", use_ref, e);
        assert_true(e < 1e-5);
        /* open gates change every segment but the first */
        for (int h = 0; h < NH; h++) beta[h] = 0.0f;
        run(ops, &ci, &a, 0);
        const size_t C = (size_t)NH * HS;
        assert_true(tu_rel_max_err(a.out, d.out, (size_t)N * C) < 1e-5);
        assert_true(tu_rel_max_err(a.out + (size_t)N * C, d.out + (size_t)N * C, (size_t)N * C) > 1e-2);
        tu_attn_bufs_free(&a);
        tu_attn_bufs_free(&d);
    }
}

/* The session, token by token and in chunks that cross segment boundaries, against the training
 * forward. The stream runs to 3 n_ctx: a kind whose behaviour depends on N only can be checked
 * there against a forward with a longer n_ctx. The state's live bytes go back to the same value
 * at every segment start and never exceed state_bytes; on the fast path the state holds one
 * segment of keys and values (the dense cache's) beside the memory: its raw copies are one fold
 * block of at most 64 rows, the memory at most twice (M, z and the segment's partial fold). */
static void session_case(int n_ctx, int N, int NH, int HS, int rope, int delta, int use_ref)
{
    const struct mnemo_attn_ops *ops = use_ref ? REF : FAST;
    const int T = 3 * n_ctx;
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, n_ctx, N, rope, delta);
    struct mnemo_attn_cfg big = make_cfg(NH, HS, T, N, rope, delta);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, ops, &big, 1, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, 40 + T + delta);
    fill_beta(NH, 50 + N);
    run(ops, &big, &b, 0);
    const size_t C = (size_t)NH * HS;
    const int chunks[][4] = {{1, 1, 1, 1}, {3, 7, 1, 16}};
    for (int k = 0; k < 2; k++) {
        const size_t sb = ops->state_bytes(&cfg);
        if (!use_ref) {
            struct mnemo_attn_cfg d;
            mni_inf_dense_cfg(&d, &cfg);
            const size_t mem = (size_t)NH * (HS * HS + HS) * sizeof(float);
            const size_t raw = 2 * (size_t)NH * (N < 64 ? N : 64) * HS * sizeof(float);
            assert_true(sb <= mni_attn_dense.state_bytes(&d) + 2 * mem + raw + 8 * 64);
        }
        void *st = mni_alloc(sb);
        void *scratch = mni_alloc(ops->step_scratch_bytes(&cfg, 16));
        float *out = mni_alloc((size_t)T * C * sizeof(float));
        memset(st, 0xff, sb);
        ops->state_init(&cfg, st);
        const size_t live0 = ops->state_live_bytes(&cfg, st);
        const struct mni_inf_state *hd = st;
        int t = 0, c = 0;
        while (t < T) {
            int n = chunks[k][c++ % 4];
            if (n > T - t) n = T - t;
            enum mnemo_status rc = step(ops, &cfg, st, out + (size_t)t * C,
                                        b.qkv + (size_t)t * 3 * C, n, scratch);
            if (rc != MNEMO_OK) fail_msg("step at %d: %s", t, mnemo_last_error());
            t += n;
            assert_true(ops->state_live_bytes(&cfg, st) <= sb);
            if (hd->in_seg == 0) assert_true(ops->state_live_bytes(&cfg, st) == live0);
        }
        assert_int_equal(hd->count, T);
        assert_int_equal(hd->n_seg, T / N);
        assert_true(ops->state_bytes(&cfg) == sb);
        double err = tu_rel_max_err(out, b.out, (size_t)T * C);
        print_message("session   n_ctx=%d N=%d NH=%d HS=%d rope=%d %s ref=%d %s: %d tokens, %zu state "
                      "bytes, max rel err %.2e\n", n_ctx, N, NH, HS, rope, delta ? "delta" : "linear",
                      use_ref, k ? "chunks" : "by 1", T, sb, err);
        assert_true(err < 2e-5);
        mni_free(st), mni_free(scratch), mni_free(out);
    }
    tu_attn_bufs_free(&b);
}

static void test_session_equals_forward(void **s)
{
    (void)s;
    session_case(20, 6, 3, 8, 1, 0, 0);
    session_case(20, 6, 3, 8, 1, 1, 0);
    session_case(20, 6, 3, 8, 1, 1, 1);
    session_case(16, 16, 1, 4, 0, 0, 0);
    session_case(24, 10, 2, 16, 1, 0, 1);
    session_case(140, 70, 2, 8, 1, 1, 0); // the fold in blocks of 64 rows
    session_case(200, 200, 2, 8, 1, 0, 0); // four blocks, the last partial
}

/* state_bytes is a function of (NH, HS, N) only: neither n_ctx nor the stream length appears. */
static void test_state_bytes_bounded(void **s)
{
    (void)s;
    struct mnemo_attn_cfg a = make_cfg(4, 32, 256, 64, 1, 0);
    struct mnemo_attn_cfg b = make_cfg(4, 32, 4096, 64, 1, 1);
    assert_true(FAST->state_bytes(&a) == FAST->state_bytes(&b));
    assert_true(REF->state_bytes(&a) == REF->state_bytes(&b));
    /* M and z in fp32 per head, the rest one segment: well under a dense cache of n_ctx */
    const size_t mz = 4 * (32 * 32 + 32) * sizeof(float);
    assert_true(FAST->state_bytes(&b) > mz);
    assert_true(FAST->state_bytes(&b) < mni_attn_dense.state_bytes(&(struct mnemo_attn_cfg){
        .kind = MNEMO_ATTN_KIND_DENSE, .n_head = 4, .head_dim = 32, .n_ctx = 4096, .rope = 1,
        .rope_theta = 10000.0f, .n_layer = 1, .causal = 1}) / 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_and_validate),
        cmocka_unit_test(test_fast_vs_ref),
        cmocka_unit_test(test_ref_vs_fd),
        cmocka_unit_test(test_write_weight_is_repetition),
        cmocka_unit_test(test_hand_case),
        cmocka_unit_test(test_closed_gates_are_dense_segments),
        cmocka_unit_test(test_session_equals_forward),
        cmocka_unit_test(test_state_bytes_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
