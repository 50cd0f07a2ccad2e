/*
 * The offset heap: a two-level segregated-fit (TLSF) allocator with boundary
 * tags, inside the region, shared by every process that maps it.
 *
 * Layer: the allocator. Calls down into the region (its lock, its header's
 * allocator root, directory slots as allocation slots) and lock.c; called
 * by the object layer and the structures; calls nothing above.
 *
 * Layout. The heap [heap_off, heap_end) starts with a control block (the
 * first-level bitmap, one second-level bitmap per first level, and the heads
 * of the free lists), then holds a sequence of blocks that tile it exactly,
 * then a 16-byte sentinel header (size 0, "used") at its end. Every block
 * starts with a 16-byte header {prev_size, word}: prev_size is the size of
 * the physically previous block (0 for the first), and word packs the
 * block's size (a multiple of 16, at least 32), a FREE flag, a MARK flag
 * that is always set, and a 16-bit tag hashed from the block's offset, size
 * and flags, so that an offset inside a block, a stale header or a zeroed
 * one is not taken for a block. A free block keeps its free-list links
 * (next, prev: offsets of headers) in its first 16 payload bytes. The
 * payload starts right after the header, so it is 16-byte aligned, and an
 * allocated block's offset (what users see) is header + 16.
 *
 * TLSF classes: sizes below 256 bytes go in first level 0 at a 16-byte
 * step; above that, first level f-7 for sizes in [2^f, 2^(f+1)) split into
 * 16 second-level classes. Alloc rounds the request up to the next class
 * boundary, so the head of any non-empty list found by two find-first-set
 * operations fits: O(1). When that finds nothing, the request's own class
 * list is scanned once (the heap is nearly full, and the block that fits may
 * sit in that class).
 *
 * Crash consistency. The heap has two kinds of state. The *physical*
 * layout (every block's header word, and the caller's slot of
 * shmds__alloc_into / shmds__free_from) is the truth, and changes only
 * through a redo record in the allocator's root (in the region header): an
 * operation writes the list of absolute 64-bit stores it is about to make,
 * seals the record, makes the stores, and clears the seal. The seal is the
 * commit point: a repair re-applies a sealed record (idempotent, the stores
 * are absolute values) and ignores an unsealed one, so a dead operation
 * happened completely or not at all, slot included. The *derived* state
 * (free lists, bitmaps, counters, and the prev_size tags, which follow from
 * the sizes: they are stored after the commit, outside the record) is
 * rebuilt from a walk of the physical blocks: an operation
 * makes the root's sequence word odd before its first store and even after
 * its last, and a repair that finds it odd rebuilds the derived state from
 * scratch (O(blocks), only after a crash). The rebuild is also the fallback
 * when a free list is found damaged during an operation. The walk trusts
 * only block sizes and flags; it rewrites prev_size tags from them but never
 * changes a block, so a repair killed at any point can simply run again.
 *
 * The sequence word doubles as a seqlock: a process that attached
 * read-only cannot lock, so it reads statistics and checks the heap
 * optimistically and retries while a writer is busy.
 *
 * Arenas. Each arena is a heap of its own as described above, with its
 * own lock, root (sequence word, counters, redo record) and control block
 * at its start: [lock+root | control | blocks... | sentinel]. Arena 0 spans
 * the whole heap at first, so one block can be as large as the heap. More
 * arenas are made when processes allocate at once: a process that finds
 * every arena busy (or full) takes a chunk (CHUNK_DIV-th of the heap) from
 * arena 0 as an ordinary allocated block, its *carrier*, and lays a new
 * arena out inside it; at most SHMDS__ARENAS_MAX arenas. Arenas are never
 * given back. Crash consistency is per arena, exactly as above: an
 * operation works in one arena under that arena's lock, and a dead
 * holder's change is redone or rolled back by whoever locks that arena
 * next. An allocation starts at the arena its handle used last (large
 * ones, from LARGE bytes, at arena 0) and takes the first arena it can
 * lock without waiting; an arena that has no room passes the request on.
 * So processes that allocate at once spread over the arenas and stay
 * there, and a large allocation (which zeroes its block under the lock)
 * holds up no small one. A block is freed into the arena whose range holds
 * it (a carved arena's range lies inside its carrier, so those are looked
 * at first). A realloc that cannot grow in place moves within its arena,
 * or, when that one is full, allocates in another one, copies, and frees
 * the old block (two steps: a crash in between leaves both blocks
 * allocated, the old one intact, as a move within one arena does).
 *
 * The arena table is in the heap root (struct hroot, in the region
 * header): the count and each carved arena's carrier and end. Carving runs
 * under the heap lock (hdr->alloc_lock): the carrier is allocated from
 * arena 0 straight into hroot.pending (one commit of arena 0, so it is
 * never lost), the arena is laid out inside it while nobody can reach it,
 * then published: its entry, then the count (release), then pending is
 * cleared. A carver that died is finished by the heap lock's repair (lay
 * the pending carrier out again and publish it: every step is absolute).
 * Each handle keeps a checked copy of the table and adds entries when the
 * count grows (one load per operation tells). Region growth is to hand
 * new space to the allocator the same way: the appended space becomes one
 * more arena, published by the same steps under the heap lock (its
 * carrier 0, its range past the old end); the table has room for it.
 *
 * Formatting is lazy: the region never calls up into the allocator, so the
 * first operation that finds the heap root without its magic lays arena 0
 * out under the heap lock, and stores the magic last (again, if a
 * formatter died: no arena lock can have been taken yet).
 *
 * Caches. A robust lock round trip and a commit cost most of a small
 * allocation, so shmds_alloc and shmds_free (the calls without a slot)
 * keep small blocks (to CC_BLOCK_MAX bytes) in a per-handle cache: a
 * *record*, itself a block of arena 0 allocated into an entry of the heap
 * root's cache table (an allocator slot), holding CC_SLOTS slots per block
 * size and the owner (pid and start time of the process that made it). A
 * cached block stays a used block of its arena, flagged F_CACHED in its
 * header word (outside the tag); every slot of a record is an allocator
 * slot. A free of a small block stores its offset in an empty slot of its
 * size, then sets the flag (compare-and-swap: of two processes freeing one
 * block at once, one sees it taken); an allocation of a cached size clears
 * the flag of a block in its slots, then the slot, and returns the block.
 * Neither takes an arena lock; threads sharing a handle take an
 * in-process spin lock over its record (a killed process takes it along).
 * A death anywhere leaves each block either in a slot (flagged or not) or
 * in the caller's hands, as a death just before or after an uncached call
 * would. A free whose size's slots are full goes into the record's batch
 * instead (CC_BATCH slots for blocks of any cached size, stored and
 * flagged the same way); a free that finds the batch full first frees
 * every batched block to its arena, each from its slot by one commit, but
 * under one lock round trip per arena for all of them: random-order frees
 * pay a lock per CC_BATCH blocks, not per block, and a death in the flush
 * leaves the blocks not yet freed in their slots. Records are given back
 * (every slot's block, the batch's included, freed from its slot by one
 * commit, then the record from its entry) under the heap lock: the
 * handle's own when it closes, when an allocation finds no room, and before
 * the statistics; those of dead owners (or of a maker that died before it
 * owned it) by shmds__alloc_settle, which every structure's repair runs,
 * by the statistics and by the next record made. Each step is a commit, so
 * a reclaimer killed anywhere leaves a record the next one finishes. The
 * statistics count a live process's cached blocks as free and records as
 * outside the heap (like carriers); the heap check walks them too. A handle
 * used in a forked child keeps no cache of its parent's: the child makes
 * its own. Heaps below CC_HEAP_MIN are not cached.
 *
 * Locks: one robust mutex per arena, at the start of its range, and the
 * heap lock (hdr->alloc_lock) for formatting, carving and cache records.
 * Lock order: heap lock -> the in-process cache lock (a record given
 * back) -> an arena lock; the fast paths hold the cache lock alone, a
 * batch flush the cache lock, then each arena lock in turn.
 * Callers may hold structure locks before these. No operation holds two
 * arena locks at once.
 */
#include "internal.h"

#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------
 * Shared layout
 * ------------------------------------------------------------------------ */

#define HEAP_MAGIC UINT64_C(0x31414e4552414853) /* "SHARENA1" */
#define ROOT_MAGIC UINT64_C(0x31434f4c4c414853) /* "SHALLOC1" */
#define REDO_SEALED UINT64_C(0x4c41455344455241)
/* The most stores one commit makes: a free that merges both neighbours
 * (two header words cleared, the merged block's word, the slot). */
#define REDO_MAX 4

#define HDR 16u               /* block header bytes */
#define MIN_BLOCK 32u         /* header + two free-list links */
#define ALIGN 16u
#define SL_LOG 4u
#define SL_N (1u << SL_LOG)   /* second-level classes per first level */
#define SMALL_LOG 8u          /* sizes below 2^8 live in first level 0 */
#define HEAP_MAX (UINT64_C(1) << 47)

#define ARENA_HDR 256u                 /* an arena's lock and root */
#define CHUNK_DIV 16u                  /* a carved arena is this fraction of the heap */
#define CHUNK_MIN (UINT64_C(64) << 10) /* ... but at least this */
#define CHUNK_MAX (UINT64_C(64) << 20) /* ... and at most this */
#define LARGE (UINT64_C(64) << 10)     /* requests that start at arena 0 */

#define CACHE_MAX 32u   /* cache records in the heap root's table */
#define CC_CLASSES 32u  /* cached block sizes: MIN_BLOCK, +16, ... */
#define CC_SLOTS 8u     /* blocks one record holds per size */
#define CC_UP 2u        /* an allocation may take a block this many sizes up */
#define CC_BLOCK_MAX (MIN_BLOCK + (CC_CLASSES - 1) * ALIGN) /* 528: payloads to 512 */
#define CC_HEAP_MIN (UINT64_C(512) << 10) /* smaller heaps are not cached */
#define CC_RETRY 4096u  /* frees between attempts to make a record that failed */
#define CC_BATCH 64u    /* frees beyond the slots, given back to their arenas together */

#define F_FREE UINT64_C(1)
#define F_MARK UINT64_C(2)
#define F_CACHED UINT64_C(4) /* a used block held in a handle's cache (no tag part) */
#define W_SIZE UINT64_C(0x0000fffffffffff0)

struct redo_store {
    uint64_t off; /* region offset of a 64-bit word in the heap */
    uint64_t val;
};

/* An arena's root, right after its lock. */
struct aroot {
    uint64_t magic;       /* ROOT_MAGIC once the arena is formatted */
    uint64_t seq;         /* odd while an operation changes the arena */
    uint64_t used_bytes;  /* derived: sums of block sizes, headers included */
    uint64_t used_blocks;
    uint64_t free_bytes;
    uint64_t free_blocks;
    uint64_t repairs;     /* dead operations repaired */
    uint64_t rebuilds;    /* derived state rebuilt from the physical walk */
    uint64_t redo_state;  /* REDO_SEALED while redo[] must be applied */
    uint32_t redo_n;
    uint32_t redo_pad;
    struct redo_store redo[REDO_MAX];
};
SHMDS__STATIC_ASSERT(offsetof(struct aroot, magic) == 0, "format: root magic");
SHMDS__STATIC_ASSERT(offsetof(struct aroot, redo_state) == 64, "format: redo state");
SHMDS__STATIC_ASSERT(offsetof(struct aroot, redo) == 80, "format: redo record");
SHMDS__STATIC_ASSERT(sizeof(struct aroot) == 144, "format: root size");

/* The start of every arena. */
struct arena {
    shmds_mutex lock;
    struct aroot root;
    uint8_t pad[ARENA_HDR - sizeof(shmds_mutex) - sizeof(struct aroot)];
};
SHMDS__STATIC_ASSERT(sizeof(struct arena) == ARENA_HDR, "format: arena header");
SHMDS__STATIC_ASSERT(offsetof(struct arena, root) == 64, "format: arena root");

/* A carved arena in the table. */
struct harena {
    uint64_t carrier; /* user offset of its carrier block in arena 0 */
    uint64_t end;     /* where the arena ends (the carrier's end) */
};

/* The heap root, in hdr->alloc_root (zero at region creation). */
struct hroot {
    uint64_t magic;    /* HEAP_MAGIC once arena 0 is formatted (stored last) */
    uint32_t narenas;  /* arenas published (stored after their entry) */
    uint32_t pad;
    uint64_t pending;  /* allocator slot: the carrier being laid out */
    uint64_t heap_end; /* where arena 0, the heap, ends (its sentinel + 16):
                        * moved by a growth's commit (shmds__alloc_extend) */
    struct harena arenas[SHMDS__ARENAS_MAX]; /* [0] unused: arena 0 is the heap */
    uint64_t caches[CACHE_MAX]; /* allocator slots: the handles' cache records */
};
SHMDS__STATIC_ASSERT(sizeof(struct hroot) <= SHMDS__ALLOC_ROOT_BYTES, "heap root fits");
SHMDS__STATIC_ASSERT(offsetof(struct hroot, narenas) == 8, "format: arena count");
SHMDS__STATIC_ASSERT(offsetof(struct hroot, pending) == 16, "format: pending carrier");
SHMDS__STATIC_ASSERT(offsetof(struct hroot, heap_end) == 24, "format: heap end");
SHMDS__STATIC_ASSERT(offsetof(struct hroot, arenas) == 32, "format: arena table");
SHMDS__STATIC_ASSERT(offsetof(struct hroot, caches) == 160, "format: cache table");

