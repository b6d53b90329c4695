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
 * with M_0 = 0, z_0 = 0. beta (one per head) is the kind's only parameter (n_params = NH).
 *
 * Forward: the local attention of every segment is the dense kind's forward over windows of N
 * tokens (a segment is a window starting at position 0, so the dense kernels, their RoPE table
 * and their act layout are reused as they are); then one task per (window, head) walks the
 * segments in order, reads the memory, mixes, and folds the segment in. M_s and z_s of every
 * segment are saved in act (fp32), which is the spec's per-segment checkpoint: backward needs
 * no recomputation of the memory.
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
 * Streaming: the state is M, z and the current segment (its unrotated keys and values, and a
 * dense state of N slots for the local attention): constant in the stream length. When the
 * segment fills it is folded into M by the same code as in training, and a new one starts, so
 * step() never reports MNEMO_ERR_FULL. Layouts: attn_int.h; the reference: infini_ref.c;
 * design notes: docs/internals/infini.md.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "mni.h"

#define HS_MAX 256 /* largest head_dim (stack vectors are sized for it), as in the dense kind */

/* ---- the memory, one head -------------------------------------------------------------------- */

static inline float phi(float x) { return x > 0.0f ? x + 1.0f : expf(x); }
static inline float dphi(float x) { return x > 0.0f ? 1.0f : expf(x); }
static inline float gate_of(float beta) { return 1.0f / (1.0f + expf(-beta)); }

/* a (HS) = sigma(x) M / max(sigma(x) . z, eps); px (HS) receives sigma(x). Returns the
 * unclamped denominator. M (HS,HS) row-major: row i is the value stored under key feature i. */
static float mem_read(float *restrict a, float *restrict px, const float *restrict x,
                      const float *restrict M, const float *restrict z, int HS)
{
    float den = 0.0f;
    for (int i = 0; i < HS; i++) {
        px[i] = phi(x[i]);
        den += px[i] * z[i];
    }
    for (int j = 0; j < HS; j++) a[j] = 0.0f;
    for (int i = 0; i < HS; i++) {
        const float w = px[i], *Mi = M + (size_t)i * HS;
        for (int j = 0; j < HS; j++) a[j] += w * Mi[j];
    }
    const float inv = 1.0f / (den > MNI_INF_DEN_EPS ? den : MNI_INF_DEN_EPS);
    for (int j = 0; j < HS; j++) a[j] *= inv;
    return den;
}

/* Mn = M + sum_t sigma(k_t)^T u_t, zn = z + sum_t sigma(k_t) over n rows of k (stride ldk) and
 * v (stride ldv); u_t = v_t, or with delta v_t - (the memory's read-out at sigma(k_t)). Mn, zn
 * must not alias M, z (the delta rule reads the memory as it was before the segment). Training
 * and step() both fold through here, so a session holds the training forward's memory. */
