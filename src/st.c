/*
 * st.c -- safetensors writer and validating reader. Contracts in st.h; the format and the list
 * of checks are in docs/internals/checkpoint-format.md.
 *
 * Reader strategy: plain stdio, no mmap (a file truncated under a mapping would SIGBUS). The
 * header is read into a bounded buffer and parsed with cJSON; every number taken from it is
 * range-checked as an exact integer before it becomes a size_t, and all products go through
 * mni_mul. Only then are the tensors sorted by offset and required to tile the data section.
 * Tensor data is fetched on demand by mni_st_read with fseeko + fread into caller memory.
 *
 * Writer strategy: the header is built with cJSON (which escapes names and values); shapes and
 * offsets are inserted as raw integer text so that sizes above 2^31 never print in exponent
 * form. The bytes then go through the atomic writer of fileio.h.
 */
#define _POSIX_C_SOURCE 200809L
#define _FILE_OFFSET_BITS 64
#include "st.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fileio.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "st.c writes and reads tensor data in host order, which must be little-endian"
#endif

/* ---- dtypes --------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t size;
} dtypes[MNI_ST_DTYPE_COUNT] = {
    [MNI_ST_F32] = {"F32", 4}, [MNI_ST_I32] = {"I32", 4}, [MNI_ST_U16] = {"U16", 2},
    [MNI_ST_U8] = {"U8", 1},   [MNI_ST_I64] = {"I64", 8}, [MNI_ST_F64] = {"F64", 8},
    [MNI_ST_F16] = {"F16", 2}, [MNI_ST_BF16] = {"BF16", 2}, [MNI_ST_I8] = {"I8", 1},
    [MNI_ST_I16] = {"I16", 2}, [MNI_ST_U32] = {"U32", 4}, [MNI_ST_U64] = {"U64", 8},
    [MNI_ST_BOOL] = {"BOOL", 1},
};
_Static_assert(MNI_ST_DTYPE_COUNT == 13, "update the dtype table");

static int dtype_ok(enum mni_st_dtype dt) { return (unsigned)dt < MNI_ST_DTYPE_COUNT; }

const char *mni_st_dtype_name(enum mni_st_dtype dt)
{
    return dtype_ok(dt) ? dtypes[dt].name : NULL;
}

size_t mni_st_dtype_size(enum mni_st_dtype dt) { return dtype_ok(dt) ? dtypes[dt].size : 0; }

/* ---- cJSON's allocations -------------------------------------------------------------------- */

/* cJSON allocates through process-wide hooks. Ours route it through mni_malloc, so that the
 * allocation test hook reaches the JSON trees too, and note on this thread that an allocation
 * failed: cJSON reports a parse that ran out of memory like a syntax error, and the flag tells
 * the two apart. mni_malloc returns malloc memory and the free hook is free(), so memory that
 * cJSON allocated before the hooks went in (by another user of cJSON in the process, such as
 * the CLI) is still freed correctly; as with any cJSON_InitHooks, whoever installs hooks last
 * wins. Installed once, before the first use in this file. */
static _Thread_local int cjson_oom;

static void *cjson_malloc(size_t n)
{
    void *p = mni_malloc(n);
    if (!p) cjson_oom = 1;
    return p;
}

static void cjson_free(void *p) { mni_free(p); }

static void cjson_hooks_install(void)
{
    cJSON_Hooks h = {cjson_malloc, cjson_free};
    cJSON_InitHooks(&h);
}

static void cjson_hooks(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, cjson_hooks_install);
}

/* cJSON_ParseWithLengthOpts, with cjson_oom telling afterwards whether an allocation failed. */
static cJSON *parse_json(const char *buf, size_t n, const char **end)
{
    cjson_oom = 0;
    return cJSON_ParseWithLengthOpts(buf, n, end, 0);
}

/* ---- shared helpers ------------------------------------------------------------------------- */

/* Offset of the first byte that breaks UTF-8 (overlong forms, surrogates, > U+10FFFF and
 * truncated sequences included), or n if all is well. With no_ctl, ASCII control characters
 * other than tab, CR and LF also count as bad: JSON never needs them raw, and a raw NUL would
 * silently cut a name short. */
