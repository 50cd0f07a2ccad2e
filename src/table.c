/*
 * Published lookup tables (shmds_table): built once, replaced with one
 * store, read with no lock.
 *
 * Layer: a structure. Calls down into the object layer (create, open,
 * destroy: shmds__table_ops), the read guards (guard.c: readers enter one,
 * a replaced version is retired through it), the allocator, lock.c and the
 * region; never into another structure.
 *
 * Layout. The table's header (a directory object) holds a robust mutex,
 * `root` (the allocator slot of the current *version*, 0 before the first
 * publish), `prev` (the slot of the version being replaced, nonzero only
 * inside a publish's swap) and SHMDS_TABLE_BUILDS_MAX build records
 * {pid, start, block, base}. A version is one immutable block:
 *
 *   struct tver (128 bytes: what a lookup needs in its first cache line)
 *   uint64_t slot[nslots]   open addressing, linear probing, nslots a power
 *                           of two >= 1.5 x pairs; a slot is 0 (empty) or
 *                           tag << 48 | (record offset / 8 + 1), the tag
 *                           being the top 16 bits of the key's hash
 *   skew                    0 to 48 bytes, so that the records start on a
 *                           cache line (the block is only 16-aligned)
 *   records                 {u32 klen, u32 vlen, key, value}, each rounded
 *                           up to 8 bytes, in the order they were added; a
 *                           record of 64 bytes or less that would straddle
 *                           two cache lines starts on the next one instead,
 *                           after a pad {u32 0, u32 len, len bytes} (so a
 *                           hit reads one line of data, not two)
 *
 * A lookup hashes the key with the version's seed, reads slots from
 * hash & mask on, skips slots whose tag differs (so it reads a record only
 * when 16 more bits of hash agree) and stops at an empty slot or after
 * max_probe slots (the builder's longest probe sequence, so a miss is
 * bounded by the layout, not by a full scan). Every word it reads is
 * checked against the version's own bounds, which were checked against the
 * heap: a hostile image gives SHMDS_ECORRUPT or a miss, never a stray read.
 * A handle checks a version's header once, the first time it meets the
 * version, and keeps the checked facts (struct vcache): a lookup reads the
 * root and the version's seed, and while both are the ones kept it goes
 * straight to the slots (damage to a header a handle has already checked
 * is then seen by shmds_table_check, not by the handle's lookups, which
 * never read it).
 *
 * Build. shmds_table_add appends records to process memory. Publish builds
 * the index there (a key added twice keeps its last value), then claims a
 * build record under the lock, allocates the version's block into the
 * record's slot (the allocator's own commit writes it: from that instant the
 * block is reachable from the record), fills it outside any lock, and
 * swaps under the lock:
 *
 *   prev = root; root = new (release: the commit point);
 *   record.block = 0; retire(prev) (guard.c clears prev in its commit);
 *   record.pid = 0
 *
 * Repair (settle(), run by every process that takes the lock, idempotent):
 * prev == root: the swap had not happened, prev = 0; prev != root: it had,
 * retire prev; a record whose block is the root: hand it over (block = 0);
 * a record whose owner is dead (pid and start time, shmds__proc_alive):
 * free its block through its slot, free the record. So a builder killed
 * anywhere leaves the published version intact and nothing leaked, and a
 * version is never current twice or freed twice.
 *
 * Racing builders: a record carries the version its builder began from;
 * the swap happens only while that is still the root's version
 * (SHMDS_EVERSION otherwise).
 *
 * Readers use a read guard (guard.h): enter, load root with acquire order,
 * read. A version retired after the guard was entered stays allocated until
 * the guard is left, so a pointer into it (shmds_table_get_ref) stays valid.
 */
#include "object.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* "SDSTABL1" and "SDSTVER1" read as little-endian words. */
#define TABLE_MAGIC UINT64_C(0x314c424154534453)
#define VER_MAGIC UINT64_C(0x3152455654534453)

enum { STATE_LIVE = 1, STATE_DYING = 2 };

#define PUT(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/* ---------------------------------------------------------------------------
 * Shared layout
 * ------------------------------------------------------------------------ */

struct build_rec {
    uint32_t pid;   /* 0: free; stored last when claimed, last when freed */
    uint32_t reserved;
    uint64_t start; /* the owner's start time (shmds__self_start) */
    uint64_t block; /* allocator slot: the version being filled */
    uint64_t base;  /* the version current when the build began */
};
SHMDS__STATIC_ASSERT(sizeof(struct build_rec) == 32, "build record is 32 bytes");

