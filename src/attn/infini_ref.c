/*
 * infini_ref.c -- the naive reference of the Infini-attention kind (mni_attn_infini_ref).
 *
 * Double precision, plain loops, one (window, head) at a time, written from the spec's
 * equations (../shared/papers/infini-attention.md §2, §4) rather than from the fast path: the
 * local attention is an explicit row softmax over the keys of the query's segment (RoPE at
 * positions within the segment), and the memory is held in double:
 *     A_mem,t = sigma(q_t) M_s / max(sigma(q_t) . z_s, eps),  A_t = g A_mem,t + (1 - g) A_dot,t
 *     (A_t = A_dot,t in segment 0),  M_{s+1} = M_s + sum_t sigma(k_t)^T u_t,
 *     z_{s+1} = z_s + sum_t sigma(k_t),  u_t = v_t or (delta, s >= 1) v_t - sigma(k_t) M_s /
 *     max(sigma(k_t) . z_s, eps).
 * With write weights (option mem_repeat, training; drawn by mni_inf_write_weights from the
 * call's seed, as the fast path draws them) segment s's fold is scaled by its weight c:
 * M_{s+1} = M_s + c sum_t sigma(k_t)^T u_t, z_{s+1} = z_s + c sum_t sigma(k_t).
 * With a carried memory (option carry, io->carry of a lane whose count is not 0) M_0, z_0 are the
 * lane's and segment 0 reads them like any other; the last segment is then folded too, into
 * io->carry_out. No gradient flows into the carried memory.
 * Backward is reverse-mode differentiation of those loops, term by term: the local softmax
 * (dS = P (dP - D)), then the memory from the last segment to the first with dM, dz carried
 * across segments (docs/internals/infini.md writes the terms out). Serial; tests use small
 * shapes.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "kern/kern.h"
#include "mni.h"

static double phi_d(double x) { return x > 0 ? x + 1 : exp(x); }
static double dphi_d(double x) { return x > 0 ? 1 : exp(x); }

/* Rotates x (HS) to position pos (sign -1: back), with the factors every RoPE path uses. */
static void rot_d(double *x, int pos, const struct mnemo_attn_cfg *cfg, int sign)
{
    if (cfg->rope) mni_rope_apply_d(x, pos, cfg->head_dim, cfg->rope_theta, sign);
}

/* Per-head buffers (doubles): q, k, v, rq, rk, ad, dA, dq, dk, dv (T,HS); Ms (S+1,HS,HS),
 * zs (S+1,HS) (M_S: the fold of the last segment, for a carry); dM, dz, dM2, dz2 (HS*HS + HS each pair); p, dp (N); vectors (8 HS). */
struct rbuf {
    double *q, *k, *v, *rq, *rk, *ad, *dA, *dq, *dk, *dv, *Ms, *zs, *dM, *dz, *dM2, *dz2, *p, *dp;
    double *w; /* 8 HS */
};

static size_t rbuf_doubles(const struct mnemo_attn_cfg *cfg, int T)
{
    const size_t HS = (size_t)cfg->head_dim, N = (size_t)mni_inf_segment(cfg);
    const size_t S = ((size_t)T + N - 1) / N;
    return mni_add(mni_add(mni_mul(10, mni_mul((size_t)T, HS)), mni_mul(S + 1, HS * HS + HS)),
                   mni_add(2 * (HS * HS + HS), 2 * N + 8 * HS));
}

/* The per-head buffers, then the write weights (B,S) of the call. */
size_t mni_inf_ref_scratch_bytes(const struct mnemo_attn_cfg *cfg, int B, int T)
{
    const size_t N = (size_t)mni_inf_segment(cfg), S = ((size_t)T + N - 1) / N;
    return mni_add(mni_mul(rbuf_doubles(cfg, T), sizeof(double)),
                   mni_mul(mni_mul((size_t)B, S), sizeof(float)));
}

