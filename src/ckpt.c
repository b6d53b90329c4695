/*
 * ckpt.c -- model checkpoints: the parameter table written as safetensors tensors with the
 * model config in "__metadata__", and loading them back with every field and shape checked.
 * Names and layouts: docs/checkpoint.md. The file format itself: st.c.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attn/registry.h"
#include "ckpt.h"
#include "mni.h"
#include "model.h"
#include "st.h"

#define NAME_LEN 96

/* The carried metadata lives in the model's fixed table (model.h, meta_key/meta_val): at most
 * META_MAX_PAIRS pairs, keys of at most META_KEY_LEN bytes, values of at most META_VAL_LEN.
 * Both the setters and the loader refuse more with an error; nothing is ever cut short. */
#define META_KEYS (((struct mnemo_model *)0)->meta_key)
#define META_VALS (((struct mnemo_model *)0)->meta_val)
#define META_MAX_PAIRS ((int)(sizeof(META_KEYS) / sizeof(META_KEYS[0])))
#define META_KEY_LEN ((int)sizeof(META_KEYS[0]) - 1)
#define META_VAL_LEN ((int)sizeof(META_VALS[0]) - 1)

/* train.* and prune.* pairs are carried with the model; the config has its own fields. */
static int carried_key(const char *k)
{
    return strncmp(k, "train.", 6) == 0 || strncmp(k, "prune.", 6) == 0;
}

static const char *pos_name(int pos) { return pos == MNEMO_POS_LEARNED ? "learned" : "rope"; }

int mni_pos_from_name(const char *s)
{
    if (!strcmp(s, "rope")) return MNEMO_POS_ROPE;
    if (!strcmp(s, "learned")) return MNEMO_POS_LEARNED;
    return -1;
}

/* The bytes config_meta needs for the attention options' values (attn.<key>). */
static size_t opts_meta_bytes(const struct mnemo_model *m)
{
    size_t n = 0;
    for (int i = 0; i < m->attn->n_opts; i++)
        n += (size_t)mni_attn_opt_value(m->lcfg, m->cfg.n_layer, i, NULL, 0) + 1;
    return n;
}

/* Fills a (key, value) list with the config of m; values live in buf (n_buf bytes: 1024 plus
 * opts_meta_bytes). Every model and training option of the kind is written as "attn.<key>",
 * and the session options that differ from their defaults (e.g. budgets a prune-search
 * found). keys holds the "attn.<key>" strings (MNEMO_ATTN_MAX_OPTS x 80 bytes). Returns the
 * number of pairs. */
static size_t config_meta(const struct mnemo_model *m, const char **kv, char *buf, size_t n_buf,
                          char (*keys)[80])
{
    const struct mnemo_model_config *c = &m->cfg;
    size_t n = 0, used = 0;
#define PUT(k, fmt, v)                                                                         \
    do {                                                                                       \
        int w = snprintf(buf + used, n_buf - used, fmt, v);                                    \
        MNEMO_ASSERT(w > 0 && (size_t)w < n_buf - used);                                       \
        kv[2 * n] = k;                                                                         \
        kv[2 * n + 1] = buf + used;                                                            \
        used += (size_t)w + 1;                                                                 \
        n++;                                                                                   \
    } while (0)
    PUT("mnemo.format", "%d", MNI_CKPT_FORMAT);
    PUT("n_layer", "%d", c->n_layer);
    PUT("d_model", "%d", c->d_model);
    PUT("n_head", "%d", c->n_head);
    PUT("n_ctx", "%d", c->n_ctx);
    PUT("vocab", "%d", c->vocab);
    PUT("vocab_padded", "%d", c->vocab_padded);
    PUT("pos", "%s", pos_name(c->pos));
    PUT("rope_theta", "%.9g", (double)c->rope_theta);
    PUT("attn_kind", "%s", mnemo_attn_kind_name(c->attn_kind));
    PUT("tokenizer", "%s", "bytes+bos");
#undef PUT
    for (int i = 0; i < m->attn->n_opts; i++) {
        const struct mnemo_attn_opt *o = &m->attn->opts[i];
        int is_def = 1;
        for (int l = 0; l < c->n_layer; l++) is_def &= m->lcfg[l].opt[i] == o->def;
        if (o->scope == MNEMO_ATTN_SCOPE_SESSION && is_def) continue;
        snprintf(keys[i], sizeof(keys[i]), "attn.%s", o->key);
        int w = mni_attn_opt_value(m->lcfg, c->n_layer, i, buf + used, n_buf - used);
        MNEMO_ASSERT(w >= 0 && (size_t)w < n_buf - used);
        kv[2 * n] = keys[i];
        kv[2 * n + 1] = buf + used;
        used += (size_t)w + 1;
        n++;
    }
    return n;
}

