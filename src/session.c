/*
 * session.c -- streaming inference: the model's layers run over chunks of new tokens while
 * each layer's attention kind keeps its own state (a KV cache for dense). The per-layer code is
 * the training forward's (mni_layer_forward), only attention goes through step() instead of
 * forward(), so a window fed token by token gives the training forward's logits (tested).
 */
#include <string.h>

#include "attn/registry.h"
#include "mni.h"
#include "model.h"

struct mnemo_session {
    struct mnemo_model *m;  /* borrowed */
    int max_chunk;
    int pos;                /* tokens fed so far */
    struct mnemo_attn_cfg *acfg; /* (L) each layer's attention cfg: the model's options with
                                  * the session's own (mnemo_session_config.attn_opts) */
    size_t *state_off;      /* (L+1) byte offsets of the layers' states, 64-byte rounded */
    unsigned char *state;   /* all layers' states */
    void *step_scratch;
    float *slab;
    struct mni_layer_acts a; /* (max_chunk) buffers shared by all layers */
    float *res_a, *res_b, *lnf, *logits;
    int *positions;
};

/* Points the session's buffers into c's slab (or only counts, with c->base == NULL). */
static void carve_session(struct mnemo_session *s, struct mni_carver *c, size_t N, size_t C,
                          size_t Vp)
{
    s->res_a = mni_carve(c, N * C);
    s->res_b = mni_carve(c, N * C);
    s->a.ln1 = mni_carve(c, N * C);
    s->a.ln1_mean = mni_carve(c, N);
    s->a.ln1_rstd = mni_carve(c, N);
    s->a.qkv = mni_carve(c, N * 3 * C);
    s->a.atty = mni_carve(c, N * C);
    s->a.res_mid = mni_carve(c, N * C);
    s->a.ln2 = mni_carve(c, N * C);
    s->a.ln2_mean = mni_carve(c, N);
    s->a.ln2_rstd = mni_carve(c, N);
    s->a.fch = mni_carve(c, N * 4 * C);
    s->a.fch_gelu = mni_carve(c, N * 4 * C);
    s->lnf = mni_carve(c, N * C);
    s->logits = mni_carve(c, N * Vp);
    s->positions = (int *)mni_carve(c, N);
}

void mnemo_session_config_default(struct mnemo_session_config *sc)
{
    memset(sc, 0, sizeof(*sc));
    sc->max_chunk = 64;
}

enum mnemo_status mnemo_session_create(struct mnemo_session **out, struct mnemo_model *m,
                                       int max_chunk)
{
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = max_chunk;
    return mnemo_session_create_ex(out, m, &sc);
}

/* Each layer's attention cfg of a session of m with sc (L of them, caller frees): the model's
 * options (without the session options it carries, with no_model_opts), then the session's
 * own; validated by the kind. */
static enum mnemo_status session_cfgs(struct mnemo_model *m, const struct mnemo_session_config *sc,
                                      struct mnemo_attn_cfg **out)
{
    *out = NULL;
    const size_t L = (size_t)m->cfg.n_layer;
    if (!(m->attn->caps(&m->lcfg[0]) & MNEMO_ATTN_CAP_STEP) || !m->attn->step)
        return mni_err(MNEMO_ERR_UNSUPPORTED, "%s attention cannot stream (no session)",
                       m->attn->name);
    const char *own = sc ? sc->attn_opts : NULL;
    enum mnemo_status st = mni_attn_opts_in_scope(m->cfg.attn_kind, own,
                                                  1u << MNEMO_ATTN_SCOPE_SESSION, "a session");
    if (st != MNEMO_OK) return st;
    const size_t n_opts = strlen(m->attn_opts) + (own ? strlen(own) : 0) + 2;
    struct mnemo_attn_cfg *acfg = mni_alloc(mni_mul(L, sizeof(*acfg)));
    char *base = mni_malloc(n_opts), *opts = mni_malloc(n_opts);
    if (!acfg || !base || !opts) {
        st = mni_err(MNEMO_ERR_NOMEM, "out of memory for the session");
    } else if (sc && sc->no_model_opts) {
        const unsigned keep = 1u << MNEMO_ATTN_SCOPE_MODEL | 1u << MNEMO_ATTN_SCOPE_TRAIN;
        mnemo_attn_opts_format(m->lcfg, (int)L, keep, 1, base, n_opts);
    } else {
        memcpy(base, m->attn_opts, strlen(m->attn_opts) + 1);
    }
    if (st == MNEMO_OK && mni_attn_opts_merge(opts, n_opts, base, own)) st = MNEMO_ERR_ARG;
    if (st == MNEMO_OK) st = mni_attn_cfgs_make(acfg, &m->cfg, opts);
    mni_free(base);
    mni_free(opts);
    if (st != MNEMO_OK) {
        mni_free(acfg);
        return st;
    }
    *out = acfg;
    return MNEMO_OK;
}

