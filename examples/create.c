/*
 * create NAME SIZE — make a shmds region.
 *
 * The shmds version of the classic "create a POSIX shared-memory object"
 * program: shm_open, ftruncate, posix_fallocate and mmap, plus a checked
 * header, in one call. SIZE takes a k, m or g suffix.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include <shmds.h>

static int parse_size(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *s == '-')
        return -1;
    unsigned shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    default: break;
    }
    if (*end != '\0' || v > (SIZE_MAX >> shift))
        return -1;
    *out = (size_t)v << shift;
    return 0;
}

int main(int argc, char **argv)
{
    size_t size;
    if (argc != 3 || parse_size(argv[2], &size) != 0) {
        fprintf(stderr, "usage: %s NAME SIZE\n"
                        "  Create the shmds region NAME (\"/something\") of SIZE bytes\n"
                        "  (suffix k, m or g; at least %zu).\n",
                argv[0], SHMDS_REGION_MIN_SIZE);
        return 2;
    }
    shmds_region *r;
    int rc = shmds_region_create(argv[1], size, NULL, &r);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot create %s: %s (%s)\n", argv[0], argv[1], shmds_strerror(rc),
                shmds_errname(rc));
        return 1;
    }
    printf("created %s: %zu bytes\n", argv[1], shmds_region_size(r));
    shmds_region_close(r);
    return 0;
}
