/*
 * queue_bench — shmds queues beside the IPC a user would otherwise pick.
 *
 * Two processes (fork), one sending and one receiving, over: a shmds queue
 * (default mode, SPSC, at-least-once: each message received under a lease,
 * then acknowledged, and zero-copy in the default and SPSC modes:
 * reserve/commit, receive in place/release), a pipe, a Unix socketpair (SOCK_SEQPACKET, so it
 * keeps message boundaries like the others) and a POSIX message queue.
 * Every transport is measured in the same run, so the ratios compare like
 * with like. Each message is made by the sender (memset of its bytes: into
 * its buffer, or into the reserved ring space) and read by the receiver
 * (one load per cache line: from its buffer, or from the ring in place):
 *   - 64-byte messages per second (blocking send/receive), and per
 *     CPU-second of both processes as a ratio to the pipe's ("64 B
 *     CPU-s": less distorted by other load on the machine than wall time);
 *   - GB/s moving 64 KiB chunks;
 *   - round-trip latency of one 64-byte message each way (median, p99).
 * Each figure is taken twice: processes free to run on any CPU, and both
 * pinned to CPU 0 (waking a sleeper on another CPU is slow on small VMs;
 * on one CPU a blocked party hands the CPU straight to the other).
 *
 * Then the round-trip study (rtt_study): pipe and shmds alternately, in
 * rounds, free, pinned to two CPUs and pinned to one; medians and the
 * distribution.
 *
 * Usage: queue_bench [-q | -l]   (-q: fewer iterations, for a quick look;
 *                                  -l: the round-trip study only)
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <mqueue.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <shmds.h>

#include "data.h"

enum kind { K_SHMDS, K_SPSC, K_ACK, K_ZC, K_SPSC_ZC, K_PIPE, K_SOCK, K_MQ, K_N };
static const char *kind_name[K_N] = {"shmds queue", "shmds SPSC", "shmds ack",
                                     "shmds zc",    "SPSC zc",    "pipe",
                                     "socketpair",  "POSIX mq"};

static bool is_shmds(enum kind k)
{
    return k <= K_SPSC_ZC;
}

/* One direction of a channel. */
struct chan {
    enum kind k;
    int rfd, wfd;        /* pipe, socket */
    mqd_t mq;
    shmds_queue *q;
};

static shmds_region *region;
static char region_name[64];
static unsigned mq_seq;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what, int err)
{
    fprintf(stderr, "queue_bench: %s: %s\n", what, err < 0 ? shmds_strerror(err) : strerror(err));
    exit(1);
}

/* Make a channel for messages of up to `msg` bytes. Sockets are
 * bidirectional: `peer` (if given) receives the other direction. Returns 0,
 * or -errno when the system's limits refuse it (POSIX mq). */
