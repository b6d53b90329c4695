/*
 * infini.c -- the Infini-attention kind (Munkhdalai, Faruqui, Gopal 2024, "Leave No Context
 * Behind", arXiv 2404.07143; the spec is ../shared/papers/infini-attention.md).
 *
 * A window of T tokens is cut into segments of N (the last one may be shorter). Per window b,
 * head h and segment s, with q, k, v the projections *before* RoPE and sigma(x) = ELU(x) + 1:
 *     A_dot  = causal softmax attention inside the segment, q and k rotated at their positions
 *              within the segment (Eq. 6)
 *     A_mem  = sigma(q) M_s / max(sigma(q) . z_s, eps)                            (Eq. 7)
 *     A      = g A_mem + (1 - g) A_dot,  g = sigmoid(beta_h)   for s >= 1        (Eq. 10)
 *     A      = A_dot                                           for s = 0 (empty memory)
 *     M_{s+1} = M_s + sigma(K)^T U,  z_{s+1} = z_s + sum_t sigma(k_t)            (Eq. 8, 9)
 *              U = V (linear), or U = V - sigma(K) M_s / max(sigma(K) z_s, eps) (delta, s >= 1)
 * with M_0 = 0, z_0 = 0. beta (one per head, tensor "gate") is the kind's only parameter.
 *
 * Forward: the local attention of every segment is the dense kind's forward over windows of N
 * tokens (a segment is a window starting at position 0, so the dense kernels, their RoPE table
 * and their act layout are reused as they are); then one task per (window, head) walks the
 * segments in order, reads the memory, mixes, and folds the segment in, each as a small matrix
 * product over the segment's rows (up to 64 at a time; kern/mm.c). M_s and z_s of every segment
 * are saved in act (fp32), which is the spec's per-segment checkpoint: backward needs no
 * recomputation of the memory (it recomputes sigma(q), sigma(k) and the read-outs).
 * Backward (back-propagation through time over the segments, no truncation): dA splits into
 * dA_dot = (1 - g) dA (dA in segment 0), which goes through the dense backward, and the memory
 * path, walked from the last segment to the first with the carried dM, dz (gradients of the
 * memory entering the next segment):
 *     fold:      dU_t = sigma(k_t) dM',  dsigma(k_t) = dM' u_t + dz',  dv_t += dU_t
 *                delta: r_t = n_t / d_t (n_t = sigma(k_t) M, d_t = sigma(k_t).z), dr = -dU,
 *                dn = dr / d_t, dd = -(dr . r_t) / d_t, dsigma(k_t) += M dn + dd z,
 *                dM += sigma(k_t)^T dn, dz += dd sigma(k_t)
 *     read-out:  dA_mem = g dA, dn = dA_mem / d, dd = -(dA_mem . A_mem) / d,
 *                dsigma(q) = M dn + dd z, dM += sigma(q)^T dn, dz += dd sigma(q),
 *                dbeta += g (1 - g) dA . (A_mem - A_dot)
 *     sigma'(x) = 1 for x > 0, e^x otherwise; where the clamp is active (d < eps) dd = 0.
 * Every task writes its own rows of dqkv (after the dense backward wrote them) and its own
 * partial dbeta; the partials are summed in a fixed order: deterministic for any thread count.
 *
 * Write weights (training only, option mem_repeat = R > 1): segment s of window b is folded
 * with a weight c = w[b S + s] drawn log-uniformly from [1, R] with the call's seed
 * (mni_inf_write_weights), M_{s+1} = M_s + c sigma(K)^T U, z_{s+1} = z_s + c sum_t sigma(k_t),
 * as if the segment had occurred c times; so dU and dsigma(k) of the fold carry a factor c; the
 * identity path of M, z does not. Forward saves the weights in act for backward.
 *
 * Carried memory (option carry=true, training in lanes of consecutive text): a window whose lane
 * carries a memory (io->carry, attn_int.h) starts from its M, z, and its segment 0 reads it like
 * any later segment (the delta rule too); the last segment is folded into io->carry_out, as a
 * session folds a segment at its end. No gradient flows into the carried M, z: backward is
 * unchanged but for segment 0 reading (and so for dA_dot's weight there).
 *
 * Streaming: the state is M, z and the current segment (its unrotated keys and values, and a
 * dense state of N slots for the local attention): constant in the stream length. When the
 * segment fills it is folded into M by the same code as in training, and a new one starts, so
 * step() never reports MNEMO_ERR_FULL. Layouts: attn_int.h; the reference: infini_ref.c;
 * design notes: docs/internals/infini.md.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "kern/vmath.h"
#include "mni.h"

#define HS_MAX 256 /* largest head_dim, as in the dense kind */

/* ---- the memory, one head, a block of rows at a time --------------------------------------------
 * Every read and write of the memory is a small product over the rows of one segment (at most
 * MEM_ROWS at a time) by mni_mm (kern/mm.c), with M (HS,HS) row-major (row i is the value stored
 * under key feature i):
 *     read       A = diag(1 / max(P z, eps)) P M              P = sigma(Q_s) or sigma(K_s)
 *     fold       M' = M + P^T U,  z' = z + colsum(P)
 *     backward   dU = P dM',  dP = U dM'^T (+ dn M^T),  dM += P^T dn
 * mni_mm sums every output in a fixed order whatever the number of rows in the call, so a row
 * read alone or in a piece by the session equals the same row read in a block in training, and
 * the fold of a segment gives the same bits in both. */

#define MEM_ROWS 64 /* rows per product: the height of the work buffers */

static inline float phi(float x) { return x > 0.0f ? x + 1.0f : mni_expf(x); }
static inline float gate_of(float beta) { return 1.0f / (1.0f + expf(-beta)); }

/* a . b: 8 lanes, then the tail. */
static float dot(const float *a, const float *b, int n)
{
    int i = 0;
    float s = 0.0f;
#if MNI_HAVE_AVX2
    __m256 acc = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    s = mni_hsum_ps(acc);
#endif
    for (; i < n; i++) s = fmaf(a[i], b[i], s);
    return s;
}

/* P (n,HS) = sigma(x) for n rows of x (row stride ldx); sigma's exp is the project's polynomial
 * (kern/vmath.h), the same in both lanes and tail. If z: den[t] = P_t . z (unclamped) and
 * inv[t] = 1 / max(den[t], eps). */
static void phi_rows(float *restrict P, float *restrict den, float *restrict inv, const float *x,
                     size_t ldx, int n, const float *z, int HS)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * ldx;
        float *pt = P + (size_t)t * HS;
        int i = 0;
#if MNI_HAVE_AVX2
        const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= HS; i += 8) {
            const __m256 v = _mm256_loadu_ps(xt + i);
            const __m256 pos = _mm256_cmp_ps(v, zero, _CMP_GT_OQ);
            _mm256_storeu_ps(pt + i, _mm256_blendv_ps(mni_exp_ps(v), _mm256_add_ps(v, one), pos));
        }
#endif
        for (; i < HS; i++) pt[i] = phi(xt[i]);
        if (z) {
            den[t] = dot(pt, z, HS);
            inv[t] = 1.0f / (den[t] > MNI_INF_DEN_EPS ? den[t] : MNI_INF_DEN_EPS);
        }
    }
}