enum mnemo_status mni_model_save_ex(const struct mnemo_model *m, const char *path,
                                    const char *const *extra_kv, size_t n_extra)
{
    const int L = m->cfg.n_layer;
    size_t max_t = (size_t)MNI_P_MAX * (size_t)L;
    struct mni_st_tensor *t = mni_alloc(max_t * sizeof(*t));
    char *names = mni_alloc(max_t * NAME_LEN);
    const char **kv = mni_alloc((32 + MNEMO_ATTN_MAX_OPTS + n_extra) * 2 * sizeof(char *));
    const size_t n_meta = 1024 + opts_meta_bytes(m);
    char *metabuf = mni_malloc(n_meta);
    char(*keys)[80] = mni_malloc(MNEMO_ATTN_MAX_OPTS * sizeof(*keys));
    enum mnemo_status st = MNEMO_OK;
    if (!t || !names || !kv || !metabuf || !keys) {
        st = mni_err(MNEMO_ERR_NOMEM, "out of memory writing checkpoint '%s'", path);
        goto out;
    }
    size_t n = 0;
    for (int id = 0; id < m->n_pinfo; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        if (pi->numel == 0) continue;
        for (int l = 0; l < (pi->per_layer ? L : 1); l++) {
            char *nm = names + n * NAME_LEN;
            snprintf(nm, NAME_LEN, pi->name, l);
            t[n].name = nm;
            t[n].dtype = MNI_ST_F32;
            t[n].ndim = pi->d1 ? 2 : 1;
            t[n].shape[0] = pi->d0;
            t[n].shape[1] = pi->d1;
            t[n].data = mni_model_param(m, id, l);
            n++;
        }
    }
    size_t n_kv = config_meta(m, kv, metabuf, n_meta, keys);
    for (size_t i = 0; i < n_extra; i++) {
        kv[2 * (n_kv + i)] = extra_kv[2 * i];
        kv[2 * (n_kv + i) + 1] = extra_kv[2 * i + 1];
    }
    st = mni_st_write(path, t, n, kv, n_kv + n_extra);
out:
    mni_free(t);
    mni_free(names);
    mni_free(kv);
    mni_free(metabuf);
    mni_free(keys);
    return st;
}

enum mnemo_status mnemo_model_save(const struct mnemo_model *m, const char *path)
{
    return mni_model_save_ex(m, path, NULL, 0);
}

/* Strict integer metadata: the whole string must be a number within [lo, hi]. */
static enum mnemo_status meta_int(const struct mni_st_file *f, const char *path, const char *key,
                                  long lo, long hi, int *out)
{
    const char *v = mni_st_meta(f, key);
    if (!v) return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' lacks metadata '%s'", path, key);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < lo || x > hi)
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': metadata %s = '%s' is not an integer in [%ld, %ld]",
                       path, key, v, lo, hi);
    *out = (int)x;
    return MNEMO_OK;
}

/* Appends "key=value" to the option list *opts (grown with mni_malloc). */
static enum mnemo_status opts_append(char **opts, const char *key, size_t klen, const char *v)
{
    const size_t old = *opts ? strlen(*opts) : 0, n = old + klen + strlen(v) + 3;
    char *s = mni_malloc(n);
    if (!s) return mni_err(MNEMO_ERR_NOMEM, "out of memory reading a checkpoint's options");
    snprintf(s, n, "%s%s%.*s=%s", old ? *opts : "", old ? "," : "", (int)klen, key, v);
    mni_free(*opts);
    *opts = s;
    return MNEMO_OK;
}

/* The attention options a checkpoint carries, as an option list (*opts, caller frees): its
 * "attn.<key>" metadata; a format-1 checkpoint's "attn_<key>" keys (infini's segment and
 * mem_update) and "prune.budgets" (selective's per-layer budget, written with commas) are read
 * as the same options. The values are checked when the model is made. */
