/**
 * @file shmds/table.h
 * @brief Published lookup tables: built by one process, replaced with one
 *        store, read by many with no lock.
 *
 * A **shmds_table** is a named, read-mostly key/value table (keys and
 * values are byte strings) made for the pool-of-workers job: one process
 * builds it, many processes answer lookups from it, and it is rebuilt and
 * replaced every so often while the lookups go on.
 *
 *  - **Build.** shmds_table_build() starts a builder; shmds_table_add()
 *    collects pairs in the builder's own process memory (a key added twice
 *    keeps the value added last). Nothing in the region changes yet.
 *  - **Publish.** shmds_table_publish() lays the pairs out as one immutable
 *    block in the region (an open-addressing index of 8-byte slots, each a
 *    hash tag and the place of a packed key/value record) and makes it the
 *    table's current *version* with one release store. A reader sees the old
 *    version or the new one, never a mix. The version it replaced is
 *    retired: freed once every read guard entered before the swap has been
 *    left (shmds/guard.h).
 *  - **Read.** shmds_table_get() copies a value out; shmds_table_get_ref()
 *    hands out a pointer into the version, valid until the caller leaves its
 *    read guard. Neither takes a lock or retries: a version never changes
 *    once published. Both work on a region opened with SHMDS_RDONLY.
 *
 * Crash safety. A builder is process memory until it publishes; while it
 * publishes, the block it fills is owned by a *build record* in the
 * table's header (its pid and start time, the block's allocator slot). A
 * builder killed at any point leaves the published version as it was, and
 * its block is freed by the next build or publish of that table, by
 * shmds_table_check(), or by shmds_region_reclaim() (which
 * shmds_region_check() runs). A publish killed
 * inside its swap is finished or undone by the next process to take the
 * table's lock: never two versions current, never a version lost or freed
 * twice.
 *
 * Racing builders. A builder remembers the version current when it began;
 * its publish succeeds only if that is still the current version. Of two
 * builders that began from the same version, the first to publish wins;
 * the other's publish returns SHMDS_EVERSION (rebuild from fresh data and
 * publish again).
 *
 * Threads: the threads of a process may share one table handle for
 * lookups (each inside its own read guard); the facts a handle keeps about
 * the current version are updated under a sequence counter, so a thread
 * never uses a half-written copy. A builder belongs to one thread at a time.
 *
 * Across fork(): a child may use a table handle its parent opened (it holds
 * only offsets and a copy of immutable facts). A builder belongs to the
 * process that made it: a child must not publish or add to its parent's
 * builder (it may shmds_table_abort() its copy, which frees process memory
 * only).
 */
#ifndef SHMDS_TABLE_H
#define SHMDS_TABLE_H

#include <shmds/common.h>
#include <shmds/guard.h>
#include <shmds/region.h>

SHMDS_BEGIN_DECLS

/** A process-local builder of the next version of a table. */
typedef struct shmds_table_builder shmds_table_builder;
/** A process-local handle on a table. */
typedef struct shmds_table shmds_table;

/** Longest key, in bytes (records store lengths as 32-bit words). */
#define SHMDS_TABLE_KEY_MAX ((size_t)UINT32_MAX)
/** Longest value, in bytes. */
#define SHMDS_TABLE_VAL_MAX ((size_t)UINT32_MAX)
/** How many builders of one table may be publishing at the same instant. */
#define SHMDS_TABLE_BUILDS_MAX 8

/**
 * Start building the next version of the table @p name, creating the
 * table (with no version yet) if the region has none of that name.
 *
 * The builder records the table's current version: its publish fails with
 * SHMDS_EVERSION if another builder publishes first. Cost: the create of
 * the table the first time; otherwise a directory lookup.
 *
 * @param[in]  r        a writable region
 * @param[in]  name     the table's name (1 to SHMDS_ROOT_NAME_MAX bytes)
 * @param[in]  expected how many pairs will be added (a sizing hint; 0 if
 *                      unknown; any number may be added)
 * @param[out] b        the new builder
 * @return 0; -EINVAL a NULL argument or a bad name; SHMDS_ERDONLY;
 *         SHMDS_ETYPE @p name is another kind of object; -ENOSPC the
 *         directory is full; -ENOMEM; SHMDS_ECORRUPT; lock errors
 *         (-ETIMEDOUT, SHMDS_ENOTRECOVERABLE).
 */