static size_t utf8_bad_at(const unsigned char *s, size_t n, int no_ctl)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            if (no_ctl && c < 0x20 && c != '\t' && c != '\n' && c != '\r') return i;
            i++;
            continue;
        }
        size_t len;
        unsigned lo = 0x80, hi = 0xBF; // allowed range of the first continuation byte
        if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            if (c == 0xE0) lo = 0xA0;      // overlong
            if (c == 0xED) hi = 0x9F;      // surrogates
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            if (c == 0xF0) lo = 0x90;      // overlong
            if (c == 0xF4) hi = 0x8F;      // above U+10FFFF
        } else {
            return i;
        }
        if (n - i < len) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return n;
}

/* "[768, 256]" (or "[]" for a scalar) into buf; truncated, still NUL-terminated, if cap is
 * too small. Returns buf so that it can sit inside a printf argument list. */
static const char *shape_str(char *buf, size_t cap, int ndim, const size_t *shape)
{
    size_t k = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%zu", d ? ", " : "", shape[d]);
    if (k < cap) snprintf(buf + k, cap - k, "]");
    return buf;
}

static int cmp_str_ptr(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorts names (in place) and returns the first name that occurs twice, or NULL. Used for
 * tensor names and metadata keys on both the writing and the reading side: JSON parsers
 * disagree on duplicate keys (cJSON keeps both, Python keeps the last), so a file with a
 * duplicate must never be written nor accepted. */
static const char *first_dup(const char **names, size_t n)
{
    if (n < 2) return NULL;
    qsort(names, n, sizeof(*names), cmp_str_ptr);
    for (size_t i = 1; i < n; i++)
        if (strcmp(names[i - 1], names[i]) == 0) return names[i];
    return NULL;
}

/* ---- writer --------------------------------------------------------------------------------- */

/* Product of the dims times the dtype size, or SIZE_MAX on overflow (mni_mul saturates, and
 * SIZE_MAX * anything non-zero stays SIZE_MAX, so checking once at the end suffices; a zero
 * dim gives 0 bytes, which is the right answer for an empty tensor). */
static size_t tensor_bytes(const struct mni_st_tensor *t)
{
    size_t b = dtypes[t->dtype].size;
    for (int d = 0; d < t->ndim; d++) b = mni_mul(b, t->shape[d]);
    return b;
}

/* Checks everything the caller passed, before any file is created, so that a bad argument
 * never costs the previous checkpoint. Fills nbytes[i] (n entries). Returns MNEMO_OK,
 * MNEMO_ERR_ARG or MNEMO_ERR_NOMEM. Names and metadata must be valid UTF-8 because the
 * header is UTF-8 JSON and our own reader would otherwise reject the file we wrote. */
static enum mnemo_status check_write_args(const char *path, const struct mni_st_tensor *t,
                                          size_t n, const char *const *meta_kv, size_t n_meta,
                                          size_t *nbytes)
{
    for (size_t i = 0; i < n; i++) {
        const char *nm = t[i].name;
        if (!nm || !*nm)
            return mni_err(MNEMO_ERR_ARG, "writing %s: tensor %zu has no name", path, i);
        if (strcmp(nm, "__metadata__") == 0)
            return mni_err(MNEMO_ERR_ARG, "writing %s: '__metadata__' is reserved", path);
        if (utf8_bad_at((const unsigned char *)nm, strlen(nm), 0) != strlen(nm))
            return mni_err(MNEMO_ERR_ARG, "writing %s: tensor %zu name is not UTF-8", path, i);
        if (!dtype_ok(t[i].dtype))
            return mni_err(MNEMO_ERR_ARG, "writing %s: tensor '%s' has invalid dtype %d", path,
                           nm, (int)t[i].dtype);
        if (t[i].ndim < 0 || t[i].ndim > MNI_ST_MAX_DIM)
            return mni_err(MNEMO_ERR_ARG, "writing %s: tensor '%s' has ndim %d (0..%d allowed)",
                           path, nm, t[i].ndim, MNI_ST_MAX_DIM);
        nbytes[i] = tensor_bytes(&t[i]);
        if (nbytes[i] == SIZE_MAX)
            return mni_err(MNEMO_ERR_ARG, "writing %s: tensor '%s' size overflows", path, nm);
        if (nbytes[i] && !t[i].data)
            return mni_err(MNEMO_ERR_ARG, "writing %s: tensor '%s' has no data", path, nm);
    }
    if (n_meta && !meta_kv) return mni_err(MNEMO_ERR_ARG, "writing %s: metadata is NULL", path);
    for (size_t i = 0; i < 2 * n_meta; i++) {
        const char *s = meta_kv[i];
        if (!s)
            return mni_err(MNEMO_ERR_ARG, "writing %s: metadata %s %zu is NULL", path,
                           i % 2 ? "value" : "key", i / 2);
        if (utf8_bad_at((const unsigned char *)s, strlen(s), 0) != strlen(s))
            return mni_err(MNEMO_ERR_ARG, "writing %s: metadata %s %zu is not UTF-8", path,
                           i % 2 ? "value" : "key", i / 2);
    }

    // Duplicate tensor names and metadata keys: sort a scratch copy of the pointers.
    size_t m = n > n_meta ? n : n_meta;
    const char **names = mni_malloc(mni_mul(m ? m : 1, sizeof(*names)));
    if (!names) return mni_err(MNEMO_ERR_NOMEM, "writing %s: out of memory", path);
    for (size_t i = 0; i < n; i++) names[i] = t[i].name;
    const char *dup = first_dup(names, n);
    if (dup) {
        enum mnemo_status st =
            mni_err(MNEMO_ERR_ARG, "writing %s: tensor name '%s' is used twice", path, dup);
        mni_free(names);
        return st;
    }
    for (size_t i = 0; i < n_meta; i++) names[i] = meta_kv[2 * i];
    dup = first_dup(names, n_meta);
    if (dup) {
        enum mnemo_status st =
            mni_err(MNEMO_ERR_ARG, "writing %s: metadata key '%s' is used twice", path, dup);
        mni_free(names);
        return st;
    }
    mni_free(names);
    return MNEMO_OK;
}

/* Adds a raw JSON array of integers ("[a,b,c]") under key; returns 0 on allocation failure.
 * Raw text, not cJSON numbers: cJSON prints doubles with %g, which turns 10^15 into "1e+15",
 * a float that strict readers (serde's usize in the Rust safetensors crate) refuse. Each
 * size_t takes at most 20 digits, so the buffer cannot overflow. */
static int add_int_array(cJSON *obj, const char *key, const size_t *v, int n)
{
    char buf[MNI_ST_MAX_DIM * 22 + 4];
    size_t k = 0;
    buf[k++] = '[';
    for (int i = 0; i < n; i++)
        k += (size_t)snprintf(buf + k, sizeof(buf) - k, "%s%zu", i ? "," : "", v[i]);
    buf[k++] = ']';
    buf[k] = '\0';
    return cJSON_AddRawToObject(obj, key, buf) != NULL;
}

/* Builds the header JSON text (unpadded): "__metadata__" first (when there is any), then the
 * tensors in the caller's order with contiguous data_offsets starting at 0. Caller frees the
 * text with cJSON_free. NULL on OOM. */
static char *build_header(const struct mni_st_tensor *t, size_t n, const char *const *meta_kv,
                          size_t n_meta, const size_t *nbytes)
{
    cJSON *root = cJSON_CreateObject();
    if (!root) return NULL;
    int ok = 1;
    if (n_meta) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        ok = meta != NULL;
        for (size_t i = 0; ok && i < n_meta; i++)
            ok = cJSON_AddStringToObject(meta, meta_kv[2 * i], meta_kv[2 * i + 1]) != NULL;
    }
    size_t off = 0; // data offset of the next tensor; cannot overflow (checked by the caller)
    for (size_t i = 0; ok && i < n; i++) {
        cJSON *e = cJSON_AddObjectToObject(root, t[i].name);
        size_t range[2] = {off, off + nbytes[i]};
        ok = e && cJSON_AddStringToObject(e, "dtype", dtypes[t[i].dtype].name) &&
             add_int_array(e, "shape", t[i].shape, t[i].ndim) &&
             add_int_array(e, "data_offsets", range, 2);
        off += nbytes[i];
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    return text;
}

enum mnemo_status mni_st_write(const char *path, const struct mni_st_tensor *t, size_t n,
                               const char *const *meta_kv, size_t n_meta)
{
    if (!path || !*path) return mni_err(MNEMO_ERR_ARG, "mni_st_write: empty path");
    if (n && !t) return mni_err(MNEMO_ERR_ARG, "writing %s: tensor list is NULL", path);
    if (n_meta > SIZE_MAX / 2) return mni_err(MNEMO_ERR_ARG, "writing %s: bad metadata", path);
    cjson_hooks();
    size_t *nbytes = mni_malloc(mni_mul(n ? n : 1, sizeof(*nbytes)));
    if (!nbytes) return mni_err(MNEMO_ERR_NOMEM, "writing %s: out of memory", path);
    // 1. Validate everything up front: nothing is created on disk for a bad call.
    enum mnemo_status st = check_write_args(path, t, n, meta_kv, n_meta, nbytes);
    size_t total = 0; // the data section; its overflow would also wrap the data_offsets
    for (size_t i = 0; st == MNEMO_OK && i < n; i++) {
        total = mni_add(total, nbytes[i]);
        if (total == SIZE_MAX)
            st = mni_err(MNEMO_ERR_ARG, "writing %s: total data size overflows", path);
    }
    // 2. The header text, padded with spaces to a multiple of 8 so that the data section (at
    //    file offset 8 + padded) is 8-byte aligned, as the safetensors writer does. Tensors
    //    inside it are packed; each is aligned only if those before it have suitable sizes.
    char *text = NULL;
    if (st == MNEMO_OK) {
        text = build_header(t, n, meta_kv, n_meta, nbytes);
        if (!text) st = mni_err(MNEMO_ERR_NOMEM, "writing %s: out of memory for header", path);
    }
    size_t len = text ? strlen(text) : 0;
    size_t padded = (len + 7) & ~(size_t)7; // 8 + padded is a multiple of 8: aligned data
    if (st == MNEMO_OK && padded > MNI_ST_MAX_HEADER)
        st = mni_err(MNEMO_ERR_ARG, "writing %s: header of %zu bytes exceeds the %zu-byte limit",
                     path, padded, MNI_ST_MAX_HEADER);

    // 3. Length, header, padding, tensors, through the atomic writer: the old file at path
    //    stays until the rename in mni_afile_commit.
    struct mni_afile *af = NULL;
    if (st == MNEMO_OK) st = mni_afile_open(&af, path);
    if (st == MNEMO_OK) {
        unsigned char hlen[8];
        for (int b = 0; b < 8; b++) hlen[b] = (unsigned char)((uint64_t)padded >> (8 * b));
        static const char spaces[8] = "        ";
        st = mni_afile_write(af, hlen, 8);
        if (st == MNEMO_OK) st = mni_afile_write(af, text, len);
        if (st == MNEMO_OK) st = mni_afile_write(af, spaces, padded - len);
        for (size_t i = 0; st == MNEMO_OK && i < n; i++)
            st = mni_afile_write(af, t[i].data, nbytes[i]);
        // Both commit and abort consume af; after a failed write only abort makes sense.
        if (st == MNEMO_OK) {
            st = mni_afile_commit(af);
        } else {
            mni_afile_abort(af);
        }
    }
    cJSON_free(text);
    mni_free(nbytes);
    return st;
}

/* ---- reader --------------------------------------------------------------------------------- */

struct entry {
    struct mni_st_info info; // what callers see
    uint64_t begin, end;     // data_offsets, relative to the data section
};

struct mni_st_file {
    FILE *fp;
    char *path;
    uint64_t data_start;     // file offset of the data section: 8 + header length
    uint64_t data_len;       // its length: file size - data_start
    cJSON *root;             // the parsed header; names and metadata strings point into it
    const cJSON *meta;       // the "__metadata__" object, or NULL
    size_t n_meta;
    struct entry *ent;       // (n) in header order
    struct entry **by_name;  // (n) sorted by name, for mni_st_find
    size_t n;
};

/* MNEMO_ERR_FORMAT with "<path>: " in front of the message. */
static enum mnemo_status bad(const char *path, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static enum mnemo_status bad(const char *path, const char *fmt, ...)
{
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return mni_err(MNEMO_ERR_FORMAT, "%s: %s", path, msg);
}

/* An exact non-negative integer of at most 2^53 (beyond that a double is not exact) -> *v. */
static int get_uint(const cJSON *it, uint64_t *v)
{
    if (!cJSON_IsNumber(it)) return 0;
    double d = it->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0)) return 0; // also rejects NaN
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return 0; // fractional
    *v = u;
    return 1;
}

