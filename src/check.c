/*
 * shmds_region_check: the whole-region check, above every layer.
 *
 * The region cannot know the structures (data flows down only), so the
 * check that walks everything lives here: the header and directory, then the
 * heap, then each named object whose type tag the library knows.
 */
#include "internal.h"
#include "list_int.h"
#include "map_int.h"
#include "queue_int.h"

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
        return shmds__rdonly(r) ? 0 : shmds__map_check_at(r, shmds__hdr_of(off));
    case SHMDS_TYPE_QUEUE:
        return shmds__queue_check_at(r, shmds__hdr_of(off));
    default:
        return 0;
    }
}

/* Finish one orphan (a pending entry this process took over from a dead
 * owner): free what its header reaches, then the header through the entry,
 * then the entry. Holds no lock of its own: each step takes the structure's,
 * the allocator's or the directory's lock in that order. */
static int reclaim_one(shmds_region *r, uint32_t type, shmds_off_t *slot)
{
    /* The dead owner may have died inside the allocator's commit that
     * fills or clears the slot: settle it before reading the slot. */
    int rc = shmds__alloc_settle(r);
    if (rc != 0)
        return rc;
    shmds_off_t blk = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (blk != SHMDS_NULL) {
        if (!shmds__off_ok(r, blk, 1, 16))
            return SHMDS_ECORRUPT;
        shmds_off_t off = shmds__hdr_of(blk);
        switch (type) {
        case SHMDS_TYPE_LIST:
            rc = shmds__list_reclaim_at(r, off);
            break;
        case SHMDS_TYPE_MAP:
            rc = shmds__map_reclaim_at(r, off);
            break;
        case SHMDS_TYPE_QUEUE:
            rc = shmds__queue_reclaim_at(r, off);
            break;
        default:
            break; /* only the library's own creates leave pending entries */
        }
        SHMDS_FAULT("check.reclaim.reached");
        if (rc == 0)
            rc = shmds__free_from(r, slot);
    }
    SHMDS_FAULT("check.reclaim.freed");
    return rc == 0 ? shmds__root_drop(r, slot) : rc;
}

SHMDS_API int shmds_region_reclaim(shmds_region *r)
{
    if (r == NULL)
        return -EINVAL;
    int rc = shmds__writable(r);
    uint32_t type;
    shmds_off_t *slot;
    while (rc == 0 && (rc = shmds__root_take_orphan(r, &type, &slot)) == 0)
        rc = reclaim_one(r, type, slot);
    return rc == -ENOENT ? 0 : rc;
}

SHMDS_API int shmds_region_check(shmds_region *r)
{
    int rc = shmds__region_check_header(r);
    if (rc != 0)
        return rc;
    if (!shmds__rdonly(r) && (rc = shmds_region_reclaim(r)) != 0)
        return rc;
    if ((rc = shmds__region_intact(r)) != 0 || (rc = shmds__alloc_check(r)) != 0)
        return rc;
    return shmds_root_foreach(r, check_object, r);
}
