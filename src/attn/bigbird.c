/*
 * bigbird.c -- causal BigBird attention (Zaheer et al. 2020; the survey's §3.4;
 * ../shared/papers/efficient-transformers-survey.md), block-sparse as in the paper: positions
 * are cut into blocks of `block`; with qb = floor(i/block) the query's block,
 *     A(i) = { j <= i : qb - wb < floor(j/block) <= qb }      window: its block and the wb - 1
 *                                                             blocks before it
 *          U { j <= i : j < g }                               the first g tokens are global
 *          U { j : floor(j/block) in R(layer, qb) }           random blocks
 * where R(layer, qb) is r distinct blocks drawn uniformly without replacement from the blocks
 * 0..qb-wb (all before the window) that are not entirely global (k >= floor(g/block)), all of
 * them when there are no more than r; the draws come from mni_rng seeded by (pattern_seed, layer, qb),
 * so the pattern depends only on the options, the layer and the positions: the same in training
 * and in a stream. The paper's encoder window of 3 blocks (one each side) becomes, causally, the
 * current block and the one before (wb = 2).
 * The engine's query blocks are cut at the pattern's blocks (groups()), so all the queries of a
 * block share one key set (up to causality within the current block). A stream keeps every key
 * (the random blocks reach anywhere into the past). Engine sparse.c, reference sparse_ref.c.
 */
#include <math.h>
#include <string.h>

#include "attn/attn_int.h"
#include "mni.h"

enum { OPT_BLOCK, OPT_WB, OPT_G, OPT_R, OPT_SEED, OPT_COUNT };

#define R_MAX 1024 /* random blocks per query block, at most */

static const struct mnemo_attn_opt opts[] = {
    [OPT_BLOCK] = {"block", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 64, 1, 1 << 22, NULL,
                   "block size of the block-sparse pattern"},
    [OPT_WB] = {"wb", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 2, 1, 1 << 22, NULL,
                "window in blocks: the query's block and the wb - 1 blocks before it"},
    [OPT_G] = {"g", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 64, 0, 1 << 22, NULL,
               "global tokens: every query also sees the first g positions"},
    [OPT_R] = {"r", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 3, 0, R_MAX, NULL,
               "random key blocks per query block, drawn from the blocks before the window"},
    [OPT_SEED] = {"pattern_seed", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 0, 0, 2147483647.0, NULL,
                  "seed of the random blocks (with the layer and the query block)"},
};
_Static_assert(sizeof(opts) / sizeof(opts[0]) == OPT_COUNT, "opts");

static int bsz(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_BLOCK]; }
static int wblocks(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_WB]; }
static int nglob(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_G]; }
static int nrand(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_R]; }

static enum mnemo_status validate(const struct mnemo_attn_cfg *cfg)
{
    if (cfg->kind != MNEMO_ATTN_KIND_BIGBIRD)
        return mni_err(MNEMO_ERR_ARG, "bigbird: kind must be %d, got %d", MNEMO_ATTN_KIND_BIGBIRD,
                       cfg->kind);
    return mni_sparse_validate_shape(cfg);
}

/* The random blocks of query block qb in a layer: fills R (ascending) and returns their number. */
static int rand_blocks(const struct mnemo_attn_cfg *cfg, int layer, int qb, int *R)
{
    const int first = nglob(cfg) / bsz(cfg), last = qb - wblocks(cfg); /* eligible: first..last */
    const int n = last - first + 1, r = nrand(cfg);
    if (n <= 0 || r <= 0) return 0;
    if (n <= r) {
        for (int k = 0; k < n; k++) R[k] = first + k;
        return n;
    }
    /* Floyd's sampling of r of the n, kept sorted */
    struct mni_rng rng;
    const uint64_t s = (uint64_t)cfg->opt[OPT_SEED] * 0x9E3779B97F4A7C15ULL ^
                       ((uint64_t)layer + 1) * 0xC2B2AE3D27D4EB4FULL ^
                       ((uint64_t)qb + 1) * 0x165667B19E3779F9ULL;
    mni_rng_seed(&rng, s);
    int m = 0;
    for (int t = n - r; t < n; t++) {
        int x = (int)mni_rng_below(&rng, (uint64_t)t + 1);
        int lo = 0, hi = m; /* first index with R[.] >= x */
        while (lo < hi) {
            const int mid = (lo + hi) / 2;
            if (R[mid] < x) lo = mid + 1;
            else hi = mid;
        }
        if (lo < m && R[lo] == x) { /* taken: take t (larger than every one so far) */
            x = t;
            lo = m;
        }
        memmove(R + lo + 1, R + lo, sizeof(int) * (size_t)(m - lo));
        R[lo] = x;
        m++;
    }
    for (int k = 0; k < m; k++) R[k] += first;
    return m;
}

/* The key set of one query block (up to causality): the first key of its window, and its
 * random blocks. */
struct qset {
    int qb, ws, nr;
    int R[R_MAX];
};

