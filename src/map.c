/*
 * The shared hash map.
 *
 * Layer: a structure. Calls down into the object layer (create, open,
 * destroy: shmds__map_ops), the allocator, lock.c and the region; never
 * into another structure or the region-wide passes (check.c).
 *
 * Layout. A map is one header block (struct map_hdr, followed by an array of
 * stripes) plus bucket tables and entries, all in the region's heap and
 * linked by offsets. An entry is one block: a 48-byte header, the value
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
 * point. Repair (after settling the allocator): committed -> set the
 * counters, free `dead`, forget `blk`; not committed -> free `blk`, forget
 * `dead`. A rehash move of one entry is three stores logged with all their
 * values and always rolled forward; an in-place counter add is one aligned
 * 8-byte store, logged and rolled forward. The map-wide START and SWITCH
 * are logged in the resize lock's own record and rolled forward. Repair
 * reads only the log: O(1), never a scan of the map.
 *
 * Spare blocks (the insert path's one lock round trip). Each stripe keeps
 * up to SPARES allocated blocks in allocator slots of its own (`spare`).
 * An insert takes a spare that fits its entry (the stripe lock is the only
 * lock it takes); when none fits, it allocates its block and fills the
 * empty spare slots with blocks of the same size in the same allocator
 * round trip (shmds__alloc_many_into). A delete's dead block goes into an
 * empty spare slot instead of back to the heap. A block moves between a
 * spare slot and the log in two stores (set the target, then clear the
 * source), so after a crash it may sit in both; repair then leaves it with
 * the spare slot instead of freeing it. The spares are the map's blocks:
 * the check checks them, destroy frees them.
 *
 * Lock-free reads. Every stripe has a sequence counter, odd while its chains
 * change. Without SHMDS_MAP_EVICT, shmds_map_get reads optimistically: load
 * the counters, walk (every offset checked, every walk capped, so a torn
 * read cannot crash or hang), copy, and accept only if neither counter moved.
 * This needs no write to the region, so it works on SHMDS_RDONLY mappings. A
 * counter stuck odd means a writer died: a writable handle then takes the
 * lock (which repairs); a read-only one retries until the region's lock
 * bound and returns -ETIMEDOUT. With SHMDS_MAP_EVICT a hit must set the
 * entry's CLOCK bit, which is only safe while the entry cannot be freed, so
 * gets take the stripe lock (the only lock they take) and refuse on a
 * read-only mapping.
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
#include <sys/random.h>
#include <unistd.h>

#define MAP_MAGIC UINT64_C(0x3150414d53444d48) /* "HMDSMAP1" */
#define ENTRY_MAGIC 0x454e5452u                  /* "ENTR" */
#define ENTRY_HDR 48u
#define CHAIN_CAP 65536u    /* no legitimate chain is this long */
#define MOVE_PER_OP 2u      /* old buckets a write migrates in its stripe */
#define MIN_BITS 4u         /* smallest table: 16 buckets */
#define MAX_BITS 40u        /* largest table: 2^40 buckets */
#define SHARDS 16u          /* hit/miss counter lines, one per handle */
#define EVICT_TRIES 64u     /* allocation retries after evicting */
#define SPARES 4u           /* blocks a stripe keeps for its next inserts */
#define SPARE_SLACK 64u     /* a spare fits an entry it exceeds by less than this */

