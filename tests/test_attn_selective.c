/*
 * test_attn_selective.c -- the Selective Attention kind: the tiled path against the naive
 * reference (forward and backward, with and without RoPE, strips with tails, one head or
 * several), the reference's gradients against finite differences (through the selection into
 * head 0's q and k), the kind against the dense kind when head 0 casts no vote, the penalty's
 * effect on a hand-made case, and the streaming session against the training forward; the
 * kind's options (budget, threshold, mem_eps, mem_tau) through the registry's parsing.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "mnemo_attn.h"
#include "testutil.h"

#define FD_TOL 2e-3

static const struct mnemo_attn_ops *const OPS = &mni_attn_selective, *const REF = &mni_attn_selective_ref;

/* The fast or the reference ops of the kind. */
static const struct mnemo_attn_ops *sel_ops(int use_ref) { return use_ref ? REF : OPS; }

/* By hand (one layer, every option at its default: mem_tau 1), not validated. */
static struct mnemo_attn_cfg make_cfg(int kind, int NH, int HS, int n_ctx, int rope)
{
    return tu_attn_cfg(kind, NH, HS, n_ctx, rope);
}

/* The memory loss's options: mem_eps chosen so that the reported aux_loss is w sum_b max_i M_i
 * (aux_loss = mem_eps / (n_layer T) sum_b max_i M_i), i.e. the weight w per unit of M whatever
 * the window and the number of layers; w = 0 turns the loss off. */
static void set_memory(struct mnemo_attn_cfg *c, double w, double tau, int T)
{
    c->opt[MNI_SEL_OPT_MEM_EPS] = w * c->n_layer * T;
    c->opt[MNI_SEL_OPT_MEM_TAU] = tau;
}

/* mnemo_attn_cfg_make of kind (NH 2, HS 8, n_ctx 16, n_layer layers) with opts: MNEMO_ERR_ARG
 * and a message naming the kind and the option. */
static void expect_opts_err(int kind, int n_layer, const char *opts, const char *option)
{
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, kind, 2, 8, 16, 1, n_layer);
    struct mnemo_attn_cfg c;
    const char *name = mnemo_attn_kind_name(kind);
    if (mnemo_attn_cfg_make(&c, &mc, opts, -1) != MNEMO_ERR_ARG)
        fail_msg("%s '%s' was accepted", name, opts);
    if (!strstr(mnemo_last_error(), name) || !strstr(mnemo_last_error(), option))
        fail_msg("%s '%s': message '%s' does not name '%s' and '%s'", name, opts,
                 mnemo_last_error(), name, option);
}

/* The weight of the memory loss in the tests' objective sum(out * dout) + AUX_W * aux_loss. */
#define AUX_W 0.37f
static double last_aux;

static void run(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b,
                int backward)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    io.aux_grad = AUX_W;
    enum mnemo_status st = backward ? ops->backward(cfg, &io) : ops->forward(cfg, &io);
    if (st != MNEMO_OK) fail_msg("%s: %s", backward ? "backward" : "forward", mnemo_last_error());
    if (!backward) last_aux = io.aux_loss;
}

