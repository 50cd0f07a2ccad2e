/**
 * @file shmds/redis.h
 * @brief A near-cache shared by every process of a host, in front of Redis
 *        (libshmds-redis, pkg-config shmds-redis).
 *
 * Redis is the distributed store; a shmds map in a region of the host is
 * the L1 that all the host's worker processes share. A get returns from the
 * map when a *fresh* entry is there (no network, no syscall); on a miss one
 * process of the host (single-flight, shmds_map_fetch()) sends the GET to
 * Redis and stores the reply, with a TTL, for all of them, while the others
 * that ask for the same key wait for it. A write goes to Redis, then
 * removes the host's entry.
 *
 * Coherence comes from Redis itself: client-side caching ("client
 * tracking", Redis >= 6) in its RESP2 form. Every process's data connection
 * turns tracking on with REDIRECT to the host's *listener* connection,
 * which is subscribed to `__redis__:invalidate`: Redis remembers which keys
 * the host read and sends the listener a message when one of them changes
 * (a write by any client, an expiry, an eviction). The listener removes
 * the key from the map. REDIRECT rather than BCAST: a host is told only
 * about keys it read (BCAST would send it every write under the prefixes,
 * whatever the host caches), and no prefix has to be configured.
 *
 * The listener. Every open handle runs a thread that competes for a robust
 * process-shared mutex in the region, the *lease*; the one that holds it is
 * the host's listener, the others wait on the mutex. If the listener's
 * process dies in any way (SIGKILL included) the kernel hands the mutex to
 * a waiter at once, which becomes the listener; a handle that is closed
 * passes it on the same way. A thread, rather than a call the application
 * makes from its event loop: the invalidation delay then does not depend
 * on how busy the application is, and the takeover needs a waiter blocked
 * on the lease, which only a thread of its own provides.
 *
 * Epochs. Invalidations are lost whenever no listener connection exists
 * (the listener died, Redis restarted, the connection broke): Redis drops
 * messages for a redirect target that is gone. So every entry is stamped
 * with the *epoch* it was filled in, and the epoch changes every time a
 * listener connection is made or lost, and on a flush (FLUSHDB/FLUSHALL:
 * Redis sends a null invalidation). Only entries of the current epoch,
 * filled while a listener was up, are served as fresh: a bump is O(1) and
 * invalidates everything at once, and unlike a flush of the map it keeps
 * the old values for the stale-on-error fallback
 * (SHMDS_REDIS_ALLOW_STALE). Entries of old epochs are replaced as they
 * are read again, or evicted or expired. The epoch is 31 bits in the
 * entries' user flags: an entry is taken for fresh again only after 2^31
 * listener changes during its TTL.
 *
 * The window that remains: between the death of the listener's process and
 * the moment the kernel wakes the next holder of the lease, which bumps the
 * epoch before anything else (microseconds), a get may still serve an
 * entry whose invalidation the dead listener had not processed. This is
 * the same delay as an invalidation in flight. With no other handle open
 * on the host, nothing notices: the next handle to open bumps the epoch.
 * A listener that is alive but not running (stopped, starved) keeps the
 * lease: Redis's messages wait in its socket until it runs again (there
 * is no heartbeat that takes the lease from a live process).
 *
 * A fill races with invalidations: the GET's reply and the invalidation of
 * a write made just after it travel on two connections. The listener
 * counts invalidations per key hash (1024 counters) before it removes the
 * key; a filler reads the key's counter before its GET and stores the
 * reply only if the counter and the epoch did not move, and after storing
 * checks the counter again (removing the entry if it moved). A write
 * through this API does the same, so a process that wrote a key never reads
 * its old value from the host afterwards.
 *
 * Redis down: every Redis call has a timeout (connect and each command;
 * shmds_redis_opts.timeout_ms). A get that needs Redis and cannot reach it
 * returns an error (-ECONNREFUSED, -ETIMEDOUT, ...) or, with
 * SHMDS_REDIS_ALLOW_STALE, the value the host still holds, whatever its
 * epoch or expiry, with SHMDS_REDIS_STALE. While no listener is up, values
 * read from Redis are returned but not cached.
 *
 * Threads: a handle may be used by one thread at a time; its listener
 * thread is internal. Across fork(): the child has no listener thread and
 * must not use its parent's handle (not even close it); open a handle in
 * the child. Pre-fork servers open one per worker, after the fork.
 *
 * Only for Redis without AUTH, on a trusted network (the connection is
 * plain TCP).
 */
#ifndef SHMDS_REDIS_H
#define SHMDS_REDIS_H

#include <shmds.h>

SHMDS_BEGIN_DECLS

/** A process-local handle on a host's near-cache (and its listener thread). */
typedef struct shmds_redis shmds_redis;

/** Positive result of shmds_redis_get(): Redis could not be reached and
 *  SHMDS_REDIS_ALLOW_STALE was given; the value is the one the host held. */
#define SHMDS_REDIS_STALE 3

/** Flags of shmds_redis_get(). */
enum {
    /** When Redis cannot be reached, return a value the host still holds
     *  (SHMDS_REDIS_STALE) instead of the error. */
    SHMDS_REDIS_ALLOW_STALE = 1u << 0
};

/** Longest name of a near-cache (a map of that name and a control block
 *  named name + ":nc" go in the region's directory). */
#define SHMDS_REDIS_NAME_MAX 40

