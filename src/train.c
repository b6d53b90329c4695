/*
 * train.c -- the training loop: AdamW with decoupled weight decay on matrices, linear warmup
 * then cosine decay, global-norm gradient clipping, gradient accumulation, periodic validation
 * and checkpoints, exact resume, and a JSON Lines log. Also mnemo_eval_file.
 *
 * Exact resume: the model file holds the parameters; train_state.<step>.safetensors holds
 * AdamW's m and v, the step, and the loader position (epoch, index). The data order is a pure
 * function of (seed, epoch), so nothing else is needed to continue bit for bit (same threads,
 * same build). A checkpoint writes the state of step k under its own name, then the model, and
 * only then removes the state of the previous pair: whatever stops the process, the directory
 * holds a model and the state that belongs to it (docs/internals/training.md, "Checkpoints").
 * With an exponential moving average of the weights (tc->ema > 0) the model file holds the
 * average, the weights being trained go to the train state ("params"), and validation scores
 * the average (docs/internals/training.md).
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt.h"
#include "comm.h"
#include "data.h"
#include "fileio.h"
#include "kern/kern.h"
#include "mni.h"
#include "model.h"
#include "optim.h"
#include "st.h"

#define PATH_MAX_LEN 1024

void mnemo_train_config_default(struct mnemo_train_config *tc)
{
    memset(tc, 0, sizeof(*tc));
    tc->batch = 8;
    tc->seq = 0;
    tc->grad_accum = 1;
    tc->max_steps = 1000;
    tc->warmup = 100;
    tc->lr = 1.5e-3f; /* best of the probe in docs/benchmarks.md */
    tc->lr_min = 1.5e-4f;
    tc->weight_decay = 0.1f;
    tc->beta1 = 0.9f;
    tc->beta2 = 0.95f;
    tc->eps = 1e-8f;
    tc->grad_clip = 1.0f;
    tc->eval_every = 250;
    tc->eval_windows = 64;
    tc->ckpt_every = 500;
    tc->seed = 1337;
    tc->optimizer = MNEMO_OPT_ADAMW;
    tc->momentum = 0.95f;
}

static enum mnemo_status check_train_config(const struct mnemo_train_config *tc, int n_ctx)
{
    if (!tc->train_path) return mni_err(MNEMO_ERR_ARG, "no training data given");
    if (!tc->out_dir || !tc->out_dir[0]) return mni_err(MNEMO_ERR_ARG, "no output directory given");
    if (strlen(tc->out_dir) + 32 > PATH_MAX_LEN) /* room for "/train_state.safetensors" */
        return mni_err(MNEMO_ERR_ARG, "output directory '%.64s...' is too long a path (%zu bytes)",
                       tc->out_dir, strlen(tc->out_dir));
    if (tc->resume != 0 && tc->resume != 1)
        return mni_err(MNEMO_ERR_ARG, "resume = %d: must be 0 or 1", tc->resume);
    if (tc->batch < 1 || tc->batch > 1 << 16)
        return mni_err(MNEMO_ERR_ARG, "batch = %d: must be in [1, 65536]", tc->batch);
    if (tc->seq < 0 || tc->seq > n_ctx)
        return mni_err(MNEMO_ERR_ARG, "seq = %d: must be in [1, n_ctx = %d] (0 = n_ctx)", tc->seq, n_ctx);
    if (tc->grad_accum < 1 || tc->grad_accum > 1 << 16)
        return mni_err(MNEMO_ERR_ARG, "grad_accum = %d: must be in [1, 65536]", tc->grad_accum);
    if (tc->max_steps < 1) return mni_err(MNEMO_ERR_ARG, "max_steps = %d: must be >= 1", tc->max_steps);
    if (tc->warmup < 0) return mni_err(MNEMO_ERR_ARG, "warmup = %d: must be >= 0", tc->warmup);
    if (!(tc->lr > 0) || !isfinite(tc->lr))
        return mni_err(MNEMO_ERR_ARG, "lr = %g: must be a positive number", (double)tc->lr);
    if (!(tc->lr_min >= 0) || tc->lr_min > tc->lr)
        return mni_err(MNEMO_ERR_ARG, "lr_min = %g: must be in [0, lr]", (double)tc->lr_min);
    if (!(tc->weight_decay >= 0) || tc->weight_decay * tc->lr >= 1)
        return mni_err(MNEMO_ERR_ARG, "weight_decay = %g: must be >= 0 and lr*wd < 1", (double)tc->weight_decay);
    if (!(tc->beta1 >= 0 && tc->beta1 < 1) || !(tc->beta2 >= 0 && tc->beta2 < 1))
        return mni_err(MNEMO_ERR_ARG, "beta1 = %g, beta2 = %g: must be in [0, 1)", (double)tc->beta1,
                       (double)tc->beta2);
    if (!(tc->eps > 0) || !isfinite(tc->eps))
        return mni_err(MNEMO_ERR_ARG, "eps = %g: must be a positive number", (double)tc->eps);
    if (!(tc->grad_clip >= 0)) return mni_err(MNEMO_ERR_ARG, "grad_clip = %g: must be >= 0", (double)tc->grad_clip);
    if (!(tc->ema >= 0.0f && tc->ema < 1.0f))
        return mni_err(MNEMO_ERR_ARG, "ema = %g: must be in [0, 1) (0 = off)", (double)tc->ema);
    if (!mnemo_optimizer_name(tc->optimizer))
        return mni_err(MNEMO_ERR_ARG, "optimizer = %d: unknown (adamw or muon)", tc->optimizer);
    if (tc->doc_windows != 0 && tc->doc_windows != 1)
        return mni_err(MNEMO_ERR_ARG, "doc_windows = %d: must be 0 or 1", tc->doc_windows);
    if (!(tc->momentum >= 0.0f && tc->momentum < 1.0f))
        return mni_err(MNEMO_ERR_ARG, "momentum = %g: must be in [0, 1)", (double)tc->momentum);
    if (tc->eval_every < 0 || tc->ckpt_every < 0 || tc->eval_windows < 0)
        return mni_err(MNEMO_ERR_ARG, "eval_every, eval_windows and ckpt_every must be >= 0");
    if (tc->threads < 0 || tc->threads > MNEMO_MAX_THREADS)
        return mni_err(MNEMO_ERR_ARG, "threads = %d: must be in [0, %d]", tc->threads,
                       MNEMO_MAX_THREADS);
    return MNEMO_OK;
}

/* The seed of micro-step a of step `step` (mnemo_model_set_mode: the kinds' random draws, e.g.
 * infini's write weights), a function of (seed, step, a), so that a resumed run draws what the
 * uninterrupted one would have. */
static uint64_t step_seed(const struct mnemo_train_config *tc, int step, int a)
{
    return (uint64_t)tc->seed * 0x9E3779B97F4A7C15ull ^
           ((uint64_t)step * (uint64_t)tc->grad_accum + (uint64_t)a + 1);
}

