/*
 * fuzz_ckpt.c -- libFuzzer harness for the checkpoint reader: the input is a file's bytes.
 *
 * Two layers, as a checkpoint is read: the safetensors reader (src/st.c: header, entries,
 * tiling), whose every validated tensor must then read back, and mnemo_model_load
 * (src/ckpt.c: the config in the metadata, the parameter tensors, the carried pairs), whose
 * model must be what the file says. Anything else is a refusal with a status, never a crash,
 * a leak or a read out of bounds.
 */
#include <string.h>

#include "fuzz.h"
#include "mnemo.h"
#include "mnemo_attn.h"
#include "st.h"

/* The safetensors layer on its own: a file that opens holds what its header says. */
static void check_st(const char *path)
{
    struct mni_st_file *f;
    if (mni_st_open(&f, path) != MNEMO_OK) {
        FUZZ_CHECK(f == NULL);
        return;
    }
    for (size_t i = 0; i < mni_st_count(f); i++) {
        const struct mni_st_info *in = mni_st_info_at(f, i);
        FUZZ_CHECK(in && in->name && mni_st_find(f, in->name) == in);
        void *buf = malloc(in->nbytes ? in->nbytes : 1); /* nbytes fit in the file: tiled */
        FUZZ_CHECK(buf);
        FUZZ_CHECK(mni_st_read(f, in->name, in->dtype, in->ndim, in->shape, buf) == MNEMO_OK);
        free(buf);
    }
    FUZZ_CHECK(mni_st_info_at(f, mni_st_count(f)) == NULL);
    for (size_t i = 0; i < mni_st_meta_count(f); i++) {
        const char *k, *v;
        mni_st_meta_at(f, i, &k, &v);
        FUZZ_CHECK(k && v && mni_st_meta(f, k) == v); /* keys are unique */
    }
    mni_st_close(f);
}

/* The model layer: a checkpoint that loads has a valid config, exactly its parameters, and
 * carries its train.* and prune.* pairs unchanged. */
static void check_model(const char *path)
{
    struct mnemo_model *m;
    if (mnemo_model_load(&m, path) != MNEMO_OK) {
        FUZZ_CHECK(m == NULL);
        return;
    }
    FUZZ_CHECK(mnemo_model_config_check(mnemo_model_get_config(m)) == MNEMO_OK);
    struct mni_st_file *f;
    FUZZ_CHECK(mni_st_open(&f, path) == MNEMO_OK);
    size_t bytes = 0;
    for (size_t i = 0; i < mni_st_count(f); i++) bytes += mni_st_info_at(f, i)->nbytes;
    FUZZ_CHECK(bytes == mnemo_model_n_params(m) * sizeof(float));
    /* a format-1 "prune.budgets" of a kind with a budget option is read as that option, not
     * carried (src/ckpt.c, budgets_as_option) */
    const char *fmt = mni_st_meta(f, "mnemo.format");
    const int budgets_opt = fmt && !strcmp(fmt, "1") &&
                            mnemo_attn_opt_find(mnemo_model_get_config(m)->attn_kind, "budget") >= 0;
    for (size_t i = 0; i < mni_st_meta_count(f); i++) {
        const char *k, *v;
        mni_st_meta_at(f, i, &k, &v);
        if (strncmp(k, "train.", 6) && strncmp(k, "prune.", 6)) continue;
        if (budgets_opt && !strcmp(k, "prune.budgets")) continue;
        const char *got = mnemo_model_meta(m, k);
        FUZZ_CHECK(got && !strcmp(got, v));
    }
    mni_st_close(f);
    mnemo_model_free(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    check_st(path);
    check_model(path);
    return 0;
}
