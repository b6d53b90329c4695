/*
 * prepare.c -- text to token files with the byte tokenizer (ids 0..255 = bytes, 256 = BOS,
 * which the loader puts at the start of every window). Deterministic: the validation split is
 * the last val_frac of the text.
 */
#include <math.h>
#include <stdio.h>

#include "data.h"
#include "mni.h"

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
    uint16_t *tok = mni_alloc(mni_mul(n, sizeof(uint16_t)));
    if (!tok) return mni_err(MNEMO_ERR_NOMEM, "out of memory for %zu tokens", n);
    for (size_t i = 0; i < n; i++) tok[i] = text[i];
    char path[4096];
    snprintf(path, sizeof(path), "%s/train.bin", out_dir);
    enum mnemo_status st = mni_tokens_write(path, tok, n - nv, MNI_TOK_VOCAB);
    if (st == MNEMO_OK) {
        snprintf(path, sizeof(path), "%s/val.bin", out_dir);
        st = mni_tokens_write(path, tok + (n - nv), nv, MNI_TOK_VOCAB);
    }
    mni_free(tok);
    if (st == MNEMO_OK) {
        if (n_train) *n_train = n - nv;
        if (n_val) *n_val = nv;
    }
    return st;
}