static void mem_fold(float *restrict Mn, float *restrict zn, const float *restrict M,
                     const float *restrict z, const float *k, size_t ldk, const float *v,
                     size_t ldv, int n, int HS, int delta)
{
    float pk[HS_MAX], u[HS_MAX];
    memcpy(Mn, M, sizeof(float) * (size_t)HS * HS);
    memcpy(zn, z, sizeof(float) * (size_t)HS);
    for (int t = 0; t < n; t++) {
        const float *kt = k + (size_t)t * ldk, *vt = v + (size_t)t * ldv;
        if (delta) {
            mem_read(u, pk, kt, M, z, HS);
            for (int j = 0; j < HS; j++) u[j] = vt[j] - u[j];
        } else {
            for (int i = 0; i < HS; i++) pk[i] = phi(kt[i]);
            for (int j = 0; j < HS; j++) u[j] = vt[j];
        }
        for (int i = 0; i < HS; i++) {
            const float w = pk[i];
            float *Mi = Mn + (size_t)i * HS;
            zn[i] += w;
            for (int j = 0; j < HS; j++) Mi[j] += w * u[j];
        }
    }
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
 * Backward scratch:
 *   dadot  (B,T,NH,HS) dA_dot
 *   dense  the dense backward's scratch (the largest of the calls)
 *   carry  (B,NH,2,HS*HS+HS) the carried dM, dz of each task and their next values
 *   dbeta  (B,NH) doubles: each task's share of dbeta */
struct inf_lay {
    size_t adot, M, z, total;              /* act */
    size_t dense, carry, dbeta, scr_total; /* scratch (dadot at 0) */
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
    lay->total = mni_add(lay->z, mni_align64(mni_mul(mni_mul(BNH, (size_t)S), HS * sizeof(float))));
    lay->dense = rows;
    lay->carry = mni_add(lay->dense, mni_align64(dscr));
    lay->dbeta = mni_add(lay->carry, mni_align64(mni_mul(BNH, mni_mul(2 * (HS * HS + HS), sizeof(float)))));
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
    if (cfg->segment < 0 || cfg->segment > cfg->n_ctx)
        return mni_err(MNEMO_ERR_ARG, "infini: segment must be in [1, n_ctx = %d] (0 = n_ctx), "
                       "got %d", cfg->n_ctx, cfg->segment);
    if (!mnemo_mem_update_name(cfg->mem_update))
        return mni_err(MNEMO_ERR_ARG, "infini: mem_update must be %d (linear) or %d (delta), got %d",
                       MNEMO_MEM_LINEAR, MNEMO_MEM_DELTA, cfg->mem_update);
    if (cfg->budget != 0 || cfg->threshold != 0.0f)
        return mni_err(MNEMO_ERR_ARG, "infini: the state cannot be pruned (budget %d, threshold %g): "
                       "its memory is already constant in the stream length", cfg->budget,
                       (double)cfg->threshold);
    if (cfg->mem_eps != 0.0f || cfg->mem_tau != 0.0f)
        return mni_err(MNEMO_ERR_ARG, "infini: the memory loss (mem_eps, mem_tau) is selective "
                       "attention's; infini has none");
    return MNEMO_OK;
}

/* One gate logit beta per head; 0 (gate 0.5) is the spec's initial value, which is what the
 * model's zero initialisation of kind parameters gives. */
static size_t inf_n_params(const struct mnemo_attn_cfg *cfg) { return (size_t)cfg->n_head; }

static size_t inf_act_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    struct inf_lay lay;
    inf_layout(&lay, cfg, B, T);
    return lay.total;
}

static size_t inf_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    if (cfg->use_ref) return mni_inf_ref_scratch_bytes(cfg, B, T);
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
    if (!io->qkv || !io->out || !io->act || !io->scratch || !io->params)
        return mni_err(MNEMO_ERR_ARG, "infini: qkv, out, act, scratch and params (the gates) are "
                       "required");
    if (backward && (!io->dout || !io->dqkv || !io->dparams))
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
    if (cfg->use_ref) return mni_inf_ref_forward(cfg, io);

    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    const int delta = cfg->mem_update == MNEMO_MEM_DELTA;
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS;
    struct inf_lay lay;
    inf_layout(&lay, cfg, B, T);
    char *act = io->act;
    float *adot = (float *)(act + lay.adot); // (B,T,NH,HS)
    float *Ms = (float *)(act + lay.M);      // (B,NH,S,HS,HS)
    float *zs = (float *)(act + lay.z);      // (B,NH,S,HS)

    // A_dot of every segment: the dense kind over windows of N tokens
    if ((st = run_local(cfg, io, adot, NULL, io->scratch, 0)) != MNEMO_OK) return st;
    // the memory: one task per (window, head), segments in order
#pragma omp parallel for schedule(dynamic, 1)
    for (long bh = 0; bh < (long)B * NH; bh++) {
        const int b = (int)(bh / NH), h = (int)(bh % NH);
        const float g = gate_of(io->params[h]);
        float *Mh = Ms + (size_t)bh * S * HH, *zh = zs + (size_t)bh * S * HS;
        float am[HS_MAX], pq[HS_MAX];
        memset(Mh, 0, sizeof(float) * HH);
        memset(zh, 0, sizeof(float) * (size_t)HS);
        for (int s = 0; s < S; s++) {
            const int t0 = s * N, n = T - t0 < N ? T - t0 : N;
            const float *M = Mh + (size_t)s * HH, *z = zh + (size_t)s * HS;
            for (int t = t0; t < t0 + n; t++) {
                const size_t row = (size_t)b * T + t;
                float *o = io->out + row * C + (size_t)h * HS;
                const float *ad = adot + row * C + (size_t)h * HS;
                if (s == 0) {
                    memcpy(o, ad, sizeof(float) * (size_t)HS); // empty memory: A_dot alone
                } else {
                    mem_read(am, pq, io->qkv + row * 3 * C + (size_t)h * HS, M, z, HS);
                    mix(o, am, ad, g, HS);
                }
            }
            if (s + 1 < S) {
                const float *k0 = io->qkv + ((size_t)b * T + t0) * 3 * C + C + (size_t)h * HS;
                mem_fold(Mh + (size_t)(s + 1) * HH, zh + (size_t)(s + 1) * HS, M, z, k0, 3 * C,
                         k0 + C, 3 * C, n, HS, delta && s > 0);
            }
        }
    }
    return MNEMO_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* The fold of one token, backward: dMn, dzn are the gradients of the memory after the fold;
 * dM, dz (which start as copies of them) receive the delta rule's paths into the memory before
 * it. Adds to dk (through sigma) and dv. */
