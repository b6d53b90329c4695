/*
 * attn_int.h -- internal declarations shared by the attention kinds and the registry: the ops
 * objects of each kind, and the pieces of the dense kind that its reference file shares (the
 * layout of its saved activations and streaming state). Not installed.
 */
#ifndef MNI_ATTN_INT_H
#define MNI_ATTN_INT_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo_attn.h"

/* ---- the kinds (a fast and a reference ops object each, listed in registry.c) -------------- */
extern const struct mnemo_attn_ops mni_attn_dense, mni_attn_dense_ref;
extern const struct mnemo_attn_ops mni_attn_selective, mni_attn_selective_ref;
extern const struct mnemo_attn_ops mni_attn_infini, mni_attn_infini_ref;
extern const struct mnemo_attn_ops mni_attn_window, mni_attn_window_ref;
extern const struct mnemo_attn_ops mni_attn_block, mni_attn_block_ref;
extern const struct mnemo_attn_ops mni_attn_strided, mni_attn_strided_ref;
extern const struct mnemo_attn_ops mni_attn_longformer, mni_attn_longformer_ref;
extern const struct mnemo_attn_ops mni_attn_bigbird, mni_attn_bigbird_ref;

/* ---- dense: options and shared layout ------------------------------------------------------ */

/* Rows of the option table (dense.c): the session's window (StreamingLLM). */
enum {
    MNI_DENSE_OPT_WINDOW,    /* session: keep the last `window` keys (0 = all, full at n_ctx) */
    MNI_DENSE_OPT_SINKS,     /* session: and the first `sinks` */
    MNI_DENSE_OPT_POSITIONS, /* session: 0 positions within the cache, 1 absolute */
    MNI_DENSE_OPT_COUNT
};
static inline int mni_dense_window(const struct mnemo_attn_cfg *cfg)
{
    return (int)cfg->opt[MNI_DENSE_OPT_WINDOW];
}
static inline int mni_dense_sinks(const struct mnemo_attn_cfg *cfg)
{
    return (int)cfg->opt[MNI_DENSE_OPT_SINKS];
}
static inline int mni_dense_absolute(const struct mnemo_attn_cfg *cfg)
{
    return (int)cfg->opt[MNI_DENSE_OPT_POSITIONS] == 1;
}
/* Slots of a session state: sinks + window with a window, else n_ctx. */
static inline int mni_dense_slots(const struct mnemo_attn_cfg *cfg)
{
    return mni_dense_window(cfg) > 0 ? mni_dense_sinks(cfg) + mni_dense_window(cfg) : cfg->n_ctx;
}
/* A windowed state: the slot of stream position pos; the position a slot holds when count
 * tokens have been fed; the rank (cache position) of a held position. */
int64_t mni_dense_slot(const struct mnemo_attn_cfg *cfg, int64_t pos);
int64_t mni_dense_slot_pos(const struct mnemo_attn_cfg *cfg, int64_t count, int64_t slot);
int64_t mni_dense_rank(const struct mnemo_attn_cfg *cfg, int64_t count, int64_t pos);

/* Head vectors are stored with a row stride HSP = HS rounded up to 8 floats (one AVX vector),
 * the padding columns zero, so that the kernels never need a column tail. */
static inline int mni_dense_hsp(int HS) { return (HS + 7) & ~7; }

/* Saved activations of one forward call (io->act), each section 64-byte aligned:
 *   q   (B,NH,T,HSP)  rotated q scaled by log2(e)/sqrt(HS): the scores come out in log2 units
 *   k   (B,NH,T,HSP)  rotated k
 *   v   (B,NH,T,HSP)  v
 *   lse (B,NH,T)      log2 of the softmax denominator: P_ij = 2^(q_i.k_j - lse_i)
 *   cs  (T,HS/2,2)    the RoPE table of positions 0..T-1 (empty if cfg->rope == 0)
 * Offsets are in bytes from the start of io->act. */
struct mni_dense_act {
    size_t q, k, v, lse, cs, total;
};
void mni_dense_act_layout(struct mni_dense_act *lay, const struct mnemo_attn_cfg *cfg, int B,
                          int T);

/* The saved activations of one layer, as typed pointers into act (mni_dense_act_layout). */
struct mni_dense_view {
    float *q, *k, *v; /* (B,NH,T,HSP) rotated; q pre-scaled into log2 units by the fast path */
    float *lse;       /* (B,NH,T) */
    float *cs;        /* (T,HS/2,2) RoPE table, NULL without RoPE */
};
void mni_dense_act_view(struct mni_dense_view *vw, const struct mnemo_attn_cfg *cfg, int B, int T,
                        void *act);

