/*
 * test_attn_conformance.c -- the one suite every attention kind passes by being listed once in
 * cases[] below (the ggml test-backend-ops idea; docs/internals/attention.md, "Adding a kind").
 *
 * For every line (a kind and an option list) and every shape of the table shapes[]:
 *  - fast vs reference: the kind's fast ops against its reference ops, forward (out, aux_loss)
 *    and backward (dqkv and every parameter tensor's gradient), in training mode with a seed;
 *  - finite differences: the reference's gradients of every qkv entry and every parameter
 *    against central differences of its forward (objective: a random projection of the output
 *    plus the auxiliary loss), on a small shape; entries at a kink (where two step sizes
 *    disagree, e.g. selective's ReLU votes) are skipped and counted, at most a tenth;
 *  - causality: the outputs of tokens before the last do not move when the last token does;
 *  - step equals forward: the session state fed the window token by token and in chunks of 5
 *    (fast and reference ops) gives the forward's outputs;
 *  - the state bound: a stream of 10 x n_ctx tokens through a kind whose state is bounded (with
 *    the line's session options) never fails and never holds more than state_bytes; an unbounded
 *    state reports MNEMO_ERR_FULL at n_ctx and keeps what it held;
 *  - carried state (kinds with CAP_CARRY for the line's options): a zeroed carry is a fresh
 *    lane (bit for bit the NULL carry); windows chained through their carries give what a
 *    session fed the lanes' whole text gives (step exactness), fast and reference alike, and
 *    agree with each other (outputs, carries, gradients); the finite differences above run
 *    with a carried state as well;
 *  - bad options: an unknown key, and for every option a value above its range (or an unknown
 *    name), are refused with a message naming the kind and the option.
 * A kind missing from cases[] fails the suite (test_every_kind_listed).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mnemo_attn.h"
#include "testutil.h"

/* ---- the table: one line per kind (more for options that change the computation) ---------- */

struct conf_case {
    int kind;
    const char *opts;    /* model and training options: the forward's */
    const char *session; /* session options added for the state-bound test ("" = none) */
};

static const struct conf_case cases[] = {
    {MNEMO_ATTN_KIND_DENSE, "", ""},
    {MNEMO_ATTN_KIND_DENSE, "", "window=16,sinks=4"},
    {MNEMO_ATTN_KIND_SELECTIVE, "mem_eps=0.5,mem_tau=2", "budget=6"},
    {MNEMO_ATTN_KIND_INFINI, "segment=7,mem_update=delta", ""},
    {MNEMO_ATTN_KIND_INFINI, "segment=16,mem_update=linear,mem_repeat=8", ""},
    {MNEMO_ATTN_KIND_INFINI, "segment=16,mem_update=delta,carry=true", ""},
    {MNEMO_ATTN_KIND_INFINI, "segment=8,mem_update=linear,mem_repeat=8,carry=true", ""},
    {MNEMO_ATTN_KIND_WINDOW, "w=13", ""},
    {MNEMO_ATTN_KIND_WINDOW, "w=70", ""},
    {MNEMO_ATTN_KIND_BLOCK, "b=13", ""},
    {MNEMO_ATTN_KIND_BLOCK, "b=50,prev=true", ""},
    {MNEMO_ATTN_KIND_STRIDED, "l=7", ""},
    {MNEMO_ATTN_KIND_STRIDED, "l=50", ""},
    {MNEMO_ATTN_KIND_STRIDED, "l=11,mode=fixed,c=3", ""},
    {MNEMO_ATTN_KIND_STRIDED, "l=70,mode=fixed,c=30", ""},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=9,dilation=3,g=2", ""},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=6/70,g=0", ""},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=20,dilation=7,g=67", ""},
    {MNEMO_ATTN_KIND_BIGBIRD, "block=8,wb=2,g=10,r=2,pattern_seed=3", ""},
    {MNEMO_ATTN_KIND_BIGBIRD, "block=13,wb=3,g=26,r=3,pattern_seed=5", ""},
    {MNEMO_ATTN_KIND_BIGBIRD, "block=50,wb=1,g=0,r=1", ""},
};
#define N_CASES (sizeof(cases) / sizeof(cases[0]))

