/*
 * test_kernels.c -- every kern/ kernel against its naive reference, and the references'
 * backward passes against central finite differences (double-precision loss).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kern/kern.h"
#include "kern/vmath.h"
#include "testutil.h"

static float *fnew(size_t n) { return mni_alloc(n * sizeof(float)); }

static void test_matmul_fwd_bwd(void **state)
{
    (void)state;
    const size_t shapes[][3] = {{1, 1, 1},    {7, 5, 3},      {64, 48, 96},
                                 {33, 300, 17}, {130, 256, 768}, {40, 17, 520}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        size_t N = shapes[s][0], C = shapes[s][1], OC = shapes[s][2];
        float *x = fnew(N * C), *w = fnew(OC * C), *b = fnew(OC), *y = fnew(N * OC),
              *yr = fnew(N * OC), *dy = fnew(N * OC), *dx = fnew(N * C), *dxr = fnew(N * C),
              *dw = fnew(OC * C), *dwr = fnew(OC * C), *db = fnew(OC), *dbr = fnew(OC);
        tu_fill_normal(x, N * C, 1, 1);
        tu_fill_normal(w, OC * C, 0.1f, 2);
        tu_fill_normal(b, OC, 1, 3);
        tu_fill_normal(dy, N * OC, 1, 4);
        /* start accumulators from the same non-zero values: backward must add */
        tu_fill_normal(dw, OC * C, 1, 5);
        memcpy(dwr, dw, OC * C * sizeof(float));
        tu_fill_normal(db, OC, 1, 6);
        memcpy(dbr, db, OC * sizeof(float));
        mni_matmul_fwd(y, x, w, b, N, C, OC);
        mni_matmul_fwd_ref(yr, x, w, b, N, C, OC);
        TU_ASSERT_CLOSE("matmul fwd", y, yr, N * OC, 1e-4f, 1e-4f);
        mni_matmul_fwd(y, x, w, NULL, N, C, OC);
        mni_matmul_fwd_ref(yr, x, w, NULL, N, C, OC);
        TU_ASSERT_CLOSE("matmul fwd no bias", y, yr, N * OC, 1e-4f, 1e-4f);
        mni_matmul_bwd(dx, dw, db, dy, x, w, N, C, OC);
        mni_matmul_bwd_ref(dxr, dwr, dbr, dy, x, w, N, C, OC);
        TU_ASSERT_CLOSE("matmul dx", dx, dxr, N * C, 1e-4f, 1e-4f);
        TU_ASSERT_CLOSE("matmul dw", dw, dwr, OC * C, 1e-3f, 1e-4f);
        TU_ASSERT_CLOSE("matmul db", db, dbr, OC, 1e-3f, 1e-4f);
        float *all[] = {x, w, b, y, yr, dy, dx, dxr, dw, dwr, db, dbr};
        for (size_t i = 0; i < 12; i++) mni_free(all[i]);
    }
}

/* The own gemm (kern/gemm.c) directly, both layouts of B and every epilogue, on shapes that
 * cut every block of it: rows not a multiple of 6, columns not a multiple of 16, K across the
 * 256 block; and fewer than 32 rows (the unpacked gemm_rows of the forward layout: columns not
 * a multiple of 4, K not a multiple of 8). The reference is a double-precision loop. On an AVX2
 * build mni_gemm must run (a -1 there would hide the kernel behind the cblas fallback), except
 * for fewer than 32 rows in the backward layout, which it leaves to cblas. */
