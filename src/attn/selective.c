/*
 * selective.c -- the Selective Attention kind (Leviathan, Kalman, Matias 2024; the spec is
 * ../shared/papers/selective-attention.md): causal softmax attention whose logits, in every
 * head, are lowered by a penalty F that earlier tokens vote with head 0's logits.
 *
 * Math (per window b; z_h[i,j] = q_h,i . k_h,j / sqrt(HS) with q, k rotated by RoPE when on):
 *     vote_k(j) = relu(z_0[k,j])  for 1 <= j < k   (BOS = column 0 and self never voted)
 *     F[i,j]    = sum_{k < i} vote_k(j)            (a vote counts from the next query on)
 *     o_h,i     = sum_{j<=i} softmax_j(z_h[i,j] - F[i,j]) v_h,j
 * One F per layer, shared by all heads; head 0 both votes and attends.
 *
 * Tiling (O(T) extra memory, never a T x T matrix): a task owns one window and walks its
 * queries in strips of QS rows, in order, and each strip walks its keys in blocks of KB (tiles
 * of QS x KB that stay in L1, as the dense kind's FlashAttention tiles do). Per key column it
 * carries the running sum of the votes of all earlier rows (carry[j], double), so a block's F
 * tile is carry plus the votes of the strip's earlier rows; every head then takes the block into
 * an online softmax (running max and sum per row, the output rescaled when the max grows). The
 * final carry (every column's total vote) is saved, and backward walks the strips in reverse and
 * the keys in the same blocks: it recovers a block's starting carry by subtracting the strip's
 * votes (double, so F comes back to the float it was), recomputes the tiles with the saved
 * log-sum-exp, and carries the reverse sum of dF down the queries for the selection gradient:
 *     dL_h = P_h (dP_h - D_h),  dF = -sum_h dL_h,  G[k,j] = sum_{i>k} dF[i,j],
 *     dz_0[k,j] += G[k,j] [1 <= j < k] [z_0[k,j] > 0]
 * so gradient flows through the selection into head 0's q and k, as in the paper's sketch.
 *
 * Threads: windows are the tasks (schedule(dynamic)); a task's tiles are its own slice of the
 * scratch, every output has one writer, and the summation order is fixed: deterministic for any
 * thread count. The products are register-blocked AVX2 kernels (scores_block, mm) with plain-loop
 * fallbacks that sum in the same order. Layouts: attn_int.h; the naive
 * reference: selective_ref.c; notes: docs/internals/attention.md.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "kern/vmath.h"
#include "mni.h"

#ifndef QS
#define QS 32 /* query rows per strip */
#endif

#ifndef KB
#define KB 96 /* keys per block: a strip's tiles are QS x KB (12 KiB) */
#endif
_Static_assert(KB % QS == 0, "a strip's diagonal must fall in one key block");
/* ---- layouts ------------------------------------------------------------------------------- */

/* The offset of a slice of n bytes (callers round n to 64) at the end of a layout that has reached
 * *o; *o moves past it. */
static size_t slice(size_t *o, size_t n)
{
    const size_t at = *o;
    *o = mni_add(*o, n);
    return at;
}

void mni_sel_act_layout(struct mni_sel_act *lay, const struct mnemo_attn_cfg *cfg, int B, int T)
{
    size_t rows = mni_mul(mni_mul((size_t)B, (size_t)cfg->n_head), (size_t)T);
    size_t head = mni_align64(mni_mul(mni_mul(rows, (size_t)cfg->head_dim), sizeof(float)));
    size_t o = 0;
    lay->q = slice(&o, head);
    lay->k = slice(&o, head);
    lay->v = slice(&o, head);
    lay->lse = slice(&o, mni_align64(mni_mul(rows, sizeof(float))));
    lay->fsum = slice(&o, mni_align64(mni_mul(mni_mul((size_t)B, (size_t)T), sizeof(double))));
    lay->mval = slice(&o, mni_align64(mni_mul((size_t)B, sizeof(double))));
    lay->mrow = slice(&o, mni_align64(mni_mul((size_t)B, sizeof(int32_t))));
    size_t cs = mni_align64(mni_mul((size_t)T * (size_t)cfg->head_dim, sizeof(float)));
    lay->cs = slice(&o, cfg->rope ? cs : 0);
    lay->total = o;
}

void mni_sel_act_view(struct mni_sel_view *vw, const struct mnemo_attn_cfg *cfg, int B, int T,
                      void *act)
{
    struct mni_sel_act lay;
    mni_sel_act_layout(&lay, cfg, B, T);
    char *a = act;
    vw->q = (float *)(a + lay.q);
    vw->k = (float *)(a + lay.k);
    vw->v = (float *)(a + lay.v);
    vw->lse = (float *)(a + lay.lse);
    vw->fsum = (double *)(a + lay.fsum);
    vw->mval = (double *)(a + lay.mval);
    vw->mrow = (int32_t *)(a + lay.mrow);
    vw->cs = cfg->rope ? (float *)(a + lay.cs) : NULL;
}

size_t mni_sel_state_hdr_bytes(void) { return mni_align64(sizeof(struct mni_sel_state)); }

/* Per-window scratch of the fast path (floats unless noted), 64-byte aligned slices:
 *   kt, vt (NH,nblk,HS,KB)  keys and values of the window, transposed block by block of KB keys
 *   dl, z0, f, p, dp (QS,KB)  a strip's tiles over one key block (dl: dP, then dL, of one head)
 *   dq     (QS,NH,HS)       the strip's dq rows
 *   mx, l, dd (NH,QS)       per head and row: the running max and sum (forward), D (backward)
 *   carry, rcarry (T), ctmp (KB), msum (QS)  doubles */
struct win_lay {
    size_t kt, vt, dl, z0, f, p, dp, dq, mx, l, dd, carry, rcarry, ctmp, msum, total;
};

static int n_blocks(int T) { return (T + KB - 1) / KB; }