static void rbuf_carve(struct rbuf *r, const struct mnemo_attn_cfg *cfg, int T, void *scratch)
{
    const size_t HS = (size_t)cfg->head_dim, N = (size_t)mni_inf_segment(cfg);
    const size_t S = ((size_t)T + N - 1) / N, TH = (size_t)T * HS;
    double *p = scratch;
    r->q = p, p += TH;
    r->k = p, p += TH;
    r->v = p, p += TH;
    r->rq = p, p += TH;
    r->rk = p, p += TH;
    r->ad = p, p += TH;
    r->dA = p, p += TH;
    r->dq = p, p += TH;
    r->dk = p, p += TH;
    r->dv = p, p += TH;
    r->Ms = p, p += (S + 1) * HS * HS;
    r->zs = p, p += (S + 1) * HS;
    r->dM = p, p += HS * HS;
    r->dz = p, p += HS;
    r->dM2 = p, p += HS * HS;
    r->dz2 = p, p += HS;
    r->p = p, p += N;
    r->dp = p, p += N;
    r->w = p;
}

/* The memory read-out at x (HS): a = sigma(x) M / max(sigma(x).z, eps); px = sigma(x); returns
 * the unclamped denominator. */
static double read_d(double *a, double *px, const double *x, const double *M, const double *z,
                     int HS)
{
    double den = 0;
    for (int i = 0; i < HS; i++) {
        px[i] = phi_d(x[i]);
        den += px[i] * z[i];
    }
    const double dc = den > MNI_INF_DEN_EPS ? den : MNI_INF_DEN_EPS;
    for (int j = 0; j < HS; j++) {
        double s = 0;
        for (int i = 0; i < HS; i++) s += px[i] * M[(size_t)i * HS + j];
        a[j] = s / dc;
    }
    return den;
}

/* Forward of head h of window b into r (and out, if not NULL): local attention, memory. cM,
 * cz: the memory carried into the window (NULL: empty); with oM, oz the last segment is folded
 * too, into them. */
