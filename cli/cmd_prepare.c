/*
 * cmd_prepare.c -- mnemo prepare: text files (or stdin) to train/val token files.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

/* Appends the whole of f to *buf (growing it). */
static int slurp(FILE *f, unsigned char **buf, size_t *n, size_t *cap)
{
    for (;;) {
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 1 << 20;
            unsigned char *nb = realloc(*buf, nc);
            if (!nb) return -1;
            *buf = nb;
            *cap = nc;
        }
        size_t got = fread(*buf + *n, 1, *cap - *n, f);
        *n += got;
        if (got == 0) return ferror(f) ? -1 : 0;
    }
}

int cmd_prepare(int argc, char **argv)
{
    const char *out = "data/corpus";
    float val_frac = 0.05f;
    const struct opt opts[] = {
        {"out", OPT_STR, &out, "output directory for train.bin and val.bin"},
        {"val_frac", OPT_FLOAT, &val_frac, "fraction of the text (its end) kept for validation"},
    };
    const char **files = malloc((size_t)(argc + 1) * sizeof(*files)); /* as many as given */
    if (!files) cli_die("prepare", "out of memory");
    int n_files;
    cli_parse("prepare", "[options] FILE... (- for standard input)", argc, argv, opts,
              sizeof(opts) / sizeof(opts[0]), files, &n_files, argc + 1);
    if (n_files == 0) cli_die("prepare", "no input files (give text files, or - for standard input)");
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (int i = 0; i < n_files; i++) {
        int is_stdin = !strcmp(files[i], "-");
        FILE *f = is_stdin ? stdin : fopen(files[i], "rb");
        if (!f) cli_die("prepare", "cannot open '%s': %s", files[i], strerror(errno));
        struct stat sb;
        if (!is_stdin && fstat(fileno(f), &sb) == 0 && S_ISDIR(sb.st_mode))
            cli_die("prepare", "'%s' is a directory, not a text file", files[i]);
        if (slurp(f, &buf, &n, &cap) != 0) cli_die("prepare", "cannot read '%s'", files[i]);
        if (!is_stdin) fclose(f);
    }
    if (n == 0) cli_die("prepare", "the input is empty: nothing to prepare");
    if (cli_mkdir_p(out) != 0) cli_die("prepare", "cannot create directory '%s': %s", out, strerror(errno));
    uint64_t nt = 0, nv = 0;
    enum mnemo_status st = mnemo_prepare_text(buf, n, out, val_frac, &nt, &nv);
    if (st != MNEMO_OK) cli_fail("prepare", st, "cannot prepare the data");
    printf("prepare: %zu bytes from %d file%s -> %s/train.bin (%llu tokens), %s/val.bin (%llu tokens)\n",
           n, n_files, n_files == 1 ? "" : "s", out, (unsigned long long)nt, out,
           (unsigned long long)nv);
    free(buf);
    free(files);
    return 0;
}
