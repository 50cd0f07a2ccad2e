/*
 * bench_map [N [BOOST_RESULTS]] — the shared hash map against the
 * alternatives, in one run, on one workload: N entries (default 1 000 000)
 * of 16-byte keys and 8-byte values; inserts per second, then N random
 * lookups per second in one process and in two processes at once; then
 * inserts into a fresh map from one process and from two at once (disjoint
 * keys), best of three each, beside the same split into private
 * open-addressing tables (what two processes gain on this machine when
 * they share nothing).
 *
 * Baselines: an in-process C open-addressing table (linear probing, keys
 * inline: the speed limit of a hash table, not shared); LMDB on /dev/shm
 * (MDB_WRITEMAP | MDB_NOSYNC, all inserts in one transaction); and
 * Boost.Interprocess unordered_map in managed_shared_memory, measured by
 * bench_map_boost, whose output file is BOOST_RESULTS. Ratios are shmds
 * divided by each baseline.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmds.h>

#include "config.h"
#include "data.h"
#include "map_bench.h"

#ifdef HAVE_LMDB
#include <lmdb.h>
#endif

struct result {
    const char *name;
    double insert, lookup, lookup2;
};

/* Inserts per second into a fresh map from 1 and from 2 processes at
 * once (disjoint keys), best of 3 each (run_shmds); and per CPU-second of
 * the inserting processes (user + system), which a loaded machine
 * distorts less than the wall clock. `sep`: the same 2 processes, each
 * into a map of its own in the one region (shared allocator, no shared
 * map line): what this machine allows the workload when no cache line of
 * the map moves between the two CPUs. */
static double ins1, ins2, ins1_cpu, ins2_cpu, sep2, sep2_cpu;
/* The machine's own ceiling for the same split: 1 and 2 processes each
 * inserting its keys into a private open-addressing table (malloc, no
 * shared memory, no lock), best of 3. */
static double oains1, oains2;
/* The read side (issue 11), lookups per second: zero-copy gets inside one
 * guard held for 1000 gets; copying gets on an evicting map (a budget
 * nothing reaches); 8 read-only workers at once, against the in-process
 * table shared by 8 forked workers (copy-on-write, read only). */
static double ref1, evict1, ro8, oa8, ro8_cpu, oa8_cpu;
/* The same one-process lookups per CPU-second of this process. */
static double cpu_shmds, cpu_ref, cpu_evict, cpu_oa, cpu_boost;
#define WORKERS 8

static double children_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "bench_map: %s: %s\n", what, shmds_strerror(rc));
    exit(1);
}

/* Run fn(p) in `procs` processes at once, n each; operations per second,
 * and in *per_cpu (unless NULL) per CPU-second of those processes. */
static double n_procs(unsigned procs, uint64_t n, int (*fn)(uint64_t p, uint64_t n, void *arg),
                      void *arg, double *per_cpu)
{
    double c0 = children_cpu();
    double t0 = bench_now();
    pid_t pids[WORKERS];
    for (unsigned p = 0; p < procs; p++)
        if ((pids[p] = fork()) == 0)
            _exit(fn(p + 1, n, arg));
    for (unsigned p = 0; p < procs; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            fprintf(stderr, "bench_map: a worker process failed\n");
            exit(1);
        }
    }
    double t = bench_now() - t0;
    if (per_cpu != NULL)
        *per_cpu = (double)procs * (double)n / (children_cpu() - c0);
    return (double)procs * (double)n / t;
}

/* ---- shmds ---- */

static const char *shm_name;

static int shmds_lookups(uint64_t p, uint64_t n, void *arg)
{
    shmds_map *m = arg;
    shmds_region *r = NULL;
    if (p != 0) { /* a fresh process attaches on its own */
        if (shmds_region_open(shm_name, 0, &r) != 0 || shmds_map_open(r, "bench", &m) != 0)
            return 1;
    }
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        uint64_t v;
        bench_key(bench_pick(i, p, n), k);
        if (shmds_map_get(m, k, 16, &v, 8, NULL) != 0)
            return 1;
    }
    if (r != NULL) {
        shmds_map_close(m);
        shmds_region_close(r);
    }
    return 0;
}

/* Zero-copy gets, one guard per 1000 gets. */
static shmds_region *ref_region;
static int shmds_ref_lookups(uint64_t p, uint64_t n, void *arg)
{
    shmds_map *m = arg;
    shmds_region *r = ref_region;
    shmds_guard *g = NULL;
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        const void *v;
        size_t vl;
        if (i % 1000 == 0) {
            shmds_guard_leave(g);
            if (shmds_guard_enter(r, &g) != 0)
                return 1;
        }
        bench_key(bench_pick(i, p, n), k);
        if (shmds_map_get_ref(m, g, k, 16, &v, &vl) != 0 || vl != 8)
            return 1;
    }
    shmds_guard_leave(g);
    return 0;
}

