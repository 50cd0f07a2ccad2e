/*
 * Robust process-shared mutexes with a repair protocol, and semaphores used
 * as doorbells.
 *
 * Layer: locks, below the allocator and the region's directory (which lock
 * through it) and above util.c. It knows nothing of regions: the bound of a
 * wait is the caller's (region.c's shmds__lock passes the region's and
 * bumps the region's epoch on a recovery). The seqlock helpers beside it
 * are in internal.h.
 *
 * How owner death is handled: the mutex is a pthread mutex made
 * PTHREAD_PROCESS_SHARED and PTHREAD_MUTEX_ROBUST. When its holder dies, the
 * kernel (walking the dead thread's robust list) marks the futex word
 * OWNER_DIED and wakes one waiter, whose lock call returns EOWNERDEAD with
 * the lock held. That caller runs the structure's repair function and only
 * then calls pthread_mutex_consistent(). If the repairer dies before that
 * call, the mutex is still inconsistent, so the next locker gets EOWNERDEAD
 * again and repairs again: this is why repairs must be idempotent. If the
 * repair fails, the mutex is unlocked *without* being made consistent, which
 * makes glibc mark it not recoverable: every later lock in every process
 * returns ENOTRECOVERABLE at once. A `state` word beside the pthread mutex
 * says the same thing to readers that do not lock.
 *
 * Each thread also keeps a short list of the shmds mutexes it holds, so that
 * shmds_region_close() can refuse to unmap a region whose lock is held.
 *
 * Semaphores: sem_clockwait on CLOCK_MONOTONIC, so a wall-clock jump cannot
 * stretch or cut a timeout; EINTR restarts the wait.
 */
#include "internal.h"

#include <limits.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

enum { MUTEX_USABLE = 0, MUTEX_FENCED = 1 };

/* ---------------------------------------------------------------------------
 * Locks held by this thread (for shmds_region_close).
 * ------------------------------------------------------------------------ */

#define HELD_MAX 32
/* initial-exec: a plain %fs-relative access instead of a __tls_get_addr call
 * on every lock; the library is linked at start-up, not dlopen'ed late. */
#define HELD_TLS __thread __attribute__((tls_model("initial-exec")))
static HELD_TLS const shmds_mutex *held[HELD_MAX];
static HELD_TLS unsigned held_n;
static HELD_TLS unsigned held_untracked; /* held beyond HELD_MAX */

static void held_add(const shmds_mutex *m)
{
    if (held_n < HELD_MAX)
        held[held_n++] = m;
    else
        held_untracked++;
}

/* Where `m` is in the list (the newest first: locks are mostly released
 * in reverse order), or HELD_MAX when it is not listed. */
static unsigned held_find(const shmds_mutex *m)
{
    for (unsigned i = held_n; i-- > 0;)
        if (held[i] == m)
            return i;
    return HELD_MAX;
}

/* Drop entry `i` of held_find(); HELD_MAX: one of the untracked locks. */
static void held_drop(unsigned i)
{
    if (i < HELD_MAX)
        held[i] = held[--held_n];
    else if (held_untracked > 0)
        held_untracked--;
}

bool shmds__locks_held_in(const void *base, size_t len)
{
    const unsigned char *b = base;
    if (held_untracked > 0)
        return true; /* cannot tell: refuse rather than unmap a held lock */
    for (unsigned i = 0; i < held_n; i++) {
        const unsigned char *p = (const unsigned char *)held[i];
        if (p >= b && p < b + len)
            return true;
    }
    return false;
}

/* ---------------------------------------------------------------------------
 * Mutexes
 * ------------------------------------------------------------------------ */

SHMDS_API int shmds_mutex_init(shmds_mutex *m)
{
    pthread_mutexattr_t a;
    int rc = pthread_mutexattr_init(&a);
    if (rc != 0)
        return -rc;
    if ((rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED)) == 0 &&
        (rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST)) == 0 &&
        (rc = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK)) == 0) {
        memset(m, 0, sizeof *m);
        rc = pthread_mutex_init(&m->mtx, &a);
    }
    pthread_mutexattr_destroy(&a);
    return -rc;
}

SHMDS_API int shmds_mutex_destroy(shmds_mutex *m)
{
    return -pthread_mutex_destroy(&m->mtx);
}

