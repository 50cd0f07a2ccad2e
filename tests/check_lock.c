/* Robust mutexes and semaphores, across real processes and real SIGKILLs. */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sys/mman.h>

#include <shmds.h>

#include "internal.h"
#include "testutil.h"

/* Lives in anonymous shared memory so forked children share it. */
struct shared {
    shmds_mutex m;
    shmds_sem sem;
    int repairs;       /* how many times a repair function started */
    int repairs_done;  /* ... and finished */
};

static struct shared *sh;

static void setup(void)
{
    sh = tu_shared_alloc(sizeof *sh);
    ck_assert_int_eq(shmds_mutex_init(&sh->m), 0);
    ck_assert_int_eq(shmds_sem_init(&sh->sem, 0), 0);
}

static int repair_ok(void *arg)
{
    struct shared *s = arg;
    __atomic_add_fetch(&s->repairs, 1, __ATOMIC_SEQ_CST);
    __atomic_add_fetch(&s->repairs_done, 1, __ATOMIC_SEQ_CST);
    return 0;
}

static int repair_fails(void *arg)
{
    struct shared *s = arg;
    __atomic_add_fetch(&s->repairs, 1, __ATOMIC_SEQ_CST);
    return -1;
}

static int repair_dies(void *arg)
{
    struct shared *s = arg;
    __atomic_add_fetch(&s->repairs, 1, __ATOMIC_SEQ_CST);
    raise(SIGKILL);
    return 0;
}

static tu_chan chan;

/* Child: take the lock, say so, then wait to be killed. */
static int hold_until_killed(void *arg)
{
    (void)arg;
    if (shmds_mutex_lock(&sh->m, -1, NULL, NULL) != 0)
        return 1;
    tu_send_and_stay(&chan, 'L');
}

/* Start a child that holds the lock; return once it does. */
static pid_t start_holder(void)
{
    tu_chan_open(&chan);
    pid_t pid = tu_fork(hold_until_killed, NULL);
    char c;
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    return pid;
}

static void kill_holder(pid_t pid)
{
    int st = tu_kill(pid);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    tu_chan_close(&chan);
}

START_TEST(test_lock_lock_unlock)
{
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, -1, NULL, NULL), 0);
    shmds_mutex_info info;
    shmds_mutex_info_get(&sh->m, &info);
    ck_assert_int_eq(info.owner_pid, getpid());
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 100, NULL, NULL), -EDEADLK);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    shmds_mutex_info_get(&sh->m, &info);
    ck_assert_int_eq(info.owner_pid, 0);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), -EPERM);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, -2, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_lock_held_elsewhere_busy_and_timeout)
{
    pid_t pid = start_holder();
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), -EBUSY);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 50, NULL, NULL), -ETIMEDOUT);
    shmds_mutex_info info;
    shmds_mutex_info_get(&sh->m, &info);
    ck_assert_int_eq(info.owner_pid, pid); /* the diagnostics name the holder */
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), -EPERM);
    kill_holder(pid);
}
END_TEST

START_TEST(test_lock_owner_death_repairs_once)
{
    pid_t pid = start_holder();
    kill_holder(pid);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 5000, repair_ok, sh), SHMDS_RECOVERED);
    ck_assert_int_eq(sh->repairs, 1);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 5000, repair_ok, sh), 0);
    ck_assert_int_eq(sh->repairs, 1);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    shmds_mutex_info info;
    shmds_mutex_info_get(&sh->m, &info);
    ck_assert_uint_eq(info.recoveries, 1);
    ck_assert_int_eq(info.fenced, 0);
}
END_TEST

/* Killed while the parent is (or is about to be) waiting: the wait ends with
 * the repair, whichever of the two happens first. */
static int kill_after_signal(void *arg)
{
    pid_t victim = *(pid_t *)arg;
    kill(victim, SIGKILL);
    return 0;
}

START_TEST(test_lock_waiter_woken_by_owner_death)
{
    pid_t pid = start_holder();
    pid_t killer = tu_fork(kill_after_signal, &pid);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 10000, repair_ok, sh), SHMDS_RECOVERED);
    ck_assert_int_eq(sh->repairs_done, 1);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_ne(tu_wait(killer, 10000), -1);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    tu_chan_close(&chan);
}
END_TEST

