/* The queue: messages in and out, both modes, bad input, shut-down,
 * many producers and consumers in real processes, and SIGKILLs at random
 * points with the ring checked after each. */
#include <check.h>
#include <dirent.h>
#include <poll.h>
#include <stdbool.h>
#include <sys/stat.h>
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
#include "testutil.h"

#define RSZ (4u << 20)

static const char *rname;

static shmds_region *make_region(void)
{
    rname = tu_name("q");
    shmds_region *r = NULL;
    shmds_region_opts o = {.max_size = RSZ}; /* never grows: full-region tests */
    int rc = shmds_region_create(rname, RSZ, &o, &r);
    ck_assert_msg(rc == 0, "region_create: %s", shmds_errname(rc));
    return r;
}

static shmds_queue *make_queue(shmds_region *r, const char *name, size_t cap, size_t max_msg,
                               unsigned flags)
{
    shmds_queue *q = NULL;
    int rc = shmds_queue_create(r, name, cap, max_msg, flags, &q);
    ck_assert_msg(rc == 0, "queue_create: %s", shmds_errname(rc));
    return q;
}

/* The bytes of message `seq` of producer `p`, of length `len`. */
static void fill(unsigned char *buf, size_t len, uint32_t p, uint32_t seq)
{
    uint32_t x = p * 2654435761u ^ seq * 40503u ^ 0x9e3779b9u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (unsigned char)(x >> 16);
    }
}

/* A message: header {producer, seq} then len-8 bytes of fill(). */
static size_t msg_make(unsigned char *buf, uint32_t p, uint32_t seq, size_t maxlen)
{
    size_t len = 8 + (p * 7u + seq * 13u) % (maxlen - 7);
    memcpy(buf, &p, 4);
    memcpy(buf + 4, &seq, 4);
    fill(buf + 8, len - 8, p, seq);
    return len;
}

/* 1 when buf holds a well-formed message; sets p and seq. */
static int msg_ok(const unsigned char *buf, size_t len, uint32_t *p, uint32_t *seq)
{
    unsigned char want[1024];
    if (len < 8 || len > sizeof want)
        return 0;
    memcpy(p, buf, 4);
    memcpy(seq, buf + 4, 4);
    fill(want, len - 8, *p, *seq);
    return memcmp(want, buf + 8, len - 8) == 0;
}

/* ---------------------------------------------------------------------------
 * core
 * ------------------------------------------------------------------------ */

START_TEST(test_queue_send_recv_in_order_across_wraps)
{
    shmds_region *r = make_region();
    /* Each flag in turn: the default mode and SPSC behave the same. */
    for (unsigned flags = 0; flags <= SHMDS_QUEUE_SPSC; flags += SHMDS_QUEUE_SPSC) {
        char name[16];
        snprintf(name, sizeof name, "q%u", flags);
        shmds_queue *q = make_queue(r, name, 1000, 300, flags);
        unsigned char in[300], out[300];
        uint32_t sent = 0, got = 0;
        /* Sizes 0..300 so records land on every offset, and the ring wraps
         * many times (a payload is split at the end of the ring). */
        while (got < 2000) {
            size_t len = (sent * 37u) % 301u;
            fill(in, len, 1, sent);
            int rc = shmds_queue_send(q, in, len, 0);
            if (rc == 0) {
                sent++;
                continue;
            }
            ck_assert_int_eq(rc, -EAGAIN);
            size_t n = 0;
            while ((rc = shmds_queue_recv(q, out, sizeof out, &n, 0)) == 0) {
                size_t want = (got * 37u) % 301u;
                ck_assert_uint_eq(n, want);
                fill(in, n, 1, got);
                ck_assert(memcmp(in, out, n) == 0);
                got++;
            }
            ck_assert_int_eq(rc, -EAGAIN);
            ck_assert_int_eq(shmds_queue_check(q), 0);
        }
        shmds_queue_close(q);
    }
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

/* Capacities, message bounds and message lengths up to SIZE_MAX: the
 * documented error (-EINVAL out of range, -ENOMEM no room, -EMSGSIZE
 * longer than max_msg) before anything is read, and the queue still holds
 * what it held. */
START_TEST(test_queue_sizes_that_overflow_are_refused)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "q", 4096, 256, 0), *q2 = NULL;
    ck_assert_int_eq(shmds_queue_send(q, "keep", 4, 0), 0);
    for (size_t i = 0; i < TU_HUGE_SIZES; i++) {
        size_t n = tu_huge_sizes[i];
        ck_assert_int_eq(shmds_queue_send(q, "x", n, 0), -EMSGSIZE);
        int rc = shmds_queue_create(r, "q2", n, 16, 0, &q2);
        ck_assert_msg(rc == -EINVAL || rc == -ENOMEM, "capacity %zx: %s", n, shmds_errname(rc));
        ck_assert_int_eq(shmds_queue_create(r, "q3", 4096, n, 0, &q2), -EINVAL);
        ck_assert_int_eq(shmds_queue_create(r, "q4", n, n, 0, &q2), -EINVAL);
        ck_assert_int_eq(shmds_region_check(r), 0);
        uint64_t len;
        ck_assert_int_eq(shmds_queue_len(q, &len), 0);
        ck_assert_uint_eq(len, 1);
    }
    char buf[8];
    size_t len;
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(memcmp(buf, "keep", 4), 0);
    ck_assert_int_eq(shmds_queue_destroy(q), 0);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_zero_length_messages_count)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "z", 64, 8, 0);
    uint64_t n = 99;
    ck_assert_int_eq(shmds_queue_len(q, &n), 0);
    ck_assert_uint_eq(n, 0);
    for (int i = 0; i < 8; i++)
        ck_assert_int_eq(shmds_queue_send(q, NULL, 0, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, NULL, 0, 0), -EAGAIN); /* 8 records of 8 bytes */
    ck_assert_int_eq(shmds_queue_len(q, &n), 0);
    ck_assert_uint_eq(n, 8);
    size_t len = 5;
    ck_assert_int_eq(shmds_queue_recv(q, NULL, 0, &len, 0), 0);
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(shmds_queue_len(q, &n), 0);
    ck_assert_uint_eq(n, 7);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_small_buffer_is_enobufs_and_keeps_message)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "b", 256, 100, 0);
    ck_assert_int_eq(shmds_queue_send(q, "hello world", 11, 0), 0);
    char buf[16];
    size_t len = 0;
    ck_assert_int_eq(shmds_queue_recv(q, buf, 4, &len, 0), -ENOBUFS);
    ck_assert_uint_eq(len, 11);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_uint_eq(len, 11);
    ck_assert(memcmp(buf, "hello world", 11) == 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_shutdown_drains_then_closed)
{
    shmds_region *r = make_region();
    for (unsigned flags = 0; flags <= SHMDS_QUEUE_SPSC; flags += SHMDS_QUEUE_SPSC) {
        shmds_queue *q = make_queue(r, flags ? "s1" : "s0", 256, 32, flags);
        ck_assert_int_eq(shmds_queue_send(q, "a", 1, 0), 0);
        ck_assert_int_eq(shmds_queue_send(q, "bc", 2, 0), 0);
        ck_assert_int_eq(shmds_queue_shutdown(q), 0);
        ck_assert_int_eq(shmds_queue_shutdown(q), 0); /* idempotent */
        ck_assert_int_eq(shmds_queue_send(q, "d", 1, 0), SHMDS_ECLOSED);
        char buf[8];
        size_t len;
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, -1), 0);
        ck_assert_uint_eq(len, 1);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, -1), 0);
        ck_assert_uint_eq(len, 2);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, -1), SHMDS_ECLOSED);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), SHMDS_ECLOSED);
        ck_assert_int_eq(shmds_queue_check(q), 0);
        shmds_queue_close(q);
    }
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_timeouts)
{
    shmds_region *r = make_region();
    for (unsigned flags = 0; flags <= SHMDS_QUEUE_SPSC; flags += SHMDS_QUEUE_SPSC) {
        shmds_queue *q = make_queue(r, flags ? "t1" : "t0", 64, 56, flags);
        char buf[64] = {0};
        size_t len;
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), -EAGAIN);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 30), -ETIMEDOUT);
        ck_assert_int_eq(shmds_queue_send(q, buf, 56, 0), 0);
        ck_assert_int_eq(shmds_queue_send(q, buf, 1, 0), -EAGAIN);
        ck_assert_int_eq(shmds_queue_send(q, buf, 1, 30), -ETIMEDOUT);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 30), 0);
        ck_assert_uint_eq(len, 56);
        shmds_queue_close(q);
    }
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_destroy_removes_it)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "d", 4096, 64, 0);
    ck_assert_int_eq(shmds_queue_send(q, "x", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_destroy(q), 0);
    ck_assert_int_eq(shmds_queue_open(r, "d", &q), -ENOENT);
    /* The memory came back: the same name can be made again, many times. */
    for (int i = 0; i < 50; i++) {
        q = make_queue(r, "d", 1 << 20, 64, 0);
        ck_assert_int_eq(shmds_queue_destroy(q), 0);
    }
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * limits
 * ------------------------------------------------------------------------ */

START_TEST(test_queue_bad_input)
{
    shmds_region *r = make_region();
    shmds_queue *q = NULL;
    ck_assert_int_eq(shmds_queue_create(NULL, "x", 1024, 8, 0, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, NULL, 1024, 8, 0, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "x", 1024, 8, 0, NULL), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "", 1024, 8, 0, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "x", 1024, 8, 0x80, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "x", 1024, 0, 0, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "x", 1024, 1017, 0, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "x", 8, 1, 0, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "x", SHMDS_QUEUE_CAPACITY_MAX + 1, 8, 0, &q), -EINVAL);
    ck_assert_int_eq(shmds_queue_create(r, "x", RSZ, 8, 0, &q), -ENOMEM);
    q = make_queue(r, "x", 1024, 1016, 0);
    shmds_queue *q2 = NULL;
    ck_assert_int_eq(shmds_queue_create(r, "x", 1024, 8, 0, &q2), -EEXIST);
    char buf[2048] = {0};
    size_t len;
    ck_assert_int_eq(shmds_queue_send(q, buf, 1017, 0), -EMSGSIZE);
    ck_assert_int_eq(shmds_queue_send(q, NULL, 1, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_send(NULL, buf, 1, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_send(q, buf, 1, -2), -EINVAL);
    ck_assert_int_eq(shmds_queue_send(q, buf, 1016, 0), 0);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, NULL, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_recv(q, NULL, 5, &len, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_recv(NULL, buf, 5, &len, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_len(q, NULL), -EINVAL);
    ck_assert_int_eq(shmds_queue_shutdown(NULL), -EINVAL);
    ck_assert_int_eq(shmds_queue_check(NULL), -EINVAL);
    ck_assert_int_eq(shmds_queue_destroy(NULL), -EINVAL);
    ck_assert_int_eq(shmds_queue_open(r, "nope", &q2), -ENOENT);
    ck_assert_int_eq(shmds_root_set(r, "other", SHMDS_TYPE_USER, r->heap_off), 0);
    ck_assert_int_eq(shmds_queue_open(r, "other", &q2), SHMDS_ETYPE);
    shmds_queue_close(NULL);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_readonly_region_refuses_writes)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "ro", 1024, 64, 0);
    ck_assert_int_eq(shmds_queue_send(q, "abc", 3, 0), 0);
    shmds_region *ro = NULL;
    ck_assert_int_eq(shmds_region_open(rname, SHMDS_RDONLY, &ro), 0);
    shmds_queue *qr = NULL;
    ck_assert_int_eq(shmds_queue_open(ro, "ro", &qr), 0);
    char buf[8];
    size_t len;
    uint64_t n = 0;
    ck_assert_int_eq(shmds_queue_send(qr, "x", 1, 0), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_queue_recv(qr, buf, sizeof buf, &len, 0), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_queue_shutdown(qr), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_queue_len(qr, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_int_eq(shmds_queue_check(qr), 0);
    ck_assert_int_eq(shmds_queue_destroy(qr), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_queue_create(ro, "new", 1024, 64, 0, &qr), SHMDS_ERDONLY);
    shmds_region_close(ro);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_damaged_indices_are_ecorrupt)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "c", 1024, 64, 0);
    ck_assert_int_eq(shmds_queue_send(q, "abc", 3, 0), 0);
    shmds_off_t off;
    ck_assert_int_eq(shmds_root_get(r, "c", NULL, &off), 0);
    /* The tail word is at offset 128 of the header (static asserts in
     * queue.c): point it far outside the ring, as a stray write would. */
    uint64_t *tail = (uint64_t *)((unsigned char *)shmds_region_base(r) + off + 128);
    uint64_t saved = *tail;
    *tail = UINT64_C(0x00000000fffffff0);
    char buf[64];
    size_t len;
    uint64_t n;
    ck_assert_int_eq(shmds_queue_send(q, "x", 1, 0), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_queue_len(q, &n), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
    /* A tail that claims one message more than the ring holds. */
    *tail = saved + (UINT64_C(1) << 32);
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    /* Damaged record framing (the ring starts 448 bytes into the header). */
    *tail = saved;
    unsigned char *rec = (unsigned char *)shmds_region_base(r) + off + 448;
    rec[4] ^= 0xff;
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), SHMDS_ECORRUPT);
    rec[4] ^= 0xff;
    ck_assert_int_eq(shmds_queue_check(q), 0);
    /* The sides' cached copies of each other's word (the senders' copy of
     * the head at 152, the receivers' copy of the tail at 216): a copy
     * ahead of the word it copies is damage too. */
    uint64_t *seen_head = (uint64_t *)((unsigned char *)shmds_region_base(r) + off + 152);
    uint64_t *seen_tail = (uint64_t *)((unsigned char *)shmds_region_base(r) + off + 216);
    uint64_t sh = *seen_head, st = *seen_tail;
    *seen_tail = saved + (UINT64_C(1) << 32) + 1; /* one message past the tail */
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    *seen_tail = st;
    *seen_head = (UINT64_C(1) << 32) + 1; /* past the head, which is at 0 */
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    *seen_head = sh;
    ck_assert_int_eq(shmds_queue_check(q), 0);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(len, 3);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

static tu_chan chan;
static shmds_region *g_r;

/* Where the queue `name`'s header is in this process's mapping. */
static unsigned char *qhdr_at(shmds_region *r, const char *name)
{
    shmds_off_t off;
    ck_assert_int_eq(shmds_root_get(r, name, NULL, &off), 0);
    return (unsigned char *)shmds_region_base(r) + off;
}

/* Child: hold the queue's locks (the senders' 64 bytes into its header,
 * the receivers' 384) and stay, as a stopped or stuck lock holder would. */
static int hold_queue_lock(void *arg)
{
    unsigned char *h = arg;
    if (shmds_mutex_lock((shmds_mutex *)(void *)(h + 64), -1, NULL, NULL) != 0 ||
        shmds_mutex_lock((shmds_mutex *)(void *)(h + 384), -1, NULL, NULL) != 0)
        return 1;
    tu_send_and_stay(&chan, 'L');
}

/* Child: reserve room (a zero-copy send holds the senders' lock until its
 * commit) and stay, as a producer stopped between reserve and commit. */
static int hold_reservation(void *arg)
{
    void *p;
    if (shmds_queue_reserve(arg, 8, &p, -1) != 0)
        return 1;
    memset(p, 'z', 8);
    tu_send_and_stay(&chan, 'R');
}

/* Senders and receivers take separate locks: a producer stopped between
 * reserve and commit holds up the other senders, never the receivers; once
 * it is killed its reservation is gone without a trace. */
START_TEST(test_queue_stopped_producer_does_not_hold_up_receivers)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "hr", 1024, 64, 0);
    ck_assert_int_eq(shmds_queue_send(q, "a", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "b", 1, 0), 0);
    tu_chan_open(&chan);
    pid_t pid = tu_fork(hold_reservation, q);
    char c, buf[64];
    size_t len;
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    ck_assert_int_eq(shmds_queue_send(q, "x", 1, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert(len == 1 && buf[0] == 'a');
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert(len == 1 && buf[0] == 'b');
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), -EAGAIN);
    tu_kill(pid);
    tu_chan_close(&chan);
    ck_assert_int_eq(shmds_queue_send(q, "c", 1, -1), 0);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert(len == 1 && buf[0] == 'c');
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_stats st;
    ck_assert_int_eq(shmds_queue_stats_get(q, &st), 0);
    ck_assert_uint_eq(st.recoveries, 1);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

