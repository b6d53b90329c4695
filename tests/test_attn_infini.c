/*
 * test_attn_infini.c -- the Infini-attention kind: the fast path against the naive reference
 * (forward, backward and the gate gradient; one segment, many, a short last segment; linear and
 * delta rules; RoPE on and off), the reference against finite differences (every qkv entry and
 * every gate, and a case whose loss sits in the last segment only, so that every gradient of
 * the earlier segments comes through the memory), a hand-computed case for both update rules,
 * the kind with closed gates against the dense kind over segment windows, and the streaming
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

static const struct mnemo_attn_ops *OPS = &mni_attn_infini;

static struct mnemo_attn_cfg make_cfg(int NH, int HS, int n_ctx, int seg, int rope, int delta,
                                      int use_ref)
{
    struct mnemo_attn_cfg c;
    memset(&c, 0, sizeof(c));
    c.kind = MNEMO_ATTN_KIND_INFINI;
    c.n_head = NH;
    c.head_dim = HS;
    c.n_ctx = n_ctx;
    c.segment = seg;
    c.rope = rope;
    c.rope_theta = 10000.0f;
    c.mem_update = delta ? MNEMO_MEM_DELTA : MNEMO_MEM_LINEAR;
    c.use_ref = use_ref;
    return c;
}

/* The gate logits (one per head) and their gradients, beside the tu_attn_bufs; the write
 * weights (io.write_w) of the next run(), NULL = none. */
static float beta[NH_MAX], dbeta[NH_MAX];
static const float *write_w;

static void run(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b, int backward)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    io.params = beta;
    io.dparams = dbeta;
    io.write_w = write_w;
    if (backward) memset(dbeta, 0, sizeof(dbeta));
    enum mnemo_status st = backward ? OPS->backward(cfg, &io) : OPS->forward(cfg, &io);
    if (st != MNEMO_OK) fail_msg("%s: %s", backward ? "backward" : "forward", mnemo_last_error());
}

static void test_registry_and_validate(void **s)
{
    (void)s;
    assert_ptr_equal(mnemo_attn_ops_get(MNEMO_ATTN_KIND_INFINI), &mni_attn_infini);
    assert_string_equal(mnemo_attn_kind_name(MNEMO_ATTN_KIND_INFINI), "infini");
    assert_int_equal(mnemo_attn_kind_from_name("infini"), MNEMO_ATTN_KIND_INFINI);
    assert_string_equal(mnemo_mem_update_name(MNEMO_MEM_DELTA), "delta");
    assert_int_equal(mnemo_mem_update_from_name("linear"), MNEMO_MEM_LINEAR);
    assert_int_equal(mnemo_mem_update_from_name("Delta"), -1);
    assert_null(mnemo_mem_update_name(2));
    struct mnemo_attn_cfg c = make_cfg(3, 8, 16, 4, 1, 0, 0);
    assert_int_equal(OPS->validate(&c), MNEMO_OK);
    assert_int_equal(OPS->n_params(&c), 3);
    c.segment = 17; // > n_ctx
    assert_int_equal(OPS->validate(&c), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "segment"));
    c.segment = -1;
    assert_int_equal(OPS->validate(&c), MNEMO_ERR_ARG);
    c = make_cfg(3, 8, 16, 0, 1, 0, 0);
    c.mem_update = 2;
    assert_int_equal(OPS->validate(&c), MNEMO_ERR_ARG);
    c = make_cfg(3, 8, 16, 0, 1, 0, 0);
    c.budget = 4;
    assert_int_equal(OPS->validate(&c), MNEMO_ERR_ARG);
    c = make_cfg(3, 7, 16, 0, 1, 0, 0);
    assert_int_equal(OPS->validate(&c), MNEMO_ERR_ARG);
    c = make_cfg(3, 8, 16, 0, 1, 0, 0);
    c.kind = MNEMO_ATTN_KIND_DENSE;
    assert_int_equal(OPS->validate(&c), MNEMO_ERR_ARG);
    /* a missing gate buffer is an error, not a crash */
    c = make_cfg(1, 4, 8, 4, 1, 0, 0);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, OPS, &c, 1, 8);
    struct mnemo_attn_io io = tu_attn_io(&b);
    assert_int_equal(OPS->forward(&c, &io), MNEMO_ERR_ARG);
    tu_attn_bufs_free(&b);
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

/* Write weights for B windows of S segments, in [1, e^2.5 = 12.2) (log-uniform). */
static float *make_write_w(int B, int S, uint64_t seed)
{
    float *w = malloc(sizeof(float) * (size_t)B * S);
    assert_non_null(w);
    tu_fill_normal(w, (size_t)B * S, 1.0f, seed);
    for (int i = 0; i < B * S; i++) w[i] = expf(2.5f * (0.5f + 0.5f * erff(w[i] / sqrtf(2.0f))));
    return w;
}

