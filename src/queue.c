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
 * Default mode: senders hold the senders' robust mutex (`lock`) around the
 * check-copy-commit sequence, receivers the receivers' (`rlock`): the two
 * sides never wait for each other, and with one sender and one receiver on
 * two CPUs neither lock's line moves between them. Each side alone writes
 * its word; it reads the other's with acquire order (a receiver copies out
 * before it stores the head, so a sender that sees the head may overwrite
 * what it passed), and a stale view of the other's word only makes the
 * ring look fuller (to a sender) or emptier (to a receiver). The
 * at-least-once bookkeeping (head, rd, the lease slots and their redo log)
 * is the receivers', under `rlock`; broadcast publishers move the head
 * under `lock` (a broadcast queue has no receivers). SPSC mode: no mutex; the producer thread
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
 * wake-ups, never correctness). A locked call rings after its unlock, so
 * the woken waiter does not meet the lock still held (a second sleep and
 * wake-up on the mutex). Before sleeping, a waiter spins (for an adaptive
 * time, see spin_for_change) only when its process may run on several
 * CPUs and the side it waits for last ran on another CPU than its own
 * (each side notes its CPU in its index line when it rings: note_cpu,
 * spin_worth; else the other party needs this CPU), then yields a few
 * times.
 * A woken waiter that leaves work behind (more messages, more room, or a
 * shut-down queue) rings again, so a shut-down wakes every sleeper in a
 * chain.
 */
#include "object.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#if defined(__has_include) && (defined(__x86_64__) || defined(__aarch64__))
#if __has_include(<sys/rseq.h>)
#include <sys/rseq.h> /* glibc >= 2.35: __rseq_offset, __rseq_size */
#define SHMDS_HAVE_RSEQ 1
#endif
#endif

#define Q_MAGIC UINT64_C(0x3130555144534d48) /* "HMDSQU01" little-endian */
#define Q_VERSION 2u /* 2: the receivers' lock (rlock) */
#define TAG_MIX UINT32_C(0x51a7e5c3)
#define SLICE_MS 50        /* longest sleep before re-checking the indices */
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
    shmds_mutex lock; /* the senders' lock (default and ACK modes, publishers) */
    alignas(SHMDS__CACHE_LINE) uint64_t tail; /* producer line */
    uint64_t prod_claim; /* SPSC: the producer thread (see claim_word), 0 = none */
    uint64_t sent;       /* catch-up count of the tail's commits (see stat_catch_up) */
    uint64_t seen_head;  /* default mode: the head as senders last read it (see send_locked) */
    uint32_t prod_cpu;   /* CPU + 1 a sender last committed on (a hint, see await_change) */
    uint8_t pad1[SHMDS__CACHE_LINE - 36];
    alignas(SHMDS__CACHE_LINE) uint64_t head; /* consumer line */
    uint64_t cons_claim; /* SPSC: the consumer thread, 0 = none */
    uint64_t received;   /* catch-up count of first deliveries */
    uint64_t seen_tail;  /* default and ACK modes: the tail as receivers last read it */
    uint32_t cons_cpu;   /* CPU + 1 a receiver last took a message on (a hint) */
    uint8_t pad2[SHMDS__CACHE_LINE - 36];
    alignas(SHMDS__CACHE_LINE) uint32_t recv_sleepers; /* doorbell line */
    uint32_t send_sleepers;
    uint32_t fd_waiters; /* handles with a notification fd (see fd_notify) */
    uint32_t fd_pending; /* a byte is in the FIFO, or on its way */
    uint8_t pad3[SHMDS__CACHE_LINE - 16];
    shmds_sem not_empty; /* rung for receivers */
    shmds_sem not_full;  /* rung for senders */
    alignas(SHMDS__CACHE_LINE) shmds_mutex rlock; /* the receivers' lock */
};
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, magic) == 0, "queue: magic");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, checksum) == 56, "queue: checksum");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, lock) == 64, "queue: lock");
SHMDS__STATIC_ASSERT(sizeof(shmds_mutex) == 64, "queue: lock is one line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, tail) == 128, "queue: tail line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, head) == 192, "queue: head line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, recv_sleepers) == 256, "queue: doorbell line");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, not_empty) == 320, "queue: semaphores");
SHMDS__STATIC_ASSERT(offsetof(struct qhdr, rlock) == 384, "queue: receivers' lock");
SHMDS__STATIC_ASSERT(sizeof(struct qhdr) == 448, "queue: the ring (or the area) at 448");
SHMDS__STATIC_ASSERT(sizeof(struct qhdr) % SHMDS__CACHE_LINE == 0, "queue: ring is line-aligned");

/* At-least-once (SHMDS_QUEUE_ACK): an area between the header and the
 * ring. `head` is then the floor: the oldest message not yet acknowledged
 * (ring space is reused up to it); `rd` is the read cursor: messages in
 * [head, rd) have been delivered (the window), [rd, tail) never. Each
 * message of the window has a lease slot, slots[count mod slots]:
 *   word = count(32) << 32 | attempt(24) << 8 | state(8)
 * with the ring index of its record in `idx` and, while LEASED, its holder.
 * A lease id handed out is the word without its state byte, so a message
 * delivered again (attempt + 1) has a new id and the old one is stale.
 *
 * Every change of the shared words here is one redo-log commit (log_put /
 * log_commit): the new values of up to LOG_MAX words are written into the
 * log, log_n is stored (the commit point), the values are stored, log_n is
 * cleared. A holder of the receivers' lock killed anywhere leaves either an
 * empty log (nothing changed, or all of it) or a full one that the next
 * locker replays (q_repair). Slot fields that are not read until the word
 * that makes them live is committed (a slot outside the window, the holder
 * of a slot not LEASED) are written directly, before the commit. */
enum { L_FREE = 0, L_LEASED = 1, L_READY = 2, L_ACKED = 3 };
#define LOG_MAX 4
#define ACK_SLOTS_DEFAULT 256u
#define ACK_SLOTS_MAX 65536u

struct qlease {
    uint64_t word;
    uint64_t idx;      /* ring index of the message's record */
    uint64_t pid;      /* holder, while LEASED */
    uint64_t start;    /* holder's start time (against pid reuse) */
    uint64_t since_ns; /* CLOCK_MONOTONIC when leased (holder_write) */
    uint8_t pad[24];   /* a line each: holders write their own */
};
SHMDS__STATIC_ASSERT(sizeof(struct qlease) == SHMDS__CACHE_LINE, "lease slot is one line");

struct qack {
    /* Immutable after create; covered by `checksum`. */
    uint32_t slots;    /* a power of two */
    uint32_t lease_ms;
    uint64_t self;     /* offset of the queue header */
    uint64_t checksum; /* FNV-1a of the bytes before it */
    uint8_t pad0[SHMDS__CACHE_LINE - 24];
    /* Under the receivers' lock, changed through the log. */
    alignas(SHMDS__CACHE_LINE) uint64_t rd;
    uint64_t redelivered;
    uint64_t ready;  /* slots READY (taken back, to deliver again) */
    uint64_t leased; /* slots LEASED */
    uint8_t pad1[SHMDS__CACHE_LINE - 32];
    alignas(SHMDS__CACHE_LINE) uint64_t log_n; /* 0: empty */
    uint64_t log_pad;
    struct {
        uint64_t off; /* of the word, from the queue header */
        uint64_t val;
    } log[LOG_MAX];
    uint8_t pad2[2 * SHMDS__CACHE_LINE - 16 - 16 * LOG_MAX];
    /* struct qlease slots[slots] follow. */
};
SHMDS__STATIC_ASSERT(offsetof(struct qack, checksum) == 16, "queue ack: checksum");
SHMDS__STATIC_ASSERT(offsetof(struct qack, rd) == 64, "queue ack: read line");
SHMDS__STATIC_ASSERT(offsetof(struct qack, log_n) == 128, "queue ack: log");
SHMDS__STATIC_ASSERT(sizeof(struct qack) == 256, "queue ack: slots follow");

/* Broadcast (SHMDS_QUEUE_BROADCAST): the same area, whose slots are
 * subscribers. `head` is then the oldest message kept; each subscriber
 * reads on from its own cursor (a word like head's), without a lock. A
 * publisher that needs room drops the oldest messages (moving head first,
 * then writing: a subscriber that copied a message checks afterwards that
 * head did not pass it, as a seqlock reader does), or, with
 * SHMDS_QUEUE_BLOCK, moves head up to the slowest live subscriber's
 * cursor and waits when that is not enough. */
struct qsub {
    uint64_t pid;    /* 0: free; written last when subscribing */
    uint64_t start;  /* the subscriber's start time (against pid reuse) */
    uint64_t cursor; /* the next message it reads */
    uint64_t missed; /* messages dropped before it read them, ever */
    uint8_t pad[32];
};
SHMDS__STATIC_ASSERT(sizeof(struct qsub) == SHMDS__CACHE_LINE, "subscriber slot is one line");
#define SUBS_DEFAULT 64u
#define SUBS_MAX 4096u

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
    char name[SHMDS_ROOT_NAME_MAX + 1]; /* opened by (shmds__obj_destroy) */
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
        uint64_t word;
    } claim[2];
    uint64_t seen_head; /* producer's cached copy */
    uint64_t seen_tail; /* consumer's cached copy */
    /* SHMDS_QUEUE_ACK: the area, its slots, and their count (trusted). */
    struct qack *a;
    struct qlease *slots;
    uint32_t nslots;
    uint64_t lease_ns;
    /* SHMDS_QUEUE_BROADCAST: the subscriber slots and their count. */
    struct qsub *subs;
    uint32_t nsubs;
    /* Zero-copy: the reservation of shmds_queue_reserve() and the message
     * of shmds_queue_recv_ref(), each owned by the thread that made it (in
     * the default mode that thread holds its side's lock meanwhile). */
    struct {
        bool on;
        pthread_t thread;
        unsigned fork_gen;
        uint64_t tw;  /* reserve: the tail word it follows */
        uint64_t pad; /* reserve: units padded to the end of the ring */
        uint64_t len; /* reserve: bytes reserved */
        uint64_t nh;  /* receive: the head word past the message */
        void *ptr;
    } rsv, ref;
    void *bounce; /* max_msg bytes, for a message that wraps the ring */
    int fifo;     /* the notification FIFO, opened read-write; -1: not yet */
    bool fifo_armed; /* this handle counts in fd_waiters */
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

/* A pad record: a zero-copy send whose payload would wrap the end of the
 * ring writes one in the rest of the ring and its record at the start, so
 * that the payload is contiguous. A pad and the record after it are
 * committed together and consumed together: the counts never see a pad. */
#define PAD_LEN UINT32_MAX

static inline uint64_t units_to_end(const shmds_queue *q, uint64_t idx)
{
    return q->cap_u - (idx >= q->cap_u ? idx - q->cap_u : idx);
}

/* Units a zero-copy record of `len` bytes at `idx` pads first (0: none). */
static uint64_t pad_for(const shmds_queue *q, uint64_t idx, uint64_t len)
{
    uint64_t at = idx_byte(q, idx) + 8, cap = q->cap_u * 8;
    return at == cap || at + len <= cap ? 0 : units_to_end(q, idx);
}

/* The record at `idx`, of which `avail` units are committed, after the pad
 * before it if there is one: its length (-1: damaged framing), its index
 * in *at, and in *units the units from `idx` to its end. */