/* getpid() is a system call in glibc (no cache since 2.25), and costs more
 * than the rest of an uncontended lock: cache it per process. The child of
 * a fork starts with the parent's value, so a fork handler drops it. */
static uint32_t my_pid;
static pthread_once_t pid_once = PTHREAD_ONCE_INIT;

static void pid_forget(void)
{
    __atomic_store_n(&my_pid, 0, __ATOMIC_RELAXED);
}

static void pid_init(void)
{
    pthread_atfork(NULL, NULL, pid_forget);
}

uint32_t shmds__self_pid(void)
{
    uint32_t pid = __atomic_load_n(&my_pid, __ATOMIC_RELAXED);
    if (shmds__unlikely(pid == 0)) {
        pthread_once(&pid_once, pid_init);
        pid = (uint32_t)getpid();
        __atomic_store_n(&my_pid, pid, __ATOMIC_RELAXED);
    }
    return pid;
}

/* Inlined into the lock's fast path (one frame from the caller to
 * pthread). */
#define INLINE static inline __attribute__((always_inline))

INLINE void mark_taken(shmds_mutex *m)
{
    __atomic_store_n(&m->owner_pid, shmds__self_pid(), __ATOMIC_RELAXED);
    /* When a lock was taken is for diagnostics ("held for 3.2 s"): the
     * coarse clock is enough. */
    __atomic_store_n(&m->taken_ns, shmds__coarse_now_ns(), __ATOMIC_RELAXED);
    held_add(m);
}

INLINE void mark_released(shmds_mutex *m, unsigned held_at)
{
    held_drop(held_at);
    __atomic_store_n(&m->owner_pid, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&m->taken_ns, 0, __ATOMIC_RELAXED);
}

/* ---------------------------------------------------------------------------
 * The words glibc trusts
 *
 * glibc keeps its own state inside a pthread mutex and a sem_t and trusts
 * it: a garbage mutex kind can steer pthread to a priority-protocol path
 * that asserts and aborts the process; a garbage semaphore `private` word
 * turns sem_post's FUTEX_WAKE into another futex operation (a wait without
 * bound, or an error glibc answers with abort). A region's bytes are
 * untrusted, so every lock, unlock, post and wait first compares these
 * words with what shmds_mutex_init / shmds_sem_init write, and answers
 * SHMDS_ECORRUPT on a mismatch. The reference values come from a throwaway
 * object initialised the same way, once per process (a race computes them
 * twice, to the same value). A co-tenant with write access can still change
 * a word between the check and glibc's read: see "Threat model" in lock.h.
 * ------------------------------------------------------------------------ */

#ifdef __GLIBC__
static int mutex_kind(void)
{
    static int kind = -1;
    int k = __atomic_load_n(&kind, __ATOMIC_RELAXED);
    if (k == -1) {
        pthread_mutexattr_t a;
        pthread_mutex_t t;
        pthread_mutexattr_init(&a);
        pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
        pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
        pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
        memset(&t, 0, sizeof t);
        pthread_mutex_init(&t, &a);
        pthread_mutexattr_destroy(&a);
        k = t.__data.__kind;
        pthread_mutex_destroy(&t);
        __atomic_store_n(&kind, k, __ATOMIC_RELAXED);
    }
    return k;
}

INLINE bool mutex_words_ok(const shmds_mutex *m)
{
    return __atomic_load_n(&m->mtx.__data.__kind, __ATOMIC_RELAXED) == mutex_kind();
}
#else
INLINE bool mutex_words_ok(const shmds_mutex *m)
{
    (void)m;
    return true;
}
#endif

/* ---------------------------------------------------------------------------
 * The robust-list words of a held mutex
 *
 * glibc chains the robust mutexes a thread holds through two pointers in
 * each mutex (__list.__prev, __list.__next) and follows both when one is
 * unlocked, writing through them. Those words sit in the region: an
 * operation whose hostile offsets make it write over a lock it holds (a
 * map entry laid over its own stripe, say) leaves pointers there that make
 * pthread_mutex_unlock write anywhere. So before unlocking, each of the two
 * words must name something this thread's list can hold: its list head (in
 * the thread's own descriptor), a shmds mutex this thread holds, or another
 * robust mutex this thread owns (a caller's own pthread mutex, checked on
 * its mapped bytes: robust kind, our thread id as owner). Anything else is
 * damage: the unlock answers SHMDS_ECORRUPT and leaves the lock as it is.
 * ------------------------------------------------------------------------ */

