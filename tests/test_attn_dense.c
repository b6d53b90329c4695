/*
 * test_attn_dense.c -- the dense attention kind and the kind registry.
 *
 *  - registry: enum <-> name <-> ops, for every kind a fast and a reference ops object with
 *    every required slot, well-formed option tables; mnemo_attn_cfg_make's option parsing
 *    (errors name the kind and the option) and mnemo_attn_opts_format (round trip);
 *  - validate and bad io give MNEMO_ERR_ARG with a message naming the field;
 *  - the tiled forward and backward equal the naive double-precision reference over shapes
 *    that hit every edge (T = 1, T not a multiple of the 24-query strip or the 64-key block,
 *    T > 200, HS not a multiple of 8, HS = 256, B up to 3, RoPE on and off, large scores);
 *  - the reference backward equals central finite differences of the reference forward;
 *  - forward, and backward within one mode, give the same bits for 1 and 2 threads; outputs
 *    are causal;
 *  - a session fed token by token, and in chunks, gives the forward's outputs; a full cache
 *    gives MNEMO_ERR_FULL and leaves the state untouched.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "attn/attn_int.h"
#include "mnemo_attn.h"
#include "testutil.h"

static const struct mnemo_attn_ops *const FAST = &mni_attn_dense, *const REF = &mni_attn_dense_ref;

static struct mnemo_attn_cfg make_cfg(int NH, int HS, int n_ctx, int rope)
{
    return tu_attn_cfg(MNEMO_ATTN_KIND_DENSE, NH, HS, n_ctx, rope);
}

static void forward_ok(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                       struct tu_attn_bufs *b)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    enum mnemo_status st = ops->forward(cfg, &io);
    if (st != MNEMO_OK) fail_msg("forward (%s): %s", ops->is_ref ? "ref" : "fast", mnemo_last_error());
}

static void backward_ok(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                        struct tu_attn_bufs *b)
{
    struct mnemo_attn_io io = tu_attn_io(b);
    enum mnemo_status st = ops->backward(cfg, &io);
    if (st != MNEMO_OK) fail_msg("backward (%s): %s", ops->is_ref ? "ref" : "fast", mnemo_last_error());
}

/* ---- registry and validation ----------------------------------------------------------------- */

/* The slots every kind must fill (params, init_params, carry_bytes and after_step may be NULL). */
static void check_slots(const struct mnemo_attn_ops *o)
{
    if (!(o->caps && o->validate && o->flops_per_token && o->act_bytes && o->scratch_bytes &&
          o->forward && o->backward && o->state_bytes && o->step_scratch_bytes && o->state_init &&
          o->step && o->state_live_bytes))
        fail_msg("%s%s: a required slot is NULL", o->name, o->is_ref ? " (ref)" : "");
}

