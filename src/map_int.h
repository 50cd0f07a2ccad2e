/* Test hooks of the map module (map.c), for the tests only. */
#ifndef SHMDS_MAP_INT_H
#define SHMDS_MAP_INT_H

#include <stddef.h>
#include <stdint.h>

/* Replace the map's clock (milliseconds on any monotonic scale, the same in
 * every process that shares a map) so tests can move time without
 * sleeping; NULL restores CLOCK_MONOTONIC. Process-wide, not thread-safe. */
void shmds__map_set_clock(uint64_t (*now_ms)(void));

/* For tests that damage a map on purpose: the bucket slot `key` hashes to,
 * in the table that holds it now; NULL when the table state is damaged.
 * A bucket word holds its chain's first entry in the bits of
 * SHMDS__MAP_LINK_OFF_MASK and a filter of the chain's keys above them
 * (map.c, "Bucket words"). */
#define SHMDS__MAP_LINK_OFF_MASK ((UINT64_C(1) << 48) - 1)
uint64_t *shmds__map_slot(shmds_map *m, const void *key, size_t klen);

/* For tests of single-flight fills: how many callers sleep waiting for a
 * fill in the stripe of `key` (dead sleepers included). */
uint32_t shmds__map_fill_waiters(shmds_map *m, const void *key, size_t klen);

#endif