/* Learning rate for step s (0-based): linear warmup to lr over `warmup` steps, then cosine to
 * lr_min at max_steps. */
static float lr_at(const struct mnemo_train_config *tc, int s)
{
    if (s < tc->warmup) return tc->lr * (float)(s + 1) / (float)tc->warmup;
    int span = tc->max_steps - tc->warmup;
    if (span <= 0) return tc->lr;
    double frac = (double)(s - tc->warmup) / (double)span;
    if (frac > 1) frac = 1;
    return (float)(tc->lr_min + 0.5 * (tc->lr - tc->lr_min) * (1.0 + cos(MNI_PI * frac)));
}

/* ---- evaluation -------------------------------------------------------------------------- */

/* Scores windows of T tokens starting S apart. The first window scores all its T predictions;
 * each later one only its last S, which have at least T - S tokens of context (S = T: disjoint
 * windows, every prediction scored once, with 0..T-1 tokens of context). With starts (n_starts
 * document starts, training with doc_windows) the windows are those at the starts instead, each
 * scored whole: validation sees the windows training sees. */
static enum mnemo_status eval_tokens(struct mnemo_model *m, const uint16_t *tok, uint64_t n,
                                     int T, int S, int B, uint64_t max_windows,
                                     const uint64_t *starts, uint64_t n_starts,
                                     const struct mni_comm *c, struct mnemo_eval_result *r)
{
    const struct mni_comm one = {0, 1};
    if (!c) c = &one; /* with a group, each process scores every world-th window and the sums
                       * are added up */
    memset(r, 0, sizeof(*r));
    uint64_t nw = starts ? n_starts : mni_eval_windows(n, T, S);
    if (nw == 0)
        return mni_err(MNEMO_ERR_ARG, "the evaluation data has %llu tokens, fewer than one window of %d",
                       (unsigned long long)n, T);
    const uint64_t all = nw;
    if (max_windows && max_windows < nw) nw = max_windows;
    uint16_t *x = mni_alloc((size_t)B * T * sizeof(uint16_t) * 2);
    if (!x) return mni_err(MNEMO_ERR_NOMEM, "out of memory for evaluation batches");
    uint16_t *y = x + (size_t)B * T;
    double sum[2] = {0, 0}; /* loss, predictions scored */
    enum mnemo_status st = MNEMO_OK;
    const uint64_t W = (uint64_t)c->world;
    for (uint64_t w = (uint64_t)c->rank; w < nw && st == MNEMO_OK; w += (uint64_t)B * W) {
        int b = 0; /* this batch's windows: w, w + W, ... */
        for (; b < B && w + (uint64_t)b * W < nw; b++) {
            const uint64_t k = mni_eval_pick(w + (uint64_t)b * W, nw, all);
            if (starts) mni_window_at(tok, starts[k], T, x + (size_t)b * T, y + (size_t)b * T);
            else mni_eval_window(tok, k, T, S, x + (size_t)b * T, y + (size_t)b * T);
        }
        st = mnemo_model_forward(m, x, y, b, T, NULL);
        for (int i = 0; i < b && st == MNEMO_OK; i++) {
            int from = starts || mni_eval_pick(w + (uint64_t)i * W, nw, all) == 0 ? 0 : T - S;
            const float *l = m->losses + (size_t)i * T;
            for (int t = from; t < T; t++) sum[0] += l[t];
            sum[1] += (double)(T - from);
        }
    }
    mni_free(x);
    st = mni_comm_agree(c, st);
    if (st == MNEMO_OK) st = mni_comm_allreduce_sum(c, sum, 2);
    if (st != MNEMO_OK) return st;
    r->tokens = (uint64_t)sum[1];
    r->loss = sum[0] / sum[1];
    if (!isfinite(r->loss)) return mni_err(MNEMO_ERR_NUMERIC, "the loss is not finite (%g)", r->loss);
    r->bpb = r->loss / MNI_LN2;
    r->ppl = exp(r->loss);
    return MNEMO_OK;
}

enum mnemo_status mnemo_eval_file(struct mnemo_model *m, const char *path, int T, int stride,
                                  int B, uint64_t max_windows, struct mnemo_eval_result *res)
{
    if (T == 0) T = m->cfg.n_ctx;
    if (stride == 0) stride = T;
    if (!path || !res) return mni_err(MNEMO_ERR_ARG, "eval: no token file or no result given");
    if (T < 1 || T > m->cfg.n_ctx || B < 1)
        return mni_err(MNEMO_ERR_ARG, "eval: window %d must be in [1, n_ctx = %d] and batch %d >= 1",
                       T, m->cfg.n_ctx, B);
    if (stride < 1 || stride > T)
        return mni_err(MNEMO_ERR_ARG, "eval: stride %d must be in [1, window = %d]", stride, T);
    struct mni_tokens tk;
    enum mnemo_status st = mni_tokens_read_for(&tk, path, m->cfg.vocab);
    if (st != MNEMO_OK) return st;
    st = eval_tokens(m, tk.tok, tk.n, T, stride, B, max_windows, NULL, 0, NULL, res);
    mni_tokens_free(&tk);
    return st;
}

/* ---- optimizer state and checkpoints ----------------------------------------------------- */

struct trainer {
    struct mnemo_model *m;
    const struct mnemo_train_config *tc;
    float *adam_m, *adam_v; /* (n_params); Muon's momentum is in adam_m */
    float *opt_work;        /* the optimizer's scratch (Muon), for opt_threads threads */
    int opt_threads;
    float *ema;             /* (n_params) the average of the weights, or NULL (tc->ema == 0) */
    int ema_live;           /* ema holds the average and the model the trained weights */
    int step;               /* optimizer steps done */
    struct mni_loader ld;
    char model_path[PATH_MAX_LEN], state_path[PATH_MAX_LEN], log_path[PATH_MAX_LEN];
    char kept_state[PATH_MAX_LEN]; /* the state that belongs to the model on disk ("" none) */
    FILE *log;             /* rank 0's; NULL on the others */
    struct mni_comm comm;  /* this process's place in the group */
    int T;                 /* window length */
    int lanes;             /* this process's lanes (kinds that carry a state), or 0 */
    struct mni_tokens train, val;
    uint64_t *val_starts, n_val_starts; /* doc_windows: validation windows */
    uint16_t *x;           /* (2,B,T): a micro-batch's inputs, then its targets */
    char note[256];        /* a remark for the start event (a resume at another world size) */
};

/* out_dir/train_state.<step>.safetensors into out (PATH_MAX_LEN bytes). */
static void state_path_of(const struct trainer *t, int step, char *out)
{
    snprintf(out, PATH_MAX_LEN, "%s/train_state.%d.safetensors", t->tc->out_dir, step);
}

