/*
 * Private declarations shared by the library's modules: the region header
 * layout, the process-local region handle, checked offset helpers, timing,
 * assertions and fault points. Never installed.
 */
#ifndef SHMDS_INTERNAL_H
#define SHMDS_INTERNAL_H

#include "config.h"

#include <errno.h>
#include <stdalign.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "shmds.h"

/* ---- assertions and checks ----
 * SHMDS_ASSERT(cond, why) states one of the library's own invariants (a
 * lock this process must hold, counts its own code keeps in step) with
 * the reason it must hold; it aborts with both in a --enable-debug build
 * and compiles away otherwise. Shared memory is untrusted input, so checks
 * on data read from a region are plain `if`s that stay in every build and
 * return SHMDS_ECORRUPT; never assert on them. */
#ifdef SHMDS_DEBUG
#include <assert.h>
#define SHMDS_ASSERT(cond, why) assert((cond) && (why))
#else
#define SHMDS_ASSERT(cond, why) ((void)0)
#endif

#define shmds__likely(x) __builtin_expect(!!(x), 1)
/* For the few functions of a lookup's hot path (the compiler keeps their
 * results in registers instead of a struct in memory). */
#define SHMDS__INLINE inline __attribute__((always_inline))
#define shmds__unlikely(x) __builtin_expect(!!(x), 0)

#define SHMDS__STATIC_ASSERT(cond, msg) _Static_assert(cond, msg)

/* A hint for busy-wait loops: let the sibling hyperthread run, save power. */
static inline void shmds__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#else
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
#endif
}

/* ---- fault points ----
 * SHMDS_FAULT("module.point") marks a place where a crash must be survivable.
 * In a --enable-fault-injection build the process SIGKILLs itself there when
 * the environment says so (see fault.c); otherwise it costs nothing. Point
 * names are string literals so tests can list them with grep. */
#ifdef SHMDS_FAULT_INJECTION
void shmds__fault(const char *point);
#define SHMDS_FAULT(point) shmds__fault(point)
#else
#define SHMDS_FAULT(point) ((void)0)
#endif

/* ---- the region header (offset 0, SHMDS_HEADER_SIZE bytes) ---- */

/* SHMDS_REGION_SIGNATURE ("SHMDSRG1") read as a little-endian 64-bit word. */
#define SHMDS__MAGIC UINT64_C(0x31475253444d4853)
#define SHMDS__CACHE_LINE 64
#define SHMDS__ALLOC_ROOT_BYTES 768

/* One directory entry (region.c, "Directory"). Entries live in the
 * directory's blocks in the heap and never move. */
struct shmds__root {
    char name[SHMDS_ROOT_NAME_MAX + 1];
    uint32_t type; /* 0: free slot; written last on set, first on delete */
    uint32_t owner_pid; /* 0: published; else pending, being created or
                         * destroyed by that process (region.c) */
    uint64_t off; /* a block start; the object's header is shmds__hdr_of(off) */
};
/* The directory's hash buckets: a name's bucket is its FNV-1a hash modulo
 * this; each bucket is a chain of blocks in the heap (region.c). */
#define SHMDS__DIR_BUCKETS 256u
SHMDS__STATIC_ASSERT(sizeof(struct shmds__root) == 64, "directory entry is 64 bytes");
SHMDS__STATIC_ASSERT(sizeof(shmds_mutex) == 64, "a mutex fills one cache line");