static void fold_bwd(float *restrict dk, float *restrict dv, float *restrict dM,
                     float *restrict dz, const float *kt, const float *vt, const float *M,
                     const float *z, const float *dMn, const float *dzn, int HS, int delta)
{
    float pk[HS_MAX], u[HS_MAX], r[HS_MAX], dU[HS_MAX], dpk[HS_MAX];
    float den = 0.0f;
    if (delta) {
        den = mem_read(r, pk, kt, M, z, HS);
        for (int j = 0; j < HS; j++) u[j] = vt[j] - r[j];
    } else {
        for (int i = 0; i < HS; i++) pk[i] = phi(kt[i]);
        for (int j = 0; j < HS; j++) u[j] = vt[j];
    }
    // Mn = M + pk^T u, zn = z + pk: dU = pk dMn, dpk = dMn u + dzn
    for (int j = 0; j < HS; j++) dU[j] = 0.0f;
    for (int i = 0; i < HS; i++) {
        const float w = pk[i], *Di = dMn + (size_t)i * HS;
        float acc = 0.0f;
        for (int j = 0; j < HS; j++) {
            dU[j] += w * Di[j];
            acc += Di[j] * u[j];
        }
        dpk[i] = acc + dzn[i];
    }
    for (int j = 0; j < HS; j++) dv[j] += dU[j];
    if (delta) {
        // u = v - r, r = n / den', n = pk M, den' = max(pk . z, eps): dr = -dU,
        // dn = dr / den', dden' = -(dr . r) / den' (0 where the clamp holds)
        const float dc = den > MNI_INF_DEN_EPS ? den : MNI_INF_DEN_EPS, inv = 1.0f / dc;
        float dd = 0.0f;
        for (int j = 0; j < HS; j++) dd += dU[j] * r[j];
        dd = den > MNI_INF_DEN_EPS ? dd * inv : 0.0f;
        for (int j = 0; j < HS; j++) r[j] = -dU[j] * inv; // r now holds dn
        for (int i = 0; i < HS; i++) {
            const float *Mi = M + (size_t)i * HS;
            float *dMi = dM + (size_t)i * HS, acc = dd * z[i];
            const float w = pk[i];
            for (int j = 0; j < HS; j++) {
                acc += Mi[j] * r[j];
                dMi[j] += w * r[j];
            }
            dpk[i] += acc;
            dz[i] += dd * w;
        }
    }
    for (int i = 0; i < HS; i++) dk[i] += dpk[i] * dphi(kt[i]);
}

/* The read-out of one token, backward (segments s >= 1): o = g A_mem + (1 - g) A_dot with
 * A_mem = pq M / den'. Adds to dq, dM, dz; returns this token's share of dbeta. */
static double read_bwd(float *restrict dq, float *restrict dM, float *restrict dz,
                       const float *qt, const float *dA, const float *ad, const float *M,
                       const float *z, float g, int HS)
{
    float am[HS_MAX], pq[HS_MAX], dn[HS_MAX];
    const float den = mem_read(am, pq, qt, M, z, HS);
    const float dc = den > MNI_INF_DEN_EPS ? den : MNI_INF_DEN_EPS, inv = 1.0f / dc;
    double db = 0.0;
    float dd = 0.0f;
    for (int j = 0; j < HS; j++) {
        db += (double)dA[j] * (am[j] - ad[j]);
        const float dam = g * dA[j];
        dd += dam * am[j];
        dn[j] = dam * inv;
    }
    dd = den > MNI_INF_DEN_EPS ? -dd * inv : 0.0f;
    for (int i = 0; i < HS; i++) {
        const float *Mi = M + (size_t)i * HS;
        float *dMi = dM + (size_t)i * HS, acc = dd * z[i];
        const float w = pq[i];
        for (int j = 0; j < HS; j++) {
            acc += Mi[j] * dn[j];
            dMi[j] += w * dn[j];
        }
        dz[i] += dd * w;
        dq[i] += acc * dphi(qt[i]);
    }
    return db * (double)g * (1.0 - (double)g);
}

