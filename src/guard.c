/*
 * Read guards: reader slots, epochs and deferred frees (DESIGN.md section 5).
 *
 * Layer: between the structures and the allocator. The structures call
 * shmds__guard_retire instead of freeing a block a lock-free reader may be
 * reading; this module frees it once no reader can hold it. It calls down
 * into the allocator, lock.c and the region only.
 *
 * The reader table. Readers must write (their slot), and a read-only
 * attach cannot write the region, so the slots live in a companion POSIX
 * shm object, /shmds-rd-<region name> (a hash of the name when that would
 * be too long), made with the region, its mode the region's plus write for
 * whoever may read it, removed with the region. Its header names the
 * region (creation time and creator pid) so a table left by an earlier
 * region of the same name is refused. Everything in it is untrusted: slot
 * values are only compared, an owner is only probed. A region attached
 * from memory (tests, the fuzzer) gets a table in process memory.
 *
 * A slot is one cache line: `owner` (pid << 32 | tid, 0 = free), `start`
 * (the process's start time, against pid reuse) and `epoch` (0 = not inside
 * a guard). A thread claims a slot with one compare-and-swap on its first
 * guard and keeps it; entering stores the region's epoch (the header's
 * `gepoch`, >= 1) in it and fences; leaving stores 0 with release order.
 *
 * Retirement. A retired block goes into a record {off, stamp} of the
 * retire list: a chain of blocks in the heap, headed by the region header's
 * `retire_head` (an allocator slot, as every record's `off` is). stamp is
 * the epoch read after the block was unlinked. Reclamation bumps the epoch,
 * fences, and takes the smallest epoch of the occupied slots (`min`; the
 * new epoch when none): a record with stamp < min is freed, because every
 * reader inside a guard entered after its block was unlinked (it loaded an
 * epoch the bump after the unlink wrote), and a reader that enters later
 * cannot find it. The fences pair (reader: slot store, fence, loads;
 * writer: unlink, fence, slot loads): either the writer sees the slot or
 * the reader sees the unlink. Reclamation runs every RECLAIM_AT retirements
 * and when no record is free; records are added a block at a time when
 * readers hold them all. The first retire block, once made, is kept while
 * the region holds objects (only later, empty ones are trimmed), so
 * retiring rarely allocates and a full heap still has its records.
 *
 * No record to be had (every record holds a block a reader may hold, and
 * the heap is full): when no reader is inside a guard it entered before
 * the unlink, the block is freed at once; else it stays in the caller's
 * slot (SHMDS__RETIRE_KEPT) and the caller's write still succeeds, its
 * log left open for the next holder of its lock to finish. What a stuck
 * reader costs: the blocks it may hold stay allocated (and the retire
 * blocks made while it sat); once the heap is full too, each map stripe
 * can park one unlinked block in its log, and further writes to that
 * stripe return -ENOMEM (nothing changed) until the reader leaves its
 * guard or dies. Reads never wait.
 *
 * Crash consistency. Moving a block from the caller's slot to a record is
 * logged in the header (rlog_*: source slot, block, record slot) under the
 * retire lock, then the record is written and the source cleared; the
 * repair of the retire lock rolls it forward while the source still holds
 * the block. Structures whose repair may find a block mid-retirement call
 * shmds__guard_settle first, then see either the block (not retired) or 0.
 * Freeing a record is shmds__free_from on the record's slot: one allocator
 * commit. So a writer killed at any point leaks nothing and frees nothing
 * twice.
 *
 * Dead readers. A slot whose process is gone (or was replaced by another
 * with the same pid), or whose thread has exited, holds back nothing: the
 * reclaimer that meets it in its way clears its owner (a compare-and-swap,
 * so a new owner is never cleared), and a claimer short of slots does the
 * same for idle slots of dead threads.
 */
#include "internal.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define RT_MAGIC UINT64_C(0x3144525344444d48) /* "HMDSRD1" + '1' */
#define RT_FORMAT 1u
#define RB_RECS 254u      /* records per retire block (4 KiB blocks) */
#define RECLAIM_AT 64u    /* retirements between reclamations */

#define LD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define LDA(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define ST(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define STR(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)

/* ---------------------------------------------------------------------------
 * Shared layout
 * ------------------------------------------------------------------------ */

