/* The map's cache semantics: versions and compare-and-set, user flags,
 * TTLs in milliseconds (touch, ttl, counters with an initial value and a
 * TTL), stale reads, clear, reap, statistics reset, per-call NOEVICT, and
 * single-flight fills across processes, with the computing process
 * SIGKILLed. Time is a fake clock wherever a TTL matters. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "map_int.h"
#include "testutil.h"

#define MB (1024 * 1024)

static const char *rname;
static uint64_t fake_ms = 5000000;

static uint64_t fake_clock(void)
{
    return __atomic_load_n(&fake_ms, __ATOMIC_RELAXED);
}

static shmds_region *region(size_t size)
{
    rname = tu_name("cache");
    shmds_region *r = NULL;
    int rc = shmds_region_create(rname, size, NULL, &r);
    ck_assert_msg(rc == 0, "region_create: %s", shmds_errname(rc));
    return r;
}

static shmds_map *mk(shmds_region *r, const char *name, const shmds_map_opts *o)
{
    shmds_map *m = NULL;
    int rc = shmds_map_create(r, name, o, &m);
    ck_assert_msg(rc == 0, "map_create: %s", shmds_errname(rc));
    return m;
}

static int put(shmds_map *m, const char *k, const char *v, uint64_t ttl_ms, uint64_t *ver)
{
    shmds_put_opts o = {ttl_ms, 0, 0, 0};
    return shmds_map_put_ex(m, k, strlen(k), v, strlen(v), &o, ver);
}

static int get(shmds_map *m, const char *k, char *buf, size_t cap, unsigned flags,
               shmds_map_entry_info *info)
{
    size_t vl = 0;
    int rc = shmds_map_get_ex(m, k, strlen(k), buf, cap - 1, &vl, flags, info);
    buf[rc == 0 ? vl : 0] = '\0';
    return rc;
}

static uint64_t used_blocks(shmds_region *r)
{
    shmds_alloc_stats s;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &s), 0);
    return s.used_blocks;
}

static void teardown_clock(void)
{
    shmds__map_set_clock(NULL);
}

/* ---- versions, compare-and-set, flags ---- */

/* Every write of a key gives it a version never seen before for it (never
 * 0); a touch does not; get_ex reports the current one. */
