/*
 * test_fuzz_found.c -- bad inputs found with the fuzzers (fuzz/, docs/internals/fuzzing.md),
 * replayed as unit tests, so that the ordinary builds (Release and ASan) keep them fixed. Each
 * input is rebuilt here in code, not kept as a file.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "st.h"
#include "testutil.h"

/* fuzz_tokens: two ranks over a stream with room for exactly two windows of T at offset 0
 * (31 tokens, T = 12). An epoch whose random offset is above 7 leaves one window, so rank 1
 * had none and build_epoch failed inside mni_loader_next, which asserts it cannot fail: the
 * process aborted at the first such epoch boundary. Every epoch must give every rank a
 * window inside the stream (since the group shares one order: hold one per rank). */
static void test_loader_every_rank_every_epoch(void **s)
{
    (void)s;
    enum { N = 31, T = 12, WORLD = 2 };
    uint16_t tok[N];
    for (int i = 0; i < N; i++) tok[i] = (uint16_t)('a' + i % 26);
    for (int rank = 0; rank < WORLD; rank++) {
        struct mni_loader ld;
        assert_int_equal(mni_loader_init(&ld, tok, N, T, 7, rank, WORLD), MNEMO_OK);
        uint16_t x[T], y[T];
        for (int k = 0; k < 100; k++) { /* about 100 epochs: one window per rank each */
            mni_loader_next(&ld, x, y, 1);
            /* the group's epoch has a window for every rank, and its last window fits */
            assert_true(ld.n_order >= WORLD);
            assert_true(ld.offset + ld.n_order * T <= N);
            assert_int_equal(x[0], MNI_TOK_BOS);
            assert_memory_equal(x + 1, y, (T - 1) * sizeof(uint16_t));
        }
        assert_true(ld.pos.epoch >= 50);
        mni_loader_free(&ld);
    }
}

/* fuzz_ckpt (an input made by hand while reading the loader, which the harness reported as
 * out of memory): a checkpoint of a few bytes whose metadata claims the largest model the config check allows
 * (1,024 layers of width 65,536: about 2^45 parameters). The loader allocated the model before
 * reading a tensor: out of memory here (an ASan build aborts), and a claim of a few GB was
 * allocated and zeroed before the first read failed (800 MB for a 2.8 KB file: 1.8 s). It is
 * a format error now, found before any parameter memory. */
static void test_checkpoint_claims_huge_model(void **s)
{
    (void)s;
    const char *meta[] = {"mnemo.format", "1",        "n_layer",    "1024", "d_model", "65536",
                          "n_head",       "256",      "n_ctx",      "4",    "vocab",   "3",
                          "vocab_padded", "16",       "pos",        "rope", "rope_theta", "10000",
                          "attn_kind",    "dense"};
    const float w[4] = {0};
    struct mni_st_tensor t = {.name = "wte.weight", .dtype = MNI_ST_F32, .ndim = 1,
                              .shape = {4}, .data = w};
    const char *path = tu_tmp_path("huge_claim.safetensors");
    assert_int_equal(mni_st_write(path, &t, 1, meta, sizeof(meta) / sizeof(meta[0]) / 2),
                     MNEMO_OK);
    struct mnemo_model *m;
    mni_alloc_fail_after(LONG_MAX, 0); /* counts, and records the largest allocation */
    assert_int_equal(mnemo_model_load(&m, path), MNEMO_ERR_FORMAT);
    const size_t largest = mni_alloc_seen_max();
    mni_alloc_fail_after(-1, 0);
    assert_null(m);
    printf("expected error: %s (largest allocation %zu bytes)\n", mnemo_last_error(), largest);
    /* the table's first tensor is checked against the file before anything is allocated */
    assert_non_null(strstr(mnemo_last_error(), "wte.weight"));
    assert_true(largest < 256 * 1024);
    remove(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loader_every_rank_every_epoch),
        cmocka_unit_test(test_checkpoint_claims_huge_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