static void test_registry_and_validate(void **s)
{
    (void)s;
    assert_ptr_equal(mnemo_attn_ops_get(MNEMO_ATTN_KIND_SELECTIVE), &mni_attn_selective);
    assert_ptr_equal(mnemo_attn_ops_get_ref(MNEMO_ATTN_KIND_SELECTIVE), &mni_attn_selective_ref);
    assert_string_equal(mnemo_attn_kind_name(MNEMO_ATTN_KIND_SELECTIVE), "selective");
    assert_int_equal(mnemo_attn_kind_from_name("selective"), MNEMO_ATTN_KIND_SELECTIVE);
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        const struct mnemo_attn_ops *ops = sel_ops(use_ref);
        struct mnemo_attn_cfg c = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, 2, 8, 16, 1);
        assert_int_equal(ops->validate(&c), MNEMO_OK);
        c.head_dim = 7;
        assert_int_equal(ops->validate(&c), MNEMO_ERR_ARG);
        c = make_cfg(MNEMO_ATTN_KIND_DENSE, 2, 8, 16, 1);
        assert_int_equal(ops->validate(&c), MNEMO_ERR_ARG);
        // no parameters of its own
        struct mnemo_attn_param tab[MNEMO_ATTN_MAX_PARAMS];
        c = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, 2, 8, 16, 1);
        assert_true(ops->params == NULL || ops->params(&c, tab) == 0);
        // a session is bounded only with a budget
        assert_false(ops->caps(&c) & MNEMO_ATTN_CAP_BOUNDED);
        c.opt[MNI_SEL_OPT_BUDGET] = 4;
        assert_true(ops->caps(&c) & MNEMO_ATTN_CAP_BOUNDED);
    }
    // the option table: rows where attn_int.h says, defaults (mem_tau 1, everything else off)
    const int K = MNEMO_ATTN_KIND_SELECTIVE;
    assert_int_equal(OPS->n_opts, MNI_SEL_OPT_COUNT);
    assert_int_equal(mnemo_attn_opt_find(K, "budget"), MNI_SEL_OPT_BUDGET);
    assert_int_equal(mnemo_attn_opt_find(K, "threshold"), MNI_SEL_OPT_THRESHOLD);
    assert_int_equal(mnemo_attn_opt_find(K, "mem_eps"), MNI_SEL_OPT_MEM_EPS);
    assert_int_equal(mnemo_attn_opt_find(K, "mem_tau"), MNI_SEL_OPT_MEM_TAU);
    assert_true(OPS->opts[MNI_SEL_OPT_BUDGET].flags & MNEMO_ATTN_OPT_PER_LAYER);
    assert_int_equal(OPS->opts[MNI_SEL_OPT_BUDGET].scope, MNEMO_ATTN_SCOPE_SESSION);
    assert_int_equal(OPS->opts[MNI_SEL_OPT_THRESHOLD].scope, MNEMO_ATTN_SCOPE_SESSION);
    assert_int_equal(OPS->opts[MNI_SEL_OPT_MEM_EPS].scope, MNEMO_ATTN_SCOPE_TRAIN);
    assert_int_equal(OPS->opts[MNI_SEL_OPT_MEM_TAU].scope, MNEMO_ATTN_SCOPE_TRAIN);
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, K, 2, 8, 16, 1, 3);
    struct mnemo_attn_cfg c;
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, NULL, -1), MNEMO_OK);
    assert_true(c.opt[MNI_SEL_OPT_BUDGET] == 0 && c.opt[MNI_SEL_OPT_THRESHOLD] == 0);
    assert_true(c.opt[MNI_SEL_OPT_MEM_EPS] == 0 && c.opt[MNI_SEL_OPT_MEM_TAU] == 1);
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "budget=6/0/2,threshold=0.5,mem_eps=0.1,mem_tau=2", 1),
                     MNEMO_OK);
    assert_true(c.opt[MNI_SEL_OPT_BUDGET] == 0 && c.opt[MNI_SEL_OPT_THRESHOLD] == 0.5);
    assert_true(c.opt[MNI_SEL_OPT_MEM_EPS] == 0.1 && c.opt[MNI_SEL_OPT_MEM_TAU] == 2);
    // settings the kind cannot take (the old validate's checks, now the registry's ranges and
    // the kind's validate): errors naming the kind and the option
    expect_opts_err(K, 1, "budget=1", "budget");
    expect_opts_err(K, 1, "budget=-2", "budget");
    expect_opts_err(K, 3, "budget=6/-1/2", "budget"); /* every layer's value is checked */
    expect_opts_err(K, 1, "threshold=-1", "threshold");
    expect_opts_err(K, 1, "threshold=nan", "threshold");
    expect_opts_err(K, 1, "threshold=inf", "threshold");
    expect_opts_err(K, 1, "mem_eps=-0.1", "mem_eps");
    expect_opts_err(K, 1, "mem_eps=nan", "mem_eps");
    expect_opts_err(K, 1, "mem_tau=-1", "mem_tau");
    expect_opts_err(K, 1, "mem_tau=0", "mem_tau"); // no longer "0 = 1"
    expect_opts_err(K, 1, "mem_tau=inf", "mem_tau");
    // and the dense kind has none of them (its cache cannot be pruned)
    expect_opts_err(MNEMO_ATTN_KIND_DENSE, 1, "budget=4", "budget");
    expect_opts_err(MNEMO_ATTN_KIND_DENSE, 1, "threshold=0.5", "threshold");
    expect_opts_err(MNEMO_ATTN_KIND_DENSE, 1, "mem_eps=0.1", "mem_eps");
}

