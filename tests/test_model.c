/*
 * test_model.c -- the whole model: finite-difference gradients of every parameter tensor,
 * session (token by token and chunked) equals the training forward, checkpoints round-trip,
 * bad configs and token ids are refused with a message. Infini-attention models run with
 * segments of 5 tokens (windows of 7 and 12: short last segments).
 */
#define _POSIX_C_SOURCE 200809L /* mkfifo, alarm */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "attn/attn_int.h"
#include "ckpt.h"
#include "model.h"
#include "st.h"
#include "testutil.h"

/* The infini kind's update rules, by index (its option mem_update), and the one tiny() uses. */
static const char *const mem_rules[] = {"linear", "delta"};
#define N_MEM_RULES 2
static int tiny_mem_update;

/* 1 when the option list opts ("k=v,k=v") holds the item kv exactly. */
static int has_opt(const char *opts, const char *kv)
{
    const size_t n = strlen(kv);
    for (const char *p = opts; p && *p;) {
        const size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, kv, n)) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* Two models' configs are the same: every field, and the options as text (the pointers
 * differ: each model holds its own list). */
static void assert_same_config(const struct mnemo_model *a, const struct mnemo_model *b)
{
    struct mnemo_model_config ca = *mnemo_model_get_config(a), cb = *mnemo_model_get_config(b);
    assert_non_null(ca.attn_opts);
    assert_non_null(cb.attn_opts);
    assert_string_equal(ca.attn_opts, cb.attn_opts);
    ca.attn_opts = cb.attn_opts = NULL;
    assert_memory_equal(&ca, &cb, sizeof(ca));
}

static struct mnemo_model *tiny_ctx(int pos, uint64_t seed, int kind, int n_ctx)
{
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = 2;
    c.d_model = 16;
    c.n_head = 2;
    c.n_ctx = n_ctx;
    c.vocab = 29;
    c.pos = pos;
    c.attn_kind = kind;
    char opts[64];
    if (kind == MNEMO_ATTN_KIND_INFINI) {
        snprintf(opts, sizeof(opts), "segment=5,mem_update=%s", mem_rules[tiny_mem_update]);
        c.attn_opts = opts;
    }
    struct mnemo_model *m;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_OK);
    mnemo_model_init(m, seed);
    /* larger random weights than GPT-2 init so that every path carries signal, and non-zero
     * biases / LN params so their gradients are checked meaningfully */
    struct mni_rng r;
    mni_rng_seed(&r, seed + 99);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] += 0.2f * mni_rng_normal(&r);
    return m;
}

static struct mnemo_model *tiny(int pos, uint64_t seed, int kind)
{
    return tiny_ctx(pos, seed, kind, 12);
}

static void tokens(uint16_t *t, size_t n, int V, uint64_t seed)
{
    struct mni_rng r;
    mni_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) t[i] = (uint16_t)mni_rng_below(&r, (uint64_t)V);
}

/* B*T = 14 rows runs the linear layers through cblas, 36 through the own gemm with its fused
 * bias/residual/GELU epilogues (kern/gemm.c takes products of 32 rows and more). */
static float objective(struct mnemo_model *m, const uint16_t *x, const uint16_t *y, int B, int T)
{
    float loss;
    assert_int_equal(mnemo_model_forward(m, x, y, B, T, &loss), MNEMO_OK);
    return loss + (float)mnemo_model_aux_loss(m); /* the aux loss comes weighted by mem_eps */
}

static void check_grads_mem(int pos, int B, int T, int kind, float mem_eps)
{
    struct mnemo_model *m = tiny(pos, 5, kind);
    if (mem_eps > 0) {
        char o[64];
        snprintf(o, sizeof(o), "mem_eps=%g,mem_tau=2", (double)mem_eps);
        assert_int_equal(mnemo_model_set_attn_opts(m, o), MNEMO_OK);
    }
    uint16_t x[36], y[36];
    assert_true(B * T <= 36);
    tokens(x, (size_t)(B * T), 29, 1);
    tokens(y, (size_t)(B * T), 29, 2);
    float loss;
    assert_int_equal(mnemo_model_forward(m, x, y, B, T, &loss), MNEMO_OK);
    mnemo_model_zero_grad(m);
    assert_int_equal(mnemo_model_backward(m, 1.0f), MNEMO_OK);
    int checked = 0, bad = 0, kinks = 0;
    if (kind == MNEMO_ATTN_KIND_INFINI) assert_int_equal(m->n_pinfo, MNI_P_COUNT + 1);
    for (int id = 0; id < m->n_pinfo; id++) { /* the transformer's tensors and the kind's */
        const struct mni_param_info *pi = &m->pinfo[id];
        size_t n = pi->numel * (pi->per_layer ? (size_t)m->cfg.n_layer : 1);
        if (!n) continue;
        /* padded vocabulary rows have no gradient path: skip them for wte */
        size_t lim = id == MNI_P_WTE ? (size_t)m->cfg.vocab * (size_t)m->cfg.d_model : n;
        for (size_t k = 0; k < 12; k++) {
            size_t i = pi->offset + (k * 7919 + 13) % lim;
            float keep = m->params[i], h = 1e-2f, lp, lm;
            m->params[i] = keep + h;
            lp = objective(m, x, y, B, T);
            m->params[i] = keep - h;
            lm = objective(m, x, y, B, T);
            m->params[i] = keep;
            double fd = ((double)lp - lm) / (2.0 * h), g = m->grads[i];
            if (mem_eps > 0 && fabs(fd - g) > 2e-3 + 5e-2 * fabs(g)) {
                /* the memory loss's max over rows and clamp at tau are kinks; a stencil across
                 * one is off, a quarter of it usually is not: retry with h/4 and count it */
                const float q = h / 4;
                m->params[i] = keep + q;
                float lp4 = objective(m, x, y, B, T);
                m->params[i] = keep - q;
                float lm4 = objective(m, x, y, B, T);
                m->params[i] = keep;
                fd = ((double)lp4 - lm4) / (2.0 * q);
                kinks++;
            }
            checked++;
            if (fabs(fd - g) > 2e-3 + 5e-2 * fabs(g)) {
                bad++;
                printf("pos %d: grad of %s[%zu]: analytic %.6g, finite difference %.6g\n", pos,
                       pi->name, i - pi->offset, g, fd);
            }
        }
    }
    if (kinks) printf("%d of %d stencils retried at h/4 (a kink)\n", kinks, checked);
    assert_true(checked > 100 && kinks * 10 < checked);
    assert_int_equal(bad, 0);
    mnemo_model_free(m);
}

static void check_grads(int pos, int B, int T, int kind) { check_grads_mem(pos, B, T, kind, 0.0f); }