/* A read-only worker: attaches on its own, n gets. */
static int shmds_ro_lookups(uint64_t p, uint64_t n, void *arg)
{
    (void)arg;
    shmds_region *r;
    shmds_map *m;
    if (shmds_region_open(shm_name, SHMDS_RDONLY, &r) != 0 || shmds_map_open(r, "bench", &m) != 0)
        return 1;
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        uint64_t v;
        bench_key(bench_pick(i, p, n), k);
        if (shmds_map_get(m, k, 16, &v, 8, NULL) != 0)
            return 1;
    }
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

/* `procs` fresh processes insert keys [0, n) into a fresh map at once,
 * process p the keys i with i % procs == p; inserts per second over all.
 * `own`: each process into a fresh map of its own, sized for its keys. */
static double shmds_inserts(uint64_t n, unsigned procs, bool own, double *per_cpu)
{
    char name[64];
    snprintf(name, sizeof name, "/shmds-bench-ins-%ld", (long)getpid());
    shmds_region *r;
    shmds_map *m[2];
    unsigned nmaps = own ? procs : 1;
    shmds_map_opts o = {.capacity = n / nmaps};
    int rc = shmds_region_create(
        name, (size_t)shmds_map_size_hint(n / nmaps, 16, 8) * nmaps, NULL, &r);
    for (unsigned i = 0; rc == 0 && i < nmaps; i++)
        rc = shmds_map_create(r, i == 0 ? "ins" : "ins1", &o, &m[i]);
    if (rc != 0)
        die("insert setup", rc);
    double c0 = children_cpu();
    double t0 = bench_now();
    pid_t pids[2];
    for (unsigned p = 0; p < procs; p++) {
        if ((pids[p] = fork()) == 0) {
            shmds_region *r2;
            shmds_map *m2;
            if (shmds_region_open(name, 0, &r2) != 0 ||
                shmds_map_open(r2, own && p == 1 ? "ins1" : "ins", &m2) != 0)
                _exit(1);
            for (uint64_t i = p; i < n; i += procs) {
                char k[16];
                bench_key(i, k);
                if (shmds_map_put(m2, k, 16, &i, 8, 0, 0) != 0)
                    _exit(1);
            }
            shmds_map_close(m2);
            shmds_region_close(r2);
            _exit(0);
        }
    }
    for (unsigned p = 0; p < procs; p++) {
        int st;
        waitpid(pids[p], &st, 0);
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
            fprintf(stderr, "bench_map: an insert process failed\n");
            exit(1);
        }
    }
    double rate = (double)n / (bench_now() - t0);
    *per_cpu = (double)n / (children_cpu() - c0);
    for (unsigned i = 0; i < nmaps; i++)
        shmds_map_close(m[i]);
    shmds_region_close(r);
    shmds_region_unlink(name);
    return rate;
}