/* A block header; next/prev are meaningful in free blocks only. */
struct blk {
    uint64_t prev_size;
    uint64_t word;
    uint64_t next;
    uint64_t prev;
};
SHMDS__STATIC_ASSERT(sizeof(struct blk) == MIN_BLOCK, "free block header fits a minimum block");
SHMDS__STATIC_ASSERT(offsetof(struct blk, word) == 8, "format: block word");

/* Where things are in this heap (struct shmds__heap_geo, internal.h): in the
 * handle, computed when it is made from its trusted bounds, never read from
 * shared memory. */
typedef struct shmds__heap_geo geo_t;

/* One operation in one arena, under its lock. */
struct op {
    shmds_region *r;
    unsigned char *base; /* r->base */
    struct arena *a;
    struct aroot *root;  /* &a->root */
    const geo_t *g;      /* the arena's geometry */
    unsigned idx;        /* the arena's index */
    unsigned n;          /* stores in root->redo[] so far */
    bool rebuild;        /* derived state found damaged */
    bool rest_listed;    /* take_free put the split's remainder in its list */
};

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

/* For the few helpers that every operation runs several times: inlined,
 * their results stay in registers instead of going through pointers. */
#define HOT static inline __attribute__((always_inline))
/* The bodies of alloc and free: every call in them inlined (one frame from
 * the entry point to the lock), except the rare paths marked COLD. */
#define FLAT static __attribute__((flatten, noinline))
#define COLD static __attribute__((noinline, cold))

static struct hroot *hroot_of(const shmds_region *r)
{
    return (struct hroot *)(void *)r->hdr->alloc_root;
}

static unsigned fls64(uint64_t x) /* index of the highest set bit; x != 0 */
{
    return 63u - (unsigned)__builtin_clzll(x);
}

static void mapping(uint64_t size, unsigned *fl, unsigned *sl)
{
    if (size < (UINT64_C(1) << SMALL_LOG)) {
        *fl = 0;
        *sl = (unsigned)(size >> 4);
    } else {
        unsigned f = fls64(size);
        *fl = f - (SMALL_LOG - 1);
        *sl = (unsigned)(size >> (f - SL_LOG)) & (SL_N - 1);
    }
}

/* Lay one arena out over [lo, hi) (16-aligned, hi - lo >= ARENA_HDR):
 * its header, control block, blocks and sentinel. */
static void arena_geo(geo_t *g, uint64_t lo, uint64_t hi)
{
    unsigned fl, sl;
    g->base = lo;
    g->ctl = lo + ARENA_HDR;
    mapping(hi - g->ctl, &fl, &sl);
    g->fl_count = fl + 1;
    g->slbm = g->ctl + 16;
    g->heads = g->slbm + (((uint64_t)g->fl_count * 4 + 15) & ~UINT64_C(15));
    g->first = g->heads + (uint64_t)g->fl_count * SL_N * 8;
    g->end = hi - HDR;
    g->pad = 0;
    g->carrier = 0;
}

/* The heap's end when it was created (before any growth): the handle's
 * trusted initial size. */
static uint64_t init_end(const shmds_region *r)
{
    return r->init_size & ~(uint64_t)(ALIGN - 1);
}

/* Lay arena 0 out over the handle's trusted heap bounds: pure arithmetic
 * (garbage bounds of a header that fails its checks give a garbage but
 * harmless layout, never used). Its free-list classes cover the region's
 * maximum, so growth never moves its control block; its end is the
 * initial one until geo_sync sees the heap grown. Carved arenas join the
 * table later (arenas_sync). */
static void geo_init(shmds_region *r)
{
    uint64_t lo = (r->heap_off + 63) & ~UINT64_C(63);
    uint64_t hi = r->max_size > lo ? r->max_size : lo;
    if (hi - lo > HEAP_MAX)
        hi = lo + HEAP_MAX;
    hi &= ~(uint64_t)(ALIGN - 1);
    if (hi - lo < ARENA_HDR + 1024)
        hi = lo + ARENA_HDR + 1024; /* never used: the region is too small */
    arena_geo(&r->arena[0], lo, hi);
    uint64_t e = init_end(r);
    if (e >= lo + ARENA_HDR + 1024)
        r->arena[0].end = e - HDR;
    r->arena[0].carrier = 0;
    r->narenas = 1;
    r->arena_hint = 0;
    r->arena_full = 0;
}

/* The arena whose blocks [first, end) hold `off`, or -1. Carved arenas
 * lie inside arena 0: they are looked at first. */
static int arena_of(const shmds_region *r, uint64_t off)
{
    for (unsigned i = r->narenas; i-- > 0;)
        if (off >= r->arena[i].first && off < r->arena[i].end)
            return (int)i;
    return -1;
}

/* True when user offset `off` is a carved arena's carrier (a block no
 * caller may free or resize). */
static bool is_carrier(const shmds_region *r, uint64_t off)
{
    for (unsigned i = 1; i < r->narenas; i++)
        if (r->arena[i].carrier == off)
            return true;
    return false;
}

/* Fill the handle's arena table on the allocator's first use of it in
 * this process (the region makes handles without calling up into the
 * allocator): geo_state 0 none yet, 1 being filled, 2 ready. Every entry
 * point runs it before it looks at the table. */
static void table_init(shmds_region *r)
{
    if (shmds__likely(__atomic_load_n(&r->geo_state, __ATOMIC_ACQUIRE) == 2))
        return;
    uint32_t none = 0;
    if (__atomic_compare_exchange_n(&r->geo_state, &none, 1, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_ACQUIRE)) {
        geo_init(r);
        __atomic_store_n(&r->geo_state, 2, __ATOMIC_RELEASE);
    }
    while (__atomic_load_n(&r->geo_state, __ATOMIC_ACQUIRE) != 2)
        shmds__cpu_relax();
}

/* Bring the handle's end of arena 0 to the heap root's, which a growth
 * moved (a smaller end is an older image put back, followed too). 0, or
 * SHMDS_ECORRUPT for an end no growth could have set or that this process
 * cannot map. One load when nothing moved. */
static int geo_sync(shmds_region *r)
{
    const struct hroot *h = hroot_of(r);
    geo_t *g = &r->arena[0];
    uint64_t e = __atomic_load_n(&h->heap_end, __ATOMIC_ACQUIRE);
    if (shmds__likely(e == __atomic_load_n(&g->end, __ATOMIC_RELAXED) + HDR) ||
        __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != HEAP_MAGIC)
        return 0;
    if ((e & (ALIGN - 1)) != 0 || e < init_end(r) || e > r->heap_max || e < g->first + 2 * HDR ||
        shmds__region_follow(r, e) != 0)
        return SHMDS_ECORRUPT;
    __atomic_store_n(&g->end, e - HDR, __ATOMIC_RELAXED);
    return 0;
}

static uint64_t tag_of(uint64_t off, uint64_t size, uint64_t flags)
{
    uint64_t h = (off ^ (size << 5) ^ flags ^ UINT64_C(0x5bd1e9955bd1e995)) *
                 UINT64_C(0x9e3779b97f4a7c15);
    h ^= h >> 29;
    return (h * UINT64_C(0xbf58476d1ce4e5b9)) >> 48;
}

static uint64_t mkword(uint64_t off, uint64_t size, bool is_free)
{
    uint64_t flags = F_MARK | (is_free ? F_FREE : 0);
    return size | flags | (tag_of(off, size, flags) << 48);
}

static uint64_t w_size(uint64_t w)
{
    return w & W_SIZE;
}

static bool w_free(uint64_t w)
{
    return (w & F_FREE) != 0;
}

/* True when `w` is a genuine header word for a block at `off`. */
static bool w_ok(uint64_t off, uint64_t w)
{
    return (w & (F_MARK | UINT64_C(0x8))) == F_MARK && (w & (F_FREE | F_CACHED)) != (F_FREE | F_CACHED) &&
           (w >> 48) == tag_of(off, w_size(w), w & (F_MARK | F_FREE));
}

static struct blk *B(const struct op *o, uint64_t off)
{
    return (struct blk *)(void *)(o->base + off);
}

static uint64_t *ctl_flbm(const struct op *o)
{
    return (uint64_t *)(void *)(o->base + o->g->ctl);
}

static uint32_t *ctl_slbm(const struct op *o, unsigned fl)
{
    return (uint32_t *)(void *)(o->base + o->g->slbm) + fl;
}

static uint64_t *ctl_head(const struct op *o, unsigned fl, unsigned sl)
{
    return (uint64_t *)(void *)(o->base + o->g->heads) + (size_t)fl * SL_N + sl;
}

/* A plausible block header offset (not the sentinel): a whole minimum
 * block fits between it and the end. */
static bool blk_off_ok(const geo_t *g, uint64_t off)
{
    return off >= g->first && off <= g->end - MIN_BLOCK && (off & (ALIGN - 1)) == 0;
}

/* Read and check the block at `off`: a genuine header whose size keeps it
 * inside the heap. */
HOT bool blk_read(const struct op *o, uint64_t off, uint64_t *size, bool *is_free)
{
    if (!blk_off_ok(o->g, off))
        return false;
    uint64_t w = __atomic_load_n(&B(o, off)->word, __ATOMIC_RELAXED);
    uint64_t s = w_size(w);
    if (!w_ok(off, w) || s < MIN_BLOCK || s > o->g->end - off)
        return false;
    *size = s;
    *is_free = w_free(w);
    return true;
}

/* The sentinel's header word must always be genuine. */
static bool sentinel_ok(const struct op *o)
{
    uint64_t w = B(o, o->g->end)->word;
    return w_ok(o->g->end, w) && w_size(w) == 0 && !w_free(w);
}