enum { OP_NONE = 0, OP_SWAP = 1, OP_MOVE = 2, OP_ADD = 3 };
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
    uint32_t ref;       /* CLOCK bit */
    uint32_t magic;
    /* value (vlen bytes, 16-aligned), then key (klen bytes) */
};
SHMDS__STATIC_ASSERT(sizeof(struct entry) == ENTRY_HDR, "entry header is 48 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct entry, next) == 0, "format: entry next");
SHMDS__STATIC_ASSERT(offsetof(struct entry, expire_ms) == 32, "format: entry expiry");

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
    uint64_t e;         /* MOVE: entry; ADD: offset of the value */
    uint64_t enext;     /* MOVE: entry's old next; ADD: the new value */
    uint64_t nhead;     /* MOVE: old head of the target bucket */
    uint64_t oldslot;   /* MOVE: offset of the source bucket */
    uint64_t newslot;   /* MOVE: offset of the target bucket */
    uint64_t pad;
};
SHMDS__STATIC_ASSERT(sizeof(struct slog) == 112, "stripe log is 112 bytes");

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
    uint64_t pad0;
    uint64_t inserts, deletes, evictions, expirations;
    uint64_t spare[SPARES]; /* allocator slots: blocks kept for new entries */
    struct slog log;
    uint8_t pad2[16];
};
SHMDS__STATIC_ASSERT(sizeof(struct stripe) == 320, "stripe is 320 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, seq) == 64, "format: stripe seq");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, log) == 192, "format: stripe log");
SHMDS__STATIC_ASSERT(offsetof(struct stripe, spare) == 160, "format: stripe spares");

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
    uint32_t default_ttl_s;
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
    uint64_t pad0;
    shmds_mutex resize;
    struct rlog rlog;
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
SHMDS__STATIC_ASSERT(offsetof(struct map_hdr, shards) == 256, "format: shards");
SHMDS__STATIC_ASSERT(sizeof(struct map_hdr) == 256 + 64 * SHARDS, "format: stripes");

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
    /* The last table state read and checked, valid while the map's tseq
     * still equals tc.seq (odd: none yet). */
    struct tsnap tc;
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

static inline uint64_t rd64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

/* 64-bit hash of a key, 8 bytes a step; the top bits (buckets and stripes
 * use them) are well mixed. */
static inline uint64_t key_hash(uint64_t seed, const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = seed ^ (len * UINT64_C(0x9e3779b97f4a7c15));
    while (len >= 8) {
        h = (h ^ mix(rd64(p))) * UINT64_C(0x9e3779b97f4a7c15);
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t t = 0;
        memcpy(&t, p, len);
        h = (h ^ mix(t ^ len)) * UINT64_C(0x9e3779b97f4a7c15);
    }
    return mix(h);
}

static inline uint64_t bidx(uint64_t hash, uint32_t bits)
{
    return bits == 0 ? 0 : hash >> (64 - bits);
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
    uint64_t room = m->r->heap_end - off - ENTRY_HDR;
    if (LD(&e->magic) != ENTRY_MAGIC || kl > room || vl > room - kl)
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
    return (m->r->heap_end - m->r->heap_off) / 64u + 1u;
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

/* Byte strings equal? Keys of 8 to 16 bytes (the common ones) compare as
 * two overlapping words, without a call. */
static inline bool bytes_eq(const unsigned char *a, const unsigned char *b, size_t n)
{
    if (n >= 8 && n <= 16)
        return ((rd64(a) ^ rd64(b)) | (rd64(a + n - 8) ^ rd64(b + n - 8))) == 0;
    return memcmp(a, b, n) == 0;
}

static inline bool e_match(struct entry *e, uint64_t hash, const void *key, size_t klen)
{
    return e->hash == hash && e->klen == klen && bytes_eq(e_key(e), key, klen);
}

/* ---------------------------------------------------------------------------
 * Table state
 * ------------------------------------------------------------------------ */

static int resize_repair(void *arg);

/* Read the table pair consistently and remember it in the handle. A
 * writable handle that finds tseq stuck odd takes the resize lock, which
 * repairs; a read-only one gives up with -ETIMEDOUT at the region's lock
 * bound. */
static int tsnap_load(shmds_map *m, struct tsnap *t)
{
    struct map_hdr *h = m->h;
    struct shmds__wait w = {0};
    for (;;) {
        uint64_t s1 = shmds__seq_read_begin(&h->tseq);
        if ((s1 & 1) == 0) {
            uint64_t to = LD(&h->tab_old), tn = LD(&h->tab_new);
            uint32_t bo = LD(&h->bits_old), bn = LD(&h->bits_new);
            uint64_t ep = LD(&h->tepoch);
            uint32_t rh = LD(&h->rehashing);
            if (shmds__seq_read_ok(&h->tseq, s1)) {
                if (bo < m->sbits || bo < 1 || bo > MAX_BITS)
                    return SHMDS_ECORRUPT;
                t->seq = s1;
                t->bo = bo;
                t->rh = rh != 0;
                t->tepoch = ep;
                t->old = shmds__ptr_chk(m->r, to, (uint64_t)8 << bo, 8);
                if (t->old == NULL)
                    return SHMDS_ECORRUPT;
                t->nw = NULL;
                t->bn = 0;
                if (t->rh) {
                    if (bn != bo + 1)
                        return SHMDS_ECORRUPT;
                    t->bn = bn;
                    t->nw = shmds__ptr_chk(m->r, tn, (uint64_t)8 << bn, 8);
                    if (t->nw == NULL)
                        return SHMDS_ECORRUPT;
                }
                m->tc = *t;
                return 0;
            }
        }
        int rc = shmds__seq_wait(m->r, &w, &h->tseq, &h->resize, resize_repair, m);
        if (rc != 0)
            return rc;
    }
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

/* The one or two bucket slots that hold what old bucket `rel` of stripe s's
 * slice held. Returns how many. */
static int slice_slots(const shmds_map *m, const struct tsnap *t, const struct stripe *st,
                       uint32_t s, uint64_t rel, uint64_t *out[2])
{
    if (t->rh && LD(&st->epoch) == t->tepoch && rel < LD(&st->moved)) {
        uint64_t nb = ((uint64_t)s << (t->bn - m->sbits)) + 2 * rel;
        out[0] = &t->nw[nb];
        out[1] = &t->nw[nb + 1];
        return 2;
    }
    out[0] = &t->old[((uint64_t)s << (t->bo - m->sbits)) + rel];
    return 1;
}

/* ---------------------------------------------------------------------------
 * Repair
 * ------------------------------------------------------------------------ */

static int migrate(shmds_map *m, uint32_t s, const struct tsnap *t, unsigned n);

/* A mover that died between two entries of one old bucket (or after its
 * last entry, before counting the bucket as moved) left the bucket half in
 * each table, while lookups look for its keys in the old table only: finish
 * moving it. The bucket is half moved exactly when its two targets in the
 * new table are not empty (they are cleared before the slice's first move). */
static int finish_bucket(shmds_map *m, uint32_t s)
{
    struct stripe *st = &m->h->stripes[s];
    struct tsnap t;
    int rc = tsnap_get(m, &t);
    if (rc < 0)
        return rc;
    if (!t.rh || LD(&st->epoch) != t.tepoch || LD(&st->moved) >= slice_len(m, t.bo))
        return 0;
    uint64_t nb = ((uint64_t)s << (t.bn - m->sbits)) + 2 * LD(&st->moved);
    if (LD(&t.nw[nb]) == 0 && LD(&t.nw[nb + 1]) == 0)
        return 0;
    rc = migrate(m, s, &t, 1);
    return rc < 0 ? rc : 0;
}

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
    int rc = shmds__alloc_settle(r);
    if (rc < 0)
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
            if (lg->dead != 0 && spare_slot(st, lg->dead) != NULL)
                ST(&lg->dead, 0);
            if ((rc = shmds__free_from(r, &lg->dead)) < 0)
                return rc;
            SHMDS_FAULT("map.repair.swap.freed_dead");
            ST(&lg->blk, 0);
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
        struct entry *e = shmds__ptr_chk(r, lg->e, ENTRY_HDR, 16);
        uint64_t *os = shmds__ptr_chk(r, lg->oldslot, 8, 8);
        uint64_t *ns = shmds__ptr_chk(r, lg->newslot, 8, 8);
        if (e == NULL || os == NULL || ns == NULL)
            return SHMDS_ECORRUPT;
        ST(&e->next, lg->nhead);
        ST(ns, lg->e);
        SHMDS_FAULT("map.repair.move.half");
        ST(os, lg->enext);
        break;
    }
    case OP_ADD: {
        uint64_t *v = shmds__ptr_chk(r, lg->e, 8, 8);
        if (v == NULL)
            return SHMDS_ECORRUPT;
        ST(v, lg->enext);
        break;
    }
    default:
        return SHMDS_ECORRUPT;
    }
    ST(&lg->committed, 0);
    STR(&lg->op, OP_NONE);
    shmds__seq_write_end(&st->seq);
    return finish_bucket(m, ref->s);
}

