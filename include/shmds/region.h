/**
 * @file shmds/region.h
 * @brief Regions: named POSIX shared-memory objects holding shmds structures.
 *
 * A region is one POSIX shared-memory object (shm_open + ftruncate + mmap).
 * At offset 0 it holds a one-page header: a magic number, a format word
 * (layout version and an ABI stamp: pointer width, lock sizes, cache line,
 * endianness), the region's size, who made it and when, a checksum of all of
 * that, a recovery epoch, the allocator's root and the root of a
 * *directory* of named roots, so that one process creates "sessions" and
 * another opens "sessions". After the header comes the heap
 * (shmds/alloc.h) in which the structures and the directory's blocks live.
 *
 * Every process maps the region wherever mmap puts it; links inside it are
 * shmds_off_t byte offsets from the base, turned into pointers with
 * shmds_ptr() and back with shmds_off().
 *
 * Opening checks the object before trusting it: its size against the header,
 * the magic, the format version, the ABI stamp and the checksum, each
 * mismatch a distinct error. A region never crashes the process that opens
 * it, whatever another process wrote into it.
 *
 * All processes attached to a region must share one PID namespace (see
 * shmds/lock.h).
 *
 * Across fork(): the child inherits the mapping (MAP_SHARED: the same
 * memory) and every handle; it may use the region handle and every object
 * handle opened on it (lists, maps, queues) as its parent does, and close
 * them or exit without affecting the parent: closing unmaps only the
 * caller's copy. Per-object exceptions are in each object's header (a
 * queue's SPSC side, a map's fill lease). As with any fork of a threaded
 * process, fork only when no other thread of the process is inside a shmds
 * call: a lock held by another thread at the fork stays held by that
 * thread in the parent, and the child must not touch the object until it
 * is released.
 *
 * Trust. A region's bytes are whatever its writers put there. A read-only
 * attach (SHMDS_RDONLY) takes no lock and trusts nothing it reads: whatever
 * the bytes, its calls return (SHMDS_ECORRUPT for damage they can see),
 * never crash, never wait past the handle's lock bound and never write
 * anywhere. A read-write attach is protected against damage and garbage
 * the same way, with one exception that comes from glibc's robust mutexes
 * (shmds/lock.h, "Threat model"): a *hostile* process that can write the
 * region can steer another writer's unlock. Regions are 0600 by default for
 * that reason; grant write access only to processes you trust as much as
 * your own. README, "Threat model", has the whole picture.
 *
 * Truncation. Another process with write access to the object can make it
 * shorter (ftruncate) while this one has it mapped; an access past the new
 * end raises SIGBUS, which the library cannot turn into an error for every
 * access. What it does: shmds_region_open checks the object's size against
 * the header; shmds_region_check, shmds_alloc_stats_get,
 * shmds_root_foreach, shmds_list_foreach and shmds_map_foreach fstat the
 * object first and
 * return SHMDS_ECORRUPT when it is shorter than the mapping;
 * shmds_map_close then skips its write to the map. Calls that only read the
 * header (shmds_region_info_get, lock diagnostics) keep working as long as
 * the header page is there. Root lookups (shmds_root_get, the structures'
 * opens) read the directory's blocks in the heap, so they are among the
 * calls below. Every other call that
 * touches the heap after a truncation gets SIGBUS; the `shmds` tool catches
 * it and reports the truncation. Only the region's writers can do this.
 *
 * Growth. A region has a current size and a maximum size (fixed at create,
 * shmds_region_opts.max_size). Every process reserves the maximum as
 * address space when it attaches (PROT_NONE, MAP_NORESERVE: no memory, no
 * swap, nothing counted against overcommit) and maps the current size at
 * the start of it, so the base never moves: offsets and pointers stay
 * valid while the region grows. When an allocation finds no room, the
 * allocating process grows the region (doubling it, or more for a large
 * request, up to the maximum): it lengthens the object (ftruncate) and
 * backs the new part (posix_fallocate), so a full tmpfs is an error
 * (-ENOSPC, region unchanged) and never a SIGBUS later; then it hands the
 * new part to the allocator and publishes the new size. Other processes
 * follow with one mmap call each, the first time they meet an offset past
 * what they map (or their allocator sees the heap grown); read-only
 * attaches follow too, but cannot grow a region (SHMDS_ERDONLY). A grower
 * killed at any point leaves a state that the next growth or
 * shmds_region_check completes: no space lost, none counted twice. At the
 * maximum, allocations fail with -ENOMEM as in a region that never grows.
 * The memory a region uses is its current size; the maximum only costs
 * address space (and page tables for what is mapped), so a generous
 * maximum is cheap; what bounds it is the address space of the processes
 * (RLIMIT_AS, and 128 TiB of user address space on x86-64) and /dev/shm.
 * Images attached from memory (tests, fuzzing) never grow.
 */
