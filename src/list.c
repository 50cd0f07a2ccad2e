/*
 * The shared doubly linked list (shmds_list) and intrusive links (shmds_link).
 *
 * Layer: a structure. Calls down into the object layer (create, open,
 * destroy: shmds__list_ops), the allocator, lock.c and the region; never
 * into another structure or the region-wide passes (check.c).
 *
 * A list is a header block in the heap, registered in the directory, and one
 * heap block per element: {prev, next, len, owner} followed by the payload.
 * Links are offsets; `owner` is the header's offset, so a node of another
 * list (or a stray block) is told apart. The header holds the robust mutex,
 * the two ends, the length, a sequence counter and the intent log.
 *
 * Crash consistency (DESIGN.md section 4). Every change runs under the mutex
 * and is described first in the log {op, end, phase, node, nb, old_len}:
 *
 *  push  op=PUSH phase=ALLOC is written, then the allocator stores the new
 *        block's offset straight into log.node (shmds__alloc_into), the node
 *        is filled in and the old end and length are logged; storing
 *        phase=LINK is the commit point. Linking is a sequence of stores
 *        computed only from the log, so it can be redone from the start.
 *  pop   the payload is copied out first (nothing changed yet); then node,
 *        new end and old length are logged and op=POP stored last: that is
 *        the commit point. Unlinking is redone from the log, then the node is
 *        freed through the slot (shmds__free_from clears log.node as part of
 *        its own commit, so the free happens exactly once).
 *
 * The log is cleared (op=NONE, then node=0) after the change. The repair that
 * runs when a locker finds the previous owner dead first settles the
 * allocator (so log.node holds exactly the block that is allocated for it,
 * or 0), then: op=NONE -> clear a stale node slot; PUSH before LINK -> free
 * the node (rolled back: that push never returned); PUSH at LINK or POP ->
 * redo the linking or unlinking and clear the log (rolled forward). Every
 * step is a plain assignment of logged values, so the repair is idempotent
 * and may itself be killed. A push that returned 0 therefore is in the
 * list, a pop that returned 0 took exactly its element out, an interrupted
 * one is all or nothing, and no node is ever lost to the heap.
 *
 * Read-only attachments cannot take the mutex (it is in a read-only
 * mapping). Writers bump `seq` to odd before the first store a reader could
 * see and back to even after the last one, so len / foreach / check in a
 * read-only region read a snapshot under that sequence lock and retry while
 * it is odd or changes (bounded by the region's lock timeout: a writer dead
 * mid-change is only repaired by a read-write process). Everything read is
 * checked and every walk bounded, so a torn snapshot can only cause a retry.
 *
 * Stores that a crash must see in program order are __atomic release
 * stores, so the compiler cannot move them across each other.
 */
#include "object.h"

#include <sched.h>
#include <stdlib.h>
#include <string.h>

/* "SDSLIST1" read as a little-endian word. */
#define LIST_MAGIC UINT64_C(0x3154534c53445353)

enum { END_FRONT = 0, END_BACK = 1 };
enum { OP_NONE = 0, OP_PUSH = 1, OP_POP = 2 };
enum { PHASE_ALLOC = 1, PHASE_LINK = 2 };
enum { STATE_LIVE = 1, STATE_DYING = 2 };

#define PUT(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define GET(p) __atomic_load_n((p), __ATOMIC_RELAXED)

/* ---------------------------------------------------------------------------
 * Shared layout
 * ------------------------------------------------------------------------ */

struct list_log {
    uint32_t op;      /* OP_*; stored last when a record is written */
    uint32_t end;     /* END_FRONT or END_BACK */
    uint32_t phase;   /* push only: PHASE_ALLOC, then PHASE_LINK (commit) */
    uint32_t reserved;
    uint64_t node;    /* allocator slot: the node pushed or popped */
    uint64_t nb;      /* push: the old end; pop: the new end (0 for none) */
    uint64_t old_len; /* length before the change */
};
SHMDS__STATIC_ASSERT(sizeof(struct list_log) == 40, "list log is 40 bytes");