static int chan_open(struct chan *c, enum kind k, size_t msg, struct chan *peer)
{
    memset(c, 0, sizeof *c);
    c->k = k;
    int fds[2];
    switch (k) {
    case K_SHMDS:
    case K_SPSC:
    case K_ACK:
    case K_ZC:
    case K_SPSC_ZC: {
        char qn[32];
        static unsigned qseq;
        snprintf(qn, sizeof qn, "q%u", qseq++);
        shmds_queue_opts o = {.capacity_bytes = 4u << 20,
                              .max_msg = msg,
                              .flags = k == K_SPSC || k == K_SPSC_ZC ? SHMDS_QUEUE_SPSC
                                       : k == K_ACK                  ? SHMDS_QUEUE_ACK
                                                                     : 0};
        int rc = shmds_queue_create_ex(region, qn, &o, &c->q);
        if (rc != 0)
            die("shmds_queue_create", rc);
        break;
    }
    case K_PIPE:
        if (pipe(fds) != 0)
            die("pipe", errno);
        fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
        c->rfd = fds[0];
        c->wfd = fds[1];
        break;
    case K_SOCK:
        if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds) != 0)
            die("socketpair", errno);
        {
            int sz = 4 << 20;
            setsockopt(fds[0], SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
            setsockopt(fds[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
        }
        c->wfd = fds[0];
        c->rfd = fds[1];
        if (peer != NULL) {
            *peer = *c;
            peer->wfd = fds[1];
            peer->rfd = fds[0];
        }
        break;
    case K_MQ: {
        char n[64];
        snprintf(n, sizeof n, "/shmds-bench-%ld-%u", (long)getpid(), mq_seq++);
        struct mq_attr a = {0};
        a.mq_maxmsg = msg > 4096 ? 16 : 256;
        a.mq_msgsize = (long)msg;
        c->mq = mq_open(n, O_RDWR | O_CREAT | O_EXCL, 0600, &a);
        if (c->mq == (mqd_t)-1) { /* without privilege the limits are lower */
            a.mq_maxmsg = 10;
            c->mq = mq_open(n, O_RDWR | O_CREAT | O_EXCL, 0600, &a);
        }
        if (c->mq == (mqd_t)-1)
            return -errno; /* e.g. 64 KiB above fs.mqueue.msgsize_max */
        mq_unlink(n);
        break;
    }
    default:
        break;
    }
    return 0;
}

static void chan_close(struct chan *c)
{
    if (is_shmds(c->k)) {
        shmds_queue_destroy(c->q);
        return;
    }
    switch (c->k) {
    case K_PIPE:
    case K_SOCK: close(c->rfd); close(c->wfd); break;
    case K_MQ: mq_close(c->mq); break;
    default: break;
    }
}

/* Make and send one message of len bytes (buf: the sender's buffer). */
static void chan_send(struct chan *c, void *buf, size_t len)
{
    int rc = 0;
    if (c->k == K_ZC || c->k == K_SPSC_ZC) {
        void *p;
        if ((rc = shmds_queue_reserve(c->q, len, &p, -1)) == 0) {
            memset(p, 0x5a, len);
            rc = shmds_queue_commit(c->q, len);
        }
        if (rc != 0)
            die("reserve/commit", rc);
        return;
    }
    memset(buf, 0x5a, len);
    switch (c->k) {
    case K_SHMDS:
    case K_SPSC:
    case K_ACK: rc = shmds_queue_send(c->q, buf, len, -1); break;
    case K_PIPE: {
        const char *p = buf;
        while (len > 0) {
            ssize_t n = write(c->wfd, p, len);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                rc = -errno;
                break;
            }
            p += n;
            len -= (size_t)n;
        }
        break;
    }
    case K_SOCK:
        if (send(c->wfd, buf, len, 0) != (ssize_t)len)
            rc = -errno;
        break;
    case K_MQ:
        if (mq_send(c->mq, buf, len, 0) != 0)
            rc = -errno;
        break;
    default: break;
    }
    if (rc != 0)
        die("send", rc);
}

/* What the receiver does with a message: one load per cache line. */
static unsigned sink;

static void consume(const void *p, size_t len)
{
    const volatile unsigned char *b = p;
    unsigned s = 0;
    for (size_t i = 0; i < len; i += 64)
        s += b[i];
    sink += s;
}

/* Receive one message of `len` bytes (the pipe has no boundaries: read
 * exactly len bytes) and consume it. */
static void chan_recv(struct chan *c, void *buf, size_t len)
{
    int rc = 0;
    size_t got;
    if (c->k == K_ZC || c->k == K_SPSC_ZC) {
        const void *p;
        if ((rc = shmds_queue_recv_ref(c->q, &p, &got, -1)) != 0)
            die("receive in place", rc);
        consume(p, got);
        shmds_queue_release(c->q);
        return;
    }
    switch (c->k) {
    case K_SHMDS:
    case K_SPSC: rc = shmds_queue_recv(c->q, buf, len, &got, -1); break;
    case K_ACK: {
        uint64_t id;
        if ((rc = shmds_queue_recv_lease(c->q, buf, len, &got, &id, -1)) == 0)
            rc = shmds_queue_ack(c->q, id);
        break;
    }
    case K_PIPE: {
        char *p = buf;
        for (got = 0; got < len;) {
            ssize_t n = read(c->rfd, p + got, len - got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                rc = n == 0 ? -EPIPE : -errno;
                break;
            }
            got += (size_t)n;
        }
        break;
    }
    case K_SOCK:
        if (recv(c->rfd, buf, len, 0) != (ssize_t)len)
            rc = -errno;
        break;
    case K_MQ:
        if (mq_receive(c->mq, buf, len, NULL) != (ssize_t)len)
            rc = -errno;
        break;
    default: break;
    }
    if (rc != 0)
        die("receive", rc);
    consume(buf, len);
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof set, &set);
}