#if defined(__GLIBC__) && defined(__PTHREAD_MUTEX_HAVE_PREV) && __PTHREAD_MUTEX_HAVE_PREV == 1 && \
    defined(SYS_get_robust_list)
/* This thread's robust-list head as the kernel has it registered: 0 until
 * asked, HEAD_UNKNOWN when it cannot be learnt (an address is never odd). */
#define HEAD_UNKNOWN ((uintptr_t)1)
static HELD_TLS uintptr_t robust_head;

/* The head, or 0 when it cannot be learnt (the words are then not checked). */
static uintptr_t list_head(void)
{
    uintptr_t h = robust_head;
    if (shmds__unlikely(h == 0)) {
        void *head = NULL;
        size_t len = 0;
        if (syscall(SYS_get_robust_list, 0, &head, &len) != 0 || head == NULL)
            head = (void *)HEAD_UNKNOWN;
        robust_head = h = (uintptr_t)head;
    }
    return h == HEAD_UNKNOWN ? 0 : h;
}

/* A list word (low bit masked) names `&x->__data.__list.__next` of a robust
 * mutex x this thread owns that is not in its held list (a caller's own,
 * or a shmds mutex taken past HELD_MAX). Only reached
 * when the word names nothing this thread is known to hold: mincore() tells
 * whether the page is mapped before a byte of it is read. */
#define GLIBC_KIND_ROBUST 16 /* glibc's PTHREAD_MUTEX_ROBUST_NORMAL_NP (internal) */
#ifndef FUTEX_TID_MASK
#define FUTEX_TID_MASK 0x3fffffffu /* <linux/futex.h> */
#endif
static bool foreign_owned(uintptr_t w)
{
    size_t at = offsetof(pthread_mutex_t, __data.__list.__next);
    long pg = sysconf(_SC_PAGESIZE);
    if (w < at || (w & 7u) != 0 || pg <= 0)
        return false;
    uintptr_t x = w - at, first = x & ~((uintptr_t)pg - 1);
    uintptr_t last = (x + sizeof(pthread_mutex_t) - 1) & ~((uintptr_t)pg - 1);
    unsigned char vec[2];
    if (mincore((void *)first, last - first + (size_t)pg, vec) != 0)
        return false;
    const pthread_mutex_t *pm = (const pthread_mutex_t *)x;
    /* The owner is the futex word's thread id: `__owner` says
     * "inconsistent" instead while a lock taken from a dead owner is under
     * repair, and the repair's own locks are chained to it. */
    unsigned lk = (unsigned)__atomic_load_n(&pm->__data.__lock, __ATOMIC_RELAXED);
    int kind = __atomic_load_n(&pm->__data.__kind, __ATOMIC_RELAXED);
    return (kind & GLIBC_KIND_ROBUST) != 0 && (lk & FUTEX_TID_MASK) == (unsigned)gettid();
}

static bool list_word_ok(const shmds_mutex *self, uintptr_t w, uintptr_t head)
{
    w &= ~(uintptr_t)1;
    if (w == head)
        return true;
    for (unsigned i = 0; i < held_n; i++)
        if (held[i] != self && w == (uintptr_t)&held[i]->mtx.__data.__list.__next)
            return true;
    return foreign_owned(w);
}

/* The two words of a mutex this thread holds, before glibc follows them. */
INLINE bool list_words_ok(const shmds_mutex *m)
{
    uintptr_t head = list_head();
    if (head == 0)
        return true;
    uintptr_t p = (uintptr_t)__atomic_load_n(&m->mtx.__data.__list.__prev, __ATOMIC_RELAXED);
    uintptr_t n = (uintptr_t)__atomic_load_n(&m->mtx.__data.__list.__next, __ATOMIC_RELAXED);
    if (shmds__likely(p == head && n == head))
        return true; /* the only robust mutex this thread holds */
    return list_word_ok(m, p, head) && list_word_ok(m, n, head);
}