static void win_layout(struct win_lay *w, const struct mnemo_attn_cfg *cfg, int T)
{
    size_t NH = (size_t)cfg->n_head, HS = (size_t)cfg->head_dim, t = (size_t)T;
    size_t heads = mni_align64(mni_mul(mni_mul(NH * HS, (size_t)n_blocks(T) * KB), sizeof(float)));
    size_t tile = mni_align64((size_t)QS * KB * sizeof(float));
    size_t rows = mni_align64(mni_mul(NH * QS, sizeof(float)));
    size_t carry = mni_align64(mni_mul(t, sizeof(double)));
    size_t o = 0;
    w->kt = slice(&o, heads);
    w->vt = slice(&o, heads);
    w->dl = slice(&o, tile);
    w->z0 = slice(&o, tile);
    w->f = slice(&o, tile);
    w->p = slice(&o, tile);
    w->dp = slice(&o, tile);
    w->dq = slice(&o, mni_align64(mni_mul((size_t)QS * NH * HS, sizeof(float))));
    w->mx = slice(&o, rows);
    w->l = slice(&o, rows);
    w->dd = slice(&o, rows);
    w->carry = slice(&o, carry);
    w->rcarry = slice(&o, carry);
    w->ctmp = slice(&o, mni_align64((size_t)KB * sizeof(double)));
    w->msum = slice(&o, mni_align64((size_t)QS * sizeof(double)));
    w->total = o;
}

/* ---- the kind's slots ---------------------------------------------------------------------- */

static enum mnemo_status sel_validate(const struct mnemo_attn_cfg *cfg)
{
    if (!cfg) return mni_err(MNEMO_ERR_ARG, "selective: cfg is NULL");
    if (cfg->kind != MNEMO_ATTN_KIND_SELECTIVE)
        return mni_err(MNEMO_ERR_ARG, "selective: kind must be %d (selective), got %d",
                       MNEMO_ATTN_KIND_SELECTIVE, cfg->kind);
    if (cfg->n_head < 1)
        return mni_err(MNEMO_ERR_ARG, "selective: n_head must be >= 1, got %d", cfg->n_head);
    if (cfg->head_dim < 2 || cfg->head_dim > 256 || cfg->head_dim % 2)
        return mni_err(MNEMO_ERR_ARG, "selective: head_dim must be even and in [2, 256], got %d",
                       cfg->head_dim);
    if (cfg->n_ctx < 1)
        return mni_err(MNEMO_ERR_ARG, "selective: n_ctx must be >= 1, got %d", cfg->n_ctx);
    if (cfg->rope && !(cfg->rope_theta > 1.0f && isfinite(cfg->rope_theta)))
        return mni_err(MNEMO_ERR_ARG, "selective: rope_theta must be finite and > 1, got %g",
                       (double)cfg->rope_theta);
    if (cfg->n_layer < 1)
        return mni_err(MNEMO_ERR_ARG, "selective: n_layer must be >= 1, got %d", cfg->n_layer);
    if (mni_sel_budget(cfg) == 1)
        return mni_err(MNEMO_ERR_ARG, "selective attention: option budget must be 0 (none) or >= 2 "
                       "(the first token and the new one), got 1");
    return MNEMO_OK;
}

/* The options (attn_int.h has their indices, MNI_SEL_OPT_*). */
static const struct mnemo_attn_opt sel_opts[] = {
    [MNI_SEL_OPT_BUDGET] = {"budget", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_SESSION,
                            MNEMO_ATTN_OPT_PER_LAYER, 0, 0, 1 << 30, NULL,
                            "cache slots a session keeps per layer (K or K1/K2/..., one per "
                            "layer; 0 = none, full at n_ctx); over budget the most penalised key "
                            "is evicted, so a stream may run past n_ctx"},
    [MNI_SEL_OPT_THRESHOLD] = {"threshold", MNEMO_ATTN_OPT_FLOAT, MNEMO_ATTN_SCOPE_SESSION, 0, 0,
                               0, 1e30, NULL,
                               "a session evicts cached keys whose penalty reaches this (0 = off)"},
    [MNI_SEL_OPT_MEM_EPS] = {"mem_eps", MNEMO_ATTN_OPT_FLOAT, MNEMO_ATTN_SCOPE_TRAIN, 0, 0, 0,
                             1e6, NULL,
                             "training: weight of the memory loss (0 = off; the paper's 0.1)"},
    [MNI_SEL_OPT_MEM_TAU] = {"mem_tau", MNEMO_ATTN_OPT_FLOAT, MNEMO_ATTN_SCOPE_TRAIN, 0, 1, 1e-6,
                             1e6, NULL, "training: the memory loss's tau"},
};
_Static_assert(sizeof(sel_opts) / sizeof(sel_opts[0]) == MNI_SEL_OPT_COUNT, "sel_opts");

/* Bounded when every layer has a budget; the caller asks per layer. */
static uint32_t sel_caps(const struct mnemo_attn_cfg *cfg)
{
    return MNEMO_ATTN_CAP_CAUSAL | MNEMO_ATTN_CAP_STEP | MNEMO_ATTN_CAP_STEP_EXACT |
           MNEMO_ATTN_CAP_TRAIN | (mni_sel_budget(cfg) > 0 ? MNEMO_ATTN_CAP_BOUNDED : 0);
}

/* Dense's products plus head 0's votes (one more QK^T product for one head). */
static double sel_flops(const struct mnemo_attn_cfg *cfg, int T)
{
    return (4.0 * cfg->n_head + 2.0) * cfg->head_dim * ((T + 1) / 2.0);
}

static size_t sel_act_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct mni_sel_act lay;
    mni_sel_act_layout(&lay, cfg, B, T);
    return lay.total;
}

/* The fast path's scratch is per window (O(B T)); the reference's is O(T^2) (its own ops). */
static size_t sel_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct win_lay w;
    win_layout(&w, cfg, T);
    return mni_mul((size_t)B, w.total);
}

static enum mnemo_status check_io(const struct mnemo_attn_cfg *cfg,
                                  const struct mnemo_attn_io *io, int backward)
{
    enum mnemo_status st = sel_validate(cfg);
    if (st != MNEMO_OK) return st;
    if (!io) return mni_err(MNEMO_ERR_ARG, "selective: io is NULL");
    if (io->B < 1 || io->T < 1)
        return mni_err(MNEMO_ERR_ARG, "selective: B and T must be >= 1, got B=%d T=%d", io->B, io->T);
    if (!io->qkv || !io->out || !io->act || !io->scratch)
        return mni_err(MNEMO_ERR_ARG, "selective: qkv, out, act and scratch are required");
    if (backward && (!io->dout || !io->dqkv))
        return mni_err(MNEMO_ERR_ARG, "selective: backward needs dout and dqkv");
    return MNEMO_OK;
}

/* S[r][j] = scale * q_r . k_(j0+j) over one key block at j0 (the tile S and the block's
 * transposed keys kt (HS,KB) both have row stride KB), for the rows r < nq and the keys
 * j < min(nk, d0 + r + 1), d0 = i0 - j0 (row r is query i0 + r: keys up to its diagonal);
 * entries beyond a row's last key are left alone (or hold scores: callers ignore them). */
#if MNI_HAVE_AVX2

