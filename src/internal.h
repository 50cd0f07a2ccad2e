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
#include <time.h>

#include "shmds.h"

/* ---- assertions and checks ----
 * SHMDS_ASSERT states the library's own invariants and compiles away in
 * release builds. Shared memory is untrusted input, so checks on data read
 * from a region are plain `if`s that stay in every build and return
 * SHMDS_ECORRUPT; never assert on them. */
#ifdef SHMDS_DEBUG
#include <assert.h>
#define SHMDS_ASSERT(cond) assert(cond)
#else
#define SHMDS_ASSERT(cond) ((void)0)
#endif

#define shmds__likely(x) __builtin_expect(!!(x), 1)
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

struct shmds__root {
    char name[SHMDS_ROOT_NAME_MAX + 1];
    uint32_t type; /* 0: free slot; written last on set, first on delete */
    uint32_t owner_pid; /* 0: published; else pending, being created or
                         * destroyed by that process (region.c) */
    uint64_t off; /* a block start; the object's header is shmds__hdr_of(off) */
};
SHMDS__STATIC_ASSERT(sizeof(struct shmds__root) == 64, "directory entry is 64 bytes");
SHMDS__STATIC_ASSERT(sizeof(shmds_mutex) == 64, "a mutex fills one cache line");

struct shmds__hdr {
    /* Immutable after creation; covered by `checksum`. */
    uint64_t magic; /* stored last at creation, with release order */
    uint32_t format;
    uint32_t hdr_size;
    uint64_t abi;
    uint64_t size;
    uint64_t heap_off;
    uint64_t heap_size;
    uint64_t created_ns;
    uint32_t creator_pid;
    uint32_t creator_uid;
    uint32_t lock_timeout_ms;
    uint32_t roots_max;
    uint64_t checksum; /* FNV-1a 64 of every byte before this field */
    /* Mutable. */
    uint64_t epoch;   /* bumped on every repair after a death */
    uint64_t dir_seq; /* seqlock over roots[]: odd while a writer changes it */
    uint8_t pad0[128 - 96];
    shmds_mutex dir_lock;
    shmds_mutex alloc_lock;
    /* The allocator's root, opaque to the region (alloc.c); zero at creation. */
    alignas(SHMDS__CACHE_LINE) uint8_t alloc_root[SHMDS__ALLOC_ROOT_BYTES];
    struct shmds__root roots[SHMDS_ROOTS_MAX];
    uint8_t reserved[SHMDS_HEADER_SIZE - 1024 - 64 * SHMDS_ROOTS_MAX];
};
SHMDS__STATIC_ASSERT(sizeof(struct shmds__hdr) == SHMDS_HEADER_SIZE, "header is one page");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, magic) == 0, "format: magic");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, format) == 8, "format: format word");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, abi) == 16, "format: abi stamp");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, size) == 24, "format: size");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, checksum) == 72, "format: checksum");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, epoch) == 80, "format: epoch");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, dir_lock) == 128, "format: dir lock");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, alloc_root) == 256, "format: alloc root");
SHMDS__STATIC_ASSERT(offsetof(struct shmds__hdr, roots) == 1024, "format: directory");

/* ---- the process-local handle ---- */

/* Where the allocator's parts are in the heap (alloc.c): a function of the
 * handle's trusted heap bounds only, computed once by
 * shmds__alloc_geo_init() when the handle is made. */
struct shmds__heap_geo {
    uint64_t ctl;      /* control block */
    uint64_t slbm;     /* uint32_t second-level bitmaps [fl_count] */
    uint64_t heads;    /* uint64_t heads [fl_count][SL_N] */
    uint64_t first;    /* first block header */
    uint64_t end;      /* sentinel header */
    uint64_t last;     /* last offset where a minimum block fits */
    uint32_t fl_count;
};

struct shmds_region {
    /* Must match struct shmds_region_pub_ (region.h): the inline helpers. */
    unsigned char *base;
    uint64_t size;
    /* Copied from the header once it was validated at open, and trusted from
     * then on: later writes to the shared header cannot move these bounds. */
    uint64_t heap_off;
    uint64_t heap_end;
    uint32_t lock_timeout_ms;
    unsigned flags;
    size_t map_len;
    int fd;
    struct shmds__hdr *hdr;
    struct shmds__heap_geo geo;
};

static inline bool shmds__rdonly(const shmds_region *r)
{
    return (r->flags & SHMDS_RDONLY) != 0;
}

/* ---- checked offsets ----
 * Every offset read from shared memory goes through one of these before it
 * is followed. */

/* True when [off, off+len) lies in the heap and off is a multiple of align
 * (a power of two). Overflow-safe. */
static inline bool shmds__off_ok(const shmds_region *r, shmds_off_t off, uint64_t len,
                                 uint64_t align)
{
    return off >= r->heap_off && off <= r->heap_end && len <= r->heap_end - off &&
           (off & (align - 1)) == 0;
}

/* Pointer for a checked [off, off+len), or NULL when the check fails
 * (the caller returns SHMDS_ECORRUPT). */
static inline void *shmds__ptr_chk(const shmds_region *r, shmds_off_t off, uint64_t len,
                                   uint64_t align)
{
    return shmds__off_ok(r, off, len, align) ? (void *)(r->base + off) : NULL;
}

/* ---- time ---- */

uint64_t shmds__now_ns(void);        /* CLOCK_MONOTONIC */
uint64_t shmds__unix_now_ns(void);   /* CLOCK_REALTIME */
/* Absolute CLOCK_MONOTONIC time `ms` from now. */
struct timespec shmds__deadline(int ms);
/* Milliseconds left until `deadline_ns` (monotonic), at least 0. */
int shmds__ms_left(uint64_t deadline_ns);

