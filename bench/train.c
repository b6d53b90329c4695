/*
 * bench/train.c -- training throughput of mnemo beside PyTorch, in one invocation.
 *
 * For each shape: the sgemm rate (the MFU baseline, same threads), mnemo's tokens/s over full
 * training steps (forward, backward, clipping, AdamW) on random tokens, and the same model in
 * PyTorch (bench/train_torch.py, its fastest configuration on this machine), alternating
 * rounds so that both see the same machine; the best round of each is reported with the ratio.
 *
 * usage: bench_train [--shape a|b|all] [--threads 2] [--steps 10] [--rounds 2] [--no-torch]
 *   (a) L=4, d=256, H=4, T=256, B=8, V=256      (b) L=6, d=384, H=6, T=512, B=4, V=256
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mnemo.h"

#ifndef MNEMO_SOURCE_DIR
#define MNEMO_SOURCE_DIR "."
#endif

struct shape {
    const char *name;
    int L, d, H, T, B, V;
};

static const struct shape shapes[] = {
    {"a", 4, 256, 4, 256, 8, 256},
    {"b", 6, 384, 6, 512, 4, 256},
};

static double torch_tokens_per_s(const struct shape *s, int threads, int steps, int warmup)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 %s/bench/train_torch.py --layers %d --d %d --heads %d --ctx %d "
             "--batch %d --vocab %d --threads %d --steps %d --warmup %d",
             MNEMO_SOURCE_DIR, s->L, s->d, s->H, s->T, s->B, s->V, threads, steps, warmup);
    FILE *p = popen(cmd, "r");
    if (!p) return 0;
    char line[4096];
    double tps = 0;
    while (fgets(line, sizeof(line), p)) {
        const char *k = strstr(line, "\"tokens_per_s\":");
        if (k) tps = atof(k + 15);
    }
    if (pclose(p) != 0) return 0;
    return tps;
}

int main(int argc, char **argv)
{
    /* PyTorch's fastest configuration waits passively; so do we (unless told otherwise), and
     * the OpenMP runtime reads the policy at start-up, hence the re-exec. */
    if (!getenv("OMP_WAIT_POLICY") && setenv("OMP_WAIT_POLICY", "passive", 1) == 0) {
        setenv("GOMP_SPINCOUNT", "3000", 0); /* as the mnemo tool (docs/internals/threading.md) */
        execv("/proc/self/exe", argv);
    }
    const char *which = "all";
    int threads = 2, steps = 10, rounds = 2, torch = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--shape") && i + 1 < argc) which = argv[++i];
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--no-torch")) torch = 0;
        else {
            const int help = !strcmp(argv[i], "--help") || !strcmp(argv[i], "-h");
            fprintf(help ? stdout : stderr, "usage: bench_train [--shape a|b|all] [--threads N] "
                                            "[--steps N] [--rounds N] [--no-torch]\n");
            return help ? 0 : 2;
        }
    }
    if (threads < 1 || steps < 1 || rounds < 1) {
        fprintf(stderr, "bench_train: --threads, --steps and --rounds must be >= 1\n");
        return 2;
    }
    mnemo_set_threads(threads);
    time_t now = time(NULL);
    char date[32];
    strftime(date, sizeof(date), "%Y-%m-%d %H:%M", gmtime(&now));
    printf("bench_train: %s UTC, %d threads, %d timed steps (median), best of %d rounds\n", date,
           threads, steps, rounds);
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const struct shape *s = &shapes[k];
        if (strcmp(which, "all") && strcmp(which, s->name)) continue;
        struct mnemo_model_config mc;
        mnemo_model_config_default(&mc);
        mc.n_layer = s->L;
        mc.d_model = s->d;
        mc.n_head = s->H;
        mc.n_ctx = s->T;
        mc.vocab = s->V;
        double best = 0, best_torch = 0, sgemm = 0, gflops = 0;
        for (int r = 0; r < rounds; r++) {
            double sg = mnemo_bench_sgemm(1024, 5);
            if (sg > sgemm) sgemm = sg;
            struct mnemo_bench_result res;
            if (mnemo_bench_train(&mc, s->B, s->T, steps, 2, &res) != MNEMO_OK) {
                fprintf(stderr, "bench_train: %s\n", mnemo_last_error());
                return 1;
            }
            if (res.tokens_per_s > best) {
                best = res.tokens_per_s;
                gflops = res.achieved_gflops;
            }
            if (torch) {
                double t = torch_tokens_per_s(s, threads, steps, 2);
                if (t > best_torch) best_torch = t;
            }
        }
        printf("shape (%s) L=%d d=%d H=%d T=%d B=%d V=%d\n", s->name, s->L, s->d, s->H, s->T, s->B, s->V);
        printf("  mnemo    %8.0f tokens/s  %6.1f GFLOP/s  MFU %5.1f%% (sgemm %.1f GFLOP/s)\n", best,
               gflops, 100.0 * gflops / sgemm, sgemm);
        if (torch) {
            if (best_torch > 0)
                printf("  pytorch  %8.0f tokens/s\n  ratio    %.2fx mnemo/pytorch\n", best_torch,
                       best / best_torch);
            else
                printf("  pytorch  (failed to run /usr/bin/python3 bench/train_torch.py)\n");
        }
        fflush(stdout);
    }
    return 0;
}
