/*
 * model.c -- the decoder-only, pre-norm transformer: parameter layout, initialisation, the
 * forward pass over whole windows, and its backward. Attention goes through the attention-kind
 * interface (mnemo_attn.h); everything else is kern/ kernels.
 *
 *   h0 = wte[x] (+ wpe[t] when positions are learned)
 *   h_{l+1} = m_l + FC_proj(gelu(FC(LN2(m_l)))),  m_l = h_l + W_O attn(W_qkv LN1(h_l))
 *   logits = LNf(h_L) wte^T   (tied embedding), loss = mean cross-entropy over the real vocab
 *
 * Memory: parameters/gradients are single slabs; activations one slab sized for the largest
 * (B, T) seen, allocated once and reused (docs/internals/model.md).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "attn/registry.h"
#include "kern/kern.h"
#include "mni.h"
#include "model.h"

void mnemo_model_config_default(struct mnemo_model_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->n_layer = 4;
    cfg->d_model = 256;
    cfg->n_head = 4;
    cfg->n_ctx = 256;
    cfg->vocab = 257;
    cfg->vocab_padded = 0;
    cfg->pos = MNEMO_POS_ROPE;
    cfg->rope_theta = 10000.0f;
    cfg->attn_kind = MNEMO_ATTN_KIND_DENSE;
}

static int padded_vocab(const struct mnemo_model_config *cfg)
{
    return cfg->vocab_padded > 0 ? cfg->vocab_padded : (cfg->vocab + 15) / 16 * 16;
}

enum mnemo_status mnemo_model_config_check(const struct mnemo_model_config *cfg)
{
    if (cfg->n_layer < 1 || cfg->n_layer > 1024)
        return mni_err(MNEMO_ERR_ARG, "n_layer = %d: must be in [1, 1024]", cfg->n_layer);
    if (cfg->d_model < 1 || cfg->d_model > 65536)
        return mni_err(MNEMO_ERR_ARG, "d_model = %d: must be in [1, 65536]", cfg->d_model);
    if (cfg->n_head < 1 || cfg->d_model % cfg->n_head != 0)
        return mni_err(MNEMO_ERR_ARG, "n_head = %d: must be >= 1 and divide d_model = %d",
                       cfg->n_head, cfg->d_model);
    if (cfg->n_ctx < 1 || cfg->n_ctx > (1 << 22))
        return mni_err(MNEMO_ERR_ARG, "n_ctx = %d: must be in [1, 4194304]", cfg->n_ctx);
    if (cfg->vocab < 2 || cfg->vocab > 65536)
        return mni_err(MNEMO_ERR_ARG, "vocab = %d: must be in [2, 65536]", cfg->vocab);
    if (cfg->vocab_padded != 0 && (cfg->vocab_padded < cfg->vocab || cfg->vocab_padded > 65536))
        return mni_err(MNEMO_ERR_ARG, "vocab_padded = %d: must be 0 (auto) or in [vocab, 65536]",
                       cfg->vocab_padded);
    if (cfg->pos < 0 || cfg->pos >= MNEMO_POS_COUNT)
        return mni_err(MNEMO_ERR_ARG, "pos = %d: unknown position encoding", cfg->pos);
    if (!(cfg->rope_theta > 0.0f) || !isfinite(cfg->rope_theta))
        return mni_err(MNEMO_ERR_ARG, "rope_theta = %g: must be a positive number",
                       (double)cfg->rope_theta);
    if (!mnemo_attn_ops_get(cfg->attn_kind))
        return mni_err(MNEMO_ERR_ARG, "attn_kind = %d: unknown attention kind", cfg->attn_kind);
    /* every layer's options (a per-layer list is checked whole by each layer's parse) */
    struct mnemo_attn_cfg a;
    for (int l = 0; l < cfg->n_layer; l++) {
        enum mnemo_status st = mnemo_attn_cfg_make(&a, cfg, cfg->attn_opts, l);
        if (st != MNEMO_OK) return st;
    }
    return MNEMO_OK;
}

/* ---- parameters ---------------------------------------------------------------------------- */

/* The parameter table: the transformer's entries, then the kind's tensors (the same shapes in
 * every layer: the table of layer 0 is taken, and every layer's is checked against it). Their
 * learning-rate multipliers may follow training options, so this runs again when options
 * change (mnemo_model_set_attn_opts), with the same shapes. */