/* 4 rows x W keys (W = 8 or 24: 4 or 12 accumulators) at keys j..j+W of the rows q (ldq). Each
 * sum runs over d in order with one FMA per term, as the scalar loop does: the same bits. */
static inline __attribute__((always_inline)) void scores_block(float *S, const float *q,
                                                               size_t ldq, int HS, const float *kt,
                                                               int j, float scale, const int W)
{
    __m256 acc[4][3];
    for (int u = 0; u < 4; u++) acc[u][0] = acc[u][1] = acc[u][2] = _mm256_setzero_ps();
    for (int d = 0; d < HS; d++) {
        const float *kd = kt + (size_t)d * KB + j;
        __m256 k0 = _mm256_loadu_ps(kd);
        __m256 k1 = W == 24 ? _mm256_loadu_ps(kd + 8) : k0;
        __m256 k2 = W == 24 ? _mm256_loadu_ps(kd + 16) : k0;
        MNI_PIN(k0);
        if (W == 24) {
            MNI_PIN(k1);
            MNI_PIN(k2);
        }
        for (int u = 0; u < 4; u++) {
            const __m256 a = _mm256_set1_ps(q[(size_t)u * ldq + d]);
            acc[u][0] = _mm256_fmadd_ps(a, k0, acc[u][0]);
            if (W == 24) {
                acc[u][1] = _mm256_fmadd_ps(a, k1, acc[u][1]);
                acc[u][2] = _mm256_fmadd_ps(a, k2, acc[u][2]);
            }
        }
    }
    const __m256 sc = _mm256_set1_ps(scale);
    for (int u = 0; u < 4; u++)
        for (int v = 0; v < W / 8; v++)
            _mm256_storeu_ps(S + (size_t)u * KB + j + 8 * v, _mm256_mul_ps(acc[u][v], sc));
}
#endif

/* the keys of row r in a block of nk keys whose diagonal offset is d0 (see scores) */
static inline int row_keys(int d0, int r, int nk) { return d0 + r + 1 < nk ? d0 + r + 1 : nk; }

static void scores(float *S, const float *q, size_t ldq, int HS, const float *kt, int d0, int nq,
                   int nk, float scale)
{
    int r = 0;
#if MNI_HAVE_AVX2
    for (; r + 4 <= nq; r += 4) {
        const int nk4 = row_keys(d0, r + 3, nk); /* the block's last row sees the most keys */
        const float *qr = q + (size_t)r * ldq;
        float *Sr = S + (size_t)r * KB;
        int j = 0;
        for (; j + 24 <= nk4; j += 24) scores_block(Sr, qr, ldq, HS, kt, j, scale, 24);
        for (; j + 8 <= nk4; j += 8) scores_block(Sr, qr, ldq, HS, kt, j, scale, 8);
        for (int u = 0; u < 4; u++) { /* the tail keys, row by row */
            float *s = Sr + (size_t)u * KB;
            const float *qu = qr + (size_t)u * ldq;
            const int nku = row_keys(d0, r + u, nk);
            for (int jj = j; jj < nku; jj++) {
                float acc = 0.0f;
                for (int d = 0; d < HS; d++) acc = fmaf(qu[d], kt[(size_t)d * KB + jj], acc);
                s[jj] = acc * scale;
            }
        }
    }
#endif
    for (; r < nq; r++) {
        float *s = S + (size_t)r * KB;
        const int n = row_keys(d0, r, nk);
        const float *qr = q + (size_t)r * ldq;
        for (int j = 0; j < n; j++) s[j] = 0.0f;
        for (int d = 0; d < HS; d++) {
            const float a = qr[d], *kd = kt + (size_t)d * KB;
            for (int j = 0; j < n; j++) s[j] = fmaf(a, kd[j], s[j]);
        }
        for (int j = 0; j < n; j++) s[j] *= scale;
    }
}

/* The carries are per key column in double; the loops below run along a row of keys, four
 * columns to a vector. Every column still sees its own operations in the same order as a plain
 * loop would do them, so the vector and scalar forms give the same bits. relu is max(z, 0) with
 * z first: MAXPS returns the second operand for a NaN, as the scalar compare does. */

/* c[j] += relu(z[j]) (or -= when sub) for j0 <= j < j1. */
static void vote_acc(double *c, const float *z, int j0, int j1, int sub)
{
    int j = j0;
#if MNI_HAVE_AVX2
    const __m128 zero = _mm_setzero_ps();
    for (; j + 4 <= j1; j += 4) {
        const __m256d v = _mm256_cvtps_pd(_mm_max_ps(_mm_loadu_ps(z + j), zero));
        const __m256d cv = _mm256_loadu_pd(c + j);
        _mm256_storeu_pd(c + j, sub ? _mm256_sub_pd(cv, v) : _mm256_add_pd(cv, v));
    }
#endif
    for (; j < j1; j++) {
        const float v = z[j] > 0.0f ? z[j] : 0.0f;
        c[j] = sub ? c[j] - v : c[j] + v;
    }
}

/* f[j] = (float)c[j] for j < n. */
static void to_float(float *f, const double *c, int n)
{
    int j = 0;
#if MNI_HAVE_AVX2
    for (; j + 4 <= n; j += 4) _mm_storeu_ps(f + j, _mm256_cvtpd_ps(_mm256_loadu_pd(c + j)));
#endif
    for (; j < n; j++) f[j] = (float)c[j];
}

/* Within a key block at j0, row i = j0 + d0 + r votes for the columns [lo, hi): the keys
 * 1 <= j < i (never BOS, never itself). */
static inline int vote_lo(int j0) { return j0 == 0 ? 1 : 0; }
static inline int vote_hi(int d0, int r, int nk) { return d0 + r < nk ? d0 + r : nk; }

/* The selection gradient of row i = j0 + d0 + r over a key block at j0 (n = row_keys keys):
 * dz[j] = (float)g[j] where row i voted for key j0 + j (z[j] > 0), else 0; then g[j] += df[j]
 * for the keys 1 <= j0 + j <= i (g: the reverse carry at j0). */