/* Streaming state (a KV cache), each section 64-byte aligned:
 *   header  struct mni_dense_state
 *   k       (NH,n_ctx,HSP)  rotated keys of positions 0..count-1
 *   v       (NH,n_ctx,HSP)  values */
struct mni_dense_state {
    int64_t count; /* tokens held; the next token gets position count */
    int64_t n_ctx; /* slots, copied from the cfg at state_init (checked by step) */
};
size_t mni_dense_state_hdr_bytes(void);

/* The naive references (dense_ref.c): plain loops, double accumulation, one row of scores at
 * a time. Same contracts as the ops slots; forward writes the same act layout as the fast
 * path, backward recomputes everything from io->qkv and io->dout (it reads neither act nor
 * out), step uses the same state layout. */
size_t mni_dense_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
size_t mni_dense_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n);
enum mnemo_status mni_dense_ref_forward(const struct mnemo_attn_cfg *cfg,
                                        struct mnemo_attn_io *io);
enum mnemo_status mni_dense_ref_backward(const struct mnemo_attn_cfg *cfg,
                                         struct mnemo_attn_io *io);
/* Attends n new tokens (already checked to fit) against a state; appends them. */
void mni_dense_ref_step(const struct mnemo_attn_cfg *cfg, void *state,
                        float *out,       // (n,NH,HS)
                        const float *qkv, // (n,3,NH,HS)
                        int n, void *scratch);

/* ---- selective: options and shared layout -------------------------------------------------- */

/* Rows of the option table (selective.c). */
enum {
    MNI_SEL_OPT_BUDGET,    /* session, per layer: cache slots (0 = none) */
    MNI_SEL_OPT_THRESHOLD, /* session: evict keys whose penalty reaches it (0 = off) */
    MNI_SEL_OPT_MEM_EPS,   /* train: weight of the memory loss (0 = off) */
    MNI_SEL_OPT_MEM_TAU,   /* train: its tau */
    MNI_SEL_OPT_COUNT
};
static inline int mni_sel_budget(const struct mnemo_attn_cfg *cfg)
{
    return (int)cfg->opt[MNI_SEL_OPT_BUDGET];
}
static inline int mni_sel_mem_on(const struct mnemo_attn_cfg *cfg)
{
    return cfg->opt[MNI_SEL_OPT_MEM_EPS] > 0;
}
static inline double mni_sel_tau(const struct mnemo_attn_cfg *cfg)
{
    return cfg->opt[MNI_SEL_OPT_MEM_TAU];
}
/* The memory loss a forward reports is aux_loss = c sum_b max_i M_i with this c = mem_eps /
 * (n_layer T), so that the model's sum over layers / B is the paper's eps L_mem. */
static inline double mni_sel_aux_scale(const struct mnemo_attn_cfg *cfg, int T)
{
    return cfg->opt[MNI_SEL_OPT_MEM_EPS] / ((double)cfg->n_layer * (double)T);
}

/* Saved activations of one forward call (io->act), each section 64-byte aligned:
 *   q, k, v (B,NH,T,HS)  rotated q (unscaled), rotated k, v
 *   lse     (B,NH,T)     natural log of each row's softmax denominator (logits z - F)
 *   fsum    (B,T)        double: each key column's total vote over the window
 *   mval    (B)          double: the memory loss's max_i M_i of each window (mem_eps > 0)
 *   mrow    (B)          int32: the row i that attains it (the first one)
 *   cs      (T,HS/2,2)   the RoPE table (empty if cfg->rope == 0) */
struct mni_sel_act {
    size_t q, k, v, lse, fsum, mval, mrow, cs, total;
};
void mni_sel_act_layout(struct mni_sel_act *lay, const struct mnemo_attn_cfg *cfg, int B, int T);
struct mni_sel_view {
    float *q, *k, *v, *lse;
    double *fsum, *mval;
    int32_t *mrow;
    float *cs; /* NULL without RoPE */
};
void mni_sel_act_view(struct mni_sel_view *vw, const struct mnemo_attn_cfg *cfg, int B, int T,
                      void *act);

/* Streaming state: a fixed block of S slots (S = budget, or n_ctx without one), reused: header,
 * then k (NH,S,HS) rotated, v (NH,S,HS), F (S) doubles (the penalty each cached key carries for
 * the next query), pos (S) int64 (the key's position in the stream). Slots 0..used-1 are live,
 * in no particular order (an eviction moves the last slot into the freed one). */
