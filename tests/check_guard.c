/* Read guards: entering and leaving, retirement that waits for readers in
 * other processes, dead readers whose slots are reclaimed, stuck readers
 * that only delay frees, and read-only attaches holding guards. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

static const char *rname;

static shmds_region *region(size_t size)
{
    rname = tu_name("guard");
    shmds_region *r = NULL;
    shmds_region_opts o = {.max_size = size};
    int rc = shmds_region_create(rname, size, &o, &r);
    ck_assert_msg(rc == 0, "region_create: %s", shmds_errname(rc));
    return r;
}

static uint64_t used_blocks(shmds_region *r)
{
    shmds_alloc_stats s;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &s), 0);
    return s.used_blocks;
}

/* A slot in the heap (a small block of its own) holding a fresh block of
 * `size` bytes: what a structure's intent log holds when it retires. */
static uint64_t *slot_with_block(shmds_region *r, uint64_t size, uint64_t *blk)
{
    shmds_off_t holder;
    ck_assert_int_eq(shmds_alloc(r, 16, &holder), 0);
    uint64_t *slot = shmds_ptr(r, holder);
    *slot = 0;
    ck_assert_int_eq(shmds__alloc_into(r, size, slot), 0);
    *blk = *slot;
    return slot;
}

static bool live(shmds_region *r, uint64_t off)
{
    return shmds__alloc_block_live(r, off, NULL) == 0;
}

/* ---- core ---- */

