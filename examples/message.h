/*
 * The shared struct behind examples/write and examples/read: a message board
 * that a killed writer can never leave half-written.
 *
 * Two text slots and a generation counter. The text at generation g is in
 * slot g % 2. A writer (under the lock) fills the *other* slot and then bumps
 * the generation with one store: that store is the commit point. Killed
 * before it, the old message still stands; after it, the new one does.
 * Readers take no lock (so `read` works on a read-only mapping): they copy
 * the current slot and keep the copy only if the generation did not move.
 */
#ifndef EXAMPLES_MESSAGE_H
#define EXAMPLES_MESSAGE_H

#include <shmds.h>

#define MESSAGE_ROOT "message"
#define MESSAGE_TYPE (SHMDS_TYPE_USER + 1)
#define MESSAGE_MAX 4000

struct message_board {
    shmds_mutex lock;   /* serialises writers */
    uint64_t gen;       /* text of generation g is in text[g % 2] */
    uint64_t len[2];
    char text[2][MESSAGE_MAX];
};

#endif
