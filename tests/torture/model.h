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
#define TT_DIR_NAMES 24 /* directory names per worker: enough that buckets
                         * share chains, which gain and lose blocks */
#define TT_SLOTS 8      /* allocation slots per worker (shmds__alloc_into) */
#define TT_LIST_MAX 128 /* a worker's list is kept shorter (tt_draw pops) */
#define TT_MAP_VALS 40  /* map keys per worker holding values (put, del, get) */
#define TT_MAP_CTRS 4   /* map keys per worker holding counters (add, del, get) */
#define TT_MAP_KEYS (TT_MAP_VALS + TT_MAP_CTRS)
#define TT_QUEUE_BYTES 2048 /* the shared queue's ring: small, so it fills and wraps */
#define TT_HELD_MAX 4       /* leases a worker holds at most (tt_draw acks then) */

#define TT_Q_ZEROCOPY 1

/* The broadcast topics every worker publishes to and subscribes to. */
enum { TT_TOPIC_DROP, /* a full ring drops the oldest: subscribers miss some */
       TT_TOPIC_BLOCK, /* SHMDS_QUEUE_BLOCK: publishers wait, nobody misses */
       TT_TOPICS };
#define TT_TOPIC_BYTES 384 /* a few messages: the ring fills and drops */

/* What a worker can do. */
enum tt_kind {
    TT_DIR_SET,    /* shmds_root_set(name k) */
    TT_DIR_DEL,    /* shmds_root_del(name k) */
    TT_SLOT_FLIP,  /* slot k empty: shmds__alloc_into(size); else shmds__free_from */
    TT_LIST_PUSH_BACK,
    TT_LIST_PUSH_FRONT,
    TT_LIST_POP_FRONT,
    TT_LIST_POP_BACK,
    TT_SLOT_REALLOC, /* slot k live: shmds_realloc to size, store the offset */
    TT_MAP_PUT,      /* value key k, flags 0 / NX / XX, ttl 0 or an hour */
    TT_MAP_DEL,      /* any key k */
    TT_MAP_ADD,      /* counter key k += delta (add_ex: absent starts at `flags`,
                        ttl 0 or an hour) */
    TT_MAP_GET,      /* any key k */
    TT_MAP_CAS,      /* value key k: get_ex, then put_ex if_version (flags 1:
                        a version that cannot match: SHMDS_EVERSION) */
    TT_MAP_FILL,     /* value key k: fetch; on a miss fill_done (flags 1:
                        fill_abort); a hit reads like a get */
    TT_MAP_EXPIRE,   /* value key k: touch to an hour (flags 1: persist) */
    TT_MAP_REAP,     /* shmds_map_reap of a few buckets (nothing expires) */
    TT_Q_SEND,       /* a message naming this producer and its sequence number */
    TT_Q_RECV,
    TT_Q_LEASE,      /* shmds_queue_recv_lease: the worker holds the lease */
    TT_Q_ACK,        /* acknowledge the worker's oldest lease */
    TT_ARENA_ADD,    /* carve one more allocator arena (as contention does) */
    TT_BLOCK,        /* shmds_alloc of arg small blocks (size), each filled with
                        the op's id, read back, then shmds_free of them all (the
                        handle's block cache; a run of TT_BLOCK_RUN overflows its
                        slots into the batch, which fills and is flushed) */
    TT_T_PUB,        /* publish to topic `arg` (a message named like a send's;
                        flags: TT_Q_ZEROCOPY) */
    TT_T_NEXT,       /* shmds_sub_next on topic `arg` (subscribing first if the
                        process has not) */
    TT_KINDS
};

/* Which structure an operation belongs to (for the figures). */
enum tt_struct { TT_S_DIR, TT_S_ALLOC, TT_S_LIST, TT_S_MAP, TT_S_QUEUE, TT_STRUCTS };
extern const char *const tt_struct_name[TT_STRUCTS];

typedef struct tt_op {
    uint8_t kind;
    uint8_t arg;   /* name, slot, key index */
    uint8_t flags; /* map put: 0, SHMDS_PUT_NX or SHMDS_PUT_XX; add: the initial
                      value; cas, fill, expire: the variant (see tt_kind); queue
                      send: TT_Q_ZEROCOPY (reserve, then commit) */
    uint8_t pad;
    uint32_t size; /* bytes to allocate; map put: ttl; queue: timeout (ms) */
    uint64_t id;   /* value written, when the op writes one (unique in the run;
                      the top byte is the worker + 1) */
    uint64_t aux;  /* realloc: the block's offset before (tt_prepare);
                      map add: the delta (an int64_t); queue ack: the lease id */
} tt_op;

enum { TT_MSG_INTENT = 1, TT_MSG_DONE = 2 };

/* The blocks of a TT_BLOCK run: more than a cache's slots and batch hold
 * for one size (8 + 64), so that one run flushes the batch. */
#define TT_BLOCK_RUN 80u

