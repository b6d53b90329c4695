/*
 * dense.c -- the dense causal softmax attention kind: tiled, online softmax, O(T) extra memory.
 *
 * Math (per window b and head h; q, k rotated with RoPE at their positions when cfg->rope):
 *     o_i = sum_{j<=i} softmax_j(q_i . k_j / sqrt(HS)) v_j
 * Forward follows FlashAttention-2 (Dao 2023, Alg. 1): each task owns a strip of QW queries,
 * walks the key blocks up to the diagonal, and keeps a running max m, a running denominator l
 * and an unnormalised output O, rescaled by alpha = exp(m_old - m_new) whenever the max grows.
 * No T x T matrix ever exists; forward saves q, k, v (rotated, re-laid per head) and the
 * log-sum-exp of every row, and backward recomputes the probabilities tile by tile (Alg. 2):
 *     P_ij = exp(s_ij - lse_i),  dv_j = sum_i P_ij dO_i,  dP_ij = dO_i . v_j,
 *     D_i = dO_i . o_i,  dS_ij = P_ij (dP_ij - D_i),  dq_i = sum_j dS_ij k_j / sqrt(HS),
 *     dk_j = sum_i dS_ij q_i / sqrt(HS).
 * Backward walks key strips: a strip owns its dk, dv and visits every later query block. dq
 * is the problem, since every key strip adds to it. When B*NH heads fill the threads, each
 * thread takes whole heads and adds dq += dS K into a per-head accumulator in scratch (single
 * pass: 5 matmuls). Otherwise tasks are split as in Triton's FlashAttention tutorial: key-strip
 * tasks for dk, dv and separate query-strip tasks that recompute S and dP for dq (7 matmuls,
 * any number of threads). Either way every value has one writer and a fixed summation order:
 * no per-thread buffers, no atomics, deterministic results; the two modes differ only by
 * rounding, and the mode depends on B*NH and the thread count (single_pass_ok).
 *
 * Numerics: q is pre-scaled by log2(e)/sqrt(HS), so scores are in log2 units and the kernels
 * need only exp2 (a degree-5 polynomial, ~2 float ulp); lse is kept in log2 units too.
 * Everything is fp32 with fp32 accumulation, as in FlashAttention.
 *
 * Tiles: a strip is QW = 24 queries (three AVX2 vectors). Forward and the dq tasks hold the
 * strip transposed, queries along the vector lanes: S^T = K_blk Q^T (KB x QW), the softmax
 * statistics are per-lane vectors, and O^T (HSP x QW) += V_blk^T P^T. The dk/dv tasks use the
 * mirror image, keys along the lanes. Both shapes reduce to two register-blocked micro-kernels
 * (gemm_bt, gemm_at) of 4 x 24 outputs in 12 ymm accumulators (plus gemm_nn, 6 x 16, for the
 * single-pass dq). Per-thread tiles live on the stack (at most ~100 KB, bounded by
 * HS <= 256), so no declared size depends on the thread count.
 * Layouts of act and of the streaming state: attn_int.h; design notes and measurements:
 * docs/internals/attention.md.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/vmath.h"
#include "kern/kern.h"
#include "mni.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* Tile sizes (KB and QB measured best among 32..128 on Zen 3; -D overrides for tuning). */
#define QW 24 /* queries (forward, dq) or keys (dk/dv) per strip: 3 AVX2 vectors */
#ifndef KB
#define KB 64 /* keys per block in forward and dq tasks: rows of the S^T tile */
#endif
#ifndef QB
#define QB 48 /* queries per block in dk/dv tasks: rows of the S tile (multiple of 6) */
#endif
#define HS_MAX 256 /* largest supported head_dim (stack tiles are sized for it) */
#define DEC_MAX 8  /* step() with fewer new tokens than this uses the one-row path */
#define ALIGN64 __attribute__((aligned(64)))

static const double LOG2E = 1.4426950408889634;
static const float LN2 = 0.69314718055994531f;

/* ---- exp2: the project's vectorised 2^x (src/kern/vmath.h) ------------------------------
 * Inputs are clamped to [-127, 127]: -127 yields exactly 0 in the products below, so masked
 * scores (-inf) give P = 0 without a blend; 2^0 is exactly 1, so the row maximum gets P = 1. */
#define exp2_scalar mni_exp2f
#if MNI_HAVE_AVX2
#define exp2_avx mni_exp2_ps
#endif

/* ---- micro-kernels -------------------------------------------------------------------------
 * All tiles are QW = 24 columns wide, row-major, 64-byte aligned (they live on the stack). The
 * wide operand (Bt in gemm_bt, P in gemm_at) is such a tile; the other operand (A) is read by
 * scalar broadcasts, so it may be any row-major buffer (act, scratch, the KV cache) with any
 * alignment. Register budget on AVX2 (16 ymm): 12 accumulators (4 rows x 3 vectors), the 3
 * vectors of the wide operand, and 1 broadcast. Per inner step: 3 loads + 4 broadcasts for 12
 * FMAs, i.e. within the two load ports while the two FMA pipes stay busy. */

/* The micro-kernels pin the three vectors of the wide operand in registers (MNI_PIN): left
 * alone, gcc folds them into every FMA (12 loads + 4 broadcasts per 12 FMAs, load-bound);
 * pinned, 3 loads + 4 broadcasts. */

/* C (R,QW) = A (R,nd; row stride lda) . Bt (nd,QW). Overwrites C.
 * Forward: S^T = K_blk Q^T (A = keys, Bt = the strip's queries transposed); backward: S = Q K^T
 * and dP = dO V^T of a key strip, dP^T = V dO^T of a query strip. */
static void gemm_bt(float *restrict C, const float *restrict A, size_t lda,
                    const float *restrict Bt, int R, int nd)
{
    int r = 0;
#if MNI_HAVE_AVX2
    // 4 rows of C at a time: c<row><vector>, each FMA adds A[row][d] * Bt[d][vector]
    for (; r + 4 <= R; r += 4) {
        const float *a0 = A + (size_t)r * lda, *a1 = a0 + lda, *a2 = a1 + lda, *a3 = a2 + lda;
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c02 = c00, c10 = c00, c11 = c00;
        __m256 c12 = c00, c20 = c00, c21 = c00, c22 = c00, c30 = c00, c31 = c00, c32 = c00;
        for (int d = 0; d < nd; d++) {
            const float *b = Bt + (size_t)d * QW;
            __m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);
            __m256 b2 = _mm256_load_ps(b + 16);
            MNI_PIN(b0); MNI_PIN(b1); MNI_PIN(b2);
            __m256 x = _mm256_broadcast_ss(a0 + d);
            c00 = _mm256_fmadd_ps(x, b0, c00);
            c01 = _mm256_fmadd_ps(x, b1, c01);
            c02 = _mm256_fmadd_ps(x, b2, c02);
            x = _mm256_broadcast_ss(a1 + d);
            c10 = _mm256_fmadd_ps(x, b0, c10);
            c11 = _mm256_fmadd_ps(x, b1, c11);
            c12 = _mm256_fmadd_ps(x, b2, c12);
            x = _mm256_broadcast_ss(a2 + d);
            c20 = _mm256_fmadd_ps(x, b0, c20);
            c21 = _mm256_fmadd_ps(x, b1, c21);
            c22 = _mm256_fmadd_ps(x, b2, c22);
            x = _mm256_broadcast_ss(a3 + d);
            c30 = _mm256_fmadd_ps(x, b0, c30);
            c31 = _mm256_fmadd_ps(x, b1, c31);
            c32 = _mm256_fmadd_ps(x, b2, c32);
        }
        float *c = C + (size_t)r * QW;
        _mm256_store_ps(c, c00), _mm256_store_ps(c + 8, c01), _mm256_store_ps(c + 16, c02);
        _mm256_store_ps(c + 24, c10), _mm256_store_ps(c + 32, c11);
        _mm256_store_ps(c + 40, c12), _mm256_store_ps(c + 48, c20);
        _mm256_store_ps(c + 56, c21), _mm256_store_ps(c + 64, c22);
        _mm256_store_ps(c + 72, c30), _mm256_store_ps(c + 80, c31);
        _mm256_store_ps(c + 88, c32);
    }
    // the last R % 4 rows (a block tail): one row, 3 accumulators
    for (; r < R; r++) {
        const float *a = A + (size_t)r * lda;
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0;
        for (int d = 0; d < nd; d++) {
            __m256 x = _mm256_broadcast_ss(a + d);
            c0 = _mm256_fmadd_ps(x, _mm256_load_ps(Bt + (size_t)d * QW), c0);
            c1 = _mm256_fmadd_ps(x, _mm256_load_ps(Bt + (size_t)d * QW + 8), c1);
            c2 = _mm256_fmadd_ps(x, _mm256_load_ps(Bt + (size_t)d * QW + 16), c2);
        }
        float *c = C + (size_t)r * QW;
        _mm256_store_ps(c, c0), _mm256_store_ps(c + 8, c1), _mm256_store_ps(c + 16, c2);
    }
#else
    for (; r < R; r++) {
        float *c = C + (size_t)r * QW;
        for (int w = 0; w < QW; w++) c[w] = 0.0f;
        for (int d = 0; d < nd; d++) {
            float x = A[(size_t)r * lda + d];
            for (int w = 0; w < QW; w++) c[w] += x * Bt[(size_t)d * QW + w];
        }
    }