static enum mnemo_status layout_params(struct mnemo_model *m)
{
    const size_t C = (size_t)m->cfg.d_model, Vp = (size_t)padded_vocab(&m->cfg);
    const size_t Tpos = m->cfg.pos == MNEMO_POS_LEARNED ? (size_t)m->cfg.n_ctx : 0;
    const size_t L = (size_t)m->cfg.n_layer;
    size_t off = 0;
#define X(id, nm, pl, dd0, dd1)                                                                \
    {                                                                                          \
        struct mni_param_info *pi = &m->pinfo[MNI_P_##id];                                     \
        memset(pi, 0, sizeof(*pi));                                                            \
        snprintf(pi->name, sizeof(pi->name), "%s", nm);                                        \
        pi->per_layer = pl;                                                                    \
        pi->d0 = (dd0);                                                                        \
        pi->d1 = (dd1);                                                                        \
        pi->lr_mult = 1.0f;                                                                    \
        pi->decay = pi->d1 != 0; /* matrices: embeddings and linear weights */                 \
        pi->trained = 1;                                                                       \
    }
    MNI_PARAM_TABLE(X)
#undef X
    struct mnemo_attn_param kp[MNEMO_ATTN_MAX_PARAMS], kl[MNEMO_ATTN_MAX_PARAMS];
    const int nk = m->attn->params ? m->attn->params(&m->lcfg[0], kp) : 0;
    MNEMO_ASSERT(nk >= 0 && nk <= MNEMO_ATTN_MAX_PARAMS);
    for (int l = 1; l < (int)L && nk; l++) {
        m->attn->params(&m->lcfg[l], kl);
        for (int i = 0; i < nk; i++)
            if (kl[i].shape[0] != kp[i].shape[0] || (kp[i].ndim == 2 && kl[i].shape[1] != kp[i].shape[1]))
                return mni_err(MNEMO_ERR_ARG, "%s attention: tensor %s has another shape in layer %d "
                               "(the options of every layer must give the same shapes)",
                               m->attn->name, kp[i].name, l);
    }
    for (int i = 0; i < nk; i++) {
        struct mni_param_info *pi = &m->pinfo[MNI_P_COUNT + i];
        memset(pi, 0, sizeof(*pi));
        snprintf(pi->name, sizeof(pi->name), "blocks.%%d.attn.%s", kp[i].name);
        pi->per_layer = 1;
        pi->d0 = kp[i].shape[0];
        pi->d1 = kp[i].ndim == 2 ? kp[i].shape[1] : 0;
        pi->lr_mult = kp[i].lr_mult;
        pi->decay = kp[i].decay;
        pi->trained = kp[i].trained;
        pi->init = kp[i].init;
        pi->init_value = kp[i].init_value;
    }
    m->n_kparams = nk;
    m->n_pinfo = MNI_P_COUNT + nk;
    for (int id = 0; id < m->n_pinfo; id++) {
        struct mni_param_info *pi = &m->pinfo[id];
        pi->numel = pi->d0 * (pi->d1 ? pi->d1 : 1);
        pi->offset = off;
        off += pi->numel * (pi->per_layer ? L : 1);
        off = (off + 15) & ~(size_t)15; /* each tensor 64-byte aligned */
    }
    m->n_params = off;
    return MNEMO_OK;
}

void mni_model_kind_params(const struct mnemo_model *m, int layer, float **p, int grads)
{
    for (int i = 0; i < m->n_kparams; i++) {
        const struct mni_param_info *pi = &m->pinfo[MNI_P_COUNT + i];
        p[i] = (grads ? m->grads : m->params) + pi->offset + (size_t)layer * pi->numel;
    }
}

/* Sets the model's options to opts: every layer's cfg and the canonical list. Nothing changes
 * on failure. */
static enum mnemo_status set_opts(struct mnemo_model *m, const struct mnemo_model_config *cfg,
                                  const char *opts)
{
    const size_t L = (size_t)cfg->n_layer;
    struct mnemo_attn_cfg *lcfg = mni_alloc(mni_mul(L, sizeof(*lcfg)));
    if (!lcfg) return mni_err(MNEMO_ERR_NOMEM, "out of memory for the attention options");
    enum mnemo_status st = mni_attn_cfgs_make(lcfg, cfg, opts);
    const unsigned all = 1u << MNEMO_ATTN_SCOPE_MODEL | 1u << MNEMO_ATTN_SCOPE_TRAIN;
    int n = st == MNEMO_OK ? mnemo_attn_opts_format(lcfg, (int)L, all, 1, NULL, 0) : 0;
    n += st == MNEMO_OK ? 1 + mnemo_attn_opts_format(lcfg, (int)L, 1u << MNEMO_ATTN_SCOPE_SESSION,
                                                     0, NULL, 0) : 0;
    char *canon = st == MNEMO_OK ? mni_malloc((size_t)n + 2) : NULL;
    if (st == MNEMO_OK && !canon) st = mni_err(MNEMO_ERR_NOMEM, "out of memory for the options");
    if (st != MNEMO_OK) {
        mni_free(lcfg);
        return st;
    }
    int k = mnemo_attn_opts_format(lcfg, (int)L, all, 1, canon, (size_t)n + 2);
    if (k > 0) canon[k++] = ',';
    k += mnemo_attn_opts_format(lcfg, (int)L, 1u << MNEMO_ATTN_SCOPE_SESSION, 0, canon + k,
                                (size_t)n + 2 - (size_t)k);
    if (k > 0 && canon[k - 1] == ',') canon[k - 1] = 0;
    mni_free(m->lcfg);
    mni_free(m->attn_opts);
    m->lcfg = lcfg;
    m->attn_opts = canon;
    m->cfg = *cfg;
    m->cfg.attn_opts = canon;
    return MNEMO_OK;
}

float *mni_model_param(const struct mnemo_model *m, int id, int layer)
{
    const struct mni_param_info *pi = &m->pinfo[id];
    return m->params + pi->offset + (pi->per_layer ? (size_t)layer * pi->numel : 0);
}

static float *grad_of(const struct mnemo_model *m, int id, int layer)
{
    const struct mni_param_info *pi = &m->pinfo[id];
    return m->grads + pi->offset + (pi->per_layer ? (size_t)layer * pi->numel : 0);
}

enum mnemo_status mni_model_plan(struct mnemo_model **out, const struct mnemo_model_config *cfg)
{
    *out = NULL;
    enum mnemo_status st = mnemo_model_config_check(cfg);
    if (st != MNEMO_OK) return st;
    struct mnemo_model *m = mni_alloc(sizeof(*m));
    if (!m) return mni_err(MNEMO_ERR_NOMEM, "out of memory creating the model");
    m->use_first = -1;
    struct mnemo_model_config c = *cfg;
    c.vocab_padded = padded_vocab(cfg);
    m->attn = mnemo_attn_ops_get(cfg->attn_kind);
    if ((st = set_opts(m, &c, cfg->attn_opts)) != MNEMO_OK ||
        (st = layout_params(m)) != MNEMO_OK) {
        mnemo_model_free(m);
        return st;
    }
    *out = m;
    return MNEMO_OK;
}

enum mnemo_status mni_model_alloc_params(struct mnemo_model *m)
{
    m->params = mni_alloc(mni_mul(m->n_params, sizeof(float)));
    if (!m->params) return mni_err(MNEMO_ERR_NOMEM, "out of memory for %zu parameters", m->n_params);
    return MNEMO_OK;
}

enum mnemo_status mnemo_model_create(struct mnemo_model **out, const struct mnemo_model_config *cfg)
{
    enum mnemo_status st = mni_model_plan(out, cfg);
    if (st == MNEMO_OK && (st = mni_model_alloc_params(*out)) != MNEMO_OK) {
        mnemo_model_free(*out);
        *out = NULL;
    }
    return st;
}

/* Frees the activations and forgets every pointer into them, so that a model whose forward
 * could not allocate holds no dangling pointers (mnemo_model_logits gives NULL, backward
 * refuses) and stays usable: the next forward allocates afresh. */
static void free_acts(struct mnemo_model *m)
{
    mni_free(m->act_slab);
    mni_free(m->layers);
    mni_free(m->attn_scratch);
    m->act_slab = NULL;
    m->layers = NULL;
    m->attn_scratch = NULL;
    m->act_B = m->act_T = 0;
    m->res_final = m->lnf = m->lnf_mean = m->lnf_rstd = m->logits = m->losses = NULL;
    m->dres = m->dtmp = m->dqkv = m->datty = m->dfch = NULL;
    m->inputs = m->targets = NULL;
    m->have_targets = 0;
}

/* Replaces the config and options of a model by cfg and opts, which change no parameter
 * shape (n_ctx, mutable options, training and session options), once they pass the checks; the
 * activations are freed (their sizes may follow). */
static enum mnemo_status reshape(struct mnemo_model *m, const struct mnemo_model_config *cfg,
                                 const char *opts)
{
    struct mnemo_model_config c = *cfg;
    c.attn_opts = opts;
    enum mnemo_status st = mnemo_model_config_check(&c);
    if (st != MNEMO_OK) return st;
    struct mni_param_info old[MNI_P_MAX];
    memcpy(old, m->pinfo, sizeof(old));
    const int old_n = m->n_pinfo;
    if ((st = set_opts(m, &c, opts)) != MNEMO_OK) return st;
    st = layout_params(m);
    MNEMO_ASSERT(st == MNEMO_OK && m->n_pinfo == old_n); /* shapes checked by the callers */
    for (int i = 0; i < old_n; i++) MNEMO_ASSERT(m->pinfo[i].offset == old[i].offset);
    free_acts(m);
    mnemo_model_set_lanes(m, 0); /* their size may follow */
    return MNEMO_OK;
}

enum mnemo_status mnemo_model_set_n_ctx(struct mnemo_model *m, int n_ctx)
{
    if (m->cfg.pos != MNEMO_POS_ROPE)
        return mni_err(MNEMO_ERR_ARG, "n_ctx: a model with learned positions has a table of "
                       "n_ctx = %d rows; it cannot change", m->cfg.n_ctx);
    /* an option whose 0 means "n_ctx" keeps its meaning: it becomes the old n_ctx */
    char *opts = mni_malloc(strlen(m->attn_opts) + 1);
    if (!opts) return mni_err(MNEMO_ERR_NOMEM, "out of memory");
    memcpy(opts, m->attn_opts, strlen(m->attn_opts) + 1);
    for (int i = 0; i < m->attn->n_opts; i++) {
        const struct mnemo_attn_opt *o = &m->attn->opts[i];
        if (!(o->flags & MNEMO_ATTN_OPT_CTX_ZERO) || m->lcfg[0].opt[i] != 0) continue;
        char over[96];
        snprintf(over, sizeof(over), "%s=%d", o->key, m->cfg.n_ctx);
        char *merged = mni_malloc(strlen(opts) + sizeof(over) + 2);
        if (!merged || mni_attn_opts_merge(merged, strlen(opts) + sizeof(over) + 2, opts, over)) {
            mni_free(merged);
            mni_free(opts);
            return mni_err(MNEMO_ERR_NOMEM, "out of memory");
        }
        mni_free(opts);
        opts = merged;
    }
    struct mnemo_model_config cfg = m->cfg;
    cfg.n_ctx = n_ctx;
    enum mnemo_status st = reshape(m, &cfg, opts);
    mni_free(opts);
    return st;
}

enum mnemo_status mnemo_model_set_attn_opts(struct mnemo_model *m, const char *opts)
{
    const size_t n = strlen(m->attn_opts) + (opts ? strlen(opts) : 0) + 2;
    char *merged = mni_malloc(n);
    if (!merged) return mni_err(MNEMO_ERR_NOMEM, "out of memory");
    if (mni_attn_opts_merge(merged, n, m->attn_opts, opts)) {
        mni_free(merged);
        return MNEMO_ERR_ARG;
    }
    /* the new values, checked, before anything changes */
    const size_t L = (size_t)m->cfg.n_layer;
    struct mnemo_attn_cfg *nc = mni_alloc(mni_mul(L, sizeof(*nc)));
    enum mnemo_status st = nc ? mni_attn_cfgs_make(nc, &m->cfg, merged)
                              : mni_err(MNEMO_ERR_NOMEM, "out of memory");
    for (int i = 0; st == MNEMO_OK && i < m->attn->n_opts; i++) {
        const struct mnemo_attn_opt *o = &m->attn->opts[i];
        if (o->scope != MNEMO_ATTN_SCOPE_MODEL || (o->flags & MNEMO_ATTN_OPT_MUTABLE)) continue;
        for (size_t l = 0; l < L; l++)
            if (nc[l].opt[i] != m->lcfg[l].opt[i]) {
                char was[128];
                mni_attn_opt_value(m->lcfg, (int)L, i, was, sizeof(was));
                st = mni_err(MNEMO_ERR_ARG, "%s attention: option %s is fixed by the model's "
                             "parameters (it has %s)", m->attn->name, o->key, was);
                break;
            }
    }
    if (st == MNEMO_OK) { /* the tensors keep their shapes */
        struct mnemo_attn_param a[MNEMO_ATTN_MAX_PARAMS];
        const int nk = m->attn->params ? m->attn->params(&nc[0], a) : 0;
        for (int i = 0; i < nk && st == MNEMO_OK; i++)
            if (nk != m->n_kparams || a[i].shape[0] != m->pinfo[MNI_P_COUNT + i].d0)
                st = mni_err(MNEMO_ERR_ARG, "%s attention: these options change the shape of "
                             "tensor %s", m->attn->name, a[i].name);
    }
    if (st == MNEMO_OK) st = reshape(m, &m->cfg, merged);
    mni_free(nc);
    mni_free(merged);
    return st;
}

void mnemo_model_free(struct mnemo_model *m)
{
    if (!m) return;
    free_acts(m);
    mnemo_model_set_lanes(m, 0);
    mni_free(m->lcfg);
    mni_free(m->attn_opts);
    mni_free(m->params);
    mni_free(m->grads);
    mni_free(m);
}

const struct mnemo_model_config *mnemo_model_get_config(const struct mnemo_model *m)
{
    return &m->cfg;
}

size_t mnemo_model_n_params(const struct mnemo_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->n_pinfo; i++)
        n += m->pinfo[i].numel * (m->pinfo[i].per_layer ? (size_t)m->cfg.n_layer : 1);
    return n;
}