#ifndef SHMDS_REGION_H
#define SHMDS_REGION_H

#include <sys/types.h>

#include <shmds/common.h>
#include <shmds/lock.h>

SHMDS_BEGIN_DECLS

/** Layout version of the region format; regions of another version are
 *  refused with SHMDS_EFORMAT. Separate from the library version. */
#define SHMDS_FORMAT_VERSION 6

/** The first 8 bytes of every complete region (of this byte order), for
 *  tools that look for regions among other shared-memory objects. */
#define SHMDS_REGION_SIGNATURE "SHMDSRG1"

/** Longest region name, counting the leading '/'. */
#define SHMDS_NAME_MAX 255
/** Longest directory (root) name, in bytes, without the terminating NUL. */
#define SHMDS_ROOT_NAME_MAX 47
/** Smallest region shmds_region_create() accepts, in bytes. */
#define SHMDS_REGION_MIN_SIZE ((size_t)16384)
/** Bytes taken by the header at the start of every region. */
#define SHMDS_HEADER_SIZE ((size_t)4096)
/** The default maximum size is this many times the size a region is
 *  created with (see shmds_region_opts.max_size)... */
#define SHMDS_DEFAULT_MAX_FACTOR 64u
/** ... but at most this many bytes (64 GiB), and at most a quarter of the
 *  creating process's RLIMIT_AS when it has one. */
#define SHMDS_DEFAULT_MAX_CAP ((uint64_t)64 << 30)
/** Largest maximum size a region may have (2^46 bytes, 64 TiB). */
#define SHMDS_REGION_MAX_SIZE ((uint64_t)1 << 46)
/** Bound on internal lock waits when the creator gave none (milliseconds). */
#define SHMDS_DEFAULT_LOCK_TIMEOUT_MS 10000u
/**
 * Largest bound on internal lock waits (milliseconds, one minute).
 * shmds_region_create() refuses a larger one with -EINVAL, and a handle
 * clamps what a region's header says to it: the header is shared memory,
 * and a hostile or damaged one must not make a call wait for days.
 */
#define SHMDS_LOCK_TIMEOUT_MAX_MS 60000u

/** A process-local handle on a mapped region. */
typedef struct shmds_region shmds_region;

/** Options for shmds_region_create(); zero-filled means defaults. */
typedef struct shmds_region_opts {
    mode_t mode;              /**< permission bits; 0 means 0600. Applied with
                                   fchmod, so the umask neither widens nor
                                   narrows them. */
    uint32_t lock_timeout_ms; /**< bound on every internal lock wait in this
                                   region; 0 means SHMDS_DEFAULT_LOCK_TIMEOUT_MS;
                                   at most SHMDS_LOCK_TIMEOUT_MAX_MS */
    size_t max_size;          /**< the most the region may grow to, in bytes
                                   (rounded up to the page size; at least
                                   `size`, at most SHMDS_REGION_MAX_SIZE).
                                   0 means SHMDS_DEFAULT_MAX_FACTOR times
                                   `size`, capped (SHMDS_DEFAULT_MAX_CAP,
                                   RLIMIT_AS / 4); equal to `size`: a region
                                   that never grows. It is address space
                                   every attached process reserves, not
                                   memory: see "Growth" below. */
} shmds_region_opts;

/** Flags for shmds_region_open(). */
enum {
    /** Map read-only (O_RDONLY, PROT_READ). Only operations that take no
     *  lock work; the others return SHMDS_ERDONLY. */
    SHMDS_RDONLY = 1u << 0,
    /** Refuse (-EPERM) an object whose owner is not the caller's uid. */
    SHMDS_SAME_UID = 1u << 1
};

