/* The shared hash map: semantics of every call and flag, TTL with an
 * injected clock, budgets and eviction, growth from tiny to large, several
 * processes at once, and writers SIGKILLed at random moments. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "map_int.h"
#include "testutil.h"

#define MB (1024 * 1024)

static const char *rname;

static shmds_region *region(size_t size)
{
    rname = tu_name("map");
    shmds_region *r = NULL;
    shmds_region_opts o = {.max_size = size}; /* never grows: full-heap tests */
    int rc = shmds_region_create(rname, size, &o, &r);
    ck_assert_msg(rc == 0, "region_create: %s", shmds_errname(rc));
    return r;
}

static shmds_map *mk(shmds_region *r, const char *name, uint64_t cap, uint64_t limit,
                     uint32_t stripes, uint32_t ttl, uint32_t flags)
{
    shmds_map_opts o = {cap, limit, stripes, ttl, flags, 0};
    shmds_map *m = NULL;
    int rc = shmds_map_create(r, name, &o, &m);
    ck_assert_msg(rc == 0, "map_create: %s", shmds_errname(rc));
    return m;
}

static int puts_(shmds_map *m, const char *k, const char *v, uint32_t ttl, unsigned fl)
{
    return shmds_map_put(m, k, strlen(k), v, strlen(v), ttl, fl);
}

/* Value of k as a string ("" and -ENOENT etc. through rc). */
static int gets_(shmds_map *m, const char *k, char *buf, size_t cap)
{
    size_t vl = 0;
    int rc = shmds_map_get(m, k, strlen(k), buf, cap - 1, &vl);
    buf[rc == 0 ? vl : 0] = '\0';
    return rc;
}

static uint64_t used_blocks(shmds_region *r)
{
    shmds_alloc_stats s;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &s), 0);
    return s.used_blocks;
}

static uint64_t fake_ms = 1000000;
static uint64_t fake_clock(void)
{
    return fake_ms;
}

/* ---- core ---- */

/* Closing a NULL handle is a no-op for every structure, as documented (a
 * clean-up path may close what it never opened). */
START_TEST(test_map_close_null_is_a_no_op)
{
    shmds_map_close(NULL);
    shmds_list_close(NULL);
    shmds_queue_close(NULL);
}
END_TEST

static int count_entry(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    (void)k, (void)kl, (void)v, (void)vl;
    ++*(int *)arg;
    return 0;
}

/* One NULL-handle policy for every module: a NULL map is -EINVAL for every
 * call (it used to be dereferenced), as a NULL list or queue is. */
