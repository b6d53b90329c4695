/*
 * cmd_info.c -- mnemo info: what a checkpoint holds.
 */
#include <stdio.h>
#include <stdlib.h>

#include "cli.h"

/* The attention state a session of this checkpoint holds (its bound, as generate and answer
 * would run it: with the checkpoint's prune.budgets, if any), and whether that bound holds
 * for any stream length or only up to n_ctx. Computed, not allocated: a checkpoint of a few
 * kilobytes may claim a context whose cache would not fit in memory. */
static void print_state(const struct mnemo_model *m, const struct mnemo_model_config *c)
{
    struct cli_prune pr = {0};
    const char *from;
    int *budgets = cli_budgets("info", m, &pr, &from);
    int pruned = budgets != NULL;
    for (int l = 0; budgets && l < c->n_layer; l++) pruned &= budgets[l] > 0;
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.budgets = budgets;
    size_t bytes;
    enum mnemo_status st = mnemo_model_state_bytes(m, &sc, &bytes);
    free(budgets);
    if (st != MNEMO_OK) { /* e.g. budgets the kind refuses: say, go on */
        printf("state        unknown (%s)\n", mnemo_last_error());
        return;
    }
    const double kib = (double)bytes / 1024.0;
    if (c->attn_kind == MNEMO_ATTN_KIND_INFINI || pruned)
        printf("state        %.1f KiB at most, whatever the stream length%s\n", kib,
               pruned ? " (the checkpoint's prune.budgets)" : "");
    else
        printf("state        %.1f KiB at n_ctx (a cache of every key and value; a stream stops "
               "there)\n", kib);
}

int cmd_info(int argc, char **argv)
{
    const struct opt opts[] = {{"_", OPT_BOOL, NULL, ""}};
    const char *pos[1];
    int n_pos;
    cli_parse("info", "CHECKPOINT", argc, argv, opts, 0, pos, &n_pos, 1);
    if (n_pos != 1) cli_die("info", "give one checkpoint file");
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
    if (c->attn_kind == MNEMO_ATTN_KIND_INFINI) {
        printf("segment      %d%s\n", c->attn_segment ? c->attn_segment : c->n_ctx,
               c->attn_segment ? "" : " (n_ctx)");
        printf("mem update   %s\n", mnemo_mem_update_name(c->attn_mem_update));
    }
    const char *keys[] = {"train.step", "train.val_loss", "train.optimizer", "train.ema",
                          "prune.budgets", "prune.target_loss"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const char *v = mnemo_model_meta(m, keys[i]);
        if (v) printf("%-17s %s\n", keys[i], v);
    }
    print_state(m, c);
    mnemo_model_free(m);
    return 0;
}