static int key_ok(const char *key)
{
    if (!key || !*key) return 0;
    for (const char *c = key; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_')) return 0;
    return 1;
}

static int integral(double x) { return isfinite(x) && floor(x) == x; }

/* One kind's option table is well formed: keys [a-z0-9_]+ and unique, known types, scopes and
 * flags, lo <= def <= hi, integral bounds for INT, ENUM choices that name indices 0..hi, help. */
static void check_opt_table(int kind, const struct mnemo_attn_ops *o)
{
    assert_true(o->n_opts >= 0 && o->n_opts <= MNEMO_ATTN_MAX_OPTS);
    assert_true((o->opts == NULL) == (o->n_opts == 0));
    for (int i = 0; i < o->n_opts; i++) {
        const struct mnemo_attn_opt *r = &o->opts[i];
        if (!key_ok(r->key)) fail_msg("%s: option %d: bad key '%s'", o->name, i, r->key ? r->key : "(null)");
        for (int j = 0; j < i; j++)
            if (!strcmp(o->opts[j].key, r->key)) fail_msg("%s: option %s twice", o->name, r->key);
        assert_int_equal(mnemo_attn_opt_find(kind, r->key), i);
        if (r->type < 0 || r->type >= MNEMO_ATTN_OPT_TYPE_COUNT)
            fail_msg("%s: option %s: type %d", o->name, r->key, r->type);
        if (r->scope < 0 || r->scope >= MNEMO_ATTN_SCOPE_COUNT)
            fail_msg("%s: option %s: scope %d", o->name, r->key, r->scope);
        const int known = MNEMO_ATTN_OPT_PER_LAYER | MNEMO_ATTN_OPT_MUTABLE | MNEMO_ATTN_OPT_CTX_ZERO;
        if (r->flags & ~known) fail_msg("%s: option %s: flags 0x%x", o->name, r->key, r->flags);
        if ((r->flags & MNEMO_ATTN_OPT_MUTABLE) && r->scope != MNEMO_ATTN_SCOPE_MODEL)
            fail_msg("%s: option %s: only a model option can be mutable", o->name, r->key);
        if ((r->flags & MNEMO_ATTN_OPT_CTX_ZERO) && !(r->type == MNEMO_ATTN_OPT_INT && r->lo <= 0))
            fail_msg("%s: option %s: CTX_ZERO needs an INT that may be 0", o->name, r->key);
        if (!(isfinite(r->lo) && isfinite(r->hi) && r->lo <= r->def && r->def <= r->hi))
            fail_msg("%s: option %s: default %g outside [%g, %g]", o->name, r->key, r->def, r->lo, r->hi);
        if (!r->help || !r->help[0]) fail_msg("%s: option %s has no help", o->name, r->key);
        if (r->type == MNEMO_ATTN_OPT_INT || r->type == MNEMO_ATTN_OPT_ENUM ||
            r->type == MNEMO_ATTN_OPT_BOOL)
            if (!integral(r->def) || !integral(r->lo) || !integral(r->hi))
                fail_msg("%s: option %s: non-integral default or range", o->name, r->key);
        if (r->type == MNEMO_ATTN_OPT_BOOL) assert_true(r->lo == 0 && r->hi == 1);
        if (r->type != MNEMO_ATTN_OPT_ENUM) {
            if (r->choices) fail_msg("%s: option %s: choices on a non-ENUM", o->name, r->key);
            continue;
        }
        // ENUM: names [a-z0-9_]+, unique, indices 0..hi
        if (!r->choices) fail_msg("%s: option %s: an ENUM without choices", o->name, r->key);
        char names[16][64];
        int n = 0;
        for (const char *c = r->choices;; n++) {
            size_t len = strcspn(c, "|");
            assert_true(n < 16 && len > 0 && len < 64);
            snprintf(names[n], sizeof(names[n]), "%.*s", (int)len, c);
            if (!key_ok(names[n])) fail_msg("%s: option %s: bad choice '%s'", o->name, r->key, names[n]);
            for (int k = 0; k < n; k++) assert_string_not_equal(names[k], names[n]);
            if (!c[len]) break;
            c += len + 1;
        }
        n++;
        if (r->lo != 0 || r->hi != n - 1)
            fail_msg("%s: option %s: %d choices but range [%g, %g]", o->name, r->key, n, r->lo, r->hi);
    }
}

/* The two ops objects of a kind describe the same options (row by row). */
static void check_same_opts(const struct mnemo_attn_ops *a, const struct mnemo_attn_ops *b)
{
    assert_int_equal(a->n_opts, b->n_opts);
    for (int i = 0; i < a->n_opts; i++) {
        const struct mnemo_attn_opt *x = &a->opts[i], *y = &b->opts[i];
        assert_string_equal(x->key, y->key);
        assert_true(x->type == y->type && x->scope == y->scope && x->flags == y->flags);
        assert_true(x->def == y->def && x->lo == y->lo && x->hi == y->hi);
        assert_true((x->choices == NULL) == (y->choices == NULL));
        if (x->choices) assert_string_equal(x->choices, y->choices);
    }
}

static void test_registry(void **state)
{
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(MNEMO_ATTN_KIND_DENSE);
    assert_ptr_equal(ops, FAST);
    assert_ptr_equal(mnemo_attn_ops_get_ref(MNEMO_ATTN_KIND_DENSE), REF);
    assert_int_equal(ops->api_version, MNEMO_ATTN_API_VERSION);
    assert_string_equal(ops->name, "dense");
    assert_null(mnemo_attn_ops_get(-1));
    assert_null(mnemo_attn_ops_get(MNEMO_ATTN_KIND_COUNT));
    assert_null(mnemo_attn_ops_get_ref(-1));
    assert_null(mnemo_attn_ops_get_ref(MNEMO_ATTN_KIND_COUNT));
    assert_string_equal(mnemo_attn_kind_name(MNEMO_ATTN_KIND_DENSE), "dense");
    assert_null(mnemo_attn_kind_name(MNEMO_ATTN_KIND_COUNT));
    assert_int_equal(mnemo_attn_kind_from_name("dense"), MNEMO_ATTN_KIND_DENSE);
    assert_int_equal(mnemo_attn_kind_from_name("Dense "), -1);
    assert_int_equal(mnemo_attn_kind_from_name(NULL), -1);
    assert_int_equal(mnemo_attn_opt_find(MNEMO_ATTN_KIND_COUNT, "budget"), -1);
    assert_int_equal(mnemo_attn_opt_find(-1, "budget"), -1);

    // every kind: a fast and a reference ops object, every required slot, the same name and
    // option table, a well-formed table
    for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
        const struct mnemo_attn_ops *f = mnemo_attn_ops_get(k), *r = mnemo_attn_ops_get_ref(k);
        assert_non_null(f);
        assert_non_null(r);
        assert_ptr_not_equal(f, r);
        assert_int_equal(f->api_version, MNEMO_ATTN_API_VERSION);
        assert_int_equal(r->api_version, MNEMO_ATTN_API_VERSION);
        assert_int_equal(f->is_ref, 0);
        assert_int_equal(r->is_ref, 1);
        assert_non_null(f->name);
        assert_non_null(r->name);
        assert_string_equal(f->name, r->name);
        assert_string_equal(mnemo_attn_kind_name(k), f->name);
        assert_int_equal(mnemo_attn_kind_from_name(f->name), k);
        check_slots(f);
        check_slots(r);
        check_opt_table(k, f);
        check_same_opts(f, r);
        assert_int_equal(mnemo_attn_opt_find(k, "no_such_option"), -1);
        assert_int_equal(mnemo_attn_opt_find(k, NULL), -1);

        // the defaults make a valid cfg; options past the table stay 0
        struct mnemo_model_config mc;
        tu_attn_model_config(&mc, k, 4, 16, 64, 1, 2);
        struct mnemo_attn_cfg cfg;
        if (mnemo_attn_cfg_make(&cfg, &mc, NULL, -1) != MNEMO_OK)
            fail_msg("%s defaults: %s", f->name, mnemo_last_error());
        for (int i = 0; i < MNEMO_ATTN_MAX_OPTS; i++)
            assert_true(cfg.opt[i] == (i < f->n_opts ? f->opts[i].def : 0.0));
        assert_int_equal(f->validate(&cfg), MNEMO_OK);
        assert_int_equal(r->validate(&cfg), MNEMO_OK);
        // both ops objects describe the same kind: its capabilities and FLOPs
        assert_int_equal(f->caps(&cfg), r->caps(&cfg));
        assert_true(f->caps(&cfg) & MNEMO_ATTN_CAP_CAUSAL);
        if (f->caps(&cfg) & MNEMO_ATTN_CAP_STEP_EXACT) assert_true(f->caps(&cfg) & MNEMO_ATTN_CAP_STEP);
        assert_true(f->flops_per_token(&cfg, 64) == r->flops_per_token(&cfg, 64));
        assert_true(f->flops_per_token(&cfg, 64) > 0);
    }

    // dense: session options only (the StreamingLLM window), no parameters of its own; a
    // causal, exact, unbounded session without a window
    assert_int_equal(ops->n_opts, MNI_DENSE_OPT_COUNT);
    for (int i = 0; i < ops->n_opts; i++) assert_int_equal(ops->opts[i].scope, MNEMO_ATTN_SCOPE_SESSION);
    struct mnemo_attn_cfg cfg = make_cfg(4, 64, 128, 1);
    struct mnemo_attn_param tab[MNEMO_ATTN_MAX_PARAMS];
    assert_true(ops->params == NULL || ops->params(&cfg, tab) == 0);
    assert_true(REF->params == NULL || REF->params(&cfg, tab) == 0);
    const uint32_t caps = ops->caps(&cfg);
    assert_true(caps & MNEMO_ATTN_CAP_STEP);
    assert_true(caps & MNEMO_ATTN_CAP_STEP_EXACT);
    assert_true(caps & MNEMO_ATTN_CAP_TRAIN);
    assert_false(caps & MNEMO_ATTN_CAP_BOUNDED);
    assert_false(caps & MNEMO_ATTN_CAP_CARRY);
    // FLOPs: QK^T and PV over the (T + 1) / 2 keys a query sees on average
    assert_true(fabs(ops->flops_per_token(&cfg, 128) - 4.0 * 4 * 64 * 64.5) < 1e-6);
}

/* mnemo_attn_cfg_make of kind (NH 2, HS 16, n_ctx 32, n_layer layers) with opts for layer:
 * MNEMO_ERR_ARG with a message naming the kind and `what` (the option, or the unknown key). */
static void expect_opts_err(int kind, int n_layer, const char *opts, int layer, const char *what)
{
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, kind, 2, 16, 32, 1, n_layer);
    struct mnemo_attn_cfg cfg;
    const char *name = mnemo_attn_kind_name(kind);
    enum mnemo_status st = mnemo_attn_cfg_make(&cfg, &mc, opts, layer);
    if (st != MNEMO_ERR_ARG)
        fail_msg("%s '%s' (layer %d): status %d, want MNEMO_ERR_ARG", name, opts, layer, (int)st);
    const char *msg = mnemo_last_error();
    if (!strstr(msg, name) || !strstr(msg, what))
        fail_msg("%s '%s': message '%s' does not name '%s' and '%s'", name, opts, msg, name, what);
}