/* A (n,HS) = sigma(x) M / max(sigma(x) . z, eps) for n <= MEM_ROWS rows of x; P, den, inv as
 * phi_rows. */
static void mem_read(float *A, float *P, float *den, float *inv, const float *x, size_t ldx, int n,
                     const float *M, const float *z, int HS)
{
    phi_rows(P, den, inv, x, ldx, n, z, HS);
    mni_mm(A, (size_t)HS, P, (size_t)HS, 1, M, (size_t)HS, n, HS, HS, inv, 0.0f, 0);
}

/* d (HS) += sum_t c w_t P_t over n rows of P (w NULL: every w_t = 1): z' = z + c colsum(P), or
 * dz += sum_t dd_t P_t (c = 1). */
static void add_rows(float *restrict d, const float *restrict P, const float *w, float c, int n,
                     int HS)
{
    for (int t = 0; t < n; t++) {
        const float s = (w ? w[t] : 1.0f) * c, *pt = P + (size_t)t * HS;
        for (int i = 0; i < HS; i++) d[i] += s * pt[i];
    }
}

/* Work buffers of one task (one head of one window, or one head of a session): rows of P, of the
 * read-out A, of U, of two gradients, per-row den, inv, dd, and the transposes of M and of dM'.
 * Carved by mni_carve: with base NULL only w->n (floats) is set. */
struct mem_work {
    float *p, *a, *u, *d, *g; /* (MEM_ROWS,HS) each */
    float *den, *inv, *dd;    /* (MEM_ROWS) */
    float *mt, *dmt;          /* (HS,HS) */
    size_t n;
};

static void mem_work(struct mem_work *w, float *base, int HS)
{
    struct mni_carver c = {base, 0};
    const size_t rh = (size_t)MEM_ROWS * HS, hh = (size_t)HS * HS;
    w->p = mni_carve(&c, rh), w->a = mni_carve(&c, rh), w->u = mni_carve(&c, rh);
    w->d = mni_carve(&c, rh), w->g = mni_carve(&c, rh);
    w->den = mni_carve(&c, MEM_ROWS), w->inv = mni_carve(&c, MEM_ROWS);
    w->dd = mni_carve(&c, MEM_ROWS);
    w->mt = mni_carve(&c, hh), w->dmt = mni_carve(&c, hh);
    w->n = c.used;
}

/* t (HS,HS) = m^T */
static void transpose(float *restrict t, const float *restrict m, int HS)
{
    for (int i = 0; i < HS; i++)
        for (int j = 0; j < HS; j++) t[(size_t)j * HS + i] = m[(size_t)i * HS + j];
}

/* What a fold block writes, for r <= MEM_ROWS rows of k (stride ldk) and v (stride ldv):
 * w->p = sigma(K), and U = V (returned, stride *ldu = ldv) or with delta V - (the read-out of
 * M, z at sigma(K)) (in w->u, stride HS; w->a, den, inv kept for the backward). */
static const float *fold_terms(const struct mem_work *w, const float *k, size_t ldk,
                               const float *v, size_t ldv, int r, const float *M, const float *z,
                               int HS, int delta, size_t *ldu)
{
    *ldu = ldv;
    if (!delta) {
        phi_rows(w->p, NULL, NULL, k, ldk, r, NULL, HS);
        return v;
    }
    mem_read(w->a, w->p, w->den, w->inv, k, ldk, r, M, z, HS);
    for (int t = 0; t < r; t++)
        for (int j = 0; j < HS; j++)
            w->u[(size_t)t * HS + j] = v[(size_t)t * ldv + j] - w->a[(size_t)t * HS + j];
    *ldu = (size_t)HS;
    return w->u;
}

/* One block of the fold: Mn += c sigma(K)^T U, zn += c sum_t sigma(k_t) over r <= MEM_ROWS
 * rows (U read from the memory M, z as it was before the segment). */
static void mem_fold_block(float *restrict Mn, float *restrict zn, const float *M, const float *z,
                           const float *k, size_t ldk, const float *v, size_t ldv, int r, int HS,
                           int delta, float c, const struct mem_work *w)
{
    size_t ldu;
    const float *u = fold_terms(w, k, ldk, v, ldv, r, M, z, HS, delta, &ldu);
    mni_mm(Mn, (size_t)HS, w->p, 1, (size_t)HS, u, ldu, HS, r, HS, NULL, c, 1);
    add_rows(zn, w->p, NULL, c, r, HS);
}

/* Mn = M + c sum_t sigma(k_t)^T u_t, zn = z + c sum_t sigma(k_t) over n rows of k (stride ldk)
 * and v (stride ldv); u_t = v_t, or with delta v_t - (the memory's read-out at sigma(k_t)); c is
 * the segment's write weight (1 but in training with write weights). Mn, zn
 * must not alias M, z (the delta rule reads the memory as it was before the segment). Training
 * folds a segment at a time, step() the same blocks as their rows arrive, so a session holds
 * the training forward's memory bit for bit. */
static void mem_fold(float *restrict Mn, float *restrict zn, const float *M, const float *z,
                     const float *k, size_t ldk, const float *v, size_t ldv, int n, int HS,
                     int delta, float c, const struct mem_work *w)
{
    memcpy(Mn, M, sizeof(float) * (size_t)HS * HS);
    memcpy(zn, z, sizeof(float) * (size_t)HS);
    for (int t0 = 0; t0 < n; t0 += MEM_ROWS)
        mem_fold_block(Mn, zn, M, z, k + (size_t)t0 * ldk, ldk, v + (size_t)t0 * ldv, ldv,
                       n - t0 < MEM_ROWS ? n - t0 : MEM_ROWS, HS, delta, c, w);
}

/* The write weight of segment s of window b (S segments per window): 1 without weights. */
static inline float write_weight(const float *ww, int b, int S, int s)
{
    return ww ? ww[(size_t)b * S + s] : 1.0f;
}

int mni_inf_write_weights(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io,
                          float *w)
{
    if (!mni_inf_weighted(cfg, io)) return 0;
    const double R = cfg->opt[MNI_INF_OPT_MEM_REPEAT];
    const int N = mni_inf_segment(cfg), S = (io->T + N - 1) / N;
    struct mni_rng r;
    mni_rng_seed(&r, io->seed);
    const float lnr = logf((float)R);
    for (size_t i = 0, n = (size_t)io->B * S; i < n; i++) w[i] = expf(lnr * mni_rng_uniform(&r));
    return 1;
}

/* o = g a_mem + (1 - g) a_dot: the same expression in forward and step. */
static void mix(float *o, const float *amem, const float *adot, float g, int HS)
{
    for (int j = 0; j < HS; j++) o[j] = g * amem[j] + (1.0f - g) * adot[j];
}

/* ---- layouts ----------------------------------------------------------------------------------- */

void mni_inf_dense_cfg(struct mnemo_attn_cfg *d, const struct mnemo_attn_cfg *cfg)
{
    memset(d, 0, sizeof(*d));
    d->kind = MNEMO_ATTN_KIND_DENSE;
    d->n_head = cfg->n_head;
    d->head_dim = cfg->head_dim;
    d->n_ctx = mni_inf_segment(cfg);
    d->rope = cfg->rope;
    d->rope_theta = cfg->rope_theta;
    d->n_layer = cfg->n_layer;
    d->causal = 1;
}