struct rt_slot {
    uint64_t owner; /* pid << 32 | tid; 0 = free */
    uint64_t epoch; /* the epoch entered at; 0 = outside any guard */
    uint64_t start; /* the owner process's start time (0: unknown) */
    uint64_t pad[5];
};
SHMDS__STATIC_ASSERT(sizeof(struct rt_slot) == 64, "a reader slot is one cache line");

struct shmds__rtab {
    uint64_t magic; /* stored last at creation */
    uint32_t format;
    uint32_t nslots;
    uint64_t created_ns; /* the region's: which region this table serves */
    uint32_t creator_pid;
    uint32_t hwm; /* slots below this index may be claimed (a hint, only grows) */
    uint64_t pad[4];
    struct rt_slot slots[SHMDS_READERS_MAX];
};
SHMDS__STATIC_ASSERT(offsetof(struct shmds__rtab, slots) == 64, "format: reader slots");

struct rrec {
    uint64_t off;   /* allocator slot: the retired block; 0 = free record */
    uint64_t stamp; /* the epoch when it was retired */
};

struct rblock {
    uint64_t next; /* allocator slot: the next retire block */
    uint64_t pad;
    struct rrec rec[RB_RECS];
};
SHMDS__STATIC_ASSERT(sizeof(struct rblock) == 4080, "a retire block fills a 4 KiB block");

/* ---------------------------------------------------------------------------
 * The process-local guard
 * ------------------------------------------------------------------------ */

struct shmds_guard {
    shmds_region *r;
    struct rt_slot *slot;
    uint64_t owner; /* our owner word in the slot */
    uint32_t pid;   /* the process that made this guard (fork) */
    uint32_t tid;
    uint32_t depth; /* nesting */
    struct shmds_guard *next; /* the handle's list */
};

/* The calling thread's tid, cached per process (fork). Initial-exec: a few
 * bytes of static TLS, read without a call on the enter path. */
static __thread uint32_t tl_pid __attribute__((tls_model("initial-exec")));
static __thread uint32_t tl_tid __attribute__((tls_model("initial-exec")));

static uint32_t self_tid(void)
{
    uint32_t pid = shmds__self_pid();
    if (tl_pid != pid) {
        tl_tid = (uint32_t)syscall(SYS_gettid);
        tl_pid = pid;
    }
    return tl_tid;
}

/* ---------------------------------------------------------------------------
 * The reader table: companion object
 * ------------------------------------------------------------------------ */

/* "/shmds-rd-" followed by the region's name without its '/', or by a hash
 * of it when that would be longer than SHMDS_NAME_MAX. */
static void rt_name(const char *name, char out[SHMDS_NAME_MAX + 1])
{
    size_t n = strlen(name + 1);
    if (n + 10 <= SHMDS_NAME_MAX)
        snprintf(out, SHMDS_NAME_MAX + 1, "/shmds-rd-%s", name + 1);
    else
        snprintf(out, SHMDS_NAME_MAX + 1, "/shmds-rd-#%016llx",
                 (unsigned long long)shmds__fnv1a(SHMDS__FNV_INIT, name, n + 1));
}

static void rt_fill(struct shmds__rtab *t, const struct shmds__hdr *h)
{
    t->format = RT_FORMAT;
    t->nslots = SHMDS_READERS_MAX;
    t->created_ns = h->created_ns;
    t->creator_pid = h->creator_pid;
    STR(&t->magic, RT_MAGIC);
}