static enum mnemo_status inf_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    enum mnemo_status st = check_io(cfg, io, 1);
    if (st != MNEMO_OK) return st;
    if (cfg->use_ref) return mni_inf_ref_backward(cfg, io);

    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    const int delta = cfg->mem_update == MNEMO_MEM_DELTA;
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS;
    struct inf_lay lay;
    inf_layout(&lay, cfg, B, T);
    char *act = io->act, *scr = io->scratch;
    const float *adot = (const float *)(act + lay.adot); // (B,T,NH,HS)
    const float *Ms = (const float *)(act + lay.M);      // (B,NH,S,HS,HS)
    const float *zs = (const float *)(act + lay.z);      // (B,NH,S,HS)
    float *dadot = (float *)scr;                          // (B,T,NH,HS)
    float *carry = (float *)(scr + lay.carry);            // (B,NH,2,HS*HS+HS)
    double *dbeta = (double *)(scr + lay.dbeta);          // (B,NH)

    // A = g A_mem + (1 - g) A_dot (A_dot alone in segment 0): dA_dot
#pragma omp parallel for schedule(static)
    for (long row = 0; row < (long)B * T; row++) {
        const int s = (int)(row % T) / N;
        for (int h = 0; h < NH; h++) {
            const float w = s == 0 ? 1.0f : 1.0f - gate_of(io->params[h]);
            const float *g = io->dout + (size_t)row * C + (size_t)h * HS;
            float *d = dadot + (size_t)row * C + (size_t)h * HS;
            for (int j = 0; j < HS; j++) d[j] = w * g[j];
        }
    }
    // the local attention's backward writes every row of dqkv
    if ((st = run_local(cfg, io, (float *)adot, dadot, scr + lay.dense, 1)) != MNEMO_OK) return st;
    // the memory path, segments in reverse, adding to the rows of dqkv
#pragma omp parallel for schedule(dynamic, 1)
    for (long bh = 0; bh < (long)B * NH; bh++) {
        const int b = (int)(bh / NH), h = (int)(bh % NH);
        const float g = gate_of(io->params[h]);
        const float *Mh = Ms + (size_t)bh * S * HH, *zh = zs + (size_t)bh * S * HS;
        float *dMn = carry + (size_t)bh * 2 * (HH + HS), *dzn = dMn + HH;
        float *dM = dzn + HS, *dz = dM + HH;
        double db = 0.0;
        memset(dMn, 0, sizeof(float) * (HH + HS)); // nothing reads the memory after the window
        for (int s = S - 1; s >= 0; s--) {
            const int t0 = s * N, n = T - t0 < N ? T - t0 : N;
            const float *M = Mh + (size_t)s * HH, *z = zh + (size_t)s * HS;
            memcpy(dM, dMn, sizeof(float) * (HH + HS)); // M_{s+1} = M_s + ...: identity path
            for (int t = t0; t < t0 + n; t++) {
                const size_t row = (size_t)b * T + t;
                const float *x = io->qkv + row * 3 * C + (size_t)h * HS;
                float *dx = io->dqkv + row * 3 * C + (size_t)h * HS;
                if (s + 1 < S)
                    fold_bwd(dx + C, dx + 2 * C, dM, dz, x + C, x + 2 * C, M, z, dMn, dzn, HS,
                             delta && s > 0);
                if (s > 0)
                    db += read_bwd(dx, dM, dz, x, io->dout + row * C + (size_t)h * HS,
                                   adot + row * C + (size_t)h * HS, M, z, g, HS);
            }
            float *t = dMn;
            dMn = dM, dM = t;
            dzn = dMn + HH, dz = dM + HH;
        }
        dbeta[bh] = db;
    }
    for (int h = 0; h < NH; h++) {
        double sum = 0.0;
        for (int b = 0; b < B; b++) sum += dbeta[(size_t)b * NH + h];
        io->dparams[h] += (float)sum;
    }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

static size_t hdr_bytes(void) { return mni_align64(sizeof(struct mni_inf_state)); }

