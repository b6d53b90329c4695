/* testutil.c -- see testutil.h. */
#define _XOPEN_SOURCE 700 /* nftw */
#include "testutil.h"

#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tu_fill_normal(float *x, size_t n, float scale, uint64_t seed)
{
    struct mni_rng r;
    mni_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = scale * mni_rng_normal(&r);
}

void tu_fill_uniform(float *x, size_t n, float lo, float hi, uint64_t seed)
{
    struct mni_rng r;
    mni_rng_seed(&r, seed);
    for (size_t i = 0; i < n; i++) x[i] = lo + (hi - lo) * mni_rng_uniform(&r);
}

int tu_close(const char *label, const float *got, const float *want, size_t n, float atol,
             float rtol)
{
    size_t bad = 0, worst = 0;
    double maxd = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= atol + rtol * fabs((double)want[i]))) bad++; /* NaN counts as bad */
        if (d > maxd || d != d) {
            maxd = d;
            worst = i;
        }
    }
    if (bad) {
        printf("%s: %zu of %zu values differ; max |diff| %.3g at %zu (got %.8g want %.8g)\n",
               label, bad, n, maxd, worst, got[worst], want[worst]);
        for (size_t i = 0; i < n && i < 5; i++) printf("  [%zu] got %.8g want %.8g\n", i, got[i], want[i]);
    }
    return bad == 0;
}

double tu_rel_max_err(const float *got, const float *want, size_t n)
{
    double maxd = 0, maxw = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > maxd || d != d) maxd = d;
        if (fabs(want[i]) > maxw) maxw = fabs(want[i]);
    }
    return maxd / (maxw > 1e-30 ? maxw : 1e-30);
}

/* The test's files live in one fresh directory under $TMPDIR (or /tmp), removed at exit unless
 * MNEMO_KEEP_TEST_FILES is set (to look at them after a failure). */
static char tu_base[600];

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static void tu_cleanup(void)
{
    if (getenv("MNEMO_KEEP_TEST_FILES")) {
        fprintf(stderr, "test files kept in %s\n", tu_base);
        return;
    }
    nftw(tu_base, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *tu_tmp_path(const char *name)
{
    static char buf[4][700];
    static int k;
    if (!tu_base[0]) {
        const char *t = getenv("TMPDIR");
        snprintf(tu_base, sizeof(tu_base), "%s/mnemo_test_XXXXXX", t && *t ? t : "/tmp");
        if (!mkdtemp(tu_base)) {
            perror("mnemo tests: mkdtemp");
            abort();
        }
        atexit(tu_cleanup);
    }
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s/%s", tu_base, name);
    return buf[k];
}

struct mnemo_model *tu_model(int L, int C, int NH, int T, int V, int pos, uint64_t seed)
{
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = L;
    c.d_model = C;
    c.n_head = NH;
    c.n_ctx = T;
    c.vocab = V;
    c.pos = pos;
    struct mnemo_model *m;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_OK);
    mnemo_model_init(m, seed);
    return m;
}

void tu_attn_bufs_init(struct tu_attn_bufs *b, const struct mnemo_attn_ops *ops,
                       const struct mnemo_attn_cfg *cfg, int B, int T)
{
    b->B = B, b->T = T;
    b->nout = (size_t)B * T * cfg->n_head * cfg->head_dim;
    b->nqkv = 3 * b->nout;
    b->qkv = mni_alloc(b->nqkv * sizeof(float));
    b->dqkv = mni_alloc(b->nqkv * sizeof(float));
    b->out = mni_alloc(b->nout * sizeof(float));
    b->dout = mni_alloc(b->nout * sizeof(float));
    b->act = mni_alloc(ops->act_bytes(cfg, B, T));
    b->scratch = mni_alloc(ops->scratch_bytes(cfg, B, T));
    assert_true(b->qkv && b->dqkv && b->out && b->dout && b->act && b->scratch);
    b->ncarry = ops->carry_bytes ? (size_t)B * ops->carry_bytes(cfg) : 0;
    b->carry = NULL;
    b->carry_out = b->ncarry ? mni_alloc(b->ncarry) : NULL;
    assert_true(!b->ncarry || b->carry_out);
}

void tu_attn_bufs_free(struct tu_attn_bufs *b)
{
    mni_free(b->qkv), mni_free(b->dqkv), mni_free(b->out), mni_free(b->dout);
    mni_free(b->act), mni_free(b->scratch), mni_free(b->carry_out);
}

struct mnemo_attn_io tu_attn_io(struct tu_attn_bufs *b)
{
    struct mnemo_attn_io io;
    memset(&io, 0, sizeof(io));
    io.B = b->B, io.T = b->T;
    io.qkv = b->qkv, io.out = b->out, io.dout = b->dout, io.dqkv = b->dqkv;
    io.act = b->act, io.scratch = b->scratch;
    io.carry = b->carry, io.carry_out = b->carry_out;
    return io;
}

struct mnemo_attn_cfg tu_attn_cfg(int kind, int NH, int HS, int n_ctx, int rope)
{
    struct mnemo_attn_cfg c;
    memset(&c, 0, sizeof(c));
    c.kind = kind;
    c.n_head = NH;
    c.head_dim = HS;
    c.n_ctx = n_ctx;
    c.rope = rope;
    c.rope_theta = 10000.0f;
    c.n_layer = 1;
    c.causal = 1;
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(kind);
    for (int i = 0; ops && i < ops->n_opts; i++) c.opt[i] = ops->opts[i].def;
    return c;
}

void tu_attn_model_config(struct mnemo_model_config *mc, int kind, int NH, int HS, int n_ctx,
                          int rope, int n_layer)
{
    mnemo_model_config_default(mc);
    mc->attn_kind = kind;
    mc->n_head = NH;
    mc->d_model = NH * HS;
    mc->n_ctx = n_ctx;
    mc->n_layer = n_layer;
    mc->pos = rope ? MNEMO_POS_ROPE : MNEMO_POS_LEARNED;
    mc->rope_theta = 10000.0f;
}

enum mnemo_status tu_attn_step(const struct mnemo_attn_ops *ops, const struct mnemo_attn_cfg *cfg,
                               void *state, const float *const *params, float *out,
                               const float *qkv, int n, void *scratch)
{
    struct mnemo_attn_step st;
    memset(&st, 0, sizeof(st));
    st.n = n;
    st.layer = 0;
    st.state = state;
    st.params = params;
    st.qkv = qkv;
    st.out = out;
    st.scratch = scratch;
    return ops->step(cfg, &st);
}

unsigned char *tu_read_file(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *buf = len >= 0 ? malloc((size_t)len + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
        free(buf);
        buf = NULL;
    }
    fclose(fp);
    *n = len >= 0 ? (size_t)len : 0;
    if (buf) buf[*n] = 0; /* text can be searched in place */
    return buf;
}
