/*
 * The bounded multi-process queue: variable-size messages copied into a
 * byte ring inside the region.
 *
 * Layer: a structure. Calls down into the object layer (create, open,
 * destroy: shmds__queue_ops), lock.c and the region; never into another
 * structure or the region-wide passes (check.c).
 *
 * Layout: one heap block holds the header (struct qhdr) and, right after
 * it, the ring of `cap` bytes. The ring is counted in 8-byte units. A
 * message is a record: an 8-byte header {len, tag} followed by len payload
 * bytes padded to 8. A record header never straddles the end of the ring
 * (8-byte units); a payload may, and is copied in two pieces. The tag is
 * the record's index mixed with a constant, so the check can tell a real
 * record from stale bytes.
 *
 * Indices: each side owns one 64-bit word on a cache line of its own.
 *   tail word = closed(1) | count(31) | index(32)   (written by senders)
 *   head word =      0    | count(31) | index(32)   (written by receivers)
 * `index` runs over [0, 2*cap_u) so that full and empty differ (used units
 * = tail - head mod 2*cap_u); `count` is the number of messages ever sent or
 * received, mod 2^31, so the queue's length is one subtraction and is
 * always consistent with the indices. cap_u < 2^31 makes both unambiguous.
 *
 * Commit points: a send copies its record to the free space at the tail
 * first, then publishes it with one compare-and-swap of the tail word
 * (release order); the CAS fails only if the closed bit was set meanwhile,
 * so "shut down" and "sent" can never both be true of the same message. A
 * receive copies the payload out first, then stores the head word. So a
 * process killed anywhere leaves the ring exactly as at its last commit:
 * uncommitted bytes lie in free space and are overwritten later. That is
 * why the queue mutex has no repair callback and the queue no intent log:
 * there is never a half-done change to roll back or forward.
 *
 * Default mode: senders and receivers hold the queue's robust mutex around
 * the check-copy-commit sequence. SPSC mode: no mutex; the producer thread
 * (claimed by thread id) alone writes the tail word and the consumer thread
 * alone writes the head word; each keeps a cached copy of the other's word
 * and re-reads it only when the ring looks full or empty.
 *
 * Waiting: semaphores are doorbells (DESIGN.md section 4). A sleeper counts
 * itself in `recv_sleepers` / `send_sleepers`, re-checks the indices, and
 * waits on the semaphore for at most SLICE_MS before re-checking again. A
 * committer rings the other side's bell only when someone sleeps there and
 * the bell has fewer tokens than sleepers, so the count stays small even
 * when a sleeper died and left its count behind (that costs spurious
 * wake-ups, never correctness). A woken waiter that leaves work behind
 * (more messages, more room, or a shut-down queue) rings again, so a
 * shut-down wakes every sleeper in a chain.
 */
#include "object.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define Q_MAGIC UINT64_C(0x3130555144534d48) /* "HMDSQU01" little-endian */
#define Q_VERSION 1u
#define TAG_MIX UINT32_C(0x51a7e5c3)
#define SLICE_MS 50        /* longest sleep before re-checking the indices */
#define SPIN_ROUNDS 64     /* busy checks before yielding */
#define YIELD_ROUNDS 8     /* yields before sleeping */
#define CHECK_TRIES 16     /* lock-free check: walks attempted on a moving queue */
#define LEN_TRIES 1000     /* snapshots shmds_queue_len attempts */

#define IDX_MASK UINT64_C(0xffffffff)
#define CNT_SHIFT 32
#define CNT_MASK UINT64_C(0x7fffffff)
#define CLOSED_BIT (UINT64_C(1) << 63)

/* ---------------------------------------------------------------------------
 * Shared layout
 * ------------------------------------------------------------------------ */