/* B windows of T tokens, NH heads of HS; n_ctx >= T. T crosses the kernels' tiles (24-query
 * strips, 64-key blocks, 64-row memory blocks) and is a multiple of none of them. */
struct shape {
    int B, T, NH, HS, rope;
};
static const struct shape shapes[] = {
    {1, 1, 2, 8, 1}, {2, 37, 2, 16, 1}, {1, 97, 3, 32, 0}, {2, 150, 2, 64, 1},
};
#define N_SHAPES (sizeof(shapes) / sizeof(shapes[0]))

/* ---- helpers ---------------------------------------------------------------------------------- */

static struct mnemo_attn_cfg make_cfg(const struct conf_case *c, int NH, int HS, int n_ctx,
                                      int rope, const char *extra)
{
    struct mnemo_model_config mc;
    mnemo_model_config_default(&mc);
    mc.attn_kind = c->kind;
    mc.n_head = NH;
    mc.d_model = NH * HS;
    mc.n_ctx = n_ctx;
    mc.n_layer = 2;
    mc.pos = rope ? MNEMO_POS_ROPE : MNEMO_POS_LEARNED;
    char opts[256];
    snprintf(opts, sizeof(opts), "%s%s%s", c->opts, c->opts[0] && extra[0] ? "," : "", extra);
    struct mnemo_attn_cfg cfg;
    if (mnemo_attn_cfg_make(&cfg, &mc, opts, 1) != MNEMO_OK)
        fail_msg("%s '%s': %s", mnemo_attn_kind_name(c->kind), opts, mnemo_last_error());
    return cfg;
}

/* A kind's parameter tensors for cfg (random values: gates, features), and their gradients. */
struct kparams {
    int n;
    size_t numel[MNEMO_ATTN_MAX_PARAMS];
    float *p[MNEMO_ATTN_MAX_PARAMS], *g[MNEMO_ATTN_MAX_PARAMS];
};

static void kparams_init(struct kparams *kp, const struct mnemo_attn_ops *ops,
                         const struct mnemo_attn_cfg *cfg, uint64_t seed)
{
    struct mnemo_attn_param t[MNEMO_ATTN_MAX_PARAMS];
    memset(kp, 0, sizeof(*kp));
    kp->n = ops->params ? ops->params(cfg, t) : 0;
    for (int i = 0; i < kp->n; i++) {
        kp->numel[i] = t[i].shape[0] * (t[i].ndim == 2 ? t[i].shape[1] : 1);
        kp->p[i] = mni_alloc(kp->numel[i] * sizeof(float));
        kp->g[i] = mni_alloc(kp->numel[i] * sizeof(float));
        assert_non_null(kp->p[i]);
        assert_non_null(kp->g[i]);
        tu_fill_normal(kp->p[i], kp->numel[i], 1.0f, seed + (uint64_t)i);
    }
}

static void kparams_free(struct kparams *kp)
{
    for (int i = 0; i < kp->n; i++) mni_free(kp->p[i]), mni_free(kp->g[i]);
}

/* io over b and kp, in training mode with a fixed seed (the same draws for every call). */
static struct mnemo_attn_io make_io(struct tu_attn_bufs *b, struct kparams *kp)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    io.params = (const float *const *)kp->p;
    io.dparams = kp->g;
    io.layer = 1;
    io.training = 1;
    io.seed = 12345;
    return io;
}

static double forward_ok(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                         struct tu_attn_bufs *b, struct kparams *kp)
{
    struct mnemo_attn_io io = make_io(b, kp);
    if (ops->forward(cfg, &io) != MNEMO_OK)
        fail_msg("%s%s forward: %s", ops->name, ops->is_ref ? " (ref)" : "", mnemo_last_error());
    return io.aux_loss;
}

static void backward_ok(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                        struct tu_attn_bufs *b, struct kparams *kp, float aux_grad)
{
    for (int i = 0; i < kp->n; i++) memset(kp->g[i], 0, kp->numel[i] * sizeof(float));
    struct mnemo_attn_io io = make_io(b, kp);
    io.aux_grad = aux_grad;
    if (ops->backward(cfg, &io) != MNEMO_OK)
        fail_msg("%s%s backward: %s", ops->name, ops->is_ref ? " (ref)" : "", mnemo_last_error());
}

