/*
 * bench_table [INDEX.tsv [--latency-only | --1m-only]] — a published shmds
 * table against what a pool of workers would use instead, in one run
 * (--1m-only: the 1 M-key lookups alone; INDEX.tsv may then be "-").
 *
 * Data sets: the TSV given (key<TAB>value lines: `make bench` passes the
 * Debian package index of the machine's apt lists when it can read it;
 * otherwise a synthetic index of the same shape, 63 440 package names of 3
 * to 31 bytes with 20 to 108 byte values (17 and 64 on average, as
 * Debian 12's), is made), and 1 000 000
 * synthetic keys of 20 bytes with 16 to 48 byte values.
 *
 * Designs, each with 8 worker processes doing random lookups (90% hits):
 *  - shmds table: published in a region; each worker attaches and opens it
 *    itself. "get_ref" reads zero-copy under a guard entered once per 64
 *    lookups; "get" copies the value out (a guard per lookup, inside).
 *  - shmds map: the same pairs put into a shmds map (shmds/map.h) in the
 *    same region, read the same two ways by read-only attaches: the
 *    general-purpose structure in the lookup-table role (issue 11).
 *  - private: each worker loads its own hash table from the data after the
 *    fork (open addressing, the full hash stored beside key and value
 *    pointers, keys and values malloc'd one by one: what a C program that
 *    loads a TSV usually does, with a good word-at-a-time hash).
 *  - before fork: the same table built once by the parent, inherited by the
 *    workers (copy-on-write pages: shared until written).
 * Figures: lookups per CPU-second of the workers (the machine is shared:
 * wall time is shown but CPU time is the fair measure), ratios against
 * shmds get_ref, and memory: the sum of PSS over the parent and the eight
 * workers, measured while all are alive after their lookups.
 *
 * Then latency: p50/p99/p99.9 of single shmds_table_get calls on the 1 M
 * table from 8 workers while another process republishes the 1 M-entry
 * table back to back (three versions), and for as long without.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <shmds.h>

#define WORKERS 8
#define LOOKUPS 2000000u /* per worker, per design */

/* ---- data ---- */

struct pair {
    char *k, *v;
    uint32_t kl, vl;
};

struct dataset {
    const char *name;
    struct pair *p;
    size_t n;
    char **miss; /* keys that are absent */
    size_t nmiss;
};

static uint64_t rng_next(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static char *rand_text(uint64_t *s, size_t len)
{
    static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789-.+ ";
    char *t = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        t[i] = al[rng_next(s) % (sizeof al - 1)];
    t[len] = '\0';
    return t;
}

static void add_pair(struct dataset *d, size_t *cap, char *k, char *v)
{
    if (d->n == *cap) {
        *cap = *cap ? *cap * 2 : 1024;
        d->p = realloc(d->p, *cap * sizeof *d->p);
    }
    d->p[d->n++] = (struct pair){k, v, (uint32_t)strlen(k), (uint32_t)strlen(v)};
}

static void make_misses(struct dataset *d, uint64_t seed)
{
    d->nmiss = 4096;
    d->miss = malloc(d->nmiss * sizeof *d->miss);
    for (size_t i = 0; i < d->nmiss; i++) {
        size_t kl = 8 + rng_next(&seed) % 16;
        d->miss[i] = rand_text(&seed, kl);
        d->miss[i][0] = '#'; /* never a key of either set */
    }
}

static int load_tsv(struct dataset *d, const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    char *line = NULL;
    size_t lcap = 0, cap = 0;
    ssize_t got;
    while ((got = getline(&line, &lcap, f)) > 0) {
        char *tab = strchr(line, '\t');
        if (tab == NULL || tab == line)
            continue;
        line[strcspn(line, "\r\n")] = '\0';
        *tab = '\0';
        add_pair(d, &cap, strdup(line), strdup(tab + 1));
    }
    free(line);
    fclose(f);
    return d->n > 0 ? 0 : -1;
}

static void synth_index(struct dataset *d)
{
    uint64_t s = 0x9e3779b97f4a7c15u;
    size_t cap = 0;
    for (size_t i = 0; i < 63440; i++) {
        size_t kl = 3 + rng_next(&s) % 29;
        char *k = rand_text(&s, kl);
        snprintf(k + (kl > 8 ? kl - 8 : 0), 9, "%08zx", i); /* unique */
        add_pair(d, &cap, k, rand_text(&s, 20 + rng_next(&s) % 89));
    }
}

static void synth_1m(struct dataset *d)
{
    uint64_t s = 12345;
    size_t cap = 0;
    for (size_t i = 0; i < 1000000; i++) {
        char *k = malloc(21);
        snprintf(k, 21, "key-%016zx", i * 0x9e3779b1u);
        add_pair(d, &cap, k, rand_text(&s, 16 + rng_next(&s) % 33));
    }
}

/* ---- the private table a worker would write ---- */

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= UINT64_C(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x *= UINT64_C(0xc4ceb9fe1a85ec53);
    x ^= x >> 33;
    return x;
}

static inline uint64_t hash(const void *key, size_t len)
{
    const unsigned char *p = key;
    uint64_t h = len * UINT64_C(0x9e3779b97f4a7c15);
    while (len >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ mix(w)) * UINT64_C(0x9e3779b97f4a7c15);
        h ^= h >> 29;
        p += 8;
        len -= 8;
    }
    if (len > 0) {
        uint64_t t = 0;
        memcpy(&t, p, len);
        h = (h ^ mix(t ^ len)) * UINT64_C(0x9e3779b97f4a7c15);
    }
    return mix(h);
}

