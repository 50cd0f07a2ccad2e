/**
 * @file shmds/queue.h
 * @brief A bounded queue of variable-size messages between processes.
 *
 * A queue is a ring of bytes inside a region. A message is copied into the
 * ring by shmds_queue_send() and copied out by shmds_queue_recv(); nothing
 * the caller holds ever aliases the ring. Messages are received in the
 * order they were sent by each producer (FIFO per producer; as senders
 * commit one at a time, the order is in fact global). Zero-length messages are
 * allowed.
 *
 * Two modes, one API:
 *  - default (many producers, many consumers): senders take one robust
 *    mutex and receivers another (a sender never waits for a receiver, nor
 *    a receiver for a sender); the copy is done under it.
 *  - SHMDS_QUEUE_SPSC (one producer, one consumer, e.g. a byte stream): no
 *    mutex on the data path; the producer publishes the tail index with
 *    release order and the consumer the head index, on separate cache lines.
 *    The first thread that sends claims the producer side and the first
 *    that receives claims the consumer side (its thread id and start time
 *    are stored in the queue); while that thread lives, another thread or
 *    process gets -EBUSY. The claim is dropped by shmds_queue_close(), and
 *    a claim whose thread has died (a killed process not yet reaped counts
 *    as dead, and so does a thread id the system gave to a later thread)
 *    is taken over by the next caller: as in the default mode there is
 *    nothing to repair (see below). A handle's SPSC side must be used by
 *    one thread at a time.
 *    Across fork(): a claim is its thread's, and the child's copy of the
 *    handle does not inherit it. So a child may produce (or consume) on an
 *    inherited handle when the parent never did, or once the parent has
 *    given the side up: shmds_queue_close() on the parent's handle, or the
 *    parent's exit. While the parent's claiming thread lives, the child
 *    gets -EBUSY: one producer and one consumer, whoever they are. The
 *    child's shmds_queue_close() of its copy never drops the parent's
 *    claim.
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
 * wake-up costs a delay, never a hang. A committer makes the wake-up system
 * call only when someone sleeps (a sleeper count in the queue; one a killed
 * sleeper left behind costs spurious wake-ups, never a missed one). Before
 * sleeping, a waiter spins for a few microseconds (adaptive, at most 50)
 * only when the other side last ran on another CPU; on the same CPU it
 * yields at once, so a ping-pong between two processes never burns a CPU
 * the other needs.
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
 * At-least-once receive (SHMDS_QUEUE_ACK, default mode only): besides the
 * plain receive, shmds_queue_recv_lease() hands out a message under a
 * lease held by the calling process (its pid and start time, so a later
 * process that reuses the pid does not inherit it). The message keeps its
 * place in the ring until shmds_queue_ack() removes it. If the holder dies
 * or the lease runs out (@c lease_ms, set at create) before the ack, the
 * message is taken back and delivered again, to any receiver. Order kept:
 * a message taken back is delivered before every message that was never
 * delivered, and messages taken back go out oldest first; so each message
 * is delivered at its original position or earlier, never later. A lease
 * that ran out is taken back at once (every receive looks at the oldest);
 * a dead holder is noticed by a receiver that finds no new message, or
 * too many in flight (it probes the holders), and at the latest when the
 * lease runs out. The plain shmds_queue_recv() on such a queue stays
 * exactly-once: it takes the message and acknowledges it in one commit.
 * At most @c max_in_flight messages are delivered counting from the oldest
 * one not yet acknowledged (acknowledged ones after it count until it is);
 * past that, receivers wait as on an empty queue. The ring space of a
 * message is reused once it and every older message are acknowledged: a
 * lease that is never acknowledged holds the ring until it runs out.
 * Crash consistency: each lease, acknowledgement and take-back is one
 * commit of a small redo log under the receivers' lock; a process killed inside
 * any of them leaves the change done or not done, never half (the next
 * locker replays the log). A receiver killed after its lease committed
 * leaves the message leased by a dead process: it is delivered again.
 *
 * Zero-copy (default and SPSC modes): shmds_queue_reserve() hands out room
 * for a message inside the ring, shmds_queue_commit() publishes it (one
 * store, as a send), shmds_queue_cancel() drops it; shmds_queue_recv_ref()
 * hands out the oldest message in place and shmds_queue_release() removes
 * it. A reserved payload is contiguous (if it would wrap the end of the
 * ring, the rest of the ring is skipped), so a reservation is limited to
 * max_msg and about half the ring. A message that a plain send wrapped
 * around the end is handed out from a copy in the handle (one per lap of
 * the ring at most). In the default mode the senders' lock is held from
 * reserve to commit (other senders wait meanwhile) and the receivers' lock
 * from receive to release (other receivers wait), so keep it short (SPSC
 * holds no lock). Crash:
 * a producer killed between reserve and commit leaves nothing visible and
 * nothing allocated (its bytes are free ring space); a consumer killed
 * between receive and release leaves the message queued: it is received
 * again. A reservation and a message in place belong to the thread that
 * made them: another thread, or a forked child, gets -EINVAL from commit
 * and release. One of each at a time per handle (SPSC: one reservation and
 * one message in place; default mode: one of the two).
 *
 * Broadcast (SHMDS_QUEUE_BROADCAST): a topic. shmds_queue_send() (or
 * reserve/commit) publishes; each process that called
 * shmds_queue_subscribe() receives every message published after that,
 * in order, with shmds_sub_next(), reading without a lock (many
 * subscribers do not slow each other down). The ring is bounded. When it
 * is full, a publisher drops the oldest messages (default), and a
 * subscriber that had not read them is told how many it missed; or, with
 * SHMDS_QUEUE_BLOCK, waits for the slowest live subscriber (a dead one,
 * pid and start time, is dropped, so it cannot block publishers for good).
 * shmds_queue_recv() and friends do not apply (-EINVAL). Across fork(): a
 * subscription belongs to the process that made it; a child subscribes
 * for itself.
 *
 * Statistics (shmds_queue_stats_get()): sent, received, redelivered, in
 * flight, oldest lease's age; exact after crashes (sent and received are
 * kept in the committed index words, the rest in the redo log).
 *
 * Across fork(): a handle is process-local memory and is copied into the
 * child. In the default mode the child may use it like any handle. A lease
 * belongs to the process that took it (the parent): the child may
 * acknowledge it by its id, and the lease ends with the parent, not with
 * the child. In SPSC mode the claims belong to the parent's threads: see
 * above. Reservations, messages in place and subscriptions stay the
 * parent's too (the child gets -EINVAL); the notification descriptor is
 * shared.
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
    SHMDS_QUEUE_SPSC = 1u << 0,
    /** At-least-once receive: leases and acknowledgements (see above).
     *  Not with SHMDS_QUEUE_SPSC. */
    SHMDS_QUEUE_ACK = 1u << 1,
    /** Broadcast: every subscriber sees every message (see below). Not
     *  with SHMDS_QUEUE_SPSC or SHMDS_QUEUE_ACK. */
    SHMDS_QUEUE_BROADCAST = 1u << 2,
    /** With SHMDS_QUEUE_BROADCAST: a full ring makes publishers wait for
     *  the slowest live subscriber, instead of dropping the oldest
     *  messages. */
    SHMDS_QUEUE_BLOCK = 1u << 3
};