static void test_fast_vs_ref(void **s)
{
    (void)s;
    for (size_t c = 0; c < 2 * sizeof(shapes) / sizeof(shapes[0]); c++) {
        const struct shape *sh = &shapes[c / 2];
        const int weighted = c % 2, S = (sh->T + sh->N - 1) / sh->N;
        if (weighted && S < 2) continue; // nothing is folded
        float *ww = weighted ? make_write_w(sh->B, S, 400 + c) : NULL;
        write_w = ww;
        struct mnemo_attn_cfg cf = make_cfg(sh->NH, sh->HS, sh->n_ctx, sh->N, sh->rope, sh->delta, 0);
        struct mnemo_attn_cfg cr = cf;
        cr.use_ref = 1;
        struct tu_attn_bufs f, r;
        tu_attn_bufs_init(&f, OPS, &cf, sh->B, sh->T);
        tu_attn_bufs_init(&r, OPS, &cr, sh->B, sh->T);
        tu_fill_normal(f.qkv, f.nqkv, 1.0f, 100 + c);
        tu_fill_normal(f.dout, f.nout, 1.0f, 200 + c);
        memcpy(r.qkv, f.qkv, f.nqkv * sizeof(float));
        memcpy(r.dout, f.dout, f.nout * sizeof(float));
        fill_beta(sh->NH, 300 + c);
        run(&cf, &f, 0);
        run(&cr, &r, 0);
        double ef = tu_rel_max_err(f.out, r.out, f.nout);
        run(&cf, &f, 1);
        float db_fast[NH_MAX];
        memcpy(db_fast, dbeta, sizeof(db_fast));
        run(&cr, &r, 1);
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
        free(ww);
        write_w = NULL;
    }
}

static double loss_of(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b)
{
    run(cfg, b, 0);
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
 * memory (and must be non-zero there). */
static void check_fd(int B, int T, int NH, int HS, int N, int rope, int delta, int last_only,
                     uint64_t seed)
{
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, T, N, rope, delta, 1);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, OPS, &cfg, B, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, seed);
    tu_fill_normal(b.dout, b.nout, 1.0f, seed + 1);
    fill_beta(NH, seed + 2);
    const size_t C = (size_t)NH * HS;
    const int last0 = (T - 1) / N * N;
    if (last_only)
        for (int bb = 0; bb < B; bb++)
            memset(b.dout + (size_t)bb * T * C, 0, (size_t)last0 * C * sizeof(float));
    run(&cfg, &b, 0);
    run(&cfg, &b, 1);
    float dbeta_an[NH_MAX];
    memcpy(dbeta_an, dbeta, sizeof(dbeta_an));
    double worst = 0, early = 0;
    for (size_t i = 0; i < b.nqkv; i++) {
        double fd = fd_at(&cfg, &b, &b.qkv[i]), an = b.dqkv[i], err = rel_err(fd, an);
        if (err > FD_TOL)
            fail_msg("qkv[%zu] (B=%d T=%d N=%d NH=%d HS=%d rope=%d delta=%d): analytic %.7g, fd %.7g",
                     i, B, T, N, NH, HS, rope, delta, an, fd);
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
                  delta ? "delta" : "linear", write_w ? " weighted" : "",
                  last_only ? " (loss in last segment)" : "", worst, early);
    if (last_only) assert_true(early > 1e-2);
    tu_attn_bufs_free(&b);
}

static void test_ref_vs_fd(void **s)
{
    (void)s;
    check_fd(1, 10, 2, 4, 3, 1, 0, 0, 11); // 4 segments, the last short
    check_fd(1, 10, 2, 4, 3, 1, 1, 0, 12);
    check_fd(2, 8, 1, 6, 4, 0, 1, 0, 13);
    check_fd(1, 9, 2, 4, 3, 1, 0, 1, 14); // BPTT: the loss only in segment 2
    check_fd(1, 9, 2, 4, 3, 0, 1, 1, 15);
    // with write weights (2 windows x 4 segments)
    float *ww = make_write_w(2, 4, 16);
    write_w = ww;
    check_fd(2, 10, 2, 4, 3, 1, 0, 0, 17);
    check_fd(2, 10, 2, 4, 3, 1, 1, 0, 18);
    check_fd(2, 9, 1, 4, 3, 0, 1, 1, 19);
    write_w = NULL;
    free(ww);
}