/* FNV-1a over the 32-bit words of the weights a model file holds (the table's tensors, not the
 * slab's alignment padding), as 16 hex digits into out: a state names the model file it
 * belongs to, so that no pair of files from two runs (a run started over in the same folder
 * stopped between its two writes) is ever resumed as one. */
static void weights_checksum(const struct mnemo_model *m, const float *w, char out[17])
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (int id = 0; id < MNI_P_COUNT; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        const size_t n = pi->numel * (pi->per_layer ? (size_t)m->cfg.n_layer : 1);
        for (size_t i = 0; i < n; i++) {
            uint32_t u;
            memcpy(&u, w + pi->offset + i, sizeof(u));
            h = (h ^ u) * 0x100000001b3ull;
        }
    }
    snprintf(out, 17, "%016llx", (unsigned long long)h);
}

/* Rank 0 writes the model and the train state (every process's lanes gathered into it); all
 * processes call it and agree on the outcome. */
static enum mnemo_status write_all(struct trainer *t, double val_loss, const void *lane_states,
                                   size_t lane_bytes);

static enum mnemo_status save_all(struct trainer *t, double val_loss)
{
    size_t mine_bytes;
    const void *mine = mni_model_lanes(t->m, &mine_bytes);
    const size_t lane_bytes = mni_mul(mine_bytes, (size_t)t->comm.world);
    void *all = NULL;
    enum mnemo_status st = MNEMO_OK;
    if (lane_bytes && t->comm.rank == 0 && !(all = mni_alloc(lane_bytes)))
        st = mni_err(MNEMO_ERR_NOMEM, "out of memory for the lanes' states");
    if ((st = mni_comm_agree(&t->comm, st)) == MNEMO_OK && lane_bytes)
        st = mni_comm_gather(&t->comm, mine, mine_bytes, all);
    if (st == MNEMO_OK && t->comm.rank == 0) st = write_all(t, val_loss, all, lane_bytes);
    mni_free(all);
    if ((st = mni_comm_agree(&t->comm, st)) == MNEMO_OK && t->comm.rank != 0) {
        char step[32], vl[48]; /* the model in memory is the one on disk, as on rank 0 */
        snprintf(step, sizeof(step), "%d", t->step);
        snprintf(vl, sizeof(vl), "%.9g", val_loss);
        mni_model_set_meta(t->m, "train.step", step);
        mni_model_set_meta(t->m, "train.val_loss", vl);
        mni_model_set_meta(t->m, "train.optimizer", mnemo_optimizer_name(t->tc->optimizer));
        if (t->ema) {
            char ema[32];
            snprintf(ema, sizeof(ema), "%.9g", (double)t->tc->ema);
            mni_model_set_meta(t->m, "train.ema", ema);
        }
    }
    return st;
}

static enum mnemo_status write_all(struct trainer *t, double val_loss, const void *lane_states,
                                   size_t lane_bytes)
{
    char step[32], vl[48], ep[32], ix[32], seed[32], np[32], bt[64], lanes[32], world[32];
    snprintf(step, sizeof(step), "%d", t->step);
    snprintf(vl, sizeof(vl), "%.9g", val_loss);
    char ema[32];
    snprintf(ema, sizeof(ema), "%.9g", t->tc->ema > 0 ? (double)t->tc->ema : 0.0);
    const char *opt = mnemo_optimizer_name(t->tc->optimizer);
    const char *extra[] = {"train.step", step, "train.val_loss", vl, "train.optimizer", opt,
                           "train.ema", ema};
    /* The state of this step first, under its own name: until the model is replaced, the old
     * model and its state stay as they were (a stop in between leaves an extra state, which
     * the next start removes); once it is, the previous state is superseded. */
    char sum[17];
    weights_checksum(t->m, t->ema ? t->ema : t->m->params, sum); /* what the model file gets */
    snprintf(ep, sizeof(ep), "%llu", (unsigned long long)t->ld.pos.epoch);
    snprintf(ix, sizeof(ix), "%llu", (unsigned long long)t->ld.pos.index);
    snprintf(seed, sizeof(seed), "%llu", (unsigned long long)t->tc->seed);
    snprintf(np, sizeof(np), "%zu", t->m->n_params);
    snprintf(bt, sizeof(bt), "%d,%d,%d", t->tc->batch, t->ld.T, t->tc->grad_accum);
    snprintf(lanes, sizeof(lanes), "%d", t->ld.lanes * t->comm.world);
    snprintf(world, sizeof(world), "%d", t->comm.world);
    const char *kv[] = {"mnemo.format", "2", "kind", "train_state", "step", step,
                        "data.epoch", ep, "data.index", ix, "seed", seed,
                        "n_params", np, "batch,seq,grad_accum", bt, "ema", ema,
                        "optimizer", opt, "data.doc_windows", t->tc->doc_windows ? "1" : "0",
                        "model.checksum", sum, "data.lanes", lanes, "world", world};
    struct mni_st_tensor ts[4] = {
        {.name = "adam.m", .dtype = MNI_ST_F32, .ndim = 1, .shape = {t->m->n_params}, .data = t->adam_m},
        {.name = "adam.v", .dtype = MNI_ST_F32, .ndim = 1, .shape = {t->m->n_params}, .data = t->adam_v},
        {.name = "params", .dtype = MNI_ST_F32, .ndim = 1, .shape = {t->m->n_params}, .data = t->m->params},
        {.name = "lanes", .dtype = MNI_ST_U8, .ndim = 1, .shape = {lane_bytes}, .data = (void *)lane_states},
    };
    if (!t->ema) ts[2] = ts[3]; /* the tensors written: the first 2 or 3, then the lanes' */
    state_path_of(t, t->step, t->state_path);
    enum mnemo_status st = mni_st_write(t->state_path, ts, (t->ema ? 3 : 2) + (lane_bytes > 0), kv,
                                        sizeof(kv) / sizeof(kv[0]) / 2);
    if (st != MNEMO_OK) return st;
    /* the model file gets the average: swapped in for the write, and back (exact) */
    if (t->ema) mni_swap_floats(t->m->params, t->ema, t->m->n_params);
    st = mni_model_save_ex(t->m, t->model_path, extra, t->ema ? 4 : 3);
    if (t->ema) mni_swap_floats(t->m->params, t->ema, t->m->n_params);
    if (st == MNEMO_OK) { /* the model in memory is now the one on disk */
        mni_model_set_meta(t->m, "train.step", step);
        mni_model_set_meta(t->m, "train.val_loss", vl);
        mni_model_set_meta(t->m, "train.optimizer", opt);
        if (t->ema) mni_model_set_meta(t->m, "train.ema", ema);
        /* the pair is complete (the rename is synced): the previous state is superseded. Not
         * removing it costs disk space only; the next start of the run removes it. */
        if (t->kept_state[0] && strcmp(t->kept_state, t->state_path)) mni_remove(t->kept_state);
        memcpy(t->kept_state, t->state_path, sizeof(t->kept_state));
    }
    return st;
}

