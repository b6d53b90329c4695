/*
 * selective_ref.c -- the naive reference of the Selective Attention kind (mni_attn_selective_ref).
 *
 * Double precision, full T x T matrices, written from the spec's closed form rather than from
 * the tiled code (../shared/papers/selective-attention.md, §2 and §4). Per window, with q, k
 * rotated (cfg->rope) and z_h[i,j] = q_h,i . k_h,j / sqrt(HS):
 *
 *     F[i,j]  = sum_{k = j+1}^{i-1} relu(z_0[k,j])   for j >= 1;  F[i,0] = 0
 *     P_h,i   = softmax_{j <= i}(z_h[i,j] - F[i,j]),   o_h,i = sum_j P_h,ij v_h,j
 *
 * backward (dO given): dP, D_i = sum_j P_ij dP_ij (from its definition), dL = P (dP - D),
 * dF = -sum_h dL_h, and for 1 <= j < k with z_0[k,j] > 0: dz_0[k,j] += sum_{i > k} dF[i,j]
 * (a triple loop, no running sums). With the memory loss (option mem_eps > 0): per window
 * M_i = (i + 1) - sum_{j<=i} min(F[i,j], tau) / tau, aux = max_i M_i (first row on ties), and
 * backward adds aux_grad * c * dM/dF = -aux_grad * c / tau (c = mem_eps / (n_layer T), the scale of
 * the reported aux_loss = c sum_b max M) to dF[i*,j] wherever F[i*,j] < tau.
 * Serial; the tests use small T.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "mni.h"

static void rot_d(double *x, int pos, const struct mnemo_attn_cfg *cfg, int sign)
{
    if (cfg->rope) mni_rope_apply_d(x, pos, cfg->head_dim, cfg->rope_theta, sign);
}

/* doubles: rq, rk, dq, dk, dv (NH,T,HS); z0, F, dF (T,T); prow, dprow (T) */
size_t mni_sel_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    (void)B;
    size_t nth = mni_mul(mni_mul((size_t)cfg->n_head, (size_t)T), (size_t)cfg->head_dim);
    size_t tt = mni_mul((size_t)T, (size_t)T);
    return mni_mul(mni_add(mni_add(mni_mul(5, nth), mni_mul(3, tt)), 2 * (size_t)T), sizeof(double));
}

struct ref_bufs {
    double *rq, *rk, *dq, *dk, *dv, *z0, *F, *dF, *prow, *dprow;
};

static void ref_bufs(struct ref_bufs *r, const struct mnemo_attn_cfg *cfg, int T, void *scratch)
{
    size_t nth = (size_t)cfg->n_head * T * cfg->head_dim, tt = (size_t)T * T;
    double *p = scratch;
    r->rq = p;
    r->rk = r->rq + nth;
    r->dq = r->rk + nth;
    r->dk = r->dq + nth;
    r->dv = r->dk + nth;
    r->z0 = r->dv + nth;
    r->F = r->z0 + tt;
    r->dF = r->F + tt;
    r->prow = r->dF + tt;
    r->dprow = r->prow + T;
}

/* Rotated q, k of every head of window b; z0; F by its closed form. */
static void ref_prepare(const struct mnemo_attn_cfg *cfg, const float *qkv, int T,
                        struct ref_bufs *r)
{
    const int NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    const double scale = 1.0 / sqrt((double)HS);
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < T; t++) {
            double *q = r->rq + ((size_t)h * T + t) * HS, *k = r->rk + ((size_t)h * T + t) * HS;
            for (int d = 0; d < HS; d++) {
                q[d] = qkv[(size_t)t * 3 * C + (size_t)h * HS + d];
                k[d] = qkv[(size_t)t * 3 * C + C + (size_t)h * HS + d];
            }
            rot_d(q, t, cfg, +1);
            rot_d(k, t, cfg, +1);
        }
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            double s = 0;
            if (j <= i)
                for (int d = 0; d < HS; d++) s += r->rq[(size_t)i * HS + d] * r->rk[(size_t)j * HS + d];
            r->z0[(size_t)i * T + j] = s * scale;
        }
    for (int i = 0; i < T; i++)
        for (int j = 0; j < T; j++) {
            double f = 0;
            if (j >= 1)
                for (int k = j + 1; k <= i - 1; k++) f += fmax(0.0, r->z0[(size_t)k * T + j]);
            r->F[(size_t)i * T + j] = f;
        }
}

/* P_h,i (prow) and returns lse of row i of head h. */
static double ref_row(const struct mnemo_attn_cfg *cfg, int T, const struct ref_bufs *r, int h,
                      int i)
{
    const int HS = cfg->head_dim;
    const double scale = 1.0 / sqrt((double)HS);
    const double *q = r->rq + ((size_t)h * T + i) * HS, *kh = r->rk + (size_t)h * T * HS;
    double m = -INFINITY, l = 0;
    for (int j = 0; j <= i; j++) {
        double s = 0;
        for (int d = 0; d < HS; d++) s += q[d] * kh[(size_t)j * HS + d];
        r->prow[j] = s * scale - r->F[(size_t)i * T + j];
        m = fmax(m, r->prow[j]);
    }
    for (int j = 0; j <= i; j++) {
        r->prow[j] = exp(r->prow[j] - m);
        l += r->prow[j];
    }
    for (int j = 0; j <= i; j++) r->prow[j] /= l;
    return m + log(l);
}