/* Issue 19: timeout_ms 0 waited the whole lock bound (10 s) behind a
 * stopped holder and said -ETIMEDOUT; a short timeout waited the bound too. */
START_TEST(test_queue_zero_timeout_never_waits_for_the_lock)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "z", 1024, 64, 0);
    ck_assert_int_eq(shmds_queue_send(q, "a", 1, 0), 0);
    tu_chan_open(&chan);
    pid_t pid = tu_fork(hold_queue_lock, qhdr_at(r, "z"));
    char c, buf[64];
    size_t len;
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    ck_assert_int_eq(shmds_queue_send(q, "b", 1, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), -EAGAIN);
    uint64_t t0 = (shmds__now_ns() / 1000000u);
    ck_assert_int_eq(shmds_queue_send(q, "b", 1, 50), -ETIMEDOUT);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 50), -ETIMEDOUT);
    /* Far below the region's bound (SHMDS_DEFAULT_LOCK_TIMEOUT_MS). */
    ck_assert_uint_lt((shmds__now_ns() / 1000000u) - t0, SHMDS_DEFAULT_LOCK_TIMEOUT_MS / 2);
    tu_kill(pid);
    tu_chan_close(&chan);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(len, 1);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
/* glibc's 64-bit sem_t words (see lock.c). */
struct sem_words {
    uint64_t data;
    int32_t private_;
};

static int damaged_bell_io(void *arg)
{
    shmds_queue *q = arg;
    char buf[8];
    size_t len;
    /* The message is committed; the damaged bell is left alone. */
    if (shmds_queue_send(q, "x", 1, 0) != 0)
        return 1;
    if (shmds_queue_recv(q, buf, sizeof buf, &len, 0) != 0)
        return 2;
    /* Empty: the receiver would sleep on the damaged bell. */
    if (shmds_queue_recv(q, buf, sizeof buf, &len, 200) != SHMDS_ECORRUPT)
        return 3;
    return shmds_queue_check(q) == SHMDS_ECORRUPT ? 0 : 4;
}

/* Issue 19: damaged doorbell bytes made send abort in glibc or sleep for
 * ever inside sem_post, and no check looked at them. */
START_TEST(test_queue_damaged_doorbell_is_ecorrupt)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "d", 1024, 64, 0);
    unsigned char *h = qhdr_at(r, "d");
    /* A receiver that died asleep leaves its count: the send rings. */
    *(uint32_t *)(h + 256) = 1;
    /* 1: sem_post's wake becomes a wait for ever; 149: an operation the
     * kernel does not know, which glibc answers with abort(). */
    const int32_t bad[] = {1, 149, 8, 0x7fffffff};
    for (int i = 0; i < 4; i++) {
        struct sem_words *w = (struct sem_words *)(void *)(h + 320); /* not_empty */
        int32_t saved = w->private_;
        w->private_ = bad[i];
        w->data = UINT64_C(1) << 32; /* one sleeper: sem_post calls the futex */
        ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
        int st = tu_wait(tu_fork(damaged_bell_io, q), 10000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "private %d: status %#x", bad[i], st);
        w->private_ = saved;
        w->data = 0;
    }
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

/* Child: receive one message, waiting without bound: 0 if it is "x". */
static int recv_one_x(void *arg)
{
    char buf[8];
    size_t len;
    int rc = shmds_queue_recv(arg, buf, sizeof buf, &len, -1);
    return rc == 0 && len == 1 && buf[0] == 'x' ? 0 : 1;
}

/* Until `*w` is `want` (the test's hang guard bounds it). */
static void await_word(const uint32_t *w, uint32_t want)
{
    while (__atomic_load_n(w, __ATOMIC_ACQUIRE) != want)
        nanosleep(&(struct timespec){0, 1000000}, NULL);
}

/* A receiver killed asleep leaves its count among the sleepers (nothing
 * takes it back). That costs at most one spare doorbell token, never a
 * pile of them that would wake later sleepers over and over; and a later
 * sleeper is still woken by a send. */