/* The cfg of kind for opts at layer (MNEMO_OK expected). */
static struct mnemo_attn_cfg opts_ok(int kind, int n_layer, const char *opts, int layer)
{
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, kind, 2, 16, 32, 1, n_layer);
    struct mnemo_attn_cfg cfg;
    if (mnemo_attn_cfg_make(&cfg, &mc, opts, layer) != MNEMO_OK)
        fail_msg("%s '%s' (layer %d): %s", mnemo_attn_kind_name(kind), opts, layer,
                 mnemo_last_error());
    return cfg;
}

/* The registry's option parsing: the cfg's shape from the model config, values, per-layer
 * lists, and every error naming the kind and the option. */
static void test_cfg_make(void **state)
{
    const int D = MNEMO_ATTN_KIND_DENSE, S = MNEMO_ATTN_KIND_SELECTIVE, I = MNEMO_ATTN_KIND_INFINI;
    // the shape
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, S, 4, 64, 128, 1, 3);
    mc.rope_theta = 5000.0f;
    struct mnemo_attn_cfg c;
    memset(&c, 0x55, sizeof(c)); // garbage: cfg_make fills every field
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, "", -1), MNEMO_OK);
    assert_int_equal(c.kind, S);
    assert_int_equal(c.n_head, 4);
    assert_int_equal(c.head_dim, 64);
    assert_int_equal(c.n_ctx, 128);
    assert_int_equal(c.rope, 1);
    assert_true(c.rope_theta == 5000.0f);
    assert_int_equal(c.n_layer, 3);
    assert_int_equal(c.causal, 1);
    assert_true(c.opt[MNI_SEL_OPT_MEM_TAU] == 1.0); // the table's default, not 0
    for (int i = MNI_SEL_OPT_COUNT; i < MNEMO_ATTN_MAX_OPTS; i++) assert_true(c.opt[i] == 0);
    mc.pos = MNEMO_POS_LEARNED;
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, NULL, -1), MNEMO_OK);
    assert_int_equal(c.rope, 0);
    mc.attn_kind = MNEMO_ATTN_KIND_COUNT;
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, NULL, -1), MNEMO_ERR_ARG);
    mc.attn_kind = -1;
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, NULL, -1), MNEMO_ERR_ARG);
    // the kind's validate runs last: an impossible shape is refused
    tu_attn_model_config(&mc, D, 2, 7, 32, 1, 1);
    assert_int_equal(mnemo_attn_cfg_make(&c, &mc, NULL, -1), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "head_dim"));

    // values of every type, in any order, with blanks and empty items
    c = opts_ok(S, 1, " budget = 16 ,, threshold=0.5,mem_eps=1e-1, mem_tau=2.5 ,", -1);
    assert_true(c.opt[MNI_SEL_OPT_BUDGET] == 16 && c.opt[MNI_SEL_OPT_THRESHOLD] == 0.5);
    assert_true(c.opt[MNI_SEL_OPT_MEM_EPS] == 0.1 && c.opt[MNI_SEL_OPT_MEM_TAU] == 2.5);
    c = opts_ok(S, 1, "threshold=1e30", -1);
    assert_true(c.opt[MNI_SEL_OPT_THRESHOLD] == 1e30 && c.opt[MNI_SEL_OPT_BUDGET] == 0);
    c = opts_ok(I, 1, "mem_update=delta,segment=7", -1);
    assert_true(c.opt[MNI_INF_OPT_MEM_UPDATE] == 1 && c.opt[MNI_INF_OPT_SEGMENT] == 7);
    c = opts_ok(I, 1, "mem_update=linear", -1);
    assert_true(c.opt[MNI_INF_OPT_MEM_UPDATE] == 0);
    // per layer: a list of n_layer values, each layer its own; one value for every layer
    for (int l = -1; l < 4; l++) {
        const double want[4] = {7, 6, 8, 9};
        c = opts_ok(S, 4, "budget=7/6/8/9", l);
        assert_true(c.opt[MNI_SEL_OPT_BUDGET] == want[l < 0 ? 0 : l]);
        c = opts_ok(S, 4, "budget=5", l);
        assert_true(c.opt[MNI_SEL_OPT_BUDGET] == 5);
    }

    // unknown keys (named, with the kind)
    expect_opts_err(D, 1, "budget=4", -1, "budget"); // dense has no options at all
    expect_opts_err(D, 1, "nope=1", -1, "nope");
    expect_opts_err(S, 1, "nope=1", -1, "nope");
    expect_opts_err(S, 1, "Budget=4", -1, "Budget");
    expect_opts_err(I, 1, "segment=8,nope=1", -1, "nope");
    expect_opts_err(I, 1, "segments=8", -1, "segments");
    // not key=value
    expect_opts_err(S, 1, "budget", -1, "budget");
    expect_opts_err(S, 1, "budget=4,threshold", -1, "threshold");
    // values that do not parse
    expect_opts_err(S, 1, "budget=abc", -1, "budget");
    expect_opts_err(S, 1, "budget=4.5", -1, "budget");
    expect_opts_err(S, 1, "budget=", -1, "budget");
    expect_opts_err(S, 1, "budget=99999999999999999999999", -1, "budget");
    expect_opts_err(S, 1, "threshold=x", -1, "threshold");
    expect_opts_err(S, 1, "threshold=0.5x", -1, "threshold");
    expect_opts_err(S, 1, "threshold=nan", -1, "threshold");
    expect_opts_err(S, 1, "threshold=inf", -1, "threshold");
    expect_opts_err(S, 1, "mem_eps=1e999", -1, "mem_eps");
    expect_opts_err(I, 1, "mem_update=sideways", -1, "mem_update");
    expect_opts_err(I, 1, "mem_update=Delta", -1, "mem_update");
    expect_opts_err(I, 1, "mem_update=1", -1, "mem_update");
    expect_opts_err(I, 1, "segment=12abc", -1, "segment");
    // out of range
    expect_opts_err(S, 1, "budget=-1", -1, "budget");
    expect_opts_err(S, 1, "threshold=-0.5", -1, "threshold");
    expect_opts_err(S, 1, "threshold=1e31", -1, "threshold");
    expect_opts_err(S, 1, "mem_eps=-0.1", -1, "mem_eps");
    expect_opts_err(S, 1, "mem_tau=0", -1, "mem_tau");
    expect_opts_err(I, 1, "segment=-1", -1, "segment");
    expect_opts_err(I, 1, "gate_lr_mult=0", -1, "gate_lr_mult");
    // the kind's validate (after parsing): a budget of 1 cannot hold the first and the new token
    expect_opts_err(S, 1, "budget=1", -1, "budget");
    // a key given twice, even with the same value
    expect_opts_err(S, 1, "budget=4,budget=4", -1, "budget");
    expect_opts_err(S, 1, "budget=4,threshold=1,budget=6", -1, "budget");
    expect_opts_err(I, 1, "mem_update=delta,mem_update=linear", -1, "mem_update");
    // per-layer lists of the wrong length
    expect_opts_err(S, 4, "budget=4/4/4", -1, "budget");
    expect_opts_err(S, 4, "budget=4/4/4/4/4", 0, "budget");
    expect_opts_err(S, 1, "budget=4/4", -1, "budget");
    // every element is checked, whichever layer is asked for
    expect_opts_err(S, 4, "budget=7/6/-1/9", 0, "budget");
    expect_opts_err(S, 4, "budget=7/6/x/9", 3, "budget");
    expect_opts_err(S, 4, "budget=7/6//9", 0, "budget");
    expect_opts_err(S, 4, "budget=7/6/1/9", 2, "budget"); // validate sees layer 2's value
    // a list for an option that takes one value
    expect_opts_err(S, 2, "threshold=0.5/0.5", -1, "threshold");
    expect_opts_err(S, 2, "mem_eps=0.1/0.2", 1, "mem_eps");
    expect_opts_err(I, 2, "segment=8/8", -1, "segment");
    expect_opts_err(I, 2, "mem_update=delta/linear", -1, "mem_update");
}

