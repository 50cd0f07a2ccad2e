/*
 * unlink NAME — remove a shmds region's name.
 *
 * Processes that still have the region mapped keep using it; the memory is
 * freed when the last of them unmaps it.
 */
#include <stdio.h>

#include <shmds.h>

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n  Remove the shmds region NAME.\n", argv[0]);
        return 2;
    }
    int rc = shmds_region_unlink(argv[1]);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot unlink %s: %s (%s)\n", argv[0], argv[1], shmds_strerror(rc),
                shmds_errname(rc));
        return 1;
    }
    return 0;
}