struct shmds__hdr {
    /* Immutable after creation; covered by `checksum`. */
    uint64_t magic; /* stored last at creation, with release order */
    uint32_t format;
    uint32_t hdr_size;
    uint64_t abi;
    uint64_t size;     /* the size it was created with */
    uint64_t heap_off;
    uint64_t max_size; /* the most it may grow to (page multiple, >= size) */
    uint64_t created_ns;
    uint32_t creator_pid;
    uint32_t creator_uid;
    uint32_t lock_timeout_ms;
    uint32_t dir_buckets; /* SHMDS__DIR_BUCKETS */
    uint64_t checksum; /* FNV-1a 64 of every byte before this field */
    /* Mutable. */
    uint64_t epoch;   /* bumped on every repair after a death */
    uint64_t dir_seq; /* seqlock over the directory: odd while a writer changes it */
    uint64_t cur_size; /* published size: the object is at least this long */
    uint64_t grow_to;  /* nonzero while a growth to that size is under way */
    uint32_t dir_names; /* directory entries taken (pending ones too) */
    uint32_t dir_slots; /* entries the directory's blocks hold */
    uint8_t pad0[128 - 120];
    shmds_mutex dir_lock;
    shmds_mutex alloc_lock;
    /* The allocator's root, opaque to the region (alloc.c); zero at creation. */
    alignas(SHMDS__CACHE_LINE) uint8_t alloc_root[SHMDS__ALLOC_ROOT_BYTES];
    /* The first block of each bucket's chain (0: none yet); allocator
     * slots, written by the commit that allocates the block. */
    uint64_t dir_heads[SHMDS__DIR_BUCKETS];
    shmds_mutex grow_lock; /* serialises growth (region.c) */
    /* Read guards (guard.c). */
    shmds_mutex retire_lock; /* serialises retirement and reclamation */
    uint64_t gepoch;         /* the global epoch, >= 1; its own line: readers load it */
    uint8_t pad1[56];
    uint64_t retire_head;    /* allocator slot: the first retire block */
    uint64_t retire_used;    /* records holding a block (a hint) */
    uint64_t rlog_op;        /* retire's intent log: 1 while a block moves */
    uint64_t rlog_src;       /*   the slot it leaves (region offset) */
    uint64_t rlog_blk;       /*   the block */
    uint64_t rlog_dst;       /*   the record's slot it goes to (region offset) */
    uint64_t retire_mark;    /* retire_used after the last reclamation (a hint) */
    uint64_t pad2;
    uint8_t reserved[SHMDS_HEADER_SIZE - 1024 - 8 * SHMDS__DIR_BUCKETS - 256];
};
SHMDS__STATIC_ASSERT(sizeof(struct shmds__hdr) == SHMDS_HEADER_SIZE, "header is one page");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, magic) == 0, "format: magic");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, format) == 8, "format: format word");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, abi) == 16, "format: abi stamp");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, size) == 24, "format: size");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, checksum) == 72, "format: checksum");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, epoch) == 80, "format: epoch");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, cur_size) == 96, "format: current size");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, grow_lock) == 3072, "format: grow lock");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, dir_lock) == 128, "format: dir lock");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, alloc_root) == 256, "format: alloc root");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, dir_names) == 112, "format: directory counts");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, dir_heads) == 1024, "format: directory");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, retire_lock) == 3136, "format: retire lock");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, gepoch) == 3200, "format: global epoch");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, retire_head) == 3264, "format: retire list");

/* ---- the process-local handle ---- */

/* Where one arena's parts are (alloc.c): arena 0's a function of the
 * handle's trusted heap bounds only, computed by the allocator on its first
 * use of the handle (geo_state); carved arenas' read from the heap root's
 * table and checked. */
struct shmds__heap_geo {
    uint64_t base;     /* the arena's header (its lock and root) */
    uint64_t ctl;      /* control block */
    uint64_t slbm;     /* uint32_t second-level bitmaps [fl_count] */
    uint64_t heads;    /* uint64_t heads [fl_count][SL_N] */
    uint64_t first;    /* first block header */
    uint64_t end;      /* sentinel header; the arena ends 16 bytes later (arena
                        * 0's follows the region's growth) */
    uint32_t fl_count; /* arena 0's: sized for the region's maximum */
    uint32_t pad;
    uint64_t carrier;  /* a carved arena's carrier block in arena 0; 0 for arena 0 */
};

/* Most arenas a heap can hold (alloc.c). */
#define SHMDS__ARENAS_MAX 8

struct shmds_region {
    /* Must match struct shmds_region_pub_ (region.h): the inline helpers
     * (asserted below). */
    unsigned char *base;
    uint64_t size; /* bytes this process maps; grows (shmds__region_follow) */
    /* Copied from the header once it was validated at open, and trusted from
     * then on: later writes to the shared header cannot move these bounds.
     * heap_end is where this process's mapping ends (it only grows, stored
     * atomically); heap_max where the region's maximum puts it. */
    uint64_t heap_off;
    uint64_t heap_end;
    uint64_t heap_max;
    uint64_t init_size; /* the size the region was created with */
    uint64_t max_size;  /* its maximum: the reservation at base, the
                         * allocator's classes (heap_max is below it only
                         * for an image attached from memory) */
    uint64_t map_calls; /* mmap calls made to follow growth (diagnostics) */
    uint32_t lock_timeout_ms;
    unsigned flags;
    int fd;
    pthread_mutex_t follow_lock; /* one thread of the process extends the mapping */
    struct shmds__hdr *hdr;
    /* The allocator's arenas (alloc.c): the table is filled on the
     * allocator's first use of the handle (geo_state 0, 1 being filled, 2
     * valid), and grows when arenas are carved. */
    uint32_t geo_state;
    uint32_t narenas;
    uint32_t arena_hint; /* the arena this handle allocated from last */
    uint32_t arena_full; /* arenas this handle found without room (bit i) */
    struct shmds__heap_geo arena[SHMDS__ARENAS_MAX];
    /* Read guards (guard.c): the reader table, mapped at open (NULL with
     * the error that kept it away in rt_err), this handle's guards. */
    struct shmds__rtab *rt;
    int rt_err;
    bool rt_private; /* calloc'd: a region attached from memory */
    pthread_mutex_t guard_mu;        /* guards the list */
    struct shmds_guard *guards;
    struct shmds_guard *gcache;      /* the guard given out last (atomic) */
    /* The handle's block cache (alloc.c): the user offset of its record in
     * the heap (0: none), the process that made it (a forked child's copy
     * of the handle does not use its parent's), an in-process spin lock over
     * the record's slots, and how many more frees go uncached before a
     * failed attempt to make a record is tried again. */
    uint64_t cache_off;
    uint32_t cache_pid;
    uint32_t cache_lock;
    uint32_t cache_retry;
    uint32_t cache_bn; /* where the next free of the record's batch is looked for first */
};

