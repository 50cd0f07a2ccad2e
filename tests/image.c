/* img_exercise: see image.h. */
#include "image.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct walk {
    shmds_region *r;
    unsigned n;
};

static int count_element(const void *data, size_t len, void *arg)
{
    (void)data;
    *(size_t *)arg += len;
    return 0;
}

/* Each entry foreach hands over is looked up again by its key. */
struct map_walk {
    shmds_map *m;
    unsigned n;
};

static int get_again(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    struct map_walk *mw = arg;
    unsigned char buf[64];
    size_t got;
    (void)v;
    (void)vl;
    if (kl > 0)
        (void)shmds_map_get(mw->m, k, kl, buf, sizeof buf, &got);
    return ++mw->n < 256 ? 0 : 1;
}

static void visit_table(shmds_region *r, const char *name);

static int visit_root(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    struct walk *w = arg;
    uint32_t t;
    shmds_off_t o, typed;
    w->n++;
    /* Look the name up again through the other entry points. */
    (void)shmds_root_get(w->r, name, &t, &o);
    (void)shmds__root_find_typed(w->r, name, type, &typed);
    /* A root may name a heap block: ask the allocator about it. */
    (void)shmds_usable_size(w->r, off);
    uint64_t usable;
    (void)shmds__alloc_block_live(w->r, off, &usable);
    if (type == SHMDS_TYPE_LIST) {
        shmds_list *l;
        if (shmds_list_open(w->r, name, &l) == 0) {
            size_t len;
            (void)shmds_list_len(l, &len);
            (void)shmds_list_foreach(l, count_element, &len);
            (void)shmds_list_check(l);
            shmds_list_close(l);
        }
    }
    if (type == SHMDS_TYPE_MAP) {
        shmds_map *m;
        if (shmds_map_open(w->r, name, &m) == 0) {
            uint64_t n;
            shmds_map_stats st;
            struct map_walk mw = {m, 0};
            (void)shmds_map_count(m, &n);
            (void)shmds_map_stats_get(m, &st);
            (void)shmds_map_foreach(m, get_again, &mw);
            char buf[64];
            size_t vl;
            (void)shmds_map_get(m, "k0", 2, buf, sizeof buf, &vl);
            /* The cache calls read versions, TTLs and the fill leases. */
            shmds_map_entry_info info;
            int64_t ttl, sum;
            shmds_fill *f = NULL;
            (void)shmds_map_get_ex(m, "k0", 2, buf, sizeof buf, &vl, SHMDS_GET_STALE, &info);
            (void)shmds_map_ttl(m, "k1", 2, &ttl);
            if (shmds_map_fetch(m, "k2", 2, buf, sizeof buf, &vl, &info, SHMDS_GET_STALE, 0, &f) ==
                SHMDS_FILL)
                (void)shmds_map_fill_abort(f);
            (void)shmds_map_expire(m, "k0", 2, 1000);
            (void)shmds_map_add_ex(m, "c0", 2, 1, 5, 1000, &sum);
            (void)shmds_map_reap(m, 64, NULL);
            (void)shmds_map_check(m);
            shmds_map_close(m);
        }
    }
    if (type == SHMDS_TYPE_QUEUE) {
        shmds_queue *q;
        if (shmds_queue_open(w->r, name, &q) == 0) {
            uint64_t n;
            shmds_queue_stats qs;
            (void)shmds_queue_len(q, &n);
            (void)shmds_queue_stats_get(q, &qs);
            (void)shmds_queue_check(q);
            /* The image is this process's own copy: receiving changes
             * nothing anyone else sees. */
            unsigned char buf[256];
            size_t len;
            for (unsigned i = 0; i < 64; i++)
                if (shmds_queue_recv(q, buf, sizeof buf, &len, 0) != 0)
                    break;
            shmds_queue_close(q);
        }
    }
    if (type == SHMDS_TYPE_TABLE)
        visit_table(w->r, name);
    return 0;
}

/* Each pair a table's walk hands over is looked up again by its key. */
static int table_get_again(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    unsigned char buf[64];
    size_t got;
    (void)v;
    (void)vl;
    (void)shmds_table_get(arg, k, kl, buf, sizeof buf, &got);
    return 0;
}

static void visit_table(shmds_region *r, const char *name)
{
    shmds_table *t;
    if (shmds_table_open(r, name, &t) != 0)
        return;
    uint64_t n, ver;
    shmds_table_stats st;
    (void)shmds_table_count(t, &n);
    (void)shmds_table_stat(t, &st);
    (void)shmds_table_foreach(t, table_get_again, t, &ver);
    shmds_guard *g;
    if (shmds_guard_enter(r, &g) == 0) {
        static const char *const keys[] = {"k0", "k1", "k2", "nope", "a much longer key than most"};
        for (unsigned i = 0; i < 5; i++) {
            const void *v;
            size_t vl;
            if (shmds_table_get_ref(t, g, keys[i], strlen(keys[i]), &v, &vl, &ver) == 0 &&
                vl > 0)
                (void)!*(const volatile unsigned char *)v; /* the bytes are readable */
        }
        shmds_guard_leave(g);
    }
    (void)shmds_table_check(t);
    shmds_table_close(t);
}

