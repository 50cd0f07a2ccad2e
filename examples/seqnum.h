/*
 * The shared struct behind examples/seqnum_init and examples/seqnum_get: a
 * sequence number guarded by a robust shmds_mutex.
 */
#ifndef EXAMPLES_SEQNUM_H
#define EXAMPLES_SEQNUM_H

#include <shmds.h>

#define SEQNUM_ROOT "seqnum"
#define SEQNUM_TYPE (SHMDS_TYPE_USER + 2)

struct seqnum {
    shmds_mutex lock;
    uint64_t value;   /* the sequence number */
    uint64_t pending; /* value being written, or 0 (see seqnum_get.c) */
};

#endif
