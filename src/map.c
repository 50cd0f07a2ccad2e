/*
 * The shared hash map.
 *
 * Layer: a structure. Calls down into the object layer (create, open,
 * destroy: shmds__map_ops), the allocator, lock.c and the region; never
 * into another structure or the region-wide passes (check.c).
 *
 * Layout. A map is one header block (struct map_hdr, followed by an array of
 * stripes) plus bucket tables and entries, all in the region's heap and
 * linked by offsets. An entry is one block: a 64-byte header, the value
 * (16-byte aligned, so an 8-byte counter can be stored atomically in place),
 * then the key. Buckets are singly linked chains of entries (separate
 * chaining); the entry keeps its full 64-bit hash so moves and compares never
 * rehash keys.
 *
 * Stripes and tables (the choice the rest rests on). A key's bucket is the
 * TOP `bits` bits of its hash, and its stripe the top `sbits` bits, with
 * bits >= sbits. So stripe s owns one contiguous slice of every table, and
 * when a table doubles, old bucket b splits into new buckets 2b and 2b+1 of
 * the same stripe: a bucket and its rehash targets always fall under the
 * same stripe lock, and moving entries never needs a second stripe.
 *
 * Incremental rehash. At most two tables exist: `old` and, while growing,
 * `new` (twice as large). Each stripe migrates its own slice in order and
 * keeps, under its lock, how many of its old buckets it has moved
 * (`moved`) and for which growth (`epoch`, compared with the map's
 * `tepoch`; a stale epoch means "nothing moved yet", and the stripe clears
 * its slice of the new table before moving the first bucket, so allocating
 * the new table costs O(1) and clearing is spread over the stripes). A key
 * is in exactly one place: the new table if its old bucket's index within
 * the slice is below `moved`, else the old table. Every write moves up to
 * MOVE_PER_OP buckets of its own stripe and, once its stripe is done, helps
 * one other stripe it can lock without waiting. Two rare map-wide moments
 * change the table pair, under a map-level `resize` lock (taken after a
 * stripe lock, never before): START (allocate the new table, bump tepoch)
 * and SWITCH (once every stripe is done: the new table becomes the old one
 * and the old one is freed). Both publish through a sequence counter
 * (`tseq`). They are safe against a process holding another stripe's lock
 * with a table snapshot taken earlier: START leaves every stripe "nothing
 * moved", which matches the old picture; SWITCH only happens when every
 * stripe is done, and a done stripe only ever touches the new table, which
 * SWITCH keeps.
 *
 * Lock order: one stripe lock (blocking) -> further stripe locks only with
 * trylock (helping a rehash, evicting elsewhere) -> resize lock -> the
 * allocator lock. shmds_map_check takes all stripes in ascending order.
 *
 * Crash consistency (DESIGN.md section 4). Each stripe has an intent log
 * written under its lock. A put/del/eviction is one SWAP: the log names the
 * link word (bucket slot or predecessor's `next`), its old and new value,
 * the new block (the allocator writes it straight into the log's `blk`
 * slot) and the block to free (`dead`), and the stripe counters after the
 * op. The single store of the new value into the link word is the commit
 * point. Repair (after settling retirement and the allocator): committed
 * -> set the counters, retire `dead`, forget `blk`; not committed -> free
 * `blk`, forget `dead`. A rehash move of one entry copies it (move_entry:
 * the copy linked into the new table, then the original unlinked and
 * retired), logged; repair finishes a move whose copy is linked and undoes
 * one whose copy is not. An in-place counter add is two aligned 8-byte
 * stores (value, then version), logged and rolled forward. The map-wide
 * START and SWITCH are logged in the resize lock's own record and rolled
 * forward. Repair reads only the log: O(1), never a scan of the map.
 *
 * Retirement (guard.c). A block a lock-free reader may be reading (an
 * entry replaced, deleted, evicted, expired or moved; the old table after
 * a SWITCH) is never freed by the writer: shmds__guard_retire takes it
 * from the log's slot and frees it once every reader inside a guard at
 * that moment has left. A retirement that finds no record and cannot free
 * the block at once (a reader stuck in a guard while the heap is full:
 * guard.c) leaves it in the log's slot and the log open, the write
 * returning 0 (it committed); the next holder of the lock tries again
 * (stripe_lock, resize_lock), and until then writes that need the log
 * return -ENOMEM with nothing changed (log_busy). shmds_map_check takes
 * that state as sound.
 *
 * Spare blocks (the insert path's one lock round trip). Each stripe keeps
 * up to SPARES allocated blocks in allocator slots of its own (`spare`).
 * An insert takes a spare that fits its entry (the stripe lock is the only
 * lock it takes); when none fits, it allocates its block and fills the
 * empty spare slots with blocks of the same size in the same allocator
 * round trip (shmds__alloc_many_into). A put writes its entry into the
 * spare before it looks for its key (put_prep), so that work overlaps the
 * key's cache misses; no reader or repair looks into a spare, so a death
 * there leaves nothing to undo. (A dead block is retired, never
 * kept as a spare: readers may still hold it.) A block moves from a spare
 * slot to the log in two stores (set the target, then clear the source),
 * so after a crash it may sit in both; repair then leaves it with the
 * spare slot instead of freeing it. The spares are the map's blocks:
 * the check checks them, destroy frees them.
 *
 * Lock-free reads (lookup). Every get runs inside a read guard (guard.c),
 * so every entry it reaches stays allocated and unchanged (but for a
 * counter's value and version, its expiry and its CLOCK bit) until it
 * leaves, and walks published state: links change by single release
 * stores, so a walk from any bucket sees a chain that was current at some
 * moment, offsets checked and walks capped against damage. A hit is
 * returned at once. A miss is trusted when neither the table state
 * (`tseq`) nor the stripe's rehash progress (`epoch`, `moved`) moved
 * during the walk, else the lookup runs again (each retry means a writer
 * made progress). A bucket being moved is looked up in the old table, then
 * the new one: move_entry links the copy before it unlinks the original.
 * While a START or a SWITCH is under way (`tseq` odd, perhaps for good: a
 * dead writer) the table state readers need follows from the resize
 * record (tsnap_read). So a get never waits, never takes a lock, and works
 * on SHMDS_RDONLY mappings and on evicting maps, whose hits set the CLOCK
 * bit without a lock (the entry cannot be freed under the guard). The
 * stripes' sequence counters remain for the writers' own optimistic walks
 * (foreach).
 *
 * Statistics. Hits and misses are counted on a cache line of the map
 * header that each handle claims for itself when it attaches (up to
 * SHARDS handles; later ones share lines with atomic adds), so an
 * optimistic get writes nothing that another process's get reads or
 * writes: readers in different processes never bounce a line between
 * CPUs. shmds_map_stats_get sums the lines.
 *
 * Budget. Each stripe counts its entries' bytes under its lock; the budget
 * check sums the stripes. Eviction is CLOCK per stripe (a hand over the
 * stripe's buckets; a referenced entry loses its bit, an unreferenced one
 * goes), first in the writer's own stripe, then in others it can trylock.
 *
 * TTL: entries store an absolute expiry in milliseconds of a monotonic clock
 * shared by all processes on the machine (CLOCK_MONOTONIC; tests inject
 * their own). Expired entries are misses; writes reclaim them when they meet
 * them, and every write sweeps one bucket of its stripe while any entry may
 * carry a TTL.
 */
#include "object.h"
#include "map_int.h"

#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAP_MAGIC UINT64_C(0x3150414d53444d48) /* "HMDSMAP1" */
#define ENTRY_MAGIC 0x454e5452u                  /* "ENTR" */
#define ENTRY_HDR 64u
#define CHAIN_CAP 65536u    /* no legitimate chain is this long (and see chain_cap) */
#define MOVE_PER_OP 2u      /* old buckets a write migrates in its stripe */
#define MIN_BITS 4u         /* smallest table: 16 buckets */
#define MAX_BITS 40u        /* largest table: 2^40 buckets */
#define SHARDS 16u          /* hit/miss counter lines, one per handle */
#define EVICT_TRIES 64u     /* allocation retries after evicting */
#define LEASES 4u           /* fill lease slots per stripe */
#define FILL_SLICE_MS 10    /* a fill waiter re-checks at least this often */
#define GET_QUERY_ (1u << 31) /* internal get flag: no copy, no -ENOBUFS */
#define SPARES 4u           /* blocks a stripe keeps for its next inserts */
#define SPARE_SLACK 64u     /* a spare fits an entry it exceeds by less than this */
/* Retries of a lock-free lookup whose miss met a moving table: each one
 * means a writer made progress; this many means something else (a process
 * scribbling on the map): -EAGAIN. */
#define LOOKUP_RETRIES 65536u

enum { OP_NONE = 0, OP_SWAP = 1, OP_MOVE = 2, OP_STORE = 3 };
enum { ROP_NONE = 0, ROP_START = 1, ROP_SWITCH = 2 };

/* ---------------------------------------------------------------------------
 * Shared layout
 * ------------------------------------------------------------------------ */

struct entry {
    uint64_t next;      /* offset of the next entry in the chain, 0 = end */
    uint64_t hash;      /* full hash of the key */
    uint64_t klen;
    uint64_t vlen;
    uint64_t expire_ms; /* 0 = never */
    uint64_t version;   /* the stripe's vclock when written; never 0 */
    uint32_t ref;       /* CLOCK bit */
    uint32_t magic;
    uint32_t uflags;    /* the user's flags */
    uint32_t pad;
    /* value (vlen bytes, 16-aligned), then key (klen bytes) */
};
SHMDS__STATIC_ASSERT(sizeof(struct entry) == ENTRY_HDR, "entry header is 64 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct entry, next) == 0, "format: entry next");
SHMDS__STATIC_ASSERT(offsetof(struct entry, expire_ms) == 32, "format: entry expiry");
SHMDS__STATIC_ASSERT(offsetof(struct entry, version) == 40, "format: entry version");
SHMDS__STATIC_ASSERT(offsetof(struct entry, uflags) == 56, "format: entry user flags");

/* A stripe's intent log. */
struct slog {
    uint32_t op;        /* OP_*, written last when opening, cleared last */
    uint32_t committed; /* SWAP: the commit store is done */
    uint64_t link;      /* SWAP: offset of the link word */
    uint64_t link_old;  /* SWAP: its value before */
    uint64_t link_new;  /* SWAP: its value after */
    uint64_t blk;       /* allocator slot: the new entry */
    uint64_t dead;      /* allocator slot: the entry to free after commit */
    uint64_t entries1;  /* SWAP: stripe counters after commit */
    uint64_t mem1;
    uint64_t e;         /* MOVE: entry; STORE: offset of the first word */
    uint64_t enext;     /* MOVE: the old bucket word after the unlink; STORE: the
                           first word's new value */
    uint64_t nhead;     /* MOVE: old word of the target bucket; STORE: offset
                           of the second word (0: none) */
    uint64_t oldslot;   /* MOVE: offset of the source bucket; STORE: the
                           second word's new value */
    uint64_t newslot;   /* MOVE: offset of the target bucket */
    uint64_t pad;
};
SHMDS__STATIC_ASSERT(sizeof(struct slog) == 112, "stripe log is 112 bytes");

/* A fill lease (shmds_map_fetch), guarded by its stripe's lock. `pid` is
 * the commit word: 0 = free; taking writes every other field first and
 * `pid` last, so a holder that dies part way leaves a free slot or a slot
 * whose holder is dead, which the next taker overwrites. A live holder
 * releases by storing 0. */
struct lease {
    uint64_t hash;     /* the key's full hash */
    uint64_t token;    /* a vclock value: names this grant */
    uint64_t since_ms; /* when it was granted (map clock) */
    uint64_t pstart;   /* holder's process start time (pid reuse guard) */
    uint32_t pid;      /* holder; 0 = free */
    uint32_t pad[3];
};
SHMDS__STATIC_ASSERT(sizeof(struct lease) == 48, "a lease is 48 bytes");

struct stripe {
    shmds_mutex lock;
    /* Guarded by `lock`; `seq` odd while chains or rehash state change. */
    uint64_t seq;
    uint64_t entries;
    uint64_t mem;      /* bytes of entries, as counted against mem_limit */
    uint64_t epoch;    /* growth that `moved` refers to */
    uint64_t moved;    /* old buckets of this slice moved to the new table */
    uint64_t hand;     /* CLOCK hand: bucket index within the slice */
    uint64_t sweep;    /* expiry sweep: bucket index within the slice */
    uint64_t vclock;   /* last version (or lease token) handed out */
    uint64_t inserts, deletes, evictions, expirations;
    uint64_t spare[SPARES]; /* allocator slots: blocks kept for new entries */
    struct slog log;
    uint64_t fills, takeovers;
    struct lease leases[LEASES];
    /* Doorbell of fill waiters: rung when a lease ends. `sleepers` is
     * changed atomically without the lock (a dead sleeper leaves its count,
     * which only costs spurious wake-ups). */
    shmds_sem bell;
    uint32_t sleepers;
    uint8_t pad3[64 - sizeof(shmds_sem) % 64 - 4];
};
SHMDS__STATIC_ASSERT(sizeof(struct stripe) == 576, "stripe is 576 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, seq) == 64, "format: stripe seq");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, vclock) == 120, "format: stripe vclock");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, log) == 192, "format: stripe log");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, spare) == 160, "format: stripe spares");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, leases) == 320, "format: stripe leases");

struct rlog {
    uint32_t op; /* ROP_* */
    uint32_t newbits;
    uint64_t newtab;
    uint64_t dead;   /* allocator slot: the table SWITCH frees */
    uint64_t tepoch1;
    uint64_t pad[4];
};
SHMDS__STATIC_ASSERT(sizeof(struct rlog) == 64, "resize log is one line");

/* Hit and miss counters. `hits` and `misses` have one writer, the handle
 * whose process claimed the line (`owner`, a pid; 0 = free), which adds
 * with plain stores; handles that found no free line add atomically to
 * the `_shared` pair of the line their pid picks. */
struct shard {
    uint64_t hits, misses;
    uint64_t owner;
    uint64_t hits_shared, misses_shared;
    uint64_t pad[3];
};
SHMDS__STATIC_ASSERT(sizeof(struct shard) == 64, "a shard is one cache line");

struct map_hdr {
    /* Immutable after create. */
    uint64_t magic;
    uint32_t nstripes;
    uint32_t sbits;
    uint64_t capacity;
    uint64_t mem_limit;
    uint32_t pad_ttl;
    uint32_t flags;
    uint64_t seed;
    uint64_t block;   /* offset of the allocated block holding this header */
    uint64_t scratch; /* allocator slot for shmds_map_destroy */
    /* Table state: written under `resize`, published through tseq. */
    uint64_t tseq;
    uint64_t tab_old;
    uint64_t tab_new;
    uint32_t bits_old;
    uint32_t bits_new;
    uint64_t tepoch;
    uint32_t rehashing;
    uint32_t has_ttl; /* set once any entry may expire */
    uint64_t help;    /* round-robin cursor for helping other stripes */
    uint64_t default_ttl_ms; /* immutable */
    shmds_mutex resize;
    struct rlog rlog;
    /* Statistics baselines (shmds_map_stats_reset) and the reap cursor:
     * atomic, any process. */
    uint64_t hits_base, misses_base, rec_base;
    uint64_t reap_cursor;
    uint64_t pad1[4];
    struct shard shards[SHARDS];
    struct stripe stripes[];
};
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, nstripes) == 8, "format: stripes");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, sbits) == 12, "format: stripe bits");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, tab_old) == 72, "format: bucket table");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, bits_old) == 88, "format: table bits");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, tseq) == 64, "format: table state");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, rehashing) == 104, "format: growth under way");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, resize) == 128, "format: resize lock");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, rlog) == 192, "format: resize log");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, default_ttl_ms) == 120, "format: default TTL");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, hits_base) == 256, "format: stats baselines");
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, shards) == 320, "format: shards");
SHMDS__STATIC_ASSERT(sizeof(struct map_hdr) == 320 + 64 * SHARDS, "format: stripes");

/* A consistent view of the table state. */
struct tsnap {
    uint64_t seq;
    uint64_t *old, *nw;
    uint32_t bo, bn;
    uint64_t tepoch;
    bool rh;
};