#endif
}

/* C (D,QW) = C * alpha + A^T P, i.e. C[d][w] = C[d][w]*alpha[w] + sum_r A[r][d] P[r][w], with
 * A (R, D; row stride lda), P (R,QW). alpha (QW) may be NULL (plain accumulation). D must be a
 * multiple of 4 (it is HSP). Forward: O^T = alpha O^T + V_blk^T P^T (the online-softmax
 * rescale rides on the accumulator load); backward: dV^T += dO^T P, dK^T += Q^T dS of a key
 * strip, dQ^T += K^T dS^T of a query strip. */
static void gemm_at(float *restrict C, const float *restrict A, size_t lda,
                    const float *restrict P, int R, int D, const float *restrict alpha)
{
#if MNI_HAVE_AVX2
    // 4 rows of C (4 values of d) at a time, kept in registers over the whole r loop
    for (int d = 0; d < D; d += 4) {
        float *c = C + (size_t)d * QW;
        __m256 c00 = _mm256_load_ps(c), c01 = _mm256_load_ps(c + 8);
        __m256 c02 = _mm256_load_ps(c + 16), c10 = _mm256_load_ps(c + 24);
        __m256 c11 = _mm256_load_ps(c + 32), c12 = _mm256_load_ps(c + 40);
        __m256 c20 = _mm256_load_ps(c + 48), c21 = _mm256_load_ps(c + 56);
        __m256 c22 = _mm256_load_ps(c + 64), c30 = _mm256_load_ps(c + 72);
        __m256 c31 = _mm256_load_ps(c + 80), c32 = _mm256_load_ps(c + 88);
        if (alpha) {
            __m256 al0 = _mm256_loadu_ps(alpha), al1 = _mm256_loadu_ps(alpha + 8);
            __m256 al2 = _mm256_loadu_ps(alpha + 16);
            c00 = _mm256_mul_ps(c00, al0), c01 = _mm256_mul_ps(c01, al1);
            c02 = _mm256_mul_ps(c02, al2), c10 = _mm256_mul_ps(c10, al0);
            c11 = _mm256_mul_ps(c11, al1), c12 = _mm256_mul_ps(c12, al2);
            c20 = _mm256_mul_ps(c20, al0), c21 = _mm256_mul_ps(c21, al1);
            c22 = _mm256_mul_ps(c22, al2), c30 = _mm256_mul_ps(c30, al0);
            c31 = _mm256_mul_ps(c31, al1), c32 = _mm256_mul_ps(c32, al2);
        }
        const float *a = A + d;
        for (int r = 0; r < R; r++, a += lda) {
            const float *p = P + (size_t)r * QW;
            __m256 p0 = _mm256_load_ps(p), p1 = _mm256_load_ps(p + 8);
            __m256 p2 = _mm256_load_ps(p + 16);
            MNI_PIN(p0); MNI_PIN(p1); MNI_PIN(p2);
            __m256 x = _mm256_broadcast_ss(a);
            c00 = _mm256_fmadd_ps(x, p0, c00);
            c01 = _mm256_fmadd_ps(x, p1, c01);
            c02 = _mm256_fmadd_ps(x, p2, c02);
            x = _mm256_broadcast_ss(a + 1);
            c10 = _mm256_fmadd_ps(x, p0, c10);
            c11 = _mm256_fmadd_ps(x, p1, c11);
            c12 = _mm256_fmadd_ps(x, p2, c12);
            x = _mm256_broadcast_ss(a + 2);
            c20 = _mm256_fmadd_ps(x, p0, c20);
            c21 = _mm256_fmadd_ps(x, p1, c21);
            c22 = _mm256_fmadd_ps(x, p2, c22);
            x = _mm256_broadcast_ss(a + 3);
            c30 = _mm256_fmadd_ps(x, p0, c30);
            c31 = _mm256_fmadd_ps(x, p1, c31);
            c32 = _mm256_fmadd_ps(x, p2, c32);
        }
        _mm256_store_ps(c, c00), _mm256_store_ps(c + 8, c01), _mm256_store_ps(c + 16, c02);
        _mm256_store_ps(c + 24, c10), _mm256_store_ps(c + 32, c11);
        _mm256_store_ps(c + 40, c12), _mm256_store_ps(c + 48, c20);
        _mm256_store_ps(c + 56, c21), _mm256_store_ps(c + 64, c22);
        _mm256_store_ps(c + 72, c30), _mm256_store_ps(c + 80, c31);
        _mm256_store_ps(c + 88, c32);
    }
#else
    for (int d = 0; d < D; d++) {
        float *c = C + (size_t)d * QW;
        if (alpha) {
            for (int w = 0; w < QW; w++) c[w] *= alpha[w];
        }
        for (int r = 0; r < R; r++) {
            float x = A[(size_t)r * lda + d];
            for (int w = 0; w < QW; w++) c[w] += x * P[(size_t)r * QW + w];
        }
    }
#endif
}

/* C (R,W) += A (R,KD; row stride lda) . B (KD,W; row stride ldb), C with row stride ldc. W
 * must be a multiple of 8. Used for dq += dS K in the single-pass backward: 6 x 16 outputs in
 * 12 accumulators (6 broadcasts + 2 loads per 12 FMAs). */
static void gemm_nn(float *restrict C, size_t ldc, const float *restrict A, size_t lda,
                    const float *restrict B, size_t ldb, int R, int KD, int W)
{
    int r = 0;
#if MNI_HAVE_AVX2
    for (; r + 6 <= R; r += 6) {
        const float *a = A + (size_t)r * lda;
        float *c = C + (size_t)r * ldc;
        int w = 0;
        for (; w + 16 <= W; w += 16) {
            __m256 c00 = _mm256_loadu_ps(c + w), c01 = _mm256_loadu_ps(c + w + 8);
            __m256 c10 = _mm256_loadu_ps(c + ldc + w), c11 = _mm256_loadu_ps(c + ldc + w + 8);
            __m256 c20 = _mm256_loadu_ps(c + 2 * ldc + w);
            __m256 c21 = _mm256_loadu_ps(c + 2 * ldc + w + 8);
            __m256 c30 = _mm256_loadu_ps(c + 3 * ldc + w);
            __m256 c31 = _mm256_loadu_ps(c + 3 * ldc + w + 8);
            __m256 c40 = _mm256_loadu_ps(c + 4 * ldc + w);
            __m256 c41 = _mm256_loadu_ps(c + 4 * ldc + w + 8);
            __m256 c50 = _mm256_loadu_ps(c + 5 * ldc + w);
            __m256 c51 = _mm256_loadu_ps(c + 5 * ldc + w + 8);
            for (int k = 0; k < KD; k++) {
                __m256 b0 = _mm256_loadu_ps(B + (size_t)k * ldb + w);
                __m256 b1 = _mm256_loadu_ps(B + (size_t)k * ldb + w + 8);
                __m256 x;
                MNI_PIN(b0); MNI_PIN(b1);
                x = _mm256_broadcast_ss(a + k);
                c00 = _mm256_fmadd_ps(x, b0, c00), c01 = _mm256_fmadd_ps(x, b1, c01);
                x = _mm256_broadcast_ss(a + lda + k);
                c10 = _mm256_fmadd_ps(x, b0, c10), c11 = _mm256_fmadd_ps(x, b1, c11);
                x = _mm256_broadcast_ss(a + 2 * lda + k);
                c20 = _mm256_fmadd_ps(x, b0, c20), c21 = _mm256_fmadd_ps(x, b1, c21);
                x = _mm256_broadcast_ss(a + 3 * lda + k);
                c30 = _mm256_fmadd_ps(x, b0, c30), c31 = _mm256_fmadd_ps(x, b1, c31);
                x = _mm256_broadcast_ss(a + 4 * lda + k);
                c40 = _mm256_fmadd_ps(x, b0, c40), c41 = _mm256_fmadd_ps(x, b1, c41);
                x = _mm256_broadcast_ss(a + 5 * lda + k);
                c50 = _mm256_fmadd_ps(x, b0, c50), c51 = _mm256_fmadd_ps(x, b1, c51);
            }
            _mm256_storeu_ps(c + w, c00), _mm256_storeu_ps(c + w + 8, c01);
            _mm256_storeu_ps(c + ldc + w, c10), _mm256_storeu_ps(c + ldc + w + 8, c11);
            _mm256_storeu_ps(c + 2 * ldc + w, c20), _mm256_storeu_ps(c + 2 * ldc + w + 8, c21);
            _mm256_storeu_ps(c + 3 * ldc + w, c30), _mm256_storeu_ps(c + 3 * ldc + w + 8, c31);
            _mm256_storeu_ps(c + 4 * ldc + w, c40), _mm256_storeu_ps(c + 4 * ldc + w + 8, c41);
            _mm256_storeu_ps(c + 5 * ldc + w, c50), _mm256_storeu_ps(c + 5 * ldc + w + 8, c51);
        }
        for (; w < W; w += 8) {
            for (int i = 0; i < 6; i++) {
                __m256 acc = _mm256_loadu_ps(c + i * ldc + w);
                for (int k = 0; k < KD; k++)
                    acc = _mm256_fmadd_ps(_mm256_broadcast_ss(a + i * lda + k),
                                          _mm256_loadu_ps(B + (size_t)k * ldb + w), acc);
                _mm256_storeu_ps(c + i * ldc + w, acc);
            }
        }
    }
#endif
    for (; r < R; r++) {
        float *c = C + (size_t)r * ldc;
        for (int k = 0; k < KD; k++) {
            float x = A[(size_t)r * lda + k];
            for (int w = 0; w < W; w++) c[w] += x * B[(size_t)k * ldb + w];
        }
    }
}

