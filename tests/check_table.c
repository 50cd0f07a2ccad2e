/* Published lookup tables: build, publish, lookups by copy and by
 * reference, racing builders, read-only attaches, damaged versions, readers
 * in many processes while the table is republished hundreds of times, and
 * builders and readers SIGKILLed at random with the heap accounted for
 * exactly afterwards. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define SZ (16u * 1024 * 1024)
#define KEYS_MAX 1000

static const char *last_name;

static shmds_region *make(size_t size)
{
    last_name = tu_name("tb");
    shmds_region *r = NULL;
    int rc = shmds_region_create(last_name, size, NULL, &r);
    ck_assert_msg(rc == 0, "create: %s", shmds_errname(rc));
    return r;
}

static shmds_alloc_stats heap(shmds_region *r)
{
    shmds_alloc_stats st;
    int rc = shmds_alloc_stats_get(r, &st);
    ck_assert_msg(rc == 0, "alloc_stats_get: %s", shmds_errname(rc));
    return st;
}

/* Free what no reader holds and every dead builder's block, then the
 * heap's used bytes. */
static uint64_t used_after_reclaim(shmds_region *r)
{
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_ge(shmds__guard_reclaim(r), 0);
    return heap(r).used_bytes;
}

static int publish_version(shmds_region *r, const char *name, uint64_t v, uint64_t *got);

/* The heap's used bytes once the read guards' first retire block exists
 * (it stays for the region's life): a table published twice and
 * destroyed, then everything reclaimed. */
static uint64_t baseline(shmds_region *r)
{
    ck_assert_int_eq(publish_version(r, "warm", 1, NULL), 0);
    ck_assert_int_eq(publish_version(r, "warm", 2, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "warm", &t), 0);
    ck_assert_int_eq(shmds_table_destroy(t), 0);
    return used_after_reclaim(r);
}

/* ---- contents: version v holds keys 0 .. nkeys(v)-1, values made from
 * (v, i), so every answer says which version it came from ---- */

static unsigned nkeys(uint64_t v)
{
    return 300 + (unsigned)((v * 7919) % 700);
}

static size_t key_of(unsigned i, char *buf)
{
    return (size_t)sprintf(buf, "key-%u", i);
}

static size_t val_of(uint64_t v, unsigned i, char *buf)
{
    int n = sprintf(buf, "v%" PRIu64 ":i%u:", v, i);
    size_t len = (size_t)n + (size_t)((v + i) % 40);
    for (size_t j = (size_t)n; j < len; j++)
        buf[j] = (char)('a' + (v * 3 + i + j) % 26);
    return len;
}

/* Build version v's contents into a builder and publish: 0 or the error;
 * *got the version published. */
static int publish_version(shmds_region *r, const char *name, uint64_t v, uint64_t *got)
{
    shmds_table_builder *b;
    int rc = shmds_table_build(r, name, nkeys(v), &b);
    if (rc != 0)
        return rc;
    char k[32], val[128];
    for (unsigned i = 0; i < nkeys(v); i++) {
        size_t kl = key_of(i, k), vl = val_of(v, i, val);
        if ((rc = shmds_table_add(b, k, kl, val, vl)) != 0) {
            shmds_table_abort(b);
            return rc;
        }
    }
    return shmds_table_publish(b, got);
}

/* The version current now (0: none). */
static uint64_t version_now(shmds_table *t)
{
    shmds_table_stats st;
    int rc = shmds_table_stat(t, &st);
    ck_assert_msg(rc == 0, "stat: %s", shmds_errname(rc));
    return st.version;
}

/* One lookup checked against the version it came from: 0 ok, else 1. */
static int check_answer(shmds_table *t, shmds_guard *g, unsigned i, uint64_t *seen)
{
    char k[32], want[128];
    size_t kl = key_of(i, k);
    const void *v;
    size_t vl;
    uint64_t ver;
    int rc = shmds_table_get_ref(t, g, k, kl, &v, &vl, &ver);
    *seen = ver;
    if (rc == -ENOENT)
        return ver == 0 || i >= nkeys(ver) ? 0 : 1;
    if (rc != 0 || ver == 0 || i >= nkeys(ver))
        return 1;
    size_t wl = val_of(ver, i, want);
    return wl == vl && memcmp(v, want, vl) == 0 ? 0 : 1;
}

/* ---- core ---- */