struct qhdr {
    /* Immutable after create; covered by `checksum`. */
    uint64_t magic;
    uint32_t version;
    uint32_t flags;
    uint64_t cap;     /* ring bytes, multiple of 8 */
    uint64_t max_msg;
    uint64_t self;    /* offset of this header */
    uint64_t ring;    /* offset of the ring */
    uint64_t block;   /* offset of the heap block holding it all */
    uint64_t checksum; /* FNV-1a of the bytes from `version` up to here */
    shmds_mutex lock; /* default mode: guards both words and the copies */
    alignas(SHMDS__CACHE_LINE) uint64_t tail; /* producer line */
    uint32_t prod_claim; /* SPSC: thread id of the producer, 0 = none */
    uint8_t pad1[SHMDS__CACHE_LINE - 12];
    alignas(SHMDS__CACHE_LINE) uint64_t head; /* consumer line */
    uint32_t cons_claim; /* SPSC: thread id of the consumer, 0 = none */
    uint8_t pad2[SHMDS__CACHE_LINE - 12];
    alignas(SHMDS__CACHE_LINE) uint32_t recv_sleepers; /* doorbell line */
    uint32_t send_sleepers;
    uint8_t pad3[SHMDS__CACHE_LINE - 8];
    shmds_sem not_empty; /* rung for receivers */
    shmds_sem not_full;  /* rung for senders */
};
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, magic) == 0, "queue: magic");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, checksum) == 56, "queue: checksum");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, lock) == 64, "queue: lock");
SHMDS__STATIC_ASSERT(sizeof(shmds_mutex) == 64, "queue: lock is one line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, tail) == 128, "queue: tail line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, head) == 192, "queue: head line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, recv_sleepers) == 256, "queue: doorbell line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, not_empty) == 320, "queue: semaphores");
SHMDS__STATIC_ASSERT(sizeof(struct qhdr) % SHMDS__CACHE_LINE == 0, "queue: ring is line-aligned");

struct rec {
    uint32_t len;
    uint32_t tag;
};
SHMDS__STATIC_ASSERT(sizeof(struct rec) == SHMDS_QUEUE_MSG_OVERHEAD, "record header");

/* ---------------------------------------------------------------------------
 * The process-local handle
 * ------------------------------------------------------------------------ */

enum { SIDE_PROD = 0, SIDE_CONS = 1 };

struct shmds_queue {
    shmds_region *r;
    struct qhdr *h;
    unsigned char *ring;
    /* Copied from the header once validated, and trusted from then on. */
    uint64_t cap_u;  /* ring size in 8-byte units */
    uint64_t max_msg;
    uint32_t flags;
    shmds_off_t off;
    /* SPSC: this handle's claims, and the other side's word last seen. */
    struct {
        bool held;
        pthread_t thread;
        unsigned fork_gen;
        uint32_t tid;
    } claim[2];
    uint64_t seen_head; /* producer's cached copy */
    uint64_t seen_tail; /* consumer's cached copy */
};

/* Bumped in a child after fork(), so a handle inherited across fork knows
 * its SPSC claims belong to the parent's thread. */
static unsigned fork_gen;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void)
{
    fork_gen++;
}

static void atfork_register(void)
{
    pthread_atfork(NULL, NULL, on_fork_child);
}

/* ---------------------------------------------------------------------------
 * Words and records
 * ------------------------------------------------------------------------ */

static inline uint64_t w_idx(uint64_t w)
{
    return w & IDX_MASK;
}

static inline uint64_t w_cnt(uint64_t w)
{
    return (w >> CNT_SHIFT) & CNT_MASK;
}

static inline uint64_t w_make(uint64_t idx, uint64_t cnt)
{
    return (cnt & CNT_MASK) << CNT_SHIFT | idx;
}

/* Units used between head and tail (both in [0, 2*cap_u)). */
static inline uint64_t used_units(const shmds_queue *q, uint64_t tw, uint64_t hw)
{
    uint64_t t = w_idx(tw), h = w_idx(hw);
    return t >= h ? t - h : t + 2 * q->cap_u - h;
}

static inline uint64_t msgs_between(uint64_t tw, uint64_t hw)
{
    return (w_cnt(tw) - w_cnt(hw)) & CNT_MASK;
}

static inline uint64_t idx_add(const shmds_queue *q, uint64_t idx, uint64_t n)
{
    idx += n;
    return idx >= 2 * q->cap_u ? idx - 2 * q->cap_u : idx;
}

/* Byte offset in the ring of an index. */
static inline uint64_t idx_byte(const shmds_queue *q, uint64_t idx)
{
    return (idx >= q->cap_u ? idx - q->cap_u : idx) * 8;
}

static inline uint64_t rec_units(uint64_t len)
{
    return 1 + (len + 7) / 8;
}

static inline uint32_t rec_tag(uint64_t idx)
{
    return (uint32_t)idx ^ TAG_MIX;
}

/* True when the two words can describe this ring. Shared memory is
 * untrusted: every index is checked before it is used. */
static inline bool words_ok(const shmds_queue *q, uint64_t tw, uint64_t hw)
{
    return w_idx(tw) < 2 * q->cap_u && w_idx(hw) < 2 * q->cap_u && (hw & CLOSED_BIT) == 0 &&
           used_units(q, tw, hw) <= q->cap_u && msgs_between(tw, hw) <= used_units(q, tw, hw);
}

