/* Fault-point sweep (issue 7). Needs a --enable-fault-injection build;
 * otherwise it exits 77 (skipped).
 *
 * The points are every SHMDS_FAULT("name") literal in the .c files of
 * $top_srcdir/src, and the one in the torture model (a worker killed after
 * shmds_realloc returned, before it stored the new offset).
 * For each point P and each of a few hit numbers N, a workload process
 * (the torture model's operations on every structure, one worker, a fixed
 * seed, acknowledging each op over a pipe after it returned) runs with
 * SHMDS_FAULT=P SHMDS_FAULT_SKIP=N, so it SIGKILLs itself at P's (N+1)-th
 * hit. Then:
 *   - crash during recovery: after every such crash, the crashed image is
 *     kept, and for every repair point R a checker process starts from that
 *     image with SHMDS_FAULT=R (killed inside the repair, if the repair
 *     reaches R); then
 *   - the check: this process takes every lock (repairs run), verifies the
 *     worker's part of the region against its acknowledged log (one
 *     in-flight op, all or nothing), runs shmds_region_check, and tears a
 *     copy down to check that the heap comes out empty.
 * Every child appends the points it reaches to a trace file
 * (SHMDS_FAULT_TRACE); the sweep prints points hit / total and fails if a
 * check fails. Points not reached by the workload are listed. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "model.h"
#include "../testutil.h"

#ifndef SHMDS_FAULT_INJECTION

int main(void)
{
    printf("fault_sweep: not a --enable-fault-injection build; skipped\n");
    return 77;
}

#else

#define MAX_POINTS 512
#define OPS 300              /* operations in one workload run */
#define REGION_SIZE (1u << 20)
#define SEED 20261122

static const unsigned skips[] = {0, 1, 3, 10, 40};

#define SCRATCH_LIST "tt-scratch-list"
#define SCRATCH_MAP "tt-scratch-map"
#define SCRATCH_QUEUE "tt-scratch-queue"
#define SCRATCH_SPSC "tt-scratch-spsc"
#define SCRATCH_ACK "tt-scratch-ack"
#define SCRATCH_TABLE "tt-scratch-table"
#define SCRATCH_TOPIC "tt-scratch-topic"

/* A crash inside a create or a destroy leaves no leak: the blocks stay
 * reachable from the name's pending directory entry, and the check's
 * shmds_region_check reclaims them. The one leak allowed: the blocks a
 * realloc or a TT_BLOCK op killed in flight may leave (tt_op_may_leak;
 * blocks only the dead process held): counted apart
 * instead of failing. Every other leak fails. */
static unsigned leaks_documented;
static unsigned leak_at_death;

static char *points[MAX_POINTS];
static unsigned npoints;
static bool hit[MAX_POINTS];
static char trace_path[256];
static char region_name[64];
static unsigned failures, crashes, nested_crashes, checks;

/* ---- the list of points ---- */

static void add_point(const char *p, size_t n)
{
    for (unsigned i = 0; i < npoints; i++)
        if (strlen(points[i]) == n && strncmp(points[i], p, n) == 0)
            return;
    if (npoints < MAX_POINTS)
        points[npoints++] = strndup(p, n);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void scan_file(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char line[1024];
    while (fgets(line, sizeof line, f) != NULL) {
        for (char *p = line; (p = strstr(p, "SHMDS_FAULT(\"")) != NULL;) {
            p += strlen("SHMDS_FAULT(\"");
            char *q = strchr(p, '"');
            if (q == NULL)
                break;
            add_point(p, (size_t)(q - p));
            p = q;
        }
    }
    fclose(f);
}

static void scan_points(const char *srcdir)
{
    char dirpath[4096];
    snprintf(dirpath, sizeof dirpath, "%s/src", srcdir);
    DIR *d = opendir(dirpath);
    if (d == NULL) {
        perror(dirpath);
        exit(2);
    }
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        /* fault.c documents the macro with a placeholder name. */
        if (n < 3 || strcmp(e->d_name + n - 2, ".c") != 0 || strcmp(e->d_name, "fault.c") == 0)
            continue;
        char path[8192];
        snprintf(path, sizeof path, "%s/%s", dirpath, e->d_name);
        scan_file(path);
    }
    closedir(d);
    char model[4096];
    snprintf(model, sizeof model, "%s/tests/torture/model.c", srcdir);
    scan_file(model);
    qsort(points, npoints, sizeof *points, cmp_str);
}

