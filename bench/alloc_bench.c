/*
 * Heap benchmark: shmds's offset heap beside glibc malloc (in-process, not
 * shared: the speed to aim at) and Boost.Interprocess managed_shared_memory
 * (its default rbtree_best_fit: what a C++ user would pick for a shared
 * heap), all measured in the same run on the same workloads:
 *
 *   alloc  N allocations of random sizes 16-512 bytes into an empty heap
 *   free   freeing those N blocks in random order
 *   mixed  with N blocks live, free a random one and allocate a new random
 *          size in its place, M times (2M operations)
 *
 * N = 100000, M = 1000000; every block's first byte is written, as a user
 * would. Before the timed runs each heap is filled and emptied once, and
 * glibc is told not to return freed memory to the system, so that no heap
 * pays for page faults in the timed part. Each workload runs three times per
 * allocator; the best run counts.
 * Usage: bench/bench_alloc [N [M]].
 */
#include "config.h"

#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <shmds.h>

#include "bench.h"
#include "data.h"

struct heap {
    const char *name;
    int (*open)(void);
    uint64_t (*alloc)(size_t len);
    void (*free)(uint64_t h);
    void *(*ptr)(uint64_t h);
    void (*close)(void);
};

/* ---- shmds ---- */

static shmds_region *reg;
static char reg_name[64];
static size_t region_bytes;

static int s_open(void)
{
    snprintf(reg_name, sizeof reg_name, "/shmds-bench-%ld", (long)getpid());
    shmds_region_unlink(reg_name);
    return shmds_region_create(reg_name, region_bytes, NULL, &reg);
}

static uint64_t s_alloc(size_t len)
{
    shmds_off_t off;
    return shmds_alloc(reg, len, &off) == 0 ? off : 0;
}

static void s_free(uint64_t h)
{
    shmds_free(reg, h);
}

static void *s_ptr(uint64_t h)
{
    return shmds_ptr(reg, h);
}

static void s_close(void)
{
    shmds_region_close(reg);
    shmds_region_unlink(reg_name);
}

/* ---- glibc ---- */

static int g_open(void)
{
    return 0;
}

static uint64_t g_alloc(size_t len)
{
    return (uint64_t)(uintptr_t)malloc(len);
}

static void g_free(uint64_t h)
{
    free((void *)(uintptr_t)h);
}

static void *g_ptr(uint64_t h)
{
    return (void *)(uintptr_t)h;
}

static void g_close(void)
{
}

#ifdef HAVE_BOOST_INTERPROCESS
static int b_open(void)
{
    return bench_boost_open(region_bytes);
}
#endif

/* ---- workloads ---- */

static uint64_t rng = 88172645463325252u;

