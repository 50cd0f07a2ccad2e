/*
 * shmds_region_check and shmds_region_reclaim: the region-wide passes.
 *
 * Layer: the top of the library. These are loops over the object layer's
 * ops tables (object.h), one per type tag the library knows; users' own
 * tags are their business. Nothing below calls them: a structure's create
 * finishes only a dead owner's entry of its own name (object.c).
 */
#include "object.h"

static const struct shmds__obj_ops *const ops_table[] = {
    &shmds__list_ops,
    &shmds__map_ops,
    &shmds__queue_ops,
    &shmds__table_ops,
};

/* The ops of `type`, or NULL for a tag that is not the library's. */
static const struct shmds__obj_ops *ops_of(uint32_t type)
{
    for (size_t i = 0; i < sizeof ops_table / sizeof ops_table[0]; i++)
        if (ops_table[i]->type == type)
            return ops_table[i];
    return NULL;
}

/* Directory callback: settle one named object of a type that has more to
 * settle (a table's dead builders). */
static int settle_object(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    const struct shmds__obj_ops *ops = ops_of(type);
    return ops != NULL ? shmds__obj_settle(arg, ops, name, off) : 0;
}

SHMDS_API int shmds_region_reclaim(shmds_region *r)
{
    if (r == NULL)
        return -EINVAL;
    int rc = shmds__writable(r);
    uint32_t type;
    shmds_off_t *slot;
    while (rc == 0 && (rc = shmds__root_take_orphan(r, NULL, 0, &type, &slot)) == 0)
        rc = shmds__obj_reclaim(r, ops_of(type), slot);
    if (rc == -ENOENT)
        rc = shmds__root_trim(r);
    if (rc == 0) /* what dead processes left inside objects */
        rc = shmds_root_foreach(r, settle_object, r);
    if (rc == 0) /* then retired blocks no reader holds (the orphans' too) */
        rc = shmds__guard_reclaim(r);
    return rc < 0 ? rc : 0;
}

/* Directory callback: check one named object of a type the library knows. */
static int check_object(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    const struct shmds__obj_ops *ops = ops_of(type);
    return ops != NULL ? shmds__obj_check(arg, ops, name, off) : 0;
}

SHMDS_API int shmds_region_check(shmds_region *r)
{
    if (r == NULL)
        return -EINVAL;
    /* A growth a dead process left is finished first (writable only). */
    int rc = shmds__region_grow_settle(r);
    if (rc == 0)
        rc = shmds__region_check_header(r);
    if (rc != 0)
        return rc;
    if (!shmds__rdonly(r) && (rc = shmds_region_reclaim(r)) != 0)
        return rc;
    if ((rc = shmds__region_intact(r)) != 0 || (rc = shmds_alloc_check(r)) != 0)
        return rc;
    return shmds_root_foreach(r, check_object, r);
}