/* ---- locks ---- */

/* Lock one of region r's mutexes with the region's bound. A recovery bumps
 * the region's epoch. Returns as shmds_mutex_lock(), except that a mutex
 * whose own bytes are damaged gives SHMDS_ECORRUPT (never a glibc abort). */
int shmds__lock(shmds_region *r, shmds_mutex *m, shmds_repair_fn *repair, void *arg);
/* This process's pid, cached (a fork handler forgets it in the child). */
uint32_t shmds__self_pid(void);

/* Doorbells (DESIGN.md section 4): a semaphore that wakes sleepers, who
 * count themselves in *sleepers and re-check the truth after every wake-up.
 * Ring: when someone sleeps, post one token (all: as many as sleepers),
 * keeping the count at most min(sleepers, 64) (a sleeper that died leaves
 * its count behind). Wait: one sleep until rung, `slice_ms` passes or the
 * deadline (0: none) comes. */
void shmds__bell_ring(shmds_sem *bell, const uint32_t *sleepers, bool all);
void shmds__bell_wait(shmds_sem *bell, uint64_t deadline_ns, int slice_ms);

/* ---- liveness ----
 * A process's start time (field 22 of /proc/PID/stat, clock ticks since
 * boot) tells a process from a later one that reuses its pid. */
/* 0 with *start set; -ESRCH no such process; other negative errno. */
int shmds__proc_start(uint32_t pid, uint64_t *start);
/* This process's start time (cached; 0 if /proc cannot tell). */
uint64_t shmds__self_start(void);
/* False when `pid` is gone or a zombie (killed, not reaped yet), or is now
 * another process than the one that started at `start` (0: unknown, only
 * the pid is probed). */
bool shmds__proc_alive(uint32_t pid, uint64_t start);

/* True when the calling thread holds a shmds_mutex inside [base, base+len). */
bool shmds__locks_held_in(const void *base, size_t len);

/* ---- region internals used by the layers above ---- */

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
/* The 64-byte aligned header of a named object inside the block at `off`
 * (the structures allocate their header 48 bytes larger and round up). */
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
 * then retry), -ENOSPC, -EINVAL, lock errors. */
int shmds__root_reserve(shmds_region *r, const char *name, uint32_t type, shmds_off_t **slot);
/* Make this process's pending entry visible (owner 0, one store): the
 * commit point of a create. */
int shmds__root_publish(shmds_region *r, shmds_off_t *slot);
/* Make the visible entry `name` (of `type`, whose header is `off`) pending
 * again, owned by this process: the commit point of a destroy. -ENOENT when
 * the name does not name that object. */
int shmds__root_unpublish(shmds_region *r, const char *name, uint32_t type, shmds_off_t off,
                          shmds_off_t **slot);
/* Free this process's pending entry, whose off must be back to 0. */
int shmds__root_drop(shmds_region *r, shmds_off_t *slot);
/* Take over one pending entry whose owner is dead (owner = this process):
 * its type and slot. -ENOENT when there is none. */
int shmds__root_take_orphan(shmds_region *r, uint32_t *type, shmds_off_t **slot);
/* True when `off` is the region offset of a directory entry's off field. */
static inline bool shmds__root_slot_off(uint64_t off)
{
    const uint64_t first = offsetof(struct shmds__hdr, roots) + offsetof(struct shmds__root, off);
    return off >= first && off < first + (uint64_t)SHMDS_ROOTS_MAX * sizeof(struct shmds__root) &&
           (off - first) % sizeof(struct shmds__root) == 0;
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
uint64_t shmds__fnv1a(uint64_t h, const void *data, size_t len);

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
 * lock; never call them holding the directory lock. */

/* Allocate `size` bytes (16-byte aligned) and store the block's offset into
 * *slot, which must lie inside r's heap, as part of the allocator's commit.
 * *slot must be SHMDS_NULL on entry. Returns 0, -ENOMEM, -EINVAL (size 0 or
 * slot outside the heap), SHMDS_ECORRUPT, -ETIMEDOUT, SHMDS_ENOTRECOVERABLE.
 * On error *slot is unchanged. */
int shmds__alloc_into(shmds_region *r, uint64_t size, shmds_off_t *slot);

/* Free the block whose offset is in *slot and set *slot to SHMDS_NULL, as
 * one commit. *slot == SHMDS_NULL: nothing to do, returns 0 (so a repair can
 * call it again after a crash). Errors as shmds_free(); *slot unchanged. */
int shmds__free_from(shmds_region *r, shmds_off_t *slot);

/* Take and drop the allocator lock so that a dead allocator's half-done
 * operation is finished. After it returns 0, every slot named in an
 * interrupted shmds__alloc_into / shmds__free_from holds its final value. */
int shmds__alloc_settle(shmds_region *r);

/* 0 when `off` is the start of a live (allocated) block, with its usable
 * size in *usable (may be NULL); -EINVAL when it is not; SHMDS_ECORRUPT when
 * the heap around it is damaged. Takes no lock: for checks run while the
 * caller's structure lock keeps its own blocks from changing. */
int shmds__alloc_block_live(shmds_region *r, shmds_off_t off, uint64_t *usable);

/* Verify the whole heap (part of shmds_region_check); takes the allocator
 * lock. 0, SHMDS_ECORRUPT, -ETIMEDOUT, SHMDS_ENOTRECOVERABLE. */
int shmds__alloc_check(shmds_region *r);

/* Fill r->geo from r->heap_off and r->heap_end (process-local; reads no
 * shared memory). The region calls it when it makes a handle. */
void shmds__alloc_geo_init(shmds_region *r);

#endif