/* The block size that holds `size` payload bytes, or 0 when none can. */
static uint64_t block_size(const geo_t *g, uint64_t size)
{
    if (size == 0 || size > g->end - g->first)
        return 0;
    uint64_t bs = (size + HDR + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
    return bs < MIN_BLOCK ? MIN_BLOCK : bs;
}

/* ---------------------------------------------------------------------------
 * Derived state: free lists, bitmaps, counters
 * ------------------------------------------------------------------------ */

/* Put the free block `off` of `size` bytes at the head of its list. */
HOT void list_insert(struct op *o, uint64_t off, uint64_t size)
{
    unsigned fl, sl;
    mapping(size, &fl, &sl);
    uint64_t *head = ctl_head(o, fl, sl);
    uint64_t h = *head;
    if (h != 0 && !blk_off_ok(o->g, h)) {
        o->rebuild = true;
        return;
    }
    struct blk *b = B(o, off);
    b->next = h;
    b->prev = 0;
    if (h != 0)
        B(o, h)->prev = off;
    *head = off;
    *ctl_slbm(o, fl) |= 1u << sl;
    *ctl_flbm(o) |= UINT64_C(1) << fl;
    o->root->free_blocks++;
    o->root->free_bytes += size;
}

/* Take the free block `off` of `size` bytes off its list. Checks every link
 * it follows before it writes anything; false (nothing written) when the
 * links are damaged. */
HOT bool list_remove(struct op *o, uint64_t off, uint64_t size)
{
    unsigned fl, sl;
    mapping(size, &fl, &sl);
    if (fl >= o->g->fl_count)
        return false;
    struct blk *b = B(o, off);
    uint64_t next = b->next, prev = b->prev;
    uint64_t *head = ctl_head(o, fl, sl);
    if ((next != 0 && (!blk_off_ok(o->g, next) || B(o, next)->prev != off)) ||
        (prev != 0 && (!blk_off_ok(o->g, prev) || B(o, prev)->next != off)) ||
        (prev == 0 && *head != off))
        return false;
    if (next != 0)
        B(o, next)->prev = prev;
    if (prev != 0) {
        B(o, prev)->next = next;
    } else {
        *head = next;
        if (next == 0) {
            *ctl_slbm(o, fl) &= ~(1u << sl);
            if (*ctl_slbm(o, fl) == 0)
                *ctl_flbm(o) &= ~(UINT64_C(1) << fl);
        }
    }
    o->root->free_blocks--;
    o->root->free_bytes -= size;
    return true;
}

/* The free block `off` of `size` bytes gives its place in its list to
 * the free block `noff` of `nsize` bytes (the same class): a split that
 * leaves a remainder of the class it took the block from. Checks the links
 * as list_remove; false (nothing written) when they are damaged. */
HOT bool list_replace(struct op *o, uint64_t off, uint64_t size, uint64_t noff, uint64_t nsize)
{
    unsigned fl, sl;
    mapping(size, &fl, &sl);
    if (fl >= o->g->fl_count)
        return false;
    struct blk *b = B(o, off), *nb = B(o, noff);
    uint64_t next = b->next, prev = b->prev;
    uint64_t *head = ctl_head(o, fl, sl);
    if ((next != 0 && (!blk_off_ok(o->g, next) || B(o, next)->prev != off)) ||
        (prev != 0 && (!blk_off_ok(o->g, prev) || B(o, prev)->next != off)) ||
        (prev == 0 && *head != off))
        return false;
    nb->next = next;
    nb->prev = prev;
    if (next != 0)
        B(o, next)->prev = noff;
    if (prev != 0)
        B(o, prev)->next = noff;
    else
        *head = noff;
    o->root->free_bytes -= size - nsize;
    return true;
}

/* Rebuild free lists, bitmaps and counters from the physical walk, and
 * rewrite every prev_size tag and the sentinel from the block sizes. Never
 * changes a block's size or state (only a commit does), so it can be killed
 * anywhere and run again. 0, or SHMDS_ECORRUPT when the block sizes do not
 * tile the heap or two free blocks are neighbours: the physical layout
 * itself is damaged, beyond what a repair may guess at. */
COLD int rebuild(struct op *o)
{
    struct aroot *root = o->root;
    const geo_t *g = o->g;
    memset(o->r->base + g->ctl, 0, g->first - g->ctl);
    root->used_bytes = root->used_blocks = root->free_bytes = root->free_blocks = 0;

    uint64_t off = g->first, prev_size = 0;
    bool prev_free = false;
    uint64_t cap = (g->end - g->first) / MIN_BLOCK + 1;
    while (off < g->end) {
        uint64_t size;
        bool is_free;
        if (cap-- == 0 || !blk_read(o, off, &size, &is_free) || (is_free && prev_free))
            return SHMDS_ECORRUPT;
        SHMDS_FAULT("alloc.rebuild.block");
        B(o, off)->prev_size = prev_size;
        if (is_free) {
            list_insert(o, off, size);
        } else {
            root->used_blocks++;
            root->used_bytes += size;
        }
        prev_size = size;
        prev_free = is_free;
        off += size;
    }
    if (off != g->end)
        return SHMDS_ECORRUPT;
    B(o, g->end)->prev_size = prev_size;
    B(o, g->end)->word = mkword(g->end, 0, false);
    root->rebuilds++;
    return o->rebuild ? SHMDS_ECORRUPT : 0;
}

/* ---------------------------------------------------------------------------
 * The redo record
 * ------------------------------------------------------------------------ */

/* Add a store to the record. It is built in place: until the seal, a
 * repair ignores whatever the record holds. */
static void put(struct op *o, uint64_t off, uint64_t val)
{
    SHMDS_ASSERT(o->n < REDO_MAX, "an operation's redo record has room for every store it logs");
    struct redo_store *st = &o->root->redo[o->n++];
    st->off = off;
    st->val = val;
}

/* Store the boundary tag (prev_size) of the header at `off`. Tags follow
 * from the block sizes and a repair rewrites them all from the walk, so
 * they need no place in a commit's record: they are stored after it. */
static void set_tag(struct op *o, uint64_t off, uint64_t prev_size)
{
    B(o, off)->prev_size = prev_size;
}

static void apply(shmds_region *r, const struct redo_store *st, unsigned n)
{
    for (unsigned i = 0; i < n; i++) {
        __atomic_store_n((uint64_t *)(void *)(r->base + st[i].off), st[i].val, __ATOMIC_RELAXED);
        __atomic_signal_fence(__ATOMIC_SEQ_CST);
        SHMDS_FAULT("alloc.commit.store");
    }
}

/* Write the record, seal it (the commit point), make the stores, clear it. */
static void commit(struct op *o)
{
    struct aroot *root = o->root;
    root->redo_n = o->n;
    SHMDS_FAULT("alloc.commit.before_seal");
    __atomic_store_n(&root->redo_state, REDO_SEALED, __ATOMIC_RELEASE);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    SHMDS_FAULT("alloc.commit.sealed");
    apply(o->r, root->redo, o->n);
    __atomic_store_n(&root->redo_state, 0, __ATOMIC_RELEASE);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    SHMDS_FAULT("alloc.commit.cleared");
    o->n = 0;
}

/* ---------------------------------------------------------------------------
 * Locking, repair and lazy formatting
 * ------------------------------------------------------------------------ */

static void op_init(struct op *o, shmds_region *r, unsigned idx)
{
    o->r = r;
    o->base = r->base;
    o->g = &r->arena[idx];
    o->a = (struct arena *)(void *)(r->base + o->g->base);
    o->root = &o->a->root;
    o->idx = idx;
    o->n = 0;
    o->rebuild = false;
    o->rest_listed = false;
}


/* The region offset of hroot.pending (the carving's allocator slot). */
static uint64_t pending_off(void)
{
    return offsetof(struct shmds__hdr, alloc_root) + offsetof(struct hroot, pending);
}

/* The region offset of the heap root's cache table entry i (an
 * allocator slot: a cache record is allocated into it and freed from it). */
static uint64_t cc_entry_off(unsigned i)
{
    return offsetof(struct shmds__hdr, alloc_root) + offsetof(struct hroot, caches) +
           (uint64_t)i * sizeof(uint64_t);
}

static bool cc_entry(uint64_t off)
{
    return off >= cc_entry_off(0) && off < cc_entry_off(CACHE_MAX) && (off & 7) == 0;
}

/* The region offset of hroot.heap_end (stored by a growth's commit). */
static uint64_t heap_end_off(void)
{
    return offsetof(struct shmds__hdr, alloc_root) + offsetof(struct hroot, heap_end);
}

/* True when a redo store's target is a word some commit may write: a
 * block header word of this arena (its sentinel's included), or a slot
 * (an 8-aligned word in any arena's blocks, or a directory bucket head). */
static bool redo_target_ok(const struct op *o, uint64_t off)
{
    if ((off & 7) != 0)
        return false;
    if (shmds__hdr_slot_off(off) || off == pending_off() || cc_entry(off))
        return true;
    /* A growth's commit: the heap root's end, and words past arena 0's
     * old end (mapped once the region's size was published, which came
     * first). */
    if (o->idx == 0 && (off == heap_end_off() ||
                        (off >= o->g->first && off + 8 <= o->r->heap_max &&
                         shmds__off_ok(o->r, off, 8, 8))))
        return true;
    if (off >= o->g->first && off + 8 <= o->g->end + HDR)
        return true;
    return arena_of(o->r, off) >= 0 && off + 8 <= o->r->arena[arena_of(o->r, off)].end;
}

/* Called by an arena's lock, holding it, when the previous holder died
 * (`arg`: the struct op of the locker). */
static int repair(void *arg)
{
    const struct op *lk = arg;
    struct op o;
    op_init(&o, lk->r, lk->idx);
    struct aroot *root = o.root;
    if (__atomic_load_n(&root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC)
        return -1; /* arenas are formatted before anyone may lock them */
    bool redo = __atomic_load_n(&root->redo_state, __ATOMIC_ACQUIRE) == REDO_SEALED;
    if (redo) {
        unsigned n = root->redo_n;
        struct redo_store st[REDO_MAX];
        if (n > REDO_MAX)
            return -1;
        memcpy(st, root->redo, n * sizeof st[0]);
        for (unsigned i = 0; i < n; i++)
            if (!redo_target_ok(&o, st[i].off))
                return -1; /* a record no operation could have written */
        apply(o.r, st, n);
        SHMDS_FAULT("alloc.repair.redone");
        __atomic_store_n(&root->redo_state, 0, __ATOMIC_RELEASE);
    }
    if (o.idx == 0 && geo_sync(o.r) != 0)
        return -1;
    if ((root->seq & 1) != 0 || redo) {
        shmds__seq_write_begin(&root->seq);
        if (rebuild(&o) != 0)
            return -1;
        SHMDS_FAULT("alloc.repair.rebuilt");
        shmds__seq_write_end(&root->seq);
    }
    root->repairs++;
    return 0;
}

/* Lay out one empty arena. Under the heap lock, before the heap's magic:
 * nobody else can touch the arena, its lock included. */
COLD int format_arena(struct op *o)
{
    struct aroot *root = o->root;
    const geo_t *g = o->g;
    if (g->end <= g->first || g->end - g->first < MIN_BLOCK)
        return SHMDS_ECORRUPT; /* cannot happen above SHMDS_REGION_MIN_SIZE */
    memset(o->a, 0, sizeof *o->a);
    int rc = shmds_mutex_init(&o->a->lock);
    if (rc != 0)
        return rc;
    B(o, g->first)->prev_size = 0;
    B(o, g->first)->word = mkword(g->first, g->end - g->first, true);
    SHMDS_FAULT("alloc.format.mid");
    B(o, g->end)->prev_size = g->end - g->first;
    B(o, g->end)->word = mkword(g->end, 0, false);
    if ((rc = rebuild(o)) != 0)
        return rc;
    __atomic_store_n(&root->magic, ROOT_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

static int lock(struct op *o, bool try);
static int finish(struct op *o, int rc);

/* Add the arenas published since this handle last looked to its table,
 * each checked: its carrier a block start in arena 0, its range inside
 * arena 0 and apart from every earlier carved arena's. A count below the
 * handle's own (arenas are never unpublished, but the region's bytes are
 * not to be trusted: a test may even put an older image back) makes the
 * handle read the whole table again. */
static int arenas_sync(shmds_region *r, uint32_t n)
{
    const struct hroot *h = hroot_of(r);
    if (n > SHMDS__ARENAS_MAX || n == 0 || geo_sync(r) != 0)
        return SHMDS_ECORRUPT;
    if (n < r->narenas)
        r->narenas = 1;
    const geo_t *g0 = &r->arena[0];
    for (uint32_t i = r->narenas; i < n; i++) {
        uint64_t c = __atomic_load_n(&h->arenas[i].carrier, __ATOMIC_RELAXED);
        uint64_t end = __atomic_load_n(&h->arenas[i].end, __ATOMIC_RELAXED);
        uint64_t lo = (c + 63) & ~UINT64_C(63);
        if ((c & (ALIGN - 1)) != 0 || c < g0->first + HDR || c > g0->end || end > g0->end ||
            (end & (ALIGN - 1)) != 0 || end < lo || end - lo < ARENA_HDR + 1024)
            return SHMDS_ECORRUPT;
        /* Carriers are blocks of arena 0, so carved arenas never overlap;
         * they need not come in address order (a carve takes whatever
         * block arena 0 hands out, below an earlier one after frees). */
        for (uint32_t j = 1; j < i; j++)
            if (c - HDR < r->arena[j].end + HDR && r->arena[j].carrier - HDR < end)
                return SHMDS_ECORRUPT;
        arena_geo(&r->arena[i], lo, end);
        r->arena[i].carrier = c;
        r->narenas = i + 1;
    }
    return 0;
}

/* Lay out the carved arena whose carrier (a live block of arena 0) is at
 * user offset `c`, and publish it as arena n. Under the heap lock; every
 * store absolute, so it can be done again after a death. */
static int carve_finish(shmds_region *r, uint64_t c, uint32_t n)
{
    struct hroot *h = hroot_of(r);
    uint64_t usable;
    int rc = shmds__alloc_block_live(r, c, &usable);
    if (rc != 0 || n >= SHMDS__ARENAS_MAX)
        return SHMDS_ECORRUPT;
    uint64_t lo = (c + 63) & ~UINT64_C(63), end = c + usable;
    if (end < lo || end - lo < ARENA_HDR + 1024)
        return SHMDS_ECORRUPT;
    struct op o;
    arena_geo(&r->arena[n], lo, end);
    op_init(&o, r, n);
    if ((rc = format_arena(&o)) != 0)
        return rc;
    h->arenas[n].carrier = c;
    h->arenas[n].end = end;
    __atomic_store_n(&h->narenas, n + 1, __ATOMIC_RELEASE);
    SHMDS_FAULT("alloc.arena.published");
    __atomic_store_n(&h->pending, 0, __ATOMIC_RELEASE);
    return arenas_sync(r, n + 1);
}

/* The heap lock's repair. A formatter that died left the heap's magic
 * unset, and the next one formats arena 0 again. A carver that died left
 * its carrier in `pending` (once arena 0 is settled): lay it out and
 * publish it, unless it was published already. */
static int heap_repair(void *arg)
{
    shmds_region *r = arg;
    table_init(r);
    struct hroot *h = hroot_of(r);
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != HEAP_MAGIC)
        return 0;
    struct op o;
    op_init(&o, r, 0);
    int rc = lock(&o, false);
    if (rc < 0)
        return -1;
    finish(&o, 0);
    uint64_t c = __atomic_load_n(&h->pending, __ATOMIC_ACQUIRE);
    uint32_t n = __atomic_load_n(&h->narenas, __ATOMIC_ACQUIRE);
    if (arenas_sync(r, n) != 0)
        return -1;
    if (c == 0)
        return 0;
    if (n > 1 && h->arenas[n - 1].carrier == c) {
        __atomic_store_n(&h->pending, 0, __ATOMIC_RELEASE);
        return 0;
    }
    return carve_finish(r, c, n) == 0 ? 0 : -1;
}


/* Format arena 0 if nobody has, and bring the handle's arena table up to
 * date: 0 when the heap is ready. Two loads when it is. */
static int heap_ready(shmds_region *r)
{
    table_init(r);
    struct hroot *h = hroot_of(r);
    if (shmds__likely(__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == HEAP_MAGIC)) {
        uint32_t n = __atomic_load_n(&h->narenas, __ATOMIC_ACQUIRE);
        int rc = geo_sync(r);
        return rc != 0 || shmds__likely(n == r->narenas) ? rc : arenas_sync(r, n);
    }
    int rc = shmds__lock(r, &r->hdr->alloc_lock, heap_repair, r);
    if (rc < 0)
        return rc;
    rc = 0;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != HEAP_MAGIC) {
        struct op o;
        op_init(&o, r, 0);
        memset(h, 0, sizeof *h);
        if ((rc = format_arena(&o)) == 0) {
            h->narenas = 1;
            h->heap_end = o.g->end + HDR;
            __atomic_store_n(&h->magic, HEAP_MAGIC, __ATOMIC_RELEASE);
        }
    }
    shmds_mutex_unlock(&r->hdr->alloc_lock);
    return rc != 0 ? rc : heap_ready(r);
}

static void unlock(struct op *o)
{
    shmds_mutex_unlock(&o->a->lock);
}

/* Take the arena's lock (repairing after a dead holder; without waiting
 * when `try`: -EBUSY) and open the operation `o` (set up by op_init): the
 * sequence word goes odd. The heap must be formatted (heap_ready). */
static int lock(struct op *o, bool try)
{
    shmds_region *r = o->r;
    int rc = try ? shmds__lock_try(r, &o->a->lock, repair, o)
                 : shmds__lock(r, &o->a->lock, repair, o);
    if (rc < 0)
        return rc;
    if (__atomic_load_n(&o->root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC ||
        (o->idx == 0 && geo_sync(r) != 0)) {
        unlock(o);
        return SHMDS_ECORRUPT;
    }
    shmds__seq_write_begin(&o->root->seq);
    return 0;
}

/* Close the operation: rebuild the derived state if a damaged free list was
 * met, then the sequence word goes even; unlock. Returns rc, or
 * SHMDS_ECORRUPT when the rebuild failed. */
static int finish(struct op *o, int rc)
{
    if (o->rebuild) {
        o->rebuild = false;
        if (rebuild(o) != 0)
            rc = SHMDS_ECORRUPT;
    }
    shmds__seq_write_end(&o->root->seq);
    unlock(o);
    return rc;
}

/* ---------------------------------------------------------------------------
 * The operations, under the lock
 * ------------------------------------------------------------------------ */

/* A live block and its two physical neighbours, as live_block found them. */
struct live {
    uint64_t size;  /* the block's size */
    uint64_t psize; /* the previous block's size (0: the block is the first) */
    uint64_t nsize; /* the next block's size (0: the block is the last) */
    bool pfree, nfree;
};

/* Check that `b` is the header of a live block, with both neighbours
 * genuine, their sizes agreeing with the boundary tags, and a free next
 * block's own tag agreeing too: everything free and resize rely on, read
 * once. -EINVAL when `b` is not a block start at all, SHMDS_ECORRUPT when it
 * looks like one but the heap around it disagrees. */
static int live_block(const struct op *o, uint64_t b, bool cached_ok, struct live *lv)
{
    bool is_free;
    if (!blk_read(o, b, &lv->size, &is_free) || is_free ||
        (!cached_ok && (__atomic_load_n(&B(o, b)->word, __ATOMIC_RELAXED) & F_CACHED) != 0))
        return -EINVAL;
    uint64_t nx = b + lv->size, ps = B(o, b)->prev_size;
    bool has_prev = b != o->g->first && ps <= b - o->g->first;
    /* Both neighbours are usually cache misses: start them together. */
    __builtin_prefetch(B(o, nx));
    if (has_prev)
        __builtin_prefetch(B(o, b - ps));
    if (B(o, nx)->prev_size != lv->size)
        return SHMDS_ECORRUPT;
    lv->nsize = 0;
    lv->nfree = false;
    if (nx != o->g->end &&
        (!blk_read(o, nx, &lv->nsize, &lv->nfree) ||
         (lv->nfree && B(o, nx + lv->nsize)->prev_size != lv->nsize)))
        return SHMDS_ECORRUPT;
    lv->psize = 0;
    lv->pfree = false;
    if (b == o->g->first)
        return ps == 0 ? 0 : SHMDS_ECORRUPT;
    if (!has_prev || !blk_read(o, b - ps, &lv->psize, &lv->pfree) || lv->psize != ps)
        return SHMDS_ECORRUPT;
    return 0;
}

/* Find a free block of at least `bs` bytes and take it off its list.
 * With `split`, when the block's remainder after a split of `bs` bytes
 * falls in the block's own class (a large block cut from its front), the
 * remainder takes the block's place in the list instead (rest_listed):
 * the lists are derived state, and the commit makes the remainder a block. */
static int take_free(struct op *o, uint64_t bs, bool split, uint64_t *out, uint64_t *out_size)
{
    const geo_t *g = o->g;
    uint64_t want = bs;
    if (bs >= (UINT64_C(1) << SMALL_LOG))
        want += (UINT64_C(1) << (fls64(bs) - SL_LOG)) - 1;
    unsigned fl, sl;
    mapping(want, &fl, &sl);
    uint64_t cand = 0;
    if (fl < g->fl_count) {
        uint32_t slmap = *ctl_slbm(o, fl) & (~0u << sl);
        if (slmap == 0) {
            uint64_t flmap = fl + 1 < 64 ? *ctl_flbm(o) & (~UINT64_C(0) << (fl + 1)) : 0;
            if (flmap != 0) {
                fl = (unsigned)__builtin_ctzll(flmap);
                slmap = fl < g->fl_count ? *ctl_slbm(o, fl) : 0;
            }
        }
        if (slmap != 0) {
            sl = (unsigned)__builtin_ctz(slmap);
            cand = *ctl_head(o, fl, sl);
            if (cand == 0) {
                o->rebuild = true;
                return SHMDS_ECORRUPT;
            }
        }
    }
    if (cand == 0) {
        /* Nearly full: the only fit may share the request's own class. */
        mapping(bs, &fl, &sl);
        if (fl >= g->fl_count)
            return -ENOMEM;
        uint64_t cap = (g->end - g->first) / MIN_BLOCK;
        for (uint64_t b = *ctl_head(o, fl, sl); b != 0; b = B(o, b)->next) {
            uint64_t size;
            bool is_free;
            if (cap-- == 0 || !blk_read(o, b, &size, &is_free) || !is_free) {
                o->rebuild = true;
                return SHMDS_ECORRUPT;
            }
            if (size >= bs) {
                cand = b;
                break;
            }
        }
        if (cand == 0)
            return -ENOMEM;
    }
    uint64_t size;
    bool is_free;
    if (!blk_read(o, cand, &size, &is_free) || !is_free || size < bs ||
        B(o, cand + size)->prev_size != size) {
        o->rebuild = true;
        return SHMDS_ECORRUPT;
    }
    unsigned f1, s1, f2, s2;
    if (split && size - bs >= MIN_BLOCK) {
        mapping(size, &f1, &s1);
        mapping(size - bs, &f2, &s2);
        o->rest_listed = f1 == f2 && s1 == s2;
    }
    if (!(o->rest_listed ? list_replace(o, cand, size, cand + bs, size - bs)
                         : list_remove(o, cand, size))) {
        o->rest_listed = false;
        o->rebuild = true;
        return SHMDS_ECORRUPT;
    }
    *out = cand;
    *out_size = size;
    return 0;
}

/* Records the stores that turn the free block `b` (size `size`, already off
 * its list) into a used block of `bs` bytes, splitting off the rest when it
 * can be a block; returns the remainder's offset (0 when none). */
static uint64_t put_split(struct op *o, uint64_t b, uint64_t size, uint64_t bs)
{
    uint64_t rest = size - bs;
    if (rest < MIN_BLOCK) {
        put(o, b + 8, mkword(b, size, false));
        return 0;
    }
    uint64_t t = b + bs;
    put(o, t + 8, mkword(t, rest, true));
    put(o, b + 8, mkword(b, bs, false));
    return t;
}

/* After the commit of a split (put_split returned `t`): the remainder's
 * tag and its next block's. */
static void split_tags(struct op *o, uint64_t b, uint64_t size, uint64_t t)
{
    set_tag(o, t, t - b);
    set_tag(o, b + size, b + size - t);
}

/* Allocate a block of `bs` bytes; slot_off (or 0) receives its offset in the
 * same commit. The first `zero` bytes of the block are zeroed before that
 * commit: the block is still free in its header word then, and a repair
 * rebuilds its free-list links from the walk. */
static int do_alloc(struct op *o, uint64_t bs, uint64_t slot_off, uint64_t zero, uint64_t *out)
{
    uint64_t b, size;
    int rc = take_free(o, bs, true, &b, &size);
    if (rc != 0)
        return rc;
    SHMDS_FAULT("alloc.alloc.unlinked");
    if (zero != 0) {
        memset(o->base + b + HDR, 0, zero);
        SHMDS_FAULT("alloc.alloc.zeroed");
    }
    uint64_t t = put_split(o, b, size, bs);
    if (slot_off != 0)
        put(o, slot_off, b + HDR);
    commit(o);
    uint64_t used = t != 0 ? bs : size;
    o->root->used_blocks++;
    o->root->used_bytes += used;
    if (t != 0) {
        split_tags(o, b, size, t);
        if (!o->rest_listed)
            list_insert(o, t, size - bs);
    }
    o->rest_listed = false;
    SHMDS_FAULT("alloc.alloc.done");
    *out = b + HDR;
    return 0;
}

/* Free the live block `b` (checked by live_block into `lv`), merging it
 * with free neighbours; slot_off (or 0) is cleared in the same commit. */
static int do_free(struct op *o, uint64_t b, const struct live *lv, uint64_t slot_off)
{
    uint64_t size = lv->size, psize = lv->psize, nsize = lv->nsize;
    uint64_t start = b, total = size, nx = b + size;
    /* Everything was checked: from here on the heap changes. */
    if (lv->pfree) {
        if (!list_remove(o, b - psize, psize)) {
            o->rebuild = true;
            return SHMDS_ECORRUPT;
        }
        start = b - psize;
        total += psize;
        put(o, b + 8, 0);
    }
    if (lv->nfree) {
        if (!list_remove(o, nx, nsize)) {
            o->rebuild = true;
            return SHMDS_ECORRUPT;
        }
        total += nsize;
        put(o, nx + 8, 0);
        nx += nsize;
    }
    SHMDS_FAULT("alloc.free.unlinked");
    put(o, start + 8, mkword(start, total, true));
    if (slot_off != 0)
        put(o, slot_off, 0);
    commit(o);
    set_tag(o, nx, total);
    o->root->used_blocks--;
    o->root->used_bytes -= size;
    list_insert(o, start, total);
    SHMDS_FAULT("alloc.free.done");
    return 0;
}

/* Resize the live block `b` (checked by live_block into `lv`) to `bs` bytes
 * without moving it, when that is possible. 0 done; 1 not possible (nothing
 * changed). */
static int do_resize(struct op *o, uint64_t b, const struct live *lv, uint64_t bs)
{
    uint64_t size = lv->size, nx = b + size, nsize = lv->nsize;
    bool nfree = lv->nfree;
    uint64_t avail = size + (nfree ? nsize : 0);
    if (avail < bs)
        return 1;
    uint64_t rest = avail - bs;
    if (!nfree && rest < MIN_BLOCK)
        return 0; /* shrinking by less than a block: keep it as it is */
    if (nfree && !list_remove(o, nx, nsize)) {
        o->rebuild = true;
        return SHMDS_ECORRUPT;
    }
    SHMDS_FAULT("alloc.realloc.unlinked");
    uint64_t after = b + avail, newsize = rest >= MIN_BLOCK ? bs : avail;
    if (nfree)
        put(o, nx + 8, 0);
    if (rest >= MIN_BLOCK)
        put(o, b + bs + 8, mkword(b + bs, rest, true));
    put(o, b + 8, mkword(b, newsize, false));
    commit(o);
    if (rest >= MIN_BLOCK)
        split_tags(o, b, avail, b + bs);
    else
        set_tag(o, after, avail);
    o->root->used_bytes = o->root->used_bytes - size + newsize;
    if (rest >= MIN_BLOCK)
        list_insert(o, b + bs, rest);
    SHMDS_FAULT("alloc.realloc.done");
    return 0;
}

/* ---------------------------------------------------------------------------
 * Public and internal entry points
 * ------------------------------------------------------------------------ */

/* The region offset of a slot pointer, when the slot may be named in a
 * commit: 8-aligned, inside some arena's blocks (a directory entry's off
 * field, a directory block's link), or a directory bucket head (region.c).
 * 0 otherwise. */
static uint64_t slot_offset(shmds_region *r, const shmds_off_t *slot)
{
    const unsigned char *p = (const unsigned char *)slot;
    table_init(r);
    if (slot == NULL || p < r->base || p >= r->base + __atomic_load_n(&r->size, __ATOMIC_ACQUIRE) ||
        geo_sync(r) != 0)
        return 0;
    uint64_t off = (uint64_t)(p - r->base);
    if (off < r->heap_off)
        return shmds__hdr_slot_off(off) ? off : 0;
    int i = arena_of(r, off);
    return i >= 0 && (off & 7) == 0 && off + 8 <= r->arena[i].end ? off : 0;
}

/* One allocation request: `size` bytes, into the slot at slot_off (or 0),
 * the first bytes zeroed when `zero`; then, under the same lock, as many
 * of the slots at more[0..nmore) as are empty and fit, with blocks of the
 * same size (shmds__alloc_many_into). */
struct req {
    uint64_t size;
    uint64_t slot_off;
    bool zero;
    unsigned nmore;
    const uint64_t *more;
};

/* Allocate in the arena `o` has locked; unlocks. -ENOMEM when this arena
 * has no room (the caller tries the next one). */
static int alloc_in(struct op *o, const struct req *q, shmds_off_t *out)
{
    uint64_t bs = block_size(o->g, q->size), zero = q->zero ? q->size : 0;
    if (bs == 0)
        return finish(o, -ENOMEM);
    if (q->slot_off != 0 && __atomic_load_n((uint64_t *)(void *)(o->base + q->slot_off),
                                            __ATOMIC_RELAXED) != SHMDS_NULL)
        return finish(o, -EINVAL);
    int rc = do_alloc(o, bs, q->slot_off, zero, out);
    if (rc == SHMDS_ECORRUPT && o->rebuild) {
        /* A damaged free list: rebuild it from the walk and try once more. */
        o->rebuild = false;
        if (rebuild(o) == 0)
            rc = do_alloc(o, bs, q->slot_off, zero, out);
    }
    for (unsigned i = 0; rc == 0 && i < q->nmore; i++) {
        uint64_t *slot = (uint64_t *)(void *)(o->base + q->more[i]), extra;
        if (__atomic_load_n(slot, __ATOMIC_RELAXED) == SHMDS_NULL &&
            do_alloc(o, bs, q->more[i], 0, &extra) != 0)
            break; /* no room for more: the first one is what counts */
    }
    return finish(o, rc);
}

/* Carve one more arena out of arena 0 (module comment): 0 done, or the
 * table had grown meanwhile (the caller looks again); -ENOMEM when the
 * table is full or arena 0 has no room for it; lock errors. */
COLD int carve(shmds_region *r)
{
    uint32_t seen = r->narenas;
    if (seen >= SHMDS__ARENAS_MAX)
        return -ENOMEM;
    int rc = shmds__lock(r, &r->hdr->alloc_lock, heap_repair, r);
    if (rc < 0)
        return rc;
    if ((rc = heap_ready(r)) != 0 || r->narenas != seen) {
        shmds_mutex_unlock(&r->hdr->alloc_lock);
        return rc;
    }
    const geo_t *g0 = &r->arena[0];
    uint64_t chunk = (g0->end - g0->first) / CHUNK_DIV;
    chunk = chunk < CHUNK_MIN ? CHUNK_MIN : chunk > CHUNK_MAX ? CHUNK_MAX : chunk;
    struct op o;
    op_init(&o, r, 0);
    shmds_off_t c;
    struct req q = {chunk, pending_off(), false, 0, NULL};
    if ((rc = lock(&o, false)) == 0 && (rc = alloc_in(&o, &q, &c)) == 0) {
        SHMDS_FAULT("alloc.arena.carved");
        rc = carve_finish(r, c, seen);
    }
    shmds_mutex_unlock(&r->hdr->alloc_lock);
    return rc;
}

int shmds__alloc_arena_add(shmds_region *r)
{
    int rc = shmds__writable(r);
    if (rc == 0)
        rc = heap_ready(r);
    return rc != 0 ? rc : carve(r);
}

/* Try arena i: 1 when it is busy (try) or has no room (-ENOMEM, noted
 * in the handle for small requests), else what the allocation returned. */
static int alloc_at(shmds_region *r, unsigned i, bool try, const struct req *q, shmds_off_t *out)
{
    struct op o;
    op_init(&o, r, i);
    int rc = lock(&o, try);
    if (rc == -EBUSY && try)
        return 1;
    if (rc < 0)
        return rc;
    rc = alloc_in(&o, q, out);
    if (rc == -ENOMEM) {
        if (q->size < LARGE)
            r->arena_full |= UINT32_C(1) << i;
        return 1;
    }
    if (rc == 0 && q->size < LARGE)
        r->arena_hint = i; /* large requests always start at arena 0 */
    return rc;
}

/* The allocation's slow path: the handle's arena was busy or full. In
 * turn: every other arena that can be locked without waiting (a small
 * request leaves arena 0 for later once it has moved off it, so that
 * processes that met each other keep apart); a new arena carved for a
 * small request; then, waiting, arena 0, the busy arenas and those found
 * full before. */
COLD int alloc_slow(shmds_region *r, unsigned first, const struct req *q, shmds_off_t *out)
{
    bool small = q->size < LARGE;
    uint32_t busy = 0;
    bool later0 = small && first != 0;
    int rc;
    for (unsigned i = 0; i < r->narenas; i++) {
        if (i == first || (later0 && i == 0) || (small && (r->arena_full >> i) & 1))
            continue;
        if ((rc = alloc_at(r, i, true, q, out)) <= 0)
            return rc;
        if (((r->arena_full >> i) & 1) == 0)
            busy |= UINT32_C(1) << i;
    }
    if (small && (rc = carve(r)) != -ENOMEM) {
        if (rc < 0)
            return rc;
        if ((rc = alloc_at(r, r->narenas - 1, false, q, out)) <= 0)
            return rc;
    }
    /* Wait where others are busy, then look again where there was no
     * room (frees may have made some). */
    if (later0 || first == 0)
        busy |= 1;
    busy |= UINT32_C(1) << first;
    r->arena_full = 0;
    for (int pass = 0; pass < 2; pass++)
        for (unsigned i = 0; i < r->narenas; i++) {
            if ((((busy >> i) & 1) != 0) != (pass == 0))
                continue;
            if ((rc = alloc_at(r, i, false, q, out)) <= 0)
                return rc;
        }
    return -ENOMEM;
}

/* Allocate in the arena this handle used last (arena 0 for a large
 * request) when it can be locked without waiting and has room; else the
 * slow path. Returns as shmds_alloc. */
FLAT int alloc_req(shmds_region *r, const struct req *q, shmds_off_t *out)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    if (q->size == 0)
        return -EINVAL;
    if ((rc = heap_ready(r)) != 0)
        return rc;
    unsigned first = q->size >= LARGE || r->arena_hint >= r->narenas ? 0 : r->arena_hint;
    if (((r->arena_full >> first) & 1) == 0 && (rc = alloc_at(r, first, true, q, out)) <= 0)
        return rc;
    return alloc_slow(r, first, q, out);
}

/* ---------------------------------------------------------------------------
 * The handles' block caches (module comment, "Caches")
 * ------------------------------------------------------------------------ */

/* A cache record: an allocated block of arena 0, named by an entry of the
 * heap root's cache table. Each non-zero slot is an allocator slot holding
 * a cached block: a used block of size MIN_BLOCK + 16 k (k its class),
 * normally flagged F_CACHED. */
struct crec {
    uint64_t owner; /* the making process: pid << 32 | low half of its start time */
    uint64_t pad[7];
    uint64_t slot[CC_CLASSES][CC_SLOTS];
    uint64_t batch[CC_BATCH]; /* small blocks of any size, freed to their arenas together */
};
SHMDS__STATIC_ASSERT(offsetof(struct crec, slot) == 64, "format: record slots");
/* Every slot of a record, batch included, as one array (cc_give, cc_scan). */
SHMDS__STATIC_ASSERT(offsetof(struct crec, batch) ==
                         offsetof(struct crec, slot) + CC_CLASSES * CC_SLOTS * sizeof(uint64_t),
                     "format: a record's batch follows its slots");
SHMDS__STATIC_ASSERT(sizeof(struct crec) == 2624, "format: record size");
#define CC_ALL (CC_CLASSES * CC_SLOTS + CC_BATCH)

FLAT int free_common(shmds_region *r, shmds_off_t off, uint64_t slot_off, const shmds_off_t *slot,
                     bool cached_ok);
static int lock_owner(shmds_region *r, shmds_off_t off, struct op *o);

/* The slots of the record at user offset `x`, batch included: CC_ALL of them. */
static uint64_t *cc_slots(const shmds_region *r, uint64_t x)
{
    return (uint64_t *)(void *)(r->base + x + offsetof(struct crec, slot));
}

/* The block size a record's slot j may hold: its class's, or for a batch
 * slot any cached size (0). */
static uint64_t cc_slot_size(unsigned j)
{
    return j < CC_CLASSES * CC_SLOTS ? MIN_BLOCK + (uint64_t)(j / CC_SLOTS) * ALIGN : 0;
}

static uint64_t cc_owner_self(void)
{
    return (uint64_t)shmds__self_pid() << 32 | (shmds__self_start() & UINT32_MAX);
}

static bool cc_owner_alive(uint64_t owner)
{
    uint32_t pid = (uint32_t)(owner >> 32), st = (uint32_t)owner;
    if (!shmds__proc_alive(pid, 0))
        return false;
    return st == 0 || (uint32_t)shmds__proc_start(pid) == st;
}

/* The in-process lock over the handle's record: threads sharing a handle
 * take and put blocks one at a time. Never held across another lock by the
 * fast paths; a process killed holding it takes it along. */
HOT void cc_lock(shmds_region *r)
{
    while (__atomic_exchange_n(&r->cache_lock, 1, __ATOMIC_ACQUIRE) != 0)
        while (__atomic_load_n(&r->cache_lock, __ATOMIC_RELAXED) != 0)
            shmds__cpu_relax();
}

HOT void cc_unlock(shmds_region *r)
{
    __atomic_store_n(&r->cache_lock, 0, __ATOMIC_RELEASE);
}

/* The user offset of this process's record for the handle, or 0. */
HOT uint64_t cc_mine(shmds_region *r)
{
    if (__atomic_load_n(&r->cache_pid, __ATOMIC_ACQUIRE) != shmds__self_pid())
        return 0;
    return __atomic_load_n(&r->cache_off, __ATOMIC_RELAXED);
}

/* The header word of the used block at user offset `x` in one of the
 * handle's arenas, checked (genuine, inside its arena); false if it is
 * not one. Reads that word only. */
HOT bool cc_block(const shmds_region *r, uint64_t x, uint64_t *word)
{
    int a = x >= HDR && (x & (ALIGN - 1)) == 0 ? arena_of(r, x - HDR) : -1;
    if (a < 0)
        return false;
    const geo_t *g = &r->arena[a];
    uint64_t b = x - HDR;
    if (!blk_off_ok(g, b))
        return false;
    uint64_t w = __atomic_load_n((const uint64_t *)(const void *)(r->base + b + 8), __ATOMIC_RELAXED);
    uint64_t s = w_size(w);
    if (!w_ok(b, w) || w_free(w) || s < MIN_BLOCK || s > g->end - b)
        return false;
    *word = w;
    return true;
}

/* Take a block of `bs` bytes (a cached size), or else of one of the CC_UP
 * sizes above it, from the handle's record: 0 with *out; 1 when it holds
 * none; SHMDS_ECORRUPT when a slot holds something that is not a cached
 * block of its size. */
HOT int cc_take(shmds_region *r, uint64_t bs, shmds_off_t *out)
{
    uint64_t c = cc_mine(r);
    if (c == 0)
        return 1;
    cc_lock(r);
    if (__atomic_load_n(&r->cache_off, __ATOMIC_RELAXED) != c) {
        cc_unlock(r);
        return 1;
    }
    unsigned k = (unsigned)(bs / ALIGN - MIN_BLOCK / ALIGN), i = 0;
    uint64_t *s = ((struct crec *)(void *)(r->base + c))->slot[k];
    uint64_t x = 0, w;
    for (unsigned up = 0;; up++) {
        while (i < CC_SLOTS && (x = __atomic_load_n(&s[i], __ATOMIC_RELAXED)) == 0)
            i++;
        if (x != 0)
            break;
        if (up == CC_UP || k + 1 == CC_CLASSES) {
            cc_unlock(r);
            return 1;
        }
        s += CC_SLOTS; /* the next size's slots */
        bs += ALIGN;
        k++;
        i = 0;
    }
    if (!cc_block(r, x, &w) || (w & F_CACHED) == 0 || w_size(w) != bs) {
        cc_unlock(r);
        return SHMDS_ECORRUPT;
    }
    /* The flag first: killed between, the slot still names the block
     * (flagged or not, a cache's slot is given back the same way). */
    __atomic_store_n((uint64_t *)(void *)(r->base + x - HDR + 8), w & ~F_CACHED, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    SHMDS_FAULT("alloc.cache.unflagged");
    __atomic_store_n(&s[i], 0, __ATOMIC_RELAXED);
    cc_unlock(r);
    *out = x;
    return 0;
}

/* Give every block in the record at user offset `x` (named by table entry
 * i) back to its arena, each freed from its slot by one commit, then the
 * record itself from its entry. Under the heap lock; every step is a
 * commit, so a death anywhere leaves a record the next reclaim finishes. */
static int cc_give(shmds_region *r, unsigned i, uint64_t x)
{
    uint64_t *all = cc_slots(r, x);
    for (unsigned j = 0; j < CC_ALL; j++) {
        uint64_t *s = &all[j];
        if (__atomic_load_n(s, __ATOMIC_RELAXED) == 0)
            continue;
        int rc = free_common(r, SHMDS_NULL, (uint64_t)((unsigned char *)s - r->base), s, true);
        if (rc != 0)
            return rc;
        SHMDS_FAULT("alloc.cache.given");
    }
    uint64_t *e = (uint64_t *)(void *)(r->base + cc_entry_off(i));
    return free_common(r, SHMDS_NULL, cc_entry_off(i), e, false);
}

/* Finish every arena's dead operation (a sealed record may still have to
 * clear a slot); the heap lock is held or not needed. */
static int settle_arenas(shmds_region *r)
{
    int rc = heap_ready(r);
    for (unsigned i = 0; i < r->narenas && rc == 0; i++) {
        struct op o;
        op_init(&o, r, i);
        if ((rc = lock(&o, false)) == 0)
            rc = finish(&o, 0);
    }
    return rc;
}

/* Give back the records of dead processes (and records whose maker died
 * before it owned them), under the heap lock. */
static int cc_reclaim_locked(shmds_region *r)
{
    struct hroot *h = hroot_of(r);
    bool settled = false;
    uint64_t mine = cc_mine(r);
    for (unsigned i = 0; i < CACHE_MAX; i++) {
        uint64_t x = __atomic_load_n(&h->caches[i], __ATOMIC_ACQUIRE), usable;
        if (x == 0 || x == mine)
            continue;
        if (shmds__alloc_block_live(r, x, &usable) != 0 || usable < sizeof(struct crec))
            return SHMDS_ECORRUPT;
        uint64_t owner = __atomic_load_n(&((struct crec *)(void *)(r->base + x))->owner,
                                         __ATOMIC_ACQUIRE);
        if (owner != 0 && cc_owner_alive(owner))
            continue;
        int rc;
        if (!settled && (rc = settle_arenas(r)) != 0)
            return rc;
        settled = true;
        SHMDS_FAULT("alloc.cache.reclaim");
        if ((rc = cc_give(r, i, x)) != 0)
            return rc;
    }
    return 0;
}

static int cc_reclaim(shmds_region *r)
{
    int rc = shmds__lock(r, &r->hdr->alloc_lock, heap_repair, r);
    if (rc < 0)
        return rc;
    rc = cc_reclaim_locked(r);
    shmds_mutex_unlock(&r->hdr->alloc_lock);
    return rc;
}

/* Make the handle's record: the dead processes' records given back first,
 * then a zeroed block of arena 0 allocated into a free table entry, then
 * its owner. 0 done (or made meanwhile by another thread), 1 not made (the
 * heap too small or full, the table full: tried again after CC_RETRY
 * frees). */
COLD int cc_make(shmds_region *r)
{
    uint32_t retry = __atomic_load_n(&r->cache_retry, __ATOMIC_RELAXED);
    if (retry != 0) {
        __atomic_store_n(&r->cache_retry, retry - 1, __ATOMIC_RELAXED);
        return 1;
    }
    if (shmds__rdonly(r) || heap_ready(r) != 0 ||
        r->arena[0].end - r->arena[0].first < CC_HEAP_MIN)
        return 1;
    if (shmds__lock(r, &r->hdr->alloc_lock, heap_repair, r) < 0)
        return 1;
    int rc = 0;
    uint32_t me = shmds__self_pid();
    if (__atomic_load_n(&r->cache_pid, __ATOMIC_ACQUIRE) != me) {
        struct hroot *h = hroot_of(r);
        unsigned i = 0;
        shmds_off_t x = 0;
        rc = 1;
        if (cc_reclaim_locked(r) == 0) {
            while (i < CACHE_MAX && __atomic_load_n(&h->caches[i], __ATOMIC_ACQUIRE) != 0)
                i++;
        } else {
            i = CACHE_MAX;
        }
        struct op o;
        op_init(&o, r, 0);
        struct req q = {sizeof(struct crec), cc_entry_off(i), true, 0, NULL};
        if (i < CACHE_MAX && lock(&o, false) == 0 && alloc_in(&o, &q, &x) == 0) {
            SHMDS_FAULT("alloc.cache.made");
            struct crec *c = (struct crec *)(void *)(r->base + x);
            __atomic_store_n(&c->owner, cc_owner_self(), __ATOMIC_RELEASE);
            /* A forked child's copy of the handle may carry its parent's
             * lock word: nothing of this process uses it yet. */
            __atomic_store_n(&r->cache_lock, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&r->cache_bn, 0, __ATOMIC_RELAXED);
            __atomic_store_n(&r->cache_off, x, __ATOMIC_RELAXED);
            __atomic_store_n(&r->cache_pid, me, __ATOMIC_RELEASE);
            rc = 0;
        }
        if (rc != 0)
            __atomic_store_n(&r->cache_retry, CC_RETRY, __ATOMIC_RELAXED);
    }
    shmds_mutex_unlock(&r->hdr->alloc_lock);
    return rc;
}

/* Start the cache misses that freeing the batched block at user offset `y`
 * will meet: the free-list neighbours of its free physical neighbours
 * (whose headers were fetched when `y` entered the batch). A hint only:
 * it reads words inside the region and writes nothing. */
static void cc_prefetch_links(const shmds_region *r, uint64_t y)
{
    uint64_t lim = __atomic_load_n(&r->size, __ATOMIC_RELAXED);
    if (y < HDR || y >= lim)
        return;
    const struct blk *b = (const struct blk *)(const void *)(r->base + y - HDR);
    uint64_t ps = __atomic_load_n(&b->prev_size, __ATOMIC_RELAXED);
    uint64_t nb[2] = {y - HDR + w_size(__atomic_load_n(&b->word, __ATOMIC_RELAXED)),
                      ps <= y - HDR ? y - HDR - ps : lim};
    for (unsigned i = 0; i < 2; i++) {
        if (nb[i] >= lim || lim - nb[i] < MIN_BLOCK)
            continue;
        const struct blk *n = (const struct blk *)(const void *)(r->base + nb[i]);
        if ((__atomic_load_n(&n->word, __ATOMIC_RELAXED) & F_FREE) == 0)
            continue;
        uint64_t l[2] = {__atomic_load_n(&n->next, __ATOMIC_RELAXED),
                         __atomic_load_n(&n->prev, __ATOMIC_RELAXED)};
        for (unsigned j = 0; j < 2; j++)
            if (l[j] != 0 && l[j] < lim)
                __builtin_prefetch(r->base + l[j], 1);
    }
}

#define CC_AHEAD 4u /* batch blocks whose misses a flush starts ahead */

/* Free every block in the record `c`'s batch, each from its slot by one
 * commit (as cc_give does), taking each arena's lock once for all of its
 * blocks: a death anywhere leaves the blocks not yet freed in their slots.
 * Holding the in-process cache lock (lock order: cache lock -> arena
 * lock). Cost: one lock round trip per arena named, one commit per block;
 * the blocks' neighbours were prefetched when they were put in, their
 * free-list neighbours are prefetched CC_AHEAD blocks ahead. */
static __attribute__((noinline)) int cc_flush(shmds_region *r, struct crec *c)
{
    int rc = 0;
    for (unsigned j = 0; j < CC_BATCH && rc == 0; j++) {
        uint64_t x = __atomic_load_n(&c->batch[j], __ATOMIC_RELAXED);
        if (x == 0)
            continue;
        struct op o;
        if ((rc = lock_owner(r, x, &o)) != 0)
            break;
        for (unsigned k = j; k < j + CC_AHEAD && k < CC_BATCH; k++)
            cc_prefetch_links(r, __atomic_load_n(&c->batch[k], __ATOMIC_RELAXED));
        for (unsigned k = j; k < CC_BATCH && rc == 0; k++) {
            if (k + CC_AHEAD < CC_BATCH)
                cc_prefetch_links(r, __atomic_load_n(&c->batch[k + CC_AHEAD], __ATOMIC_RELAXED));
            uint64_t y = __atomic_load_n(&c->batch[k], __ATOMIC_RELAXED);
            if (y == 0 || y < HDR || arena_of(r, y - HDR) != (int)o.idx)
                continue; /* another arena's: the next round's */
            struct live lv;
            if ((rc = live_block(&o, y - HDR, true, &lv)) == 0)
                rc = do_free(&o, y - HDR, &lv, (uint64_t)((unsigned char *)&c->batch[k] - r->base));
            SHMDS_FAULT("alloc.cache.flushed");
        }
        if (rc == 0)
            r->arena_full &= ~(UINT32_C(1) << o.idx);
        rc = finish(&o, rc);
    }
    __atomic_store_n(&r->cache_bn, 0, __ATOMIC_RELAXED);
    return rc;
}

/* An empty slot of the record `c`'s batch, flushing it when full; NULL
 * when the flush failed (the caller frees the block itself). Holding the
 * in-process cache lock. */
static uint64_t *cc_batch_slot(shmds_region *r, struct crec *c)
{
    unsigned j = __atomic_load_n(&r->cache_bn, __ATOMIC_RELAXED);
    while (j < CC_BATCH && __atomic_load_n(&c->batch[j], __ATOMIC_RELAXED) != 0)
        j++;
    if (j == CC_BATCH) {
        if (cc_flush(r, c) != 0)
            return NULL;
        j = 0;
        while (j < CC_BATCH && __atomic_load_n(&c->batch[j], __ATOMIC_RELAXED) != 0)
            j++;
        if (j == CC_BATCH)
            return NULL;
    }
    __atomic_store_n(&r->cache_bn, j + 1, __ATOMIC_RELAXED);
    return &c->batch[j];
}

/* Put the block at user offset `x` in the handle's record: in an empty
 * slot of its size, or else in the batch (flushed to the arenas when
 * full). 0 cached; 1 not (no record, not a small used block the handle
 * knows: the caller frees it in its arena, which says what is wrong);
 * -EINVAL when it is cached already (freed twice). */
HOT int cc_put(shmds_region *r, uint64_t x)
{
    uint64_t c = cc_mine(r), w;
    if (c == 0 && (cc_make(r) != 0 || (c = cc_mine(r)) == 0))
        return 1;
    if (!cc_block(r, x, &w))
        return 1;
    if ((w & F_CACHED) != 0)
        return -EINVAL;
    uint64_t bs = w_size(w);
    if (bs > CC_BLOCK_MAX)
        return 1;
    cc_lock(r);
    if (__atomic_load_n(&r->cache_off, __ATOMIC_RELAXED) != c) {
        cc_unlock(r);
        return 1;
    }
    struct crec *rec = (struct crec *)(void *)(r->base + c);
    uint64_t *s = rec->slot[bs / ALIGN - MIN_BLOCK / ALIGN];
    unsigned i = 0;
    while (i < CC_SLOTS && __atomic_load_n(&s[i], __ATOMIC_RELAXED) != 0)
        i++;
    if (i < CC_SLOTS) {
        s += i;
    } else if ((s = cc_batch_slot(r, rec)) == NULL) {
        cc_unlock(r);
        return 1;
    } else {
        /* Its neighbours' headers, which the flush reads and may change:
         * a batch of cache misses started together, long before. */
        uint64_t ps = __atomic_load_n((const uint64_t *)(const void *)(r->base + x - HDR),
                                      __ATOMIC_RELAXED);
        __builtin_prefetch(r->base + x - HDR + bs, 1);
        if (ps <= x - HDR)
            __builtin_prefetch(r->base + x - HDR - ps, 1);
    }
    /* The slot first: killed between, the block is in the record, unflagged
     * (given back like any cached block). The flag then claims the block:
     * another process freeing it at the same time finds it taken. */
    __atomic_store_n(s, x, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    SHMDS_FAULT("alloc.cache.put");
    uint64_t *wp = (uint64_t *)(void *)(r->base + x - HDR + 8);
    if (!__atomic_compare_exchange_n(wp, &w, w | F_CACHED, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED)) {
        __atomic_store_n(s, 0, __ATOMIC_RELAXED);
        cc_unlock(r);
        return -EINVAL;
    }
    cc_unlock(r);
    return 0;
}

/* Give the handle's own record back (its blocks, then itself): on close,
 * before the statistics, and when an allocation found no room. */
static int cc_release(shmds_region *r)
{
    uint64_t x = cc_mine(r);
    if (x == 0)
        return 0;
    int rc = shmds__lock(r, &r->hdr->alloc_lock, heap_repair, r);
    if (rc < 0)
        return rc;
    cc_lock(r);
    if ((x = cc_mine(r)) != 0) {
        struct hroot *h = hroot_of(r);
        unsigned i = 0;
        while (i < CACHE_MAX && __atomic_load_n(&h->caches[i], __ATOMIC_ACQUIRE) != x)
            i++;
        rc = i < CACHE_MAX ? cc_give(r, i, x) : SHMDS_ECORRUPT;
        __atomic_store_n(&r->cache_pid, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&r->cache_off, 0, __ATOMIC_RELAXED);
    }
    cc_unlock(r);
    shmds_mutex_unlock(&r->hdr->alloc_lock);
    return rc;
}

void shmds__alloc_close(shmds_region *r)
{
    if (!shmds__rdonly(r) && cc_mine(r) != 0)
        (void)cc_release(r);
}

/* The heap end an allocation that found no room saw (the region's growth
 * is skipped when another process grew it since). */
static uint64_t seen_end(shmds_region *r)
{
    return __atomic_load_n(&r->arena[0].end, __ATOMIC_RELAXED) + HDR;
}

/* Allocate; when no arena has room, grow the region (region.c), which
 * makes arena 0 longer, and try again, until the region is at its maximum
 * (-ENOMEM) or growing fails. */
static int alloc_grow(shmds_region *r, const struct req *q, shmds_off_t *out)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    if (q->size >= r->heap_max - r->heap_off)
        return q->size == 0 ? -EINVAL : -ENOMEM; /* never fits, however large it grows */
    while ((rc = alloc_req(r, q, out)) == -ENOMEM) {
        /* The handle's cached blocks first: they may make the room. */
        if (cc_mine(r) != 0) {
            if ((rc = cc_release(r)) != 0)
                return rc;
            continue;
        }
        if ((rc = shmds__region_grow_by(r, q->size + ARENA_HDR + MIN_BLOCK, seen_end(r))) != 0)
            return rc;
        r->arena_full &= ~UINT32_C(1); /* arena 0 has room now */
    }
    return rc;
}

static int alloc_common(shmds_region *r, uint64_t size, uint64_t slot_off, bool zero,
                        shmds_off_t *out)
{
    struct req q = {size, slot_off, zero, 0, NULL};
    return alloc_grow(r, &q, out);
}

uint64_t shmds__alloc_heap_end(shmds_region *r)
{
    const struct hroot *h = hroot_of(r);
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != HEAP_MAGIC)
        return init_end(r);
    return __atomic_load_n(&h->heap_end, __ATOMIC_ACQUIRE);
}

/* A growth's step in the allocator: arena 0 (the heap) is made longer,
 * one commit of arena 0. */
int shmds__alloc_extend(shmds_region *r, uint64_t end)
{
    int rc = heap_ready(r);
    if (rc != 0)
        return rc;
    struct op o;
    op_init(&o, r, 0);
    if ((rc = lock(&o, false)) != 0)
        return rc;
    const geo_t *g = o.g;
    uint64_t s = g->end, cur = s + HDR; /* the old sentinel, the old end */
    if (end <= cur)
        return finish(&o, 0);
    uint64_t last, lsize;
    bool lfree;
    uint64_t ps = B(&o, s)->prev_size;
    if ((end & (ALIGN - 1)) != 0 || end > r->heap_max || !shmds__off_ok(r, end - HDR, HDR, 8) ||
        ps > s - g->first || !blk_read(&o, last = s - ps, &lsize, &lfree) || lsize != ps)
        return finish(&o, SHMDS_ECORRUPT);
    /* The new space: a free block at the old sentinel, or the free last
     * block made longer; a new sentinel; the heap root's end. */
    uint64_t fb = lfree ? last : s, fsize = (lfree ? lsize : 0) + (end - cur);
    if (lfree && !list_remove(&o, last, lsize)) {
        o.rebuild = true;
        return finish(&o, SHMDS_ECORRUPT);
    }
    SHMDS_FAULT("alloc.extend.unlinked");
    put(&o, fb + 8, mkword(fb, fsize, true));
    if (lfree)
        put(&o, s + 8, 0);
    put(&o, end - HDR + 8, mkword(end - HDR, 0, false));
    put(&o, heap_end_off(), end);
    commit(&o);
    __atomic_store_n(&r->arena[0].end, end - HDR, __ATOMIC_RELAXED);
    set_tag(&o, end - HDR, fsize);
    list_insert(&o, fb, fsize);
    SHMDS_FAULT("alloc.extend.done");
    return finish(&o, 0);
}

SHMDS_API int shmds_alloc(shmds_region *r, size_t size, shmds_off_t *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    shmds_off_t off;
    int rc;
    if (size - 1 < CC_BLOCK_MAX - HDR) {
        /* A small block: from the handle's cache when it holds one. */
        uint64_t bs = (size + HDR + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
        if ((rc = cc_take(r, bs < MIN_BLOCK ? MIN_BLOCK : bs, &off)) <= 0) {
            if (rc == 0)
                *out = off;
            return rc;
        }
    }
    rc = alloc_common(r, size, 0, false, &off);
    if (rc == 0)
        *out = off;
    return rc;
}

int shmds__alloc_into(shmds_region *r, uint64_t size, shmds_off_t *slot)
{
    uint64_t so = slot_offset(r, slot);
    if (so == 0)
        return shmds__writable(r) != 0 ? SHMDS_ERDONLY : -EINVAL;
    shmds_off_t off;
    return alloc_common(r, size, so, false, &off);
}

int shmds__alloc_many_into(shmds_region *r, uint64_t size, shmds_off_t *slot,
                           shmds_off_t *const *more, unsigned nmore)
{
    uint64_t so = slot_offset(r, slot), mo[SHMDS__ALLOC_MANY_MAX];
    if (so == 0)
        return shmds__writable(r) != 0 ? SHMDS_ERDONLY : -EINVAL;
    unsigned n = 0;
    for (unsigned i = 0; i < nmore && n < SHMDS__ALLOC_MANY_MAX; i++)
        if ((mo[n] = slot_offset(r, more[i])) != 0 && mo[n] != so)
            n++;
    struct req q = {size, so, false, n, mo};
    shmds_off_t off;
    return alloc_grow(r, &q, &off);
}

int shmds__alloc_zeroed_into(shmds_region *r, uint64_t size, shmds_off_t *slot)
{
    uint64_t so = slot_offset(r, slot);
    if (so == 0)
        return shmds__writable(r) != 0 ? SHMDS_ERDONLY : -EINVAL;
    shmds_off_t off;
    return alloc_common(r, size, so, true, &off);
}

/* Lock the arena that owns the block at user offset `off` into `o`:
 * -EINVAL when no arena's blocks hold it. */
static int lock_owner(shmds_region *r, shmds_off_t off, struct op *o)
{
    int i = off >= HDR && (off & (ALIGN - 1)) == 0 ? arena_of(r, off - HDR) : -1;
    if (i < 0 || (i == 0 && is_carrier(r, off)))
        return -EINVAL;
    op_init(o, r, (unsigned)i);
    return lock(o, false);
}

/* Free the block at user offset `off` in its arena; slot_off (or 0) is
 * cleared with it. With a slot, the offset is the slot's: only commits of
 * the slot owner's own calls write it, so reading it before the lock
 * names the arena, and reading it again under the lock confirms it. */
FLAT int free_common(shmds_region *r, shmds_off_t off, uint64_t slot_off, const shmds_off_t *slot,
                     bool cached_ok)
{
    int rc = heap_ready(r);
    if (rc != 0)
        return rc;
    if (slot != NULL && (off = __atomic_load_n(slot, __ATOMIC_RELAXED)) == SHMDS_NULL)
        return 0;
    struct op o;
    if ((rc = lock_owner(r, off, &o)) != 0)
        return rc;
    if (slot != NULL && __atomic_load_n(slot, __ATOMIC_RELAXED) != off)
        return finish(&o, SHMDS_ECORRUPT);
    struct live lv;
    if ((rc = live_block(&o, off - HDR, cached_ok, &lv)) == 0)
        rc = do_free(&o, off - HDR, &lv, slot_off);
    if (rc == 0)
        r->arena_full &= ~(UINT32_C(1) << o.idx);
    return finish(&o, rc);
}

SHMDS_API int shmds_free(shmds_region *r, shmds_off_t off)
{
    if (r == NULL)
        return -EINVAL;
    int rc = shmds__writable(r);
    if (rc != 0 || off == SHMDS_NULL)
        return rc;
    if ((rc = cc_put(r, off)) <= 0)
        return rc;
    return free_common(r, off, 0, NULL, false);
}

int shmds__free_from(shmds_region *r, shmds_off_t *slot)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    uint64_t so = slot_offset(r, slot);
    if (so == 0)
        return -EINVAL;
    return free_common(r, SHMDS_NULL, so, slot, false);
}

SHMDS_API int shmds_realloc(shmds_region *r, shmds_off_t off, size_t size, shmds_off_t *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    if (off == SHMDS_NULL)
        return shmds_alloc(r, size, out);
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    if (size == 0)
        return -EINVAL;
    if ((rc = heap_ready(r)) != 0)
        return rc;
    struct op o;
    if ((rc = lock_owner(r, off, &o)) != 0)
        return rc;
    uint64_t bs = block_size(o.g, size);
    uint64_t b = off - HDR;
    struct live lv;
    if ((rc = live_block(&o, b, false, &lv)) != 0)
        return finish(&o, rc);
    if (bs != 0 && (rc = do_resize(&o, b, &lv, bs)) <= 0) {
        if (rc == 0)
            *out = off;
        return finish(&o, rc);
    }
    /* Move: allocate, copy, free the old block. A crash between the two
     * commits leaves both blocks allocated, the old one intact. */
    uint64_t nb, nsize;
    if (bs == 0 || (rc = take_free(&o, bs, false, &nb, &nsize)) == -ENOMEM) {
        /* No room in this arena: in another one, in two steps. */
        finish(&o, 0);
        shmds_off_t noff;
        if ((rc = alloc_common(r, size, 0, false, &noff)) != 0)
            return rc;
        memcpy(r->base + noff, r->base + off, lv.size - HDR);
        SHMDS_FAULT("alloc.realloc.copied");
        if ((rc = free_common(r, off, 0, NULL, false)) == 0)
            *out = noff;
        return rc;
    }
    if (rc != 0)
        return finish(&o, rc);
    uint64_t t = put_split(&o, nb, nsize, bs);
    commit(&o);
    o.root->used_blocks++;
    o.root->used_bytes += t != 0 ? bs : nsize;
    if (t != 0) {
        split_tags(&o, nb, nsize, t);
        list_insert(&o, t, nsize - bs);
    }
    memcpy(r->base + nb + HDR, r->base + off, lv.size - HDR);
    SHMDS_FAULT("alloc.realloc.copied");
    if ((rc = live_block(&o, b, false, &lv)) == 0)
        rc = do_free(&o, b, &lv, 0);
    if (rc == 0)
        *out = nb + HDR;
    return finish(&o, rc);
}

/* The no-lock block check behind shmds_usable_size and
 * shmds__alloc_block_live: only the block's own header and its boundary tag
 * in the next header, which no other process changes while the block stays
 * allocated. */
int shmds__alloc_block_live(shmds_region *r, shmds_off_t off, uint64_t *usable)
{
    table_init(r);
    if (geo_sync(r) != 0)
        return SHMDS_ECORRUPT;
    int i = off >= HDR && (off & (ALIGN - 1)) == 0 ? arena_of(r, off - HDR) : -1;
    if (__atomic_load_n(&hroot_of(r)->magic, __ATOMIC_ACQUIRE) != HEAP_MAGIC || i < 0)
        return -EINVAL;
    struct op o;
    op_init(&o, r, (unsigned)i);
    uint64_t size;
    bool is_free;
    if (!blk_read(&o, off - HDR, &size, &is_free) || is_free ||
        (__atomic_load_n(&B(&o, off - HDR)->word, __ATOMIC_RELAXED) & F_CACHED) != 0)
        return -EINVAL;
    if (__atomic_load_n(&B(&o, off - HDR + size)->prev_size, __ATOMIC_RELAXED) != size)
        return SHMDS_ECORRUPT;
    if (usable != NULL)
        *usable = size - HDR;
    return 0;
}

SHMDS_API size_t shmds_usable_size(shmds_region *r, shmds_off_t off)
{
    uint64_t u;
    return r != NULL && shmds__alloc_block_live(r, off, &u) == 0 ? (size_t)u : 0;
}

int shmds__alloc_settle(shmds_region *r)
{
    if (shmds__rdonly(r))
        return SHMDS_ERDONLY;
    /* The heap lock first: a dead carver's arena is published by its
     * repair, which settles arena 0 on the way. */
    int rc = shmds__lock(r, &r->hdr->alloc_lock, heap_repair, r);
    if (rc < 0)
        return rc;
    shmds_mutex_unlock(&r->hdr->alloc_lock);
    if ((rc = settle_arenas(r)) != 0)
        return rc;
    /* Dead processes' cached blocks back to their arenas. */
    return cc_reclaim(r);
}

/* ---------------------------------------------------------------------------
 * Statistics and the heap check
 * ------------------------------------------------------------------------ */

/* Largest free block size in the lists (0: none), reading only. */
static int largest_free(const struct op *o, uint64_t *out)
{
    *out = 0;
    uint64_t flmap = *ctl_flbm(o);
    if (flmap == 0)
        return 0;
    unsigned fl = fls64(flmap);
    if (fl >= o->g->fl_count)
        return SHMDS_ECORRUPT;
    uint32_t slmap = *ctl_slbm(o, fl);
    if (slmap == 0)
        return SHMDS_ECORRUPT;
    unsigned sl = 31u - (unsigned)__builtin_clz(slmap);
    uint64_t cap = (o->g->end - o->g->first) / MIN_BLOCK;
    for (uint64_t b = *ctl_head(o, fl, sl); b != 0; b = B(o, b)->next) {
        uint64_t size;
        bool is_free;
        if (cap-- == 0 || !blk_read(o, b, &size, &is_free) || !is_free)
            return SHMDS_ECORRUPT;
        if (size > *out)
            *out = size;
    }
    return *out != 0 ? 0 : SHMDS_ECORRUPT;
}

static int stats_read(const struct op *o, shmds_alloc_stats *st)
{
    const struct aroot *root = o->root;
    const geo_t *g = o->g;
    st->heap_bytes = g->end - g->first;
    st->used_bytes = root->used_bytes;
    st->used_blocks = root->used_blocks;
    st->free_bytes = root->free_bytes;
    st->free_blocks = root->free_blocks;
    uint64_t big;
    int rc = largest_free(o, &big);
    st->largest_free = big != 0 ? big - HDR : 0;
    return rc;
}

/* Every invariant of the heap, reading only. */
static int check_heap(const struct op *o)
{
    const struct aroot *root = o->root;
    const geo_t *g = o->g;
    if (__atomic_load_n(&root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC ||
        root->redo_state != 0 || !sentinel_ok(o))
        return SHMDS_ECORRUPT;

    /* The physical walk. */
    uint64_t off = g->first, prev_size = 0;
    bool prev_free = false;
    uint64_t ub = 0, un = 0, fb = 0, fn = 0;
    uint64_t cap = (g->end - g->first) / MIN_BLOCK + 1;
    while (off < g->end) {
        uint64_t size;
        bool is_free;
        if (cap-- == 0 || !blk_read(o, off, &size, &is_free) ||
            B(o, off)->prev_size != prev_size || (is_free && prev_free))
            return SHMDS_ECORRUPT;
        if (is_free) {
            fb += size;
            fn++;
        } else {
            ub += size;
            un++;
        }
        prev_size = size;
        prev_free = is_free;
        off += size;
    }
    if (off != g->end || B(o, g->end)->prev_size != prev_size)
        return SHMDS_ECORRUPT;
    if (ub != root->used_bytes || un != root->used_blocks || fb != root->free_bytes ||
        fn != root->free_blocks || ub + fb != g->end - g->first)
        return SHMDS_ECORRUPT;

    /* The free lists: each member is a genuine free block of its class whose
     * boundary tag agrees, back links agree (so no block is met twice), the
     * bitmaps say exactly which lists are non-empty, and the lists hold as
     * many blocks as the walk found free. */
    uint64_t flmap = *ctl_flbm(o), listed = 0;
    if (g->fl_count < 64 && (flmap >> g->fl_count) != 0)
        return SHMDS_ECORRUPT;
    for (unsigned fl = 0; fl < g->fl_count; fl++) {
        uint32_t slmap = *ctl_slbm(o, fl);
        if (((flmap >> fl) & 1) != (slmap != 0) || (slmap >> SL_N) != 0)
            return SHMDS_ECORRUPT;
        for (unsigned sl = 0; sl < SL_N; sl++) {
            uint64_t b = *ctl_head(o, fl, sl), prev = 0;
            if (((slmap >> sl) & 1) != (b != 0))
                return SHMDS_ECORRUPT;
            for (; b != 0; prev = b, b = B(o, b)->next) {
                uint64_t size;
                bool is_free;
                unsigned f2, s2;
                if (listed++ >= fn || !blk_read(o, b, &size, &is_free) || !is_free ||
                    B(o, b)->prev != prev || B(o, b + size)->prev_size != size)
                    return SHMDS_ECORRUPT;
                mapping(size, &f2, &s2);
                if (f2 != fl || s2 != sl)
                    return SHMDS_ECORRUPT;
            }
        }
    }
    return listed == fn ? 0 : SHMDS_ECORRUPT;
}

/* Run `fn` on a stable arena: under its lock, or on a read-only region
 * between two equal even readings of its sequence word, retried until the
 * region's lock bound. The heap is formatted (heap_ready, or its magic
 * seen). */
static int read_stable(shmds_region *r, unsigned idx, int (*fn)(const struct op *, void *),
                       void *arg)
{
    struct op o;
    op_init(&o, r, idx);
    if (!shmds__rdonly(r)) {
        int rc = lock(&o, false);
        if (rc != 0)
            return rc;
        rc = fn(&o, arg);
        return finish(&o, rc);
    }
    struct shmds__wait w = {0};
    for (;;) {
        uint64_t s1 = shmds__seq_read_begin(&o.root->seq);
        if ((s1 & 1) == 0) {
            int rc = idx == 0 ? geo_sync(r) : 0;
            if (rc == 0)
                rc = fn(&o, arg);
            if (shmds__seq_read_ok(&o.root->seq, s1))
                return rc;
        }
        int rc = shmds__seq_wait(r, &w, &o.root->seq, NULL, NULL, NULL);
        if (rc != 0)
            return rc;
    }
}

/* 1 when the heap is formatted; 0 when it is not and the region is
 * read-only (nothing was ever allocated: every arena is one free block);
 * or an error from formatting it. */
static int heap_formatted(shmds_region *r)
{
    table_init(r);
    struct hroot *h = hroot_of(r);
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == HEAP_MAGIC) {
        int rc = arenas_sync(r, __atomic_load_n(&h->narenas, __ATOMIC_ACQUIRE));
        return rc == 0 ? 1 : rc;
    }
    if (shmds__rdonly(r))
        return 0;
    int rc = heap_ready(r);
    return rc == 0 ? 1 : rc;
}

static int stats_fn(const struct op *o, void *arg)
{
    return stats_read(o, arg);
}

static int check_fn(const struct op *o, void *arg)
{
    (void)arg;
    return check_heap(o);
}

/* The caches in the statistics (`st`): a cached block counts as free, a
 * record as neither used nor part of the heap (like a carrier). Every
 * record must be a live block of arena 0's size for one. With `strict`
 * (the heap check), every slot of a dead process's record must hold a
 * used block of its class; a live process's slots may change under the
 * look, and one that does is skipped. */
static int cc_scan(shmds_region *r, bool strict, shmds_alloc_stats *st)
{
    const struct hroot *h = hroot_of(r);
    for (unsigned i = 0; i < CACHE_MAX; i++) {
        uint64_t x = __atomic_load_n(&h->caches[i], __ATOMIC_ACQUIRE), usable;
        if (x == 0)
            continue;
        if (shmds__alloc_block_live(r, x, &usable) != 0 || usable < sizeof(struct crec)) {
            /* Given back under the look (a live owner's close)? */
            if (__atomic_load_n(&h->caches[i], __ATOMIC_ACQUIRE) != x)
                continue;
            return SHMDS_ECORRUPT;
        }
        const struct crec *c = (const struct crec *)(const void *)(r->base + x);
        uint64_t owner = __atomic_load_n(&c->owner, __ATOMIC_ACQUIRE);
        bool stable = strict && owner != 0 && !cc_owner_alive(owner);
        const uint64_t *all = cc_slots(r, x);
        for (unsigned j = 0; j < CC_ALL; j++) {
            uint64_t b = __atomic_load_n(&all[j], __ATOMIC_RELAXED), w, want = cc_slot_size(j);
            if (b == 0)
                continue;
            if (!cc_block(r, b, &w) || (want != 0 ? w_size(w) != want : w_size(w) > CC_BLOCK_MAX)) {
                if (stable)
                    return SHMDS_ECORRUPT;
                continue;
            }
            if (st != NULL) {
                st->used_blocks--;
                st->used_bytes -= w_size(w);
                st->free_blocks++;
                st->free_bytes += w_size(w);
            }
        }
        if (st != NULL) {
            st->used_blocks--;
            st->used_bytes -= usable + HDR;
            st->heap_bytes -= usable + HDR;
        }
    }
    return 0;
}

static int cc_count(shmds_region *r, shmds_alloc_stats *st)
{
    return cc_scan(r, false, st);
}

/* Arena i's statistics; `formatted` from heap_formatted. */
static int arena_stats(shmds_region *r, unsigned i, int formatted, shmds_alloc_stats *st)
{
    if (formatted)
        return read_stable(r, i, stats_fn, st);
    const geo_t *g = &r->arena[i];
    st->heap_bytes = st->free_bytes = g->end - g->first;
    st->used_bytes = st->used_blocks = 0;
    st->free_blocks = 1;
    st->largest_free = st->heap_bytes - HDR;
    return 0;
}

SHMDS_API int shmds_alloc_stats_get(shmds_region *r, shmds_alloc_stats *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    shmds_alloc_stats sum = {0};
    int rc = shmds__region_intact(r);
    if (rc == 0)
        rc = heap_formatted(r);
    if (rc < 0)
        return rc;
    /* This handle's cached blocks and dead processes' go back to the heap,
     * so that the figures are exact for them. */
    if (rc > 0 && !shmds__rdonly(r)) {
        int rc2 = cc_release(r);
        if (rc2 == 0)
            rc2 = cc_reclaim(r);
        if (rc2 != 0)
            return rc2;
    }
    for (unsigned i = 0; i < r->narenas; i++) {
        shmds_alloc_stats st;
        int rc2 = arena_stats(r, i, rc, &st);
        if (rc2 != 0)
            return rc2;
        if (i > 0) {
            /* Its carrier is a used block of arena 0: count the arena's
             * blocks instead. */
            uint64_t cs = r->arena[i].end + HDR - (r->arena[i].carrier - HDR);
            sum.heap_bytes -= cs;
            sum.used_bytes -= cs;
            sum.used_blocks--;
        }
        sum.heap_bytes += st.heap_bytes;
        sum.used_bytes += st.used_bytes;
        sum.free_bytes += st.free_bytes;
        sum.used_blocks += st.used_blocks;
        sum.free_blocks += st.free_blocks;
        if (st.largest_free > sum.largest_free)
            sum.largest_free = st.largest_free;
    }
    if (rc > 0 && (rc = cc_count(r, &sum)) != 0)
        return rc;
    *out = sum;
    return 0;
}

SHMDS_API unsigned shmds_alloc_arena_count(shmds_region *r)
{
    if (r == NULL)
        return 0;
    table_init(r);
    struct hroot *h = hroot_of(r);
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) == HEAP_MAGIC)
        (void)arenas_sync(r, __atomic_load_n(&h->narenas, __ATOMIC_ACQUIRE));
    return r->narenas;
}

