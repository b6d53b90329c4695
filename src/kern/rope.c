/*
 * rope.c -- rotary position embeddings (RoFormer, Su et al. 2021), GPT-NeoX "rotate half"
 * convention: the head vector x (HS) is split into halves, and pair i couples x[i] with
 * x[i + HS/2]:
 *
 *     angle(pos, i) = pos * theta^(-2i/HS)                        i in [0, HS/2)
 *     (x[i], x[i+HS/2]) <- (x[i] cos - x[i+HS/2] sin,  x[i] sin + x[i+HS/2] cos)
 *
 * Every RoPE path in the library (training forward, streaming step, references, tests) takes
 * its (cos, sin) from mni_rope_cs or from mni_rope_table, which evaluates exactly the same
 * expression, so that a token rotated during training and the same token rotated in a session
 * get bit-identical factors. Angles and cos/sin are computed in double and rounded once to
 * float: at pos ~ 1e4 a float angle would already be off by ~1e-3 rad.
 */
#include <math.h>

#include "kern/kern.h"

/* theta^(-2i/HS) in double. Shared by mni_rope_cs and mni_rope_table so that both round the
 * same double values. */
static double rope_inv_freq(int i, int HS, float theta)
{
    return pow((double)theta, -2.0 * (double)i / (double)HS);
}

static void rope_cs_from(float *c, float *s, int pos, double inv_freq)
{
    double angle = (double)pos * inv_freq;
    *c = (float)cos(angle);
    *s = (float)sin(angle);
}

void mni_rope_cs(float *c, float *s, int pos, int i, int HS, float theta)
{
    rope_cs_from(c, s, pos, rope_inv_freq(i, HS, theta));
}

void mni_rope_table(float *cs, int n_pos, int HS, float theta)
{
    int half = HS / 2;
    if (half <= 0 || n_pos <= 0) return;
    /* The frequencies depend only on i; HS <= a few hundred, so a small stack array holds them
     * and pow() runs HS/2 times instead of n_pos*HS/2 times. */
    double inv[512];
    for (int i = 0; i < half && i < 512; i++) inv[i] = rope_inv_freq(i, HS, theta);
    /* cos/sin in double cost ~20 ns each; large tables are split across threads. */
#pragma omp parallel for schedule(static) if ((long)n_pos * half > 2048)
    for (int p = 0; p < n_pos; p++) {
        float *row = cs + (size_t)p * (size_t)half * 2; // (HS/2, 2)
        for (int i = 0; i < half; i++) {
            double f = i < 512 ? inv[i] : rope_inv_freq(i, HS, theta);
            rope_cs_from(&row[2 * i], &row[2 * i + 1], p, f);
        }
    }
}

void mni_rope_apply(float *x, const float *cs_row, int HS, int sign)
{
    int half = HS / 2;
    float sg = sign < 0 ? -1.0f : 1.0f;
    for (int i = 0; i < half; i++) {
        float c = cs_row[2 * i], s = sg * cs_row[2 * i + 1];
        float x0 = x[i], x1 = x[i + half];
        // sign -1 uses R(-angle) = R(angle)^T, the transpose needed by backward
        x[i] = x0 * c - x1 * s;
        x[i + half] = x0 * s + x1 * c;
    }
}