struct shmds_map {
    shmds_region *r;
    struct map_hdr *h;
    shmds_off_t off;
    uint32_t S, sbits;
    uint64_t seed;       /* copies of immutable header fields */
    bool evict;
    bool own;            /* shard is ours alone (claimed), not shared */
    struct shard *shard; /* where gets count: NULL on a read-only region */
    uint32_t shard_pid;  /* the process the shard was picked for (fork) */
    uint64_t ro_hits, ro_misses; /* a read-only handle's own counts */
    /* The last table state read and checked, valid while the map's tseq
     * still equals tc.seq (odd: none yet). */
    struct tsnap tc;
    /* Steps after which a chain is a cycle: CHAIN_CAP, or fewer in a
     * region too small to hold that many entries (walk_cap), so that a
     * damaged chain costs a lookup what the region could hold, no more. */
    unsigned chain_cap;
    char name[SHMDS_ROOT_NAME_MAX + 1]; /* opened by (shmds__obj_destroy) */
};

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

static uint64_t (*clock_hook)(void);

void shmds__map_set_clock(uint64_t (*now_ms)(void))
{
    clock_hook = now_ms;
}

static uint64_t now_ms(void)
{
    return clock_hook != NULL ? clock_hook() : shmds__now_ns() / 1000000u;
}

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define LDA(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define STR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

static inline uint64_t bidx(uint64_t hash, uint32_t bits)
{
    return bits == 0 ? 0 : hash >> (64 - bits);
}

/* Bucket words. A bucket slot holds the offset of its chain's first
 * entry in bits 0-47 (region offsets are below SHMDS_REGION_MAX_SIZE) and,
 * in bits 48-63, a filter of the chain's keys: tag_bit(hash) of every
 * entry in the chain is set. An insert or a move adds its entry's bit in
 * the same store that links it, an unlink keeps the word's bits (a
 * superset stays true) and a bucket emptied is 0, so a lookup whose bit
 * is clear is a miss without touching an entry: most inserts of a new key
 * and most misses skip the chain's cache misses. Entry `next` words hold
 * plain offsets. */
#define LINK_OFF_MASK SHMDS__MAP_LINK_OFF_MASK
SHMDS__STATIC_ASSERT(SHMDS_REGION_MAX_SIZE <= LINK_OFF_MASK, "offsets fit below the tags");

static inline uint64_t link_off(uint64_t w)
{
    return w & LINK_OFF_MASK;
}

static inline uint64_t link_tags(uint64_t w)
{
    return w & ~LINK_OFF_MASK;
}

/* The hash's low bits: bidx() takes the high ones (at most MAX_BITS). */
static inline uint64_t tag_bit(uint64_t hash)
{
    return UINT64_C(1) << (48 + (hash & 15));
}

/* The bucket word of a chain from `first` whose bucket word was `w`,
 * after the chain's first entry changed to `first` (0: the bucket is
 * empty now) and, unless 0, an entry of hash bit `bit` joined it. */
static inline uint64_t link_word(uint64_t w, uint64_t first, uint64_t bit)
{
    return first == 0 ? 0 : first | link_tags(w) | bit;
}

static inline uint32_t stripe_of(const shmds_map *m, uint64_t hash)
{
    return (uint32_t)bidx(hash, m->sbits);
}

static inline uint64_t esize(uint64_t klen, uint64_t vlen)
{
    return (ENTRY_HDR + vlen + klen + 15u) & ~(uint64_t)15u;
}

/* The entry at `off` with its key and value in bounds, or NULL; the
 * lengths it checked in *klp and *vlp. Each is read once: a lock-free
 * reader uses these, never a second read of the entry (a concurrent change
 * or reuse of the block can make that one anything). */
static inline struct entry *entry_lens(const shmds_map *m, uint64_t off, uint64_t *klp,
                                       uint64_t *vlp)
{
    struct entry *e = shmds__ptr_chk(m->r, off, ENTRY_HDR, 16);
    if (e == NULL)
        return NULL;
    uint64_t kl = LD(&e->klen), vl = LD(&e->vlen);
    uint64_t room = m->r->heap_max - off - ENTRY_HDR;
    if (LD(&e->magic) != ENTRY_MAGIC || kl > room || vl > room - kl ||
        !shmds__off_ok(m->r, off + ENTRY_HDR, kl + vl, 1))
        return NULL;
    *klp = kl;
    *vlp = vl;
    return e;
}

/* entry_lens() for callers holding the stripe lock. */
static inline struct entry *entry_at(const shmds_map *m, uint64_t off)
{
    uint64_t kl, vl;
    return entry_lens(m, off, &kl, &vl);
}

/* The most entries one walk can meet in a healthy map: entries are
 * disjoint heap blocks of at least 64 bytes. A walk past it goes round a
 * shared tail (buckets of a damaged map all pointing into one chain, each
 * chain under CHAIN_CAP): it stops with SHMDS_ECORRUPT, so its work is
 * bounded by the region's size, not by buckets times chain length. */
static inline uint64_t walk_cap(const shmds_map *m)
{
    return (m->r->heap_max - m->r->heap_off) / 64u + 1u;
}

static inline unsigned char *e_val(struct entry *e)
{
    return (unsigned char *)e + ENTRY_HDR;
}

static inline unsigned char *e_key(struct entry *e)
{
    return (unsigned char *)e + ENTRY_HDR + e->vlen;
}

static inline bool e_expired(const struct entry *e, uint64_t *now)
{
    uint64_t x = LD(&e->expire_ms);
    if (x == 0)
        return false;
    if (*now == 0)
        *now = now_ms();
    return *now >= x;
}


static inline bool e_match(struct entry *e, uint64_t hash, const void *key, size_t klen)
{
    return e->hash == hash && e->klen == klen && shmds__bytes_eq(e_key(e), key, klen);
}

/* ---------------------------------------------------------------------------
 * Table state
 * ------------------------------------------------------------------------ */

static int resize_repair(void *arg);

/* Read the table pair consistently and remember it in the handle. A
 * writable handle that finds tseq stuck odd takes the resize lock, which
 * repairs; a read-only one gives up with -ETIMEDOUT at the region's lock
 * bound. */
/* Check a table state read at tseq `q` and fill *t with it. */
static int tsnap_set(const shmds_map *m, struct tsnap *t, uint64_t q, uint64_t to, uint64_t tn,
                     uint32_t bo, uint32_t bn, uint64_t ep, bool rh)
{
    if (bo < m->sbits || bo < 1 || bo > MAX_BITS)
        return SHMDS_ECORRUPT;
    t->seq = q;
    t->bo = bo;
    t->rh = rh;
    t->tepoch = ep;
    t->old = shmds__ptr_chk(m->r, to, (uint64_t)8 << bo, 8);
    if (t->old == NULL)
        return SHMDS_ECORRUPT;
    t->nw = NULL;
    t->bn = 0;
    if (rh) {
        if (bn != bo + 1)
            return SHMDS_ECORRUPT;
        t->bn = bn;
        t->nw = shmds__ptr_chk(m->r, tn, (uint64_t)8 << bn, 8);
        if (t->nw == NULL)
            return SHMDS_ECORRUPT;
    }
    return 0;
}

/* One read of the table state at an even tseq `q`: 1 when it held still
 * (*t filled and cached in the handle), 0 when it moved, or an error. */
static int tsnap_try(shmds_map *m, struct tsnap *t, uint64_t q)
{
    struct map_hdr *h = m->h;
    uint64_t to = LD(&h->tab_old), tn = LD(&h->tab_new);
    uint32_t bo = LD(&h->bits_old), bn = LD(&h->bits_new);
    uint64_t ep = LD(&h->tepoch);
    uint32_t rh = LD(&h->rehashing);
    if (!shmds__seq_read_ok(&h->tseq, q))
        return 0;
    int rc = tsnap_set(m, t, q, to, tn, bo, bn, ep, rh != 0);
    if (rc < 0)
        return rc;
    m->tc = *t;
    return 1;
}

static int tsnap_load(shmds_map *m, struct tsnap *t)
{
    struct map_hdr *h = m->h;
    struct shmds__wait w = {0};
    for (;;) {
        uint64_t s1 = shmds__seq_read_begin(&h->tseq);
        if ((s1 & 1) == 0) {
            int rc = tsnap_try(m, t, s1);
            if (rc != 0)
                return rc < 0 ? rc : 0;
        }
        int rc = shmds__seq_wait(m->r, &w, &h->tseq, &h->resize, resize_repair, m);
        if (rc != 0)
            return rc;
    }
}

/* The table state for a lock-free reader, never waiting for a writer.
 * While a START or a SWITCH is under way (tseq odd, perhaps for good: its
 * writer may have died), the state lookups need follows from the resize
 * record, which is written before tseq goes odd: during START no stripe
 * has moved anything yet, so the old table alone; during SWITCH every
 * stripe is done, so the new one alone. The record is trusted only if
 * tseq still has the odd value it was read under. t->seq is that value,
 * which the caller's miss check compares again. */
static int tsnap_read(shmds_map *m, struct tsnap *t)
{
    struct map_hdr *h = m->h;
    for (unsigned tries = 0; tries < LOOKUP_RETRIES; tries++) {
        uint64_t q = LDA(&h->tseq);
        if (shmds__likely(q == m->tc.seq && (q & 1) == 0)) {
            *t = m->tc;
            return 0;
        }
        int rc;
        if ((q & 1) == 0) {
            if ((rc = tsnap_try(m, t, q)) != 0)
                return rc < 0 ? rc : 0;
            continue;
        }
        struct rlog *rl = &h->rlog;
        uint32_t op = LDA(&rl->op);
        uint64_t to = LD(&h->tab_old), nt = LD(&rl->newtab);
        uint32_t bo = LD(&h->bits_old), nb = LD(&rl->newbits);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (LD(&h->tseq) != q)
            continue;
        if (op == ROP_START)
            return tsnap_set(m, t, q, to, 0, bo, 0, 0, false);
        if (op == ROP_SWITCH)
            return tsnap_set(m, t, q, nt, 0, nb, 0, 0, false);
        return SHMDS_ECORRUPT; /* odd with no record: a scribbled header */
    }
    return -EAGAIN;
}

/* The table state: the handle's copy while tseq has not moved since it
 * was read and checked (the common case: one load), else a fresh read.
 * The fields are only ever changed with tseq odd and bumped again, so an
 * unchanged even tseq means unchanged fields. The copy is only ever taken
 * at an even tseq; a fresh handle's odd tc.seq must not match a tseq a
 * writer killed mid-change left odd (the first growth leaves it at 1). */
static inline int tsnap_get(shmds_map *m, struct tsnap *t)
{
    uint64_t q = LDA(&m->h->tseq);
    if (shmds__likely(q == m->tc.seq && (q & 1) == 0)) {
        *t = m->tc;
        return 0;
    }
    return tsnap_load(m, t);
}

/* Buckets in a slice of stripe s: 2^(bits - sbits). */
static inline uint64_t slice_len(const shmds_map *m, uint32_t bits)
{
    return (uint64_t)1 << (bits - m->sbits);
}

static inline bool stripe_done(const shmds_map *m, const struct stripe *st, const struct tsnap *t)
{
    return LD(&st->epoch) == t->tepoch && LD(&st->moved) >= slice_len(m, t->bo);
}

/* The bucket slot holding `hash` (stripe s). */
static inline uint64_t *bucket_slot(const shmds_map *m, const struct tsnap *t, const struct stripe *st,
                                    uint32_t s, uint64_t hash)
{
    uint64_t ob = bidx(hash, t->bo);
    if (t->rh && LD(&st->epoch) == t->tepoch &&
        ob - ((uint64_t)s << (t->bo - m->sbits)) < LD(&st->moved))
        return &t->nw[bidx(hash, t->bn)];
    return &t->old[ob];
}

/* The bucket slots that hold what old bucket `rel` of stripe s's slice
 * held: its two targets in the new table once it is moved; the old bucket
 * while it is not; and for the bucket being moved (rel == moved), the old
 * bucket and both targets. A move that ran out of memory part way through
 * a bucket (move_entry: -ENOMEM) leaves it so, half in each table, until
 * a later write finds room; readers and writers look in both. Returns how
 * many (1 to 3). */
static int slice_slots(const shmds_map *m, const struct tsnap *t, const struct stripe *st,
                       uint32_t s, uint64_t rel, uint64_t *out[3])
{
    uint64_t mv = t->rh && LD(&st->epoch) == t->tepoch ? LD(&st->moved) : UINT64_MAX;
    uint64_t nb = mv != UINT64_MAX ? ((uint64_t)s << (t->bn - m->sbits)) + 2 * rel : 0;
    if (mv != UINT64_MAX && rel < mv) {
        out[0] = &t->nw[nb];
        out[1] = &t->nw[nb + 1];
        return 2;
    }
    out[0] = &t->old[((uint64_t)s << (t->bo - m->sbits)) + rel];
    if (rel != mv)
        return 1;
    out[1] = &t->nw[nb];
    out[2] = &t->nw[nb + 1];
    return 3;
}

/* ---------------------------------------------------------------------------
 * Repair
 * ------------------------------------------------------------------------ */

/* The first spare slot of stripe st holding `b` (0: an empty one), or
 * NULL. */
static uint64_t *spare_slot(struct stripe *st, uint64_t b)
{
    for (unsigned j = 0; j < SPARES; j++)
        if (LD(&st->spare[j]) == b)
            return &st->spare[j];
    return NULL;
}

/* What the stripe repair callback repairs: the map and the stripe whose
 * lock stripe_lock() is taking (on its stack: the repair runs inside that
 * call). */
struct stripe_ref {
    shmds_map *m;
    uint32_t s;
};

/* A retirement in stripe_repair that did not finish (rc != 0): an error,
 * or SHMDS__RETIRE_KEPT, the block left in the log, which stays open (the
 * change itself is done): 0. */
static int kept(struct stripe *st, int rc)
{
    if (rc < 0)
        return rc;
    shmds__seq_write_end(&st->seq);
    return 0;
}

/* Whether stripe st's log still holds a retirement that found no record
 * (SHMDS__RETIRE_KEPT): writes that need the log wait for room. */
static inline bool log_busy(const struct stripe *st)
{
    return shmds__unlikely(LD(&st->log.op) != OP_NONE);
}

/* Called with stripe ref->s locked after its holder died. Reads only the
 * intent log (and, after a rehash move, the bucket it was in). Idempotent:
 * every step sets absolute values or is an allocator call that is a no-op
 * once its slot is 0. */
static int stripe_repair(void *arg)
{
    const struct stripe_ref *ref = arg;
    shmds_map *m = ref->m;
    shmds_region *r = m->r;
    struct stripe *st = &m->h->stripes[ref->s];
    struct slog *lg = &st->log;
    /* A retirement first (it may leave `dead` empty), then the allocator. */
    int rc = shmds__guard_settle(r);
    if (rc < 0 || (rc = shmds__alloc_settle(r)) < 0)
        return rc;
    SHMDS_FAULT("map.repair.settled");
    switch (LD(&lg->op)) {
    case OP_NONE:
        /* Died while filling in a record it had not opened yet: the block
         * named in `dead` is still linked, not the log's to free. */
        ST(&lg->dead, 0);
        break;
    case OP_SWAP: {
        uint64_t *link = shmds__ptr_chk(r, lg->link, 8, 8);
        if (link == NULL)
            return SHMDS_ECORRUPT;
        bool done = lg->committed ||
                    (lg->link_new != lg->link_old && LD(link) == lg->link_new);
        /* A block also in a spare slot was on its way there or from
         * there: it stays a spare, and only the log forgets it. */
        if (done) {
            st->entries = lg->entries1;
            st->mem = lg->mem1;
            ST(&lg->blk, 0);
            ST(&lg->committed, 1);
            if ((rc = shmds__guard_retire(r, &lg->dead)) != 0)
                return kept(st, rc);
            SHMDS_FAULT("map.repair.swap.retired_dead");
        } else {
            if (lg->blk != 0 && spare_slot(st, lg->blk) != NULL)
                ST(&lg->blk, 0);
            if ((rc = shmds__free_from(r, &lg->blk)) < 0)
                return rc;
            SHMDS_FAULT("map.repair.swap.freed_blk");
            ST(&lg->dead, 0);
        }
        break;
    }
    case OP_MOVE: {
        /* Linked copy: finish the move (unlink and retire the original);
         * else the copy, never seen, goes and the original stays. */
        uint64_t *os = shmds__ptr_chk(r, lg->oldslot, 8, 8);
        uint64_t *ns = shmds__ptr_chk(r, lg->newslot, 8, 8);
        if (os == NULL || ns == NULL)
            return SHMDS_ECORRUPT;
        if (lg->blk != 0 && link_off(LD(ns)) == lg->blk) {
            ST(os, lg->enext);
            SHMDS_FAULT("map.repair.move.unlinked");
            if ((rc = shmds__guard_retire(r, &lg->dead)) != 0)
                return kept(st, rc);
            ST(&lg->blk, 0);
        } else {
            ST(&lg->dead, 0);
            if (lg->blk != 0 && spare_slot(st, lg->blk) != NULL)
                ST(&lg->blk, 0);
            if ((rc = shmds__free_from(r, &lg->blk)) < 0)
                return rc;
        }
        break;
    }
    case OP_STORE: {
        uint64_t *v = shmds__ptr_chk(r, lg->e, 8, 8);
        uint64_t *w = lg->nhead != 0 ? shmds__ptr_chk(r, lg->nhead, 8, 8) : NULL;
        if (v == NULL || (lg->nhead != 0 && w == NULL))
            return SHMDS_ECORRUPT;
        ST(v, lg->enext);
        if (w != NULL)
            ST(w, lg->oldslot);
        break;
    }
    default:
        return SHMDS_ECORRUPT;
    }
    ST(&lg->committed, 0);
    STR(&lg->op, OP_NONE);
    shmds__seq_write_end(&st->seq);
    return 0;
}

/* Called with the resize lock held after its holder died: roll START or
 * SWITCH forward from the record. */
static int resize_repair(void *arg)
{
    shmds_map *m = arg;
    struct map_hdr *h = m->h;
    struct rlog *rl = &h->rlog;
    int rc = shmds__guard_settle(m->r);
    if (rc < 0 || (rc = shmds__alloc_settle(m->r)) < 0)
        return rc;
    switch (LD(&rl->op)) {
    case ROP_NONE:
        break;
    case ROP_START:
        if (LD(&h->tab_new) != 0) {
            shmds__seq_write_begin(&h->tseq);
            ST(&h->bits_new, rl->newbits);
            ST(&h->tepoch, rl->tepoch1);
            ST(&h->rehashing, 1);
        }
        break;
    case ROP_SWITCH:
        shmds__seq_write_begin(&h->tseq);
        ST(&h->tab_old, rl->newtab);
        ST(&h->bits_old, rl->newbits);
        ST(&h->tab_new, 0);
        ST(&h->bits_new, 0);
        ST(&h->rehashing, 0);
        shmds__seq_write_end(&h->tseq);
        if ((rc = shmds__guard_retire(m->r, &rl->dead)) != 0)
            return rc < 0 ? rc : 0; /* kept: the record stays open */
        break;
    default:
        return SHMDS_ECORRUPT;
    }
    shmds__seq_write_end(&h->tseq);
    STR(&rl->op, ROP_NONE);
    return 0;
}

/* Lock stripe s (blocking up to the region's bound, or not at all when
 * `try`). Returns 0, SHMDS_RECOVERED, or an error (-EBUSY for try). A log
 * left open by a holder whose retirement found no record (swap_close) is
 * closed by the repair too when a record can be had now; else it stays
 * open (log_busy). */
static int stripe_lock(shmds_map *m, uint32_t s, bool try)
{
    struct stripe *st = &m->h->stripes[s];
    struct stripe_ref ref = {m, s};
    int rc = try ? shmds_mutex_lock(&st->lock, 0, stripe_repair, &ref)
                 : shmds__lock(m->r, &st->lock, stripe_repair, &ref);
    if (rc >= 0 && shmds__unlikely(LD(&st->log.op) != OP_NONE)) {
        int rc2 = stripe_repair(&ref);
        if (rc2 < 0) {
            shmds_mutex_unlock(&st->lock);
            return rc2;
        }
    }
    return rc;
}

/* Take the resize lock; a record left open by a live holder whose
 * retirement failed is finished first. */
static int resize_lock(shmds_map *m)
{
    struct map_hdr *h = m->h;
    int rc = shmds__lock(m->r, &h->resize, resize_repair, m);
    if (rc >= 0 && shmds__unlikely(LD(&h->rlog.op) != ROP_NONE)) {
        int rc2 = resize_repair(m);
        if (rc2 < 0) {
            shmds_mutex_unlock(&h->resize);
            return rc2;
        }
    }
    return rc;
}

static void stripe_unlock(shmds_map *m, uint32_t s)
{
    shmds_mutex_unlock(&m->h->stripes[s].lock);
}

/* ---------------------------------------------------------------------------
 * Growth
 * ------------------------------------------------------------------------ */

/* Start a growth if none is running. Stripe lock held; takes the resize
 * lock. A table that cannot be allocated is not an error: chains just get
 * longer until memory allows. */
static int grow_start(shmds_map *m)
{
    struct map_hdr *h = m->h;
    int rc = resize_lock(m);
    if (rc < 0)
        return rc;
    struct tsnap t;
    rc = tsnap_get(m, &t);
    /* A SWITCH whose old table found no retire record yet: no growth
     * until it is gone (the record is needed). */
    if (rc == 0 && !t.rh && t.bo < MAX_BITS && LD(&h->rlog.op) == ROP_NONE) {
        struct rlog *rl = &h->rlog;
        rl->newbits = t.bo + 1;
        rl->tepoch1 = t.tepoch + 1;
        STR(&rl->op, ROP_START);
        SHMDS_FAULT("map.grow.logged");
        rc = shmds__alloc_into(m->r, (uint64_t)8 << (t.bo + 1), &h->tab_new);
        if (rc == 0) {
            SHMDS_FAULT("map.grow.allocated");
            __atomic_thread_fence(__ATOMIC_RELEASE); /* the record before the odd tseq */
            shmds__seq_write_begin(&h->tseq);
            SHMDS_FAULT("map.grow.odd");
            ST(&h->bits_new, rl->newbits);
            ST(&h->tepoch, rl->tepoch1);
            ST(&h->rehashing, 1);
            shmds__seq_write_end(&h->tseq);
        } else if (rc == -ENOMEM || rc == -ENOSPC) {
            rc = 0; /* no room (or the region may not grow): later */
        }
        STR(&rl->op, ROP_NONE);
    }
    shmds_mutex_unlock(&h->resize);
    return rc;
}

/* SWITCH when every stripe has moved its slice. Holds a stripe lock; takes
 * the resize lock. Stripes that are done stay done until the next START, so
 * reading their progress without their locks is safe. */
static int grow_finish(shmds_map *m)
{
    struct map_hdr *h = m->h;
    struct tsnap t;
    int rc = tsnap_get(m, &t);
    if (rc < 0 || !t.rh)
        return rc;
    for (uint32_t i = 0; i < m->S; i++)
        if (!stripe_done(m, &h->stripes[i], &t))
            return 0;
    rc = resize_lock(m);
    if (rc < 0)
        return rc;
    struct tsnap t2;
    rc = tsnap_get(m, &t2);
    if (rc == 0 && t2.rh && t2.tepoch == t.tepoch) {
        struct rlog *rl = &h->rlog;
        rl->newtab = LD(&h->tab_new);
        rl->newbits = t2.bn;
        ST(&rl->dead, LD(&h->tab_old));
        STR(&rl->op, ROP_SWITCH);
        SHMDS_FAULT("map.switch.logged");
        __atomic_thread_fence(__ATOMIC_RELEASE); /* the record before the odd tseq */
        shmds__seq_write_begin(&h->tseq);
        ST(&h->tab_old, rl->newtab);
        ST(&h->bits_old, rl->newbits);
        SHMDS_FAULT("map.switch.half");
        ST(&h->tab_new, 0);
        ST(&h->bits_new, 0);
        ST(&h->rehashing, 0);
        shmds__seq_write_end(&h->tseq);
        SHMDS_FAULT("map.switch.published");
        rc = shmds__guard_retire(m->r, &rl->dead);
        SHMDS_FAULT("map.switch.retired");
        if (rc == 0)
            STR(&rl->op, ROP_NONE);
        else if (rc > 0)
            rc = 0; /* kept: the record stays open for resize_lock */
    }
    shmds_mutex_unlock(&h->resize);
    return rc;
}

static int entry_block(shmds_map *m, struct stripe *st, uint64_t need);

/* Move entry e, the head of the old bucket slot os (whose word is ow),
 * into the new table of t (stripe st locked), without ever changing a
 * link a lock-free reader may be following: a copy is linked at the head
 * of its new bucket (the first commit), then the original is unlinked from
 * the old bucket (the second) and retired. A reader in the old chain goes on from the
 * original; one that missed there finds the copy (lookups of a bucket
 * being moved look in both tables, old first). Logged; repair finishes a
 * move whose copy is linked and undoes one whose copy is not. -ENOMEM:
 * nothing changed (no room for the copy, or the log busy). */
static int move_entry(shmds_map *m, struct stripe *st, const struct tsnap *t, uint64_t *os,
                      uint64_t ow, struct entry *e)
{
    uint64_t eo = link_off(ow);
    struct slog *lg = &st->log;
    /* Moves are work that can wait: not while the log is busy, nor while
     * retired blocks pile up (a reader holds them): the retire records
     * are kept for writes (guard.c). */
    if (log_busy(st) || !shmds__guard_roomy(m->r))
        return -ENOMEM;
    uint64_t *ns = &t->nw[bidx(e->hash, t->bn)];
    uint64_t size = esize(e->klen, e->vlen);
    lg->e = eo;
    lg->enext = link_word(ow, e->next, 0);
    lg->nhead = LD(ns);
    lg->oldslot = shmds_off(m->r, os);
    lg->newslot = shmds_off(m->r, ns);
    ST(&lg->dead, eo);
    STR(&lg->op, OP_MOVE);
    SHMDS_FAULT("map.move.logged");
    int rc = entry_block(m, st, size);
    struct entry *c = rc == 0 ? shmds__ptr_chk(m->r, lg->blk, size, 16) : NULL;
    if (c == NULL) {
        if (rc == 0) {
            shmds__free_from(m->r, &lg->blk);
            rc = SHMDS_ECORRUPT;
        }
        ST(&lg->dead, 0);
        STR(&lg->op, OP_NONE);
        return rc;
    }
    memcpy(c, e, size);
    c->next = link_off(lg->nhead);
    c->ref = 0;
    SHMDS_FAULT("map.move.copied");
    STR(ns, link_word(lg->nhead, lg->blk, tag_bit(c->hash)));
    SHMDS_FAULT("map.move.linked");
    ST(os, lg->enext);
    SHMDS_FAULT("map.move.unlinked");
    /* `blk` stays until the original is retired: repair tells a linked
     * copy by it. */
    if ((rc = shmds__guard_retire(m->r, &lg->dead)) != 0)
        return rc < 0 ? rc : 0; /* kept: the log stays open (swap_close) */
    SHMDS_FAULT("map.move.retired");
    ST(&lg->blk, 0);
    STR(&lg->op, OP_NONE);
    return 0;
}

/* Move up to `n` old buckets of stripe s (locked) into the new table.
 * Returns 1 when the stripe's slice is now all moved, 0 when not, <0 error. */
static int migrate(shmds_map *m, uint32_t s, const struct tsnap *t, unsigned n)
{
    struct stripe *st = &m->h->stripes[s];
    SHMDS_ASSERT(shmds__mutex_held(&st->lock), "only the stripe's holder moves its buckets");
    if (!t->rh)
        return 0;
    uint64_t total = slice_len(m, t->bo);
    if (stripe_done(m, st, t))
        return 1;
    int rc = 0;
    shmds__seq_write_begin(&st->seq);
    if (LD(&st->epoch) != t->tepoch) {
        /* First touch in this growth: nothing of ours is in the new table
         * yet, so clearing our slice of it is safe to repeat. */
        memset(&t->nw[(uint64_t)s << (t->bn - m->sbits)], 0, 8 * slice_len(m, t->bn));
        ST(&st->moved, 0);
        STR(&st->epoch, t->tepoch); /* with `moved` 0 for lock-free readers */
        SHMDS_FAULT("map.migrate.cleared");
    }
    for (unsigned k = 0; k < n && LD(&st->moved) < total; k++) {
        uint64_t b = ((uint64_t)s << (t->bo - m->sbits)) + LD(&st->moved);
        uint64_t *os = &t->old[b];
        unsigned steps = 0;
        for (uint64_t ow, eo; (eo = link_off(ow = LD(os))) != 0;) {
            struct entry *e = entry_at(m, eo);
            if (e == NULL || ++steps > m->chain_cap || bidx(e->hash, t->bo) != b) {
                rc = SHMDS_ECORRUPT;
                goto out;
            }
            if ((rc = move_entry(m, st, t, os, ow, e)) != 0)
                goto out; /* -ENOMEM, -ENOSPC: the bucket waits for room */
        }
        STR(&st->moved, LD(&st->moved) + 1);
    }
out:
    shmds__seq_write_end(&st->seq);
    if (rc == -ENOMEM || rc == -ENOSPC) /* the write that called us is done */
        return 0;
    if (rc < 0)
        return rc;
    return LD(&st->moved) >= total ? 1 : 0;
}

/* The rehash work a write does (stripe s locked): move some of our buckets,
 * or, when ours are done, some of another stripe's we can lock at once;
 * finish the growth when everything is moved. */
static int rehash_step(shmds_map *m, uint32_t s)
{
    struct tsnap t;
    int rc = tsnap_get(m, &t);
    if (rc < 0 || !t.rh)
        return rc;
    rc = migrate(m, s, &t, MOVE_PER_OP);
    if (rc == 1 && m->S > 1) {
        uint32_t o = (uint32_t)(__atomic_fetch_add(&m->h->help, 1, __ATOMIC_RELAXED) % m->S);
        if (o != s && !stripe_done(m, &m->h->stripes[o], &t) && stripe_lock(m, o, true) >= 0) {
            rc = migrate(m, o, &t, MOVE_PER_OP);
            stripe_unlock(m, o);
        }
    }
    if (rc == 1)
        rc = grow_finish(m);
    return rc < 0 ? rc : 0;
}

/* ---------------------------------------------------------------------------
 * The one mutation: SWAP
 * ------------------------------------------------------------------------ */

/* A key as the write and locked-read paths carry it: bytes and hash. */
struct key {
    const void *p;
    size_t len;
    uint64_t hash;
};

/* A new entry to link in. */
struct newent {
    struct key k;
    const void *val;
    size_t vlen;
    uint64_t expire_ms;
    uint32_t uflags;
    uint64_t version; /* out: the version swap() gave the entry */
    /* A spare of the stripe that put_prep() wrote this entry into (all but
     * `next` and `version`), and its slot; 0: none, swap() writes it all. */
    uint64_t prep;
    unsigned prep_j;
};

/* The next version (or lease token) of stripe st (locked). Bumped before
 * use, so a change rolled back after a crash only skips a number. */
static uint64_t next_version(struct stripe *st)
{
    uint64_t v = LD(&st->vclock) + 1;
    if (v == 0) /* 2^64 writes to one stripe: never 0, never reused in practice */
        v = 1;
    ST(&st->vclock, v);
    return v;
}

/* The slot of a spare of stripe st (locked) that fits an entry of `need`
 * bytes, or -1; the empty slots met before it in empty[], their count in
 * *nempty. */
static int spare_fit(shmds_map *m, struct stripe *st, uint64_t need, shmds_off_t *empty[SPARES],
                     unsigned *nempty)
{
    *nempty = 0;
    for (unsigned j = 0; j < SPARES; j++) {
        uint64_t b = LD(&st->spare[j]), usable;
        if (b == 0)
            empty[(*nempty)++] = &st->spare[j];
        else if (shmds__alloc_block_live(m->r, b, &usable) == 0 && usable >= need &&
                 usable - need < SPARE_SLACK)
            return (int)j;
    }
    return -1;
}

/* Move spare j of stripe st (locked, its SWAP opened) into the log's `blk`
 * slot, in two stores (module comment). */
static void spare_take(struct stripe *st, unsigned j)
{
    ST(&st->log.blk, LD(&st->spare[j]));
    SHMDS_FAULT("map.swap.spare_taken");
    ST(&st->spare[j], 0);
}

/* Put a block for an entry of `need` bytes into the log's `blk` slot
 * (stripe st locked, its SWAP opened): a spare that fits; else a new
 * block, with new spares of the same size in the same allocator round
 * trip. Errors as shmds__alloc_into. */
static int entry_block(shmds_map *m, struct stripe *st, uint64_t need)
{
    shmds_off_t *empty[SPARES];
    unsigned ne;
    int j = spare_fit(m, st, need, empty, &ne);
    if (j >= 0) {
        spare_take(st, (unsigned)j);
        return 0;
    }
    return shmds__alloc_many_into(m->r, need, &st->log.blk, empty, ne);
}

/* Write the entry `ne` (but its `next` and `version`) into the entry at e. */
static void entry_fill(struct entry *e, const struct newent *ne)
{
    e->hash = ne->k.hash;
    e->klen = ne->k.len;
    e->vlen = ne->vlen;
    e->expire_ms = ne->expire_ms;
    e->ref = 0;
    e->magic = ENTRY_MAGIC;
    e->uflags = ne->uflags;
    e->pad = 0;
    if (ne->vlen > 0)
        memcpy(e_val(e), ne->val, ne->vlen);
    memcpy(e_key(e), ne->k.p, ne->k.len);
}

/* A put's entry, written ahead of its SWAP into a spare of stripe st
 * (locked) that fits it; when none fits, the empty spare slots are
 * refilled first, in one allocator round trip (not in a map with a
 * budget: its put makes room before it allocates, make_room). This work
 * does not depend on the key's chain, so it runs while the chain's cache
 * misses, which the put prefetched, are under way; the find after it then
 * finds them in cache. A spare is the stripe's own allocated block, which
 * no reader reaches and no repair looks into, so what a death leaves in it
 * is no one's concern. Sets ne->prep on success; else (no room now) leaves
 * it 0, and swap() allocates and reports as before. */
static void put_prep(shmds_map *m, struct stripe *st, struct newent *ne)
{
    shmds_off_t *empty[SPARES];
    unsigned n;
    uint64_t need = esize(ne->k.len, ne->vlen);
    int j = spare_fit(m, st, need, empty, &n);
    if (j < 0 && n > 0 && m->h->mem_limit == 0 && !log_busy(st) &&
        shmds__alloc_many_into(m->r, need, empty[0], empty + 1, n - 1) == 0)
        j = (int)(empty[0] - st->spare);
    struct entry *e = j >= 0 ? shmds__ptr_chk(m->r, LD(&st->spare[j]), need, 16) : NULL;
    if (e == NULL)
        return;
    entry_fill(e, ne);
    SHMDS_FAULT("map.put.prepared");
    ne->prep = shmds_off(m->r, e);
    ne->prep_j = (unsigned)j;
}

/* One SWAP: the link word `link` gets a new entry `ne` chained to `next`
 * (ne != NULL), or `next` itself (ne == NULL: an unlink); the entry `dead`
 * (0 for none) is freed after the commit; the stripe's counters change by
 * `dn` entries and `dmem` bytes. A bucket word keeps its filter bits and
 * gains `bit` (link_word). Built by insert_entry, replace_entry and
 * unlink_entry below. */
struct swap_op {
    uint64_t *link;
    uint64_t next;     /* an offset (a bucket word's filter bits are ignored) */
    uint64_t bit;      /* a bit a bucket word gains: an insert's tag_bit, else 0 */
    struct newent *ne; /* its version is set when written */
    uint64_t dead;
    int64_t dn, dmem;
};

/* Close a committed SWAP (stripe st locked): the entry it unlinked is
 * retired, not freed (guarded readers may hold it). An insert's empty
 * `dead` needs no trip through the retire lock. When retirement cannot
 * finish (SHMDS__RETIRE_KEPT: no record while a reader may hold every
 * retired block and the heap is full; or a lock error) the log stays open
 * with the block in `dead` and the next holder of the stripe lock closes
 * it (stripe_lock). The write committed: kept is a success. */
static int swap_close(shmds_map *m, struct stripe *st)
{
    struct slog *lg = &st->log;
    int rc = LD(&lg->dead) != 0 ? shmds__guard_retire(m->r, &lg->dead) : 0;
    if (rc != 0)
        return rc < 0 ? rc : 0;
    SHMDS_FAULT("map.swap.retired");
    ST(&lg->committed, 0);
    STR(&lg->op, OP_NONE);
    return 0;
}

/* Apply `op` (stripe st locked). Returns 0; on -ENOMEM (no room, or the
 * log still busy with a kept retirement) or any allocator error nothing
 * changed. */
static int swap(shmds_map *m, struct stripe *st, const struct swap_op *op)
{
    shmds_region *r = m->r;
    struct slog *lg = &st->log;
    struct newent *ne = op->ne;
    uint64_t *link = op->link;
    SHMDS_ASSERT(shmds__mutex_held(&st->lock), "the stripe lock serialises its intent log");
    SHMDS_ASSERT(op->dn >= -1 && op->dn <= 1, "a SWAP adds, replaces or removes one entry");
    if (log_busy(st))
        return -ENOMEM;
    lg->committed = 0;
    lg->link = shmds_off(r, link);
    lg->link_old = LD(link);
    lg->link_new = 0;
    ST(&lg->dead, op->dead);
    lg->entries1 = st->entries + (uint64_t)op->dn;
    lg->mem1 = st->mem + (uint64_t)op->dmem;
    STR(&lg->op, OP_SWAP);
    SHMDS_FAULT("map.swap.logged");
    if (ne != NULL) {
        bool ready = ne->prep != 0 && LD(&st->spare[ne->prep_j]) == ne->prep;
        int rc = 0;
        if (ready)
            spare_take(st, ne->prep_j);
        else
            rc = entry_block(m, st, esize(ne->k.len, ne->vlen));
        if (rc < 0) {
            ST(&lg->dead, 0);
            STR(&lg->op, OP_NONE);
            return rc;
        }
        SHMDS_FAULT("map.swap.allocated");
        struct entry *e = shmds__ptr_chk(r, lg->blk, ENTRY_HDR + ne->vlen + ne->k.len, 16);
        if (e == NULL) {
            shmds__free_from(r, &lg->blk);
            ST(&lg->dead, 0);
            STR(&lg->op, OP_NONE);
            return SHMDS_ECORRUPT;
        }
        if (!ready)
            entry_fill(e, ne);
        e->next = link_off(op->next);
        ne->version = next_version(st);
        e->version = ne->version;
        lg->link_new = link_word(lg->link_old, lg->blk, op->bit);
    } else {
        lg->link_new = link_word(lg->link_old, link_off(op->next), 0);
    }
    SHMDS_FAULT("map.swap.before_commit");
    shmds__seq_write_begin(&st->seq);
    STR(link, lg->link_new);
    shmds__seq_write_end(&st->seq);
    SHMDS_FAULT("map.swap.committed");
    ST(&lg->committed, 1);
    st->entries = lg->entries1;
    st->mem = lg->mem1;
    ST(&lg->blk, 0);
    return swap_close(m, st);
}

/* Where find() met a key in a locked stripe. */
struct hit {
    uint64_t *head;  /* the key's bucket slot (always set) */
    uint64_t *link;  /* found: the word pointing at the entry */
    uint64_t eo;     /* found: the entry's offset */
    struct entry *e; /* found: the entry */
};

/* Unlink the entry `e` (at `eo`) whose link word is `link`. */
static int unlink_entry(shmds_map *m, struct stripe *st, uint64_t *link, uint64_t eo,
                        struct entry *e)
{
    const struct swap_op op = {link, e->next, 0, NULL, eo, -1, -(int64_t)esize(e->klen, e->vlen)};
    return swap(m, st, &op);
}

/* Unlink the entry find() hit. */
static int unlink_hit(shmds_map *m, struct stripe *st, const struct hit *h)
{
    return unlink_entry(m, st, h->link, h->eo, h->e);
}

/* Replace the entry find() hit by `ne`, in place in its chain. */
static int replace_entry(shmds_map *m, struct stripe *st, const struct hit *h,
                         struct newent *ne)
{
    /* Same key, same bit: a bucket word keeps it (link_word). */
    const struct swap_op op = {h->link, h->e->next, 0, ne, h->eo, 0,
                               (int64_t)esize(ne->k.len, ne->vlen) -
                                   (int64_t)esize(h->e->klen, h->e->vlen)};
    return swap(m, st, &op);
}

/* Link `ne` at the head of the bucket slot `head`. */
static int insert_entry(shmds_map *m, struct stripe *st, uint64_t *head, struct newent *ne)
{
    const struct swap_op op = {head, LD(head), tag_bit(ne->k.hash), ne, 0, 1,
                               (int64_t)esize(ne->k.len, ne->vlen)};
    return swap(m, st, &op);
}

/* Find key `k` in stripe s (locked) under snapshot t and say where in *h.
 * Returns 1 found, 0 absent (only h->head set), SHMDS_ECORRUPT. */
static int find(shmds_map *m, const struct tsnap *t, uint32_t s, const struct key *k,
                struct hit *h)
{
    struct stripe *st = &m->h->stripes[s];
    SHMDS_ASSERT(shmds__mutex_held(&st->lock), "find's hit is used to write the chain");
    uint64_t *l = bucket_slot(m, t, st, s, k->hash);
    h->head = l;
    /* The bucket being moved may be half in each table (slice_slots): its
     * target in the new table too. */
    uint64_t ob = bidx(k->hash, t->bo);
    bool moving = t->rh && LD(&st->epoch) == t->tepoch &&
                  ob - ((uint64_t)s << (t->bo - m->sbits)) == LD(&st->moved);
    uint64_t bit = tag_bit(k->hash);
    for (unsigned steps = 0;; steps++) {
        uint64_t w = LD(l), o = link_off(w);
        if (bit != 0 && (w & bit) == 0) /* a bucket word without our bit */
            o = 0;
        bit = 0;
        if (o == 0) {
            if (!moving)
                return 0;
            moving = false;
            l = &t->nw[bidx(k->hash, t->bn)];
            bit = tag_bit(k->hash);
            continue;
        }
        struct entry *e = entry_at(m, o);
        if (e == NULL || steps >= 2 * m->chain_cap)
            return SHMDS_ECORRUPT;
        if (e_match(e, k->hash, k->p, k->len)) {
            h->link = l;
            h->eo = o;
            h->e = e;
            return 1;
        }
        l = &e->next;
    }
}

/* ---------------------------------------------------------------------------
 * Expiry and eviction (stripe locked)
 * ------------------------------------------------------------------------ */

static struct lease *lease_find(struct stripe *st, uint64_t hash);
static bool lease_live(const struct lease *l);

/* Whether expired entry e is being refreshed (a live fill lease on its
 * key): then sweeps and reaps keep it, for stale reads. */
static bool refreshing(struct stripe *st, const struct entry *e)
{
    const struct lease *l = lease_find(st, e->hash);
    return l != NULL && lease_live(l);
}

/* Remove expired entries from one bucket slot: at most `max` of them,
 * looking at at most `look` entries (*seen counts those). Returns how many
 * were removed. */
static int reap_slot(shmds_map *m, struct stripe *st, uint64_t *l, unsigned max, unsigned look,
                     uint64_t *now, unsigned *seen)
{
    unsigned done = 0, steps = 0;
    for (; done < max && steps < look; steps++) {
        uint64_t o = link_off(LD(l));
        if (o == 0)
            break;
        struct entry *e = entry_at(m, o);
        if (e == NULL || steps >= m->chain_cap)
            return SHMDS_ECORRUPT;
        if (e_expired(e, now) && !refreshing(st, e)) {
            int rc = unlink_entry(m, st, l, o, e);
            if (rc < 0)
                return rc;
            st->expirations++;
            done++;
        } else {
            l = &e->next;
        }
    }
    *seen = steps;
    return (int)done;
}

/* Sweep one bucket of stripe s for expired entries. */
static int sweep(shmds_map *m, uint32_t s)
{
    struct stripe *st = &m->h->stripes[s];
    if (LD(&m->h->has_ttl) == 0 || st->entries == 0)
        return 0;
    struct tsnap t;
    int rc = tsnap_get(m, &t);
    if (rc < 0)
        return rc;
    uint64_t rel = st->sweep % slice_len(m, t.bo), now = 0;
    unsigned seen;
    st->sweep = rel + 1;
    uint64_t *slots[3];
    int n = slice_slots(m, &t, st, s, rel, slots);
    for (int i = 0; i < n; i++)
        if ((rc = reap_slot(m, st, slots[i], 8, m->chain_cap + 1, &now, &seen)) < 0)
            return rc;
    return 0;
}

/* Evict one entry of stripe s (locked) by CLOCK; expired entries go first.
 * Returns 1 evicted, 0 the stripe is empty, <0 error. */
static int evict_one(shmds_map *m, uint32_t s)
{
    struct stripe *st = &m->h->stripes[s];
    struct tsnap t;
    int rc = tsnap_get(m, &t);
    if (rc < 0)
        return rc;
    uint64_t len = slice_len(m, t.bo), now = 0;
    /* Two turns of the hand clear every bit and then find a victim. */
    for (uint64_t visit = 0; visit <= 2 * len && st->entries > 0; visit++) {
        uint64_t rel = st->hand % len;
        uint64_t *slots[3];
        int n = slice_slots(m, &t, st, s, rel, slots);
        for (int i = 0; i < n; i++) {
            uint64_t *l = slots[i];
            for (unsigned steps = 0;; steps++) {
                uint64_t o = link_off(LD(l));
                if (o == 0)
                    break;
                struct entry *e = entry_at(m, o);
                if (e == NULL || steps >= m->chain_cap)
                    return SHMDS_ECORRUPT;
                bool exp = e_expired(e, &now);
                if (exp || LD(&e->ref) == 0) {
                    if ((rc = unlink_entry(m, st, l, o, e)) < 0)
                        return rc;
                    if (exp)
                        st->expirations++;
                    else
                        st->evictions++;
                    return 1;
                }
                ST(&e->ref, 0);
                l = &e->next;
            }
        }
        st->hand = rel + 1;
    }
    return 0;
}

static uint64_t mem_total(const shmds_map *m)
{
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m->S; i++)
        sum += LD(&m->h->stripes[i].mem);
    return sum;
}

