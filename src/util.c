/*
 * util.c -- errors, the allocator and its fault-injection hook, overflow-checked sizes, the
 * RNG, the clock, and the small public identity functions (version, status strings).
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mni.h"

/* ---- errors ------------------------------------------------------------------------------- */

static _Thread_local char last_error[1024];

/* Formats into a local buffer first: an argument may be mnemo_last_error() itself (wrapping
 * an inner error's message), which vsnprintf into last_error would read while overwriting. */
enum mnemo_status mni_err(enum mnemo_status st, const char *fmt, ...)
{
    char buf[sizeof(last_error)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    memcpy(last_error, buf, sizeof(buf));
    return st;
}

const char *mnemo_last_error(void) { return last_error; }

const char *mnemo_status_str(enum mnemo_status st)
{
    switch (st) {
    case MNEMO_OK: return "ok";
    case MNEMO_ERR_NOMEM: return "out of memory";
    case MNEMO_ERR_IO: return "input/output error";
    case MNEMO_ERR_FORMAT: return "bad file format";
    case MNEMO_ERR_ARG: return "invalid argument";
    case MNEMO_ERR_NUMERIC: return "numerical error";
    case MNEMO_ERR_UNSUPPORTED: return "unsupported";
    case MNEMO_ERR_FULL: return "buffer full";
    }
    return "unknown status";
}

int mnemo_version_num(void) { return MNEMO_VERSION_NUM; }

static void default_abort(const char *file, int line, const char *msg)
{
    fprintf(stderr, "mnemo: internal error at %s:%d: %s\n", file, line, msg);
    fflush(stderr);
}

static mni_abort_fn abort_hook = default_abort;

void mni_set_abort_hook(mni_abort_fn fn) { abort_hook = fn ? fn : default_abort; }

_Noreturn void mni_abort(const char *file, int line, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    abort_hook(file, line, msg);
    abort();
}

/* ---- memory -------------------------------------------------------------------------------- */

size_t mni_mul(size_t a, size_t b)
{
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return SIZE_MAX;
    return r;
}

size_t mni_add(size_t a, size_t b)
{
    size_t r;
    if (__builtin_add_overflow(a, b, &r)) return SIZE_MAX;
    return r;
}

/* Fault injection. countdown: allocations still to let through before the failing one, or -1
 * when disarmed (the only state outside tests: one relaxed load per allocation). A one-shot
 * failure disarms; a persistent one leaves the countdown at 0 so that every later call fails.
 * The counters only run while armed. Atomics, because OpenMP threads may allocate too. */
static _Atomic long fail_countdown = -1;
static _Atomic int fail_persist;
static _Atomic long fail_count, seen_count;
static _Atomic size_t seen_max; /* the largest request counted */

void mni_alloc_fail_after(long n, int persist)
{
    atomic_store(&fail_countdown, -1); // no allocation may see a half-armed hook
    atomic_store(&fail_count, 0);
    atomic_store(&seen_count, 0);
    atomic_store(&seen_max, 0);
    atomic_store(&fail_persist, persist != 0);
    if (n >= 0) atomic_store(&fail_countdown, n);
}

long mni_alloc_fail_count(void) { return atomic_load(&fail_count); }
long mni_alloc_seen_count(void) { return atomic_load(&seen_count); }
size_t mni_alloc_seen_max(void) { return atomic_load(&seen_max); }

/* True if this allocation (of bytes) is to fail. */
static int alloc_fault(size_t bytes)
{
    long c = atomic_load_explicit(&fail_countdown, memory_order_relaxed);
    while (c >= 0) {
        long next = c > 0 ? c - 1 : (atomic_load(&fail_persist) ? 0 : -1);
        if (atomic_compare_exchange_weak(&fail_countdown, &c, next)) {
            atomic_fetch_add(&seen_count, 1);
            size_t mx = atomic_load(&seen_max);
            while (bytes > mx && !atomic_compare_exchange_weak(&seen_max, &mx, bytes)) {}
            if (c > 0) return 0;
            atomic_fetch_add(&fail_count, 1);
            return 1;
        }
    }
    return 0;
}

void *mni_alloc(size_t bytes)
{
    if (bytes == SIZE_MAX || bytes > SIZE_MAX - 64) return NULL;
    if (alloc_fault(bytes)) return NULL;
    size_t n = mni_align64(bytes ? bytes : 1);
    void *p = aligned_alloc(64, n);
    if (p) memset(p, 0, n);
    return p;
}

void *mni_malloc(size_t bytes)
{
    if (bytes == SIZE_MAX) return NULL;
    if (alloc_fault(bytes)) return NULL;
    return malloc(bytes ? bytes : 1);
}

void mni_free(void *p) { free(p); }

size_t mni_first_nonfinite(const float *x, size_t n)
{
    enum { BLOCK = 4096 };
    for (size_t i0 = 0; i0 < n; i0 += BLOCK) {
        const size_t end = n - i0 < BLOCK ? n : i0 + BLOCK;
        uint32_t bad = 0;
        for (size_t i = i0; i < end; i++) { /* exponent all ones: inf or NaN */
            uint32_t u;
            memcpy(&u, x + i, sizeof(u));
            bad |= (uint32_t)((u & 0x7f800000u) == 0x7f800000u);
        }
        if (bad)
            for (size_t i = i0; i < end; i++)
                if (!isfinite(x[i])) return i;
    }
    return n;
}

/* ---- RNG: splitmix64 ------------------------------------------------------------------------ */

void mni_rng_seed(struct mni_rng *r, uint64_t seed) { r->s = seed ^ 0x6a09e667f3bcc908ULL; }

uint64_t mni_rng_u64(struct mni_rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

float mni_rng_uniform(struct mni_rng *r) { return (float)(mni_rng_u64(r) >> 40) / 16777216.0f; }

float mni_rng_normal(struct mni_rng *r)
{
    /* Box-Muller; u1 in (0,1] so the log is finite. */
    double u1 = ((double)(mni_rng_u64(r) >> 11) + 1.0) / 9007199254740992.0;
    double u2 = (double)(mni_rng_u64(r) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

uint64_t mni_rng_below(struct mni_rng *r, uint64_t n)
{
    /* Lemire's multiply-shift; the tiny bias is irrelevant for shuffling windows. */
    return (uint64_t)(((unsigned __int128)mni_rng_u64(r) * n) >> 64);
}

double mni_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
