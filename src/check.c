/*
 * shmds_region_check: the whole-region check, above every layer.
 *
 * The region cannot know the structures (data flows down only), so the
 * check that walks everything lives here: the header and directory, then the
 * heap, then each named object whose type tag the library knows.
 */
#include "internal.h"
#include "queue_int.h"

/* Check one directory entry whose type the library knows. */
static int check_root(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    shmds_region *r = arg;
    (void)name;
    switch (type) {
    case SHMDS_TYPE_QUEUE:
        return shmds__queue_check_at(r, off);
    default:
        return 0;
    }
}

SHMDS_API int shmds_region_check(shmds_region *r)
{
    int rc = shmds__region_check_header(r);
    if (rc != 0)
        return rc;
    if ((rc = shmds__alloc_check(r)) != 0)
        return rc;
    return shmds_root_foreach(r, check_root, r);
}