static void test_grads_rope(void **s) { (void)s; check_grads(MNEMO_POS_ROPE, 2, 7, MNEMO_ATTN_KIND_DENSE); }
static void test_grads_learned(void **s) { (void)s; check_grads(MNEMO_POS_LEARNED, 2, 7, MNEMO_ATTN_KIND_DENSE); }
static void test_grads_own_gemm(void **s) { (void)s; check_grads(MNEMO_POS_ROPE, 3, 12, MNEMO_ATTN_KIND_DENSE); }
static void test_grads_selective(void **s) { (void)s; check_grads(MNEMO_POS_ROPE, 3, 12, MNEMO_ATTN_KIND_SELECTIVE); }
/* the gates (blocks.l.attn.gate, one per head) are among the checked tensors */
static void test_grads_infini(void **s)
{
    (void)s;
    for (tiny_mem_update = 0; tiny_mem_update < N_MEM_RULES; tiny_mem_update++) {
        check_grads(MNEMO_POS_ROPE, 3, 12, MNEMO_ATTN_KIND_INFINI);
        check_grads(MNEMO_POS_ROPE, 2, 7, MNEMO_ATTN_KIND_INFINI);
    }
    tiny_mem_update = 0;
}
/* eps 1 so that the memory loss's share of each gradient is well above the tolerance */
static void test_grads_memory_loss(void **s)
{
    (void)s;
    check_grads_mem(MNEMO_POS_ROPE, 3, 12, MNEMO_ATTN_KIND_SELECTIVE, 1.0f);
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 5, MNEMO_ATTN_KIND_DENSE);
    assert_int_equal(mnemo_model_set_attn_opts(m, "mem_eps=0.1,mem_tau=1"), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "mem_eps"));
    mnemo_model_free(m);
    m = tiny(MNEMO_POS_ROPE, 5, MNEMO_ATTN_KIND_SELECTIVE);
    assert_int_equal(mnemo_model_set_attn_opts(m, "mem_eps=-1,mem_tau=1"), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "mem_eps"));
    /* the aux loss is eps L_mem: off at eps 0 (the default), linear in eps, and the forward's
     * loss stays the cross-entropy alone */
    uint16_t x[36], y[36];
    tokens(x, 36, 29, 1);
    tokens(y, 36, 29, 2);
    float l0, l1, l2;
    assert_int_equal(mnemo_model_forward(m, x, y, 3, 12, &l0), MNEMO_OK);
    assert_true(mnemo_model_aux_loss(m) == 0.0);
    assert_int_equal(mnemo_model_set_attn_opts(m, "mem_eps=0.5,mem_tau=2"), MNEMO_OK);
    assert_int_equal(mnemo_model_forward(m, x, y, 3, 12, &l1), MNEMO_OK);
    const double a1 = mnemo_model_aux_loss(m);
    assert_int_equal(mnemo_model_set_attn_opts(m, "mem_eps=1"), MNEMO_OK);
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "mem_tau=2")); /* kept */
    assert_int_equal(mnemo_model_forward(m, x, y, 3, 12, &l2), MNEMO_OK);
    const double a2 = mnemo_model_aux_loss(m);
    printf("aux loss at eps 0.5: %.6g, at eps 1: %.6g\n", a1, a2);
    assert_true(a1 > 0 && fabs(a2 - 2 * a1) <= 1e-6 * a2);
    assert_true(l0 == l1 && l1 == l2);
    mnemo_model_free(m);
}

/* Feeds x (T tokens) to s in chunks of `chunk`, checking every chunk's logits against want
 * (T, Vp) and the session's live bytes against its bound. */
static void feed_and_compare(struct mnemo_session *s, const uint16_t *x, int T, int chunk,
                             const float *want, int Vp)
{
    for (int t = 0; t < T; t += chunk) {
        int k = T - t < chunk ? T - t : chunk;
        const float *lg;
        assert_int_equal(mnemo_session_feed(s, x + t, k, &lg), MNEMO_OK);
        char label[64];
        snprintf(label, sizeof(label), "session logits t=%d chunk=%d", t, chunk);
        TU_ASSERT_CLOSE(label, lg, want + (size_t)t * Vp, (size_t)k * Vp, 1e-4f, 1e-4f);
        assert_true(mnemo_session_live_bytes(s) <= mnemo_session_state_bytes(s));
    }
    assert_int_equal(mnemo_session_pos(s), T);
}

static void check_session(int pos, int kind)
{
    struct mnemo_model *m = tiny(pos, 7, kind);
    const int T = 12, Vp = m->cfg.vocab_padded;
    uint16_t x[12];
    tokens(x, 12, 29, 3);
    assert_int_equal(mnemo_model_forward(m, x, NULL, 1, T, NULL), MNEMO_OK);
    float *want = mni_alloc((size_t)T * Vp * sizeof(float));
    memcpy(want, mnemo_model_logits(m), (size_t)T * Vp * sizeof(float));
    for (int chunk = 1; chunk <= 5; chunk += 4) {
        struct mnemo_session *s;
        assert_int_equal(mnemo_session_create(&s, m, chunk), MNEMO_OK);
        feed_and_compare(s, x, T, chunk, want, Vp);
        assert_true(mnemo_session_live_bytes(s) > 0);
        /* the context is full now */
        const float *lg;
        assert_int_equal(mnemo_session_feed(s, x, 1, &lg), MNEMO_ERR_FULL);
        mnemo_session_reset(s);
        assert_int_equal(mnemo_session_feed(s, x, 1, &lg), MNEMO_OK);
        TU_ASSERT_CLOSE("after reset", lg, want, (size_t)Vp, 1e-4f, 1e-4f);
        mnemo_session_free(s);
    }
    mni_free(want);
    mnemo_model_free(m);
}

static void test_session_rope(void **s) { (void)s; check_session(MNEMO_POS_ROPE, MNEMO_ATTN_KIND_DENSE); }
static void test_session_learned(void **s) { (void)s; check_session(MNEMO_POS_LEARNED, MNEMO_ATTN_KIND_DENSE); }
static void test_session_selective(void **s) { (void)s; check_session(MNEMO_POS_ROPE, MNEMO_ATTN_KIND_SELECTIVE); }

/* Infini-attention: the session equals the training forward token by token and in chunks that
 * cross segment boundaries, and it goes on past n_ctx (never full) -- there it is checked
 * against the forward of a model with the same weights and a longer n_ctx (the kind depends on
 * the segment length only). State bytes stay bounded. */
static void test_session_infini(void **s)
{
    (void)s;
    for (tiny_mem_update = 0; tiny_mem_update < N_MEM_RULES; tiny_mem_update++) {
        struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 7, MNEMO_ATTN_KIND_INFINI);
        struct mnemo_model *big = tiny_ctx(MNEMO_POS_ROPE, 7, MNEMO_ATTN_KIND_INFINI, 48);
        assert_int_equal(m->n_params, big->n_params);
        memcpy(big->params, m->params, m->n_params * sizeof(float));
        const int T = 48, Vp = m->cfg.vocab_padded;
        uint16_t x[48];
        tokens(x, 48, 29, 3);
        assert_int_equal(mnemo_model_forward(big, x, NULL, 1, T, NULL), MNEMO_OK);
        float *want = mni_alloc((size_t)T * Vp * sizeof(float));
        memcpy(want, mnemo_model_logits(big), (size_t)T * Vp * sizeof(float));
        /* the first n_ctx tokens also against the model's own forward */
        assert_int_equal(mnemo_model_forward(m, x, NULL, 1, 12, NULL), MNEMO_OK);
        TU_ASSERT_CLOSE("n_ctx forward", mnemo_model_logits(m), want, (size_t)12 * Vp, 1e-5f, 1e-5f);
        for (int chunk = 1; chunk <= 7; chunk += 3) {
            struct mnemo_session *ss;
            assert_int_equal(mnemo_session_create(&ss, m, chunk), MNEMO_OK);
            feed_and_compare(ss, x, T, chunk, want, Vp);
            mnemo_session_free(ss);
        }
        mni_free(want);
        mnemo_model_free(big);
        mnemo_model_free(m);
    }
    tiny_mem_update = 0;
}

/* Context pruning through the session: budgets no shorter than the stream change nothing (bit
 * for bit); small budgets stream past n_ctx in bounded memory; the dense kind refuses budgets. */