static void sel_grad_row(float *dz, double *g, const float *z, const float *df, int j0, int d0,
                         int r, int n)
{
    const int lo = vote_lo(j0), hi = vote_hi(d0, r, n);
    int j = 0;
    for (; j < lo; j++) dz[j] = 0.0f;
#if MNI_HAVE_AVX2
    const __m128 zero = _mm_setzero_ps();
    for (; j + 4 <= hi; j += 4) {
        const __m128 voted = _mm_cmp_ps(_mm_loadu_ps(z + j), zero, _CMP_GT_OQ);
        _mm_storeu_ps(dz + j, _mm_and_ps(voted, _mm256_cvtpd_ps(_mm256_loadu_pd(g + j))));
    }
#endif
    for (; j < hi; j++) dz[j] = z[j] > 0.0f ? (float)g[j] : 0.0f;
    for (; j < n; j++) dz[j] = 0.0f; /* the diagonal */
    j = lo;
#if MNI_HAVE_AVX2
    for (; j + 4 <= n; j += 4)
        _mm256_storeu_pd(g + j, _mm256_add_pd(_mm256_loadu_pd(g + j), _mm256_cvtps_pd(_mm_loadu_ps(df + j))));
#endif
    for (; j < n; j++) g[j] += df[j];
}

/* A strip's F tile over a key block at j0 (nk keys, diagonal offset d0) from the carry at the
 * strip start (c: the carry at j0): F[r][j] = c[j] + the votes of the strip's rows before r, up
 * to row r's diagonal; returns with c advanced past the strip. Column 0 never moves. */
static void f_block(float *F, const float *z0, double *c, int j0, int d0, int nq, int nk)
{
    /* row by row, so that the loops over keys vectorise; each column still adds its votes in
     * row order (adding a zero vote changes nothing) */
    for (int r = 0; r < nq; r++) {
        to_float(F + (size_t)r * KB, c, row_keys(d0, r, nk));
        vote_acc(c, z0 + (size_t)r * KB, vote_lo(j0), vote_hi(d0, r, nk), 0);
    }
}

/* ---- the strip's products ------------------------------------------------------------------
 * Every product of a strip is C (M,N) = alpha * A (M,K) . B (K,N) with N = HS columns, A a tile
 * (or its transpose) and B rows of q, k, v or dO:
 *     forward  O = P V (per-row alpha = 1/l)         backward  dq += scale dL K, dq0 += scale dZ K0
 *     backward dV += P^T dO, dK += scale dL^T Q, dK0 += scale dZ^T Q0
 * all by mni_mm (kern/mm.c), which takes A or A^T through two strides and sums each output over
 * k in order, as a plain loop would. Causality is carried by zeros: the callers zero the tiles
 * past each row's diagonal, and a zero term leaves a sum unchanged -- for finite operands: a NaN
 * or infinity in a later key of the strip (a run that has already diverged) would now reach
 * earlier rows too. */

/* max_j (s[j] - f[j]) over j < n (n >= 1). */
static float row_max(const float *s, const float *f, int n)
{
    int j = 0;
    float m = -INFINITY;
#if MNI_HAVE_AVX2
    __m256 vm = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= n; j += 8)
        vm = _mm256_max_ps(vm, _mm256_sub_ps(_mm256_loadu_ps(s + j), _mm256_loadu_ps(f + j)));
    m = mni_hmax_ps(vm);
#endif
    for (; j < n; j++) m = s[j] - f[j] > m ? s[j] - f[j] : m;
    return m;
}

/* p[j] = exp(s[j] - f[j] - sub) for j < n (the project's polynomial exp, vectorised where AVX2
 * is available; the tail and the fallback use the same polynomial); returns sum_j p[j]. */
static float exp_row(float *p, const float *s, const float *f, float sub, int n)
{
    int j = 0;
    float sum = 0.0f;
#if MNI_HAVE_AVX2
    __m256 acc = _mm256_setzero_ps();
    const __m256 vs = _mm256_set1_ps(sub);
    for (; j + 8 <= n; j += 8) {
        __m256 x = _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(s + j), _mm256_loadu_ps(f + j)), vs);
        __m256 e = mni_exp_ps(x);
        _mm256_storeu_ps(p + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    sum = mni_hsum_ps(acc);
#endif
    for (; j < n; j++) {
        p[j] = mni_expf(s[j] - f[j] - sub);
        sum += p[j];
    }
    return sum;
}



/* Adds min(F[i,j], tau) over a key block (the keys up to each row's diagonal, in order) to s[r],
 * the sum of the row's blocks so far. */
static void memory_block(double *s, const float *F, int d0, int nq, int nk, double tau)
{
    for (int r = 0; r < nq; r++) {
        const int n = row_keys(d0, r, nk);
        for (int j = 0; j < n; j++) s[r] += fmin((double)F[(size_t)r * KB + j], tau);
    }
}

/* M_i = (i + 1) - sum_{j <= i} min(F[i,j], tau) / tau for the strip's rows (s: memory_block's
 * sums): keeps the largest (the first on ties) in *best, *best_row. */
static void memory_rows(const double *s, int i0, int nq, double tau, double *best,
                        int32_t *best_row)
{
    for (int r = 0; r < nq; r++) {
        const int i = i0 + r;
        const double M = (double)(i + 1) - s[r] / tau;
        if (M > *best) {
            *best = M;
            *best_row = i;
        }
    }
}

/* Rotates (cfg->rope) and re-lays one window's q, k, v into the act layout (NH,T,HS). */
static void load_window(const struct mnemo_attn_cfg *cfg, const float *qkv, int T, float *q,
                        float *k, float *v, const float *cs)
{
    const int NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    for (int t = 0; t < T; t++) {
        const float *x = qkv + (size_t)t * 3 * C;
        for (int h = 0; h < NH; h++) {
            size_t o = ((size_t)h * T + t) * HS;
            memcpy(q + o, x + (size_t)h * HS, (size_t)HS * sizeof(float));
            memcpy(k + o, x + C + (size_t)h * HS, (size_t)HS * sizeof(float));
            memcpy(v + o, x + 2 * C + (size_t)h * HS, (size_t)HS * sizeof(float));
            if (cs) {
                mni_rope_apply(q + o, cs + (size_t)t * HS, HS, +1);
                mni_rope_apply(k + o, cs + (size_t)t * HS, HS, +1);
            }
        }
    }
}

/* dst (nblk,HS,KB) = src (T,HS) transposed block by block of KB keys (the last block's columns
 * past T are left alone: no loop reads them). */
static void transpose_blocks(float *dst, const float *src, int T, int HS)
{
    for (int t = 0; t < T; t++) {
        float *col = dst + (size_t)(t / KB) * HS * KB + t % KB;
        for (int d = 0; d < HS; d++) col[(size_t)d * KB] = src[(size_t)t * HS + d];
    }
}

/* The online softmax over one key block of a strip, one head (FlashAttention's running max and
 * sum): P[r][j] = exp(S - F - m_r) with m_r the row's max over the blocks so far, l_r their sum
 * of P; when a block raises m_r, the row's sum and its unnormalised output O_r (HS floats, row
 * stride ldo) are scaled by exp(m_old - m_new). first: the strip's first block, where m, l start
 * (and O is overwritten by the caller). P may be S (in place); entries past a row's diagonal
 * are zeroed up to the block's last key. */
