/*
 * test_rope.c -- RoPE helpers: the table equals the single cos/sin definition bit for bit, the
 * inverse rotation undoes the forward one, a hand-computed rotation, and the property that
 * makes RoPE relative (q.k depends only on the position difference).
 */
#include <math.h>
#include <string.h>

#include "kern/kern.h"
#include "testutil.h"

static void test_table_equals_cs(void **state)
{
    const int HS_list[] = {2, 6, 10, 16, 64, 128}; // tails of the 4-wide path too
    for (size_t k = 0; k < sizeof(HS_list) / sizeof(HS_list[0]); k++) {
        int HS = HS_list[k], n_pos = 300; // > 8192 pairs: the threaded branch too
        float *cs = mni_alloc(sizeof(float) * (size_t)n_pos * HS);
        assert_non_null(cs);
        mni_rope_table(cs, n_pos, HS, 10000.0f);
        for (int p = 0; p < n_pos; p++) {
            for (int i = 0; i < HS / 2; i++) {
                float c, s;
                mni_rope_cs(&c, &s, p, i, HS, 10000.0f);
                const float *t = cs + (size_t)p * HS + 2 * i;
                if (memcmp(&c, &t[0], sizeof(c)) || memcmp(&s, &t[1], sizeof(s)))
                    fail_msg("HS=%d pos=%d i=%d: table (%.9g,%.9g) != cs (%.9g,%.9g)", HS, p, i,
                             t[0], t[1], c, s);
            }
        }
        mni_free(cs);
    }
}

/* Our double cos/sin rounds to the same float as libm's (up to rare 1-ulp ties). */
static void test_matches_libm(void **state)
{
    long n = 0, differ = 0;
    const int HS_list[] = {16, 64, 128, 256};
    for (size_t k = 0; k < 4; k++) {
        int HS = HS_list[k];
        for (int pos = 0; pos < 1200000; pos = pos < 9000 ? pos + 1 : pos + 997) {
            for (int i = 0; i < HS / 2; i++) {
                float c, s;
                mni_rope_cs(&c, &s, pos, i, HS, 10000.0f);
                double a = (double)pos * pow(10000.0, -2.0 * i / HS);
                float cl = (float)cos(a), sl = (float)sin(a);
                n += 2;
                differ += (c != cl) + (s != sl);
                if (fabsf(c - cl) > 6e-8f || fabsf(s - sl) > 6e-8f)
                    fail_msg("pos %d i %d HS %d: (%.9g, %.9g) vs libm (%.9g, %.9g)", pos, i, HS,
                             c, s, cl, sl);
            }
        }
    }
    print_message("rope cs vs libm: %ld of %ld values differ (by one ulp)\n", differ, n);
    assert_true(differ <= n / 100000);
}

static void test_hand_value(void **state)
{
    // HS=4, pos=3, theta=1e4: pair 0 turns by 3 rad, pair 1 by 3*1e4^(-1/2) = 0.03 rad
    float c, s;
    mni_rope_cs(&c, &s, 3, 0, 4, 10000.0f);
    assert_float_equal(c, -0.9899924966004454, 1e-7);
    assert_float_equal(s, 0.1411200080598672, 1e-7);
    mni_rope_cs(&c, &s, 3, 1, 4, 10000.0f);
    assert_float_equal(c, 0.9995500337489875, 1e-7);
    assert_float_equal(s, 0.02999550020249566, 1e-7);
    // large positions: the angle is formed in double (a float angle would be off by ~1e-3)
    mni_rope_cs(&c, &s, 100000, 0, 64, 10000.0f);
    assert_float_equal(c, (float)cos(100000.0), 1e-7);
    assert_float_equal(s, (float)sin(100000.0), 1e-7);

    float cs[4], x[4] = {1, 2, 3, 4};
    mni_rope_table(cs, 1, 4, 10000.0f); // row of position 0 is the identity
    mni_rope_apply(x, cs, 4, +1);
    assert_float_equal(x[0], 1.0f, 0), assert_float_equal(x[3], 4.0f, 0);
    float tab[4 * 4];
    mni_rope_table(tab, 4, 4, 10000.0f);
    mni_rope_apply(x, tab + 3 * 4, 4, +1);
    const float want[4] = {-1.413352520780047f, 1.8791180666879925f, -2.828857481741469f,
                           4.058191135400942f};
    TU_ASSERT_CLOSE("rope(pos 3)", x, want, 4, 1e-6f, 1e-6f);
}

static void test_inverse_and_transpose(void **state)
{
    const int HS = 64, n_pos = 50;
    float *cs = mni_alloc(sizeof(float) * n_pos * HS);
    mni_rope_table(cs, n_pos, HS, 10000.0f);
    float x[64], y[64], x0[64];
    tu_fill_normal(x0, HS, 1.0f, 1);
    tu_fill_normal(y, HS, 1.0f, 2);
    for (int p = 0; p < n_pos; p++) {
        memcpy(x, x0, sizeof(x));
        mni_rope_apply(x, cs + p * HS, HS, +1);
        // a rotation keeps the norm
        double n0 = 0, n1 = 0;
        for (int d = 0; d < HS; d++) n0 += (double)x0[d] * x0[d], n1 += (double)x[d] * x[d];
        assert_true(fabs(n0 - n1) < 1e-5 * n0);
        // <R x, y> = <x, R^T y>: sign -1 is the transpose
        float yt[64];
        memcpy(yt, y, sizeof(yt));
        mni_rope_apply(yt, cs + p * HS, HS, -1);
        double a = 0, b = 0;
        for (int d = 0; d < HS; d++) a += (double)x[d] * y[d], b += (double)x0[d] * yt[d];
        assert_true(fabs(a - b) < 1e-5 * (fabs(a) + 1));
        // and the inverse
        mni_rope_apply(x, cs + p * HS, HS, -1);
        TU_ASSERT_CLOSE("inverse round trip", x, x0, HS, 1e-6f, 1e-6f);
    }
    mni_free(cs);
}

static void test_relative(void **state)
{
    // rot(q, p+d) . rot(k, p) depends only on d
    const int HS = 32, n_pos = 40;
    float *cs = mni_alloc(sizeof(float) * n_pos * HS);
    mni_rope_table(cs, n_pos, HS, 10000.0f);
    float q0[32], k0[32];
    tu_fill_normal(q0, HS, 1.0f, 3);
    tu_fill_normal(k0, HS, 1.0f, 4);
    for (int d = 0; d < 5; d++) {
        double first = 0;
        for (int p = 0; p + d < n_pos; p++) {
            float q[32], k[32];
            memcpy(q, q0, sizeof(q)), memcpy(k, k0, sizeof(k));
            mni_rope_apply(q, cs + (p + d) * HS, HS, +1);
            mni_rope_apply(k, cs + p * HS, HS, +1);
            double dot = 0;
            for (int i = 0; i < HS; i++) dot += (double)q[i] * k[i];
            if (p == 0) first = dot;
            assert_true(fabs(dot - first) < 2e-5 * (fabs(first) + 1));
        }
    }
    mni_free(cs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_equals_cs),
        cmocka_unit_test(test_matches_libm),
        cmocka_unit_test(test_hand_value),
        cmocka_unit_test(test_inverse_and_transpose),
        cmocka_unit_test(test_relative),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
