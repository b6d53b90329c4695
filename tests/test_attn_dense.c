/*
 * test_attn_dense.c -- the dense attention kind and the kind registry.
 *
 *  - registry: enum <-> name <-> ops;
 *  - validate and bad io give MNEMO_ERR_ARG with a message naming the field;
 *  - the tiled forward and backward equal the naive double-precision reference over shapes
 *    that hit every edge (T = 1, T not a multiple of the 24-query strip or the 64-key block,
 *    T > 200, HS not a multiple of 8, HS = 256, B up to 3, RoPE on and off, large scores);
 *  - the reference backward equals central finite differences of the reference forward;
 *  - forward, and backward within one mode, give the same bits for 1 and 2 threads; outputs
 *    are causal;
 *  - a session fed token by token, and in chunks, gives the forward's outputs; a full cache
 *    gives MNEMO_ERR_FULL and leaves the state untouched.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn/attn_int.h"
#include "mnemo_attn.h"
#include "testutil.h"

static struct mnemo_attn_cfg make_cfg(int NH, int HS, int n_ctx, int rope, int use_ref)
{
    struct mnemo_attn_cfg c;
    memset(&c, 0, sizeof(c));
    c.kind = MNEMO_ATTN_KIND_DENSE;
    c.n_head = NH;
    c.head_dim = HS;
    c.n_ctx = n_ctx;
    c.rope = rope;
    c.rope_theta = 10000.0f;
    c.use_ref = use_ref;
    return c;
}

static void forward_ok(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    enum mnemo_status st = mni_attn_dense.forward(cfg, &io);
    if (st != MNEMO_OK) fail_msg("forward: %s", mnemo_last_error());
}

static void backward_ok(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    enum mnemo_status st = mni_attn_dense.backward(cfg, &io);
    if (st != MNEMO_OK) fail_msg("backward: %s", mnemo_last_error());
}

/* ---- registry and validation ----------------------------------------------------------------- */

static void test_registry(void **state)
{
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(MNEMO_ATTN_KIND_DENSE);
    assert_ptr_equal(ops, &mni_attn_dense);
    assert_int_equal(ops->api_version, MNEMO_ATTN_API_VERSION);
    assert_string_equal(ops->name, "dense");
    assert_null(mnemo_attn_ops_get(-1));
    assert_null(mnemo_attn_ops_get(MNEMO_ATTN_KIND_COUNT));
    assert_string_equal(mnemo_attn_kind_name(MNEMO_ATTN_KIND_DENSE), "dense");
    assert_null(mnemo_attn_kind_name(MNEMO_ATTN_KIND_COUNT));
    assert_int_equal(mnemo_attn_kind_from_name("dense"), MNEMO_ATTN_KIND_DENSE);
    assert_int_equal(mnemo_attn_kind_from_name("Dense "), -1);
    assert_int_equal(mnemo_attn_kind_from_name(NULL), -1);
    // every slot is filled, and dense has no parameters of its own
    for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
        const struct mnemo_attn_ops *o = mnemo_attn_ops_get(k);
        assert_true(o && o->validate && o->n_params && o->act_bytes && o->scratch_bytes &&
                    o->forward && o->backward && o->state_bytes && o->step_scratch_bytes &&
                    o->state_init && o->step && o->state_live_bytes);
    }
    struct mnemo_attn_cfg cfg = make_cfg(4, 64, 128, 1, 0);
    assert_int_equal(ops->n_params(&cfg), 0);
}

static void expect_arg(const struct mnemo_attn_cfg *cfg, const char *field)
{
    assert_int_equal(mni_attn_dense.validate(cfg), MNEMO_ERR_ARG);
    if (!strstr(mnemo_last_error(), field))
        fail_msg("message '%s' does not name '%s'", mnemo_last_error(), field);
}