struct mni_sel_state {
    int64_t count;   /* tokens fed; the next token gets position count */
    int64_t n_ctx;   /* copied from the cfg at state_init (checked by step) */
    int64_t slots;   /* S */
    int64_t used;    /* live slots */
    int64_t evicted; /* keys evicted so far */
};
size_t mni_sel_state_hdr_bytes(void);
struct mni_sel_slots {
    float *k, *v;
    double *F;
    int64_t *pos;
};
void mni_sel_state_view(const struct mnemo_attn_cfg *cfg, void *state, struct mni_sel_slots *sl);
/* Frees a slot for a new key by the pruning rules (threshold, then budget) and returns its
 * index, or -1 when the state is full and may not evict (no budget). */
int64_t mni_sel_make_room(const struct mnemo_attn_cfg *cfg, void *state);


/* The naive references (selective_ref.c): double precision, the penalty written in its closed
 * form F[i,j] = sum_{j<k<i, j>=1} relu(z_0[k,j]) with full T x T matrices (tests only). Forward
 * writes the fast path's act layout; backward reads neither act nor out. */
size_t mni_sel_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
size_t mni_sel_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n);
enum mnemo_status mni_sel_ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
enum mnemo_status mni_sel_ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
void mni_sel_ref_step(const struct mnemo_attn_cfg *cfg, void *state, float *out,
                      const float *qkv, int n, void *scratch);

/* ---- infini: options and shared layout ------------------------------------------------------ */

/* Rows of the option table (infini.c). */
enum {
    MNI_INF_OPT_SEGMENT,      /* model (mutable): segment length N (0 = n_ctx) */
    MNI_INF_OPT_MEM_UPDATE,   /* model: 0 linear, 1 delta */
    MNI_INF_OPT_GATE_LR_MULT, /* train: learning-rate multiplier of the gates */
    MNI_INF_OPT_MEM_REPEAT,   /* train: write weights log-uniform in [1, R] (0 = off) */
    MNI_INF_OPT_CARRY,        /* train: the memory carried across windows (lanes) */
    MNI_INF_OPT_COUNT
};
/* The segment length N of a cfg (option segment, 0 meaning n_ctx). */
static inline int mni_inf_segment(const struct mnemo_attn_cfg *cfg)
{
    const int s = (int)cfg->opt[MNI_INF_OPT_SEGMENT];
    return s > 0 ? s : cfg->n_ctx;
}
static inline int mni_inf_delta(const struct mnemo_attn_cfg *cfg)
{
    return (int)cfg->opt[MNI_INF_OPT_MEM_UPDATE] == 1;
}
/* Does a call fold its segments with write weights (training with mem_repeat > 1)? */
static inline int mni_inf_weighted(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io)
{
    return io->training && cfg->opt[MNI_INF_OPT_MEM_REPEAT] > 1;
}
/* Draws the call's write weights w (B,S), S = ceil(T/N), log-uniform in [1, mem_repeat], from
 * io->seed (the same draws for a forward and its backward, and for the reference); returns 0
 * (nothing drawn) when the call is not weighted. */
int mni_inf_write_weights(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io,
                          float *w);
/* The carried state of one lane (option carry=true; mnemo_attn_io.carry), carry_bytes long:
 *   header  64 bytes: an int64 counting the segments folded into the memory so far (0: a fresh
 *           lane, whose memory is empty and not read), the rest zero
 *   M, z    (NH,HS,HS) and (NH,HS) fp32: the memory after the lane's last window
 * so all zero bytes is a fresh lane. A window continues the lane: its segment 0 reads M, z when
 * the count is not 0, and the window's last segment is folded into carry_out (the session does
 * the same at the segment's end), so windows of a multiple of N chained through their carries
 * compute what a session fed the lane's text does. No gradient flows into the carried memory. */
