/*
 * sparse_ref.c -- the naive reference of the sparse-pattern kinds (window, block, strided,
 * longformer, bigbird): for each (window, head, query i), the scores of every key j <= i in
 * double, the pattern's mask as the definition of which j are allowed (asked about all of
 * them, a row at a time: the fast path's key iterator is not used, so a key it fails to list
 * shows up as a difference), then a plain softmax:
 *     s_ij = q_i . k_j / sqrt(HS),  P_ij = exp(s_ij - lse_i) (allowed j),  o_i = sum_j P_ij v_j;
 * backward from the definition: dv_j = sum_i P_ij dO_i, dP_ij = dO_i . v_j,
 * dS_ij = P_ij (dP_ij - D_i) with D_i = sum_j P_ij dP_ij, dq_i = sum_j dS_ij k_j / sqrt(HS),
 * dk_j = sum_i dS_ij q_i / sqrt(HS), rotated back. O(T^2) per head: tests only.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "mni.h"

#define CHUNK 64 /* keys asked of the mask at a time */

/* Per head (doubles): rq, rk, v, dq, dk, dv (T,HS); a row of scores and of dP (T); then the
 * mask's row (CHUNK floats) and keys (CHUNK ints). */
size_t mni_sparse_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    (void)B;
    const size_t TH = mni_mul((size_t)T, (size_t)cfg->head_dim);
    return mni_add(mni_mul(mni_add(mni_mul(6, TH), mni_mul(2, (size_t)T)), sizeof(double)),
                   2 * CHUNK * sizeof(float));
}

/* allowed[j] (j = 0..i) for query i of head h: 1 where the pattern allows the pair. */
static void allowed_row(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                        int h, int i, float *mrow, int *keys, unsigned char *allowed)
{
    for (int j0 = 0; j0 <= i; j0 += CHUNK) {
        const int n = i + 1 - j0 < CHUNK ? i + 1 - j0 : CHUNK;
        for (int c = 0; c < n; c++) keys[c] = j0 + c, mrow[c] = 0.0f;
        p->mask(cfg, layer, h, &i, 1, keys, n, mrow, CHUNK);
        for (int c = 0; c < n; c++) allowed[j0 + c] = mrow[c] == 0.0f;
    }
}

struct rbuf {
    double *rq, *rk, *v, *dq, *dk, *dv, *s, *dp;
    float *mrow;
    int *keys;
};

static void carve(struct rbuf *r, const struct mnemo_attn_cfg *cfg, int T, void *scratch)
{
    const size_t TH = (size_t)T * cfg->head_dim;
    double *d = scratch;
    r->rq = d, r->rk = d + TH, r->v = d + 2 * TH, r->dq = d + 3 * TH, r->dk = d + 4 * TH;
    r->dv = d + 5 * TH, r->s = d + 6 * TH, r->dp = r->s + T;
    r->mrow = (float *)(r->dp + T);
    r->keys = (int *)(r->mrow + CHUNK);
}

/* Loads head h of window b: rotated q, k and v in double. */
static void load_head(struct rbuf *r, const struct mnemo_attn_cfg *cfg, const float *qkv, int T,
                      int h)
{
    const int HS = cfg->head_dim;
    const size_t C = (size_t)cfg->n_head * HS;
    for (int t = 0; t < T; t++) {
        const float *x = qkv + (size_t)t * 3 * C + (size_t)h * HS;
        double *q = r->rq + (size_t)t * HS, *k = r->rk + (size_t)t * HS;
        for (int d = 0; d < HS; d++) q[d] = x[d], k[d] = x[C + d], r->v[(size_t)t * HS + d] = x[2 * C + d];
        if (cfg->rope) {
            mni_rope_apply_d(q, t, HS, cfg->rope_theta, +1);
            mni_rope_apply_d(k, t, HS, cfg->rope_theta, +1);
        }
    }
}