static void test_gemm_own(void **state)
{
    (void)state;
    const size_t shapes[][3] = {{32, 16, 1},   {37, 17, 5},  {100, 40, 256}, {61, 130, 257},
                                {50, 1, 600},  {32, 33, 513}, {1, 7, 3},     {1, 257, 128},
                                {3, 18, 77},   {31, 130, 513}}; /* M, N, K */
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        const size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *a = fnew(M * K), *b = fnew(N * K), *bias = fnew(N), *res = fnew(M * N),
              *pre = fnew(M * N), *c = fnew(M * N), *g = fnew(M * N), *want = fnew(M * N),
              *wantg = fnew(M * N);
        tu_fill_normal(a, M * K, 1, 31);
        tu_fill_normal(b, N * K, 0.2f, 32);
        tu_fill_normal(bias, N, 1, 33);
        tu_fill_normal(res, M * N, 1, 34);
        tu_fill_normal(pre, M * N, 2, 35);
        for (int transb = 0; transb < 2; transb++)
            for (int epi = 0; epi < 6; epi++) {
                struct mni_gemm_epi e = {0};
                if (epi == 1) e.bias = bias;
                if (epi == 2) e.bias = bias, e.res = res;
                if (epi == 3) e.bias = bias, e.gelu_out = g;
                if (epi == 4) e.gelu_pre = pre;
                if (epi == 5) e.res = res;
                for (size_t i = 0; i < M; i++)
                    for (size_t j = 0; j < N; j++) {
                        double acc = 0;
                        for (size_t k = 0; k < K; k++)
                            acc += (double)a[i * K + k] * (transb ? b[j * K + k] : b[k * N + j]);
                        if (e.bias) acc += bias[j];
                        if (e.res) acc += res[i * N + j];
                        want[i * N + j] = (float)acc;
                    }
                if (e.gelu_out) mni_gelu_fwd_ref(wantg, want, M * N);
                if (e.gelu_pre) mni_gelu_bwd_ref(want, pre, want, M * N);
                tu_fill_normal(c, M * N, 9, 36); /* C's old contents must not matter */
                int rc = mni_gemm(c, a, b, transb, M, N, K, &e);
                if (!MNI_HAVE_AVX2 || (M < 32 && !transb)) {
                    assert_int_equal(rc, -1);
                    continue;
                }
                assert_int_equal(rc, 0);
                TU_ASSERT_CLOSE("gemm", c, want, M * N, 1e-4f, 1e-4f);
                if (e.gelu_out) TU_ASSERT_CLOSE("gemm gelu_out", g, wantg, M * N, 1e-4f, 1e-4f);
            }
        /* the backward layout with too few rows to pay for packing: refused, C untouched */
        tu_fill_normal(c, M * N, 9, 36);
        memcpy(want, c, M * N * sizeof(float));
        if (M >= 3) assert_int_equal(mni_gemm(c, a, b, 0, 3, N, K, NULL), -1);
        TU_ASSERT_CLOSE("gemm refused", c, want, M * N, 0, 0);
        float *all[] = {a, b, bias, res, pre, c, g, want, wantg};
        for (size_t i = 0; i < 9; i++) mni_free(all[i]);
    }
}

/* mni_mm against a plain fmaf loop in the same order, bit for bit: A and A^T (two strides),
 * widths on the vector path (multiples of 8, 16-column blocks and an 8-column tail) and off it,
 * row counts around the 6-row blocks, per-row and scalar alpha, overwrite and accumulate. A row
 * must not depend on the other rows of the call (the infini session relies on it). */
static void test_mm(void **state)
{
    (void)state;
    const int shapes[][3] = {{1, 5, 8}, {7, 33, 24}, {13, 64, 32}, {6, 3, 6}, {20, 17, 40}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
        const int M = shapes[s][0], K = shapes[s][1], N = shapes[s][2], ldb = N + 3, ldc = N + 5;
        float *a = fnew((size_t)M * K), *b = fnew((size_t)K * ldb), *al = fnew((size_t)M);
        float *c = fnew((size_t)M * ldc), *want = fnew((size_t)M * ldc), *c1 = fnew((size_t)ldc);
        tu_fill_normal(a, (size_t)M * K, 1, 41 + s);
        tu_fill_normal(b, (size_t)K * ldb, 1, 42 + s);
        tu_fill_normal(al, (size_t)M, 1, 43 + s);
        for (int trans = 0; trans < 2; trans++)
            for (int acc = 0; acc < 2; acc++)
                for (int pr = 0; pr < 2; pr++) {
                    /* trans: a holds A^T (K,M), read with a_ms = 1, a_ks = M */
                    const size_t ms = trans ? 1 : (size_t)K, ks = trans ? (size_t)M : 1;
                    tu_fill_normal(c, (size_t)M * ldc, 1, 44 + s);
                    memcpy(want, c, (size_t)M * ldc * sizeof(float));
                    for (int m = 0; m < M; m++)
                        for (int n = 0; n < N; n++) {
                            float sum = 0.0f;
                            for (int k = 0; k < K; k++)
                                sum = fmaf(a[m * ms + k * ks], b[(size_t)k * ldb + n], sum);
                            float *w = want + (size_t)m * ldc + n;
                            *w = fmaf(pr ? al[m] : 0.7f, sum, acc ? *w : 0.0f);
                        }
                    memcpy(c1, c + (size_t)(M - 1) * ldc, (size_t)ldc * sizeof(float));
                    mni_mm(c, (size_t)ldc, a, ms, ks, b, (size_t)ldb, M, K, N, pr ? al : NULL,
                           0.7f, acc);
                    TU_ASSERT_CLOSE("mm", c, want, (size_t)M * ldc, 0, 0);
                    /* the last row alone (from its contents before the call): the same bits */
                    mni_mm(c1, (size_t)ldc, a + (size_t)(M - 1) * ms, ms, ks, b, (size_t)ldb, 1,
                           K, N, pr ? al + M - 1 : NULL, 0.7f, acc);
                    TU_ASSERT_CLOSE("mm row", c1, want + (size_t)(M - 1) * ldc, (size_t)N, 0, 0);
                }
        float *all[] = {a, b, al, c, want, c1};
        for (size_t i = 0; i < 6; i++) mni_free(all[i]);
    }
}

