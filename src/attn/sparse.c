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
 * Forward (FlashAttention-2 over gathered tiles): a task owns a block of up to QB queries of one
 * head (in the pattern's query order, never across one of its groups) and walks the tiles of up
 * to KB keys the pattern lists for it: K^T and V of the tile are gathered from the head's rows,
 * S = Q K^T (mni_mm), the pattern's mask sets disallowed pairs to -inf, and the running max m,
 * denominator l and unnormalised output O are updated (O rescaled by 2^(m_old - m_new)). The
 * queries are pre-scaled by log2(e)/sqrt(HS), so scores are in log2 units and only 2^x is
 * needed; forward saves the rotated q, k, v per head and lse (log2) of every row.
 * Backward: one task per (window, head) walks the same blocks and tiles, recomputes
 * P = 2^(S - lse), dP = dO V^T, dS = P (dP - D) with D_i = dO_i . o_i, and adds dq = dS K,
 * dk = dS^T Q, dv = P^T dO into the head's accumulators (in scratch), in a fixed order: the
 * results are deterministic for any thread count. Then q, k gradients are rotated back.
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
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "kern/vmath.h"
#include "mni.h"

#define QB 48      /* queries per block (a multiple of mni_mm's 6 rows) */
#define KB 64      /* keys per tile */
#define HS_MAX 256 /* largest head_dim (the stack tiles are sized for it) */

/* ---- layouts ------------------------------------------------------------------------------- */

/* Saved activations, 64-byte aligned sections: q, k, v (B,NH,T,HS) rotated (q pre-scaled),
 * lse (B,NH,T) in log2 units, cs (T,HS/2,2) the RoPE table (empty without RoPE). */
struct act_lay {
    size_t q, k, v, lse, cs, total;
};

static void act_layout(struct act_lay *l, const struct mnemo_attn_cfg *cfg, int B, int T)
{
    const size_t rows = mni_mul(mni_mul((size_t)B, (size_t)cfg->n_head), (size_t)T);
    const size_t head = mni_align64(mni_mul(mni_mul(rows, (size_t)cfg->head_dim), sizeof(float)));
    l->q = 0;
    l->k = head;
    l->v = mni_mul(2, head);
    l->lse = mni_mul(3, head);
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

/* Scratch: each head's query order and group starts (NH x (2T + 1) ints); for backward, then
 * dq, dk, dv accumulators (B,NH,T,HS) each and D (B,NH,T). */
struct scr_lay {
    size_t order, dq, dk, dv, D, total;
};

static void scr_layout(struct scr_lay *l, const struct mnemo_attn_cfg *cfg, int B, int T)
{
    const size_t NH = (size_t)cfg->n_head;
    const size_t rows = mni_mul(mni_mul((size_t)B, NH), (size_t)T);
    const size_t head = mni_align64(mni_mul(mni_mul(rows, (size_t)cfg->head_dim), sizeof(float)));
    l->order = 0;
    l->dq = mni_align64(mni_mul(mni_mul(NH, mni_add(mni_mul(2, (size_t)T), 1)), sizeof(int)));
    l->dk = mni_add(l->dq, head);
    l->dv = mni_add(l->dk, head);
    l->D = mni_add(l->dv, head);
    l->total = mni_add(l->D, mni_align64(mni_mul(rows, sizeof(float))));
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

/* The number of query blocks of a head's order: each group cut into blocks of QB. */
static int n_blocks(const int *gstart, int ng)
{
    int n = 0;
    for (int g = 0; g < ng; g++) n += (gstart[g + 1] - gstart[g] + QB - 1) / QB;
    return n;
}

/* Block i of a head's order: *first (index into perm) and its length. */
static int block_at(const int *gstart, int ng, int i, int *first)
{
    for (int g = 0; g < ng; g++) {
        const int len = gstart[g + 1] - gstart[g], nb = (len + QB - 1) / QB;
        if (i < nb) {
            *first = gstart[g] + i * QB;
            return len - i * QB < QB ? len - i * QB : QB;
        }
        i -= nb;
    }
    return 0;
}

/* dst (HS) = rot(src) * scale; cs_row NULL: no rotation. */
static void load_row(float *dst, const float *src, const float *cs_row, int HS, float scale)
{
    memcpy(dst, src, sizeof(float) * (size_t)HS);
    if (cs_row) mni_rope_apply(dst, cs_row, HS, +1);
    if (scale != 1.0f)
        for (int d = 0; d < HS; d++) dst[d] *= scale;
}

/* The keys of one tile: Kt (HS, KB) = K[keys]^T with the columns from n up to n8 (n rounded up
 * to 8) zero, so that the products run on the vector path; V (KB, HS) = V[keys] when V given. */
static void gather_tile(float *Kt, float *Vt, const float *K, const float *V, const int *keys,
                        int n, int n8, int HS)
{
    for (int d = 0; d < HS; d++) {
        float *row = Kt + (size_t)d * KB;
        for (int c = 0; c < n; c++) row[c] = K[(size_t)keys[c] * HS + d];
        for (int c = n; c < n8; c++) row[c] = 0.0f;
    }
    for (int c = 0; V && c < n; c++) memcpy(Vt + (size_t)c * HS, V + (size_t)keys[c] * HS, sizeof(float) * HS);
}

/* 2^x over a row of n values (in place), returning their sum. */
static float exp2_row(float *x, int n, float sub)
{
    float sum = 0.0f;
    int j = 0;
#if MNI_HAVE_AVX2
    __m256 acc = _mm256_setzero_ps();
    const __m256 vs = _mm256_set1_ps(sub);
    for (; j + 8 <= n; j += 8) {
        __m256 p = mni_exp2_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vs));
        _mm256_storeu_ps(x + j, p);
        acc = _mm256_add_ps(acc, p);
    }
    float t[8];
    _mm256_storeu_ps(t, acc);
    for (int i = 0; i < 8; i++) sum += t[i];
#endif
    for (; j < n; j++) {
        x[j] = mni_exp2f(x[j] - sub);
        sum += x[j];
    }
    return sum;
}

/* ---- forward ------------------------------------------------------------------------------- */

/* One block of nq queries (positions qpos) of one head: out rows (stride ldo) and lse. */
static void fwd_block(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                      int h, const int *qpos, int nq, const float *Qh, const float *Kh,
                      const float *Vh, float *out, size_t ldo, float *lse)
{
    const int HS = cfg->head_dim;
    float Qt[QB * HS_MAX], Kt[HS_MAX * KB], Vt[KB * HS_MAX], S[QB * KB], O[QB * HS_MAX];
    float m[QB], l[QB];
    int keys[KB];
    for (int r = 0; r < nq; r++) {
        memcpy(Qt + (size_t)r * HS, Qh + (size_t)qpos[r] * HS, sizeof(float) * HS);
        m[r] = -INFINITY;
        l[r] = 0.0f;
    }
    memset(O, 0, sizeof(float) * (size_t)nq * HS);
    int cursor = 0, n;
    while ((n = p->next_keys(cfg, layer, h, qpos, nq, &cursor, keys, KB)) > 0) {
        const int n8 = (n + 7) & ~7;
        gather_tile(Kt, Vt, Kh, Vh, keys, n, n8, HS);
        mni_mm(S, KB, Qt, (size_t)HS, 1, Kt, KB, nq, HS, n8, NULL, 1.0f, 0);
        p->mask(cfg, layer, h, qpos, nq, keys, n, S, KB);
        for (int r = 0; r < nq; r++) {
            float *s = S + (size_t)r * KB, mx = m[r];
            for (int c = 0; c < n; c++) mx = s[c] > mx ? s[c] : mx;
            if (mx == -INFINITY) { /* nothing allowed in this tile yet */
                memset(s, 0, sizeof(float) * (size_t)n8);
                continue;
            }
            const float alpha = mni_exp2f(m[r] - mx); /* 0 when m was -inf */
            l[r] = alpha * l[r] + exp2_row(s, n, mx);
            for (int c = n; c < n8; c++) s[c] = 0.0f;
            m[r] = mx;
            if (alpha != 1.0f)
                for (int d = 0; d < HS; d++) O[(size_t)r * HS + d] *= alpha;
        }
        mni_mm(O, (size_t)HS, S, KB, 1, Vt, (size_t)HS, nq, n8, HS, NULL, 1.0f, 1);
    }
    for (int r = 0; r < nq; r++) {
        const float il = 1.0f / l[r];
        float *o = out + (size_t)qpos[r] * ldo;
        for (int d = 0; d < HS; d++) o[d] = O[(size_t)r * HS + d] * il;
        lse[qpos[r]] = m[r] + log2f(l[r]);
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

/* Every head's query order into scratch; returns the ints of one head's record (2T + 1). */
static void orders(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                   int T, int *ord, int *ng)
{
    for (int h = 0; h < cfg->n_head; h++) {
        int *perm = ord + (size_t)h * (2 * (size_t)T + 1);
        ng[h] = query_order(p, cfg, layer, h, T, perm, perm + T);
    }
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
    char *act = io->act;
    float *aq = (float *)(act + al.q), *ak = (float *)(act + al.k), *av = (float *)(act + al.v);
    float *alse = (float *)(act + al.lse), *cs = cfg->rope ? (float *)(act + al.cs) : NULL;
    int *ord = (int *)((char *)io->scratch + sl.order), ng[1024];
    if (NH > 1024) return mni_err(MNEMO_ERR_ARG, "sparse attention: at most 1024 heads");
    const float qscale = (float)(MNI_LOG2E / sqrt((double)HS));
    if (cs) mni_rope_table(cs, T, HS, cfg->rope_theta);
#pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        const int b = (int)(bt / T), t = (int)(bt % T);
        const float *x = io->qkv + (size_t)bt * 3 * C;
        const float *csr = cs ? cs + (size_t)t * HS : NULL;
        for (int h = 0; h < NH; h++) {
            const size_t r = (((size_t)b * NH + h) * T + t) * HS;
            load_row(aq + r, x + (size_t)h * HS, csr, HS, qscale);
            load_row(ak + r, x + C + (size_t)h * HS, csr, HS, 1.0f);
            memcpy(av + r, x + 2 * C + (size_t)h * HS, sizeof(float) * HS);
        }
    }
    orders(p, cfg, io->layer, T, ord, ng);
    int nbh = 0; /* blocks per head, the largest (heads of one kind may differ) */
    for (int h = 0; h < NH; h++) {
        const int *perm = ord + (size_t)h * (2 * (size_t)T + 1);
        const int n = n_blocks(perm + T, ng[h]);
        nbh = n > nbh ? n : nbh;
    }
    const long ntask = (long)B * NH * nbh;
#pragma omp parallel for schedule(dynamic, 1)
    for (long task = 0; task < ntask; task++) {
        const int i = (int)(task % nbh), h = (int)(task / nbh % NH), b = (int)(task / nbh / NH);
        const int *perm = ord + (size_t)h * (2 * (size_t)T + 1);
        int first = 0;
        const int nq = block_at(perm + T, ng[h], i, &first);
        if (nq == 0) continue;
        const size_t head = ((size_t)b * NH + h) * T;
        fwd_block(p, cfg, io->layer, h, perm + first, nq, aq + head * HS, ak + head * HS,
                  av + head * HS, io->out + (size_t)b * T * C + (size_t)h * HS, C, alse + head);
    }
    return MNEMO_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

/* One block's share of the gradients of one head: dq of the block's queries stored into dQ
 * (rows by position; each query is in one block), dk and dv of the keys its tiles list added
 * into dK, dV (T,HS). dO is read from its rows (stride ldo). */
static void bwd_block(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                      int h, const int *qpos, int nq, const float *Qh, const float *Kh,
                      const float *Vh, const float *lse, const float *Dh, const float *dO,
                      size_t ldo, float *dQ, float *dK, float *dV)
{
    const int HS = cfg->head_dim;
    float Qt[QB * HS_MAX], dOt[QB * HS_MAX], Kt[HS_MAX * KB], Vt[HS_MAX * KB], Kr[KB * HS_MAX];
    float P[QB * KB], dS[QB * KB], dq[QB * HS_MAX], tile[KB * HS_MAX];
    int keys[KB];
    for (int r = 0; r < nq; r++) {
        memcpy(Qt + (size_t)r * HS, Qh + (size_t)qpos[r] * HS, sizeof(float) * HS);
        memcpy(dOt + (size_t)r * HS, dO + (size_t)qpos[r] * ldo, sizeof(float) * HS);
    }
    memset(dq, 0, sizeof(float) * (size_t)nq * HS);
    const float inv_log2e = (float)(1.0 / MNI_LOG2E);
    int cursor = 0, n;
    while ((n = p->next_keys(cfg, layer, h, qpos, nq, &cursor, keys, KB)) > 0) {
        const int n8 = (n + 7) & ~7;
        gather_tile(Kt, NULL, Kh, NULL, keys, n, n8, HS);
        gather_tile(Vt, NULL, Vh, NULL, keys, n, n8, HS); /* V^T, laid out as K^T */
        for (int c = 0; c < n; c++)
            memcpy(Kr + (size_t)c * HS, Kh + (size_t)keys[c] * HS, sizeof(float) * HS);
        for (int c = n; c < n8; c++) memset(Kr + (size_t)c * HS, 0, sizeof(float) * HS);
        /* P = 2^(S - lse) where allowed (0 where masked), dP = dO V^T, dS = P (dP - D) */
        mni_mm(P, KB, Qt, (size_t)HS, 1, Kt, KB, nq, HS, n8, NULL, 1.0f, 0);
        p->mask(cfg, layer, h, qpos, nq, keys, n, P, KB);
        mni_mm(dS, KB, dOt, (size_t)HS, 1, Vt, KB, nq, HS, n8, NULL, 1.0f, 0);
        for (int r = 0; r < nq; r++) {
            float *pr = P + (size_t)r * KB, *ds = dS + (size_t)r * KB;
            const float L = lse[qpos[r]], D = Dh[qpos[r]];
            for (int c = 0; c < n; c++) {
                pr[c] = mni_exp2f(pr[c] - L);
                ds[c] = pr[c] * (ds[c] - D);
            }
            for (int c = n; c < n8; c++) pr[c] = ds[c] = 0.0f;
        }
        /* s = q.k / sqrt(HS) with q stored times log2(e)/sqrt(HS):
         * dq = dS K / sqrt(HS) (scaled at the end), dk = dS^T q_stored / log2(e), dv = P^T dO */
        mni_mm(dq, (size_t)HS, dS, KB, 1, Kr, (size_t)HS, nq, n8, HS, NULL, 1.0f, 1);
        mni_mm(tile, (size_t)HS, dS, 1, KB, Qt, (size_t)HS, n, nq, HS, NULL, inv_log2e, 0);
        for (int c = 0; c < n; c++) {
            float *d = dK + (size_t)keys[c] * HS;
            for (int e = 0; e < HS; e++) d[e] += tile[(size_t)c * HS + e];
        }
        mni_mm(tile, (size_t)HS, P, 1, KB, dOt, (size_t)HS, n, nq, HS, NULL, 1.0f, 0);
        for (int c = 0; c < n; c++) {
            float *d = dV + (size_t)keys[c] * HS;
            for (int e = 0; e < HS; e++) d[e] += tile[(size_t)c * HS + e];
        }
    }
    const float qs = (float)(1.0 / sqrt((double)HS));
    for (int r = 0; r < nq; r++) {
        float *d = dQ + (size_t)qpos[r] * HS;
        for (int e = 0; e < HS; e++) d[e] = dq[(size_t)r * HS + e] * qs;
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
    const char *act = io->act;
    char *scr = io->scratch;
    const float *aq = (const float *)(act + al.q), *ak = (const float *)(act + al.k);
    const float *av = (const float *)(act + al.v), *alse = (const float *)(act + al.lse);
    const float *cs = cfg->rope ? (const float *)(act + al.cs) : NULL;
    int *ord = (int *)(scr + sl.order), ng[1024];
    float *dQ = (float *)(scr + sl.dq), *dK = (float *)(scr + sl.dk), *dV = (float *)(scr + sl.dv);
    float *Dv = (float *)(scr + sl.D);
    if (NH > 1024) return mni_err(MNEMO_ERR_ARG, "sparse attention: at most 1024 heads");
    /* D_i = dO_i . o_i, the softmax backward's row term */
#pragma omp parallel for schedule(static)
    for (long bt = 0; bt < (long)B * T; bt++) {
        const int b = (int)(bt / T), t = (int)(bt % T);
        for (int h = 0; h < NH; h++) {
            const float *g = io->dout + (size_t)bt * C + (size_t)h * HS;
            const float *o = io->out + (size_t)bt * C + (size_t)h * HS;
            double D = 0;
            for (int d = 0; d < HS; d++) D += (double)g[d] * o[d];
            Dv[((size_t)b * NH + h) * T + t] = (float)D;
        }
    }
    orders(p, cfg, io->layer, T, ord, ng);
    /* one task per (window, head): its blocks in order, so that the sums into dk and dv have
     * one writer and a fixed order */
#pragma omp parallel for schedule(dynamic, 1)
    for (long bh = 0; bh < (long)B * NH; bh++) {
        const int b = (int)(bh / NH), h = (int)(bh % NH);
        const size_t head = (size_t)bh * T;
        const int *perm = ord + (size_t)h * (2 * (size_t)T + 1);
        float *dq = dQ + head * HS, *dk = dK + head * HS, *dv = dV + head * HS;
        memset(dk, 0, sizeof(float) * (size_t)T * HS);
        memset(dv, 0, sizeof(float) * (size_t)T * HS);
        const float *dO = io->dout + (size_t)b * T * C + (size_t)h * HS; /* row t at t*C */
        for (int i = 0, nb = n_blocks(perm + T, ng[h]); i < nb; i++) {
            int first = 0;
            const int nq = block_at(perm + T, ng[h], i, &first);
            bwd_block(p, cfg, io->layer, h, perm + first, nq, aq + head * HS, ak + head * HS,
                      av + head * HS, alse + head, Dv + head, dO, C, dq, dk, dv);
        }
        /* rotate dq, dk back to the unrotated inputs, write the head's slices of dqkv */
        for (int t = 0; t < T; t++) {
            float *row = io->dqkv + ((size_t)b * T + t) * 3 * C + (size_t)h * HS;
            float *q = dq + (size_t)t * HS, *k = dk + (size_t)t * HS;
            if (cs) {
                mni_rope_apply(q, cs + (size_t)t * HS, HS, -1);
                mni_rope_apply(k, cs + (size_t)t * HS, HS, -1);
            }
            memcpy(row, q, sizeof(float) * HS);
            memcpy(row + C, k, sizeof(float) * HS);
            memcpy(row + 2 * C, dv + (size_t)t * HS, sizeof(float) * HS);
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