/* 1 when every layer's state is bounded whatever the stream length. */
static int all_bounded(const struct mnemo_model *m, const struct mnemo_attn_cfg *acfg)
{
    for (int l = 0; l < m->cfg.n_layer; l++)
        if (!(m->attn->caps(&acfg[l]) & MNEMO_ATTN_CAP_BOUNDED)) return 0;
    return 1;
}

enum mnemo_status mnemo_session_plan(struct mnemo_model *m, const struct mnemo_session_config *sc,
                                     size_t *state_bytes, int *bounded)
{
    struct mnemo_attn_cfg *acfg;
    *state_bytes = 0;
    *bounded = 0;
    enum mnemo_status st = session_cfgs(m, sc, &acfg);
    if (st != MNEMO_OK) return st;
    *state_bytes = mni_attn_state_bytes(m->attn, acfg, m->cfg.n_layer);
    *bounded = all_bounded(m, acfg);
    mni_free(acfg);
    if (*state_bytes == SIZE_MAX) /* a checkpoint may claim a context no memory could hold */
        return mni_err(MNEMO_ERR_ARG, "the attention state of a session is too large to count");
    return MNEMO_OK;
}

enum mnemo_status mnemo_session_create_ex(struct mnemo_session **out, struct mnemo_model *m,
                                          const struct mnemo_session_config *sc)
{
    *out = NULL;
    const int max_chunk = sc->max_chunk;
    if (max_chunk < 1 || max_chunk > 1 << 16)
        return mni_err(MNEMO_ERR_ARG, "session chunk %d must be in [1, 65536]", max_chunk);
    const size_t L = (size_t)m->cfg.n_layer, C = (size_t)m->cfg.d_model, N = (size_t)max_chunk;
    const size_t Vp = (size_t)m->cfg.vocab_padded;
    struct mnemo_attn_cfg *acfg;
    enum mnemo_status st = session_cfgs(m, sc, &acfg);
    if (st != MNEMO_OK) return st;
    size_t *off = mni_alloc(mni_mul(L + 1, sizeof(size_t)));
    if (!off) {
        mni_free(acfg);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for the session");
    }
    size_t scratch = 0;
    off[0] = 0;
    for (size_t l = 0; l < L; l++) {
        off[l + 1] = mni_add(off[l], mni_align64(m->attn->state_bytes(&acfg[l])));
        size_t k = m->attn->step_scratch_bytes(&acfg[l], max_chunk);
        scratch = k > scratch ? k : scratch;
    }
    struct mnemo_session *s = mni_alloc(sizeof(*s));
    if (!s) {
        mni_free(acfg);
        mni_free(off);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for the session");
    }
    memset(s, 0, sizeof(*s));
    s->m = m;
    s->max_chunk = max_chunk;
    s->acfg = acfg;
    s->state_off = off;
    s->state = mni_alloc(off[L]);
    s->step_scratch = mni_alloc(scratch);
    struct mni_carver count = {NULL, 0};
    carve_session(s, &count, N, C, Vp);
    s->slab = mni_alloc(mni_mul(count.used, sizeof(float)));
    if (!s->state || !s->step_scratch || !s->slab) {
        size_t state_bytes = off[L]; // read before the free
        mnemo_session_free(s);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for the session state (%zu bytes)",
                       state_bytes);
    }
    struct mni_carver c = {s->slab, 0};
    carve_session(s, &c, N, C, Vp);
    MNEMO_ASSERT(c.used == count.used);
    mnemo_session_reset(s);
    *out = s;
    return MNEMO_OK;
}

