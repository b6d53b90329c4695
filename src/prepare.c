/*
 * prepare.c -- text to token files with the byte tokenizer (ids 0..255 = bytes, 256 = BOS,
 * which the loader puts at the start of every window). Deterministic: the validation split is
 * the last val_frac of the text.
 *
 * The two files are a pair, so neither replaces its predecessor until both are complete: each
 * is first written (atomically) to a staging name "<out>/<name>.staged.<pid>", then the two are
 * renamed into place, train.bin then val.bin, and the directory is synced. A failure before
 * the renames removes the staged files and leaves both old files as they were. The window
 * left: the second rename failing, or a crash between the two renames, leaves the new
 * train.bin beside the old val.bin; the error message says so (running prepare again mends
 * it). Targets that are directories, the one cause of a rename failure we can foresee, are
 * refused before anything is written.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data.h"
#include "fileio.h"
#include "mni.h"

/* "<dir>/<name>" into buf (n bytes), or MNEMO_ERR_ARG if it does not fit. */
static enum mnemo_status join(char *buf, size_t n, const char *dir, const char *name)
{
    int w = snprintf(buf, n, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= n)
        return mni_err(MNEMO_ERR_ARG, "output directory '%.200s...' is too long a path", dir);
    return MNEMO_OK;
}

enum mnemo_status mnemo_prepare_text(const unsigned char *text, size_t n, const char *out_dir,
                                     double val_frac, uint64_t *n_train, uint64_t *n_val)
{
    if (!(val_frac > 0 && val_frac < 1))
        return mni_err(MNEMO_ERR_ARG, "val_frac = %g: must be in (0, 1)", val_frac);
    if (n == 0) return mni_err(MNEMO_ERR_ARG, "the input holds no text");
    size_t nv = (size_t)ceil((double)n * val_frac);
    if (nv < 1) nv = 1;
    if (n - nv < 2)
        return mni_err(MNEMO_ERR_ARG, "too little text (%zu bytes) to split into train and validation", n);

    if (!out_dir || !out_dir[0]) return mni_err(MNEMO_ERR_ARG, "prepare: no output directory given");
    // [0] train, [1] val: final and staging paths
    static const char *const names[2] = {"train.bin", "val.bin"};
    char path[2][4096], staged[2][4096], tail[64];
    enum mnemo_status st = MNEMO_OK;
    for (int k = 0; k < 2 && st == MNEMO_OK; k++) {
        snprintf(tail, sizeof(tail), "%s.staged.%ld", names[k], (long)getpid());
        if ((st = join(path[k], sizeof(path[k]), out_dir, names[k])) == MNEMO_OK)
            st = join(staged[k], sizeof(staged[k]), out_dir, tail);
    }
    if (st != MNEMO_OK) return st;
    struct stat sb;
    for (int k = 0; k < 2; k++)
        if (stat(path[k], &sb) == 0 && S_ISDIR(sb.st_mode))
            return mni_err(MNEMO_ERR_IO, "cannot write %s: it is a directory", path[k]);

    uint16_t *tok = mni_alloc(mni_mul(n, sizeof(uint16_t)));
    if (!tok) return mni_err(MNEMO_ERR_NOMEM, "out of memory for %zu tokens", n);
    for (size_t i = 0; i < n; i++) tok[i] = text[i];
    st = mni_tokens_write(staged[0], tok, n - nv, MNI_TOK_VOCAB);
    if (st == MNEMO_OK) st = mni_tokens_write(staged[1], tok + (n - nv), nv, MNI_TOK_VOCAB);
    mni_free(tok);
    if (st == MNEMO_OK) st = mni_rename(staged[0], path[0]);
    if (st == MNEMO_OK && (st = mni_rename(staged[1], path[1])) != MNEMO_OK) {
        st = mni_err(st, "%s; %s is new but %s is from before: run prepare again",
                     mnemo_last_error(), path[0], path[1]);
    }
    // Whatever happened, no staged file stays behind (after a rename it is gone already).
    unlink(staged[0]);
    unlink(staged[1]);
    if (st == MNEMO_OK && (st = mni_sync_dir(out_dir)) != MNEMO_OK) {
        st = mni_err(st, "wrote %s and %s, but their durability is not certain: %s", path[0],
                     path[1], mnemo_last_error());
    }
    if (st == MNEMO_OK) {
        if (n_train) *n_train = n - nv;
        if (n_val) *n_val = nv;
    }
    return st;
}
