/*
 * test_attn_patterns.c -- the sparse patterns themselves (src/attn/block.c, strided.c,
 * longformer.c, bigbird.c; the engine's struct mni_pattern, attn_int.h), below what the
 * conformance suite sees:
 *  - pairs(cfg, h, T) equals a brute-force count over mask() (the definition) for every head;
 *  - next_keys(), over the engine's query blocks (groups() cut into blocks of 16, and other
 *    block sizes), lists increasing keys without repeats, none after the block's last query,
 *    covering every key mask() allows; for a single query (streaming) only keys the state keeps;
 *  - hand-checked sets A(i) for each kind; BigBird's random blocks are distinct, the same for
 *    every query of a block, drawn uniformly, and all of them when there are few;
 *  - the option relations validate() refuses, with a message naming the kind and the option;
 *  - fast vs reference with a single head (the conformance shapes have two or more; strided's
 *    single head takes A U B);
 *  - fast vs reference over a long window (several of the forward's layout chunks), and the same
 *    bits for 1, 2 and 3 threads (deterministic forward and backward).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_int.h"
#include "testutil.h"

#define MAXT 400

struct pcase {
    int kind;
    const char *opts;
};

static const struct pcase pcases[] = {
    {MNEMO_ATTN_KIND_BLOCK, "b=1"},
    {MNEMO_ATTN_KIND_BLOCK, "b=13"},
    {MNEMO_ATTN_KIND_BLOCK, "b=64,prev=true"},
    {MNEMO_ATTN_KIND_BLOCK, "b=50,prev=true"},
    {MNEMO_ATTN_KIND_STRIDED, "l=1"},
    {MNEMO_ATTN_KIND_STRIDED, "l=7"},
    {MNEMO_ATTN_KIND_STRIDED, "l=50"},
    {MNEMO_ATTN_KIND_STRIDED, "l=128"},
    {MNEMO_ATTN_KIND_STRIDED, "l=11,mode=fixed,c=3"},
    {MNEMO_ATTN_KIND_STRIDED, "l=70,mode=fixed,c=30"},
    {MNEMO_ATTN_KIND_STRIDED, "l=5,mode=fixed,c=5"},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=1,g=0"},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=9,dilation=3,g=2"},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=70,g=0"},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=20,dilation=7,g=67"},
    {MNEMO_ATTN_KIND_LONGFORMER, "w=50,dilation=60,g=5"},
    {MNEMO_ATTN_KIND_BIGBIRD, ""},
    {MNEMO_ATTN_KIND_BIGBIRD, "block=8,wb=2,g=10,r=2,pattern_seed=3"},
    {MNEMO_ATTN_KIND_BIGBIRD, "block=13,wb=3,g=26,r=3,pattern_seed=5"},
    {MNEMO_ATTN_KIND_BIGBIRD, "block=50,wb=1,g=0,r=1"},
    {MNEMO_ATTN_KIND_BIGBIRD, "block=5,wb=1,g=0,r=40,pattern_seed=9"},
};
#define N_PCASES (sizeof(pcases) / sizeof(pcases[0]))

static const struct mni_pattern *pattern_of(int kind)
{
    switch (kind) {
    case MNEMO_ATTN_KIND_BLOCK: return &mni_pattern_block;
    case MNEMO_ATTN_KIND_STRIDED: return &mni_pattern_strided;
    case MNEMO_ATTN_KIND_LONGFORMER: return &mni_pattern_longformer;
    case MNEMO_ATTN_KIND_BIGBIRD: return &mni_pattern_bigbird;
    default: return NULL;
    }
}

static struct mnemo_attn_cfg make_cfg_layer(int kind, const char *opts, int NH, int n_ctx,
                                            int layer)
{
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, kind, NH, 16, n_ctx, 1, 4);
    struct mnemo_attn_cfg cfg;
    if (mnemo_attn_cfg_make(&cfg, &mc, opts, layer) != MNEMO_OK)
        fail_msg("%s '%s': %s", mnemo_attn_kind_name(kind), opts, mnemo_last_error());
    return cfg;
}

static struct mnemo_attn_cfg make_cfg(int kind, const char *opts, int NH, int n_ctx)
{
    return make_cfg_layer(kind, opts, NH, n_ctx, 0);
}

/* allowed[j] for j = 0..i (query i of head h), asked of mask() a few keys at a time. */
static void allowed_row(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                        int h, int i, unsigned char *allowed)
{
    float row[13];
    int keys[13];
    for (int j0 = 0; j0 <= i; j0 += 13) {
        const int n = i + 1 - j0 < 13 ? i + 1 - j0 : 13;
        for (int c = 0; c < n; c++) keys[c] = j0 + c, row[c] = 0.0f;
        p->mask(cfg, layer, h, &i, 1, keys, n, row, 13);
        for (int c = 0; c < n; c++) allowed[j0 + c] = row[c] == 0.0f;
    }
}

