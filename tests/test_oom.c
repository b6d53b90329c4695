/*
 * test_oom.c -- out-of-memory torture (SQLite's OOM simulation, curl's `runtests.pl -t`).
 *
 * Two scenarios walk every allocating path of the library. The first: model create + init,
 * forward and backward, save and load, a streaming session, prepare + a 2-step training run
 * with validation and checkpoints, and a sliding-window evaluation. The second, the attention
 * kinds' options and tensors: an infini model made with options, its n_ctx and a mutable
 * option changed, a training-mode forward and backward, save and load (options read back from
 * the metadata), and a selective session and its plan with session options. It is run again and again with
 * the allocation hook (mni_alloc_fail_after) armed for k = 0, 1, 2, ...: the k-th allocation
 * fails, either only that one (one-shot) or every one from there on (persistent). Every call
 * must then return MNEMO_OK or MNEMO_ERR_NOMEM with a message, and MNEMO_ERR_NOMEM only when
 * a failure was injected during that very call; objects that a failed call leaves behind must
 * still work (the next call gets a clean error or succeeds) and be freeable. The loop ends
 * when the scenario completes with the hook armed but never fired, i.e. k has passed the
 * number of allocations; that last run must succeed in every call. ASan checks every run for
 * memory errors; with ASAN_OPTIONS=detect_leaks=1 LeakSanitizer checks the error paths for
 * leaks.
 *
 * Kept fast (a few seconds under ASan) by a one-layer model of width 16, one thread, and a
 * working directory on tmpfs when there is one (every atomic write fsyncs twice).
 */
#define _POSIX_C_SOURCE 200809L
#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model.h"
#include "testutil.h"

#define T_WIN 8   /* window length of forward, training and evaluation */
#define B_WIN 2   /* windows per batch */
#define MAX_K 100000L /* a scenario with more allocations than this is a runaway loop */

/* One run of the scenario with the hook armed at k. */
struct run {
    long k;
    int persist;
    long fails_mark; /* injected failures counted before the current call */
    int n_ok;        /* calls that returned MNEMO_OK */
    int n_nomem;     /* calls that returned MNEMO_ERR_NOMEM */
    const char *dir; /* working directory of the scenario */
};

/* Before each checked call: remember the failure count and clear the last error, so that an
 * error without a message is noticed. */
static void begin(struct run *r)
{
    r->fails_mark = mni_alloc_fail_count();
    mni_err(MNEMO_OK, "%s", "");
}

/* After a checked call: MNEMO_OK, or MNEMO_ERR_NOMEM with a message for a failure injected
 * during this call. Anything else fails the test. Returns 1 for MNEMO_OK. */
static int ok(struct run *r, const char *what, enum mnemo_status st)
{
    long injected = mni_alloc_fail_count() - r->fails_mark;
    if (st == MNEMO_OK) {
        r->n_ok++;
        return 1;
    }
    if (st != MNEMO_ERR_NOMEM || injected == 0 || !*mnemo_last_error()) {
        print_error("k = %ld (%s): %s returned %s (\"%s\") after %ld injected failure(s)\n",
                    r->k, r->persist ? "persistent" : "one-shot", what, mnemo_status_str(st),
                    mnemo_last_error(), injected);
        fail();
    }
    r->n_nomem++;
    return 0;
}

/* A call that must fail with exactly want (a follow-up on an object an earlier call left
 * without what this one needs). */
static void expect(struct run *r, const char *what, enum mnemo_status st, enum mnemo_status want)
{
    if (st != want) {
        print_error("k = %ld (%s): %s returned %s (\"%s\"), expected %s\n", r->k,
                    r->persist ? "persistent" : "one-shot", what, mnemo_status_str(st),
                    mnemo_last_error(), mnemo_status_str(want));
        fail();
    }
}

static void path_in(char *buf, size_t n, const struct run *r, const char *name)
{
    snprintf(buf, n, "%s/%s", r->dir, name);
}

/* The working directories, removed by the group teardown even when a test failed. */
static char work_dir[2][512];