/* The local attention as dense-kind calls over (B', T') windows of qkv rows. When N divides T,
 * one call covers every segment of every window (B' = B T / N, T' = N); otherwise each window
 * takes one call for its full segments (if any) and one for its tail. Each call has its own
 * slice of the local act. */
struct local_call {
    int B, T;    /* the dense call's windows */
    size_t row;  /* first token row (of B*T) */
    size_t act;  /* byte offset of its act inside the local act section */
};

static int n_local_calls(int B, int T, int N)
{
    return T % N == 0 ? 1 : B * (T / N > 0 ? 2 : 1);
}

static void local_call(struct local_call *lc, const struct mnemo_attn_cfg *dcfg, int B, int T,
                       int N, int i)
{
    const int full = T / N, tail = T % N;
    if (tail == 0) {
        lc->B = B * full, lc->T = N, lc->row = 0, lc->act = 0;
        return;
    }
    const size_t af = full ? mni_align64(mni_attn_dense.act_bytes(dcfg, full, N)) : 0;
    const size_t at = mni_align64(mni_attn_dense.act_bytes(dcfg, 1, tail));
    const int per = full ? 2 : 1, b = i / per, is_tail = !full || i % per == 1;
    lc->B = is_tail ? 1 : full;
    lc->T = is_tail ? tail : N;
    lc->row = (size_t)b * T + (is_tail ? (size_t)full * N : 0);
    lc->act = mni_mul((size_t)b, mni_add(af, at)) + (is_tail ? af : 0);
}

/* Saved activations (io->act), 64-byte aligned sections:
 *   local  the dense calls' acts (local_call)
 *   adot   (B,T,NH,HS) the local attention's output A_dot
 *   M      (B,NH,S,HS,HS) the memory entering each segment (S = ceil(T/N); M_0 = 0)
 *   z      (B,NH,S,HS)
 *   ww     (B,S) the write weights of the call (mem_repeat), for backward
 *   c0     (B) int: 1 where the window continues a carried memory (segment 0 reads M_0)
 * Backward scratch:
 *   dadot  (B,T,NH,HS) dA_dot
 *   dense  the dense backward's scratch (the largest of the calls)
 *   carry  (B,NH,2,HS*HS+HS) the carried dM, dz of each task and their next values
 *   work   (B,NH) struct mem_work: each task's work buffers (the forward's too)
 *   dbeta  (B,NH) doubles: each task's share of dbeta */
struct inf_lay {
    size_t adot, M, z, ww, c0, total;            /* act */
    size_t dense, carry, work, dbeta, scr_total; /* scratch (dadot at 0) */
};

static void inf_layout(struct inf_lay *lay, const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    const size_t NH = (size_t)cfg->n_head, HS = (size_t)cfg->head_dim, BNH = (size_t)B * NH;
    size_t local = 0, dscr = 0;
    for (int i = 0, nc = n_local_calls(B, T, N); i < nc; i++) {
        struct local_call lc;
        local_call(&lc, &d, B, T, N, i);
        size_t end = mni_add(lc.act, mni_align64(mni_attn_dense.act_bytes(&d, lc.B, lc.T)));
        size_t sc = mni_attn_dense.scratch_bytes(&d, lc.B, lc.T);
        local = end > local ? end : local;
        dscr = sc > dscr ? sc : dscr;
    }
    const size_t rows = mni_align64(mni_mul(mni_mul((size_t)B * (size_t)T, NH * HS), sizeof(float)));
    lay->adot = local;
    lay->M = mni_add(lay->adot, rows);
    lay->z = mni_add(lay->M, mni_align64(mni_mul(mni_mul(BNH, (size_t)S), mni_mul(HS * HS, sizeof(float)))));
    lay->ww = mni_add(lay->z, mni_align64(mni_mul(mni_mul(BNH, (size_t)S), HS * sizeof(float))));
    lay->c0 = mni_add(lay->ww, mni_align64(mni_mul(mni_mul((size_t)B, (size_t)S), sizeof(float))));
    lay->total = mni_add(lay->c0, mni_align64(mni_mul((size_t)B, sizeof(int))));
    lay->dense = rows;
    lay->carry = mni_add(lay->dense, mni_align64(dscr));
    const size_t carry = mni_mul(BNH, mni_mul(2 * (HS * HS + HS), sizeof(float)));
    lay->work = mni_add(lay->carry, mni_align64(carry));
    struct mem_work w;
    mem_work(&w, NULL, (int)HS);
    lay->dbeta = mni_add(lay->work, mni_mul(BNH, mni_mul(w.n, sizeof(float))));
    lay->scr_total = mni_add(lay->dbeta, mni_align64(mni_mul(BNH, sizeof(double))));
}

/* ---- the kind's slots ---------------------------------------------------------------------- */

static enum mnemo_status inf_validate(const struct mnemo_attn_cfg *cfg)
{
    if (!cfg) return mni_err(MNEMO_ERR_ARG, "infini: cfg is NULL");
    if (cfg->kind != MNEMO_ATTN_KIND_INFINI)
        return mni_err(MNEMO_ERR_ARG, "infini: kind must be %d (infini), got %d",
                       MNEMO_ATTN_KIND_INFINI, cfg->kind);
    if (cfg->n_head < 1)
        return mni_err(MNEMO_ERR_ARG, "infini: n_head must be >= 1, got %d", cfg->n_head);
    if (cfg->head_dim < 2 || cfg->head_dim > HS_MAX || cfg->head_dim % 2)
        return mni_err(MNEMO_ERR_ARG, "infini: head_dim must be even and in [2, %d], got %d",
                       HS_MAX, cfg->head_dim);
    if (cfg->n_ctx < 1)
        return mni_err(MNEMO_ERR_ARG, "infini: n_ctx must be >= 1, got %d", cfg->n_ctx);
    if (cfg->rope && !(cfg->rope_theta > 1.0f && isfinite(cfg->rope_theta)))
        return mni_err(MNEMO_ERR_ARG, "infini: rope_theta must be finite and > 1, got %g",
                       (double)cfg->rope_theta);
    const int seg = (int)cfg->opt[MNI_INF_OPT_SEGMENT];
    if (seg < 0 || seg > cfg->n_ctx)
        return mni_err(MNEMO_ERR_ARG, "infini attention: option segment = %d must be in [1, n_ctx "
                       "= %d] (0 = n_ctx)", seg, cfg->n_ctx);
    const double R = cfg->opt[MNI_INF_OPT_MEM_REPEAT];
    if (R != 0 && R < 1)
        return mni_err(MNEMO_ERR_ARG, "infini attention: option mem_repeat = %g must be 0 (off) "
                       "or >= 1", R);
    return MNEMO_OK;
}

