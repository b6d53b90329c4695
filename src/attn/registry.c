/*
 * registry.c -- the attention kinds by enum and by name, and the options every kind declares:
 * parsing "key=value,..." lists against a kind's table, checking ranges, and writing them back.
 *
 * The table is indexed by enum mnemo_attn_kind; adding a kind means appending the enum value in
 * mnemo.h, its two ops objects (fast and reference) in attn_int.h, and one line here (the
 * _Static_assert is the reminder).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/attn_int.h"
#include "attn/registry.h"
#include "mni.h"
#include "mnemo.h"

static const struct {
    const struct mnemo_attn_ops *fast, *ref;
} registry[MNEMO_ATTN_KIND_COUNT] = {
    [MNEMO_ATTN_KIND_DENSE] = {&mni_attn_dense, &mni_attn_dense_ref},
    [MNEMO_ATTN_KIND_SELECTIVE] = {&mni_attn_selective, &mni_attn_selective_ref},
    [MNEMO_ATTN_KIND_INFINI] = {&mni_attn_infini, &mni_attn_infini_ref},
    [MNEMO_ATTN_KIND_WINDOW] = {&mni_attn_window, &mni_attn_window_ref},
    [MNEMO_ATTN_KIND_BLOCK] = {&mni_attn_block, &mni_attn_block_ref},
    [MNEMO_ATTN_KIND_STRIDED] = {&mni_attn_strided, &mni_attn_strided_ref},
    [MNEMO_ATTN_KIND_LONGFORMER] = {&mni_attn_longformer, &mni_attn_longformer_ref},
    [MNEMO_ATTN_KIND_BIGBIRD] = {&mni_attn_bigbird, &mni_attn_bigbird_ref},
};
_Static_assert(MNEMO_ATTN_KIND_COUNT == 8, "a new attention kind needs a line in registry[]");

const struct mnemo_attn_ops *mnemo_attn_ops_get(int kind)
{
    if (kind < 0 || kind >= MNEMO_ATTN_KIND_COUNT) return NULL;
    return registry[kind].fast;
}

const struct mnemo_attn_ops *mnemo_attn_ops_get_ref(int kind)
{
    if (kind < 0 || kind >= MNEMO_ATTN_KIND_COUNT) return NULL;
    return registry[kind].ref;
}

const char *mnemo_attn_kind_name(int kind)
{
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(kind);
    return ops ? ops->name : NULL;
}

int mnemo_attn_kind_from_name(const char *name)
{
    if (!name) return -1;
    for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
        if (registry[k].fast && strcmp(registry[k].fast->name, name) == 0) return k;
    }
    return -1;
}

int mnemo_attn_opt_find(int kind, const char *key)
{
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(kind);
    for (int i = 0; ops && key && i < ops->n_opts; i++)
        if (!strcmp(ops->opts[i].key, key)) return i;
    return -1;
}

/* ---- values ------------------------------------------------------------------------------- */

/* The index of name among an ENUM's '|'-separated choices (len bytes of name), or -1. */
static int choice_index(const char *choices, const char *name, size_t len)
{
    int i = 0;
    for (const char *c = choices; c && *c; i++) {
        const char *bar = strchr(c, '|');
        size_t n = bar ? (size_t)(bar - c) : strlen(c);
        if (n == len && !strncmp(c, name, len)) return i;
        if (!bar) break;
        c = bar + 1;
    }
    return -1;
}

/* Writes choice i of choices into buf. */
static void choice_name(char *buf, size_t n, const char *choices, int i)
{
    const char *c = choices;
    for (int k = 0; k < i && c; k++) {
        c = strchr(c, '|');
        if (c) c++;
    }
    size_t len = c ? strcspn(c, "|") : 0;
    snprintf(buf, n, "%.*s", (int)len, c ? c : "");
}

/* Parses one value (len bytes at s) of option o into *out; MNEMO_ERR_ARG with a message
 * naming the kind and the option when it does not parse or lies outside the range. */
