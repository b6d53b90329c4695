/*
 * model.h -- internal view of the model: the parameter table, the activation layout, and the
 * per-layer forward used by both whole-window training and the streaming session.
 *
 * Parameters live in one slab described by one X-macro table (MNI_PARAM_TABLE). A per-layer
 * entry holds L tensors back to back, layer-major, so "blocks.{l}.<name>" is a contiguous
 * slice. The attention kind's tensors (its parameter table, mnemo_attn.h) follow the table's
 * entries as more per-layer entries, MNI_P_COUNT + i for the kind's row i. Gradients and the
 * optimizer's m and v have the identical layout.
 */
#ifndef MNI_MODEL_H
#define MNI_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"
#include "mnemo_attn.h"

/* X(id, name, per_layer, d0, d1): tensor of shape (d0) if d1 == 0 else (d0, d1), names in
 * nn.Linear layout (out x in). Locals in scope where the table is expanded: C, Vp, Tpos (n_ctx
 * for learned positions, else 0). An entry with d0 == 0 does not exist for this config (no
 * bytes, not in checkpoints). */
#define MNI_PARAM_TABLE(X)                                                                     \
    X(WTE, "wte.weight", 0, Vp, C)                                                             \
    X(WPE, "wpe.weight", 0, Tpos, C)                                                           \
    X(LN1W, "blocks.%d.ln1.weight", 1, C, 0)                                                   \
    X(LN1B, "blocks.%d.ln1.bias", 1, C, 0)                                                     \
    X(QKVW, "blocks.%d.attn.qkv.weight", 1, 3 * C, C)                                          \
    X(QKVB, "blocks.%d.attn.qkv.bias", 1, 3 * C, 0)                                            \
    X(PROJW, "blocks.%d.attn.proj.weight", 1, C, C)                                            \
    X(PROJB, "blocks.%d.attn.proj.bias", 1, C, 0)                                              \
    X(LN2W, "blocks.%d.ln2.weight", 1, C, 0)                                                   \
    X(LN2B, "blocks.%d.ln2.bias", 1, C, 0)                                                     \
    X(FCW, "blocks.%d.mlp.fc.weight", 1, 4 * C, C)                                             \
    X(FCB, "blocks.%d.mlp.fc.bias", 1, 4 * C, 0)                                               \
    X(FCPW, "blocks.%d.mlp.proj.weight", 1, C, 4 * C)                                          \
    X(FCPB, "blocks.%d.mlp.proj.bias", 1, C, 0)                                                \
    X(LNFW, "lnf.weight", 0, C, 0)                                                             \
    X(LNFB, "lnf.bias", 0, C, 0)

enum mni_param_id {
#define X(id, name, pl, d0, d1) MNI_P_##id,
    MNI_PARAM_TABLE(X)
#undef X
        MNI_P_COUNT
};

/* The table's entries, then at most MNEMO_ATTN_MAX_PARAMS of the kind. */
#define MNI_P_MAX (MNI_P_COUNT + MNEMO_ATTN_MAX_PARAMS)

struct mni_param_info {
    char name[64];     /* printf format with %d for the layer when per_layer */
    int per_layer;     /* 1: L tensors back to back */
    size_t d0, d1;     /* shape of one tensor; d1 == 0 for vectors */
    size_t numel;      /* of one tensor (one layer) */
    size_t offset;     /* in floats from the slab start, to layer 0's tensor */
    float lr_mult;     /* the optimizer's learning rate times this */
    int decay;         /* takes weight decay */
    int trained;       /* updated by the optimizer (0: a buffer) */
    int init;          /* kind tensors: enum mnemo_attn_init; table entries: unused */
    float init_value;
};

/* Pointers into one layer's activations (also used by the session with N = chunk tokens). */
struct mni_layer_acts {
    float *res;        /* (N,C) residual stream entering the layer */
    float *ln1;        /* (N,C) */
    float *ln1_mean, *ln1_rstd; /* (N) */
    float *qkv;        /* (N,3C) */
    float *atty;       /* (N,C) attention output before W_O */
    void *attn_act;    /* attention kind's saved activations */
    float *res_mid;    /* (N,C) residual after the attention block */
    float *ln2;        /* (N,C) */
    float *ln2_mean, *ln2_rstd; /* (N) */
    float *fch;        /* (N,4C) */
    float *fch_gelu;   /* (N,4C) */
};

