/*
 * cmd_train.c -- mnemo train: a model config and a training config from a JSON file and/or
 * flags; progress lines on stderr, the JSON Lines log in the output directory, Ctrl-C stops
 * cleanly after writing a checkpoint.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static volatile sig_atomic_t interrupted;
/* The first Ctrl-C (or SIGTERM) asks for a clean stop after the current step (a checkpoint is
 * written); a second one ends the process at once, as if no handler were installed. */
static void on_sigint(int sig)
{
    if (interrupted) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    interrupted = 1;
}

/* 1 when --name was typed on the command line (not only set by a --config file), in either
 * spelling the parser accepts (--d_model, --d-model). */
static int typed(int argc, char **argv, const char *name)
{
    const size_t n = strlen(name);
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || a[1] != '-') continue;
        size_t k = 0;
        while (k < n && (a[2 + k] == name[k] || (name[k] == '_' && a[2 + k] == '-'))) k++;
        if (k == n && (a[2 + n] == 0 || a[2 + n] == '=')) return 1;
    }
    return 0;
}

/* With --resume or --init the model is the checkpoint's. A shape option that differs from the
 * default and from the checkpoint is refused when typed on the command line (rather than
 * ignored), and noted when it comes from a --config file (whose shape a run may have
 * overridden by flags). n_ctx and the segment may change with --init (--seq, --segment). */
struct shape_check {
    const char *how; /* "--resume" or "--init" */
    int argc;
    char **argv;
};

static void shape_differs(const struct shape_check *sc, const char *flag, const char *want,
                          const char *have)
{
    if (typed(sc->argc, sc->argv, flag))
        cli_die("train", "--%s %s: the checkpoint has %s (%s keeps the checkpoint's shape)", flag,
                want, have, sc->how);
    fprintf(stderr, "train: %s keeps the checkpoint's %s %s (the config says %s)\n", sc->how, flag,
            have, want);
}

static void check_shape(const struct shape_check *sc, const struct mnemo_model_config *want,
                        const struct mnemo_model_config *ck)
{
    const int resume = !strcmp(sc->how, "--resume");
    struct mnemo_model_config d;
    mnemo_model_config_default(&d);
    char a[64], b[64];
#define SHAPE_INT(field, flag)                                                                  \
    if (want->field != d.field && want->field != ck->field) {                                   \
        snprintf(a, sizeof(a), "%d", want->field);                                              \
        snprintf(b, sizeof(b), "%d", ck->field);                                                \
        shape_differs(sc, flag, a, b);                                                          \
    }
    SHAPE_INT(n_layer, "n_layer")
    SHAPE_INT(d_model, "d_model")
    SHAPE_INT(n_head, "n_head")
    if (resume) {
        SHAPE_INT(n_ctx, "n_ctx")
    } else if (want->n_ctx != d.n_ctx && want->n_ctx != ck->n_ctx && typed(sc->argc, sc->argv, "n_ctx")) {
        cli_die("train", "--n_ctx %d: the checkpoint has %d (with --init, --seq sets the window)",
                want->n_ctx, ck->n_ctx);
    }
#undef SHAPE_INT
    const char *pn[2] = {"rope", "learned"};
    if (want->pos != d.pos && want->pos != ck->pos)
        shape_differs(sc, "pos", pn[want->pos == MNEMO_POS_LEARNED], pn[ck->pos == MNEMO_POS_LEARNED]);
    if (want->rope_theta != d.rope_theta && want->rope_theta != ck->rope_theta) {
        snprintf(a, sizeof(a), "%g", (double)want->rope_theta);
        snprintf(b, sizeof(b), "%g", (double)ck->rope_theta);
        shape_differs(sc, "rope_theta", a, b);
    }
    if (want->attn_kind != d.attn_kind && want->attn_kind != ck->attn_kind)
        shape_differs(sc, "attn", mnemo_attn_kind_name(want->attn_kind),
                      mnemo_attn_kind_name(ck->attn_kind));
}