enum mnemo_status mni_sel_ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    struct mni_sel_view vw;
    mni_sel_act_view(&vw, cfg, B, T, io->act);
    if (vw.cs) mni_rope_table(vw.cs, T, HS, cfg->rope_theta);
    struct ref_bufs r;
    ref_bufs(&r, cfg, T, io->scratch);
    io->aux_loss = 0;
    for (int b = 0; b < B; b++) {
        const float *qkv = io->qkv + (size_t)b * T * 3 * C;
        ref_prepare(cfg, qkv, T, &r);
        for (int h = 0; h < NH; h++) {
            const size_t bh = ((size_t)b * NH + h) * T;
            for (int i = 0; i < T; i++) {
                double lse = ref_row(cfg, T, &r, h, i);
                float *o = io->out + ((size_t)b * T + i) * C + (size_t)h * HS;
                for (int d = 0; d < HS; d++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++)
                        acc += r.prow[j] * qkv[(size_t)j * 3 * C + 2 * C + (size_t)h * HS + d];
                    o[d] = (float)acc;
                }
                vw.lse[bh + i] = (float)lse;
                for (int d = 0; d < HS; d++) {
                    vw.q[(bh + i) * HS + d] = (float)r.rq[((size_t)h * T + i) * HS + d];
                    vw.k[(bh + i) * HS + d] = (float)r.rk[((size_t)h * T + i) * HS + d];
                    vw.v[(bh + i) * HS + d] = qkv[(size_t)i * 3 * C + 2 * C + (size_t)h * HS + d];
                }
            }
        }
        for (int j = 0; j < T; j++) {
            double f = 0;
            for (int k = j + 1; k < T && j >= 1; k++) f += fmax(0.0, r.z0[(size_t)k * T + j]);
            vw.fsum[(size_t)b * T + j] = f;
        }
        double best = -INFINITY;
        int32_t row = 0;
        const double tau = mni_sel_tau(cfg);
        for (int i = 0; i < T && mni_sel_mem_on(cfg); i++) {
            double s = 0;
            for (int j = 0; j <= i; j++) s += fmin(r.F[(size_t)i * T + j], tau);
            const double M = (double)(i + 1) - s / tau;
            if (M > best) best = M, row = i;
        }
        vw.mval[b] = mni_sel_mem_on(cfg) ? best : 0.0;
        vw.mrow[b] = row;
        io->aux_loss += mni_sel_aux_scale(cfg, T) * vw.mval[b];
    }
    return MNEMO_OK;
}

enum mnemo_status mni_sel_ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    const int B = io->B, T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS, nth = (size_t)NH * T * HS;
    const double scale = 1.0 / sqrt((double)HS);
    struct ref_bufs r;
    ref_bufs(&r, cfg, T, io->scratch);
    for (int b = 0; b < B; b++) {
        const float *qkv = io->qkv + (size_t)b * T * 3 * C;
        const float *dout = io->dout + (size_t)b * T * C;
        float *dqkv = io->dqkv + (size_t)b * T * 3 * C;
        ref_prepare(cfg, qkv, T, &r);
        memset(r.dq, 0, 3 * nth * sizeof(double)); /* dq, dk, dv */
        memset(r.dF, 0, (size_t)T * T * sizeof(double));
        for (int h = 0; h < NH; h++) {
            const double *kh = r.rk + (size_t)h * T * HS;
            for (int i = 0; i < T; i++) {
                ref_row(cfg, T, &r, h, i);
                const float *doi = dout + (size_t)i * C + (size_t)h * HS;
                double D = 0;
                for (int j = 0; j <= i; j++) {
                    double dp = 0;
                    for (int d = 0; d < HS; d++)
                        dp += (double)doi[d] * qkv[(size_t)j * 3 * C + 2 * C + (size_t)h * HS + d];
                    r.dprow[j] = dp;
                    D += r.prow[j] * dp;
                }
                for (int j = 0; j <= i; j++) {
                    const double dl = r.prow[j] * (r.dprow[j] - D);
                    r.dF[(size_t)i * T + j] -= dl;
                    for (int d = 0; d < HS; d++) {
                        r.dv[((size_t)h * T + j) * HS + d] += r.prow[j] * doi[d];
                        r.dq[((size_t)h * T + i) * HS + d] += dl * scale * kh[(size_t)j * HS + d];
                        r.dk[((size_t)h * T + j) * HS + d] +=
                            dl * scale * r.rq[((size_t)h * T + i) * HS + d];
                    }
                }
            }
        }
        /* the memory loss: its max row, recomputed here from F (not read from act) */
        if (mni_sel_mem_on(cfg) && io->aux_grad != 0.0f) {
            const double tau = mni_sel_tau(cfg), c = mni_sel_aux_scale(cfg, T);
            double best = -INFINITY;
            int row = 0;
            for (int i = 0; i < T; i++) {
                double s = 0;
                for (int j = 0; j <= i; j++) s += fmin(r.F[(size_t)i * T + j], tau);
                const double M = (double)(i + 1) - s / tau;
                if (M > best) best = M, row = i;
            }
            for (int j = 0; j <= row; j++)
                if (r.F[(size_t)row * T + j] < tau) r.dF[(size_t)row * T + j] -= io->aux_grad * c / tau;
        }
        /* the selection: F[i,j] = sum_{j<k<i} relu(z0[k,j])  =>  dz0[k,j] = sum_{i>k} dF[i,j] */
        for (int k = 0; k < T; k++)
            for (int j = 1; j < k; j++) {
                if (!(r.z0[(size_t)k * T + j] > 0)) continue;
                double g = 0;
                for (int i = k + 1; i < T; i++) g += r.dF[(size_t)i * T + j];
                for (int d = 0; d < HS; d++) {
                    r.dq[(size_t)k * HS + d] += g * scale * r.rk[(size_t)j * HS + d];
                    r.dk[(size_t)j * HS + d] += g * scale * r.rq[(size_t)k * HS + d];
                }
            }
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                double *dq = r.dq + ((size_t)h * T + t) * HS, *dk = r.dk + ((size_t)h * T + t) * HS;
                const double *dv = r.dv + ((size_t)h * T + t) * HS;
                rot_d(dq, t, cfg, -1);
                rot_d(dk, t, cfg, -1);
                for (int d = 0; d < HS; d++) {
                    dqkv[(size_t)t * 3 * C + (size_t)h * HS + d] = (float)dq[d];
                    dqkv[(size_t)t * 3 * C + C + (size_t)h * HS + d] = (float)dk[d];
                    dqkv[(size_t)t * 3 * C + 2 * C + (size_t)h * HS + d] = (float)dv[d];
                }
            }
    }
    return MNEMO_OK;
}