static int lock_expect_fenced(void *arg)
{
    (void)arg;
    return shmds_mutex_lock(&sh->m, 1000, repair_ok, sh) == SHMDS_ENOTRECOVERABLE ? 0 : 1;
}

START_TEST(test_lock_failed_repair_fences_everyone)
{
    kill_holder(start_holder());
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 5000, repair_fails, sh), SHMDS_ENOTRECOVERABLE);
    /* Every later lock, here and in another process, fails at once. */
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, -1, repair_ok, sh), SHMDS_ENOTRECOVERABLE);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, repair_ok, sh), SHMDS_ENOTRECOVERABLE);
    int st = tu_wait(tu_fork(lock_expect_fenced, NULL), 10000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_int_eq(sh->repairs, 1);
    ck_assert_int_eq(sh->repairs_done, 0);
    shmds_mutex_info info;
    shmds_mutex_info_get(&sh->m, &info);
    ck_assert_int_eq(info.fenced, 1);
}
END_TEST

static int lock_with_dying_repair(void *arg)
{
    (void)arg;
    shmds_mutex_lock(&sh->m, 5000, repair_dies, sh);
    return 3; /* not reached: the repair kills us */
}

START_TEST(test_lock_repairer_killed_next_locker_repairs)
{
    kill_holder(start_holder());
    int st = tu_wait(tu_fork(lock_with_dying_repair, NULL), 10000);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    ck_assert_int_eq(sh->repairs, 1);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 5000, repair_ok, sh), SHMDS_RECOVERED);
    ck_assert_int_eq(sh->repairs, 2);
    ck_assert_int_eq(sh->repairs_done, 1);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
}
END_TEST

START_TEST(test_lock_death_without_repair_fn)
{
    kill_holder(start_holder());
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 5000, NULL, NULL), SHMDS_RECOVERED);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
}
END_TEST

/* ---- semaphores ---- */

START_TEST(test_lock_sem_counts_and_timeouts)
{
    ck_assert_int_eq(shmds_sem_wait(&sh->sem, 0), -EAGAIN);
    ck_assert_int_eq(shmds_sem_wait(&sh->sem, 20), -ETIMEDOUT);
    ck_assert_int_eq(shmds_sem_post(&sh->sem), 0);
    ck_assert_int_eq(shmds_sem_post(&sh->sem), 0);
    ck_assert_int_eq(shmds_sem_wait(&sh->sem, 0), 0);
    ck_assert_int_eq(shmds_sem_wait(&sh->sem, -1), 0);
    ck_assert_int_eq(shmds_sem_wait(&sh->sem, 0), -EAGAIN);
    ck_assert_int_eq(shmds_sem_wait(&sh->sem, -5), -EINVAL);
    shmds_sem other;
    ck_assert_int_eq(shmds_sem_init(&other, (unsigned)SEM_VALUE_MAX + 1u), -EINVAL);
}
END_TEST

static int sem_waiter(void *arg)
{
    (void)arg;
    return shmds_sem_wait(&sh->sem, 20000) == 0 ? 0 : 1;
}

START_TEST(test_lock_sem_wakes_other_process)
{
    pid_t pid = tu_fork(sem_waiter, NULL);
    ck_assert_int_eq(shmds_sem_post(&sh->sem), 0);
    int st = tu_wait(pid, 30000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

/* ---- damaged words (issue 19) ---- */

#ifdef __GLIBC__
/* Kinds glibc must never be handed: unknown, priority-protect and
 * priority-inherit variants of the real one (glibc asserts on the last two
 * when their other words do not match). */
static int bad_kind(int i)
{
    int k = sh->m.mtx.__data.__kind;
    const int kinds[] = {0x12345, k | 64, k | 32};
    return kinds[i];
}

/* Every lock and unlock path checks the kind word: a lock with or without
 * a wait, the try-lock the map uses while helping a growth, and an unlock
 * of a mutex damaged while held (which stays held). */
START_TEST(test_lock_damaged_kind_is_ecorrupt_on_every_path)
{
    int good = sh->m.mtx.__data.__kind;
    sh->m.mtx.__data.__kind = bad_kind(_i);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 50, NULL, NULL), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, -1, NULL, NULL), SHMDS_ECORRUPT);
    sh->m.mtx.__data.__kind = good;
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), 0);
    sh->m.mtx.__data.__kind = bad_kind(_i);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), SHMDS_ECORRUPT);
    sh->m.mtx.__data.__kind = good;
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), -EPERM);
}
END_TEST

