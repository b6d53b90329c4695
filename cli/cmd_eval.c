/*
 * cmd_eval.c -- mnemo eval: loss, perplexity and bits per byte of a checkpoint on a token file.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

int cmd_eval(int argc, char **argv)
{
    const char *model = NULL, *data = NULL;
    int seq = 0, stride = 0, batch = 8, threads = 0;
    struct cli_prune pr = {0};
    uint64_t max_windows = 0;
    const struct opt opts[] = {
        {"model", OPT_STR, &model, "checkpoint (model.safetensors)"},
        {"data", OPT_STR, &data, "token file to score (e.g. data/kjv/val.bin)"},
        {"seq", OPT_INT, &seq, "window length (0 = the model's n_ctx)"},
        {"stride", OPT_INT, &stride,
         "tokens between window starts; a later window scores only its last stride tokens "
         "(0 = the window length: disjoint windows)"},
        {"batch", OPT_INT, &batch, "windows per forward pass"},
        {"max_windows", OPT_U64, &max_windows,
         "score at most this many windows, spread over the file (0 = all)"},
        {"threads", OPT_INT, &threads, "threads (0 = default)"},
        /* with budgets or a threshold, each window streams through a pruning session */
        CLI_PRUNE_OPTS(pr),
    };
    const char *pos[2];
    int n_pos;
    cli_parse("eval", "--model CKPT --data TOKENS [options]", argc, argv, opts,
              sizeof(opts) / sizeof(opts[0]), pos, &n_pos, 0);
    if (!model) cli_die("eval", "no checkpoint: give --model FILE");
    if (!data) cli_die("eval", "no data: give --data FILE (a token file from mnemo prepare)");
    if (threads < 0) cli_die("eval", "--threads must be >= 0");
    if (threads > 0 && mnemo_set_threads(threads) != MNEMO_OK) cli_fail("eval", MNEMO_ERR_ARG, "--threads");
    struct mnemo_model *m;
    enum mnemo_status st = mnemo_model_load(&m, model);
    if (st != MNEMO_OK) cli_fail("eval", st, "cannot load the checkpoint");
    struct mnemo_eval_result r;
    const char *from;
    int *budgets = cli_budgets("eval", m, &pr, &from);
    int win = seq ? seq : mnemo_model_get_config(m)->n_ctx;
    if (budgets || pr.threshold > 0) {
        if (stride && stride != win) cli_die("eval", "--stride: pruned evaluation scores disjoint windows");
        st = mnemo_eval_file_pruned(m, data, seq, budgets, pr.threshold, max_windows, &r);
        if (st != MNEMO_OK) cli_fail("eval", st, "pruned evaluation failed");
        const int L = mnemo_model_get_config(m)->n_layer;
        long total = 0;
        printf("pruned: budgets from %s:", from ? from : "none");
        for (int l = 0; budgets && l < L; l++) {
            int k = budgets[l] && budgets[l] < win ? budgets[l] : win;
            printf("%s%d", l ? "," : " ", budgets[l]);
            total += k;
        }
        if (budgets) printf(" | KV memory %.2fx smaller than the full window (L*T / sum K)", (double)L * win / (double)total);
        if (pr.threshold > 0) printf(" | threshold %g", (double)pr.threshold);
        printf("\n");
        free(budgets);
    } else {
        st = mnemo_eval_file(m, data, seq, stride, batch, max_windows, &r);
        if (st != MNEMO_OK) cli_fail("eval", st, "evaluation failed");
    }
    printf("eval: %s on %s (windows of %d, stride %d): %llu tokens | loss %.4f nats/token | "
           "perplexity %.3f | %.4f bits/byte\n",
           model, data, win, stride ? stride : win, (unsigned long long)r.tokens, r.loss, r.ppl,
           r.bpb);
    mnemo_model_free(m);
    return 0;
}