/* Shapes: strips with tails (T not a multiple of 16), one head (head 0 votes and is the only
 * one attending), several heads, RoPE on and off, odd head widths; windows longer than a key
 * block of the fast path (64 keys), so that the online softmax rescales across blocks and the
 * carries cross block edges (T 150: a partial last block, T 192: whole blocks). */
struct shape {
    int B, T, NH, HS, rope;
};
static const struct shape shapes[] = {
    {2, 37, 3, 8, 1}, {1, 16, 1, 4, 0}, {3, 50, 2, 6, 1}, {1, 5, 4, 2, 0}, {2, 64, 4, 32, 1},
    {1, 45, 2, 24, 1}, /* head dim 24: the products in blocks of 16 and then 8 columns */
    {2, 150, 3, 16, 1}, {1, 192, 2, 8, 0},
};

/* mem_w: the memory loss's weight per unit of M (0 = off, set_memory); two layers, so that a
 * path that forgot n_layer in the loss's scale would differ from the other. */
static void fast_vs_ref(double mem_w, double mem_tau)
{
    for (size_t c = 0; c < sizeof(shapes) / sizeof(shapes[0]); c++) {
        const struct shape *sh = &shapes[c];
        struct mnemo_attn_cfg cf = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, sh->NH, sh->HS, sh->T, sh->rope);
        cf.n_layer = 2;
        set_memory(&cf, mem_w, mem_tau, sh->T);
        const struct mnemo_attn_cfg cr = cf;
        struct tu_attn_bufs f, r;
        tu_attn_bufs_init(&f, OPS, &cf, sh->B, sh->T);
        tu_attn_bufs_init(&r, REF, &cr, sh->B, sh->T);
        /* scale 2: head-0 logits of a few units, so many votes are cast and F matters */
        tu_fill_normal(f.qkv, f.nqkv, 2.0f, 100 + c);
        tu_fill_normal(f.dout, f.nout, 1.0f, 200 + c);
        memcpy(r.qkv, f.qkv, f.nqkv * sizeof(float));
        memcpy(r.dout, f.dout, f.nout * sizeof(float));
        run(OPS, &cf, &f, 0);
        const double aux_f = last_aux;
        run(REF, &cr, &r, 0);
        double ef = tu_rel_max_err(f.out, r.out, f.nout);
        assert_true(fabs(aux_f - last_aux) <= 1e-5 * (1 + fabs(last_aux)));
        if (mem_w > 0) assert_true(last_aux > 0);
        else assert_true(aux_f == 0 && last_aux == 0);
        run(OPS, &cf, &f, 1);
        run(REF, &cr, &r, 1);
        double eb = tu_rel_max_err(f.dqkv, r.dqkv, f.nqkv);
        print_message("fast/ref  B=%d T=%d NH=%d HS=%d rope=%d mem=%g: forward %.2e, backward %.2e, "
                      "aux %.4f\n", sh->B, sh->T, sh->NH, sh->HS, sh->rope, mem_w, ef, eb,
                      last_aux);
        assert_true(ef < 2e-5);
        assert_true(eb < 1e-4);
        tu_attn_bufs_free(&f);
        tu_attn_bufs_free(&r);
    }
}

static void test_fast_vs_ref(void **s)
{
    (void)s;
    fast_vs_ref(0.0, 1.0);
}

/* With the memory loss: its value and its gradient (weight AUX_W) on top of the attention's;
 * tau 3 so that some penalties are above it and some below; a weight of 0.5 per unit of M (not
 * 1, so that a backward that forgot the loss's scale differs). */
static void test_fast_vs_ref_memory(void **s)
{
    (void)s;
    fast_vs_ref(0.5, 3.0);
}

static double loss_of(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b)
{
    run(REF, cfg, b, 0);
    double L = AUX_W * last_aux;
    for (size_t i = 0; i < b->nout; i++) L += (double)b->out[i] * b->dout[i];
    return L;
}