/* The options (attn_int.h has their indices, MNI_INF_OPT_*). */
static const struct mnemo_attn_opt inf_opts[] = {
    [MNI_INF_OPT_SEGMENT] = {"segment", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL,
                             MNEMO_ATTN_OPT_MUTABLE | MNEMO_ATTN_OPT_CTX_ZERO, 0, 0, 1 << 22, NULL,
                             "segment length N (0 = n_ctx): local attention inside a segment, the "
                             "compressive memory across segments"},
    [MNI_INF_OPT_MEM_UPDATE] = {"mem_update", MNEMO_ATTN_OPT_ENUM, MNEMO_ATTN_SCOPE_MODEL, 0, 0,
                                0, 1, "linear|delta",
                                "memory update rule: linear (M += s(K)^T V) or delta (M += "
                                "s(K)^T (V - read-out of K))"},
    [MNI_INF_OPT_GATE_LR_MULT] = {"gate_lr_mult", MNEMO_ATTN_OPT_FLOAT, MNEMO_ATTN_SCOPE_TRAIN, 0,
                                  30, 1e-6, 1e6, NULL,
                                  "learning-rate multiplier of the gates (which take no weight "
                                  "decay)"},
    [MNI_INF_OPT_MEM_REPEAT] = {"mem_repeat", MNEMO_ATTN_OPT_FLOAT, MNEMO_ATTN_SCOPE_TRAIN, 0, 0,
                                0, 1e9, NULL,
                                "training: weigh each segment's memory write by a factor drawn "
                                "log-uniformly from [1, R], as if repeated (0 = off)"},
    [MNI_INF_OPT_CARRY] = {"carry", MNEMO_ATTN_OPT_BOOL, MNEMO_ATTN_SCOPE_TRAIN, 0, 0, 0, 1, NULL,
                           "training: carry each lane's memory from one window to the next "
                           "(lanes of consecutive text, no gradient through it), as a stream "
                           "does; windows should be a multiple of the segment"},
};
_Static_assert(sizeof(inf_opts) / sizeof(inf_opts[0]) == MNI_INF_OPT_COUNT, "inf_opts");

static uint32_t inf_caps(const struct mnemo_attn_cfg *cfg)
{
    return MNEMO_ATTN_CAP_CAUSAL | MNEMO_ATTN_CAP_STEP | MNEMO_ATTN_CAP_STEP_EXACT |
           MNEMO_ATTN_CAP_BOUNDED | MNEMO_ATTN_CAP_TRAIN |
           (mni_inf_carry_bytes(cfg) ? MNEMO_ATTN_CAP_CARRY : 0);
}

/* One gate logit beta per head, initialised to 0 (gate 0.5, the spec's initial value), with its
 * own learning rate and no weight decay (docs/internals/infini.md). */
static int inf_params(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_param *out)
{
    out[0] = (struct mnemo_attn_param){"gate", 1, {(size_t)cfg->n_head, 0}, MNEMO_ATTN_INIT_ZERO,
                                       0.0f, (float)cfg->opt[MNI_INF_OPT_GATE_LR_MULT], 0, 1};
    return 1;
}

/* Local attention over the keys of the query's segment, plus (past the first segment) the
 * memory's read-out and the segment's fold (and the delta rule's read), HS x HS multiply-adds
 * per token and head each. */
static double inf_flops(const struct mnemo_attn_cfg *cfg, int T)
{
    const int N = mni_inf_segment(cfg) < T ? mni_inf_segment(cfg) : T;
    const double C = (double)cfg->n_head * cfg->head_dim;
    double sum = 0;
    for (int t = 0; t < T; t++) sum += t % N + 1;
    double mem = N < T ? C * cfg->head_dim * (mni_inf_delta(cfg) ? 3.0 : 2.0) : 0.0;
    return 4.0 * C * (sum / T) + 2.0 * mem;
}

static size_t inf_act_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct inf_lay lay;
    inf_layout(&lay, cfg, B, T);
    return lay.total;
}

static size_t inf_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct inf_lay lay;
    inf_layout(&lay, cfg, B, T);
    return lay.scr_total;
}

static enum mnemo_status check_io(const struct mnemo_attn_cfg *cfg,
                                  const struct mnemo_attn_io *io, int backward)
{
    enum mnemo_status st = inf_validate(cfg);
    if (st != MNEMO_OK) return st;
    if (!io) return mni_err(MNEMO_ERR_ARG, "infini: io is NULL");
    if (io->B < 1 || io->T < 1 || io->T > cfg->n_ctx)
        return mni_err(MNEMO_ERR_ARG, "infini: need B >= 1 and 1 <= T <= n_ctx = %d, got B=%d T=%d",
                       cfg->n_ctx, io->B, io->T);
    if (!io->qkv || !io->out || !io->act || !io->scratch || !io->params || !io->params[0])
        return mni_err(MNEMO_ERR_ARG, "infini: qkv, out, act, scratch and params (the gates) are "
                       "required");
    if (backward && (!io->dout || !io->dqkv || !io->dparams || !io->dparams[0]))
        return mni_err(MNEMO_ERR_ARG, "infini: backward needs dout, dqkv and dparams");
    return MNEMO_OK;
}

/* The local attention of every segment, forward (adot receives A_dot) or backward (dadot is
 * dA_dot; every row of io->dqkv is overwritten): the dense kind's calls of local_call, each on its
 * own slice of qkv, adot, act. */
static enum mnemo_status run_local(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io,
                                   float *adot, const float *dadot, void *scratch, int backward)
{
    const int B = io->B, T = io->T, N = mni_inf_segment(cfg);
    const size_t C = (size_t)cfg->n_head * cfg->head_dim;
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    for (int i = 0, nc = n_local_calls(B, T, N); i < nc; i++) {
        struct local_call lc;
        local_call(&lc, &d, B, T, N, i);
        struct mnemo_attn_io dio = {0};
        dio.B = lc.B;
        dio.T = lc.T;
        dio.qkv = io->qkv + lc.row * 3 * C;
        dio.out = adot + lc.row * C;
        dio.act = (char *)io->act + lc.act;
        dio.scratch = scratch;
        if (backward) {
            dio.dout = dadot + lc.row * C;
            dio.dqkv = io->dqkv + lc.row * 3 * C;
        }
        enum mnemo_status st = backward ? mni_attn_dense.backward(&d, &dio)
                                        : mni_attn_dense.forward(&d, &dio);
        if (st != MNEMO_OK) return st;
    }
    return MNEMO_OK;
}

/* ---- forward ------------------------------------------------------------------------------- */

static enum mnemo_status inf_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 0);
    if (st != MNEMO_OK) return st;
    io->aux_loss = 0;

    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    const int delta = mni_inf_delta(cfg);
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS;
    struct inf_lay lay;
    inf_layout(&lay, cfg, B, T);
    char *act = io->act;
    float *adot = (float *)(act + lay.adot); // (B,T,NH,HS)
    float *Ms = (float *)(act + lay.M);      // (B,NH,S,HS,HS)
    float *zs = (float *)(act + lay.z);      // (B,NH,S,HS)
    float *ww = (float *)(act + lay.ww);      // (B,S)
    int *c0 = (int *)(act + lay.c0);          // (B)
    if (!mni_inf_write_weights(cfg, io, ww)) ww = NULL;
    const float *gate = io->params[0];       // (NH)
    const int carry = mni_inf_carry_bytes(cfg) != 0;
    for (int b = 0; b < B; b++) c0[b] = carry && io->carry && *mni_inf_carry_count(io->carry, cfg, b) > 0;

    // A_dot of every segment: the dense kind over windows of N tokens
    if ((st = run_local(cfg, io, adot, NULL, io->scratch, 0)) != MNEMO_OK) return st;
    // the memory: one task per (window, head), segments in order
    float *work = (float *)((char *)io->scratch + lay.work);
    struct mem_work w0;
    mem_work(&w0, NULL, HS);
    const size_t wn = w0.n; // floats per task
