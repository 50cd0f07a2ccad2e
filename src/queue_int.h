/* Queue internals used outside queue.c (by shmds_region_check). */
#ifndef SHMDS_QUEUE_INT_H
#define SHMDS_QUEUE_INT_H

#include "internal.h"

/* Check the queue whose header is at `off` (a directory entry of type
 * SHMDS_TYPE_QUEUE): as shmds_queue_check(), plus SHMDS_ECORRUPT for a
 * header that does not validate. */
int shmds__queue_check_at(shmds_region *r, shmds_off_t off);

/* Mark the queue whose header is at `off` (found through a pending
 * directory entry: all zeros or as written) destroyed; its ring is in the
 * header's block, which the caller frees through the entry. Idempotent. */
int shmds__queue_reclaim_at(shmds_region *r, shmds_off_t off);

#endif