#define MNI_INF_CARRY_HDR 64
static inline size_t mni_inf_carry_bytes(const struct mnemo_attn_cfg *cfg)
{
    const size_t HS = (size_t)cfg->head_dim;
    return cfg->opt[MNI_INF_OPT_CARRY] != 0
               ? MNI_INF_CARRY_HDR + (size_t)cfg->n_head * (HS * HS + HS) * sizeof(float)
               : 0;
}
/* Lane b's header (segments folded so far), and the M, z of its head h. */
static inline int64_t *mni_inf_carry_count(const void *carry, const struct mnemo_attn_cfg *cfg,
                                           int b)
{
    return (int64_t *)((char *)carry + (size_t)b * mni_inf_carry_bytes(cfg));
}
static inline float *mni_inf_carry_M(const void *carry, const struct mnemo_attn_cfg *cfg, int b,
                                     int h)
{
    const size_t HS = (size_t)cfg->head_dim;
    return (float *)((char *)carry + (size_t)b * mni_inf_carry_bytes(cfg) + MNI_INF_CARRY_HDR) +
           (size_t)h * HS * HS;
}
static inline float *mni_inf_carry_z(const void *carry, const struct mnemo_attn_cfg *cfg, int b,
                                     int h)
{
    const size_t HS = (size_t)cfg->head_dim;
    return (float *)((char *)carry + (size_t)b * mni_inf_carry_bytes(cfg) + MNI_INF_CARRY_HDR) +
           (size_t)cfg->n_head * HS * HS + (size_t)h * HS;
}

/* The denominator guard of the memory read-out: sigma(q).z is clamped to at least this
 * (fp32; the spec's default, docs/internals/infini.md). */
#define MNI_INF_DEN_EPS 1e-6f

/* The dense cfg of the local attention inside one segment: the same heads and RoPE, a window
 * of N tokens (so RoPE positions are those within the segment, 0..N-1). */
void mni_inf_dense_cfg(struct mnemo_attn_cfg *d, const struct mnemo_attn_cfg *cfg);

/* Streaming state, each section 64-byte aligned. The fast path:
 *   header  struct mni_inf_state
 *   M       (NH,HS,HS) fp32  memory entering the current segment (what its queries read)
 *   z       (NH,HS)    fp32  its normaliser
 *   Mn, zn  the same shapes: M, z plus the current segment's complete blocks of R rows (only
 *           when N > R; else the one block is folded at the segment's end, in step scratch)
 *   k, v    (NH,R,HS)  unrotated keys and values of the block being filled, R = min(N, 64)
 *           (the fold's block height: folded block by block as training folds the segment,
 *           so a session holds the training forward's memory bit for bit)
 *   dense   a dense-kind state with n_ctx = N: the current segment's rotated keys and values,
 *           for the local attention
 * so one segment of keys and values and one block, not the segment twice (for N <= 64 the
 * block is the segment). The reference (ref = 1): header, M, z, and
 * k, v (NH,N,HS) for the whole segment, folded at its end; Mn, zn and dense are NULL.
 * Nothing depends on the stream length: a session runs forever in this many bytes. */
struct mni_inf_state {
    int64_t count;   /* tokens fed */
    int64_t in_seg;  /* tokens of the current segment, 0 <= in_seg < N */
    int64_t n_seg;   /* segments folded into M so far (0: the memory is empty, not read) */
    int64_t segment; /* N, copied from the cfg at state_init (checked by step) */
};
struct mni_inf_view {
    struct mni_inf_state *hdr;
    float *M, *z, *Mn, *zn, *k, *v;
    int rows; /* rows of k and v per head: R (fast path) or N (reference) */
    void *dense;
};
void mni_inf_state_view(const struct mnemo_attn_cfg *cfg, int ref, void *state,
                        struct mni_inf_view *vw);

/* The naive references (infini_ref.c): double precision, plain loops, written from the spec's
 * equations; forward and backward read and write neither act nor (backward) out. step uses the
 * state layout above without its dense part. */
size_t mni_inf_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
size_t mni_inf_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n);
enum mnemo_status mni_inf_ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
enum mnemo_status mni_inf_ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
void mni_inf_ref_step(const struct mnemo_attn_cfg *cfg, void *state, const float *params,
                      float *out, const float *qkv, int n, void *scratch);

/* ---- the sparse-pattern engine (sparse.c; reference sparse_ref.c) ------------------------------
 * A fixed or combined sparse-pattern kind (window, block, strided, longformer, bigbird) is a
 * pattern; sparse.c computes, for any pattern, o_i = sum over the allowed j <= i of
 * softmax(q_i . k_j / sqrt(HS)) v_j, its backward and its streaming. Queries and keys are
 * positions 0..T-1 within the window (in a session: absolute positions of the stream). */
