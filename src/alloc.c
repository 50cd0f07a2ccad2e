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
 * Formatting is lazy: the region never calls up into the allocator, so the
 * first locker that finds the root without its magic lays out the heap
 * (again, if a formatter died: nothing can have been allocated yet).
 *
 * Lock: one robust mutex (hdr->alloc_lock). Callers may hold structure
 * locks; the allocator never takes another lock while holding its own.
 */
#include "internal.h"

#include <string.h>

/* ---------------------------------------------------------------------------
 * Shared layout
 * ------------------------------------------------------------------------ */

#define ROOT_MAGIC UINT64_C(0x31434f4c4c414853) /* "SHALLOC1" */
#define REDO_SEALED UINT64_C(0x4c41455344455241)
#define REDO_MAX 16

#define HDR 16u               /* block header bytes */
#define MIN_BLOCK 32u         /* header + two free-list links */
#define ALIGN 16u
#define SL_LOG 4u
#define SL_N (1u << SL_LOG)   /* second-level classes per first level */
#define SMALL_LOG 8u          /* sizes below 2^8 live in first level 0 */
#define HEAP_MAX (UINT64_C(1) << 47)

#define F_FREE UINT64_C(1)
#define F_MARK UINT64_C(2)
#define W_SIZE UINT64_C(0x0000fffffffffff0)

struct redo_store {
    uint64_t off; /* region offset of a 64-bit word in the heap */
    uint64_t val;
};

