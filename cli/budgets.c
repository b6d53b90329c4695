/*
 * budgets.c -- session helpers shared by generate, eval and answer: which per-layer cache
 * budgets a command uses (--budgets K1,K2,... (one per layer), else --budget K (every layer),
 * else the checkpoint's "prune.budgets" written by mnemo prune-search, unless --no_prune, else
 * none), and feeding a prompt in chunks.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* Parses "K1,K2,..." (exactly L non-negative integers) into out; 0 on success. */
static int parse_list(const char *s, int L, int *out)
{
    for (int l = 0; l < L; l++) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || v < 0 || v > 1 << 30) return -1;
        out[l] = (int)v;
        if (l + 1 < L) {
            if (*end != ',') return -1;
            s = end + 1;
        } else if (*end) {
            return -1;
        }
    }
    return 0;
}

int *cli_budgets(const char *cmd, const struct mnemo_model *m, const struct cli_prune *p,
                 const char **from)
{
    const char *list = p->list;
    const int all = p->budget, no_prune = p->no_prune;
    if (all < 0 || all == 1)
        cli_die(cmd, "--budget must be 0 (off) or >= 2 (the first token and the new one)");
    if (!(p->threshold >= 0)) cli_die(cmd, "--threshold must be >= 0");
    const int L = mnemo_model_get_config(m)->n_layer;
    const char *saved = mnemo_model_meta(m, "prune.budgets");
    *from = NULL;
    if (!list && !all && (no_prune || !saved)) return NULL;
    int *b = calloc((size_t)L, sizeof(int));
    if (!b) cli_die(cmd, "out of memory");
    if (list) {
        if (parse_list(list, L, b))
            cli_die(cmd, "--budgets '%s': expected %d comma-separated integers (one per layer)", list, L);
        *from = "--budgets";
    } else if (all) {
        for (int l = 0; l < L; l++) b[l] = all;
        *from = "--budget";
    } else {
        if (parse_list(saved, L, b))
            cli_die(cmd, "the checkpoint's prune.budgets '%s' is not %d integers", saved, L);
        *from = "the checkpoint (prune.budgets)";
    }
    return b;
}

enum mnemo_status cli_feed(struct mnemo_session *s, const uint16_t *tok, size_t n, int chunk,
                           int Vp, const float **last)
{
    for (size_t i = 0; i < n; i += (size_t)chunk) {
        const int k = n - i < (size_t)chunk ? (int)(n - i) : chunk;
        const float *lg;
        enum mnemo_status st = mnemo_session_feed(s, tok + i, k, &lg);
        if (st != MNEMO_OK) return st;
        *last = lg + (size_t)(k - 1) * (size_t)Vp;
    }
    return MNEMO_OK;
}