static enum mnemo_status parse_value(const char *kind, const struct mnemo_attn_opt *o,
                                     const char *s, size_t len, double *out)
{
    char buf[64];
    if (len == 0 || len >= sizeof(buf))
        return mni_err(MNEMO_ERR_ARG, "%s attention: option %s: %s value", kind, o->key,
                       len ? "too long a" : "an empty");
    memcpy(buf, s, len);
    buf[len] = 0;
    char *end = NULL;
    double v = 0;
    errno = 0;
    switch (o->type) {
    case MNEMO_ATTN_OPT_INT: {
        long long x = strtoll(buf, &end, 10);
        if (errno || *end || end == buf)
            return mni_err(MNEMO_ERR_ARG, "%s attention: option %s = '%s' is not an integer", kind,
                           o->key, buf);
        v = (double)x;
        break;
    }
    case MNEMO_ATTN_OPT_FLOAT:
        v = strtod(buf, &end);
        if (errno || *end || end == buf || !isfinite(v))
            return mni_err(MNEMO_ERR_ARG, "%s attention: option %s = '%s' is not a number", kind,
                           o->key, buf);
        break;
    case MNEMO_ATTN_OPT_BOOL:
        if (!strcmp(buf, "1") || !strcmp(buf, "true")) v = 1;
        else if (!strcmp(buf, "0") || !strcmp(buf, "false")) v = 0;
        else
            return mni_err(MNEMO_ERR_ARG, "%s attention: option %s = '%s' is not true or false",
                           kind, o->key, buf);
        return *out = v, MNEMO_OK;
    case MNEMO_ATTN_OPT_ENUM: {
        int i = choice_index(o->choices, buf, len);
        if (i < 0)
            return mni_err(MNEMO_ERR_ARG, "%s attention: option %s = '%s': expected one of %s",
                           kind, o->key, buf, o->choices);
        return *out = i, MNEMO_OK;
    }
    default: return mni_err(MNEMO_ERR_ARG, "%s attention: option %s has no type", kind, o->key);
    }
    if (v < o->lo || v > o->hi)
        return mni_err(MNEMO_ERR_ARG, "%s attention: option %s = %s is out of range [%g, %g]",
                       kind, o->key, buf, o->lo, o->hi);
    *out = v;
    return MNEMO_OK;
}

/* Applies a per-layer value "a/b/c" (or a single value) for layer `layer` (-1: the first). */
static enum mnemo_status parse_layer_value(const char *kind, const struct mnemo_attn_opt *o,
                                           const char *s, size_t len, int layer, int n_layer,
                                           double *out)
{
    size_t parts = 1;
    for (size_t i = 0; i < len; i++) parts += s[i] == '/';
    if (parts > 1 && !(o->flags & MNEMO_ATTN_OPT_PER_LAYER))
        return mni_err(MNEMO_ERR_ARG, "%s attention: option %s takes one value, not a list", kind,
                       o->key);
    if (parts > 1 && parts != (size_t)n_layer)
        return mni_err(MNEMO_ERR_ARG, "%s attention: option %s lists %zu values for %d layers",
                       kind, o->key, parts, n_layer);
    /* every element is checked, whichever layer is asked for */
    size_t from = 0;
    for (size_t p = 0; p < parts; p++) {
        size_t to = from;
        while (to < len && s[to] != '/') to++;
        double v = 0;
        enum mnemo_status st = parse_value(kind, o, s + from, to - from, &v);
        if (st != MNEMO_OK) return st;
        if (p == 0 || (int)p == layer) *out = v;
        from = to + 1;
    }
    return MNEMO_OK;
}

