/*
 * libshmds-redis: one near-cache per host in front of Redis (shmds/redis.h
 * has the design: client tracking with REDIRECT, the listener lease, epochs).
 *
 * Shared state. Besides the map, the region holds one control block (struct
 * nc_ctl, named name + ":nc"): the lease mutex, one word `state` = epoch << 1
 * | up that only the lease holder writes, the listener's Redis client id,
 * host-wide counters, and 1024 invalidation counters indexed by key hash.
 * A reader takes (state, client id) consistently by reading state, the id,
 * then state again: the holder writes a new id only while `up` is 0 and
 * publishes it with a new epoch.
 *
 * Entries. The map's user flags of an entry hold the epoch it was filled in
 * (31 bits) and one bit for "absent in Redis" (a cached nil). A get is
 * fresh only when the lease holder is up and the entry's epoch is the
 * current one.
 *
 * This file uses only the public shmds API; shared values (the state word,
 * counters, the client id) are read once and only compared or sent back to
 * Redis as numbers, so a damaged control block can give wrong answers (as
 * damaged cache contents would) but no crash.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include <shmds/redis.h>

/* ---- the control block in the region ---- */

#define NC_MAGIC UINT64_C(0x31434e5344534d48) /* "HMSDSNC1" little-endian */
#define NC_TYPE (SHMDS_TYPE_USER + 0x4e43u)    /* directory tag of the block */
#define NC_SLOTS 1024u
#define NC_NEG (UINT32_C(1) << 31)             /* user flag: cached nil */
#define NC_EPOCH_MASK (NC_NEG - 1)

struct nc_ctl {
    uint64_t magic;
    uint32_t slots;
    uint32_t pad_;
    unsigned char pad2_[48];
    shmds_mutex lease;      /* held by the listener for as long as it listens */
    uint64_t state;         /* epoch << 1 | up; written by the lease holder */
    uint64_t client_id;     /* Redis CLIENT ID of the listener's connection */
    uint64_t listener_pid;
    uint64_t invalidations;
    uint64_t flushes;
    uint64_t takeovers;
    unsigned char pad3_[16];
    uint64_t inval[NC_SLOTS]; /* invalidations seen, by key hash */
};
_Static_assert(sizeof(shmds_mutex) == 64, "lease is one cache line");
_Static_assert(offsetof(struct nc_ctl, magic) == 0, "format: magic");
_Static_assert(offsetof(struct nc_ctl, slots) == 8, "format: slots");
_Static_assert(offsetof(struct nc_ctl, lease) == 64, "format: lease");
_Static_assert(offsetof(struct nc_ctl, state) == 128, "format: state");
_Static_assert(offsetof(struct nc_ctl, client_id) == 136, "format: client id");
_Static_assert(offsetof(struct nc_ctl, inval) == 192, "format: counters");
_Static_assert(sizeof(struct nc_ctl) == 192 + 8 * NC_SLOTS, "format: size");

/* ---- the process-local handle ---- */

struct shmds_redis {
    shmds_region *r;
    struct nc_ctl *ctl;
    shmds_map *map;         /* the application thread's handle */
    char host[256];
    int port;
    int timeout_ms;
    int fill_wait_ms;
    uint64_t ttl_ms;
    redisContext *data;     /* the application thread's connection */
    uint64_t redirect;      /* client id its tracking redirects to (0: off) */
    uint64_t hits, misses, redis_gets, stale;

    pthread_t thread;       /* the listener (candidate) */
    shmds_map *lmap;        /* its own map handle */
    atomic_int stop;
    atomic_int listening;
};

static uint64_t ld(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_SEQ_CST);
}

static void st(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_SEQ_CST);
}

static void inc(uint64_t *p)
{
    __atomic_fetch_add(p, 1, __ATOMIC_SEQ_CST);
}

static uint32_t tag_of(uint64_t state)
{
    return (uint32_t)(state >> 1) & NC_EPOCH_MASK;
}

/* FNV-1a: which invalidation counter a key uses. */
static uint64_t *slot_of(struct nc_ctl *c, const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ p[i]) * 16777619u;
    return &c->inval[h & (NC_SLOTS - 1)];
}