static void test_session_budgets(void **s)
{
    (void)s;
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 7, MNEMO_ATTN_KIND_SELECTIVE);
    const int T = 12, Vp = m->cfg.vocab_padded;
    uint16_t x[60];
    tokens(x, 60, 29, 4);
    struct mnemo_session *a, *b;
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = 1;
    assert_int_equal(mnemo_session_create_ex(&a, m, &sc), MNEMO_OK);
    sc.attn_opts = "budget=12/24"; /* {T, 2T} */
    assert_int_equal(mnemo_session_create_ex(&b, m, &sc), MNEMO_OK);
    for (int t = 0; t < T; t++) {
        const float *la, *lb;
        assert_int_equal(mnemo_session_feed(a, x + t, 1, &la), MNEMO_OK);
        float keep[64];
        memcpy(keep, la, (size_t)Vp * sizeof(float));
        assert_int_equal(mnemo_session_feed(b, x + t, 1, &lb), MNEMO_OK);
        assert_memory_equal(keep, lb, (size_t)Vp * sizeof(float));
    }
    mnemo_session_free(b);
    /* small budgets: 60 tokens through a model with n_ctx 12 */
    sc.attn_opts = "budget=4/3";
    assert_int_equal(mnemo_session_create_ex(&b, m, &sc), MNEMO_OK);
    assert_true(mnemo_session_state_bytes(b) < mnemo_session_state_bytes(a) / 2);
    for (int t = 0; t < 60; t++) {
        const float *lg;
        assert_int_equal(mnemo_session_feed(b, x + t, 1, &lg), MNEMO_OK);
        for (int v = 0; v < m->cfg.vocab; v++) assert_true(isfinite(lg[v]));
        assert_true(mnemo_session_live_bytes(b) <= mnemo_session_state_bytes(b));
    }
    assert_int_equal(mnemo_session_pos(b), 60);
    mnemo_session_free(b);
    mnemo_session_free(a);
    sc.attn_opts = "budget=1/4";
    assert_int_equal(mnemo_session_create_ex(&b, m, &sc), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "budget"));
    /* a model option is not a session's to set */
    sc.attn_opts = "mem_eps=0.5";
    assert_int_equal(mnemo_session_create_ex(&b, m, &sc), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "mem_eps"));
    mnemo_model_free(m);
    m = tiny(MNEMO_POS_ROPE, 7, MNEMO_ATTN_KIND_DENSE);
    sc.attn_opts = "budget=4/3";
    assert_int_equal(mnemo_session_create_ex(&b, m, &sc), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "dense"));
    assert_non_null(strstr(mnemo_last_error(), "budget"));
    mnemo_model_free(m);
}

static void test_bad_tokens(void **s)
{
    (void)s;
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 1, MNEMO_ATTN_KIND_DENSE);
    uint16_t x[4] = {1, 2, 29, 3}, y[4] = {1, 2, 3, 4};
    assert_int_equal(mnemo_model_forward(m, x, y, 1, 4, NULL), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "out of range"));
    x[2] = 0;
    y[3] = 500;
    assert_int_equal(mnemo_model_forward(m, x, y, 1, 4, NULL), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_model_forward(m, x, NULL, 1, 13, NULL), MNEMO_ERR_ARG); /* T > n_ctx */
    assert_int_equal(mnemo_model_forward(m, x, NULL, 0, 4, NULL), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_model_backward(m, 1.0f), MNEMO_ERR_ARG); /* no forward with targets */
    mnemo_model_free(m);
}

/* Window shapes whose B*T is not a multiple of the 16-float alignment, on a deep model: every
 * activation buffer is rounded up, and the slab must still hold them all. */
static void test_odd_shapes(void **s)
{
    (void)s;
    struct mnemo_model *m = tu_model(9, 16, 2, 13, 29, MNEMO_POS_ROPE, 1);
    const int shapes[][2] = {{1, 1}, {1, 5}, {3, 7}, {2, 13}, {1, 3}};
    uint16_t x[26], y[26];
    tokens(x, 26, 29, 8);
    tokens(y, 26, 29, 9);
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        float loss;
        assert_int_equal(mnemo_model_forward(m, x, y, shapes[i][0], shapes[i][1], &loss), MNEMO_OK);
        assert_int_equal(mnemo_model_backward(m, 1.0f), MNEMO_OK);
        assert_true(isfinite(loss));
    }
    mnemo_model_free(m);
}

/* A RoPE model's n_ctx can grow (no parameter depends on it): the same windows give the same
 * bits, longer ones run; learned positions refuse; an infini model whose segment was "the
 * window" keeps the old length as its segment. */
static void test_set_n_ctx(void **s)
{
    (void)s;
    uint16_t x[48], y[48];
    tokens(x, 48, 29, 21);
    tokens(y, 48, 29, 22);
    const int kinds[] = {MNEMO_ATTN_KIND_DENSE, MNEMO_ATTN_KIND_SELECTIVE, MNEMO_ATTN_KIND_INFINI};
    for (int i = 0; i < 3; i++) {
        struct mnemo_model *m = tiny_ctx(MNEMO_POS_ROPE, 5, kinds[i], 12);
        float before, after, longer;
        assert_int_equal(mnemo_model_forward(m, x, y, 4, 12, &before), MNEMO_OK);
        assert_int_equal(mnemo_model_forward(m, x, y, 2, 24, NULL), MNEMO_ERR_ARG);
        assert_int_equal(mnemo_model_set_n_ctx(m, 24), MNEMO_OK);
        assert_int_equal(mnemo_model_get_config(m)->n_ctx, 24);
        assert_int_equal(mnemo_model_forward(m, x, y, 4, 12, &after), MNEMO_OK);
        assert_true(before == after);
        assert_int_equal(mnemo_model_forward(m, x, y, 2, 24, &longer), MNEMO_OK);
        assert_int_equal(mnemo_model_backward(m, 1.0f), MNEMO_OK);
        assert_true(isfinite(longer));
        assert_int_equal(mnemo_model_set_n_ctx(m, 0), MNEMO_ERR_ARG);
        if (kinds[i] == MNEMO_ATTN_KIND_INFINI) /* segment 5 < 12: unchanged; smaller is refused */
            assert_int_equal(mnemo_model_set_n_ctx(m, 4), MNEMO_ERR_ARG);
        mnemo_model_free(m);
    }
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = 1, c.d_model = 16, c.n_head = 2, c.n_ctx = 12, c.vocab = 29;
    c.attn_kind = MNEMO_ATTN_KIND_INFINI; /* segment 0 = n_ctx */
    struct mnemo_model *m;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_OK);
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=0"));
    assert_int_equal(mnemo_model_set_n_ctx(m, 36), MNEMO_OK);
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=12"));
    assert_int_equal(m->lcfg[0].opt[MNI_INF_OPT_SEGMENT], 12);
    mnemo_model_free(m);
    m = tiny(MNEMO_POS_LEARNED, 5, MNEMO_ATTN_KIND_DENSE);
    assert_int_equal(mnemo_model_set_n_ctx(m, 24), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_model_get_config(m)->n_ctx, 12);
    mnemo_model_free(m);
}

/* mnemo_model_set_attn_opts("segment=N"): the model then computes what a model built with
 * that segment computes (the same weights), its backward runs, and bad values, options fixed by
 * the parameters (mem_update, named in the message; nothing changes then) or kinds without
 * segments are refused. segment=0 means n_ctx. */
