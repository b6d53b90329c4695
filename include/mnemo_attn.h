/*
 * mnemo_attn.h -- the attention-kind interface, edition 2 (versioned; fields are only appended).
 *
 * An attention kind turns the packed projections of one layer, qkv (B,T,3,NH,HS), into the
 * per-head outputs (B,T,NH,HS) that the model then projects with W_O. It owns everything that
 * differs between kinds: positions (RoPE is applied by the kind, through mni_rope_*), masks,
 * its options, its own learned parameters and buffers, auxiliary losses, and the streaming
 * state. The model owns the memory: a kind only *declares* how many bytes it needs (act_bytes,
 * scratch_bytes, state_bytes, carry_bytes) and receives them.
 *
 * What a kind declares (docs/internals/attention.md has the recipe for adding one):
 *  - options: a table of typed keys with defaults, ranges and help (struct mnemo_attn_opt).
 *    The registry parses "key=value,..." lists against it, checks ranges, and hands the kind the
 *    values in cfg->opt[i] (i = the option's row in the table). Options are saved in checkpoints
 *    as "attn.<key>" metadata.
 *  - parameters: a table of named tensors per layer (struct mnemo_attn_param), saved as
 *    "blocks.{l}.attn.<name>", with their initialisation, learning-rate multiplier, weight decay
 *    and whether the optimizer trains them (buffers are saved but not trained).
 *  - capabilities (caps), FLOPs per token, and the bytes of every buffer it needs.
 *
 * Contract for every kind:
 *  - forward/backward over whole windows; backward overwrites dqkv and accumulates dparams.
 *  - step() feeds n >= 1 new tokens to a streaming state; a window fed through step() gives the
 *    forward's outputs up to float rounding (MNEMO_ATTN_CAP_STEP_EXACT), or approximately.
 *  - nothing is allocated inside forward, backward or step.
 *  - a naive reference implementation is registered beside the fast one, as its own ops object,
 *    and is tested against it; a reference never calls the fast path's computing helpers.
 */
#ifndef MNEMO_ATTN_H
#define MNEMO_ATTN_H

#include "mnemo.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MNEMO_ATTN_API_VERSION 2

/* Options of a kind: at most this many rows in its table. */
#define MNEMO_ATTN_MAX_OPTS 16
/* Parameter tensors of a kind per layer: at most this many rows in its table. */
#define MNEMO_ATTN_MAX_PARAMS 8

/* ---- options ------------------------------------------------------------------------------ */

enum mnemo_attn_opt_type {
    MNEMO_ATTN_OPT_INT = 0,   /* an integer in [lo, hi] */
    MNEMO_ATTN_OPT_FLOAT = 1, /* a finite number in [lo, hi] */
    MNEMO_ATTN_OPT_ENUM = 2,  /* one of the names in choices ("linear|delta"): its index */
    MNEMO_ATTN_OPT_BOOL = 3,  /* 0/1, true/false */
    MNEMO_ATTN_OPT_TYPE_COUNT
};

/* Where an option takes effect. */
enum mnemo_attn_opt_scope {
    MNEMO_ATTN_SCOPE_MODEL = 0,   /* changes the function the model computes: fixed by a
                                   * checkpoint (unless MNEMO_ATTN_OPT_MUTABLE) */
    MNEMO_ATTN_SCOPE_TRAIN = 1,   /* changes only training (auxiliary losses, learning rates) */
    MNEMO_ATTN_SCOPE_SESSION = 2, /* changes only streaming sessions (pruning budgets, windows);
                                   * a checkpoint may carry values that sessions start from */
    MNEMO_ATTN_SCOPE_COUNT
};

enum mnemo_attn_opt_flag {
    MNEMO_ATTN_OPT_PER_LAYER = 1 << 0, /* the value may be a list "a/b/c", one per layer (a
                                        * single value applies to every layer) */
    MNEMO_ATTN_OPT_MUTABLE = 1 << 1,   /* a model option that a trained model may change (no
                                        * parameter depends on it), e.g. infini's segment */
    MNEMO_ATTN_OPT_CTX_ZERO = 1 << 2,  /* 0 means "n_ctx": when a model's n_ctx changes, a 0
                                        * becomes the old n_ctx, so the value keeps its meaning */
};

struct mnemo_attn_opt {
    const char *key;     /* [a-z0-9_]+, unique within the kind */
    int type;            /* enum mnemo_attn_opt_type */
    int scope;           /* enum mnemo_attn_opt_scope */
    int flags;           /* enum mnemo_attn_opt_flag */
    double def, lo, hi;  /* default and range (ENUM and BOOL: indices, range set by the table) */
    const char *choices; /* ENUM: names separated by '|', in index order; else NULL */
    const char *help;    /* one line */
};

/* ---- parameters --------------------------------------------------------------------------- */

