/*
 * mnemo.h -- the public API of mnemo: train, evaluate and stream decoder-only transformer
 * language models whose attention is a pluggable part.
 *
 * Conventions:
 *  - Every fallible call returns an enum mnemo_status; MNEMO_OK is 0. The detail message of the
 *    last failure on the calling thread is mnemo_last_error(). The library never prints and
 *    never exits.
 *  - Handles are opaque and freed by the matching *_free(), which accepts NULL. Other pointer
 *    arguments must not be NULL unless the function's comment says what NULL means there.
 *  - Config structs are plain data, filled with defaults by *_default() and then edited.
 *  - Enum values are append-only; retired values stay reserved.
 */
#ifndef MNEMO_H
#define MNEMO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(MNEMO_BUILD) && defined(__GNUC__)
#define MNEMO_API __attribute__((visibility("default")))
#else
#define MNEMO_API
#endif

#define MNEMO_VERSION_MAJOR 0
#define MNEMO_VERSION_MINOR 2
#define MNEMO_VERSION_PATCH 0
#define MNEMO_VERSION_NUM (MNEMO_VERSION_MAJOR * 10000 + MNEMO_VERSION_MINOR * 100 + MNEMO_VERSION_PATCH)

MNEMO_API int mnemo_version_num(void);

enum mnemo_status {
    MNEMO_OK = 0,
    MNEMO_ERR_NOMEM = -1,       /* an allocation failed */
    MNEMO_ERR_IO = -2,          /* a file could not be opened, read or written */
    MNEMO_ERR_FORMAT = -3,      /* a file is not what it claims to be (corrupt, truncated) */
    MNEMO_ERR_ARG = -4,         /* an impossible argument or configuration value */
    MNEMO_ERR_NUMERIC = -5,     /* NaN or infinity where a finite value was needed */
    MNEMO_ERR_UNSUPPORTED = -6, /* valid, but not implemented for this attention kind/build */
    MNEMO_ERR_FULL = -7,        /* a bounded buffer (e.g. a session's context) is full */
};

MNEMO_API const char *mnemo_status_str(enum mnemo_status st);
/* The message of the last failure on this thread ("" if none). Valid until the next failure. */
MNEMO_API const char *mnemo_last_error(void);

/* ---- model configuration ---------------------------------------------------------------- */

enum mnemo_pos {
    MNEMO_POS_ROPE = 0,    /* rotary embeddings, applied by the attention kind */
    MNEMO_POS_LEARNED = 1, /* learned absolute embeddings added to the token embeddings */
    MNEMO_POS_COUNT
};

enum mnemo_attn_kind {
    MNEMO_ATTN_KIND_DENSE = 0, /* causal softmax attention, tiled with online softmax */
    MNEMO_ATTN_KIND_SELECTIVE = 1, /* Selective Attention: head 0's logits vote a penalty F */
    MNEMO_ATTN_KIND_INFINI = 2, /* Infini-attention: local attention per segment + a
                                 * compressive memory per head, mixed by a learned gate */
    MNEMO_ATTN_KIND_WINDOW = 3, /* sliding window of w keys (the survey's fixed patterns) */
    MNEMO_ATTN_KIND_BLOCK = 4, /* blockwise local: the query's block of b (and the previous) */
    MNEMO_ATTN_KIND_STRIDED = 5, /* Sparse Transformer: strided/fixed factorisations over heads */
    MNEMO_ATTN_KIND_LONGFORMER = 6, /* causal Longformer: (dilated) window + g global sinks */
    MNEMO_ATTN_KIND_BIGBIRD = 7, /* causal BigBird: window + global + random key blocks */
    MNEMO_ATTN_KIND_COUNT
};