/* Bytes of M, z and of one of the segment's k, v sections. */
static void state_sizes(const struct mnemo_attn_cfg *cfg, size_t *m, size_t *z, size_t *seg)
{
    const size_t NH = (size_t)cfg->n_head, HS = (size_t)cfg->head_dim;
    *m = mni_align64(mni_mul(mni_mul(NH, HS * HS), sizeof(float)));
    *z = mni_align64(mni_mul(NH * HS, sizeof(float)));
    *seg = mni_align64(mni_mul(mni_mul(NH * HS, (size_t)mni_inf_segment(cfg)), sizeof(float)));
}

void mni_inf_state_view(const struct mnemo_attn_cfg *cfg, void *state, struct mni_inf_view *vw)
{
    size_t m, z, seg;
    state_sizes(cfg, &m, &z, &seg);
    char *p = (char *)state;
    vw->hdr = state;
    vw->M = (float *)(p + hdr_bytes());
    vw->z = (float *)(p + hdr_bytes() + m);
    vw->k = (float *)(p + hdr_bytes() + m + z);
    vw->v = (float *)(p + hdr_bytes() + m + z + seg);
    vw->dense = p + hdr_bytes() + m + z + 2 * seg;
}

/* The bound: M, z, one segment of k and v, and the dense state of one segment. */
static size_t inf_state_bytes(const struct mnemo_attn_cfg *cfg)
{
    size_t m, z, seg;
    state_sizes(cfg, &m, &z, &seg);
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    return mni_add(mni_add(mni_add(hdr_bytes(), m), mni_add(z, mni_mul(2, seg))),
                   mni_attn_dense.state_bytes(&d));
}

static void inf_state_init(const struct mnemo_attn_cfg *cfg, void *state)
{
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, state, &vw);
    vw.hdr->count = vw.hdr->in_seg = vw.hdr->n_seg = 0;
    vw.hdr->segment = mni_inf_segment(cfg);
    memset(vw.M, 0, sizeof(float) * (size_t)cfg->n_head * cfg->head_dim * cfg->head_dim);
    memset(vw.z, 0, sizeof(float) * (size_t)cfg->n_head * cfg->head_dim);
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    mni_attn_dense.state_init(&d, vw.dense);
}

/* Header, M, z and the tokens of the current segment (its k, v and the dense cache's rows). */
static size_t inf_state_live_bytes(const struct mnemo_attn_cfg *cfg, const void *state)
{
    size_t m, z, seg;
    state_sizes(cfg, &m, &z, &seg);
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, (void *)state, &vw);
    return mni_add(mni_add(mni_add(hdr_bytes(), m), z),
                   mni_add(mni_mul((size_t)vw.hdr->in_seg,
                                   2 * (size_t)cfg->n_head * cfg->head_dim * sizeof(float)),
                           mni_attn_dense.state_live_bytes(&d, vw.dense)));
}

/* Step scratch: adot (n,NH,HS), the folded memory (NH,HS*HS+HS), then the dense step's. */
static void step_layout(const struct mnemo_attn_cfg *cfg, int n, size_t *mn, size_t *dense)
{
    const size_t NH = (size_t)cfg->n_head, HS = (size_t)cfg->head_dim;
    *mn = mni_align64(mni_mul(mni_mul((size_t)n, NH * HS), sizeof(float)));
    *dense = mni_add(*mn, mni_align64(mni_mul(NH, mni_mul(HS * HS + HS, sizeof(float)))));
}

static size_t inf_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    if (n < 1) n = 1;
    if (cfg->use_ref) return mni_inf_ref_step_scratch_bytes(cfg, n);
    const int N = mni_inf_segment(cfg);
    size_t mn, dense;
    step_layout(cfg, n, &mn, &dense);
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    return mni_add(dense, mni_attn_dense.step_scratch_bytes(&d, n < N ? n : N));
}

/* Feeds n tokens: each piece that stays inside the current segment attends locally through the
 * dense state (positions within the segment), reads the memory of the earlier segments, and
 * when the segment is complete it is folded into the memory and a new one begins. */