/** Type tags of the directory. 0 is never a valid tag. */
enum {
    SHMDS_TYPE_LIST = 1,
    SHMDS_TYPE_MAP = 2,
    SHMDS_TYPE_QUEUE = 3,
    SHMDS_TYPE_TABLE = 4,
    /** Tags from here up are free for users' own structs. */
    SHMDS_TYPE_USER = 0x10000
};

/**
 * Create a new region and map it read-write.
 *
 * The object is made with O_CREAT|O_EXCL, sized with ftruncate and backed
 * with posix_fallocate, so a full tmpfs fails here with -ENOSPC instead of a
 * SIGBUS later. The header is written last: a process that opens the name
 * meanwhile waits briefly or gets -EAGAIN, never a half-made region. On any
 * failure the object is unlinked again.
 *
 * Dead creators. From shm_open until the header is published the creator
 * holds a write lock (an open-file-description lock, F_OFD_SETLK) on the
 * object. The kernel drops it when the creator dies, so an unpublished
 * object nobody holds that lock on is an *abandoned creation*: this call
 * takes the lock itself, removes the name and creates the region afresh
 * (only when the caller owns the object; another user's gives -EEXIST).
 * No pid is recorded or trusted, so pid reuse cannot fool the test. A
 * creator whose object was taken over this way in the microseconds between
 * its shm_open and its lock gets -EEXIST (the other create won). A
 * published region is never replaced.
 *
 * @param name "/name": a leading '/', no other '/', at most SHMDS_NAME_MAX
 *             bytes, not "/", "/." or "/..".
 * @param size bytes, at least SHMDS_REGION_MIN_SIZE; rounded up to the page
 *             size. shmds_region_size() tells the result.
 * @param opts NULL for defaults.
 * @param out  receives the handle.
 * The maximum size (opts->max_size) is reserved as address space and
 * the object mapped at its start; every process that opens the region
 * reserves the same (see "Growth" in the file comment).
 * @return 0; -EINVAL bad name, size or mode, a lock_timeout_ms above
 *         SHMDS_LOCK_TIMEOUT_MAX_MS, or a max_size below the size;
 *         -EEXIST the name exists (a region, a creation under way, or
 *         something else); -ENOSPC not enough shared memory; -EFBIG size
 *         or max_size too large; -ENOMEM also when the maximum cannot be
 *         reserved as address space;
 *         -EACCES, -EMFILE, -ENOMEM as the system says.
 */
SHMDS_API int shmds_region_create(const char *name, size_t size, const shmds_region_opts *opts,
                                  shmds_region **out);

/**
 * Open and map an existing region.
 *
 * @param[in] name  the region's name, as for shmds_region_create().
 * @param[in] flags 0, or SHMDS_RDONLY and/or SHMDS_SAME_UID.
 * @param[out] out  receives the handle.
 *
 * Checks, in this order, before trusting anything in it: object size
 * (smaller than a header, or than the size the header claims:
 * SHMDS_ECORRUPT), magic (SHMDS_EFORMAT; byte-swapped magic: SHMDS_EABI),
 * format version (SHMDS_EFORMAT), ABI stamp (SHMDS_EABI), header checksum
 * (SHMDS_ECORRUPT). The object is opened with O_NONBLOCK and O_NOFOLLOW
 * and must be a regular file before anything else happens (anyone can put
 * a FIFO in /dev/shm; opening one must not block). The handle's lock bound
 * is the header's, clamped to SHMDS_LOCK_TIMEOUT_MAX_MS.
 *
 * @return 0; -EINVAL bad name or flags; -ENOENT no such region, or an
 *         abandoned creation (its creator died before publishing it; a
 *         create replaces it); -EACCES; -EPERM (SHMDS_SAME_UID) another
 *         owner; -EAGAIN the creator is still making it after a wait of
 *         two seconds; SHMDS_EFORMAT also for an object that is not a
 *         regular file (a FIFO, a link); -ENOMEM the region's maximum
 *         cannot be reserved as address space in this process (RLIMIT_AS);
 *         SHMDS_ECORRUPT also for a published current size that is not a
 *         page multiple between the initial and the maximum size, or
 *         longer than the object; the SHMDS_E* codes above.
 */