struct mnemo_model_config {
    int n_layer;       /* number of transformer blocks */
    int d_model;       /* residual width C */
    int n_head;        /* attention heads; d_model % n_head == 0 */
    int n_ctx;         /* longest training window T (and the learned-position table size) */
    int vocab;         /* real vocabulary size V (257 for the byte tokenizer) */
    int vocab_padded;  /* V rounded up for alignment; 0 = choose (multiple of 16) */
    int pos;           /* enum mnemo_pos */
    float rope_theta;  /* RoPE base, 10000 */
    int attn_kind;     /* enum mnemo_attn_kind */
    const char *attn_opts; /* the kind's options, "key=value,key=value" (NULL or "" = every
                            * default); the keys, ranges and meanings are the kind's table
                            * (mnemo_attn.h; `mnemo info --kinds` lists them). In the config
                            * of a model (mnemo_model_get_config) it points to the model's own
                            * canonical list, valid while the model lives. */
};

MNEMO_API void mnemo_model_config_default(struct mnemo_model_config *cfg);
/* MNEMO_ERR_ARG with a message naming the first bad field. */
MNEMO_API enum mnemo_status mnemo_model_config_check(const struct mnemo_model_config *cfg);
MNEMO_API const char *mnemo_attn_kind_name(int kind);   /* NULL if out of range */
MNEMO_API int mnemo_attn_kind_from_name(const char *name); /* -1 if unknown */

/* ---- the model ---------------------------------------------------------------------------- */

struct mnemo_model;

/* Creates a model with zeroed parameters (MNEMO_ERR_ARG if cfg is impossible). */
MNEMO_API enum mnemo_status mnemo_model_create(struct mnemo_model **out,
                                               const struct mnemo_model_config *cfg);
MNEMO_API void mnemo_model_free(struct mnemo_model *m);
/* GPT-2 initialisation: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 L),
 * zero biases, unit LayerNorm gains. Deterministic for a seed. */
MNEMO_API void mnemo_model_init(struct mnemo_model *m, uint64_t seed);
MNEMO_API const struct mnemo_model_config *mnemo_model_get_config(const struct mnemo_model *m);
/* Changes the longest window of a model with RoPE positions (no parameter depends on it), e.g.
 * to continue training a checkpoint on longer windows. The kind's options keep their values
 * (an option whose value 0 meant "n_ctx" is set to the old n_ctx first, so that it keeps its
 * meaning: see the kinds' tables). MNEMO_ERR_ARG with learned positions (the position table
 * has n_ctx rows) or an n_ctx out of range. Sessions opened before keep their size. */
MNEMO_API enum mnemo_status mnemo_model_set_n_ctx(struct mnemo_model *m, int n_ctx);
/* Applies "key=value,..." to the model's attention options: training and session options
 * freely, model options only where the kind marks them mutable (no parameter depends on them,
 * e.g. infini's segment) or the value is unchanged. MNEMO_ERR_ARG naming the kind and the
 * option otherwise (nothing is changed then). Sessions opened before keep their options. */
MNEMO_API enum mnemo_status mnemo_model_set_attn_opts(struct mnemo_model *m, const char *opts);
MNEMO_API size_t mnemo_model_n_params(const struct mnemo_model *m);
/* Metadata value that the loaded checkpoint carried besides the config (e.g. "train.step"),
 * or NULL. */
MNEMO_API const char *mnemo_model_meta(const struct mnemo_model *m, const char *key);
/* Sets a metadata pair carried with the model (keys "train.*" or "prune.*"); written by
 * mnemo_model_save_meta. At most 16 pairs, keys of at most 127 bytes, values of at most 4095
 * (a checkpoint carrying more fails to load rather than losing any). MNEMO_ERR_ARG for other
 * keys or beyond those limits. */
MNEMO_API enum mnemo_status mnemo_model_set_meta(struct mnemo_model *m, const char *key,
                                                 const char *value);
/* mnemo_model_save, plus every carried metadata pair. */
MNEMO_API enum mnemo_status mnemo_model_save_meta(const struct mnemo_model *m, const char *path);
/* Threads for BLAS and OpenMP, 1 <= n <= MNEMO_MAX_THREADS; MNEMO_ERR_ARG (and no change)
 * otherwise. */
#define MNEMO_MAX_THREADS 1024
MNEMO_API enum mnemo_status mnemo_set_threads(int n);