/* Whether `need` more bytes fit a budget of `limit` with `used` spent
 * (without wrapping: a mem_limit near UINT64_MAX is a caller's to give). */
static inline bool within(uint64_t used, uint64_t need, uint64_t limit)
{
    return used <= limit && need <= limit - used;
}

/* Make room for `need` more bytes of entries (stripe s locked): evict under
 * SHMDS_MAP_EVICT (and `evict`: not a NOEVICT put), first here, then in
 * stripes we can lock at once.
 * `force` evicts one entry even without a budget (the heap was full).
 * Returns 0 (room made, or nothing to do), -ENOMEM, or an error. */
static int make_room(shmds_map *m, uint32_t s, uint64_t need, bool force, bool evict)
{
    uint64_t limit = m->h->mem_limit;
    if (!force && (limit == 0 || within(mem_total(m), need, limit)))
        return 0;
    if (!evict || (limit != 0 && need > limit))
        return -ENOMEM;
    for (unsigned round = 0; round < 1u << 16; round++) {
        int rc = evict_one(m, s);
        if (rc < 0)
            return rc;
        if (rc == 0) {
            /* Our stripe is empty: take one from a stripe nobody holds. */
            for (uint32_t k = 1; k < m->S && rc == 0; k++) {
                uint32_t o = (s + k + round) % m->S;
                if (stripe_lock(m, o, true) < 0)
                    continue;
                rc = evict_one(m, o);
                stripe_unlock(m, o);
            }
            if (rc <= 0)
                return rc < 0 ? rc : -ENOMEM;
        }
        if (force || limit == 0 || within(mem_total(m), need, limit))
            return 0;
    }
    return -ENOMEM;
}