#pragma omp parallel for schedule(dynamic, 1)
    for (long bh = 0; bh < (long)B * NH; bh++) {
        const int b = (int)(bh / NH), h = (int)(bh % NH);
        const float g = gate_of(gate[h]);
        float *Mh = Ms + (size_t)bh * S * HH, *zh = zs + (size_t)bh * S * HS;
        struct mem_work w;
        mem_work(&w, work + (size_t)bh * wn, HS);
        if (c0[b]) { // the lane's memory from its previous window
            memcpy(Mh, mni_inf_carry_M(io->carry, cfg, b, h), sizeof(float) * HH);
            memcpy(zh, mni_inf_carry_z(io->carry, cfg, b, h), sizeof(float) * (size_t)HS);
        } else {
            memset(Mh, 0, sizeof(float) * HH);
            memset(zh, 0, sizeof(float) * (size_t)HS);
        }
        for (int s = 0; s < S; s++) {
            const int t0 = s * N, n = T - t0 < N ? T - t0 : N, read = s > 0 || c0[b];
            const float *M = Mh + (size_t)s * HH, *z = zh + (size_t)s * HS;
            const size_t row0 = (size_t)b * T + t0;
            const float *q0 = io->qkv + row0 * 3 * C + (size_t)h * HS;
            float *o0 = io->out + row0 * C + (size_t)h * HS;
            const float *ad0 = adot + row0 * C + (size_t)h * HS;
            for (int r0 = 0; r0 < n; r0 += MEM_ROWS) {
                const int r = n - r0 < MEM_ROWS ? n - r0 : MEM_ROWS;
                if (read)
                    mem_read(w.a, w.p, w.den, w.inv, q0 + (size_t)r0 * 3 * C, 3 * C, r, M, z, HS);
                for (int t = 0; t < r; t++) {
                    float *o = o0 + (size_t)(r0 + t) * C;
                    const float *ad = ad0 + (size_t)(r0 + t) * C;
                    if (!read) memcpy(o, ad, sizeof(float) * (size_t)HS); // empty memory: A_dot
                    else mix(o, w.a + (size_t)t * HS, ad, g, HS);
                }
            }
            // the next segment's memory; the last segment's goes to the lane's carry
            float *Mn = s + 1 < S ? Mh + (size_t)(s + 1) * HH
                        : carry && io->carry_out ? mni_inf_carry_M(io->carry_out, cfg, b, h)
                                                 : NULL;
            float *zn = s + 1 < S ? zh + (size_t)(s + 1) * HS
                        : Mn ? mni_inf_carry_z(io->carry_out, cfg, b, h) : NULL;
            if (Mn)
                mem_fold(Mn, zn, M, z, q0 + C, 3 * C, q0 + 2 * C, 3 * C, n, HS, delta && read,
                         write_weight(ww, b, S, s), &w);
        }
    }
    if (carry && io->carry_out)
        for (int b = 0; b < B; b++) { // the header: the segments folded so far
            char *hdr = (char *)mni_inf_carry_count(io->carry_out, cfg, b);
            const int64_t n = (c0[b] ? *mni_inf_carry_count(io->carry, cfg, b) : 0) + S;
            memset(hdr, 0, MNI_INF_CARRY_HDR);
            memcpy(hdr, &n, sizeof(n));
        }
    return MNEMO_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* dx (n,HS; stride ldx) += G * sigma'(x): sigma'(x) = 1 for x > 0, else e^x = sigma(x) = P. */
static void add_dphi(float *dx, size_t ldx, const float *G, const float *P, const float *x,
                     int n, int HS)
{
    for (int t = 0; t < n; t++) {
        const float *gt = G + (size_t)t * HS, *pt = P + (size_t)t * HS, *xt = x + (size_t)t * ldx;
        float *d = dx + (size_t)t * ldx;
        int i = 0;
#if MNI_HAVE_AVX2
        const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
        for (; i + 8 <= HS; i += 8) {
            const __m256 pos = _mm256_cmp_ps(_mm256_loadu_ps(xt + i), zero, _CMP_GT_OQ);
            const __m256 dp = _mm256_blendv_ps(_mm256_loadu_ps(pt + i), one, pos);
            _mm256_storeu_ps(d + i, _mm256_fmadd_ps(_mm256_loadu_ps(gt + i), dp,
                                                    _mm256_loadu_ps(d + i)));
        }
#endif
        for (; i < HS; i++) d[i] = fmaf(gt[i], xt[i] > 0.0f ? 1.0f : pt[i], d[i]);
    }
}

/* One segment of one (window, head) task, backward, MEM_ROWS rows at a time. x, dx: the
 * segment's first row of this head in qkv, dqkv (row stride 3C: q at 0, k at C, v at 2C); dA, ad:
 * its first row in dout, adot (stride C). M, z: the memory entering the segment; dMn, dzn: the
 * gradients of the memory after it; dM, dz: of the memory before it, entering as copies of dMn,
 * dzn (M_{s+1} = M_s + ...: the identity path) and receiving the rest. fold: the segment was
 * folded (it is not the window's last), delta: by the delta rule, c: with the write weight c,
 * read: its rows read the memory (s >= 1). Returns the segment's sum of dA . (A_mem - A_dot),
 * dbeta / (g (1 - g)). */
