/**
 * @file shmds/map.h
 * @brief A shared hash map: byte keys to byte values, for caches, lookup
 *        tables and shared counters.
 *
 * Keys and values are byte strings of any length, copied in and out (a
 * value returned never aliases shared memory another process may free).
 * Entries live in the region's heap and are chained from bucket tables by
 * offsets. Each bucket word also carries a 16-bit filter of the hashes
 * chained from it, so a lookup of an absent key, and the search an insert
 * of a new key makes, usually read the bucket word and no entry. The
 * buckets are split into *stripes*, each guarded by its own robust mutex,
 * so processes that touch keys of different stripes never wait for each
 * other. They still share cache lines: every write takes its stripe's
 * lock and fills a block from its stripe's spares, which the other
 * process touched last as often as not, so writers in several processes
 * inserting into one map spend much of their time moving those lines
 * between CPUs (two processes insert at 0.9-1.3x one on a 2-vCPU
 * machine). Writers whose keys can be partitioned scale better with a map
 * each in the same region (README, "Which structure for which job").
 *
 * Growth is incremental: when the map gets full, a table twice as large is
 * allocated and every write moves a couple of buckets of its stripe into
 * it; lookups look in whichever table holds the key. No call ever rehashes
 * the whole map.
 *
 * Entries may carry a time to live; an expired entry is a miss and its
 * memory is reclaimed by later writes to its stripe (every write sweeps a
 * bucket), by shmds_map_reap() and by eviction. A map may have a memory
 * budget: without SHMDS_MAP_EVICT a write that would exceed it fails with
 * -ENOMEM; with it, entries are evicted by CLOCK (second chance).
 *
 * Crash safety: every write is crash-consistent. A process killed at any
 * instruction inside a call leaves the map in a state the next process to
 * lock the stripe repairs (from a small intent log, without scanning the
 * map): a call that returned success is visible afterwards; a call that was
 * interrupted took effect entirely or not at all; no memory leaks.
 *
 * Concurrency of reads: every get (shmds_map_get(), shmds_map_get_ex(),
 * shmds_map_ttl(), shmds_map_get_ref()) takes no lock and never waits for
 * a writer, on every map (SHMDS_MAP_EVICT included: a hit sets the entry's
 * CLOCK bit without a lock) and on regions opened with SHMDS_RDONLY. Gets
 * run inside a read guard (shmds/guard.h; the copying ones enter and leave
 * one themselves): writers retire the entries they replace or delete
 * instead of freeing them, so a reader never sees a block reused under it,
 * and a writer killed at any point never makes a reader wait. A get returns
 * a value that was current at some moment during the call. On a read-only
 * attach hits of an evicting map do not mark entries used (nothing there
 * may write the region).
 *
 * Cache semantics. Every entry carries a *version* (never 0 for a present
 * key) that changes on every write of the key (put, add, fill); a get can
 * return it (shmds_map_get_ex()) and a put can be made conditional on it
 * (compare-and-set: shmds_put_opts.if_version, SHMDS_EVERSION on a
 * mismatch). Versions grow per stripe and are never reused for a key while
 * the map exists. Entries also carry 32 user flags, stored with the value.
 * TTLs are in milliseconds (shmds_map_put_ex(), shmds_map_expire()).
 * Single-flight fills (shmds_map_fetch()): on a miss exactly one caller,
 * across all processes, holds the key's *fill lease* and computes the value
 * while the others wait (bounded) for it; a lease whose holder died passes
 * to one waiter. Stale reads (SHMDS_GET_STALE) return an expired entry,
 * marked stale, until it is reclaimed, and let one caller refresh it while
 * the others are served the stale value.
 *
 * Budget. mem_limit bounds the bytes of entries (each entry: its key, its
 * value and a 64-byte header, rounded up to 16). The bucket tables and the
 * map's header are outside the budget: 8 bytes per bucket, with between 1
 * and 2 buckets per entry (2 per expected entry at create), up to 3 times
 * that while the table doubles (both tables exist), so at most 48 bytes
 * per entry; and about 600 bytes per stripe. SHMDS_MAP_EVICT needs a
 * mem_limit (see shmds_map_create()), so an evicting map never grows until
 * it holds the whole heap the region's other objects share.
 *
 * Handles are process-local; open the map in every process that uses it.
 * A handle may be used by one thread at a time.
 *
 * Across fork(): a child may go on using a map handle its parent opened,
 * at the same time as the parent (each process has its own copy of the
 * handle; the child's first get claims a statistics line of its own, so
 * the counts of both add up). A shmds_fill inherited by a child
 * may be ended in either process, once: the lease stays recorded under
 * the pid that got it (if that process dies first, a waiter takes the
 * lease over, and the late shmds_map_fill_done() still stores its value).
 * A child that does not use the map need do nothing.
 */
