/* The shared model behind the crash torture driver and the fault-point
 * sweep: the operations a worker performs on one region, the records it
 * sends over a pipe (an *intent* before each call, a *done* after it
 * returned: the acknowledgement log), and the checker that replays that log
 * against what the region holds.
 *
 * Every worker owns its own part of every structure (its own directory
 * names, its own allocation slots, ...), so each worker's model is
 * sequential: after a crash its part of the region must equal the model of
 * its acknowledged operations, or that model plus the one operation whose
 * intent it had sent — all or nothing. */
#ifndef SHMDS_TORTURE_MODEL_H
#define SHMDS_TORTURE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <shmds.h>

#define TT_WORKERS_MAX 6
#define TT_DIR_NAMES 3  /* directory names per worker */
#define TT_SLOTS 8      /* allocation slots per worker (shmds__alloc_into) */
#define TT_LIST_MAX 128 /* a worker's list is kept shorter (tt_draw pops) */

/* What a worker can do. */
enum tt_kind {
    TT_DIR_SET,    /* shmds_root_set(name k) */
    TT_DIR_DEL,    /* shmds_root_del(name k) */
    TT_SLOT_FLIP,  /* slot k empty: shmds__alloc_into(size); else shmds__free_from */
    TT_LIST_PUSH_BACK,
    TT_LIST_PUSH_FRONT,
    TT_LIST_POP_FRONT,
    TT_LIST_POP_BACK,
    TT_KINDS
};

/* Which structure an operation belongs to (for the figures). */
enum tt_struct { TT_S_DIR, TT_S_ALLOC, TT_S_LIST, TT_STRUCTS };
extern const char *const tt_struct_name[TT_STRUCTS];

typedef struct tt_op {
    uint8_t kind;
    uint8_t arg;   /* name, slot, key index */
    uint16_t pad;
    uint32_t size; /* bytes to allocate */
    uint64_t id;   /* value written, when the op writes one */
} tt_op;

enum { TT_MSG_INTENT = 1, TT_MSG_DONE = 2 };

/* One record on a worker's pipe (small enough for an atomic pipe write). */
typedef struct tt_msg {
    uint32_t type;
    uint32_t worker;
    uint64_t seq; /* the worker's operation number */
    tt_op op;
    int32_t rc;   /* DONE: what the call returned */
    uint32_t pad;
    uint64_t got; /* DONE of a read: the value id read, 0 for none */
} tt_msg;

/* One worker's part of the region, as the model sees it. */
typedef struct tt_state {
    uint32_t dir;                /* bit k: name k is registered */
    uint32_t slot_size[TT_SLOTS]; /* 0: slot empty */
    uint32_t list_n;
    uint64_t list[TT_LIST_MAX];   /* value ids, front first */
} tt_state;

/* The region and every process-local handle a worker or checker needs. */
typedef struct tt_world {
    shmds_region *r;
    unsigned workers;
    shmds_off_t table[TT_WORKERS_MAX]; /* each worker's TT_SLOTS slots */
    shmds_list *list[TT_WORKERS_MAX];
} tt_world;

/* Set up a fresh region with every worker's objects (the driver, once). */
int tt_world_create(tt_world *w, const char *name, size_t size, unsigned workers);
/* Attach to a region set up by tt_world_create (each worker, the checker). */
int tt_world_open(tt_world *w, const char *name, unsigned workers);
void tt_world_close(tt_world *w);

/* A small deterministic generator (splitmix64). */
uint64_t tt_rand(uint64_t *s);

/* Draw worker `me`'s next operation. `st` is the worker's own view of its
 * state, used only to bias the draw; `id` must be unique in the run. */
tt_op tt_draw(uint64_t *rng, const tt_world *w, unsigned me, uint64_t id);

/* Perform `op` for worker `me`; fills rc and got of *done. */
void tt_perform(tt_world *w, unsigned me, const tt_op *op, tt_msg *done);

/* Apply `op` to the model; returns what the call must return and sets
 * *got for reads. */
int tt_model_apply(tt_state *s, const tt_op *op, uint64_t *got);

/* An acknowledged DONE record against the model: advances *s and returns
 * true when the call's result is the one the model predicts (a write the
 * environment refused, -ENOMEM, leaves the model as it was). */
bool tt_model_ack(tt_state *s, const tt_msg *done);

/* Checker for a worker that is not running: 0 when its part of the region
 * equals *s, or *s plus *inflight (then *s advances), SHMDS_ECORRUPT
 * otherwise, with *lost the acknowledged items missing and *phantom the
 * items present that no acknowledged or in-flight op wrote. Takes the
 * locks it needs (so repairs run). */
int tt_verify(tt_world *w, unsigned me, tt_state *s, const tt_op *inflight, unsigned *lost,
              unsigned *phantom);

/* Take every lock of the region once (directory, allocator, each
 * structure's), so that whatever a dead holder left is repaired now.
 * Adds to rec[s] the recoveries (epoch bumps) each structure's step made.
 * Returns the first error. */
int tt_take_every_lock(tt_world *w, uint64_t rec[TT_STRUCTS]);

/* Destroy every object and release every slot, so that nothing should stay
 * allocated (the final leak check). */
int tt_world_teardown(tt_world *w);

/* Which structure an op kind touches. */
enum tt_struct tt_op_struct(uint8_t kind);

#endif