struct mni_pattern {
    /* The order in which head h's queries are processed, in groups whose queries share keys
     * (the strided head's residue classes): perm (T) a permutation of 0..T-1, gstart (ng + 1)
     * each group's first index into perm, gstart[ng] = T; returns ng. A block of queries never
     * spans two groups. NULL: position order, one group. */
    int (*groups)(const struct mnemo_attn_cfg *cfg, int layer, int h, int T, int *perm,
                  int *gstart);
    /* The keys queries q[0..nq) (ascending) of head h may see, a tile at a time: fills keys with
     * the next n <= max of them (increasing, without repeats, all <= q[nq-1]) and returns n; 0
     * when there are no more. *cursor is the pattern's own (0 at the start). The union over the
     * tiles must hold every key mask() allows any of the queries. */
    int (*next_keys)(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                     int *cursor, int *keys, int max);
    /* The definition: sets S[r * ld + c] = -inf wherever query q[r] may not see key keys[c]
     * (keys[c] > q[r] included), and leaves the allowed entries alone. Every query may see
     * itself. */
    void (*mask)(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                 const int *keys, int nk, float *S, int ld);
    /* The keys a streaming state must keep: the first *sinks positions and the last *recent;
     * *recent = 0 (or NULL): every key (the state then fills at n_ctx). */
    void (*retain)(const struct mnemo_attn_cfg *cfg, int *sinks, int *recent);
    /* The allowed pairs (i, j) of head h over a window of T tokens (FLOPs, benchmarks). */
    double (*pairs)(const struct mnemo_attn_cfg *cfg, int h, int T);
};

struct mni_sparse_view {
    int64_t count, slots, sinks, recent;
    float *k, *v;  /* (NH,slots,HS): k rotated at its absolute position */
    int64_t *pos;  /* (slots) the position a slot holds, -1 if none */
};
/* The state's slot of position pos. */
int64_t mni_sparse_slot(const struct mni_sparse_view *vw, int64_t pos);
void mni_sparse_state_view(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                           void *state, struct mni_sparse_view *vw);
size_t mni_sparse_act_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
size_t mni_sparse_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
enum mnemo_status mni_sparse_check_io(const struct mnemo_attn_cfg *cfg,
                                      const struct mnemo_attn_io *io, int backward);
enum mnemo_status mni_sparse_forward(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                     struct mnemo_attn_io *io);
enum mnemo_status mni_sparse_backward(const struct mni_pattern *p,
                                      const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
size_t mni_sparse_state_bytes(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg);
void mni_sparse_state_init(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                           void *state);
size_t mni_sparse_state_live_bytes(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                   const void *state);
size_t mni_sparse_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n);
enum mnemo_status mni_sparse_check_step(const struct mni_pattern *p,
                                        const struct mnemo_attn_cfg *cfg,
                                        const struct mnemo_attn_step *sa);
enum mnemo_status mni_sparse_step(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                  struct mnemo_attn_step *sa);
/* Pieces patterns share: the query order in groups of b consecutive positions (b >= T: one
 * group), or in residue classes mod d (each in position order), returning the number of groups
 * (the groups() hook's contract); and the keys lo..hi, a tile of at most max at a time
 * (next_keys of a contiguous run; *cursor counts the keys listed so far). */
int mni_sparse_groups_runs(int T, int b, int *perm, int *gstart);
int mni_sparse_groups_residues(int T, int d, int *perm, int *gstart);
int mni_sparse_run_keys(int lo, int hi, int *cursor, int *keys, int max);
/* The capabilities of a pattern kind: causal, trainable, streaming exactly; bounded when the
 * pattern's state keeps a ring of recent keys. */
uint32_t mni_sparse_caps(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg);
/* 4 NH HS x the mean allowed keys per query (over the heads' pairs()). */
double mni_sparse_flops(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int T);
/* The shape checks every pattern kind makes (head_dim even in [2, 256], n_head, n_ctx, theta). */
enum mnemo_status mni_sparse_validate_shape(const struct mnemo_attn_cfg *cfg);

/* The patterns of the kinds block, strided, longformer and bigbird (their files), for tests. */
extern const struct mni_pattern mni_pattern_block, mni_pattern_strided, mni_pattern_longformer,
    mni_pattern_bigbird;

size_t mni_sparse_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
size_t mni_sparse_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n);
enum mnemo_status mni_sparse_ref_forward(const struct mni_pattern *p,
                                         const struct mnemo_attn_cfg *cfg,
                                         struct mnemo_attn_io *io);
enum mnemo_status mni_sparse_ref_backward(const struct mni_pattern *p,
                                          const struct mnemo_attn_cfg *cfg,
                                          struct mnemo_attn_io *io);
enum mnemo_status mni_sparse_ref_step(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                      struct mnemo_attn_step *sa);