SHMDS_API int shmds_region_open(const char *name, unsigned flags, shmds_region **out);

/**
 * Unmap the region and free the handle. Handles of structures opened in it
 * must be closed first. The shared object itself stays (shmds_region_unlink).
 * @return 0; -EBUSY, with nothing done, while the calling thread holds one of
 *         the region's locks (unmapping it would defeat owner-death repair).
 */
SHMDS_API int shmds_region_close(shmds_region *r);

/**
 * Remove the name. Processes that have it mapped keep using it; the memory
 * goes away when the last one unmaps it.
 * @return 0; -EINVAL bad name; -ENOENT no such region; -EACCES.
 */
SHMDS_API int shmds_region_unlink(const char *name);

/** The address this process mapped the region at. */
SHMDS_API void *shmds_region_base(const shmds_region *r);

/** The region's current size in bytes (header included): what it has
 *  grown to, as published by the last growth. Maps that much in this
 *  process first when others grew it (see shmds_ptr). */
SHMDS_API size_t shmds_region_size(const shmds_region *r);

/** The most the region may grow to (shmds_region_opts.max_size). */
SHMDS_API size_t shmds_region_max_size(const shmds_region *r);

/**
 * Grow the region to at least @p size bytes now (rounded up to the page
 * size), as an allocation that finds no room does by itself (see "Growth"
 * above): lengthen and back the object, hand the new part to the
 * allocator, publish the size. Other attached processes follow without
 * any call of theirs. A size the region already has is nothing to do.
 * Finishes a growth a dead process left first.
 * Across fork(): the child's handle is a copy of the parent's mapping and
 * follows growth like any other process.
 * @return 0; -ENOMEM @p size above the maximum (nothing done);
 *         SHMDS_ERDONLY a read-only attach; -ENOSPC /dev/shm (tmpfs) is
 *         full, -EFBIG and other errors of ftruncate/posix_fallocate (the
 *         region is left as it was); -ETIMEDOUT, SHMDS_ENOTRECOVERABLE,
 *         SHMDS_ECORRUPT; -EINVAL for NULL.
 */
SHMDS_API int shmds_region_grow(shmds_region *r, size_t size);

/** 1 when the region was opened with SHMDS_RDONLY, else 0. */
SHMDS_API int shmds_region_readonly(const shmds_region *r);

/**
 * Set this handle's bound on waits for locks and for writers (process-local:
 * other handles and other processes keep theirs). A lookup worker that
 * would rather fail fast than wait behind a stopped writer sets a small
 * bound; `shmds`'s read-only views use 100 ms.
 * @param[in] r  the region handle
 * @param[in] ms at most SHMDS_LOCK_TIMEOUT_MAX_MS; 0 means never wait: a
 *               held lock is -EBUSY and a writer caught mid-change
 *               -ETIMEDOUT, each after a short spin, at once
 * @return 0; -EINVAL for a NULL handle or @p ms above the maximum.
 * Across fork(): the child's copy of the handle keeps the bound.
 */
SHMDS_API int shmds_region_set_lock_timeout(shmds_region *r, uint32_t ms);

/** What shmds_region_info_get() reports. */
typedef struct shmds_region_info {
    uint64_t size;            /**< current (published) size in bytes, header
                                   included */
    uint64_t heap_offset;     /**< where the heap starts */
    uint64_t heap_size;       /**< bytes of heap at the current size */
    uint32_t format_version;  /**< SHMDS_FORMAT_VERSION of the maker */
    uint32_t lock_timeout_ms; /**< bound on internal lock waits */
    uint64_t created_unix_ns; /**< creation time, ns since the Epoch */
    pid_t creator_pid;        /**< process that created it */
    uid_t creator_uid;        /**< its uid */
    uint64_t epoch;           /**< bumped on every repair after a death */
    uint32_t roots;           /**< directory entries in use (pending ones
                                   included) */
    uint32_t roots_max;       /**< entries the directory's blocks hold now;
                                   not a limit: the directory adds blocks
                                   from the heap as names come */
    uint64_t max_size;        /**< the most the region may grow to */
    uint64_t initial_size;    /**< the size it was created with */
    uint64_t mapped_size;     /**< how much of it this process maps now */
    uint64_t map_calls;       /**< mmap calls this handle made to follow
                                   growth (diagnostics) */
} shmds_region_info;