#ifndef SHMDS_MAP_H
#define SHMDS_MAP_H

#include <shmds/common.h>
#include <shmds/region.h>
#include <shmds/guard.h>

SHMDS_BEGIN_DECLS

/** A process-local handle on a shared hash map. */
typedef struct shmds_map shmds_map;

/** Map flags (shmds_map_opts.flags). */
enum {
    /** Evict entries (CLOCK) instead of failing with -ENOMEM when the
     *  budget (mem_limit, required) is reached; also when the region's heap
     *  itself is full. */
    SHMDS_MAP_EVICT = 1u << 0
};

/** Flags of shmds_map_put() and shmds_put_opts.flags. */
enum {
    /** Store only if the key is absent; otherwise -EEXIST. */
    SHMDS_PUT_NX = 1u << 0,
    /** Store only if the key is present; otherwise -ENOENT. */
    SHMDS_PUT_XX = 1u << 1,
    /** Never evict to make room for this write (SHMDS_MAP_EVICT maps):
     *  fail with -ENOMEM where an evicting put would evict. */
    SHMDS_PUT_NOEVICT = 1u << 2
};

/** Flags of shmds_map_get_ex() and shmds_map_fetch(). */
enum {
    /** Return an expired entry that is not reclaimed yet, with
     *  shmds_map_entry_info.stale set, instead of -ENOENT. */
    SHMDS_GET_STALE = 1u << 0
};

/** shmds_put_opts.ttl_ms and friends: the entry never expires (even in a
 *  map with a default TTL). */
#define SHMDS_TTL_NONE UINT64_MAX
/** Longest TTL in milliseconds (about 292 million years). */
#define SHMDS_TTL_MAX_MS (UINT64_C(1) << 53)

/** Most lock stripes a map may have. */
#define SHMDS_MAP_STRIPES_MAX 1024u
/** Lock stripes when shmds_map_opts.stripes is 0. */
#define SHMDS_MAP_STRIPES_DEFAULT 64u

/** Options for shmds_map_create(); zero-filled means defaults. */
typedef struct shmds_map_opts {
    uint64_t capacity;      /**< expected entries: sizes the first table at two
                                 8-byte buckets per entry, rounded up to a power
                                 of two, so chains stay short (0: small) */
    uint64_t mem_limit;     /**< bytes the entries may use (keys, values and a
                                 64-byte header each, rounded up to 16); 0 = no
                                 budget. The bucket tables are outside it (see
                                 the file comment for how much they take), and
                                 so are the up to 4 spare entry blocks each
                                 stripe keeps for its next inserts. */
    uint32_t stripes;       /**< lock stripes, rounded up to a power of two,
                                 at most SHMDS_MAP_STRIPES_MAX; 0 = default */
    uint32_t default_ttl_s; /**< time to live of entries put with ttl 0, in
                                 seconds; 0 = none (or default_ttl_ms) */
    uint32_t flags;         /**< 0 or SHMDS_MAP_EVICT */
    uint64_t default_ttl_ms;/**< the same in milliseconds, at most
                                 SHMDS_TTL_MAX_MS; 0 = none (or default_ttl_s);
                                 give one of the two */
} shmds_map_opts;

/** What shmds_map_get_ex() and shmds_map_fetch() tell about an entry. */
typedef struct shmds_map_entry_info {
    uint64_t version;    /**< changes on every write of the key; never 0 */
    int64_t ttl_ms;      /**< time left, rounded down; -1: no expiry; 0 with
                              @c stale: expired */
    uint32_t user_flags; /**< as stored with the value */
    uint32_t stale;      /**< 1: expired, returned because SHMDS_GET_STALE was
                              asked */
} shmds_map_entry_info;

