/*
 * shmds_region_check: the whole-region check, above every layer.
 *
 * The region cannot know the structures (data flows down only), so the
 * check that walks everything lives here: the header and directory, then the
 * heap, then each named object whose type tag the library knows.
 */
#include "internal.h"

SHMDS_API int shmds_region_check(shmds_region *r)
{
    int rc = shmds__region_check_header(r);
    if (rc != 0)
        return rc;
    return shmds__alloc_check(r);
}
