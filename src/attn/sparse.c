/*
 * sparse.c -- the engine of the fixed and combined sparse-pattern kinds (window, block,
 * strided, longformer, bigbird; spec ../shared/papers/efficient-transformers-survey.md §3.1,
 * §3.2, §3.4): causal softmax attention over the keys a pattern allows,
 *     o_i = sum_{j in A(i)} softmax_j(q_i . k_j / sqrt(HS)) v_j,   A(i) subset of {j <= i},
 * computing only the products the pattern needs. A kind is a pattern (struct mni_pattern,
 * attn_int.h): the order and groups of its queries, an iterator over the keys a block of queries
 * may see, the exact mask inside such a tile, and which keys a streaming state must keep. This
 * file does the rest, for every pattern: training forward and backward, streaming, layouts.
 *
 * Tiles hold the queries along the vector lanes, as the dense kind's kernels do (dense.c): a
 * block is up to QW = 16 queries of one head (in the pattern's query order, never across one of
 * its groups), kept transposed, Q^T (HS,QW); a tile of up to KB keys gives the scores
 * S^T (n,QW) = K_tile Q^T, read straight from the keys' rows through a table of row pointers, so
 * keys are never gathered or transposed whatever the pattern lists; the softmax statistics are
 * per-lane vectors (column max, exp2 and sums run down the tile's rows). The pattern's mask()
 * writes a query-major scratch (QW,KB) kept zero; the engine scans it 8 x 8 and carries the -inf
 * it finds, transposed, into S^T (a whole tile allowed costs one scan). A tile is split at the
 * block's first query (when at least SPLIT_MIN keys precede it): the keys after it (the causal
 * corner) form a tile of their own, so a pattern's per-pair mask loop does not run over the keys
 * every query of the block sees.
 *
 * Forward (FlashAttention-2): the rotated keys and the values are laid out per head in act
 * (rows contiguous: read in place by the tiles; qkv's row stride would alias a tile's rows into
 * few L1 sets), in the head's query order (a strided head's residue class is a run of rows), a
 * chunk of PREP positions at a time, in slices of PREP_SLICE that any thread waiting for the
 * chunk takes too. A chunk's layout comes in the work list one chunk ahead of the blocks whose
 * last query falls in it (a block's keys are <= that query): no barrier between the layout and
 * the blocks, which find their keys still in cache; the blocks of a head whose order is
 * permuted come after the last chunk, group by group. A block rotates and
 * scales its queries from qkv (by log2(e)/sqrt(HS): the scores come out in log2 units and only
 * 2^x is needed) and walks its tiles: S^T, the mask, the online softmax,
 * O^T (HS,QW) = alpha O^T + V_tile^T P^T; it writes out and lse (log2) of its rows, and
 * prefetches the next block's queries and output rows.
 * Backward: one task per (window, head) walks the same blocks and tiles in order, recomputing
 * P^T = 2^(S^T - lse), dP^T = V_tile dO^T, dS^T = P^T (dP^T - D) with D_i = dO_i . o_i, and
 * adds dq^T += K_tile^T dS^T (stored per block, rotated back: each query is in one block),
 * dv_j += P^T dO and dk_j += dS^T q through row pointers straight into dqkv (a row zeroed at
 * its first use), in a fixed order with one writer per value: the results are deterministic
 * for any thread count. A row of dk is rotated back in place once no later block lists it (the
 * head's floors), while it is still in cache. Backward reads io->qkv (the queries), io->out and
 * io->dout besides act.
 * Streaming: a state of the first `sinks` keys and a ring of the last `recent` ones (the
 * pattern's retain()), or a cache of every key up to n_ctx when the pattern needs them all;
 * each new token gathers the keys its pattern allows from the state.
 *
 * Requirements on a pattern: every query may see itself (so no row is empty), every key a
 * block's tile lists is <= the block's largest query, the keys of one block come in increasing
 * order without repeats, and mask() agrees with the definition the reference (sparse_ref.c)
 * uses: mask() *is* the definition (the reference asks it about every j <= i), and the
 * iterator must cover every allowed key (the conformance suite compares the two paths).
 */
#define _POSIX_C_SOURCE 200809L /* sched_yield */
#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "kern/vmath.h"
#include "mni.h"

#define QW 16      /* queries per block: the lanes of a tile (two AVX2 vectors) */
#define KB 64      /* keys per tile */
#define HS_MAX 256 /* largest head_dim (the stack tiles are sized for it) */
#define SPLIT_MIN 8 /* a tile is split at the block's first query when >= this many keys precede */
#define PREP 256    /* forward: positions laid out per preparation item */
#define SPIN_MAX 256 /* forward: a thread waiting for a slice spins this often, then yields */
#define PREP_SLICE 32 /* forward: positions laid out at a time (a thread takes slices of a chunk) */
#define ALIGN64 __attribute__((aligned(64)))

/* ---- layouts ------------------------------------------------------------------------------- */

/* Saved activations, 64-byte aligned sections: k, v (B,NH,T,HS) the rotated keys and the
 * values per head, lse (B,NH,T) in log2 units, cs (T,HS/2,2) the RoPE table (empty without
 * RoPE). */
struct act_lay {
    size_t k, v, lse, cs, total;
};

static void act_layout(struct act_lay *l, const struct mnemo_attn_cfg *cfg, int B, int T)
{
    const size_t rows = mni_mul(mni_mul((size_t)B, (size_t)cfg->n_head), (size_t)T);
    const size_t head = mni_align64(mni_mul(mni_mul(rows, (size_t)cfg->head_dim), sizeof(float)));
    l->k = 0;
    l->v = head;
    l->lse = mni_mul(2, head);
    l->cs = mni_add(l->lse, mni_align64(mni_mul(rows, sizeof(float))));
    l->total = mni_add(l->cs, cfg->rope ? mni_align64(mni_mul(mni_mul((size_t)T, (size_t)cfg->head_dim),
                                                              sizeof(float)))
                                        : 0);
}

size_t mni_sparse_act_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct act_lay l;
    act_layout(&l, cfg, B, T);
    return l.total;
}

/* Scratch: per head, its query order, group starts and ranks (ORD(T) = 3T + 1 ints: perm,
 * gstart, rank with rank[perm[k]] = k) and its blocks' starts
 * (T + 1 ints: block i is perm[bstart[i] .. bstart[i+1]), nb <= T blocks); for forward, the
 * work list of a window: the layouts of the nc = ceil(T / PREP) chunks of PREP positions and
 * the blocks of every head, sorted by the chunk their last query falls in, two ints an item
 * (2 (NH T + nc) ints; backward keeps each head's floors there, NH T ints), the chunks' item
 * counts (nc + 1 ints), and each (window, chunk)'s
 * preparation state (B nc pairs of atomic ints: the slices handed out, the slices done); for
 * backward, which rows of dk and dv each (window, head) has zeroed (B NH T bytes). */
struct scr_lay {
    size_t order, blocks, work, cstart, state, touched, total;
};

static size_t n_chunks(int T) { return ((size_t)T + PREP - 1) / PREP; }

/* The ints of a head's query order in scratch: perm (T), gstart (T + 1), rank (T). */
static size_t ord_ints(int T) { return mni_add(mni_mul(3, (size_t)T), 1); }

static void scr_layout(struct scr_lay *l, const struct mnemo_attn_cfg *cfg, int B, int T)
{
    const size_t NH = (size_t)cfg->n_head, nc = n_chunks(T);
    l->order = 0;
    l->blocks = mni_align64(mni_mul(mni_mul(NH, ord_ints(T)), sizeof(int)));
    l->work = mni_add(l->blocks, mni_align64(mni_mul(mni_mul(NH, mni_add((size_t)T, 1)), sizeof(int))));
    l->cstart = mni_add(l->work, mni_align64(mni_mul(mni_mul(2, mni_add(mni_mul(NH, (size_t)T), nc)),
                                                     sizeof(int))));
    l->state = mni_add(l->cstart, mni_align64(mni_mul(nc + 1, sizeof(int))));
    l->touched = mni_add(l->state, mni_align64(mni_mul(mni_mul(2 * (size_t)B, nc), sizeof(atomic_int))));
    l->total = mni_add(l->touched, mni_align64(mni_mul(mni_mul((size_t)B, NH), (size_t)T)));
}

size_t mni_sparse_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct scr_lay l;
    scr_layout(&l, cfg, B, T);
    return l.total;
}

/* Head h's query order perm (T) and its groups' starts gstart (ng + 1); returns ng. */
static int query_order(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                       int h, int T, int *perm, int *gstart)
{
    if (p->groups) return p->groups(cfg, layer, h, T, perm, gstart);
    for (int t = 0; t < T; t++) perm[t] = t;
    gstart[0] = 0;
    gstart[1] = T;
    return 1;
}