struct pent {
    uint64_t h; /* 0: empty */
    char *k, *v;
    uint32_t kl, vl;
};

struct ptable {
    struct pent *e;
    uint64_t mask;
};

static void ptable_build(struct ptable *t, const struct dataset *d)
{
    uint64_t n = 8;
    while (n < d->n * 2)
        n *= 2;
    t->e = calloc(n, sizeof *t->e);
    t->mask = n - 1;
    for (size_t i = 0; i < d->n; i++) {
        uint64_t h = hash(d->p[i].k, d->p[i].kl) | 1;
        uint64_t j = h & t->mask;
        while (t->e[j].h != 0)
            j = (j + 1) & t->mask;
        t->e[j] = (struct pent){h, strdup(d->p[i].k), strdup(d->p[i].v), d->p[i].kl, d->p[i].vl};
    }
}

static void ptable_free(struct ptable *t)
{
    for (uint64_t j = 0; j <= t->mask; j++)
        if (t->e[j].h != 0) {
            free(t->e[j].k);
            free(t->e[j].v);
        }
    free(t->e);
}

static inline const struct pent *ptable_get(const struct ptable *t, const char *k, size_t kl)
{
    uint64_t h = hash(k, kl) | 1;
    for (uint64_t j = h & t->mask;; j = (j + 1) & t->mask) {
        const struct pent *e = &t->e[j];
        if (e->h == 0)
            return NULL;
        if (e->h == h && e->kl == kl && memcmp(e->k, k, kl) == 0)
            return e;
    }
}

/* ---- measuring ---- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long pss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/smaps_rollup", (long)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Pss: %ld kB", &kb) == 1)
            break;
    if (f != NULL)
        fclose(f);
    return kb;
}

enum design { D_GET_REF, D_GET, D_MAP_REF, D_MAP_GET, D_PRIVATE, D_BEFORE_FORK, D_N };
static const char *const dname[D_N] = {"shmds get_ref", "shmds get", "shmds map get_ref",
                                       "shmds map get", "private table", "built before fork"};

struct wres {
    double cpu, wall;
    uint64_t found, sum;
    int err;
};

static const char *region_name;
static struct ptable parent_table;

/* One worker's lookups; the key of lookup i is drawn from the set (or,
 * one in ten, from the misses). */