#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
/* glibc chains the robust mutexes a thread holds through two pointers in
 * each one and writes through both on unlock. A held lock whose pointers
 * were overwritten (an operation's own write through hostile offsets, in
 * the fuzzer's find) is refused with SHMDS_ECORRUPT and stays held; before
 * the fix pthread_mutex_unlock wrote through them and the process died. */
static void *bad_link(int i)
{
    switch (i) {
    case 0: return (void *)(uintptr_t)0x58;               /* what the fuzzer wrote */
    case 1: return (void *)(uintptr_t)0x7ff0deadbee0ull;  /* unmapped */
    case 2: return (char *)&sh->repairs + 1;              /* misaligned */
    default: return &sh->repairs;                         /* mapped, not a mutex */
    }
}

START_TEST(test_lock_damaged_list_words_are_ecorrupt)
{
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), 0);
    void **word = _i % 2 == 0 ? (void **)&sh->m.mtx.__data.__list.__prev
                              : (void **)&sh->m.mtx.__data.__list.__next;
    void *good = *word;
    *word = bad_link(_i / 2);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), SHMDS_ECORRUPT);
    /* Still held: another lock and unlock in between work. */
    shmds_mutex other;
    ck_assert_int_eq(shmds_mutex_init(&other), 0);
    ck_assert_int_eq(shmds_mutex_lock(&other, 0, NULL, NULL), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&other), 0);
    *word = good;
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), -EPERM);
}
END_TEST

/* The image harnesses run hostile bytes, then free or unmap them; a lock
 * an operation damaged while holding it stays held and listed, so they
 * forget it (shmds__held_forget_damaged_in) first. glibc's robust list
 * still chained it: the next lock wrote into the unmapped page (the
 * fuzzer's SEGV in pthread_mutex_trylock), as did the unlock of its older
 * neighbour. Forgetting now unlinks it; the thread's other locks, older
 * and newer, and a robust mutex of its own keep working. */
static int child_lock_unlock(void *arg)
{
    (void)arg;
    if (shmds_mutex_lock(&sh->m, 0, NULL, NULL) != 0)
        return 1;
    return shmds_mutex_unlock(&sh->m) == 0 ? 0 : 2;
}