/* Every head's query order (perm at ord + h ORD(T), then gstart, then rank: where a position
 * comes in the order) and its blocks (each group cut into blocks of QW: bstart at blk + h (T +
 * 1), nb[h] of them); permuted[h] (if not NULL): 1 when the order is not the positions'. */
static void orders(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                   int T, int *ord, int *blk, int *nb, unsigned char *permuted)
{
    for (int h = 0; h < cfg->n_head; h++) {
        int *perm = ord + (size_t)h * ord_ints(T), *gstart = perm + T, *rank = gstart + T + 1;
        int *bs = blk + (size_t)h * ((size_t)T + 1), n = 0;
        const int ng = query_order(p, cfg, layer, h, T, perm, gstart);
        int moved = 0;
        for (int k = 0; k < T; k++) rank[perm[k]] = k, moved |= perm[k] != k;
        if (permuted) permuted[h] = (unsigned char)moved;
        for (int g = 0; g < ng; g++)
            for (int s = gstart[g]; s < gstart[g + 1]; s += QW) bs[n++] = s;
        bs[n] = T;
        nb[h] = n;
    }
}

/* dst (HS) = rot(src) * scale; cs_row NULL: no rotation. */
static void load_row(float *dst, const float *src, const float *cs_row, int HS, float scale)
{
    memcpy(dst, src, sizeof(float) * (size_t)HS);
    if (cs_row) mni_rope_apply(dst, cs_row, HS, +1);
    if (scale != 1.0f)
        for (int d = 0; d < HS; d++) dst[d] *= scale;
}

/* dst (HS) = R(sign) src * scale, R the rotation of the factors cs (NULL: none), sign +1 or -1
 * (its transpose): load_row's arithmetic (and mni_rope_apply's), vectorised. */