/* Forward over B windows of T tokens (T <= n_ctx). inputs (B,T) token ids; targets (B,T) or
 * NULL. With targets, *loss receives the mean cross-entropy (nats per token). Ids outside
 * [0, vocab) give MNEMO_ERR_ARG. Activations are kept for mnemo_model_backward(). */
MNEMO_API enum mnemo_status mnemo_model_forward(struct mnemo_model *m, const uint16_t *inputs,
                                                const uint16_t *targets, int B, int T,
                                                float *loss);
/* Logits (B,T,vocab_padded) of the last forward; valid until the next forward/backward.
 * NULL before the first forward and after one that could not allocate its activations. */
MNEMO_API const float *mnemo_model_logits(const struct mnemo_model *m);
/* Backward of the last forward (which had targets). Gradients of the mean loss times
 * grad_scale are ADDED to the gradient buffer (gradient accumulation). */
MNEMO_API enum mnemo_status mnemo_model_backward(struct mnemo_model *m, float grad_scale);
MNEMO_API void mnemo_model_zero_grad(struct mnemo_model *m);
/* Training mode: with training = 1 the following forwards and backwards are training steps
 * (the kinds' training-only behaviour, e.g. infini's weighted memory writes, and their random
 * draws from seed, the same for a forward and its backward); 0 (the default) evaluates. */
MNEMO_API void mnemo_model_set_mode(struct mnemo_model *m, int training, uint64_t seed);
/* The kinds' auxiliary objective of the last forward (e.g. selective's memory loss, weighted
 * by its mem_eps), per token as it was added to the objective that backward differentiates;
 * 0 when no kind adds one. The forward's *loss stays the cross-entropy alone. */
MNEMO_API double mnemo_model_aux_loss(const struct mnemo_model *m);
/* Lanes of consecutive text, for kinds that carry a state from one window to the next
 * (MNEMO_ATTN_CAP_CARRY, e.g. infini with carry=true; docs/internals/attention.md s. 1.8).
 * The model keeps each lane's state: a forward announced by mnemo_model_use_lanes continues
 * its lanes from their states, and its windows' end states replace them at the next forward.
 * Any other forward (evaluation) starts every window fresh and leaves the lanes alone.
 * mnemo_model_carry_bytes: the bytes of one lane's state over all layers (0: the kind carries
 * nothing). mnemo_model_set_lanes: keeps n_lanes lanes, all fresh (0 frees them); MNEMO_ERR_ARG
 * when the kind carries nothing. mnemo_model_use_lanes: the next forward's B windows are the
 * next windows of lanes first .. first+B-1 (fresh != 0: new text, their states start over);
 * that forward fails with MNEMO_ERR_ARG if first + B exceeds the lanes kept. Changing the
 * model's options or n_ctx frees the lanes. */
MNEMO_API size_t mnemo_model_carry_bytes(const struct mnemo_model *m);
MNEMO_API enum mnemo_status mnemo_model_set_lanes(struct mnemo_model *m, int n_lanes);
MNEMO_API enum mnemo_status mnemo_model_use_lanes(struct mnemo_model *m, int first, int fresh);

/* ---- checkpoints ---------------------------------------------------------------------------- */

/* Writes the parameters and the full config (in "__metadata__") as safetensors, atomically.
 * Tensor names: docs/checkpoint.md. */
MNEMO_API enum mnemo_status mnemo_model_save(const struct mnemo_model *m, const char *path);
/* Loads a checkpoint written by mnemo_model_save (every tensor checked against the config). */
MNEMO_API enum mnemo_status mnemo_model_load(struct mnemo_model **out, const char *path);

/* ---- evaluation ----------------------------------------------------------------------------- */

struct mnemo_eval_result {
    double loss;        /* mean cross-entropy, nats per token */
    double bpb;         /* bits per byte (= loss / ln 2 for the byte tokenizer) */
    double ppl;         /* exp(loss) */
    uint64_t tokens;    /* tokens scored */
};

/* Scores the token file at path in windows of T tokens (each starting with BOS), B at a time,
 * at most max_windows windows (0 = all; fewer are spread evenly over the file). Windows start
 * stride tokens apart; the first scores all its predictions, each later one its last stride, so
 * every scored token after the first window sees at least T - stride tokens of context. T = 0 means n_ctx; stride = 0 means T (disjoint
 * windows, every token scored once). */