/** Fill @p out from the header. Takes no lock. @return 0. */
SHMDS_API int shmds_region_info_get(const shmds_region *r, shmds_region_info *out);

/** The region's own locks, for shmds_region_lock_info(). */
enum { SHMDS_LOCK_DIRECTORY = 0, SHMDS_LOCK_ALLOCATOR = 1, SHMDS_LOCK_GROW = 2 };

/**
 * Who holds one of the region's own locks, and its history (see
 * shmds_mutex_info_get). Takes no lock.
 * @param[in] r    the region.
 * @param[out] out receives the snapshot.
 * @param which SHMDS_LOCK_DIRECTORY, SHMDS_LOCK_ALLOCATOR or SHMDS_LOCK_GROW.
 * @return 0, or -EINVAL for another @p which.
 */
SHMDS_API int shmds_region_lock_info(const shmds_region *r, int which, shmds_mutex_info *out);

/**
 * Finish the creates and destroys of lists, maps, queues and tables whose
 * process died in the middle. Such an object's name is held by a *pending* directory
 * entry (invisible to shmds_root_get, shmds_root_foreach and the opens, but
 * the name stays taken) that still reaches every block the object had; this
 * takes each one whose owner is dead over, frees those blocks and frees the
 * name. A reclaimer that dies is itself a dead owner: the next call goes on.
 * shmds_region_check (writable regions) calls it; a create that meets a
 * dead owner's pending entry of its own name and type finishes only that
 * one (never other objects). "Dead" is kill(pid, 0) failing with ESRCH:
 * a pid reused by an unrelated live process delays the reclaim until that
 * process exits, and never frees anything early. Then, inside each table,
 * the blocks of builders that died publishing are freed (shmds/table.h;
 * one lock of each table). Then blocks that writers retired
 * (shmds/guard.h) and that no reader inside a guard can hold any more are
 * freed too.
 * @return 0 (also when there was nothing to do); -EINVAL for NULL;
 *         SHMDS_ERDONLY; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE; -ETIMEDOUT.
 */
SHMDS_API int shmds_region_reclaim(shmds_region *r);

/**
 * Verify the whole region: the header and its checksum, the directory, the
 * heap, and every named object of a known type. Takes each lock in turn (so
 * pending repairs run) and, in a writable region, first reclaims what dead
 * creators and destroyers left (shmds_region_reclaim); in a read-only
 * region, checks what needs no lock. Safe beside live processes creating
 * and destroying objects: a pending create or destroy of a live process is
 * left alone, and each object is checked while the directory lock keeps it
 * from being destroyed (read-only: a failure counts only if the object is
 * still there afterwards), so the directory's writers wait for one
 * object's check at a time.
 * @return 0 healthy; SHMDS_ECORRUPT; SHMDS_ENOTRECOVERABLE (an object is
 *         fenced off); -ETIMEDOUT a lock stayed held past the bound;
 *         -EAGAIN an SPSC queue moved during every attempt to walk it
 *         (see shmds_queue_check); -EINVAL for NULL.
 */
SHMDS_API int shmds_region_check(shmds_region *r);

/** Pointer for an offset inside @p r; NULL for SHMDS_NULL. No checks: for
 *  offsets the caller knows to be valid. Inline and free. After another
 *  process grew the region, an offset in the new space is valid here once
 *  this process maps it: shmds_root_get(), shmds_usable_size(), every
 *  structure call and shmds_region_size() map what the region has grown
 *  to (one mmap call per growth); call shmds_region_size() before
 *  following an offset received by other means. */
static inline void *shmds_ptr(const shmds_region *r, shmds_off_t off);
/** Offset of a pointer into @p r; SHMDS_NULL for NULL. Inline and free. */
static inline shmds_off_t shmds_off(const shmds_region *r, const void *p);