/* Number of children of a cJSON array/object, without cJSON_GetArraySize's int. */
static size_t n_children(const cJSON *it)
{
    size_t k = 0;
    for (const cJSON *c = it->child; c; c = c->next) k++;
    return k;
}

/* Validates the "__metadata__" object. */
static enum mnemo_status check_meta(const char *path, const cJSON *meta, size_t *n_meta)
{
    if (!cJSON_IsObject(meta)) return bad(path, "\"__metadata__\" is not a JSON object");
    size_t k = n_children(meta);
    const char **keys = mni_malloc(mni_mul(k ? k : 1, sizeof(*keys)));
    if (!keys) return mni_err(MNEMO_ERR_NOMEM, "%s: out of memory", path);
    size_t i = 0;
    for (const cJSON *c = meta->child; c; c = c->next) {
        if (!cJSON_IsString(c) || !c->valuestring) {
            enum mnemo_status st = bad(path, "metadata value for key '%s' is not a string",
                                       c->string ? c->string : "");
            mni_free(keys);
            return st;
        }
        keys[i++] = c->string ? c->string : "";
    }
    const char *dup = first_dup(keys, k);
    enum mnemo_status st = MNEMO_OK;
    if (dup) st = bad(path, "metadata key '%s' appears twice", dup);
    mni_free(keys);
    *n_meta = k;
    return st;
}