/* The set A(i) of head h as a list, e.g. "0,1,5,7,9". */
static const char *set_of(int kind, const char *opts, int NH, int h, int layer, int i)
{
    static char buf[4096];
    unsigned char allowed[MAXT];
    struct mnemo_attn_cfg cfg = make_cfg_layer(kind, opts, NH, MAXT, layer);
    allowed_row(pattern_of(kind), &cfg, layer, h, i, allowed);
    size_t used = 0;
    buf[0] = 0;
    for (int j = 0; j <= i; j++)
        if (allowed[j]) used += (size_t)snprintf(buf + used, sizeof(buf) - used, "%s%d", used ? "," : "", j);
    return buf;
}

#define EXPECT_SET(kind, opts, NH, h, i, want)                                                  \
    do {                                                                                       \
        const char *got_ = set_of((kind), (opts), (NH), (h), 0, (i));                          \
        if (strcmp(got_, (want)))                                                              \
            fail_msg("%s '%s' NH %d head %d: A(%d) = {%s}, expected {%s}",                     \
                     mnemo_attn_kind_name(kind), (opts), (NH), (h), (i), got_, (want));        \
    } while (0)

/* ---- pairs() against a brute-force count ------------------------------------------------- */

static void test_pairs_brute_force(void **state)
{
    (void)state;
    const int Ts[] = {1, 5, 37, 97, 200, MAXT};
    unsigned char allowed[MAXT];
    for (size_t ci = 0; ci < N_PCASES; ci++) {
        const struct pcase *pc = &pcases[ci];
        const struct mni_pattern *p = pattern_of(pc->kind);
        for (int NH = 1; NH <= 3; NH++) {
            struct mnemo_attn_cfg cfg = make_cfg(pc->kind, pc->opts, NH, MAXT);
            for (int h = 0; h < NH; h++) {
                double count = 0; /* over the window 0..T-1, T growing */
                int ti = 0;
                for (int i = 0; i < MAXT; i++) {
                    allowed_row(p, &cfg, 0, h, i, allowed);
                    if (!allowed[i])
                        fail_msg("%s '%s' head %d: query %d may not see itself",
                                 mnemo_attn_kind_name(pc->kind), pc->opts, h, i);
                    for (int j = 0; j <= i; j++) count += allowed[j];
                    if (i + 1 == Ts[ti]) {
                        const double got = p->pairs(&cfg, h, Ts[ti]);
                        if (got != count)
                            fail_msg("%s '%s' NH %d head %d T %d: pairs() = %.0f, mask() allows "
                                     "%.0f", mnemo_attn_kind_name(pc->kind), pc->opts, NH, h,
                                     Ts[ti], got, count);
                        ti++;
                    }
                }
            }
        }
    }
}

/* ---- next_keys() covers the mask ------------------------------------------------------------ */

/* Walks next_keys() for the queries q[0..nq) with tiles of at most max keys; checks the order
 * and the coverage of every allowed key; returns the keys listed. */
static long walk_keys(const struct mni_pattern *p, const struct mnemo_attn_cfg *cfg, int layer,
                      int h, const int *q, int nq, int max, const char *what)
{
    static unsigned char listed[MAXT], allowed[MAXT];
    int keys[64], cursor = 0, n, last = -1;
    long total = 0;
    memset(listed, 0, sizeof(listed));
    while ((n = p->next_keys(cfg, layer, h, q, nq, &cursor, keys, max)) > 0) {
        if (n > max) fail_msg("%s: %d keys > max %d", what, n, max);
        for (int c = 0; c < n; c++) {
            if (keys[c] <= last || keys[c] > q[nq - 1] || keys[c] < 0)
                fail_msg("%s: key %d after %d (last query %d)", what, keys[c], last, q[nq - 1]);
            last = keys[c];
            listed[keys[c]] = 1;
        }
        total += n;
        if (total > MAXT) fail_msg("%s: more keys than positions", what);
    }
    for (int r = 0; r < nq; r++) {
        allowed_row(p, cfg, layer, h, q[r], allowed);
        for (int j = 0; j <= q[r]; j++)
            if (allowed[j] && !listed[j])
                fail_msg("%s: query %d may see key %d, which was not listed", what, q[r], j);
    }
    return total;
}

