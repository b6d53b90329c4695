/*
 * rope.c -- rotary position embeddings (RoFormer, Su et al. 2021), GPT-NeoX "rotate half"
 * convention: the head vector x (HS) is split into halves, and pair i couples x[i] with
 * x[i + HS/2]:
 *
 *     angle(pos, i) = pos * theta^(-2i/HS)                        i in [0, HS/2)
 *     (x[i], x[i+HS/2]) <- (x[i] cos - x[i+HS/2] sin,  x[i] sin + x[i+HS/2] cos)
 *
 * Every RoPE path in the library (training forward, streaming step, references, tests) takes
 * its (cos, sin) from mni_rope_cs or from mni_rope_table, which evaluate exactly the same
 * operations, so that a token rotated during training and the same token rotated in a session
 * get bit-identical factors. Angles and cos/sin are computed in double and rounded once to
 * float: at pos ~ 1e4 a float angle would already be off by ~1e-3 rad.
 *
 * cos/sin are our own double-precision evaluation rather than libm's, because a table of
 * T*HS/2 libm calls (~18 ns each) cost 10% of a T=512 attention forward, and because the same
 * operations can then run 4 lanes wide in the table and one at a time in mni_rope_cs with
 * bit-identical results. Reduction by pi/2 in two double parts with FMA (exact enough for
 * angles up to ~1e9 rad), then Taylor polynomials on [-pi/4, pi/4] to r^15 (sin) and r^16
 * (cos): truncation < 5e-17, so the double results are within ~2 ulp of the true values and
 * round to the same float as the correctly rounded ones except within ~1e-16 of a float
 * rounding boundary (a test compares against libm).
 */
#include <math.h>
#include <stdint.h>

#include "kern/kern.h"

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define ROPE_AVX2 1
#else
#define ROPE_AVX2 0
#endif

#define TWO_OVER_PI 0.6366197723675814
#define PIO2_HI 1.5707963267948966     /* pi/2 rounded to double */
#define PIO2_LO 6.123233995736766e-17  /* pi/2 - PIO2_HI, rounded */

/* Taylor coefficients (-1)^k / (2k+1)! and (-1)^k / (2k)! */
#define S3 (-1.0 / 6.0)
#define S5 (1.0 / 120.0)
#define S7 (-1.0 / 5040.0)
#define S9 (1.0 / 362880.0)
#define S11 (-1.0 / 39916800.0)
#define S13 (1.0 / 6227020800.0)
#define S15 (-1.0 / 1307674368000.0)
#define C4 (1.0 / 24.0)
#define C6 (-1.0 / 720.0)
#define C8 (1.0 / 40320.0)
#define C10 (-1.0 / 3628800.0)
#define C12 (1.0 / 479001600.0)
#define C14 (-1.0 / 87178291200.0)
#define C16 (1.0 / 20922789888000.0)

/* theta^(-2i/HS) in double. Shared by mni_rope_cs and mni_rope_table. */
static double rope_inv_freq(int i, int HS, float theta)
{
    return pow((double)theta, -2.0 * (double)i / (double)HS);
}

/* sin and cos of x in double; the vector version below performs the same operations. */
static void sincos_d(double x, double *sn, double *cs)
{
    double k = nearbyint(x * TWO_OVER_PI);
    double r = fma(-k, PIO2_HI, x);
    r = fma(-k, PIO2_LO, r);
    double r2 = r * r;
    double p = S15;
    p = fma(p, r2, S13), p = fma(p, r2, S11), p = fma(p, r2, S9), p = fma(p, r2, S7);
    p = fma(p, r2, S5), p = fma(p, r2, S3);
    double s = fma(r * r2, p, r);
    double q = C16;
    q = fma(q, r2, C14), q = fma(q, r2, C12), q = fma(q, r2, C10), q = fma(q, r2, C8);
    q = fma(q, r2, C6), q = fma(q, r2, C4);
    double c = fma(r2 * r2, q, fma(-0.5, r2, 1.0));
    // quadrant: x = k pi/2 + r
    unsigned quad = (unsigned)(int64_t)k & 3u;
    double so = quad & 1 ? c : s, co = quad & 1 ? s : c;
    *sn = quad & 2 ? -so : so;
    *cs = (quad + 1) & 2 ? -co : co;
}

