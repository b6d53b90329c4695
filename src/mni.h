/*
 * mni.h -- internal helpers shared by the library's files: errors, the allocator (with its
 * fault-injection test hook), overflow-checked sizes, the seeded RNG, and timing. Not
 * installed.
 */
#ifndef MNI_H
#define MNI_H

#include <stddef.h>
#include <stdint.h>
#include "mnemo.h"

/* Records a printf-style message for mnemo_last_error() and returns st. */
enum mnemo_status mni_err(enum mnemo_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Programmer errors (broken invariants), never bad input: print file:line and abort through
 * a hook that tests may replace. */
typedef void (*mni_abort_fn)(const char *file, int line, const char *msg);
void mni_set_abort_hook(mni_abort_fn fn);
_Noreturn void mni_abort(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
#define MNEMO_ASSERT(x)                                                                        \
    do {                                                                                       \
        if (!(x)) mni_abort(__FILE__, __LINE__, "assertion failed: %s", #x);                   \
    } while (0)

/* Every heap allocation of the library goes through these two (and cJSON's, through hooks
 * installed by st.c), so that the test hook below reaches all of them.
 * mni_alloc: 64-byte aligned, zero-filled; mni_malloc: malloc's alignment, not initialised, for
 * strings and small arrays. Both return NULL on failure or size overflow (SIZE_MAX from
 * mni_mul/mni_add). Either kind is released with mni_free (which is free(); NULL is ok). */
void *mni_alloc(size_t bytes);
void *mni_malloc(size_t bytes);
void mni_free(void *p);

/* Test hook (SQLite's OOM simulation, curl's torture mode): the n-th allocation from now on
 * (0 = the next one) through mni_alloc/mni_malloc fails as if the heap were exhausted and,
 * with persist, so does every one after it; without persist only that one fails. n < 0
 * disarms. Arming resets the counters below. Process-wide; safe to race with allocating
 * threads, but arm it from one thread at a time. */
void mni_alloc_fail_after(long n, int persist);
/* Since the hook was last armed: allocations it failed, and allocations attempted (failed
 * ones included). While disarmed nothing is counted. */
long mni_alloc_fail_count(void);
long mni_alloc_seen_count(void);
/* The largest request (bytes) among the allocations counted since the hook was last armed;
 * arming with n = LONG_MAX counts without ever failing (what a test of memory use needs). */
size_t mni_alloc_seen_max(void);
/* a*b or SIZE_MAX on overflow (so that the allocation then fails). */
size_t mni_mul(size_t a, size_t b);
size_t mni_add(size_t a, size_t b);
static inline size_t mni_align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Index of the first value of x (n floats) that is infinite or NaN, or n when all are finite.
 * One pass of integer tests over the bits (vectorised), then a second only over the block
 * that holds the first hit. */
size_t mni_first_nonfinite(const float *x, size_t n);

/* Carving one slab into 64-byte aligned buffers. Run the same sequence of mni_carve() calls
 * twice: first with base == NULL to count the floats needed (every pointer handed out is
 * NULL), then over the allocated slab. The count can never disagree with the layout. */
struct mni_carver {
    float *base;  /* NULL: counting pass */
    size_t used;  /* floats handed out so far, each buffer rounded up to 16 floats */
};
static inline float *mni_carve(struct mni_carver *c, size_t n)
{
    float *r = c->base ? c->base + c->used : NULL;
    c->used = mni_add(c->used, mni_align64(mni_mul(n, sizeof(float))) / sizeof(float));
    return r;
}

/* Seeded generator: splitmix64. The whole state is one uint64_t so that it checkpoints. */
struct mni_rng {
    uint64_t s;
};
void mni_rng_seed(struct mni_rng *r, uint64_t seed);
uint64_t mni_rng_u64(struct mni_rng *r);
float mni_rng_uniform(struct mni_rng *r);           /* [0, 1) */
float mni_rng_normal(struct mni_rng *r);            /* N(0, 1) */
uint64_t mni_rng_below(struct mni_rng *r, uint64_t n); /* [0, n), n > 0 */

double mni_now(void); /* monotonic seconds */

#define MNI_PI 3.14159265358979323846
#define MNI_LN2 0.69314718055994530942

#endif /* MNI_H */
