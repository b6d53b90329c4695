/*
 * main.c -- the mnemo command: dispatches to one subcommand per file (cli/cmd_*.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    {"prepare", cmd_prepare, "turn UTF-8 text files into train/val token files"},
    {"train", cmd_train, "train a model (JSON config + flags), with validation and checkpoints"},
    {"eval", cmd_eval, "loss, perplexity and bits per byte of a checkpoint on a token file"},
    {"generate", cmd_generate, "stream text from a checkpoint (prompt, temperature, top-k/p)"},
    {"prune-search", cmd_prune_search, "per-layer KV-cache budgets for a selective-attention checkpoint"},
    {"answer", cmd_answer, "accuracy on prompt/answer tasks (greedy answers through a session)"},
    {"info", cmd_info, "summarise a checkpoint"},
    {"bench", cmd_bench, "measure training throughput and MFU on this machine"},
};

static void usage(FILE *f) /* --help */
{
    fprintf(f, "usage: mnemo COMMAND [options]   (mnemo COMMAND --help for its options)\n\n"
               "commands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\nmnemo %d.%d.%d\n", MNEMO_VERSION_MAJOR, MNEMO_VERSION_MINOR, MNEMO_VERSION_PATCH);
}

/* At exit: output that could not be written (a full disk, a closed pipe) is an error, not a
 * success with results lost on the way. */
static void check_stdout(void)
{
    errno = 0; /* only fflush's own error is worth naming */
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "mnemo: cannot write the standard output: %s\n",
                errno ? strerror(errno) : "write error");
        _exit(1);
    }
}

int main(int argc, char **argv)
{
    cli_default_wait_policy(argv);
    atexit(check_stdout);
    if (argc < 2) {
        fprintf(stderr, "mnemo: no command given (usage: mnemo COMMAND [options]; try mnemo --help)\n");
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("mnemo %d.%d.%d\n", MNEMO_VERSION_MAJOR, MNEMO_VERSION_MINOR, MNEMO_VERSION_PATCH);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name)) exit(commands[i].fn(argc - 2, argv + 2));
    fprintf(stderr, "mnemo: unknown command '%s' (try mnemo --help)\n", argv[1]);
    return 2;
}
