/*
 * opts.c -- one option table serves command-line flags, JSON config files and --help.
 */
#define _POSIX_C_SOURCE 200809L
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "mnemo_attn.h"

void cli_default_wait_policy(char **argv)
{
    if (getenv("OMP_WAIT_POLICY")) return;
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0 || (size_t)n >= sizeof(self) - 1) return;
    self[n] = 0; /* the real path, so that ps/top show "mnemo", not "exe" */
    if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
    /* ... but spin ~30 us (libgomp's unit: ~100 spins per us) before sleeping: the gap between
     * two parallel regions of a step is shorter than a futex wake-up (threading.md); only
     * libgomp (GCC) reads it, other OpenMP runtimes ignore it */
    setenv("GOMP_SPINCOUNT", "3000", 0);
    execv(self, argv); /* returns only on failure: then run as we are */
}

int cli_mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf)) {
        errno = n == 0 ? ENOENT : ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++)
        if (buf[i] == '/' || buf[i] == 0) {
            char c = buf[i];
            buf[i] = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST) return -1;
            buf[i] = c;
        }
    return 0;
}

/* The output file being written (cli_out_open), removed at exit unless committed, and on a
 * fatal SIGINT, SIGTERM or SIGHUP (unlink is async-signal-safe; the signal is then re-raised
 * with its default action, so the exit status still tells it). */
static char *volatile out_partial;

static void out_cleanup(void)
{
    if (out_partial) remove(out_partial);
}

static void out_on_signal(int sig)
{
    char *p = out_partial;
    if (p) unlink(p);
    signal(sig, SIG_DFL);
    raise(sig);
}

FILE *cli_out_open(const char *cmd, const char *path)
{
    if (out_partial) cli_die(cmd, "internal error: two output files at once");
    cli_check_writable(cmd, path);
    const size_t n = strlen(path);
    char *tmp = malloc(n + 32);
    if (!tmp) cli_die(cmd, "out of memory");
    snprintf(tmp, n + 32, "%s.partial.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) {
        int e = errno;
        free(tmp);
        cli_die(cmd, "cannot write '%s': %s", path, strerror(e));
    }
    static int registered;
    if (!registered) {
        registered = atexit(out_cleanup) == 0;
        const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
        for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
            struct sigaction old, sa;
            memset(&sa, 0, sizeof(sa));
            sa.sa_handler = out_on_signal;
            /* leave alone a signal someone chose to ignore (nohup) or handle */
            if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_DFL)
                sigaction(sigs[i], &sa, NULL);
        }
    }
    out_partial = tmp;
    return f;
}

void cli_out_commit(const char *cmd, FILE *f, const char *path)
{
    if (fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0) {
        int e = errno;
        fclose(f);
        cli_die(cmd, "cannot write '%s': %s", path, strerror(e));
    }
    if (fclose(f) != 0) cli_die(cmd, "cannot write '%s': %s", path, strerror(errno));
    if (rename(out_partial, path) != 0) cli_die(cmd, "cannot write '%s': %s", path, strerror(errno));
    char *p = out_partial;
    out_partial = NULL; /* before the free: a signal handler may read it */
    free(p);
}

void cli_check_writable(const char *cmd, const char *path)
{
    struct stat sb;
    if (!path[0]) cli_die(cmd, "the output path is empty");
    if (stat(path, &sb) == 0 && !S_ISREG(sb.st_mode))
        cli_die(cmd, "cannot write '%s': not a regular file", path);
    char *dir = strdup(path);
    if (!dir) cli_die(cmd, "out of memory");
    char *slash = strrchr(dir, '/');
    if (slash) slash[slash == dir] = 0; /* "/x" -> "/", "a/b" -> "a" */
    const char *d = slash ? dir : ".";
    if (access(d, W_OK | X_OK) != 0) {
        int e = errno;
        free(dir);
        cli_die(cmd, "cannot write '%s': %s", path, strerror(e));
    }
    free(dir);
}

