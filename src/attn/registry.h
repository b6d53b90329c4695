/*
 * registry.h -- what the model, checkpoints and sessions use of the registry besides the public
 * mnemo_attn.h: per-layer configs, merging and checking option lists, writing one option's
 * value. Not installed.
 */
#ifndef MNI_ATTN_REGISTRY_H
#define MNI_ATTN_REGISTRY_H

#include <stddef.h>

#include "mnemo_attn.h"

/* Every layer's cfg (cfgs: mc->n_layer of them) from mc and the option list opts (per-layer
 * options take their layer's value). Errors as mnemo_attn_cfg_make. */
enum mnemo_status mni_attn_cfgs_make(struct mnemo_attn_cfg *cfgs,
                                     const struct mnemo_model_config *mc, const char *opts);
/* out = base with every key=value of over replacing base's value of the same key (or
 * appended). Returns 0, or -1 (MNEMO_ERR_ARG set) when out (n bytes) is too small. Keys are
 * not checked here. */
int mni_attn_opts_merge(char *out, size_t n, const char *base, const char *over);
/* MNEMO_ERR_ARG unless every key of opts is an option of kind whose scope bit is in mask
 * (1 << MNEMO_ATTN_SCOPE_*); the message says where such an option belongs (`where` names
 * what was being set, e.g. "a session"). Unknown keys pass (cfg_make names them). */
enum mnemo_status mni_attn_opts_in_scope(int kind, const char *opts, unsigned mask,
                                         const char *where);
/* The value of option i over the layers' cfgs (n_cfg of them), as written in option lists
 * ("a/b/c" when layers differ). Returns the length, as snprintf. */
int mni_attn_opt_value(const struct mnemo_attn_cfg *cfgs, int n_cfg, int i, char *buf, size_t n);
/* The bytes of every layer's streaming state summed, for the cfgs given (no state is made). */
size_t mni_attn_state_bytes(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfgs,
                            int n_cfg);

#endif /* MNI_ATTN_REGISTRY_H */