SHMDS_API int shmds_table_build(shmds_region *r, const char *name, uint64_t expected,
                                shmds_table_builder **b);

/**
 * Add one pair to a builder. The bytes are copied into the builder's
 * process memory. Adding a key again replaces the value added before.
 *
 * @param[in] b    a builder
 * @param[in] key  @p klen bytes
 * @param[in] klen the key's length, 1 to SHMDS_TABLE_KEY_MAX
 * @param[in] val  @p vlen bytes (may be NULL when @p vlen is 0)
 * @param[in] vlen the value's length, 0 to SHMDS_TABLE_VAL_MAX
 * @return 0; -EINVAL a NULL builder or key, klen 0, or a NULL val with
 *         vlen > 0; -E2BIG a length beyond its maximum; -ENOMEM process
 *         memory is short. On error the builder is as it was.
 */
SHMDS_API int shmds_table_add(shmds_table_builder *b, const void *key, size_t klen,
                              const void *val, size_t vlen);

/**
 * Publish the builder's pairs as the table's new version and free the
 * builder (whatever the result).
 *
 * The version is laid out in one block of the region outside any lock:
 * 128 bytes, an index of 8-byte slots (a power of two, at least 1.5 slots
 * a pair added), and per pair 8 bytes plus its key and value rounded up to
 * a multiple of 8; a pair of 64 bytes or less is placed within one cache
 * line (up to 56 bytes of padding before it), so that a lookup reads one
 * slot and one line of data. It is then made current with one store under the
 * table's lock; the version it replaces is retired (freed once the
 * readers that may hold it have left their guards). Readers are never
 * blocked. Cost: O(pairs) in the builder's process; the region holds two
 * versions at least while readers still hold the old one.
 *
 * @param[in]  b       a builder (freed by this call)
 * @param[out] version the number of the new version (may be NULL);
 *                     versions of a table count up from 1
 * @return 0; SHMDS_EVERSION another builder published since this one began
 *         (nothing changed); -EBUSY SHMDS_TABLE_BUILDS_MAX builders are
 *         publishing this table at once; -EINVAL a NULL builder;
 *         -EIDRM the table was destroyed; -ENOMEM the region has no room
 *         (even after growing) or process memory is short; -E2BIG the
 *         version would not fit any region; SHMDS_ECORRUPT; lock errors.
 *         On error the published version is the one there was.
 */
SHMDS_API int shmds_table_publish(shmds_table_builder *b, uint64_t *version);

/**
 * Drop a builder without publishing (process memory only; NULL is
 * ignored).
 *
 * @param[in] b the builder to free
 */
SHMDS_API void shmds_table_abort(shmds_table_builder *b);

/**
 * Open the table @p name. A table that has no version yet (created by a
 * builder that has not published) opens, and finds no key.
 *
 * @param[in]  r    the region (SHMDS_RDONLY is fine)
 * @param[in]  name the table's name
 * @param[out] t    the new handle
 * @return 0; -EINVAL; -ENOENT no object of that name; SHMDS_ETYPE another
 *         kind of object; SHMDS_ECORRUPT; -ENOMEM.
 */
SHMDS_API int shmds_table_open(shmds_region *r, const char *name, shmds_table **t);

/** Close a handle (NULL is ignored). The table stays. @param[in] t the handle */
SHMDS_API void shmds_table_close(shmds_table *t);

/**
 * Remove the table from the region and close the handle. Its current
 * version is retired (processes still reading it under a guard finish
 * safely); the name is free again. Other processes' handles on it must
 * not be used afterwards (their calls return errors or misses, never
 * crash).
 *
 * @param[in] t the handle (closed by this call)
 * @return 0; -EINVAL; SHMDS_ERDONLY; -EIDRM already destroyed;
 *         SHMDS_ECORRUPT; lock errors.
 */
SHMDS_API int shmds_table_destroy(shmds_table *t);