/* Validates one tensor entry of the header and fills e. data_len bounds the offsets. */
static enum mnemo_status parse_entry(const char *path, const cJSON *it, uint64_t data_len,
                                     struct entry *e)
{
    const char *nm = it->string;
    if (!nm || !*nm) return bad(path, "a tensor has an empty name");
    if (!cJSON_IsObject(it)) return bad(path, "entry for tensor '%s' is not a JSON object", nm);

    // Find the three fields; a field given twice is ambiguous and rejected.
    const cJSON *dt = NULL, *sh = NULL, *off = NULL;
    for (const cJSON *c = it->child; c; c = c->next) {
        const cJSON **slot = NULL;
        if (!c->string) continue;
        if (strcmp(c->string, "dtype") == 0) slot = &dt;
        if (strcmp(c->string, "shape") == 0) slot = &sh;
        if (strcmp(c->string, "data_offsets") == 0) slot = &off;
        if (!slot) continue; // unknown fields are ignored, as by the reference implementation
        if (*slot) return bad(path, "tensor '%s' has \"%s\" twice", nm, c->string);
        *slot = c;
    }
    if (!dt) return bad(path, "tensor '%s' has no \"dtype\"", nm);
    if (!sh) return bad(path, "tensor '%s' has no \"shape\"", nm);
    if (!off) return bad(path, "tensor '%s' has no \"data_offsets\"", nm);

