/*
 * elementwise.c -- LayerNorm, GELU (tanh approximation), fused softmax + cross-entropy and the
 * AdamW update, each with its naive reference (double accumulation). Row kernels parallelise
 * over rows with OpenMP.
 */
#include <math.h>
#include <string.h>

#include "kern.h"
#include "vmath.h"

#define LN_EPS 1e-5f

/* ---- LayerNorm ---------------------------------------------------------------------------- */

void mni_layernorm_fwd(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, size_t N, size_t C)
{
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C; /* (C) */
        float *y = out + n * C;       /* (C) */
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (size_t c = 0; c < C; c++) s += x[c];
        float m = s / (float)C;
        float v = 0.0f;
#pragma omp simd reduction(+ : v)
        for (size_t c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        float r = 1.0f / sqrtf(v / (float)C + LN_EPS);
#pragma omp simd
        for (size_t c = 0; c < C; c++) y[c] = (x[c] - m) * r * w[c] + b[c];
        if (mean) mean[n] = m;
        if (rstd) rstd[n] = r;
    }
}

void mni_layernorm_bwd(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                       const float *w, const float *mean, const float *rstd, size_t N, size_t C)
{
    /* forward: xhat = (x - m) * r; y = xhat * w + b
     * dxhat = dy * w
     * dx = r * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
     * dw += sum_n dy * xhat; db += sum_n dy
     * Rows are independent for dx; dw/db are reduced over rows in per-thread chunks of columns
     * so that no two threads write the same element. */
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C, *dy = dout + n * C;
        float *dx = dinp + n * C;
        float m = mean[n], r = rstd[n];
        float a = 0.0f, bsum = 0.0f;
#pragma omp simd reduction(+ : a, bsum)
        for (size_t c = 0; c < C; c++) {
            float dxh = dy[c] * w[c];
            a += dxh;
            bsum += dxh * (x[c] - m) * r;
        }
        a /= (float)C;
        bsum /= (float)C;
#pragma omp simd
        for (size_t c = 0; c < C; c++) {
            float xh = (x[c] - m) * r;
            dx[c] += r * (dy[c] * w[c] - a - xh * bsum);
        }
    }
#pragma omp parallel for schedule(static)
    for (size_t c0 = 0; c0 < C; c0 += 32) {
        size_t c1 = c0 + 32 < C ? c0 + 32 : C;
        for (size_t n = 0; n < N; n++) {
            const float *x = inp + n * C, *dy = dout + n * C;
            float m = mean[n], r = rstd[n];
            for (size_t c = c0; c < c1; c++) {
                dw[c] += dy[c] * (x[c] - m) * r;
                db[c] += dy[c];
            }
        }
    }
}

void mni_layernorm_fwd_ref(float *out, float *mean, float *rstd, const float *inp,
                           const float *w, const float *b, size_t N, size_t C)
{
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C;
        double s = 0, v = 0;
        for (size_t c = 0; c < C; c++) s += x[c];
        double m = s / (double)C;
        for (size_t c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        double r = 1.0 / sqrt(v / (double)C + LN_EPS);
        for (size_t c = 0; c < C; c++) out[n * C + c] = (float)((x[c] - m) * r * w[c] + b[c]);
        if (mean) mean[n] = (float)m;
        if (rstd) rstd[n] = (float)r;
    }
}

void mni_layernorm_bwd_ref(float *dinp, float *dw, float *db, const float *dout,
                           const float *inp, const float *w, const float *mean,
                           const float *rstd, size_t N, size_t C)
{
    for (size_t n = 0; n < N; n++) {
        const float *x = inp + n * C, *dy = dout + n * C;
        double m = mean[n], r = rstd[n], a = 0, bs = 0;
        for (size_t c = 0; c < C; c++) {
            double xh = (x[c] - m) * r, dxh = (double)dy[c] * w[c];
            a += dxh;
            bs += dxh * xh;
            dw[c] += (float)(dy[c] * xh);
            db[c] += dy[c];
        }
        a /= (double)C;
        bs /= (double)C;
        for (size_t c = 0; c < C; c++) {
            double xh = (x[c] - m) * r;
            dinp[n * C + c] += (float)(r * ((double)dy[c] * w[c] - a - xh * bs));
        }
    }
}

