/* libFuzzer harness (configure --enable-fuzzing, CC=clang; `make fuzz`):
 * the fuzzer's bytes are a region image. image.c attaches to them from
 * memory (shmds__region_attach_mem) and runs the whole-region check and
 * every read operation; any crash, hang or sanitizer report is a bug.
 *
 * Two adjustments keep the fuzzer on the library's own code:
 *  - The header's checksum would stop almost every mutation at open, so
 *    when bit 0 of the header's last reserved byte is set the harness
 *    recomputes it: header fields past the checksum get explored too.
 *  - The pthread part of the header's two mutexes is re-initialised (their
 *    shmds `state` word is kept), so that most inputs get past the
 *    header's locks into the structures. When bit 1 of that byte is set,
 *    glibc's kind word is left as the fuzzer made it: every lock path
 *    checks it (lock.c) and must answer SHMDS_ECORRUPT, never reach an
 *    assertion in glibc. The structures' own locks and the queues'
 *    doorbell semaphores are never re-initialised.
 *
 * Each input is also run through a read-only attach (the `shmds` tool's
 * views: ls, info, dump, stat, check) before any repair: no lock, no
 * write, whatever the bytes. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "internal.h"

#define MAX_IMAGE (1u << 20)

/* Re-initialise the pthread part of a header mutex, keeping its shmds
 * `state` word and, when keep_kind, glibc's kind word as fuzzed (the word
 * every lock path checks; the lock and owner words are reset so that the
 * input does not cost a timed wait per lock). */
static void reinit_mutex(shmds_mutex *m, bool keep_kind)
{
    uint32_t state = m->state;
    int kind = m->mtx.__data.__kind;
    if (shmds_mutex_init(m) != 0)
        abort();
    m->state = state;
    if (keep_kind)
        m->mtx.__data.__kind = kind;
}

/* Bit 1 of the header's last reserved byte: keep the header's lock kind
 * words as fuzzed. */
static bool fuzz_lock_words(const uint8_t *img)
{
    return (img[SHMDS_HEADER_SIZE - 1] & 2) != 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_IMAGE)
        return 0;
    if (size < SHMDS_HEADER_SIZE) {
        (void)img_exercise_readonly(data, size);
        (void)img_exercise(data, size);
        return 0;
    }
    uint8_t *img = malloc(size);
    if (img == NULL)
        abort();
    memcpy(img, data, size);
    struct shmds__hdr *h = (struct shmds__hdr *)img;
    if (img[SHMDS_HEADER_SIZE - 1] & 1)
        h->checksum = shmds__fnv1a(SHMDS__FNV_INIT, h, offsetof(struct shmds__hdr, checksum));
    (void)img_exercise_readonly(img, size);
    reinit_mutex(&h->dir_lock, fuzz_lock_words(img));
    reinit_mutex(&h->alloc_lock, fuzz_lock_words(img));
    (void)img_exercise(img, size);
    free(img);
    return 0;
}