    e->info.name = nm;
    if (!cJSON_IsString(dt) || !dt->valuestring)
        return bad(path, "tensor '%s': \"dtype\" is not a string", nm);
    int found = -1;
    for (int k = 0; k < MNI_ST_DTYPE_COUNT; k++)
        if (strcmp(dt->valuestring, dtypes[k].name) == 0) found = k;
    if (found < 0) return bad(path, "tensor '%s' has unknown dtype '%.32s'", nm, dt->valuestring);
    e->info.dtype = (enum mni_st_dtype)found;

    if (!cJSON_IsArray(sh)) return bad(path, "tensor '%s': \"shape\" is not an array", nm);
    size_t nd = n_children(sh);
    if (nd > MNI_ST_MAX_DIM)
        return bad(path, "tensor '%s' has %zu dimensions, at most %d supported", nm, nd,
                   MNI_ST_MAX_DIM);
    e->info.ndim = (int)nd;
    // Elements: the product of the non-zero dims must not overflow even when another dim is
    // 0, so that no caller recomputing the product from the shape can overflow either.
    size_t prod = 1;
    int any_zero = 0, d = 0;
    for (const cJSON *c = sh->child; c; c = c->next, d++) {
        uint64_t v;
        if (!get_uint(c, &v))
            return bad(path, "tensor '%s': dimension %d is not an integer in [0, 2^53]", nm, d);
        e->info.shape[d] = (size_t)v;
        if (v == 0) any_zero = 1;
        else prod = mni_mul(prod, (size_t)v);
        if (prod == SIZE_MAX) return bad(path, "tensor '%s': shape is too large", nm);
    }
    size_t nbytes = mni_mul(any_zero ? 0 : prod, dtypes[found].size);
    if (nbytes == SIZE_MAX) return bad(path, "tensor '%s': shape is too large", nm);
    e->info.nbytes = nbytes;

    uint64_t b, en;
    if (!cJSON_IsArray(off) || n_children(off) != 2 || !get_uint(off->child, &b) ||
        !get_uint(off->child->next, &en))
        return bad(path, "tensor '%s': \"data_offsets\" is not [begin, end] of integers", nm);
    if (b > en) return bad(path, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] are "
                                 "reversed", nm, b, en);
    if (en > data_len)
        return bad(path, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] lie outside the "
                         "data section of %" PRIu64 " bytes", nm, b, en, data_len);
    if (en - b != nbytes) {
        char s[256];
        return bad(path, "tensor '%s': data_offsets [%" PRIu64 ", %" PRIu64 "] hold %" PRIu64
                         " bytes but %s shape %s needs %zu", nm, b, en, en - b,
                   dtypes[found].name, shape_str(s, sizeof(s), e->info.ndim, e->info.shape),
                   nbytes);
    }
    e->begin = b;
    e->end = en;
    return MNEMO_OK;
}