static void rot_row(float *restrict dst, const float *restrict src, const float *restrict cs,
                    int HS, float scale, int sign)
{
    const int half = HS / 2;
    int i = 0;
    if (!cs) {
        for (int d = 0; d < HS; d++) dst[d] = scale != 1.0f ? src[d] * scale : src[d];
        return;
    }
    const float sg = sign < 0 ? -1.0f : 1.0f;
#if MNI_HAVE_AVX2
    const __m256 sc = _mm256_set1_ps(scale), sv = _mm256_set1_ps(sg);
    for (; i + 8 <= half; i += 8) {
        const __m256 a = _mm256_loadu_ps(cs + 2 * i), b = _mm256_loadu_ps(cs + 2 * i + 8);
        const __m256 c = _mm256_castpd_ps(
            _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
        const __m256 s = _mm256_mul_ps(sv, _mm256_castpd_ps(_mm256_permute4x64_pd(
                                               _mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8)));
        const __m256 x0 = _mm256_loadu_ps(src + i), x1 = _mm256_loadu_ps(src + half + i);
        __m256 y0 = _mm256_sub_ps(_mm256_mul_ps(x0, c), _mm256_mul_ps(x1, s));
        __m256 y1 = _mm256_add_ps(_mm256_mul_ps(x0, s), _mm256_mul_ps(x1, c));
        if (scale != 1.0f) y0 = _mm256_mul_ps(y0, sc), y1 = _mm256_mul_ps(y1, sc);
        _mm256_storeu_ps(dst + i, y0);
        _mm256_storeu_ps(dst + half + i, y1);
    }
#endif
    for (; i < half; i++) {
        const float c = cs[2 * i], s = sg * cs[2 * i + 1], x0 = src[i], x1 = src[half + i];
        float y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        if (scale != 1.0f) y0 *= scale, y1 *= scale;
        dst[i] = y0;
        dst[half + i] = y1;
    }
}

/* Prefetches the rows (HS floats, stride ld) of n positions pos at X, for reading or (write)
 * writing. */
static void prefetch_rows(const float *X, size_t ld, const int *pos, int n, int HS, int write)
{
    for (int r = 0; r < n; r++)
        for (int d = 0; d < HS; d += 16) {
            if (write) __builtin_prefetch(X + (size_t)pos[r] * ld + d, 1, 3);
            else __builtin_prefetch(X + (size_t)pos[r] * ld + d, 0, 3);
        }
}

/* ---- tile kernels ---------------------------------------------------------------------------
 * Tiles with the queries along the lanes are (rows, QW) row-major, 64-byte aligned (stack).
 * The other operand is a table of row pointers (keys' rows of K or V in act, or of dk and dv
 * in dqkv), read by broadcasts or written row by row, so no key is ever gathered. Register
 * blocking on AVX2: 6 rows x 2 vectors in 12 accumulators; per step 2 loads of the wide
 * operand (pinned, MNI_PIN) and 6 broadcasts for 12 FMAs. Each output's sum runs in a fixed
 * order whatever the blocking (deterministic; the scalar twins give the same order). */

#if MNI_HAVE_AVX2
/* C (R,QW) = A_rows (R, nd) . Wt (nd,QW), rows A[0..R). */
static inline __attribute__((always_inline)) void bt_rows(float *restrict C,
                                                          const float *const *A,
                                                          const float *restrict Wt, int nd,
                                                          const int R)
{
    __m256 acc[6][2];
    const float *a[6];
    for (int u = 0; u < R; u++) acc[u][0] = acc[u][1] = _mm256_setzero_ps(), a[u] = A[u];
    for (int d = 0; d < nd; d++) {
        __m256 w0 = _mm256_load_ps(Wt + (size_t)d * QW), w1 = _mm256_load_ps(Wt + (size_t)d * QW + 8);
        MNI_PIN(w0);
        MNI_PIN(w1);
        for (int u = 0; u < R; u++) {
            const __m256 x = _mm256_broadcast_ss(a[u] + d);
            acc[u][0] = _mm256_fmadd_ps(x, w0, acc[u][0]);
            acc[u][1] = _mm256_fmadd_ps(x, w1, acc[u][1]);
        }
    }
    for (int u = 0; u < R; u++) {
        _mm256_store_ps(C + (size_t)u * QW, acc[u][0]);
        _mm256_store_ps(C + (size_t)u * QW + 8, acc[u][1]);
    }
}

/* C rows d0..d0+R-1 of (D,QW): C = C alpha + sum_r A_r[d] P[r] over the n rows of P (n,QW). */
static inline __attribute__((always_inline)) void at_rows(float *restrict C,
                                                          const float *const *A, int d0,
                                                          const float *restrict P, int n,
                                                          const float *alpha, const int R)
{
    __m256 acc[6][2];
    for (int u = 0; u < R; u++) {
        acc[u][0] = _mm256_load_ps(C + (size_t)u * QW);
        acc[u][1] = _mm256_load_ps(C + (size_t)u * QW + 8);
        if (alpha) {
            acc[u][0] = _mm256_mul_ps(acc[u][0], _mm256_load_ps(alpha));
            acc[u][1] = _mm256_mul_ps(acc[u][1], _mm256_load_ps(alpha + 8));
        }
    }
    for (int r = 0; r < n; r++) {
        __m256 p0 = _mm256_load_ps(P + (size_t)r * QW), p1 = _mm256_load_ps(P + (size_t)r * QW + 8);
        MNI_PIN(p0);
        MNI_PIN(p1);
        const float *a = A[r] + d0;
        for (int u = 0; u < R; u++) {
            const __m256 x = _mm256_broadcast_ss(a + u);
            acc[u][0] = _mm256_fmadd_ps(x, p0, acc[u][0]);
            acc[u][1] = _mm256_fmadd_ps(x, p1, acc[u][1]);
        }
    }
    for (int u = 0; u < R; u++) {
        _mm256_store_ps(C + (size_t)u * QW, acc[u][0]);
        _mm256_store_ps(C + (size_t)u * QW + 8, acc[u][1]);
    }
}

/* Rows C[0..R), columns c0..c0+8V: C = fma(alpha, A (R,nk; stride QW) . B (nk, ldb), C). */
static inline __attribute__((always_inline)) void nn_rows(float *const *C, int c0,
                                                          const float *restrict A,
                                                          const float *restrict B, size_t ldb,
                                                          int nk, float alpha, const int R,
                                                          const int V)
{
    __m256 acc[6][2];
    for (int u = 0; u < R; u++) acc[u][0] = acc[u][1] = _mm256_setzero_ps();
    for (int k = 0; k < nk; k++) {
        __m256 b0 = _mm256_load_ps(B + (size_t)k * ldb + c0);
        __m256 b1 = V == 2 ? _mm256_load_ps(B + (size_t)k * ldb + c0 + 8) : b0;
        MNI_PIN(b0);
        if (V == 2) MNI_PIN(b1);
        for (int u = 0; u < R; u++) {
            const __m256 x = _mm256_broadcast_ss(A + (size_t)u * QW + k);
            acc[u][0] = _mm256_fmadd_ps(x, b0, acc[u][0]);
            if (V == 2) acc[u][1] = _mm256_fmadd_ps(x, b1, acc[u][1]);
        }
    }
    const __m256 al = _mm256_set1_ps(alpha);
    for (int u = 0; u < R; u++)
        for (int v = 0; v < V; v++) {
            float *c = C[u] + c0 + 8 * v;
            _mm256_storeu_ps(c, _mm256_fmadd_ps(al, acc[u][v], _mm256_loadu_ps(c)));
        }
}
#endif

/* C (n,QW) = A_rows (n, nd) . Wt (nd,QW): scores S^T = K_tile Q^T, dP^T = V_tile dO^T. */
static void kern_bt(float *restrict C, const float *const *A, int n, const float *restrict Wt,
                    int nd)
{
#if MNI_HAVE_AVX2
    for (int r = 0; r < n; r += 6) {
        float *c = C + (size_t)r * QW;
        switch (n - r < 6 ? n - r : 6) {
        case 1: bt_rows(c, A + r, Wt, nd, 1); break;
        case 2: bt_rows(c, A + r, Wt, nd, 2); break;
        case 3: bt_rows(c, A + r, Wt, nd, 3); break;
        case 4: bt_rows(c, A + r, Wt, nd, 4); break;
        case 5: bt_rows(c, A + r, Wt, nd, 5); break;
        default: bt_rows(c, A + r, Wt, nd, 6); break;
        }
    }
#else
    for (int r = 0; r < n; r++)
        for (int i = 0; i < QW; i++) {
            float acc = 0.0f;
            for (int d = 0; d < nd; d++) acc = fmaf(A[r][d], Wt[(size_t)d * QW + i], acc);
            C[(size_t)r * QW + i] = acc;
        }
#endif
}

/* C (D,QW) = C alpha + A_rows^T P, i.e. C[d][i] = C[d][i] alpha[i] + sum_r A_r[d] P[r][i] over
 * the n rows of P (n,QW); alpha (QW) NULL: plain accumulation. O^T = alpha O^T + V_tile^T P^T
 * (forward), dq^T += K_tile^T dS^T (backward). */
static void kern_at(float *restrict C, const float *const *A, int n, const float *restrict P,
                    int D, const float *restrict alpha)
{
#if MNI_HAVE_AVX2
    for (int d = 0; d < D; d += 6) {
        float *c = C + (size_t)d * QW;
        switch (D - d < 6 ? D - d : 6) {
        case 1: at_rows(c, A, d, P, n, alpha, 1); break;
        case 2: at_rows(c, A, d, P, n, alpha, 2); break;
        case 3: at_rows(c, A, d, P, n, alpha, 3); break;
        case 4: at_rows(c, A, d, P, n, alpha, 4); break;
        case 5: at_rows(c, A, d, P, n, alpha, 5); break;
        default: at_rows(c, A, d, P, n, alpha, 6); break;
        }
    }
#else
    for (int d = 0; d < D; d++)
        for (int i = 0; i < QW; i++) {
            float acc = C[(size_t)d * QW + i] * (alpha ? alpha[i] : 1.0f);
            for (int r = 0; r < n; r++) acc = fmaf(A[r][d], P[(size_t)r * QW + i], acc);
            C[(size_t)d * QW + i] = acc;
        }
#endif
}

/* C_rows (n, W) = fma(alpha, A (n,nk; row stride QW) . B (nk,W; row stride ldb, a multiple of
 * 8, B 32-byte aligned), C_rows): dv_j += P^T dO, dk_j += dS^T q straight into dqkv. */
static void kern_nn(float *const *C, int n, const float *restrict A, const float *restrict B,
                    size_t ldb, int nk, int W, float alpha)
{
    int c0 = 0;
#if MNI_HAVE_AVX2
#define NN_CASES(V)                                                                            \
    for (int r = 0; r < n; r += 6) {                                                           \
        switch (n - r < 6 ? n - r : 6) {                                                       \
        case 1: nn_rows(C + r, c0, A + (size_t)r * QW, B, ldb, nk, alpha, 1, V); break;        \
        case 2: nn_rows(C + r, c0, A + (size_t)r * QW, B, ldb, nk, alpha, 2, V); break;        \
        case 3: nn_rows(C + r, c0, A + (size_t)r * QW, B, ldb, nk, alpha, 3, V); break;        \
        case 4: nn_rows(C + r, c0, A + (size_t)r * QW, B, ldb, nk, alpha, 4, V); break;        \
        case 5: nn_rows(C + r, c0, A + (size_t)r * QW, B, ldb, nk, alpha, 5, V); break;        \
        default: nn_rows(C + r, c0, A + (size_t)r * QW, B, ldb, nk, alpha, 6, V); break;       \
        }                                                                                      \
    }
    for (; c0 + 16 <= W; c0 += 16) NN_CASES(2)
    for (; c0 + 8 <= W; c0 += 8) NN_CASES(1)
#undef NN_CASES
#endif
    for (int r = 0; r < n; r++)
        for (int c = c0; c < W; c++) {
            float acc = 0.0f;
            for (int k = 0; k < nk; k++)
                acc = fmaf(A[(size_t)r * QW + k], B[(size_t)k * ldb + c], acc);
            C[r][c] = fmaf(alpha, acc, C[r][c]);
        }
}

/* dst[c][r] = src[r][c] for r < rows, c < cols, both multiples of 8. */
static void transpose(float *restrict dst, size_t ldd, const float *restrict src, size_t lds,
                      int rows, int cols)
{
#if MNI_HAVE_AVX2
    for (int r = 0; r < rows; r += 8)
        for (int c = 0; c < cols; c += 8) {
            const float *s = src + (size_t)r * lds + c;
            __m256 r0 = _mm256_loadu_ps(s), r1 = _mm256_loadu_ps(s + lds);
            __m256 r2 = _mm256_loadu_ps(s + 2 * lds), r3 = _mm256_loadu_ps(s + 3 * lds);
            __m256 r4 = _mm256_loadu_ps(s + 4 * lds), r5 = _mm256_loadu_ps(s + 5 * lds);
            __m256 r6 = _mm256_loadu_ps(s + 6 * lds), r7 = _mm256_loadu_ps(s + 7 * lds);
            __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
            __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
            __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
            __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
            __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
            __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
            float *d = dst + (size_t)c * ldd + r;
            _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
            _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
            _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
            _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
            _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
            _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
            _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
            _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
        }
#else
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++) dst[(size_t)c * ldd + r] = src[(size_t)r * lds + c];
#endif
}

/* Carries the pattern's mask into a tile: M (QW,KB) query-major, where mask() wrote -inf for
 * the disallowed pairs of the nq queries and n keys and left 0 elsewhere; St (n,QW) gets -inf
 * there, and M is zero again. Scanned 8 x 8: blocks with nothing masked cost a load each row. */
static void apply_mask(float *restrict St, float *restrict M, int nq, int n)
{
#if MNI_HAVE_AVX2
    for (int r0 = 0; r0 < nq; r0 += 8)
        for (int c0 = 0; c0 < n; c0 += 8) {
            float *m = M + (size_t)r0 * KB + c0;
            __m256 x[8], any = _mm256_setzero_ps();
            for (int i = 0; i < 8; i++) any = _mm256_or_ps(any, x[i] = _mm256_load_ps(m + (size_t)i * KB));
            if (_mm256_testz_si256(_mm256_castps_si256(any), _mm256_castps_si256(any))) continue;
            float t[64] ALIGN64;
            for (int i = 0; i < 8; i++) {
                _mm256_store_ps(t + 8 * i, x[i]);
                _mm256_store_ps(m + (size_t)i * KB, _mm256_setzero_ps());
            }
            float tt[64] ALIGN64;
            transpose(tt, 8, t, 8, 8, 8);
            for (int j = 0; j < 8 && c0 + j < n; j++) {
                float *s = St + (size_t)(c0 + j) * QW + r0;
                const __m256 mk = _mm256_load_ps(tt + 8 * j);
                _mm256_store_ps(s, _mm256_blendv_ps(_mm256_load_ps(s), mk, mk));
            }
        }
#else
    for (int r = 0; r < nq; r++)
        for (int c = 0; c < n; c++)
            if (M[(size_t)r * KB + c] != 0.0f) {
                St[(size_t)c * QW + r] = -INFINITY;
                M[(size_t)r * KB + c] = 0.0f;
            }
#endif
}