int cli_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
           sa.st_ino == sb.st_ino;
}

#ifdef MNEMO_FUZZ
jmp_buf *cli_fuzz_exit;
#endif

/* Every exit of cli_die, cli_fail and --help. */
static _Noreturn void cli_exit(int status)
{
#ifdef MNEMO_FUZZ
    if (cli_fuzz_exit) longjmp(*cli_fuzz_exit, status + 1);
#endif
    exit(status);
}

_Noreturn void cli_die(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "mnemo %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    cli_exit(1);
}

_Noreturn void cli_fail(const char *cmd, enum mnemo_status st, const char *what)
{
    const char *detail = mnemo_last_error();
    fprintf(stderr, "mnemo %s: %s: %s\n", cmd, what, detail[0] ? detail : mnemo_status_str(st));
    cli_exit(1);
}

void cli_fmt_duration(char *buf, size_t n, double s)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "?");
        return;
    }
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static const char *type_word(enum opt_type t)
{
    switch (t) {
    case OPT_INT: return "INT";
    case OPT_FLOAT: return "NUM";
    case OPT_STR: return "STR";
    case OPT_U64: return "INT";
    case OPT_BOOL: return "";
    case OPT_ATTN: return "K=V,...";
    }
    return "";
}

/* ---- the attention kinds' options ---------------------------------------------------------- */

/* Strings the kind-option lists own, freed by cli_opts_free (at exit). */
static char **owned;
static size_t n_owned;

/* cli_opts_free at exit, registered once by whatever first keeps memory */
static void free_at_exit(void)
{
    static int registered;
    if (!registered) registered = atexit(cli_opts_free) == 0;
}

static void free_owned(void)
{
    for (size_t i = 0; i < n_owned; i++) free(owned[i]);
    free(owned);
    owned = NULL;
    n_owned = 0;
}

/* Adds the items of `items` ("key=value,key=value") to *list (a string owned here), each
 * replacing an item of the same key already there: the last value given wins, as for flags. */
static void attn_add(const char *cmd, char **list, const char *items)
{
    const size_t n = (*list ? strlen(*list) : 0) + strlen(items) + 2;
    char *s = malloc(n);
    char **o = realloc(owned, (n_owned + 1) * sizeof(*owned));
    if (!s || !o) cli_die(cmd, "out of memory");
    free_at_exit();
    owned = o;
    owned[n_owned++] = s;
    size_t used = 0;
    const char *src[2] = {*list ? *list : "", items};
    for (int k = 0; k < 2; k++)
        for (const char *p = src[k]; *p;) {
            while (*p == ',' || *p == ' ') p++;
            const size_t len = strcspn(p, ","), klen = strcspn(p, "=");
            int replaced = 0; /* an old item whose key comes again in items */
            for (const char *q = k == 0 ? items : ""; *q && !replaced;) {
                while (*q == ',' || *q == ' ') q++;
                const size_t ql = strcspn(q, ",");
                replaced = klen < len && ql > klen && !strncmp(q, p, klen) && q[klen] == '=';
                q += ql;
            }
            if (len && !replaced) {
                if (used) s[used++] = ',';
                memcpy(s + used, p, len);
                used += len;
            }
            p += len;
        }
    s[used] = 0;
    *list = s; /* the old string stays owned until exit */
}

/* The type of key (len bytes) in the first kind that has it, or -1 for no kind's option. */
static int kind_key_type(const char *key, size_t len)
{
    char k[64];
    if (len == 0 || len >= sizeof(k)) return -1;
    for (size_t i = 0; i < len; i++) k[i] = key[i] == '-' ? '_' : key[i];
    k[len] = 0;
    for (int kind = 0; kind < MNEMO_ATTN_KIND_COUNT; kind++) {
        int i = mnemo_attn_opt_find(kind, k);
        if (i >= 0) return mnemo_attn_ops_get(kind)->opts[i].type;
    }
    return -1;
}

