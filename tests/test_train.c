/*
 * test_train.c -- token files, the loader, and training: the loss falls on learnable data,
 * a resumed run equals an uninterrupted one bit for bit, bad files are refused cleanly.
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ckpt.h" /* mni_model_save_ex */
#include "data.h"
#include "fileio.h" /* mni_afile_fault_after */
#include "model.h"
#include "st.h"
#include "testutil.h"

static const char *make_dir(const char *name)
{
    const char *d = tu_tmp_path(name);
    mkdir(d, 0777);
    return d;
}

static void test_token_file(void **s)
{
    (void)s;
    const char *dir = make_dir("tok");
    const char *text = "In the beginning God created the heaven and the earth.\n";
    uint64_t nt, nv;
    assert_int_equal(mnemo_prepare_text((const unsigned char *)text, strlen(text), dir, 0.1, &nt, &nv), MNEMO_OK);
    assert_int_equal(nt + nv, strlen(text));
    assert_int_equal(nv, (uint64_t)ceil(strlen(text) * 0.1));
    char p[512];
    snprintf(p, sizeof(p), "%s/val.bin", dir);
    struct mni_tokens t;
    assert_int_equal(mni_tokens_read(&t, p), MNEMO_OK);
    assert_int_equal(t.n, nv);
    assert_int_equal(t.vocab, 257);
    for (uint64_t i = 0; i < nv; i++) assert_int_equal(t.tok[i], (unsigned char)text[nt + i]);
    mni_tokens_free(&t);
    /* empty input, bad fraction */
    assert_int_equal(mnemo_prepare_text((const unsigned char *)"", 0, dir, 0.05, NULL, NULL), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_prepare_text((const unsigned char *)text, 10, dir, 1.5, NULL, NULL), MNEMO_ERR_ARG);
    /* truncated, corrupted, empty, missing, out-of-range ids */
    FILE *f = fopen(p, "rb");
    unsigned char buf[256];
    size_t n = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    char q[512];
    snprintf(q, sizeof(q), "%s/bad.bin", dir);
    f = fopen(q, "wb");
    fwrite(buf, 1, n - 1, f);
    fclose(f);
    assert_int_equal(mni_tokens_read(&t, q), MNEMO_ERR_FORMAT);
    assert_non_null(strstr(mnemo_last_error(), "truncated"));
    f = fopen(q, "wb");
    fwrite(buf, 1, 10, f);
    fclose(f);
    assert_int_equal(mni_tokens_read(&t, q), MNEMO_ERR_FORMAT);
    f = fopen(q, "wb");
    fclose(f);
    assert_int_equal(mni_tokens_read(&t, q), MNEMO_ERR_FORMAT);
    buf[0] = 'X';
    f = fopen(q, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    assert_int_equal(mni_tokens_read(&t, q), MNEMO_ERR_FORMAT);
    buf[0] = 'M';
    buf[32] = 0xff; /* first token id 0x??ff -> too large? set high byte too */
    buf[33] = 0x7f;
    f = fopen(q, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);
    assert_int_equal(mni_tokens_read(&t, q), MNEMO_ERR_FORMAT);
    assert_non_null(strstr(mnemo_last_error(), "outside the vocabulary"));
    assert_int_equal(mni_tokens_read(&t, "/nonexistent/x.bin"), MNEMO_ERR_IO);
}

/* a has read some windows, b is a fresh loader of the same stream and settings: seeking b to
 * a's position gives the windows a reads next. Frees both. */
static void check_seek(struct mni_loader *a, struct mni_loader *b, int B)
{
    uint16_t x[256], y[256], x2[256], y2[256];
    const size_t n = (size_t)B * (size_t)a->T;
    assert_true(n <= 256);
    assert_int_equal(mni_loader_seek(b, a->pos), MNEMO_OK);
    mni_loader_next(a, x, y, B);
    mni_loader_next(b, x2, y2, B);
    assert_memory_equal(x, x2, n * sizeof(uint16_t));
    assert_memory_equal(y, y2, n * sizeof(uint16_t));
    mni_loader_free(a);
    mni_loader_free(b);
}

static void test_loader(void **s)
{
    (void)s;
    uint16_t tok[1000];
    for (int i = 0; i < 1000; i++) tok[i] = (uint16_t)(i % 256);
    struct mni_loader a, b;
    const int T = 16, B = 3;
    assert_int_equal(mni_loader_init(&a, tok, 1000, T, 42, 0, 1), MNEMO_OK);
    uint16_t x[48], y[48];
    /* every window: BOS first, x shifted from y by one */
    for (int k = 0; k < 100; k++) {
        mni_loader_next(&a, x, y, B);
        for (int w = 0; w < B; w++) {
            assert_int_equal(x[w * T], MNI_TOK_BOS);
            for (int t = 1; t < T; t++) assert_int_equal(x[w * T + t], y[w * T + t - 1]);
        }
    }
    /* seeking to a saved position reproduces the stream */
    assert_int_equal(mni_loader_init(&b, tok, 1000, T, 42, 0, 1), MNEMO_OK);
    check_seek(&a, &b, B);
    /* two ranks at batch B read what one process reads at batch 2 B, split in rank order, over
     * epochs (the pieces straddle an epoch's end as the one process's batches do) */
    struct mni_loader one;
    assert_int_equal(mni_loader_init(&one, tok, 1000, T, 42, 0, 1), MNEMO_OK);
    assert_int_equal(mni_loader_init(&a, tok, 1000, T, 42, 0, 2), MNEMO_OK);
    assert_int_equal(mni_loader_init(&b, tok, 1000, T, 42, 1, 2), MNEMO_OK);
    uint16_t x2[2 * 48], y2[2 * 48];
    for (int k = 0; k < 50; k++) {
        mni_loader_next(&one, x2, y2, 2 * B);
        mni_loader_next(&a, x, y, B);
        assert_memory_equal(y, y2, sizeof(y));
        mni_loader_next(&b, x, y, B);
        assert_memory_equal(y, y2 + B * T, sizeof(y));
        assert_memory_equal(&a.pos, &one.pos, sizeof(a.pos));
    }
    assert_true(one.pos.epoch >= 2);
    mni_loader_free(&one);
    mni_loader_free(&a);
    mni_loader_free(&b);
    assert_int_equal(mni_loader_init(&a, tok, 10, T, 42, 0, 1), MNEMO_ERR_ARG);
}

/* Lanes mode: each lane reads a run of consecutive text a window per step (x continuing the
 * text, BOS at a run's start only, which is when the lanes are fresh); no target twice in an
 * epoch, nearly every token a target; a seek reproduces the stream; ranks read disjoint runs. */
static void test_loader_lanes(void **s)
{
    (void)s;
    enum { N = 1000, T = 16, B = 2, LANES = 4 };
    uint16_t tok[N]; /* token i is i: a window tells where it comes from */
    for (int i = 0; i < N; i++) tok[i] = (uint16_t)i;
    struct mni_loader a, b;
    assert_int_equal(mni_loader_init_lanes(&a, tok, N, T, 42, 0, 1, LANES), MNEMO_OK);
    uint16_t x[B * T], y[B * T];
    int last[LANES]; /* each lane's last target */
    struct mni_loader_pos saved = {0, 0};
    uint16_t after[8][B * T]; /* the windows after `saved`, for the seek */
    for (uint64_t ep = 0; ep < 3; ep++) {
        unsigned char seen[N] = {0};
        const uint64_t run = a.run;
        assert_true(run >= 1 && run * LANES * T <= N && (run + 1) * LANES * T + T > N);
        for (uint64_t i = 0; i < run; i++) {
            if (ep == 1 && i == 2) saved = a.pos;
            for (int k = 0; k < LANES / B; k++) {
                int first;
                const int fresh = mni_loader_next_lanes(&a, x, y, B, &first);
                assert_int_equal(a.pos.epoch, ep);
                assert_int_equal(first, k * B);
                assert_int_equal(fresh, i == 0);
                if (ep == 1 && i >= 2 && i < 6) memcpy(after[(i - 2) * 2 + k], x, sizeof(x));
                for (int w = 0; w < B; w++) {
                    const uint16_t *xw = x + w * T, *yw = y + w * T;
                    for (int t = 0; t < T; t++) {
                        assert_int_equal(yw[t], yw[0] + t); /* consecutive text */
                        assert_false(seen[yw[t]]);
                        seen[yw[t]] = 1;
                        if (t) assert_int_equal(xw[t], yw[t - 1]);
                    }
                    if (fresh) assert_int_equal(xw[0], MNI_TOK_BOS);
                    else { /* the lane's text goes on where its last window ended */
                        assert_int_equal(yw[0], last[first + w] + 1);
                        assert_int_equal(xw[0], last[first + w]);
                    }
                    last[first + w] = yw[T - 1];
                }
            }
        }
        int n_seen = 0;
        for (int i = 0; i < N; i++) n_seen += seen[i];
        assert_int_equal(n_seen, (int)(run * LANES * T));
    }
    /* a seek to a saved step reproduces what followed it */
    assert_int_equal(mni_loader_init_lanes(&b, tok, N, T, 42, 0, 1, LANES), MNEMO_OK);
    assert_int_equal(mni_loader_seek(&b, saved), MNEMO_OK);
    for (int k = 0; k < 8 && saved.epoch == 1 && a.run >= 6; k++) {
        int first;
        assert_int_equal(mni_loader_next_lanes(&b, x, y, B, &first), 0);
        assert_memory_equal(x, after[k], sizeof(x));
    }
    struct mni_loader_pos mid = {0, 1};
    assert_int_equal(mni_loader_seek(&b, mid), MNEMO_ERR_FORMAT); /* not at a step */
    mni_loader_free(&a);
    mni_loader_free(&b);
    /* two ranks with lanes of B (two micro-batches of 1) read what one process with lanes of
     * 2 B (micro-batches of 2) reads, split in rank order: runs numbered as the one process
     * numbers them */
    struct mni_loader one;
    assert_int_equal(mni_loader_init_lanes(&one, tok, N, T, 42, 0, 1, 4), MNEMO_OK);
    assert_int_equal(mni_loader_init_lanes(&a, tok, N, T, 42, 0, 2, 2), MNEMO_OK);
    assert_int_equal(mni_loader_init_lanes(&b, tok, N, T, 42, 1, 2, 2), MNEMO_OK);
    for (uint64_t i = 0; i < 2 * one.run + 3; i++) /* into the next epochs */
        for (int k = 0; k < 2; k++) {
            int f1, fa, fb;
            const int fr = mni_loader_next_lanes(&one, x, y, 2, &f1);
            uint16_t xa[T], ya[T];
            assert_int_equal(mni_loader_next_lanes(&a, xa, ya, 1, &fa), fr);
            assert_memory_equal(ya, y, sizeof(ya));
            assert_memory_equal(xa, x, sizeof(xa));
            assert_int_equal(mni_loader_next_lanes(&b, xa, ya, 1, &fb), fr);
            assert_memory_equal(ya, y + T, sizeof(ya));
            assert_int_equal(f1, 2 * k);
            assert_true(fa == k && fb == k); /* each rank's own lane numbers */
            assert_memory_equal(&a.pos, &one.pos, sizeof(a.pos));
        }
    mni_loader_free(&one);
    mni_loader_free(&a);
    mni_loader_free(&b);
    /* fewer tokens than a window per lane */
    assert_int_equal(mni_loader_init_lanes(&a, tok, 4 * T - 1, T, 42, 0, 1, LANES), MNEMO_ERR_ARG);
    printf("expected error: %s\n", mnemo_last_error());
}

/* Document mode: windows start at the stream's start or right after a separator, every such
 * start with T tokens after it once per epoch, in an order that a seek reproduces. */
static void test_loader_docs(void **s)
{
    (void)s;
    enum { N = 600, SEP = 10, T = 16, B = 4 };
    uint16_t tok[N];
    struct mni_rng rng;
    mni_rng_seed(&rng, 5);
    int n_docs = 0; /* documents of 1..40 tokens, each ended by SEP */
    for (int i = 0; i < N;) {
        int len = 1 + (int)mni_rng_below(&rng, 40);
        for (int k = 0; k < len && i < N; k++) tok[i++] = (uint16_t)(32 + mni_rng_below(&rng, 50));
        if (i < N) tok[i++] = SEP;
    }
    uint64_t want = 0; /* starts with room for a window */
    for (int p = 0; p + T <= N; p++) want += p == 0 || tok[p - 1] == SEP;
    struct mni_loader a, b;
    assert_int_equal(mni_loader_init_docs(&a, tok, N, T, 7, 0, 1, SEP), MNEMO_OK);
    assert_int_equal(a.n_starts, want);
    assert_int_equal(a.n_order, want);
    /* one epoch: every window at a document start, each start once */
    uint8_t seen[N] = {0};
    uint16_t x[B * T], y[B * T];
    for (uint64_t k = 0; k < want; k++) {
        mni_loader_next(&a, x, y, 1);
        const uint64_t st = a.starts[a.order[k]];
        assert_true(st == 0 || tok[st - 1] == SEP);
        assert_int_equal(seen[st], 0);
        seen[st] = 1;
        assert_int_equal(x[0], MNI_TOK_BOS);
        assert_memory_equal(y, tok + st, T * sizeof(uint16_t));
        assert_memory_equal(x + 1, tok + st, (T - 1) * sizeof(uint16_t));
        n_docs++;
    }
    assert_int_equal(a.pos.index, want);
    /* the next epoch, and a seek into it */
    mni_loader_next(&a, x, y, B);
    assert_int_equal(mni_loader_init_docs(&b, tok, N, T, 7, 0, 1, SEP), MNEMO_OK);
    check_seek(&a, &b, B);
    /* no separator and a stream shorter than a window: no room */
    assert_int_equal(mni_loader_init_docs(&a, tok, T - 1, T, 7, 0, 1, SEP), MNEMO_ERR_ARG);
    assert_true(n_docs > 10);
}

/* A small learnable corpus: a repeated sentence. */
static const char *corpus_dir(void)
{
    static char dir[256];
    if (dir[0]) return dir;
    snprintf(dir, sizeof(dir), "%s", make_dir("corpus"));
    char text[8192];
    size_t n = 0;
    const char *line = "the quick brown fox jumps over the lazy dog. ";
    while (n + strlen(line) < sizeof(text)) {
        memcpy(text + n, line, strlen(line));
        n += strlen(line);
    }
    assert_int_equal(mnemo_prepare_text((const unsigned char *)text, n, dir, 0.1, NULL, NULL), MNEMO_OK);
    return dir;
}

static struct mnemo_model *small_model(void)
{
    return tu_model(2, 32, 2, 32, MNEMO_TOK_VOCAB, MNEMO_POS_ROPE, 11);
}

static void train_cfg(struct mnemo_train_config *tc, const char *out, char *tr, char *va)
{
    mnemo_train_config_default(tc);
    snprintf(tr, 512, "%s/train.bin", corpus_dir());
    snprintf(va, 512, "%s/val.bin", corpus_dir());
    tc->train_path = tr;
    tc->val_path = va;
    tc->out_dir = out;
    tc->batch = 4;
    tc->max_steps = 60;
    tc->warmup = 5;
    tc->lr = 1e-2f;
    tc->lr_min = 1e-3f;
    tc->eval_every = 0;
    tc->ckpt_every = 0;
}

static void loss_falls(int optimizer, const char *dir)
{
    struct mnemo_model *m = small_model();
    struct mnemo_train_config tc;
    char tr[512], va[512];
    train_cfg(&tc, make_dir(dir), tr, va);
    tc.optimizer = optimizer;
    struct mnemo_eval_result before, after;
    assert_int_equal(mnemo_eval_file(m, va, 0, 0, 4, 0, &before), MNEMO_OK);
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_OK);
    assert_int_equal(mnemo_eval_file(m, va, 0, 0, 4, 0, &after), MNEMO_OK);
    printf("val loss %.3f -> %.3f\n", before.loss, after.loss);
    assert_true(before.loss > 5.0);   /* ~ln(257) at init */
    assert_true(after.loss < 1.0);    /* a repeated sentence is easy */
    mnemo_model_free(m);
}

