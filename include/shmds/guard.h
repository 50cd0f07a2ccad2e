/**
 * @file shmds/guard.h
 * @brief Read guards: lock-free readers that may hold pointers into a
 *        region while writers replace and delete what they point at.
 *
 * Usage:
 * @code
 *   shmds_guard *g;
 *   if (shmds_guard_enter(r, &g) == 0) {           // cheap; nestable
 *       shmds_map_get_ref(m, g, key, klen, &v, &n); // v valid until...
 *       use(v, n);
 *       shmds_guard_leave(g);                       // ...here
 *   }
 * @endcode
 *
 * How it works (epoch-based reclamation). Every thread that enters a guard
 * owns one *reader slot* (a cache line of the region's reader table) and
 * entering stores the region's current epoch in it; leaving clears it.
 * A writer that unlinks a block (a replaced or deleted map entry, a bucket
 * table after a rehash) does not free it: it *retires* it, stamped with the
 * epoch, and the block is freed only once every reader slot that was
 * occupied at that epoch has been left. So whatever a reader found while
 * inside its guard stays allocated, unchanged, until it leaves.
 *
 * Reader slots live in a companion shared-memory object,
 * `/shmds-rd-<region name>` (made with the region, removed by
 * shmds_region_unlink()), whose mode grants write access to whoever may
 * read the region: read-only attaches (SHMDS_RDONLY) hold guards too.
 * A slot whose process (or thread) has died is cleared by the next writer
 * that scans the table (pid liveness, with the process's start time against
 * pid reuse). A reader that stays inside a guard only delays frees (memory
 * grows, nothing waits); `shmds info` names it. When the region is full
 * as well, writers keep working while the region's 254 retire records
 * last; past that a map stripe's writes return -ENOMEM (nothing changed)
 * until the reader leaves or dies.
 *
 * Threads: a guard belongs to the thread that entered it; each thread of a
 * process has its own slot. Guards nest: entering again on the same thread
 * and region returns the same guard and counts; only the outermost leave
 * ends it. Leave every guard before closing the region.
 *
 * Across fork(): a child does not inherit its parent's guards (nor their
 * protection): it enters its own, which takes a slot of its own.
 */
#ifndef SHMDS_GUARD_H
#define SHMDS_GUARD_H

#include <shmds/common.h>
#include <shmds/region.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A read guard: process-local, owned by the thread that entered it. */
typedef struct shmds_guard shmds_guard;

/** Most reader slots a region's reader table holds (threads inside guards
 *  at once, across all processes). */
#define SHMDS_READERS_MAX 1024

/**
 * Enter a read guard on region @p r. While inside it, blocks that the
 * calling thread reaches through the region's structures are not freed nor
 * reused, even when writers unlink them; pointers returned by zero-copy
 * calls (shmds_map_get_ref()) stay valid until the guard is left.
 *
 * Cost: the first call of a thread claims a reader slot (a compare-and-swap
 * on the reader table, and a shm mapping already made at region open);
 * later ones are a load of the region's epoch, a store to the thread's own
 * slot and a memory fence. Nested calls only count.
 *
 * @param[in]  r  the region (read-only attaches included)
 * @param[out] g  the guard, to pass to shmds_guard_leave()
 * @return 0; -EINVAL for a NULL argument; -EAGAIN when all
 *         SHMDS_READERS_MAX reader slots are held by live threads;
 *         SHMDS_ECORRUPT when the reader table is damaged, missing (it
 *         was removed by hand) or belongs to another region; -EACCES when
 *         this process may not write it; -ENOMEM.
 */
SHMDS_API int shmds_guard_enter(shmds_region *r, shmds_guard **g);

/**
 * Leave a guard entered by shmds_guard_enter() (the innermost one of a
 * nest: only the outermost leave ends the protection). Pointers obtained
 * inside the guard must not be used after its outermost leave.
 *
 * @param[in] g  the guard; NULL is ignored
 */
SHMDS_API void shmds_guard_leave(shmds_guard *g);

/** What shmds_guard_info_get() tells about a region's readers. */
typedef struct shmds_guard_info {
    uint64_t epoch;        /**< the region's epoch now (bumped by each reclamation) */
    uint64_t retired;      /**< blocks retired and not freed yet */
    uint32_t slots;        /**< reader slots held (threads that entered a guard) */
    uint32_t inside;       /**< of them, inside a guard now */
    int64_t oldest_pid;    /**< the reader inside a guard for the longest (0: none) */
    int64_t oldest_tid;    /**< its thread */
    uint64_t oldest_epoch; /**< the epoch it entered at: epoch - oldest_epoch
                                reclamations have waited for it */
    int oldest_alive;      /**< 1: its process lives (a stuck reader, which
                                delays frees); 0: dead (cleared by the next
                                reclamation) */
} shmds_guard_info;

/**
 * Describe region @p r's readers and retired blocks (for operators:
 * `shmds info` shows it). Reads the reader table without a lock; the
 * numbers are a snapshot.
 *
 * @param[in]  r    the region
 * @param[out] out  filled in
 * @return 0; -EINVAL for a NULL argument; the errors of
 *         shmds_guard_enter() for a missing or damaged reader table;
 *         SHMDS_ECORRUPT for a damaged retire list.
 */
SHMDS_API int shmds_guard_info_get(shmds_region *r, shmds_guard_info *out);

#ifdef __cplusplus
}
#endif

#endif