static enum mnemo_status meta_u64(const struct mni_st_file *f, const char *path, const char *key,
                                  uint64_t *out)
{
    const char *v = mni_st_meta(f, key);
    char *end;
    errno = 0;
    unsigned long long x = v ? strtoull(v, &end, 10) : 0;
    if (!v || errno || end == v || *end)
        return mni_err(MNEMO_ERR_FORMAT, "train state '%s': bad or missing '%s'", path, key);
    *out = x;
    return MNEMO_OK;
}

/* The state that belongs to the model: train_state.<its train.step>.safetensors, or the one
 * train_state.safetensors of runs written before states were named by step. */
static enum mnemo_status find_state(struct trainer *t)
{
    const char *ms = mnemo_model_meta(t->m, "train.step");
    char *end = NULL;
    errno = 0;
    long step = ms ? strtol(ms, &end, 10) : -1;
    if (!ms || errno || end == ms || *end || step < 0 || step > INT_MAX)
        return mni_err(MNEMO_ERR_FORMAT, "resume: the model has no train.step ('%s'): it was not "
                       "written by a training run in '%s'", ms ? ms : "(missing)", t->tc->out_dir);
    state_path_of(t, (int)step, t->state_path);
    if (access(t->state_path, F_OK) == 0) return MNEMO_OK;
    char legacy[PATH_MAX_LEN];
    snprintf(legacy, sizeof(legacy), "%s/train_state.safetensors", t->tc->out_dir);
    if (access(legacy, F_OK) == 0) {
        memcpy(t->state_path, legacy, sizeof(legacy));
        return MNEMO_OK;
    }
    return mni_err(MNEMO_ERR_IO, "resume: no train state for the model's step %ld: '%s' is missing "
                   "(a run started over in this folder and stopped before its first checkpoint "
                   "leaves the old model alone): start the run over", step, t->state_path);
}

static enum mnemo_status load_state(struct trainer *t)
{
    struct mni_st_file *f = NULL;
    enum mnemo_status st = find_state(t);
    if (st == MNEMO_OK) st = mni_st_open(&f, t->state_path);
    if (st != MNEMO_OK) return st;
    uint64_t step = 0, ep = 0, ix = 0, seed = 0, np = 0;
    const char *kind = mni_st_meta(f, "kind");
    char bt[64];
    if (!kind || strcmp(kind, "train_state")) {
        st = mni_err(MNEMO_ERR_FORMAT, "'%s' is not a mnemo train state", t->state_path);
        goto out;
    }
    /* format 1 (before the attention contract's edition 2) laid the kind's tensors out in the
     * middle of the slab: its moments do not fit a model that has kind tensors now */
    const char *fmt = mni_st_meta(f, "mnemo.format");
    if (t->m->n_kparams > 0 && (!fmt || strcmp(fmt, "2") != 0)) {
        st = mni_err(MNEMO_ERR_FORMAT, "train state '%s' has format %s, whose parameter order "
                     "differs for %s models: continue with --init (a fresh optimizer state)",
                     t->state_path, fmt ? fmt : "?", t->m->attn->name);
        goto out;
    }
    if ((st = meta_u64(f, t->state_path, "step", &step)) ||
        (st = meta_u64(f, t->state_path, "data.epoch", &ep)) ||
        (st = meta_u64(f, t->state_path, "data.index", &ix)) ||
        (st = meta_u64(f, t->state_path, "seed", &seed)) ||
        (st = meta_u64(f, t->state_path, "n_params", &np)))
        goto out;
    if (np != t->m->n_params) {
        st = mni_err(MNEMO_ERR_FORMAT, "train state '%s' is for a model of another size", t->state_path);
        goto out;
    }
    snprintf(bt, sizeof(bt), "%d,%d,%d", t->tc->batch, t->ld.T, t->tc->grad_accum);
    const char *saved_bt = mni_st_meta(f, "batch,seq,grad_accum");
    if (seed != t->tc->seed || !saved_bt || strcmp(saved_bt, bt)) {
        st = mni_err(MNEMO_ERR_ARG,
                     "resume: seed/batch/seq/grad_accum differ from the saved run (saved seed %llu, "
                     "batch,seq,grad_accum %s; now %llu, %s): an exact resume needs the same",
                     (unsigned long long)seed, saved_bt ? saved_bt : "?",
                     (unsigned long long)t->tc->seed, bt);
        goto out;
    }
    if (step > (uint64_t)INT_MAX) {
        st = mni_err(MNEMO_ERR_FORMAT, "train state '%s': step %llu out of range", t->state_path,
                     (unsigned long long)step);
        goto out;
    }
    /* the model file must be the one written with this state (both are written at every
     * checkpoint; a crash between the two writes leaves them from different steps) */
    const char *ms = mnemo_model_meta(t->m, "train.step");
    char sstep[32];
    snprintf(sstep, sizeof(sstep), "%llu", (unsigned long long)step);
    if (!ms || strcmp(ms, sstep) != 0) {
        st = mni_err(MNEMO_ERR_FORMAT,
                     "resume: the model checkpoint is from step %s but the train state from step %s "
                     "(the two files of '%s' do not belong together)",
                     ms ? ms : "(unknown)", sstep, t->tc->out_dir);
        goto out;
    }
    /* ... and its weights (states written before the checksum existed have none) */
    const char *saved_sum = mni_st_meta(f, "model.checksum");
    char sum[17];
    weights_checksum(t->m, t->m->params, sum); /* as loaded: with ema, the average */
    if (saved_sum && strcmp(saved_sum, sum) != 0) {
        st = mni_err(MNEMO_ERR_FORMAT,
                     "resume: the train state '%s' was written with other weights than the model "
                     "file's (checksum %s, the model's %s): the two files of '%s' do not belong "
                     "together", t->state_path, saved_sum, sum, t->tc->out_dir);
        goto out;
    }
    const char *saved_ema = mni_st_meta(f, "ema");
    char ema[32];
    snprintf(ema, sizeof(ema), "%.9g", t->tc->ema > 0 ? (double)t->tc->ema : 0.0);
    if (strcmp(saved_ema ? saved_ema : "0", ema) != 0) {
        st = mni_err(MNEMO_ERR_ARG, "resume: the run was trained with ema = %s, not %s: an exact "
                     "resume needs the same", saved_ema ? saved_ema : "0", ema);
        goto out;
    }
    /* the data order depends on the window mode; states written before it existed had none */
    const char *saved_doc = mni_st_meta(f, "data.doc_windows");
    if (strcmp(saved_doc ? saved_doc : "0", t->tc->doc_windows ? "1" : "0") != 0) {
        st = mni_err(MNEMO_ERR_ARG, "resume: the run was trained %s doc_windows: an exact resume "
                     "needs the same", t->tc->doc_windows ? "without" : "with");
        goto out;
    }
    /* states written before the optimizer choice existed are AdamW's */
    const char *saved_opt = mni_st_meta(f, "optimizer");
    const char *opt = mnemo_optimizer_name(t->tc->optimizer);
    if (strcmp(saved_opt ? saved_opt : "adamw", opt) != 0) {
        st = mni_err(MNEMO_ERR_ARG, "resume: the run was trained with optimizer %s, not %s: an "
                     "exact resume needs the same", saved_opt ? saved_opt : "adamw", opt);
        goto out;
    }
    size_t shape[1] = {t->m->n_params};
    if ((st = mni_st_read(f, "adam.m", MNI_ST_F32, 1, shape, t->adam_m)) ||
        (st = mni_st_read(f, "adam.v", MNI_ST_F32, 1, shape, t->adam_v)))
        goto out;
    if (t->ema) { /* the model file held the average; the trained weights are in the state:
                   * read them aside, and exchange only once the read succeeded */
        if ((st = mni_st_read(f, "params", MNI_ST_F32, 1, shape, t->ema))) goto out;
        mni_swap_floats(t->m->params, t->ema, t->m->n_params);
        t->ema_live = 1;
    }
    /* the lanes' carried states (runs of kinds that carry one) */
    const char *saved_lanes = mni_st_meta(f, "data.lanes");
    char lanes[32];
    snprintf(lanes, sizeof(lanes), "%d", t->ld.lanes * t->comm.world);
    if (strcmp(saved_lanes ? saved_lanes : "0", lanes) != 0) {
        st = mni_err(MNEMO_ERR_ARG, "resume: the run read %s lanes of consecutive text, not %s "
                     "(the kind's carry option, the batch or the number of processes changed): "
                     "an exact resume needs the same", saved_lanes ? saved_lanes : "0", lanes);
        goto out;
    }
    size_t lane_bytes; /* this process's; the file holds every process's, in rank order */
    void *lane_states = mni_model_lanes(t->m, &lane_bytes);
    if (lane_bytes) {
        size_t lshape[1] = {mni_mul(lane_bytes, (size_t)t->comm.world)};
        char *all = mni_alloc(lshape[0]);
        if (!all) st = mni_err(MNEMO_ERR_NOMEM, "out of memory for the lanes' states");
        else if ((st = mni_st_read(f, "lanes", MNI_ST_U8, 1, lshape, all)) == MNEMO_OK)
            memcpy(lane_states, all + (size_t)t->comm.rank * lane_bytes, lane_bytes);
        mni_free(all);
        if (st != MNEMO_OK) goto out;
    }
    /* another number of processes: the same data order, another global batch */
    const char *saved_world = mni_st_meta(f, "world");
    if (strtol(saved_world ? saved_world : "1", NULL, 10) != t->comm.world)
        snprintf(t->note, sizeof(t->note), "the run was trained by %s process(es), now %d: the "
                 "data continues where it stopped, the batch of a step is now %d windows (not an "
                 "exact continuation)", saved_world ? saved_world : "1", t->comm.world,
                 t->tc->batch * t->tc->grad_accum * t->comm.world);
    struct mni_loader_pos pos = {ep, ix};
    if ((st = mni_loader_seek(&t->ld, pos))) goto out;
    t->step = (int)step;
    memcpy(t->kept_state, t->state_path, sizeof(t->kept_state));
out:
    mni_st_close(f);
    return st;
}