/* Removes what an earlier run left in the directory, so that no step can succeed on a stale
 * file; fails the test if an atomic write left a temporary file behind. */
static void clean_dir(const struct run *r)
{
    DIR *d = opendir(r->dir);
    assert_non_null(d);
    struct dirent *e;
    char p[1024];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        if (strstr(e->d_name, ".tmp.")) {
            print_error("k = %ld: temporary file %s left behind\n", r->k, e->d_name);
            fail();
        }
        path_in(p, sizeof(p), r, e->d_name);
        assert_int_equal(unlink(p), 0);
    }
    closedir(d);
}

/* Forward over B windows, then backward. A forward that fails must leave m without logits
 * and refusing backward; retried, it must work as if nothing had happened. Returns 1 if both
 * calls succeeded. */
static int fwd_bwd(struct run *r, struct mnemo_model *m, int B)
{
    uint16_t x[(B_WIN + 1) * T_WIN], y[(B_WIN + 1) * T_WIN];
    for (int i = 0; i < B * T_WIN; i++) {
        x[i] = (uint16_t)((i * 37 + 11) % 257);
        y[i] = (uint16_t)((i * 53 + 5) % 256);
    }
    float loss = 0;
    begin(r);
    if (!ok(r, "forward", mnemo_model_forward(m, x, y, B, T_WIN, &loss))) {
        assert_null(mnemo_model_logits(m));
        expect(r, "backward after a failed forward", mnemo_model_backward(m, 1.0f),
               MNEMO_ERR_ARG);
        begin(r);
        if (!ok(r, "forward (retried)", mnemo_model_forward(m, x, y, B, T_WIN, &loss))) return 0;
    }
    assert_true(loss > 4.0f && loss < 7.0f); /* ~ln(257) for a fresh model */
    assert_non_null(mnemo_model_logits(m));
    begin(r);
    return ok(r, "backward", mnemo_model_backward(m, 1.0f));
}

/* A first forward allocates the activations; a wider one replaces them. */
static void step_fwd_bwd(struct run *r, struct mnemo_model *m)
{
    if (fwd_bwd(r, m, B_WIN)) fwd_bwd(r, m, B_WIN + 1);
}

/* Save (as `name`, a file the run has not written yet), then load and compare; returns the
 * loaded model (or NULL). */
static struct mnemo_model *step_save_load(struct run *r, const struct mnemo_model *m,
                                          const char *name)
{
    char path[1024];
    path_in(path, sizeof(path), r, name);
    begin(r);
    if (!ok(r, "model_save", mnemo_model_save(m, path))) {
        struct stat sb;
        assert_int_equal(stat(path, &sb), -1); /* nothing half-written at the target */
        return NULL;
    }
    struct mnemo_model *m2 = (struct mnemo_model *)1;
    begin(r);
    if (!ok(r, "model_load", mnemo_model_load(&m2, path))) {
        assert_null(m2);
        return NULL;
    }
    assert_int_equal(m2->n_params, m->n_params);
    assert_memory_equal(m2->params, m->params, m->n_params * sizeof(float));
    return m2;
}

static void step_session(struct run *r, struct mnemo_model *m)
{
    struct mnemo_session *s = (struct mnemo_session *)1;
    begin(r);
    if (!ok(r, "session_create", mnemo_session_create(&s, m, 4))) {
        assert_null(s);
        return;
    }
    static const uint16_t tok[5] = {256, 'I', 'n', ' ', 't'};
    const float *logits = NULL;
    begin(r);
    if (ok(r, "session_feed", mnemo_session_feed(s, tok, 3, &logits))) {
        begin(r);
        if (ok(r, "session_feed", mnemo_session_feed(s, tok + 3, 2, &logits)))
            assert_int_equal(mnemo_session_pos(s), 5);
    }
    mnemo_session_free(s);
}

/* Prepare token files, train 2 steps on them (validation and checkpoints at the end), then
 * evaluate with sliding windows. */