/* A point inside a repair path: a crash there is a crash during recovery. */
static bool is_repair_point(const char *p)
{
    return strstr(p, "repair") != NULL || strstr(p, "recover") != NULL ||
           strstr(p, "settle") != NULL || strstr(p, "rebuild") != NULL ||
           strstr(p, "reclaim") != NULL;
}

static void read_trace(void)
{
    FILE *f = fopen(trace_path, "r");
    if (f == NULL)
        return;
    char line[256];
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        for (unsigned i = 0; i < npoints; i++)
            if (strcmp(points[i], line) == 0)
                hit[i] = true;
    }
    fclose(f);
    unlink(trace_path);
}

/* ---- children ---- */

static void fault_env(const char *point, unsigned skip)
{
    char n[32];
    snprintf(n, sizeof n, "%u", skip);
    setenv("SHMDS_FAULT", point, 1);
    setenv("SHMDS_FAULT_SKIP", n, 1);
    setenv("SHMDS_FAULT_TRACE", trace_path, 1);
}

/* At-least-once leases taken back: one that ran out (a 1 ms lease), and
 * one whose holder, a child, died (the child traces its points but never
 * dies at one: the workload must be the process killed). */
static int scratch_leases(tt_world *w)
{
    shmds_queue_opts o = {.capacity_bytes = 256, .max_msg = 8, .flags = SHMDS_QUEUE_ACK,
                          .lease_ms = 1};
    shmds_queue *q;
    char buf[8];
    size_t len;
    uint64_t id, id2;
    if (shmds_queue_create_ex(w->r, SCRATCH_ACK, &o, &q) != 0 ||
        shmds_queue_send(q, "a", 1, 0) != 0 || shmds_queue_send(q, "b", 1, 0) != 0 ||
        shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0) != 0)
        return 1;
    /* Until the clock leases run out by is past the 1 ms lease (queue.h). */
    if (tu_coarse_past(shmds__now_ns() + 1000000u) != 0)
        return 6;
    if (shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id2, 0) != 0 || buf[0] != 'a' ||
        shmds_queue_ack(q, id) != -ESTALE || shmds_queue_ack(q, id2) != 0)
        return 2;
    pid_t pid = fork();
    if (pid == 0) {
        unsetenv("SHMDS_FAULT");
        _exit(shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0) == 0 ? 0 : 1);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 3;
    /* Nothing new: the dead child's lease is found and taken back. */
    if (shmds_queue_recv(q, buf, sizeof buf, &len, 0) != 0 || buf[0] != 'b')
        return 4;
    return shmds_queue_destroy(q) == 0 ? 0 : 5;
}

/* Publish a version of the scratch table: n pairs. */
static int table_publish(shmds_region *r, unsigned n)
{
    shmds_table_builder *b;
    int rc = shmds_table_build(r, SCRATCH_TABLE, n, &b);
    for (unsigned i = 0; rc == 0 && i < n; i++) {
        char k[16];
        int kl = snprintf(k, sizeof k, "k%u", i);
        rc = shmds_table_add(b, k, (size_t)kl, &n, sizeof n);
    }
    if (rc != 0) {
        shmds_table_abort(b);
        return rc;
    }
    return shmds_table_publish(b, NULL);
}

/* The table's paths: published twice (the second retires the first), a
 * builder killed while it fills its version (the next publish frees its
 * block), destroyed. */
static int scratch_table(tt_world *w)
{
    if (table_publish(w->r, 3) != 0 || table_publish(w->r, 5) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        setenv("SHMDS_FAULT", "table.publish.filled", 1);
        unsetenv("SHMDS_FAULT_SKIP");
        _exit(table_publish(w->r, 7) == 0 ? 0 : 1);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFSIGNALED(st))
        return 2;
    shmds_table *t;
    if (table_publish(w->r, 2) != 0 || shmds_table_open(w->r, SCRATCH_TABLE, &t) != 0)
        return 3;
    if (shmds_table_destroy(t) != 0)
        return 4;
    /* No reader holds the retired versions: free them now. */
    return shmds__guard_reclaim(w->r) >= 0 ? 0 : 5;
}

/* A SHMDS_QUEUE_BLOCK topic whose slowest subscriber, a child, died: a
 * publisher that needs its room frees its slot and goes on (the child
 * traces its points but never dies at one, as in scratch_leases); then a
 * dropping topic whose subscriber missed messages. */
