/*
 * comm_mpi.c -- the data-parallel seam over MPI (comm.h; built with -DMNEMO_MPI=ON).
 *
 * The group is MPI_COMM_WORLD. MPI is initialised the first time a run joins (thread level
 * FUNNELED: only the calling thread talks to MPI, OpenMP threads never do) and finalised at
 * process exit, so a process may train several times. Errors are returned (MPI_ERRORS_RETURN)
 * and turned into mnemo errors naming the call; a process that dies makes the launcher stop
 * the others (Open MPI's mpirun kills the job and names the process), which is what the fault
 * test checks. Sums go through MPI_Allreduce in pieces of at most INT_MAX elements.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpi.h>

#include "comm.h"
#include "mni.h"

static void finalize_at_exit(void)
{
    int fin = 0;
    MPI_Finalized(&fin);
    if (!fin) MPI_Finalize();
}

static enum mnemo_status mpi_fail(int rc, const char *call)
{
    char msg[MPI_MAX_ERROR_STRING];
    int n = 0;
    if (MPI_Error_string(rc, msg, &n) != MPI_SUCCESS) snprintf(msg, sizeof(msg), "code %d", rc);
    return mni_err(MNEMO_ERR_IO, "MPI: %s failed: %s", call, msg);
}

enum mnemo_status mni_comm_init(struct mni_comm *c)
{
    int inited = 0, rc;
    MPI_Initialized(&inited);
    if (!inited) {
        int provided;
        if ((rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided)) != MPI_SUCCESS)
            return mni_err(MNEMO_ERR_IO, "MPI: MPI_Init_thread failed (code %d)", rc);
        atexit(finalize_at_exit);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if ((rc = MPI_Comm_rank(MPI_COMM_WORLD, &c->rank)) != MPI_SUCCESS ||
        (rc = MPI_Comm_size(MPI_COMM_WORLD, &c->world)) != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Comm_rank/size");
    return MNEMO_OK;
}

/* MPI_Allreduce(MPI_IN_PLACE, buf, n, type, MPI_SUM) in pieces of at most INT_MAX. */
static enum mnemo_status sum_in_place(void *buf, size_t n, MPI_Datatype type, size_t size)
{
    for (size_t i = 0; i < n;) {
        const int k = n - i > (size_t)INT_MAX ? INT_MAX : (int)(n - i);
        int rc = MPI_Allreduce(MPI_IN_PLACE, (char *)buf + i * size, k, type, MPI_SUM,
                               MPI_COMM_WORLD);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allreduce");
        i += (size_t)k;
    }
    return MNEMO_OK;
}

enum mnemo_status mni_comm_allreduce_mean(const struct mni_comm *c, float *buf, size_t n)
{
    if (c->world == 1) return MNEMO_OK;
    enum mnemo_status st = sum_in_place(buf, n, MPI_FLOAT, sizeof(float));
    if (st != MNEMO_OK) return st;
    const float inv = 1.0f / (float)c->world;
#pragma omp parallel for schedule(static) if (n > (1u << 16))
    for (size_t i = 0; i < n; i++) buf[i] *= inv;
    return MNEMO_OK;
}

enum mnemo_status mni_comm_allreduce_sum(const struct mni_comm *c, double *buf, size_t n)
{
    return c->world == 1 ? MNEMO_OK : sum_in_place(buf, n, MPI_DOUBLE, sizeof(double));
}

enum mnemo_status mni_comm_agree(const struct mni_comm *c, enum mnemo_status st)
{
    if (c->world == 1) return st;
    int mine = st == MNEMO_OK ? c->world : c->rank, first;
    int rc = MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allreduce");
    if (first == c->world) return MNEMO_OK;
    /* the failing rank's status and message, to everyone */
    struct {
        int status;
        char msg[512];
    } e;
    memset(&e, 0, sizeof(e));
    if (c->rank == first) {
        e.status = (int)st;
        snprintf(e.msg, sizeof(e.msg), "%s", mnemo_last_error());
    }
    if ((rc = MPI_Bcast(&e, (int)sizeof(e), MPI_BYTE, first, MPI_COMM_WORLD)) != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Bcast");
    e.msg[sizeof(e.msg) - 1] = '\0';
    return mni_err((enum mnemo_status)e.status, "rank %d: %s", first, e.msg);
}

int mni_comm_any(const struct mni_comm *c, int flag)
{
    if (c->world == 1) return flag != 0;
    int mine = flag != 0, any = mine;
    if (MPI_Allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS)
        return 1; /* cannot ask the group: stop */
    return any;
}

enum mnemo_status mni_comm_same(const struct mni_comm *c, uint64_t v, const char *what)
{
    if (c->world == 1) return MNEMO_OK;
    uint64_t lo, hi;
    int rc = MPI_Allreduce(&v, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    if (rc == MPI_SUCCESS) rc = MPI_Allreduce(&v, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Allreduce");
    if (lo != hi)
        return mni_err(MNEMO_ERR_ARG, "the %d processes disagree on %s (this one's hash %016llx): "
                       "every process must be started with the same command and see the same "
                       "files", c->world, what, (unsigned long long)v);
    return MNEMO_OK;
}

enum mnemo_status mni_comm_gather(const struct mni_comm *c, const void *mine, size_t n, void *all)
{
    if (c->world == 1) {
        if (n) memcpy(all, mine, n);
        return MNEMO_OK;
    }
    if (n > (size_t)INT_MAX)
        return mni_err(MNEMO_ERR_ARG, "MPI: a gather of %zu bytes per process is too large", n);
    int rc = MPI_Gather(mine, (int)n, MPI_BYTE, all, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD);
    return rc == MPI_SUCCESS ? MNEMO_OK : mpi_fail(rc, "MPI_Gather");
}

void mni_comm_free(struct mni_comm *c) { c->world = 0; }