/* Every entry of qkv perturbed (Richardson-combined central differences), the reference ops;
 * mem_w: the memory loss's weight per unit of M (set_memory), tau 2. */
static void check_fd(int B, int T, int NH, int HS, int rope, uint64_t seed, double mem_w)
{
    struct mnemo_attn_cfg cfg = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, NH, HS, T, rope);
    set_memory(&cfg, mem_w, 2.0, T);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, REF, &cfg, B, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.5f, seed);
    tu_fill_normal(b.dout, b.nout, 1.0f, seed + 1);
    run(REF, &cfg, &b, 0);
    run(REF, &cfg, &b, 1);
    double worst = 0;
    int skipped = 0;
    for (size_t i = 0; i < b.nqkv; i++) {
        const float x = b.qkv[i];
        double cd[2];
        for (int k = 0; k < 2; k++) {
            b.qkv[i] = x + (k + 1) * 1e-2f;
            float xp = b.qkv[i];
            double Lp = loss_of(&cfg, &b);
            b.qkv[i] = x - (k + 1) * 1e-2f;
            float xm = b.qkv[i];
            double Lm = loss_of(&cfg, &b);
            cd[k] = (Lp - Lm) / ((double)xp - xm);
        }
        b.qkv[i] = x;
        /* a ReLU kink inside the stencil makes the two differences disagree: skip those */
        if (fabs(cd[0] - cd[1]) > 2e-3 * (1e-2 + fabs(cd[0]))) {
            skipped++;
            continue;
        }
        double fd = (4 * cd[0] - cd[1]) / 3, an = b.dqkv[i];
        double err = fabs(fd - an) / (1e-2 + fabs(an));
        if (err > FD_TOL)
            fail_msg("qkv[%zu] (B=%d T=%d NH=%d HS=%d rope=%d): analytic %.7g, fd %.7g", i, B, T,
                     NH, HS, rope, an, fd);
        worst = err > worst ? err : worst;
    }
    print_message("fd        B=%d T=%d NH=%d HS=%d rope=%d mem=%g: worst rel err %.2e (%d of %zu at a kink)\n",
                  B, T, NH, HS, rope, mem_w, worst, skipped, b.nqkv);
    assert_true(skipped * 10 < (int)b.nqkv);
    tu_attn_bufs_free(&b);
}

static void test_ref_vs_fd(void **s)
{
    (void)s;
    check_fd(1, 7, 2, 4, 1, 11, 0.0);
    check_fd(2, 6, 1, 6, 0, 12, 0.0);
    check_fd(1, 8, 3, 2, 1, 13, 0.0);
    /* the memory loss's gradient (its max row and the clamp at tau are kinks too), with a
     * weight other than 1 per unit of M (the loss's scale must reach the gradient) */
    check_fd(1, 7, 2, 4, 1, 14, 1.0);
    check_fd(2, 8, 1, 6, 0, 15, 0.5);
}

/* With q of head 0 zero, no vote is ever cast (relu(0) = 0): F = 0 and every head is plain
 * causal attention, so the kind must equal the dense kind (an independent implementation);
 * head 0's own output is then uniform attention. */
static void test_no_votes_is_dense(void **s)
{
    (void)s;
    const int B = 2, T = 40, NH = 3, HS = 8;
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        const struct mnemo_attn_ops *ops = sel_ops(use_ref);
        struct mnemo_attn_cfg cs = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, NH, HS, T, 1);
        struct mnemo_attn_cfg cd = make_cfg(MNEMO_ATTN_KIND_DENSE, NH, HS, T, 1);
        struct tu_attn_bufs a, d;
        tu_attn_bufs_init(&a, ops, &cs, B, T);
        tu_attn_bufs_init(&d, &mni_attn_dense, &cd, B, T);
        tu_fill_normal(a.qkv, a.nqkv, 2.0f, 7);
        for (int t = 0; t < B * T; t++) memset(a.qkv + (size_t)t * 3 * NH * HS, 0, HS * sizeof(float));
        memcpy(d.qkv, a.qkv, a.nqkv * sizeof(float));
        run(ops, &cs, &a, 0);
        run(&mni_attn_dense, &cd, &d, 0);
        double e = tu_rel_max_err(a.out, d.out, a.nout);
        print_message("no votes = dense (ref=%d): max rel err %.2e\n", use_ref, e);
        assert_true(e < 1e-5);
        /* and with votes the two differ */
        tu_fill_normal(a.qkv, a.nqkv, 2.0f, 7);
        memcpy(d.qkv, a.qkv, a.nqkv * sizeof(float));
        run(ops, &cs, &a, 0);
        run(&mni_attn_dense, &cd, &d, 0);
        assert_true(tu_rel_max_err(a.out, d.out, a.nout) > 1e-2);
        tu_attn_bufs_free(&a);
        tu_attn_bufs_free(&d);
    }
}