static int cmp_by_offset(const void *pa, const void *pb)
{
    const struct entry *a = *(const struct entry *const *)pa, *b = *(const struct entry *const *)pb;
    if (a->begin != b->begin) return a->begin < b->begin ? -1 : 1;
    if (a->end != b->end) return a->end < b->end ? -1 : 1; // empty tensors first
    return 0;
}

static int cmp_by_name(const void *pa, const void *pb)
{
    const struct entry *a = *(const struct entry *const *)pa, *b = *(const struct entry *const *)pb;
    return strcmp(a->info.name, b->info.name);
}

/* The tensors must cover [0, data_len) exactly once, as in the safetensors spec: no overlap
 * (two tensors sharing bytes), no gap, no trailing bytes. */
static enum mnemo_status check_tiling(const struct mni_st_file *f)
{
    struct entry **s = mni_malloc(mni_mul(f->n ? f->n : 1, sizeof(*s)));
    if (!s) return mni_err(MNEMO_ERR_NOMEM, "%s: out of memory", f->path);
    for (size_t i = 0; i < f->n; i++) s[i] = &f->ent[i];
    qsort(s, f->n, sizeof(*s), cmp_by_offset);
    enum mnemo_status st = MNEMO_OK;
    uint64_t at = 0; // end of the covered prefix
    for (size_t i = 0; st == MNEMO_OK && i < f->n; i++) {
        if (s[i]->begin < at) {
            st = bad(f->path, "tensors '%s' and '%s' overlap in the data section",
                     s[i - 1]->info.name, s[i]->info.name);
        } else if (s[i]->begin > at) {
            st = bad(f->path, "%" PRIu64 " bytes before tensor '%s' belong to no tensor",
                     s[i]->begin - at, s[i]->info.name);
        }
        at = s[i]->end;
    }
    if (st == MNEMO_OK && at != f->data_len)
        st = bad(f->path, "data section has %" PRIu64 " bytes but the tensors cover %" PRIu64,
                 f->data_len, at);
    mni_free(s);
    return st;
}

/* Reads the length prefix and the header bytes; parses the JSON into f->root. Order matters:
 * the length is bounded by the limit and the file size before anything is allocated, so a
 * hostile length cannot make us allocate more than the file (or 100 MB) holds; the bytes are
 * checked as UTF-8 before cJSON sees them; and the parse is bounded by the length (cJSON's
 * own nesting limit keeps its recursion shallow). */
static enum mnemo_status load_header(struct mni_st_file *f, uint64_t file_size)
{
    const char *path = f->path;
    if (file_size < 8)
        return bad(path, "file is %" PRIu64 " bytes, too short for a safetensors header",
                   file_size);
    unsigned char lb[8];
    if (fread(lb, 1, 8, f->fp) != 8) {
        char eb[128];
        if (strerror_r(errno, eb, sizeof(eb)) != 0) snprintf(eb, sizeof(eb), "short read");
        return mni_err(MNEMO_ERR_IO, "cannot read %s: %s", path, eb);
    }
    uint64_t hn = 0;
    for (int b = 7; b >= 0; b--) hn = (hn << 8) | lb[b];
    // hn > file_size - 8 cannot underflow: file_size >= 8 here.
    if (hn == 0) return bad(path, "header length is 0");
    if (hn > MNI_ST_MAX_HEADER)
        return bad(path, "header length %" PRIu64 " exceeds the %zu-byte limit", hn,
                   MNI_ST_MAX_HEADER);
    if (hn > file_size - 8)
        return bad(path, "header length %" PRIu64 " exceeds the %" PRIu64 " bytes after the "
                         "length field (truncated file?)", hn, file_size - 8);
    f->data_start = 8 + hn;
    f->data_len = file_size - f->data_start;

