/* Crash torture driver (issue 7): forks W workers doing random operations
 * on every structure of one region, SIGKILLs a random one after a random
 * delay, restarts it, and checks after every kill that nothing acknowledged
 * was lost (model.h explains the acknowledgement log and the per-worker
 * model).
 *
 * After each kill: read the victim's last records (its pipe until EOF);
 * take every lock (so repairs run, timed); check the victim's part of the
 * region against its model, allowing the one in-flight op all or nothing.
 * Every --check-every kills, and at the end, a checkpoint kills every
 * worker, checks all of them, runs shmds_region_check, and checks the heap
 * has no leak: a copy of the region in a fresh object is torn down
 * (every object destroyed, every slot freed) and must come out empty.
 *
 *   torture [--seed S] [--kills N] [--seconds S] [--workers W]
 *           [--check-every K] [--max-delay-us U] [--size BYTES]
 *
 * Prints the figures and exits 1 if anything was lost, violated or hung. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "model.h"

#define WATCHDOG_MS 6000 /* a worker silent this long is hung (lock bound: 2 s) */

typedef struct worker {
    pid_t pid;
    int rd;
    unsigned gen;
    tt_state model;
    bool inflight;
    tt_op pending;
    uint64_t last_ns;
    unsigned char buf[sizeof(tt_msg)];
    size_t have;
} worker;

static struct {
    uint64_t seed, kills_max, seconds, max_delay_us, size;
    unsigned workers, check_every;
} opt = {1, 200, 0, 3000, 8u << 20, 4, 25};

static struct {
    uint64_t kills, kills_locked, checkpoints, verified, acked, lost, phantom, violations,
        ack_mismatch, notrec, hangs, leaked_bytes, leaked_blocks, refused;
    uint64_t may_leak, realloc_dropped, design_blocks, design_bytes, map_grown;
    uint64_t recoveries[TT_STRUCTS], recoveries_by_peers;
    uint64_t *repair_ns;
    size_t repair_n, repair_cap;
} fig;

static const char *region_name;
static tt_world world;
static tt_ledger ledger;
static worker wk[TT_WORKERS_MAX];
static uint64_t rng;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void violation(const char *what, unsigned w, int rc)
{
    fig.violations++;
    fprintf(stderr, "torture: VIOLATION: %s (worker %u): %s\n", what, w, shmds_errname(rc));
}

/* ---- workers ---- */

static void send_all(int fd, const tt_msg *m)
{
    if (write(fd, m, sizeof *m) != (ssize_t)sizeof *m)
        _exit(3);
}

static void worker_main(unsigned me, unsigned gen, int wr)
{
    tt_world w;
    int rc = tt_world_open(&w, region_name, opt.workers);
    if (rc != 0) {
        fprintf(stderr, "torture: worker %u: open: %s\n", me, shmds_errname(rc));
        _exit(2);
    }
    uint64_t r = opt.seed ^ ((uint64_t)me << 56) ^ ((uint64_t)gen << 24);
    for (uint64_t seq = 1;; seq++) {
        uint64_t id = (uint64_t)(me + 1) << 56 | (uint64_t)gen << 32 | seq;
        tt_msg m = {.type = TT_MSG_INTENT, .worker = me, .seq = seq};
        m.op = tt_draw(&r, &w, me, id);
        tt_prepare(&w, me, &m.op);
        send_all(wr, &m);
        tt_perform(&w, me, &m.op, &m);
        m.type = TT_MSG_DONE;
        send_all(wr, &m);
    }
}

static void worker_start(unsigned i)
{
    int p[2];
    if (pipe(p) != 0) {
        perror("pipe");
        exit(2);
    }
    wk[i].gen++;
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        close(p[0]);
        for (unsigned j = 0; j < opt.workers; j++)
            if (j != i && wk[j].pid > 0)
                close(wk[j].rd);
        worker_main(i, wk[i].gen, p[1]);
    }
    close(p[1]);
    wk[i].pid = pid;
    wk[i].rd = p[0];
    wk[i].inflight = false;
    wk[i].have = 0;
    wk[i].last_ns = now_ns();
}

