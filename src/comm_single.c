/*
 * comm_single.c -- the single-process side of the data-parallel seam (comm.h): one process,
 * nothing to exchange. Started by an MPI launcher (mpirun, srun) with more than one process,
 * each copy would train alone on the same data and race for the same files: refused instead.
 */
#include <stdlib.h>
#include <string.h>

#include "comm.h"
#include "mni.h"

/* The group size an MPI launcher announces to the processes it starts (Open MPI's mpirun,
 * MPICH's and MVAPICH's; srun with --mpi=pmi2 sets PMI_SIZE), or 1. */
static int launcher_world(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 1) return atoi(v);
    }
    return 1;
}

enum mnemo_status mni_comm_init(struct mni_comm *c)
{
    c->rank = 0;
    c->world = 1;
    const int w = launcher_world();
    if (w > 1)
        return mni_err(MNEMO_ERR_UNSUPPORTED, "started as one of %d processes, but this mnemo was "
                       "built without MPI: rebuild with -DMNEMO_MPI=ON (docs/internals/training.md)",
                       w);
    return MNEMO_OK;
}

enum mnemo_status mni_comm_allreduce_mean(const struct mni_comm *c, float *buf, size_t n)
{
    (void)c, (void)buf, (void)n;
    return MNEMO_OK;
}

enum mnemo_status mni_comm_allreduce_sum(const struct mni_comm *c, double *buf, size_t n)
{
    (void)c, (void)buf, (void)n;
    return MNEMO_OK;
}

enum mnemo_status mni_comm_agree(const struct mni_comm *c, enum mnemo_status st)
{
    (void)c;
    return st;
}

int mni_comm_any(const struct mni_comm *c, int flag)
{
    (void)c;
    return flag != 0;
}

enum mnemo_status mni_comm_same(const struct mni_comm *c, uint64_t v, const char *what)
{
    (void)c, (void)v, (void)what;
    return MNEMO_OK;
}

enum mnemo_status mni_comm_gather(const struct mni_comm *c, const void *mine, size_t n, void *all)
{
    (void)c;
    if (n) memcpy(all, mine, n);
    return MNEMO_OK;
}

void mni_comm_free(struct mni_comm *c) { c->world = 0; }
