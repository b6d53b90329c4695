/*
 * comm.h -- the data-parallel seam. Training sees its process's place in the group (rank of
 * world), averages the gradients over the group with one allreduce of the contiguous gradient
 * buffer, and agrees with the group on everything that must not differ between processes
 * (errors, stops, the config and data). The loader shards windows by (rank, world).
 *
 * Two builds: comm_single.c (the default: rank 0 of 1, every exchange the identity; started
 * by an MPI launcher it refuses with one line) and comm_mpi.c (-DMNEMO_MPI=ON: MPI's
 * MPI_COMM_WORLD, with errors returned rather than aborting). docs/internals/training.md s. 11.
 */
#ifndef MNI_COMM_H
#define MNI_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "mnemo.h"

struct mni_comm {
    int rank;  /* this process, 0 .. world-1; rank 0 writes logs and checkpoints */
    int world; /* processes training together */
};

/* Joins the group (MPI_Init the first time; MPI_Finalize runs at exit). */
enum mnemo_status mni_comm_init(struct mni_comm *c);
/* buf[0..n) <- the mean of buf over the world's processes, in place. */
enum mnemo_status mni_comm_allreduce_mean(const struct mni_comm *c, float *buf, size_t n);
/* buf[0..n) <- the sum of buf over the world's processes, in place (validation sums). */
enum mnemo_status mni_comm_allreduce_sum(const struct mni_comm *c, double *buf, size_t n);
/* Every process passes its status of the same stage; all return the same: MNEMO_OK if every
 * process had MNEMO_OK, else the status of the lowest rank that failed, whose error message
 * becomes every process's (prefixed "rank r: " on a group of more than one). */
enum mnemo_status mni_comm_agree(const struct mni_comm *c, enum mnemo_status st);
/* 1 on every process if flag is non-zero on any (a stop asked for on one process). */
int mni_comm_any(const struct mni_comm *c, int flag);
/* MNEMO_OK if every process passed the same v, else MNEMO_ERR_ARG naming what differs
 * (`what`: "the training config", ...) on every process. */
enum mnemo_status mni_comm_same(const struct mni_comm *c, uint64_t v, const char *what);
/* Rank 0 receives every process's n bytes at all + rank n (all may be NULL elsewhere). */
enum mnemo_status mni_comm_gather(const struct mni_comm *c, const void *mine, size_t n, void *all);
void mni_comm_free(struct mni_comm *c);

#endif /* MNI_COMM_H */