/* Make this thread's robust list what glibc would have built from exactly
 * the tracked held locks (its order is free: glibc unlinks through each
 * mutex's own two words, the kernel only walks the chain). Only for a thread
 * whose robust mutexes are all tracked shmds mutexes: false when it cannot
 * be done. */
static bool relink_held(void)
{
    uintptr_t head = list_head();
    if (head == 0 || held_untracked != 0)
        return false;
    /* The head is the `__next` word of a node whose `__prev` word glibc
     * keeps just before it (struct pthread's robust_prev). */
    uintptr_t older = head;
    for (unsigned i = 0; i < held_n; i++) {
        pthread_mutex_t *pm = (pthread_mutex_t *)(uintptr_t)&held[i]->mtx;
        uintptr_t self = (uintptr_t)&pm->__data.__list.__next;
        uintptr_t newer = i + 1 < held_n ? (uintptr_t)&held[i + 1]->mtx.__data.__list.__next : head;
        pm->__data.__list.__next = (__pthread_list_t *)older;
        pm->__data.__list.__prev = (__pthread_list_t *)newer;
        older = self;
    }
    *(void **)head = (void *)older;
    *(void **)(head - sizeof(void *)) =
        (void *)(held_n > 0 ? (uintptr_t)&held[0]->mtx.__data.__list.__next : head);
    return true;
}
#else
INLINE bool list_words_ok(const shmds_mutex *m)
{
    (void)m;
    return true;
}

static bool relink_held(void)
{
    return true; /* the words are not checked, so never found damaged */
}
#endif

/* A mutex this thread holds, safe to hand to pthread_mutex_unlock. */
INLINE bool held_words_ok(const shmds_mutex *m)
{
    return mutex_words_ok(m) && list_words_ok(m);
}

/* For the image harnesses (tests/image.c, the fuzzer): forget the listed
 * locks inside [base, base+len) that a hostile image damaged while this
 * thread held them (shmds_mutex_unlock leaves such a lock listed, so
 * region_close refuses), and take them out of the thread's robust list too:
 * glibc writes into the newest entry on every lock, and into neighbours on
 * every unlock, so an entry in memory the harness then frees or unmaps is a
 * crash later (the fuzzer's SEGV in pthread_mutex_trylock, CI of stop 23).
 * The thread must hold no robust mutex but tracked shmds ones. Returns how
 * many listed locks there are intact (those are an operation that returned
 * with its lock held, a bug), or 1 when the list could not be rebuilt. */
unsigned shmds__held_forget_damaged_in(const void *base, size_t len)
{
    const unsigned char *b = base;
    unsigned intact = held_untracked, dropped = 0;
    for (unsigned i = held_n; i-- > 0;) {
        const unsigned char *p = (const unsigned char *)held[i];
        if (p < b || p >= b + len)
            continue;
        if (held_words_ok(held[i])) {
            intact++;
        } else {
            held_drop(i);
            dropped++;
        }
    }
    if (dropped > 0 && !relink_held())
        intact++;
    return intact;
}

#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
/* glibc's sem_t on 64-bit targets: one 64-bit word, the count in its low
 * half and the number of sleepers in its high half, then the futex flag
 * word (`private`), 0 for a process-shared semaphore. */
struct glibc_sem {
    uint64_t data;
    int32_t private_;
};
SHMDS__STATIC_ASSERT(sizeof(struct glibc_sem) <= sizeof(sem_t), "glibc sem_t layout");
/* Sleepers are threads, so never more than the kernel's thread-id limit. */
#define SEM_SLEEPERS_MAX (UINT32_C(1) << 22)

static int32_t sem_private(void)
{
    static int32_t priv = -1;
    int32_t p = __atomic_load_n(&priv, __ATOMIC_RELAXED);
    if (p == -1) {
        union {
            sem_t s;
            struct glibc_sem g;
        } t;
        memset(&t, 0, sizeof t);
        sem_init(&t.s, 1, 0);
        p = t.g.private_;
        sem_destroy(&t.s);
        __atomic_store_n(&priv, p, __ATOMIC_RELAXED);
    }
    return p;
}

