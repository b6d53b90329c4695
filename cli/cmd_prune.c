/*
 * cmd_prune.c -- mnemo prune-search: per-layer KV-cache budgets for a selective-attention
 * checkpoint that keep its pruned validation loss within a target, written into the
 * checkpoint as the session option budget (attn.budget), where eval, generate and answer pick
 * them up.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mnemo_attn.h"

struct progress {
    int T;
};

static void on_round(const int *budgets, int L, double loss, void *user)
{
    const struct progress *p = user;
    long total = 0;
    fprintf(stderr, "prune-search: budgets");
    for (int l = 0; l < L; l++) {
        fprintf(stderr, "%s%d", l ? "," : " ", budgets[l]);
        total += budgets[l];
    }
    fprintf(stderr, " | loss %.4f (%.4f bits/byte) | %.2fx less KV memory\n", loss,
            loss / 0.69314718055994531, (double)L * p->T / (double)total);
}

int cmd_prune_search(int argc, char **argv)
{
    const char *model = NULL, *data = NULL, *baseline = NULL, *out = NULL;
    float tolerance = 0.0f, factor = 0.9f;
    int threads = 0, seq = 0;
    uint64_t max_windows = 32;
    const struct opt opts[] = {
        {"model", OPT_STR, &model, "selective-attention checkpoint to prune"},
        {"data", OPT_STR, &data, "validation token file"},
        {"baseline", OPT_STR, &baseline,
         "target: this checkpoint's unpruned loss on the same windows (e.g. a dense model)"},
        {"tolerance", OPT_FLOAT, &tolerance,
         "target: the model's own unpruned loss times (1 + tolerance) (default 0.01 without "
         "--baseline)"},
        {"factor", OPT_FLOAT, &factor,
         "after bisecting a budget shared by all layers, each step shrinks one layer's budget by "
         "this factor"},
        {"max_windows", OPT_U64, &max_windows,
         "validation windows per measurement, spread over the split (0 = all)"},
        {"seq", OPT_INT, &seq, "window length (0 = the model's n_ctx)"},
        {"out", OPT_STR, &out, "write the checkpoint with the budgets here (default: --model, in place)"},
        {"threads", OPT_INT, &threads, "threads (0 = default)"},
    };
    const char *pos[1];
    int n_pos;
    cli_parse("prune-search", "--model CKPT --data TOKENS [--baseline CKPT | --tolerance R]", argc,
              argv, opts, sizeof(opts) / sizeof(opts[0]), pos, &n_pos, 0);
    if (!model) cli_die("prune-search", "no checkpoint: give --model FILE");
    if (!data) cli_die("prune-search", "no data: give --data FILE (a token file from mnemo prepare)");
    if (baseline && tolerance != 0.0f) cli_die("prune-search", "give --baseline or --tolerance, not both");
    if (tolerance < 0) cli_die("prune-search", "--tolerance must be >= 0");
    if (!baseline && tolerance == 0.0f) tolerance = 0.01f;
    if (threads < 0) cli_die("prune-search", "--threads must be >= 0");
    if (!(factor > 0 && factor < 1)) cli_die("prune-search", "--factor must be in (0, 1)");
    if (seq < 0) cli_die("prune-search", "--seq must be >= 0");
    cli_check_writable("prune-search", out ? out : model); /* before the search, not after */
    if (threads > 0 && mnemo_set_threads(threads) != MNEMO_OK) cli_fail("prune-search", MNEMO_ERR_ARG, "--threads");
    struct mnemo_model *m;
    enum mnemo_status st = mnemo_model_load(&m, model);
    if (st != MNEMO_OK) cli_fail("prune-search", st, "cannot load the checkpoint");
    if (mnemo_attn_opt_find(mnemo_model_get_config(m)->attn_kind, "budget") < 0)
        cli_die("prune-search", "'%s' has %s attention, which has no budget option to search "
                "(selective attention has)", model,
                mnemo_attn_kind_name(mnemo_model_get_config(m)->attn_kind));
    const int L = mnemo_model_get_config(m)->n_layer;
    const int T = seq ? seq : mnemo_model_get_config(m)->n_ctx;
    if (T < 2 || T > mnemo_model_get_config(m)->n_ctx)
        cli_die("prune-search", "--seq %d: the window must be in [2, n_ctx = %d]", T,
                mnemo_model_get_config(m)->n_ctx);
    struct mnemo_eval_result r;
    double target;
    if (baseline) {
        struct mnemo_model *b;
        if ((st = mnemo_model_load(&b, baseline)) != MNEMO_OK)
            cli_fail("prune-search", st, "cannot load --baseline");
        if (mnemo_model_get_config(b)->n_ctx < T)
            cli_die("prune-search", "--baseline has n_ctx %d < the window %d", mnemo_model_get_config(b)->n_ctx, T);
        st = mnemo_eval_file(b, data, T, T, 8, max_windows, &r);
        mnemo_model_free(b);
        if (st != MNEMO_OK) cli_fail("prune-search", st, "cannot evaluate --baseline");
        target = r.loss;
        fprintf(stderr, "prune-search: target %.4f nats/token (%.4f bits/byte): %s, unpruned\n",
                target, r.bpb, baseline);
    } else {
        if ((st = mnemo_eval_file(m, data, T, T, 8, max_windows, &r)) != MNEMO_OK)
            cli_fail("prune-search", st, "cannot evaluate the model");
        target = r.loss * (1.0 + tolerance);
        fprintf(stderr, "prune-search: target %.4f nats/token: the model's own %.4f x (1 + %g)\n",
                target, r.loss, (double)tolerance);
    }
    int *budgets = calloc((size_t)L, sizeof(int));
    if (!budgets) cli_die("prune-search", "out of memory");
    struct progress p = {T};
    st = mnemo_prune_search(m, data, T, target, factor, max_windows, budgets, on_round, &p);
    if (st != MNEMO_OK) cli_fail("prune-search", st, "search failed");
    const size_t cap = (size_t)L * 12 + 16; /* "/" and at most 10 digits a layer */
    char *list = malloc(cap), tgt[32];
    if (!list) cli_die("prune-search", "out of memory");
    size_t k = (size_t)snprintf(list, cap, "budget=");
    long total = 0;
    for (int l = 0; l < L; l++) {
        k += (size_t)snprintf(list + k, cap - k, "%s%d", l ? "/" : "", budgets[l]);
        total += budgets[l];
    }
    snprintf(tgt, sizeof(tgt), "%.6f", target);
    if ((st = mnemo_model_set_attn_opts(m, list)) ||
        (st = mnemo_model_set_meta(m, "prune.target_loss", tgt)))
        cli_fail("prune-search", st, "cannot record the budgets");
    if ((st = mnemo_model_save_meta(m, out ? out : model)) != MNEMO_OK)
        cli_fail("prune-search", st, "cannot write the checkpoint");
    printf("prune-search: %s (%.2fx less KV memory than %d per layer), written to %s\n",
           list, (double)L * T / (double)total, T, out ? out : model);
    free(list);
    free(budgets);
    mnemo_model_free(m);
    return 0;
}