static struct result run_shmds(uint64_t n)
{
    struct result res = {"shmds map", 0, 0, 0};
    char name[64];
    snprintf(name, sizeof name, "/shmds-bench-map-%ld", (long)getpid());
    shm_name = name;
    shmds_region *r;
    shmds_map *m;
    shmds_map_opts o = {.capacity = n};
    int rc = shmds_region_create(name, (size_t)shmds_map_size_hint(n, 16, 8), NULL, &r);
    if (rc != 0)
        die("region_create", rc);
    if ((rc = shmds_map_create(r, "bench", &o, &m)) != 0)
        die("map_create", rc);
    double t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        bench_key(i, k);
        if ((rc = shmds_map_put(m, k, 16, &i, 8, 0, 0)) != 0)
            die("put", rc);
    }
    res.insert = (double)n / (bench_now() - t0);
    t0 = bench_now();
    double c0 = bench_cpu();
    if (shmds_lookups(0, n, m) != 0)
        die("get", -ENOENT);
    res.lookup = (double)n / (bench_now() - t0);
    cpu_shmds = (double)n / (bench_cpu() - c0);
    res.lookup2 = n_procs(2, n, shmds_lookups, NULL, NULL);
    ref_region = r;
    t0 = bench_now();
    c0 = bench_cpu();
    if (shmds_ref_lookups(0, n, m) != 0)
        die("get_ref", -ENOENT);
    ref1 = (double)n / (bench_now() - t0);
    cpu_ref = (double)n / (bench_cpu() - c0);
    ro8 = n_procs(WORKERS, n / WORKERS, shmds_ro_lookups, NULL, &ro8_cpu);
    /* The same keys in an evicting map whose budget nothing reaches. */
    shmds_map_opts eo = {.capacity = n, .mem_limit = (uint64_t)1 << 40, .flags = SHMDS_MAP_EVICT};
    if ((rc = shmds_map_destroy(m)) != 0 ||
        (rc = shmds_map_create(r, "bench", &eo, &m)) != 0)
        die("evicting map", rc);
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        bench_key(i, k);
        if ((rc = shmds_map_put(m, k, 16, &i, 8, 0, 0)) != 0)
            die("put (evict)", rc);
    }
    t0 = bench_now();
    c0 = bench_cpu();
    if (shmds_lookups(0, n, m) != 0)
        die("get (evict)", -ENOENT);
    evict1 = (double)n / (bench_now() - t0);
    cpu_evict = (double)n / (bench_cpu() - c0);
    shmds_map_close(m);
    shmds_region_close(r);
    shmds_region_unlink(name);
    for (int rep = 0; rep < 3; rep++) {
        double ac, bc, sc, a = shmds_inserts(n, 1, false, &ac), b = shmds_inserts(n, 2, false, &bc),
                           sp = shmds_inserts(n, 2, true, &sc);
        ins1 = a > ins1 ? a : ins1;
        ins2 = b > ins2 ? b : ins2;
        sep2 = sp > sep2 ? sp : sep2;
        ins1_cpu = ac > ins1_cpu ? ac : ins1_cpu;
        ins2_cpu = bc > ins2_cpu ? bc : ins2_cpu;
        sep2_cpu = sc > sep2_cpu ? sc : sep2_cpu;
    }
    return res;
}

/* ---- in-process open addressing ---- */

struct oa_slot {
    char key[16];
    uint64_t val;
    uint64_t used;
};
struct oa {
    struct oa_slot *s;
    uint64_t mask;
};

static uint64_t oa_hash(const char *k)
{
    uint64_t a, b;
    memcpy(&a, k, 8);
    memcpy(&b, k + 8, 8);
    uint64_t h = (a ^ (b * UINT64_C(0x9e3779b97f4a7c15))) * UINT64_C(0xbf58476d1ce4e5b9);
    return h ^ (h >> 31);
}

static void oa_put(struct oa *t, const char *k, uint64_t v)
{
    for (uint64_t i = oa_hash(k) & t->mask;; i = (i + 1) & t->mask) {
        if (!t->s[i].used || memcmp(t->s[i].key, k, 16) == 0) {
            memcpy(t->s[i].key, k, 16);
            t->s[i].val = v;
            t->s[i].used = 1;
            return;
        }
    }
}

static int oa_get(const struct oa *t, const char *k, uint64_t *v)
{
    for (uint64_t i = oa_hash(k) & t->mask;; i = (i + 1) & t->mask) {
        if (!t->s[i].used)
            return -1;
        if (memcmp(t->s[i].key, k, 16) == 0) {
            *v = t->s[i].val;
            return 0;
        }
    }
}

static int oa_lookups(uint64_t p, uint64_t n, void *arg)
{
    const struct oa *t = arg;
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        uint64_t v;
        bench_key(bench_pick(i, p, n), k);
        if (oa_get(t, k, &v) != 0)
            return 1;
    }
    return 0;
}

/* One of `*(unsigned *)arg` processes (n_procs: p from 1): inserts the
 * keys p - 1, p - 1 + procs, ... (n of them) into a private
 * open-addressing table sized for its share. */
static int oa_inserts(uint64_t p, uint64_t n, void *arg)
{
    unsigned procs = *(const unsigned *)arg;
    uint64_t cap = 1;
    while (cap < 2 * n)
        cap <<= 1;
    struct oa t = {calloc(cap, sizeof(struct oa_slot)), cap - 1};
    if (t.s == NULL)
        return 1;
    for (uint64_t j = 0; j < n; j++) {
        char k[16];
        uint64_t i = p - 1 + j * procs;
        bench_key(i, k);
        oa_put(&t, k, i);
    }
    free(t.s);
    return 0;
}