/* Copy n bytes into the ring at byte offset `at`, wrapping. */
static void ring_put(shmds_queue *q, uint64_t at, const void *src, uint64_t n)
{
    uint64_t cap = q->cap_u * 8;
    uint64_t first = n < cap - at ? n : cap - at;
    memcpy(q->ring + at, src, first);
    if (first < n)
        memcpy(q->ring, (const unsigned char *)src + first, n - first);
}

static void ring_get(const shmds_queue *q, uint64_t at, void *dst, uint64_t n)
{
    uint64_t cap = q->cap_u * 8;
    uint64_t first = n < cap - at ? n : cap - at;
    memcpy(dst, q->ring + at, first);
    if (first < n)
        memcpy((unsigned char *)dst + first, q->ring, n - first);
}

/* Write a whole record at index `idx` (in free space). */
static void rec_write(shmds_queue *q, uint64_t idx, const void *msg, uint64_t len)
{
    uint64_t at = idx_byte(q, idx);
    struct rec rh = {(uint32_t)len, rec_tag(idx)};
    memcpy(q->ring + at, &rh, sizeof rh);
    SHMDS_FAULT("queue.send.after_header");
    uint64_t pat = at + 8 == q->cap_u * 8 ? 0 : at + 8;
    if (len > 0)
        ring_put(q, pat, msg, len);
}

/* Read and validate the record header at `idx`, of which `avail` units are
 * committed. Returns its length, or -1 when the framing is damaged. */
static int64_t rec_read(const shmds_queue *q, uint64_t idx, uint64_t avail)
{
    struct rec rh;
    memcpy(&rh, q->ring + idx_byte(q, idx), sizeof rh);
    if (rh.tag != rec_tag(idx) || rh.len > q->max_msg || rec_units(rh.len) > avail)
        return -1;
    return rh.len;
}

static void payload_read(const shmds_queue *q, uint64_t idx, void *buf, uint64_t len)
{
    uint64_t at = idx_byte(q, idx) + 8;
    if (at == q->cap_u * 8)
        at = 0;
    if (len > 0)
        ring_get(q, at, buf, len);
}

/* ---------------------------------------------------------------------------
 * Doorbells
 * ------------------------------------------------------------------------ */

static uint64_t deadline_of(int timeout_ms)
{
    return timeout_ms > 0 ? shmds__now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
}

static bool expired(int timeout_ms, uint64_t deadline_ns)
{
    return timeout_ms == 0 || (timeout_ms > 0 && shmds__now_ns() >= deadline_ns);
}

/* Busy-wait a little for `word` to change from `seen`, yielding the CPU
 * after a few rounds (the other party may be waiting for this CPU). True
 * when it changed. */
static bool spin_for_change(const uint64_t *word, uint64_t seen)
{
    for (int i = 0; i < SPIN_ROUNDS + YIELD_ROUNDS; i++) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen)
            return true;
        if (i < SPIN_ROUNDS)
            shmds__cpu_relax();
        else
            sched_yield();
    }
    return false;
}

/* ---------------------------------------------------------------------------
 * Default mode: under the queue mutex
 * ------------------------------------------------------------------------ */

/* Lock the queue. The mutex has no repair function because a dead holder
 * leaves nothing half done (see the top of the file). */
static int q_lock(shmds_queue *q)
{
    int rc = shmds__lock(q->r, &q->h->lock, NULL, NULL);
    return rc == SHMDS_RECOVERED ? 0 : rc;
}

/* Lock the queue for a send or receive that may wait timeout_ms in all
 * (ending at deadline_ns when > 0): a busy lock is a wait like any other,
 * so 0 never waits (-EAGAIN) and a positive timeout bounds the lock's wait
 * too (-ETIMEDOUT). */
static int q_lock_io(shmds_queue *q, int timeout_ms, uint64_t deadline_ns)
{
    int ms = timeout_ms;
    if (timeout_ms > 0 && (ms = shmds__ms_left(deadline_ns)) == 0)
        ms = 1; /* deadline passed: one last try, then -ETIMEDOUT */
    int rc = shmds__lock_within(q->r, &q->h->lock, ms, NULL, NULL);
    if (rc == -EBUSY)
        return -EAGAIN;
    return rc == SHMDS_RECOVERED ? 0 : rc;
}