struct list_hdr {
    shmds_mutex lock;
    uint64_t magic;   /* LIST_MAGIC; cleared when destroyed */
    uint64_t block;   /* heap block holding this header (it is 64-aligned within) */
    uint64_t ends[2]; /* [END_FRONT] head, [END_BACK] tail; 0 when empty */
    uint64_t len;
    uint64_t seq;     /* odd while a writer changes what readers see */
    uint32_t state;   /* STATE_* */
    uint32_t reserved;
    struct list_log log;
    char name[SHMDS_ROOT_NAME_MAX + 1];
    uint8_t pad[48];
};
SHMDS__STATIC_ASSERT(sizeof(shmds_mutex) == 64, "mutex fills one cache line");
SHMDS__STATIC_ASSERT(sizeof(struct list_hdr) == 256, "list header is 256 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct list_hdr, magic) == 64, "format: list magic");
SHMDS__STATIC_ASSERT(offsetof(struct list_hdr, ends) == 80, "format: list ends");
SHMDS__STATIC_ASSERT(offsetof(struct list_hdr, len) == 96, "format: list len");
SHMDS__STATIC_ASSERT(offsetof(struct list_hdr, seq) == 104, "format: list seq");
SHMDS__STATIC_ASSERT(offsetof(struct list_hdr, log) == 120, "format: list log");
SHMDS__STATIC_ASSERT(offsetof(struct list_hdr, name) == 160, "format: list name");

struct list_node {
    uint64_t link[2]; /* [0] toward the head (prev), [1] toward the tail (next) */
    uint64_t len;     /* payload bytes */
    uint64_t owner;   /* offset of the list's header */
    unsigned char data[];
};
SHMDS__STATIC_ASSERT(sizeof(struct list_node) == 32, "list node header is 32 bytes");
SHMDS__STATIC_ASSERT(offsetof(struct list_node, owner) == 24, "format: node owner");

/* A node's link toward end e is link[e]: prev for the front, next for the
 * back. Push at end e: node.link[e] = 0, node.link[1-e] = old end. */

#define NODE_ALIGN 16
/* Allocator blocks are 16-aligned; the header needs 64. */
#define HDR_ALLOC (sizeof(struct list_hdr) + 64 - NODE_ALIGN)

/* ---------------------------------------------------------------------------
 * Handle and checked access
 * ------------------------------------------------------------------------ */

struct shmds_list {
    shmds_region *r;
    shmds_off_t off;
    struct list_hdr *h;
    uint64_t max_nodes; /* bound on every walk */
    char name[SHMDS_ROOT_NAME_MAX + 1]; /* opened by (shmds__obj_destroy) */
};

/* The node at `off` when it is in bounds, aligned, belongs to this list and
 * its payload fits in the heap; else NULL. The payload length it checked
 * goes to *lenp (when not NULL), read once: whoever copies the payload uses
 * that, never a second read of the node. */
static struct list_node *node_at(const shmds_list *l, uint64_t off, uint64_t *lenp)
{
    struct list_node *n = shmds__ptr_chk(l->r, off, sizeof *n, NODE_ALIGN);
    if (n == NULL || GET(&n->owner) != l->off)
        return NULL;
    uint64_t len = GET(&n->len);
    if (!shmds__off_ok(l->r, off + sizeof *n, len, 1))
        return NULL;
    if (lenp != NULL)
        *lenp = len;
    return n;
}

/* ---------------------------------------------------------------------------
 * Roll-forward steps: stores computed from the log only, so each can be
 * redone from its start after a crash at any point.
 * ------------------------------------------------------------------------ */

static int push_apply(shmds_list *l)
{
    struct list_hdr *h = l->h;
    struct list_log *g = &h->log;
    uint32_t e = GET(&g->end);
    uint64_t off = GET(&g->node), nb = GET(&g->nb);
    struct list_node *n = node_at(l, off, NULL);
    if (e > END_BACK || n == NULL)
        return SHMDS_ECORRUPT;
    struct list_node *nbn = NULL;
    if (nb != 0 && (nbn = node_at(l, nb, NULL)) == NULL)
        return SHMDS_ECORRUPT;

    shmds__seq_write_begin(&h->seq);
    PUT(&n->link[e], 0);
    PUT(&n->link[1 - e], nb);
    if (nbn != NULL)
        PUT(&nbn->link[e], off);
    else
        PUT(&h->ends[1 - e], off);
    SHMDS_FAULT("list.push.neighbour_linked");
    PUT(&h->ends[e], off);
    PUT(&h->len, GET(&g->old_len) + 1);
    shmds__seq_write_end(&h->seq);
    SHMDS_FAULT("list.push.linked");
    PUT(&g->op, OP_NONE);
    PUT(&g->node, 0);
    return 0;
}

static int pop_apply(shmds_list *l)
{
    struct list_hdr *h = l->h;
    struct list_log *g = &h->log;
    uint32_t e = GET(&g->end);
    uint64_t nb = GET(&g->nb), old_len = GET(&g->old_len);
    struct list_node *nbn = NULL;
    if (e > END_BACK || old_len == 0)
        return SHMDS_ECORRUPT;
    if (nb != 0 && (nbn = node_at(l, nb, NULL)) == NULL)
        return SHMDS_ECORRUPT;

    shmds__seq_write_begin(&h->seq);
    PUT(&h->ends[e], nb);
    if (nbn != NULL)
        PUT(&nbn->link[e], 0);
    else
        PUT(&h->ends[1 - e], 0);
    SHMDS_FAULT("list.pop.ends_moved");
    PUT(&h->len, old_len - 1);
    shmds__seq_write_end(&h->seq);
    SHMDS_FAULT("list.pop.unlinked");
    int rc = shmds__free_from(l->r, &g->node);
    if (rc != 0)
        return rc;
    SHMDS_FAULT("list.pop.freed");
    PUT(&g->op, OP_NONE);
    return 0;
}

/* The repair run by a locker that found the previous owner dead (lock held).
 * Idempotent and killable: see the top of the file. */
static int list_repair(void *arg)
{
    shmds_list *l = arg;
    struct list_log *g = &l->h->log;
    SHMDS_FAULT("list.repair.start");
    int rc = shmds__alloc_settle(l->r);
    if (rc < 0)
        return rc;
    SHMDS_FAULT("list.repair.settled");
    switch (GET(&g->op)) {
    case OP_NONE:
        /* A record being written, or a finished change: the node (if any)
         * is linked, not owned by the log. */
        PUT(&g->node, 0);
        break;
    case OP_PUSH:
        if (GET(&g->phase) == PHASE_LINK) {
            rc = push_apply(l);
        } else {
            rc = shmds__free_from(l->r, &g->node);
            SHMDS_FAULT("list.repair.push_undone");
            if (rc == 0)
                PUT(&g->op, OP_NONE);
        }
        break;
    case OP_POP:
        rc = pop_apply(l);
        break;
    default:
        rc = SHMDS_ECORRUPT;
        break;
    }
    if (rc != 0)
        return rc;
    shmds__seq_write_end(&l->h->seq);
    return 0;
}

/* Take the list's lock (repairing if needed) and check the header.
 * `dying_ok`: destroy and check may proceed on a list being destroyed. */
static int list_lock(shmds_list *l, bool dying_ok)
{
    int rc = shmds__writable(l->r);
    if (rc != 0)
        return rc;
    struct list_hdr *h = l->h;
    if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != LIST_MAGIC)
        return -EIDRM;
    rc = shmds__lock(l->r, &h->lock, list_repair, l);
    if (rc < 0)
        return rc;
    rc = 0;
    /* A record left by a holder that returned an error without dying (a
     * damaged heap): finish it as a dead owner's would be. */
    if (GET(&h->log.op) != OP_NONE || GET(&h->log.node) != 0)
        rc = list_repair(l);
    uint32_t st = GET(&h->state);
    if (rc == 0 && (GET(&h->magic) != LIST_MAGIC || (st == STATE_DYING && !dying_ok)))
        rc = -EIDRM;
    if (rc == 0 && st != STATE_LIVE && st != STATE_DYING)
        rc = SHMDS_ECORRUPT;
    if (rc != 0)
        shmds_mutex_unlock(&h->lock);
    return rc;
}