/* A hand-made window (NH = 1, HS = 2, no RoPE, T = 4): k_j = (1, 0) for every j, q_i = (s_i, 0),
 * so z[i,j] = s_i / sqrt(2) for every j <= i and the votes are known in closed form. Token 3 may
 * only see F[3,1] = relu(z[2,1]) = s_2 / sqrt(2); the other keys are unpenalised. With values
 * v_j = (j, 0), the output of query 3 is a softmax of logits (z3 - F[3,j]) over j = 0..3. */
static void test_hand_case(void **s)
{
    (void)s;
    const int T = 4, HS = 2;
    const float sq[4] = {0.7f, -1.0f, 3.0f, 0.5f};
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        const struct mnemo_attn_ops *ops = sel_ops(use_ref);
        struct mnemo_attn_cfg c = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, 1, HS, T, 0);
        struct tu_attn_bufs b;
        tu_attn_bufs_init(&b, ops, &c, 1, T);
        memset(b.qkv, 0, b.nqkv * sizeof(float));
        for (int t = 0; t < T; t++) {
            b.qkv[t * 6 + 0] = sq[t]; /* q */
            b.qkv[t * 6 + 2] = 1.0f;  /* k */
            b.qkv[t * 6 + 4] = (float)t; /* v */
        }
        run(ops, &c, &b, 0);
        assert_true(last_aux == 0); /* mem_eps 0: no memory loss */
        const double z3 = sq[3] / sqrt(2.0), F31 = sq[2] / sqrt(2.0);
        double w[4] = {exp(z3), exp(z3 - F31), exp(z3), exp(z3)}, l = 0, o = 0;
        for (int j = 0; j < 4; j++) l += w[j], o += j * w[j];
        print_message("hand case (ref=%d): out %.6f, want %.6f\n", use_ref, b.out[3 * HS], o / l);
        assert_true(fabs(b.out[3 * HS] - o / l) < 1e-5);
        /* query 2 sees no penalty at all: F[2,1] would need a vote of a token between 1 and 2 */
        double o2 = (0 + 1 + 2) / 3.0;
        assert_true(fabs(b.out[2 * HS] - o2) < 1e-5);
        /* the memory loss (tau 1, the default): M_0..M_3 = 1, 2, 3, 4 - min(F[3,1], 1) = 3:
         * max 3, reported weighted as mem_eps max M / (n_layer T) (the paper's eps L_mem once
         * the model sums the layers) */
        c.opt[MNI_SEL_OPT_MEM_EPS] = 0.1;
        c.n_layer = 2;
        const double scale = 0.1 / (2 * T);
        run(ops, &c, &b, 0);
        print_message("hand case (ref=%d): aux %.8f, want %.8f\n", use_ref, last_aux, 3.0 * scale);
        assert_true(fabs(last_aux / scale - 3.0) < 1e-6);
        /* tau 3 > F[3,1] = 2.12: M_3 = 4 - 2.12 / 3 = 3.29 */
        c.opt[MNI_SEL_OPT_MEM_TAU] = 3.0;
        run(ops, &c, &b, 0);
        assert_true(fabs(last_aux / scale - (4.0 - F31 / 3.0)) < 1e-5);
        tu_attn_bufs_free(&b);
    }
}

