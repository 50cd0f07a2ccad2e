/* The torture model: see model.h. */
#include "model.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

const char *const tt_struct_name[TT_STRUCTS] = {"directory", "allocator", "list", "map",
                                                 "queue"};

enum tt_struct tt_op_struct(uint8_t kind)
{
    switch (kind) {
    case TT_DIR_SET:
    case TT_DIR_DEL:
        return TT_S_DIR;
    case TT_SLOT_FLIP:
    case TT_SLOT_REALLOC:
    case TT_ARENA_ADD:
    case TT_BLOCK:
        return TT_S_ALLOC;
    case TT_MAP_PUT:
    case TT_MAP_DEL:
    case TT_MAP_ADD:
    case TT_MAP_GET:
    case TT_MAP_CAS:
    case TT_MAP_FILL:
    case TT_MAP_EXPIRE:
    case TT_MAP_REAP:
        return TT_S_MAP;
    case TT_Q_SEND:
    case TT_Q_RECV:
    case TT_Q_LEASE:
    case TT_Q_ACK:
    case TT_T_PUB:
    case TT_T_NEXT:
        return TT_S_QUEUE;
    default:
        return TT_S_LIST;
    }
}

uint64_t tt_rand(uint64_t *s)
{
    uint64_t z = (*s += UINT64_C(0x9e3779b97f4a7c15));
    z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
    return z ^ (z >> 31);
}

/* ---- values ----
 * A value is named by a 64-bit id that is unique in the run; its bytes are
 * the id followed by a pattern of id-dependent length, so a reader can tell
 * a whole value from a torn or foreign one. */

#define VAL_MAX 80

static size_t val_make(uint64_t id, unsigned char *buf)
{
    size_t len = 8 + (size_t)(id % (VAL_MAX - 7));
    memcpy(buf, &id, 8);
    for (size_t j = 8; j < len; j++)
        buf[j] = (unsigned char)(id * 31 + j);
    return len;
}

/* The id of a value read back, or TT_BAD_VALUE when the bytes are not one
 * val_make wrote. */
#define TT_BAD_VALUE UINT64_MAX
static uint64_t val_id(const unsigned char *buf, size_t len)
{
    unsigned char want[VAL_MAX];
    uint64_t id;
    if (len < 8)
        return TT_BAD_VALUE;
    memcpy(&id, buf, 8);
    if (id == TT_BAD_VALUE || val_make(id, want) != len || memcmp(want, buf, len) != 0)
        return TT_BAD_VALUE;
    return id;
}

/* What a map get read, as the model names it: a value key's value id, a
 * counter key's value. */
static uint64_t map_value_id(unsigned k, const unsigned char *buf, size_t len)
{
    if (k < TT_MAP_VALS)
        return val_id(buf, len);
    int64_t c;
    if (len != 8)
        return TT_BAD_VALUE;
    memcpy(&c, buf, 8);
    return (uint64_t)c;
}

/* ---- names ---- */

static void dir_name(char *buf, size_t cap, unsigned me, unsigned k)
{
    snprintf(buf, cap, "tt-w%u-d%u", me, k);
}

static void table_name(char *buf, size_t cap, unsigned me)
{
    snprintf(buf, cap, "tt-w%u-slots", me);
}

static void list_name(char *buf, size_t cap, unsigned me)
{
    snprintf(buf, cap, "tt-w%u-list", me);
}

static size_t key_name(char *buf, size_t cap, unsigned me, unsigned k)
{
    return (size_t)snprintf(buf, cap, "w%u-k%u", me, k);
}

#define MAP_NAME "tt-map"
#define QUEUE_NAME "tt-queue"
static const char *const topic_name[TT_TOPICS] = {"tt-topic", "tt-topic-block"};

#define TT_TYPE_DIR (SHMDS_TYPE_USER + 1)
#define TT_TYPE_TABLE (SHMDS_TYPE_USER + 2)

/* ---- the world ---- */

int tt_world_create(tt_world *w, const char *name, size_t size, unsigned workers)
{
    memset(w, 0, sizeof *w);
    if (workers == 0 || workers > TT_WORKERS_MAX)
        return -EINVAL;
    shmds_region_opts o = {.mode = 0600, .lock_timeout_ms = 2000};
    int rc = shmds_region_create(name, size, &o, &w->r);
    if (rc != 0)
        return rc;
    w->workers = workers;
    for (unsigned i = 0; i < workers; i++) {
        char n[SHMDS_ROOT_NAME_MAX + 1];
        shmds_off_t t;
        if ((rc = shmds_alloc(w->r, TT_SLOTS * sizeof(shmds_off_t), &t)) != 0)
            return rc;
        memset(shmds_ptr(w->r, t), 0, TT_SLOTS * sizeof(shmds_off_t));
        table_name(n, sizeof n, i);
        if ((rc = shmds_root_set(w->r, n, TT_TYPE_TABLE, t)) != 0)
            return rc;
        w->table[i] = t;
        list_name(n, sizeof n, i);
        if ((rc = shmds_list_create(w->r, n, &w->list[i])) != 0)
            return rc;
    }
    /* At-least-once, with a lease no run outlasts: only deaths take leases
     * back. */
    shmds_queue_opts qo = {.capacity_bytes = TT_QUEUE_BYTES,
                           .max_msg = VAL_MAX,
                           .flags = SHMDS_QUEUE_ACK,
                           .lease_ms = 24u * 3600 * 1000,
                           .max_in_flight = 64};
    if ((rc = shmds_queue_create_ex(w->r, QUEUE_NAME, &qo, &w->queue)) != 0)
        return rc;
    /* Room for every worker, the checker's probe and the slots of killed
     * workers not yet freed. */
    for (unsigned t = 0; t < TT_TOPICS; t++) {
        shmds_queue_opts to = {.capacity_bytes = TT_TOPIC_BYTES,
                               .max_msg = VAL_MAX,
                               .flags = SHMDS_QUEUE_BROADCAST |
                                        (t == TT_TOPIC_BLOCK ? SHMDS_QUEUE_BLOCK : 0u),
                               .max_subscribers = 4 * TT_WORKERS_MAX};
        if ((rc = shmds_queue_create_ex(w->r, topic_name[t], &to, &w->topic[t])) != 0)
            return rc;
    }
    return tt_world_map_reset(w);
}

/* A small first table and few stripes: the map grows (incremental rehash)
 * several times while the workers fill it. */
int tt_world_map_reset(tt_world *w)
{
    if (w->map != NULL) {
        int rc = shmds_map_destroy(w->map);
        w->map = NULL;
        if (rc != 0)
            return rc;
    }
    shmds_map_opts o = {.stripes = 4};
    return shmds_map_create(w->r, MAP_NAME, &o, &w->map);
}

static int count_entry(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    (void)k, (void)kl, (void)v, (void)vl;
    ++*(uint64_t *)arg;
    return 0;
}