static void lookups(enum design dz, const struct dataset *d, int id, struct wres *w)
{
    shmds_region *r = NULL;
    shmds_table *t = NULL;
    shmds_map *m = NULL;
    struct ptable own;
    const struct ptable *pt = &parent_table;
    if (dz == D_GET_REF || dz == D_GET || dz == D_MAP_REF || dz == D_MAP_GET) {
        if (shmds_region_open(region_name, SHMDS_RDONLY, &r) != 0 ||
            (dz == D_GET_REF || dz == D_GET ? shmds_table_open(r, "bench", &t)
                                            : shmds_map_open(r, "benchmap", &m)) != 0) {
            w->err = 1;
            return;
        }
    } else if (dz == D_PRIVATE) {
        ptable_build(&own, d);
        pt = &own;
    }
    uint64_t s = 0x1234567u + (uint64_t)id * 7919u, found = 0, sum = 0;
    double c0 = cpu_now(), t0 = now();
    shmds_guard *g = NULL;
    for (uint32_t i = 0; i < LOOKUPS; i++) {
        uint64_t x = rng_next(&s);
        const char *k;
        size_t kl;
        if (x % 10 == 0) {
            k = d->miss[(x >> 8) % d->nmiss];
            kl = strlen(k);
        } else {
            const struct pair *p = &d->p[(x >> 8) % d->n];
            k = p->k;
            kl = p->kl;
        }
        if (dz == D_GET_REF || dz == D_MAP_REF) {
            if (i % 64 == 0) {
                if (g != NULL)
                    shmds_guard_leave(g);
                if (shmds_guard_enter(r, &g) != 0) {
                    w->err = 1;
                    return;
                }
            }
            const void *v;
            size_t vl;
            if ((dz == D_GET_REF ? shmds_table_get_ref(t, g, k, kl, &v, &vl, NULL)
                                 : shmds_map_get_ref(m, g, k, kl, &v, &vl)) == 0) {
                found++;
                sum += vl + *(const unsigned char *)v;
            }
        } else if (dz == D_GET || dz == D_MAP_GET) {
            char buf[512];
            size_t vl;
            if ((dz == D_GET ? shmds_table_get(t, k, kl, buf, sizeof buf, &vl)
                             : shmds_map_get(m, k, kl, buf, sizeof buf, &vl)) == 0) {
                found++;
                sum += vl + (unsigned char)buf[0];
            }
        } else {
            const struct pent *e = ptable_get(pt, k, kl);
            if (e != NULL) {
                found++;
                sum += e->vl + (unsigned char)e->v[0];
            }
        }
    }
    if (g != NULL)
        shmds_guard_leave(g);
    w->cpu = cpu_now() - c0;
    w->wall = now() - t0;
    w->found = found;
    w->sum = sum;
    (void)r; /* stays attached until the parent has measured PSS */
}

struct run {
    double lps_cpu, lps_wall;
    long pss_kb;
    uint64_t found;
};

/* 8 workers of design dz: lookups, then a pause while the parent reads
 * every PSS. */
static struct run run_design(enum design dz, const struct dataset *d)
{
    int res[2], go[2];
    if (pipe(res) != 0 || pipe(go) != 0)
        exit(1);
    pid_t pid[WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        pid[i] = fork();
        if (pid[i] == 0) {
            close(go[1]); /* so that the parent's close is our EOF */
            struct wres w = {0};
            lookups(dz, d, i, &w);
            if (write(res[1], &w, sizeof w) != (ssize_t)sizeof w)
                _exit(1);
            char c;
            (void)!read(go[0], &c, 1); /* alive until measured */
            _exit(0);
        }
    }
    struct run out = {0};
    double cpu = 0, wall = 0;
    for (int i = 0; i < WORKERS; i++) {
        struct wres w;
        if (read(res[0], &w, sizeof w) != (ssize_t)sizeof w || w.err) {
            fprintf(stderr, "bench_table: a worker failed (%s)\n", dname[dz]);
            exit(1);
        }
        cpu += w.cpu;
        wall = w.wall > wall ? w.wall : wall;
        out.found += w.found;
    }
    out.pss_kb = pss_kb(getpid());
    for (int i = 0; i < WORKERS; i++)
        out.pss_kb += pss_kb(pid[i]);
    close(go[1]);
    for (int i = 0; i < WORKERS; i++)
        waitpid(pid[i], NULL, 0);
    close(go[0]);
    close(res[0]);
    close(res[1]);
    out.lps_cpu = (double)WORKERS * LOOKUPS / cpu;
    out.lps_wall = (double)WORKERS * LOOKUPS / wall;
    return out;
}