static void handle(worker *x, unsigned i, const tt_msg *m)
{
    x->last_ns = now_ns();
    if (m->type == TT_MSG_INTENT) {
        x->inflight = true;
        x->pending = m->op;
        tt_ledger_intent(&ledger, i, &m->op);
        return;
    }
    x->inflight = false;
    fig.acked++;
    tt_ledger_done(&ledger, i, m);
    if (m->rc == SHMDS_ENOTRECOVERABLE)
        fig.notrec++;
    if (m->rc == -ETIMEDOUT && !tt_op_may_time_out(&m->op))
        fig.hangs++;
    tt_state before = x->model;
    if (!tt_model_ack(&x->model, m)) {
        fig.ack_mismatch++;
        fprintf(stderr, "torture: worker %u op %" PRIu64 " kind %u arg %u: returned %s, model disagrees\n",
                i, m->seq, m->op.kind, m->op.arg, shmds_errname(m->rc));
        violation("acknowledged result", i, m->rc);
    } else if (memcmp(&before, &x->model, sizeof before) == 0 && m->rc != 0) {
        fig.refused += m->rc == -ENOMEM;
    }
}

/* Read what is there; at EOF (wait_eof), everything the worker wrote. */
static void drain(unsigned i, bool wait_eof)
{
    worker *x = &wk[i];
    for (;;) {
        ssize_t n = read(x->rd, x->buf + x->have, sizeof x->buf - x->have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return;
        if (n <= 0)
            return;
        x->have += (size_t)n;
        if (x->have == sizeof x->buf) {
            tt_msg m;
            memcpy(&m, x->buf, sizeof m);
            x->have = 0;
            handle(x, i, &m);
        }
        if (!wait_eof) {
            struct pollfd pf = {x->rd, POLLIN, 0};
            if (poll(&pf, 1, 0) <= 0 || !(pf.revents & POLLIN))
                return;
        }
    }
}

/* ---- repair and checks ---- */

static bool held_by(pid_t pid)
{
    shmds_mutex_info mi;
    for (int which = SHMDS_LOCK_DIRECTORY; which <= SHMDS_LOCK_ALLOCATOR; which++)
        if (shmds_region_lock_info(world.r, which, &mi) == 0 && mi.owner_pid == pid)
            return true;
    return false;
}

static void verify_worker(unsigned i)
{
    unsigned lost = 0, phantom = 0, dropped = 0;
    const tt_op *inflight = wk[i].inflight ? &wk[i].pending : NULL;
    tt_ledger_killed(&ledger, i, inflight);
    if (inflight != NULL)
        fig.may_leak += tt_op_may_leak(inflight);
    int rc = tt_verify(&world, i, &wk[i].model, inflight, &lost, &phantom, &dropped);
    fig.realloc_dropped += dropped;
    fig.verified++;
    fig.lost += lost;
    fig.phantom += phantom;
    if (rc == SHMDS_ENOTRECOVERABLE)
        fig.notrec++;
    if (rc == -ETIMEDOUT)
        fig.hangs++;
    if (rc != 0)
        violation("state after crash", i, rc);
    wk[i].inflight = false;
}

/* Kill worker i, collect its log, repair, verify. */
static void kill_and_check(unsigned i, bool timed)
{
    uint64_t epoch0 = world.r->hdr->epoch;
    kill(wk[i].pid, SIGKILL);
    int st;
    while (waitpid(wk[i].pid, &st, 0) < 0 && errno == EINTR)
        ;
    fig.kills++;
    if (!(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL)) {
        fprintf(stderr, "torture: worker %u ended by itself (status %#x)\n", i, st);
        fig.violations++;
    }
    bool locked = held_by(wk[i].pid);
    drain(i, true);
    close(wk[i].rd);
    wk[i].pid = 0;
    /* A process attaching now reads before anything was repaired (a kill
     * in the map's first growth used to crash it). */
    int rc = tt_fresh_read(region_name);
    if (rc != 0)
        violation("a fresh process's read before repairs", i, rc);
    uint64_t t0 = now_ns(), by_me = 0, rec[TT_STRUCTS] = {0};
    rc = tt_take_every_lock(&world, rec);
    uint64_t dt = now_ns() - t0;
    for (int s = 0; s < TT_STRUCTS; s++) {
        fig.recoveries[s] += rec[s];
        by_me += rec[s];
    }
    /* A worker blocked on the dead one's lock may have repaired it first. */
    fig.recoveries_by_peers += world.r->hdr->epoch - epoch0 - by_me;
    if (rc == -ETIMEDOUT)
        fig.hangs++;
    else if (rc == SHMDS_ENOTRECOVERABLE)
        fig.notrec++;
    if (rc != 0)
        violation("taking every lock", i, rc);
    locked = locked || world.r->hdr->epoch != epoch0;
    if (locked) {
        fig.kills_locked++;
        if (timed) {
            if (fig.repair_n == fig.repair_cap) {
                fig.repair_cap = fig.repair_cap ? 2 * fig.repair_cap : 1024;
                fig.repair_ns = realloc(fig.repair_ns, fig.repair_cap * sizeof *fig.repair_ns);
            }
            fig.repair_ns[fig.repair_n++] = dt;
        }
    }
    verify_worker(i);
}

/* Copy the region into a fresh object, destroy everything in the copy, and
 * report what stays allocated. */
static void leak_check(void)
{
    char name[64];
    snprintf(name, sizeof name, "/shmds-torture-%ld-copy", (long)getpid());
    if (tt_region_copy(world.r, region_name, name) != 0) {
        perror("torture: region copy");
        exit(2);
    }
    tt_world copy;
    int rc = tt_world_open(&copy, name, opt.workers);
    if (rc == 0)
        rc = tt_world_teardown(&copy);
    /* Retired blocks no reader holds are freed and the retire list handed
     * back (what an explicit reclamation does on an idle region). */
    if (rc == 0 && (rc = shmds__guard_reclaim(copy.r)) > 0)
        rc = 0;
    shmds_alloc_stats s;
    if (rc == 0)
        rc = shmds_alloc_stats_get(copy.r, &s);
    if (rc == 0)
        rc = shmds_region_check(copy.r);
    if (rc != 0) {
        violation("tearing a copy down", 0, rc);
    } else if (s.used_blocks <= fig.may_leak) {
        /* A realloc killed in flight may leak its new block (see tt_verify
         * and shmds/alloc.h), a TT_BLOCK run the blocks it held: by design,
         * at most tt_op_may_leak blocks per such kill. */
        fig.design_blocks = s.used_blocks;
        fig.design_bytes = s.used_bytes;
    } else {
        fig.leaked_blocks += s.used_blocks;
        fig.leaked_bytes += s.used_bytes;
        fprintf(stderr, "torture: LEAK: %" PRIu64 " blocks, %" PRIu64 " bytes\n", s.used_blocks,
                s.used_bytes);
    }
    tt_world_close(&copy);
    shmds_region_unlink(name);
}

static void checkpoint(bool restart)
{
    fig.checkpoints++;
    for (unsigned i = 0; i < opt.workers; i++)
        if (wk[i].pid > 0)
            kill_and_check(i, false);
    int rc = shmds_region_check(world.r);
    if (rc != 0)
        violation("shmds_region_check", 0, rc);
    if ((rc = tt_ledger_settle(&ledger, &world)) != 0)
        violation("queue: exactly once, FIFO", 0, rc);
    tt_ledger_reset(&ledger);
    /* The map holds exactly the keys of every worker's model. */
    uint64_t want = 0, have = 0;
    for (unsigned i = 0; i < opt.workers; i++)
        want += (uint64_t)__builtin_popcountll(wk[i].model.map_has);
    shmds_map_stats ms;
    if (shmds_map_count(world.map, &have) != 0 || have != want)
        violation("map entry count", 0, SHMDS_ECORRUPT);
    if (shmds_map_stats_get(world.map, &ms) == 0 && ms.buckets > 16)
        fig.map_grown++;
    leak_check();
    if (restart) {
        /* Empty the map again, so that the next stretch grows it again. */
        if ((rc = tt_world_map_reset(&world)) != 0)
            violation("re-creating the map", 0, rc);
        for (unsigned i = 0; i < opt.workers; i++) {
            wk[i].model.map_has = 0;
            memset(wk[i].model.map_val, 0, sizeof wk[i].model.map_val);
        }
    }
    if (restart)
        for (unsigned i = 0; i < opt.workers; i++)
            worker_start(i);
}

/* ---- the run ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(double p)
{
    if (fig.repair_n == 0)
        return 0;
    size_t k = (size_t)(p * (double)(fig.repair_n - 1) + 0.5);
    return (double)fig.repair_ns[k] / 1000.0;
}

static void report(double secs)
{
    if (fig.repair_n > 0) /* no kill met a held lock: repair_ns is still NULL */
        qsort(fig.repair_ns, fig.repair_n, sizeof *fig.repair_ns, cmp_u64);
    printf("shmds crash torture: seed %" PRIu64 ", %u workers, %.1f s\n", opt.seed, opt.workers,
           secs);
    printf("  kills delivered                 %" PRIu64 "\n", fig.kills);
    printf("  kills while a lock was held     %" PRIu64 "\n", fig.kills_locked);
    for (int s = 0; s < TT_STRUCTS; s++)
        printf("  recoveries: %-19s %" PRIu64 "\n", tt_struct_name[s], fig.recoveries[s]);
    printf("  recoveries by a peer worker     %" PRIu64 "\n", fig.recoveries_by_peers);
    printf("  checkpoints (all workers)       %" PRIu64 "\n", fig.checkpoints);
    printf("  acknowledged operations checked %" PRIu64 "\n", fig.acked);
    printf("  per-worker state checks         %" PRIu64 "\n", fig.verified);
    printf("  acknowledged items lost         %" PRIu64 "\n", fig.lost);
    printf("  items never written (phantom)   %" PRIu64 "\n", fig.phantom);
    printf("  queue: sent / received / left   %" PRIu64 " / %" PRIu64 " / %" PRIu64 "\n",
           ledger.sent, ledger.received, ledger.drained);
    printf("  queue: sent messages lost       %" PRIu64 "\n", ledger.lost);
    printf("  queue: phantom / duplicate      %" PRIu64 " / %" PRIu64 "\n", ledger.phantom,
           ledger.duplicate);
    printf("  queue: FIFO violations          %" PRIu64 "\n", ledger.fifo);
    printf("  queue: taken by a killed recv   %" PRIu64 "\n", ledger.ambiguous_used);
    printf("  queue: leased / acked           %" PRIu64 " / %" PRIu64 "\n", ledger.leased,
           ledger.acked);
    printf("  queue: delivered again (orphan) %" PRIu64 "\n", ledger.redelivered);
    printf("  queue: acknowledged twice       %" PRIu64 "\n", ledger.double_acked);
    printf("  topics: published / received    %" PRIu64 " / %" PRIu64 "\n", ledger.t_published,
           ledger.t_received);
    printf("  topics: missed / subscriptions  %" PRIu64 " / %" PRIu64 "\n", ledger.t_missed,
           ledger.t_subs);
    printf("  topics: phantom / out of order  %" PRIu64 " / %" PRIu64 "\n", ledger.t_phantom,
           ledger.t_order);
    printf("  topics: missed miscounted       %" PRIu64 " (too few) / %" PRIu64
           " (inconsistent)\n",
           ledger.t_uncounted, ledger.t_inconsistent);
    printf("  map grown past 16 buckets       %" PRIu64 " of %" PRIu64 " checkpoints\n",
           fig.map_grown, fig.checkpoints);
    printf("  acknowledged results wrong      %" PRIu64 "\n", fig.ack_mismatch);
    printf("  invariant violations            %" PRIu64 "\n", fig.violations);
    printf("  SHMDS_ENOTRECOVERABLE           %" PRIu64 "\n", fig.notrec);
    printf("  hangs (watchdog / -ETIMEDOUT)   %" PRIu64 "\n", fig.hangs);
    printf("  leaked blocks / bytes           %" PRIu64 " / %" PRIu64 "\n", fig.leaked_blocks,
           fig.leaked_bytes);
    printf("  blocks held by killed ops       %" PRIu64 " (realloc offset lost: %" PRIu64 ")\n",
           fig.may_leak, fig.realloc_dropped);
    printf("  leaked by design                %" PRIu64 " blocks / %" PRIu64 " bytes\n",
           fig.design_blocks, fig.design_bytes);
    printf("  writes refused (-ENOMEM)        %" PRIu64 "\n", fig.refused);
    printf("  repair time p50/p99/max (us)    %.1f / %.1f / %.1f  (%zu repairs)\n", pct_us(0.5),
           pct_us(0.99), pct_us(1.0), fig.repair_n);
}