static void test_validate(void **state)
{
    struct mnemo_attn_cfg c = make_cfg(4, 64, 128, 1, 0);
    assert_int_equal(mni_attn_dense.validate(&c), MNEMO_OK);
    c.head_dim = 2;
    assert_int_equal(mni_attn_dense.validate(&c), MNEMO_OK);
    c.head_dim = 256;
    assert_int_equal(mni_attn_dense.validate(&c), MNEMO_OK);
    c.head_dim = 63, expect_arg(&c, "head_dim");
    c.head_dim = 0, expect_arg(&c, "head_dim");
    c.head_dim = 258, expect_arg(&c, "head_dim");
    c.head_dim = -4, expect_arg(&c, "head_dim");
    c = make_cfg(0, 64, 128, 1, 0), expect_arg(&c, "n_head");
    c = make_cfg(4, 64, 0, 1, 0), expect_arg(&c, "n_ctx");
    c = make_cfg(4, 64, 128, 1, 0), c.rope_theta = 0.0f, expect_arg(&c, "rope_theta");
    c.rope_theta = NAN, expect_arg(&c, "rope_theta");
    c.rope = 0; // theta is irrelevant without RoPE
    assert_int_equal(mni_attn_dense.validate(&c), MNEMO_OK);
    c = make_cfg(4, 64, 128, 1, 0), c.kind = 7, expect_arg(&c, "kind");

    // bad io: an error, never a crash
    c = make_cfg(2, 16, 32, 1, 0);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, &mni_attn_dense, &c, 1, 8);
    struct mnemo_attn_io io = tu_attn_io(&b);
    io.T = 0;
    assert_int_equal(mni_attn_dense.forward(&c, &io), MNEMO_ERR_ARG);
    io = tu_attn_io(&b), io.qkv = NULL;
    assert_int_equal(mni_attn_dense.forward(&c, &io), MNEMO_ERR_ARG);
    io = tu_attn_io(&b), io.dout = NULL;
    assert_int_equal(mni_attn_dense.backward(&c, &io), MNEMO_ERR_ARG);
    assert_int_equal(mni_attn_dense.forward(&c, NULL), MNEMO_ERR_ARG);
    c.head_dim = 15;
    io = tu_attn_io(&b);
    assert_int_equal(mni_attn_dense.forward(&c, &io), MNEMO_ERR_ARG);
    tu_attn_bufs_free(&b);
}

/* Declared memory is linear in T (never T x T) and the state is bounded by n_ctx. */
static void test_sizes_linear(void **state)
{
    struct mnemo_attn_cfg c = make_cfg(4, 64, 8192, 1, 0);
    const struct mnemo_attn_ops *o = &mni_attn_dense;
    for (int T = 1024; T <= 8192; T *= 2) {
        size_t a1 = o->act_bytes(&c, 2, T), a2 = o->act_bytes(&c, 2, 2 * T);
        size_t s1 = o->scratch_bytes(&c, 2, T), s2 = o->scratch_bytes(&c, 2, 2 * T);
        assert_true(a2 <= 2 * a1 + 256 && a2 >= 2 * a1 - 256);
        assert_true(s2 <= 2 * s1 + 256 && s2 >= 2 * s1 - 256);
        // q, k, v, lse and the rope table: 3*B*NH*T*HS + B*NH*T + T*HS floats
        assert_true(a1 >= (3 * 2 * 4 * (size_t)T * 64 + 2 * 4 * (size_t)T + (size_t)T * 64) * 4);
    }
    // the KV cache: 2 * NH * n_ctx * HS floats + a header
    size_t sb = o->state_bytes(&c);
    assert_true(sb >= 2 * 4 * 8192 * 64 * 4 && sb <= 2 * 4 * 8192 * 64 * 4 + 256);
    assert_true(o->step_scratch_bytes(&c, 1) < o->step_scratch_bytes(&c, 1000));
}

/* ---- fast vs reference ----------------------------------------------------------------------- */

struct shape {
    int B, T, NH, HS, rope;
    float scale; // of the random q, k, v: larger gives sharper softmaxes
};