/* The fused GELU entry points against the unfused composition of references, on both paths
 * (N = 5: cblas fallback; N = 70: own gemm). */
static void test_matmul_gelu(void **state)
{
    (void)state;
    for (size_t N = 5; N <= 70; N += 65) {
        const size_t C = 24, OC = 4 * C;
        float *x = fnew(N * C), *w = fnew(OC * C), *b = fnew(OC), *pre = fnew(N * OC),
              *out = fnew(N * OC), *prer = fnew(N * OC), *outr = fnew(N * OC);
        tu_fill_normal(x, N * C, 1, 41);
        tu_fill_normal(w, OC * C, 0.3f, 42);
        tu_fill_normal(b, OC, 1, 43);
        mni_matmul_fwd_gelu(pre, out, x, w, b, N, C, OC);
        mni_matmul_fwd_ref(prer, x, w, b, N, C, OC);
        mni_gelu_fwd_ref(outr, prer, N * OC);
        TU_ASSERT_CLOSE("matmul+gelu pre", pre, prer, N * OC, 1e-4f, 1e-4f);
        TU_ASSERT_CLOSE("matmul+gelu out", out, outr, N * OC, 1e-4f, 1e-4f);
        /* a projection back from OC to C whose input was gelu(pre) */
        float *w2 = fnew(C * OC), *dy = fnew(N * C), *dx = fnew(N * OC), *dxr = fnew(N * OC),
              *dw = fnew(C * OC), *dwr = fnew(C * OC), *db = fnew(C), *dbr = fnew(C);
        tu_fill_normal(w2, C * OC, 0.3f, 44);
        tu_fill_normal(dy, N * C, 1, 45);
        mni_matmul_bwd_gelu(dx, dw, db, dy, out, w2, pre, N, OC, C);
        mni_matmul_bwd_ref(dxr, dwr, dbr, dy, outr, w2, N, OC, C);
        mni_gelu_bwd_ref(dxr, prer, dxr, N * OC);
        TU_ASSERT_CLOSE("matmul+gelu dinp", dx, dxr, N * OC, 1e-4f, 1e-4f);
        TU_ASSERT_CLOSE("matmul+gelu dw", dw, dwr, C * OC, 1e-3f, 1e-4f);
        TU_ASSERT_CLOSE("matmul+gelu db", db, dbr, C, 1e-3f, 1e-4f);
        float *all[] = {x, w, b, pre, out, prer, outr, w2, dy, dx, dxr, dw, dwr, db, dbr};
        for (size_t i = 0; i < 15; i++) mni_free(all[i]);
    }
}