int tt_fresh_read(const char *name)
{
    pid_t p = fork();
    if (p < 0)
        return -errno;
    if (p == 0) {
        /* A reader, not a subject of the fault sweep: no kill, no trace. */
        unsetenv("SHMDS_FAULT");
        unsetenv("SHMDS_FAULT_TRACE");
        shmds_region *r;
        shmds_map *m;
        uint64_t n = 0;
        int rc = shmds_region_open(name, SHMDS_RDONLY, &r);
        if (rc == 0) /* a writer stopped mid-change: do not wait for a repair */
            r->lock_timeout_ms = 1;
        if (rc == 0 && (rc = shmds_map_open(r, MAP_NAME, &m)) == 0) {
            rc = shmds_map_foreach(m, count_entry, &n);
            shmds_map_close(m);
        }
        _exit(rc == SHMDS_ECORRUPT ? 1 : 0);
    }
    int st;
    while (waitpid(p, &st, 0) < 0)
        if (errno != EINTR)
            return -errno;
    if (WIFSIGNALED(st))
        return -ECHILD;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : SHMDS_ECORRUPT;
}

int tt_world_open(tt_world *w, const char *name, unsigned workers)
{
    memset(w, 0, sizeof *w);
    int rc = shmds_region_open(name, 0, &w->r);
    if (rc != 0)
        return rc;
    w->workers = workers;
    for (unsigned i = 0; i < workers; i++) {
        char n[SHMDS_ROOT_NAME_MAX + 1];
        table_name(n, sizeof n, i);
        if ((rc = shmds__root_find_typed(w->r, n, TT_TYPE_TABLE, &w->table[i])) != 0)
            return rc;
        list_name(n, sizeof n, i);
        if ((rc = shmds_list_open(w->r, n, &w->list[i])) != 0)
            return rc;
    }
    if ((rc = shmds_map_open(w->r, MAP_NAME, &w->map)) != 0)
        return rc;
    for (unsigned t = 0; t < TT_TOPICS; t++)
        if ((rc = shmds_queue_open(w->r, topic_name[t], &w->topic[t])) != 0)
            return rc;
    return shmds_queue_open(w->r, QUEUE_NAME, &w->queue);
}

void tt_world_close(tt_world *w)
{
    for (unsigned i = 0; i < TT_WORKERS_MAX; i++) {
        if (w->list[i] != NULL)
            shmds_list_close(w->list[i]);
        w->list[i] = NULL;
    }
    shmds_map_close(w->map);
    w->map = NULL;
    shmds_queue_close(w->queue);
    w->queue = NULL;
    for (unsigned t = 0; t < TT_TOPICS; t++) {
        shmds_sub_close(w->sub[t]);
        w->sub[t] = NULL;
        shmds_queue_close(w->topic[t]);
        w->topic[t] = NULL;
    }
    if (w->r != NULL)
        shmds_region_close(w->r);
    w->r = NULL;
}

static shmds_off_t *slot_of(const tt_world *w, unsigned me, unsigned k)
{
    return (shmds_off_t *)shmds_ptr(w->r, w->table[me]) + k;
}

/* ---- drawing and performing operations ---- */

tt_op tt_draw(uint64_t *rng, const tt_world *w, unsigned me, uint64_t id)
{
    tt_op op = {0};
    uint64_t x = tt_rand(rng);
    op.kind = (uint8_t)(x % TT_KINDS);
    x /= TT_KINDS;
    /* Keep the list short: a push on a long list becomes a pop. */
    size_t len;
    if ((op.kind == TT_LIST_PUSH_BACK || op.kind == TT_LIST_PUSH_FRONT) &&
        (shmds_list_len(w->list[me], &len) != 0 || len >= TT_LIST_MAX / 2))
        op.kind = op.kind == TT_LIST_PUSH_BACK ? TT_LIST_POP_FRONT : TT_LIST_POP_BACK;
    switch (op.kind) {
    case TT_DIR_SET:
    case TT_DIR_DEL:
        op.arg = (uint8_t)(x % TT_DIR_NAMES);
        break;
    case TT_SLOT_FLIP:
    case TT_SLOT_REALLOC:
        op.arg = (uint8_t)(x % TT_SLOTS);
        x /= TT_SLOTS;
        /* Mostly small blocks, now and then a large one. */
        op.size = (uint32_t)(1 + (x % 8 == 0 ? x % 20000 : x % 300));
        /* A realloc wants a live block: of an empty slot, allocate. */
        if (op.kind == TT_SLOT_REALLOC && *slot_of(w, me, op.arg) == SHMDS_NULL)
            op.kind = TT_SLOT_FLIP;
        break;
    case TT_BLOCK:
        op.size = (uint32_t)(1 + x % 512); /* the sizes a handle caches */
        x /= 512;
        op.arg = (uint8_t)(x % 4 == 0 ? TT_BLOCK_RUN : 1);
        break;
    case TT_MAP_PUT:
        op.arg = (uint8_t)(x % TT_MAP_VALS);
        x /= TT_MAP_VALS;
        op.flags = (uint8_t)(x % 4 == 2 ? SHMDS_PUT_NX : x % 4 == 3 ? SHMDS_PUT_XX : 0);
        x /= 4;
        op.size = x % 8 == 0 ? 3600 : 0; /* a TTL that never runs out in a run */
        break;
    case TT_MAP_DEL:
    case TT_MAP_GET:
        op.arg = (uint8_t)(x % TT_MAP_KEYS);
        break;
    case TT_MAP_ADD:
        op.arg = (uint8_t)(TT_MAP_VALS + x % TT_MAP_CTRS);
        x /= TT_MAP_CTRS;
        op.aux = (uint64_t)((int64_t)(x % 2001) - 1000);
        x /= 2001;
        op.flags = (uint8_t)(x % 4 == 0 ? x % 200 : 0);
        x /= 200;
        op.size = x % 8 == 0 ? 3600 : 0;
        break;
    case TT_MAP_CAS:
    case TT_MAP_FILL:
    case TT_MAP_EXPIRE:
        op.arg = (uint8_t)(x % TT_MAP_VALS);
        x /= TT_MAP_VALS;
        op.flags = (uint8_t)(x % 5 == 0);
        break;
    case TT_Q_SEND:
    case TT_Q_RECV:
    case TT_Q_LEASE:
    case TT_Q_ACK:
        op.size = x % 16 == 0 ? 2 : 0; /* now and then wait a little */
        x /= 16;
        if (op.kind == TT_Q_SEND && x % 2 == 0)
            op.flags = TT_Q_ZEROCOPY;
        /* Hold a few leases at most; acknowledge only what is held. */
        if (op.kind == TT_Q_LEASE && w->nheld == TT_HELD_MAX)
            op.kind = TT_Q_ACK;
        else if (op.kind == TT_Q_ACK && w->nheld == 0)
            op.kind = TT_Q_LEASE;
        break;
    case TT_T_PUB:
    case TT_T_NEXT:
        op.arg = (uint8_t)(x % TT_TOPICS);
        x /= TT_TOPICS;
        op.size = x % 16 == 0 ? 2 : 0;
        x /= 16;
        if (op.kind == TT_T_PUB && x % 2 == 0)
            op.flags = TT_Q_ZEROCOPY;
        break;
    default:
        break;
    }
    op.id = id;
    return op;
}

void tt_prepare(tt_world *w, unsigned me, tt_op *op)
{
    if (op->kind == TT_Q_ACK && w->nheld > 0)
        op->aux = w->held_lease[0];
    if (op->kind != TT_SLOT_REALLOC)
        return;
    op->aux = *slot_of(w, me, op->arg);
    if (op->aux != SHMDS_NULL)
        memcpy(shmds_ptr(w->r, op->aux), &op->id, 8); /* a live block has >= 16 bytes */
}