    size_t n = (size_t)hn;
    char *buf = mni_malloc(n + 1); // NUL-terminated as a safety net for the JSON parser
    if (!buf) return mni_err(MNEMO_ERR_NOMEM, "%s: cannot allocate %zu bytes for header", path, n);
    if (fread(buf, 1, n, f->fp) != n) {
        mni_free(buf);
        return mni_err(MNEMO_ERR_IO, "cannot read %s: header cut short (file changed?)", path);
    }
    buf[n] = '\0';
    enum mnemo_status st = MNEMO_OK;
    size_t badpos = utf8_bad_at((const unsigned char *)buf, n, 1);
    const char *end = NULL;
    if (badpos != n) {
        st = bad(path, "header byte %zu (0x%02x) is not valid UTF-8 JSON text", badpos,
                 (unsigned char)buf[badpos]);
    } else if (!(f->root = parse_json(buf, n, &end))) {
        size_t pos = end && end >= buf && end <= buf + n ? (size_t)(end - buf) : 0;
        if (cjson_oom)
            st = mni_err(MNEMO_ERR_NOMEM, "%s: out of memory parsing the %zu-byte header", path,
                         n);
        else
            st = bad(path, "header is not valid JSON (error near byte %zu)", pos);
    } else if (!cJSON_IsObject(f->root)) {
        st = bad(path, "header is not a JSON object");
    } else {
        // Only whitespace (the writer's space padding) may follow the object.
        for (const char *p = end; p < buf + n; p++) {
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
                st = bad(path, "header has data after the JSON object (byte %zu)",
                         (size_t)(p - buf));
                break;
            }
        }
    }
    mni_free(buf);
    return st;
}

/* Validates the parsed header into f->ent / f->by_name: metadata, then every entry on its
 * own (parse_entry), then the relations between entries (unique names, exact tiling). */
static enum mnemo_status index_header(struct mni_st_file *f)
{
    const char *path = f->path;
    size_t n = 0;
    for (const cJSON *c = f->root->child; c; c = c->next) {
        if (c->string && strcmp(c->string, "__metadata__") == 0) {
            if (f->meta) return bad(path, "\"__metadata__\" appears twice");
            f->meta = c;
        } else {
            n++;
        }
    }
    if (f->meta) {
        enum mnemo_status st = check_meta(path, f->meta, &f->n_meta);
        if (st != MNEMO_OK) return st;
    }
    f->ent = mni_alloc(mni_mul(n ? n : 1, sizeof(*f->ent)));
    f->by_name = mni_alloc(mni_mul(n ? n : 1, sizeof(*f->by_name)));
    if (!f->ent || !f->by_name) return mni_err(MNEMO_ERR_NOMEM, "%s: out of memory", path);
    size_t i = 0;
    for (const cJSON *c = f->root->child; c; c = c->next) {
        if (c == f->meta) continue;
        enum mnemo_status st = parse_entry(path, c, f->data_len, &f->ent[i]);
        if (st != MNEMO_OK) return st;
        i++;
    }
    f->n = n;

    // Names first: a duplicated entry would otherwise be reported as an overlap.
    for (i = 0; i < n; i++) f->by_name[i] = &f->ent[i];
    qsort(f->by_name, n, sizeof(*f->by_name), cmp_by_name);
    for (i = 1; i < n; i++)
        if (strcmp(f->by_name[i - 1]->info.name, f->by_name[i]->info.name) == 0)
            return bad(path, "tensor '%s' appears twice", f->by_name[i]->info.name);
    return check_tiling(f);
}

enum mnemo_status mni_st_open(struct mni_st_file **out, const char *path)
{
    *out = NULL;
    if (!path || !*path) return mni_err(MNEMO_ERR_ARG, "mni_st_open: empty path");
    cjson_hooks();
    struct mni_st_file *f = mni_alloc(sizeof(*f));
    size_t plen = strlen(path) + 1;
    if (f) f->path = mni_malloc(plen);
    if (!f || !f->path) {
        mni_free(f);
        return mni_err(MNEMO_ERR_NOMEM, "%s: out of memory", path);
    }
    memcpy(f->path, path, plen);

    // A FIFO or a device is refused at once: a plain fopen() of a FIFO blocks until a writer
    // comes, which may be never.
    uint64_t size = 0;
    enum mnemo_status st = mni_fopen_regular(&f->fp, path, "checkpoint", &size);
    if (st == MNEMO_OK) st = load_header(f, size);
    if (st == MNEMO_OK) st = index_header(f);
    if (st != MNEMO_OK) {
        mni_st_close(f);
        return st;
    }
    *out = f;
    return MNEMO_OK;
}

void mni_st_close(struct mni_st_file *f)
{
    if (!f) return;
    if (f->fp) fclose(f->fp);
    cJSON_Delete(f->root);
    mni_free(f->ent);
    mni_free(f->by_name);
    mni_free(f->path);
    mni_free(f);
}