static void test_loss_falls(void **s)
{
    (void)s;
    loss_falls(MNEMO_OPT_ADAMW, "run_fall");
}

static void test_loss_falls_muon(void **s)
{
    (void)s;
    loss_falls(MNEMO_OPT_MUON, "run_fall_muon");
}

/* Sliding-window evaluation against a direct computation: each window through the forward,
 * log-softmax of its logits in double, the first window scored whole and every later one on its
 * last `stride` positions. With max_windows < the number of windows nw, window j of them is
 * window floor(j nw / max_windows) of all (spread over the file). */
static double eval_direct(struct mnemo_model *m, const struct mni_tokens *tk, int T, int S,
                          uint64_t max_windows, uint64_t *scored)
{
    const struct mnemo_model_config *cfg = mnemo_model_get_config(m);
    uint16_t x[64], y[64];
    double sum = 0;
    *scored = 0;
    const uint64_t nw = (tk->n - (uint64_t)T) / (uint64_t)S + 1;
    const uint64_t used = max_windows && max_windows < nw ? max_windows : nw;
    for (uint64_t j = 0; j < used; j++) {
        const uint64_t s0 = (j * nw / used) * (uint64_t)S;
        x[0] = MNI_TOK_BOS;
        for (int t = 0; t < T; t++) {
            if (t + 1 < T) x[t + 1] = tk->tok[s0 + (uint64_t)t];
            y[t] = tk->tok[s0 + (uint64_t)t];
        }
        assert_int_equal(mnemo_model_forward(m, x, y, 1, T, NULL), MNEMO_OK);
        const float *z = mnemo_model_logits(m);
        for (int t = s0 == 0 ? 0 : T - S; t < T; t++) {
            const float *r = z + (size_t)t * (size_t)cfg->vocab_padded;
            double mx = r[0], se = 0;
            for (int v = 1; v < cfg->vocab; v++) mx = r[v] > mx ? r[v] : mx;
            for (int v = 0; v < cfg->vocab; v++) se += exp(r[v] - mx);
            sum += mx + log(se) - r[y[t]];
            ++*scored;
        }
    }
    return sum / (double)*scored;
}

