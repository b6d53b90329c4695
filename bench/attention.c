/*
 * bench/attention.c -- time and peak memory of the dense causal attention kind against a naive
 * PyTorch attention that materialises the T x T scores, measured in the same invocation.
 *
 *   bench_attention [--T 512,2048,8192] [--threads 2] [--reps N] [--rope 0|1] [--no-torch]
 *                   [--torch-script PATH] [--python PATH]
 *
 * Shape: B=1, NH=4, HS=64 (fixed, as in the target model). Each case (T, pass) runs in a forked
 * child so that its peak resident set (getrusage ru_maxrss) is its own; "extra" is the peak
 * minus the child's resident set before it allocated anything, so it counts inputs, outputs,
 * saved activations and workspace. Time is the best of the repetitions.
 *
 * FLOP convention: only the causal half counts. A head's forward is 2 matmuls (Q K^T and P V)
 * of 2*HS*T(T+1)/2 flops each; forward+backward counts 7 of them (the forward's 2 plus the 5
 * of the standard backward: dV, dP, dQ, dK and the recomputed S). The exponentials, the
 * masking and our backward's extra recomputation are not counted. The same count is used for
 * PyTorch, which does twice the matmul work (the full square) plus the masked softmax.
 */
#define _POSIX_C_SOURCE 200809L
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "mnemo_attn.h"
#include "mni.h"

#define NH 4
#define HS 64

struct result {
    double best_s;     // best time of one call (forward) or forward+backward
    double busy;       // CPU time / (wall time * threads) of that best repetition
    long extra_bytes;  // peak RSS minus RSS before allocation
    long decl_bytes;   // act + scratch (+ io buffers) as declared by the kind
    int ok;
};

static long maxrss_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss * 1024L;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static double flops(int T, int bwd)
{
    double per_mm = 2.0 * HS * (double)T * (T + 1) / 2.0 * NH;
    return per_mm * (bwd ? 7 : 2);
}

/* The measurement itself, in the child. */
static struct result run_case(int T, int bwd, int reps, int rope, int threads)
{
    struct result r = {0};
#ifdef _OPENMP
    omp_set_num_threads(threads);
#pragma omp parallel
    { (void)0; } // start the thread pool before the baseline is taken
#endif
    long base = maxrss_bytes();
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(MNEMO_ATTN_KIND_DENSE);
    /* one causal layer; dense has no options (opt[] unused) */
    struct mnemo_attn_cfg cfg = {.kind = MNEMO_ATTN_KIND_DENSE, .n_head = NH, .head_dim = HS,
                                 .n_ctx = T, .rope = rope, .rope_theta = 10000.0f,
                                 .n_layer = 1, .causal = 1};
    size_t n_out = (size_t)T * NH * HS, n_qkv = 3 * n_out;
    size_t act_b = ops->act_bytes(&cfg, 1, T), scr_b = ops->scratch_bytes(&cfg, 1, T);
    float *qkv = mni_alloc(n_qkv * 4), *out = mni_alloc(n_out * 4);
    float *dout = bwd ? mni_alloc(n_out * 4) : NULL, *dqkv = bwd ? mni_alloc(n_qkv * 4) : NULL;
    void *act = mni_alloc(act_b), *scratch = mni_alloc(scr_b);
    if (!qkv || !out || !act || !scratch || (bwd && (!dout || !dqkv))) return r;
    struct mni_rng rng;
    mni_rng_seed(&rng, 1);
    for (size_t i = 0; i < n_qkv; i++) qkv[i] = mni_rng_normal(&rng);
    for (size_t i = 0; bwd && i < n_out; i++) dout[i] = mni_rng_normal(&rng);
    struct mnemo_attn_io io = {.B = 1, .T = T, .qkv = qkv, .out = out, .dout = dout,
                               .dqkv = dqkv, .act = act, .scratch = scratch};
    r.decl_bytes = (long)(act_b + scr_b + (n_qkv + n_out) * 4 * (bwd ? 2 : 1));
    r.best_s = 1e30;
    for (int k = 0; k < reps; k++) {
        double t0 = mni_now(), c0 = cpu_now();
        if (ops->forward(&cfg, &io) != MNEMO_OK) return r;
        if (bwd && ops->backward(&cfg, &io) != MNEMO_OK) return r;
        double dt = mni_now() - t0, dc = cpu_now() - c0;
        if (dt < r.best_s) r.best_s = dt, r.busy = dc / (dt * threads);
    }
    r.extra_bytes = maxrss_bytes() - base;
    r.ok = 1;
    return r;
}