static void test_set_segment(void **s)
{
    (void)s;
    uint16_t x[48], y[48];
    tokens(x, 48, 29, 23);
    tokens(y, 48, 29, 24);
    struct mnemo_model *m = tiny_ctx(MNEMO_POS_ROPE, 5, MNEMO_ATTN_KIND_INFINI, 24), *w, *w24;
    struct mnemo_model_config c = *mnemo_model_get_config(m);
    c.attn_opts = "segment=8,mem_update=linear";
    assert_int_equal(mnemo_model_create(&w, &c), MNEMO_OK);
    memcpy(w->params, m->params, m->n_params * sizeof(float));
    c.attn_opts = "segment=24";
    assert_int_equal(mnemo_model_create(&w24, &c), MNEMO_OK);
    memcpy(w24->params, m->params, m->n_params * sizeof(float));
    float l5, l8, want, l0, want24;
    assert_int_equal(mnemo_model_forward(m, x, y, 2, 24, &l5), MNEMO_OK);
    assert_int_equal(mnemo_model_set_attn_opts(m, "segment=8"), MNEMO_OK);
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=8"));
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "mem_update=linear"));
    assert_int_equal(mnemo_model_forward(m, x, y, 2, 24, &l8), MNEMO_OK);
    assert_int_equal(mnemo_model_backward(m, 1.0f), MNEMO_OK);
    assert_int_equal(mnemo_model_forward(w, x, y, 2, 24, &want), MNEMO_OK);
    assert_true(l8 == want && l8 != l5);
    assert_int_equal(mnemo_model_set_attn_opts(m, "segment=-1"), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_model_set_attn_opts(m, "segment=25"), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_model_set_attn_opts(m, "segment=x"), MNEMO_ERR_ARG);
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=8"));
    /* mem_update is fixed by the parameters: refused, named, and nothing of the list applies */
    assert_int_equal(mnemo_model_set_attn_opts(m, "segment=6,mem_update=delta"), MNEMO_ERR_ARG);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "mem_update"));
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=8"));
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "mem_update=linear"));
    assert_int_equal(mnemo_model_forward(m, x, y, 2, 24, &l8), MNEMO_OK);
    assert_true(l8 == want);
    /* ... but giving it its own value is no change */
    assert_int_equal(mnemo_model_set_attn_opts(m, "mem_update=linear"), MNEMO_OK);
    /* segment 0 is n_ctx */
    assert_int_equal(mnemo_model_set_attn_opts(m, "segment=0"), MNEMO_OK);
    assert_int_equal(mnemo_model_forward(m, x, y, 2, 24, &l0), MNEMO_OK);
    assert_int_equal(mnemo_model_forward(w24, x, y, 2, 24, &want24), MNEMO_OK);
    assert_true(l0 == want24 && l0 != l8);
    mnemo_model_free(w24);
    mnemo_model_free(w);
    mnemo_model_free(m);
    m = tiny(MNEMO_POS_ROPE, 5, MNEMO_ATTN_KIND_DENSE);
    assert_int_equal(mnemo_model_set_attn_opts(m, "segment=4"), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "segment"));
    mnemo_model_free(m);
}

static void test_bad_config(void **s)
{
    (void)s;
    struct mnemo_model_config c;
    struct mnemo_model *m;
    mnemo_model_config_default(&c);
    c.n_head = 3; /* does not divide 256 */
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
    assert_null(m);
    assert_non_null(strstr(mnemo_last_error(), "n_head"));
    mnemo_model_config_default(&c);
    c.n_layer = 0;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
    mnemo_model_config_default(&c);
    c.vocab_padded = 100; /* < vocab */
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
    mnemo_model_config_default(&c);
    c.attn_kind = 99;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
    mnemo_model_config_default(&c);
    c.rope_theta = -1;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
    /* segments belong to the infini kind (the message names the kind and the option), and must
     * fit in n_ctx; option lists must parse */
    mnemo_model_config_default(&c);
    c.attn_opts = "segment=16";
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
    assert_null(m);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "dense"));
    assert_non_null(strstr(mnemo_last_error(), "segment"));
    c.attn_kind = MNEMO_ATTN_KIND_INFINI;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_OK);
    mnemo_model_free(m);
    c.attn_opts = "segment=257"; /* n_ctx + 1 */
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "segment"));
    const char *bad[] = {"mem_update=5", "mem_update=fancy", "segment=4,segment=8", "segment",
                         "nosuch=1", "mem_repeat=0.5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        c.attn_opts = bad[i];
        assert_int_equal(mnemo_model_create(&m, &c), MNEMO_ERR_ARG);
        assert_null(m);
    }
}

/* The whole file at path (caller frees with mni_free); *size receives its length. */
static unsigned char *slurp(const char *path, long *size)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *buf = mni_alloc((size_t)*size);
    assert_int_equal(fread(buf, 1, (size_t)*size, f), (size_t)*size);
    fclose(f);
    return buf;
}

/* Writes the size bytes of buf as a checkpoint and expects loading it to fail as a format error
 * with a message. */
static void expect_format_error(const unsigned char *buf, size_t size)
{
    const char *bad = tu_tmp_path("bad.safetensors");
    FILE *f = fopen(bad, "wb");
    assert_non_null(f);
    fwrite(buf, 1, size, f);
    fclose(f);
    struct mnemo_model *m2;
    assert_int_equal(mnemo_model_load(&m2, bad), MNEMO_ERR_FORMAT);
    assert_null(m2);
    printf("expected error: %s\n", mnemo_last_error());
    remove(bad);
}

/* Tensor by tensor, every tensor of the two models (the transformer's and the kind's) holds
 * the same values (tiny() fills the padding between tensors too). */
static void assert_same_params(const struct mnemo_model *a, const struct mnemo_model *b)
{
    assert_int_equal(a->n_pinfo, b->n_pinfo);
    assert_int_equal(a->n_params, b->n_params);
    for (int id = 0; id < a->n_pinfo; id++) {
        const struct mni_param_info *pi = &a->pinfo[id];
        assert_string_equal(pi->name, b->pinfo[id].name);
        assert_int_equal(pi->offset, b->pinfo[id].offset);
        assert_memory_equal(a->params + pi->offset, b->params + pi->offset,
                            pi->numel * (pi->per_layer ? (size_t)a->cfg.n_layer : 1) * sizeof(float));
    }
}

/* The infini kind's settings travel in the checkpoint (format 2: "attn.<key>" metadata, the
 * gates as blocks.{l}.attn.gate); a bad value there is a format error. */
static void test_checkpoint_infini(void **s)
{
    (void)s;
    tiny_mem_update = 1; /* delta */
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 3, MNEMO_ATTN_KIND_INFINI), *m2;
    tiny_mem_update = 0;
    assert_int_equal(mnemo_model_set_attn_opts(m, "gate_lr_mult=7,mem_repeat=4"), MNEMO_OK);
    const char *path = tu_tmp_path("infini.safetensors");
    assert_int_equal(mnemo_model_save(m, path), MNEMO_OK);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_OK);
    assert_same_config(m, m2);
    const char *opts = mnemo_model_get_config(m2)->attn_opts;
    printf("options: %s\n", opts);
    assert_true(has_opt(opts, "segment=5") && has_opt(opts, "mem_update=delta"));
    assert_true(has_opt(opts, "gate_lr_mult=7") && has_opt(opts, "mem_repeat=4"));
    assert_true(m2->pinfo[MNI_P_COUNT].lr_mult == 7.0f);
    assert_same_params(m, m2);
    mnemo_model_free(m2);
    /* the file: format 2, the gates under their table name */
    struct mni_st_file *f;
    assert_int_equal(mni_st_open(&f, path), MNEMO_OK);
    assert_string_equal(mni_st_meta(f, "mnemo.format"), "2");
    assert_string_equal(mni_st_meta(f, "attn.segment"), "5");
    assert_string_equal(mni_st_meta(f, "attn.mem_update"), "delta");
    assert_null(mni_st_meta(f, "attn_segment"));
    for (int l = 0; l < 2; l++) {
        char nm[64];
        snprintf(nm, sizeof(nm), "blocks.%d.attn.gate", l);
        const struct mni_st_info *gi = mni_st_find(f, nm);
        assert_non_null(gi);
        assert_int_equal(gi->ndim, 1);
        assert_int_equal(gi->shape[0], 2); /* one per head */
        snprintf(nm, sizeof(nm), "blocks.%d.attn.kind", l);
        assert_null(mni_st_find(f, nm));
    }
    mni_st_close(f);
    long size;
    unsigned char *buf = slurp(path, &size);
    /* same-length edits of the header: an unknown rule, a segment that is not a number, an
     * option the kind does not have */
    const char *edits[][2] = {{"\"attn.mem_update\":\"delta\"", "\"attn.mem_update\":\"delts\""},
                              {"\"attn.segment\":\"5\"", "\"attn.segment\":\"x\""},
                              {"\"attn.segment\":\"5\"", "\"attn.sigment\":\"5\""}};
    for (int e = 0; e < 3; e++) {
        unsigned char *hdr = mni_alloc((size_t)size);
        memcpy(hdr, buf, (size_t)size);
        char *hit = strstr((char *)hdr + 8, edits[e][0]);
        assert_non_null(hit);
        memcpy(hit, edits[e][1], strlen(edits[e][1]));
        expect_format_error(hdr, (size_t)size);
        mni_free(hdr);
    }
    remove(path);
    mni_free(buf);
    mnemo_model_free(m);
}