static void list_unlock(shmds_list *l)
{
    shmds_mutex_unlock(&l->h->lock);
}

/* ---------------------------------------------------------------------------
 * Push and pop (lock held)
 * ------------------------------------------------------------------------ */

static int push_locked(shmds_list *l, uint32_t e, const void *data, size_t len)
{
    SHMDS_ASSERT(shmds__mutex_held(&l->h->lock), "the list lock serialises its intent log");
    struct list_hdr *h = l->h;
    struct list_log *g = &h->log;
    shmds_region *r = l->r;

    uint64_t old = GET(&h->ends[e]);
    const struct list_node *oldn = old != 0 ? node_at(l, old, NULL) : NULL;
    if (old != 0 && (oldn == NULL || GET(&oldn->link[e]) != 0))
        return SHMDS_ECORRUPT;
    if ((old == 0) != (GET(&h->len) == 0))
        return SHMDS_ECORRUPT;

    PUT(&g->end, e);
    PUT(&g->phase, PHASE_ALLOC);
    PUT(&g->op, OP_PUSH);
    SHMDS_FAULT("list.push.logged");
    int rc = shmds__alloc_into(r, sizeof(struct list_node) + len, &g->node);
    if (rc != 0) {
        PUT(&g->op, OP_NONE);
        return rc;
    }
    SHMDS_FAULT("list.push.allocated");
    uint64_t off = GET(&g->node);
    struct list_node *n = shmds__ptr_chk(r, off, sizeof *n + len, NODE_ALIGN);
    if (n == NULL)
        return SHMDS_ECORRUPT; /* a damaged heap: the next locker's repair frees it */
    n->link[e] = 0;
    n->link[1 - e] = old;
    n->len = len;
    n->owner = l->off;
    if (len > 0)
        memcpy(n->data, data, len);
    PUT(&g->nb, old);
    PUT(&g->old_len, GET(&h->len));
    SHMDS_FAULT("list.push.filled");
    PUT(&g->phase, PHASE_LINK); /* commit point */
    SHMDS_FAULT("list.push.committed");
    return push_apply(l);
}