static void online_block(float *O, size_t ldo, float *P, const float *S, const float *F, float *m,
                         float *l, int d0, int nq, int nk, int HS, int first)
{
    for (int r = 0; r < nq; r++) {
        const int n = row_keys(d0, r, nk);
        const float *s = S + (size_t)r * KB, *f = F + (size_t)r * KB;
        float *p = P + (size_t)r * KB;
        const float mb = row_max(s, f, n);
        if (first) {
            m[r] = mb;
            l[r] = exp_row(p, s, f, mb, n);
        } else {
            const float mn = mb > m[r] ? mb : m[r];
            const float sum = exp_row(p, s, f, mn, n);
            if (mn > m[r]) {
                const float a = mni_expf(m[r] - mn);
                float *o = O + (size_t)r * ldo;
                for (int d = 0; d < HS; d++) o[d] *= a;
                l[r] *= a;
                m[r] = mn;
            }
            l[r] += sum;
        }
        for (int j = n; j < nk; j++) p[j] = 0.0f;
    }
}

static enum mnemo_status sel_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 0);
    if (st != MNEMO_OK) return st;
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS, TH = (size_t)T * HS;
    const size_t TB = (size_t)n_blocks(T) * HS * KB; /* one head's keys in blocks */
    const float scale = (float)(1.0 / sqrt((double)HS));
    const double tau = mni_sel_tau(cfg);
    struct mni_sel_view vw;
    mni_sel_act_view(&vw, cfg, B, T, io->act);
    if (vw.cs) mni_rope_table(vw.cs, T, HS, cfg->rope_theta);
    struct win_lay wl;
    win_layout(&wl, cfg, T);

#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        char *w = (char *)io->scratch + (size_t)b * wl.total;
        float *kt = (float *)(w + wl.kt), *z0 = (float *)(w + wl.z0), *F = (float *)(w + wl.f);
        float *S = (float *)(w + wl.p), *mx = (float *)(w + wl.mx), *ls = (float *)(w + wl.l);
        double *msum = (double *)(w + wl.msum);
        const size_t bh = (size_t)b * NH;
        float *q = vw.q + bh * TH, *k = vw.k + bh * TH, *v = vw.v + bh * TH;
        double *carry = vw.fsum + (size_t)b * T;
        load_window(cfg, io->qkv + (size_t)b * T * 3 * C, T, q, k, v, vw.cs);
        for (int h = 0; h < NH; h++)
            transpose_blocks(kt + (size_t)h * TB, k + (size_t)h * TH, T, HS);
        for (int j = 0; j < T; j++) carry[j] = 0.0;
        double mbest = -INFINITY;
        int32_t mrow = 0;
        for (int i0 = 0; i0 < T; i0 += QS) {
            const int nq = T - i0 < QS ? T - i0 : QS, nk = i0 + nq;
            float *o = io->out + ((size_t)b * T + i0) * C; /* the strip's rows (nq, C) */
            for (int r = 0; r < nq; r++) msum[r] = 0.0;
            for (int j0 = 0; j0 < nk; j0 += KB) { /* key blocks; only the last one is diagonal */
                const int nb = nk - j0 < KB ? nk - j0 : KB, d0 = i0 - j0;
                const float *ktb = kt + (size_t)(j0 / KB) * HS * KB;
                scores(z0, q + (size_t)i0 * HS, (size_t)HS, HS, ktb, d0, nq, nb, scale);
                f_block(F, z0, carry + j0, j0, d0, nq, nb);
                if (mni_sel_mem_on(cfg)) memory_block(msum, F, d0, nq, nb, tau);
                for (int h = 0; h < NH; h++) {
                    const float *Sh = z0;
                    if (h) {
                        scores(S, q + (size_t)h * TH + (size_t)i0 * HS, (size_t)HS, HS,
                               ktb + (size_t)h * TB, d0, nq, nb, scale);
                        Sh = S;
                    }
                    /* P (in place for h > 0; z0 is kept), then O (+)= P V over the block */
                    online_block(o + (size_t)h * HS, C, S, Sh, F, mx + (size_t)h * QS,
                                 ls + (size_t)h * QS, d0, nq, nb, HS, j0 == 0);
                    mni_mm(o + (size_t)h * HS, C, S, KB, 1, v + (size_t)h * TH + (size_t)j0 * HS,
                           (size_t)HS, nq, nb, HS, NULL, 1.0f, j0 > 0);
                }
            }
            for (int h = 0; h < NH; h++)
                for (int r = 0; r < nq; r++) {
                    const float l = ls[(size_t)h * QS + r], il = 1.0f / l;
                    float *orow = o + (size_t)r * C + (size_t)h * HS;
                    for (int d = 0; d < HS; d++) orow[d] *= il;
                    vw.lse[(bh + h) * T + i0 + r] = mx[(size_t)h * QS + r] + logf(l);
                }
            if (mni_sel_mem_on(cfg)) memory_rows(msum, i0, nq, tau, &mbest, &mrow);
        }
        vw.mval[b] = mni_sel_mem_on(cfg) ? mbest : 0.0;
        vw.mrow[b] = mrow;
    }
    io->aux_loss = 0;
    for (int b = 0; b < B && mni_sel_mem_on(cfg); b++) io->aux_loss += vw.mval[b];
    io->aux_loss *= mni_sel_aux_scale(cfg, T);
    return MNEMO_OK;
}

static enum mnemo_status sel_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 1);
    if (st != MNEMO_OK) return st;
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS, TH = (size_t)T * HS;
    const size_t TB = (size_t)n_blocks(T) * HS * KB; /* one head's keys in blocks */
    const float scale = (float)(1.0 / sqrt((double)HS));
    struct mni_sel_view vw;
    mni_sel_act_view(&vw, cfg, B, T, io->act);
    struct win_lay wl;
    win_layout(&wl, cfg, T);