static const struct shape shapes[] = {
    {1, 1, 1, 16, 1, 1.0f},   {2, 1, 3, 64, 0, 1.0f},   {1, 7, 2, 16, 1, 1.0f},
    {2, 25, 3, 16, 1, 1.0f},  {1, 24, 1, 64, 1, 1.0f},  {3, 50, 2, 64, 0, 1.0f},
    {1, 65, 4, 16, 1, 1.0f},  {1, 200, 4, 16, 1, 1.0f}, {1, 257, 2, 64, 1, 1.0f},
    {2, 131, 1, 64, 0, 2.5f}, {1, 70, 2, 6, 1, 1.0f},   {1, 45, 1, 2, 1, 1.0f},
    {1, 40, 1, 256, 1, 0.5f}, {1, 96, 2, 64, 1, 4.0f},
};

static void print_shape(const char *what, const struct shape *s, double err)
{
    print_message("%-9s B=%d T=%3d NH=%d HS=%3d rope=%d scale=%.1f: max rel err %.2e\n", what,
                  s->B, s->T, s->NH, s->HS, s->rope, (double)s->scale, err);
}

/* Tolerances: the fast path is fp32 with a polynomial exp2 (1.6e-7), the reference double;
 * observed worst errors are ~1e-7 at scale 1 and ~3e-6 at scale 4 (sharper softmaxes amplify
 * the exp error), so 1e-5 leaves a 3x margin while any indexing or masking slip (errors of
 * order 1) fails. */
static void test_forward_vs_ref(void **state)
{
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const struct shape *s = &shapes[k];
        struct mnemo_attn_cfg fast = make_cfg(s->NH, s->HS, s->T, s->rope, 0);
        struct mnemo_attn_cfg ref = fast;
        ref.use_ref = 1;
        struct tu_attn_bufs f, r;
        tu_attn_bufs_init(&f, &mni_attn_dense, &fast, s->B, s->T);
        tu_attn_bufs_init(&r, &mni_attn_dense, &ref, s->B, s->T);
        tu_fill_normal(f.qkv, f.nqkv, s->scale, 100 + k);
        memcpy(r.qkv, f.qkv, f.nqkv * sizeof(float));
        forward_ok(&fast, &f);
        forward_ok(&ref, &r);
        // max |fast - ref| relative to max |ref| over the whole output
        double err = tu_rel_max_err(f.out, r.out, f.nout);
        print_shape("forward", s, err);
        assert_true(err < 1e-5);
        // the saved activations agree too (same layout on both paths)
        struct mni_dense_act lay;
        mni_dense_act_layout(&lay, &fast, s->B, s->T);
        size_t nh = (lay.k - lay.q) / sizeof(float), nl = (size_t)s->B * s->NH * s->T;
        for (int part = 0; part < 3; part++) {
            size_t off = part == 0 ? lay.q : part == 1 ? lay.k : lay.v;
            const float *a = (const float *)((char *)f.act + off);
            const float *b = (const float *)((char *)r.act + off);
            assert_true(tu_rel_max_err(a, b, nh) < 1e-6);
        }
        // lse is a logarithm: compare in absolute terms
        TU_ASSERT_CLOSE("lse", (const float *)((char *)f.act + lay.lse),
                        (const float *)((char *)r.act + lay.lse), nl, 2e-5f, 1e-6f);
        tu_attn_bufs_free(&f), tu_attn_bufs_free(&r);
    }
}

