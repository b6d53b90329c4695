/*
 * window.c -- sliding-window attention (the survey's fixed patterns, §3.1; Longformer's local
 * part; ../shared/papers/efficient-transformers-survey.md): query i sees the w most recent keys,
 *     A(i) = { j : i - w < j <= i },
 * so training costs O(T w) products (never a masked T x T), and a stream keeps a ring of the last
 * w keys and values: bounded whatever its length. The engine is sparse.c; the reference
 * sparse_ref.c asks mask() below about every pair.
 */
#include <math.h>

#include "attn/attn_int.h"
#include "mni.h"

enum { OPT_W, OPT_COUNT };

static const struct mnemo_attn_opt opts[] = {
    [OPT_W] = {"w", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 256, 1, 1 << 22, NULL,
               "keys a query sees: itself and the w - 1 before it"},
};
_Static_assert(sizeof(opts) / sizeof(opts[0]) == OPT_COUNT, "opts");

static int width(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_W]; }

static enum mnemo_status validate(const struct mnemo_attn_cfg *cfg)
{
    if (cfg->kind != MNEMO_ATTN_KIND_WINDOW)
        return mni_err(MNEMO_ERR_ARG, "window: kind must be %d, got %d", MNEMO_ATTN_KIND_WINDOW,
                       cfg->kind);
    return mni_sparse_validate_shape(cfg);
}

/* Blocks are runs of consecutive positions: the keys from the first query's window start to the
 * last query. */
static int next_keys(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                     int *cursor, int *keys, int max)
{
    (void)layer, (void)h;
    const int lo = q[0] - width(cfg) + 1 > 0 ? q[0] - width(cfg) + 1 : 0;
    return mni_sparse_run_keys(lo, q[nq - 1], cursor, keys, max);
}

static void mask(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                 const int *keys, int nk, float *S, int ld)
{
    (void)layer, (void)h;
    const int w = width(cfg);
    if (keys[nk - 1] <= q[0] && keys[0] > q[nq - 1] - w) return; /* inside every row's window */
    for (int r = 0; r < nq; r++)
        for (int c = 0; c < nk; c++)
            if (keys[c] > q[r] || keys[c] <= q[r] - w) S[(size_t)r * ld + c] = -INFINITY;
}

static void retain(const struct mnemo_attn_cfg *cfg, int *sinks, int *recent)
{
    *sinks = 0;
    *recent = width(cfg);
}

static double pairs(const struct mnemo_attn_cfg *cfg, int h, int T)
{
    (void)h;
    const double w = width(cfg) < T ? width(cfg) : T;
    return w * (w + 1) / 2 + (T - w) * w; /* min(i + 1, w) summed over i < T */
}

static const struct mni_pattern pattern = {NULL, next_keys, mask, retain, pairs};

MNI_SPARSE_KIND(window, "window", pattern, opts, OPT_COUNT, validate);