static int64_t rec_at(const shmds_queue *q, uint64_t idx, uint64_t avail, uint64_t *at,
                      uint64_t *units)
{
    struct rec rh;
    uint64_t skip = 0;
    memcpy(&rh, q->ring + idx_byte(q, idx), sizeof rh);
    if (rh.len == PAD_LEN && rh.tag == rec_tag(idx)) {
        skip = units_to_end(q, idx);
        if (skip >= avail)
            return -1; /* a pad is never committed alone */
        idx = idx_add(q, idx, skip);
        avail -= skip;
    }
    int64_t len = rec_read(q, idx, avail);
    if (len < 0)
        return -1;
    *at = idx;
    *units = skip + rec_units((uint64_t)len);
    return len;
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

/* ---- the notification FIFO (shmds_queue_notify_fd) ----
 * One FIFO per queue, named after the region's file (device and inode)
 * and the queue's offset, in FIFO_DIR: a directory of its own, so that
 * nothing that scans /dev/shm for regions opens a FIFO (an open for
 * reading would block). The directory is sticky and open to all, like
 * /tmp; each FIFO gets the region file's permissions. A handle that
 * wants a file descriptor opens it read-write and non-blocking (Linux: a
 * FIFO opened so is never without a reader or a writer, so neither side
 * sees EOF, ENXIO or SIGPIPE) and counts itself in fd_waiters. While that
 * count is not 0, whoever rings the receivers' doorbell also writes one
 * byte, unless fd_pending says a byte is there already; a waiter clears
 * fd_pending, empties the FIFO, then looks at the queue. A writer killed
 * between setting fd_pending and its write leaves no byte: waiters bound
 * their poll(2), as every sleep here is bounded, and clear it then. */
#define FIFO_DIR "/dev/shm/shmds-fifo"

static int fifo_path(const shmds_queue *q, char *buf, size_t cap, mode_t *mode)
{
    struct stat st;
    if (q->r->fd < 0)
        return -ENOTSUP; /* a region attached from memory has no file */
    if (fstat(q->r->fd, &st) != 0)
        return -errno;
    snprintf(buf, cap, FIFO_DIR "/%llx-%llx-%llx", (unsigned long long)st.st_dev,
             (unsigned long long)st.st_ino, (unsigned long long)q->off);
    if (mode != NULL)
        *mode = st.st_mode & 0666;
    return 0;
}

static int fifo_open(shmds_queue *q)
{
    if (q->fifo >= 0)
        return 0;
    char path[96];
    mode_t mode;
    int rc = fifo_path(q, path, sizeof path, &mode);
    if (rc != 0)
        return rc;
    if (mkdir(FIFO_DIR, 0700) == 0)
        chmod(FIFO_DIR, 01777); /* not narrowed by the umask */
    else if (errno != EEXIST)
        return -errno;
    if (mkfifo(path, 0600) == 0)
        chmod(path, mode);
    else if (errno != EEXIST)
        return -errno;
    int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    q->fifo = fd;
    return 0;
}

static void fd_notify(shmds_queue *q)
{
    struct qhdr *h = q->h;
    if (__atomic_load_n(&h->fd_waiters, __ATOMIC_SEQ_CST) == 0 ||
        __atomic_exchange_n(&h->fd_pending, 1, __ATOMIC_SEQ_CST) != 0)
        return;
    if (fifo_open(q) == 0)
        (void)!write(q->fifo, "", 1); /* EAGAIN: full, so readable already */
}

/* The CPU this thread runs on, or -1. Read where the kernel keeps it for
 * the thread (glibc's rseq area: one load, where sched_getcpu costs ~8 ns
 * here, a tenth of a message's whole send), else asked. */
static int cpu_now(void)
{
#if SHMDS_HAVE_RSEQ
    if (__rseq_size > 0) {
        const struct rseq *rs =
            (const struct rseq *)((char *)__builtin_thread_pointer() + __rseq_offset);
        int c = (int)__atomic_load_n(&rs->cpu_id, __ATOMIC_RELAXED);
        if (c >= 0) /* < 0: registration failed (under valgrind, say) */
            return c;
    }
#endif
    return sched_getcpu();
}

/* Note in `where` the CPU this thread runs on (+ 1), if it changed: the
 * hint a waiter reads to tell whether the party it waits for shares its
 * CPU (await_change). A hint only: any value costs at most a spin. */
static void note_cpu(uint32_t *where)
{
    int c = cpu_now();
    if (c >= 0 && __atomic_load_n(where, __ATOMIC_RELAXED) != (uint32_t)c + 1)
        __atomic_store_n(where, (uint32_t)c + 1, __ATOMIC_RELAXED);
}

/* Wake receivers: the doorbell, and the FIFO if someone polls it. Every
 * subscriber of a broadcast queue wants every message: one token per
 * sleeper (up to 64), not one in all. The caller sent (or shut down). */
static void wake_receivers(shmds_queue *q)
{
    note_cpu(&q->h->prod_cpu);
    if (q->subs != NULL) {
        shmds__bell_ring(&q->h->not_empty, &q->h->recv_sleepers, true);
    } else {
        shmds__bell_ring(&q->h->not_empty, &q->h->recv_sleepers, false);
    }
    fd_notify(q);
}

/* Wake senders waiting for room; the caller took a message (or gave up a
 * subscription) and made some. */
static void wake_senders(shmds_queue *q)
{
    note_cpu(&q->h->cons_cpu);
    shmds__bell_ring(&q->h->not_full, &q->h->send_sleepers, false);
}

static uint64_t deadline_of(int timeout_ms)
{
    return timeout_ms > 0 ? shmds__now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
}

static bool expired(int timeout_ms, uint64_t deadline_ns)
{
    return timeout_ms == 0 || (timeout_ms > 0 && shmds__now_ns() >= deadline_ns);
}

/* True when this process may run on more than one CPU: then the other
 * party can run while we spin. On one CPU (pinned, or a 1-CPU machine)
 * spinning only delays it: we yield at once. Asked of the kernel again
 * every SPIN_RECHECK slow waits (the affinity may change). */
#define SPIN_RECHECK 4096
static bool spin_useful(void)
{
    static unsigned calls, useful;
    unsigned c = __atomic_fetch_add(&calls, 1, __ATOMIC_RELAXED);
    if (c % SPIN_RECHECK == 0) {
        cpu_set_t set;
        bool many = sched_getaffinity(0, sizeof set, &set) != 0 || CPU_COUNT(&set) > 1;
        __atomic_store_n(&useful, many ? 1u : 0u, __ATOMIC_RELAXED);
    }
    return __atomic_load_n(&useful, __ATOMIC_RELAXED) != 0;
}

/* True when a spin may see the change: this process may run on several
 * CPUs, and the party that makes the change (its side's hint, `peer_cpu`:
 * CPU + 1, 0 unknown; see note_cpu) last ran on another CPU than this
 * thread. When both share a CPU (the scheduler often puts the two ends of
 * a ping-pong together), the peer cannot run while we spin: the wait
 * yields the CPU to it, or sleeps, at once. A stale hint costs one spin
 * (or one sleep) until the peer's next commit corrects it. */
static bool spin_worth(const uint32_t *peer_cpu)
{
    if (!spin_useful())
        return false;
    uint32_t p = __atomic_load_n(peer_cpu, __ATOMIC_RELAXED);
    int me = cpu_now();
    return p == 0 || me < 0 || p != (uint32_t)me + 1;
}

/* Busy-wait a little for `word` to change from `seen` (when `spin`: the
 * other party runs on another CPU), then yield the CPU a few times (the
 * other party may be waiting for this CPU). Says whether and when it
 * changed. `t0`: now.
 *
 * The spin is bounded by time, and the bound adapts (per process, like an
 * adaptive mutex): a spin that failed halves it, down to SPIN_NS_MIN (a
 * busy machine, or a peer that is not running: sleep soon); a change that
 * came while spinning, or soon enough after the sleep began that a longer
 * spin would have seen it (await_change), raises it, up to SPIN_NS_MAX (a
 * peer answering from another CPU is then caught without a sleep and a
 * wake-up, the cost of a round trip on a pipe). A change seen while
 * yielding teaches nothing: the yield, not the spin, let the peer run. */
enum { SEEN_NOT, SEEN_SPINNING, SEEN_YIELDING };
#define SPIN_NS_MIN 1000u
#define SPIN_NS_MAX 50000u
#define SPIN_YIELD_NS 2000u
static unsigned spin_ns = 8000u;

static void spin_learn(uint64_t waited_ns)
{
    unsigned budget = __atomic_load_n(&spin_ns, __ATOMIC_RELAXED);
    if (waited_ns < SPIN_NS_MAX / 2 && budget < 2 * waited_ns)
        __atomic_store_n(&spin_ns, (unsigned)(2 * waited_ns), __ATOMIC_RELAXED);
}

static int spin_for_change(const uint64_t *word, uint64_t seen, uint64_t t0, bool spin)
{
    if (spin) {
        unsigned budget = __atomic_load_n(&spin_ns, __ATOMIC_RELAXED);
        uint64_t next_yield = t0 + SPIN_YIELD_NS;
        for (unsigned i = 1;; i++) {
            if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen)
                return SEEN_SPINNING;
            shmds__cpu_relax();
            if (i % 16 != 0)
                continue;
            uint64_t now = shmds__now_ns();
            if (now - t0 >= budget)
                break;
            /* The scheduler may have put the other party on this CPU:
             * let it run now and then (returns at once when it is not). */
            if (now >= next_yield) {
                sched_yield();
                next_yield = now + SPIN_YIELD_NS;
            }
        }
        if (budget > SPIN_NS_MIN)
            __atomic_store_n(&spin_ns, budget / 2, __ATOMIC_RELAXED);
    }
    for (int i = 0; i < YIELD_ROUNDS; i++) {
        if (__atomic_load_n(word, __ATOMIC_ACQUIRE) != seen)
            return SEEN_YIELDING;
        sched_yield();
    }
    return SEEN_NOT;
}

/* Wait a while for `word` to change from `seen`: spin (if spin_worth),
 * yield, then one bounded sleep on the receivers' (or, for a `sender`, the
 * senders') doorbell, counted among its sleepers. A sender does not sleep
 * on a shut queue. The caller re-checks the truth afterwards, whatever
 * woke it. Returns 0, or SHMDS_ECORRUPT when the doorbell's words are
 * damaged. */
static int await_change(struct qhdr *h, const uint64_t *word, uint64_t seen, bool sender,
                        uint64_t deadline)
{
    uint64_t t0 = shmds__now_ns();
    bool spin = spin_worth(sender ? &h->cons_cpu : &h->prod_cpu);
    int seen_how = spin_for_change(word, seen, t0, spin);
    if (seen_how == SEEN_SPINNING)
        spin_learn(shmds__now_ns() - t0);
    if (seen_how != SEEN_NOT)
        return 0;
    int rc = 0;
    uint32_t *sleepers = sender ? &h->send_sleepers : &h->recv_sleepers;
    __atomic_add_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(word, __ATOMIC_SEQ_CST) == seen &&
        (!sender || (__atomic_load_n(&h->tail, __ATOMIC_SEQ_CST) & CLOSED_BIT) == 0))
        rc = shmds__bell_wait(sender ? &h->not_full : &h->not_empty, deadline, SLICE_MS);
    __atomic_sub_fetch(sleepers, 1, __ATOMIC_SEQ_CST);
    if (spin && __atomic_load_n(word, __ATOMIC_ACQUIRE) != seen)
        spin_learn(shmds__now_ns() - t0);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Default mode: under the queue mutex
 * ------------------------------------------------------------------------ */

/* ---------------------------------------------------------------------------
 * The redo log of SHMDS_QUEUE_ACK queues (see struct qack)
 * ------------------------------------------------------------------------ */

struct redo {
    unsigned n;
    uint64_t *word[LOG_MAX];
    uint64_t val[LOG_MAX];
};

static void log_put(struct redo *d, uint64_t *word, uint64_t val)
{
    SHMDS_ASSERT(d->n < LOG_MAX, "no commit changes more than LOG_MAX words");
    d->word[d->n] = word;
    d->val[d->n++] = val;
}

/* Commit `d` (receivers' lock held): write the log, store its length (the
 * commit point), store the words, clear the log. */
static void log_commit(shmds_queue *q, const struct redo *d)
{
    struct qack *a = q->a;
    for (unsigned i = 0; i < d->n; i++) {
        a->log[i].off = (uint64_t)((unsigned char *)d->word[i] - (unsigned char *)q->h);
        a->log[i].val = d->val[i];
    }
    __atomic_store_n(&a->log_n, d->n, __ATOMIC_RELEASE);
    SHMDS_FAULT("queue.log.committed");
    for (unsigned i = 0; i < d->n; i++)
        __atomic_store_n(d->word[i], d->val[i], __ATOMIC_RELEASE);
    SHMDS_FAULT("queue.log.applied");
    __atomic_store_n(&a->log_n, 0, __ATOMIC_RELEASE);
}

/* True when a log entry names a word the log may change: the head word,
 * the read line's words, or a lease slot's word. The log is untrusted. */