/* ---- tile helpers ---------------------------------------------------------------------------- */

/* Xt (nd,QW): Xt[d][i] = X[i*ldx + d] for i < n, 0 for the padding lanes n <= i < QW.
 * Padding lanes stay finite through every later step (their scores are 0), and are never
 * written out. Once per strip, so plain scalar code. */
static void transpose_in(float *restrict Xt, const float *restrict X, size_t ldx, int n, int nd)
{
    for (int d = 0; d < nd; d++) {
        float *row = Xt + (size_t)d * QW;
        for (int i = 0; i < QW; i++) row[i] = i < n ? X[(size_t)i * ldx + d] : 0.0f;
    }
}

/* Lanes are queries at positions p0+i, rows are keys at positions k0+j: key > query -> -inf. */
static void mask_lanes(float *S, int nk, int k0, int p0)
{
    for (int j = 0; j < nk; j++) {
        int first = k0 + j - p0; // lanes i < first are masked
        if (first <= 0) continue;
        float *row = S + (size_t)j * QW;
        for (int i = 0; i < QW && i < first; i++) row[i] = -INFINITY;
    }
}

/* Rows are queries at i0+r, lanes are keys at j0+j (only the first nkk are real): masked when
 * key > query or j >= nkk. */
static void mask_rows(float *S, int nr, int i0, int j0, int nkk)
{
    for (int r = 0; r < nr; r++) {
        float *row = S + (size_t)r * QW;
        int last = i0 + r - j0; // lanes j <= last are visible
        for (int j = 0; j < QW; j++) {
            if (j > last || j >= nkk) row[j] = -INFINITY;
        }
    }
}

/* m (QW) = max(m, column max of S (nk,QW)): the new running max of each query lane. */
static void col_max(float *restrict m, const float *restrict S, int nk)
{
#if MNI_HAVE_AVX2
    __m256 m0 = _mm256_loadu_ps(m), m1 = _mm256_loadu_ps(m + 8), m2 = _mm256_loadu_ps(m + 16);
    for (int j = 0; j < nk; j++) {
        const float *s = S + (size_t)j * QW;
        m0 = _mm256_max_ps(m0, _mm256_load_ps(s));
        m1 = _mm256_max_ps(m1, _mm256_load_ps(s + 8));
        m2 = _mm256_max_ps(m2, _mm256_load_ps(s + 16));
    }
    _mm256_storeu_ps(m, m0), _mm256_storeu_ps(m + 8, m1), _mm256_storeu_ps(m + 16, m2);
#else
    for (int j = 0; j < nk; j++) {
        const float *s = S + (size_t)j * QW;
        for (int i = 0; i < QW; i++) m[i] = s[i] > m[i] ? s[i] : m[i];
    }
#endif
}

/* S[j][i] <- 2^(S[j][i] - sub[i]) for the nk rows; if lsum != NULL, lsum[i] = column sums. */
static void exp2_lanes(float *restrict S, int nk, const float *restrict sub,
                       float *restrict lsum)
{
#if MNI_HAVE_AVX2
    __m256 s0 = _mm256_loadu_ps(sub), s1 = _mm256_loadu_ps(sub + 8);
    __m256 s2 = _mm256_loadu_ps(sub + 16);
    __m256 l0 = _mm256_setzero_ps(), l1 = l0, l2 = l0;
    for (int j = 0; j < nk; j++) {
        float *s = S + (size_t)j * QW;
        __m256 p0 = exp2_avx(_mm256_sub_ps(_mm256_load_ps(s), s0));
        __m256 p1 = exp2_avx(_mm256_sub_ps(_mm256_load_ps(s + 8), s1));
        __m256 p2 = exp2_avx(_mm256_sub_ps(_mm256_load_ps(s + 16), s2));
        _mm256_store_ps(s, p0), _mm256_store_ps(s + 8, p1), _mm256_store_ps(s + 16, p2);
        l0 = _mm256_add_ps(l0, p0), l1 = _mm256_add_ps(l1, p1), l2 = _mm256_add_ps(l2, p2);
    }
    if (lsum) {
        _mm256_storeu_ps(lsum, l0), _mm256_storeu_ps(lsum + 8, l1);
        _mm256_storeu_ps(lsum + 16, l2);
    }
#else
    if (lsum) {
        for (int i = 0; i < QW; i++) lsum[i] = 0.0f;
    }
    for (int j = 0; j < nk; j++) {
        for (int i = 0; i < QW; i++) {
            float p = exp2_scalar(S[(size_t)j * QW + i] - sub[i]);
            S[(size_t)j * QW + i] = p;
            if (lsum) lsum[i] += p;
        }
    }
#endif
}

/* S[r][j] <- 2^(S[r][j] - sub[r]) for the nr rows. */
static void exp2_rows(float *restrict S, int nr, const float *restrict sub)
{
    for (int r = 0; r < nr; r++) {
        float *s = S + (size_t)r * QW;
#if MNI_HAVE_AVX2
        __m256 x = _mm256_set1_ps(sub[r]);
        _mm256_store_ps(s, exp2_avx(_mm256_sub_ps(_mm256_load_ps(s), x)));
        _mm256_store_ps(s + 8, exp2_avx(_mm256_sub_ps(_mm256_load_ps(s + 8), x)));
        _mm256_store_ps(s + 16, exp2_avx(_mm256_sub_ps(_mm256_load_ps(s + 16), x)));
#else
        for (int j = 0; j < QW; j++) s[j] = exp2_scalar(s[j] - sub[r]);
#endif
    }
}

/* P <- P * (dP - D): dS of the softmax; D per lane (Dl, QW) or per row (Dr, n), one non-NULL.
 * Masked entries have P = 0 and so dS = 0. gcc vectorises the inner loop. */
static void softmax_bwd_tile(float *restrict P, const float *restrict dP, int n,
                             const float *restrict Dl, const float *restrict Dr)
{
    for (int r = 0; r < n; r++) {
        float *p = P + (size_t)r * QW;
        const float *dp = dP + (size_t)r * QW;
        for (int i = 0; i < QW; i++) p[i] = p[i] * (dp[i] - (Dl ? Dl[i] : Dr[r]));
    }
}

/* The per-lane update of the online softmax after one key block: alpha = 2^(m - m_new),
 * l = l alpha + lsum, m = m_new (all QW lanes). */
static void online_update(float *restrict m, float *restrict l, float *restrict alpha,
                          const float *restrict mnew, const float *restrict lsum)
{
#if MNI_HAVE_AVX2
    for (int i = 0; i < QW; i += 8) {
        __m256 a = exp2_avx(_mm256_sub_ps(_mm256_load_ps(m + i), _mm256_load_ps(mnew + i)));
        __m256 ln = _mm256_fmadd_ps(_mm256_load_ps(l + i), a, _mm256_load_ps(lsum + i));
        _mm256_store_ps(alpha + i, a);
        _mm256_store_ps(l + i, ln);
        _mm256_store_ps(m + i, _mm256_load_ps(mnew + i));
    }
#else
    for (int i = 0; i < QW; i++) {
        alpha[i] = exp2_scalar(m[i] - mnew[i]);
        l[i] = l[i] * alpha[i] + lsum[i], m[i] = mnew[i];
    }
#endif
}

/* ---- forward strip ------------------------------------------------------------------------- */

/* Attends a strip of nq <= QW queries to keys 0 .. p0+nq-1; query i has position p0+i.
 * Q (nq,HSP) rotated and scaled; K, V (>= p0+nq, HSP). Writes out (nq rows of HS, stride ldo)
 * and, if lse != NULL, lse (nq) in log2 units. Used by forward and by step(). */
__attribute__((noinline)) static void fwd_strip(float *out, size_t ldo, float *lse,
                                                const float *Q, int nq, int p0,
                                                const float *K, const float *V, int HS,
                                                int HSP)
{
    float Qt[HS_MAX * QW] ALIGN64; // (HSP,QW) queries along the lanes
    float Ot[HS_MAX * QW] ALIGN64; // (HSP,QW) unnormalised output, transposed
    float St[KB * QW] ALIGN64;     // (KB,QW) scores, then probabilities, of one key block
    float m[QW] ALIGN64, l[QW] ALIGN64, lsum[QW] ALIGN64, alpha[QW] ALIGN64;

    transpose_in(Qt, Q, (size_t)HSP, nq, HSP);
    memset(Ot, 0, sizeof(float) * (size_t)HSP * QW);
    for (int i = 0; i < QW; i++) m[i] = -INFINITY, l[i] = 0.0f;

    const int kend = p0 + nq;
    for (int k0 = 0; k0 < kend; k0 += KB) {
        int nk = kend - k0 < KB ? kend - k0 : KB;
        // S^T = K_blk Q^T  (log2 units, q carries the scale)
        gemm_bt(St, K + (size_t)k0 * HSP, (size_t)HSP, Qt, nk, HSP);
        if (k0 + nk - 1 > p0) mask_lanes(St, nk, k0, p0);
        // online softmax: m_new = max(m, rowmax), alpha = 2^(m - m_new), l = l alpha + sum P
        float mnew[QW] ALIGN64;
        memcpy(mnew, m, sizeof(mnew));
        col_max(mnew, St, nk);
        exp2_lanes(St, nk, mnew, lsum);
        online_update(m, l, alpha, mnew, lsum);
        // O^T = O^T alpha + V_blk^T P^T
        gemm_at(Ot, V + (size_t)k0 * HSP, (size_t)HSP, St, nk, HSP, alpha);
    }
    for (int i = 0; i < nq; i++) {
        float inv = 1.0f / l[i];
        float *o = out + (size_t)i * ldo;
        for (int d = 0; d < HS; d++) o[d] = Ot[(size_t)d * QW + i] * inv;
        if (lse) lse[i] = m[i] + log2f(l[i]);
    }
}

