/*
 * fuzz_tokens.c -- libFuzzer harness for the token-file reader and the window loaders
 * (src/data.c): the input is a token file's bytes.
 *
 * A file that reads must be exactly its header plus its tokens, every id inside the
 * vocabulary. Its stream then goes through the three loaders and the evaluation windows, with a
 * window length, a world size and a separator taken from the tokens themselves, so that
 * short streams, one-token documents and ranks without a window are all reached: every
 * window must lie inside the stream (ASan) and be shaped as data.h says.
 */
#include <string.h>

#include "data.h"
#include "fuzz.h"

#define MAX_T 48
#define B 2

/* A batch of windows: x = [BOS, y_0 .. y_{T-2}], ids of the stream's vocabulary. */
static void check_windows(const uint16_t *x, const uint16_t *y, int n_win, int T, int vocab)
{
    for (int b = 0; b < n_win; b++) {
        const uint16_t *xb = x + (size_t)b * T, *yb = y + (size_t)b * T;
        FUZZ_CHECK(xb[0] == MNI_TOK_BOS);
        for (int j = 0; j < T; j++) FUZZ_CHECK(yb[j] < vocab);
        FUZZ_CHECK(!memcmp(xb + 1, yb, (size_t)(T - 1) * sizeof(uint16_t)));
    }
}

/* Three batches, a seek to the end of the epoch and the batch after it (a new epoch). */
static void run_loader(struct mni_loader *ld, int T, int vocab)
{
    uint16_t x[B * MAX_T], y[B * MAX_T];
    for (int k = 0; k < 3; k++) {
        mni_loader_next(ld, x, y, B);
        check_windows(x, y, B, T, vocab);
    }
    const uint64_t n_order = ld->n_order;
    struct mni_loader_pos past = {ld->pos.epoch, n_order + 1}, end = {ld->pos.epoch, n_order};
    FUZZ_CHECK(mni_loader_seek(ld, past) == MNEMO_ERR_FORMAT);
    FUZZ_CHECK(mni_loader_seek(ld, end) == MNEMO_OK);
    mni_loader_next(ld, x, y, B);
    check_windows(x, y, B, T, vocab);
    mni_loader_free(ld);
}

/* Lanes: two steps and then a seek to the epoch's end and the step after it, each lane's window
 * continuing the text (x shifted from y by one, BOS only where a lane starts). */
static void run_lanes(struct mni_loader *ld, int T, int lanes, int vocab)
{
    uint16_t x[MAX_T], y[MAX_T];
    for (int k = 0; k < 3; k++) {
        if (k == 2) {
            struct mni_loader_pos end = {ld->pos.epoch, ld->n_order};
            FUZZ_CHECK(mni_loader_seek(ld, end) == MNEMO_OK);
        }
        for (int l = 0; l < lanes; l++) { /* micro-batches of one lane */
            int first;
            const int fresh = mni_loader_next_lanes(ld, x, y, 1, &first);
            FUZZ_CHECK(first == l && (fresh ? x[0] == MNI_TOK_BOS : x[0] < vocab));
            for (int j = 0; j < T; j++) FUZZ_CHECK(y[j] < vocab);
            FUZZ_CHECK(!memcmp(x + 1, y, (size_t)(T - 1) * sizeof(uint16_t)));
        }
    }
    mni_loader_free(ld);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    struct mni_tokens t;
    if (mni_tokens_read(&t, path) != MNEMO_OK) {
        FUZZ_CHECK(t.tok == NULL && t.n == 0);
        return 0;
    }
    FUZZ_CHECK(t.n >= 1 && size == 32 + 2 * t.n && t.vocab >= 2 && t.vocab <= 65536);
    for (uint64_t i = 0; i < t.n; i++) FUZZ_CHECK(t.tok[i] < t.vocab);

    struct mni_tokens t2; /* the model's vocabulary check: refused, or the same stream */
    enum mnemo_status st = mni_tokens_read_for(&t2, path, MNI_TOK_VOCAB);
    FUZZ_CHECK(t.vocab > MNI_TOK_VOCAB ? st == MNEMO_ERR_ARG && !t2.tok
                                       : st == MNEMO_OK && t2.n == t.n);
    mni_tokens_free(&t2);

    const int T = 1 + t.tok[0] % MAX_T, world = 1 + t.tok[t.n - 1] % 3;
    const int rank = (int)(t.n % (uint64_t)world);
    const uint16_t sep = t.tok[t.n / 2];
    struct mni_loader ld;
    if (mni_loader_init(&ld, t.tok, t.n, T, t.n, rank, world) == MNEMO_OK)
        run_loader(&ld, T, t.vocab);
    else
        FUZZ_CHECK(t.n < (uint64_t)T * (uint64_t)world); /* it refuses only too short a stream */
    if (mni_loader_init_docs(&ld, t.tok, t.n, T, t.n, rank, world, sep) == MNEMO_OK)
        run_loader(&ld, T, t.vocab);
    const int lanes = 1 + (int)(t.n % 3);
    if (mni_loader_init_lanes(&ld, t.tok, t.n, T, t.n, rank, world, lanes) == MNEMO_OK)
        run_lanes(&ld, T, lanes, t.vocab);
    else
        FUZZ_CHECK(t.n / (uint64_t)T < (uint64_t)lanes * (uint64_t)world);

    const int S = 1 + t.tok[0] % T; /* evaluation windows: the last one ends inside */
    const uint64_t n_eval = mni_eval_windows(t.n, T, S);
    FUZZ_CHECK((n_eval == 0) == (t.n < (uint64_t)T));
    if (n_eval) {
        uint16_t x[MAX_T], y[MAX_T];
        mni_eval_window(t.tok, n_eval - 1, T, S, x, y);
        check_windows(x, y, 1, T, t.vocab);
        FUZZ_CHECK((n_eval - 1) * (uint64_t)S + (uint64_t)T + (uint64_t)S > t.n); /* the last */
    }
    mni_tokens_free(&t);
    return 0;
}