struct mnemo_model {
    struct mnemo_model_config cfg; /* cfg.attn_opts points to attn_opts */
    char *attn_opts;   /* the kind's options, canonical: every model and training option, the
                        * session options that differ from their defaults */
    struct mnemo_attn_cfg *lcfg;   /* (L) each layer's attention cfg */
    const struct mnemo_attn_ops *attn; /* the kind's fast ops (or its reference: tests) */
    int n_kparams;     /* the kind's tensors per layer: pinfo[MNI_P_COUNT + i] */
    int n_pinfo;       /* MNI_P_COUNT + n_kparams */
    struct mni_param_info pinfo[MNI_P_MAX];
    size_t n_params;   /* floats in the slab */
    float *params;     /* (n_params) */
    float *grads;      /* (n_params), allocated by mni_model_alloc_grads */

    /* activations for windows of up to (act_B, act_T), allocated on first use */
    int act_B, act_T;
    int cur_B, cur_T;  /* shape of the last forward */
    float *act_slab;
    struct mni_layer_acts *layers; /* (L) */
    float *res_final;  /* (B,T,C) */
    float *lnf, *lnf_mean, *lnf_rstd;
    float *logits;     /* (B,T,Vp); dlogits after backward */
    float *losses;     /* (B,T) */
    uint16_t *inputs, *targets; /* (B,T) copies of the last forward's tokens */
    int have_targets;
    double aux_sum;    /* the kinds' aux_loss summed over the layers in the last forward */
    int training;      /* mnemo_model_set_mode */
    uint64_t seed;
    /* lanes (mnemo_model_set_lanes): layer l's states of every lane at carry + n_lanes *
     * (the carry bytes of the layers before l), each lane carry_bytes(lcfg[l]) long */
    int n_lanes;
    char *carry;       /* the lanes' states */
    char *carry_next;  /* the last lane forward's end states, until the next forward */
    int use_first;     /* the next forward's first lane, or -1 (mnemo_model_use_lanes) */
    int use_fresh;     /* ... whose lanes start over */
    int lane_first, lane_B; /* the last forward's lanes (lane_B 0: none) */
    int lane_pending;  /* carry_next holds their states, not yet in carry */
    /* backward buffers, reused across layers */
    float *dres, *dtmp, *dqkv, *datty, *dfch;
    void *attn_scratch;
    /* metadata carried by the loaded checkpoint besides the config (train.*, prune.*): keys
     * of up to 127 bytes, values of up to 4095 (prune.budgets lists every layer's budget) */
    int n_meta;
    char meta_key[16][128];
    char meta_val[16][4096];
};

/* mnemo_model_create in two halves, for a loader that checks a file against the parameter
 * table before it allocates: mni_model_plan checks cfg and lays out the table (m->pinfo,
 * m->n_params) with params still NULL; mni_model_alloc_params allocates them (zeroed).
 * Errors: as mnemo_model_create's. */
enum mnemo_status mni_model_plan(struct mnemo_model **out, const struct mnemo_model_config *cfg);
enum mnemo_status mni_model_alloc_params(struct mnemo_model *m);
/* Parameter pointer for (id, layer) (layer ignored when not per-layer). */
float *mni_model_param(const struct mnemo_model *m, int id, int layer);
/* The kind's tensors of one layer (m->n_kparams pointers), in the params or the grads slab. */
void mni_model_kind_params(const struct mnemo_model *m, int layer, float **p, int grads);
/* The lanes' states (committed: the last lane forward's end states are in), n_lanes lanes of
 * mnemo_model_carry_bytes each, layer-major; NULL when no lanes are kept. The train state saves
 * and restores them through this pointer. */
void *mni_model_lanes(struct mnemo_model *m, size_t *bytes);
/* Tests: runs the kind's reference implementation instead of its fast one (on != 0), or back.
 * Frees the activations (the two may size them differently). */
void mni_model_use_ref(struct mnemo_model *m, int on);
/* The largest act and scratch bytes of any layer's attention for (B, T). */
size_t mni_model_attn_act_bytes(const struct mnemo_model *m, int B, int T);
/* Gradient buffer (allocates on first call; zeroed). */
enum mnemo_status mni_model_alloc_grads(struct mnemo_model *m);
/* One layer forward over N tokens, with attention provided by fn(ctx, a) which must fill
 * a->atty from a->qkv. */
typedef enum mnemo_status (*mni_attn_call_fn)(void *ctx, struct mni_layer_acts *a, int layer);
enum mnemo_status mni_layer_forward(const struct mnemo_model *m, int layer,
                                    struct mni_layer_acts *a, float *res_out, size_t N,
                                    mni_attn_call_fn fn, void *ctx);
/* Token embedding for N tokens at positions pos[i] (used when learned positions). */
void mni_embed(const struct mnemo_model *m, float *out, const uint16_t *tok, const int *pos,
               size_t N);
/* Final LayerNorm + logits over N rows. */
void mni_head_forward(const struct mnemo_model *m, float *logits, float *lnf, float *lnf_mean,
                      float *lnf_rstd, const float *res, size_t N);

#endif /* MNI_MODEL_H */
