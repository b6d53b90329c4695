/*
 * comm_single.c -- the single-process side of the data-parallel seam (comm.h): one process,
 * nothing to exchange.
 */
#include "comm.h"
#include "mni.h"

enum mnemo_status mni_comm_init(struct mni_comm *c)
{
    c->rank = 0;
    c->world = 1;
    return MNEMO_OK;
}

enum mnemo_status mni_comm_allreduce_mean(const struct mni_comm *c, float *buf, size_t n)
{
    (void)buf;
    (void)n;
    if (c->world != 1)
        return mni_err(MNEMO_ERR_UNSUPPORTED, "this build of mnemo is single-process (world %d)",
                       c->world);
    return MNEMO_OK;
}

void mni_comm_free(struct mni_comm *c) { c->world = 0; }
