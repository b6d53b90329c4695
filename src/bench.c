/*
 * bench.c -- measurement helpers shared by `mnemo bench` and bench/train: training throughput on
 * random tokens, the model's FLOPs per token, and the sgemm rate that MFU is measured against.
 * These time things; tests never call them.
 */
#include <stdlib.h>
#include <string.h>

#include "kern/kern.h"
#include "mni.h"
#include "model.h"
#include "optim.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Model FLOPs per trained token: 6 x (multiply-adds of every matmul per token) plus 3 x the
 * attention kind's forward FLOPs per token of each layer (forward 1, backward 2: only the
 * products its pattern computes, the kind's own count). No recomputation counted. */
static double flops_per_token(const struct mnemo_model *m, int T)
{
    const struct mnemo_model_config *c = &m->cfg;
    double C = c->d_model, L = c->n_layer, Vp = c->vocab_padded;
    double matmul = L * 12.0 * C * C + C * Vp, attn = 0;
    for (int l = 0; l < c->n_layer; l++) attn += m->attn->flops_per_token(&m->lcfg[l], T);
    return 6.0 * matmul + 3.0 * attn;
}

enum mnemo_status mnemo_bench_train(const struct mnemo_model_config *cfg, int B, int T, int steps,
                                    int warmup, struct mnemo_bench_result *res)
{
    return mnemo_bench_train_opt(cfg, B, T, steps, warmup, MNEMO_OPT_ADAMW, res);
}

enum mnemo_status mnemo_bench_train_opt(const struct mnemo_model_config *cfg, int B, int T,
                                        int steps, int warmup, int optimizer,
                                        struct mnemo_bench_result *res)
{
    memset(res, 0, sizeof(*res));
    if (steps < 1 || warmup < 0 || B < 1 || T < 1)
        return mni_err(MNEMO_ERR_ARG, "bench: steps %d, batch %d, T %d must be >= 1 and warmup %d "
                       ">= 0", steps, B, T, warmup);
    struct mnemo_model *m;
    enum mnemo_status st = mnemo_model_create(&m, cfg);
    if (st != MNEMO_OK) return st;
    mnemo_model_init(m, 1);
    struct mnemo_train_config tc;
    mnemo_train_config_default(&tc);
    tc.optimizer = optimizer;
    if (!mnemo_optimizer_name(optimizer)) {
        mnemo_model_free(m);
        return mni_err(MNEMO_ERR_ARG, "bench: unknown optimizer %d", optimizer);
    }
    const int threads = mni_get_threads();
    const size_t nwork = mni_optim_work_floats(m, &tc, threads);
    size_t N = (size_t)B * T;
    uint16_t *x = mni_alloc(N * 2 * sizeof(uint16_t));
    float *am = mni_alloc(mni_mul(m->n_params, sizeof(float)));
    float *av = mni_alloc(mni_mul(m->n_params, sizeof(float)));
    double *times = mni_alloc((size_t)steps * sizeof(double));
    float *work = nwork ? mni_alloc(mni_mul(nwork, sizeof(float))) : NULL;
    if (!x || !am || !av || !times || (nwork && !work) || mni_model_alloc_grads(m) != MNEMO_OK) {
        st = mni_err(MNEMO_ERR_NOMEM, "bench: out of memory");
        goto out;
    }
    struct mni_rng rng;
    mni_rng_seed(&rng, 7);
    for (size_t i = 0; i < 2 * N; i++) x[i] = (uint16_t)mni_rng_below(&rng, (uint64_t)m->cfg.vocab);
    for (int s = 0; s < warmup + steps; s++) {
        double t0 = mni_now();
        float loss;
        mnemo_model_zero_grad(m);
        if ((st = mnemo_model_forward(m, x, x + N, B, T, &loss))) goto out;
        if ((st = mnemo_model_backward(m, 1.0f))) goto out;
        double gn = mni_grad_norm(m);
        mni_optim_step(m, am, av, work, threads, s, 1e-4f, gn > 1.0 ? (float)(1.0 / gn) : 1.0f, &tc);
        if (s >= warmup) times[s - warmup] = mni_now() - t0;
    }
    qsort(times, (size_t)steps, sizeof(double), cmp_double);
    res->step_s = times[steps / 2];
    res->tokens_per_s = (double)N / res->step_s;
    res->flops_per_token = flops_per_token(m, T);
    res->achieved_gflops = res->flops_per_token * res->tokens_per_s / 1e9;
out:
    mni_free(x);
    mni_free(am);
    mni_free(av);
    mni_free(times);
    mni_free(work);
    mnemo_model_free(m);
    return st;
}

double mnemo_bench_sgemm(int n, int reps)
{
    if (n < 1 || n > 16384 || reps < 1) return 0; /* nothing measured */
    size_t nn = (size_t)n * n;
    float *a = mni_alloc(nn * sizeof(float)), *b = mni_alloc(nn * sizeof(float));
    float *c = mni_alloc(nn * sizeof(float));
    if (!a || !b || !c) {
        mni_free(a);
        mni_free(b);
        mni_free(c);
        return 0;
    }
    for (size_t i = 0; i < nn; i++) {
        a[i] = (float)(i % 7) * 0.1f;
        b[i] = (float)(i % 5) * 0.1f;
    }
    double best = 1e30;
    for (int r = 0; r < reps + 1; r++) {
        double t0 = mni_now();
        mni_blas_sgemm(c, a, b, 1, (size_t)n, (size_t)n, (size_t)n);
        double dt = mni_now() - t0;
        if (r > 0 && dt < best) best = dt; /* the first call warms up threads and caches */
    }
    mni_free(a);
    mni_free(b);
    mni_free(c);
    return 2.0 * (double)n * n * n / best / 1e9;
}