/* ---- backward tasks ------------------------------------------------------------------------ */

/* dk, dv of the key strip j0 .. j0+nkk-1 of one head. Q, K, V, dO (T,HSP) as in act/scratch;
 * L, Dv (T) the log2-sum-exp and D_i = dO_i . o_i. Writes nkk rows of dk and dv (HS, stride
 * ldd), dk rotated back with the rope table cs (NULL without RoPE). If dQa (T,HSP) is not NULL
 * the strip's share of dq (sum over its keys of dS_ij k_j, unscaled) is added to it: the
 * single-pass backward, valid only when one thread owns the whole head. */
__attribute__((noinline)) static void bwd_keys(float *dk, float *dv, size_t ldd, const float *Q,
                                               const float *K, const float *V, const float *dO,
                                               const float *L, const float *Dv, float *dQa,
                                               int T, int j0, int nkk, const float *cs, int HS,
                                               int HSP)
{
    float Kt[HS_MAX * QW] ALIGN64;  // (HSP,QW) keys along the lanes
    float Vt[HS_MAX * QW] ALIGN64;  // (HSP,QW)
    float dKt[HS_MAX * QW] ALIGN64; // (HSP,QW) dL/dk (rotated, times 1/ln2), transposed
    float dVt[HS_MAX * QW] ALIGN64; // (HSP,QW)
    float S[QB * QW] ALIGN64;       // (QB,QW) scores -> P -> dS
    float dP[QB * QW] ALIGN64;      // (QB,QW)

    transpose_in(Kt, K + (size_t)j0 * HSP, (size_t)HSP, nkk, HSP);
    transpose_in(Vt, V + (size_t)j0 * HSP, (size_t)HSP, nkk, HSP);
    memset(dKt, 0, sizeof(float) * (size_t)HSP * QW);
    memset(dVt, 0, sizeof(float) * (size_t)HSP * QW);
    // only queries i >= j0 see any key of the strip
    for (int i0 = j0; i0 < T; i0 += QB) {
        int nr = T - i0 < QB ? T - i0 : QB;
        const float *Qb = Q + (size_t)i0 * HSP, *dOb = dO + (size_t)i0 * HSP;
        gemm_bt(S, Qb, (size_t)HSP, Kt, nr, HSP);
        if (i0 < j0 + QW - 1 || nkk < QW) mask_rows(S, nr, i0, j0, nkk);
        exp2_rows(S, nr, L + i0); // P_ij = 2^(s_ij - lse_i)
        // o_i = sum_j P_ij v_j  =>  dv_j += sum_i P_ij dO_i,  dP_ij = dO_i . v_j
        gemm_at(dVt, dOb, (size_t)HSP, S, nr, HSP, NULL);
        gemm_bt(dP, dOb, (size_t)HSP, Vt, nr, HSP);
        // dS_ij = P_ij (dP_ij - D_i);  s_ij = q_i . k_j  =>  dk_j += sum_i dS_ij q_i
        softmax_bwd_tile(S, dP, nr, NULL, Dv + i0);
        gemm_at(dKt, Qb, (size_t)HSP, S, nr, HSP, NULL);
        // ... and dq_i += sum_j dS_ij k_j (masked lanes have dS = 0; only nkk real keys read)
        if (dQa)
            gemm_nn(dQa + (size_t)i0 * HSP, (size_t)HSP, S, QW, K + (size_t)j0 * HSP,
                    (size_t)HSP, nr, nkk, HSP);
    }
    // q was stored times log2(e)/sqrt(HS); dk needs 1/sqrt(HS), so multiply by ln 2
    for (int j = 0; j < nkk; j++) {
        float *dkr = dk + (size_t)j * ldd, *dvr = dv + (size_t)j * ldd;
        for (int d = 0; d < HS; d++) {
            dkr[d] = LN2 * dKt[(size_t)d * QW + j];
            dvr[d] = dVt[(size_t)d * QW + j];
        }
        if (cs) mni_rope_apply(dkr, cs + (size_t)(j0 + j) * HS, HS, -1);
    }
}

/* dq of the query strip q0 .. q0+nq-1 of one head (arguments as bwd_keys): the two-set
 * mode's second half. The strip is held like the forward's (queries along the lanes) and
 * walks the key blocks up to its diagonal, recomputing S^T, P^T and dP^T = V dO^T, which the
 * key-strip tasks also computed: the price of having one writer for every dq row. */
__attribute__((noinline)) static void bwd_queries(float *dq, size_t ldd, const float *Q,
                                                  const float *K, const float *V,
                                                  const float *dO, const float *L,
                                                  const float *Dv, int q0, int nq,
                                                  const float *cs, int HS, int HSP)
{
    float Qt[HS_MAX * QW] ALIGN64;  // (HSP,QW) queries along the lanes
    float dOt[HS_MAX * QW] ALIGN64; // (HSP,QW)
    float dQt[HS_MAX * QW] ALIGN64; // (HSP,QW) dL/dq (rotated, times sqrt(HS)), transposed
    float St[KB * QW] ALIGN64;      // (KB,QW) scores -> P -> dS, transposed
    float dPt[KB * QW] ALIGN64;     // (KB,QW)
    float Ll[QW] ALIGN64, Dl[QW] ALIGN64;

    transpose_in(Qt, Q + (size_t)q0 * HSP, (size_t)HSP, nq, HSP);
    transpose_in(dOt, dO + (size_t)q0 * HSP, (size_t)HSP, nq, HSP);
    memset(dQt, 0, sizeof(float) * (size_t)HSP * QW);
    for (int i = 0; i < QW; i++) {
        Ll[i] = i < nq ? L[q0 + i] : 0.0f;
        Dl[i] = i < nq ? Dv[q0 + i] : 0.0f;
    }
    const int kend = q0 + nq;
    for (int k0 = 0; k0 < kend; k0 += KB) {
        int nk = kend - k0 < KB ? kend - k0 : KB;
        const float *Kb = K + (size_t)k0 * HSP;
        gemm_bt(St, Kb, (size_t)HSP, Qt, nk, HSP);
        if (k0 + nk - 1 > q0) mask_lanes(St, nk, k0, q0);
        exp2_lanes(St, nk, Ll, NULL);                             // P^T
        gemm_bt(dPt, V + (size_t)k0 * HSP, (size_t)HSP, dOt, nk, HSP); // dP^T = V dO^T
        softmax_bwd_tile(St, dPt, nk, Dl, NULL);                   // dS^T
        gemm_at(dQt, Kb, (size_t)HSP, St, nk, HSP, NULL);          // dq_i += sum_j dS_ij k_j
    }
    const float rs = 1.0f / sqrtf((float)HS);
    for (int i = 0; i < nq; i++) {
        float *dqr = dq + (size_t)i * ldd;
        for (int d = 0; d < HS; d++) dqr[d] = rs * dQt[(size_t)d * QW + i];
        if (cs) mni_rope_apply(dqr, cs + (size_t)(q0 + i) * HS, HS, -1);
    }
}

/* ---- sizes and layouts ----------------------------------------------------------------------- */

/* See attn_int.h. Sizes go through mni_mul/mni_add so that an absurd (B, T) gives SIZE_MAX
 * (and a failed allocation) rather than a wrapped small size. */
void mni_dense_act_layout(struct mni_dense_act *lay, const struct mnemo_attn_cfg *cfg, int B,
                          int T)
{
    size_t HSP = (size_t)mni_dense_hsp(cfg->head_dim);
    size_t rows = mni_mul(mni_mul((size_t)B, (size_t)cfg->n_head), (size_t)T);
    size_t head = mni_align64(mni_mul(mni_mul(rows, HSP), sizeof(float)));
    size_t lse = mni_align64(mni_mul(rows, sizeof(float)));
    size_t cs = cfg->rope ? mni_align64(mni_mul(mni_mul((size_t)T, (size_t)cfg->head_dim),
                                                sizeof(float)))
                          : 0;
    lay->q = 0;
    lay->k = head;
    lay->v = mni_add(lay->k, head);
    lay->lse = mni_add(lay->v, head);
    lay->cs = mni_add(lay->lse, lse);
    lay->total = mni_add(lay->cs, cs);
}

void mni_dense_act_view(struct mni_dense_view *vw, const struct mnemo_attn_cfg *cfg, int B, int T,
                        void *act)
{
    struct mni_dense_act lay;
    mni_dense_act_layout(&lay, cfg, B, T);
    char *a = act;
    vw->q = (float *)(a + lay.q);
    vw->k = (float *)(a + lay.k);
    vw->v = (float *)(a + lay.v);
    vw->lse = (float *)(a + lay.lse);
    vw->cs = cfg->rope ? (float *)(a + lay.cs) : NULL;
}