START_TEST(test_map_null_handle_is_einval)
{
    shmds_map_stats st;
    uint64_t n;
    int64_t v;
    char buf[8];
    int calls = 0;
    ck_assert_int_eq(shmds_map_put(NULL, "k", 1, "v", 1, 0, 0), -EINVAL);
    ck_assert_int_eq(shmds_map_get(NULL, "k", 1, buf, sizeof buf, NULL), -EINVAL);
    ck_assert_int_eq(shmds_map_del(NULL, "k", 1), -EINVAL);
    ck_assert_int_eq(shmds_map_add(NULL, "k", 1, 1, &v), -EINVAL);
    ck_assert_int_eq(shmds_map_count(NULL, &n), -EINVAL);
    ck_assert_int_eq(shmds_map_foreach(NULL, count_entry, &calls), -EINVAL);
    ck_assert_int_eq(shmds_map_stats_get(NULL, &st), -EINVAL);
    ck_assert_int_eq(shmds_map_check(NULL), -EINVAL);
    ck_assert_int_eq(shmds_map_destroy(NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_destroy(NULL), -EINVAL);
    ck_assert_int_eq(shmds_queue_destroy(NULL), -EINVAL);
    ck_assert_int_eq(shmds_region_check(NULL), -EINVAL);
    ck_assert_int_eq(shmds_root_foreach(NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(calls, 0);
}
END_TEST

START_TEST(test_map_put_get_del_and_flags)
{
    shmds_region *r = region(4 * MB);
    shmds_map *m = mk(r, "m", 0, 0, 0, 0, 0);
    char buf[256];
    ck_assert_int_eq(gets_(m, "a", buf, sizeof buf), -ENOENT);
    ck_assert_int_eq(puts_(m, "a", "one", 0, 0), 0);
    ck_assert_int_eq(gets_(m, "a", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "one");
    ck_assert_int_eq(puts_(m, "a", "uno-longer-value", 0, 0), 0);
    ck_assert_int_eq(gets_(m, "a", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "uno-longer-value");
    /* NX / XX */
    ck_assert_int_eq(puts_(m, "a", "x", 0, SHMDS_PUT_NX), -EEXIST);
    ck_assert_int_eq(puts_(m, "b", "x", 0, SHMDS_PUT_XX), -ENOENT);
    ck_assert_int_eq(gets_(m, "b", buf, sizeof buf), -ENOENT);
    ck_assert_int_eq(puts_(m, "b", "bee", 0, SHMDS_PUT_NX), 0);
    ck_assert_int_eq(puts_(m, "b", "bee2", 0, SHMDS_PUT_XX), 0);
    ck_assert_int_eq(gets_(m, "b", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "bee2");
    ck_assert_int_eq(puts_(m, "b", "z", 0, SHMDS_PUT_NX | SHMDS_PUT_XX), -EINVAL);
    ck_assert_int_eq(shmds_map_put(m, "k", 0, "v", 1, 0, 0), -EINVAL);
    /* small buffer: -ENOBUFS with the length, value kept */
    size_t vl = 0;
    ck_assert_int_eq(shmds_map_get(m, "a", 1, buf, 3, &vl), -ENOBUFS);
    ck_assert_uint_eq(vl, strlen("uno-longer-value"));
    /* empty value, binary key with NULs, big value */
    ck_assert_int_eq(shmds_map_put(m, "e", 1, NULL, 0, 0, 0), 0);
    ck_assert_int_eq(shmds_map_get(m, "e", 1, NULL, 0, &vl), 0);
    ck_assert_uint_eq(vl, 0);
    const char bk[4] = {0, 1, 0, 2};
    ck_assert_int_eq(shmds_map_put(m, bk, 4, "bin", 3, 0, 0), 0);
    ck_assert_int_eq(shmds_map_get(m, bk, 3, buf, sizeof buf, &vl), -ENOENT);
    size_t big = 300000;
    char *bv = malloc(big), *bo = malloc(big);
    for (size_t i = 0; i < big; i++)
        bv[i] = (char)(i * 7);
    ck_assert_int_eq(shmds_map_put(m, "big", 3, bv, big, 0, 0), 0);
    ck_assert_int_eq(shmds_map_get(m, "big", 3, bo, big, &vl), 0);
    ck_assert_uint_eq(vl, big);
    ck_assert_int_eq(memcmp(bv, bo, big), 0);
    free(bv);
    free(bo);
    /* del */
    ck_assert_int_eq(shmds_map_del(m, "a", 1), 0);
    ck_assert_int_eq(shmds_map_del(m, "a", 1), -ENOENT);
    ck_assert_int_eq(gets_(m, "a", buf, sizeof buf), -ENOENT);
    uint64_t n;
    ck_assert_int_eq(shmds_map_count(m, &n), 0);
    ck_assert_uint_eq(n, 4);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.entries, 4);
    ck_assert_uint_eq(st.inserts, 5);
    ck_assert_uint_eq(st.deletes, 1);
    ck_assert_uint_ge(st.hits, 4);
    ck_assert_uint_ge(st.misses, 3);
    ck_assert_int_eq(shmds_map_check(m), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_map_close(m);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

START_TEST(test_map_add_is_a_counter)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "c", 0, 0, 4, 0, 0);
    int64_t v = 0;
    ck_assert_int_eq(shmds_map_add(m, "n", 1, 5, &v), 0);
    ck_assert_int_eq(v, 5);
    ck_assert_int_eq(shmds_map_add(m, "n", 1, -7, &v), 0);
    ck_assert_int_eq(v, -2);
    int64_t raw;
    size_t vl;
    ck_assert_int_eq(shmds_map_get(m, "n", 1, &raw, sizeof raw, &vl), 0);
    ck_assert_uint_eq(vl, 8);
    ck_assert_int_eq(raw, -2);
    ck_assert_int_eq(puts_(m, "s", "text", 0, 0), 0);
    ck_assert_int_eq(shmds_map_add(m, "s", 1, 1, &v), -EINVAL);
    ck_assert_int_eq(shmds_map_add(m, "n", 1, INT64_MIN, &v), -EOVERFLOW);
    ck_assert_int_eq(shmds_map_add(m, "n", 1, 0, &v), 0);
    ck_assert_int_eq(v, -2);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_map_ttl_expires_with_injected_clock)
{
    shmds__map_set_clock(fake_clock);
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "t", 0, 0, 2, 0, 0);
    char buf[64];
    ck_assert_int_eq(puts_(m, "short", "s", 5, 0), 0);
    ck_assert_int_eq(puts_(m, "forever", "f", 0, 0), 0);
    fake_ms += 4999;
    ck_assert_int_eq(gets_(m, "short", buf, sizeof buf), 0);
    fake_ms += 1;
    ck_assert_int_eq(gets_(m, "short", buf, sizeof buf), -ENOENT);
    ck_assert_int_eq(gets_(m, "forever", buf, sizeof buf), 0);
    /* an expired key is absent for NX and XX, and is reclaimed */
    ck_assert_int_eq(puts_(m, "short", "again", 0, SHMDS_PUT_XX), -ENOENT);
    ck_assert_int_eq(puts_(m, "short", "again", 0, SHMDS_PUT_NX), 0);
    ck_assert_int_eq(gets_(m, "short", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "again");
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.expirations, 1);
    ck_assert_uint_eq(st.entries, 2);
    shmds_map_close(m);

    /* the map default applies to ttl 0; writes sweep expired entries */
    m = mk(r, "d", 0, 0, 1, 10, 0);
    char k[16];
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "k%d", i);
        ck_assert_int_eq(puts_(m, k, "v", 0, 0), 0);
    }
    fake_ms += 10000;
    for (int i = 0; i < 50; i++) {
        snprintf(k, sizeof k, "k%d", i);
        ck_assert_int_eq(gets_(m, k, buf, sizeof buf), -ENOENT);
    }
    /* every write sweeps one bucket: a bounded number of writes reaps all */
    for (int i = 0; i < 200; i++)
        ck_assert_int_eq(puts_(m, "w", "x", 1000, 0), 0);
    uint64_t n;
    ck_assert_int_eq(shmds_map_count(m, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
    shmds__map_set_clock(NULL);
}
END_TEST

/* Grow from a 16-bucket table to N entries; every key readable throughout
 * (sampled) and at the end. */
static void grow_and_check(uint32_t stripes, int N)
{
    shmds_region *r = region((size_t)shmds_map_size_hint((uint64_t)N, 12, 8));
    shmds_map *m = mk(r, "g", 1, 0, stripes, 0, 0);
    char k[32];
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key-%08d", i);
        int64_t v = i;
        ck_assert_int_eq(shmds_map_put(m, k, strlen(k), &v, 8, 0, 0), 0);
        if (i % 997 == 0) {
            int j = i / 2;
            snprintf(k, sizeof k, "key-%08d", j);
            ck_assert_int_eq(shmds_map_get(m, k, strlen(k), &v, 8, NULL), 0);
            ck_assert_int_eq(v, j);
        }
    }
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key-%08d", i);
        int64_t v = -1;
        ck_assert_int_eq(shmds_map_get(m, k, strlen(k), &v, 8, NULL), 0);
        ck_assert_int_eq(v, i);
    }
    shmds_map_stats st;
    shmds_map_stats_get(m, &st);
    ck_assert_uint_eq(st.entries, (uint64_t)N);
    ck_assert_uint_ge(st.buckets, (uint64_t)N / 2);
    ck_assert_int_eq(shmds_map_check(m), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}

START_TEST(test_map_grows_from_tiny_to_large)
{
    grow_and_check(0, 200000);
}
END_TEST

START_TEST(test_map_grows_with_one_stripe)
{
    grow_and_check(1, 50000);
}
END_TEST

struct fe {
    int n;
    long sum;
};
static int fe_fn(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    struct fe *f = arg;
    int64_t x;
    ck_assert_uint_eq(vl, 8);
    memcpy(&x, v, 8);
    ck_assert_int_eq(kl, strlen("f-000"));
    ck_assert_int_eq(memcmp(k, "f-", 2), 0);
    f->n++;
    f->sum += x;
    return 0;
}
static int stop_fn(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    return 42;
}

START_TEST(test_map_foreach_sees_every_entry)
{
    shmds_region *r = region(2 * MB);
    shmds_map *m = mk(r, "f", 4, 0, 8, 0, 0);
    char k[16];
    long want = 0;
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "f-%03d", i);
        ck_assert_int_eq(shmds_map_add(m, k, strlen(k), i, NULL), 0);
        want += i;
    }
    struct fe f = {0, 0};
    ck_assert_int_eq(shmds_map_foreach(m, fe_fn, &f), 0);
    ck_assert_int_eq(f.n, 500);
    ck_assert_int_eq(f.sum, want);
    ck_assert_int_eq(shmds_map_foreach(m, stop_fn, NULL), 42);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_map_open_by_name_and_types)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "named", 0, 0, 0, 0, 0);
    ck_assert_int_eq(puts_(m, "k", "v", 0, 0), 0);
    shmds_map *m2 = NULL;
    ck_assert_int_eq(shmds_map_create(r, "named", NULL, &m2), -EEXIST);
    ck_assert_int_eq(shmds_map_open(r, "nothere", &m2), -ENOENT);
    ck_assert_int_eq(shmds_root_set(r, "user", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    ck_assert_int_eq(shmds_map_open(r, "user", &m2), SHMDS_ETYPE);
    ck_assert_int_eq(shmds_map_open(r, "named", &m2), 0);
    char buf[8];
    ck_assert_int_eq(gets_(m2, "k", buf, sizeof buf), 0);
    shmds_map_close(m2);
    shmds_map_opts bad = {0, 0, SHMDS_MAP_STRIPES_MAX + 1, 0, 0, 0};
    ck_assert_int_eq(shmds_map_create(r, "bad", &bad, &m2), -EINVAL);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_map_readonly_region_gets_without_locks)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "ro", 0, 0, 0, 0, 0);
    shmds_map *me = mk(r, "ev", 0, 4096, 0, 0, SHMDS_MAP_EVICT);
    ck_assert_int_eq(puts_(m, "k", "v", 0, 0), 0);
    ck_assert_int_eq(puts_(me, "k", "v", 0, 0), 0);
    shmds_region *ro = NULL;
    ck_assert_int_eq(shmds_region_open(rname, SHMDS_RDONLY, &ro), 0);
    shmds_map *mr = NULL, *mer = NULL;
    ck_assert_int_eq(shmds_map_open(ro, "ro", &mr), 0);
    ck_assert_int_eq(shmds_map_open(ro, "ev", &mer), 0);
    char buf[8];
    ck_assert_int_eq(gets_(mr, "k", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "v");
    ck_assert_int_eq(gets_(mr, "zz", buf, sizeof buf), -ENOENT);
    /* Evicting maps too: gets take no lock. */
    ck_assert_int_eq(gets_(mer, "k", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "v");
    ck_assert_int_eq(gets_(mer, "zz", buf, sizeof buf), -ENOENT);
    ck_assert_int_eq(puts_(mr, "k", "w", 0, 0), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_map_del(mr, "k", 1), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_map_add(mr, "n", 1, 1, NULL), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_map_check(mr), SHMDS_ERDONLY);
    struct fe f = {0, 0};
    ck_assert_int_eq(shmds_map_foreach(mr, stop_fn, &f), 42);
    shmds_map_close(mr);
    shmds_map_close(mer);
    ck_assert_int_eq(shmds_region_close(ro), 0);
    shmds_map_close(m);
    shmds_map_close(me);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_map_destroy_frees_everything)
{
    shmds_region *r = region(4 * MB);
    uint64_t before = used_blocks(r);
    shmds_map *m = mk(r, "x", 1, 0, 4, 0, 0);
    char k[16];
    for (int i = 0; i < 3000; i++) {
        snprintf(k, sizeof k, "%d", i);
        ck_assert_int_eq(puts_(m, k, "value", 0, 0), 0);
    }
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    ck_assert_uint_eq(used_blocks(r), before);
    ck_assert_int_eq(shmds_map_open(r, "x", &m), -ENOENT);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_map_budget_without_evict_is_enomem)
{
    shmds_region *r = region(2 * MB);
    shmds_map *m = mk(r, "b", 0, 10000, 1, 0, 0);
    char k[16], v[100];
    memset(v, 'v', sizeof v);
    int stored = 0, rc = 0;
    for (int i = 0; i < 1000 && rc == 0; i++) {
        snprintf(k, sizeof k, "%d", i);
        rc = shmds_map_put(m, k, strlen(k), v, sizeof v, 0, 0);
        stored += rc == 0;
    }
    ck_assert_int_eq(rc, -ENOMEM);
    shmds_map_stats st;
    shmds_map_stats_get(m, &st);
    ck_assert_uint_eq(st.entries, (uint64_t)stored);
    ck_assert_uint_le(st.mem_used - 8 * st.buckets, 10000);
    /* a delete makes room again */
    ck_assert_int_eq(shmds_map_del(m, "0", 1), 0);
    ck_assert_int_eq(shmds_map_put(m, k, strlen(k), v, sizeof v, 0, 0), 0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_map_budget_evicts_cold_entries_first)
{
    shmds_region *r = region(4 * MB);
    shmds_map *m = mk(r, "e", 0, 64 * 1024, 4, 0, SHMDS_MAP_EVICT);
    char k[16], v[100], buf[128];
    memset(v, 'v', sizeof v);
    /* hot keys, read after every insert, must survive a stream of cold ones */
    for (int i = 0; i < 20; i++) {
        snprintf(k, sizeof k, "hot%d", i);
        ck_assert_int_eq(shmds_map_put(m, k, strlen(k), v, sizeof v, 0, 0), 0);
    }
    for (int i = 0; i < 5000; i++) {
        snprintf(k, sizeof k, "cold%d", i);
        ck_assert_int_eq(shmds_map_put(m, k, strlen(k), v, sizeof v, 0, 0), 0);
        for (int j = 0; j < 20; j++) {
            snprintf(k, sizeof k, "hot%d", j);
            ck_assert_int_eq(gets_(m, k, buf, sizeof buf), 0);
        }
    }
    shmds_map_stats st;
    shmds_map_stats_get(m, &st);
    ck_assert_uint_gt(st.evictions, 4000);
    ck_assert_uint_le(st.mem_used - 8 * st.buckets, 64 * 1024);
    ck_assert_uint_eq(st.entries + st.evictions, 5020);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_map_evicts_when_heap_is_full)
{
    shmds_region *r = region(256 * 1024);
    /* A budget larger than the heap: the heap fills first. */
    shmds_map *m = mk(r, "h", 0, 1024 * 1024, 2, 0, SHMDS_MAP_EVICT);
    char k[16], v[1000];
    memset(v, 'x', sizeof v);
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "%d", i);
        ck_assert_int_eq(shmds_map_put(m, k, strlen(k), v, sizeof v, 0, 0), 0);
    }
    shmds_map_stats st;
    shmds_map_stats_get(m, &st);
    ck_assert_uint_gt(st.evictions, 1000);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* Damaged links read from the region are SHMDS_ECORRUPT for every call,
 * lock-free gets included, never a crash or a hang, and the map works
 * again once they are put back. */
START_TEST(test_map_damaged_chains_are_ecorrupt)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "d", 0, 0, 1, 0, 0);
    char buf[8], k[16];
    ck_assert_int_eq(puts_(m, "a", "1", 0, 0), 0);
    uint64_t *slot = shmds__map_slot(m, "a", 1);
    ck_assert_ptr_nonnull(slot);
    const uint64_t w = *slot, eo = w & SHMDS__MAP_LINK_OFF_MASK, all = ~SHMDS__MAP_LINK_OFF_MASK;
    ck_assert_uint_ne(eo, 0);
    /* a key that shares the bucket, absent */
    int i = 0;
    do
        snprintf(k, sizeof k, "b%d", i++);
    while (shmds__map_slot(m, k, strlen(k)) != slot);
    /* bad offsets behind a filter that lets every key in */
    const uint64_t bad[] = {8 | all, (eo + 8) | all, (r->size - 16) | all, UINT64_MAX - 15};
    for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
        *slot = bad[j];
        ck_assert_int_eq(gets_(m, "a", buf, sizeof buf), SHMDS_ECORRUPT);
        ck_assert_int_eq(puts_(m, "a", "2", 0, 0), SHMDS_ECORRUPT);
        ck_assert_int_eq(shmds_map_del(m, "a", 1), SHMDS_ECORRUPT);
        ck_assert_int_eq(shmds_map_check(m), SHMDS_ECORRUPT);
    }
    /* a filter that lost the key's bit hides it from gets: the check
     * reports it */
    *slot = eo;
    ck_assert_int_eq(gets_(m, "a", buf, sizeof buf), -ENOENT);
    ck_assert_int_eq(shmds_map_check(m), SHMDS_ECORRUPT);
    *slot = w;
    ck_assert_int_eq(shmds_map_check(m), 0);
    /* a chain that loops on itself: the walk is capped */
    *slot = w | all;
    uint64_t *next = shmds_ptr(r, eo); /* an entry's next link is its first word */
    *next = eo;
    ck_assert_int_eq(gets_(m, k, buf, sizeof buf), SHMDS_ECORRUPT);
    ck_assert_int_eq(puts_(m, k, "2", 0, 0), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_map_check(m), SHMDS_ECORRUPT);
    *next = 0;
    *slot = w;
    ck_assert_int_eq(shmds_map_check(m), 0);
    ck_assert_int_eq(gets_(m, "a", buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "1");
    ck_assert_int_eq(gets_(m, k, buf, sizeof buf), -ENOENT);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* The map's bucket table: the header's words at offsets 72 (table) and 88
 * (log2 of its buckets), the format map.c asserts. */
static uint64_t *map_table(shmds_region *r, const char *name, uint64_t *nb)
{
    uint32_t type;
    shmds_off_t off;
    ck_assert_int_eq(shmds_root_get(r, name, &type, &off), 0);
    unsigned char *h = shmds_ptr(r, shmds__hdr_of(off));
    uint64_t tab;
    uint32_t bits;
    memcpy(&tab, h + 72, 8);
    memcpy(&bits, h + 88, 4);
    *nb = (uint64_t)1 << bits;
    return shmds_ptr(r, tab);
}

static int count_fn(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    (void)k, (void)kl, (void)v, (void)vl;
    ++*(uint64_t *)arg;
    return 0;
}

static int foreach_child(void *arg)
{
    uint64_t n = 0;
    return shmds_map_foreach(arg, count_fn, &n) == SHMDS_ECORRUPT ? 0 : 1;
}

/* A damaged map whose every bucket (2^16) points into one chain of 30 000
 * expired entries (each chain under the per-chain cap): foreach walked
 * buckets x chain, 2 * 10^9 steps. The walk's total is capped by what the
 * heap can hold: SHMDS_ECORRUPT at once (a child, so a hang is seen). */
START_TEST(test_map_foreach_over_one_shared_chain_is_bounded)
{
    shmds_region *r = region(8 * MB);
    shmds__map_set_clock(fake_clock);
    shmds_map *m = mk(r, "w", 30000, 0, 1, 0, 0);
    const uint64_t N = 30000;
    for (uint64_t i = 0; i < N; i++) {
        char k[16];
        snprintf(k, sizeof k, "%" PRIu64, i);
        ck_assert_int_eq(shmds_map_put(m, k, strlen(k), "v", 1, 1, 0), 0);
    }
    fake_ms += 5000;
    uint64_t nb, *tab = map_table(r, "w", &nb), *chain = malloc(N * sizeof *chain), n = 0;
    ck_assert_ptr_nonnull(chain);
    for (uint64_t b = 0; b < nb; b++)
        for (uint64_t o = tab[b] & SHMDS__MAP_LINK_OFF_MASK; o != 0; o = *(uint64_t *)shmds_ptr(r, o))
            chain[n++] = o;
    ck_assert_uint_eq(n, N);
    for (uint64_t i = 0; i < N; i++)
        *(uint64_t *)shmds_ptr(r, chain[i]) = i + 1 < N ? chain[i + 1] : 0;
    for (uint64_t b = 0; b < nb; b++)
        tab[b] = chain[0];
    free(chain);
    int st = tu_wait(tu_fork(foreach_child, m), 20000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "foreach over a shared chain: %s",
                  st == -1 ? "still walking after 20 s" : "not SHMDS_ECORRUPT");
    shmds__map_set_clock(NULL);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* Flips the value length of one entry between its own and one that points
 * far outside the region, until told to stop: what damage, a co-tenant or
 * a block reused under a lock-free reader looks like. */
struct flipper {
    uint64_t *vlen;
    int stop;
};

/* Valgrind runs the flipping thread and the readers one at a time, ~50x
 * slower: there the race gets a hundredth of the passes. */
#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static void *flip_length(void *arg)
{
    struct flipper *f = arg;
    while (!__atomic_load_n(&f->stop, __ATOMIC_RELAXED)) {
        __atomic_store_n(f->vlen, UINT64_C(1) << 44, __ATOMIC_RELAXED);
        __atomic_store_n(f->vlen, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int value_is_v(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    (void)k, (void)kl;
    if (vl != 1 || memcmp(v, "v", 1) != 0)
        ++*(uint64_t *)arg;
    return 0;
}

/* Lock-free readers (get, foreach) on a read-only attach while another
 * thread keeps changing an entry's value length under them: each length is
 * read once, checked and used, so the readers see an error or the true
 * value, never a copy from outside the region (they used to check the
 * lengths, then read them again for the copy: SIGSEGV). */
START_TEST(test_map_readers_use_the_lengths_they_checked)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "f", 64, 0, 1, 0, 0);
    for (unsigned i = 0; i < 64; i++) {
        char k[16];
        snprintf(k, sizeof k, "%u", i);
        ck_assert_int_eq(shmds_map_put(m, k, strlen(k), "v", 1, 0, 0), 0);
    }
    uint64_t *slot = shmds__map_slot(m, "7", 1), eo = *slot & SHMDS__MAP_LINK_OFF_MASK;
    while (eo != 0 && memcmp((char *)shmds_ptr(r, eo) + 64 + 1, "7", 1) != 0) /* 64-byte header */
        eo = *(uint64_t *)shmds_ptr(r, eo); /* struct entry: next, then value, key */
    ck_assert_uint_ne(eo, 0);
    struct flipper f = {(uint64_t *)shmds_ptr(r, eo + 24), 0}; /* struct entry: vlen */
    shmds_region *ro;
    shmds_map *mr;
    ck_assert_int_eq(shmds_region_open(rname, SHMDS_RDONLY, &ro), 0);
    ck_assert_int_eq(shmds_map_open(ro, "f", &mr), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, flip_length, &f), 0);
    uint64_t bad = 0;
    unsigned passes = RUNNING_ON_VALGRIND ? 2000u : 200000u;
    for (unsigned pass = 0; pass < passes; pass++) {
        char v[8];
        size_t vl = 0;
        int rc = shmds_map_get(mr, "7", 1, v, sizeof v, &vl);
        ck_assert_msg(rc == SHMDS_ECORRUPT || rc == -ENOBUFS || (rc == 0 && vl == 1 && v[0] == 'v'),
                      "get: %s", shmds_errname(rc));
        if (pass % 64 == 0) {
            rc = shmds_map_foreach(mr, value_is_v, &bad);
            ck_assert_msg(rc == 0 || rc == SHMDS_ECORRUPT, "foreach: %s", shmds_errname(rc));
        }
    }
    __atomic_store_n(&f.stop, 1, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    ck_assert_uint_eq(bad, 0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(mr);
    shmds_region_close(ro);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* Sizes that wrap an entry size (64 + klen + vlen + 15) or cannot fit any
 * region: the entry size used to wrap to a small block, the put returned 0
 * and the map and heap were corrupt for every process. Now -E2BIG before
 * anything is read or changed; the region checks healthy and the other
 * keys read back. */
START_TEST(test_map_sizes_that_overflow_are_e2big)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "z", 0, 0, 1, 0, 0);
    shmds_map *mb = mk(r, "zb", 0, UINT64_MAX, 1, 0, SHMDS_MAP_EVICT);
    char buf[8];
    ck_assert_int_eq(puts_(m, "keep", "1", 0, 0), 0);
    ck_assert_int_eq(puts_(mb, "keep", "2", 0, 0), 0);
    uint64_t blocks = used_blocks(r);
    /* The key and value buffers are short: nothing may read them past
     * what the sizes could legally cover. */
    static const char k[] = "k", v[] = "v";
    for (size_t i = 0; i < TU_HUGE_SIZES; i++) {
        size_t n = tu_huge_sizes[i];
        ck_assert_int_eq(shmds_map_put(m, k, 1, v, n, 0, 0), -E2BIG);
        ck_assert_int_eq(shmds_map_put(m, k, n, v, 1, 0, 0), -E2BIG);
        ck_assert_int_eq(shmds_map_put(m, k, n, v, n, 0, 0), -E2BIG);
        ck_assert_int_eq(shmds_map_put(mb, k, 1, v, n, 0, 0), -E2BIG);
        ck_assert_int_eq(shmds_map_get(m, k, n, buf, sizeof buf, NULL), -E2BIG);
        ck_assert_int_eq(shmds_map_del(m, k, n), -E2BIG);
        ck_assert_int_eq(shmds_map_add(m, k, n, 1, NULL), -E2BIG);
        /* A value of exactly what cannot fit beside the key. */
        ck_assert_int_eq(shmds_map_put(m, k, 1, v, r->heap_max - r->heap_off, 0, 0), -E2BIG);
        shmds_map *m2 = NULL;
        shmds_map_opts o = {.capacity = n};
        int rc = shmds_map_create(r, "z2", &o, &m2);
        ck_assert_msg(rc == -EINVAL || rc == -ENOMEM, "capacity %zx: %s", n, shmds_errname(rc));
        if (n >= SIZE_MAX / 2) { /* no region that large: saturates */
            ck_assert_uint_eq(shmds_map_size_hint(n, 8, 8), UINT64_MAX);
            ck_assert_uint_eq(shmds_map_size_hint(1000, n, 8), UINT64_MAX);
            ck_assert_uint_eq(shmds_map_size_hint(1000, 8, n), UINT64_MAX);
        } else {
            ck_assert_uint_gt(shmds_map_size_hint(1000, 8, n), 1000 * (uint64_t)n);
        }
        ck_assert_int_eq(shmds_region_check(r), 0);
        ck_assert_uint_eq(used_blocks(r), blocks);
        ck_assert_int_eq(gets_(m, "keep", buf, sizeof buf), 0);
        ck_assert_str_eq(buf, "1");
        ck_assert_int_eq(gets_(mb, "keep", buf, sizeof buf), 0);
        ck_assert_str_eq(buf, "2");
    }
    /* A size hint that fits 64 bits grows with what it is asked for. */
    ck_assert_uint_lt(shmds_map_size_hint(1000, 8, 8), shmds_map_size_hint(1000, 8, UINT32_MAX));
    ck_assert_uint_lt(shmds_map_size_hint(1000, 8, UINT32_MAX), UINT64_MAX);
    ck_assert_int_eq(shmds_map_check(m), 0);
    ck_assert_int_eq(shmds_map_check(mb), 0);
    shmds_map_close(mb);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_map_size_hint_is_enough)
{
    uint64_t n = 100000;
    shmds_region *r = region((size_t)shmds_map_size_hint(n, 16, 8));
    shmds_map *m = mk(r, "s", 0, 0, 0, 0, 0);
    char k[17];
    for (uint64_t i = 0; i < n; i++) {
        snprintf(k, sizeof k, "%016" PRIu64, i);
        ck_assert_int_eq(shmds_map_put(m, k, 16, &i, 8, 0, 0), 0);
    }
    ck_assert_uint_gt(shmds_map_size_hint(n, 16, 8), n * 24);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* ---- multiprocess ---- */

#define MP_N 20000
static int mp_child(void *arg)
{
    int id = (int)(intptr_t)arg;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "mp", &m) != 0)
        return 10;
    char k[32], v[32];
    for (int i = 0; i < MP_N; i++) {
        snprintf(k, sizeof k, "ctr%d", i % 50);
        if (shmds_map_add(m, k, strlen(k), 1, NULL) < 0)
            return 11;
        snprintf(k, sizeof k, "shared%d", i % 300);
        snprintf(v, sizeof v, "%d:%d", id, i);
        if (shmds_map_put(m, k, strlen(k), v, strlen(v), 0, 0) < 0)
            return 12;
        snprintf(k, sizeof k, "own%d-%d", id, i);
        if (shmds_map_put(m, k, strlen(k), v, strlen(v), 0, 0) < 0)
            return 13;
        if (i % 3 == 0) {
            snprintf(k, sizeof k, "own%d-%d", id, i / 2);
            int rc = shmds_map_del(m, k, strlen(k));
            if (rc < 0 && rc != -ENOENT)
                return 14;
        }
    }
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

START_TEST(test_map_two_processes_overlapping_keys_match_model)
{
    shmds_region *r = region(16 * MB);
    shmds_map *m = mk(r, "mp", 16, 0, 16, 0, 0);
    pid_t a = tu_fork(mp_child, (void *)(intptr_t)1);
    pid_t b = tu_fork(mp_child, (void *)(intptr_t)2);
    int sa = tu_wait(a, 60000), sb = tu_wait(b, 60000);
    ck_assert_msg(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "child a: %d", sa);
    ck_assert_msg(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "child b: %d", sb);
    char k[32], buf[64];
    for (int c = 0; c < 50; c++) {
        snprintf(k, sizeof k, "ctr%d", c);
        int64_t v;
        ck_assert_int_eq(shmds_map_get(m, k, strlen(k), &v, 8, NULL), 0);
        ck_assert_int_eq(v, 2 * MP_N / 50);
    }
    for (int s = 0; s < 300; s++) {
        snprintf(k, sizeof k, "shared%d", s);
        ck_assert_int_eq(gets_(m, k, buf, sizeof buf), 0);
        int last = MP_N - 1 - ((MP_N - 1 - s) % 300);
        char wa[32], wb[32];
        snprintf(wa, sizeof wa, "1:%d", last);
        snprintf(wb, sizeof wb, "2:%d", last);
        ck_assert_msg(strcmp(buf, wa) == 0 || strcmp(buf, wb) == 0, "%s: %s", k, buf);
    }
    /* own keys: model of puts and deletes */
    uint64_t want = 50 + 300;
    for (int id = 1; id <= 2; id++) {
        for (int i = 0; i < MP_N; i++) {
            /* iteration j (a multiple of 3) deletes own key j/2, put earlier */
            bool deleted = ((2 * i) % 3 == 0 && 2 * i < MP_N) ||
                           ((2 * i + 1) % 3 == 0 && 2 * i + 1 < MP_N);
            snprintf(k, sizeof k, "own%d-%d", id, i);
            int rc = gets_(m, k, buf, sizeof buf);
            ck_assert_int_eq(rc, deleted ? -ENOENT : 0);
            want += !deleted;
        }
    }
    uint64_t n;
    ck_assert_int_eq(shmds_map_count(m, &n), 0);
    ck_assert_uint_eq(n, want);
    ck_assert_int_eq(shmds_map_check(m), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* One process grows the map (many rehashes) while another reads and writes. */
#define RH_N 60000
static int rh_writer(void *arg)
{
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "rh", &m) != 0)
        return 10;
    char k[32];
    for (int64_t i = 0; i < RH_N; i++) {
        snprintf(k, sizeof k, "w%" PRId64, i);
        if (shmds_map_put(m, k, strlen(k), &i, 8, 0, 0) < 0)
            return 11;
    }
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}
static int rh_reader(void *arg)
{
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "rh", &m) != 0)
        return 10;
    char k[32];
    for (int64_t i = 0; i < RH_N / 4; i++) {
        snprintf(k, sizeof k, "r%" PRId64, i);
        if (shmds_map_put(m, k, strlen(k), &i, 8, 0, 0) < 0)
            return 11;
        for (int64_t j = i; j >= 0 && j > i - 8; j--) {
            int64_t v = -1;
            snprintf(k, sizeof k, "r%" PRId64, j);
            if (shmds_map_get(m, k, strlen(k), &v, 8, NULL) != 0 || v != j)
                return 12;
            /* the writer's keys: absent, or with the right value */
            snprintf(k, sizeof k, "w%" PRId64, j * 3);
            int rc = shmds_map_get(m, k, strlen(k), &v, 8, NULL);
            if ((rc != 0 && rc != -ENOENT) || (rc == 0 && v != j * 3))
                return 13;
        }
    }
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

START_TEST(test_map_rehash_while_another_process_reads_and_writes)
{
    shmds_region *r = region(32 * MB);
    shmds_map *m = mk(r, "rh", 1, 0, 8, 0, 0);
    pid_t a = tu_fork(rh_writer, NULL), b = tu_fork(rh_reader, NULL);
    int sa = tu_wait(a, 60000), sb = tu_wait(b, 60000);
    ck_assert_msg(WIFEXITED(sa) && WEXITSTATUS(sa) == 0, "writer: %d", sa);
    ck_assert_msg(WIFEXITED(sb) && WEXITSTATUS(sb) == 0, "reader: %d", sb);
    uint64_t n;
    ck_assert_int_eq(shmds_map_count(m, &n), 0);
    ck_assert_uint_eq(n, RH_N + RH_N / 4);
    shmds_map_stats st;
    shmds_map_stats_get(m, &st);
    ck_assert_uint_ge(st.buckets, 32768);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* ---- crash ---- */

/* The writer's deterministic op sequence: op j is one of put (value of a
 * length and content derived from j), del, or add 1 to a counter. */
#define CK 400 /* data keys */
#define CC 8   /* counters */
static int op_kind(uint32_t j)
{
    uint32_t x = (j * 2654435761u) >> 28;
    return x < 9 ? 0 : x < 12 ? 1 : 2; /* put, del, add */
}
static void op_key(uint32_t j, char *k, size_t cap)
{
    if (op_kind(j) == 2)
        snprintf(k, cap, "ctr%u", (j * 7u) % CC);
    else
        snprintf(k, cap, "key%u", (j * 40503u) % CK);
}
static size_t op_val(uint32_t j, char *v)
{
    size_t n = 1 + (j * 31u) % 300;
    for (size_t i = 0; i < n; i++)
        v[i] = (char)('a' + (j + i) % 26);
    return n;
}

struct model {
    int32_t len[CK]; /* -1 absent, else value of op j = val_of[] */
    uint32_t val_of[CK];
    int64_t ctr[CC];
};

static int crash_writer(void *arg)
{
    tu_chan *c = arg;
    uint32_t j;
    if (read(c->rd, &j, sizeof j) != sizeof j)
        return 20;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "cr", &m) != 0)
        return 21;
    char k[32], v[400];
    for (;; j++) {
        op_key(j, k, sizeof k);
        int rc;
        switch (op_kind(j)) {
        case 0:
            rc = shmds_map_put(m, k, strlen(k), v, op_val(j, v), 0, 0);
            break;
        case 1:
            rc = shmds_map_del(m, k, strlen(k));
            rc = rc == -ENOENT ? 0 : rc;
            break;
        default:
            rc = shmds_map_add(m, k, strlen(k), 1, NULL);
            break;
        }
        if (rc < 0)
            return 22;
        tu_send(c, &j, sizeof j); /* acknowledged only after the call returned */
    }
}

static void model_apply(struct model *md, uint32_t j)
{
    char k[32];
    op_key(j, k, sizeof k);
    if (op_kind(j) == 2) {
        md->ctr[(j * 7u) % CC]++;
        return;
    }
    uint32_t i = (j * 40503u) % CK;
    if (op_kind(j) == 1) {
        md->len[i] = -1;
    } else {
        char v[400];
        md->len[i] = (int32_t)op_val(j, v);
        md->val_of[i] = j;
    }
}

/* Does the map agree with the model for the key op j touches? */
static bool model_matches(shmds_map *m, const struct model *md, uint32_t j)
{
    char k[32], v[400], want[400];
    op_key(j, k, sizeof k);
    size_t vl = 0;
    if (op_kind(j) == 2) {
        int64_t x;
        int rc = shmds_map_get(m, k, strlen(k), &x, 8, &vl);
        int64_t w = md->ctr[(j * 7u) % CC];
        return w == 0 ? (rc == -ENOENT) : (rc == 0 && x == w);
    }
    uint32_t i = (j * 40503u) % CK;
    int rc = shmds_map_get(m, k, strlen(k), v, sizeof v, &vl);
    if (md->len[i] < 0)
        return rc == -ENOENT;
    return rc == 0 && vl == (size_t)op_val(md->val_of[i], want) && memcmp(v, want, vl) == 0;
}

START_TEST(test_map_writers_killed_at_random_keep_acknowledged_writes)
{
    shmds_region *r = region(8 * MB);
    uint64_t base_blocks = used_blocks(r);
    shmds_map *m = mk(r, "cr", 4, 0, 4, 0, 0);
    static struct model md;
    memset(&md, 0, sizeof md);
    for (int i = 0; i < CK; i++)
        md.len[i] = -1;
    uint32_t next = 0;
    srand(12345);
    /* 250 rounds, and more (up to 2000) until a kill has landed inside a
     * lock, so the repair is exercised whatever the timing (valgrind). */
    shmds_map_stats st;
    for (int round = 0;
         round < 250 || (round < 2000 && shmds_map_stats_get(m, &st) == 0 && st.recoveries == 0);
         round++) {
        tu_chan c;
        tu_chan_open(&c);
        tu_chan cmd;
        tu_chan_open(&cmd);
        tu_chan both = {cmd.rd, c.wr}; /* the writer reads cmd, writes acks */
        pid_t p = tu_fork(crash_writer, &both);
        tu_send(&cmd, &next, sizeof next);
        /* Start the random delay once the writer is at work (its first
         * acknowledgement), so that the kill lands in its loop however
         * slowly it starts (under valgrind, for one). */
        uint32_t j;
        ck_assert_int_eq(tu_recv(&c, &j, sizeof j), 1);
        ck_assert_uint_eq(j, next);
        model_apply(&md, j);
        next++;
        struct timespec ts = {0, (long)(rand() % 4000) * 1000L};
        nanosleep(&ts, NULL);
        tu_kill(p);
        close(c.wr);
        c.wr = -1;
        while (tu_recv(&c, &j, sizeof j) == 1) {
            ck_assert_uint_eq(j, next);
            model_apply(&md, j);
            next++;
        }
        close(c.rd);
        tu_chan_close(&cmd);
        /* The lock holder died: the next locker repairs; the map checks. */
        int rc = shmds_map_check(m);
        ck_assert_msg(rc == 0, "round %d: check %s", round, shmds_errname(rc));
        /* Op `next` was in flight: it happened entirely or not at all. */
        if (!model_matches(m, &md, next)) {
            model_apply(&md, next);
            ck_assert_msg(model_matches(m, &md, next), "round %d: op %u half done", round, next);
        }
        next++;
        for (uint32_t q = next - 50; q < next && round % 25 == 0; q++)
            ck_assert(model_matches(m, &md, q));
    }
    for (uint32_t q = 0; q < CK + CC; q++)
        ck_assert(model_matches(m, &md, q < CK ? q * 3 : q));
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_map_stats_get(m, &st);
    ck_assert_uint_gt(st.recoveries, 0);
    /* no leaked blocks: once the map is gone, the heap is back where it was */
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    ck_assert_uint_eq(used_blocks(r), base_blocks);
    shmds_region_close(r);
}
END_TEST

/* A child that counts 5 hits and 3 misses through its own handle and exits
 * without closing it, so the counter line it claimed has a dead owner. */
static int stats_child(void *arg)
{
    (void)arg;
    shmds_region *r = NULL;
    shmds_map *m = NULL;
    char buf[8];
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "st", &m) != 0)
        return 1;
    for (int i = 0; i < 5; i++)
        if (gets_(m, "a", buf, sizeof buf) != 0)
            return 2;
    for (int i = 0; i < 3; i++)
        if (gets_(m, "zz", buf, sizeof buf) != -ENOENT)
            return 3;
    return 0;
}