SHMDS__STATIC_ASSERT(offsetof(struct shmds_region, base) ==
                         offsetof(struct shmds_region_pub_, base),
                     "handle layout: base as in region.h");
SHMDS__STATIC_ASSERT(offsetof(struct shmds_region, size) ==
                         offsetof(struct shmds_region_pub_, size),
                     "handle layout: size as in region.h");

static inline bool shmds__rdonly(const shmds_region *r)
{
    return (r->flags & SHMDS_RDONLY) != 0;
}

/* ---- checked offsets ----
 * Every offset read from shared memory goes through one of these before it
 * is followed. */

/* The slow path of shmds__off_ok: the range ends past this process's
 * mapping. When it lies below the region's maximum and the region has
 * grown that far (its published size, checked against the object's),
 * extend the mapping in place and say yes (region.c). */
bool shmds__off_ok_slow(const shmds_region *r, shmds_off_t off, uint64_t len, uint64_t align);

/* True when [off, off+len) lies in the heap and off is a multiple of align
 * (a power of two). Overflow-safe. This is the hook of growth: an offset
 * past what this process maps takes the slow path, which follows the
 * region's growth; the fast path is the bounds compare it always was. */
static inline bool shmds__off_ok(const shmds_region *r, shmds_off_t off, uint64_t len,
                                 uint64_t align)
{
    uint64_t end = __atomic_load_n(&r->heap_end, __ATOMIC_RELAXED);
    if (shmds__likely(off >= r->heap_off && off <= end && len <= end - off))
        return (off & (align - 1)) == 0;
    return shmds__off_ok_slow(r, off, len, align);
}

/* Pointer for a checked [off, off+len), or NULL when the check fails
 * (the caller returns SHMDS_ECORRUPT). */
static inline void *shmds__ptr_chk(const shmds_region *r, shmds_off_t off, uint64_t len,
                                   uint64_t align)
{
    return shmds__off_ok(r, off, len, align) ? (void *)(r->base + off) : NULL;
}

/* ---- hashing keys (map.c, table.c) ---- */
#include <string.h>