/* The session, token by token and in chunks, against the training forward. */
static void session_case(int T, int NH, int HS, int rope, int use_ref)
{
    const struct mnemo_attn_ops *ops = sel_ops(use_ref);
    struct mnemo_attn_cfg cfg = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, NH, HS, T, rope);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, ops, &cfg, 1, T);
    tu_fill_normal(b.qkv, b.nqkv, 2.0f, 40 + T);
    run(ops, &cfg, &b, 0);
    const size_t C = (size_t)NH * HS;
    const int chunks[][4] = {{1, 1, 1, 1}, {3, 7, 1, 16}};
    for (int k = 0; k < 2; k++) {
        void *st = mni_alloc(ops->state_bytes(&cfg));
        void *scratch = mni_alloc(ops->step_scratch_bytes(&cfg, 16));
        float *out = mni_alloc((size_t)T * C * sizeof(float));
        memset(st, 0xff, ops->state_bytes(&cfg));
        ops->state_init(&cfg, st);
        int t = 0, c = 0;
        while (t < T) {
            int n = chunks[k][c++ % 4];
            if (n > T - t) n = T - t;
            enum mnemo_status rc = tu_attn_step(ops, &cfg, st, NULL, out + (size_t)t * C,
                                                b.qkv + (size_t)t * 3 * C, n, scratch);
            if (rc != MNEMO_OK) fail_msg("step at %d: %s", t, mnemo_last_error());
            t += n;
            assert_true(ops->state_live_bytes(&cfg, st) <= ops->state_bytes(&cfg));
        }
        /* full: one more token is refused */
        assert_int_equal(tu_attn_step(ops, &cfg, st, NULL, out, b.qkv, 1, scratch), MNEMO_ERR_FULL);
        double err = tu_rel_max_err(out, b.out, (size_t)T * C);
        print_message("session   T=%d NH=%d HS=%d rope=%d ref=%d %s: max rel err %.2e\n", T, NH,
                      HS, rope, use_ref, k ? "chunks" : "by 1", err);
        assert_true(err < 1e-5);
        mni_free(st), mni_free(scratch), mni_free(out);
    }
    tu_attn_bufs_free(&b);
}

static void test_session_equals_forward(void **s)
{
    (void)s;
    session_case(45, 3, 8, 1, 0);
    session_case(45, 3, 8, 1, 1);
    session_case(20, 1, 4, 0, 0);
    session_case(150, 2, 8, 1, 0); /* several key blocks */
}

/* ---- pruning ----------------------------------------------------------------------------------- */

/* Naive rotated q, k (double) of a stream at positions 0..T-1, and z_h[i,j]. */
static void rot_pos(double *x, int pos, int HS, int rope)
{
    if (!rope) return;
    for (int i = 0; i < HS / 2; i++) {
        float cf, sf;
        mni_rope_cs(&cf, &sf, pos, i, HS, 10000.0f);
        double x0 = x[i], x1 = x[i + HS / 2];
        x[i] = x0 * cf - x1 * sf;
        x[i + HS / 2] = x0 * sf + x1 * cf;
    }
}

static double zval(const float *qkv, int NH, int HS, int rope, int h, int i, int j)
{
    const size_t C = (size_t)NH * HS;
    double q[64], k[64], s = 0;
    for (int d = 0; d < HS; d++) {
        q[d] = qkv[(size_t)i * 3 * C + (size_t)h * HS + d];
        k[d] = qkv[(size_t)j * 3 * C + C + (size_t)h * HS + d];
    }
    rot_pos(q, i, HS, rope);
    rot_pos(k, j, HS, rope);
    for (int d = 0; d < HS; d++) s += q[d] * k[d];
    return s / sqrt((double)HS);
}

/* Streams T tokens one at a time through a state with the given budget/threshold, records
 * which keys are live when each token attends, checks the pruning rules against penalties
 * computed here in closed form, and checks every output against a naive selective attention
 * with the evicted keys masked out. Returns the number of evictions. */