enum mnemo_attn_init {
    MNEMO_ATTN_INIT_ZERO = 0,   /* all zero */
    MNEMO_ATTN_INIT_CONST = 1,  /* all equal to init_value */
    MNEMO_ATTN_INIT_NORMAL = 2, /* N(0, init_value^2) */
    MNEMO_ATTN_INIT_KIND = 3,   /* the kind's init_params fills it */
    MNEMO_ATTN_INIT_COUNT
};

struct mnemo_attn_param {
    const char *name;   /* saved as "blocks.{l}.attn.<name>" */
    int ndim;           /* 1 or 2 */
    size_t shape[2];    /* shape[1] unused for ndim 1 */
    int init;           /* enum mnemo_attn_init */
    float init_value;   /* CONST: the value; NORMAL: the standard deviation */
    float lr_mult;      /* learning rate = the model's times this */
    int decay;          /* 1: takes the optimizer's weight decay */
    int trained;        /* 1: updated by the optimizer; 0: a buffer (saved, not trained; a kind
                         * may change it in after_step) */
};

/* ---- capabilities ------------------------------------------------------------------------- */

enum mnemo_attn_cap {
    MNEMO_ATTN_CAP_CAUSAL = 1 << 0,     /* runs causally (a decoder) */
    MNEMO_ATTN_CAP_BIDIR = 1 << 1,      /* runs bidirectionally (encoder mode) */
    MNEMO_ATTN_CAP_STEP = 1 << 2,       /* has a streaming state (state_*, step) */
    MNEMO_ATTN_CAP_STEP_EXACT = 1 << 3, /* step equals forward up to float rounding */
    MNEMO_ATTN_CAP_BOUNDED = 1 << 4,    /* the state is bounded whatever the stream length */
    MNEMO_ATTN_CAP_CARRY = 1 << 5,      /* carries a state from one training window to the
                                         * next (lanes of consecutive text) */
    MNEMO_ATTN_CAP_TRAIN = 1 << 6,      /* has a backward */
};

/* ---- configuration and calls -------------------------------------------------------------- */

/* What a kind is told of the model, and its parsed option values. Plain data: copied freely. */
struct mnemo_attn_cfg {
    int kind;         /* enum mnemo_attn_kind */
    int n_head;       /* NH */
    int head_dim;     /* HS */
    int n_ctx;        /* longest training window T; the session's cache size for dense */
    int rope;         /* 1: the kind rotates q and k with RoPE; 0: positions live elsewhere */
    float rope_theta; /* RoPE base */
    int n_layer;      /* layers of the model */
    int causal;       /* 1 (decoder); 0: bidirectional (encoder mode, kinds with CAP_BIDIR) */
    double opt[MNEMO_ATTN_MAX_OPTS]; /* the option values, indexed as the kind's table; a
                                      * per-layer option holds this layer's value */
};

/* One forward or backward call over B windows of T tokens. */
struct mnemo_attn_io {
    int B, T;
    int layer;            /* this layer's index, 0..n_layer-1 */
    int training;         /* 1 inside a training step; 0 for evaluation */
    uint64_t seed;        /* the call's seed: the same for a forward and its backward, and
                           * drawn from the training seed and step (random patterns, features) */
    const float *qkv;     /* (B,T,3,NH,HS) q,k,v of each token, before any rotary embedding */
    float *out;           /* forward output (B,T,NH,HS) */
    const float *dout;    /* backward input (B,T,NH,HS) */
    float *dqkv;          /* backward output (B,T,3,NH,HS), overwritten */
    const float *const *params; /* the kind's tensors for this layer, in its table's order */
    float *const *dparams;      /* their gradients, accumulated (+=) */
    void *act;            /* this layer's saved activations: written by forward, read by backward */
    void *scratch;        /* workspace shared by all layers */
    const void *carry;    /* CAP_CARRY: (B, carry_bytes) each lane's state from the previous
                           * window (all zero bytes: a fresh lane), or NULL (all fresh); read
                           * by forward and backward, no gradient flows into it */
    void *carry_out;      /* CAP_CARRY: (B, carry_bytes) each lane's state after the window,
                           * written by forward, or NULL (not wanted) */
    double aux_loss;      /* forward output: the kind's auxiliary objective for these windows,
                           * summed over them, already weighted: the model adds
                           * sum_layers aux_loss / B to the mean cross-entropy */
    float aux_grad;       /* backward input: d(objective) / d(aux_loss) */
};

/* One step() of a streaming session. */
struct mnemo_attn_step {
    int n;                /* new tokens, >= 1 */
    int layer;
    void *state;          /* this layer's state (state_bytes) */
    const float *const *params; /* the kind's tensors for this layer */
    const float *qkv;     /* (n,3,NH,HS), before rotary embedding */
    float *out;           /* (n,NH,HS) */
    void *scratch;        /* step_scratch_bytes(n) */
};