START_TEST(test_queue_receiver_killed_asleep_leaves_wakeups_bounded)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "s", 1024, 64, 0);
    unsigned char *h = qhdr_at(r, "s");
    uint32_t *sleepers = (uint32_t *)(void *)(h + 256); /* recv_sleepers */
    struct sem_words *bell = (struct sem_words *)(void *)(h + 320); /* not_empty */
    /* Killed while counted (its sleeps are 50 ms slices between which it
     * is briefly not counted: try again then). */
    for (int tries = 0; __atomic_load_n(sleepers, __ATOMIC_ACQUIRE) != 1; tries++) {
        ck_assert_int_lt(tries, 100);
        __atomic_store_n(sleepers, 0, __ATOMIC_RELEASE);
        pid_t pid = tu_fork(recv_one_x, q);
        await_word(sleepers, 1);
        tu_kill(pid);
    }
    char buf[8];
    size_t len;
    for (int i = 0; i < 1000; i++) {
        ck_assert_int_eq(shmds_queue_send(q, "m", 1, 0), 0);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
        ck_assert_uint_le((uint32_t)__atomic_load_n(&bell->data, __ATOMIC_RELAXED), 1);
    }
    pid_t pid = tu_fork(recv_one_x, q);
    await_word(sleepers, 2);
    ck_assert_int_eq(shmds_queue_send(q, "x", 1, 0), 0);
    int st = tu_wait(pid, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST
#endif

/* Child: become the SPSC producer, say so, and stay alive. */
/* Produce on SPSC queue `arg` (NULL: "sp"), report, wait to be killed. */
static int spsc_producer_stays(void *arg)
{
    shmds_queue *q;
    if (shmds_queue_open(g_r, arg != NULL ? (const char *)arg : "sp", &q) != 0 ||
        shmds_queue_send(q, "p", 1, 0) != 0)
        return 1;
    tu_send_and_stay(&chan, 'P');
}

START_TEST(test_queue_spsc_second_producer_is_ebusy_until_first_dies)
{
    g_r = make_region();
    shmds_queue *q = make_queue(g_r, "sp", 1024, 64, SHMDS_QUEUE_SPSC);
    tu_chan_open(&chan);
    pid_t pid = tu_fork(spsc_producer_stays, NULL);
    char c;
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    ck_assert_int_eq(shmds_queue_send(q, "x", 1, 0), -EBUSY);
    /* The consumer side is free, and the producer's message is there. */
    char buf[8];
    size_t len;
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_uint_eq(len, 1);
    tu_kill(pid);
    ck_assert_int_eq(shmds_queue_send(q, "y", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(buf[0], 'y');
    /* A closed handle gives its claim back: another handle may produce. */
    shmds_queue_close(q);
    ck_assert_int_eq(shmds_queue_open(g_r, "sp", &q), 0);
    ck_assert_int_eq(shmds_queue_send(q, "z", 1, 0), 0);
    shmds_queue_close(q);
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}
END_TEST

/* The child of a fork, on its inherited SPSC handle: -EBUSY while the
 * parent's thread holds the producer side, then the side once it is
 * given up. */
static tu_chan back;

static int fork_producer(void *arg)
{
    shmds_queue *q = arg;
    char c;
    int first = shmds_queue_send(q, "c", 1, 0);
    tu_send(&back, first == -EBUSY ? "B" : "?", 1);
    if (tu_recv(&chan, &c, 1) != 1)
        return 1;
    return shmds_queue_send(q, "c", 1, 0) == 0 ? 0 : 2;
}

START_TEST(test_queue_spsc_claim_across_fork)
{
    g_r = make_region();
    tu_chan_open(&chan);
    tu_chan_open(&back);
    shmds_queue *q = make_queue(g_r, "sf", 1024, 64, SHMDS_QUEUE_SPSC);
    ck_assert_int_eq(shmds_queue_send(q, "p", 1, 0), 0); /* the parent produces */
    pid_t pid = tu_fork(fork_producer, q);
    char c;
    ck_assert_int_eq(tu_recv(&back, &c, 1), 1);
    ck_assert_int_eq(c, 'B');
    shmds_queue_close(q); /* hand the producer side over */
    tu_send(&chan, "g", 1);
    int st = tu_wait(pid, 10000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: status %d", st);
    ck_assert_int_eq(shmds_queue_open(g_r, "sf", &q), 0);
    char buf[8];
    size_t len;
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(buf[0], 'p');
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(buf[0], 'c');
    /* A producer killed and not reaped yet (a zombie) gives the side up. */
    shmds_queue_close(q);
    pid = tu_fork(spsc_producer_stays, "sf");
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    ck_assert_int_eq(shmds_queue_open(g_r, "sf", &q), 0);
    ck_assert_int_eq(shmds_queue_send(q, "x", 1, 0), -EBUSY);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    ck_assert_int_eq(shmds_queue_send(q, "x", 1, 0), 0);
    tu_kill(pid);
    shmds_queue_close(q);
    tu_chan_close(&back);
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * multiprocess
 * ------------------------------------------------------------------------ */

#define MP_PRODUCERS 2
#define MP_CONSUMERS 2
#define MP_MSGS 20000
#define MP_MAXLEN 200

struct mp_shared {
    uint8_t got[MP_PRODUCERS][MP_MSGS];
    int bad; /* a consumer saw a malformed or out-of-order message */
};
static struct mp_shared *mp;
static unsigned mp_flags;

static int mp_producer(void *arg)
{
    uint32_t p = (uint32_t)(uintptr_t)arg;
    shmds_queue *q;
    if (shmds_queue_open(g_r, "mp", &q) != 0)
        return 1;
    unsigned char buf[MP_MAXLEN];
    for (uint32_t s = 0; s < MP_MSGS; s++) {
        size_t len = msg_make(buf, p, s, MP_MAXLEN);
        if (shmds_queue_send(q, buf, len, -1) != 0)
            return 2;
    }
    shmds_queue_close(q);
    return 0;
}

static int mp_consumer(void *arg)
{
    shmds_queue *q;
    if (shmds_queue_open(g_r, "mp", &q) != 0)
        return 1;
    unsigned char buf[MP_MAXLEN];
    int64_t last[MP_PRODUCERS] = {-1, -1};
    for (;;) {
        size_t len;
        int rc = shmds_queue_recv(q, buf, sizeof buf, &len, -1);
        if (rc == SHMDS_ECLOSED)
            break;
        if (rc != 0)
            return 2;
        uint32_t p, s;
        if (!msg_ok(buf, len, &p, &s) || p >= MP_PRODUCERS || s >= MP_MSGS ||
            (int64_t)s <= last[p]) {
            __atomic_store_n(&mp->bad, 1, __ATOMIC_SEQ_CST);
            return 3;
        }
        last[p] = s;
        __atomic_add_fetch(&mp->got[p][s], 1, __ATOMIC_SEQ_CST);
    }
    shmds_queue_close(q);
    return 0;
}

static void run_mp(unsigned flags, int producers, int consumers)
{
    g_r = make_region();
    mp = tu_shared_alloc(sizeof *mp);
    mp_flags = flags;
    shmds_queue *q = make_queue(g_r, "mp", 16384, MP_MAXLEN, flags);
    pid_t pp[MP_PRODUCERS], cc[MP_CONSUMERS];
    for (int i = 0; i < consumers; i++)
        cc[i] = tu_fork(mp_consumer, NULL);
    for (int i = 0; i < producers; i++)
        pp[i] = tu_fork(mp_producer, (void *)(uintptr_t)i);
    for (int i = 0; i < producers; i++) {
        int st = tu_wait(pp[i], 50000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "producer %d: status %d", i, st);
    }
    ck_assert_int_eq(shmds_queue_shutdown(q), 0);
    for (int i = 0; i < consumers; i++) {
        int st = tu_wait(cc[i], 50000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "consumer %d: status %d", i, st);
    }
    ck_assert_int_eq(mp->bad, 0);
    for (int p = 0; p < producers; p++)
        for (int s = 0; s < MP_MSGS; s++)
            ck_assert_msg(mp->got[p][s] == 1, "message %d/%d received %d times", p, s,
                          mp->got[p][s]);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    shmds_region_close(g_r);
}

START_TEST(test_queue_mpmc_2x2_each_message_exactly_once_in_order)
{
    run_mp(0, MP_PRODUCERS, MP_CONSUMERS);
}
END_TEST

START_TEST(test_queue_spsc_1x1_each_message_exactly_once_in_order)
{
    run_mp(SHMDS_QUEUE_SPSC, 1, 1);
}
END_TEST

/* SPSC stream: chunks of random sizes; both sides checksum the stream. */
#define STREAM_BYTES (24u << 20)

struct stream_sums {
    uint64_t sent, received, bytes;
};
static struct stream_sums *ss;

static int stream_producer(void *arg)
{
    shmds_queue *q;
    if (shmds_queue_open(g_r, "st", &q) != 0)
        return 1;
    static unsigned char buf[65536];
    uint64_t h = SHMDS__FNV_INIT, done = 0;
    uint32_t x = 12345;
    while (done < STREAM_BYTES) {
        x = x * 1103515245u + 12345u;
        size_t len = (x >> 8) % sizeof buf;
        if (len > STREAM_BYTES - done)
            len = STREAM_BYTES - done;
        fill(buf, len, 3, (uint32_t)done);
        if (shmds_queue_send(q, buf, len, -1) != 0)
            return 2;
        h = shmds__fnv1a(h, buf, len);
        done += len;
    }
    ss->sent = h;
    return shmds_queue_shutdown(q) == 0 ? 0 : 3;
}

START_TEST(test_queue_spsc_stream_checksums_match)
{
    g_r = make_region();
    ss = tu_shared_alloc(sizeof *ss);
    shmds_queue *q = make_queue(g_r, "st", 1 << 20, 65536, SHMDS_QUEUE_SPSC);
    pid_t pid = tu_fork(stream_producer, NULL);
    static unsigned char buf[65536];
    uint64_t h = SHMDS__FNV_INIT, bytes = 0;
    size_t len;
    int rc;
    while ((rc = shmds_queue_recv(q, buf, sizeof buf, &len, -1)) == 0) {
        h = shmds__fnv1a(h, buf, len);
        bytes += len;
    }
    ck_assert_int_eq(rc, SHMDS_ECLOSED);
    int st = tu_wait(pid, 50000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_uint_eq(bytes, STREAM_BYTES);
    ck_assert(h == ss->sent);
    shmds_queue_close(q);
    shmds_region_close(g_r);
}
END_TEST

/* Children that block: a receiver on an empty queue, a sender on a full
 * one, each with a long timeout. They exit with 0 when the call returned
 * SHMDS_ECLOSED. */
static int blocked_receiver(void *arg)
{
    shmds_queue *q;
    if (shmds_queue_open(g_r, (const char *)arg, &q) != 0)
        return 1;
    tu_send(&chan, "R", 1);
    char buf[64];
    size_t len;
    return shmds_queue_recv(q, buf, sizeof buf, &len, 120000) == SHMDS_ECLOSED ? 0 : 2;
}

static int blocked_sender(void *arg)
{
    shmds_queue *q;
    if (shmds_queue_open(g_r, (const char *)arg, &q) != 0)
        return 1;
    tu_send(&chan, "S", 1);
    return shmds_queue_send(q, "full", 4, 120000) == SHMDS_ECLOSED ? 0 : 2;
}

START_TEST(test_queue_shutdown_wakes_blocked_receivers_and_senders)
{
    g_r = make_region();
    tu_chan_open(&chan);
    shmds_queue *empty = make_queue(g_r, "empty", 1024, 64, 0);
    shmds_queue *full = make_queue(g_r, "full", 64, 56, 0);
    char fill56[56] = {0};
    ck_assert_int_eq(shmds_queue_send(full, fill56, sizeof fill56, 0), 0);
    pid_t kids[4];
    char c;
    for (int i = 0; i < 2; i++) {
        kids[i] = tu_fork(blocked_receiver, "empty");
        ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
        kids[2 + i] = tu_fork(blocked_sender, "full");
        ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    }
    ck_assert_int_eq(shmds_queue_shutdown(empty), 0);
    ck_assert_int_eq(shmds_queue_shutdown(full), 0);
    /* Far below the children's own 120 s timeouts: a child still waiting
     * there would be killed and fail the status check. */
    for (int i = 0; i < 4; i++) {
        int st = tu_wait(kids[i], 20000);
        ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: status %d", i,
                      st);
    }
    shmds_queue_close(empty);
    shmds_queue_close(full);
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * crash
 * ------------------------------------------------------------------------ */

#define CR_ROUNDS 50
#define CR_PROCS 4 /* producers 0,1 and consumers 2,3 (SPSC rounds: 0 and 2) */
#define CR_SEQ 4096
#define CR_MAXLEN 120

struct cr_shared {
    /* Producer ids are round*2+i, so every round's messages are new. */
    uint32_t acked[CR_ROUNDS * 2];             /* sends that returned 0 */
    uint8_t got[CR_ROUNDS * 2][CR_SEQ];        /* receipts */
    uint32_t busy[2];                          /* consumer inside recv..record */
    uint32_t progress;                         /* any operation finished */
    uint32_t bad;
};
static struct cr_shared *cr;
static const char *cr_qname;

static void cr_record(const unsigned char *buf, size_t len)
{
    uint32_t p, s;
    if (!msg_ok(buf, len, &p, &s) || p >= CR_ROUNDS * 2 || s >= CR_SEQ) {
        __atomic_store_n(&cr->bad, 1, __ATOMIC_SEQ_CST);
        return;
    }
    __atomic_add_fetch(&cr->got[p][s], 1, __ATOMIC_SEQ_CST);
}

struct cr_arg {
    int role; /* 0 producer, 1 consumer */
    uint32_t id;
};

static int cr_child(void *arg)
{
    const struct cr_arg *a = arg;
    shmds_queue *q;
    if (shmds_queue_open(g_r, cr_qname, &q) != 0)
        return 1;
    unsigned char buf[CR_MAXLEN];
    if (a->role == 0) {
        for (uint32_t s = 1; s < CR_SEQ; s++) {
            size_t len = msg_make(buf, a->id, s, CR_MAXLEN);
            int rc = shmds_queue_send(q, buf, len, -1);
            if (rc != 0)
                return 2;
            __atomic_store_n(&cr->acked[a->id], s, __ATOMIC_SEQ_CST);
            __atomic_add_fetch(&cr->progress, 1, __ATOMIC_SEQ_CST);
        }
        for (;;)
            pause();
    }
    for (;;) {
        size_t len;
        __atomic_store_n(&cr->busy[a->id], 1, __ATOMIC_SEQ_CST);
        int rc = shmds_queue_recv(q, buf, sizeof buf, &len, -1);
        if (rc != 0)
            return 3;
        cr_record(buf, len);
        __atomic_store_n(&cr->busy[a->id], 0, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&cr->progress, 1, __ATOMIC_SEQ_CST);
    }
}

static void run_crash(unsigned flags)
{
    g_r = make_region();
    cr = tu_shared_alloc(sizeof *cr);
    cr_qname = "crash";
    /* A small ring: producers block on it full and wrap it often. */
    shmds_queue *q = make_queue(g_r, cr_qname, 2048, CR_MAXLEN, flags);
    unsigned seed = (unsigned)time(NULL);
    int nprod = flags ? 1 : 2, ncons = flags ? 1 : 2, kills = 0;
    uint64_t lost_allowed = 0;
    for (int round = 0; round < CR_ROUNDS; round++) {
        pid_t pids[CR_PROCS];
        struct cr_arg args[CR_PROCS];
        int n = 0;
        for (int i = 0; i < ncons; i++) {
            args[n] = (struct cr_arg){1, (uint32_t)i};
            pids[n] = tu_fork(cr_child, &args[n]);
            n++;
        }
        for (int i = 0; i < nprod; i++) {
            args[n] = (struct cr_arg){0, (uint32_t)(round * 2 + i)};
            pids[n] = tu_fork(cr_child, &args[n]);
            n++;
        }
        /* Wait for some traffic, then kill everyone, one at a time, each
         * at a random moment: the first victim is picked at random. */
        uint32_t start = __atomic_load_n(&cr->progress, __ATOMIC_SEQ_CST);
        for (int spins = 0; spins < 20000 &&
                            __atomic_load_n(&cr->progress, __ATOMIC_SEQ_CST) - start < 20;
             spins++) {
            struct timespec nap = {0, 100000};
            nanosleep(&nap, NULL);
        }
        int first = rand_r(&seed) % n;
        for (int k = 0; k < n; k++) {
            int i = (first + k) % n;
            struct timespec nap = {0, (long)(rand_r(&seed) % 2000) * 1000};
            nanosleep(&nap, NULL);
            int st = tu_kill(pids[i]);
            ck_assert_msg(WIFSIGNALED(st), "child exited by itself: status %d", st);
            kills++;
        }
        for (int i = 0; i < ncons; i++)
            if (__atomic_exchange_n(&cr->busy[i], 0, __ATOMIC_SEQ_CST))
                lost_allowed++;
        ck_assert_int_eq(shmds_queue_check(q), 0);
        ck_assert_int_eq(shmds_region_check(g_r), 0);
    }
    /* Drain what is left (claims of dead SPSC threads are taken over). */
    ck_assert_int_eq(shmds_queue_shutdown(q), 0);
    unsigned char buf[CR_MAXLEN];
    size_t len;
    int rc;
    while ((rc = shmds_queue_recv(q, buf, sizeof buf, &len, 0)) == 0)
        cr_record(buf, len);
    ck_assert_int_eq(rc, SHMDS_ECLOSED);
    ck_assert_int_eq(cr->bad, 0);
    uint64_t lost = 0, acked = 0;
    for (int p = 0; p < CR_ROUNDS * 2; p++) {
        for (uint32_t s = 1; s < CR_SEQ; s++) {
            ck_assert_msg(cr->got[p][s] <= 1, "message %d/%u received twice", p, s);
            if (s <= cr->acked[p]) {
                acked++;
                lost += cr->got[p][s] == 0;
            }
            /* Unacknowledged: the send in flight at the kill may or may not
             * have committed; nothing later can exist. */
            if (s > cr->acked[p] + 1)
                ck_assert_msg(cr->got[p][s] == 0, "message %d/%u never sent", p, s);
        }
    }
    ck_assert_msg(lost <= lost_allowed, "%llu acknowledged messages lost, %llu allowed",
                  (unsigned long long)lost, (unsigned long long)lost_allowed);
    ck_assert_uint_gt(acked, (uint64_t)CR_ROUNDS * 10);
    ck_assert_int_gt(kills, CR_ROUNDS);
    shmds_queue_close(q);
    shmds_region_close(g_r);
}

START_TEST(test_queue_mpmc_survives_random_sigkills)
{
    run_crash(0);
}
END_TEST

START_TEST(test_queue_spsc_survives_random_sigkills)
{
    run_crash(SHMDS_QUEUE_SPSC);
}
END_TEST

/* ---------------------------------------------------------------------------
 * at-least-once (SHMDS_QUEUE_ACK)
 * ------------------------------------------------------------------------ */

static shmds_queue *make_ack_queue(shmds_region *r, const char *name, size_t cap, size_t max_msg,
                                   uint32_t lease_ms, uint32_t max_in_flight)
{
    shmds_queue_opts o = {.capacity_bytes = cap,
                          .max_msg = max_msg,
                          .flags = SHMDS_QUEUE_ACK,
                          .lease_ms = lease_ms,
                          .max_in_flight = max_in_flight};
    shmds_queue *q = NULL;
    int rc = shmds_queue_create_ex(r, name, &o, &q);
    ck_assert_msg(rc == 0, "queue_create_ex: %s", shmds_errname(rc));
    return q;
}

static shmds_queue_stats qstats(shmds_queue *q)
{
    shmds_queue_stats st;
    ck_assert_int_eq(shmds_queue_stats_get(q, &st), 0);
    return st;
}

START_TEST(test_queue_ack_lease_then_ack_removes_message)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_ack_queue(r, "a", 1024, 64, 60000, 0);
    ck_assert_int_eq(shmds_queue_send(q, "one", 3, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "two", 3, 0), 0);
    char buf[64];
    size_t len = 0;
    uint64_t id = 0, id2 = 0, n = 0;
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_uint_eq(len, 3);
    ck_assert(memcmp(buf, "one", 3) == 0);
    ck_assert_uint_ne(id, 0);
    ck_assert_int_eq(shmds_queue_len(q, &n), 0);
    ck_assert_uint_eq(n, 1);
    shmds_queue_stats st = qstats(q);
    ck_assert_uint_eq(st.sent, 2);
    ck_assert_uint_eq(st.received, 1);
    ck_assert_uint_eq(st.in_flight, 1);
    ck_assert_uint_eq(st.waiting, 1);
    ck_assert_uint_eq(st.lease_ms, 60000);
    ck_assert_uint_eq(st.max_in_flight, 256);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    /* The next lease is the next message, not the one in flight. */
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id2, 0), 0);
    ck_assert(memcmp(buf, "two", 3) == 0);
    ck_assert_uint_ne(id, id2);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id2, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    ck_assert_int_eq(shmds_queue_ack(q, id), -ESTALE); /* exactly once */
    ck_assert_int_eq(shmds_queue_ack(q, id2), 0);
    st = qstats(q);
    ck_assert_uint_eq(st.in_flight, 0);
    ck_assert_uint_eq(st.redelivered, 0);
    ck_assert_uint_eq(st.received, 2);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id2, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_ack_plain_recv_stays_exactly_once)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_ack_queue(r, "p", 1024, 64, 60000, 0);
    for (char c = 'a'; c <= 'd'; c++)
        ck_assert_int_eq(shmds_queue_send(q, &c, 1, 0), 0);
    char buf[8];
    size_t len;
    uint64_t id;
    /* Plain receives around a lease: each message once, in order. */
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(buf[0], 'a');
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_int_eq(buf[0], 'b');
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(buf[0], 'c');
    ck_assert_int_eq(shmds_queue_check(q), 0);
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(buf[0], 'd');
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), -EAGAIN);
    shmds_queue_stats st = qstats(q);
    ck_assert_uint_eq(st.received, 4);
    ck_assert_uint_eq(st.in_flight, 0);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_ack_lapsed_lease_is_delivered_again_first)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_ack_queue(r, "l", 1024, 64, 20, 0);
    ck_assert_int_eq(shmds_queue_send(q, "A", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "B", 1, 0), 0);
    char buf[8];
    size_t len;
    uint64_t id1, id2, id3;
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id1, 0), 0);
    ck_assert_int_eq(buf[0], 'A');
    /* Wait until the clock leases run out by has passed the 20 ms lease
     * (queue.h): it has certainly run out. */
    ck_assert_int_eq(tu_coarse_past(shmds__now_ns() + 20 * 1000000u), 0);
    shmds_queue_stats st = qstats(q);
    ck_assert_uint_ge(st.oldest_in_flight_ns, 20 * 1000000u);
    /* A is delivered again before B, under a new id. */
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id2, 0), 0);
    ck_assert_int_eq(buf[0], 'A');
    ck_assert_uint_ne(id1, id2);
    ck_assert_int_eq(shmds_queue_ack(q, id1), -ESTALE); /* the lease moved on */
    ck_assert_int_eq(shmds_queue_ack(q, id2), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id3, 0), 0);
    ck_assert_int_eq(buf[0], 'B');
    st = qstats(q);
    ck_assert_uint_eq(st.redelivered, 1);
    ck_assert_uint_eq(st.received, 2);
    ck_assert_uint_eq(st.in_flight, 1);
    /* A lapsed lease not yet delivered again may still be acknowledged. */
    ck_assert_int_eq(tu_coarse_past(shmds__now_ns() + 20 * 1000000u), 0);
    ck_assert_int_eq(shmds_queue_ack(q, id3), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id3, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

/* A child that leases one message, reports it, and waits to be killed. */
static int ack_lease_and_wait(void *arg)
{
    (void)arg;
    shmds_queue *q;
    char buf[8];
    size_t len;
    uint64_t id;
    if (shmds_queue_open(g_r, "d", &q) != 0 ||
        shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0) != 0)
        return 1;
    tu_send_and_stay(&chan, buf[0]);
}

