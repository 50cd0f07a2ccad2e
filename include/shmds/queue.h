/**
 * @file shmds/queue.h
 * @brief A bounded queue of variable-size messages between processes.
 *
 * A queue is a ring of bytes inside a region. A message is copied into the
 * ring by shmds_queue_send() and copied out by shmds_queue_recv(); nothing
 * the caller holds ever aliases the ring. Messages are received in the
 * order they were sent by each producer (FIFO per producer; with one lock
 * per queue, the order is in fact global). Zero-length messages are
 * allowed.
 *
 * Two modes, one API:
 *  - default (many producers, many consumers): the ring's indices live
 *    under one robust mutex; the copy is done under it.
 *  - SHMDS_QUEUE_SPSC (one producer, one consumer, e.g. a byte stream): no
 *    mutex on the data path; the producer publishes the tail index with
 *    release order and the consumer the head index, on separate cache lines.
 *    The first thread that sends claims the producer side and the first
 *    that receives claims the consumer side (its thread id is stored in the
 *    queue); while that thread lives, another thread or process gets
 *    -EBUSY. The claim is dropped by shmds_queue_close(), and a claim whose
 *    thread has died is taken over by the next caller: as in the default
 *    mode there is nothing to repair (see below). A handle's SPSC side must
 *    be used by one thread at a time. A killed process counts as alive
 *    until its parent has reaped it (the kernel still knows its id), and
 *    a dead claimer whose thread id the system has since given to another
 *    thread looks alive (-EBUSY) until that thread ends.
 *
 * Across fork(): a child may use a queue handle its parent opened. In the
 * default mode it behaves as the parent's. In SPSC mode a side claimed by
 * the parent stays the parent thread's: the child's send (or receive) on
 * the inherited handle claims anew and gets -EBUSY while that thread
 * lives, and the child's shmds_queue_close() leaves the parent's claim
 * alone. See shmds/region.h.
 *
 * Blocking: a sender waits while the ring is full, a receiver while it is
 * empty, each for at most @c timeout_ms (-1: without bound, 0: never).
 * Process-shared semaphores serve as doorbells only; every sleep is a
 * bounded slice after which the waiter re-checks the indices, so a lost
 * wake-up costs a delay, never a hang.
 *
 * Crash consistency: a send is committed by one atomic store of the tail
 * word (byte index, message count and the shut-down bit packed in 64 bits)
 * after the bytes are copied; a receive by one store of the head word after
 * the bytes are copied out. A process killed anywhere leaves the ring as it
 * was at its last commit: every send that returned 0 is received exactly
 * once, unless the receiving call was itself the one killed after its
 * commit (that message is gone with it). A dead lock holder needs no
 * repair: its uncommitted bytes lie outside [head, tail) and are simply
 * overwritten later.
 *
 * Shut-down: shmds_queue_shutdown() makes every later send fail with
 * SHMDS_ECLOSED; receivers drain what is left, then get SHMDS_ECLOSED; all
 * sleepers are woken at once.
 *
 * Limits: 8 <= capacity <= SHMDS_QUEUE_CAPACITY_MAX; 1 <= max_msg <=
 * capacity - 8 (each message takes 8 bytes of header plus its length
 * rounded up to 8).
 */
#ifndef SHMDS_QUEUE_H
#define SHMDS_QUEUE_H

#include <shmds/common.h>
#include <shmds/region.h>

SHMDS_BEGIN_DECLS

/** A process-local handle on a queue inside a region. */
typedef struct shmds_queue shmds_queue;

/** Flags for shmds_queue_create(). */
enum {
    /** One producer and one consumer: lock-free data path (see above). */
    SHMDS_QUEUE_SPSC = 1u << 0
};

/** Largest ring, in bytes. */
#define SHMDS_QUEUE_CAPACITY_MAX ((size_t)1 << 33)
/** Bytes of ring each message takes besides its payload (which is padded
 *  to a multiple of 8). */
#define SHMDS_QUEUE_MSG_OVERHEAD 8

/**
 * Ring bytes needed so that @p msgs messages of @p len bytes fit at once.
 * Use it to size @c capacity_bytes.
 */
static inline size_t shmds_queue_bytes_for(size_t msgs, size_t len)
{
    return msgs * (SHMDS_QUEUE_MSG_OVERHEAD + ((len + 7) & ~(size_t)7));
}

/**
 * Create a queue, register it under @p name and open it.
 *
 * Allocates one block (header plus ring) from the region's heap. The name
 * becomes visible last, when the queue is complete, so another process
 * never opens half a queue. Until then it is held by a pending directory
 * entry that reaches the block: a process killed part way leaks nothing,
 * shmds_region_reclaim() (run by shmds_region_check()) frees it; a create
 * of the same name finishes a dead creator's queue of that name itself (a
 * pending name of another type stays -EEXIST until a reclaim).
 *
 * @param r              a writable region.
 * @param name           directory name (1 to SHMDS_ROOT_NAME_MAX bytes).
 * @param capacity_bytes ring size, rounded up to a multiple of 8.
 * @param max_msg        largest message a send accepts, in bytes.
 * @param flags          0 or SHMDS_QUEUE_SPSC.
 * @param out            receives the handle.
 * @return 0; -EINVAL (NULL argument, bad name, unknown flag, capacity or
 *         max_msg out of range: above SHMDS_QUEUE_CAPACITY_MAX, or any
 *         size up to SIZE_MAX that would overflow); -EEXIST the name is taken; -ENOSPC the
 *         directory is full; -ENOMEM the heap has no room; SHMDS_ERDONLY;
 *         SHMDS_ECORRUPT; -ETIMEDOUT; SHMDS_ENOTRECOVERABLE (allocator or
 *         directory lock).
 */
