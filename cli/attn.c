/*
 * attn.c -- the attention kinds' options on the command line: continuing a checkpoint with
 * options (train --resume / --init), the session options of eval, generate and answer, and
 * feeding a prompt in chunks. The options themselves are the kinds' tables (mnemo_attn.h); this
 * file knows no kind by name.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "mnemo_attn.h"

/* The value of key in an option list ("k=v,k=v"), copied into buf; 0 when absent. */
static int list_value(const char *list, const char *key, char *buf, size_t n)
{
    const size_t klen = strlen(key);
    for (const char *p = list ? list : ""; *p;) {
        while (*p == ',' || *p == ' ') p++;
        const size_t len = strcspn(p, ",");
        if (len > klen && !strncmp(p, key, klen) && p[klen] == '=') {
            snprintf(buf, n, "%.*s", (int)(len - klen - 1), p + klen + 1);
            return 1;
        }
        p += len;
    }
    return 0;
}

/* Applies one "key=value" item of a list to m (from_config: it came from --config). */
static void continue_item(const char *cmd, struct mnemo_model *m, const char *item, size_t len,
                          int from_config, const char *how)
{
    char it[512], key[64], was[256] = "", now[256] = "";
    snprintf(it, sizeof(it), "%.*s", (int)(len < sizeof(it) ? len : sizeof(it) - 1), item);
    snprintf(key, sizeof(key), "%.*s", (int)strcspn(it, "="), it);
    const int kind = mnemo_model_get_config(m)->attn_kind;
    const int i = mnemo_attn_opt_find(kind, key);
    const struct mnemo_attn_opt *o = i >= 0 ? &mnemo_attn_ops_get(kind)->opts[i] : NULL;
    list_value(mnemo_model_get_config(m)->attn_opts, key, was, sizeof(was));
    if (o && o->scope == MNEMO_ATTN_SCOPE_MODEL && !strcmp(how, "--resume")) {
        /* an exact resume keeps every model option: only the checkpoint's value passes */
        char *saved = strdup(mnemo_model_get_config(m)->attn_opts);
        if (!saved) cli_die(cmd, "out of memory");
        enum mnemo_status st = mnemo_model_set_attn_opts(m, it);
        list_value(mnemo_model_get_config(m)->attn_opts, key, now, sizeof(now));
        const int same = st == MNEMO_OK && !strcmp(was, now);
        if (st == MNEMO_OK && !same) mnemo_model_set_attn_opts(m, saved); /* back */
        free(saved);
        if (same) return;
        if (!from_config)
            cli_die(cmd, "--%s: the checkpoint has %s=%s (%s keeps the checkpoint's model options)",
                    it, key, was, how);
        fprintf(stderr, "%s: %s keeps the checkpoint's %s=%s (the config says %s)\n", cmd, how,
                key, was, it);
        return;
    }
    enum mnemo_status st = mnemo_model_set_attn_opts(m, it);
    if (st != MNEMO_OK) {
        if (!from_config || !o || o->scope != MNEMO_ATTN_SCOPE_MODEL)
            cli_fail(cmd, st, it);
        fprintf(stderr, "%s: %s keeps the checkpoint's %s=%s (the config says %s)\n", cmd, how,
                key, was, it);
        return;
    }
    list_value(mnemo_model_get_config(m)->attn_opts, key, now, sizeof(now));
    if (o && o->scope == MNEMO_ATTN_SCOPE_MODEL && strcmp(was, now) != 0)
        fprintf(stderr, "%s: %s=%s (the checkpoint had %s)\n", cmd, key, now, was);
}

void cli_attn_continue(const char *cmd, struct mnemo_model *m, struct cli_attn *a, const char *how)
{
    const char *lists[2] = {a->config, a->typed};
    for (int k = 0; k < 2; k++)
        for (const char *p = lists[k] ? lists[k] : ""; *p;) {
            while (*p == ',' || *p == ' ') p++;
            const size_t len = strcspn(p, ",");
            char key[64], v[8];
            const size_t klen = strcspn(p, "=");
            snprintf(key, sizeof(key), "%.*s", (int)(klen < sizeof(key) ? klen : sizeof(key) - 1), p);
            /* a config item the command line gives again is overridden, not applied */
            if (len && !(k == 0 && klen < len && list_value(a->typed, key, v, sizeof(v))))
                continue_item(cmd, m, p, len, k == 0, how);
            p += len;
        }
}

void cli_session_config(struct mnemo_session_config *sc, struct cli_session *p,
                        const struct mnemo_model *m, int max_chunk, char *desc, size_t n)
{
    mnemo_session_config_default(sc);
    sc->max_chunk = max_chunk;
    sc->attn_opts = cli_attn_all(&p->attn);
    sc->no_model_opts = p->no_prune;
    /* the session options in force: the checkpoint's (unless --no_prune), then the given */
    const struct mnemo_model_config *c = mnemo_model_get_config(m);
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(c->attn_kind);
    size_t used = 0;
    if (n) desc[0] = 0;
    for (int i = 0; i < ops->n_opts && used < n; i++) {
        if (ops->opts[i].scope != MNEMO_ATTN_SCOPE_SESSION) continue;
        char v[256];
        const char *from = NULL;
        if (list_value(sc->attn_opts, ops->opts[i].key, v, sizeof(v))) from = "given";
        else if (!p->no_prune && list_value(c->attn_opts, ops->opts[i].key, v, sizeof(v)))
            from = "the checkpoint's";
        if (from)
            used += (size_t)snprintf(desc + used, n - used, "%s%s=%s (%s)", used ? ", " : "",
                                     ops->opts[i].key, v, from);
    }
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