START_TEST(test_queue_ack_dead_holder_message_delivered_again)
{
    g_r = make_region();
    shmds_queue *q = make_ack_queue(g_r, "d", 1024, 64, 60000, 0);
    tu_chan_open(&chan);
    ck_assert_int_eq(shmds_queue_send(q, "X", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "Y", 1, 0), 0);
    char buf[8], c;
    size_t len;
    uint64_t id;
    /* Reaped: no such process any more. */
    pid_t pid = tu_fork(ack_lease_and_wait, NULL);
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    ck_assert_int_eq(c, 'X');
    tu_kill(pid);
    /* Y is new, so it goes first while nothing makes the receiver probe;
     * then the queue has nothing new, the holder is probed, X comes back. */
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_int_eq(buf[0], 'Y');
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_int_eq(buf[0], 'X');
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    /* Killed but not reaped (a zombie) counts as dead too. */
    ck_assert_int_eq(shmds_queue_send(q, "Z", 1, 0), 0);
    pid = tu_fork(ack_lease_and_wait, NULL);
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_int_eq(buf[0], 'Z');
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    tu_kill(pid);
    shmds_queue_stats st = qstats(q);
    ck_assert_uint_eq(st.redelivered, 2);
    ck_assert_uint_eq(st.in_flight, 0);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}
