/*
 * dense_ref.c -- the naive reference of the dense causal attention kind (mni_attn_dense_ref).
 *
 * Plain loops in double precision, written to be obviously right rather than fast; the tests
 * compare the tiled kernels of dense.c against it, and check its gradients against finite
 * differences. For head h of window b, with q, k rotated by their position (if cfg->rope):
 *
 *     s_ij = q_i . k_j / sqrt(HS)            j <= i (causal)
 *     P_ij = exp(s_ij - lse_i),  lse_i = log sum_j exp(s_ij)
 *     o_i  = sum_j P_ij v_j
 *
 * and backward (dO given):
 *
 *     dv_j  = sum_i P_ij dO_i
 *     dP_ij = dO_i . v_j
 *     dS_ij = P_ij (dP_ij - D_i),  D_i = sum_j P_ij dP_ij
 *     dq_i  = sum_j dS_ij k_j / sqrt(HS),   dk_j = sum_i dS_ij q_i / sqrt(HS)
 *
 * then dq, dk are rotated back with the transposed rotation. Note D_i is computed here from
 * its definition, not as dO_i . o_i as the fast path does, so the two paths share no shortcut.
 *
 * Memory: one row of scores at a time plus double copies of one head's rotated q and k and
 * the dk/dv accumulators (all in the scratch the caller sized with scratch_bytes). Serial.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "mni.h"

static const double LOG2E = 1.4426950408889634;

/* Rotates x (HS) in double by the (cos, sin) of position pos: sign +1 forward, -1 inverse. */
static void rot_d(double *x, int pos, const struct mnemo_attn_cfg *cfg, int sign)
{
    if (!cfg->rope) return;
    int HS = cfg->head_dim, half = HS / 2;
    for (int i = 0; i < half; i++) {
        float cf, sf;
        mni_rope_cs(&cf, &sf, pos, i, HS, cfg->rope_theta);
        double c = cf, s = sign * (double)sf;
        double x0 = x[i], x1 = x[i + half];
        x[i] = x0 * c - x1 * s;
        x[i + half] = x0 * s + x1 * c;
    }
}

/* ---- forward ------------------------------------------------------------------------------- */

/* scratch (doubles): rk (T,HS) rotated keys of one head, rq (HS), row (T) scores. */
size_t mni_dense_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    size_t HS = (size_t)cfg->head_dim, t = (size_t)T;
    // backward is the larger: rq, rk, dk, dv (T,HS) + prow, dprow (T) + one row (HS)
    size_t n = mni_add(mni_mul(4 * HS, t), mni_add(2 * t, HS));
    return mni_mul(n, sizeof(double));
}

enum mnemo_status mni_dense_ref_forward(const struct mnemo_attn_cfg *cfg,
                                        struct mnemo_attn_io *io)
{
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int HSP = mni_dense_hsp(HS);
    const size_t C = (size_t)NH * HS;
    const double scale = 1.0 / sqrt((double)HS);
    struct mni_dense_view vw;
    mni_dense_act_view(&vw, cfg, B, T, io->act);
    float *aq = vw.q, *ak = vw.k, *av = vw.v; // (B,NH,T,HSP)
    float *alse = vw.lse;                     // (B,NH,T)
    if (vw.cs) mni_rope_table(vw.cs, T, HS, cfg->rope_theta);

