/*
 * gemm.c -- the library's own sgemm for the products of the linear layers whose weight is the
 * right-hand operand: C (M,N) = A (M,K) op(B), op(B) = B^T (nn.Linear's forward, B is (N,K))
 * or B (backward to the input, B is (K,N)), with the layers' elementwise work done while a
 * tile of C is still in registers or L1 (the "epilogue"): bias, a residual, GELU, GELU's
 * derivative.
 *
 * Why not cblas_sgemm: OpenBLAS copies ("packs") both operands into its own layout on every
 * call and zeroes C first when beta = 0. With the activation operand tall and thin (N*T rows,
 * K = d_model .. 4 d_model), those copies and the separate elementwise passes cost 10-20 % of a
 * product at d_model 128 (docs/internals/gemm.md). Here only the weight is packed (K x N
 * floats, small next to the activations), the activation rows are read in place, and C is
 * written once.
 *
 * Scheme (BLIS-style, AVX2 + FMA): a 6 x 16 micro-tile of C lives in 12 ymm registers; per k
 * it takes 2 vector loads of packed B and 6 broadcasts from 6 rows of A. B is packed into
 * panels of 16 columns, k-major, zero-padded to 16, once per call and shared by the threads;
 * threads split the rows of C. K is cut in blocks of KC (the 6 rows of A stay in L1), and the
 * panels in groups of about 192 KB (the group stays in L2) while every thread sweeps its rows.
 * Each element of C has one writer and a fixed summation order: results do not depend on
 * the thread count.
 *
 * The pack buffer is per calling thread (a pthread key), grown to the largest product seen
 * and kept: training allocates it in its first step and never again. It is allocated with
 * plain malloc, not through the library's failure-injection hook (mni_alloc): a failure here
 * is absorbed by design, so injecting one would test nothing. Fewer than MIN_ROWS rows in the
 * forward layout go to gemm_rows, which packs nothing. mni_gemm returns -1 when it cannot run
 * (no AVX2 at build time, a backward product too small to be worth packing, a weight larger
 * than MAX_PACK floats -- a large vocabulary's output head --, no memory); the caller then
 * uses cblas (kern/matmul.c), so nothing here can fail a computation. The two paths agree to
 * rounding, not bit for bit (different summation order), and the path depends on the number
 * of rows: a session fed one token at a time and one fed 32 at once differ in the last bits.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kern/kern.h"
#include "kern/vmath.h"
#include "mni.h"

#if MNI_HAVE_AVX2
#include <immintrin.h>

#define MR 6   /* rows of the micro-tile */
#define NR 16  /* columns of the micro-tile: two ymm */
#define KC 256 /* k block: 6 rows of A (6 KB) stay in L1 */
#define GROUP_BYTES (192 * 1024) /* packed panels swept per pass over the rows: stays in L2 */
#define MIN_ROWS 32 /* below this the packing of B costs more than it saves: gemm_rows, or
                     * (the backward layout) cblas */
#define MAX_PACK ((size_t)1 << 23) /* 32 MB of packed weight at most per thread: beyond, cblas */

/* ---- the per-thread pack buffer ------------------------------------------------------------ */
struct pack_buf {
    float *p;
    size_t cap; /* floats */
};
static pthread_key_t pack_key;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;
static int pack_key_ok;

static void pack_buf_free(void *v)
{
    struct pack_buf *b = v;
    if (b) free(b->p);
    free(b);
}

static void pack_key_init(void) { pack_key_ok = pthread_key_create(&pack_key, pack_buf_free) == 0; }

static float *pack_get(size_t n)
{
    pthread_once(&pack_once, pack_key_init);
    if (!pack_key_ok) return NULL;
    struct pack_buf *b = pthread_getspecific(pack_key);
    if (!b) {
        b = calloc(1, sizeof(*b));
        if (!b) return NULL;
        if (pthread_setspecific(pack_key, b) != 0) {
            free(b);
            return NULL;
        }
    }
    if (n > b->cap) {
        void *p = NULL;
        if (posix_memalign(&p, 64, n * sizeof(float)) != 0) return NULL; /* old one stays */
        free(b->p);
        b->p = p;
        b->cap = n;
    }
    return b->p;
}