static void ref_head_fwd(const struct mnemo_attn_cfg *cfg, const float *qkv, int T, int h,
                         double g, const float *ww, const float *cM, const float *cz,
                         float *oM, float *oz, struct rbuf *r, float *out)
{
    const int HS = cfg->head_dim, N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    const size_t C = (size_t)cfg->n_head * HS, HH = (size_t)HS * HS;
    const double scale = 1.0 / sqrt((double)HS);
    for (int t = 0; t < T; t++)
        for (int d = 0; d < HS; d++) {
            const float *x = qkv + (size_t)t * 3 * C + (size_t)h * HS + d;
            r->q[(size_t)t * HS + d] = r->rq[(size_t)t * HS + d] = x[0];
            r->k[(size_t)t * HS + d] = r->rk[(size_t)t * HS + d] = x[C];
            r->v[(size_t)t * HS + d] = x[2 * C];
        }
    for (int t = 0; t < T; t++) {
        rot_d(r->rq + (size_t)t * HS, t % N, cfg, +1);
        rot_d(r->rk + (size_t)t * HS, t % N, cfg, +1);
    }
    // local: query i sees the keys t0 .. i of its own segment
    for (int i = 0; i < T; i++) {
        const int t0 = i / N * N;
        double m = -INFINITY, l = 0;
        for (int j = t0; j <= i; j++) {
            double s = 0;
            for (int d = 0; d < HS; d++) s += r->rq[(size_t)i * HS + d] * r->rk[(size_t)j * HS + d];
            r->p[j - t0] = s * scale;
            m = fmax(m, s * scale);
        }
        for (int j = t0; j <= i; j++) l += (r->p[j - t0] = exp(r->p[j - t0] - m));
        for (int d = 0; d < HS; d++) {
            double o = 0;
            for (int j = t0; j <= i; j++) o += r->p[j - t0] / l * r->v[(size_t)j * HS + d];
            r->ad[(size_t)i * HS + d] = o;
        }
    }
    // memory, segment by segment
    double *am = r->w, *px = r->w + HS, *u = r->w + 2 * HS;
    for (size_t i = 0; i < HH; i++) r->Ms[i] = cM ? cM[i] : 0.0;
    for (int i = 0; i < HS; i++) r->zs[i] = cz ? cz[i] : 0.0;
    for (int s = 0; s < S; s++) {
        const int t0 = s * N, t1 = t0 + N < T ? t0 + N : T, read = s > 0 || cM;
        const double *M = r->Ms + (size_t)s * HH, *z = r->zs + (size_t)s * HS;
        for (int t = t0; t < t1 && out; t++) {
            float *o = out + (size_t)t * C + (size_t)h * HS;
            const double *ad = r->ad + (size_t)t * HS;
            if (!read) {
                for (int d = 0; d < HS; d++) o[d] = (float)ad[d];
                continue;
            }
            read_d(am, px, r->q + (size_t)t * HS, M, z, HS);
            for (int d = 0; d < HS; d++) o[d] = (float)(g * am[d] + (1 - g) * ad[d]);
        }
        if (s + 1 == S && !oM) break;
        double *Mn = r->Ms + (size_t)(s + 1) * HH, *zn = r->zs + (size_t)(s + 1) * HS;
        memcpy(Mn, M, sizeof(double) * HH);
        memcpy(zn, z, sizeof(double) * (size_t)HS);
        const double c = ww ? ww[s] : 1.0; // the segment's write weight
        for (int t = t0; t < t1; t++) {
            const double *v = r->v + (size_t)t * HS;
            if (mni_inf_delta(cfg) && read) {
                read_d(u, px, r->k + (size_t)t * HS, M, z, HS);
                for (int j = 0; j < HS; j++) u[j] = v[j] - u[j];
            } else {
                for (int i = 0; i < HS; i++) px[i] = phi_d(r->k[(size_t)t * HS + i]);
                for (int j = 0; j < HS; j++) u[j] = v[j];
            }
            for (int i = 0; i < HS; i++) {
                zn[i] += c * px[i];
                for (int j = 0; j < HS; j++) Mn[(size_t)i * HS + j] += c * px[i] * u[j];
            }
        }
    }
    if (oM) { // M_S, z_S: what the lane carries into its next window
        for (size_t i = 0; i < HH; i++) oM[i] = (float)r->Ms[(size_t)S * HH + i];
        for (int i = 0; i < HS; i++) oz[i] = (float)r->zs[(size_t)S * HS + i];
    }
}

/* The carried memory of head h of window b for ref_head_fwd (NULL: none or a fresh lane), and
 * where its next one goes (*oM NULL: not asked for). */
static const float *carried(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io,
                            int b, int h, const float **cz)
{
    const int on = mni_inf_carry_bytes(cfg) && io->carry &&
                   *mni_inf_carry_count(io->carry, cfg, b) > 0;
    *cz = on ? mni_inf_carry_z(io->carry, cfg, b, h) : NULL;
    return on ? mni_inf_carry_M(io->carry, cfg, b, h) : NULL;
}

/* The call's write weights (B,S), drawn into the scratch after the per-head buffers, or NULL
 * when the segments are not weighted. */
static const float *write_weights(const struct mnemo_attn_cfg *cfg, const struct mnemo_attn_io *io)
{
    float *w = (float *)((char *)io->scratch + rbuf_doubles(cfg, io->T) * sizeof(double));
    return mni_inf_write_weights(cfg, io, w) ? w : NULL;
}

/* Window b's write weights (S of them), or NULL. */
static const float *write_w(const float *ww, int b, int T, const struct mnemo_attn_cfg *cfg)
{
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    return ww ? ww + (size_t)b * S : NULL;
}

