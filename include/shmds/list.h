/**
 * @file shmds/list.h
 * @brief A shared doubly linked list of byte strings, and an intrusive link
 *        for users' own structs.
 *
 * **shmds_list** is a named list inside a region: every process that opens
 * the name sees the same elements. Elements are byte strings copied in by
 * push and copied out by pop, so a caller never holds a pointer into memory
 * another process may free. Links are offsets, so each process may map the
 * region at its own address. One robust mutex guards the list; a process
 * killed in the middle of a push or pop leaves a record of what it was doing,
 * and the next process to lock the list finishes or undoes that change:
 *  - a push that returned 0 is in the list;
 *  - a pop that returned 0 removed exactly the element it returned;
 *  - a push or pop that was cut short happened entirely or not at all, and
 *    its memory is never leaked.
 *
 * Across fork(): a child may use a list handle its parent opened, as the
 * parent does, at the same time (each process has its own copy of the
 * handle, which holds only the list's offset). See shmds/region.h.
 *
 * In a region opened with SHMDS_RDONLY, shmds_list_len(),
 * shmds_list_foreach() and shmds_list_check() work without the lock: they
 * read a consistent snapshot under a sequence counter the writers bump
 * (a reader retries while a writer is mid-change). Everything that writes
 * returns SHMDS_ERDONLY there.
 *
 * **shmds_link** is a node of two offsets that users embed in their own
 * structs in a region, as the kernel's list_head: a circular list with a
 * head link as sentinel. Its helpers take no lock (guard the list with a
 * shmds_mutex of your own) but check every offset they follow and return
 * SHMDS_ECORRUPT, with nothing changed, when a link is out of bounds or its
 * neighbour does not point back:
 *
 * @code
 * struct job {                 // lives in the region
 *     shmds_link link;
 *     uint32_t id;
 * };
 * struct jobs {                // a named root (tag SHMDS_TYPE_USER)
 *     shmds_mutex lock;
 *     shmds_link head;
 * };
 *
 * // once, when the region is made:
 * shmds_off_t joff;            // from shmds_alloc(r, sizeof(struct jobs), &joff)
 * struct jobs *js = shmds_ptr(r, joff);
 * shmds_mutex_init(&js->lock);
 * shmds_link_init(r, shmds_off(r, &js->head));
 *
 * // add a job at the tail, under the user's lock:
 * struct job *j = shmds_ptr(r, job_off);
 * j->id = 7;
 * shmds_mutex_lock(&js->lock, 1000, NULL, NULL);
 * shmds_link_insert_before(r, shmds_off(r, &js->head), shmds_off(r, &j->link));
 * shmds_mutex_unlock(&js->lock);
 *
 * // walk it:
 * static int show(shmds_region *r, shmds_off_t node, void *arg)
 * {
 *     struct job *j = shmds_link_entry(r, node, struct job, link);
 *     printf("job %u\n", j->id);
 *     return 0;
 * }
 * shmds_link_foreach(r, shmds_off(r, &js->head), show, NULL);
 * @endcode
 * examples/jobs.c is a complete program built this way.
 */
#ifndef SHMDS_LIST_H
#define SHMDS_LIST_H

#include <stddef.h>

#include <shmds/common.h>
#include <shmds/region.h>

SHMDS_BEGIN_DECLS

/* ====================================================================== */
/* shmds_list                                                             */
/* ====================================================================== */

/** A process-local handle on a list in a region. */
typedef struct shmds_list shmds_list;

/**
 * Create an empty list and register it in the region's directory under
 * @p name (type SHMDS_TYPE_LIST). The name appears only once the list is
 * complete. Cost: one allocation and a directory update.
 *
 * If the process dies inside this call, the name is either free or names a
 * complete list, and nothing leaks: until the list is complete its name is
 * held by a pending directory entry that reaches its block, which
 * shmds_region_reclaim() (run by shmds_region_check()) frees; a create of the
 * same name finishes a dead creator's list of that name itself (a pending
 * name of another type stays -EEXIST until a reclaim).
 *
 * @param r    a region opened read-write.
 * @param name 1 to SHMDS_ROOT_NAME_MAX bytes.
 * @param out  receives the handle (close it with shmds_list_close()).
 * @return 0; -EINVAL NULL argument or bad name; -EEXIST the name is taken
 *         (by an object of any type); -ENOSPC the directory is full;
 *         -ENOMEM the heap is full; SHMDS_ERDONLY; -ETIMEDOUT;
 *         SHMDS_ENOTRECOVERABLE; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_list_create(shmds_region *r, const char *name, shmds_list **out);

/**
 * Open the list registered as @p name. Works in read-only regions.
 * @return 0; -EINVAL NULL argument or bad name; -ENOENT no such name;
 *         SHMDS_ETYPE the name is another kind of object; SHMDS_ECORRUPT the
 *         name points at something that is not a list; -ENOMEM (handle).
 */