/* doubles: rq (NH,HS), row (slots) */
size_t mni_sel_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    (void)n;
    size_t S = (size_t)(mni_sel_budget(cfg) > 0 ? mni_sel_budget(cfg) : cfg->n_ctx);
    return mni_mul((size_t)cfg->n_head * cfg->head_dim + S, sizeof(double));
}

/* The same slots and pruning rules as the fast step (mni_sel_make_room), the arithmetic in
 * double. */
void mni_sel_ref_step(const struct mnemo_attn_cfg *cfg, void *state, float *out,
                      const float *qkv, int n, void *scratch)
{
    const int NH = cfg->n_head, HS = cfg->head_dim;
    const size_t C = (size_t)NH * HS;
    const double scale = 1.0 / sqrt((double)HS);
    struct mni_sel_state *st = state;
    const size_t S = (size_t)st->slots;
    struct mni_sel_slots sl;
    mni_sel_state_view(cfg, state, &sl);
    double *rq = scratch, *row = rq + C, kr[256];
    for (int t = 0; t < n; t++) {
        const int64_t pos = st->count, slot = mni_sel_make_room(cfg, state);
        const float *x = qkv + (size_t)t * 3 * C;
        for (int h = 0; h < NH; h++) {
            for (int d = 0; d < HS; d++) {
                rq[(size_t)h * HS + d] = x[(size_t)h * HS + d];
                kr[d] = x[C + (size_t)h * HS + d];
            }
            rot_d(rq + (size_t)h * HS, (int)pos, cfg, +1);
            rot_d(kr, (int)pos, cfg, +1);
            for (int d = 0; d < HS; d++) {
                sl.k[((size_t)h * S + (size_t)slot) * HS + d] = (float)kr[d];
                sl.v[((size_t)h * S + (size_t)slot) * HS + d] = x[2 * C + (size_t)h * HS + d];
            }
        }
        sl.F[slot] = 0;
        sl.pos[slot] = pos;
        const int64_t live = st->used;
        for (int h = 0; h < NH; h++) {
            const float *kh = sl.k + (size_t)h * S * HS, *vh = sl.v + (size_t)h * S * HS;
            double m = -INFINITY, l = 0;
            for (int64_t j = 0; j < live; j++) {
                double s = 0;
                for (int d = 0; d < HS; d++) s += rq[(size_t)h * HS + d] * kh[(size_t)j * HS + d];
                row[j] = s * scale - sl.F[j];
                m = fmax(m, row[j]);
            }
            for (int64_t j = 0; j < live; j++) {
                row[j] = exp(row[j] - m);
                l += row[j];
            }
            for (int d = 0; d < HS; d++) {
                double acc = 0;
                for (int64_t j = 0; j < live; j++) acc += row[j] * vh[(size_t)j * HS + d];
                out[(size_t)t * C + (size_t)h * HS + d] = (float)(acc / l);
            }
        }
        for (int64_t j = 0; j < live; j++) {
            if (sl.pos[j] < 1 || sl.pos[j] >= pos) continue;
            double s = 0;
            for (int d = 0; d < HS; d++) s += rq[d] * sl.k[(size_t)j * HS + d];
            sl.F[j] += fmax(0.0, s * scale);
        }
        st->count++;
    }
}