START_TEST(test_cache_versions_change_on_every_write)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "v", NULL);
    uint64_t seen[8];
    unsigned n = 0;
    shmds_map_entry_info info;
    char buf[32];
    ck_assert_int_eq(put(m, "k", "a", 0, &seen[n]), 0);
    ck_assert_uint_ne(seen[n++], 0);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, &info), 0);
    ck_assert_uint_eq(info.version, seen[0]);
    ck_assert_int_eq(put(m, "k", "b", 0, &seen[n++]), 0);
    ck_assert_int_eq(shmds_map_del(m, "k", 1), 0);
    ck_assert_int_eq(put(m, "k", "c", 0, &seen[n++]), 0);
    ck_assert_int_eq(shmds_map_expire(m, "k", 1, 60000), 0);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, &info), 0);
    ck_assert_uint_eq(info.version, seen[n - 1]); /* touch: same version */
    for (unsigned i = 0; i < n; i++)
        for (unsigned j = i + 1; j < n; j++)
            ck_assert_uint_ne(seen[i], seen[j]);
    /* Counters: every add is a write. */
    uint64_t v0;
    ck_assert_int_eq(shmds_map_add(m, "c", 1, 5, NULL), 0);
    ck_assert_int_eq(shmds_map_get_ex(m, "c", 1, NULL, 0, NULL, 0, &info), 0);
    v0 = info.version;
    ck_assert_uint_ne(v0, 0);
    ck_assert_int_eq(shmds_map_add(m, "c", 1, 5, NULL), 0);
    ck_assert_int_eq(shmds_map_get_ex(m, "c", 1, NULL, 0, NULL, 0, &info), 0);
    ck_assert_uint_ne(info.version, v0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_cache_compare_and_set)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "cas", NULL);
    char buf[32];
    uint64_t v1, v2, v3;
    ck_assert_int_eq(put(m, "k", "one", 0, &v1), 0);
    shmds_put_opts o = {0, v1, 0, 0};
    ck_assert_int_eq(shmds_map_put_ex(m, "k", 1, "two", 3, &o, &v2), 0);
    ck_assert_uint_ne(v2, v1);
    /* The old version again: a mismatch, nothing stored, version kept. */
    v3 = 12345;
    ck_assert_int_eq(shmds_map_put_ex(m, "k", 1, "three", 5, &o, &v3), SHMDS_EVERSION);
    ck_assert_uint_eq(v3, 12345);
    shmds_map_entry_info info;
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, &info), 0);
    ck_assert_str_eq(buf, "two");
    ck_assert_uint_eq(info.version, v2);
    /* Absent (or expired) is not a mismatch. */
    ck_assert_int_eq(shmds_map_put_ex(m, "z", 1, "x", 1, &o, NULL), -ENOENT);
    ck_assert_int_eq(get(m, "z", buf, sizeof buf, 0, NULL), -ENOENT);
    /* Bad combinations. */
    shmds_put_opts nx = {0, v2, 0, SHMDS_PUT_NX};
    ck_assert_int_eq(shmds_map_put_ex(m, "k", 1, "x", 1, &nx, NULL), -EINVAL);
    shmds_put_opts bad = {0, 0, 0, 1u << 7};
    ck_assert_int_eq(shmds_map_put_ex(m, "k", 1, "x", 1, &bad, NULL), -EINVAL);
    shmds_put_opts big = {SHMDS_TTL_MAX_MS + 1, 0, 0, 0};
    ck_assert_int_eq(shmds_map_put_ex(m, "k", 1, "x", 1, &big, NULL), -EINVAL);
    ck_assert_str_eq(shmds_errname(SHMDS_EVERSION), "SHMDS_EVERSION");
    ck_assert_str_ne(shmds_strerror(SHMDS_EVERSION), shmds_strerror(-ENOENT));
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_cache_user_flags_and_millisecond_ttls)
{
    shmds__map_set_clock(fake_clock);
    shmds_region *r = region(MB);
    shmds_map_opts mo = {.default_ttl_ms = 250};
    shmds_map *m = mk(r, "f", &mo);
    char buf[32];
    shmds_map_entry_info info;
    shmds_put_opts o = {1500, 0, 0xdeadbeefu, 0};
    ck_assert_int_eq(shmds_map_put_ex(m, "k", 1, "v", 1, &o, NULL), 0);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, &info), 0);
    ck_assert_uint_eq(info.user_flags, 0xdeadbeefu);
    ck_assert_int_eq(info.ttl_ms, 1500);
    ck_assert_uint_eq(info.stale, 0);
    /* The map's default in milliseconds, and "never" despite it. */
    ck_assert_int_eq(put(m, "d", "v", 0, NULL), 0);
    ck_assert_int_eq(put(m, "n", "v", SHMDS_TTL_NONE, NULL), 0);
    int64_t ttl;
    ck_assert_int_eq(shmds_map_ttl(m, "d", 1, &ttl), 0);
    ck_assert_int_eq(ttl, 250);
    ck_assert_int_eq(shmds_map_ttl(m, "n", 1, &ttl), 0);
    ck_assert_int_eq(ttl, -1);
    fake_ms += 249;
    ck_assert_int_eq(shmds_map_ttl(m, "d", 1, &ttl), 0);
    ck_assert_int_eq(ttl, 1);
    fake_ms += 1;
    ck_assert_int_eq(shmds_map_ttl(m, "d", 1, &ttl), -ENOENT);
    fake_ms += 1249;
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, &info), 0);
    ck_assert_int_eq(info.ttl_ms, 1);
    fake_ms += 1;
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, &info), -ENOENT);
    ck_assert_int_eq(get(m, "n", buf, sizeof buf, 0, &info), 0);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.default_ttl_ms, 250);
    /* Options that contradict themselves. */
    shmds_map_opts both = {.default_ttl_s = 1, .default_ttl_ms = 1};
    shmds_map *x = NULL;
    ck_assert_int_eq(shmds_map_create(r, "x", &both, &x), -EINVAL);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* Touch: set, extend or remove the time left; never revive. */