enum mnemo_status mnemo_attn_cfg_make(struct mnemo_attn_cfg *cfg,
                                      const struct mnemo_model_config *mc, const char *opts,
                                      int layer)
{
    memset(cfg, 0, sizeof(*cfg));
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(mc->attn_kind);
    if (!ops) return mni_err(MNEMO_ERR_ARG, "attn_kind = %d: unknown attention kind", mc->attn_kind);
    cfg->kind = mc->attn_kind;
    cfg->n_head = mc->n_head;
    cfg->head_dim = mc->n_head > 0 ? mc->d_model / mc->n_head : 0;
    cfg->n_ctx = mc->n_ctx;
    cfg->rope = mc->pos == MNEMO_POS_ROPE;
    cfg->rope_theta = mc->rope_theta;
    cfg->n_layer = mc->n_layer;
    cfg->causal = 1;
    for (int i = 0; i < ops->n_opts; i++) cfg->opt[i] = ops->opts[i].def;
    unsigned seen = 0;
    for (const char *p = opts ? opts : ""; *p;) {
        while (*p == ',' || isspace((unsigned char)*p)) p++;
        if (!*p) break;
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        size_t klen = eq ? (size_t)(eq - p) : len;
        while (klen > 0 && isspace((unsigned char)p[klen - 1])) klen--;
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)(klen < sizeof(key) ? klen : sizeof(key) - 1), p);
        if (!eq)
            return mni_err(MNEMO_ERR_ARG, "%s attention: '%.*s' is not KEY=VALUE", ops->name,
                           (int)(len > 64 ? 64 : len), p);
        int i = klen < sizeof(key) ? mnemo_attn_opt_find(cfg->kind, key) : -1;
        if (i < 0) {
            char known[512] = "";
            size_t used = 0;
            for (int k = 0; k < ops->n_opts && used < sizeof(known); k++)
                used += (size_t)snprintf(known + used, sizeof(known) - used, "%s%s", k ? ", " : "",
                                         ops->opts[k].key);
            return mni_err(MNEMO_ERR_ARG, "%s attention has no option '%s' (%s)", ops->name, key,
                           ops->n_opts ? known : "it has no options");
        }
        if (seen & (1u << i))
            return mni_err(MNEMO_ERR_ARG, "%s attention: option %s given twice", ops->name, key);
        seen |= 1u << i;
        const char *v = eq + 1;
        size_t vlen = len - (size_t)(v - p);
        while (vlen > 0 && isspace((unsigned char)*v)) v++, vlen--;
        while (vlen > 0 && isspace((unsigned char)v[vlen - 1])) vlen--;
        enum mnemo_status st =
            parse_layer_value(ops->name, &ops->opts[i], v, vlen, layer, mc->n_layer, &cfg->opt[i]);
        if (st != MNEMO_OK) return st;
        p += len;
    }
    return ops->validate ? ops->validate(cfg) : MNEMO_OK;
}

/* Writes value v of option o (canonical: integers without a point, floats with %.9g). */
static int format_value(char *buf, size_t n, const struct mnemo_attn_opt *o, double v)
{
    switch (o->type) {
    case MNEMO_ATTN_OPT_INT: return snprintf(buf, n, "%lld", (long long)v);
    case MNEMO_ATTN_OPT_BOOL: return snprintf(buf, n, "%s", v != 0 ? "true" : "false");
    case MNEMO_ATTN_OPT_ENUM: {
        char c[64];
        choice_name(c, sizeof(c), o->choices, (int)v);
        return snprintf(buf, n, "%s", c);
    }
    default: { /* the shortest form that reads back as the same double */
        char t[64];
        for (int prec = 9; prec <= 17; prec++) {
            snprintf(t, sizeof(t), "%.*g", prec, v);
            if (strtod(t, NULL) == v) break;
        }
        return snprintf(buf, n, "%s", t);
    }
    }
}

/* Where the next piece of a string being formatted goes in buf (n bytes; NULL when only
 * counting, then a byte nothing is written to, as the size passed is 0): never past its end,
 * and no pointer arithmetic on NULL. */
static char *at(char *buf, size_t used, size_t n)
{
    static char sink;
    return buf && n ? buf + (used < n ? used : n - 1) : &sink;
}

int mni_attn_opt_value(const struct mnemo_attn_cfg *cfgs, int n_cfg, int i, char *buf, size_t n)
{
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(cfgs[0].kind);
    const struct mnemo_attn_opt *o = &ops->opts[i];
    int same = 1;
    for (int l = 1; l < n_cfg; l++) same &= cfgs[l].opt[i] == cfgs[0].opt[i];
    size_t used = 0;
    if (n) buf[0] = 0;
    for (int l = 0; l < (same ? 1 : n_cfg); l++) {
        char v[64];
        format_value(v, sizeof(v), o, cfgs[l].opt[i]);
        used += (size_t)snprintf(at(buf, used, n), used < n ? n - used : 0, "%s%s",
                                 l ? "/" : "", v);
    }
    return (int)used;
}