static void test_next_keys_cover(void **state)
{
    (void)state;
    const int T = 300, blocks[] = {16, 48, 1, 7}, maxes[] = {64, 5};
    static int perm[MAXT], gstart[MAXT + 1];
    for (size_t ci = 0; ci < N_PCASES; ci++) {
        const struct pcase *pc = &pcases[ci];
        const struct mni_pattern *p = pattern_of(pc->kind);
        for (int NH = 1; NH <= 3; NH += 2) {
            struct mnemo_attn_cfg cfg = make_cfg(pc->kind, pc->opts, NH, MAXT);
            int sinks = 0, recent = 0;
            p->retain(&cfg, &sinks, &recent);
            for (int h = 0; h < NH; h++)
                for (int layer = 0; layer < 2; layer++) {
                    int ng = 1;
                    if (p->groups) ng = p->groups(&cfg, layer, h, T, perm, gstart);
                    else {
                        for (int t = 0; t < T; t++) perm[t] = t;
                        gstart[0] = 0, gstart[1] = T;
                    }
                    assert_int_equal(gstart[0], 0);
                    assert_int_equal(gstart[ng], T);
                    static unsigned char seen[MAXT];
                    memset(seen, 0, sizeof(seen));
                    for (int t = 0; t < T; t++) {
                        assert_true(perm[t] >= 0 && perm[t] < T && !seen[perm[t]]);
                        seen[perm[t]] = 1;
                    }
                    char what[256];
                    long listed = 0;
                    double useful = 0;
                    for (size_t bi = 0; bi < sizeof(blocks) / sizeof(blocks[0]); bi++)
                        for (size_t mi = 0; mi < 2; mi++)
                            for (int g = 0; g < ng; g++)
                                for (int f = gstart[g]; f < gstart[g + 1]; f += blocks[bi]) {
                                    const int nq = gstart[g + 1] - f < blocks[bi] ? gstart[g + 1] - f : blocks[bi];
                                    for (int r = 1; r < nq; r++)
                                        if (perm[f + r] <= perm[f + r - 1])
                                            fail_msg("%s '%s': a group's queries are not "
                                                     "ascending", mnemo_attn_kind_name(pc->kind), pc->opts);
                                    snprintf(what, sizeof(what), "%s '%s' NH %d head %d layer %d, "
                                             "queries %d..%d", mnemo_attn_kind_name(pc->kind),
                                             pc->opts, NH, h, layer, perm[f], perm[f + nq - 1]);
                                    const long n = walk_keys(p, &cfg, layer, h, perm + f, nq, maxes[mi], what);
                                    if (bi == 0 && mi == 0) listed += n * nq;
                                }
                    useful = p->pairs(&cfg, h, T);
                    if (layer == 0 && h == NH - 1)
                        printf("%s '%s' NH %d head %d: %.0f allowed pairs, %ld computed in "
                               "blocks of 16 (%.0f%%)\n", mnemo_attn_kind_name(pc->kind),
                               pc->opts, NH, h, useful, listed, 100.0 * useful / (double)listed);
                    /* a single query (streaming): only keys the state holds */
                    for (int i = 0; i < T; i++) {
                        int keys[64], cursor = 0, n;
                        while ((n = p->next_keys(&cfg, layer, h, &i, 1, &cursor, keys, 64)) > 0)
                            for (int c = 0; c < n; c++)
                                if (recent > 0 && keys[c] >= sinks && keys[c] <= i - recent)
                                    fail_msg("%s '%s': query %d lists key %d, which a state of "
                                             "%d sinks and %d recent keys no longer holds",
                                             mnemo_attn_kind_name(pc->kind), pc->opts, i, keys[c],
                                             sinks, recent);
                        snprintf(what, sizeof(what), "%s '%s' NH %d head %d layer %d, query %d",
                                 mnemo_attn_kind_name(pc->kind), pc->opts, NH, h, layer, i);
                        if (i % 17 == 0 || i < 10) walk_keys(p, &cfg, layer, h, &i, 1, 64, what);
                    }
                }
        }
    }
}