static struct timeval tv_of(int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* The negative errno for a hiredis context in error. hiredis keeps errno
 * only as text, so the I/O case is read back from errno right after the
 * call (the callers pass it in). */
static int redis_err(const redisContext *c, int saved_errno)
{
    switch (c->err) {
    case REDIS_ERR_IO:
        if (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK || saved_errno == EINPROGRESS ||
            saved_errno == ETIMEDOUT)
            return -ETIMEDOUT;
        return saved_errno > 0 ? -saved_errno : -EIO;
    case REDIS_ERR_EOF:
        return -ECONNRESET;
    case REDIS_ERR_OOM:
        return -ENOMEM;
    default:
        return -EPROTO;
    }
}

/* A connection with every call bounded by timeout_ms. */
static int connect_to(const struct shmds_redis *h, redisContext **out)
{
    errno = 0;
    redisContext *c = redisConnectWithTimeout(h->host, h->port, tv_of(h->timeout_ms));
    int e = errno;
    if (c == NULL)
        return -ENOMEM;
    if (c->err) {
        int rc = redis_err(c, e);
        redisFree(c);
        return rc;
    }
    if (redisSetTimeout(c, tv_of(h->timeout_ms)) != REDIS_OK) {
        redisFree(c);
        return -EIO;
    }
    *out = c;
    return 0;
}

/* Run one command on the data connection (made if needed). A connection
 * error drops the connection, so the next call starts afresh. */
static int data_cmd(struct shmds_redis *h, int argc, const char **argv, const size_t *lens,
                    redisReply **out)
{
    if (h->data == NULL) {
        int rc = connect_to(h, &h->data);
        if (rc != 0)
            return rc;
        h->redirect = 0;
    }
    errno = 0;
    redisReply *rep = redisCommandArgv(h->data, argc, argv, lens);
    int e = errno;
    if (rep == NULL) {
        int rc = redis_err(h->data, e);
        redisFree(h->data);
        h->data = NULL;
        return rc;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        freeReplyObject(rep);
        return -EPROTO;
    }
    *out = rep;
    return 0;
}

/* Make the data connection's tracking redirect to @p id. */
static int track(struct shmds_redis *h, uint64_t id)
{
    if (h->data != NULL && h->redirect == id)
        return 0;
    char ids[24];
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    /* Switching the target: tracking off, then on again (Redis keeps the
     * keys already tracked, sent now to the new target). */
    const char *off[] = {"CLIENT", "TRACKING", "off"};
    const char *on[] = {"CLIENT", "TRACKING", "on", "REDIRECT", ids};
    redisReply *rep;
    int rc;
    if (h->data != NULL && h->redirect != 0) {
        rc = data_cmd(h, 3, off, NULL, &rep);
        if (rc != 0)
            return rc;
        freeReplyObject(rep);
        h->redirect = 0;
    }
    rc = data_cmd(h, 5, on, NULL, &rep);
    if (rc != 0)
        return rc;
    freeReplyObject(rep);
    h->redirect = id;
    return 0;
}

/* (state, client id) as one snapshot. */
static uint64_t state_snap(struct nc_ctl *c, uint64_t *id)
{
    for (;;) {
        uint64_t s = ld(&c->state);
        *id = ld(&c->client_id);
        if (ld(&c->state) == s)
            return s;
    }
}

/* ---- the listener ---- */

/* The lease holder's single-writer update of the state word. */
static void set_state(struct nc_ctl *c, uint64_t epoch, int up)
{
    st(&c->state, epoch << 1 | (uint64_t)(up != 0));
    inc(&c->flushes);
}

static void on_keys(struct shmds_redis *h, const redisReply *keys)
{
    struct nc_ctl *c = h->ctl;
    if (keys->type != REDIS_REPLY_ARRAY) {
        /* nil: FLUSHDB / FLUSHALL, every key is gone */
        set_state(c, (ld(&c->state) >> 1) + 1, 1);
        return;
    }
    for (size_t i = 0; i < keys->elements; i++) {
        const redisReply *k = keys->element[i];
        if (k->type != REDIS_REPLY_STRING || k->len == 0)
            continue;
        inc(slot_of(c, k->str, k->len)); /* before the removal: see fill() */
        shmds_map_del(h->lmap, k->str, k->len);
        inc(&c->invalidations);
    }
}

/* One connection's life: connect, subscribe, publish a new epoch, apply
 * messages until the connection breaks or the handle closes. */
static void listen_once(struct shmds_redis *h)
{
    struct nc_ctl *c = h->ctl;
    redisContext *rc = NULL;
    redisReply *rep = NULL;
    if (connect_to(h, &rc) != 0)
        return;
    rep = redisCommand(rc, "CLIENT ID");
    if (rep == NULL || rep->type != REDIS_REPLY_INTEGER)
        goto out;
    uint64_t id = (uint64_t)rep->integer;
    freeReplyObject(rep);
    rep = redisCommand(rc, "SUBSCRIBE __redis__:invalidate");
    if (rep == NULL || rep->type != REDIS_REPLY_ARRAY)
        goto out;
    freeReplyObject(rep);
    rep = NULL;

    st(&c->client_id, id);
    set_state(c, (ld(&c->state) >> 1) + 1, 1);
    atomic_store(&h->listening, 2);
    while (!atomic_load(&h->stop)) {
        void *msg = NULL;
        if (redisGetReplyFromReader(rc, &msg) != REDIS_OK)
            break;
        if (msg == NULL) {
            struct pollfd p = {.fd = rc->fd, .events = POLLIN};
            int n = poll(&p, 1, 100);
            if (n < 0 && errno != EINTR)
                break;
            if (n > 0 && redisBufferRead(rc) != REDIS_OK)
                break;
            continue;
        }
        rep = msg;
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3 &&
            rep->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(rep->element[0]->str, "message") == 0)
            on_keys(h, rep->element[2]);
        freeReplyObject(rep);
        rep = NULL;
    }
out:
    if (rep != NULL)
        freeReplyObject(rep);
    redisFree(rc);
    /* Whatever was filled under this connection can miss invalidations
     * from now on. */
    if (atomic_load(&h->listening) == 2)
        set_state(c, (ld(&c->state) >> 1) + 1, 0);
    atomic_store(&h->listening, 1);
}