/* A write weight c means "as if the segment occurred c times": under the linear rule, a window
 * [A, B, C] with weight 3 on A reads in C exactly what the window [A, A, A, B, C] reads there
 * (local attention sees only its own segment, at positions within it). Fast path and
 * reference. (With A alone in memory no weight could show: the read-out is normalised.) */
static void test_write_weight_is_repetition(void **s)
{
    (void)s;
    const int NH = 2, HS = 8, N = 5;
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        struct mnemo_attn_cfg c3 = make_cfg(NH, HS, 5 * N, N, 1, 0, use_ref);
        struct tu_attn_bufs w3, w5;
        tu_attn_bufs_init(&w3, OPS, &c3, 1, 3 * N);
        tu_attn_bufs_init(&w5, OPS, &c3, 1, 5 * N);
        tu_fill_normal(w3.qkv, w3.nqkv, 1.0f, 31);
        const size_t seg = (size_t)N * 3 * NH * HS; // floats of qkv per segment
        for (int k = 0; k < 3; k++) memcpy(w5.qkv + k * seg, w3.qkv, seg * sizeof(float));
        memcpy(w5.qkv + 3 * seg, w3.qkv + seg, 2 * seg * sizeof(float));
        fill_beta(NH, 32);
        const float ww[3] = {3.0f, 1.0f, 1.0f};
        write_w = ww;
        run(&c3, &w3, 0);
        write_w = NULL;
        run(&c3, &w5, 0);
        const size_t out_seg = (size_t)N * NH * HS;
        double e = tu_rel_max_err(w3.out + 2 * out_seg, w5.out + 4 * out_seg, out_seg);
        print_message("weight 3 = three copies (%s): rel err %.2e\n", use_ref ? "ref" : "fast", e);
        assert_true(e < 1e-5);
        // and the weight matters: weight 1 reads something else
        run(&c3, &w3, 0);
        assert_true(tu_rel_max_err(w3.out + 2 * out_seg, w5.out + 4 * out_seg, out_seg) > 1e-3);
        tu_attn_bufs_free(&w3);
        tu_attn_bufs_free(&w5);
    }
}

/* N = 1, one head of width 2, no RoPE: every token is its own segment, so A_dot,t = v_t and the
 * memory is a normalised sum over the earlier tokens, computed here by hand:
 *   linear: A_mem,2 = (a0 v0 + a1 v1) / (a0 + a1),  a_j = sigma(q_2) . sigma(k_j)
 *   delta:  u_1 = v1 - v0 (the memory holds only v0), A_mem,2 = (a0 v0 + a1 u_1) / (a0 + a1)
 * and A_mem,1 = v0 under both rules. */