START_TEST(test_lock_forgotten_damaged_lock_can_be_unmapped)
{
    long pg = sysconf(_SC_PAGESIZE);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), 0); /* older */
    shmds_mutex *gone = mmap(NULL, (size_t)pg, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(gone, MAP_FAILED);
    ck_assert_int_eq(shmds_mutex_init(gone), 0);
    ck_assert_int_eq(shmds_mutex_lock(gone, 0, NULL, NULL), 0);
    void **word = _i == 0 ? (void **)&gone->mtx.__data.__list.__prev
                          : (void **)&gone->mtx.__data.__list.__next;
    *word = bad_link(0);
    ck_assert_int_eq(shmds_mutex_unlock(gone), SHMDS_ECORRUPT);
    ck_assert_uint_eq(shmds__held_forget_damaged_in(gone, (size_t)pg), 0);
    ck_assert_int_eq(munmap(gone, (size_t)pg), 0);
    shmds_mutex newer;
    ck_assert_int_eq(shmds_mutex_init(&newer), 0);
    ck_assert_int_eq(shmds_mutex_lock(&newer, 0, NULL, NULL), 0);
    pthread_mutexattr_t a;
    pthread_mutex_t own;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    ck_assert_int_eq(pthread_mutex_init(&own, &a), 0);
    ck_assert_int_eq(pthread_mutex_lock(&own), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_eq(pthread_mutex_unlock(&own), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&newer), 0);
    /* Nothing is left held: another process can take the older lock. */
    pid_t pid = tu_fork(child_lock_unlock, NULL);
    int st = tu_wait(pid, 30000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

/* A lock taken from a dead owner stays "inconsistent" in glibc's words
 * until its repair ends, and locks the repair takes are chained to it. A
 * thread tracks only so many held locks (32; a map's destroy holds its 64
 * stripes, and a killed process can leave any of them to repair): past
 * that, the unlock inside the repair must still know the lock under repair
 * for this thread's. It used to answer SHMDS_ECORRUPT and leave the inner
 * lock held (the fault sweep's next call on it: EDEADLK). */
#define MANY_LOCKS 40

static int repair_takes_another(void *arg)
{
    shmds_mutex *inner = arg;
    int rc = shmds_mutex_lock(inner, 0, NULL, NULL);
    return rc != 0 ? rc : shmds_mutex_unlock(inner);
}

START_TEST(test_lock_repair_past_the_tracked_locks)
{
    shmds_mutex *mx = tu_shared_alloc(MANY_LOCKS * sizeof *mx);
    for (unsigned i = 0; i < MANY_LOCKS; i++)
        ck_assert_int_eq(shmds_mutex_init(&mx[i]), 0);
    kill_holder(start_holder());
    for (unsigned i = 0; i < MANY_LOCKS - 1; i++)
        ck_assert_int_eq(shmds_mutex_lock(&mx[i], 0, NULL, NULL), 0);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, repair_takes_another, &mx[MANY_LOCKS - 1]),
                     SHMDS_RECOVERED);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    for (unsigned i = MANY_LOCKS - 1; i-- > 0;)
        ck_assert_int_eq(shmds_mutex_unlock(&mx[i]), 0);
    /* Nothing was left held. */
    for (unsigned i = 0; i < MANY_LOCKS; i++) {
        ck_assert_int_eq(shmds_mutex_lock(&mx[i], 0, NULL, NULL), 0);
        ck_assert_int_eq(shmds_mutex_unlock(&mx[i]), 0);
    }
}
END_TEST

/* The check knows a caller's own robust mutexes: locked and unlocked out
 * of order around shmds mutexes, they are never taken for damage. */
START_TEST(test_lock_own_robust_mutex_interleaved)
{
    pthread_mutexattr_t a;
    pthread_mutex_t f;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    ck_assert_int_eq(pthread_mutex_init(&f, &a), 0);
    pthread_mutexattr_destroy(&a);
    shmds_mutex b;
    ck_assert_int_eq(shmds_mutex_init(&b), 0);
    /* f below: its unlock first rewrites m's `next`. */
    ck_assert_int_eq(pthread_mutex_lock(&f), 0);
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), 0);
    ck_assert_int_eq(shmds_mutex_lock(&b, 0, NULL, NULL), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&b), 0);
    ck_assert_int_eq(shmds_mutex_lock(&b, 0, NULL, NULL), 0);
    ck_assert_int_eq(pthread_mutex_unlock(&f), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&b), 0);
    /* f above, still held while m is unlocked: m's `prev` names f. */
    ck_assert_int_eq(shmds_mutex_lock(&sh->m, 0, NULL, NULL), 0);
    ck_assert_int_eq(pthread_mutex_lock(&f), 0);
    ck_assert_int_eq(shmds_mutex_lock(&b, 0, NULL, NULL), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&sh->m), 0);
    ck_assert_int_eq(pthread_mutex_unlock(&f), 0);
    ck_assert_int_eq(shmds_mutex_unlock(&b), 0);
    pthread_mutex_destroy(&f);
}
END_TEST
#endif

static int wait_forever(void *arg)
{
    (void)arg;
    tu_send(&chan, "W", 1);
    return shmds_mutex_lock(&sh->m, -1, NULL, NULL) == SHMDS_ECORRUPT ? 0 : 1;
}

/* A wait without bound is not an untimed futex wait: damage done while a
 * process waits ends its wait with SHMDS_ECORRUPT. */
START_TEST(test_lock_unbounded_wait_ends_on_damage)
{
    pid_t holder = start_holder();
    tu_chan_close(&chan);
    tu_chan_open(&chan);
    pid_t waiter = tu_fork(wait_forever, NULL);
    char c;
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    int good = sh->m.mtx.__data.__kind;
    sh->m.mtx.__data.__kind = bad_kind(0);
    int st = tu_wait(waiter, 10000);
    sh->m.mtx.__data.__kind = good;
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the waiter did not see the damage");
    kill_holder(holder);
}
END_TEST