/* ---- hand-checked sets -------------------------------------------------------------------- */

static void test_block_sets(void **state)
{
    (void)state;
    const int K = MNEMO_ATTN_KIND_BLOCK;
    EXPECT_SET(K, "b=4", 1, 0, 0, "0");
    EXPECT_SET(K, "b=4", 1, 0, 3, "0,1,2,3");
    EXPECT_SET(K, "b=4", 1, 0, 4, "4");
    EXPECT_SET(K, "b=4", 2, 1, 6, "4,5,6");
    EXPECT_SET(K, "b=4,prev=true", 1, 0, 2, "0,1,2");
    EXPECT_SET(K, "b=4,prev=true", 1, 0, 4, "0,1,2,3,4");
    EXPECT_SET(K, "b=4,prev=true", 1, 0, 9, "4,5,6,7,8,9");
    EXPECT_SET(K, "b=1", 1, 0, 9, "9");
    EXPECT_SET(K, "b=1,prev=true", 1, 0, 9, "8,9");
}

static void test_strided_sets(void **state)
{
    (void)state;
    const int K = MNEMO_ATTN_KIND_STRIDED;
    /* strided: A = the previous l and itself, B = every l-th back */
    EXPECT_SET(K, "l=4", 2, 0, 9, "5,6,7,8,9");
    EXPECT_SET(K, "l=4", 2, 1, 9, "1,5,9");
    EXPECT_SET(K, "l=4", 1, 0, 9, "1,5,6,7,8,9");
    EXPECT_SET(K, "l=4", 2, 0, 2, "0,1,2");
    EXPECT_SET(K, "l=4", 2, 1, 2, "2");
    EXPECT_SET(K, "l=4", 4, 1, 8, "4,5,6,7,8"); /* heads 0, 1 of 4 take A */
    EXPECT_SET(K, "l=4", 4, 2, 8, "0,4,8");
    EXPECT_SET(K, "l=4", 3, 1, 8, "0,4,8"); /* NH/2 = 1: heads 1, 2 take B */
    /* fixed: A = the query's block of l, B = the c summary columns and itself */
    EXPECT_SET(K, "l=4,mode=fixed,c=1", 2, 0, 9, "8,9");
    EXPECT_SET(K, "l=4,mode=fixed,c=1", 2, 1, 9, "3,7,9");
    EXPECT_SET(K, "l=4,mode=fixed,c=1", 2, 1, 7, "3,7");
    EXPECT_SET(K, "l=4,mode=fixed,c=1", 1, 0, 9, "3,7,8,9");
    EXPECT_SET(K, "l=4,mode=fixed,c=2", 2, 1, 10, "2,3,6,7,10");
    EXPECT_SET(K, "l=4,mode=fixed,c=2", 1, 0, 10, "2,3,6,7,8,9,10");
    EXPECT_SET(K, "l=4,mode=fixed,c=4", 2, 1, 6, "0,1,2,3,4,5,6");
}

static void test_longformer_sets(void **state)
{
    (void)state;
    const int K = MNEMO_ATTN_KIND_LONGFORMER;
    EXPECT_SET(K, "w=3,g=0", 1, 0, 9, "7,8,9");
    EXPECT_SET(K, "w=3,g=0", 1, 0, 1, "0,1");
    EXPECT_SET(K, "w=3,g=1", 1, 0, 9, "0,7,8,9");
    EXPECT_SET(K, "w=3,dilation=2,g=2", 1, 0, 9, "0,1,5,7,9");
    EXPECT_SET(K, "w=3,dilation=2,g=2", 1, 0, 3, "0,1,3");
    EXPECT_SET(K, "w=3,dilation=2,g=2", 1, 0, 2, "0,1,2");
    EXPECT_SET(K, "w=3,dilation=2,g=2", 1, 0, 0, "0");
    EXPECT_SET(K, "w=4,dilation=3,g=5", 1, 0, 11, "0,1,2,3,4,5,8,11");
    /* per layer: the layer's own w */
    const char *got = set_of(K, "w=2/3/4/5,g=0", 1, 0, 2, 9);
    if (strcmp(got, "6,7,8,9")) fail_msg("longformer w=2/3/4/5 layer 2: A(9) = {%s}", got);
    got = set_of(K, "w=2/3/4/5,g=0", 1, 0, 0, 9);
    if (strcmp(got, "8,9")) fail_msg("longformer w=2/3/4/5 layer 0: A(9) = {%s}", got);
}