void tt_perform(tt_world *w, unsigned me, const tt_op *op, tt_msg *done)
{
    char n[SHMDS_ROOT_NAME_MAX + 1];
    unsigned char v[VAL_MAX];
    size_t len = 0, kl;
    done->got = 0;
    switch (op->kind) {
    case TT_DIR_SET:
        dir_name(n, sizeof n, me, op->arg);
        done->rc = shmds_root_set(w->r, n, TT_TYPE_DIR, w->table[me]);
        break;
    case TT_DIR_DEL:
        dir_name(n, sizeof n, me, op->arg);
        done->rc = shmds_root_del(w->r, n);
        break;
    case TT_SLOT_FLIP: {
        shmds_off_t *slot = slot_of(w, me, op->arg);
        if (*slot == SHMDS_NULL)
            done->rc = shmds__alloc_into(w->r, op->size, slot);
        else
            done->rc = shmds__free_from(w->r, slot);
        break;
    }
    case TT_ARENA_ADD:
        done->rc = shmds__alloc_arena_add(w->r);
        break;
    case TT_BLOCK: {
        /* Another process handed the same block at once would change the
         * fill: -EILSEQ, which the model never expects. */
        shmds_off_t b[TT_BLOCK_RUN];
        unsigned got = 0, want = op->arg < TT_BLOCK_RUN ? op->arg : TT_BLOCK_RUN;
        while (got < want && (done->rc = shmds_alloc(w->r, op->size, &b[got])) == 0)
            memset(shmds_ptr(w->r, b[got++]), (int)(op->id % 251) + 1, op->size);
        for (unsigned j = 0; j < got; j++) {
            const unsigned char *p = shmds_ptr(w->r, b[j]);
            for (uint32_t i = 0; i < op->size && done->rc == 0; i++)
                if (p[i] != (unsigned char)(op->id % 251 + 1))
                    done->rc = -EILSEQ;
        }
        for (unsigned j = 0; j < got; j++) {
            int rc = shmds_free(w->r, b[j]);
            if (done->rc == 0)
                done->rc = rc;
        }
        break;
    }
    case TT_SLOT_REALLOC: {
        shmds_off_t *slot = slot_of(w, me, op->arg), to;
        if (*slot == SHMDS_NULL) {
            done->rc = -ENOENT;
        } else if ((done->rc = shmds_realloc(w->r, *slot, op->size, &to)) == 0) {
            SHMDS_FAULT("torture.realloc.returned");
            *slot = to;
        }
        break;
    }
    case TT_MAP_PUT:
        kl = key_name(n, sizeof n, me, op->arg);
        len = val_make(op->id, v);
        done->rc = shmds_map_put(w->map, n, kl, v, len, op->size, op->flags);
        break;
    case TT_MAP_DEL:
        kl = key_name(n, sizeof n, me, op->arg);
        done->rc = shmds_map_del(w->map, n, kl);
        break;
    case TT_MAP_ADD: {
        int64_t sum = 0;
        kl = key_name(n, sizeof n, me, op->arg);
        done->rc = shmds_map_add_ex(w->map, n, kl, (int64_t)op->aux, op->flags,
                                    (uint64_t)op->size * 1000u, &sum);
        if (done->rc >= 0)
            done->got = (uint64_t)sum;
        break;
    }
    case TT_MAP_CAS: {
        shmds_map_entry_info info;
        kl = key_name(n, sizeof n, me, op->arg);
        done->rc = shmds_map_get_ex(w->map, n, kl, NULL, 0, NULL, 0, &info);
        if (done->rc == 0) {
            shmds_put_opts o = {0, op->flags ? info.version ^ (UINT64_C(1) << 62) : info.version,
                                (uint32_t)op->id, 0};
            len = val_make(op->id, v);
            done->rc = shmds_map_put_ex(w->map, n, kl, v, len, &o, NULL);
        }
        break;
    }
    case TT_MAP_FILL: {
        shmds_fill *f = NULL;
        kl = key_name(n, sizeof n, me, op->arg);
        done->rc = shmds_map_fetch(w->map, n, kl, v, sizeof v, &len, NULL, 0, 0, &f);
        if (done->rc == 0) {
            done->got = map_value_id(op->arg, v, len);
        } else if (done->rc == SHMDS_FILL && op->flags) {
            done->rc = shmds_map_fill_abort(f);
        } else if (done->rc == SHMDS_FILL) {
            len = val_make(op->id, v);
            done->rc = shmds_map_fill_done(f, v, len, NULL, NULL);
        }
        break;
    }
    case TT_MAP_EXPIRE:
        kl = key_name(n, sizeof n, me, op->arg);
        done->rc = shmds_map_expire(w->map, n, kl, op->flags ? 0 : 3600000u);
        break;
    case TT_MAP_REAP:
        done->rc = shmds_map_reap(w->map, 16, NULL);
        break;
    case TT_MAP_GET:
        kl = key_name(n, sizeof n, me, op->arg);
        done->rc = shmds_map_get(w->map, n, kl, v, sizeof v, &len);
        if (done->rc == 0)
            done->got = map_value_id(op->arg, v, len);
        break;
    case TT_Q_SEND: {
        len = val_make(op->id, v);
        void *p;
        if (!(op->flags & TT_Q_ZEROCOPY))
            done->rc = shmds_queue_send(w->queue, v, len, (int)op->size);
        else if ((done->rc = shmds_queue_reserve(w->queue, VAL_MAX, &p, (int)op->size)) == 0) {
            memcpy(p, v, len);
            done->rc = shmds_queue_commit(w->queue, len);
        }
        break;
    }
    case TT_Q_RECV:
        done->rc = shmds_queue_recv(w->queue, v, sizeof v, &len, (int)op->size);
        if (done->rc == 0)
            done->got = val_id(v, len);
        break;
    case TT_Q_LEASE: {
        uint64_t lease = 0;
        done->rc = shmds_queue_recv_lease(w->queue, v, sizeof v, &len, &lease, (int)op->size);
        if (done->rc == 0) {
            done->got = val_id(v, len);
            if (w->nheld < TT_HELD_MAX) {
                w->held_lease[w->nheld] = lease;
                w->held_msg[w->nheld++] = done->got;
            }
        }
        break;
    }
    case TT_T_PUB: {
        shmds_queue *t = w->topic[op->arg % TT_TOPICS];
        len = val_make(op->id, v);
        void *p;
        if (!(op->flags & TT_Q_ZEROCOPY))
            done->rc = shmds_queue_send(t, v, len, (int)op->size);
        else if ((done->rc = shmds_queue_reserve(t, VAL_MAX, &p, (int)op->size)) == 0) {
            memcpy(p, v, len);
            done->rc = shmds_queue_commit(t, len);
        }
        break;
    }
    case TT_T_NEXT: {
        unsigned t = op->arg % TT_TOPICS;
        uint64_t missed = 0;
        if (w->sub[t] == NULL && (done->rc = shmds_queue_subscribe(w->topic[t], &w->sub[t])) != 0)
            break;
        done->rc = shmds_sub_next(w->sub[t], v, sizeof v, &len, &missed, (int)op->size);
        if (done->rc == 0) {
            done->got = val_id(v, len);
            done->missed = missed > UINT32_MAX ? UINT32_MAX : (uint32_t)missed;
        }
        break;
    }
    case TT_Q_ACK:
        if (w->nheld == 0 || w->held_lease[0] != op->aux) {
            done->rc = -ENOENT;
            break;
        }
        done->rc = shmds_queue_ack(w->queue, op->aux);
        done->got = w->held_msg[0];
        w->nheld--;
        memmove(w->held_lease, w->held_lease + 1, w->nheld * sizeof w->held_lease[0]);
        memmove(w->held_msg, w->held_msg + 1, w->nheld * sizeof w->held_msg[0]);
        break;
    case TT_LIST_PUSH_BACK:
    case TT_LIST_PUSH_FRONT: {
        len = val_make(op->id, v);
        done->rc = op->kind == TT_LIST_PUSH_BACK ? shmds_list_push_back(w->list[me], v, len)
                                                 : shmds_list_push_front(w->list[me], v, len);
        break;
    }
    case TT_LIST_POP_FRONT:
    case TT_LIST_POP_BACK: {
        done->rc = op->kind == TT_LIST_POP_FRONT
                       ? shmds_list_pop_front(w->list[me], v, sizeof v, &len)
                       : shmds_list_pop_back(w->list[me], v, sizeof v, &len);
        if (done->rc == 0)
            done->got = val_id(v, len);
        break;
    }
    default:
        done->rc = -EINVAL;
    }
    if (done->rc > 0)
        done->rc = 0; /* SHMDS_RECOVERED: done, after a repair */
}