/* The online softmax over one tile St (n,QW) of scores: m_new = max(m, column max), St <-
 * 2^(St - m_new), alpha = 2^(m - m_new), l = l alpha + column sums, m = m_new. A lane with
 * nothing allowed yet (m_new = -inf) subtracts 0 instead: its P and alpha are 0. */
static void online_softmax(float *restrict St, int n, float *restrict m, float *restrict l,
                           float *restrict alpha)
{
#if MNI_HAVE_AVX2
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 m0 = _mm256_load_ps(m), m1 = _mm256_load_ps(m + 8), x0 = m0, x1 = m1;
    for (int c = 0; c < n; c++) {
        x0 = _mm256_max_ps(x0, _mm256_load_ps(St + (size_t)c * QW));
        x1 = _mm256_max_ps(x1, _mm256_load_ps(St + (size_t)c * QW + 8));
    }
    const __m256 s0 = _mm256_andnot_ps(_mm256_cmp_ps(x0, ninf, _CMP_EQ_OQ), x0);
    const __m256 s1 = _mm256_andnot_ps(_mm256_cmp_ps(x1, ninf, _CMP_EQ_OQ), x1);
    __m256 l0 = _mm256_setzero_ps(), l1 = l0;
    for (int c = 0; c < n; c++) {
        float *s = St + (size_t)c * QW;
        const __m256 p0 = mni_exp2_ps(_mm256_sub_ps(_mm256_load_ps(s), s0));
        const __m256 p1 = mni_exp2_ps(_mm256_sub_ps(_mm256_load_ps(s + 8), s1));
        _mm256_store_ps(s, p0), _mm256_store_ps(s + 8, p1);
        l0 = _mm256_add_ps(l0, p0), l1 = _mm256_add_ps(l1, p1);
    }
    const __m256 a0 = mni_exp2_ps(_mm256_sub_ps(m0, s0)), a1 = mni_exp2_ps(_mm256_sub_ps(m1, s1));
    _mm256_store_ps(alpha, a0), _mm256_store_ps(alpha + 8, a1);
    _mm256_store_ps(l, _mm256_fmadd_ps(_mm256_load_ps(l), a0, l0));
    _mm256_store_ps(l + 8, _mm256_fmadd_ps(_mm256_load_ps(l + 8), a1, l1));
    _mm256_store_ps(m, x0), _mm256_store_ps(m + 8, x1);
#else
    for (int i = 0; i < QW; i++) {
        float x = m[i], lsum = 0.0f;
        for (int c = 0; c < n; c++) x = St[(size_t)c * QW + i] > x ? St[(size_t)c * QW + i] : x;
        const float s = x == -INFINITY ? 0.0f : x;
        for (int c = 0; c < n; c++) {
            const float p = mni_exp2f(St[(size_t)c * QW + i] - s);
            St[(size_t)c * QW + i] = p;
            lsum += p;
        }
        alpha[i] = mni_exp2f(m[i] - s);
        l[i] = fmaf(l[i], alpha[i], lsum);
        m[i] = x;
    }
#endif
}

/* Backward's softmax over a tile: P = 2^(St - L) (St <- P), dS = P (dP - D) (dP <- dS). */
static void softmax_bwd(float *restrict St, float *restrict dP, int n, const float *restrict L,
                        const float *restrict D)
{
#if MNI_HAVE_AVX2
    const __m256 L0 = _mm256_load_ps(L), L1 = _mm256_load_ps(L + 8);
    const __m256 D0 = _mm256_load_ps(D), D1 = _mm256_load_ps(D + 8);
    for (int c = 0; c < n; c++) {
        float *s = St + (size_t)c * QW, *g = dP + (size_t)c * QW;
        const __m256 p0 = mni_exp2_ps(_mm256_sub_ps(_mm256_load_ps(s), L0));
        const __m256 p1 = mni_exp2_ps(_mm256_sub_ps(_mm256_load_ps(s + 8), L1));
        _mm256_store_ps(s, p0), _mm256_store_ps(s + 8, p1);
        _mm256_store_ps(g, _mm256_mul_ps(p0, _mm256_sub_ps(_mm256_load_ps(g), D0)));
        _mm256_store_ps(g + 8, _mm256_mul_ps(p1, _mm256_sub_ps(_mm256_load_ps(g + 8), D1)));
    }
#else
    for (int c = 0; c < n; c++)
        for (int i = 0; i < QW; i++) {
            const float p = mni_exp2f(St[(size_t)c * QW + i] - L[i]);
            St[(size_t)c * QW + i] = p;
            dP[(size_t)c * QW + i] = p * (dP[(size_t)c * QW + i] - D[i]);
        }
#endif
}

/* The tiles of one block: the keys next_keys() lists, a tile of up to KB at a time, each split
 * at the block's first query (keys after it, which only the later queries see, in a sub-tile of
 * their own: the pattern's mask then loops over those pairs only). */
struct tiles {
    const struct mni_pattern *p;
    const struct mnemo_attn_cfg *cfg;
    int layer, h, nq, cursor, n, at;
    const int *qpos;
    int keys[KB];
};

static void tiles_init(struct tiles *t, const struct mni_pattern *p,
                       const struct mnemo_attn_cfg *cfg, int layer, int h, const int *qpos, int nq)
{
    t->p = p, t->cfg = cfg, t->layer = layer, t->h = h, t->qpos = qpos, t->nq = nq;
    t->cursor = 0, t->n = 0, t->at = 0;
}

/* The next (sub-)tile: its keys (*keys) and count, 0 at the end. */
static int tiles_next(struct tiles *t, const int **keys)
{
    if (t->at == t->n) {
        t->n = t->p->next_keys(t->cfg, t->layer, t->h, t->qpos, t->nq, &t->cursor, t->keys, KB);
        t->at = 0;
        if (t->n <= 0) return t->n = 0;
    }
    const int q0 = t->qpos[0], *k = t->keys + t->at;
    int n = t->n - t->at;
    if (k[0] <= q0) { /* keys up to q0, then the rest (unless the first part is tiny) */
        int lo = 0, hi = n; /* the first key > q0 */
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (k[mid] <= q0) lo = mid + 1;
            else hi = mid;
        }
        if (lo >= SPLIT_MIN) n = lo;
    }
    *keys = k;
    t->at += n;
    return n;
}

/* ---- forward ------------------------------------------------------------------------------- */

/* What the blocks of one (window, head) read and write. */
struct head {
    const struct mni_pattern *p;
    const struct mnemo_attn_cfg *cfg;
    int layer, h, HS, HSP;
    const float *X;     /* query t at X + t ldx (qkv, unrotated) */
    size_t ldx;
    const float *K, *V; /* (T,HS) the head's rotated keys and values (act), in its query order: */
    const int *rank;    /* position t at row rank[t] */
    const float *cs;    /* the RoPE table, NULL without */
    float qscale;
    float *lse; /* (T) */
};

/* The head context of window b, head h. */
static void head_init(struct head *hd, const struct mni_pattern *p,
                      const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io,
                      const struct act_lay *al, const int *ord, int b, int h)
{
    const int T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS, head = ((size_t)b * NH + h) * T;
    char *act = io->act;
    hd->p = p, hd->cfg = cfg, hd->layer = io->layer, hd->h = h;
    hd->HS = HS, hd->HSP = mni_dense_hsp(HS);
    hd->X = io->qkv + (size_t)b * T * 3 * C + (size_t)h * HS;
    hd->ldx = 3 * C;
    hd->K = (const float *)(act + al->k) + head * HS;
    hd->V = (const float *)(act + al->v) + head * HS;
    hd->rank = ord + (size_t)h * ord_ints(T) + 2 * (size_t)T + 1;
    hd->cs = cfg->rope ? (const float *)(act + al->cs) : NULL;
    hd->qscale = (float)(MNI_LOG2E / sqrt((double)HS));
    hd->lse = (float *)(act + al->lse) + head;
}

/* Qr (QW,HSP): the block's queries rotated and scaled (padding rows and columns 0), and its
 * transpose Qt (HSP,QW). */
/* The rows of a tile's n keys and values, read in place (forward and backward alike). */
static inline void kv_rows(const struct head *hd, const int *keys, int n, const float **krow,
                           const float **vrow)
{
    for (int c = 0; c < n; c++) {
        krow[c] = hd->K + (size_t)hd->rank[keys[c]] * hd->HS;
        vrow[c] = hd->V + (size_t)hd->rank[keys[c]] * hd->HS;
    }
}

