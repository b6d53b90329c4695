/*
 * fuzz_task.c -- libFuzzer harness for the task-line parser of `mnemo answer` (cli/task.c):
 * the input is a task file, cut into lines as getline does (each with its newline, the last
 * maybe without; NUL bytes stay inside their line).
 *
 * Every line is a task, a blank line or a refusal with a reason. A task's texts are whole
 * strings without NUL, its answer not empty; nothing is held after cli_task_free.
 */
#include <string.h>

#include "fuzz.h"
#include "task.h"

static void check_line(const char *line, size_t len)
{
    struct cli_task t;
    const char *err;
    const int r = cli_task_parse(&t, line, len, &err);
    if (r < 0) {
        FUZZ_CHECK(err && err[0] && !t.json);
        return;
    }
    FUZZ_CHECK(!err);
    if (r == 0) {
        FUZZ_CHECK(!t.json && strspn(line, " \t\r\n") == len);
        return;
    }
    FUZZ_CHECK(r == 1 && t.json && t.prompt && t.answer);
    FUZZ_CHECK(strlen(t.prompt) == t.n_prompt && strlen(t.answer) == t.n_answer);
    FUZZ_CHECK(t.n_answer >= 1 && t.n_prompt + t.n_answer < len); /* the texts come from it */
    if (t.group) FUZZ_CHECK(strlen(t.group) < len);
    cli_task_free(&t);
    FUZZ_CHECK(!t.json && !t.prompt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (size_t at = 0; at < size;) {
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        const size_t len = nl ? (size_t)(nl - data) + 1 - at : size - at;
        char *line = malloc(len + 1); /* exactly getline's bytes, so ASan sees any overread */
        FUZZ_CHECK(line);
        memcpy(line, data + at, len);
        line[len] = 0;
        check_line(line, len);
        free(line);
        at += len;
    }
    return 0;
}