static bool log_off_ok(const shmds_queue *q, uint64_t off)
{
    const uint64_t ack = sizeof(struct qhdr), slots = ack + sizeof(struct qack);
    if (off % 8 != 0)
        return false;
    return off == offsetof(struct qhdr, head) ||
           (off >= ack + offsetof(struct qack, rd) && off < ack + offsetof(struct qack, pad1)) ||
           (off >= slots && off < slots + (uint64_t)q->nslots * sizeof(struct qlease) &&
            (off - slots) % sizeof(struct qlease) == offsetof(struct qlease, word));
}

/* The receivers' lock's repair, run by the next locker after a holder died:
 * replay an open redo log (storing the same values again: idempotent, and
 * killable). Only SHMDS_QUEUE_ACK queues have a log; the other modes leave
 * nothing half done (see the top of the file). A damaged log fences the
 * queue. */
static int q_repair(void *arg)
{
    shmds_queue *q = arg;
    struct qack *a = q->a;
    if (a == NULL)
        return 0;
    uint64_t n = __atomic_load_n(&a->log_n, __ATOMIC_ACQUIRE);
    if (n > LOG_MAX)
        return SHMDS_ECORRUPT;
    for (uint64_t i = 0; i < n; i++)
        if (!log_off_ok(q, a->log[i].off))
            return SHMDS_ECORRUPT;
    for (uint64_t i = 0; i < n; i++) {
        SHMDS_FAULT("queue.repair.replay");
        __atomic_store_n((uint64_t *)((unsigned char *)q->h + a->log[i].off), a->log[i].val,
                         __ATOMIC_RELEASE);
    }
    __atomic_store_n(&a->log_n, 0, __ATOMIC_RELEASE);
    return 0;
}

/* The lock of a side: senders (and publishers) take `lock`, receivers
 * `rlock`. Only the receivers' lock has a repair (q_repair): the redo log
 * is written under it alone, and a sender leaves nothing half done. */
static shmds_mutex *side_lock(shmds_queue *q, int side)
{
    return side == SIDE_PROD ? &q->h->lock : &q->h->rlock;
}

static shmds_repair_fn *side_repair(int side)
{
    return side == SIDE_PROD ? NULL : q_repair;
}

/* Lock a side of the queue (repairing after a dead holder). */
static int q_lock(shmds_queue *q, int side)
{
    int rc = shmds__lock(q->r, side_lock(q, side), side_repair(side), q);
    return rc == SHMDS_RECOVERED ? 0 : rc;
}

/* Doorbells a locked call found to ring: rung after the unlock, so that a
 * woken waiter does not find the lock still held and sleep again on it. */
enum {
    WAKE_RECV = 1u,   /* receivers' doorbell (passing the news on) */
    WAKE_SEND = 2u,   /* a receive made room: the senders' doorbell */
    WAKE_NEW = 4u,    /* a message was sent: the doorbell and the FIFO */
    WAKE_SEND_ON = 8u /* senders' doorbell, rung by a sender passing the news on
                       * (not wake_senders: cons_cpu must stay the receivers') */
};

static void bells_ring(shmds_queue *q, unsigned bells)
{
    if (bells & WAKE_NEW)
        wake_receivers(q);
    else if (bells & WAKE_RECV)
        shmds__bell_ring(&q->h->not_empty, &q->h->recv_sleepers, false);
    if (bells & WAKE_SEND)
        wake_senders(q);
    else if (bells & WAKE_SEND_ON)
        shmds__bell_ring(&q->h->not_full, &q->h->send_sleepers, false);
}

static void q_unlock(shmds_queue *q, int side, unsigned bells)
{
    shmds_mutex_unlock(side_lock(q, side));
    bells_ring(q, bells);
}

/* sent and received are 64-bit counts kept beside the 31-bit counts of the
 * committed index words: after each commit the committer moves the 64-bit
 * copy up to match, and a reader adds what is still missing the same way.
 * (An SHMDS_QUEUE_ACK queue counts rd's deliveries when its head moves:
 * one write of the receivers' line per message, not two; rd runs at most
 * the slots ahead of the head, far below the 2^31 a reader can add.)
 * So they are exact after a crash between a commit and its update (the
 * next update, or the reader, makes up for it), and a stale store by a
 * racing updater costs nothing either. */
static inline uint64_t count_value(uint64_t c64, uint64_t cnt)
{
    return c64 + ((cnt - c64) & CNT_MASK);
}