/* ---- GELU (tanh approximation) ------------------------------------------------------------- */

/* tanh(u) = 1 - 2 / (e^{2u} + 1), with the project's exp (vmath.h); |u| is clamped at 9,
 * where tanh is 1 to float precision. The scalar and AVX2 forms compute the same expression. */
static inline float tanh_s(float u)
{
    u = u > 9.0f ? 9.0f : (u < -9.0f ? -9.0f : u);
    return 1.0f - 2.0f / (mni_exp2f(2.0f * MNI_LOG2E * u) + 1.0f);
}

/* GELU over [i0, i1): the vector body (vmath.h) and the scalar tail. */
static void gelu_fwd_range(float *out, const float *inp, size_t i0, size_t i1)
{
    size_t i = i0;
#if MNI_HAVE_AVX2
    for (; i + 8 <= i1; i += 8) _mm256_storeu_ps(out + i, mni_gelu_ps(_mm256_loadu_ps(inp + i)));
#endif
    for (; i < i1; i++) {
        float x = inp[i];
        float t = tanh_s(MNI_GELU_K * (x + MNI_GELU_A * x * x * x));
        out[i] = 0.5f * x * (1.0f + t);
    }
}

static void gelu_bwd_range(float *dinp, const float *inp, const float *dout, size_t i0, size_t i1)
{
    /* forward: y = 0.5 x (1 + tanh(u)), u = k (x + a x^3)
     * dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) k (1 + 3 a x^2) */
    size_t i = i0;
#if MNI_HAVE_AVX2
    for (; i + 8 <= i1; i += 8)
        _mm256_storeu_ps(dinp + i, _mm256_mul_ps(mni_gelu_grad_ps(_mm256_loadu_ps(inp + i)),
                                                 _mm256_loadu_ps(dout + i)));
#endif
    for (; i < i1; i++) {
        float x = inp[i];
        float t = tanh_s(MNI_GELU_K * (x + MNI_GELU_A * x * x * x));
        float g = 0.5f * (1.0f + t) +
                  0.5f * x * (1.0f - t * t) * MNI_GELU_K * (1.0f + 3.0f * MNI_GELU_A * x * x);
        dinp[i] = g * dout[i];
    }
}

#define GELU_CHUNK 4096

void mni_gelu_fwd(float *out, const float *inp, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < n; c += GELU_CHUNK)
        gelu_fwd_range(out, inp, c, c + GELU_CHUNK < n ? c + GELU_CHUNK : n);
}

void mni_gelu_bwd(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < n; c += GELU_CHUNK)
        gelu_bwd_range(dinp, inp, dout, c, c + GELU_CHUNK < n ? c + GELU_CHUNK : n);
}

void mni_gelu_fwd_ref(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double x = inp[i];
        out[i] = (float)(0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))));
    }
}

void mni_gelu_bwd_ref(float *dinp, const float *inp, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        double x = inp[i], k = 0.7978845608028654, a = 0.044715;
        double t = tanh(k * (x + a * x * x * x));
        double g = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * a * x * x);
        dinp[i] = (float)(g * dout[i]);
    }
}

/* ---- softmax + cross-entropy ------------------------------------------------------------- */

/* One row: max, sum of exp, and (if d) the normalised probabilities written to d. */
static float xent_row(float *d, const float *z, size_t V, float *lse_out)
{
    size_t v = 0;
    float mx = -INFINITY;
#if MNI_HAVE_AVX2
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; v + 8 <= V; v += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(z + v));
    mx = mni_hmax_ps(vm);
#endif
    for (; v < V; v++) mx = z[v] > mx ? z[v] : mx;
    float s = 0.0f;
    v = 0;