/* d/dx of sum(out * g) by central differences in float, compared loosely (float noise). */
static void test_layernorm(void **state)
{
    (void)state;
    const size_t N = 37, C = 70;
    float *x = fnew(N * C), *w = fnew(C), *b = fnew(C), *y = fnew(N * C), *yr = fnew(N * C);
    float *mean = fnew(N), *rstd = fnew(N), *meanr = fnew(N), *rstdr = fnew(N);
    float *dy = fnew(N * C), *dx = fnew(N * C), *dxr = fnew(N * C), *dw = fnew(C), *dwr = fnew(C),
          *db = fnew(C), *dbr = fnew(C);
    tu_fill_normal(x, N * C, 2, 11);
    for (size_t i = 0; i < N * C; i++) x[i] += 3.0f; /* non-zero mean */
    tu_fill_normal(w, C, 1, 12);
    tu_fill_normal(b, C, 1, 13);
    tu_fill_normal(dy, N * C, 1, 14);
    mni_layernorm_fwd(y, mean, rstd, x, w, b, N, C);
    mni_layernorm_fwd_ref(yr, meanr, rstdr, x, w, b, N, C);
    TU_ASSERT_CLOSE("ln fwd", y, yr, N * C, 1e-5f, 1e-5f);
    TU_ASSERT_CLOSE("ln mean", mean, meanr, N, 1e-5f, 1e-5f);
    TU_ASSERT_CLOSE("ln rstd", rstd, rstdr, N, 1e-5f, 1e-5f);
    mni_layernorm_bwd(dx, dw, db, dy, x, w, mean, rstd, N, C);
    mni_layernorm_bwd_ref(dxr, dwr, dbr, dy, x, w, meanr, rstdr, N, C);
    TU_ASSERT_CLOSE("ln dx", dx, dxr, N * C, 1e-4f, 1e-4f);
    TU_ASSERT_CLOSE("ln dw", dw, dwr, C, 1e-4f, 1e-4f);
    TU_ASSERT_CLOSE("ln db", db, dbr, C, 1e-4f, 1e-4f);
    /* the reference backward against finite differences (loss = sum y*dy, in double) */
    const size_t n1 = 3; /* rows checked */
    for (size_t i = 0; i < n1 * C; i += 7) {
        float keep = x[i];
        double lp = 0, lm = 0, h = 1e-2;
        x[i] = keep + (float)h;
        mni_layernorm_fwd_ref(yr, NULL, NULL, x, w, b, n1, C);
        for (size_t k = 0; k < n1 * C; k++) lp += (double)yr[k] * dy[k];
        x[i] = keep - (float)h;
        mni_layernorm_fwd_ref(yr, NULL, NULL, x, w, b, n1, C);
        for (size_t k = 0; k < n1 * C; k++) lm += (double)yr[k] * dy[k];
        x[i] = keep;
        float fd = (float)((lp - lm) / (2 * h));
        assert_true(fabsf(fd - dxr[i]) <= 2e-3f + 2e-2f * fabsf(dxr[i]));
    }
    float *all[] = {x, w, b, y, yr, mean, rstd, meanr, rstdr, dy, dx, dxr, dw, dwr, db, dbr};
    for (size_t i = 0; i < 16; i++) mni_free(all[i]);
}

static void test_gelu(void **state)
{
    (void)state;
    const size_t n = 4099;
    float *x = fnew(n), *y = fnew(n), *yr = fnew(n), *dy = fnew(n), *dx = fnew(n), *dxr = fnew(n);
    tu_fill_normal(x, n, 4, 21);
    x[0] = 0;
    x[1] = 30;
    x[2] = -30;
    tu_fill_normal(dy, n, 1, 22);
    mni_gelu_fwd(y, x, n);
    mni_gelu_fwd_ref(yr, x, n);
    TU_ASSERT_CLOSE("gelu fwd", y, yr, n, 1e-6f, 1e-5f);
    mni_gelu_bwd(dx, x, dy, n);
    mni_gelu_bwd_ref(dxr, x, dy, n);
    TU_ASSERT_CLOSE("gelu bwd", dx, dxr, n, 1e-5f, 1e-5f);
    for (size_t i = 0; i < 200; i++) {
        double h = 1e-3, xi = x[i];
        float a = (float)(xi + h), b = (float)(xi - h), ya, yb;
        mni_gelu_fwd_ref(&ya, &a, 1);
        mni_gelu_fwd_ref(&yb, &b, 1);
        double fd = ((double)ya - yb) / ((double)a - b) * dy[i];
        assert_true(fabs(fd - dxr[i]) <= 2e-3 + 1e-2 * fabs(dxr[i]));
    }
    /* aliasing dinp == dout is allowed */
    memcpy(dx, dy, n * sizeof(float));
    mni_gelu_bwd(dx, x, dx, n);
    TU_ASSERT_CLOSE("gelu bwd in place", dx, dxr, n, 1e-5f, 1e-5f);
    float *all[] = {x, y, yr, dy, dx, dxr};
    for (size_t i = 0; i < 6; i++) mni_free(all[i]);
}

