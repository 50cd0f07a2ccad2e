/*
 * shmds_region_check: the whole-region check, above every layer.
 *
 * The region cannot know the structures (data flows down only), so the
 * check that walks everything lives here: the header and directory, then the
 * heap, then each named object whose type tag the library knows.
 */
#include "internal.h"

/* Directory callback: check one named object of a known type. */
static int check_object(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    shmds_region *r = arg;
    (void)off;
    if (type != SHMDS_TYPE_LIST)
        return 0;
    shmds_list *l;
    int rc = shmds_list_open(r, name, &l);
    if (rc == -ENOENT)
        return 0; /* destroyed since the snapshot */
    if (rc != 0)
        return rc;
    rc = shmds_list_check(l);
    shmds_list_close(l);
    return rc;
}

SHMDS_API int shmds_region_check(shmds_region *r)
{
    int rc = shmds__region_check_header(r);
    if (rc != 0)
        return rc;
    if ((rc = shmds__alloc_check(r)) != 0)
        return rc;
    return shmds_root_foreach(r, check_object, r);
}
