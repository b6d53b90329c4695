/*
 * matmul.c -- the linear layer y = x W^T + b through cblas (OpenBLAS), W in nn.Linear layout
 * (OC, C), and its naive reference. Every BLAS call of the library lives in this file.
 */
#include <cblas.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kern.h"
#include "mnemo.h"

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

void mnemo_set_threads(int n) { mni_set_threads(n); }

int mni_get_threads(void)
{
    if (n_threads > 0) return n_threads;
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* out (N,OC) = res + bias broadcast (either may be NULL), then out += inp w^T by sgemm with
 * beta = 1: the residual add and the bias cost no pass of their own. */
void mni_matmul_fwd_res(float *out, const float *inp, const float *w, const float *bias,
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

void mni_matmul_fwd(float *out, const float *inp, const float *w, const float *bias,
                    size_t N, size_t C, size_t OC)
{
    mni_matmul_fwd_res(out, inp, w, bias, NULL, N, C, OC);
}

void mni_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                    const float *w, size_t N, size_t C, size_t OC)
{
    /* forward: out = inp w^T + b
     * dinp (N,C) = dout (N,OC) . w (OC,C)
     * dw (OC,C) += dout^T (OC,N) . inp (N,C)
     * dbias (OC) += sum_n dout[n] */
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, (int)C, (int)OC, 1.0f,
                    dout, (int)OC, w, (int)C, 0.0f, dinp, (int)C);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)OC, (int)C, (int)N, 1.0f, dout,
                (int)OC, inp, (int)C, 1.0f, dw, (int)C);
    if (dbias) {
#pragma omp parallel for schedule(static)
        for (size_t o0 = 0; o0 < OC; o0 += 64) {
            size_t o1 = o0 + 64 < OC ? o0 + 64 : OC;
            for (size_t n = 0; n < N; n++) {
                const float *d = dout + n * OC;
                for (size_t o = o0; o < o1; o++) dbias[o] += d[o];
            }
        }
    }
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