    double *rk = io->scratch;                  // (T,HS)
    double *rq = rk + (size_t)T * HS;          // (HS)
    double *row = rq + HS;                     // (T)

    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *qkv = io->qkv + (size_t)b * T * 3 * C; // (T,3,NH,HS)
            size_t bh = ((size_t)b * NH + h) * T;
            for (int j = 0; j < T; j++) {
                const float *k = qkv + (size_t)j * 3 * C + C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) rk[(size_t)j * HS + d] = k[d];
                rot_d(rk + (size_t)j * HS, j, cfg, +1);
            }
            for (int i = 0; i < T; i++) {
                const float *q = qkv + (size_t)i * 3 * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) rq[d] = q[d];
                rot_d(rq, i, cfg, +1);
                double m = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < HS; d++) s += rq[d] * rk[(size_t)j * HS + d];
                    row[j] = s * scale;
                    if (row[j] > m) m = row[j];
                }
                double l = 0;
                for (int j = 0; j <= i; j++) {
                    row[j] = exp(row[j] - m);
                    l += row[j];
                }
                float *o = io->out + ((size_t)b * T + i) * C + (size_t)h * HS; // (HS)
                for (int d = 0; d < HS; d++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++) {
                        const float *v = qkv + (size_t)j * 3 * C + 2 * C + (size_t)h * HS;
                        acc += row[j] * v[d];
                    }
                    o[d] = (float)(acc / l);
                }
                // the saved activations, in the layout and units of the fast path
                float *sq = aq + (bh + i) * HSP, *sk = ak + (bh + i) * HSP;
                float *sv = av + (bh + i) * HSP;
                const float *vi = qkv + (size_t)i * 3 * C + 2 * C + (size_t)h * HS;
                for (int d = 0; d < HSP; d++) {
                    sq[d] = d < HS ? (float)(rq[d] * scale * LOG2E) : 0.0f;
                    sk[d] = d < HS ? (float)rk[(size_t)i * HS + d] : 0.0f;
                    sv[d] = d < HS ? vi[d] : 0.0f;
                }
                alse[bh + i] = (float)((m + log(l)) * LOG2E);
            }
        }
    }
    return MNEMO_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

enum mnemo_status mni_dense_ref_backward(const struct mnemo_attn_cfg *cfg,
                                         struct mnemo_attn_io *io)
{
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS, TH = (size_t)T * HS;
    const double scale = 1.0 / sqrt((double)HS);
    double *rq = io->scratch;   // (T,HS) rotated q
    double *rk = rq + TH;       // (T,HS) rotated k
    double *dk = rk + TH;       // (T,HS) dL/d(rotated k), accumulated over queries
    double *dv = dk + TH;       // (T,HS)
    double *prow = dv + TH;     // (T) P_ij of one query row
    double *dprow = prow + T;   // (T) dP_ij, then dS_ij
    double *dq = dprow + T;     // (HS) dL/d(rotated q_i)

    for (int b = 0; b < B; b++) {
        const float *qkv = io->qkv + (size_t)b * T * 3 * C;   // (T,3,NH,HS)
        float *dqkv = io->dqkv + (size_t)b * T * 3 * C;       // (T,3,NH,HS)
        const float *dout = io->dout + (size_t)b * T * C;     // (T,NH,HS)
        for (int h = 0; h < NH; h++) {
            for (int t = 0; t < T; t++) {
                const float *q = qkv + (size_t)t * 3 * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) {
                    rq[(size_t)t * HS + d] = q[d];
                    rk[(size_t)t * HS + d] = q[C + d];
                }
                rot_d(rq + (size_t)t * HS, t, cfg, +1);
                rot_d(rk + (size_t)t * HS, t, cfg, +1);
            }
            memset(dk, 0, TH * sizeof(double));
            memset(dv, 0, TH * sizeof(double));
            for (int i = 0; i < T; i++) {
                // forward again: s_ij, P_ij
                const double *qi = rq + (size_t)i * HS;
                const float *doi = dout + (size_t)i * C + (size_t)h * HS; // (HS)
                double m = -INFINITY, l = 0;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < HS; d++) s += qi[d] * rk[(size_t)j * HS + d];
                    prow[j] = s * scale;
                    if (prow[j] > m) m = prow[j];
                }
                for (int j = 0; j <= i; j++) {
                    prow[j] = exp(prow[j] - m);
                    l += prow[j];
                }
                // o_i = sum_j P_ij v_j  =>  dv_j += P_ij dO_i,  dP_ij = dO_i . v_j
                double Di = 0;
                for (int j = 0; j <= i; j++) {
                    const float *vj = qkv + (size_t)j * 3 * C + 2 * C + (size_t)h * HS;
                    prow[j] /= l;
                    double dp = 0;
                    for (int d = 0; d < HS; d++) {
                        dv[(size_t)j * HS + d] += prow[j] * doi[d];
                        dp += (double)doi[d] * vj[d];
                    }
                    dprow[j] = dp;
                    Di += prow[j] * dp;
                }
                // P_i = softmax(s_i)  =>  dS_ij = P_ij (dP_ij - sum_k P_ik dP_ik)
                // s_ij = q_i.k_j*scale  =>  dq_i += dS_ij k_j scale, dk_j += dS_ij q_i scale
                for (int d = 0; d < HS; d++) dq[d] = 0;
                for (int j = 0; j <= i; j++) {
                    double ds = prow[j] * (dprow[j] - Di) * scale;
                    for (int d = 0; d < HS; d++) {
                        dq[d] += ds * rk[(size_t)j * HS + d];
                        dk[(size_t)j * HS + d] += ds * qi[d];
                    }
                }
                rot_d(dq, i, cfg, -1);
                float *dqi = dqkv + (size_t)i * 3 * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) dqi[d] = (float)dq[d];
            }
            for (int j = 0; j < T; j++) {
                rot_d(dk + (size_t)j * HS, j, cfg, -1);
                float *dkj = dqkv + (size_t)j * 3 * C + C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) {
                    dkj[d] = (float)dk[(size_t)j * HS + d];
                    dkj[C + d] = (float)dv[(size_t)j * HS + d];
                }
            }
        }
    }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