static const char *label(const struct conf_case *c, const struct shape *s, const char *what)
{
    static char buf[256];
    snprintf(buf, sizeof(buf), "%s [%s] B%d T%d NH%d HS%d rope%d: %s", mnemo_attn_kind_name(c->kind),
             c->opts, s->B, s->T, s->NH, s->HS, s->rope, what);
    return buf;
}

/* ---- the tests -------------------------------------------------------------------------------- */

static void test_every_kind_listed(void **state)
{
    (void)state;
    for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
        int listed = 0;
        for (size_t i = 0; i < N_CASES; i++) listed |= cases[i].kind == k;
        if (!listed) fail_msg("attention kind %s has no line in the conformance table",
                              mnemo_attn_kind_name(k));
        const struct mnemo_attn_ops *f = mnemo_attn_ops_get(k), *r = mnemo_attn_ops_get_ref(k);
        assert_non_null(f);
        assert_non_null(r);
        assert_int_equal(f->api_version, MNEMO_ATTN_API_VERSION);
        assert_int_equal(f->is_ref, 0);
        assert_int_equal(r->is_ref, 1);
        assert_string_equal(f->name, r->name);
        assert_ptr_equal(f->opts, r->opts);
    }
}

static void test_fast_vs_ref(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        const struct conf_case *c = &cases[ci];
        const struct mnemo_attn_ops *fast = mnemo_attn_ops_get(c->kind);
        const struct mnemo_attn_ops *ref = mnemo_attn_ops_get_ref(c->kind);
        for (size_t si = 0; si < N_SHAPES; si++) {
            const struct shape *s = &shapes[si];
            struct mnemo_attn_cfg cfg = make_cfg(c, s->NH, s->HS, s->T + 64, s->rope, "");
            struct tu_attn_bufs bf, br;
            tu_attn_bufs_init(&bf, fast, &cfg, s->B, s->T);
            tu_attn_bufs_init(&br, ref, &cfg, s->B, s->T);
            struct kparams kf, kr;
            kparams_init(&kf, fast, &cfg, 7);
            kparams_init(&kr, ref, &cfg, 7);
            tu_fill_normal(bf.qkv, bf.nqkv, 1.0f, 100 + si);
            tu_fill_normal(bf.dout, bf.nout, 1.0f, 200 + si);
            memcpy(br.qkv, bf.qkv, bf.nqkv * sizeof(float));
            memcpy(br.dout, bf.dout, bf.nout * sizeof(float));
            const double af = forward_ok(fast, &cfg, &bf, &kf);
            const double ar = forward_ok(ref, &cfg, &br, &kr);
            if (!tu_close(label(c, s, "out"), bf.out, br.out, bf.nout, 2e-5f, 2e-4f)) fail();
            if (fabs(af - ar) > 1e-4 * (fabs(ar) + 1e-3))
                fail_msg("%s: %.9g vs %.9g", label(c, s, "aux_loss"), af, ar);
            backward_ok(fast, &cfg, &bf, &kf, 0.75f);
            backward_ok(ref, &cfg, &br, &kr, 0.75f);
            if (tu_rel_max_err(bf.dqkv, br.dqkv, bf.nqkv) > 5e-4) {
                tu_close(label(c, s, "dqkv"), bf.dqkv, br.dqkv, bf.nqkv, 0, 0);
                fail();
            }
            for (int i = 0; i < kf.n; i++)
                if (tu_rel_max_err(kf.g[i], kr.g[i], kf.numel[i]) > 5e-4) {
                    tu_close(label(c, s, "dparams"), kf.g[i], kr.g[i], kf.numel[i], 0, 0);
                    fail();
                }
            kparams_free(&kf), kparams_free(&kr);
            tu_attn_bufs_free(&bf), tu_attn_bufs_free(&br);
        }
    }
}

/* objective = sum(out .* W) + aux_loss (W = dout): the reference at one qkv/param value. */
static double objective(const struct mnemo_attn_ops *ref, const struct mnemo_attn_cfg *cfg,
                        struct tu_attn_bufs *b, struct kparams *kp)
{
    const double aux = forward_ok(ref, cfg, b, kp);
    double s = aux;
    for (size_t i = 0; i < b->nout; i++) s += (double)b->out[i] * b->dout[i];
    return s;
}