void mnemo_model_init(struct mnemo_model *m, uint64_t seed)
{
    struct mni_rng rng;
    mni_rng_seed(&rng, seed);
    const float std = 0.02f, std_res = 0.02f / sqrtf(2.0f * (float)m->cfg.n_layer);
    memset(m->params, 0, m->n_params * sizeof(float));
    /* Fill in table order so the stream of random numbers depends only on the config. */
    for (int id = 0; id < MNI_P_COUNT; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        size_t n = pi->numel * (pi->per_layer ? (size_t)m->cfg.n_layer : 1);
        float *p = m->params + pi->offset;
        if (id == MNI_P_LN1W || id == MNI_P_LN2W || id == MNI_P_LNFW) {
            for (size_t i = 0; i < n; i++) p[i] = 1.0f;
        } else if (pi->d1 != 0) { /* matrices */
            float s = (id == MNI_P_PROJW || id == MNI_P_FCPW) ? std_res : std;
            for (size_t i = 0; i < n; i++) p[i] = s * mni_rng_normal(&rng);
        }
    }
    /* Padded vocabulary rows never occur as input or target: start them at zero. */
    size_t C = (size_t)m->cfg.d_model;
    memset(m->params + m->pinfo[MNI_P_WTE].offset + (size_t)m->cfg.vocab * C, 0,
           (size_t)(m->cfg.vocab_padded - m->cfg.vocab) * C * sizeof(float));
    /* The kind's tensors, as its table says, from a generator of their own (so that adding a
     * kind tensor leaves the transformer's initialisation as it was). */
    struct mni_rng kr;
    mni_rng_seed(&kr, seed ^ 0x5bd1e995u);
    for (int l = 0; l < m->cfg.n_layer; l++) {
        float *kp[MNEMO_ATTN_MAX_PARAMS];
        mni_model_kind_params(m, l, kp, 0);
        int custom = 0;
        for (int i = 0; i < m->n_kparams; i++) {
            const struct mni_param_info *pi = &m->pinfo[MNI_P_COUNT + i];
            for (size_t j = 0; j < pi->numel; j++)
                kp[i][j] = pi->init == MNEMO_ATTN_INIT_CONST    ? pi->init_value
                           : pi->init == MNEMO_ATTN_INIT_NORMAL ? pi->init_value * mni_rng_normal(&kr)
                                                                : 0.0f;
            custom |= pi->init == MNEMO_ATTN_INIT_KIND;
        }
        if (custom && m->attn->init_params)
            m->attn->init_params(&m->lcfg[l], l, seed ^ ((uint64_t)l * 0x9E3779B97F4A7C15ull), kp);
    }
}