/* The OPT_ATTN target of a table, or NULL. */
static struct cli_attn *attn_target(const struct opt *opts, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (opts[i].type == OPT_ATTN) return opts[i].ptr;
    return NULL;
}

/* Adds "key=value" (key len bytes, dashes as underscores) to the typed or config list. */
static void attn_add_kv(const char *cmd, struct cli_attn *a, int from_config, const char *key,
                        size_t len, const char *value)
{
    if (strchr(value, ',') || strchr(value, '='))
        cli_die(cmd, "--%.*s '%s': one value (a per-layer list is written a/b/c)", (int)len, key,
                value);
    const size_t n = len + strlen(value) + 2;
    char *item = malloc(n);
    if (!item) cli_die(cmd, "out of memory");
    snprintf(item, n, "%.*s=%s", (int)len, key, value);
    for (size_t i = 0; i < len; i++) item[i] = item[i] == '-' ? '_' : item[i];
    attn_add(cmd, from_config ? &a->config : &a->typed, item);
    free(item);
}

const char *cli_attn_all(struct cli_attn *a)
{
    if (!a->config) return a->typed;
    if (!a->typed) return a->config;
    /* the config's items, those the command line gives again replaced (flags override) */
    char *both = NULL;
    attn_add("", &both, a->config);
    attn_add("", &both, a->typed);
    return both;
}

static const char *const scope_word[MNEMO_ATTN_SCOPE_COUNT] = {"model", "train", "session"};

void cli_print_kinds(FILE *f)
{
    fprintf(f, "attention kinds and their options (--attn_opt KEY=VALUE,... or --KEY VALUE; "
            "scope: model = fixed by a checkpoint, train = training only, session = streaming; "
            "per layer: a/b/c):\n");
    for (int kind = 0; kind < MNEMO_ATTN_KIND_COUNT; kind++) {
        const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(kind);
        fprintf(f, "  %s%s\n", ops->name, ops->n_opts ? "" : " (no options)");
        for (int i = 0; i < ops->n_opts; i++) {
            const struct mnemo_attn_opt *o = &ops->opts[i];
            char range[96] = "", def[64];
            switch (o->type) {
            case MNEMO_ATTN_OPT_INT:
                snprintf(range, sizeof(range), "INT in [%.0f, %.0f]", o->lo, o->hi);
                snprintf(def, sizeof(def), "%.0f", o->def);
                break;
            case MNEMO_ATTN_OPT_FLOAT:
                snprintf(range, sizeof(range), "NUM in [%g, %g]", o->lo, o->hi);
                snprintf(def, sizeof(def), "%g", o->def);
                break;
            case MNEMO_ATTN_OPT_BOOL:
                snprintf(range, sizeof(range), "true|false");
                snprintf(def, sizeof(def), "%s", o->def != 0 ? "true" : "false");
                break;
            default: {
                snprintf(range, sizeof(range), "%s", o->choices);
                const char *c = o->choices;
                for (int k = 0; k < (int)o->def && c; k++) c = strchr(c, '|') ? strchr(c, '|') + 1 : NULL;
                snprintf(def, sizeof(def), "%.*s", c ? (int)strcspn(c, "|") : 0, c ? c : "");
            }
            }
            fprintf(f, "    %-13s %s%s, %s, default %s: %s\n", o->key, range,
                    o->flags & MNEMO_ATTN_OPT_PER_LAYER ? " (per layer)" : "",
                    scope_word[o->scope], def, o->help);
        }
    }
}