END_TEST

START_TEST(test_queue_ack_ring_space_waits_for_the_oldest_ack)
{
    shmds_region *r = make_region();
    /* Two 8-byte messages fill the ring (16 bytes each with the header). */
    shmds_queue *q = make_ack_queue(r, "s", 32, 8, 60000, 2);
    ck_assert_int_eq(shmds_queue_send(q, "11111111", 8, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "22222222", 8, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "3", 1, 0), -EAGAIN);
    char buf[8];
    size_t len;
    uint64_t a, b, c;
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &a, 0), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &b, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "3", 1, 0), -EAGAIN); /* leased: still held */
    ck_assert_int_eq(shmds_queue_ack(q, b), 0);
    ck_assert_int_eq(shmds_queue_send(q, "3", 1, 0), -EAGAIN); /* the oldest holds the ring */
    ck_assert_int_eq(shmds_queue_check(q), 0);
    ck_assert_int_eq(shmds_queue_ack(q, a), 0); /* both freed at once */
    ck_assert_int_eq(shmds_queue_send(q, "3", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "4", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    /* max_in_flight 2: a third lease waits although a message is there. */
    q = make_ack_queue(r, "w", 256, 8, 60000, 2);
    for (char m = '1'; m <= '3'; m++)
        ck_assert_int_eq(shmds_queue_send(q, &m, 1, 0), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &a, 0), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &b, 0), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &c, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &c, 20), -ETIMEDOUT);
    /* The window runs from the oldest message not acknowledged. */
    ck_assert_int_eq(shmds_queue_ack(q, b), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &c, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_ack(q, a), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &c, 0), 0);
    ck_assert_int_eq(buf[0], '3');
    ck_assert_int_eq(shmds_queue_ack(q, c), 0);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_ack_bad_input)
{
    shmds_region *r = make_region();
    shmds_queue *plain = make_queue(r, "n", 256, 16, 0);
    shmds_queue *q = make_ack_queue(r, "b", 256, 16, 0, 0);
    char buf[16];
    size_t len;
    uint64_t id;
    ck_assert_int_eq(shmds_queue_recv_lease(plain, buf, sizeof buf, &len, &id, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_ack(plain, UINT64_C(1) << 8), -EINVAL);
    ck_assert_int_eq(shmds_queue_recv_lease(NULL, buf, sizeof buf, &len, &id, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, NULL, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, -2), -EINVAL);
    ck_assert_int_eq(shmds_queue_ack(NULL, UINT64_C(1) << 8), -EINVAL);
    ck_assert_int_eq(shmds_queue_ack(q, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_ack(q, 5), -EINVAL);
    ck_assert_int_eq(shmds_queue_ack(q, UINT64_C(1) << 8), -ESTALE); /* never leased */
    ck_assert_int_eq(shmds_queue_stats_get(q, NULL), -EINVAL);
    ck_assert_int_eq(qstats(q).lease_ms, SHMDS_QUEUE_LEASE_MS_DEFAULT);
    /* A small buffer: -ENOBUFS, the message stays deliverable. */
    ck_assert_int_eq(shmds_queue_send(q, "0123456789", 10, 0), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, 4, &len, &id, 0), -ENOBUFS);
    ck_assert_uint_eq(len, 10);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    shmds_queue_opts o = {.capacity_bytes = 256, .max_msg = 16,
                          .flags = SHMDS_QUEUE_ACK | SHMDS_QUEUE_SPSC};
    shmds_queue *x;
    ck_assert_int_eq(shmds_queue_create_ex(r, "x", &o, &x), -EINVAL);
    o.flags = SHMDS_QUEUE_ACK;
    o.max_in_flight = 65537;
    ck_assert_int_eq(shmds_queue_create_ex(r, "x", &o, &x), -EINVAL);
    ck_assert_int_eq(shmds_queue_create_ex(r, "x", NULL, &x), -EINVAL);
    o.flags = 1u << 7;
    o.max_in_flight = 0;
    ck_assert_int_eq(shmds_queue_create_ex(r, "x", &o, &x), -EINVAL);
    /* Shut down with a lease out: nothing to deliver is the end. */
    ck_assert_int_eq(shmds_queue_send(q, "z", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_int_eq(shmds_queue_shutdown(q), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, -1), SHMDS_ECLOSED);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(plain);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_ack_damaged_log_or_slots_are_ecorrupt)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_ack_queue(r, "c", 256, 16, 60000, 4);
    ck_assert_int_eq(shmds_queue_send(q, "m", 1, 0), 0);
    char buf[16];
    size_t len;
    uint64_t id;
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    /* The area after the queue header (the immutable line, then rd's
     * line): damage the lease count, then the slot word. */
    shmds_off_t off;
    uint32_t type;
    ck_assert_int_eq(shmds_root_get(r, "c", &type, &off), 0);
    unsigned char *hdr = (unsigned char *)shmds_ptr(r, (off + 63) & ~(shmds_off_t)63);
    unsigned char *area = hdr + 448;
    uint64_t saved;
    memcpy(&saved, area + 64 + 24, 8); /* leased */
    uint64_t bad = saved + 3;
    memcpy(area + 64 + 24, &bad, 8);
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    memcpy(area + 64 + 24, &saved, 8);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    memcpy(&saved, area + 256, 8); /* slot 0's word */
    bad = saved ^ (UINT64_C(1) << 40);
    memcpy(area + 256, &bad, 8);
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_queue_ack(q, id), SHMDS_ECORRUPT);
    memcpy(area + 256, &saved, 8);
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    /* The receivers' copy of the tail (at 216): one message past the tail
     * is damage (the check says so, a receive finds no record there); one
     * from before the read cursor (as an older library left it) is only
     * stale, and replaced. */
    uint64_t tail, seen;
    memcpy(&tail, hdr + 128, 8);
    seen = tail + (UINT64_C(1) << 32) + 2; /* one 1-byte record past it */
    memcpy(hdr + 216, &seen, 8);
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), SHMDS_ECORRUPT);
    seen = 0;
    memcpy(hdr + 216, &seen, 8);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    ck_assert_int_eq(shmds_queue_send(q, "n", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0), 0);
    ck_assert(len == 1 && buf[0] == 'n');
    ck_assert_int_eq(shmds_queue_ack(q, id), 0);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    /* The immutable part is checksummed: open refuses it. */
    area[0] ^= 1;
    shmds_queue *q2;
    ck_assert_int_eq(shmds_queue_open(r, "c", &q2), SHMDS_ECORRUPT);
    area[0] ^= 1;
    ck_assert_int_eq(shmds_queue_open(r, "c", &q2), 0);
    shmds_queue_close(q2);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

/* Consumers SIGKILLed at random inside recv_lease / ack, producers too.
 * Every acknowledged send must be processed at least once and acknowledged
 * exactly once; redeliveries are bounded by the consumer kills (each holds
 * one lease at a time). */
#define AK_ROUNDS 40
#define AK_SEQ 4096
#define AK_MAXLEN 120

struct ak_shared {
    uint32_t sent[AK_ROUNDS * 2];          /* sends that returned 0 */
    uint8_t processed[AK_ROUNDS * 2][AK_SEQ];
    uint8_t acked[AK_ROUNDS * 2][AK_SEQ];  /* acks that returned 0 */
    uint8_t maybe[AK_ROUNDS * 2][AK_SEQ];  /* an ack was in flight at a kill */
    uint32_t in_ack[2];                    /* consumer i: (p << 16 | s) + 1 */
    uint32_t progress, bad, stale;
};
static struct ak_shared *ak;

static void ak_process(const unsigned char *buf, size_t len, uint32_t *p, uint32_t *s)
{
    if (!msg_ok(buf, len, p, s) || *p >= AK_ROUNDS * 2 || *s >= AK_SEQ) {
        __atomic_store_n(&ak->bad, 1, __ATOMIC_SEQ_CST);
        *p = 0;
        *s = 0;
        return;
    }
    __atomic_add_fetch(&ak->processed[*p][*s], 1, __ATOMIC_SEQ_CST);
}

/* Lease, process, acknowledge; *in_ack says which ack may be in flight. */
static int ak_take(shmds_queue *q, uint32_t *in_ack, int timeout_ms)
{
    unsigned char buf[AK_MAXLEN];
    size_t len;
    uint64_t id;
    int rc = shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, timeout_ms);
    if (rc != 0)
        return rc;
    uint32_t p, s;
    ak_process(buf, len, &p, &s);
    __atomic_store_n(in_ack, (p << 16 | s) + 1, __ATOMIC_SEQ_CST);
    rc = shmds_queue_ack(q, id);
    if (rc == 0)
        __atomic_add_fetch(&ak->acked[p][s], 1, __ATOMIC_SEQ_CST);
    else if (rc == -ESTALE)
        __atomic_add_fetch(&ak->stale, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(in_ack, 0, __ATOMIC_SEQ_CST);
    return rc == -ESTALE ? 0 : rc;
}

static int ak_child(void *arg)
{
    const struct cr_arg *a = arg;
    shmds_queue *q;
    if (shmds_queue_open(g_r, "ak", &q) != 0)
        return 1;
    if (a->role == 0) {
        unsigned char buf[AK_MAXLEN];
        for (uint32_t s = 1; s < AK_SEQ; s++) {
            size_t len = msg_make(buf, a->id, s, AK_MAXLEN);
            if (shmds_queue_send(q, buf, len, -1) != 0)
                return 2;
            __atomic_store_n(&ak->sent[a->id], s, __ATOMIC_SEQ_CST);
            __atomic_add_fetch(&ak->progress, 1, __ATOMIC_SEQ_CST);
        }
        for (;;)
            pause();
    }
    for (;;) {
        if (ak_take(q, &ak->in_ack[a->id], -1) != 0)
            return 3;
        __atomic_add_fetch(&ak->progress, 1, __ATOMIC_SEQ_CST);
    }
}