/* ---------------------------------------------------------------------------
 * Handles
 * ------------------------------------------------------------------------ */

static size_t hdr_bytes(uint32_t S)
{
    return sizeof(struct map_hdr) + (size_t)S * sizeof(struct stripe);
}

static uint32_t log2_ceil(uint64_t x)
{
    uint32_t b = 0;
    while (b < 63 && ((uint64_t)1 << b) < x)
        b++;
    return b;
}

/* Pick where this handle counts hits and misses: a shard line no live
 * process holds, claimed for this handle alone (a dead owner's line is
 * taken over, its counts kept), so a get adds with plain stores to a line
 * no other process writes; when every line is held, the shared pair of
 * the line our pid picks, with atomic adds. A read-only region counts
 * nothing. Cost: at most SHARDS compare-and-swaps and kill(2) probes. */
static void shard_claim(shmds_map *m)
{
    m->shard = NULL;
    m->own = false;
    m->shard_pid = shmds__self_pid();
    if (shmds__rdonly(m->r))
        return;
    uint64_t me = m->shard_pid;
    for (unsigned i = 0; i < SHARDS; i++) {
        struct shard *sh = &m->h->shards[i];
        uint64_t o = LD(&sh->owner);
        if (o != 0 && (o > UINT32_MAX || !shmds__proc_gone((uint32_t)o)))
            continue;
        if (__atomic_compare_exchange_n(&sh->owner, &o, me, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED)) {
            m->shard = sh;
            m->own = true;
            return;
        }
    }
    m->shard = &m->h->shards[shmds__mix64(me) % SHARDS];
}