static double cpu_s(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + (double)ru->ru_stime.tv_sec +
           ((double)ru->ru_utime.tv_usec + (double)ru->ru_stime.tv_usec) / 1e6;
}

/* Throughput: a child sends n messages of len bytes; we receive them and
 * time first to last. Returns messages per second; *per_cpu (if given):
 * messages per CPU-second of both processes, the whole exchange (a
 * figure the load of other programs on the machine distorts less than
 * wall time; a waiter that spins is charged for it, one that sleeps is
 * not). */
static double throughput(enum kind k, size_t len, long n, double *per_cpu)
{
    struct chan c;
    if (chan_open(&c, k, len, NULL) != 0)
        return 0; /* reported as n/a */
    char *buf = calloc(1, len);
    struct rusage self0, self1, child;
    getrusage(RUSAGE_SELF, &self0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        for (long i = 0; i < n; i++)
            chan_send(&c, buf, len);
        _exit(0);
    }
    chan_recv(&c, buf, len);
    uint64_t t0 = now_ns();
    for (long i = 1; i < n; i++)
        chan_recv(&c, buf, len);
    uint64_t t = now_ns() - t0;
    getrusage(RUSAGE_SELF, &self1);
    if (wait4(pid, NULL, 0, &child) < 0)
        memset(&child, 0, sizeof child);
    if (per_cpu != NULL)
        *per_cpu = (double)n / (cpu_s(&self1) - cpu_s(&self0) + cpu_s(&child));
    chan_close(&c);
    free(buf);
    return (double)(n - 1) / (t / 1e9);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Where latency() runs its two processes: -1 leaves them as they are;
 * else the child (the echoing side) is pinned to CPU child_cpu and the
 * parent to CPU parent_cpu for the measurement. */
static int parent_cpu = -1, child_cpu = -1;

/* n round trips of one 64-byte message, in ns, into rt[] (sorted). */
static void round_trips(enum kind k, long n, uint64_t *rt)
{
    struct chan ab, ba;
    if (chan_open(&ab, k, 64, &ba) != 0 || (k != K_SOCK && chan_open(&ba, k, 64, NULL) != 0))
        die("cannot open a channel for 64-byte messages", EINVAL);
    char buf[64] = {0};
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (child_cpu >= 0)
            pin(child_cpu);
        for (long i = 0; i < n + 100; i++) {
            chan_recv(&ab, buf, 64);
            chan_send(&ba, buf, 64);
        }
        _exit(0);
    }
    cpu_set_t was;
    bool pinned = parent_cpu >= 0 && sched_getaffinity(0, sizeof was, &was) == 0;
    if (pinned)
        pin(parent_cpu);
    for (long i = 0; i < n + 100; i++) {
        uint64_t t0 = now_ns();
        chan_send(&ab, buf, 64);
        chan_recv(&ba, buf, 64);
        if (i >= 100) /* warm-up left out */
            rt[i - 100] = now_ns() - t0;
    }
    waitpid(pid, NULL, 0);
    if (pinned)
        sched_setaffinity(0, sizeof was, &was);
    qsort(rt, (size_t)n, sizeof *rt, cmp_u64);
    chan_close(&ab);
    if (k != K_SOCK)
        chan_close(&ba);
}

/* Round trips of one 64-byte message: median and p99 in microseconds. */
static void latency(enum kind k, long n, double *med, double *p99)
{
    uint64_t *rt = malloc(sizeof *rt * (size_t)n);
    if (rt == NULL)
        die("malloc", ENOMEM);
    round_trips(k, n, rt);
    *med = rt[n / 2] / 1e3;
    *p99 = rt[n * 99 / 100] / 1e3;
    free(rt);
}

/* The round-trip study: a pipe pair and the shmds queues, alternately in
 * one run (ROUNDS rounds of each, so load that comes and goes meets
 * both), in three placements: free, pinned to two different CPUs, both
 * pinned to CPU 0. For each: the median of the rounds' medians, the
 * pooled distribution (p50/p90/p99), and the ratio to the pipe. */