/* Writes m as a format-1 checkpoint, as mnemo 0.1 wrote it: the config's fields, the infini
 * kind's gates as blocks.{l}.attn.kind, and the extra (key, value) metadata pairs given (its
 * options attn_segment / attn_mem_update, prune.budgets, ...). `format` is what mnemo.format
 * says ("1"; another value makes a file that is not what it claims). */
static void write_format1(const struct mnemo_model *m, const char *path, const char *format,
                          const char *const *extra, int n_extra)
{
    const struct mnemo_model_config *c = mnemo_model_get_config(m);
    const int L = c->n_layer;
    static struct mni_st_tensor t[MNI_P_MAX * 4];
    static char names[MNI_P_MAX * 4][96];
    size_t n = 0;
    for (int id = 0; id < m->n_pinfo; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        if (!pi->numel) continue;
        for (int l = 0; l < (pi->per_layer ? L : 1); l++) {
            assert_true(n < sizeof(t) / sizeof(t[0]));
            if (id >= MNI_P_COUNT) { /* the kind's one tensor: infini's gates */
                assert_int_equal(id, MNI_P_COUNT);
                snprintf(names[n], sizeof(names[n]), "blocks.%d.attn.kind", l);
            } else {
                snprintf(names[n], sizeof(names[n]), pi->name, l);
            }
            memset(&t[n], 0, sizeof(t[n]));
            t[n].name = names[n];
            t[n].dtype = MNI_ST_F32;
            t[n].ndim = pi->d1 ? 2 : 1;
            t[n].shape[0] = pi->d0;
            t[n].shape[1] = pi->d1;
            t[n].data = mni_model_param(m, id, l);
            n++;
        }
    }
    char num[6][32], theta[32];
    snprintf(num[0], 32, "%d", c->n_layer);
    snprintf(num[1], 32, "%d", c->d_model);
    snprintf(num[2], 32, "%d", c->n_head);
    snprintf(num[3], 32, "%d", c->n_ctx);
    snprintf(num[4], 32, "%d", c->vocab);
    snprintf(num[5], 32, "%d", c->vocab_padded);
    snprintf(theta, sizeof(theta), "%.9g", (double)c->rope_theta);
    const char *kv[64] = {"mnemo.format", format, "n_layer", num[0], "d_model", num[1],
                          "n_head", num[2], "n_ctx", num[3], "vocab", num[4],
                          "vocab_padded", num[5],
                          "pos", c->pos == MNEMO_POS_LEARNED ? "learned" : "rope",
                          "rope_theta", theta, "attn_kind", mnemo_attn_kind_name(c->attn_kind),
                          "tokenizer", "bytes+bos"};
    int n_kv = 11;
    assert_true(n_kv + n_extra <= 32);
    for (int i = 0; i < n_extra; i++) {
        kv[2 * n_kv] = extra[2 * i];
        kv[2 * n_kv + 1] = extra[2 * i + 1];
        n_kv++;
    }
    assert_int_equal(mni_st_write(path, t, n, kv, (size_t)n_kv), MNEMO_OK);
}

/* A format-1 checkpoint still loads: infini's options from attn_segment / attn_mem_update and
 * its gates from blocks.{l}.attn.kind, giving the model that was written (options, every
 * tensor, the gates' values, the logits); saved again it becomes a format-2 file that loads
 * to the same model. The same file claiming format 2 is refused (its gates have the old name). */
static void test_checkpoint_format1_infini(void **s)
{
    (void)s;
    tiny_mem_update = 1; /* delta */
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 4, MNEMO_ATTN_KIND_INFINI), *m2, *m3;
    tiny_mem_update = 0;
    const char *path = tu_tmp_path("v1_infini.safetensors");
    const char *extra[] = {"attn_segment", "5", "attn_mem_update", "delta", "train.step", "42"};
    write_format1(m, path, "1", extra, 3);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_OK);
    const char *opts = mnemo_model_get_config(m2)->attn_opts;
    printf("format 1 loaded with options: %s\n", opts);
    assert_true(has_opt(opts, "segment=5") && has_opt(opts, "mem_update=delta"));
    assert_true(has_opt(opts, "gate_lr_mult=30") && has_opt(opts, "mem_repeat=0")); /* defaults */
    assert_same_config(m, m2);
    assert_int_equal(m2->lcfg[1].opt[MNI_INF_OPT_SEGMENT], 5);
    assert_int_equal(m2->lcfg[1].opt[MNI_INF_OPT_MEM_UPDATE], 1);
    assert_string_equal(mnemo_model_meta(m2, "train.step"), "42");
    /* the gates' values, one per head and layer, and every other tensor */
    assert_int_equal(m2->n_kparams, 1);
    assert_string_equal(m2->pinfo[MNI_P_COUNT].name, "blocks.%d.attn.gate");
    for (int l = 0; l < 2; l++) {
        float *g[MNEMO_ATTN_MAX_PARAMS], *want[MNEMO_ATTN_MAX_PARAMS];
        mni_model_kind_params(m2, l, g, 0);
        mni_model_kind_params(m, l, want, 0);
        assert_true(want[0][0] != 0.0f && want[0][0] != want[0][1]); /* tiny() perturbed them */
        assert_memory_equal(g[0], want[0], 2 * sizeof(float));
    }
    assert_same_params(m, m2);
    uint16_t x[24];
    tokens(x, 24, 29, 5);
    const size_t nl = (size_t)24 * m->cfg.vocab_padded;
    float *want = mni_alloc(nl * sizeof(float));
    assert_int_equal(mnemo_model_forward(m, x, NULL, 2, 12, NULL), MNEMO_OK);
    memcpy(want, mnemo_model_logits(m), nl * sizeof(float));
    assert_int_equal(mnemo_model_forward(m2, x, NULL, 2, 12, NULL), MNEMO_OK);
    assert_memory_equal(mnemo_model_logits(m2), want, nl * sizeof(float));
    mni_free(want);
    /* saved again: format 2 */
    const char *path2 = tu_tmp_path("v1_infini_resaved.safetensors");
    assert_int_equal(mnemo_model_save(m2, path2), MNEMO_OK);
    struct mni_st_file *f;
    assert_int_equal(mni_st_open(&f, path2), MNEMO_OK);
    assert_string_equal(mni_st_meta(f, "mnemo.format"), "2");
    assert_non_null(mni_st_find(f, "blocks.1.attn.gate"));
    assert_null(mni_st_find(f, "blocks.1.attn.kind"));
    mni_st_close(f);
    assert_int_equal(mnemo_model_load(&m3, path2), MNEMO_OK);
    assert_same_config(m2, m3);
    assert_same_params(m2, m3);
    mnemo_model_free(m3);
    mnemo_model_free(m2);
    /* format 1 without the options: the defaults (segment 0 = n_ctx, linear) */
    write_format1(m, path, "1", NULL, 0);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_OK);
    opts = mnemo_model_get_config(m2)->attn_opts;
    assert_true(has_opt(opts, "segment=0") && has_opt(opts, "mem_update=linear"));
    assert_same_params(m, m2);
    mnemo_model_free(m2);
    /* a bad value in a format-1 option is a format error naming it */
    const char *bad[] = {"attn_segment", "5", "attn_mem_update", "delts"};
    write_format1(m, path, "1", bad, 2);
    m2 = (struct mnemo_model *)&m2;
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_ERR_FORMAT);
    assert_null(m2);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "mem_update"));
    /* the old names are format 1's only */
    write_format1(m, path, "2", extra, 2);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_ERR_FORMAT);
    assert_null(m2);
    printf("expected error: %s\n", mnemo_last_error());
    remove(path);
    remove(path2);
    mnemo_model_free(m);
}