static void set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int get_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Max relative error of each of the q, k, v parts of dqkv (each has its own scale). */
static double dqkv_err(const struct shape *s, const float *got, const float *want)
{
    size_t C = (size_t)s->NH * s->HS, rows = (size_t)s->B * s->T;
    float *a = mni_alloc(rows * C * sizeof(float)), *b = mni_alloc(rows * C * sizeof(float));
    double worst = 0;
    for (int part = 0; part < 3; part++) {
        for (size_t t = 0; t < rows; t++) {
            memcpy(a + t * C, got + (t * 3 + part) * C, C * sizeof(float));
            memcpy(b + t * C, want + (t * 3 + part) * C, C * sizeof(float));
        }
        double e = tu_rel_max_err(a, b, rows * C);
        // T = 1: dq and dk vanish (a single key has probability 1) up to the rounding
        // of D_i = dO_i . o_i against dP_ii = dO_i . v_i
        if (s->T == 1 && part < 2) {
            for (size_t i = 0; i < rows * C; i++) assert_true(fabsf(a[i]) < 1e-5f);
            e = 0;
        }
        worst = e > worst ? e : worst;
    }
    mni_free(a), mni_free(b);
    return worst;
}

/* Backward has two modes: single pass with whole heads per thread when B*NH fills the threads,
 * otherwise separate dk/dv and dq tasks. 1, 2 and 7 threads exercise both on these shapes. */
static void test_backward_vs_ref(void **state)
{
    const int nthr0 = get_threads(), thr[3] = {1, 2, 7};
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const struct shape *s = &shapes[k];
        struct mnemo_attn_cfg fast = make_cfg(s->NH, s->HS, s->T, s->rope, 0);
        struct mnemo_attn_cfg ref = fast;
        ref.use_ref = 1;
        struct tu_attn_bufs f, r;
        tu_attn_bufs_init(&f, &mni_attn_dense, &fast, s->B, s->T);
        tu_attn_bufs_init(&r, &mni_attn_dense, &ref, s->B, s->T);
        tu_fill_normal(r.qkv, r.nqkv, s->scale, 200 + k);
        tu_fill_normal(r.dout, r.nout, 1.0f, 300 + k);
        tu_fill_normal(r.dqkv, r.nqkv, 100.0f, 2); // garbage: backward must overwrite
        forward_ok(&ref, &r);
        backward_ok(&ref, &r);
        for (int ti = 0; ti < 3; ti++) {
            set_threads(thr[ti]);
            memcpy(f.qkv, r.qkv, f.nqkv * sizeof(float));
            memcpy(f.dout, r.dout, f.nout * sizeof(float));
            tu_fill_normal(f.dqkv, f.nqkv, 100.0f, 1);
            forward_ok(&fast, &f);
            backward_ok(&fast, &f);
            double err = dqkv_err(s, f.dqkv, r.dqkv);
            char what[32];
            snprintf(what, sizeof(what), "backward%d", thr[ti]);
            print_shape(what, s, err);
            assert_true(err < 2e-5);
        }
        set_threads(nthr0);

        // the fast backward also accepts the reference forward's saved activations
        memcpy(f.act, r.act, mni_attn_dense.act_bytes(&fast, s->B, s->T));
        memcpy(f.out, r.out, f.nout * sizeof(float));
        backward_ok(&fast, &f);
        assert_true(dqkv_err(s, f.dqkv, r.dqkv) < 2e-5);
        tu_attn_bufs_free(&f), tu_attn_bufs_free(&r);
    }
}

/* ---- finite differences ---------------------------------------------------------------------- */

/* |fd - analytic| / (0.01 + |analytic|); observed worst ~1.5e-4 (the float rounding of the
 * forward's outputs limits the differences). */
#define FD_TOL 5e-4

/* loss = sum(out * w) in double, w fixed: its gradient with respect to out is w, which is
 * what backward receives as dout. */
static double loss_of(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b, const float *w)
{
    forward_ok(cfg, b);
    double L = 0;
    for (size_t i = 0; i < b->nout; i++) L += (double)b->out[i] * w[i];
    return L;
}

/* Every entry of qkv (q, k and v of every token and head) is perturbed, so a gradient that
 * is wrong for any part of the packing, any head or any position is caught. */
