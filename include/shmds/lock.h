/**
 * @file shmds/lock.h
 * @brief Robust process-shared mutexes with repair, and semaphore doorbells.
 *
 * These are the locks the library's own structures use, exposed so that
 * users can guard their own structs inside a region the same way.
 *
 * A shmds_mutex is a pthread mutex made process-shared and robust: if the
 * process holding it dies (SIGKILL, OOM killer, a crash in user code), the
 * next process that locks it is told so, and shmds runs the caller's repair
 * function before handing over the lock. The repair must be idempotent and
 * must tolerate being killed itself: if the repairer dies, the next locker is
 * told the owner died and runs the repair again. If the repair reports
 * failure, the mutex is fenced off for good and every later lock, in every
 * process, returns SHMDS_ENOTRECOVERABLE at once instead of hanging.
 *
 * A shmds_sem is a process-shared unnamed POSIX semaphore with a timed wait.
 * Semaphores have no owner and are not robust, so use them as doorbells
 * only: keep the truth (counts, indices) under a shmds_mutex, let the
 * semaphore wake a sleeper, and re-check the truth after every wake-up.
 *
 * Limits that come from the kernel's robust futexes:
 *  - every process that uses a region's locks must live in the same PID
 *    namespace (the futex word stores a thread id);
 *  - never unmap a region while holding one of its locks: the kernel marks a
 *    dead owner's locks by walking memory that must still be mapped
 *    (shmds_region_close refuses with -EBUSY while the calling thread holds
 *    a lock inside the region).
 *
 * Damaged words. glibc trusts the state it keeps inside a pthread mutex and
 * a sem_t (a garbage mutex kind reaches an assertion that aborts the
 * process; a garbage semaphore flags word turns sem_post's wake into a
 * wait without bound). Every lock, try-lock, unlock, post and wait first
 * checks those words against what shmds_mutex_init / shmds_sem_init wrote
 * and returns SHMDS_ECORRUPT on a mismatch; the structure checks
 * (shmds_region_check) look at them too. A wait "without bound" (-1) is a
 * chain of one-second waits, each after that check, never one untimed
 * futex wait on shared memory.
 *
 * A locked mutex also holds two links of its owner's robust list, and
 * glibc's unlock writes through both. An operation led by damaged offsets
 * to write over a lock it holds leaves garbage there, so an unlock first
 * checks that each link names what the thread's list can hold: the
 * thread's list head, a shmds mutex the thread holds, or a robust mutex
 * the thread owns (the application's own pthread mutexes included, known
 * by their mapped bytes). Anything else: SHMDS_ECORRUPT, and the mutex
 * stays held (shmds_region_close then refuses, as for any held lock).
 *
 * Threat model. The checks above defend against damage: stray writes, a
 * crash mid-write, garbage. They cannot defend against a process that has
 * write access to the region and acts against the others at the moment
 * they lock: a robust mutex holds, while locked, the links of its owner's
 * robust list (raw pointers into the owner's private memory, the thread's
 * TLS among them, so they also reveal where it is), and glibc's unlock
 * writes through them. A co-tenant that rewrites them between a lock and
 * its unlock turns that unlock into a write of its choosing into the
 * unlocking process. The check of the links above does not stop it: a
 * co-tenant can point them at another lock the thread holds, or rewrite
 * them between the check and glibc's read.
 * So: give write access to a region only to processes you trust with your
 * memory (regions are 0600 by default); a read-only attach takes no lock
 * and is not exposed to this.
 *
 * Both types are complete so that they can be embedded in shared structs;
 * treat their fields as private.
 */
#ifndef SHMDS_LOCK_H
#define SHMDS_LOCK_H

#include <pthread.h>
#include <semaphore.h>
#include <sys/types.h>

#include <shmds/common.h>

SHMDS_BEGIN_DECLS

/**
 * A robust, process-shared mutex, padded to a 64-byte cache line so that two
 * mutexes laid side by side never share one. Its alignment is the natural
 * one of pthread_mutex_t (8 bytes), so it may sit in any block from
 * shmds_alloc(); put it at a 64-byte boundary of your struct when false
 * sharing with neighbouring fields matters.
 */
typedef struct shmds_mutex {
    union {
        struct {
            pthread_mutex_t mtx;
            uint32_t owner_pid;  /* pid of the holder, 0 when free (diagnostics) */
            uint32_t state;      /* 0 usable, 1 fenced off after a failed repair */
            uint64_t taken_ns;   /* CLOCK_MONOTONIC when the holder took it */
            uint64_t recoveries; /* dead owners whose change was repaired */
        };
        unsigned char cache_line_pad_[64];
    };
} shmds_mutex;