/* Central differences at steps h and h/2; 1 (and *fd) when they agree (no kink near x). */
static int central(const struct mnemo_attn_ops *ref, const struct mnemo_attn_cfg *cfg,
                   struct tu_attn_bufs *b, struct kparams *kp, float *x, double *fd)
{
    const float x0 = *x;
    double d[2];
    for (int k = 0; k < 2; k++) {
        const float h = k ? 1e-2f : 2e-2f;
        *x = x0 + h;
        const double up = objective(ref, cfg, b, kp);
        *x = x0 - h;
        const double dn = objective(ref, cfg, b, kp);
        d[k] = (up - dn) / (2.0 * ((double)(x0 + h) - (double)x0));
    }
    *x = x0;
    *fd = d[1];
    return fabs(d[0] - d[1]) <= 2e-3 * (1.0 + fabs(d[1]));
}

static void test_finite_differences(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        const struct conf_case *c = &cases[ci];
        const struct mnemo_attn_ops *ref = mnemo_attn_ops_get_ref(c->kind);
        const struct shape s = {2, 19, 2, 4, 1};
        struct mnemo_attn_cfg cfg = make_cfg(c, s.NH, s.HS, s.T, s.rope, "");
        struct tu_attn_bufs b;
        tu_attn_bufs_init(&b, ref, &cfg, s.B, s.T);
        struct kparams kp;
        kparams_init(&kp, ref, &cfg, 3);
        void *carry = NULL;
        if (b.ncarry) { /* a carried state: the lanes' previous windows */
            carry = malloc(b.ncarry);
            assert_non_null(carry);
            tu_fill_normal(b.qkv, b.nqkv, 1.0f, 30);
            forward_ok(ref, &cfg, &b, &kp);
            memcpy(carry, b.carry_out, b.ncarry);
            b.carry = carry;
        }
        tu_fill_normal(b.qkv, b.nqkv, 1.0f, 31);
        tu_fill_normal(b.dout, b.nout, 1.0f, 32);
        forward_ok(ref, &cfg, &b, &kp);
        backward_ok(ref, &cfg, &b, &kp, 1.0f);
        float *dqkv = malloc(b.nqkv * sizeof(float));
        assert_non_null(dqkv);
        memcpy(dqkv, b.dqkv, b.nqkv * sizeof(float));
        float *dpar[MNEMO_ATTN_MAX_PARAMS];
        for (int i = 0; i < kp.n; i++) {
            dpar[i] = malloc(kp.numel[i] * sizeof(float));
            memcpy(dpar[i], kp.g[i], kp.numel[i] * sizeof(float));
        }
        double gmax = 0;
        for (size_t i = 0; i < b.nqkv; i++) gmax = fmax(gmax, fabs(dqkv[i]));
        size_t checked = 0, kinks = 0;
        double worst = 0;
        /* every qkv entry, then every parameter entry */
        for (int t = -1; t < kp.n; t++) {
            const size_t n = t < 0 ? b.nqkv : kp.numel[t];
            for (size_t i = 0; i < n; i++) {
                float *x = t < 0 ? &b.qkv[i] : &kp.p[t][i];
                const float an = t < 0 ? dqkv[i] : dpar[t][i];
                double fd;
                if (!central(ref, &cfg, &b, &kp, x, &fd)) {
                    kinks++;
                    continue;
                }
                checked++;
                const double err = fabs(fd - an) / (gmax + fabs(fd) + 1e-6);
                if (err > worst) worst = err;
                if (err > 2e-3)
                    fail_msg("%s: entry %zu of %s: analytic %.8g, finite differences %.8g",
                             label(c, &s, "finite differences"), i, t < 0 ? "qkv" : "a parameter",
                             (double)an, fd);
            }
        }
        printf("%s: %zu entries checked (worst %.2e), %zu at a kink skipped\n",
               label(c, &s, "finite differences"), checked, worst, kinks);
        assert_true(kinks * 10 <= checked + kinks);
        for (int i = 0; i < kp.n; i++) free(dpar[i]);
        free(dqkv);
        free(carry);
        kparams_free(&kp);
        tu_attn_bufs_free(&b);
    }
}