static void test_eval_stride(void **s)
{
    (void)s;
    struct mnemo_model *m = small_model();
    char tr[512], va[512];
    struct mnemo_train_config tc;
    train_cfg(&tc, make_dir("run_eval"), tr, va);
    struct mni_tokens tk;
    assert_int_equal(mni_tokens_read(&tk, va), MNEMO_OK);
    const int T = 32, strides[] = {32, 16, 5, 1};
    for (size_t i = 0; i < sizeof(strides) / sizeof(strides[0]); i++) {
        int S = strides[i];
        uint64_t n_direct;
        double want = eval_direct(m, &tk, T, S, 0, &n_direct);
        struct mnemo_eval_result r;
        assert_int_equal(mnemo_eval_file(m, va, T, S, 3, 0, &r), MNEMO_OK);
        assert_int_equal(r.tokens, n_direct);
        assert_true(fabs(r.loss - want) < 1e-5 * want);
        assert_true(fabs(r.bpb - r.loss / log(2.0)) < 1e-12);
        /* capped: 7 windows spread over the file, not its first 7 */
        want = eval_direct(m, &tk, T, S, 7, &n_direct);
        assert_int_equal(mnemo_eval_file(m, va, T, S, 3, 7, &r), MNEMO_OK);
        assert_int_equal(r.tokens, n_direct);
        assert_true(fabs(r.loss - want) < 1e-5 * want);
    }
    /* disjoint windows score T * floor(n / T) tokens; stride 0 means T */
    struct mnemo_eval_result a, b;
    assert_int_equal(mnemo_eval_file(m, va, T, 0, 4, 0, &a), MNEMO_OK);
    assert_int_equal(mnemo_eval_file(m, va, T, T, 4, 0, &b), MNEMO_OK);
    assert_int_equal(a.tokens, (tk.n / T) * T);
    assert_true(a.loss == b.loss);
    assert_int_equal(mnemo_eval_file(m, va, T, T + 1, 4, 0, &a), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_eval_file(m, va, T, -1, 4, 0, &a), MNEMO_ERR_ARG);
    mni_tokens_free(&tk);
    mnemo_model_free(m);
}

/* With doc_windows, validation scores the windows at the split's document starts (position 0
 * and after every newline, T tokens left), each whole: the logged loss against a direct
 * computation of exactly that, and unlike the default disjoint windows. */
static int keep_val(const struct mnemo_train_event *ev, void *user)
{
    if (ev->kind == MNEMO_TRAIN_EV_EVAL) *(double *)user = ev->val_loss;
    return 0;
}

static void test_doc_windows_val(void **s)
{
    (void)s;
    const char *dir = make_dir("docs");
    char text[6000];
    size_t n = 0;
    for (int k = 0; n + 80 < sizeof(text); k++) { /* lines of 6..45 bytes */
        int len = 6 + (k * 7) % 40;
        for (int i = 0; i < len; i++) text[n++] = (char)('a' + (k + i * i) % 26);
        text[n++] = '\n';
    }
    assert_int_equal(mnemo_prepare_text((const unsigned char *)text, n, dir, 0.3, NULL, NULL), MNEMO_OK);
    struct mnemo_model *m = small_model();
    struct mnemo_train_config tc;
    char tr[512], va[512];
    train_cfg(&tc, make_dir("run_docval"), tr, va);
    snprintf(tr, sizeof(tr), "%s/train.bin", dir);
    snprintf(va, sizeof(va), "%s/val.bin", dir);
    tc.doc_windows = 1;
    tc.max_steps = 30;
    double logged = NAN;
    assert_int_equal(mnemo_train(m, &tc, keep_val, &logged), MNEMO_OK);

    struct mni_tokens tk;
    assert_int_equal(mni_tokens_read(&tk, va), MNEMO_OK);
    const struct mnemo_model_config *cfg = mnemo_model_get_config(m);
    const int T = cfg->n_ctx;
    uint16_t x[64], y[64];
    double sum = 0;
    uint64_t scored = 0, windows = 0;
    for (uint64_t p = 0; p + (uint64_t)T <= tk.n; p++) {
        if (p > 0 && tk.tok[p - 1] != '\n') continue;
        x[0] = MNI_TOK_BOS;
        for (int t = 0; t < T; t++) {
            if (t + 1 < T) x[t + 1] = tk.tok[p + (uint64_t)t];
            y[t] = tk.tok[p + (uint64_t)t];
        }
        assert_int_equal(mnemo_model_forward(m, x, y, 1, T, NULL), MNEMO_OK);
        const float *z = mnemo_model_logits(m);
        for (int t = 0; t < T; t++, scored++) {
            const float *r = z + (size_t)t * (size_t)cfg->vocab_padded;
            double mx = r[0], se = 0;
            for (int v = 1; v < cfg->vocab; v++) mx = r[v] > mx ? r[v] : mx;
            for (int v = 0; v < cfg->vocab; v++) se += exp(r[v] - mx);
            sum += mx + log(se) - r[y[t]];
        }
        windows++;
    }
    const double want = sum / (double)scored;
    struct mnemo_eval_result plain;
    assert_int_equal(mnemo_eval_file(m, va, T, T, 4, 0, &plain), MNEMO_OK);
    printf("doc windows %llu: val loss %.6f (direct %.6f; disjoint windows %.6f)\n",
           (unsigned long long)windows, logged, want, plain.loss);
    assert_true(windows > 20);
    assert_true(fabs(logged - want) < 1e-5 * want);
    assert_true(fabs(logged - plain.loss) > 1e-3);
    mni_tokens_free(&tk);
    mnemo_model_free(m);
}

static int stop_after(const struct mnemo_train_event *ev, void *user)
{
    return ev->kind == MNEMO_TRAIN_EV_STEP && ev->step >= *(int *)user;
}

/* Trains *m with tc until step `stop` (as Ctrl-C would stop it), then replaces *m by the
 * checkpoint in dir and sets tc->resume: ready to resume from disk. */
static void stop_and_reload(struct mnemo_model **m, struct mnemo_train_config *tc, const char *dir,
                            int stop)
{
    char path[600];
    assert_int_equal(mnemo_train(*m, tc, stop_after, &stop), MNEMO_OK);
    mnemo_model_free(*m);
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    assert_int_equal(mnemo_model_load(m, path), MNEMO_OK);
    tc->resume = 1;
}

static void exact_resume(int optimizer, const char *dir_a, const char *dir_b_name)
{
    char tr[512], va[512], path[600];
    struct mnemo_train_config tc;
    /* uninterrupted: 12 steps */
    struct mnemo_model *a = small_model();
    train_cfg(&tc, make_dir(dir_a), tr, va);
    tc.optimizer = optimizer;
    tc.max_steps = 12;
    tc.ckpt_every = 5;
    assert_int_equal(mnemo_train(a, &tc, NULL, NULL), MNEMO_OK);
    /* the same run stopped after 7 steps (as Ctrl-C would), then resumed from disk */
    struct mnemo_model *b = small_model();
    const char *dir_b = make_dir(dir_b_name);
    train_cfg(&tc, dir_b, tr, va);
    tc.optimizer = optimizer;
    tc.max_steps = 12;
    tc.ckpt_every = 5;
    stop_and_reload(&b, &tc, dir_b, 7);
    assert_string_equal(mnemo_model_meta(b, "train.step"), "7");
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_OK);
    assert_int_equal(a->n_params, b->n_params);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_string_equal(mnemo_model_meta(b, "train.optimizer"), mnemo_optimizer_name(optimizer));
    /* resuming a finished run is refused; so are another optimizer and a changed batch */
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    tc.max_steps = 20;
    tc.optimizer = !optimizer;
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "optimizer"));
    tc.optimizer = optimizer;
    tc.batch = 5;
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "exact resume"));
    mnemo_model_free(b);
    /* a model file that does not belong to the train state of its step (another run's, as
     * a run started over in the folder and stopped between its two writes could leave) is
     * refused, not resumed inexactly; so are a model without a step and one whose state is
     * missing */
    snprintf(path, sizeof(path), "%s/model.safetensors", dir_b);
    tc.batch = 4;
    const char *steps[3] = {"12", NULL, "11"};
    const enum mnemo_status want[3] = {MNEMO_ERR_FORMAT, MNEMO_ERR_FORMAT, MNEMO_ERR_IO};
    const char *msg[3] = {"do not belong together", "has no train.step", "no train state"};
    for (int k = 0; k < 3; k++) {
        struct mnemo_model *c = small_model(); /* the initial weights, not the run's */
        const char *kv[2] = {"train.step", steps[k]};
        assert_int_equal(mni_model_save_ex(c, path, kv, steps[k] ? 1 : 0), MNEMO_OK);
        mnemo_model_free(c);
        assert_int_equal(mnemo_model_load(&b, path), MNEMO_OK);
        assert_int_equal(mnemo_train(b, &tc, NULL, NULL), want[k]);
        printf("expected error: %s\n", mnemo_last_error());
        assert_non_null(strstr(mnemo_last_error(), msg[k]));
        mnemo_model_free(b);
    }
    mnemo_model_free(a);
}

