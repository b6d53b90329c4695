/*
 * bench/gemm.c -- the own gemm (src/kern/gemm.c) against cblas_sgemm (OpenBLAS) on the
 * products of a transformer block's linear layers, measured in the same invocation.
 *
 *   bench_gemm [--d 128,256,384] [--rows 2048] [--threads 2] [--reps 30]
 *
 * For each width d and each layer (qkv: d -> 3d, proj: d -> d, fc: d -> 4d, fcproj: 4d -> d)
 * it times the forward product y = x W^T (B = W transposed, nn.Linear layout) and the
 * backward product to the input dx = dy W, rows = B*T tokens. Both sides compute the plain
 * product (no bias, no epilogue); each time is the best of `reps` calls after one warm-up call,
 * and the two sides alternate in rounds so that machine noise hits both. The weight-gradient
 * product (dW += dy^T x) stays with cblas in the library and is not timed here.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kern/kern.h"
#include "mni.h"

static double best_of(int reps, int own, float *c, const float *a, const float *b, int transb,
                      size_t M, size_t N, size_t K)
{
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = mni_now();
        if (own) {
            if (mni_gemm(c, a, b, transb, M, N, K, NULL) != 0) return -1;
        } else {
            mni_blas_sgemm(c, a, b, transb, M, N, K);
        }
        double dt = mni_now() - t0;
        if (r > 0 && dt < best) best = dt; /* the first call warms threads, caches, buffers */
    }
    return best;
}

int main(int argc, char **argv)
{
    /* as mnemo itself runs: OpenMP threads wait passively, so that they do not spin against
     * OpenBLAS's threads between products (the runtime reads this at start-up: re-exec) */
    if (!getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "passive", 1) == 0) {
        setenv("GOMP_SPINCOUNT", "3000", 0); /* as the mnemo tool (docs/internals/threading.md) */
        execv("/proc/self/exe", argv);
    }
    char dlist[256] = "128,256,384";
    int rows = 2048, threads = 2, reps = 30;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--d") && v) snprintf(dlist, sizeof(dlist), "%s", argv[++i]);
        else if (!strcmp(argv[i], "--rows") && v) rows = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--reps") && v) reps = atoi(argv[++i]);
        else {
            const int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            fprintf(help ? stdout : stderr, "usage: bench_gemm [--d 128,256,384] [--rows 2048] "
                                            "[--threads 2] [--reps 30]\n");
            return help ? 0 : 2;
        }
    }
    if (rows < 32 || threads < 1 || reps < 1) {
        fprintf(stderr, "bench_gemm: need rows >= 32, threads >= 1, reps >= 1\n");
        return 2;
    }
    mni_set_threads(threads);
    printf("bench_gemm: own gemm vs cblas_sgemm, %d rows, %d threads, best of %d\n", rows,
           threads, reps);
    printf("   d layer    product        K     N |  cblas us  GFLOP/s |    own us  GFLOP/s | "
           "speed-up\n");
    /* warm-up: the first second of sgemm calls in a process runs slow (thread start-up, clock
     * ramp); measured here, it made cblas look up to 1.7x slower on the first products */
    {
        size_t n = 512;
        float *a = mni_alloc(n * n * sizeof(float)), *b = mni_alloc(n * n * sizeof(float)),
              *c = mni_alloc(n * n * sizeof(float));
        if (!a || !b || !c) {
            fprintf(stderr, "bench_gemm: out of memory\n");
            return 1;
        }
        for (double t0 = mni_now(); mni_now() - t0 < 1.5;) {
            mni_blas_sgemm(c, a, b, 1, n, n, n);
            mni_gemm(c, a, b, 1, n, n, n, NULL);
        }
        mni_free(a);
        mni_free(b);
        mni_free(c);
    }
    double tot_blas = 0, tot_own = 0;
    for (char *tok = strtok(dlist, ","); tok; tok = strtok(NULL, ",")) {
        size_t d = (size_t)atoi(tok);
        if (d < 1 || d > 8192) {
            fprintf(stderr, "bench_gemm: bad width '%s'\n", tok);
            return 2;
        }
        const size_t io[4][2] = {{d, 3 * d}, {d, d}, {d, 4 * d}, {4 * d, d}}; /* in, out */
        const char *name[4] = {"qkv", "proj", "fc", "fcproj"};
        for (int l = 0; l < 4; l++) {
            size_t C = io[l][0], OC = io[l][1], M = (size_t)rows;
            float *x = mni_alloc(M * C * sizeof(float)), *w = mni_alloc(OC * C * sizeof(float));
            float *y = mni_alloc(M * OC * sizeof(float)), *dx = mni_alloc(M * C * sizeof(float));
            if (!x || !w || !y || !dx) {
                fprintf(stderr, "bench_gemm: out of memory\n");
                return 1;
            }
            for (size_t i = 0; i < M * C; i++) x[i] = (float)((i * 7) % 13) * 0.01f;
            for (size_t i = 0; i < OC * C; i++) w[i] = (float)((i * 5) % 11) * 0.01f;
            for (size_t i = 0; i < M * OC; i++) y[i] = (float)((i * 3) % 17) * 0.01f;
            for (int pass = 0; pass < 2; pass++) {
                /* forward: y (M,OC) = x W^T, K = C; backward: dx (M,C) = dy W, K = OC */
                size_t N = pass ? C : OC, K = pass ? OC : C;
                float *out = pass ? dx : y;
                const float *a = pass ? y : x;
                double tb = 1e30, to = 1e30;
                for (int round = 0; round < 2; round++) {
                    double b = best_of(reps, 0, out, a, w, !pass, M, N, K);
                    double o = best_of(reps, 1, out, a, w, !pass, M, N, K);
                    if (o < 0) {
                        fprintf(stderr, "bench_gemm: the own gemm did not run (no AVX2?)\n");
                        return 1;
                    }
                    if (b < tb) tb = b;
                    if (o < to) to = o;
                }
                double fl = 2.0 * (double)M * (double)N * (double)K;
                printf("%4zu %-7s %-9s %6zu %5zu | %9.1f %8.1f | %9.1f %8.1f | %6.2fx\n", d,
                       name[l], pass ? "dx = dy W" : "y = x W^T", K, N, tb * 1e6, fl / tb * 1e-9,
                       to * 1e6, fl / to * 1e-9, tb / to);
                tot_blas += tb;
                tot_own += to;
            }
            mni_free(x);
            mni_free(w);
            mni_free(y);
            mni_free(dx);
        }
    }
    printf("all products: cblas %.1f us, own %.1f us, speed-up %.2fx\n", tot_blas * 1e6,
           tot_own * 1e6, tot_blas / tot_own);
    return 0;
}