/* Row i's probabilities into r->s[0..i] (0 where not allowed). */
static void probs(struct rbuf *r, const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                  int layer, int h, int i, unsigned char *allowed)
{
    const int HS = cfg->head_dim;
    const double scale = 1.0 / sqrt((double)HS);
    allowed_row(p, cfg, layer, h, i, r->mrow, r->keys, allowed);
    double m = -INFINITY, l = 0;
    for (int j = 0; j <= i; j++) {
        double s = 0;
        for (int d = 0; d < HS; d++) s += r->rq[(size_t)i * HS + d] * r->rk[(size_t)j * HS + d];
        r->s[j] = s * scale;
        if (allowed[j] && r->s[j] > m) m = r->s[j];
    }
    for (int j = 0; j <= i; j++) {
        r->s[j] = allowed[j] ? exp(r->s[j] - m) : 0.0;
        l += r->s[j];
    }
    for (int j = 0; j <= i; j++) r->s[j] /= l;
}

enum mnemo_status mni_sparse_ref_forward(const struct mni_pattern *p,
                                         const struct mnemo_attn_cfg *cfg,
                                         struct mnemo_attn_io *io)
{
    const int T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    struct rbuf r;
    carve(&r, cfg, T, io->scratch);
    unsigned char *allowed = (unsigned char *)r.dq; /* free during forward */
    io->aux_loss = 0;
    for (int b = 0; b < io->B; b++)
        for (int h = 0; h < NH; h++) {
            load_head(&r, cfg, io->qkv + (size_t)b * T * 3 * C, T, h);
            for (int i = 0; i < T; i++) {
                probs(&r, p, cfg, io->layer, h, i, allowed);
                float *o = io->out + ((size_t)b * T + i) * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++) acc += r.s[j] * r.v[(size_t)j * HS + d];
                    o[d] = (float)acc;
                }
            }
        }
    return MNEMO_OK;
}

enum mnemo_status mni_sparse_ref_backward(const struct mni_pattern *p,
                                          const struct mnemo_attn_cfg *cfg,
                                          struct mnemo_attn_io *io)
{
    const int T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS, TH = (size_t)T * HS;
    const double scale = 1.0 / sqrt((double)HS);
    struct rbuf r;
    carve(&r, cfg, T, io->scratch);
    for (int b = 0; b < io->B; b++)
        for (int h = 0; h < NH; h++) {
            load_head(&r, cfg, io->qkv + (size_t)b * T * 3 * C, T, h);
            memset(r.dq, 0, sizeof(double) * TH);
            memset(r.dk, 0, sizeof(double) * TH);
            memset(r.dv, 0, sizeof(double) * TH);
            for (int i = 0; i < T; i++) {
                /* the row's flags in the dP row, which probs() is done with before dP is made */
                probs(&r, p, cfg, io->layer, h, i, (unsigned char *)r.dp);
                const float *g = io->dout + ((size_t)b * T + i) * C + (size_t)h * HS;
                double D = 0;
                for (int j = 0; j <= i; j++) {
                    double dp = 0;
                    for (int d = 0; d < HS; d++) dp += (double)g[d] * r.v[(size_t)j * HS + d];
                    r.dp[j] = dp;
                    D += r.s[j] * dp;
                }
                for (int j = 0; j <= i; j++) {
                    const double P = r.s[j], dS = P * (r.dp[j] - D);
                    for (int d = 0; d < HS; d++) {
                        r.dv[(size_t)j * HS + d] += P * g[d];
                        r.dq[(size_t)i * HS + d] += dS * r.rk[(size_t)j * HS + d] * scale;
                        r.dk[(size_t)j * HS + d] += dS * r.rq[(size_t)i * HS + d] * scale;
                    }
                }
            }
            for (int t = 0; t < T; t++) {
                double *dq = r.dq + (size_t)t * HS, *dk = r.dk + (size_t)t * HS;
                if (cfg->rope) {
                    mni_rope_apply_d(dq, t, HS, cfg->rope_theta, -1);
                    mni_rope_apply_d(dk, t, HS, cfg->rope_theta, -1);
                }
                float *row = io->dqkv + ((size_t)b * T + t) * 3 * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) {
                    row[d] = (float)dq[d];
                    row[C + d] = (float)dk[d];
                    row[2 * C + d] = (float)r.dv[(size_t)t * HS + d];
                }
            }
        }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

