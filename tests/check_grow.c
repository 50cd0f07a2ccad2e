/* Regions that grow while processes stay attached (issue 14): a map filled
 * with far more than its region's first size by five processes at once,
 * every value checked; a queue and a list that outgrow their region;
 * growth racing between processes; a read-only reader following growth;
 * the mapping calls a process that does not grow makes per step; and, in a
 * fault-injection build, a grower SIGKILLed at every point of a growth.
 * After each: the region checks healthy, its heap covers exactly its size
 * (nothing lost, nothing counted twice) and the object is as long as the
 * published size. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define KB ((size_t)1024)
#define MB (KB * KB)

static const char *rname;

static shmds_region *region(size_t size, size_t max)
{
    rname = tu_name("grow");
    shmds_region *r = NULL;
    shmds_region_opts o = {.max_size = max};
    int rc = shmds_region_create(rname, size, &o, &r);
    ck_assert_msg(rc == 0, "region_create: %s", shmds_errname(rc));
    return r;
}

static shmds_region *attach(unsigned flags)
{
    shmds_region *r = NULL;
    int rc = shmds_region_open(rname, flags, &r);
    ck_assert_msg(rc == 0, "region_open: %s", shmds_errname(rc));
    return r;
}

/* The region's first arena: it spans the heap, and a growth makes it
 * longer (the other arenas are carved out of it). */
static uint64_t overhead(shmds_region *r)
{
    shmds_alloc_arena_info ai;
    ck_assert_int_eq(shmds_alloc_arena_info_get(r, 0, &ai), 0);
    return ai.offset;
}

/* What a user would see of a sound region after growth: healthy, its
 * first arena ending exactly where the region does (nothing lost, nothing
 * counted twice), used + free = heap, and the object on /dev/shm as long
 * as the published size. */
static void assert_sound(shmds_region *r, uint64_t start)
{
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_info info;
    shmds_alloc_stats st;
    shmds_alloc_arena_info ai;
    ck_assert_int_eq(shmds_region_info_get(r, &info), 0);
    ck_assert_int_eq(shmds_alloc_stats_get(r, &st), 0);
    ck_assert_int_eq(shmds_alloc_arena_info_get(r, 0, &ai), 0);
    ck_assert_uint_eq(ai.offset, start);
    ck_assert_uint_eq(ai.offset + ai.size, info.size);
    ck_assert_uint_eq(st.used_bytes + st.free_bytes, st.heap_bytes);
    char path[300];
    snprintf(path, sizeof path, "/dev/shm%s", rname);
    struct stat sb;
    ck_assert_int_eq(stat(path, &sb), 0);
    ck_assert_uint_eq((uint64_t)sb.st_size, info.size);
}

/* ---- a map filled far past its region's first size by five processes ---- */

#define VAL 1000
#define WORKERS 5

static void val_of(unsigned p, uint64_t i, unsigned char *v)
{
    for (unsigned k = 0; k < VAL; k++)
        v[k] = (unsigned char)(p * 131u + i * 7u + k);
}

static size_t key_of(unsigned p, uint64_t i, char *k)
{
    return (size_t)snprintf(k, 32, "%u.%" PRIu64, p, i);
}

/* Bytes of values the five processes store in all (SHMDS_GROW_BYTES, or
 * 48 MiB in make check; `make torture-grow` runs 1 GiB). */
static uint64_t fill_bytes(void)
{
    const char *s = getenv("SHMDS_GROW_BYTES");
    return s != NULL ? strtoull(s, NULL, 10) : (uint64_t)48 * MB;
}

static uint64_t per_worker(void)
{
    return fill_bytes() / WORKERS / VAL;
}