static void usage(void)
{
    fprintf(stderr, "usage: torture [--seed S] [--kills N] [--seconds S] [--workers W]\n"
                    "               [--check-every K] [--max-delay-us U] [--size BYTES]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            usage();
        uint64_t v = strtoull(argv[i + 1], NULL, 0);
        if (strcmp(argv[i], "--seed") == 0) opt.seed = v;
        else if (strcmp(argv[i], "--kills") == 0) opt.kills_max = v;
        else if (strcmp(argv[i], "--seconds") == 0) opt.seconds = v;
        else if (strcmp(argv[i], "--workers") == 0) opt.workers = (unsigned)v;
        else if (strcmp(argv[i], "--check-every") == 0) opt.check_every = (unsigned)v;
        else if (strcmp(argv[i], "--max-delay-us") == 0) opt.max_delay_us = v;
        else if (strcmp(argv[i], "--size") == 0) opt.size = v;
        else usage();
        i++;
    }
    if (opt.workers == 0 || opt.workers > TT_WORKERS_MAX || opt.check_every == 0)
        usage();
    signal(SIGPIPE, SIG_IGN);
    static char name[64];
    snprintf(name, sizeof name, "/shmds-torture-%ld", (long)getpid());
    region_name = name;
    int rc = tt_world_create(&world, name, opt.size, opt.workers);
    if (rc != 0) {
        fprintf(stderr, "torture: setting up: %s\n", shmds_errname(rc));
        shmds_region_unlink(name);
        return 2;
    }
    rng = opt.seed;
    for (unsigned i = 0; i < opt.workers; i++)
        worker_start(i);
    uint64_t t_start = now_ns();
    uint64_t since_cp = 0;
    while (fig.kills < opt.kills_max &&
           (opt.seconds == 0 || now_ns() - t_start < opt.seconds * 1000000000u)) {
        /* A random victim after a random delay (often short: many kills
         * land soon after a restart, in set-up as well as in steady work). */
        unsigned victim = (unsigned)(tt_rand(&rng) % opt.workers);
        uint64_t delay = tt_rand(&rng) % (opt.max_delay_us + 1);
        uint64_t until = now_ns() + delay * 1000u;
        for (;;) {
            uint64_t now = now_ns();
            struct pollfd pf[TT_WORKERS_MAX];
            for (unsigned i = 0; i < opt.workers; i++) {
                pf[i] = (struct pollfd){wk[i].rd, POLLIN, 0};
                if (now - wk[i].last_ns > (uint64_t)WATCHDOG_MS * 1000000u) {
                    fprintf(stderr, "torture: worker %u silent for %d ms: hung\n", i,
                            WATCHDOG_MS);
                    fig.hangs++;
                    kill_and_check(i, false);
                    worker_start(i);
                }
            }
            if (now >= until)
                break;
            int wait_ms = (int)((until - now) / 1000000u);
            if (poll(pf, opt.workers, wait_ms) > 0)
                for (unsigned i = 0; i < opt.workers; i++)
                    if (pf[i].revents & (POLLIN | POLLHUP))
                        drain(i, false);
        }
        kill_and_check(victim, true);
        worker_start(victim);
        if (++since_cp >= opt.check_every) {
            since_cp = 0;
            checkpoint(true);
        }
    }
    checkpoint(false);
    double secs = (double)(now_ns() - t_start) / 1e9;
    rc = tt_world_teardown(&world);
    if (rc != 0)
        violation("teardown", 0, rc);
    report(secs);
    tt_world_close(&world);
    shmds_region_unlink(name);
    bool bad = fig.lost || fig.phantom || fig.violations || fig.notrec || fig.hangs ||
               fig.leaked_blocks || fig.leaked_bytes || ledger.lost || ledger.phantom ||
               ledger.duplicate || ledger.fifo;
    tt_ledger_free(&ledger);
    if (bad)
        printf("torture: FAILED\n");
    return bad ? 1 : 0;
}
