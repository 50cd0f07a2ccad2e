/* Private to the map module and its tests. */
#ifndef SHMDS_MAP_INT_H
#define SHMDS_MAP_INT_H

#include <stddef.h>
#include <stdint.h>

/* Replace the map's clock (milliseconds on any monotonic scale, the same in
 * every process that shares a map) so tests can move time without
 * sleeping; NULL restores CLOCK_MONOTONIC. Process-wide, not thread-safe. */
void shmds__map_set_clock(uint64_t (*now_ms)(void));

/* The shmds_map_check() of the map at `off` (a directory entry of type
 * SHMDS_TYPE_MAP), for shmds_region_check(). */
int shmds__map_check_at(shmds_region *r, shmds_off_t off);

/* Free every entry and table of the map whose header is at `off` (found
 * through a pending directory entry: all zeros or as written) and clear its
 * magic; the header block stays, for the caller to free through the entry.
 * Idempotent and killable. */
int shmds__map_reclaim_at(shmds_region *r, shmds_off_t off);

/* For tests that damage a map on purpose: the bucket slot `key` hashes to,
 * in the table that holds it now; NULL when the table state is damaged. */
uint64_t *shmds__map_slot(shmds_map *m, const void *key, size_t klen);

/* For tests of single-flight fills: how many callers sleep waiting for a
 * fill in the stripe of `key` (dead sleepers included). */
uint32_t shmds__map_fill_waiters(shmds_map *m, const void *key, size_t klen);

#endif