static void step_train_eval(struct run *r, struct mnemo_model *m)
{
    static char text[240];
    if (!text[0]) {
        const char *line = "In the beginning God created the heaven and the earth. ";
        size_t n = 0, len = strlen(line);
        while (n + len < sizeof(text)) {
            memcpy(text + n, line, len);
            n += len;
        }
    }
    char tr[1024], va[1024];
    path_in(tr, sizeof(tr), r, "train.bin");
    path_in(va, sizeof(va), r, "val.bin");
    uint64_t n_train = 0, n_val = 0;
    begin(r);
    if (!ok(r, "prepare_text", mnemo_prepare_text((const unsigned char *)text, strlen(text),
                                                  r->dir, 0.25, &n_train, &n_val)))
        return;
    assert_int_equal(n_train + n_val, strlen(text));

    struct mnemo_train_config tc;
    mnemo_train_config_default(&tc);
    tc.train_path = tr;
    tc.val_path = va;
    tc.out_dir = r->dir;
    tc.batch = B_WIN;
    tc.seq = T_WIN;
    tc.max_steps = 2;
    tc.warmup = 0;
    tc.eval_every = 0;
    tc.ckpt_every = 0;
    begin(r);
    ok(r, "train", mnemo_train(m, &tc, NULL, NULL));
    tc.optimizer = MNEMO_OPT_MUON; /* its scratch is one more allocation */
    begin(r);
    ok(r, "train (muon)", mnemo_train(m, &tc, NULL, NULL));

    struct mnemo_eval_result res;
    begin(r);
    if (ok(r, "eval_file", mnemo_eval_file(m, va, T_WIN, T_WIN / 2, B_WIN, 0, &res)))
        assert_true(res.tokens > 0 && res.loss > 0);
}

