/*
 * cmd_answer.c -- mnemo answer: accuracy of a checkpoint on prompt/answer tasks (synthetic
 * tasks such as Variable Assignment, or pass-key retrieval).
 *
 * Each line of the task file is a JSON object {"prompt": TEXT, "answer": TEXT, "group": TEXT}
 * (group optional). The prompt goes through a session after BOS, the answer's length in bytes
 * is decoded greedily (argmax over the 256 bytes), and the task counts as correct when every
 * byte matches. Accuracy is printed overall and per group, in the order groups first appear.
 *
 * A prompt the session cannot hold (a dense cache is full at n_ctx) is cut to its last
 * n_ctx - |answer| bytes and fed again: the model answers from the part that fits, which is
 * what "inside its window" means for a kind without unbounded streaming. Such tasks are
 * counted and marked in the results ("cut": true).
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "task.h"

struct group {
    char *name;
    long right, total;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int argmax_byte(const float *lg)
{
    int best = 0;
    for (int v = 1; v < 256; v++)
        if (lg[v] > lg[best]) best = v;
    return best;
}

/* BOS + prompt[from..np) through the session, then na greedy bytes into got. */
static enum mnemo_status run_task(struct mnemo_session *s, int Vp, int chunk, uint16_t *tok,
                                  const char *prompt, size_t from, size_t np, size_t na, char *got)
{
    tok[0] = MNEMO_TOK_BOS;
    for (size_t i = from; i < np; i++) tok[1 + i - from] = (unsigned char)prompt[i];
    mnemo_session_reset(s);
    const float *lg = NULL;
    enum mnemo_status st = cli_feed(s, tok, 1 + np - from, chunk, Vp, &lg);
    for (size_t j = 0; st == MNEMO_OK && j < na; j++) {
        int t = argmax_byte(lg);
        got[j] = (char)t;
        if (j + 1 < na) {
            uint16_t tk = (uint16_t)t;
            st = mnemo_session_feed(s, &tk, 1, &lg);
        }
    }
    got[na] = 0;
    return st;
}

/* Answers one task. When the session fills up (a dense cache at n_ctx), the prompt is cut to
 * its last n_ctx - na bytes, so that BOS, the kept prompt and the answer's first na - 1 bytes
 * fit, and the task is run again; *cut tells. */
static enum mnemo_status answer_one(struct mnemo_session *s, const struct mnemo_model_config *c,
                                    int chunk, uint16_t *tok, const char *prompt, size_t np,
                                    size_t na, char *got, int *cut)
{
    *cut = 0;
    enum mnemo_status st = run_task(s, c->vocab_padded, chunk, tok, prompt, 0, np, na, got);
    if (st != MNEMO_ERR_FULL || na >= (size_t)c->n_ctx) return st;
    const size_t keep = (size_t)c->n_ctx - na < np ? (size_t)c->n_ctx - na : np;
    *cut = 1;
    return run_task(s, c->vocab_padded, chunk, tok, prompt, np - keep, np, na, got);
}

/* The answer bytes as UTF-8 text for the JSON results: bytes from 0x80 up are read as Latin-1
 * (U+0080..U+00FF), a zero byte as U+FFFD; out holds 3 * n + 1 bytes. */
static void bytes_to_utf8(char *out, const char *in, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const unsigned char b = (unsigned char)in[i];
        if (b == 0) {
            *out++ = (char)0xEF, *out++ = (char)0xBF, *out++ = (char)0xBD;
        } else if (b < 0x80) {
            *out++ = (char)b;
        } else {
            *out++ = (char)(0xC0 | (b >> 6)), *out++ = (char)(0x80 | (b & 0x3F));
        }
    }
    *out = 0;
}