/* 1 when dir holds a model of an earlier run. A folder without one holds no run, even with a
 * log or a train state in it (a run stopped before or during its first checkpoint): it is
 * trained into without --overwrite, and the library removes those leftovers. */
static int holds_run(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/model.safetensors", dir);
    return access(path, F_OK) == 0;
}

struct progress {
    int every;      /* print a step line every this many steps */
    int tty;
    const struct mnemo_model *m;
    int rank;       /* of this process in an MPI group: rank 0 alone prints */
    int batch;      /* windows per step of one process (batch x grad_accum) */
};

static int on_event(const struct mnemo_train_event *ev, void *user)
{
    struct progress *p = user;
    char el[32], eta[32];
    p->rank = ev->rank;
    if (ev->rank != 0) return interrupted != 0;
    switch (ev->kind) {
    case MNEMO_TRAIN_EV_START:
    {
        /* printed once the data and config have been checked, so errors stay one line */
        const struct mnemo_model_config *c = mnemo_model_get_config(p->m);
        fprintf(stderr, "model: %d layers, d_model %d, %d heads, n_ctx %d, %s positions, %s "
                "attention, %.2fM parameters\n", c->n_layer, c->d_model, c->n_head, c->n_ctx,
                c->pos == MNEMO_POS_ROPE ? "rope" : "learned", mnemo_attn_kind_name(c->attn_kind),
                (double)mnemo_model_n_params(p->m) / 1e6);
        if (c->attn_opts && c->attn_opts[0])
            fprintf(stderr, "%s attention options: %s\n", mnemo_attn_kind_name(c->attn_kind),
                    c->attn_opts);
        if (mnemo_model_carry_bytes(p->m))
            fprintf(stderr, "train: %s attention carries its state from window to window: the "
                    "batch reads lanes of consecutive text (%zu bytes each); validation "
                    "windows start fresh\n", mnemo_attn_kind_name(c->attn_kind),
                    mnemo_model_carry_bytes(p->m));
        if (ev->world > 1)
            fprintf(stderr, "train: %d processes, %d windows per step in all (--batch is per "
                    "process)\n", ev->world, p->batch * ev->world);
        if (ev->note) fprintf(stderr, "train: note: %s\n", ev->note);
        fprintf(stderr, "train: starting at step %d of %d\n", ev->step, ev->max_steps);
        break;
    }
        break;
    case MNEMO_TRAIN_EV_STEP:
        if (ev->step % p->every == 0 || ev->step == ev->max_steps || ev->step == 1) {
            cli_fmt_duration(el, sizeof(el), ev->elapsed_s);
            cli_fmt_duration(eta, sizeof(eta), ev->eta_s);
            char mem[32] = "";
            if (ev->aux_loss > 0) snprintf(mem, sizeof(mem), " | aux %.4f", ev->aux_loss);
            fprintf(stderr, "step %6d/%d | loss %.4f%s | lr %.2e | norm %.3f | %7.0f tok/s | %s elapsed | eta %s\n",
                    ev->step, ev->max_steps, (double)ev->loss, mem, (double)ev->lr,
                    (double)ev->grad_norm, ev->tokens_per_s, el, eta);
        }
        break;
    case MNEMO_TRAIN_EV_EVAL:
        fprintf(stderr, "eval  %6d/%d | val loss %.4f | val %.4f bits/byte\n", ev->step,
                ev->max_steps, ev->val_loss, ev->val_bpb);
        break;
    case MNEMO_TRAIN_EV_CKPT:
        fprintf(stderr, "checkpoint %s (step %d)\n", ev->path, ev->step);
        break;
    }
    return interrupted != 0;
}