void mnemo_session_free(struct mnemo_session *s)
{
    if (!s) return;
    mni_free(s->state);
    mni_free(s->acfg);
    mni_free(s->state_off);
    mni_free(s->step_scratch);
    mni_free(s->slab);
    mni_free(s);
}

void mnemo_session_reset(struct mnemo_session *s)
{
    for (int l = 0; l < s->m->cfg.n_layer; l++)
        s->m->attn->state_init(&s->acfg[l], s->state + s->state_off[l]);
    s->pos = 0;
}

struct step_ctx {
    struct mnemo_session *s;
    int n;
};

static enum mnemo_status step_attn(void *vctx, struct mni_layer_acts *a, int l)
{
    struct step_ctx *c = vctx;
    struct mnemo_session *s = c->s;
    struct mnemo_model *m = s->m;
    float *kp[MNEMO_ATTN_MAX_PARAMS];
    mni_model_kind_params(m, l, kp, 0);
    struct mnemo_attn_step st = {c->n, l, s->state + s->state_off[l], (const float *const *)kp,
                                 a->qkv, a->atty, s->step_scratch};
    return m->attn->step(&s->acfg[l], &st);
}

enum mnemo_status mnemo_session_feed(struct mnemo_session *s, const uint16_t *tok, int n,
                                     const float **logits)
{
    struct mnemo_model *m = s->m;
    if (n < 1 || n > s->max_chunk)
        return mni_err(MNEMO_ERR_ARG, "feed of %d tokens: must be in [1, %d]", n, s->max_chunk);
    for (int i = 0; i < n; i++)
        if (tok[i] >= m->cfg.vocab)
            return mni_err(MNEMO_ERR_ARG, "token id %u is out of range [0, %d)", tok[i], m->cfg.vocab);
    if (m->cfg.pos == MNEMO_POS_LEARNED && s->pos + n > m->cfg.n_ctx)
        return mni_err(MNEMO_ERR_FULL, "learned positions end at n_ctx = %d", m->cfg.n_ctx);
    for (int i = 0; i < n; i++) s->positions[i] = s->pos + i;
    const size_t N = (size_t)n;
    float *res = s->res_a, *next = s->res_b;
    mni_embed(m, res, tok, s->positions, N);
    struct step_ctx ctx = {s, n};
    for (int l = 0; l < m->cfg.n_layer; l++) {
        s->a.res = res;
        enum mnemo_status st = mni_layer_forward(m, l, &s->a, next, N, step_attn, &ctx);
        if (st != MNEMO_OK) {
            /* layers before l took the tokens, this one did not: the session is inconsistent and
             * starts over (say so: the caller's history is gone, not kept as on other FULLs) */
            if (l > 0) {
                mnemo_session_reset(s);
                return mni_err(st, "%s (layer %d; the layers before it had taken the tokens, so "
                               "the session was reset to empty)", mnemo_last_error(), l);
            }
            return st;
        }
        float *t = res;
        res = next;
        next = t;
    }
    mni_head_forward(m, s->logits, s->lnf, NULL, NULL, res, N);
    s->pos += n;
    *logits = s->logits;
    return MNEMO_OK;
}

int mnemo_session_pos(const struct mnemo_session *s) { return s->pos; }

size_t mnemo_session_live_bytes(const struct mnemo_session *s)
{
    size_t b = 0;
    for (int l = 0; l < s->m->cfg.n_layer; l++)
        b += s->m->attn->state_live_bytes(&s->acfg[l], s->state + s->state_off[l]);
    return b;
}

size_t mnemo_session_state_bytes(const struct mnemo_session *s)
{
    return s->state_off[s->m->cfg.n_layer];
}

int mnemo_session_bounded(const struct mnemo_session *s) { return all_bounded(s->m, s->acfg); }