static void test_hand_case(void **s)
{
    (void)s;
    const float q[3][2] = {{0.3f, -0.2f}, {1.0f, -1.5f}, {-0.4f, 0.8f}};
    const float k[3][2] = {{0.5f, -2.0f}, {-1.0f, 0.7f}, {0.2f, 0.1f}};
    const float v[3][2] = {{1.0f, 2.0f}, {-3.0f, 0.5f}, {0.25f, -1.0f}};
    for (int use_ref = 0; use_ref < 2; use_ref++)
        for (int delta = 0; delta < 2; delta++) {
            struct mnemo_attn_cfg c = make_cfg(1, 2, 3, 1, 0, delta, use_ref);
            struct tu_attn_bufs b;
            tu_attn_bufs_init(&b, OPS, &c, 1, 3);
            for (int t = 0; t < 3; t++)
                for (int d = 0; d < 2; d++) {
                    b.qkv[t * 6 + d] = q[t][d];
                    b.qkv[t * 6 + 2 + d] = k[t][d];
                    b.qkv[t * 6 + 4 + d] = v[t][d];
                }
            beta[0] = 0.7f;
            run(&c, &b, 0);
            const double g = 1 / (1 + exp(-0.7));
#define SIG(x) ((x) > 0 ? (x) + 1.0 : exp(x))
            double a[2];
            for (int j = 0; j < 2; j++)
                a[j] = SIG(q[2][0]) * SIG(k[j][0]) + SIG(q[2][1]) * SIG(k[j][1]);
#undef SIG
            for (int d = 0; d < 2; d++) {
                const double u1 = delta ? v[1][d] - v[0][d] : v[1][d];
                const double want0 = v[0][d], want1 = g * v[0][d] + (1 - g) * v[1][d];
                const double want2 = g * (a[0] * v[0][d] + a[1] * u1) / (a[0] + a[1]) + (1 - g) * v[2][d];
                assert_true(fabs(b.out[d] - want0) < 1e-6);
                assert_true(fabs(b.out[2 + d] - want1) < 1e-6);
                if (fabs(b.out[4 + d] - want2) > 1e-5)
                    fail_msg("hand case ref=%d delta=%d d=%d: got %.7g, want %.7g", use_ref, delta,
                             d, (double)b.out[4 + d], want2);
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
        struct mnemo_attn_cfg ci = make_cfg(NH, HS, T, N, 1, 1, use_ref);
        struct mnemo_attn_cfg cd;
        mni_inf_dense_cfg(&cd, &ci);
        struct tu_attn_bufs a, d;
        tu_attn_bufs_init(&a, OPS, &ci, B, T);
        tu_attn_bufs_init(&d, &mni_attn_dense, &cd, B * S, N);
        tu_fill_normal(a.qkv, a.nqkv, 1.0f, 77);
        memcpy(d.qkv, a.qkv, a.nqkv * sizeof(float));
        for (int h = 0; h < NH; h++) beta[h] = -40.0f;
        run(&ci, &a, 0);
        struct mnemo_attn_io io = tu_attn_io(&d);
        assert_int_equal(mni_attn_dense.forward(&cd, &io), MNEMO_OK);
        double e = tu_rel_max_err(a.out, d.out, a.nout);
        print_message("closed gates = dense per segment (ref=%d): max rel err %.2e\n", use_ref, e);
        assert_true(e < 1e-5);
        /* open gates change every segment but the first */
        for (int h = 0; h < NH; h++) beta[h] = 0.0f;
        run(&ci, &a, 0);
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
    const int T = 3 * n_ctx;
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, n_ctx, N, rope, delta, use_ref);
    struct mnemo_attn_cfg big = make_cfg(NH, HS, T, N, rope, delta, use_ref);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, OPS, &big, 1, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, 40 + T + delta);
    fill_beta(NH, 50 + N);
    run(&big, &b, 0);
    const size_t C = (size_t)NH * HS;
    const int chunks[][4] = {{1, 1, 1, 1}, {3, 7, 1, 16}};
    for (int k = 0; k < 2; k++) {
        const size_t sb = OPS->state_bytes(&cfg);
        if (!use_ref) {
            struct mnemo_attn_cfg d;
            mni_inf_dense_cfg(&d, &cfg);
            const size_t mem = (size_t)NH * (HS * HS + HS) * sizeof(float);
            const size_t raw = 2 * (size_t)NH * (N < 64 ? N : 64) * HS * sizeof(float);
            assert_true(sb <= mni_attn_dense.state_bytes(&d) + 2 * mem + raw + 8 * 64);
        }
        void *st = mni_alloc(sb);
        void *scratch = mni_alloc(OPS->step_scratch_bytes(&cfg, 16));
        float *out = mni_alloc((size_t)T * C * sizeof(float));
        memset(st, 0xff, sb);
        OPS->state_init(&cfg, st);
        const size_t live0 = OPS->state_live_bytes(&cfg, st);
        const struct mni_inf_state *hd = st;
        int t = 0, c = 0;
        while (t < T) {
            int n = chunks[k][c++ % 4];
            if (n > T - t) n = T - t;
            enum mnemo_status rc = OPS->step(&cfg, st, beta, out + (size_t)t * C,
                                             b.qkv + (size_t)t * 3 * C, n, scratch);
            if (rc != MNEMO_OK) fail_msg("step at %d: %s", t, mnemo_last_error());
            t += n;
            assert_true(OPS->state_live_bytes(&cfg, st) <= sb);
            if (hd->in_seg == 0) assert_true(OPS->state_live_bytes(&cfg, st) == live0);
        }
        assert_int_equal(hd->count, T);
        assert_int_equal(hd->n_seg, T / N);
        assert_true(OPS->state_bytes(&cfg) == sb);
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
    struct mnemo_attn_cfg a = make_cfg(4, 32, 256, 64, 1, 0, 0);
    struct mnemo_attn_cfg b = make_cfg(4, 32, 4096, 64, 1, 1, 0);
    assert_true(OPS->state_bytes(&a) == OPS->state_bytes(&b));
    /* M and z in fp32 per head, the rest one segment: well under a dense cache of n_ctx */
    const size_t mz = 4 * (32 * 32 + 32) * sizeof(float);
    assert_true(OPS->state_bytes(&b) > mz);
    assert_true(OPS->state_bytes(&b) < mni_attn_dense.state_bytes(&(struct mnemo_attn_cfg){
        .kind = MNEMO_ATTN_KIND_DENSE, .n_head = 4, .head_dim = 32, .n_ctx = 4096, .rope = 1,
        .rope_theta = 10000.0f}) / 8);
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
