/* The shared list and intrusive links: order, bad input, damaged links,
 * read-only snapshots, several processes at once, and SIGKILLs at random
 * points with every acknowledged operation accounted for. */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define SZ (4u * 1024 * 1024)

static const char *last_name;

static shmds_region *make(size_t size)
{
    last_name = tu_name("ls");
    shmds_region *r = NULL;
    int rc = shmds_region_create(last_name, size, NULL, &r);
    ck_assert_msg(rc == 0, "create: %s", shmds_errname(rc));
    return r;
}

static shmds_list *make_list(shmds_region *r, const char *name)
{
    shmds_list *l = NULL;
    int rc = shmds_list_create(r, name, &l);
    ck_assert_msg(rc == 0, "list_create: %s", shmds_errname(rc));
    return l;
}

static uint64_t used_blocks(shmds_region *r)
{
    shmds_alloc_stats st;
    int rc = shmds_alloc_stats_get(r, &st);
    ck_assert_msg(rc == 0, "alloc_stats_get: %s", shmds_errname(rc));
    return st.used_blocks;
}

/* ---- elements: an id and id-derived filler of id-derived length ---- */

#define ELEM_MAX (8 + 61)

static size_t elem_make(uint64_t id, unsigned char *buf)
{
    size_t n = 8 + (size_t)(id % 62);
    memcpy(buf, &id, 8);
    for (size_t i = 8; i < n; i++)
        buf[i] = (unsigned char)(id * 31 + i);
    return n;
}

/* The id of a well-formed element, or UINT64_MAX. */
static uint64_t elem_id(const void *data, size_t len)
{
    uint64_t id;
    if (len < 8)
        return UINT64_MAX;
    memcpy(&id, data, 8);
    const unsigned char *p = data;
    if (len != 8 + (size_t)(id % 62))
        return UINT64_MAX;
    for (size_t i = 8; i < len; i++)
        if (p[i] != (unsigned char)(id * 31 + i))
            return UINT64_MAX;
    return id;
}

static void push_id(shmds_list *l, int back, uint64_t id)
{
    unsigned char b[ELEM_MAX];
    size_t n = elem_make(id, b);
    int rc = back ? shmds_list_push_back(l, b, n) : shmds_list_push_front(l, b, n);
    ck_assert_msg(rc == 0, "push: %s", shmds_errname(rc));
}

/* 0 and the id, or the error. */
static int pop_id(shmds_list *l, int back, uint64_t *id)
{
    unsigned char b[ELEM_MAX];
    size_t n;
    int rc = back ? shmds_list_pop_back(l, b, sizeof b, &n) : shmds_list_pop_front(l, b, sizeof b, &n);
    if (rc == 0) {
        *id = elem_id(b, n);
        ck_assert_msg(*id != UINT64_MAX, "popped a damaged element");
    }
    return rc;
}

/* Collect the ids in list order. */
struct ids {
    uint64_t *v;
    size_t n, cap;
    int bad;
};

static int collect(const void *data, size_t len, void *arg)
{
    struct ids *s = arg;
    uint64_t id = elem_id(data, len);
    if (id == UINT64_MAX)
        s->bad = 1;
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 256;
        s->v = realloc(s->v, s->cap * sizeof *s->v);
        ck_assert_ptr_nonnull(s->v);
    }
    s->v[s->n++] = id;
    return 0;
}

static struct ids list_ids(shmds_list *l)
{
    struct ids s = {NULL, 0, 0, 0};
    int rc = shmds_list_foreach(l, collect, &s);
    ck_assert_msg(rc == 0, "foreach: %s", shmds_errname(rc));
    ck_assert_int_eq(s.bad, 0);
    return s;
}

/* ---- core ---- */