enum mnemo_status mni_model_alloc_grads(struct mnemo_model *m)
{
    if (m->grads) return MNEMO_OK;
    m->grads = mni_alloc(mni_mul(m->n_params, sizeof(float)));
    if (!m->grads) return mni_err(MNEMO_ERR_NOMEM, "out of memory for gradients");
    return MNEMO_OK;
}

void mnemo_model_zero_grad(struct mnemo_model *m)
{
    if (m->grads) memset(m->grads, 0, m->n_params * sizeof(float));
}

/* ---- activations ---------------------------------------------------------------------------- */

/* Points every activation buffer into c's slab (or, with c->base == NULL, only counts). */
static void carve_acts(struct mnemo_model *m, struct mni_carver *c, size_t N, size_t attn_act)
{
    const size_t L = (size_t)m->cfg.n_layer, C = (size_t)m->cfg.d_model;
    const size_t Vp = (size_t)m->cfg.vocab_padded;
    struct mni_layer_acts unused; // the counting pass runs before m->layers exists
    for (size_t l = 0; l < L; l++) {
        struct mni_layer_acts *a = c->base ? &m->layers[l] : &unused;
        a->res = mni_carve(c, N * C);
        a->ln1 = mni_carve(c, N * C);
        a->ln1_mean = mni_carve(c, N);
        a->ln1_rstd = mni_carve(c, N);
        a->qkv = mni_carve(c, N * 3 * C);
        a->atty = mni_carve(c, N * C);
        a->attn_act = mni_carve(c, attn_act);
        a->res_mid = mni_carve(c, N * C);
        a->ln2 = mni_carve(c, N * C);
        a->ln2_mean = mni_carve(c, N);
        a->ln2_rstd = mni_carve(c, N);
        a->fch = mni_carve(c, N * 4 * C);
        a->fch_gelu = mni_carve(c, N * 4 * C);
    }
    m->res_final = mni_carve(c, N * C);
    m->lnf = mni_carve(c, N * C);
    m->lnf_mean = mni_carve(c, N);
    m->lnf_rstd = mni_carve(c, N);
    m->logits = mni_carve(c, N * Vp);
    m->losses = mni_carve(c, N);
    m->dres = mni_carve(c, N * C);
    m->dtmp = mni_carve(c, N * C); /* also holds the N int positions during forward */
    m->dqkv = mni_carve(c, N * 3 * C);
    m->datty = mni_carve(c, N * C);
    m->dfch = mni_carve(c, N * 4 * C);
    m->inputs = (uint16_t *)mni_carve(c, (N + 1) / 2);
    m->targets = (uint16_t *)mni_carve(c, (N + 1) / 2);
}