static inline uint64_t shmds__rd64(const void *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* A 64-bit finaliser: every input bit moves every output bit. */
static inline uint64_t shmds__mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

/* 64-bit hash of a key under a per-structure random seed, 8 bytes a step;
 * all bits (the map uses the top ones, the table the bottom ones and a
 * tag from the top) are well mixed. */
static inline uint64_t shmds__hash(uint64_t seed, const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = seed ^ (len * UINT64_C(0x9e3779b97f4a7c15));
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    /* A key of 8 bytes or more: its tail is the top of its last word (the
     * same value the byte copy below makes, without a copy loop). */
    const unsigned char *end = p + len;
    bool whole = len >= 8;
#endif
    while (len >= 8) {
        h = (h ^ shmds__mix64(shmds__rd64(p))) * UINT64_C(0x9e3779b97f4a7c15);
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t t = 0;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        if (whole)
            t = shmds__rd64(end - 8) >> (64 - 8 * len);
        else
#endif
            memcpy(&t, p, len);
        h = (h ^ shmds__mix64(t ^ len)) * UINT64_C(0x9e3779b97f4a7c15);
    }
    return shmds__mix64(h);
}

/* Byte strings equal? Keys of 8 to 32 bytes (the common ones) compare a
 * word at a time, the last word overlapping, without a call. */
static inline bool shmds__bytes_eq(const unsigned char *a, const unsigned char *b, size_t n)
{
    if (n >= 8 && n <= 32) {
        uint64_t d = shmds__rd64(a + n - 8) ^ shmds__rd64(b + n - 8);
        for (size_t i = 0; i + 8 < n; i += 8)
            d |= shmds__rd64(a + i) ^ shmds__rd64(b + i);
        return d == 0;
    }
    return memcmp(a, b, n) == 0;
}

/* A random 64-bit seed (getrandom; the clock and pid when it fails). */
uint64_t shmds__random_seed(void);

/* ---- time ---- */

uint64_t shmds__now_ns(void);        /* CLOCK_MONOTONIC */
uint64_t shmds__unix_now_ns(void);   /* CLOCK_REALTIME */
/* CLOCK_MONOTONIC_COARSE: the time at the last timer tick, never ahead of
 * shmds__now_ns(), for a fraction of its cost (inline: lock fast paths). */
static inline uint64_t shmds__coarse_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
/* Absolute CLOCK_MONOTONIC time `ms` from now. */
struct timespec shmds__deadline(int ms);
/* Milliseconds left until `deadline_ns` (monotonic), at least 0. */
int shmds__ms_left(uint64_t deadline_ns);

/* ---- a growable buffer in process memory (util.c) ---- */
struct shmds__buf {
    unsigned char *p;
    size_t len, cap;
};
/* Append `len` bytes of `data`, growing by doubling: 0, or -ENOMEM when
 * memory is short or the size would overflow (nothing appended). */
int shmds__buf_put(struct shmds__buf *b, const void *data, size_t len);

/* ---- processes ---- */

/* The one liveness probe: true when no process `pid` exists (kill(pid, 0)
 * says ESRCH). 0 and values that are not pids are never gone. A pid reused
 * by an unrelated process reads as alive: what waits on it (a pending
 * entry, a claimed line) waits until that process exits too, so nothing is
 * ever taken from a live owner. */
bool shmds__proc_gone(uint32_t pid);
/* A process's start time (clock ticks since boot, from /proc) tells it from
 * a later process that got the same pid. 0 when unknown. */
uint64_t shmds__proc_start(uint32_t pid);
/* This process's start time (cached per pid; 0 if /proc cannot tell). */
uint64_t shmds__self_start(void);
/* The liveness probe for what records an owner's start time too (leases,
 * subscribers, SPSC claims): false when `pid` is certainly not the process
 * that recorded `start`: shmds__proc_gone, a zombie (killed, not yet
 * reaped), or a process with the same pid that started at another time
 * (`start` 0: not compared). Cost: kill(2) and a read of /proc/PID/stat. */
bool shmds__proc_alive(uint32_t pid, uint64_t start);
/* Sleep about a millisecond: the one backoff step of every wait for a
 * writer that may have died (after spinning and yielding). */
void shmds__nap_1ms(void);

/* ---- the seqlock (lock.c's layer): one helper for every sequence word ----
 * A writer, holding the lock that serialises writers, makes the word odd
 * before its first store a reader could see and even after its last. Both
 * steps are idempotent, so a repair closes a dead writer's odd word with
 * shmds__seq_write_end. A lock-free reader takes s = shmds__seq_read_begin,
 * copies (following only checked offsets: the copy may be torn), and keeps
 * the copy only when shmds__seq_read_ok(w, s). Between attempts it backs
 * off with one policy, struct shmds__wait. */
static inline void shmds__seq_write_begin(uint64_t *w)
{
    uint64_t s = __atomic_load_n(w, __ATOMIC_RELAXED);
    if ((s & 1) == 0)
        __atomic_store_n(w, s + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE); /* the odd word before the data */
}

static inline void shmds__seq_write_end(uint64_t *w)
{
    uint64_t s = __atomic_load_n(w, __ATOMIC_RELAXED);
    if (s & 1)
        __atomic_store_n(w, s + 1, __ATOMIC_RELEASE);
}

static inline uint64_t shmds__seq_read_begin(const uint64_t *w)
{
    return __atomic_load_n(w, __ATOMIC_ACQUIRE);
}

/* True when the copy made since shmds__seq_read_begin returned `s` is whole. */
static inline bool shmds__seq_read_ok(const uint64_t *w, uint64_t s)
{
    __atomic_thread_fence(__ATOMIC_ACQUIRE); /* the data before the re-read */
    return (s & 1) == 0 && __atomic_load_n(w, __ATOMIC_RELAXED) == s;
}

/* The one backoff policy for a lock-free reader waiting for a writer:
 * SHMDS__WAIT_SPINS quick retries (the first few spin, then each yields),
 * then, per retry, the caller's slow step (a writable handle takes the
 * writers' lock, which repairs a dead writer) and a 1 ms nap, until the
 * region's lock bound has passed since the first nap. */
#define SHMDS__WAIT_SPINS 64u
struct shmds__wait {
    unsigned spins;
    uint64_t deadline_ns;
};
/* True while still in the quick phase (retry at once). */
static inline bool shmds__wait_spin(struct shmds__wait *w)
{
    if (w->spins >= SHMDS__WAIT_SPINS)
        return false;
    if (++w->spins > 8)
        sched_yield();
    else
        shmds__cpu_relax();
    return true;
}
/* The slow phase's nap: 0 after napping, -ETIMEDOUT once `bound_ms` has
 * passed since the first call (at once for a bound of 0: never wait). */
int shmds__wait_nap(struct shmds__wait *w, uint32_t bound_ms);

/* ---- locks ---- */

/* Lock a mutex: a short spin, then a wait of at most `bound_ms` (lock.c;
 * 0: no wait, -EBUSY when held).
 * Returns as shmds_mutex_lock(), except that a mutex whose own bytes are
 * damaged gives SHMDS_ECORRUPT (never a glibc abort). */
int shmds__mutex_lock_bounded(shmds_mutex *m, uint32_t bound_ms, shmds_repair_fn *repair,
                              void *arg);
/* Lock one of region r's mutexes with the region's bound (region.c); a
 * recovery bumps the region's epoch. Returns as shmds__mutex_lock_bounded. */
int shmds__lock(shmds_region *r, shmds_mutex *m, shmds_repair_fn *repair, void *arg);
/* This process's pid, cached (a fork handler forgets it in the child). */
uint32_t shmds__self_pid(void);

/* Doorbells (DESIGN.md section 4): a semaphore that wakes sleepers, who
 * count themselves in *sleepers and re-check the truth after every wake-up.
 * Ring: when someone sleeps, post one token (all: as many as sleepers),
 * keeping the count at most min(sleepers, 64) (a sleeper that died leaves
 * its count behind; a damaged semaphore is not posted). Wait: one sleep
 * until rung, `slice_ms` passes or the deadline (0: none) comes;
 * SHMDS_ECORRUPT when the semaphore's words are damaged, else 0. */
void shmds__bell_ring(shmds_sem *bell, const uint32_t *sleepers, bool all);
int shmds__bell_wait(shmds_sem *bell, uint64_t deadline_ns, int slice_ms);


/* The same, waiting at most max_ms (region.c; 0: never waits, -EBUSY when
 * held; -1: the region's bound; the region's bound caps any other value). */
int shmds__lock_within(shmds_region *r, shmds_mutex *m, int max_ms, shmds_repair_fn *repair,
                       void *arg);
/* True when the words glibc trusts inside a mutex / semaphore hold what
 * shmds_mutex_init / shmds_sem_init wrote (lock.c); the structure checks
 * use them. */
bool shmds__mutex_ok(const shmds_mutex *m);
bool shmds__sem_ok(const shmds_sem *s);
/* A semaphore's count without a call into glibc (clamped to SEM_VALUE_MAX). */
int shmds__sem_value(const shmds_sem *s);
/* One step of a lock-free reader's wait on the sequence word `word`
 * (region.c): the quick phase of `w`; then, in a writable region, take the
 * writers' lock `m` (its repair closes a dead writer's change) and, when
 * the word is still odd while we hold it (a stale word: no writer is at
 * work), run `repair` ourselves; then nap. `m` NULL: no lock to take.
 * 0: read again; -ETIMEDOUT past the region's bound; lock errors. */
int shmds__seq_wait(shmds_region *r, struct shmds__wait *w, const uint64_t *word, shmds_mutex *m,
                    shmds_repair_fn *repair, void *arg);
/* One attempt, never a wait (not even a spin): -EBUSY when another thread
 * holds `m` (region.c; a recovery bumps the region's epoch). For callers
 * with somewhere else to go: the allocator's arenas. */
int shmds__lock_try(shmds_region *r, shmds_mutex *m, shmds_repair_fn *repair, void *arg);
/* One pthread trylock of `m`, with the checks and the repair of
 * shmds__mutex_lock_bounded (lock.c). */
int shmds__mutex_trylock(shmds_mutex *m, shmds_repair_fn *repair, void *arg);
/* True when the calling thread holds a shmds_mutex inside [base, base+len). */
bool shmds__locks_held_in(const void *base, size_t len);
/* Test hook (tests/image.c): drop this thread's listed locks in the range
 * whose words a hostile image damaged while held, and unlink them from its
 * robust list (so the range may be freed); returns the count of listed
 * locks there that are intact (nonzero also when the list cannot be
 * rebuilt: a robust mutex held that shmds does not track). */
unsigned shmds__held_forget_damaged_in(const void *base, size_t len);
/* True when the calling thread holds `m` (for SHMDS_ASSERT). */
static inline bool shmds__mutex_held(const shmds_mutex *m)
{
    return shmds__locks_held_in(m, sizeof *m);
}

/* ---- region internals used by the layers above ---- */

/* SHMDS_ECORRUPT when the shm object is now shorter than the mapping. */
int shmds__region_intact(const shmds_region *r);
/* Extend this process's mapping in place to cover [0, need) when the
 * region has grown that far: 0, or SHMDS_ECORRUPT when it has not (need
 * beyond the maximum, the published size or the object). Any thread. */
int shmds__region_follow(shmds_region *r, uint64_t need);
/* Grow the region so that its heap gains at least `want` bytes (a
 * doubling step, at least that much, at most the maximum), unless it has
 * grown past `seen` (the heap end the caller found full) meanwhile; a
 * growth a dead process left is finished first. Writable handles only; under the grow lock,
 * which is taken before the allocator's lock and never while holding it.
 * 0; -ENOMEM at the maximum; -ENOSPC (tmpfs full) and other system errors
 * with the region as it was; lock errors. */
int shmds__region_grow_by(shmds_region *r, uint64_t want, uint64_t seen);
/* Finish a growth a dead process left (takes the grow lock): 0 or errors. */
int shmds__region_grow_settle(shmds_region *r);
/* The allocator's step of a growth (alloc.c): the heap ends at `end` (a
 * 16-byte multiple, the region's current size, which this process maps)
 * from now on; the space past the old end becomes a free block (merged
 * with a free last block). One logged commit under the allocator's lock;
 * idempotent: an end the heap already reaches is nothing to do. */
int shmds__alloc_extend(shmds_region *r, uint64_t end);
/* Where the allocator's heap ends now (its initial end before it is
 * formatted); under the grow lock, the region's size once no growth is
 * pending. */
uint64_t shmds__alloc_heap_end(shmds_region *r);
/* SHMDS_ERDONLY for a read-only region, else 0. */
int shmds__writable(const shmds_region *r);
/* Look a root up and insist on its type: SHMDS_ETYPE for another kind;
 * SHMDS_ECORRUPT when its offset is not a valid heap offset. */
int shmds__root_find_typed(shmds_region *r, const char *name, uint32_t type, shmds_off_t *off);
/* Attach to a region image already in this process's memory (tests and the
 * fuzzer): validated like shmds_region_open, `base` 64-byte aligned, the
 * memory stays the caller's (shmds_region_close frees only the handle).
 * flags: 0 or SHMDS_RDONLY. */
int shmds__region_attach_mem(void *base, size_t len, unsigned flags, shmds_region **out);
/* Attach to the object behind `fd` (a memfd, in the fuzzer) exactly as
 * shmds_region_open attaches to a named one once it is open, growth
 * included; the handle works on a duplicate, `fd` stays the caller's.
 * flags: 0 or SHMDS_RDONLY. */
int shmds__region_attach_fd(int fd, unsigned flags, shmds_region **out);
/* Tags 1..SHMDS__TYPE_OBJ_LAST name the object layer's objects (object.h):
 * their directory entry holds the header's block (an allocator slot) and
 * lookups report the 64-byte aligned header inside it. All the region
 * knows of them is this range of tags. */
#define SHMDS__TYPE_OBJ_LAST SHMDS_TYPE_TABLE
static inline bool shmds__type_is_object(uint32_t type)
{
    return type != 0 && type <= SHMDS__TYPE_OBJ_LAST;
}
/* The 64-byte aligned header of an object inside the block at `off`
 * (object.c allocates the header 48 bytes larger and rounds up). */
static inline shmds_off_t shmds__hdr_of(shmds_off_t off)
{
    return (off + 63) & ~(shmds_off_t)63;
}

/* Pending directory entries (region.c, top of file): how the structures'
 * create and destroy keep every block reachable from the directory.
 *
 * Reserve `name` as a pending entry of `type` owned by this process, with
 * off 0; *slot receives the entry's off field, the allocator slot for the
 * object's header block. -EEXIST when the name is taken (pending or not),
 * -EAGAIN when it is held by a pending entry of a dead process (reclaim,
 * then retry), -ENOMEM (no room for another directory block) and the
 * allocator's errors, -EINVAL, lock errors. */
int shmds__root_reserve(shmds_region *r, const char *name, uint32_t type, shmds_off_t **slot);
/* Make this process's pending entry visible (owner 0, one store): the
 * commit point of a create. */
int shmds__root_publish(shmds_region *r, shmds_off_t *slot);
/* Make the visible entry `name` of the object of `type` whose header is
 * `off` pending again, owned by this process: the commit point of a
 * destroy. -ENOENT when no visible entry of that name names that object. */
int shmds__root_unpublish(shmds_region *r, const char *name, uint32_t type, shmds_off_t off,
                          shmds_off_t **slot);
/* Free this process's pending entry, whose off must be back to 0. */
int shmds__root_drop(shmds_region *r, shmds_off_t *slot);
/* Take over one pending entry whose owner is dead (owner = this process),
 * named `name` (NULL: any) of type `of_type` (0: any): its type and slot.
 * -ENOENT when there is none. */
int shmds__root_take_orphan(shmds_region *r, const char *name, uint32_t of_type, uint32_t *type,
                            shmds_off_t **slot);
/* 0 when the visible entry `name` names the object of `type` whose header
 * is `off` (a lock-free look at the directory), else -ENOENT or a lookup
 * error. */
int shmds__root_published(shmds_region *r, const char *name, uint32_t type, shmds_off_t off);
/* Take the directory lock and keep it when the visible entry `name` names
 * the object of `type` at `off` (0: no destroy can unpublish it until
 * shmds__root_release); -ENOENT (lock not held) when it does not. */
int shmds__root_hold(shmds_region *r, const char *name, uint32_t type, shmds_off_t off);
void shmds__root_release(shmds_region *r);
/* Free the directory's chains' last blocks that hold no entry (a dead
 * writer's block that no name came to): shmds_region_reclaim. */
int shmds__root_trim(shmds_region *r);
/* True when `off` is the region offset of one of the directory's bucket
 * heads in the header (an allocator slot: the first block of a chain is
 * allocated into it). Slots inside the heap need no such test. */
static inline bool shmds__dir_slot_off(uint64_t off)
{
    const uint64_t first = offsetof(struct shmds__hdr, dir_heads);
    return off >= first && off < first + 8 * (uint64_t)SHMDS__DIR_BUCKETS && (off & 7) == 0;
}
/* True when `off` is the region offset of an allocator slot in the header:
 * a directory bucket head, or the head of the retire list. */
static inline bool shmds__hdr_slot_off(uint64_t off)
{
    return shmds__dir_slot_off(off) || off == offsetof(struct shmds__hdr, retire_head);
}
/* Allocate like shmds__alloc_into, with the block's first `size` bytes
 * zeroed before the commit that stores it into *slot: whoever finds the
 * block through the slot after a crash reads zeros or what was written. */
int shmds__alloc_zeroed_into(shmds_region *r, uint64_t size, shmds_off_t *slot);

/* Header and directory checks (part of shmds_region_check). */
int shmds__region_check_header(shmds_region *r);
/* 64-bit FNV-1a over a byte string, continuing from `h` (start with
 * SHMDS__FNV_INIT). */
#define SHMDS__FNV_INIT UINT64_C(0xcbf29ce484222325)
static inline uint64_t shmds__fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h;
}