#pragma omp parallel for schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        char *w = (char *)io->scratch + (size_t)b * wl.total;
        float *kt = (float *)(w + wl.kt), *vt = (float *)(w + wl.vt);
        float *DL = (float *)(w + wl.dl);
        float *z0 = (float *)(w + wl.z0), *F = (float *)(w + wl.f);
        float *P = (float *)(w + wl.p), *dF = (float *)(w + wl.dp), *dq = (float *)(w + wl.dq);
        float *D = (float *)(w + wl.dd);
        double *carry = (double *)(w + wl.carry), *rcarry = (double *)(w + wl.rcarry);
        double *ctmp = (double *)(w + wl.ctmp);
        const size_t bh = (size_t)b * NH;
        const float *q = vw.q + bh * TH, *k = vw.k + bh * TH, *v = vw.v + bh * TH;
        const float *dout = io->dout + (size_t)b * T * C, *out = io->out + (size_t)b * T * C;
        float *dqkv = io->dqkv + (size_t)b * T * 3 * C;
        for (int h = 0; h < NH; h++) {
            transpose_blocks(kt + (size_t)h * TB, k + (size_t)h * TH, T, HS);
            transpose_blocks(vt + (size_t)h * TB, v + (size_t)h * TH, T, HS);
        }
        for (int j = 0; j < T; j++) {
            carry[j] = vw.fsum[(size_t)b * T + j]; /* every column's total vote */
            rcarry[j] = 0.0;
        }
        /* dk, dv accumulate (rotated space) in the window's own slots of dqkv */
        for (int t = 0; t < T; t++) memset(dqkv + (size_t)t * 3 * C + C, 0, 2 * C * sizeof(float));
        const int last = ((T - 1) / QS) * QS;
        for (int i0 = last; i0 >= 0; i0 -= QS) {
            const int nq = T - i0 < QS ? T - i0 : QS, nk = i0 + nq;
            memset(dq, 0, (size_t)QS * C * sizeof(float));
            for (int h = 0; h < NH; h++) /* D_i = dO_i . o_i */
                for (int r = 0; r < nq; r++) {
                    const float *doi = dout + (size_t)(i0 + r) * C + (size_t)h * HS;
                    const float *oi = out + (size_t)(i0 + r) * C + (size_t)h * HS;
                    float Di = 0.0f;
                    for (int d = 0; d < HS; d++) Di += doi[d] * oi[d];
                    D[(size_t)h * QS + r] = Di;
                }
            for (int j0 = 0; j0 < nk; j0 += KB) {
                const int nb = nk - j0 < KB ? nk - j0 : KB, d0 = i0 - j0;
                const float *ktb = kt + (size_t)(j0 / KB) * HS * KB;
                const float *vtb = vt + (size_t)(j0 / KB) * HS * KB;
                scores(z0, q + (size_t)i0 * HS, (size_t)HS, HS, ktb, d0, nq, nb, scale);
                /* the strip's starting carry over the block: its end minus the strip's votes
                 * (carry then stays at the start, which is the end of the strip before it); the
                 * F tile from a copy */
                for (int r = nq - 1; r >= 0; r--)
                    vote_acc(carry + j0, z0 + (size_t)r * KB, vote_lo(j0), vote_hi(d0, r, nb), 1);
                memcpy(ctmp, carry + j0, (size_t)nb * sizeof(double));
                f_block(F, z0, ctmp, j0, d0, nq, nb);
                /* dF = -sum_h dL_h over the block, gathered across the heads */
                for (int r = 0; r < nq; r++)
                    for (int j = 0; j < nb; j++) dF[(size_t)r * KB + j] = 0.0f;
                for (int h = 0; h < NH; h++) {
                    const float *qh = q + (size_t)h * TH, *kh = k + (size_t)h * TH;
                    const float *Sh = z0;
                    if (h) {
                        scores(P, qh + (size_t)i0 * HS, (size_t)HS, HS, ktb + (size_t)h * TB, d0,
                               nq, nb, scale);
                        Sh = P;
                    }
                    /* dP_ij = dO_i . v_j over the block, from the transposed values */
                    scores(DL, dout + (size_t)i0 * C + (size_t)h * HS, C, HS, vtb + (size_t)h * TB,
                           d0, nq, nb, 1.0f);
                    for (int r = 0; r < nq; r++) {
                        const int n = row_keys(d0, r, nb);
                        const float *s = Sh + (size_t)r * KB, *f = F + (size_t)r * KB;
                        const float lse = vw.lse[(bh + h) * T + i0 + r], Di = D[(size_t)h * QS + r];
                        /* P (over the scores, in place when h > 0; z0 is kept for the selection) */
                        float *p = P + (size_t)r * KB;
                        exp_row(p, s, f, lse, n);
                        /* dL = P (dP - D) over the dP tile; dF -= dL */
                        float *dl = DL + (size_t)r * KB, *dFr = dF + (size_t)r * KB;
                        for (int j = 0; j < n; j++) {
                            dl[j] = p[j] * (dl[j] - Di);
                            dFr[j] -= dl[j];
                        }
                        for (int j = n; j < nb; j++) p[j] = dl[j] = 0.0f; /* past the diagonal */
                    }
                    /* dq_i += scale sum_j dL_ij k_j; per key j: dv_j += sum_i P_ij dO_i and
                     * dk_j += scale sum_i dL_ij q_i (the zeros past the diagonal keep it causal) */
                    const float *dO0 = dout + (size_t)i0 * C + (size_t)h * HS, *q0 = qh + (size_t)i0 * HS;
                    float *dkb = dqkv + (size_t)j0 * 3 * C + C + (size_t)h * HS;
                    mni_mm(dq + (size_t)h * HS, C, DL, KB, 1, kh + (size_t)j0 * HS, (size_t)HS, nq,
                           nb, HS, NULL, scale, 1);
                    mni_mm(dkb + C, 3 * C, P, 1, KB, dO0, C, nb, nq, HS, NULL, 1.0f, 1);
                    mni_mm(dkb, 3 * C, DL, 1, KB, q0, (size_t)HS, nb, nq, HS, NULL, scale, 1);
                }
                /* the memory loss: max_i M_i of this window is attained at row mrow, where
                 * dM/dF[i,j] = -1/tau for every F[i,j] < tau */
                const int ir = vw.mrow[b];
                if (mni_sel_mem_on(cfg) && io->aux_grad != 0.0f && ir >= i0 && ir < nk) {
                    const float tau = (float)mni_sel_tau(cfg);
                    const float g = -(float)(io->aux_grad * mni_sel_aux_scale(cfg, T)) / tau;
                    const int r = ir - i0, n = row_keys(d0, r, nb);
                    for (int j = 0; j < n; j++)
                        if (F[(size_t)r * KB + j] < tau) dF[(size_t)r * KB + j] += g;
                }
                /* the selection: dz0 (in the P tile, free now) = G where a vote was cast, 0
                 * elsewhere, with G[r][j] = the sum of dF over later rows (the reverse carry),
                 * row by row from the last: per column in order */
                float *dZ = P;
                for (int r = nq - 1; r >= 0; r--) {
                    const int n = row_keys(d0, r, nb);
                    float *dz = dZ + (size_t)r * KB;
                    sel_grad_row(dz, rcarry + j0, z0 + (size_t)r * KB, dF + (size_t)r * KB, j0, d0,
                                 r, n);
                    for (int j = n; j < nb; j++) dz[j] = 0.0f;
                }
                /* into head 0: dq0_i += scale sum_j dz0_ij k0_j, dk0_j += scale sum_i dz0_ij q0_i
                 * (keys from 1: column 0 never votes) */
                mni_mm(dq, C, dZ, KB, 1, k + (size_t)j0 * HS, (size_t)HS, nq, nb, HS, NULL, scale,
                       1);
                const int lo = vote_lo(j0);
                if (nb > lo)
                    mni_mm(dqkv + (size_t)(j0 + lo) * 3 * C + C, 3 * C, dZ + lo, 1, KB,
                           q + (size_t)i0 * HS, (size_t)HS, nb - lo, nq, HS, NULL, scale, 1);
            }
            /* the strip's dq rows are complete: rotate back into dqkv */
            for (int r = 0; r < nq; r++) {
                const int i = i0 + r;
                for (int h = 0; h < NH; h++) {
                    float *src = dq + ((size_t)r * NH + h) * HS;
                    if (vw.cs) mni_rope_apply(src, vw.cs + (size_t)i * HS, HS, -1);
                    memcpy(dqkv + (size_t)i * 3 * C + (size_t)h * HS, src, (size_t)HS * sizeof(float));
                }
            }
        }
        if (vw.cs)
            for (int t = 0; t < T; t++)
                for (int h = 0; h < NH; h++)
                    mni_rope_apply(dqkv + (size_t)t * 3 * C + C + (size_t)h * HS,
                                   vw.cs + (size_t)t * HS, HS, -1);
    }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

