/*
 * kern.h -- numeric kernels, no policy. Outputs first, then const inputs, then dimensions
 * (llm.c's order). Every fast kernel has a naive *_ref twin (double accumulation where it
 * matters) that the tests compare against. Dimensions: B batch, T time, C channels,
 * OC output channels, V/Vp vocabulary (real/padded), NH heads, HS head size.
 *
 * Threading: kernels parallelise their outer loops with OpenMP themselves; callers never call
 * them from inside a parallel region unless the kernel says it is serial.
 */
#ifndef MNI_KERN_H
#define MNI_KERN_H

#include <stddef.h>
#include <stdint.h>

/* ---- matmul: y = x W^T + b, with W in nn.Linear layout (OC, C) ---------------------------- */
/* out (N,OC) = inp (N,C) . w(OC,C)^T + bias(OC); bias may be NULL. Overwrites out. */
void mni_matmul_fwd(float *out, const float *inp, const float *w, const float *bias,
                    size_t N, size_t C, size_t OC);
/* out (N,OC) = res (N,OC) + inp . w^T + bias: a linear layer on a residual branch. res and
 * bias may be NULL; res must not alias out. */
void mni_matmul_fwd_res(float *out, const float *inp, const float *w, const float *bias,
                        const float *res, size_t N, size_t C, size_t OC);
/* dinp (N,C) = dout . w (overwritten; skipped if dinp NULL); dw (OC,C) += dout^T . inp;
 * dbias (OC) += colsum(dout) (skipped if NULL). */
void mni_matmul_bwd(float *dinp, float *dw, float *dbias, const float *dout, const float *inp,
                    const float *w, size_t N, size_t C, size_t OC);
void mni_matmul_fwd_ref(float *out, const float *inp, const float *w, const float *bias,
                        size_t N, size_t C, size_t OC);
void mni_matmul_bwd_ref(float *dinp, float *dw, float *dbias, const float *dout,
                        const float *inp, const float *w, size_t N, size_t C, size_t OC);
/* As mni_matmul_fwd, and out (N,OC) = gelu(pre) in the same sweep; pre is the
 * pre-activation, kept for backward. */
void mni_matmul_fwd_gelu(float *pre, float *out, const float *inp, const float *w,
                         const float *bias, size_t N, size_t C, size_t OC);
/* As mni_matmul_bwd, for a layer whose input was inp = gelu(gelu_pre): dinp receives the
 * gradient with respect to gelu_pre, dout . w times gelu'(gelu_pre) (gelu_pre (N,C)). */
void mni_matmul_bwd_gelu(float *dinp, float *dw, float *dbias, const float *dout,
                         const float *inp, const float *w, const float *gelu_pre, size_t N,
                         size_t C, size_t OC);
/* c (M,N) = a (M,K) . op(b) by cblas_sgemm alone, op(b) = b^T for b (N,K) when transb, else
 * b (K,N): the machine's sgemm, the yardstick of MFU (bench.c) and of bench/gemm. */
void mni_blas_sgemm(float *c, const float *a, const float *b, int transb, size_t M, size_t N,
                    size_t K);
/* Thread count used by BLAS and OpenMP (0 = leave as configured by the environment). */
void mni_set_threads(int n);
int mni_get_threads(void);

/* ---- the linear layers' own sgemm (kern/gemm.c; design in docs/internals/gemm.md) ----------
 * C (M,N) = epilogue(A (M,K) . op(B)), op(B) = B^T for B (N,K) when transb, else B (K,N); all
 * matrices dense row-major; A and B must not alias C. Epilogue, each part optional (NULL):
 * + res (M,N), + bias (N), then either gelu_out (M,N) = gelu(C) or C *= gelu'(gelu_pre) with
 * gelu_pre (M,N) (not both). Returns 0, or -1 without touching C when it does not run (no
 * AVX2, M too small to pay for packing B, B too large, no memory): the caller then computes
 * the product another way (cblas). */
struct mni_gemm_epi {
    const float *bias;
    const float *res; /* must not alias C */
    float *gelu_out;
    const float *gelu_pre;
};
int mni_gemm(float *C, const float *A, const float *B, int transb, size_t M, size_t N, size_t K,
             const struct mni_gemm_epi *e);

