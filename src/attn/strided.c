/*
 * strided.c -- the Sparse Transformer's factorised attention (Child et al. 2019; the survey's
 * combination of patterns, §3.2; ../shared/papers/efficient-transformers-survey.md), both
 * factorisations, split across heads as the paper does: heads h < NH/2 take pattern A, the others
 * pattern B; a single head (NH == 1) takes A U B. With stride l:
 *   mode strided:  A(i) = { j : max(0, i - l) <= j <= i }         (the previous l positions)
 *                  B(i) = { j <= i : (i - j) mod l == 0 }          (every l-th key back)
 *   mode fixed:    A(i) = { j <= i : floor(j/l) == floor(i/l) }    (the query's block of l)
 *                  B(i) = { j <= i : j mod l in {l-c, ..., l-1} } U { i }  (c summary columns
 *                  per block, and the query itself)
 * Only the products a head's pattern needs are computed: the strided B heads process their
 * queries by residue class (groups(): i mod l), so that a block of queries r + l m shares its
 * keys {r, r + l, r + 2l, ...} and the tiles are dense; the fixed A heads are cut at the blocks of
 * l; the fixed B heads share the summary columns. The single merged head (NH == 1) is correct but
 * wasteful (its two parts want different query orders). Streaming keeps every key (pattern B
 * reaches back to the start): the state fills at n_ctx. Engine sparse.c, reference sparse_ref.c.
 */
#include <limits.h>
#include <math.h>

#include "attn/attn_int.h"
#include "mni.h"

enum { OPT_L, OPT_MODE, OPT_C, OPT_COUNT };
enum { MODE_STRIDED, MODE_FIXED };

static const struct mnemo_attn_opt opts[] = {
    [OPT_L] = {"l", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 128, 1, 1 << 22, NULL,
               "the stride (about sqrt(T) in the paper)"},
    [OPT_MODE] = {"mode", MNEMO_ATTN_OPT_ENUM, MNEMO_ATTN_SCOPE_MODEL, 0, MODE_STRIDED,
                  MODE_STRIDED, MODE_FIXED, "strided|fixed",
                  "the factorisation: strided (window + every l-th key) or fixed (block + summary "
                  "columns)"},
    [OPT_C] = {"c", MNEMO_ATTN_OPT_INT, MNEMO_ATTN_SCOPE_MODEL, 0, 8, 1, 1 << 22, NULL,
               "fixed mode: the last c positions of every block of l are summary columns "
               "(c <= l)"},
};
_Static_assert(sizeof(opts) / sizeof(opts[0]) == OPT_COUNT, "opts");

static int stride(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_L]; }
static int fixed(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_MODE] == MODE_FIXED; }
static int ncols(const struct mnemo_attn_cfg *cfg) { return (int)cfg->opt[OPT_C]; }

/* Which pattern head h takes: A, B, or both (a single head). */
enum { PAT_A = 1, PAT_B = 2, PAT_AB = 3 };
static int head_pat(const struct mnemo_attn_cfg *cfg, int h)
{
    if (cfg->n_head == 1) return PAT_AB;
    return h < cfg->n_head / 2 ? PAT_A : PAT_B;
}

static enum mnemo_status validate(const struct mnemo_attn_cfg *cfg)
{
    if (cfg->kind != MNEMO_ATTN_KIND_STRIDED)
        return mni_err(MNEMO_ERR_ARG, "strided: kind must be %d, got %d", MNEMO_ATTN_KIND_STRIDED,
                       cfg->kind);
    /* c only counts in fixed mode: a strided-mode model with a small l keeps the default c */
    if (fixed(cfg) && ncols(cfg) > stride(cfg))
        return mni_err(MNEMO_ERR_ARG, "strided attention: option c = %d must be <= l = %d",
                       ncols(cfg), stride(cfg));
    return mni_sparse_validate_shape(cfg);
}

static int is_summary(const struct mnemo_attn_cfg *cfg, int j)
{
    return j % stride(cfg) >= stride(cfg) - ncols(cfg);
}