static void test_exact_resume(void **s)
{
    (void)s;
    exact_resume(MNEMO_OPT_ADAMW, "run_a", "run_b");
}

static void test_exact_resume_muon(void **s)
{
    (void)s;
    exact_resume(MNEMO_OPT_MUON, "run_mu_a", "run_mu_b");
}

/* Weight averaging: the average is checked against one computed here, step by step, from the
 * weights the callback sees after each update; checkpoint, resume and validation follow it. */
struct ema_probe {
    const struct mnemo_model *m;
    float *want;
    float decay;
    float val_loss; /* the last validation's */
};

static int ema_probe(const struct mnemo_train_event *ev, void *user)
{
    struct ema_probe *p = user;
    if (ev->kind == MNEMO_TRAIN_EV_EVAL) p->val_loss = ev->val_loss;
    if (ev->kind != MNEMO_TRAIN_EV_STEP) return 0;
    float warm = (1.0f + (float)ev->step) / (10.0f + (float)ev->step);
    float d = p->decay < warm ? p->decay : warm;
    for (size_t i = 0; i < p->m->n_params; i++)
        p->want[i] = d * p->want[i] + (1.0f - d) * p->m->params[i];
    return 0;
}

static void test_ema(void **s)
{
    (void)s;
    char tr[512], va[512], path[600], sp[600];
    struct mnemo_train_config tc;
    struct mnemo_model *a = small_model();
    const char *dir_a = make_dir("run_ema_a");
    train_cfg(&tc, dir_a, tr, va);
    tc.max_steps = 16; /* from step 3 on, the decay (0.3) is below the warm-up's */
    tc.ckpt_every = 5;
    tc.eval_every = 4;
    tc.ema = 0.3f;
    struct ema_probe p = {a, mni_alloc(a->n_params * sizeof(float)), tc.ema, NAN};
    memcpy(p.want, a->params, a->n_params * sizeof(float));
    assert_int_equal(mnemo_train(a, &tc, ema_probe, &p), MNEMO_OK);
    /* the model returned holds the average */
    TU_ASSERT_CLOSE("ema", a->params, p.want, a->n_params, 1e-6f, 1e-5f);
    /* and validation scored it (the final validation uses every window) */
    struct mnemo_eval_result r;
    assert_int_equal(mnemo_eval_file(a, va, 0, 0, tc.batch, 0, &r), MNEMO_OK);
    assert_true(fabs(r.loss - p.val_loss) <= 1e-6 * fabs(r.loss));
    /* so does the checkpoint; the trained weights are in the train state, and differ */
    struct mnemo_model *f = NULL;
    snprintf(path, sizeof(path), "%s/model.safetensors", dir_a);
    assert_int_equal(mnemo_model_load(&f, path), MNEMO_OK);
    assert_memory_equal(f->params, a->params, a->n_params * sizeof(float));
    assert_string_equal(mnemo_model_meta(f, "train.ema"), "0.300000012");
    mnemo_model_free(f);
    struct mni_st_file *st = NULL;
    snprintf(sp, sizeof(sp), "%s/train_state.16.safetensors", dir_a);
    assert_int_equal(mni_st_open(&st, sp), MNEMO_OK);
    size_t shape[1] = {a->n_params};
    assert_int_equal(mni_st_read(st, "params", MNI_ST_F32, 1, shape, p.want), MNEMO_OK);
    mni_st_close(st);
    assert_true(memcmp(p.want, a->params, a->n_params * sizeof(float)) != 0);
    /* exact resume: stopped after 7 steps, resumed from disk, the same average at 12 */
    struct mnemo_model *b = small_model();
    const char *dir_b = make_dir("run_ema_b");
    train_cfg(&tc, dir_b, tr, va);
    tc.max_steps = 16;
    tc.ckpt_every = 5;
    tc.eval_every = 4;
    tc.ema = 0.3f;
    stop_and_reload(&b, &tc, dir_b, 7);
    float avg7[8];
    memcpy(avg7, b->params, sizeof(avg7));
    tc.ema = 0.5f; /* not the run's: refused, and the model still holds the average */
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "ema"));
    tc.ema = 0; /* nor is none */
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    assert_memory_equal(avg7, b->params, sizeof(avg7));
    tc.ema = 0.3f;
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_OK);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    /* a finished run: nothing to do, refused after the state was read -- the model must
     * still hold the average, not the trained weights read from the state */
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    mnemo_model_free(b);
    /* a run without averaging cannot be resumed with it */
    struct mnemo_model *c = small_model();
    train_cfg(&tc, make_dir("run_ema_c"), tr, va);
    tc.max_steps = 4;
    assert_int_equal(mnemo_train(c, &tc, NULL, NULL), MNEMO_OK);
    tc.max_steps = 8;
    tc.resume = 1;
    tc.ema = 0.3f;
    assert_int_equal(mnemo_train(c, &tc, NULL, NULL), MNEMO_ERR_ARG);
    mnemo_model_free(c);
    /* out of range */
    tc.resume = 0;
    tc.ema = 1.0f;
    assert_int_equal(mnemo_train(a, &tc, NULL, NULL), MNEMO_ERR_ARG);
    tc.ema = -0.1f;
    assert_int_equal(mnemo_train(a, &tc, NULL, NULL), MNEMO_ERR_ARG);
    mni_free(p.want);
    mnemo_model_free(a);
}

/* The small model's shape with another attention kind (infini: segments of 8, delta rule),
 * and the options opts besides (NULL: none). */
static struct mnemo_model *small_of_kind_opts(int kind, uint64_t seed, const char *opts)
{
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = 2;
    c.d_model = 32;
    c.n_head = 2;
    c.n_ctx = 32;
    c.vocab = MNEMO_TOK_VOCAB;
    c.attn_kind = kind;
    char o[256];
    snprintf(o, sizeof(o), "%s%s%s", kind == MNEMO_ATTN_KIND_INFINI ? "segment=8,mem_update=delta" : "",
             kind == MNEMO_ATTN_KIND_INFINI && opts ? "," : "", opts ? opts : "");
    c.attn_opts = o;
    struct mnemo_model *m;
    assert_int_equal(mnemo_model_create(&m, &c), MNEMO_OK);
    mnemo_model_init(m, seed);
    return m;
}

static struct mnemo_model *small_of_kind(int kind, uint64_t seed)
{
    return small_of_kind_opts(kind, seed, NULL);
}

static struct mnemo_model *small_infini(void) { return small_of_kind(MNEMO_ATTN_KIND_INFINI, 11); }

/* Training with write weights (the infini option mem_repeat): the weights are drawn per step
 * from the seed, so a resumed run equals the uninterrupted one bit for bit (the option travels
 * in the checkpoint); they change the run (against mem_repeat 0); they are refused for other
 * kinds and out of range. The option set on a model (mnemo_model_set_attn_opts) and given at
 * creation train alike. */
