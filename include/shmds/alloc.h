/**
 * @file shmds/alloc.h
 * @brief The offset heap inside a region: alloc, free, realloc, statistics.
 *
 * Every region has one heap, [heap offset, region size), managed by a
 * two-level segregated-fit allocator with boundary tags: alloc and free cost
 * O(1), neighbouring free blocks are merged at once, and every block's
 * payload is 16-byte aligned. Blocks are named by shmds_off_t offsets (the
 * first payload byte), so they mean the same thing in every process; turn
 * one into a pointer with shmds_ptr().
 *
 * Arenas: so that processes that allocate at once do not queue on one
 * lock, the heap has arenas, each with its own robust mutex. Arena 0 spans
 * the whole heap at first, so one block can be as large as the heap. When
 * a process finds every arena busy (another process holds its lock), it
 * carves a new arena out of arena 0 (a sixteenth of the heap, 64 KiB to
 * 64 MiB; at most 8 arenas, never given back) and allocates there from
 * then on; later allocations start at the arena the handle used last and
 * take any other arena they can lock without waiting before they wait.
 * Allocations of 64 KiB and more start at arena 0. A block is freed into
 * the arena that holds it, whichever process frees it. A process killed at any
 * instruction inside shmds_alloc(), shmds_free() or shmds_realloc() leaves
 * a heap that the next caller repairs before it goes on (the call returns
 * success as usual): the dead call either happened completely or not at
 * all. A block whose offset only the dead process knew is, of course, lost
 * to it; the library's structures use an internal variant that records the
 * offset inside the region as part of the same step, so they never leak.
 *
 * Costs: a block takes its payload rounded up to 16 bytes plus a 16-byte
 * header, and at least 32 bytes. Each arena starts with its lock, its
 * root and its control block (256 bytes, then free-list heads and bitmaps:
 * 132 bytes per doubling of the arena's size, under 6 KiB) and ends with a
 * 16-byte sentinel. Space carved into arenas serves only blocks that fit
 * an arena; shmds_alloc_stats::largest_free says what fits now.
 *
 * The handle's cache: in a heap of 512 KiB or more, a block of up to 512
 * payload bytes freed by shmds_free() waits in a cache of the handle (up
 * to 8 blocks of each 16-byte size step, 256 in all, in a 2 KiB record the
 * handle keeps in the heap), and the next shmds_alloc() of its size takes
 * it back without any lock. A cached block is free to every caller
 * (shmds_free(), shmds_realloc() and shmds_usable_size() treat it as
 * such) but does not merge with its neighbours until it goes back to its
 * arena: when the handle is closed, when an allocation finds no room,
 * and before the statistics (shmds_alloc_stats_get(),
 * shmds_alloc_arena_info_get()). A process that dies with blocks cached
 * loses none: the next statistics or repair (any structure's, or a
 * process making its own cache) gives them back. The library's structures
 * do not use the cache.
 *
 * Across fork(): the child's handle keeps the parent's arena preference;
 * the first time both allocate at once, one of them moves to another
 * arena and stays there. The child does not use the parent's cache: its
 * first small free makes a cache of its own.
 *
 * A heap larger than 2^47 bytes (128 TiB) uses its first 2^47 bytes.
 */
#ifndef SHMDS_ALLOC_H
#define SHMDS_ALLOC_H

#include <shmds/common.h>
#include <shmds/lock.h>
#include <shmds/region.h>

SHMDS_BEGIN_DECLS

/**
 * Allocate @p size bytes from the region's heap.
 *
 * Cost: O(1) (plus, only when the heap is nearly full, a scan of one
 * size class's free list).
 *
 * @param r    the region.
 * @param size bytes wanted, at least 1. The block may be larger; see
 *             shmds_usable_size().
 * @param out  receives the block's offset (16-byte aligned, never
 *             SHMDS_NULL); unchanged on error.
 * @return 0;
 *         -EINVAL @p size is 0;
 *         -ENOMEM no free block in any arena is large enough even after
 *         growing the region to its maximum (shmds/region.h, "Growth"; at
 *         once for a @p size larger than the heap at the maximum, up to
 *         SIZE_MAX: no overflow); the heap is unchanged;
 *         -ENOSPC the region had to grow and /dev/shm (tmpfs) is full, and
 *         other errors of shmds_region_grow(): the region is as it was;
 *         SHMDS_ERDONLY the region is attached read-only;
 *         SHMDS_ECORRUPT the heap is damaged;
 *         -ETIMEDOUT the allocator lock was held past the region's bound;
 *         SHMDS_ENOTRECOVERABLE a dead process's change could not be repaired.
 */
SHMDS_API int shmds_alloc(shmds_region *r, size_t size, shmds_off_t *out);

