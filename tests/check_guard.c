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

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

#define MB (1024 * 1024)

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


/* ---- maps read under guards ---- */

/* Keys and values of the concurrency tests: "s<i>" are stable (put once
 * before the readers start, then only replaced), "c<i>" churn (put and
 * deleted); every value is "<key>=<writer>.<seq>" padded to a length that
 * varies with seq, so a value read for the wrong key, a torn value or a
 * block reused under the reader shows. */
#define NSTABLE 64
#define NCHURN 2048

static size_t mk_val(char *v, const char *key, unsigned w, unsigned seq)
{
    int n = snprintf(v, 200, "%s=%u.%u;", key, w, seq);
    size_t len = (size_t)n + seq % 97;
    for (size_t i = (size_t)n; i < len; i++)
        v[i] = (char)('a' + (seq + i) % 26);
    return len;
}

/* True when v (vl bytes) is a value mk_val wrote for key. */
static bool val_ok(const char *v, size_t vl, const char *key)
{
    size_t kl = strlen(key);
    if (vl < kl + 4 || memcmp(v, key, kl) != 0 || v[kl] != '=')
        return false;
    unsigned w, seq;
    char tail[8];
    char buf[256];
    memcpy(buf, v, vl < 255 ? vl : 255);
    buf[vl < 255 ? vl : 255] = '\0';
    if (sscanf(buf + kl + 1, "%u.%u%1[;]", &w, &seq, tail) != 3)
        return false;
    char want[256];
    return mk_val(want, key, w, seq) == vl && memcmp(want, v, vl) == 0;
}

struct conc {
    const char *name;
    const char *map;
    unsigned writers_left; /* shared: readers stop when 0 */
    unsigned bad, false_miss, gets;
};

struct conc_arg {
    struct conc *c; /* in shared memory */
    unsigned id;
    unsigned ops;
    unsigned flags; /* the reader's region flags */
};

static int conc_writer(void *p)
{
    struct conc_arg *a = p;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(a->c->name, 0, &r) != 0 || shmds_map_open(r, a->c->map, &m) != 0)
        return 10;
    char k[32], v[256];
    unsigned x = a->id * 7919u + 1;
    for (unsigned seq = 1; seq <= a->ops; seq++) {
        x = x * 1103515245u + 12345u;
        unsigned i = (x >> 8);
        int rc;
        if (i % 4 == 0) {
            snprintf(k, sizeof k, "s%u", i / 4 % NSTABLE);
            rc = shmds_map_put(m, k, strlen(k), v, mk_val(v, k, a->id, seq), 0, 0);
        } else if (i % 4 == 1) {
            snprintf(k, sizeof k, "c%u", i / 4 % NCHURN);
            rc = shmds_map_del(m, k, strlen(k));
            rc = rc == -ENOENT ? 0 : rc;
        } else {
            snprintf(k, sizeof k, "c%u", i / 4 % NCHURN);
            rc = shmds_map_put(m, k, strlen(k), v, mk_val(v, k, a->id, seq), 0, 0);
        }
        if (rc != 0)
            return 11;
    }
    __atomic_sub_fetch(&a->c->writers_left, 1, __ATOMIC_RELEASE);
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

static int conc_reader(void *p)
{
    struct conc_arg *a = p;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(a->c->name, a->flags, &r) != 0 || shmds_map_open(r, a->c->map, &m) != 0)
        return 10;
    char k[32], v[256];
    unsigned x = a->id, n = 0;
    while (__atomic_load_n(&a->c->writers_left, __ATOMIC_ACQUIRE) != 0 || n < 1000) {
        x = x * 1103515245u + 12345u;
        unsigned i = x >> 8;
        bool stable = i % 2 == 0;
        snprintf(k, sizeof k, stable ? "s%u" : "c%u", stable ? i / 2 % NSTABLE : i / 2 % NCHURN);
        size_t vl = 0;
        int rc;
        if (i % 3 == 0) {
            /* zero-copy: the bytes must be a whole value of this key */
            shmds_guard *g;
            const void *ref;
            if (shmds_guard_enter(r, &g) != 0)
                return 12;
            rc = shmds_map_get_ref(m, g, k, strlen(k), &ref, &vl);
            if (rc == 0) {
                memcpy(v, ref, vl < sizeof v ? vl : sizeof v);
                if (vl > sizeof v || !val_ok(v, vl, k) || memcmp(v, ref, vl) != 0)
                    __atomic_add_fetch(&a->c->bad, 1, __ATOMIC_RELAXED);
            }
            shmds_guard_leave(g);
        } else {
            rc = shmds_map_get(m, k, strlen(k), v, sizeof v, &vl);
            if (rc == 0 && !val_ok(v, vl, k))
                __atomic_add_fetch(&a->c->bad, 1, __ATOMIC_RELAXED);
        }
        if (rc == -ENOENT && stable)
            __atomic_add_fetch(&a->c->false_miss, 1, __ATOMIC_RELAXED);
        else if (rc != 0 && rc != -ENOENT)
            return 13;
        n++;
    }
    __atomic_add_fetch(&a->c->gets, n, __ATOMIC_RELAXED);
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