/** Options of shmds_map_put_ex() and shmds_map_fill_done(); zero-filled
 *  means a plain put with the map's default TTL. */
typedef struct shmds_put_opts {
    uint64_t ttl_ms;      /**< 0: the map's default; SHMDS_TTL_NONE: never
                               expires; else at most SHMDS_TTL_MAX_MS */
    uint64_t if_version;  /**< 0: unconditional; else compare-and-set: store
                               only if the key is present with this version */
    uint32_t user_flags;  /**< stored with the value */
    uint32_t flags;       /**< SHMDS_PUT_NX, SHMDS_PUT_XX (not both),
                               SHMDS_PUT_NOEVICT */
} shmds_put_opts;

/** A single-flight fill lease held by this process (shmds_map_fetch()). */
typedef struct shmds_fill shmds_fill;

/** What shmds_map_stats_get() reports. The counters count from the map's
 *  creation or the last shmds_map_stats_reset(). */
typedef struct shmds_map_stats {
    uint64_t entries;     /**< entries stored (expired ones not yet reclaimed
                               included: shmds_map_reap() reclaims them) */
    uint64_t buckets;     /**< buckets of the table(s); both while growing */
    uint64_t hits;        /**< gets and fetches that found the key (a stale
                               value returned counts as a hit). A read-only
                               handle counts its own in the handle: they are
                               in the figures that handle reports only */
    uint64_t misses;      /**< gets and fetches that did not (idem) */
    uint64_t inserts;     /**< puts and adds that created a key */
    uint64_t deletes;     /**< successful shmds_map_del() calls */
    uint64_t evictions;   /**< entries evicted for the budget */
    uint64_t expirations; /**< expired entries reclaimed */
    uint64_t recoveries;  /**< dead lock holders whose change was repaired */
    uint64_t mem_used;    /**< bytes of entries (as counted against mem_limit)
                               plus bytes of bucket tables */
    uint64_t fills;       /**< fill leases granted by shmds_map_fetch() */
    uint64_t takeovers;   /**< of those, leases taken over from a holder that
                               died */
    uint64_t mem_limit;   /**< the budget (0: none) */
    uint64_t default_ttl_ms; /**< the default TTL (0: none) */
    uint32_t flags;       /**< the map's flags (SHMDS_MAP_EVICT) */
    uint32_t stripes;     /**< lock stripes */
} shmds_map_stats;

/**
 * Create a map and register it in the region's directory under @p name.
 * Cost: O(capacity) to clear the first table.
 * @param[in] r     a region opened read-write.
 * @param[in] name  1 to SHMDS_ROOT_NAME_MAX bytes.
 * @param[out] out  receives the handle (close it with shmds_map_close()).
 * If the process dies inside this call, the name is either free or names a
 * complete map, and nothing leaks: an unfinished map's blocks stay
 * reachable from its name's pending directory entry, and
 * shmds_region_reclaim() (run by shmds_region_check()) frees them; a
 * create of the same name finishes a dead creator's map of that name
 * itself (a pending name of another type stays -EEXIST until a reclaim).
 * @param o NULL for defaults.
 * @return 0; -EINVAL bad name or options (SHMDS_MAP_EVICT without a
 *         mem_limit; both default TTLs; a TTL above SHMDS_TTL_MAX_MS);
 *         -EEXIST the name is taken;
 *         -ENOSPC the directory is full; -ENOMEM the heap is too small;
 *         SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_create(shmds_region *r, const char *name, const shmds_map_opts *o,
                               shmds_map **out);

/**
 * Open an existing map by name (works on read-only regions).
 * @return 0; -ENOENT no such name; SHMDS_ETYPE the name is not a map;
 *         SHMDS_ECORRUPT the map header fails its checks; -ENOMEM;
 *         -ETIMEDOUT (see shmds_root_get()).
 */
SHMDS_API int shmds_map_open(shmds_region *r, const char *name, shmds_map **out);

/** Drop the handle (the map stays in the region). NULL is ignored. */
SHMDS_API void shmds_map_close(shmds_map *m);