START_TEST(test_cache_expire_and_ttl)
{
    shmds__map_set_clock(fake_clock);
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "t", NULL);
    int64_t ttl;
    uint64_t n;
    ck_assert_int_eq(put(m, "k", "v", 0, NULL), 0);
    ck_assert_int_eq(shmds_map_ttl(m, "k", 1, &ttl), 0);
    ck_assert_int_eq(ttl, -1);
    ck_assert_int_eq(shmds_map_expire(m, "k", 1, 5000), 0);
    ck_assert_int_eq(shmds_map_ttl(m, "k", 1, &ttl), 0);
    ck_assert_int_eq(ttl, 5000);
    fake_ms += 4000;
    ck_assert_int_eq(shmds_map_expire(m, "k", 1, 5000), 0); /* extended */
    fake_ms += 4000;
    ck_assert_int_eq(shmds_map_ttl(m, "k", 1, &ttl), 0);
    ck_assert_int_eq(ttl, 1000);
    ck_assert_int_eq(shmds_map_expire(m, "k", 1, 0), 0); /* persist */
    fake_ms += 100000;
    ck_assert_int_eq(shmds_map_ttl(m, "k", 1, &ttl), 0);
    ck_assert_int_eq(ttl, -1);
    ck_assert_int_eq(shmds_map_expire(m, "k", 1, 10), 0);
    fake_ms += 10;
    ck_assert_int_eq(shmds_map_expire(m, "k", 1, 10000), -ENOENT);
    ck_assert_int_eq(shmds_map_count(m, &n), 0);
    ck_assert_uint_eq(n, 0); /* reclaimed, not revived */
    ck_assert_int_eq(shmds_map_expire(m, "zz", 2, 10), -ENOENT);
    ck_assert_int_eq(shmds_map_expire(m, "k", 1, SHMDS_TTL_MAX_MS + 1), -EINVAL);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* A rate limiter in one call per request: created with an initial value
 * and a window, counted up, and a new window once it expires. */