/* Gets count exactly whatever handle or process made them: more handles
 * than the map has counter lines, handles closed and reopened, and a
 * process that died holding its line (taken over with its counts kept). */
START_TEST(test_map_stats_add_up_over_handles_and_processes)
{
    enum { H = 40 };
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "st", 0, 0, 0, 0, 0);
    shmds_map *hs[H];
    char buf[8];
    ck_assert_int_eq(puts_(m, "a", "1", 0, 0), 0);
    for (int i = 0; i < H; i++) {
        ck_assert_int_eq(shmds_map_open(r, "st", &hs[i]), 0);
        ck_assert_int_eq(gets_(hs[i], "a", buf, sizeof buf), 0);
        ck_assert_int_eq(gets_(hs[i], "zz", buf, sizeof buf), -ENOENT);
        ck_assert_int_eq(gets_(hs[i], "zz", buf, sizeof buf), -ENOENT);
    }
    for (int i = 0; i < H; i++)
        shmds_map_close(hs[i]);
    pid_t c = tu_fork(stats_child, NULL);
    int st = tu_wait(c, 30000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %d", st);
    for (int i = 0; i < H; i++) {
        ck_assert_int_eq(shmds_map_open(r, "st", &hs[i]), 0);
        ck_assert_int_eq(gets_(hs[i], "a", buf, sizeof buf), 0);
    }
    shmds_map_stats s;
    ck_assert_int_eq(shmds_map_stats_get(m, &s), 0);
    ck_assert_uint_eq(s.hits, 2 * H + 5);
    ck_assert_uint_eq(s.misses, 2 * H + 3);
    for (int i = 0; i < H; i++)
        shmds_map_close(hs[i]);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

#ifdef SHMDS_FAULT_INJECTION
/* Puts keys "m0", "m1", ... acknowledging each after it returned, with
 * the fault point named in the environment set: killed there. */
static int put_until_fault(void *arg)
{
    tu_chan *c = arg;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "mv", &m) != 0)
        return 21;
    for (uint32_t j = 0; j < 4096; j++) {
        char k[32];
        snprintf(k, sizeof k, "m%u", j);
        if (shmds_map_put(m, k, strlen(k), k, strlen(k), 0, 0) < 0)
            return 22;
        tu_send(c, &j, sizeof j);
    }
    return 0; /* never reached the point */
}

