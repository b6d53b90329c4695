/*
 * matmul.c -- the linear layer y = x W^T + b through cblas (OpenBLAS), W in nn.Linear layout
 * (OC, C), and its naive reference. Every BLAS call of the layers lives in this file (the
 * other is Muon's Newton-Schulz in src/optim.c); the products with the weight on the right go
 * to the own gemm first (kern/gemm.c).
 */
#include <cblas.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kern.h"
#include "mnemo.h"
#include "mni.h"

/* OpenBLAS exports these whatever cblas.h declares. */
extern void openblas_set_num_threads(int n);
extern int openblas_get_num_threads(void);

static int n_threads;

void mni_set_threads(int n)
{
    if (n <= 0) return;
    n_threads = n;
#ifdef _OPENMP
    omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n);
}

enum mnemo_status mnemo_set_threads(int n)
{
    if (n < 1 || n > MNEMO_MAX_THREADS)
        return mni_err(MNEMO_ERR_ARG, "threads = %d: must be in [1, %d]", n, MNEMO_MAX_THREADS);
    mni_set_threads(n);
    return MNEMO_OK;
}

int mni_get_threads(void)
{
    if (n_threads > 0) return n_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The cblas path of mni_matmul_fwd_res: res + bias written first, then sgemm with beta = 1. */
static void blas_fwd_res(float *out, const float *inp, const float *w, const float *bias,
                         const float *res, size_t N, size_t C, size_t OC)
{
    float beta = 0.0f;
    if (bias || res) {
#pragma omp parallel for schedule(static)
        for (size_t n = 0; n < N; n++) {
            float *o = out + n * OC;
            const float *r = res ? res + n * OC : NULL;
            if (bias && r)
                for (size_t j = 0; j < OC; j++) o[j] = r[j] + bias[j];
            else
                memcpy(o, bias ? bias : r, OC * sizeof(float));
        }
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, (int)OC, (int)C, 1.0f, inp,
                (int)C, w, (int)C, beta, out, (int)OC);
}

/* out (N,OC) = res + inp w^T + bias. The own gemm (kern/gemm.c) adds res and bias as it
 * writes each tile, the cblas path through beta = 1: neither spends a pass of its own on them. */
void mni_matmul_fwd_res(float *out, const float *inp, const float *w, const float *bias,
                        const float *res, size_t N, size_t C, size_t OC)
{
    const struct mni_gemm_epi e = {.bias = bias, .res = res};
    if (mni_gemm(out, inp, w, 1, N, OC, C, &e) != 0) blas_fwd_res(out, inp, w, bias, res, N, C, OC);
}

void mni_matmul_fwd_gelu(float *pre, float *out, const float *inp, const float *w,
                         const float *bias, size_t N, size_t C, size_t OC)
{
    const struct mni_gemm_epi e = {.bias = bias, .gelu_out = out};
    if (mni_gemm(pre, inp, w, 1, N, OC, C, &e) == 0) return;
    blas_fwd_res(pre, inp, w, bias, NULL, N, C, OC);
    mni_gelu_fwd(out, pre, N * OC);
}

void mni_matmul_fwd(float *out, const float *inp, const float *w, const float *bias,
                    size_t N, size_t C, size_t OC)
{
    mni_matmul_fwd_res(out, inp, w, bias, NULL, N, C, OC);
}

void mni_matmul_bwd_gelu(float *dinp, float *dw, float *dbias, const float *dout,
                         const float *inp, const float *w, const float *gelu_pre, size_t N,
                         size_t C, size_t OC)
{
    /* forward: out = inp w^T + b
     * dinp (N,C) = dout (N,OC) . w (OC,C)  [times gelu'(gelu_pre) if given]
     * dw (OC,C) += dout^T (OC,N) . inp (N,C)
     * dbias (OC) += sum_n dout[n]
     * dw stays with cblas: its long inner dimension (N) suits OpenBLAS's packed kernels, and
     * a first own try was slower (docs/internals/gemm.md). */
    if (dinp) {
        const struct mni_gemm_epi e = {.gelu_pre = gelu_pre};
        if (mni_gemm(dinp, dout, w, 0, N, C, OC, &e) != 0) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)OC, 1.0f,
                        dout, (int)OC, w, (int)C, 0.0f, dinp, (int)C);
            if (gelu_pre) mni_gelu_bwd(dinp, gelu_pre, dinp, N * C);
        }
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)C, (int)N, 1.0f, dout,
                (int)OC, inp, (int)C, 1.0f, dw, (int)C);
    if (dbias) {
        /* column sums in a local block of 64 sums: kept in registers across the rows (dbias
         * itself could alias dout as far as the compiler knows, forcing a load and a store
         * per element per row) */
#pragma omp parallel for schedule(static)
        for (size_t o0 = 0; o0 < OC; o0 += 64) {
            const size_t cw = o0 + 64 < OC ? 64 : OC - o0;
            float acc[64] = {0};
            if (cw == 64) {
                for (size_t n = 0; n < N; n++) {
                    const float *d = dout + n * OC + o0;
                    for (size_t o = 0; o < 64; o++) acc[o] += d[o];
                }
            } else {
                for (size_t n = 0; n < N; n++) {
                    const float *d = dout + n * OC + o0;
                    for (size_t o = 0; o < cw; o++) acc[o] += d[o];
                }
            }
            for (size_t o = 0; o < cw; o++) dbias[o0 + o] += acc[o];
        }
    }
}

void mni_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                    const float *w, size_t N, size_t C, size_t OC)
{
    mni_matmul_bwd_gelu(dinp, dw, dbias, dout, inp, w, NULL, N, C, OC);
}

void mni_blas_sgemm(float *c, const float *a, const float *b, int transb, size_t M, size_t N,
                    size_t K)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, transb ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                (int)K, 1.0f, a, (int)K, b, transb ? (int)K : (int)N, 0.0f, c, (int)N);
}

void mni_matmul_fwd_ref(float *out, const float *inp, const float *w, const float *bias,
                        size_t N, size_t C, size_t OC)
{
    for (size_t n = 0; n < N; n++)
        for (size_t o = 0; o < OC; o++) {
            double acc = bias ? bias[o] : 0.0;
            for (size_t c = 0; c < C; c++) acc += (double)inp[n * C + c] * w[o * C + c];
            out[n * OC + o] = (float)acc;
        }
}

void mni_matmul_bwd_ref(float *dinp, float *dw, float *dbias, const float *dout,
                        const float *inp, const float *w, size_t N, size_t C, size_t OC)
{
    if (dinp)
        for (size_t n = 0; n < N; n++)
            for (size_t c = 0; c < C; c++) {
                double acc = 0;
                for (size_t o = 0; o < OC; o++) acc += (double)dout[n * OC + o] * w[o * C + c];
                dinp[n * C + c] = (float)acc;
            }
    for (size_t o = 0; o < OC; o++) {
        for (size_t c = 0; c < C; c++) {
            double acc = 0;
            for (size_t n = 0; n < N; n++) acc += (double)dout[n * OC + o] * inp[n * C + c];
            dw[o * C + c] += (float)acc;
        }
        if (dbias) {
            double acc = 0;
            for (size_t n = 0; n < N; n++) acc += dout[n * OC + o];
            dbias[o] += (float)acc;
        }
    }
}