static void test_bigbird_sets(void **state)
{
    (void)state;
    const int K = MNEMO_ATTN_KIND_BIGBIRD;
    /* before any random block is eligible: the window blocks (and globals) only */
    EXPECT_SET(K, "block=4,wb=2,g=2,r=1", 1, 0, 5, "0,1,2,3,4,5");
    EXPECT_SET(K, "block=4,wb=2,g=0,r=1", 1, 0, 7, "0,1,2,3,4,5,6,7");
    EXPECT_SET(K, "block=4,wb=1,g=0,r=0", 1, 0, 9, "8,9");
    EXPECT_SET(K, "block=4,wb=1,g=3,r=0", 1, 0, 9, "0,1,2,8,9");
    /* r >= the eligible blocks: all of them (here everything before the window) */
    EXPECT_SET(K, "block=4,wb=2,g=2,r=3", 1, 0, 17, "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17");
    /* entirely global blocks are not eligible: g=8 covers blocks 0, 1; eligible 2 only */
    EXPECT_SET(K, "block=4,wb=2,g=8,r=3", 1, 0, 17, "0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17");
    EXPECT_SET(K, "block=4,wb=2,g=8,r=3", 1, 0, 13, "0,1,2,3,4,5,6,7,8,9,10,11,12,13");
    /* one random block of 0..2 for query block 4 (window 12..17): block 0 past the globals
     * {2,3}, or {4..7}, or {8..11}; the same for every query of the block */
    for (int seed = 0; seed < 20; seed++) {
        char opts[64];
        snprintf(opts, sizeof(opts), "block=4,wb=2,g=2,r=1,pattern_seed=%d", seed);
        char first[256];
        snprintf(first, sizeof(first), "%s", set_of(K, opts, 1, 0, 0, 17));
        const char *a = "0,1,2,3,12,13,14,15,16,17", *b = "0,1,4,5,6,7,12,13,14,15,16,17",
                   *c = "0,1,8,9,10,11,12,13,14,15,16,17";
        if (strcmp(first, a) && strcmp(first, b) && strcmp(first, c))
            fail_msg("bigbird '%s': A(17) = {%s}", opts, first);
        char want19[300];
        snprintf(want19, sizeof(want19), "%s,18,19", first);
        const char *got = set_of(K, opts, 1, 0, 0, 19);
        if (strcmp(got, want19)) fail_msg("bigbird '%s': A(19) = {%s}, A(17) = {%s}", opts, got, first);
        if (strcmp(set_of(K, opts, 1, 0, 0, 16), "0,1,2,3,12,13,14,15,16") &&
            strcmp(set_of(K, opts, 1, 0, 0, 16), "0,1,4,5,6,7,12,13,14,15,16") &&
            strcmp(set_of(K, opts, 1, 0, 0, 16), "0,1,8,9,10,11,12,13,14,15,16"))
            fail_msg("bigbird '%s': A(16)", opts);
    }
}

/* The random blocks of query block qb (block = 1, g = 0, wb = 1: key j is block j). */
static int drawn(const struct mnemo_attn_cfg *cfg, int layer, int qb, unsigned char *in)
{
    unsigned char allowed[MAXT];
    allowed_row(&mni_pattern_bigbird, cfg, layer, 0, qb, allowed);
    int n = 0;
    for (int j = 0; j < qb; j++) n += (in[j] = allowed[j]);
    return n;
}