/**
 * Remove the map from the directory, free all its memory, and close the
 * handle (also on error). No other process may use the map any more.
 * Cost: O(entries). The name goes pending first (the commit point); a crash
 * part way leaves the rest to shmds_region_reclaim(); nothing leaks.
 * @return 0; SHMDS_ERDONLY (the handle is still closed); -ENOENT the name no
 *         longer names this map; -ETIMEDOUT; SHMDS_ECORRUPT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_destroy(shmds_map *m);

/**
 * Store @p val under @p key (a copy of both), replacing any value.
 * Cost: O(1) expected, plus moving at most a few buckets while the map grows.
 * The same as shmds_map_put_ex() with ttl_ms = ttl_s * 1000 (0: the
 * map's default), @p flags, no user flags and no version condition.
 * @param[in] m     the map.
 * @param[in] key   @p klen bytes (at least one).
 * @param[in] klen  the key's length.
 * @param[in] val   @p vlen bytes (may be NULL when @p vlen is 0).
 * @param[in] vlen  the value's length.
 * @param ttl_s seconds to live; 0 = the map's default TTL.
 * @param flags 0, SHMDS_PUT_NX or SHMDS_PUT_XX (not both).
 * @return 0 (also when a dead process's change had to be repaired
 *         first: repairs are counted in shmds_map_stats.recoveries); -EEXIST (NX, key present); -ENOENT (XX, key absent);
 *         -ENOMEM the budget or the heap is full (with SHMDS_MAP_EVICT: even
 *         after evicting); -EINVAL klen 0, NULL key, or both flags;
 *         -E2BIG @p klen + @p vlen is more than the region's heap holds
 *         (sizes whose sum overflows among them; nothing read or changed);
 *         SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_put(shmds_map *m, const void *key, size_t klen, const void *val,
                            size_t vlen, uint32_t ttl_s, unsigned flags);

/**
 * Copy the value of @p key into @p buf (at most @p cap bytes) and its length
 * into @p vlen (may be NULL). Expired entries are misses.
 * Takes no lock and never waits, on every map and every attach (see the
 * file comment): a read guard is entered and left around the lookup.
 * @param[in] m the map
 * @param[in] key,klen the key (klen > 0)
 * @param[out] buf,cap where the value is copied, at most @p cap bytes
 * @param[out] vlen the value's length (may be NULL)
 * @return 0; -ENOENT no such key; -ENOBUFS the value is longer than @p cap
 *         (nothing copied, *vlen set); -EINVAL klen 0 or NULL key;
 *         -E2BIG @p klen is more than the region's heap holds (the key
 *         is not read); the errors of shmds_guard_enter() (the region's
 *         reader table missing or damaged, all reader slots taken);
 *         -EAGAIN the map kept moving under the lookup (only a process
 *         scribbling on the map does that); SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_map_get(shmds_map *m, const void *key, size_t klen, void *buf, size_t cap,
                            size_t *vlen);

/**
 * Remove @p key. An expired key counts as absent (and is reclaimed).
 * @return 0 (repairs on the way are only counted, as for shmds_map_put()); -ENOENT; -EINVAL; -E2BIG as for
 *         shmds_map_get(); -ENOMEM nothing removed: the region is full
 *         and a reader stuck inside a guard holds every block retired
 *         on this stripe's way (see shmds_guard_enter(); it works again
 *         once the reader leaves or dies); SHMDS_ERDONLY; -ETIMEDOUT;
 *         SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_del(shmds_map *m, const void *key, size_t klen);

/**
 * Atomically add @p delta to the counter stored under @p key and return the
 * new value in @p result (may be NULL). A counter is a value of exactly 8
 * bytes holding an int64_t in the machine's byte order; an absent (or
 * expired) key is created at 0 with the map's default TTL, then added to.
 * @return 0 (repairs on the way are only counted, as for shmds_map_put()); -EINVAL the key holds a value that is not
 *         8 bytes long (nothing changed), klen 0 or NULL key; -EOVERFLOW the
 *         sum does not fit an int64_t (nothing changed); -E2BIG the key
 *         and a counter do not fit the region's heap; -ENOMEM;
 *         SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_add(shmds_map *m, const void *key, size_t klen, int64_t delta,
                            int64_t *result);

/**
 * Store @p val under @p key with options: a TTL in milliseconds, user
 * flags, NX / XX / NOEVICT, and compare-and-set on the key's version.
 * Cost and crash behaviour as shmds_map_put(): an acknowledged put (a
 * compare-and-set included) survives a crash of any process; an
 * interrupted one took effect entirely or not at all.
 * @param[in] m the map
 * @param[in] key,klen the key (klen > 0)
 * @param[in] val,vlen the value (val may be NULL when vlen is 0)
 * @param[in] o NULL: a plain put with the map's default TTL.
 * @param[out] new_version the stored entry's version (may be NULL).
 * @return 0 (repairs on the way are only counted, as for shmds_map_put()); -EEXIST (NX, key present); -ENOENT (XX
 *         or if_version, key absent or expired); SHMDS_EVERSION
 *         (if_version, the key is present with another version: nothing
 *         stored); -ENOMEM the budget or the heap is full (SHMDS_MAP_EVICT
 *         and not NOEVICT: even after evicting); -EINVAL klen 0, NULL key,
 *         NX with XX or with if_version, an unknown flag, ttl_ms above
 *         SHMDS_TTL_MAX_MS (and not SHMDS_TTL_NONE); SHMDS_ERDONLY;
 *         -ETIMEDOUT; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_put_ex(shmds_map *m, const void *key, size_t klen, const void *val,
                               size_t vlen, const shmds_put_opts *o, uint64_t *new_version);

/**
 * shmds_map_get() that also tells the entry's version, TTL left and user
 * flags, and with SHMDS_GET_STALE returns an expired entry not reclaimed
 * yet (info->stale = 1) instead of -ENOENT. Lock-free as shmds_map_get().
 * @param[in] m the map
 * @param[in] key,klen the key (klen > 0)
 * @param[out] buf,cap the value is copied here; @p buf may be NULL when
 *         @p cap is 0 (then 0 is returned for any value length: a query of
 *         the info and length only).
 * @param[out] vlen the value's length (may be NULL).
 * @param flags 0 or SHMDS_GET_STALE.
 * @param[out] info may be NULL.
 * @return as shmds_map_get(); -EINVAL also for an unknown flag.
 */
