/*
 * cli.h -- shared pieces of the mnemo command: option tables (flags and JSON config files
 * driven by the same table), error reporting, and the subcommand entry points.
 * Only cli/ prints and exits; the library returns statuses.
 */
#ifndef MNEMO_CLI_H
#define MNEMO_CLI_H

#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#include "mnemo.h"

enum opt_type { OPT_INT, OPT_FLOAT, OPT_STR, OPT_BOOL, OPT_U64 };

struct opt {
    const char *name;   /* flag without the leading dashes; also the JSON key */
    enum opt_type type;
    void *ptr;          /* int*, float*, const char**, int* (bool), uint64_t* */
    const char *help;
};

/* Parses argv[first..] against opts: "--name value", "--name=value", "--flag" for booleans,
 * and "--config FILE" (a JSON object whose keys are option names; flags given on the command
 * line override it). Non-option arguments go to pos[] (at most max_pos). Prints one error
 * line and exits 1 on any bad argument; prints help and exits 0 on --help. */
void cli_parse(const char *cmd, const char *usage, int argc, char **argv, const struct opt *opts,
               size_t n_opts, const char **pos, int *n_pos, int max_pos);
#ifdef MNEMO_FUZZ
#include <setjmp.h>
/* Fuzz builds only (fuzz/): when set, cli_die, cli_fail and --help return there by longjmp
 * (with exit status + 1) instead of ending the process. */
extern jmp_buf *cli_fuzz_exit;
#endif
/* Frees what cli_parse allocated: the string values read from config files (which the
 * options point to until then). Registered with atexit by the first --config. */
void cli_opts_free(void);
/* One error line "mnemo CMD: message" (+ the library's detail) and exit 1. */
_Noreturn void cli_fail(const char *cmd, enum mnemo_status st, const char *what);
_Noreturn void cli_die(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Unless the user chose an OpenMP wait policy, re-executes the program with
 * OMP_WAIT_POLICY=passive (the OpenMP runtime reads it before main runs), because spinning
 * threads collapse throughput on a loaded machine, and GOMP_SPINCOUNT=3000 (unless set): a
 * spin of ~30 us before sleeping, shorter than most gaps between parallel regions
 * (docs/internals/threading.md). */
void cli_default_wait_policy(char **argv);
/* An output file that appears whole or not at all: cli_out_open writes to PATH.partial.PID
 * (one at a time; dies on failure), cli_out_commit flushes, syncs and renames it to PATH. A run
 * that dies in between leaves PATH as it was (the partial file is removed at exit). */
FILE *cli_out_open(const char *cmd, const char *path);
void cli_out_commit(const char *cmd, FILE *f, const char *path);
/* Dies unless a file could be created or replaced at path (its folder is writable and path
 * is not a folder or device): checked before long work whose result goes there. */
void cli_check_writable(const char *cmd, const char *path);
/* 1 when both paths exist and name the same file. */
int cli_same_file(const char *a, const char *b);
/* mkdir -p; 0 on success (errno set on failure) */
int cli_mkdir_p(const char *path);
/* "1:02:03" or "2:03" */
void cli_fmt_duration(char *buf, size_t n, double seconds);

/* The context-pruning options of the commands that run a session (eval, generate, answer). */
struct cli_prune {
    int budget;        /* --budget K: every layer (0 = off) */
    const char *list;  /* --budgets K1,K2,...: one per layer */
    float threshold;   /* --threshold: evict keys whose penalty reaches it (0 = off) */
    int no_prune;      /* --no_prune: ignore the checkpoint's prune.budgets */
};
#define CLI_PRUNE_OPTS(p) \
    {"budget", OPT_INT, &(p).budget, \
     "selective attention: keep at most this many keys per layer, evicting the most penalised " \
     "(0 = off); a stream may then run past n_ctx"}, \
    {"budgets", OPT_STR, &(p).list, \
     "selective attention: per-layer budgets K1,K2,... (default: the checkpoint's " \
     "prune.budgets, if any)"}, \
    {"threshold", OPT_FLOAT, &(p).threshold, \
     "selective attention: evict keys whose penalty reaches this (0 = off)"}, \
    {"no_prune", OPT_BOOL, &(p).no_prune, "ignore the checkpoint's prune.budgets"}
/* Per-layer cache budgets from --budgets LIST, --budget K or the checkpoint's prune.budgets
 * (unless --no_prune); NULL for none. *from names the source. Dies on a bad --budget,
 * --budgets or --threshold. Caller frees. */
int *cli_budgets(const char *cmd, const struct mnemo_model *m, const struct cli_prune *p,
                 const char **from);
/* The infini options of the commands that build a model (train, bench): --segment into
 * mc.attn_segment and --mem_update into a name, checked by cli_infini_check. */
#define CLI_INFINI_OPTS(mc, mem_update) \
    {"segment", OPT_INT, &(mc).attn_segment, \
     "infini: segment length N, 1 <= N <= n_ctx (0 = n_ctx; with train --init, 0 keeps the " \
     "checkpoint's); local attention inside a " \
     "segment, the compressive memory across them"}, \
    {"mem_update", OPT_STR, &(mem_update), "infini: memory update rule, linear or delta"}
/* Sets mc->attn_mem_update from mem_update (NULL: the default); dies on an unknown rule, or on
 * either option without --attn infini. Call after mc->attn_kind is set. */
void cli_infini_check(const char *cmd, struct mnemo_model_config *mc, const char *mem_update);
/* Feeds tok[0..n) through the session in chunks of at most chunk tokens; *last receives the
 * logits (Vp) of the last token. The session's status on failure (e.g. MNEMO_ERR_FULL). */
enum mnemo_status cli_feed(struct mnemo_session *s, const uint16_t *tok, size_t n, int chunk,
                           int Vp, const float **last);
int cmd_prune_search(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_answer(int argc, char **argv);

#endif