SHMDS_API int shmds_alloc_arena_info_get(shmds_region *r, unsigned arena,
                                         shmds_alloc_arena_info *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    int rc = shmds__region_intact(r);
    if (rc == 0)
        rc = heap_formatted(r);
    if (rc < 0)
        return rc;
    if (rc > 0 && !shmds__rdonly(r)) {
        /* As in shmds_alloc_stats_get, but another live process's cached
         * blocks count as used here: the arena's own figures. */
        int rc2 = cc_release(r);
        if (rc2 == 0)
            rc2 = cc_reclaim(r);
        if (rc2 != 0)
            return rc2;
    }
    if (arena >= r->narenas)
        return -EINVAL;
    shmds_alloc_arena_info info;
    memset(&info, 0, sizeof info);
    const geo_t *g = &r->arena[arena];
    info.offset = g->base;
    info.size = g->end + HDR - g->base;
    if ((rc = arena_stats(r, arena, rc, &info.stats)) != 0)
        return rc;
    if (__atomic_load_n(&hroot_of(r)->magic, __ATOMIC_ACQUIRE) == HEAP_MAGIC) {
        const struct arena *a = (const struct arena *)(const void *)(r->base + g->base);
        shmds_mutex_info_get(&a->lock, &info.lock);
        info.repairs = __atomic_load_n(&a->root.repairs, __ATOMIC_RELAXED);
        info.rebuilds = __atomic_load_n(&a->root.rebuilds, __ATOMIC_RELAXED);
    }
    *out = info;
    return 0;
}