static struct result run_forked(int T, int bwd, int reps, int rope, int threads)
{
    struct result r = {0};
    int fd[2];
    if (pipe(fd) != 0) return r;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fd[0]);
        struct result c = run_case(T, bwd, reps, rope, threads);
        ssize_t w = write(fd[1], &c, sizeof(c));
        _exit(w == (ssize_t)sizeof(c) ? 0 : 1);
    }
    close(fd[1]);
    if (pid > 0) {
        if (read(fd[0], &r, sizeof(r)) != (ssize_t)sizeof(r)) r.ok = 0;
        waitpid(pid, NULL, 0);
    }
    close(fd[0]);
    return r;
}

/* PyTorch baseline: one line "T pass seconds extra_bytes" per case from the script. */
struct torch_row {
    int T, bwd;
    double s, busy;
    long extra;
};

static int run_torch(struct torch_row *rows, int max_rows, const char *python, const char *script,
                     const char *Tlist, int threads, int reps_small, int reps_large)
{
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "OMP_NUM_THREADS=%d %s %s --T %s --threads %d --reps %d,%d",
             threads, python, script, Tlist, threads, reps_small, reps_large);
    fflush(stdout);
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof(line), p)) {
        struct torch_row t;
        char pass[16];
        if (sscanf(line, "%d %15s %lf %ld %lf", &t.T, pass, &t.s, &t.extra, &t.busy) == 5 &&
            n < max_rows) {
            t.bwd = strcmp(pass, "fwd+bwd") == 0;
            rows[n++] = t;
        } else {
            fputs(line, stderr); // diagnostics from the script
        }
    }
    int st = pclose(p);
    return st == 0 ? n : (n ? n : -1);
}

static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1;
        fclose(f);
    }
    return l;
}

static int reps_for(int T, int reps)
{
    return reps > 0 ? reps : (T <= 1024 ? 10 : T <= 4096 ? 5 : 3);
}