/* A writer killed while moving a bucket's entries into the grown table, at
 * either step of a move and at several hits: the next locker finishes the
 * whole bucket, so every acknowledged key stays visible and the map checks.
 * (The repair used to finish only the one logged entry: the bucket stayed
 * half moved, gets missed its keys and shmds_map_check said corrupt.) */
START_TEST(test_map_killed_mid_bucket_move_keeps_keys_visible)
{
    static const char *const points[] = {"map.move.logged", "map.move.linked"};
    shmds_region *r = region(4 * MB);
    shmds_map *m = mk(r, "mv", 0, 0, 1, 0, 0);
    char skip[16];
    snprintf(skip, sizeof skip, "%d", 3 * (_i / 2));
    setenv("SHMDS_FAULT", points[_i % 2], 1);
    setenv("SHMDS_FAULT_SKIP", skip, 1);
    tu_chan c;
    tu_chan_open(&c);
    pid_t p = tu_fork(put_until_fault, &c);
    unsetenv("SHMDS_FAULT");
    close(c.wr);
    c.wr = -1;
    uint32_t j, acked = 0;
    while (tu_recv(&c, &j, sizeof j) == 1)
        acked = j + 1;
    int st = tu_wait(p, 30000);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was not killed");
    tu_chan_close(&c);
    ck_assert_int_eq(shmds_map_check(m), 0);
    for (j = 0; j < acked; j++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "m%u", j);
        ck_assert_msg(gets_(m, k, v, sizeof v) == 0 && strcmp(k, v) == 0, "%s lost", k);
    }
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    shmds_region_close(r);
}
END_TEST

