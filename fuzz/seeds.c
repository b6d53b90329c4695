/*
 * seeds.c -- writes the seed corpora of the binary fuzzers through the library itself, so
 * that the seeds are what mnemo really writes: tiny checkpoints of every attention kind and
 * position encoding (some carrying train.* and prune.* pairs) into DIR/ckpt, and token files
 * into DIR/tokens. scripts/fuzz.sh runs it; the text seeds (configs, arguments, task lines)
 * come from the script. Not a fuzzer: built without libFuzzer's main.
 * usage: fuzz_seeds DIR   (DIR/ckpt and DIR/tokens must exist)
 */
#include <stdio.h>
#include <string.h>

#include "data.h"
#include "mnemo.h"

static int fail(const char *what)
{
    fprintf(stderr, "fuzz_seeds: %s: %s\n", what, mnemo_last_error());
    return 1;
}

/* A model small enough to mutate well (about 2 KB of parameters). */
static int write_ckpt(const char *dir, const char *name, int kind, int pos, int n_layer,
                      const char *const *meta, int n_meta)
{
    struct mnemo_model_config c;
    mnemo_model_config_default(&c);
    c.n_layer = n_layer;
    c.d_model = 4;
    c.n_head = 2;
    c.n_ctx = 4;
    c.vocab = 3;
    c.pos = pos;
    c.attn_kind = kind;
    struct mnemo_model *m;
    if (mnemo_model_create(&m, &c) != MNEMO_OK) return fail(name);
    mnemo_model_init(m, 1);
    for (int i = 0; i < n_meta; i++)
        if (mnemo_model_set_meta(m, meta[2 * i], meta[2 * i + 1]) != MNEMO_OK) {
            mnemo_model_free(m);
            return fail(name);
        }
    char path[4096];
    snprintf(path, sizeof(path), "%s/ckpt/%s.safetensors", dir, name);
    enum mnemo_status st = mnemo_model_save_meta(m, path);
    mnemo_model_free(m);
    return st == MNEMO_OK ? 0 : fail(path);
}

static int write_tokens(const char *dir, const char *name, const char *text, int vocab,
                        uint16_t extra)
{
    uint16_t tok[256];
    size_t n = 0;
    for (; text[n] && n < 255; n++) tok[n] = (unsigned char)text[n];
    if (extra) tok[n++] = extra; /* an id past the bytes (a larger vocabulary) */
    char path[4096];
    snprintf(path, sizeof(path), "%s/tokens/%s.bin", dir, name);
    return mni_tokens_write(path, tok, n, vocab) == MNEMO_OK ? 0 : fail(path);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: fuzz_seeds DIR\n");
        return 2;
    }
    const char *d = argv[1];
    const char *train[] = {"train.step", "12", "train.optimizer", "adamw"};
    const char *prune[] = {"prune.budgets", "3,2"};
    int bad = 0;
    bad |= write_ckpt(d, "dense_rope", MNEMO_ATTN_KIND_DENSE, MNEMO_POS_ROPE, 1, train, 2);
    bad |= write_ckpt(d, "dense_learned", MNEMO_ATTN_KIND_DENSE, MNEMO_POS_LEARNED, 1, NULL, 0);
    bad |= write_ckpt(d, "selective", MNEMO_ATTN_KIND_SELECTIVE, MNEMO_POS_ROPE, 2, prune, 1);
    bad |= write_ckpt(d, "infini", MNEMO_ATTN_KIND_INFINI, MNEMO_POS_ROPE, 1, NULL, 0);
    bad |= write_tokens(d, "text", "In the beginning God created the heaven and the earth.\n",
                        MNI_TOK_VOCAB, 0);
    bad |= write_tokens(d, "lines", "k=3;b=7;k=?3\nq=1;q=?1\na=2;a=?2\n", MNI_TOK_VOCAB, 0);
    bad |= write_tokens(d, "short", "ab", MNI_TOK_VOCAB, MNI_TOK_BOS);
    bad |= write_tokens(d, "vocab300", "abc\n", 300, 299);
    return bad;
}