/* A read-only process that attaches before anyone repaired anything:
 * lock-free reads only, over whatever state a dead writer left (a map's
 * growth half published, a stripe mid-change). */
static void walk_readonly(void *buf, size_t len, uint32_t bound_ms)
{
    shmds_region *r = NULL;
    if (shmds__region_attach_mem(buf, len, SHMDS_RDONLY, &r) != 0)
        return;
    r->lock_timeout_ms = bound_ms;
    struct walk w = {r, 0};
    (void)shmds_root_foreach(r, visit_root, &w);
    if (shmds_region_close(r) != 0)
        abort();
}

img_result img_run_region(shmds_region *r, uint32_t bound_ms)
{
    img_result res = {0, 0, 0};
    r->lock_timeout_ms = bound_ms;
    res.check_rc = shmds_region_check(r);
    shmds_region_info info;
    (void)shmds_region_info_get(r, &info);
    shmds_mutex_info mi;
    (void)shmds_region_lock_info(r, SHMDS_LOCK_DIRECTORY, &mi);
    (void)shmds_region_lock_info(r, SHMDS_LOCK_ALLOCATOR, &mi);
    shmds_alloc_stats st;
    (void)shmds_alloc_stats_get(r, &st);
    /* What `shmds info` prints per arena. */
    unsigned arenas = shmds_alloc_arena_count(r);
    for (unsigned i = 0; i < arenas && i < 64; i++) {
        shmds_alloc_arena_info ai;
        (void)shmds_alloc_arena_info_get(r, i, &ai);
    }
    /* Growth by a page (`shmds grow`): an image in memory cannot grow
     * (-ENOMEM); a region on a file descriptor grows, and the walk below
     * then runs over the grown heap. */
    size_t size = shmds_region_size(r);
    if (!shmds_region_readonly(r))
        (void)shmds_region_grow(r, size + 4096);
    struct walk w = {r, 0};
    (void)shmds_root_foreach(r, visit_root, &w);
    res.roots = w.n;
    /* The directory's writers over whatever chains are there: names that
     * add blocks (a few share a bucket), and their removal, which trims
     * blocks again. */
    for (unsigned i = 0; i < 24 && !shmds_region_readonly(r); i++) {
        char n[16];
        snprintf(n, sizeof n, "fz%u", i);
        (void)shmds_root_set(r, n, SHMDS_TYPE_USER, SHMDS_HEADER_SIZE);
        (void)shmds_root_get(r, n, NULL, NULL);
    }
    for (unsigned i = 0; i < 24 && !shmds_region_readonly(r); i++) {
        char n[16];
        snprintf(n, sizeof n, "fz%u", i);
        (void)shmds_root_del(r, n);
    }
    if (shmds_region_close(r) != 0) {
        /* A hostile image can lay an entry over a lock the same call holds,
         * and the call's own write then damages it: the library leaves such
         * a lock listed (shmds_mutex_unlock), so close refuses, as
         * documented. Only a listed lock that is intact is a bug: an
         * operation returned with its lock still held. */
        if (shmds__held_forget_damaged_in(r->base, r->size) != 0 ||
            shmds_region_close(r) != 0)
            abort();
    }
    return res;
}

img_result img_run(void *buf, size_t len, unsigned flags, uint32_t bound_ms)
{
    shmds_region *r = NULL;
    int rc = shmds__region_attach_mem(buf, len, flags, &r);
    if (rc != 0)
        return (img_result){rc, 0, 0};
    return img_run_region(r, bound_ms);
}

/* Copy the bytes into own, aligned, writable memory (the library may
 * repair what it finds) and run them with `flags` (0 or SHMDS_RDONLY). A
 * writable pass first walks as a read-only process (walk_readonly). */
static img_result exercise(const void *data, size_t len, unsigned flags)
{
    size_t cap = (len + 63) / 64 * 64;
    void *buf = aligned_alloc(64, cap == 0 ? 64 : cap);
    if (buf == NULL)
        abort();
    memcpy(buf, data, len);
    if (flags == 0)
        walk_readonly(buf, len, IMG_LOCK_TIMEOUT_MS);
    img_result res = img_run(buf, len, flags, IMG_LOCK_TIMEOUT_MS);
    free(buf);
    return res;
}

img_result img_exercise(const void *data, size_t len)
{
    return exercise(data, len, 0);
}

img_result img_exercise_readonly(const void *data, size_t len)
{
    return exercise(data, len, SHMDS_RDONLY);
}