/* ---- the model ---- */

int tt_model_apply(tt_state *s, const tt_op *op, uint64_t *got)
{
    *got = 0;
    uint32_t bit = op->arg < TT_DIR_NAMES ? 1u << op->arg : 0; /* directory ops */
    switch (op->kind) {
    case TT_DIR_SET:
        if (s->dir & bit)
            return -EEXIST;
        s->dir |= bit;
        return 0;
    case TT_DIR_DEL:
        if (!(s->dir & bit))
            return -ENOENT;
        s->dir &= ~bit;
        return 0;
    case TT_SLOT_FLIP:
        s->slot_size[op->arg] = s->slot_size[op->arg] == 0 ? op->size : 0;
        return 0;
    case TT_SLOT_REALLOC:
        if (s->slot_size[op->arg] == 0)
            return -ENOENT;
        s->slot_size[op->arg] = op->size;
        return 0;
    case TT_MAP_PUT: {
        uint64_t kb = UINT64_C(1) << op->arg;
        if ((op->flags & SHMDS_PUT_NX) && (s->map_has & kb))
            return -EEXIST;
        if ((op->flags & SHMDS_PUT_XX) && !(s->map_has & kb))
            return -ENOENT;
        s->map_has |= kb;
        s->map_val[op->arg] = op->id;
        return 0;
    }
    case TT_MAP_DEL: {
        uint64_t kb = UINT64_C(1) << op->arg;
        if (!(s->map_has & kb))
            return -ENOENT;
        s->map_has &= ~kb;
        s->map_val[op->arg] = 0;
        return 0;
    }
    case TT_MAP_CAS: {
        uint64_t kb = UINT64_C(1) << op->arg;
        if (!(s->map_has & kb))
            return -ENOENT;
        if (op->flags)
            return SHMDS_EVERSION;
        s->map_val[op->arg] = op->id;
        return 0;
    }
    case TT_MAP_FILL: {
        uint64_t kb = UINT64_C(1) << op->arg;
        if (s->map_has & kb) {
            *got = s->map_val[op->arg];
            return 0;
        }
        if (!op->flags) {
            s->map_has |= kb;
            s->map_val[op->arg] = op->id;
        }
        return 0;
    }
    case TT_MAP_EXPIRE:
        return (s->map_has & (UINT64_C(1) << op->arg)) ? 0 : -ENOENT;
    case TT_MAP_REAP:
        return 0;
    case TT_MAP_ADD: {
        uint64_t kb = UINT64_C(1) << op->arg;
        int64_t c = (s->map_has & kb) ? (int64_t)s->map_val[op->arg] : (int64_t)op->flags;
        c += (int64_t)op->aux;
        s->map_has |= kb;
        s->map_val[op->arg] = (uint64_t)c;
        *got = (uint64_t)c;
        return 0;
    }
    case TT_MAP_GET:
        if (!(s->map_has & (UINT64_C(1) << op->arg)))
            return -ENOENT;
        *got = s->map_val[op->arg];
        return 0;
    case TT_Q_SEND:
    case TT_Q_RECV:
    case TT_Q_LEASE:
    case TT_Q_ACK:
    case TT_T_PUB:
    case TT_T_NEXT:
        return 0; /* the queues are shared: the ledger follows them */
    case TT_ARENA_ADD:
    case TT_BLOCK:
        return 0; /* nothing a worker owns changes */
    case TT_LIST_PUSH_BACK:
        if (s->list_n == TT_LIST_MAX)
            return -ENOSPC; /* never: tt_draw keeps lists shorter */
        s->list[s->list_n++] = op->id;
        return 0;
    case TT_LIST_PUSH_FRONT:
        if (s->list_n == TT_LIST_MAX)
            return -ENOSPC;
        memmove(s->list + 1, s->list, s->list_n * sizeof s->list[0]);
        s->list[0] = op->id;
        s->list_n++;
        return 0;
    case TT_LIST_POP_FRONT:
        if (s->list_n == 0)
            return -ENOENT;
        *got = s->list[0];
        memmove(s->list, s->list + 1, --s->list_n * sizeof s->list[0]);
        s->list[s->list_n] = 0;
        return 0;
    case TT_LIST_POP_BACK:
        if (s->list_n == 0)
            return -ENOENT;
        *got = s->list[--s->list_n];
        s->list[s->list_n] = 0;
        return 0;
    default:
        return -EINVAL;
    }
}

/* May the environment refuse this op without it being a fault? */
static bool refusable(const tt_op *op, const tt_state *before, int rc)
{
    if (rc == -ENOMEM)
        return (op->kind == TT_SLOT_FLIP && before->slot_size[op->arg] == 0) ||
               op->kind == TT_SLOT_REALLOC || op->kind == TT_MAP_PUT ||
               op->kind == TT_MAP_ADD || op->kind == TT_LIST_PUSH_BACK ||
               op->kind == TT_LIST_PUSH_FRONT || op->kind == TT_MAP_CAS ||
               op->kind == TT_MAP_FILL || op->kind == TT_ARENA_ADD || op->kind == TT_BLOCK;
    /* Every lease slot of the key's stripe held by other live workers. */
    return rc == -ETIMEDOUT && op->kind == TT_MAP_FILL;
}

bool tt_op_may_time_out(const tt_op *op)
{
    return ((op->kind == TT_Q_SEND || op->kind == TT_Q_RECV || op->kind == TT_Q_LEASE ||
             op->kind == TT_T_PUB || op->kind == TT_T_NEXT) &&
            op->size > 0) ||
           op->kind == TT_MAP_FILL;
}

unsigned tt_op_may_leak(const tt_op *op)
{
    /* A block whose shmds_alloc returned or whose shmds_free had not
     * begun when the worker died is nobody's. */
    return op->kind == TT_SLOT_REALLOC ? 1 : op->kind == TT_BLOCK ? op->arg : 0;
}