enum mnemo_status mni_inf_ref_forward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    const int T = io->T, NH = cfg->n_head;
    const size_t C = (size_t)NH * cfg->head_dim;
    struct rbuf r;
    rbuf_carve(&r, cfg, T, io->scratch);
    const float *ww = write_weights(cfg, io);
    const int out_carry = mni_inf_carry_bytes(cfg) && io->carry_out;
    const int S = (T + mni_inf_segment(cfg) - 1) / mni_inf_segment(cfg);
    for (int b = 0; b < io->B; b++) {
        for (int h = 0; h < NH; h++) {
            const float *cz, *cM = carried(cfg, io, b, h, &cz);
            ref_head_fwd(cfg, io->qkv + (size_t)b * T * 3 * C, T, h,
                         1.0 / (1.0 + exp(-(double)io->params[0][h])), write_w(ww, b, T, cfg),
                         cM, cz, out_carry ? mni_inf_carry_M(io->carry_out, cfg, b, h) : NULL,
                         out_carry ? mni_inf_carry_z(io->carry_out, cfg, b, h) : NULL, &r,
                         io->out + (size_t)b * T * C);
        }
        if (out_carry) { // the header: segments folded so far
            const int64_t n = (io->carry ? *mni_inf_carry_count(io->carry, cfg, b) : 0) + S;
            memset(mni_inf_carry_count(io->carry_out, cfg, b), 0, MNI_INF_CARRY_HDR);
            *mni_inf_carry_count(io->carry_out, cfg, b) = n;
        }
    }
    return MNEMO_OK;
}

/* Backward of the memory read-out of one token (segment s >= 1), given dA (HS): adds to dq
 * (through sigma), dM, dz; returns d(objective)/dg. */
static double read_bwd_d(double *dq, double *dM, double *dz, const double *q, const double *dA,
                         const double *ad, const double *M, const double *z, double g, int HS,
                         double *w)
{
    double *am = w, *pq = w + HS, *dn = w + 2 * HS;
    const double den = read_d(am, pq, q, M, z, HS);
    const double dc = den > MNI_INF_DEN_EPS ? den : MNI_INF_DEN_EPS;
    double dg = 0, dd = 0;
    for (int j = 0; j < HS; j++) {
        dg += dA[j] * (am[j] - ad[j]); // o = g am + (1-g) ad
        dn[j] = g * dA[j] / dc;         // am = num / dc
        dd -= g * dA[j] * am[j] / dc;   // d(dc) = -sum dam_j num_j / dc^2
    }
    if (!(den > MNI_INF_DEN_EPS)) dd = 0; // the clamp: dc does not depend on den
    for (int i = 0; i < HS; i++) {
        double dpq = dd * z[i]; // den = pq . z
        for (int j = 0; j < HS; j++) {
            dpq += M[(size_t)i * HS + j] * dn[j]; // num = pq M
            dM[(size_t)i * HS + j] += pq[i] * dn[j];
        }
        dz[i] += dd * pq[i];
        dq[i] += dpq * dphi_d(q[i]);
    }
    return dg;
}

/* Backward of the fold of one token: Mn = M + c pk^T u, zn = z + c pk with the gradients dMn,
 * dzn of Mn, zn; adds to dk, dv, and (delta) to dM, dz. */
static void fold_bwd_d(double *dk, double *dv, double *dM, double *dz, const double *k,
                       const double *v, const double *M, const double *z, const double *dMn,
                       const double *dzn, int delta, double c, int HS, double *w)
{
    double *pk = w, *u = w + HS, *r = w + 2 * HS, *dU = w + 3 * HS, *dpk = w + 4 * HS;
    double den = 0;
    if (delta) {
        den = read_d(r, pk, k, M, z, HS);
        for (int j = 0; j < HS; j++) u[j] = v[j] - r[j];
    } else {
        for (int i = 0; i < HS; i++) pk[i] = phi_d(k[i]);
        for (int j = 0; j < HS; j++) u[j] = v[j];
    }
    for (int j = 0; j < HS; j++) {
        dU[j] = 0;
        for (int i = 0; i < HS; i++) dU[j] += c * pk[i] * dMn[(size_t)i * HS + j];
        dv[j] += dU[j];
    }
    for (int i = 0; i < HS; i++) {
        dpk[i] = c * dzn[i];
        for (int j = 0; j < HS; j++) dpk[i] += c * dMn[(size_t)i * HS + j] * u[j];
    }
    if (delta) {
        // u = v - num / dc with num = pk M, dc = max(pk . z, eps)
        const double dc = den > MNI_INF_DEN_EPS ? den : MNI_INF_DEN_EPS;
        double dd = 0;
        for (int j = 0; j < HS; j++) dd += dU[j] * r[j] / dc; // d(dc) = sum_j du_j num_j / dc^2
        if (!(den > MNI_INF_DEN_EPS)) dd = 0;
        for (int i = 0; i < HS; i++) {
            dpk[i] += dd * z[i];
            for (int j = 0; j < HS; j++) {
                const double dnum = -dU[j] / dc;
                dpk[i] += M[(size_t)i * HS + j] * dnum;
                dM[(size_t)i * HS + j] += pk[i] * dnum;
            }
            dz[i] += dd * pk[i];
        }
    }
    for (int i = 0; i < HS; i++) dk[i] += dpk[i] * dphi_d(k[i]);
}

