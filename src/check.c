/*
 * shmds_region_check: the whole-region check, above every layer.
 *
 * The region cannot know the structures (data flows down only), so the
 * check that walks everything lives here: the header and directory, then the
 * heap, then each named object whose type tag the library knows.
 */
#include "internal.h"
#include "map_int.h"

static int check_list(shmds_region *r, const char *name)
{
    shmds_list *l;
    int rc = shmds_list_open(r, name, &l);
    if (rc == -ENOENT || rc == -EIDRM)
        return 0; /* destroyed since the directory snapshot */
    if (rc != 0)
        return rc;
    rc = shmds_list_check(l);
    shmds_list_close(l);
    return rc;
}

/* Directory callback: check one named object of a type the library knows;
 * users' own types are their business. */
static int check_object(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    shmds_region *r = arg;
    switch (type) {
    case SHMDS_TYPE_LIST:
        return check_list(r, name);
    case SHMDS_TYPE_MAP:
        /* A map's check takes its locks: not possible read-only. */
        return shmds__rdonly(r) ? 0 : shmds__map_check_at(r, off);
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
    return shmds_root_foreach(r, check_object, r);
}