static void test_mem_repeat(void **s)
{
    (void)s;
    char tr[512], va[512];
    struct mnemo_train_config tc;
    struct mnemo_model *a = small_infini(), *plain = small_infini(), *b = small_infini();
    struct mnemo_model *c = small_of_kind_opts(MNEMO_ATTN_KIND_INFINI, 11, "mem_repeat=1000");
    train_cfg(&tc, make_dir("run_rep_plain"), tr, va);
    tc.max_steps = 12;
    assert_int_equal(mnemo_train(plain, &tc, NULL, NULL), MNEMO_OK);
    train_cfg(&tc, make_dir("run_rep_a"), tr, va);
    tc.max_steps = 12;
    assert_int_equal(mnemo_model_set_attn_opts(a, "mem_repeat=1000"), MNEMO_OK);
    assert_int_equal(mnemo_train(a, &tc, NULL, NULL), MNEMO_OK);
    assert_true(memcmp(a->params, plain->params, a->n_params * sizeof(float)) != 0);
    train_cfg(&tc, make_dir("run_rep_c"), tr, va);
    tc.max_steps = 12;
    assert_int_equal(mnemo_train(c, &tc, NULL, NULL), MNEMO_OK);
    assert_memory_equal(a->params, c->params, a->n_params * sizeof(float));
    mnemo_model_free(c);
    const char *dir_b = make_dir("run_rep_b");
    train_cfg(&tc, dir_b, tr, va);
    tc.max_steps = 12;
    assert_int_equal(mnemo_model_set_attn_opts(b, "mem_repeat=1000"), MNEMO_OK);
    stop_and_reload(&b, &tc, dir_b, 7);
    assert_non_null(strstr(mnemo_model_get_config(b)->attn_opts, "mem_repeat=1000"));
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_OK);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    /* validation after training reads the memory plainly (the weights are training's): the
     * model is left evaluating, and evaluates as one without the option */
    struct mnemo_eval_result e1, e2;
    assert_int_equal(mnemo_eval_file(b, va, 0, 0, 4, 0, &e1), MNEMO_OK);
    mnemo_model_set_mode(b, 0, 0);
    assert_int_equal(mnemo_eval_file(b, va, 0, 0, 4, 0, &e2), MNEMO_OK);
    assert_true(e1.loss == e2.loss);
    assert_int_equal(mnemo_model_set_attn_opts(b, "mem_repeat=0"), MNEMO_OK);
    assert_int_equal(mnemo_eval_file(b, va, 0, 0, 4, 0, &e2), MNEMO_OK);
    assert_true(e1.loss == e2.loss);
    /* in training mode the weights apply: the loss of a window depends on the seed's draws
     * and is the same for the same seed */
    assert_int_equal(mnemo_model_set_attn_opts(b, "mem_repeat=1000"), MNEMO_OK);
    struct mni_tokens tk;
    assert_int_equal(mni_tokens_read(&tk, va), MNEMO_OK);
    assert_true(tk.n >= 4 * 32 + 1);
    uint16_t x[128], y[128];
    for (int i = 0; i < 128; i++) x[i] = tk.tok[i], y[i] = tk.tok[i + 1];
    mni_tokens_free(&tk);
    float l_eval, l_s1, l_s1b, l_s2;
    assert_int_equal(mnemo_model_forward(b, x, y, 4, 32, &l_eval), MNEMO_OK);
    mnemo_model_set_mode(b, 1, 1);
    assert_int_equal(mnemo_model_forward(b, x, y, 4, 32, &l_s1), MNEMO_OK);
    assert_int_equal(mnemo_model_forward(b, x, y, 4, 32, &l_s1b), MNEMO_OK);
    mnemo_model_set_mode(b, 1, 2);
    assert_int_equal(mnemo_model_forward(b, x, y, 4, 32, &l_s2), MNEMO_OK);
    printf("loss evaluating %.6f, training seed 1 %.6f, seed 2 %.6f\n", l_eval, l_s1, l_s2);
    assert_true(l_s1 == l_s1b && l_s1 != l_eval && l_s1 != l_s2);
    mnemo_model_set_mode(b, 0, 0);
    float l_back;
    assert_int_equal(mnemo_model_forward(b, x, y, 4, 32, &l_back), MNEMO_OK);
    assert_true(l_back == l_eval);
    mnemo_model_free(b);
    /* refused: another kind, a value below 1 (named; nothing changes) */
    struct mnemo_model *d = small_model();
    assert_int_equal(mnemo_model_set_attn_opts(d, "mem_repeat=8"), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "mem_repeat"));
    assert_non_null(strstr(mnemo_last_error(), "dense"));
    assert_int_equal(mnemo_model_set_attn_opts(a, "mem_repeat=0.5"), MNEMO_ERR_ARG);
    assert_non_null(strstr(mnemo_last_error(), "mem_repeat"));
    assert_non_null(strstr(mnemo_model_get_config(a)->attn_opts, "mem_repeat=1000"));
    mnemo_model_free(d);
    mnemo_model_free(plain);
    mnemo_model_free(a);
}

/* A model keeps its lanes: windows of a lane chained through the carried memory (infini,
 * carry=true) give the logits a session fed the lane's text gives, evaluation forwards in
 * between leave the lanes alone, and without the lanes the windows' logits differ. */
static void test_model_lanes(void **s)
{
    (void)s;
    enum { T = 32, B = 2, K = 3 };
    struct mnemo_model *m = small_of_kind_opts(MNEMO_ATTN_KIND_INFINI, 5, "carry=true");
    struct mnemo_model *plain = small_infini();
    assert_true(mnemo_model_carry_bytes(m) > 0);
    assert_int_equal(mnemo_model_carry_bytes(plain), 0);
    assert_int_equal(mnemo_model_set_lanes(plain, 2), MNEMO_ERR_ARG);
    printf("expected error: %s\n", mnemo_last_error());
    assert_int_equal(mnemo_model_set_lanes(m, B), MNEMO_OK);
    /* each lane's text: BOS, then K T - 1 random bytes; window k's inputs are its k-th T */
    uint16_t text[B][K * T], x[B * T], junk[B * T];
    struct mni_rng r;
    mni_rng_seed(&r, 3);
    for (int b = 0; b < B; b++) {
        text[b][0] = MNI_TOK_BOS;
        for (int i = 1; i < K * T; i++) text[b][i] = (uint16_t)mni_rng_below(&r, 256);
    }
    for (int i = 0; i < B * T; i++) junk[i] = (uint16_t)mni_rng_below(&r, 256);
    const size_t Vp = (size_t)mnemo_model_get_config(m)->vocab_padded;
    float *lanes = malloc((size_t)K * B * T * Vp * sizeof(float));
    assert_non_null(lanes);
    for (int k = 0; k < K; k++) {
        for (int b = 0; b < B; b++) memcpy(x + b * T, text[b] + k * T, T * sizeof(uint16_t));
        assert_int_equal(mnemo_model_use_lanes(m, 0, k == 0), MNEMO_OK);
        assert_int_equal(mnemo_model_forward(m, x, NULL, B, T, NULL), MNEMO_OK);
        memcpy(lanes + (size_t)k * B * T * Vp, mnemo_model_logits(m), B * T * Vp * sizeof(float));
        /* an evaluation forward in between: fresh windows, the lanes untouched */
        assert_int_equal(mnemo_model_forward(m, junk, NULL, B, T, NULL), MNEMO_OK);
        if (k > 0) { /* ... and without the carried memory window k reads otherwise */
            assert_int_equal(mnemo_model_forward(m, x, NULL, B, T, NULL), MNEMO_OK);
            assert_true(tu_rel_max_err(mnemo_model_logits(m), lanes + (size_t)k * B * T * Vp,
                                       B * T * Vp) > 1e-3);
        }
    }
    for (int b = 0; b < B; b++) {
        struct mnemo_session *ss;
        assert_int_equal(mnemo_session_create(&ss, m, 8), MNEMO_OK);
        for (int t = 0; t < K * T; t += 8) {
            const float *lg;
            assert_int_equal(mnemo_session_feed(ss, text[b] + t, 8, &lg), MNEMO_OK);
            for (int i = 0; i < 8; i++) {
                const int k = (t + i) / T, p = (t + i) % T;
                const float *want = lanes + (((size_t)k * B + b) * T + p) * Vp;
                TU_ASSERT_CLOSE("lanes vs session", lg + (size_t)i * Vp, want, MNEMO_TOK_VOCAB,
                                1e-4f, 1e-4f);
            }
        }
        mnemo_session_free(ss);
    }
    /* lanes beyond those kept are refused at the forward */
    assert_int_equal(mnemo_model_use_lanes(m, 1, 0), MNEMO_OK);
    assert_int_equal(mnemo_model_forward(m, x, NULL, B, T, NULL), MNEMO_ERR_ARG);
    printf("expected error: %s\n", mnemo_last_error());
    assert_int_equal(mnemo_model_use_lanes(m, 2, 0), MNEMO_ERR_ARG);
    free(lanes);
    mnemo_model_free(plain);
    mnemo_model_free(m);
}

/* Training a kind that carries a state: lanes of consecutive text (with gradient accumulation,
 * lanes of both micro-batches), the lanes' states in the train state, so that a resumed run
 * equals the uninterrupted one bit for bit; the carry changes the run; a resume without it,
 * and doc_windows with it, are refused. */
static void lanes_cfg(struct mnemo_train_config *tc, const char *out, char *tr, char *va)
{
    train_cfg(tc, out, tr, va);
    tc->max_steps = 12;
    tc->batch = 2;
    tc->grad_accum = 2;
}

static void test_train_lanes(void **s)
{
    (void)s;
    char tr[512], va[512];
    struct mnemo_train_config tc;
    struct mnemo_model *a = small_of_kind_opts(MNEMO_ATTN_KIND_INFINI, 11, "carry=true");
    struct mnemo_model *b = small_of_kind_opts(MNEMO_ATTN_KIND_INFINI, 11, "carry=true");
    struct mnemo_model *plain = small_infini();
    lanes_cfg(&tc, make_dir("run_lanes_plain"), tr, va);
    assert_int_equal(mnemo_train(plain, &tc, NULL, NULL), MNEMO_OK);
    lanes_cfg(&tc, make_dir("run_lanes_a"), tr, va);
    assert_int_equal(mnemo_train(a, &tc, NULL, NULL), MNEMO_OK);
    assert_true(memcmp(a->params, plain->params, a->n_params * sizeof(float)) != 0);
    const char *dir_b = make_dir("run_lanes_b");
    lanes_cfg(&tc, dir_b, tr, va);
    tc.ckpt_every = 5;
    stop_and_reload(&b, &tc, dir_b, 7);
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_OK);
    assert_memory_equal(a->params, b->params, a->n_params * sizeof(float));
    assert_int_equal(b->n_lanes, 0); /* the run let go of its lanes */
    /* the resume needs the lanes: the same run without the carry is refused */
    tc.max_steps = 20;
    assert_int_equal(mnemo_model_set_attn_opts(b, "carry=false"), MNEMO_OK);
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "lanes"));
    /* documents and lanes do not mix */
    assert_int_equal(mnemo_model_set_attn_opts(b, "carry=true"), MNEMO_OK);
    train_cfg(&tc, make_dir("run_lanes_doc"), tr, va);
    tc.doc_windows = 1;
    assert_int_equal(mnemo_train(b, &tc, NULL, NULL), MNEMO_ERR_ARG);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "doc_windows"));
    mnemo_model_free(plain);
    mnemo_model_free(a);
    mnemo_model_free(b);
}