/* A block of a directory bucket's chain (region.c, "Directory"): the link
 * to the next block (an allocator slot: the next block is allocated into
 * it and freed out of it) and entries. The k-th block of a chain (k from
 * 0) holds shmds__dir_blk_cap(k) entries, so a bucket with few names stays
 * small and a long one takes few hops. A block is all zeros when it is
 * linked in: a block of free entries, the end of the chain. */
struct shmds__dir_blk {
    uint64_t next;
    uint64_t spare;
    struct shmds__root e[];
};
SHMDS__STATIC_ASSERT(sizeof(struct shmds__dir_blk) == 16, "directory block header is 16 bytes");
#define SHMDS__DIR_BLK_MAX 64u /* entries of every block from the 7th of a chain on */
static inline uint32_t shmds__dir_blk_cap(uint64_t k)
{
    return k < 6 ? 1u << k : SHMDS__DIR_BLK_MAX;
}
/* The bucket of a valid name (1..SHMDS_ROOT_NAME_MAX bytes, terminated). */
static inline uint32_t shmds__dir_bucket(const char *name)
{
    size_t n = 0;
    while (name[n] != '\0')
        n++;
    return (uint32_t)(shmds__fnv1a(SHMDS__FNV_INIT, name, n) % SHMDS__DIR_BUCKETS);
}