bool shmds__sem_ok(const shmds_sem *s)
{
    const struct glibc_sem *g = (const struct glibc_sem *)(const void *)&s->sem;
    uint64_t d = __atomic_load_n(&g->data, __ATOMIC_RELAXED);
    return __atomic_load_n(&g->private_, __ATOMIC_RELAXED) == sem_private() &&
           (d & 0xffffffffu) <= (uint64_t)SEM_VALUE_MAX && (d >> 32) <= SEM_SLEEPERS_MAX;
}

int shmds__sem_value(const shmds_sem *s)
{
    const struct glibc_sem *g = (const struct glibc_sem *)(const void *)&s->sem;
    uint64_t v = __atomic_load_n(&g->data, __ATOMIC_RELAXED) & 0xffffffffu;
    return v > (uint64_t)SEM_VALUE_MAX ? SEM_VALUE_MAX : (int)v;
}
#else
bool shmds__sem_ok(const shmds_sem *s)
{
    (void)s;
    return true;
}

int shmds__sem_value(const shmds_sem *s)
{
    int v = 0;
    sem_getvalue((sem_t *)&s->sem, &v);
    return v;
}
#endif

bool shmds__mutex_ok(const shmds_mutex *m)
{
    return mutex_words_ok(m) && __atomic_load_n(&m->state, __ATOMIC_RELAXED) <= MUTEX_FENCED;
}

/* Wait up to timeout_ms (> 0) for a mutex that trylock found busy. */
static int timed_lock(shmds_mutex *m, int timeout_ms)
{
    struct timespec ts = shmds__deadline(timeout_ms);
#ifdef HAVE_PTHREAD_MUTEX_CLOCKLOCK
    return pthread_mutex_clocklock(&m->mtx, CLOCK_MONOTONIC, &ts);
#else
    struct timespec now_m, now_r;
    clock_gettime(CLOCK_MONOTONIC, &now_m);
    clock_gettime(CLOCK_REALTIME, &now_r);
    ts.tv_sec += now_r.tv_sec - now_m.tv_sec;
    ts.tv_nsec += now_r.tv_nsec - now_m.tv_nsec;
    if (ts.tv_nsec < 0) {
        ts.tv_nsec += 1000000000L;
        ts.tv_sec--;
    } else if (ts.tv_nsec >= 1000000000L) {
        ts.tv_nsec -= 1000000000L;
        ts.tv_sec++;
    }
    return pthread_mutex_timedlock(&m->mtx, &ts);
#endif
}

/* Called with the lock held after its owner died: repair, then either mark
 * the mutex consistent or fence it off for good. */
static int recover(shmds_mutex *m, shmds_repair_fn *repair, void *arg)
{
    mark_taken(m);
    SHMDS_FAULT("lock.recover.before_repair");
    int bad = __atomic_load_n(&m->state, __ATOMIC_ACQUIRE) == MUTEX_FENCED;
    if (!bad && repair != NULL)
        bad = repair(arg) != 0;
    if (bad) {
        __atomic_store_n(&m->state, MUTEX_FENCED, __ATOMIC_RELEASE);
        mark_released(m, held_find(m));
        /* Unlocking without pthread_mutex_consistent makes the mutex
         * permanently unusable: later lockers get ENOTRECOVERABLE. */
        pthread_mutex_unlock(&m->mtx);
        return SHMDS_ENOTRECOVERABLE;
    }
    SHMDS_FAULT("lock.recover.before_consistent");
    int rc = pthread_mutex_consistent(&m->mtx);
    if (rc != 0) {
        mark_released(m, held_find(m));
        pthread_mutex_unlock(&m->mtx);
        return -rc;
    }
    __atomic_add_fetch(&m->recoveries, 1, __ATOMIC_RELAXED);
    return SHMDS_RECOVERED;
}

/* A wait "without bound" is a chain of waits this long, each preceded by
 * a look at the mutex's words: damage done while a process sleeps ends its
 * wait with SHMDS_ECORRUPT instead of leaving it in an untimed futex wait. */
#define UNBOUNDED_SLICE_MS 1000

/* Everything but an uncontended success: `rc` is what the first attempt
 * returned; wait when it was busy and the caller gave time. */