struct table_hdr {
    shmds_mutex lock; /* serialises claims, swaps and repairs */
    uint64_t magic;   /* TABLE_MAGIC; cleared when destroyed */
    uint64_t block;   /* heap block holding this header */
    uint64_t root;    /* allocator slot: the current version (0: none) */
    uint64_t prev;    /* allocator slot: the version a swap replaces */
    uint64_t publishes;
    uint64_t reclaimed;
    uint32_t state;   /* STATE_* */
    uint32_t reserved;
    uint8_t pad0[8];
    char name[SHMDS_ROOT_NAME_MAX + 1];
    struct build_rec builds[SHMDS_TABLE_BUILDS_MAX];
};
SHMDS__STATIC_ASSERT(sizeof(struct table_hdr) == 432, "table header is 432 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct table_hdr, magic) == 64, "format: table magic");
SHMDS__STATIC_ASSERT(offsetof(struct table_hdr, root) == 80, "format: table root");
SHMDS__STATIC_ASSERT(offsetof(struct table_hdr, prev) == 88, "format: table prev");
SHMDS__STATIC_ASSERT(offsetof(struct table_hdr, state) == 112, "format: table state");
SHMDS__STATIC_ASSERT(offsetof(struct table_hdr, name) == 128, "format: table name");
SHMDS__STATIC_ASSERT(offsetof(struct table_hdr, builds) == 176, "format: build records");

struct tver {
    /* What every lookup reads: the first cache line. */
    uint64_t magic;     /* VER_MAGIC */
    uint64_t nslots;    /* a power of two, 8 .. 2^40 */
    uint64_t data_len;  /* bytes of records, a multiple of 8 */
    uint64_t seed;      /* the hash seed of this version */
    uint32_t max_probe; /* longest probe sequence, 1 .. nslots */
    uint32_t skew;      /* bytes between the slots and the records (< 64) */
    uint64_t version;   /* 1, 2, ...: stored before the swap */
    uint64_t table;     /* its table's header offset */
    uint64_t count;     /* pairs (nonempty slots, records) */
    /* Cold. */
    uint64_t published_ns;
    uint8_t pad[56];
};
SHMDS__STATIC_ASSERT(sizeof(struct tver) == 128, "version header is 128 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct tver, skew) == 36, "format: version skew");
SHMDS__STATIC_ASSERT(offsetof(struct tver, version) == 40, "format: version number");
SHMDS__STATIC_ASSERT(offsetof(struct tver, count) == 56, "format: version count");

#define REC_HDR 8u
#define LINE 64u /* the cache line records are laid out for */
#define SLOT_OFF_MASK ((UINT64_C(1) << 48) - 1)
#define NSLOTS_MAX (UINT64_C(1) << 40)
#define DATA_MAX (UINT64_C(1) << 50)
#define HDR_ALLOC (sizeof(struct table_hdr))

static inline uint64_t rec_size(uint64_t klen, uint64_t vlen)
{
    return (REC_HDR + klen + vlen + 7) & ~UINT64_C(7);
}

static inline uint32_t rd32(const unsigned char *p)
{
    return __atomic_load_n((const uint32_t *)(const void *)p, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------
 * Handles
 * ------------------------------------------------------------------------ */

/* A version's facts, read once from its header and checked. */
struct geo {
    const uint64_t *slots;
    const unsigned char *data;
    uint64_t mask, data_len, seed, version, count, off;
    uint64_t bytes; /* the version's extent: header, slots, skew, records */
    uint32_t max_probe;
};

/* The facts of the version a handle last met, checked once (geo_of) and
 * reused by lookups while the table's root still names that version and
 * the version's seed is still the one cached (a block freed and allocated
 * again for a later version, at the same offset, has another seed). The
 * mapping never moves nor shrinks while the handle is open, so the checked
 * extent stays readable whatever the region's bytes become; a lookup still
 * checks every slot and record it reads against the cached bounds. Threads
 * may share a handle: `seq` is odd while one of them replaces the copy, and
 * a reader that sees it change checks the version afresh instead. */
struct vcache {
    uint64_t seq;
    struct geo g;
};

struct shmds_table {
    shmds_region *r;
    shmds_off_t off;
    struct table_hdr *h;
    char name[SHMDS_ROOT_NAME_MAX + 1]; /* opened by (shmds__obj_destroy) */
    struct vcache vc;
};

struct shmds_table_builder {
    shmds_table t;          /* the table it will publish to */
    uint64_t base;          /* the version current when it began */
    uint64_t n;             /* records added */
    struct shmds__buf recs; /* records, laid out as in a version */
};

/* Check the version at `root` (an offset read from the table's header) and
 * fill *g from one read of each field. SHMDS_ECORRUPT on any mismatch. */
static SHMDS__INLINE int geo_of(const shmds_table *t, uint64_t root, struct geo *g)
{
    const struct tver *v = shmds__ptr_chk(t->r, root, sizeof *v, 16);
    if (v == NULL)
        return SHMDS_ECORRUPT;
    uint64_t magic = GET(&v->magic), nslots = GET(&v->nslots), dlen = GET(&v->data_len);
    uint64_t count = GET(&v->count), table = GET(&v->table);
    uint32_t maxp = GET(&v->max_probe), skew = GET(&v->skew);
    if (magic != VER_MAGIC || table != t->off || nslots < 8 || nslots > NSLOTS_MAX ||
        (nslots & (nslots - 1)) != 0 || dlen > DATA_MAX || dlen % 8 != 0 || count >= nslots ||
        maxp == 0 || maxp > nslots || count * REC_HDR > dlen || skew >= LINE || skew % 8 != 0)
        return SHMDS_ECORRUPT;
    uint64_t total = sizeof *v + nslots * 8 + skew + dlen;
    if (!shmds__off_ok(t->r, root, total, 16))
        return SHMDS_ECORRUPT;
    g->slots = (const uint64_t *)(const void *)((const unsigned char *)v + sizeof *v);
    g->data = (const unsigned char *)(g->slots + nslots) + skew;
    g->bytes = total;
    g->mask = nslots - 1;
    g->data_len = dlen;
    g->seed = GET(&v->seed);
    g->version = GET(&v->version);
    g->count = count;
    g->max_probe = maxp;
    g->off = root;
    return 0;
}

/* The record a slot names: its offset in the data, checked (klen/vlen out).
 * A slot's offset field is (offset / 8 + 1): 0 wraps to past every record. */
static SHMDS__INLINE int slot_rec(const struct geo *g, uint64_t s, uint64_t *at, uint32_t *kl,
                                  uint32_t *vl)
{
    uint64_t w = (s & SLOT_OFF_MASK) - 1;
    if (w >= g->data_len / 8)
        return SHMDS_ECORRUPT;
    uint64_t a = w * 8;
    uint32_t k = rd32(g->data + a), v = rd32(g->data + a + 4);
    if ((uint64_t)k + v > g->data_len - a - REC_HDR)
        return SHMDS_ECORRUPT;
    *at = a;
    *kl = k;
    *vl = v;
    return 0;
}

/* Find `key` in the version g: 0 with *at (the record's offset in the
 * data) and *vlen, -ENOENT, SHMDS_ECORRUPT. Reads each slot and length
 * word once; a slot whose tag differs costs no read of its record. */
static SHMDS__INLINE int find(const struct geo *g, const void *key, size_t klen, uint64_t *at,
                              uint32_t *vlen)
{
    uint64_t h = shmds__hash(g->seed, key, klen);
    uint64_t tag = h >> 48, i = h & g->mask;
    for (uint32_t p = 0; p < g->max_probe; p++, i = (i + 1) & g->mask) {
        uint64_t s = GET(&g->slots[i]);
        if (s == 0)
            return -ENOENT;
        if ((s >> 48) != tag)
            continue;
        uint64_t a;
        uint32_t kl, vl;
        int rc = slot_rec(g, s, &a, &kl, &vl);
        if (rc != 0)
            return rc;
        if (kl == klen && shmds__bytes_eq(g->data + a + REC_HDR, key, klen)) {
            *at = a;
            *vlen = vl;
            return 0;
        }
    }
    return -ENOENT;
}

/* The current version (caller inside a guard or holding the lock): 0 with
 * *g, -ENOENT when none was published, SHMDS_ECORRUPT. Checks the whole
 * header (the cold callers: stat, walks, check, publish). */
static SHMDS__INLINE int current(const shmds_table *t, struct geo *g)
{
    uint64_t root = __atomic_load_n(&t->h->root, __ATOMIC_ACQUIRE);
    if (root == 0)
        return -ENOENT;
    return geo_of(t, root, g);
}

/* The first time a handle meets a version, map all of the version's pages
 * into this process in one call (MADV_POPULATE_READ, Linux 5.14): lookups
 * touch a version's pages at random, and each first touch would otherwise
 * be a page fault of its own (20 000 of them for 80 MB), in every worker,
 * after every publish. Best effort: where the call is refused, the pages
 * fault in one by one as before. */
static void prefault(const shmds_table *t, const struct geo *g)
{
#ifdef MADV_POPULATE_READ
    static long page;
    if (page <= 0)
        page = sysconf(_SC_PAGESIZE);
    if (page <= 0)
        return;
    uintptr_t a = (uintptr_t)(t->r->base + g->off) & ~(uintptr_t)(page - 1);
    uintptr_t e = (uintptr_t)(g->data + g->data_len);
    (void)madvise((void *)a, e - a, MADV_POPULATE_READ);
#else
    (void)t;
    (void)g;
#endif
}

/* Copy the handle's cached facts (torn if a thread replaces them
 * meanwhile: the caller keeps the copy only when the sequence agrees). */
static SHMDS__INLINE void cache_get(const struct vcache *c, struct geo *g)
{
    g->slots = GET(&c->g.slots);
    g->data = GET(&c->g.data);
    g->mask = GET(&c->g.mask);
    g->data_len = GET(&c->g.data_len);
    g->seed = GET(&c->g.seed);
    g->version = GET(&c->g.version);
    g->count = GET(&c->g.count);
    g->off = GET(&c->g.off);
    g->bytes = GET(&c->g.bytes);
    g->max_probe = GET(&c->g.max_probe);
}

/* Check the version at `root` afresh and, unless another thread is
 * replacing the handle's cache this instant, cache its facts; a version
 * the handle had not met is prefaulted. The slow path of lookup_geo(). */
static __attribute__((noinline)) int refresh(shmds_table *t, uint64_t root, struct geo *g)
{
    int rc = geo_of(t, root, g);
    if (rc != 0)
        return rc;
    struct vcache *c = &t->vc;
    uint64_t s = __atomic_load_n(&c->seq, __ATOMIC_RELAXED);
    if ((s & 1) != 0 ||
        !__atomic_compare_exchange_n(&c->seq, &s, s + 1, false, __ATOMIC_RELAXED,
                                     __ATOMIC_RELAXED))
        return 0;
    __atomic_thread_fence(__ATOMIC_RELEASE); /* the odd word before the data */
    bool met = GET(&c->g.off) == g->off && GET(&c->g.seed) == g->seed;
    __atomic_store_n(&c->g.slots, g->slots, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.data, g->data, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.mask, g->mask, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.data_len, g->data_len, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.seed, g->seed, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.version, g->version, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.count, g->count, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.off, g->off, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.bytes, g->bytes, __ATOMIC_RELAXED);
    __atomic_store_n(&c->g.max_probe, g->max_probe, __ATOMIC_RELAXED);
    shmds__seq_write_end(&c->seq);
    if (!met)
        prefault(t, g);
    return 0;
}

/* The current version for a lookup (caller inside a guard): the handle's
 * cached facts when the root names the cached version, else refresh().
 * Cost on the fast path: the root, the version's seed and the copy. */
static SHMDS__INLINE int lookup_geo(shmds_table *t, struct geo *g)
{
    uint64_t root = __atomic_load_n(&t->h->root, __ATOMIC_ACQUIRE);
    if (root == 0)
        return -ENOENT;
    uint64_t s = shmds__seq_read_begin(&t->vc.seq);
    cache_get(&t->vc, g);
    /* The cached extent was checked against the mapping: the seed's word
     * is readable whenever root is the cached offset. */
    if (shmds__likely(shmds__seq_read_ok(&t->vc.seq, s) && g->off == root &&
                      GET(&((const struct tver *)(const void *)(t->r->base + root))->seed) ==
                          g->seed))
        return 0;
    struct geo fresh; /* so that *g need not live in memory on the fast path */
    int rc = refresh(t, root, &fresh);
    if (rc == 0)
        *g = fresh;
    return rc;
}

/* ---------------------------------------------------------------------------
 * The lock and the repair
 * ------------------------------------------------------------------------ */

/* Finish what a dead (or failed) publisher left, under the lock; see the
 * top of the file. Idempotent; each step one store or one logged commit. */
static int settle(shmds_table *t)
{
    SHMDS_ASSERT(shmds__mutex_held(&t->h->lock), "the table lock serialises its repair");
    struct table_hdr *h = t->h;
    shmds_region *r = t->r;
    int rc;
    uint64_t root = GET(&h->root), prev = GET(&h->prev);
    if (prev != 0) {
        /* A dead publisher may have died inside the retire of prev: let
         * guard.c finish it, which leaves prev 0 (retired) or the block. */
        if ((rc = shmds__guard_settle(r)) != 0)
            return rc;
        prev = GET(&h->prev);
    }
    if (prev != 0) {
        if (prev == root)
            PUT(&h->prev, 0); /* died before the swap */
        else if ((rc = shmds__guard_retire(r, &h->prev)) != 0)
            return rc; /* died after it */
    }
    bool settled = false;
    for (unsigned i = 0; i < SHMDS_TABLE_BUILDS_MAX; i++) {
        struct build_rec *b = &h->builds[i];
        uint32_t pid = GET(&b->pid);
        if (pid == 0)
            continue;
        if (root != 0 && GET(&b->block) == root)
            PUT(&b->block, 0); /* swapped, not yet handed over */
        if (shmds__proc_alive(pid, GET(&b->start)))
            continue;
        /* A dead builder: it may have died inside the allocator's commit
         * that fills its slot. */
        if (!settled && (rc = shmds__alloc_settle(r)) != 0)
            return rc;
        settled = true;
        if ((rc = shmds__free_from(r, &b->block)) != 0)
            return rc == -EINVAL ? SHMDS_ECORRUPT : rc; /* not a block */
        SHMDS_FAULT("table.reclaim.freed");
        PUT(&b->pid, 0);
        PUT(&h->reclaimed, GET(&h->reclaimed) + 1);
    }
    return 0;
}

static int table_repair(void *arg)
{
    return settle(arg);
}

/* Take the table's lock and settle. -EIDRM (lock not held) when the table
 * is destroyed or being destroyed and `dying_ok` is false. */
static int table_lock(shmds_table *t, bool dying_ok)
{
    int rc = shmds__writable(t->r);
    if (rc != 0)
        return rc;
    struct table_hdr *h = t->h;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != TABLE_MAGIC)
        return -EIDRM;
    rc = shmds__lock(t->r, &h->lock, table_repair, t);
    if (rc < 0)
        return rc;
    rc = settle(t);
    uint32_t st = GET(&h->state);
    if (rc == 0 && (GET(&h->magic) != TABLE_MAGIC || (st == STATE_DYING && !dying_ok)))
        rc = -EIDRM;
    if (rc == 0 && st != STATE_LIVE && st != STATE_DYING)
        rc = SHMDS_ECORRUPT;
    if (rc != 0)
        shmds_mutex_unlock(&h->lock);
    return rc;
}

static void table_unlock(shmds_table *t)
{
    shmds_mutex_unlock(&t->h->lock);
}

/* The version number of the root (0: none), lock held. */
static int root_version(shmds_table *t, uint64_t *version)
{
    struct geo g;
    int rc = current(t, &g);
    *version = rc == 0 ? g.version : 0;
    return rc == -ENOENT ? 0 : rc;
}

/* ---------------------------------------------------------------------------
 * Objects: create, attach, teardown, check
 * ------------------------------------------------------------------------ */

static int table_init(shmds_region *r, shmds_off_t off, shmds_off_t block, void *arg)
{
    const char *name = arg;
    struct table_hdr *h = shmds__ptr_chk(r, off, sizeof *h, 64);
    if (h == NULL)
        return SHMDS_ECORRUPT;
    int rc = shmds_mutex_init(&h->lock);
    if (rc != 0)
        return rc;
    h->block = block;
    h->state = STATE_LIVE;
    memcpy(h->name, name, strlen(name));
    __atomic_store_n(&h->magic, TABLE_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

static int table_attach(shmds_region *r, shmds_off_t off, const char *name, void **out)
{
    struct table_hdr *h = shmds__ptr_chk(r, off, sizeof *h, 64);
    if (h == NULL || __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != TABLE_MAGIC ||
        GET(&h->block) > off || off - GET(&h->block) >= 64 ||
        (name != NULL && strncmp(h->name, name, sizeof h->name) != 0))
        return SHMDS_ECORRUPT;
    shmds_table *t = malloc(sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    *t = (shmds_table){.r = r, .off = off, .h = h};
    if (name != NULL)
        memcpy(t->name, name, strlen(name) + 1);
    *out = t;
    return 0;
}

/* Retire the current version, free every dead or idle build record's
 * block and clear the magic: the object layer's teardown. -EBUSY while a
 * live builder is publishing (its block is in its hands). Idempotent. */
static int table_teardown(shmds_table *t)
{
    struct table_hdr *h = t->h;
    int rc = table_lock(t, true);
    if (rc == -EIDRM)
        return 0;
    if (rc != 0)
        return rc;
    for (unsigned i = 0; i < SHMDS_TABLE_BUILDS_MAX && rc == 0; i++)
        if (GET(&h->builds[i].pid) != 0)
            rc = -EBUSY; /* settle() freed every dead builder's */
    if (rc == 0) {
        PUT(&h->state, STATE_DYING);
        SHMDS_FAULT("table.destroy.marked");
        rc = shmds__guard_retire(t->r, &h->root);
    }
    if (rc == 0) {
        SHMDS_FAULT("table.destroy.retired");
        PUT(&h->magic, 0);
    }
    table_unlock(t);
    return rc;
}

static int table_teardown_at(shmds_region *r, shmds_off_t off)
{
    struct table_hdr *h = shmds__ptr_chk(r, off, sizeof *h, 64);
    if (h == NULL)
        return SHMDS_ECORRUPT;
    shmds_table t = {.r = r, .off = off, .h = h};
    return table_teardown(&t);
}

static int table_check_at(shmds_region *r, shmds_off_t off)
{
    void *t;
    int rc = table_attach(r, off, NULL, &t);
    if (rc != 0)
        return rc;
    rc = shmds_table_check(t);
    free(t);
    return rc;
}

/* Take the lock: its settle frees dead builders' blocks. */
static int table_settle_at(shmds_region *r, shmds_off_t off)
{
    void *t;
    int rc = table_attach(r, off, NULL, &t);
    if (rc != 0)
        return rc;
    rc = table_lock(t, true);
    if (rc == 0)
        table_unlock(t);
    free(t);
    return rc == -EIDRM ? 0 : rc;
}

const struct shmds__obj_ops shmds__table_ops = {SHMDS_TYPE_TABLE, table_attach,
                                                table_teardown_at, table_check_at,
                                                table_settle_at};

SHMDS_API int shmds_table_open(shmds_region *r, const char *name, shmds_table **out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    void *t;
    int rc = shmds__obj_open(r, &shmds__table_ops, name, &t);
    if (rc == 0)
        *out = t;
    return rc;
}

SHMDS_API void shmds_table_close(shmds_table *t)
{
    free(t);
}

SHMDS_API int shmds_table_destroy(shmds_table *t)
{
    if (t == NULL)
        return -EINVAL;
    int rc = shmds__writable(t->r);
    if (rc == 0 && __atomic_load_n(&t->h->magic, __ATOMIC_ACQUIRE) != TABLE_MAGIC)
        rc = -EIDRM;
    if (rc == 0)
        rc = shmds__obj_destroy(t->r, &shmds__table_ops, t->name, t->off);
    free(t);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Building and publishing
 * ------------------------------------------------------------------------ */

SHMDS_API int shmds_table_build(shmds_region *r, const char *name, uint64_t expected,
                                shmds_table_builder **out)
{
    if (r == NULL || out == NULL || !shmds__obj_name_ok(name))
        return -EINVAL;
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    void *t = NULL;
    /* Open, or create; a create that loses a race opens the winner's. */
    for (int tries = 0; tries < 3; tries++) {
        rc = shmds__obj_open(r, &shmds__table_ops, name, &t);
        if (rc != -ENOENT)
            break;
        rc = shmds__obj_create_attach(r, &shmds__table_ops, name, HDR_ALLOC, table_init,
                                      (void *)name, &t);
        if (rc != -EEXIST)
            break;
    }
    if (rc != 0)
        return rc;
    shmds_table_builder *b = calloc(1, sizeof *b);
    if (b == NULL) {
        free(t);
        return -ENOMEM;
    }
    b->t = *(shmds_table *)t;
    free(t);
    if ((rc = table_lock(&b->t, false)) == 0) {
        rc = root_version(&b->t, &b->base);
        table_unlock(&b->t);
    }
    /* The hint: room for `expected` records of 32 bytes, within reason. */
    if (rc == 0 && expected > 0) {
        size_t want = expected < (SIZE_MAX >> 6) ? (size_t)expected * 32 : 0;
        if (want > 0 && (b->recs.p = malloc(want)) != NULL)
            b->recs.cap = want;
    }
    if (rc != 0) {
        shmds_table_abort(b);
        return rc;
    }
    *out = b;
    return 0;
}

SHMDS_API int shmds_table_add(shmds_table_builder *b, const void *key, size_t klen,
                              const void *val, size_t vlen)
{
    if (b == NULL || key == NULL || klen == 0 || (val == NULL && vlen > 0))
        return -EINVAL;
    if (klen > SHMDS_TABLE_KEY_MAX || vlen > SHMDS_TABLE_VAL_MAX ||
        (uint64_t)klen + vlen > DATA_MAX)
        return -E2BIG;
    size_t len = b->recs.len;
    uint32_t lens[2] = {(uint32_t)klen, (uint32_t)vlen};
    static const unsigned char zero[8];
    size_t pad = (size_t)(rec_size(klen, vlen) - REC_HDR - klen - vlen);
    int rc = shmds__buf_put(&b->recs, lens, sizeof lens);
    if (rc == 0)
        rc = shmds__buf_put(&b->recs, key, klen);
    if (rc == 0 && vlen > 0)
        rc = shmds__buf_put(&b->recs, val, vlen);
    if (rc == 0)
        rc = shmds__buf_put(&b->recs, zero, pad);
    if (rc != 0) {
        b->recs.len = len;
        return rc;
    }
    b->n++;
    return 0;
}

SHMDS_API void shmds_table_abort(shmds_table_builder *b)
{
    if (b == NULL)
        return;
    free(b->recs.p);
    free(b);
}

/* The index of a version, built in process memory: which record (by
 * ordinal) each slot holds, and where each live record will go. */
struct plan {
    uint64_t nslots, count, data_len, seed;
    uint32_t max_probe;
    uint32_t *idx;  /* [nslots]: ordinal + 1, 0 empty */
    uint64_t *hash; /* [n] */
    uint64_t *pos;  /* [n]: offset in the builder's buffer, then in the
                     * version's data; UINT64_MAX: replaced by a later add */
};

static void plan_free(struct plan *p)
{
    free(p->idx);
    free(p->hash);
    free(p->pos);
}

static int plan_make(const shmds_table_builder *b, struct plan *p)
{
    uint64_t n = b->n;
    if (n >= UINT32_MAX)
        return -E2BIG; /* ordinals are 32-bit */
    uint64_t want = n + n / 2 + 1, ns = 8;
    while (ns < want)
        ns *= 2;
    if (ns > NSLOTS_MAX)
        return -E2BIG;
    *p = (struct plan){.nslots = ns, .seed = shmds__random_seed()};
    p->idx = calloc(ns, sizeof *p->idx);
    p->hash = malloc((n ? n : 1) * sizeof *p->hash);
    p->pos = malloc((n ? n : 1) * sizeof *p->pos);
    if (p->idx == NULL || p->hash == NULL || p->pos == NULL) {
        plan_free(p);
        return -ENOMEM;
    }
    const unsigned char *buf = b->recs.p;
    uint64_t at = 0, mask = ns - 1;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t kl, vl;
        memcpy(&kl, buf + at, 4);
        memcpy(&vl, buf + at + 4, 4);
        const unsigned char *key = buf + at + REC_HDR;
        uint64_t h = shmds__hash(p->seed, key, kl);
        p->hash[i] = h;
        p->pos[i] = at;
        uint64_t j = h & mask;
        uint32_t probe = 1;
        for (;; j = (j + 1) & mask, probe++) {
            uint32_t o = p->idx[j];
            if (o == 0) {
                p->count++;
                break;
            }
            const unsigned char *ok = buf + p->pos[o - 1];
            uint32_t okl;
            memcpy(&okl, ok, 4);
            if (p->hash[o - 1] == h && okl == kl && memcmp(ok + REC_HDR, key, kl) == 0) {
                p->pos[o - 1] = UINT64_MAX; /* replaced */
                break;
            }
        }
        p->idx[j] = (uint32_t)(i + 1);
        if (probe > p->max_probe)
            p->max_probe = probe;
        at += rec_size(kl, vl);
    }
    if (p->max_probe == 0)
        p->max_probe = 1;
    /* Where each live record goes in the version's data. */
    uint64_t d = 0;
    at = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint32_t kl, vl;
        memcpy(&kl, buf + at, 4);
        memcpy(&vl, buf + at + 4, 4);
        if (p->pos[i] != UINT64_MAX) {
            uint64_t sz = rec_size(kl, vl);
            if (sz <= LINE && d % LINE + sz > LINE)
                d += LINE - d % LINE; /* a pad: see the top of the file */
            p->pos[i] = d;
            d += sz;
        }
        at += rec_size(kl, vl);
    }
    p->data_len = d;
    if (d > DATA_MAX) {
        plan_free(p);
        return -E2BIG;
    }
    return 0;
}

/* The skew that puts the records of a version at region offset `off`
 * with `nslots` slots on a cache line (mappings are page-aligned, so it is
 * the same in every process). */
static uint32_t skew_at(uint64_t off, uint64_t nslots)
{
    uint64_t end = off + sizeof(struct tver) + nslots * 8;
    return (uint32_t)((LINE - end % LINE) % LINE);
}

/* Write the version at region offset `off` into its block (ours alone
 * until the swap). */
static void fill(const shmds_table_builder *b, const struct plan *p, uint64_t off,
                 unsigned char *blk)
{
    struct tver *v = (struct tver *)(void *)blk;
    uint64_t *slots = (uint64_t *)(void *)(blk + sizeof *v);
    uint32_t skew = skew_at(off, p->nslots);
    unsigned char *data = (unsigned char *)(slots + p->nslots) + skew;
    const unsigned char *buf = b->recs.p;
    uint64_t at = 0, end = 0;
    for (uint64_t i = 0; i < b->n; i++) {
        uint32_t kl, vl;
        memcpy(&kl, buf + at, 4);
        memcpy(&vl, buf + at + 4, 4);
        uint64_t sz = rec_size(kl, vl);
        if (p->pos[i] != UINT64_MAX) {
            if (p->pos[i] > end) { /* a pad before it */
                uint32_t pad[2] = {0, (uint32_t)(p->pos[i] - end - REC_HDR)};
                memset(data + end, 0, p->pos[i] - end);
                memcpy(data + end, pad, sizeof pad);
            }
            memcpy(data + p->pos[i], buf + at, sz);
            end = p->pos[i] + sz;
        }
        at += sz;
    }
    for (uint64_t j = 0; j < p->nslots; j++) {
        uint32_t o = p->idx[j];
        slots[j] = o == 0 ? 0 : (p->hash[o - 1] >> 48) << 48 | (p->pos[o - 1] / 8 + 1);
    }
    *v = (struct tver){.magic = VER_MAGIC,
                       .nslots = p->nslots,
                       .data_len = p->data_len,
                       .seed = p->seed,
                       .max_probe = p->max_probe,
                       .skew = skew,
                       .table = b->t.off,
                       .count = p->count};
}

/* Claim a free build record for this process (lock held): *rec. */
static int claim(shmds_table_builder *b, struct build_rec **rec)
{
    struct table_hdr *h = b->t.h;
    for (unsigned i = 0; i < SHMDS_TABLE_BUILDS_MAX; i++) {
        struct build_rec *x = &h->builds[i];
        if (GET(&x->pid) != 0)
            continue;
        if (GET(&x->block) != 0)
            return SHMDS_ECORRUPT; /* a free record owns nothing */
        PUT(&x->start, shmds__self_start());
        PUT(&x->base, b->base);
        PUT(&x->pid, shmds__self_pid());
        *rec = x;
        return 0;
    }
    return -EBUSY;
}

/* Free our record's block and the record (lock held). */
static int unclaim(shmds_table *t, struct build_rec *x)
{
    int rc = shmds__free_from(t->r, &x->block);
    if (rc == 0)
        PUT(&x->pid, 0);
    return rc;
}

/* The swap (lock held, the version filled in our record's block). */
static int swap(shmds_table_builder *b, struct build_rec *x, uint64_t *version)
{
    struct table_hdr *h = b->t.h;
    uint64_t cur;
    int rc = root_version(&b->t, &cur);
    if (rc != 0)
        return rc;
    if (cur != b->base)
        return SHMDS_EVERSION;
    uint64_t blk = GET(&x->block);
    struct tver *v = shmds__ptr_chk(b->t.r, blk, sizeof *v, 16);
    if (v == NULL)
        return SHMDS_ECORRUPT;
    v->version = cur + 1;
    v->published_ns = shmds__unix_now_ns();
    PUT(&h->prev, GET(&h->root));
    SHMDS_FAULT("table.publish.prev_logged");
    PUT(&h->root, blk); /* the commit point */
    SHMDS_FAULT("table.publish.swapped");
    PUT(&x->block, 0);
    SHMDS_FAULT("table.publish.handed_over");
    if ((rc = shmds__guard_retire(b->t.r, &h->prev)) != 0)
        return rc; /* published; the next locker retires prev */
    SHMDS_FAULT("table.publish.retired");
    PUT(&h->publishes, GET(&h->publishes) + 1);
    PUT(&x->pid, 0);
    *version = cur + 1;
    return 0;
}

SHMDS_API int shmds_table_publish(shmds_table_builder *b, uint64_t *version)
{
    if (b == NULL)
        return -EINVAL;
    shmds_table *t = &b->t;
    struct plan p;
    int rc = plan_make(b, &p);
    if (rc != 0) {
        shmds_table_abort(b);
        return rc;
    }
    /* Room for any skew (the block's place is known once allocated). */
    uint64_t total = sizeof(struct tver) + p.nslots * 8 + (LINE - 16) + p.data_len;
    struct build_rec *x = NULL;
    if ((rc = table_lock(t, false)) == 0) {
        rc = claim(b, &x);
        table_unlock(t);
    }
    SHMDS_FAULT("table.publish.claimed");
    if (rc == 0 && (rc = shmds__alloc_into(t->r, total, &x->block)) == 0) {
        SHMDS_FAULT("table.publish.allocated");
        uint64_t off = GET(&x->block);
        unsigned char *blk = shmds__ptr_chk(t->r, off, total, 16);
        if (blk == NULL)
            rc = SHMDS_ECORRUPT;
        else
            fill(b, &p, off, blk);
        SHMDS_FAULT("table.publish.filled");
    }
    plan_free(&p);
    if (x != NULL) {
        /* Take the lock even when the table is being destroyed: our record
         * must be given up either way. */
        int lrc = table_lock(t, true);
        if (lrc == 0) {
            uint64_t v = 0;
            if (rc == 0 && GET(&t->h->state) != STATE_LIVE)
                rc = -EIDRM;
            if (rc == 0)
                rc = swap(b, x, &v);
            if (rc != 0 && GET(&x->pid) == shmds__self_pid() && GET(&x->block) != t->h->root)
                (void)unclaim(t, x);
            table_unlock(t);
            if (rc == 0 && version != NULL)
                *version = v;
        } else if (rc == 0) {
            rc = lrc; /* our record is freed once we have exited */
        }
    }
    shmds_table_abort(b);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

SHMDS_API int shmds_table_get_ref(shmds_table *t, shmds_guard *g, const void *key,
                                  size_t klen, const void **val, size_t *vlen,
                                  uint64_t *version)
{
    if (t == NULL || g == NULL || key == NULL || klen == 0 || val == NULL || vlen == NULL)
        return -EINVAL;
    struct geo v;
    int rc = lookup_geo(t, &v);
    if (version != NULL)
        *version = rc == 0 ? v.version : 0;
    if (rc != 0)
        return rc;
    uint64_t at;
    uint32_t vl;
    if (klen > SHMDS_TABLE_KEY_MAX)
        return -ENOENT;
    if ((rc = find(&v, key, klen, &at, &vl)) != 0)
        return rc;
    *vlen = vl;
    *val = v.data + at + REC_HDR + klen;
    return 0;
}

SHMDS_API int shmds_table_get(shmds_table *t, const void *key, size_t klen, void *buf,
                              size_t cap, size_t *vlen)
{
    if (t == NULL || key == NULL || klen == 0 || (buf == NULL && cap > 0))
        return -EINVAL;
    shmds_guard *g;
    int rc = shmds_guard_enter(t->r, &g);
    if (rc != 0)
        return rc;
    const void *v;
    size_t n;
    rc = shmds_table_get_ref(t, g, key, klen, &v, &n, NULL);
    if (rc == 0) {
        if (vlen != NULL)
            *vlen = n;
        if (n > cap)
            rc = -ENOBUFS;
        else if (n > 0)
            memcpy(buf, v, n);
    }
    shmds_guard_leave(g);
    return rc;
}

SHMDS_API int shmds_table_stat(shmds_table *t, shmds_table_stats *st)
{
    if (t == NULL || st == NULL)
        return -EINVAL;
    shmds_guard *g;
    int rc = shmds_guard_enter(t->r, &g);
    if (rc != 0)
        return rc;
    struct geo v;
    *st = (shmds_table_stats){0};
    rc = current(t, &v);
    if (rc == 0) {
        const struct tver *tv = (const void *)(t->r->base + v.off);
        st->version = v.version;
        st->count = v.count;
        st->slots = v.mask + 1;
        st->data_bytes = v.data_len;
        st->bytes = v.bytes;
        st->max_probe = v.max_probe;
        st->published_ns = GET(&tv->published_ns);
    }
    shmds_guard_leave(g);
    for (unsigned i = 0; i < SHMDS_TABLE_BUILDS_MAX; i++)
        st->builds += GET(&t->h->builds[i].pid) != 0;
    st->publishes = GET(&t->h->publishes);
    st->reclaimed = GET(&t->h->reclaimed);
    return rc == -ENOENT ? 0 : rc;
}

SHMDS_API int shmds_table_count(shmds_table *t, uint64_t *count)
{
    if (t == NULL || count == NULL)
        return -EINVAL;
    shmds_table_stats st;
    int rc = shmds_table_stat(t, &st);
    if (rc == 0)
        *count = st.count;
    return rc;
}

/* Walk the records of version v in order: fn per record (fn NULL: check
 * each against the index instead). Bounded by the data's length. */
static int walk(const struct geo *v, shmds_table_foreach_fn *fn, void *arg)
{
    uint64_t at = 0, n = 0;
    while (at < v->data_len) {
        if (v->data_len - at < REC_HDR || ++n > v->count)
            return SHMDS_ECORRUPT;
        uint32_t kl = rd32(v->data + at), vl = rd32(v->data + at + 4);
        if (kl == 0 && vl < LINE - REC_HDR && vl % 8 == 0 && vl <= v->data_len - at - REC_HDR) {
            n--; /* a pad */
            at += REC_HDR + vl;
            continue;
        }
        if (kl == 0 || (uint64_t)kl + vl > v->data_len - at - REC_HDR)
            return SHMDS_ECORRUPT;
        const unsigned char *k = v->data + at + REC_HDR;
        int rc;
        if (fn != NULL) {
            if ((rc = fn(k, kl, k + kl, vl, arg)) != 0)
                return rc;
        } else {
            uint64_t found;
            uint32_t fvl;
            if ((rc = find(v, k, kl, &found, &fvl)) != 0 || found != at)
                return SHMDS_ECORRUPT; /* unreachable, or a duplicate */
        }
        at += rec_size(kl, vl);
    }
    return n == v->count ? 0 : SHMDS_ECORRUPT;
}

SHMDS_API int shmds_table_foreach(shmds_table *t, shmds_table_foreach_fn *fn, void *arg,
                                  uint64_t *version)
{
    if (t == NULL || fn == NULL)
        return -EINVAL;
    shmds_guard *g;
    int rc = shmds_guard_enter(t->r, &g);
    if (rc != 0)
        return rc;
    struct geo v;
    rc = current(t, &v);
    if (version != NULL)
        *version = rc == 0 ? v.version : 0;
    if (rc == 0)
        rc = walk(&v, fn, arg);
    shmds_guard_leave(g);
    return rc == -ENOENT ? 0 : rc;
}

/* Check the version v: the block is a live allocation that holds it, every
 * record is found by its key, the slots in use are exactly the records. */
static int check_version(shmds_table *t, const struct geo *v)
{
    uint64_t usable;
    if (shmds__alloc_block_live(t->r, v->off, &usable) != 0 ||
        usable < v->bytes)
        return SHMDS_ECORRUPT;
    uint64_t used = 0;
    for (uint64_t j = 0; j <= v->mask; j++) {
        uint64_t s = GET(&v->slots[j]);
        if (s == 0)
            continue;
        uint64_t at;
        uint32_t kl, vl;
        if (slot_rec(v, s, &at, &kl, &vl) != 0)
            return SHMDS_ECORRUPT;
        used++;
    }
    if (used != v->count)
        return SHMDS_ECORRUPT;
    return walk(v, NULL, NULL);
}

SHMDS_API int shmds_table_check(shmds_table *t)
{
    if (t == NULL)
        return -EINVAL;
    struct table_hdr *h = t->h;
    bool locked = false;
    int rc = 0;
    if (!shmds__rdonly(t->r)) {
        if ((rc = table_lock(t, true)) != 0)
            return rc;
        locked = true;
    } else if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != TABLE_MAGIC) {
        return -EIDRM;
    }
    uint32_t st = GET(&h->state);
    if ((st != STATE_LIVE && st != STATE_DYING) || memchr(h->name, 0, sizeof h->name) == NULL)
        rc = SHMDS_ECORRUPT;
    for (unsigned i = 0; i < SHMDS_TABLE_BUILDS_MAX && rc == 0; i++) {
        const struct build_rec *x = &h->builds[i];
        uint64_t blk = GET(&x->block);
        if (blk != 0 && (GET(&x->pid) == 0 || !shmds__off_ok(t->r, blk, 1, 16)))
            rc = SHMDS_ECORRUPT;
    }
    /* Holding the lock, no version can be retired under us; a read-only
     * check reads under a guard. */
    shmds_guard *g = NULL;
    if (rc == 0 && !locked)
        rc = shmds_guard_enter(t->r, &g);
    if (rc == 0) {
        struct geo v;
        rc = current(t, &v);
        if (rc == 0)
            rc = check_version(t, &v);
        else if (rc == -ENOENT)
            rc = 0;
        shmds_guard_leave(g);
    }
    if (locked)
        table_unlock(t);
    return rc;
}
