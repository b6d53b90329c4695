/*
 * data.c -- token files (read, validated; written atomically) and the shuffled window loader.
 * See data.h for the formats.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "fileio.h"
#include "mni.h"

static const char TOK_MAGIC[8] = {'M', 'N', 'E', 'M', 'O', 'T', 'O', 'K'};
#define TOK_HEADER 32

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static uint64_t get_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

enum mnemo_status mni_tokens_write(const char *path, const uint16_t *tok, uint64_t n, int vocab)
{
    unsigned char h[TOK_HEADER] = {0};
    memcpy(h, TOK_MAGIC, 8);
    put_u32(h + 8, 1);
    put_u32(h + 12, 2);
    put_u32(h + 16, (uint32_t)vocab);
    put_u64(h + 24, n);
    struct mni_afile *f;
    enum mnemo_status st = mni_afile_open(&f, path);
    if (st != MNEMO_OK) return st;
    st = mni_afile_write(f, h, sizeof(h));
    /* tokens are stored little-endian; this build assumes a little-endian host (checked) */
    const uint16_t one = 1;
    MNEMO_ASSERT(*(const unsigned char *)&one == 1);
    if (st == MNEMO_OK) st = mni_afile_write(f, tok, (size_t)n * sizeof(uint16_t));
    if (st != MNEMO_OK) {
        mni_afile_abort(f);
        return st;
    }
    return mni_afile_commit(f);
}

enum mnemo_status mni_tokens_read(struct mni_tokens *out, const char *path)
{
    memset(out, 0, sizeof(*out));
    FILE *f; /* a FIFO or device is refused at once, never waited on */
    enum mnemo_status st = mni_fopen_regular(&f, path, "token file", NULL);
    if (st != MNEMO_OK) return st;
    unsigned char h[TOK_HEADER];
    if (fread(h, 1, sizeof(h), f) != sizeof(h)) {
        st = mni_err(MNEMO_ERR_FORMAT, "'%s' is not a mnemo token file (shorter than its %d-byte header)",
                     path, TOK_HEADER);
        goto out;
    }
    if (memcmp(h, TOK_MAGIC, 8) != 0) {
        st = mni_err(MNEMO_ERR_FORMAT, "'%s' is not a mnemo token file (bad magic; make one with 'mnemo prepare')",
                     path);
        goto out;
    }
    uint32_t ver = get_u32(h + 8), width = get_u32(h + 12), vocab = get_u32(h + 16);
    uint64_t n = get_u64(h + 24);
    if (ver != 1 || width != 2) {
        st = mni_err(MNEMO_ERR_FORMAT, "'%s': unsupported token file version %u / width %u", path,
                     ver, width);
        goto out;
    }
    if (vocab < 2 || vocab > 65536) {
        st = mni_err(MNEMO_ERR_FORMAT, "'%s': vocabulary size %u out of range", path, vocab);
        goto out;
    }
    if (fseek(f, 0, SEEK_END) != 0) {
        st = mni_err(MNEMO_ERR_IO, "cannot seek in '%s': %s", path, strerror(errno));
        goto out;
    }
    long size = ftell(f);
    if (size < 0 || (uint64_t)size != TOK_HEADER + n * 2 || n > (UINT64_MAX - TOK_HEADER) / 2) {
        st = mni_err(MNEMO_ERR_FORMAT, "'%s' is truncated or corrupt: header says %llu tokens, file has %ld bytes",
                     path, (unsigned long long)n, size);
        goto out;
    }
    if (n == 0) {
        st = mni_err(MNEMO_ERR_FORMAT, "'%s' holds no tokens", path);
        goto out;
    }
    out->tok = mni_alloc(mni_mul((size_t)n, sizeof(uint16_t)));
    if (!out->tok) {
        st = mni_err(MNEMO_ERR_NOMEM, "out of memory reading %llu tokens from '%s'",
                     (unsigned long long)n, path);
        goto out;
    }
    if (fseek(f, TOK_HEADER, SEEK_SET) != 0 || fread(out->tok, 2, (size_t)n, f) != (size_t)n) {
        st = mni_err(MNEMO_ERR_IO, "cannot read tokens from '%s'", path);
        goto out;
    }
    for (uint64_t i = 0; i < n; i++)
        if (out->tok[i] >= vocab) {
            st = mni_err(MNEMO_ERR_FORMAT, "'%s': token %llu has id %u, outside the vocabulary [0, %u)",
                         path, (unsigned long long)i, out->tok[i], vocab);
            goto out;
        }
    out->n = n;
    out->vocab = (int)vocab;
out:
    fclose(f);
    if (st != MNEMO_OK) mni_tokens_free(out);
    return st;
}