static void print_help(const char *cmd, const char *usage, const struct opt *opts, size_t n)
{
    printf("usage: mnemo %s %s\n\n", cmd, usage);
    printf("options (also accepted as keys of a JSON object given with --config FILE;\n"
           "flags on the command line override the file):\n");
    for (size_t i = 0; i < n; i++) {
        char left[64], def[64] = "";
        snprintf(left, sizeof(left), "--%s %s", opts[i].name, type_word(opts[i].type));
        switch (opts[i].type) {
        case OPT_INT: snprintf(def, sizeof(def), " [%d]", *(int *)opts[i].ptr); break;
        case OPT_FLOAT: snprintf(def, sizeof(def), " [%g]", (double)*(float *)opts[i].ptr); break;
        case OPT_U64: snprintf(def, sizeof(def), " [%llu]", (unsigned long long)*(uint64_t *)opts[i].ptr); break;
        case OPT_STR: {
            const char *s = *(const char **)opts[i].ptr;
            if (s) snprintf(def, sizeof(def), " [%s]", s);
            break;
        }
        case OPT_BOOL:
        case OPT_ATTN: break;
        }
        printf("  %-26s %s%s\n", left, opts[i].help, def);
    }
    printf("  %-26s %s\n", "--config FILE", "read options from a JSON file");
    printf("  %-26s %s\n", "--help", "show this help");
    if (attn_target(opts, n)) {
        printf("\n");
        cli_print_kinds(stdout);
    }
}

static const struct opt *find_opt(const struct opt *opts, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(opts[i].name) == len && !strncmp(opts[i].name, name, len)) return &opts[i];
    /* accept dashes for underscores: --grad-clip == --grad_clip */
    for (size_t i = 0; i < n; i++) {
        const char *a = opts[i].name;
        size_t k = 0;
        while (k < len && a[k] && (a[k] == name[k] || (a[k] == '_' && name[k] == '-'))) k++;
        if (k == len && !a[k]) return &opts[i];
    }
    return NULL;
}

static void set_value(const char *cmd, const struct opt *o, const char *v, const char *where)
{
    char *end;
    errno = 0;
    switch (o->type) {
    case OPT_INT: {
        long x = strtol(v, &end, 10);
        if (errno || end == v || *end || x < -2147483647L || x > 2147483647L)
            cli_die(cmd, "%s%s: '%s' is not an integer", where, o->name, v);
        *(int *)o->ptr = (int)x;
        break;
    }
    case OPT_U64: {
        unsigned long long x = strtoull(v, &end, 10);
        if (errno || end == v || *end || v[0] == '-')
            cli_die(cmd, "%s%s: '%s' is not a non-negative integer", where, o->name, v);
        *(uint64_t *)o->ptr = x;
        break;
    }
    case OPT_FLOAT: {
        float x = strtof(v, &end);
        if (errno || end == v || *end || !isfinite(x))
            cli_die(cmd, "%s%s: '%s' is not a number", where, o->name, v);
        *(float *)o->ptr = x;
        break;
    }
    case OPT_STR: *(const char **)o->ptr = v; break;
    case OPT_ATTN: {
        struct cli_attn *a = o->ptr;
        if (!strchr(v, '=')) cli_die(cmd, "%s%s: '%s' is not KEY=VALUE[,KEY=VALUE...]", where, o->name, v);
        attn_add(cmd, where[0] == '-' ? &a->typed : &a->config, v);
        break;
    }
    case OPT_BOOL:
        if (!strcmp(v, "1") || !strcmp(v, "true")) *(int *)o->ptr = 1;
        else if (!strcmp(v, "0") || !strcmp(v, "false")) *(int *)o->ptr = 0;
        else cli_die(cmd, "%s%s: '%s' is not true/false", where, o->name, v);
        break;
    }
}

/* The config parser's memory. Values of string options are copied out of the parsed file
 * (the commands keep them to the end) into one allocation each, linked on kept_strs; the file's
 * buffer and parse tree are held in cfg_buf/cfg_root while load_config runs, so that an error
 * that ends the parse loses neither. cli_opts_free releases all of it, at exit. */
struct kept_str {
    struct kept_str *next;
    char s[];
};
static struct kept_str *kept_strs;
static char *cfg_buf;
static cJSON *cfg_root;