/* Pop at end e. `buf` NULL with cap 0: drop the element (destroy). */
static int pop_locked(shmds_list *l, uint32_t e, void *buf, size_t cap, size_t *len)
{
    SHMDS_ASSERT(shmds__mutex_held(&l->h->lock), "the list lock serialises its intent log");
    struct list_hdr *h = l->h;
    struct list_log *g = &h->log;
    uint64_t off = GET(&h->ends[e]);
    uint64_t count = GET(&h->len);
    if (off == 0)
        return count == 0 ? -ENOENT : SHMDS_ECORRUPT;
    uint64_t nlen;
    struct list_node *n = node_at(l, off, &nlen);
    if (n == NULL || count == 0 || GET(&n->link[e]) != 0)
        return SHMDS_ECORRUPT;
    uint64_t nb = GET(&n->link[1 - e]);
    if (nb == 0) {
        if (GET(&h->ends[1 - e]) != off || count != 1)
            return SHMDS_ECORRUPT;
    } else {
        struct list_node *nbn = node_at(l, nb, NULL);
        if (nbn == NULL || GET(&nbn->link[e]) != off)
            return SHMDS_ECORRUPT;
    }
    if (len != NULL) {
        *len = (size_t)nlen;
        if (nlen > cap)
            return -ENOBUFS;
        if (nlen > 0)
            memcpy(buf, n->data, (size_t)nlen);
    }

    PUT(&g->end, e);
    PUT(&g->node, off);
    PUT(&g->nb, nb);
    PUT(&g->old_len, count);
    SHMDS_FAULT("list.pop.logging");
    PUT(&g->op, OP_POP); /* commit point */
    SHMDS_FAULT("list.pop.committed");
    return pop_apply(l);
}

static int push(shmds_list *l, uint32_t e, const void *data, size_t len)
{
    if (l == NULL || (data == NULL && len > 0))
        return -EINVAL;
    if (len > l->r->heap_max - l->r->heap_off)
        return -ENOMEM;
    int rc = list_lock(l, false);
    if (rc != 0)
        return rc;
    rc = push_locked(l, e, data, len);
    list_unlock(l);
    return rc;
}

static int pop(shmds_list *l, uint32_t e, void *buf, size_t cap, size_t *len)
{
    if (l == NULL || len == NULL || (buf == NULL && cap > 0))
        return -EINVAL;
    int rc = list_lock(l, false);
    if (rc != 0)
        return rc;
    size_t got = 0;
    rc = pop_locked(l, e, buf, cap, &got);
    list_unlock(l);
    if (rc == 0 || rc == -ENOBUFS)
        *len = got;
    return rc;
}

