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
    struct cli_session pr = {0};
    uint64_t max_windows = 0;
    const struct opt opts[] = {
        {"model", OPT_STR, &model, "checkpoint (model.safetensors)"},
        {"data", OPT_STR, &data, "token file to score (e.g. data/kjv/val.bin)"},
        {"seq", OPT_INT, &seq,
         "window length (0 = the model's n_ctx); longer than n_ctx where the kind's session "
         "state is bounded (infini, a budgeted selective cache): such windows stream through it"},
        {"stride", OPT_INT, &stride,
         "tokens between window starts; a later window scores only its last stride tokens "
         "(0 = the window length: disjoint windows)"},
        {"batch", OPT_INT, &batch, "windows per forward pass"},
        {"max_windows", OPT_U64, &max_windows,
         "score at most this many windows, spread over the file (0 = all)"},
        {"threads", OPT_INT, &threads, "threads (0 = default)"},
        /* with session options, or windows past n_ctx, each window streams through a session */
        CLI_SESSION_OPTS(pr),
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
    const struct mnemo_model_config *c = mnemo_model_get_config(m);
    const int win = seq ? seq : c->n_ctx;
    struct mnemo_session_config sc;
    char desc[512];
    cli_session_config(&sc, &pr, m, 64, desc, sizeof(desc));
    /* options given that describe nothing in force (a model or training option, a typo) go
     * this way too, so that the session refuses them rather than eval ignoring them */
    if (desc[0] || win > c->n_ctx || (sc.attn_opts && sc.attn_opts[0])) {
        size_t bytes, full;
        int bounded, full_bounded;
        if ((st = mnemo_session_plan(m, &sc, &bytes, &bounded)) != MNEMO_OK)
            cli_fail("eval", st, "session options");
        if (stride && stride != win)
            cli_die("eval", "--stride: evaluation through a session scores disjoint windows");
        st = mnemo_eval_file_session(m, data, seq, &sc, max_windows, &r);
        if (st != MNEMO_OK) cli_fail("eval", st, "evaluation through a session failed");
        printf("session: %s | attention state %.1f KiB at most%s", desc[0] ? desc : "defaults",
               (double)bytes / 1024.0, bounded ? ", whatever the stream length" : "");
        /* beside the state without session options (at n_ctx): what the options save */
        struct mnemo_session_config plain;
        mnemo_session_config_default(&plain);
        plain.no_model_opts = 1;
        if (desc[0] && mnemo_session_plan(m, &plain, &full, &full_bounded) == MNEMO_OK &&
            !full_bounded && bytes > 0)
            printf(" (%.2fx less than without these options at n_ctx %d)",
                   (double)full / (double)bytes, c->n_ctx);
        printf("\n");
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