static void test_bigbird_random(void **state)
{
    (void)state;
    /* r = 3 of the 10 blocks before query block 10: distinct (a set), three of them, uniform
     * over the blocks across layers, and a function of (seed, layer, qb) only */
    struct mnemo_attn_cfg cfg = make_cfg(MNEMO_ATTN_KIND_BIGBIRD, "block=1,wb=1,g=0,r=3", 1, MAXT);
    int hist[10] = {0};
    unsigned char in[MAXT], again[MAXT];
    const int N = 6000;
    for (int layer = 0; layer < N; layer++) {
        assert_int_equal(drawn(&cfg, layer, 10, in), 3);
        for (int j = 0; j < 10; j++) hist[j] += in[j];
        if (layer < 50) {
            drawn(&cfg, layer, 10, again);
            assert_memory_equal(in, again, 10);
        }
    }
    const double expect = N * 0.3, sd = sqrt(N * 0.3 * 0.7);
    for (int j = 0; j < 10; j++)
        if (fabs(hist[j] - expect) > 5 * sd)
            fail_msg("bigbird: block %d drawn %d times in %d draws of 3 of 10 (expected %.0f)", j,
                     hist[j], N, expect);
    /* the seed changes the draws; another query block draws independently */
    struct mnemo_attn_cfg c2 = make_cfg(MNEMO_ATTN_KIND_BIGBIRD, "block=1,wb=1,g=0,r=3,pattern_seed=1", 1, MAXT);
    int differ = 0;
    for (int layer = 0; layer < 20; layer++) {
        drawn(&cfg, layer, 10, in);
        drawn(&c2, layer, 10, again);
        differ += memcmp(in, again, 10) != 0;
    }
    assert_true(differ >= 10);
    /* fewer eligible blocks than r: all of them */
    assert_int_equal(drawn(&cfg, 0, 3, in), 3);
    assert_int_equal(drawn(&cfg, 0, 2, in), 2);
}

/* ---- validate ----------------------------------------------------------------------------- */

static void expect_refused(int kind, const char *opts, const char *msg_part)
{
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, kind, 2, 16, 256, 1, 2);
    struct mnemo_attn_cfg cfg;
    if (mnemo_attn_cfg_make(&cfg, &mc, opts, 0) != MNEMO_ERR_ARG)
        fail_msg("%s '%s' was accepted", mnemo_attn_kind_name(kind), opts);
    if (!strstr(mnemo_last_error(), msg_part))
        fail_msg("%s '%s': message '%s' lacks '%s'", mnemo_attn_kind_name(kind), opts,
                 mnemo_last_error(), msg_part);
}

static void expect_accepted(int kind, const char *opts)
{
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, kind, 2, 16, 256, 1, 2);
    struct mnemo_attn_cfg cfg;
    if (mnemo_attn_cfg_make(&cfg, &mc, opts, 0) != MNEMO_OK)
        fail_msg("%s '%s': %s", mnemo_attn_kind_name(kind), opts, mnemo_last_error());
}

static void test_validate(void **state)
{
    (void)state;
    expect_refused(MNEMO_ATTN_KIND_STRIDED, "mode=fixed,c=300",
                   "strided attention: option c = 300 must be <= l = 128");
    expect_accepted(MNEMO_ATTN_KIND_STRIDED, "mode=fixed,c=128");
    expect_accepted(MNEMO_ATTN_KIND_STRIDED, "l=4"); /* c is fixed mode's: the default 8 is fine */
    expect_refused(MNEMO_ATTN_KIND_STRIDED, "l=4,mode=fixed", "option c = 8 must be <= l = 4");
    expect_refused(MNEMO_ATTN_KIND_STRIDED, "l=0", "strided attention: option l");
    expect_refused(MNEMO_ATTN_KIND_STRIDED, "c=0", "strided attention: option c");
    expect_refused(MNEMO_ATTN_KIND_BLOCK, "b=0", "block attention: option b");
    expect_refused(MNEMO_ATTN_KIND_LONGFORMER, "w=4000000,dilation=4000", "option w = 4000000");
    expect_refused(MNEMO_ATTN_KIND_LONGFORMER, "dilation=0", "longformer attention: option dilation");
    expect_accepted(MNEMO_ATTN_KIND_LONGFORMER, "w=64/128,g=0");
    expect_refused(MNEMO_ATTN_KIND_BIGBIRD, "block=0", "bigbird attention: option block");
    expect_refused(MNEMO_ATTN_KIND_BIGBIRD, "wb=0", "bigbird attention: option wb");
    expect_accepted(MNEMO_ATTN_KIND_BIGBIRD, "g=0,r=0");
}

/* ---- a single head, fast vs reference -------------------------------------------------------- */