START_TEST(test_cache_add_ex_counts_in_a_window)
{
    shmds__map_set_clock(fake_clock);
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "rl", NULL);
    int64_t v;
    ck_assert_int_eq(shmds_map_add_ex(m, "ip", 2, 1, 100, 1000, &v), 0);
    ck_assert_int_eq(v, 101);
    fake_ms += 500;
    ck_assert_int_eq(shmds_map_add_ex(m, "ip", 2, 1, 100, 1000, &v), 0);
    ck_assert_int_eq(v, 102);
    int64_t ttl;
    ck_assert_int_eq(shmds_map_ttl(m, "ip", 2, &ttl), 0);
    ck_assert_int_eq(ttl, 500); /* an add keeps the window */
    fake_ms += 500;
    ck_assert_int_eq(shmds_map_add_ex(m, "ip", 2, 1, 100, 1000, &v), 0);
    ck_assert_int_eq(v, 101);
    ck_assert_int_eq(shmds_map_add_ex(m, "big", 3, 1, INT64_MAX, 0, &v), -EOVERFLOW);
    ck_assert_int_eq(shmds_map_add_ex(m, "big", 3, 1, 0, SHMDS_TTL_MAX_MS + 1, &v), -EINVAL);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_cache_stale_reads)
{
    shmds__map_set_clock(fake_clock);
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "s", NULL);
    char buf[32];
    shmds_map_entry_info info;
    ck_assert_int_eq(put(m, "k", "old", 100, NULL), 0);
    fake_ms += 200;
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, &info), -ENOENT);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, SHMDS_GET_STALE, &info), 0);
    ck_assert_str_eq(buf, "old");
    ck_assert_uint_eq(info.stale, 1);
    ck_assert_int_eq(info.ttl_ms, 0);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 1u << 5, &info), -EINVAL);
    ck_assert_int_eq(put(m, "k", "new", 0, NULL), 0);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, SHMDS_GET_STALE, &info), 0);
    ck_assert_str_eq(buf, "new");
    ck_assert_uint_eq(info.stale, 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* ---- bulk, statistics, budgets ---- */

START_TEST(test_cache_reap_is_bounded_and_clear_empties)
{
    shmds__map_set_clock(fake_clock);
    shmds_region *r = region(8 * MB);
    uint64_t base = used_blocks(r);
    shmds_map *m = mk(r, "b", NULL);
    uint64_t after_create = used_blocks(r);
    char k[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(k, sizeof k, "key%d", i);
        ck_assert_int_eq(put(m, k, "v", i % 2 ? 1000 : 0, NULL), 0);
    }
    fake_ms += 1000;
    uint64_t total = 0, calls = 0, n;
    shmds_map_stats st0, st1;
    ck_assert_int_eq(shmds_map_stats_get(m, &st0), 0);
    while (total < 1000) {
        uint64_t got = 99;
        ck_assert_int_eq(shmds_map_reap(m, 16, &got), 0);
        ck_assert_uint_le(got, 16 + 8); /* the last chain is finished */
        total += got;
        ck_assert_uint_lt(++calls, 100000);
    }
    ck_assert_uint_eq(total, 1000);
    /* Bounded work: no call reclaimed more than its share. */
    ck_assert_uint_ge(calls, 1000 / (16 + 8));
    ck_assert_int_eq(shmds_map_count(m, &n), 0);
    ck_assert_uint_eq(n, 1000);
    ck_assert_int_eq(shmds_map_stats_get(m, &st1), 0);
    ck_assert_uint_eq(st1.expirations - st0.expirations, 1000);
    ck_assert_int_eq(shmds_map_reap(m, 0, NULL), -EINVAL);
    ck_assert_int_eq(shmds_map_clear(m), 0);
    ck_assert_int_eq(shmds_map_count(m, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(shmds_map_get(m, "key0", 4, NULL, 0, NULL), -ENOENT);
    ck_assert_int_eq(shmds_map_check(m), 0);
    /* Only the header, the tables and each stripe's spare blocks are left. */
    ck_assert_uint_le(used_blocks(r), after_create + 1 + 4 * SHMDS_MAP_STRIPES_DEFAULT);
    ck_assert_int_eq(put(m, "again", "v", 0, NULL), 0);
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    ck_assert_uint_eq(used_blocks(r), base);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_cache_stats_reset_and_readonly_counts)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "st", NULL);
    char buf[8];
    ck_assert_int_eq(put(m, "k", "v", 0, NULL), 0);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, NULL), 0);
    ck_assert_int_eq(get(m, "x", buf, sizeof buf, 0, NULL), -ENOENT);
    ck_assert_int_eq(shmds_map_del(m, "k", 1), 0);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_int_eq(shmds_map_stats_reset(m), 0);
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.hits + st.misses + st.inserts + st.deletes, 0);
    ck_assert_int_eq(put(m, "k", "v", 0, NULL), 0);
    ck_assert_int_eq(get(m, "k", buf, sizeof buf, 0, NULL), 0);
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_uint_eq(st.inserts, 1);
    /* A read-only handle counts its own gets. */
    shmds_region *ro = NULL;
    shmds_map *mr = NULL;
    ck_assert_int_eq(shmds_region_open(rname, SHMDS_RDONLY, &ro), 0);
    ck_assert_int_eq(shmds_map_open(ro, "st", &mr), 0);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(get(mr, "k", buf, sizeof buf, 0, NULL), 0);
    ck_assert_int_eq(get(mr, "q", buf, sizeof buf, 0, NULL), -ENOENT);
    ck_assert_int_eq(shmds_map_stats_get(mr, &st), 0);
    ck_assert_uint_eq(st.hits, 6);
    ck_assert_uint_eq(st.misses, 1);
    ck_assert_int_eq(shmds_map_stats_reset(mr), SHMDS_ERDONLY);
    shmds_map_close(mr);
    shmds_region_close(ro);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_cache_budgets_mean_what_they_say)
{
    shmds_region *r = region(4 * MB);
    shmds_map *x = NULL;
    shmds_map_opts nolimit = {.flags = SHMDS_MAP_EVICT};
    ck_assert_int_eq(shmds_map_create(r, "x", &nolimit, &x), -EINVAL);
    shmds_map_opts o = {.mem_limit = 64 * 1024, .flags = SHMDS_MAP_EVICT};
    shmds_map *m = mk(r, "b", &o);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.mem_limit, 64 * 1024);
    ck_assert_uint_eq(st.flags, SHMDS_MAP_EVICT);
    char k[32], v[200];
    memset(v, 'v', sizeof v);
    int i = 0;
    for (;; i++) {
        snprintf(k, sizeof k, "k%d", i);
        shmds_put_opts po = {0, 0, 0, SHMDS_PUT_NOEVICT};
        int rc = shmds_map_put_ex(m, k, strlen(k), v, sizeof v, &po, NULL);
        if (rc == -ENOMEM)
            break;
        ck_assert_int_eq(rc, 0);
        ck_assert_int_lt(i, 100000);
    }
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.evictions, 0);
    ck_assert_uint_gt(i, 100);
    /* Without NOEVICT the same put evicts. */
    ck_assert_int_eq(shmds_map_put(m, k, strlen(k), v, sizeof v, 0, 0), 0);
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_ge(st.evictions, 1);
    ck_assert_uint_le(st.mem_used - 8 * st.buckets, 64 * 1024);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* ---- single-flight fills, one process ---- */