SHMDS_API int shmds_list_open(shmds_region *r, const char *name, shmds_list **out);

/** Free the process-local handle. The list itself stays. NULL is a no-op. */
SHMDS_API void shmds_list_close(shmds_list *l);

/**
 * Remove the list from the region: unregister its name, free every element
 * and its header, and close @p l (also on error). No other process may use
 * the list afterwards; handles other processes still hold become invalid.
 *
 * Crash-safe: the name first goes pending (lookups no longer see it; this
 * is the commit point), then the list is marked as being destroyed (other
 * handles then get -EIDRM), its elements are freed one by one as by pops,
 * then its header, then the name. A process killed part way leaves the
 * rest to shmds_region_reclaim(); nothing leaks. Cost: O(length).
 *
 * @return 0; SHMDS_ERDONLY; -ETIMEDOUT; SHMDS_ENOTRECOVERABLE;
 *         SHMDS_ECORRUPT (the list was damaged; nothing was freed past the
 *         damage); -EIDRM the list is already being destroyed; -ENOENT its
 *         name no longer names it; -EINVAL @p l is NULL.
 */
SHMDS_API int shmds_list_destroy(shmds_list *l);

/**
 * Copy @p len bytes from @p data into a new element at the tail.
 * Cost: O(1) plus one allocation of len + 32 bytes.
 * @param[in] l    the list.
 * @param[in] data the bytes; may be NULL only when @p len is 0.
 * @param[in] len  how many.
 * @return 0 (the element is in the list, even if this process dies right
 *         after); -EINVAL; -ENOMEM the heap is full (also for any @p len
 *         larger than the heap, up to SIZE_MAX: no overflow; nothing is
 *         read or changed); SHMDS_ERDONLY;
 *         -EIDRM the list is being destroyed; -ETIMEDOUT; -EDEADLK called
 *         from inside shmds_list_foreach() on the same list;
 *         SHMDS_ENOTRECOVERABLE; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_list_push_back(shmds_list *l, const void *data, size_t len);

/** As shmds_list_push_back(), at the head. */
SHMDS_API int shmds_list_push_front(shmds_list *l, const void *data, size_t len);

/**
 * Remove the head element, copying its bytes into @p buf. Cost: O(len).
 * @param[in] l the list.
 * @param buf receives the bytes; may be NULL when @p cap is 0 (a way to ask
 *            the head's length: -ENOBUFS with @p *len set).
 * @param cap bytes available at @p buf.
 * @param len receives the element's length (also on -ENOBUFS).
 * @return 0; -ENOENT the list is empty; -ENOBUFS the element is longer than
 *         @p cap: @p *len is set and the element stays in the list;
 *         -EINVAL NULL @p l or @p len, or NULL @p buf with @p cap > 0;
 *         and the errors of shmds_list_push_back() except -ENOMEM.
 */
SHMDS_API int shmds_list_pop_front(shmds_list *l, void *buf, size_t cap, size_t *len);

/** As shmds_list_pop_front(), at the tail. */
SHMDS_API int shmds_list_pop_back(shmds_list *l, void *buf, size_t cap, size_t *len);

/**
 * The number of elements. Cost: O(1) (takes the lock, which runs a pending
 * repair; read-only regions: a snapshot without the lock).
 * @return 0; -EINVAL; -EIDRM; -ETIMEDOUT; SHMDS_ENOTRECOVERABLE; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_list_len(shmds_list *l, size_t *len);

/** The callback of shmds_list_foreach(): one element's bytes; non-zero stops the walk. */
typedef int shmds_list_foreach_fn(const void *data, size_t len, void *arg);

/**
 * Call @p fn(data, len, arg) for every element from head to tail. A non-zero
 * return from @p fn stops the walk and is returned.
 *
 * Read-write region: @p fn runs with the list's lock held and @p data points
 * into the region, valid only during the call; @p fn must not call into the
 * same list (those calls return -EDEADLK) and should be short, since every
 * other process waits for it. Read-only region: the elements are first
 * copied to process memory as one consistent snapshot (retried while a
 * writer is mid-change), then @p fn runs without any lock.
 *
 * Cost: O(total bytes).
 * @return 0; @p fn's value; -EINVAL; -EIDRM; -ENOMEM (snapshot);
 *         -ETIMEDOUT (lock, or in a read-only region: a writer died
 *         mid-change and no read-write process has repaired the list yet);
 *         SHMDS_ENOTRECOVERABLE; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_list_foreach(shmds_list *l, shmds_list_foreach_fn *fn, void *arg);

/**
 * Verify the list: its header, every node offset in bounds and inside a live
 * heap block big enough for its payload, forward and backward walks visiting
 * the same nodes in opposite orders, the length, and an idle repair record.
 * Walks are bounded, so a cycle is reported, never followed forever. Takes
 * the lock (running a pending repair); read-only regions check a snapshot,
 * links only (heap blocks may be changing under other structures' locks).
 * Cost: O(length).
 * @return 0 healthy; SHMDS_ECORRUPT; -EINVAL; -EIDRM; -ETIMEDOUT;
 *         SHMDS_ENOTRECOVERABLE.
 */