/* mnemo_attn_opts_format writes the canonical list (table order, lists only where layers
 * differ), and parsing what it wrote gives the same option values, layer by layer. */
static void format_round_trip(int kind, int L, const char *opts, const char *want)
{
    const char *name = mnemo_attn_kind_name(kind);
    struct mnemo_attn_cfg cfgs[4], back[4];
    assert_true(L <= 4);
    for (int l = 0; l < L; l++) cfgs[l] = opts_ok(kind, L, opts, l);
    const unsigned all_scopes = (1u << MNEMO_ATTN_SCOPE_COUNT) - 1;
    char buf[512];
    for (int all = 0; all < 2; all++) {
        int n = mnemo_attn_opts_format(cfgs, L, all_scopes, all, buf, sizeof(buf));
        assert_int_equal(n, (int)strlen(buf));
        if (!all && want && strcmp(buf, want))
            fail_msg("%s '%s': formatted '%s', want '%s'", name, opts, buf, want);
        for (int l = 0; l < L; l++) {
            back[l] = opts_ok(kind, L, buf, l);
            for (int i = 0; i < MNEMO_ATTN_MAX_OPTS; i++)
                if (back[l].opt[i] != cfgs[l].opt[i])
                    fail_msg("%s '%s' -> '%s': layer %d option %d: %.17g, was %.17g", name, opts,
                             buf, l, i, back[l].opt[i], cfgs[l].opt[i]);
        }
        // too small a buffer: the length it needs (as snprintf), a terminated prefix
        char small[6];
        int m = mnemo_attn_opts_format(cfgs, L, all_scopes, all, small, sizeof(small));
        assert_int_equal(m, n);
        assert_true(strlen(small) == (size_t)(n < 5 ? n : 5) && !strncmp(small, buf, strlen(small)));
    }
    print_message("format    %-9s '%s' -> '%s'\n", name, opts, buf);
}

static void test_opts_format(void **state)
{
    const int D = MNEMO_ATTN_KIND_DENSE, S = MNEMO_ATTN_KIND_SELECTIVE, I = MNEMO_ATTN_KIND_INFINI;
    format_round_trip(D, 2, "", "");
    format_round_trip(S, 1, "", "");
    format_round_trip(S, 4, "mem_tau=2,threshold=0.25,budget=7/6/8/9,mem_eps=0.1",
                      "budget=7/6/8/9,threshold=0.25,mem_eps=0.1,mem_tau=2");
    format_round_trip(S, 4, "budget=5/5/5/5", "budget=5");
    format_round_trip(S, 2, "threshold=3.14159265,mem_eps=1e-07,mem_tau=1e-06",
                      "threshold=3.14159265,mem_eps=1e-07,mem_tau=1e-06");
    format_round_trip(S, 1, "mem_tau=1", ""); // the default is not written
    format_round_trip(I, 2, "mem_repeat=4.5,segment=16,mem_update=delta,gate_lr_mult=12.5",
                      "segment=16,mem_update=delta,gate_lr_mult=12.5,mem_repeat=4.5");
    format_round_trip(I, 1, "mem_update=linear,segment=0", "");

    // all = 1 writes every option, defaults included, in table order
    struct mnemo_attn_cfg c = opts_ok(S, 1, "", -1);
    char buf[256];
    mnemo_attn_opts_format(&c, 1, 0xffu, 1, buf, sizeof(buf));
    assert_string_equal(buf, "budget=0,threshold=0,mem_eps=0,mem_tau=1");
    c = opts_ok(I, 1, "", -1);
    mnemo_attn_opts_format(&c, 1, 0xffu, 1, buf, sizeof(buf));
    assert_string_equal(buf, "segment=0,mem_update=linear,gate_lr_mult=30,mem_repeat=0,carry=false");
    // the scope mask selects options by scope
    struct mnemo_attn_cfg s4[4];
    for (int l = 0; l < 4; l++) s4[l] = opts_ok(S, 4, "budget=7/6/8/9,threshold=0.5,mem_eps=0.1", l);
    mnemo_attn_opts_format(s4, 4, 1u << MNEMO_ATTN_SCOPE_SESSION, 0, buf, sizeof(buf));
    assert_string_equal(buf, "budget=7/6/8/9,threshold=0.5");
    mnemo_attn_opts_format(s4, 4, 1u << MNEMO_ATTN_SCOPE_TRAIN, 0, buf, sizeof(buf));
    assert_string_equal(buf, "mem_eps=0.1");
    assert_int_equal(mnemo_attn_opts_format(s4, 4, 1u << MNEMO_ATTN_SCOPE_MODEL, 1, buf, sizeof(buf)), 0);
    assert_string_equal(buf, "");
}

static void expect_arg(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                       const char *field)
{
    assert_int_equal(ops->validate(cfg), MNEMO_ERR_ARG);
    if (!strstr(mnemo_last_error(), field))
        fail_msg("message '%s' does not name '%s'", mnemo_last_error(), field);
}

