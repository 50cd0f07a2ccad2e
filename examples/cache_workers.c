/*
 * cache_workers [-k] NWORKERS REQUESTS — a pre-fork pool sharing one cache.
 *
 * The parent makes a region holding a map with a memory budget (large
 * enough for every key) and CLOCK eviction, then forks NWORKERS workers.
 * Each serves REQUESTS requests for keys drawn from a skewed distribution
 * (a few keys are popular, as in real traffic). A request is one
 * single-flight fetch: a hit returns the cached value; on a miss exactly
 * one worker, across all processes, is told to compute the value
 * (SHMDS_FILL) while the workers that ask for the same key meanwhile wait
 * for its result instead of computing it too. Each stored computation is
 * counted per key (a second map of counters), and the parent prints how
 * many times keys were computed: once each, kills or not.
 *
 * With -k the parent SIGKILLs worker 1 half way through its run, at whatever
 * instruction it is on, possibly inside a cache update or while it computes
 * a value others wait for. The other workers carry on (the next one to lock
 * the stripe repairs it; a waiter takes the dead worker's fill over) and
 * the parent checks the region at the end.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmds.h>

#define KEYS 2000

/* The "slow computation" the cache saves: a few thousand rounds of mixing. */
static uint64_t slow_compute(uint64_t key)
{
    uint64_t x = key + 1;
    for (int i = 0; i < 20000; i++)
        x = (x ^ (x >> 31)) * UINT64_C(0x9e3779b97f4a7c15) + (uint64_t)i;
    return x;
}

/* A skewed key: the square of a uniform draw favours small numbers. */
static uint64_t pick_key(unsigned *seed)
{
    double u = (double)rand_r(seed) / ((double)RAND_MAX + 1.0);
    return (uint64_t)(u * u * KEYS);
}