/** Options of shmds_queue_create_ex(). Zero fields take the defaults. */
typedef struct shmds_queue_opts {
    size_t capacity_bytes; /**< ring size (required), as shmds_queue_create() */
    size_t max_msg;        /**< largest message (required) */
    unsigned flags;        /**< 0, SHMDS_QUEUE_SPSC or SHMDS_QUEUE_ACK */
    /** SHMDS_QUEUE_ACK: how long a lease lasts before its message is taken
     *  back, in ms (0: SHMDS_QUEUE_LEASE_MS_DEFAULT). A lease starts at its
     *  grant's CLOCK_MONOTONIC time and runs out by the coarse monotonic
     *  clock, which is never ahead of it: never early, and late by what
     *  that clock lags, under a tick (1-10 ms, by the kernel's HZ) on a
     *  busy CPU, and right after an idle CPU wakes up to the time it slept,
     *  until its next tick. */
    uint32_t lease_ms;
    /** SHMDS_QUEUE_ACK: most messages delivered from the oldest one not
     *  yet acknowledged on (see above), rounded up to a power of two (0:
     *  256; at most 65536). Each costs 64 bytes of the queue's block. */
    uint32_t max_in_flight;
    /** SHMDS_QUEUE_BROADCAST: most subscribers at once, rounded up to a
     *  power of two (0: 64; at most 4096). 64 bytes each. */
    uint32_t max_subscribers;
    uint32_t pad_; /**< reserved: zero */
} shmds_queue_opts;

/** Default lease of an SHMDS_QUEUE_ACK queue. */
#define SHMDS_QUEUE_LEASE_MS_DEFAULT 30000

/** What shmds_queue_stats_get() reports: a snapshot taken without the
 *  lock (counts may be a message apart while the queue is busy). */