/* The two ops objects of a pattern kind `id` (mni_attn_<id>, mni_attn_<id>_ref) from its pattern
 * PAT, option table OPTS (n_opts rows) and validate function (which calls
 * mni_sparse_validate_shape): the slots are the engine's, bound to PAT. */
#define MNI_SPARSE_KIND(id, NAME, PAT, OPTS, N_OPTS, VALIDATE)                                 \
    static uint32_t id##_caps(const struct mnemo_attn_cfg *c) { return mni_sparse_caps(&PAT, c); } \
    static double id##_flops(const struct mnemo_attn_cfg *c, int T)                            \
    {                                                                                          \
        return mni_sparse_flops(&PAT, c, T);                                                   \
    }                                                                                          \
    static enum mnemo_status id##_fwd(const struct mnemo_attn_cfg *c, struct mnemo_attn_io *io) \
    {                                                                                          \
        return mni_sparse_forward(&PAT, c, io);                                                \
    }                                                                                          \
    static enum mnemo_status id##_bwd(const struct mnemo_attn_cfg *c, struct mnemo_attn_io *io) \
    {                                                                                          \
        return mni_sparse_backward(&PAT, c, io);                                               \
    }                                                                                          \
    static size_t id##_state(const struct mnemo_attn_cfg *c) { return mni_sparse_state_bytes(&PAT, c); } \
    static void id##_init(const struct mnemo_attn_cfg *c, void *s) { mni_sparse_state_init(&PAT, c, s); } \
    static size_t id##_live(const struct mnemo_attn_cfg *c, const void *s)                     \
    {                                                                                          \
        return mni_sparse_state_live_bytes(&PAT, c, s);                                        \
    }                                                                                          \
    static enum mnemo_status id##_step(const struct mnemo_attn_cfg *c, struct mnemo_attn_step *s) \
    {                                                                                          \
        return mni_sparse_step(&PAT, c, s);                                                    \
    }                                                                                          \
    static enum mnemo_status id##_ref_fwd(const struct mnemo_attn_cfg *c, struct mnemo_attn_io *io) \
    {                                                                                          \
        enum mnemo_status st = mni_sparse_check_io(c, io, 0);                                  \
        return st != MNEMO_OK ? st : mni_sparse_ref_forward(&PAT, c, io);                      \
    }                                                                                          \
    static enum mnemo_status id##_ref_bwd(const struct mnemo_attn_cfg *c, struct mnemo_attn_io *io) \
    {                                                                                          \
        enum mnemo_status st = mni_sparse_check_io(c, io, 1);                                  \
        return st != MNEMO_OK ? st : mni_sparse_ref_backward(&PAT, c, io);                     \
    }                                                                                          \
    static enum mnemo_status id##_ref_step(const struct mnemo_attn_cfg *c, struct mnemo_attn_step *s) \
    {                                                                                          \
        enum mnemo_status st = mni_sparse_check_step(&PAT, c, s);                              \
        return st != MNEMO_OK ? st : mni_sparse_ref_step(&PAT, c, s);                          \
    }                                                                                          \
    const struct mnemo_attn_ops mni_attn_##id = {                                              \
        .api_version = MNEMO_ATTN_API_VERSION, .name = NAME, .opts = OPTS, .n_opts = N_OPTS,    \
        .caps = id##_caps, .validate = VALIDATE, .flops_per_token = id##_flops,                \
        .act_bytes = mni_sparse_act_bytes, .scratch_bytes = mni_sparse_scratch_bytes,          \
        .forward = id##_fwd, .backward = id##_bwd, .state_bytes = id##_state,                  \
        .step_scratch_bytes = mni_sparse_step_scratch_bytes, .state_init = id##_init,          \
        .step = id##_step, .state_live_bytes = id##_live};                                     \
    const struct mnemo_attn_ops mni_attn_##id##_ref = {                                        \
        .api_version = MNEMO_ATTN_API_VERSION, .name = NAME, .is_ref = 1, .opts = OPTS,        \
        .n_opts = N_OPTS, .caps = id##_caps, .validate = VALIDATE, .flops_per_token = id##_flops, \
        .act_bytes = mni_sparse_act_bytes, .scratch_bytes = mni_sparse_ref_scratch_bytes,      \
        .forward = id##_ref_fwd, .backward = id##_ref_bwd, .state_bytes = id##_state,          \
        .step_scratch_bytes = mni_sparse_ref_step_scratch_bytes, .state_init = id##_init,      \
        .step = id##_ref_step, .state_live_bytes = id##_live}

#endif /* MNI_ATTN_INT_H */
