/*
 * block.c -- blockwise local attention (the survey's fixed patterns, §3.1; LRA's "Local
 * Attention"; ../shared/papers/efficient-transformers-survey.md): positions are cut into blocks
 * of b and a query sees the keys of its own block up to itself, and with prev the whole block
 * before it:
 *     A(i) = { j <= i : floor(j/b) == floor(i/b) }  U  (prev ? { j : floor(j/b) == floor(i/b) - 1 } : {}),
 * a contiguous run of keys [start(i), i] with start(i) = max(0, (floor(i/b) - prev) b). Training
 * costs O(T b) products; the engine's query blocks are cut at the pattern's blocks (groups(),
 * for b >= 16), so that a block of queries never straddles two of them and wastes the other's
 * keys. A stream keeps a ring of the last b keys (2b with prev): bounded. Engine sparse.c,
 * reference sparse_ref.c.
 */
#include <math.h>

#include "attn/attn_int.h"
#include "mni.h"

enum { OPT_B, OPT_PREV, OPT_COUNT };

static const struct mnemo_attn_opt opts[] = {
    [OPT_B] = {"b", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 64, 1, 1 << 22, NULL,
               "block size: a query sees the keys of its block up to itself"},
    [OPT_PREV] = {"prev", MNEMO_ATTN_OPT_BOOL, MNEMO_ATTN_SCOPE_MODEL, 0, 0, 0, 1, NULL,
                  "also the whole previous block"},
};
_Static_assert(sizeof(opts) / sizeof(opts[0]) == OPT_COUNT, "opts");

static int bsize(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_B]; }
static int prev(const struct mnemo_attn_cfg *cfg) { return cfg->opt[OPT_PREV] != 0; }

/* The first key query i sees. */
static int start(const struct mnemo_attn_cfg *cfg, int i)
{
    const int s = (i / bsize(cfg) - prev(cfg)) * bsize(cfg);
    return s > 0 ? s : 0;
}

static enum mnemo_status validate(const struct mnemo_attn_cfg *cfg)
{
    if (cfg->kind != MNEMO_ATTN_KIND_BLOCK)
        return mni_err(MNEMO_ERR_ARG, "block: kind must be %d, got %d", MNEMO_ATTN_KIND_BLOCK,
                       cfg->kind);
    return mni_sparse_validate_shape(cfg);
}

/* Position order, one group per pattern block when the blocks hold at least GROUP_MIN
 * queries. Smaller ones stay in one group: a block of queries then spans several pattern blocks
 * and mask() drops the pairs across them, which costs less than many tiny groups (tiles of a
 * few queries and keys, and the engine's per-block overhead). */
#define GROUP_MIN 16
static int groups(const struct mnemo_attn_cfg *cfg, int layer, int h, int T, int *perm, int *gstart)
{
    (void)layer, (void)h;
    return mni_sparse_groups_runs(T, bsize(cfg) >= GROUP_MIN ? bsize(cfg) : T, perm, gstart);
}

/* The union over the block's queries is [start(q[0]), q[nq-1]] (start is non-decreasing). */
static int next_keys(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                     int *cursor, int *keys, int max)
{
    (void)layer, (void)h;
    return mni_sparse_run_keys(start(cfg, q[0]), q[nq - 1], cursor, keys, max);
}

static void mask(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                 const int *keys, int nk, float *S, int ld)
{
    (void)layer, (void)h;
    if (keys[nk - 1] <= q[0] && keys[0] >= start(cfg, q[nq - 1])) return; /* all allowed */
    for (int r = 0; r < nq; r++) {
        const int lo = start(cfg, q[r]);
        for (int c = 0; c < nk; c++)
            if (keys[c] > q[r] || keys[c] < lo) S[(size_t)r * ld + c] = -INFINITY;
    }
}

/* Query i needs keys >= start(i) >= i - b + 1 (i - 2b + 1 with prev). */
static void retain(const struct mnemo_attn_cfg *cfg, int *sinks, int *recent)
{
    *sinks = 0;
    *recent = (1 + prev(cfg)) * bsize(cfg);
}

/* sum over i < T of i - start(i) + 1, block by block: a block of n queries (n = b but for the
 * last) gives n (n + 1) / 2 of its own, plus n b for the previous one with prev (none before
 * block 0). */
static double pairs(const struct mnemo_attn_cfg *cfg, int h, int T)
{
    (void)h;
    const double b = bsize(cfg);
    double s = 0;
    for (int k = 0; (double)k * b < T; k++) {
        const double n = T - k * b < b ? T - k * b : b;
        s += n * (n + 1) / 2 + (prev(cfg) && k > 0 ? n * b : 0);
    }
    return s;
}

const struct mni_pattern mni_pattern_block = {groups, next_keys, mask, retain, pairs};

MNI_SPARSE_KIND(block, "block", mni_pattern_block, opts, OPT_COUNT, validate);