/* Give a claimed shard line back (its counts stay). */
static void shard_release(shmds_map *m)
{
    if (m->own) {
        uint64_t me = shmds__self_pid();
        __atomic_compare_exchange_n(&m->shard->owner, &me, 0, false, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED);
    }
    m->shard = NULL;
    m->own = false;
}

/* Validate the header at `off` and make a handle for it. */
static int map_attach(shmds_region *r, shmds_off_t off, shmds_map **out)
{
    struct map_hdr *h = shmds__ptr_chk(r, off, sizeof(struct map_hdr), 64);
    if (h == NULL || LDA(&h->magic) != MAP_MAGIC)
        return SHMDS_ECORRUPT;
    uint32_t S = h->nstripes, sb = h->sbits;
    /* sb is checked before it is used as a shift count: it is untrusted. */
    if (S == 0 || S > SHMDS_MAP_STRIPES_MAX || (S & (S - 1)) != 0 || sb >= 32 || S != (1u << sb) ||
        shmds__ptr_chk(r, off, hdr_bytes(S), 64) == NULL)
        return SHMDS_ECORRUPT;
    shmds_map *m = calloc(1, sizeof *m);
    if (m == NULL)
        return -ENOMEM;
    m->r = r;
    m->h = h;
    m->off = off;
    m->S = S;
    m->sbits = sb;
    m->seed = h->seed;
    m->evict = (h->flags & SHMDS_MAP_EVICT) != 0;
    m->tc.seq = 1;
    uint64_t wc = walk_cap(m);
    m->chain_cap = wc < CHAIN_CAP ? (unsigned)wc : CHAIN_CAP;
    shard_claim(m);
    *out = m;
    return 0;
}

struct mparams {
    const shmds_map_opts *o;
    uint32_t S, sb, bits;
};

/* The object layer's init: fill in the zeroed header, allocate the first
 * table into the header's own field, magic last. */
static int map_init(shmds_region *r, shmds_off_t off, shmds_off_t blk, void *arg)
{
    const struct mparams *p = arg;
    const shmds_map_opts *o = p->o;
    struct map_hdr *h = (struct map_hdr *)(void *)(r->base + off);
    h->nstripes = p->S;
    h->sbits = p->sb;
    h->capacity = o->capacity;
    h->mem_limit = o->mem_limit;
    h->default_ttl_ms = o->default_ttl_ms != 0 ? o->default_ttl_ms : (uint64_t)o->default_ttl_s * 1000u;
    h->flags = o->flags;
    h->has_ttl = h->default_ttl_ms != 0;
    h->block = blk;
    h->seed = shmds__random_seed();
    h->bits_old = p->bits;
    int rc = shmds_mutex_init(&h->resize);
    for (uint32_t i = 0; i < p->S && rc == 0; i++)
        if ((rc = shmds_mutex_init(&h->stripes[i].lock)) == 0)
            rc = shmds_sem_init(&h->stripes[i].bell, 0);
    if (rc == 0)
        rc = shmds__alloc_into(r, (uint64_t)8 << p->bits, &h->tab_old);
    if (rc != 0)
        return rc;
    SHMDS_FAULT("map.create.table");
    memset(shmds_ptr(r, h->tab_old), 0, (size_t)8 << p->bits);
    STR(&h->magic, MAP_MAGIC);
    return 0;
}

SHMDS_API int shmds_map_create(shmds_region *r, const char *name, const shmds_map_opts *o,
                               shmds_map **out)
{
    shmds_map_opts d = {0};
    if (o == NULL)
        o = &d;
    if (r == NULL || out == NULL || o->stripes > SHMDS_MAP_STRIPES_MAX ||
        (o->flags & ~(uint32_t)SHMDS_MAP_EVICT) != 0 ||
        ((o->flags & SHMDS_MAP_EVICT) && o->mem_limit == 0) ||
        (o->default_ttl_s != 0 && o->default_ttl_ms != 0) || o->default_ttl_ms > SHMDS_TTL_MAX_MS)
        return -EINVAL;
    uint32_t S = o->stripes == 0 ? SHMDS_MAP_STRIPES_DEFAULT : o->stripes;
    uint32_t sb = log2_ceil(S);
    S = 1u << sb;
    uint32_t bits = log2_ceil(o->capacity);
    if (bits > MAX_BITS)
        return -EINVAL;
    /* Two buckets per expected entry: a hit then walks at most about 1.25
     * entries on average instead of up to 1.5 at one per bucket, and every
     * entry walked is a cache miss of its own. (Growth still starts at one
     * per bucket, so a map grown from small uses no more table than
     * before.) */
    if (o->capacity != 0 && bits < MAX_BITS)
        bits++;
    if (bits < MIN_BITS)
        bits = MIN_BITS;
    if (bits < sb)
        bits = sb;
    struct mparams p = {o, S, sb, bits};
    void *m;
    int rc = shmds__obj_create_attach(r, &shmds__map_ops, name, hdr_bytes(S), map_init, &p, &m);
    if (rc == 0)
        *out = m;
    return rc;
}

SHMDS_API int shmds_map_open(shmds_region *r, const char *name, shmds_map **out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    void *m;
    int rc = shmds__obj_open(r, &shmds__map_ops, name, &m);
    if (rc == 0)
        *out = m;
    return rc;
}

SHMDS_API void shmds_map_close(shmds_map *m)
{
    if (m == NULL)
        return;
    if (shmds__region_intact(m->r) == 0) /* the shard word may be gone */
        shard_release(m);
    free(m);
}

/* Free the blocks a map header without its magic may still reach: an entry
 * unlinked by a dead teardown, and the tables. Idempotent. */
/* The tables of a map being destroyed go the way of its entries: retired
 * (a guarded reader with a handle may still be walking them), with an old
 * table a SWITCH left in its record (kept: no retire record then). A
 * block kept where it was (SHMDS__RETIRE_KEPT) makes the destroy -ENOMEM,
 * to be run again once the reader has left. */
static int map_free_tables(shmds_region *r, struct map_hdr *h)
{
    /* A SWITCH killed before it published names in `dead` the table
     * tab_old still holds: one owner only. */
    uint64_t d = LD(&h->rlog.dead);
    if (d != 0 && (d == LD(&h->tab_old) || d == LD(&h->tab_new)))
        ST(&h->rlog.dead, 0);
    int rc = shmds__guard_retire(r, &h->scratch);
    if (rc == 0)
        rc = shmds__guard_retire(r, &h->rlog.dead);
    if (rc == 0)
        rc = shmds__guard_retire(r, &h->tab_new);
    if (rc == 0)
        rc = shmds__guard_retire(r, &h->tab_old);
    return rc > 0 ? -ENOMEM : rc;
}

/* Free every entry of the map `m` (its name already gone), clear its
 * magic, then free its tables. Entries are taken off the head of each chain
 * in a fixed walk order, through h->scratch (an allocator slot): a run that
 * died left in scratch either the head the walk meets first (still linked)
 * or an entry already unlinked, which is freed first. Idempotent and
 * killable. */
static int map_teardown(shmds_map *m)
{
    shmds_region *r = m->r;
    struct map_hdr *h = m->h;
    /* A retirement a dead destroyer left is finished first: `scratch`
     * then holds its final value. */
    int rc = shmds__guard_settle(r);
    struct tsnap t;
    for (uint32_t s = 0; s < m->S && rc == 0; s++) {
        if ((rc = stripe_lock(m, s, false)) < 0)
            break;
        struct stripe *st = &h->stripes[s];
        /* A kept retirement in the log: the destroy waits for room. */
        rc = log_busy(st) ? -ENOMEM : tsnap_get(m, &t);
        for (uint64_t rel = 0; rc >= 0 && rel < slice_len(m, t.bo); rel++) {
            uint64_t *slots[3];
            int n = slice_slots(m, &t, st, s, rel, slots);
            for (int i = 0; i < n && rc >= 0; i++) {
                uint64_t w, eo;
                for (unsigned steps = 0; (eo = link_off(w = LD(slots[i]))) != 0; steps++) {
                    struct entry *e = entry_at(m, eo);
                    if (e == NULL || steps >= m->chain_cap) {
                        rc = SHMDS_ECORRUPT;
                        break;
                    }
                    if (LD(&h->scratch) != eo &&
                        (rc = shmds__guard_retire(r, &h->scratch)) != 0) {
                        rc = rc > 0 ? -ENOMEM : rc;
                        break;
                    }
                    ST(&h->scratch, eo);
                    SHMDS_FAULT("map.destroy.scratch");
                    ST(slots[i], link_word(w, e->next, 0));
                    SHMDS_FAULT("map.destroy.unlinked");
                    if ((rc = shmds__guard_retire(r, &h->scratch)) != 0) {
                        rc = rc > 0 ? -ENOMEM : rc;
                        break;
                    }
                }
            }
        }
        for (unsigned j = 0; j < SPARES && rc >= 0; j++)
            rc = shmds__free_from(r, &st->spare[j]);
        stripe_unlock(m, s);
        rc = rc > 0 ? 0 : rc;
    }
    if (rc != 0)
        return rc;
    /* No entries left: from here the tables go, and a rerun must not walk
     * them, so the magic goes first. */
    ST(&h->magic, 0);
    SHMDS_FAULT("map.destroy.unmarked");
    return map_free_tables(r, h);
}

/* The object layer's teardown. */
static int map_teardown_at(shmds_region *r, shmds_off_t off)
{
    struct map_hdr *h = shmds__ptr_chk(r, off, sizeof(struct map_hdr), 64);
    if (h == NULL)
        return SHMDS_ECORRUPT;
    if (LDA(&h->magic) != MAP_MAGIC) /* a create before it, a teardown past it */
        return map_free_tables(r, h);
    shmds_map *m;
    int rc = map_attach(r, off, &m);
    if (rc != 0)
        return rc;
    rc = map_teardown(m);
    shmds_map_close(m);
    return rc;
}