static int64_t n_slots(const struct mnemo_attn_cfg *cfg)
{
    return mni_sel_budget(cfg) > 0 ? mni_sel_budget(cfg) : cfg->n_ctx;
}

static size_t kv_bytes(const struct mnemo_attn_cfg *cfg)
{
    return mni_align64(mni_mul(mni_mul((size_t)cfg->n_head * (size_t)cfg->head_dim,
                                       (size_t)n_slots(cfg)), sizeof(float)));
}

static size_t sel_state_bytes(const struct mnemo_attn_cfg *cfg)
{
    size_t S = (size_t)n_slots(cfg);
    return mni_add(mni_add(mni_sel_state_hdr_bytes(), mni_mul(2, kv_bytes(cfg))),
                   mni_mul(S, sizeof(double) + sizeof(int64_t)));
}

void mni_sel_state_view(const struct mnemo_attn_cfg *cfg, void *state, struct mni_sel_slots *sl)
{
    const size_t kv = kv_bytes(cfg), S = (size_t)n_slots(cfg);
    char *s = (char *)state + mni_sel_state_hdr_bytes();
    sl->k = (float *)s;
    sl->v = (float *)(s + kv);
    sl->F = (double *)(s + 2 * kv);
    sl->pos = (int64_t *)(s + 2 * kv + S * sizeof(double));
}

static void sel_state_init(const struct mnemo_attn_cfg *cfg, void *state)
{
    struct mni_sel_state *st = state;
    st->count = 0;
    st->n_ctx = cfg->n_ctx;
    st->slots = n_slots(cfg);
    st->used = 0;
    st->evicted = 0;
}

/* Moves the last live slot into slot i (which is being freed). */
static void drop_slot(const struct mnemo_attn_cfg *cfg, struct mni_sel_state *st,
                      const struct mni_sel_slots *sl, int64_t i)
{
    const size_t NH = (size_t)cfg->n_head, HS = (size_t)cfg->head_dim, S = (size_t)st->slots;
    const int64_t last = --st->used;
    st->evicted++;
    if (i == last) return;
    for (size_t h = 0; h < NH; h++) {
        memcpy(sl->k + (h * S + (size_t)i) * HS, sl->k + (h * S + (size_t)last) * HS, HS * sizeof(float));
        memcpy(sl->v + (h * S + (size_t)i) * HS, sl->v + (h * S + (size_t)last) * HS, HS * sizeof(float));
    }
    sl->F[i] = sl->F[last];
    sl->pos[i] = sl->pos[last];
}

/* The pruning rules, before a new key enters: with a threshold, every cached key (not the
 * first token) whose penalty reached it goes; then, if the block is still full and there is a
 * budget, the key with the largest penalty goes (not the first token; ties: the oldest). */
int64_t mni_sel_make_room(const struct mnemo_attn_cfg *cfg, void *state)
{
    struct mni_sel_state *st = state;
    struct mni_sel_slots sl;
    mni_sel_state_view(cfg, state, &sl);
    const double threshold = cfg->opt[MNI_SEL_OPT_THRESHOLD];
    if (threshold > 0)
        for (int64_t i = st->used - 1; i >= 0; i--)
            if (sl.pos[i] != 0 && sl.F[i] >= threshold) drop_slot(cfg, st, &sl, i);
    if (st->used < st->slots) return st->used++;
    if (mni_sel_budget(cfg) <= 0) return -1;
    int64_t worst = -1;
    for (int64_t i = 0; i < st->used; i++) {
        if (sl.pos[i] == 0) continue;
        if (worst < 0 || sl.F[i] > sl.F[worst] || (sl.F[i] == sl.F[worst] && sl.pos[i] < sl.pos[worst]))
            worst = i;
    }
    drop_slot(cfg, st, &sl, worst); /* budget >= 2: a candidate exists */
    return st->used++;
}

/* scratch: the rotated queries of one token (NH,HS), one row of scores (slots), and the RoPE
 * factors of one position (HS). */
static size_t sel_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    (void)n;
    size_t f = (size_t)cfg->n_head * (size_t)cfg->head_dim + (size_t)n_slots(cfg) + (size_t)cfg->head_dim;
    return mni_mul(f, sizeof(float));
}

/* Token by token, in the order of the spec (§5): room is made by the pruning rules, the new key
 * enters with F = 0, every head attends over the live slots with their current F, then the
 * token's head-0 logits vote for the keys before it. */