/* ---- allocator internals (alloc.c), for the structures ----
 * The structures' crash consistency rests on these: an allocation is never
 * "in the process's hands only". The caller names a slot *inside the region*
 * (a field of its intent log, DESIGN.md section 4); the allocator writes the
 * new block's offset into that slot as one step of its own commit, and
 * clears the slot as one step of a free's commit. So after any crash, a
 * repair that has settled the allocator (below) finds in the slot exactly
 * the block that is allocated for it, or 0.
 *
 * Lock order: the caller may hold structure locks; these take the allocator
 * lock. The directory lock comes before every structure lock and the
 * allocator's: only region.c, adding a directory block, allocates while
 * holding it, and nothing holding the allocator's lock takes it. */

/* Allocate `size` bytes (16-byte aligned) and store the block's offset into
 * *slot, which must lie inside r's heap, as part of the allocator's commit.
 * *slot must be SHMDS_NULL on entry. Returns 0, -ENOMEM, -EINVAL (size 0 or
 * slot outside the heap), SHMDS_ECORRUPT, -ETIMEDOUT, SHMDS_ENOTRECOVERABLE.
 * On error *slot is unchanged. */
int shmds__alloc_into(shmds_region *r, uint64_t size, shmds_off_t *slot);

/* shmds__alloc_into(r, size, slot), and then, under the same allocator
 * lock (one lock round trip for all), a block of the same size into each
 * of the slots more[0..nmore) that holds SHMDS_NULL, as long as there is
 * room; each block is written into its slot by its own commit. Slots that
 * are not valid are skipped; at most SHMDS__ALLOC_MANY_MAX of them. The
 * result is *slot's: 0 once it holds its block, errors as
 * shmds__alloc_into. */