static void load_queries(const struct head *hd, const int *qpos, int nq, float *Qr, float *Qt)
{
    const int HS = hd->HS, HSP = hd->HSP;
    for (int r = 0; r < QW; r++) {
        float *row = Qr + (size_t)r * HSP;
        if (r < nq)
            rot_row(row, hd->X + (size_t)qpos[r] * hd->ldx,
                    hd->cs ? hd->cs + (size_t)qpos[r] * HS : NULL, HS, hd->qscale, 1);
        for (int d = r < nq ? HS : 0; d < HSP; d++) row[d] = 0.0f;
    }
    transpose(Qt, QW, Qr, (size_t)HSP, QW, HSP);
}

/* One block of nq queries (positions qpos): out rows (stride ldo) and lse. M (QW,KB) is zero
 * and left zero. */
static void fwd_block(const struct head *hd, const int *qpos, int nq, float *out, size_t ldo,
                      float *M)
{
    const int HS = hd->HS, HSP = hd->HSP;
    float Qr[QW * HS_MAX] ALIGN64, Qt[HS_MAX * QW] ALIGN64, Ot[HS_MAX * QW] ALIGN64;
    float St[KB * QW] ALIGN64;
    float m[QW] ALIGN64, l[QW] ALIGN64, alpha[QW] ALIGN64;
    const float *krow[KB], *vrow[KB];
    load_queries(hd, qpos, nq, Qr, Qt);
    memset(Ot, 0, sizeof(float) * (size_t)HSP * QW);
    for (int i = 0; i < QW; i++) m[i] = -INFINITY, l[i] = 0.0f;
    struct tiles tl;
    tiles_init(&tl, hd->p, hd->cfg, hd->layer, hd->h, qpos, nq);
    const int *keys;
    int n;
    while ((n = tiles_next(&tl, &keys)) > 0) {
        kv_rows(hd, keys, n, krow, vrow);
        kern_bt(St, krow, n, Qt, HS);
        hd->p->mask(hd->cfg, hd->layer, hd->h, qpos, nq, keys, n, M, KB);
        apply_mask(St, M, nq, n);
        online_softmax(St, n, m, l, alpha);
        kern_at(Ot, vrow, n, St, HS, alpha);
    }
    /* out = O / l, row by row (Qr reused for O's rows) */
    transpose(Qr, (size_t)HSP, Ot, QW, HSP, QW);
    for (int r = 0; r < nq; r++) {
        const float il = 1.0f / l[r], *o = Qr + (size_t)r * HSP;
        float *dst = out + (size_t)qpos[r] * ldo;
        for (int d = 0; d < HS; d++) dst[d] = o[d] * il;
        hd->lse[qpos[r]] = m[r] + log2f(l[r]);
    }
}

enum mnemo_status mni_sparse_check_io(const struct mnemo_attn_cfg *cfg,
                                      const struct mnemo_attn_io *io, int backward)
{
    if (!io) return mni_err(MNEMO_ERR_ARG, "%s: io is NULL", mnemo_attn_kind_name(cfg->kind));
    if (io->B < 1 || io->T < 1)
        return mni_err(MNEMO_ERR_ARG, "%s: B and T must be >= 1, got B=%d T=%d",
                       mnemo_attn_kind_name(cfg->kind), io->B, io->T);
    if (!io->qkv || !io->out || !io->act || !io->scratch)
        return mni_err(MNEMO_ERR_ARG, "%s: qkv, out, act and scratch are required",
                       mnemo_attn_kind_name(cfg->kind));
    if (backward && (!io->dout || !io->dqkv))
        return mni_err(MNEMO_ERR_ARG, "%s: backward needs dout and dqkv",
                       mnemo_attn_kind_name(cfg->kind));
    if (cfg->head_dim < 2 || cfg->head_dim > HS_MAX || cfg->head_dim % 2)
        return mni_err(MNEMO_ERR_ARG, "%s: head_dim must be even and in [2, %d], got %d",
                       mnemo_attn_kind_name(cfg->kind), HS_MAX, cfg->head_dim);
    return MNEMO_OK;
}

/* Lays out the rotated keys and the values of window b's positions [t0, t1), every head, each
 * in its head's query order (ord: orders()), so that the keys a block of a group (a strided
 * head's residue class) shares are consecutive rows, not rows a multiple of 4 KiB apart that
 * fall in the same few L1 sets. */
static void prepare(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io,
                    const struct act_lay *al, const float *cs, const int *ord, int b, int t0,
                    int t1)
{
    const int T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    float *ak = (float *)((char *)io->act + al->k), *av = (float *)((char *)io->act + al->v);
    for (int t = t0; t < t1; t++) {
        const float *x = io->qkv + ((size_t)b * T + t) * 3 * C;
        for (int h = 0; h < NH; h++) {
            const int *rank = ord + (size_t)h * ord_ints(T) + 2 * (size_t)T + 1;
            const size_t r = (((size_t)b * NH + h) * T + rank[t]) * HS;
            rot_row(ak + r, x + C + (size_t)h * HS, cs ? cs + (size_t)t * HS : NULL, HS, 1.0f, 1);
            memcpy(av + r, x + 2 * C + (size_t)h * HS, sizeof(float) * HS);
        }
    }
}

/* Lays out chunk c of window b, a slice of PREP_SLICE positions at a time, with any other
 * thread that is at it: takes slices until none is left (st[0] counts the slices handed out,
 * st[1] those done); with wait, then waits until every slice is done. So a block never waits
 * for work that no thread holds, whatever order the tasks are handed out in, and it waits for
 * at most the slices in flight, not a whole chunk (which matters when the thread laying it out
 * loses its core). */