static void test_bad_train_config(void **s)
{
    (void)s;
    struct mnemo_model *m = small_model();
    struct mnemo_train_config tc;
    char tr[512], va[512];
    train_cfg(&tc, make_dir("run_bad"), tr, va);
    tc.lr = -1;
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_ARG);
    train_cfg(&tc, make_dir("run_bad"), tr, va);
    tc.optimizer = MNEMO_OPT_COUNT;
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_ARG);
    train_cfg(&tc, make_dir("run_bad"), tr, va);
    tc.optimizer = MNEMO_OPT_MUON;
    tc.momentum = 1.0f;
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_ARG);
    train_cfg(&tc, make_dir("run_bad"), tr, va);
    tc.seq = 1000; /* > n_ctx */
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_ARG);
    train_cfg(&tc, make_dir("run_bad"), tr, va);
    tc.train_path = "/nonexistent/train.bin";
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_IO);
    train_cfg(&tc, make_dir("run_bad"), tr, va);
    tc.lr = 1e30f; /* diverges: must stop with a numeric error, not crash */
    tc.weight_decay = 0;
    tc.grad_clip = 0;
    tc.warmup = 0;
    enum mnemo_status st = mnemo_train(m, &tc, NULL, NULL);
    assert_int_equal(st, MNEMO_ERR_NUMERIC);
    printf("expected error: %s\n", mnemo_last_error());
    mnemo_model_free(m);
}


/* Pruned evaluation and the budget search on a small selective model trained briefly (with the
 * memory loss). */
static int n_rounds;
static int sum_aux(const struct mnemo_train_event *ev, void *user)
{
    if (ev->kind == MNEMO_TRAIN_EV_STEP) *(double *)user += ev->aux_loss;
    return 0;
}
static double worst_round;
static void count_round(const int *b, int L, double loss, void *user)
{
    (void)b, (void)L, (void)user;
    n_rounds++;
    worst_round = loss > worst_round ? loss : worst_round;
}

/* The loss of the token file at path streamed through sessions with per-layer budgets b (two
 * layers): the session option budget=b0/b1. */
static enum mnemo_status eval_pruned(struct mnemo_model *m, const char *path, const int *b,
                                     struct mnemo_eval_result *res)
{
    char o[64];
    snprintf(o, sizeof(o), "budget=%d/%d", b[0], b[1]);
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.attn_opts = o;
    return mnemo_eval_file_session(m, path, 0, &sc, 0, res);
}

static void test_pruned_eval_and_search(void **s)
{
    (void)s;
    struct mnemo_model *m = small_of_kind_opts(MNEMO_ATTN_KIND_SELECTIVE, 3, "mem_eps=0.1");
    struct mnemo_train_config tc;
    char tr[512], va[512];
    train_cfg(&tc, make_dir("run_prune"), tr, va);
    tc.max_steps = 30;
    double aux_sum = 0;
    assert_int_equal(mnemo_train(m, &tc, sum_aux, &aux_sum), MNEMO_OK);
    printf("mean aux loss over the steps %.6g\n", aux_sum / tc.max_steps);
    assert_true(aux_sum > 0); /* the memory loss was on */
    {   /* the log's steps carry it as aux_loss */
        char lp[600];
        snprintf(lp, sizeof(lp), "%s/log.jsonl", tc.out_dir);
        size_t n;
        unsigned char *log = tu_read_file(lp, &n);
        assert_non_null(log);
        char *text = calloc(n + 1, 1);
        memcpy(text, log, n);
        assert_non_null(strstr(text, "\"type\":\"step\""));
        assert_non_null(strstr(text, "\"aux_loss\":"));
        assert_null(strstr(text, "mem_loss"));
        free(text);
        free(log);
    }
    /* budgets as long as the window: the session's loss is the batched forward's */
    struct mnemo_eval_result full, pr;
    assert_int_equal(mnemo_eval_file(m, va, 0, 0, 4, 0, &full), MNEMO_OK);
    const int wide[2] = {32, 32};
    assert_int_equal(eval_pruned(m, va, wide, &pr), MNEMO_OK);
    printf("unpruned %.6f, through the session %.6f\n", full.loss, pr.loss);
    assert_int_equal(pr.tokens, full.tokens);
    assert_true(fabs(pr.loss - full.loss) < 1e-4 * full.loss);
    /* tight budgets cost something */
    const int tight[2] = {2, 2};
    assert_int_equal(eval_pruned(m, va, tight, &pr), MNEMO_OK);
    assert_true(pr.loss > full.loss);
    /* the search: every committed point and the result keep the loss within the target, it
     * shrank something, and no layer of the result can shrink by the factor once more */
    int b[2];
    const double target = full.loss * 1.05;
    n_rounds = 0;
    worst_round = 0;
    assert_int_equal(mnemo_prune_search(m, va, 0, target, 0.5f, 0, b, count_round, NULL), MNEMO_OK);
    printf("budgets %d,%d after %d rounds\n", b[0], b[1], n_rounds);
    assert_true(b[0] >= 2 && b[0] <= 32 && b[1] >= 2 && b[1] <= 32 && b[0] + b[1] < 64);
    assert_true(n_rounds >= 2 && worst_round <= target);
    assert_int_equal(eval_pruned(m, va, b, &pr), MNEMO_OK);
    assert_true(pr.loss <= target);
    for (int l = 0; l < 2; l++) {
        if (b[l] == 2) continue;
        int tb[2] = {b[0], b[1]};
        tb[l] = b[l] / 2;
        assert_int_equal(eval_pruned(m, va, tb, &pr), MNEMO_OK);
        assert_true(pr.loss > target);
    }
    /* refusals: a target below the unpruned loss, a bad factor, a dense model */
    assert_int_equal(mnemo_prune_search(m, va, 0, full.loss * 0.5, 0.5f, 0, b, NULL, NULL), MNEMO_ERR_ARG);
    assert_int_equal(mnemo_prune_search(m, va, 0, target, 1.5f, 0, b, NULL, NULL), MNEMO_ERR_ARG);
    mnemo_model_free(m);
    m = small_model();
    assert_int_equal(mnemo_prune_search(m, va, 0, target, 0.5f, 0, b, NULL, NULL), MNEMO_ERR_ARG);
    mnemo_model_free(m);
}

/* ---- prepare writes train.bin and val.bin as a pair ----------------------------------------- */

/* 1 if the file at path holds exactly want (n bytes). */
static int same_bytes(const char *path, const unsigned char *want, size_t n)
{
    size_t got_n;
    unsigned char *got = tu_read_file(path, &got_n);
    int same = got && got_n == n && memcmp(got, want, n) == 0;
    free(got);
    return same;
}

/* Entries of dir besides "." and "..". */
static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int k = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) k++;
    closedir(d);
    return k;
}

/* A folder name with a first prepare of prep_old in it (the pair a failed prepare must keep);
 * tp and vp get the paths of its train.bin and val.bin. */
static const char *const prep_old = "In the beginning God created the heaven and the earth.\n";
static const char *const prep_new =
    "And the earth was without form, and void; and darkness was upon it.\n";

static const char *prep_first(const char *name, char tp[600], char vp[600])
{
    const char *dir = make_dir(name);
    snprintf(tp, 600, "%s/train.bin", dir);
    snprintf(vp, 600, "%s/val.bin", dir);
    assert_int_equal(mnemo_prepare_text((const unsigned char *)prep_old, strlen(prep_old), dir,
                                        0.1, NULL, NULL), MNEMO_OK);
    return dir;
}

/* A val.bin that cannot be replaced (a directory) must cost nothing: the error names it, and
 * train.bin keeps the previous run's bytes. */
static void test_prepare_val_blocked(void **s)
{
    (void)s;
    char tp[600], vp[600];
    const char *dir = prep_first("prep_blocked", tp, vp), *new_text = prep_new;
    size_t n_old;
    unsigned char *old_train = tu_read_file(tp, &n_old);
    assert_non_null(old_train);
    assert_int_equal(remove(vp), 0);
    assert_int_equal(mkdir(vp, 0777), 0);
    assert_int_equal(mnemo_prepare_text((const unsigned char *)new_text, strlen(new_text), dir,
                                        0.1, NULL, NULL), MNEMO_ERR_IO);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), vp));
    assert_non_null(strstr(mnemo_last_error(), "directory"));
    assert_true(same_bytes(tp, old_train, n_old));
    assert_int_equal(count_entries(dir), 2); /* train.bin, val.bin: nothing staged left over */
    /* train.bin a directory instead: nothing is written either */
    assert_int_equal(remove(vp), 0);
    assert_int_equal(remove(tp), 0);
    assert_int_equal(mkdir(tp, 0777), 0);
    assert_int_equal(mnemo_prepare_text((const unsigned char *)new_text, strlen(new_text), dir,
                                        0.1, NULL, NULL), MNEMO_ERR_IO);
    assert_non_null(strstr(mnemo_last_error(), tp));
    assert_int_equal(count_entries(dir), 1);
    assert_int_equal(remove(tp), 0);
    free(old_train);
}

