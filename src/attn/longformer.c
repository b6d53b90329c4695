/*
 * longformer.c -- causal Longformer attention (Beltagy et al. 2020; the survey's §3.4 and the
 * dilated window of §3.1; ../shared/papers/efficient-transformers-survey.md): a sliding window of
 * w keys, optionally dilated, plus g global tokens. In the causal form a global token can only be
 * seen, not see the future, so the first g positions act as attention sinks:
 *     A(i) = { j <= i : j < g }  U  { i - dilation r : r = 0..w-1, i - dilation r >= 0 }.
 * w is a per-layer option (the paper grows the window with depth: "w=64/128/256/512").
 * With dilation d > 1 the queries are processed by residue class mod d (groups()), so that a
 * block of queries r + d m shares its window keys and a tile holds only keys of that class.
 * A stream keeps the g sinks and a ring of the last (w - 1) d + 1 keys: bounded.
 * Engine sparse.c, reference sparse_ref.c.
 */
#include <math.h>

#include "attn/attn_int.h"
#include "mni.h"

enum { OPT_W, OPT_DILATION, OPT_G, OPT_COUNT };

static const struct mnemo_attn_opt opts[] = {
    [OPT_W] = {"w", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, MNEMO_ATTN_OPT_PER_LAYER, 256, 1,
               1 << 22, NULL, "window: a query sees itself and w - 1 keys before it, dilation apart"},
    [OPT_DILATION] = {"dilation", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 1, 1, 1 << 22, NULL,
                      "distance between the window's keys (1: contiguous)"},
    [OPT_G] = {"g", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 1, 0, 1 << 22, NULL,
               "global tokens: every query also sees the first g positions"},
};
_Static_assert(sizeof(opts) / sizeof(opts[0]) == OPT_COUNT, "opts");

static int width(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_W]; }
static int dil(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_DILATION]; }
static int nglob(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_G]; }
/* How far back the window reaches: (w - 1) dilation. */
static int span(const struct mnemo_attn_cfg *cfg) { return (width(cfg) - 1) * dil(cfg); }

static enum mnemo_status validate(const struct mnemo_attn_cfg *cfg)
{
    if (cfg->kind != MNEMO_ATTN_KIND_LONGFORMER)
        return mni_err(MNEMO_ERR_ARG, "longformer: kind must be %d, got %d",
                       MNEMO_ATTN_KIND_LONGFORMER, cfg->kind);
    if ((double)(width(cfg) - 1) * dil(cfg) >= (double)(1 << 30))
        return mni_err(MNEMO_ERR_ARG, "longformer attention: option w = %d with dilation = %d "
                       "reaches back (w - 1) * dilation >= 2^30 positions", width(cfg), dil(cfg));
    return mni_sparse_validate_shape(cfg);
}

static int allowed(const struct mnemo_attn_cfg *cfg, int i, int j)
{
    return j <= i && (j < nglob(cfg) || ((i - j) % dil(cfg) == 0 && i - j <= span(cfg)));
}

/* By residue class mod dilation (position order when dilation is 1). */
static int groups(const struct mnemo_attn_cfg *cfg, int layer, int h, int T, int *perm, int *gstart)
{
    (void)layer, (void)h;
    return mni_sparse_groups_residues(T, dil(cfg), perm, gstart);
}

static int same_residue(const int *q, int nq, int d)
{
    for (int r = 1; r < nq; r++)
        if ((q[r] - q[0]) % d) return 0;
    return 1;
}

/* The globals below min(g, last query + 1), then the window keys from q[0] - span on: those of
 * the queries' residue class when they share one, else every key. */
static int next_keys(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                     int *cursor, int *keys, int max)
{
    (void)layer, (void)h;
    const int d = dil(cfg), g = nglob(cfg), hi = q[nq - 1];
    const int lo = q[0] - span(cfg) > 0 ? q[0] - span(cfg) : 0;
    const int step = d > 1 && same_residue(q, nq, d) ? d : 1;
    int n = 0, j = *cursor;
    while (n < max && j <= hi) {
        if (j >= g) {
            if (j < lo) j = lo;
            if (step > 1) j += ((q[0] - j) % d + d) % d;
            if (j > hi) break;
        }
        keys[n++] = j;
        j += j >= g ? step : 1;
    }
    *cursor = j;
    return n;
}

static void mask(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                 const int *keys, int nk, float *S, int ld)
{
    (void)layer, (void)h;
    const int d = dil(cfg), g = nglob(cfg), hi = q[nq - 1];
    if (keys[nk - 1] <= q[0]) { /* every pair allowed? */
        int all = keys[nk - 1] < g;
        if (!all && keys[0] >= hi - span(cfg) && same_residue(q, nq, d)) {
            all = 1;
            for (int c = 0; c < nk && all; c++) all = (q[0] - keys[c]) % d == 0;
        }
        if (all) return;
    }
    for (int r = 0; r < nq; r++)
        for (int c = 0; c < nk; c++)
            if (!allowed(cfg, q[r], keys[c])) S[(size_t)r * ld + c] = -INFINITY;
}

/* Query i needs the g sinks and the keys from i - (w - 1) dilation on. */
static void retain(const struct mnemo_attn_cfg *cfg, int *sinks, int *recent)
{
    *sinks = nglob(cfg);
    *recent = span(cfg) + 1;
}

/* |A(i)| = the window's min(w, floor(i/d) + 1) keys plus the G = min(g, i + 1) globals, less
 * the window keys among the globals (i - d r < G for r >= ceil((i - G + 1) / d)). */
static double pairs(const struct mnemo_attn_cfg *cfg, int h, int T)
{
    (void)h;
    const long d = dil(cfg), w = width(cfg), g = nglob(cfg);
    double s = 0;
    for (long i = 0; i < T; i++) {
        const long G = g < i + 1 ? g : i + 1;
        const long rmax = w - 1 < i / d ? w - 1 : i / d;
        const long rmin = (i - G + 1 + d - 1) / d;
        const long both = rmax >= rmin ? rmax - rmin + 1 : 0;
        s += (double)(rmax + 1 + G - both);
    }
    return s;
}

const struct mni_pattern mni_pattern_longformer = {groups, next_keys, mask, retain, pairs};

MNI_SPARSE_KIND(longformer, "longformer", mni_pattern_longformer, opts, OPT_COUNT, validate);