static void ensure_chunk(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io,
                         const struct act_lay *al, const float *cs, const int *ord, atomic_int *st,
                         int b, int c, int wait)
{
    const int t0 = c * PREP, t1 = t0 + PREP < io->T ? t0 + PREP : io->T;
    const int ns = (t1 - t0 + PREP_SLICE - 1) / PREP_SLICE;
    if (atomic_load_explicit(&st[1], memory_order_acquire) == ns) return;
    for (int k; atomic_load_explicit(&st[0], memory_order_relaxed) < ns &&
                (k = atomic_fetch_add_explicit(&st[0], 1, memory_order_relaxed)) < ns;) {
        const int s0 = t0 + k * PREP_SLICE, s1 = s0 + PREP_SLICE < t1 ? s0 + PREP_SLICE : t1;
        prepare(cfg, io, al, cs, ord, b, s0, s1);
        atomic_fetch_add_explicit(&st[1], 1, memory_order_release);
    }
    for (int spins = 0; wait && atomic_load_explicit(&st[1], memory_order_acquire) != ns; spins++) {
        if (spins >= SPIN_MAX) { /* whoever holds the slice may have lost its core */
            sched_yield();
            continue;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
    }
}

/* The chunk after whose layout block i (of a head with query order perm, blocks bs) comes in
 * the work list: that of its last query (its keys are <= it), or the last chunk when the
 * head's order is not the positions' (work_list). */
static int block_chunk(const int *perm, const int *bs, int i, int T, int permuted)
{
    return permuted ? (int)n_chunks(T) - 1 : perm[bs[i + 1] - 1] / PREP;
}

/* The work list of a window (2 ints an item): the layout of chunk c is (-1, c), block i of head
 * h is (h, i). Chunk 0's layout comes first, and chunk c + 1's before the blocks whose last
 * query falls in chunk c (their keys are <= that query): a layout is handed out one chunk
 * ahead of the blocks that need it, so the thread that takes it is done (or nearly) when they
 * start, instead of another thread spinning while it works; the keys are still in cache. The
 * blocks of a head whose query order is not the positions' (a strided head's residue classes)
 * all come after the last chunk, in that order: the blocks of a group share their keys, which
 * then stay in cache from one block to the next instead of being fetched again for each.
 * cnt (nc + 1) is scratch. Returns the number of items, nc plus the blocks. */
static long work_list(const int *ord, const int *blk, const int *nb, const unsigned char *permuted,
                      int NH, int T, int *work, int *cnt)
{
    const int nc = (int)n_chunks(T);
    for (int c = 0; c <= nc; c++) cnt[c] = 0;
    for (int h = 0; h < NH; h++) {
        const int *perm = ord + (size_t)h * ord_ints(T), *bs = blk + (size_t)h * ((size_t)T + 1);
        for (int i = 0; i < nb[h]; i++) cnt[block_chunk(perm, bs, i, T, permuted[h]) + 1]++;
    }
    for (int c = 0; c < nc; c++) cnt[c + 1] += cnt[c]; /* cnt[c]: blocks of chunks < c */
    /* before the blocks of chunk c: layouts 0 .. min(c + 1, nc - 1) and cnt[c] blocks; so
     * chunk k >= 1's layout is at cnt[k - 1] + k */
    work[0] = -1, work[1] = 0;
    for (int k = 1; k < nc; k++) {
        int *w = work + 2 * ((size_t)cnt[k - 1] + k);
        w[0] = -1, w[1] = k;
    }
    const long total = (long)nc + cnt[nc];
    for (int c = 0; c < nc; c++) cnt[c] += c + 2 < nc ? c + 2 : nc; /* where c's blocks go */
    for (int h = 0; h < NH; h++) { /* counting sort, stable: by head, then block */
        const int *perm = ord + (size_t)h * ord_ints(T), *bs = blk + (size_t)h * ((size_t)T + 1);
        for (int i = 0; i < nb[h]; i++) {
            int *w = work + 2 * (size_t)cnt[block_chunk(perm, bs, i, T, permuted[h])]++;
            w[0] = h, w[1] = i;
        }
    }
    return total;
}

enum mnemo_status mni_sparse_forward(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                     struct mnemo_attn_io *io)
{
    enum mnemo_status st = mni_sparse_check_io(cfg, io, 0);
    if (st != MNEMO_OK) return st;
    io->aux_loss = 0;
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    struct act_lay al;
    act_layout(&al, cfg, B, T);
    struct scr_lay sl;
    scr_layout(&sl, cfg, B, T);
    char *scr = io->scratch;
    float *cs = cfg->rope ? (float *)((char *)io->act + al.cs) : NULL;
    int *ord = (int *)(scr + sl.order), *blk = (int *)(scr + sl.blocks), nb[1024];
    int *work = (int *)(scr + sl.work);
    atomic_int *state = (atomic_int *)(scr + sl.state);
    const int nc = (int)n_chunks(T);
    if (NH > 1024) return mni_err(MNEMO_ERR_ARG, "sparse attention: at most 1024 heads");
    if (cs) mni_rope_table(cs, T, HS, cfg->rope_theta);
    unsigned char permuted[1024];
    orders(p, cfg, io->layer, T, ord, blk, nb, permuted);
    const long per = work_list(ord, blk, nb, permuted, NH, T, work, (int *)(scr + sl.cstart));
    for (size_t i = 0; i < 2 * (size_t)B * nc; i++) atomic_init(&state[i], 0);
#pragma omp parallel
    {
        float M[QW * KB] ALIGN64; /* the mask's scratch, kept zero */
        memset(M, 0, sizeof(M));
        int wb = -1, ready = -1; /* chunks 0..ready of window wb are laid out */
#pragma omp for schedule(monotonic: dynamic, 1)
        for (long it = 0; it < (long)B * per; it++) {
            const int b = (int)(it / per), *w = work + 2 * (size_t)(it % per);
            atomic_int *sb = state + 2 * (size_t)b * nc;
            if (b != wb) wb = b, ready = -1;
            if (w[0] < 0) { /* a layout, unless a block that needed it has done it already */
                ensure_chunk(cfg, io, &al, cs, ord, sb + 2 * w[1], b, w[1], 0);
                continue;
            }
            const int h = w[0], i = w[1];
            const int *perm = ord + (size_t)h * ord_ints(T);
            const int *bs = blk + (size_t)h * ((size_t)T + 1);
            for (const int c = perm[bs[i + 1] - 1] / PREP; ready < c; ready++)
                ensure_chunk(cfg, io, &al, cs, ord, sb + 2 * (ready + 1), b, ready + 1, 1);
            struct head hd;
            head_init(&hd, p, cfg, io, &al, ord, b, h);
            float *out = io->out + (size_t)b * T * C + (size_t)h * HS;
            if (i + 1 < nb[h]) { /* the next block's queries and output rows */
                const int *q1 = perm + bs[i + 1], n1 = bs[i + 2] - bs[i + 1];
                prefetch_rows(hd.X, hd.ldx, q1, n1, HS, 0);
                prefetch_rows(out, C, q1, n1, HS, 1);
            }
            fwd_block(&hd, perm + bs[i], bs[i + 1] - bs[i], out, C, M);
        }
    }
    return MNEMO_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* sum_d a[d] b[d] in double (4 partial sums, then their sum). */
static double dot_d(const float *a, const float *b, int n)
{
    int d = 0;
    double s = 0;
#if MNI_HAVE_AVX2
    __m256d acc = _mm256_setzero_pd();
    for (; d + 4 <= n; d += 4)
        acc = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + d)),
                              _mm256_cvtps_pd(_mm_loadu_ps(b + d)), acc);
    double t[4];
    _mm256_storeu_pd(t, acc);
    s = (t[0] + t[1]) + (t[2] + t[3]);
#endif
    for (; d < n; d++) s += (double)a[d] * b[d];
    return s;
}

/* One block's share of the gradients of one head: dq of its queries stored into their rows
 * (each query is in one block; rotated back), dk (rotated) and dv of the keys its tiles list
 * added into theirs (a row is zeroed at its first use, and z[t] set: z marks the rows that
 * hold earlier blocks' sums). dO and o read from their rows (stride ldo); dq, dk, dv rows at
 * dQ, dK, dV + t ldd. M (QW,KB) is zero and left zero. */
static void bwd_block(const struct head *hd, const int *qpos, int nq, const float *dO,
                      const float *O, size_t ldo, float *dQ, float *dK, float *dV, size_t ldd,
                      unsigned char *z, float *M)
{
    const int HS = hd->HS, HSP = hd->HSP;
    float Qr[QW * HS_MAX] ALIGN64, Qt[HS_MAX * QW] ALIGN64;
    float dOr[QW * HS_MAX] ALIGN64, dOt[HS_MAX * QW] ALIGN64, dQt[HS_MAX * QW] ALIGN64;
    float St[KB * QW] ALIGN64, dPt[KB * QW] ALIGN64;
    float L[QW] ALIGN64, Dq[QW] ALIGN64;
    const float *krow[KB], *vrow[KB];
    float *dkrow[KB], *dvrow[KB];
    load_queries(hd, qpos, nq, Qr, Qt);
    for (int r = 0; r < QW; r++) {
        float *row = dOr + (size_t)r * HSP;
        L[r] = Dq[r] = 0.0f;
        if (r < nq) {
            const float *g = dO + (size_t)qpos[r] * ldo;
            memcpy(row, g, sizeof(float) * HS);
            L[r] = hd->lse[qpos[r]];
            Dq[r] = (float)dot_d(g, O + (size_t)qpos[r] * ldo, HS);
        }
        for (int d = r < nq ? HS : 0; d < HSP; d++) row[d] = 0.0f;
    }
    transpose(dOt, QW, dOr, (size_t)HSP, QW, HSP);
    memset(dQt, 0, sizeof(float) * (size_t)HSP * QW);
    const float ln2 = (float)(1.0 / MNI_LOG2E);
    struct tiles tl;
    tiles_init(&tl, hd->p, hd->cfg, hd->layer, hd->h, qpos, nq);
    const int *keys;
    int n;
    while ((n = tiles_next(&tl, &keys)) > 0) {
        kv_rows(hd, keys, n, krow, vrow);
        for (int c = 0; c < n; c++) {
            dkrow[c] = dK + (size_t)keys[c] * ldd;
            dvrow[c] = dV + (size_t)keys[c] * ldd;
            if (!z[keys[c]]) {
                memset(dkrow[c], 0, sizeof(float) * HS);
                memset(dvrow[c], 0, sizeof(float) * HS);
                z[keys[c]] = 1;
            }
        }
        /* P = 2^(S - lse) where allowed (0 where masked), dP = dO V^T, dS = P (dP - D) */
        kern_bt(St, krow, n, Qt, HS);
        hd->p->mask(hd->cfg, hd->layer, hd->h, qpos, nq, keys, n, M, KB);
        apply_mask(St, M, nq, n);
        kern_bt(dPt, vrow, n, dOt, HS);
        softmax_bwd(St, dPt, n, L, Dq);
        /* s = q.k / sqrt(HS) with q stored times log2(e)/sqrt(HS): dv = P^T dO,
         * dk = dS^T q_stored ln 2, dq = dS K / sqrt(HS) (scaled at the end) */
        kern_nn(dvrow, n, St, dOr, (size_t)HSP, nq, HS, 1.0f);
        kern_nn(dkrow, n, dPt, Qr, (size_t)HSP, nq, HS, ln2);
        kern_at(dQt, krow, n, dPt, HS, NULL);
    }
    const float qs = (float)(1.0 / sqrt((double)HS));
    transpose(Qr, (size_t)HSP, dQt, QW, HSP, QW); /* dq rows (Qr reused) */
    for (int r = 0; r < nq; r++)
        rot_row(dQ + (size_t)qpos[r] * ldd, Qr + (size_t)r * HSP,
                hd->cs ? hd->cs + (size_t)qpos[r] * HS : NULL, HS, qs, -1);
}

