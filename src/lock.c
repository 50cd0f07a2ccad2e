/*
 * Robust process-shared mutexes with a repair protocol, and semaphores used
 * as doorbells.
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

/* When a lock was taken is for diagnostics ("held for 3.2 s"): the coarse
 * clock (a few ms of resolution) costs a fraction of the precise one. */
static uint64_t coarse_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Inlined into the lock's fast path (one frame from the caller to
 * pthread). */
#define INLINE static inline __attribute__((always_inline))

INLINE void mark_taken(shmds_mutex *m)
{
    __atomic_store_n(&m->owner_pid, shmds__self_pid(), __ATOMIC_RELAXED);
    __atomic_store_n(&m->taken_ns, coarse_now_ns(), __ATOMIC_RELAXED);
    held_add(m);
}

INLINE void mark_released(shmds_mutex *m, unsigned held_at)
{
    held_drop(held_at);
    __atomic_store_n(&m->owner_pid, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&m->taken_ns, 0, __ATOMIC_RELAXED);
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

/* Everything but an uncontended success: `rc` is what the first attempt
 * returned; wait when it was busy and the caller gave time. */
static int lock_slow(shmds_mutex *m, int timeout_ms, int rc, shmds_repair_fn *repair, void *arg)
{
    if (rc == EBUSY && timeout_ms > 0)
        rc = timed_lock(m, timeout_ms);
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
    if (__atomic_load_n(&m->state, __ATOMIC_ACQUIRE) == MUTEX_FENCED)
        return SHMDS_ENOTRECOVERABLE;
    /* Uncontended, the common case: no clock reading for a deadline. */
    int rc = timeout_ms == -1 ? pthread_mutex_lock(&m->mtx) : pthread_mutex_trylock(&m->mtx);
    if (shmds__likely(rc == 0)) {
        mark_taken(m);
        return 0;
    }
    return lock_slow(m, timeout_ms, rc, repair, arg);
}

SHMDS_API int shmds_mutex_lock(shmds_mutex *m, int timeout_ms, shmds_repair_fn *repair, void *arg)
{
    return mutex_lock(m, timeout_ms, repair, arg);
}

SHMDS_API int shmds_mutex_unlock(shmds_mutex *m)
{
    /* Refuse a non-owner before touching the diagnostics: this thread's held
     * list knows every shmds mutex it took (pthread's error-checking type is
     * the fallback past HELD_MAX). */
    unsigned at = held_find(m);
    if (at == HELD_MAX && held_untracked == 0)
        return -EPERM;
    mark_released(m, at);
    return -pthread_mutex_unlock(&m->mtx);
}

SHMDS_API int shmds_mutex_info_get(const shmds_mutex *m, shmds_mutex_info *out)
{
    uint64_t taken = __atomic_load_n(&m->taken_ns, __ATOMIC_RELAXED);
    uint64_t now = coarse_now_ns();
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

#ifdef __GLIBC__
/* The kind word glibc keeps inside every mutex shmds_mutex_init makes
 * (process-shared, robust, error-checking). glibc trusts that word: garbage
 * there can steer it to a priority-protocol path that asserts and aborts
 * the process. A region's bytes are untrusted, so its locks are checked
 * against this before each lock. Computed once; a race computes it twice. */
static int mutex_kind(void)
{
    static int kind = -1;
    int k = __atomic_load_n(&kind, __ATOMIC_RELAXED);
    if (k == -1) {
        shmds_mutex t;
        if (shmds_mutex_init(&t) != 0)
            return -1;
        k = t.mtx.__data.__kind;
        pthread_mutex_destroy(&t.mtx);
        __atomic_store_n(&kind, k, __ATOMIC_RELAXED);
    }
    return k;
}
#endif

int shmds__lock(shmds_region *r, shmds_mutex *m, shmds_repair_fn *repair, void *arg)
{
#ifdef __GLIBC__
    if (__atomic_load_n(&m->mtx.__data.__kind, __ATOMIC_RELAXED) != mutex_kind())
        return SHMDS_ECORRUPT;
#endif
    int rc = mutex_lock(m, 0, repair, arg);
    for (int i = 0; rc == -EBUSY && i < LOCK_SPINS; i++) {
        shmds__cpu_relax();
        rc = mutex_lock(m, 0, repair, arg);
    }
    if (rc == -EBUSY)
        rc = mutex_lock(m, (int)r->lock_timeout_ms, repair, arg);
    if (rc == SHMDS_RECOVERED)
        __atomic_add_fetch(&r->hdr->epoch, 1, __ATOMIC_RELAXED);
    /* The timeout is ours and valid, so pthread's EINVAL can only mean the
     * mutex's own bytes in the region are damaged. */
    if (rc == -EINVAL)
        rc = SHMDS_ECORRUPT;
    return rc;
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
    if (timeout_ms == 0) {
        while (sem_trywait(&s->sem) != 0) {
            if (errno != EINTR)
                return errno == EAGAIN ? -EAGAIN : -errno;
        }
        return 0;
    }
    if (timeout_ms == -1) {
        while (sem_wait(&s->sem) != 0) {
            if (errno != EINTR)
                return -errno;
        }
        return 0;
    }
    struct timespec ts = shmds__deadline(timeout_ms);
#ifdef HAVE_SEM_CLOCKWAIT
    while (sem_clockwait(&s->sem, CLOCK_MONOTONIC, &ts) != 0) {
#else
    uint64_t deadline = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    for (;;) {
        struct timespec rt = shmds__deadline(0);
        rt.tv_sec = 0; /* realtime deadline recomputed each round */
        clock_gettime(CLOCK_REALTIME, &rt);
        int left = shmds__ms_left(deadline);
        rt.tv_sec += left / 1000;
        rt.tv_nsec += (long)(left % 1000) * 1000000L;
        if (rt.tv_nsec >= 1000000000L) {
            rt.tv_sec++;
            rt.tv_nsec -= 1000000000L;
        }
        if (sem_timedwait(&s->sem, &rt) == 0)
            break;
#endif
        if (errno == EINTR)
            continue;
        return errno == ETIMEDOUT ? -ETIMEDOUT : -errno;
    }
    return 0;
}

SHMDS_API int shmds_sem_post(shmds_sem *s)
{
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
    int cap = (int)(n < 64 ? n : 64);
    for (;;) {
        int v = 0;
        sem_getvalue(&bell->sem, &v);
        if (v >= cap || shmds_sem_post(bell) != 0 || !all)
            return;
    }
}

void shmds__bell_wait(shmds_sem *bell, uint64_t deadline_ns, int slice_ms)
{
    int ms = slice_ms;
    if (deadline_ns != 0) {
        int left = shmds__ms_left(deadline_ns);
        if (left < ms)
            ms = left > 0 ? left : 1;
    }
    shmds_sem_wait(bell, ms);
}