static inline void count_update(uint64_t *c64, uint64_t cnt)
{
    uint64_t v = __atomic_load_n(c64, __ATOMIC_RELAXED);
    __atomic_store_n(c64, count_value(v, cnt), __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------
 * Zero-copy: reservations and messages received in place
 * ------------------------------------------------------------------------ */

/* Room for a record of `len` bytes after tail word `tw` was found (queue
 * locked, or the SPSC producer): note the reservation. Nothing is written
 * until the commit. */
static void rsv_begin(shmds_queue *q, uint64_t tw, uint64_t pad, uint64_t len)
{
    uint64_t at = idx_add(q, w_idx(tw), pad), off = idx_byte(q, at) + 8;
    q->rsv.on = true;
    q->rsv.thread = pthread_self();
    q->rsv.fork_gen = fork_gen;
    q->rsv.tw = tw;
    q->rsv.pad = pad;
    q->rsv.len = len;
    q->rsv.ptr = q->ring + (off == q->cap_u * 8 ? 0 : off);
}

/* A message found at `at` (its length `len`; `nh` the head word past it):
 * hand it out in place, or, if its payload wraps the end of the ring (a
 * plain send does that), from a copy in the handle's bounce buffer. */
static int ref_begin(shmds_queue *q, uint64_t at, uint64_t len, uint64_t nh)
{
    uint64_t off = idx_byte(q, at) + 8, cap = q->cap_u * 8;
    if (off == cap)
        off = 0;
    if (off + len <= cap) {
        q->ref.ptr = q->ring + off;
    } else {
        if (q->bounce == NULL && (q->bounce = malloc(q->max_msg)) == NULL)
            return -ENOMEM;
        payload_read(q, at, q->bounce, len);
        q->ref.ptr = q->bounce;
    }
    q->ref.on = true;
    q->ref.thread = pthread_self();
    q->ref.fork_gen = fork_gen;
    q->ref.nh = nh;
    return 0;
}

/* ---------------------------------------------------------------------------
 * Broadcast: publishers make room (subscribers: see the end of the file)
 * ------------------------------------------------------------------------ */

/* True when count `a` comes before count `b` (mod 2^31, within half). */
static inline bool cnt_before(uint64_t a, uint64_t b)
{
    uint64_t d = (b - a) & CNT_MASK;
    return d != 0 && d < (CNT_MASK + 1) / 2;
}

/* Make room for `need` units before tail word `tw` (senders' lock held): drop
 * the oldest messages, or with SHMDS_QUEUE_BLOCK move the head up to the
 * slowest live subscriber (freeing the slots of dead ones). *hwp is the
 * head word, updated. Room may still be short with SHMDS_QUEUE_BLOCK: the
 * caller waits. Cost: O(messages dropped), or O(subscribers). */
static int topic_room(shmds_queue *q, uint64_t tw, uint64_t *hwp, uint64_t need)
{
    struct qhdr *h = q->h;
    uint64_t hw = *hwp, t = tw & ~CLOSED_BIT;
    if (!(q->flags & SHMDS_QUEUE_BLOCK)) {
        while (q->cap_u - used_units(q, tw, hw) < need) {
            uint64_t at, units;
            if (rec_at(q, w_idx(hw), used_units(q, tw, hw), &at, &units) < 0)
                return SHMDS_ECORRUPT;
            hw = w_make(idx_add(q, w_idx(hw), units), w_cnt(hw) + 1);
        }
    } else {
        for (int pass = 0; pass < 2; pass++) {
            uint64_t best = t;
            for (uint32_t i = 0; i < q->nsubs; i++) {
                struct qsub *sb = &q->subs[i];
                uint64_t pid = __atomic_load_n(&sb->pid, __ATOMIC_ACQUIRE);
                uint64_t c = __atomic_load_n(&sb->cursor, __ATOMIC_ACQUIRE);
                if (pid == 0 || cnt_before(w_cnt(c), w_cnt(hw)) || !cnt_before(w_cnt(c), w_cnt(best)))
                    continue; /* free, lapped (corrupt: ignored), or not slower */
                if (pass == 1 && (pid > UINT32_MAX ||
                                  !shmds__proc_alive((uint32_t)pid,
                                                     __atomic_load_n(&sb->start, __ATOMIC_RELAXED)))) {
                    __atomic_store_n(&sb->pid, 0, __ATOMIC_RELEASE); /* a dead subscriber */
                    SHMDS_FAULT("queue.topic.dead_sub");
                    continue;
                }
                best = c;
            }
            if (w_idx(best) >= 2 * q->cap_u)
                return SHMDS_ECORRUPT;
            hw = best;
            /* Probe the holders only when the live-or-not minimum blocks. */
            if (q->cap_u - used_units(q, tw, hw) >= need)
                break;
        }
    }
    if (hw != *hwp) {
        __atomic_store_n(&h->head, hw, __ATOMIC_SEQ_CST);
        /* Subscribers re-read head after copying: the space is rewritten
         * only after this store is visible. A publisher killed from here
         * to its tail commit leaves messages dropped and none added: the
         * drop stands (subscribers count it as missed), as the ring does
         * not need the dropped bytes back. */
        __atomic_thread_fence(__ATOMIC_SEQ_CST);
        SHMDS_FAULT("queue.topic.dropped");
        *hwp = hw;
    }
    return 0;
}

/* Lock the queue for a send or receive that may wait timeout_ms in all
 * (ending at deadline_ns when > 0): a busy lock is a wait like any other,
 * so 0 never waits (-EAGAIN) and a positive timeout bounds the lock's wait
 * too (-ETIMEDOUT). Repairs as q_lock. */
static int q_lock_io(shmds_queue *q, int side, int timeout_ms, uint64_t deadline_ns)
{
    int ms = timeout_ms;
    if (timeout_ms > 0 && (ms = shmds__ms_left(deadline_ns)) == 0)
        ms = 1; /* deadline passed: one last try, then -ETIMEDOUT */
    int rc = shmds__lock_within(q->r, side_lock(q, side), ms, side_repair(side), q);
    if (rc == -EBUSY)
        return -EAGAIN;
    return rc == SHMDS_RECOVERED ? 0 : rc;
}

/* The time a send or receive may wait: its timeout, and its deadline
 * (taken at the first wait by the lock-free paths, whose calls mostly
 * never wait; at the start by the locked ones, whose lock wait counts). */
struct turn {
    int timeout_ms;
    bool timed;
    uint64_t deadline;
};

static struct turn turn_now(int timeout_ms)
{
    return (struct turn){timeout_ms, true, deadline_of(timeout_ms)};
}

/* Every waiting send and receive waits here, for its turn: `*word` (the
 * other side's index word) to change from `seen`, within the call's time
 * (await_change: spin, then the doorbell). `locked`: the caller holds the
 * lock of its side; it is released for the wait and taken again after it, within
 * the same deadline (a busy lock is waiting too), and on a time-out it is
 * released with `bells` rung (q_unlock). Returns 0: look again (holding
 * the lock again if `locked`); -EAGAIN (timeout 0) or -ETIMEDOUT: time is
 * up; or the doorbell's or the lock's error. On every error the lock is
 * not held. */
static int wait_turn(shmds_queue *q, struct turn *t, const uint64_t *word, uint64_t seen,
                     bool sender, bool locked, unsigned bells)
{
    int side = sender ? SIDE_PROD : SIDE_CONS;
    if (!t->timed)
        *t = turn_now(t->timeout_ms);
    if (expired(t->timeout_ms, t->deadline)) {
        if (locked)
            q_unlock(q, side, bells);
        return t->timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
    }
    if (locked)
        shmds_mutex_unlock(side_lock(q, side));
    int rc = await_change(q->h, word, seen, sender, t->deadline);
    if (rc == 0 && locked)
        rc = q_lock_io(q, side, t->timeout_ms, t->deadline);
    return rc;
}

static int send_locked(shmds_queue *q, const void *msg, uint64_t len, int timeout_ms, bool zc)
{
    struct qhdr *h = q->h;
    uint64_t need = rec_units(len);
    struct turn turn = turn_now(timeout_ms);
    unsigned bells = 0;
    int rc = q_lock_io(q, SIDE_PROD, timeout_ms, turn.deadline);
    if (rc != 0)
        return rc;
    for (;;) {
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
        uint64_t pad = zc && w_idx(tw) < 2 * q->cap_u ? pad_for(q, w_idx(tw), len) : 0;
        /* The head the senders last read (as SPSC's seen_head, but shared
         * by the senders, under their lock: the tail never passes it), and
         * the head itself only when that leaves too little room: the
         * receivers' line is not fetched for every message. */
        uint64_t hw = __atomic_load_n(&h->seen_head, __ATOMIC_RELAXED);
        bool ok = words_ok(q, tw, hw);
        if (!ok || q->cap_u - used_units(q, tw, hw) < pad + need) {
            hw = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
            __atomic_store_n(&h->seen_head, hw, __ATOMIC_RELAXED);
            ok = words_ok(q, tw, hw);
        }
        if (!ok) {
            rc = SHMDS_ECORRUPT;
            break;
        }
        if (tw & CLOSED_BIT) {
            bells |= WAKE_SEND_ON;
            rc = SHMDS_ECLOSED;
            break;
        }
        uint64_t free_u = q->cap_u - used_units(q, tw, hw);
        if (q->subs != NULL && free_u < pad + need) {
            if ((rc = topic_room(q, tw, &hw, pad + need)) != 0)
                break;
            __atomic_store_n(&h->seen_head, hw, __ATOMIC_RELAXED);
            free_u = q->cap_u - used_units(q, tw, hw);
        }
        if (pad + need <= free_u && zc) {
            rsv_begin(q, tw, pad, len);
            return 0; /* locked until the commit */
        }
        if (!zc && need <= free_u) {
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
            count_update(&h->sent, w_cnt(nw));
            bells |= WAKE_NEW;
            if (free_u - need > 0)
                bells |= WAKE_SEND_ON;
            rc = 0;
            break;
        }
        if ((rc = wait_turn(q, &turn, &h->head, hw, true, true, bells)) != 0)
            return rc;
    }
    q_unlock(q, SIDE_PROD, bells);
    return rc;
}

static int recv_locked(shmds_queue *q, void *buf, size_t cap, size_t *lenp, int timeout_ms,
                       bool zc)
{
    struct qhdr *h = q->h;
    struct turn turn = turn_now(timeout_ms);
    unsigned bells = 0;
    int rc = q_lock_io(q, SIDE_CONS, timeout_ms, turn.deadline);
    if (rc != 0)
        return rc;
    for (;;) {
        /* The tail the receivers last read (under their lock: the head
         * never passes it), and the tail itself only when that shows
         * nothing (see send_locked). */
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
        uint64_t tw = __atomic_load_n(&h->seen_tail, __ATOMIC_RELAXED);
        bool ok = words_ok(q, tw, hw);
        if (!ok || used_units(q, tw, hw) == 0) {
            tw = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
            __atomic_store_n(&h->seen_tail, tw, __ATOMIC_RELAXED);
            ok = words_ok(q, tw, hw);
        }
        if (!ok) {
            rc = SHMDS_ECORRUPT;
            break;
        }
        uint64_t used = used_units(q, tw, hw), at, need;
        if (used > 0) {
            int64_t len = rec_at(q, w_idx(hw), used, &at, &need);
            if (len < 0) {
                rc = SHMDS_ECORRUPT;
                break;
            }
            *lenp = (size_t)len;
            uint64_t nh = w_make(idx_add(q, w_idx(hw), need), w_cnt(hw) + 1);
            if (zc) {
                if ((rc = ref_begin(q, at, (uint64_t)len, nh)) == 0)
                    return 0; /* locked until the release */
                break;
            }
            if ((uint64_t)len > cap) {
                rc = -ENOBUFS;
                break;
            }
            payload_read(q, at, buf, (uint64_t)len);
            SHMDS_FAULT("queue.recv.before_commit");
            __atomic_store_n(&h->head, nh, __ATOMIC_SEQ_CST);
            SHMDS_FAULT("queue.recv.after_commit");
            count_update(&h->received, w_cnt(hw) + 1);
            bells |= WAKE_SEND;
            if (used > need)
                bells |= WAKE_RECV;
            rc = 0;
            break;
        }
        if (tw & CLOSED_BIT) {
            bells |= WAKE_RECV;
            rc = SHMDS_ECLOSED;
            break;
        }
        if ((rc = wait_turn(q, &turn, &h->tail, tw, false, true, bells)) != 0)
            return rc;
    }
    q_unlock(q, SIDE_CONS, bells);
    return rc;
}

/* ---------------------------------------------------------------------------
 * SPSC mode: claims and the lock-free data path
 * ------------------------------------------------------------------------ */

/* A claim word: the thread id, and the low 32 bits of the thread's start
 * time (from /proc; 0 when unknown) against a later thread with the same
 * id. One word, so both are written by one compare-and-swap. */
static uint64_t claim_word(uint32_t tid)
{
    return (shmds__proc_start(tid) & UINT64_C(0xffffffff)) << 32 | tid;
}

/* False when the claim's thread is gone: no such thread, a zombie (killed,
 * its process not reaped yet), or a later thread with its id. */
static bool claim_alive(uint64_t w)
{
    uint32_t tid = (uint32_t)w, start = (uint32_t)(w >> 32);
    if (!shmds__proc_alive(tid, 0))
        return false;
    uint64_t now = shmds__proc_start(tid);
    return start == 0 || now == 0 || (uint32_t)now == start;
}

/* Make the calling thread this queue's producer or consumer. Cost: one
 * comparison once claimed. Returns 0 or -EBUSY. */
static int claim(shmds_queue *q, int side)
{
    if (shmds__likely(q->claim[side].held && q->claim[side].fork_gen == fork_gen &&
                      pthread_equal(q->claim[side].thread, pthread_self())))
        return 0;
    pthread_once(&atfork_once, atfork_register);
    uint64_t *word = side == SIDE_PROD ? &q->h->prod_claim : &q->h->cons_claim;
    uint64_t me = claim_word((uint32_t)syscall(SYS_gettid));
    uint64_t cur = __atomic_load_n(word, __ATOMIC_ACQUIRE);
    for (int tries = 0; cur != me; tries++) {
        if (tries > 8 || (cur != 0 && claim_alive(cur)))
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
    q->claim[side].word = me;
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
    uint64_t *word = side == SIDE_PROD ? &q->h->prod_claim : &q->h->cons_claim;
    uint64_t me = q->claim[side].word;
    __atomic_compare_exchange_n(word, &me, 0, false, __ATOMIC_RELEASE, __ATOMIC_RELAXED);
    q->claim[side].held = false;
}

static int send_spsc(shmds_queue *q, const void *msg, uint64_t len, int timeout_ms, bool zc)
{
    struct qhdr *h = q->h;
    int rc = claim(q, SIDE_PROD);
    if (rc != 0)
        return rc;
    uint64_t need = rec_units(len);
    struct turn turn = {timeout_ms, false, 0};
    for (;;) {
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
        uint64_t hw = q->seen_head;
        if (tw & CLOSED_BIT)
            return SHMDS_ECLOSED;
        uint64_t want = need + (zc && w_idx(tw) < 2 * q->cap_u ? pad_for(q, w_idx(tw), len) : 0);
        if (!words_ok(q, tw, hw) || q->cap_u - used_units(q, tw, hw) < want) {
            hw = q->seen_head = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
            if (!words_ok(q, tw, hw))
                return SHMDS_ECORRUPT;
        }
        if (q->cap_u - used_units(q, tw, hw) >= want && zc) {
            rsv_begin(q, tw, want - need, len);
            return 0;
        }
        if (!zc && q->cap_u - used_units(q, tw, hw) >= need) {
            rec_write(q, w_idx(tw), msg, len);
            SHMDS_FAULT("queue.spsc_send.before_commit");
            uint64_t nw = w_make(idx_add(q, w_idx(tw), need), w_cnt(tw) + 1);
            if (!__atomic_compare_exchange_n(&h->tail, &tw, nw, false, __ATOMIC_SEQ_CST,
                                             __ATOMIC_RELAXED))
                return SHMDS_ECLOSED; /* shut down meanwhile: not sent */
            count_update(&h->sent, w_cnt(nw));
            wake_receivers(q);
            return 0;
        }
        if ((rc = wait_turn(q, &turn, &h->head, hw, true, false, 0)) != 0)
            return rc;
    }
}

static int recv_spsc(shmds_queue *q, void *buf, size_t cap, size_t *lenp, int timeout_ms,
                     bool zc)
{
    struct qhdr *h = q->h;
    int rc = claim(q, SIDE_CONS);
    if (rc != 0)
        return rc;
    struct turn turn = {timeout_ms, false, 0};
    for (;;) {
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
        uint64_t tw = q->seen_tail;
        if (!words_ok(q, tw, hw) || used_units(q, tw, hw) == 0) {
            tw = q->seen_tail = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
            if (!words_ok(q, tw, hw))
                return SHMDS_ECORRUPT;
        }
        uint64_t used = used_units(q, tw, hw), at, units;
        if (used > 0) {
            int64_t len = rec_at(q, w_idx(hw), used, &at, &units);
            if (len < 0)
                return SHMDS_ECORRUPT;
            *lenp = (size_t)len;
            uint64_t nh = w_make(idx_add(q, w_idx(hw), units), w_cnt(hw) + 1);
            if (zc)
                return ref_begin(q, at, (uint64_t)len, nh);
            if ((uint64_t)len > cap)
                return -ENOBUFS;
            payload_read(q, at, buf, (uint64_t)len);
            SHMDS_FAULT("queue.spsc_recv.before_commit");
            __atomic_store_n(&h->head, nh, __ATOMIC_SEQ_CST);
            count_update(&h->received, w_cnt(hw) + 1);
            wake_senders(q);
            return 0;
        }
        if (tw & CLOSED_BIT)
            return SHMDS_ECLOSED;
        if ((rc = wait_turn(q, &turn, &h->tail, tw, false, false, 0)) != 0)
            return rc;
    }
}

/* ---------------------------------------------------------------------------
 * At-least-once (SHMDS_QUEUE_ACK): leases, take-backs, acknowledgements
 * ------------------------------------------------------------------------ */

static int io_check(shmds_queue *q, int timeout_ms);
static void zc_drop(shmds_queue *q);
static void fifo_close(shmds_queue *q);

#define LW_STATE_MASK UINT64_C(0xff)
#define LW_ATTEMPT_MASK UINT64_C(0xffffff)

static inline uint64_t lw_make(uint64_t cnt, uint64_t attempt, unsigned state)
{
    return (cnt & CNT_MASK) << 32 | (attempt & LW_ATTEMPT_MASK) << 8 | state;
}

static inline unsigned lw_state(uint64_t w)
{
    return (unsigned)(w & LW_STATE_MASK);
}

static inline uint64_t lw_cnt(uint64_t w)
{
    return w >> 32;
}

static inline uint64_t lw_attempt(uint64_t w)
{
    return (w >> 8) & LW_ATTEMPT_MASK;
}

/* The next delivery's attempt number (never 0, so an id is never 0). */
static inline uint64_t lw_next_attempt(uint64_t w)
{
    uint64_t n = (lw_attempt(w) + 1) & LW_ATTEMPT_MASK;
    return n != 0 ? n : 1;
}

static inline struct qlease *slot_of(const shmds_queue *q, uint64_t cnt)
{
    return &q->slots[cnt & (q->nslots - 1)];
}

/* This process's pid and start time, as a lease holder; computed again in
 * a child after fork(). */
static uint32_t self_pid;
static uint64_t self_start;
static unsigned self_gen;

static void self_ident(uint32_t *pid, uint64_t *start)
{
    pthread_once(&atfork_once, atfork_register);
    unsigned g = __atomic_load_n(&fork_gen, __ATOMIC_ACQUIRE);
    uint32_t p = __atomic_load_n(&self_pid, __ATOMIC_ACQUIRE);
    if (p == 0 || __atomic_load_n(&self_gen, __ATOMIC_RELAXED) != g) {
        p = (uint32_t)getpid();
        __atomic_store_n(&self_start, shmds__proc_start(p), __ATOMIC_RELAXED);
        __atomic_store_n(&self_gen, g, __ATOMIC_RELAXED);
        __atomic_store_n(&self_pid, p, __ATOMIC_RELEASE);
    }
    *pid = p;
    *start = __atomic_load_n(&self_start, __ATOMIC_RELAXED);
}

/* The three words of an SHMDS_QUEUE_ACK queue, read under its lock. */
struct ackview {
    uint64_t tw, hw, rw;
    bool fresh; /* tw is the tail word itself, not the receivers' copy */
};

static inline uint64_t window_of(const struct ackview *v)
{
    return msgs_between(v->rw, v->hw);
}

static inline int view_ok(const shmds_queue *q, const struct ackview *v)
{
    if (!words_ok(q, v->tw, v->hw) || w_idx(v->rw) >= 2 * q->cap_u || (v->rw & CLOSED_BIT))
        return SHMDS_ECORRUPT;
    uint64_t win_u = used_units(q, v->rw, v->hw), win = window_of(v);
    if (win_u > used_units(q, v->tw, v->hw) || win > msgs_between(v->tw, v->hw) ||
        win > q->nslots || win > win_u)
        return SHMDS_ECORRUPT;
    return 0;
}

/* How ack_view finds the tail: the tail word itself (VIEW_TAIL), or the
 * receivers' copy of it (seen_tail, under their lock: never past the tail)
 * when that shows a message not yet delivered (VIEW_RECV) or always
 * (VIEW_ACK: an acknowledgement looks only at [head, rd)). The copy spares
 * the receivers a fetch of the senders' line, which a sender writes with
 * every message. */
enum { VIEW_TAIL, VIEW_RECV, VIEW_ACK };

/* Read and check the words (receivers' lock held): head <= rd <= tail, and
 * the window fits the slots. A copy the words contradict is dropped for
 * the tail itself, then refreshed. */
static int ack_view(const shmds_queue *q, struct ackview *v, int how)
{
    v->hw = __atomic_load_n(&q->h->head, __ATOMIC_RELAXED);
    v->rw = __atomic_load_n(&q->a->rd, __ATOMIC_RELAXED);
    if (how != VIEW_TAIL) {
        v->tw = __atomic_load_n(&q->h->seen_tail, __ATOMIC_RELAXED);
        v->fresh = false;
        if ((how == VIEW_ACK || msgs_between(v->tw, v->rw) > 0) && view_ok(q, v) == 0)
            return 0;
    }
    v->fresh = true;
    v->tw = __atomic_load_n(&q->h->tail, __ATOMIC_ACQUIRE);
    int rc = view_ok(q, v);
    if (rc == 0 && how != VIEW_TAIL)
        __atomic_store_n(&q->h->seen_tail, v->tw, __ATOMIC_RELAXED);
    return rc;
}

/* The word of the window's slot for count `c`, checked to be that
 * message's; SHMDS_ECORRUPT else. */
static int slot_word(const shmds_queue *q, uint64_t c, uint64_t *w)
{
    *w = __atomic_load_n(&slot_of(q, c)->word, __ATOMIC_ACQUIRE);
    return lw_cnt(*w) == (c & CNT_MASK) ? 0 : SHMDS_ECORRUPT;
}

/* Length of the window's record at ring index `idx` (from a slot, so
 * untrusted): it must start inside [head, rd) and be framed; -1 else. */
static int64_t window_rec(const shmds_queue *q, const struct ackview *v, uint64_t idx)
{
    if (idx >= 2 * q->cap_u || used_units(q, w_make(idx, 0), v->hw) >= used_units(q, v->rw, v->hw))
        return -1;
    return rec_read(q, idx, used_units(q, v->tw, w_make(idx, 0)));
}

/* The head word once every ACKED message at the floor (and the one of
 * count `also`, which the caller is about to mark ACKED; pass a count
 * outside the window for none) is passed. Cost: O(messages passed). */
static int floor_after(const shmds_queue *q, const struct ackview *v, uint64_t also,
                       uint64_t *out)
{
    uint64_t hw = v->hw, n = window_of(v);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t c = w_cnt(hw), w;
        if (slot_word(q, c, &w) != 0)
            return SHMDS_ECORRUPT;
        if (lw_state(w) != L_ACKED && c != (also & CNT_MASK))
            break;
        uint64_t at, units;
        if (rec_at(q, w_idx(hw), used_units(q, v->tw, hw), &at, &units) < 0)
            return SHMDS_ECORRUPT;
        hw = w_make(idx_add(q, w_idx(hw), units), c + 1);
    }
    *out = hw;
    return 0;
}

/* A lease starts at the precise time of its grant and runs out by the
 * coarse clock (shmds__coarse_now_ns, read once per receive: a precise
 * reading there was a tenth of a receiver's time per message). The coarse
 * clock is never ahead of the precise one, so a lease never runs out
 * early. It runs out late by what that clock lags: under a tick while the
 * CPU ticks, and after an idle CPU wakes, until its next tick, the whole
 * idle time (the kernel updates the clock on the tick: measured here, 4
 * ms of it over an 11 ms sleep). */
static void holder_write(struct qlease *s)
{
    uint32_t pid;
    uint64_t start;
    self_ident(&pid, &start);
    __atomic_store_n(&s->pid, pid, __ATOMIC_RELAXED);
    __atomic_store_n(&s->start, start, __ATOMIC_RELAXED);
    __atomic_store_n(&s->since_ns, shmds__now_ns(), __ATOMIC_RELAXED);
}

/* Take back leases (LEASED -> READY, one commit each) that ran out, and
 * when `probe` those whose holder is dead; without `probe` only the oldest
 * message's lease is looked at. Receivers' lock held. Returns how many were
 * taken back, or an error. Cost: O(window) and a liveness probe per
 * distinct holder when probing, O(1) else. */
static int ack_take_back(shmds_queue *q, const struct ackview *v, bool probe, uint64_t now)
{
    struct qack *a = q->a;
    uint64_t n = window_of(v), looked = probe ? n : n > 0;
    uint32_t dead = 0, live = 0; /* the last holders probed */
    uint64_t dead_start = 0, live_start = 0;
    int taken = 0;
    for (uint64_t i = 0; i < looked; i++) {
        uint64_t c = (w_cnt(v->hw) + i) & CNT_MASK, w;
        if (slot_word(q, c, &w) != 0)
            return SHMDS_ECORRUPT;
        if (lw_state(w) != L_LEASED)
            continue;
        struct qlease *s = slot_of(q, c);
        uint64_t since = __atomic_load_n(&s->since_ns, __ATOMIC_RELAXED);
        bool gone = now >= since && now - since >= q->lease_ns;
        if (!gone && probe) {
            uint64_t pid = __atomic_load_n(&s->pid, __ATOMIC_RELAXED);
            uint64_t st = __atomic_load_n(&s->start, __ATOMIC_RELAXED);
            if (pid == dead && st == dead_start)
                gone = true;
            else if (pid != live || st != live_start) {
                gone = pid > UINT32_MAX || !shmds__proc_alive((uint32_t)pid, st);
                if (gone) {
                    dead = (uint32_t)pid;
                    dead_start = st;
                } else {
                    live = (uint32_t)pid;
                    live_start = st;
                }
            }
        }
        if (!gone)
            continue;
        uint64_t ready = __atomic_load_n(&a->ready, __ATOMIC_RELAXED);
        uint64_t leased = __atomic_load_n(&a->leased, __ATOMIC_RELAXED);
        if (leased == 0 || ready >= n)
            return SHMDS_ECORRUPT;
        struct redo d = {0};
        log_put(&d, &s->word, lw_make(c, lw_attempt(w), L_READY));
        log_put(&d, &a->ready, ready + 1);
        log_put(&d, &a->leased, leased - 1);
        SHMDS_FAULT("queue.takeback.before_commit");
        log_commit(q, &d);
        taken++;
    }
    return taken;
}

/* Deliver the next message, if one is deliverable now: a taken-back one
 * (the oldest), else the oldest never delivered. `lease`: under a lease
 * (*idp receives its id); else acknowledged in the same commit. Receivers' lock
 * held. Returns 0, -EAGAIN (nothing deliverable), -ENOBUFS, SHMDS_ECORRUPT. */
static int ack_take(shmds_queue *q, const struct ackview *v, bool lease, void *buf, size_t cap,
                    size_t *lenp, uint64_t *idp)
{
    struct qack *a = q->a;
    uint64_t win = window_of(v);
    uint64_t ready = __atomic_load_n(&a->ready, __ATOMIC_RELAXED);
    uint64_t leased = __atomic_load_n(&a->leased, __ATOMIC_RELAXED);
    if (ready > win || leased > win - ready)
        return SHMDS_ECORRUPT;
    struct redo d = {0};
    uint64_t c, idx, nw;
    struct qlease *s;
    int64_t len;
    if (ready > 0) {
        uint64_t w = 0;
        for (c = w_cnt(v->hw);; c = (c + 1) & CNT_MASK) {
            if (c == w_cnt(v->rw))
                return SHMDS_ECORRUPT; /* the count says there is one */
            if (slot_word(q, c, &w) != 0)
                return SHMDS_ECORRUPT;
            if (lw_state(w) == L_READY)
                break;
        }
        s = slot_of(q, c);
        idx = __atomic_load_n(&s->idx, __ATOMIC_RELAXED);
        if ((len = window_rec(q, v, idx)) < 0)
            return SHMDS_ECORRUPT;
        *lenp = (size_t)len;
        if ((uint64_t)len > cap)
            return -ENOBUFS;
        payload_read(q, idx, buf, (uint64_t)len);
        nw = lw_make(c, lw_next_attempt(w), lease ? L_LEASED : L_ACKED);
        log_put(&d, &s->word, nw);
        log_put(&d, &a->ready, ready - 1);
        log_put(&d, &a->redelivered, __atomic_load_n(&a->redelivered, __ATOMIC_RELAXED) + 1);
        if (lease) {
            holder_write(s);
            log_put(&d, &a->leased, leased + 1);
        } else {
            uint64_t hw2;
            if (floor_after(q, v, c, &hw2) != 0)
                return SHMDS_ECORRUPT;
            if (hw2 != v->hw)
                log_put(&d, &q->h->head, hw2);
        }
    } else {
        if (msgs_between(v->tw, v->rw) == 0 || win == q->nslots)
            return -EAGAIN; /* empty, or as many in flight as there are slots */
        uint64_t units;
        c = w_cnt(v->rw);
        if ((len = rec_at(q, w_idx(v->rw), used_units(q, v->tw, v->rw), &idx, &units)) < 0)
            return SHMDS_ECORRUPT;
        *lenp = (size_t)len;
        if ((uint64_t)len > cap)
            return -ENOBUFS;
        payload_read(q, idx, buf, (uint64_t)len);
        uint64_t rw2 = w_make(idx_add(q, w_idx(v->rw), units), c + 1);
        s = slot_of(q, c); /* outside the window until rd moves: free to write */
        nw = lw_make(c, 1, lease ? L_LEASED : L_ACKED);
        if (!lease && win == 0) {
            log_put(&d, &q->h->head, rw2); /* nothing older in flight */
        } else {
            __atomic_store_n(&s->idx, idx, __ATOMIC_RELAXED);
            log_put(&d, &s->word, nw);
            if (lease) {
                holder_write(s);
                log_put(&d, &a->leased, leased + 1);
            }
        }
        log_put(&d, &a->rd, rw2);
    }
    SHMDS_FAULT("queue.lease.before_commit");
    log_commit(q, &d);
    *idp = nw & ~LW_STATE_MASK;
    return 0;
}

/* The receive of an SHMDS_QUEUE_ACK queue, leased or plain (acknowledged
 * at once). The waiting is recv_locked's; a receiver that finds nothing
 * deliverable probes the lease holders before it sleeps, and again after
 * every wake-up (at most SLICE_MS apart). */
static int recv_ack(shmds_queue *q, bool lease, void *buf, size_t cap, size_t *lenp,
                    uint64_t *idp, int timeout_ms)
{
    struct qhdr *h = q->h;
    struct turn turn = turn_now(timeout_ms);
    unsigned bells = 0;
    bool fresh = false; /* read the tail itself (before a wait) */
    int rc = q_lock_io(q, SIDE_CONS, timeout_ms, turn.deadline);
    if (rc != 0)
        return rc;
    for (;;) {
        struct ackview v;
        if ((rc = ack_view(q, &v, fresh ? VIEW_TAIL : VIEW_RECV)) != 0)
            break;
        uint64_t now = shmds__coarse_now_ns();
        rc = ack_take_back(q, &v, false, now);
        if (rc >= 0)
            rc = ack_take(q, &v, lease, buf, cap, lenp, idp);
        if (rc == -EAGAIN) {
            int back = ack_take_back(q, &v, true, now);
            rc = back > 0 ? ack_take(q, &v, lease, buf, cap, lenp, idp)
                          : back < 0 ? back : -EAGAIN;
        }
        if (rc == 0) {
            SHMDS_FAULT("queue.lease.after_commit");
            /* The words as this commit left them (rd and head are ours
             * under the lock): for the count and the doorbells only, so
             * not checked again. */
            uint64_t rw = __atomic_load_n(&q->a->rd, __ATOMIC_RELAXED);
            if (__atomic_load_n(&h->head, __ATOMIC_RELAXED) != v.hw) {
                count_update(&h->received, w_cnt(rw));
                bells |= WAKE_SEND;
            }
            if (msgs_between(v.tw, rw) > 0 ||
                __atomic_load_n(&q->a->ready, __ATOMIC_RELAXED) > 0)
                bells |= WAKE_RECV;
            break;
        }
        if (rc != -EAGAIN)
            break;
        if (!v.fresh) { /* look at the tail itself before waiting on it */
            fresh = true;
            continue;
        }
        if (v.tw & CLOSED_BIT) {
            bells |= WAKE_RECV;
            rc = SHMDS_ECLOSED;
            break;
        }
        if ((rc = wait_turn(q, &turn, &h->tail, v.tw, false, true, bells)) != 0)
            return rc;
        fresh = false;
    }
    q_unlock(q, SIDE_CONS, bells);
    return rc;
}

/* Acknowledge the lease `id` (receivers' lock held); *bells: whom to wake. */
static int ack_locked(shmds_queue *q, uint64_t id, unsigned *bells)
{
    struct qack *a = q->a;
    struct ackview v;
    int rc = ack_view(q, &v, VIEW_ACK);
    if (rc != 0)
        return rc;
    uint64_t c = lw_cnt(id), win = window_of(&v), w;
    if (((c - w_cnt(v.hw)) & CNT_MASK) >= win)
        return -ESTALE; /* acknowledged and passed, or never leased */
    if (slot_word(q, c, &w) != 0)
        return SHMDS_ECORRUPT;
    unsigned st = lw_state(w);
    if ((w & ~LW_STATE_MASK) != id || (st != L_LEASED && st != L_READY))
        return -ESTALE;
    uint64_t *count = st == L_LEASED ? &a->leased : &a->ready;
    uint64_t n = __atomic_load_n(count, __ATOMIC_RELAXED), hw2;
    if (n == 0 || floor_after(q, &v, c, &hw2) != 0)
        return SHMDS_ECORRUPT;
    struct redo d = {0};
    log_put(&d, &slot_of(q, c)->word, lw_make(c, lw_attempt(w), L_ACKED));
    log_put(&d, count, n - 1);
    if (hw2 != v.hw)
        log_put(&d, &q->h->head, hw2);
    SHMDS_FAULT("queue.ack.before_commit");
    log_commit(q, &d);
    if (hw2 != v.hw) {
        count_update(&q->h->received, w_cnt(v.rw));
        *bells |= WAKE_SEND;
    }
    if (win == q->nslots) /* receivers may wait for a free slot */
        *bells |= WAKE_RECV;
    return 0;
}

SHMDS_API int shmds_queue_recv_lease(shmds_queue *q, void *buf, size_t cap, size_t *len,
                                     uint64_t *id, int timeout_ms)
{
    if (q == NULL || len == NULL || id == NULL || (buf == NULL && cap > 0) || q->a == NULL)
        return -EINVAL;
    int rc = io_check(q, timeout_ms);
    if (rc != 0)
        return rc;
    return recv_ack(q, true, buf, cap, len, id, timeout_ms);
}

SHMDS_API int shmds_queue_ack(shmds_queue *q, uint64_t id)
{
    if (q == NULL || q->a == NULL || (id & LW_STATE_MASK) != 0 || lw_attempt(id) == 0 ||
        lw_cnt(id) > CNT_MASK)
        return -EINVAL;
    int rc = shmds__writable(q->r);
    if (rc != 0 || (rc = q_lock(q, SIDE_CONS)) != 0)
        return rc;
    unsigned bells = 0;
    rc = ack_locked(q, id, &bells);
    q_unlock(q, SIDE_CONS, bells);
    return rc;
}

SHMDS_API int shmds_queue_stats_get(shmds_queue *q, shmds_queue_stats *out)
{
    if (q == NULL || out == NULL)
        return -EINVAL;
    struct qhdr *h = q->h;
    memset(out, 0, sizeof *out);
    uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
    uint64_t dw = q->a != NULL ? __atomic_load_n(&q->a->rd, __ATOMIC_ACQUIRE) : hw;
    uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    if (w_idx(tw) >= 2 * q->cap_u || w_idx(hw) >= 2 * q->cap_u || w_idx(dw) >= 2 * q->cap_u)
        return SHMDS_ECORRUPT;
    out->sent = count_value(__atomic_load_n(&h->sent, __ATOMIC_RELAXED), w_cnt(tw));
    out->received = count_value(__atomic_load_n(&h->received, __ATOMIC_RELAXED), w_cnt(dw));
    out->waiting = msgs_between(tw, dw);
    out->flags = q->flags;
    out->recoveries = __atomic_load_n(&h->lock.recoveries, __ATOMIC_RELAXED) +
                     __atomic_load_n(&h->rlock.recoveries, __ATOMIC_RELAXED);
    for (uint32_t i = 0; i < q->nsubs; i++) {
        out->subscribers += __atomic_load_n(&q->subs[i].pid, __ATOMIC_RELAXED) != 0;
        out->missed += __atomic_load_n(&q->subs[i].missed, __ATOMIC_RELAXED);
    }
    if (q->subs != NULL)
        out->received = 0; /* each subscriber receives: see missed */
    if (q->a == NULL)
        return 0;
    struct qack *a = q->a;
    out->redelivered = __atomic_load_n(&a->redelivered, __ATOMIC_RELAXED);
    out->in_flight = __atomic_load_n(&a->leased, __ATOMIC_RELAXED);
    out->requeued = __atomic_load_n(&a->ready, __ATOMIC_RELAXED);
    out->lease_ms = a->lease_ms;
    out->max_in_flight = q->nslots;
    uint64_t now = shmds__now_ns(), win = msgs_between(dw, hw);
    for (uint64_t i = 0; i < win && i < q->nslots; i++) {
        struct qlease *s = slot_of(q, w_cnt(hw) + i);
        uint64_t w = __atomic_load_n(&s->word, __ATOMIC_ACQUIRE);
        uint64_t since = __atomic_load_n(&s->since_ns, __ATOMIC_RELAXED);
        if (lw_state(w) == L_LEASED && now > since && now - since > out->oldest_in_flight_ns)
            out->oldest_in_flight_ns = now - since;
    }
    return 0;
}

/* The check's part for SHMDS_QUEUE_ACK (both locks held, so no log is
 * open): the words, and every slot of the window against the records of
 * [head, rd) and the counts. */
static int ack_check(const shmds_queue *q)
{
    struct ackview v;
    if (__atomic_load_n(&q->a->log_n, __ATOMIC_ACQUIRE) != 0 || ack_view(q, &v, VIEW_TAIL) != 0)
        return SHMDS_ECORRUPT;
    uint64_t hw = v.hw, n = window_of(&v), leased = 0, ready = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t c = w_cnt(hw), w;
        if (slot_word(q, c, &w) != 0)
            return SHMDS_ECORRUPT;
        unsigned st = lw_state(w);
        if ((st != L_LEASED && st != L_READY && st != L_ACKED) || (i == 0 && st == L_ACKED) ||
            lw_attempt(w) == 0)
            return SHMDS_ECORRUPT;
        uint64_t at, units;
        if (rec_at(q, w_idx(hw), used_units(q, v.tw, hw), &at, &units) < 0 ||
            __atomic_load_n(&slot_of(q, c)->idx, __ATOMIC_RELAXED) != at)
            return SHMDS_ECORRUPT;
        leased += st == L_LEASED;
        ready += st == L_READY;
        hw = w_make(idx_add(q, w_idx(hw), units), c + 1);
    }
    if (hw != (v.rw & ~CLOSED_BIT) || leased != __atomic_load_n(&q->a->leased, __ATOMIC_RELAXED) ||
        ready != __atomic_load_n(&q->a->ready, __ATOMIC_RELAXED))
        return SHMDS_ECORRUPT;
    return 0;
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

static uint64_t ack_checksum(const struct qack *a)
{
    return shmds__fnv1a(SHMDS__FNV_INIT, a, offsetof(struct qack, checksum));
}

/* Bytes of the SHMDS_QUEUE_ACK area with `slots` lease slots. */
static uint64_t ack_bytes(uint64_t slots)
{
    return sizeof(struct qack) + slots * sizeof(struct qlease);
}

/* Validate the area of an SHMDS_QUEUE_ACK or SHMDS_QUEUE_BROADCAST queue
 * at `off` (whose header is valid) and fill the handle's view of it. */
static int area_attach(shmds_region *r, shmds_off_t off, const struct qhdr *h, shmds_queue *q)
{
    bool ack = (h->flags & SHMDS_QUEUE_ACK) != 0;
    struct qack *a = shmds__ptr_chk(r, off + sizeof(struct qhdr), sizeof *a, SHMDS__CACHE_LINE);
    if (a == NULL || a->checksum != ack_checksum(a) || a->self != off)
        return SHMDS_ECORRUPT;
    uint32_t n = a->slots;
    if (n == 0 || n > (ack ? ACK_SLOTS_MAX : SUBS_MAX) || (n & (n - 1)) != 0 ||
        (ack && a->lease_ms == 0) || h->ring != off + sizeof(struct qhdr) + ack_bytes(n))
        return SHMDS_ECORRUPT;
    if (!ack) {
        q->subs = (struct qsub *)(a + 1);
        q->nsubs = n;
        return 0;
    }
    q->a = a;
    q->slots = (struct qlease *)(a + 1);
    q->nslots = n;
    q->lease_ns = (uint64_t)a->lease_ms * 1000000u;
    return 0;
}

/* One mode at most: SPSC, ACK or BROADCAST (BLOCK only with BROADCAST). */
static bool flags_ok(uint32_t flags)
{
    const uint32_t modes = SHMDS_QUEUE_SPSC | SHMDS_QUEUE_ACK | SHMDS_QUEUE_BROADCAST;
    return (flags & ~(modes | SHMDS_QUEUE_BLOCK)) == 0 && (flags & modes & ((flags & modes) - 1)) == 0 &&
           (!(flags & SHMDS_QUEUE_BLOCK) || (flags & SHMDS_QUEUE_BROADCAST));
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
    uint32_t flags = h->flags;
    bool area = (flags & (SHMDS_QUEUE_ACK | SHMDS_QUEUE_BROADCAST)) != 0;
    if (h->self != off || (!area && h->ring != off + sizeof(struct qhdr)) ||
        !flags_ok(flags) || cap < 16 || cap > SHMDS_QUEUE_CAPACITY_MAX || cap % 8 != 0 ||
        h->max_msg == 0 || h->max_msg > cap - 8 || !shmds__off_ok(r, h->ring, cap, 8))
        return SHMDS_ECORRUPT;
    shmds_queue *q = calloc(1, sizeof *q);
    if (q == NULL)
        return -ENOMEM;
    int rc = area ? area_attach(r, off, h, q) : 0;
    if (rc != 0) {
        free(q);
        return rc;
    }
    q->r = r;
    q->h = h;
    q->ring = r->base + h->ring;
    q->cap_u = cap / 8;
    q->max_msg = h->max_msg;
    q->flags = flags;
    q->off = off;
    q->fifo = -1;
    *out = q;
    return 0;
}

struct qparams {
    uint64_t cap;
    size_t max_msg;
    unsigned flags;
    uint32_t slots;    /* lease or subscriber slots; 0: no area */
    uint32_t lease_ms;
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
    uint64_t extra = p->slots ? ack_bytes(p->slots) : 0;
    h->ring = off + sizeof(struct qhdr) + extra;
    h->block = block;
    h->checksum = hdr_checksum(h);
    if (p->slots != 0) { /* the area of SHMDS_QUEUE_ACK or _BROADCAST */
        struct qack *a = (struct qack *)(h + 1);
        a->slots = p->slots;
        if (p->flags & SHMDS_QUEUE_ACK)
            a->lease_ms = p->lease_ms;
        a->self = off;
        a->checksum = ack_checksum(a);
    }
    int rc;
    if ((rc = shmds_mutex_init(&h->lock)) != 0 || (rc = shmds_mutex_init(&h->rlock)) != 0 ||
        (rc = shmds_sem_init(&h->not_empty, 0)) != 0 || (rc = shmds_sem_init(&h->not_full, 0)) != 0)
        return rc;
    __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

SHMDS_API int shmds_queue_create(shmds_region *r, const char *name, size_t capacity_bytes,
                                 size_t max_msg, unsigned flags, shmds_queue **out)
{
    shmds_queue_opts o = {.capacity_bytes = capacity_bytes, .max_msg = max_msg, .flags = flags};
    return shmds_queue_create_ex(r, name, &o, out);
}

SHMDS_API int shmds_queue_create_ex(shmds_region *r, const char *name,
                                    const shmds_queue_opts *o, shmds_queue **out)
{
    if (r == NULL || out == NULL || o == NULL)
        return -EINVAL;
    unsigned flags = o->flags;
    size_t capacity_bytes = o->capacity_bytes, max_msg = o->max_msg;
    if (!flags_ok(flags) || o->max_in_flight > ACK_SLOTS_MAX || o->max_subscribers > SUBS_MAX)
        return -EINVAL;
    if (capacity_bytes > SHMDS_QUEUE_CAPACITY_MAX)
        return -EINVAL;
    uint64_t cap = ((uint64_t)capacity_bytes + 7) & ~UINT64_C(7);
    if (cap < 16 || max_msg == 0 || max_msg > cap - 8)
        return -EINVAL;
    uint32_t slots = 0;
    if (flags & SHMDS_QUEUE_ACK)
        for (slots = 1; slots < (o->max_in_flight ? o->max_in_flight : ACK_SLOTS_DEFAULT);)
            slots *= 2;
    if (flags & SHMDS_QUEUE_BROADCAST)
        for (slots = 1; slots < (o->max_subscribers ? o->max_subscribers : SUBS_DEFAULT);)
            slots *= 2;
    struct qparams p = {cap, max_msg, flags, slots,
                        o->lease_ms ? o->lease_ms : SHMDS_QUEUE_LEASE_MS_DEFAULT};
    void *q;
    int rc = shmds__obj_create_attach(r, &shmds__queue_ops, name,
                                      sizeof(struct qhdr) + (slots ? ack_bytes(slots) : 0) + cap,
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
    zc_drop(q);
    fifo_close(q);
    free(q->bounce);
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
    zc_drop(q);
    char path[96];
    if (fifo_path(q, path, sizeof path, NULL) == 0)
        unlink(path);
    fifo_close(q);
    free(q->bounce);
    int rc = shmds__obj_destroy(q->r, &shmds__queue_ops, q->name, q->off);
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
        return send_spsc(q, msg, len, timeout_ms, false);
    return send_locked(q, msg, len, timeout_ms, false);
}

SHMDS_API int shmds_queue_recv(shmds_queue *q, void *buf, size_t cap, size_t *len, int timeout_ms)
{
    if (q == NULL || len == NULL || (buf == NULL && cap > 0) || q->subs != NULL)
        return -EINVAL;
    int rc = io_check(q, timeout_ms);
    if (rc != 0)
        return rc;
    if (q->flags & SHMDS_QUEUE_SPSC)
        return recv_spsc(q, buf, cap, len, timeout_ms, false);
    if (q->a != NULL) {
        uint64_t id;
        return recv_ack(q, false, buf, cap, len, &id, timeout_ms);
    }
    return recv_locked(q, buf, cap, len, timeout_ms, false);
}

/* True when the calling thread (not a forked child's copy) owns a
 * reservation or message in place with these fields. */
static bool zc_mine(bool on, pthread_t thread, unsigned gen)
{
    return on && gen == fork_gen && pthread_equal(thread, pthread_self());
}

SHMDS_API int shmds_queue_reserve(shmds_queue *q, size_t len, void **buf, int timeout_ms)
{
    if (q == NULL || buf == NULL)
        return -EINVAL;
    int rc = io_check(q, timeout_ms);
    if (rc != 0)
        return rc;
    /* A pad before the record takes less than the record: what fits in
     * half the ring always fits in an empty ring. */
    if (len > q->max_msg || 2 * rec_units(len) - 1 > q->cap_u)
        return -EMSGSIZE;
    bool locked = !(q->flags & SHMDS_QUEUE_SPSC);
    if (q->rsv.on || (locked && q->ref.on))
        return -EBUSY;
    rc = locked ? send_locked(q, NULL, len, timeout_ms, true)
                : send_spsc(q, NULL, len, timeout_ms, true);
    if (rc == 0)
        *buf = q->rsv.ptr;
    return rc;
}

/* End the reservation: commit `len` bytes of it, or (commit false) drop
 * it. */
static int rsv_end(shmds_queue *q, bool commit, uint64_t len)
{
    struct qhdr *h = q->h;
    int rc = 0;
    if (commit) {
        uint64_t tw = q->rsv.tw, at = idx_add(q, w_idx(tw), q->rsv.pad);
        if (q->rsv.pad > 0) {
            struct rec ph = {PAD_LEN, rec_tag(w_idx(tw))};
            memcpy(q->ring + idx_byte(q, w_idx(tw)), &ph, sizeof ph);
        }
        struct rec rh = {(uint32_t)len, rec_tag(at)};
        memcpy(q->ring + idx_byte(q, at), &rh, sizeof rh);
        SHMDS_FAULT("queue.zc.before_commit");
        uint64_t nw = w_make(idx_add(q, at, rec_units(len)), w_cnt(tw) + 1);
        /* Only a shut-down can have changed the word meanwhile. */
        if (__atomic_compare_exchange_n(&h->tail, &tw, nw, false, __ATOMIC_SEQ_CST,
                                        __ATOMIC_RELAXED))
            count_update(&h->sent, w_cnt(nw));
        else
            rc = SHMDS_ECLOSED;
    }
    q->rsv.on = false;
    if (!(q->flags & SHMDS_QUEUE_SPSC))
        shmds_mutex_unlock(&h->lock); /* the senders' */
    if (commit && rc == 0)
        wake_receivers(q);
    return rc;
}

SHMDS_API int shmds_queue_commit(shmds_queue *q, size_t len)
{
    if (q == NULL || !zc_mine(q->rsv.on, q->rsv.thread, q->rsv.fork_gen))
        return -EINVAL;
    if (len > q->rsv.len)
        return -EMSGSIZE;
    return rsv_end(q, true, len);
}

SHMDS_API void shmds_queue_cancel(shmds_queue *q)
{
    if (q != NULL && zc_mine(q->rsv.on, q->rsv.thread, q->rsv.fork_gen))
        rsv_end(q, false, 0);
}

SHMDS_API int shmds_queue_recv_ref(shmds_queue *q, const void **msg, size_t *len, int timeout_ms)
{
    if (q == NULL || msg == NULL || len == NULL || q->a != NULL || q->subs != NULL)
        return -EINVAL;
    int rc = io_check(q, timeout_ms);
    if (rc != 0)
        return rc;
    bool locked = !(q->flags & SHMDS_QUEUE_SPSC);
    if (q->ref.on || (locked && q->rsv.on))
        return -EBUSY;
    rc = locked ? recv_locked(q, NULL, 0, len, timeout_ms, true)
                : recv_spsc(q, NULL, 0, len, timeout_ms, true);
    if (rc == 0)
        *msg = q->ref.ptr;
    return rc;
}

/* End the receive in place: consume the message, or leave it queued. */
static void ref_end(shmds_queue *q, bool consume)
{
    struct qhdr *h = q->h;
    unsigned bells = 0;
    if (consume) {
        SHMDS_FAULT("queue.zc.before_release");
        __atomic_store_n(&h->head, q->ref.nh, __ATOMIC_SEQ_CST);
        count_update(&h->received, w_cnt(q->ref.nh));
        bells |= WAKE_SEND;
    }
    q->ref.on = false;
    if (!(q->flags & SHMDS_QUEUE_SPSC)) {
        if (consume && used_units(q, __atomic_load_n(&h->tail, __ATOMIC_RELAXED), q->ref.nh) > 0)
            bells |= WAKE_RECV;
        shmds_mutex_unlock(&h->rlock);
    }
    bells_ring(q, bells);
}

SHMDS_API int shmds_queue_release(shmds_queue *q)
{
    if (q == NULL || !zc_mine(q->ref.on, q->ref.thread, q->ref.fork_gen))
        return -EINVAL;
    ref_end(q, true);
    return 0;
}

/* For close and destroy: give back what this thread holds (a reservation
 * is dropped, a message received in place stays queued). */
static void zc_drop(shmds_queue *q)
{
    if (zc_mine(q->rsv.on, q->rsv.thread, q->rsv.fork_gen))
        rsv_end(q, false, 0);
    if (zc_mine(q->ref.on, q->ref.thread, q->ref.fork_gen))
        ref_end(q, false);
}

/* ---------------------------------------------------------------------------
 * Waiting on several queues, and event loops
 * ------------------------------------------------------------------------ */

static void fifo_close(shmds_queue *q)
{
    if (q->fifo_armed)
        __atomic_sub_fetch(&q->h->fd_waiters, 1, __ATOMIC_SEQ_CST);
    q->fifo_armed = false;
    if (q->fifo >= 0)
        close(q->fifo);
    q->fifo = -1;
}

SHMDS_API int shmds_queue_notify_fd(shmds_queue *q, int *fd)
{
    if (q == NULL || fd == NULL)
        return -EINVAL;
    int rc = fifo_open(q);
    if (rc != 0)
        return rc;
    if (!q->fifo_armed) {
        __atomic_add_fetch(&q->h->fd_waiters, 1, __ATOMIC_SEQ_CST);
        q->fifo_armed = true;
    }
    *fd = q->fifo;
    return 0;
}

SHMDS_API int shmds_queue_notify_clear(shmds_queue *q)
{
    if (q == NULL || !q->fifo_armed)
        return -EINVAL;
    char junk[256];
    __atomic_store_n(&q->h->fd_pending, 0, __ATOMIC_SEQ_CST);
    while (read(q->fifo, junk, sizeof junk) > 0)
        ;
    return 0;
}

/* Would a receive on q find something to return now: a message never
 * delivered, one taken back (SHMDS_QUEUE_ACK), or the end of the stream?
 * Takes no lock. */
static bool has_work(shmds_queue *q)
{
    const struct qhdr *h = q->h;
    uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
    uint64_t from = __atomic_load_n(q->a != NULL ? &q->a->rd : &h->head, __ATOMIC_ACQUIRE);
    if (tw & CLOSED_BIT)
        return true;
    return w_idx(tw) != w_idx(from) ||
           (q->a != NULL && __atomic_load_n(&q->a->ready, __ATOMIC_RELAXED) > 0);
}

SHMDS_API int shmds_queue_wait_any(shmds_queue *const *qs, unsigned n, int timeout_ms,
                                   unsigned *ready)
{
    if (qs == NULL || ready == NULL || n == 0 || n > SHMDS_QUEUE_WAIT_MAX || timeout_ms < -1)
        return -EINVAL;
    struct pollfd pfd[SHMDS_QUEUE_WAIT_MAX];
    for (unsigned i = 0; i < n; i++) {
        if (qs[i] == NULL || qs[i]->subs != NULL)
            return -EINVAL;
        int rc = shmds_queue_notify_fd(qs[i], &pfd[i].fd);
        if (rc != 0)
            return rc;
        pfd[i].events = POLLIN;
    }
    uint64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        /* Clear first, then look: a send after the look leaves a byte. */
        for (unsigned i = 0; i < n; i++)
            shmds_queue_notify_clear(qs[i]);
        for (unsigned i = 0; i < n; i++)
            if (has_work(qs[i])) {
                *ready = i;
                return 0;
            }
        if (expired(timeout_ms, deadline))
            return timeout_ms == 0 ? -EAGAIN : -ETIMEDOUT;
        int ms = SLICE_MS;
        if (timeout_ms > 0 && shmds__ms_left(deadline) < ms)
            ms = shmds__ms_left(deadline) > 0 ? shmds__ms_left(deadline) : 1;
        if (poll(pfd, n, ms) < 0 && errno != EINTR)
            return -errno;
    }
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
    wake_receivers(q);
    shmds__bell_ring(&h->not_full, &h->send_sleepers, false);
    return 0;
}

SHMDS_API int shmds_queue_len(shmds_queue *q, uint64_t *msgs)
{
    if (q == NULL || msgs == NULL)
        return -EINVAL;
    /* Of an SHMDS_QUEUE_ACK queue, the messages past the read cursor. */
    uint64_t *from = q->a != NULL ? &q->a->rd : &q->h->head;
    for (int i = 0; i < LEN_TRIES; i++) {
        uint64_t hw = __atomic_load_n(from, __ATOMIC_ACQUIRE);
        uint64_t tw = __atomic_load_n(&q->h->tail, __ATOMIC_ACQUIRE);
        /* The pair is a snapshot only if the head did not move while the
         * tail was read (else the tail may be a lap ahead of it). */
        if (__atomic_load_n(from, __ATOMIC_ACQUIRE) != hw)
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

/* The cached words (both locks held): the senders' copy of the head lies
 * at or behind the head, within a ring of the tail; the receivers' copy of
 * the tail between the head and the tail. Else a send or receive would
 * trust a copy the words contradict. */
static bool seen_ok(const shmds_queue *q, uint64_t tw, uint64_t hw)
{
    uint64_t sh = __atomic_load_n(&q->h->seen_head, __ATOMIC_RELAXED);
    uint64_t st = __atomic_load_n(&q->h->seen_tail, __ATOMIC_RELAXED);
    if (!words_ok(q, tw, sh) || msgs_between(tw, sh) < msgs_between(tw, hw) ||
        used_units(q, tw, sh) < used_units(q, tw, hw))
        return false;
    if (q->subs != NULL)
        return true; /* subscribers read the tail itself */
    if (q->a != NULL) {
        /* A copy that contradicts head or rd is not used (ack_view reads
         * the tail instead, and replaces it): only a usable one must lie
         * at or behind the tail. */
        struct ackview v = {.tw = st, .hw = hw, .rw = __atomic_load_n(&q->a->rd, __ATOMIC_RELAXED)};
        if (view_ok(q, &v) != 0)
            return true;
    }
    return words_ok(q, st & ~CLOSED_BIT, hw) && msgs_between(st, hw) <= msgs_between(tw, hw) &&
           used_units(q, st, hw) <= used_units(q, tw, hw);
}

/* Walk the records of [head, tail) and compare with the count. */
static int walk(const shmds_queue *q, uint64_t tw, uint64_t hw)
{
    uint64_t idx = w_idx(hw), left = used_units(q, tw, hw), n = 0;
    while (left > 0) { /* each step consumes at least one unit: bounded */
        uint64_t at, u;
        if (rec_at(q, idx, left, &at, &u) < 0)
            return SHMDS_ECORRUPT;
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
    uint64_t extra = q->a != NULL      ? ack_bytes(q->nslots)
                     : q->subs != NULL ? ack_bytes(q->nsubs)
                                       : 0;
    if (h->block > q->off || q->off - h->block + sizeof(struct qhdr) + extra + h->cap > usable)
        return SHMDS_ECORRUPT;
    /* The words glibc trusts in the locks and the doorbells. */
    if (!shmds__mutex_ok(&h->lock) || !shmds__mutex_ok(&h->rlock) ||
        !shmds__sem_ok(&h->not_empty) || !shmds__sem_ok(&h->not_full))
        return SHMDS_ECORRUPT;
    if (!shmds__rdonly(r) && !(q->flags & SHMDS_QUEUE_SPSC)) {
        /* Both sides still: the senders' lock first, always. */
        if ((rc = q_lock(q, SIDE_PROD)) != 0)
            return rc;
        if ((rc = q_lock(q, SIDE_CONS)) != 0) {
            shmds_mutex_unlock(&h->lock);
            return rc;
        }
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_RELAXED);
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_RELAXED);
        rc = words_ok(q, tw, hw) && seen_ok(q, tw, hw) ? walk(q, tw, hw) : SHMDS_ECORRUPT;
        if (rc == 0 && q->a != NULL)
            rc = ack_check(q);
        shmds_mutex_unlock(&h->rlock);
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
    shmds_queue *q;
    int rc = handle_make(r, off, &q);
    if (rc == 0 && name != NULL)
        memcpy(q->name, name, strlen(name) + 1);
    if (rc == 0)
        *out = q;
    return rc;
}

const struct shmds__obj_ops shmds__queue_ops = {SHMDS_TYPE_QUEUE, queue_attach, queue_teardown_at,
                                                queue_check_at, NULL};

/* ---------------------------------------------------------------------------
 * Broadcast: subscribers
 * ------------------------------------------------------------------------ */

struct shmds_sub {
    shmds_queue *q;
    uint32_t slot;
    uint32_t pid;
    uint64_t cursor; /* this process's copy of the slot's cursor */
    uint64_t lost;   /* missed, not yet reported */
};

SHMDS_API int shmds_queue_subscribe(shmds_queue *q, shmds_sub **out)
{
    if (q == NULL || out == NULL || q->subs == NULL)
        return -EINVAL;
    int rc = shmds__writable(q->r);
    if (rc != 0)
        return rc;
    shmds_sub *sb = calloc(1, sizeof *sb);
    if (sb == NULL)
        return -ENOMEM;
    uint32_t pid;
    uint64_t start;
    self_ident(&pid, &start);
    if ((rc = q_lock(q, SIDE_PROD)) != 0) {
        free(sb);
        return rc;
    }
    rc = -ENOSPC;
    /* A free slot, else one whose subscriber died. Under the lock, so a
     * publisher never sees the slot half made. */
    for (int pass = 0; pass < 2 && rc == -ENOSPC; pass++) {
        for (uint32_t i = 0; i < q->nsubs; i++) {
            struct qsub *slot = &q->subs[i];
            uint64_t p = __atomic_load_n(&slot->pid, __ATOMIC_ACQUIRE);
            if (p != 0 && (pass == 0 || (p <= UINT32_MAX &&
                                         shmds__proc_alive((uint32_t)p, slot->start))))
                continue;
            uint64_t tw = __atomic_load_n(&q->h->tail, __ATOMIC_ACQUIRE) & ~CLOSED_BIT;
            __atomic_store_n(&slot->start, start, __ATOMIC_RELAXED);
            __atomic_store_n(&slot->cursor, tw, __ATOMIC_RELAXED);
            __atomic_store_n(&slot->missed, 0, __ATOMIC_RELAXED);
            SHMDS_FAULT("queue.subscribe.before_commit"); /* the slot is still free */
            __atomic_store_n(&slot->pid, pid, __ATOMIC_RELEASE);
            sb->q = q;
            sb->slot = i;
            sb->pid = pid;
            sb->cursor = tw;
            rc = 0;
            break;
        }
    }
    shmds_mutex_unlock(&q->h->lock); /* the publishers' */
    if (rc != 0)
        free(sb);
    else
        *out = sb;
    return rc;
}

SHMDS_API int shmds_sub_next(shmds_sub *s, void *buf, size_t cap, size_t *len, uint64_t *missed,
                             int timeout_ms)
{
    if (s == NULL || len == NULL || (buf == NULL && cap > 0) || timeout_ms < -1)
        return -EINVAL;
    shmds_queue *q = s->q;
    struct qhdr *h = q->h;
    struct qsub *slot = &q->subs[s->slot];
    uint32_t me;
    uint64_t start;
    self_ident(&me, &start);
    if (me != s->pid || __atomic_load_n(&slot->pid, __ATOMIC_RELAXED) != me)
        return -EINVAL;
    struct turn turn = {timeout_ms, false, 0};
    int rc = 0;
    for (;;) {
        uint64_t cw = s->cursor;
        /* Publishers move both words (head when they drop the oldest): a
         * head and tail read apart are one view only if head did not move
         * in between, else a head past the tail read reads as damage. */
        uint64_t hw = __atomic_load_n(&h->head, __ATOMIC_ACQUIRE);
        uint64_t tw = __atomic_load_n(&h->tail, __ATOMIC_ACQUIRE);
        if (__atomic_load_n(&h->head, __ATOMIC_ACQUIRE) != hw)
            continue;
        if (!words_ok(q, tw, hw) || w_idx(cw) >= 2 * q->cap_u)
            return SHMDS_ECORRUPT;
        if (cnt_before(w_cnt(cw), w_cnt(hw))) { /* dropped before we read them */
            uint64_t n = (w_cnt(hw) - w_cnt(cw)) & CNT_MASK;
            s->lost += n;
            __atomic_add_fetch(&slot->missed, n, __ATOMIC_RELAXED);
            SHMDS_FAULT("queue.sub.missed"); /* a dead subscriber's slot only */
            cw = s->cursor = hw;
            __atomic_store_n(&slot->cursor, cw, __ATOMIC_RELEASE);
        }
        if (w_cnt(cw) == w_cnt(tw)) {
            if (tw & CLOSED_BIT)
                return SHMDS_ECLOSED;
            if ((rc = wait_turn(q, &turn, &h->tail, tw, false, false, 0)) != 0)
                return rc;
            continue;
        }
        if (!cnt_before(w_cnt(cw), w_cnt(tw)) || used_units(q, tw, cw) > used_units(q, tw, hw))
            return SHMDS_ECORRUPT; /* the cursor is not between head and tail */
        uint64_t at, units;
        int64_t n = rec_at(q, w_idx(cw), used_units(q, tw, cw), &at, &units);
        if (n >= 0 && (uint64_t)n <= cap)
            payload_read(q, at, buf, (uint64_t)n);
        /* The seqlock check: if head passed the cursor, the bytes may be a
         * publisher's new ones; count the message as missed and go on. */
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (cnt_before(w_cnt(cw), w_cnt(__atomic_load_n(&h->head, __ATOMIC_RELAXED))))
            continue;
        if (n < 0)
            return SHMDS_ECORRUPT;
        *len = (size_t)n;
        if ((uint64_t)n > cap) {
            rc = -ENOBUFS;
            goto done;
        }
        s->cursor = w_make(idx_add(q, w_idx(cw), units), w_cnt(cw) + 1);
        break;
    }
    if (missed != NULL)
        *missed = s->lost;
    s->lost = 0;
done:
    SHMDS_FAULT("queue.sub.before_commit"); /* with BLOCK: holds publishers until probed */
    __atomic_store_n(&slot->cursor, s->cursor, __ATOMIC_RELEASE);
    if (q->flags & SHMDS_QUEUE_BLOCK)
        wake_senders(q);
    return rc;
}

SHMDS_API void shmds_sub_close(shmds_sub *s)
{
    if (s == NULL)
        return;
    uint32_t me;
    uint64_t start;
    self_ident(&me, &start);
    struct qsub *slot = &s->q->subs[s->slot];
    uint64_t mine = me;
    if (me == s->pid)
        __atomic_compare_exchange_n(&slot->pid, &mine, 0, false, __ATOMIC_RELEASE,
                                    __ATOMIC_RELAXED);
    if (s->q->flags & SHMDS_QUEUE_BLOCK)
        wake_senders(s->q);
    free(s);
}