bool tt_model_ack(tt_state *s, const tt_msg *done)
{
    /* A live worker's lease is never taken back: its ack succeeds. */
    if (done->op.kind == TT_Q_ACK)
        return done->rc == 0;
    if (done->op.kind == TT_Q_SEND || done->op.kind == TT_Q_RECV || done->op.kind == TT_Q_LEASE ||
        done->op.kind == TT_T_PUB || done->op.kind == TT_T_NEXT)
        return done->rc == 0 || done->rc == -EAGAIN ||
               (done->rc == -ETIMEDOUT && tt_op_may_time_out(&done->op));
    tt_state next = *s;
    uint64_t got;
    int want = tt_model_apply(&next, &done->op, &got);
    if (done->rc == want && done->got == got) {
        *s = next;
        return true;
    }
    return refusable(&done->op, s, done->rc);
}

/* ---- the checker ---- */

/* What the region holds for worker `me`. A slot's exact request size is
 * not observable: a live block at least as large stands for it. */
typedef struct tt_obs {
    uint32_t dir;
    uint64_t slot_usable[TT_SLOTS]; /* 0: slot empty */
    uint32_t list_n;
    bool list_bad; /* a value that is not whole, or more than TT_LIST_MAX */
    uint64_t list[TT_LIST_MAX];
    uint64_t map_has;
    uint64_t map_val[TT_MAP_KEYS];
} tt_obs;

static int collect(const void *data, size_t len, void *arg)
{
    tt_obs *o = arg;
    uint64_t id = val_id(data, len);
    if (id == TT_BAD_VALUE || o->list_n == TT_LIST_MAX)
        o->list_bad = true;
    else
        o->list[o->list_n++] = id;
    return 0;
}

static int observe(tt_world *w, unsigned me, tt_obs *obs)
{
    memset(obs, 0, sizeof *obs);
    for (unsigned k = 0; k < TT_DIR_NAMES; k++) {
        char n[SHMDS_ROOT_NAME_MAX + 1];
        uint32_t type;
        shmds_off_t off;
        dir_name(n, sizeof n, me, k);
        int rc = shmds_root_get(w->r, n, &type, &off);
        if (rc == 0) {
            if (type != TT_TYPE_DIR || off != w->table[me])
                return SHMDS_ECORRUPT;
            obs->dir |= 1u << k;
        } else if (rc != -ENOENT) {
            return rc;
        }
    }
    /* Settle the allocator first (a dead allocator's commit finishes), then
     * read the slots. */
    int rc = shmds__alloc_settle(w->r);
    if (rc != 0)
        return rc;
    for (unsigned k = 0; k < TT_SLOTS; k++) {
        shmds_off_t off = *slot_of(w, me, k);
        if (off == SHMDS_NULL)
            continue;
        rc = shmds__alloc_block_live(w->r, off, &obs->slot_usable[k]);
        if (rc != 0)
            return rc == -EINVAL ? SHMDS_ECORRUPT : rc;
        if (obs->slot_usable[k] == 0)
            return SHMDS_ECORRUPT;
    }
    for (unsigned k = 0; k < TT_MAP_KEYS; k++) {
        char n[SHMDS_ROOT_NAME_MAX + 1];
        unsigned char v[VAL_MAX];
        size_t kl = key_name(n, sizeof n, me, k), len = 0;
        rc = shmds_map_get(w->map, n, kl, v, sizeof v, &len);
        if (rc == 0) {
            obs->map_has |= UINT64_C(1) << k;
            obs->map_val[k] = map_value_id(k, v, len);
        } else if (rc != -ENOENT) {
            return rc == -ENOBUFS ? SHMDS_ECORRUPT : rc;
        }
    }
    return shmds_list_foreach(w->list[me], collect, obs);
}

static bool in(const uint64_t *a, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (a[i] == id)
            return true;
    return false;
}

/* Count what differs between a model and an observation. */
static void diff(const tt_state *m, const tt_obs *o, unsigned *lost, unsigned *phantom)
{
    for (unsigned k = 0; k < TT_DIR_NAMES; k++) {
        bool in_m = m->dir & (1u << k), in_o = o->dir & (1u << k);
        *lost += in_m && !in_o;
        *phantom += in_o && !in_m;
    }
    for (unsigned k = 0; k < TT_SLOTS; k++) {
        *lost += m->slot_size[k] != 0 && o->slot_usable[k] < m->slot_size[k];
        *phantom += m->slot_size[k] == 0 && o->slot_usable[k] != 0;
    }
    for (uint32_t i = 0; i < m->list_n; i++)
        *lost += !in(o->list, o->list_n, m->list[i]);
    for (uint32_t i = 0; i < o->list_n; i++)
        *phantom += !in(m->list, m->list_n, o->list[i]);
    *phantom += o->list_bad;
    for (unsigned k = 0; k < TT_MAP_KEYS; k++) {
        uint64_t kb = UINT64_C(1) << k;
        bool same = (m->map_has & kb) && (o->map_has & kb) && m->map_val[k] == o->map_val[k];
        *lost += (m->map_has & kb) && !same;
        *phantom += (o->map_has & kb) && !same;
    }
}

static bool matches(const tt_state *m, const tt_obs *o)
{
    unsigned lost = 0, phantom = 0;
    diff(m, o, &lost, &phantom);
    /* Same items is not enough: the same order too. */
    return lost == 0 && phantom == 0 && m->list_n == o->list_n &&
           memcmp(m->list, o->list, m->list_n * sizeof m->list[0]) == 0;
}

/* A realloc in flight whose move committed but whose new offset died with
 * the worker: the slot still names the old block, which is freed (then not
 * live, or live again for someone else: its first 8 bytes are no longer the
 * tag, see tt_verify), or an earlier check already cleared it. */
static int realloc_dropped(tt_world *w, unsigned me, const tt_state *s, const tt_op *op,
                           bool *dropped)
{
    *dropped = false;
    if (op == NULL || op->kind != TT_SLOT_REALLOC || s->slot_size[op->arg] == 0)
        return 0;
    int rc = shmds__alloc_settle(w->r);
    if (rc != 0)
        return rc;
    shmds_off_t *slot = slot_of(w, me, op->arg);
    uint64_t tag = 0;
    if (*slot == SHMDS_NULL) {
        *dropped = true;
    } else if (*slot == op->aux) {
        if (shmds__alloc_block_live(w->r, *slot, NULL) == 0)
            memcpy(&tag, shmds_ptr(w->r, *slot), 8);
        *dropped = tag != op->id;
    }
    if (*dropped)
        *slot = SHMDS_NULL; /* the worker is dead: its slot is the checker's */
    return 0;
}

int tt_verify(tt_world *w, unsigned me, tt_state *s, const tt_op *inflight, unsigned *lost,
              unsigned *phantom, unsigned *dropped)
{
    tt_obs obs;
    bool drop;
    int rc = realloc_dropped(w, me, s, inflight, &drop);
    if (rc != 0)
        return rc;
    if (drop) {
        s->slot_size[inflight->arg] = 0;
        inflight = NULL;
        ++*dropped;
    }
    rc = observe(w, me, &obs);
    if (rc != 0)
        return rc;
    if (matches(s, &obs))
        return 0;
    if (inflight != NULL) {
        tt_state with = *s;
        uint64_t got;
        (void)tt_model_apply(&with, inflight, &got);
        if (matches(&with, &obs)) {
            *s = with;
            return 0;
        }
    }
    diff(s, &obs, lost, phantom);
    if (*lost == 0 && *phantom == 0)
        fprintf(stderr, "torture: worker %u: list order differs from the model\n", me);
    return SHMDS_ECORRUPT;
}