/* ---- the run directory and its log ------------------------------------------------------------ */

/* 1 if name[0..n) names a train state: "train_state.<step>.safetensors", or the
 * "train_state.safetensors" of runs written before states were named by step. */
static int is_state_name(const char *name, size_t n)
{
    static const char pre[] = "train_state.", suf[] = "safetensors";
    const size_t np = sizeof(pre) - 1, ns = sizeof(suf) - 1;
    if (n < np + ns || strncmp(name, pre, np) || strncmp(name + n - ns, suf, ns)) return 0;
    const char *mid = name + np; /* "" or "<digits>." */
    const size_t nm = n - np - ns;
    if (nm == 0) return 1;
    if (nm < 2 || mid[nm - 1] != '.') return 0;
    for (size_t i = 0; i + 1 < nm; i++)
        if (mid[i] < '0' || mid[i] > '9') return 0;
    return 1;
}

struct tidy {
    const char *dir;
    const char *keep; /* the file name of the state to keep, or NULL */
};

/* Removes name if it is a train state other than the one kept, or the temporary file of a
 * model or state whose writer is dead. */
static enum mnemo_status tidy_entry(const char *name, void *user)
{
    const struct tidy *td = user;
    static const char model[] = "model.safetensors";
    const size_t tn = mni_afile_dead_tmp(name);
    int stale;
    if (tn)
        stale = (tn == sizeof(model) - 1 && !strncmp(name, model, tn)) || is_state_name(name, tn);
    else
        stale = is_state_name(name, strlen(name)) && !(td->keep && !strcmp(name, td->keep));
    if (!stale) return MNEMO_OK;
    char path[PATH_MAX_LEN + 260];
    snprintf(path, sizeof(path), "%s/%s", td->dir, name);
    return mni_remove(path);
}

/* At the start of a run, before its log is opened: removes what no resume can use, the states
 * of other steps (a resumed run keeps the one it loaded; a fresh run keeps none: the run it
 * replaces can no longer be resumed, its model stays until the first checkpoint replaces it)
 * and the temporary files of killed writers. */
static enum mnemo_status tidy_run_dir(const struct trainer *t)
{
    const char *slash = strrchr(t->kept_state, '/');
    struct tidy td = {t->tc->out_dir, NULL};
    if (t->kept_state[0]) td.keep = slash ? slash + 1 : t->kept_state;
    return mni_dir_each(t->tc->out_dir, tidy_entry, &td);
}

/* Cuts a resumed run's log back to the records of steps <= step: the steps a killed process
 * ran past its last checkpoint are run again, and logged again, so readers see every step once.
 * A last line without its newline (a write cut short) goes too. Records name their step in a
 * "step" field right after "type"; a line without one is kept. No log: nothing to do. */