struct mnemo_attn_ops {
    uint32_t api_version; /* MNEMO_ATTN_API_VERSION at the time the kind was written */
    const char *name;     /* "dense", ... ; a reference's ops carry the same name */
    int is_ref;           /* 1: the naive reference implementation */
    const struct mnemo_attn_opt *opts; /* the option table (NULL when n_opts == 0) */
    int n_opts;
    /* Capabilities for this configuration (enum mnemo_attn_cap; may depend on options). */
    uint32_t (*caps)(const struct mnemo_attn_cfg *cfg);
    /* Rejects impossible settings with MNEMO_ERR_ARG and a message naming the kind and the
     * option (mni_err). The registry has checked every value against its row already. */
    enum mnemo_status (*validate)(const struct mnemo_attn_cfg *cfg);
    /* The parameter table for cfg: fills out[0..n) and returns n <= MNEMO_ATTN_MAX_PARAMS.
     * NULL: no parameters. */
    int (*params)(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_param *out);
    /* Fills the tensors declared MNEMO_ATTN_INIT_KIND of one layer (NULL if none). */
    void (*init_params)(const struct mnemo_attn_cfg *cfg, int layer, uint64_t seed,
                        float *const *params);
    /* Forward multiply-adds x 2 of attention per token and layer, averaged over a window of T
     * (only the products the pattern computes): what MFU counts. */
    double (*flops_per_token)(const struct mnemo_attn_cfg *cfg, int T);
    /* Bytes of saved activations per layer, and of workspace shared by all layers. */
    size_t (*act_bytes)(const struct mnemo_attn_cfg *cfg, int B, int T);
    size_t (*scratch_bytes)(const struct mnemo_attn_cfg *cfg, int B, int T);
    enum mnemo_status (*forward)(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
    enum mnemo_status (*backward)(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
    /* Bytes of one lane's carried state, 0 when cfg carries none (NULL: never). */
    size_t (*carry_bytes)(const struct mnemo_attn_cfg *cfg);
    /* Called after every optimizer step with the layer's tensors (EMA of buffers, feature
     * redraws); NULL if none. */
    void (*after_step)(const struct mnemo_attn_cfg *cfg, int layer, uint64_t seed,
                       float *const *params);
    /* Streaming (CAP_STEP). state_bytes bounds the per-layer state; step_scratch_bytes the
     * workspace of one step() of up to n tokens. step() returns MNEMO_ERR_FULL if the state
     * cannot take n more tokens, and then holds what it held before. */
    size_t (*state_bytes)(const struct mnemo_attn_cfg *cfg);
    size_t (*step_scratch_bytes)(const struct mnemo_attn_cfg *cfg, int n);
    void (*state_init)(const struct mnemo_attn_cfg *cfg, void *state);
    enum mnemo_status (*step)(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *st);
    /* Bytes of state actually held now (what memory benchmarks report). */
    size_t (*state_live_bytes)(const struct mnemo_attn_cfg *cfg, const void *state);
};

/* ---- the registry ------------------------------------------------------------------------- */

/* The fast implementation of a kind (MNEMO_ATTN_KIND_*), or NULL for an out-of-range kind. */
MNEMO_API const struct mnemo_attn_ops *mnemo_attn_ops_get(int kind);
/* Its naive reference implementation (tests, debugging), or NULL. */
MNEMO_API const struct mnemo_attn_ops *mnemo_attn_ops_get_ref(int kind);

/* Fills cfg from a model config (the kind, the shape) with every option at its default, then
 * applies the list opts ("key=value,key=value"; NULL or "" for none) for layer `layer` (-1: the
 * first value of per-layer options). MNEMO_ERR_ARG naming the kind and the option for an
 * unknown key, a value that does not parse or is out of range; the kind's validate runs last. */
MNEMO_API enum mnemo_status mnemo_attn_cfg_make(struct mnemo_attn_cfg *cfg,
                                                const struct mnemo_model_config *mc,
                                                const char *opts, int layer);
/* Writes the options of the kind of cfgs (one cfg per layer, n_cfg of them; or one) as
 * "key=value,..." into buf (n bytes): those whose scope bit is set in scope_mask
 * (1 << MNEMO_ATTN_SCOPE_*), in table order; all of them (defaults included) when all != 0,
 * else only those that differ from the default. A value that differs between layers is
 * written as a list "a/b/c". Returns the length (as snprintf: >= n means it did not fit). */
MNEMO_API int mnemo_attn_opts_format(const struct mnemo_attn_cfg *cfgs, int n_cfg,
                                     unsigned scope_mask, int all, char *buf, size_t n);
/* The row of key in kind's option table, or -1. */
MNEMO_API int mnemo_attn_opt_find(int kind, const char *key);

#ifdef __cplusplus
}
#endif
#endif /* MNEMO_ATTN_H */
