/* List internals used outside list.c (by shmds_region_reclaim). */
#ifndef SHMDS_LIST_INT_H
#define SHMDS_LIST_INT_H

#include "internal.h"

/* Free every node of the list whose header is at `off` (found through a
 * pending directory entry: all zeros or as written) and clear its magic.
 * The header block itself stays: the caller frees it through the entry.
 * Idempotent and killable. */
int shmds__list_reclaim_at(shmds_region *r, shmds_off_t off);

#endif