START_TEST(test_list_push_pop_both_ends)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    size_t n = 99;
    ck_assert_int_eq(shmds_list_len(l, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(shmds_list_push_back(l, "b", 1), 0);
    ck_assert_int_eq(shmds_list_push_back(l, "cc", 2), 0);
    ck_assert_int_eq(shmds_list_push_front(l, "aaa", 3), 0);
    ck_assert_int_eq(shmds_list_push_front(l, NULL, 0), 0);
    ck_assert_int_eq(shmds_list_len(l, &n), 0);
    ck_assert_uint_eq(n, 4);
    ck_assert_int_eq(shmds_list_check(l), 0);

    char buf[8];
    ck_assert_int_eq(shmds_list_pop_front(l, buf, sizeof buf, &n), 0);
    ck_assert_uint_eq(n, 0);
    ck_assert_int_eq(shmds_list_pop_back(l, buf, sizeof buf, &n), 0);
    ck_assert(n == 2 && memcmp(buf, "cc", 2) == 0);
    ck_assert_int_eq(shmds_list_pop_front(l, buf, sizeof buf, &n), 0);
    ck_assert(n == 3 && memcmp(buf, "aaa", 3) == 0);
    ck_assert_int_eq(shmds_list_pop_back(l, buf, sizeof buf, &n), 0);
    ck_assert(n == 1 && buf[0] == 'b');
    ck_assert_int_eq(shmds_list_pop_back(l, buf, sizeof buf, &n), -ENOENT);
    ck_assert_int_eq(shmds_list_check(l), 0);
    shmds_list_close(l);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

static int stop_at_ten(const void *data, size_t len, void *arg)
{
    int *calls = arg;
    (void)data;
    (void)len;
    return ++*calls == 10 ? 7 : 0;
}

/* Lengths no heap can hold, up to SIZE_MAX: -ENOMEM before the data is
 * read (the element size would wrap), the list and heap unchanged. */
START_TEST(test_list_push_sizes_that_overflow_are_enomem)
{
    shmds_region *r = make(1 << 20);
    shmds_list *l = make_list(r, "huge");
    ck_assert_int_eq(shmds_list_push_back(l, "keep", 4), 0);
    uint64_t blocks = used_blocks(r);
    for (size_t i = 0; i < TU_HUGE_SIZES; i++) {
        ck_assert_int_eq(shmds_list_push_back(l, "x", tu_huge_sizes[i]), -ENOMEM);
        ck_assert_int_eq(shmds_list_push_front(l, "x", tu_huge_sizes[i]), -ENOMEM);
        ck_assert_int_eq(shmds_region_check(r), 0);
        ck_assert_uint_eq(used_blocks(r), blocks);
        size_t n;
        ck_assert_int_eq(shmds_list_len(l, &n), 0);
        ck_assert_uint_eq(n, 1);
    }
    char buf[8];
    size_t len;
    ck_assert_int_eq(shmds_list_pop_front(l, buf, sizeof buf, &len), 0);
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(memcmp(buf, "keep", 4), 0);
    ck_assert_int_eq(shmds_list_destroy(l), 0);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_list_foreach_in_order_and_stops)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    for (uint64_t i = 50; i < 100; i++)
        push_id(l, 1, i);
    for (uint64_t i = 50; i-- > 0;)
        push_id(l, 0, i);
    struct ids s = list_ids(l);
    ck_assert_uint_eq(s.n, 100);
    for (size_t i = 0; i < s.n; i++)
        ck_assert_uint_eq(s.v[i], i);
    free(s.v);
    int calls = 0;
    ck_assert_int_eq(shmds_list_foreach(l, stop_at_ten, &calls), 7);
    ck_assert_int_eq(calls, 10);
    ck_assert_int_eq(shmds_list_check(l), 0);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

static int push_from_callback(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    return shmds_list_push_back(arg, "x", 1);
}

START_TEST(test_list_foreach_callback_cannot_deadlock)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    ck_assert_int_eq(shmds_list_push_back(l, "a", 1), 0);
    ck_assert_int_eq(shmds_list_foreach(l, push_from_callback, l), -EDEADLK);
    size_t n;
    ck_assert_int_eq(shmds_list_len(l, &n), 0);
    ck_assert_uint_eq(n, 1);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

static int child_pushes(void *arg)
{
    shmds_region *r;
    if (shmds_region_open(arg, 0, &r) != 0)
        return 1;
    shmds_list *l;
    if (shmds_list_open(r, "shared", &l) != 0)
        return 2;
    static unsigned char big[65536];
    memset(big, 0xab, sizeof big);
    if (shmds_list_push_back(l, "from the child", 14) != 0 ||
        shmds_list_push_back(l, big, sizeof big) != 0)
        return 3;
    shmds_list_close(l);
    return shmds_region_close(r) == 0 ? 0 : 4;
}

START_TEST(test_list_open_by_name_in_other_process)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "shared");
    int st = tu_wait(tu_fork(child_pushes, (void *)last_name), 30000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char buf[32];
    size_t n;
    ck_assert_int_eq(shmds_list_pop_front(l, buf, sizeof buf, &n), 0);
    ck_assert(n == 14 && memcmp(buf, "from the child", 14) == 0);
    static unsigned char big[65536];
    ck_assert_int_eq(shmds_list_pop_front(l, big, sizeof big, &n), 0);
    ck_assert_uint_eq(n, sizeof big);
    ck_assert(big[0] == 0xab && big[sizeof big - 1] == 0xab);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_list_destroy_returns_memory)
{
    shmds_region *r = make(SZ);
    uint64_t before = used_blocks(r), obefore = tu_obj_blocks(r);
    shmds_list *l = make_list(r, "gone");
    for (uint64_t i = 0; i < 1000; i++)
        push_id(l, (int)(i & 1), i);
    ck_assert_uint_eq(tu_obj_blocks(r), obefore + 1 + 1000);
    ck_assert_int_eq(shmds_list_destroy(l), 0);
    ck_assert_uint_eq(used_blocks(r), before);
    ck_assert_int_eq(shmds_list_open(r, "gone", &l), -ENOENT);
    /* The name is free again. */
    l = make_list(r, "gone");
    ck_assert_int_eq(shmds_list_destroy(l), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

/* ---- intrusive links ---- */

struct item {
    uint32_t id;
    uint32_t pad;
    shmds_link link;
};

static shmds_off_t item_new(shmds_region *r, uint32_t id)
{
    shmds_off_t off;
    ck_assert_int_eq(shmds_alloc(r, sizeof(struct item), &off), 0);
    struct item *it = shmds_ptr(r, off);
    it->id = id;
    it->link.next = it->link.prev = SHMDS_NULL;
    return shmds_off(r, &it->link);
}

struct seen {
    uint32_t ids[16];
    int n;
    int remove_odd;
};

static int see(shmds_region *r, shmds_off_t node, void *arg)
{
    struct seen *s = arg;
    struct item *it = shmds_link_entry(r, node, struct item, link);
    s->ids[s->n++] = it->id;
    if (s->remove_odd && (it->id & 1))
        return shmds_link_remove(r, node);
    return 0;
}

START_TEST(test_list_link_helpers)
{
    shmds_region *r = make(SZ);
    shmds_off_t head = item_new(r, 0); /* an item's link used as the head */
    ck_assert_int_eq(shmds_link_init(r, head), 0);
    ck_assert_int_eq(shmds_link_empty(r, head), 1);
    shmds_off_t a = item_new(r, 1), b = item_new(r, 2), c = item_new(r, 3), d = item_new(r, 4);
    ck_assert_int_eq(shmds_link_insert_before(r, head, b), 0); /* back: b */
    ck_assert_int_eq(shmds_link_insert_after(r, head, a), 0);  /* front: a b */
    ck_assert_int_eq(shmds_link_insert_before(r, head, d), 0); /* a b d */
    ck_assert_int_eq(shmds_link_insert_after(r, b, c), 0);     /* a b c d */
    ck_assert_int_eq(shmds_link_empty(r, head), 0);
    ck_assert_int_eq(shmds_link_insert_after(r, a, b), -EINVAL); /* already after a */
    ck_assert_int_eq(shmds_link_insert_after(r, a, a), -EINVAL);

    struct seen s = {{0}, 0, 0};
    ck_assert_int_eq(shmds_link_foreach(r, head, see, &s), 0);
    ck_assert_int_eq(s.n, 4);
    for (int i = 0; i < 4; i++)
        ck_assert_uint_eq(s.ids[i], (uint32_t)i + 1);

    shmds_off_t x;
    ck_assert_int_eq(shmds_link_next(r, head, &x), 0);
    ck_assert_uint_eq(x, a);
    ck_assert_int_eq(shmds_link_prev(r, head, &x), 0);
    ck_assert_uint_eq(x, d);
    ck_assert_int_eq(shmds_link_next(r, d, &x), 0);
    ck_assert_uint_eq(x, head);

    /* The callback may remove the node it is given. */
    s = (struct seen){{0}, 0, 1};
    ck_assert_int_eq(shmds_link_foreach(r, head, see, &s), 0);
    ck_assert_int_eq(s.n, 4);
    s = (struct seen){{0}, 0, 0};
    ck_assert_int_eq(shmds_link_foreach(r, head, see, &s), 0);
    ck_assert(s.n == 2 && s.ids[0] == 2 && s.ids[1] == 4);
    ck_assert_int_eq(shmds_link_remove(r, a), -EINVAL); /* in no list */
    ck_assert_int_eq(shmds_link_remove(r, b), 0);
    ck_assert_int_eq(shmds_link_remove(r, d), 0);
    ck_assert_int_eq(shmds_link_empty(r, head), 1);
    ck_assert_int_eq(shmds_link_remove(r, head), -EINVAL); /* an empty head */
    shmds_region_close(r);
}
END_TEST

START_TEST(test_list_link_damage_is_ecorrupt)
{
    shmds_region *r = make(SZ);
    shmds_off_t head = item_new(r, 0), a = item_new(r, 1), b = item_new(r, 2);
    ck_assert_int_eq(shmds_link_init(r, head), 0);
    ck_assert_int_eq(shmds_link_insert_before(r, head, a), 0);
    ck_assert_int_eq(shmds_link_insert_before(r, head, b), 0);
    shmds_link *la = shmds_ptr(r, a), *lb = shmds_ptr(r, b);

    /* Out of bounds, misaligned, and not pointing back. */
    shmds_off_t saved = la->next;
    la->next = (shmds_off_t)SZ * 2;
    ck_assert_int_eq(shmds_link_remove(r, a), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_link_insert_after(r, a, item_new(r, 9)), SHMDS_ECORRUPT);
    la->next = saved + 4;
    ck_assert_int_eq(shmds_link_next(r, a, &saved), SHMDS_ECORRUPT);
    la->next = b;
    lb->prev = head;
    ck_assert_int_eq(shmds_link_remove(r, a), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_link_foreach(r, head, see, &(struct seen){{0}, 0, 0}), SHMDS_ECORRUPT);
    /* A cycle that never returns to the head, links consistent: bounded. */
    lb->prev = a;
    lb->next = a;
    la->prev = b;
    struct seen s = {{0}, 0, 0};
    ck_assert_int_eq(shmds_link_foreach(r, a, see, &s), 0); /* a is a fine head of {b} */
    ck_assert_int_eq(s.n, 1);
    ck_assert_int_eq(shmds_link_init(r, 3), -EINVAL);
    ck_assert_int_eq(shmds_link_next(r, head, NULL), -EINVAL);
    shmds_region_close(r);
}
END_TEST

/* ---- limits ---- */

START_TEST(test_list_pop_empty_is_enoent)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    char buf[4];
    size_t n = 77;
    ck_assert_int_eq(shmds_list_pop_front(l, buf, sizeof buf, &n), -ENOENT);
    ck_assert_int_eq(shmds_list_pop_back(l, buf, sizeof buf, &n), -ENOENT);
    ck_assert_uint_eq(n, 77);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_list_small_buffer_is_enobufs_and_kept)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    ck_assert_int_eq(shmds_list_push_back(l, "0123456789", 10), 0);
    char buf[16];
    size_t n = 0;
    ck_assert_int_eq(shmds_list_pop_front(l, buf, 9, &n), -ENOBUFS);
    ck_assert_uint_eq(n, 10);
    n = 0;
    ck_assert_int_eq(shmds_list_pop_back(l, NULL, 0, &n), -ENOBUFS);
    ck_assert_uint_eq(n, 10);
    ck_assert_int_eq(shmds_list_len(l, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(shmds_list_pop_front(l, buf, 10, &n), 0);
    ck_assert(n == 10 && memcmp(buf, "0123456789", 10) == 0);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_list_names_and_types)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    shmds_list *other;
    ck_assert_int_eq(shmds_list_create(r, "l", &other), -EEXIST);
    ck_assert_int_eq(shmds_root_set(r, "user", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    ck_assert_int_eq(shmds_list_open(r, "user", &other), SHMDS_ETYPE);
    ck_assert_int_eq(shmds_list_create(r, "user", &other), -EEXIST);
    ck_assert_int_eq(shmds_list_open(r, "nobody", &other), -ENOENT);
    char longname[SHMDS_ROOT_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    ck_assert_int_eq(shmds_list_create(r, longname, &other), -EINVAL);
    ck_assert_int_eq(shmds_list_create(r, "", &other), -EINVAL);
    longname[SHMDS_ROOT_NAME_MAX] = '\0';
    ck_assert_int_eq(shmds_list_create(r, longname, &other), 0);
    ck_assert_int_eq(shmds_list_destroy(other), 0);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

static int noop_fn(const void *data, size_t len, void *arg)
{
    (void)data;
    (void)len;
    (void)arg;
    return 0;
}

START_TEST(test_list_null_args_are_einval)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    char buf[4];
    size_t n;
    ck_assert_int_eq(shmds_list_create(NULL, "x", &l), -EINVAL);
    ck_assert_int_eq(shmds_list_create(r, NULL, &l), -EINVAL);
    ck_assert_int_eq(shmds_list_create(r, "x", NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_open(r, NULL, &l), -EINVAL);
    ck_assert_int_eq(shmds_list_open(r, "l", NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_push_back(NULL, "a", 1), -EINVAL);
    ck_assert_int_eq(shmds_list_push_front(l, NULL, 1), -EINVAL);
    ck_assert_int_eq(shmds_list_pop_front(NULL, buf, 4, &n), -EINVAL);
    ck_assert_int_eq(shmds_list_pop_back(l, buf, 4, NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_pop_back(l, NULL, 4, &n), -EINVAL);
    ck_assert_int_eq(shmds_list_len(l, NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_len(NULL, &n), -EINVAL);
    ck_assert_int_eq(shmds_list_foreach(l, NULL, NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_foreach(NULL, noop_fn, NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_check(NULL), -EINVAL);
    ck_assert_int_eq(shmds_list_destroy(NULL), -EINVAL);
    shmds_list_close(NULL);
    ck_assert_int_eq(shmds_link_init(NULL, SHMDS_HEADER_SIZE), -EINVAL);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_list_readonly_region_reads_without_lock)
{
    shmds_region *r = make(SZ), *ro;
    shmds_list *l = make_list(r, "l"), *rl;
    for (uint64_t i = 0; i < 20; i++)
        push_id(l, 1, i);
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &ro), 0);
    ck_assert_int_eq(shmds_list_open(ro, "l", &rl), 0);
    size_t n;
    ck_assert_int_eq(shmds_list_len(rl, &n), 0);
    ck_assert_uint_eq(n, 20);
    struct ids s = list_ids(rl);
    ck_assert_uint_eq(s.n, 20);
    for (size_t i = 0; i < s.n; i++)
        ck_assert_uint_eq(s.v[i], i);
    free(s.v);
    ck_assert_int_eq(shmds_list_check(rl), 0);
    ck_assert_int_eq(shmds_region_check(ro), 0);
    char buf[ELEM_MAX];
    ck_assert_int_eq(shmds_list_push_back(rl, "a", 1), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_list_push_front(rl, "a", 1), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_list_pop_front(rl, buf, sizeof buf, &n), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_list_pop_back(rl, buf, sizeof buf, &n), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_list_create(ro, "m", &rl), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_link_init(ro, SHMDS_HEADER_SIZE), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_list_destroy(rl), SHMDS_ERDONLY); /* also closes rl */
    ck_assert_int_eq(shmds_list_len(l, &n), 0);
    ck_assert_uint_eq(n, 20);
    ck_assert_int_eq(shmds_region_close(ro), 0);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

/* Offset of the first or last node of list "l": the root is the list's
 * header, whose ends[] sit at byte 80 (static-asserted in list.c). */
static shmds_off_t node_of(shmds_region *r, int back)
{
    shmds_off_t hdr;
    ck_assert_int_eq(shmds_root_get(r, "l", NULL, &hdr), 0);
    return ((uint64_t *)shmds_ptr(r, hdr + 80))[back];
}

START_TEST(test_list_damaged_links_are_ecorrupt)
{
    shmds_region *r = make(SZ);
    shmds_list *l = make_list(r, "l");
    for (uint64_t i = 0; i < 5; i++)
        push_id(l, 1, i);
    uint64_t *head = shmds_ptr(r, node_of(r, 0));
    uint64_t *tail = shmds_ptr(r, node_of(r, 1));
    char buf[ELEM_MAX];
    size_t n;

    /* A cycle: the tail's next back to the head. Walks end, never hang. */
    tail[1] = node_of(r, 0);
    ck_assert_int_eq(shmds_list_check(l), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_list_foreach(l, noop_fn, NULL), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_list_pop_back(l, buf, sizeof buf, &n), SHMDS_ECORRUPT);
    tail[1] = 0;
    ck_assert_int_eq(shmds_list_check(l), 0);

    /* Out of bounds, then a prev link that disagrees with the forward walk. */
    uint64_t saved = head[1];
    head[1] = (uint64_t)SZ + 4096;
    ck_assert_int_eq(shmds_list_check(l), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_list_foreach(l, noop_fn, NULL), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_list_pop_front(l, buf, sizeof buf, &n), SHMDS_ECORRUPT);
    head[1] = saved;
    head[0] = saved;
    ck_assert_int_eq(shmds_list_check(l), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_list_pop_front(l, buf, sizeof buf, &n), SHMDS_ECORRUPT);
    head[0] = 0;
    /* A payload length past its block. */
    head[2] += 4096;
    ck_assert_int_eq(shmds_list_check(l), SHMDS_ECORRUPT);
    head[2] -= 4096;
    ck_assert_int_eq(shmds_list_check(l), 0);
    /* Nothing was changed by the refused calls. */
    struct ids s = list_ids(l);
    ck_assert_uint_eq(s.n, 5);
    free(s.v);
    shmds_list_close(l);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_list_full_heap_is_enomem)
{
    shmds_region *r = make(64 * 1024);
    uint64_t before = used_blocks(r);
    shmds_list *l = make_list(r, "l");
    static unsigned char kb[1024];
    int rc, pushed = 0;
    while ((rc = shmds_list_push_back(l, kb, sizeof kb)) == 0)
        pushed++;
    ck_assert_int_eq(rc, -ENOMEM);
    ck_assert_int_gt(pushed, 10);
    ck_assert_int_eq(shmds_list_push_back(l, kb, SIZE_MAX / 2), -ENOMEM);
    ck_assert_int_eq(shmds_list_check(l), 0);
    size_t n;
    ck_assert_int_eq(shmds_list_len(l, &n), 0);
    ck_assert_uint_eq(n, (size_t)pushed);
    while (shmds_list_pop_front(l, kb, sizeof kb, &n) == 0)
        pushed--;
    ck_assert_int_eq(pushed, 0);
    ck_assert_int_eq(shmds_list_destroy(l), 0);
    ck_assert_uint_eq(used_blocks(r), before);
    shmds_region_close(r);
}
END_TEST

/* ---- multiprocess ---- */

#define MP_OPS 4000

struct mp {
    uint64_t popped[2][MP_OPS];
    int npopped[2];
    int pushed[2];
};

static struct mp *mp;
static shmds_list *mp_list;

static int mixed_worker(void *arg)
{
    int me = (int)(intptr_t)arg;
    unsigned seed = 12345u + (unsigned)me;
    for (int i = 0; i < MP_OPS; i++) {
        int op = (int)(rand_r(&seed) % 10);
        if (op < 6) {
            unsigned char b[ELEM_MAX];
            uint64_t id = (uint64_t)me << 32 | (uint64_t)mp->pushed[me];
            size_t n = elem_make(id, b);
            int rc = (op & 1) ? shmds_list_push_back(mp_list, b, n) : shmds_list_push_front(mp_list, b, n);
            if (rc != 0)
                return 1;
            mp->pushed[me]++;
        } else {
            unsigned char b[ELEM_MAX];
            size_t n;
            int rc = (op & 1) ? shmds_list_pop_back(mp_list, b, sizeof b, &n)
                              : shmds_list_pop_front(mp_list, b, sizeof b, &n);
            if (rc == -ENOENT)
                continue;
            if (rc != 0 || elem_id(b, n) == UINT64_MAX)
                return 2;
            mp->popped[me][mp->npopped[me]++] = elem_id(b, n);
        }
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_list_two_processes_both_ends_account_for_everything)
{
    shmds_region *r = make(SZ);
    mp_list = make_list(r, "l");
    mp = tu_shared_alloc(sizeof *mp);
    pid_t a = tu_fork(mixed_worker, (void *)0), b = tu_fork(mixed_worker, (void *)1);
    int sa = tu_wait(a, 50000), sb = tu_wait(b, 50000);
    ck_assert(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
    ck_assert(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
    ck_assert_int_eq(shmds_list_check(mp_list), 0);

    struct ids left = list_ids(mp_list);
    size_t total = left.n + (size_t)mp->npopped[0] + (size_t)mp->npopped[1];
    ck_assert_uint_eq(total, (size_t)mp->pushed[0] + (size_t)mp->pushed[1]);
    uint64_t *all = malloc(total * sizeof *all);
    memcpy(all, left.v, left.n * sizeof *all);
    memcpy(all + left.n, mp->popped[0], (size_t)mp->npopped[0] * sizeof *all);
    memcpy(all + left.n + mp->npopped[0], mp->popped[1], (size_t)mp->npopped[1] * sizeof *all);
    qsort(all, total, sizeof *all, cmp_u64);
    /* Exactly the ids produced, each once. */
    size_t k = 0;
    for (int me = 0; me < 2; me++)
        for (int i = 0; i < mp->pushed[me]; i++, k++)
            ck_assert_uint_eq(all[k], (uint64_t)me << 32 | (uint64_t)i);
    free(all);
    free(left.v);
    shmds_list_close(mp_list);
    shmds_region_close(r);
}
END_TEST

#define ORDER_N 5000

static int producer(void *arg)
{
    int back = (int)(intptr_t)arg;
    for (uint64_t i = 0; i < ORDER_N; i++) {
        unsigned char b[ELEM_MAX];
        size_t n = elem_make(i, b);
        int rc = back ? shmds_list_push_back(mp_list, b, n) : shmds_list_push_front(mp_list, b, n);
        if (rc != 0)
            return 1;
    }
    return 0;
}

START_TEST(test_list_one_producer_order_kept)
{
    shmds_region *r = make(SZ);
    mp_list = make_list(r, "l");
    for (int back = 0; back < 2; back++) {
        pid_t p = tu_fork(producer, (void *)(intptr_t)back);
        uint64_t expect = 0;
        while (expect < ORDER_N) {
            uint64_t id;
            int rc = pop_id(mp_list, !back, &id); /* the other end: FIFO */
            if (rc == -ENOENT) {
                sched_yield();
                continue;
            }
            ck_assert_int_eq(rc, 0);
            ck_assert_uint_eq(id, expect);
            expect++;
        }
        int st = tu_wait(p, 50000);
        ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    shmds_list_close(mp_list);
    shmds_region_close(r);
}
END_TEST

/* Writer: push i at the back, pop at the front, so the list is always a run
 * of consecutive ids. A read-only reader must only ever see such runs. */
static int sliding_writer(void *arg)
{
    (void)arg;
    for (uint64_t i = 0; i < 20000; i++) {
        unsigned char b[ELEM_MAX];
        size_t n = elem_make(i, b);
        if (shmds_list_push_back(mp_list, b, n) != 0)
            return 1;
        if (i >= 30 && shmds_list_pop_front(mp_list, b, sizeof b, &n) != 0)
            return 2;
    }
    return 0;
}

START_TEST(test_list_readonly_reader_sees_consistent_snapshots)
{
    shmds_region *r = make(SZ), *ro;
    mp_list = make_list(r, "l");
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &ro), 0);
    shmds_list *rl;
    ck_assert_int_eq(shmds_list_open(ro, "l", &rl), 0);
    pid_t w = tu_fork(sliding_writer, NULL);
    int snapshots = 0, done = 0;
    while (!done) {
        done = waitpid(w, NULL, WNOHANG) == w;
        struct ids s = list_ids(rl);
        for (size_t i = 1; i < s.n; i++)
            ck_assert_uint_eq(s.v[i], s.v[i - 1] + 1);
        ck_assert_uint_le(s.n, 31);
        free(s.v);
        ck_assert_int_eq(shmds_list_check(rl), 0);
        snapshots++;
    }
    ck_assert_int_gt(snapshots, 0);
    size_t n;
    ck_assert_int_eq(shmds_list_len(rl, &n), 0);
    ck_assert_uint_eq(n, 30);
    shmds_list_close(rl);
    ck_assert_int_eq(shmds_region_close(ro), 0);
    shmds_list_close(mp_list);
    shmds_region_close(r);
}
END_TEST

/* ---- crash ---- */

#define KILLS 300

enum { OP_PUSH_FRONT, OP_PUSH_BACK, OP_POP_FRONT, OP_POP_BACK };
enum { REC_INTENT = 1, REC_DONE = 2 };

struct rec {
    uint32_t kind, op;
    uint64_t id; /* pushed id; popped id when done */
    int32_t rc;
    uint32_t pad;
};

static tu_chan crash_chan;
static uint64_t crash_next_id;
static unsigned crash_seed;

static int crash_worker(void *arg)
{
    (void)arg;
    close(crash_chan.rd);
    for (;;) {
        size_t len = 0;
        if (shmds_list_len(mp_list, &len) != 0)
            return 1;
        unsigned x = (unsigned)rand_r(&crash_seed) % 100;
        struct rec rc = {REC_INTENT, 0, 0, 0, 0};
        if (x < (len > 40 ? 30u : 60u)) {
            rc.op = (x & 1) ? OP_PUSH_BACK : OP_PUSH_FRONT;
            rc.id = crash_next_id++;
        } else {
            rc.op = (x & 1) ? OP_POP_BACK : OP_POP_FRONT;
        }
        tu_send(&crash_chan, &rc, sizeof rc);
        unsigned char b[ELEM_MAX];
        size_t n;
        if (rc.op == OP_PUSH_BACK || rc.op == OP_PUSH_FRONT) {
            n = elem_make(rc.id, b);
            rc.rc = rc.op == OP_PUSH_BACK ? shmds_list_push_back(mp_list, b, n)
                                          : shmds_list_push_front(mp_list, b, n);
        } else {
            rc.rc = rc.op == OP_POP_BACK ? shmds_list_pop_back(mp_list, b, sizeof b, &n)
                                         : shmds_list_pop_front(mp_list, b, sizeof b, &n);
            rc.id = rc.rc == 0 ? elem_id(b, n) : 0;
        }
        rc.kind = REC_DONE;
        tu_send(&crash_chan, &rc, sizeof rc);
    }
}

/* The parent's model of the list: ids in order. */
struct model {
    uint64_t v[8192];
    size_t n;
};

static void model_push(struct model *m, int back, uint64_t id)
{
    ck_assert_uint_lt(m->n, sizeof m->v / sizeof m->v[0]);
    if (!back)
        memmove(m->v + 1, m->v, m->n * sizeof m->v[0]);
    m->v[back ? m->n : 0] = id;
    m->n++;
}

static uint64_t model_pop(struct model *m, int back)
{
    ck_assert_uint_gt(m->n, 0);
    uint64_t id = back ? m->v[m->n - 1] : m->v[0];
    if (!back)
        memmove(m->v, m->v + 1, (m->n - 1) * sizeof m->v[0]);
    m->n--;
    return id;
}

static int model_eq(const struct model *m, const struct ids *s)
{
    return m->n == s->n && memcmp(m->v, s->v, m->n * sizeof m->v[0]) == 0;
}

static void model_apply_done(struct model *m, const struct rec *d)
{
    int back = d->op == OP_PUSH_BACK || d->op == OP_POP_BACK;
    if (d->op == OP_PUSH_BACK || d->op == OP_PUSH_FRONT) {
        ck_assert_msg(d->rc == 0, "acknowledged push failed: %s", shmds_errname(d->rc));
        model_push(m, back, d->id);
    } else if (d->rc == -ENOENT) {
        ck_assert_uint_eq(m->n, 0);
    } else {
        ck_assert_msg(d->rc == 0, "acknowledged pop failed: %s", shmds_errname(d->rc));
        ck_assert_uint_eq(d->id, model_pop(m, back));
    }
}

START_TEST(test_list_random_kills_keep_acknowledged_ops)
{
    static struct model m;
    m.n = 0;
    shmds_region *r = make(SZ);
    uint64_t base_blocks = used_blocks(r);
    mp_list = make_list(r, "l");
    unsigned seed = 0x5eed;
    int inflight_applied = 0, inflight_dropped = 0;

    for (int kill_no = 0; kill_no < KILLS; kill_no++) {
        crash_next_id = (uint64_t)kill_no << 32;
        crash_seed = seed + (unsigned)kill_no;
        tu_chan_open(&crash_chan);
        pid_t w = tu_fork(crash_worker, NULL);
        close(crash_chan.wr);
        /* Let it acknowledge a random number of operations, then kill it
         * wherever it is. */
        int wait_for = (int)(rand_r(&seed) % 24);
        struct rec rc, pending = {0, 0, 0, 0, 0};
        int have_pending = 0, got = 0;
        while (got < wait_for && tu_recv(&crash_chan, &rc, sizeof rc) == 1) {
            got++;
            if (rc.kind == REC_INTENT) {
                pending = rc;
                have_pending = 1;
            } else {
                model_apply_done(&m, &rc);
                have_pending = 0;
            }
        }
        int st = tu_kill(w);
        ck_assert_msg(WIFSIGNALED(st), "worker exited by itself (%d) at kill %d", st, kill_no);
        while (tu_recv(&crash_chan, &rc, sizeof rc) == 1) {
            if (rc.kind == REC_INTENT) {
                pending = rc;
                have_pending = 1;
            } else {
                model_apply_done(&m, &rc);
                have_pending = 0;
            }
        }
        close(crash_chan.rd);

        /* Taking the lock repairs whatever the worker left. */
        struct ids s = list_ids(mp_list);
        if (!model_eq(&m, &s)) {
            ck_assert_msg(have_pending, "kill %d: list differs with no operation in flight",
                          kill_no);
            int back = pending.op == OP_PUSH_BACK || pending.op == OP_POP_BACK;
            if (pending.op == OP_PUSH_BACK || pending.op == OP_PUSH_FRONT)
                model_push(&m, back, pending.id);
            else
                model_pop(&m, back);
            ck_assert_msg(model_eq(&m, &s), "kill %d: in-flight op %u half done", kill_no,
                          pending.op);
            inflight_applied++;
        } else if (have_pending) {
            inflight_dropped++;
        }
        free(s.v);
        ck_assert_int_eq(shmds_list_check(mp_list), 0);
        /* No leak: the header plus one block per element. */
        ck_assert_uint_eq(tu_obj_blocks(r), base_blocks + 1 + m.n);
    }
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_info info;
    shmds_region_info_get(r, &info);
    printf("list crash: %d kills, in-flight op done %d / undone %d, %" PRIu64
           " repairs, %zu elements left\n",
           KILLS, inflight_applied, inflight_dropped, info.epoch, m.n);
    ck_assert_int_eq(shmds_list_destroy(mp_list), 0);
    ck_assert_uint_eq(used_blocks(r), base_blocks);
    shmds_region_close(r);
}
END_TEST

#ifdef SHMDS_FAULT_INJECTION
/* Every fault point of a push or pop, with every op, and then a repairer
 * killed at each point of the repair: the next locker still repairs. */
static const char *const op_points[] = {
    "list.push.logged",    "list.push.allocated", "list.push.filled",
    "list.push.committed", "list.push.neighbour_linked", "list.push.linked",
    "list.pop.logging",    "list.pop.committed",  "list.pop.ends_moved",
    "list.pop.unlinked",   "list.pop.freed",
};
static const char *const repair_points[] = {
    NULL, "list.repair.start", "list.repair.settled", "list.repair.push_undone",
};

struct fault_job {
    const char *point;
    int op;
    uint64_t id;
};

static int fault_child(void *arg)
{
    struct fault_job *j = arg;
    setenv("SHMDS_FAULT", j->point, 1);
    if (j->op == OP_PUSH_BACK || j->op == OP_PUSH_FRONT) {
        push_id(mp_list, j->op == OP_PUSH_BACK, j->id);
        return 0;
    }
    uint64_t id;
    return pop_id(mp_list, j->op == OP_POP_BACK, &id) == 0 && id == j->id ? 0 : 1;
}

static int fault_len(void *arg)
{
    size_t n;
    setenv("SHMDS_FAULT", arg, 1);
    return shmds_list_len(mp_list, &n) == 0 ? 0 : 1;
}

START_TEST(test_list_every_fault_point_is_repaired)
{
    static struct model m;
    m.n = 0;
    shmds_region *r = make(SZ);
    uint64_t base_blocks = used_blocks(r);
    mp_list = make_list(r, "l");
    uint64_t next_id = 1;
    for (size_t p = 0; p < sizeof op_points / sizeof op_points[0]; p++) {
        int killed = 0;
        for (size_t q = 0; q < sizeof repair_points / sizeof repair_points[0]; q++) {
            for (int op = 0; op < 4; op++) {
                while (m.n < 2) {
                    push_id(mp_list, 1, next_id);
                    model_push(&m, 1, next_id++);
                }
                int back = op == OP_PUSH_BACK || op == OP_POP_BACK;
                int is_push = op == OP_PUSH_BACK || op == OP_PUSH_FRONT;
                struct fault_job j = {op_points[p], op, is_push ? next_id++ : 0};
                if (!is_push)
                    j.id = back ? m.v[m.n - 1] : m.v[0];
                int st = tu_wait(tu_fork(fault_child, &j), 30000);
                if (WIFEXITED(st)) {
                    ck_assert_int_eq(WEXITSTATUS(st), 0);
                    if (is_push)
                        model_push(&m, back, j.id);
                    else
                        model_pop(&m, back);
                } else {
                    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
                    killed++;
                    if (repair_points[q] != NULL) {
                        /* May or may not pass that point of the repair. */
                        st = tu_wait(tu_fork(fault_len, (void *)repair_points[q]), 30000);
                        ck_assert((WIFEXITED(st) && WEXITSTATUS(st) == 0) ||
                                  (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL));
                    }
                    struct ids s = list_ids(mp_list);
                    if (!model_eq(&m, &s)) {
                        if (is_push)
                            model_push(&m, back, j.id);
                        else
                            model_pop(&m, back);
                        ck_assert_msg(model_eq(&m, &s), "%s op %d: half done", j.point, op);
                    }
                    free(s.v);
                }
                ck_assert_int_eq(shmds_list_check(mp_list), 0);
                ck_assert_uint_eq(tu_obj_blocks(r), base_blocks + 1 + m.n);
            }
        }
        ck_assert_msg(killed > 0, "fault point %s never reached", op_points[p]);
    }
    shmds_list_close(mp_list);
    shmds_region_close(r);
}
END_TEST
#endif

int main(void)
{
    Suite *s = suite_create("list");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_list_push_pop_both_ends);
    tcase_add_test(core, test_list_push_sizes_that_overflow_are_enomem);
    tcase_add_test(core, test_list_foreach_in_order_and_stops);
    tcase_add_test(core, test_list_foreach_callback_cannot_deadlock);
    tcase_add_test(core, test_list_destroy_returns_memory);
    tcase_add_test(core, test_list_link_helpers);
    suite_add_tcase(s, core);

    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_list_pop_empty_is_enoent);
    tcase_add_test(limits, test_list_small_buffer_is_enobufs_and_kept);
    tcase_add_test(limits, test_list_names_and_types);
    tcase_add_test(limits, test_list_null_args_are_einval);
    tcase_add_test(limits, test_list_readonly_region_reads_without_lock);
    tcase_add_test(limits, test_list_damaged_links_are_ecorrupt);
    tcase_add_test(limits, test_list_link_damage_is_ecorrupt);
    tcase_add_test(limits, test_list_full_heap_is_enomem);
    suite_add_tcase(s, limits);

    TCase *mpc = tcase_create("multiprocess");
    tcase_add_test(mpc, test_list_open_by_name_in_other_process);
    tcase_add_test(mpc, test_list_two_processes_both_ends_account_for_everything);
    tcase_add_test(mpc, test_list_one_producer_order_kept);
    tcase_add_test(mpc, test_list_readonly_reader_sees_consistent_snapshots);
    suite_add_tcase(s, mpc);

    TCase *crash = tcase_create("crash");
    tcase_add_test(crash, test_list_random_kills_keep_acknowledged_ops);
#ifdef SHMDS_FAULT_INJECTION
    tcase_add_test(crash, test_list_every_fault_point_is_repaired);
#endif
    suite_add_tcase(s, crash);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