/* Called with the resize lock held after its holder died: roll START or
 * SWITCH forward from the record. */
static int resize_repair(void *arg)
{
    shmds_map *m = arg;
    struct map_hdr *h = m->h;
    struct rlog *rl = &h->rlog;
    int rc = shmds__alloc_settle(m->r);
    if (rc < 0)
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
        if ((rc = shmds__free_from(m->r, &rl->dead)) < 0)
            return rc;
        break;
    default:
        return SHMDS_ECORRUPT;
    }
    shmds__seq_write_end(&h->tseq);
    STR(&rl->op, ROP_NONE);
    return 0;
}

/* Lock stripe s (blocking up to the region's bound, or not at all when
 * `try`). Returns 0, SHMDS_RECOVERED, or an error (-EBUSY for try). */
static int stripe_lock(shmds_map *m, uint32_t s, bool try)
{
    struct stripe *st = &m->h->stripes[s];
    struct stripe_ref ref = {m, s};
    if (try)
        return shmds_mutex_lock(&st->lock, 0, stripe_repair, &ref);
    return shmds__lock(m->r, &st->lock, stripe_repair, &ref);
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
    int rc = shmds__lock(m->r, &h->resize, resize_repair, m);
    if (rc < 0)
        return rc;
    struct tsnap t;
    rc = tsnap_get(m, &t);
    if (rc == 0 && !t.rh && t.bo < MAX_BITS) {
        struct rlog *rl = &h->rlog;
        rl->newbits = t.bo + 1;
        rl->tepoch1 = t.tepoch + 1;
        STR(&rl->op, ROP_START);
        SHMDS_FAULT("map.grow.logged");
        rc = shmds__alloc_into(m->r, (uint64_t)8 << (t.bo + 1), &h->tab_new);
        if (rc == 0) {
            SHMDS_FAULT("map.grow.allocated");
            shmds__seq_write_begin(&h->tseq);
            SHMDS_FAULT("map.grow.odd");
            ST(&h->bits_new, rl->newbits);
            ST(&h->tepoch, rl->tepoch1);
            ST(&h->rehashing, 1);
            shmds__seq_write_end(&h->tseq);
        } else if (rc == -ENOMEM) {
            rc = 0;
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
    rc = shmds__lock(m->r, &h->resize, resize_repair, m);
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
        shmds__seq_write_begin(&h->tseq);
        ST(&h->tab_old, rl->newtab);
        ST(&h->bits_old, rl->newbits);
        SHMDS_FAULT("map.switch.half");
        ST(&h->tab_new, 0);
        ST(&h->bits_new, 0);
        ST(&h->rehashing, 0);
        shmds__seq_write_end(&h->tseq);
        SHMDS_FAULT("map.switch.published");
        rc = shmds__free_from(m->r, &rl->dead);
        SHMDS_FAULT("map.switch.freed");
        if (rc == 0)
            STR(&rl->op, ROP_NONE);
    }
    shmds_mutex_unlock(&h->resize);
    return rc;
}

/* Move up to `n` old buckets of stripe s (locked) into the new table.
 * Returns 1 when the stripe's slice is now all moved, 0 when not, <0 error. */
static int migrate(shmds_map *m, uint32_t s, const struct tsnap *t, unsigned n)
{
    struct stripe *st = &m->h->stripes[s];
    SHMDS_ASSERT(shmds__mutex_held(&st->lock), "only the stripe's holder moves its buckets");
    struct slog *lg = &st->log;
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
        ST(&st->epoch, t->tepoch);
        SHMDS_FAULT("map.migrate.cleared");
    }
    for (unsigned k = 0; k < n && LD(&st->moved) < total; k++) {
        uint64_t b = ((uint64_t)s << (t->bo - m->sbits)) + LD(&st->moved);
        uint64_t *os = &t->old[b];
        unsigned steps = 0;
        for (uint64_t eo; (eo = LD(os)) != 0;) {
            struct entry *e = entry_at(m, eo);
            if (e == NULL || ++steps > CHAIN_CAP || bidx(e->hash, t->bo) != b) {
                rc = SHMDS_ECORRUPT;
                goto out;
            }
            uint64_t *ns = &t->nw[bidx(e->hash, t->bn)];
            lg->e = eo;
            lg->enext = e->next;
            lg->nhead = LD(ns);
            lg->oldslot = shmds_off(m->r, os);
            lg->newslot = shmds_off(m->r, ns);
            STR(&lg->op, OP_MOVE);
            SHMDS_FAULT("map.move.logged");
            ST(&e->next, lg->nhead);
            ST(ns, eo);
            SHMDS_FAULT("map.move.linked");
            ST(os, lg->enext);
            STR(&lg->op, OP_NONE);
        }
        ST(&st->moved, LD(&st->moved) + 1);
    }
out:
    shmds__seq_write_end(&st->seq);
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
};