static enum mnemo_status cut_log(const char *path, int step)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT) return MNEMO_OK;
        return mni_err(MNEMO_ERR_IO, "cannot read '%s': %s", path, strerror(errno));
    }
    char buf[256];
    off_t start = 0, cut = -1;
    int at_start = 1; /* buf begins a line */
    for (;;) {
        const off_t pos = ftello(f);
        if (!fgets(buf, sizeof(buf), f)) break;
        const size_t n = strlen(buf);
        if (at_start) {
            start = pos;
            const char *k = strstr(buf, "\"step\":");
            if (k && strtol(k + 7, NULL, 10) > step) {
                cut = start;
                break;
            }
        }
        at_start = n > 0 && buf[n - 1] == '\n';
    }
    const int rd_err = ferror(f);
    if (cut < 0 && !at_start) cut = start; /* an unfinished last line */
    fclose(f);
    if (rd_err) return mni_err(MNEMO_ERR_IO, "cannot read '%s'", path);
    if (cut >= 0 && truncate(path, cut) != 0)
        return mni_err(MNEMO_ERR_IO, "cannot cut '%s' back to step %d: %s", path, step, strerror(errno));
    return MNEMO_OK;
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* A training loss above this many times ln(vocab) stops the run as diverged. ln(vocab) is the
 * loss of a uniform guess, which is about where every run starts (small initial weights) and
 * what any model gets back to by making its logits equal; ten times it means the right token
 * gets on average a probability below vocab^-10 (e^-55 for bytes): confidently wrong, weights
 * blown up. A normal run never comes near (docs/internals/training.md, "Divergence"). A
 * constant of the model, not of the run's history, so that a resumed run stops exactly where
 * the uninterrupted one would. */
#define DIVERGED_LOSS_FACTOR 10.0

/* "name[i]" of the parameter at slab index i (name as in the checkpoint). */
static void param_name(const struct mnemo_model *m, size_t i, char *out, size_t n)
{
    for (int id = 0; id < m->n_pinfo; id++) {
        const struct mni_param_info *pi = &m->pinfo[id];
        const size_t L = pi->per_layer ? (size_t)m->cfg.n_layer : 1;
        if (pi->numel == 0 || i < pi->offset || i >= pi->offset + L * pi->numel) continue;
        char nm[96];
        snprintf(nm, sizeof(nm), pi->name, (int)((i - pi->offset) / pi->numel));
        snprintf(out, n, "'%s' (element %zu)", nm, (i - pi->offset) % pi->numel);
        return;
    }
    snprintf(out, n, "at slab index %zu (alignment padding)", i);
}

/* MNEMO_ERR_NUMERIC naming the first non-finite value of w (the model's weights, or their
 * average), or MNEMO_OK. */
static enum mnemo_status check_finite(const struct mnemo_model *m, const float *w,
                                      const char *what)
{
    const size_t i = mni_first_nonfinite(w, m->n_params);
    if (i == m->n_params) return MNEMO_OK;
    char nm[160];
    param_name(m, i, nm, sizeof(nm));
    return mni_err(MNEMO_ERR_NUMERIC, "the update made %s %s non-finite (%g)", what, nm,
                   (double)w[i]);
}

/* Escapes a string for a JSON string literal (quotes, backslashes, control characters). */
static void json_escape(char *out, size_t n, const char *in)
{
    size_t k = 0;
    for (; *in && k + 7 < n; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') {
            out[k++] = '\\';
            out[k++] = (char)c;
        } else if (c < 0x20) {
            k += (size_t)snprintf(out + k, n - k, "\\u%04x", c);
        } else {
            out[k++] = (char)c;
        }
    }
    out[k] = 0;
}

