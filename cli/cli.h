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

enum opt_type { OPT_INT, OPT_FLOAT, OPT_STR, OPT_BOOL, OPT_U64, OPT_ATTN };

struct opt {
    const char *name;   /* flag without the leading dashes; also the JSON key */
    enum opt_type type;
    void *ptr;          /* int*, float*, const char**, int* (bool), uint64_t*, struct cli_attn* */
    const char *help;
};

/* The attention kinds' options of a command (an OPT_ATTN entry, at most one per table, named
 * "attn_opt"): "--attn_opt KEY=VALUE[,KEY=VALUE...]" (repeatable), and any "--KEY VALUE" whose
 * KEY is an option of some kind and no flag of the command (--segment 64, --budget 16). The
 * same as JSON keys of a --config file ("attn_opt": "...", or "segment": 64). Lists of
 * "key=value" items, owned by the parser (freed at exit); NULL when none was given. */
struct cli_attn {
    char *typed;  /* from the command line */
    char *config; /* from --config files */
};
/* Both lists, the command line's after (so overriding) the config's; NULL when both are empty.
 * Owned by a. */
const char *cli_attn_all(struct cli_attn *a);
/* Applies a's options to a checkpoint's model being continued (how: "--resume" or "--init"):
 * training and session options are set; a model option that differs from the checkpoint is
 * refused (one error line) when typed, noted and left when it comes from --config, except that
 * --init may change an option the kind marks mutable (infini's segment), which is noted. */
void cli_attn_continue(const char *cmd, struct mnemo_model *m, struct cli_attn *a, const char *how);
/* Prints every kind with its options (type, default, range, scope, help): the --help section
 * of commands that take kind options, and `mnemo info --kinds`. */
void cli_print_kinds(FILE *f);

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

/* The session options of the commands that run a session (eval, generate, answer): the kind's
 * session options (--attn_opt budget=16, --budget 16, --threshold 0.5 ...) over those the
 * checkpoint carries, unless --no_prune. */
struct cli_session {
    struct cli_attn attn;
    int no_prune; /* --no_prune: ignore the session options the checkpoint carries */
};
#define CLI_SESSION_OPTS(p)                                                                    \
    {"attn_opt", OPT_ATTN, &(p).attn,                                                          \
     "the attention kind's session options KEY=VALUE,... (see below; e.g. budget=16 or "       \
     "budget=8/6/6/4 per layer for selective attention), over those the checkpoint carries"},  \
    {"no_prune", OPT_BOOL, &(p).no_prune,                                                      \
     "ignore the session options the checkpoint carries (e.g. budgets from prune-search)"}
/* The session config of p (max_chunk as given). Describes it in desc (n bytes) for a progress
 * line: "budget=16 (given)", "budget=7/6/7/7 (the checkpoint's)" or "". */
void cli_session_config(struct mnemo_session_config *sc, struct cli_session *p,
                        const struct mnemo_model *m, int max_chunk, char *desc, size_t n);
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