static uint64_t epoch(const tt_world *w)
{
    return __atomic_load_n(&w->r->hdr->epoch, __ATOMIC_RELAXED);
}

int tt_take_every_lock(tt_world *w, uint64_t rec[TT_STRUCTS])
{
    uint64_t e = epoch(w);
    /* Deleting a name that is never registered takes the directory lock. */
    int rc = shmds_root_del(w->r, "tt-never-registered");
    if (rc == -ENOENT)
        rc = 0;
    rec[TT_S_DIR] += epoch(w) - e;
    e = epoch(w);
    int rc2 = shmds__alloc_settle(w->r);
    if (rc == 0)
        rc = rc2;
    rec[TT_S_ALLOC] += epoch(w) - e;
    /* The read guards' retire lock: its repair rolls a logged retire on. */
    rc2 = shmds__guard_settle(w->r);
    if (rc == 0)
        rc = rc2;
    for (unsigned i = 0; i < w->workers; i++) {
        size_t len;
        e = epoch(w);
        rc2 = shmds_list_len(w->list[i], &len);
        if (rc == 0)
            rc = rc2;
        rec[TT_S_LIST] += epoch(w) - e;
    }
    /* The checks lock every stripe of the map (and its resize lock) and
     * the queue's lock. */
    e = epoch(w);
    rc2 = shmds_map_check(w->map);
    if (rc == 0)
        rc = rc2;
    rec[TT_S_MAP] += epoch(w) - e;
    e = epoch(w);
    rc2 = shmds_queue_check(w->queue);
    for (unsigned t = 0; t < TT_TOPICS; t++) {
        int rc3 = shmds_queue_check(w->topic[t]);
        if (rc2 == 0)
            rc2 = rc3;
    }
    if (rc == 0)
        rc = rc2;
    rec[TT_S_QUEUE] += epoch(w) - e;
    return rc;
}

/* Copy the shm object `from` (its first `len` bytes; 0: all) to a new
 * object `to`. */
static int shm_copy(const char *from, const char *to, size_t len)
{
    int in = shm_open(from, O_RDONLY, 0), out = shm_open(to, O_CREAT | O_EXCL | O_RDWR, 0600);
    struct stat st;
    int rc = in < 0 || out < 0 || fstat(in, &st) != 0 ? -EIO : 0;
    if (rc == 0 && len == 0)
        len = (size_t)st.st_size;
    void *p = rc == 0 ? mmap(NULL, len, PROT_READ, MAP_SHARED, in, 0) : MAP_FAILED;
    if (p == MAP_FAILED || write(out, p, len) != (ssize_t)len)
        rc = -EIO;
    if (p != MAP_FAILED)
        munmap(p, len);
    if (in >= 0)
        close(in);
    if (out >= 0)
        close(out);
    return rc;
}

int tt_region_copy(shmds_region *r, const char *from, const char *to)
{
    char rd[SHMDS_NAME_MAX + 16], rd_to[SHMDS_NAME_MAX + 16];
    snprintf(rd, sizeof rd, "/shmds-rd-%s", from + 1);
    snprintf(rd_to, sizeof rd_to, "/shmds-rd-%s", to + 1);
    shmds_region_unlink(to);
    if (shm_copy(from, to, shmds_region_size(r)) != 0 || shm_copy(rd, rd_to, 0) != 0)
        return -EIO;
    return 0;
}

int tt_world_teardown(tt_world *w)
{
    for (unsigned i = 0; i < w->workers; i++) {
        char n[SHMDS_ROOT_NAME_MAX + 1];
        for (unsigned k = 0; k < TT_DIR_NAMES; k++) {
            dir_name(n, sizeof n, i, k);
            int rc = shmds_root_del(w->r, n);
            if (rc != 0 && rc != -ENOENT)
                return rc;
        }
        for (unsigned k = 0; k < TT_SLOTS; k++) {
            int rc = shmds__free_from(w->r, slot_of(w, i, k));
            if (rc != 0)
                return rc;
        }
        table_name(n, sizeof n, i);
        int rc = shmds_root_del(w->r, n);
        if (rc != 0 || (rc = shmds_free(w->r, w->table[i])) != 0)
            return rc;
        rc = shmds_list_destroy(w->list[i]);
        w->list[i] = NULL;
        if (rc != 0)
            return rc;
    }
    int rc = shmds_map_destroy(w->map);
    w->map = NULL;
    int rc2 = shmds_queue_destroy(w->queue);
    w->queue = NULL;
    for (unsigned t = 0; t < TT_TOPICS; t++) {
        int rc3 = shmds_queue_destroy(w->topic[t]);
        w->topic[t] = NULL;
        if (rc2 == 0)
            rc2 = rc3;
    }
    return rc != 0 ? rc : rc2;
}

/* ---- the queue's ledger ---- */

static int producer_of(uint64_t id)
{
    uint64_t p = id >> 56;
    return p >= 1 && p <= TT_WORKERS_MAX ? (int)p - 1 : -1;
}

static void *grow(void *v, size_t *cap, size_t elem)
{
    *cap = *cap ? 2 * *cap : 256;
    void *nv = realloc(v, *cap * elem);
    if (nv == NULL)
        abort();
    return nv;
}

void tt_ledger_intent(tt_ledger *l, unsigned worker, const tt_op *op)
{
    if (op->kind != TT_Q_SEND && op->kind != TT_T_PUB)
        return;
    (void)worker;
    int p = producer_of(op->id);
    if (p < 0)
        abort(); /* tt_draw's caller names every id after its worker */
    if (op->kind == TT_T_PUB) {
        unsigned t = op->arg % TT_TOPICS;
        if (l->t[t][p].n == l->t[t][p].cap)
            l->t[t][p].v = grow(l->t[t][p].v, &l->t[t][p].cap, sizeof(tt_qrec));
        l->t[t][p].v[l->t[t][p].n++] = (tt_qrec){op->id, TT_Q_MAYBE, 0};
        return;
    }
    if (l->p[p].n == l->p[p].cap)
        l->p[p].v = grow(l->p[p].v, &l->p[p].cap, sizeof(tt_qrec));
    l->p[p].v[l->p[p].n++] = (tt_qrec){op->id, TT_Q_MAYBE, 0};
}

/* A topic receipt of `worker`: into its open subscription (a new one
 * after its death). Order and the BLOCK topic's rule are checked here;
 * what needs every record, at settle. */
static void topic_received(tt_ledger *l, unsigned worker, const tt_msg *done)
{
    unsigned t = done->op.arg % TT_TOPICS;
    if (worker >= TT_WORKERS_MAX)
        return;
    size_t *open = &l->sub_open[worker][t];
    if (*open == 0) {
        if (l->subs.n == l->subs.cap)
            l->subs.v = grow(l->subs.v, &l->subs.cap, sizeof(tt_tsub));
        l->subs.v[l->subs.n++] = (tt_tsub){.topic = t};
        *open = l->subs.n;
        l->t_subs++;
    }
    tt_tsub *s = &l->subs.v[*open - 1];
    if (s->n == s->cap)
        s->r = grow(s->r, &s->cap, sizeof *s->r);
    s->pos += (uint64_t)done->missed + 1;
    s->r[s->n++] = (struct tt_trecv){done->got, s->pos, done->missed};
    l->t_received++;
    l->t_missed += done->missed;
    int p = producer_of(done->got);
    if (p < 0 || done->got == TT_BAD_VALUE) {
        l->t_phantom++;
        return;
    }
    if (done->got <= s->last[p])
        l->t_order++;
    s->last[p] = done->got;
    if (t == TT_TOPIC_BLOCK && done->missed != 0)
        l->t_uncounted++; /* a live subscriber of a BLOCK topic misses nothing */
}

