/* libFuzzer harness (configure --enable-fuzzing, CC=clang; `make fuzz`):
 * the fuzzer's bytes are a region image. image.c attaches to them from
 * memory (shmds__region_attach_mem) and runs the whole-region check and
 * every read operation; any crash, hang or sanitizer report is a bug.
 *
 * Each input, in one buffer mapped once (no allocation, no system call
 * but two mprotect per input):
 *  1. read-only (the `shmds` tool's views: ls, info, dump, stat, check):
 *     attached with SHMDS_RDONLY while the buffer is mapped PROT_READ, as
 *     a read-only attach maps a real region, so any write is a crash here
 *     too; no lock, whatever the bytes. This pass also is the process
 *     that comes before any repair (a map's growth half published, a
 *     stripe mid-change).
 *  2. writable, in place, after the adjustments below: everything again
 *     with locks, repairs and the writes the read calls may make.
 *
 * Adjustments that keep the fuzzer on the library's own code, steered by
 * bits of the header's last reserved byte (IMG_CTL_* in image.h):
 *  - bit 0: recompute the header's checksum (else almost every mutation
 *    stops at open), so header fields past it get explored too.
 *  - The pthread part of the header's two mutexes is re-initialised (their
 *    shmds `state` word is kept), so that most inputs get past the
 *    header's locks into the structures. With bit 1, glibc's kind word is
 *    left as the fuzzer made it: every lock path checks it (lock.c) and
 *    must answer SHMDS_ECORRUPT, never reach an assertion in glibc. The
 *    structures' own locks and the queues' doorbell semaphores are never
 *    re-initialised.
 *  - bit 3: both passes attach through a file descriptor instead (a
 *    memfd made once, the image written into it): what
 *    shmds_region_open does once the object is open, the reserved
 *    maximum, following a size another process published, finishing a
 *    dead grower's growth (grow_to) and growing by a page. Files are
 *    capped at FILE_MAX (RLIMIT_FSIZE): a hostile maximum or growth
 *    target gets EFBIG, not the machine's memory.
 *  - Waits: nothing else runs, so a lock or a writer's sequence found busy
 *    stays busy; waiting for it only costs time. The bound is 0 (a short
 *    spin, then -EBUSY or -ETIMEDOUT at once) unless bit 2 is set: then
 *    1 ms, so that the timed lock and the nap-and-retry paths are reached
 *    too, by the inputs that set it. */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION(p, n)
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#endif
#endif
#ifndef POISON
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#include "image.h"
#include "internal.h"

#define MAX_IMAGE (1u << 20)
#define FILE_MAX (8u << 20)

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

/* The header's last reserved byte steers the harness (see the top). */
static uint8_t control(const uint8_t *img)
{
    return img[SHMDS_HEADER_SIZE - 1];
}

/* The one image buffer: mapped once, page-aligned (mprotect), bytes past
 * the input poisoned for ASan, as if the image ended there. */
static uint8_t *image;
static size_t unpoisoned; /* image[0, unpoisoned) is addressable */

static uint8_t *image_load(const uint8_t *data, size_t size)
{
    if (image == NULL) {
        void *p = mmap(NULL, MAX_IMAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            abort();
        image = p;
        POISON(image, MAX_IMAGE);
    }
    if (size < unpoisoned)
        POISON(image + size, unpoisoned - size);
    UNPOISON(image, size);
    unpoisoned = size;
    memcpy(image, data, size);
    return image;
}

/* Map the pages that hold the input's `size` bytes with `prot`. */
static void image_protect(size_t size, int prot)
{
    if (mprotect(image, size == 0 ? 1 : size, prot) != 0)
        abort();
}

/* The library's waits spin, then yield the CPU to the process that would
 * finish what they wait for. No such process runs here: a yield only
 * gives the CPU away (most of the harness's system time before this).
 * The one definition in the program, so the library's calls get it. */
int sched_yield(void)
{
    return 0;
}

/* The memfd of bit 3, made once. */
static int memfd = -1;

static void file_setup(void)
{
    struct rlimit rl = {FILE_MAX, FILE_MAX};
    if (setrlimit(RLIMIT_FSIZE, &rl) != 0 || signal(SIGXFSZ, SIG_IGN) == SIG_ERR)
        abort();
    memfd = memfd_create("shmds-fuzz", MFD_CLOEXEC);
    if (memfd < 0)
        abort();
}

/* Make the memfd hold the image (and nothing a previous input grew). */
static void file_write(const uint8_t *img, size_t size)
{
    if (memfd < 0)
        file_setup();
    if (ftruncate(memfd, 0) != 0 || pwrite(memfd, img, size, 0) != (ssize_t)size)
        abort();
}

/* One pass through the memfd. */
static void file_run(unsigned flags, uint32_t bound)
{
    shmds_region *r = NULL;
    if (shmds__region_attach_fd(memfd, flags, &r) == 0)
        (void)img_run_region(r, bound);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > MAX_IMAGE)
        return 0;
    uint8_t *img = image_load(data, size);
    uint8_t ctl = size < SHMDS_HEADER_SIZE ? 0 : control(img);
    uint32_t bound = (ctl & IMG_CTL_WAIT) ? 1 : 0;
    struct shmds__hdr *h = (struct shmds__hdr *)img;
    if (ctl & IMG_CTL_CHECKSUM)
        h->checksum = shmds__fnv1a(SHMDS__FNV_INIT, h, offsetof(struct shmds__hdr, checksum));
    if (ctl & IMG_CTL_FD) {
        file_write(img, size);
        file_run(SHMDS_RDONLY, bound);
    } else {
        image_protect(size, PROT_READ);
        (void)img_run(img, size, SHMDS_RDONLY, bound);
        image_protect(size, PROT_READ | PROT_WRITE);
    }
    if (size >= SHMDS_HEADER_SIZE) {
        reinit_mutex(&h->dir_lock, (ctl & IMG_CTL_LOCK_WORDS) != 0);
        reinit_mutex(&h->alloc_lock, (ctl & IMG_CTL_LOCK_WORDS) != 0);
    }
    if (ctl & IMG_CTL_FD) {
        /* Only the header changed since the read-only pass. */
        if (pwrite(memfd, img, SHMDS_HEADER_SIZE, 0) != SHMDS_HEADER_SIZE)
            abort();
        file_run(0, bound);
    } else {
        (void)img_run(img, size, 0, bound);
    }
    return 0;
}
