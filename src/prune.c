/*
 * prune.c -- evaluation through a session (a pruned or otherwise bounded state), and the search
 * for per-layer cache budgets (Selective Attention, issue 3; spec
 * ../shared/papers/selective-attention.md §5; any kind with a per-layer session option
 * "budget").
 *
 * Pruned evaluation streams each validation window (BOS + T-1 tokens, disjoint, as the
 * training-time validation) through a fresh session whose layers keep at most K_l keys, and
 * scores every prediction from the session's logits: the perplexity the pruned cache really
 * gives, not a mask simulated in a batched forward.
 *
 * The search has two phases. The spec's greedy default alone (from K_l = T, shrink one layer
 * by a factor per round) needs ~L log(T/K) / log(1/factor) rounds of L measurements: ~600
 * measurements from T = 512 to K = 8 at factor 0.9, most of them spent where the loss does not
 * move at all (a model trained with the memory loss ignores most keys). So phase 1 bisects a
 * budget K shared by all layers (the smallest that keeps the loss within the target, ~log2 T
 * measurements), and phase 2 is the greedy per-layer search started from there: in each round
 * try K_l <- floor(factor K_l) (at least 2) for every layer on its own, and commit the one
 * layer change with the lowest loss if it stays within the target; stop when no layer can
 * shrink. The result is written into the checkpoint as the session option budget
 * ("attn.budget"), where eval, generate and answer find it.
 *
 * Measurements use at most max_windows windows spread evenly over the split (mni_eval_pick),
 * not its first ones: the split's start is one book, and orderings measured there need not
 * hold on the whole split.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data.h"
#include "kern/kern.h"
#include "mni.h"
#include "model.h"

static enum mnemo_status eval_pruned_tokens(struct mnemo_model *m, const uint16_t *tok, uint64_t n,
                                            int T, const char *opts, int no_model_opts,
                                            uint64_t max_windows, struct mnemo_eval_result *r)
{
    memset(r, 0, sizeof(*r));
    uint64_t nw = mni_eval_windows(n, T, T);
    if (nw == 0)
        return mni_err(MNEMO_ERR_ARG, "the evaluation data has %llu tokens, fewer than one window of %d",
                       (unsigned long long)n, T);
    const uint64_t all = nw;
    if (max_windows && max_windows < nw) nw = max_windows;
    const int chunk = T < 64 ? T : 64;
    struct mnemo_session_config sc;
    mnemo_session_config_default(&sc);
    sc.max_chunk = chunk;
    sc.attn_opts = opts;
    sc.no_model_opts = no_model_opts;
    struct mnemo_session *s;
    enum mnemo_status st = mnemo_session_create_ex(&s, m, &sc);
    if (st != MNEMO_OK) return st;
    if (T > m->cfg.n_ctx && !mnemo_session_bounded(s)) {
        mnemo_session_free(s);
        return mni_err(MNEMO_ERR_ARG, "evaluation through a session: windows of %d tokens are "
                       "longer than n_ctx = %d, and the %s attention state is not bounded with "
                       "these options", T, m->cfg.n_ctx, m->attn->name);
    }
    uint16_t *x = mni_alloc((size_t)T * 2 * sizeof(uint16_t));
    float *losses = mni_alloc((size_t)chunk * sizeof(float));
    if (!x || !losses) {
        mni_free(x);
        mni_free(losses);
        mnemo_session_free(s);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory for the pruned evaluation");
    }
    uint16_t *y = x + T;
    double sum = 0;
    for (uint64_t w = 0; w < nw && st == MNEMO_OK; w++) {
        mni_eval_window(tok, mni_eval_pick(w, nw, all), T, T, x, y);
        mnemo_session_reset(s);
        for (int t = 0; t < T && st == MNEMO_OK; t += chunk) {
            const int k = T - t < chunk ? T - t : chunk;
            const float *lg;
            st = mnemo_session_feed(s, x + t, k, &lg);
            if (st == MNEMO_OK)
                sum += mni_xent_fwd_bwd(NULL, losses, lg, y + t, 0.0f, (size_t)k,
                                        (size_t)m->cfg.vocab, (size_t)m->cfg.vocab_padded);
        }
    }
    mni_free(x);
    mni_free(losses);
    mnemo_session_free(s);
    if (st != MNEMO_OK) return st;
    r->tokens = nw * (uint64_t)T;
    r->loss = sum / (double)r->tokens;
    if (!isfinite(r->loss)) return mni_err(MNEMO_ERR_NUMERIC, "the loss is not finite (%g)", r->loss);
    r->bpb = r->loss / MNI_LN2;
    r->ppl = exp(r->loss);
    return MNEMO_OK;
}

/* The window T (0 = n_ctx); longer than n_ctx only where the session is bounded (checked when
 * it is made). */
static enum mnemo_status check_window(const struct mnemo_model *m, int *T, int may_stream)
{
    if (*T == 0) *T = m->cfg.n_ctx;
    if (*T < 1 || (*T > m->cfg.n_ctx && !may_stream) || *T > 1 << 30)
        return mni_err(MNEMO_ERR_ARG, "evaluation through a session: window %d must be in [1, n_ctx "
                       "= %d]", *T, m->cfg.n_ctx);
    return MNEMO_OK;
}