/**
 * Free a block returned by shmds_alloc() or shmds_realloc().
 *
 * Cost: O(1). The block is merged with free neighbours at once, or, a
 * block of up to 512 bytes, kept in the handle's cache (above).
 *
 * @param r   the region.
 * @param off the block's offset; SHMDS_NULL does nothing and returns 0.
 * @return 0;
 *         -EINVAL @p off is not the start of a live block (outside the heap,
 *         misaligned, inside a block, or already free); the heap is unchanged;
 *         SHMDS_ERDONLY; SHMDS_ECORRUPT the heap around the block is damaged
 *         (nothing was changed); -ETIMEDOUT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_free(shmds_region *r, shmds_off_t off);

/**
 * Resize a block, in place when possible.
 *
 * Shrinking is always in place (the tail goes back to the heap when it is
 * large enough to be a block). Growing is in place when the next block is
 * free and large enough; otherwise the data moves to a new block (in the
 * same arena when it has room, else in another) and the old one is freed.
 * A process killed during a move leaves the old block intact and
 * allocated; the new one may then be allocated too, and is lost to it.
 *
 * @param r    the region.
 * @param off  the block; SHMDS_NULL makes this shmds_alloc().
 * @param size the new size in bytes, at least 1.
 * @param out  receives the (possibly new) offset; unchanged on error.
 * @return 0; -EINVAL @p size is 0 or @p off is not a live block;
 *         -ENOMEM no room, even at the region's maximum size (the old
 *         block is untouched and still valid); -ENOSPC and the other
 *         errors of a growth, as for shmds_alloc();
 *         SHMDS_ERDONLY; SHMDS_ECORRUPT; -ETIMEDOUT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_realloc(shmds_region *r, shmds_off_t off, size_t size, shmds_off_t *out);

/**
 * Bytes usable at a block's offset (at least what was asked for).
 * Takes no lock: call it on a block that no other process frees meanwhile.
 * @return the usable size, or 0 when @p off is not the start of a live block.
 */
SHMDS_API size_t shmds_usable_size(shmds_region *r, shmds_off_t off);

/** What shmds_alloc_stats_get() reports, summed over every arena. Sizes
 *  count whole blocks, headers included, so that used_bytes + free_bytes ==
 *  heap_bytes. An empty heap has one free block per arena. */
typedef struct shmds_alloc_stats {
    uint64_t heap_bytes;   /**< bytes managed as blocks (the arenas less their headers) */
    uint64_t used_bytes;   /**< bytes in allocated blocks */
    uint64_t free_bytes;   /**< bytes in free blocks */
    uint64_t largest_free; /**< largest size shmds_alloc() can satisfy right now (0: none):
                                the largest of the arenas' */
    uint64_t used_blocks;  /**< allocated blocks */
    uint64_t free_blocks;  /**< free blocks (no two are neighbours) */
} shmds_alloc_stats;

/**
 * The heap's accounting: every arena's, each a consistent snapshot taken
 * under that arena's lock in turn (so the sum is exact when nothing
 * allocates meanwhile). This handle's cached blocks, and dead processes',
 * go back to their arenas first (not on a read-only region); another live
 * process's cached blocks count as free blocks (each apart), its cache
 * record as neither used nor part of heap_bytes.
 *
 * Cost: O(arenas) plus a scan of each arena's largest size class's free
 * list. On a read-only region no lock can be taken: each arena is read
 * optimistically and retried while a writer is busy in it.
 * @return 0; SHMDS_ECORRUPT; -ETIMEDOUT (the lock, or on a read-only region
 *         a writer that stayed busy, past the region's bound);
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_alloc_stats_get(shmds_region *r, shmds_alloc_stats *out);

/**
 * Verify the whole heap, arena by arena: the arena table agrees with the
 * heap's bounds, every block's boundary tags agree with its neighbours, the
 * physical walk ends exactly at the arena's end, no two free blocks are
 * neighbours, every free block is in the right free list exactly once and
 * the bitmaps say so, and the accounting adds up; every cache record is a
 * live block, and every block cached by a dead process is a used block of
 * its slot's size. Part of shmds_region_check().
 *
 * Cost: O(blocks), under each arena's lock in turn (optimistic on a
 * read-only region, as shmds_alloc_stats_get()).
 * @return 0 healthy; SHMDS_ECORRUPT; -ETIMEDOUT; SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_alloc_check(shmds_region *r);

/** One arena, as shmds_alloc_arena_info_get() reports it. */
typedef struct shmds_alloc_arena_info {
    uint64_t offset;          /**< where the arena starts in the region */
    uint64_t size;            /**< bytes it spans, its header and sentinel included */
    shmds_alloc_stats stats;  /**< its accounting, as shmds_alloc_stats_get() */
    shmds_mutex_info lock;    /**< its lock: holder, held for, repairs */
    uint64_t repairs;         /**< dead operations repaired in it */
    uint64_t rebuilds;        /**< free lists rebuilt from its blocks (after a
                                   crash, or damage found) */
} shmds_alloc_arena_info;

/**
 * How many arenas the heap has now (arenas are added, never taken away).
 * Reads the region's arena table without a lock.
 * @return at least 1.
 */
SHMDS_API unsigned shmds_alloc_arena_count(shmds_region *r);

/**
 * One arena's place, accounting and lock (what `shmds info` shows).
 * This handle's and dead processes' cached blocks go back first, as for
 * shmds_alloc_stats_get(); another live process's cached blocks and cache
 * record count as used blocks of their arena here.
 *
 * Cost: as shmds_alloc_stats_get() for one arena.
 * @param[in]  r     the region.
 * @param[in]  arena 0 to shmds_alloc_arena_count() - 1.
 * @param[out] out   receives the arena's information; unchanged on error.
 * @return 0; -EINVAL no such arena; SHMDS_ECORRUPT; -ETIMEDOUT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_alloc_arena_info_get(shmds_region *r, unsigned arena,
                                         shmds_alloc_arena_info *out);

SHMDS_END_DECLS

#endif