int shmds__rtab_create(const struct shmds__hdr *h, const char *name, unsigned mode,
                       struct shmds__rtab **out)
{
    char rn[SHMDS_NAME_MAX + 1];
    rt_name(name, rn);
    /* A table left by an earlier region of this name (the region's own
     * create, O_EXCL, says none is live). Processes still attached to that
     * region keep their mapping of it. */
    shm_unlink(rn);
    int fd = shm_open(rn, O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = 0;
    mode_t m = (mode_t)(mode | ((mode & 0444) >> 1));
    if (fchmod(fd, m) != 0 || ftruncate(fd, (off_t)sizeof(struct shmds__rtab)) != 0) {
        rc = -errno;
    } else if ((rc = posix_fallocate(fd, 0, (off_t)sizeof(struct shmds__rtab))) != 0) {
        rc = -rc;
    } else {
        void *p = mmap(NULL, sizeof(struct shmds__rtab), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            rc = -errno;
        } else {
            rt_fill(p, h);
            *out = p;
        }
    }
    close(fd);
    if (rc != 0)
        shm_unlink(rn);
    return rc;
}

int shmds__rtab_open(const struct shmds__hdr *h, const char *name, struct shmds__rtab **out)
{
    char rn[SHMDS_NAME_MAX + 1];
    rt_name(name, rn);
    int fd = shm_open(rn, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK, 0);
    /* A region without its table is a damaged region (and -ENOENT would
     * read as "no such key" to a get). */
    if (fd < 0)
        return errno == ELOOP || errno == ENOENT ? SHMDS_ECORRUPT : -errno;
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0)
        rc = -errno;
    else if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size != sizeof(struct shmds__rtab))
        rc = SHMDS_ECORRUPT;
    void *p = MAP_FAILED;
    if (rc == 0) {
        p = mmap(NULL, sizeof(struct shmds__rtab), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED)
            rc = -errno;
    }
    close(fd);
    if (rc == 0) {
        const struct shmds__rtab *t = p;
        if (LDA(&t->magic) != RT_MAGIC || t->format != RT_FORMAT ||
            t->nslots != SHMDS_READERS_MAX || t->created_ns != h->created_ns ||
            t->creator_pid != h->creator_pid)
            rc = SHMDS_ECORRUPT;
    }
    if (rc != 0) {
        if (p != MAP_FAILED)
            munmap(p, sizeof(struct shmds__rtab));
        return rc;
    }
    *out = p;
    return 0;
}

int shmds__rtab_private(const struct shmds__hdr *h, struct shmds__rtab **out)
{
    struct shmds__rtab *t = calloc(1, sizeof *t);
    if (t == NULL)
        return -ENOMEM;
    rt_fill(t, h);
    *out = t;
    return 0;
}

int shmds__rtab_unlink(const char *name)
{
    char rn[SHMDS_NAME_MAX + 1];
    rt_name(name, rn);
    return shm_unlink(rn) == 0 ? 0 : -errno;
}

/* The table, or the error that keeps it away. The words a damaged table
 * could make us misuse are checked on every use; these, once. */
static int rt_get(shmds_region *r, struct shmds__rtab **out)
{
    if (r->rt == NULL)
        return r->rt_err != 0 ? r->rt_err : SHMDS_ECORRUPT;
    *out = r->rt;
    return 0;
}

static uint32_t rt_hwm(const struct shmds__rtab *t)
{
    uint32_t h = LDA(&t->hwm);
    return h < SHMDS_READERS_MAX ? h : SHMDS_READERS_MAX;
}

/* False when the slot's owner is certainly dead: its process is gone or is
 * another process now, or its thread has exited. */
static bool owner_alive(uint64_t owner, uint64_t start)
{
    uint32_t pid = (uint32_t)(owner >> 32), tid = (uint32_t)owner;
    if (!shmds__proc_alive(pid, start))
        return false;
    if (tid != 0 && tid <= INT32_MAX && syscall(SYS_tgkill, (pid_t)pid, (pid_t)tid, 0) != 0 &&
        errno == ESRCH)
        return false;
    return true;
}

/* ---------------------------------------------------------------------------
 * Entering and leaving
 * ------------------------------------------------------------------------ */

/* Claim a free slot for guard g (or one whose owner is dead). */
static int slot_claim(struct shmds__rtab *t, struct shmds_guard *g)
{
    uint64_t start = shmds__self_start();
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < SHMDS_READERS_MAX; i++) {
            struct rt_slot *s = &t->slots[i];
            uint64_t o = LD(&s->owner);
            if (o != 0) {
                /* The second pass takes slots of dead owners. */
                if (pass == 0 || owner_alive(o, LD(&s->start)) ||
                    !__atomic_compare_exchange_n(&s->owner, &o, 0, false, __ATOMIC_ACQ_REL,
                                                 __ATOMIC_RELAXED))
                    continue;
                o = 0;
            }
            /* Raise the scan bound before the slot can hold an epoch. */
            uint32_t h = LD(&t->hwm);
            while (h < i + 1 && !__atomic_compare_exchange_n(&t->hwm, &h, i + 1, false,
                                                             __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
                ;
            if (!__atomic_compare_exchange_n(&s->owner, &o, g->owner, false, __ATOMIC_SEQ_CST,
                                             __ATOMIC_RELAXED))
                continue;
            ST(&s->epoch, 0);
            ST(&s->start, start);
            g->slot = s;
            return 0;
        }
    }
    return -EAGAIN;
}