#define ROUNDS 7
static const enum kind rt_kinds[] = {K_PIPE, K_SHMDS, K_SPSC};
#define RT_KINDS (sizeof rt_kinds / sizeof rt_kinds[0])

static double pct(const uint64_t *v, size_t n, double p)
{
    return v[(size_t)(p * (double)(n - 1))] / 1e3;
}

static void rtt_study(int quick)
{
    static const struct {
        const char *name;
        int parent, child;
    } place[] = {{"unpinned", -1, -1}, {"pinned, CPUs 0 and 1", 0, 1}, {"pinned, both CPU 0", 0, 0}};
    long n = quick ? 2000 : 10000;
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    printf("\nround trip of a 64-byte message, %d alternating rounds of %ld (us):\n", ROUNDS, n);
    printf("%-22s %-12s %8s %8s %8s %8s %8s  %s\n", "placement", "transport", "med-of-r",
           "p50", "p90", "p99", "x pipe", "round medians");
    for (size_t pl = 0; pl < sizeof place / sizeof place[0]; pl++) {
        if (place[pl].child >= ncpu)
            continue;
        parent_cpu = place[pl].parent;
        child_cpu = place[pl].child;
        uint64_t *all[RT_KINDS];
        double med[RT_KINDS][ROUNDS];
        for (size_t k = 0; k < RT_KINDS; k++)
            if ((all[k] = malloc(sizeof(uint64_t) * (size_t)(n * ROUNDS))) == NULL)
                die("malloc", ENOMEM);
        for (int r = 0; r < ROUNDS; r++)
            for (size_t j = 0; j < RT_KINDS; j++) {
                size_t k = (j + (size_t)r) % RT_KINDS; /* each goes first in turn */
                uint64_t *rt = all[k] + (size_t)r * (size_t)n;
                round_trips(rt_kinds[k], n, rt);
                med[k][r] = rt[n / 2] / 1e3;
            }
        double pipe_med = 0;
        for (size_t k = 0; k < RT_KINDS; k++) {
            size_t tot = (size_t)(n * ROUNDS);
            qsort(all[k], tot, sizeof(uint64_t), cmp_u64);
            double m[ROUNDS];
            memcpy(m, med[k], sizeof m);
            for (int i = 1; i < ROUNDS; i++) /* insertion sort: seven values */
                for (int j = i; j > 0 && m[j - 1] > m[j]; j--) {
                    double t = m[j];
                    m[j] = m[j - 1];
                    m[j - 1] = t;
                }
            double mm = m[ROUNDS / 2];
            if (k == 0)
                pipe_med = mm;
            printf("%-22s %-12s %8.2f %8.2f %8.2f %8.2f %8.2f  ", place[pl].name,
                   kind_name[rt_kinds[k]], mm, pct(all[k], tot, 0.5), pct(all[k], tot, 0.9),
                   pct(all[k], tot, 0.99), mm / pipe_med);
            for (int r = 0; r < ROUNDS; r++)
                printf("%s%.1f", r ? " " : "", med[k][r]);
            printf("\n");
            free(all[k]);
        }
    }
    parent_cpu = child_cpu = -1;
}

/* Results, filled in a child (so pinning does not stick) and passed back
 * through a pipe. */
struct results {
    double msgs[K_N], cpu[K_N], gbps[K_N], med[K_N], p99[K_N];
};

static void measure(int pinned, int quick, struct results *out)
{
    int fds[2];
    if (pipe(fds) != 0)
        die("pipe", errno);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        struct results r;
        if (pinned)
            pin(0);
        long small = quick ? 100000 : 1000000, big = quick ? 2000 : 16000, rts = quick ? 2000 : 20000;
        for (int k = 0; k < K_N; k++) {
            r.msgs[k] = throughput((enum kind)k, 64, small, &r.cpu[k]);
            r.gbps[k] = throughput((enum kind)k, 65536, big, NULL) * 65536 / 1e9;
            latency((enum kind)k, rts, &r.med[k], &r.p99[k]);
        }
        if (write(fds[1], &r, sizeof r) != (ssize_t)sizeof r)
            _exit(1);
        _exit(0);
    }
    close(fds[1]);
    if (read(fds[0], out, sizeof *out) != (ssize_t)sizeof *out)
        die("measurement child failed", EIO);
    close(fds[0]);
    waitpid(pid, NULL, 0);
}