/* Readers in three processes (one a read-only attach) while two writers
 * put, replace and delete, growing a map from 16 buckets through many
 * rehashes (and, with `evict`, evicting under a budget): every value read
 * is a whole value written for that key, zero-copy references included,
 * and a key that is always present is never missed (evicting maps may
 * drop any key: there only the values are checked). */
static void readers_vs_writers(bool evict)
{
    shmds_region *r = region(64 * MB);
    shmds_map_opts o = {1, evict ? 40 * 1024 : 0, 4, 0, evict ? SHMDS_MAP_EVICT : 0, 0};
    shmds_map *m;
    ck_assert_int_eq(shmds_map_create(r, "cc", &o, &m), 0);
    char k[32], v[256];
    for (unsigned i = 0; i < NSTABLE; i++) {
        snprintf(k, sizeof k, "s%u", i);
        ck_assert_int_eq(shmds_map_put(m, k, strlen(k), v, mk_val(v, k, 0, i), 0, 0), 0);
    }
    struct conc *c = tu_shared_alloc(sizeof *c);
    c->name = rname;
    c->map = "cc";
    c->writers_left = 2;
    unsigned ops = RUNNING_ON_VALGRIND ? 3000 : 40000;
    struct conc_arg wa[2] = {{c, 1, ops, 0}, {c, 2, ops, 0}};
    struct conc_arg ra[3] = {{c, 11, 0, 0}, {c, 12, 0, 0}, {c, 13, 0, SHMDS_RDONLY}};
    pid_t pr[3], pw[2];
    for (int i = 0; i < 3; i++)
        pr[i] = tu_fork(conc_reader, &ra[i]);
    for (int i = 0; i < 2; i++)
        pw[i] = tu_fork(conc_writer, &wa[i]);
    for (int i = 0; i < 2; i++) {
        int st = tu_wait(pw[i], 120000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %d: %d", i, st);
    }
    for (int i = 0; i < 3; i++) {
        int st = tu_wait(pr[i], 120000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d: %d", i, st);
    }
    ck_assert_uint_eq(c->bad, 0);
    if (!evict)
        ck_assert_uint_eq(c->false_miss, 0);
    ck_assert_uint_ge(c->gets, 3000);
    shmds_map_stats st;
    ck_assert_int_eq(shmds_map_stats_get(m, &st), 0);
    if (!evict)
        ck_assert_uint_ge(st.buckets, 256); /* it did grow, many times */
    else
        ck_assert_uint_gt(st.evictions, 0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_map_close(m);
    ck_assert_int_eq(shmds_region_close(r), 0);
}

START_TEST(test_guard_map_readers_vs_writers_through_rehashes)
{
    readers_vs_writers(false);
}
END_TEST

START_TEST(test_guard_map_readers_vs_writers_evicting)
{
    readers_vs_writers(true);
}
END_TEST

struct ref_arg {
    const char *name;
    tu_chan up, down;
};

/* Take a reference to "k" inside a guard, say so, wait, then report
 * whether its bytes are still those it copied. */
static int ref_holder(void *p)
{
    struct ref_arg *a = p;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(a->name, SHMDS_RDONLY, &r) != 0 || shmds_map_open(r, "m", &m) != 0)
        return 10;
    shmds_guard *g;
    const void *ref;
    size_t vl;
    char copy[512], c;
    if (shmds_guard_enter(r, &g) != 0 || shmds_map_get_ref(m, g, "k", 1, &ref, &vl) != 0 ||
        vl > sizeof copy)
        return 11;
    memcpy(copy, ref, vl);
    c = 'r';
    tu_send(&a->up, &c, 1);
    if (tu_recv(&a->down, &c, 1) != 1)
        return 12;
    c = memcmp(copy, ref, vl) == 0 ? 's' : 'x';
    shmds_guard_leave(g);
    tu_send(&a->up, &c, 1);
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

/* A reference taken in another process stays valid and its bytes never
 * change while the key is deleted, put again many times and the heap is
 * churned (the block would be reused at once if it were freed); once the
 * holder leaves its guard the entry is freed. The holder shows in
 * shmds_guard_info_get() as the oldest reader, alive. */
START_TEST(test_guard_map_ref_bytes_never_change_under_holder)
{
    shmds_region *r = region(8 * MB);
    shmds_map *m;
    shmds_map_opts o = {16, 0, 1, 0, 0, 0};
    ck_assert_int_eq(shmds_map_create(r, "m", &o, &m), 0);
    char v[400];
    memset(v, 'A', sizeof v);
    ck_assert_int_eq(shmds_map_put(m, "k", 1, v, sizeof v, 0, 0), 0);
    struct ref_arg a = {.name = rname};
    tu_chan_open(&a.up);
    tu_chan_open(&a.down);
    pid_t pid = tu_fork(ref_holder, &a);
    char c;
    ck_assert_int_eq(tu_recv(&a.up, &c, 1), 1);
    for (int i = 0; i < 2000; i++) {
        memset(v, 'a' + i % 26, sizeof v);
        if (i % 3 == 0)
            ck_assert_int_eq(shmds_map_del(m, "k", 1), 0);
        ck_assert_int_eq(shmds_map_put(m, "k", 1, v, sizeof v, 0, 0), 0);
        char k2[16];
        snprintf(k2, sizeof k2, "o%d", i % 50);
        ck_assert_int_eq(shmds_map_put(m, k2, strlen(k2), v, sizeof v, 0, 0), 0);
    }
    shmds_guard_info gi;
    ck_assert_int_eq(shmds_guard_info_get(r, &gi), 0);
    ck_assert_int_eq(gi.oldest_pid, pid);
    ck_assert_int_eq(gi.oldest_alive, 1);
    ck_assert_uint_ge(gi.inside, 1);
    ck_assert_uint_gt(gi.retired, 1000); /* nothing freed since it entered */
    c = 'g';
    tu_send(&a.down, &c, 1);
    ck_assert_int_eq(tu_recv(&a.up, &c, 1), 1);
    ck_assert_int_eq(c, 's');
    ck_assert_int_eq(tu_wait(pid, 10000), 0);
    ck_assert_int_ge(shmds__guard_reclaim(r), 1000);
    ck_assert_int_eq(shmds_guard_info_get(r, &gi), 0);
    ck_assert_uint_eq(gi.retired, 0);
    ck_assert_int_eq(gi.oldest_pid, 0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    shmds_map_close(m);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* ---- crash ---- */

struct kw_arg {
    const char *name;
    unsigned seq; /* where to start */
    tu_chan ack;
};

/* Put keys "w<i>" forever with values "<key>=0.<seq>...", telling the
 * parent each seq after its put returned. */
static int killed_writer(void *p)
{
    struct kw_arg *a = p;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(a->name, 0, &r) != 0 || shmds_map_open(r, "dw", &m) != 0)
        return 10;
    close(a->ack.rd);
    char k[32], v[256];
    for (unsigned seq = a->seq;; seq++) {
        snprintf(k, sizeof k, "w%u", seq % 3000);
        if (shmds_map_put(m, k, strlen(k), v, mk_val(v, k, 0, seq), 0, 0) != 0)
            return 12;
        if (seq % 5 == 0 && shmds_map_del(m, k, strlen(k)) != 0)
            return 13;
        tu_send(&a->ack, &seq, sizeof seq);
    }
}

/* Writers SIGKILLed at random moments inside puts and deletes (holding
 * their stripe's lock, perhaps mid-rehash) never make a read-only reader
 * wait: right after each kill, before anything is repaired, every get
 * from a read-only attach returns at once with a value written for its
 * key, or -ENOENT only for a key that was never acknowledged present
 * (the old code waited the lock bound and failed with -ETIMEDOUT). */
START_TEST(test_guard_map_reads_never_wait_on_a_killed_writer)
{
    shmds_region *r = region(32 * MB);
    shmds_map *m;
    shmds_map_opts o = {1, 0, 4, 0, 0, 0};
    ck_assert_int_eq(shmds_map_create(r, "dw", &o, &m), 0);
    shmds_region *ro;
    shmds_map *mr;
    ck_assert_int_eq(shmds_region_open(rname, SHMDS_RDONLY, &ro), 0);
    ck_assert_int_eq(shmds_map_open(ro, "dw", &mr), 0);
    static unsigned last_put[3000]; /* the last acknowledged seq of a put, 0 none */
    memset(last_put, 0, sizeof last_put);
    unsigned seq = 1, kills = RUNNING_ON_VALGRIND ? 8 : 40;
    srand(1234);
    for (unsigned round = 0; round < kills; round++) {
        struct kw_arg a = {.name = rname, .seq = seq};
        tu_chan_open(&a.ack);
        pid_t pid = tu_fork(killed_writer, &a);
        close(a.ack.wr); /* the writer's death ends our reads */
        a.ack.wr = -1;
        /* let it run a little: a few hundred puts */
        unsigned want = 50 + (unsigned)rand() % 400, got = 0, s2;
        while (got < want && tu_recv(&a.ack, &s2, sizeof s2) == 1) {
            got++;
            seq = s2 + 1;
            if (s2 % 5 != 0)
                last_put[s2 % 3000] = s2;
            else
                last_put[s2 % 3000] = 0;
        }
        usleep((useconds_t)(rand() % 300));
        tu_kill(pid);
        /* acknowledgements that arrived before the kill */
        int fl = fcntl(a.ack.rd, F_GETFL);
        fcntl(a.ack.rd, F_SETFL, fl | O_NONBLOCK);
        while (read(a.ack.rd, &s2, sizeof s2) == (ssize_t)sizeof s2) {
            seq = s2 + 1;
            last_put[s2 % 3000] = s2 % 5 != 0 ? s2 : 0;
        }
        tu_chan_close(&a.ack);
        /* Every get at once, nothing repaired yet. The in-flight op (seq)
         * may or may not have happened. */
        for (unsigned i = 0; i < 3000; i++) {
            char k[32], v[256];
            size_t vl;
            snprintf(k, sizeof k, "w%u", i);
            int rc = shmds_map_get(mr, k, strlen(k), v, sizeof v - 1, &vl);
            v[rc == 0 ? vl : 0] = '\0';
            bool inflight = seq % 3000 == i;
            ck_assert_msg(rc == 0 || rc == -ENOENT, "round %u key %s: %s", round, k,
                          shmds_errname(rc));
            if (rc == 0)
                ck_assert_msg(val_ok(v, vl, k), "round %u: bad value for %s", round, k);
            if (last_put[i] != 0 && !inflight)
                ck_assert_msg(rc == 0, "round %u: %s missing (put at %u)", round, k, last_put[i]);
            if (rc == 0 && !inflight) {
                unsigned w, s3;
                ck_assert(sscanf(v + strlen(k) + 1, "%u.%u", &w, &s3) == 2);
                ck_assert_msg(s3 == last_put[i], "round %u: %s holds %u, last put %u", round, k,
                              s3, last_put[i]);
            }
        }
    }
    ck_assert_int_eq(shmds_map_check(m), 0); /* repairs */
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_map_close(mr);
    shmds_region_close(ro);
    shmds_map_close(m);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* ---- a full region (growth refused: max_size == size) ---- */

#define FULL_VAL 1000

static void full_val(unsigned i, unsigned char *v)
{
    for (unsigned k = 0; k < FULL_VAL; k++)
        v[k] = (unsigned char)(i * 31u + k);
}

static size_t full_key(unsigned i, char *k)
{
    return (size_t)snprintf(k, 16, "k%u", i);
}

/* Fill map m until a put fails; the failure is -ENOMEM. The keys stored
 * are 0 .. n-1 (returned). */
static unsigned fill_full(shmds_map *m)
{
    unsigned char v[FULL_VAL];
    char k[16];
    unsigned n = 0;
    int rc;
    for (;; n++) {
        full_val(n, v);
        if ((rc = shmds_map_put(m, k, full_key(n, k), v, FULL_VAL, 0, 0)) != 0)
            break;
    }
    ck_assert_msg(rc == -ENOMEM, "the put that found the region full: %s", shmds_errname(rc));
    ck_assert_uint_gt(n, 300);
    return n;
}

/* Every key from `from` to n-1 reads back with its value. */
static void full_read_back(shmds_map *m, unsigned from, unsigned n)
{
    unsigned char v[FULL_VAL], got[FULL_VAL];
    char k[16];
    for (unsigned i = from; i < n; i++) {
        size_t len = 0;
        full_val(i, v);
        int rc = shmds_map_get(m, k, full_key(i, k), got, sizeof got, &len);
        ck_assert_msg(rc == 0 && len == FULL_VAL && memcmp(got, v, FULL_VAL) == 0,
                      "key %u of %u after the region filled: %s", i, n, shmds_errname(rc));
    }
}

static uint64_t retired_blocks(shmds_region *r)
{
    shmds_guard_info gi;
    ck_assert_int_eq(shmds_guard_info_get(r, &gi), 0);
    return gi.retired;
}

static uint64_t free_bytes(shmds_region *r)
{
    shmds_alloc_stats s;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &s), 0);
    return s.free_bytes;
}

/* A map in a region that may not grow, filled until a put fails: the
 * region checks sound, every value reads back, deletes (how a user makes
 * room) succeed, and a put fits again. (A rehash move that ran out of room
 * part way through a bucket used to leave it half in each table, which
 * writers did not look for and the check called corrupt; a delete whose
 * retirement found no room for a record failed after it committed.) */
START_TEST(test_guard_full_region_map_deletes_make_room)
{
    shmds_region *r = region(1 * MB);
    shmds_map *m;
    ck_assert_int_eq(shmds_map_create(r, "full", NULL, &m), 0);
    unsigned n = fill_full(m);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_map_check(m), 0);
    full_read_back(m, 0, n);
    char k[16];
    for (unsigned i = 0; i < 200; i++) {
        int rc = shmds_map_del(m, k, full_key(i, k));
        ck_assert_msg(rc == 0, "delete %u of a full map: %s", i, shmds_errname(rc));
    }
    unsigned char v[FULL_VAL];
    full_val(7, v);
    ck_assert_int_eq(shmds_map_put(m, "again", 5, v, FULL_VAL, 0, 0), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    full_read_back(m, 200, n);
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    ck_assert_uint_eq(used_blocks(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* The same with a reader in another process inside a guard during 100
 * deletes: they still succeed (the blocks wait, held for the reader, in
 * the retire records the region keeps; rehash moves yield them); once the
 * reader has left the space comes back, and puts fit again. */
START_TEST(test_guard_full_region_deletes_under_a_reader)
{
    shmds_region *r = region(1 * MB);
    shmds_map *m;
    ck_assert_int_eq(shmds_map_create(r, "full", NULL, &m), 0);
    unsigned n = fill_full(m);
    ck_assert_int_eq(shmds_region_check(r), 0);
    uint64_t free0 = free_bytes(r);
    struct reader_arg a;
    pid_t pid = start_reader(&a, rname, SHMDS_RDONLY);
    char k[16];
    for (unsigned i = 0; i < 100; i++) {
        int rc = shmds_map_del(m, k, full_key(i, k));
        ck_assert_msg(rc == 0, "delete %u under a reader: %s", i, shmds_errname(rc));
        ck_assert_int_eq(shmds_map_get(m, k, full_key(i, k), NULL, 0, NULL), -ENOENT);
    }
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_uint_lt(free_bytes(r), free0 + 100 * FULL_VAL); /* held for the reader */
    char c = 'l';
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_recv(&a.to_parent, &c, 1), 1);
    ck_assert_int_eq(c, 'o');
    ck_assert_int_eq(shmds_region_check(r), 0); /* reclaims */
    ck_assert_uint_ge(free_bytes(r), free0 + 100 * FULL_VAL);
    unsigned char v[FULL_VAL];
    for (unsigned i = 0; i < 10; i++) {
        full_val(i, v);
        ck_assert_int_eq(shmds_map_put(m, k, full_key(i, k), v, FULL_VAL, 0, 0), 0);
    }
    full_read_back(m, 0, 10);
    full_read_back(m, 100, n);
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_wait(pid, 10000), 0);
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    ck_assert_uint_eq(used_blocks(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* A reader stuck inside a guard while the region is full and every retire
 * record holds a block: a delete still returns 0 (it committed), its block
 * parked in the stripe's log; later writes on that stripe say -ENOMEM with
 * nothing changed; the check calls the state sound. Once the reader
 * leaves, the next write on the stripe finishes the retirement, and
 * nothing leaks: destroying the map gives every block back.
 *
 * "Full" must hold for retire blocks too. A put that fails says only that
 * no free block holds an entry; if the fill retired blocks (the rehash
 * moves of a growing map do), the reclamation after it frees them, and the
 * holes they leave, where the random hash seed put them, are now and then
 * larger than a retire block: then every delete found a record and none
 * was refused. So the table is sized for the fill (no growth, no moves):
 * the fill retires nothing, and no free block can hold a retire block. */
START_TEST(test_guard_full_region_stuck_reader_parks_retirements)
{
    shmds_region *r = region(1 * MB);
    shmds_map *m;
    shmds_map_opts o = {.capacity = 2048};
    ck_assert_int_eq(shmds_map_create(r, "full", &o, &m), 0);
    /* One retirement first: it makes the retire block the region keeps,
     * whose 254 records the stuck reader's deletes fill. */
    ck_assert_int_eq(shmds_map_put(m, "x", 1, "v", 1, 0, 0), 0);
    ck_assert_int_eq(shmds_map_del(m, "x", 1), 0);
    ck_assert_int_eq(shmds_region_reclaim(r), 0);
    unsigned n = fill_full(m);
    ck_assert_uint_eq(retired_blocks(r), 0);
    /* At most 254 records and one parked delete per stripe: more deletes
     * than that. */
    ck_assert_uint_gt(n, 254 + SHMDS_MAP_STRIPES_DEFAULT);
    ck_assert_int_eq(shmds_region_check(r), 0);
    struct reader_arg a;
    pid_t pid = start_reader(&a, rname, 0);
    char k[16];
    unsigned refused = 0;
    bool *gone = calloc(n, sizeof *gone);
    ck_assert_ptr_nonnull(gone);
    for (unsigned i = 0; i < n; i++) {
        int rc = shmds_map_del(m, k, full_key(i, k));
        ck_assert_msg(rc == 0 || rc == -ENOMEM, "delete %u, a reader stuck: %s", i,
                      shmds_errname(rc));
        gone[i] = rc == 0;
        refused += rc != 0;
        int g = shmds_map_get(m, k, full_key(i, k), NULL, 0, NULL);
        ck_assert_int_eq(g, rc == 0 ? -ENOENT : -ENOBUFS);
    }
    /* More deletes than records: some were parked, then refused. */
    ck_assert_uint_gt(refused, 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    char c = 'l';
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_recv(&a.to_parent, &c, 1), 1);
    for (unsigned i = 0; i < n; i++)
        if (!gone[i])
            ck_assert_int_eq(shmds_map_del(m, k, full_key(i, k)), 0);
    free(gone);
    ck_assert_int_eq(shmds_map_check(m), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    tu_send(&a.to_child, &c, 1);
    ck_assert_int_eq(tu_wait(pid, 10000), 0);
    ck_assert_int_eq(shmds_map_destroy(m), 0);
    ck_assert_uint_eq(used_blocks(r), 0);
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
    ck_assert_int_eq(shmds_guard_enter(r2, &g), SHMDS_ECORRUPT);
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
    tcase_add_loop_test(mp, test_guard_map_readers_vs_writers_through_rehashes, 0, 3);
    tcase_add_test(mp, test_guard_map_readers_vs_writers_evicting);
    tcase_add_test(mp, test_guard_map_ref_bytes_never_change_under_holder);
    suite_add_tcase(s, mp);
    TCase *crash = tcase_create("crash");
    tcase_add_test(crash, test_guard_map_reads_never_wait_on_a_killed_writer);
    suite_add_tcase(s, crash);
    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_guard_damaged_reader_table_is_an_error);
    tcase_add_test(limits, test_guard_unlink_removes_reader_table);
    tcase_add_test(limits, test_guard_full_region_map_deletes_make_room);
    tcase_add_test(limits, test_guard_full_region_deletes_under_a_reader);
    tcase_add_test(limits, test_guard_full_region_stuck_reader_parks_retirements);
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
