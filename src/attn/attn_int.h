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

/* ---- the kinds (one ops object per file, listed in registry.c) ----------------------------- */
extern const struct mnemo_attn_ops mni_attn_dense;
extern const struct mnemo_attn_ops mni_attn_selective;
extern const struct mnemo_attn_ops mni_attn_infini;

/* ---- dense: shared layout ----------------------------------------------------------------- */

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

/* ---- selective: shared layout -------------------------------------------------------------- */

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

/* The memory loss's tau (cfg->mem_tau, 0 meaning 1). */
double mni_sel_tau(const struct mnemo_attn_cfg *cfg);

/* The naive references (selective_ref.c): double precision, the penalty written in its closed
 * form F[i,j] = sum_{j<k<i, j>=1} relu(z_0[k,j]) with full T x T matrices (tests only). Forward
 * writes the fast path's act layout; backward reads neither act nor out. */
size_t mni_sel_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
size_t mni_sel_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n);
enum mnemo_status mni_sel_ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
enum mnemo_status mni_sel_ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
void mni_sel_ref_step(const struct mnemo_attn_cfg *cfg, void *state, float *out,
                      const float *qkv, int n, void *scratch);

/* ---- infini: shared layout ---------------------------------------------------------------- */

/* The segment length N of a cfg (cfg->segment, 0 meaning n_ctx). */
static inline int mni_inf_segment(const struct mnemo_attn_cfg *cfg)
{
    return cfg->segment > 0 ? cfg->segment : cfg->n_ctx;
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
 * block is the segment). The reference (cfg->use_ref): header, M, z, and
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
void mni_inf_state_view(const struct mnemo_attn_cfg *cfg, void *state, struct mni_inf_view *vw);

/* The naive references (infini_ref.c): double precision, plain loops, written from the spec's
 * equations; forward and backward read and write neither act nor (backward) out. step uses the
 * state layout above without its dense part. */
size_t mni_inf_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T);
size_t mni_inf_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n);
enum mnemo_status mni_inf_ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
enum mnemo_status mni_inf_ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io);
void mni_inf_ref_step(const struct mnemo_attn_cfg *cfg, void *state, const float *params,
                      float *out, const float *qkv, int n, void *scratch);

#endif /* MNI_ATTN_INT_H */