static int scratch_topic(tt_world *w)
{
    shmds_queue_opts o = {.capacity_bytes = 64, .max_msg = 8,
                          .flags = SHMDS_QUEUE_BROADCAST | SHMDS_QUEUE_BLOCK};
    shmds_queue *q;
    shmds_sub *s;
    char buf[8];
    size_t len;
    uint64_t missed;
    if (shmds_queue_create_ex(w->r, SCRATCH_TOPIC, &o, &q) != 0)
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        unsetenv("SHMDS_FAULT");
        _exit(shmds_queue_subscribe(q, &s) == 0 ? 0 : 1);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        return 2;
    if (shmds_queue_subscribe(q, &s) != 0)
        return 3;
    /* 64 bytes hold four 1-byte messages: the fifth needs the dead
     * child's cursor gone (ours is read up each time). */
    for (int i = 0; i < 6; i++)
        if (shmds_queue_send(q, "t", 1, 0) != 0 ||
            shmds_sub_next(s, buf, sizeof buf, &len, &missed, 0) != 0 || missed != 0)
            return 4;
    shmds_sub_close(s);
    if (shmds_queue_destroy(q) != 0)
        return 5;
    /* Without BLOCK: six publications into room for four; a subscriber
     * reading only then is told it missed the first two. */
    o.flags = SHMDS_QUEUE_BROADCAST;
    if (shmds_queue_create_ex(w->r, SCRATCH_TOPIC, &o, &q) != 0 || shmds_queue_subscribe(q, &s) != 0)
        return 6;
    for (int i = 0; i < 6; i++)
        if (shmds_queue_send(q, "t", 1, 0) != 0)
            return 7;
    if (shmds_sub_next(s, buf, sizeof buf, &len, &missed, 0) != 0 || missed != 2)
        return 8;
    shmds_sub_close(s);
    return shmds_queue_destroy(q) == 0 ? 0 : 9;
}

/* The workload: a scratch region made, its heap laid out by a first
 * allocation, grown in place and freed again (the create and format
 * paths, and a realloc in place whatever the draws do; the sweep checks
 * it when the workload dies there), then OPS operations, each
 * acknowledged after it returned. */
static int workload(int wr)
{
    char tmp[80];
    snprintf(tmp, sizeof tmp, "%s-tmp", region_name);
    shmds_region *t = NULL;
    shmds_off_t b;
    if (shmds_region_create(tmp, SHMDS_REGION_MIN_SIZE, NULL, &t) != 0 ||
        shmds_alloc(t, 100, &b) != 0 || shmds_realloc(t, b, 200, &b) != 0 ||
        shmds_free(t, b) != 0)
        return 4;
    shmds_region_close(t);
    shmds_region_unlink(tmp);
    tt_world w;
    if (tt_world_open(&w, region_name, 1) != 0)
        return 2;
    /* Structures made, used and destroyed (the create, destroy and
     * shut-down paths, and the queue's SPSC mode). */
    shmds_list *l;
    if (shmds_list_create(w.r, SCRATCH_LIST, &l) != 0 || shmds_list_push_back(l, "a", 1) != 0 ||
        shmds_list_push_front(l, "b", 1) != 0 || shmds_list_destroy(l) != 0)
        return 4;
    shmds_map *mp;
    if (shmds_map_create(w.r, SCRATCH_MAP, NULL, &mp) != 0 ||
        shmds_map_put(mp, "k", 1, "v", 1, 0, 0) != 0 || shmds_map_destroy(mp) != 0)
        return 4;
    char buf[8];
    size_t len;
    shmds_queue *q;
    if (shmds_queue_create(w.r, SCRATCH_QUEUE, 64, 8, 0, &q) != 0 ||
        shmds_queue_send(q, "m", 1, 0) != 0 || shmds_queue_shutdown(q) != 0 ||
        shmds_queue_recv(q, buf, sizeof buf, &len, 0) != 0 || shmds_queue_destroy(q) != 0)
        return 4;
    void *zp;
    const void *zm;
    if (shmds_queue_create(w.r, SCRATCH_SPSC, 64, 8, SHMDS_QUEUE_SPSC, &q) != 0 ||
        shmds_queue_send(q, "s", 1, 0) != 0 || shmds_queue_recv(q, buf, sizeof buf, &len, 0) != 0 ||
        shmds_queue_reserve(q, 8, &zp, 0) != 0 || shmds_queue_commit(q, 1) != 0 ||
        shmds_queue_recv_ref(q, &zm, &len, 0) != 0 || shmds_queue_release(q) != 0 ||
        shmds_queue_destroy(q) != 0)
        return 4;
    if (scratch_leases(&w) != 0 || scratch_topic(&w) != 0 || scratch_table(&w) != 0)
        return 4;
    /* Two growths (every point of one, hit twice). */
    for (int i = 0; i < 2; i++)
        if (shmds_region_grow(w.r, shmds_region_size(w.r) + 65536) != 0)
            return 4;
    uint64_t r = SEED;
    for (uint64_t seq = 1; seq <= OPS; seq++) {
        tt_msg m = {.type = TT_MSG_INTENT, .worker = 0, .seq = seq};
        m.op = tt_draw(&r, &w, 0, (uint64_t)1 << 56 | seq);
        tt_prepare(&w, 0, &m.op);
        if (write(wr, &m, sizeof m) != (ssize_t)sizeof m)
            return 3;
        tt_perform(&w, 0, &m.op, &m);
        m.type = TT_MSG_DONE;
        if (write(wr, &m, sizeof m) != (ssize_t)sizeof m)
            return 3;
    }
    tt_world_close(&w);
    return 0;
}