START_TEST(test_cache_fetch_fill_and_abort)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "f", NULL), *m2 = NULL;
    ck_assert_int_eq(shmds_map_open(r, "f", &m2), 0);
    char buf[32];
    size_t vl = 0;
    shmds_fill *f = NULL, *g = NULL;
    shmds_map_entry_info info;
    ck_assert_int_eq(shmds_map_fetch(m, "k", 1, buf, sizeof buf, &vl, &info, 0, 0, &f), SHMDS_FILL);
    ck_assert_ptr_nonnull(f);
    /* Held by a live process: others wait, here not at all. */
    ck_assert_int_eq(shmds_map_fetch(m2, "k", 1, buf, sizeof buf, &vl, NULL, 0, 0, &g), -ETIMEDOUT);
    ck_assert_ptr_null(g);
    uint64_t t0 = shmds__now_ns();
    ck_assert_int_eq(shmds_map_fetch(m2, "k", 1, buf, sizeof buf, &vl, NULL, 0, 30, &g), -ETIMEDOUT);
    uint64_t waited = (shmds__now_ns() - t0) / 1000000u;
    ck_assert_uint_ge(waited, 29);
    /* Another key is not held. */
    ck_assert_int_eq(shmds_map_fetch(m2, "j", 1, buf, sizeof buf, &vl, NULL, 0, 0, &g), SHMDS_FILL);
    ck_assert_int_eq(shmds_map_fill_abort(g), 0);
    shmds_put_opts o = {0, 0, 7, 0};
    uint64_t ver = 0;
    ck_assert_int_eq(shmds_map_fill_done(f, "val", 3, &o, &ver), 0);
    ck_assert_uint_ne(ver, 0);
    vl = 0;
    ck_assert_int_eq(shmds_map_fetch(m2, "k", 1, buf, sizeof buf, &vl, &info, 0, 0, &g), 0);
    ck_assert_ptr_null(g);
    ck_assert_uint_eq(vl, 3);
    ck_assert_int_eq(memcmp(buf, "val", 3), 0);
    ck_assert_uint_eq(info.version, ver);
    ck_assert_uint_eq(info.user_flags, 7);
    ck_assert_int_eq(shmds_map_fetch(m2, "k", 1, buf, 1, &vl, NULL, 0, 0, &g), -ENOBUFS);
    /* An aborted lease is granted again. */
    ck_assert_int_eq(shmds_map_fetch(m, "a", 1, buf, sizeof buf, &vl, NULL, 0, 0, &f), SHMDS_FILL);
    ck_assert_int_eq(shmds_map_fill_abort(f), 0);
    ck_assert_int_eq(shmds_map_fetch(m2, "a", 1, buf, sizeof buf, &vl, NULL, 0, 0, &g), SHMDS_FILL);
    shmds_put_opts nx = {0, 0, 0, SHMDS_PUT_NX};
    ck_assert_int_eq(shmds_map_fill_done(g, "x", 1, &nx, NULL), -EINVAL);
    ck_assert_int_eq(shmds_map_fetch(m2, "a", 1, buf, sizeof buf, &vl, NULL, 0, 0, &g), SHMDS_FILL);
    ck_assert_int_eq(shmds_map_fill_abort(g), 0);
    ck_assert_int_eq(shmds_map_fetch(m, "a", 1, buf, sizeof buf, &vl, NULL, 0, 0, NULL), -EINVAL);
    ck_assert_int_eq(shmds_map_fill_abort(NULL), 0);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.fills, 5);
    ck_assert_uint_eq(st.takeovers, 0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m2);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* Serve-stale: the first caller refreshes and may serve the stale value;
 * the others get the stale value at once while the refresh runs. */