/* Format 1's "prune.budgets" becomes the option budget when the kind has one (a dense format-1
 * file may carry the pair, which was then only carried along, and still is). */
static int budgets_as_option(int ver, int kind)
{
    return ver == 1 && mnemo_attn_opt_find(kind, "budget") >= 0;
}

static enum mnemo_status read_opts(const struct mni_st_file *f, int ver, int kind, char **opts)
{
    *opts = NULL;
    enum mnemo_status st = MNEMO_OK;
    for (size_t i = 0; i < mni_st_meta_count(f) && st == MNEMO_OK; i++) {
        const char *k, *v;
        mni_st_meta_at(f, i, &k, &v);
        if (!strncmp(k, "attn.", 5) && k[5])
            st = opts_append(opts, k + 5, strlen(k + 5), v);
        else if (ver == 1 && !strncmp(k, "attn_", 5) && strcmp(k, "attn_kind") != 0)
            st = opts_append(opts, k + 5, strlen(k + 5), v);
        else if (budgets_as_option(ver, kind) && !strcmp(k, "prune.budgets")) {
            char *list = mni_malloc(strlen(v) + 1);
            if (!list) return mni_err(MNEMO_ERR_NOMEM, "out of memory");
            for (size_t j = 0; j <= strlen(v); j++) list[j] = v[j] == ',' ? '/' : v[j];
            st = opts_append(opts, "budget", 6, list);
            mni_free(list);
        }
    }
    return st;
}

enum mnemo_status mni_ckpt_read_config(const struct mni_st_file *f, const char *path,
                                       struct mnemo_model_config *c, char **opts)
{
    *opts = NULL;
    mnemo_model_config_default(c);
    const char *fmt = mni_st_meta(f, "mnemo.format");
    if (!fmt) return mni_err(MNEMO_ERR_FORMAT, "'%s' is not a mnemo checkpoint (no mnemo.format metadata)", path);
    int ver;
    enum mnemo_status st = meta_int(f, path, "mnemo.format", 1, 1000, &ver);
    if (st != MNEMO_OK) return st;
    if (ver < 1 || ver > MNI_CKPT_FORMAT)
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' has format %d; this build reads formats "
                       "1 to %d", path, ver, MNI_CKPT_FORMAT);
    if ((st = meta_int(f, path, "n_layer", 1, 1 << 20, &c->n_layer)) ||
        (st = meta_int(f, path, "d_model", 1, 1 << 20, &c->d_model)) ||
        (st = meta_int(f, path, "n_head", 1, 1 << 20, &c->n_head)) ||
        (st = meta_int(f, path, "n_ctx", 1, 1 << 30, &c->n_ctx)) ||
        (st = meta_int(f, path, "vocab", 1, 1 << 20, &c->vocab)) ||
        (st = meta_int(f, path, "vocab_padded", 1, 1 << 20, &c->vocab_padded)))
        return st;
    const char *pos = mni_st_meta(f, "pos"), *kind = mni_st_meta(f, "attn_kind");
    const char *theta = mni_st_meta(f, "rope_theta");
    if (!pos || mni_pos_from_name(pos) < 0)
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': metadata pos = '%s' (expected rope or learned)",
                       path, pos ? pos : "(missing)");
    c->pos = mni_pos_from_name(pos);
    if (!kind || mnemo_attn_kind_from_name(kind) < 0)
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': unknown attention kind '%s'", path,
                       kind ? kind : "(missing)");
    c->attn_kind = mnemo_attn_kind_from_name(kind);
    if ((st = read_opts(f, ver, c->attn_kind, opts)) != MNEMO_OK) return st;
    c->attn_opts = *opts;
    char *end = NULL;
    c->rope_theta = theta ? strtof(theta, &end) : NAN;
    if (!theta || end == theta || *end || !(c->rope_theta > 0))
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': bad rope_theta '%s'", path,
                       theta ? theta : "(missing)");
    st = mnemo_model_config_check(c);
    if (st != MNEMO_OK) /* mni_err may wrap the last error: it formats into a copy */
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': impossible config: %s", path,
                       mnemo_last_error());
    return MNEMO_OK;
}

/* A format-1 checkpoint named the kind's single tensor (infini's gates) "blocks.{l}.attn.kind". */
static int legacy_name(const struct mnemo_model *m, int ver, int id, int l, char *buf, size_t n)
{
    if (ver != 1 || id != MNI_P_COUNT || m->n_kparams != 1) return 0;
    snprintf(buf, n, "blocks.%d.attn.kind", l);
    return 1;
}