static int wait_child(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return st;
}

static bool killed(int st)
{
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL;
}

/* ---- checks ---- */

static void fail(const char *point, unsigned skip, const char *what, int rc)
{
    failures++;
    fprintf(stderr, "fault_sweep: FAIL at %s (skip %u): %s: %s\n", point, skip, what,
            shmds_errname(rc));
}

/* Copy the region (and its reader table: without one nothing retired is
 * ever freed), destroy everything in the copy: the heap must be empty
 * (but for an op killed in flight, see leak_at_death). */
static int leak_check(tt_world *w)
{
    char name[80];
    snprintf(name, sizeof name, "%s-copy", region_name);
    if (tt_region_copy(w->r, region_name, name) != 0)
        return -EIO;
    tt_world copy;
    int rc = tt_world_open(&copy, name, 1);
    if (rc == 0)
        rc = tt_world_teardown(&copy);
    if (rc == 0 && (rc = shmds__guard_reclaim(copy.r)) > 0)
        rc = 0; /* retired blocks freed, the retire list handed back */
    shmds_alloc_stats s;
    if (rc == 0 && (rc = shmds_alloc_stats_get(copy.r, &s)) == 0 && s.used_blocks != 0) {
        if (s.used_blocks <= leak_at_death)
            leaks_documented++;
        else
            rc = -EADDRINUSE; /* leaked blocks */
    }
    tt_world_close(&copy);
    shmds_region_unlink(name);
    return rc;
}

