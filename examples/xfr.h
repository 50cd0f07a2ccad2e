/* What xfr_writer and xfr_reader share: names, defaults and small helpers. */
#ifndef XFR_H
#define XFR_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define XFR_DEFAULT_NAME "/shmds-xfr"
#define XFR_QDATA "xfr.data"  /* the stream: one message per block */
#define XFR_QDONE "xfr.done"  /* the reader's "done", for the writer */
#define XFR_DEFAULT_BLOCK ((size_t)64 << 10)
#define XFR_DEFAULT_BLOCK_TEXT "64k"
#define XFR_DEFAULT_CAPACITY ((size_t)4 << 20)
#define XFR_DEFAULT_CAPACITY_TEXT "4m"
#define XFR_REGION_SLACK ((size_t)256 << 10) /* header, heap and queue headers */
#define XFR_START_WAIT_S 30

/* "123", "64k", "4m": bytes. */
static inline int xfr_parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *s == '-')
        return -1;
    unsigned shift = 0;
    if (*end == 'k' || *end == 'K')
        shift = 10;
    else if (*end == 'm' || *end == 'M')
        shift = 20;
    if (shift != 0)
        end++;
    if (*end != '\0' || v > (SIZE_MAX >> shift))
        return -1;
    *out = (size_t)v << shift;
    return 0;
}

static inline int xfr_parse_seconds(const char *s, int *ms)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < 0 || v > 2000000)
        return -1;
    *ms = (int)v * 1000;
    return 0;
}

static inline uint64_t xfr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline void xfr_report(const char *who, uint64_t bytes, uint64_t ns, size_t block)
{
    double s = ns / 1e9;
    fprintf(stderr, "%s: %llu bytes in %.3f s (%.1f MB/s), blocks of %zu bytes\n", who,
            (unsigned long long)bytes, s, s > 0 ? bytes / s / 1e6 : 0.0, block);
}

#endif