int mnemo_attn_opts_format(const struct mnemo_attn_cfg *cfgs, int n_cfg, unsigned scope_mask,
                           int all, char *buf, size_t n)
{
    const struct mnemo_attn_ops *ops = n_cfg > 0 ? mnemo_attn_ops_get(cfgs[0].kind) : NULL;
    size_t used = 0;
    if (n) buf[0] = 0;
    for (int i = 0; ops && i < ops->n_opts; i++) {
        const struct mnemo_attn_opt *o = &ops->opts[i];
        int is_def = 1;
        for (int l = 0; l < n_cfg; l++) is_def &= cfgs[l].opt[i] == o->def;
        if (!(scope_mask & (1u << o->scope)) || (!all && is_def)) continue;
        used += (size_t)snprintf(at(buf, used, n), used < n ? n - used : 0, "%s%s=",
                                 used ? "," : "", o->key);
        used += (size_t)mni_attn_opt_value(cfgs, n_cfg, i, at(buf, used, n),
                                           used < n ? n - used : 0);
    }
    return (int)used;
}

/* ---- option lists ------------------------------------------------------------------------- */

enum mnemo_status mni_attn_cfgs_make(struct mnemo_attn_cfg *cfgs,
                                     const struct mnemo_model_config *mc, const char *opts)
{
    for (int l = 0; l < mc->n_layer; l++) {
        enum mnemo_status st = mnemo_attn_cfg_make(&cfgs[l], mc, opts, l);
        if (st != MNEMO_OK) return st;
    }
    return MNEMO_OK;
}

/* The next item of an option list at *p: its key (klen bytes) and the whole item (len bytes);
 * 0 at the end. */
static int next_item(const char **p, const char **item, size_t *len, size_t *klen)
{
    while (**p == ',' || isspace((unsigned char)**p)) (*p)++;
    if (!**p) return 0;
    *item = *p;
    *len = strcspn(*p, ",");
    const char *eq = memchr(*p, '=', *len);
    *klen = eq ? (size_t)(eq - *p) : *len;
    while (*klen > 0 && isspace((unsigned char)(*p)[*klen - 1])) (*klen)--;
    *p += *len;
    return 1;
}

/* 1 when the list has an item with this key. */
static int has_key(const char *list, const char *key, size_t klen)
{
    const char *p = list ? list : "", *it;
    size_t len, kl;
    while (next_item(&p, &it, &len, &kl))
        if (kl == klen && !strncmp(it, key, klen)) return 1;
    return 0;
}

int mni_attn_opts_merge(char *out, size_t n, const char *base, const char *over)
{
    size_t used = 0;
    const char *lists[2] = {base ? base : "", over ? over : ""};
    for (int k = 0; k < 2; k++) {
        const char *p = lists[k], *it;
        size_t len, klen;
        while (next_item(&p, &it, &len, &klen)) {
            if (k == 0 && has_key(over, it, klen)) continue; /* over replaces it */
            if (used + len + 2 > n) {
                mni_err(MNEMO_ERR_ARG, "attention options: the list is longer than %zu bytes", n);
                return -1;
            }
            if (used) out[used++] = ',';
            memcpy(out + used, it, len);
            used += len;
        }
    }
    if (n) out[used] = 0;
    return 0;
}

static const char *const scope_names[MNEMO_ATTN_SCOPE_COUNT] = {"model", "training", "session"};

enum mnemo_status mni_attn_opts_in_scope(int kind, const char *opts, unsigned mask,
                                         const char *where)
{
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(kind);
    const char *p = opts ? opts : "", *it;
    size_t len, klen;
    while (ops && next_item(&p, &it, &len, &klen)) {
        char key[64];
        snprintf(key, sizeof(key), "%.*s", (int)(klen < sizeof(key) ? klen : sizeof(key) - 1), it);
        int i = mnemo_attn_opt_find(kind, key);
        if (i >= 0 && !(mask & (1u << ops->opts[i].scope)))
            return mni_err(MNEMO_ERR_ARG, "%s attention: option %s is a %s option; %s does not "
                           "take it", ops->name, key, scope_names[ops->opts[i].scope], where);
    }
    return MNEMO_OK;
}

size_t mni_attn_state_bytes(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfgs,
                            int n_cfg)
{
    size_t b = 0;
    for (int l = 0; ops->state_bytes && l < n_cfg; l++)
        b = mni_add(b, mni_align64(ops->state_bytes(&cfgs[l])));
    return b;
}