static void log_line(struct trainer *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void log_line(struct trainer *t, const char *fmt, ...)
{
    if (!t->log) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(t->log, fmt, ap);
    va_end(ap);
    fputc('\n', t->log);
    fflush(t->log);
}

/* What every process of a group must agree on, hashed: the model's config and kind options,
 * the training config, and the data (FNV-1a). A process started with another command line or
 * reading other files is refused at the start, not discovered by diverging weights. */
static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t run_hash(const struct trainer *t)
{
    const struct mnemo_model_config *c = &t->m->cfg;
    const struct mnemo_train_config *tc = t->tc;
    char buf[2048];
    int n = snprintf(buf, sizeof(buf),
                     "%d %d %d %d %d %d %d %s|%d %d %d %d %d %.9g %.9g %.9g %.9g %.9g %.9g %.9g "
                     "%d %d %d %llu %d %.9g %d %.9g %d|%s|%s|%s",
                     c->n_layer, c->d_model, c->n_head, c->n_ctx, c->vocab, c->pos, c->attn_kind,
                     t->m->attn_opts, tc->batch, tc->seq, tc->grad_accum, tc->max_steps,
                     tc->warmup, (double)tc->lr, (double)tc->lr_min, (double)tc->weight_decay,
                     (double)tc->beta1, (double)tc->beta2, (double)tc->eps, (double)tc->grad_clip,
                     tc->eval_every, tc->eval_windows, tc->ckpt_every,
                     (unsigned long long)tc->seed, tc->resume, (double)tc->ema, tc->optimizer,
                     (double)tc->momentum, tc->doc_windows, tc->out_dir, tc->train_path,
                     tc->val_path ? tc->val_path : "");
    uint64_t h = fnv(0xcbf29ce484222325ull, buf, n > 0 && (size_t)n < sizeof(buf) ? (size_t)n : 0);
    h = fnv(h, t->train.tok, t->train.n * sizeof(uint16_t));
    if (t->val.tok) h = fnv(h, t->val.tok, t->val.n * sizeof(uint16_t));
    return fnv(h, t->m->params, t->m->n_params * sizeof(float)); /* the same starting weights */
}

/* The first part of a run, on every process: the data, the loader, the buffers. */
static enum mnemo_status open_run(struct trainer *t)
{
    const struct mnemo_train_config *tc = t->tc;
    struct mnemo_model *m = t->m;
    const int T = t->T, B = tc->batch;
    enum mnemo_status st;
    if ((st = mni_tokens_read(&t->train, tc->train_path))) return st;
    if (tc->val_path && (st = mni_tokens_read(&t->val, tc->val_path))) return st;
    if (t->train.vocab > m->cfg.vocab || (t->val.tok && t->val.vocab > m->cfg.vocab))
        return mni_err(MNEMO_ERR_ARG, "the data's vocabulary (%d) is larger than the model's (%d)",
                       t->train.vocab, m->cfg.vocab);
    if (t->val.tok && mni_eval_windows(t->val.n, T, T) == 0)
        return mni_err(MNEMO_ERR_ARG, "the validation data '%s' has %llu tokens, fewer than one "
                       "window of %d", tc->val_path, (unsigned long long)t->val.n, T);
    if (t->val.tok && tc->doc_windows) {
        /* validate on the windows training sees; position 0 is a start, so there is one */
        t->n_val_starts = mni_doc_starts(t->val.tok, t->val.n, T, 10, NULL);
        t->val_starts = mni_alloc(mni_mul((size_t)t->n_val_starts, sizeof(uint64_t)));
        if (!t->val_starts)
            return mni_err(MNEMO_ERR_NOMEM, "out of memory for the validation document starts");
        mni_doc_starts(t->val.tok, t->val.n, T, 10, t->val_starts);
    }
    /* a kind that carries a state across windows reads lanes of consecutive text */
    t->lanes = mnemo_model_carry_bytes(m) ? B * tc->grad_accum : 0;
    if (t->lanes && tc->doc_windows)
        return mni_err(MNEMO_ERR_ARG, "doc_windows: %s attention carries its state from one window "
                       "to the next (%s) and reads lanes of consecutive text, not documents",
                       m->attn->name, m->attn_opts);
    const int rank = t->comm.rank, world = t->comm.world;
    st = t->lanes ? mni_loader_init_lanes(&t->ld, t->train.tok, t->train.n, T, tc->seed, rank,
                                          world, t->lanes)
         : tc->doc_windows
             ? mni_loader_init_docs(&t->ld, t->train.tok, t->train.n, T, tc->seed, rank, world, 10)
             : mni_loader_init(&t->ld, t->train.tok, t->train.n, T, tc->seed, rank, world);
    if (st == MNEMO_OK && t->lanes) st = mnemo_model_set_lanes(m, t->lanes);
    if (st == MNEMO_OK) st = mni_model_alloc_grads(m);
    if (st != MNEMO_OK) return st;
    t->adam_m = mni_alloc(mni_mul(m->n_params, sizeof(float)));
    t->adam_v = mni_alloc(mni_mul(m->n_params, sizeof(float)));
    t->x = mni_alloc(mni_mul((size_t)B * T, 2 * sizeof(uint16_t)));
    if (tc->ema > 0) t->ema = mni_alloc(mni_mul(m->n_params, sizeof(float)));
    t->opt_threads = mni_get_threads();
    size_t work = mni_optim_work_floats(m, tc, t->opt_threads);
    if (work) t->opt_work = mni_alloc(mni_mul(work, sizeof(float)));
    if (!t->adam_m || !t->adam_v || !t->x || (tc->ema > 0 && !t->ema) || (work && !t->opt_work))
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for the optimizer state");
    if (t->ema && !tc->resume) { /* a fresh run: the average starts at the initial weights */
        memcpy(t->ema, m->params, m->n_params * sizeof(float));
        t->ema_live = 1;
    }
    return MNEMO_OK;
}

/* The run directory and its log: rank 0's. */
static enum mnemo_status open_log(struct trainer *t)
{
    if (t->comm.rank != 0) return MNEMO_OK;
    enum mnemo_status st = tidy_run_dir(t);
    if (st == MNEMO_OK && t->tc->resume) st = cut_log(t->log_path, t->step);
    if (st != MNEMO_OK) return st;
    t->log = fopen(t->log_path, t->tc->resume ? "a" : "w");
    if (!t->log)
        return mni_err(MNEMO_ERR_IO, "cannot write '%s': %s", t->log_path, strerror(errno));
    return MNEMO_OK;
}

enum mnemo_status mnemo_train(struct mnemo_model *m, const struct mnemo_train_config *tc,
                              mnemo_train_cb cb, void *user)
{
    enum mnemo_status st = check_train_config(tc, m->cfg.n_ctx);
    if (st != MNEMO_OK) return st;
    if (tc->threads > 0) mni_set_threads(tc->threads);
    const int B = tc->batch;
    struct trainer t = {0};
    t.m = m;
    t.tc = tc;
    const int T = t.T = tc->seq ? tc->seq : m->cfg.n_ctx;
    snprintf(t.model_path, sizeof(t.model_path), "%s/model.safetensors", tc->out_dir);
    snprintf(t.log_path, sizeof(t.log_path), "%s/log.jsonl", tc->out_dir);
    if ((st = mni_comm_init(&t.comm))) return st;
    const struct mni_comm *comm = &t.comm;
    /* every stage that may fail on one process alone ends in an agreement: all go on, or all
     * stop with the first failure's message */
    st = mni_comm_agree(comm, open_run(&t));
    if (st == MNEMO_OK) st = mni_comm_same(comm, run_hash(&t), "the config, data or weights");
    if (st == MNEMO_OK && tc->resume) st = mni_comm_agree(comm, load_state(&t));
    if (st == MNEMO_OK && t.step >= tc->max_steps)
        st = mni_err(MNEMO_ERR_ARG, "nothing to do: the run already has %d of max_steps = %d steps",
                     t.step, tc->max_steps);
    if (st == MNEMO_OK) st = mni_comm_agree(comm, open_log(&t));
    if (st != MNEMO_OK) goto out;
    uint16_t *x = t.x, *y = x + (size_t)B * T;
    const int lanes = t.lanes;
    log_line(&t, "{\"type\":\"start\",\"step\":%d,\"max_steps\":%d,\"batch\":%d,\"seq\":%d,"
             "\"grad_accum\":%d,\"n_params\":%zu,\"threads\":%d,\"lanes\":%d,\"world\":%d}",
             t.step, tc->max_steps, B, T, tc->grad_accum, mnemo_model_n_params(m), mni_get_threads(),
             lanes, comm->world);

    struct mnemo_train_event ev = {0};
    ev.max_steps = tc->max_steps;
    ev.step = t.step;
    ev.kind = MNEMO_TRAIN_EV_START;
    ev.rank = comm->rank;
    ev.world = comm->world;
    ev.note = t.note[0] ? t.note : NULL;
    int stop = mni_comm_any(comm, cb ? cb(&ev, user) : 0);
    const double t0 = mni_now();
    const int first = t.step;
    const double diverged = DIVERGED_LOSS_FACTOR * log((double)m->cfg.vocab);
    int fail_step = 0; /* the step a numeric error belongs to, when not the one being run */
    double last_val = NAN, t_last = t0;
    while (!stop && t.step < tc->max_steps) {
        float lr = lr_at(tc, t.step);
        mnemo_model_zero_grad(m);
        double loss_sum = 0, aux_sum = 0;
        for (int a = 0; a < tc->grad_accum && st == MNEMO_OK; a++) {
            float loss;
            if (lanes) {
                int lane;
                const int fresh = mni_loader_next_lanes(&t.ld, x, y, B, &lane);
                st = mnemo_model_use_lanes(m, lane, fresh);
            } else {
                mni_loader_next(&t.ld, x, y, B);
            }
            mnemo_model_set_mode(m, 1, step_seed(tc, t.step, a));
            if (st == MNEMO_OK) st = mnemo_model_forward(m, x, y, B, T, &loss);
            if (st == MNEMO_OK) st = mnemo_model_backward(m, 1.0f / (float)tc->grad_accum);
            mnemo_model_set_mode(m, 0, 0); /* validation and callers evaluate */
            if (st != MNEMO_OK) break;
            loss_sum += loss;
            aux_sum += mnemo_model_aux_loss(m);
        }
        if ((st = mni_comm_agree(comm, st)) == MNEMO_ERR_NUMERIC) goto numeric;
        if (st != MNEMO_OK) goto out;
        /* the step's loss and auxiliary loss, and the gradients: means over the group */
        float losses[2] = {(float)(loss_sum / tc->grad_accum), (float)(aux_sum / tc->grad_accum)};
        const double tc0 = mni_now();
        if ((st = mni_comm_allreduce_mean(comm, m->grads, m->n_params)) ||
            (st = mni_comm_allreduce_mean(comm, losses, 2)))
            goto out;
        const float loss = losses[0];
        const double comm_s = mni_now() - tc0; /* the exchange (and waiting for the slowest) */
        if (loss > diverged) {
            st = mni_err(MNEMO_ERR_NUMERIC, "the training loss %.4g exceeds %g ln(vocab) = %.1f "
                         "(%g times a uniform guess's): the run diverged", (double)loss,
                         DIVERGED_LOSS_FACTOR, diverged, DIVERGED_LOSS_FACTOR);
            goto numeric;
        }
        double gn = mni_grad_norm(m);
        if (!isfinite(gn)) {
            st = mni_err(MNEMO_ERR_NUMERIC, "the gradient norm is not finite at step %d", t.step + 1);
            goto numeric;
        }
        float clip = (tc->grad_clip > 0 && gn > tc->grad_clip) ? (float)(tc->grad_clip / gn) : 1.0f;
        mni_optim_step(m, t.adam_m, t.adam_v, t.opt_work, t.opt_threads, t.step, lr, clip, tc);
        for (int l = 0; m->attn->after_step && l < m->cfg.n_layer; l++) { /* kinds' buffers */
            float *kp[MNEMO_ATTN_MAX_PARAMS];
            mni_model_kind_params(m, l, kp, 0);
            m->attn->after_step(&m->lcfg[l], l, step_seed(tc, t.step, tc->grad_accum), kp);
        }
        /* nothing non-finite is ever saved: stop at the step that made it, naming it */
        if ((st = check_finite(m, m->params, "parameter"))) goto numeric;
        if (t.ema) {
            mni_ema_update(t.ema, m->params, m->n_params, mni_ema_decay_at(tc->ema, t.step + 1));
            if ((st = check_finite(m, t.ema, "the average of parameter"))) goto numeric;
        }
        t.step++;

        double now = mni_now();
        ev = (struct mnemo_train_event){0};
        ev.kind = MNEMO_TRAIN_EV_STEP;
        ev.rank = comm->rank;
        ev.world = comm->world;
        ev.step = t.step;
        ev.max_steps = tc->max_steps;
        ev.loss = loss;
        ev.lr = lr;
        ev.grad_norm = (float)gn;
        ev.aux_loss = losses[1];
        ev.tokens_per_s = (double)B * T * tc->grad_accum * comm->world /
                          (now > t_last ? now - t_last : 1e-9);
        ev.elapsed_s = now - t0;
        ev.eta_s = (now - t0) / (t.step - first) * (tc->max_steps - t.step);
        t_last = now;
        log_line(&t, "{\"type\":\"step\",\"step\":%d,\"loss\":%.6f,\"lr\":%.6g,\"grad_norm\":%.5g,"
                 "\"tokens_per_s\":%.1f,\"elapsed_s\":%.3f,\"aux_loss\":%.6g,\"comm_s\":%.6f}",
                 t.step, loss, lr, gn, ev.tokens_per_s, ev.elapsed_s, ev.aux_loss, comm_s);
        /* a stop asked for on any process stops them all */
        stop = mni_comm_any(comm, cb ? cb(&ev, user) : 0);

        int last = t.step == tc->max_steps || stop;
        if (t.val.tok && ((tc->eval_every && t.step % tc->eval_every == 0) || last)) {
            struct mnemo_eval_result r;
            uint64_t nwin = last ? 0 : (uint64_t)tc->eval_windows;
            if (t.ema) mni_swap_floats(m->params, t.ema, m->n_params); /* score the average */
            st = eval_tokens(m, t.val.tok, t.val.n, T, T, B, nwin, t.val_starts, t.n_val_starts,
                             comm, &r);
            if (t.ema) mni_swap_floats(m->params, t.ema, m->n_params);
            if (st) {
                fail_step = t.step; /* the validation after step t.step */
                goto numeric;
            }
            last_val = r.loss;
            ev.kind = MNEMO_TRAIN_EV_EVAL;
            ev.val_loss = r.loss;
            ev.val_bpb = r.bpb;
            log_line(&t, "{\"type\":\"eval\",\"step\":%d,\"val_loss\":%.6f,\"val_bpb\":%.6f,"
                     "\"val_tokens\":%llu,\"elapsed_s\":%.3f}",
                     t.step, r.loss, r.bpb, (unsigned long long)r.tokens, mni_now() - t0);
            if (cb && cb(&ev, user)) stop = 1;
            t_last = mni_now(); /* do not count evaluation time as training throughput */
        }
        stop = mni_comm_any(comm, stop);
        if ((tc->ckpt_every && t.step % tc->ckpt_every == 0) || last || stop) {
            if ((st = save_all(&t, last_val))) goto out;
            ev.kind = MNEMO_TRAIN_EV_CKPT;
            ev.path = t.model_path;
            char esc[2 * PATH_MAX_LEN];
            json_escape(esc, sizeof(esc), t.model_path);
            log_line(&t, "{\"type\":\"checkpoint\",\"step\":%d,\"path\":\"%s\"}", t.step, esc);
            if (cb && cb(&ev, user)) stop = 1;
            stop = mni_comm_any(comm, stop);
            t_last = mni_now();
        }
    }
    goto out;
numeric:
    if (st == MNEMO_ERR_NUMERIC) {
        st = mni_err(MNEMO_ERR_NUMERIC, "%s at step %d; training stopped, the last good checkpoint "
                     "(if any) is kept in '%s' (try a lower lr or stronger grad_clip)",
                     mnemo_last_error(), fail_step ? fail_step : t.step + 1, tc->out_dir);
    }
out:
    mnemo_model_set_mode(m, 0, 0);
    mnemo_model_set_lanes(m, 0);
    mni_free(t.val_starts);
    /* the caller gets the model that was saved, on every path: with ema, the average */
    if (t.ema_live) memcpy(m->params, t.ema, m->n_params * sizeof(float));
    mni_comm_free(&t.comm);
    if (t.log) fclose(t.log);
    mni_loader_free(&t.ld);
    mni_tokens_free(&t.train);
    mni_tokens_free(&t.val);
    mni_free(t.adam_m);
    mni_free(t.adam_v);
    mni_free(t.ema);
    mni_free(t.opt_work);
    mni_free(t.x);
    return st;
}