static void test_causal(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        const struct conf_case *c = &cases[ci];
        const struct mnemo_attn_ops *fast = mnemo_attn_ops_get(c->kind);
        const struct shape s = {2, 41, 2, 16, 1};
        struct mnemo_attn_cfg cfg = make_cfg(c, s.NH, s.HS, s.T, s.rope, "");
        if (!(fast->caps(&cfg) & MNEMO_ATTN_CAP_CAUSAL)) continue;
        struct tu_attn_bufs b;
        tu_attn_bufs_init(&b, fast, &cfg, s.B, s.T);
        struct kparams kp;
        kparams_init(&kp, fast, &cfg, 5);
        tu_fill_normal(b.qkv, b.nqkv, 1.0f, 51);
        forward_ok(fast, &cfg, &b, &kp);
        const size_t C = (size_t)s.NH * s.HS;
        float *before = malloc(b.nout * sizeof(float));
        assert_non_null(before);
        memcpy(before, b.out, b.nout * sizeof(float));
        for (int w = 0; w < s.B; w++) /* the last token of every window moves */
            for (size_t j = 0; j < 3 * C; j++) b.qkv[((size_t)w * s.T + s.T - 1) * 3 * C + j] += 1.0f;
        forward_ok(fast, &cfg, &b, &kp);
        for (int w = 0; w < s.B; w++)
            if (memcmp(before + (size_t)w * s.T * C, b.out + (size_t)w * s.T * C,
                       (size_t)(s.T - 1) * C * sizeof(float)) != 0)
                fail_msg("%s", label(c, &s, "an earlier output moved with the last token"));
        free(before);
        kparams_free(&kp);
        tu_attn_bufs_free(&b);
    }
}

/* Feeds the window's qkv rows (window 0 of b) through a fresh state in pieces of `chunk`. */
static void stream(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                   const struct tu_attn_bufs *b, struct kparams *kp, int chunk, float *out)
{
    const size_t C = (size_t)cfg->n_head * cfg->head_dim;
    void *st = mni_alloc(ops->state_bytes(cfg));
    void *scr = mni_alloc(ops->step_scratch_bytes(cfg, chunk));
    assert_non_null(st);
    assert_non_null(scr);
    ops->state_init(cfg, st);
    for (int t = 0; t < b->T; t += chunk) {
        const int n = b->T - t < chunk ? b->T - t : chunk;
        struct mnemo_attn_step sa = {n, 1, st, (const float *const *)kp->p,
                                     b->qkv + (size_t)t * 3 * C, out + (size_t)t * C, scr};
        if (ops->step(cfg, &sa) != MNEMO_OK) fail_msg("%s step: %s", ops->name, mnemo_last_error());
    }
    mni_free(st);
    mni_free(scr);
}

static void test_step_equals_forward(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        const struct conf_case *c = &cases[ci];
        for (int which = 0; which < 2; which++) {
            const struct mnemo_attn_ops *ops =
                which ? mnemo_attn_ops_get_ref(c->kind) : mnemo_attn_ops_get(c->kind);
            const struct shape s = {1, 45, 2, 16, 1};
            struct mnemo_attn_cfg cfg = make_cfg(c, s.NH, s.HS, s.T, s.rope, "");
            const uint32_t caps = ops->caps(&cfg);
            if (!(caps & MNEMO_ATTN_CAP_STEP)) continue;
            struct tu_attn_bufs b;
            tu_attn_bufs_init(&b, ops, &cfg, s.B, s.T);
            struct kparams kp;
            kparams_init(&kp, ops, &cfg, 9);
            tu_fill_normal(b.qkv, b.nqkv, 1.0f, 61);
            /* the forward as inference sees it: evaluation mode */
            struct mnemo_attn_io io = make_io(&b, &kp);
            io.training = 0;
            if (ops->forward(&cfg, &io) != MNEMO_OK) fail_msg("forward: %s", mnemo_last_error());
            float *got = malloc(b.nout * sizeof(float));
            assert_non_null(got);
            const int chunks[] = {1, 5, s.T};
            for (size_t k = 0; k < 3; k++) {
                stream(ops, &cfg, &b, &kp, chunks[k], got);
                char what[64];
                snprintf(what, sizeof(what), "%s step, chunks of %d", which ? "ref" : "fast",
                         chunks[k]);
                const float tol = caps & MNEMO_ATTN_CAP_STEP_EXACT ? 1e-4f : 2e-2f;
                if (!tu_close(label(c, &s, what), got, b.out, b.nout, tol, tol)) fail();
            }
            free(got);
            kparams_free(&kp);
            tu_attn_bufs_free(&b);
        }
    }
}