/* The definition: may query i of a head with pattern pat see key j? */
static int allowed(const struct mnemo_attn_cfg *cfg, int pat, int i, int j)
{
    const int l = stride(cfg);
    if (j > i) return 0;
    if (fixed(cfg)) {
        if ((pat & PAT_A) && j / l == i / l) return 1;
        return (pat & PAT_B) && (j == i || is_summary(cfg, j));
    }
    if ((pat & PAT_A) && j >= i - l) return 1;
    return (pat & PAT_B) && (i - j) % l == 0;
}

/* Query order: strided mode's B heads by residue class (r, r + l, r + 2l, ... for r = 0..l-1),
 * so that a block's queries share their keys; fixed mode's A (and merged) heads in position
 * order cut at the blocks of l; else position order in one group. */
static int groups(const struct mnemo_attn_cfg *cfg, int layer, int h, int T, int *perm, int *gstart)
{
    (void)layer;
    const int l = stride(cfg), pat = head_pat(cfg, h);
    if (!fixed(cfg) && pat == PAT_B) return mni_sparse_groups_residues(T, l, perm, gstart);
    return mni_sparse_groups_runs(T, fixed(cfg) && (pat & PAT_A) ? l : T, perm, gstart);
}

static int all_same_residue(const int *q, int nq, int l)
{
    for (int r = 1; r < nq; r++)
        if ((q[r] - q[0]) % l) return 0;
    return 1;
}

static int contiguous(const int *q, int nq) { return q[nq - 1] - q[0] == nq - 1; }

/* The smallest key >= j that some query of the block (q, nq ascending) may see, or INT_MAX; a
 * superset of the union is fine (mask() decides), as long as it is tight where it counts. */
static int next_cand(const struct mnemo_attn_cfg *cfg, int pat, const int *q, int nq, int j)
{
    const int l = stride(cfg), q0 = q[0], hi = q[nq - 1];
    if (j > hi) return INT_MAX;
    if (fixed(cfg)) {
        /* below lo: summary columns only (B); from lo on: every key (the block for A, the
         * queries themselves and the summary columns among them for B) */
        const int lo = pat & PAT_A ? q0 / l * l : q0;
        if (j >= lo) return j;
        if (!(pat & PAT_B)) return lo;
        if (!is_summary(cfg, j)) j = j / l * l + l - ncols(cfg);
        return j < lo ? j : lo;
    }
    const int lo = pat & PAT_A ? (q0 - l > 0 ? q0 - l : 0) : INT_MAX; /* A's window */
    if (j >= lo) return j;
    if (!(pat & PAT_B)) return lo;
    /* B below the window: keys congruent to some query mod l */
    if (all_same_residue(q, nq, l)) {
        const int d = ((q0 - j) % l + l) % l; /* keys j + d, j + d + l, ... */
        j += d;
    } else if (contiguous(q, nq) && nq < l) {
        const int t = ((j - q0) % l + l) % l; /* j is congruent to query q0 + t if t < nq */
        if (t >= nq) j += l - t;
    } /* else every key */
    if (j > hi) return INT_MAX;
    return j < lo ? j : lo;
}

/* next_cand's list when it has a simple shape, strided mode with a block of queries of one
 * residue class (a B head's block, or a pattern A U B block such as a single query) or pattern A
 * alone: the keys congruent to the queries below A's window (B), then the window's run up to
 * the last query (A), emitted without asking next_cand key by key. Returns -1 for other
 * blocks. */
static int run_keys(const struct mnemo_attn_cfg *cfg, int pat, const int *q, int nq, int *cursor,
                    int *keys, int max)
{
    const int l = stride(cfg), q0 = q[0], hi = q[nq - 1];
    if (fixed(cfg) || ((pat & PAT_B) && !all_same_residue(q, nq, l))) return -1;
    const int lo = pat & PAT_A ? (q0 - l > 0 ? q0 - l : 0) : hi + 1; /* A's window */
    int n = 0, j = *cursor;
    if ((pat & PAT_B) && j < lo)
        for (j += ((q0 - j) % l + l) % l; j < lo && j <= hi; j += l) {
            if (n == max) {
                *cursor = j;
                return n;
            }
            keys[n++] = j;
        }
    if (j < lo) j = lo; /* (lo = q0 - l when > 0 is itself congruent: the steps land on it) */
    for (; n < max && j <= hi; j++) keys[n++] = j;
    *cursor = j;
    return n;
}

