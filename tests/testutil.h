/* Helpers shared by the test programs: unique region names that are removed
 * when the test process exits, child processes with bounded waits, and a
 * pipe protocol for "I got this far" messages. */
#ifndef SHMDS_TESTUTIL_H
#define SHMDS_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <shmds.h>

/* A fresh region name "/shmds-t-PID-TAG-N", unlinked when this process exits. */
const char *tu_name(const char *tag);

/* Create a region of `size` bytes under a fresh name, one that never
 * grows (its maximum is its size: the tests of a full heap rely on it);
 * fails the test on error. */
shmds_region *tu_region(const char *tag, size_t size);
/* The same, growable up to `max_size` bytes. */
shmds_region *tu_region_max(const char *tag, size_t size, size_t max_size);

/* The directory's layout (src/internal.h), for tests that damage or kill
 * it: walk the chain of `name`'s bucket in the region image at `base`
 * (no checks: the tests' own images). The entry taken by `name`, or NULL;
 * the first free entry of the chain, or NULL; the i-th name ("c<N>")
 * that falls in the same bucket as `name`, into out (16 bytes). */
struct shmds__root;
struct shmds__root *tu_dir_entry(void *base, const char *name);
struct shmds__root *tu_dir_free_entry(void *base, const char *name);
void tu_dir_collide(const char *name, unsigned i, char out[16]);
/* The heap blocks the directory's chains hold in `r` (read without a lock:
 * call it while nobody changes the directory), and the used blocks of the
 * heap that are not the directory's. */
uint64_t tu_dir_blocks(shmds_region *r);
uint64_t tu_obj_blocks(shmds_region *r);

/* Run fn(arg) in a child process that then _exits with fn's return value. */
pid_t tu_fork(int (*fn)(void *arg), void *arg);

/* Wait for `pid` at most `timeout_ms`; on time-out SIGKILL it and return -1.
 * Otherwise return the raw wait status. */
int tu_wait(pid_t pid, int timeout_ms);

/* Nap 1 ms at a time until the coarse monotonic clock reads at least
 * `t_ns` (CLOCK_MONOTONIC): what a queue lease is timed on, late after an
 * idle CPU wakes until its next tick. 0, or -1 after 10 s. */
int tu_coarse_past(uint64_t t_ns);

/* Kill with SIGKILL and reap. Returns the raw wait status. */
int tu_kill(pid_t pid);

/* A pipe for one-byte messages between a child and its parent. */
typedef struct tu_chan {
    int rd, wr;
} tu_chan;
void tu_chan_open(tu_chan *c);
void tu_chan_close(tu_chan *c);
void tu_send(tu_chan *c, const void *buf, size_t len);
/* In a child: send the byte `tag`, then stay (paused) until killed: a
 * process stopped while it holds something (a lock, a reservation). */
_Noreturn void tu_send_and_stay(tu_chan *c, char tag);
/* Read exactly len bytes or fail (0 on EOF before anything, 1 on success). */
int tu_recv(tu_chan *c, void *buf, size_t len);

/* Anonymous shared memory that survives fork (for lock tests). */
void *tu_shared_alloc(size_t len);

/* Directory of the test programs (for exec'ing helpers). */
const char *tu_builddir(void);

/* Sizes near the ends of size_t and of 32 bits (SIZE_MAX, SIZE_MAX - 15,
 * - 47, - 63, SIZE_MAX / 2, SIZE_MAX / 2 + 1, UINT32_MAX, UINT32_MAX + 1):
 * what a caller's size arithmetic gone wrong hands the library. */
#define TU_HUGE_SIZES 8
extern const size_t tu_huge_sizes[TU_HUGE_SIZES];

#endif