#define SHMDS__ALLOC_MANY_MAX 8
int shmds__alloc_many_into(shmds_region *r, uint64_t size, shmds_off_t *slot,
                           shmds_off_t *const *more, unsigned nmore);

/* Free the block whose offset is in *slot and set *slot to SHMDS_NULL, as
 * one commit. *slot == SHMDS_NULL: nothing to do, returns 0 (so a repair can
 * call it again after a crash). Errors as shmds_free(); *slot unchanged. */
int shmds__free_from(shmds_region *r, shmds_off_t *slot);

/* Take and drop the allocator lock so that a dead allocator's half-done
 * operation is finished. After it returns 0, every slot named in an
 * interrupted shmds__alloc_into / shmds__free_from holds its final value. */
int shmds__alloc_settle(shmds_region *r);

/* Give the handle's cached blocks and its cache record back to the heap
 * (shmds_region_close; the handle is not used by other threads then). */
void shmds__alloc_close(shmds_region *r);

/* Carve one more arena out of arena 0 now, as a process that finds every
 * arena busy does (tests and the crash torture use it to reach that code
 * at will). 0; -ENOMEM no room or the table is full; lock errors. */
int shmds__alloc_arena_add(shmds_region *r);

/* 0 when `off` is the start of a live (allocated) block, with its usable
 * size in *usable (may be NULL); -EINVAL when it is not; SHMDS_ECORRUPT when
 * the heap around it is damaged. Takes no lock: for checks run while the
 * caller's structure lock keeps its own blocks from changing. */