static void test_xent(void **state)
{
    (void)state;
    const size_t N = 50, V = 257, Vp = 272;
    float *z = fnew(N * Vp), *d = fnew(N * Vp), *dr = fnew(N * Vp), *l = fnew(N), *lr = fnew(N);
    uint16_t tgt[50];
    tu_fill_normal(z, N * Vp, 3, 31);
    for (size_t n = 0; n < N; n++) {
        tgt[n] = (uint16_t)((n * 37) % V);
        for (size_t v = V; v < Vp; v++) z[n * Vp + v] = 1000.0f; /* padding must be ignored */
    }
    double s = mni_xent_fwd_bwd(d, l, z, tgt, 0.5f, N, V, Vp);
    double sr = mni_xent_fwd_bwd_ref(dr, lr, z, tgt, 0.5f, N, V, Vp);
    assert_true(fabs(s - sr) < 1e-4 * fabs(sr));
    TU_ASSERT_CLOSE("xent losses", l, lr, N, 1e-5f, 1e-5f);
    TU_ASSERT_CLOSE("xent dlogits", d, dr, N * Vp, 1e-6f, 1e-5f);
    /* finite differences of the reference loss */
    for (size_t i = 0; i < 300; i += 13) {
        size_t n = i / V, v = i % V;
        float keep = z[n * Vp + v];
        double h = 1e-2;
        z[n * Vp + v] = keep + (float)h;
        double lp = mni_xent_fwd_bwd_ref(NULL, NULL, z, tgt, 0, N, V, Vp);
        z[n * Vp + v] = keep - (float)h;
        double lm = mni_xent_fwd_bwd_ref(NULL, NULL, z, tgt, 0, N, V, Vp);
        z[n * Vp + v] = keep;
        double fd = 0.5 * (lp - lm) / (2 * h);
        assert_true(fabs(fd - dr[n * Vp + v]) < 1e-4 + 1e-2 * fabs(fd));
    }
    /* in place: dlogits may alias logits */
    mni_xent_fwd_bwd(z, NULL, z, tgt, 0.5f, N, V, Vp);
    TU_ASSERT_CLOSE("xent in place", z, dr, N * Vp, 1e-6f, 1e-5f);
    float *all[] = {z, d, dr, l, lr};
    for (size_t i = 0; i < 5; i++) mni_free(all[i]);
}

static void test_adamw(void **state)
{
    (void)state;
    const size_t n = 1000;
    float *p = fnew(n), *m = fnew(n), *v = fnew(n), *g = fnew(n);
    float *pr = fnew(n), *mr = fnew(n), *vr = fnew(n);
    tu_fill_normal(p, n, 1, 41);
    memcpy(pr, p, n * sizeof(float));
    for (int t = 1; t <= 5; t++) {
        tu_fill_normal(g, n, 0.1f, 41 + (uint64_t)t);
        float bc1 = 1 - powf(0.9f, (float)t), bc2 = 1 - powf(0.95f, (float)t);
        mni_adamw(p, m, v, g, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, bc1, bc2);
        mni_adamw_ref(pr, mr, vr, g, n, 1e-2f, 0.9f, 0.95f, 1e-8f, 0.1f, bc1, bc2);
    }
    TU_ASSERT_CLOSE("adamw p", p, pr, n, 1e-6f, 1e-5f);
    TU_ASSERT_CLOSE("adamw m", m, mr, n, 1e-7f, 1e-5f);
    TU_ASSERT_CLOSE("adamw v", v, vr, n, 1e-9f, 1e-5f);
    /* first step by hand: m = 0.1 g, v = 0.05 g^2, update = lr * sign(g) (bias-corrected) */
    float p1 = 1.0f, m1 = 0, v1 = 0, g1 = 0.3f;
    mni_adamw(&p1, &m1, &v1, &g1, 1, 0.1f, 0.9f, 0.95f, 1e-8f, 0.0f, 0.1f, 0.05f);
    assert_float_equal(p1, 0.9f, 1e-6f);
    float *all[] = {p, m, v, g, pr, mr, vr};
    for (size_t i = 0; i < 7; i++) mni_free(all[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_fwd_bwd), cmocka_unit_test(test_gemm_own),
        cmocka_unit_test(test_matmul_gelu),    cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_gelu),           cmocka_unit_test(test_xent),
        cmocka_unit_test(test_adamw),          cmocka_unit_test(test_mm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