static enum mnemo_status inf_step(const struct mnemo_attn_cfg *cfg, void *state,
                                  const float *params, float *out, const float *qkv, int n,
                                  void *scratch)
{
    enum mnemo_status rc = inf_validate(cfg);
    if (rc != MNEMO_OK) return rc;
    if (!state || !params || !out || !qkv || !scratch)
        return mni_err(MNEMO_ERR_ARG, "infini: step needs state, params, out, qkv and scratch");
    if (n < 1) return mni_err(MNEMO_ERR_ARG, "infini: step needs n >= 1 tokens, got %d", n);
    const int N = mni_inf_segment(cfg), NH = cfg->n_head, HS = cfg->head_dim;
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, state, &vw);
    struct mni_inf_state *hd = vw.hdr;
    if (hd->segment != N || hd->in_seg < 0 || hd->in_seg >= N || hd->n_seg < 0 || hd->count < 0)
        return mni_err(MNEMO_ERR_ARG, "infini: state not initialised for this cfg (segment %lld vs %d)",
                       (long long)hd->segment, N);
    if (cfg->use_ref) {
        mni_inf_ref_step(cfg, state, params, out, qkv, n, scratch);
        return MNEMO_OK;
    }
    const int delta = cfg->mem_update == MNEMO_MEM_DELTA;
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS, SN = (size_t)N * HS;
    size_t off_mn, off_dense;
    step_layout(cfg, n, &off_mn, &off_dense);
    float *adot = scratch;                                    // (n,NH,HS)
    float *Mn = (float *)((char *)scratch + off_mn);          // (NH,HS*HS+HS)
    void *dscr = (char *)scratch + off_dense;
    struct mnemo_attn_cfg d;
    mni_inf_dense_cfg(&d, cfg);
    for (int t = 0; t < n;) {
        const int piece = n - t < N - (int)hd->in_seg ? n - t : N - (int)hd->in_seg;
        rc = mni_attn_dense.step(&d, vw.dense, NULL, adot + (size_t)t * C, qkv + (size_t)t * 3 * C,
                                 piece, dscr);
        if (rc != MNEMO_OK) return rc;
        for (int i = 0; i < piece; i++) {
            const float *x = qkv + (size_t)(t + i) * 3 * C;
            const size_t slot = (size_t)hd->in_seg + i;
            for (int h = 0; h < NH; h++) {
                memcpy(vw.k + h * SN + slot * HS, x + C + (size_t)h * HS, sizeof(float) * HS);
                memcpy(vw.v + h * SN + slot * HS, x + 2 * C + (size_t)h * HS, sizeof(float) * HS);
                float *o = out + (size_t)(t + i) * C + (size_t)h * HS;
                const float *ad = adot + (size_t)(t + i) * C + (size_t)h * HS;
                if (hd->n_seg == 0) {
                    memcpy(o, ad, sizeof(float) * HS);
                } else {
                    float am[HS_MAX], pq[HS_MAX];
                    mem_read(am, pq, x + (size_t)h * HS, vw.M + h * HH, vw.z + (size_t)h * HS, HS);
                    mix(o, am, ad, gate_of(params[h]), HS);
                }
            }
        }
        hd->in_seg += piece;
        hd->count += piece;
        t += piece;
        if (hd->in_seg == N) {
            // the segment is complete: into the memory, and start the next one
            for (int h = 0; h < NH; h++) {
                float *mh = Mn + (size_t)h * (HH + HS);
                mem_fold(mh, mh + HH, vw.M + h * HH, vw.z + (size_t)h * HS, vw.k + h * SN,
                         (size_t)HS, vw.v + h * SN, (size_t)HS, N, HS, delta && hd->n_seg > 0);
                memcpy(vw.M + h * HH, mh, sizeof(float) * HH);
                memcpy(vw.z + (size_t)h * HS, mh + HH, sizeof(float) * HS);
            }
            hd->n_seg++;
            hd->in_seg = 0;
            mni_attn_dense.state_init(&d, vw.dense);
        }
    }
    return MNEMO_OK;
}

const struct mnemo_attn_ops mni_attn_infini = {
    .api_version = MNEMO_ATTN_API_VERSION,
    .name = "infini",
    .validate = inf_validate,
    .n_params = inf_n_params,
    .act_bytes = inf_act_bytes,
    .scratch_bytes = inf_scratch_bytes,
    .forward = inf_forward,
    .backward = inf_backward,
    .state_bytes = inf_state_bytes,
    .step_scratch_bytes = inf_step_scratch_bytes,
    .state_init = inf_state_init,
    .step = inf_step,
    .state_live_bytes = inf_state_live_bytes,
};