typedef struct shmds_queue_stats {
    uint64_t sent;        /**< messages committed by sends, ever */
    uint64_t received;    /**< first deliveries (plain receives and leases), ever */
    uint64_t redelivered; /**< deliveries again of a message taken back from a
                               dead or late lease holder, ever */
    uint64_t waiting;     /**< messages never delivered yet */
    uint64_t in_flight;   /**< leased and not yet acknowledged */
    uint64_t requeued;    /**< taken back, waiting to be delivered again */
    uint64_t oldest_in_flight_ns; /**< age of the oldest lease; 0 when none */
    uint64_t recoveries;  /**< dead holders of the queue's locks recovered from */
    uint32_t flags;       /**< the queue's flags */
    uint32_t lease_ms;    /**< SHMDS_QUEUE_ACK: the lease; else 0 */
    uint32_t max_in_flight; /**< SHMDS_QUEUE_ACK: the window; else 0 */
    uint32_t subscribers; /**< SHMDS_QUEUE_BROADCAST: slots in use (a dead
                               subscriber's until a publisher frees it) */
    uint64_t missed;      /**< SHMDS_QUEUE_BROADCAST: messages subscribers
                               lost to a full ring, summed, ever */
} shmds_queue_stats;

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
 * Create a queue with options (at-least-once receive: SHMDS_QUEUE_ACK).
 * As shmds_queue_create() otherwise.
 * @param[in]  r     a writable region.
 * @param[in]  name  directory name (1 to SHMDS_ROOT_NAME_MAX bytes).
 * @param[in]  o     the options (required).
 * @param[out] out   receives the handle.
 * @return as shmds_queue_create(); -EINVAL also for SHMDS_QUEUE_ACK with
 *         SHMDS_QUEUE_SPSC, or max_in_flight above 65536.
 */
SHMDS_API int shmds_queue_create_ex(shmds_region *r, const char *name,
                                    const shmds_queue_opts *o, shmds_queue **out);

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
 *  claim, its reservation (cancelled) and its message in place (left
 *  queued). The queue stays. NULL is ignored. */
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
 * Reserve room for a message of at most @p len bytes in the ring (zero-copy
 * send; default and SPSC modes). Write it at *@p buf, then
 * shmds_queue_commit() or shmds_queue_cancel(). In the default mode the
 * senders' lock stays held until then (receivers go on).
 * @param[in]  q          the queue.
 * @param[in]  len        bytes to reserve (<= max_msg and about half the ring:
 *                        2 * (8 + len rounded up to 8) - 8 <= capacity).
 * @param[out] buf        where to write the message; 8-byte aligned,
 *                        contiguous, valid until the commit or cancel.
 * @param[in]  timeout_ms as shmds_queue_send().
 * @return 0; -EAGAIN, -ETIMEDOUT no room; -EMSGSIZE @p len too large;
 *         -EBUSY this handle already has a reservation (default mode: or a
 *         message in place); SHMDS_ECLOSED; -EINVAL; -EBUSY (SPSC) another
 *         live thread is the producer; SHMDS_ERDONLY; SHMDS_ECORRUPT;
 *         SHMDS_ENOTRECOVERABLE, -ETIMEDOUT (queue lock).
 */
SHMDS_API int shmds_queue_reserve(shmds_queue *q, size_t len, void **buf, int timeout_ms);

/**
 * Publish the reserved message with its final length (at most what was
 * reserved): from now on it is received exactly once (or leased, on an
 * SHMDS_QUEUE_ACK queue), as after shmds_queue_send(). Ends the
 * reservation, also on error.
 * @return 0; SHMDS_ECLOSED the queue was shut down since the reserve (not
 *         sent); -EMSGSIZE @p len above the reservation (the reservation
 *         stays); -EINVAL no reservation of this thread.
 */
SHMDS_API int shmds_queue_commit(shmds_queue *q, size_t len);

/** Drop this thread's reservation (nothing is sent). No reservation: no-op. */
SHMDS_API void shmds_queue_cancel(shmds_queue *q);

/**
 * Receive the oldest message in place (zero-copy; default and SPSC modes,
 * not SHMDS_QUEUE_ACK). *@p msg is valid until shmds_queue_release(), which
 * removes the message; until then it stays queued (a process killed
 * meanwhile leaves it to the next receiver). In the default mode the queue
 * lock stays held until the release.
 * @param[in]  q          the queue.
 * @param[out] msg        the message's bytes (read-only).
 * @param[out] len        its length.
 * @param[in]  timeout_ms as shmds_queue_send().
 * @return 0; -EAGAIN, -ETIMEDOUT empty; SHMDS_ECLOSED shut down and
 *         drained; -EBUSY this handle already holds a message in place
 *         (default mode: or a reservation); -ENOMEM no memory for the copy
 *         of a wrapped message; -EINVAL (also on an SHMDS_QUEUE_ACK queue);
 *         -EBUSY (SPSC) another live thread is the consumer; SHMDS_ERDONLY;
 *         SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE, -ETIMEDOUT (queue lock).
 */