/* ---- packing -------------------------------------------------------------------------------- */
/* Panel of NR columns starting at n0 (nr of them real), all K rows: d[k*NR + j] = op(B)(k, n0+j),
 * zero for j >= nr. */
static void pack_panel(float *d, const float *B, int transb, size_t K, size_t N, size_t n0,
                       size_t nr)
{
    if (transb) { /* op(B)(k, n) = B[n*K + k]: each column of the panel is a row of B */
        for (size_t j = 0; j < NR; j++) {
            if (j < nr) {
                const float *s = B + (n0 + j) * K;
                for (size_t k = 0; k < K; k++) d[k * NR + j] = s[k];
            } else {
                for (size_t k = 0; k < K; k++) d[k * NR + j] = 0.0f;
            }
        }
    } else { /* op(B)(k, n) = B[k*N + n]: rows of the panel are slices of rows of B */
        for (size_t k = 0; k < K; k++) {
            const float *s = B + k * N + n0;
            float *o = d + k * NR;
            if (nr == NR) {
                memcpy(o, s, NR * sizeof(float));
            } else {
                for (size_t j = 0; j < NR; j++) o[j] = j < nr ? s[j] : 0.0f;
            }
        }
    }
}

/* ---- the micro-kernel ---------------------------------------------------------------------- */
static inline void store_row(float *row, __m256 v0, __m256 v1, size_t nr)
{
    if (nr == NR) {
        _mm256_storeu_ps(row, v0);
        _mm256_storeu_ps(row + 8, v1);
    } else {
        float t[NR];
        _mm256_storeu_ps(t, v0);
        _mm256_storeu_ps(t + 8, v1);
        memcpy(row, t, nr * sizeof(float));
    }
}

/* The first nr (<= 16) floats at p as two vectors, zero past nr. */
static inline void load_row(const float *p, size_t nr, __m256 *v0, __m256 *v1)
{
    if (nr == NR) {
        *v0 = _mm256_loadu_ps(p);
        *v1 = _mm256_loadu_ps(p + 8);
    } else {
        float t[NR] = {0};
        memcpy(t, p, nr * sizeof(float));
        *v0 = _mm256_loadu_ps(t);
        *v1 = _mm256_loadu_ps(t + 8);
    }
}

/* Writes the mr x nr tile at c (row stride ldc, at row m0 and column n0 of C) from acc (12 ymm,
 * row-major pairs). first: the first k block, so the tile starts from the epilogue's initial
 * value (res + bias, or 0) rather than from c. last: the last k block, so the GELU parts of
 * the epilogue apply. */
static void tile_store(float *c, size_t ldc, size_t m0, size_t n0, const __m256 *acc, size_t mr,
                       size_t nr, int first, int last, const struct mni_gemm_epi *e)
{
    for (size_t i = 0; i < mr; i++) {
        float *row = c + i * ldc;
        const size_t off = (m0 + i) * ldc + n0;
        __m256 v0 = acc[2 * i], v1 = acc[2 * i + 1], u0, u1;
        if (!first) {
            load_row(row, nr, &u0, &u1);
            v0 = _mm256_add_ps(v0, u0);
            v1 = _mm256_add_ps(v1, u1);
        } else if (e) {
            if (e->res) {
                load_row(e->res + off, nr, &u0, &u1);
                v0 = _mm256_add_ps(v0, u0);
                v1 = _mm256_add_ps(v1, u1);
            }
            if (e->bias) {
                load_row(e->bias + n0, nr, &u0, &u1);
                v0 = _mm256_add_ps(v0, u0);
                v1 = _mm256_add_ps(v1, u1);
            }
        }
        if (last && e && e->gelu_pre) {
            load_row(e->gelu_pre + off, nr, &u0, &u1);
            v0 = _mm256_mul_ps(mni_gelu_grad_ps(u0), v0);
            v1 = _mm256_mul_ps(mni_gelu_grad_ps(u1), v1);
        }
        store_row(row, v0, v1, nr);
        if (last && e && e->gelu_out)
            store_row(e->gelu_out + off, mni_gelu_ps(v0), mni_gelu_ps(v1), nr);
    }
}