/* The record of `id` in v[0..n) (in id order), or NULL. */
static tt_qrec *find_in(tt_qrec *v, size_t n, uint64_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo].id == id ? &v[lo] : NULL;
}

static tt_qrec *find(tt_ledger *l, uint64_t id)
{
    int p = producer_of(id);
    return p < 0 ? NULL : find_in(l->p[p].v, l->p[p].n, id);
}

static tt_qrec *find_pub(tt_ledger *l, unsigned topic, uint64_t id)
{
    int p = producer_of(id);
    return p < 0 ? NULL : find_in(l->t[topic][p].v, l->t[topic][p].n, id);
}

/* A message a worker (or the checker's drain) received: kept for settle. */
static void note_received(tt_ledger *l, uint64_t id)
{
    int p = producer_of(id);
    if (p < 0 || id == TT_BAD_VALUE) {
        l->phantom++; /* torn, or not one this run sent */
        return;
    }
    if (l->p[p].rn == l->p[p].rcap)
        l->p[p].rv = grow(l->p[p].rv, &l->p[p].rcap, sizeof(uint64_t));
    l->p[p].rv[l->p[p].rn++] = id;
}

static void idset_add(tt_idset *s, uint64_t id)
{
    if (s->n == s->cap)
        s->v = grow(s->v, &s->cap, sizeof(uint64_t));
    s->v[s->n++] = id;
}

/* Remove one `id` from *s; false when it is not there. */
static bool idset_take(tt_idset *s, uint64_t id)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] == id) {
            s->v[i] = s->v[--s->n];
            return true;
        }
    return false;
}

static tt_idset idset_copy(const tt_idset *s)
{
    tt_idset c = {NULL, s->n, s->n};
    if (s->n > 0) {
        c.v = malloc(s->n * sizeof(uint64_t));
        if (c.v == NULL)
            abort();
        memcpy(c.v, s->v, s->n * sizeof(uint64_t));
    }
    return c;
}

/* A delivery out of FIFO order: excused once per orphaned lease. */
static bool fifo_excused(tt_idset *orphans, uint64_t *unknown, uint64_t id)
{
    if (idset_take(orphans, id))
        return true;
    if (*unknown > 0) {
        --*unknown;
        return true;
    }
    return false;
}

void tt_ledger_done(tt_ledger *l, unsigned worker, const tt_msg *done)
{
    if (done->op.kind == TT_T_PUB) {
        tt_qrec *q = find_pub(l, done->op.arg % TT_TOPICS, done->op.id);
        if (q != NULL)
            q->st = done->rc == 0 ? TT_Q_SENT : TT_Q_REFUSED;
        l->t_published += done->rc == 0;
    } else if (done->op.kind == TT_T_NEXT) {
        if (done->rc == 0)
            topic_received(l, worker, done);
    } else if (done->op.kind == TT_Q_SEND) {
        tt_qrec *q = find(l, done->op.id);
        if (q != NULL)
            q->st = done->rc == 0 ? TT_Q_SENT : TT_Q_REFUSED;
        l->sent += done->rc == 0;
    } else if ((done->op.kind == TT_Q_RECV || done->op.kind == TT_Q_LEASE) && done->rc == 0) {
        l->received++;
        int p = producer_of(done->got);
        /* FIFO per producer, as this consumer sees it. */
        if (p >= 0 && worker < TT_WORKERS_MAX) {
            if (done->got <= l->last_by[worker][p] &&
                !fifo_excused(&l->orphan_fifo, &l->orphan_unknown, done->got))
                l->fifo++;
            l->last_by[worker][p] = done->got;
        }
        note_received(l, done->got);
        if (done->op.kind == TT_Q_LEASE && worker < TT_WORKERS_MAX) {
            l->leased++;
            if (l->held[worker].n < TT_HELD_MAX)
                l->held[worker].msg[l->held[worker].n++] = done->got;
        }
    } else if (done->op.kind == TT_Q_ACK && worker < TT_WORKERS_MAX) {
        /* The worker dropped its oldest lease, whatever the ack returned. */
        if (l->held[worker].n > 0) {
            unsigned n = --l->held[worker].n;
            memmove(l->held[worker].msg, l->held[worker].msg + 1, n * sizeof(uint64_t));
        }
        tt_qrec *q = done->rc == 0 ? find(l, done->got) : NULL;
        if (q != NULL) {
            l->acked++;
            if (++q->acks > 1)
                l->double_acked++;
        }
    }
}

void tt_ledger_killed(tt_ledger *l, unsigned worker, const tt_op *inflight)
{
    if (inflight != NULL && inflight->kind == TT_Q_RECV)
        l->ambiguous++;
    if (inflight != NULL && inflight->kind == TT_Q_LEASE)
        l->orphan_unknown++;
    if (worker >= TT_WORKERS_MAX)
        return;
    /* Its subscriptions end with it (the next process subscribes anew). */
    for (unsigned t = 0; t < TT_TOPICS; t++)
        l->sub_open[worker][t] = 0;
    /* Its leases (the one an ack in flight was for included) come back. */
    for (unsigned i = 0; i < l->held[worker].n; i++) {
        idset_add(&l->orphan_dup, l->held[worker].msg[i]);
        idset_add(&l->orphan_fifo, l->held[worker].msg[i]);
    }
    l->held[worker].n = 0;
}

/* The topic rules of model.h that need every record: receipts of messages
 * never published (or refused); missed counts too small for the gaps in a
 * producer's sequence; places that disagree between subscriptions. */
static void topics_check(tt_ledger *l)
{
    size_t nsub = l->subs.n;
    /* For each publication, the first subscription that received it and
     * where; for each pair of subscriptions, their distance (once seen). */
    struct first {
        size_t sub;
        uint64_t pos;
    } *first[TT_TOPICS][TT_WORKERS_MAX];
    for (unsigned t = 0; t < TT_TOPICS; t++)
        for (unsigned p = 0; p < TT_WORKERS_MAX; p++) {
            first[t][p] = calloc(l->t[t][p].n + 1, sizeof(struct first));
            if (first[t][p] == NULL)
                abort();
        }
    int64_t *dist = calloc(nsub + 1, sizeof *dist);
    bool *seen = calloc(nsub + 1, sizeof *seen);
    if (dist == NULL || seen == NULL)
        abort();
    for (size_t si = 0; si < nsub; si++) {
        const tt_tsub *s = &l->subs.v[si];
        memset(seen, 0, (nsub + 1) * sizeof *seen);
        uint64_t gaps = 0, later_missed = 0;
        size_t prev[TT_WORKERS_MAX]; /* index + 1 of the producer's last receipt */
        memset(prev, 0, sizeof prev);
        for (size_t i = 0; i < s->n; i++) {
            uint64_t id = s->r[i].id;
            if (i > 0)
                later_missed += s->r[i].missed;
            int p = producer_of(id);
            tt_qrec *q = p < 0 ? NULL : find_pub(l, s->topic, id);
            if (q == NULL || q->st == TT_Q_REFUSED) {
                l->t_phantom++;
                continue;
            }
            size_t k = (size_t)(q - l->t[s->topic][p].v);
            if (prev[p] != 0 && prev[p] - 1 < k)
                for (size_t j = prev[p]; j < k; j++)
                    gaps += l->t[s->topic][p].v[j].st == TT_Q_SENT;
            prev[p] = k + 1;
            struct first *f = &first[s->topic][p][k];
            if (f->sub == 0) {
                f->sub = si + 1;
                f->pos = s->r[i].pos;
            } else if (f->sub != si + 1) {
                int64_t d = (int64_t)(s->r[i].pos - f->pos);
                if (!seen[f->sub]) {
                    seen[f->sub] = true;
                    dist[f->sub] = d;
                } else if (dist[f->sub] != d) {
                    l->t_inconsistent++;
                }
            }
        }
        if (gaps > later_missed)
            l->t_uncounted++;
    }
    for (unsigned t = 0; t < TT_TOPICS; t++)
        for (unsigned p = 0; p < TT_WORKERS_MAX; p++)
            free(first[t][p]);
    free(dist);
    free(seen);
}