static void print_table(const char *title, const struct results *r)
{
    printf("\n%s\n", title);
    printf("%-12s %14s %7s %11s %7s %11s %9s %10s\n", "transport", "64 B msgs/s", "x pipe",
           "64 KiB GB/s", "x pipe", "RTT med us", "p99 us", "64 B CPU-s");
    for (int k = 0; k < K_N; k++) {
        printf("%-12s %14.0f %7.2f ", kind_name[k], r->msgs[k], r->msgs[k] / r->msgs[K_PIPE]);
        if (r->gbps[k] > 0)
            printf("%11.2f %7.2f ", r->gbps[k], r->gbps[k] / r->gbps[K_PIPE]);
        else
            printf("%11s %7s ", "n/a", "");
        printf("%11.2f %9.2f %10.2f\n", r->med[k], r->p99[k], r->cpu[k] / r->cpu[K_PIPE]);
    }
}

/* One measure as a data file for the plots (bench/data.h): the unpinned
 * and the pinned run are its two workloads; a transport the system
 * refused (no figure in either run) is left out. */
static void write_measure(const char *name, const char *title, const char *unit,
                          const char *scale, const double *unpinned, const double *pinned,
                          double by)
{
    const char *names[K_N];
    double u[K_N], p[K_N];
    int n = 0;
    for (int k = 0; k < K_N; k++) {
        if (unpinned[k] <= 0 && pinned[k] <= 0)
            continue;
        names[n] = kind_name[k];
        u[n] = unpinned[k] * by;
        p[n++] = pinned[k] * by;
    }
    FILE *d = bench_data_open(name, title, unit, scale, names, n);
    bench_data_row(d, "unpinned", u, n);
    bench_data_row(d, "both on CPU 0", p, n);
    bench_data_close(d);
}

static void write_data(const struct results *u, const struct results *p)
{
    write_measure("queue_msgs", "queue: 64-byte messages, one sender and one receiver process",
                  "million messages per second", "linear", u->msgs, p->msgs, 1e-6);
    write_measure("queue_bytes", "queue: 64 KiB chunks, one sender and one receiver process",
                  "GB per second", "linear", u->gbps, p->gbps, 1);
    write_measure("queue_rtt", "queue: round trip of a 64-byte message, median",
                  "microseconds (lower is better)", "log", u->med, p->med, 1);
}

int main(int argc, char **argv)
{
    int quick = argc > 1 && strcmp(argv[1], "-q") == 0;
    int only_rtt = argc > 1 && strcmp(argv[1], "-l") == 0;
    if (argc > 2 || (argc > 1 && !quick && !only_rtt)) {
        fprintf(stderr, "usage: %s [-q | -l]\n", argv[0]);
        return 2;
    }
    snprintf(region_name, sizeof region_name, "/shmds-bench-%ld", (long)getpid());
    int rc = shmds_region_create(region_name, 64u << 20, NULL, &region);
    if (rc != 0)
        die("shmds_region_create", rc);
    shmds_region_unlink(region_name); /* mapped until we exit, gone after */

    char machine[400];
    bench_machine(machine, sizeof machine);
    printf("queue_bench: %s\n", machine);
    printf("workload: one sender process, one receiver process, blocking calls;\n"
           "%s 64-byte messages, %s 64 KiB chunks, %s round trips; shmds rings 4 MiB\n",
           quick ? "100k" : "1M", quick ? "2000" : "16000", quick ? "2000" : "20000");
    if (only_rtt) {
        rtt_study(0);
        shmds_region_close(region);
        return 0;
    }
    struct results free_run, pinned;
    measure(0, quick, &free_run);
    print_table("unpinned (any CPU):", &free_run);
    measure(1, quick, &pinned);
    print_table("both processes pinned to CPU 0:", &pinned);
    printf("\nn/a: the system refused a POSIX mq with 64 KiB messages "
           "(fs.mqueue.msgsize_max).\n");
    write_data(&free_run, &pinned);
    rtt_study(quick);
    shmds_region_close(region);
    return 0;
}