SHMDS_API int shmds_map_get_ex(shmds_map *m, const void *key, size_t klen, void *buf,
                               size_t cap, size_t *vlen, unsigned flags,
                               shmds_map_entry_info *info);

/**
 * Zero-copy get: point @p val at the value of @p key inside the region.
 * The pointer stays valid, and the bytes unchanged, until the caller leaves
 * its guard @p g, even when other processes replace or delete the key
 * meanwhile (they retire the entry; it is freed after the guard is left).
 * One exception: a counter (shmds_map_add()) is updated in place, so its 8
 * bytes may change while referenced (each read of them is whole). The
 * memory is read-only to the caller. Expired entries are misses. Lock-free
 * as shmds_map_get().
 * @param[in] m the map
 * @param[in] g a guard the calling thread entered on the map's region
 * @param[in] key,klen the key (klen > 0)
 * @param[out] val the value's first byte (a pointer into the region)
 * @param[out] vlen the value's length
 * @return 0; -ENOENT no such key; -EINVAL klen 0, a NULL argument, or @p g
 *         not a guard entered (and not yet left) on this map's region;
 *         -E2BIG as for shmds_map_get(); -EAGAIN as for shmds_map_get();
 *         SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_map_get_ref(shmds_map *m, shmds_guard *g, const void *key, size_t klen,
                                const void **val, size_t *vlen);

/**
 * Single-flight read: return the value on a hit; on a miss, make exactly
 * one caller across all processes the one that computes the value.
 *
 * On a hit the value is copied as by shmds_map_get_ex() and 0 returned. On
 * a miss with nobody filling the key, the caller gets the key's fill lease:
 * SHMDS_FILL is returned and *fill set; the caller computes the value and
 * must end the lease with shmds_map_fill_done() (stores it and wakes the
 * waiters) or shmds_map_fill_abort(). On a miss while another caller holds
 * the lease, this call waits until the value is stored (then returns it),
 * the lease passes to this caller (SHMDS_FILL), or @p timeout_ms passes
 * (-ETIMEDOUT). A lease whose holder died (any way, SIGKILL included) or
 * aborted passes to exactly one waiter; waiters sleep on the stripe's
 * doorbell and re-check at least every 10 ms (a death rings no bell).
 *
 * With SHMDS_GET_STALE, an expired entry not reclaimed yet counts as a
 * stale hit: the first caller gets the lease *and* the stale value
 * (SHMDS_FILL, info->stale = 1, the value copied), so it may serve it
 * while it refreshes; callers meanwhile get the stale value at once (0,
 * info->stale = 1) instead of waiting.
 *
 * The lease is held in the key's stripe (a few slots per stripe, recording
 * the holder's pid and process start time, so a reused pid is not taken
 * for the holder, and when the lease began). When every slot of the
 * stripe is held by live processes, the caller waits as if the key were
 * being filled. A process that asks again for a key whose lease it holds
 * itself waits for itself (until the timeout).
 * Cost: a hit is one stripe lock, a copy and a lookup.
 * @param[in] m the map
 * @param[in] key,klen the key (klen > 0)
 * @param[out] buf,cap,vlen as shmds_map_get_ex().
 * @param[out] info may be NULL; all zero after a miss with no stale value.
 * @param flags 0 or SHMDS_GET_STALE.
 * @param timeout_ms how long to wait for another caller's fill: -1 no
 *         bound (a dead holder still passes the lease on), 0 do not wait.
 * @param[out] fill set on SHMDS_FILL, NULL otherwise.
 * @return 0 hit; SHMDS_FILL the caller holds the lease; -ETIMEDOUT;
 *         -ENOBUFS the value is longer than @p cap (*vlen set; no lease
 *         taken); -EINVAL klen 0, NULL key, NULL @p fill, unknown flag;
 *         -ENOMEM no memory for the handle; SHMDS_ERDONLY (leases are
 *         written); SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_fetch(shmds_map *m, const void *key, size_t klen, void *buf, size_t cap,
                              size_t *vlen, shmds_map_entry_info *info, unsigned flags,
                              int timeout_ms, shmds_fill **fill);

/**
 * Store the value the lease holder computed, end the lease and wake the
 * waiters, which return it. The lease ends and @p f is freed whatever the
 * result. An acknowledged fill survives a crash; a holder killed inside
 * this call leaves either the value stored or the lease to a waiter.
 * @param[in] f the lease shmds_map_fetch() handed out
 * @param[in] val,vlen the value computed
 * @param[in] o TTL, user flags and SHMDS_PUT_NOEVICT as for
 *         shmds_map_put_ex() (NULL: defaults); if_version, NX and XX are
 *         refused with -EINVAL.
 * @param[out] new_version the stored entry's version (may be NULL).
 * @return as shmds_map_put_ex(); on an error nothing is stored and the
 *         lease passes to a waiter.
 */