static void *listener_main(void *arg)
{
    struct shmds_redis *h = arg;
    struct nc_ctl *c = h->ctl;
    while (!atomic_load(&h->stop)) {
        int rc = shmds_mutex_lock(&c->lease, 100, NULL, NULL);
        if (rc == -ETIMEDOUT)
            continue;
        if (rc < 0) {
            sleep_ms(100);
            continue;
        }
        /* First thing: whatever the previous holder missed is not served. */
        set_state(c, (ld(&c->state) >> 1) + 1, 0);
        if (rc == SHMDS_RECOVERED)
            inc(&c->takeovers);
        st(&c->listener_pid, (uint64_t)getpid());
        atomic_store(&h->listening, 1);
        int backoff = 1;
        while (!atomic_load(&h->stop)) {
            listen_once(h);
            /* A connection that failed or broke: retry, backing off to
             * 100 ms while Redis stays away. */
            for (int i = 0; i < backoff && !atomic_load(&h->stop); i++)
                sleep_ms(1);
            backoff = backoff < 100 ? backoff * 2 : 100;
        }
        st(&c->listener_pid, 0);
        atomic_store(&h->listening, 0);
        shmds_mutex_unlock(&c->lease);
    }
    return NULL;
}

/* ---- create, open, close ---- */

static int ctl_name(const char *name, char *out, size_t cap)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > SHMDS_REDIS_NAME_MAX)
        return -EINVAL;
    snprintf(out, cap, "%s:nc", name);
    return 0;
}

int shmds_redis_create(shmds_region *r, const char *name, const shmds_map_opts *mo)
{
    char cname[SHMDS_REDIS_NAME_MAX + 4];
    int rc = ctl_name(name, cname, sizeof cname);
    if (rc != 0)
        return rc;
    shmds_map *m;
    rc = shmds_map_create(r, name, mo, &m);
    if (rc == 0)
        shmds_map_close(m);
    else if (rc != -EEXIST)
        return rc;
    if (shmds_root_get(r, cname, NULL, NULL) == 0)
        return rc; /* -EEXIST when the map existed too */
    shmds_off_t off;
    rc = shmds_alloc(r, sizeof(struct nc_ctl), &off);
    if (rc != 0)
        return rc;
    struct nc_ctl *c = shmds_ptr(r, off);
    memset(c, 0, sizeof *c);
    c->slots = NC_SLOTS;
    rc = shmds_mutex_init(&c->lease);
    if (rc == 0) {
        st(&c->magic, NC_MAGIC);
        rc = shmds_root_set(r, cname, NC_TYPE, off);
    }
    if (rc != 0)
        shmds_free(r, off);
    return rc;
}