/* An I/O error injected at every step in turn: until both new files are complete and the
 * first rename has happened, both old files stay as they were; the one remaining window (the
 * val.bin rename failing after train.bin's) is reported as such. Nothing staged is left. */
static void test_prepare_faults(void **s)
{
    (void)s;
    char tp[600], vp[600];
    const char *dir = prep_first("prep_faults", tp, vp), *new_text = prep_new;
    size_t n_ot, n_ov;
    unsigned char *old_train = tu_read_file(tp, &n_ot), *old_val = tu_read_file(vp, &n_ov);
    assert_non_null(old_train);
    assert_non_null(old_val);
    int k, windows = 0;
    for (k = 0; k < 100; k++) {
        mni_afile_fault_after(k);
        enum mnemo_status st = mnemo_prepare_text((const unsigned char *)new_text,
                                                  strlen(new_text), dir, 0.1, NULL, NULL);
        mni_afile_fault_after(-1);
        if (st == MNEMO_OK) break;
        assert_int_equal(st, MNEMO_ERR_IO);
        assert_int_equal(count_entries(dir), 2);
        assert_true(same_bytes(vp, old_val, n_ov));
        if (!same_bytes(tp, old_train, n_ot)) { /* the window: must be said */
            windows++;
            printf("fault %d: %s\n", k, mnemo_last_error());
            assert_non_null(strstr(mnemo_last_error(), "run prepare again"));
        }
    }
    printf("prepare: %d fault points, %d of them in the documented window\n", k, windows);
    assert_true(k >= 12 && k < 100); /* two atomic writes of >= 6 steps each, two renames */
    assert_int_equal(windows, 1);
    assert_false(same_bytes(tp, old_train, n_ot));
    assert_false(same_bytes(vp, old_val, n_ov));
    free(old_train);
    free(old_val);
}

/* ---- nothing non-finite is saved; a diverged run stops --------------------------------------- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every file of dir but log.jsonl, by name and content, sorted by name, in one buffer (caller
 * frees); *n gets its length. */
static unsigned char *snapshot(const char *dir, size_t *n)
{
    char *names[64];
    int k = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..") && strcmp(e->d_name, "log.jsonl")) {
            assert_true(k < 64);
            names[k++] = strdup(e->d_name);
        }
    closedir(d);
    qsort(names, (size_t)k, sizeof(*names), cmp_names);
    unsigned char *buf = NULL;
    *n = 0;
    for (int i = 0; i < k; i++) {
        char p[700];
        size_t fn;
        snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
        unsigned char *f = tu_read_file(p, &fn);
        assert_non_null(f);
        const size_t len = strlen(names[i]) + 1;
        buf = realloc(buf, *n + len + sizeof(fn) + fn);
        assert_non_null(buf);
        memcpy(buf + *n, names[i], len);
        memcpy(buf + *n + len, &fn, sizeof(fn));
        memcpy(buf + *n + len + sizeof(fn), f, fn);
        *n += len + sizeof(fn) + fn;
        free(f);
        free(names[i]);
    }
    return buf;
}

/* Resumes the run in dir (max_steps steps in all) with learning rate lr and expects it to stop
 * with a numeric error, leaving every file but the log byte for byte as it was. */
static void expect_diverged(const char *dir, float lr, int max_steps)
{
    char tr[512], va[512], path[600];
    struct mnemo_train_config tc;
    train_cfg(&tc, dir, tr, va);
    tc.max_steps = max_steps;
    tc.ckpt_every = 0; /* a checkpoint at the end only: a stop must not write one */
    tc.resume = 1;
    tc.lr = lr;
    tc.lr_min = 0;
    tc.warmup = 0;
    tc.weight_decay = 0;
    size_t n0, n1;
    unsigned char *before = snapshot(dir, &n0);
    struct mnemo_model *m;
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    assert_int_equal(mnemo_model_load(&m, path), MNEMO_OK);
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_NUMERIC);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "training stopped, the last good checkpoint"));
    unsigned char *after = snapshot(dir, &n1);
    assert_int_equal(n0, n1);
    assert_memory_equal(before, after, n0);
    free(before);
    free(after);
    mnemo_model_free(m);
}

/* Training stopped by a non-finite value or by the divergence rule. A learning rate of 1e38
 * makes a weight infinite in the first update of a run: it stops at step 1 naming the tensor,
 * having written nothing; resumed at such a rate, a run stops without touching its last
 * checkpoint. A loss that has exploded (an embedding 1000 times too large: hundreds of nats,
 * all finite) stops at once by the divergence rule. The other tests' runs (lr up to 1e-2)
 * show that the rule does not fire on normal training. */
static void test_diverged(void **s)
{
    (void)s;
    char tr[512], va[512], path[600];
    struct mnemo_train_config tc;
    struct mnemo_model *m = small_model();
    const char *dir = make_dir("run_div_inf");
    train_cfg(&tc, dir, tr, va);
    tc.max_steps = 1;
    tc.warmup = 0;
    tc.lr = 1e38f;
    tc.lr_min = 0;
    tc.weight_decay = 0;
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_NUMERIC);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "the update made parameter '"));
    assert_non_null(strstr(mnemo_last_error(), "non-finite"));
    assert_non_null(strstr(mnemo_last_error(), "at step 1;"));
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    assert_int_equal(access(path, F_OK), -1);
    mnemo_model_free(m);

    dir = make_dir("run_div");
    train_cfg(&tc, dir, tr, va);
    tc.max_steps = 4;
    tc.ckpt_every = 2;
    m = small_model();
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_OK);
    mnemo_model_free(m);
    expect_diverged(dir, 1e38f, 8);

    dir = make_dir("run_div_loss");
    train_cfg(&tc, dir, tr, va);
    tc.ckpt_every = 1;
    m = small_model();
    float *wte = mni_model_param(m, MNI_P_WTE, 0);
    for (size_t i = 0; i < m->pinfo[MNI_P_WTE].numel; i++) wte[i] *= 1000.0f;
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_ERR_NUMERIC);
    printf("expected error: %s\n", mnemo_last_error());
    assert_non_null(strstr(mnemo_last_error(), "exceeds 10 ln(vocab) = 55.5"));
    assert_non_null(strstr(mnemo_last_error(), "the run diverged at step 1;"));
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    assert_int_equal(access(path, F_OK), -1);
    mnemo_model_free(m);
}

/* ---- checkpoints survive any I/O error, and the log keeps every step once --------------------- */

/* Removes every file of the flat folder dir (and the folder itself when rm_dir). */
static void empty_dir(const char *dir, int rm_dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    char p[1000];
    for (struct dirent *e; (e = readdir(d));)
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
            assert_int_equal(unlink(p), 0);
        }
    closedir(d);
    if (rm_dir) assert_int_equal(rmdir(dir), 0);
}

/* The "step" records of the log at path, reduced to their step and loss ("1:5.557851"), one
 * per line, into out (cap bytes). */
static void step_records(const char *path, char *out, size_t cap)
{
    size_t n, k = 0;
    char *log = (char *)tu_read_file(path, &n);
    assert_non_null(log);
    out[0] = 0;
    for (char *line = log; line < log + n;) {
        char *end = memchr(line, '\n', (size_t)(log + n - line));
        assert_non_null(end); /* every record whole */
        *end = 0;
        const char *lo = strstr(line, "\"loss\":");
        if (strstr(line, "\"type\":\"step\"") && lo) {
            int w = snprintf(out + k, cap - k, "%ld:%.*s\n", strtol(strstr(line, "\"step\":") + 7,
                             NULL, 10), (int)strcspn(lo + 7, ","), lo + 7);
            assert_true(w > 0 && (size_t)w < cap - k);
            k += (size_t)w;
        }
        line = end + 1;
    }
    free(log);
}

/* The fault test's run: a one-layer model of width 16, windows of 16, 6 steps, a checkpoint
 * every 2, validation at the end (its loss goes into the model file). */
static void fault_run_cfg(struct mnemo_train_config *tc, const char *dir, char *tr, char *va)
{
    train_cfg(tc, dir, tr, va);
    tc->max_steps = 6;
    tc->ckpt_every = 2;
    tc->seq = 16;
    tc->eval_windows = 2;
}

/* Continues the run in dir to its end as `mnemo train` would: resumed when there is a model,
 * started afresh when there is none (a run stopped during its first checkpoint holds none). */