/* Checks (read == 0) or reads every tensor of m's parameter table from f (a checkpoint of
 * format ver), in table order; *n_tensors gets the number of tensors the table has. */
static enum mnemo_status table_io(struct mni_st_file *f, struct mnemo_model *m, int ver, int read,
                                  size_t *n_tensors)
{
    enum mnemo_status st = MNEMO_OK;
    size_t n = 0;
    for (int id = 0; id < m->n_pinfo && st == MNEMO_OK; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        if (pi->numel == 0) continue;
        for (int l = 0; l < (pi->per_layer ? m->cfg.n_layer : 1) && st == MNEMO_OK; l++) {
            char nm[NAME_LEN];
            if (!legacy_name(m, ver, id, l, nm, sizeof(nm))) snprintf(nm, sizeof(nm), pi->name, l);
            const size_t shape[2] = {pi->d0, pi->d1};
            const int nd = pi->d1 ? 2 : 1;
            st = read ? mni_st_read(f, nm, MNI_ST_F32, nd, shape, mni_model_param(m, id, l))
                      : mni_st_check(f, nm, MNI_ST_F32, nd, shape);
            n++;
        }
    }
    *n_tensors = n;
    return st;
}

/* 1 if nm is a tensor of m's table: a global name, or "blocks.<l>.<x>" with l < n_layer (in
 * plain decimal) and "blocks.%d.<x>" a per-layer entry. One pass over the table, whatever the
 * number of layers. */
static int known_tensor(const struct mnemo_model *m, int ver, const char *nm)
{
    static const char blk[] = "blocks.";
    const char *rest = NULL;
    long l = -1;
    if (!strncmp(nm, blk, sizeof(blk) - 1) && nm[sizeof(blk) - 1] >= '0' &&
        nm[sizeof(blk) - 1] <= '9') {
        char *end;
        errno = 0;
        l = strtol(nm + sizeof(blk) - 1, &end, 10);
        if (errno || (nm[sizeof(blk) - 1] == '0' && end != nm + sizeof(blk))) return 0;
        rest = end; /* ".<x>" */
    }
    if (rest && l < m->cfg.n_layer && ver == 1 && m->n_kparams == 1 && !strcmp(rest, ".attn.kind"))
        return 1; /* format 1's name of the kind's single tensor */
    for (int id = 0; id < m->n_pinfo; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        if (pi->numel == 0) continue;
        if (ver == 1 && id == MNI_P_COUNT && m->n_kparams == 1) continue; /* named as above */
        if (!pi->per_layer && !strcmp(nm, pi->name)) return 1;
        if (pi->per_layer && rest && l < m->cfg.n_layer &&
            !strcmp(rest, pi->name + sizeof(blk) - 1 + 2)) /* past "blocks.%d" */
            return 1;
    }
    return 0;
}

