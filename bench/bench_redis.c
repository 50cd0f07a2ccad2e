/*
 * bench_redis — libshmds-redis against the Redis it sits in front of, in
 * one run, on a redis-server this program starts (127.0.0.1, a free port,
 * no persistence; needs redis-server installed).
 *
 *  1. Latency: a near-cache hit vs a GET from Redis over loopback (same
 *     process, one connection, the same key and value).
 *  2. Eight worker processes on a Zipf(0.99) key set: Redis GETs per
 *     application get with one near-cache shared by the eight, vs one
 *     near-cache per process with an eighth of the memory each (the same
 *     total). Counted by Redis itself (INFO commandstats) over the measured
 *     phase, after a warm-up phase.
 *  3. Invalidation delay: another client SETs a key the host holds; time
 *     from just before the SET is sent until the key is gone from the
 *     host's map (the SET's own round trip included), as a distribution.
 *
 * Options: -k KEYS (100000) -r GETS per worker and phase (20000)
 *          -m MEMORY in KiB shared by all (2048) -i invalidations (1000)
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>
#include <shmds/redis.h>

#include "redis_server.h"

#define WORKERS 8
#define VAL_LEN 64

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_redis: %s: %s\n", what, rc ? shmds_strerror(rc) : "failed");
    exit(1);
}

static redisContext *conn(int port)
{
    struct timeval tv = {.tv_sec = 5, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL || c->err)
        die("connect", 0);
    redisSetTimeout(c, tv);
    return c;
}

static void key_of(char *buf, size_t cap, long i)
{
    snprintf(buf, cap, "key:%07ld", i);
}

/* Load KEYS keys of VAL_LEN bytes, pipelined. */
static void load(int port, long keys)
{
    redisContext *c = conn(port);
    char val[VAL_LEN + 1];
    memset(val, 'v', VAL_LEN);
    val[VAL_LEN] = 0;
    for (long i = 0; i < keys; i++) {
        char k[32];
        key_of(k, sizeof k, i);
        redisAppendCommand(c, "SET %s %s", k, val);
        if (i % 1000 == 999 || i == keys - 1) {
            long n = i % 1000 + 1;
            for (long j = 0; j < n; j++) {
                void *rep;
                if (redisGetReply(c, &rep) != REDIS_OK)
                    die("load", 0);
                freeReplyObject(rep);
            }
        }
    }
    redisFree(c);
}

static shmds_region *make_host(const char *name, uint64_t mem, long keys)
{
    shmds_region *r;
    shmds_region_unlink(name);
    /* The budget bounds the entries; tables and the control block beside. */
    int rc = shmds_region_create(name, (size_t)(mem + (uint64_t)keys * 48 + (4u << 20)), NULL, &r);
    if (rc != 0)
        die("region", rc);
    shmds_map_opts mo = {.capacity = mem / 144 + 1, .mem_limit = mem, .flags = SHMDS_MAP_EVICT};
    rc = shmds_redis_create(r, "nc", &mo);
    if (rc != 0)
        die("near-cache", rc);
    return r;
}