static int publish(shmds_region *r, const struct dataset *d)
{
    shmds_table_builder *b;
    int rc = shmds_table_build(r, "bench", d->n, &b);
    for (size_t i = 0; rc == 0 && i < d->n; i++)
        rc = shmds_table_add(b, d->p[i].k, d->p[i].kl, d->p[i].v, d->p[i].vl);
    if (rc != 0) {
        shmds_table_abort(b);
        return rc;
    }
    return shmds_table_publish(b, NULL);
}

/* The same pairs in a shmds map named "benchmap". */
static int fill_map(shmds_region *r, const struct dataset *d)
{
    shmds_map_opts o = {.capacity = d->n};
    shmds_map *m;
    int rc = shmds_map_create(r, "benchmap", &o, &m);
    for (size_t i = 0; rc == 0 && i < d->n; i++)
        rc = shmds_map_put(m, d->p[i].k, d->p[i].kl, d->p[i].v, d->p[i].vl, 0, 0);
    shmds_map_close(m);
    return rc;
}

static void bench_set(const struct dataset *d)
{
    char name[64];
    snprintf(name, sizeof name, "/shmds-bench-table-%ld", (long)getpid());
    region_name = name;
    size_t bytes = 0, kmax = 1, vmax = 1;
    for (size_t i = 0; i < d->n; i++) {
        bytes += 16 + d->p[i].kl + d->p[i].vl;
        kmax = d->p[i].kl > kmax ? d->p[i].kl : kmax;
        vmax = d->p[i].vl > vmax ? d->p[i].vl : vmax;
    }
    /* The map's part sized for the longest key and value: ample. */
    uint64_t map_bytes = shmds_map_size_hint(d->n, kmax, vmax);
    shmds_region_unlink(name);
    shmds_region *r;
    int rc = shmds_region_create(name, bytes * 3 + d->n * 40 + (8u << 20) + map_bytes, NULL, &r);
    double t0 = now(), build = 0;
    if (rc == 0 && (rc = publish(r, d)) == 0) {
        build = now() - t0;
        rc = fill_map(r, d);
    }
    if (rc != 0) {
        fprintf(stderr, "bench_table: %s: %s\n", d->name, shmds_strerror(rc));
        exit(1);
    }
    shmds_table *t;
    shmds_table_stats st;
    if (shmds_table_open(r, "bench", &t) != 0 || shmds_table_stat(t, &st) != 0)
        exit(1);
    shmds_table_close(t);
    printf("\n%s: %zu pairs; shmds table %.1f MB (%" PRIu64 " slots, longest probe %" PRIu32
           "), built and published in %.0f ms\n",
           d->name, d->n, (double)st.bytes / 1e6, st.slots, st.max_probe, build * 1e3);
    /* Two rounds, the designs in turn, the better of each design's two
     * (the machine is shared: its load changes between runs). */
    struct run runs[D_N];
    for (int round = 0; round < 2; round++)
        for (int dz = 0; dz < D_N; dz++) {
            if (dz == D_BEFORE_FORK)
                ptable_build(&parent_table, d);
            struct run x = run_design((enum design)dz, d);
            if (dz == D_BEFORE_FORK)
                ptable_free(&parent_table);
            if (round == 0 || x.lps_cpu > runs[dz].lps_cpu)
                runs[dz] = x;
        }
    printf("  %-18s %14s %12s %10s %14s %9s\n", "design", "lookups/CPU-s", "lookups/s", "vs get_ref",
           "PSS (9 procs)", "hits");
    for (int dz = 0; dz < D_N; dz++)
        printf("  %-18s %14.3g %12.3g %9.2fx %11.1f MB %9.1f%%\n", dname[dz], runs[dz].lps_cpu,
               runs[dz].lps_wall, runs[0].lps_cpu / runs[dz].lps_cpu,
               (double)runs[dz].pss_kb / 1024.0,
               100.0 * (double)runs[dz].found / ((double)WORKERS * LOOKUPS));
    printf("  shmds get_ref vs private: %.2fx, vs built before fork: %.2fx (lookups per CPU-s)\n",
           runs[D_GET_REF].lps_cpu / runs[D_PRIVATE].lps_cpu,
           runs[D_GET_REF].lps_cpu / runs[D_BEFORE_FORK].lps_cpu);
    for (int dz = D_MAP_REF; dz <= D_MAP_GET; dz++)
        printf("  %s vs private: %.2fx, vs built before fork: %.2fx (lookups per CPU-s)\n",
               dname[dz], runs[dz].lps_cpu / runs[D_PRIVATE].lps_cpu,
               runs[dz].lps_cpu / runs[D_BEFORE_FORK].lps_cpu);
    shmds_region_close(r);
    shmds_region_unlink(name);
}