/* Put a block for an entry of `need` bytes into the log's `blk` slot
 * (stripe st locked, its SWAP opened): a spare that fits, moved in two
 * stores (module comment); else a new block, with new spares of the same
 * size in the same allocator round trip. Errors as shmds__alloc_into. */
static int entry_block(shmds_map *m, struct stripe *st, uint64_t need)
{
    shmds_off_t *empty[SPARES];
    unsigned ne = 0;
    for (unsigned j = 0; j < SPARES; j++) {
        uint64_t b = LD(&st->spare[j]), usable;
        if (b == 0) {
            empty[ne++] = &st->spare[j];
        } else if (shmds__alloc_block_live(m->r, b, &usable) == 0 && usable >= need &&
                   usable - need < SPARE_SLACK) {
            ST(&st->log.blk, b);
            SHMDS_FAULT("map.swap.spare_taken");
            ST(&st->spare[j], 0);
            return 0;
        }
    }
    return shmds__alloc_many_into(m->r, need, &st->log.blk, empty, ne);
}

/* One SWAP: the link word `link` gets a new entry `ne` chained to `next`
 * (ne != NULL), or `next` itself (ne == NULL: an unlink); the entry `dead`
 * (0 for none) is freed after the commit; the stripe's counters change by
 * `dn` entries and `dmem` bytes. Built by insert_entry, replace_entry and
 * unlink_entry below. */
struct swap_op {
    uint64_t *link;
    uint64_t next;
    const struct newent *ne;
    uint64_t dead;
    int64_t dn, dmem;
};

/* Apply `op` (stripe st locked, log idle). Returns 0; on -ENOMEM or any
 * allocator error nothing changed. */
static int swap(shmds_map *m, struct stripe *st, const struct swap_op *op)
{
    shmds_region *r = m->r;
    struct slog *lg = &st->log;
    const struct newent *ne = op->ne;
    uint64_t *link = op->link;
    SHMDS_ASSERT(shmds__mutex_held(&st->lock), "the stripe lock serialises its intent log");
    SHMDS_ASSERT(LD(&lg->op) == OP_NONE, "a SWAP starts on an idle log (repairs finish others)");
    SHMDS_ASSERT(op->dn >= -1 && op->dn <= 1, "a SWAP adds, replaces or removes one entry");
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
        int rc = entry_block(m, st, esize(ne->k.len, ne->vlen));
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
        e->next = op->next;
        e->hash = ne->k.hash;
        e->klen = ne->k.len;
        e->vlen = ne->vlen;
        e->expire_ms = ne->expire_ms;
        e->ref = 0;
        e->magic = ENTRY_MAGIC;
        if (ne->vlen > 0)
            memcpy(e_val(e), ne->val, ne->vlen);
        memcpy(e_key(e), ne->k.p, ne->k.len);
        lg->link_new = lg->blk;
    } else {
        lg->link_new = op->next;
    }
    SHMDS_FAULT("map.swap.before_commit");
    shmds__seq_write_begin(&st->seq);
    STR(link, lg->link_new);
    shmds__seq_write_end(&st->seq);
    SHMDS_FAULT("map.swap.committed");
    ST(&lg->committed, 1);
    st->entries = lg->entries1;
    st->mem = lg->mem1;
    /* A failed free (a damaged heap) loses that block but not the commit.
     * Only our own allocator calls write the log's slots while we hold the
     * stripe lock, so an insert's empty `dead` needs no trip through the
     * allocator lock; nor does a dead block kept as a spare. */
    int rc = 0;
    uint64_t d = LD(&lg->dead);
    if (d != 0) {
        uint64_t *sp = spare_slot(st, 0);
        if (sp != NULL) {
            ST(sp, d);
            SHMDS_FAULT("map.swap.spared");
            ST(&lg->dead, 0);
        } else {
            rc = shmds__free_from(r, &lg->dead);
        }
    }
    SHMDS_FAULT("map.swap.freed");
    ST(&lg->dead, 0);
    ST(&lg->blk, 0);
    ST(&lg->committed, 0);
    STR(&lg->op, OP_NONE);
    return rc;
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
    const struct swap_op op = {link, e->next, NULL, eo, -1, -(int64_t)esize(e->klen, e->vlen)};
    return swap(m, st, &op);
}

/* Unlink the entry find() hit. */
static int unlink_hit(shmds_map *m, struct stripe *st, const struct hit *h)
{
    return unlink_entry(m, st, h->link, h->eo, h->e);
}