/* acc (6 x 16) = sum over kc of A rows (a, stride lda) times the packed panel bp. Rows past mr
 * re-read row mr-1 (always valid memory); their results are not stored. */
static void micro_tile(size_t kc, const float *a, size_t lda, const float *bp, size_t mr,
                       __m256 acc[12])
{
    const float *a0 = a, *a1 = a + (mr > 1 ? 1 : mr - 1) * lda,
                *a2 = a + (mr > 2 ? 2 : mr - 1) * lda, *a3 = a + (mr > 3 ? 3 : mr - 1) * lda,
                *a4 = a + (mr > 4 ? 4 : mr - 1) * lda, *a5 = a + (mr > 5 ? 5 : mr - 1) * lda;
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(),
           c11 = _mm256_setzero_ps(), c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(),
           c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps(), c40 = _mm256_setzero_ps(),
           c41 = _mm256_setzero_ps(), c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (size_t k = 0; k < kc; k++) {
        const __m256 b0 = _mm256_loadu_ps(bp), b1 = _mm256_loadu_ps(bp + 8);
        __m256 x;
        bp += NR;
        x = _mm256_broadcast_ss(a0 + k);
        c00 = _mm256_fmadd_ps(x, b0, c00);
        c01 = _mm256_fmadd_ps(x, b1, c01);
        x = _mm256_broadcast_ss(a1 + k);
        c10 = _mm256_fmadd_ps(x, b0, c10);
        c11 = _mm256_fmadd_ps(x, b1, c11);
        x = _mm256_broadcast_ss(a2 + k);
        c20 = _mm256_fmadd_ps(x, b0, c20);
        c21 = _mm256_fmadd_ps(x, b1, c21);
        x = _mm256_broadcast_ss(a3 + k);
        c30 = _mm256_fmadd_ps(x, b0, c30);
        c31 = _mm256_fmadd_ps(x, b1, c31);
        x = _mm256_broadcast_ss(a4 + k);
        c40 = _mm256_fmadd_ps(x, b0, c40);
        c41 = _mm256_fmadd_ps(x, b1, c41);
        x = _mm256_broadcast_ss(a5 + k);
        c50 = _mm256_fmadd_ps(x, b0, c50);
        c51 = _mm256_fmadd_ps(x, b1, c51);
    }
    acc[0] = c00, acc[1] = c01, acc[2] = c10, acc[3] = c11, acc[4] = c20, acc[5] = c21;
    acc[6] = c30, acc[7] = c31, acc[8] = c40, acc[9] = c41, acc[10] = c50, acc[11] = c51;
}

/* The sum of the 8 lanes of v. */
static inline float hsum8(__m256 v)
{
    __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    x = _mm_add_ps(x, _mm_movehl_ps(x, x));
    x = _mm_add_ss(x, _mm_movehdup_ps(x));
    return _mm_cvtss_f32(x);
}

/* Few rows of A (a decode step, a short chunk), the forward layout (B is (N,K)): no packing --
 * packing all of B to use it for one row is what makes cblas slow here. Four columns at a time
 * (four rows of B, in L1 while every row of A passes), each a dot product over k in 8 lanes,
 * then the epilogue as tile_store applies it (+ res, + bias, GELU). Each element of C has one
 * writer and a fixed summation order, whatever the thread count. */