enum mnemo_status mni_tokens_read_for(struct mni_tokens *out, const char *path, int vocab)
{
    enum mnemo_status st = mni_tokens_read(out, path);
    if (st != MNEMO_OK || out->vocab <= vocab) return st;
    st = mni_err(MNEMO_ERR_ARG, "'%s' has vocabulary %d, larger than the model's %d", path,
                 out->vocab, vocab);
    mni_tokens_free(out);
    return st;
}

void mni_tokens_free(struct mni_tokens *t)
{
    mni_free(t->tok);
    memset(t, 0, sizeof(*t));
}

/* ---- the loader ------------------------------------------------------------------------------ */

static enum mnemo_status build_epoch(struct mni_loader *ld)
{
    struct mni_rng rng;
    mni_rng_seed(&rng, ld->seed * 0x9e3779b97f4a7c15ULL + ld->pos.epoch + 1);
    uint64_t n_win;
    if (ld->lanes) { /* runs of whole windows, one per lane of every rank; no order to shuffle */
        const uint64_t lanes = (uint64_t)ld->lanes * (uint64_t)ld->world;
        ld->offset = mni_rng_below(&rng, (uint64_t)ld->T);
        if ((ld->n - ld->offset) / (lanes * (uint64_t)ld->T) == 0) ld->offset = 0; /* init made sure of one there */
        ld->run = (ld->n - ld->offset) / (lanes * (uint64_t)ld->T);
        ld->n_order = ld->run * lanes;
        return MNEMO_OK;
    }
    if (ld->starts) {
        ld->offset = 0;
        n_win = ld->n_starts;
    } else {
        ld->offset = mni_rng_below(&rng, (uint64_t)ld->T);
        n_win = (ld->n - ld->offset) / (uint64_t)ld->T;
        /* fewer windows than ranks past the offset (none, with one rank): fall back to offset
         * 0, where init made sure of one window per rank */
        if (n_win < (uint64_t)ld->world) {
            ld->offset = 0;
            n_win = ld->n / (uint64_t)ld->T;
        }
    }
    /* one order for the whole group: every rank shuffles the same way and takes its slices */
    if (n_win < (uint64_t)ld->world) return mni_err(MNEMO_ERR_ARG, "too few tokens for one window per rank");
    if (n_win > ld->cap_order) {
        mni_free(ld->order);
        ld->order = mni_alloc(mni_mul((size_t)n_win, sizeof(uint32_t)));
        if (!ld->order) return mni_err(MNEMO_ERR_NOMEM, "out of memory for the window order");
        ld->cap_order = n_win;
    }
    for (uint64_t i = 0; i < n_win; i++) ld->order[i] = (uint32_t)i;
    for (uint64_t i = n_win - 1; i > 0; i--) { /* Fisher-Yates */
        uint64_t j = mni_rng_below(&rng, i + 1);
        uint32_t t = ld->order[i];
        ld->order[i] = ld->order[j];
        ld->order[j] = t;
    }
    ld->n_order = n_win;
    return MNEMO_OK;
}

/* The part of both inits that does not depend on the mode: a zeroed loader holding the stream
 * and its settings, or MNEMO_ERR_ARG. */
static enum mnemo_status loader_begin(struct mni_loader *ld, const uint16_t *tok, uint64_t n,
                                      int T, uint64_t seed, int rank, int world)
{
    memset(ld, 0, sizeof(*ld));
    if (T < 1 || world < 1 || rank < 0 || rank >= world)
        return mni_err(MNEMO_ERR_ARG, "loader: bad T = %d or rank %d of %d", T, rank, world);
    ld->tok = tok;
    ld->n = n;
    ld->T = T;
    ld->seed = seed;
    ld->rank = rank;
    ld->world = world;
    return MNEMO_OK;
}