int shmds_redis_open(shmds_region *r, const char *name, const shmds_redis_opts *o,
                     shmds_redis **out)
{
    static const shmds_redis_opts defaults;
    char cname[SHMDS_REDIS_NAME_MAX + 4];
    if (o == NULL)
        o = &defaults;
    if (out == NULL || o->port < 0 || o->port > 65535 || o->timeout_ms < 0 ||
        o->fill_wait_ms < 0 || o->ttl_ms > SHMDS_TTL_MAX_MS ||
        (o->host != NULL && strlen(o->host) >= 256))
        return -EINVAL;
    int rc = ctl_name(name, cname, sizeof cname);
    if (rc != 0)
        return rc;
    uint32_t type;
    shmds_off_t off;
    rc = shmds_root_get(r, cname, &type, &off);
    if (rc != 0)
        return rc;
    if (type != NC_TYPE)
        return SHMDS_ETYPE;
    if (shmds_usable_size(r, off) < sizeof(struct nc_ctl))
        return SHMDS_ECORRUPT;
    struct nc_ctl *c = shmds_ptr(r, off);
    if (ld(&c->magic) != NC_MAGIC || c->slots != NC_SLOTS)
        return SHMDS_ECORRUPT;

    struct shmds_redis *h = calloc(1, sizeof *h);
    if (h == NULL)
        return -ENOMEM;
    h->r = r;
    h->ctl = c;
    snprintf(h->host, sizeof h->host, "%s", o->host ? o->host : "127.0.0.1");
    h->port = o->port ? o->port : 6379;
    h->timeout_ms = o->timeout_ms ? o->timeout_ms : 200;
    h->fill_wait_ms = o->fill_wait_ms ? o->fill_wait_ms : 2 * h->timeout_ms;
    h->ttl_ms = o->ttl_ms ? o->ttl_ms : 60000;
    rc = shmds_map_open(r, name, &h->map);
    if (rc != 0)
        goto fail;
    rc = shmds_map_open(r, name, &h->lmap);
    if (rc != 0)
        goto fail;
    rc = -pthread_create(&h->thread, NULL, listener_main, h);
    if (rc != 0)
        goto fail;
    *out = h;
    return 0;
fail:
    shmds_map_close(h->lmap);
    shmds_map_close(h->map);
    free(h);
    return rc;
}

void shmds_redis_close(shmds_redis *h)
{
    if (h == NULL)
        return;
    atomic_store(&h->stop, 1);
    pthread_join(h->thread, NULL);
    if (h->data != NULL)
        redisFree(h->data);
    shmds_map_close(h->lmap);
    shmds_map_close(h->map);
    free(h);
}

/* ---- reads and writes ---- */

static int check_key(const shmds_redis *h, const void *key, size_t klen)
{
    return h == NULL || key == NULL || klen == 0 ? -EINVAL : 0;
}

/* Copy a Redis reply into the caller's buffer: 0, -ENOENT (nil), -ENOBUFS,
 * -EPROTO (not a string). */
static int reply_out(const redisReply *rep, void *buf, size_t cap, size_t *vlen)
{
    if (rep->type == REDIS_REPLY_NIL)
        return -ENOENT;
    if (rep->type != REDIS_REPLY_STRING)
        return -EPROTO;
    if (vlen)
        *vlen = rep->len;
    if (rep->len > cap)
        return -ENOBUFS;
    if (rep->len > 0)
        memcpy(buf, rep->str, rep->len);
    return 0;
}

/* GET from Redis. */
static int redis_get(struct shmds_redis *h, const void *key, size_t klen, redisReply **out)
{
    const char *argv[] = {"GET", key};
    size_t lens[] = {3, klen};
    h->redis_gets++;
    return data_cmd(h, 2, argv, lens, out);
}