/* A format-1 selective checkpoint's prune.budgets ("K1,K2", what prune-search stored) becomes
 * the session option budget=K1/K2: sessions start from it (unless no_model_opts), and the pair
 * is not carried as metadata any more. */
static void test_checkpoint_format1_budgets(void **s)
{
    (void)s;
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 4, MNEMO_ATTN_KIND_SELECTIVE), *m2;
    const char *path = tu_tmp_path("v1_selective.safetensors");
    const char *extra[] = {"prune.budgets", "4,3", "prune.target", "1.5"};
    write_format1(m, path, "1", extra, 2);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_OK);
    const char *opts = mnemo_model_get_config(m2)->attn_opts;
    printf("format 1 loaded with options: %s\n", opts);
    assert_true(has_opt(opts, "budget=4/3"));
    assert_true(m2->lcfg[0].opt[MNI_SEL_OPT_BUDGET] == 4 && m2->lcfg[1].opt[MNI_SEL_OPT_BUDGET] == 3);
    assert_null(mnemo_model_meta(m2, "prune.budgets"));
    assert_string_equal(mnemo_model_meta(m2, "prune.target"), "1.5");
    assert_same_params(m, m2);
    /* sessions: the carried budgets, as if given; without them, the full cache */
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = 1;
    struct mnemo_session *carried, *given, *plain;
    assert_int_equal(mnemo_session_create_ex(&carried, m2, &sc), MNEMO_OK);
    sc.no_model_opts = 1;
    assert_int_equal(mnemo_session_create_ex(&plain, m2, &sc), MNEMO_OK);
    sc.attn_opts = "budget=4/3";
    assert_int_equal(mnemo_session_create_ex(&given, m, &sc), MNEMO_OK);
    assert_int_equal(mnemo_session_state_bytes(carried), mnemo_session_state_bytes(given));
    assert_true(mnemo_session_state_bytes(carried) < mnemo_session_state_bytes(plain) / 2);
    assert_int_equal(mnemo_session_bounded(carried), 1);
    assert_int_equal(mnemo_session_bounded(plain), 0);
    uint16_t x[30];
    tokens(x, 30, 29, 6);
    const int Vp = m->cfg.vocab_padded;
    for (int t = 0; t < 30; t++) { /* past n_ctx: the carried budgets bound the state */
        const float *la, *lb;
        float keep[64];
        assert_int_equal(mnemo_session_feed(carried, x + t, 1, &la), MNEMO_OK);
        memcpy(keep, la, (size_t)Vp * sizeof(float));
        assert_int_equal(mnemo_session_feed(given, x + t, 1, &lb), MNEMO_OK);
        assert_memory_equal(keep, lb, (size_t)Vp * sizeof(float));
    }
    mnemo_session_free(plain);
    mnemo_session_free(given);
    mnemo_session_free(carried);
    /* saved again, the budgets are the option attn.budget */
    assert_int_equal(mnemo_model_save_meta(m2, path), MNEMO_OK);
    struct mni_st_file *f;
    assert_int_equal(mni_st_open(&f, path), MNEMO_OK);
    assert_string_equal(mni_st_meta(f, "attn.budget"), "4/3");
    assert_null(mni_st_meta(f, "prune.budgets"));
    assert_string_equal(mni_st_meta(f, "prune.target"), "1.5");
    mni_st_close(f);
    mnemo_model_free(m2);
    /* a budget of 1 in them is refused like the option */
    const char *bad[] = {"prune.budgets", "1,3"};
    write_format1(m, path, "1", bad, 1);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_ERR_FORMAT);
    assert_null(m2);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "budget"));
    remove(path);
    mnemo_model_free(m);
}

static void test_checkpoint_roundtrip(void **s)
{
    (void)s;
    for (int pos = 0; pos < MNEMO_POS_COUNT; pos++) {
        struct mnemo_model *m = tiny(pos, 3, MNEMO_ATTN_KIND_DENSE), *m2;
        const char *path = tu_tmp_path("model.safetensors");
        assert_int_equal(mnemo_model_save(m, path), MNEMO_OK);
        assert_int_equal(mnemo_model_load(&m2, path), MNEMO_OK);
        assert_same_config(m, m2);
        assert_int_equal(m->n_params, m2->n_params);
        assert_memory_equal(m->params, m2->params, m->n_params * sizeof(float));
        mnemo_model_free(m2);
        /* truncated: every cut point must fail cleanly */
        long size;
        unsigned char *buf = slurp(path, &size);
        FILE *f;
        const char *cut = tu_tmp_path("cut.safetensors");
        for (long k = 0; k < size; k += size / 97 + 1) {
            f = fopen(cut, "wb");
            fwrite(buf, 1, (size_t)k, f);
            fclose(f);
            assert_int_not_equal(mnemo_model_load(&m2, cut), MNEMO_OK);
            assert_null(m2);
        }
        /* a config field changed in the header: shapes no longer match */
        unsigned char *hit = (unsigned char *)strstr((char *)buf + 8, "\"d_model\":\"16\"");
        assert_non_null(hit);
        hit[12] = '2'; /* 16 -> 12 */
        expect_format_error(buf, (size_t)size);
        remove(cut);
        remove(path);
        mni_free(buf);
        mnemo_model_free(m);
    }
    struct mnemo_model *m2;
    assert_int_equal(mnemo_model_load(&m2, "/nonexistent/model.safetensors"), MNEMO_ERR_IO);
}

/* A checkpoint whose config is impossible (n_head 3 with d_model 16): the message must keep
 * the reason, not only the prefix (the reason used to be formatted into its own buffer). */
static void test_checkpoint_impossible_config(void **s)
{
    (void)s;
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 3, MNEMO_ATTN_KIND_DENSE), *m2;
    const char *path = tu_tmp_path("cfg.safetensors");
    assert_int_equal(mnemo_model_save(m, path), MNEMO_OK);
    long size;
    unsigned char *buf = slurp(path, &size);
    char *hit = strstr((char *)buf + 8, "\"n_head\":\"2\"");
    assert_non_null(hit);
    hit[10] = '3';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, (size_t)size, f), (size_t)size);
    fclose(f);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_ERR_FORMAT);
    assert_null(m2);
    const char *e = mnemo_last_error();
    printf("expected error: %s\n", e);
    assert_non_null(strstr(e, "impossible config: n_head = 3"));
    assert_non_null(strstr(e, "d_model = 16"));
    assert_null(strstr(strstr(e, "impossible config") + 1, "impossible config"));
    mni_free(buf);
    remove(path);
    mnemo_model_free(m);
}

/* The fullest metadata the model holds (16 pairs of 127-byte keys and values) round-trips
 * exactly; a checkpoint carrying more (a 1000-byte value, 40 pairs) is refused with a message
 * instead of being loaded cut short, and so are setters asking for more. */