enum mnemo_status mnemo_eval_file_session(struct mnemo_model *m, const char *path, int T,
                                          const struct mnemo_session_config *sc,
                                          uint64_t max_windows, struct mnemo_eval_result *res)
{
    enum mnemo_status st = check_window(m, &T, 1);
    if (st != MNEMO_OK) return st;
    struct mni_tokens tk;
    if ((st = mni_tokens_read_for(&tk, path, m->cfg.vocab)) != MNEMO_OK) return st;
    st = eval_pruned_tokens(m, tk.tok, tk.n, T, sc ? sc->attn_opts : NULL,
                            sc ? sc->no_model_opts : 0, max_windows, res);
    mni_tokens_free(&tk);
    return st;
}

/* Evaluates with per-layer budgets (and no session option the model carries). */
static enum mnemo_status eval_budgets(struct mnemo_model *m, const struct mni_tokens *tk, int T,
                                      const int *budgets, char *buf, size_t n,
                                      uint64_t max_windows, struct mnemo_eval_result *r)
{
    size_t used = (size_t)snprintf(buf, n, "budget=");
    for (int l = 0; l < m->cfg.n_layer && used < n; l++)
        used += (size_t)snprintf(buf + used, n - used, "%s%d", l ? "/" : "", budgets[l]);
    return eval_pruned_tokens(m, tk->tok, tk->n, T, buf, 1, max_windows, r);
}

enum mnemo_status mnemo_prune_search(struct mnemo_model *m, const char *path, int T,
                                     double target_loss, float factor, uint64_t max_windows,
                                     int *budgets, mnemo_prune_cb cb, void *user)
{
    enum mnemo_status st = check_window(m, &T, 0);
    if (st != MNEMO_OK) return st;
    const int bi = mnemo_attn_opt_find(m->cfg.attn_kind, "budget");
    if (bi < 0 || m->attn->opts[bi].scope != MNEMO_ATTN_SCOPE_SESSION ||
        !(m->attn->opts[bi].flags & MNEMO_ATTN_OPT_PER_LAYER))
        return mni_err(MNEMO_ERR_ARG, "prune-search: %s attention has no per-layer session option "
                       "'budget' to search (selective attention has)", m->attn->name);
    if (!(factor > 0 && factor < 1))
        return mni_err(MNEMO_ERR_ARG, "prune-search: factor %g must be in (0, 1)", (double)factor);
    if (!(target_loss > 0) || !isfinite(target_loss))
        return mni_err(MNEMO_ERR_ARG, "prune-search: the target loss must be positive");
    struct mni_tokens tk;
    if ((st = mni_tokens_read_for(&tk, path, m->cfg.vocab)) != MNEMO_OK) return st;
    const int L = m->cfg.n_layer;
    int *trial = mni_alloc((size_t)L * sizeof(int));
    const size_t nbuf = 16 + (size_t)L * 12;
    char *buf = mni_malloc(nbuf);
    if (!trial || !buf) {
        mni_free(trial);
        mni_free(buf);
        mni_tokens_free(&tk);
        return mni_err(MNEMO_ERR_NOMEM, "out of memory");
    }
    for (int l = 0; l < L; l++) budgets[l] = T;
    struct mnemo_eval_result r;
    st = eval_budgets(m, &tk, T, budgets, buf, nbuf, max_windows, &r);
    if (st == MNEMO_OK && cb) cb(budgets, L, r.loss, user);
    if (st == MNEMO_OK && r.loss > target_loss)
        st = mni_err(MNEMO_ERR_ARG, "prune-search: unpruned, the model's loss %.4f is already above "
                     "the target %.4f: nothing to prune to", r.loss, target_loss);
    /* phase 1: the smallest shared budget within the target; lo fails (or is below the
     * minimum of 2), hi passes */
    int lo = 1, hi = T;
    while (st == MNEMO_OK && hi - lo > 1) {
        int mid = (int)lround(sqrt((double)lo * (double)hi)); /* bisect in log K */
        if (mid <= lo) mid = lo + 1;
        if (mid >= hi) mid = hi - 1;
        for (int l = 0; l < L; l++) trial[l] = mid;
        st = eval_budgets(m, &tk, T, trial, buf, nbuf, max_windows, &r);
        if (st != MNEMO_OK) break;
        if (r.loss <= target_loss) {
            hi = mid;
            memcpy(budgets, trial, (size_t)L * sizeof(int));
            if (cb) cb(budgets, L, r.loss, user);
        } else {
            lo = mid;
        }
    }
    /* phase 2: greedy per layer */
    while (st == MNEMO_OK) {
        int best_l = -1, best_k = 0;
        double best = INFINITY;
        for (int l = 0; l < L && st == MNEMO_OK; l++) {
            int k = (int)floorf(factor * (float)budgets[l]);
            if (k >= budgets[l]) k = budgets[l] - 1;
            if (k < 2) continue;
            memcpy(trial, budgets, (size_t)L * sizeof(int));
            trial[l] = k;
            st = eval_budgets(m, &tk, T, trial, buf, nbuf, max_windows, &r);
            if (st == MNEMO_OK && r.loss <= target_loss && r.loss < best) {
                best = r.loss;
                best_l = l;
                best_k = k;
            }
        }
        if (st != MNEMO_OK || best_l < 0) break;
        budgets[best_l] = best_k;
        if (cb) cb(budgets, L, best, user);
    }
    mni_free(trial);
    mni_free(buf);
    mni_tokens_free(&tk);
    return st;
}
