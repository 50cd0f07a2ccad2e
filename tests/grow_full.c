/* Growth refused on a full tmpfs (issue 14). In a private mount namespace
 * (unshare -m) a 4 MiB tmpfs is mounted over /dev/shm, so nothing here can
 * fill the machine's real /dev/shm; a map in a 256 KiB region that may grow
 * to 64 MiB is filled until the tmpfs has no room. The put that needed the
 * growth fails with -ENOSPC (not a SIGBUS), an explicit growth too, and the
 * region is intact: the same size, healthy, every value stored before
 * readable, the object no longer than the published size. Exits 77
 * (skipped) when this process may not make a mount namespace or mount. */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <shmds.h>

#define NAME "/shmds-grow-full"
#define VAL 1000

static int fail(const char *what, int rc)
{
    fprintf(stderr, "grow_full: %s: %s\n", what, shmds_errname(rc));
    return 1;
}

static void val_of(unsigned i, unsigned char *v)
{
    for (unsigned k = 0; k < VAL; k++)
        v[k] = (unsigned char)(i * 31u + k);
}

int main(void)
{
    if (unshare(CLONE_NEWNS) != 0 || mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=1777") != 0) {
        printf("grow_full: no private tmpfs (%s); skipped\n", strerror(errno));
        return 77;
    }
    shmds_region *r;
    shmds_region_opts o = {.max_size = 64u << 20};
    int rc = shmds_region_create(NAME, 256u << 10, &o, &r);
    if (rc != 0)
        return fail("create", rc);
    shmds_map *m;
    if ((rc = shmds_map_create(r, "m", NULL, &m)) != 0)
        return fail("map create", rc);
    unsigned char v[VAL], got[VAL];
    char k[16];
    unsigned n = 0;
    for (;; n++) {
        val_of(n, v);
        rc = shmds_map_put(m, k, (size_t)snprintf(k, sizeof k, "%u", n), v, VAL, 0, 0);
        if (rc != 0)
            break;
    }
    if (rc != -ENOSPC)
        return fail("the put that found the tmpfs full", rc);
    size_t size = shmds_region_size(r);
    if (size <= (256u << 10) || size > (4u << 20)) {
        fprintf(stderr, "grow_full: size %zu after %u puts: no growth before the tmpfs filled\n",
                size, n);
        return 1;
    }
    if ((rc = shmds_region_grow(r, 32u << 20)) != -ENOSPC)
        return fail("grow on a full tmpfs", rc);
    struct stat st;
    if (stat("/dev/shm" NAME, &st) != 0 || (size_t)st.st_size != size ||
        shmds_region_size(r) != size) {
        fprintf(stderr, "grow_full: size changed by the refused growth\n");
        return 1;
    }
    if ((rc = shmds_region_check(r)) != 0)
        return fail("check", rc);
    for (unsigned i = 0; i < n; i++) {
        size_t len = 0;
        val_of(i, v);
        rc = shmds_map_get(m, k, (size_t)snprintf(k, sizeof k, "%u", i), got, sizeof got, &len);
        if (rc != 0 || len != VAL || memcmp(got, v, VAL) != 0)
            return fail("a value stored before the tmpfs filled", rc != 0 ? rc : SHMDS_ECORRUPT);
    }
    /* Room again (deletes free blocks, in whichever arenas they were):
     * the map goes on working. */
    for (unsigned i = 0; i < n && i < 200; i++)
        if ((rc = shmds_map_del(m, k, (size_t)snprintf(k, sizeof k, "%u", i))) != 0)
            return fail("delete", rc);
    if ((rc = shmds_map_put(m, "again", 5, v, VAL, 0, 0)) != 0)
        return fail("put after deletes", rc);
    printf("grow_full: %u values in %zu bytes; growth past it refused with ENOSPC, region intact\n",
           n, size);
    shmds_map_close(m);
    shmds_region_close(r);
    shmds_region_unlink(NAME);
    return 0;
}