static void gemm_rows(float *C, const float *A, const float *B, size_t M, size_t N, size_t K,
                      const struct mni_gemm_epi *e)
{
    const size_t nb = (N + 3) / 4, K8 = K & ~(size_t)7;
#pragma omp parallel for schedule(static) if (M * N * K >= ((size_t)1 << 20))
    for (size_t q = 0; q < nb; q++) {
        const size_t n0 = q * 4, nr = N - n0 < 4 ? N - n0 : 4;
        const float *b[4];
        for (size_t j = 0; j < 4; j++) b[j] = B + (n0 + (j < nr ? j : nr - 1)) * K;
        for (size_t m = 0; m < M; m++) {
            const float *a = A + m * K;
            __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(),
                   s3 = _mm256_setzero_ps();
            for (size_t k = 0; k < K8; k += 8) {
                const __m256 x = _mm256_loadu_ps(a + k);
                s0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b[0] + k), s0);
                s1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b[1] + k), s1);
                s2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b[2] + k), s2);
                s3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b[3] + k), s3);
            }
            float d[8] = {hsum8(s0), hsum8(s1), hsum8(s2), hsum8(s3), 0, 0, 0, 0};
            for (size_t k = K8; k < K; k++)
                for (size_t j = 0; j < 4; j++) d[j] += a[k] * b[j][k];
            const size_t off = m * N + n0;
            for (size_t j = 0; j < nr && e; j++) {
                if (e->res) d[j] += e->res[off + j];
                if (e->bias) d[j] += e->bias[n0 + j];
            }
            if (e && e->gelu_pre) {
                float p[8] = {0};
                memcpy(p, e->gelu_pre + off, nr * sizeof(float));
                _mm256_storeu_ps(d, _mm256_mul_ps(mni_gelu_grad_ps(_mm256_loadu_ps(p)),
                                                  _mm256_loadu_ps(d)));
            }
            memcpy(C + off, d, nr * sizeof(float));
            if (e && e->gelu_out) {
                float g[8];
                _mm256_storeu_ps(g, mni_gelu_ps(_mm256_loadu_ps(d)));
                memcpy(e->gelu_out + off, g, nr * sizeof(float));
            }
        }
    }
}

int mni_gemm(float *C, const float *A, const float *B, int transb, size_t M, size_t N, size_t K,
             const struct mni_gemm_epi *e)
{
    if (M == 0 || N == 0 || K == 0) return -1;
    if (M < MIN_ROWS && transb) {
        gemm_rows(C, A, B, M, N, K, e);
        return 0;
    }
    if (M < MIN_ROWS) return -1;
    const size_t np = (N + NR - 1) / NR, mt = (M + MR - 1) / MR;
    if (np * NR * K > MAX_PACK) return -1;
    float *bp = pack_get(np * NR * K);
    if (!bp) return -1;
    size_t group = GROUP_BYTES / ((K < KC ? K : KC) * NR * sizeof(float));
    if (group < 1) group = 1;
#pragma omp parallel
    {
#pragma omp for schedule(static)
        for (size_t p = 0; p < np; p++) {
            size_t n0 = p * NR;
            pack_panel(bp + p * K * NR, B, transb, K, N, n0, N - n0 < NR ? N - n0 : NR);
        }
        for (size_t k0 = 0; k0 < K; k0 += KC) {
            const size_t kc = K - k0 < KC ? K - k0 : KC;
            const int first = k0 == 0, last = k0 + kc == K;
            for (size_t p0 = 0; p0 < np; p0 += group) {
                const size_t p1 = p0 + group < np ? p0 + group : np;
                /* same static split of the rows for every (k, group) block: a thread only ever
                 * touches its own rows of C, so no barrier is needed between blocks */
#pragma omp for schedule(static) nowait
                for (size_t t = 0; t < mt; t++) {
                    const size_t m0 = t * MR, mr = M - m0 < MR ? M - m0 : MR;
                    __m256 acc[12];
                    for (size_t p = p0; p < p1; p++) {
                        const size_t n0 = p * NR, nr = N - n0 < NR ? N - n0 : NR;
                        micro_tile(kc, A + m0 * K + k0, K, bp + p * K * NR + k0 * NR, mr, acc);
                        tile_store(C + m0 * N + n0, N, m0, n0, acc, mr, nr, first, last, e);
                    }
                }
            }
        }
    }
    return 0;
}

#else /* no AVX2: cblas does every product */

int mni_gemm(float *C, const float *A, const float *B, int transb, size_t M, size_t N, size_t K,
             const struct mni_gemm_epi *e)
{
    (void)C, (void)A, (void)B, (void)transb, (void)M, (void)N, (void)K, (void)e;
    return -1;
}

#endif