START_TEST(test_table_publish_then_get_every_key)
{
    shmds_region *r = make(SZ);
    uint64_t got = 0;
    ck_assert_int_eq(publish_version(r, "t", 1, &got), 0);
    ck_assert_uint_eq(got, 1);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    char k[32], want[128], buf[128];
    for (unsigned i = 0; i < KEYS_MAX; i++) {
        size_t kl = key_of(i, k), vl;
        int rc = shmds_table_get(t, k, kl, buf, sizeof buf, &vl);
        if (i >= nkeys(1)) {
            ck_assert_int_eq(rc, -ENOENT);
            continue;
        }
        ck_assert_int_eq(rc, 0);
        size_t wl = val_of(1, i, want);
        ck_assert_uint_eq(vl, wl);
        ck_assert(memcmp(buf, want, wl) == 0);
    }
    uint64_t n;
    ck_assert_int_eq(shmds_table_count(t, &n), 0);
    ck_assert_uint_eq(n, nkeys(1));
    shmds_table_stats st;
    ck_assert_int_eq(shmds_table_stat(t, &st), 0);
    ck_assert_uint_eq(st.version, 1);
    ck_assert_uint_ge(st.slots, n + n / 2);
    ck_assert_uint_ge(st.max_probe, 1);
    ck_assert_int_eq(shmds_table_check(t), 0);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

struct walk_state {
    unsigned next;
    uint64_t version;
    int bad;
};

static int walk_fn(const void *key, size_t klen, const void *val, size_t vlen, void *arg)
{
    struct walk_state *w = arg;
    char k[32], v[128];
    size_t kl = key_of(w->next, k), vl = val_of(w->version, w->next, v);
    if (kl != klen || memcmp(k, key, kl) != 0 || vl != vlen || memcmp(v, val, vl) != 0)
        w->bad++;
    w->next++;
    return w->next == 5 && w->version == 99 ? 42 : 0;
}

START_TEST(test_table_foreach_in_add_order_and_stops)
{
    shmds_region *r = make(SZ);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    struct walk_state w = {0, 1, 0};
    uint64_t ver;
    ck_assert_int_eq(shmds_table_foreach(t, walk_fn, &w, &ver), 0);
    ck_assert_uint_eq(ver, 1);
    ck_assert_int_eq(w.bad, 0);
    ck_assert_uint_eq(w.next, nkeys(1));
    w = (struct walk_state){0, 99, 0};
    ck_assert_int_eq(shmds_table_foreach(t, walk_fn, &w, NULL), 42);
    ck_assert_uint_eq(w.next, 5);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_table_key_added_twice_keeps_last_value)
{
    shmds_region *r = make(SZ);
    shmds_table_builder *b;
    ck_assert_int_eq(shmds_table_build(r, "t", 0, &b), 0);
    ck_assert_int_eq(shmds_table_add(b, "a", 1, "one", 3), 0);
    ck_assert_int_eq(shmds_table_add(b, "b", 1, "", 0), 0);
    ck_assert_int_eq(shmds_table_add(b, "a", 1, "two", 3), 0);
    ck_assert_int_eq(shmds_table_publish(b, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    char buf[8];
    size_t n;
    ck_assert_int_eq(shmds_table_get(t, "a", 1, buf, sizeof buf, &n), 0);
    ck_assert_uint_eq(n, 3);
    ck_assert(memcmp(buf, "two", 3) == 0);
    ck_assert_int_eq(shmds_table_get(t, "b", 1, NULL, 0, &n), 0);
    ck_assert_uint_eq(n, 0);
    uint64_t c;
    ck_assert_int_eq(shmds_table_count(t, &c), 0);
    ck_assert_uint_eq(c, 2);
    ck_assert_int_eq(shmds_table_check(t), 0);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_table_before_first_publish_and_empty_version)
{
    shmds_region *r = make(SZ);
    shmds_table_builder *b;
    ck_assert_int_eq(shmds_table_build(r, "t", 10, &b), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0); /* exists, no version */
    char buf[8];
    ck_assert_int_eq(shmds_table_get(t, "a", 1, buf, sizeof buf, NULL), -ENOENT);
    ck_assert_uint_eq(version_now(t), 0);
    uint64_t v;
    ck_assert_int_eq(shmds_table_publish(b, &v), 0); /* no pairs */
    ck_assert_uint_eq(v, 1);
    ck_assert_int_eq(shmds_table_get(t, "a", 1, buf, sizeof buf, NULL), -ENOENT);
    uint64_t c = 9;
    ck_assert_int_eq(shmds_table_count(t, &c), 0);
    ck_assert_uint_eq(c, 0);
    ck_assert_int_eq(shmds_table_check(t), 0);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_table_get_ref_outlives_republish_until_guard_left)
{
    shmds_region *r = make(SZ);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    uint64_t one_version = used_after_reclaim(r);
    shmds_guard *g;
    ck_assert_int_eq(shmds_guard_enter(r, &g), 0);
    const void *v;
    size_t vl;
    uint64_t ver;
    ck_assert_int_eq(shmds_table_get_ref(t, g, "key-7", 5, &v, &vl, &ver), 0);
    ck_assert_uint_eq(ver, 1);
    char want[128];
    size_t wl = val_of(1, 7, want);
    for (uint64_t n = 2; n <= 20; n++)
        ck_assert_int_eq(publish_version(r, "t", n, NULL), 0);
    ck_assert_int_ge(shmds__guard_reclaim(r), 0);
    /* Version 1 is still allocated and unchanged under the guard. */
    ck_assert_uint_eq(vl, wl);
    ck_assert(memcmp(v, want, wl) == 0);
    ck_assert_uint_gt(heap(r).used_bytes, one_version);
    ck_assert_int_eq(check_answer(t, g, 7, &ver), 0);
    ck_assert_uint_eq(ver, 20);
    shmds_guard_leave(g);
    /* Left: every replaced version is freed; one version's worth stays
     * (version 20's block is no bigger or smaller than its contents). */
    shmds_table_stats st20;
    ck_assert_int_eq(shmds_table_stat(t, &st20), 0);
    uint64_t used = used_after_reclaim(r);
    ck_assert_uint_le(used, one_version + st20.bytes + 64);
    ck_assert_int_eq(shmds_table_destroy(t), 0);
    shmds_region_close(r);
}
END_TEST

static unsigned char *version_block(shmds_region *r);

/* A handle keeps the facts of the version it last met: a later version
 * allocated where a freed one was (the same offset, other sizes and seed)
 * is still read as itself. */
START_TEST(test_table_handle_follows_versions_at_a_reused_offset)
{
    shmds_region *r = make(SZ);
    shmds_table *t;
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    uint64_t offs[64];
    unsigned reused = 0;
    for (uint64_t v = 1; v < 64; v++) {
        if (v > 1)
            ck_assert_int_eq(publish_version(r, "t", v, NULL), 0);
        ck_assert_int_ge(shmds__guard_reclaim(r), 0); /* frees the version replaced */
        offs[v] = (uint64_t)(version_block(r) - r->base);
        for (uint64_t u = 1; u < v; u++)
            reused += offs[u] == offs[v];
        shmds_guard *g;
        ck_assert_int_eq(shmds_guard_enter(r, &g), 0);
        for (unsigned i = 0; i < KEYS_MAX; i += 7) {
            uint64_t ver;
            ck_assert_msg(check_answer(t, g, i, &ver) == 0, "version %" PRIu64 " key %u", v, i);
            ck_assert_uint_eq(ver, v);
        }
        shmds_guard_leave(g);
    }
    ck_assert_uint_gt(reused, 0);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

/* Threads sharing one handle while the table is republished: each has
 * its own guard; the handle's cached facts are replaced under them. */
struct thread_arg {
    shmds_region *r;
    shmds_table *t;
    volatile int *stop;
    unsigned seed;
    uint64_t lookups, wrong;
};

static void *thread_reader(void *arg)
{
    struct thread_arg *a = arg;
    unsigned s = a->seed;
    while (!__atomic_load_n(a->stop, __ATOMIC_RELAXED)) {
        shmds_guard *g;
        if (shmds_guard_enter(a->r, &g) != 0) {
            a->wrong++;
            break;
        }
        for (int j = 0; j < 8; j++) {
            s = s * 1103515245u + 12345u;
            uint64_t ver;
            a->wrong += (uint64_t)check_answer(a->t, g, (s >> 8) % KEYS_MAX, &ver);
            a->lookups++;
        }
        shmds_guard_leave(g);
    }
    return NULL;
}

START_TEST(test_table_threads_sharing_a_handle_see_whole_versions)
{
    shmds_region *r = make(SZ);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    enum { THREADS = 4 };
    volatile int stop = 0;
    pthread_t th[THREADS];
    struct thread_arg ta[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ta[i] = (struct thread_arg){r, t, &stop, 101u + (unsigned)i, 0, 0};
        ck_assert_int_eq(pthread_create(&th[i], NULL, thread_reader, &ta[i]), 0);
    }
    for (uint64_t v = 2; v <= 200; v++)
        ck_assert_int_eq(publish_version(r, "t", v, NULL), 0);
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    for (int i = 0; i < THREADS; i++) {
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_uint_eq(ta[i].wrong, 0);
        ck_assert_uint_gt(ta[i].lookups, 0);
    }
    ck_assert_int_eq(shmds_table_check(t), 0);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_table_racing_builders_first_publish_wins)
{
    shmds_region *r = make(SZ);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    shmds_table_builder *a, *b;
    ck_assert_int_eq(shmds_table_build(r, "t", 0, &a), 0);
    ck_assert_int_eq(shmds_table_build(r, "t", 0, &b), 0);
    ck_assert_int_eq(shmds_table_add(a, "k", 1, "A", 1), 0);
    ck_assert_int_eq(shmds_table_add(b, "k", 1, "B", 1), 0);
    uint64_t before = used_after_reclaim(r);
    uint64_t v = 0;
    ck_assert_int_eq(shmds_table_publish(b, &v), 0);
    ck_assert_uint_eq(v, 2);
    ck_assert_int_eq(shmds_table_publish(a, &v), SHMDS_EVERSION);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    char buf[4];
    size_t n;
    ck_assert_int_eq(shmds_table_get(t, "k", 1, buf, sizeof buf, &n), 0);
    ck_assert(n == 1 && buf[0] == 'B');
    ck_assert_uint_eq(version_now(t), 2);
    /* The loser's block went back: v2 replaced v1, nothing else stayed. */
    uint64_t after = used_after_reclaim(r);
    ck_assert_uint_le(after, before);
    ck_assert_int_eq(shmds_table_check(t), 0);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_table_destroy_returns_every_byte)
{
    shmds_region *r = make(SZ);
    uint64_t base = baseline(r);
    for (uint64_t v = 1; v <= 5; v++)
        ck_assert_int_eq(publish_version(r, "t", v, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    ck_assert_int_eq(shmds_table_destroy(t), 0);
    ck_assert_uint_eq(used_after_reclaim(r), base);
    ck_assert_int_eq(shmds_table_open(r, "t", &t), -ENOENT);
    shmds_region_close(r);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_table_bad_arguments_are_einval_and_small_buffer_enobufs)
{
    shmds_region *r = make(SZ);
    shmds_table_builder *b;
    ck_assert_int_eq(shmds_table_build(NULL, "t", 0, &b), -EINVAL);
    ck_assert_int_eq(shmds_table_build(r, "", 0, &b), -EINVAL);
    ck_assert_int_eq(shmds_table_build(r, "t", 0, NULL), -EINVAL);
    ck_assert_int_eq(shmds_table_build(r, "t", 0, &b), 0);
    ck_assert_int_eq(shmds_table_add(b, NULL, 1, "v", 1), -EINVAL);
    ck_assert_int_eq(shmds_table_add(b, "k", 0, "v", 1), -EINVAL);
    ck_assert_int_eq(shmds_table_add(b, "k", 1, NULL, 1), -EINVAL);
    if (SIZE_MAX > UINT32_MAX)
        ck_assert_int_eq(shmds_table_add(b, "k", (size_t)UINT32_MAX + 1, "v", 1), -E2BIG);
    ck_assert_int_eq(shmds_table_add(b, "key", 3, "value", 5), 0);
    ck_assert_int_eq(shmds_table_publish(NULL, NULL), -EINVAL);
    ck_assert_int_eq(shmds_table_publish(b, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    char buf[8] = "xxxxxxx";
    size_t n = 0;
    ck_assert_int_eq(shmds_table_get(t, "key", 3, buf, 4, &n), -ENOBUFS);
    ck_assert_uint_eq(n, 5);
    ck_assert(buf[0] == 'x');
    ck_assert_int_eq(shmds_table_get(t, "key", 0, buf, 8, &n), -EINVAL);
    ck_assert_int_eq(shmds_table_get(NULL, "key", 3, buf, 8, &n), -EINVAL);
    const void *v;
    ck_assert_int_eq(shmds_table_get_ref(t, NULL, "key", 3, &v, &n, NULL), -EINVAL);
    ck_assert_int_eq(shmds_table_count(t, NULL), -EINVAL);
    ck_assert_int_eq(shmds_table_foreach(t, NULL, NULL, NULL), -EINVAL);
    ck_assert_int_eq(shmds_table_check(NULL), -EINVAL);
    shmds_table_abort(NULL);
    shmds_table_close(NULL);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_table_names_and_types)
{
    shmds_region *r = make(SZ);
    shmds_list *l;
    ck_assert_int_eq(shmds_list_create(r, "l", &l), 0);
    shmds_table_builder *b;
    shmds_table *t;
    ck_assert_int_eq(shmds_table_build(r, "l", 0, &b), SHMDS_ETYPE);
    ck_assert_int_eq(shmds_table_open(r, "l", &t), SHMDS_ETYPE);
    ck_assert_int_eq(shmds_table_open(r, "none", &t), -ENOENT);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    ck_assert_int_eq(shmds_list_open(r, "t", &l), SHMDS_ETYPE);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_table_readonly_attach_reads_and_refuses_builds)
{
    shmds_region *r = make(SZ);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    shmds_region *ro;
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &ro), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(ro, "t", &t), 0);
    shmds_guard *g;
    ck_assert_int_eq(shmds_guard_enter(ro, &g), 0);
    uint64_t ver;
    for (unsigned i = 0; i < KEYS_MAX; i += 7)
        ck_assert_int_eq(check_answer(t, g, i, &ver), 0);
    shmds_guard_leave(g);
    char buf[128];
    size_t n;
    ck_assert_int_eq(shmds_table_get(t, "key-1", 5, buf, sizeof buf, &n), 0);
    struct walk_state w = {0, 1, 0};
    ck_assert_int_eq(shmds_table_foreach(t, walk_fn, &w, &ver), 0);
    ck_assert_uint_eq(w.next, nkeys(1));
    ck_assert_int_eq(shmds_table_check(t), 0);
    ck_assert_int_eq(shmds_region_check(ro), 0);
    shmds_table_builder *b;
    ck_assert_int_eq(shmds_table_build(ro, "t", 0, &b), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_table_destroy(t), SHMDS_ERDONLY);
    shmds_region_close(ro);
    shmds_region_close(r);
}
END_TEST

/* The first version block of table "t" (tests that damage it). */
static unsigned char *version_block(shmds_region *r)
{
    shmds_off_t off;
    ck_assert_int_eq(shmds__root_find_typed(r, "t", SHMDS_TYPE_TABLE, &off), 0);
    uint64_t root;
    memcpy(&root, r->base + off + 80, 8); /* format: table root */
    return r->base + root;
}

START_TEST(test_table_damaged_version_is_ecorrupt_never_a_crash)
{
    /* Each damage: a field of the version header or a slot or a record,
     * set to a value a hostile process could write. */
    for (int d = 0; d < 10; d++) {
        shmds_region *r = make(SZ);
        ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
        /* A handle that met the version before the damage (it keeps the
         * header's facts as it checked them then). */
        shmds_table *early;
        ck_assert_int_eq(shmds_table_open(r, "t", &early), 0);
        char buf[128];
        size_t n;
        ck_assert_int_eq(shmds_table_get(early, "key-1", 5, buf, sizeof buf, &n), 0);
        unsigned char *v = version_block(r);
        uint64_t nslots, dlen;
        memcpy(&nslots, v + 8, 8);
        memcpy(&dlen, v + 16, 8);
        uint64_t *slots = (uint64_t *)(v + 128);
        uint32_t skew, skew_bad = 8;
        memcpy(&skew, v + 36, 4);
        unsigned char *data = v + 128 + nslots * 8 + skew;
        uint64_t big = UINT64_MAX / 2, all = UINT64_MAX;
        switch (d) {
        case 0: memcpy(v, &big, 8); break;               /* magic */
        case 1: memcpy(v + 8, &big, 8); break;           /* nslots */
        case 2: memcpy(v + 16, &big, 8); break;          /* data_len */
        case 3: memset(v + 32, 0xff, 4); break;          /* max_probe */
        case 4:                                          /* every slot far away */
            for (uint64_t j = 0; j < nslots; j++)
                slots[j] = all;
            break;
        case 5: memset(data, 0xff, 8); break;            /* first record's lengths */
        case 6: memcpy(v + 56, &nslots, 8); break;       /* count */
        case 7:                                          /* every slot full */
            for (uint64_t j = 0; j < nslots; j++)
                slots[j] = (uint64_t)0xabcd << 48 | 1;
            break;
        case 8:                                          /* skew: records moved */
            skew_bad += skew;
            memcpy(v + 36, &skew_bad, 4);
            break;
        default: memset(data, 0x7f, dlen); break;        /* records garbage */
        }
        shmds_table *t;
        ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
        ck_assert_int_eq(shmds_table_check(t), SHMDS_ECORRUPT);
        int bad = 0;
        for (unsigned i = 0; i < 50; i++) {
            char k[32], want[128];
            size_t kl = key_of(i, k);
            int rc = shmds_table_get(t, k, kl, buf, sizeof buf, &n);
            bad += rc == SHMDS_ECORRUPT;
            ck_assert(rc == 0 || rc == -ENOENT || rc == SHMDS_ECORRUPT);
            /* The early handle reads slots and records, each checked
             * against the bounds it checked: right answers, misses or
             * damage seen, never a stray read. */
            rc = shmds_table_get(early, k, kl, buf, sizeof buf, &n);
            ck_assert(rc == 0 || rc == -ENOENT || rc == SHMDS_ECORRUPT);
            if (rc == 0 && d <= 3)
                ck_assert(n == val_of(1, i, want) && memcmp(buf, want, n) == 0);
        }
        if (d <= 3)
            ck_assert_msg(bad == 50, "damage %d: %d of 50 lookups saw it", d, bad);
        ck_assert_int_eq(shmds_table_check(early), SHMDS_ECORRUPT);
        shmds_table_close(early);
        struct walk_state w = {0, 1, 0};
        int rc = shmds_table_foreach(t, walk_fn, &w, NULL);
        ck_assert(rc == 0 || rc == SHMDS_ECORRUPT);
        ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
        shmds_table_close(t);
        shmds_region_close(r);
        shmds_region_unlink(last_name);
    }
}
END_TEST

/* ---- multiprocess ---- */

struct shared_ctl {
    volatile int stop;
    uint64_t lookups[16];
    uint64_t versions_seen[16];
};

static struct shared_ctl *ctl;

struct reader_arg {
    int id;
    unsigned seed;
};

/* A reader: guards of a few lookups each, every answer checked against
 * the version it came from, until told to stop. Exit 0 ok, 1 a wrong
 * answer, 3 an error. */
static int reader(void *arg)
{
    struct reader_arg *a = arg;
    shmds_region *r;
    if (shmds_region_open(last_name, a->id % 2 ? SHMDS_RDONLY : 0, &r) != 0)
        return 3;
    shmds_table *t;
    if (shmds_table_open(r, "t", &t) != 0)
        return 3;
    unsigned s = a->seed;
    uint64_t last = 0, changes = 0, n = 0;
    while (!ctl->stop) {
        shmds_guard *g;
        if (shmds_guard_enter(r, &g) != 0)
            return 3;
        for (int j = 0; j < 8; j++) {
            s = s * 1103515245u + 12345u;
            uint64_t ver;
            if (check_answer(t, g, (s >> 8) % KEYS_MAX, &ver) != 0)
                return 1;
            changes += ver != last;
            last = ver;
            n++;
        }
        shmds_guard_leave(g);
        ctl->lookups[a->id] = n;
        ctl->versions_seen[a->id] = changes;
    }
    shmds_table_close(t);
    shmds_region_close(r);
    return 0;
}

START_TEST(test_table_readers_in_many_processes_see_whole_versions)
{
    shmds_region *r = make(SZ);
    ctl = tu_shared_alloc(sizeof *ctl);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    uint64_t one = used_after_reclaim(r);
    enum { READERS = 4, PUBLISHES = 300 };
    pid_t pid[READERS];
    struct reader_arg ra[READERS];
    for (int i = 0; i < READERS; i++) {
        ra[i] = (struct reader_arg){i, 77u + (unsigned)i};
        pid[i] = tu_fork(reader, &ra[i]);
    }
    for (uint64_t v = 2; v <= PUBLISHES; v++) {
        uint64_t got;
        ck_assert_int_eq(publish_version(r, "t", v, &got), 0);
        ck_assert_uint_eq(got, v);
    }
    ctl->stop = 1;
    for (int i = 0; i < READERS; i++) {
        int st = tu_wait(pid[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d: status %d", i, st);
        ck_assert_uint_gt(ctl->lookups[i], 0);
    }
    /* Replaced versions are freed once the readers are gone. */
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    ck_assert_uint_eq(version_now(t), PUBLISHES);
    uint64_t used = used_after_reclaim(r);
    shmds_table_stats st;
    ck_assert_int_eq(shmds_table_stat(t, &st), 0);
    ck_assert_uint_le(used, one + 2 * st.bytes);
    ck_assert_int_eq(shmds_table_check(t), 0);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST

/* ---- crash ---- */

/* Publish the contents of version (current + 1): 0, SHMDS_EVERSION when
 * another builder published first, or an error. The version is read before
 * and after the builder starts (it records the one in between): equal, the
 * builder's base is that one. */
static int publish_next(shmds_region *r, shmds_table *t)
{
    for (;;) {
        uint64_t v = version_now(t);
        shmds_table_builder *b;
        int rc = shmds_table_build(r, "t", nkeys(v + 1), &b);
        if (rc != 0)
            return rc;
        if (version_now(t) != v) {
            shmds_table_abort(b);
            continue;
        }
        char k[32], val[128];
        for (unsigned i = 0; i < nkeys(v + 1); i++) {
            size_t kl = key_of(i, k), vl = val_of(v + 1, i, val);
            if ((rc = shmds_table_add(b, k, kl, val, vl)) != 0) {
                shmds_table_abort(b);
                return rc;
            }
        }
        uint64_t got = 0;
        rc = shmds_table_publish(b, &got);
        return rc == 0 && got != v + 1 ? -EPROTO : rc;
    }
}

/* A builder that publishes version (current + 1) forever. */
static int builder(void *arg)
{
    (void)arg;
    shmds_region *r;
    shmds_table *t;
    if (shmds_region_open(last_name, 0, &r) != 0 || shmds_table_open(r, "t", &t) != 0)
        return 3;
    for (;;) {
        int rc = publish_next(r, t);
        if (rc != 0 && rc != SHMDS_EVERSION)
            return 3;
    }
}

START_TEST(test_table_builders_and_readers_killed_at_random)
{
    shmds_region *r = make(SZ);
    ctl = tu_shared_alloc(sizeof *ctl);
    uint64_t base = baseline(r);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    enum { READERS = 3, ROUNDS = 40 };
    pid_t rd[READERS];
    struct reader_arg ra[READERS];
    for (int i = 0; i < READERS; i++) {
        ra[i] = (struct reader_arg){i, 5u + (unsigned)i};
        rd[i] = tu_fork(reader, &ra[i]);
    }
    srand(20261202);
    uint64_t versions = 1;
    shmds_table *tv;
    ck_assert_int_eq(shmds_table_open(r, "t", &tv), 0);
    for (int round = 0; round < ROUNDS; round++) {
        uint64_t v0 = version_now(tv);
        pid_t b1 = tu_fork(builder, NULL), b2 = tu_fork(builder, NULL);
        /* Every other round, let a publish land first (however slow the
         * build: valgrind), then kill at a random point of the next. */
        for (int ms = 0; round % 2 == 0 && version_now(tv) == v0 && ms < 120000; ms++)
            usleep(1000);
        usleep((useconds_t)(rand() % 20000));
        int st = tu_kill(b1);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        usleep((useconds_t)(rand() % 5000));
        st = tu_kill(b2);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        /* And one reader, killed wherever it was (inside a guard, most
         * likely), replaced by a new one. */
        int k = rand() % READERS;
        st = tu_kill(rd[k]);
        ck_assert_msg(WIFSIGNALED(st), "reader %d ended by itself: %d", k, st);
        ra[k].seed += 1000;
        rd[k] = tu_fork(reader, &ra[k]);
        shmds_table *t;
        ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
        ck_assert_int_eq(shmds_table_check(t), 0); /* reclaims dead builders */
        shmds_table_stats ts;
        ck_assert_int_eq(shmds_table_stat(t, &ts), 0);
        ck_assert_uint_eq(ts.builds, 0);
        ck_assert_uint_ge(ts.version, versions);
        versions = ts.version;
        shmds_table_close(t);
    }
    ctl->stop = 1;
    for (int i = 0; i < READERS; i++) {
        int st = tu_wait(rd[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d: status %d", i, st);
    }
    ck_assert_uint_gt(versions, ROUNDS / 2); /* builders did publish between kills */
    shmds_table_close(tv);
    /* Exact accounting: destroying the table gives back every byte. */
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    ck_assert_int_eq(shmds_table_check(t), 0);
    ck_assert_int_eq(shmds_table_destroy(t), 0);
    ck_assert_uint_eq(used_after_reclaim(r), base);
    shmds_region_close(r);
}
END_TEST

#ifdef SHMDS_FAULT_INJECTION
static const char *const fault_points[] = {
    "table.publish.claimed",     "table.publish.allocated", "table.publish.filled",
    "table.publish.prev_logged", "table.publish.swapped",   "table.publish.handed_over",
    "table.publish.retired",
};

static int fault_child(void *arg)
{
    setenv("SHMDS_FAULT", arg, 1);
    shmds_region *r;
    if (shmds_region_open(last_name, 0, &r) != 0)
        return 3;
    shmds_table *t;
    if (shmds_table_open(r, "t", &t) != 0)
        return 3;
    return publish_next(r, t) == 0 ? 0 : 3;
}

START_TEST(test_table_every_fault_point_is_repaired)
{
    shmds_region *r = make(SZ);
    uint64_t base = baseline(r);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    for (size_t p = 0; p < sizeof fault_points / sizeof fault_points[0]; p++) {
        uint64_t before = version_now(t);
        int st = tu_wait(tu_fork(fault_child, (void *)fault_points[p]), 30000);
        ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: not reached",
                      fault_points[p]);
        ck_assert_int_eq(shmds_table_check(t), 0);
        uint64_t after = version_now(t);
        ck_assert(after == before || after == before + 1);
        /* Whichever it is, it is whole. */
        shmds_guard *g;
        ck_assert_int_eq(shmds_guard_enter(r, &g), 0);
        uint64_t ver;
        for (unsigned i = 0; i < KEYS_MAX; i += 3)
            ck_assert_msg(check_answer(t, g, i, &ver) == 0, "%s: key %u", fault_points[p], i);
        shmds_guard_leave(g);
        ck_assert_uint_eq(ver, after);
        /* One version's block and the table's header, nothing else. */
        shmds_table_stats ts;
        ck_assert_int_eq(shmds_table_stat(t, &ts), 0);
        ck_assert_uint_eq(ts.builds, 0);
    }
    ck_assert_int_eq(shmds_table_destroy(t), 0);
    ck_assert_uint_eq(used_after_reclaim(r), base);
    shmds_region_close(r);
}
END_TEST

/* A builder killed with its block filled: shmds_region_reclaim frees the
 * block (no build, publish or check of that table needed). */
START_TEST(test_table_region_reclaim_frees_a_dead_builders_block)
{
    shmds_region *r = make(SZ);
    ck_assert_int_eq(publish_version(r, "t", 1, NULL), 0);
    uint64_t one = used_after_reclaim(r);
    shmds_table *t;
    ck_assert_int_eq(shmds_table_open(r, "t", &t), 0);
    int st = tu_wait(tu_fork(fault_child, (void *)"table.publish.filled"), 30000);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    shmds_table_stats ts;
    ck_assert_int_eq(shmds_table_stat(t, &ts), 0);
    ck_assert_uint_eq(ts.builds, 1);
    ck_assert_uint_gt(heap(r).used_bytes, one);
    ck_assert_int_eq(shmds_region_reclaim(r), 0);
    ck_assert_int_eq(shmds_table_stat(t, &ts), 0);
    ck_assert_uint_eq(ts.builds, 0);
    ck_assert_uint_eq(ts.reclaimed, 1);
    ck_assert_uint_eq(ts.version, 1);
    ck_assert_uint_eq(heap(r).used_bytes, one);
    shmds_table_close(t);
    shmds_region_close(r);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("table");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_table_publish_then_get_every_key);
    tcase_add_test(core, test_table_foreach_in_add_order_and_stops);
    tcase_add_test(core, test_table_key_added_twice_keeps_last_value);
    tcase_add_test(core, test_table_before_first_publish_and_empty_version);
    tcase_add_test(core, test_table_get_ref_outlives_republish_until_guard_left);
    tcase_add_test(core, test_table_handle_follows_versions_at_a_reused_offset);
    tcase_add_test(core, test_table_racing_builders_first_publish_wins);
    tcase_add_test(core, test_table_destroy_returns_every_byte);
    suite_add_tcase(s, core);

    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_table_bad_arguments_are_einval_and_small_buffer_enobufs);
    tcase_add_test(limits, test_table_names_and_types);
    tcase_add_test(limits, test_table_readonly_attach_reads_and_refuses_builds);
    tcase_add_test(limits, test_table_damaged_version_is_ecorrupt_never_a_crash);
    suite_add_tcase(s, limits);

    TCase *mp = tcase_create("multiprocess");
    tcase_add_test(mp, test_table_readers_in_many_processes_see_whole_versions);
    tcase_add_test(mp, test_table_threads_sharing_a_handle_see_whole_versions);
    suite_add_tcase(s, mp);

    TCase *crash = tcase_create("crash");
    tcase_add_test(crash, test_table_builders_and_readers_killed_at_random);
#ifdef SHMDS_FAULT_INJECTION
    tcase_add_test(crash, test_table_every_fault_point_is_repaired);
    tcase_add_test(crash, test_table_region_reclaim_frees_a_dead_builders_block);
#endif
    suite_add_tcase(s, crash);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