void cli_opts_free(void)
{
    free_owned();
    cJSON_Delete(cfg_root);
    free(cfg_buf);
    cfg_root = NULL;
    cfg_buf = NULL;
    while (kept_strs) {
        struct kept_str *k = kept_strs;
        kept_strs = k->next;
        free(k);
    }
}

/* A copy of s owned by the parser (freed by cli_opts_free). */
static const char *keep_str(const char *cmd, const char *s)
{
    const size_t n = strlen(s) + 1;
    struct kept_str *k = malloc(sizeof(*k) + n);
    if (!k) cli_die(cmd, "out of memory");
    memcpy(k->s, s, n);
    k->next = kept_strs;
    kept_strs = k;
    return k->s;
}

static void load_config(const char *cmd, const char *path, const struct opt *opts, size_t n)
{
    free_at_exit();
    struct stat sb;
    if (stat(path, &sb) != 0) cli_die(cmd, "cannot open config '%s': %s", path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) cli_die(cmd, "config '%s' is not a regular file", path);
    FILE *f = fopen(path, "rb");
    if (!f) cli_die(cmd, "cannot open config '%s': %s", path, strerror(errno));
    char *buf = cfg_buf = malloc(1 << 20);
    if (!buf) {
        fclose(f);
        cli_die(cmd, "out of memory");
    }
    size_t len = fread(buf, 1, (1 << 20) - 1, f);
    int big = !feof(f), err = ferror(f);
    fclose(f);
    if (err) cli_die(cmd, "cannot read config '%s'", path);
    if (big) cli_die(cmd, "config '%s' is larger than 1 MiB", path);
    buf[len] = 0;
    if (strlen(buf) != len) cli_die(cmd, "config '%s' holds a NUL byte", path);
    /* one object, nothing but white space after it */
    cJSON *root = cfg_root = cJSON_ParseWithOpts(buf, NULL, 1);
    if (!root || !cJSON_IsObject(root)) {
        const char *at = root ? NULL : cJSON_GetErrorPtr();
        char near[24] = "";
        for (size_t i = 0; at && i < 20 && at[i]; i++) /* one line: control bytes as spaces */
            near[i] = (unsigned char)at[i] < 0x20 ? ' ' : at[i], near[i + 1] = 0;
        cli_die(cmd, "config '%s' is not a JSON object%s%s%s", path, at ? " (near '" : "", near,
                at ? "')" : "");
    }
    char where[600];
    snprintf(where, sizeof(where), "config '%s': ", path);
    for (cJSON *it = root->child; it; it = it->next) {
        if (it->string && it->string[0] == '_') continue; /* "_comment" keys are ignored */
        const struct opt *o = it->string ? find_opt(opts, n, it->string, strlen(it->string)) : NULL;
        struct cli_attn *ka = attn_target(opts, n);
        if (!o && ka && kind_key_type(it->string, strlen(it->string)) >= 0) {
            char num[64];
            const char *kv = cJSON_IsString(it) ? it->valuestring : NULL;
            if (cJSON_IsBool(it)) kv = cJSON_IsTrue(it) ? "true" : "false";
            else if (cJSON_IsNumber(it)) snprintf(num, sizeof(num), "%.17g", it->valuedouble), kv = num;
            if (!kv) cli_die(cmd, "config '%s': %s: expected a number, a string or a boolean", path,
                             it->string);
            attn_add_kv(cmd, ka, 1, it->string, strlen(it->string), kv);
            continue;
        }
        if (!o) cli_die(cmd, "config '%s': unknown key '%s' (see mnemo %s --help)", path,
                        it->string ? it->string : "?", cmd);
        char tmp[64];
        const char *v = NULL;
        if (cJSON_IsString(it)) v = it->valuestring;
        else if (cJSON_IsBool(it)) v = cJSON_IsTrue(it) ? "true" : "false";
        else if (cJSON_IsNumber(it)) {
            if (o->type == OPT_FLOAT) snprintf(tmp, sizeof(tmp), "%.9g", it->valuedouble);
            else if (it->valuedouble == floor(it->valuedouble) && fabs(it->valuedouble) < 1e18)
                snprintf(tmp, sizeof(tmp), "%.0f", it->valuedouble);
            else cli_die(cmd, "%s%s: %g is not an integer", where, o->name, it->valuedouble);
            v = tmp;
        } else cli_die(cmd, "%s%s: unsupported value type", where, o->name);
        if (o->type == OPT_STR && !cJSON_IsString(it))
            cli_die(cmd, "%s%s: expected a string", where, o->name);
        if (o->type == OPT_STR) v = keep_str(cmd, v); /* the command keeps it; root goes */
        set_value(cmd, o, v, where);
    }
    cJSON_Delete(root);
    free(buf);
    cfg_root = NULL;
    cfg_buf = NULL;
}