int cmd_train(int argc, char **argv)
{
    struct mnemo_model_config mc;
    struct mnemo_train_config tc;
    mnemo_model_config_default(&mc);
    mnemo_train_config_default(&tc);
    const char *pos = "rope", *attn = "dense", *init = NULL, *optim = "adamw";
    struct cli_attn ka = {0};
    tc.out_dir = "runs/default";
    int print_every = 10, overwrite = 0;
    const struct opt opts[] = {
        {"train", OPT_STR, &tc.train_path, "training token file (from mnemo prepare)"},
        {"val", OPT_STR, &tc.val_path, "validation token file"},
        {"out", OPT_STR, &tc.out_dir, "output directory (checkpoint, train state, log.jsonl)"},
        {"resume", OPT_BOOL, &tc.resume, "continue the run in --out exactly where it stopped"},
        {"init", OPT_STR, &init, "start from this checkpoint's weights (fresh optimizer)"},
        {"overwrite", OPT_BOOL, &overwrite,
         "start a fresh run in --out even if it holds one (its model, state and log are replaced)"},
        {"n_layer", OPT_INT, &mc.n_layer, "transformer blocks"},
        {"d_model", OPT_INT, &mc.d_model, "model width"},
        {"n_head", OPT_INT, &mc.n_head, "attention heads"},
        {"n_ctx", OPT_INT, &mc.n_ctx, "context (training window) length"},
        {"pos", OPT_STR, &pos, "positions: rope or learned"},
        {"rope_theta", OPT_FLOAT, &mc.rope_theta, "RoPE base"},
        {"attn", OPT_STR, &attn, "attention kind (the kinds and their options are listed below)"},
        {"attn_opt", OPT_ATTN, &ka,
         "the kind's options KEY=VALUE,... (also --KEY VALUE); with --resume or --init, model "
         "options must match the checkpoint's (--init may change mutable ones)"},
        {"batch", OPT_INT, &tc.batch, "windows per micro-batch"},
        {"seq", OPT_INT, &tc.seq,
         "window length (0 = n_ctx); with --init it may exceed the checkpoint's n_ctx (RoPE "
         "positions), which then becomes --seq"},
        {"grad_accum", OPT_INT, &tc.grad_accum, "micro-batches per optimizer step"},
        {"steps", OPT_INT, &tc.max_steps, "optimizer steps"},
        {"warmup", OPT_INT, &tc.warmup, "linear warmup steps"},
        {"lr", OPT_FLOAT, &tc.lr, "peak learning rate"},
        {"lr_min", OPT_FLOAT, &tc.lr_min, "final learning rate (cosine decay)"},
        {"optimizer", OPT_STR, &optim,
         "adamw, or muon (Muon on the blocks' weight matrices, AdamW on the rest)"},
        {"momentum", OPT_FLOAT, &tc.momentum, "Muon's Nesterov momentum"},
        {"weight_decay", OPT_FLOAT, &tc.weight_decay, "decoupled weight decay on matrices"},
        {"beta1", OPT_FLOAT, &tc.beta1, "AdamW beta1"},
        {"beta2", OPT_FLOAT, &tc.beta2, "AdamW beta2"},
        {"eps", OPT_FLOAT, &tc.eps, "AdamW epsilon"},
        {"grad_clip", OPT_FLOAT, &tc.grad_clip, "clip the global gradient norm (0 = off)"},
        {"ema", OPT_FLOAT, &tc.ema,
         "keep an exponential moving average of the weights with this decay, e.g. 0.999 "
         "(0 = off); the checkpoint and validation use the average"},
        {"eval_every", OPT_INT, &tc.eval_every, "steps between validations (0 = at the end)"},
        {"eval_windows", OPT_INT, &tc.eval_windows,
         "windows per periodic validation, spread over the split (0 = all)"},
        {"ckpt_every", OPT_INT, &tc.ckpt_every, "steps between checkpoints (0 = at the end)"},
        {"seed", OPT_U64, &tc.seed, "random seed (initialisation and data order)"},
        {"doc_windows", OPT_BOOL, &tc.doc_windows,
         "start every training and validation window at the beginning of a line (data of one "
         "example per line)"},
        {"threads", OPT_INT, &tc.threads, "threads (0 = OMP_NUM_THREADS or all cores)"},
        {"print_every", OPT_INT, &print_every, "steps between progress lines"},
    };
    const char *rest[1];
    int n_rest;
    cli_parse("train", "[--config FILE] [options]", argc, argv, opts, sizeof(opts) / sizeof(opts[0]),
              rest, &n_rest, 0);
    if (!tc.train_path) cli_die("train", "no training data: give --train FILE (made by mnemo prepare)");
    if (print_every < 1) cli_die("train", "--print_every must be >= 1");
    if (!strcmp(pos, "rope")) mc.pos = MNEMO_POS_ROPE;
    else if (!strcmp(pos, "learned")) mc.pos = MNEMO_POS_LEARNED;
    else cli_die("train", "--pos '%s': expected rope or learned", pos);
    tc.optimizer = mnemo_optimizer_from_name(optim);
    if (tc.optimizer < 0) cli_die("train", "--optimizer '%s': expected adamw or muon", optim);
    mc.attn_kind = mnemo_attn_kind_from_name(attn);
    if (mc.attn_kind < 0)
        cli_die("train", "--attn '%s': unknown attention kind (see mnemo train --help)", attn);
    mc.attn_opts = cli_attn_all(&ka); /* a fresh model's; a checkpoint's meet them below */
    if (tc.resume && overwrite) /* "the same command with --resume" may carry --overwrite */
        fprintf(stderr, "train: --resume continues the run; --overwrite is ignored\n");
    if (tc.resume && init) cli_die("train", "give --resume or --init, not both");
    if (tc.resume && !holds_run(tc.out_dir))
        cli_die("train", "cannot resume: '%s' holds no checkpoint (a run stopped before its first "
                "one leaves none): start the run without --resume", tc.out_dir);
    if (!tc.resume && !overwrite && holds_run(tc.out_dir))
        cli_die("train", "'%s' holds a run already: continue it with --resume, start it over with "
                "--overwrite, or give another --out", tc.out_dir);
    if (cli_mkdir_p(tc.out_dir) != 0)
        cli_die("train", "cannot create '%s': %s", tc.out_dir, strerror(errno));

    struct mnemo_model *m = NULL;
    enum mnemo_status st;
    char path[4096];
    if (tc.resume) {
        snprintf(path, sizeof(path), "%s/model.safetensors", tc.out_dir);
        if ((st = mnemo_model_load(&m, path)) != MNEMO_OK) cli_fail("train", st, "cannot resume");
        const struct shape_check sc = {"--resume", argc, argv};
        check_shape(&sc, &mc, mnemo_model_get_config(m));
        cli_attn_continue("train", m, &ka, "--resume");
    } else if (init) {
        if ((st = mnemo_model_load(&m, init)) != MNEMO_OK) cli_fail("train", st, "cannot load --init");
        const struct shape_check sc = {"--init", argc, argv};
        check_shape(&sc, &mc, mnemo_model_get_config(m));
        const int old_ctx = mnemo_model_get_config(m)->n_ctx;
        if (tc.seq > old_ctx) {
            if ((st = mnemo_model_set_n_ctx(m, tc.seq)) != MNEMO_OK)
                cli_fail("train", st, "--seq longer than the --init checkpoint's n_ctx");
            fprintf(stderr, "train: windows of %d tokens (the checkpoint's n_ctx was %d)\n", tc.seq,
                    old_ctx);
        }
        cli_attn_continue("train", m, &ka, "--init");
    } else {
        if ((st = mnemo_model_create(&m, &mc)) != MNEMO_OK) cli_fail("train", st, "bad model config");
        mnemo_model_init(m, tc.seed);
    }
    struct progress p = {print_every, isatty(2), m, 0, tc.batch * tc.grad_accum};
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    st = mnemo_train(m, &tc, on_event, &p);
    if (st != MNEMO_OK) cli_fail("train", st, "training failed");
    /* stopped before max_steps: by a signal here, or (MPI) on another process of the group */
    const char *done = mnemo_model_meta(m, "train.step");
    const int stopped = interrupted || (done && atoi(done) < tc.max_steps);
    if (stopped && p.rank == 0)
        fprintf(stderr, "train: interrupted; to continue, run the same command with --resume "
                "(the run is in %s)\n", tc.out_dir);
    mnemo_model_free(m);
    return stopped ? 130 : 0;
}