SHMDS_API int shmds_list_push_back(shmds_list *l, const void *data, size_t len)
{
    return push(l, END_BACK, data, len);
}

SHMDS_API int shmds_list_push_front(shmds_list *l, const void *data, size_t len)
{
    return push(l, END_FRONT, data, len);
}

SHMDS_API int shmds_list_pop_front(shmds_list *l, void *buf, size_t cap, size_t *len)
{
    return pop(l, END_FRONT, buf, cap, len);
}

SHMDS_API int shmds_list_pop_back(shmds_list *l, void *buf, size_t cap, size_t *len)
{
    return pop(l, END_BACK, buf, cap, len);
}

/* ---------------------------------------------------------------------------
 * Walks
 * ------------------------------------------------------------------------ */

/* Growing process-local copy of the elements: per element a uint64_t length
 * then the bytes, padded to 8. */
/* A snapshot: each element as its length (8 bytes) and its bytes, padded
 * to 8. */
static int snap_add(struct shmds__buf *s, const void *data, uint64_t len)
{
    static const unsigned char pad[8];
    size_t at = s->len;
    int rc = shmds__buf_put(s, &len, sizeof len);
    if (rc == 0)
        rc = shmds__buf_put(s, data, (size_t)len);
    if (rc == 0)
        rc = shmds__buf_put(s, pad, (8 - (size_t)len % 8) % 8);
    if (rc != 0)
        s->len = at;
    return rc;
}

static int walk(shmds_list *l, struct shmds__buf *s, bool full)
{
    struct list_hdr *h = l->h;
    uint64_t count = GET(&h->len);
    uint64_t head = GET(&h->ends[END_FRONT]), tail = GET(&h->ends[END_BACK]);
    if (count > l->max_nodes)
        return SHMDS_ECORRUPT;

    uint64_t prev = 0, cur = head, seen = 0;
    while (cur != 0) {
        if (seen >= count)
            return SHMDS_ECORRUPT; /* longer than its length: a cycle or a stray link */
        uint64_t nlen;
        struct list_node *n = node_at(l, cur, &nlen);
        if (n == NULL || GET(&n->link[0]) != prev)
            return SHMDS_ECORRUPT;
        if (full && !shmds__rdonly(l->r)) {
            uint64_t usable;
            if (shmds__alloc_block_live(l->r, cur, &usable) != 0 ||
                usable < sizeof *n || usable - sizeof *n < nlen)
                return SHMDS_ECORRUPT;
        }
        if (s != NULL) {
            int rc = snap_add(s, n->data, nlen);
            if (rc != 0)
                return rc;
        }
        prev = cur;
        cur = GET(&n->link[1]);
        seen++;
    }
    if (seen != count || prev != tail)
        return SHMDS_ECORRUPT;
    if (!full)
        return 0;

    uint64_t next = 0;
    cur = tail;
    seen = 0;
    while (cur != 0) {
        if (seen >= count)
            return SHMDS_ECORRUPT;
        struct list_node *n = node_at(l, cur, NULL);
        if (n == NULL || GET(&n->link[1]) != next)
            return SHMDS_ECORRUPT;
        next = cur;
        cur = GET(&n->link[0]);
        seen++;
    }
    return (seen == count && next == head) ? 0 : SHMDS_ECORRUPT;
}

/* Read-only regions: run walk() until it sees a stable, even sequence.
 * A writer stuck mid-change past the lock timeout has died, and only a
 * read-write process can repair it: -ETIMEDOUT. */
static int walk_snapshot(shmds_list *l, struct shmds__buf *s, bool full, uint64_t *len)
{
    struct list_hdr *h = l->h;
    struct shmds__wait w = {0};
    for (;;) {
        uint64_t s1 = shmds__seq_read_begin(&h->seq);
        if ((s1 & 1) == 0) {
            if (s != NULL)
                s->len = 0;
            uint64_t n = GET(&h->len);
            int rc = (s != NULL || full) ? walk(l, s, full) : 0;
            if (shmds__seq_read_ok(&h->seq, s1)) {
                if (len != NULL)
                    *len = n;
                return rc;
            }
            if (rc == -ENOMEM)
                return rc;
        }
        int rc = shmds__seq_wait(l->r, &w, &h->seq, NULL, NULL, NULL);
        if (rc != 0)
            return rc;
    }
}

