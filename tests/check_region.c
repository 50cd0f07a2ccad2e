/* Regions: create/open across processes, the directory, and every way a
 * region can be bad (names, sizes, modes, damaged or truncated objects). */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h" /* header layout, to damage it on purpose */
#include "testutil.h"

#define SZ (256 * 1024)

static const char *last_name;

static shmds_region *make(void)
{
    last_name = tu_name("rg");
    shmds_region *r = NULL;
    int rc = shmds_region_create(last_name, SZ, NULL, &r);
    ck_assert_msg(rc == 0, "create: %s", shmds_errname(rc));
    return r;
}

static int open_rc(const char *name, unsigned flags)
{
    shmds_region *r = NULL;
    int rc = shmds_region_open(name, flags, &r);
    if (rc == 0)
        ck_assert_int_eq(shmds_region_close(r), 0);
    return rc;
}

/* Overwrite bytes of the object through /dev/shm, as a stray process would. */
static void poke(const char *name, off_t at, const void *bytes, size_t len)
{
    char path[300];
    snprintf(path, sizeof path, "/dev/shm%s", name);
    int fd = open(path, O_RDWR);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(pwrite(fd, bytes, len, at), (ssize_t)len);
    close(fd);
}

static int touch_elem(const void *d, size_t len, void *arg)
{
    (void)d, (void)len, (void)arg;
    return 0;
}

static int touch_entry(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    (void)k, (void)kl, (void)v, (void)vl, (void)arg;
    return 0;
}

static void truncate_object(const char *name, off_t len)
{
    int fd = shm_open(name, O_RDWR, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, len), 0);
    close(fd);
}

/* ---- core ---- */

START_TEST(test_region_create_reports_itself)
{
    shmds_region *r = make();
    ck_assert_uint_eq(shmds_region_size(r), SZ);
    ck_assert_ptr_nonnull(shmds_region_base(r));
    ck_assert_int_eq(shmds_region_readonly(r), 0);
    shmds_region_info info;
    ck_assert_int_eq(shmds_region_info_get(r, &info), 0);
    ck_assert_uint_eq(info.size, SZ);
    ck_assert_uint_eq(info.heap_offset, SHMDS_HEADER_SIZE);
    ck_assert_uint_eq(info.heap_size, SZ - SHMDS_HEADER_SIZE);
    ck_assert_uint_eq(info.format_version, SHMDS_FORMAT_VERSION);
    ck_assert_uint_eq(info.lock_timeout_ms, SHMDS_DEFAULT_LOCK_TIMEOUT_MS);
    ck_assert_int_eq(info.creator_pid, getpid());
    ck_assert_uint_eq(info.roots, 0);
    ck_assert_int_eq(memcmp(shmds_region_base(r), SHMDS_REGION_SIGNATURE, 8), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
    /* Size rounds up to whole pages. */
    ck_assert_int_eq(shmds_region_create(tu_name("odd"), SZ + 1, NULL, &r), 0);
    ck_assert_uint_eq(shmds_region_size(r), SZ + (size_t)sysconf(_SC_PAGESIZE));
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* Region sizes no system can map (from SIZE_MAX / 2 up: rounding up to a
 * page would wrap) are refused, and no object is left behind. Sizes near
 * UINT32_MAX are legal on 64 bits and not tried (they would be real). */
START_TEST(test_region_create_sizes_that_overflow_are_refused)
{
    for (size_t i = 0; i < TU_HUGE_SIZES; i++) {
        size_t n = tu_huge_sizes[i];
        if (n < SIZE_MAX / 2)
            continue;
        const char *name = tu_name("rg-huge");
        shmds_region *r = NULL;
        int rc = shmds_region_create(name, n, NULL, &r);
        ck_assert_msg(rc == -EFBIG || rc == -EINVAL, "size %zx: %s", n, shmds_errname(rc));
        ck_assert_ptr_null(r);
        ck_assert_int_eq(open_rc(name, 0), -ENOENT);
    }
}
END_TEST

START_TEST(test_region_two_mappings_share_data)
{
    shmds_region *a = make(), *b;
    ck_assert_int_eq(shmds_region_open(last_name, 0, &b), 0);
    ck_assert_ptr_ne(shmds_region_base(a), shmds_region_base(b));
    shmds_off_t off = SHMDS_HEADER_SIZE + 64;
    strcpy(shmds_ptr(a, off), "written through a");
    ck_assert_str_eq(shmds_ptr(b, off), "written through a");
    ck_assert_uint_eq(shmds_off(b, shmds_ptr(b, off)), off);
    ck_assert_ptr_null(shmds_ptr(a, SHMDS_NULL));
    ck_assert_uint_eq(shmds_off(a, NULL), SHMDS_NULL);
    ck_assert_int_eq(shmds_region_close(a), 0);
    ck_assert_int_eq(shmds_region_close(b), 0);
}
END_TEST

START_TEST(test_region_exec_peer_reads_at_other_address)
{
    shmds_region *r = make();
    shmds_off_t off;
    ck_assert_int_eq(shmds_alloc(r, 512, &off), 0); /* the peer writes at off + 256 */
    strcpy(shmds_ptr(r, off), "hello from the creator");
    ck_assert_int_eq(shmds_root_set(r, "greeting", SHMDS_TYPE_USER, off), 0);

    char cmd[1024];
    snprintf(cmd, sizeof cmd, "%s/tests/peer read %s greeting %p %zu", tu_builddir(), last_name,
             shmds_region_base(r), shmds_region_size(r));
    FILE *p = popen(cmd, "r");
    ck_assert_ptr_nonnull(p);
    char addr[64] = "", text[256] = "";
    ck_assert_ptr_nonnull(fgets(addr, sizeof addr, p));
    ck_assert_ptr_nonnull(fgets(text, sizeof text, p));
    int st = pclose(p);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);

    void *peer_base = (void *)(uintptr_t)strtoull(addr, NULL, 16);
    ck_assert_ptr_ne(peer_base, shmds_region_base(r)); /* really another address */
    ck_assert_str_eq(text, "hello from the creator\n");
    ck_assert_msg(strncmp((char *)shmds_ptr(r, off + 256), "pong from ", 10) == 0,
                  "peer's write not seen: '%s'", (char *)shmds_ptr(r, off + 256));
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

static int count_root(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    (void)name;
    (void)off;
    (void)type;
    ++*(int *)arg;
    return 0;
}

static int stop_at_two(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    (void)name;
    (void)off;
    (void)type;
    return ++*(int *)arg == 2 ? 77 : 0;
}

START_TEST(test_region_directory_set_get_del)
{
    shmds_region *r = make();
    shmds_off_t off = SHMDS_HEADER_SIZE + 4096;
    ck_assert_int_eq(shmds_root_set(r, "sessions", SHMDS_TYPE_USER + 1, off), 0);
    ck_assert_int_eq(shmds_root_set(r, "sessions", SHMDS_TYPE_USER + 1, off), -EEXIST);
    uint32_t type = 0;
    shmds_off_t got = 0;
    ck_assert_int_eq(shmds_root_get(r, "sessions", &type, &got), 0);
    ck_assert_uint_eq(type, SHMDS_TYPE_USER + 1);
    ck_assert_uint_eq(got, off);
    ck_assert_int_eq(shmds_root_get(r, "session", NULL, NULL), -ENOENT);

    /* Another handle (and so another process) sees it. */
    shmds_region *b;
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &b), 0);
    ck_assert_int_eq(shmds_root_get(b, "sessions", &type, &got), 0);
    ck_assert_uint_eq(got, off);

    int n = 0;
    ck_assert_int_eq(shmds_root_set(r, "other", SHMDS_TYPE_USER, off + 64), 0);
    ck_assert_int_eq(shmds_root_foreach(b, count_root, &n), 0);
    ck_assert_int_eq(n, 2);
    n = 0;
    ck_assert_int_eq(shmds_root_foreach(r, stop_at_two, &n), 77);

    ck_assert_int_eq(shmds_root_del(r, "sessions"), 0);
    ck_assert_int_eq(shmds_root_del(r, "sessions"), -ENOENT);
    ck_assert_int_eq(shmds_root_get(b, "sessions", NULL, NULL), -ENOENT);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(b), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* ---- limits and bad input ---- */

START_TEST(test_region_invalid_names)
{
    static const char *const bad[] = {"noslash", "/a/b", "/", "/.", "/..", "", "//x"};
    shmds_region *r;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_int_eq(shmds_region_create(bad[i], SZ, NULL, &r), -EINVAL);
        ck_assert_int_eq(shmds_region_open(bad[i], 0, &r), -EINVAL);
        ck_assert_int_eq(shmds_region_unlink(bad[i]), -EINVAL);
    }
    ck_assert_int_eq(shmds_region_create(NULL, SZ, NULL, &r), -EINVAL);
    ck_assert_int_eq(shmds_region_open(NULL, 0, &r), -EINVAL);
    char longname[SHMDS_NAME_MAX + 2];
    longname[0] = '/';
    memset(longname + 1, 'x', SHMDS_NAME_MAX);
    longname[SHMDS_NAME_MAX + 1] = '\0';
    ck_assert_int_eq(shmds_region_create(longname, SZ, NULL, &r), -EINVAL);
    ck_assert_int_eq(shmds_region_create(tu_name("x"), SZ, NULL, NULL), -EINVAL);
}
END_TEST