void cli_parse(const char *cmd, const char *usage, int argc, char **argv, const struct opt *opts,
               size_t n_opts, const char **pos, int *n_pos, int max_pos)
{
    /* pass 1: --help and --config (the value of another option is skipped, so that
     * --prompt --config is a prompt, not a config file) */
    for (int i = 0; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] == '-' && !strchr(argv[i], '=')) {
            const struct opt *o = find_opt(opts, n_opts, argv[i] + 2, strlen(argv[i] + 2));
            const int kt = !o && attn_target(opts, n_opts)
                               ? kind_key_type(argv[i] + 2, strlen(argv[i] + 2)) : -1;
            if ((o && o->type != OPT_BOOL) || (kt >= 0 && kt != MNEMO_ATTN_OPT_BOOL)) {
                i++;
                continue;
            }
        }
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            print_help(cmd, usage, opts, n_opts);
            cli_exit(0);
        }
        if (!strncmp(argv[i], "--config", 8) && (argv[i][8] == 0 || argv[i][8] == '=')) {
            const char *path = argv[i][8] == '=' ? argv[i] + 9 : (i + 1 < argc ? argv[++i] : NULL);
            if (!path) cli_die(cmd, "--config needs a file name");
            load_config(cmd, path, opts, n_opts);
        }
    }
    /* pass 2: everything else */
    *n_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strncmp(a, "--config", 8) && (a[8] == 0 || a[8] == '=')) {
            if (a[8] == 0) i++;
            continue;
        }
        if (a[0] == '-' && a[1] == '-' && a[2]) {
            const char *name = a + 2, *eq = strchr(name, '=');
            size_t len = eq ? (size_t)(eq - name) : strlen(name);
            const struct opt *o = find_opt(opts, n_opts, name, len);
            struct cli_attn *ka = attn_target(opts, n_opts);
            const int kt = !o && ka ? kind_key_type(name, len) : -1;
            if (kt >= 0) { /* an attention kind's option: --segment 64 */
                const char *v;
                if (eq) v = eq + 1;
                else if (kt == MNEMO_ATTN_OPT_BOOL && (i + 1 >= argc || argv[i + 1][0] == '-')) v = "true";
                else if (i + 1 < argc) v = argv[++i];
                else cli_die(cmd, "option --%.*s needs a value", (int)len, name);
                attn_add_kv(cmd, ka, 0, name, len, v);
                continue;
            }
            if (!o) cli_die(cmd, "unknown option '--%.*s' (see mnemo %s --help)", (int)len, name, cmd);
            const char *v;
            if (eq) v = eq + 1;
            else if (o->type == OPT_BOOL) v = "true";
            else if (i + 1 < argc) v = argv[++i];
            else cli_die(cmd, "option --%s needs a value", o->name);
            set_value(cmd, o, v, "--");
        } else {
            if (*n_pos >= max_pos) cli_die(cmd, "unexpected argument '%s' (see mnemo %s --help)", a, cmd);
            pos[(*n_pos)++] = a;
        }
    }
}