START_TEST(test_cache_fetch_serves_stale_while_one_refreshes)
{
    shmds__map_set_clock(fake_clock);
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "s", NULL);
    char buf[32];
    size_t vl;
    shmds_fill *f = NULL, *g = NULL;
    shmds_map_entry_info info;
    ck_assert_int_eq(put(m, "k", "old", 100, NULL), 0);
    fake_ms += 150;
    ck_assert_int_eq(shmds_map_fetch(m, "k", 1, buf, sizeof buf, &vl, &info, SHMDS_GET_STALE, 0, &f),
                     SHMDS_FILL);
    ck_assert_uint_eq(info.stale, 1);
    ck_assert_uint_eq(vl, 3);
    ck_assert_int_eq(memcmp(buf, "old", 3), 0);
    memset(&info, 0, sizeof info);
    ck_assert_int_eq(shmds_map_fetch(m, "k", 1, buf, sizeof buf, &vl, &info, SHMDS_GET_STALE, 0, &g), 0);
    ck_assert_ptr_null(g);
    ck_assert_uint_eq(info.stale, 1);
    ck_assert_int_eq(memcmp(buf, "old", 3), 0);
    ck_assert_int_eq(shmds_map_fill_done(f, "new", 3, NULL, NULL), 0);
    ck_assert_int_eq(shmds_map_fetch(m, "k", 1, buf, sizeof buf, &vl, &info, SHMDS_GET_STALE, 0, &g), 0);
    ck_assert_uint_eq(info.stale, 0);
    ck_assert_int_eq(memcmp(buf, "new", 3), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* ---- multiprocess ---- */

#define CAS_PROCS 4
#define CAS_ROUNDS 400

/* Increment a shared number by read, compute, compare-and-set; retry on a
 * mismatch. Exits with how many mismatches it saw (capped), +100 on error. */
static int cas_child(void *arg)
{
    (void)arg;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "cas", &m) != 0)
        return 100;
    unsigned conflicts = 0;
    for (int i = 0; i < CAS_ROUNDS;) {
        int64_t n;
        shmds_map_entry_info info;
        size_t vl;
        if (shmds_map_get_ex(m, "n", 1, &n, sizeof n, &vl, 0, &info) != 0 || vl != 8)
            return 101;
        n++;
        shmds_put_opts o = {0, info.version, 0, 0};
        int rc = shmds_map_put_ex(m, "n", 1, &n, sizeof n, &o, NULL);
        if (rc == SHMDS_EVERSION) {
            conflicts++;
            continue;
        }
        if (rc != 0)
            return 102;
        i++;
    }
    shmds_map_close(m);
    shmds_region_close(r);
    return conflicts > 99 ? 99 : (int)conflicts;
}