static int worker(const char *rname, int id, long requests, int progress_fd)
{
    shmds_region *r;
    shmds_map *m;
    shmds_map *computed;
    int rc = shmds_region_open(rname, 0, &r);
    if (rc == 0)
        rc = shmds_map_open(r, "cache", &m);
    if (rc == 0)
        rc = shmds_map_open(r, "computed", &computed);
    if (rc != 0) {
        fprintf(stderr, "worker %d: open: %s\n", id, shmds_strerror(rc));
        return 1;
    }
    unsigned seed = (unsigned)id * 7919u + 1;
    long hits = 0;
    for (long i = 0; i < requests; i++) {
        char key[32];
        uint64_t k = pick_key(&seed), v, want;
        snprintf(key, sizeof key, "result:%" PRIu64, k);
        shmds_fill *fill;
        rc = shmds_map_fetch(m, key, strlen(key), &v, sizeof v, NULL, NULL, 0, 10000, &fill);
        if (rc == 0) {
            hits++;
        } else if (rc == SHMDS_FILL) {
            /* Ours to compute; whoever waits for the key gets it from us. */
            v = slow_compute(k);
            rc = shmds_map_fill_done(fill, &v, sizeof v, NULL, NULL);
            if (rc >= 0)
                rc = shmds_map_add(computed, key, strlen(key), 1, NULL);
            if (rc < 0) {
                fprintf(stderr, "worker %d: fill: %s\n", id, shmds_strerror(rc));
                return 1;
            }
        } else {
            fprintf(stderr, "worker %d: fetch: %s\n", id, shmds_strerror(rc));
            return 1;
        }
        if (i % 64 == 0 && (want = slow_compute(k)) != v) {
            fprintf(stderr, "worker %d: wrong cached value for %s\n", id, key);
            return 1;
        }
        if (progress_fd >= 0 && i == requests / 2) {
            char c = 'h';
            (void)!write(progress_fd, &c, 1);
        }
    }
    printf("worker %d: %ld requests, %ld hits (%.1f%%)\n", id, requests, hits,
           100.0 * (double)hits / (double)requests);
    fflush(stdout); /* the worker leaves with _exit */
    shmds_map_close(computed);
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

/* How many keys were computed how many times. */
struct tally {
    uint64_t keys, computations, by_times[4]; /* 1, 2, 3, more */
};

static int tally_key(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    struct tally *t = arg;
    int64_t n;
    (void)k;
    (void)kl;
    if (vl != sizeof n)
        return -EINVAL;
    memcpy(&n, v, sizeof n);
    t->keys++;
    t->computations += (uint64_t)n;
    t->by_times[n >= 4 ? 3 : n - 1]++;
    return 0;
}

int main(int argc, char **argv)
{
    int kill_one = argc > 1 && strcmp(argv[1], "-k") == 0;
    if (argc != 3 + kill_one) {
        fprintf(stderr, "usage: %s [-k] NWORKERS REQUESTS\n"
                        "  Pre-forked workers share one cache; -k kills worker 1 mid-run.\n",
                argv[0]);
        return 2;
    }
    int n = atoi(argv[1 + kill_one]);
    long requests = atol(argv[2 + kill_one]);
    if (n < 1 || n > 64 || requests < 1 || (kill_one && n < 2)) {
        fprintf(stderr, "%s: NWORKERS must be 1..64 (2.. with -k), REQUESTS positive\n",
                argv[0]);
        return 2;
    }
    char rname[64];
    snprintf(rname, sizeof rname, "/shmds-cache-%ld", (long)getpid());
    shmds_region *r;
    shmds_map *m, *computed;
    /* The budget holds every key (an entry here takes 96 bytes), so each
     * key is computed once; a smaller one would evict and compute again. */
    shmds_map_opts o = {.capacity = KEYS, .mem_limit = KEYS * 96, .flags = SHMDS_MAP_EVICT};
    shmds_map_opts co = {.capacity = KEYS};
    int rc = shmds_region_create(rname, 4u << 20, NULL, &r);
    if (rc == 0 && ((rc = shmds_map_create(r, "cache", &o, &m)) != 0 ||
                    (rc = shmds_map_create(r, "computed", &co, &computed)) != 0))
        shmds_region_unlink(rname);
    if (rc != 0) {
        fprintf(stderr, "%s: %s\n", argv[0], shmds_strerror(rc));
        return 1;
    }
    int pfd[2];
    if (pipe(pfd) != 0)
        return 1;
    pid_t pids[64];
    fflush(stdout);
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(worker(rname, i, requests, kill_one && i == 1 ? pfd[1] : -1));
    }
    int bad = 0;
    if (kill_one) {
        char c;
        if (read(pfd[0], &c, 1) == 1) {
            kill(pids[1], SIGKILL);
            printf("worker 1: killed half way\n");
        }
    }
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        if (!(kill_one && i == 1) && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
            bad = 1;
    }
    shmds_map_stats s;
    shmds_map_stats_get(m, &s);
    printf("total: %" PRIu64 " hits, %" PRIu64 " misses, hit rate %.1f%%, %" PRIu64
           " entries, %" PRIu64 " evictions, %" PRIu64 " recoveries\n",
           s.hits, s.misses, 100.0 * (double)s.hits / (double)(s.hits + s.misses + !s.hits),
           s.entries, s.evictions, s.recoveries);
    struct tally t = {0};
    rc = shmds_map_foreach(computed, tally_key, &t);
    if (rc == 0)
        printf("computed: %" PRIu64 " computations for %" PRIu64 " keys; keys computed once %" PRIu64
               ", twice %" PRIu64 ", 3 times %" PRIu64 ", more %" PRIu64
               "; fills taken over from a dead worker %" PRIu64 "\n",
               t.computations, t.keys, t.by_times[0], t.by_times[1], t.by_times[2], t.by_times[3],
               s.takeovers);
    if (rc == 0)
        rc = shmds_region_check(r);
    printf("region check: %s\n", rc == 0 ? "ok" : shmds_strerror(rc));
    shmds_map_close(computed);
    shmds_map_close(m);
    shmds_region_close(r);
    shmds_region_unlink(rname);
    return bad || rc != 0;
}