enum mnemo_status mni_inf_ref_backward(const struct mnemo_attn_cfg *cfg, struct mnemo_attn_io *io)
{
    const int T = io->T, NH = cfg->n_head, HS = cfg->head_dim;
    const int N = mni_inf_segment(cfg), S = (T + N - 1) / N;
    const int delta = mni_inf_delta(cfg);
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS, TH = (size_t)T * HS;
    const double scale = 1.0 / sqrt((double)HS);
    struct rbuf r;
    rbuf_carve(&r, cfg, T, io->scratch);
    const float *wall = write_weights(cfg, io);
    for (int b = 0; b < io->B; b++)
        for (int h = 0; h < NH; h++) {
            const double g = 1.0 / (1.0 + exp(-(double)io->params[0][h]));
            const float *qkv = io->qkv + (size_t)b * T * 3 * C;
            const float *ww = write_w(wall, b, T, cfg);
            const float *cz, *cM = carried(cfg, io, b, h, &cz);
            ref_head_fwd(cfg, qkv, T, h, g, ww, cM, cz, NULL, NULL, &r, NULL);
            for (int t = 0; t < T; t++)
                for (int d = 0; d < HS; d++)
                    r.dA[(size_t)t * HS + d] = io->dout[((size_t)b * T + t) * C + (size_t)h * HS + d];
            memset(r.dq, 0, sizeof(double) * TH);
            memset(r.dk, 0, sizeof(double) * TH);
            memset(r.dv, 0, sizeof(double) * TH);
            // the local attention: dA_dot = (1 - g) dA (dA in segment 0); rotated dq, dk
            for (int i = 0; i < T; i++) {
                const int t0 = i / N * N;
                const double w = i < N && !cM ? 1.0 : 1.0 - g;
                double m = -INFINITY, l = 0, D = 0;
                for (int j = t0; j <= i; j++) {
                    double s = 0;
                    for (int d = 0; d < HS; d++) s += r.rq[(size_t)i * HS + d] * r.rk[(size_t)j * HS + d];
                    r.p[j - t0] = s * scale;
                    m = fmax(m, s * scale);
                }
                for (int j = t0; j <= i; j++) l += (r.p[j - t0] = exp(r.p[j - t0] - m));
                for (int j = t0; j <= i; j++) {
                    r.p[j - t0] /= l;
                    double dp = 0;
                    for (int d = 0; d < HS; d++) dp += w * r.dA[(size_t)i * HS + d] * r.v[(size_t)j * HS + d];
                    r.dp[j - t0] = dp;
                    D += r.p[j - t0] * dp;
                }
                for (int j = t0; j <= i; j++) {
                    const double P = r.p[j - t0], dS = P * (r.dp[j - t0] - D) * scale;
                    for (int d = 0; d < HS; d++) {
                        r.dv[(size_t)j * HS + d] += P * w * r.dA[(size_t)i * HS + d];
                        r.dq[(size_t)i * HS + d] += dS * r.rk[(size_t)j * HS + d];
                        r.dk[(size_t)j * HS + d] += dS * r.rq[(size_t)i * HS + d];
                    }
                }
            }
            for (int t = 0; t < T; t++) { // rotated gradients back to the unrotated q, k
                rot_d(r.dq + (size_t)t * HS, t % N, cfg, -1);
                rot_d(r.dk + (size_t)t * HS, t % N, cfg, -1);
            }
            // the memory, last segment first; dM, dz: gradients of the memory entering s + 1
            double *dMn = r.dM, *dzn = r.dz, *dMs = r.dM2, *dzs = r.dz2, dg = 0;
            memset(dMn, 0, sizeof(double) * HH);
            memset(dzn, 0, sizeof(double) * (size_t)HS);
            for (int s = S - 1; s >= 0; s--) {
                const int t0 = s * N, t1 = t0 + N < T ? t0 + N : T;
                const double *M = r.Ms + (size_t)s * HH, *z = r.zs + (size_t)s * HS;
                memcpy(dMs, dMn, sizeof(double) * HH);
                memcpy(dzs, dzn, sizeof(double) * (size_t)HS);
                for (int t = t0; t < t1; t++) {
                    const size_t o = (size_t)t * HS;
                    if (s + 1 < S)
                        fold_bwd_d(r.dk + o, r.dv + o, dMs, dzs, r.k + o, r.v + o, M, z, dMn,
                                   dzn, delta && (s > 0 || cM), ww ? ww[s] : 1.0, HS, r.w);
                    if (s > 0 || cM)
                        dg += read_bwd_d(r.dq + o, dMs, dzs, r.q + o, r.dA + o, r.ad + o, M, z,
                                         g, HS, r.w);
                }
                double *t = dMn;
                dMn = dMs, dMs = t;
                t = dzn, dzn = dzs, dzs = t;
            }
            io->dparams[0][h] += (float)(dg * g * (1 - g)); // g = sigmoid(beta)
            for (int t = 0; t < T; t++)
                for (int d = 0; d < HS; d++) {
                    float *x = io->dqkv + ((size_t)b * T + t) * 3 * C + (size_t)h * HS + d;
                    x[0] = (float)r.dq[(size_t)t * HS + d];
                    x[C] = (float)r.dk[(size_t)t * HS + d];
                    x[2 * C] = (float)r.dv[(size_t)t * HS + d];
                }
        }
    return MNEMO_OK;
}