MNEMO_API enum mnemo_status mnemo_eval_file(struct mnemo_model *m, const char *path, int T,
                                            int stride, int B, uint64_t max_windows,
                                            struct mnemo_eval_result *res);

/* ---- training ------------------------------------------------------------------------------- */

struct mnemo_train_config {
    const char *train_path;  /* token file (mnemo prepare) */
    const char *val_path;    /* token file, or NULL for no validation */
    const char *out_dir;     /* checkpoints and log.jsonl go here (must exist) */
    int batch;               /* windows per micro-batch B */
    int seq;                 /* window length T (0 = n_ctx) */
    int grad_accum;          /* micro-batches per optimizer step (1..65536) */
    int max_steps;           /* optimizer steps in all */
    int warmup;              /* linear warmup steps */
    float lr, lr_min;        /* peak learning rate; cosine decays to lr_min at max_steps */
    float weight_decay;      /* decoupled, on matrices (ndim >= 2) only */
    float beta1, beta2, eps;
    float grad_clip;         /* global L2 norm clip; 0 = off */
    int eval_every;          /* steps between validations (0 = only at the end) */
    int eval_windows;        /* windows per periodic validation, spread over the split (0 = all) */
    int ckpt_every;          /* steps between checkpoints (0 = only at the end) */
    uint64_t seed;           /* data order (and initialisation, done by the caller) */
    int threads;             /* 0 = keep the current setting */
    int resume;              /* 1: continue from out_dir's checkpoint and train state */
    float ema;               /* decay of an exponential moving average of the weights, 0 = off.
                              * When on, model.safetensors (and the model when mnemo_train
                              * returns) holds the average; the raw weights go to the train
                              * state. Step t uses min(ema, (1+t)/(10+t)). */
    int optimizer;           /* enum mnemo_optimizer */
    float momentum;          /* Muon's (Nesterov) momentum; AdamW uses beta1/beta2 */
    int doc_windows;         /* 1: every training window starts at a document's beginning (the
                              * stream's start or just after a newline, byte 10), for data of one
                              * example per line, and validation scores the windows at the
                              * validation split's document starts; 0: windows at T-aligned
                              * positions from a random offset per epoch */
};

enum mnemo_optimizer {
    MNEMO_OPT_ADAMW = 0, /* AdamW on every tensor */
    MNEMO_OPT_MUON = 1,  /* Muon on the blocks' weight matrices, AdamW on the rest */
    MNEMO_OPT_COUNT
};
/* "adamw" / "muon" (NULL for an unknown value), and the reverse (-1 for an unknown name). */
MNEMO_API const char *mnemo_optimizer_name(int opt);
MNEMO_API int mnemo_optimizer_from_name(const char *name);

MNEMO_API void mnemo_train_config_default(struct mnemo_train_config *tc);

enum mnemo_train_event_kind {
    MNEMO_TRAIN_EV_START = 0, /* step = first step to run */
    MNEMO_TRAIN_EV_STEP = 1,  /* one optimizer step done */
    MNEMO_TRAIN_EV_EVAL = 2,  /* a validation done */
    MNEMO_TRAIN_EV_CKPT = 3,  /* a checkpoint written (path) */
    MNEMO_TRAIN_EV_COUNT
};

struct mnemo_train_event {
    int kind;            /* enum mnemo_train_event_kind */
    int step;            /* steps completed */
    int max_steps;
    float loss;          /* training loss of the step (mean over micro-batches) */
    float lr;
    float grad_norm;     /* before clipping */
    double tokens_per_s; /* over the last reporting interval */
    double elapsed_s;    /* since this run (process) started training */
    double eta_s;        /* estimate for the remaining steps */
    double val_loss;     /* EVAL: nats per token */
    double val_bpb;
    const char *path;    /* CKPT: the checkpoint written */
    double aux_loss;     /* STEP: the kinds' auxiliary objective of the step (0 when none) */
    int rank, world;     /* this process of the group training together (0 of 1 without MPI);
                          * every process gets every event: print on rank 0 */
    const char *note;    /* START: a remark on the run (e.g. a resume at another world size),
                          * or NULL */
};