static struct group *find_group(struct group **gs, int *n, const char *name)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp((*gs)[i].name, name)) return &(*gs)[i];
    struct group *g = realloc(*gs, (size_t)(*n + 1) * sizeof(**gs));
    if (!g) cli_die("answer", "out of memory");
    *gs = g;
    g += (*n)++;
    g->name = strdup(name);
    if (!g->name) cli_die("answer", "out of memory");
    g->right = g->total = 0;
    return g;
}

int cmd_answer(int argc, char **argv)
{
    const char *model = NULL, *tasks = NULL, *out = NULL;
    int threads = 0, chunk = 256;
    struct cli_session pr = {0};
    uint64_t max_tasks = 0;
    const struct opt opts[] = {
        {"model", OPT_STR, &model, "checkpoint (model.safetensors)"},
        {"tasks", OPT_STR, &tasks,
         "JSON Lines file, one task per line: "
         "{\"prompt\": TEXT, \"answer\": TEXT, \"group\": TEXT}"},
        {"out", OPT_STR, &out, "write one JSON result per task here"},
        {"max_tasks", OPT_U64, &max_tasks, "answer at most this many tasks (0 = all)"},
        {"chunk", OPT_INT, &chunk, "prompt tokens fed per session call"},
        {"threads", OPT_INT, &threads, "threads (0 = default)"},
        CLI_SESSION_OPTS(pr),
    };
    const char *pos[1];
    int n_pos;
    cli_parse("answer", "--model CKPT --tasks FILE.jsonl [--out RESULTS.jsonl]", argc, argv, opts,
              sizeof(opts) / sizeof(opts[0]), pos, &n_pos, 0);
    if (!model) cli_die("answer", "no checkpoint: give --model FILE");
    if (!tasks)
        cli_die("answer", "no tasks: give --tasks FILE (JSON Lines with prompt and answer)");
    if (threads < 0) cli_die("answer", "--threads must be >= 0");
    if (chunk < 1) cli_die("answer", "--chunk must be >= 1");
    if (threads > 0 && mnemo_set_threads(threads) != MNEMO_OK) cli_fail("answer", MNEMO_ERR_ARG, "--threads");
    if (out && (cli_same_file(out, model) || cli_same_file(out, tasks)))
        cli_die("answer", "--out '%s' is the checkpoint or the task file", out);
    struct stat sb; /* a FIFO would block the open until a writer comes */
    if (stat(tasks, &sb) == 0 && !S_ISREG(sb.st_mode))
        cli_die("answer", "'%s' is not a regular file", tasks);
    FILE *in = fopen(tasks, "r");
    if (!in) cli_die("answer", "cannot open '%s': %s", tasks, strerror(errno));

    struct mnemo_model *m;
    enum mnemo_status st = mnemo_model_load(&m, model);
    if (st != MNEMO_OK) cli_fail("answer", st, "cannot load the checkpoint");
    const struct mnemo_model_config *c = mnemo_model_get_config(m);
    struct mnemo_session_config sc;
    char desc[512];
    cli_session_config(&sc, &pr, m, chunk, desc, sizeof(desc));
    struct mnemo_session *s;
    if ((st = mnemo_session_create_ex(&s, m, &sc)) != MNEMO_OK)
        cli_fail("answer", st, "cannot start a session");
    if (desc[0]) fprintf(stderr, "answer: session options %s\n", desc);
    /* the results appear whole when every task is answered; a failed run leaves --out as it was */
    FILE *res = out ? cli_out_open("answer", out) : NULL;

    struct group *gs = NULL;
    int ng = 0;
    long n_cut = 0, n_done = 0, lineno = 0;
    char *line = NULL, *got = NULL, *got_text = NULL;
    uint16_t *tok = NULL;
    size_t cap_line = 0, cap_tok = 0, cap_got = 0;
    double t0 = now_s(), last_report = t0;
    ssize_t len;
    while ((len = getline(&line, &cap_line, in)) > 0 &&
           (!max_tasks || (uint64_t)n_done < max_tasks)) {
        lineno++;
        struct cli_task tk;
        const char *why;
        const int got_task = cli_task_parse(&tk, line, (size_t)len, &why);
        if (got_task < 0) cli_die("answer", "%s:%ld: %s", tasks, lineno, why);
        if (!got_task) continue; /* blank line */
        const size_t np = tk.n_prompt, na = tk.n_answer;
        if (np + 1 > cap_tok) {
            cap_tok = 2 * (np + 1);
            free(tok);
            if (!(tok = malloc(cap_tok * sizeof(uint16_t)))) cli_die("answer", "out of memory");
        }
        if (3 * na + 1 > cap_got) { /* got, then its UTF-8 form for the results */
            cap_got = 3 * na + 1;
            free(got);
            free(got_text);
            if (!(got = malloc(cap_got)) || !(got_text = malloc(cap_got)))
                cli_die("answer", "out of memory");
        }
        int cut;
        st = answer_one(s, c, chunk, tok, tk.prompt, np, na, got, &cut);
        if (st == MNEMO_ERR_FULL && na >= (size_t)c->n_ctx)
            cli_die("answer", "%s:%ld: the answer has %zu bytes, more than the context of %d "
                    "tokens can hold", tasks, lineno, na, c->n_ctx);
        if (st != MNEMO_OK) {
            char what[600];
            snprintf(what, sizeof(what), "cannot answer the task of %s:%ld", tasks, lineno);
            cli_fail("answer", st, what);
        }
        const int ok = !memcmp(got, tk.answer, na);
        struct group *gr = find_group(&gs, &ng, tk.group ? tk.group : "all");
        gr->right += ok;
        gr->total++;
        n_cut += cut;
        n_done++;
        if (res) {
            cJSON *r = cJSON_CreateObject();
            cJSON_AddNumberToObject(r, "line", (double)lineno);
            cJSON_AddStringToObject(r, "group", gr->name);
            cJSON_AddNumberToObject(r, "prompt_bytes", (double)np);
            cJSON_AddStringToObject(r, "answer", tk.answer);
            bytes_to_utf8(got_text, got, na);
            cJSON_AddStringToObject(r, "got", got_text);
            cJSON_AddBoolToObject(r, "correct", ok);
            cJSON_AddBoolToObject(r, "cut", cut);
            char *txt = cJSON_PrintUnformatted(r);
            if (!txt) cli_die("answer", "out of memory");
            fprintf(res, "%s\n", txt);
            cJSON_free(txt);
            cJSON_Delete(r);
        }
        cli_task_free(&tk);
        double t = now_s();
        if (t - last_report > 5) {
            fprintf(stderr, "answer: %ld tasks, %.1f s\n", n_done, t - t0);
            last_report = t;
        }
    }
    if (ferror(in)) cli_die("answer", "error reading '%s'", tasks);
    if (n_done == 0) cli_die("answer", "'%s' holds no tasks", tasks);
    fclose(in);
    if (res) cli_out_commit("answer", res, out);
    long right = 0;
    for (int i = 0; i < ng; i++) right += gs[i].right;
    if (ng > 1 || strcmp(gs[0].name, "all"))
        for (int i = 0; i < ng; i++)
            printf("  %-24s %5ld / %-5ld %6.1f%%\n", gs[i].name, gs[i].right, gs[i].total,
                   100.0 * (double)gs[i].right / (double)gs[i].total);
    printf("answer: %s on %s: %ld / %ld correct (%.1f%%)", model, tasks, right, n_done,
           100.0 * (double)right / (double)n_done);
    if (n_cut) printf(", %ld prompts cut to fit the context of %d", n_cut, c->n_ctx);
    printf(" | %.1f s\n", now_s() - t0);
    for (int i = 0; i < ng; i++) free(gs[i].name);
    free(gs);
    free(line);
    free(tok);
    free(got);
    free(got_text);
    mnemo_session_free(s);
    mnemo_model_free(m);
    return 0;
}
