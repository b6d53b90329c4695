/*
 * optim.c -- AdamW (torch.optim.AdamW semantics) over the parameter table: decoupled weight
 * decay on matrices (embeddings and linear weights), none on biases, LayerNorm gains or the
 * attention kinds' own parameters. Also the exponential moving average of the weights.
 */
#include <math.h>

#include "kern/kern.h"
#include "model.h"
#include "optim.h"

double mni_grad_norm(const struct mnemo_model *m)
{
    double s = 0;
#pragma omp parallel for reduction(+ : s) schedule(static)
    for (size_t i = 0; i < m->n_params; i++) s += (double)m->grads[i] * m->grads[i];
    return sqrt(s);
}

void mni_adamw_step(struct mnemo_model *m, float *adam_m, float *adam_v, int t, float lr,
                    float clip_scale, const struct mnemo_train_config *tc)
{
    if (clip_scale != 1.0f) {
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < m->n_params; i++) m->grads[i] *= clip_scale;
    }
    float bc1 = 1.0f - powf(tc->beta1, (float)(t + 1));
    float bc2 = 1.0f - powf(tc->beta2, (float)(t + 1));
    for (int id = 0; id < MNI_P_COUNT; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        size_t n = pi->numel * (pi->per_layer ? (size_t)m->cfg.n_layer : 1);
        if (!n) continue;
        float wd = (pi->d1 && id != MNI_P_ATTNX) ? tc->weight_decay : 0.0f;
        size_t o = pi->offset;
        mni_adamw(m->params + o, adam_m + o, adam_v + o, m->grads + o, n, lr, tc->beta1,
                  tc->beta2, tc->eps, wd, bc1, bc2);
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