static void test_single_head_fast_vs_ref(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < N_PCASES; ci++) {
        const struct pcase *pc = &pcases[ci];
        const struct mnemo_attn_ops *fast = mnemo_attn_ops_get(pc->kind);
        const struct mnemo_attn_ops *ref = mnemo_attn_ops_get_ref(pc->kind);
        const int B = 1, T = 150, NH = 1;
        struct mnemo_attn_cfg cfg = make_cfg(pc->kind, pc->opts, NH, T);
        struct tu_attn_bufs bf, br;
        tu_attn_bufs_init(&bf, fast, &cfg, B, T);
        tu_attn_bufs_init(&br, ref, &cfg, B, T);
        tu_fill_normal(bf.qkv, bf.nqkv, 1.0f, 41 + ci);
        tu_fill_normal(bf.dout, bf.nout, 1.0f, 42 + ci);
        memcpy(br.qkv, bf.qkv, bf.nqkv * sizeof(float));
        memcpy(br.dout, bf.dout, bf.nout * sizeof(float));
        struct mnemo_attn_io iof = tu_attn_io(&bf), ior = tu_attn_io(&br);
        iof.layer = ior.layer = 1;
        assert_int_equal(fast->forward(&cfg, &iof), MNEMO_OK);
        assert_int_equal(ref->forward(&cfg, &ior), MNEMO_OK);
        char what[128];
        snprintf(what, sizeof(what), "%s '%s' NH 1 out", mnemo_attn_kind_name(pc->kind), pc->opts);
        TU_ASSERT_CLOSE(what, bf.out, br.out, bf.nout, 2e-5f, 2e-4f);
        assert_int_equal(fast->backward(&cfg, &iof), MNEMO_OK);
        assert_int_equal(ref->backward(&cfg, &ior), MNEMO_OK);
        if (tu_rel_max_err(bf.dqkv, br.dqkv, bf.nqkv) > 5e-4) {
            snprintf(what, sizeof(what), "%s '%s' NH 1 dqkv", mnemo_attn_kind_name(pc->kind), pc->opts);
            tu_close(what, bf.dqkv, br.dqkv, bf.nqkv, 0, 0);
            fail();
        }
        /* flops_per_token counts the pairs */
        const double fl = fast->flops_per_token(&cfg, T);
        const double want = 4.0 * cfg.head_dim * pattern_of(pc->kind)->pairs(&cfg, 0, T) / T;
        if (fabs(fl - want) > 1e-9 * want) fail_msg("%s: flops %.6g vs %.6g", what, fl, want);
        tu_attn_bufs_free(&bf), tu_attn_bufs_free(&br);
    }
}

/* ---- a long window on several threads ---------------------------------------------------------
 * T crosses several of the forward's layout chunks (256 positions) and their slices, with B 2:
 * fast vs reference, and the fast outputs and gradients the same bits for 1, 2 and 3 threads
 * (each block and each (window, head) of the backward is one thread's, in a fixed order). */

static void test_threads_long(void **state)
{
    (void)state;
    const int B = 2, T = 700, NH = 4, threads[] = {1, 2, 3};
    for (size_t ci = 0; ci < N_PCASES; ci++) {
        const struct pcase *pc = &pcases[ci];
        const struct mnemo_attn_ops *fast = mnemo_attn_ops_get(pc->kind);
        const struct mnemo_attn_ops *ref = mnemo_attn_ops_get_ref(pc->kind);
        struct mnemo_model_config mc;
        tu_attn_model_config(&mc, pc->kind, NH, 16, T, 1, 4);
        struct mnemo_attn_cfg cfg;
        if (mnemo_attn_cfg_make(&cfg, &mc, pc->opts, 2) != MNEMO_OK)
            fail_msg("%s '%s': %s", mnemo_attn_kind_name(pc->kind), pc->opts, mnemo_last_error());
        struct tu_attn_bufs br, bf[3];
        tu_attn_bufs_init(&br, ref, &cfg, B, T);
        tu_fill_normal(br.qkv, br.nqkv, 1.0f, 91 + ci);
        tu_fill_normal(br.dout, br.nout, 1.0f, 92 + ci);
        struct mnemo_attn_io ior = tu_attn_io(&br);
        ior.layer = 2;
        assert_int_equal(ref->forward(&cfg, &ior), MNEMO_OK);
        assert_int_equal(ref->backward(&cfg, &ior), MNEMO_OK);
        char what[160];
        for (int k = 0; k < 3; k++) {
            tu_attn_bufs_init(&bf[k], fast, &cfg, B, T);
            memcpy(bf[k].qkv, br.qkv, br.nqkv * sizeof(float));
            memcpy(bf[k].dout, br.dout, br.nout * sizeof(float));
            struct mnemo_attn_io io = tu_attn_io(&bf[k]);
            io.layer = 2;
            assert_int_equal(mnemo_set_threads(threads[k]), MNEMO_OK);
            assert_int_equal(fast->forward(&cfg, &io), MNEMO_OK);
            assert_int_equal(fast->backward(&cfg, &io), MNEMO_OK);
            snprintf(what, sizeof(what), "%s '%s' T %d, %d threads, out", mnemo_attn_kind_name(pc->kind),
                     pc->opts, T, threads[k]);
            TU_ASSERT_CLOSE(what, bf[k].out, br.out, br.nout, 2e-5f, 2e-4f);
            if (tu_rel_max_err(bf[k].dqkv, br.dqkv, br.nqkv) > 5e-4) {
                snprintf(what, sizeof(what), "%s '%s' T %d, %d threads, dqkv",
                         mnemo_attn_kind_name(pc->kind), pc->opts, T, threads[k]);
                tu_close(what, bf[k].dqkv, br.dqkv, br.nqkv, 0, 0);
                fail();
            }
            if (k > 0 && (memcmp(bf[k].out, bf[0].out, br.nout * sizeof(float)) ||
                          memcmp(bf[k].dqkv, bf[0].dqkv, br.nqkv * sizeof(float))))
                fail_msg("%s '%s': %d threads do not give the bits of 1",
                         mnemo_attn_kind_name(pc->kind), pc->opts, threads[k]);
        }
        for (int k = 0; k < 3; k++) tu_attn_bufs_free(&bf[k]);
        tu_attn_bufs_free(&br);
    }
    assert_int_equal(mnemo_set_threads(2), MNEMO_OK);
}

