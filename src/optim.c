/*
 * optim.c -- the optimizers over the parameter table, and the moving average of the weights.
 *
 * AdamW (torch.optim.AdamW semantics): decoupled weight decay on matrices (embeddings and
 * linear weights), none on biases or LayerNorm gains. The attention kind's tensors follow its
 * parameter table: their learning-rate multiplier and weight decay (e.g. Infini-attention's
 * gates: lr x gate_lr_mult, no decay: they barely move at the model's rate, and decay would
 * pull them towards an even mix; docs/internals/infini.md), and buffers are not updated.
 *
 * Muon: the blocks' linear weights (q, k and v each on its own, the attention output, both MLP
 * matrices) take Nesterov momentum, orthogonalised by five Newton-Schulz iterations, scaled by
 * 0.2 sqrt(max(rows, cols)) so that AdamW's learning rate and weight decay carry over; every
 * other tensor (embedding, LayerNorms, biases, kind parameters) is updated by AdamW.
 * docs/internals/training.md has the reasons and the measurements.
 */
#include <math.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "kern/kern.h"
#include "model.h"
#include "optim.h"

static const char *const opt_names[MNEMO_OPT_COUNT] = {"adamw", "muon"};

const char *mnemo_optimizer_name(int opt)
{
    return opt >= 0 && opt < MNEMO_OPT_COUNT ? opt_names[opt] : NULL;
}

int mnemo_optimizer_from_name(const char *name)
{
    for (int i = 0; name && i < MNEMO_OPT_COUNT; i++)
        if (!strcmp(name, opt_names[i])) return i;
    return -1;
}

double mni_grad_norm(const struct mnemo_model *m)
{
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < m->n_params; i++) s += (double)m->grads[i] * m->grads[i];
    return sqrt(s);
}

int mni_muon_param(int id)
{
    return id == MNI_P_QKVW || id == MNI_P_PROJW || id == MNI_P_FCW || id == MNI_P_FCPW;
}

/* AdamW on every tensor, or (skip_muon) on those Muon does not update. */
static void adamw_tensors(struct mnemo_model *m, float *adam_m, float *adam_v, int t, float lr,
                          const struct mnemo_train_config *tc, int skip_muon)
{
    float bc1 = 1.0f - powf(tc->beta1, (float)(t + 1));
    float bc2 = 1.0f - powf(tc->beta2, (float)(t + 1));
    for (int id = 0; id < m->n_pinfo; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        size_t n = pi->numel * (pi->per_layer ? (size_t)m->cfg.n_layer : 1);
        if (!n || !pi->trained || (skip_muon && mni_muon_param(id))) continue;
        float wd = pi->decay ? tc->weight_decay : 0.0f;
        float lr_t = lr * pi->lr_mult;
        size_t o = pi->offset;
        mni_adamw(m->params + o, adam_m + o, adam_v + o, m->grads + o, n, lr_t, tc->beta1,
                  tc->beta2, tc->eps, wd, bc1, bc2);
    }
}

static void scale_grads(struct mnemo_model *m, float clip_scale)
{
    if (clip_scale == 1.0f) return;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < m->n_params; i++) m->grads[i] *= clip_scale;
}

void mni_adamw_step(struct mnemo_model *m, float *adam_m, float *adam_v, int t, float lr,
                    float clip_scale, const struct mnemo_train_config *tc)
{
    scale_grads(m, clip_scale);
    adamw_tensors(m, adam_m, adam_v, t, lr, tc, 0);
}

/* Mirrors the upper triangle of the symmetric k x k matrix A into its lower one. */
static void mirror_upper(float *A, int k)
{
    for (int i = 1; i < k; i++)
        for (int j = 0; j < i; j++) A[(size_t)i * k + j] = A[(size_t)j * k + i];
}

size_t mni_newton_schulz_work(int r, int c)
{
    size_t k = (size_t)(r < c ? r : c);
    return (size_t)r * c + 2 * k * k;
}

/*
 * X <- X / ||X||_F, then five times X <- a X + (b G + c G^2) X with the Gram matrix G = X X^T
 * (X^T X and a right product when X is tall, so G is always min(r, c) square). The quintic's
 * coefficients (3.4445, -4.7750, 2.0315) push every singular value of the normalised X into
 * about [0.7, 1.2] within five iterations; the result approximates U V^T of X's SVD. G and G^2
 * are symmetric, so both come from ssyrk (half a product each); only the update is a full
 * product.
 */
