/*
 * sample.c -- next-token sampling: temperature, then top-k, then top-p (nucleus) over the
 * remaining candidates, then a draw. Temperature 0 is greedy.
 */
#include <math.h>
#include <stdlib.h>

#include "mni.h"

static int cmp_desc(const void *a, const void *b)
{
    float x = ((const float *)a)[0], y = ((const float *)b)[0];
    return (x < y) - (x > y);
}

int mnemo_sample(const float *logits, int V, const struct mnemo_sampler_config *sc, uint64_t *rng,
                 float *work)
{
    int best = -1; /* the largest logit that is a number; NaN logits are never drawn */
    for (int v = 0; v < V; v++)
        if (!isnan(logits[v]) && (best < 0 || logits[v] > logits[best])) best = v;
    if (best < 0) return -1; /* V < 1, or no logit is a number */
    if (!(sc->temperature > 0)) return best;
    /* work: (V, 2) pairs (probability, id as float). Dividing the gap to the maximum by the
     * temperature (not multiplying by 1/t, which overflows for a denormal t) keeps the best at
     * exp(0) = 1 and sends the rest to 0 as t -> 0: greedy in the limit, never NaN. */
    const float mx = logits[best], t = sc->temperature;
    double sum = 0;
    for (int v = 0; v < V; v++) {
        float p = isnan(logits[v]) ? 0.0f : expf((logits[v] - mx) / t);
        work[2 * v] = p;
        work[2 * v + 1] = (float)v;
        sum += p;
    }
    int n = V;
    int filter = (sc->top_k > 0 && sc->top_k < V) || (sc->top_p > 0 && sc->top_p < 1);
    if (filter) {
        qsort(work, (size_t)V, 2 * sizeof(float), cmp_desc);
        if (sc->top_k > 0 && sc->top_k < n) n = sc->top_k;
        sum = 0;
        for (int i = 0; i < n; i++) sum += work[2 * i];
        if (sc->top_p > 0 && sc->top_p < 1) {
            double acc = 0;
            int keep = n;
            for (int i = 0; i < n; i++) {
                acc += work[2 * i] / sum;
                if (acc >= sc->top_p) {
                    keep = i + 1;
                    break;
                }
            }
            n = keep;
            sum = 0;
            for (int i = 0; i < n; i++) sum += work[2 * i];
        }
    }
    struct mni_rng r = {*rng};
    double u = (double)mni_rng_uniform(&r) * sum;
    *rng = r.s;
    double acc = 0;
    for (int i = 0; i < n; i++) {
        acc += work[2 * i];
        if (u < acc) return (int)work[2 * i + 1];
    }
    return (int)work[2 * (n - 1) + 1];
}
