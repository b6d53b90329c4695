/*
 * vmath.h -- vectorised elementary functions for the kernels (internal): 2^x (and from it e^x)
 * for AVX2/FMA, with a scalar twin that gives the same results lane for lane.
 *
 * 2^x = 2^n * 2^f with n = round(x), f in [-0.5, 0.5]; 2^f by a degree-5 polynomial 1 + f q(f)
 * fitted for relative error (9e-8 in exact arithmetic, 1.6e-7 evaluated in float with FMA,
 * exactly 1 at f = 0); 2^n is built in the exponent bits. x is clamped to [-127, 127]: -127
 * gives exactly 0 for practical purposes (2^-127 is subnormal-adjacent and flushes in the
 * products that use it), and nothing overflows into the sign bit.
 */
#ifndef MNI_VMATH_H
#define MNI_VMATH_H

#include <math.h>
#include <stdint.h>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define MNI_HAVE_AVX2 1
/* Left alone, gcc folds the load of a kernel's wide operand into every FMA that uses it (the
 * same load again for each row of a register tile), which makes micro-kernels load-bound. An
 * empty asm that claims to change the vector keeps it in a register; it changes no arithmetic. */
#define MNI_PIN(x) __asm__("" : "+x"(x))
#else
#define MNI_HAVE_AVX2 0
#endif

#define MNI_EXP2_C0 1.0f
#define MNI_EXP2_C1 6.931470037e-01f
#define MNI_EXP2_C2 2.402224243e-01f
#define MNI_EXP2_C3 5.550733581e-02f
#define MNI_EXP2_C4 9.671512991e-03f
#define MNI_EXP2_C5 1.326472731e-03f
#define MNI_LOG2E 1.4426950408889634f

static inline float mni_exp2f(float x)
{
    x = x < -127.0f ? -127.0f : (x > 127.0f ? 127.0f : x);
    float n = nearbyintf(x), f = x - n;
    float p = MNI_EXP2_C5;
    p = fmaf(p, f, MNI_EXP2_C4);
    p = fmaf(p, f, MNI_EXP2_C3);
    p = fmaf(p, f, MNI_EXP2_C2);
    p = fmaf(p, f, MNI_EXP2_C1);
    p = fmaf(p, f, MNI_EXP2_C0);
    union {
        uint32_t u;
        float f;
    } e = {.u = (uint32_t)((int32_t)n + 127) << 23};
    return p * e.f;
}

static inline float mni_expf(float x) { return mni_exp2f(x * MNI_LOG2E); }

#if MNI_HAVE_AVX2
static inline __m256 mni_exp2_ps(__m256 x)
{
    const __m256 magic = _mm256_set1_ps(12582912.0f); /* 1.5 * 2^23: adding it rounds to int */
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-127.0f)), _mm256_set1_ps(127.0f));
    __m256 t = _mm256_add_ps(x, magic);
    __m256i ni = _mm256_sub_epi32(_mm256_castps_si256(t), _mm256_castps_si256(magic));
    __m256 f = _mm256_sub_ps(x, _mm256_sub_ps(t, magic));
    __m256 p = _mm256_set1_ps(MNI_EXP2_C5);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(MNI_EXP2_C4));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(MNI_EXP2_C3));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(MNI_EXP2_C2));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(MNI_EXP2_C1));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(MNI_EXP2_C0));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(ni, _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline __m256 mni_exp_ps(__m256 x)
{
    return mni_exp2_ps(_mm256_mul_ps(x, _mm256_set1_ps(MNI_LOG2E)));
}

/* Horizontal sum and max of 8 lanes. */
static inline float mni_hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline float mni_hmax_ps(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
#endif

#define MNI_GELU_K 0.7978845608028654f /* sqrt(2/pi) */
#define MNI_GELU_A 0.044715f

#if MNI_HAVE_AVX2
/* GELU, tanh approximation: gelu(x) = 0.5 x (1 + tanh(u)), u = k (x + a x^3), and its derivative
 * 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 a x^2). tanh(u) = 1 - 2 / (e^{2u} + 1) with
 * |u| clamped at 9, where tanh is 1 to float precision. Used by kern/elementwise.c and by the
 * gemm epilogue (kern/gemm.c), so both give the same values. */
static inline __m256 mni_tanh_ps(__m256 u)
{
    u = _mm256_min_ps(_mm256_max_ps(u, _mm256_set1_ps(-9.0f)), _mm256_set1_ps(9.0f));
    __m256 e = mni_exp2_ps(_mm256_mul_ps(u, _mm256_set1_ps(2.0f * MNI_LOG2E)));
    __m256 one = _mm256_set1_ps(1.0f);
    return _mm256_sub_ps(one, _mm256_div_ps(_mm256_set1_ps(2.0f), _mm256_add_ps(e, one)));
}

static inline __m256 mni_gelu_ps(__m256 x)
{
    const __m256 k = _mm256_set1_ps(MNI_GELU_K), a = _mm256_set1_ps(MNI_GELU_A);
    __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    __m256 t = mni_tanh_ps(_mm256_mul_ps(k, _mm256_fmadd_ps(a, x3, x)));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x),
                         _mm256_add_ps(_mm256_set1_ps(1.0f), t));
}

static inline __m256 mni_gelu_grad_ps(__m256 x)
{
    const __m256 k = _mm256_set1_ps(MNI_GELU_K), a = _mm256_set1_ps(MNI_GELU_A);
    const __m256 h = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    const __m256 a3 = _mm256_set1_ps(3.0f * MNI_GELU_A);
    __m256 x2 = _mm256_mul_ps(x, x);
    __m256 t = mni_tanh_ps(_mm256_mul_ps(k, _mm256_fmadd_ps(_mm256_mul_ps(a, x2), x, x)));
    __m256 sech2 = _mm256_fnmadd_ps(t, t, one);
    __m256 g = _mm256_mul_ps(h, _mm256_add_ps(one, t));
    __m256 r = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(h, x), sech2),
                             _mm256_mul_ps(k, _mm256_fmadd_ps(a3, x2, one)));
    return _mm256_add_ps(g, r);
}
#endif

#endif /* MNI_VMATH_H */