START_TEST(test_guard_enter_nests_and_null_is_einval)
{
    shmds_region *r = region(1 << 20);
    shmds_guard *g1 = NULL, *g2 = NULL;
    ck_assert_int_eq(shmds_guard_enter(NULL, &g1), -EINVAL);
    ck_assert_int_eq(shmds_guard_enter(r, NULL), -EINVAL);
    ck_assert_int_eq(shmds_guard_enter(r, &g1), 0);
    ck_assert_int_eq(shmds_guard_enter(r, &g2), 0);
    ck_assert_ptr_eq(g1, g2);
    shmds_guard_leave(g2);
    shmds_guard_leave(g1);
    shmds_guard_leave(g1); /* too many leaves: ignored */
    shmds_guard_leave(NULL);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* Without readers a retired block is freed by the next reclamation, and
 * the slot it left is empty at once. */
START_TEST(test_guard_retire_without_readers_frees)
{
    shmds_region *r = region(1 << 20);
    uint64_t base = used_blocks(r), blk;
    uint64_t *slot = slot_with_block(r, 200, &blk);
    ck_assert_int_eq(shmds__guard_retire(r, slot), 0);
    ck_assert_uint_eq(*slot, 0);
    ck_assert(live(r, blk));
    ck_assert_int_ge(shmds__guard_reclaim(r), 1);
    ck_assert(!live(r, blk));
    ck_assert_int_eq(shmds__guard_retire(r, slot), 0); /* empty slot: nothing */
    uint64_t n = 99;
    ck_assert_int_eq(shmds__guard_retired(r, &n), 0);
    ck_assert_uint_eq(n, 0);
    /* The holder only: an explicit reclamation hands back the retire
     * block too. */
    ck_assert_uint_eq(used_blocks(r), base + 1);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* ---- multiprocess ---- */

struct reader_arg {
    const char *name;
    unsigned flags;
    tu_chan to_parent, to_child;
};

/* Enter a guard, say so, wait for the word to leave, leave, say so. */
static int reader_child(void *p)
{
    struct reader_arg *a = p;
    shmds_region *r;
    if (shmds_region_open(a->name, a->flags, &r) != 0)
        return 1;
    shmds_guard *g;
    int rc = shmds_guard_enter(r, &g);
    char c = rc == 0 ? 'i' : 'x';
    tu_send(&a->to_parent, &c, 1);
    if (rc != 0)
        return 2;
    if (tu_recv(&a->to_child, &c, 1) != 1)
        return 3;
    shmds_guard_leave(g);
    c = 'o';
    tu_send(&a->to_parent, &c, 1);
    tu_recv(&a->to_child, &c, 1);
    shmds_region_close(r);
    return 0;
}

static pid_t start_reader(struct reader_arg *a, const char *name, unsigned flags)
{
    a->name = name;
    a->flags = flags;
    tu_chan_open(&a->to_parent);
    tu_chan_open(&a->to_child);
    pid_t pid = tu_fork(reader_child, a);
    char c = 0;
    ck_assert_int_eq(tu_recv(&a->to_parent, &c, 1), 1);
    ck_assert_int_eq(c, 'i');
    return pid;
}

/* A reader in another process (a read-only attach) holds a retired block
 * until it leaves its guard; blocks retired after it left are not held. */
static void reader_holds_until_leave(unsigned flags)
{
    shmds_region *r = region(1 << 20);
    uint64_t blk, blk2;
    uint64_t *slot = slot_with_block(r, 300, &blk);
    uint64_t *slot2 = slot_with_block(r, 300, &blk2);
    struct reader_arg a;
    pid_t pid = start_reader(&a, rname, flags);
    ck_assert_int_eq(shmds__guard_retire(r, slot), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(shmds__guard_reclaim(r), 0);
    ck_assert(live(r, blk));
    char c = 'l';
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_recv(&a.to_parent, &c, 1), 1);
    ck_assert_int_eq(c, 'o');
    ck_assert_int_eq(shmds__guard_reclaim(r), 1);
    ck_assert(!live(r, blk));
    /* The reader still holds its slot, outside any guard: no hold. */
    ck_assert_int_eq(shmds__guard_retire(r, slot2), 0);
    ck_assert_int_eq(shmds__guard_reclaim(r), 1);
    ck_assert(!live(r, blk2));
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_wait(pid, 10000), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}

START_TEST(test_guard_reader_in_other_process_holds_retired_block)
{
    reader_holds_until_leave(0);
}
END_TEST

START_TEST(test_guard_readonly_reader_holds_retired_block)
{
    reader_holds_until_leave(SHMDS_RDONLY);
}
END_TEST

/* A reader SIGKILLed inside its guard holds nothing back: the next
 * reclamation finds its process gone, clears its slot and frees. */
START_TEST(test_guard_dead_reader_slot_is_reclaimed)
{
    shmds_region *r = region(1 << 20);
    uint64_t blk;
    uint64_t *slot = slot_with_block(r, 300, &blk);
    struct reader_arg a;
    pid_t pid = start_reader(&a, rname, SHMDS_RDONLY);
    ck_assert_int_eq(shmds__guard_retire(r, slot), 0);
    ck_assert_int_eq(shmds__guard_reclaim(r), 0);
    ck_assert(live(r, blk));
    tu_kill(pid);
    ck_assert_int_eq(shmds__guard_reclaim(r), 1);
    ck_assert(!live(r, blk));
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* A live reader that never leaves delays frees only: retirement goes on
 * (the retire list grows past one block), and once it leaves everything
 * is freed, the extra retire blocks included. */
START_TEST(test_guard_stuck_reader_delays_frees_only)
{
    shmds_region *r = region(4 << 20);
    uint64_t base = used_blocks(r);
    struct reader_arg a;
    pid_t pid = start_reader(&a, rname, 0);
    enum { N = 700 };
    static uint64_t blks[N];
    for (int i = 0; i < N; i++) {
        uint64_t *slot = slot_with_block(r, 64, &blks[i]);
        ck_assert_int_eq(shmds__guard_retire(r, slot), 0);
        ck_assert_int_eq(shmds_free(r, shmds_off(r, slot)), 0);
    }
    uint64_t n = 0;
    ck_assert_int_eq(shmds__guard_retired(r, &n), 0);
    ck_assert_uint_eq(n, N);
    for (int i = 0; i < N; i++)
        ck_assert(live(r, blks[i]));
    char c = 'l';
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_recv(&a.to_parent, &c, 1), 1);
    ck_assert_int_eq(shmds__guard_reclaim(r), N); /* and the retire blocks */
    ck_assert_int_eq(shmds__guard_retired(r, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_uint_eq(used_blocks(r), base);
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_wait(pid, 10000), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* ---- limits ---- */

/* The reader table is another shm object anyone who can read the region
 * can write: a damaged or missing one makes guards fail with an error,
 * never a crash, and writers then keep what they retire. */
START_TEST(test_guard_damaged_reader_table_is_an_error)
{
    shmds_region *r = region(1 << 20);
    char rn[300];
    snprintf(rn, sizeof rn, "/shmds-rd-%s", rname + 1);
    int fd = shm_open(rn, O_RDWR, 0);
    ck_assert_int_ge(fd, 0);
    uint64_t junk = 0x1234;
    ck_assert_int_eq(pwrite(fd, &junk, 8, 0), 8);
    shmds_region *r2;
    ck_assert_int_eq(shmds_region_open(rname, 0, &r2), 0);
    shmds_guard *g;
    ck_assert_int_eq(shmds_guard_enter(r2, &g), SHMDS_ECORRUPT);
    uint64_t blk;
    uint64_t *slot = shmds_ptr(r2, shmds_off(r, slot_with_block(r, 100, &blk)));
    ck_assert_int_eq(shmds__guard_retire(r2, slot), 0);
    ck_assert_int_eq(shmds__guard_reclaim(r2), 0);
    ck_assert(live(r2, blk));
    ck_assert_int_eq(shmds_region_close(r2), 0);
    /* Truncated: an error too (no SIGBUS). */
    ck_assert_int_eq(ftruncate(fd, 100), 0);
    ck_assert_int_eq(shmds_region_open(rname, SHMDS_RDONLY, &r2), 0);
    ck_assert_int_eq(shmds_guard_enter(r2, &g), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_region_close(r2), 0);
    close(fd);
    ck_assert_int_eq(shm_unlink(rn), 0);
    ck_assert_int_eq(shmds_region_open(rname, SHMDS_RDONLY, &r2), 0);
    ck_assert_int_eq(shmds_guard_enter(r2, &g), -ENOENT);
    ck_assert_int_eq(shmds_region_close(r2), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* Unlinking a region removes its reader table: nothing is left in
 * /dev/shm. */
START_TEST(test_guard_unlink_removes_reader_table)
{
    shmds_region *r = region(1 << 20);
    char path[300];
    snprintf(path, sizeof path, "/dev/shm/shmds-rd-%s", rname + 1);
    ck_assert_int_eq(access(path, F_OK), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
    ck_assert_int_eq(shmds_region_unlink(rname), 0);
    ck_assert_int_ne(access(path, F_OK), 0);
}
END_TEST

static Suite *guard_suite(void)
{
    Suite *s = suite_create("guard");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_guard_enter_nests_and_null_is_einval);
    tcase_add_test(core, test_guard_retire_without_readers_frees);
    suite_add_tcase(s, core);
    TCase *mp = tcase_create("multiprocess");
    tcase_add_test(mp, test_guard_reader_in_other_process_holds_retired_block);
    tcase_add_test(mp, test_guard_readonly_reader_holds_retired_block);
    tcase_add_test(mp, test_guard_dead_reader_slot_is_reclaimed);
    tcase_add_test(mp, test_guard_stuck_reader_delays_frees_only);
    suite_add_tcase(s, mp);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_guard_damaged_reader_table_is_an_error);
    tcase_add_test(limits, test_guard_unlink_removes_reader_table);
    suite_add_tcase(s, limits);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(guard_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