size_t mni_model_attn_act_bytes(const struct mnemo_model *m, int B, int T)
{
    size_t b = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        size_t k = m->attn->act_bytes(&m->lcfg[l], B, T);
        b = k > b ? k : b;
    }
    return b;
}

static size_t attn_scratch_bytes(const struct mnemo_model *m, int B, int T)
{
    size_t b = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) {
        size_t k = m->attn->scratch_bytes(&m->lcfg[l], B, T);
        b = k > b ? k : b;
    }
    return b;
}

void mni_model_use_ref(struct mnemo_model *m, int on)
{
    free_acts(m);
    m->attn = on ? mnemo_attn_ops_get_ref(m->cfg.attn_kind) : mnemo_attn_ops_get(m->cfg.attn_kind);
}

static enum mnemo_status ensure_acts(struct mnemo_model *m, int B, int T)
{
    /* Every buffer is sized by N = B*T, so a smaller window reuses the slab as long as the
     * kind's own byte counts also fit. */
    if (m->act_slab && (size_t)B * T <= (size_t)m->act_B * m->act_T &&
        mni_model_attn_act_bytes(m, B, T) <= mni_model_attn_act_bytes(m, m->act_B, m->act_T) &&
        attn_scratch_bytes(m, B, T) <= attn_scratch_bytes(m, m->act_B, m->act_T))
        return MNEMO_OK;
    free_acts(m);
    const size_t L = (size_t)m->cfg.n_layer, N = (size_t)B * (size_t)T;
    const size_t attn_act = mni_align64(mni_model_attn_act_bytes(m, B, T)) / sizeof(float);
    struct mni_carver count = {NULL, 0};
    carve_acts(m, &count, N, attn_act);
    m->layers = mni_alloc(mni_mul(L, sizeof(*m->layers)));
    m->act_slab = m->layers ? mni_alloc(mni_mul(count.used, sizeof(float))) : NULL;
    m->attn_scratch = m->act_slab ? mni_alloc(attn_scratch_bytes(m, B, T)) : NULL;
    if (!m->attn_scratch) {
        free_acts(m);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for activations (B=%d, T=%d: %zu MiB)",
                       B, T, count.used / (1 << 18));
    }
    struct mni_carver c = {m->act_slab, 0};
    carve_acts(m, &c, N, attn_act);
    MNEMO_ASSERT(c.used == count.used);
    m->act_B = B;
    m->act_T = T;
    return MNEMO_OK;
}

/* ---- forward -------------------------------------------------------------------------------- */

void mni_embed(const struct mnemo_model *m, float *out, const uint16_t *tok, const int *pos,
               size_t N)
{
    const size_t C = (size_t)m->cfg.d_model;
    const float *wte = mni_model_param(m, MNI_P_WTE, 0); /* (Vp,C) */
    const float *wpe = m->cfg.pos == MNEMO_POS_LEARNED ? mni_model_param(m, MNI_P_WPE, 0) : NULL;
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        const float *e = wte + (size_t)tok[n] * C;
        float *o = out + n * C;
        if (wpe) {
            const float *pe = wpe + (size_t)pos[n] * C;
            for (size_t c = 0; c < C; c++) o[c] = e[c] + pe[c];
        } else {
            memcpy(o, e, C * sizeof(float));
        }
    }
}

