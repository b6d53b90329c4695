/*
 * test_fuzz_found.c -- what the fuzzers (fuzz/, docs/internals/fuzzing.md) found, replayed as
 * unit tests, so that the ordinary builds (Release and ASan) keep it fixed. Each input is
 * rebuilt here in code, not kept as a file.
 */
#include <string.h>

#include "data.h"
#include "testutil.h"

/* fuzz_tokens: two ranks over a stream with room for exactly two windows of T at offset 0
 * (31 tokens, T = 12). An epoch whose random offset is above 7 leaves one window, so rank 1
 * had none and build_epoch failed inside mni_loader_next, which asserts it cannot fail: the
 * process aborted at the first such epoch boundary. Every epoch must give every rank a
 * window inside the stream. */
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
            /* this rank's last window of the epoch, rank + (n_order - 1) * WORLD, fits */
            assert_true(ld.n_order >= 1);
            assert_true(ld.offset + ((uint64_t)rank + (ld.n_order - 1) * WORLD) * T + T <= N);
            assert_int_equal(x[0], MNI_TOK_BOS);
            assert_memory_equal(x + 1, y, (T - 1) * sizeof(uint16_t));
        }
        assert_true(ld.pos.epoch >= 50);
        mni_loader_free(&ld);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_loader_every_rank_every_epoch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