START_TEST(test_queue_ack_consumers_killed_at_random_lose_nothing)
{
    g_r = make_region();
    ak = tu_shared_alloc(sizeof *ak);
    /* A small ring (producers block on it and it wraps often); a lease
     * longer than the test, so only deaths cause redeliveries. */
    shmds_queue *q = make_ack_queue(g_r, "ak", 2048, AK_MAXLEN, 600000, 8);
    unsigned seed = (unsigned)time(NULL);
    uint64_t consumer_kills = 0;
    for (int round = 0; round < AK_ROUNDS; round++) {
        pid_t pids[4];
        struct cr_arg args[4];
        int n = 0;
        for (int i = 0; i < 2; i++) {
            args[n] = (struct cr_arg){1, (uint32_t)i};
            pids[n] = tu_fork(ak_child, &args[n]);
            n++;
        }
        for (int i = 0; i < 2; i++) {
            args[n] = (struct cr_arg){0, (uint32_t)(round * 2 + i)};
            pids[n] = tu_fork(ak_child, &args[n]);
            n++;
        }
        uint32_t start = __atomic_load_n(&ak->progress, __ATOMIC_SEQ_CST);
        for (int spins = 0; spins < 20000 &&
                            __atomic_load_n(&ak->progress, __ATOMIC_SEQ_CST) - start < 20;
             spins++) {
            struct timespec nap = {0, 100000};
            nanosleep(&nap, NULL);
        }
        int first = rand_r(&seed) % n;
        for (int k = 0; k < n; k++) {
            int i = (first + k) % n;
            struct timespec nap = {0, (long)(rand_r(&seed) % 2000) * 1000};
            nanosleep(&nap, NULL);
            int st = tu_kill(pids[i]);
            ck_assert_msg(WIFSIGNALED(st), "child exited by itself: status %d", st);
            if (args[i].role == 1)
                consumer_kills++;
        }
        for (int i = 0; i < 2; i++) {
            uint32_t x = __atomic_exchange_n(&ak->in_ack[i], 0, __ATOMIC_SEQ_CST);
            if (x != 0)
                ak->maybe[(x - 1) >> 16][(x - 1) & 0xffff] = 1;
        }
        ck_assert_int_eq(shmds_queue_check(q), 0);
        ck_assert_int_eq(shmds_region_check(g_r), 0);
    }
    /* Drain: the dead consumers' leases come back. */
    ck_assert_int_eq(shmds_queue_shutdown(q), 0);
    uint32_t none;
    int rc;
    while ((rc = ak_take(q, &none, 0)) == 0)
        ;
    ck_assert_int_eq(rc, SHMDS_ECLOSED);
    ck_assert_int_eq(ak->bad, 0);
    ck_assert_int_eq(ak->stale, 0);
    uint64_t sent = 0, dups = 0;
    for (int p = 0; p < AK_ROUNDS * 2; p++) {
        for (uint32_t s = 1; s < AK_SEQ; s++) {
            uint8_t pr = ak->processed[p][s], ac = ak->acked[p][s];
            if (s <= ak->sent[p]) {
                sent++;
                ck_assert_msg(pr >= 1, "message %d/%u never processed", p, s);
            }
            if (s > ak->sent[p] + 1)
                ck_assert_msg(pr == 0, "message %d/%u never sent", p, s);
            ck_assert_msg(ac <= 1, "message %d/%u acknowledged %u times", p, s, ac);
            /* Processed means acknowledged, unless the ack that was in flight
             * at a kill committed (then nobody recorded it). */
            if (pr > 0)
                ck_assert_msg(ac == 1 || ak->maybe[p][s], "message %d/%u not acknowledged", p, s);
            dups += pr > 1 ? pr - 1u : 0u;
        }
    }
    shmds_queue_stats st = qstats(q);
    ck_assert_uint_le(dups, st.redelivered);
    ck_assert_uint_le(st.redelivered, consumer_kills);
    ck_assert_uint_eq(st.in_flight, 0);
    ck_assert_uint_eq(st.requeued, 0);
    ck_assert_uint_gt(sent, (uint64_t)AK_ROUNDS * 10);
    fprintf(stderr, "ack torture: %" PRIu64 " sent, %" PRIu64 " redelivered, %" PRIu64
                    " processed twice, %" PRIu64 " consumer kills\n",
            sent, st.redelivered, dups, consumer_kills);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    shmds_region_close(g_r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * zero-copy
 * ------------------------------------------------------------------------ */

START_TEST(test_queue_zc_in_order_across_wraps_mixed_with_copies)
{
    shmds_region *r = make_region();
    for (unsigned flags = 0; flags <= SHMDS_QUEUE_SPSC; flags += SHMDS_QUEUE_SPSC) {
        char name[16];
        snprintf(name, sizeof name, "zc%u", flags);
        shmds_queue *q = make_queue(r, name, 1000, 300, flags);
        unsigned char in[300], out[300];
        uint32_t sent = 0, got = 0;
        while (got < 3000) {
            size_t len = (sent * 37u) % 301u;
            fill(in, len, 2, sent);
            int rc;
            if (sent % 3 != 0) { /* two in three zero-copy, the rest copied */
                void *p;
                if ((rc = shmds_queue_reserve(q, len, &p, 0)) == 0) {
                    ck_assert_uint_eq((uintptr_t)p % 8, 0);
                    memcpy(p, in, len);
                    ck_assert_int_eq(shmds_queue_commit(q, len), 0);
                }
            } else {
                rc = shmds_queue_send(q, in, len, 0);
            }
            if (rc == 0) {
                sent++;
                continue;
            }
            ck_assert_int_eq(rc, -EAGAIN);
            for (;;) {
                size_t n = 0, want = (got * 37u) % 301u;
                if (got % 2 == 0) {
                    const void *m;
                    if ((rc = shmds_queue_recv_ref(q, &m, &n, 0)) != 0)
                        break;
                    memcpy(out, m, n);
                    ck_assert_int_eq(shmds_queue_release(q), 0);
                } else if ((rc = shmds_queue_recv(q, out, sizeof out, &n, 0)) != 0) {
                    break;
                }
                ck_assert_uint_eq(n, want);
                fill(in, n, 2, got);
                ck_assert(memcmp(in, out, n) == 0);
                got++;
            }
            ck_assert_int_eq(rc, -EAGAIN);
            ck_assert_int_eq(shmds_queue_check(q), 0);
        }
        shmds_queue_stats st = qstats(q);
        ck_assert_uint_eq(st.sent, sent);
        ck_assert_uint_eq(st.received, got);
        shmds_queue_close(q);
    }
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_queue_zc_commit_shorter_cancel_and_misuse)
{
    shmds_region *r = make_region();
    for (unsigned flags = 0; flags <= SHMDS_QUEUE_SPSC; flags += SHMDS_QUEUE_SPSC) {
        shmds_queue *q = make_queue(r, flags ? "m1" : "m0", 256, 200, flags);
        void *p;
        const void *m;
        size_t len;
        ck_assert_int_eq(shmds_queue_commit(q, 0), -EINVAL); /* nothing reserved */
        ck_assert_int_eq(shmds_queue_release(q), -EINVAL);
        ck_assert_int_eq(shmds_queue_reserve(q, 201, &p, 0), -EMSGSIZE);
        ck_assert_int_eq(shmds_queue_reserve(q, 160, &p, 0), -EMSGSIZE); /* > half the ring */
        ck_assert_int_eq(shmds_queue_reserve(q, 100, NULL, 0), -EINVAL);
        ck_assert_int_eq(shmds_queue_reserve(q, 100, &p, 0), 0);
        ck_assert_int_eq(shmds_queue_reserve(q, 10, &p, 0), -EBUSY);
        memcpy(p, "short", 5);
        ck_assert_int_eq(shmds_queue_commit(q, 101), -EMSGSIZE);
        ck_assert_int_eq(shmds_queue_commit(q, 5), 0);
        ck_assert_int_eq(shmds_queue_reserve(q, 50, &p, 0), 0);
        shmds_queue_cancel(q);
        shmds_queue_cancel(q); /* no-op */
        uint64_t n;
        ck_assert_int_eq(shmds_queue_len(q, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(shmds_queue_recv_ref(q, &m, &len, 0), 0);
        ck_assert_uint_eq(len, 5);
        ck_assert(memcmp(m, "short", 5) == 0);
        ck_assert_int_eq(shmds_queue_recv_ref(q, &m, &len, 0), -EBUSY);
        ck_assert_int_eq(shmds_queue_release(q), 0);
        ck_assert_int_eq(shmds_queue_recv_ref(q, &m, &len, 0), -EAGAIN);
        ck_assert_int_eq(shmds_queue_recv_ref(q, &m, &len, 20), -ETIMEDOUT);
        /* A message in place left unreleased stays queued at close. */
        ck_assert_int_eq(shmds_queue_send(q, "kept", 4, 0), 0);
        ck_assert_int_eq(shmds_queue_recv_ref(q, &m, &len, 0), 0);
        shmds_queue_close(q);
        ck_assert_int_eq(shmds_queue_open(r, flags ? "m1" : "m0", &q), 0);
        char buf[8];
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
        ck_assert_uint_eq(len, 4);
        /* Shut down between reserve and commit: not sent. */
        if (flags) { /* in the default mode shutdown needs no lock either */
            ck_assert_int_eq(shmds_queue_reserve(q, 8, &p, 0), 0);
            ck_assert_int_eq(shmds_queue_shutdown(q), 0);
            ck_assert_int_eq(shmds_queue_commit(q, 8), SHMDS_ECLOSED);
            ck_assert_int_eq(shmds_queue_recv_ref(q, &m, &len, 0), SHMDS_ECLOSED);
        }
        ck_assert_int_eq(shmds_queue_check(q), 0);
        shmds_queue_close(q);
    }
    shmds_queue *a = make_ack_queue(r, "zack", 256, 16, 0, 0);
    const void *m;
    size_t len;
    ck_assert_int_eq(shmds_queue_recv_ref(a, &m, &len, 0), -EINVAL);
    shmds_queue_close(a);
    shmds_region_close(r);
}
END_TEST

/* A child that reserves (or receives in place, arg 1), reports, and waits
 * to be killed. */
static int zc_hold_and_wait(void *arg)
{
    shmds_queue *q;
    void *p;
    const void *m;
    size_t len;
    if (shmds_queue_open(g_r, (uintptr_t)arg & 2 ? "zs" : "zm", &q) != 0)
        return 1;
    if ((uintptr_t)arg & 1) {
        if (shmds_queue_recv_ref(q, &m, &len, 0) != 0)
            return 2;
    } else {
        if (shmds_queue_reserve(q, 64, &p, 0) != 0)
            return 2;
        memset(p, 'x', 64);
    }
    tu_send_and_stay(&chan, 'H');
}

START_TEST(test_queue_zc_killed_holders_leave_nothing)
{
    g_r = make_region();
    tu_chan_open(&chan);
    shmds_alloc_stats before, after;
    for (uintptr_t spsc = 0; spsc <= 2; spsc += 2) {
        shmds_queue *q = make_queue(g_r, spsc ? "zs" : "zm", 1024, 128, spsc ? SHMDS_QUEUE_SPSC : 0);
        ck_assert_int_eq(shmds_alloc_stats_get(g_r, &before), 0);
        ck_assert_int_eq(shmds_queue_send(q, "first", 5, 0), 0);
        shmds_queue_close(q); /* SPSC: give the producer side to the child */
        ck_assert_int_eq(shmds_queue_open(g_r, spsc ? "zs" : "zm", &q), 0);
        /* A producer killed between reserve and commit: nothing visible. */
        char c, buf[128];
        size_t len;
        pid_t pid = tu_fork(zc_hold_and_wait, (void *)spsc);
        ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
        tu_kill(pid);
        uint64_t n;
        ck_assert_int_eq(shmds_queue_len(q, &n), 0);
        ck_assert_uint_eq(n, 1);
        ck_assert_int_eq(shmds_queue_check(q), 0);
        ck_assert_int_eq(shmds_queue_send(q, "second", 6, 0), 0);
        /* A consumer killed between receive and release: still queued. */
        pid = tu_fork(zc_hold_and_wait, (void *)(spsc | 1));
        ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
        tu_kill(pid);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
        ck_assert_uint_eq(len, 5);
        ck_assert(memcmp(buf, "first", 5) == 0);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
        ck_assert(memcmp(buf, "second", 6) == 0);
        ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), -EAGAIN);
        ck_assert_int_eq(shmds_queue_check(q), 0);
        ck_assert_int_eq(shmds_region_check(g_r), 0);
        ck_assert_int_eq(shmds_alloc_stats_get(g_r, &after), 0);
        ck_assert_uint_eq(after.used_blocks, before.used_blocks);
        shmds_queue_close(q);
    }
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}
END_TEST

/* A forked child may not commit its parent's reservation. */
static int zc_child_commit(void *arg)
{
    shmds_queue *q = arg;
    return shmds_queue_commit(q, 1) == -EINVAL ? 0 : 1;
}

START_TEST(test_queue_zc_reservation_stays_with_its_thread_across_fork)
{
    shmds_region *r = make_region();
    g_r = r;
    shmds_queue *q = make_queue(r, "zf", 256, 16, SHMDS_QUEUE_SPSC);
    void *p;
    ck_assert_int_eq(shmds_queue_reserve(q, 1, &p, 0), 0);
    memcpy(p, "p", 1);
    int st = tu_wait(tu_fork(zc_child_commit, q), 10000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_int_eq(shmds_queue_commit(q, 1), 0);
    char buf[4];
    size_t len;
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    ck_assert_int_eq(buf[0], 'p');
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * waiting on several queues, event loops
 * ------------------------------------------------------------------------ */

static int wa_send_later(void *arg)
{
    shmds_queue *q;
    char c;
    /* Wait until the parent says it is about to wait, then send. */
    if (tu_recv(&chan, &c, 1) != 1 || shmds_queue_open(g_r, (const char *)arg, &q) != 0)
        return 1;
    return shmds_queue_send(q, "w", 1, -1) == 0 ? 0 : 2;
}

START_TEST(test_queue_wait_any_returns_a_queue_with_work)
{
    g_r = make_region();
    shmds_region *r2 = tu_region("q2", RSZ); /* queues of two regions */
    tu_chan_open(&chan);
    shmds_queue *qs[3];
    qs[0] = make_queue(g_r, "w0", 256, 16, 0);
    qs[1] = make_queue(g_r, "w1", 256, 16, SHMDS_QUEUE_SPSC);
    qs[2] = make_ack_queue(r2, "w2", 256, 16, 60000, 0);
    unsigned ready = 99;
    ck_assert_int_eq(shmds_queue_wait_any(qs, 3, 0, &ready), -EAGAIN);
    ck_assert_int_eq(shmds_queue_wait_any(qs, 3, 20, &ready), -ETIMEDOUT);
    ck_assert_int_eq(shmds_queue_wait_any(qs, 0, 0, &ready), -EINVAL);
    ck_assert_int_eq(shmds_queue_wait_any(NULL, 3, 0, &ready), -EINVAL);
    ck_assert_int_eq(shmds_queue_send(qs[2], "x", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_wait_any(qs, 3, 0, &ready), 0);
    ck_assert_uint_eq(ready, 2);
    char buf[16];
    size_t len;
    uint64_t id;
    ck_assert_int_eq(shmds_queue_recv_lease(qs[2], buf, sizeof buf, &len, &id, 0), 0);
    ck_assert_int_eq(shmds_queue_wait_any(qs, 3, 0, &ready), -EAGAIN); /* leased: not new */
    ck_assert_int_eq(shmds_queue_ack(qs[2], id), 0);
    /* Blocked without bound: a send from another process wakes it. */
    pid_t pid = tu_fork(wa_send_later, "w0");
    tu_send(&chan, "g", 1);
    ck_assert_int_eq(shmds_queue_wait_any(qs, 3, -1, &ready), 0);
    ck_assert_uint_eq(ready, 0);
    int st = tu_wait(pid, 10000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    ck_assert_int_eq(shmds_queue_recv(qs[0], buf, sizeof buf, &len, 0), 0);
    /* The end of a stream counts as work: a receive returns at once. */
    ck_assert_int_eq(shmds_queue_shutdown(qs[1]), 0);
    ck_assert_int_eq(shmds_queue_wait_any(qs, 3, -1, &ready), 0);
    ck_assert_uint_eq(ready, 1);
    for (int i = 0; i < 3; i++) /* destroy: their FIFOs go too */
        ck_assert_int_eq(shmds_queue_destroy(qs[i]), 0);
    tu_chan_close(&chan);
    shmds_region_close(r2);
    shmds_region_close(g_r);
}
END_TEST

static bool readable(int fd, int ms)
{
    struct pollfd p = {fd, POLLIN, 0};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

START_TEST(test_queue_notify_fd_turns_readable_on_send)
{
    g_r = make_region();
    tu_chan_open(&chan);
    shmds_queue *q = make_queue(g_r, "nf", 256, 16, 0);
    int fd = -1, fd2 = -1;
    ck_assert_int_eq(shmds_queue_notify_clear(q), -EINVAL); /* no fd yet */
    ck_assert_int_eq(shmds_queue_notify_fd(q, &fd), 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(shmds_queue_notify_fd(q, &fd2), 0);
    ck_assert_int_eq(fd, fd2); /* one per handle */
    ck_assert(!readable(fd, 0));
    /* A send through another handle (as another process would). */
    shmds_queue *other;
    ck_assert_int_eq(shmds_queue_open(g_r, "nf", &other), 0);
    ck_assert_int_eq(shmds_queue_send(other, "a", 1, 0), 0);
    ck_assert_int_eq(shmds_queue_send(other, "b", 1, 0), 0);
    ck_assert(readable(fd, 0));
    ck_assert_int_eq(shmds_queue_notify_clear(q), 0);
    ck_assert(!readable(fd, 0));
    char buf[16];
    size_t len;
    while (shmds_queue_recv(q, buf, sizeof buf, &len, 0) == 0)
        ;
    /* From another process, while this one polls. */
    pid_t pid = tu_fork(wa_send_later, "nf");
    tu_send(&chan, "g", 1);
    ck_assert(readable(fd, 10000));
    ck_assert_int_eq(shmds_queue_notify_clear(q), 0);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), 0);
    int st = tu_wait(pid, 10000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    shmds_queue_close(other);
    /* Destroy removes the FIFO from /dev/shm. */
    struct stat sb;
    char path[300];
    ck_assert_int_eq(fstat(fd, &sb), 0);
    ck_assert(S_ISFIFO(sb.st_mode));
    ck_assert_int_eq(shmds_queue_destroy(q), 0);
    int found = 0;
    DIR *d = opendir("/dev/shm/shmds-fifo");
    ck_assert_ptr_nonnull(d);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        snprintf(path, sizeof path, "/dev/shm/shmds-fifo/%s", e->d_name);
        struct stat s2;
        if (stat(path, &s2) == 0 && s2.st_ino == sb.st_ino && s2.st_dev == sb.st_dev)
            found = 1;
    }
    closedir(d);
    ck_assert_int_eq(found, 0);
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * broadcast
 * ------------------------------------------------------------------------ */

static shmds_queue *make_topic(shmds_region *r, const char *name, size_t cap, size_t max_msg,
                               unsigned flags, uint32_t subs)
{
    shmds_queue_opts o = {.capacity_bytes = cap,
                          .max_msg = max_msg,
                          .flags = SHMDS_QUEUE_BROADCAST | flags,
                          .max_subscribers = subs};
    shmds_queue *q = NULL;
    int rc = shmds_queue_create_ex(r, name, &o, &q);
    ck_assert_msg(rc == 0, "queue_create_ex: %s", shmds_errname(rc));
    return q;
}

#define BC_MSGS 3000
#define BC_MAXLEN 100

/* Subscribe, say so, read to the end of the stream: every message in
 * order, whole; exit 0, or 10 + what went wrong. arg: 1 = expect no loss. */
static int bc_subscriber(void *arg)
{
    shmds_queue *q;
    shmds_sub *sub;
    if (shmds_queue_open(g_r, "bc", &q) != 0 || shmds_queue_subscribe(q, &sub) != 0)
        return 1;
    tu_send(&chan, "S", 1);
    unsigned char buf[BC_MAXLEN];
    size_t len;
    uint64_t missed, got = 0, lost = 0;
    int64_t last = -1;
    int rc;
    while ((rc = shmds_sub_next(sub, buf, sizeof buf, &len, &missed, -1)) == 0) {
        uint32_t p, seq;
        if (!msg_ok(buf, len, &p, &seq) || (int64_t)seq <= last)
            return 11;
        lost += missed;
        if ((uint64_t)seq != got + lost) /* every message counted: read or missed */
            return 12;
        last = seq;
        got++;
    }
    if (rc != SHMDS_ECLOSED || got + lost != BC_MSGS || ((uintptr_t)arg && lost != 0))
        return 13;
    shmds_sub_close(sub);
    shmds_queue_close(q);
    return 0;
}

static void run_broadcast(unsigned flags, size_t cap)
{
    g_r = make_region();
    tu_chan_open(&chan);
    shmds_queue *q = make_topic(g_r, "bc", cap, BC_MAXLEN, flags, 4);
    pid_t kids[3];
    for (int i = 0; i < 3; i++)
        kids[i] = tu_fork(bc_subscriber, (void *)(uintptr_t)(flags & SHMDS_QUEUE_BLOCK ? 1 : 0));
    char c;
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    unsigned char buf[BC_MAXLEN];
    for (uint32_t s = 0; s < BC_MSGS; s++) {
        size_t len = msg_make(buf, 7, s, BC_MAXLEN);
        ck_assert_int_eq(shmds_queue_send(q, buf, len, -1), 0);
    }
    ck_assert_int_eq(shmds_queue_shutdown(q), 0);
    for (int i = 0; i < 3; i++) {
        int st = tu_wait(kids[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "subscriber %d: status %d", i, st);
    }
    shmds_queue_stats st = qstats(q);
    ck_assert_uint_eq(st.sent, BC_MSGS);
    if (flags & SHMDS_QUEUE_BLOCK)
        ck_assert_uint_eq(st.missed, 0);
    fprintf(stderr, "broadcast%s: %u messages to 3 subscribers, %" PRIu64 " missed in all\n",
            flags & SHMDS_QUEUE_BLOCK ? " (block)" : "", BC_MSGS, st.missed);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}

START_TEST(test_queue_broadcast_every_subscriber_sees_every_message)
{
    run_broadcast(SHMDS_QUEUE_BLOCK, 2048);
}
END_TEST

START_TEST(test_queue_broadcast_lagging_subscribers_miss_but_never_see_torn_messages)
{
    /* A ring of a few messages: subscribers fall behind and are lapped
     * while they copy; what they get is whole, in order, and the rest is
     * counted as missed. */
    run_broadcast(0, 512);
}
END_TEST

START_TEST(test_queue_broadcast_missed_count_and_late_subscriber)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_topic(r, "t", 256, 8, 0, 0);
    ck_assert_int_eq(shmds_queue_send(q, "before", 6, 0), 0);
    shmds_sub *a, *b;
    ck_assert_int_eq(shmds_queue_subscribe(q, &a), 0);
    char buf[8];
    size_t len;
    uint64_t missed = 99;
    ck_assert_int_eq(shmds_sub_next(a, buf, sizeof buf, &len, &missed, 0), -EAGAIN);
    /* 16-byte records in a 256-byte ring: 16 fit; 40 published. */
    for (uint32_t i = 0; i < 40; i++)
        ck_assert_int_eq(shmds_queue_send(q, &i, 4, 0), 0);
    ck_assert_int_eq(shmds_queue_subscribe(q, &b), 0); /* sees only what comes next */
    ck_assert_int_eq(shmds_sub_next(b, buf, sizeof buf, &len, &missed, 0), -EAGAIN);
    uint32_t v;
    ck_assert_int_eq(shmds_sub_next(a, buf, sizeof buf, &len, &missed, 0), 0);
    memcpy(&v, buf, 4);
    ck_assert_uint_eq(missed, v);       /* told how many it missed */
    ck_assert_uint_eq(v, 40 - 16);      /* the oldest still kept */
    for (uint32_t i = v + 1; i < 40; i++) {
        ck_assert_int_eq(shmds_sub_next(a, buf, sizeof buf, &len, &missed, 0), 0);
        memcpy(&v, buf, 4);
        ck_assert_uint_eq(v, i);
        ck_assert_uint_eq(missed, 0);
    }
    ck_assert_int_eq(shmds_sub_next(a, buf, sizeof buf, &len, &missed, 0), -EAGAIN);
    ck_assert_int_eq(shmds_queue_send(q, "last", 4, 0), 0);
    ck_assert_int_eq(shmds_sub_next(b, buf, 2, &len, &missed, 0), -ENOBUFS);
    ck_assert_uint_eq(len, 4);
    ck_assert_int_eq(shmds_sub_next(b, buf, sizeof buf, &len, &missed, 0), 0);
    ck_assert(memcmp(buf, "last", 4) == 0);
    shmds_queue_stats st = qstats(q);
    ck_assert_uint_eq(st.subscribers, 2);
    ck_assert_uint_eq(st.missed, 40 - 16);
    ck_assert_int_eq(shmds_queue_shutdown(q), 0);
    ck_assert_int_eq(shmds_sub_next(a, buf, sizeof buf, &len, &missed, -1), 0); /* "last" */
    ck_assert_int_eq(shmds_sub_next(a, buf, sizeof buf, &len, &missed, -1), SHMDS_ECLOSED);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_sub_close(a);
    shmds_sub_close(b);
    ck_assert_uint_eq(qstats(q).subscribers, 0);
    shmds_queue_close(q);
    shmds_region_close(r);
}
END_TEST

/* Subscribe, report, read nothing: a subscriber that stalls. */
static int bc_stall(void *arg)
{
    (void)arg;
    shmds_queue *q;
    shmds_sub *sub;
    if (shmds_queue_open(g_r, "bl", &q) != 0 || shmds_queue_subscribe(q, &sub) != 0)
        return 1;
    tu_send_and_stay(&chan, 'S');
}

/* A forked child may not read its parent's subscription. */
static int bc_child_next(void *arg)
{
    char buf[8];
    size_t len;
    return shmds_sub_next(arg, buf, sizeof buf, &len, NULL, 0) == -EINVAL ? 0 : 1;
}

START_TEST(test_queue_broadcast_block_waits_for_the_slowest_live_subscriber)
{
    g_r = make_region();
    tu_chan_open(&chan);
    shmds_queue *q = make_topic(g_r, "bl", 128, 8, SHMDS_QUEUE_BLOCK, 2);
    shmds_sub *mine;
    ck_assert_int_eq(shmds_queue_subscribe(q, &mine), 0);
    pid_t pid = tu_fork(bc_stall, NULL);
    char c, buf[8];
    ck_assert_int_eq(tu_recv(&chan, &c, 1), 1);
    shmds_sub *third;
    ck_assert_int_eq(shmds_queue_subscribe(q, &third), -ENOSPC);
    int sent = 0;
    while (shmds_queue_send(q, "m", 1, 0) == 0)
        sent++;
    ck_assert_int_eq(sent, 8); /* 16-byte records, 128 bytes */
    ck_assert_int_eq(shmds_queue_send(q, "m", 1, 20), -ETIMEDOUT);
    size_t len;
    uint64_t missed;
    /* This subscriber reading does not help: the stalled one holds it. */
    for (int i = 0; i < sent; i++)
        ck_assert_int_eq(shmds_sub_next(mine, buf, sizeof buf, &len, &missed, 0), 0);
    ck_assert_int_eq(shmds_queue_send(q, "m", 1, 0), -EAGAIN);
    int st = tu_wait(tu_fork(bc_child_next, mine), 10000);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Dead (reaped or not), it no longer holds the publisher back. */
    ck_assert_int_eq(kill(pid, SIGKILL), 0);
    siginfo_t si;
    ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
    ck_assert_int_eq(shmds_queue_send(q, "n", 1, 0), 0);
    tu_kill(pid);
    ck_assert_int_eq(shmds_sub_next(mine, buf, sizeof buf, &len, &missed, 0), 0);
    ck_assert_int_eq(buf[0], 'n');
    ck_assert_uint_eq(missed, 0);
    ck_assert_int_eq(shmds_queue_subscribe(q, &third), 0); /* the dead one's slot */
    shmds_sub_close(third);
    shmds_sub_close(mine);
    ck_assert_int_eq(shmds_queue_check(q), 0);
    shmds_queue_close(q);
    tu_chan_close(&chan);
    shmds_region_close(g_r);
}
END_TEST

START_TEST(test_queue_broadcast_bad_input)
{
    shmds_region *r = make_region();
    shmds_queue *plain = make_queue(r, "p", 256, 16, 0);
    shmds_queue *t = make_topic(r, "t", 256, 16, 0, 0);
    shmds_sub *s;
    char buf[16];
    size_t len;
    const void *m;
    unsigned ready;
    ck_assert_int_eq(shmds_queue_subscribe(plain, &s), -EINVAL);
    ck_assert_int_eq(shmds_queue_subscribe(NULL, &s), -EINVAL);
    ck_assert_int_eq(shmds_queue_recv(t, buf, sizeof buf, &len, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_recv_ref(t, &m, &len, 0), -EINVAL);
    ck_assert_int_eq(shmds_queue_wait_any(&t, 1, 0, &ready), -EINVAL);
    ck_assert_int_eq(shmds_sub_next(NULL, buf, sizeof buf, &len, NULL, 0), -EINVAL);
    shmds_queue_opts o = {.capacity_bytes = 256, .max_msg = 16};
    shmds_queue *x;
    unsigned bad[] = {SHMDS_QUEUE_BROADCAST | SHMDS_QUEUE_SPSC,
                      SHMDS_QUEUE_BROADCAST | SHMDS_QUEUE_ACK, SHMDS_QUEUE_BLOCK,
                      SHMDS_QUEUE_BLOCK | SHMDS_QUEUE_ACK};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        o.flags = bad[i];
        ck_assert_int_eq(shmds_queue_create_ex(r, "x", &o, &x), -EINVAL);
    }
    o.flags = SHMDS_QUEUE_BROADCAST;
    o.max_subscribers = 4097;
    ck_assert_int_eq(shmds_queue_create_ex(r, "x", &o, &x), -EINVAL);
    shmds_queue_close(plain);
    shmds_queue_close(t);
    shmds_region_close(r);
}
END_TEST

static Suite *queue_suite(void)
{
    Suite *s = suite_create("queue");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_queue_send_recv_in_order_across_wraps);
    tcase_add_test(core, test_queue_sizes_that_overflow_are_refused);
    tcase_add_test(core, test_queue_zero_length_messages_count);
    tcase_add_test(core, test_queue_small_buffer_is_enobufs_and_keeps_message);
    tcase_add_test(core, test_queue_shutdown_drains_then_closed);
    tcase_add_test(core, test_queue_timeouts);
    tcase_add_test(core, test_queue_destroy_removes_it);
    suite_add_tcase(s, core);

    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_queue_bad_input);
    tcase_add_test(limits, test_queue_readonly_region_refuses_writes);
    tcase_add_test(limits, test_queue_damaged_indices_are_ecorrupt);
    tcase_add_test(limits, test_queue_zero_timeout_never_waits_for_the_lock);
    tcase_add_test(limits, test_queue_stopped_producer_does_not_hold_up_receivers);
#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
    tcase_add_test(limits, test_queue_damaged_doorbell_is_ecorrupt);
#endif
    tcase_add_test(limits, test_queue_spsc_second_producer_is_ebusy_until_first_dies);
    tcase_add_test(limits, test_queue_spsc_claim_across_fork);
    suite_add_tcase(s, limits);

    TCase *mproc = tcase_create("multiprocess");
    tcase_add_test(mproc, test_queue_mpmc_2x2_each_message_exactly_once_in_order);
    tcase_add_test(mproc, test_queue_spsc_1x1_each_message_exactly_once_in_order);
    tcase_add_test(mproc, test_queue_spsc_stream_checksums_match);
    tcase_add_test(mproc, test_queue_shutdown_wakes_blocked_receivers_and_senders);
    suite_add_tcase(s, mproc);

    TCase *crash = tcase_create("crash");
    tcase_add_test(crash, test_queue_mpmc_survives_random_sigkills);
    tcase_add_test(crash, test_queue_spsc_survives_random_sigkills);
    tcase_add_test(crash, test_queue_ack_consumers_killed_at_random_lose_nothing);
#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
    tcase_add_test(crash, test_queue_receiver_killed_asleep_leaves_wakeups_bounded);
#endif
    suite_add_tcase(s, crash);

    TCase *ack = tcase_create("ack");
    tcase_add_test(ack, test_queue_ack_lease_then_ack_removes_message);
    tcase_add_test(ack, test_queue_ack_plain_recv_stays_exactly_once);
    tcase_add_test(ack, test_queue_ack_lapsed_lease_is_delivered_again_first);
    tcase_add_test(ack, test_queue_ack_dead_holder_message_delivered_again);
    tcase_add_test(ack, test_queue_ack_ring_space_waits_for_the_oldest_ack);
    tcase_add_test(ack, test_queue_ack_bad_input);
    tcase_add_test(ack, test_queue_ack_damaged_log_or_slots_are_ecorrupt);
    suite_add_tcase(s, ack);

    TCase *zc = tcase_create("zerocopy");
    tcase_add_test(zc, test_queue_zc_in_order_across_wraps_mixed_with_copies);
    tcase_add_test(zc, test_queue_zc_commit_shorter_cancel_and_misuse);
    tcase_add_test(zc, test_queue_zc_killed_holders_leave_nothing);
    tcase_add_test(zc, test_queue_zc_reservation_stays_with_its_thread_across_fork);
    suite_add_tcase(s, zc);

    TCase *wait = tcase_create("wait");
    tcase_add_test(wait, test_queue_wait_any_returns_a_queue_with_work);
    tcase_add_test(wait, test_queue_notify_fd_turns_readable_on_send);
    suite_add_tcase(s, wait);

    TCase *bc = tcase_create("broadcast");
    tcase_set_timeout(bc, 60);
    tcase_add_test(bc, test_queue_broadcast_every_subscriber_sees_every_message);
    tcase_add_test(bc, test_queue_broadcast_lagging_subscribers_miss_but_never_see_torn_messages);
    tcase_add_test(bc, test_queue_broadcast_missed_count_and_late_subscriber);
    tcase_add_test(bc, test_queue_broadcast_block_waits_for_the_slowest_live_subscriber);
    tcase_add_test(bc, test_queue_broadcast_bad_input);
    suite_add_tcase(s, bc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(queue_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