/* A handle whose host has a listener up. */
static shmds_redis *open_listening(shmds_region *r, int port)
{
    shmds_redis_opts o = {.port = port, .timeout_ms = 1000};
    shmds_redis *h;
    int rc = shmds_redis_open(r, "nc", &o, &h);
    if (rc == 0)
        rc = shmds_redis_wait_listener(h, 5000);
    if (rc != 0)
        die("open", rc);
    return h;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- 1. hit vs GET ---- */

static void latency(int port)
{
    const char *name = "/shmds-bench-redis-lat";
    shmds_region *r = make_host(name, 1u << 20, 16);
    shmds_redis *h = open_listening(r, port);
    redisContext *c = conn(port);
    char buf[VAL_LEN + 16];
    size_t len;
    if (shmds_redis_get(h, "key:0000000", 11, buf, sizeof buf, &len, 0) != 0)
        die("get", 0);
    const long hits = 1000000, gets = 20000;
    double t0 = now_ns();
    for (long i = 0; i < hits; i++)
        if (shmds_redis_get(h, "key:0000000", 11, buf, sizeof buf, &len, 0) != 0)
            die("hit", 0);
    double hit_ns = (now_ns() - t0) / (double)hits;
    t0 = now_ns();
    for (long i = 0; i < gets; i++) {
        redisReply *rep = redisCommand(c, "GET key:0000000");
        if (rep == NULL || rep->type != REDIS_REPLY_STRING)
            die("GET", 0);
        memcpy(buf, rep->str, rep->len);
        freeReplyObject(rep);
    }
    double get_ns = (now_ns() - t0) / (double)gets;
    shmds_redis_stats s;
    shmds_redis_stats_get(h, &s);
    printf("\n1. One get of a %d-byte value, one process\n", VAL_LEN);
    printf("| path | ns per get | gets/s | ratio |\n|---|---:|---:|---:|\n");
    printf("| near-cache hit (shmds_redis_get) | %.0f | %.0f | %.1fx faster |\n", hit_ns,
           1e9 / hit_ns, get_ns / hit_ns);
    printf("| Redis GET over loopback (hiredis) | %.0f | %.0f | 1 |\n", get_ns, 1e9 / get_ns);
    printf("(hits counted by the handle: %llu of %ld)\n", (unsigned long long)s.hits, hits);
    redisFree(c);
    shmds_redis_close(h);
    shmds_region_close(r);
    shmds_region_unlink(name);
}

/* ---- 2. eight workers, shared vs per process ---- */

static double *zipf_cdf(long keys, double s)
{
    double *cdf = malloc(sizeof(double) * (size_t)keys);
    double sum = 0;
    for (long i = 0; i < keys; i++)
        sum += 1.0 / pow((double)(i + 1), s);
    double acc = 0;
    for (long i = 0; i < keys; i++) {
        acc += 1.0 / pow((double)(i + 1), s) / sum;
        cdf[i] = acc;
    }
    return cdf;
}

static long zipf_pick(const double *cdf, long keys, unsigned *seed)
{
    double u = (double)rand_r(seed) / ((double)RAND_MAX + 1.0);
    long lo = 0, hi = keys - 1;
    while (lo < hi) {
        long mid = (lo + hi) / 2;
        if (cdf[mid] < u)
            lo = mid + 1;
        else
            hi = mid;
    }
    /* Spread the popular keys over the key space (hash order). */
    return (long)(((uint64_t)lo * UINT64_C(2654435761)) % (uint64_t)keys);
}

struct wk {
    const char *region;
    int port;
    long keys, gets;
    const double *cdf;
    int ready_fd, go_fd;
};

static int worker(const struct wk *w, int id)
{
    shmds_region *r;
    shmds_redis *h;
    shmds_redis_opts o = {.port = w->port, .timeout_ms = 2000};
    if (shmds_region_open(w->region, 0, &r) != 0 || shmds_redis_open(r, "nc", &o, &h) != 0 ||
        shmds_redis_wait_listener(h, 10000) != 0)
        return 1;
    unsigned seed = 12345u + (unsigned)id * 7919u;
    char buf[VAL_LEN + 16], k[32];
    size_t len;
    for (int phase = 0; phase < 2; phase++) {
        char c;
        if (write(w->ready_fd, "r", 1) != 1 || read(w->go_fd, &c, 1) != 1)
            return 1;
        for (long i = 0; i < w->gets; i++) {
            key_of(k, sizeof k, zipf_pick(w->cdf, w->keys, &seed));
            if (shmds_redis_get(h, k, strlen(k), buf, sizeof buf, &len, 0) != 0)
                return 2;
        }
    }
    shmds_redis_close(h);
    shmds_region_close(r);
    return 0;
}

/* Run the eight workers; @p shared: one region for all, else one each.
 * Returns the Redis GETs of the measured phase; *secs its wall time. */
static long long run_workers(const rs_server *srv, int shared, uint64_t mem, long keys,
                             long gets, const double *cdf, double *secs)
{
    char names[WORKERS][64];
    shmds_region *regions[WORKERS];
    int nreg = shared ? 1 : WORKERS;
    for (int i = 0; i < nreg; i++) {
        snprintf(names[i], sizeof names[i], "/shmds-bench-redis-%d-%ld", i, (long)getpid());
        regions[i] = make_host(names[i], shared ? mem : mem / WORKERS, keys);
    }
    int ready[2], go[2];
    if (pipe(ready) != 0 || pipe(go) != 0)
        die("pipe", 0);
    pid_t pids[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        struct wk w = {names[shared ? 0 : i], srv->port, keys, gets, cdf, ready[1], go[0]};
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(worker(&w, i));
    }
    long long calls = 0;
    double t0 = 0;
    for (int phase = 0; phase < 2; phase++) {
        char c;
        for (int i = 0; i < WORKERS; i++)
            if (read(ready[0], &c, 1) != 1)
                die("worker", 0);
        if (phase == 1) {
            calls = rs_calls(srv, "get"); /* the warm-up's GETs */
            t0 = now_ns();
        }
        for (int i = 0; i < WORKERS; i++)
            if (write(go[1], "g", 1) != 1)
                die("worker", 0);
    }
    for (int i = 0; i < WORKERS; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die("worker failed", 0);
    }
    *secs = (now_ns() - t0) / 1e9;
    calls = rs_calls(srv, "get") - calls;
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
    for (int i = 0; i < nreg; i++) {
        shmds_region_close(regions[i]);
        shmds_region_unlink(names[i]);
    }
    return calls;
}

static void workers(const rs_server *srv, long keys, long gets, uint64_t mem)
{
    double *cdf = zipf_cdf(keys, 0.99);
    double ts, tp;
    long long shared = run_workers(srv, 1, mem, keys, gets, cdf, &ts);
    long long per = run_workers(srv, 0, mem, keys, gets, cdf, &tp);
    double total = (double)gets * WORKERS;
    printf("\n2. %d worker processes, %ld keys of %d bytes, Zipf(0.99), %.0f KiB of near-cache "
           "budget in all; %ld gets per worker measured after as many to warm up\n",
           WORKERS, keys, VAL_LEN, (double)mem / 1024, gets);
    printf("| near-cache | Redis GETs | GETs per application get | application gets/s |\n");
    printf("|---|---:|---:|---:|\n");
    printf("| one shared by the %d (shmds) | %lld | %.4f | %.0f |\n", WORKERS, shared,
           (double)shared / total, total / ts);
    printf("| one per process, 1/%d of the memory each | %lld | %.4f | %.0f |\n", WORKERS, per,
           (double)per / total, total / tp);
    printf("(per process / shared: %.2fx the Redis GETs)\n",
           shared ? (double)per / (double)shared : 0.0);
    free(cdf);
}

/* ---- 3. invalidation delay ---- */

static void invalidation(int port, int n)
{
    const char *name = "/shmds-bench-redis-inv";
    shmds_region *r = make_host(name, 1u << 20, 16);
    shmds_redis *h = open_listening(r, port);
    shmds_map *m = shmds_redis_map(h);
    redisContext *c = conn(port);
    double *d = malloc(sizeof(double) * (size_t)n);
    double *rtt = malloc(sizeof(double) * (size_t)n);
    char buf[64];
    size_t len;
    redisReply *first = redisCommand(c, "SET inv start");
    if (first == NULL)
        die("SET", 0);
    freeReplyObject(first);
    for (int i = 0; i < n; i++) {
        /* Cached on the host (the second get is a hit). */
        for (int k = 0; k < 2; k++)
            if (shmds_redis_get(h, "inv", 3, buf, sizeof buf, &len, 0) != 0)
                die("get", 0);
        if (shmds_map_get(m, "inv", 3, buf, sizeof buf, &len) != 0)
            die("not cached", 0);
        double t0 = now_ns();
        redisReply *rep = redisCommand(c, "SET inv %d", i);
        double t1 = now_ns();
        if (rep == NULL)
            die("SET", 0);
        freeReplyObject(rep);
        while (shmds_map_get(m, "inv", 3, buf, sizeof buf, &len) == 0) {
            if (now_ns() - t0 > 5e9)
                die("invalidation never came", 0);
        }
        d[i] = (now_ns() - t0) / 1e6;
        rtt[i] = (t1 - t0) / 1e6;
    }
    qsort(d, (size_t)n, sizeof *d, cmp_d);
    qsort(rtt, (size_t)n, sizeof *rtt, cmp_d);
#define PCT(a, p) (a)[(size_t)((double)(n - 1) * (p))]
    printf("\n3. Invalidation delay: SET by another client -> key gone from the host's map "
           "(%d writes; the SET's round trip included)\n", n);
    printf("| ms | min | p50 | p90 | p99 | p99.9 | max |\n|---|---:|---:|---:|---:|---:|---:|\n");
    printf("| invalidation delay | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", d[0],
           PCT(d, .5), PCT(d, .9), PCT(d, .99), PCT(d, .999), d[n - 1]);
    printf("| SET round trip alone | %.3f | %.3f | %.3f | %.3f | %.3f | %.3f |\n", rtt[0],
           PCT(rtt, .5), PCT(rtt, .9), PCT(rtt, .99), PCT(rtt, .999), rtt[n - 1]);
    free(d);
    free(rtt);
    redisFree(c);
    shmds_redis_close(h);
    shmds_region_close(r);
    shmds_region_unlink(name);
}

static void machine(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256], model[256] = "unknown CPU";
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            snprintf(model, sizeof model, "%s", p ? p + 2 : line);
            model[strcspn(model, "\n")] = 0;
            break;
        }
    if (f)
        fclose(f);
    printf("machine: %s, %ld CPUs online\n", model, sysconf(_SC_NPROCESSORS_ONLN));
}