/* scratch (doubles): rq (HS), rk (HS, with a window), row (n_ctx, or the window's slots). */
size_t mni_dense_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    const size_t S = (size_t)mni_dense_slots(cfg) > (size_t)cfg->n_ctx ? (size_t)mni_dense_slots(cfg)
                                                                      : (size_t)cfg->n_ctx;
    return mni_mul(mni_add(2 * (size_t)cfg->head_dim, S), sizeof(double));
}

/* A windowed session (options window, sinks, positions; dense.c's windowed_step has the rules),
 * with the same state layout, in double: the new key enters its slot (rotated at its stream
 * position, or unrotated for positions=cache), and the query attends over every held slot, keys
 * rotated here at their rank in the cache when positions=cache. */
static void windowed_ref_step(const struct mnemo_attn_cfg *cfg, void *state, float *out,
                              const float *qkv, int n, void *scratch)
{
    const int NH = cfg->n_head, HS = cfg->head_dim, HSP = mni_dense_hsp(HS);
    const size_t C = (size_t)NH * HS;
    struct mni_dense_state *st = state;
    const size_t S = (size_t)st->n_ctx;
    const int absolute = mni_dense_absolute(cfg);
    const double scale = 1.0 / sqrt((double)HS);
    float *kc = (float *)((char *)state + mni_dense_state_hdr_bytes()); // (NH,S,HSP)
    float *vc = kc + (size_t)NH * S * HSP;
    double *rq = scratch, *rk = rq + HS, *row = rk + HS;
    for (int t = 0; t < n; t++) {
        const int64_t pos = st->count, slot = mni_dense_slot(cfg, pos);
        const float *x = qkv + (size_t)t * 3 * C;
        for (int h = 0; h < NH; h++) {
            for (int d = 0; d < HS; d++) rk[d] = x[C + (size_t)h * HS + d];
            if (absolute) rot_d(rk, (int)pos, cfg, +1);
            float *kr = kc + ((size_t)h * S + (size_t)slot) * HSP;
            float *vr = vc + ((size_t)h * S + (size_t)slot) * HSP;
            for (int d = 0; d < HSP; d++) {
                kr[d] = d < HS ? (float)rk[d] : 0.0f;
                vr[d] = d < HS ? x[2 * C + (size_t)h * HS + d] : 0.0f;
            }
        }
        st->count++;
        const int64_t held = st->count < (int64_t)S ? st->count : (int64_t)S;
        for (int h = 0; h < NH; h++) {
            for (int d = 0; d < HS; d++) rq[d] = x[(size_t)h * HS + d];
            rot_d(rq, absolute ? (int)pos : (int)(held - 1), cfg, +1);
            double m = -INFINITY, l = 0;
            for (int64_t j = 0; j < held; j++) {
                const float *k = kc + ((size_t)h * S + (size_t)j) * HSP;
                for (int d = 0; d < HS; d++) rk[d] = k[d];
                if (!absolute)
                    rot_d(rk, (int)mni_dense_rank(cfg, st->count, mni_dense_slot_pos(cfg, st->count, j)),
                          cfg, +1);
                double sc = 0;
                for (int d = 0; d < HS; d++) sc += rq[d] * rk[d];
                row[j] = sc * scale;
                if (row[j] > m) m = row[j];
            }
            for (int64_t j = 0; j < held; j++) {
                row[j] = exp(row[j] - m);
                l += row[j];
            }
            float *o = out + (size_t)t * C + (size_t)h * HS;
            for (int d = 0; d < HS; d++) {
                double acc = 0;
                for (int64_t j = 0; j < held; j++) acc += row[j] * vc[((size_t)h * S + (size_t)j) * HSP + d];
                o[d] = (float)(acc / l);
            }
        }
    }
}