SHMDS_API int shmds_queue_recv_ref(shmds_queue *q, const void **msg, size_t *len,
                                   int timeout_ms);

/**
 * Remove the message of shmds_queue_recv_ref() from the queue.
 * @return 0; -EINVAL no message in place of this thread.
 */
SHMDS_API int shmds_queue_release(shmds_queue *q);

/**
 * Receive the oldest deliverable message under a lease (at-least-once; the
 * queue must be SHMDS_QUEUE_ACK). The message stays in the queue, leased
 * by this process, until shmds_queue_ack() with @p id; if this process dies
 * or the lease runs out first, it is delivered again (see the top of this
 * file for the order). Cost: as shmds_queue_recv(), plus O(in flight) when
 * no new message is there (the holders are probed).
 * @param[in]  q          the queue.
 * @param[out] buf, cap   where to copy it.
 * @param[out] len        the message's length (also on -ENOBUFS).
 * @param[out] id         the lease, for shmds_queue_ack(); never 0.
 * @param[in]  timeout_ms as shmds_queue_send().
 * @return 0; -EAGAIN nothing deliverable and @p timeout_ms was 0 (also
 *         when max_in_flight messages are leased); -ETIMEDOUT; -ENOBUFS
 *         @p cap too small: *len is set, the message stays deliverable;
 *         SHMDS_ECLOSED shut down and nothing left to deliver (leases still
 *         out may be taken back and delivered later); -EINVAL NULL argument,
 *         timeout below -1, or not an SHMDS_QUEUE_ACK queue; SHMDS_ERDONLY;
 *         SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE, -ETIMEDOUT (queue lock).
 */
SHMDS_API int shmds_queue_recv_lease(shmds_queue *q, void *buf, size_t cap, size_t *len,
                                     uint64_t *id, int timeout_ms);

/**
 * Acknowledge a leased message: it is removed for good (never delivered
 * again). Any process may acknowledge a lease by its id. Succeeds also when
 * the lease ran out but the message was not delivered to anyone else yet.
 * Cost: O(1), plus the ring space of the messages this frees.
 * @return 0; -ESTALE the lease is gone: the message was delivered again
 *         (to its new holder the ack belongs now) or already acknowledged;
 *         -EINVAL NULL, an id no lease ever had, or not an SHMDS_QUEUE_ACK
 *         queue; SHMDS_ERDONLY; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE,
 *         -ETIMEDOUT (queue lock).
 */
SHMDS_API int shmds_queue_ack(shmds_queue *q, uint64_t id);

/**
 * The queue's counters (see shmds_queue_stats). Takes no lock: works on a
 * read-only region. Cost: O(max_in_flight) for an SHMDS_QUEUE_ACK queue.
 * @return 0; -EINVAL NULL; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_queue_stats_get(shmds_queue *q, shmds_queue_stats *out);

/** Most queues one shmds_queue_wait_any() call waits on. */
#define SHMDS_QUEUE_WAIT_MAX 64

/**
 * Wait until one of several queues (any modes, any regions) has something
 * for a receiver: a message never delivered, one taken back from a lease
 * (SHMDS_QUEUE_ACK), or the end of the stream (shut down). Then receive
 * from it with a timeout of 0: another receiver may have been quicker
 * (-EAGAIN; wait again). Uses each handle's notification FIFO (see
 * shmds_queue_notify_fd(), opened on the first call and kept), and
 * re-checks the queues at least every 50 ms. Cost: O(n) per wake-up. A
 * lease that merely ran out is not seen here; a receive takes it back.
 * @param[in]  qs         @p n queue handles.
 * @param[in]  n          how many (1 to SHMDS_QUEUE_WAIT_MAX).
 * @param[in]  timeout_ms as shmds_queue_send().
 * @param[out] ready      the index in @p qs of a queue to receive from.
 * @return 0; -EAGAIN nothing and @p timeout_ms was 0; -ETIMEDOUT;
 *         -EINVAL NULL, n 0 or above SHMDS_QUEUE_WAIT_MAX, timeout below
 *         -1; errors of shmds_queue_notify_fd().
 */