/* Repair and verify, in this process (which has no fault set). */
static void check(tt_world *w, tt_state *model, tt_ledger *ledger, const tt_op *inflight,
                  const char *point, unsigned skip)
{
    checks++;
    int rc = tt_fresh_read(region_name);
    if (rc != 0) {
        fail(point, skip, "a fresh process's read before repairs", rc);
        return;
    }
    uint64_t rec[TT_STRUCTS] = {0};
    rc = tt_take_every_lock(w, rec);
    if (rc != 0) {
        fail(point, skip, "taking every lock", rc);
        return;
    }
    /* Scratch objects a crash left complete (a create that committed, a
     * destroy that did not): destroy them. Pending ones are invisible here;
     * shmds_region_check below reclaims them. */
    shmds_list *l;
    if ((rc = shmds_list_open(w->r, SCRATCH_LIST, &l)) == 0)
        rc = shmds_list_destroy(l);
    shmds_map *mp;
    if ((rc == 0 || rc == -ENOENT) && (rc = shmds_map_open(w->r, SCRATCH_MAP, &mp)) == 0)
        rc = shmds_map_destroy(mp);
    static const char *const qnames[] = {SCRATCH_QUEUE, SCRATCH_SPSC, SCRATCH_ACK,
                                         SCRATCH_TOPIC};
    for (unsigned i = 0; i < sizeof qnames / sizeof qnames[0]; i++) {
        shmds_queue *q;
        if ((rc == 0 || rc == -ENOENT) && (rc = shmds_queue_open(w->r, qnames[i], &q)) == 0)
            rc = shmds_queue_destroy(q);
    }
    shmds_table *tb;
    if ((rc == 0 || rc == -ENOENT) && (rc = shmds_table_open(w->r, SCRATCH_TABLE, &tb)) == 0)
        rc = shmds_table_destroy(tb);
    if (rc != 0 && rc != -ENOENT) {
        fail(point, skip, "destroying the scratch objects", rc);
        return;
    }
    unsigned lost = 0, phantom = 0, dropped = 0;
    rc = tt_verify(w, 0, model, inflight, &lost, &phantom, &dropped);
    if (rc != 0) {
        fprintf(stderr, "fault_sweep: %u acknowledged items lost, %u never written\n", lost,
                phantom);
        fail(point, skip, "state against the acknowledged log", rc);
        return;
    }
    if ((rc = shmds_region_check(w->r)) != 0) {
        fail(point, skip, "shmds_region_check", rc);
        return;
    }
    if ((rc = tt_ledger_settle(ledger, w)) != 0) {
        fprintf(stderr, "fault_sweep: queue: %" PRIu64 " lost, %" PRIu64 " phantom, %" PRIu64
                        " duplicate, %" PRIu64 " out of order (run totals)\n",
                ledger->lost, ledger->phantom, ledger->duplicate, ledger->fifo);
        fprintf(stderr, "fault_sweep: topics: %" PRIu64 " phantom, %" PRIu64
                        " out of order, %" PRIu64 " missed too few, %" PRIu64
                        " inconsistent (run totals)\n",
                ledger->t_phantom, ledger->t_order, ledger->t_uncounted, ledger->t_inconsistent);
        fail(point, skip, "queue: exactly once, FIFO; topics: order, missed counts", rc);
        return;
    }
    if ((rc = leak_check(w)) != 0)
        fail(point, skip, "leak check (teardown of a copy)", rc);
}

/* The workload died while its scratch region was being made or formatted:
 * a region whose magic is published must open, repair and check clean,
 * holding at most the one block whose allocation was in flight. */
static void check_scratch(const char *point, unsigned skip)
{
    char tmp[80];
    snprintf(tmp, sizeof tmp, "%s-tmp", region_name);
    int fd = shm_open(tmp, O_RDONLY, 0);
    if (fd < 0)
        return; /* not made yet, or already dropped */
    uint64_t magic = 0;
    (void)!pread(fd, &magic, sizeof magic, 0);
    close(fd);
    shmds_region *t = NULL;
    int rc = 0;
    if (magic != 0) { /* unpublished: open would rightly wait, then -EAGAIN */
        checks++;
        shmds_alloc_stats st;
        if ((rc = shmds_region_open(tmp, 0, &t)) == 0 && (rc = shmds__alloc_settle(t)) == 0 &&
            (rc = shmds_region_check(t)) == 0 && (rc = shmds_alloc_stats_get(t, &st)) == 0 &&
            st.used_blocks > 1)
            rc = -EADDRINUSE;
        if (t != NULL)
            shmds_region_close(t);
    }
    shmds_region_unlink(tmp);
    if (rc != 0)
        fail(point, skip, "scratch region after a crash in create or format", rc);
}

/* A checker child that may die inside a repair at `rpoint`; returns its
 * wait status. */
static int checker_child(tt_world *w, tt_state model, const tt_op *inflight, const char *rpoint)
{
    pid_t pid = fork();
    if (pid == 0) {
        fault_env(rpoint, 0);
        tt_world c;
        if (tt_world_open(&c, region_name, 1) != 0)
            _exit(2);
        unsigned lost = 0, phantom = 0, dropped = 0;
        uint64_t rec[TT_STRUCTS] = {0};
        int rc = tt_take_every_lock(&c, rec);
        /* A create or destroy the workload died in: finish it (the
         * reclaim's own points are repair points). */
        if (rc == 0)
            rc = shmds_region_reclaim(c.r);
        if (rc == 0)
            rc = tt_verify(&c, 0, &model, inflight, &lost, &phantom, &dropped);
        tt_world_close(&c);
        _exit(rc == 0 ? 0 : 1);
    }
    (void)w;
    return wait_child(pid);
}

/* One run: crash the workload at the (skip+1)-th hit of `point`. Returns
 * false when the workload finished without reaching it. */
