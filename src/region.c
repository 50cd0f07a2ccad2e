/*
 * Regions: the shared-memory object, its header and the directory of named
 * roots.
 *
 * Layer: the region, at the bottom with lock.c and util.c. It calls no
 * layer above (the allocator formats and maps its heap on first use; the
 * object layer's types are only a range of tags here, SHMDS__TYPE_OBJ_LAST),
 * with two exceptions: a growth hands its new space to the allocator
 * through one entry point (shmds__alloc_extend; see "Growth" below), and
 * the directory's blocks are allocator blocks (see "Directory" below).
 *
 * Create: shm_open(O_CREAT|O_EXCL), fchmod to the requested mode (so the
 * umask has no say), ftruncate, posix_fallocate (a full tmpfs fails now, not
 * with SIGBUS later), then the maximum size is reserved as address space
 * and the object mapped at its start (map_reserved). The header is filled in, its checksum computed,
 * and the magic number stored last with release order: an opener that sees
 * the magic sees a complete header. An opener that finds the object empty or
 * the magic still zero waits up to OPEN_WAIT_MS for the creator, then gives
 * up with -EAGAIN.
 *
 * Open: fstat before touching the mapping (an object shorter than the header,
 * or than the size the header claims, would SIGBUS), then magic, format
 * version, ABI stamp and checksum, each with its own error. The bounds the
 * rest of the library trusts (initial and maximum size, heap start) are
 * copied into the process-local handle once validated, so a later stray
 * write to the shared header cannot widen them; the published current size
 * is read again whenever the handle follows growth, and checked against
 * the maximum and the object's real size before anything is mapped.
 *
 * Directory: a hash table of chains. A name's bucket is its FNV-1a hash
 * modulo SHMDS__DIR_BUCKETS; the header holds each bucket's head, and a
 * chain is a list of blocks allocated from the heap, the k-th holding
 * 2^k entries (64 from the 7th on). There is no limit but the heap: a
 * bucket whose entries are all taken gets one more block, allocated
 * zeroed straight into the chain's last link (the allocator's commit
 * links it in: after a crash the block is linked and empty, or free);
 * a chain's last block, once empty, is freed the same way, the link
 * cleared by the free's commit. Entries never move, so an entry's `off`
 * field can be an allocator slot (below), and only last blocks go.
 * Writers hold the directory's robust mutex and wrap each change in a
 * sequence lock (`dir_seq` odd while changing); an entry is published by
 * storing its type last, and freed by clearing its type first, so every
 * entry is always either free or complete. Readers take no lock: they walk
 * one bucket under the sequence lock and retry, which is what lets a
 * read-only mapping look roots up; every link is read once and checked,
 * and a walk cannot run forever (struct dir_walk), whatever the bytes. A
 * writer that dies mid-change leaves `dir_seq` odd; the repair clears the
 * names of free entries, recounts and makes it even again; a block it
 * was linking or freeing is the allocator's to settle, which every change
 * of a chain does first. shmds_region_reclaim trims what is left empty.
 *
 * Pending entries. A structure's create and destroy do not set and delete
 * a name around their allocations (a crash between the two would leak the
 * blocks); they go through a *pending* entry: `owner_pid` nonzero means "being
 * created or destroyed by that process". A pending entry keeps its name
 * taken but is invisible to every lookup (root_get, foreach, typed opens see
 * it as absent), and its `off` field is the allocator slot of the object's
 * header block (shmds__alloc_into / shmds__free_from write it as part of the
 * allocator's commit). So at every instant the object's blocks are reachable
 * from the directory: create reserves, allocates into the entry, fills the
 * header and publishes (owner_pid = 0, one store: the commit point); destroy
 * unpublishes (owner_pid = self), frees, and drops the entry once its `off`
 * is back to 0. An entry whose owner is dead is an orphan; check.c reclaims
 * it (object.c, shmds_region_reclaim). owner_pid is stored before the type when an entry
 * is taken, so the repair's rule is unchanged: every entry is free or
 * complete (complete includes pending).
 */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* How long open() waits for a creator that has not finished. */
#define OPEN_WAIT_MS 2000

/* ---------------------------------------------------------------------------
 * Names, ABI stamp, checksum
 * ------------------------------------------------------------------------ */

static int name_check(const char *name)
{
    if (name == NULL || name[0] != '/')
        return -EINVAL;
    size_t n = strnlen(name, SHMDS_NAME_MAX + 1);
    if (n < 2 || n > SHMDS_NAME_MAX)
        return -EINVAL;
    if (strchr(name + 1, '/') != NULL)
        return -EINVAL;
    if (strcmp(name, "/.") == 0 || strcmp(name, "/..") == 0)
        return -EINVAL;
    return 0;
}

static int root_name_check(const char *name)
{
    if (name == NULL)
        return -EINVAL;
    size_t n = strnlen(name, SHMDS_ROOT_NAME_MAX + 1);
    return (n == 0 || n > SHMDS_ROOT_NAME_MAX) ? -EINVAL : 0;
}

/* Everything a process's build must agree on to share a region's bytes. */
static uint64_t abi_stamp(void)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    const uint64_t endian = 2;
#else
    const uint64_t endian = 1;
#endif
    return (uint64_t)sizeof(void *) | (uint64_t)sizeof(pthread_mutex_t) << 8 |
           (uint64_t)sizeof(sem_t) << 16 | (uint64_t)sizeof(shmds_mutex) << 24 |
           (uint64_t)alignof(max_align_t) << 32 | (uint64_t)SHMDS__CACHE_LINE << 40 |
           endian << 48 | (uint64_t)alignof(uint64_t) << 56;
}

static uint64_t header_checksum(const struct shmds__hdr *h)
{
    return shmds__fnv1a(SHMDS__FNV_INIT, h, offsetof(struct shmds__hdr, checksum));
}

/* ---------------------------------------------------------------------------
 * Create, open, close, unlink
 * ------------------------------------------------------------------------ */

/* A handle on a validated header at `base`: `map_len` bytes mapped, of
 * `limit` reserved (the header's maximum, or an image's length). */
static shmds_region *handle_new(unsigned char *base, uint64_t map_len, uint64_t limit, int fd,
                                unsigned flags)
{
    shmds_region *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    if (pthread_mutex_init(&r->follow_lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    if (pthread_mutex_init(&r->guard_mu, NULL) != 0) {
        pthread_mutex_destroy(&r->follow_lock);
        free(r);
        return NULL;
    }
    r->rt_err = SHMDS_ECORRUPT; /* no reader table until open finds one */
    struct shmds__hdr *h = (struct shmds__hdr *)base;
    r->base = base;
    r->size = map_len;
    r->init_size = h->size;
    r->max_size = h->max_size;
    r->heap_off = h->heap_off;
    r->heap_end = map_len;
    r->heap_max = limit;
    /* Clamped: a header may claim anything up to INT32_MAX ms. */
    uint32_t bound = h->lock_timeout_ms;
    r->lock_timeout_ms = bound < SHMDS_LOCK_TIMEOUT_MAX_MS ? bound : SHMDS_LOCK_TIMEOUT_MAX_MS;
    r->flags = flags;
    r->fd = fd;
    r->hdr = h;
    return r;
}

/* ---------------------------------------------------------------------------
 * Creation lock
 *
 * A creator holds a write lock (an open-file-description lock, F_OFD_SETLK)
 * on the whole object from just after shm_open until the magic is
 * published. The kernel drops the lock when the creator's file is closed,
 * which includes its death, so "magic still 0 and nobody holds the creation
 * lock" means the creation was abandoned, with no pid to be reused and no
 * clock to trust. Whoever holds the lock of an unpublished object owns it:
 * the creator, or a later create that took the lock of an abandoned one
 * and replaces it. A creator that finds its object unlinked once it holds
 * the lock lost it to such a replacement (its shm_open and its lock were
 * microseconds apart, and the replacer saw no lock in between).
 * ------------------------------------------------------------------------ */

static int creation_lock(int fd, short type, int cmd)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0};
    if (fcntl(fd, cmd, &fl) != 0)
        return -errno;
    return cmd == F_OFD_GETLK ? (fl.l_type == F_UNLCK ? 0 : -EAGAIN) : 0;
}

/* Open `name` without blocking and without following a link, and insist on
 * a regular file (a FIFO put in /dev/shm by anyone must not hang an open).
 * O_NONBLOCK is cleared again once the type is known. */
static int shm_open_regular(const char *name, int oflag, struct stat *st)
{
    int fd = shm_open(name, oflag | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC, 0);
    if (fd < 0)
        return errno == ELOOP ? SHMDS_EFORMAT : -errno;
    int rc = fstat(fd, st) != 0 ? -errno : S_ISREG(st->st_mode) ? 0 : SHMDS_EFORMAT;
    if (rc == 0) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
            rc = -errno;
    }
    if (rc != 0) {
        close(fd);
        return rc;
    }
    return fd;
}

