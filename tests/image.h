/* Region images in ordinary memory: what the hostile-image tests and the
 * fuzzer feed to the library. img_exercise() attaches to an image with
 * shmds__region_attach_mem, read-only first (the lock-free reads of a
 * process that comes before any repair: a map's growth half published, a
 * stripe mid-change), then writable, and runs every read-side operation on
 * it: the whole-region check, the directory, and each named object the
 * library knows (map gets and foreach walks, what `shmds dump` runs). Whatever the bytes, it must return; a crash, a hang or a sanitizer
 * report is a library bug. */
#ifndef SHMDS_TEST_IMAGE_H
#define SHMDS_TEST_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "shmds/region.h"

/* The fuzzer reads its input's last header byte (the end of the header's
 * reserved tail) as switches (tests/fuzz/fuzz_region.c): */
#define IMG_CTL_CHECKSUM 1u   /* recompute the header's checksum */
#define IMG_CTL_LOCK_WORDS 2u /* keep the header locks' kind words as fuzzed */
#define IMG_CTL_WAIT 4u       /* wait 1 ms for a busy lock or writer, not 0 */
#define IMG_CTL_FD 8u         /* attach through a file descriptor (growth) */

/* Lock waits on a hostile image are cut to this (a garbage lock word may
 * look held by a live process forever). */
#define IMG_LOCK_TIMEOUT_MS 20

typedef struct img_result {
    int open_rc;  /* shmds__region_attach_mem */
    int check_rc; /* shmds_region_check, when open_rc == 0 */
    unsigned roots; /* directory entries seen */
} img_result;

/* Run the image in `buf` (64-aligned, `len` bytes) in place: attach with
 * `flags` (0, or SHMDS_RDONLY: then nothing in `buf` is written, and the
 * caller may map it read-only), bound every wait by `bound_ms` (0: never
 * wait), then the whole-region check, the region's and the arenas' views,
 * and every object in the directory (see the top). What the fuzzer calls:
 * no copy, no allocation of the image. */
img_result img_run(void *buf, size_t len, unsigned flags, uint32_t bound_ms);
/* The same on a region already attached (e.g. by shmds__region_attach_fd);
 * closes it. open_rc is 0. */
img_result img_run_region(shmds_region *r, uint32_t bound_ms);

/* Copy `len` bytes into aligned memory of their own and exercise them. */
img_result img_exercise(const void *data, size_t len);
/* The same through a read-only attach: what the `shmds` tool's views
 * (ls, info, dump, stat, check) call, with no lock taken. */
img_result img_exercise_readonly(const void *data, size_t len);

#endif