static struct result run_oa(uint64_t n)
{
    struct result res = {"C open addressing (in-process)", 0, 0, 0};
    uint64_t cap = 1;
    while (cap < 2 * n)
        cap <<= 1;
    struct oa t = {calloc(cap, sizeof(struct oa_slot)), cap - 1};
    if (t.s == NULL)
        die("calloc", -ENOMEM);
    double t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        bench_key(i, k);
        oa_put(&t, k, i);
    }
    res.insert = (double)n / (bench_now() - t0);
    t0 = bench_now();
    double c0 = bench_cpu();
    if (oa_lookups(0, n, &t) != 0)
        die("open addressing lookup", -ENOENT);
    res.lookup = (double)n / (bench_now() - t0);
    cpu_oa = (double)n / (bench_cpu() - c0);
    res.lookup2 = n_procs(2, n, oa_lookups, &t, NULL); /* copy-on-write copies, read only */
    oa8 = n_procs(WORKERS, n / WORKERS, oa_lookups, &t, &oa8_cpu);
    free(t.s);
    for (int rep = 0; rep < 3; rep++) {
        unsigned one = 1, two = 2;
        double a = n_procs(1, n, oa_inserts, &one, NULL),
               b = n_procs(2, n / 2, oa_inserts, &two, NULL);
        oains1 = a > oains1 ? a : oains1;
        oains2 = b > oains2 ? b : oains2;
    }
    return res;
}

/* ---- LMDB ---- */

#ifdef HAVE_LMDB
static char lmdb_path[128];

static int lmdb_open(MDB_env **env)
{
    if (mdb_env_create(env) != 0)
        return -1;
    mdb_env_set_mapsize(*env, (size_t)1 << 30);
    return mdb_env_open(*env, lmdb_path, MDB_NOSUBDIR | MDB_WRITEMAP | MDB_NOSYNC, 0600);
}

static int lmdb_lookups(uint64_t p, uint64_t n, void *arg)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    if (lmdb_open(&env) != 0 || mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0 ||
        mdb_dbi_open(txn, NULL, 0, &dbi) != 0)
        return 1;
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        bench_key(bench_pick(i, p, n), k);
        MDB_val key = {16, k}, val;
        if (mdb_get(txn, dbi, &key, &val) != 0)
            return 1;
    }
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return 0;
}

static struct result run_lmdb(uint64_t n)
{
    struct result res = {"LMDB (/dev/shm, WRITEMAP|NOSYNC)", 0, 0, 0};
    snprintf(lmdb_path, sizeof lmdb_path, "/dev/shm/shmds-bench-lmdb-%ld", (long)getpid());
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    if (lmdb_open(&env) != 0 || mdb_txn_begin(env, NULL, 0, &txn) != 0 ||
        mdb_dbi_open(txn, NULL, 0, &dbi) != 0)
        die("lmdb open", -EIO);
    double t0 = bench_now();
    for (uint64_t i = 0; i < n; i++) {
        char k[16];
        bench_key(i, k);
        MDB_val key = {16, k}, val = {8, &i};
        if (mdb_put(txn, dbi, &key, &val, 0) != 0)
            die("mdb_put", -EIO);
    }
    if (mdb_txn_commit(txn) != 0)
        die("mdb_txn_commit", -EIO);
    res.insert = (double)n / (bench_now() - t0);
    mdb_env_close(env);
    t0 = bench_now();
    if (lmdb_lookups(0, n, NULL) != 0)
        die("mdb_get", -ENOENT);
    res.lookup = (double)n / (bench_now() - t0);
    res.lookup2 = n_procs(2, n, lmdb_lookups, NULL, NULL);
    unlink(lmdb_path);
    char lock[160];
    snprintf(lock, sizeof lock, "%s-lock", lmdb_path);
    unlink(lock);
    return res;
}
#endif