/* ---- the directory of named roots ----
 * Entries {name, type tag, offset}, guarded by a robust mutex; lookups
 * take no lock. Names are 1 to SHMDS_ROOT_NAME_MAX bytes. There is no
 * fixed number of entries: the directory is a hash table of 256 buckets
 * whose chains of blocks are allocated from the heap as names come (and
 * freed as they go), so the limits are the heap (a region grows up to its
 * maximum size, then -ENOMEM) and about 64 bytes plus a little chain
 * overhead per name. A lookup reads the entries of one bucket (about
 * n/256 for n names). The library's structures register themselves here;
 * users may register their own blocks with tags from SHMDS_TYPE_USER up. A
 * structure being created or destroyed holds its name with a pending
 * entry: the name is taken (shmds_root_set gives -EEXIST) but lookups do
 * not see it (see shmds_region_reclaim). For a list, map or queue, the
 * offset lookups report is the object's header. A process killed while
 * adding or removing a name or a directory block leaves a directory that
 * the next holder of its lock repairs (and shmds_region_reclaim frees a
 * block it had added for nothing): no name lost or doubled, no block
 * leaked. */

/**
 * Add a named root.
 * @param[in] r    the region (writable).
 * @param[in] name 1 to SHMDS_ROOT_NAME_MAX bytes.
 * @param type     the type tag (not 0).
 * @param off      what the root names: an offset inside the region.
 * @return 0; -EINVAL bad name, type 0, or offset outside the region;
 *         -EEXIST the name is taken; -ENOMEM no room in the heap (at the
 *         region's maximum size) for the directory block the name needs;
 *         the allocator's other errors (-ENOSPC: /dev/shm is full);
 *         SHMDS_ERDONLY; SHMDS_ECORRUPT; -ETIMEDOUT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_root_set(shmds_region *r, const char *name, uint32_t type, shmds_off_t off);

/**
 * Look a root up. @p type and @p off may be NULL.
 * Works in read-only regions (it takes no lock). Cost: the entries of the
 * name's bucket.
 * @return 0; -EINVAL bad name; -ENOENT no such root; SHMDS_ECORRUPT the
 *         bucket's chain is damaged; -ETIMEDOUT a writer died mid-update
 *         and nobody has repaired the directory yet.
 */
SHMDS_API int shmds_root_get(shmds_region *r, const char *name, uint32_t *type,
                             shmds_off_t *off);

/**
 * Remove a named root (not the object it names: see the structures' destroy).
 * @return 0; -EINVAL; -ENOENT; SHMDS_ERDONLY; SHMDS_ECORRUPT; -ETIMEDOUT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_root_del(shmds_region *r, const char *name);

/** The callback of shmds_root_foreach(): one visible root; non-zero stops
 * the walk. */
typedef int shmds_root_foreach_fn(const char *name, uint32_t type, shmds_off_t off, void *arg);

/**
 * Call @p fn for every root, bucket by bucket, each bucket copied
 * consistently (no lock; read-only regions too) before @p fn runs on it:
 * a root that stays through the walk is reported exactly once; one set or
 * deleted during it may be reported or not.
 * A non-zero return from @p fn stops the walk and is returned.
 * @return 0, @p fn's value, -ENOMEM, or SHMDS_ECORRUPT and -ETIMEDOUT as
 *         shmds_root_get().
 */
SHMDS_API int shmds_root_foreach(shmds_region *r, shmds_root_foreach_fn *fn, void *arg);

/* ---- inline definitions ---- */

/* The first members of every shmds_region. Private: they exist so that the
 * two conversions below cost nothing. */
struct shmds_region_pub_ {
    unsigned char *base;
    uint64_t size;
};

static inline void *shmds_ptr(const shmds_region *r, shmds_off_t off)
{
    const struct shmds_region_pub_ *p = (const struct shmds_region_pub_ *)(const void *)r;
    return off == SHMDS_NULL ? NULL : (void *)(p->base + off);
}

static inline shmds_off_t shmds_off(const shmds_region *r, const void *ptr)
{
    const struct shmds_region_pub_ *p = (const struct shmds_region_pub_ *)(const void *)r;
    return ptr == NULL ? SHMDS_NULL : (shmds_off_t)((const unsigned char *)ptr - p->base);
}

SHMDS_END_DECLS

#endif
