/* optim.h -- AdamW over the model's parameter slab (internal). */
#ifndef MNI_OPTIM_H
#define MNI_OPTIM_H

#include "mnemo.h"

/* Global L2 norm of the gradient slab. */
double mni_grad_norm(const struct mnemo_model *m);
/* One AdamW update of every parameter from m->grads scaled by clip_scale; t = steps done
 * before this one (for the bias corrections). Weight decay only on matrices (ndim >= 2). */
void mni_adamw_step(struct mnemo_model *m, float *adam_m, float *adam_v, int t, float lr,
                    float clip_scale, const struct mnemo_train_config *tc);

/* ema = d ema + (1 - d) p over n floats. */
void mni_ema_update(float *ema, const float *p, size_t n, float d);
/* The decay used at step t (steps done, >= 1): min(decay, (1 + t) / (10 + t)), so that the
 * average of a short run is not dominated by the initial weights. */
float mni_ema_decay_at(float decay, int t);
/* Exchanges the contents of a and b (n floats). */
void mni_swap_floats(float *a, float *b, size_t n);

#endif