/* Carried state: windows of T (a multiple of what the lines' kinds need: 48) chained through
 * their carries, K of them per lane, B lanes. */
static void test_carry(void **state)
{
    (void)state;
    enum { K = 3 };
    int tested = 0;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        const struct conf_case *c = &cases[ci];
        const struct mnemo_attn_ops *fast = mnemo_attn_ops_get(c->kind);
        const struct mnemo_attn_ops *ref = mnemo_attn_ops_get_ref(c->kind);
        const struct shape s = {2, 48, 2, 16, 1};
        struct mnemo_attn_cfg cfg = make_cfg(c, s.NH, s.HS, s.T, s.rope, "");
        const uint32_t caps = fast->caps(&cfg);
        if (!(caps & MNEMO_ATTN_CAP_CARRY)) continue;
        tested++;
        assert_true(fast->carry_bytes && ref->carry_bytes);
        assert_true(fast->carry_bytes(&cfg) > 0);
        assert_int_equal(fast->carry_bytes(&cfg), ref->carry_bytes(&cfg));
        const size_t C = (size_t)s.NH * s.HS, wn = (size_t)s.T * C; /* floats of a window's out */
        struct tu_attn_bufs bf, br;
        tu_attn_bufs_init(&bf, fast, &cfg, s.B, s.T);
        tu_attn_bufs_init(&br, ref, &cfg, s.B, s.T);
        struct kparams kf, kr;
        kparams_init(&kf, fast, &cfg, 17);
        kparams_init(&kr, ref, &cfg, 17);
        const size_t nc = bf.ncarry;
        char *cf = calloc(1, nc), *cr = calloc(1, nc);  /* the lanes' carries, fresh */
        float *qkv = malloc((size_t)K * bf.nqkv * sizeof(float)); /* window k of lane b at k B + b */
        float *outf = malloc((size_t)K * bf.nout * sizeof(float));
        float *outr = malloc((size_t)K * bf.nout * sizeof(float));
        assert_true(cf && cr && qkv && outf && outr);
        tu_fill_normal(qkv, (size_t)K * bf.nqkv, 1.0f, 71);

        /* a zeroed carry is a fresh lane */
        memcpy(bf.qkv, qkv, bf.nqkv * sizeof(float));
        struct mnemo_attn_io io = make_io(&bf, &kf);
        io.training = 0;
        assert_int_equal(fast->forward(&cfg, &io), MNEMO_OK);
        memcpy(outf, bf.out, bf.nout * sizeof(float));
        bf.carry = cf;
        io = make_io(&bf, &kf);
        io.training = 0;
        assert_int_equal(fast->forward(&cfg, &io), MNEMO_OK);
        if (memcmp(outf, bf.out, bf.nout * sizeof(float)) != 0)
            fail_msg("%s", label(c, &s, "a zeroed carry differs from a NULL one"));

        /* K windows per lane through both paths, evaluation mode: outputs and carries agree */
        for (int k = 0; k < K; k++) {
            memcpy(bf.qkv, qkv + (size_t)k * bf.nqkv, bf.nqkv * sizeof(float));
            memcpy(br.qkv, bf.qkv, bf.nqkv * sizeof(float));
            bf.carry = cf, br.carry = cr;
            io = make_io(&bf, &kf);
            io.training = 0;
            if (fast->forward(&cfg, &io) != MNEMO_OK) fail_msg("forward: %s", mnemo_last_error());
            io = make_io(&br, &kr);
            io.training = 0;
            if (ref->forward(&cfg, &io) != MNEMO_OK) fail_msg("forward: %s", mnemo_last_error());
            memcpy(outf + (size_t)k * bf.nout, bf.out, bf.nout * sizeof(float));
            memcpy(outr + (size_t)k * bf.nout, br.out, bf.nout * sizeof(float));
            if (!tu_close(label(c, &s, "carried out, fast vs ref"), bf.out, br.out, bf.nout,
                          2e-5f, 2e-4f))
                fail();
            memcpy(cf, bf.carry_out, nc);
            memcpy(cr, br.carry_out, nc);
        }
        /* each lane's K windows through a session, in chunks of 5: the chained windows */
        for (int which = 0; which < 2; which++) {
            const struct mnemo_attn_ops *ops = which ? ref : fast;
            struct kparams *kp = which ? &kr : &kf;
            const float *want = which ? outr : outf;
            void *st = mni_alloc(ops->state_bytes(&cfg));
            void *scr = mni_alloc(ops->step_scratch_bytes(&cfg, 5));
            float *got = malloc(5 * C * sizeof(float));
            assert_true(st && scr && got);
            for (int b = 0; b < s.B; b++) {
                ops->state_init(&cfg, st);
                for (int t = 0; t < K * s.T; t += 5) {
                    const int k = t / s.T, i = t % s.T;
                    const int n = s.T - i < 5 ? s.T - i : 5; /* pieces inside a window */
                    struct mnemo_attn_step sa = {
                        n, 1, st, (const float *const *)kp->p,
                        qkv + (size_t)k * bf.nqkv + ((size_t)b * s.T + i) * 3 * C, got, scr};
                    if (ops->step(&cfg, &sa) != MNEMO_OK)
                        fail_msg("%s step: %s", ops->name, mnemo_last_error());
                    const float *w = want + (size_t)k * bf.nout + (size_t)b * wn + (size_t)i * C;
                    if (!tu_close(label(c, &s, which ? "ref: stream vs carried windows"
                                                     : "fast: stream vs carried windows"),
                                  got, w, (size_t)n * C, 1e-4f, 1e-4f))
                        fail();
                    t += n - 5; /* the loop adds 5 */
                }
            }
            mni_free(st), mni_free(scr), free(got);
        }
        /* training mode with a carried state: forward and backward, fast vs ref */
        memcpy(bf.qkv, qkv, bf.nqkv * sizeof(float));
        memcpy(br.qkv, qkv, bf.nqkv * sizeof(float));
        tu_fill_normal(bf.dout, bf.nout, 1.0f, 72);
        memcpy(br.dout, bf.dout, bf.nout * sizeof(float));
        memcpy(cr, cf, nc);
        bf.carry = cf, br.carry = cr;
        forward_ok(fast, &cfg, &bf, &kf);
        forward_ok(ref, &cfg, &br, &kr);
        if (!tu_close(label(c, &s, "training, carried: out"), bf.out, br.out, bf.nout, 2e-5f, 2e-4f))
            fail();
        backward_ok(fast, &cfg, &bf, &kf, 1.0f);
        backward_ok(ref, &cfg, &br, &kr, 1.0f);
        if (tu_rel_max_err(bf.dqkv, br.dqkv, bf.nqkv) > 5e-4) {
            tu_close(label(c, &s, "training, carried: dqkv"), bf.dqkv, br.dqkv, bf.nqkv, 0, 0);
            fail();
        }
        for (int i = 0; i < kf.n; i++)
            if (tu_rel_max_err(kf.g[i], kr.g[i], kf.numel[i]) > 5e-4) {
                tu_close(label(c, &s, "training, carried: dparams"), kf.g[i], kr.g[i], kf.numel[i], 0, 0);
                fail();
            }
        free(cf), free(cr), free(qkv), free(outf), free(outr);
        kparams_free(&kf), kparams_free(&kr);
        tu_attn_bufs_free(&bf), tu_attn_bufs_free(&br);
    }
    assert_true(tested > 0); /* the table has lines that carry */
}