/* Replace the entry find() hit by `ne`, in place in its chain. */
static int replace_entry(shmds_map *m, struct stripe *st, const struct hit *h,
                         const struct newent *ne)
{
    const struct swap_op op = {h->link, h->e->next, ne, h->eo, 0,
                               (int64_t)esize(ne->k.len, ne->vlen) -
                                   (int64_t)esize(h->e->klen, h->e->vlen)};
    return swap(m, st, &op);
}

/* Link `ne` at the head of the bucket slot `head`. */
static int insert_entry(shmds_map *m, struct stripe *st, uint64_t *head, const struct newent *ne)
{
    const struct swap_op op = {head, LD(head), ne, 0, 1, (int64_t)esize(ne->k.len, ne->vlen)};
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
    for (unsigned steps = 0;; steps++) {
        uint64_t o = LD(l);
        if (o == 0)
            return 0;
        struct entry *e = entry_at(m, o);
        if (e == NULL || steps >= CHAIN_CAP)
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

/* Remove expired entries from one bucket slot (at most `max`). */
static int reap_slot(shmds_map *m, struct stripe *st, uint64_t *l, unsigned max, uint64_t *now)
{
    unsigned done = 0;
    for (unsigned steps = 0; done < max; steps++) {
        uint64_t o = LD(l);
        if (o == 0)
            break;
        struct entry *e = entry_at(m, o);
        if (e == NULL || steps >= CHAIN_CAP)
            return SHMDS_ECORRUPT;
        if (e_expired(e, now)) {
            int rc = unlink_entry(m, st, l, o, e);
            if (rc < 0)
                return rc;
            st->expirations++;
            done++;
        } else {
            l = &e->next;
        }
    }
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
    st->sweep = rel + 1;
    uint64_t *slots[2];
    int n = slice_slots(m, &t, st, s, rel, slots);
    for (int i = 0; i < n; i++)
        if ((rc = reap_slot(m, st, slots[i], 8, &now)) < 0)
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
        uint64_t *slots[2];
        int n = slice_slots(m, &t, st, s, rel, slots);
        for (int i = 0; i < n; i++) {
            uint64_t *l = slots[i];
            for (unsigned steps = 0;; steps++) {
                uint64_t o = LD(l);
                if (o == 0)
                    break;
                struct entry *e = entry_at(m, o);
                if (e == NULL || steps >= CHAIN_CAP)
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
 * SHMDS_MAP_EVICT, first here, then in stripes we can lock at once.
 * `force` evicts one entry even without a budget (the heap was full).
 * Returns 0 (room made, or nothing to do), -ENOMEM, or an error. */
static int make_room(shmds_map *m, uint32_t s, uint64_t need, bool force)
{
    uint64_t limit = m->h->mem_limit;
    bool evict = m->evict;
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
    if (shmds__rdonly(m->r))
        return;
    uint64_t me = (uint64_t)getpid();
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
    m->shard = &m->h->shards[mix(me) % SHARDS];
}

/* Give a claimed shard line back (its counts stay). */
static void shard_release(shmds_map *m)
{
    if (m->own) {
        uint64_t me = (uint64_t)getpid();
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
    h->default_ttl_s = o->default_ttl_s;
    h->flags = o->flags;
    h->has_ttl = o->default_ttl_s != 0;
    h->block = blk;
    if (getrandom(&h->seed, sizeof h->seed, GRND_NONBLOCK) != (ssize_t)sizeof h->seed)
        h->seed = mix(shmds__now_ns() ^ ((uint64_t)getpid() << 32));
    h->bits_old = p->bits;
    int rc = shmds_mutex_init(&h->resize);
    for (uint32_t i = 0; i < p->S && rc == 0; i++)
        rc = shmds_mutex_init(&h->stripes[i].lock);
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
        (o->flags & ~(uint32_t)SHMDS_MAP_EVICT) != 0)
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
static int map_free_tables(shmds_region *r, struct map_hdr *h)
{
    int rc = shmds__free_from(r, &h->scratch);
    if (rc == 0)
        rc = shmds__free_from(r, &h->tab_new);
    if (rc == 0)
        rc = shmds__free_from(r, &h->tab_old);
    return rc;
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
    int rc = 0;
    struct tsnap t;
    for (uint32_t s = 0; s < m->S && rc == 0; s++) {
        if ((rc = stripe_lock(m, s, false)) < 0)
            break;
        struct stripe *st = &h->stripes[s];
        rc = tsnap_get(m, &t);
        for (uint64_t rel = 0; rc >= 0 && rel < slice_len(m, t.bo); rel++) {
            uint64_t *slots[2];
            int n = slice_slots(m, &t, st, s, rel, slots);
            for (int i = 0; i < n && rc >= 0; i++) {
                for (unsigned steps = 0; LD(slots[i]) != 0; steps++) {
                    struct entry *e = entry_at(m, LD(slots[i]));
                    if (e == NULL || steps >= CHAIN_CAP) {
                        rc = SHMDS_ECORRUPT;
                        break;
                    }
                    if (LD(&h->scratch) != LD(slots[i]) &&
                        (rc = shmds__free_from(r, &h->scratch)) < 0)
                        break;
                    ST(&h->scratch, LD(slots[i]));
                    SHMDS_FAULT("map.destroy.scratch");
                    ST(slots[i], e->next);
                    SHMDS_FAULT("map.destroy.unlinked");
                    if ((rc = shmds__free_from(r, &h->scratch)) < 0)
                        break;
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
    int rc = shmds__obj_destroy(m->r, &shmds__map_ops, m->off);
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
    uint64_t heap = m->r->heap_end - m->r->heap_off;
    return klen > heap || vlen > heap - klen ? -E2BIG : 0;
}

static uint64_t expiry(const shmds_map *m, uint32_t ttl_s)
{
    uint32_t ttl = ttl_s != 0 ? ttl_s : m->h->default_ttl_s;
    if (ttl == 0)
        return 0;
    if (LD(&m->h->has_ttl) == 0)
        ST(&m->h->has_ttl, 1);
    return now_ms() + (uint64_t)ttl * 1000u;
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

/* Insert or replace (stripe s locked). *created tells which. */
static int put_locked(shmds_map *m, uint32_t s, const struct newent *ne, unsigned flags,
                      bool *created)
{
    struct stripe *st = &m->h->stripes[s];
    struct tsnap t;
    struct hit h;
    uint64_t now = 0;
    int rc = rehash_step(m, s);
    if (rc < 0 || (rc = tsnap_get(m, &t)) < 0)
        return rc;
    int f = find(m, &t, s, &ne->k, &h);
    if (f < 0)
        return f;
    /* Whether the chain may have changed since that find: after an unlink,
     * or when make_room may evict (a budget) or has evicted (a retry). */
    bool stale = m->h->mem_limit != 0;
    if (f == 1 && e_expired(h.e, &now)) {
        if ((rc = unlink_hit(m, st, &h)) < 0)
            return rc;
        st->expirations++;
        f = 0;
        stale = true;
    }
    if ((flags & SHMDS_PUT_NX) && f == 1)
        return -EEXIST;
    if ((flags & SHMDS_PUT_XX) && f == 0)
        return -ENOENT;
    uint64_t need = esize(ne->k.len, ne->vlen);
    if ((rc = make_room(m, s, need, false)) < 0)
        return rc;
    bool evict = m->evict;
    for (unsigned tries = 0;; tries++, stale = true) {
        if (stale && (f = find(m, &t, s, &ne->k, &h)) < 0)
            return f;
        rc = f == 1 ? replace_entry(m, st, &h, ne) : insert_entry(m, st, h.head, ne);
        if (rc == -ENOMEM && evict && tries < EVICT_TRIES) {
            if ((rc = make_room(m, s, need, true)) < 0)
                return rc;
            continue;
        }
        *created = f == 0;
        return rc;
    }
}

/* End a write on stripe s (locked by stripe_lock(), which returned `lk`)
 * whose own change returned `rc`: after a success do the after-write work,
 * then unlock. Returns the error, or the lock's 0 / SHMDS_RECOVERED. */
static int write_end(shmds_map *m, uint32_t s, int lk, int rc)
{
    if (rc >= 0)
        rc = after_write(m, s);
    stripe_unlock(m, s);
    return rc < 0 ? rc : lk;
}

static int put_op(shmds_map *m, uint32_t s, const struct newent *ne, unsigned flags)
{
    bool created = false;
    int rc = put_locked(m, s, ne, flags, &created);
    if (rc == 0 && created)
        m->h->stripes[s].inserts++;
    return rc;
}

SHMDS_API int shmds_map_put(shmds_map *m, const void *key, size_t klen, const void *val,
                            size_t vlen, uint32_t ttl_s, unsigned flags)
{
    int rc = check_key(m, key, klen, vlen);
    if (rc == 0 && ((vlen > 0 && val == NULL) || (flags & ~3u) != 0 || flags == 3u))
        rc = -EINVAL;
    if (rc == 0)
        rc = shmds__writable(m->r);
    if (rc != 0)
        return rc;
    struct newent ne = {{key, klen, key_hash(m->seed, key, klen)}, val, vlen, expiry(m, ttl_s)};
    uint32_t s = stripe_of(m, ne.k.hash);
    int lk = stripe_lock(m, s, false);
    if (lk < 0)
        return lk;
    return write_end(m, s, lk, put_op(m, s, &ne, flags));
}

static int del_op(shmds_map *m, uint32_t s, const struct key *k)
{
    struct stripe *st = &m->h->stripes[s];
    struct tsnap t;
    struct hit h;
    uint64_t now = 0;
    int rc = rehash_step(m, s);
    if (rc < 0 || (rc = tsnap_get(m, &t)) < 0)
        return rc;
    int f = find(m, &t, s, k, &h);
    if (f <= 0)
        return f < 0 ? f : -ENOENT;
    bool exp = e_expired(h.e, &now);
    if ((rc = unlink_hit(m, st, &h)) < 0)
        return rc;
    if (exp) {
        st->expirations++;
        return -ENOENT;
    }
    st->deletes++;
    return 0;
}

SHMDS_API int shmds_map_del(shmds_map *m, const void *key, size_t klen)
{
    int rc = check_key(m, key, klen, 0);
    if (rc == 0)
        rc = shmds__writable(m->r);
    if (rc != 0)
        return rc;
    const struct key k = {key, klen, key_hash(m->seed, key, klen)};
    uint32_t s = stripe_of(m, k.hash);
    int lk = stripe_lock(m, s, false);
    if (lk < 0)
        return lk;
    rc = del_op(m, s, &k);
    /* -ENOENT still does the after-write work (it may have reclaimed). */
    int rc2 = rc >= 0 || rc == -ENOENT ? after_write(m, s) : 0;
    stripe_unlock(m, s);
    if (rc < 0)
        return rc;
    return rc2 < 0 ? rc2 : lk;
}

static int add_op(shmds_map *m, uint32_t s, const struct key *k, int64_t delta, int64_t *result)
{
    struct stripe *st = &m->h->stripes[s];
    struct tsnap t;
    struct hit h;
    uint64_t now = 0;
    int rc = rehash_step(m, s);
    if (rc < 0 || (rc = tsnap_get(m, &t)) < 0)
        return rc;
    int f = find(m, &t, s, k, &h);
    if (f < 0)
        return f;
    if (f == 1 && e_expired(h.e, &now)) {
        if ((rc = unlink_hit(m, st, &h)) < 0)
            return rc;
        st->expirations++;
        f = 0;
    }
    if (f == 0) {
        struct newent ne = {*k, &delta, 8, expiry(m, 0)};
        if ((rc = put_op(m, s, &ne, SHMDS_PUT_NX)) == 0 && result != NULL)
            *result = delta;
        return rc;
    }
    if (h.e->vlen != 8)
        return -EINVAL;
    int64_t *v = (int64_t *)(void *)e_val(h.e), nv;
    if (__builtin_add_overflow(LD(v), delta, &nv))
        return -EOVERFLOW;
    struct slog *lg = &st->log;
    lg->e = shmds_off(m->r, v);
    lg->enext = (uint64_t)nv;
    STR(&lg->op, OP_ADD);
    SHMDS_FAULT("map.add.logged");
    shmds__seq_write_begin(&st->seq);
    ST(v, nv);
    shmds__seq_write_end(&st->seq);
    SHMDS_FAULT("map.add.stored");
    STR(&lg->op, OP_NONE);
    if (result != NULL)
        *result = nv;
    return 0;
}

SHMDS_API int shmds_map_add(shmds_map *m, const void *key, size_t klen, int64_t delta,
                            int64_t *result)
{
    int rc = check_key(m, key, klen, 8);
    if (rc == 0)
        rc = shmds__writable(m->r);
    if (rc != 0)
        return rc;
    const struct key k = {key, klen, key_hash(m->seed, key, klen)};
    uint32_t s = stripe_of(m, k.hash);
    int lk = stripe_lock(m, s, false);
    if (lk < 0)
        return lk;
    return write_end(m, s, lk, add_op(m, s, &k, delta, result));
}

/* ---------------------------------------------------------------------------
 * Reads
 * ------------------------------------------------------------------------ */

/* Look `key` up in stripe s under snapshot t and copy its value out. Safe
 * without the lock: every offset is checked and the walk is capped; the
 * caller validates the sequence counters before trusting the result. */
static int lookup_copy(shmds_map *m, const struct tsnap *t, uint32_t s, uint64_t hash,
                       const void *key, size_t klen, void *buf, size_t cap, size_t *vlen)
{
    struct stripe *st = &m->h->stripes[s];
    uint64_t o = LD(bucket_slot(m, t, st, s, hash)), now = 0;
    for (unsigned steps = 0; o != 0; steps++) {
        uint64_t kl, vl;
        struct entry *e = entry_lens(m, o, &kl, &vl);
        if (e == NULL || steps >= CHAIN_CAP)
            return SHMDS_ECORRUPT;
        if (LD(&e->hash) == hash && kl == klen &&
            bytes_eq((unsigned char *)e + ENTRY_HDR + vl, key, klen)) {
            if (e_expired(e, &now))
                return -ENOENT;
            if (vlen != NULL)
                *vlen = (size_t)vl;
            if (vl > cap)
                return -ENOBUFS;
            if (vl == 8)
                memcpy(buf, e_val(e), 8);
            else if (vl > 0)
                memcpy(buf, e_val(e), (size_t)vl);
            return 0;
        }
        o = LD(&e->next);
    }
    return -ENOENT;
}

/* Get under the stripe lock: EVICT maps (sets the CLOCK bit, reclaims an
 * expired entry) and the fallback of optimistic reads. */
static int get_locked(shmds_map *m, uint32_t s, const struct key *k, void *buf, size_t cap,
                      size_t *vlen)
{
    int lk = stripe_lock(m, s, false);
    if (lk < 0)
        return lk;
    struct stripe *st = &m->h->stripes[s];
    struct tsnap t;
    struct hit h = {NULL, NULL, 0, NULL};
    uint64_t now = 0;
    int rc = tsnap_get(m, &t);
    if (rc == 0)
        rc = find(m, &t, s, k, &h);
    struct entry *e = h.e;
    if (rc == 1 && e_expired(e, &now)) {
        rc = unlink_hit(m, st, &h);
        if (rc == 0) {
            st->expirations++;
            rc = -ENOENT;
        }
    } else if (rc == 1) {
        if (vlen != NULL)
            *vlen = (size_t)e->vlen;
        if (e->vlen > cap) {
            rc = -ENOBUFS;
        } else {
            if (e->vlen > 0)
                memcpy(buf, e_val(e), (size_t)e->vlen);
            rc = 0;
        }
        if (LD(&e->ref) == 0)
            ST(&e->ref, 1);
    } else if (rc == 0) {
        rc = -ENOENT;
    }
    stripe_unlock(m, s);
    return rc;
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

struct getarg {
    const void *key;
    size_t klen;
    uint64_t hash;
    void *buf;
    size_t cap;
    size_t *vlen;
};

static int get_fn(shmds_map *m, const struct tsnap *t, uint32_t s, void *arg)
{
    struct getarg *g = arg;
    return lookup_copy(m, t, s, g->hash, g->key, g->klen, g->buf, g->cap, g->vlen);
}

/* The first attempt of read_stripe(get_fn), inline: true with *rc when
 * neither counter moved; false sends the caller the careful way. */
static inline bool get_once(shmds_map *m, uint32_t s, struct getarg *g, int *rc)
{
    struct stripe *st = &m->h->stripes[s];
    uint64_t q = shmds__seq_read_begin(&st->seq);
    struct tsnap t;
    if ((q & 1) != 0 || tsnap_get(m, &t) != 0)
        return false;
    *rc = get_fn(m, &t, s, g);
    return shmds__seq_read_ok(&st->seq, q) && LD(&m->h->tseq) == t.seq;
}

SHMDS_API int shmds_map_get(shmds_map *m, const void *key, size_t klen, void *buf, size_t cap,
                            size_t *vlen)
{
    int rc = check_key(m, key, klen, 0);
    if (rc == 0 && cap > 0 && buf == NULL)
        rc = -EINVAL;
    if (rc != 0)
        return rc;
    uint64_t hash = key_hash(m->seed, key, klen);
    uint32_t s = stripe_of(m, hash);
    bool ro = shmds__rdonly(m->r);
    if (m->evict) {
        if (ro)
            return SHMDS_ERDONLY;
        const struct key k = {key, klen, hash};
        rc = get_locked(m, s, &k, buf, cap, vlen);
    } else {
        struct getarg g = {key, klen, hash, buf, cap, vlen};
        if (!get_once(m, s, &g, &rc))
            rc = read_stripe(m, s, get_fn, &g);
    }
    if (m->shard != NULL && (rc == 0 || rc == -ENOENT || rc == -ENOBUFS)) {
        bool miss = rc == -ENOENT;
        if (m->own) {
            uint64_t *c = miss ? &m->shard->misses : &m->shard->hits;
            ST(c, LD(c) + 1);
        } else {
            __atomic_add_fetch(miss ? &m->shard->misses_shared : &m->shard->hits_shared, 1,
                               __ATOMIC_RELAXED);
        }
    }
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
        uint64_t *slots[2];
        int n = slice_slots(m, t, st, s, rel, slots);
        for (int i = 0; i < n; i++) {
            uint64_t o = LD(slots[i]);
            for (unsigned steps = 0; o != 0; steps++) {
                uint64_t lens[2];
                struct entry *e = entry_lens(m, o, &lens[0], &lens[1]);
                if (e == NULL || steps >= CHAIN_CAP || ++b->steps > cap)
                    return SHMDS_ECORRUPT;
                if (!e_expired(e, &now)) {
                    int rc;
                    /* A stripe's live entries are disjoint: more bytes than
                     * the heap holds is a walk going round. */
                    uint64_t heap = m->r->heap_end - m->r->heap_off;
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
    }
    out->recoveries += LD(&h->resize.recoveries);
    for (unsigned i = 0; i < SHARDS; i++) {
        out->hits += LD(&h->shards[i].hits) + LD(&h->shards[i].hits_shared);
        out->misses += LD(&h->shards[i].misses) + LD(&h->shards[i].misses_shared);
    }
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
 * Check
 * ------------------------------------------------------------------------ */

/* Verify stripe s (locked) against snapshot t. */
static int check_stripe(shmds_map *m, const struct tsnap *t, uint32_t s)
{
    struct stripe *st = &m->h->stripes[s];
    if (LD(&st->log.op) != OP_NONE || (LD(&st->seq) & 1) != 0 || st->log.blk != 0 ||
        st->log.dead != 0)
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
        uint64_t *slots[2];
        int k = slice_slots(m, t, st, s, rel, slots);
        if (cur && k == 1) {
            /* Not moved yet: its two targets in the new table are empty. */
            uint64_t nb = ((uint64_t)s << (t->bn - m->sbits)) + 2 * rel;
            if (t->nw[nb] != 0 || t->nw[nb + 1] != 0)
                return SHMDS_ECORRUPT;
        }
        for (int i = 0; i < k; i++) {
            uint64_t o = LD(slots[i]);
            for (unsigned steps = 0; o != 0; steps++) {
                struct entry *e = entry_at(m, o);
                uint64_t usable;
                if (e == NULL || steps >= CHAIN_CAP || n > st->entries ||
                    shmds__alloc_block_live(m->r, o, &usable) != 0 ||
                    usable < esize(e->klen, e->vlen) ||
                    key_hash(m->seed, e_key(e), (size_t)e->klen) != e->hash ||
                    bucket_slot(m, t, st, s, e->hash) != slots[i])
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
    return LD(&m->h->rlog.op) == ROP_NONE ? 0 : SHMDS_ECORRUPT;
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
    uint64_t hash = key_hash(m->seed, key, klen);
    uint32_t s = stripe_of(m, hash);
    struct tsnap t;
    if (tsnap_load(m, &t) != 0)
        return NULL;
    return bucket_slot(m, &t, &m->h->stripes[s], s, hash);
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
    (void)name;
    shmds_map *m;
    int rc = map_attach(r, off, &m);
    if (rc == 0)
        *out = m;
    return rc;
}

const struct shmds__obj_ops shmds__map_ops = {SHMDS_TYPE_MAP, map_attach_op, map_teardown_at,
                                              map_check_at};