/* Called after every event; a non-zero return stops training after writing a checkpoint. */
typedef int (*mnemo_train_cb)(const struct mnemo_train_event *ev, void *user);

/* Trains m (initialised or loaded by the caller; with tc->resume the parameters, optimizer
 * state and data position are loaded from tc->out_dir). Writes out_dir/model.safetensors,
 * out_dir/train_state.safetensors and appends to out_dir/log.jsonl. A NaN or infinite loss
 * stops with MNEMO_ERR_NUMERIC and leaves the last good checkpoint in place. */
MNEMO_API enum mnemo_status mnemo_train(struct mnemo_model *m, const struct mnemo_train_config *tc,
                                        mnemo_train_cb cb, void *user);

/* ---- evaluation through a session (pruned or bounded states) ------------------------------ */

struct mnemo_session_config;
/* Scores the token file like mnemo_eval_file with disjoint windows of T tokens (0 = n_ctx), but
 * streams each window through a session opened with sc's options (NULL: the defaults; its
 * max_chunk is not used): the loss the streamed state really gives, e.g. with a pruned cache.
 * T may exceed n_ctx when the session's state is bounded (a window longer than n_ctx then
 * streams through it). */
MNEMO_API enum mnemo_status mnemo_eval_file_session(struct mnemo_model *m, const char *path, int T,
                                                    const struct mnemo_session_config *sc,
                                                    uint64_t max_windows,
                                                    struct mnemo_eval_result *res);
/* Called after the starting point and after every committed change: the budgets so far and
 * their pruned loss (nats per token). */
typedef void (*mnemo_prune_cb)(const int *budgets, int n_layer, double loss, void *user);
/* Budget search over the kind's per-layer session option "budget" (selective attention's
 * cache slots; any kind that declares such an option), in two phases. First the smallest budget K shared by all layers whose pruned
 * loss stays <= target_loss (bisection over K in [2, T], which assumes the loss does not rise as
 * K grows; otherwise it finds a boundary, not the minimum); then, from there, greedy per-layer:
 * repeatedly shrink the one layer (K_l <- floor(factor K_l), at least 2) whose shrinking keeps
 * the pruned loss lowest, while it stays <= target_loss. budgets (n_layer) receives the result.
 * Needs selective attention. */
MNEMO_API enum mnemo_status mnemo_prune_search(struct mnemo_model *m, const char *path, int T,
                                               double target_loss, float factor,
                                               uint64_t max_windows, int *budgets,
                                               mnemo_prune_cb cb, void *user);

/* ---- streaming session ---------------------------------------------------------------------- */

struct mnemo_session;

/* A streaming session over model m (borrowed; must outlive the session). Feeds of up to
 * max_chunk tokens at a time (chunked prefill); all memory is allocated here, once. */
MNEMO_API enum mnemo_status mnemo_session_create(struct mnemo_session **out, struct mnemo_model *m,
                                                 int max_chunk);
/* Options of a session beyond the chunk size. */
struct mnemo_session_config {
    int max_chunk;         /* largest feed */
    const char *attn_opts; /* the kind's session options, "key=value,..." (e.g. selective's
                            * budget=16 or budget=7/6/7/7, one per layer), applied over those
                            * the checkpoint carries (unless no_model_opts); copied. NULL = none */
    int no_model_opts;     /* 1: ignore the session options the model carries (e.g. budgets a
                            * prune-search stored in the checkpoint) */
};
MNEMO_API void mnemo_session_config_default(struct mnemo_session_config *sc);
MNEMO_API enum mnemo_status mnemo_session_create_ex(struct mnemo_session **out,
                                                    struct mnemo_model *m,
                                                    const struct mnemo_session_config *sc);