/* Exactly one winner per version: no increment is lost. */
START_TEST(test_cache_cas_races_between_processes_lose_nothing)
{
    shmds_region *r = region(MB);
    shmds_map_opts o = {.stripes = 1};
    shmds_map *m = mk(r, "cas", &o);
    int64_t zero = 0;
    ck_assert_int_eq(shmds_map_put(m, "n", 1, &zero, 8, 0, 0), 0);
    pid_t p[CAS_PROCS];
    for (int i = 0; i < CAS_PROCS; i++)
        p[i] = tu_fork(cas_child, NULL);
    for (int i = 0; i < CAS_PROCS; i++) {
        int st = tu_wait(p[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) < 100, "child %d: %d", i, st);
    }
    int64_t n = 0;
    ck_assert_int_eq(shmds_map_get(m, "n", 1, &n, sizeof n, NULL), 0);
    ck_assert_int_eq(n, CAS_PROCS * CAS_ROUNDS);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

#define FILL_PROCS 8

struct fill_shared {
    uint32_t computed;   /* computations of the key */
    uint32_t holder_pid; /* the first lease holder (killed in the kill test) */
};

/* Ask for the missing key "hot"; compute it when given the lease. The
 * value names the computing pid. Exits 0 with the value checked, 1 on a
 * time-out, 10+ on errors. `arg` points at fill_shared; when `hang` the
 * first holder never fills (it is killed). */
struct fill_arg {
    struct fill_shared *sh;
    int hang;
    int timeout_ms;
};

static int fill_child(void *arg)
{
    struct fill_arg *a = arg;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "sf", &m) != 0)
        return 10;
    uint32_t me = (uint32_t)getpid();
    char buf[32];
    size_t vl = 0;
    shmds_fill *f = NULL;
    int rc = shmds_map_fetch(m, "hot", 3, buf, sizeof buf, &vl, NULL, 0, a->timeout_ms, &f);
    if (rc == -ETIMEDOUT)
        return 1;
    if (rc == SHMDS_FILL) {
        uint32_t first = 0;
        bool am_first = __atomic_compare_exchange_n(&a->sh->holder_pid, &first, me, false,
                                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
        if (a->hang && am_first) {
            for (;;)
                pause(); /* the parent SIGKILLs us while we hold the lease */
        }
        /* Compute once the others are all asleep on the lease, so that a
         * second computation could not hide behind a fast first one. */
        unsigned others = a->hang ? FILL_PROCS - 2 : FILL_PROCS - 1;
        uint64_t until = shmds__now_ns() + 20000000000u;
        while (shmds__map_fill_waiters(m, "hot", 3) < others && shmds__now_ns() < until) {
            struct timespec ts = {0, 1000000L};
            nanosleep(&ts, NULL);
        }
        __atomic_add_fetch(&a->sh->computed, 1, __ATOMIC_SEQ_CST);
        snprintf(buf, sizeof buf, "by%u", me);
        if (shmds_map_fill_done(f, buf, strlen(buf), NULL, NULL) != 0)
            return 12;
        return 0;
    }
    if (rc != 0)
        return 13;
    buf[vl] = '\0';
    if (strncmp(buf, "by", 2) != 0)
        return 14;
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

/* Eight processes ask for one missing key at once: one computes it, the
 * other seven wait for and return its value. */
START_TEST(test_cache_single_flight_eight_processes_one_computation)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "sf", NULL);
    struct fill_shared *sh = tu_shared_alloc(sizeof *sh);
    struct fill_arg a = {sh, 0, 30000};
    pid_t p[FILL_PROCS];
    for (int i = 0; i < FILL_PROCS; i++)
        p[i] = tu_fork(fill_child, &a);
    for (int i = 0; i < FILL_PROCS; i++) {
        int st = tu_wait(p[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: %d", i, st);
    }
    ck_assert_uint_eq(sh->computed, 1);
    char buf[32];
    size_t vl;
    ck_assert_int_eq(shmds_map_get(m, "hot", 3, buf, sizeof buf, &vl), 0);
    buf[vl] = '\0';
    char want[32];
    snprintf(want, sizeof want, "by%u", sh->holder_pid);
    ck_assert_str_eq(buf, want);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.fills, 1);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* The computing process is SIGKILLed while seven wait: exactly one of
 * them takes the lease over and computes, and the others get its value.
 * The waiters have no time-out, so only a re-check that notices the dead
 * holder lets any of them return: without one they never do, and tu_wait
 * reports them hung. */
START_TEST(test_cache_single_flight_holder_killed_passes_the_lease)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "sf", NULL);
    struct fill_shared *sh = tu_shared_alloc(sizeof *sh);
    struct fill_arg a = {sh, 1, -1};
    pid_t p[FILL_PROCS];
    for (int i = 0; i < FILL_PROCS; i++)
        p[i] = tu_fork(fill_child, &a);
    /* Wait for the holder to be known and the seven others asleep. */
    uint64_t until = shmds__now_ns() + 20000000000u;
    while ((__atomic_load_n(&sh->holder_pid, __ATOMIC_SEQ_CST) == 0 ||
            shmds__map_fill_waiters(m, "hot", 3) < FILL_PROCS - 1) &&
           shmds__now_ns() < until) {
        struct timespec ts = {0, 1000000L};
        nanosleep(&ts, NULL);
    }
    pid_t holder = (pid_t)sh->holder_pid;
    if (holder == 0) /* they would wait forever */
        for (int i = 0; i < FILL_PROCS; i++)
            tu_kill(p[i]);
    ck_assert_int_ne(holder, 0);
    int killed = -1;
    /* Killed and left unreaped: a zombie holds no lease either. */
    for (int i = 0; i < FILL_PROCS; i++)
        if (p[i] == holder) {
            kill(p[i], SIGKILL);
            killed = i;
        }
    ck_assert_int_ge(killed, 0);
    for (int i = 0; i < FILL_PROCS; i++) {
        if (i == killed)
            continue;
        int st = tu_wait(p[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: %d", i, st);
    }
    int kst = tu_wait(p[killed], 10000);
    ck_assert(WIFSIGNALED(kst) && WTERMSIG(kst) == SIGKILL);
    ck_assert_uint_eq(sh->computed, 1);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.fills, 2);
    ck_assert_uint_eq(st.takeovers, 1);
    char buf[32];
    size_t vl;
    ck_assert_int_eq(shmds_map_get(m, "hot", 3, buf, sizeof buf, &vl), 0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* A live holder that never fills: every waiter gives up at its time-out,
 * not before. */
static int timeout_child(void *arg)
{
    int *phase = arg;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(rname, 0, &r) != 0 || shmds_map_open(r, "sf", &m) != 0)
        return 10;
    char buf[8];
    size_t vl;
    shmds_fill *f = NULL;
    (void)phase;
    uint64_t t0 = shmds__now_ns();
    int rc = shmds_map_fetch(m, "hot", 3, buf, sizeof buf, &vl, NULL, 0, 200, &f);
    uint64_t ms = (shmds__now_ns() - t0) / 1000000u;
    if (rc != -ETIMEDOUT)
        return 11;
    return ms >= 199 ? 0 : 12;
}

START_TEST(test_cache_single_flight_waiters_time_out)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "sf", NULL);
    char buf[8];
    size_t vl;
    shmds_fill *f = NULL;
    ck_assert_int_eq(shmds_map_fetch(m, "hot", 3, buf, sizeof buf, &vl, NULL, 0, 0, &f), SHMDS_FILL);
    pid_t p[3];
    for (int i = 0; i < 3; i++)
        p[i] = tu_fork(timeout_child, NULL);
    for (int i = 0; i < 3; i++) {
        int st = tu_wait(p[i], 30000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: %d", i, st);
    }
    ck_assert_int_eq(shmds_map_fill_abort(f), 0);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

/* A handle inherited across fork counts the child's gets on a line of the
 * child's own, and the counts of both processes add up. */
static int forked_gets(void *arg)
{
    shmds_map *m = arg;
    char buf[8];
    for (int i = 0; i < 1000; i++)
        if (shmds_map_get(m, "k", 1, buf, sizeof buf, NULL) != 0)
            return 1;
    return 0;
}

START_TEST(test_cache_handle_used_across_fork)
{
    shmds_region *r = region(MB);
    shmds_map *m = mk(r, "fk", NULL);
    ck_assert_int_eq(put(m, "k", "v", 0, NULL), 0);
    pid_t p[2];
    for (int i = 0; i < 2; i++)
        p[i] = tu_fork(forked_gets, m);
    ck_assert_int_eq(forked_gets(m), 0);
    for (int i = 0; i < 2; i++) {
        int st = tu_wait(p[i], 30000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: %d", i, st);
    }
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    ck_assert_uint_eq(st.hits, 3000);
    shmds_map_close(m);
    shmds_region_close(r);
}
END_TEST

static Suite *cache_suite(void)
{
    Suite *s = suite_create("cache");
    TCase *core = tcase_create("core");
    tcase_add_checked_fixture(core, NULL, teardown_clock);
    tcase_add_test(core, test_cache_versions_change_on_every_write);
    tcase_add_test(core, test_cache_compare_and_set);
    tcase_add_test(core, test_cache_user_flags_and_millisecond_ttls);
    tcase_add_test(core, test_cache_expire_and_ttl);
    tcase_add_test(core, test_cache_add_ex_counts_in_a_window);
    tcase_add_test(core, test_cache_stale_reads);
    tcase_add_test(core, test_cache_reap_is_bounded_and_clear_empties);
    tcase_add_test(core, test_cache_stats_reset_and_readonly_counts);
    tcase_add_test(core, test_cache_budgets_mean_what_they_say);
    tcase_add_test(core, test_cache_fetch_fill_and_abort);
    tcase_add_test(core, test_cache_fetch_serves_stale_while_one_refreshes);
    suite_add_tcase(s, core);
    TCase *mp = tcase_create("multiprocess");
    tcase_set_timeout(mp, 120);
    tcase_add_test(mp, test_cache_cas_races_between_processes_lose_nothing);
    tcase_add_test(mp, test_cache_single_flight_eight_processes_one_computation);
    tcase_add_test(mp, test_cache_single_flight_holder_killed_passes_the_lease);
    tcase_add_test(mp, test_cache_single_flight_waiters_time_out);
    tcase_add_test(mp, test_cache_handle_used_across_fork);
    suite_add_tcase(s, mp);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(cache_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