/* True when the object behind fd was never published and no creator holds
 * its creation lock: its creator died (or failed without cleaning up). */
static bool creation_abandoned(int fd)
{
    uint64_t magic = 0;
    ssize_t n = pread(fd, &magic, sizeof magic, 0);
    if (n < 0 || (n == (ssize_t)sizeof magic && magic != 0))
        return false;
    return creation_lock(fd, F_WRLCK, F_OFD_GETLK) == 0;
}

/* Create found `name` taken: when it is an abandoned creation, take its
 * creation lock and remove the name, so that create can try again. 0 when
 * removed; -EEXIST when it is a region or a creation still under way. */
static int replace_abandoned(const char *name)
{
    struct stat st;
    int fd = shm_open_regular(name, O_RDWR, &st);
    if (fd < 0)
        return fd == -ENOENT ? 0 : -EEXIST;
    int rc = -EEXIST;
    if (st.st_uid == geteuid() && creation_lock(fd, F_WRLCK, F_OFD_SETLK) == 0) {
        uint64_t magic = 0;
        ssize_t n = pread(fd, &magic, sizeof magic, 0);
        /* Holding the lock: nobody can publish it or remove it now
         * (but by hand, which the nlink test narrows). */
        if (fstat(fd, &st) == 0 && st.st_nlink > 0 && n >= 0 &&
            (n < (ssize_t)sizeof magic || magic == 0))
            rc = shm_unlink(name) == 0 || errno == ENOENT ? 0 : -EEXIST;
    }
    close(fd); /* drops the lock */
    return rc;
}

/* Reserve `max` bytes of address space (no access, no memory committed)
 * and map the object's first `len` bytes at its start: the base every
 * later growth extends in place. MAP_FAILED and errno on failure. */
static void *map_reserved(int fd, int prot, uint64_t max, uint64_t len)
{
    void *base = mmap(NULL, max, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        return MAP_FAILED;
    if (mmap(base, len, prot, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        int e = errno;
        munmap(base, max);
        errno = e;
        return MAP_FAILED;
    }
    return base;
}

/* The maximum a region of `size` bytes gets when its creator names none:
 * SHMDS_DEFAULT_MAX_FACTOR times the size, at most SHMDS_DEFAULT_MAX_CAP
 * and at most a quarter of the process's address-space limit (RLIMIT_AS)
 * when it has one, never below the size itself. */
static uint64_t default_max(uint64_t size, uint64_t page)
{
    uint64_t m = size <= SHMDS_DEFAULT_MAX_CAP / SHMDS_DEFAULT_MAX_FACTOR
                     ? size * SHMDS_DEFAULT_MAX_FACTOR
                     : SHMDS_DEFAULT_MAX_CAP;
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && m > rl.rlim_cur / 4)
        m = rl.rlim_cur / 4;
    m = m / page * page;
    return m > size ? m : size;
}

SHMDS_API int shmds_region_create(const char *name, size_t size, const shmds_region_opts *opts,
                                  shmds_region **out)
{
    int rc = name_check(name);
    if (rc != 0 || out == NULL)
        return -EINVAL;
    mode_t mode = (opts != NULL && opts->mode != 0) ? opts->mode : 0600;
    if ((mode & ~(mode_t)0777) != 0)
        return -EINVAL;
    uint32_t timeout = (opts != NULL && opts->lock_timeout_ms != 0) ? opts->lock_timeout_ms
                                                                    : SHMDS_DEFAULT_LOCK_TIMEOUT_MS;
    if (timeout > SHMDS_LOCK_TIMEOUT_MAX_MS)
        return -EINVAL;
    if (size < SHMDS_REGION_MIN_SIZE)
        return -EINVAL;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    if (size > (size_t)INT64_MAX - page)
        return -EFBIG;
    size = (size + page - 1) / page * page;
    uint64_t max;
    if (opts != NULL && opts->max_size != 0) {
        if (opts->max_size > SHMDS_REGION_MAX_SIZE)
            return -EFBIG;
        max = ((uint64_t)opts->max_size + page - 1) / page * page;
        if (max < size)
            return -EINVAL;
    } else {
        max = default_max(size, page);
    }

    int oflag = O_CREAT | O_EXCL | O_RDWR | O_NOFOLLOW | O_CLOEXEC;
    int fd = shm_open(name, oflag, 0600);
    if (fd < 0 && errno == EEXIST) {
        if ((rc = replace_abandoned(name)) != 0)
            return rc;
        fd = shm_open(name, oflag, 0600);
    }
    if (fd < 0)
        return -errno;
    struct stat st;
    if (creation_lock(fd, F_WRLCK, F_OFD_SETLK) != 0 || fstat(fd, &st) != 0 || st.st_nlink == 0) {
        close(fd); /* replaced as abandoned before the lock was taken */
        return -EEXIST;
    }
    SHMDS_FAULT("region.create.after_open");
    void *base = MAP_FAILED;
    if (fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)size) != 0) {
        rc = -errno;
        goto fail;
    }
    /* The format words first, so that `shmds ls` can tell a half-created
     * region from someone else's object. */
    const uint32_t stamp[2] = {SHMDS_FORMAT_VERSION, SHMDS_HEADER_SIZE};
    if (pwrite(fd, stamp, sizeof stamp, offsetof(struct shmds__hdr, format)) != (ssize_t)sizeof stamp) {
        rc = -EIO;
        goto fail;
    }
    SHMDS_FAULT("region.create.after_truncate");
    rc = posix_fallocate(fd, 0, (off_t)size);
    if (rc != 0) {
        rc = -rc;
        goto fail;
    }
    base = map_reserved(fd, PROT_READ | PROT_WRITE, max, size);
    if (base == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    /* The object is fresh from ftruncate, so every byte is already zero. */
    struct shmds__hdr *h = base;
    h->format = SHMDS_FORMAT_VERSION;
    h->hdr_size = SHMDS_HEADER_SIZE;
    h->abi = abi_stamp();
    h->size = size;
    h->heap_off = SHMDS_HEADER_SIZE;
    h->max_size = max;
    h->cur_size = size;
    h->created_ns = shmds__unix_now_ns();
    h->creator_pid = (uint32_t)getpid();
    h->creator_uid = (uint32_t)geteuid();
    h->lock_timeout_ms = timeout;
    h->dir_buckets = SHMDS__DIR_BUCKETS;
    if ((rc = shmds_mutex_init(&h->dir_lock)) != 0 || (rc = shmds_mutex_init(&h->alloc_lock)) != 0 ||
        (rc = shmds_mutex_init(&h->grow_lock)) != 0 || (rc = shmds_mutex_init(&h->retire_lock)) != 0)
        goto fail;
    h->gepoch = 1;
    /* The reader table before the magic: an opener that sees the region
     * finds its table. */
    struct shmds__rtab *rt = NULL;
    if ((rc = shmds__rtab_create(h, name, (unsigned)mode, &rt)) != 0)
        goto fail;
    /* The checksum covers the magic, which must not appear in the shared
     * header before everything else is there: compute it on a copy. */
    struct shmds__hdr copy;
    memcpy(&copy, h, offsetof(struct shmds__hdr, checksum));
    copy.magic = SHMDS__MAGIC;
    h->checksum = header_checksum(&copy);
    SHMDS_FAULT("region.create.before_publish");
    __atomic_store_n(&h->magic, SHMDS__MAGIC, __ATOMIC_RELEASE);
    creation_lock(fd, F_UNLCK, F_OFD_SETLK);

    shmds_region *r = handle_new(base, size, max, fd, 0);
    if (r == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    r->rt = rt;
    r->rt_err = 0;
    *out = r;
    return 0;

fail:
    if (base != MAP_FAILED)
        munmap(base, max);
    close(fd);
    shm_unlink(name);
    shmds__rtab_unlink(name);
    return rc;
}

/* Validate a mapped header against the object's real size. */
static int header_validate(const struct shmds__hdr *h, uint64_t obj_size)
{
    uint64_t magic = __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE);
    if (magic == __builtin_bswap64(SHMDS__MAGIC))
        return SHMDS_EABI;
    if (magic != SHMDS__MAGIC)
        return SHMDS_EFORMAT;
    if (h->format != SHMDS_FORMAT_VERSION)
        return SHMDS_EFORMAT;
    if (h->abi != abi_stamp())
        return SHMDS_EABI;
    if (h->checksum != header_checksum(h))
        return SHMDS_ECORRUPT;
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    if (h->hdr_size != SHMDS_HEADER_SIZE || h->size < SHMDS_REGION_MIN_SIZE ||
        h->size > obj_size || h->heap_off != SHMDS_HEADER_SIZE || h->max_size < h->size ||
        h->max_size > SHMDS_REGION_MAX_SIZE || h->max_size % page != 0 ||
        h->dir_buckets != SHMDS__DIR_BUCKETS || h->lock_timeout_ms == 0 ||
        h->lock_timeout_ms > INT32_MAX)
        return SHMDS_ECORRUPT;
    return 0;
}