static void test_validate(void **state)
{
    for (int r = 0; r < 2; r++) {
        const struct mnemo_attn_ops *ops = r ? REF : FAST;
        struct mnemo_attn_cfg c = make_cfg(4, 64, 128, 1);
        assert_int_equal(ops->validate(&c), MNEMO_OK);
        c.head_dim = 2;
        assert_int_equal(ops->validate(&c), MNEMO_OK);
        c.head_dim = 256;
        assert_int_equal(ops->validate(&c), MNEMO_OK);
        c.head_dim = 63, expect_arg(ops, &c, "head_dim");
        c.head_dim = 0, expect_arg(ops, &c, "head_dim");
        c.head_dim = 258, expect_arg(ops, &c, "head_dim");
        c.head_dim = -4, expect_arg(ops, &c, "head_dim");
        c = make_cfg(0, 64, 128, 1), expect_arg(ops, &c, "n_head");
        c = make_cfg(4, 64, 0, 1), expect_arg(ops, &c, "n_ctx");
        c = make_cfg(4, 64, 128, 1), c.rope_theta = 0.0f, expect_arg(ops, &c, "rope_theta");
        c.rope_theta = NAN, expect_arg(ops, &c, "rope_theta");
        c.rope = 0; // theta is irrelevant without RoPE
        assert_int_equal(ops->validate(&c), MNEMO_OK);
        c = make_cfg(4, 64, 128, 1), c.kind = 7, expect_arg(ops, &c, "kind");

        // bad io: an error, never a crash (buffers sized for the ops that runs)
        c = make_cfg(2, 16, 32, 1);
        struct tu_attn_bufs b;
        tu_attn_bufs_init(&b, ops, &c, 1, 8);
        struct mnemo_attn_io io = tu_attn_io(&b);
        io.T = 0;
        assert_int_equal(ops->forward(&c, &io), MNEMO_ERR_ARG);
        io = tu_attn_io(&b), io.qkv = NULL;
        assert_int_equal(ops->forward(&c, &io), MNEMO_ERR_ARG);
        io = tu_attn_io(&b), io.dout = NULL;
        assert_int_equal(ops->backward(&c, &io), MNEMO_ERR_ARG);
        assert_int_equal(ops->forward(&c, NULL), MNEMO_ERR_ARG);
        if (r) { // the reference forward works in its scratch
            io = tu_attn_io(&b), io.scratch = NULL;
            assert_int_equal(ops->forward(&c, &io), MNEMO_ERR_ARG);
        }
        c.head_dim = 15;
        io = tu_attn_io(&b);
        assert_int_equal(ops->forward(&c, &io), MNEMO_ERR_ARG);
        tu_attn_bufs_free(&b);
    }
}

/* Declared memory is linear in T (never T x T) and the state is bounded by n_ctx, for the fast
 * ops and for the reference (whose scratch is its own: a few rows of T doubles). */
static void test_sizes_linear(void **state)
{
    struct mnemo_attn_cfg c = make_cfg(4, 64, 8192, 1);
    for (int r = 0; r < 2; r++) {
        const struct mnemo_attn_ops *o = r ? REF : FAST;
        for (int T = 1024; T <= 8192; T *= 2) {
            size_t a1 = o->act_bytes(&c, 2, T), a2 = o->act_bytes(&c, 2, 2 * T);
            size_t s1 = o->scratch_bytes(&c, 2, T), s2 = o->scratch_bytes(&c, 2, 2 * T);
            assert_true(a2 <= 2 * a1 + 256 && a2 >= 2 * a1 - 256);
            // the reference's scratch has a constant row of HS doubles besides its (T) rows
            const size_t slack = r ? 256 + 64 * sizeof(double) : 256;
            assert_true(s2 <= 2 * s1 + slack && s2 + slack >= 2 * s1);
            // q, k, v, lse and the rope table: 3*B*NH*T*HS + B*NH*T + T*HS floats
            assert_true(a1 >= (3 * 2 * 4 * (size_t)T * 64 + 2 * 4 * (size_t)T + (size_t)T * 64) * 4);
        }
        // the KV cache: 2 * NH * n_ctx * HS floats + a header
        size_t sb = o->state_bytes(&c);
        assert_true(sb >= 2 * 4 * 8192 * 64 * 4 && sb <= 2 * 4 * 8192 * 64 * 4 + 256);
    }
    // the fast step's scratch grows with the chunk (strips of queries); the reference attends
    // one query at a time over at most n_ctx keys, whatever the chunk
    assert_true(FAST->step_scratch_bytes(&c, 1) < FAST->step_scratch_bytes(&c, 1000));
    assert_true(REF->step_scratch_bytes(&c, 1000) <= (2 * 64 + 8192) * sizeof(double) + 256);
}

/* ---- fast vs reference ----------------------------------------------------------------------- */

struct shape {
    int B, T, NH, HS, rope;
    float scale; // of the random q, k, v: larger gives sharper softmaxes
};

static const struct shape shapes[] = {
    {1, 1, 1, 16, 1, 1.0f},   {2, 1, 3, 64, 0, 1.0f},   {1, 7, 2, 16, 1, 1.0f},
    {2, 25, 3, 16, 1, 1.0f},  {1, 24, 1, 64, 1, 1.0f},  {3, 50, 2, 64, 0, 1.0f},
    {1, 65, 4, 16, 1, 1.0f},  {1, 200, 4, 16, 1, 1.0f}, {1, 257, 2, 64, 1, 1.0f},
    {2, 131, 1, 64, 0, 2.5f}, {1, 70, 2, 6, 1, 1.0f},   {1, 45, 1, 2, 1, 1.0f},
    {1, 40, 1, 256, 1, 0.5f}, {1, 96, 2, 64, 1, 4.0f},
};

static void print_shape(const char *what, const struct shape *s, double err)
{
    print_message("%-9s B=%d T=%3d NH=%d HS=%3d rope=%d scale=%.1f: max rel err %.2e\n", what,
                  s->B, s->T, s->NH, s->HS, s->rope, (double)s->scale, err);
}

/* Tolerances: the fast path is fp32 with a polynomial exp2 (1.6e-7), the reference double;
 * observed worst errors are ~1e-7 at scale 1 and ~3e-6 at scale 4 (sharper softmaxes amplify
 * the exp error), so 1e-5 leaves a 3x margin while any indexing or masking slip (errors of
 * order 1) fails. */
static void test_forward_vs_ref(void **state)
{
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const struct shape *s = &shapes[k];
        const struct mnemo_attn_cfg cfg = make_cfg(s->NH, s->HS, s->T, s->rope);
        struct tu_attn_bufs f, r;
        tu_attn_bufs_init(&f, FAST, &cfg, s->B, s->T);
        tu_attn_bufs_init(&r, REF, &cfg, s->B, s->T);
        tu_fill_normal(f.qkv, f.nqkv, s->scale, 100 + k);
        memcpy(r.qkv, f.qkv, f.nqkv * sizeof(float));
        forward_ok(FAST, &cfg, &f);
        forward_ok(REF, &cfg, &r);
        // max |fast - ref| relative to max |ref| over the whole output
        double err = tu_rel_max_err(f.out, r.out, f.nout);
        print_shape("forward", s, err);
        assert_true(err < 1e-5);
        // the saved activations agree too (same layout on both paths)
        struct mni_dense_act lay;
        mni_dense_act_layout(&lay, &cfg, s->B, s->T);
        size_t nh = (lay.k - lay.q) / sizeof(float), nl = (size_t)s->B * s->NH * s->T;
        for (int part = 0; part < 3; part++) {
            size_t off = part == 0 ? lay.q : part == 1 ? lay.k : lay.v;
            const float *a = (const float *)((char *)f.act + off);
            const float *b = (const float *)((char *)r.act + off);
            assert_true(tu_rel_max_err(a, b, nh) < 1e-6);
        }
        // lse is a logarithm: compare in absolute terms
        TU_ASSERT_CLOSE("lse", (const float *)((char *)f.act + lay.lse),
                        (const float *)((char *)r.act + lay.lse), nl, 2e-5f, 1e-6f);
        tu_attn_bufs_free(&f), tu_attn_bufs_free(&r);
    }
}