static int lock_slow(shmds_mutex *m, int timeout_ms, int rc, shmds_repair_fn *repair, void *arg)
{
    if (rc == EBUSY && timeout_ms > 0)
        rc = timed_lock(m, timeout_ms);
    while (rc == EBUSY || (rc == ETIMEDOUT && timeout_ms == -1)) {
        if (timeout_ms == 0)
            break;
        if (!mutex_words_ok(m))
            return SHMDS_ECORRUPT;
        rc = timed_lock(m, UNBOUNDED_SLICE_MS);
    }
    switch (rc) {
    case 0:
        mark_taken(m);
        return 0;
    case EOWNERDEAD:
        return recover(m, repair, arg);
    case ENOTRECOVERABLE:
        __atomic_store_n(&m->state, MUTEX_FENCED, __ATOMIC_RELEASE);
        return SHMDS_ENOTRECOVERABLE;
    default:
        return -rc; /* EBUSY, ETIMEDOUT, EDEADLK, EINVAL */
    }
}

INLINE int mutex_lock(shmds_mutex *m, int timeout_ms, shmds_repair_fn *repair, void *arg)
{
    if (timeout_ms < -1)
        return -EINVAL;
    if (!mutex_words_ok(m))
        return SHMDS_ECORRUPT;
    if (__atomic_load_n(&m->state, __ATOMIC_ACQUIRE) == MUTEX_FENCED)
        return SHMDS_ENOTRECOVERABLE;
    /* Uncontended, the common case: no clock reading for a deadline. */
    int rc = pthread_mutex_trylock(&m->mtx);
    if (shmds__likely(rc == 0)) {
        mark_taken(m);
        return 0;
    }
    return lock_slow(m, timeout_ms, rc, repair, arg);
}

SHMDS_API int shmds_mutex_lock(shmds_mutex *m, int timeout_ms, shmds_repair_fn *repair, void *arg)
{
    int rc = mutex_lock(m, timeout_ms, repair, arg);
    /* The timeout was checked, so pthread's EINVAL can only mean the
     * mutex's own bytes are damaged. */
    return rc == -EINVAL && timeout_ms >= -1 ? SHMDS_ECORRUPT : rc;
}

SHMDS_API int shmds_mutex_unlock(shmds_mutex *m)
{
    /* Refuse a non-owner before touching the diagnostics: this thread's held
     * list knows every shmds mutex it took (pthread's error-checking type is
     * the fallback past HELD_MAX). */
    unsigned at = held_find(m);
    if (at == HELD_MAX && held_untracked == 0)
        return -EPERM;
    /* Damaged while held: leave it locked and listed (the kernel's robust
     * list still names it, so region_close keeps refusing to unmap it);
     * the other processes' bounded waits end and they see the damage too. */
    if (!held_words_ok(m))
        return SHMDS_ECORRUPT;
    mark_released(m, at);
    int rc = pthread_mutex_unlock(&m->mtx);
    return rc == EINVAL ? SHMDS_ECORRUPT : -rc;
}

SHMDS_API int shmds_mutex_info_get(const shmds_mutex *m, shmds_mutex_info *out)
{
    uint64_t taken = __atomic_load_n(&m->taken_ns, __ATOMIC_RELAXED);
    uint64_t now = shmds__coarse_now_ns();
    out->owner_pid = (pid_t)__atomic_load_n(&m->owner_pid, __ATOMIC_RELAXED);
    out->held_ns = (taken != 0 && now > taken) ? now - taken : 0;
    out->recoveries = __atomic_load_n(&m->recoveries, __ATOMIC_RELAXED);
    out->fenced = __atomic_load_n(&m->state, __ATOMIC_RELAXED) == MUTEX_FENCED;
    return 0;
}

/* Tries before a contended shmds__lock sleeps in the kernel. A robust
 * pthread mutex does not spin: a locker that finds it held goes straight
 * to FUTEX_WAIT, and the holder's unlock must FUTEX_WAKE it, two system
 * calls and a cross-CPU wake-up for a critical section of a few hundred
 * nanoseconds. */
#define LOCK_SPINS 100

int shmds__mutex_lock_bounded(shmds_mutex *m, uint32_t bound_ms, shmds_repair_fn *repair,
                              void *arg)
{
    int rc = mutex_lock(m, 0, repair, arg);
    for (int i = 0; rc == -EBUSY && i < LOCK_SPINS; i++) {
        shmds__cpu_relax();
        rc = mutex_lock(m, 0, repair, arg);
    }
    if (rc == -EBUSY && bound_ms != 0)
        rc = mutex_lock(m, (int)bound_ms, repair, arg);
    /* The timeout is ours and valid, so pthread's EINVAL can only mean the
     * mutex's own bytes in the region are damaged. */
    if (rc == -EINVAL)
        rc = SHMDS_ECORRUPT;
    return rc;
}