static int send_locked(shmds_queue *q, const void *msg, uint64_t len, int timeout_ms)
{
    struct qhdr *h = q->h;
    uint64_t need = rec_units(len), deadline = deadline_of(timeout_ms);
    int rc = q_lock_io(q, timeout_ms, deadline);
    if (rc != 0)
        return rc;
    for (;;) {
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
        if (!words_ok(q, tw, hw)) {
            rc = SHMDS_ECORRUPT;
            break;
        }
        if (tw & CLOSED_BIT) {
            shmds__bell_ring(&h->not_full, &h->send_sleepers, false); /* pass the news on */
            rc = SHMDS_ECLOSED;
            break;
        }
        uint64_t free_u = q->cap_u - used_units(q, tw, hw);
        if (need <= free_u) {
            rec_write(q, w_idx(tw), msg, len);
            SHMDS_FAULT("queue.send.before_commit");
            uint64_t nw = w_make(idx_add(q, w_idx(tw), need), w_cnt(tw) + 1);
            /* Only a shut-down can change the word under the lock. */
            if (!__atomic_compare_exchange_n(&h->tail, &tw, nw, false, __ATOMIC_SEQ_CST,
                                             __ATOMIC_RELAXED)) {
                rc = SHMDS_ECLOSED;
                break;
            }
            SHMDS_FAULT("queue.send.after_commit");
            shmds__bell_ring(&h->not_empty, &h->recv_sleepers, false);
            if (free_u - need > 0)
                shmds__bell_ring(&h->not_full, &h->send_sleepers, false);
            rc = 0;
            break;
        }
        if (expired(timeout_ms, deadline)) {
            rc = timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
            break;
        }
        shmds_mutex_unlock(&h->lock);
        if (!spin_for_change(&h->head, hw)) {
            __atomic_add_fetch(&h->send_sleepers, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&h->head, __ATOMIC_SEQ_CST) == hw &&
                (__atomic_load_n(&h->tail, __ATOMIC_SEQ_CST) & CLOSED_BIT) == 0)
                rc = shmds__bell_wait(&h->not_full, deadline, SLICE_MS);
            __atomic_sub_fetch(&h->send_sleepers, 1, __ATOMIC_SEQ_CST);
            if (rc != 0)
                return rc;
        }
        if ((rc = q_lock_io(q, timeout_ms, deadline)) != 0)
            return rc;
    }
    shmds_mutex_unlock(&h->lock);
    return rc;
}

static int recv_locked(shmds_queue *q, void *buf, size_t cap, size_t *lenp, int timeout_ms)
{
    struct qhdr *h = q->h;
    uint64_t deadline = deadline_of(timeout_ms);
    int rc = q_lock_io(q, timeout_ms, deadline);
    if (rc != 0)
        return rc;
    for (;;) {
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
        if (!words_ok(q, tw, hw)) {
            rc = SHMDS_ECORRUPT;
            break;
        }
        uint64_t used = used_units(q, tw, hw);
        if (used > 0) {
            int64_t len = rec_read(q, w_idx(hw), used);
            if (len < 0) {
                rc = SHMDS_ECORRUPT;
                break;
            }
            *lenp = (size_t)len;
            if ((uint64_t)len > cap) {
                rc = -ENOBUFS;
                break;
            }
            payload_read(q, w_idx(hw), buf, (uint64_t)len);
            SHMDS_FAULT("queue.recv.before_commit");
            uint64_t need = rec_units((uint64_t)len);
            __atomic_store_n(&h->head, w_make(idx_add(q, w_idx(hw), need), w_cnt(hw) + 1),
                             __ATOMIC_SEQ_CST);
            SHMDS_FAULT("queue.recv.after_commit");
            shmds__bell_ring(&h->not_full, &h->send_sleepers, false);
            if (used > need)
                shmds__bell_ring(&h->not_empty, &h->recv_sleepers, false);
            rc = 0;
            break;
        }
        if (tw & CLOSED_BIT) {
            shmds__bell_ring(&h->not_empty, &h->recv_sleepers, false);
            rc = SHMDS_ECLOSED;
            break;
        }
        if (expired(timeout_ms, deadline)) {
            rc = timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
            break;
        }
        shmds_mutex_unlock(&h->lock);
        if (!spin_for_change(&h->tail, tw)) {
            __atomic_add_fetch(&h->recv_sleepers, 1, __ATOMIC_SEQ_CST);
            if (__atomic_load_n(&h->tail, __ATOMIC_SEQ_CST) == tw)
                rc = shmds__bell_wait(&h->not_empty, deadline, SLICE_MS);
            __atomic_sub_fetch(&h->recv_sleepers, 1, __ATOMIC_SEQ_CST);
            if (rc != 0)
                return rc;
        }
        if ((rc = q_lock_io(q, timeout_ms, deadline)) != 0)
            return rc;
    }
    shmds_mutex_unlock(&h->lock);
    return rc;
}