size_t mni_dense_state_hdr_bytes(void) { return mni_align64(sizeof(struct mni_dense_state)); }

/* head_dim is bounded by the stack tiles (HS_MAX) and must be even for the rotate-half pairs;
 * everything else the kernels handle at any size (tails, padding). */
static enum mnemo_status dense_validate(const struct mnemo_attn_cfg *cfg)
{
    if (!cfg) return mni_err(MNEMO_ERR_ARG, "dense: cfg is NULL");
    if (cfg->kind != MNEMO_ATTN_KIND_DENSE)
        return mni_err(MNEMO_ERR_ARG, "dense: kind must be %d (dense), got %d",
                       MNEMO_ATTN_KIND_DENSE, cfg->kind);
    if (cfg->n_head < 1) return mni_err(MNEMO_ERR_ARG, "dense: n_head must be >= 1, got %d",
                                        cfg->n_head);
    if (cfg->head_dim < 2 || cfg->head_dim > HS_MAX || cfg->head_dim % 2)
        return mni_err(MNEMO_ERR_ARG, "dense: head_dim must be even and in [2, %d], got %d",
                       HS_MAX, cfg->head_dim);
    if (cfg->n_ctx < 1)
        return mni_err(MNEMO_ERR_ARG, "dense: n_ctx must be >= 1, got %d", cfg->n_ctx);
    if (cfg->rope && !(cfg->rope_theta > 1.0f && isfinite(cfg->rope_theta)))
        return mni_err(MNEMO_ERR_ARG, "dense: rope_theta must be finite and > 1, got %g",
                       (double)cfg->rope_theta);
    if (mni_dense_sinks(cfg) > 0 && mni_dense_window(cfg) == 0)
        return mni_err(MNEMO_ERR_ARG, "dense attention: option sinks = %d needs a window (option "
                       "window > 0)", mni_dense_sinks(cfg));
    return MNEMO_OK;
}

/* Session options (StreamingLLM, Xiao et al. 2023): a dense model streams in bounded memory by
 * keeping the first `sinks` keys and the last `window`. Training is not affected. */
static const struct mnemo_attn_opt dense_opts[] = {
    [MNI_DENSE_OPT_WINDOW] = {"window", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_SESSION, 0, 0, 0,
                              1 << 22, NULL,
                              "a session keeps only the last `window` keys (and the first "
                              "`sinks`): bounded, streams past n_ctx (0 = every key, full at "
                              "n_ctx)"},
    [MNI_DENSE_OPT_SINKS] = {"sinks", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_SESSION, 0, 0, 0,
                             1 << 16, NULL,
                             "with a window: the first tokens a session keeps forever "
                             "(attention sinks)"},
    [MNI_DENSE_OPT_POSITIONS] = {"positions", MNEMO_ATTN_OPT_ENUM, MNEMO_ATTN_SCOPE_SESSION, 0,
                                 0, 0, 1, "cache|absolute",
                                 "with a window: RoPE positions counted within the kept cache "
                                 "(StreamingLLM) or in the whole stream"},
};
_Static_assert(sizeof(dense_opts) / sizeof(dense_opts[0]) == MNI_DENSE_OPT_COUNT, "dense_opts");

static uint32_t dense_caps(const struct mnemo_attn_cfg *cfg)
{
    return MNEMO_ATTN_CAP_CAUSAL | MNEMO_ATTN_CAP_STEP | MNEMO_ATTN_CAP_STEP_EXACT |
           MNEMO_ATTN_CAP_TRAIN | (mni_dense_window(cfg) > 0 ? MNEMO_ATTN_CAP_BOUNDED : 0);
}

/* QK^T and PV over the (T + 1) / 2 keys a query sees on average: 2 products x 2 FLOPs each. */
static double dense_flops(const struct mnemo_attn_cfg *cfg, int T)
{
    return 4.0 * cfg->n_head * cfg->head_dim * ((T + 1) / 2.0);
}

static size_t dense_act_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct mni_dense_act lay;
    mni_dense_act_layout(&lay, cfg, B, T);
    return lay.total;
}

/* Backward scratch: dO re-laid per head (B,NH,T,HSP), the dq accumulators of the single-pass
 * mode (B,NH,T,HSP) and D (B,NH,T). */
static size_t fast_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T,
                                 size_t *off_dq, size_t *off_D)
{
    size_t rows = mni_mul(mni_mul((size_t)B, (size_t)cfg->n_head), (size_t)T);
    size_t head = mni_align64(mni_mul(mni_mul(rows, (size_t)mni_dense_hsp(cfg->head_dim)),
                                      sizeof(float)));
    if (off_dq) *off_dq = head;
    if (off_D) *off_D = mni_mul(2, head);
    return mni_add(mni_mul(2, head), mni_align64(mni_mul(rows, sizeof(float))));
}

/* The single-pass backward gives each thread whole heads: 5 matmuls instead of 7, but only
 * B*NH tasks. Use it unless that leaves more than a quarter of the threads idle on average. */
static int single_pass_ok(long nbh, int nthr)
{
    long rounds = (nbh + nthr - 1) / nthr;
    return 4 * nbh >= 3 * rounds * nthr;
}

static size_t dense_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    return fast_scratch_bytes(cfg, B, T, NULL, NULL);
}

/* Bad buffers are input errors (a message, MNEMO_ERR_ARG), not crashes. Buffer sizes cannot be
 * checked here: the caller sized them with act_bytes/scratch_bytes for the same cfg, B, T. */
static enum mnemo_status check_io(const struct mnemo_attn_cfg *cfg,
                                  const struct mnemo_attn_io *io, int backward)
{
    enum mnemo_status st = dense_validate(cfg);
    if (st != MNEMO_OK) return st;
    if (!io) return mni_err(MNEMO_ERR_ARG, "dense: io is NULL");
    if (io->B < 1 || io->T < 1)
        return mni_err(MNEMO_ERR_ARG, "dense: B and T must be >= 1, got B=%d T=%d", io->B,
                       io->T);
    if (!backward && (!io->qkv || !io->act || !io->out))
        return mni_err(MNEMO_ERR_ARG, "dense: forward needs qkv, out and act buffers");
    if (backward && (!io->qkv || !io->act || !io->out || !io->dout || !io->dqkv || !io->scratch))
        return mni_err(MNEMO_ERR_ARG,
                       "dense: backward needs qkv, out, dout, dqkv, act and scratch buffers");
    return MNEMO_OK;
}

/* ---- forward ------------------------------------------------------------------------------- */

/* Two parallel loops: (1) re-lay q, k, v per head into act, rotated, q scaled into log2 units;
 * (2) one task per strip of QW queries, which reads its own queries and all earlier keys of
 * its head. The first loop is O(T C) and memory-bound; the second does the O(T^2) work. */

/* dst (HSP) = rot(src (HS)) * scale, padding zeroed. cs_row NULL: no rotation. Every path of
 * the fast kind (forward, step) loads heads through here, so they round identically. */
static void load_head(float *dst, const float *src, const float *cs_row, int HS, int HSP,
                      float scale)
{
#if MNI_HAVE_AVX2
    const int half = HS / 2;
    if (cs_row && half % 8 == 0) {
        // the rotation of mni_rope_apply, 8 pairs at a time: (c, s) de-interleaved from cs_row
        const __m256 sc = _mm256_set1_ps(scale);
        for (int i = 0; i < half; i += 8) {
            __m256 a = _mm256_loadu_ps(cs_row + 2 * i), b = _mm256_loadu_ps(cs_row + 2 * i + 8);
            __m256 c = _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), 0xd8));
            __m256 sn = _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), 0xd8));
            __m256 x0 = _mm256_loadu_ps(src + i), x1 = _mm256_loadu_ps(src + i + half);
            __m256 y0 = _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, sn));
            __m256 y1 = _mm256_add_ps(_mm256_mul_ps(x0, sn), _mm256_mul_ps(x1, c));
            _mm256_storeu_ps(dst + i, _mm256_mul_ps(y0, sc));
            _mm256_storeu_ps(dst + i + half, _mm256_mul_ps(y1, sc));
        }
        for (int d = HS; d < HSP; d++) dst[d] = 0.0f;
        return;
    }
#endif
    for (int d = 0; d < HS; d++) dst[d] = src[d];
    if (cs_row) mni_rope_apply(dst, cs_row, HS, +1);
    if (scale != 1.0f) {
        for (int d = 0; d < HS; d++) dst[d] *= scale;
    }
    for (int d = HS; d < HSP; d++) dst[d] = 0.0f;
}

static enum mnemo_status dense_forward(const struct mnemo_attn_cfg *cfg,
                                       struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 0);
    if (st != MNEMO_OK) return st;

    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int HSP = mni_dense_hsp(HS);
    const size_t C = (size_t)NH * HS;
    struct mni_dense_view vw;
    mni_dense_act_view(&vw, cfg, B, T, io->act);
    float *aq = vw.q, *ak = vw.k, *av = vw.v; // (B,NH,T,HSP)
    float *alse = vw.lse, *cs = vw.cs;        // (B,NH,T), (T,HS/2,2) or NULL
    const float qscale = (float)(LOG2E / sqrt((double)HS));

    // the RoPE table of positions 0..T-1 stays in act: backward rotates the gradients back
    if (cs) mni_rope_table(cs, T, HS, cfg->rope_theta);
    // re-lay q, k, v per head, rotated; q also scaled into log2 units (a task then reads
    // contiguous rows of one head instead of strided slices of qkv)
#pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        int b = (int)(bt / T), t = (int)(bt % T);
        const float *x = io->qkv + (size_t)bt * 3 * C; // (3,NH,HS)
        const float *csr = cs ? cs + (size_t)t * HS : NULL;
        for (int h = 0; h < NH; h++) {
            size_t r = (((size_t)b * NH + h) * T + t) * HSP;
            load_head(aq + r, x + (size_t)h * HS, csr, HS, HSP, qscale);
            load_head(ak + r, x + C + (size_t)h * HS, csr, HS, HSP, 1.0f);
            load_head(av + r, x + 2 * C + (size_t)h * HS, NULL, HS, HSP, 1.0f);
        }
    }
    // one task per (batch, head, strip), head-major so that the threads share one head's k, v
    // in cache; within a head the longest strips (last queries) go first
    const int ns = (T + QW - 1) / QW;
    const long nbh = (long)B * NH, ntask = nbh * ns;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < ntask; task++) {
        int s = ns - 1 - (int)(task % ns);
        long bh = task / ns;
        int b = (int)(bh / NH), h = (int)(bh % NH);
        int q0 = s * QW, nq = T - q0 < QW ? T - q0 : QW;
        size_t head = (size_t)bh * T * HSP;
        // out rows of this head have stride C; lse and the q rows are the strip's own
        fwd_strip(io->out + ((size_t)b * T + q0) * C + (size_t)h * HS, C,
                  alse + (size_t)bh * T + q0, aq + head + (size_t)q0 * HSP, nq, q0, ak + head,
                  av + head, HS, HSP);
    }
    return MNEMO_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* Three steps: (1) dO re-laid per head next to D_i = dO_i . o_i, (2) the key-strip work (dk,
 * dv, and dq in the single-pass mode) and (3) in the two-set mode the query-strip work for dq,
 * run in the same parallel loop as (2). The forward's act provides q, k, v, lse and the RoPE
 * table; nothing of the forward is recomputed except the probabilities, tile by tile. */
static enum mnemo_status dense_backward(const struct mnemo_attn_cfg *cfg,
                                        struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 1);
    if (st != MNEMO_OK) return st;

    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int HSP = mni_dense_hsp(HS);
    const size_t C = (size_t)NH * HS;
    struct mni_dense_view vw;
    mni_dense_act_view(&vw, cfg, B, T, io->act);
    const float *aq = vw.q, *ak = vw.k, *av = vw.v; // (B,NH,T,HSP)
    const float *alse = vw.lse, *cs = vw.cs;        // (B,NH,T), (T,HS/2,2) or NULL
    size_t off_dq, off_D;
    fast_scratch_bytes(cfg, B, T, &off_dq, &off_D);
    float *dOp = io->scratch;                                 // (B,NH,T,HSP)
    float *dQacc = (float *)((char *)io->scratch + off_dq);   // (B,NH,T,HSP)
    float *Dv = (float *)((char *)io->scratch + off_D);       // (B,NH,T)

    // dO re-laid per head, and D_i = dO_i . o_i (the softmax backward's row term)
#pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        int b = (int)(bt / T), t = (int)(bt % T);
        for (int h = 0; h < NH; h++) {
            const float *g = io->dout + (size_t)bt * C + (size_t)h * HS; // (HS)
            const float *o = io->out + (size_t)bt * C + (size_t)h * HS;  // (HS)
            size_t r = ((size_t)b * NH + h) * T + t;
            double D = 0;
            for (int d = 0; d < HS; d++) D += (double)g[d] * o[d];
            Dv[r] = (float)D;
            load_head(dOp + r * HSP, g, NULL, HS, HSP, 1.0f);
        }
    }
    const int ns = (T + QW - 1) / QW;
    const long nbh = (long)B * NH;
#ifdef _OPENMP
    const int nthr = omp_get_max_threads();
#else
    const int nthr = 1;
#endif
    if (single_pass_ok(nbh, nthr)) {
        // one task per head: key strips in order, dq accumulated in scratch (5 matmuls)
#pragma omp parallel for schedule(dynamic, 1)
        for (long bh = 0; bh < nbh; bh++) {
            int b = (int)(bh / NH), h = (int)(bh % NH);
            size_t head = (size_t)bh * T * HSP;
            float *dQa = dQacc + head; // (T,HSP)
            float *dq = io->dqkv + (size_t)b * T * 3 * C + (size_t)h * HS; // row t at t*3C
            memset(dQa, 0, sizeof(float) * (size_t)T * HSP);
            for (int j0 = 0; j0 < T; j0 += QW) {
                int nkk = T - j0 < QW ? T - j0 : QW;
                bwd_keys(dq + (size_t)j0 * 3 * C + C, dq + (size_t)j0 * 3 * C + 2 * C, 3 * C,
                         aq + head, ak + head, av + head, dOp + head, alse + (size_t)bh * T,
                         Dv + (size_t)bh * T, dQa, T, j0, nkk, cs, HS, HSP);
            }
            const float rs = 1.0f / sqrtf((float)HS);
            for (int t = 0; t < T; t++) {
                float *dqr = dq + (size_t)t * 3 * C;
                for (int d = 0; d < HS; d++) dqr[d] = rs * dQa[(size_t)t * HSP + d];
                if (cs) mni_rope_apply(dqr, cs + (size_t)t * HS, HS, -1);
            }
        }
        return MNEMO_OK;
    }
    // two sets of tasks: key strips (dk, dv) and query strips (dq) of one head, interleaved,
    // the longest first; head-major as in forward (7 matmuls, any number of threads)
    const long ntask = 2 * nbh * ns;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < ntask; task++) {
        long bh = task / (2 * ns); // head-major: a head's k, v stay in cache
        int rank = (int)(task % (2 * ns)) / 2, which = (int)(task % 2);
        int b = (int)(bh / NH), h = (int)(bh % NH);
        size_t head = (size_t)bh * T * HSP;
        float *dq = io->dqkv + (size_t)b * T * 3 * C + (size_t)h * HS; // row t at t*3C
        if (which == 0) {
            int j0 = rank * QW, nkk = T - j0 < QW ? T - j0 : QW; // first keys: most queries
            bwd_keys(dq + (size_t)j0 * 3 * C + C, dq + (size_t)j0 * 3 * C + 2 * C, 3 * C,
                     aq + head, ak + head, av + head, dOp + head, alse + (size_t)bh * T,
                     Dv + (size_t)bh * T, NULL, T, j0, nkk, cs, HS, HSP);
        } else {
            int q0 = (ns - 1 - rank) * QW, nq = T - q0 < QW ? T - q0 : QW; // last: most keys
            bwd_queries(dq + (size_t)q0 * 3 * C, 3 * C, aq + head, ak + head, av + head,
                        dOp + head, alse + (size_t)bh * T, Dv + (size_t)bh * T, q0, nq, cs, HS,
                        HSP);
        }
    }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

/* The bound: n_ctx slots of rotated k and of v for every head, whatever the stream length. */
/* With a window and cache positions, the state also holds the RoPE table of the ranks 0..S-1
 * (S, HS/2, 2), made once by state_init: every step rotates the held keys at their ranks. */
static int rank_table(const struct mnemo_attn_cfg *cfg)
{
    return cfg->rope && mni_dense_window(cfg) > 0 && !mni_dense_absolute(cfg);
}

static size_t kv_bytes(const struct mnemo_attn_cfg *cfg)
{
    return mni_align64(mni_mul(mni_mul((size_t)cfg->n_head, (size_t)mni_dense_slots(cfg)),
                               mni_mul((size_t)mni_dense_hsp(cfg->head_dim), sizeof(float))));
}

static size_t dense_state_bytes(const struct mnemo_attn_cfg *cfg)
{
    const size_t table = rank_table(cfg) ? mni_mul(mni_mul((size_t)mni_dense_slots(cfg),
                                                           (size_t)cfg->head_dim), sizeof(float))
                                         : 0;
    return mni_add(mni_add(mni_dense_state_hdr_bytes(), mni_mul(2, kv_bytes(cfg))), table);
}

/* Only the header is written: slots beyond count are never read. */
static void dense_state_init(const struct mnemo_attn_cfg *cfg, void *state)
{
    struct mni_dense_state *st = state;
    st->count = 0;
    st->n_ctx = mni_dense_slots(cfg);
    if (rank_table(cfg))
        mni_rope_table((float *)((char *)state + mni_dense_state_hdr_bytes() + 2 * kv_bytes(cfg)),
                       (int)st->n_ctx, cfg->head_dim, cfg->rope_theta);
}

/* Header + the filled slots of k and v: what a session actually holds. */
static size_t dense_state_live_bytes(const struct mnemo_attn_cfg *cfg, const void *state)
{
    const struct mni_dense_state *st = state;
    const int64_t held = st->count < st->n_ctx ? st->count : st->n_ctx;
    size_t kv = mni_mul(mni_mul((size_t)cfg->n_head, (size_t)held),
                        mni_mul((size_t)mni_dense_hsp(cfg->head_dim), sizeof(float)));
    return mni_add(mni_dense_state_hdr_bytes(), mni_mul(2, kv));
}