enum mnemo_status mnemo_model_load(struct mnemo_model **out, const char *path)
{
    *out = NULL;
    struct mni_st_file *f = NULL;
    struct mnemo_model *m = NULL;
    struct mnemo_model_config cfg;
    char *opts = NULL;
    size_t expected = 0;
    /* Every claim of the header is checked against the file before the parameters are
     * allocated: each tensor of the table must be in the file with its shape, and mni_st_open
     * has checked that the file's tensors tile its data section, so the parameters cannot
     * outgrow the file (a few bytes of metadata cannot cost gigabytes). */
    enum mnemo_status st = mni_st_open(&f, path);
    if (st == MNEMO_OK) st = mni_ckpt_read_config(f, path, &cfg, &opts);
    if (st == MNEMO_OK) st = mni_model_plan(&m, &cfg);
    mni_free(opts);
    const int ver = st == MNEMO_OK ? (int)strtol(mni_st_meta(f, "mnemo.format"), NULL, 10) : 0;
    if (st == MNEMO_OK) st = table_io(f, m, ver, 0, &expected);
    if (st == MNEMO_OK && mni_st_count(f) != expected) {
        /* every tensor of the table is there, names are unique: one is not ours */
        for (size_t i = 0; i < mni_st_count(f); i++) {
            const char *nm = mni_st_info_at(f, i)->name;
            if (!known_tensor(m, ver, nm)) {
                st = mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' has an unexpected tensor '%s'", path, nm);
                break;
            }
        }
        MNEMO_ASSERT(st != MNEMO_OK);
    }
    if (st == MNEMO_OK) st = mni_model_alloc_params(m);
    if (st == MNEMO_OK) st = table_io(f, m, ver, 1, &expected);
    if (st != MNEMO_OK) goto fail;
    if (mni_first_nonfinite(m->params, m->n_params) < m->n_params) {
        st = mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' holds a non-finite parameter", path);
        goto fail;
    }
    for (size_t i = 0; i < mni_st_meta_count(f); i++) {
        const char *k, *v;
        mni_st_meta_at(f, i, &k, &v);
        /* the config has its own fields; train.* and prune.* are carried along, exactly or
         * not at all: a pair the model cannot hold fails the load rather than being cut */
        if (!carried_key(k) || (budgets_as_option(ver, cfg.attn_kind) && !strcmp(k, "prune.budgets")))
            continue; /* format 1's budgets were read as the option budget (read_opts) */
        if (strlen(k) > META_KEY_LEN || strlen(v) > META_VAL_LEN) {
            st = mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': metadata '%.64s%s' has a %zu-byte "
                         "key and a %zu-byte value; at most %d and %d bytes are supported", path,
                         k, strlen(k) > 64 ? "..." : "", strlen(k), strlen(v), META_KEY_LEN,
                         META_VAL_LEN);
            goto fail;
        }
        if (m->n_meta == META_MAX_PAIRS) {
            st = mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' carries more than %d train.*/prune.* "
                         "metadata pairs (the most supported)", path, META_MAX_PAIRS);
            goto fail;
        }
        memcpy(m->meta_key[m->n_meta], k, strlen(k) + 1);
        memcpy(m->meta_val[m->n_meta], v, strlen(v) + 1);
        m->n_meta++;
    }
    mni_st_close(f);
    *out = m;
    return MNEMO_OK;
fail:
    mni_st_close(f);
    mnemo_model_free(m);
    return st;
}

const char *mnemo_model_meta(const struct mnemo_model *m, const char *key)
{
    for (int i = 0; i < m->n_meta; i++)
        if (!strcmp(m->meta_key[i], key)) return m->meta_val[i];
    return NULL;
}

void mni_model_set_meta(struct mnemo_model *m, const char *key, const char *value)
{
    int i = 0;
    while (i < m->n_meta && strcmp(m->meta_key[i], key) != 0) i++;
    if (i == m->n_meta) {
        if (m->n_meta == META_MAX_PAIRS) return;
        m->n_meta++;
    }
    snprintf(m->meta_key[i], sizeof(m->meta_key[i]), "%s", key);
    snprintf(m->meta_val[i], sizeof(m->meta_val[i]), "%s", value);
}

enum mnemo_status mnemo_model_set_meta(struct mnemo_model *m, const char *key, const char *value)
{
    if (!key || !value) return mni_err(MNEMO_ERR_ARG, "metadata: no key or no value given");
    if (!carried_key(key) || !key[6])
        return mni_err(MNEMO_ERR_ARG, "metadata key '%.64s': only train.NAME and prune.NAME are "
                       "carried", key);
    if (strlen(key) > META_KEY_LEN || strlen(value) > META_VAL_LEN)
        return mni_err(MNEMO_ERR_ARG, "metadata '%.64s': a key has at most %d bytes (this one %zu) "
                       "and a value %d (this one %zu)", key, META_KEY_LEN, strlen(key),
                       META_VAL_LEN, strlen(value));
    if (m->n_meta == META_MAX_PAIRS && !mnemo_model_meta(m, key))
        return mni_err(MNEMO_ERR_ARG, "metadata '%s': at most %d pairs are carried", key,
                       META_MAX_PAIRS);
    mni_model_set_meta(m, key, value);
    return MNEMO_OK;
}

enum mnemo_status mnemo_model_save_meta(const struct mnemo_model *m, const char *path)
{
    const char *kv[2 * META_MAX_PAIRS];
    for (int i = 0; i < m->n_meta; i++) {
        kv[2 * i] = m->meta_key[i];
        kv[2 * i + 1] = m->meta_val[i];
    }
    return mni_model_save_ex(m, path, kv, (size_t)m->n_meta);
}