int main(int argc, char **argv)
{
    char Tlist[256] = "512,2048,8192";
    int threads = 2, reps = 0, rope = 1, torch = 1;
    char script[1024], python[256] = "/usr/bin/python3";
    {
        char here[1024];
        snprintf(here, sizeof(here), "%s", __FILE__);
        snprintf(script, sizeof(script), "%s/attention_torch.py", dirname(here));
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--T") && v) snprintf(Tlist, sizeof(Tlist), "%s", v), i++;
        else if (!strcmp(a, "--threads") && v) threads = (int)strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--reps") && v) reps = (int)strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--rope") && v) rope = (int)strtol(v, NULL, 10), i++;
        else if (!strcmp(a, "--no-torch")) torch = 0;
        else if (!strcmp(a, "--torch-script") && v) snprintf(script, sizeof(script), "%s", v), i++;
        else if (!strcmp(a, "--python") && v) snprintf(python, sizeof(python), "%s", v), i++;
        else {
            const int help = !strcmp(a, "--help") || !strcmp(a, "-h");
            fprintf(help ? stdout : stderr,
                    "usage: %s [--T 512,2048,8192] [--threads 2] [--reps N] [--rope 0|1] "
                    "[--no-torch] [--torch-script PATH] [--python PATH]\n",
                    argv[0]);
            return help ? 0 : 2;
        }
    }
    if (threads < 1) threads = 1;
    int Ts[16], nT = 0;
    {
        char buf[256];
        snprintf(buf, sizeof(buf), "%s", Tlist);
        for (char *tok = strtok(buf, ","); tok && nT < 16; tok = strtok(NULL, ",")) {
            int T = (int)strtol(tok, NULL, 10);
            if (T < 1) {
                fprintf(stderr, "bad --T value '%s'\n", tok);
                return 2;
            }
            Ts[nT++] = T;
        }
    }

    printf("dense causal attention: B=1 NH=%d HS=%d, %d threads, rope=%d\n", NH, HS, threads,
           rope);
    printf("GFLOP/s counts only the causal half: forward = 2 matmuls x 2*HS*T(T+1)/2 per head,\n"
           "forward+backward = 7 such matmuls (2 + the 5 of backward); same count for torch.\n"
           "extra = peak RSS of a forked child minus its RSS before allocating (inputs, outputs,\n"
           "saved activations, workspace); decl = what the kind declares + the io buffers.\n"
           "Machine: %d online CPUs; load average at start %.2f.\n\n",
           (int)sysconf(_SC_NPROCESSORS_ONLN), loadavg());

    struct torch_row trows[64];
    int ntorch = 0;

    printf("%6s %-8s | %9s %8s %5s %9s %9s | %9s %8s %5s %9s | %7s %7s\n", "T", "pass",
           "ours ms", "GFLOP/s", "busy", "extra MB", "decl MB", "torch ms", "GFLOP/s", "busy",
           "extra MB", "t ratio", "m ratio");
    for (int k = 0; k < nT; k++) {
        // torch's cases of this T, then ours: both see the machine in about the same state
        if (torch) {
            char one[32];
            snprintf(one, sizeof(one), "%d", Ts[k]);
            int rs = reps > 0 ? reps : 10, rl = reps > 0 ? reps : 3;
            int got = run_torch(trows + ntorch, 64 - ntorch, python, script, one, threads, rs, rl);
            if (got < 0) {
                printf("torch baseline unavailable (%s %s)\n", python, script);
                torch = 0;
            } else {
                ntorch += got;
            }
        }
        for (int bwd = 0; bwd < 2; bwd++) {
            int T = Ts[k];
            struct result r = run_forked(T, bwd, reps_for(T, reps), rope, threads);
            const char *pass = bwd ? "fwd+bwd" : "fwd";
            if (!r.ok) {
                printf("%6d %-8s | failed\n", T, pass);
                continue;
            }
            double gf = flops(T, bwd) / r.best_s * 1e-9;
            printf("%6d %-8s | %9.2f %8.1f %4.0f%% %9.1f %9.1f |", T, pass, r.best_s * 1e3, gf,
                   100 * r.busy, r.extra_bytes / 1048576.0, r.decl_bytes / 1048576.0);
            const struct torch_row *t = NULL;
            for (int i = 0; i < ntorch; i++) {
                if (trows[i].T == T && trows[i].bwd == bwd) t = &trows[i];
            }
            if (t) {
                printf(" %9.2f %8.1f %4.0f%% %9.1f | %7.3f %7.3f\n", t->s * 1e3,
                       flops(T, bwd) / t->s * 1e-9, 100 * t->busy, t->extra / 1048576.0,
                       r.best_s / t->s,
                       (double)r.extra_bytes / (double)(t->extra > 0 ? t->extra : 1));
            } else {
                printf(" %9s %8s %5s %9s | %7s %7s\n", "-", "-", "-", "-", "-", "-");
            }
            fflush(stdout);
        }
    }
    printf("\nt ratio = ours/torch time (< 1: faster); m ratio = ours/torch extra memory.\n"
           "busy = our CPU time / (wall time x threads) in the best repetition: well below 100%%\n"
           "means other processes had the cores, and the figures understate the kernel.\n");
    return 0;
}