static void set_threads(int n)
{
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

static int get_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* Max relative error of each of the q, k, v parts of dqkv (each has its own scale). */
static double dqkv_err(const struct shape *s, const float *got, const float *want)
{
    size_t C = (size_t)s->NH * s->HS, rows = (size_t)s->B * s->T;
    float *a = mni_alloc(rows * C * sizeof(float)), *b = mni_alloc(rows * C * sizeof(float));
    double worst = 0;
    for (int part = 0; part < 3; part++) {
        for (size_t t = 0; t < rows; t++) {
            memcpy(a + t * C, got + (t * 3 + part) * C, C * sizeof(float));
            memcpy(b + t * C, want + (t * 3 + part) * C, C * sizeof(float));
        }
        double e = tu_rel_max_err(a, b, rows * C);
        // T = 1: dq and dk vanish (a single key has probability 1) up to the rounding
        // of D_i = dO_i . o_i against dP_ii = dO_i . v_i
        if (s->T == 1 && part < 2) {
            for (size_t i = 0; i < rows * C; i++) assert_true(fabsf(a[i]) < 1e-5f);
            e = 0;
        }
        worst = e > worst ? e : worst;
    }
    mni_free(a), mni_free(b);
    return worst;
}

/* Backward has two modes: single pass with whole heads per thread when B*NH fills the threads,
 * otherwise separate dk/dv and dq tasks. 1, 2 and 7 threads exercise both on these shapes. */
static void test_backward_vs_ref(void **state)
{
    const int nthr0 = get_threads(), thr[3] = {1, 2, 7};
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const struct shape *s = &shapes[k];
        const struct mnemo_attn_cfg cfg = make_cfg(s->NH, s->HS, s->T, s->rope);
        struct tu_attn_bufs f, r;
        tu_attn_bufs_init(&f, FAST, &cfg, s->B, s->T);
        tu_attn_bufs_init(&r, REF, &cfg, s->B, s->T);
        tu_fill_normal(r.qkv, r.nqkv, s->scale, 200 + k);
        tu_fill_normal(r.dout, r.nout, 1.0f, 300 + k);
        tu_fill_normal(r.dqkv, r.nqkv, 100.0f, 2); // garbage: backward must overwrite
        forward_ok(REF, &cfg, &r);
        backward_ok(REF, &cfg, &r);
        for (int ti = 0; ti < 3; ti++) {
            set_threads(thr[ti]);
            memcpy(f.qkv, r.qkv, f.nqkv * sizeof(float));
            memcpy(f.dout, r.dout, f.nout * sizeof(float));
            tu_fill_normal(f.dqkv, f.nqkv, 100.0f, 1);
            forward_ok(FAST, &cfg, &f);
            backward_ok(FAST, &cfg, &f);
            double err = dqkv_err(s, f.dqkv, r.dqkv);
            char what[32];
            snprintf(what, sizeof(what), "backward%d", thr[ti]);
            print_shape(what, s, err);
            assert_true(err < 2e-5);
        }
        set_threads(nthr0);

        // the fast backward also accepts the reference forward's saved activations
        assert_int_equal(FAST->act_bytes(&cfg, s->B, s->T), REF->act_bytes(&cfg, s->B, s->T));
        memcpy(f.act, r.act, FAST->act_bytes(&cfg, s->B, s->T));
        memcpy(f.out, r.out, f.nout * sizeof(float));
        backward_ok(FAST, &cfg, &f);
        assert_true(dqkv_err(s, f.dqkv, r.dqkv) < 2e-5);
        tu_attn_bufs_free(&f), tu_attn_bufs_free(&r);
    }
}

/* ---- finite differences ---------------------------------------------------------------------- */

/* |fd - analytic| / (0.01 + |analytic|); observed worst ~1.5e-4 (the float rounding of the
 * forward's outputs limits the differences). */
#define FD_TOL 5e-4

/* loss = sum(out * w) in double (the reference forward), w fixed: its gradient with respect to out is w, which is
 * what backward receives as dout. */
static double loss_of(const struct mnemo_attn_cfg *cfg, struct tu_attn_bufs *b, const float *w)
{
    forward_ok(REF, cfg, b);
    double L = 0;
    for (size_t i = 0; i < b->nout; i++) L += (double)b->out[i] * w[i];
    return L;
}

/* Every entry of qkv (q, k and v of every token and head) is perturbed, so a gradient that
 * is wrong for any part of the packing, any head or any position is caught. */
static void check_fd(int B, int T, int NH, int HS, int rope, uint64_t seed)
{
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, T, rope);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, REF, &cfg, B, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, seed);
    tu_fill_normal(b.dout, b.nout, 1.0f, seed + 1); // loss = sum(out * dout)
    forward_ok(REF, &cfg, &b);
    backward_ok(REF, &cfg, &b);
    double worst = 0;
    for (size_t i = 0; i < b.nqkv; i++) {
        // central differences at h and 2h, combined (Richardson) to cancel the h^2 term
        const float x = b.qkv[i];
        double cd[2];
        for (int k = 0; k < 2; k++) {
            b.qkv[i] = x + (k + 1) * 5e-2f;
            float xp = b.qkv[i];
            double Lp = loss_of(&cfg, &b, b.dout);
            b.qkv[i] = x - (k + 1) * 5e-2f;
            float xm = b.qkv[i];
            double Lm = loss_of(&cfg, &b, b.dout);
            cd[k] = (Lp - Lm) / ((double)xp - xm);
        }
        b.qkv[i] = x;
        double fd = (4 * cd[0] - cd[1]) / 3, an = b.dqkv[i];
        double err = fabs(fd - an) / (1e-2 + fabs(an));
        if (err > FD_TOL)
            fail_msg("qkv[%zu] (B=%d T=%d NH=%d HS=%d rope=%d): analytic %.7g, fd %.7g", i, B, T,
                     NH, HS, rope, an, fd);
        worst = err > worst ? err : worst;
    }
    print_message("fd        B=%d T=%d NH=%d HS=%d rope=%d: worst rel err %.2e\n", B, T, NH, HS,
                  rope, worst);
    tu_attn_bufs_free(&b);
}

/* Small shapes (the reference is O(T^2 HS) per forward, and there are 2 * 2 * |qkv| of them):
 * RoPE on and off, HS not a multiple of 8, B > 1 and NH > 1. */
static void test_ref_backward_vs_fd(void **state)
{
    check_fd(2, 5, 2, 4, 1, 11);
    check_fd(1, 6, 1, 6, 0, 12);
    check_fd(1, 4, 3, 8, 1, 13);
}

/* A backward that puts a gradient in the wrong place must fail the checks above: swap dk and
 * dv of one entry and make sure the finite differences notice. (Self-test of the checker.) */