static void test_state_bound(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < N_CASES; ci++) {
        const struct conf_case *c = &cases[ci];
        const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(c->kind);
        const int NH = 2, HS = 16, n_ctx = 32, chunk = 7;
        struct mnemo_attn_cfg cfg = make_cfg(c, NH, HS, n_ctx, 1, c->session);
        if (!(ops->caps(&cfg) & MNEMO_ATTN_CAP_STEP)) continue;
        const int bounded = (ops->caps(&cfg) & MNEMO_ATTN_CAP_BOUNDED) != 0;
        const size_t C = (size_t)NH * HS, bound = ops->state_bytes(&cfg);
        struct kparams kp;
        kparams_init(&kp, ops, &cfg, 11);
        void *st = mni_alloc(bound);
        void *scr = mni_alloc(ops->step_scratch_bytes(&cfg, chunk));
        float *qkv = mni_alloc((size_t)chunk * 3 * C * sizeof(float));
        float *out = mni_alloc((size_t)chunk * C * sizeof(float));
        assert_true(st && scr && qkv && out);
        ops->state_init(&cfg, st);
        size_t most = 0;
        long fed = 0;
        for (int i = 0; fed < 10L * n_ctx; i++) {
            tu_fill_normal(qkv, (size_t)chunk * 3 * C, 1.0f, 700 + (uint64_t)i);
            struct mnemo_attn_step sa = {chunk, 0, st, (const float *const *)kp.p, qkv, out, scr};
            const size_t live = ops->state_live_bytes(&cfg, st);
            enum mnemo_status rc = ops->step(&cfg, &sa);
            if (!bounded && fed + chunk > n_ctx) { /* full: refused, nothing changed */
                assert_int_equal(rc, MNEMO_ERR_FULL);
                assert_int_equal(ops->state_live_bytes(&cfg, st), live);
                break;
            }
            if (rc != MNEMO_OK)
                fail_msg("%s [%s %s]: step at %ld tokens: %s", ops->name, c->opts, c->session, fed,
                         mnemo_last_error());
            for (size_t j = 0; j < (size_t)chunk * C; j++)
                if (!isfinite(out[j])) fail_msg("%s: a non-finite output at %ld", ops->name, fed);
            fed += chunk;
            const size_t now = ops->state_live_bytes(&cfg, st);
            if (now > bound) fail_msg("%s: %zu live bytes > the bound %zu", ops->name, now, bound);
            most = now > most ? now : most;
        }
        if (bounded) {
            assert_true(fed >= 10L * n_ctx);
            printf("%s [%s %s]: %ld tokens streamed, at most %zu of %zu state bytes held\n",
                   ops->name, c->opts, c->session, fed, most, bound);
        }
        mni_free(st), mni_free(scr), mni_free(qkv), mni_free(out);
        kparams_free(&kp);
    }
}