static int next_keys(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                     int *cursor, int *keys, int max)
{
    (void)layer;
    const int pat = head_pat(cfg, h), hi = q[nq - 1];
    int n = run_keys(cfg, pat, q, nq, cursor, keys, max), j = *cursor;
    if (n >= 0) return n;
    n = 0;
    while (n < max && (j = next_cand(cfg, pat, q, nq, j)) <= hi) keys[n++] = j++;
    *cursor = j;
    return n;
}

/* 1 when every pair of the tile is allowed (cheap sufficient conditions). */
static int all_allowed(const struct mnemo_attn_cfg *cfg, int pat, const int *q, int nq,
                       const int *keys, int nk)
{
    const int l = stride(cfg), q0 = q[0], hi = q[nq - 1];
    if (keys[nk - 1] > q0) return 0;
    if (fixed(cfg)) {
        for (int c = 0; c < nk; c++)
            if (!((pat & PAT_A) && keys[c] / l == hi / l) && !((pat & PAT_B) && is_summary(cfg, keys[c])))
                return 0;
        return 1;
    }
    if ((pat & PAT_A) && keys[0] >= hi - l) return 1;
    if (!(pat & PAT_B) || !all_same_residue(q, nq, l)) return 0;
    for (int c = 0; c < nk; c++)
        if ((q0 - keys[c]) % l) return 0;
    return 1;
}

static void mask(const struct mnemo_attn_cfg *cfg, int layer, int h, const int *q, int nq,
                 const int *keys, int nk, float *S, int ld)
{
    (void)layer;
    const int pat = head_pat(cfg, h), l = stride(cfg);
    if (all_allowed(cfg, pat, q, nq, keys, nk)) return;
    /* strided mode, A alone (a run back from each query), or B with the queries and keys all
     * in one residue class (a B head's tiles): bounds per query, no remainder per pair */
    int simple = !fixed(cfg) && pat != PAT_AB;
    if (simple && pat == PAT_B) {
        simple = all_same_residue(q, nq, l);
        for (int c = 0; simple && c < nk; c++) simple = (q[0] - keys[c]) % l == 0;
    }
    if (simple) {
        for (int r = 0; r < nq; r++) {
            const int lo = pat == PAT_A ? q[r] - l : INT_MIN;
            for (int c = 0; c < nk; c++)
                if (keys[c] > q[r] || keys[c] < lo) S[(size_t)r * ld + c] = -INFINITY;
        }
        return;
    }
    for (int r = 0; r < nq; r++)
        for (int c = 0; c < nk; c++)
            if (!allowed(cfg, pat, q[r], keys[c])) S[(size_t)r * ld + c] = -INFINITY;
}

/* Pattern B reaches back to the first key: a stream keeps them all (recent = 0). */
static void retain(const struct mnemo_attn_cfg *cfg, int *sinks, int *recent)
{
    (void)cfg;
    *sinks = 0;
    *recent = 0;
}

/* |A(i)|, |B(i)| or |A(i) U B(i)| summed over i < T. */
static double pairs(const struct mnemo_attn_cfg *cfg, int h, int T)
{
    const int l = stride(cfg), c = ncols(cfg), pat = head_pat(cfg, h);
    double s = 0;
    for (int i = 0; i < T; i++) {
        double a, b, ab; /* |A|, |B|, |A n B| */
        if (fixed(cfg)) {
            const int full = (i + 1) / l, rest = (i + 1) % l - (l - c);
            const double cols = (double)full * c + (rest > 0 ? rest : 0); /* summary j <= i */
            const int own = i % l + 1;                                    /* A: i's block */
            const int own_cols = i % l >= l - c ? i % l - (l - c) + 1 : 0; /* summary in it */
            a = own;
            b = cols + (is_summary(cfg, i) ? 0 : 1);
            ab = own_cols + (is_summary(cfg, i) ? 0 : 1);
        } else {
            a = (i < l ? i : l) + 1;
            b = i / l + 1;
            ab = i >= l ? 2 : 1; /* i and i - l */
        }
        s += pat == PAT_A ? a : pat == PAT_B ? b : a + b - ab;
    }
    return s;
}

const struct mni_pattern mni_pattern_strided = {groups, next_keys, mask, retain, pairs};

MNI_SPARSE_KIND(strided, "strided", mni_pattern_strided, opts, OPT_COUNT, validate);