/* The miss path, holding the fill lease @p f (or NULL: no caching).
 * @p s0 and @p id are the state snapshot the decision was made on. */
static int fill(struct shmds_redis *h, const void *key, size_t klen, void *buf, size_t cap,
                size_t *vlen, shmds_fill *f, uint64_t s0, uint64_t id)
{
    struct nc_ctl *c = h->ctl;
    uint64_t *slot = slot_of(c, key, klen);
    uint64_t seen = ld(slot);
    redisReply *rep = NULL;
    int rc = f != NULL ? track(h, id) : 0;
    if (rc == -EPROTO) {
        /* Redis refused the redirect: the listener's connection is gone
         * and the epoch is about to change. Read without caching. */
        shmds_map_fill_abort(f);
        f = NULL;
    } else if (rc != 0) {
        shmds_map_fill_abort(f);
        return rc;
    }
    rc = redis_get(h, key, klen, &rep);
    if (rc != 0) {
        shmds_map_fill_abort(f);
        return rc;
    }
    rc = reply_out(rep, buf, cap, vlen);
    if (f != NULL && (rc == 0 || rc == -ENOENT || rc == -ENOBUFS) && ld(&c->state) == s0 &&
        ld(slot) == seen) {
        shmds_put_opts po = {.ttl_ms = h->ttl_ms, .user_flags = tag_of(s0)};
        const void *v = rep->str;
        size_t vl = rep->len;
        if (rep->type == REDIS_REPLY_NIL) {
            po.user_flags |= NC_NEG;
            v = "";
            vl = 0;
        }
        /* A full budget or the like only costs the caching. */
        if (shmds_map_fill_done(f, v, vl, &po, NULL) == 0 && ld(slot) != seen)
            shmds_map_del(h->map, key, klen);
    } else {
        shmds_map_fill_abort(f);
    }
    freeReplyObject(rep);
    return rc;
}

int shmds_redis_get(shmds_redis *h, const void *key, size_t klen, void *buf, size_t cap,
                    size_t *vlen, unsigned flags)
{
    int rc = check_key(h, key, klen);
    if (rc != 0 || (flags & ~(unsigned)SHMDS_REDIS_ALLOW_STALE) || (buf == NULL && cap > 0))
        return -EINVAL;
    shmds_map_entry_info info;
    size_t len = 0;
    uint64_t id;
    uint64_t s = state_snap(h->ctl, &id);
    rc = shmds_map_get_ex(h->map, key, klen, buf, cap, &len, SHMDS_GET_STALE, &info);
    bool up = s & 1;
    if ((rc == 0 || rc == -ENOBUFS) && up && !info.stale &&
        (info.user_flags & NC_EPOCH_MASK) == tag_of(s)) {
        h->hits++;
        if (vlen)
            *vlen = len;
        return info.user_flags & NC_NEG ? -ENOENT : rc;
    }
    if (rc != 0 && rc != -ENOENT && rc != -ENOBUFS)
        return rc;
    h->misses++;
    /* An entry not fresh: kept in @p buf for the stale fallback; removed
     * from the map (when a listener is up) so that the fetch below gets
     * the fill lease. */
    bool have_old = rc == 0 && !(info.user_flags & NC_NEG);
    size_t old_len = len;
    shmds_fill *f = NULL;
    if (up) {
        if (rc == 0 || rc == -ENOBUFS)
            shmds_map_del(h->map, key, klen);
        for (int tries = 0; tries < 3; tries++) {
            shmds_map_entry_info fi;
            rc = shmds_map_fetch(h->map, key, klen, have_old ? NULL : buf,
                                 have_old ? 0 : cap, &len, &fi, 0, h->fill_wait_ms, &f);
            if (rc == SHMDS_FILL || rc == -ETIMEDOUT)
                break;
            if (rc == 0 && ld(&h->ctl->state) == s &&
                (fi.user_flags & NC_EPOCH_MASK) == tag_of(s)) {
                /* Filled by another process while we waited. */
                if (fi.user_flags & NC_NEG)
                    return -ENOENT;
                if (have_old) /* the value was not copied: fetch again */
                    rc = shmds_map_get_ex(h->map, key, klen, buf, cap, &len, 0, NULL);
                if (rc == 0 || rc == -ENOBUFS) {
                    if (vlen)
                        *vlen = len;
                    return rc;
                }
                continue;
            }
            if (rc == 0) {
                /* A fill of another epoch (the listener changed meanwhile). */
                shmds_map_del(h->map, key, klen);
                continue;
            }
            if (rc != -ENOBUFS)
                return rc;
            if (vlen)
                *vlen = len;
            return rc;
        }
        if (rc != SHMDS_FILL)
            f = NULL; /* waited in vain or kept losing: ask Redis directly */
    }
    rc = fill(h, key, klen, buf, cap, vlen, f, s, id);
    if (rc == 0 || rc == -ENOENT || rc == -ENOBUFS || rc == -EPROTO || rc == -ENOMEM)
        return rc;
    /* Redis could not be reached. */
    if (have_old && (flags & SHMDS_REDIS_ALLOW_STALE)) {
        /* @p buf still holds the old value: fill() and the fetch write
         * into it only on success. */
        if (vlen)
            *vlen = old_len;
        h->stale++;
        return SHMDS_REDIS_STALE;
    }
    return rc;
}