static void test_checkpoint_meta_limits(void **s)
{
    (void)s;
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 3, MNEMO_ATTN_KIND_DENSE), *m2;
    const char *path = tu_tmp_path("meta.safetensors");
    /* 16 pairs at the limits (127-byte keys, 4095-byte values) reload exactly; one of them is
     * the prune.budgets of 819 layers ("1234,1234,...") */
    static char key[16][128], val[16][4096];
    for (int i = 0; i < 16; i++) {
        snprintf(key[i], sizeof(key[i]), "%s.%02d", i % 2 ? "prune" : "train", i);
        memset(key[i] + 8, 'k', 127 - 8);
        key[i][127] = '\0';
        for (int j = 0; j < 4095; j++) val[i][j] = (char)('0' + (i + j) % 10);
        val[i][4095] = '\0';
    }
    snprintf(key[15], sizeof(key[15]), "prune.budgets");
    for (int l = 0; l < 819; l++) memcpy(val[15] + 5 * l, "1234,", 5);
    val[15][4094] = '\0';
    for (int i = 0; i < 16; i++) assert_int_equal(mnemo_model_set_meta(m, key[i], val[i]), MNEMO_OK);
    assert_int_equal(mnemo_model_set_meta(m, "train.one_more", "1"), MNEMO_ERR_ARG);
    static char big[5001];
    memset(big, '7', 5000);
    assert_int_equal(mnemo_model_set_meta(m, key[0], big), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_model_save_meta(m, path), MNEMO_OK);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_OK);
    for (int i = 0; i < 16; i++) {
        const char *v = mnemo_model_meta(m2, key[i]);
        assert_non_null(v);
        assert_string_equal(v, val[i]);
    }
    mnemo_model_free(m2);

    /* written by hand: a 5000-byte value is refused at load, not cut */
    const char *kv1[] = {"prune.budgets", big};
    assert_int_equal(mni_model_save_ex(m, path, kv1, 1), MNEMO_OK);
    m2 = (struct mnemo_model *)&m2;
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_ERR_FORMAT);
    assert_null(m2);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "prune.budgets"));
    assert_non_null(strstr(mnemo_last_error(), "5000-byte value"));

    /* 40 short pairs */
    char keys40[40][32];
    const char *kv40[80];
    for (int i = 0; i < 40; i++) {
        snprintf(keys40[i], sizeof(keys40[i]), "train.k%02d", i);
        kv40[2 * i] = keys40[i];
        kv40[2 * i + 1] = "v";
    }
    assert_int_equal(mni_model_save_ex(m, path, kv40, 40), MNEMO_OK);
    assert_int_equal(mnemo_model_load(&m2, path), MNEMO_ERR_FORMAT);
    assert_null(m2);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "more than 16"));
    remove(path);
    mnemo_model_free(m);
}

/* A FIFO given as a checkpoint is refused at once (fopen would wait for a writer forever; the
 * alarm turns such a hang into a failure instead of a stuck test run). */
static void test_checkpoint_fifo(void **s)
{
    (void)s;
    const char *path = tu_tmp_path("fifo.safetensors");
    assert_int_equal(mkfifo(path, 0600), 0);
    struct mnemo_model *m = (struct mnemo_model *)&m;
    alarm(20);
    assert_int_equal(mnemo_model_load(&m, path), MNEMO_ERR_IO);
    alarm(0);
    assert_null(m);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), path));
    assert_non_null(strstr(mnemo_last_error(), "not a regular file"));
    remove(path);
}

/* Hostile checkpoints (tests/data): a 280-byte file whose metadata claims 8 layers of width
 * 2048 and holds no tensor is refused before anything of that size is allocated (the loader
 * used to zero-fill 1.6 GB first); a 32 KB file claiming n_ctx = 4M loads, and its session's
 * state bound is counted without allocating the 512 MiB cache. The hook counts requests. */
static void test_checkpoint_hostile(void **s)
{
    (void)s;
    struct mnemo_model *m = (struct mnemo_model *)&m;
    mni_alloc_fail_after(LONG_MAX, 0); /* count, never fail */
    assert_int_equal(mnemo_model_load(&m, MNEMO_TEST_DATA "/ckpt_bigalloc_1p9GB.safetensors"),
                     MNEMO_ERR_FORMAT);
    size_t largest = mni_alloc_seen_max();
    mni_alloc_fail_after(-1, 0);
    assert_null(m);
    printf("expected error: %s (largest allocation %zu bytes)\n", mnemo_last_error(), largest);
    assert_non_null(strstr(mnemo_last_error(), "no tensor 'wte.weight'"));
    assert_true(largest < 256 * 1024);

    mni_alloc_fail_after(LONG_MAX, 0);
    assert_int_equal(mnemo_model_load(&m, MNEMO_TEST_DATA "/ckpt_nctx4M.safetensors"), MNEMO_OK);
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    size_t bytes = 0;
    int bounded = 1;
    assert_int_equal(mnemo_session_plan(m, &sc, &bytes, &bounded), MNEMO_OK);
    assert_int_equal(bounded, 0);
    largest = mni_alloc_seen_max();
    mni_alloc_fail_after(-1, 0);
    const struct mnemo_model_config *c = mnemo_model_get_config(m);
    assert_int_equal(c->n_ctx, 4194304);
    /* a dense cache: keys and values of every position, every layer (and a little
     * bookkeeping) */
    const size_t kv = (size_t)c->n_layer * 2 * (size_t)c->n_ctx * (size_t)c->d_model * 4;
    assert_true(bytes >= kv && bytes <= kv + 4096);
    printf("n_ctx 4M: state %zu bytes, largest allocation %zu bytes\n", bytes, largest);
    assert_true(largest < 256 * 1024);
    mnemo_model_free(m);
}

/* mnemo_session_plan gives the bound of the session it describes, for every kind and with
 * per-layer budgets; budgets the kind refuses are refused alike. */
static void test_state_bytes(void **s)
{
    (void)s;
    const int kinds[3] = {MNEMO_ATTN_KIND_DENSE, MNEMO_ATTN_KIND_SELECTIVE, MNEMO_ATTN_KIND_INFINI};
    const char *budgets = "budget=4/0"; /* refused by the kinds without the option */
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 2; b++) {
            struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 5, kinds[k]);
            struct mnemo_session_config sc;
            mnemo_session_config_default(&sc);
            sc.max_chunk = 3;
            sc.attn_opts = b ? budgets : NULL;
            struct mnemo_session *ss = NULL;
            size_t bytes = 1;
            int bounded = -1;
            enum mnemo_status st = mnemo_session_create_ex(&ss, m, &sc);
            assert_int_equal(mnemo_session_plan(m, &sc, &bytes, &bounded), st);
            if (st == MNEMO_OK) {
                assert_true(bytes > 0);
                assert_int_equal(bytes, mnemo_session_state_bytes(ss));
                assert_int_equal(bounded, mnemo_session_bounded(ss));
            } else {
                assert_int_equal(bytes, 0);
            }
            mnemo_session_free(ss);
            mnemo_model_free(m);
        }
}

/* A tensor the table does not have is named: a layer past n_layer, a layer number with a
 * leading zero, a name of no entry. */