SHMDS_API int shmds_map_destroy(shmds_map *m)
{
    if (m == NULL)
        return -EINVAL;
    shard_release(m);
    shmds_region *r = m->r;
    int rc = shmds__obj_destroy(r, &shmds__map_ops, m->name, m->off);
    shmds_map_close(m);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Writes
 * ------------------------------------------------------------------------ */

/* -EINVAL for a NULL or empty key; -E2BIG when an entry of this key and a
 * value of `vlen` bytes could not fit the region's heap (so every entry
 * size computed after this fits 64 bits), before the key is read. */
static int check_key(const shmds_map *m, const void *key, size_t klen, size_t vlen)
{
    if (m == NULL || key == NULL || klen == 0)
        return -EINVAL;
    uint64_t heap = m->r->heap_max - m->r->heap_off;
    return klen > heap || vlen > heap - klen ? -E2BIG : 0;
}

/* A TTL argument is 0 (the default, when `dflt`), SHMDS_TTL_NONE, or at
 * most SHMDS_TTL_MAX_MS. */
static int check_ttl(uint64_t ttl_ms)
{
    return ttl_ms == SHMDS_TTL_NONE || ttl_ms <= SHMDS_TTL_MAX_MS ? 0 : -EINVAL;
}

/* The argument checks of a keyed write of a `vlen`-byte value (0 if none)
 * with a TTL argument (0 if none). */
static int write_args(const shmds_map *m, const void *key, size_t klen, size_t vlen,
                      uint64_t ttl_ms)
{
    int rc = check_key(m, key, klen, vlen);
    if (rc == 0)
        rc = check_ttl(ttl_ms);
    return rc != 0 ? rc : shmds__writable(m->r);
}

/* The absolute expiry of an entry written now with `ttl_ms` (checked by
 * check_ttl): 0 = never. 0 means the map's default when `dflt`, never
 * otherwise. */
static uint64_t expiry_ms(const shmds_map *m, uint64_t ttl_ms, bool dflt)
{
    if (ttl_ms == 0 && dflt)
        ttl_ms = m->h->default_ttl_ms;
    if (ttl_ms == 0 || ttl_ms == SHMDS_TTL_NONE)
        return 0;
    if (LD(&m->h->has_ttl) == 0)
        ST(&m->h->has_ttl, 1);
    uint64_t x = now_ms() + ttl_ms;
    return x == 0 ? 1 : x;
}

/* Work every write does after its own change (stripe s locked): start a
 * growth when the stripe's load passes 1, sweep expired entries. */
static int after_write(shmds_map *m, uint32_t s)
{
    struct tsnap t;
    int rc = tsnap_get(m, &t);
    if (rc < 0)
        return rc;
    if (!t.rh && m->h->stripes[s].entries > slice_len(m, t.bo) && (rc = grow_start(m)) < 0)
        return rc;
    return sweep(m, s);
}

/* Where a keyed write found its key. */
struct spot {
    struct tsnap t;
    struct hit h;
    uint64_t now;   /* the clock as read for expiry (0: not read) */
    bool expired;   /* found, and expired */
    bool reclaimed; /* found expired and unlinked */
};

/* The start of every keyed write to stripe s (locked): the rehash work,
 * then (a put: `ne`, else NULL) the new entry written ahead (put_prep),
 * then the key's place. Returns 1 found (sp->expired tells whether it has
 * expired), 0 absent, or an error. With `reclaim` an expired entry is
 * unlinked, counted as an expiration, and 0 returned. */
static int write_find(shmds_map *m, uint32_t s, const struct key *k, bool reclaim,
                      struct newent *ne, struct spot *sp)
{
    sp->now = 0;
    sp->expired = sp->reclaimed = false;
    int rc = rehash_step(m, s);
    if (rc < 0 || (rc = tsnap_get(m, &sp->t)) < 0)
        return rc;
    if (ne != NULL)
        put_prep(m, &m->h->stripes[s], ne);
    int f = find(m, &sp->t, s, k, &sp->h);
    if (f != 1 || !(sp->expired = e_expired(sp->h.e, &sp->now)) || !reclaim)
        return f;
    struct stripe *st = &m->h->stripes[s];
    if ((rc = unlink_hit(m, st, &sp->h)) < 0)
        return rc;
    st->expirations++;
    sp->reclaimed = true;
    return 0;
}

/* The put's conditions against what find() returned: NX, XX, and the
 * compare-and-set version (0: none). */
static int put_cond(int f, const struct entry *e, unsigned flags, uint64_t if_version)
{
    if ((flags & SHMDS_PUT_NX) && f == 1)
        return -EEXIST;
    if (((flags & SHMDS_PUT_XX) || if_version != 0) && f == 0)
        return -ENOENT;
    if (if_version != 0 && LD(&e->version) != if_version)
        return SHMDS_EVERSION;
    return 0;
}

/* Insert or replace (stripe s locked). *created tells which. The
 * conditions are checked again after every re-find: making room may have
 * evicted the very key. */
static int put_locked(shmds_map *m, uint32_t s, struct newent *ne, unsigned flags,
                      uint64_t if_version, bool *created)
{
    struct stripe *st = &m->h->stripes[s];
    struct spot sp;
    int rc, f = write_find(m, s, &ne->k, true, ne, &sp);
    if (f < 0)
        return f;
    /* Whether the chain may have changed since that find: after an unlink,
     * or when make_room may evict (a budget) or has evicted (a retry). */
    bool stale = m->h->mem_limit != 0 || sp.reclaimed;
    if ((rc = put_cond(f, sp.h.e, flags, if_version)) < 0)
        return rc;
    uint64_t need = esize(ne->k.len, ne->vlen);
    bool evict = m->evict && (flags & SHMDS_PUT_NOEVICT) == 0;
    if ((rc = make_room(m, s, need, false, evict)) < 0)
        return rc;
    for (unsigned tries = 0;; tries++, stale = true) {
        if (stale && (f = find(m, &sp.t, s, &ne->k, &sp.h)) < 0)
            return f;
        if (stale && (rc = put_cond(f, sp.h.e, flags, if_version)) < 0)
            return rc;
        rc = f == 1 ? replace_entry(m, st, &sp.h, ne) : insert_entry(m, st, sp.h.head, ne);
        if (rc == -ENOMEM && evict && tries < EVICT_TRIES) {
            if ((rc = make_room(m, s, need, true, evict)) < 0)
                return rc;
            continue;
        }
        *created = f == 0;
        return rc;
    }
}

/* Start a write of `key`: its hash and stripe into *k and *s, and the
 * stripe's lock. Returns stripe_lock()'s result. */
static int write_begin(shmds_map *m, const void *key, size_t klen, struct key *k, uint32_t *s)
{
    *k = (struct key){key, klen, shmds__hash(m->seed, key, klen)};
    *s = stripe_of(m, k->hash);
    return stripe_lock(m, *s, false);
}

/* The start of a keyed write of a `vlen`-byte value (0 if none) with a TTL
 * argument (0 if none): the argument checks, then write_begin. Returns the
 * argument error or the lock's result. */
static int keyed_begin(shmds_map *m, const void *key, size_t klen, size_t vlen, uint64_t ttl_ms,
                       struct key *k, uint32_t *s)
{
    int rc = write_args(m, key, klen, vlen, ttl_ms);
    return rc != 0 ? rc : write_begin(m, key, klen, k, s);
}

/* End a write of stripe s (locked) whose own change returned `rc`: the
 * after-write work (also after -ENOENT: the write may have reclaimed an
 * expired entry), then unlock. Returns the change's error, or 0: a repair
 * the lock needed (SHMDS_RECOVERED from stripe_lock) is invisible here,
 * counted in the stats (DESIGN.md section 4). */
static int write_end(shmds_map *m, uint32_t s, int rc)
{
    int rc2 = rc >= 0 || rc == -ENOENT ? after_write(m, s) : 0;
    stripe_unlock(m, s);
    if (rc < 0)
        return rc;
    return rc2 < 0 ? rc2 : 0;
}

static int put_op(shmds_map *m, uint32_t s, struct newent *ne, unsigned flags,
                  uint64_t if_version)
{
    bool created = false;
    int rc = put_locked(m, s, ne, flags, if_version, &created);
    if (rc == 0 && created)
        m->h->stripes[s].inserts++;
    return rc;
}

#define PUT_FLAGS_ (SHMDS_PUT_NX | SHMDS_PUT_XX | SHMDS_PUT_NOEVICT)

/* Check a put's arguments and options (NULL: defaults). */
static int put_args(const shmds_map *m, const void *key, size_t klen, const void *val,
                    size_t vlen, const shmds_put_opts *o)
{
    int rc = check_key(m, key, klen, vlen);
    if (rc != 0)
        return rc;
    if (vlen > 0 && val == NULL)
        return -EINVAL;
    if (o == NULL)
        return 0;
    uint32_t f = o->flags;
    if ((f & ~(uint32_t)PUT_FLAGS_) != 0 ||
        ((f & SHMDS_PUT_NX) && ((f & SHMDS_PUT_XX) || o->if_version != 0)))
        return -EINVAL;
    return check_ttl(o->ttl_ms);
}

SHMDS_API int shmds_map_put_ex(shmds_map *m, const void *key, size_t klen, const void *val,
                               size_t vlen, const shmds_put_opts *o, uint64_t *new_version)
{
    static const shmds_put_opts none = {0};
    int rc = put_args(m, key, klen, val, vlen, o);
    if (rc == 0)
        rc = shmds__writable(m->r);
    if (rc != 0)
        return rc;
    if (o == NULL)
        o = &none;
    struct newent ne = {{key, klen, shmds__hash(m->seed, key, klen)}, val, vlen,
                        expiry_ms(m, o->ttl_ms, true), o->user_flags, 0, 0, 0};
    uint32_t s = stripe_of(m, ne.k.hash);
    /* The put's cache misses, started together rather than one after the
     * other: the key's bucket slot (a hint from the handle's cached
     * snapshot, which find() checks again under the lock) and the lines of
     * the stripe it writes, up to its log (another process's last write
     * to the stripe left them in another CPU's cache). The lock and the
     * new entry's writing (put_prep) run while they arrive. */
    if (m->tc.old != NULL)
        __builtin_prefetch(&m->tc.old[bidx(ne.k.hash, m->tc.bo)], 1);
    for (size_t b = 0; b < offsetof(struct stripe, leases); b += 64)
        __builtin_prefetch((const char *)&m->h->stripes[s] + b, 1);
    int lk = stripe_lock(m, s, false);
    if (lk < 0)
        return lk;
    rc = write_end(m, s, put_op(m, s, &ne, o->flags, o->if_version));
    if (rc >= 0 && new_version != NULL)
        *new_version = ne.version;
    return rc;
}

SHMDS_API int shmds_map_put(shmds_map *m, const void *key, size_t klen, const void *val,
                            size_t vlen, uint32_t ttl_s, unsigned flags)
{
    if ((flags & ~(unsigned)(SHMDS_PUT_NX | SHMDS_PUT_XX)) != 0)
        return -EINVAL;
    shmds_put_opts o = {(uint64_t)ttl_s * 1000u, 0, 0, flags};
    return shmds_map_put_ex(m, key, klen, val, vlen, &o, NULL);
}

static int del_op(shmds_map *m, uint32_t s, const struct key *k)
{
    struct stripe *st = &m->h->stripes[s];
    struct spot sp;
    int rc, f = write_find(m, s, k, true, NULL, &sp);
    if (f <= 0)
        return f < 0 ? f : -ENOENT;
    if ((rc = unlink_hit(m, st, &sp.h)) < 0)
        return rc;
    st->deletes++;
    return 0;
}

SHMDS_API int shmds_map_del(shmds_map *m, const void *key, size_t klen)
{
    struct key k;
    uint32_t s;
    int lk = keyed_begin(m, key, klen, 0, 0, &k, &s);
    if (lk < 0)
        return lk;
    return write_end(m, s, del_op(m, s, &k));
}

/* Store one or two words of an entry in place (stripe st locked), logged
 * and rolled forward by repair; lock-free readers retry around it.
 * -ENOMEM, nothing stored: the log is busy (log_busy). */
static int store_in_place(shmds_map *m, struct stripe *st, uint64_t *w1, uint64_t v1,
                          uint64_t *w2, uint64_t v2)
{
    struct slog *lg = &st->log;
    if (log_busy(st))
        return -ENOMEM;
    lg->e = shmds_off(m->r, w1);
    lg->enext = v1;
    lg->nhead = w2 != NULL ? shmds_off(m->r, w2) : 0;
    lg->oldslot = v2;
    STR(&lg->op, OP_STORE);
    SHMDS_FAULT("map.store.logged");
    shmds__seq_write_begin(&st->seq);
    ST(w1, v1);
    SHMDS_FAULT("map.store.half");
    if (w2 != NULL)
        ST(w2, v2);
    shmds__seq_write_end(&st->seq);
    SHMDS_FAULT("map.store.stored");
    STR(&lg->op, OP_NONE);
    return 0;
}

static int add_op(shmds_map *m, uint32_t s, const struct key *k, int64_t delta, int64_t init,
                  uint64_t init_ttl_ms, int64_t *result)
{
    struct stripe *st = &m->h->stripes[s];
    struct spot sp;
    int rc, f = write_find(m, s, k, true, NULL, &sp);
    if (f < 0)
        return f;
    struct entry *e = sp.h.e;
    int64_t nv;
    if (f == 0) {
        if (__builtin_add_overflow(init, delta, &nv))
            return -EOVERFLOW;
        struct newent ne = {*k, &nv, 8, expiry_ms(m, init_ttl_ms, true), 0, 0, 0, 0};
        if ((rc = put_op(m, s, &ne, SHMDS_PUT_NX, 0)) == 0 && result != NULL)
            *result = nv;
        return rc;
    }
    if (e->vlen != 8)
        return -EINVAL;
    int64_t *v = (int64_t *)(void *)e_val(e);
    if (__builtin_add_overflow(LD(v), delta, &nv))
        return -EOVERFLOW;
    rc = store_in_place(m, st, (uint64_t *)v, (uint64_t)nv, &e->version, next_version(st));
    if (rc != 0)
        return rc;
    if (result != NULL)
        *result = nv;
    return 0;
}

SHMDS_API int shmds_map_add_ex(shmds_map *m, const void *key, size_t klen, int64_t delta,
                               int64_t init, uint64_t init_ttl_ms, int64_t *result)
{
    struct key k;
    uint32_t s;
    int lk = keyed_begin(m, key, klen, 8, init_ttl_ms, &k, &s);
    if (lk < 0)
        return lk;
    return write_end(m, s, add_op(m, s, &k, delta, init, init_ttl_ms, result));
}

SHMDS_API int shmds_map_add(shmds_map *m, const void *key, size_t klen, int64_t delta,
                            int64_t *result)
{
    return shmds_map_add_ex(m, key, klen, delta, 0, 0, result);
}

static int expire_op(shmds_map *m, uint32_t s, const struct key *k, uint64_t ttl_ms)
{
    struct spot sp;
    int f = write_find(m, s, k, true, NULL, &sp);
    if (f <= 0)
        return f < 0 ? f : -ENOENT;
    return store_in_place(m, &m->h->stripes[s], &sp.h.e->expire_ms, expiry_ms(m, ttl_ms, false),
                          NULL, 0);
}

SHMDS_API int shmds_map_expire(shmds_map *m, const void *key, size_t klen, uint64_t ttl_ms)
{
    struct key k;
    uint32_t s;
    int lk = keyed_begin(m, key, klen, 0, ttl_ms, &k, &s);
    if (lk < 0)
        return lk;
    return write_end(m, s, expire_op(m, s, &k, ttl_ms));
}

/* ---------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------ */

/* What a read asks for and where the answer goes. */
struct getarg {
    struct key k;
    void *buf;
    size_t cap;
    size_t *vlen;
    unsigned flags; /* SHMDS_GET_STALE, GET_QUERY_ */
    shmds_map_entry_info *info;
};

/* Hand entry e (found for g, its value `vl` bytes as read and checked
 * once; `stale`: it is expired) to the caller: its length, value and
 * info. Lock-free callers validate afterwards. */
static int copy_out(struct entry *e, uint64_t vl, bool stale, uint64_t now,
                    const struct getarg *g)
{
    if (g->vlen != NULL)
        *g->vlen = (size_t)vl;
    if (g->info != NULL) {
        /* The version before the value: a counter stores its value, then
         * its version (release), so the pair read is never an old value
         * with a newer version (which a compare-and-set would trust). */
        g->info->version = LDA(&e->version);
        uint64_t x = LD(&e->expire_ms);
        if (x != 0 && now == 0)
            now = now_ms();
        g->info->ttl_ms = x == 0 ? -1 : x <= now ? 0 : (int64_t)(x - now);
        g->info->user_flags = LD(&e->uflags);
        g->info->stale = stale;
    }
    if (g->flags & GET_QUERY_)
        return 0;
    if (vl > g->cap)
        return -ENOBUFS;
    if (vl == 8) {
        uint64_t v = LD((uint64_t *)(void *)e_val(e)); /* a counter: one load */
        memcpy(g->buf, &v, 8);
    } else if (vl > 0)
        memcpy(g->buf, e_val(e), (size_t)vl);
    return 0;
}

/* Run `fn` over stripe s optimistically: accept its result only when the
 * stripe and table counters did not move. After SHMDS__WAIT_SPINS failures a writable
 * handle runs it under the lock; a read-only one naps and retries until the
 * region's lock bound (a writer that died mid-change). */
static int read_stripe(shmds_map *m, uint32_t s,
                       int (*fn)(shmds_map *m, const struct tsnap *t, uint32_t s, void *arg),
                       void *arg)
{
    struct stripe *st = &m->h->stripes[s];
    struct shmds__wait w = {0};
    for (;;) {
        uint64_t q = shmds__seq_read_begin(&st->seq);
        if ((q & 1) == 0) {
            struct tsnap t;
            int rc = tsnap_get(m, &t);
            if (rc < 0)
                return rc; /* -ETIMEDOUT, or a consistent snapshot that is corrupt */
            rc = fn(m, &t, s, arg);
            if (shmds__seq_read_ok(&st->seq, q) && LD(&m->h->tseq) == t.seq)
                return rc;
        }
        if (shmds__wait_spin(&w))
            continue;
        if (!shmds__rdonly(m->r)) {
            int lk = stripe_lock(m, s, false);
            if (lk < 0)
                return lk;
            struct tsnap t;
            int rc = tsnap_get(m, &t);
            if (rc == 0)
                rc = fn(m, &t, s, arg);
            stripe_unlock(m, s);
            return rc;
        }
        int rc = shmds__wait_nap(&w, m->r->lock_timeout_ms);
        if (rc != 0)
            return rc;
    }
}

/* Walk the chain from bucket slot `l` for a key (lock-free, inside a
 * guard): every offset checked, the walk capped; none when the bucket
 * word's filter lacks the key's bit. 1 with the entry and its value
 * length (read and checked once) when found, 0 when not. */
static inline __attribute__((always_inline)) int walk(const shmds_map *m, const uint64_t *l,
                                                      const struct key *k, struct entry **ep,
                                                      uint64_t *vlp)
{
    const shmds_region *r = m->r;
    uint64_t w = LDA(l);
    uint64_t o = (w & tag_bit(k->hash)) != 0 ? link_off(w) : 0;
    for (unsigned steps = 0; o != 0; steps++) {
        /* The common case in one bound test against this process's
         * mapping (entry_lens's checks, folded); anything else, a region
         * grown past the mapping included, takes entry_lens. */
        uint64_t end = LD(&r->heap_end), kl = 0, vl = 0;
        struct entry *e = NULL;
        if (shmds__likely((o & 15) == 0 && o >= r->heap_off && o <= end &&
                          end - o >= ENTRY_HDR)) {
            e = (struct entry *)(void *)(r->base + o);
            kl = LD(&e->klen);
            vl = LD(&e->vlen);
            uint64_t room = end - o - ENTRY_HDR;
            if (shmds__unlikely(kl > room || vl > room - kl || LD(&e->magic) != ENTRY_MAGIC))
                e = NULL;
        }
        if (shmds__unlikely(e == NULL) && (e = entry_lens(m, o, &kl, &vl)) == NULL)
            return SHMDS_ECORRUPT;
        if (steps >= m->chain_cap)
            return SHMDS_ECORRUPT;
        if (LD(&e->hash) == k->hash && kl == k->len &&
            shmds__bytes_eq((unsigned char *)e + ENTRY_HDR + vl, k->p, kl)) {
            *ep = e;
            *vlp = vl;
            return 1;
        }
        o = LDA(&e->next);
    }
    return 0;
}

/* The lock-free lookup of every get (module comment, "Reads"): the caller
 * is inside a guard, so every entry reached stays allocated and unchanged
 * but for its counter value, expiry and CLOCK bit. A hit is an entry that
 * was current during the call. A miss is trusted when neither the table
 * state nor the stripe's rehash progress moved during the walk; a bucket
 * being moved is looked up in both tables, old first (move_entry links the
 * copy before unlinking the original). Never waits: a writer that died
 * leaves the state still, so the check passes. 1 (entry, value length),
 * 0 absent, or an error. */
static __attribute__((noinline)) int lookup_slow(shmds_map *m, const struct key *k,
                                                 struct entry **ep, uint64_t *vlp)
{
    uint32_t s = stripe_of(m, k->hash);
    struct stripe *st = &m->h->stripes[s];
    for (unsigned tries = 0; tries < LOOKUP_RETRIES; tries++) {
        struct tsnap t;
        int rc = tsnap_read(m, &t);
        if (rc < 0)
            return rc;
        uint64_t ob = bidx(k->hash, t.bo), rel = ob - ((uint64_t)s << (t.bo - m->sbits));
        uint64_t sep = 0, mv = 0;
        const uint64_t *l = &t.old[ob], *also = NULL;
        if (t.rh) {
            sep = LDA(&st->epoch);
            mv = LDA(&st->moved);
            if (sep == t.tepoch && rel < mv)
                l = &t.nw[bidx(k->hash, t.bn)];
            else if (sep == t.tepoch && rel == mv)
                also = &t.nw[bidx(k->hash, t.bn)];
        }
        if ((rc = walk(m, l, k, ep, vlp)) != 0 || (also != NULL && (rc = walk(m, also, k, ep, vlp)) != 0))
            return rc;
        __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the walk before the re-reads */
        if (LD(&m->h->tseq) == t.seq &&
            (!t.rh || (LD(&st->epoch) == sep && LD(&st->moved) == mv)))
            return 0;
    }
    return -EAGAIN;
}

/* lookup_slow's common case inline: the handle's table state still
 * current (one load of tseq) and no growth under way, so one table, one
 * walk, and the miss check is tseq alone. Anything else: lookup_slow. */
static inline __attribute__((always_inline)) int lookup(shmds_map *m, const struct key *k,
                                                        struct entry **ep, uint64_t *vlp)
{
    uint64_t q = LDA(&m->h->tseq);
    if (shmds__likely(q == m->tc.seq && (q & 1) == 0 && !m->tc.rh)) {
        int rc = walk(m, &m->tc.old[bidx(k->hash, m->tc.bo)], k, ep, vlp);
        if (rc != 0)
            return rc;
        __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the walk before the re-read */
        if (LD(&m->h->tseq) == q)
            return 0;
    }
    return lookup_slow(m, k, ep, vlp);
}

/* Count a get's outcome where this handle counts (see shard_claim). */
static void count_get(shmds_map *m, int rc)
{
    if (rc != 0 && rc != -ENOENT && rc != -ENOBUFS)
        return;
    bool miss = rc == -ENOENT;
    if (shmds__unlikely(m->shard_pid != shmds__self_pid()))
        shard_claim(m); /* a handle inherited across fork: a line of our own */
    if (m->shard == NULL) {
        if (miss)
            m->ro_misses++;
        else
            m->ro_hits++;
    } else if (m->own) {
        uint64_t *c = miss ? &m->shard->misses : &m->shard->hits;
        ST(c, LD(c) + 1);
    } else {
        __atomic_add_fetch(miss ? &m->shard->misses_shared : &m->shard->hits_shared, 1,
                           __ATOMIC_RELAXED);
    }
}

/* A hit on an evicting map sets the entry's CLOCK bit, without a lock:
 * the entry cannot be freed under the caller's guard, and a bit set on an
 * entry being unlinked is lost harmlessly. A read-only attach cannot
 * write it: its hits do not count as uses. */
static inline void hit_mark(shmds_map *m, struct entry *e)
{
    if (m->evict && !shmds__rdonly(m->r) && LD(&e->ref) == 0)
        ST(&e->ref, 1);
}

/* The one read path of get, get_ex and ttl: lock-free, inside a read
 * guard, for every map (evicting ones included) and every attach. */
static int get_impl(shmds_map *m, struct getarg *g)
{
    int rc = check_key(m, g->k.p, g->k.len, 0);
    if (rc == 0 && g->cap > 0 && g->buf == NULL)
        rc = -EINVAL;
    if (rc != 0)
        return rc;
    g->k.hash = shmds__hash(m->seed, g->k.p, g->k.len);
    shmds_guard *gd;
    if ((rc = shmds__guard_enter(m->r, &gd)) != 0)
        return rc;
    struct entry *e;
    uint64_t vl, now = 0;
    if ((rc = lookup(m, &g->k, &e, &vl)) == 1) {
        bool exp = e_expired(e, &now);
        if (exp && (g->flags & SHMDS_GET_STALE) == 0) {
            rc = -ENOENT;
        } else {
            rc = copy_out(e, vl, exp, now, g);
            hit_mark(m, e);
        }
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    shmds__guard_leave(gd);
    count_get(m, rc);
    return rc;
}

SHMDS_API int shmds_map_get(shmds_map *m, const void *key, size_t klen, void *buf, size_t cap,
                            size_t *vlen)
{
    struct getarg g = {{key, klen, 0}, buf, cap, vlen, 0, NULL};
    return get_impl(m, &g);
}

SHMDS_API int shmds_map_get_ex(shmds_map *m, const void *key, size_t klen, void *buf,
                               size_t cap, size_t *vlen, unsigned flags,
                               shmds_map_entry_info *info)
{
    if ((flags & ~(unsigned)SHMDS_GET_STALE) != 0)
        return -EINVAL;
    if (buf == NULL && cap == 0)
        flags |= GET_QUERY_;
    struct getarg g = {{key, klen, 0}, buf, cap, vlen, flags, info};
    return get_impl(m, &g);
}

SHMDS_API int shmds_map_get_ref(shmds_map *m, shmds_guard *g, const void *key, size_t klen,
                                const void **val, size_t *vlen)
{
    int rc = check_key(m, key, klen, 0);
    if (rc != 0)
        return rc;
    if (val == NULL || vlen == NULL || !shmds__guard_held(g, m->r))
        return -EINVAL;
    struct key k = {key, klen, shmds__hash(m->seed, key, klen)};
    struct entry *e;
    uint64_t vl, now = 0;
    if ((rc = lookup(m, &k, &e, &vl)) == 1) {
        if (e_expired(e, &now)) {
            rc = -ENOENT;
        } else {
            *val = e_val(e);
            *vlen = (size_t)vl;
            hit_mark(m, e);
            rc = 0;
        }
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    count_get(m, rc);
    return rc;
}

SHMDS_API int shmds_map_ttl(shmds_map *m, const void *key, size_t klen, int64_t *ttl_ms)
{
    shmds_map_entry_info info;
    struct getarg g = {{key, klen, 0}, NULL, 0, NULL, GET_QUERY_, &info};
    int rc = get_impl(m, &g);
    if (rc == 0 && ttl_ms != NULL)
        *ttl_ms = info.ttl_ms;
    return rc;
}

SHMDS_API int shmds_map_count(shmds_map *m, uint64_t *n)
{
    if (m == NULL || n == NULL)
        return -EINVAL;
    uint64_t sum = 0;
    for (uint32_t i = 0; i < m->S; i++)
        sum += LD(&m->h->stripes[i].entries);
    *n = sum;
    return 0;
}

/* A stripe's live entries, copied: records of {klen, vlen} then the bytes.
 * `steps` counts the entries the whole walk has met (walk_cap), `done` those
 * of the stripes already accepted. */
struct snapbuf {
    struct shmds__buf buf;
    uint64_t n;
    uint64_t steps, done;
};

static int snap_fn(shmds_map *m, const struct tsnap *t, uint32_t s, void *arg)
{
    struct snapbuf *b = arg;
    struct stripe *st = &m->h->stripes[s];
    uint64_t now = 0, cap = walk_cap(m);
    b->buf.len = 0;
    b->n = 0;
    b->steps = b->done;
    for (uint64_t rel = 0; rel < slice_len(m, t->bo); rel++) {
        uint64_t *slots[3];
        int n = slice_slots(m, t, st, s, rel, slots);
        for (int i = 0; i < n; i++) {
            uint64_t o = link_off(LD(slots[i]));
            for (unsigned steps = 0; o != 0; steps++) {
                uint64_t lens[2];
                struct entry *e = entry_lens(m, o, &lens[0], &lens[1]);
                if (e == NULL || steps >= m->chain_cap || ++b->steps > cap)
                    return SHMDS_ECORRUPT;
                if (!e_expired(e, &now)) {
                    int rc;
                    /* A stripe's live entries are disjoint: more bytes than
                     * the heap holds is a walk going round. */
                    uint64_t heap = m->r->heap_max - m->r->heap_off;
                    if (b->buf.len > heap || lens[0] + lens[1] > heap - b->buf.len)
                        return SHMDS_ECORRUPT;
                    if ((rc = shmds__buf_put(&b->buf, lens, sizeof lens)) < 0 ||
                        (rc = shmds__buf_put(&b->buf, (unsigned char *)e + ENTRY_HDR + lens[1],
                                       (size_t)lens[0])) < 0 ||
                        (rc = shmds__buf_put(&b->buf, (unsigned char *)e + ENTRY_HDR, (size_t)lens[1])) < 0)
                        return rc;
                    b->n++;
                }
                o = LD(&e->next);
            }
        }
    }
    return 0;
}

SHMDS_API int shmds_map_foreach(shmds_map *m,
                                shmds_map_foreach_fn *fn, void *arg)
{
    if (m == NULL || fn == NULL)
        return -EINVAL;
    struct snapbuf b = {0};
    int rc = shmds__region_intact(m->r); /* truncated: an error, not SIGBUS */
    for (uint32_t s = 0; rc == 0 && s < m->S; s++) {
        if ((rc = read_stripe(m, s, snap_fn, &b)) < 0)
            break;
        b.done = b.steps;
        size_t at = 0;
        for (uint64_t i = 0; i < b.n && rc == 0; i++) {
            uint64_t lens[2];
            memcpy(lens, b.buf.p + at, sizeof lens);
            at += sizeof lens;
            const unsigned char *k = b.buf.p + at, *v = k + lens[0];
            at += (size_t)(lens[0] + lens[1]);
            rc = fn(k, (size_t)lens[0], v, (size_t)lens[1], arg);
        }
    }
    free(b.buf.p);
    return rc;
}

/* A running total minus its baseline (a reset), never below 0. */
static uint64_t since_base(uint64_t total, const uint64_t *base)
{
    uint64_t b = LD(base);
    return total > b ? total - b : 0;
}

SHMDS_API int shmds_map_stats_get(shmds_map *m, shmds_map_stats *out)
{
    if (m == NULL || out == NULL)
        return -EINVAL;
    struct map_hdr *h = m->h;
    memset(out, 0, sizeof *out);
    for (uint32_t i = 0; i < m->S; i++) {
        struct stripe *st = &h->stripes[i];
        out->entries += LD(&st->entries);
        out->mem_used += LD(&st->mem);
        out->inserts += LD(&st->inserts);
        out->deletes += LD(&st->deletes);
        out->evictions += LD(&st->evictions);
        out->expirations += LD(&st->expirations);
        out->recoveries += LD(&st->lock.recoveries);
        out->fills += LD(&st->fills);
        out->takeovers += LD(&st->takeovers);
    }
    out->recoveries += LD(&h->resize.recoveries);
    for (unsigned i = 0; i < SHARDS; i++) {
        out->hits += LD(&h->shards[i].hits) + LD(&h->shards[i].hits_shared);
        out->misses += LD(&h->shards[i].misses) + LD(&h->shards[i].misses_shared);
    }
    out->hits = since_base(out->hits, &h->hits_base) + m->ro_hits;
    out->misses = since_base(out->misses, &h->misses_base) + m->ro_misses;
    out->recoveries = since_base(out->recoveries, &h->rec_base);
    out->mem_limit = h->mem_limit;
    out->default_ttl_ms = h->default_ttl_ms;
    out->flags = h->flags;
    out->stripes = m->S;
    uint64_t q = LDA(&h->tseq);
    uint32_t bo = LD(&h->bits_old), bn = LD(&h->bits_new);
    bool rh = LD(&h->rehashing) != 0;
    if ((q & 1) == 0 && bo <= MAX_BITS && bn <= MAX_BITS + 1) {
        out->buckets = ((uint64_t)1 << bo) + (rh ? (uint64_t)1 << bn : 0);
        out->mem_used += 8 * out->buckets;
    }
    return 0;
}

/* ---------------------------------------------------------------------------
 * Single-flight fills
 *
 * A fill lease lives in one of its stripe's LEASES slots (struct lease),
 * read and written under the stripe lock only. The grant, the release and
 * the takeover from a dead holder are each a few stores with `pid` as the
 * commit word (see struct lease), so a holder killed anywhere leaves a
 * slot that is free or held by a dead process, which the next fetch of the
 * key (or any fetch that needs a slot) takes over: no log, no repair. A
 * fill's value is stored by an ordinary put (a logged SWAP) before the
 * lease ends, so an acknowledged fill survives; a holder killed between
 * the two leaves a value and a dead lease, and fetch returns the value.
 * Waiters sleep on the stripe's doorbell, rung when a lease ends, and
 * re-check every FILL_SLICE_MS, which is how they notice a dead holder.
 * ------------------------------------------------------------------------ */

struct shmds_fill {
    shmds_map *m;
    uint64_t hash;
    uint64_t token;
    uint32_t s, slot;
    uint32_t pid;
    size_t klen;
    unsigned char key[];
};

/* The slot of stripe st holding a lease (live or not) on `hash`, or NULL. */
static struct lease *lease_find(struct stripe *st, uint64_t hash)
{
    for (unsigned i = 0; i < LEASES; i++)
        if (LD(&st->leases[i].pid) != 0 && LD(&st->leases[i].hash) == hash)
            return &st->leases[i];
    return NULL;
}

static bool lease_live(const struct lease *l)
{
    return shmds__proc_alive(LD(&l->pid), LD(&l->pstart));
}

/* A slot to grant a new lease in: a free one, else one whose holder died. */
static struct lease *lease_slot(struct stripe *st)
{
    for (unsigned i = 0; i < LEASES; i++)
        if (LD(&st->leases[i].pid) == 0)
            return &st->leases[i];
    for (unsigned i = 0; i < LEASES; i++)
        if (!lease_live(&st->leases[i]))
            return &st->leases[i];
    return NULL;
}

/* Grant slot l (its stripe locked) to this process for `hash`. */
static void lease_grant(struct lease *l, uint64_t hash, uint64_t token)
{
    ST(&l->hash, hash);
    ST(&l->token, token);
    ST(&l->since_ms, now_ms());
    ST(&l->pstart, shmds__self_start());
    SHMDS_FAULT("map.lease.filled_in");
    STR(&l->pid, shmds__self_pid());
}

/* End f's lease if this process still holds it. With the stripe lock, or
 * without it when the lock cannot be had: only the holder ever changes a
 * slot a live holder holds, so a compare-and-swap of its own pid is safe. */
static void lease_end(struct shmds_fill *f)
{
    struct lease *l = &f->m->h->stripes[f->s].leases[f->slot];
    uint32_t me = f->pid;
    if (LD(&l->token) == f->token)
        __atomic_compare_exchange_n(&l->pid, &me, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
}

enum { FETCH_WAIT = 3 };

/* One look at the key under its stripe's lock: 0 (or -ENOBUFS) a hit,
 * SHMDS_FILL a lease granted (*fp set), FETCH_WAIT someone else fills. */
static int fetch_locked(shmds_map *m, uint32_t s, const struct getarg *g, struct shmds_fill **fp)
{
    struct stripe *st = &m->h->stripes[s];
    struct spot sp;
    int f = write_find(m, s, &g->k, (g->flags & SHMDS_GET_STALE) == 0, NULL, &sp);
    if (f < 0)
        return f;
    struct entry *e = sp.h.e;
    uint64_t now = sp.now;
    bool stale = f == 1 && sp.expired;
    struct lease *l = lease_find(st, g->k.hash);
    if (f == 1 && !stale) {
        if (l != NULL && !lease_live(l))
            STR(&l->pid, 0); /* a holder that died after storing its value */
        if (m->evict && LD(&e->ref) == 0)
            ST(&e->ref, 1);
        return copy_out(e, e->vlen, false, now, g);
    }
    bool takeover = l != NULL;
    if (l != NULL && lease_live(l))
        return stale ? copy_out(e, e->vlen, true, now, g) : FETCH_WAIT;
    if (l == NULL && (l = lease_slot(st)) == NULL)
        return stale ? copy_out(e, e->vlen, true, now, g) : FETCH_WAIT;
    struct shmds_fill *fl = malloc(sizeof *fl + g->k.len);
    if (fl == NULL)
        return -ENOMEM;
    fl->m = m;
    fl->hash = g->k.hash;
    fl->token = next_version(st);
    fl->s = s;
    fl->slot = (uint32_t)(l - st->leases);
    fl->pid = shmds__self_pid();
    fl->klen = g->k.len;
    memcpy(fl->key, g->k.p, g->k.len);
    lease_grant(l, g->k.hash, fl->token);
    st->fills++;
    if (takeover)
        st->takeovers++;
    *fp = fl;
    if (stale) /* a stale value too long for buf: the length says so */
        (void)copy_out(e, e->vlen, true, now, g);
    return SHMDS_FILL;
}

SHMDS_API int shmds_map_fetch(shmds_map *m, const void *key, size_t klen, void *buf, size_t cap,
                              size_t *vlen, shmds_map_entry_info *info, unsigned flags,
                              int timeout_ms, shmds_fill **fill)
{
    int rc = check_key(m, key, klen, 0);
    if (rc == 0 && (fill == NULL || (cap > 0 && buf == NULL) || timeout_ms < -1 ||
                    (flags & ~(unsigned)SHMDS_GET_STALE) != 0))
        rc = -EINVAL;
    if (fill != NULL)
        *fill = NULL;
    if (info != NULL)
        memset(info, 0, sizeof *info); /* a miss without a stale value */
    if (rc == 0)
        rc = shmds__writable(m->r);
    if (rc != 0)
        return rc;
    struct getarg g = {{key, klen, shmds__hash(m->seed, key, klen)}, buf, cap, vlen, flags, info};
    uint32_t s = stripe_of(m, g.k.hash);
    struct stripe *st = &m->h->stripes[s];
    uint64_t deadline = timeout_ms > 0 ? shmds__now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    for (;;) {
        int lk = stripe_lock(m, s, false);
        if (lk < 0)
            return lk;
        rc = fetch_locked(m, s, &g, fill);
        if (rc >= 0 && rc != FETCH_WAIT) {
            int rc2 = after_write(m, s);
            if (rc2 < 0 && rc == SHMDS_FILL) {
                lease_end(*fill);
                free(*fill);
                *fill = NULL;
            }
            rc = rc2 < 0 ? rc2 : rc;
        }
        if (rc == FETCH_WAIT)
            __atomic_add_fetch(&st->sleepers, 1, __ATOMIC_SEQ_CST);
        stripe_unlock(m, s);
        if (rc != FETCH_WAIT) {
            count_get(m, rc == SHMDS_FILL && (info == NULL || !info->stale) ? -ENOENT : rc);
            return rc;
        }
        bool over = timeout_ms == 0 || (timeout_ms > 0 && shmds__now_ns() >= deadline);
        rc = over ? -ETIMEDOUT : shmds__bell_wait(&st->bell, deadline, FILL_SLICE_MS);
        __atomic_sub_fetch(&st->sleepers, 1, __ATOMIC_SEQ_CST);
        if (rc != 0) { /* the time-out, or a damaged doorbell */
            count_get(m, -ENOENT);
            return rc;
        }
    }
}

/* End the lease and wake the stripe's waiters; free f. */
static void fill_end(struct shmds_fill *f)
{
    struct stripe *st = &f->m->h->stripes[f->s];
    lease_end(f);
    shmds__bell_ring(&st->bell, &st->sleepers, true);
    free(f);
}

SHMDS_API int shmds_map_fill_done(shmds_fill *f, const void *val, size_t vlen,
                                  const shmds_put_opts *o, uint64_t *new_version)
{
    if (f == NULL)
        return -EINVAL;
    shmds_map *m = f->m;
    int rc = put_args(m, f->key, f->klen, val, vlen, o);
    if (rc == 0 && o != NULL && (o->if_version != 0 || (o->flags & (SHMDS_PUT_NX | SHMDS_PUT_XX))))
        rc = -EINVAL;
    int lk = rc == 0 ? stripe_lock(m, f->s, false) : rc;
    if (lk < 0) {
        fill_end(f);
        return lk;
    }
    struct newent ne = {{f->key, f->klen, f->hash}, val, vlen,
                        expiry_ms(m, o != NULL ? o->ttl_ms : 0, true),
                        o != NULL ? o->user_flags : 0, 0, 0, 0};
    rc = put_op(m, f->s, &ne, o != NULL ? o->flags : 0, 0);
    SHMDS_FAULT("map.fill.stored");
    lease_end(f);
    rc = write_end(m, f->s, rc);
    if (rc >= 0 && new_version != NULL)
        *new_version = ne.version;
    fill_end(f);
    return rc;
}

SHMDS_API int shmds_map_fill_abort(shmds_fill *f)
{
    if (f == NULL)
        return 0;
    int lk = stripe_lock(f->m, f->s, false);
    if (lk >= 0) {
        lease_end(f);
        stripe_unlock(f->m, f->s);
    }
    fill_end(f);
    return lk < 0 ? lk : 0;
}

/* ---------------------------------------------------------------------------
 * Bulk: clear, reap, statistics reset
 * ------------------------------------------------------------------------ */

/* Unlink every entry of stripe s (locked). */
static int clear_stripe(shmds_map *m, uint32_t s)
{
    struct stripe *st = &m->h->stripes[s];
    struct tsnap t;
    int rc = tsnap_get(m, &t);
    for (uint64_t rel = 0; rc >= 0 && rel < slice_len(m, t.bo); rel++) {
        uint64_t *slots[3];
        int n = slice_slots(m, &t, st, s, rel, slots);
        for (int i = 0; i < n && rc >= 0; i++) {
            uint64_t eo;
            for (unsigned steps = 0; rc >= 0 && (eo = link_off(LD(slots[i]))) != 0; steps++) {
                struct entry *e = entry_at(m, eo);
                if (e == NULL || steps >= m->chain_cap)
                    return SHMDS_ECORRUPT;
                rc = unlink_entry(m, st, slots[i], eo, e);
            }
        }
    }
    return rc;
}

SHMDS_API int shmds_map_clear(shmds_map *m)
{
    int rc = m == NULL ? -EINVAL : shmds__writable(m->r);
    for (uint32_t s = 0; s < m->S && rc == 0; s++) {
        if ((rc = stripe_lock(m, s, false)) < 0)
            break;
        rc = clear_stripe(m, s);
        stripe_unlock(m, s);
    }
    if (rc >= 0)
        rc = shmds__guard_reclaim(m->r); /* what no reader holds goes now */
    return rc < 0 ? rc : 0;
}

SHMDS_API int shmds_map_reap(shmds_map *m, uint64_t max_entries, uint64_t *reaped)
{
    int rc = m == NULL || max_entries == 0 ? -EINVAL : shmds__writable(m->r);
    uint64_t work = 0, n = 0;
    while (rc == 0 && work < max_entries) {
        struct tsnap t;
        if ((rc = tsnap_get(m, &t)) < 0)
            break;
        /* The cursor names an old-table bucket; a growth or a switch since
         * only moves where the sweep resumes. */
        uint64_t b = __atomic_fetch_add(&m->h->reap_cursor, 1, __ATOMIC_RELAXED) &
                     (((uint64_t)1 << t.bo) - 1);
        uint32_t s = (uint32_t)(b >> (t.bo - m->sbits));
        if ((rc = stripe_lock(m, s, false)) < 0)
            break;
        struct stripe *st = &m->h->stripes[s];
        if ((rc = tsnap_get(m, &t)) == 0) {
            uint64_t rel = b & (slice_len(m, t.bo) - 1), now = 0;
            uint64_t *slots[3];
            int k = slice_slots(m, &t, st, s, rel, slots);
            work++;
            for (int i = 0; i < k && rc >= 0; i++) {
                unsigned seen = 0;
                rc = reap_slot(m, st, slots[i], m->chain_cap, m->chain_cap + 1, &now, &seen);
                work += seen;
                if (rc > 0)
                    n += (uint64_t)rc;
            }
            rc = rc < 0 ? rc : 0;
        }
        stripe_unlock(m, s);
    }
    if (reaped != NULL)
        *reaped = n;
    return rc;
}

SHMDS_API int shmds_map_stats_reset(shmds_map *m)
{
    int rc = m == NULL ? -EINVAL : shmds__writable(m->r);
    if (rc != 0)
        return rc;
    shmds_map_stats now;
    for (uint32_t s = 0; s < m->S; s++) {
        if ((rc = stripe_lock(m, s, false)) < 0)
            return rc;
        struct stripe *st = &m->h->stripes[s];
        st->inserts = st->deletes = st->evictions = st->expirations = 0;
        st->fills = st->takeovers = 0;
        stripe_unlock(m, s);
    }
    /* Baselines: the totals as they stand, so that plain stores of the
     * counting handles never race with a reset. */
    uint64_t hb = 0, mb = 0, rb = 0;
    m->ro_hits = m->ro_misses = 0;
    shmds_map_stats_get(m, &now);
    hb = now.hits + LD(&m->h->hits_base);
    mb = now.misses + LD(&m->h->misses_base);
    rb = now.recoveries + LD(&m->h->rec_base);
    ST(&m->h->hits_base, hb);
    ST(&m->h->misses_base, mb);
    ST(&m->h->rec_base, rb);
    return 0;
}

/* ---------------------------------------------------------------------------
 * Check
 * ------------------------------------------------------------------------ */

/* Verify stripe s (locked) against snapshot t. */
/* Whether stripe st's log is idle, or holds a retirement kept for want of
 * a record (swap_close, move_entry): a committed SWAP or a MOVE whose copy
 * is linked, the unlinked block a live one in `dead`. */
static bool log_sound(shmds_map *m, struct stripe *st)
{
    struct slog *lg = &st->log;
    uint32_t op = LD(&lg->op);
    if (op == OP_NONE)
        return lg->blk == 0 && lg->dead == 0;
    if (lg->dead == 0 || shmds__alloc_block_live(m->r, lg->dead, NULL) != 0)
        return false;
    if (op == OP_SWAP)
        return lg->committed && lg->blk == 0;
    if (op != OP_MOVE)
        return false;
    const uint64_t *ns = shmds__ptr_chk(m->r, lg->newslot, 8, 8);
    return ns != NULL && lg->blk != 0 && link_off(LD(ns)) == lg->blk;
}

static int check_stripe(shmds_map *m, const struct tsnap *t, uint32_t s)
{
    struct stripe *st = &m->h->stripes[s];
    if (!log_sound(m, st) || (LD(&st->seq) & 1) != 0 || !shmds__sem_ok(&st->bell))
        return SHMDS_ECORRUPT;
    for (unsigned j = 0; j < SPARES; j++) {
        uint64_t b = LD(&st->spare[j]);
        if (b != 0 && (shmds__alloc_block_live(m->r, b, NULL) != 0 ||
                       spare_slot(st, b) != &st->spare[j]))
            return SHMDS_ECORRUPT; /* not a live block, or kept twice */
    }
    uint64_t len = slice_len(m, t->bo), n = 0, mem = 0;
    bool cur = t->rh && st->epoch == t->tepoch;
    if (cur && st->moved > len)
        return SHMDS_ECORRUPT;
    for (uint64_t rel = 0; rel < len; rel++) {
        uint64_t *slots[3];
        int k = slice_slots(m, t, st, s, rel, slots);
        if (cur && k == 1) {
            /* Not reached yet: its two targets in the new table are empty. */
            uint64_t nb = ((uint64_t)s << (t->bn - m->sbits)) + 2 * rel;
            if (t->nw[nb] != 0 || t->nw[nb + 1] != 0)
                return SHMDS_ECORRUPT;
        }
        for (int i = 0; i < k; i++) {
            uint64_t w = LD(slots[i]), o = link_off(w);
            if (o == 0 && w != 0)
                return SHMDS_ECORRUPT; /* filter bits on an empty bucket */
            for (unsigned steps = 0; o != 0; steps++) {
                struct entry *e = entry_at(m, o);
                uint64_t usable;
                if (e == NULL || steps >= m->chain_cap || n > st->entries ||
                    (w & tag_bit(e->hash)) == 0 || /* the filter would hide it */
                    shmds__alloc_block_live(m->r, o, &usable) != 0 ||
                    usable < esize(e->klen, e->vlen) ||
                    shmds__hash(m->seed, e_key(e), (size_t)e->klen) != e->hash ||
                    (k == 3 && i > 0 ? &t->nw[bidx(e->hash, t->bn)]
                                     : bucket_slot(m, t, st, s, e->hash)) != slots[i])
                    return SHMDS_ECORRUPT;
                n++;
                mem += esize(e->klen, e->vlen);
                o = e->next;
            }
        }
    }
    return n == st->entries && mem == st->mem ? 0 : SHMDS_ECORRUPT;
}

static int check_tables(shmds_map *m, const struct tsnap *t)
{
    uint64_t usable;
    if (shmds__alloc_block_live(m->r, m->h->tab_old, &usable) != 0 || usable < 8 * ((uint64_t)1 << t->bo))
        return SHMDS_ECORRUPT;
    if (t->rh && (shmds__alloc_block_live(m->r, m->h->tab_new, &usable) != 0 ||
                  usable < 8 * ((uint64_t)1 << t->bn)))
        return SHMDS_ECORRUPT;
    if (!t->rh && m->h->tab_new != 0)
        return SHMDS_ECORRUPT;
    /* Idle, or a SWITCH done whose old table waits for a retire record. */
    const struct rlog *rl = &m->h->rlog;
    uint32_t op = LD(&rl->op);
    if (op == ROP_NONE ||
        (op == ROP_SWITCH && !t->rh && rl->newtab == m->h->tab_old && rl->dead != 0 &&
         rl->dead != rl->newtab && shmds__alloc_block_live(m->r, rl->dead, NULL) == 0))
        return 0;
    return SHMDS_ECORRUPT;
}

SHMDS_API int shmds_map_check(shmds_map *m)
{
    if (m == NULL)
        return -EINVAL;
    if (shmds__rdonly(m->r))
        return SHMDS_ERDONLY;
    uint32_t locked = 0;
    int rc = 0;
    for (; locked < m->S; locked++)
        if ((rc = stripe_lock(m, locked, false)) < 0)
            break;
    int rl = rc < 0 ? rc : shmds__lock(m->r, &m->h->resize, resize_repair, m);
    if (rl >= 0) {
        struct tsnap t;
        rc = tsnap_load(m, &t); /* check what is there now, not the copy */
        if (rc == 0)
            rc = check_tables(m, &t);
        for (uint32_t s = 0; s < m->S && rc == 0; s++)
            rc = check_stripe(m, &t, s);
        shmds_mutex_unlock(&m->h->resize);
    } else {
        rc = rl;
    }
    while (locked > 0)
        stripe_unlock(m, --locked);
    return rc;
}

/* The object layer's check: the header validates, then as shmds_map_check.
 * A map's check takes its locks: a read-only region skips it. */
static int map_check_at(shmds_region *r, shmds_off_t off)
{
    if (shmds__rdonly(r))
        return 0;
    shmds_map *m;
    int rc = map_attach(r, off, &m);
    if (rc < 0)
        return rc;
    rc = shmds_map_check(m);
    shmds_map_close(m);
    return rc;
}

uint64_t *shmds__map_slot(shmds_map *m, const void *key, size_t klen)
{
    uint64_t hash = shmds__hash(m->seed, key, klen);
    uint32_t s = stripe_of(m, hash);
    struct tsnap t;
    if (tsnap_load(m, &t) != 0)
        return NULL;
    return bucket_slot(m, &t, &m->h->stripes[s], s, hash);
}

uint32_t shmds__map_fill_waiters(shmds_map *m, const void *key, size_t klen)
{
    uint32_t s = stripe_of(m, shmds__hash(m->seed, key, klen));
    return __atomic_load_n(&m->h->stripes[s].sleepers, __ATOMIC_SEQ_CST);
}

SHMDS_API uint64_t shmds_map_size_hint(uint64_t entries, size_t key_bytes, size_t val_bytes)
{
    /* Sizes no region can hold: saturate instead of wrapping round. */
    const uint64_t huge = (uint64_t)1 << 56;
    if (entries > huge || key_bytes > huge || val_bytes > huge)
        return UINT64_MAX;
    uint64_t S = SHMDS_MAP_STRIPES_DEFAULT;
    uint64_t buckets = (uint64_t)1 << log2_ceil(entries < 16 ? 16 : entries);
    /* Per-stripe growth can double the table early; a growth holds the old
     * table (half the size) beside it. A map created with capacity `entries`
     * starts at 2 * buckets and would need twice the entries to grow. */
    uint64_t tables = 8 * (2 * buckets + buckets);
    /* Each entry is one heap block: its size plus the allocator's header. */
    uint64_t ents;
    if (__builtin_mul_overflow(entries, esize(key_bytes, val_bytes) + 16, &ents))
        return UINT64_MAX;
    uint64_t hdr = hdr_bytes((uint32_t)S) + 64;
    uint64_t sum = SHMDS_HEADER_SIZE + hdr + tables;
    if (__builtin_add_overflow(sum, ents, &sum) || sum > UINT64_MAX / 2)
        return UINT64_MAX;
    return sum + sum / 8 + 65536;
}

/* The object layer's attach (a map keeps no name to compare). */
static int map_attach_op(shmds_region *r, shmds_off_t off, const char *name, void **out)
{
    shmds_map *m;
    int rc = map_attach(r, off, &m);
    if (rc == 0 && name != NULL)
        memcpy(m->name, name, strlen(name) + 1);
    if (rc == 0)
        *out = m;
    return rc;
}

const struct shmds__obj_ops shmds__map_ops = {SHMDS_TYPE_MAP, map_attach_op, map_teardown_at,
                                              map_check_at, NULL};