static void check_fd(int B, int T, int NH, int HS, int rope, uint64_t seed)
{
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, T, rope, 1);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, &mni_attn_dense, &cfg, B, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, seed);
    tu_fill_normal(b.dout, b.nout, 1.0f, seed + 1); // loss = sum(out * dout)
    forward_ok(&cfg, &b);
    backward_ok(&cfg, &b);
    double worst = 0;
    for (size_t i = 0; i < b.nqkv; i++) {
        // central differences at h and 2h, combined (Richardson) to cancel the h^2 term
        const float x = b.qkv[i];
        double cd[2];
        for (int k = 0; k < 2; k++) {
            b.qkv[i] = x + (k + 1) * 5e-2f;
            float xp = b.qkv[i];
            double Lp = loss_of(&cfg, &b, b.dout);
            b.qkv[i] = x - (k + 1) * 5e-2f;
            float xm = b.qkv[i];
            double Lm = loss_of(&cfg, &b, b.dout);
            cd[k] = (Lp - Lm) / ((double)xp - xm);
        }
        b.qkv[i] = x;
        double fd = (4 * cd[0] - cd[1]) / 3, an = b.dqkv[i];
        double err = fabs(fd - an) / (1e-2 + fabs(an));
        if (err > FD_TOL)
            fail_msg("qkv[%zu] (B=%d T=%d NH=%d HS=%d rope=%d): analytic %.7g, fd %.7g", i, B, T,
                     NH, HS, rope, an, fd);
        worst = err > worst ? err : worst;
    }
    print_message("fd        B=%d T=%d NH=%d HS=%d rope=%d: worst rel err %.2e\n", B, T, NH, HS,
                  rope, worst);
    tu_attn_bufs_free(&b);
}

/* Small shapes (the reference is O(T^2 HS) per forward, and there are 2 * 2 * |qkv| of them):
 * RoPE on and off, HS not a multiple of 8, B > 1 and NH > 1. */
static void test_ref_backward_vs_fd(void **state)
{
    check_fd(2, 5, 2, 4, 1, 11);
    check_fd(1, 6, 1, 6, 0, 12);
    check_fd(1, 4, 3, 8, 1, 13);
}

/* A backward that puts a gradient in the wrong place must fail the checks above: swap dk and
 * dv of one entry and make sure the finite differences notice. (Self-test of the checker.) */
static void test_fd_detects_a_fault(void **state)
{
    struct mnemo_attn_cfg cfg = make_cfg(1, 4, 4, 1, 1);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, &mni_attn_dense, &cfg, 1, 4);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, 5);
    tu_fill_normal(b.dout, b.nout, 1.0f, 6);
    forward_ok(&cfg, &b);
    backward_ok(&cfg, &b);
    size_t i = 3 * 4 + 4 + 1; // token 1, a k entry
    float an = b.dqkv[i + 4]; // ... but read the v entry's gradient
    const float x = b.qkv[i];
    b.qkv[i] = x + 1e-2f;
    double Lp = loss_of(&cfg, &b, b.dout);
    b.qkv[i] = x - 1e-2f;
    double Lm = loss_of(&cfg, &b, b.dout);
    double fd = (Lp - Lm) / 2e-2;
    assert_true(fabs(fd - an) / (1e-2 + fabs(an)) > FD_TOL);
    tu_attn_bufs_free(&b);
}

/* ---- determinism and causality --------------------------------------------------------------- */