SHMDS_API int shmds_map_fill_done(shmds_fill *f, const void *val, size_t vlen,
                                  const shmds_put_opts *o, uint64_t *new_version);

/**
 * End the lease without a value; one waiter (if any) gets it. @p f is
 * freed. NULL is ignored.
 * @return 0; -ETIMEDOUT, SHMDS_ECORRUPT, SHMDS_ENOTRECOVERABLE (the lease
 *         then ends when a waiter finds this process dead or the slot is
 *         needed; the handle is freed all the same).
 */
SHMDS_API int shmds_map_fill_abort(shmds_fill *f);

/**
 * Time left before @p key expires, in milliseconds, rounded down (-1: it
 * does not expire). Takes no lock unless the map evicts.
 * @return 0; -ENOENT absent or expired; as shmds_map_get().
 */
SHMDS_API int shmds_map_ttl(shmds_map *m, const void *key, size_t klen, int64_t *ttl_ms);

/**
 * Set the time @p key has left (touch): it expires @p ttl_ms from now; 0
 * or SHMDS_TTL_NONE: never. The value and the version do not change.
 * @return 0 (repairs on the way are only counted, as for shmds_map_put()); -ENOENT absent or expired (an expired
 *         key is reclaimed, not revived); -EINVAL klen 0, NULL key,
 *         @p ttl_ms above SHMDS_TTL_MAX_MS; SHMDS_ERDONLY; -ETIMEDOUT;
 *         SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_expire(shmds_map *m, const void *key, size_t klen, uint64_t ttl_ms);

/**
 * shmds_map_add() with the creation spelt out: an absent (or expired) key
 * is created holding @p init + @p delta, expiring @p init_ttl_ms from now
 * (0: the map's default; SHMDS_TTL_NONE: never); a present counter keeps
 * its TTL. Rate limiting in one call: add_ex(key, 1, 0, window_ms).
 * Every add changes the key's version.
 * @return as shmds_map_add(); -EOVERFLOW also when @p init + @p delta does
 *         not fit; -EINVAL also for @p init_ttl_ms above SHMDS_TTL_MAX_MS.
 */