static int read_boost(const char *path, struct result *b)
{
    FILE *f = path != NULL ? fopen(path, "r") : NULL;
    if (f == NULL)
        return -1;
    char what[32];
    double v;
    int got = 0;
    while (fscanf(f, "%31s %lf", what, &v) == 2) {
        if (strcmp(what, "boost_insert") == 0)
            b->insert = v, got |= 1;
        else if (strcmp(what, "boost_lookup") == 0)
            b->lookup = v, got |= 2;
        else if (strcmp(what, "boost_lookup2") == 0)
            b->lookup2 = v, got |= 4;
        else if (strcmp(what, "boost_lookup_cpu") == 0)
            cpu_boost = v;
    }
    fclose(f);
    return got == 7 ? 0 : -1;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 1000000;
    if (n == 0) {
        fprintf(stderr, "usage: %s [N [BOOST_RESULTS]]\n", argv[0]);
        return 2;
    }
    struct result rs[4];
    int nr = 0;
    rs[nr++] = run_shmds(n);
    rs[nr++] = run_oa(n);
    struct result boost = {"Boost.Interprocess unordered_map", 0, 0, 0};
    if (read_boost(argc > 2 ? argv[2] : NULL, &boost) == 0)
        rs[nr++] = boost;
#ifdef HAVE_LMDB
    rs[nr++] = run_lmdb(n);
#endif
    char machine[400];
    bench_machine(machine, sizeof machine);
    printf("\nshmds map benchmark: %llu entries, 16-byte keys, 8-byte values; "
           "%llu random lookups per process\n",
           (unsigned long long)n, (unsigned long long)n);
    printf("machine: %s\n\n", machine);
    printf("%-34s %12s %12s %12s %8s\n", "", "inserts/s", "lookups/s", "2 procs/s", "2p/1p");
    for (int i = 0; i < nr; i++)
        printf("%-34s %12.0f %12.0f %12.0f %7.2fx\n", rs[i].name, rs[i].insert, rs[i].lookup,
               rs[i].lookup2, rs[i].lookup2 / rs[i].lookup);
    printf("\nshmds map inserts into a fresh map, best of 3: 1 process %.0f/s, 2 processes at "
           "once (disjoint keys) %.0f/s: %.2fx\n",
           ins1, ins2, ins2 / ins1);
    printf("  per CPU-second of the inserting processes: 1 process %.0f, 2 processes %.0f: "
           "%.2fx\n",
           ins1_cpu, ins2_cpu, ins2_cpu / ins1_cpu);
    printf("  2 processes each into a map of its own (no map line shared): %.0f/s, %.2fx; per "
           "CPU-second %.0f, %.2fx\n",
           sep2, sep2 / ins1, sep2_cpu, sep2_cpu / ins1_cpu);
    printf("  the machine's ceiling, private open-addressing tables in forked processes: "
           "1 process %.0f/s, 2 processes %.0f/s: %.2fx\n",
           oains1, oains2, oains2 / oains1);
    printf("\nthe read side (lookups/s; ratios against the same run):\n");
    printf("  zero-copy gets (get_ref, one guard per 1000 gets) %12.0f  %5.2fx copying gets, "
           "%5.2fx open addressing\n",
           ref1, ref1 / rs[0].lookup, ref1 / rs[1].lookup);
    printf("  gets on an evicting map (SHMDS_MAP_EVICT)          %12.0f  %5.2fx a plain map\n",
           evict1, evict1 / rs[0].lookup);
    printf("  %d read-only workers at once                        %12.0f  %5.2fx open addressing "
           "forked to %d workers (%.0f/s)\n",
           WORKERS, ro8, ro8 / oa8, WORKERS, oa8);
    printf("    per CPU-second of the workers: shmds %.0f, open addressing %.0f: %.2fx\n", ro8_cpu,
           oa8_cpu, ro8_cpu / oa8_cpu);
    printf("\none process, lookups per CPU-second (stable under load): shmds %.0f, zero-copy "
           "%.0f, evicting map %.0f, open addressing %.0f\n"
           "  shmds / open addressing %.2fx, zero-copy / open addressing %.2fx, evicting / plain "
           "%.2fx\n",
           cpu_shmds, cpu_ref, cpu_evict, cpu_oa, cpu_shmds / cpu_oa, cpu_ref / cpu_oa,
           cpu_evict / cpu_shmds);
    if (cpu_boost > 0)
        printf("  Boost.Interprocess %.0f: shmds / Boost %.2fx, zero-copy / Boost %.2fx\n",
               cpu_boost, cpu_shmds / cpu_boost, cpu_ref / cpu_boost);
    printf("\nshmds map relative to each (lookups, one process / two processes):\n");
    for (int i = 1; i < nr; i++)
        printf("  vs %-32s %6.2fx / %6.2fx   (inserts %6.2fx)\n", rs[i].name,
               rs[0].lookup / rs[i].lookup, rs[0].lookup2 / rs[i].lookup2,
               rs[0].insert / rs[i].insert);

    const char *names[4];
    double ins[4], look[4], look2[4];
    for (int i = 0; i < nr; i++) {
        names[i] = rs[i].name;
        ins[i] = rs[i].insert / 1e6;
        look[i] = rs[i].lookup / 1e6;
        look2[i] = rs[i].lookup2 / 1e6;
    }
    char title[160];
    snprintf(title, sizeof title, "hash map: %llu entries, 16-byte keys, 8-byte values",
             (unsigned long long)n);
    FILE *d = bench_data_open("map", title, "million operations per second", "log", names, nr);
    bench_data_row(d, "inserts", ins, nr);
    bench_data_row(d, "lookups, 1 process", look, nr);
    bench_data_row(d, "lookups, 2 processes", look2, nr);
    bench_data_close(d);
    return 0;
}
