/* ckpt.h -- checkpoint helpers shared by ckpt.c and train.c (internal). */
#ifndef MNI_CKPT_H
#define MNI_CKPT_H

#include "mnemo.h"

/* 2: the attention kind's options as "attn.<key>" metadata and its tensors named by its
 * parameter table (1: infini's options as attn_segment, attn_mem_update, its gates as
 * blocks.{l}.attn.kind, selective's budgets as prune.budgets; still read). */
#define MNI_CKPT_FORMAT 2

struct mni_st_file;
/* Saves like mnemo_model_save, adding n_extra (key, value) metadata pairs. */
enum mnemo_status mni_model_save_ex(const struct mnemo_model *m, const char *path,
                                    const char *const *extra_kv, size_t n_extra);
/* Reads and checks the model config from a checkpoint's metadata; c->attn_opts points to *opts
 * (caller frees, also on failure). */
enum mnemo_status mni_ckpt_read_config(const struct mni_st_file *f, const char *path,
                                       struct mnemo_model_config *c, char **opts);
int mni_pos_from_name(const char *s); /* -1 if unknown */
/* Sets (or adds) a metadata pair of the in-memory model, as a loaded checkpoint would carry. */
void mni_model_set_meta(struct mnemo_model *m, const char *key, const char *value);

#endif