/* One record on a worker's pipe (small enough for an atomic pipe write). */
typedef struct tt_msg {
    uint32_t type;
    uint32_t worker;
    uint64_t seq; /* the worker's operation number */
    tt_op op;
    int32_t rc;   /* DONE: what the call returned */
    uint32_t missed; /* DONE of a topic receive: the missed count it gave */
    uint64_t got; /* DONE of a read: the value id read, 0 for none; of a
                     queue ack: the id of the message acknowledged */
} tt_msg;

/* One worker's part of the region, as the model sees it. The queue is
 * shared by all workers, so it is not in here: see tt_ledger. */
typedef struct tt_state {
    uint32_t dir;                /* bit k: name k is registered */
    uint32_t slot_size[TT_SLOTS]; /* 0: slot empty */
    uint32_t list_n;
    uint64_t list[TT_LIST_MAX];   /* value ids, front first */
    uint64_t map_has;             /* bit k: map key k is present */
    uint64_t map_val[TT_MAP_KEYS]; /* value key: the value's id; counter: its value */
} tt_state;

/* The region and every process-local handle a worker or checker needs.
 * One map and one queue are shared by every worker (each worker has its
 * own keys in the map; every worker both sends and receives). */
typedef struct tt_world {
    shmds_region *r;
    unsigned workers;
    shmds_off_t table[TT_WORKERS_MAX]; /* each worker's TT_SLOTS slots */
    shmds_list *list[TT_WORKERS_MAX];
    shmds_map *map;
    shmds_queue *queue;
    shmds_queue *topic[TT_TOPICS];
    shmds_sub *sub[TT_TOPICS]; /* this process's subscriptions (a worker's) */
    /* The leases this process (a worker) holds, oldest first. */
    unsigned nheld;
    uint64_t held_lease[TT_HELD_MAX], held_msg[TT_HELD_MAX];
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

/* Between drawing an op and sending its intent: a realloc notes the
 * block's offset in op->aux and writes op->id into the block's first 8
 * bytes (a tag: the checker can tell whether the block is still this
 * worker's after a crash inside the call, see tt_verify). */
void tt_prepare(tt_world *w, unsigned me, tt_op *op);

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
 * locks it needs (so repairs run).
 *
 * shmds_realloc gives the new offset to the caller only: a worker killed
 * after the call committed a move (old block freed) but before it stored
 * the offset in its slot leaves the slot naming a block that is no longer
 * its own, and the new block leaked. tt_verify tells that case by the tag
 * tt_prepare wrote (a freed block's first 8 bytes become a free-list link,
 * never a tag), clears the slot, counts it in *dropped and accepts. */
int tt_verify(tt_world *w, unsigned me, tt_state *s, const tt_op *inflight, unsigned *lost,
              unsigned *phantom, unsigned *dropped);

/* How many blocks `op` may leak if its worker dies inside it: one for a
 * realloc (see tt_verify), the blocks a TT_BLOCK holds; the leak check
 * allows that many per such death. */
unsigned tt_op_may_leak(const tt_op *op);

/* True when `op` may legitimately return -ETIMEDOUT (a queue op with a
 * timeout): not a hang. */
bool tt_op_may_time_out(const tt_op *op);

/* ---- the queue's ledger ----
 * Every worker is a producer whose messages carry their op id (worker,
 * generation, sequence number: increasing per producer) and a consumer.
 * The ledger follows each producer's messages from intent to receipt:
 *  - a receive of a message never sent, or whose send failed, is a phantom;
 *    of a message already received, a duplicate;
 *  - FIFO per producer: each consumer receives a producer's messages in
 *    increasing order; at settle, what is left in the queue of a producer
 *    comes after everything received of it;
 *  - at settle (every worker stopped, the queue drained by the checker)
 *    every message whose send returned 0 was received exactly once, except
 *    at most one per receive that was in flight when its worker was killed
 *    (that receive may have committed: the message went with it); a send
 *    in flight when its worker was killed counts either way, once.
 * The queue is at-least-once (SHMDS_QUEUE_ACK, a lease far longer than a
 * run): workers also lease messages and acknowledge them later. A lease
 * acknowledged (0) is acknowledged exactly once, and never fails while its
 * worker lives. The leases a killed worker held are *orphans*: each may be
 * delivered once more (not a duplicate), out of FIFO order (not a FIFO
 * violation); a lease in flight at the kill is an orphan whose message is
 * unknown: it excuses one FIFO violation. */
enum { TT_Q_MAYBE = 1, TT_Q_SENT, TT_Q_REFUSED, TT_Q_RECEIVED };
typedef struct tt_qrec {
    uint64_t id;
    uint32_t st;   /* TT_Q_MAYBE, TT_Q_SENT, TT_Q_REFUSED, TT_Q_RECEIVED */
    uint32_t acks; /* acknowledgements that returned 0 */
} tt_qrec;

typedef struct tt_idset {
    uint64_t *v;
    size_t n, cap;
} tt_idset;

/* A subscription, as the ledger follows it: one worker process's, to one
 * topic, from its first receipt to its death. `pos` is the receipt's place
 * in the topic after the subscription point (missed ones counted). */
typedef struct tt_tsub {
    unsigned topic;
    size_t n, cap;
    struct tt_trecv {
        uint64_t id, pos, missed;
    } *r;
    uint64_t pos;
    uint64_t last[TT_WORKERS_MAX]; /* each producer's last id it received */
} tt_tsub;

typedef struct tt_ledger {
    struct {
        tt_qrec *v; /* its sends, in id order */
        size_t n, cap;
        uint64_t *rv; /* ids of its messages the workers received */
        size_t rn, rcap;
    } p[TT_WORKERS_MAX];
    uint64_t last_by[TT_WORKERS_MAX][TT_WORKERS_MAX]; /* consumer x producer */
    uint64_t ambiguous; /* receives in flight at a kill, since the last settle */
    struct {
        uint64_t msg[TT_HELD_MAX];
        unsigned n;
    } held[TT_WORKERS_MAX];   /* the leases each worker holds */
    tt_idset orphan_dup;      /* may be delivered once more */
    tt_idset orphan_fifo;     /* may come out of FIFO order once */
    uint64_t orphan_unknown;  /* leases in flight at a kill */
    /* Figures, over the run. */
    uint64_t sent, received, drained, phantom, duplicate, fifo, lost, ambiguous_used;
    uint64_t leased, acked, double_acked, redelivered;
    /* The topics: publications per topic and producer (as p[].v), the
     * subscriptions, and for each worker the one it has open (index + 1). */
    struct {
        tt_qrec *v;
        size_t n, cap;
    } t[TT_TOPICS][TT_WORKERS_MAX];
    struct {
        tt_tsub *v;
        size_t n, cap;
    } subs;
    size_t sub_open[TT_WORKERS_MAX][TT_TOPICS];
    /* Topic figures, over the run (the last four are violations). */
    uint64_t t_published, t_received, t_missed, t_subs;
    uint64_t t_phantom, t_order, t_uncounted, t_inconsistent;
} tt_ledger;

void tt_ledger_intent(tt_ledger *l, unsigned worker, const tt_op *op);
void tt_ledger_done(tt_ledger *l, unsigned worker, const tt_msg *done);
/* The worker died with `inflight` (NULL: none) under way. */
void tt_ledger_killed(tt_ledger *l, unsigned worker, const tt_op *inflight);
/* The topics' rules, checked by tt_ledger_settle on every subscription:
 *  - a receipt is a message published (not refused), never a torn one,
 *    and each producer's messages come in increasing order, once;
 *  - missed counts are exact: a producer's messages published (0) between
 *    two of its receipts were missed, so they are within the sum of the
 *    missed counts given after the first receipt; and two subscriptions
 *    that both received a message see it at places (receipts + missed
 *    since subscribing) that differ by the same amount for every message
 *    both received (the distance of their subscription points);
 *  - on the SHMDS_QUEUE_BLOCK topic nobody misses anything;
 *  - after the crash, the topics work: a fresh subscriber receives a new
 *    publication, with nothing missed.
 * Every worker stopped and its pipe read to the end: drain the queue and
 * check exactly-once and FIFO. The records stay (tt_ledger_reset drops
 * them), so a sweep may settle copies of one crashed image again.
 * Returns 0, SHMDS_ECORRUPT (a rule above broken: see the counters), or a
 * library error from the receives. */
int tt_ledger_settle(tt_ledger *l, tt_world *w);
/* Forget every message (after a settle emptied the queue). */
void tt_ledger_reset(tt_ledger *l);
void tt_ledger_free(tt_ledger *l);

/* Destroy the shared map and create it again, empty (the driver, at a
 * checkpoint, so that every stretch of the run grows it again); every
 * worker's model then has no keys. */
int tt_world_map_reset(tt_world *w);

/* What a process attaching right after a crash sees before anything was
 * repaired: a child attaches to the region named `name` read-only (so it
 * repairs nothing, and waits at most 1 ms for a repair) and walks the map
 * through a new handle, lock-free. Returns 0, the walk's SHMDS_ECORRUPT, or
 * -ECHILD when the child died of a signal; -ETIMEDOUT (a change the dead
 * process left half done) is not damage and gives 0. */
int tt_fresh_read(const char *name);

/* Take every lock of the region once (directory, allocator, each
 * structure's), so that whatever a dead holder left is repaired now.
 * Adds to rec[s] the recoveries (epoch bumps) each structure's step made.
 * Returns the first error. */
int tt_take_every_lock(tt_world *w, uint64_t rec[TT_STRUCTS]);

/* Destroy every object and release every slot, so that nothing should stay
 * allocated (the final leak check). */
int tt_world_teardown(tt_world *w);
/* Copy region r (named `from`) and its reader table into fresh objects
 * named `to` (removed first): a copy whose retired blocks can be freed.
 * 0 or -EIO. */
int tt_region_copy(shmds_region *r, const char *from, const char *to);

/* Which structure an op kind touches. */
enum tt_struct tt_op_struct(uint8_t kind);

#endif