/* Each head's floors (at fl + h T, nb[h] of them): floor[i] is the smallest key that a block
 * after block i lists (the first key of a block is its smallest), T after the last one. Once
 * block i is done, the rows of dk and dv below floor[i] hold their final sums. */
static void floors(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer, int T,
                   const int *ord, const int *blk, const int *nb, int *fl)
{
    for (int h = 0; h < cfg->n_head; h++) {
        const int *perm = ord + (size_t)h * ord_ints(T);
        const int *bs = blk + (size_t)h * ((size_t)T + 1);
        int *f = fl + (size_t)h * T, lo = T;
        for (int i = nb[h] - 1; i >= 0; i--) {
            f[i] = lo;
            int cursor = 0, key;
            if (p->next_keys(cfg, layer, h, perm + bs[i], bs[i + 1] - bs[i], &cursor, &key, 1) > 0 &&
                key < lo)
                lo = key;
        }
    }
}

/* Rows t0..t1-1 of dk and dv (stride ldd) hold their final sums: the rows no block listed
 * (z[t] 0; cannot happen, a query sees itself) are zeroed, and dk is rotated back to the
 * unrotated input (cs the RoPE table, NULL: none), prefetching a few rows ahead. */
static void finish_rows(float *dk, float *dv, size_t ldd, const unsigned char *z, const float *cs,
                        int HS, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        if (!z[t]) {
            memset(dk + (size_t)t * ldd, 0, sizeof(float) * HS);
            memset(dv + (size_t)t * ldd, 0, sizeof(float) * HS);
        }
        if (!cs) continue;
        if (t + 8 < t1)
            for (int d = 0; d < HS; d += 16) __builtin_prefetch(dk + (size_t)(t + 8) * ldd + d, 1, 3);
        mni_rope_apply(dk + (size_t)t * ldd, cs + (size_t)t * HS, HS, -1);
    }
}

enum mnemo_status mni_sparse_backward(const struct mni_pattern *p,
                                      const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = mni_sparse_check_io(cfg, io, 1);
    if (st != MNEMO_OK) return st;
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    struct act_lay al;
    act_layout(&al, cfg, B, T);
    struct scr_lay sl;
    scr_layout(&sl, cfg, B, T);
    char *scr = io->scratch;
    const float *cs = cfg->rope ? (const float *)((const char *)io->act + al.cs) : NULL;
    int *ord = (int *)(scr + sl.order), *blk = (int *)(scr + sl.blocks), nb[1024];
    if (NH > 1024) return mni_err(MNEMO_ERR_ARG, "sparse attention: at most 1024 heads");
    orders(p, cfg, io->layer, T, ord, blk, nb, NULL);
    int *fl = (int *)(scr + sl.work);
    floors(p, cfg, io->layer, T, ord, blk, nb, fl);
    /* one task per (window, head): its blocks in order, so that the sums into dk and dv have
     * one writer and a fixed order */
#pragma omp parallel
    {
        float M[QW * KB] ALIGN64; /* the mask's scratch, kept zero */
        memset(M, 0, sizeof(M));
#pragma omp for schedule(dynamic, 1)
        for (long bh = 0; bh < (long)B * NH; bh++) {
            const int b = (int)(bh / NH), h = (int)(bh % NH);
            const int *perm = ord + (size_t)h * ord_ints(T);
            const int *bs = blk + (size_t)h * ((size_t)T + 1);
            struct head hd;
            head_init(&hd, p, cfg, io, &al, ord, b, h);
            float *dq = io->dqkv + (size_t)b * T * 3 * C + (size_t)h * HS; /* row t at t 3C */
            float *dk = dq + C, *dv = dq + 2 * C;
            const size_t ro = (size_t)b * T * C + (size_t)h * HS; /* row t at t C */
            const float *dO = io->dout + ro, *O = io->out + ro;
            unsigned char *z = (unsigned char *)(scr + sl.touched) + (size_t)bh * T;
            memset(z, 0, (size_t)T);
            int done = 0; /* rows of dk and dv below done are final (and dk rotated back) */
            for (int i = 0; i < nb[h]; i++) {
                const int *q = perm + bs[i], nq = bs[i + 1] - bs[i];
                if (i + 1 < nb[h]) { /* the next block's rows */
                    const int *q1 = perm + bs[i + 1], n1 = bs[i + 2] - bs[i + 1];
                    prefetch_rows(dO, C, q1, n1, HS, 0);
                    prefetch_rows(O, C, q1, n1, HS, 0);
                    prefetch_rows(hd.X, hd.ldx, q1, n1, HS, 0);
                    for (size_t d = 0; d < (size_t)n1 * HS; d += 16) { /* rows bs[i + 1].. */
                        __builtin_prefetch(hd.K + (size_t)bs[i + 1] * HS + d, 0, 3);
                        __builtin_prefetch(hd.V + (size_t)bs[i + 1] * HS + d, 0, 3);
                    }
                    prefetch_rows(dq, 3 * C, q1, n1, HS, 1);
                    prefetch_rows(dk, 3 * C, q1, n1, HS, 1);
                    prefetch_rows(dv, 3 * C, q1, n1, HS, 1);
                }
                bwd_block(&hd, q, nq, dO, O, C, dq, dk, dv, 3 * C, z, M);
                /* the rows no later block adds to, while they are in cache (with a pattern
                 * whose later blocks reach back to the first keys, global tokens or residue
                 * classes, that is at the end) */
                const int upto = fl[(size_t)h * T + i];
                finish_rows(dk, dv, 3 * C, z, cs, HS, done, upto);
                done = upto > done ? upto : done;
            }
            finish_rows(dk, dv, 3 * C, z, cs, HS, done, T);
        }
    }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

/* The state: header, then k (NH,S,HS) rotated at their absolute positions, v (NH,S,HS) and
 * pos (S) int64 of S slots: the first `sinks` positions in slots 0..sinks-1 and position p >=
 * sinks in slot sinks + (p - sinks) % recent (a ring), or, when the pattern keeps every key
 * (recent = 0), position p in slot p, S = n_ctx. */
struct mni_sparse_state {
    int64_t count;  /* tokens fed; the next gets position count */
    int64_t slots;  /* S */
    int64_t sinks, recent;
};

static void retain(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int *sinks,
                   int *recent)
{
    *sinks = 0, *recent = 0;
    if (p->retain) p->retain(cfg, sinks, recent);
    if (*recent <= 0) *sinks = 0, *recent = 0;
}

static size_t n_slots(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg)
{
    int sinks, recent;
    retain(p, cfg, &sinks, &recent);
    return recent > 0 ? (size_t)sinks + (size_t)recent : (size_t)cfg->n_ctx;
}

static size_t hdr_bytes(void) { return mni_align64(sizeof(struct mni_sparse_state)); }

static size_t kv_bytes(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg)
{
    return mni_align64(mni_mul(mni_mul(n_slots(p, cfg), (size_t)cfg->n_head * (size_t)cfg->head_dim),
                               sizeof(float)));
}

size_t mni_sparse_state_bytes(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg)
{
    return mni_add(mni_add(hdr_bytes(), mni_mul(2, kv_bytes(p, cfg))),
                   mni_mul(n_slots(p, cfg), sizeof(int64_t)));
}

void mni_sparse_state_view(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                           void *state, struct mni_sparse_view *vw)
{
    char *s = state;
    const size_t kv = kv_bytes(p, cfg);
    const struct mni_sparse_state *hd = state;
    vw->count = hd->count;
    vw->slots = hd->slots;
    vw->sinks = hd->sinks;
    vw->recent = hd->recent;
    vw->k = (float *)(s + hdr_bytes());
    vw->v = (float *)(s + hdr_bytes() + kv);
    vw->pos = (int64_t *)(s + hdr_bytes() + 2 * kv);
}

int64_t mni_sparse_slot(const struct mni_sparse_view *vw, int64_t pos)
{
    if (vw->recent == 0) return pos;
    if (pos < vw->sinks) return pos;
    return vw->sinks + (pos - vw->sinks) % vw->recent;
}

void mni_sparse_state_init(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                           void *state)
{
    struct mni_sparse_state *hd = state;
    int sinks, recent;
    retain(p, cfg, &sinks, &recent);
    hd->count = 0;
    hd->slots = (int64_t)n_slots(p, cfg);
    hd->sinks = sinks;
    hd->recent = recent;
    struct mni_sparse_view vw;
    mni_sparse_state_view(p, cfg, state, &vw);
    for (int64_t i = 0; i < hd->slots; i++) vw.pos[i] = -1;
}

size_t mni_sparse_state_live_bytes(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                   const void *state)
{
    const struct mni_sparse_state *hd = state;
    const int64_t held = hd->count < hd->slots ? hd->count : hd->slots;
    const size_t per = 2 * (size_t)cfg->n_head * (size_t)cfg->head_dim * sizeof(float) +
                       sizeof(int64_t);
    (void)p;
    return mni_add(hdr_bytes(), mni_mul((size_t)held, per));
}

/* scratch: the rotated query (HS), the RoPE factors (HS), a row of scores (KB), the keys of a
 * tile (KB ints), the tile's slots (KB). */
size_t mni_sparse_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    (void)n;
    return mni_mul(mni_add(2 * (size_t)cfg->head_dim, 3 * (size_t)KB), sizeof(float));
}