const char *mni_st_meta(const struct mni_st_file *f, const char *key)
{
    if (!f->meta || !key) return NULL;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f->meta, key);
    return v ? v->valuestring : NULL; // all values were checked to be strings
}

size_t mni_st_meta_count(const struct mni_st_file *f) { return f->n_meta; }

void mni_st_meta_at(const struct mni_st_file *f, size_t i, const char **key, const char **value)
{
    *key = *value = NULL;
    if (i >= f->n_meta) return;
    const cJSON *c = f->meta->child;
    while (i--) c = c->next;
    *key = c->string;
    *value = c->valuestring;
}

size_t mni_st_count(const struct mni_st_file *f) { return f->n; }

const struct mni_st_info *mni_st_info_at(const struct mni_st_file *f, size_t i)
{
    return i < f->n ? &f->ent[i].info : NULL;
}

static struct entry *find(const struct mni_st_file *f, const char *name)
{
    struct entry key = {.info = {.name = name}}, *kp = &key;
    struct entry **hit = bsearch(&kp, f->by_name, f->n, sizeof(*f->by_name), cmp_by_name);
    return hit ? *hit : NULL;
}

const struct mni_st_info *mni_st_find(const struct mni_st_file *f, const char *name)
{
    struct entry *e = name ? find(f, name) : NULL;
    return e ? &e->info : NULL;
}

/* The entry called name if its dtype and shape are the expected ones; else NULL, with the
 * error recorded in *st. */
static struct entry *checked(const struct mni_st_file *f, const char *name,
                             enum mni_st_dtype dtype, int ndim, const size_t *shape,
                             enum mnemo_status *st)
{
    *st = MNEMO_OK;
    if (!name || !dtype_ok(dtype) || ndim < 0 || ndim > MNI_ST_MAX_DIM || (ndim && !shape)) {
        *st = mni_err(MNEMO_ERR_ARG, "mni_st_read %s: invalid arguments", f->path);
        return NULL;
    }
    struct entry *e = find(f, name);
    if (!e) {
        *st = mni_err(MNEMO_ERR_FORMAT, "checkpoint %s has no tensor '%s'", f->path, name);
        return NULL;
    }
    if (e->info.dtype != dtype) {
        *st = mni_err(MNEMO_ERR_FORMAT, "checkpoint tensor '%s' has dtype %s, expected %s (in %s)",
                      name, dtypes[e->info.dtype].name, dtypes[dtype].name, f->path);
        return NULL;
    }
    int same = e->info.ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = e->info.shape[d] == shape[d];
    if (!same) {
        char got[200], want[200];
        *st = mni_err(MNEMO_ERR_FORMAT, "checkpoint tensor '%s' has shape %s, expected %s (in %s)",
                      name, shape_str(got, sizeof(got), e->info.ndim, e->info.shape),
                      shape_str(want, sizeof(want), ndim, shape), f->path);
        return NULL;
    }
    return e;
}

enum mnemo_status mni_st_check(const struct mni_st_file *f, const char *name,
                               enum mni_st_dtype dtype, int ndim, const size_t *shape)
{
    enum mnemo_status st;
    checked(f, name, dtype, ndim, shape, &st);
    return st;
}

enum mnemo_status mni_st_read(struct mni_st_file *f, const char *name, enum mni_st_dtype dtype,
                              int ndim, const size_t *shape, void *dst)
{
    enum mnemo_status st;
    struct entry *e = checked(f, name, dtype, ndim, shape, &st);
    if (!e) return st;
    if (e->info.nbytes == 0) return MNEMO_OK;
    if (!dst) return mni_err(MNEMO_ERR_ARG, "mni_st_read %s: NULL destination", f->path);
    // Offsets were checked against the file size at open; a short read means it shrank since.
    errno = 0;
    if (fseeko(f->fp, (off_t)(f->data_start + e->begin), SEEK_SET) != 0 ||
        fread(dst, 1, e->info.nbytes, f->fp) != e->info.nbytes) {
        int e2 = errno;
        char eb[128];
        if (!e2 || strerror_r(e2, eb, sizeof(eb)) != 0)
            snprintf(eb, sizeof(eb), "unexpected end of file (changed while open?)");
        clearerr(f->fp);
        return mni_err(MNEMO_ERR_IO, "cannot read tensor '%s' from %s: %s", name, f->path, eb);
    }
    return MNEMO_OK;
}