static void test_deterministic_and_causal(void **state)
{
    // B*NH = 4 heads: the single-pass backward with 1 and with 2 threads (one writer per head,
    // same order), and the forward always, give bit-identical results
    struct mnemo_attn_cfg cfg = make_cfg(2, 64, 150, 1, 0);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, &mni_attn_dense, &cfg, 2, 150);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, 21);
    tu_fill_normal(b.dout, b.nout, 1.0f, 22);
    float *out1 = mni_alloc(b.nout * sizeof(float)), *d1 = mni_alloc(b.nqkv * sizeof(float));
    int nthr0 = get_threads();
    set_threads(1);
    forward_ok(&cfg, &b);
    backward_ok(&cfg, &b);
    memcpy(out1, b.out, b.nout * sizeof(float));
    memcpy(d1, b.dqkv, b.nqkv * sizeof(float));
    set_threads(2);
    forward_ok(&cfg, &b);
    backward_ok(&cfg, &b);
    set_threads(nthr0);
    assert_memory_equal(out1, b.out, b.nout * sizeof(float));
    assert_memory_equal(d1, b.dqkv, b.nqkv * sizeof(float));

    // changing token 100 onwards leaves outputs 0..99 bit-identical
    const size_t C = 2 * 64;
    for (int bb = 0; bb < 2; bb++) {
        for (size_t i = (size_t)(bb * 150 + 100) * 3 * C; i < (size_t)(bb * 150 + 150) * 3 * C; i++)
            b.qkv[i] += 1.0f;
    }
    forward_ok(&cfg, &b);
    for (int bb = 0; bb < 2; bb++) {
        size_t o = (size_t)bb * 150 * C;
        assert_memory_equal(out1 + o, b.out + o, 100 * C * sizeof(float));
        assert_memory_not_equal(out1 + o + 100 * C, b.out + o + 100 * C, C * sizeof(float));
    }
    mni_free(out1), mni_free(d1);
    tu_attn_bufs_free(&b);
}

/* ---- sessions -------------------------------------------------------------------------------- */

/* Feeds the window qkv (T,3,NH,HS) through a fresh session in chunks of the given sizes
 * (cycled), and compares every output with want (T,NH,HS). */
static void session_equals(const struct mnemo_attn_cfg *cfg, int T, const float *qkv,
                           const float *want, const int *chunks, int nchunks, const char *label)
{
    const struct mnemo_attn_ops *ops = &mni_attn_dense;
    size_t C = (size_t)cfg->n_head * cfg->head_dim;
    int maxn = 0;
    for (int c = 0; c < nchunks; c++) maxn = chunks[c] > maxn ? chunks[c] : maxn;
    void *st = mni_alloc(ops->state_bytes(cfg));
    void *scratch = mni_alloc(ops->step_scratch_bytes(cfg, maxn));
    float *out = mni_alloc((size_t)T * C * sizeof(float));
    assert_true(st && scratch && out);
    // garbage in the state: state_init must be enough
    memset(st, 0xff, ops->state_bytes(cfg));
    ops->state_init(cfg, st);
    size_t live0 = ops->state_live_bytes(cfg, st);
    int t = 0, c = 0;
    while (t < T) {
        int n = chunks[c++ % nchunks];
        if (n > T - t) n = T - t;
        enum mnemo_status rc = ops->step(cfg, st, NULL, out + (size_t)t * C,
                                         qkv + (size_t)t * 3 * C, n, scratch);
        if (rc != MNEMO_OK) fail_msg("%s: step at %d: %s", label, t, mnemo_last_error());
        t += n;
        assert_true(ops->state_live_bytes(cfg, st) > live0);
        assert_true(ops->state_live_bytes(cfg, st) <= ops->state_bytes(cfg));
    }
    double err = tu_rel_max_err(out, want, (size_t)T * C);
    print_message("session   %-28s: max rel err %.2e\n", label, err);
    assert_true(err < 1e-5);
    mni_free(st), mni_free(scratch), mni_free(out);
}

/* One window through forward, then through fresh sessions: token by token (the decode path),
 * in mixed chunks (both step paths, strips with tails, chunks crossing the 64-key blocks), and
 * in one chunk (the strip path over the whole window: bit-identical to the forward). */