enum mnemo_status mni_layer_forward(const struct mnemo_model *m, int l, struct mni_layer_acts *a,
                                    float *res_out, size_t N, mni_attn_call_fn fn, void *ctx)
{
    const size_t C = (size_t)m->cfg.d_model;
    mni_layernorm_fwd(a->ln1, a->ln1_mean, a->ln1_rstd, a->res, mni_model_param(m, MNI_P_LN1W, l),
                      mni_model_param(m, MNI_P_LN1B, l), N, C);
    mni_matmul_fwd(a->qkv, a->ln1, mni_model_param(m, MNI_P_QKVW, l),
                   mni_model_param(m, MNI_P_QKVB, l), N, C, 3 * C);
    enum mnemo_status st = fn(ctx, a, l);
    if (st != MNEMO_OK) return st;
    /* res_mid = res + atty W_O^T + b_O */
    mni_matmul_fwd_res(a->res_mid, a->atty, mni_model_param(m, MNI_P_PROJW, l),
                       mni_model_param(m, MNI_P_PROJB, l), a->res, N, C, C);
    mni_layernorm_fwd(a->ln2, a->ln2_mean, a->ln2_rstd, a->res_mid,
                      mni_model_param(m, MNI_P_LN2W, l), mni_model_param(m, MNI_P_LN2B, l), N, C);
    mni_matmul_fwd_gelu(a->fch, a->fch_gelu, a->ln2, mni_model_param(m, MNI_P_FCW, l),
                        mni_model_param(m, MNI_P_FCB, l), N, C, 4 * C);
    mni_matmul_fwd_res(res_out, a->fch_gelu, mni_model_param(m, MNI_P_FCPW, l),
                       mni_model_param(m, MNI_P_FCPB, l), a->res_mid, N, 4 * C, C);
    return MNEMO_OK;
}

void mni_head_forward(const struct mnemo_model *m, float *logits, float *lnf, float *lnf_mean,
                      float *lnf_rstd, const float *res, size_t N)
{
    const size_t C = (size_t)m->cfg.d_model, Vp = (size_t)m->cfg.vocab_padded;
    mni_layernorm_fwd(lnf, lnf_mean, lnf_rstd, res, mni_model_param(m, MNI_P_LNFW, 0),
                      mni_model_param(m, MNI_P_LNFB, 0), N, C);
    mni_matmul_fwd(logits, lnf, mni_model_param(m, MNI_P_WTE, 0), NULL, N, C, Vp);
}

/* ---- lanes ------------------------------------------------------------------------------------ */

static size_t layer_carry_bytes(const struct mnemo_model *m, int l)
{
    return m->attn->carry_bytes ? m->attn->carry_bytes(&m->lcfg[l]) : 0;
}

size_t mnemo_model_carry_bytes(const struct mnemo_model *m)
{
    size_t n = 0;
    for (int l = 0; l < m->cfg.n_layer; l++) n += layer_carry_bytes(m, l);
    return n;
}

enum mnemo_status mnemo_model_set_lanes(struct mnemo_model *m, int n_lanes)
{
    const size_t cb = n_lanes > 0 ? mnemo_model_carry_bytes(m) : 0;
    if (n_lanes < 0 || (n_lanes > 0 && cb == 0))
        return mni_err(MNEMO_ERR_ARG, "lanes: %d lanes for %s attention, which carries no state "
                       "from one window to the next (%s)", n_lanes, m->attn->name,
                       n_lanes < 0 ? "need >= 0" : "0 is the only choice");
    mni_free(m->carry);
    mni_free(m->carry_next);
    m->carry = m->carry_next = NULL;
    m->n_lanes = 0;
    m->use_first = -1;
    m->lane_B = m->lane_pending = 0;
    if (n_lanes == 0) return MNEMO_OK;
    const size_t n = mni_mul((size_t)n_lanes, cb);
    m->carry = mni_alloc(n);
    m->carry_next = mni_alloc(n);
    if (!m->carry || !m->carry_next) {
        mnemo_model_set_lanes(m, 0);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for %d lanes of %zu bytes", n_lanes, cb);
    }
    memset(m->carry, 0, n); /* all zero bytes: a fresh lane */
    m->n_lanes = n_lanes;
    return MNEMO_OK;
}

/* Layer l's states of lane `first` onwards, in buf (carry or carry_next). */
static char *lane_at(const struct mnemo_model *m, char *buf, int l, int first)
{
    size_t off = 0;
    for (int i = 0; i < l; i++) off += layer_carry_bytes(m, i);
    return buf + off * (size_t)m->n_lanes + (size_t)first * layer_carry_bytes(m, l);
}

/* The last lane forward's end states become the lanes' states. */
static void lanes_commit(struct mnemo_model *m)
{
    if (!m->lane_pending) return;
    for (int l = 0; l < m->cfg.n_layer; l++)
        memcpy(lane_at(m, m->carry, l, m->lane_first), lane_at(m, m->carry_next, l, m->lane_first),
               (size_t)m->lane_B * layer_carry_bytes(m, l));
    m->lane_pending = 0;
}

enum mnemo_status mnemo_model_use_lanes(struct mnemo_model *m, int first, int fresh)
{
    if (first < 0 || first >= m->n_lanes)
        return mni_err(MNEMO_ERR_ARG, "lanes: lane %d of %d", first, m->n_lanes);
    m->use_first = first;
    m->use_fresh = fresh != 0;
    return MNEMO_OK;
}

void *mni_model_lanes(struct mnemo_model *m, size_t *bytes)
{
    lanes_commit(m);
    *bytes = mni_mul((size_t)m->n_lanes, mnemo_model_carry_bytes(m));
    return m->carry;
}

/* The io's carry of layer l for the last forward (NULL, NULL: fresh windows). */
static void lanes_io(const struct mnemo_model *m, int l, struct mnemo_attn_io *io)
{
    if (!m->lane_B) return;
    io->carry = lane_at(m, m->carry, l, m->lane_first);
    io->carry_out = lane_at(m, m->carry_next, l, m->lane_first);
}