/* The heap root agrees with the handle's arena table, and every carrier
 * is a live block of arena 0 that ends where its arena does. */
static int check_hroot(shmds_region *r)
{
    const struct hroot *h = hroot_of(r);
    if (h->narenas != r->narenas)
        return SHMDS_ECORRUPT;
    for (unsigned i = 1; i < r->narenas; i++) {
        uint64_t usable;
        const geo_t *g = &r->arena[i];
        if (h->arenas[i].carrier != g->carrier || h->arenas[i].end != g->end + HDR ||
            shmds__alloc_block_live(r, g->carrier, &usable) != 0 ||
            g->carrier + usable != g->end + HDR)
            return SHMDS_ECORRUPT;
    }
    return 0;
}

SHMDS_API int shmds_alloc_check(shmds_region *r)
{
    if (r == NULL)
        return -EINVAL;
    int rc = heap_formatted(r);
    if (rc <= 0)
        return rc; /* never formatted: nothing allocated, nothing to check */
    if ((rc = check_hroot(r)) != 0)
        return rc;
    if ((rc = cc_scan(r, shmds__rdonly(r) ? false : true, NULL)) != 0)
        return rc;
    for (unsigned i = 0; i < r->narenas && rc == 0; i++) {
        /* A read-only check cannot lock the arena, but it sees a lock whose
         * own words are damaged (every later locker gets SHMDS_ECORRUPT). */
        struct op o;
        op_init(&o, r, i);
        if (shmds__rdonly(r) && !shmds__mutex_ok(&o.a->lock))
            return SHMDS_ECORRUPT;
        rc = read_stable(r, i, check_fn, NULL);
    }
    return rc;
}