static bool run_one(const char *point, unsigned skip)
{
    tt_world w;
    shmds_region_unlink(region_name);
    int rc = tt_world_create(&w, region_name, REGION_SIZE, 1);
    if (rc != 0) {
        fail(point, skip, "setting up", rc);
        return false;
    }
    int p[2];
    if (pipe(p) != 0)
        exit(2);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        fault_env(point, skip);
        _exit(workload(p[1]));
    }
    close(p[1]);
    tt_state model = {0};
    tt_ledger ledger = {0};
    tt_op pending;
    bool inflight = false;
    tt_msg m;
    ssize_t n;
    while ((n = read(p[0], &m, sizeof m)) == (ssize_t)sizeof m) {
        if (m.type == TT_MSG_INTENT) {
            inflight = true;
            pending = m.op;
            tt_ledger_intent(&ledger, 0, &m.op);
        } else {
            inflight = false;
            tt_ledger_done(&ledger, 0, &m);
            if (!tt_model_ack(&model, &m))
                fail(point, skip, "acknowledged result disagrees with the model", m.rc);
        }
    }
    tt_ledger_killed(&ledger, 0, inflight ? &pending : NULL);
    leak_at_death = inflight ? tt_op_may_leak(&pending) : 0;
    close(p[0]);
    int st = wait_child(pid);
    bool died = killed(st);
    if (!died && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
        fail(point, skip, "workload failed", WIFEXITED(st) ? -WEXITSTATUS(st) : 0);
    if (died) {
        crashes++;
        check_scratch(point, skip);
    }
    if (died) {
        /* Crash during recovery: from the same crashed image, a checker
         * killed at each repair point, then the check below repairs again. */
        size_t len = shmds_region_size(w.r);
        unsigned char *img = malloc(len);
        memcpy(img, shmds_region_base(w.r), len);
        for (unsigned i = 0; i < npoints; i++) {
            if (!is_repair_point(points[i]))
                continue;
            memcpy(shmds_region_base(w.r), img, len);
            int cst = checker_child(&w, model, inflight ? &pending : NULL, points[i]);
            if (killed(cst)) {
                nested_crashes++;
                tt_state m2 = model;
                check(&w, &m2, &ledger, inflight ? &pending : NULL, points[i], skip);
            } else if (!(WIFEXITED(cst) && WEXITSTATUS(cst) == 0)) {
                fail(points[i], skip, "checker after a crash at a point before it", 0);
            }
        }
        memcpy(shmds_region_base(w.r), img, len);
        free(img);
    }
    check(&w, &model, &ledger, inflight ? &pending : NULL, point, skip);
    tt_ledger_free(&ledger);
    tt_world_close(&w);
    shmds_region_unlink(region_name);
    read_trace();
    return died;
}

int main(int argc, char **argv)
{
    /* `fault_sweep POINT`: sweep that one point only (to reproduce). */
    const char *only = argc > 1 ? argv[1] : NULL;
    const char *srcdir = getenv("top_srcdir");
    scan_points(srcdir != NULL ? srcdir : ".");
    if (npoints == 0) {
        fprintf(stderr, "fault_sweep: no SHMDS_FAULT points found under %s/src\n", srcdir);
        return 1;
    }
    snprintf(region_name, sizeof region_name, "/shmds-sweep-%ld", (long)getpid());
    snprintf(trace_path, sizeof trace_path, "fault-sweep-%ld.trace", (long)getpid());
    unsetenv("SHMDS_FAULT");
    for (unsigned i = 0; i < npoints; i++) {
        if (only != NULL && strcmp(only, points[i]) != 0)
            continue;
        for (size_t s = 0; s < sizeof skips / sizeof skips[0]; s++)
            if (!run_one(points[i], skips[s]))
                break;
    }
    unsigned nhit = 0, nrep = 0, nrep_hit = 0;
    for (unsigned i = 0; i < npoints; i++) {
        nhit += hit[i];
        nrep += is_repair_point(points[i]);
        nrep_hit += hit[i] && is_repair_point(points[i]);
    }
    printf("fault_sweep: points hit %u / %u (repair points %u / %u); %u crashes, %u of them "
           "inside a repair; %u checks; %u documented leaks (realloc, block); %u failures\n",
           nhit, npoints, nrep_hit, nrep, crashes, nested_crashes, checks, leaks_documented,
           failures);
    for (unsigned i = 0; i < npoints; i++)
        if (!hit[i])
            printf("  not reached: %s\n", points[i]);
    return failures == 0 ? 0 : 1;
}

#endif