static int pruned_case(int T, int NH, int HS, int rope, int budget, float tau, int use_ref,
                       uint64_t seed)
{
    const struct mnemo_attn_ops *ops = sel_ops(use_ref);
    struct mnemo_attn_cfg cfg = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, NH, HS, 16, rope);
    cfg.opt[MNI_SEL_OPT_BUDGET] = budget;
    cfg.opt[MNI_SEL_OPT_THRESHOLD] = tau;
    assert_int_equal(ops->validate(&cfg), MNEMO_OK);
    const size_t C = (size_t)NH * HS;
    float *qkv = mni_alloc((size_t)T * 3 * C * sizeof(float)), *out = mni_alloc((size_t)T * C * sizeof(float));
    double *F = mni_alloc((size_t)T * T * sizeof(double)); /* closed form, unpruned */
    unsigned char *live = mni_alloc((size_t)T * T);
    void *st = mni_alloc(ops->state_bytes(&cfg)), *scratch = mni_alloc(ops->step_scratch_bytes(&cfg, 1));
    assert_true(qkv && out && F && live && st && scratch);
    tu_fill_normal(qkv, (size_t)T * 3 * C, 2.0f, seed);
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            double f = 0;
            for (int k = j + 1; k < i && j >= 1; k++) f += fmax(0.0, zval(qkv, NH, HS, rope, 0, k, j));
            F[(size_t)i * T + j] = f;
        }
    ops->state_init(&cfg, st);
    struct mni_sel_slots sl;
    mni_sel_state_view(&cfg, st, &sl);
    const struct mni_sel_state *hdr = st;
    memset(live, 0, (size_t)T * T);
    for (int i = 0; i < T; i++) {
        unsigned char before[64] = {0};
        for (int64_t u = 0; u < hdr->used; u++) before[sl.pos[u]] = 1;
        if (tu_attn_step(ops, &cfg, st, NULL, out + (size_t)i * C, qkv + (size_t)i * 3 * C, 1, scratch) != MNEMO_OK)
            fail_msg("step %d: %s", i, mnemo_last_error());
        for (int64_t u = 0; u < hdr->used; u++) live[(size_t)i * T + sl.pos[u]] = 1;
        /* the rules: the first token and the new one stay; at most `budget` keys; with a
         * threshold no survivor (but those two) has reached it; a budget eviction took a key
         * with the largest penalty */
        assert_true(live[(size_t)i * T + 0] && live[(size_t)i * T + i]);
        if (budget) assert_true(hdr->used <= budget);
        double fmax_gone = -1, fmax_kept = -1;
        for (int j = 1; j < i; j++) {
            double f = F[(size_t)i * T + j];
            if (tau > 0 && live[(size_t)i * T + j]) assert_true(f < tau);
            if (!before[j]) continue;
            if (live[(size_t)i * T + j]) fmax_kept = fmax(fmax_kept, f);
            else if (!(tau > 0 && f >= tau)) fmax_gone = fmax(fmax_gone, f);
        }
        if (fmax_gone >= 0) assert_true(fmax_gone >= fmax_kept - 1e-5);
    }
    /* every output against naive attention over the keys that were live */
    double worst = 0;
    for (int i = 0; i < T; i++)
        for (int h = 0; h < NH; h++) {
            double m = -INFINITY, l = 0, w[64];
            for (int j = 0; j <= i; j++) {
                w[j] = live[(size_t)i * T + j] ? zval(qkv, NH, HS, rope, h, i, j) - F[(size_t)i * T + j] : -INFINITY;
                m = fmax(m, w[j]);
            }
            for (int j = 0; j <= i; j++) l += (w[j] = exp(w[j] - m));
            for (int d = 0; d < HS; d++) {
                double o = 0;
                for (int j = 0; j <= i; j++) o += w[j] / l * qkv[(size_t)j * 3 * C + 2 * C + (size_t)h * HS + d];
                worst = fmax(worst, fabs(o - out[((size_t)i * NH + h) * HS + d]) / (1 + fabs(o)));
            }
        }
    int ev = (int)hdr->evicted;
    print_message("pruned    T=%d NH=%d budget=%d tau=%g ref=%d: %d evicted, max err %.2e\n", T, NH,
                  budget, (double)tau, use_ref, ev, worst);
    assert_true(worst < 2e-5);
    assert_true(ops->state_live_bytes(&cfg, st) <= ops->state_bytes(&cfg));
    mni_free(qkv), mni_free(out), mni_free(F), mni_free(live), mni_free(st), mni_free(scratch);
    return ev;
}