/* Run a write command, then drop the host's entry so that neither this
 * process nor a fill racing with the write keeps the old value. */
static int write_cmd(struct shmds_redis *h, const void *key, size_t klen, int argc,
                     const char **argv, const size_t *lens)
{
    redisReply *rep;
    int rc = data_cmd(h, argc, argv, lens, &rep);
    if (rc != 0)
        return rc;
    freeReplyObject(rep);
    inc(slot_of(h->ctl, key, klen));
    rc = shmds_map_del(h->map, key, klen);
    return rc == -ENOENT || rc == SHMDS_RECOVERED ? 0 : rc;
}

int shmds_redis_set(shmds_redis *h, const void *key, size_t klen, const void *val,
                    size_t vlen, uint64_t ttl_ms)
{
    int rc = check_key(h, key, klen);
    if (rc != 0 || (val == NULL && vlen > 0) || ttl_ms > SHMDS_TTL_MAX_MS)
        return -EINVAL;
    char ms[24];
    snprintf(ms, sizeof ms, "%llu", (unsigned long long)ttl_ms);
    const char *argv[] = {"SET", key, vlen ? val : "", "PX", ms};
    size_t lens[] = {3, klen, vlen, 2, strlen(ms)};
    return write_cmd(h, key, klen, ttl_ms ? 5 : 3, argv, lens);
}

int shmds_redis_del(shmds_redis *h, const void *key, size_t klen)
{
    int rc = check_key(h, key, klen);
    if (rc != 0)
        return rc;
    const char *argv[] = {"DEL", key};
    size_t lens[] = {3, klen};
    return write_cmd(h, key, klen, 2, argv, lens);
}

int shmds_redis_wait_listener(shmds_redis *h, int timeout_ms)
{
    if (h == NULL || timeout_ms < -1)
        return -EINVAL;
    for (int waited = 0;; waited++) {
        if (ld(&h->ctl->state) & 1)
            return 0;
        if (timeout_ms >= 0 && waited >= timeout_ms)
            return -ETIMEDOUT;
        sleep_ms(1);
    }
}

int shmds_redis_stats_get(shmds_redis *h, shmds_redis_stats *out)
{
    if (h == NULL || out == NULL)
        return -EINVAL;
    struct nc_ctl *c = h->ctl;
    uint64_t s = ld(&c->state);
    *out = (shmds_redis_stats){
        .epoch = s >> 1,
        .listener_pid = ld(&c->listener_pid),
        .listener_up = (uint32_t)(s & 1),
        .is_listener = atomic_load(&h->listening) != 0,
        .invalidations = ld(&c->invalidations),
        .flushes = ld(&c->flushes),
        .takeovers = ld(&c->takeovers),
        .hits = h->hits,
        .misses = h->misses,
        .redis_gets = h->redis_gets,
        .stale = h->stale,
    };
    return 0;
}

shmds_map *shmds_redis_map(shmds_redis *h)
{
    return h ? h->map : NULL;
}