#if UINTPTR_MAX == UINT64_MAX
/* glibc's 64-bit sem_t: count in the low half of the first word, sleepers
 * in the high half, then the futex flags word. */
struct sem_words {
    uint64_t data;
    int32_t private_;
};

static struct sem_words *sem_words(void)
{
    return (struct sem_words *)(void *)&sh->sem.sem;
}

static void sem_damage(int i)
{
    struct sem_words *w = sem_words();
    switch (i) {
    case 0: w->private_ = 1; break;          /* FUTEX_WAKE becomes another op */
    case 1: w->private_ = 8; break;
    case 2: w->private_ = 0x7fffffff; break;
    case 3: w->data = UINT64_C(0x80000000); break; /* count past SEM_VALUE_MAX */
    default: w->data = UINT64_C(0xffffffff) << 32; break; /* sleepers */
    }
}

static int sem_calls(void *arg)
{
    (void)arg;
    return shmds_sem_post(&sh->sem) == SHMDS_ECORRUPT &&
                   shmds_sem_wait(&sh->sem, 0) == SHMDS_ECORRUPT &&
                   shmds_sem_wait(&sh->sem, 20) == SHMDS_ECORRUPT &&
                   shmds_sem_wait(&sh->sem, -1) == SHMDS_ECORRUPT
               ? 0
               : 1;
}

/* Damaged semaphore words: post and wait say SHMDS_ECORRUPT instead of
 * aborting in glibc or sleeping in an untimed futex wait. */
START_TEST(test_lock_damaged_sem_is_ecorrupt)
{
    sem_damage(_i);
    int st = tu_wait(tu_fork(sem_calls, NULL), 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "damage %d: status %#x", _i, st);
}
END_TEST
#endif
#endif

int main(void)
{
    Suite *s = suite_create("lock");
    TCase *core = tcase_create("core");
    tcase_set_timeout(core, 120);
    tcase_add_checked_fixture(core, setup, NULL);
    tcase_add_test(core, test_lock_lock_unlock);
    tcase_add_test(core, test_lock_sem_counts_and_timeouts);
    suite_add_tcase(s, core);

    TCase *mp = tcase_create("multiprocess");
    tcase_set_timeout(mp, 120);
    tcase_add_checked_fixture(mp, setup, NULL);
    tcase_add_test(mp, test_lock_held_elsewhere_busy_and_timeout);
    tcase_add_test(mp, test_lock_sem_wakes_other_process);
    suite_add_tcase(s, mp);

    TCase *crash = tcase_create("crash");
    tcase_set_timeout(crash, 120);
    tcase_add_checked_fixture(crash, setup, NULL);
    tcase_add_test(crash, test_lock_owner_death_repairs_once);
    tcase_add_test(crash, test_lock_waiter_woken_by_owner_death);
    tcase_add_test(crash, test_lock_failed_repair_fences_everyone);
    tcase_add_test(crash, test_lock_repairer_killed_next_locker_repairs);
    tcase_add_test(crash, test_lock_death_without_repair_fn);
    suite_add_tcase(s, crash);

#ifdef __GLIBC__
    TCase *lim = tcase_create("limits");
    tcase_set_timeout(lim, 120);
    tcase_add_checked_fixture(lim, setup, NULL);
    tcase_add_loop_test(lim, test_lock_damaged_kind_is_ecorrupt_on_every_path, 0, 3);
    tcase_add_test(lim, test_lock_unbounded_wait_ends_on_damage);
#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
    tcase_add_loop_test(lim, test_lock_damaged_list_words_are_ecorrupt, 0, 8);
    tcase_add_loop_test(lim, test_lock_forgotten_damaged_lock_can_be_unmapped, 0, 2);
    tcase_add_test(lim, test_lock_own_robust_mutex_interleaved);
    tcase_add_test(lim, test_lock_repair_past_the_tracked_locks);
#endif
#if UINTPTR_MAX == UINT64_MAX
    tcase_add_loop_test(lim, test_lock_damaged_sem_is_ecorrupt, 0, 5);
#endif
    suite_add_tcase(s, lim);
#endif

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