static void test_pruning(void **s)
{
    (void)s;
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        /* a budget far below the stream (and the stream past n_ctx = 16) */
        assert_int_equal(pruned_case(40, 3, 8, 1, 6, 0.0f, use_ref, 5), 40 - 6);
        assert_int_equal(pruned_case(30, 1, 4, 0, 2, 0.0f, use_ref, 6), 30 - 2);
        /* a threshold alone, and with a budget */
        assert_true(pruned_case(16, 2, 8, 1, 0, 1.0f, use_ref, 7) > 0);
        assert_true(pruned_case(40, 2, 8, 1, 8, 0.5f, use_ref, 8) >= 40 - 8);
    }
}

/* Budgets at least as long as the stream, or a threshold nothing reaches: nothing is evicted
 * and the outputs equal the unpruned session's bit for bit. */
static void test_pruning_inactive_is_exact(void **s)
{
    (void)s;
    const int T = 16, NH = 2, HS = 8;
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        const struct mnemo_attn_ops *ops = sel_ops(use_ref);
        struct mnemo_attn_cfg plain = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, NH, HS, T, 1);
        struct mnemo_attn_cfg cfgs[3] = {plain, plain, plain};
        cfgs[0].opt[MNI_SEL_OPT_BUDGET] = T;
        cfgs[1].opt[MNI_SEL_OPT_BUDGET] = 3 * T;
        cfgs[2].opt[MNI_SEL_OPT_THRESHOLD] = 1e30;
        const size_t C = (size_t)NH * HS;
        float *qkv = mni_alloc((size_t)T * 3 * C * sizeof(float));
        float *want = mni_alloc((size_t)T * C * sizeof(float)), *got = mni_alloc((size_t)T * C * sizeof(float));
        tu_fill_normal(qkv, (size_t)T * 3 * C, 2.0f, 9);
        for (int k = -1; k < 3; k++) {
            const struct mnemo_attn_cfg *c = k < 0 ? &plain : &cfgs[k];
            assert_int_equal(ops->validate(c), MNEMO_OK);
            void *st = mni_alloc(ops->state_bytes(c)), *scr = mni_alloc(ops->step_scratch_bytes(c, 1));
            ops->state_init(c, st);
            for (int i = 0; i < T; i++)
                assert_int_equal(tu_attn_step(ops, c, st, NULL, (k < 0 ? want : got) + (size_t)i * C,
                                              qkv + (size_t)i * 3 * C, 1, scr), MNEMO_OK);
            assert_int_equal(((struct mni_sel_state *)st)->evicted, 0);
            if (k >= 0) assert_memory_equal(got, want, (size_t)T * C * sizeof(float));
            mni_free(st), mni_free(scr);
        }
        mni_free(qkv), mni_free(want), mni_free(got);
    }
    /* bad settings: a budget of 1 (validate, whichever way the cfg was made), a negative
     * threshold (the registry's range), any pruning of the dense kind (it has no such option) */
    struct mnemo_attn_cfg c = make_cfg(MNEMO_ATTN_KIND_SELECTIVE, NH, HS, T, 1);
    c.opt[MNI_SEL_OPT_BUDGET] = 1;
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        assert_int_equal(sel_ops(use_ref)->validate(&c), MNEMO_ERR_ARG);
        assert_non_null(strstr(mnemo_last_error(), "budget"));
    }
    expect_opts_err(MNEMO_ATTN_KIND_SELECTIVE, 1, "budget=1", "budget");
    expect_opts_err(MNEMO_ATTN_KIND_SELECTIVE, 1, "threshold=-1", "threshold");
    expect_opts_err(MNEMO_ATTN_KIND_DENSE, 1, "budget=4", "budget");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry_and_validate),
        cmocka_unit_test(test_fast_vs_ref),
        cmocka_unit_test(test_fast_vs_ref_memory),
        cmocka_unit_test(test_ref_vs_fd),
        cmocka_unit_test(test_no_votes_is_dense),
        cmocka_unit_test(test_hand_case),
        cmocka_unit_test(test_session_equals_forward),
        cmocka_unit_test(test_pruning),
        cmocka_unit_test(test_pruning_inactive_is_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