static double seg_bwd(float *dx, float *dM, float *dz, const float *x, const float *dA,
                      const float *ad, size_t C, const float *M, const float *z, const float *dMn,
                      const float *dzn, int n, int HS, float g, int fold, int delta, float c,
                      int read, const struct mem_work *w)
{
    const size_t ldx = 3 * C, hs = (size_t)HS;
    double db = 0.0;
    if (fold) transpose(w->dmt, dMn, HS);
    if (read || delta) transpose(w->mt, M, HS);
    for (int t0 = 0; t0 < n; t0 += MEM_ROWS) {
        const int r = n - t0 < MEM_ROWS ? n - t0 : MEM_ROWS;
        const float *xq = x + (size_t)t0 * ldx, *xk = xq + C, *xv = xq + 2 * C;
        float *dq = dx + (size_t)t0 * ldx, *dk = dq + C, *dv = dq + 2 * C;
        if (fold) {
            size_t ldu;
            const float *u = fold_terms(w, xk, ldx, xv, ldx, r, M, z, HS, delta, &ldu);
            // M' = M + c P^T U, z' = z + c colsum P: dU = c P dM' (d), dP = c (U dM'^T + dz') (g)
            mni_mm(w->d, hs, w->p, hs, 1, dMn, hs, r, HS, HS, NULL, c, 0);
            mni_mm(w->g, hs, u, ldu, 1, w->dmt, hs, r, HS, HS, NULL, c, 0);
            for (int t = 0; t < r; t++)
                for (int j = 0; j < HS; j++) {
                    w->g[t * hs + j] += c * dzn[j];
                    dv[t * ldx + j] += w->d[t * hs + j];
                }
            if (delta) {
                // u = v - a, a = P M / den', den' = max(P z, eps): da = -dU, dn = da / den'
                // (d), dden' = -(da . a) / den' (dd; 0 where the clamp holds)
                for (int t = 0; t < r; t++) {
                    const float inv = w->inv[t], dd = dot(w->d + t * hs, w->a + t * hs, HS);
                    w->dd[t] = w->den[t] > MNI_INF_DEN_EPS ? dd * inv : 0.0f;
                    for (int j = 0; j < HS; j++) w->d[t * hs + j] *= -inv;
                }
                // dP += dn M^T + dd z, dM += P^T dn, dz += sum_t dd_t P_t
                mni_mm(w->g, hs, w->d, hs, 1, w->mt, hs, r, HS, HS, NULL, 1.0f, 1);
                for (int t = 0; t < r; t++)
                    for (int j = 0; j < HS; j++) w->g[t * hs + j] += w->dd[t] * z[j];
                mni_mm(dM, hs, w->p, 1, hs, w->d, hs, HS, r, HS, NULL, 1.0f, 1);
                add_rows(dz, w->p, w->dd, 1.0f, r, HS);
            }
            add_dphi(dk, ldx, w->g, w->p, xk, r, HS);
        }
        if (read) {
            // o = g A_mem + (1 - g) A_dot, A_mem = P M / den': dA_mem = g dA, dn = dA_mem / den'
            // (d), dden' = -(dA_mem . A_mem) / den' (dd)
            mem_read(w->a, w->p, w->den, w->inv, xq, ldx, r, M, z, HS);
            for (int t = 0; t < r; t++) {
                const float *da = dA + (size_t)(t0 + t) * C, *at = w->a + t * hs;
                const float inv = w->inv[t], dda = dot(da, at, HS), gi = g * inv;
                db += (double)dda - (double)dot(da, ad + (size_t)(t0 + t) * C, HS);
                for (int j = 0; j < HS; j++) w->d[t * hs + j] = gi * da[j];
                w->dd[t] = w->den[t] > MNI_INF_DEN_EPS ? -g * dda * inv : 0.0f;
            }
            // dP = dn M^T + dd z, dM += P^T dn, dz += sum_t dd_t P_t
            mni_mm(w->g, hs, w->d, hs, 1, w->mt, hs, r, HS, HS, NULL, 1.0f, 0);
            for (int t = 0; t < r; t++)
                for (int j = 0; j < HS; j++) w->g[t * hs + j] += w->dd[t] * z[j];
            add_dphi(dq, ldx, w->g, w->p, xq, r, HS);
            mni_mm(dM, hs, w->p, 1, hs, w->d, hs, HS, r, HS, NULL, 1.0f, 1);
            add_rows(dz, w->p, w->dd, 1.0f, r, HS);
        }
    }
    return db;
}

static enum mnemo_status inf_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 1);
    if (st != MNEMO_OK) return st;

    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    const int delta = mni_inf_delta(cfg);
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS;
    struct inf_lay lay;
    inf_layout(&lay, cfg, B, T);
    char *act = io->act, *scr = io->scratch;
    const float *adot = (const float *)(act + lay.adot); // (B,T,NH,HS)
    const float *Ms = (const float *)(act + lay.M);      // (B,NH,S,HS,HS)
    const float *zs = (const float *)(act + lay.z);      // (B,NH,S,HS)
    const float *ww = mni_inf_weighted(cfg, io) ? (const float *)(act + lay.ww) : NULL;
    const int *c0 = (const int *)(act + lay.c0);         // (B)
    const float *gate = io->params[0];                   // (NH)
    float *dadot = (float *)scr;                          // (B,T,NH,HS)
    float *carry = (float *)(scr + lay.carry);            // (B,NH,2,HS*HS+HS)
    double *dbeta = (double *)(scr + lay.dbeta);          // (B,NH)

    // A = g A_mem + (1 - g) A_dot (A_dot alone while the memory is empty): dA_dot
#pragma omp parallel for schedule(static)
    for (long row = 0; row < (long)B * T; row++) {
        const int s = (int)(row % T) / N, read = s > 0 || c0[row / T];
        for (int h = 0; h < NH; h++) {
            const float w = !read ? 1.0f : 1.0f - gate_of(gate[h]);
            const float *g = io->dout + (size_t)row * C + (size_t)h * HS;
            float *d = dadot + (size_t)row * C + (size_t)h * HS;
            for (int j = 0; j < HS; j++) d[j] = w * g[j];
        }
    }
    // the local attention's backward writes every row of dqkv
    if ((st = run_local(cfg, io, (float *)adot, dadot, scr + lay.dense, 1)) != MNEMO_OK) return st;
    // the memory path, segments in reverse, adding to the rows of dqkv
    float *work = (float *)(scr + lay.work);
    struct mem_work w0;
    mem_work(&w0, NULL, HS);
    const size_t wn = w0.n; // floats per task
#pragma omp parallel for schedule(dynamic, 1)
    for (long bh = 0; bh < (long)B * NH; bh++) {
        const int b = (int)(bh / NH), h = (int)(bh % NH);
        const float g = gate_of(gate[h]);
        const float *Mh = Ms + (size_t)bh * S * HH, *zh = zs + (size_t)bh * S * HS;
        float *dMn = carry + (size_t)bh * 2 * (HH + HS), *dzn = dMn + HH;
        float *dM = dzn + HS, *dz = dM + HH;
        struct mem_work w;
        mem_work(&w, work + (size_t)bh * wn, HS);
        double db = 0.0;
        // nothing in the window reads the memory after it (a carried one takes no gradient)
        memset(dMn, 0, sizeof(float) * (HH + HS));
        for (int s = S - 1; s >= 0; s--) {
            const int t0 = s * N, n = T - t0 < N ? T - t0 : N, read = s > 0 || c0[b];
            const size_t row0 = (size_t)b * T + t0, hoff = (size_t)h * HS;
            memcpy(dM, dMn, sizeof(float) * (HH + HS)); // M_{s+1} = M_s + ...: identity path
            db += seg_bwd(io->dqkv + row0 * 3 * C + hoff, dM, dz, io->qkv + row0 * 3 * C + hoff,
                          io->dout + row0 * C + hoff, adot + row0 * C + hoff, C,
                          Mh + (size_t)s * HH, zh + (size_t)s * HS, dMn, dzn, n, HS, g, s + 1 < S,
                          delta && read, write_weight(ww, b, S, s), read, &w);
            float *t = dMn;
            dMn = dM, dM = t;
            dzn = dMn + HH, dz = dM + HH;
        }
        dbeta[bh] = db * (double)g * (1.0 - (double)g);
    }
    for (int h = 0; h < NH; h++) {
        double sum = 0.0;
        for (int b = 0; b < B; b++) sum += dbeta[(size_t)b * NH + h];
        io->dparams[0][h] += (float)sum;
    }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

static size_t hdr_bytes(void) { return mni_align64(sizeof(struct mni_inf_state)); }

/* Rows of raw k and v the state holds per head: one fold block (fast path), or the whole
 * segment (the reference). */