int shmds__alloc_block_live(shmds_region *r, shmds_off_t off, uint64_t *usable);

/* ---- read guards (guard.c) ----
 * Retirement: how a writer gives up a block that lock-free readers may
 * still be reading (DESIGN.md section 5).
 *
 * Take the block whose offset is in the allocator slot *slot (as
 * shmds__free_from would: inside the heap, or a header slot) and free it
 * once every reader that had entered a guard before this call has left
 * it. The block must already be unlinked (unreachable for new readers).
 * Crash-safe like the allocator's calls: the block moves from *slot to a
 * retire record through an intent log under the region's retire lock, so
 * after shmds__guard_settle() *slot holds either the block (not retired:
 * the caller's repair decides) or 0 (retired: never the caller's again).
 * *slot == 0: nothing to do, 0. When no retire record can be found or
 * made (the heap full and readers holding every retired block) the block
 * is freed at once if no reader inside a guard could hold it (0), else it
 * stays in *slot: SHMDS__RETIRE_KEPT, and the caller keeps it where its
 * repair finds it and calls again later. Writable regions only; lock
 * order: structure locks -> the retire lock -> the allocator. Returns 0,
 * SHMDS__RETIRE_KEPT, or (with *slot unchanged) -EINVAL for a slot the
 * allocator would not take, lock errors, SHMDS_ECORRUPT. */
#define SHMDS__RETIRE_KEPT 1
int shmds__guard_retire(shmds_region *r, uint64_t *slot);
/* Whether fewer than half a retire block's records hold blocks (a hint,
 * read without a lock; when it says no, a reclamation runs under the
 * retire lock and it is read again). Retirements a structure may put off
 * (rehash moves) wait while it is false, keeping the records for writes
 * while a reader holds what was retired. Writable regions only. */
bool shmds__guard_roomy(shmds_region *r);
/* Finish a retirement a dead process left half done (takes and drops the
 * retire lock): after 0, every slot named by an interrupted
 * shmds__guard_retire holds its final value. */
int shmds__guard_settle(shmds_region *r);
/* Free every retired block that no reader can still hold (what retire
 * does every so often): the number freed, or an error. Writable only. */
int shmds__guard_reclaim(shmds_region *r);
/* Blocks retired and not yet freed, counted by a walk of the retire list
 * (checks and the tool): 0 and *n, or SHMDS_ECORRUPT. */
int shmds__guard_retired(shmds_region *r, uint64_t *n);
/* The reader table's lifecycle, for region.c: create the companion object
 * of region `name` (header h complete but for its magic) with the region's
 * mode; open and check it; make one in process memory (a region attached
 * from memory); unlink it. 0 or a negative errno / SHMDS_ECORRUPT. */
struct shmds__rtab;
int shmds__rtab_create(const struct shmds__hdr *h, const char *name, unsigned mode,
                       struct shmds__rtab **out);
int shmds__rtab_open(const struct shmds__hdr *h, const char *name, struct shmds__rtab **out);
int shmds__rtab_private(const struct shmds__hdr *h, struct shmds__rtab **out);
int shmds__rtab_unlink(const char *name);
/* shmds_guard_enter / shmds_guard_leave for the library's own read paths
 * (arguments known good: no checks, no call through the PLT). */
int shmds__guard_enter(shmds_region *r, shmds_guard **g);
void shmds__guard_leave(shmds_guard *g);
/* True when g is a guard entered (not yet left) on r by this process. */
bool shmds__guard_held(const shmds_guard *g, const shmds_region *r);
/* Release a handle's guards, slots and table (region close). */
void shmds__guard_close(shmds_region *r);

#endif
