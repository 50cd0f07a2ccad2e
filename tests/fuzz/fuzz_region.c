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
 *    shmds `state` word is kept). glibc trusts a mutex's own bytes (a
 *    garbage kind word can reach an assert inside glibc); a process that
 *    may write the region can always break its locks that way, which is
 *    outside what shmds can check. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "internal.h"

#define MAX_IMAGE (1u << 20)

static void reinit_mutex(shmds_mutex *m)
{
    uint32_t state = m->state;
    if (shmds_mutex_init(m) != 0)
        abort();
    m->state = state;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_IMAGE)
        return 0;
    if (size < SHMDS_HEADER_SIZE) {
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
    reinit_mutex(&h->dir_lock);
    reinit_mutex(&h->alloc_lock);
    (void)img_exercise(img, size);
    free(img);
    return 0;
}
