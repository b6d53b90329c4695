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

#endif