SHMDS_API int shmds_map_add_ex(shmds_map *m, const void *key, size_t klen, int64_t delta,
                               int64_t init, uint64_t init_ttl_ms, int64_t *result);

/**
 * Remove every entry. One stripe at a time under its lock, each entry
 * unlinked crash-consistently (a crash part way leaves some entries, never
 * a damaged map); writes to stripes already cleared may stay.
 * Cost: O(entries + buckets).
 * @return 0; SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ECORRUPT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_clear(shmds_map *m);

/**
 * Reclaim expired entries now, with bounded work: buckets are visited
 * until @p max_entries units are spent (one per bucket, one per entry
 * looked at; the last bucket's chain is finished, a few entries more),
 * continuing where the previous call (of any process) stopped, so repeated
 * calls sweep the whole map. Takes each stripe's lock for the buckets it
 * visits. An expired entry whose key is being refreshed (a live fill
 * lease, see shmds_map_fetch()) is kept for stale reads.
 * @param[in] m the map
 * @param[in] max_entries the work bound (units as above)
 * @param[out] reaped entries reclaimed (may be NULL).
 * @return 0; -EINVAL @p max_entries 0; SHMDS_ERDONLY; -ETIMEDOUT;
 *         SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_reap(shmds_map *m, uint64_t max_entries, uint64_t *reaped);

/**
 * Restart the counters of shmds_map_stats (hits, misses, inserts, deletes,
 * evictions, expirations, recoveries, fills, takeovers) from 0, for every
 * handle. Counts made by calls running at the same time may land on
 * either side. @return 0; SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_map_stats_reset(shmds_map *m);

/**
 * Number of entries, expired ones not yet reclaimed included (to leave
 * them out, reclaim them first with shmds_map_reap()). Exact when no write
 * is in progress. Takes no lock; O(stripes). @return 0; -EINVAL NULL
 * handle or @p n.
 */
SHMDS_API int shmds_map_count(shmds_map *m, uint64_t *n);

/** The callback of shmds_map_foreach(): one entry's key and value (a
 * copy); non-zero stops the walk. */
typedef int shmds_map_foreach_fn(const void *k, size_t kl, const void *v, size_t vl, void *arg);

/**
 * Call @p fn for every live (unexpired) entry. Each stripe is copied out
 * consistently and @p fn runs on the copy with no lock held, so @p fn may
 * call into the map; entries changed meanwhile may or may not be seen. A
 * non-zero return from @p fn stops the walk and is returned.
 * Works on read-only regions.
 * @return 0, @p fn's value, -ENOMEM (no memory for a stripe's copy),
 *         -ETIMEDOUT, SHMDS_ECORRUPT, SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_foreach(shmds_map *m, shmds_map_foreach_fn *fn, void *arg);

/** Fill @p out. Takes no lock; the figures are a snapshot. @return 0. */
SHMDS_API int shmds_map_stats_get(shmds_map *m, shmds_map_stats *out);

/**
 * Verify every invariant of the map: the header and tables are in bounds,
 * every entry is a live heap block in the bucket its hash names, chains are
 * bounded and acyclic, per-stripe counts and memory agree with the entries,
 * no intent log is left open. Locks every stripe (running pending repairs).
 * Cost: O(entries + buckets).
 * @return 0 healthy; SHMDS_ECORRUPT; SHMDS_ERDONLY (needs the locks);
 *         -ETIMEDOUT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_check(shmds_map *m);

/**
 * Region size (bytes, header included) that comfortably holds a map of
 * @p entries entries with keys of @p key_bytes and values of @p val_bytes,
 * including the room growth needs while two tables coexist.
 * @return the size; UINT64_MAX when it does not fit 64 bits (no region
 *         can be made that large).
 */
SHMDS_API uint64_t shmds_map_size_hint(uint64_t entries, size_t key_bytes, size_t val_bytes);

SHMDS_END_DECLS

#endif