/* ---- latency under republishing ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Shared between the latency workers, the republisher and the parent. */
struct lat_ctl {
    volatile int stop;
    volatile unsigned published;
};

#define LAT_CAP 2000000u /* samples kept per worker */

/* Workers time single gets until told to stop; with `republish`, a child
 * process publishes the whole set again and again meanwhile, and the
 * workers stop after it has published three versions (without, after
 * `quiet_s` seconds). Percentiles over all samples (ns). */
static void latency(const struct dataset *d, int republish, double quiet_s, double pct[3],
                    unsigned *versions, double *secs)
{
    struct lat_ctl *ctl = mmap(NULL, sizeof *ctl, PROT_READ | PROT_WRITE,
                               MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (ctl == MAP_FAILED)
        exit(1);
    ctl->stop = 0;
    ctl->published = 0;
    int res[WORKERS][2]; /* one pipe each: their writes would interleave */
    for (int i = 0; i < WORKERS; i++)
        if (pipe(res[i]) != 0)
            exit(1);
    pid_t pub = -1;
    if (republish) {
        pub = fork();
        if (pub == 0) {
            shmds_region *r;
            if (shmds_region_open(region_name, 0, &r) != 0)
                _exit(1);
            while (!ctl->stop) {
                int rc = publish(r, d);
                if (rc != 0) {
                    fprintf(stderr, "bench_table: republish: %s\n", shmds_strerror(rc));
                    _exit(1);
                }
                ctl->published++;
            }
            _exit(0);
        }
    }
    pid_t pid[WORKERS];
    double t0 = now();
    for (int i = 0; i < WORKERS; i++) {
        pid[i] = fork();
        if (pid[i] == 0) {
            close(res[i][0]);
            shmds_region *wr;
            shmds_table *t;
            if (shmds_region_open(region_name, SHMDS_RDONLY, &wr) != 0 ||
                shmds_table_open(wr, "bench", &t) != 0)
                _exit(1);
            uint64_t *ns = malloc(LAT_CAP * sizeof *ns), s = 99u + (uint64_t)i;
            uint32_t n = 0;
            while (!ctl->stop) {
                const struct pair *p = &d->p[(rng_next(&s) >> 8) % d->n];
                char buf[512];
                size_t vl;
                struct timespec a, b;
                clock_gettime(CLOCK_MONOTONIC, &a);
                int rc = shmds_table_get(t, p->k, p->kl, buf, sizeof buf, &vl);
                clock_gettime(CLOCK_MONOTONIC, &b);
                if (rc != 0) {
                    fprintf(stderr, "bench_table: get: %s\n", shmds_strerror(rc));
                    _exit(2);
                }
                if (n < LAT_CAP)
                    ns[n++] = (uint64_t)(b.tv_sec - a.tv_sec) * 1000000000u +
                              (uint64_t)(b.tv_nsec - a.tv_nsec);
            }
            FILE *out = fdopen(res[i][1], "w");
            if (out == NULL || fwrite(&n, sizeof n, 1, out) != 1 ||
                fwrite(ns, sizeof *ns, n, out) != n || fclose(out) != 0)
                _exit(1);
            _exit(0);
        }
    }
    for (int i = 0; i < WORKERS; i++)
        close(res[i][1]);
    while (republish ? ctl->published < 3 : now() - t0 < quiet_s) {
        struct timespec nap = {0, 10 * 1000000L};
        nanosleep(&nap, NULL);
    }
    *versions = ctl->published;
    ctl->stop = 1;
    *secs = now() - t0;
    uint64_t *all = NULL;
    size_t total = 0;
    for (int i = 0; i < WORKERS; i++) {
        FILE *in = fdopen(res[i][0], "r");
        uint32_t n;
        if (in != NULL && fread(&n, sizeof n, 1, in) == 1) {
            all = realloc(all, (total + n) * sizeof *all);
            if (fread(all + total, sizeof *all, n, in) == n)
                total += n;
        }
        if (in != NULL)
            fclose(in);
    }
    int bad = 0;
    for (int i = 0; i < WORKERS; i++) {
        int st;
        waitpid(pid[i], &st, 0);
        bad |= !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    if (pub > 0) {
        int st;
        waitpid(pub, &st, 0);
        bad |= !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    if (bad || total == 0) {
        fprintf(stderr, "bench_table: a latency worker or the republisher failed\n");
        exit(1);
    }
    qsort(all, total, sizeof *all, cmp_u64);
    pct[0] = (double)all[total / 2];
    pct[1] = (double)all[total * 99 / 100];
    pct[2] = (double)all[total * 999 / 1000];
    free(all);
    munmap(ctl, sizeof *ctl);
}

int main(int argc, char **argv)
{
    char load[128] = "?";
    FILE *la = fopen("/proc/loadavg", "r");
    if (la != NULL) {
        if (fgets(load, sizeof load, la) == NULL)
            strcpy(load, "?");
        load[strcspn(load, "\n")] = '\0';
        fclose(la);
    }
    printf("bench_table: %d workers, %u random lookups each per design (90%% hits); "
           "%ld CPUs online; load average %s\n",
           WORKERS, LOOKUPS, sysconf(_SC_NPROCESSORS_ONLN), load);
    struct dataset idx = {.name = "package index"}, big = {.name = "1 M synthetic keys"};
    if (argc > 1 && load_tsv(&idx, argv[1]) == 0) {
        idx.name = "Debian package index (from the apt lists)";
    } else {
        synth_index(&idx);
        idx.name = "synthetic package-index-shaped set";
    }
    make_misses(&idx, 1);
    synth_1m(&big);
    make_misses(&big, 2);
    bool only_1m = argc > 2 && strcmp(argv[2], "--1m-only") == 0;
    if (argc < 3 || strcmp(argv[2], "--latency-only") != 0) {
        if (!only_1m)
            bench_set(&idx);
        bench_set(&big);
    }
    if (only_1m)
        return 0;

    /* Latency on the 1 M table. */
    char name[64];
    snprintf(name, sizeof name, "/shmds-bench-table-lat-%ld", (long)getpid());
    region_name = name;
    shmds_region_unlink(name);
    shmds_region *r;
    if (shmds_region_create(name, (size_t)200 << 20, NULL, &r) != 0 || publish(r, &big) != 0) {
        fprintf(stderr, "bench_table: latency set-up failed\n");
        return 1;
    }
    double quiet[3], busy[3], qs, bs;
    unsigned v0, v1;
    latency(&big, 1, 0, busy, &v1, &bs);
    latency(&big, 0, bs, quiet, &v0, &qs);
    printf("\nshmds_table_get latency, 1 M keys, %d workers timing single gets (ns):\n",
           WORKERS);
    printf("  %-44s %8s %8s %8s\n", "", "p50", "p99", "p99.9");
    char what[96];
    snprintf(what, sizeof what, "no republishing (%.1f s)", qs);
    printf("  %-44s %8.0f %8.0f %8.0f\n", what, quiet[0], quiet[1], quiet[2]);
    snprintf(what, sizeof what, "republishing the 1 M table (%u versions, %.1f s)", v1, bs);
    printf("  %-44s %8.0f %8.0f %8.0f\n", what, busy[0], busy[1], busy[2]);
    printf("  p99 ratio (republishing / quiet): %.2fx\n", busy[1] / quiet[1]);
    shmds_region_close(r);
    shmds_region_unlink(name);
    return 0;
}
