/*
 * registry.c -- the attention kinds by enum and by name. The table is indexed by enum
 * mnemo_attn_kind; adding a kind means appending the enum value in mnemo.h, its ops object in
 * attn_int.h, and one line here (the _Static_assert is the reminder).
 */
#include <string.h>

#include "attn/attn_int.h"
#include "mnemo.h"

static const struct mnemo_attn_ops *const registry[MNEMO_ATTN_KIND_COUNT] = {
    [MNEMO_ATTN_KIND_DENSE] = &mni_attn_dense,
    [MNEMO_ATTN_KIND_SELECTIVE] = &mni_attn_selective,
    [MNEMO_ATTN_KIND_INFINI] = &mni_attn_infini,
};
_Static_assert(MNEMO_ATTN_KIND_COUNT == 3, "a new attention kind needs a line in registry[]");

const struct mnemo_attn_ops *mnemo_attn_ops_get(int kind)
{
    if (kind < 0 || kind >= MNEMO_ATTN_KIND_COUNT) return NULL;
    return registry[kind];
}

const char *mnemo_attn_kind_name(int kind)
{
    const struct mnemo_attn_ops *ops = mnemo_attn_ops_get(kind);
    return ops ? ops->name : NULL;
}

int mnemo_attn_kind_from_name(const char *name)
{
    if (!name) return -1;
    for (int k = 0; k < MNEMO_ATTN_KIND_COUNT; k++) {
        if (registry[k] && strcmp(registry[k]->name, name) == 0) return k;
    }
    return -1;
}

static const char *const mem_update_names[MNEMO_MEM_COUNT] = {"linear", "delta"};

const char *mnemo_mem_update_name(int rule)
{
    return rule >= 0 && rule < MNEMO_MEM_COUNT ? mem_update_names[rule] : NULL;
}

int mnemo_mem_update_from_name(const char *name)
{
    for (int i = 0; name && i < MNEMO_MEM_COUNT; i++)
        if (!strcmp(name, mem_update_names[i])) return i;
    return -1;
}