/* The size a validated header publishes (cur_size), checked against the
 * object's real size: what a process maps at attach. */
static int published_size(const struct shmds__hdr *h, uint64_t obj_size, uint64_t *out)
{
    uint64_t cur = __atomic_load_n(&h->cur_size, __ATOMIC_ACQUIRE);
    if (cur < h->size || cur > h->max_size || cur > obj_size ||
        cur % (uint64_t)sysconf(_SC_PAGESIZE) != 0)
        return SHMDS_ECORRUPT;
    *out = cur;
    return 0;
}

/* shmds_region_open once the object is open: `fd` is the handle's (closed
 * on failure). `name` finds the reader table; NULL (an object attached by
 * descriptor, which has no name): a reader table in process memory, as for
 * an image attached from memory. */
static int open_fd(int fd, const char *name, unsigned flags, shmds_region **out)
{
    bool ro = (flags & SHMDS_RDONLY) != 0;
    struct stat st;
    int rc;
    void *base = MAP_FAILED;
    size_t len = 0;
    uint64_t deadline = shmds__now_ns() + (uint64_t)OPEN_WAIT_MS * 1000000u;
    for (;;) {
        if (fstat(fd, &st) != 0) {
            rc = -errno;
            goto fail;
        }
        if ((flags & SHMDS_SAME_UID) && st.st_uid != geteuid()) {
            rc = -EPERM;
            goto fail;
        }
        /* A zero-sized object is one whose creator has not sized it yet. */
        if (st.st_size != 0) {
            if ((uint64_t)st.st_size < SHMDS_HEADER_SIZE) {
                rc = SHMDS_ECORRUPT;
                goto fail;
            }
            len = (size_t)st.st_size;
            base = mmap(NULL, len, ro ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
            if (base == MAP_FAILED) {
                rc = -errno;
                goto fail;
            }
            if (__atomic_load_n(&((struct shmds__hdr *)base)->magic, __ATOMIC_ACQUIRE) != 0)
                break;
            /* Sized but the magic is not published yet: creator at work. */
            munmap(base, len);
            base = MAP_FAILED;
        }
        if (creation_abandoned(fd)) {
            rc = -ENOENT; /* a create will replace it */
            goto fail;
        }
        if (shmds__now_ns() >= deadline) {
            rc = -EAGAIN;
            goto fail;
        }
        shmds__nap_1ms();
    }

    rc = header_validate(base, (uint64_t)st.st_size);
    if (rc != 0)
        goto fail;
    /* Now the real mapping: the maximum reserved, the current size mapped
     * at its start (what the first look mapped goes). */
    const struct shmds__hdr *h = base;
    uint64_t max = h->max_size, cur;
    /* A grower lengthens the object before it publishes the new size, so a
     * size published after our fstat can exceed what fstat saw: look at the
     * object again (each retry means another growth, bounded by max_size;
     * a published size the object never reaches stays SHMDS_ECORRUPT). */
    while ((rc = published_size(h, (uint64_t)st.st_size, &cur)) != 0) {
        uint64_t seen = (uint64_t)st.st_size;
        if (fstat(fd, &st) != 0) {
            rc = -errno;
            goto fail;
        }
        if ((uint64_t)st.st_size <= seen || shmds__now_ns() >= deadline)
            goto fail;
    }
    void *rbase = map_reserved(fd, ro ? PROT_READ : PROT_READ | PROT_WRITE, max, cur);
    if (rbase == MAP_FAILED) {
        rc = -errno;
        goto fail;
    }
    munmap(base, len);
    base = MAP_FAILED;
    shmds_region *r = handle_new(rbase, cur, max, fd, flags);
    if (r == NULL) {
        munmap(rbase, max);
        rc = -ENOMEM;
        goto fail;
    }
    /* A missing or damaged reader table is an error of guards only: the
     * region stays usable by tools and writers (which then free nothing
     * they retire). */
    if (name != NULL)
        r->rt_err = shmds__rtab_open(r->hdr, name, &r->rt);
    else if ((r->rt_err = shmds__rtab_private(r->hdr, &r->rt)) == 0)
        r->rt_private = true;
    *out = r;
    return 0;

fail:
    if (base != MAP_FAILED)
        munmap(base, len);
    close(fd);
    return rc;
}

SHMDS_API int shmds_region_open(const char *name, unsigned flags, shmds_region **out)
{
    if (name_check(name) != 0 || out == NULL || (flags & ~(unsigned)(SHMDS_RDONLY | SHMDS_SAME_UID)))
        return -EINVAL;
    struct stat st;
    int fd = shm_open_regular(name, (flags & SHMDS_RDONLY) ? O_RDONLY : O_RDWR, &st);
    if (fd < 0)
        return fd;
    return open_fd(fd, name, flags, out);
}

int shmds__region_attach_fd(int fd, unsigned flags, shmds_region **out)
{
    if (fd < 0 || out == NULL || (flags & ~(unsigned)SHMDS_RDONLY) != 0)
        return -EINVAL;
    int own = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (own < 0)
        return -errno;
    return open_fd(own, NULL, flags, out);
}

/* Attach to a region image that already sits in this process's memory
 * (fuzzing and hostile-image tests: no shm object, no mapping). The image is
 * validated exactly as shmds_region_open validates a mapped object of `len`
 * bytes; the handle does not own the memory, and shmds_region_close only
 * frees the handle. */
int shmds__region_attach_mem(void *base, size_t len, unsigned flags, shmds_region **out)
{
    if (base == NULL || out == NULL || ((uintptr_t)base & (SHMDS__CACHE_LINE - 1)) != 0 ||
        (flags & ~(unsigned)SHMDS_RDONLY) != 0)
        return -EINVAL;
    if (len < SHMDS_HEADER_SIZE)
        return SHMDS_ECORRUPT;
    int rc = header_validate(base, (uint64_t)len);
    uint64_t cur;
    if (rc == 0)
        rc = published_size(base, (uint64_t)len, &cur);
    if (rc != 0)
        return rc;
    /* Nothing to grow into: the image is all there is. */
    shmds_region *r = handle_new(base, len, len, -1, flags);
    if (r == NULL)
        return -ENOMEM;
    if ((r->rt_err = shmds__rtab_private(r->hdr, &r->rt)) == 0)
        r->rt_private = true;
    *out = r;
    return 0;
}

SHMDS_API int shmds_region_close(shmds_region *r)
{
    if (r == NULL)
        return -EINVAL;
    if (shmds__locks_held_in(r->base, r->size))
        return -EBUSY;
    shmds__alloc_close(r);
    shmds__guard_close(r);
    if (r->fd >= 0) { /* -1: attached from memory the caller owns */
        munmap(r->base, r->heap_max);
        close(r->fd);
    }
    pthread_mutex_destroy(&r->guard_mu);
    pthread_mutex_destroy(&r->follow_lock);
    free(r);
    return 0;
}

SHMDS_API int shmds_region_unlink(const char *name)
{
    if (name_check(name) != 0)
        return -EINVAL;
    int rc = shm_unlink(name) == 0 ? 0 : -errno;
    shmds__rtab_unlink(name); /* its reader table, when it has one */
    return rc;
}

SHMDS_API void *shmds_region_base(const shmds_region *r)
{
    return r != NULL ? r->base : NULL;
}

SHMDS_API size_t shmds_region_size(const shmds_region *r)
{
    if (r == NULL)
        return 0;
    uint64_t cur = __atomic_load_n(&r->hdr->cur_size, __ATOMIC_ACQUIRE);
    if (cur > r->max_size)
        cur = r->max_size;
    /* Map what others have grown it to (process-local: the handle's
     * mapping only), so that shmds_ptr() may follow any offset below. */
    if (cur > __atomic_load_n(&r->size, __ATOMIC_ACQUIRE))
        shmds__region_follow((shmds_region *)(uintptr_t)r, cur);
    return (size_t)__atomic_load_n(&r->size, __ATOMIC_ACQUIRE);
}

SHMDS_API size_t shmds_region_max_size(const shmds_region *r)
{
    return r != NULL ? (size_t)r->max_size : 0;
}

SHMDS_API int shmds_region_readonly(const shmds_region *r)
{
    if (r == NULL)
        return -EINVAL;
    return shmds__rdonly(r) ? 1 : 0;
}

int shmds__writable(const shmds_region *r)
{
    return shmds__rdonly(r) ? SHMDS_ERDONLY : 0;
}

int shmds__lock_within(shmds_region *r, shmds_mutex *m, int max_ms, shmds_repair_fn *repair,
                       void *arg)
{
    uint32_t bound = r->lock_timeout_ms;
    if (max_ms >= 0 && (uint32_t)max_ms < bound)
        bound = (uint32_t)max_ms;
    int rc = shmds__mutex_lock_bounded(m, bound, repair, arg);
    if (rc == SHMDS_RECOVERED)
        __atomic_add_fetch(&r->hdr->epoch, 1, __ATOMIC_RELAXED);
    return rc;
}

int shmds__lock(shmds_region *r, shmds_mutex *m, shmds_repair_fn *repair, void *arg)
{
    return shmds__lock_within(r, m, -1, repair, arg);
}

int shmds__lock_try(shmds_region *r, shmds_mutex *m, shmds_repair_fn *repair, void *arg)
{
    int rc = shmds__mutex_trylock(m, repair, arg);
    if (rc == SHMDS_RECOVERED)
        __atomic_add_fetch(&r->hdr->epoch, 1, __ATOMIC_RELAXED);
    return rc;
}

int shmds__seq_wait(shmds_region *r, struct shmds__wait *w, const uint64_t *word, shmds_mutex *m,
                    shmds_repair_fn *repair, void *arg)
{
    if (shmds__wait_spin(w))
        return 0;
    if (m != NULL && !shmds__rdonly(r)) {
        int rc = shmds__lock(r, m, repair, arg);
        if (rc < 0)
            return rc;
        rc = 0;
        if (__atomic_load_n(word, __ATOMIC_RELAXED) & 1)
            rc = repair(arg);
        shmds_mutex_unlock(m);
        if (rc != 0)
            return rc < 0 ? rc : SHMDS_ECORRUPT;
    }
    return shmds__wait_nap(w, r->lock_timeout_ms);
}

/* ---------------------------------------------------------------------------
 * Directory (see the top of the file)
 * ------------------------------------------------------------------------ */

static uint64_t blk_bytes(uint32_t cap)
{
    return sizeof(struct shmds__dir_blk) + (uint64_t)cap * sizeof(struct shmds__root);
}

/* A walk along one bucket's chain. Each link is read once, checked
 * (inside the heap, room for the block its place in the chain gives it)
 * and then followed. A damaged or hostile chain cannot hang it: a cycle
 * meets a saved offset again (Brent's method: the saved offset moves to
 * the walk's position after 1, 2, 4, ... steps), and the blocks walked may
 * not add up to more than the heap, so a chain that does not cycle ends
 * too (after at most heap / 64 entries). */
struct dir_walk {
    shmds_region *r;
    uint64_t *link;    /* the link to follow next: a bucket head or b->next */
    struct shmds__dir_blk *b; /* the current block; NULL before the first */
    uint64_t k;        /* its place in the chain */
    uint32_t cap;      /* its entries */
    uint64_t saved, steps, power, bytes;
};

static void walk_start(shmds_region *r, uint32_t bucket, struct dir_walk *w)
{
    memset(w, 0, sizeof *w);
    w->r = r;
    w->link = &r->hdr->dir_heads[bucket];
    w->power = 1;
}

/* Step to the next block: 1; 0 at the end of the chain (w->link is then
 * the chain's last link); SHMDS_ECORRUPT. */
static int walk_next(struct dir_walk *w)
{
    uint64_t off = __atomic_load_n(w->link, __ATOMIC_ACQUIRE);
    if (off == SHMDS_NULL)
        return 0;
    uint64_t k = w->b == NULL ? 0 : w->k + 1;
    uint32_t cap = shmds__dir_blk_cap(k);
    struct shmds__dir_blk *b = shmds__ptr_chk(w->r, off, blk_bytes(cap), 16);
    /* Blocks of a sound chain do not overlap: together they fit in the
     * heap this process maps (which the check just extended to `off`). */
    w->bytes += blk_bytes(cap);
    if (b == NULL || off == w->saved ||
        w->bytes > __atomic_load_n(&w->r->heap_end, __ATOMIC_RELAXED) - w->r->heap_off)
        return SHMDS_ECORRUPT;
    if (++w->steps == w->power) {
        w->saved = off;
        w->power *= 2;
        w->steps = 0;
    }
    w->b = b;
    w->k = k;
    w->cap = cap;
    w->link = &b->next;
    return 1;
}

/* An entry that names something, pending or not. */
static bool slot_taken(const struct shmds__root *e)
{
    return e->type != 0;
}

/* An entry that lookups see: taken and not pending. */
static bool slot_visible(const struct shmds__root *e)
{
    return e->type != 0 && e->owner_pid == 0;
}

/* Copy an entry once; the copy's name is terminated (a damaged one is
 * cut, and the checks see it by its length). */
static void entry_copy(struct shmds__root *c, const struct shmds__root *e)
{
    memcpy(c, (const void *)e, sizeof *c);
    c->name[SHMDS_ROOT_NAME_MAX] = '\0';
}

/* The offset lookups report: for the library's own structures the entry
 * holds the start of the header's block (the allocator slot, see the top of
 * the file), and the object is the 64-byte aligned header inside it. */
static shmds_off_t entry_off(const struct shmds__root *e)
{
    return shmds__type_is_object(e->type) ? shmds__hdr_of(e->off) : e->off;
}

/* What a name's bucket holds for it: the entry taken by the name (and a
 * copy of it, read once), the first free entry, and the walk, which ends
 * at the chain's last link when the name is not there. */
struct dir_find {
    struct shmds__root *hit;
    struct shmds__root copy;
    struct shmds__root *free_e;
    struct dir_walk w;
};

/* Look `name` (valid) up in its bucket. Under the directory lock, or by a
 * lock-free reader whose sequence then confirms the copy. Cost: the
 * entries of one bucket. 0 (hit or not) or SHMDS_ECORRUPT. */
static int bucket_find(shmds_region *r, const char *name, struct dir_find *f)
{
    f->hit = f->free_e = NULL;
    walk_start(r, shmds__dir_bucket(name), &f->w);
    int rc;
    while ((rc = walk_next(&f->w)) == 1) {
        for (uint32_t i = 0; i < f->w.cap; i++) {
            struct shmds__root *e = &f->w.b->e[i];
            struct shmds__root c;
            entry_copy(&c, e);
            if (!slot_taken(&c)) {
                if (f->free_e == NULL)
                    f->free_e = e;
            } else if (strncmp(c.name, name, sizeof c.name) == 0) {
                f->hit = e;
                f->copy = c;
                return 0;
            }
        }
    }
    return rc;
}

/* Count what the chains hold: entries taken and entries in all. Under the
 * directory lock (or on a lock-free reader's consistent pass). */
static int dir_count(shmds_region *r, uint64_t *names, uint64_t *slots)
{
    *names = *slots = 0;
    for (uint32_t bk = 0; bk < SHMDS__DIR_BUCKETS; bk++) {
        struct dir_walk w;
        walk_start(r, bk, &w);
        int rc;
        while ((rc = walk_next(&w)) == 1) {
            *slots += w.cap;
            for (uint32_t i = 0; i < w.cap; i++)
                *names += __atomic_load_n(&w.b->e[i].type, __ATOMIC_RELAXED) != 0;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Repair after a writer died holding the directory lock. Every entry is
 * free or complete (see the top of the file): scrub free entries,
 * recount, close the sequence. A block the dead writer was linking in or
 * out is the allocator's to settle (its commit is the link): settled
 * first, so that the count sees the chains as they stay. Idempotent. */
static int dir_repair(void *arg)
{
    shmds_region *r = arg;
    struct shmds__hdr *h = r->hdr;
    /* Should the allocator's lock stay held past the bound, the counts may
     * miss a block; shmds_region_check then says so. */
    (void)shmds__alloc_settle(r);
    for (uint32_t bk = 0; bk < SHMDS__DIR_BUCKETS; bk++) {
        struct dir_walk w;
        walk_start(r, bk, &w);
        while (walk_next(&w) == 1)
            for (uint32_t i = 0; i < w.cap; i++) {
                struct shmds__root *e = &w.b->e[i];
                if (__atomic_load_n(&e->type, __ATOMIC_RELAXED) == 0) {
                    memset(e->name, 0, sizeof e->name);
                    e->owner_pid = 0;
                    e->off = 0;
                }
            }
    }
    uint64_t names, slots;
    if (dir_count(r, &names, &slots) == 0 && slots <= UINT32_MAX) {
        h->dir_names = (uint32_t)names;
        h->dir_slots = (uint32_t)slots;
    }
    /* A damaged chain stays for shmds_region_check to report. */
    shmds__seq_write_end(&h->dir_seq);
    return 0;
}

static int dir_lock(shmds_region *r)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    rc = shmds__lock(r, &r->hdr->dir_lock, dir_repair, r);
    return rc == SHMDS_RECOVERED ? 0 : rc;
}

static void dir_unlock(shmds_region *r)
{
    shmds_mutex_unlock(&r->hdr->dir_lock);
}

/* One lock-free reader's wait for the directory's writer. */
static int dir_wait(shmds_region *r, struct shmds__wait *w)
{
    struct shmds__hdr *h = r->hdr;
    /* A stale odd word (a damaged or restored image) is closed as the
     * repair would, rather than waited for. */
    return shmds__seq_wait(r, w, &h->dir_seq, &h->dir_lock, dir_repair, r);
}

/* Look `name` (valid) up without a lock, any handle: a copy of the entry
 * taken by it (pending or not). 0, -ENOENT, SHMDS_ECORRUPT, -ETIMEDOUT (a
 * writer stayed mid-change past the bound: it died, and a read-only
 * handle cannot repair). Cost: one bucket, again when a writer overlaps. */
static int dir_get(shmds_region *r, const char *name, struct shmds__root *out)
{
    struct shmds__hdr *h = r->hdr;
    struct shmds__wait w = {0};
    /* No fstat here (it would cost a lookup four times over): after a
     * truncation a lookup gets SIGBUS like the heap's other readers
     * (region.h, "Truncation"); shmds_root_foreach checks. */
    int rc;
    for (;;) {
        uint64_t s = shmds__seq_read_begin(&h->dir_seq);
        if ((s & 1) == 0) {
            struct dir_find f;
            rc = bucket_find(r, name, &f);
            if (shmds__seq_read_ok(&h->dir_seq, s)) {
                if (rc == 0 && f.hit == NULL)
                    rc = -ENOENT;
                if (rc == 0)
                    *out = f.copy;
                return rc;
            }
        }
        if ((rc = dir_wait(r, &w)) != 0)
            return rc;
    }
}

/* Walk the chain `w` (started on a bucket) to a free entry, adding a block
 * at its end when every entry is taken. The allocator is settled first: a
 * dead writer's block may be in flight in any arena, and its commit is
 * the link. The new block is allocated zeroed straight into the chain's
 * last link, so the allocator's commit links it in: a crash leaves it
 * linked (a block of free entries, trimmed again by the next
 * shmds_region_reclaim if no name comes to it) or still free. Under the
 * directory lock, the sequence odd. */
static int dir_extend(shmds_region *r, struct dir_walk *w, struct shmds__root **e)
{
    int rc = shmds__alloc_settle(r);
    if (rc != 0)
        return rc;
    struct shmds__hdr *h = r->hdr;
    for (;;) {
        while ((rc = walk_next(w)) == 1)
            for (uint32_t i = 0; i < w->cap; i++)
                if (__atomic_load_n(&w->b->e[i].type, __ATOMIC_RELAXED) == 0) {
                    *e = &w->b->e[i];
                    return 0;
                }
        if (rc != 0)
            return rc;
        uint32_t cap = shmds__dir_blk_cap(w->b == NULL ? 0 : w->k + 1);
        if (h->dir_slots > UINT32_MAX - cap)
            return -ENOMEM;
        SHMDS_FAULT("region.dir_grow.before_link");
        /* -EINVAL: the link is not where a slot may be (a damaged chain). */
        if ((rc = shmds__alloc_zeroed_into(r, blk_bytes(cap), w->link)) != 0)
            return rc == -EINVAL ? SHMDS_ECORRUPT : rc;
        SHMDS_FAULT("region.dir_grow.linked");
        h->dir_slots += cap;
    }
}

/* Free the blocks at the end of `bucket`'s chain that hold no entry,
 * each by one allocator commit that clears the link to it (the block is
 * gone and unlinked at once, or neither). Entries never move, so only a
 * chain's last block can go. Under the directory lock, the sequence odd
 * (a reader inside a freed block retries). */
static int dir_trim(shmds_region *r, uint32_t bucket)
{
    int rc = shmds__alloc_settle(r);
    struct shmds__hdr *h = r->hdr;
    while (rc == 0) {
        struct dir_walk w;
        walk_start(r, bucket, &w);
        uint64_t *last = NULL; /* the link to the last block */
        bool empty = false;
        for (;;) {
            uint64_t *link = w.link;
            if ((rc = walk_next(&w)) != 1)
                break;
            last = link;
            empty = true;
            for (uint32_t i = 0; i < w.cap && empty; i++)
                empty = __atomic_load_n(&w.b->e[i].type, __ATOMIC_RELAXED) == 0;
        }
        if (rc != 0 || !empty)
            return rc;
        SHMDS_FAULT("region.dir_trim.before_free");
        if ((rc = shmds__free_from(r, last)) == 0)
            h->dir_slots = h->dir_slots >= w.cap ? h->dir_slots - w.cap : 0;
        else if (rc == -EINVAL)
            rc = SHMDS_ECORRUPT; /* no block there, or a link no slot may be */
    }
    return rc;
}

/* Take a free entry for `name` (not taken, pending or not) with the given
 * owner and offset, the type stored last. -EEXIST (*out: the entry that
 * holds the name), the allocator's errors when a block must be added.
 * Under the directory lock. */
static int dir_take(shmds_region *r, const char *name, uint32_t type, uint32_t owner,
                    shmds_off_t off, struct shmds__root **out)
{
    struct shmds__hdr *h = r->hdr;
    struct dir_find f;
    int rc = bucket_find(r, name, &f);
    if (rc != 0)
        return rc;
    if (f.hit != NULL) {
        *out = f.hit;
        return -EEXIST;
    }
    shmds__seq_write_begin(&h->dir_seq);
    struct shmds__root *e = f.free_e;
    if (e == NULL) {
        walk_start(r, shmds__dir_bucket(name), &f.w);
        rc = dir_extend(r, &f.w, &e);
    }
    if (rc == 0) {
        memset(e->name, 0, sizeof e->name);
        memcpy(e->name, name, strlen(name));
        e->owner_pid = owner;
        e->off = off;
        h->dir_names++;
        SHMDS_FAULT("region.root_set.before_publish");
        __atomic_store_n(&e->type, type, __ATOMIC_RELEASE);
    }
    shmds__seq_write_end(&h->dir_seq);
    *out = e;
    return rc;
}

/* Free the taken entry `e` of `bucket` (for shmds_root_del, `del`, or a
 * pending entry's drop) and trim the chain. Under the directory lock. */
static void dir_free(shmds_region *r, uint32_t bucket, struct shmds__root *e, bool del)
{
    struct shmds__hdr *h = r->hdr;
    shmds__seq_write_begin(&h->dir_seq);
    __atomic_store_n(&e->type, 0, __ATOMIC_RELEASE);
    if (del)
        SHMDS_FAULT("region.root_del.after_unpublish");
    else
        SHMDS_FAULT("region.root_drop.after_free");
    memset(e->name, 0, sizeof e->name);
    e->owner_pid = 0;
    e->off = 0;
    if (h->dir_names > 0)
        h->dir_names--;
    /* Housekeeping only: what a failed trim leaves, shmds_region_reclaim
     * trims (and a damaged chain, shmds_region_check reports). */
    (void)dir_trim(r, bucket);
    shmds__seq_write_end(&h->dir_seq);
}

SHMDS_API int shmds_root_set(shmds_region *r, const char *name, uint32_t type, shmds_off_t off)
{
    if (r == NULL || root_name_check(name) != 0 || type == 0 || off == SHMDS_NULL ||
        off >= shmds_region_size(r))
        return -EINVAL;
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    struct shmds__root *e;
    rc = dir_take(r, name, type, 0, off, &e);
    dir_unlock(r);
    return rc;
}

SHMDS_API int shmds_root_get(shmds_region *r, const char *name, uint32_t *type, shmds_off_t *off)
{
    if (r == NULL || root_name_check(name) != 0)
        return -EINVAL;
    struct shmds__root c;
    int rc = dir_get(r, name, &c);
    if (rc != 0)
        return rc;
    if (!slot_visible(&c))
        return -ENOENT;
    if (type != NULL)
        *type = c.type;
    if (off != NULL)
        *off = entry_off(&c);
    /* A root another process put in space grown since this process last
     * looked: map it, so that shmds_ptr() on it is safe. */
    if (entry_off(&c) >= __atomic_load_n(&r->size, __ATOMIC_ACQUIRE))
        shmds_region_size(r);
    return 0;
}

SHMDS_API int shmds_root_del(shmds_region *r, const char *name)
{
    if (r == NULL || root_name_check(name) != 0)
        return -EINVAL;
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    struct dir_find f;
    if ((rc = bucket_find(r, name, &f)) == 0) {
        if (f.hit == NULL || !slot_visible(&f.copy))
            rc = -ENOENT;
        else
            dir_free(r, shmds__dir_bucket(name), f.hit, true);
    }
    dir_unlock(r);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Pending entries (see the top of the file)
 * ------------------------------------------------------------------------ */

static uint32_t self_pid(void)
{
    return (uint32_t)getpid();
}

int shmds__root_reserve(shmds_region *r, const char *name, uint32_t type, shmds_off_t **slot)
{
    if (root_name_check(name) != 0 || type == 0)
        return -EINVAL;
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    struct shmds__root *e;
    rc = dir_take(r, name, type, self_pid(), 0, &e);
    if (rc == -EEXIST) {
        uint32_t owner = __atomic_load_n(&e->owner_pid, __ATOMIC_RELAXED);
        if (owner != 0 && shmds__proc_gone(owner))
            rc = -EAGAIN;
    }
    if (rc == 0)
        *slot = &e->off;
    dir_unlock(r);
    return rc;
}

/* Lock the directory and find this process's pending entry whose off
 * field is `slot` (handed out by reserve, unpublish or take_orphan),
 * holding a block (`filled`) or none. 0 with the lock held; -EINVAL,
 * SHMDS_ECORRUPT, lock errors without it. */
static int own_pending(shmds_region *r, shmds_off_t *slot, bool filled, struct shmds__root **out)
{
    const unsigned char *p = (const unsigned char *)slot;
    if (slot == NULL || p < r->base + r->heap_off + offsetof(struct shmds__root, off) ||
        p >= r->base + __atomic_load_n(&r->size, __ATOMIC_ACQUIRE))
        return -EINVAL;
    struct shmds__root *e =
        (struct shmds__root *)(void *)((unsigned char *)slot - offsetof(struct shmds__root, off));
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    if (e->type == 0 || e->owner_pid != self_pid() || (e->off != 0) != filled) {
        dir_unlock(r);
        return SHMDS_ECORRUPT;
    }
    *out = e;
    return 0;
}

int shmds__root_publish(shmds_region *r, shmds_off_t *slot)
{
    struct shmds__root *e;
    int rc = own_pending(r, slot, true, &e);
    if (rc != 0)
        return rc;
    struct shmds__hdr *h = r->hdr;
    shmds__seq_write_begin(&h->dir_seq);
    __atomic_store_n(&e->owner_pid, 0, __ATOMIC_RELEASE);
    shmds__seq_write_end(&h->dir_seq);
    dir_unlock(r);
    return 0;
}

/* The visible entry `name` naming the object of `type` whose header is
 * `off`, found under the directory lock: NULL when there is none. */
static int dir_find_object(shmds_region *r, const char *name, uint32_t type, shmds_off_t off,
                           struct shmds__root **out)
{
    struct dir_find f;
    int rc = root_name_check(name) != 0 ? -ENOENT : bucket_find(r, name, &f);
    if (rc == 0 && (f.hit == NULL || !slot_visible(&f.copy) || f.copy.type != type ||
                    entry_off(&f.copy) != off))
        rc = -ENOENT;
    if (rc == 0)
        *out = f.hit;
    return rc;
}

int shmds__root_unpublish(shmds_region *r, const char *name, uint32_t type, shmds_off_t off,
                          shmds_off_t **slot)
{
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    struct shmds__root *e;
    if ((rc = dir_find_object(r, name, type, off, &e)) == 0) {
        struct shmds__hdr *h = r->hdr;
        shmds__seq_write_begin(&h->dir_seq);
        __atomic_store_n(&e->owner_pid, self_pid(), __ATOMIC_RELEASE);
        shmds__seq_write_end(&h->dir_seq);
        *slot = &e->off;
    }
    dir_unlock(r);
    return rc;
}

int shmds__root_drop(shmds_region *r, shmds_off_t *slot)
{
    struct shmds__root *e;
    int rc = own_pending(r, slot, false, &e);
    if (rc != 0)
        return rc;
    char name[SHMDS_ROOT_NAME_MAX + 1];
    memcpy(name, e->name, sizeof name);
    name[SHMDS_ROOT_NAME_MAX] = '\0';
    if (root_name_check(name) != 0)
        rc = SHMDS_ECORRUPT;
    else
        dir_free(r, shmds__dir_bucket(name), e, false);
    dir_unlock(r);
    return rc;
}

/* The first pending entry of a dead owner in `bucket`, named `name` (NULL:
 * any) of type `of_type` (0: any), and its type as read. Under the
 * directory lock. */
static int orphan_in(shmds_region *r, uint32_t bucket, const char *name, uint32_t of_type,
                     struct shmds__root **out, uint32_t *type)
{
    struct dir_walk w;
    walk_start(r, bucket, &w);
    int rc;
    while ((rc = walk_next(&w)) == 1)
        for (uint32_t i = 0; i < w.cap; i++) {
            struct shmds__root c;
            entry_copy(&c, &w.b->e[i]);
            /* Only the object layer leaves entries pending: another
             * tag's is damage for shmds_region_check, not an orphan. */
            if (!shmds__type_is_object(c.type) || c.owner_pid == 0 ||
                (of_type != 0 && c.type != of_type) ||
                (name != NULL && strncmp(c.name, name, sizeof c.name) != 0) ||
                !shmds__proc_gone(c.owner_pid))
                continue;
            *out = &w.b->e[i];
            *type = c.type;
            return 0;
        }
    return rc != 0 ? rc : -ENOENT;
}

int shmds__root_take_orphan(shmds_region *r, const char *name, uint32_t of_type, uint32_t *type,
                            shmds_off_t **slot)
{
    if (name != NULL && root_name_check(name) != 0)
        return -EINVAL;
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    struct shmds__hdr *h = r->hdr;
    struct shmds__root *e = NULL;
    rc = -ENOENT;
    if (name != NULL)
        rc = orphan_in(r, shmds__dir_bucket(name), name, of_type, &e, type);
    for (uint32_t bk = 0; name == NULL && bk < SHMDS__DIR_BUCKETS && rc == -ENOENT; bk++)
        rc = orphan_in(r, bk, NULL, of_type, &e, type);
    if (rc == 0) {
        shmds__seq_write_begin(&h->dir_seq);
        __atomic_store_n(&e->owner_pid, self_pid(), __ATOMIC_RELEASE);
        shmds__seq_write_end(&h->dir_seq);
        *slot = &e->off;
    }
    dir_unlock(r);
    return rc;
}

int shmds__root_trim(shmds_region *r)
{
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    struct shmds__hdr *h = r->hdr;
    shmds__seq_write_begin(&h->dir_seq);
    for (uint32_t bk = 0; bk < SHMDS__DIR_BUCKETS && rc == 0; bk++)
        rc = dir_trim(r, bk);
    shmds__seq_write_end(&h->dir_seq);
    dir_unlock(r);
    return rc;
}

/* A growable copy of one bucket's visible entries. */
struct dir_copy {
    struct shmds__root *e;
    size_t n, cap;
};

/* Copy the visible entries of `bucket` consistently, without a lock. */
static int bucket_copy(shmds_region *r, uint32_t bucket, struct dir_copy *out)
{
    struct shmds__hdr *h = r->hdr;
    struct shmds__wait wt = {0};
    for (;;) {
        uint64_t s = shmds__seq_read_begin(&h->dir_seq);
        if ((s & 1) == 0) {
            struct dir_walk w;
            walk_start(r, bucket, &w);
            int rc;
            out->n = 0;
            while ((rc = walk_next(&w)) == 1)
                for (uint32_t i = 0; i < w.cap; i++) {
                    if (out->n == out->cap) {
                        size_t ncap = out->cap != 0 ? 2 * out->cap : 64;
                        void *p = realloc(out->e, ncap * sizeof *out->e);
                        if (p == NULL)
                            return -ENOMEM;
                        out->e = p;
                        out->cap = ncap;
                    }
                    entry_copy(&out->e[out->n], &w.b->e[i]);
                    out->n += slot_visible(&out->e[out->n]);
                }
            if (shmds__seq_read_ok(&h->dir_seq, s))
                return rc;
        }
        int rc = dir_wait(r, &wt);
        if (rc != 0)
            return rc;
    }
}

SHMDS_API int shmds_root_foreach(shmds_region *r, shmds_root_foreach_fn *fn, void *arg)
{
    if (r == NULL || fn == NULL)
        return -EINVAL;
    struct dir_copy c = {0};
    int rc = shmds__region_intact(r);
    for (uint32_t bk = 0; bk < SHMDS__DIR_BUCKETS && rc == 0; bk++) {
        if ((rc = bucket_copy(r, bk, &c)) != 0)
            break;
        for (size_t i = 0; i < c.n && rc == 0; i++)
            rc = fn(c.e[i].name, c.e[i].type, entry_off(&c.e[i]), arg);
    }
    free(c.e);
    return rc;
}

int shmds__root_published(shmds_region *r, const char *name, uint32_t type, shmds_off_t off)
{
    struct shmds__root c;
    int rc = root_name_check(name) != 0 ? -ENOENT : dir_get(r, name, &c);
    if (rc == 0 && (!slot_visible(&c) || c.type != type || entry_off(&c) != off))
        rc = -ENOENT;
    return rc;
}

int shmds__root_hold(shmds_region *r, const char *name, uint32_t type, shmds_off_t off)
{
    int rc = dir_lock(r);
    if (rc != 0)
        return rc;
    struct shmds__root *e;
    if ((rc = dir_find_object(r, name, type, off, &e)) != 0)
        dir_unlock(r);
    return rc;
}

void shmds__root_release(shmds_region *r)
{
    dir_unlock(r);
}

int shmds__root_find_typed(shmds_region *r, const char *name, uint32_t type, shmds_off_t *off)
{
    uint32_t t;
    shmds_off_t o;
    int rc = shmds_root_get(r, name, &t, &o);
    if (rc != 0)
        return rc;
    if (t != type)
        return SHMDS_ETYPE;
    if (!shmds__off_ok(r, o, 1, 8))
        return SHMDS_ECORRUPT;
    *off = o;
    return 0;
}

/* Check the directory: every chain (blocks live in the heap, their links
 * sound, no cycle), every taken entry (a name of 1..SHMDS_ROOT_NAME_MAX
 * bytes in its own bucket, once; an offset in the heap, but for a pending
 * entry still empty) and the counts in the header. Under the directory
 * lock, or on a lock-free reader's pass (then SHMDS_ECORRUPT counts only
 * once the sequence confirms it). */
static int dir_check_pass(shmds_region *r, struct dir_copy *c)
{
    uint64_t names = 0, slots = 0;
    for (uint32_t bk = 0; bk < SHMDS__DIR_BUCKETS; bk++) {
        struct dir_walk w;
        walk_start(r, bk, &w);
        int rc;
        c->n = 0;
        while ((rc = walk_next(&w)) == 1) {
            uint64_t usable;
            shmds_off_t boff = (shmds_off_t)((unsigned char *)w.b - r->base);
            if (shmds__alloc_block_live(r, boff, &usable) != 0 || usable < blk_bytes(w.cap))
                return SHMDS_ECORRUPT;
            slots += w.cap;
            for (uint32_t i = 0; i < w.cap; i++) {
                struct shmds__root e;
                memcpy(&e, &w.b->e[i], sizeof e);
                if (e.type == 0)
                    continue;
                size_t n = strnlen(e.name, sizeof e.name);
                bool pending = e.owner_pid != 0; /* its off may still be 0 */
                /* Only the object layer's creates and destroys leave
                 * entries pending. */
                if (n == 0 || n > SHMDS_ROOT_NAME_MAX || shmds__dir_bucket(e.name) != bk ||
                    (pending && !shmds__type_is_object(e.type)) ||
                    (!(pending && e.off == 0) && !shmds__off_ok(r, e.off, 1, 8)))
                    return SHMDS_ECORRUPT;
                for (size_t j = 0; j < c->n; j++)
                    if (strcmp(c->e[j].name, e.name) == 0)
                        return SHMDS_ECORRUPT;
                if (c->n == c->cap) {
                    size_t ncap = c->cap != 0 ? 2 * c->cap : 64;
                    void *p = realloc(c->e, ncap * sizeof *c->e);
                    if (p == NULL)
                        return -ENOMEM;
                    c->e = p;
                    c->cap = ncap;
                }
                c->e[c->n++] = e;
                names++;
            }
        }
        if (rc != 0)
            return rc;
    }
    const struct shmds__hdr *h = r->hdr;
    if (names != __atomic_load_n(&h->dir_names, __ATOMIC_RELAXED) ||
        slots != __atomic_load_n(&h->dir_slots, __ATOMIC_RELAXED))
        return SHMDS_ECORRUPT;
    return 0;
}

static int dir_check(shmds_region *r)
{
    struct dir_copy c = {0};
    int rc;
    if (!shmds__rdonly(r)) {
        if ((rc = dir_lock(r)) == 0) {
            rc = dir_check_pass(r, &c);
            dir_unlock(r);
        }
    } else {
        struct shmds__hdr *h = r->hdr;
        struct shmds__wait w = {0};
        for (;;) {
            uint64_t s = shmds__seq_read_begin(&h->dir_seq);
            if ((s & 1) == 0) {
                rc = dir_check_pass(r, &c);
                if (shmds__seq_read_ok(&h->dir_seq, s))
                    break;
            }
            if ((rc = dir_wait(r, &w)) != 0)
                break;
        }
    }
    free(c.e);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Information and checks
 * ------------------------------------------------------------------------ */

SHMDS_API int shmds_region_set_lock_timeout(shmds_region *r, uint32_t ms)
{
    if (r == NULL || ms > SHMDS_LOCK_TIMEOUT_MAX_MS)
        return -EINVAL;
    r->lock_timeout_ms = ms;
    return 0;
}

SHMDS_API int shmds_region_info_get(const shmds_region *r, shmds_region_info *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    const struct shmds__hdr *h = r->hdr;
    memset(out, 0, sizeof *out);
    uint64_t cur = __atomic_load_n(&h->cur_size, __ATOMIC_ACQUIRE);
    if (cur > r->max_size)
        cur = r->max_size; /* damaged; shmds_region_check says so */
    out->size = cur;
    out->max_size = r->max_size;
    out->initial_size = r->init_size;
    out->mapped_size = __atomic_load_n(&r->size, __ATOMIC_ACQUIRE);
    out->map_calls = __atomic_load_n(&r->map_calls, __ATOMIC_RELAXED);
    out->heap_offset = r->heap_off;
    out->heap_size = cur - r->heap_off;
    out->format_version = h->format;
    out->lock_timeout_ms = r->lock_timeout_ms;
    out->created_unix_ns = h->created_ns;
    out->creator_pid = (pid_t)h->creator_pid;
    out->creator_uid = (uid_t)h->creator_uid;
    out->epoch = __atomic_load_n(&h->epoch, __ATOMIC_RELAXED);
    /* The counts the directory's writers keep (clamped: the header is
     * shared memory; shmds_region_check compares them with the chains). */
    out->roots_max = __atomic_load_n(&h->dir_slots, __ATOMIC_RELAXED);
    out->roots = __atomic_load_n(&h->dir_names, __ATOMIC_RELAXED);
    if (out->roots > out->roots_max)
        out->roots = out->roots_max;
    return 0;
}

SHMDS_API int shmds_region_lock_info(const shmds_region *r, int which, shmds_mutex_info *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    switch (which) {
    case SHMDS_LOCK_DIRECTORY:
        return shmds_mutex_info_get(&r->hdr->dir_lock, out);
    case SHMDS_LOCK_ALLOCATOR:
        return shmds_mutex_info_get(&r->hdr->alloc_lock, out);
    case SHMDS_LOCK_GROW:
        return shmds_mutex_info_get(&r->hdr->grow_lock, out);
    default:
        return -EINVAL;
    }
}

/* SHMDS_ECORRUPT when the object was made shorter than this process's
 * mapping (any access past the new end would raise SIGBUS); called before
 * the walks that read the whole heap. An attachment from memory is whole. */
int shmds__region_intact(const shmds_region *r)
{
    struct stat st;
    if (r->fd < 0)
        return 0;
    if (fstat(r->fd, &st) != 0)
        return -errno;
    return (uint64_t)st.st_size < __atomic_load_n(&r->size, __ATOMIC_ACQUIRE) ? SHMDS_ECORRUPT : 0;
}

/* ---------------------------------------------------------------------------
 * Growth (see shmds_region_grow in region.h)
 *
 * Every process reserved the region's maximum at attach and maps the
 * object's first r->size bytes at the start of it. A grower, under the
 * grow lock: (1) records its target in grow_to; (2) makes the object that
 * long (ftruncate) and backs the new part (posix_fallocate: a full tmpfs is
 * -ENOSPC now, never a SIGBUS later), rolling both back when that fails;
 * (3) maps it; (4) publishes the size (cur_size, release), after which any
 * process may map it; (5) hands the new part to the allocator, one logged,
 * idempotent commit (shmds__alloc_extend); (6) clears grow_to. Every step
 * can be done again, so whoever takes the grow lock next (a growth, or
 * shmds_region_check) finishes a dead grower's target before anything else.
 * Other processes extend their mapping when an offset check meets an
 * offset past it (shmds__off_ok_slow) or the allocator sees its heap end
 * moved: one mmap(MAP_FIXED) over their reservation, never a move.
 * ------------------------------------------------------------------------ */

static uint64_t page_size(void)
{
    return (uint64_t)sysconf(_SC_PAGESIZE);
}

/* Map the object up to `n` bytes (page multiple, at most the maximum and
 * the object's size). Under follow_lock. */
static int map_upto(shmds_region *r, uint64_t n)
{
    uint64_t have = r->size;
    if (n <= have)
        return 0;
    struct stat st;
    if (r->fd < 0 || n > r->max_size || n % page_size() != 0)
        return SHMDS_ECORRUPT;
    if (fstat(r->fd, &st) != 0)
        return -errno;
    if ((uint64_t)st.st_size < n)
        return SHMDS_ECORRUPT;
    int prot = shmds__rdonly(r) ? PROT_READ : PROT_READ | PROT_WRITE;
    if (mmap(r->base + have, n - have, prot, MAP_SHARED | MAP_FIXED, r->fd, (off_t)have) ==
        MAP_FAILED)
        return -errno;
    __atomic_add_fetch(&r->map_calls, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&r->size, n, __ATOMIC_RELEASE);
    __atomic_store_n(&r->heap_end, n, __ATOMIC_RELEASE);
    return 0;
}

static int map_upto_locked(shmds_region *r, uint64_t n)
{
    pthread_mutex_lock(&r->follow_lock);
    int rc = map_upto(r, n);
    pthread_mutex_unlock(&r->follow_lock);
    return rc;
}

int shmds__region_follow(shmds_region *r, uint64_t need)
{
    if (need <= __atomic_load_n(&r->size, __ATOMIC_ACQUIRE))
        return 0;
    if (r->fd < 0 || need > r->max_size)
        return SHMDS_ECORRUPT;
    uint64_t cur = __atomic_load_n(&r->hdr->cur_size, __ATOMIC_ACQUIRE);
    if (cur > r->max_size)
        cur = r->max_size;
    cur -= cur % page_size();
    if (cur < need)
        return SHMDS_ECORRUPT;
    return map_upto_locked(r, cur);
}

bool shmds__off_ok_slow(const shmds_region *r, shmds_off_t off, uint64_t len, uint64_t align)
{
    if (off < r->heap_off || len > r->heap_max || off > r->heap_max - len)
        return false;
    /* The handle is process-local: following growth changes only how much
     * of the reservation is mapped, never what any byte means. */
    if (shmds__region_follow((shmds_region *)(uintptr_t)r, off + len) != 0)
        return false;
    return (off & (align - 1)) == 0;
}

/* The published size, checked: SHMDS_ECORRUPT when no growth could have
 * set it. */
static int cur_size_get(const shmds_region *r, uint64_t *out)
{
    uint64_t cur = __atomic_load_n(&r->hdr->cur_size, __ATOMIC_ACQUIRE);
    if (cur < r->init_size || cur > r->max_size || cur % page_size() != 0)
        return SHMDS_ECORRUPT;
    *out = cur;
    return 0;
}

/* Steps 2 to 6 towards `t` (grow_to holds it). Under the grow lock. */
static int grow_steps(shmds_region *r, uint64_t t)
{
    struct shmds__hdr *h = r->hdr;
    uint64_t cur;
    int rc = cur_size_get(r, &cur);
    if (rc != 0)
        return rc;
    if (cur < t) {
        struct stat st;
        if (fstat(r->fd, &st) != 0)
            return -errno;
        if ((uint64_t)st.st_size < t && ftruncate(r->fd, (off_t)t) != 0) {
            rc = -errno;
        } else {
            SHMDS_FAULT("region.grow.truncated");
            rc = -posix_fallocate(r->fd, (off_t)cur, (off_t)(t - cur));
        }
        if (rc != 0) {
            /* Nothing past cur_size was published: give it back. */
            if (ftruncate(r->fd, (off_t)cur) != 0)
                rc = rc != 0 ? rc : -errno;
            __atomic_store_n(&h->grow_to, 0, __ATOMIC_RELEASE);
            return rc;
        }
        SHMDS_FAULT("region.grow.allocated");
    }
    if ((rc = map_upto_locked(r, t)) != 0)
        return rc;
    if (cur < t) {
        __atomic_store_n(&h->cur_size, t, __ATOMIC_RELEASE);
        SHMDS_FAULT("region.grow.published");
    }
    if ((rc = shmds__alloc_extend(r, t)) != 0)
        return rc;
    SHMDS_FAULT("region.grow.extended");
    __atomic_store_n(&h->grow_to, 0, __ATOMIC_RELEASE);
    return 0;
}

/* Finish what a dead grower left: its target, from step 2 on. Under the
 * grow lock. */
static int grow_finish(shmds_region *r)
{
    uint64_t t = __atomic_load_n(&r->hdr->grow_to, __ATOMIC_ACQUIRE);
    if (t == 0)
        return 0;
    if (t < r->init_size || t > r->max_size || t % page_size() != 0)
        return SHMDS_ECORRUPT;
    return grow_steps(r, t);
}

/* The grow lock's repair: nothing to do under the mutex's own repair, as
 * every taker of the lock finishes a pending growth (grow_finish) first. */
static int grow_repair(void *arg)
{
    (void)arg;
    return 0;
}

/* Take the grow lock and finish a dead grower's growth: 0 with the lock
 * held, or an error without it. */
static int grow_lock(shmds_region *r)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    if (r->fd < 0)
        return -ENOMEM; /* an image in memory cannot grow */
    rc = shmds__lock(r, &r->hdr->grow_lock, grow_repair, r);
    if (rc < 0)
        return rc;
    if ((rc = grow_finish(r)) != 0) {
        shmds_mutex_unlock(&r->hdr->grow_lock);
        return rc;
    }
    return 0;
}

/* Grow to `t` (a page multiple within the maximum, above the current
 * size). Under the grow lock. */
static int grow_to(shmds_region *r, uint64_t t)
{
    __atomic_store_n(&r->hdr->grow_to, t, __ATOMIC_RELEASE);
    SHMDS_FAULT("region.grow.intent");
    return grow_steps(r, t);
}

int shmds__region_grow_by(shmds_region *r, uint64_t want, uint64_t seen)
{
    int rc = grow_lock(r);
    if (rc != 0)
        return rc;
    uint64_t cur;
    if ((rc = cur_size_get(r, &cur)) == 0 && shmds__alloc_heap_end(r) != cur)
        rc = SHMDS_ECORRUPT; /* no growth pending, yet the heap ends elsewhere */
    if (rc == 0 && cur <= seen) {
        uint64_t page = page_size();
        uint64_t t = want > cur ? cur + want : 2 * cur;
        t = t > r->max_size - page ? r->max_size : (t + page - 1) / page * page;
        rc = cur >= r->max_size ? -ENOMEM : grow_to(r, t);
    }
    shmds_mutex_unlock(&r->hdr->grow_lock);
    return rc;
}

int shmds__region_grow_settle(shmds_region *r)
{
    if (shmds__rdonly(r) || r->fd < 0)
        return 0;
    int rc = grow_lock(r);
    if (rc != 0)
        return rc;
    /* No growth pending: the heap ends where the region does. */
    uint64_t cur;
    if ((rc = cur_size_get(r, &cur)) == 0 && shmds__alloc_heap_end(r) != cur)
        rc = SHMDS_ECORRUPT;
    shmds_mutex_unlock(&r->hdr->grow_lock);
    return rc;
}

SHMDS_API int shmds_region_grow(shmds_region *r, size_t size)
{
    if (r == NULL)
        return -EINVAL;
    uint64_t page = page_size();
    if ((uint64_t)size > r->max_size)
        return -ENOMEM;
    uint64_t t = ((uint64_t)size + page - 1) / page * page;
    int rc = grow_lock(r);
    if (rc != 0)
        return rc;
    uint64_t cur;
    if ((rc = cur_size_get(r, &cur)) == 0 && t > cur)
        rc = grow_to(r, t);
    shmds_mutex_unlock(&r->hdr->grow_lock);
    return rc;
}

int shmds__region_check_header(shmds_region *r)
{
    uint64_t obj_size = __atomic_load_n(&r->size, __ATOMIC_ACQUIRE);
    if (r->fd >= 0) {
        struct stat st;
        if (fstat(r->fd, &st) != 0)
            return -errno;
        obj_size = (uint64_t)st.st_size;
    }
    /* The header may have been rewritten since open: check it again, and
     * check that it still agrees with the bounds this process trusts. */
    int rc = header_validate(r->hdr, obj_size);
    if (rc != 0)
        return rc;
    uint64_t cur = __atomic_load_n(&r->hdr->cur_size, __ATOMIC_ACQUIRE);
    if (r->hdr->size != r->init_size || r->hdr->max_size != r->max_size || cur < r->init_size ||
        cur > r->max_size || cur > obj_size || !shmds__mutex_ok(&r->hdr->dir_lock) ||
        !shmds__mutex_ok(&r->hdr->alloc_lock) || !shmds__mutex_ok(&r->hdr->grow_lock))
        return SHMDS_ECORRUPT;

    return dir_check(r);
}