/**
 * Look a key up in the current version and copy its value out. Takes no
 * lock and never retries (it enters and leaves a read guard of its own).
 * Cost: a hash of the key and, on average, under two slot reads.
 *
 * @param[in]  t    the handle
 * @param[in]  key  @p klen bytes
 * @param[in]  klen the key's length (at least 1)
 * @param[out] buf  where the value goes (may be NULL when @p cap is 0)
 * @param[in]  cap  bytes available at @p buf
 * @param[out] vlen the value's length (may be NULL)
 * @return 0; -ENOENT no such key (or no version yet); -ENOBUFS the value
 *         is longer than @p cap (nothing copied, *vlen set); -EINVAL a NULL
 *         handle or key, klen 0; SHMDS_ECORRUPT the version fails a check;
 *         guard errors (shmds_guard_enter()).
 */
SHMDS_API int shmds_table_get(shmds_table *t, const void *key, size_t klen, void *buf,
                              size_t cap, size_t *vlen);

/**
 * Look a key up without copying: *val points at the value inside the
 * version, and stays valid (and unchanged) until the caller leaves @p g,
 * however many versions are published meanwhile. No lock, no retry.
 *
 * @param[in]  t       the handle
 * @param[in]  g       a guard the caller entered on the table's region
 * @param[in]  key     @p klen bytes
 * @param[in]  klen    the key's length (at least 1)
 * @param[out] val     the value's first byte (read-only memory)
 * @param[out] vlen    the value's length
 * @param[out] version the version the value was found in (may be NULL);
 *                     0 with -ENOENT when there is no version yet
 * @return 0; -ENOENT; -EINVAL a NULL argument or klen 0; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_table_get_ref(shmds_table *t, shmds_guard *g, const void *key,
                                  size_t klen, const void **val, size_t *vlen,
                                  uint64_t *version);

/** Facts about a table's current version (shmds_table_stat()). */
typedef struct shmds_table_stats {
    uint64_t version;   /**< current version; 0: none published yet */
    uint64_t count;     /**< pairs in it */
    uint64_t slots;     /**< index slots (a power of two) */
    uint64_t bytes;     /**< size of its block (index, records, header) */
    uint64_t data_bytes; /**< bytes of packed records */
    uint32_t max_probe; /**< most slots any lookup reads */
    uint32_t builds;    /**< build records in use now (publishes under way,
                             or left by dead builders until reclaimed) */
    uint64_t published_ns; /**< when it was published (CLOCK_REALTIME) */
    uint64_t publishes; /**< versions published since the table was made */
    uint64_t reclaimed; /**< dead builders' blocks freed */
} shmds_table_stats;

/**
 * Describe the current version.
 *
 * @param[in]  t  the handle
 * @param[out] st the facts
 * @return 0; -EINVAL; SHMDS_ECORRUPT; guard errors.
 */
SHMDS_API int shmds_table_stat(shmds_table *t, shmds_table_stats *st);

/**
 * How many pairs the current version holds.
 *
 * @param[in]  t     the handle
 * @param[out] count the number of pairs (0 without a version)
 * @return 0; -EINVAL; SHMDS_ECORRUPT; guard errors.
 */
SHMDS_API int shmds_table_count(shmds_table *t, uint64_t *count);

/**
 * Called by shmds_table_foreach() once per pair; the pointers are into the
 * version and valid during the call. A nonzero return stops the walk and
 * is returned by shmds_table_foreach().
 */
typedef int shmds_table_foreach_fn(const void *key, size_t klen, const void *val,
                                   size_t vlen, void *arg);

/**
 * Call @p fn for every pair of one version (the current one when the walk
 * starts; publishes during the walk do not affect it), in the order they
 * were added. Runs under a read guard of its own: a long walk delays the
 * freeing of replaced versions.
 *
 * @param[in]  t       the handle
 * @param[in]  fn      the callback
 * @param[in]  arg     passed to @p fn
 * @param[out] version the version walked (may be NULL)
 * @return 0; what @p fn returned; -EINVAL; SHMDS_ECORRUPT; guard errors.
 */
SHMDS_API int shmds_table_foreach(shmds_table *t, shmds_table_foreach_fn *fn, void *arg,
                                  uint64_t *version);

/**
 * Check the table: its header, its build records, and its current version
 * (every slot points at a record inside the block, every record is found
 * by a lookup of its key, the counts agree). In a writable region, dead
 * builders' blocks are reclaimed first. Read-only attaches check without
 * writing.
 *
 * @param[in] t the handle
 * @return 0; -EINVAL; SHMDS_ECORRUPT; lock and guard errors.
 */
SHMDS_API int shmds_table_check(shmds_table *t);

SHMDS_END_DECLS

#endif
