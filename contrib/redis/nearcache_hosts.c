/*
 * nearcache_hosts PORT [ROUNDS] — two "hosts" in front of one Redis.
 *
 * Each host is a region with a near-cache (shmds/redis.h) and two worker
 * processes: host A's workers are a writer and a reader, host B's two
 * readers. Every round, both readers of host B keep reading the key
 * "greeting" (hits from their host's shared map, after the first miss)
 * until they see the value of the round; then the writer on host A writes
 * the next value to Redis. Host B learns of the write only from Redis's
 * invalidation message to its listener; its readers report how long the
 * new value took to reach them, and how many of their gets were hits.
 *
 * Run against a redis-server on 127.0.0.1:PORT (its data is overwritten:
 * use a throwaway server). Exits 0 when every round reached every reader.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <shmds/redis.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int open_host(const char *region, int port, shmds_region **r, shmds_redis **h)
{
    shmds_redis_opts o = {.port = port, .timeout_ms = 500};
    int rc = shmds_region_open(region, 0, r);
    if (rc == 0)
        rc = shmds_redis_open(*r, "cache", &o, h);
    if (rc == 0)
        rc = shmds_redis_wait_listener(*h, 5000);
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", region, shmds_strerror(rc));
    return rc;
}

/* Host B: read until each round's value shows up, tell the parent. */
static int reader(const char *region, int port, int id, int rounds, int done_fd)
{
    shmds_region *r;
    shmds_redis *h;
    if (open_host(region, port, &r, &h) != 0)
        return 1;
    int status = 0;
    for (int round = 0; round < rounds && status == 0; round++) {
        char want[32], buf[32];
        snprintf(want, sizeof want, "hello #%d from host A", round);
        double t0 = now_ms();
        for (;;) {
            size_t len = 0;
            int rc = shmds_redis_get(h, "greeting", 8, buf, sizeof buf - 1, &len, 0);
            if (rc == 0 && len == strlen(want) && memcmp(buf, want, len) == 0)
                break;
            if (rc != 0 && rc != -ENOENT) {
                fprintf(stderr, "host B reader %d: %s\n", id, shmds_strerror(rc));
                status = 1;
                break;
            }
            if (now_ms() - t0 > 10000) {
                fprintf(stderr, "host B reader %d: round %d never arrived\n", id, round);
                status = 1;
                break;
            }
        }
        shmds_redis_stats s;
        shmds_redis_stats_get(h, &s);
        printf("host B reader %d: '%s' after %.2f ms (so far %llu hits, %llu Redis GETs)\n", id,
               want, now_ms() - t0, (unsigned long long)s.hits, (unsigned long long)s.redis_gets);
        fflush(stdout);
        if (write(done_fd, "d", 1) != 1)
            status = 1;
    }
    shmds_redis_close(h);
    shmds_region_close(r);
    return status;
}

/* Host A: write the next value each time the parent says so. */
static int writer(const char *region, int port, int rounds, int go_fd)
{
    shmds_region *r;
    shmds_redis *h;
    if (open_host(region, port, &r, &h) != 0)
        return 1;
    int status = 0;
    for (int round = 0; round < rounds && status == 0; round++) {
        char c, val[32];
        if (read(go_fd, &c, 1) != 1)
            break;
        snprintf(val, sizeof val, "hello #%d from host A", round);
        int rc = shmds_redis_set(h, "greeting", 8, val, strlen(val), 0);
        if (rc != 0) {
            fprintf(stderr, "host A writer: %s\n", shmds_strerror(rc));
            status = 1;
        }
        /* Its own host sees the write at once. */
        char buf[32];
        size_t len = 0;
        rc = shmds_redis_get(h, "greeting", 8, buf, sizeof buf, &len, 0);
        if (rc != 0 || len != strlen(val) || memcmp(buf, val, len) != 0) {
            fprintf(stderr, "host A writer: read back %s\n", shmds_strerror(rc));
            status = 1;
        }
    }
    shmds_redis_close(h);
    shmds_region_close(r);
    return status;
}

static int make_host(const char *region)
{
    shmds_region *r;
    shmds_region_unlink(region);
    int rc = shmds_region_create(region, 4u << 20, NULL, &r);
    if (rc == 0) {
        shmds_map_opts mo = {.capacity = 1024, .mem_limit = 1u << 20, .flags = SHMDS_MAP_EVICT};
        rc = shmds_redis_create(r, "cache", &mo);
        shmds_region_close(r);
    }
    if (rc != 0)
        fprintf(stderr, "%s: %s\n", region, shmds_strerror(rc));
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: nearcache_hosts PORT [ROUNDS]\n");
        return 2;
    }
    int port = atoi(argv[1]);
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    if (port <= 0 || port > 65535 || rounds <= 0)
        return 2;
    char host_a[64], host_b[64];
    snprintf(host_a, sizeof host_a, "/shmds-nc-hostA-%ld", (long)getpid());
    snprintf(host_b, sizeof host_b, "/shmds-nc-hostB-%ld", (long)getpid());
    if (make_host(host_a) != 0 || make_host(host_b) != 0)
        return 1;

    int go[2], done[2];
    if (pipe(go) != 0 || pipe(done) != 0)
        return 1;
    pid_t pids[3];
    for (int i = 0; i < 3; i++) {
        pids[i] = fork();
        if (pids[i] < 0)
            return 1;
        if (pids[i] == 0) {
            close(go[1]);
            close(done[0]);
            _exit(i == 0 ? writer(host_a, port, rounds, go[0])
                         : reader(host_b, port, i, rounds, done[1]));
        }
    }
    close(go[0]);
    close(done[1]);
    /* Round 0 is written first; each later one once both readers saw the
     * previous value (so they hold it in host B's map when it changes). */
    int status = 0;
    for (int round = 0; round < rounds && status == 0; round++) {
        if (write(go[1], "g", 1) != 1)
            status = 1;
        for (int k = 0; k < 2 && status == 0; k++) {
            char c;
            if (read(done[0], &c, 1) != 1)
                status = 1;
        }
    }
    close(go[1]);
    for (int i = 0; i < 3; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            status = 1;
    }
    shmds_region_unlink(host_a);
    shmds_region_unlink(host_b);
    printf(status == 0 ? "every write on host A reached host B\n" : "FAILED\n");
    return status;
}