/** Options of shmds_redis_open(); zero-filled means defaults. */
typedef struct shmds_redis_opts {
    const char *host;    /**< Redis address (numeric or name); NULL: 127.0.0.1 */
    int port;            /**< TCP port; 0: 6379 */
    int timeout_ms;      /**< bound on connecting and on every command; 0: 200 */
    int fill_wait_ms;    /**< how long a get waits for another process's fill
                              before asking Redis itself; 0: 2 * timeout_ms */
    uint64_t ttl_ms;     /**< TTL of the host's entries, a bound on staleness
                              should every invalidation fail; 0: 60 000 */
} shmds_redis_opts;

/** What shmds_redis_stats_get() reports. */
typedef struct shmds_redis_stats {
    uint64_t epoch;         /**< the host's current epoch */
    uint64_t listener_pid;  /**< process holding the lease (0: none) */
    uint32_t listener_up;   /**< 1: the listener is connected and subscribed */
    uint32_t is_listener;   /**< 1: this handle's thread is the listener */
    uint64_t invalidations; /**< keys removed on Redis's messages (host) */
    uint64_t flushes;       /**< epoch bumps (host) */
    uint64_t takeovers;     /**< leases taken from a listener that died (host) */
    uint64_t hits;          /**< this handle: gets served from the host */
    uint64_t misses;        /**< this handle: gets that were not */
    uint64_t redis_gets;    /**< this handle: GETs sent to Redis */
    uint64_t stale;         /**< this handle: SHMDS_REDIS_STALE results */
} shmds_redis_stats;

/**
 * Make the host's near-cache in @p r: a map named @p name (with @p mo: a
 * mem_limit with SHMDS_MAP_EVICT bounds it) and a control block (about
 * 8.5 KiB) named @p name + ":nc". Call once per host, before the workers
 * open it. A create killed after the map was made is finished by the next
 * create of the same name (the control block, if it was allocated but not
 * registered, stays allocated).
 * @return 0; -EINVAL bad name (empty, longer than SHMDS_REDIS_NAME_MAX);
 *         -EEXIST both exist; as shmds_map_create() and shmds_alloc().
 */
SHMDS_API int shmds_redis_create(shmds_region *r, const char *name, const shmds_map_opts *mo);

/**
 * Open the near-cache @p name of @p r and start this handle's listener
 * thread. Does not contact Redis (the data connection is made on first
 * use, the listener's by the thread), so it succeeds while Redis is down.
 * @param[in] o NULL for defaults; @c o->host is copied.
 * @param[out] out the handle.
 * @return 0; -ENOENT no such near-cache; SHMDS_ETYPE, SHMDS_ECORRUPT the
 *         control block is not one; -EINVAL bad options; -ENOMEM; -EAGAIN
 *         no thread; as shmds_map_open().
 */
SHMDS_API int shmds_redis_open(shmds_region *r, const char *name, const shmds_redis_opts *o,
                     shmds_redis **out);

/**
 * Stop the listener thread (if it held the lease, another handle of the
 * host takes over), close the connections and free the handle. Waits at
 * most about 100 ms plus one Redis timeout. NULL is ignored.
 */
SHMDS_API void shmds_redis_close(shmds_redis *h);

/**
 * Read @p key: from the host's map when a fresh entry is there, else from
 * Redis (single-flight across the host's processes), then cached.
 * @param[out] buf,cap the value is copied here (nothing when it does not fit).
 * @param[out] vlen its length (may be NULL), also with -ENOBUFS.
 * @param flags 0 or SHMDS_REDIS_ALLOW_STALE.
 * @return 0; SHMDS_REDIS_STALE (see the flag); -ENOENT the key does not
 *         exist in Redis (absence is cached too); -ENOBUFS; -EINVAL klen 0
 *         or NULL key, unknown flag; -ETIMEDOUT Redis did not answer in
 *         time; -ECONNREFUSED, -ECONNRESET, -EHOSTUNREACH ... Redis cannot
 *         be reached; -EPROTO Redis answered an error (a key of another
 *         type: WRONGTYPE); as shmds_map_fetch() (SHMDS_ECORRUPT ...).
 */
SHMDS_API int shmds_redis_get(shmds_redis *h, const void *key, size_t klen, void *buf, size_t cap,
                    size_t *vlen, unsigned flags);

/**
 * SET @p key to @p val in Redis (with an expiry of @p ttl_ms, 0: none),
 * then remove the host's entry. Other hosts learn of it from Redis.
 * @return 0; -EINVAL; the errors of shmds_redis_get() for Redis; an error
 *         of the map's removal (the write is in Redis then).
 */
SHMDS_API int shmds_redis_set(shmds_redis *h, const void *key, size_t klen, const void *val,
                    size_t vlen, uint64_t ttl_ms);

/**
 * DEL @p key in Redis, then remove the host's entry.
 * @return 0 (also when the key did not exist); as shmds_redis_set().
 */
SHMDS_API int shmds_redis_del(shmds_redis *h, const void *key, size_t klen);

/**
 * Wait until some process of the host has a listener connected and
 * subscribed (gets cache only then), at most @p timeout_ms (-1: no bound).
 * Polls every millisecond.
 * @return 0; -ETIMEDOUT.
 */
SHMDS_API int shmds_redis_wait_listener(shmds_redis *h, int timeout_ms);

/** Fill @p out (host-wide figures and this handle's). @return 0. */
SHMDS_API int shmds_redis_stats_get(shmds_redis *h, shmds_redis_stats *out);

/** The map under the near-cache (for inspection: shmds_map_stats_get()). */
SHMDS_API shmds_map *shmds_redis_map(shmds_redis *h);

SHMDS_END_DECLS

#endif