static int get_checked(shmds_map *m, unsigned p, uint64_t i, bool must)
{
    char k[32];
    unsigned char want[VAL], got[VAL];
    size_t n = 0;
    int rc = shmds_map_get(m, k, key_of(p, i, k), got, sizeof got, &n);
    if (rc == -ENOENT && !must)
        return 0;
    if (rc != 0) {
        fprintf(stderr, "get %u.%" PRIu64 ": %s\n", p, i, shmds_errname(rc));
        return 1;
    }
    val_of(p, i, want);
    if (n != VAL || memcmp(got, want, VAL) != 0) {
        fprintf(stderr, "get %u.%" PRIu64 ": wrong value\n", p, i);
        return 1;
    }
    return 0;
}

/* Worker p: store its keys, reading back one of its own and one of
 * another worker's (present or not yet) after every store. */
static int fill_worker(void *arg)
{
    unsigned p = (unsigned)(uintptr_t)arg;
    shmds_region *r = attach(0);
    shmds_map *m;
    if (shmds_map_open(r, "m", &m) != 0)
        return 2;
    uint64_t n = per_worker(), x = p + 1;
    unsigned char v[VAL];
    char k[32];
    for (uint64_t i = 0; i < n; i++) {
        val_of(p, i, v);
        int rc = shmds_map_put(m, k, key_of(p, i, k), v, VAL, 0, 0);
        if (rc != 0) {
            fprintf(stderr, "put %u.%" PRIu64 ": %s\n", p, i, shmds_errname(rc));
            return 1;
        }
        x = x * 6364136223846793005u + 1442695040888963407u;
        if (get_checked(m, p, (x >> 33) % (i + 1), true) != 0 ||
            get_checked(m, (unsigned)((x >> 20) % WORKERS), (x >> 40) % n, false) != 0)
            return 1;
    }
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

START_TEST(test_grow_map_filled_far_past_its_region_by_five_processes)
{
    uint64_t fill = fill_bytes();
    size_t max = (size_t)(fill * 3 > (uint64_t)64 * MB ? fill * 3 : (uint64_t)64 * MB);
    shmds_region *r = region(MB, max);
    uint64_t ovh = overhead(r);
    shmds_map *m;
    ck_assert_int_eq(shmds_map_create(r, "m", NULL, &m), 0);
    pid_t pid[WORKERS];
    for (unsigned p = 0; p < WORKERS; p++)
        pid[p] = tu_fork(fill_worker, (void *)(uintptr_t)p);
    for (unsigned p = 0; p < WORKERS; p++) {
        int st = tu_wait(pid[p], 600000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %u: status %d", p, st);
    }
    /* Every value of every worker, read through the creator's handle,
     * which has not touched the grown part yet. */
    uint64_t n = per_worker(), count = 0;
    for (unsigned p = 0; p < WORKERS; p++)
        for (uint64_t i = 0; i < n; i++)
            ck_assert_int_eq(get_checked(m, p, i, true), 0);
    ck_assert_int_eq(shmds_map_count(m, &count), 0);
    ck_assert_uint_eq(count, WORKERS * n);
    ck_assert_uint_ge(shmds_region_size(r), fill);
    ck_assert_int_eq(shmds_map_check(m), 0);
    assert_sound(r, ovh);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* ---- a queue and a list outgrowing their region ---- */

START_TEST(test_grow_queue_larger_than_its_region)
{
    shmds_region *r = region(64 * KB, 64 * MB);
    uint64_t ovh = overhead(r);
    shmds_queue *q;
    /* A ring of 4 MiB in a 64 KiB region: the create grows it. */
    ck_assert_int_eq(shmds_queue_create(r, "q", 4 * MB, 256, 0, &q), 0);
    ck_assert_uint_ge(shmds_region_size(r), 4 * MB);
    unsigned char msg[256], got[256];
    size_t len;
    /* Fill the ring, then drain it: every message back, in order. */
    uint32_t sent = 0, recvd = 0;
    for (;; sent++) {
        memset(msg, (int)(sent & 0xff), sizeof msg);
        memcpy(msg, &sent, sizeof sent);
        int rc = shmds_queue_send(q, msg, sizeof msg, 0);
        if (rc == -EAGAIN || rc == -ETIMEDOUT)
            break;
        ck_assert_int_eq(rc, 0);
    }
    ck_assert_uint_gt(sent * sizeof msg, 3 * MB);
    for (; recvd < sent; recvd++) {
        ck_assert_int_eq(shmds_queue_recv(q, got, sizeof got, &len, 0), 0);
        memset(msg, (int)(recvd & 0xff), sizeof msg);
        memcpy(msg, &recvd, sizeof recvd);
        ck_assert_uint_eq(len, sizeof msg);
        ck_assert_mem_eq(got, msg, sizeof msg);
    }
    ck_assert_int_eq(shmds_queue_check(q), 0);
    assert_sound(r, ovh);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_grow_list_fills_its_region_and_grows)
{
    shmds_region *r = region(64 * KB, 64 * MB);
    uint64_t ovh = overhead(r);
    shmds_list *l;
    ck_assert_int_eq(shmds_list_create(r, "l", &l), 0);
    enum { N = 20000, LEN = 300 };
    unsigned char v[LEN], got[LEN];
    for (uint32_t i = 0; i < N; i++) {
        memset(v, (int)(i * 13u), sizeof v);
        memcpy(v, &i, sizeof i);
        ck_assert_int_eq(shmds_list_push_back(l, v, sizeof v), 0);
    }
    ck_assert_uint_ge(shmds_region_size(r), (size_t)N * LEN);
    assert_sound(r, ovh);
    /* A second process walks it from its own, unfollowed handle. */
    shmds_region *r2 = attach(SHMDS_RDONLY);
    shmds_list *l2;
    ck_assert_int_eq(shmds_list_open(r2, "l", &l2), 0);
    ck_assert_int_eq(shmds_list_check(l2), 0);
    size_t n = 0;
    ck_assert_int_eq(shmds_list_len(l2, &n), 0);
    ck_assert_uint_eq(n, N);
    shmds_list_close(l2);
    shmds_region_close(r2);
    for (uint32_t i = 0; i < N; i++) {
        size_t len;
        ck_assert_int_eq(shmds_list_pop_front(l, got, sizeof got, &len), 0);
        memset(v, (int)(i * 13u), sizeof v);
        memcpy(v, &i, sizeof i);
        ck_assert_uint_eq(len, LEN);
        ck_assert_mem_eq(got, v, LEN);
    }
    assert_sound(r, ovh);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_grow_limits)
{
    shmds_region *r = region(64 * KB, 256 * KB);
    uint64_t ovh = overhead(r);
    ck_assert_uint_eq(shmds_region_max_size(r), 256 * KB);
    ck_assert_int_eq(shmds_region_grow(r, 512 * KB), -ENOMEM);
    ck_assert_uint_eq(shmds_region_size(r), 64 * KB);
    ck_assert_int_eq(shmds_region_grow(r, 32 * KB), 0); /* already that large */
    ck_assert_int_eq(shmds_region_grow(r, 100 * KB + 1), 0);
    ck_assert_uint_eq(shmds_region_size(r), 104 * KB); /* page multiple */
    assert_sound(r, ovh);
    /* Allocations grow it to the maximum, then -ENOMEM as in a region
     * that never grows; everything allocated stays readable. */
    shmds_off_t offs[1024];
    unsigned n = 0;
    int rc;
    while ((rc = shmds_alloc(r, 1000, &offs[n])) == 0) {
        memset(shmds_ptr(r, offs[n]), (int)n, 1000);
        ck_assert_uint_lt(++n, 1024);
    }
    ck_assert_int_eq(rc, -ENOMEM);
    ck_assert_uint_eq(shmds_region_size(r), 256 * KB);
    for (unsigned i = 0; i < n; i++)
        ck_assert_uint_eq(((unsigned char *)shmds_ptr(r, offs[i]))[999], (unsigned char)i);
    assert_sound(r, ovh);
    /* A request larger than the maximum fails at once. */
    shmds_off_t o;
    ck_assert_int_eq(shmds_alloc(r, 512 * KB, &o), -ENOMEM);
    /* Bad maxima at create. */
    shmds_region *r2;
    shmds_region_opts op = {.max_size = 32 * KB};
    ck_assert_int_eq(shmds_region_create(tu_name("grow"), 64 * KB, &op, &r2), -EINVAL);
    op.max_size = (size_t)SHMDS_REGION_MAX_SIZE + 1;
    ck_assert_int_eq(shmds_region_create(tu_name("grow"), 64 * KB, &op, &r2), -EFBIG);
    ck_assert_int_eq(shmds_region_grow(NULL, MB), -EINVAL);
    shmds_region_close(r);
}
END_TEST

/* ---- a carved arena below an earlier one ----
 * Met by racing growers: a carve takes whatever block arena 0 hands out,
 * which after frees may lie below an arena carved before. Another handle
 * reading the arena table must take it for what it is, not damage. */

START_TEST(test_grow_arena_carved_below_an_earlier_one)
{
    shmds_region *r = region(MB, MB);
    shmds_off_t a;
    ck_assert_int_eq(shmds_alloc(r, 200 * KB, &a), 0);
    ck_assert_int_eq(shmds__alloc_arena_add(r), 0);
    ck_assert_int_eq(shmds_free(r, a), 0);
    ck_assert_int_eq(shmds__alloc_arena_add(r), 0);
    ck_assert_uint_eq(r->narenas, 3);
    ck_assert_uint_lt(r->arena[2].carrier, r->arena[1].carrier);
    shmds_region *r2 = attach(0);
    shmds_off_t b;
    ck_assert_int_eq(shmds_alloc(r2, 100, &b), 0);
    ck_assert_int_eq(shmds_free(r2, b), 0);
    ck_assert_int_eq(shmds_region_check(r2), 0);
    shmds_region_close(r2);
    shmds_region_close(r);
}
END_TEST

/* ---- read-only attaches follow growth, and cannot grow ---- */

static tu_chan go, done;

static int ro_reader(void *arg)
{
    (void)arg;
    shmds_region *r = attach(SHMDS_RDONLY);
    shmds_region_info info;
    shmds_region_info_get(r, &info);
    uint64_t before = info.mapped_size;
    char c = 'r';
    tu_send(&done, &c, 1);
    if (tu_recv(&go, &c, 1) != 1)
        return 2;
    if (shmds_region_grow(r, info.max_size) != SHMDS_ERDONLY)
        return 3;
    shmds_map *m;
    if (shmds_map_open(r, "m", &m) != 0)
        return 4;
    for (uint64_t i = 0; i < 20000; i++)
        if (get_checked(m, 0, i, true) != 0)
            return 5;
    shmds_region_info_get(r, &info);
    if (info.mapped_size <= before || info.mapped_size != info.size || shmds_region_check(r) != 0)
        return 6;
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

START_TEST(test_grow_read_only_reader_follows)
{
    shmds_region *r = region(64 * KB, 256 * MB);
    shmds_map *m;
    ck_assert_int_eq(shmds_map_create(r, "m", NULL, &m), 0);
    tu_chan_open(&go);
    tu_chan_open(&done);
    pid_t pid = tu_fork(ro_reader, NULL);
    char c;
    ck_assert_int_eq(tu_recv(&done, &c, 1), 1);
    unsigned char v[VAL];
    char k[32];
    for (uint64_t i = 0; i < 20000; i++) {
        val_of(0, i, v);
        ck_assert_int_eq(shmds_map_put(m, k, key_of(0, i, k), v, VAL, 0, 0), 0);
    }
    ck_assert_uint_ge(shmds_region_size(r), 16 * MB);
    tu_send(&go, &c, 1);
    int st = tu_wait(pid, 120000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader: status %d", st);
    tu_chan_close(&go);
    tu_chan_close(&done);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* ---- growth racing between processes ---- */

static int racer(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    shmds_region *r = attach(0);
    uint64_t x = me + 7;
    shmds_off_t keep[400];
    for (unsigned i = 0; i < 400; i++) {
        x = x * 6364136223846793005u + 1442695040888963407u;
        /* Explicit growth to sizes both racers ask for, and allocations
         * that find the heap full and grow it themselves. */
        if (i % 16 == 0 && shmds_region_grow(r, (size_t)(64 * KB + (x >> 40) % (8 * MB))) != 0)
            return 1;
        size_t sz = 1000 + (size_t)((x >> 20) % 30000);
        int arc = shmds_alloc(r, sz, &keep[i]);
        if (arc != 0) {
            fprintf(stderr, "racer %u: alloc %zu: %s\n", me, sz, shmds_errname(arc));
            return 2;
        }
        memset(shmds_ptr(r, keep[i]), (int)(me * 16 + i % 16), sz);
    }
    for (unsigned i = 0; i < 400; i++) {
        unsigned char *p = shmds_ptr(r, keep[i]);
        if (p[0] != (unsigned char)(me * 16 + i % 16) || shmds_free(r, keep[i]) != 0)
            return 3;
    }
    shmds_region_close(r);
    return 0;
}

START_TEST(test_grow_races_between_two_processes)
{
    shmds_region *r = region(64 * KB, 64 * MB);
    uint64_t ovh = overhead(r);
    pid_t a = tu_fork(racer, (void *)(uintptr_t)1), b = tu_fork(racer, (void *)(uintptr_t)2);
    int sa = tu_wait(a, 120000), sb = tu_wait(b, 120000);
    ck_assert_msg(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "racer 1: status %d", sa);
    ck_assert_msg(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "racer 2: status %d", sb);
    assert_sound(r, ovh);
    shmds_alloc_stats st;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &st), 0);
    ck_assert_uint_eq(st.used_blocks, 0); /* every block given back */
    shmds_region_close(r);
}
END_TEST

/* ---- the goal: mapping calls of processes that do not grow ---- */

#define FOLLOWERS 4
static tu_chan step_go[FOLLOWERS], step_done;

/* Follow each step with a checked read of the heap (the allocator's
 * statistics walk the grown free list), then report the mmap calls this
 * handle has made so far. */
static int follower(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    shmds_region *r = attach(SHMDS_RDONLY);
    char c;
    while (tu_recv(&step_go[me], &c, 1) == 1 && c == 's') {
        shmds_alloc_stats st;
        shmds_region_info info;
        if (shmds_alloc_stats_get(r, &st) != 0 || shmds_region_info_get(r, &info) != 0)
            return 1;
        uint64_t calls = info.map_calls;
        tu_send(&step_done, &calls, sizeof calls);
    }
    shmds_region_close(r);
    return 0;
}

START_TEST(test_grow_followers_make_one_mapping_call_per_step)
{
    size_t max = (size_t)1 << 30;
    shmds_region *r = region(MB, max);
    uint64_t ovh = overhead(r);
    pid_t pid[FOLLOWERS];
    tu_chan_open(&step_done);
    for (unsigned i = 0; i < FOLLOWERS; i++) {
        tu_chan_open(&step_go[i]);
        pid[i] = tu_fork(follower, (void *)(uintptr_t)i);
    }
    unsigned steps = 0;
    for (size_t s = 2 * MB; s <= max; s *= 2) {
        ck_assert_int_eq(shmds_region_grow(r, s), 0);
        steps++;
        for (unsigned i = 0; i < FOLLOWERS; i++)
            tu_send(&step_go[i], "s", 1);
        for (unsigned i = 0; i < FOLLOWERS; i++) {
            uint64_t calls;
            ck_assert_int_eq(tu_recv(&step_done, &calls, sizeof calls), 1);
            ck_assert_uint_le(calls, steps);
        }
    }
    ck_assert_uint_eq(steps, 10);
    for (unsigned i = 0; i < FOLLOWERS; i++) {
        tu_send(&step_go[i], "q", 1);
        int st = tu_wait(pid[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "follower %u: status %d", i, st);
        tu_chan_close(&step_go[i]);
    }
    tu_chan_close(&step_done);
    ck_assert_uint_eq(shmds_region_size(r), max);
    assert_sound(r, ovh);
    shmds_region_close(r);
}
END_TEST

/* ---- a grower SIGKILLed at every point of a growth ---- */

#ifdef SHMDS_FAULT_INJECTION
static const char *const grow_points[] = {
    "region.grow.intent",      "region.grow.truncated", "region.grow.allocated",
    "region.grow.published",   "alloc.extend.unlinked", "alloc.commit.before_seal",
    "alloc.commit.sealed",     "alloc.commit.store",    "alloc.commit.cleared",
    "alloc.extend.done",       "region.grow.extended",
};

static const char *point;

/* Grow (or, with arg 1, finish what the dead grower left) with the fault
 * armed: SIGKILLed at the point when it is reached. */
static int grower(void *arg)
{
    setenv("SHMDS_FAULT", point, 1);
    shmds_region *r = attach(0);
    int rc = arg != NULL ? shmds_region_check(r) : shmds_region_grow(r, 256 * KB);
    shmds_region_close(r);
    return rc == 0 ? 0 : 1;
}

START_TEST(test_grow_killed_at_every_point)
{
    point = grow_points[_i];
    shmds_region *r = region(64 * KB, 16 * MB);
    uint64_t ovh = overhead(r);
    shmds_off_t a, b;
    ck_assert_int_eq(shmds_alloc(r, 20000, &a), 0);
    ck_assert_int_eq(shmds_alloc(r, 100, &b), 0);
    ck_assert_int_eq(shmds_free(r, a), 0); /* the last block but one is free */
    memset(shmds_ptr(r, b), 0x5a, 100);
    int st = tu_wait(tu_fork(grower, NULL), 30000);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: not reached (%d)", point, st);
    /* A second process killed at the same point while finishing it (when
     * the finishing reaches it), then the check completes the growth. */
    tu_wait(tu_fork(grower, (void *)1), 30000);
    assert_sound(r, ovh);
    ck_assert_uint_eq(((unsigned char *)shmds_ptr(r, b))[99], 0x5a);
    /* Space from the dead growth is usable: a block that needs all of it. */
    shmds_alloc_stats s;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &s), 0);
    ck_assert_uint_ge(s.largest_free, 128 * KB);
    shmds_off_t c;
    ck_assert_int_eq(shmds_alloc(r, s.largest_free, &c), 0);
    ck_assert_int_eq(shmds_free(r, c), 0);
    ck_assert_int_eq(shmds_free(r, b), 0);
    assert_sound(r, ovh);
    shmds_region_close(r);
}
END_TEST
#endif

static Suite *grow_suite(void)
{
    Suite *s = suite_create("grow");
    TCase *core = tcase_create("core");
    tcase_set_timeout(core, 600);
    tcase_add_test(core, test_grow_limits);
    tcase_add_test(core, test_grow_queue_larger_than_its_region);
    tcase_add_test(core, test_grow_list_fills_its_region_and_grows);
    tcase_add_test(core, test_grow_arena_carved_below_an_earlier_one);
    suite_add_tcase(s, core);
    TCase *mproc = tcase_create("multiprocess");
    tcase_set_timeout(mproc, 900);
    tcase_add_test(mproc, test_grow_map_filled_far_past_its_region_by_five_processes);
    tcase_add_test(mproc, test_grow_read_only_reader_follows);
    tcase_add_test(mproc, test_grow_races_between_two_processes);
    tcase_add_test(mproc, test_grow_followers_make_one_mapping_call_per_step);
    suite_add_tcase(s, mproc);
#ifdef SHMDS_FAULT_INJECTION
    TCase *crash = tcase_create("crash");
    tcase_set_timeout(crash, 300);
    tcase_add_loop_test(crash, test_grow_killed_at_every_point, 0,
                        (int)(sizeof grow_points / sizeof grow_points[0]));
    suite_add_tcase(s, crash);
#endif
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(grow_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
