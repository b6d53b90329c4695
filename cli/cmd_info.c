/*
 * cmd_info.c -- mnemo info: what a checkpoint holds.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

/* The attention state a session of this checkpoint holds (its bound, as generate and answer
 * would run it: with the session options the checkpoint carries, if any), computed without
 * making a session, and whether that bound holds for any stream length or only up to n_ctx. */
static void print_state(struct mnemo_model *m)
{
    size_t bytes;
    int bounded;
    enum mnemo_status st = mnemo_session_plan(m, NULL, &bytes, &bounded);
    if (st != MNEMO_OK) {
        printf("state        none (%s)\n", mnemo_last_error());
        return;
    }
    const double kib = (double)bytes / 1024.0;
    if (bounded)
        printf("state        %.1f KiB at most, whatever the stream length\n", kib);
    else
        printf("state        %.1f KiB at n_ctx (a cache of every key and value; a stream stops "
               "there)\n", kib);
}

int cmd_info(int argc, char **argv)
{
    int kinds = 0;
    const struct opt opts[] = {
        {"kinds", OPT_BOOL, &kinds, "list the attention kinds and their options (no checkpoint)"},
    };
    const char *pos[1];
    int n_pos;
    cli_parse("info", "CHECKPOINT | --kinds", argc, argv, opts, 1, pos, &n_pos, 1);
    if (kinds) {
        if (n_pos) cli_die("info", "--kinds takes no checkpoint");
        cli_print_kinds(stdout);
        return 0;
    }
    if (n_pos != 1) cli_die("info", "give one checkpoint file (or --kinds)");
    struct mnemo_model *m;
    enum mnemo_status st = mnemo_model_load(&m, pos[0]);
    if (st != MNEMO_OK) cli_fail("info", st, "cannot load the checkpoint");
    const struct mnemo_model_config *c = mnemo_model_get_config(m);
    printf("checkpoint   %s\n", pos[0]);
    printf("parameters   %zu (%.2fM)\n", mnemo_model_n_params(m), (double)mnemo_model_n_params(m) / 1e6);
    printf("layers       %d\nd_model      %d\nheads        %d (head dim %d)\nn_ctx        %d\n",
           c->n_layer, c->d_model, c->n_head, c->d_model / c->n_head, c->n_ctx);
    printf("vocab        %d (padded %d), byte tokenizer + BOS\n", c->vocab, c->vocab_padded);
    printf("positions    %s", c->pos == MNEMO_POS_ROPE ? "rope" : "learned");
    if (c->pos == MNEMO_POS_ROPE) printf(" (theta %g)", (double)c->rope_theta);
    printf("\nattention    %s\n", mnemo_attn_kind_name(c->attn_kind));
    if (c->attn_opts && c->attn_opts[0]) printf("attn options %s\n", c->attn_opts);
    const char *keys[] = {"train.step", "train.val_loss", "train.optimizer", "train.ema",
                          "prune.target_loss"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v = mnemo_model_meta(m, keys[i]);
        if (v) printf("%-17s %s\n", keys[i], v);
    }
    print_state(m);
    mnemo_model_free(m);
    return 0;
}
