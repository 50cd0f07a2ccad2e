/*
 * The object layer: create, destroy, reclaim and check of the library's
 * named objects, through one ops table per type tag (object.h).
 *
 * Layer: structures -> object -> allocator -> region. Nothing here knows a
 * structure; the structures hand in their ops table.
 *
 * Create: reserve the name as a pending entry owned by this process (a dead
 * owner's pending entry of the same name and type is finished first: only
 * that one, never an unrelated orphan, and under no lock of the caller's);
 * allocate the header block zeroed into the entry; let the type fill in
 * the header; publish. Destroy: unpublish (the commit point), the type's
 * teardown, free the header block through the entry, drop the entry. A
 * process killed anywhere in either leaves an orphan whose blocks the
 * entry reaches; shmds__obj_reclaim finishes it.
 */
#include "object.h"

#include <string.h>

/* Allocator blocks are 16-aligned; a header wants 64: take 48 bytes more
 * and round up inside (shmds__hdr_of). */
#define HDR_SLACK (64 - 16)

bool shmds__obj_name_ok(const char *name)
{
    if (name == NULL)
        return false;
    size_t n = strnlen(name, SHMDS_ROOT_NAME_MAX + 1);
    return n > 0 && n <= SHMDS_ROOT_NAME_MAX;
}

int shmds__obj_reclaim(shmds_region *r, const struct shmds__obj_ops *ops, shmds_off_t *slot)
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
        if (ops != NULL)
            rc = ops->teardown_at(r, shmds__hdr_of(blk));
        SHMDS_FAULT("object.reclaim.reached");
        if (rc == 0 && (rc = shmds__free_from(r, slot)) == -EINVAL)
            rc = SHMDS_ECORRUPT; /* the entry names no block */
    }
    SHMDS_FAULT("object.reclaim.freed");
    return rc == 0 ? shmds__root_drop(r, slot) : rc;
}

/* Reserve `name`; when a dead process's pending create or destroy of the
 * same name and type holds it, finish that one and reserve again. */
static int reserve(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                   shmds_off_t **slot)
{
    int rc = shmds__root_reserve(r, name, ops->type, slot);
    if (rc != -EAGAIN)
        return rc;
    uint32_t type;
    shmds_off_t *orphan;
    rc = shmds__root_take_orphan(r, name, ops->type, &type, &orphan);
    if (rc == 0)
        rc = shmds__obj_reclaim(r, ops, orphan);
    if (rc == 0)
        rc = shmds__root_reserve(r, name, ops->type, slot);
    /* Another type's orphan, or one another process is finishing. */
    return rc == -ENOENT || rc == -EAGAIN ? -EEXIST : rc;
}

int shmds__obj_create(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                      uint64_t hdr_size, shmds__obj_init_fn *init, void *arg, shmds_off_t *off)
{
    SHMDS_ASSERT(shmds__type_is_object(ops->type),
                 "the region reports header offsets only for the object layer's tags");
    if (!shmds__obj_name_ok(name) || hdr_size > UINT64_MAX - HDR_SLACK)
        return -EINVAL;
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    shmds_off_t *slot;
    if ((rc = reserve(r, ops, name, &slot)) != 0)
        return rc;
    SHMDS_FAULT("object.create.reserved");
    if ((rc = shmds__alloc_zeroed_into(r, hdr_size + HDR_SLACK, slot)) != 0)
        goto fail;
    SHMDS_FAULT("object.create.allocated");
    shmds_off_t block = *slot;
    shmds_off_t hdr = shmds__hdr_of(block);
    if (shmds__ptr_chk(r, hdr, hdr_size, 64) == NULL) {
        rc = SHMDS_ECORRUPT;
        goto fail;
    }
    if ((rc = init(r, hdr, block, arg)) != 0) {
        if (ops->teardown_at(r, hdr) != 0)
            return rc; /* left pending: an orphan once we exit */
        goto fail;
    }
    SHMDS_FAULT("object.create.before_publish");
    if ((rc = shmds__root_publish(r, slot)) != 0)
        goto fail;
    *off = hdr;
    return 0;

fail:
    if (shmds__free_from(r, slot) == 0)
        shmds__root_drop(r, slot);
    return rc;
}

int shmds__obj_create_attach(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                             uint64_t hdr_size, shmds__obj_init_fn *init, void *arg,
                             void **handle)
{
    shmds_off_t off;
    int rc = shmds__obj_create(r, ops, name, hdr_size, init, arg, &off);
    if (rc == 0 && (rc = ops->attach(r, off, name, handle)) != 0)
        shmds__obj_destroy(r, ops, name, off);
    return rc;
}

int shmds__obj_open(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                    void **handle)
{
    if (!shmds__obj_name_ok(name))
        return -EINVAL;
    shmds_off_t off;
    int rc = shmds__root_find_typed(r, name, ops->type, &off);
    return rc != 0 ? rc : ops->attach(r, off, name, handle);
}

int shmds__obj_destroy(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                       shmds_off_t off)
{
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    /* The commit point: the name goes pending, owned by us; from here the
     * destroy rolls forward (a reclaim finishes it if we die). */
    shmds_off_t *slot;
    if ((rc = shmds__root_unpublish(r, name, ops->type, off, &slot)) != 0)
        return rc;
    SHMDS_FAULT("object.destroy.unpublished");
    if ((rc = ops->teardown_at(r, off)) != 0)
        return rc;
    if ((rc = shmds__free_from(r, slot)) != 0)
        return rc;
    SHMDS_FAULT("object.destroy.freed");
    if ((rc = shmds__root_drop(r, slot)) != 0)
        return rc;
    /* Hand back what no reader holds now (the retired entries and tables
     * included; the last retire block too once no object is left), so a
     * destroy with no reader about leaves the heap as it was before the
     * object. */
    (void)shmds__guard_reclaim(r); /* best effort: the destroy is done */
    return 0;
}

/* fn on the object at `off`, holding the directory after checking that
 * it is still published there. */
static int pinned(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                  shmds_off_t off, int (*fn)(shmds_region *, shmds_off_t))
{
    int rc = shmds__root_hold(r, name, ops->type, off);
    if (rc == -ENOENT)
        return 0;
    if (rc != 0)
        return rc;
    rc = fn(r, off);
    shmds__root_release(r);
    return rc;
}

int shmds__obj_check(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                     shmds_off_t off)
{
    if (shmds__rdonly(r)) {
        int rc = ops->check_at(r, off);
        if (rc != 0 && shmds__root_published(r, name, ops->type, off) != 0)
            return 0; /* destroyed while we looked */
        return rc;
    }
    return pinned(r, ops, name, off, ops->check_at);
}

int shmds__obj_settle(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                      shmds_off_t off)
{
    return ops->settle_at == NULL ? 0 : pinned(r, ops, name, off, ops->settle_at);
}