#if ROPE_AVX2
static void sincos_d4(__m256d x, __m256d *sn, __m256d *cs)
{
    __m256d k = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(TWO_OVER_PI)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d nk = _mm256_sub_pd(_mm256_setzero_pd(), k);
    __m256d r = _mm256_fmadd_pd(nk, _mm256_set1_pd(PIO2_HI), x);
    r = _mm256_fmadd_pd(nk, _mm256_set1_pd(PIO2_LO), r);
    __m256d r2 = _mm256_mul_pd(r, r);
#define FMA_C(p, c) _mm256_fmadd_pd(p, r2, _mm256_set1_pd(c))
    __m256d p = _mm256_set1_pd(S15);
    p = FMA_C(p, S13), p = FMA_C(p, S11), p = FMA_C(p, S9), p = FMA_C(p, S7);
    p = FMA_C(p, S5), p = FMA_C(p, S3);
    __m256d s = _mm256_fmadd_pd(_mm256_mul_pd(r, r2), p, r);
    __m256d q = _mm256_set1_pd(C16);
    q = FMA_C(q, C14), q = FMA_C(q, C12), q = FMA_C(q, C10), q = FMA_C(q, C8);
    q = FMA_C(q, C6), q = FMA_C(q, C4);
#undef FMA_C
    __m256d c = _mm256_fmadd_pd(_mm256_mul_pd(r2, r2), q,
                                _mm256_fmadd_pd(_mm256_set1_pd(-0.5), r2, _mm256_set1_pd(1.0)));
    __m256i quad = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(k));
    __m256d swap = _mm256_castsi256_pd(
        _mm256_cmpeq_epi64(_mm256_and_si256(quad, _mm256_set1_epi64x(1)), _mm256_set1_epi64x(1)));
    __m256d sneg = _mm256_castsi256_pd(
        _mm256_slli_epi64(_mm256_and_si256(quad, _mm256_set1_epi64x(2)), 62));
    __m256d cneg = _mm256_castsi256_pd(_mm256_slli_epi64(
        _mm256_and_si256(_mm256_add_epi64(quad, _mm256_set1_epi64x(1)), _mm256_set1_epi64x(2)),
        62));
    *sn = _mm256_xor_pd(_mm256_blendv_pd(s, c, swap), sneg);
    *cs = _mm256_xor_pd(_mm256_blendv_pd(c, s, swap), cneg);
}
#endif

void mni_rope_cs(float *c, float *s, int pos, int i, int HS, float theta)
{
    double sd, cd;
    sincos_d((double)pos * rope_inv_freq(i, HS, theta), &sd, &cd);
    *c = (float)cd;
    *s = (float)sd;
}

void mni_rope_table(float *cs, int n_pos, int HS, float theta)
{
    int half = HS / 2;
    if (half <= 0 || n_pos <= 0) return;
    /* The frequencies depend only on i, so pow() runs HS/2 times; HS is at most a few
     * hundred (a larger HS falls back to computing them per entry). */
    double inv[512];
    const int nf = half < 512 ? half : 512;
    for (int i = 0; i < nf; i++) inv[i] = rope_inv_freq(i, HS, theta);
#pragma omp parallel for schedule(static) if ((long)n_pos * half > 8192)
    for (int p = 0; p < n_pos; p++) {
        float *row = cs + (size_t)p * (size_t)half * 2; // (HS/2, 2)
        int i = 0;
#if ROPE_AVX2
        const __m256d pos = _mm256_set1_pd((double)p);
        for (; i + 4 <= nf; i += 4) {
            __m256d sd, cd;
            sincos_d4(_mm256_mul_pd(pos, _mm256_loadu_pd(inv + i)), &sd, &cd);
            __m128 cf = _mm256_cvtpd_ps(cd), sf = _mm256_cvtpd_ps(sd);
            _mm_storeu_ps(row + 2 * i, _mm_unpacklo_ps(cf, sf));     // c0 s0 c1 s1
            _mm_storeu_ps(row + 2 * i + 4, _mm_unpackhi_ps(cf, sf)); // c2 s2 c3 s3
        }
#endif
        for (; i < half; i++) {
            double f = i < nf ? inv[i] : rope_inv_freq(i, HS, theta), sd, cd;
            sincos_d((double)p * f, &sd, &cd);
            row[2 * i] = (float)cd;
            row[2 * i + 1] = (float)sd;
        }
    }
}

void mni_rope_apply_d(double *x, int pos, int HS, float theta, int sign)
{
    const int half = HS / 2;
    for (int i = 0; i < half; i++) {
        float cf, sf;
        mni_rope_cs(&cf, &sf, pos, i, HS, theta);
        const double c = cf, s = (sign < 0 ? -1.0 : 1.0) * sf, x0 = x[i], x1 = x[i + half];
        x[i] = x0 * c - x1 * s;
        x[i + half] = x0 * s + x1 * c;
    }
}

void mni_rope_apply(float *x, const float *cs_row, int HS, int sign)
{
    int half = HS / 2;
    float sg = sign < 0 ? -1.0f : 1.0f;
    for (int i = 0; i < half; i++) {
        float c = cs_row[2 * i], s = sg * cs_row[2 * i + 1];
        float x0 = x[i], x1 = x[i + half];
        // sign -1 uses R(-angle) = R(angle)^T, the transpose needed by backward
        x[i] = x0 * c - x1 * s;
        x[i + half] = x0 * s + x1 * c;
    }
}