static void test_fd_detects_a_fault(void **state)
{
    struct mnemo_attn_cfg cfg = make_cfg(1, 4, 4, 1);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, REF, &cfg, 1, 4);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, 5);
    tu_fill_normal(b.dout, b.nout, 1.0f, 6);
    forward_ok(REF, &cfg, &b);
    backward_ok(REF, &cfg, &b);
    size_t i = 3 * 4 + 4 + 1; // token 1, a k entry
    float an = b.dqkv[i + 4]; // ... but read the v entry's gradient
    const float x = b.qkv[i];
    b.qkv[i] = x + 1e-2f;
    double Lp = loss_of(&cfg, &b, b.dout);
    b.qkv[i] = x - 1e-2f;
    double Lm = loss_of(&cfg, &b, b.dout);
    double fd = (Lp - Lm) / 2e-2;
    assert_true(fabs(fd - an) / (1e-2 + fabs(an)) > FD_TOL);
    tu_attn_bufs_free(&b);
}

/* ---- determinism and causality --------------------------------------------------------------- */

static void test_deterministic_and_causal(void **state)
{
    // B*NH = 4 heads: the single-pass backward with 1 and with 2 threads (one writer per head,
    // same order), and the forward always, give bit-identical results
    struct mnemo_attn_cfg cfg = make_cfg(2, 64, 150, 1);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, FAST, &cfg, 2, 150);
    tu_fill_normal(b.qkv, b.nqkv, 1.0f, 21);
    tu_fill_normal(b.dout, b.nout, 1.0f, 22);
    float *out1 = mni_alloc(b.nout * sizeof(float)), *d1 = mni_alloc(b.nqkv * sizeof(float));
    int nthr0 = get_threads();
    set_threads(1);
    forward_ok(FAST, &cfg, &b);
    backward_ok(FAST, &cfg, &b);
    memcpy(out1, b.out, b.nout * sizeof(float));
    memcpy(d1, b.dqkv, b.nqkv * sizeof(float));
    set_threads(2);
    forward_ok(FAST, &cfg, &b);
    backward_ok(FAST, &cfg, &b);
    set_threads(nthr0);
    assert_memory_equal(out1, b.out, b.nout * sizeof(float));
    assert_memory_equal(d1, b.dqkv, b.nqkv * sizeof(float));

    // changing token 100 onwards leaves outputs 0..99 bit-identical
    const size_t C = 2 * 64;
    for (int bb = 0; bb < 2; bb++) {
        for (size_t i = (size_t)(bb * 150 + 100) * 3 * C; i < (size_t)(bb * 150 + 150) * 3 * C; i++)
            b.qkv[i] += 1.0f;
    }
    forward_ok(FAST, &cfg, &b);
    for (int bb = 0; bb < 2; bb++) {
        size_t o = (size_t)bb * 150 * C;
        assert_memory_equal(out1 + o, b.out + o, 100 * C * sizeof(float));
        assert_memory_not_equal(out1 + o + 100 * C, b.out + o + 100 * C, C * sizeof(float));
    }
    mni_free(out1), mni_free(d1);
    tu_attn_bufs_free(&b);
}

/* ---- sessions -------------------------------------------------------------------------------- */

/* Feeds the window qkv (T,3,NH,HS) through a fresh session in chunks of the given sizes
 * (cycled), and compares every output with want (T,NH,HS). */
static void session_equals(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                           int T, const float *qkv, const float *want, const int *chunks,
                           int nchunks, const char *label)
{
    size_t C = (size_t)cfg->n_head * cfg->head_dim;
    int maxn = 0;
    for (int c = 0; c < nchunks; c++) maxn = chunks[c] > maxn ? chunks[c] : maxn;
    void *st = mni_alloc(ops->state_bytes(cfg));
    void *scratch = mni_alloc(ops->step_scratch_bytes(cfg, maxn));
    float *out = mni_alloc((size_t)T * C * sizeof(float));
    assert_true(st && scratch && out);
    // garbage in the state: state_init must be enough
    memset(st, 0xff, ops->state_bytes(cfg));
    ops->state_init(cfg, st);
    size_t live0 = ops->state_live_bytes(cfg, st);
    int t = 0, c = 0;
    while (t < T) {
        int n = chunks[c++ % nchunks];
        if (n > T - t) n = T - t;
        enum mnemo_status rc = tu_attn_step(ops, cfg, st, NULL, out + (size_t)t * C,
                                            qkv + (size_t)t * 3 * C, n, scratch);
        if (rc != MNEMO_OK) fail_msg("%s: step at %d: %s", label, t, mnemo_last_error());
        t += n;
        assert_true(ops->state_live_bytes(cfg, st) > live0);
        assert_true(ops->state_live_bytes(cfg, st) <= ops->state_bytes(cfg));
    }
    double err = tu_rel_max_err(out, want, (size_t)T * C);
    print_message("session   %-28s: max rel err %.2e\n", label, err);
    assert_true(err < 1e-5);
    mni_free(st), mni_free(scratch), mni_free(out);
}

/* One window through forward, then through fresh sessions: token by token (the decode path),
 * in mixed chunks (both step paths, strips with tails, chunks crossing the 64-key blocks), and
 * in one chunk (the strip path over the whole window: bit-identical to the forward). */
static void session_case(int T, int NH, int HS, int rope, int use_ref)
{
    const struct mnemo_attn_ops *ops = use_ref ? REF : FAST;
    struct mnemo_attn_cfg cfg = make_cfg(NH, HS, T, rope);
    struct tu_attn_bufs b;
    tu_attn_bufs_init(&b, ops, &cfg, 1, T);
    tu_fill_normal(b.qkv, b.nqkv, 1.5f, 40 + T);
    forward_ok(ops, &cfg, &b);
    char label[64];
    const int one[] = {1};
    snprintf(label, sizeof(label), "T=%d HS=%d ref=%d by 1", T, HS, use_ref);
    session_equals(ops, &cfg, T, b.qkv, b.out, one, 1, label);
    // mixes the one-row path (n < 8) and the strip path, strips with tails
    const int mixed[] = {3, 30, 1, 7, 8, 25, 64, 2};
    snprintf(label, sizeof(label), "T=%d HS=%d ref=%d chunks", T, HS, use_ref);
    session_equals(ops, &cfg, T, b.qkv, b.out, mixed, 8, label);
    const int all[] = {T};
    snprintf(label, sizeof(label), "T=%d HS=%d ref=%d whole", T, HS, use_ref);
    session_equals(ops, &cfg, T, b.qkv, b.out, all, 1, label);
    tu_attn_bufs_free(&b);
}

static void test_session_equals_forward(void **state)
{
    session_case(150, 3, 16, 1, 0);
    session_case(150, 2, 64, 1, 0);
    session_case(90, 2, 6, 0, 0);
    session_case(40, 1, 256, 1, 0);
    session_case(90, 3, 16, 1, 1);
}

/* The cache is bounded: a step that does not fit is refused whole, with MNEMO_ERR_FULL and
 * a message, and leaves the state as it was; a refilled state works; a state initialised for
 * another cfg is refused. Both paths. */