/* The calling thread's guard on r: from the thread's cache, else from the
 * handle's list, else a new one. */
static int guard_find(shmds_region *r, struct shmds_guard **out)
{
    uint32_t pid = shmds__self_pid(), tid = self_tid();
    struct shmds__rtab *t;
    int rc = rt_get(r, &t);
    if (rc != 0)
        return rc;
    if (pthread_mutex_lock(&r->guard_mu) != 0)
        return -EAGAIN;
    struct shmds_guard *g;
    for (g = r->guards; g != NULL; g = g->next)
        if (g->pid == pid && g->tid == tid)
            break;
    if (g == NULL) {
        g = calloc(1, sizeof *g);
        if (g == NULL) {
            pthread_mutex_unlock(&r->guard_mu);
            return -ENOMEM;
        }
        g->r = r;
        g->pid = pid;
        g->tid = tid;
        g->owner = (uint64_t)pid << 32 | tid;
        g->next = r->guards;
        r->guards = g;
    }
    pthread_mutex_unlock(&r->guard_mu);
    __atomic_store_n(&r->gcache, g, __ATOMIC_RELEASE);
    *out = g;
    return 0;
}

int shmds__guard_enter(shmds_region *r, shmds_guard **out)
{
    /* The guard this handle gave out last, when it is this thread's (tids
     * are unique among live threads; the pid tells a forked child); else
     * the handle's list. */
    struct shmds_guard *g = __atomic_load_n(&r->gcache, __ATOMIC_ACQUIRE);
    if (shmds__unlikely(g == NULL || g->tid != self_tid() || g->pid != shmds__self_pid())) {
        int rc = guard_find(r, &g);
        if (rc != 0)
            return rc;
    }
    if (g->depth == 0) {
        /* Our slot, unless a scanner took it (we were thought dead, or the
         * table was damaged): then claim another. */
        if (shmds__unlikely(g->slot == NULL || LD(&g->slot->owner) != g->owner)) {
            int rc = slot_claim(r->rt, g);
            if (rc != 0)
                return rc;
        }
        uint64_t e = LDA(&r->hdr->gepoch);
        ST(&g->slot->epoch, e != 0 ? e : 1);
        __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the slot before our loads */
    }
    g->depth++;
    *out = g;
    return 0;
}

void shmds__guard_leave(shmds_guard *g)
{
    if (--g->depth == 0)
        STR(&g->slot->epoch, 0); /* our loads before the slot */
}

SHMDS_API int shmds_guard_enter(shmds_region *r, shmds_guard **out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    return shmds__guard_enter(r, out);
}

SHMDS_API void shmds_guard_leave(shmds_guard *g)
{
    if (g != NULL && g->depth > 0)
        shmds__guard_leave(g);
}

bool shmds__guard_held(const shmds_guard *g, const shmds_region *r)
{
    return g != NULL && g->r == r && g->depth > 0 && g->pid == shmds__self_pid();
}

void shmds__guard_close(shmds_region *r)
{
    struct shmds_guard *g = r->guards;
    uint32_t pid = shmds__self_pid();
    while (g != NULL) {
        struct shmds_guard *n = g->next;
        uint64_t o = g->owner;
        if (g->pid == pid && g->slot != NULL && r->rt != NULL) {
            ST(&g->slot->epoch, 0);
            __atomic_compare_exchange_n(&g->slot->owner, &o, 0, false, __ATOMIC_RELEASE,
                                        __ATOMIC_RELAXED);
        }
        free(g);
        g = n;
    }
    r->guards = NULL;
    r->gcache = NULL;
    if (r->rt != NULL) {
        if (r->rt_private)
            free(r->rt);
        else
            munmap(r->rt, sizeof(struct shmds__rtab));
        r->rt = NULL;
    }
}

/* ---------------------------------------------------------------------------
 * The retire list
 * ------------------------------------------------------------------------ */

/* The most retire blocks a healthy heap can hold: the walk's cap. */
static uint64_t rb_cap(const shmds_region *r)
{
    return (r->heap_max - r->heap_off) / sizeof(struct rblock) + 1;
}