enum mnemo_status mni_loader_init(struct mni_loader *ld, const uint16_t *tok, uint64_t n, int T,
                                  uint64_t seed, int rank, int world)
{
    enum mnemo_status st = loader_begin(ld, tok, n, T, seed, rank, world);
    if (st != MNEMO_OK) return st;
    if (n < (uint64_t)T * (uint64_t)world)
        return mni_err(MNEMO_ERR_ARG,
                       "the training data has %llu tokens, fewer than one window of %d per process",
                       (unsigned long long)n, T);
    if (n / (uint64_t)T > UINT32_MAX)
        return mni_err(MNEMO_ERR_ARG, "the training data is too large for the loader");
    /* room for the largest epoch (offset 0), so that later epochs never allocate */
    uint64_t cap = n / (uint64_t)T + 1;
    ld->order = mni_alloc(mni_mul((size_t)cap, sizeof(uint32_t)));
    if (!ld->order) return mni_err(MNEMO_ERR_NOMEM, "out of memory for the window order");
    ld->cap_order = cap;
    return build_epoch(ld);
}

enum mnemo_status mni_loader_init_lanes(struct mni_loader *ld, const uint16_t *tok, uint64_t n,
                                        int T, uint64_t seed, int rank, int world, int lanes)
{
    enum mnemo_status st = loader_begin(ld, tok, n, T, seed, rank, world);
    if (st != MNEMO_OK) return st;
    if (lanes < 1) return mni_err(MNEMO_ERR_ARG, "loader: %d lanes", lanes);
    if (n / (uint64_t)T < (uint64_t)lanes * (uint64_t)world)
        return mni_err(MNEMO_ERR_ARG, "the training data has %llu tokens, fewer than one window "
                       "of %d for each of the %d lanes%s", (unsigned long long)n, T,
                       lanes * world, world > 1 ? " of all processes" : "");
    ld->lanes = lanes;
    return build_epoch(ld);
}

int mni_loader_next_lanes(struct mni_loader *ld, uint16_t *x, uint16_t *y, int B, int *first)
{
    MNEMO_ASSERT(ld->lanes > 0 && ld->lanes % B == 0);
    if (ld->pos.index >= ld->n_order) {
        ld->pos.epoch++;
        ld->pos.index = 0;
        enum mnemo_status st = build_epoch(ld);
        MNEMO_ASSERT(st == MNEMO_OK); /* init checked the stream holds a window per lane */
    }
    /* pos.index counts the group's lanes: a step's micro-batch a is lanes a B world .. of the
     * group, this rank's B of them from a B world + rank B (as one process with batch B world) */
    const uint64_t group = (uint64_t)ld->lanes * (uint64_t)ld->world, BW = (uint64_t)B * ld->world;
    const uint64_t i = ld->pos.index / group, g0 = ld->pos.index % group; /* step in the run */
    const int lane = (int)(g0 / BW) * B;
    const int T = ld->T;
    for (int b = 0; b < B; b++) {
        const uint64_t run = g0 + (uint64_t)ld->rank * (uint64_t)B + (uint64_t)b;
        const uint64_t s = ld->offset + (run * ld->run + i) * (uint64_t)T;
        uint16_t *xb = x + (size_t)b * T, *yb = y + (size_t)b * T;
        if (i == 0) mni_window_at(ld->tok, s, T, xb, yb);
        else {
            memcpy(xb, ld->tok + s - 1, (size_t)T * sizeof(uint16_t));
            memcpy(yb, ld->tok + s, (size_t)T * sizeof(uint16_t));
        }
    }
    ld->pos.index += BW;
    *first = lane;
    return i == 0;
}

uint64_t mni_doc_starts(const uint16_t *tok, uint64_t n, int T, uint16_t sep, uint64_t *starts)
{
    uint64_t k = 0;
    for (uint64_t p = 0; p + (uint64_t)T <= n; p++)
        if (p == 0 || tok[p - 1] == sep) {
            if (starts) starts[k] = p;
            k++;
        }
    return k;
}