/* The checks of every step() (fast or reference) before it changes the state. */
static enum mnemo_status check_step(const struct mnemo_attn_cfg *cfg,
                                    const struct mnemo_attn_step *sa)
{
    const void *state = sa->state, *out = sa->out, *qkv = sa->qkv, *scratch = sa->scratch;
    const int n = sa->n;
    enum mnemo_status rc = sel_validate(cfg);
    if (rc != MNEMO_OK) return rc;
    if (!state || !out || !qkv || !scratch)
        return mni_err(MNEMO_ERR_ARG, "selective: step needs state, out, qkv and scratch buffers");
    if (n < 1) return mni_err(MNEMO_ERR_ARG, "selective: step needs n >= 1 tokens, got %d", n);
    const struct mni_sel_state *st = state;
    if (st->n_ctx != cfg->n_ctx || st->slots != n_slots(cfg) || st->used < 0 ||
        st->used > st->slots || st->count < st->used)
        return mni_err(MNEMO_ERR_ARG, "selective: state not initialised for this cfg");
    if (mni_sel_budget(cfg) <= 0 && st->count + n > st->n_ctx)
        return mni_err(MNEMO_ERR_FULL, "selective: KV cache full: %lld tokens held + %d new > n_ctx %d "
                       "(a budget prunes the cache instead)",
                       (long long)st->count, n, cfg->n_ctx);
    return MNEMO_OK;
}

static enum mnemo_status sel_step(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *sa)
{
    enum mnemo_status rc = check_step(cfg, sa);
    if (rc != MNEMO_OK) return rc;
    struct mni_sel_state *st = sa->state;
    void *state = sa->state, *scratch = sa->scratch;
    float *out = sa->out;
    const float *qkv = sa->qkv;
    const int n = sa->n;
    const int NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS, S = (size_t)st->slots;
    const float scale = (float)(1.0 / sqrt((double)HS));
    struct mni_sel_slots sl;
    mni_sel_state_view(cfg, state, &sl);
    float *qr = scratch, *row = qr + C, *cs = row + S;
    for (int t = 0; t < n; t++) {
        const int64_t pos = st->count, slot = mni_sel_make_room(cfg, state);
        const float *x = qkv + (size_t)t * 3 * C;
        if (cfg->rope)
            for (int i = 0; i < HS / 2; i++)
                mni_rope_cs(&cs[2 * i], &cs[2 * i + 1], (int)pos, i, HS, cfg->rope_theta);
        for (int h = 0; h < NH; h++) {
            float *kr = sl.k + ((size_t)h * S + (size_t)slot) * HS;
            float *vr = sl.v + ((size_t)h * S + (size_t)slot) * HS;
            memcpy(qr + (size_t)h * HS, x + (size_t)h * HS, (size_t)HS * sizeof(float));
            memcpy(kr, x + C + (size_t)h * HS, (size_t)HS * sizeof(float));
            memcpy(vr, x + 2 * C + (size_t)h * HS, (size_t)HS * sizeof(float));
            if (cfg->rope) {
                mni_rope_apply(qr + (size_t)h * HS, cs, HS, +1);
                mni_rope_apply(kr, cs, HS, +1);
            }
        }
        sl.F[slot] = 0.0;
        sl.pos[slot] = pos;
        const int64_t live = st->used;
        for (int h = 0; h < NH; h++) {
            const float *qh = qr + (size_t)h * HS, *kh = sl.k + (size_t)h * S * HS;
            const float *vh = sl.v + (size_t)h * S * HS;
            float m = -INFINITY, l = 0.0f;
            for (int64_t j = 0; j < live; j++) {
                float acc = 0.0f;
                for (int d = 0; d < HS; d++) acc = fmaf(qh[d], kh[(size_t)j * HS + d], acc);
                row[j] = acc * scale - (float)sl.F[j];
                m = fmaxf(m, row[j]);
            }
            for (int64_t j = 0; j < live; j++) {
                row[j] = mni_expf(row[j] - m);
                l += row[j];
            }
            float *o = out + (size_t)t * C + (size_t)h * HS;
            for (int d = 0; d < HS; d++) o[d] = 0.0f;
            for (int64_t j = 0; j < live; j++)
                for (int d = 0; d < HS; d++) o[d] += row[j] * vh[(size_t)j * HS + d];
            const float il = 1.0f / l;
            for (int d = 0; d < HS; d++) o[d] *= il;
        }
        /* this token's vote, for the queries after it: every cached key 1 <= pos_j < pos */
        for (int64_t j = 0; j < live; j++) {
            if (sl.pos[j] < 1 || sl.pos[j] >= pos) continue;
            float acc = 0.0f;
            for (int d = 0; d < HS; d++) acc = fmaf(qr[d], sl.k[(size_t)j * HS + d], acc);
            const float z = acc * scale;
            if (z > 0.0f) sl.F[j] += z;
        }
        st->count++;
    }
    return MNEMO_OK;
}

static size_t sel_state_live_bytes(const struct mnemo_attn_cfg *cfg, const void *state)
{
    const struct mni_sel_state *st = state;
    size_t per = 2 * (size_t)cfg->n_head * (size_t)cfg->head_dim * sizeof(float) + sizeof(double) +
                 sizeof(int64_t);
    return mni_add(mni_sel_state_hdr_bytes(), mni_mul((size_t)st->used, per));
}

/* ---- the reference (selective_ref.c computes; the layouts and checks are shared) ----------- */

static enum mnemo_status ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 0);
    return st != MNEMO_OK ? st : mni_sel_ref_forward(cfg, io);
}

static enum mnemo_status ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 1);
    return st != MNEMO_OK ? st : mni_sel_ref_backward(cfg, io);
}

static enum mnemo_status ref_step(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *sa)
{
    enum mnemo_status rc = check_step(cfg, sa);
    if (rc == MNEMO_OK) mni_sel_ref_step(cfg, sa->state, sa->out, sa->qkv, sa->n, sa->scratch);
    return rc;
}

#define SEL_COMMON                                                                             \
    .api_version = MNEMO_ATTN_API_VERSION, .name = "selective", .opts = sel_opts,             \
    .n_opts = MNI_SEL_OPT_COUNT, .caps = sel_caps, .validate = sel_validate,                   \
    .flops_per_token = sel_flops, .act_bytes = sel_act_bytes, .state_bytes = sel_state_bytes, \
    .state_init = sel_state_init, .state_live_bytes = sel_state_live_bytes

const struct mnemo_attn_ops mni_attn_selective = {
    SEL_COMMON,
    .scratch_bytes = sel_scratch_bytes,
    .forward = sel_forward,
    .backward = sel_backward,
    .step_scratch_bytes = sel_step_scratch_bytes,
    .step = sel_step,
};

const struct mnemo_attn_ops mni_attn_selective_ref = {
    SEL_COMMON,
    .is_ref = 1,
    .scratch_bytes = mni_sel_ref_scratch_bytes,
    .forward = ref_forward,
    .backward = ref_backward,
    .step_scratch_bytes = mni_sel_ref_step_scratch_bytes,
    .step = ref_step,
};
