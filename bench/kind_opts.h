/*
 * kind_opts.h -- the per-kind option lists of the benchmarks' --opts flag:
 * "kind:k=v,k=v;kind2:k=v" (bench_scaling, bench_models).
 */
#ifndef MNEMO_BENCH_KIND_OPTS_H
#define MNEMO_BENCH_KIND_OPTS_H

#include <stdio.h>
#include <string.h>

/* The options spec gives kind, copied into buf (n bytes); "" when it gives none. */
static inline const char *bench_kind_opts(const char *spec, const char *kind, char *buf, size_t n)
{
    const size_t kl = strlen(kind);
    for (const char *p = spec; p && *p;) {
        const size_t len = strcspn(p, ";");
        if (len > kl && !strncmp(p, kind, kl) && p[kl] == ':') {
            snprintf(buf, n, "%.*s", (int)(len - kl - 1), p + kl + 1);
            return buf;
        }
        p += len + (p[len] == ';');
    }
    return "";
}

#endif
