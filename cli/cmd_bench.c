/*
 * cmd_bench.c -- mnemo bench: training throughput and MFU of a model shape on this machine
 * (random tokens; MFU against the sgemm rate measured in the same run, same threads).
 * bench/train adds the PyTorch comparison.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cmd_bench(int argc, char **argv)
{
    struct mnemo_model_config mc;
    mnemo_model_config_default(&mc);
    mc.vocab = 256;
    int B = 8, steps = 10, warmup = 2, threads = 2;
    const char *attn = "dense", *optim = "adamw";
    struct cli_attn ka = {0};
    const struct opt opts[] = {
        {"n_layer", OPT_INT, &mc.n_layer, "transformer blocks"},
        {"d_model", OPT_INT, &mc.d_model, "model width"},
        {"n_head", OPT_INT, &mc.n_head, "attention heads"},
        {"n_ctx", OPT_INT, &mc.n_ctx, "window length T"},
        {"vocab", OPT_INT, &mc.vocab, "vocabulary"},
        {"attn", OPT_STR, &attn,
         "attention kind (listed below; a kind other than dense is measured beside dense at "
         "the same shape, in the same run)"},
        {"attn_opt", OPT_ATTN, &ka, "the kind's options KEY=VALUE,... (also --KEY VALUE)"},
        {"batch", OPT_INT, &B, "windows per step"},
        {"steps", OPT_INT, &steps, "timed steps (the median is reported)"},
        {"warmup", OPT_INT, &warmup, "untimed steps first"},
        {"threads", OPT_INT, &threads, "threads"},
        {"optimizer", OPT_STR, &optim,
         "adamw, or muon (then AdamW is measured too, in the same run, as the baseline)"},
    };
    const char *pos[1];
    int n_pos;
    cli_parse("bench", "[options]", argc, argv, opts, sizeof(opts) / sizeof(opts[0]), pos, &n_pos, 0);
    if (threads < 1) cli_die("bench", "--threads must be >= 1");
    if (steps < 1 || warmup < 0 || B < 1)
        cli_die("bench", "--steps and --batch must be >= 1, --warmup >= 0");
    mc.attn_kind = mnemo_attn_kind_from_name(attn);
    if (mc.attn_kind < 0) cli_die("bench", "--attn '%s': unknown attention kind", attn);
    mc.attn_opts = cli_attn_all(&ka);
    const int opt = mnemo_optimizer_from_name(optim);
    if (opt < 0) cli_die("bench", "--optimizer '%s': expected adamw or muon", optim);
    struct mnemo_model *probe; /* the shape is checked before the sgemm rate is measured */
    enum mnemo_status pst = mnemo_model_create(&probe, &mc);
    if (pst != MNEMO_OK) cli_fail("bench", pst, "bad model config");
    mnemo_model_free(probe);
    if (mnemo_set_threads(threads) != MNEMO_OK) cli_fail("bench", MNEMO_ERR_ARG, "--threads");
    double sg = mnemo_bench_sgemm(1024, 5);
    printf("bench: L=%d d=%d H=%d T=%d B=%d V=%d, %s attention, %d threads\n", mc.n_layer,
           mc.d_model, mc.n_head, mc.n_ctx, B, mc.vocab, attn, threads);
    if (mc.attn_opts) printf("  %s attention options: %s\n", attn, mc.attn_opts);
    struct mnemo_bench_result r[2];
    for (int o = MNEMO_OPT_ADAMW; o <= opt; o++) {
        enum mnemo_status st = mnemo_bench_train_opt(&mc, B, mc.n_ctx, steps, warmup, o, &r[o]);
        if (st != MNEMO_OK) cli_fail("bench", st, "benchmark failed");
        printf("  %-5s %.0f tokens/s | %.1f ms/step | %.1f GFLOP/s model | sgemm %.1f GFLOP/s | "
               "MFU %.1f%%\n", mnemo_optimizer_name(o), r[o].tokens_per_s, r[o].step_s * 1e3,
               r[o].achieved_gflops, sg, 100.0 * r[o].achieved_gflops / sg);
    }
    if (opt == MNEMO_OPT_MUON)
        printf("  muon step / adamw step: %.3f (the update's cost, same run)\n",
               r[MNEMO_OPT_MUON].step_s / r[MNEMO_OPT_ADAMW].step_s);
    if (mc.attn_kind != MNEMO_ATTN_KIND_DENSE) { /* the dense kind as the baseline, same run */
        struct mnemo_model_config dc = mc;
        dc.attn_kind = MNEMO_ATTN_KIND_DENSE;
        dc.attn_opts = NULL; /* the kind's options are not dense's */
        struct mnemo_bench_result rd;
        enum mnemo_status st = mnemo_bench_train_opt(&dc, B, dc.n_ctx, steps, warmup, opt, &rd);
        if (st != MNEMO_OK) cli_fail("bench", st, "dense baseline failed");
        printf("  dense %.0f tokens/s | %.1f ms/step (baseline)\n", rd.tokens_per_s, rd.step_s * 1e3);
        printf("  %s step / dense step: %.3f, tokens/s ratio %.3f (same run)\n", attn,
               r[opt].step_s / rd.step_s, r[opt].tokens_per_s / rd.tokens_per_s);
    }
    return 0;
}