void mni_dense_ref_step(const struct mnemo_attn_cfg *cfg, void *state, float *out,
                        const float *qkv, int n, void *scratch)
{
    if (mni_dense_window(cfg) > 0) {
        windowed_ref_step(cfg, state, out, qkv, n, scratch);
        return;
    }
    const int NH = cfg->n_head, HS = cfg->head_dim, HSP = mni_dense_hsp(HS);
    const size_t C = (size_t)NH * HS, n_ctx = (size_t)cfg->n_ctx;
    const double scale = 1.0 / sqrt((double)HS);
    struct mni_dense_state *st = state;
    float *kc = (float *)((char *)state + mni_dense_state_hdr_bytes()); // (NH,n_ctx,HSP)
    float *vc = kc + (size_t)NH * n_ctx * HSP;                         // (NH,n_ctx,HSP)
    double *rq = scratch, *row = rq + HS;
    const int p0 = (int)st->count;

    // append the new keys (rotated at their absolute positions) and values
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < NH; h++) {
            const float *k = qkv + (size_t)t * 3 * C + C + (size_t)h * HS;
            const float *v = k + C;
            float *kr = kc + ((size_t)h * n_ctx + p0 + t) * HSP;
            float *vr = vc + ((size_t)h * n_ctx + p0 + t) * HSP;
            for (int d = 0; d < HS; d++) rq[d] = k[d];
            rot_d(rq, p0 + t, cfg, +1);
            for (int d = 0; d < HSP; d++) {
                kr[d] = d < HS ? (float)rq[d] : 0.0f;
                vr[d] = d < HS ? v[d] : 0.0f;
            }
        }
    }
    // each new token attends to the cache and to the new tokens up to itself
    for (int t = 0; t < n; t++) {
        int pos = p0 + t;
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)t * 3 * C + (size_t)h * HS;
            const float *kh = kc + (size_t)h * n_ctx * HSP, *vh = vc + (size_t)h * n_ctx * HSP;
            for (int d = 0; d < HS; d++) rq[d] = q[d];
            rot_d(rq, pos, cfg, +1);
            double m = -INFINITY, l = 0;
            for (int j = 0; j <= pos; j++) {
                double s = 0;
                for (int d = 0; d < HS; d++) s += rq[d] * kh[(size_t)j * HSP + d];
                row[j] = s * scale;
                if (row[j] > m) m = row[j];
            }
            for (int j = 0; j <= pos; j++) {
                row[j] = exp(row[j] - m);
                l += row[j];
            }
            float *o = out + (size_t)t * C + (size_t)h * HS;
            for (int d = 0; d < HS; d++) {
                double acc = 0;
                for (int j = 0; j <= pos; j++) acc += row[j] * vh[(size_t)j * HSP + d];
                o[d] = (float)(acc / l);
            }
        }
    }
    st->count += n;
}