/* A fresh process (no table state read yet) gets every acknowledged key. */
static int get_all_fresh(void *arg)
{
    uint32_t acked = *(uint32_t *)arg;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "mv", &m) != 0)
        return 31;
    for (uint32_t j = 0; j < acked; j++) {
        char k[32], v[32];
        snprintf(k, sizeof k, "m%u", j);
        if (gets_(m, k, v, sizeof v) != 0 || strcmp(k, v) != 0)
            return 32;
    }
    if (shmds_map_check(m) != 0)
        return 33;
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

/* A writer killed in the map's first growth just after the table sequence
 * word became odd (1, the value a fresh handle's "nothing read yet" held):
 * a fresh process's lock-free get took its empty table state for current
 * and died with SIGSEGV. Now it repairs and finds every key. */
START_TEST(test_map_killed_in_first_growth_fresh_reader_gets)
{
    shmds_region *r = region(4 * MB);
    shmds_map *m = mk(r, "mv", 0, 0, 1, 0, 0);
    shmds_map_close(m);
    setenv("SHMDS_FAULT", "map.grow.odd", 1);
    setenv("SHMDS_FAULT_SKIP", "0", 1);
    tu_chan c;
    tu_chan_open(&c);
    pid_t p = tu_fork(put_until_fault, &c);
    unsetenv("SHMDS_FAULT");
    unsetenv("SHMDS_FAULT_SKIP");
    close(c.wr);
    c.wr = -1;
    uint32_t j, acked = 0;
    while (tu_recv(&c, &j, sizeof j) == 1)
        acked = j + 1;
    int st = tu_wait(p, 30000);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "the writer was not killed");
    tu_chan_close(&c);
    ck_assert_uint_gt(acked, 0);
    st = tu_wait(tu_fork(get_all_fresh, &acked), 30000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fresh reader: %s %d",
                  WIFSIGNALED(st) ? "signal" : "exit",
                  WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    ck_assert_int_eq(shmds_map_open(r, "mv", &m), 0);
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    shmds_region_close(r);
}
END_TEST
#endif