struct train_attn_ctx {
    struct mnemo_model *m;
    int B, T;
};

static enum mnemo_status train_attn(void *vctx, struct mni_layer_acts *a, int l)
{
    struct train_attn_ctx *c = vctx;
    struct mnemo_model *m = c->m;
    struct mnemo_attn_io io = {0};
    float *kp[MNEMO_ATTN_MAX_PARAMS];
    mni_model_kind_params(m, l, kp, 0);
    io.B = c->B;
    io.T = c->T;
    io.layer = l;
    io.training = m->training;
    io.seed = m->seed;
    io.qkv = a->qkv;
    io.out = a->atty;
    io.params = (const float *const *)kp;
    io.act = a->attn_act;
    io.scratch = m->attn_scratch;
    lanes_io(m, l, &io);
    enum mnemo_status st = m->attn->forward(&m->lcfg[l], &io);
    m->aux_sum += io.aux_loss;
    return st;
}

void mnemo_model_set_mode(struct mnemo_model *m, int training, uint64_t seed)
{
    m->training = training != 0;
    m->seed = seed;
}

double mnemo_model_aux_loss(const struct mnemo_model *m)
{
    return m->cur_B < 1 ? 0 : m->aux_sum / m->cur_B;
}

static enum mnemo_status check_tokens(const uint16_t *tok, size_t N, int T, int V,
                                      const char *what)
{
    for (size_t i = 0; i < N; i++)
        if (tok[i] >= V)
            return mni_err(MNEMO_ERR_ARG,
                           "%s token id %u at (window %zu, position %zu) is out of range [0, %d)",
                           what, (unsigned)tok[i], i / (size_t)T, i % (size_t)T, V);
    return MNEMO_OK;
}

enum mnemo_status mnemo_model_forward(struct mnemo_model *m, const uint16_t *inputs,
                                      const uint16_t *targets, int B, int T, float *loss)
{
    if (B < 1 || T < 1 || T > m->cfg.n_ctx)
        return mni_err(MNEMO_ERR_ARG, "forward: B = %d, T = %d: need B >= 1 and 1 <= T <= n_ctx = %d",
                       B, T, m->cfg.n_ctx);
    const size_t N = (size_t)B * (size_t)T, C = (size_t)m->cfg.d_model;
    enum mnemo_status st = check_tokens(inputs, N, T, m->cfg.vocab, "input");
    if (st == MNEMO_OK && targets) st = check_tokens(targets, N, T, m->cfg.vocab, "target");
    if (st == MNEMO_OK) st = ensure_acts(m, B, T);
    const int first = m->use_first;
    m->use_first = -1; /* announced for this forward only */
    if (st == MNEMO_OK && first >= 0 && first + B > m->n_lanes)
        st = mni_err(MNEMO_ERR_ARG, "forward: lanes %d..%d of %d", first, first + B - 1,
                     m->n_lanes);
    if (st != MNEMO_OK) return st;
    lanes_commit(m);
    for (int l = 0; first >= 0 && m->use_fresh && l < m->cfg.n_layer; l++)
        memset(lane_at(m, m->carry, l, first), 0, (size_t)B * layer_carry_bytes(m, l));
    m->lane_first = first >= 0 ? first : 0;
    m->lane_B = first >= 0 ? B : 0;
    m->lane_pending = m->lane_B > 0; /* once the forward is through */
    m->cur_B = B;
    m->cur_T = T;
    m->have_targets = targets != NULL;
    memcpy(m->inputs, inputs, N * sizeof(uint16_t));
    if (targets) memcpy(m->targets, targets, N * sizeof(uint16_t));

    /* positions 0..T-1 in every window */
    int pos_stack[1];
    int *pos = pos_stack;
    if (m->cfg.pos == MNEMO_POS_LEARNED) {
        pos = (int *)m->dtmp; /* dtmp (N*C floats) is free during forward */
        for (size_t i = 0; i < N; i++) pos[i] = (int)(i % (size_t)T);
    }
    mni_embed(m, m->layers[0].res, inputs, pos, N);
    m->aux_sum = 0;
    struct train_attn_ctx ctx = {m, B, T};
    for (int l = 0; l < m->cfg.n_layer; l++) {
        float *next = l + 1 < m->cfg.n_layer ? m->layers[l + 1].res : m->res_final;
        st = mni_layer_forward(m, l, &m->layers[l], next, N, train_attn, &ctx);
        if (st != MNEMO_OK) return st;
    }
    mni_head_forward(m, m->logits, m->lnf, m->lnf_mean, m->lnf_rstd, m->res_final, N);
    (void)C;
    if (targets) {
        double sum = mni_xent_fwd_bwd(NULL, m->losses, m->logits, targets, 0.0f, N,
                                      (size_t)m->cfg.vocab, (size_t)m->cfg.vocab_padded);
        float mean = (float)(sum / (double)N);
        if (loss) *loss = mean;
        if (!isfinite(mean)) return mni_err(MNEMO_ERR_NUMERIC, "the loss is not finite (%g)", (double)mean);
    }
    return MNEMO_OK;
}

const float *mnemo_model_logits(const struct mnemo_model *m) { return m->logits; }

/* ---- backward -------------------------------------------------------------------------------- */

