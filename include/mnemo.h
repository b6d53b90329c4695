/*
 * mnemo.h -- the public API of mnemo: train, evaluate and stream decoder-only transformer
 * language models whose attention is a pluggable part.
 *
 * Conventions (see docs/api.md):
 *  - Every fallible call returns an enum mnemo_status; MNEMO_OK is 0. The detail message of the
 *    last failure on the calling thread is mnemo_last_error(). The library never prints and
 *    never exits.
 *  - Handles are opaque and freed by the matching *_free(), which accepts NULL.
 *  - Config structs are plain data, filled with defaults by *_default() and then edited.
 *  - Enum values are append-only; retired values stay reserved.
 */
#ifndef MNEMO_H
#define MNEMO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MNEMO_BUILD) && defined(__GNUC__)
#define MNEMO_API __attribute__((visibility("default")))
#else
#define MNEMO_API
#endif

#define MNEMO_VERSION_MAJOR 0
#define MNEMO_VERSION_MINOR 1
#define MNEMO_VERSION_PATCH 0
#define MNEMO_VERSION_NUM (MNEMO_VERSION_MAJOR * 10000 + MNEMO_VERSION_MINOR * 100 + MNEMO_VERSION_PATCH)

MNEMO_API int mnemo_version_num(void);

enum mnemo_status {
    MNEMO_OK = 0,
    MNEMO_ERR_NOMEM = -1,       /* an allocation failed */
    MNEMO_ERR_IO = -2,          /* a file could not be opened, read or written */
    MNEMO_ERR_FORMAT = -3,      /* a file is not what it claims to be (corrupt, truncated) */
    MNEMO_ERR_ARG = -4,         /* an impossible argument or configuration value */
    MNEMO_ERR_NUMERIC = -5,     /* NaN or infinity where a finite value was needed */
    MNEMO_ERR_UNSUPPORTED = -6, /* valid, but not implemented for this attention kind/build */
    MNEMO_ERR_FULL = -7,        /* a bounded buffer (e.g. a session's context) is full */
};

MNEMO_API const char *mnemo_status_str(enum mnemo_status st);
/* The message of the last failure on this thread ("" if none). Valid until the next failure. */
MNEMO_API const char *mnemo_last_error(void);

/* ---- model configuration ---------------------------------------------------------------- */

enum mnemo_pos {
    MNEMO_POS_ROPE = 0,    /* rotary embeddings, applied by the attention kind */
    MNEMO_POS_LEARNED = 1, /* learned absolute embeddings added to the token embeddings */
    MNEMO_POS_COUNT
};

enum mnemo_attn_kind {
    MNEMO_ATTN_KIND_DENSE = 0, /* causal softmax attention, tiled with online softmax */
    MNEMO_ATTN_KIND_COUNT
};

struct mnemo_model_config {
    int n_layer;       /* number of transformer blocks */
    int d_model;       /* residual width C */
    int n_head;        /* attention heads; d_model % n_head == 0 */
    int n_ctx;         /* longest training window T (and the learned-position table size) */
    int vocab;         /* real vocabulary size V (257 for the byte tokenizer) */
    int vocab_padded;  /* V rounded up for alignment; 0 = choose (multiple of 16) */
    int pos;           /* enum mnemo_pos */
    float rope_theta;  /* RoPE base, 10000 */
    int attn_kind;     /* enum mnemo_attn_kind */
};

MNEMO_API void mnemo_model_config_default(struct mnemo_model_config *cfg);
/* MNEMO_ERR_ARG with a message naming the first bad field. */
MNEMO_API enum mnemo_status mnemo_model_config_check(const struct mnemo_model_config *cfg);
MNEMO_API const char *mnemo_attn_kind_name(int kind);   /* NULL if out of range */
MNEMO_API int mnemo_attn_kind_from_name(const char *name); /* -1 if unknown */

#ifdef __cplusplus
}
#endif
#endif /* MNEMO_H */