/* ---- small products of attention tiles (kern/mm.c) -----------------------------------------
 * C[m][0..N) = fma(alpha_m, sum_k A[m*a_ms + k*a_ks] B[k*ldb + 0..N), accumulate ? C : 0) for
 * m < M, alpha_m = alpha[m] if alpha, else alpha1; each sum over k in order from zero (the
 * bits of a plain loop, independent of M and of the other rows). A (a_ms = lda, a_ks = 1) or
 * A^T (a_ms = 1, a_ks = lda) without a copy; B (K,N) row-major with row stride ldb; C row
 * stride ldc. Vectorised when N % 8 == 0. Serial (callers run it inside their own tasks). */
void mni_mm(float *C, size_t ldc, const float *A, size_t a_ms, size_t a_ks, const float *B,
            size_t ldb, int M, int K, int N, const float *alpha, float alpha1, int accumulate);

/* ---- LayerNorm over the last dimension C (eps 1e-5) --------------------------------------- */
/* out (N,C); mean, rstd (N) saved for backward (may be NULL for inference). */
void mni_layernorm_fwd(float *out, float *mean, float *rstd, const float *inp,
                       const float *w, const float *b, size_t N, size_t C);
/* dinp (N,C) += ...; dw, db (C) += ... */
void mni_layernorm_bwd(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                       const float *w, const float *mean, const float *rstd, size_t N, size_t C);
void mni_layernorm_fwd_ref(float *out, float *mean, float *rstd, const float *inp,
                           const float *w, const float *b, size_t N, size_t C);
void mni_layernorm_bwd_ref(float *dinp, float *dw, float *db, const float *dout,
                           const float *inp, const float *w, const float *mean,
                           const float *rstd, size_t N, size_t C);

/* ---- GELU, tanh approximation (nn.GELU(approximate="tanh")) ------------------------------- */
void mni_gelu_fwd(float *out, const float *inp, size_t n);
/* dinp = dout * gelu'(inp), overwritten (dinp may alias dout). */
void mni_gelu_bwd(float *dinp, const float *inp, const float *dout, size_t n);
void mni_gelu_fwd_ref(float *out, const float *inp, size_t n);
void mni_gelu_bwd_ref(float *dinp, const float *inp, const float *dout, size_t n);

/* ---- softmax + cross-entropy over logits (N,Vp), first V columns real ---------------------- */
/* losses (N) = -log softmax(logits)[target]. If dlogits != NULL it receives
 * (softmax - onehot) * dscale in place of logits' padded layout (dlogits may alias logits);
 * padded columns get 0. Targets must be in [0,V) (the caller validates). Returns the sum of
 * losses in double. */
double mni_xent_fwd_bwd(float *dlogits, float *losses, const float *logits,
                        const uint16_t *targets, float dscale, size_t N, size_t V, size_t Vp);
double mni_xent_fwd_bwd_ref(float *dlogits, float *losses, const float *logits,
                            const uint16_t *targets, float dscale, size_t N, size_t V,
                            size_t Vp);

/* ---- RoPE (GPT-NeoX "rotate half" convention) ----------------------------------------------
 * For pair i in [0, HS/2): angle = pos * theta^(-2i/HS);
 * (x[i], x[i+HS/2]) <- (x[i] cos - x[i+HS/2] sin, x[i] sin + x[i+HS/2] cos). */
/* cos/sin of position pos, pair i -- the single definition every RoPE path uses. */
void mni_rope_cs(float *c, float *s, int pos, int i, int HS, float theta);
/* Table (n_pos, HS/2, 2) of (cos, sin). */
void mni_rope_table(float *cs, int n_pos, int HS, float theta);
/* Rotates one head vector x (HS) by the table row cs (HS/2, 2). sign=+1 forward, -1 inverse
 * (the transpose, used by backward). */
void mni_rope_apply(float *x, const float *cs_row, int HS, int sign);
/* The same rotation of a double vector x (HS) to position pos, with mni_rope_cs's factors: the
 * attention kinds' naive references. */
void mni_rope_apply_d(double *x, int pos, int HS, float theta, int sign);

/* ---- AdamW (decoupled weight decay) ------------------------------------------------------- */
/* One update of n parameters. wd is applied as p -= lr*wd*p (0 to skip). bc1, bc2 are the
 * bias corrections 1-beta1^t, 1-beta2^t. */
void mni_adamw(float *p, float *m, float *v, const float *g, size_t n, float lr, float beta1,
               float beta2, float eps, float wd, float bc1, float bc2);
void mni_adamw_ref(float *p, float *m, float *v, const float *g, size_t n, float lr,
                   float beta1, float beta2, float eps, float wd, float bc1, float bc2);

#endif /* MNI_KERN_H */