static void session_case(int T, int NH, int HS, int rope, int use_ref)
{
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, T, rope, use_ref);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, &mni_attn_dense, &cfg, 1, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.5f, 40 + T);
    forward_ok(&cfg, &b);
    char label[64];
    const int one[] = {1};
    snprintf(label, sizeof(label), "T=%d HS=%d ref=%d by 1", T, HS, use_ref);
    session_equals(&cfg, T, b.qkv, b.out, one, 1, label);
    // mixes the one-row path (n < 8) and the strip path, strips with tails
    const int mixed[] = {3, 30, 1, 7, 8, 25, 64, 2};
    snprintf(label, sizeof(label), "T=%d HS=%d ref=%d chunks", T, HS, use_ref);
    session_equals(&cfg, T, b.qkv, b.out, mixed, 8, label);
    const int all[] = {T};
    snprintf(label, sizeof(label), "T=%d HS=%d ref=%d whole", T, HS, use_ref);
    session_equals(&cfg, T, b.qkv, b.out, all, 1, label);
    tu_attn_bufs_free(&b);
}

static void test_session_equals_forward(void **state)
{
    session_case(150, 3, 16, 1, 0);
    session_case(150, 2, 64, 1, 0);
    session_case(90, 2, 6, 0, 0);
    session_case(40, 1, 256, 1, 0);
    session_case(90, 3, 16, 1, 1);
}

/* The cache is bounded: a step that does not fit is refused whole, with MNEMO_ERR_FULL and
 * a message, and leaves the state as it was; a refilled state works; a state initialised for
 * another cfg is refused. Both paths. */
static void test_session_full(void **state)
{
    const struct mnemo_attn_ops *ops = &mni_attn_dense;
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        struct mnemo_attn_cfg cfg = make_cfg(2, 16, 10, 1, use_ref);
        size_t C = 32;
        void *st = mni_alloc(ops->state_bytes(&cfg));
        void *scratch = mni_alloc(ops->step_scratch_bytes(&cfg, 10));
        float qkv[11 * 3 * 32], out[11 * 32];
        tu_fill_normal(qkv, sizeof(qkv) / sizeof(float), 1.0f, 7);
        ops->state_init(&cfg, st);
        assert_int_equal(ops->step(&cfg, st, NULL, out, qkv, 8, scratch), MNEMO_OK);
        size_t live = ops->state_live_bytes(&cfg, st);
        // 8 + 3 > 10: refused whole, nothing appended
        assert_int_equal(ops->step(&cfg, st, NULL, out, qkv, 3, scratch), MNEMO_ERR_FULL);
        assert_non_null(strstr(mnemo_last_error(), "full"));
        assert_int_equal(ops->state_live_bytes(&cfg, st), live);
        assert_int_equal(ops->step(&cfg, st, NULL, out, qkv + 8 * 3 * C, 2, scratch), MNEMO_OK);
        // full: every slot is live
        assert_int_equal(ops->state_live_bytes(&cfg, st), ops->state_bytes(&cfg));
        assert_int_equal(ops->step(&cfg, st, NULL, out, qkv, 1, scratch), MNEMO_ERR_FULL);
        assert_int_equal(ops->step(&cfg, st, NULL, out, qkv, 0, scratch), MNEMO_ERR_ARG);
        // re-initialised, it accepts tokens again
        ops->state_init(&cfg, st);
        assert_int_equal(ops->step(&cfg, st, NULL, out, qkv, 10, scratch), MNEMO_OK);
        // a state initialised for another n_ctx is refused
        struct mnemo_attn_cfg other = cfg;
        other.n_ctx = 20;
        assert_int_equal(ops->step(&other, st, NULL, out, qkv, 1, scratch), MNEMO_ERR_ARG);
        mni_free(st), mni_free(scratch);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_sizes_linear),
        cmocka_unit_test(test_forward_vs_ref),
        cmocka_unit_test(test_backward_vs_ref),
        cmocka_unit_test(test_ref_backward_vs_fd),
        cmocka_unit_test(test_fd_detects_a_fault),
        cmocka_unit_test(test_deterministic_and_causal),
        cmocka_unit_test(test_session_equals_forward),
        cmocka_unit_test(test_session_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
