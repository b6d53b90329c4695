/*
 * task.c -- one line of a `mnemo answer` task file (task.h): strict JSON, one object and
 * nothing after it, string fields, no NUL in any text.
 */
#include "task.h"

#include <cjson/cJSON.h>
#include <string.h>

/* 1 when the JSON text escapes a NUL (\u0000) in a string: cJSON would end the string there
 * and the task would be scored on a part of its text. */
static int escapes_nul(const char *s)
{
    for (; *s; s++)
        if (*s == '\\') {
            if (s[1] == 'u' && !strncmp(s + 2, "0000", 4)) return 1;
            if (s[1]) s++; /* the escaped character */
        }
    return 0;
}

int cli_task_parse(struct cli_task *t, const char *line, size_t len, const char **err)
{
    memset(t, 0, sizeof(*t));
    *err = NULL;
    if (strspn(line, " \t\r\n") == len) return 0; /* blank line */
    if (strlen(line) != len) {
        *err = "the line holds a NUL byte";
        return -1;
    }
    cJSON *o = cJSON_ParseWithOpts(line, NULL, 1); /* one object, nothing after it */
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, "answer");
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(o, "group");
    if (!cJSON_IsObject(o) || !cJSON_IsString(p) || !cJSON_IsString(a) || !a->valuestring[0] ||
        (g && !cJSON_IsString(g)))
        *err = "expected a JSON object with string fields \"prompt\" and \"answer\" (non-empty), "
               "and optionally \"group\"";
    else if (escapes_nul(line))
        *err = "a text holds U+0000 (NUL), which a task cannot carry";
    if (*err) {
        cJSON_Delete(o);
        return -1;
    }
    t->json = o;
    t->prompt = p->valuestring;
    t->answer = a->valuestring;
    t->group = g ? g->valuestring : NULL;
    t->n_prompt = strlen(t->prompt);
    t->n_answer = strlen(t->answer);
    return 1;
}

void cli_task_free(struct cli_task *t)
{
    if (!t) return;
    cJSON_Delete(t->json);
    memset(t, 0, sizeof(*t));
}