SHMDS_API int shmds_queue_wait_any(shmds_queue *const *qs, unsigned n, int timeout_ms,
                                   unsigned *ready);

/**
 * A file descriptor that becomes readable when the queue may have
 * something for a receiver: for an event loop (poll, epoll, libuv, ...).
 *
 * Why a FIFO: it needs no server to hand descriptors around (an eventfd
 * must be passed over a Unix socket by someone who owns it), any process
 * of the region's user can open it by name, and a process that dies just
 * drops its descriptor. The FIFO is /dev/shm/shmds-fifo/DEV-INODE-OFFSET
 * (of the region's file and the queue), with the region's permissions,
 * made on first use and removed by shmds_queue_destroy(); a region removed
 * with its queues still in it leaves theirs behind (empty FIFOs: remove
 * them with rm). While at least one handle has the descriptor,
 * whoever wakes the queue's receivers also writes one byte into it
 * (unless one is pending): a write(2) per burst of sends, nothing
 * otherwise.
 *
 * Use: when the descriptor is readable (or your poll times out: bound it,
 * e.g. 100 ms, because a sender killed in the middle of its notification
 * leaves no byte), call shmds_queue_notify_clear(), then receive with a
 * timeout of 0 until -EAGAIN. The descriptor belongs to the handle: do not
 * close it; shmds_queue_close() does. Across fork() the child shares it
 * with the parent (one file description): let one of them use it.
 * @param[in]  q   the queue.
 * @param[out] fd  the descriptor (non-blocking, close-on-exec).
 * @return 0; -EINVAL NULL; -ENOTSUP the region was attached from memory
 *         (it has no file); -errno of mkfifo(3) or open(2).
 */
SHMDS_API int shmds_queue_notify_fd(shmds_queue *q, int *fd);

/**
 * Empty the notification descriptor and re-arm it: call it before
 * receiving, after the descriptor turned readable.
 * @return 0; -EINVAL NULL, or shmds_queue_notify_fd() was not called on
 *         this handle.
 */
SHMDS_API int shmds_queue_notify_clear(shmds_queue *q);

/** A process-local subscription to a broadcast queue. */
typedef struct shmds_sub shmds_sub;

/**
 * Subscribe to a broadcast queue: from now on this process receives every
 * message published, with shmds_sub_next(). Takes the queue lock briefly.
 * @param[in]  q    a broadcast queue.
 * @param[out] out  the subscription.
 * @return 0; -EINVAL NULL or not an SHMDS_QUEUE_BROADCAST queue; -ENOSPC
 *         max_subscribers live subscribers already; -ENOMEM; SHMDS_ERDONLY;
 *         SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE, -ETIMEDOUT (queue lock).
 */
SHMDS_API int shmds_queue_subscribe(shmds_queue *q, shmds_sub **out);

/**
 * The subscription's next message, copied out. Lock-free: a copy that a
 * publisher overwrote meanwhile (the ring was full) is noticed and counted
 * as missed, never returned.
 * @param[in]  s          the subscription.
 * @param[out] buf, cap   where to copy it.
 * @param[out] len        its length (also on -ENOBUFS).
 * @param[out] missed     on 0: messages dropped before this subscription
 *                        read them, since the previous message it returned
 *                        (may be NULL).
 * @param[in]  timeout_ms as shmds_queue_send().
 * @return 0; -EAGAIN, -ETIMEDOUT nothing new; -ENOBUFS @p cap too small
 *         (the message stays next); SHMDS_ECLOSED shut down and read to the
 *         end; -EINVAL NULL, or a subscription of another process (forked)
 *         or one whose slot was freed; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_sub_next(shmds_sub *s, void *buf, size_t cap, size_t *len, uint64_t *missed,
                             int timeout_ms);

/** Unsubscribe (with SHMDS_QUEUE_BLOCK, publishers stop waiting for it)
 *  and free the handle. Its queue handle must still be open. NULL is
 *  ignored. */
SHMDS_API void shmds_sub_close(shmds_sub *s);

/**
 * Shut the queue down: later sends fail with SHMDS_ECLOSED, receivers get
 * what is queued and then SHMDS_ECLOSED; every sleeper wakes. Idempotent;
 * there is no reopening.
 * @return 0; -EINVAL NULL; SHMDS_ERDONLY; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_queue_shutdown(shmds_queue *q);

/**
 * Messages queued now and never delivered (a snapshot; it may change at
 * once). Leased messages of an SHMDS_QUEUE_ACK queue are not counted (see
 * shmds_queue_stats_get()). Takes no lock,
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