MNEMO_API void mnemo_session_free(struct mnemo_session *s);
/* Forgets every token fed so far. */
MNEMO_API void mnemo_session_reset(struct mnemo_session *s);
/* Feeds n tokens (1 <= n <= max_chunk); *logits receives (n, vocab_padded) logits, one row per
 * fed token, valid until the next call. MNEMO_ERR_FULL when the attention state cannot take
 * more tokens (e.g. a dense cache at n_ctx): reset, or re-feed a shorter history. The session
 * then holds what it held before the call, except when only a later layer filled up (per-layer
 * budgets with an unpruned layer): it is then reset to empty, and the message says so. */
MNEMO_API enum mnemo_status mnemo_session_feed(struct mnemo_session *s, const uint16_t *tok, int n,
                                               const float **logits);
MNEMO_API int mnemo_session_pos(const struct mnemo_session *s);       /* tokens fed */
MNEMO_API size_t mnemo_session_live_bytes(const struct mnemo_session *s); /* attention state held now */
MNEMO_API size_t mnemo_session_state_bytes(const struct mnemo_session *s); /* its bound */
/* 1 when that bound holds whatever the stream length (every layer's state is bounded: infini's
 * memory, a budgeted selective cache), 0 when the state fills at n_ctx. */
MNEMO_API int mnemo_session_bounded(const struct mnemo_session *s);
/* What a session of m with sc (NULL: the defaults) would hold, without making one: the bound of
 * its attention state in bytes, and whether that bound holds whatever the stream length. The
 * errors mnemo_session_create_ex would give for the options. */
MNEMO_API enum mnemo_status mnemo_session_plan(struct mnemo_model *m,
                                               const struct mnemo_session_config *sc,
                                               size_t *state_bytes, int *bounded);

/* ---- sampling ------------------------------------------------------------------------------- */

struct mnemo_sampler_config {
    float temperature; /* 0 = greedy (argmax) */
    int top_k;         /* 0 = off */
    float top_p;       /* 1 = off */
};
/* Picks a token id in [0, V) from logits (V). *rng is the generator state (any seed). work
 * must hold 2*V floats. NaN logits are never picked; -1 when V < 1 or no logit is a number. */
MNEMO_API int mnemo_sample(const float *logits, int V, const struct mnemo_sampler_config *sc,
                           uint64_t *rng, float *work);

/* ---- data ----------------------------------------------------------------------------------- */

#define MNEMO_TOK_BOS 256   /* the byte tokenizer: ids 0..255 are bytes, 256 is BOS */
#define MNEMO_TOK_VOCAB 257

/* Tokenizes text (bytes) and writes out_dir/train.bin and out_dir/val.bin (the last
 * val_frac of the text, at least one byte), atomically. out_dir must exist. */
MNEMO_API enum mnemo_status mnemo_prepare_text(const unsigned char *text, size_t n,
                                               const char *out_dir, double val_frac,
                                               uint64_t *n_train, uint64_t *n_val);

/* ---- benchmarks ------------------------------------------------------------------------------ */

struct mnemo_bench_result {
    double tokens_per_s;    /* training tokens per second (forward, backward, clip, update) */
    double step_s;          /* seconds per step (median) */
    double flops_per_token; /* model FLOPs per trained token (6N + attention, no recompute) */
    double achieved_gflops; /* flops_per_token * tokens_per_s / 1e9 */
};
/* Times `steps` full training steps (after `warmup` untimed ones) on random tokens. */
MNEMO_API enum mnemo_status mnemo_bench_train(const struct mnemo_model_config *cfg, int B, int T,
                                              int steps, int warmup,
                                              struct mnemo_bench_result *res);
/* The same with the given optimizer (enum mnemo_optimizer; mnemo_bench_train uses AdamW). */
MNEMO_API enum mnemo_status mnemo_bench_train_opt(const struct mnemo_model_config *cfg, int B,
                                                  int T, int steps, int warmup, int optimizer,
                                                  struct mnemo_bench_result *res);
/* sgemm GFLOP/s on square n x n x n products with the current threads (the MFU baseline); 0
 * when nothing was measured (n outside [1, 16384], reps < 1, or no memory). */
MNEMO_API double mnemo_bench_sgemm(int n, int reps);

#ifdef __cplusplus
}
#endif
#endif /* MNEMO_H */