int shmds__mutex_trylock(shmds_mutex *m, shmds_repair_fn *repair, void *arg)
{
    int rc = mutex_lock(m, 0, repair, arg);
    return rc == -EINVAL ? SHMDS_ECORRUPT : rc;
}

/* ---------------------------------------------------------------------------
 * Semaphores (doorbells)
 * ------------------------------------------------------------------------ */

SHMDS_API int shmds_sem_init(shmds_sem *s, unsigned value)
{
    if (value > (unsigned)SEM_VALUE_MAX)
        return -EINVAL;
    return sem_init(&s->sem, 1, value) == 0 ? 0 : -errno;
}

SHMDS_API int shmds_sem_destroy(shmds_sem *s)
{
    return sem_destroy(&s->sem) == 0 ? 0 : -errno;
}

SHMDS_API int shmds_sem_wait(shmds_sem *s, int timeout_ms)
{
    if (timeout_ms < -1)
        return -EINVAL;
    if (!shmds__sem_ok(s))
        return SHMDS_ECORRUPT;
    if (timeout_ms == 0) {
        while (sem_trywait(&s->sem) != 0) {
            if (errno != EINTR)
                return -errno;
        }
        return 0;
    }
    /* Without bound: slices, each after a look at the words (see
     * UNBOUNDED_SLICE_MS). */
    uint64_t deadline = timeout_ms > 0 ? shmds__now_ns() + (uint64_t)timeout_ms * 1000000u : 0;
    for (;;) {
        int ms = UNBOUNDED_SLICE_MS;
        if (timeout_ms > 0) {
            ms = shmds__ms_left(deadline);
            if (ms == 0)
                return -ETIMEDOUT;
        }
        if (!shmds__sem_ok(s))
            return SHMDS_ECORRUPT;
        struct timespec ts = shmds__deadline(ms);
#ifdef HAVE_SEM_CLOCKWAIT
        if (sem_clockwait(&s->sem, CLOCK_MONOTONIC, &ts) == 0)
            return 0;
#else
        struct timespec rt;
        clock_gettime(CLOCK_REALTIME, &rt);
        rt.tv_sec += ms / 1000;
        rt.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (rt.tv_nsec >= 1000000000L) {
            rt.tv_sec++;
            rt.tv_nsec -= 1000000000L;
        }
        (void)ts;
        if (sem_timedwait(&s->sem, &rt) == 0)
            return 0;
#endif
        if (errno != EINTR && errno != ETIMEDOUT)
            return errno == EINVAL ? SHMDS_ECORRUPT : -errno;
    }
}

SHMDS_API int shmds_sem_post(shmds_sem *s)
{
    if (!shmds__sem_ok(s))
        return SHMDS_ECORRUPT;
    return sem_post(&s->sem) == 0 ? 0 : -errno;
}

/* ---------------------------------------------------------------------------
 * Doorbells (semaphores that wake sleepers who then re-check the truth)
 * ------------------------------------------------------------------------ */

void shmds__bell_ring(shmds_sem *bell, const uint32_t *sleepers, bool all)
{
    uint32_t n = __atomic_load_n(sleepers, __ATOMIC_SEQ_CST);
    if (n == 0)
        return;
    /* A damaged semaphore is not posted (shmds_sem_post refuses it): the
     * sleepers' bounded slices still wake them, and the check reports it. */
    int cap = (int)(n < 64 ? n : 64);
    while (shmds__sem_value(bell) < cap && shmds_sem_post(bell) == 0 && all)
        ;
}

int shmds__bell_wait(shmds_sem *bell, uint64_t deadline_ns, int slice_ms)
{
    int ms = slice_ms;
    if (deadline_ns != 0) {
        int left = shmds__ms_left(deadline_ns);
        if (left < ms)
            ms = left > 0 ? left : 1;
    }
    return shmds_sem_wait(bell, ms) == SHMDS_ECORRUPT ? SHMDS_ECORRUPT : 0;
}