START_TEST(test_region_bad_sizes_modes_flags)
{
    shmds_region *r;
    const char *n = tu_name("sz");
    ck_assert_int_eq(shmds_region_create(n, SHMDS_REGION_MIN_SIZE - 1, NULL, &r), -EINVAL);
    ck_assert_int_eq(shmds_region_create(n, 0, NULL, &r), -EINVAL);
    ck_assert_int_eq(shmds_region_create(n, SIZE_MAX, NULL, &r), -EFBIG);
    shmds_region_opts o = {.mode = 04600};
    ck_assert_int_eq(shmds_region_create(n, SZ, &o, &r), -EINVAL);
    ck_assert_int_eq(shmds_region_open(n, 0, &r), -ENOENT); /* nothing was left behind */
    r = make();
    shmds_region *r2;
    ck_assert_int_eq(shmds_region_open(last_name, 0x80, &r2), -EINVAL);
    ck_assert_int_eq(shmds_region_unlink(tu_name("never")), -ENOENT);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_create_existing_is_eexist)
{
    shmds_region *r = make(), *r2;
    ck_assert_int_eq(shmds_region_create(last_name, SZ, NULL, &r2), -EEXIST);
    /* ... and the existing region was not harmed. */
    ck_assert_int_eq(open_rc(last_name, 0), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
    ck_assert_int_eq(shmds_region_unlink(last_name), 0);
    ck_assert_int_eq(open_rc(last_name, 0), -ENOENT);
}
END_TEST

static mode_t object_mode(const char *name)
{
    struct stat st;
    int fd = shm_open(name, O_RDONLY, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fstat(fd, &st), 0);
    close(fd);
    return st.st_mode & 07777;
}

START_TEST(test_region_mode_ignores_umask)
{
    shmds_region *r;
    umask(0);
    r = make();
    ck_assert_uint_eq(object_mode(last_name), 0600);
    shmds_region_close(r);
    umask(077);
    shmds_region_opts o = {.mode = 0640};
    const char *n = tu_name("mode");
    ck_assert_int_eq(shmds_region_create(n, SZ, &o, &r), 0);
    ck_assert_uint_eq(object_mode(n), 0640);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_full_tmpfs_is_enospc)
{
    struct statvfs vfs;
    ck_assert_int_eq(statvfs("/dev/shm", &vfs), 0);
    /* More than the whole of /dev/shm: posix_fallocate must refuse it. */
    size_t too_big = (size_t)vfs.f_blocks * vfs.f_frsize + ((size_t)1 << 30);
    const char *n = tu_name("big");
    shmds_region *r;
    ck_assert_int_eq(shmds_region_create(n, too_big, NULL, &r), -ENOSPC);
    ck_assert_int_eq(open_rc(n, 0), -ENOENT);
}
END_TEST

START_TEST(test_region_root_bad_input)
{
    shmds_region *r = make();
    shmds_off_t off = SHMDS_HEADER_SIZE;
    char name[SHMDS_ROOT_NAME_MAX + 2];
    memset(name, 'n', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    ck_assert_int_eq(shmds_root_set(r, name, SHMDS_TYPE_USER, off), -EINVAL);
    ck_assert_int_eq(shmds_root_get(r, name, NULL, NULL), -EINVAL);
    ck_assert_int_eq(shmds_root_del(r, name), -EINVAL);
    name[SHMDS_ROOT_NAME_MAX] = '\0'; /* the longest valid name */
    ck_assert_int_eq(shmds_root_set(r, name, SHMDS_TYPE_USER, off), 0);
    ck_assert_int_eq(shmds_root_get(r, name, NULL, NULL), 0);
    ck_assert_int_eq(shmds_root_set(r, "", SHMDS_TYPE_USER, off), -EINVAL);
    ck_assert_int_eq(shmds_root_set(r, NULL, SHMDS_TYPE_USER, off), -EINVAL);
    ck_assert_int_eq(shmds_root_set(r, "t0", 0, off), -EINVAL);
    ck_assert_int_eq(shmds_root_set(r, "far", SHMDS_TYPE_USER, SZ), -EINVAL);
    ck_assert_int_eq(shmds_root_set(r, "null", SHMDS_TYPE_USER, SHMDS_NULL), -EINVAL);
    /* Far past the 32 roots of format 3: the directory adds blocks. */
    for (int i = 1; i < 300; i++) {
        char n[16];
        snprintf(n, sizeof n, "r%d", i);
        ck_assert_int_eq(shmds_root_set(r, n, SHMDS_TYPE_USER, off), 0);
    }
    ck_assert_int_eq(shmds_root_set(r, "r7", SHMDS_TYPE_USER, off), -EEXIST);
    shmds_region_info info;
    shmds_region_info_get(r, &info);
    ck_assert_uint_eq(info.roots, 300);
    ck_assert_uint_ge(info.roots_max, 300);
    ck_assert_int_eq(shmds_root_del(r, "r5"), 0);
    ck_assert_int_eq(shmds_root_get(r, "r5", NULL, NULL), -ENOENT);
    ck_assert_int_eq(shmds_root_get(r, "r6", NULL, NULL), 0);
    ck_assert_int_eq(shmds_root_set(r, "onemore", SHMDS_TYPE_USER, off), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_readonly_refuses_writes)
{
    shmds_region *r = make(), *ro;
    ck_assert_int_eq(shmds_root_set(r, "x", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &ro), 0);
    ck_assert_int_eq(shmds_region_readonly(ro), 1);
    ck_assert_int_eq(shmds_root_get(ro, "x", NULL, NULL), 0);
    ck_assert_int_eq(shmds_root_set(ro, "y", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_root_del(ro, "x"), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_region_check(ro), 0);
    ck_assert_int_eq(shmds_region_close(ro), 0);
    shmds_region_close(r);
}
END_TEST

/* Expected to die with SIGSEGV: the read-only mapping really is read-only. */
START_TEST(test_region_readonly_mapping_faults_on_store)
{
    shmds_region *r = make(), *ro;
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &ro), 0);
    shmds_region_unlink(last_name); /* dying by signal skips the atexit clean-up */
    volatile char *p = shmds_ptr(ro, SHMDS_HEADER_SIZE);
    signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would turn it into exit(1) */
    *p = 1;
    (void)r;
}
END_TEST

START_TEST(test_region_same_uid_refuses_other_owner)
{
    shmds_region *r = make();
    ck_assert_int_eq(open_rc(last_name, SHMDS_SAME_UID), 0);
    if (geteuid() == 0) { /* only root can give the object away */
        int fd = shm_open(last_name, O_RDWR, 0);
        ck_assert_int_eq(fchown(fd, 12345, (gid_t)-1), 0);
        close(fd);
        ck_assert_int_eq(open_rc(last_name, SHMDS_SAME_UID), -EPERM);
        ck_assert_int_eq(open_rc(last_name, 0), 0);
    }
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_close_refused_while_lock_held)
{
    shmds_region *r = make();
    struct shmds__hdr *h = shmds_region_base(r);
    ck_assert_int_eq(shmds_mutex_lock(&h->dir_lock, 1000, NULL, NULL), 0);
    ck_assert_int_eq(shmds_region_close(r), -EBUSY);
    shmds_mutex_info info;
    ck_assert_int_eq(shmds_region_lock_info(r, SHMDS_LOCK_DIRECTORY, &info), 0);
    ck_assert_int_eq(info.owner_pid, getpid());
    ck_assert_int_eq(shmds_region_lock_info(r, SHMDS_LOCK_ALLOCATOR, &info), 0);
    ck_assert_int_eq(info.owner_pid, 0);
    ck_assert_int_eq(shmds_region_lock_info(r, 7, &info), -EINVAL);
    ck_assert_int_eq(shmds_mutex_unlock(&h->dir_lock), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* ---- damaged objects ---- */

static void expect_open(const char *name, int want)
{
    int rc = open_rc(name, 0);
    ck_assert_msg(rc == want, "open gave %s, want %s", shmds_errname(rc), shmds_errname(want));
    rc = open_rc(name, SHMDS_RDONLY);
    ck_assert_msg(rc == want, "ro open gave %s, want %s", shmds_errname(rc),
                  shmds_errname(want));
}

START_TEST(test_region_bad_magic_is_eformat)
{
    shmds_region_close(make());
    poke(last_name, 0, "NOTSHMDS", 8);
    expect_open(last_name, SHMDS_EFORMAT);
}
END_TEST

START_TEST(test_region_swapped_magic_is_eabi)
{
    shmds_region_close(make());
    uint64_t m = __builtin_bswap64(SHMDS__MAGIC);
    poke(last_name, 0, &m, sizeof m);
    expect_open(last_name, SHMDS_EABI);
}
END_TEST

START_TEST(test_region_other_version_is_eformat)
{
    shmds_region_close(make());
    uint32_t v = SHMDS_FORMAT_VERSION + 1;
    poke(last_name, offsetof(struct shmds__hdr, format), &v, sizeof v);
    expect_open(last_name, SHMDS_EFORMAT);
}
END_TEST

START_TEST(test_region_other_abi_is_eabi)
{
    shmds_region_close(make());
    uint8_t word_size = 4; /* as a 32-bit process would have stamped it */
    poke(last_name, offsetof(struct shmds__hdr, abi), &word_size, 1);
    expect_open(last_name, SHMDS_EABI);
}
END_TEST

START_TEST(test_region_bad_checksum_is_ecorrupt)
{
    shmds_region_close(make());
    uint32_t pid = 1;
    poke(last_name, offsetof(struct shmds__hdr, creator_pid), &pid, sizeof pid);
    expect_open(last_name, SHMDS_ECORRUPT);
}
END_TEST

/* A writer that knows the checksum cannot make the region lie about its
 * geometry either. */
START_TEST(test_region_forged_geometry_is_ecorrupt)
{
    shmds_region *r = make();
    struct shmds__hdr h;
    memcpy(&h, shmds_region_base(r), sizeof h);
    shmds_region_close(r);
    h.max_size = h.size - 4096; /* a maximum below the size */
    h.checksum = shmds__fnv1a(SHMDS__FNV_INIT, &h, offsetof(struct shmds__hdr, checksum));
    poke(last_name, 0, &h, offsetof(struct shmds__hdr, epoch));
    expect_open(last_name, SHMDS_ECORRUPT);
}
END_TEST

START_TEST(test_region_truncated_is_ecorrupt_not_sigbus)
{
    shmds_region_close(make());
    truncate_object(last_name, SZ / 2); /* shorter than the header claims */
    expect_open(last_name, SHMDS_ECORRUPT);
    truncate_object(last_name, 100); /* shorter than a header */
    expect_open(last_name, SHMDS_ECORRUPT);
}
END_TEST

/* Hold (F_WRLCK) or drop (F_UNLCK) the creation lock on fd, as a creator
 * does between shm_open and publishing (region.c). */
static void creation_lock(int fd, short type)
{
    struct flock fl = {.l_type = type, .l_whence = SEEK_SET};
    ck_assert_int_eq(fcntl(fd, F_OFD_SETLK, &fl), 0);
}

START_TEST(test_region_unfinished_is_eagain)
{
    /* An object whose creator never got to size it, then one it sized but
     * never published: refused with -EAGAIN after a short wait while the
     * creator is at work (holds the creation lock), never garbage. */
    const char *n = tu_name("half");
    int fd = shm_open(n, O_CREAT | O_EXCL | O_RDWR, 0600);
    ck_assert_int_ge(fd, 0);
    creation_lock(fd, F_WRLCK);
    expect_open(n, -EAGAIN);
    ck_assert_int_eq(ftruncate(fd, SZ), 0);
    expect_open(n, -EAGAIN);
    shmds_region *r;
    ck_assert_int_eq(shmds_region_create(n, SZ, NULL, &r), -EEXIST);
    /* The creator gave up without removing it: an abandoned creation is
     * no region (-ENOENT at once), and a create replaces it. */
    creation_lock(fd, F_UNLCK);
    expect_open(n, -ENOENT);
    close(fd);
    ck_assert_int_eq(shmds_region_create(n, SZ, NULL, &r), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* Child: start a create by hand the way a creator of an older build, or
 * one killed after the kernel dropped its lock, leaves it (named, sized,
 * unpublished), then die by SIGKILL. */
static int die_half_created(void *arg)
{
    int fd = shm_open(arg, O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd < 0 || ftruncate(fd, SZ) != 0)
        return 1;
    raise(SIGKILL);
    return 2;
}

/* Issue 19: a process killed inside shmds_region_create left a name that
 * opened with -EAGAIN forever and could not be created again (-EEXIST). */
START_TEST(test_region_create_replaces_abandoned_creation)
{
    const char *n = tu_name("aband");
    int st = tu_wait(tu_fork(die_half_created, (void *)n), 10000);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    expect_open(n, -ENOENT);
    shmds_region *r;
    ck_assert_int_eq(shmds_region_create(n, SZ, NULL, &r), 0);
    ck_assert_int_eq(shmds_root_set(r, "x", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
    ck_assert_int_eq(open_rc(n, SHMDS_RDONLY), 0);
    /* A published region is never replaced. */
    ck_assert_int_eq(shmds_region_create(n, SZ, NULL, &r), -EEXIST);
}
END_TEST

#ifdef SHMDS_FAULT_INJECTION
static const char *const create_points[] = {"region.create.after_open",
                                            "region.create.after_truncate",
                                            "region.create.before_publish"};

static int create_killed(void *arg)
{
    setenv("SHMDS_FAULT", create_points[*(int *)arg], 1);
    shmds_region *r;
    shmds_region_create(last_name, SZ, NULL, &r);
    return 3; /* not killed */
}

/* A real SIGKILL at each fault point of create; then open says -ENOENT at
 * once, and a create (in this process) replaces the remains. */
START_TEST(test_region_kill_in_create_then_create_again)
{
    int i = _i;
    last_name = tu_name("kc");
    int st = tu_wait(tu_fork(create_killed, &i), 10000);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: not killed",
                  create_points[i]);
    expect_open(last_name, -ENOENT);
    shmds_region *r;
    ck_assert_int_eq(shmds_region_create(last_name, SZ, NULL, &r), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST
#endif

/* Issue 19: a FIFO in /dev/shm made shmds_region_open block forever (the
 * object was opened before its type was looked at). */
static int open_fifo(void *arg)
{
    shmds_region *r;
    int a = shmds_region_open(arg, SHMDS_RDONLY, &r);
    int b = shmds_region_open(arg, 0, &r);
    shmds_region *c;
    int d = shmds_region_create(arg, SZ, NULL, &c);
    return a == SHMDS_EFORMAT && b == SHMDS_EFORMAT && d == -EEXIST ? 0 : 1;
}

START_TEST(test_region_fifo_is_refused_not_waited_on)
{
    const char *n = tu_name("fifo");
    char path[300];
    snprintf(path, sizeof path, "/dev/shm%s", n);
    ck_assert_int_eq(mkfifo(path, 0600), 0);
    int st = tu_wait(tu_fork(open_fifo, (void *)n), 10000);
    unlink(path);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "open of a FIFO hung or was accepted");
}
END_TEST

START_TEST(test_region_lock_bound_is_capped)
{
    shmds_region *r;
    const char *n = tu_name("cap");
    shmds_region_opts o = {.lock_timeout_ms = SHMDS_LOCK_TIMEOUT_MAX_MS + 1};
    ck_assert_int_eq(shmds_region_create(n, SZ, &o, &r), -EINVAL);
    o.lock_timeout_ms = SHMDS_LOCK_TIMEOUT_MAX_MS;
    ck_assert_int_eq(shmds_region_create(n, SZ, &o, &r), 0);
    shmds_region_info info;
    shmds_region_info_get(r, &info);
    ck_assert_uint_eq(info.lock_timeout_ms, SHMDS_LOCK_TIMEOUT_MAX_MS);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* A writer killed mid-change leaves the directory's sequence word odd. A
 * read-only handle cannot repair it; with the region's bound (the largest,
 * 60 s, here) a lookup would wait all of it. A handle that set its own
 * bound gets -ETIMEDOUT after that bound: had the three lookups below
 * waited the region's instead, they would take three minutes, past the
 * crash case's bound (120 s in the plain build), and Check would report
 * them hung. */
START_TEST(test_region_handle_bound_limits_the_wait_for_a_dead_writer)
{
    const char *n = tu_name("hbound");
    shmds_region *w;
    shmds_region_opts o = {.lock_timeout_ms = SHMDS_LOCK_TIMEOUT_MAX_MS};
    ck_assert_int_eq(shmds_region_create(n, SZ, &o, &w), 0);
    shmds_off_t blk;
    ck_assert_int_eq(shmds_alloc(w, 16, &blk), 0);
    ck_assert_int_eq(shmds_root_set(w, "a", SHMDS_TYPE_USER, blk), 0);
    struct shmds__hdr *h = shmds_region_base(w);
    __atomic_add_fetch(&h->dir_seq, 1, __ATOMIC_RELEASE); /* a writer died here */

    shmds_region *r;
    ck_assert_int_eq(shmds_region_open(n, SHMDS_RDONLY, &r), 0);
    ck_assert_int_eq(shmds_region_set_lock_timeout(r, SHMDS_LOCK_TIMEOUT_MAX_MS + 1), -EINVAL);
    ck_assert_int_eq(shmds_region_set_lock_timeout(NULL, 0), -EINVAL);
    for (uint32_t ms = 0; ms <= 100; ms += 50) {
        ck_assert_int_eq(shmds_region_set_lock_timeout(r, ms), 0);
        uint32_t type;
        shmds_off_t off;
        ck_assert_int_eq(shmds_root_get(r, "a", &type, &off), -ETIMEDOUT);
    }
    ck_assert_int_eq(shmds_region_close(r), 0);
    /* A writable handle repairs the word and the name reads again. */
    uint32_t type;
    shmds_off_t off;
    ck_assert_int_eq(shmds_root_get(w, "a", &type, &off), 0);
    ck_assert_int_eq(shmds_region_close(w), 0);
    shmds_region_unlink(n);
}
END_TEST

/* Exit status of a child whose access raised SIGBUS (its own handler, so
 * that a sanitizer's handler does not turn the signal into a report). */
#define GOT_SIGBUS 77

static void on_sigbus(int sig)
{
    (void)sig;
    _exit(GOT_SIGBUS);
}

static int touch_heap(void *arg)
{
    shmds_region *r = arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigaction(SIGBUS, &sa, NULL);
    volatile unsigned char *p = (unsigned char *)shmds_region_base(r) + SHMDS_HEADER_SIZE + 64;
    return *p == 0xa5 ? 0 : 1;
}

/* Issue 19: the object truncated under an attached process. What each call
 * does is in region.h: the header page stays readable here, the walks of
 * the heap see it (fstat) and say SHMDS_ECORRUPT, and a plain access past
 * the new end is SIGBUS. */
START_TEST(test_region_truncated_while_attached)
{
    shmds_region *r = make();
    shmds_list *l;
    ck_assert_int_eq(shmds_list_create(r, "l", &l), 0);
    ck_assert_int_eq(shmds_list_push_back(l, "abc", 3), 0);
    shmds_map *m;
    ck_assert_int_eq(shmds_map_create(r, "m", NULL, &m), 0);
    ck_assert_int_eq(shmds_map_put(m, "k", 1, "v", 1, 0, 0), 0);
    truncate_object(last_name, SHMDS_HEADER_SIZE);
    /* The directory's blocks are in the heap: a walk checks first. */
    ck_assert_int_eq(shmds_root_foreach(r, count_root, &(int){0}), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
    shmds_alloc_stats st;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &st), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_list_foreach(l, touch_elem, NULL), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_map_foreach(m, touch_entry, NULL), SHMDS_ECORRUPT);
    int ws = tu_wait(tu_fork(touch_heap, r), 10000);
    ck_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == GOT_SIGBUS);
    shmds_list_close(l);
    shmds_map_close(m);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

static int open_while_created(void *arg)
{
    const char *name = arg;
    for (int i = 0; i < 200000; i++) {
        shmds_region *r;
        int rc = shmds_region_open(name, 0, &r);
        if (rc == 0) {
            rc = shmds_region_check(r);
            shmds_region_close(r);
            return rc == 0 ? 0 : 2;
        }
        if (rc != -ENOENT && rc != -EAGAIN)
            return 3;
    }
    return 4;
}

START_TEST(test_region_open_during_create_never_sees_garbage)
{
    const char *n = tu_name("race");
    pid_t pid = tu_fork(open_while_created, (void *)n);
    shmds_region *r;
    ck_assert_int_eq(shmds_region_create(n, 64 << 20, NULL, &r), 0);
    int st = tu_wait(pid, 60000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "opener status %d", st);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_damaged_directory_is_ecorrupt)
{
    shmds_region *r = make();
    ck_assert_int_eq(shmds_root_set(r, "a", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    struct shmds__hdr *h = shmds_region_base(r);
    struct shmds__root *e = tu_dir_entry(h, "a");
    e->off = SZ * 4; /* out of bounds */
    ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds__root_find_typed(r, "a", SHMDS_TYPE_USER, &(shmds_off_t){0}),
                     SHMDS_ECORRUPT);
    e->off = SHMDS_HEADER_SIZE;
    memset(e->name, 'z', sizeof e->name); /* no terminator */
    ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_root_get(r, "a", NULL, NULL), -ENOENT);
    shmds_region_close(r);
}
END_TEST

/* ---- crash ---- */

static int die_mid_directory_change(void *arg)
{
    shmds_region *r = arg;
    struct shmds__hdr *h = shmds_region_base(r);
    if (shmds_mutex_lock(&h->dir_lock, 1000, NULL, NULL) != 0)
        return 1;
    /* What root_set does, cut short between its stores. */
    __atomic_add_fetch(&h->dir_seq, 1, __ATOMIC_SEQ_CST);
    struct shmds__root *e = tu_dir_free_entry(h, "kept");
    if (e == NULL)
        return 3;
    memcpy(e->name, "half-written", 12);
    raise(SIGKILL);
    return 2;
}

START_TEST(test_region_directory_writer_killed_is_repaired)
{
    shmds_region *r = make();
    ck_assert_int_eq(shmds_root_set(r, "kept", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    /* Two more names in its bucket: its second block (two entries) has a
     * free one left, which the writer was filling in. */
    char c0[16];
    tu_dir_collide("kept", 0, c0);
    ck_assert_int_eq(shmds_root_set(r, c0, SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    int st = tu_wait(tu_fork(die_mid_directory_change, r), 10000);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    shmds_region_info before;
    shmds_region_info_get(r, &before);
    /* A lookup finds the sequence open, takes the lock, and the repair runs. */
    ck_assert_int_eq(shmds_root_get(r, "kept", NULL, NULL), 0);
    ck_assert_int_eq(shmds_root_get(r, "half-written", NULL, NULL), -ENOENT);
    ck_assert_int_eq(shmds_root_set(r, "after", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_info after;
    shmds_region_info_get(r, &after);
    ck_assert_uint_eq(after.epoch, before.epoch + 1);
    ck_assert_uint_eq(after.roots, 3);
    shmds_region_close(r);
}
END_TEST

/* ---- creates and destroys killed part way: nothing leaks ----
 * A list, a map or a queue being created or destroyed holds its name with
 * a pending directory entry that reaches every block; shmds_region_check
 * (or a create of the same name) reclaims a dead owner's. */

enum { K_LIST, K_MAP, K_QUEUE, K_N };
static const uint32_t k_type[K_N] = {SHMDS_TYPE_LIST, SHMDS_TYPE_MAP, SHMDS_TYPE_QUEUE};
static const char *const k_tag[K_N] = {"list", "map", "queue"};

/* Create the object of kind k under `name` with a little content; close. */
static int k_create(shmds_region *r, int k, const char *name)
{
    int rc;
    if (k == K_LIST) {
        shmds_list *l;
        if ((rc = shmds_list_create(r, name, &l)) != 0)
            return rc;
        if ((rc = shmds_list_push_back(l, "a", 1)) == 0)
            rc = shmds_list_push_back(l, "bb", 2);
        shmds_list_close(l);
    } else if (k == K_MAP) {
        shmds_map *m;
        if ((rc = shmds_map_create(r, name, NULL, &m)) != 0)
            return rc;
        if ((rc = shmds_map_put(m, "k1", 2, "v", 1, 0, 0)) == 0)
            rc = shmds_map_put(m, "k2", 2, "w", 1, 0, 0);
        shmds_map_close(m);
    } else {
        shmds_queue *q;
        if ((rc = shmds_queue_create(r, name, 256, 32, 0, &q)) != 0)
            return rc;
        rc = shmds_queue_send(q, "m", 1, -1); /* a check may hold the lock */
        shmds_queue_close(q);
    }
    return rc;
}

/* Open and destroy; -ENOENT when the name is not (visibly) there. */
static int k_destroy(shmds_region *r, int k, const char *name)
{
    int rc;
    if (k == K_LIST) {
        shmds_list *l;
        return (rc = shmds_list_open(r, name, &l)) != 0 ? rc : shmds_list_destroy(l);
    }
    if (k == K_MAP) {
        shmds_map *m;
        return (rc = shmds_map_open(r, name, &m)) != 0 ? rc : shmds_map_destroy(m);
    }
    shmds_queue *q;
    return (rc = shmds_queue_open(r, name, &q)) != 0 ? rc : shmds_queue_destroy(q);
}

static uint64_t used_blocks(shmds_region *r)
{
    shmds_alloc_stats st;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &st), 0);
    return st.used_blocks;
}

struct k_arg {
    shmds_region *r;
    int k;
    const char *name;
};

/* Die holding a pending entry of a create: name reserved, header block
 * allocated into the entry (zeroed), nothing written yet. */
static int die_in_create(void *p)
{
    struct k_arg *a = p;
    shmds_off_t *slot;
    if (shmds__root_reserve(a->r, a->name, k_type[a->k], &slot) != 0 ||
        shmds__alloc_zeroed_into(a->r, 512, slot) != 0)
        return 2;
    raise(SIGKILL);
    return 3;
}

/* Die at a destroy's commit point: the complete object's name is pending,
 * owned by us, and nothing is freed yet. */
static int die_in_destroy(void *p)
{
    struct k_arg *a = p;
    uint32_t type;
    shmds_off_t off, *slot;
    if (shmds_root_get(a->r, a->name, &type, &off) != 0 ||
        shmds__root_unpublish(a->r, a->name, type, off, &slot) != 0)
        return 2;
    raise(SIGKILL);
    return 3;
}

static void expect_killed(int st)
{
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %d", st);
}

START_TEST(test_region_reclaim_after_kill_in_create)
{
    shmds_region *r = make();
    for (int k = 0; k < K_N; k++) {
        uint64_t base = used_blocks(r);
        struct k_arg a = {r, k, k_tag[k]};
        uint64_t obase = tu_obj_blocks(r);
        expect_killed(tu_wait(tu_fork(die_in_create, &a), 10000));
        ck_assert_uint_eq(tu_obj_blocks(r), obase + 1);
        /* Pending: invisible, but the name is taken. */
        ck_assert_int_eq(shmds_root_get(r, a.name, NULL, NULL), -ENOENT);
        ck_assert_int_eq(shmds_root_set(r, a.name, SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), -EEXIST);
        ck_assert_int_eq(shmds_region_check(r), 0);
        ck_assert_uint_eq(used_blocks(r), base);
        ck_assert_int_eq(k_create(r, k, a.name), 0);
        ck_assert_int_eq(k_destroy(r, k, a.name), 0);
        ck_assert_uint_eq(used_blocks(r), base);
    }
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_reclaim_after_kill_in_destroy)
{
    shmds_region *r = make();
    for (int k = 0; k < K_N; k++) {
        uint64_t base = used_blocks(r);
        struct k_arg a = {r, k, k_tag[k]};
        ck_assert_int_eq(k_create(r, k, a.name), 0);
        ck_assert_uint_gt(used_blocks(r), base);
        expect_killed(tu_wait(tu_fork(die_in_destroy, &a), 10000));
        ck_assert_int_eq(k_destroy(r, k, a.name), -ENOENT);
        ck_assert_int_eq(shmds_region_reclaim(r), 0);
        ck_assert_uint_eq(used_blocks(r), base);
        ck_assert_int_eq(shmds_region_check(r), 0);
    }
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_create_over_dead_pending_name_reclaims)
{
    shmds_region *r = make();
    for (int k = 0; k < K_N; k++) {
        uint64_t base = used_blocks(r);
        struct k_arg a = {r, k, k_tag[k]};
        expect_killed(tu_wait(tu_fork(die_in_create, &a), 10000));
        /* No check in between: the create itself reclaims the orphan. */
        ck_assert_int_eq(k_create(r, k, a.name), 0);
        ck_assert_int_eq(k_destroy(r, k, a.name), 0);
        ck_assert_uint_eq(used_blocks(r), base);
    }
    shmds_region_close(r);
}
END_TEST

START_TEST(test_region_live_pending_name_is_left_alone)
{
    shmds_region *r = make();
    uint64_t base = used_blocks(r), obase = tu_obj_blocks(r);
    shmds_off_t *slot;
    ck_assert_int_eq(shmds__root_reserve(r, "mine", SHMDS_TYPE_LIST, &slot), 0);
    ck_assert_int_eq(shmds__alloc_zeroed_into(r, 256, slot), 0);
    /* Our own pending create: not an orphan, and the name stays taken. */
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_uint_eq(tu_obj_blocks(r), obase + 1);
    shmds_list *l;
    ck_assert_int_eq(shmds_list_create(r, "mine", &l), -EEXIST);
    ck_assert_int_eq(shmds_list_open(r, "mine", &l), -ENOENT);
    ck_assert_int_eq(shmds__free_from(r, slot), 0);
    ck_assert_int_eq(shmds__root_drop(r, slot), 0);
    ck_assert_uint_eq(used_blocks(r), base);
    ck_assert_int_eq(shmds_region_reclaim(NULL), -EINVAL);
    shmds_region_close(r);
}
END_TEST

/* ---- checks and reclaims beside live creates and destroys ----
 * A pending entry whose owner is alive is a create or destroy in progress,
 * not damage: a check or reclaim run beside one leaves it alone and reports
 * the region healthy, and an object destroyed between the directory
 * snapshot and its own check is skipped, never followed into freed memory. */

struct churn {
    shmds_region *r;
    uint32_t *stop;   /* anonymous shared memory: set when the checker is done */
    uint32_t *cycles; /* create+destroy cycles the churner finished */
    tu_chan started;  /* the churner's first cycle is done */
};

/* Create and destroy a list, a map and a queue under rotating names until
 * told to stop; any error exits 2 + the kind. */
static int churner(void *p)
{
    struct churn *c = p;
    char name[32];
    for (uint32_t i = 0; !__atomic_load_n(c->stop, __ATOMIC_ACQUIRE); i++) {
        for (int k = 0; k < K_N; k++) {
            snprintf(name, sizeof name, "%s%u", k_tag[k], i % 4);
            int rc = k_create(c->r, k, name);
            if (rc == 0)
                rc = k_destroy(c->r, k, name);
            if (rc != 0) {
                fprintf(stderr, "churner %s: %s\n", name, shmds_errname(rc));
                return 2 + k;
            }
        }
        __atomic_store_n(c->cycles, i + 1, __ATOMIC_RELEASE);
        if (i == 0)
            tu_send(&c->started, "s", 1);
    }
    return 0;
}

/* Check and reclaim the region again and again; exit 0 when every call
 * returned 0. */
static int checker(void *p)
{
    struct churn *c = p;
    char b;
    if (tu_recv(&c->started, &b, 1) != 1)
        return 9;
    for (int i = 0; i < 400; i++) {
        int rc = shmds_region_check(c->r);
        int rc2 = shmds_region_reclaim(c->r);
        if (rc != 0 || rc2 != 0) {
            fprintf(stderr, "pass %d: check %s, reclaim %s\n", i, shmds_errname(rc),
                    shmds_errname(rc2));
            return 2;
        }
    }
    return 0;
}

START_TEST(test_region_check_beside_live_creates_and_destroys)
{
    shmds_region *r = make();
    uint32_t *shared = tu_shared_alloc(64);
    struct churn c = {r, &shared[0], &shared[1], {-1, -1}};
    tu_chan_open(&c.started);
    pid_t churn = tu_fork(churner, &c);
    pid_t check = tu_fork(checker, &c);
    int cst = tu_wait(check, 100000);
    __atomic_store_n(c.stop, 1, __ATOMIC_RELEASE);
    int wst = tu_wait(churn, 100000);
    tu_chan_close(&c.started);
    ck_assert_msg(WIFEXITED(cst) && WEXITSTATUS(cst) == 0, "checker status %#x", cst);
    ck_assert_msg(WIFEXITED(wst) && WEXITSTATUS(wst) == 0, "churner status %#x", wst);
    ck_assert_uint_gt(__atomic_load_n(c.cycles, __ATOMIC_ACQUIRE), 0);
    /* Both gone: the region is healthy and every object was destroyed. */
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_info info;
    ck_assert_int_eq(shmds_region_info_get(r, &info), 0);
    ck_assert_uint_eq(info.roots, 0);
    shmds_region_close(r);
}
END_TEST

#ifdef SHMDS_FAULT_INJECTION
/* Every fault point of a create and a destroy, and the repair points the
 * reclaim passes (hit by a second child that reclaims and is killed too). */
static const char *const k_points[K_N][10] = {
    {"list.destroy.marked", "list.destroy.emptied", NULL},
    {"map.create.table", "map.destroy.scratch", "map.destroy.unlinked", "map.destroy.unmarked",
     NULL},
    {NULL},
};
/* The object layer's points (every kind passes them) and the layers'
 * below. */
static const char *const common_points[] = {
    "object.create.reserved", "object.create.allocated", "object.create.before_publish",
    "object.destroy.unpublished", "object.destroy.freed", "region.root_set.before_publish",
    "region.root_drop.after_free", "alloc.alloc.zeroed", "alloc.commit.sealed",
    "alloc.commit.store", NULL};
static const char *const reclaim_points[] = {"object.reclaim.reached", "object.reclaim.freed",
                                             "region.root_drop.after_free", NULL};

static const char *fault_point;
static unsigned fault_skip;

static void fault_env(const char *point, unsigned skip)
{
    char n[16];
    snprintf(n, sizeof n, "%u", skip);
    setenv("SHMDS_FAULT", point, 1);
    setenv("SHMDS_FAULT_SKIP", n, 1);
}

/* Create, fill and destroy, to be killed at fault_point. */
static int lifecycle(void *p)
{
    struct k_arg *a = p;
    fault_env(fault_point, fault_skip);
    if (k_create(a->r, a->k, a->name) != 0 || k_destroy(a->r, a->k, a->name) != 0)
        return 2;
    return 0;
}

static int reclaimer(void *p)
{
    fault_env(fault_point, fault_skip);
    int rc = shmds_region_reclaim(p);
    if (rc != 0)
        fprintf(stderr, "reclaim at %s: %s\n", fault_point, shmds_errname(rc));
    return rc == 0 ? 0 : 2;
}

/* After a kill: reclaim (itself killed once at each reclaim point), then
 * the name is free or a complete object, and nothing leaked. */
static void after_kill(shmds_region *r, int k, const char *name, uint64_t base)
{
    const char *point = fault_point;
    unsigned skip = fault_skip;
    for (unsigned i = 0; reclaim_points[i] != NULL; i++) {
        fault_point = reclaim_points[i];
        fault_skip = 0;
        int st = tu_wait(tu_fork(reclaimer, r), 10000);
        ck_assert_msg(WIFSIGNALED(st) || (WIFEXITED(st) && WEXITSTATUS(st) == 0),
                      "%s after %s skip %u: status %d", fault_point, point, skip, st);
    }
    fault_point = point;
    fault_skip = skip;
    ck_assert_int_eq(shmds_region_check(r), 0);
    int rc = k_destroy(r, k, name);
    ck_assert_msg(rc == 0 || rc == -ENOENT, "%s: %s", name, shmds_errname(rc));
    uint64_t used = used_blocks(r);
    ck_assert_msg(used == base, "%s at %s skip %u: %" PRIu64 " blocks, %" PRIu64 " before",
                  name, fault_point, fault_skip, used, base);
    ck_assert_int_eq(k_create(r, k, name), 0);
    ck_assert_int_eq(k_destroy(r, k, name), 0);
    ck_assert_uint_eq(used_blocks(r), base);
}

START_TEST(test_region_kill_at_every_lifecycle_point_leaks_nothing)
{
    shmds_region *r = make();
    unsigned kills = 0;
    for (int k = 0; k < K_N; k++) {
        uint64_t base = used_blocks(r);
        struct k_arg a = {r, k, k_tag[k]};
        for (int set = 0; set < 2; set++) {
            const char *const *pts = set == 0 ? k_points[k] : common_points;
            for (unsigned i = 0; pts[i] != NULL; i++) {
                for (unsigned skip = 0; skip < 24; skip++) {
                    fault_point = pts[i];
                    fault_skip = skip;
                    int st = tu_wait(tu_fork(lifecycle, &a), 10000);
                    if (WIFEXITED(st)) {
                        ck_assert_msg(WEXITSTATUS(st) == 0, "%s skip %u: exit %d", pts[i],
                                      skip, WEXITSTATUS(st));
                        ck_assert_uint_eq(used_blocks(r), base);
                        break; /* the point has no more hits */
                    }
                    expect_killed(st);
                    kills++;
                    after_kill(r, k, a.name, base);
                }
            }
        }
    }
    printf("lifecycle kills: %u\n", kills);
    ck_assert_uint_gt(kills, 30);
    shmds_region_close(r);
}
END_TEST
#endif

/* ---- the directory: no fixed limit ---- */

/* A region of 1 MiB that may grow to `max`, named last_name. */
static shmds_region *make_max(size_t max)
{
    last_name = tu_name("rgdir");
    shmds_region_opts o = {.max_size = max};
    shmds_region *r = NULL;
    int rc = shmds_region_create(last_name, 1 << 20, &o, &r);
    ck_assert_msg(rc == 0, "create: %s", shmds_errname(rc));
    return r;
}

#define DIR_MANY 10000

static int count_names(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    (void)off;
    unsigned char *seen = arg;
    unsigned i;
    if (type != SHMDS_TYPE_LIST || sscanf(name, "obj-%u", &i) != 1 || i >= DIR_MANY || seen[i])
        return 1; /* a stranger or a name reported twice */
    seen[i] = 1;
    return 0;
}

static unsigned listed(shmds_region *r)
{
    static unsigned char seen[DIR_MANY];
    memset(seen, 0, sizeof seen);
    ck_assert_int_eq(shmds_root_foreach(r, count_names, seen), 0);
    unsigned n = 0;
    for (unsigned i = 0; i < DIR_MANY; i++)
        n += seen[i];
    return n;
}

/* Ten thousand named objects (format 3 stopped at 32): created, listed
 * by this handle and by a read-only one, opened, checked, destroyed; the
 * directory gives its blocks back. */
START_TEST(test_region_directory_ten_thousand_objects)
{
    shmds_region *r = make_max(256 << 20);
    uint64_t base = used_blocks(r);
    char n[32];
    for (unsigned i = 0; i < DIR_MANY; i++) {
        shmds_list *l;
        snprintf(n, sizeof n, "obj-%u", i);
        int rc = shmds_list_create(r, n, &l);
        ck_assert_msg(rc == 0, "create %u: %s", i, shmds_errname(rc));
        shmds_list_close(l);
    }
    shmds_list *l;
    ck_assert_int_eq(shmds_list_create(r, "obj-4321", &l), -EEXIST);
    shmds_region_info info;
    ck_assert_int_eq(shmds_region_info_get(r, &info), 0);
    ck_assert_uint_eq(info.roots, DIR_MANY);
    ck_assert_uint_ge(info.roots_max, DIR_MANY);
    ck_assert_uint_eq(listed(r), DIR_MANY);
    shmds_region *ro;
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &ro), 0);
    ck_assert_uint_eq(listed(ro), DIR_MANY);
    ck_assert_int_eq(shmds_list_open(ro, "obj-9999", &l), 0);
    shmds_list_close(l);
    ck_assert_int_eq(shmds_region_check(ro), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    for (unsigned i = 0; i < DIR_MANY; i++) {
        snprintf(n, sizeof n, "obj-%u", i);
        ck_assert_int_eq(shmds_list_open(r, n, &l), 0);
        ck_assert_int_eq(shmds_list_push_back(l, n, strlen(n)), 0);
        ck_assert_int_eq(shmds_list_destroy(l), 0);
        ck_assert_int_eq(shmds_list_open(r, n, &l), -ENOENT);
    }
    ck_assert_uint_eq(listed(ro), 0);
    ck_assert_int_eq(shmds_region_info_get(r, &info), 0);
    ck_assert_uint_eq(info.roots, 0);
    ck_assert_uint_eq(info.roots_max, 0);
    ck_assert_uint_eq(used_blocks(r), base);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(ro), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

#define DIR_WRITERS 4
#define DIR_PER_WRITER 600

/* One of several processes creating and destroying names at once: it
 * creates its names and destroys two in three a little later. */
static int dir_writer(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    shmds_region *r;
    if (shmds_region_open(last_name, 0, &r) != 0)
        return 2;
    char n[32];
    for (unsigned i = 0; i < DIR_PER_WRITER; i++) {
        shmds_map *m;
        snprintf(n, sizeof n, "w%u-%u", me, i);
        if (shmds_map_create(r, n, NULL, &m) != 0)
            return 3;
        shmds_map_close(m);
        if (i >= 2 && (i - 2) % 3 != 1) {
            snprintf(n, sizeof n, "w%u-%u", me, i - 2);
            if (shmds_map_open(r, n, &m) != 0 || shmds_map_destroy(m) != 0)
                return 4;
        }
    }
    shmds_region_close(r);
    return 0;
}

static int count_writers(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    (void)type, (void)off;
    unsigned me, i;
    if (sscanf(name, "w%u-%u", &me, &i) != 2 || me >= DIR_WRITERS || i >= DIR_PER_WRITER)
        return 1;
    ((unsigned char *)arg)[me * DIR_PER_WRITER + i]++;
    return 0;
}

START_TEST(test_region_directory_writers_at_once)
{
    shmds_region *r = make_max(256 << 20);
    pid_t pid[DIR_WRITERS];
    for (unsigned i = 0; i < DIR_WRITERS; i++)
        pid[i] = tu_fork(dir_writer, (void *)(uintptr_t)i);
    for (unsigned i = 0; i < DIR_WRITERS; i++) {
        int st = tu_wait(pid[i], 300000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "writer %u: status %d", i, st);
    }
    static unsigned char seen[DIR_WRITERS * DIR_PER_WRITER];
    memset(seen, 0, sizeof seen);
    ck_assert_int_eq(shmds_root_foreach(r, count_writers, seen), 0);
    for (unsigned me = 0; me < DIR_WRITERS; me++)
        for (unsigned i = 0; i < DIR_PER_WRITER; i++) {
            /* Kept: every third, and the last two (never destroyed). */
            unsigned want = i % 3 == 1 || i + 2 >= DIR_PER_WRITER;
            ck_assert_msg(seen[me * DIR_PER_WRITER + i] == want, "w%u-%u listed %u times", me,
                          i, seen[me * DIR_PER_WRITER + i]);
        }
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* A read-only attach lists over and over while two processes add names:
 * every listing holds the names that were there from the start, and
 * never fewer added names than the listing before it (names are only
 * added, and a name present through a walk is reported once). Each adder
 * adds its names in chunks and starts a chunk only once the reader has
 * begun another pass, so the passes and the additions interleave, at
 * least DIR_CHUNKS passes of them, whatever the machine's load. */
#define DIR_CHUNKS 15
#define DIR_CHUNK 100
static tu_chan go[2];

static int dir_adder(void *arg)
{
    unsigned me = (unsigned)(uintptr_t)arg;
    shmds_region *r;
    if (shmds_region_open(last_name, 0, &r) != 0)
        return 2;
    char n[32], token;
    for (unsigned c = 0; c < DIR_CHUNKS; c++) {
        if (tu_recv(&go[me], &token, 1) != 1)
            return 4;
        for (unsigned i = c * DIR_CHUNK; i < (c + 1) * DIR_CHUNK; i++) {
            snprintf(n, sizeof n, "add%u-%u", me, i);
            if (shmds_root_set(r, n, SHMDS_TYPE_USER, SHMDS_HEADER_SIZE) != 0)
                return 3;
        }
    }
    shmds_region_close(r);
    return 0;
}

struct ro_count {
    unsigned stable, added;
};

static int ro_visit(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    (void)type, (void)off;
    struct ro_count *c = arg;
    if (strncmp(name, "stable-", 7) == 0)
        c->stable++;
    else
        c->added++;
    return 0;
}

START_TEST(test_region_directory_readonly_lists_while_names_come)
{
    shmds_region *r = make_max(64 << 20);
    char n[32];
    for (unsigned i = 0; i < 200; i++) {
        snprintf(n, sizeof n, "stable-%u", i);
        ck_assert_int_eq(shmds_root_set(r, n, SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    }
    shmds_region *ro;
    ck_assert_int_eq(shmds_region_open(last_name, SHMDS_RDONLY, &ro), 0);
    tu_chan_open(&go[0]);
    tu_chan_open(&go[1]);
    pid_t pid[2] = {tu_fork(dir_adder, (void *)0), tu_fork(dir_adder, (void *)1)};
    const unsigned total = 2 * DIR_CHUNKS * DIR_CHUNK;
    unsigned prev = 0, passes = 0;
    int st[2];
    bool done[2] = {false, false};
    for (;;) {
        if (passes < DIR_CHUNKS) {
            tu_send(&go[0], "g", 1);
            tu_send(&go[1], "g", 1);
        }
        for (unsigned i = 0; i < 2; i++)
            if (!done[i] && waitpid(pid[i], &st[i], WNOHANG) == pid[i])
                done[i] = true;
        bool finished = done[0] && done[1]; /* this pass sees all they did */
        struct ro_count c = {0, 0};
        ck_assert_int_eq(shmds_root_foreach(ro, ro_visit, &c), 0);
        ck_assert_uint_eq(c.stable, 200);
        ck_assert_uint_ge(c.added, prev);
        ck_assert_uint_le(c.added, total);
        prev = c.added;
        passes++;
        if (c.added == total || finished)
            break;
    }
    for (unsigned i = 0; i < 2; i++) {
        if (!done[i])
            st[i] = tu_wait(pid[i], 300000);
        ck_assert_msg(WIFEXITED(st[i]) && WEXITSTATUS(st[i]) == 0, "adder %u: status %d", i,
                      st[i]);
        tu_chan_close(&go[i]);
    }
    ck_assert_uint_eq(prev, total);
    ck_assert_uint_ge(passes, DIR_CHUNKS);
    ck_assert_int_eq(shmds_region_check(ro), 0);
    ck_assert_int_eq(shmds_region_close(ro), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* Die adding a block to a chain: directory lock held, sequence odd, the
 * block allocated zeroed into the chain's last link, no entry taken. */
static int die_adding_block(void *arg)
{
    shmds_region *r = arg;
    struct shmds__hdr *h = shmds_region_base(r);
    if (shmds_mutex_lock(&h->dir_lock, 1000, NULL, NULL) != 0)
        return 1;
    __atomic_add_fetch(&h->dir_seq, 1, __ATOMIC_SEQ_CST);
    struct shmds__root *e = tu_dir_entry(h, "kept");
    if (e == NULL)
        return 2;
    /* "kept" fills its bucket's first block (one entry). */
    struct shmds__dir_blk *b0 =
        (void *)((unsigned char *)e - offsetof(struct shmds__dir_blk, e));
    if (shmds__alloc_zeroed_into(r, 16 + 2 * 64, &b0->next) != 0)
        return 3;
    raise(SIGKILL);
    return 4;
}

START_TEST(test_region_directory_block_adder_killed)
{
    shmds_region *r = make();
    ck_assert_int_eq(shmds_root_set(r, "kept", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    uint64_t base = used_blocks(r);
    int st = tu_wait(tu_fork(die_adding_block, r), 10000);
    ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "child status %d", st);
    ck_assert_uint_eq(used_blocks(r), base + 1); /* linked, empty */
    /* The next lock holder repairs; the reclaim trims the empty block. */
    ck_assert_int_eq(shmds_root_get(r, "kept", NULL, NULL), 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_uint_eq(used_blocks(r), base);
    char c0[16];
    tu_dir_collide("kept", 0, c0);
    ck_assert_int_eq(shmds_root_set(r, c0, SHMDS_TYPE_USER, SHMDS_HEADER_SIZE), 0);
    ck_assert_uint_eq(used_blocks(r), base + 1);
    ck_assert_int_eq(shmds_root_del(r, c0), 0);
    ck_assert_uint_eq(used_blocks(r), base);
    ck_assert_int_eq(shmds_region_check(r), 0);
    shmds_region_close(r);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("region");
    TCase *core = tcase_create("core");
    tcase_set_timeout(core, 120);
    tcase_add_test(core, test_region_create_reports_itself);
    tcase_add_test(core, test_region_create_sizes_that_overflow_are_refused);
    tcase_add_test(core, test_region_two_mappings_share_data);
    tcase_add_test(core, test_region_directory_set_get_del);
    suite_add_tcase(s, core);

    TCase *limits = tcase_create("limits");
    tcase_set_timeout(limits, 120);
    tcase_add_test(limits, test_region_invalid_names);
    tcase_add_test(limits, test_region_bad_sizes_modes_flags);
    tcase_add_test(limits, test_region_create_existing_is_eexist);
    tcase_add_test(limits, test_region_mode_ignores_umask);
    tcase_add_test(limits, test_region_full_tmpfs_is_enospc);
    tcase_add_test(limits, test_region_root_bad_input);
    tcase_add_test(limits, test_region_readonly_refuses_writes);
    tcase_add_test_raise_signal(limits, test_region_readonly_mapping_faults_on_store, SIGSEGV);
    tcase_add_test(limits, test_region_same_uid_refuses_other_owner);
    tcase_add_test(limits, test_region_close_refused_while_lock_held);
    suite_add_tcase(s, limits);

    TCase *corrupt = tcase_create("corrupt");
    tcase_set_timeout(corrupt, 120);
    tcase_add_test(corrupt, test_region_bad_magic_is_eformat);
    tcase_add_test(corrupt, test_region_swapped_magic_is_eabi);
    tcase_add_test(corrupt, test_region_other_version_is_eformat);
    tcase_add_test(corrupt, test_region_other_abi_is_eabi);
    tcase_add_test(corrupt, test_region_bad_checksum_is_ecorrupt);
    tcase_add_test(corrupt, test_region_forged_geometry_is_ecorrupt);
    tcase_add_test(corrupt, test_region_truncated_is_ecorrupt_not_sigbus);
    tcase_add_test(corrupt, test_region_unfinished_is_eagain);
    tcase_add_test(corrupt, test_region_fifo_is_refused_not_waited_on);
    tcase_add_test(corrupt, test_region_lock_bound_is_capped);
    tcase_add_test(corrupt, test_region_truncated_while_attached);
    tcase_add_test(corrupt, test_region_damaged_directory_is_ecorrupt);
    suite_add_tcase(s, corrupt);

    TCase *mp = tcase_create("multiprocess");
    tcase_set_timeout(mp, 120);
    tcase_add_test(mp, test_region_exec_peer_reads_at_other_address);
    tcase_add_test(mp, test_region_open_during_create_never_sees_garbage);
    tcase_add_test(mp, test_region_directory_writer_killed_is_repaired);
    tcase_add_test(mp, test_region_directory_ten_thousand_objects);
    tcase_add_test(mp, test_region_directory_writers_at_once);
    tcase_add_test(mp, test_region_directory_readonly_lists_while_names_come);
    suite_add_tcase(s, mp);

    TCase *crash = tcase_create("crash");
    tcase_set_timeout(crash, 120);
    tcase_add_test(crash, test_region_directory_block_adder_killed);
    tcase_add_test(crash, test_region_reclaim_after_kill_in_create);
    tcase_add_test(crash, test_region_reclaim_after_kill_in_destroy);
    tcase_add_test(crash, test_region_create_over_dead_pending_name_reclaims);
    tcase_add_test(crash, test_region_live_pending_name_is_left_alone);
    tcase_add_test(crash, test_region_create_replaces_abandoned_creation);
    tcase_add_test(crash, test_region_handle_bound_limits_the_wait_for_a_dead_writer);
    tcase_add_test(crash, test_region_check_beside_live_creates_and_destroys);
#ifdef SHMDS_FAULT_INJECTION
    tcase_add_test(crash, test_region_kill_at_every_lifecycle_point_leaks_nothing);
    tcase_add_loop_test(crash, test_region_kill_in_create_then_create_again, 0, 3);
#endif
    suite_add_tcase(s, crash);

    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