void mni_window_at(const uint16_t *tok, uint64_t s, int T, uint16_t *x, uint16_t *y)
{
    x[0] = MNI_TOK_BOS;
    memcpy(x + 1, tok + s, (size_t)(T - 1) * sizeof(uint16_t));
    memcpy(y, tok + s, (size_t)T * sizeof(uint16_t));
}

enum mnemo_status mni_loader_init_docs(struct mni_loader *ld, const uint16_t *tok, uint64_t n,
                                       int T, uint64_t seed, int rank, int world, uint16_t sep)
{
    enum mnemo_status st = loader_begin(ld, tok, n, T, seed, rank, world);
    if (st != MNEMO_OK) return st;
    const uint64_t count = mni_doc_starts(tok, n, T, sep, NULL);
    if (count < (uint64_t)world)
        return mni_err(MNEMO_ERR_ARG, "the training data has %llu document starts with %d tokens "
                       "after them (windows start after token %u), fewer than one per process",
                       (unsigned long long)count, T, (unsigned)sep);
    if (count > UINT32_MAX) return mni_err(MNEMO_ERR_ARG, "the training data has too many documents");
    ld->starts = mni_alloc(mni_mul((size_t)count, sizeof(uint64_t)));
    ld->order = mni_alloc(mni_mul((size_t)(count + 1), sizeof(uint32_t)));
    if (!ld->starts || !ld->order) {
        mni_loader_free(ld);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for the document starts");
    }
    mni_doc_starts(tok, n, T, sep, ld->starts);
    ld->n_starts = count;
    ld->cap_order = count + 1;
    return build_epoch(ld);
}

enum mnemo_status mni_loader_seek(struct mni_loader *ld, struct mni_loader_pos pos)
{
    ld->pos = pos;
    enum mnemo_status st = build_epoch(ld);
    if (st == MNEMO_OK && ld->lanes && pos.index % ((uint64_t)ld->lanes * (uint64_t)ld->world))
        st = mni_err(MNEMO_ERR_FORMAT, "saved data position %llu is not at a step of %d lanes",
                     (unsigned long long)pos.index, ld->lanes * ld->world);
    if (st == MNEMO_OK && pos.index > ld->n_order)
        st = mni_err(MNEMO_ERR_FORMAT, "saved data position %llu is past the end of epoch (%llu windows)",
                     (unsigned long long)pos.index, (unsigned long long)ld->n_order);
    return st;
}

void mni_loader_next(struct mni_loader *ld, uint16_t *x, uint16_t *y, int B)
{
    const int T = ld->T;
    /* the group takes B windows per rank, in rank order: this rank's are slots rank B .. */
    for (int slot = 0; slot < B * ld->world; slot++) {
        if (ld->pos.index >= ld->n_order) {
            ld->pos.epoch++;
            ld->pos.index = 0;
            enum mnemo_status st = build_epoch(ld);
            MNEMO_ASSERT(st == MNEMO_OK); /* capacity was reserved in init: cannot fail */
        }
        const uint32_t w = ld->order[ld->pos.index++];
        const int b = slot - ld->rank * B;
        if (b < 0 || b >= B) continue;
        uint64_t s = ld->starts ? ld->starts[w] : ld->offset + (uint64_t)w * (uint64_t)T;
        mni_window_at(ld->tok, s, T, x + (size_t)b * T, y + (size_t)b * T);
    }
}

void mni_loader_free(struct mni_loader *ld)
{
    mni_free(ld->order);
    mni_free(ld->starts);
    memset(ld, 0, sizeof(*ld));
}

uint64_t mni_eval_windows(uint64_t n, int T, int S)
{
    return n < (uint64_t)T ? 0 : 1 + (n - (uint64_t)T) / (uint64_t)S;
}

void mni_eval_window(const uint16_t *tok, uint64_t i, int T, int S, uint16_t *x, uint16_t *y)
{
    mni_window_at(tok, i * (uint64_t)S, T, x, y);
}