void mni_newton_schulz(float *X, int r, int c, float *work)
{
    const float qa = 3.4445f, qb = -4.7750f, qc = 2.0315f;
    const int tall = r > c, k = tall ? c : r;
    const size_t n = (size_t)r * c;
    float *Y = work, *G = Y + n, *P = G + (size_t)k * k;
    double ss = 0;
    for (size_t i = 0; i < n; i++) ss += (double)X[i] * X[i];
    const float inv = (float)(1.0 / (sqrt(ss) + 1e-7));
    for (size_t i = 0; i < n; i++) X[i] *= inv;
    for (int it = 0; it < 5; it++) {
        cblas_ssyrk(CblasRowMajor, CblasUpper, tall ? CblasTrans : CblasNoTrans, k, tall ? r : c,
                    1.0f, X, c, 0.0f, G, k);
        mirror_upper(G, k);
        /* P = qc G G^T + qb G (= qc G^2 + qb G: G is symmetric) */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, k, k, qc, G, k, 0.0f, P, k);
        for (int i = 0; i < k; i++)
            for (int j = i; j < k; j++) P[(size_t)i * k + j] += qb * G[(size_t)i * k + j];
        mirror_upper(P, k);
        if (!tall)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, c, k, 1.0f, P, k, X, c, 0.0f, Y, c);
        else
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, r, c, k, 1.0f, X, c, P, k, 0.0f, Y, c);
        for (size_t i = 0; i < n; i++) X[i] = qa * X[i] + Y[i];
    }
}

/* One Muon update of one (r x c) matrix w from its gradient g; mom is its momentum buffer. */
static void muon_matrix(float *w, float *mom, const float *g, int r, int c, float lr, float wd,
                        float mu, float *work)
{
    const size_t n = (size_t)r * c;
    float *X = work;
    for (size_t i = 0; i < n; i++) {
        mom[i] = mu * mom[i] + g[i];
        X[i] = g[i] + mu * mom[i]; /* Nesterov */
    }
    mni_newton_schulz(X, r, c, work + n);
    const float s = lr * 0.2f * sqrtf((float)(r > c ? r : c)), keep = 1.0f - lr * wd;
    for (size_t i = 0; i < n; i++) w[i] = keep * w[i] - s * X[i];
}

/* Task i of the 6 L matrices Muon updates (big ones first): fc and mlp proj of every layer,
 * then q, k and v of every layer (three C x C blocks of qkv), then attn proj. */
static size_t muon_task(const struct mnemo_model *m, int i, int *r, int *c)
{
    const int L = m->cfg.n_layer;
    int id, l, b = 0, blocks = 1;
    if (i < L) id = MNI_P_FCW, l = i;
    else if (i < 2 * L) id = MNI_P_FCPW, l = i - L;
    else if (i < 5 * L) id = MNI_P_QKVW, l = (i - 2 * L) / 3, b = (i - 2 * L) % 3, blocks = 3;
    else id = MNI_P_PROJW, l = i - 5 * L;
    const struct mni_param_info *pi = &m->pinfo[id];
    *r = (int)pi->d0 / blocks;
    *c = (int)pi->d1;
    return pi->offset + (size_t)l * pi->numel + (size_t)b * (size_t)*r * (size_t)*c;
}

/* Scratch of one thread: the largest task is 4C x C (X, and Newton-Schulz's copy and two C x C
 * Gram matrices). */
static size_t muon_work_per_thread(const struct mnemo_model *m)
{
    const size_t C = (size_t)m->cfg.d_model;
    return 4 * C * C + mni_newton_schulz_work(4 * (int)C, (int)C);
}

/* Threads that can have a matrix: no more than the 6 L matrices. */
static int muon_threads(const struct mnemo_model *m, int threads)
{
    const int nt = 6 * m->cfg.n_layer;
    return threads < 1 ? 1 : threads > nt ? nt : threads;
}

size_t mni_optim_work_floats(const struct mnemo_model *m, const struct mnemo_train_config *tc,
                             int threads)
{
    if (tc->optimizer != MNEMO_OPT_MUON) return 0;
    return (size_t)muon_threads(m, threads) * muon_work_per_thread(m);
}

void mni_optim_step(struct mnemo_model *m, float *adam_m, float *adam_v, float *work,
                    int threads, int t, float lr, float clip_scale,
                    const struct mnemo_train_config *tc)
{
    scale_grads(m, clip_scale);
    if (tc->optimizer != MNEMO_OPT_MUON) {
        adamw_tensors(m, adam_m, adam_v, t, lr, tc, 0);
        return;
    }
    adamw_tensors(m, adam_m, adam_v, t, lr, tc, 1);
    const int nt = 6 * m->cfg.n_layer;
    const size_t per = muon_work_per_thread(m);
    threads = muon_threads(m, threads);
    /* one matrix per thread at a time; BLAS inside a parallel region runs on the calling thread
     * only (docs/internals/threading.md) */
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int i = 0; i < nt; i++) {
        int me = 0, r, c;
#ifdef _OPENMP
        me = omp_get_thread_num();
#endif
        const size_t o = muon_task(m, i, &r, &c);
        muon_matrix(m->params + o, adam_m + o, m->grads + o, r, c, lr, tc->weight_decay,
                    tc->momentum, work + (size_t)me * per);
    }
}

void mni_ema_update(float *ema, const float *p, size_t n, float d)
{
    const float w = 1.0f - d;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) ema[i] += w * (p[i] - ema[i]);
}

float mni_ema_decay_at(float decay, int t)
{
    float warm = (1.0f + (float)t) / (10.0f + (float)t);
    return decay < warm ? decay : warm;
}

void mni_swap_floats(float *a, float *b, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = a[i];
        a[i] = b[i];
        b[i] = x;
    }
}