enum mnemo_status mni_sparse_check_step(const struct mni_pattern *p,
                                        const struct mnemo_attn_cfg *cfg,
                                        const struct mnemo_attn_step *sa)
{
    const char *name = mnemo_attn_kind_name(cfg->kind);
    if (!sa->state || !sa->out || !sa->qkv || !sa->scratch)
        return mni_err(MNEMO_ERR_ARG, "%s: step needs state, out, qkv and scratch buffers", name);
    if (sa->n < 1) return mni_err(MNEMO_ERR_ARG, "%s: step needs n >= 1 tokens, got %d", name, sa->n);
    const struct mni_sparse_state *hd = sa->state;
    if (hd->slots != (int64_t)n_slots(p, cfg) || hd->count < 0)
        return mni_err(MNEMO_ERR_ARG, "%s: state not initialised for this cfg", name);
    if (hd->recent == 0 && hd->count + sa->n > cfg->n_ctx)
        return mni_err(MNEMO_ERR_FULL, "%s: the state keeps every key and is full: %lld tokens "
                       "held + %d new > n_ctx %d", name, (long long)hd->count, sa->n, cfg->n_ctx);
    return MNEMO_OK;
}

/* Token by token: the new key and value enter their slot (rotated at the absolute position),
 * then each head gathers the keys its pattern allows this query, tile by tile, from the state
 * and attends over them with an online softmax. */
enum mnemo_status mni_sparse_step(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                  struct mnemo_attn_step *sa)
{
    enum mnemo_status rc = mni_sparse_check_step(p, cfg, sa);
    if (rc != MNEMO_OK) return rc;
    const int NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    struct mni_sparse_state *hd = sa->state;
    struct mni_sparse_view vw;
    mni_sparse_state_view(p, cfg, sa->state, &vw);
    const size_t S = (size_t)hd->slots;
    float *qr = sa->scratch, *cs = qr + HS, *row = cs + HS;
    int *keys = (int *)(row + KB);
    for (int t = 0; t < sa->n; t++) {
        const int64_t pos = hd->count;
        vw.count = pos;
        const int64_t slot = mni_sparse_slot(&vw, pos);
        const float *x = sa->qkv + (size_t)t * 3 * C;
        if (cfg->rope)
            for (int i = 0; i < HS / 2; i++)
                mni_rope_cs(&cs[2 * i], &cs[2 * i + 1], (int)pos, i, HS, cfg->rope_theta);
        for (int h = 0; h < NH; h++) {
            float *kr = vw.k + ((size_t)h * S + (size_t)slot) * HS;
            memcpy(kr, x + C + (size_t)h * HS, sizeof(float) * HS);
            if (cfg->rope) mni_rope_apply(kr, cs, HS, +1);
            memcpy(vw.v + ((size_t)h * S + (size_t)slot) * HS, x + 2 * C + (size_t)h * HS,
                   sizeof(float) * HS);
        }
        vw.pos[slot] = pos;
        const float scale = (float)(1.0 / sqrt((double)HS));
        const int q = (int)pos;
        for (int h = 0; h < NH; h++) {
            load_row(qr, x + (size_t)h * HS, cfg->rope ? cs : NULL, HS, 1.0f);
            const float *kh = vw.k + (size_t)h * S * HS, *vh = vw.v + (size_t)h * S * HS;
            float *o = sa->out + (size_t)t * C + (size_t)h * HS;
            float m = -INFINITY, l = 0.0f;
            for (int d = 0; d < HS; d++) o[d] = 0.0f;
            int cursor = 0, n;
            while ((n = p->next_keys(cfg, sa->layer, h, &q, 1, &cursor, keys, KB)) > 0) {
                for (int c = 0; c < n; c++) {
                    const int64_t sl = mni_sparse_slot(&vw, keys[c]);
                    MNEMO_ASSERT(sl >= 0 && (size_t)sl < S && vw.pos[sl] == keys[c]);
                    float acc = 0.0f;
                    for (int d = 0; d < HS; d++) acc = fmaf(qr[d], kh[(size_t)sl * HS + d], acc);
                    row[c] = acc * scale;
                }
                p->mask(cfg, sa->layer, h, &q, 1, keys, n, row, KB);
                float mx = m;
                for (int c = 0; c < n; c++) mx = row[c] > mx ? row[c] : mx;
                if (mx == -INFINITY) continue;
                const float alpha = mni_expf(m - mx);
                l *= alpha;
                for (int d = 0; d < HS; d++) o[d] *= alpha;
                for (int c = 0; c < n; c++) {
                    const float e = mni_expf(row[c] - mx);
                    l += e;
                    const float *v = vh + (size_t)mni_sparse_slot(&vw, keys[c]) * HS;
                    for (int d = 0; d < HS; d++) o[d] = fmaf(e, v[d], o[d]);
                }
                m = mx;
            }
            const float il = 1.0f / l;
            for (int d = 0; d < HS; d++) o[d] *= il;
        }
        hd->count++;
    }
    return MNEMO_OK;
}

/* ---- the slots every pattern kind shares ---------------------------------------------------- */

uint32_t mni_sparse_caps(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg)
{
    int sinks, recent;
    retain(p, cfg, &sinks, &recent);
    return MNEMO_ATTN_CAP_CAUSAL | MNEMO_ATTN_CAP_STEP | MNEMO_ATTN_CAP_STEP_EXACT |
           MNEMO_ATTN_CAP_TRAIN | (recent > 0 ? MNEMO_ATTN_CAP_BOUNDED : 0);
}

double mni_sparse_flops(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int T)
{
    double pairs = 0;
    for (int h = 0; h < cfg->n_head; h++) pairs += p->pairs(cfg, h, T);
    return 4.0 * cfg->head_dim * pairs / (T > 0 ? T : 1);
}

enum mnemo_status mni_sparse_validate_shape(const struct mnemo_attn_cfg *cfg)
{
    const char *name = mnemo_attn_kind_name(cfg->kind);
    if (cfg->n_head < 1) return mni_err(MNEMO_ERR_ARG, "%s: n_head must be >= 1, got %d", name, cfg->n_head);
    if (cfg->head_dim < 2 || cfg->head_dim > HS_MAX || cfg->head_dim % 2)
        return mni_err(MNEMO_ERR_ARG, "%s: head_dim must be even and in [2, %d], got %d", name,
                       HS_MAX, cfg->head_dim);
    if (cfg->n_ctx < 1) return mni_err(MNEMO_ERR_ARG, "%s: n_ctx must be >= 1, got %d", name, cfg->n_ctx);
    if (cfg->rope && !(cfg->rope_theta > 1.0f && isfinite(cfg->rope_theta)))
        return mni_err(MNEMO_ERR_ARG, "%s: rope_theta must be finite and > 1, got %g", name,
                       (double)cfg->rope_theta);
    if (!cfg->causal)
        return mni_err(MNEMO_ERR_ARG, "%s: only the causal form is implemented", name);
    return MNEMO_OK;
}

int mni_sparse_groups_runs(int T, int b, int *perm, int *gstart)
{
    int ng = 0;
    for (int t = 0; t < T; t++) perm[t] = t;
    for (int s = 0; s < T; s += b) gstart[ng++] = s;
    gstart[ng] = T;
    return ng;
}

int mni_sparse_groups_residues(int T, int d, int *perm, int *gstart)
{
    int ng = 0, n = 0;
    for (int r = 0; r < d && r < T; r++) {
        gstart[ng++] = n;
        for (int i = r; i < T; i += d) perm[n++] = i;
    }
    gstart[ng] = T;
    return ng;
}

int mni_sparse_run_keys(int lo, int hi, int *cursor, int *keys, int max)
{
    int n = 0;
    for (int j = lo + *cursor; j <= hi && n < max; j++) keys[n++] = j;
    *cursor += n;
    return n;
}
