/*
 * comm.h -- the data-parallel seam. Training sees its process's place in the group (rank of
 * world) and averages the gradients over the group with one allreduce of the contiguous gradient
 * buffer; the loader shards windows by (rank, world). This build is single-process
 * (comm_single.c: rank 0 of 1, the allreduce is the identity). An MPI build provides the same
 * three functions with MPI_Init / MPI_Allreduce (docs/internals/training.md).
 */
#ifndef MNI_COMM_H
#define MNI_COMM_H

#include <stddef.h>

#include "mnemo.h"

struct mni_comm {
    int rank;  /* this process, 0 .. world-1; rank 0 writes logs and checkpoints */
    int world; /* processes training together */
};

enum mnemo_status mni_comm_init(struct mni_comm *c);
/* buf[0..n) <- the mean of buf over the world's processes, in place. */
enum mnemo_status mni_comm_allreduce_mean(const struct mni_comm *c, float *buf, size_t n);
void mni_comm_free(struct mni_comm *c);

#endif /* MNI_COMM_H */