static void qset_make(const struct mnemo_attn_cfg *cfg, int layer, int qb, struct qset *s)
{
    s->qb = qb;
    s->ws = (qb - wblocks(cfg) + 1) * bsz(cfg);
    if (s->ws < 0) s->ws = 0;
    s->nr = rand_blocks(cfg, layer, qb, s->R);
}

static int in_rand(const struct qset *s, int kb)
{
    int lo = 0, hi = s->nr;
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (s->R[mid] < kb) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->nr && s->R[lo] == kb;
}

/* Is key j in the set (causality aside)? */
static int member(const struct mnemo_attn_cfg *cfg, const struct qset *s, int j)
{
    return j >= s->ws || j < nglob(cfg) || in_rand(s, j / bsz(cfg));
}

/* The smallest key >= j of the set (the window is open above: there is one). */
static int next_member(const struct mnemo_attn_cfg *cfg, const struct qset *s, int j)
{
    if (j >= s->ws || j < nglob(cfg)) return j;
    const int b = bsz(cfg), kb = j / b;
    int lo = 0, hi = s->nr; /* the first random block >= kb */
    while (lo < hi) {
        const int mid = (lo + hi) / 2;
        if (s->R[mid] < kb) lo = mid + 1;
        else hi = mid;
    }
    if (lo < s->nr) {
        if (s->R[lo] == kb) return j;
        const int k = s->R[lo] * b;
        return k < s->ws ? k : s->ws;
    }
    return s->ws;
}

/* Position order, one group per pattern block. */
static int groups(const struct mnemo_attn_cfg *cfg, int layer, int h, int T, int *perm, int *gstart)
{
    (void)layer, (void)h;
    return mni_sparse_groups_runs(T, bsz(cfg), perm, gstart);
}

/* The queries' block's set up to the last query (groups() keeps a block of queries within one
 * pattern block); a block of queries across pattern blocks gets every key. */
static int next_keys(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                     int *cursor, int *keys, int max)
{
    (void)h;
    const int b = bsz(cfg), hi = q[nq - 1];
    int n = 0, j = *cursor;
    if (q[0] / b != hi / b) {
        for (; j <= hi && n < max; j++) keys[n++] = j;
    } else {
        struct qset s;
        qset_make(cfg, layer, hi / b, &s);
        while (n < max && (j = next_member(cfg, &s, j)) <= hi) keys[n++] = j++;
    }
    *cursor = j;
    return n;
}

static void mask(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                 const int *keys, int nk, float *S, int ld)
{
    (void)h;
    const int b = bsz(cfg);
    struct qset s;
    s.qb = -1;
    if (q[0] / b == q[nq - 1] / b) { /* one set for all rows: skip the tile if all allowed */
        qset_make(cfg, layer, q[0] / b, &s);
        int all = keys[nk - 1] <= q[0];
        for (int c = 0; c < nk && all; c++) all = member(cfg, &s, keys[c]);
        if (all) return;
    }
    for (int r = 0; r < nq; r++) {
        if (q[r] / b != s.qb) qset_make(cfg, layer, q[r] / b, &s);
        for (int c = 0; c < nk; c++)
            if (keys[c] > q[r] || !member(cfg, &s, keys[c])) S[(size_t)r * ld + c] = -INFINITY;
    }
}

static void retain(const struct mnemo_attn_cfg *cfg, int *sinks, int *recent)
{
    (void)cfg;
    *sinks = 0;
    *recent = 0;
}

/* Per query block qb (queries i from qb block on): i - ws + 1 window keys, the globals below
 * the window, min(g, ws), and the non-global keys of its random blocks (they lie below the
 * window). The random blocks are layer 0's: the layers differ only when block does not divide g
 * (whether the partly global block floor(g/block) is drawn), by at most g mod block keys. */
static double pairs(const struct mnemo_attn_cfg *cfg, int h, int T)
{
    (void)h;
    const int b = bsz(cfg), g = nglob(cfg);
    struct qset s;
    double tot = 0;
    for (int qb = 0; (double)qb * b < T; qb++) {
        qset_make(cfg, 0, qb, &s);
        const double i0 = (double)qb * b, n = T - i0 < b ? T - i0 : b; /* queries i0..i0+n-1 */
        double rk = 0;
        for (int k = 0; k < s.nr; k++) {
            const int gl = g - s.R[k] * b; /* global keys in block R[k] */
            rk += b - (gl <= 0 ? 0 : gl >= b ? b : gl);
        }
        const double ws = s.ws, below = g < s.ws ? g : s.ws;
        tot += n * (i0 - ws + 1) + n * (n - 1) / 2 + n * (below + rk);
    }
    return tot;
}

const struct mni_pattern mni_pattern_bigbird = {groups, next_keys, mask, retain, pairs};

MNI_SPARSE_KIND(bigbird, "bigbird", mni_pattern_bigbird, opts, OPT_COUNT, validate);