SHMDS_API int shmds_queue_create(shmds_region *r, const char *name, size_t capacity_bytes,
                                 size_t max_msg, unsigned flags, shmds_queue **out);

/**
 * Open a queue by name. Validates its header (magic, checksum, geometry)
 * before trusting it.
 * @return 0; -EINVAL NULL argument or bad name; -ENOENT no such name;
 *         SHMDS_ETYPE the name is not a queue; SHMDS_ECORRUPT the header
 *         is damaged; -ENOMEM no memory for the handle; -ETIMEDOUT (see
 *         shmds_root_get()).
 */
SHMDS_API int shmds_queue_open(shmds_region *r, const char *name, shmds_queue **out);

/** Drop the handle, and with it this thread's SPSC producer or consumer
 *  claim. The queue stays. NULL is ignored. */
SHMDS_API void shmds_queue_close(shmds_queue *q);

/**
 * Remove the queue from the region: its name goes pending (lookups no
 * longer see it), its memory is freed, then the name; closes the handle
 * (also on error). Other processes must have stopped using it: their
 * handles then point at freed memory. A process killed part way leaks
 * nothing: shmds_region_reclaim() finishes the destroy.
 * @return 0; -EINVAL NULL; SHMDS_ERDONLY; -ENOENT the name was already
 *         removed; -ETIMEDOUT; SHMDS_ENOTRECOVERABLE; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_queue_destroy(shmds_queue *q);

/**
 * Copy a message into the queue.
 * @param[in] q      the queue.
 * @param msg        @p len bytes (may be NULL when @p len is 0).
 * @param len        the message's length, at most the queue's max_msg.
 * @param timeout_ms -1 wait while full without bound, 0 never wait, >0 at
 *                   most that long. The time spent waiting for the queue's
 *                   lock counts: 0 never waits for it either, and a positive
 *                   timeout bounds that wait too (-1 waits for the lock at
 *                   most the region's lock bound).
 * @return 0 committed: it will be received exactly once;
 *         -EAGAIN full, or the queue's lock held by another thread, and
 *         @p timeout_ms was 0; -ETIMEDOUT still full (or the lock still
 *         held) at the deadline; -EMSGSIZE @p len > max_msg; SHMDS_ECLOSED the
 *         queue was shut down; -EINVAL NULL argument or timeout below -1;
 *         -EBUSY (SPSC) another live thread is the producer;
 *         SHMDS_ERDONLY; SHMDS_ECORRUPT the indices, the lock's or the
 *         doorbell semaphores' words are damaged (a message committed
 *         before the damage was seen stays committed: the damaged
 *         doorbell is then not rung);
 *         SHMDS_ENOTRECOVERABLE, -ETIMEDOUT (queue lock).
 */
SHMDS_API int shmds_queue_send(shmds_queue *q, const void *msg, size_t len, int timeout_ms);

/**
 * Take the oldest message out of the queue.
 * @param[in] q      the queue.
 * @param buf, cap   where to copy it.
 * @param len        receives the message's length (also on -ENOBUFS).
 * @param timeout_ms as shmds_queue_send().
 * @return 0; -EAGAIN empty and @p timeout_ms was 0; -ETIMEDOUT still
 *         empty at the deadline; -ENOBUFS @p cap is smaller than the
 *         message: *len is set and the message stays queued; SHMDS_ECLOSED
 *         shut down and drained (end of stream); -EINVAL NULL argument or
 *         timeout below -1; -EBUSY (SPSC) another live thread is the
 *         consumer; SHMDS_ERDONLY; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE,
 *         -ETIMEDOUT (queue lock).
 */
SHMDS_API int shmds_queue_recv(shmds_queue *q, void *buf, size_t cap, size_t *len, int timeout_ms);

/**
 * Shut the queue down: later sends fail with SHMDS_ECLOSED, receivers get
 * what is queued and then SHMDS_ECLOSED; every sleeper wakes. Idempotent;
 * there is no reopening.
 * @return 0; -EINVAL NULL; SHMDS_ERDONLY; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_queue_shutdown(shmds_queue *q);

/**
 * Messages queued now (a snapshot; it may change at once). Takes no lock,
 * so it works in a read-only region.
 * @return 0; -EINVAL NULL; SHMDS_ECORRUPT; -EAGAIN receivers kept moving
 *         the head during every one of many attempts (try again).
 */
SHMDS_API int shmds_queue_len(shmds_queue *q, uint64_t *msgs);

/**
 * Verify the queue: header and checksum, its block in the heap, the
 * indices, and every queued message's framing (walked from head to tail),
 * against the message count. The default mode walks under the queue lock.
 * In SPSC mode it walks without a lock and keeps the result only if the
 * consumer did not move meanwhile; on a queue too busy for that (every one
 * of many attempts overlapped a receive) it says so with -EAGAIN rather
 * than report a queue it did not walk as healthy. Works read-only (without
 * taking the lock). Cost: O(queued messages).
 * @return 0 healthy; SHMDS_ECORRUPT; -EINVAL NULL; -EAGAIN no stable view
 *         to walk (try again); -ETIMEDOUT, SHMDS_ENOTRECOVERABLE (queue
 *         lock).
 */
SHMDS_API int shmds_queue_check(shmds_queue *q);

SHMDS_END_DECLS

#endif
