/*
 * task.h -- one line of a `mnemo answer` task file: {"prompt": TEXT, "answer": TEXT,
 * "group": TEXT} (group optional). A parser of its own, which never exits, so that the
 * command (cli/cmd_answer.c) and the fuzzer (fuzz/fuzz_task.c) run the same code.
 */
#ifndef MNEMO_CLI_TASK_H
#define MNEMO_CLI_TASK_H

#include <stddef.h>

struct cJSON;

struct cli_task {
    struct cJSON *json;   /* the parsed line, owned; the texts below point into it */
    const char *prompt;   /* (n_prompt) bytes, no NUL inside */
    const char *answer;   /* (n_answer) bytes, n_answer >= 1, no NUL inside */
    const char *group;    /* NULL when the line has none */
    size_t n_prompt, n_answer;
};

/* Parses line[0..len), a NUL-terminated line as getline gives it (its newline included; len
 * counts NUL bytes inside too). Returns 1 and fills *t (release with cli_task_free) for a
 * task, 0 for a blank line, -1 for a bad one with *err set to a static message saying why
 * ("the line holds a NUL byte", ...); t holds nothing then. The texts must be JSON strings,
 * the answer non-empty, and no text may hold U+0000 (cJSON would end it there). */
int cli_task_parse(struct cli_task *t, const char *line, size_t len, const char **err);
void cli_task_free(struct cli_task *t); /* NULL-safe, and safe on a zeroed task */

#endif