/* The retire block whose offset is in *slot (0: none), checked. */
static int rb_at(shmds_region *r, const uint64_t *slot, struct rblock **out)
{
    uint64_t o = LD(slot);
    if (o == 0) {
        *out = NULL;
        return 0;
    }
    *out = shmds__ptr_chk(r, o, sizeof(struct rblock), 16);
    return *out != NULL ? 0 : SHMDS_ECORRUPT;
}

/* One step of a walk of the retire list: the block whose offset is in
 * *slot (NULL at the end), the step counted in *n against the walk's cap
 * (a damaged list may loop). */
static int rb_step(shmds_region *r, const uint64_t *slot, struct rblock **b, uint64_t *n)
{
    int rc = rb_at(r, slot, b);
    if (rc == 0 && *b != NULL && ++*n > rb_cap(r))
        rc = SHMDS_ECORRUPT;
    return rc;
}

/* Called with the retire lock held after its holder died: roll a logged
 * move forward while its source still holds the block. */
static int retire_repair(void *arg)
{
    shmds_region *r = arg;
    struct shmds__hdr *h = r->hdr;
    int rc = shmds__alloc_settle(r);
    if (rc < 0)
        return rc;
    if (LD(&h->rlog_op) == 1) {
        uint64_t b = LD(&h->rlog_blk);
        uint64_t so = LD(&h->rlog_src);
        uint64_t *src = so < r->heap_off ? (shmds__hdr_slot_off(so) ? (uint64_t *)(void *)(r->base + so)
                                                                    : NULL)
                                         : shmds__ptr_chk(r, so, 8, 8);
        uint64_t *dst = shmds__ptr_chk(r, LD(&h->rlog_dst), 16, 8);
        if (src == NULL || dst == NULL)
            return SHMDS_ECORRUPT;
        if (b != 0 && LD(src) == b) {
            if (LD(dst) != b) {
                /* The epoch now is no earlier than the one the dead
                 * retirer read: later is only more careful. */
                ST(&dst[1], LDA(&h->gepoch));
                STR(dst, b);
            }
            SHMDS_FAULT("guard.repair.recorded");
            ST(src, 0);
        }
        STR(&h->rlog_op, 0);
    }
    return 0;
}

static int retire_lock(shmds_region *r)
{
    return shmds__lock(r, &r->hdr->retire_lock, retire_repair, r);
}

int shmds__guard_settle(shmds_region *r)
{
    int rc = retire_lock(r);
    if (rc < 0)
        return rc;
    shmds_mutex_unlock(&r->hdr->retire_lock);
    return 0;
}

/* The smallest epoch of an occupied slot, after bumping the epoch (the
 * new epoch, also in *now, when no reader is inside a guard entered
 * before the bump). Slots of dead owners met on the way are cleared. A
 * missing or damaged table: -errno, nothing may be freed. */
static int readers_min(shmds_region *r, uint64_t *min, uint64_t *now)
{
    struct shmds__rtab *t;
    int rc = rt_get(r, &t);
    if (rc != 0)
        return rc;
    uint64_t e = __atomic_add_fetch(&r->hdr->gepoch, 1, __ATOMIC_SEQ_CST);
    __atomic_thread_fence(__ATOMIC_SEQ_CST); /* the unlinks before the slot loads */
    uint64_t m = e;
    uint32_t n = rt_hwm(t);
    for (uint32_t i = 0; i < n; i++) {
        struct rt_slot *s = &t->slots[i];
        uint64_t o = LDA(&s->owner);
        if (o == 0)
            continue;
        uint64_t se = LDA(&s->epoch);
        if (se == 0 || se >= m)
            continue;
        if (!owner_alive(o, LD(&s->start))) {
            __atomic_compare_exchange_n(&s->owner, &o, 0, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED);
            continue;
        }
        m = se;
    }
    *min = m;
    *now = e;
    return 0;
}

/* Whether the region's directory names no object (an idle region; a
 * hint read without the directory lock: a wrong answer only keeps or
 * gives back one retire block too many). */
static bool no_objects(const shmds_region *r)
{
    return LD(&r->hdr->dir_names) == 0;
}

/* Hand back the last retire block while it is empty (retire lock held),
 * so a list that grew while a reader was stuck shrinks again. The first
 * block stays while the region holds objects: the common retirement never
 * allocates, and a full heap still has its 254 records (a delete in a
 * full region must work: it is how a user makes room). An explicit
 * reclamation (`all`) in a region without objects hands it back too: an
 * idle region holds no retire block. */