/* ---- streaming ----------------------------------------------------------------------------- */

/* doubles: a row of scores (N), q, k rotated and work vectors (8 HS), the folded M, z. */
size_t mni_inf_ref_step_scratch_bytes(const struct mnemo_attn_cfg *cfg, int n)
{
    (void)n;
    const size_t HS = (size_t)cfg->head_dim;
    return mni_mul(mni_add((size_t)mni_inf_segment(cfg), mni_add(8 * HS, HS * HS + HS)),
                   sizeof(double));
}

/* Token by token: the new key and value enter the segment, the query attends to the segment's
 * keys (rotated here, at their positions within the segment) and reads the memory; a complete
 * segment is folded into M, z (double sums over the fp32 state). */
void mni_inf_ref_step(const struct mnemo_attn_cfg *cfg, void *state, const float *params,
                      float *out, const float *qkv, int n, void *scratch)
{
    const int NH = cfg->n_head, HS = cfg->head_dim, N = mni_inf_segment(cfg);
    const size_t C = (size_t)NH * HS, HH = (size_t)HS * HS, SN = (size_t)N * HS;
    const double scale = 1.0 / sqrt((double)HS);
    struct mni_inf_view vw;
    mni_inf_state_view(cfg, 1, state, &vw);
    struct mni_inf_state *hd = vw.hdr;
    double *row = scratch, *q = row + N, *k = q + HS, *x = k + HS, *am = x + HS, *px = am + HS;
    double *Md = px + 3 * HS, *zd = Md + HH; // the memory in double (read-out, fold)
    for (int t = 0; t < n; t++) {
        const float *in = qkv + (size_t)t * 3 * C;
        const int pos = (int)hd->in_seg;
        for (int h = 0; h < NH; h++) {
            float *kh = vw.k + h * SN, *vh = vw.v + h * SN;
            memcpy(kh + (size_t)pos * HS, in + C + (size_t)h * HS, sizeof(float) * HS);
            memcpy(vh + (size_t)pos * HS, in + 2 * C + (size_t)h * HS, sizeof(float) * HS);
            for (int d = 0; d < HS; d++) q[d] = in[(size_t)h * HS + d];
            rot_d(q, pos, cfg, +1);
            double m = -INFINITY, l = 0;
            for (int j = 0; j <= pos; j++) {
                for (int d = 0; d < HS; d++) k[d] = kh[(size_t)j * HS + d];
                rot_d(k, j, cfg, +1);
                double s = 0;
                for (int d = 0; d < HS; d++) s += q[d] * k[d];
                row[j] = s * scale;
                m = fmax(m, row[j]);
            }
            for (int j = 0; j <= pos; j++) l += (row[j] = exp(row[j] - m));
            const double g = 1.0 / (1.0 + exp(-(double)params[h]));
            if (hd->n_seg > 0) {
                for (int i = 0; i < HS; i++) {
                    x[i] = in[(size_t)h * HS + i];
                    zd[i] = vw.z[(size_t)h * HS + i];
                    for (int j = 0; j < HS; j++) Md[(size_t)i * HS + j] = vw.M[h * HH + (size_t)i * HS + j];
                }
                read_d(am, px, x, Md, zd, HS);
            }
            for (int d = 0; d < HS; d++) {
                double o = 0;
                for (int j = 0; j <= pos; j++) o += row[j] / l * vh[(size_t)j * HS + d];
                out[(size_t)t * C + (size_t)h * HS + d] =
                    (float)(hd->n_seg > 0 ? g * am[d] + (1 - g) * o : o);
            }
        }
        hd->in_seg++;
        hd->count++;
        if (hd->in_seg < N) continue;
        // fold the segment: M += sum sigma(k)^T u, z += sum sigma(k)
        for (int h = 0; h < NH; h++) {
            float *Mf = vw.M + h * HH, *zf = vw.z + (size_t)h * HS;
            for (size_t i = 0; i < HH; i++) Md[i] = Mf[i];
            for (int i = 0; i < HS; i++) zd[i] = zf[i];
            // Md, zd accumulate; the delta rule reads the memory before the fold (Mf, zf)
            for (int j = 0; j < N; j++) {
                for (int d = 0; d < HS; d++) x[d] = vw.k[h * SN + (size_t)j * HS + d];
                double *u = am;
                if (mni_inf_delta(cfg) && hd->n_seg > 0) {
                    double den = 0;
                    for (int i = 0; i < HS; i++) den += (px[i] = phi_d(x[i])) * zf[i];
                    const double dc = den > MNI_INF_DEN_EPS ? den : MNI_INF_DEN_EPS;
                    for (int c = 0; c < HS; c++) {
                        double s = 0;
                        for (int i = 0; i < HS; i++) s += px[i] * Mf[(size_t)i * HS + c];
                        u[c] = vw.v[h * SN + (size_t)j * HS + c] - s / dc;
                    }
                } else {
                    for (int i = 0; i < HS; i++) px[i] = phi_d(x[i]);
                    for (int c = 0; c < HS; c++) u[c] = vw.v[h * SN + (size_t)j * HS + c];
                }
                for (int i = 0; i < HS; i++) {
                    zd[i] += px[i];
                    for (int c = 0; c < HS; c++) Md[(size_t)i * HS + c] += px[i] * u[c];
                }
            }
            for (size_t i = 0; i < HH; i++) Mf[i] = (float)Md[i];
            for (int i = 0; i < HS; i++) zf[i] = (float)zd[i];
        }
        hd->n_seg++;
        hd->in_seg = 0;
    }
}
