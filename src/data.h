/*
 * data.h -- token files and the training-window loader.
 *
 * Token file (little-endian; docs/formats.md):
 *   offset 0  char[8]  magic "MNEMOTOK"
 *          8  u32      version (1)
 *         12  u32      token width in bytes (2)
 *         16  u32      vocabulary size (every id < vocab)
 *         20  u32      reserved (0)
 *         24  u64      token count n
 *         32  u16[n]   tokens
 *
 * Windows: a window starting at s of a stream tok[] is x = [BOS, tok[s .. s+T-2]],
 * y = tok[s .. s+T-1], so every window starts with BOS and every token of the stream is a
 * target exactly once per epoch (windows are T apart, from a per-epoch random offset).
 */
#ifndef MNI_DATA_H
#define MNI_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

#define MNI_TOK_BOS 256     /* the byte tokenizer's BOS id */
#define MNI_TOK_VOCAB 257   /* 256 bytes + BOS */

struct mni_tokens {
    uint16_t *tok;  /* (n), owned */
    uint64_t n;
    int vocab;
};

/* Writes n tokens atomically. */
enum mnemo_status mni_tokens_write(const char *path, const uint16_t *tok, uint64_t n, int vocab);
/* Reads and validates a token file (header, exact size, every id < vocab). */
enum mnemo_status mni_tokens_read(struct mni_tokens *out, const char *path);
void mni_tokens_free(struct mni_tokens *t);
/* mni_tokens_read, refusing (MNEMO_ERR_ARG, nothing held) a file whose vocabulary is larger than
 * the model's vocab. */
enum mnemo_status mni_tokens_read_for(struct mni_tokens *out, const char *path, int vocab);

/* Position of the loader, all that an exact resume needs besides the seed. */
struct mni_loader_pos {
    uint64_t epoch;  /* epochs started so far - 1 */
    uint64_t index;  /* next slot in this epoch's order */
};

struct mni_loader {
    const uint16_t *tok; /* borrowed stream */
    uint64_t n;
    int T;
    int rank, world;
    uint64_t seed;
    struct mni_loader_pos pos;
    /* this epoch's window order (starts), for this rank */
    uint64_t offset;     /* the epoch's random offset in [0, T) */
    uint32_t *order;     /* (n_order) window indices */
    uint64_t n_order;
    uint64_t cap_order;
    /* document mode (mni_loader_init_docs): the candidate window starts, one per document;
     * order then indexes this list and offset stays 0 */
    uint64_t *starts;    /* (n_starts), NULL in the default mode */
    uint64_t n_starts;
    /* lanes mode (mni_loader_init_lanes): lanes per rank, and the windows of each lane's run
     * this epoch; pos.index counts windows handed out, lane-major within a step */
    int lanes;           /* 0 in the other modes */
    uint64_t run;
};

/* The stream must hold at least one window of T tokens per rank, T * world (MNEMO_ERR_ARG
 * otherwise). */
enum mnemo_status mni_loader_init(struct mni_loader *ld, const uint16_t *tok, uint64_t n, int T,
                                  uint64_t seed, int rank, int world);
/* Document mode, for data of one example per line (synthetic tasks, pass keys): every window
 * starts at the beginning of a document -- position 0 or just after a token equal to sep -- and
 * runs T tokens from there (into the next documents when the document is shorter). Each
 * document with T tokens left in the stream starts one window per epoch, in a shuffled order.
 * MNEMO_ERR_ARG if no document leaves room for a window. */
enum mnemo_status mni_loader_init_docs(struct mni_loader *ld, const uint16_t *tok, uint64_t n,
                                       int T, uint64_t seed, int rank, int world, uint16_t sep);
/* Lanes mode, for kinds that carry a state from one window to the next: each epoch (from a
 * random offset in [0, T)) the stream is cut into lanes * world runs of equal length, a whole
 * number of windows each (the few tokens left over at the end wait for another epoch's
 * offset); the group's lanes are numbered as one process with batch B world would number them
 * (micro-batch a: a B world .. (a+1) B world - 1, rank r's B of them from a B world + r B), a
 * lane reads its run from its start, a window per step, so consecutive windows of a lane are
 * consecutive text. A window continues the text before it:
 * x = t_{s-1}..t_{s+T-2} (BOS, x = [BOS, t_s..], at a run's start only), y = t_s..t_{s+T-1}.
 * Every token is a target at most once per epoch. MNEMO_ERR_ARG if the stream has fewer than
 * lanes * world windows. Windows are taken with mni_loader_next_lanes. */
enum mnemo_status mni_loader_init_lanes(struct mni_loader *ld, const uint16_t *tok, uint64_t n,
                                        int T, uint64_t seed, int rank, int world, int lanes);
/* The next windows of B lanes (a step's lanes in order, B dividing lanes): x, y (B,T), *first
 * the first of them; returns 1 if they start their runs (new text: their states start over). */
int mni_loader_next_lanes(struct mni_loader *ld, uint16_t *x, uint16_t *y, int B, int *first);
/* The document starts of a stream with room for a window: positions p with p + T <= n that are
 * 0 or follow a token equal to sep. Returns how many; fills starts (if not NULL) with them. */
uint64_t mni_doc_starts(const uint16_t *tok, uint64_t n, int T, uint16_t sep, uint64_t *starts);
/* The window of T tokens at s: x = [BOS, t_s..t_{s+T-2}], y = t_s..t_{s+T-1}. */
void mni_window_at(const uint16_t *tok, uint64_t s, int T, uint16_t *x, uint16_t *y);
/* Moves to a saved position (rebuilding that epoch's order). */
enum mnemo_status mni_loader_seek(struct mni_loader *ld, struct mni_loader_pos pos);
/* Fills x, y (B,T) with the next B windows of this rank: the group walks one shuffled order
 * (the same on every rank, from the seed), B windows per rank in rank order, so that W ranks
 * at batch B read what one process at batch W B reads, split; pos counts the group's windows. */
void mni_loader_next(struct mni_loader *ld, uint16_t *x, uint16_t *y, int B);
void mni_loader_free(struct mni_loader *ld);

/* Evaluation windows of T tokens starting S apart from 0 (S <= T; no shuffling): how many fit
 * in n tokens, and the i-th one (x = [BOS, t_s..t_{s+T-2}], y = t_s..t_{s+T-1}, s = i*S). */
uint64_t mni_eval_windows(uint64_t n, int T, int S);
/* The j-th of `used` windows spread evenly over all `all` of them (j when used == all), so
 * that a capped evaluation samples the whole split, not its beginning. */
static inline uint64_t mni_eval_pick(uint64_t j, uint64_t used, uint64_t all)
{
    return used >= all ? j : (uint64_t)((unsigned __int128)j * all / used);
}
void mni_eval_window(const uint16_t *tok, uint64_t i, int T, int S, uint16_t *x, uint16_t *y);

#endif /* MNI_DATA_H */
