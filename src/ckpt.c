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

/* Fills a (key, value) list with the config; values live in buf (n_buf bytes). Returns the
 * number of pairs. */
static size_t config_meta(const struct mnemo_model_config *c, const char **kv, char *buf,
                          size_t n_buf)
{
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
    if (c->attn_kind == MNEMO_ATTN_KIND_INFINI) { /* only the kind that has them writes them */
        PUT("attn_segment", "%d", c->attn_segment);
        PUT("attn_mem_update", "%s", mnemo_mem_update_name(c->attn_mem_update));
    }
    PUT("tokenizer", "%s", "bytes+bos");
#undef PUT
    return n;
}

enum mnemo_status mni_model_save_ex(const struct mnemo_model *m, const char *path,
                                    const char *const *extra_kv, size_t n_extra)
{
    const int L = m->cfg.n_layer;
    size_t max_t = (size_t)MNI_P_COUNT * (size_t)L;
    struct mni_st_tensor *t = mni_alloc(max_t * sizeof(*t));
    char *names = mni_alloc(max_t * NAME_LEN);
    const char **kv = mni_alloc((32 + n_extra) * 2 * sizeof(char *));
    char metabuf[1024];
    enum mnemo_status st = MNEMO_OK;
    if (!t || !names || !kv) {
        st = mni_err(MNEMO_ERR_NOMEM, "out of memory writing checkpoint '%s'", path);
        goto out;
    }
    size_t n = 0;
    for (int id = 0; id < MNI_P_COUNT; id++) {
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
    size_t n_kv = config_meta(&m->cfg, kv, metabuf, sizeof(metabuf));
    for (size_t i = 0; i < n_extra; i++) {
        kv[2 * (n_kv + i)] = extra_kv[2 * i];
        kv[2 * (n_kv + i) + 1] = extra_kv[2 * i + 1];
    }
    st = mni_st_write(path, t, n, kv, n_kv + n_extra);
out:
    mni_free(t);
    mni_free(names);
    mni_free(kv);
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

enum mnemo_status mni_ckpt_read_config(const struct mni_st_file *f, const char *path,
                                       struct mnemo_model_config *c)
{
    mnemo_model_config_default(c);
    const char *fmt = mni_st_meta(f, "mnemo.format");
    if (!fmt) return mni_err(MNEMO_ERR_FORMAT, "'%s' is not a mnemo checkpoint (no mnemo.format metadata)", path);
    int ver;
    enum mnemo_status st = meta_int(f, path, "mnemo.format", 1, 1000, &ver);
    if (st != MNEMO_OK) return st;
    if (ver != MNI_CKPT_FORMAT)
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' has format %d; this build reads format %d",
                       path, ver, MNI_CKPT_FORMAT);
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
    /* optional (absent: 0, the default; a kind without them must not carry them) */
    if (mni_st_meta(f, "attn_segment") &&
        (st = meta_int(f, path, "attn_segment", 0, 1 << 30, &c->attn_segment)))
        return st;
    const char *rule = mni_st_meta(f, "attn_mem_update");
    if (rule && mnemo_mem_update_from_name(rule) < 0)
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': metadata attn_mem_update = '%s' "
                       "(expected linear or delta)", path, rule);
    if (rule) c->attn_mem_update = mnemo_mem_update_from_name(rule);
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

/* The file's tensors must hold at least the model's parameters (the reads below then check
 * each tensor's name and shape): checked before the parameters are allocated, so that a small
 * file whose metadata claims a large model fails at once, instead of allocating the model
 * (failing as out of memory, or zeroing gigabytes before the first read fails). */
static enum mnemo_status check_size(const struct mni_st_file *f, const char *path,
                                    const struct mnemo_model *m)
{
    const size_t need = mni_mul(mnemo_model_n_params(m), sizeof(float)); /* the layout's */
    size_t have = 0;
    for (size_t i = 0; i < mni_st_count(f); i++) have += mni_st_info_at(f, i)->nbytes;
    if (need > have)
        return mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s': its config needs %zu bytes of "
                       "parameters, its tensors hold %zu", path, need, have);
    return MNEMO_OK;
}

enum mnemo_status mnemo_model_load(struct mnemo_model **out, const char *path)
{
    *out = NULL;
    struct mni_st_file *f = NULL;
    struct mnemo_model *m = NULL;
    struct mnemo_model_config cfg;
    enum mnemo_status st = mni_st_open(&f, path);
    if (st == MNEMO_OK) st = mni_ckpt_read_config(f, path, &cfg);
    if (st == MNEMO_OK) st = mni_model_create_layout(&m, &cfg);
    if (st == MNEMO_OK) st = check_size(f, path, m);
    if (st == MNEMO_OK) st = mni_model_alloc_params(m);
    if (st != MNEMO_OK) goto fail;
    size_t expected = 0;
    for (int id = 0; id < MNI_P_COUNT && st == MNEMO_OK; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        if (pi->numel == 0) continue;
        for (int l = 0; l < (pi->per_layer ? cfg.n_layer : 1) && st == MNEMO_OK; l++) {
            char nm[NAME_LEN];
            snprintf(nm, sizeof(nm), pi->name, l);
            size_t shape[2] = {pi->d0, pi->d1};
            st = mni_st_read(f, nm, MNI_ST_F32, pi->d1 ? 2 : 1, shape, mni_model_param(m, id, l));
            expected++;
        }
    }
    if (st == MNEMO_OK && mni_st_count(f) != expected) {
        /* name the first tensor we do not know */
        for (size_t i = 0; i < mni_st_count(f); i++) {
            const char *nm = mni_st_info_at(f, i)->name;
            int known = 0;
            for (int id = 0; id < MNI_P_COUNT && !known; id++) {
                const struct mni_param_info *pi = &m->pinfo[id];
                for (int l = 0; pi->numel && l < (pi->per_layer ? cfg.n_layer : 1); l++) {
                    char buf[NAME_LEN];
                    snprintf(buf, sizeof(buf), pi->name, l);
                    if (!strcmp(buf, nm)) known = 1;
                }
            }
            if (!known) {
                st = mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' has an unexpected tensor '%s'", path, nm);
                break;
            }
        }
    }
    if (st != MNEMO_OK) goto fail;
    for (size_t i = 0; i < m->n_params; i++)
        if (!isfinite(m->params[i])) {
            st = mni_err(MNEMO_ERR_FORMAT, "checkpoint '%s' holds a non-finite parameter", path);
            goto fail;
        }
    for (size_t i = 0; i < mni_st_meta_count(f); i++) {
        const char *k, *v;
        mni_st_meta_at(f, i, &k, &v);
        /* the config has its own fields; train.* and prune.* are carried along, exactly or
         * not at all: a pair the model cannot hold fails the load rather than being cut */
        if (!carried_key(k)) continue;
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