/* ---------------------------------------------------------------------------
 * SPSC mode: claims and the lock-free data path
 * ------------------------------------------------------------------------ */

static bool thread_alive(uint32_t tid)
{
    /* kill() accepts any thread id and reaches its process. */
    return !shmds__proc_gone(tid);
}

/* Make the calling thread this queue's producer or consumer. Cost: one
 * comparison once claimed. Returns 0 or -EBUSY. */
static int claim(shmds_queue *q, int side)
{
    if (shmds__likely(q->claim[side].held && q->claim[side].fork_gen == fork_gen &&
                      pthread_equal(q->claim[side].thread, pthread_self())))
        return 0;
    pthread_once(&atfork_once, atfork_register);
    uint32_t *word = side == SIDE_PROD ? &q->h->prod_claim : &q->h->cons_claim;
    uint32_t me = (uint32_t)syscall(SYS_gettid);
    uint32_t cur = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    for (int tries = 0; cur != me; tries++) {
        if (tries > 8 || (cur != 0 && thread_alive(cur)))
            return -EBUSY;
        /* Free, or its thread died: take it over. Nothing to repair, the
         * other words were left at a commit point. */
        if (__atomic_compare_exchange_n(word, &cur, me, false, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            cur = me;
    }
    q->claim[side].held = true;
    q->claim[side].thread = pthread_self();
    q->claim[side].fork_gen = fork_gen;
    q->claim[side].tid = me;
    if (side == SIDE_PROD)
        q->seen_head = __atomic_load_n(&q->h->head, __ATOMIC_ACQUIRE);
    else
        q->seen_tail = __atomic_load_n(&q->h->tail, __ATOMIC_ACQUIRE);
    return 0;
}

static void unclaim(shmds_queue *q, int side)
{
    if (!q->claim[side].held || q->claim[side].fork_gen != fork_gen)
        return;
    uint32_t *word = side == SIDE_PROD ? &q->h->prod_claim : &q->h->cons_claim;
    uint32_t me = q->claim[side].tid;
    __atomic_compare_exchange_n(word, &me, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    q->claim[side].held = false;
}

static int send_spsc(shmds_queue *q, const void *msg, uint64_t len, int timeout_ms)
{
    struct qhdr *h = q->h;
    int rc = claim(q, SIDE_PROD);
    if (rc != 0)
        return rc;
    uint64_t need = rec_units(len), deadline = 0;
    bool timed = false;
    for (;;) {
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
        uint64_t hw = q->seen_head;
        if (tw & CLOSED_BIT)
            return SHMDS_ECLOSED;
        if (!words_ok(q, tw, hw) || q->cap_u - used_units(q, tw, hw) < need) {
            hw = q->seen_head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
            if (!words_ok(q, tw, hw))
                return SHMDS_ECORRUPT;
        }
        if (q->cap_u - used_units(q, tw, hw) >= need) {
            rec_write(q, w_idx(tw), msg, len);
            SHMDS_FAULT("queue.spsc_send.before_commit");
            uint64_t nw = w_make(idx_add(q, w_idx(tw), need), w_cnt(tw) + 1);
            if (!__atomic_compare_exchange_n(&h->tail, &tw, nw, false, __ATOMIC_SEQ_CST,
                                             __ATOMIC_RELAXED))
                return SHMDS_ECLOSED; /* shut down meanwhile: not sent */
            shmds__bell_ring(&h->not_empty, &h->recv_sleepers, false);
            return 0;
        }
        if (!timed) {
            deadline = deadline_of(timeout_ms);
            timed = true;
        }
        if (expired(timeout_ms, deadline))
            return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
        if (spin_for_change(&h->head, hw))
            continue;
        __atomic_add_fetch(&h->send_sleepers, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&h->head, __ATOMIC_SEQ_CST) == hw &&
            (__atomic_load_n(&h->tail, __ATOMIC_SEQ_CST) & CLOSED_BIT) == 0)
            rc = shmds__bell_wait(&h->not_full, deadline, SLICE_MS);
        __atomic_sub_fetch(&h->send_sleepers, 1, __ATOMIC_SEQ_CST);
        if (rc != 0)
            return rc;
    }
}

static int recv_spsc(shmds_queue *q, void *buf, size_t cap, size_t *lenp, int timeout_ms)
{
    struct qhdr *h = q->h;
    int rc = claim(q, SIDE_CONS);
    if (rc != 0)
        return rc;
    uint64_t deadline = 0;
    bool timed = false;
    for (;;) {
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
        uint64_t tw = q->seen_tail;
        if (!words_ok(q, tw, hw) || used_units(q, tw, hw) == 0) {
            tw = q->seen_tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
            if (!words_ok(q, tw, hw))
                return SHMDS_ECORRUPT;
        }
        uint64_t used = used_units(q, tw, hw);
        if (used > 0) {
            int64_t len = rec_read(q, w_idx(hw), used);
            if (len < 0)
                return SHMDS_ECORRUPT;
            *lenp = (size_t)len;
            if ((uint64_t)len > cap)
                return -ENOBUFS;
            payload_read(q, w_idx(hw), buf, (uint64_t)len);
            SHMDS_FAULT("queue.spsc_recv.before_commit");
            __atomic_store_n(&h->head,
                             w_make(idx_add(q, w_idx(hw), rec_units((uint64_t)len)), w_cnt(hw) + 1),
                             __ATOMIC_SEQ_CST);
            shmds__bell_ring(&h->not_full, &h->send_sleepers, false);
            return 0;
        }
        if (tw & CLOSED_BIT)
            return SHMDS_ECLOSED;
        if (!timed) {
            deadline = deadline_of(timeout_ms);
            timed = true;
        }
        if (expired(timeout_ms, deadline))
            return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
        if (spin_for_change(&h->tail, tw))
            continue;
        __atomic_add_fetch(&h->recv_sleepers, 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&h->tail, __ATOMIC_SEQ_CST) == tw)
            rc = shmds__bell_wait(&h->not_empty, deadline, SLICE_MS);
        __atomic_sub_fetch(&h->recv_sleepers, 1, __ATOMIC_SEQ_CST);
        if (rc != 0)
            return rc;
    }
}

/* ---------------------------------------------------------------------------
 * Create, open, close, destroy
 * ------------------------------------------------------------------------ */

static uint64_t hdr_checksum(const struct qhdr *h)
{
    /* `magic` is left out: it is stored last, when the rest is written. */
    return shmds__fnv1a(SHMDS__FNV_INIT, (const unsigned char *)h + 8,
                        offsetof(struct qhdr, checksum) - 8);
}

/* Validate the header at `off` and fill a handle from it. */
static int handle_make(shmds_region *r, shmds_off_t off, shmds_queue **out)
{
    struct qhdr *h = shmds__ptr_chk(r, off, sizeof(struct qhdr), SHMDS__CACHE_LINE);
    if (h == NULL)
        return SHMDS_ECORRUPT;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != Q_MAGIC || h->version != Q_VERSION ||
        h->checksum != hdr_checksum(h))
        return SHMDS_ECORRUPT;
    uint64_t cap = h->cap;
    if (h->self != off || h->ring != off + sizeof(struct qhdr) || (h->flags & ~SHMDS_QUEUE_SPSC) ||
        cap < 16 || cap > SHMDS_QUEUE_CAPACITY_MAX || cap % 8 != 0 || h->max_msg == 0 ||
        h->max_msg > cap - 8 || !shmds__off_ok(r, h->ring, cap, 8))
        return SHMDS_ECORRUPT;
    shmds_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return -ENOMEM;
    q->r = r;
    q->h = h;
    q->ring = r->base + h->ring;
    q->cap_u = cap / 8;
    q->max_msg = h->max_msg;
    q->flags = h->flags;
    q->off = off;
    *out = q;
    return 0;
}

