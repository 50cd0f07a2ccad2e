/*
 * lookup TABLE.tsv NWORKERS SECONDS [KEY...] — a lookup table served by
 * many processes and reloaded while they serve.
 *
 * The loader reads "key<TAB>value" lines into a shmds table and publishes
 * it (version 1). NWORKERS worker processes attach the region READ-ONLY
 * and answer lookups of the file's keys as fast as they can: under a read
 * guard, zero-copy, with no lock. Meanwhile the reloader (this process)
 * reads the file again once a second and publishes it as the next version:
 * one store, so a worker sees the old table or the new one, never a mix,
 * and never waits. After SECONDS versions the workers stop and say how many
 * lookups they answered, how many failed (a key of the file not found: must
 * be 0) and which versions they saw. Then each KEY is looked up and printed
 * as "KEY<TAB>VALUE (version N)" or "KEY<TAB>not found".
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <shmds.h>

#define TABLE "table"

/* The file's keys, read before the workers fork (they inherit them). */
static char **keys;
static size_t nkeys;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Read the file into a new version of the table and publish it. With
 * `remember`, keep the keys for the workers. */
static int load(shmds_region *r, const char *path, int remember, uint64_t *version, long *rows)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    shmds_table_builder *b = NULL;
    int rc = shmds_table_build(r, TABLE, nkeys, &b);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    *rows = 0;
    while (rc == 0 && (got = getline(&line, &cap, f)) > 0) {
        char *tab = strchr(line, '\t');
        if (tab == NULL || tab == line)
            continue;
        size_t vl = strcspn(tab + 1, "\r\n");
        rc = shmds_table_add(b, line, (size_t)(tab - line), tab + 1, vl);
        if (rc == 0 && remember) {
            char **nk = realloc(keys, (nkeys + 1) * sizeof *keys);
            if (nk == NULL || (nk[nkeys] = strndup(line, (size_t)(tab - line))) == NULL) {
                keys = nk != NULL ? nk : keys;
                rc = -ENOMEM;
            } else {
                keys = nk;
                nkeys++;
            }
        }
        (*rows)++;
    }
    free(line);
    fclose(f);
    if (rc == 0)
        rc = shmds_table_publish(b, version);
    else if (b != NULL)
        shmds_table_abort(b);
    if (rc != 0) {
        fprintf(stderr, "lookup: loading %s: %s\n", path, shmds_strerror(rc));
        return -1;
    }
    return 0;
}

static volatile sig_atomic_t stop;

static void on_term(int sig)
{
    (void)sig;
    stop = 1;
}

/* A worker: random keys of the file, 64 lookups per guard, until told to
 * stop. Prints its figures; exit 0 when no lookup failed. */
static int worker(const char *rname, int id)
{
    shmds_region *r;
    shmds_table *t;
    int rc = shmds_region_open(rname, SHMDS_RDONLY, &r);
    if (rc == 0 && (rc = shmds_table_open(r, TABLE, &t)) != 0)
        shmds_region_close(r);
    if (rc != 0) {
        fprintf(stderr, "worker %d: %s\n", id, shmds_strerror(rc));
        return 1;
    }
    uint64_t lookups = 0, failed = 0, bytes = 0, vmin = UINT64_MAX, vmax = 0;
    unsigned s = 2463534242u + (unsigned)id * 7919u;
    while (!stop) {
        shmds_guard *g;
        if ((rc = shmds_guard_enter(r, &g)) != 0) {
            fprintf(stderr, "worker %d: guard: %s\n", id, shmds_strerror(rc));
            failed++;
            break;
        }
        for (int i = 0; i < 64; i++) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            const char *k = keys[s % nkeys];
            const void *v;
            size_t vl;
            uint64_t ver;
            rc = shmds_table_get_ref(t, g, k, strlen(k), &v, &vl, &ver);
            lookups++;
            if (rc != 0) {
                failed++;
                continue;
            }
            bytes += vl; /* v stays valid until the guard is left */
            vmin = ver < vmin ? ver : vmin;
            vmax = ver > vmax ? ver : vmax;
        }
        shmds_guard_leave(g);
    }
    printf("worker %d: %llu lookups, %llu failed, versions %llu..%llu\n", id,
           (unsigned long long)lookups, (unsigned long long)failed,
           (unsigned long long)(vmin == UINT64_MAX ? 0 : vmin), (unsigned long long)vmax);
    fflush(stdout);
    shmds_table_close(t);
    shmds_region_close(r);
    return failed == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    int n = argc >= 4 ? atoi(argv[2]) : 0, secs = argc >= 4 ? atoi(argv[3]) : 0;
    if (argc < 4 || n < 1 || n > 64 || secs < 1 || secs > 3600) {
        fprintf(stderr, "usage: %s TABLE.tsv NWORKERS(1..64) SECONDS(1..3600) [KEY...]\n",
                argv[0]);
        return 2;
    }
    struct stat st;
    if (stat(argv[1], &st) != 0) {
        perror(argv[1]);
        return 1;
    }
    char rname[64];
    snprintf(rname, sizeof rname, "/shmds-lookup-%ld", (long)getpid());
    /* Room for two versions (the one served and the next) and then some;
     * the region grows if the file does. */
    shmds_region *r;
    int rc = shmds_region_create(rname, (size_t)st.st_size * 6 + (1u << 20), NULL, &r);
    if (rc != 0) {
        fprintf(stderr, "lookup: %s\n", shmds_strerror(rc));
        return 1;
    }
    uint64_t version;
    long rows;
    if (load(r, argv[1], 1, &version, &rows) != 0 || nkeys == 0) {
        if (nkeys == 0)
            fprintf(stderr, "lookup: %s has no key<TAB>value line\n", argv[1]);
        shmds_region_close(r);
        shmds_region_unlink(rname);
        return 1;
    }
    printf("loaded %ld rows as version %llu\n", rows, (unsigned long long)version);
    fflush(stdout);

    struct sigaction sa = {0};
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    pid_t pids[64];
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(worker(rname, i));
    }
    /* The reloader: a new version a second, SECONDS versions in all. */
    int bad = 0;
    for (int i = 1; i < secs && !bad; i++) {
        struct timespec one = {1, 0};
        nanosleep(&one, NULL);
        double t0 = now_s();
        bad = load(r, argv[1], 0, &version, &rows) != 0;
        if (!bad)
            printf("reloaded %ld rows as version %llu in %.1f ms\n", rows,
                   (unsigned long long)version, (now_s() - t0) * 1e3);
        fflush(stdout);
    }
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGTERM);
    for (int i = 0; i < n; i++) {
        int ws;
        waitpid(pids[i], &ws, 0);
        bad |= !(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
    }
    shmds_table *t;
    if ((rc = shmds_table_open(r, TABLE, &t)) == 0) {
        for (int i = 4; i < argc; i++) {
            char val[4096];
            size_t vl;
            rc = shmds_table_get(t, argv[i], strlen(argv[i]), val, sizeof val, &vl);
            if (rc == 0)
                printf("%s\t%.*s (version %llu)\n", argv[i], (int)vl, val,
                       (unsigned long long)version);
            else if (rc == -ENOENT)
                printf("%s\tnot found\n", argv[i]);
            else
                printf("%s\terror %s\n", argv[i], shmds_errname(rc));
        }
        shmds_table_close(t);
    }
    printf("%s\n", bad ? "some lookups failed" : "no lookup failed");
    shmds_region_close(r);
    shmds_region_unlink(rname);
    for (size_t i = 0; i < nkeys; i++)
        free(keys[i]);
    free(keys);
    return bad;
}