static void expect_refused(const struct mnemo_model_config *mc, const char *opts,
                           const char *must_name)
{
    struct mnemo_attn_cfg cfg;
    if (mnemo_attn_cfg_make(&cfg, mc, opts, 0) != MNEMO_ERR_ARG)
        fail_msg("%s: '%s' was accepted", mnemo_attn_kind_name(mc->attn_kind), opts);
    const char *msg = mnemo_last_error();
    if (!strstr(msg, mnemo_attn_kind_name(mc->attn_kind)) || !strstr(msg, must_name) ||
        strchr(msg, '\n'))
        fail_msg("'%s': the message '%s' does not name the kind and '%s' on one line", opts, msg,
                 must_name);
}

static void test_bad_options(void **state)
{
    (void)state;
    for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
        const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(k);
        struct mnemo_model_config mc;
        mnemo_model_config_default(&mc);
        mc.attn_kind = k;
        expect_refused(&mc, "no_such_option=1", "no_such_option");
        expect_refused(&mc, "novalue", "novalue");
        for (int i = 0; i < ops->n_opts; i++) {
            const struct mnemo_attn_opt *o = &ops->opts[i];
            char bad[128];
            if (o->type == MNEMO_ATTN_OPT_ENUM) snprintf(bad, sizeof(bad), "%s=no_such_choice", o->key);
            else if (o->type == MNEMO_ATTN_OPT_BOOL) snprintf(bad, sizeof(bad), "%s=maybe", o->key);
            else snprintf(bad, sizeof(bad), "%s=%.17g", o->key, o->hi * 2 + 1);
            expect_refused(&mc, bad, o->key);
            snprintf(bad, sizeof(bad), "%s=", o->key);
            expect_refused(&mc, bad, o->key);
            if (o->type == MNEMO_ATTN_OPT_INT || o->type == MNEMO_ATTN_OPT_FLOAT) {
                snprintf(bad, sizeof(bad), "%s=12abc", o->key);
                expect_refused(&mc, bad, o->key);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_kind_listed),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_fast_vs_ref),
        cmocka_unit_test(test_finite_differences),
        cmocka_unit_test(test_causal),
        cmocka_unit_test(test_step_equals_forward),
        cmocka_unit_test(test_carry),
        cmocka_unit_test(test_state_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