struct qparams {
    uint64_t cap;
    size_t max_msg;
    unsigned flags;
};

/* The object layer's init: fill in the zeroed header, magic last. The
 * ring follows the header in the same block. */
static int queue_init(shmds_region *r, shmds_off_t off, shmds_off_t block, void *arg)
{
    const struct qparams *p = arg;
    struct qhdr *h = (struct qhdr *)(void *)(r->base + off);
    h->version = Q_VERSION;
    h->flags = p->flags;
    h->cap = p->cap;
    h->max_msg = p->max_msg;
    h->self = off;
    h->ring = off + sizeof(struct qhdr);
    h->block = block;
    h->checksum = hdr_checksum(h);
    int rc;
    if ((rc = shmds_mutex_init(&h->lock)) != 0 || (rc = shmds_sem_init(&h->not_empty, 0)) != 0 ||
        (rc = shmds_sem_init(&h->not_full, 0)) != 0)
        return rc;
    __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

SHMDS_API int shmds_queue_create(shmds_region *r, const char *name, size_t capacity_bytes,
                                 size_t max_msg, unsigned flags, shmds_queue **out)
{
    if (r == NULL || out == NULL || (flags & ~(unsigned)SHMDS_QUEUE_SPSC))
        return -EINVAL;
    if (capacity_bytes > SHMDS_QUEUE_CAPACITY_MAX)
        return -EINVAL;
    uint64_t cap = ((uint64_t)capacity_bytes + 7) & ~UINT64_C(7);
    if (cap < 16 || max_msg == 0 || max_msg > cap - 8)
        return -EINVAL;
    struct qparams p = {cap, max_msg, flags};
    void *q;
    int rc = shmds__obj_create_attach(r, &shmds__queue_ops, name, sizeof(struct qhdr) + cap,
                                      queue_init, &p, &q);
    if (rc == 0)
        *out = q;
    return rc;
}

SHMDS_API int shmds_queue_open(shmds_region *r, const char *name, shmds_queue **out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    void *q;
    int rc = shmds__obj_open(r, &shmds__queue_ops, name, &q);
    if (rc == 0)
        *out = q;
    return rc;
}

SHMDS_API void shmds_queue_close(shmds_queue *q)
{
    if (q == NULL)
        return;
    if (q->flags & SHMDS_QUEUE_SPSC) {
        unclaim(q, SIDE_PROD);
        unclaim(q, SIDE_CONS);
    }
    free(q);
}

/* The object layer's teardown: mark the queue destroyed; its ring is in
 * the header's block, which the object layer frees. Idempotent. */
static int queue_teardown_at(shmds_region *r, shmds_off_t off)
{
    struct qhdr *h = shmds__ptr_chk(r, off, sizeof(struct qhdr), SHMDS__CACHE_LINE);
    if (h == NULL)
        return SHMDS_ECORRUPT;
    __atomic_store_n(&h->magic, 0, __ATOMIC_RELEASE);
    return 0;
}

SHMDS_API int shmds_queue_destroy(shmds_queue *q)
{
    if (q == NULL)
        return -EINVAL;
    int rc = shmds__obj_destroy(q->r, &shmds__queue_ops, q->off);
    free(q);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Send, receive, shut down, length
 * ------------------------------------------------------------------------ */

static int io_check(shmds_queue *q, int timeout_ms)
{
    if (timeout_ms < -1)
        return -EINVAL;
    return shmds__writable(q->r);
}

SHMDS_API int shmds_queue_send(shmds_queue *q, const void *msg, size_t len, int timeout_ms)
{
    if (q == NULL || (msg == NULL && len > 0))
        return -EINVAL;
    int rc = io_check(q, timeout_ms);
    if (rc != 0)
        return rc;
    if (len > q->max_msg)
        return -EMSGSIZE;
    if (q->flags & SHMDS_QUEUE_SPSC)
        return send_spsc(q, msg, len, timeout_ms);
    return send_locked(q, msg, len, timeout_ms);
}

SHMDS_API int shmds_queue_recv(shmds_queue *q, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    if (q == NULL || len == NULL || (buf == NULL && cap > 0))
        return -EINVAL;
    int rc = io_check(q, timeout_ms);
    if (rc != 0)
        return rc;
    if (q->flags & SHMDS_QUEUE_SPSC)
        return recv_spsc(q, buf, cap, len, timeout_ms);
    return recv_locked(q, buf, cap, len, timeout_ms);
}

SHMDS_API int shmds_queue_shutdown(shmds_queue *q)
{
    if (q == NULL)
        return -EINVAL;
    int rc = shmds__writable(q->r);
    if (rc != 0)
        return rc;
    struct qhdr *h = q->h;
    /* One atomic OR, no lock: a sender's commit is a compare-and-swap of
     * the same word, so it either lands before this (and is received) or
     * fails with SHMDS_ECLOSED. */
    uint64_t old = __atomic_fetch_or(&h->tail, CLOSED_BIT, __ATOMIC_SEQ_CST);
    if (w_idx(old) >= 2 * q->cap_u)
        return SHMDS_ECORRUPT;
    SHMDS_FAULT("queue.shutdown.after_close");
    shmds__bell_ring(&h->not_empty, &h->recv_sleepers, false);
    shmds__bell_ring(&h->not_full, &h->send_sleepers, false);
    return 0;
}

SHMDS_API int shmds_queue_len(shmds_queue *q, uint64_t *msgs)
{
    if (q == NULL || msgs == NULL)
        return -EINVAL;
    for (int i = 0; i < LEN_TRIES; i++) {
        uint64_t hw = __atomic_load_n(&q->h->head, __ATOMIC_ACQUIRE);
        uint64_t tw = __atomic_load_n(&q->h->tail, __ATOMIC_ACQUIRE);
        /* The pair is a snapshot only if the head did not move while the
         * tail was read (else the tail may be a lap ahead of it). */
        if (__atomic_load_n(&q->h->head, __ATOMIC_ACQUIRE) != hw)
            continue;
        if (!words_ok(q, tw, hw))
            return SHMDS_ECORRUPT;
        *msgs = msgs_between(tw, hw);
        return 0;
    }
    return -EAGAIN;
}

/* ---------------------------------------------------------------------------
 * Check
 * ------------------------------------------------------------------------ */

/* Walk the records of [head, tail) and compare with the count. */
static int walk(const shmds_queue *q, uint64_t tw, uint64_t hw)
{
    uint64_t idx = w_idx(hw), left = used_units(q, tw, hw), n = 0;
    while (left > 0) { /* each step consumes at least one unit: bounded */
        int64_t len = rec_read(q, idx, left);
        if (len < 0)
            return SHMDS_ECORRUPT;
        uint64_t u = rec_units((uint64_t)len);
        idx = idx_add(q, idx, u);
        left -= u;
        n++;
    }
    return n == msgs_between(tw, hw) ? 0 : SHMDS_ECORRUPT;
}

SHMDS_API int shmds_queue_check(shmds_queue *q)
{
    if (q == NULL)
        return -EINVAL;
    struct qhdr *h = q->h;
    shmds_region *r = q->r;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != Q_MAGIC || h->checksum != hdr_checksum(h) ||
        h->cap != q->cap_u * 8 || h->max_msg != q->max_msg || h->flags != q->flags ||
        h->self != q->off)
        return SHMDS_ECORRUPT;
    uint64_t usable = 0;
    int rc = shmds__alloc_block_live(r, h->block, &usable);
    if (rc != 0)
        return rc == -EINVAL ? SHMDS_ECORRUPT : rc;
    if (h->block > q->off || q->off - h->block + sizeof(struct qhdr) + h->cap > usable)
        return SHMDS_ECORRUPT;
    /* The words glibc trusts in the lock and the doorbells. */
    if (!shmds__mutex_ok(&h->lock) || !shmds__sem_ok(&h->not_empty) || !shmds__sem_ok(&h->not_full))
        return SHMDS_ECORRUPT;
    if (!shmds__rdonly(r) && !(q->flags & SHMDS_QUEUE_SPSC)) {
        if ((rc = q_lock(q)) != 0)
            return rc;
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
        rc = words_ok(q, tw, hw) ? walk(q, tw, hw) : SHMDS_ECORRUPT;
        shmds_mutex_unlock(&h->lock);
        return rc;
    }
    /* No lock: keep a walk's verdict only if the head did not move during
     * it (then the producer wrote nowhere the walk read). */
    for (int i = 0; i < CHECK_TRIES; i++) {
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&h->head, __ATOMIC_ACQUIRE) != hw)
            continue;
        if (!words_ok(q, tw, hw))
            return SHMDS_ECORRUPT;
        rc = walk(q, tw, hw);
        if (__atomic_load_n(&h->head, __ATOMIC_ACQUIRE) == hw)
            return rc;
    }
    return -EAGAIN; /* never a stable view: not checked, so not "healthy" */
}

/* The object layer's check: the header validates, then as
 * shmds_queue_check. */
static int queue_check_at(shmds_region *r, shmds_off_t off)
{
    shmds_queue *q;
    int rc = handle_make(r, off, &q);
    if (rc != 0)
        return rc;
    rc = shmds_queue_check(q);
    free(q);
    return rc;
}

/* The object layer's attach (a queue keeps no name to compare). */
static int queue_attach(shmds_region *r, shmds_off_t off, const char *name, void **out)
{
    (void)name;
    shmds_queue *q;
    int rc = handle_make(r, off, &q);
    if (rc == 0)
        *out = q;
    return rc;
}

const struct shmds__obj_ops shmds__queue_ops = {SHMDS_TYPE_QUEUE, queue_attach, queue_teardown_at,
                                                queue_check_at};
