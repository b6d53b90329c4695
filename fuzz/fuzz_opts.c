/*
 * fuzz_opts.c -- libFuzzer harness for the option parser of the mnemo command (cli/opts.c:
 * cli_parse, and load_config through --config).
 *
 * Input: a config file's text, then the arguments, each ended by a NUL byte:
 *     CONFIG \0 ARG1 \0 ARG2 \0 ...
 * An argument "@" stands for the config file's path and "--config=@" for "--config=PATH", so
 * that --config may come anywhere, several times or never. cli_die and --help end the parse
 * through the MNEMO_FUZZ hook (a longjmp back here) instead of exit(); cli_opts_free then
 * releases what the parser kept, so LeakSanitizer sees every input end with nothing held.
 * The option table (below) has every type, and names that share a prefix, and the kind options'
 * entry (--attn_opt, and --KEY VALUE for any kind's key): the lists it builds go through every
 * kind's option parser (mnemo_attn_cfg_make), which must accept or refuse them with an error.
 */
#include <setjmp.h>
#include <string.h>

#include "cli.h"
#include "fuzz.h"
#include "mnemo_attn.h"

#define MAX_ARGS 64
#define MAX_POS 2

/* The keys of configs/kjv.json with mnemo train's types, plus a flag ("resume"), a name that
 * starts others ("n") and a string that may look like an option ("prompt"). */
static const struct {
    const char *name;
    enum opt_type type;
} spec[] = {
    {"train", OPT_STR},       {"val", OPT_STR},          {"out", OPT_STR},
    {"n", OPT_INT},           {"n_layer", OPT_INT},      {"d_model", OPT_INT},
    {"n_head", OPT_INT},      {"n_ctx", OPT_INT},        {"pos", OPT_STR},
    {"attn", OPT_STR},        {"batch", OPT_INT},        {"steps", OPT_INT},
    {"warmup", OPT_INT},      {"lr", OPT_FLOAT},         {"lr_min", OPT_FLOAT},
    {"weight_decay", OPT_FLOAT}, {"grad_clip", OPT_FLOAT}, {"eval_every", OPT_INT},
    {"eval_windows", OPT_INT}, {"ckpt_every", OPT_INT},  {"seed", OPT_U64},
    {"threads", OPT_INT},     {"beta2", OPT_FLOAT},      {"optimizer", OPT_STR},
    {"ema", OPT_FLOAT},       {"resume", OPT_BOOL},      {"prompt", OPT_STR},
    {"attn_opt", OPT_ATTN},
};
#define N_OPTS (sizeof(spec) / sizeof(spec[0]))

static union {
    int i;
    float f;
    uint64_t u;
    const char *s;
} val[N_OPTS];
static struct cli_attn attn_val;
static struct opt opts[N_OPTS];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    for (size_t k = 0; k < N_OPTS; k++)
        opts[k] = (struct opt){spec[k].name, spec[k].type,
                               spec[k].type == OPT_ATTN ? (void *)&attn_val : (void *)&val[k],
                               "help text"};
    return 0;
}

/* What the parser promises of every value it set. A string option's value stays readable
 * until cli_opts_free: reading it to its end lets ASan catch a freed or unterminated one. */
static void check_values(void)
{
    for (size_t k = 0; k < N_OPTS; k++) switch (spec[k].type) {
        case OPT_STR:
            if (val[k].s) FUZZ_CHECK(strlen(val[k].s) < SIZE_MAX);
            break;
        case OPT_BOOL: FUZZ_CHECK(val[k].i == 0 || val[k].i == 1); break;
        case OPT_FLOAT: FUZZ_CHECK(val[k].f - val[k].f == 0.0f); break; /* finite */
        case OPT_INT:
        case OPT_U64:
        case OPT_ATTN: break;
        }
    /* the kind options given, through every kind's parser: accepted, or refused with a line */
    const char *all = cli_attn_all(&attn_val);
    if (!all) return;
    FUZZ_CHECK(strlen(all) < SIZE_MAX);
    struct mnemo_model_config mc;
    mnemo_model_config_default(&mc);
    for (int kind = 0; kind < MNEMO_ATTN_KIND_COUNT; kind++) {
        mc.attn_kind = kind;
        struct mnemo_attn_cfg cfg;
        if (mnemo_attn_cfg_make(&cfg, &mc, all, -1) != MNEMO_OK) FUZZ_CHECK(mnemo_last_error()[0]);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* one copy of the input, NUL-terminated, cut into the config and the arguments */
    char *buf = malloc(size + 1);
    FUZZ_CHECK(buf);
    memcpy(buf, data, size);
    buf[size] = 0;
    const size_t n_cfg = strlen(buf);
    const char *path = fuzz_file((const uint8_t *)buf, n_cfg);
    char cfg_eq[80];
    snprintf(cfg_eq, sizeof(cfg_eq), "--config=%s", path);
    char *argv[MAX_ARGS + 1];
    int argc = 0;
    for (size_t at = n_cfg + 1; at < size && argc < MAX_ARGS; at += strlen(buf + at) + 1) {
        char *a = buf + at;
        argv[argc++] = !strcmp(a, "@") ? (char *)path : !strcmp(a, "--config=@") ? cfg_eq : a;
    }
    argv[argc] = NULL;

    memset(val, 0, sizeof(val));
    memset(&attn_val, 0, sizeof(attn_val));
    const char *pos[MAX_POS];
    int n_pos = -1;
    jmp_buf env;
    cli_fuzz_exit = &env;
    if (setjmp(env) == 0) {
        cli_parse("fuzz", "[options]", argc, argv, opts, N_OPTS, pos, &n_pos, MAX_POS);
        FUZZ_CHECK(n_pos >= 0 && n_pos <= MAX_POS);
        for (int i = 0; i < n_pos; i++) FUZZ_CHECK(strlen(pos[i]) < SIZE_MAX);
        check_values();
    }
    cli_fuzz_exit = NULL;
    cli_opts_free();
    free(buf);
    return 0;
}