static int trim_locked(shmds_region *r, bool all)
{
    for (;;) {
        uint64_t *last = NULL, n = 0;
        struct rblock *lb = NULL;
        for (uint64_t *slot = &r->hdr->retire_head;;) {
            struct rblock *b;
            int rc = rb_step(r, slot, &b, &n);
            if (rc != 0 || b == NULL) {
                if (rc != 0)
                    return rc;
                break;
            }
            last = slot;
            lb = b;
            slot = &b->next;
        }
        if (lb == NULL || (last == &r->hdr->retire_head && !(all && no_objects(r))))
            return 0;
        for (unsigned i = 0; i < RB_RECS; i++)
            if (LD(&lb->rec[i].off) != 0)
                return 0;
        int rc = shmds__free_from(r, last);
        if (rc < 0)
            return rc;
    }
}

/* Free what no reader can hold (retire lock held). Trailing retire blocks
 * left empty go back too. Returns the number freed. */
static int reclaim_locked(shmds_region *r, bool all)
{
    struct shmds__hdr *h = r->hdr;
    uint64_t min, now;
    int rc = readers_min(r, &min, &now);
    if (rc != 0)
        return 0; /* no table, no frees: the records keep their blocks */
    int freed = 0;
    uint64_t used = 0, n = 0;
    for (uint64_t *slot = &h->retire_head;;) {
        struct rblock *b;
        if ((rc = rb_step(r, slot, &b, &n)) != 0)
            return rc;
        if (b == NULL)
            break;
        for (unsigned i = 0; i < RB_RECS; i++) {
            struct rrec *rec = &b->rec[i];
            if (LD(&rec->off) == 0)
                continue;
            if (LD(&rec->stamp) < min) {
                if ((rc = shmds__free_from(r, &rec->off)) < 0)
                    return rc;
                SHMDS_FAULT("guard.reclaim.freed");
                freed++;
            } else {
                used++;
            }
        }
        slot = &b->next;
    }
    ST(&h->retire_used, used);
    ST(&h->retire_mark, used);
    return (rc = trim_locked(r, all)) < 0 ? rc : freed;
}

/* A free record (retire lock held): reclaim when due, then look; when
 * every record holds a block, reclaim, then add a retire block. -ENOMEM:
 * none to be had (readers hold every record and the heap is full). */
static int rec_free(shmds_region *r, struct rrec **out)
{
    struct shmds__hdr *h = r->hdr;
    int rc;
    /* RECLAIM_AT retirements since the last reclamation (not since the
     * list was empty: with a reader stuck, every retirement would scan). */
    uint64_t used = LD(&h->retire_used), mark = LD(&h->retire_mark);
    if (used >= RECLAIM_AT && used - (mark < used ? mark : 0) >= RECLAIM_AT &&
        (rc = reclaim_locked(r, false)) < 0)
        return rc;
    for (int pass = 0; pass < 3; pass++) {
        uint64_t n = 0;
        uint64_t *slot = &h->retire_head;
        for (;;) {
            struct rblock *b;
            if ((rc = rb_step(r, slot, &b, &n)) != 0)
                return rc;
            if (b == NULL)
                break;
            for (unsigned i = 0; i < RB_RECS; i++)
                if (LD(&b->rec[i].off) == 0) {
                    *out = &b->rec[i];
                    return 0;
                }
            slot = &b->next;
        }
        /* All full: free what we can, else one block more. */
        if (pass == 0 && (rc = reclaim_locked(r, false)) != 0) {
            if (rc < 0)
                return rc;
            continue;
        }
        if ((rc = shmds__alloc_zeroed_into(r, sizeof(struct rblock), slot)) < 0)
            return rc == -ENOSPC ? -ENOMEM : rc;
        SHMDS_FAULT("guard.retire.block_added");
    }
    return SHMDS_ECORRUPT;
}

/* The region offset of an allocator slot, or 0 when it is not one the
 * allocator (and so the repair) would take. */
static uint64_t slot_off(shmds_region *r, const uint64_t *slot)
{
    const unsigned char *p = (const unsigned char *)slot;
    if (p < r->base || ((uintptr_t)p & 7) != 0)
        return 0;
    uint64_t off = (uint64_t)(p - r->base);
    if (off < r->heap_off)
        return shmds__hdr_slot_off(off) ? off : 0;
    return shmds__off_ok(r, off, 8, 8) ? off : 0;
}