static int raw_rows(const struct mnemo_attn_cfg *cfg, int ref)
{
    const int N = mni_inf_segment(cfg);
    return ref || N < MEM_ROWS ? N : MEM_ROWS;
}

/* Does the state carry Mn, zn? Only when a segment has more than one fold block: else the
 * block is the segment, folded at its end through the step's scratch. */
static int has_mn(const struct mnemo_attn_cfg *cfg, int ref)
{
    return !ref && mni_inf_segment(cfg) > MEM_ROWS;
}

/* Section offsets of the state (attn_int.h); total is the bound. */
struct state_lay {
    size_t M, z, Mn, zn, k, v, dense, total;
};
static void state_layout(const struct mnemo_attn_cfg *cfg, int ref, struct state_lay *l)
{
    const size_t NH = (size_t)cfg->n_head, HS = (size_t)cfg->head_dim;
    const size_t m = mni_align64(mni_mul(mni_mul(NH, HS * HS), sizeof(float)));
    const size_t z = mni_align64(mni_mul(NH * HS, sizeof(float)));
    const size_t raw = mni_align64(mni_mul(mni_mul(NH * HS, (size_t)raw_rows(cfg, ref)), sizeof(float)));
    l->M = hdr_bytes();
    l->z = mni_add(l->M, m);
    l->Mn = mni_add(l->z, z);
    l->zn = mni_add(l->Mn, has_mn(cfg, ref) ? m : 0);
    l->k = mni_add(l->zn, has_mn(cfg, ref) ? z : 0);
    l->v = mni_add(l->k, raw);
    l->dense = mni_add(l->v, raw);
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    l->total = mni_add(l->dense, ref ? 0 : mni_attn_dense.state_bytes(&d));
}

void mni_inf_state_view(const struct mnemo_attn_cfg *cfg, int ref, void *state,
                        struct mni_inf_view *vw)
{
    struct state_lay l;
    state_layout(cfg, ref, &l);
    char *p = (char *)state;
    vw->hdr = state;
    vw->M = (float *)(p + l.M);
    vw->z = (float *)(p + l.z);
    vw->Mn = has_mn(cfg, ref) ? (float *)(p + l.Mn) : NULL;
    vw->zn = has_mn(cfg, ref) ? (float *)(p + l.zn) : NULL;
    vw->k = (float *)(p + l.k);
    vw->v = (float *)(p + l.v);
    vw->rows = raw_rows(cfg, ref);
    vw->dense = ref ? NULL : p + l.dense;
}

/* The bound: M, z (twice for segments of more than one block), the raw k, v rows and the
 * dense state of one segment. */
static size_t state_bytes(const struct mnemo_attn_cfg *cfg, int ref)
{
    struct state_lay l;
    state_layout(cfg, ref, &l);
    return l.total;
}

static void state_init(const struct mnemo_attn_cfg *cfg, int ref, void *state)
{
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, ref, state, &vw);
    vw.hdr->count = vw.hdr->in_seg = vw.hdr->n_seg = 0;
    vw.hdr->segment = mni_inf_segment(cfg);
    memset(vw.M, 0, sizeof(float) * (size_t)cfg->n_head * cfg->head_dim * cfg->head_dim);
    memset(vw.z, 0, sizeof(float) * (size_t)cfg->n_head * cfg->head_dim);
    if (vw.dense) {
        struct mnemo_attn_cfg d;
        mni_inf_dense_cfg(&d, cfg);
        mni_attn_dense.state_init(&d, vw.dense);
    }
}

/* Header, M, z (and Mn, zn), and the tokens held: the raw rows of the block being filled (of the
 * segment, for the reference) and the dense cache's rows. */
static size_t state_live_bytes(const struct mnemo_attn_cfg *cfg, int ref, const void *state)
{
    struct state_lay l;
    state_layout(cfg, ref, &l);
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, ref, (void *)state, &vw);
    const size_t row = 2 * (size_t)cfg->n_head * cfg->head_dim * sizeof(float);
    size_t live = mni_add(l.k, mni_mul((size_t)(vw.hdr->in_seg % vw.rows), row));
    if (vw.dense) {
        struct mnemo_attn_cfg d;
        mni_inf_dense_cfg(&d, cfg);
        live = mni_add(live, mni_attn_dense.state_live_bytes(&d, vw.dense));
    }
    return live;
}

/* Step scratch: adot (n,NH,HS), the fold's Mn (NH,HS,HS) and zn (NH,HS) when the state has no
 * room for them, the work buffers of one head (struct mem_work), then the dense step's. */
static void step_layout(const struct mnemo_attn_cfg *cfg, int n, size_t *mn, size_t *work,
                        size_t *dense)
{
    const size_t NH = (size_t)cfg->n_head, HS = (size_t)cfg->head_dim;
    struct mem_work w;
    mem_work(&w, NULL, (int)HS);
    *mn = mni_align64(mni_mul(mni_mul((size_t)n, NH * HS), sizeof(float)));
    *work = mni_add(*mn, has_mn(cfg, 0) ? 0 : mni_align64(mni_mul(NH, mni_mul(HS * HS + HS, sizeof(float)))));
    *dense = mni_add(*work, mni_align64(mni_mul(w.n, sizeof(float))));
}

static size_t inf_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    if (n < 1) n = 1;
    const int N = mni_inf_segment(cfg);
    size_t mn, work, dense;
    step_layout(cfg, n, &mn, &work, &dense);
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    return mni_add(dense, mni_attn_dense.step_scratch_bytes(&d, n < N ? n : N));
}

/* Feeds n tokens: each piece that stays inside the current segment attends locally through the
 * dense state (positions within the segment) and reads the memory of the earlier segments; its
 * raw k, v rows go to the block buffer, and each complete block is folded into Mn, zn. When the
 * segment is complete, Mn, zn become the memory and a new segment begins. */
/* The checks of every step() (fast or reference) before it changes the state. */
static enum mnemo_status check_step(const struct mnemo_attn_cfg *cfg, int ref,
                                    const struct mnemo_attn_step *sa)
{
    enum mnemo_status rc = inf_validate(cfg);
    if (rc != MNEMO_OK) return rc;
    if (!sa->state || !sa->params || !sa->params[0] || !sa->out || !sa->qkv || !sa->scratch)
        return mni_err(MNEMO_ERR_ARG, "infini: step needs state, params, out, qkv and scratch");
    if (sa->n < 1) return mni_err(MNEMO_ERR_ARG, "infini: step needs n >= 1 tokens, got %d", sa->n);
    const int N = mni_inf_segment(cfg);
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, ref, sa->state, &vw);
    const struct mni_inf_state *hd = vw.hdr;
    if (hd->segment != N || hd->in_seg < 0 || hd->in_seg >= N || hd->n_seg < 0 || hd->count < 0)
        return mni_err(MNEMO_ERR_ARG, "infini: state not initialised for this cfg (segment %lld vs %d)",
                       (long long)hd->segment, N);
    return MNEMO_OK;
}