/* doubles: the rotated query, the output (HS each); the mask's row (CHUNK floats), its keys. */
size_t mni_sparse_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    (void)n;
    return mni_add(mni_mul(2 * (size_t)cfg->head_dim, sizeof(double)), 2 * CHUNK * sizeof(float));
}

/* Token by token, with the fast path's state layout: every key j <= the query's position is
 * asked of the mask; an allowed key the state no longer holds is an error (the pattern's
 * retain() keeps too little). */
enum mnemo_status mni_sparse_ref_step(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg,
                                      struct mnemo_attn_step *sa)
{
    const int NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    const double scale = 1.0 / sqrt((double)HS);
    struct mni_sparse_view vw;
    mni_sparse_state_view(p, cfg, sa->state, &vw);
    int64_t *count = (int64_t *)sa->state; /* the header's first field */
    const size_t S = (size_t)vw.slots;
    double *q = sa->scratch, *o = q + HS;
    float *mrow = (float *)(o + HS);
    int *keys = (int *)(mrow + CHUNK);
    for (int t = 0; t < sa->n; t++) {
        const int pos = (int)*count;
        const int64_t slot = mni_sparse_slot(&vw, pos);
        const float *x = sa->qkv + (size_t)t * 3 * C;
        for (int h = 0; h < NH; h++) {
            for (int d = 0; d < HS; d++) q[d] = x[C + (size_t)h * HS + d];
            if (cfg->rope) mni_rope_apply_d(q, pos, HS, cfg->rope_theta, +1);
            float *kr = vw.k + ((size_t)h * S + (size_t)slot) * HS;
            for (int d = 0; d < HS; d++) kr[d] = (float)q[d];
            memcpy(vw.v + ((size_t)h * S + (size_t)slot) * HS, x + 2 * C + (size_t)h * HS,
                   sizeof(float) * HS);
        }
        vw.pos[slot] = pos;
        for (int h = 0; h < NH; h++) {
            for (int d = 0; d < HS; d++) q[d] = x[(size_t)h * HS + d], o[d] = 0;
            if (cfg->rope) mni_rope_apply_d(q, pos, HS, cfg->rope_theta, +1);
            double m = -INFINITY, l = 0;
            for (int j0 = 0; j0 <= pos; j0 += CHUNK) {
                const int n = pos + 1 - j0 < CHUNK ? pos + 1 - j0 : CHUNK;
                for (int c = 0; c < n; c++) keys[c] = j0 + c, mrow[c] = 0.0f;
                p->mask(cfg, sa->layer, h, &pos, 1, keys, n, mrow, CHUNK);
                for (int c = 0; c < n; c++) {
                    if (mrow[c] != 0.0f) continue;
                    const int64_t sl = mni_sparse_slot(&vw, keys[c]);
                    if (vw.pos[sl] != keys[c])
                        return mni_err(MNEMO_ERR_ARG, "%s: the pattern needs key %d at position "
                                       "%d, which the state no longer holds",
                                       mnemo_attn_kind_name(cfg->kind), keys[c], pos);
                    const float *k = vw.k + ((size_t)h * S + (size_t)sl) * HS;
                    const float *v = vw.v + ((size_t)h * S + (size_t)sl) * HS;
                    double s = 0;
                    for (int d = 0; d < HS; d++) s += q[d] * k[d];
                    s *= scale;
                    const double mx = s > m ? s : m, a = exp(m - mx), e = exp(s - mx);
                    l = l * a + e;
                    for (int d = 0; d < HS; d++) o[d] = o[d] * a + e * v[d];
                    m = mx;
                }
            }
            float *out = sa->out + (size_t)t * C + (size_t)h * HS;
            for (int d = 0; d < HS; d++) out[d] = (float)(o[d] / l);
        }
        (*count)++;
    }
    return MNEMO_OK;
}