#if MNI_HAVE_AVX2
    __m256 vs = _mm256_setzero_ps(), vmx = _mm256_set1_ps(mx);
    for (; v + 8 <= V; v += 8) {
        __m256 e = mni_exp_ps(_mm256_sub_ps(_mm256_loadu_ps(z + v), vmx));
        if (d) _mm256_storeu_ps(d + v, e);
        vs = _mm256_add_ps(vs, e);
    }
    s = mni_hsum_ps(vs);
#endif
    for (; v < V; v++) {
        float e = mni_expf(z[v] - mx);
        if (d) d[v] = e;
        s += e;
    }
    *lse_out = mx + logf(s);
    return s;
}

double mni_xent_fwd_bwd(float *dlogits, float *losses, const float *logits,
                        const uint16_t *targets, float dscale, size_t N, size_t V, size_t Vp)
{
    double total = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * Vp; /* (Vp) */
        size_t tgt = targets[n];
        float zt = z[tgt], lse;
        float *d = dlogits ? dlogits + n * Vp : NULL;
        float s = xent_row(d, z, V, &lse); /* d holds exp(z - max) (d may alias z) */
        float loss = lse - zt;
        if (losses) losses[n] = loss;
        total += loss;
        if (d) {
            float scale = dscale / s;
            for (size_t v = 0; v < V; v++) d[v] *= scale;
            d[tgt] -= dscale;
            for (size_t v = V; v < Vp; v++) d[v] = 0.0f;
        }
    }
    return total;
}

double mni_xent_fwd_bwd_ref(float *dlogits, float *losses, const float *logits,
                            const uint16_t *targets, float dscale, size_t N, size_t V, size_t Vp)
{
    double total = 0.0;
    for (size_t n = 0; n < N; n++) {
        const float *z = logits + n * Vp;
        double mx = -INFINITY, s = 0;
        for (size_t v = 0; v < V; v++) mx = z[v] > mx ? z[v] : mx;
        for (size_t v = 0; v < V; v++) s += exp(z[v] - mx);
        double lse = mx + log(s);
        double loss = lse - z[targets[n]];
        if (losses) losses[n] = (float)loss;
        total += loss;
        if (dlogits) {
            float *d = dlogits + n * Vp;
            size_t tgt = targets[n];
            for (size_t v = 0; v < V; v++)
                d[v] = (float)((exp(z[v] - mx) / s - (v == tgt ? 1.0 : 0.0)) * dscale);
            for (size_t v = V; v < Vp; v++) d[v] = 0.0f;
        }
    }
    return total;
}

/* ---- AdamW --------------------------------------------------------------------------------- */

void mni_adamw(float *p, float *m, float *v, const float *g, size_t n, float lr, float beta1,
               float beta2, float eps, float wd, float bc1, float bc2)
{
    /* m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
     * p = p - lr * wd * p - lr * (m / bc1) / (sqrt(v / bc2) + eps)   (torch.optim.AdamW) */
    float decay = 1.0f - lr * wd, step = lr / bc1, rbc2 = 1.0f / bc2;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float mi = beta1 * m[i] + (1.0f - beta1) * g[i];
        float vi = beta2 * v[i] + (1.0f - beta2) * g[i] * g[i];
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - step * mi / (sqrtf(vi * rbc2) + eps);
    }
}

void mni_adamw_ref(float *p, float *m, float *v, const float *g, size_t n, float lr,
                   float beta1, float beta2, float eps, float wd, float bc1, float bc2)
{
    for (size_t i = 0; i < n; i++) {
        double mi = (double)beta1 * m[i] + (1.0 - beta1) * g[i];
        double vi = (double)beta2 * v[i] + (1.0 - beta2) * (double)g[i] * g[i];
        m[i] = (float)mi;
        v[i] = (float)vi;
        double pi = p[i] * (1.0 - (double)lr * wd);
        p[i] = (float)(pi - lr * (mi / bc1) / (sqrt(vi / bc2) + eps));
    }
}
