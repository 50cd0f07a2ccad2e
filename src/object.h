/*
 * The object layer (object.c): the lifecycle of the library's named
 * objects — lists, maps, queues, tables — written once.
 *
 * Layer: above the allocator and the region, below the structures. The
 * structures call down into it (create, destroy); check.c, above the
 * structures, runs the region-wide passes as a loop over their ops tables.
 * It never calls a structure by name and never runs a region-wide pass on a
 * structure's behalf.
 *
 * An object is a header block allocated into its directory entry (the
 * entry's `off` is the allocator slot; the header is the 64-byte aligned
 * shmds__hdr_of(off) inside it) under a name that is first *pending*, owned
 * by the process creating or destroying it (region.c, pending entries). So
 * at every instant each of its blocks is reachable from the directory, and
 * a dead owner's half-done create or destroy is an orphan that a reclaim
 * finishes with the type's own teardown.
 */
#ifndef SHMDS_OBJECT_H
#define SHMDS_OBJECT_H

#include "internal.h"

/* What the object layer needs from a structure: one table per type tag. */
struct shmds__obj_ops {
    uint32_t type; /* SHMDS_TYPE_LIST .. SHMDS__TYPE_OBJ_LAST */
    /* Validate the header at `off` (and, when the type keeps its name in
     * the header, that it is the object `name`) and make a process-local
     * handle, which keeps a copy of `name` for shmds__obj_destroy. */
    int (*attach)(shmds_region *r, shmds_off_t off, const char *name, void **handle);
    /* Free everything the header at `off` reaches except the header's own
     * block, and clear its magic. The header is all zeros (a create that
     * died before writing it), complete, or as a killed teardown left it.
     * Idempotent and killable. */
    int (*teardown_at)(shmds_region *r, shmds_off_t off);
    /* Check the object at `off`, as the type's public check does, plus
     * SHMDS_ECORRUPT for a header that does not validate. Called by
     * shmds__obj_check with the object pinned (see there). */
    int (*check_at)(shmds_region *r, shmds_off_t off);
    /* Finish what dead processes left in the object at `off` (a table: a
     * dead builder's block); NULL for types that leave nothing outside
     * their own repairs. Called by shmds__obj_settle with the object
     * pinned, as check_at. */
    int (*settle_at)(shmds_region *r, shmds_off_t off);
};

extern const struct shmds__obj_ops shmds__list_ops;
extern const struct shmds__obj_ops shmds__map_ops;
extern const struct shmds__obj_ops shmds__queue_ops;
extern const struct shmds__obj_ops shmds__table_ops;

/* Fill in the header at `off` (64-byte aligned, `hdr_size` bytes, zeroed)
 * inside the block starting at `block`, storing the type's magic last with
 * release order. May allocate (into slots inside the header: teardown_at
 * frees them). */
typedef int shmds__obj_init_fn(shmds_region *r, shmds_off_t off, shmds_off_t block, void *arg);

/* One name check for every named object: 1..SHMDS_ROOT_NAME_MAX bytes. */
bool shmds__obj_name_ok(const char *name);

/* Create the object `name` of ops->type with a header of `hdr_size` bytes:
 * reserve the name (finishing a dead owner's pending entry of the same
 * name and type first), allocate the header block into the entry, run
 * init, publish (the commit point). *off receives the header's offset.
 * -EINVAL (bad name), SHMDS_ERDONLY, -EEXIST (the name is taken, pending or
 * not), -ENOSPC, -ENOMEM, init's errors, lock errors. On error nothing is
 * left behind (or, if the cleanup itself failed, an orphan for a reclaim). */
int shmds__obj_create(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                      uint64_t hdr_size, shmds__obj_init_fn *init, void *arg, shmds_off_t *off);
/* shmds__obj_create, then ops->attach: *handle for the new object (one
 * that cannot be attached is destroyed again). */
int shmds__obj_create_attach(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                             uint64_t hdr_size, shmds__obj_init_fn *init, void *arg,
                             void **handle);
/* Open the published object `name` of ops->type: -EINVAL bad name,
 * -ENOENT, SHMDS_ETYPE (another type), SHMDS_ECORRUPT, attach's errors. */
int shmds__obj_open(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                    void **handle);

/* Destroy the published object `name` of ops->type whose header is at
 * `off`: unpublish (the commit point; from here a reclaim finishes it if
 * this process dies), teardown, free the header, drop the name. -ENOENT
 * when the visible entry `name` does not name that object. The handles
 * keep the name they were opened by for this (attach copies it). */
int shmds__obj_destroy(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                       shmds_off_t off);

/* Finish the orphan whose entry (taken over by this process) has slot
 * `slot`: teardown (ops NULL: a type without one), free the header block,
 * drop the entry. Holds no lock of its own. */
int shmds__obj_reclaim(shmds_region *r, const struct shmds__obj_ops *ops, shmds_off_t *slot);

/* Check the object `name` of ops->type at `off` (listed by a directory walk)
 * so that a concurrent destroy cannot free it under the check: in a
 * writable region the check runs holding the directory, after checking
 * that the object is still published there; a read-only check (which takes
 * no lock and follows only checked offsets) keeps a failure only when the
 * object is still published afterwards. 0 when the object is gone. */
int shmds__obj_check(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                     shmds_off_t off);
/* ops->settle_at on the object `name` at `off` (writable regions), pinned
 * as a writable check is. 0 when the object is gone or the type has no
 * settle_at. */
int shmds__obj_settle(shmds_region *r, const struct shmds__obj_ops *ops, const char *name,
                      shmds_off_t off);

#endif