SHMDS_API int shmds_list_check(shmds_list *l);

/* ====================================================================== */
/* shmds_link: intrusive nodes                                            */
/* ====================================================================== */

/**
 * Two offsets to embed in a struct in a region. A list is circular through
 * a head link: empty when the head points at itself. A node that is in no
 * list has both offsets SHMDS_NULL (shmds_link_remove() leaves it so).
 * Offsets must be multiples of 8.
 */
typedef struct shmds_link {
    shmds_off_t next; /**< the following link (the head at the end) */
    shmds_off_t prev; /**< the preceding link (the head at the start) */
} shmds_link;

/**
 * The struct containing the link at offset @p off: the shared-memory
 * container_of. @p type is the struct, @p member the name of its shmds_link.
 */
#define shmds_link_entry(r, off, type, member) \
    ((type *)(void *)((unsigned char *)shmds_ptr((r), (off)) - offsetof(type, member)))

/**
 * Make the link at @p head an empty list. O(1).
 * @return 0; -EINVAL @p head is not an aligned offset inside the heap;
 *         SHMDS_ERDONLY.
 */
SHMDS_API int shmds_link_init(shmds_region *r, shmds_off_t head);

/**
 * Insert @p node right after @p pos (after the head: at the front). @p node
 * must be in no list. O(1).
 * @return 0; -EINVAL an offset is not an aligned heap offset, or
 *         @p node == @p pos; SHMDS_ECORRUPT @p pos's next link is out of
 *         bounds or does not point back (nothing changed); SHMDS_ERDONLY.
 */
SHMDS_API int shmds_link_insert_after(shmds_region *r, shmds_off_t pos, shmds_off_t node);

/** Insert @p node right before @p pos (before the head: at the back). As
 *  shmds_link_insert_after(). */
SHMDS_API int shmds_link_insert_before(shmds_region *r, shmds_off_t pos, shmds_off_t node);

/**
 * Unlink @p node from its list and set its offsets to SHMDS_NULL. O(1).
 * @return 0; -EINVAL bad offset, or @p node is in no list (or is an empty
 *         head); SHMDS_ECORRUPT a neighbour is out of bounds or does not
 *         point back (nothing changed); SHMDS_ERDONLY.
 */
SHMDS_API int shmds_link_remove(shmds_region *r, shmds_off_t node);

/**
 * The link after (shmds_link_next) or before (shmds_link_prev) @p node,
 * checked: in bounds and pointing back at @p node. At the end of a list the
 * result is the head. Work in read-only regions. O(1).
 * @return 0; -EINVAL bad @p node or NULL @p out, or @p node is in no list;
 *         SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_link_next(shmds_region *r, shmds_off_t node, shmds_off_t *out);
/** See shmds_link_next(). */
SHMDS_API int shmds_link_prev(shmds_region *r, shmds_off_t node, shmds_off_t *out);

/**
 * @return 1 when the list at @p head is empty, 0 when not; -EINVAL bad
 *         offset or @p head in no list; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_link_empty(shmds_region *r, shmds_off_t head);

/** The callback of shmds_link_foreach(): one node; non-zero stops the walk. */
typedef int shmds_link_foreach_fn(shmds_region *r, shmds_off_t node, void *arg);

/**
 * Call @p fn(r, node, arg) for each node of the list at @p head, front to
 * back. The next node is read before @p fn runs, so @p fn may remove (and
 * free) the node it is given. A non-zero return from @p fn stops the walk
 * and is returned. Every link followed is checked and the walk is bounded
 * by the heap's size, so a damaged or cyclic list ends it with
 * SHMDS_ECORRUPT. Works in read-only regions. O(length).
 * @return 0; @p fn's value; -EINVAL; SHMDS_ECORRUPT.
 */
SHMDS_API int shmds_link_foreach(shmds_region *r, shmds_off_t head, shmds_link_foreach_fn *fn,
                                 void *arg);

SHMDS_END_DECLS

#endif