/* 1 when the option list opts ("k=v,k=v") holds the item kv exactly. */
static int has_opt(const char *opts, const char *kv)
{
    const size_t n = strlen(kv);
    for (const char *p = opts; p && *p;) {
        const size_t len = strcspn(p, ",");
        if (len == n && !strncmp(p, kv, n)) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

/* The second scenario: the attention kinds' options and tensors. A change that fails leaves
 * the model's options as they were. */
static void scenario_kinds(struct run *r)
{
    clean_dir(r);
    struct mnemo_model_config cfg;
    mnemo_model_config_default(&cfg);
    cfg.n_layer = 1;
    cfg.d_model = 16;
    cfg.n_head = 2;
    cfg.n_ctx = T_WIN;
    cfg.vocab = MNEMO_TOK_VOCAB;
    cfg.attn_kind = MNEMO_ATTN_KIND_INFINI;
    cfg.attn_opts = "mem_repeat=4"; /* segment 0: n_ctx */
    struct mnemo_model *m = (struct mnemo_model *)1;
    begin(r);
    if (!ok(r, "model_create (infini)", mnemo_model_create(&m, &cfg))) {
        assert_null(m);
        return;
    }
    mnemo_model_init(m, 7);
    /* n_ctx: segment 0 becomes the old n_ctx (an option list merged) */
    begin(r);
    if (ok(r, "model_set_n_ctx", mnemo_model_set_n_ctx(m, 2 * T_WIN))) {
        assert_int_equal(mnemo_model_get_config(m)->n_ctx, 2 * T_WIN);
        assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=8"));
    } else {
        assert_int_equal(mnemo_model_get_config(m)->n_ctx, T_WIN);
        assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=0"));
    }
    begin(r);
    if (ok(r, "model_set_attn_opts", mnemo_model_set_attn_opts(m, "segment=4")))
        assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=4"));
    else
        assert_false(has_opt(mnemo_model_get_config(m)->attn_opts, "segment=4"));
    assert_true(has_opt(mnemo_model_get_config(m)->attn_opts, "mem_repeat=4"));
    mnemo_model_set_mode(m, 1, 99); /* write weights drawn in forward and backward */
    fwd_bwd(r, m, B_WIN);
    mnemo_model_set_mode(m, 0, 0);
    struct mnemo_model *m2 = step_save_load(r, m, "kinds.safetensors");
    if (m2) assert_string_equal(mnemo_model_get_config(m2)->attn_opts,
                                mnemo_model_get_config(m)->attn_opts);
    mnemo_model_free(m2);
    mnemo_model_free(m);

    /* a selective session with its own options, and its plan */
    cfg.attn_kind = MNEMO_ATTN_KIND_SELECTIVE;
    cfg.attn_opts = "mem_eps=0.1";
    m = (struct mnemo_model *)1;
    begin(r);
    if (!ok(r, "model_create (selective)", mnemo_model_create(&m, &cfg))) {
        assert_null(m);
        return;
    }
    mnemo_model_init(m, 7);
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = 4;
    sc.attn_opts = "budget=4";
    size_t bytes = 0;
    int bounded = -1;
    begin(r);
    if (ok(r, "session_plan", mnemo_session_plan(m, &sc, &bytes, &bounded)))
        assert_true(bytes > 0 && bounded == 1);
    struct mnemo_session *s = (struct mnemo_session *)1;
    begin(r);
    if (ok(r, "session_create_ex", mnemo_session_create_ex(&s, m, &sc))) {
        static const uint16_t tok[12] = {256, 'I', 'n', ' ', 't', 'h', 'e', ' ', 'b', 'e', 'g', 'i'};
        const float *logits = NULL;
        for (int i = 0; i < 3; i++) { /* 12 tokens through 4 slots, past n_ctx = 8 */
            begin(r);
            if (!ok(r, "session_feed", mnemo_session_feed(s, tok + 4 * i, 4, &logits))) break;
        }
        assert_int_equal(mnemo_session_bounded(s), 1);
        mnemo_session_free(s);
    } else {
        assert_null(s);
    }
    mnemo_model_free(m);
}

static void scenario(struct run *r)
{
    clean_dir(r);
    struct mnemo_model_config cfg;
    mnemo_model_config_default(&cfg);
    cfg.n_layer = 1;
    cfg.d_model = 16;
    cfg.n_head = 2;
    cfg.n_ctx = T_WIN;
    cfg.vocab = MNEMO_TOK_VOCAB;
    struct mnemo_model *m = (struct mnemo_model *)1;
    begin(r);
    if (!ok(r, "model_create", mnemo_model_create(&m, &cfg))) {
        assert_null(m);
        return;
    }
    mnemo_model_init(m, 7);
    step_fwd_bwd(r, m);
    struct mnemo_model *m2 = step_save_load(r, m, "model.safetensors");
    step_session(r, m2 ? m2 : m);
    step_train_eval(r, m2 ? m2 : m);
    mnemo_model_free(m2);
    mnemo_model_free(m);
}

/* Runs a scenario for k = 0, 1, ... until the hook is armed but never fires. Returns the
 * number of allocation points (the allocations of a complete run). */
static long torture(int persist, void (*run_scenario)(struct run *), const char *what)
{
    /* tmpfs when there is one: a run does five atomic writes, each with two fsyncs, which
     * on a disk would take most of the test's time */
    char *dir = work_dir[persist];
    struct stat sb;
    if (!dir[0]) { /* made once, for both scenarios */
        if (stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) && access("/dev/shm", W_OK) == 0)
            snprintf(dir, sizeof(work_dir[0]), "/dev/shm/mnemo_test_oom_%ld_%d", (long)getpid(),
                     persist);
        else
            snprintf(dir, sizeof(work_dir[0]), "%s_%d", tu_tmp_path("oom"), persist);
        assert_int_equal(mkdir(dir, 0777), 0);
    }
    struct run r = {0};
    r.persist = persist;
    r.dir = dir;
    int n_failed_runs = 0;
    for (r.k = 0; r.k < MAX_K; r.k++) {
        r.n_ok = r.n_nomem = 0;
        mni_alloc_fail_after(r.k, persist);
        run_scenario(&r);
        long fired = mni_alloc_fail_count(), seen = mni_alloc_seen_count();
        mni_alloc_fail_after(-1, 0);
        if (fired == 0) {
            /* k is past the last allocation: the run must have succeeded in every call */
            assert_int_equal(r.n_nomem, 0);
            assert_int_equal(seen, r.k);
            break;
        }
        if (!persist) assert_int_equal(fired, 1);
        /* a failure was injected: it must have been reported by some call */
        assert_true(r.n_nomem > 0);
        n_failed_runs++;
    }
    assert_true(r.k < MAX_K);
    clean_dir(&r);
    print_message("oom (%s, %s): %ld allocation points exercised, each failed cleanly (%d runs "
                  "with an injected failure, %d calls in the complete run)\n", what,
                  persist ? "persistent" : "one-shot", r.k, n_failed_runs, r.n_ok);
    return r.k;
}

static long n_points[2], n_points_kinds[2];

static void test_oom_one_shot(void **s)
{
    (void)s;
    n_points[0] = torture(0, scenario, "model");
    /* the scenario must reach the library's allocating paths, or the test proves nothing */
    assert_true(n_points[0] > 100);
}

static void test_oom_persistent(void **s)
{
    (void)s;
    n_points[1] = torture(1, scenario, "model");
    assert_true(n_points[1] > 100);
    /* the scenario is deterministic: both variants see the same allocations */
    if (n_points[0]) assert_int_equal(n_points[1], n_points[0]);
}

static void test_oom_kinds_one_shot(void **s)
{
    (void)s;
    n_points_kinds[0] = torture(0, scenario_kinds, "kinds");
    assert_true(n_points_kinds[0] > 100);
}

static void test_oom_kinds_persistent(void **s)
{
    (void)s;
    n_points_kinds[1] = torture(1, scenario_kinds, "kinds");
    assert_true(n_points_kinds[1] > 100);
    if (n_points_kinds[0]) assert_int_equal(n_points_kinds[1], n_points_kinds[0]);
}

/* The hook itself: counting, one-shot and persistent failure, disarming. */
static void test_hook(void **s)
{
    (void)s;
    mni_alloc_fail_after(2, 0);
    void *a = mni_alloc(8), *b = mni_malloc(8), *c = mni_alloc(8), *d = mni_malloc(8);
    assert_non_null(a);
    assert_non_null(b);
    assert_null(c);
    assert_non_null(d);
    assert_int_equal(mni_alloc_fail_count(), 1);
    assert_int_equal(mni_alloc_seen_count(), 3); /* counting stops when a one-shot fires */
    mni_free(a);
    mni_free(b);
    mni_free(d);
    mni_alloc_fail_after(1, 1);
    a = mni_malloc(8);
    assert_non_null(a);
    for (int i = 0; i < 3; i++) assert_null(i % 2 ? mni_alloc(8) : mni_malloc(8));
    assert_int_equal(mni_alloc_fail_count(), 3);
    assert_int_equal(mni_alloc_seen_count(), 4);
    mni_alloc_fail_after(-1, 0);
    b = mni_alloc(8);
    assert_non_null(b);
    assert_int_equal(mni_alloc_fail_count(), 0);
    assert_int_equal(mni_alloc_seen_count(), 0);
    mni_free(a);
    mni_free(b);
}

/* Group teardown: remove the working directories and whatever a failed test left in them. */
static int remove_dirs(void **s)
{
    (void)s;
    for (int i = 0; i < 2; i++) {
        DIR *d = work_dir[i][0] ? opendir(work_dir[i]) : NULL;
        if (!d) continue;
        struct dirent *e;
        char p[1024];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                if (snprintf(p, sizeof(p), "%s/%s", work_dir[i], e->d_name) < (int)sizeof(p))
                    unlink(p);
            }
        closedir(d);
        rmdir(work_dir[i]);
    }
    return 0;
}

int main(void)
{
    /* One thread: the test is about allocations, and OpenMP barriers on a loaded machine
     * would make the thousands of scenario runs crawl. */
    mnemo_set_threads(1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hook),
        cmocka_unit_test(test_oom_one_shot),
        cmocka_unit_test(test_oom_persistent),
        cmocka_unit_test(test_oom_kinds_one_shot),
        cmocka_unit_test(test_oom_kinds_persistent),
    };
    return cmocka_run_group_tests(tests, NULL, remove_dirs);
}