static void test_session_full(void **state)
{
    for (int use_ref = 0; use_ref < 2; use_ref++) {
        const struct mnemo_attn_ops *ops = use_ref ? REF : FAST;
        struct mnemo_attn_cfg cfg = make_cfg(2, 16, 10, 1);
        size_t C = 32;
        void *st = mni_alloc(ops->state_bytes(&cfg));
        void *scratch = mni_alloc(ops->step_scratch_bytes(&cfg, 10));
        float qkv[11 * 3 * 32], out[11 * 32];
        tu_fill_normal(qkv, sizeof(qkv) / sizeof(float), 1.0f, 7);
        ops->state_init(&cfg, st);
        assert_int_equal(tu_attn_step(ops, &cfg, st, NULL, out, qkv, 8, scratch), MNEMO_OK);
        size_t live = ops->state_live_bytes(&cfg, st);
        // 8 + 3 > 10: refused whole, nothing appended
        assert_int_equal(tu_attn_step(ops, &cfg, st, NULL, out, qkv, 3, scratch), MNEMO_ERR_FULL);
        assert_non_null(strstr(mnemo_last_error(), "full"));
        assert_int_equal(ops->state_live_bytes(&cfg, st), live);
        assert_int_equal(tu_attn_step(ops, &cfg, st, NULL, out, qkv + 8 * 3 * C, 2, scratch), MNEMO_OK);
        // full: every slot is live
        assert_int_equal(ops->state_live_bytes(&cfg, st), ops->state_bytes(&cfg));
        assert_int_equal(tu_attn_step(ops, &cfg, st, NULL, out, qkv, 1, scratch), MNEMO_ERR_FULL);
        assert_int_equal(tu_attn_step(ops, &cfg, st, NULL, out, qkv, 0, scratch), MNEMO_ERR_ARG);
        // re-initialised, it accepts tokens again
        ops->state_init(&cfg, st);
        assert_int_equal(tu_attn_step(ops, &cfg, st, NULL, out, qkv, 10, scratch), MNEMO_OK);
        // a state initialised for another n_ctx is refused
        struct mnemo_attn_cfg other = cfg;
        other.n_ctx = 20;
        assert_int_equal(tu_attn_step(ops, &other, st, NULL, out, qkv, 1, scratch), MNEMO_ERR_ARG);
        mni_free(st), mni_free(scratch);
    }
}

/* Streams n rows of qkv through a fresh state of (ops, cfg) in pieces of chunk tokens. */
static void stream_rows(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                        const float *qkv, int n, int chunk, float *out)
{
    const size_t C = (size_t)cfg->n_head * cfg->head_dim;
    void *st = mni_alloc(ops->state_bytes(cfg));
    void *scratch = mni_alloc(ops->step_scratch_bytes(cfg, chunk));
    assert_true(st && scratch);
    ops->state_init(cfg, st);
    for (int t = 0; t < n; t += chunk) {
        const int k = n - t < chunk ? n - t : chunk;
        if (tu_attn_step(ops, cfg, st, NULL, out + (size_t)t * C, qkv + (size_t)t * 3 * C, k,
                         scratch) != MNEMO_OK)
            fail_msg("step at %d: %s", t, mnemo_last_error());
    }
    assert_true(ops->state_live_bytes(cfg, st) <= ops->state_bytes(cfg));
    mni_free(st), mni_free(scratch);
}

/* The StreamingLLM session (options window, sinks, positions): a stream of 5 x n_ctx tokens in
 * bounded memory; with absolute positions and no sinks it is the window kind's stream; with a
 * window as long as the stream it is the unwindowed session; the fast path equals the
 * reference in both position modes, token by token and in chunks. */
static void test_session_window(void **state)
{
    const int NH = 2, HS = 16, n_ctx = 24, n = 5 * n_ctx;
    const size_t C = (size_t)NH * HS;
    float *qkv = malloc((size_t)n * 3 * C * sizeof(float));
    float *a = malloc((size_t)n * C * sizeof(float)), *b = malloc((size_t)n * C * sizeof(float));
    assert_true(qkv && a && b);
    tu_fill_normal(qkv, (size_t)n * 3 * C, 1.0f, 77);
    struct mnemo_model_config mc;
    tu_attn_model_config(&mc, MNEMO_ATTN_KIND_DENSE, NH, HS, n_ctx, 1, 1);
    struct mnemo_attn_cfg cfg, wk;
    // absolute positions, no sinks == the window kind
    assert_int_equal(mnemo_attn_cfg_make(&cfg, &mc, "window=10,positions=absolute", 0), MNEMO_OK);
    assert_true(FAST->caps(&cfg) & MNEMO_ATTN_CAP_BOUNDED);
    stream_rows(FAST, &cfg, qkv, n, 1, a);
    struct mnemo_model_config mw = mc;
    mw.attn_kind = MNEMO_ATTN_KIND_WINDOW;
    assert_int_equal(mnemo_attn_cfg_make(&wk, &mw, "w=10", 0), MNEMO_OK);
    stream_rows(mnemo_attn_ops_get(MNEMO_ATTN_KIND_WINDOW), &wk, qkv, n, 1, b);
    if (!tu_close("dense window=10 absolute vs the window kind", a, b, (size_t)n * C, 2e-5f, 2e-4f))
        fail();
    // a window as long as the stream, in cache positions, is the plain session (within n_ctx)
    assert_int_equal(mnemo_attn_cfg_make(&cfg, &mc, "window=24", 0), MNEMO_OK);
    stream_rows(FAST, &cfg, qkv, n_ctx, 5, a);
    struct mnemo_attn_cfg plain = make_cfg(NH, HS, n_ctx, 1);
    stream_rows(FAST, &plain, qkv, n_ctx, 5, b);
    if (!tu_close("dense window=n_ctx vs no window", a, b, (size_t)n_ctx * C, 2e-5f, 2e-4f))
        fail();
    // fast vs reference, both position modes, with sinks, past n_ctx
    const char *modes[] = {"window=9,sinks=3,positions=cache", "window=9,sinks=3,positions=absolute",
                           "window=1,sinks=1"};
    for (int m = 0; m < 3; m++) {
        assert_int_equal(mnemo_attn_cfg_make(&cfg, &mc, modes[m], 0), MNEMO_OK);
        stream_rows(FAST, &cfg, qkv, n, 1, a);
        stream_rows(REF, &cfg, qkv, n, 7, b);
        if (!tu_close(modes[m], a, b, (size_t)n * C, 2e-5f, 2e-4f)) fail();
        assert_int_equal(FAST->state_bytes(&cfg), REF->state_bytes(&cfg));
    }
    // sinks without a window is refused, naming the option
    assert_int_equal(mnemo_attn_cfg_make(&cfg, &mc, "sinks=4", 0), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "sinks"));
    free(qkv), free(a), free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_cfg_make),
        cmocka_unit_test(test_opts_format),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_sizes_linear),
        cmocka_unit_test(test_forward_vs_ref),
        cmocka_unit_test(test_backward_vs_ref),
        cmocka_unit_test(test_ref_backward_vs_fd),
        cmocka_unit_test(test_fd_detects_a_fault),
        cmocka_unit_test(test_deterministic_and_causal),
        cmocka_unit_test(test_session_equals_forward),
        cmocka_unit_test(test_session_full),
        cmocka_unit_test(test_session_window),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
