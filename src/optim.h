/* optim.h -- the optimizers (AdamW, Muon) over the model's parameter slab (internal). */
#ifndef MNI_OPTIM_H
#define MNI_OPTIM_H

#include "mnemo.h"

/* Global L2 norm of the gradient slab. */
double mni_grad_norm(const struct mnemo_model *m);
/* One AdamW update of every parameter from m->grads scaled by clip_scale; t = steps done
 * before this one (for the bias corrections). Weight decay only on matrices (ndim >= 2). */
void mni_adamw_step(struct mnemo_model *m, float *adam_m, float *adam_v, int t, float lr,
                    float clip_scale, const struct mnemo_train_config *tc);

/* One optimizer step by tc->optimizer (AdamW, or Muon + AdamW) from m->grads scaled by
 * clip_scale. adam_m/adam_v: AdamW's moments (Muon keeps its momentum in adam_m's slots of its
 * matrices). work: mni_optim_work_floats(m, tc, threads) floats, split among up to `threads`
 * threads (NULL with AdamW). t = steps done before this one. */
void mni_optim_step(struct mnemo_model *m, float *adam_m, float *adam_v, float *work,
                    int threads, int t, float lr, float clip_scale,
                    const struct mnemo_train_config *tc);
size_t mni_optim_work_floats(const struct mnemo_model *m, const struct mnemo_train_config *tc,
                             int threads);
/* 1 for the tensors Muon updates: the blocks' linear weights (qkv, attn proj, fc, mlp proj). */
int mni_muon_param(int id);
/* Newton-Schulz orthogonalisation of X (r x c) in place (X / ||X||_F, then five quintic
 * iterations); work: mni_newton_schulz_work(r, c) floats. */
void mni_newton_schulz(float *X, int r, int c, float *work);
size_t mni_newton_schulz_work(int r, int c);

/* ema = d ema + (1 - d) p over n floats. */
void mni_ema_update(float *ema, const float *p, size_t n, float d);
/* The decay used at step t (steps done, >= 1): min(decay, (1 + t) / (10 + t)), so that the
 * average of a short run is not dominated by the initial weights. */
float mni_ema_decay_at(float decay, int t);
/* Exchanges the contents of a and b (n floats). */
void mni_swap_floats(float *a, float *b, size_t n);

#endif