static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static double clock_s(clockid_t c)
{
    struct timespec ts;
    clock_gettime(c, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Wall time, and this process's CPU time (on a loaded machine the wall
 * clock counts the time other processes ran; the CPU clock does not). */
static double cpu_mark[5];

static double now_s(void)
{
    return clock_s(CLOCK_MONOTONIC);
}

static double cpu_s(void)
{
    return clock_s(CLOCK_PROCESS_CPUTIME_ID);
}

/* Operations per second of alloc, free and mixed: v[WALL] by the wall
 * clock, v[CPU] per CPU-second. */
enum { WALL, CPU, CLOCKS };
struct result {
    double v[CLOCKS][3];
};

static void die(const char *what, const struct heap *h)
{
    fprintf(stderr, "bench_alloc: %s failed for %s\n", what, h->name);
    exit(1);
}

static void run(const struct heap *h, size_t n, size_t m, const uint32_t *sizes,
                const uint32_t *order, const uint32_t *picks, struct result *best)
{
    uint64_t *blk = calloc(n, sizeof *blk);
    if (blk == NULL || h->open() != 0)
        die("setup", h);
    /* A first fill and free, untimed, so that every heap's pages are
     * mapped: the timed runs measure allocation, not page faults. */
    for (size_t i = 0; i < n; i++)
        if ((blk[i] = h->alloc(sizes[i])) == 0)
            die("warm-up", h);
    for (size_t i = 0; i < n; i++)
        h->free(blk[i]);
    cpu_mark[0] = cpu_s();
    double t0 = now_s();
    for (size_t i = 0; i < n; i++) {
        if ((blk[i] = h->alloc(sizes[i])) == 0)
            die("alloc", h);
        *(volatile char *)h->ptr(blk[i]) = 1;
    }
    double t1 = now_s();
    cpu_mark[1] = cpu_s();
    for (size_t i = 0; i < n; i++)
        h->free(blk[order[i]]);
    double t2 = now_s();
    cpu_mark[2] = cpu_s();
    for (size_t i = 0; i < n; i++)
        if ((blk[i] = h->alloc(sizes[i])) == 0)
            die("refill", h);
    cpu_mark[3] = cpu_s();
    double t3 = now_s();
    /* The new sizes are read in sequence (the sizes are random already):
     * a random index would add a cache miss and a division to every step,
     * the same for every heap, and flatten the ratios. */
    for (size_t i = 0, k = 0; i < m; i++) {
        uint32_t j = picks[i];
        h->free(blk[j]);
        if ((blk[j] = h->alloc(sizes[k])) == 0)
            die("mixed alloc", h);
        *(volatile char *)h->ptr(blk[j]) = 1;
        if (++k == n)
            k = 0;
    }
    double t4 = now_s();
    cpu_mark[4] = cpu_s();
    for (size_t i = 0; i < n; i++)
        h->free(blk[i]);
    h->close();
    free(blk);
    struct result r = {{{(double)n / (t1 - t0), (double)n / (t2 - t1),
                         2.0 * (double)m / (t4 - t3)},
                        {(double)n / (cpu_mark[1] - cpu_mark[0]),
                         (double)n / (cpu_mark[2] - cpu_mark[1]),
                         2.0 * (double)m / (cpu_mark[4] - cpu_mark[3])}}};
    for (int c = 0; c < CLOCKS; c++)
        for (int k = 0; k < 3; k++)
            if (r.v[c][k] > best->v[c][k])
                best->v[c][k] = r.v[c][k];
}

/* One table of the results by clock c: every heap's rates, then shmds's
 * ratios to glibc (heap 1) and, when built, Boost (heap 2). */
static void print_table(const char *unit, const struct heap *heaps, int nh,
                        const struct result *best, int c)
{
    printf("%-22s %12s %12s %12s\n", unit, "alloc", "free", "mixed");
    for (int i = 0; i < nh; i++)
        printf("%-22s %12.2f %12.2f %12.2f\n", heaps[i].name, best[i].v[c][0] / 1e6,
               best[i].v[c][1] / 1e6, best[i].v[c][2] / 1e6);
    printf("\n");
    for (int i = 1; i < nh; i++)
        printf("%-22s %12.2f %12.2f %12.2f\n", i == 1 ? "shmds / glibc" : "shmds / boost",
               best[0].v[c][0] / best[i].v[c][0], best[0].v[c][1] / best[i].v[c][1],
               best[0].v[c][2] / best[i].v[c][2]);
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    size_t m = argc > 2 ? strtoul(argv[2], NULL, 10) : 1000000;
    if (n == 0 || m == 0)
        return 2;
    mallopt(M_TRIM_THRESHOLD, 1 << 30);
    region_bytes = n * 640 + (8u << 20);
    uint32_t *sizes = malloc(n * sizeof *sizes), *order = malloc(n * sizeof *order);
    uint32_t *picks = malloc(m * sizeof *picks);
    if (sizes == NULL || order == NULL || picks == NULL)
        return 1;
    for (size_t i = 0; i < n; i++) {
        sizes[i] = 16 + (uint32_t)(next_rand() % 497);
        order[i] = (uint32_t)i;
    }
    for (size_t i = n; i-- > 1;) {
        size_t j = next_rand() % (i + 1);
        uint32_t t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (size_t i = 0; i < m; i++)
        picks[i] = (uint32_t)(next_rand() % n);

    const struct heap heaps[] = {
        {"shmds", s_open, s_alloc, s_free, s_ptr, s_close},
        {"glibc malloc", g_open, g_alloc, g_free, g_ptr, g_close},
#ifdef HAVE_BOOST_INTERPROCESS
        {"boost rbtree_best_fit", b_open, bench_boost_alloc, bench_boost_free, bench_boost_ptr,
         bench_boost_close},
#endif
    };
    enum { H = sizeof heaps / sizeof heaps[0] };
    struct result best[H];
    memset(best, 0, sizeof best);
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < H; i++)
            run(&heaps[i], n, m, sizes, order, picks, &best[i]);

    char mach[400];
    bench_machine(mach, sizeof mach);
    printf("machine: %s\n", mach);
    printf("workload: sizes 16-512 B uniform; alloc = %zu allocations, free = the same in "
           "random order,\n          mixed = %zu x (free a random live block + allocate), "
           "%zu blocks live; best of 3\n\n",
           n, m, n);
    print_table("Mops/s", heaps, H, best, WALL);
#ifndef HAVE_BOOST_INTERPROCESS
    printf("(Boost.Interprocess not found at configure time: no Boost column)\n");
#endif
    printf("\nper CPU-second of this process (best of 3):\n");
    print_table("Mops/CPU-s", heaps, H, best, CPU);
    const char *names[H];
    double col[3][H];
    for (int i = 0; i < H; i++) {
        names[i] = heaps[i].name;
        for (int k = 0; k < 3; k++)
            col[k][i] = best[i].v[WALL][k] / 1e6;
    }
    FILE *d = bench_data_open("alloc", "heap: sizes 16-512 B, best of 3",
                              "million operations per second", "linear", names, H);
    bench_data_row(d, "alloc", col[0], H);
    bench_data_row(d, "free (random order)", col[1], H);
    bench_data_row(d, "mixed (free + alloc)", col[2], H);
    bench_data_close(d);
    free(sizes);
    free(order);
    free(picks);
    return 0;
}