SHMDS_API int shmds_list_len(shmds_list *l, size_t *len)
{
    if (l == NULL || len == NULL)
        return -EINVAL;
    if (shmds__rdonly(l->r)) {
        if (__atomic_load_n(&l->h->magic, __ATOMIC_ACQUIRE) != LIST_MAGIC ||
            GET(&l->h->state) != STATE_LIVE)
            return -EIDRM;
        uint64_t n;
        int rc = walk_snapshot(l, NULL, false, &n);
        if (rc == 0)
            *len = (size_t)n;
        return rc;
    }
    int rc = list_lock(l, false);
    if (rc != 0)
        return rc;
    uint64_t n = GET(&l->h->len);
    list_unlock(l);
    if (n > l->max_nodes)
        return SHMDS_ECORRUPT;
    *len = (size_t)n;
    return 0;
}

static int foreach_snapshot(shmds_list *l, shmds_list_foreach_fn *fn, void *arg)
{
    if (__atomic_load_n(&l->h->magic, __ATOMIC_ACQUIRE) != LIST_MAGIC ||
        GET(&l->h->state) != STATE_LIVE)
        return -EIDRM;
    struct shmds__buf s = {NULL, 0, 0};
    int rc = walk_snapshot(l, &s, false, NULL);
    for (size_t at = 0; rc == 0 && at < s.len;) {
        uint64_t n;
        memcpy(&n, s.p + at, sizeof n);
        rc = fn(s.p + at + sizeof n, (size_t)n, arg);
        at += sizeof n + (((size_t)n + 7) & ~(size_t)7);
    }
    free(s.p);
    return rc;
}

SHMDS_API int shmds_list_foreach(shmds_list *l, shmds_list_foreach_fn *fn, void *arg)
{
    if (l == NULL || fn == NULL)
        return -EINVAL;
    int rc = shmds__region_intact(l->r);
    if (rc != 0)
        return rc;
    if (shmds__rdonly(l->r))
        return foreach_snapshot(l, fn, arg);
    rc = list_lock(l, false);
    if (rc != 0)
        return rc;
    struct list_hdr *h = l->h;
    uint64_t count = GET(&h->len), prev = 0, cur = GET(&h->ends[END_FRONT]), seen = 0;
    while (rc == 0 && cur != 0) {
        uint64_t nlen;
        struct list_node *n = node_at(l, cur, &nlen);
        if (seen++ >= count || n == NULL || GET(&n->link[0]) != prev) {
            rc = SHMDS_ECORRUPT;
            break;
        }
        rc = fn(n->data, (size_t)nlen, arg);
        prev = cur;
        cur = GET(&n->link[1]);
    }
    list_unlock(l);
    return rc;
}

SHMDS_API int shmds_list_check(shmds_list *l)
{
    if (l == NULL)
        return -EINVAL;
    struct list_hdr *h = l->h;
    if (shmds__rdonly(l->r)) {
        if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != LIST_MAGIC)
            return -EIDRM;
        if (!shmds__mutex_ok(&h->lock))
            return SHMDS_ECORRUPT;
        return walk_snapshot(l, NULL, true, NULL);
    }
    int rc = list_lock(l, true);
    if (rc != 0)
        return rc;
    struct list_log *g = &h->log;
    if (GET(&g->op) != OP_NONE || GET(&g->node) != 0 || (GET(&h->seq) & 1))
        rc = SHMDS_ECORRUPT;
    else
        rc = walk(l, NULL, true);
    list_unlock(l);
    return rc;
}

/* ---------------------------------------------------------------------------
 * Create, open, close, destroy
 * ------------------------------------------------------------------------ */

static shmds_list *handle_new(shmds_region *r, shmds_off_t off)
{
    shmds_list *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->r = r;
    l->off = off;
    l->h = (struct list_hdr *)(void *)(r->base + off);
    l->max_nodes = (r->heap_max - r->heap_off) / sizeof(struct list_node);
    return l;
}

