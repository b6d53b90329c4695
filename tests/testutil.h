/*
 * testutil.h -- helpers shared by the C unit tests (cmocka): random fills and a tensor
 * comparison that prints the first values and the largest difference (llm.c check_tensor).
 */
#ifndef MNEMO_TESTUTIL_H
#define MNEMO_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mni.h"
#include "mnemo_attn.h"

void tu_fill_normal(float *x, size_t n, float scale, uint64_t seed);
void tu_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed);
/* Returns 1 if every |got-want| <= atol + rtol*|want|, else prints details and returns 0. */
int tu_close(const char *label, const float *got, const float *want, size_t n, float atol,
             float rtol);
/* Max |got-want| / max(1e-30, max |want|). */
double tu_rel_max_err(const float *got, const float *want, size_t n);
/* A model of the given shape (vocab V, positions pos), initialised from seed; fails the test
 * if it cannot be created. Caller frees with mnemo_model_free. */
struct mnemo_model *tu_model(int L, int C, int NH, int T, int V, int pos, uint64_t seed);
/* The whole file at path into a malloc'd buffer (caller frees with free) and its size in *n,
 * followed by a NUL not counted in *n; NULL if it cannot be read. Plain stdio, independent of
 * the library's own file reading. */
unsigned char *tu_read_file(const char *path, size_t *n);
/* Temporary file path inside the build tree (unique per process), caller frees nothing. */
const char *tu_tmp_path(const char *name);

/* All buffers of one attention problem (B windows of T tokens), sized through the kind's own
 * declarations (act_bytes, scratch_bytes). */
struct tu_attn_bufs {
    int B, T;
    size_t nqkv, nout;
    float *qkv, *out, *dout, *dqkv;
    void *act, *scratch;
    size_t ncarry;     /* B * carry_bytes (0: the kind carries nothing) */
    void *carry;       /* io.carry: NULL (fresh lanes) until a test points it at a state */
    void *carry_out;   /* io.carry_out: (ncarry bytes), NULL when ncarry is 0 */
};
void tu_attn_bufs_init(struct tu_attn_bufs *b, const struct mnemo_attn_ops *ops,
                       const struct mnemo_attn_cfg *cfg, int B, int T);
void tu_attn_bufs_free(struct tu_attn_bufs *b);
/* An io over b's buffers (params, dparams NULL; carry, carry_out as b holds them). */
struct mnemo_attn_io tu_attn_io(struct tu_attn_bufs *b);
/* A cfg of kind built by hand, not validated (tests of validate need impossible ones): the
 * shape, one layer, causal, RoPE base 10000, and every option at its table's default (a memset
 * cfg would hold 0 for options whose default is not 0). */
struct mnemo_attn_cfg tu_attn_cfg(int kind, int NH, int HS, int n_ctx, int rope);
/* A model config (mnemo_model_config_default otherwise) whose attention cfg has this shape, for
 * mnemo_attn_cfg_make. */
void tu_attn_model_config(struct mnemo_model_config *mc, int kind, int NH, int HS, int n_ctx,
                          int rope, int n_layer);
/* One ops->step() of n tokens (layer 0). */
enum mnemo_status tu_attn_step(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                               void *state, const float *const *params, float *out,
                               const float *qkv, int n, void *scratch);

#define TU_ASSERT_CLOSE(label, got, want, n, atol, rtol)                                        \
    assert_true(tu_close((label), (got), (want), (n), (atol), (rtol)))

#endif
