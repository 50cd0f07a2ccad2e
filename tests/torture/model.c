/* The torture model: see model.h. */
#include "model.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *const tt_struct_name[TT_STRUCTS] = {"directory", "allocator", "list"};

enum tt_struct tt_op_struct(uint8_t kind)
{
    switch (kind) {
    case TT_DIR_SET:
    case TT_DIR_DEL:
        return TT_S_DIR;
    case TT_SLOT_FLIP:
        return TT_S_ALLOC;
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
    return 0;
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
    return 0;
}

void tt_world_close(tt_world *w)
{
    for (unsigned i = 0; i < TT_WORKERS_MAX; i++) {
        if (w->list[i] != NULL)
            shmds_list_close(w->list[i]);
        w->list[i] = NULL;
    }
    if (w->r != NULL)
        shmds_region_close(w->r);
    w->r = NULL;
}

static shmds_off_t *slot_of(tt_world *w, unsigned me, unsigned k)
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
        op.arg = (uint8_t)(x % TT_SLOTS);
        x /= TT_SLOTS;
        /* Mostly small blocks, now and then a large one. */
        op.size = (uint32_t)(1 + (x % 8 == 0 ? x % 20000 : x % 300));
        break;
    default:
        break;
    }
    op.id = id;
    return op;
}

void tt_perform(tt_world *w, unsigned me, const tt_op *op, tt_msg *done)
{
    char n[SHMDS_ROOT_NAME_MAX + 1];
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
    case TT_LIST_PUSH_BACK:
    case TT_LIST_PUSH_FRONT: {
        unsigned char v[VAL_MAX];
        size_t len = val_make(op->id, v);
        done->rc = op->kind == TT_LIST_PUSH_BACK ? shmds_list_push_back(w->list[me], v, len)
                                                 : shmds_list_push_front(w->list[me], v, len);
        break;
    }
    case TT_LIST_POP_FRONT:
    case TT_LIST_POP_BACK: {
        unsigned char v[VAL_MAX];
        size_t len = 0;
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
}

/* ---- the model ---- */

int tt_model_apply(tt_state *s, const tt_op *op, uint64_t *got)
{
    *got = 0;
    uint32_t bit = 1u << op->arg;
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
               op->kind == TT_LIST_PUSH_BACK || op->kind == TT_LIST_PUSH_FRONT;
    return false;
}

bool tt_model_ack(tt_state *s, const tt_msg *done)
{
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
}

static bool matches(const tt_state *m, const tt_obs *o)
{
    unsigned lost = 0, phantom = 0;
    diff(m, o, &lost, &phantom);
    /* Same items is not enough: the same order too. */
    return lost == 0 && phantom == 0 && m->list_n == o->list_n &&
           memcmp(m->list, o->list, m->list_n * sizeof m->list[0]) == 0;
}

int tt_verify(tt_world *w, unsigned me, tt_state *s, const tt_op *inflight, unsigned *lost,
              unsigned *phantom)
{
    tt_obs obs;
    int rc = observe(w, me, &obs);
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
    for (unsigned i = 0; i < w->workers; i++) {
        size_t len;
        e = epoch(w);
        rc2 = shmds_list_len(w->list[i], &len);
        if (rc == 0)
            rc = rc2;
        rec[TT_S_LIST] += epoch(w) - e;
    }
    return rc;
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
    return 0;
}