/* The allocator's root, in hdr->alloc_root (zero at region creation). */
struct aroot {
    uint64_t magic;       /* ROOT_MAGIC once the heap is formatted (stored last) */
    uint64_t seq;         /* odd while an operation changes the heap */
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
SHMDS__STATIC_ASSERT(sizeof(struct aroot) <= SHMDS__ALLOC_ROOT_BYTES, "allocator root fits");
SHMDS__STATIC_ASSERT(offsetof(struct aroot, magic) == 0, "format: root magic");
SHMDS__STATIC_ASSERT(offsetof(struct aroot, redo_state) == 64, "format: redo state");
SHMDS__STATIC_ASSERT(offsetof(struct aroot, redo) == 80, "format: redo record");
SHMDS__STATIC_ASSERT(sizeof(struct aroot) == 336, "format: root size");

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

/* One operation, under the lock. */
struct op {
    shmds_region *r;
    unsigned char *base; /* r->base */
    struct aroot *root;
    const geo_t *g;
    unsigned n;                     /* stores in root->redo[] so far */
    bool rebuild;                   /* derived state found damaged */
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

static struct aroot *root_of(const shmds_region *r)
{
    return (struct aroot *)(void *)r->hdr->alloc_root;
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

/* Lay the control block and the blocks out in the handle's trusted heap
 * bounds: pure arithmetic (garbage bounds of a header that fails its checks
 * give a garbage but harmless layout, never used). */
static void geo_init(shmds_region *r)
{
    geo_t *g = &r->geo;
    uint64_t lo = (r->heap_off + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
    uint64_t hi = r->heap_end;
    if (hi - lo > HEAP_MAX)
        hi = lo + HEAP_MAX;
    hi &= ~(uint64_t)(ALIGN - 1);
    unsigned fl, sl;
    mapping(hi - lo, &fl, &sl);
    g->fl_count = fl + 1;
    g->ctl = lo;
    g->slbm = lo + 16;
    g->heads = g->slbm + (((uint64_t)g->fl_count * 4 + 15) & ~UINT64_C(15));
    g->first = g->heads + (uint64_t)g->fl_count * SL_N * 8;
    g->end = hi - HDR;
    /* last < first (nothing plausible) when not even one block fits. */
    g->last = g->end >= g->first && g->end - g->first >= MIN_BLOCK ? g->end - MIN_BLOCK : 0;
}

/* r->geo, computed by the first caller in this process (the region makes
 * handles without calling up into the allocator): 0 none yet, 1 being
 * computed, 2 ready. */
static const geo_t *geo_of(shmds_region *r)
{
    if (shmds__likely(__atomic_load_n(&r->geo_state, __ATOMIC_ACQUIRE) == 2))
        return &r->geo;
    uint32_t none = 0;
    if (__atomic_compare_exchange_n(&r->geo_state, &none, 1, false, __ATOMIC_ACQUIRE,
                                    __ATOMIC_ACQUIRE)) {
        geo_init(r);
        __atomic_store_n(&r->geo_state, 2, __ATOMIC_RELEASE);
    }
    while (__atomic_load_n(&r->geo_state, __ATOMIC_ACQUIRE) != 2)
        shmds__cpu_relax();
    return &r->geo;
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
    return (w & (F_MARK | UINT64_C(0xc))) == F_MARK &&
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
    return off >= g->first && off <= g->last && (off & (ALIGN - 1)) == 0;
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

static void op_init(struct op *o, shmds_region *r)
{
    o->r = r;
    o->base = r->base;
    o->root = root_of(r);
    o->g = geo_of(r);
    o->n = 0;
    o->rebuild = false;
}


/* Called by the lock, holding it, when the previous holder died. */
static int repair(void *arg)
{
    struct op o;
    op_init(&o, arg);
    struct aroot *root = o.root;
    if (__atomic_load_n(&root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC)
        return 0; /* died formatting: the next operation formats again */
    bool redo = __atomic_load_n(&root->redo_state, __ATOMIC_ACQUIRE) == REDO_SEALED;
    if (redo) {
        unsigned n = root->redo_n;
        struct redo_store st[REDO_MAX];
        if (n > REDO_MAX)
            return -1;
        memcpy(st, root->redo, n * sizeof st[0]);
        for (unsigned i = 0; i < n; i++)
            if (!shmds__root_slot_off(st[i].off) &&
                (!shmds__off_ok(o.r, st[i].off, 8, 8) || st[i].off < o.g->first ||
                 st[i].off + 8 > o.g->end + HDR))
                return -1; /* a record no operation could have written */
        apply(o.r, st, n);
        SHMDS_FAULT("alloc.repair.redone");
        __atomic_store_n(&root->redo_state, 0, __ATOMIC_RELEASE);
    }
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

/* Lay out an empty heap. Under the lock; idempotent. */
COLD int format(struct op *o)
{
    struct aroot *root = o->root;
    const geo_t *g = o->g;
    if (g->end <= g->first || g->end - g->first < MIN_BLOCK)
        return SHMDS_ECORRUPT; /* cannot happen above SHMDS_REGION_MIN_SIZE */
    memset(root, 0, sizeof *root);
    B(o, g->first)->prev_size = 0;
    B(o, g->first)->word = mkword(g->first, g->end - g->first, true);
    SHMDS_FAULT("alloc.format.mid");
    B(o, g->end)->prev_size = g->end - g->first;
    B(o, g->end)->word = mkword(g->end, 0, false);
    int rc = rebuild(o);
    if (rc != 0)
        return rc;
    __atomic_store_n(&root->magic, ROOT_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

static void unlock(struct op *o)
{
    shmds_mutex_unlock(&o->r->hdr->alloc_lock);
}

/* Take the allocator lock (repairing after a dead holder), format the heap
 * if nobody has, and open the operation `o` (set up by op_init): the
 * sequence word goes odd. */
static int lock(struct op *o)
{
    shmds_region *r = o->r;
    int rc = shmds__lock(r, &r->hdr->alloc_lock, repair, r);
    if (rc < 0)
        return rc;
    if (__atomic_load_n(&o->root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC &&
        (rc = format(o)) != 0) {
        unlock(o);
        return rc;
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
static int live_block(const struct op *o, uint64_t b, struct live *lv)
{
    bool is_free;
    if (!blk_read(o, b, &lv->size, &is_free) || is_free)
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

/* Find a free block of at least `bs` bytes and take it off its list. */
static int take_free(struct op *o, uint64_t bs, uint64_t *out, uint64_t *out_size)
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
        B(o, cand + size)->prev_size != size || !list_remove(o, cand, size)) {
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
    int rc = take_free(o, bs, &b, &size);
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
        list_insert(o, t, size - bs);
    }
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
 * commit: 8-aligned, inside the heap's blocks, or the off field of a
 * directory entry (a structure's header block, region.c). 0 otherwise. */
static uint64_t slot_offset(shmds_region *r, const shmds_off_t *slot)
{
    const unsigned char *p = (const unsigned char *)slot;
    const geo_t *g = geo_of(r);
    if (slot == NULL || p < r->base || p + 8 > r->base + g->end)
        return 0;
    uint64_t off = (uint64_t)(p - r->base);
    if (p < r->base + g->first)
        return shmds__root_slot_off(off) ? off : 0;
    return (off & 7) == 0 ? off : 0;
}

FLAT int alloc_common(shmds_region *r, uint64_t size, uint64_t slot_off, bool zero,
                      shmds_off_t *out)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    struct op o;
    op_init(&o, r);
    uint64_t bs = block_size(o.g, size);
    if (size == 0)
        return -EINVAL;
    if (bs == 0)
        return -ENOMEM;
    if ((rc = lock(&o)) != 0)
        return rc;
    if (slot_off != 0 && __atomic_load_n((uint64_t *)(void *)(r->base + slot_off),
                                         __ATOMIC_RELAXED) != SHMDS_NULL)
        return finish(&o, -EINVAL);
    rc = do_alloc(&o, bs, slot_off, zero ? size : 0, out);
    if (rc == SHMDS_ECORRUPT && o.rebuild) {
        /* A damaged free list: rebuild it from the walk and try once more. */
        o.rebuild = false;
        if (rebuild(&o) == 0)
            rc = do_alloc(&o, bs, slot_off, zero ? size : 0, out);
    }
    return finish(&o, rc);
}

SHMDS_API int shmds_alloc(shmds_region *r, size_t size, shmds_off_t *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    shmds_off_t off;
    int rc = alloc_common(r, size, 0, false, &off);
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

int shmds__alloc_zeroed_into(shmds_region *r, uint64_t size, shmds_off_t *slot)
{
    uint64_t so = slot_offset(r, slot);
    if (so == 0)
        return shmds__writable(r) != 0 ? SHMDS_ERDONLY : -EINVAL;
    shmds_off_t off;
    return alloc_common(r, size, so, true, &off);
}

/* Free the block at user offset `off`; slot_off (or 0) is cleared with it. */
FLAT int free_common(shmds_region *r, shmds_off_t off, uint64_t slot_off, const shmds_off_t *slot)
{
    struct op o;
    op_init(&o, r);
    int rc = lock(&o);
    if (rc != 0)
        return rc;
    if (slot != NULL) {
        off = __atomic_load_n(slot, __ATOMIC_RELAXED);
        if (off == SHMDS_NULL)
            return finish(&o, 0);
    }
    struct live lv;
    if (off < HDR || (off & (ALIGN - 1)) != 0)
        rc = -EINVAL;
    else
        rc = live_block(&o, off - HDR, &lv);
    if (rc == 0)
        rc = do_free(&o, off - HDR, &lv, slot_off);
    return finish(&o, rc);
}

SHMDS_API int shmds_free(shmds_region *r, shmds_off_t off)
{
    if (r == NULL)
        return -EINVAL;
    int rc = shmds__writable(r);
    if (rc != 0 || off == SHMDS_NULL)
        return rc;
    return free_common(r, off, 0, NULL);
}

int shmds__free_from(shmds_region *r, shmds_off_t *slot)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    uint64_t so = slot_offset(r, slot);
    if (so == 0)
        return -EINVAL;
    return free_common(r, SHMDS_NULL, so, slot);
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
    struct op o;
    op_init(&o, r);
    uint64_t bs = block_size(o.g, size);
    if ((rc = lock(&o)) != 0)
        return rc;
    uint64_t b = off - HDR;
    struct live lv;
    if (off < HDR || (off & (ALIGN - 1)) != 0)
        return finish(&o, -EINVAL);
    if ((rc = live_block(&o, b, &lv)) != 0)
        return finish(&o, rc);
    if (bs == 0)
        return finish(&o, -ENOMEM);
    rc = do_resize(&o, b, &lv, bs);
    if (rc == 0) {
        *out = off;
        return finish(&o, 0);
    }
    if (rc < 0)
        return finish(&o, rc);
    /* Move: allocate, copy, free the old block. A crash between the two
     * commits leaves both blocks allocated, the old one intact. */
    uint64_t nb, nsize;
    if ((rc = take_free(&o, bs, &nb, &nsize)) != 0)
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
    if ((rc = live_block(&o, b, &lv)) == 0)
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
    struct op o;
    op_init(&o, r);
    if (__atomic_load_n(&o.root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC || off < HDR ||
        (off & (ALIGN - 1)) != 0)
        return -EINVAL;
    uint64_t size;
    bool is_free;
    if (!blk_read(&o, off - HDR, &size, &is_free) || is_free)
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
    struct op o;
    if (shmds__rdonly(r))
        return SHMDS_ERDONLY;
    op_init(&o, r);
    int rc = lock(&o);
    if (rc != 0)
        return rc;
    return finish(&o, 0);
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
    if (__atomic_load_n(&root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC) {
        /* Not formatted yet: one free block spans the heap. */
        st->used_bytes = st->used_blocks = 0;
        st->free_bytes = st->heap_bytes;
        st->free_blocks = 1;
        st->largest_free = st->heap_bytes - HDR;
        return 0;
    }
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
    if (__atomic_load_n(&root->magic, __ATOMIC_ACQUIRE) != ROOT_MAGIC)
        return 0; /* never formatted: nothing allocated, nothing to check */
    if (root->redo_state != 0 || !sentinel_ok(o))
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

/* Run `fn` on a stable heap: under the lock, or on a read-only region
 * between two equal even readings of the sequence word, retried until the
 * region's lock bound. */
static int read_stable(shmds_region *r, int (*fn)(const struct op *, void *), void *arg)
{
    struct op o;
    op_init(&o, r);
    if (!shmds__rdonly(r)) {
        int rc = lock(&o);
        if (rc != 0)
            return rc;
        rc = fn(&o, arg);
        return finish(&o, rc);
    }
    struct shmds__wait w = {0};
    for (;;) {
        uint64_t s1 = shmds__seq_read_begin(&o.root->seq);
        if ((s1 & 1) == 0) {
            int rc = fn(&o, arg);
            if (shmds__seq_read_ok(&o.root->seq, s1))
                return rc;
        }
        int rc = shmds__seq_wait(r, &w, &o.root->seq, NULL, NULL, NULL);
        if (rc != 0)
            return rc;
    }
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

SHMDS_API int shmds_alloc_stats_get(shmds_region *r, shmds_alloc_stats *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    shmds_alloc_stats st;
    int rc = shmds__region_intact(r);
    if (rc == 0)
        rc = read_stable(r, stats_fn, &st);
    if (rc == 0)
        *out = st;
    return rc;
}

SHMDS_API int shmds_alloc_check(shmds_region *r)
{
    if (r == NULL)
        return -EINVAL;
    return read_stable(r, check_fn, NULL);
}

