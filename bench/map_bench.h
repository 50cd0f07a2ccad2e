/* What the map benchmarks share: the workload (N entries, 16-byte keys,
 * 8-byte values, lookups of keys drawn at random) and a clock. */
#ifndef SHMDS_MAP_BENCH_H
#define SHMDS_MAP_BENCH_H

#include <stdint.h>
#include <time.h>

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* This process's CPU time in seconds: rates per CPU-second stay
 * comparable on a loaded machine, where wall time does not. */
static inline double bench_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Key i: 16 bytes, "k" and i's last 15 decimal digits. */
static inline void bench_key(uint64_t i, char k[16])
{
    k[0] = 'k';
    for (int j = 15; j >= 1; j--, i /= 10)
        k[j] = (char)('0' + i % 10);
}

/* The i-th lookup of process p: a key in [0, n) drawn by a mixing function. */
static inline uint64_t bench_pick(uint64_t i, uint64_t p, uint64_t n)
{
    uint64_t x = (i + 1) * UINT64_C(0x9e3779b97f4a7c15) + p * UINT64_C(0xbf58476d1ce4e5b9);
    x ^= x >> 31;
    x *= UINT64_C(0x94d049bb133111eb);
    x ^= x >> 29;
    return x % n;
}

#endif