static void finish_run(const char *dir)
{
    char tr[512], va[512], path[700];
    struct mnemo_train_config tc;
    fault_run_cfg(&tc, dir, tr, va);
    struct mnemo_model *m = NULL;
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    if (access(path, F_OK) == 0) {
        assert_int_equal(mnemo_model_load(&m, path), MNEMO_OK);
        tc.resume = 1;
    } else {
        m = tu_model(1, 16, 2, 16, MNEMO_TOK_VOCAB, MNEMO_POS_ROPE, 11);
    }
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_OK);
    mnemo_model_free(m);
}

/* An I/O error injected at every fault point of a run in turn (opening, each write, flush,
 * fsync, close and rename of both files of every checkpoint, and each removal of a superseded
 * state): the run stops with MNEMO_ERR_IO (or, when only a removal failed, goes on), is
 * continued from what is on disk, and must end with the uninterrupted run's model file byte
 * for byte, its step records once each (same losses), and no other file but the last state
 * -- except the superseded state whose removal failed in a run that then ended, which the next
 * start would remove. The work goes to tmpfs when there is one (two fsyncs per write). */
static void test_checkpoint_faults(void **s)
{
    (void)s;
    char tr[512], va[512], dir[600], path[1000], ref_steps[4096], steps[4096];
    struct mnemo_train_config tc;
    const char *ref = make_dir("faults_ref");
    fault_run_cfg(&tc, ref, tr, va);
    struct mnemo_model *m = tu_model(1, 16, 2, 16, MNEMO_TOK_VOCAB, MNEMO_POS_ROPE, 11);
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_OK);
    mnemo_model_free(m);
    size_t ref_n;
    snprintf(path, sizeof(path), "%s/model.safetensors", ref);
    unsigned char *ref_model = tu_read_file(path, &ref_n);
    assert_non_null(ref_model);
    snprintf(path, sizeof(path), "%s/log.jsonl", ref);
    step_records(path, ref_steps, sizeof(ref_steps));
    struct stat sb;
    if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
        snprintf(dir, sizeof(dir), "/dev/shm/mnemo_test_faults_%ld", (long)getpid());
    else
        snprintf(dir, sizeof(dir), "%s", tu_tmp_path("faults"));
    assert_int_equal(mkdir(dir, 0777), 0);
    int k, n_stopped = 0, n_went_on = 0;
    for (k = 0; k < 1000; k++) {
        empty_dir(dir, 0);
        fault_run_cfg(&tc, dir, tr, va);
        m = tu_model(1, 16, 2, 16, MNEMO_TOK_VOCAB, MNEMO_POS_ROPE, 11);
        mni_afile_fault_after(k);
        enum mnemo_status st = mnemo_train(m, &tc, NULL, NULL);
        const int fired = !mni_afile_fault_pending();
        mni_afile_fault_after(-1);
        mnemo_model_free(m);
        if (!fired) { /* past the last fault point */
            assert_int_equal(st, MNEMO_OK);
            break;
        }
        if (st == MNEMO_OK) {
            n_went_on++;
        } else {
            assert_int_equal(st, MNEMO_ERR_IO);
            n_stopped++;
            finish_run(dir);
        }
        snprintf(path, sizeof(path), "%s/model.safetensors", dir);
        if (!same_bytes(path, ref_model, ref_n)) {
            print_error("fault %d: the final model differs from the uninterrupted run's\n", k);
            fail();
        }
        snprintf(path, sizeof(path), "%s/log.jsonl", dir);
        step_records(path, steps, sizeof(steps));
        assert_string_equal(steps, ref_steps);
        snprintf(path, sizeof(path), "%s/train_state.6.safetensors", dir);
        assert_int_equal(access(path, F_OK), 0);
        assert_int_equal(count_entries(dir), 3 + (st == MNEMO_OK)); /* model, state, log */
    }
    printf("checkpoint faults: %d fault points; %d stopped the run and were resumed, %d (a "
           "removal) let it go on; every end equal to the uninterrupted run's\n", k, n_stopped,
           n_went_on);
    assert_true(k > 3 * 10 && k < 1000); /* three checkpoints of two files, >= 5 points each */
    assert_int_equal(n_went_on, 2);      /* the states of steps 2 and 4 superseded */
    empty_dir(dir, 1);
    free(ref_model);
}

/* 1 if dir/name exists. */
static int exists_in(const char *dir, const char *name)
{
    char p[1000];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return access(p, F_OK) == 0;
}

static void touch_in(const char *dir, const char *name, const char *text)
{
    char p[1000];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "ab");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* What a start leaves of a run folder: a resume cuts the log back to its checkpoint's step
 * (records of steps run past it by a killed process, and a last line cut short, go) and
 * removes the temporary files of dead writers and the states of other steps; temporary files
 * of a live process and files that are not the run's stay. A fresh run removes every state. */
static void test_run_dir(void **s)
{
    (void)s;
    char tr[512], va[512], path[600], dead_model[64], dead_state[64], live[64], other[64];
    char steps[4096];
    struct mnemo_train_config tc;
    const char *dir = make_dir("run_dir");
    train_cfg(&tc, dir, tr, va);
    tc.max_steps = 4;
    tc.ckpt_every = 2;
    struct mnemo_model *m = small_model();
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_OK);
    mnemo_model_free(m);
    /* what a process killed at step 6, in the middle of its checkpoint, would leave */
    touch_in(dir, "log.jsonl", "{\"type\":\"step\",\"step\":5,\"loss\":1.0}\n"
                               "{\"type\":\"step\",\"step\":6,\"loss\":1.0}\n{\"type\":\"eva");
    pid_t child = fork(); /* a pid that is surely dead once reaped */
    assert_true(child >= 0);
    if (child == 0) _exit(0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    snprintf(dead_model, sizeof(dead_model), "model.safetensors.tmp.%ld", (long)child);
    snprintf(dead_state, sizeof(dead_state), "train_state.6.safetensors.tmp.%ld", (long)child);
    snprintf(live, sizeof(live), "model.safetensors.tmp.%ld", (long)getppid());
    snprintf(other, sizeof(other), "notes.txt.tmp.%ld", (long)child);
    const char *junk[] = {dead_model, dead_state, live, other, "train_state.9.safetensors",
                          "train_state.safetensors", "train_state.x.safetensors"};
    for (int i = 0; i < 7; i++) touch_in(dir, junk[i], "x");
    tc.max_steps = 6;
    tc.resume = 1;
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    assert_int_equal(mnemo_model_load(&m, path), MNEMO_OK);
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_OK);
    mnemo_model_free(m);
    const int kept[7] = {0, 0, 1, 1, 0, 0, 1};
    for (int i = 0; i < 7; i++) {
        if (exists_in(dir, junk[i]) != kept[i]) {
            print_error("%s: %s\n", junk[i], kept[i] ? "removed" : "left");
            fail();
        }
    }
    snprintf(path, sizeof(path), "%s/log.jsonl", dir);
    step_records(path, steps, sizeof(steps)); /* fails on a line without its newline */
    for (int k = 1; k <= 6; k++) { /* every step once, in order */
        char at[16];
        snprintf(at, sizeof(at), "%s%d:", k == 1 ? "" : "\n", k);
        assert_non_null(strstr(steps, at));
    }
    assert_int_equal(strncmp(steps, "1:", 2), 0);
    size_t n;
    char *log = (char *)tu_read_file(path, &n);
    assert_null(strstr(log, ":1.0}")); /* the killed process's records are gone */
    assert_null(strstr(log, "\"eva\n"));
    int n_steps = 0;
    for (const char *q = log; (q = strstr(q, "\"type\":\"step\"")); q++) n_steps++;
    assert_int_equal(n_steps, 6);
    free(log);
    /* a fresh run in the folder: no state of the old run may stay */
    train_cfg(&tc, dir, tr, va);
    tc.max_steps = 2;
    m = small_model();
    assert_int_equal(mnemo_train(m, &tc, NULL, NULL), MNEMO_OK);
    mnemo_model_free(m);
    assert_false(exists_in(dir, "train_state.6.safetensors"));
    assert_true(exists_in(dir, "train_state.2.safetensors"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_file),
        cmocka_unit_test(test_loader),
        cmocka_unit_test(test_loader_docs),
        cmocka_unit_test(test_loader_lanes),
        cmocka_unit_test(test_model_lanes),
        cmocka_unit_test(test_train_lanes),
        cmocka_unit_test(test_doc_windows_val),
        cmocka_unit_test(test_loss_falls),
        cmocka_unit_test(test_loss_falls_muon),
        cmocka_unit_test(test_eval_stride),
        cmocka_unit_test(test_exact_resume),
        cmocka_unit_test(test_exact_resume_muon),
        cmocka_unit_test(test_mem_repeat),
        cmocka_unit_test(test_ema),
        cmocka_unit_test(test_bad_train_config),
        cmocka_unit_test(test_pruned_eval_and_search),
        cmocka_unit_test(test_prepare_val_blocked),
        cmocka_unit_test(test_prepare_faults),
        cmocka_unit_test(test_diverged),
        cmocka_unit_test(test_checkpoint_faults),
        cmocka_unit_test(test_run_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