int shmds__guard_retire(shmds_region *r, uint64_t *slot)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    uint64_t so = slot_off(r, slot);
    if (so == 0)
        return -EINVAL;
    if (LD(slot) == 0)
        return 0;
    struct shmds__hdr *h = r->hdr;
    int lk = retire_lock(r);
    if (lk < 0)
        return lk;
    uint64_t b = LD(slot);
    struct rrec *rec = NULL;
    if (b != 0 && (rc = rec_free(r, &rec)) == 0) {
        /* The caller's unlink before the epoch it is stamped with. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        uint64_t stamp = LDA(&h->gepoch);
        ST(&h->rlog_src, so);
        ST(&h->rlog_blk, b);
        ST(&h->rlog_dst, shmds_off(r, &rec->off));
        STR(&h->rlog_op, 1);
        SHMDS_FAULT("guard.retire.logged");
        ST(&rec->stamp, stamp);
        STR(&rec->off, b);
        SHMDS_FAULT("guard.retire.recorded");
        ST(slot, 0);
        SHMDS_FAULT("guard.retire.taken");
        STR(&h->rlog_op, 0);
        ST(&h->retire_used, LD(&h->retire_used) + 1);
    } else if (rc == -ENOMEM) {
        /* No record to be had: when no reader entered its guard before
         * the block was unlinked (the bump in readers_min comes after the
         * unlink), nobody can hold it: free it now (one allocator commit
         * on the caller's slot). Else it stays in *slot. */
        uint64_t min, now;
        if (readers_min(r, &min, &now) == 0 && min == now)
            rc = (rc = shmds__free_from(r, slot)) > 0 ? 0 : rc;
        else
            rc = SHMDS__RETIRE_KEPT;
    }
    shmds_mutex_unlock(&h->retire_lock);
    return rc;
}

bool shmds__guard_roomy(shmds_region *r)
{
    if (LD(&r->hdr->retire_used) < RB_RECS / 2)
        return true;
    /* Piled up: free what the readers have let go of since (else nothing
     * that waits on this would ever retire again to trigger it). */
    if (retire_lock(r) < 0)
        return false;
    int rc = reclaim_locked(r, false);
    shmds_mutex_unlock(&r->hdr->retire_lock);
    return rc >= 0 && LD(&r->hdr->retire_used) < RB_RECS / 2;
}

int shmds__guard_reclaim(shmds_region *r)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    if ((rc = retire_lock(r)) < 0)
        return rc;
    rc = reclaim_locked(r, true);
    shmds_mutex_unlock(&r->hdr->retire_lock);
    return rc;
}

int shmds__guard_retired(shmds_region *r, uint64_t *n)
{
    uint64_t cnt = 0, k = 0;
    for (uint64_t *slot = &r->hdr->retire_head;;) {
        struct rblock *b;
        int rc = rb_step(r, slot, &b, &k);
        if (rc != 0)
            return rc;
        if (b == NULL)
            break;
        for (unsigned i = 0; i < RB_RECS; i++)
            cnt += LD(&b->rec[i].off) != 0;
        slot = &b->next;
    }
    *n = cnt;
    return 0;
}

SHMDS_API int shmds_guard_info_get(shmds_region *r, shmds_guard_info *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    memset(out, 0, sizeof *out);
    struct shmds__rtab *t;
    int rc = rt_get(r, &t);
    if (rc != 0 || (rc = shmds__guard_retired(r, &out->retired)) != 0)
        return rc;
    out->epoch = LDA(&r->hdr->gepoch);
    uint32_t n = rt_hwm(t);
    for (uint32_t i = 0; i < n; i++) {
        const struct rt_slot *s = &t->slots[i];
        uint64_t o = LD(&s->owner), e = LD(&s->epoch);
        if (o == 0)
            continue;
        out->slots++;
        if (e == 0)
            continue;
        out->inside++;
        if (out->oldest_pid == 0 || e < out->oldest_epoch) {
            out->oldest_pid = (int64_t)(o >> 32);
            out->oldest_tid = (int64_t)(uint32_t)o;
            out->oldest_epoch = e;
            out->oldest_alive = owner_alive(o, LD(&s->start));
        }
    }
    return 0;
}