enum mnemo_status mnemo_model_backward(struct mnemo_model *m, float grad_scale)
{
    if (!m->act_slab || !m->have_targets)
        return mni_err(MNEMO_ERR_ARG, "backward needs a preceding forward with targets");
    enum mnemo_status st = mni_model_alloc_grads(m);
    if (st != MNEMO_OK) return st;
    const int B = m->cur_B, T = m->cur_T, L = m->cfg.n_layer;
    const size_t N = (size_t)B * (size_t)T, C = (size_t)m->cfg.d_model;
    const size_t V = (size_t)m->cfg.vocab, Vp = (size_t)m->cfg.vocab_padded;

    /* loss = mean_n xent(logits_n): dlogits = (softmax - onehot) / N, written over logits */
    mni_xent_fwd_bwd(m->logits, NULL, m->logits, m->targets, grad_scale / (float)N, N, V, Vp);
    float *dlogits = m->logits;
    /* logits = lnf wte^T: dlnf (N,C) = dlogits wte; dwte += dlogits^T lnf */
    mni_matmul_bwd(m->dtmp, grad_of(m, MNI_P_WTE, 0), NULL, dlogits, m->lnf,
                   mni_model_param(m, MNI_P_WTE, 0), N, C, Vp);
    memset(m->dres, 0, N * C * sizeof(float));
    mni_layernorm_bwd(m->dres, grad_of(m, MNI_P_LNFW, 0), grad_of(m, MNI_P_LNFB, 0), m->dtmp,
                      m->res_final, mni_model_param(m, MNI_P_LNFW, 0), m->lnf_mean, m->lnf_rstd,
                      N, C);
    for (int l = L - 1; l >= 0; l--) {
        struct mni_layer_acts *a = &m->layers[l];
        /* h_{l+1} = res_mid + fch_gelu FCP^T + b: dres flows straight to res_mid as well */
        /* ... and fch_gelu = gelu(fch): dfch comes out of the product already times gelu' */
        mni_matmul_bwd_gelu(m->dfch, grad_of(m, MNI_P_FCPW, l), grad_of(m, MNI_P_FCPB, l),
                            m->dres, a->fch_gelu, mni_model_param(m, MNI_P_FCPW, l), a->fch, N,
                            4 * C, C);
        mni_matmul_bwd(m->dtmp, grad_of(m, MNI_P_FCW, l), grad_of(m, MNI_P_FCB, l), m->dfch,
                       a->ln2, mni_model_param(m, MNI_P_FCW, l), N, C, 4 * C);
        mni_layernorm_bwd(m->dres, grad_of(m, MNI_P_LN2W, l), grad_of(m, MNI_P_LN2B, l), m->dtmp,
                          a->res_mid, mni_model_param(m, MNI_P_LN2W, l), a->ln2_mean,
                          a->ln2_rstd, N, C);
        /* res_mid = res + atty W_O^T + b_O */
        mni_matmul_bwd(m->datty, grad_of(m, MNI_P_PROJW, l), grad_of(m, MNI_P_PROJB, l), m->dres,
                       a->atty, mni_model_param(m, MNI_P_PROJW, l), N, C, C);
        struct mnemo_attn_io io = {0};
        io.B = B;
        io.T = T;
        io.qkv = a->qkv;
        io.out = a->atty;
        io.dout = m->datty;
        io.dqkv = m->dqkv;
        float *kp[MNEMO_ATTN_MAX_PARAMS], *kg[MNEMO_ATTN_MAX_PARAMS];
        mni_model_kind_params(m, l, kp, 0);
        mni_model_kind_params(m, l, kg, 1);
        io.params = (const float *const *)kp;
        io.dparams = kg;
        io.act = a->attn_act;
        io.scratch = m->attn_scratch;
        lanes_io(m, l, &io);
        io.layer = l;
        io.training = m->training;
        io.seed = m->seed;
        /* objective = xent + sum_l aux_l / B: d/d(aux of this layer) */
        io.aux_grad = grad_scale / (float)B;
        if (!m->attn->backward)
            return mni_err(MNEMO_ERR_UNSUPPORTED, "%s attention has no backward", m->attn->name);
        st = m->attn->backward(&m->lcfg[l], &io);
        if (st != MNEMO_OK) return st;
        mni_matmul_bwd(m->dtmp, grad_of(m, MNI_P_QKVW, l), grad_of(m, MNI_P_QKVB, l), m->dqkv,
                       a->ln1, mni_model_param(m, MNI_P_QKVW, l), N, C, 3 * C);
        mni_layernorm_bwd(m->dres, grad_of(m, MNI_P_LN1W, l), grad_of(m, MNI_P_LN1B, l), m->dtmp,
                          a->res, mni_model_param(m, MNI_P_LN1W, l), a->ln1_mean, a->ln1_rstd,
                          N, C);
    }
    /* h0 = wte[x] (+ wpe[t]): scatter-add. Threads own disjoint channel ranges and walk the
     * tokens in order, so the sums are race-free and deterministic. */
    float *dwte = grad_of(m, MNI_P_WTE, 0);
    float *dwpe = m->cfg.pos == MNEMO_POS_LEARNED ? grad_of(m, MNI_P_WPE, 0) : NULL;
#pragma omp parallel for schedule(static)
    for (size_t c0 = 0; c0 < C; c0 += 16) {
        size_t c1 = c0 + 16 < C ? c0 + 16 : C;
        for (size_t n = 0; n < N; n++) {
            const float *d = m->dres + n * C;
            float *g = dwte + (size_t)m->inputs[n] * C;
            for (size_t c = c0; c < c1; c++) g[c] += d[c];
            if (dwpe) {
                float *gp = dwpe + (n % (size_t)T) * C;
                for (size_t c = c0; c < c1; c++) gp[c] += d[c];
            }
        }
    }
    return MNEMO_OK;
}