/* Step scratch (floats, 64-byte aligned sections): cs (n,HS/2,2), q (NH,n,HSP), for the
 * one-row path a row of scores per head (NH,slots), and with a window the keys rotated at their
 * cache positions (NH,slots,HSP). The reference needs its own. */
struct step_lay {
    size_t q, row, kr, total;
};
static void step_layout(struct step_lay *lay, const struct mnemo_attn_cfg *cfg, int n)
{
    size_t HSP = (size_t)mni_dense_hsp(cfg->head_dim), NH = (size_t)cfg->n_head;
    const size_t S = (size_t)mni_dense_slots(cfg);
    lay->q = mni_align64(mni_mul(mni_mul((size_t)n, (size_t)cfg->head_dim), sizeof(float)));
    lay->row = mni_add(lay->q, mni_align64(mni_mul(mni_mul(NH, (size_t)n),
                                                   mni_mul(HSP, sizeof(float)))));
    lay->kr = mni_add(lay->row, mni_align64(mni_mul(mni_mul(NH, S), sizeof(float))));
    lay->total = mni_add(lay->kr, mni_dense_window(cfg) > 0
                                      ? mni_align64(mni_mul(mni_mul(NH, S), mni_mul(HSP, sizeof(float))))
                                      : 0);
}

static size_t dense_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    struct step_lay lay;
    step_layout(&lay, cfg, n < 1 ? 1 : n);
    return lay.total;
}

#if MNI_HAVE_AVX2
/* Scores of q against the 8 keys K[0..7] (rows of HSP): 8 independent FMA chains, then one
 * transposing reduction so that the 8 dot products come out as one vector. */
static inline __m256 dot8(const float *q, const float *K, int HSP)
{
    __m256 a[8];
    for (int k = 0; k < 8; k++) a[k] = _mm256_setzero_ps();
    for (int d = 0; d < HSP; d += 8) {
        __m256 x = _mm256_loadu_ps(q + d);
        for (int k = 0; k < 8; k++)
            a[k] = _mm256_fmadd_ps(x, _mm256_loadu_ps(K + (size_t)k * HSP + d), a[k]);
    }
    __m256 t0 = _mm256_hadd_ps(a[0], a[1]), t1 = _mm256_hadd_ps(a[2], a[3]);
    __m256 t2 = _mm256_hadd_ps(a[4], a[5]), t3 = _mm256_hadd_ps(a[6], a[7]);
    __m256 u0 = _mm256_hadd_ps(t0, t1), u1 = _mm256_hadd_ps(t2, t3);
    return _mm256_add_ps(_mm256_permute2f128_ps(u0, u1, 0x20),
                         _mm256_permute2f128_ps(u0, u1, 0x31));
}
#endif

/* One query (q: HSP, rotated, scaled) against keys 0..nk-1: o (HS) = softmax(q K^T) V, with
 * the row of scores materialised in row (nk). The decode path: memory-bound on K and V, so
 * the point is to keep every loop free of dependency chains through memory. */
static void dec_row(float *o, float *row, const float *q, const float *K, const float *V,
                    int nk, int HS, int HSP)
{
    int j = 0;
    float m = -INFINITY, l = 0.0f;
#if MNI_HAVE_AVX2
    __m256 mv = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= nk; j += 8) {
        __m256 s = dot8(q, K + (size_t)j * HSP, HSP);
        _mm256_storeu_ps(row + j, s);
        mv = _mm256_max_ps(mv, s);
    }
    for (int i = 0; i < 8; i++) m = mv[i] > m ? mv[i] : m;
#endif
    for (; j < nk; j++) {
        const float *k = K + (size_t)j * HSP;
        float s = 0.0f;
        for (int d = 0; d < HSP; d++) s += q[d] * k[d];
        row[j] = s;
        m = s > m ? s : m;
    }
    j = 0;
#if MNI_HAVE_AVX2
    __m256 lv = _mm256_setzero_ps();
    for (; j + 8 <= nk; j += 8) {
        __m256 p = exp2_avx(_mm256_sub_ps(_mm256_loadu_ps(row + j), _mm256_set1_ps(m)));
        _mm256_storeu_ps(row + j, p);
        lv = _mm256_add_ps(lv, p);
    }
    for (int i = 0; i < 8; i++) l += lv[i];
#endif
    for (; j < nk; j++) {
        row[j] = exp2_scalar(row[j] - m);
        l += row[j];
    }
    // o = sum_j P_j v_j, 64 columns (8 accumulators) at a time
    for (int d0 = 0; d0 < HSP; d0 += 64) {
        int nd = HSP - d0 < 64 ? HSP - d0 : 64;
#if MNI_HAVE_AVX2
        __m256 acc[8];
        for (int k = 0; k < 8; k++) acc[k] = _mm256_setzero_ps();
        for (j = 0; j < nk; j++) {
            __m256 p = _mm256_broadcast_ss(row + j);
            const float *v = V + (size_t)j * HSP + d0;
            for (int k = 0; k < nd / 8; k++)
                acc[k] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * k), acc[k]);
        }
        const __m256 il = _mm256_set1_ps(1.0f / l);
        float tmp[64];
        for (int k = 0; k < nd / 8; k++)
            _mm256_storeu_ps(tmp + 8 * k, _mm256_mul_ps(acc[k], il));
        for (int d = 0; d < nd && d0 + d < HS; d++) o[d0 + d] = tmp[d];
#else
        float acc[64];
        for (int d = 0; d < nd; d++) acc[d] = 0.0f;
        for (j = 0; j < nk; j++) {
            const float *v = V + (size_t)j * HSP + d0;
            for (int d = 0; d < nd; d++) acc[d] += row[j] * v[d];
        }
        for (int d = 0; d < nd && d0 + d < HS; d++) o[d0 + d] = acc[d] * (1.0f / l);
#endif
    }
}

/* Appends n tokens to the KV cache and attends them causally: token t (absolute position
 * count + t) sees cache slots 0 .. count + t. The keys are rotated once, at their own
 * position, when they enter the cache; queries are rotated at theirs. Decoding (n < DEC_MAX)
 * runs one row per (head, token); longer chunks reuse the forward's strip kernel. */
/* The checks every step() of the kind (fast or reference) makes before it changes the state. */
static enum mnemo_status check_step(const struct mnemo_attn_cfg *cfg,
                                    const struct mnemo_attn_step *s)
{
    enum mnemo_status rc = dense_validate(cfg);
    if (rc != MNEMO_OK) return rc;
    const void *state = s->state, *out = s->out, *qkv = s->qkv, *scratch = s->scratch;
    const int n = s->n;
    if (!state || !out || !qkv || !scratch)
        return mni_err(MNEMO_ERR_ARG, "dense: step needs state, out, qkv and scratch buffers");
    if (n < 1) return mni_err(MNEMO_ERR_ARG, "dense: step needs n >= 1 tokens, got %d", n);
    const struct mni_dense_state *st = state;
    const int windowed = mni_dense_window(cfg) > 0;
    if (st->n_ctx != mni_dense_slots(cfg) || st->count < 0 || (!windowed && st->count > st->n_ctx))
        return mni_err(MNEMO_ERR_ARG,
                       "dense: state not initialised for this cfg (slots %lld vs %d, count %lld)",
                       (long long)st->n_ctx, mni_dense_slots(cfg), (long long)st->count);
    if (!windowed && st->count + n > st->n_ctx)
        return mni_err(MNEMO_ERR_FULL,
                       "dense: KV cache full: %lld tokens held + %d new > n_ctx %d",
                       (long long)st->count, n, cfg->n_ctx);
    return MNEMO_OK;
}

int64_t mni_dense_slot(const struct mnemo_attn_cfg *cfg, int64_t pos)
{
    const int64_t g = mni_dense_sinks(cfg), W = mni_dense_window(cfg);
    return W == 0 || pos < g ? pos : g + (pos - g) % W;
}

int64_t mni_dense_slot_pos(const struct mnemo_attn_cfg *cfg, int64_t count, int64_t slot)
{
    const int64_t g = mni_dense_sinks(cfg), W = mni_dense_window(cfg);
    if (W == 0 || slot < g) return slot;
    const int64_t first = count - W > g ? count - W : g; /* the oldest held position >= g */
    return first + (((slot - g) - (first - g) % W) % W + W) % W;
}

int64_t mni_dense_rank(const struct mnemo_attn_cfg *cfg, int64_t count, int64_t pos)
{
    const int64_t g = mni_dense_sinks(cfg), W = mni_dense_window(cfg);
    if (W == 0 || pos < g) return pos;
    const int64_t first = count - W > g ? count - W : g;
    return g + (pos - first);
}

/* A windowed session (options window, sinks, positions), token by token: the new key and value
 * enter their slot (the first `sinks` positions stay, the others share a ring of `window`
 * slots), then the query attends over every held slot. With positions=absolute keys are rotated
 * once at their stream position as they enter (the query at its own); with positions=cache
 * (StreamingLLM) keys are kept unrotated and every step rotates the held ones at their rank in
 * the cache (sinks 0..g-1, then the window oldest first) and the query at the last rank. */