static enum mnemo_status inf_step(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *sa)
{
    enum mnemo_status rc = check_step(cfg, 0, sa);
    if (rc != MNEMO_OK) return rc;
    const int N = mni_inf_segment(cfg), NH = cfg->n_head, HS = cfg->head_dim, n = sa->n;
    void *scratch = sa->scratch;
    float *out = sa->out;
    const float *qkv = sa->qkv, *params = sa->params[0]; // params: the gates (NH)
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, 0, sa->state, &vw);
    struct mni_inf_state *hd = vw.hdr;
    const int delta = mni_inf_delta(cfg);
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS;
    const int R = vw.rows;
    const size_t RH = (size_t)R * HS;
    size_t off_mn, off_work, off_dense;
    step_layout(cfg, n, &off_mn, &off_work, &off_dense);
    float *adot = scratch; // (n,NH,HS)
    float *Mn = vw.Mn ? vw.Mn : (float *)((char *)scratch + off_mn); // (NH,HS,HS)
    float *zn = vw.Mn ? vw.zn : Mn + (size_t)NH * HH;                 // (NH,HS)
    struct mem_work w;
    mem_work(&w, (float *)((char *)scratch + off_work), HS);
    void *dscr = (char *)scratch + off_dense;
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    for (int t = 0; t < n;) {
        const int piece = n - t < N - (int)hd->in_seg ? n - t : N - (int)hd->in_seg;
        struct mnemo_attn_step ds = {piece, sa->layer, vw.dense, NULL, qkv + (size_t)t * 3 * C,
                                     adot + (size_t)t * C, dscr};
        rc = mni_attn_dense.step(&d, &ds);
        if (rc != MNEMO_OK) return rc;
        // the piece's rows of each head: A_dot alone while the memory is empty, else mixed
        for (int h = 0; h < NH; h++) {
            const size_t hoff = (size_t)t * C + (size_t)h * HS;
            for (int r0 = 0; r0 < piece; r0 += MEM_ROWS) {
                const int r = piece - r0 < MEM_ROWS ? piece - r0 : MEM_ROWS;
                const float *q = qkv + (size_t)(t + r0) * 3 * C + (size_t)h * HS;
                if (hd->n_seg > 0)
                    mem_read(w.a, w.p, w.den, w.inv, q, 3 * C, r, vw.M + h * HH,
                             vw.z + (size_t)h * HS, HS);
                for (int i = 0; i < r; i++) {
                    float *o = out + hoff + (size_t)(r0 + i) * C;
                    const float *ad = adot + hoff + (size_t)(r0 + i) * C;
                    if (hd->n_seg == 0) memcpy(o, ad, sizeof(float) * HS);
                    else mix(o, w.a + (size_t)i * HS, ad, gate_of(params[h]), HS);
                }
            }
        }
        // raw k, v into the block buffer; a complete block (R rows, or the segment's last) is
        // folded into Mn, zn, which start the segment as a copy of M, z: mem_fold's steps
        for (int i = 0; i < piece; i++) {
            const float *x = qkv + (size_t)(t + i) * 3 * C;
            const int pos = (int)hd->in_seg + i, slot = pos % R;
            for (int h = 0; h < NH; h++) {
                memcpy(vw.k + h * RH + (size_t)slot * HS, x + C + (size_t)h * HS, sizeof(float) * HS);
                memcpy(vw.v + h * RH + (size_t)slot * HS, x + 2 * C + (size_t)h * HS,
                       sizeof(float) * HS);
            }
            if (slot + 1 < R && pos + 1 < N) continue;
            for (int h = 0; h < NH; h++) {
                float *Mh = Mn + h * HH, *zh = zn + (size_t)h * HS;
                if (pos < R) { // the segment's first block
                    memcpy(Mh, vw.M + h * HH, sizeof(float) * HH);
                    memcpy(zh, vw.z + (size_t)h * HS, sizeof(float) * HS);
                }
                mem_fold_block(Mh, zh, vw.M + h * HH, vw.z + (size_t)h * HS, vw.k + h * RH,
                               (size_t)HS, vw.v + h * RH, (size_t)HS, slot + 1, HS,
                               delta && hd->n_seg > 0, 1.0f, &w);
            }
        }
        hd->in_seg += piece;
        hd->count += piece;
        t += piece;
        if (hd->in_seg == N) {
            // the segment is complete: its fold becomes the memory, and the next one starts
            memcpy(vw.M, Mn, sizeof(float) * NH * HH);
            memcpy(vw.z, zn, sizeof(float) * (size_t)NH * HS);
            hd->n_seg++;
            hd->in_seg = 0;
            mni_attn_dense.state_init(&d, vw.dense);
        }
    }
    return MNEMO_OK;
}

static size_t inf_state_bytes(const struct mnemo_attn_cfg *cfg) { return state_bytes(cfg, 0); }
static void inf_state_init(const struct mnemo_attn_cfg *cfg, void *st) { state_init(cfg, 0, st); }
static size_t inf_state_live_bytes(const struct mnemo_attn_cfg *cfg, const void *st)
{
    return state_live_bytes(cfg, 0, st);
}

/* ---- the reference (infini_ref.c computes; the layouts and checks are shared) --------------- */

static size_t ref_state_bytes(const struct mnemo_attn_cfg *cfg) { return state_bytes(cfg, 1); }
static void ref_state_init(const struct mnemo_attn_cfg *cfg, void *st) { state_init(cfg, 1, st); }
static size_t ref_state_live_bytes(const struct mnemo_attn_cfg *cfg, const void *st)
{
    return state_live_bytes(cfg, 1, st);
}

static enum mnemo_status ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 0);
    if (st != MNEMO_OK) return st;
    io->aux_loss = 0;
    return mni_inf_ref_forward(cfg, io);
}

static enum mnemo_status ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 1);
    return st != MNEMO_OK ? st : mni_inf_ref_backward(cfg, io);
}

static enum mnemo_status ref_step(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_step *sa)
{
    enum mnemo_status rc = check_step(cfg, 1, sa);
    if (rc == MNEMO_OK)
        mni_inf_ref_step(cfg, sa->state, sa->params[0], sa->out, sa->qkv, sa->n, sa->scratch);
    return rc;
}

#define INF_COMMON                                                                             \
    .api_version = MNEMO_ATTN_API_VERSION, .name = "infini", .opts = inf_opts,                \
    .n_opts = MNI_INF_OPT_COUNT, .caps = inf_caps, .validate = inf_validate,                   \
    .params = inf_params, .flops_per_token = inf_flops, .act_bytes = inf_act_bytes,          \
    .carry_bytes = mni_inf_carry_bytes

const struct mnemo_attn_ops mni_attn_infini = {
    INF_COMMON,
    .scratch_bytes = inf_scratch_bytes,
    .forward = inf_forward,
    .backward = inf_backward,
    .state_bytes = inf_state_bytes,
    .step_scratch_bytes = inf_step_scratch_bytes,
    .state_init = inf_state_init,
    .step = inf_step,
    .state_live_bytes = inf_state_live_bytes,
};

const struct mnemo_attn_ops mni_attn_infini_ref = {
    INF_COMMON,
    .is_ref = 1,
    .scratch_bytes = mni_inf_ref_scratch_bytes,
    .forward = ref_forward,
    .backward = ref_backward,
    .state_bytes = ref_state_bytes,
    .step_scratch_bytes = mni_inf_ref_step_scratch_bytes,
    .state_init = ref_state_init,
    .step = ref_step,
    .state_live_bytes = ref_state_live_bytes,
};