/* After the crash each topic works: a fresh subscriber receives a new
 * publication whole, having missed nothing. Returns 0 or what failed. */
static int topics_probe(tt_world *w)
{
    for (unsigned t = 0; t < TT_TOPICS; t++) {
        shmds_sub *s;
        unsigned char v[VAL_MAX];
        size_t len = 0;
        uint64_t missed = 1, id = UINT64_C(0x7f) << 56 | t; /* no worker's id */
        int rc = shmds_queue_subscribe(w->topic[t], &s);
        if (rc != 0)
            return rc;
        size_t n = val_make(id, v);
        if ((rc = shmds_queue_send(w->topic[t], v, n, 0)) == 0 &&
            (rc = shmds_sub_next(s, v, sizeof v, &len, &missed, 0)) == 0 &&
            (val_id(v, len) != id || missed != 0))
            rc = SHMDS_ECORRUPT;
        shmds_sub_close(s);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int tt_ledger_settle(tt_ledger *l, tt_world *w)
{
    uint64_t bad0 = l->phantom + l->duplicate + l->fifo + l->lost + l->double_acked +
                    l->t_phantom + l->t_order + l->t_uncounted + l->t_inconsistent;
    topics_check(l);
    int prc = topics_probe(w);
    if (prc != 0) {
        fprintf(stderr, "torture: topic: a fresh subscriber after the crash: %s\n",
                shmds_errname(prc));
        return prc;
    }
    /* The excuses are used up on copies: a sweep settles copies of one
     * image again. */
    tt_idset fifo_ok = idset_copy(&l->orphan_fifo), dup_ok = idset_copy(&l->orphan_dup);
    uint64_t unknown = l->orphan_unknown;
    /* Everything received of a producer came out of the queue before
     * anything still in it: what is drained now comes after, in order. */
    uint64_t max_recv[TT_WORKERS_MAX] = {0};
    size_t recv_n[TT_WORKERS_MAX];
    for (unsigned p = 0; p < TT_WORKERS_MAX; p++) {
        recv_n[p] = l->p[p].rn;
        for (size_t i = 0; i < l->p[p].rn; i++)
            if (l->p[p].rv[i] > max_recv[p])
                max_recv[p] = l->p[p].rv[i];
    }
    int rc;
    for (;;) {
        unsigned char v[VAL_MAX];
        size_t len;
        rc = shmds_queue_recv(w->queue, v, sizeof v, &len, 0);
        if (rc != 0)
            break;
        uint64_t id = val_id(v, len);
        int p = producer_of(id);
        l->drained++;
        if (p >= 0 && id != TT_BAD_VALUE) {
            if (id > max_recv[p])
                max_recv[p] = id;
            else if (!fifo_excused(&fifo_ok, &unknown, id))
                l->fifo++;
        }
        note_received(l, id);
    }
    free(fifo_ok.v);
    if (rc != -EAGAIN) {
        free(dup_ok.v);
        return rc;
    }
    /* Exactly once: match receipts with sends, on a copy of the states. */
    uint64_t missing = 0;
    for (unsigned p = 0; p < TT_WORKERS_MAX; p++) {
        uint32_t *st = malloc((l->p[p].n + 1) * sizeof *st);
        if (st == NULL)
            abort();
        for (size_t i = 0; i < l->p[p].n; i++)
            st[i] = l->p[p].v[i].st;
        for (size_t i = 0; i < l->p[p].rn; i++) {
            tt_qrec *q = find(l, l->p[p].rv[i]);
            uint32_t *s = q != NULL ? &st[q - l->p[p].v] : NULL;
            if (s == NULL || *s == TT_Q_REFUSED)
                l->phantom++;
            else if (*s == TT_Q_RECEIVED && idset_take(&dup_ok, l->p[p].rv[i]))
                l->redelivered++;
            else if (*s == TT_Q_RECEIVED)
                l->duplicate++;
            else
                *s = TT_Q_RECEIVED;
        }
        for (size_t i = 0; i < l->p[p].n; i++)
            missing += st[i] == TT_Q_SENT;
        free(st);
        /* The drained receipts are this settle's own: a later settle of
         * another copy of the image drains again. */
        l->p[p].rn = recv_n[p];
    }
    free(dup_ok.v);
    uint64_t excused = missing < l->ambiguous ? missing : l->ambiguous;
    l->ambiguous_used += excused;
    l->lost += missing - excused;
    if (missing > excused)
        fprintf(stderr, "torture: queue: %" PRIu64 " sent messages never received\n",
                missing - excused);
    uint64_t tbad = l->t_phantom + l->t_order + l->t_uncounted + l->t_inconsistent;
    return l->phantom + l->duplicate + l->fifo + l->lost + l->double_acked + tbad != bad0
               ? SHMDS_ECORRUPT
               : 0;
}

void tt_ledger_reset(tt_ledger *l)
{
    for (unsigned p = 0; p < TT_WORKERS_MAX; p++) {
        l->p[p].n = l->p[p].rn = 0;
        l->held[p].n = 0;
    }
    l->ambiguous = 0;
    l->orphan_dup.n = l->orphan_fifo.n = 0;
    l->orphan_unknown = 0;
    for (unsigned t = 0; t < TT_TOPICS; t++)
        for (unsigned p = 0; p < TT_WORKERS_MAX; p++)
            l->t[t][p].n = 0;
    for (size_t i = 0; i < l->subs.n; i++)
        free(l->subs.v[i].r);
    l->subs.n = 0;
    memset(l->sub_open, 0, sizeof l->sub_open);
}

void tt_ledger_free(tt_ledger *l)
{
    for (unsigned p = 0; p < TT_WORKERS_MAX; p++) {
        free(l->p[p].v);
        free(l->p[p].rv);
    }
    free(l->orphan_dup.v);
    free(l->orphan_fifo.v);
    for (unsigned t = 0; t < TT_TOPICS; t++)
        for (unsigned p = 0; p < TT_WORKERS_MAX; p++)
            free(l->t[t][p].v);
    for (size_t i = 0; i < l->subs.n; i++)
        free(l->subs.v[i].r);
    free(l->subs.v);
    memset(l, 0, sizeof *l);
}