static void windowed_step(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *sa)
{
    struct mni_dense_state *st = sa->state;
    const int NH = cfg->n_head, HS = cfg->head_dim, HSP = mni_dense_hsp(HS);
    const size_t C = (size_t)NH * HS, S = (size_t)st->n_ctx;
    const int absolute = mni_dense_absolute(cfg);
    struct step_lay lay;
    step_layout(&lay, cfg, 1);
    float *cs = (float *)sa->scratch;                             // (HS/2,2)
    float *q = (float *)((char *)sa->scratch + lay.q);            // (HSP)
    float *row = (float *)((char *)sa->scratch + lay.row);        // (S)
    float *kr = (float *)((char *)sa->scratch + lay.kr);          // (NH,S,HSP)
    float *kc = (float *)((char *)sa->state + mni_dense_state_hdr_bytes()); // (NH,S,HSP)
    float *vc = kc + (size_t)NH * S * HSP;
    const float qscale = (float)(LOG2E / sqrt((double)HS));
    for (int t = 0; t < sa->n; t++) {
        const int64_t pos = st->count, slot = mni_dense_slot(cfg, pos);
        const int64_t held = pos + 1 < (int64_t)S ? pos + 1 : (int64_t)S;
        const float *x = sa->qkv + (size_t)t * 3 * C;
        if (cfg->rope && absolute)
            for (int i = 0; i < HS / 2; i++)
                mni_rope_cs(&cs[2 * i], &cs[2 * i + 1], (int)pos, i, HS, cfg->rope_theta);
        for (int h = 0; h < NH; h++) {
            const size_t r = ((size_t)h * S + (size_t)slot) * HSP;
            load_head(kc + r, x + C + (size_t)h * HS, cfg->rope && absolute ? cs : NULL, HS, HSP, 1.0f);
            load_head(vc + r, x + 2 * C + (size_t)h * HS, NULL, HS, HSP, 1.0f);
        }
        st->count++;
        if (cfg->rope && !absolute) { /* the held keys at their ranks; the query at the last */
            const float *table = (const float *)((char *)sa->state + mni_dense_state_hdr_bytes() +
                                                 2 * kv_bytes(cfg)); // (S,HS/2,2)
            for (int64_t s = 0; s < held; s++) {
                const int64_t rank = mni_dense_rank(cfg, st->count, mni_dense_slot_pos(cfg, st->count, s));
                for (int h = 0; h < NH; h++) {
                    const size_t r = ((size_t)h * S + (size_t)s) * HSP;
                    load_head(kr + r, kc + r, table + (size_t)rank * HS, HS, HSP, 1.0f);
                }
            }
            memcpy(cs, table + (size_t)(held - 1) * HS, sizeof(float) * HS);
        }
        const float *K = cfg->rope && !absolute ? kr : kc;
        for (int h = 0; h < NH; h++) {
            load_head(q, x + (size_t)h * HS, cfg->rope ? cs : NULL, HS, HSP, qscale);
            dec_row(sa->out + (size_t)t * C + (size_t)h * HS, row, q, K + (size_t)h * S * HSP,
                    vc + (size_t)h * S * HSP, (int)held, HS, HSP);
        }
    }
}

static enum mnemo_status dense_step(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *sa)
{
    enum mnemo_status rc = check_step(cfg, sa);
    if (rc != MNEMO_OK) return rc;
    if (mni_dense_window(cfg) > 0) {
        windowed_step(cfg, sa);
        return MNEMO_OK;
    }
    struct mni_dense_state *st = sa->state;
    void *state = sa->state, *scratch = sa->scratch;
    float *out = sa->out;
    const float *qkv = sa->qkv;
    const int n = sa->n;

    const int NH = cfg->n_head, HS = cfg->head_dim, HSP = mni_dense_hsp(HS);
    const size_t C = (size_t)NH * HS, n_ctx = (size_t)cfg->n_ctx;
    const int p0 = (int)st->count;
    struct step_lay lay;
    step_layout(&lay, cfg, n);
    float *cs = cfg->rope ? (float *)scratch : NULL;        // (n,HS/2,2)
    float *qs = (float *)((char *)scratch + lay.q);         // (NH,n,HSP)
    float *rows = (float *)((char *)scratch + lay.row);     // (NH,n_ctx)
    float *kc = (float *)((char *)state + mni_dense_state_hdr_bytes()); // (NH,n_ctx,HSP)
    float *vc = kc + (size_t)NH * n_ctx * HSP;                          // (NH,n_ctx,HSP)
    const float qscale = (float)(LOG2E / sqrt((double)HS));

    // rotate at the absolute positions p0..p0+n-1 (mni_rope_cs: the same factors the forward's
    // table holds for those positions); append k, v to the cache, queries to scratch
    for (int t = 0; t < n && cs; t++) {
        for (int i = 0; i < HS / 2; i++) {
            float *c = cs + (size_t)t * HS + 2 * i;
            mni_rope_cs(&c[0], &c[1], p0 + t, i, HS, cfg->rope_theta);
        }
    }
#pragma omp parallel for schedule(static) if (n * C >= 4096)
    for (int t = 0; t < n; t++) {
        const float *x = qkv + (size_t)t * 3 * C;
        const float *csr = cs ? cs + (size_t)t * HS : NULL;
        for (int h = 0; h < NH; h++) {
            size_t r = ((size_t)h * n_ctx + p0 + t) * HSP;
            load_head(qs + ((size_t)h * n + t) * HSP, x + (size_t)h * HS, csr, HS, HSP, qscale);
            load_head(kc + r, x + C + (size_t)h * HS, csr, HS, HSP, 1.0f);
            load_head(vc + r, x + 2 * C + (size_t)h * HS, NULL, HS, HSP, 1.0f);
        }
    }
    if (n < DEC_MAX) {
        // decoding: a few rows, one dot product per cached key; heads in parallel once the
        // cache is large enough to pay for waking the threads
#pragma omp parallel for schedule(static) if ((long)NH * (p0 + n) >= 4096)
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < n; t++) {
                dec_row(out + (size_t)t * C + (size_t)h * HS, rows + (size_t)h * n_ctx,
                        qs + ((size_t)h * n + t) * HSP, kc + (size_t)h * n_ctx * HSP,
                        vc + (size_t)h * n_ctx * HSP, p0 + t + 1, HS, HSP);
            }
        }
    } else {
        // chunked prefill: the forward's strips, queries at p0 + q0; keys are the cache slots
        // 0 .. p0+q0+nq-1, which already include this chunk's own keys
        const int ns = (n + QW - 1) / QW;
        const long ntask = (long)NH * ns;
#pragma omp parallel for schedule(dynamic, 1)
        for (long task = 0; task < ntask; task++) {
            int s = ns - 1 - (int)(task / NH), h = (int)(task % NH);
            int q0 = s * QW, nq = n - q0 < QW ? n - q0 : QW;
            fwd_strip(out + (size_t)q0 * C + (size_t)h * HS, C, NULL,
                      qs + ((size_t)h * n + q0) * HSP, nq, p0 + q0,
                      kc + (size_t)h * n_ctx * HSP, vc + (size_t)h * n_ctx * HSP, HS, HSP);
        }
    }
    st->count += n;
    return MNEMO_OK;
}

/* The reference: the same option table, checks and state layout; the computing slots are
 * dense_ref.c's. */
static size_t ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    return mni_dense_ref_scratch_bytes(cfg, B, T);
}

static enum mnemo_status ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 0);
    if (st == MNEMO_OK && !io->scratch)
        st = mni_err(MNEMO_ERR_ARG, "dense: the reference forward needs a scratch buffer");
    return st != MNEMO_OK ? st : mni_dense_ref_forward(cfg, io);
}

static enum mnemo_status ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 1);
    return st != MNEMO_OK ? st : mni_dense_ref_backward(cfg, io);
}

static enum mnemo_status ref_step(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *s)
{
    enum mnemo_status rc = check_step(cfg, s);
    if (rc == MNEMO_OK) mni_dense_ref_step(cfg, s->state, s->out, s->qkv, s->n, s->scratch);
    return rc;
}

const struct mnemo_attn_ops mni_attn_dense = {
    .api_version = MNEMO_ATTN_API_VERSION,
    .name = "dense",
    .opts = dense_opts,
    .n_opts = MNI_DENSE_OPT_COUNT,
    .caps = dense_caps,
    .validate = dense_validate,
    .flops_per_token = dense_flops,
    .act_bytes = dense_act_bytes,
    .scratch_bytes = dense_scratch_bytes,
    .forward = dense_forward,
    .backward = dense_backward,
    .state_bytes = dense_state_bytes,
    .step_scratch_bytes = dense_step_scratch_bytes,
    .state_init = dense_state_init,
    .step = dense_step,
    .state_live_bytes = dense_state_live_bytes,
};

const struct mnemo_attn_ops mni_attn_dense_ref = {
    .api_version = MNEMO_ATTN_API_VERSION,
    .name = "dense",
    .is_ref = 1,
    .opts = dense_opts,
    .n_opts = MNI_DENSE_OPT_COUNT,
    .caps = dense_caps,
    .validate = dense_validate,
    .flops_per_token = dense_flops,
    .act_bytes = dense_act_bytes,
    .scratch_bytes = ref_scratch_bytes,
    .forward = ref_forward,
    .backward = ref_backward,
    .state_bytes = dense_state_bytes,
    .step_scratch_bytes = mni_dense_ref_step_scratch_bytes,
    .state_init = dense_state_init,
    .step = ref_step,
    .state_live_bytes = dense_state_live_bytes,
};