/**
 * Repair callback: called with the mutex held after its previous owner died
 * holding it. Must bring the guarded data back to a consistent state, be
 * idempotent, and be safe to interrupt (the repairer may die too).
 * @return 0 when repaired; anything else means the data cannot be repaired.
 */
typedef int shmds_repair_fn(void *arg);

/**
 * Initialise a mutex in shared memory (process-shared, robust, error-checking).
 * Call once, before any process uses it; never on a mutex in use.
 * @return 0, or a negative errno from pthread (-ENOMEM, -EAGAIN).
 */
SHMDS_API int shmds_mutex_init(shmds_mutex *m);

/**
 * Destroy a mutex no process holds or will use again.
 * @return 0, or -EBUSY while it is locked.
 */
SHMDS_API int shmds_mutex_destroy(shmds_mutex *m);

/**
 * Lock, repairing after a dead owner.
 *
 * @param m          the mutex.
 * @param timeout_ms -1 waits without bound (owner death still ends the wait),
 *                   0 never waits, >0 waits at most that many milliseconds.
 * @param repair     called, with the lock held, when the previous owner died
 *                   holding it; NULL when there is nothing to repair.
 * @param arg        passed to @p repair.
 * @return 0 locked;
 *         SHMDS_RECOVERED (positive) locked, the owner had died and @p repair
 *         succeeded;
 *         -EBUSY @p timeout_ms was 0 and the mutex is held;
 *         -ETIMEDOUT the wait passed @p timeout_ms (shmds_mutex_info_get()
 *         names the holder);
 *         -EDEADLK the calling thread already holds it;
 *         SHMDS_ENOTRECOVERABLE a repair failed, now or earlier: the mutex
 *         and the data it guards are fenced off for good;
 *         SHMDS_ECORRUPT the mutex's own words are damaged (checked before
 *         the lock and during a wait without bound);
 *         -EINVAL @p timeout_ms below -1.
 */
SHMDS_API int shmds_mutex_lock(shmds_mutex *m, int timeout_ms, shmds_repair_fn *repair,
                               void *arg);

/**
 * Unlock a mutex the calling thread holds.
 * @return 0; -EPERM when the calling thread does not hold it;
 *         SHMDS_ECORRUPT its words were damaged while it was held: it is
 *         left locked (other processes' bounded waits end, and the kernel
 *         hands it on when this thread exits).
 */
SHMDS_API int shmds_mutex_unlock(shmds_mutex *m);

/** What shmds_mutex_info_get() reports. */
typedef struct shmds_mutex_info {
    pid_t owner_pid;     /**< pid of the holder, 0 when free */
    uint64_t held_ns;    /**< how long the holder has held it, 0 when free */
    uint64_t recoveries; /**< dead owners whose change was repaired */
    int fenced;          /**< 1 after a failed repair: the mutex is unusable */
} shmds_mutex_info;

/**
 * A snapshot of a mutex's owner and history, for diagnostics (the values may
 * change as soon as they are read). Takes no lock.
 * @return 0.
 */
SHMDS_API int shmds_mutex_info_get(const shmds_mutex *m, shmds_mutex_info *out);

/** A process-shared counting semaphore (a doorbell). */
typedef struct shmds_sem {
    sem_t sem; /**< a process-shared POSIX semaphore */
} shmds_sem;

/**
 * Initialise a semaphore in shared memory with the given count.
 * @return 0, or -EINVAL when @p value exceeds SEM_VALUE_MAX.
 */
SHMDS_API int shmds_sem_init(shmds_sem *s, unsigned value);

/** Destroy a semaphore nobody waits on. @return 0. */
SHMDS_API int shmds_sem_destroy(shmds_sem *s);

/**
 * Take one count, waiting for it.
 * @param[in] s the semaphore.
 * @param timeout_ms -1 without bound, 0 never waits, >0 at most that long.
 * @return 0 taken; -EAGAIN @p timeout_ms was 0 and the count is zero;
 *         -ETIMEDOUT the wait passed @p timeout_ms; -EINVAL bad timeout;
 *         SHMDS_ECORRUPT the semaphore's words are damaged.
 *         Signals do not end the wait early.
 */
SHMDS_API int shmds_sem_wait(shmds_sem *s, int timeout_ms);

/**
 * Add one count, waking one waiter.
 * @return 0, or -EOVERFLOW when the count is at SEM_VALUE_MAX (harmless for
 *         a doorbell: a sleeper is already due to wake); SHMDS_ECORRUPT
 *         the semaphore's words are damaged (nothing posted).
 */
SHMDS_API int shmds_sem_post(shmds_sem *s);

SHMDS_END_DECLS

#endif
