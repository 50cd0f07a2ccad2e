/**
 * @file shmds/map.h
 * @brief A shared hash map: byte keys to byte values, for caches, lookup
 *        tables and shared counters.
 *
 * Keys and values are byte strings of any length, copied in and out (a
 * value returned never aliases shared memory another process may free).
 * Entries live in the region's heap and are chained from bucket tables by
 * offsets. The buckets are split into *stripes*, each guarded by its own
 * robust mutex, so processes that touch keys of different stripes never
 * wait for each other.
 *
 * Growth is incremental: when the map gets full, a table twice as large is
 * allocated and every write moves a couple of buckets of its stripe into
 * it; lookups look in whichever table holds the key. No call ever rehashes
 * the whole map.
 *
 * Entries may carry a time to live; an expired entry is a miss and its
 * memory is reclaimed by later writes to its stripe. A map may have a
 * memory budget: without SHMDS_MAP_EVICT a write that would exceed it fails
 * with -ENOMEM; with it, entries are evicted by CLOCK (second chance).
 *
 * Crash safety: every write is crash-consistent. A process killed at any
 * instruction inside a call leaves the map in a state the next process to
 * lock the stripe repairs (from a small intent log, without scanning the
 * map): a call that returned success is visible afterwards; a call that was
 * interrupted took effect entirely or not at all; no memory leaks.
 *
 * Concurrency of reads: without SHMDS_MAP_EVICT, shmds_map_get() takes no
 * lock at all (per-stripe sequence counters, bounded retries), so it also
 * works on regions opened with SHMDS_RDONLY. With SHMDS_MAP_EVICT a get
 * takes its stripe's lock (a hit marks the entry recently used), so on a
 * read-only region such maps refuse gets with SHMDS_ERDONLY.
 *
 * Handles are process-local; open the map in every process that uses it.
 * A handle may be used by one thread at a time.
 */
#ifndef SHMDS_MAP_H
#define SHMDS_MAP_H

#include <shmds/common.h>
#include <shmds/region.h>

SHMDS_BEGIN_DECLS

/** A process-local handle on a shared hash map. */
typedef struct shmds_map shmds_map;

/** Map flags (shmds_map_opts.flags). */
enum {
    /** With a mem_limit: evict entries (CLOCK) instead of failing with
     *  -ENOMEM. Also evicts when the region's heap itself is full. */
    SHMDS_MAP_EVICT = 1u << 0
};

/** Flags of shmds_map_put(). */
enum {
    /** Store only if the key is absent; otherwise -EEXIST. */
    SHMDS_PUT_NX = 1u << 0,
    /** Store only if the key is present; otherwise -ENOENT. */
    SHMDS_PUT_XX = 1u << 1
};

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
                                 48-byte header each, rounded up to 16); 0 = no
                                 budget. The bucket tables are outside it, and
                                 so are the up to 4 spare entry blocks each
                                 stripe keeps for its next inserts. */
    uint32_t stripes;       /**< lock stripes, rounded up to a power of two,
                                 at most SHMDS_MAP_STRIPES_MAX; 0 = default */
    uint32_t default_ttl_s; /**< time to live of entries put with ttl 0; 0 = none */
    uint32_t flags;         /**< 0 or SHMDS_MAP_EVICT */
} shmds_map_opts;

/** What shmds_map_stats_get() reports. */
typedef struct shmds_map_stats {
    uint64_t entries;     /**< entries stored (expired ones not yet reclaimed included) */
    uint64_t buckets;     /**< buckets of the table(s); both while growing */
    uint64_t hits;        /**< gets that found the key (not counted on read-only handles) */
    uint64_t misses;      /**< gets that did not (idem) */
    uint64_t inserts;     /**< puts and adds that created a key */
    uint64_t deletes;     /**< successful shmds_map_del() calls */
    uint64_t evictions;   /**< entries evicted for the budget */
    uint64_t expirations; /**< expired entries reclaimed */
    uint64_t recoveries;  /**< dead lock holders whose change was repaired */
    uint64_t mem_used;    /**< bytes of entries (as counted against mem_limit)
                               plus bytes of bucket tables */
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
 * @return 0; -EINVAL bad name or options; -EEXIST the name is taken;
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
 * @param[in] m     the map.
 * @param[in] key   @p klen bytes (at least one).
 * @param[in] klen  the key's length.
 * @param[in] val   @p vlen bytes (may be NULL when @p vlen is 0).
 * @param[in] vlen  the value's length.
 * @param ttl_s seconds to live; 0 = the map's default_ttl_s.
 * @param flags 0, SHMDS_PUT_NX or SHMDS_PUT_XX (not both).
 * @return 0 (or SHMDS_RECOVERED: stored, after repairing a dead process's
 *         change); -EEXIST (NX, key present); -ENOENT (XX, key absent);
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
 * Takes no lock unless the map has SHMDS_MAP_EVICT (see the file comment).
 * @return 0; -ENOENT no such key; -ENOBUFS the value is longer than @p cap
 *         (nothing copied, *vlen set); -EINVAL klen 0 or NULL key;
 *         -E2BIG @p klen is more than the region's heap holds (the key
 *         is not read); SHMDS_ERDONLY (EVICT map on a read-only region); -ETIMEDOUT a
 *         writer died mid-change and nobody repaired it within the region's
 *         lock bound (read-only regions only); SHMDS_ECORRUPT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_get(shmds_map *m, const void *key, size_t klen, void *buf, size_t cap,
                            size_t *vlen);

/**
 * Remove @p key. An expired key counts as absent (and is reclaimed).
 * @return 0 (or SHMDS_RECOVERED); -ENOENT; -EINVAL; -E2BIG as for
 *         shmds_map_get(); SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ECORRUPT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_del(shmds_map *m, const void *key, size_t klen);

/**
 * Atomically add @p delta to the counter stored under @p key and return the
 * new value in @p result (may be NULL). A counter is a value of exactly 8
 * bytes holding an int64_t in the machine's byte order; an absent (or
 * expired) key is created at 0 with the map's default TTL, then added to.
 * @return 0 (or SHMDS_RECOVERED); -EINVAL the key holds a value that is not
 *         8 bytes long (nothing changed), klen 0 or NULL key; -EOVERFLOW the
 *         sum does not fit an int64_t (nothing changed); -E2BIG the key
 *         and a counter do not fit the region's heap; -ENOMEM;
 *         SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_map_add(shmds_map *m, const void *key, size_t klen, int64_t delta,
                            int64_t *result);

/**
 * Number of entries (expired ones not yet reclaimed included). Exact when
 * no write is in progress. Takes no lock. @return 0; -EINVAL NULL handle or @p n.
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