static void test_checkpoint_unexpected_tensor(void **s)
{
    (void)s;
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 3, MNEMO_ATTN_KIND_DENSE), *m2;
    const char *path = tu_tmp_path("extra.safetensors");
    assert_int_equal(mnemo_model_save(m, path), MNEMO_OK);
    struct mni_st_file *f;
    assert_int_equal(mni_st_open(&f, path), MNEMO_OK);
    const size_t n = mni_st_count(f);
    struct mni_st_tensor t[64];
    assert_true(n + 1 < 64);
    for (size_t i = 0; i < n; i++) {
        const struct mni_st_info *in = mni_st_info_at(f, i);
        t[i] = (struct mni_st_tensor){.name = in->name, .dtype = in->dtype, .ndim = in->ndim};
        memcpy(t[i].shape, in->shape, sizeof(t[i].shape));
        t[i].data = m->params; /* any bytes: the load must fail before it reads them */
    }
    const char *kv[2 * 32];
    size_t n_kv = mni_st_meta_count(f);
    assert_true(n_kv <= 32);
    for (size_t i = 0; i < n_kv; i++) mni_st_meta_at(f, i, &kv[2 * i], &kv[2 * i + 1]);
    const char *extra[] = {"blocks.2.ln1.weight", "blocks.01.ln1.weight", "blocks.0.ln3.weight",
                           "lnf.scale"};
    const char *other = tu_tmp_path("extra2.safetensors");
    for (int e = 0; e < 4; e++) {
        t[n] = (struct mni_st_tensor){.name = extra[e], .dtype = MNI_ST_F32, .ndim = 1,
                                      .shape = {16}, .data = m->params};
        assert_int_equal(mni_st_write(other, t, n + 1, kv, n_kv), MNEMO_OK);
        assert_int_equal(mnemo_model_load(&m2, other), MNEMO_ERR_FORMAT);
        printf("expected error: %s\n", mnemo_last_error());
        assert_non_null(strstr(mnemo_last_error(), "unexpected tensor"));
        assert_non_null(strstr(mnemo_last_error(), extra[e]));
    }
    /* without the extra tensor the same file loads */
    assert_int_equal(mni_st_write(other, t, n, kv, n_kv), MNEMO_OK);
    assert_int_equal(mnemo_model_load(&m2, other), MNEMO_OK);
    mnemo_model_free(m2);
    mni_st_close(f);
    remove(other);
    remove(path);
    mnemo_model_free(m);
}

/* A FULL on the first layer keeps the history (the call is refused whole); a FULL that only a
 * later layer meets (budgets {4, 0}: layer 0 evicts, layer 1 fills at n_ctx) resets the session
 * and says so in the message. */
static void test_session_full_later_layer(void **s)
{
    (void)s;
    struct mnemo_model *m = tiny(MNEMO_POS_ROPE, 7, MNEMO_ATTN_KIND_SELECTIVE);
    uint16_t x[12];
    tokens(x, 12, 29, 3);
    const float *lg;
    struct mnemo_session *ss;
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = 4;
    sc.attn_opts = "budget=4/0";
    assert_int_equal(mnemo_session_create_ex(&ss, m, &sc), MNEMO_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(mnemo_session_feed(ss, x + 4 * i, 4, &lg), MNEMO_OK);
    assert_int_equal(mnemo_session_pos(ss), 12);
    assert_int_equal(mnemo_session_feed(ss, x, 1, &lg), MNEMO_ERR_FULL);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "reset to empty"));
    assert_int_equal(mnemo_session_pos(ss), 0);
    assert_int_equal(mnemo_session_feed(ss, x, 4, &lg), MNEMO_OK); /* usable again */
    mnemo_session_free(ss);
    /* without budgets the first layer is full first: nothing is lost */
    assert_int_equal(mnemo_session_create(&ss, m, 4), MNEMO_OK);
    for (int i = 0; i < 3; i++) assert_int_equal(mnemo_session_feed(ss, x + 4 * i, 4, &lg), MNEMO_OK);
    assert_int_equal(mnemo_session_feed(ss, x, 1, &lg), MNEMO_ERR_FULL);
    assert_null(strstr(mnemo_last_error(), "reset"));
    assert_int_equal(mnemo_session_pos(ss), 12);
    mnemo_session_free(ss);
    mnemo_model_free(m);
}

/* Sampling: the draw follows the softmax of logits / temperature (frequencies over many
 * draws), top-k and top-p cut the tail, temperature 0 and a vanishing one are greedy, NaN
 * logits are never drawn, and nothing to draw from gives -1. */
static void test_sample(void **s)
{
    (void)s;
    float work[16];
    uint64_t rng = 12345;
    const float nan = NAN;
    struct mnemo_sampler_config greedy = {0, 0, 1}, warm = {1, 0, 1};
    const float lg[4] = {0.0f, logf(3.0f), -1.0f, 0.5f};
    assert_int_equal(mnemo_sample(lg, 4, &greedy, &rng, work), 1);
    struct mnemo_sampler_config tiny_t = {1e-40f, 0, 0.9f}; /* 1/t overflows */
    assert_int_equal(mnemo_sample(lg, 4, &tiny_t, &rng, work), 1);
    const float lg_nan[4] = {nan, 2.0f, nan, 1.0f};
    assert_int_equal(mnemo_sample(lg_nan, 4, &greedy, &rng, work), 1);
    for (int i = 0; i < 200; i++) {
        int t = mnemo_sample(lg_nan, 4, &warm, &rng, work);
        assert_true(t == 1 || t == 3);
    }
    const float all_nan[2] = {nan, nan};
    assert_int_equal(mnemo_sample(all_nan, 2, &warm, &rng, work), -1);
    assert_int_equal(mnemo_sample(lg, 0, &warm, &rng, work), -1);
    /* two logits 0 and log 3: the second is drawn 3/4 of the time */
    const int n = 40000;
    int hits = 0;
    for (int i = 0; i < n; i++) hits += mnemo_sample(lg, 2, &warm, &rng, work) == 1;
    printf("p(1) = %.4f (want 0.75)\n", (double)hits / n);
    assert_true(fabs((double)hits / n - 0.75) < 0.01); /* 5 standard deviations */
    /* top-k 2 keeps ids 1 and 3; top-p 0.6 of (0.5, 0.3, 0.2) keeps the first two */
    struct mnemo_sampler_config k2 = {1, 2, 1};
    for (int i = 0; i < 500; i++) {
        int t = mnemo_sample(lg, 4, &k2, &rng, work);
        assert_true(t == 1 || t == 3);
    }
    const float lp[3] = {logf(0.5f), logf(0.3f), logf(0.2f)};
    struct mnemo_sampler_config p6 = {1, 0, 0.6f};
    int seen[3] = {0};
    for (int i = 0; i < 2000; i++) seen[mnemo_sample(lp, 3, &p6, &rng, work)]++;
    assert_int_equal(seen[2], 0);
    assert_true(seen[0] > 0 && seen[1] > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grads_rope),      cmocka_unit_test(test_grads_learned),
        cmocka_unit_test(test_grads_own_gemm),
        cmocka_unit_test(test_grads_selective),
        cmocka_unit_test(test_grads_memory_loss),
        cmocka_unit_test(test_grads_infini),
        cmocka_unit_test(test_session_infini),
        cmocka_unit_test(test_checkpoint_infini),
        cmocka_unit_test(test_checkpoint_format1_infini),
        cmocka_unit_test(test_checkpoint_format1_budgets),
        cmocka_unit_test(test_session_rope),    cmocka_unit_test(test_session_learned),
        cmocka_unit_test(test_session_selective),
        cmocka_unit_test(test_session_budgets),
        cmocka_unit_test(test_bad_tokens),      cmocka_unit_test(test_bad_config),
        cmocka_unit_test(test_odd_shapes),      cmocka_unit_test(test_set_n_ctx),
        cmocka_unit_test(test_set_segment),
        cmocka_unit_test(test_checkpoint_roundtrip),
        cmocka_unit_test(test_checkpoint_impossible_config),
        cmocka_unit_test(test_checkpoint_meta_limits),
        cmocka_unit_test(test_checkpoint_fifo), cmocka_unit_test(test_sample),
        cmocka_unit_test(test_session_full_later_layer),
        cmocka_unit_test(test_checkpoint_hostile),
        cmocka_unit_test(test_state_bytes),
        cmocka_unit_test(test_checkpoint_unexpected_tensor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