/* The object layer's init: fill in the zeroed header, magic last. */
static int list_init(shmds_region *r, shmds_off_t off, shmds_off_t block, void *arg)
{
    const char *name = arg;
    struct list_hdr *h = (struct list_hdr *)(void *)(r->base + off);
    int rc = shmds_mutex_init(&h->lock);
    if (rc != 0)
        return rc;
    h->block = block;
    h->state = STATE_LIVE;
    memcpy(h->name, name, strlen(name));
    __atomic_store_n(&h->magic, LIST_MAGIC, __ATOMIC_RELEASE);
    return 0;
}

SHMDS_API int shmds_list_create(shmds_region *r, const char *name, shmds_list **out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    void *l;
    int rc = shmds__obj_create_attach(r, &shmds__list_ops, name, sizeof(struct list_hdr),
                                      list_init, (void *)name, &l);
    if (rc == 0)
        *out = l;
    return rc;
}

/* The object layer's attach: the header at `off` is a list's (in bounds,
 * magic, block, and the name when given). */
static int list_attach(shmds_region *r, shmds_off_t off, const char *name, void **out)
{
    const struct list_hdr *h = shmds__ptr_chk(r, off, sizeof *h, 64);
    if (h == NULL || __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != LIST_MAGIC ||
        h->block > off || off - h->block >= 64 ||
        (name != NULL && strncmp(h->name, name, sizeof h->name) != 0))
        return SHMDS_ECORRUPT;
    shmds_list *l = handle_new(r, off);
    if (l == NULL)
        return -ENOMEM;
    if (name != NULL)
        memcpy(l->name, name, strlen(name) + 1);
    *out = l;
    return 0;
}

SHMDS_API int shmds_list_open(shmds_region *r, const char *name, shmds_list **out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    void *l;
    int rc = shmds__obj_open(r, &shmds__list_ops, name, &l);
    if (rc == 0)
        *out = l;
    return rc;
}

SHMDS_API void shmds_list_close(shmds_list *l)
{
    free(l);
}

/* Empty the list whose header is at `off` and mark it destroyed: every
 * node freed through the list's own intent log, then the magic cleared.
 * Nothing to do when the magic is not there (a create that died before it,
 * or a destroy that got past it). Idempotent and killable. */
static int list_teardown(shmds_list *l)
{
    struct list_hdr *h = l->h;
    int rc = list_lock(l, true);
    if (rc == -EIDRM)
        return 0;
    if (rc != 0)
        return rc;
    PUT(&h->state, STATE_DYING);
    SHMDS_FAULT("list.destroy.marked");
    while (rc == 0 && GET(&h->ends[END_FRONT]) != 0)
        rc = pop_locked(l, END_FRONT, NULL, 0, NULL);
    if (rc == 0 && GET(&h->len) != 0)
        rc = SHMDS_ECORRUPT;
    if (rc == 0) {
        SHMDS_FAULT("list.destroy.emptied");
        PUT(&h->magic, 0);
    }
    list_unlock(l);
    return rc;
}

static int list_teardown_at(shmds_region *r, shmds_off_t off)
{
    if (shmds__ptr_chk(r, off, sizeof(struct list_hdr), 64) == NULL)
        return SHMDS_ECORRUPT;
    shmds_list *l = handle_new(r, off);
    if (l == NULL)
        return -ENOMEM;
    int rc = list_teardown(l);
    free(l);
    return rc;
}

SHMDS_API int shmds_list_destroy(shmds_list *l)
{
    if (l == NULL)
        return -EINVAL;
    int rc = shmds__writable(l->r);
    if (rc == 0 && __atomic_load_n(&l->h->magic, __ATOMIC_ACQUIRE) != LIST_MAGIC)
        rc = -EIDRM;
    if (rc == 0)
        rc = shmds__obj_destroy(l->r, &shmds__list_ops, l->name, l->off);
    free(l);
    return rc;
}

/* The object layer's check: the header validates, then as shmds_list_check. */
static int list_check_at(shmds_region *r, shmds_off_t off)
{
    void *l;
    int rc = list_attach(r, off, NULL, &l);
    if (rc != 0)
        return rc;
    rc = shmds_list_check(l);
    free(l);
    return rc;
}

const struct shmds__obj_ops shmds__list_ops = {SHMDS_TYPE_LIST, list_attach, list_teardown_at,
                                               list_check_at, NULL};

/* ---------------------------------------------------------------------------
 * Intrusive links. No locks: the caller's own mutex guards them.
 * ------------------------------------------------------------------------ */