static Suite *map_suite(void)
{
    Suite *s = suite_create("map");
    TCase *core = tcase_create("core");
    tcase_set_timeout(core, 60);
    tcase_add_test(core, test_map_close_null_is_a_no_op);
    tcase_add_test(core, test_map_null_handle_is_einval);
    tcase_add_test(core, test_map_put_get_del_and_flags);
    tcase_add_test(core, test_map_add_is_a_counter);
    tcase_add_test(core, test_map_ttl_expires_with_injected_clock);
    tcase_add_test(core, test_map_grows_from_tiny_to_large);
    tcase_add_test(core, test_map_grows_with_one_stripe);
    tcase_add_test(core, test_map_foreach_sees_every_entry);
    tcase_add_test(core, test_map_open_by_name_and_types);
    tcase_add_test(core, test_map_readonly_region_gets_without_locks);
    tcase_add_test(core, test_map_destroy_frees_everything);
    suite_add_tcase(s, core);
    TCase *limits = tcase_create("limits");
    tcase_set_timeout(limits, 60);
    tcase_add_test(limits, test_map_budget_without_evict_is_enomem);
    tcase_add_test(limits, test_map_budget_evicts_cold_entries_first);
    tcase_add_test(limits, test_map_evicts_when_heap_is_full);
    tcase_add_test(limits, test_map_size_hint_is_enough);
    tcase_add_test(limits, test_map_damaged_chains_are_ecorrupt);
    tcase_add_test(limits, test_map_foreach_over_one_shared_chain_is_bounded);
    tcase_add_test(limits, test_map_readers_use_the_lengths_they_checked);
    tcase_add_test(limits, test_map_sizes_that_overflow_are_e2big);
    suite_add_tcase(s, limits);
    TCase *mp = tcase_create("multiprocess");
    tcase_set_timeout(mp, 60);
    tcase_add_test(mp, test_map_two_processes_overlapping_keys_match_model);
    tcase_add_test(mp, test_map_rehash_while_another_process_reads_and_writes);
    tcase_add_test(mp, test_map_stats_add_up_over_handles_and_processes);
    suite_add_tcase(s, mp);
    TCase *crash = tcase_create("crash");
    tcase_set_timeout(crash, 60);
    tcase_add_test(crash, test_map_writers_killed_at_random_keep_acknowledged_writes);
#ifdef SHMDS_FAULT_INJECTION
    tcase_add_loop_test(crash, test_map_killed_mid_bucket_move_keeps_keys_visible, 0, 6);
    tcase_add_test(crash, test_map_killed_in_first_growth_fresh_reader_gets);
#endif
    suite_add_tcase(s, crash);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(map_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