/* ---- streaming over a long window: the rings wrap (the conformance window is short) ---------- */

static void test_stream_long(void **state)
{
    (void)state;
    for (size_t ci = 0; ci < N_PCASES; ci++) {
        const struct pcase *pc = &pcases[ci];
        const int T = 300, NH = 2, HS = 16;
        const size_t C = (size_t)NH * HS;
        struct mnemo_attn_cfg cfg = make_cfg(pc->kind, pc->opts, NH, T);
        float *want = NULL;
        for (int which = 0; which < 2; which++) {
            const struct mnemo_attn_ops *ops =
                which ? mnemo_attn_ops_get_ref(pc->kind) : mnemo_attn_ops_get(pc->kind);
            struct tu_attn_bufs b;
            tu_attn_bufs_init(&b, ops, &cfg, 1, T);
            tu_fill_normal(b.qkv, b.nqkv, 1.0f, 77 + ci);
            struct mnemo_attn_io io = tu_attn_io(&b);
            assert_int_equal(ops->forward(&cfg, &io), MNEMO_OK);
            if (!want) {
                want = malloc(b.nout * sizeof(float));
                assert_non_null(want);
                memcpy(want, b.out, b.nout * sizeof(float));
            }
            const int chunk = which ? 300 : 7;
            void *st = mni_alloc(ops->state_bytes(&cfg));
            void *scr = mni_alloc(ops->step_scratch_bytes(&cfg, chunk));
            float *got = malloc(b.nout * sizeof(float));
            assert_true(st && scr && got);
            ops->state_init(&cfg, st);
            for (int t = 0; t < T; t += chunk) {
                const int n = T - t < chunk ? T - t : chunk;
                if (tu_attn_step(ops, &cfg, st, NULL, got + (size_t)t * C, b.qkv + (size_t)t * 3 * C,
                                 n, scr) != MNEMO_OK)
                    fail_msg("%s '%s' step at %d: %s", ops->name, pc->opts, t, mnemo_last_error());
            }
            char what[128];
            snprintf(what, sizeof(what), "%s '%s' %s step over %d tokens",
                     mnemo_attn_kind_name(pc->kind), pc->opts, which ? "ref" : "fast", T);
            TU_ASSERT_CLOSE(what, got, want, b.nout, 1e-4f, 1e-4f);
            free(got);
            mni_free(st), mni_free(scr);
            tu_attn_bufs_free(&b);
        }
        free(want);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_block_sets),
        cmocka_unit_test(test_strided_sets),
        cmocka_unit_test(test_longformer_sets),
        cmocka_unit_test(test_bigbird_sets),
        cmocka_unit_test(test_bigbird_random),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_pairs_brute_force),
        cmocka_unit_test(test_next_keys_cover),
        cmocka_unit_test(test_single_head_fast_vs_ref),
        cmocka_unit_test(test_threads_long),
        cmocka_unit_test(test_stream_long),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