int main(int argc, char **argv)
{
    long keys = 100000, gets = 20000, mem_kib = 2048;
    int inval = 1000, opt;
    while ((opt = getopt(argc, argv, "k:r:m:i:")) != -1) {
        switch (opt) {
        case 'k': keys = atol(optarg); break;
        case 'r': gets = atol(optarg); break;
        case 'm': mem_kib = atol(optarg); break;
        case 'i': inval = atoi(optarg); break;
        default:
            fprintf(stderr, "usage: bench_redis [-k keys] [-r gets] [-m KiB] [-i writes]\n");
            return 2;
        }
    }
    if (keys < 1 || gets < 1 || mem_kib < 64 || inval < 1)
        return 2;
    if (rs_binary() == NULL) {
        printf("bench_redis: no redis-server installed: skipped\n");
        return 0;
    }
    rs_server srv = {0};
    if (rs_start(&srv) != 0)
        die("redis-server did not start", 0);
    machine();
    char ver[64] = "?";
    {
        redisContext *c = conn(srv.port);
        redisReply *rep = redisCommand(c, "INFO server");
        const char *p = rep && rep->type == REDIS_REPLY_STRING ? strstr(rep->str, "redis_version:") : NULL;
        if (p)
            sscanf(p, "redis_version:%63s", ver);
        if (rep)
            freeReplyObject(rep);
        redisFree(c);
    }
    printf("redis-server %s on 127.0.0.1:%d (started by this run)\n", ver, srv.port);
    load(srv.port, keys);
    latency(srv.port);
    workers(&srv, keys, gets, (uint64_t)mem_kib * 1024);
    invalidation(srv.port, inval);
    rs_destroy(&srv);
    return 0;
}
