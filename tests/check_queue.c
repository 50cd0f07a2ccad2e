/* The queue: messages in and out, both modes, bad input, shut-down,
 * many producers and consumers in real processes, and SIGKILLs at random
 * points with the ring checked after each. */
#include <check.h>
#include <errno.h>
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
    int rc = shmds_region_create(rname, RSZ, NULL, &r);
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
    /* Damaged record framing (the ring starts 384 bytes into the header). */
    *tail = saved;
    unsigned char *rec = (unsigned char *)shmds_region_base(r) + off + 384;
    rec[4] ^= 0xff;
    ck_assert_int_eq(shmds_queue_check(q), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_queue_recv(q, buf, sizeof buf, &len, 0), SHMDS_ECORRUPT);
    rec[4] ^= 0xff;
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

/* Child: hold the queue's lock (64 bytes into its header) and stay, as a
 * stopped or stuck lock holder would. */
static int hold_queue_lock(void *arg)
{
    if (shmds_mutex_lock(arg, -1, NULL, NULL) != 0)
        return 1;
    tu_send(&chan, "L", 1);
    for (;;)
        pause();
}

/* Issue 19: timeout_ms 0 waited the whole lock bound (10 s) behind a
 * stopped holder and said -ETIMEDOUT; a short timeout waited the bound too. */
START_TEST(test_queue_zero_timeout_never_waits_for_the_lock)
{
    shmds_region *r = make_region();
    shmds_queue *q = make_queue(r, "z", 1024, 64, 0);
    ck_assert_int_eq(shmds_queue_send(q, "a", 1, 0), 0);
    tu_chan_open(&chan);
    pid_t pid = tu_fork(hold_queue_lock, qhdr_at(r, "z") + 64);
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
#endif

/* Child: become the SPSC producer, say so, and stay alive. */
static int spsc_producer_stays(void *arg)
{
    shmds_queue *q;
    if (shmds_queue_open(g_r, "sp", &q) != 0 || shmds_queue_send(q, "p", 1, 0) != 0)
        return 1;
    tu_send(&chan, "P", 1);
    for (;;)
        pause();
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
#if defined(__GLIBC__) && UINTPTR_MAX == UINT64_MAX
    tcase_add_test(limits, test_queue_damaged_doorbell_is_ecorrupt);
#endif
    tcase_add_test(limits, test_queue_spsc_second_producer_is_ebusy_until_first_dies);
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
    suite_add_tcase(s, crash);
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
