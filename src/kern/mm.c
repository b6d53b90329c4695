/*
 * mm.c -- small dense products for the attention kinds' tiles: C (M,N) = alpha * A (M,K) . B (K,N)
 * with N a multiple of 8 on the vector path (in practice HS, the head size), A addressed with
 * two strides, A[m * a_ms + k * a_ks], so that one kernel takes A or A^T without a copy.
 *
 * Register blocking (AVX2 + FMA): 6 rows x 16 columns of C in 12 ymm accumulators; per k, 2
 * loads of B and 6 broadcasts of A for 12 FMAs. Nothing is packed: the operands are tiles that
 * already sit in L1/L2 (selective attention's strips, infini's segments and memories), so
 * packing would cost more than it saves; large products go to kern/gemm.c or cblas.
 *
 * Each output's sum runs over k in order with one FMA per term from zero, then
 * C = fma(alpha, sum, C) (or fma(alpha, sum, 0) when overwriting): the same bits as a plain
 * loop in that order, on either path, whatever M, N and the row blocking. A row of C therefore
 * does not depend on which other rows share the call, which the infini kind's session relies
 * on (it reads the memory a piece of a segment at a time, training a segment at a time).
 */
#include <math.h>
#include <stddef.h>

#include "kern/kern.h"
#include "kern/vmath.h"

#if MNI_HAVE_AVX2

/* R (<= 6) rows x W (16 or 8) columns in 2R or R accumulators; R and W are constants after
 * inlining (mni_mm's switch), so the loops unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) void mm_block(float *C, size_t ldc, const float *A,
                                                           size_t a_ms, size_t a_ks,
                                                           const float *B, size_t ldb, int K,
                                                           const float *alpha, float alpha1,
                                                           int accumulate, const int R, const int W)
{
    __m256 acc[6][2];
    for (int u = 0; u < R; u++) acc[u][0] = acc[u][1] = _mm256_setzero_ps();
    for (int k = 0; k < K; k++) {
        const float *b = B + (size_t)k * ldb;
        __m256 b0 = _mm256_loadu_ps(b);
        __m256 b1 = W == 16 ? _mm256_loadu_ps(b + 8) : b0;
        MNI_PIN(b0);
        if (W == 16) MNI_PIN(b1);
        const float *a = A + (size_t)k * a_ks;
        for (int u = 0; u < R; u++) {
            const __m256 av = _mm256_set1_ps(a[(size_t)u * a_ms]);
            acc[u][0] = _mm256_fmadd_ps(av, b0, acc[u][0]);
            if (W == 16) acc[u][1] = _mm256_fmadd_ps(av, b1, acc[u][1]);
        }
    }
    for (int u = 0; u < R; u++) {
        const __m256 al = _mm256_set1_ps(alpha ? alpha[u] : alpha1);
        float *c = C + (size_t)u * ldc;
        for (int v = 0; v < W / 8; v++) {
            const __m256 prev = accumulate ? _mm256_loadu_ps(c + 8 * v) : _mm256_setzero_ps();
            _mm256_storeu_ps(c + 8 * v, _mm256_fmadd_ps(al, acc[u][v], prev));
        }
    }
}
#endif

/* The contract is in kern.h. */
void mni_mm(float *C, size_t ldc, const float *A, size_t a_ms, size_t a_ks, const float *B,
            size_t ldb, int M, int K, int N, const float *alpha, float alpha1, int accumulate)
{
#if MNI_HAVE_AVX2
    if (N % 8 == 0) {
        for (int m = 0; m < M; m += 6) {
            const int R = M - m < 6 ? M - m : 6;
            float *Cm = C + (size_t)m * ldc;
            const float *Am = A + (size_t)m * a_ms, *al = alpha ? alpha + m : NULL;
            for (int c = 0; c < N; c += 16) {
#define MM_CASE(r)                                                                                    \
    case r:                                                                                           \
        if (N - c >= 16)                                                                              \
            mm_block(Cm + c, ldc, Am, a_ms, a_ks, B + c, ldb, K, al, alpha1, accumulate, r, 16);      \
        else                                                                                          \
            mm_block(Cm + c, ldc, Am, a_ms, a_ks, B + c, ldb, K, al, alpha1, accumulate, r, 8);       \
        break;
                switch (R) {
                    MM_CASE(1) MM_CASE(2) MM_CASE(3) MM_CASE(4) MM_CASE(5) MM_CASE(6)
                }
#undef MM_CASE
            }
        }
        return;
    }
#endif
    for (int m = 0; m < M; m++) {
        const float al = alpha ? alpha[m] : alpha1;
        for (int n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int k = 0; k < K; k++)
                acc = fmaf(A[(size_t)m * a_ms + (size_t)k * a_ks], B[(size_t)k * ldb + n], acc);
            float *c = C + (size_t)m * ldc + n;
            *c = fmaf(al, acc, accumulate ? *c : 0.0f);
        }
    }
}