static shmds_link *link_at(const shmds_region *r, shmds_off_t off)
{
    return shmds__ptr_chk(r, off, sizeof(shmds_link), 8);
}

/* Follow node's next (dir 1) or prev (dir 0) link and check that the
 * neighbour points back. A node in no list: -EINVAL. */
static int link_follow(const shmds_region *r, shmds_off_t node, int dir, shmds_off_t *out)
{
    shmds_link *x = link_at(r, node);
    if (x == NULL)
        return -EINVAL;
    shmds_off_t to = dir ? GET(&x->next) : GET(&x->prev);
    if (to == SHMDS_NULL)
        return -EINVAL;
    shmds_link *y = link_at(r, to);
    if (y == NULL || (dir ? GET(&y->prev) : GET(&y->next)) != node)
        return SHMDS_ECORRUPT;
    *out = to;
    return 0;
}

SHMDS_API int shmds_link_init(shmds_region *r, shmds_off_t head)
{
    if (r == NULL)
        return -EINVAL;
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    shmds_link *h = link_at(r, head);
    if (h == NULL)
        return -EINVAL;
    h->next = head;
    h->prev = head;
    return 0;
}

static int link_insert(shmds_region *r, shmds_off_t pos, shmds_off_t node, int dir)
{
    if (r == NULL)
        return -EINVAL;
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    shmds_link *x = link_at(r, node);
    if (x == NULL || link_at(r, pos) == NULL || node == pos)
        return -EINVAL;
    shmds_off_t other;
    if ((rc = link_follow(r, pos, dir, &other)) != 0)
        return rc;
    if (other == node)
        return -EINVAL; /* already there */
    shmds_off_t p = dir ? pos : other, n = dir ? other : pos;
    x->next = n;
    x->prev = p;
    link_at(r, p)->next = node;
    link_at(r, n)->prev = node;
    return 0;
}

SHMDS_API int shmds_link_insert_after(shmds_region *r, shmds_off_t pos, shmds_off_t node)
{
    return link_insert(r, pos, node, 1);
}

SHMDS_API int shmds_link_insert_before(shmds_region *r, shmds_off_t pos, shmds_off_t node)
{
    return link_insert(r, pos, node, 0);
}

SHMDS_API int shmds_link_remove(shmds_region *r, shmds_off_t node)
{
    if (r == NULL)
        return -EINVAL;
    int rc = shmds__writable(r);
    if (rc != 0)
        return rc;
    shmds_off_t n, p;
    if ((rc = link_follow(r, node, 1, &n)) != 0 || (rc = link_follow(r, node, 0, &p)) != 0)
        return rc;
    if (n == node)
        return -EINVAL; /* an empty head */
    link_at(r, p)->next = n;
    link_at(r, n)->prev = p;
    shmds_link *x = link_at(r, node);
    x->next = SHMDS_NULL;
    x->prev = SHMDS_NULL;
    return 0;
}

SHMDS_API int shmds_link_next(shmds_region *r, shmds_off_t node, shmds_off_t *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    return link_follow(r, node, 1, out);
}

SHMDS_API int shmds_link_prev(shmds_region *r, shmds_off_t node, shmds_off_t *out)
{
    if (r == NULL || out == NULL)
        return -EINVAL;
    return link_follow(r, node, 0, out);
}

SHMDS_API int shmds_link_empty(shmds_region *r, shmds_off_t head)
{
    shmds_off_t n;
    int rc = shmds_link_next(r, head, &n);
    return rc != 0 ? rc : n == head;
}

SHMDS_API int shmds_link_foreach(shmds_region *r, shmds_off_t head, shmds_link_foreach_fn *fn,
                                 void *arg)
{
    if (r == NULL || fn == NULL)
        return -EINVAL;
    shmds_off_t cur;
    int rc = link_follow(r, head, 1, &cur);
    if (rc != 0)
        return rc;
    uint64_t bound = (r->heap_max - r->heap_off) / sizeof(shmds_link);
    for (uint64_t steps = 0; cur != head; steps++) {
        shmds_off_t next;
        if (steps >= bound || link_follow(r, cur, 1, &next) != 0)
            return SHMDS_ECORRUPT;
        if ((rc = fn(r, cur, arg)) != 0)
            return rc;
        cur = next;
    }
    return 0;
}
