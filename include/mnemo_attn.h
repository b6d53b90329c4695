/*
 * mnemo_attn.h -- the attention-kind interface (versioned; fields are only appended).
 *
 * An attention kind turns the packed projections of one layer, qkv (B,T,3,NH,HS), into the
 * per-head outputs (B,T,NH,HS) that the model then projects with W_O. It owns everything that
 * differs between kinds: positions (RoPE is applied by the kind, through mni_rope_*), masks,
 * extra learned parameters, and the streaming state. The model owns the memory: a kind only
 * *declares* how many bytes it needs (act_bytes, scratch_bytes, state_bytes) and receives them.
 *
 * Contract for every kind (docs/internals/attention.md):
 *  - forward/backward over whole windows; backward overwrites dqkv and accumulates dparams.
 *  - step() feeds n >= 1 new tokens to a streaming state; a window fed through step() token by
 *    token gives the forward's outputs up to float rounding.
 *  - nothing is allocated inside forward, backward or step.
 *  - a naive reference path exists (use_ref = 1) and is tested against the fast one.
 */
#ifndef MNEMO_ATTN_H
#define MNEMO_ATTN_H

#include "mnemo.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MNEMO_ATTN_API_VERSION 1

struct mnemo_attn_cfg {
    int kind;         /* enum mnemo_attn_kind */
    int n_head;       /* NH */
    int head_dim;     /* HS */
    int n_ctx;        /* longest training window T; the session's cache size for dense */
    int rope;         /* 1: the kind rotates q and k with RoPE; 0: positions live elsewhere */
    float rope_theta; /* RoPE base */
    int use_ref;      /* 1: run the naive reference path (tests, debugging) */
    /* appended by later kinds; zero means "default" for every appended field */
    int budget;       /* selective: cache slots of step()'s state; when full, the key with the
                       * largest penalty is evicted (never the first token, never the new one).
                       * 0 = no budget (n_ctx slots, full at n_ctx) */
    float threshold;  /* selective: evict cached keys whose penalty reaches it (0 = off) */
    float mem_eps;    /* selective, training: weight of the memory loss (0 = off); the kind
                       * then reports aux_loss and takes its gradient through aux_grad */
    float mem_tau;    /* selective: the memory loss's tau (0 = 1) */
    int segment;      /* infini: segment length N (0 = n_ctx); local attention stays inside a
                       * segment, the memory carries everything before it */
    int mem_update;   /* infini: enum mnemo_mem_update (0 = linear) */
};

/* Buffers of one forward or backward call over B windows of T tokens. */
struct mnemo_attn_io {
    int B, T;
    const float *qkv;     /* (B,T,3,NH,HS) q,k,v of each token, before any rotary embedding */
    float *out;           /* forward output (B,T,NH,HS) */
    const float *dout;    /* backward input (B,T,NH,HS) */
    float *dqkv;          /* backward output (B,T,3,NH,HS), overwritten */
    const float *params;  /* the kind's own parameters for this layer (n_params floats) */
    float *dparams;       /* their gradients, accumulated (+=) */
    void *act;            /* this layer's saved activations: written by forward, read by backward */
    void *scratch;        /* workspace shared by all layers */
    /* appended */
    double aux_loss;      /* forward output: the kind's auxiliary loss term for this layer
                           * (selective with mem_eps: sum over windows of max_i M_i), else 0 */
    float aux_grad;       /* backward input: d(objective) / d(aux_loss) */
    const float *write_w; /* infini, training: (B,S) weight of each segment's memory write
                           * (S = ceil(T/N)): M += w U-fold, z += w colsum, as if segment s of
                           * window b occurred w times (exactly so for the linear rule);
                           * forward and backward must get the same; NULL = every weight 1.
                           * Other kinds ignore it. */
};

struct mnemo_attn_ops {
    uint32_t api_version; /* MNEMO_ATTN_API_VERSION at the time the kind was written */
    const char *name;     /* "dense", ... */
    /* Rejects impossible settings with MNEMO_ERR_ARG and a message (mni_err). */
    enum mnemo_status (*validate)(const struct mnemo_attn_cfg *cfg);
    /* Extra learned parameters per layer (0 for dense) and their initial values. */
    size_t (*n_params)(const struct mnemo_attn_cfg *cfg);
    /* Bytes of saved activations per layer, and of workspace shared by all layers. */
    size_t (*act_bytes)(const struct mnemo_attn_cfg *cfg, int B, int T);
    size_t (*scratch_bytes)(const struct mnemo_attn_cfg *cfg, int B, int T);
    enum mnemo_status (*forward)(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
    enum mnemo_status (*backward)(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
    /* Streaming. state_bytes bounds the per-layer state; step_scratch_bytes the workspace of
     * one step() of up to n tokens. step() returns MNEMO_ERR_FULL if the state cannot take n
     * more tokens. */
    size_t (*state_bytes)(const struct mnemo_attn_cfg *cfg);
    size_t (*step_scratch_bytes)(const struct mnemo_attn_cfg *cfg, int n);
    void (*state_init)(const struct mnemo_attn_cfg *cfg, void *state);
    enum mnemo_status (*step)(const struct mnemo_attn_cfg *cfg, void *state,
                              const float *params, /* this layer's kind parameters */
                              float *out,          /* (n,NH,HS) */
                              const float *qkv,    /* (n,3,NH,HS), before rotary embedding */
                              int n, void *scratch);
    /* Bytes of state actually held now (what memory benchmarks report). */
    size_t (*state_live_bytes)(const struct mnemo_attn_cfg *cfg, const void *state);
};

/* The registry: MNEMO_ATTN_KIND_* -> ops. NULL for an out-of-range kind. */
MNEMO_API const struct mnemo_attn_ops *mnemo_attn_ops_get(int kind);

#ifdef __cplusplus
}
#endif
#endif /* MNEMO_ATTN_H */
