/*
 * comm_mpi.c -- the data-parallel seam over MPI (comm.h; built with -DMNEMO_MPI=ON).
 *
 * The group is MPI_COMM_WORLD. MPI is initialised the first time a run joins (thread level
 * FUNNELED: only the calling thread talks to MPI, OpenMP threads never do) and finalised at
 * process exit, so a process may train several times. Errors are returned (MPI_ERRORS_RETURN)
 * and turned into mnemo errors naming the call; a process that dies makes the launcher stop
 * the others (Open MPI's mpirun kills the job and names the process), which is what the fault
 * test checks. A process that hangs (a stopped process, a node cut off) is not noticed by the
 * launcher: every exchange (the gradients, the agreements every stage and step ends with, the
 * gather of the lanes) is a non-blocking call waited for with a deadline
 * (MNEMO_MPI_TIMEOUT seconds, default 3600, 0 = none); past it the process says which exchange timed out and calls
 * MPI_Abort, which ends the whole job (a pending exchange cannot be cancelled, and
 * MPI_Finalize would wait for it forever). Checkpoints stay whole: rank 0 writes them outside
 * any exchange. Sums (the gradients) go through MPI_Iallreduce in pieces of at most INT_MAX,
 * with the same deadline.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Seconds an exchange may wait for the other processes (MNEMO_MPI_TIMEOUT; 0: forever). */
static double timeout_s(void)
{
    static double t = -1;
    if (t < 0) {
        const char *v = getenv("MNEMO_MPI_TIMEOUT");
        char *end = NULL;
        t = v ? strtod(v, &end) : 3600.0;
        if (!v || end == v || *end || !(t >= 0)) t = 3600.0;
    }
    return t;
}

/* Waits for req, polling; past the deadline the job ends (see the header). */
static enum mnemo_status wait_req(MPI_Request *req, const char *what)
{
    const double limit = timeout_s(), t0 = MPI_Wtime();
    for (long polls = 0;; polls++) {
        int done = 0, rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, what);
        if (done) return MNEMO_OK;
        /* the first second, polls back to back (each poll moves the exchange on, as a
         * blocking call would); then a wait for a slow process: a millisecond between polls */
        if (polls % 1024 == 1023 && MPI_Wtime() - t0 > 1.0) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
            if (limit > 0 && MPI_Wtime() - t0 > limit) {
                int rank = -1;
                MPI_Comm_rank(MPI_COMM_WORLD, &rank);
                fprintf(stderr, "mnemo: MPI: rank %d waited %.0f s in %s for the other processes "
                        "(MNEMO_MPI_TIMEOUT): one of them died or hangs; ending the job (the "
                        "last checkpoint is whole: continue with --resume)\n", rank, limit, what);
                fflush(stderr);
                MPI_Abort(MPI_COMM_WORLD, 1);
                return mni_err(MNEMO_ERR_IO, "MPI: %s timed out", what);
            }
        }
    }
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

/* MPI_Iallreduce(MPI_IN_PLACE, buf, n, type, MPI_SUM) in pieces of at most INT_MAX, with the
 * deadline. Open MPI's non-blocking allreduce (libnbc) takes about twice the blocking one's
 * time for the gradient (12.9 MB between 2 processes here: 56 against 27 ms, 1-2 % of a step),
 * but a blocking one would wait forever for a process that stopped between the step's
 * agreement and the exchange (seen in CI). */
static enum mnemo_status sum_in_place(void *buf, size_t n, MPI_Datatype type, size_t size)
{
    for (size_t i = 0; i < n;) {
        const int k = n - i > (size_t)INT_MAX ? INT_MAX : (int)(n - i);
        MPI_Request req;
        int rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + i * size, k, type, MPI_SUM,
                                MPI_COMM_WORLD, &req);
        if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Iallreduce");
        enum mnemo_status st = wait_req(&req, "the allreduce of the gradients");
        if (st != MNEMO_OK) return st;
        i += (size_t)k;
    }
    return MNEMO_OK;
}

/* One small allreduce (op over n ints or uint64s), waited for with the deadline. */
static enum mnemo_status small_allreduce(const void *in, void *out, int n, MPI_Datatype type,
                                         MPI_Op op, const char *what)
{
    MPI_Request req;
    int rc = MPI_Iallreduce(in, out, n, type, op, MPI_COMM_WORLD, &req);
    return rc != MPI_SUCCESS ? mpi_fail(rc, "MPI_Iallreduce") : wait_req(&req, what);
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
    enum mnemo_status e0 = small_allreduce(&mine, &first, 1, MPI_INT, MPI_MIN,
                                           "the agreement on a stage's outcome");
    if (e0 != MNEMO_OK) return e0;
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
    MPI_Request req;
    int rc = MPI_Ibcast(&e, (int)sizeof(e), MPI_BYTE, first, MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) return mpi_fail(rc, "MPI_Ibcast");
    if ((e0 = wait_req(&req, "the broadcast of an error")) != MNEMO_OK) return e0;
    e.msg[sizeof(e.msg) - 1] = '\0';
    return mni_err((enum mnemo_status)e.status, "rank %d: %s", first, e.msg);
}

int mni_comm_any(const struct mni_comm *c, int flag)
{
    if (c->world == 1) return flag != 0;
    int mine = flag != 0, any = mine;
    if (small_allreduce(&mine, &any, 1, MPI_INT, MPI_MAX, "the agreement on a stop") != MNEMO_OK)
        return 1; /* cannot ask the group: stop */
    return any;
}

enum mnemo_status mni_comm_same(const struct mni_comm *c, uint64_t v, const char *what)
{
    if (c->world == 1) return MNEMO_OK;
    uint64_t lo, hi;
    enum mnemo_status st = small_allreduce(&v, &lo, 1, MPI_UINT64_T, MPI_MIN, "the config check");
    if (st == MNEMO_OK)
        st = small_allreduce(&v, &hi, 1, MPI_UINT64_T, MPI_MAX, "the config check");
    if (st != MNEMO_OK) return st;
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
    MPI_Request req;
    int rc = MPI_Igather(mine, (int)n, MPI_BYTE, all, (int)n, MPI_BYTE, 0, MPI_COMM_WORLD, &req);
    return rc == MPI_SUCCESS ? wait_req(&req, "the gather of the lanes' states")
                             : mpi_fail(rc, "MPI_Igather");
}

void mni_comm_free(struct mni_comm *c) { c->world = 0; }
