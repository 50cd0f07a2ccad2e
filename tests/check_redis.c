/* contrib/redis: the host's near-cache against a real redis-server started
 * for each test (127.0.0.1, a free port, a temporary directory). Without a
 * redis-server the program exits 77 (SKIP). */
#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmds/redis.h>

#include "redis_server.h"
#include "testutil.h"

static void start(rs_server *s)
{
    memset(s, 0, sizeof *s);
    ck_assert_msg(rs_start(s) == 0, "redis-server did not start");
}

/* A region holding a near-cache "nc" (what one host has); its name in
 * *name (may be NULL). */
static shmds_region *host_named(const char **name)
{
    const char *n = tu_name("redis");
    shmds_region *r;
    ck_assert_int_eq(shmds_region_create(n, 4u << 20, NULL, &r), 0);
    if (name)
        *name = n;
    shmds_map_opts mo = {.capacity = 1024, .mem_limit = 1u << 20, .flags = SHMDS_MAP_EVICT};
    ck_assert_int_eq(shmds_redis_create(r, "nc", &mo), 0);
    ck_assert_int_eq(shmds_redis_create(r, "nc", &mo), -EEXIST);
    return r;
}

static shmds_region *host(void)
{
    return host_named(NULL);
}

/* The bound on each Redis call in the tests that are not about timeouts:
 * a guard against a hang, far above what a loaded machine needs. */
#define CALL_MS 30000

static shmds_redis *open_nc(shmds_region *r, int port, int timeout_ms)
{
    shmds_redis_opts o = {.port = port, .timeout_ms = timeout_ms};
    shmds_redis *h;
    int rc = shmds_redis_open(r, "nc", &o, &h);
    ck_assert_msg(rc == 0, "open: %s", shmds_errname(rc));
    return h;
}

static shmds_redis_stats stats(shmds_redis *h)
{
    shmds_redis_stats s;
    ck_assert_int_eq(shmds_redis_stats_get(h, &s), 0);
    return s;
}

/* get @p key and check it holds @p want. */
static void get_is(shmds_redis *h, const char *key, const char *want)
{
    char buf[64];
    size_t len = 0;
    int rc = shmds_redis_get(h, key, strlen(key), buf, sizeof buf, &len, 0);
    ck_assert_msg(rc == 0, "get %s: %s", key, shmds_errname(rc));
    ck_assert_msg(len == strlen(want) && memcmp(buf, want, len) == 0, "get %s: '%.*s', not '%s'",
                  key, (int)len, buf, want);
}

/* The waits below have no bound of their own: how long the listener takes
 * depends on the machine's load (a sanitizer build on a busy 2-CPU machine
 * can take seconds), and Check's per-test timeout is the guard against a
 * hang. Each poll sleeps so that the listener thread gets the CPU. */

/* Wait until the listener has applied @p n invalidation messages. */
static void wait_invalidations(shmds_redis *h, uint64_t n)
{
    while (stats(h).invalidations < n)
        usleep(1000);
}

/* Wait until the epoch is past @p e (a flush or a new listener). */
static void wait_epoch_past(shmds_redis *h, uint64_t e)
{
    while (stats(h).epoch <= e)
        usleep(1000);
}

/* Wait until this process's handle is the host's listener and it is up. */
static void wait_mine(shmds_redis *h)
{
    for (;;) {
        shmds_redis_stats s = stats(h);
        if (s.is_listener && s.listener_up && s.listener_pid == (uint64_t)getpid())
            return;
        usleep(1000);
    }
}

START_TEST(test_redis_hit_miss)
{
    rs_server srv;
    start(&srv);
    shmds_region *r = host();
    shmds_redis *h = open_nc(r, srv.port, CALL_MS);
    ck_assert_int_eq(shmds_redis_wait_listener(h, -1), 0);
    ck_assert_int_eq(rs_cmd(&srv, "SET k v1"), 2);
    shmds_redis *other;
    ck_assert_int_eq(shmds_redis_open(r, "none", NULL, &other), -ENOENT);
    ck_assert_int_eq(shmds_redis_create(r, "", NULL), -EINVAL);
    ck_assert_int_eq(shmds_redis_create(r, "a-name-longer-than-forty-bytes-is-refused", NULL),
                     -EINVAL);

    get_is(h, "k", "v1"); /* miss: from Redis */
    shmds_redis_stats s = stats(h);
    ck_assert_uint_eq(s.misses, 1);
    ck_assert_uint_eq(s.redis_gets, 1);
    get_is(h, "k", "v1"); /* hit: from the map */
    s = stats(h);
    ck_assert_uint_eq(s.hits, 1);
    ck_assert_uint_eq(s.redis_gets, 1);
    ck_assert_int_eq(rs_calls(&srv, "get"), 1);

    /* Absence is cached too. */
    char buf[8];
    size_t len;
    ck_assert_int_eq(shmds_redis_get(h, "none", 4, buf, sizeof buf, &len, 0), -ENOENT);
    ck_assert_int_eq(shmds_redis_get(h, "none", 4, buf, sizeof buf, &len, 0), -ENOENT);
    ck_assert_uint_eq(stats(h).redis_gets, 2);

    /* A value too long for the buffer: its length, nothing copied. */
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, 1, &len, 0), -ENOBUFS);
    ck_assert_uint_eq(len, 2);
    ck_assert_int_eq(shmds_redis_get(h, "k", 0, buf, sizeof buf, &len, 0), -EINVAL);
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, 8), -EINVAL);

    /* A write through the API: in Redis, and read back at once. */
    ck_assert_int_eq(shmds_redis_set(h, "k", 1, "v2", 2, 0), 0);
    get_is(h, "k", "v2");
    ck_assert_int_eq(shmds_redis_del(h, "k", 1), 0);
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, 0), -ENOENT);
    ck_assert_int_eq(rs_cmd(&srv, "EXISTS k"), 0);

    /* A key of another type: Redis's error, not a value. */
    ck_assert_int_eq(rs_cmd(&srv, "LPUSH l x"), 1);
    ck_assert_int_eq(shmds_redis_get(h, "l", 1, buf, sizeof buf, &len, 0), -EPROTO);

    shmds_redis_close(h);
    ck_assert_int_eq(shmds_region_close(r), 0);
    rs_destroy(&srv);
}
END_TEST

/* A write by a client outside the host reaches the host's map through the
 * listener: the old value stops being served. */
START_TEST(test_redis_invalidate_other_client)
{
    rs_server srv;
    start(&srv);
    shmds_region *r = host();
    shmds_redis *h = open_nc(r, srv.port, CALL_MS);
    ck_assert_int_eq(shmds_redis_wait_listener(h, -1), 0);
    ck_assert_int_eq(rs_cmd(&srv, "SET k v1"), 2);
    get_is(h, "k", "v1");
    get_is(h, "k", "v1");
    ck_assert_uint_eq(stats(h).hits, 1);

    uint64_t inv = stats(h).invalidations;
    ck_assert_int_eq(rs_cmd(&srv, "SET k v2"), 2);
    wait_invalidations(h, inv + 1);
    get_is(h, "k", "v2"); /* the old value is not served */
    get_is(h, "k", "v2"); /* and cached again */
    ck_assert_uint_eq(stats(h).hits, 2);
    ck_assert_int_eq(rs_calls(&srv, "get"), 2);

    /* A flush invalidates everything (a new epoch). */
    uint64_t e = stats(h).epoch;
    ck_assert_int_eq(rs_cmd(&srv, "FLUSHALL"), 2);
    wait_epoch_past(h, e);
    char buf[8];
    size_t len;
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, 0), -ENOENT);

    shmds_redis_close(h);
    ck_assert_int_eq(shmds_region_close(r), 0);
    rs_destroy(&srv);
}
END_TEST

/* Single flight across processes: while Redis is paused, six worker
 * processes ask for the same missing key; one GET reaches Redis. */
#define WORKERS 6
struct sf_arg {
    const char *rname;
    int port;
    tu_chan ready, go;
};

static int sf_worker(void *p)
{
    struct sf_arg *a = p;
    shmds_region *r;
    shmds_redis *h;
    shmds_redis_opts o = {.port = a->port, .timeout_ms = CALL_MS};
    if (shmds_region_open(a->rname, 0, &r) != 0 || shmds_redis_open(r, "nc", &o, &h) != 0 ||
        shmds_redis_wait_listener(h, CALL_MS) != 0) /* a child outlives no test */
        return 10;
    char c = 'r';
    tu_send(&a->ready, &c, 1);
    if (!tu_recv(&a->go, &c, 1))
        return 11;
    char buf[16];
    size_t len;
    int rc = shmds_redis_get(h, "hot", 3, buf, sizeof buf, &len, 0);
    int ok = rc == 0 && len == 5 && memcmp(buf, "value", 5) == 0;
    /* Stay until every worker has its value: a closing handle that held
     * the listener lease starts a new epoch, which a late get would see. */
    tu_send(&a->ready, &c, 1);
    if (!tu_recv(&a->go, &c, 1))
        return 13;
    shmds_redis_close(h);
    shmds_region_close(r);
    return ok ? 0 : 12;
}

START_TEST(test_redis_single_flight)
{
    rs_server srv;
    start(&srv);
    struct sf_arg a = {.port = srv.port};
    shmds_region *r = host_named(&a.rname);
    tu_chan_open(&a.ready);
    tu_chan_open(&a.go);
    ck_assert_int_eq(rs_cmd(&srv, "SET hot value"), 2);
    ck_assert_int_eq(rs_cmd(&srv, "CONFIG RESETSTAT"), 2);
    pid_t pids[WORKERS];
    for (int i = 0; i < WORKERS; i++)
        pids[i] = tu_fork(sf_worker, &a);
    char c;
    for (int i = 0; i < WORKERS; i++)
        ck_assert(tu_recv(&a.ready, &c, 1));
    /* Every command waits 500 ms: the workers' gets overlap for sure. */
    ck_assert_int_eq(rs_cmd(&srv, "CLIENT PAUSE 500"), 2);
    for (int i = 0; i < WORKERS; i++)
        tu_send(&a.go, "g", 1);
    for (int i = 0; i < WORKERS; i++)
        ck_assert(tu_recv(&a.ready, &c, 1));
    for (int i = 0; i < WORKERS; i++)
        tu_send(&a.go, "x", 1);
    for (int i = 0; i < WORKERS; i++) {
        int st = tu_wait(pids[i], 20000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: status %d", i, st);
    }
    ck_assert_int_eq(rs_calls(&srv, "get"), 1);
    tu_chan_close(&a.ready);
    tu_chan_close(&a.go);
    ck_assert_int_eq(shmds_region_close(r), 0);
    rs_destroy(&srv);
}
END_TEST

/* The listener's process is SIGKILLed: another process takes the lease
 * over, and what the host cached before is not served any more (the
 * invalidation of a write made meanwhile was lost). */
struct kl_arg {
    const char *rname;
    int port;
    tu_chan ready;
};

static int kl_listener(void *p)
{
    struct kl_arg *a = p;
    shmds_region *r;
    shmds_redis *h;
    shmds_redis_opts o = {.port = a->port, .timeout_ms = CALL_MS};
    pid_t parent = getppid();
    if (shmds_region_open(a->rname, 0, &r) != 0 || shmds_redis_open(r, "nc", &o, &h) != 0)
        return 10;
    shmds_redis_stats s;
    for (;;) {
        shmds_redis_stats_get(h, &s);
        if (s.is_listener && s.listener_up)
            break;
        if (getppid() != parent)
            return 11; /* the test gave up (Check's timeout) */
        usleep(1000);
    }
    tu_send_and_stay(&a->ready, 'l'); /* until SIGKILL */
}

START_TEST(test_redis_listener_killed)
{
    rs_server srv;
    start(&srv);
    struct kl_arg a = {.port = srv.port};
    shmds_region *r = host_named(&a.rname);
    tu_chan_open(&a.ready);
    pid_t child = tu_fork(kl_listener, &a);
    char c;
    ck_assert(tu_recv(&a.ready, &c, 1));
    shmds_redis *h = open_nc(r, srv.port, CALL_MS);
    shmds_redis_stats s = stats(h);
    ck_assert_uint_eq(s.listener_pid, (uint64_t)child);
    ck_assert(!s.is_listener);

    ck_assert_int_eq(rs_cmd(&srv, "SET k v1"), 2);
    get_is(h, "k", "v1");
    get_is(h, "k", "v1");
    ck_assert_uint_eq(stats(h).hits, 1);

    tu_kill(child);
    /* Written while the host may have no listener: this invalidation is
     * lost (Redis drops messages for a redirect target that is gone). */
    ck_assert_int_eq(rs_cmd(&srv, "SET k v2"), 2);
    wait_mine(h);
    ck_assert_uint_ge(stats(h).takeovers, 1);
    get_is(h, "k", "v2"); /* not v1: the epoch moved on */
    get_is(h, "k", "v2");
    /* The new listener works. */
    uint64_t inv = stats(h).invalidations;
    ck_assert_int_eq(rs_cmd(&srv, "SET k v3"), 2);
    wait_invalidations(h, inv + 1);
    get_is(h, "k", "v3");

    tu_chan_close(&a.ready);
    shmds_redis_close(h);
    ck_assert_int_eq(shmds_region_close(r), 0);
    rs_destroy(&srv);
}
END_TEST

/* Redis restarts (its data lost): while it is down, gets fail or, when
 * asked, return the value the host held, marked stale; once it is back
 * nothing cached before the restart is served. */
START_TEST(test_redis_restart)
{
    rs_server srv;
    start(&srv);
    shmds_region *r = host();
    shmds_redis *h = open_nc(r, srv.port, CALL_MS);
    ck_assert_int_eq(shmds_redis_wait_listener(h, -1), 0);
    ck_assert_int_eq(rs_cmd(&srv, "SET k v1"), 2);
    get_is(h, "k", "v1");
    get_is(h, "k", "v1");

    rs_stop(&srv);
    while (stats(h).listener_up)
        usleep(1000);
    char buf[16];
    size_t len = 0;
    int rc = shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, 0);
    ck_assert_msg(rc < 0, "get while Redis is down: %s", shmds_errname(rc));
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, SHMDS_REDIS_ALLOW_STALE),
                     SHMDS_REDIS_STALE);
    ck_assert(len == 2 && memcmp(buf, "v1", 2) == 0);
    ck_assert_uint_eq(stats(h).stale, 1);
    ck_assert_int_lt(shmds_redis_set(h, "k", 1, "x", 1, 0), 0);

    ck_assert_int_eq(rs_start(&srv), 0); /* same port, empty */
    ck_assert_int_eq(rs_cmd(&srv, "SET k v2"), 2);
    ck_assert_int_eq(shmds_redis_wait_listener(h, -1), 0);
    get_is(h, "k", "v2");
    get_is(h, "k", "v2");
    uint64_t inv = stats(h).invalidations;
    ck_assert_int_eq(rs_cmd(&srv, "SET k v3"), 2);
    wait_invalidations(h, inv + 1);
    get_is(h, "k", "v3");

    shmds_redis_close(h);
    ck_assert_int_eq(shmds_region_close(r), 0);
    rs_destroy(&srv);
}
END_TEST

/* Nothing listens, or something listens and never answers: errors within
 * the timeouts, no hang. */
START_TEST(test_redis_unreachable)
{
    shmds_region *r = host();
    int port = rs_free_port();
    ck_assert_int_gt(port, 0);
    shmds_redis *h = open_nc(r, port, 200);
    char buf[16];
    size_t len;
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, 0), -ECONNREFUSED);
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, SHMDS_REDIS_ALLOW_STALE),
                     -ECONNREFUSED); /* nothing held: no stale value either */
    ck_assert_int_eq(shmds_redis_set(h, "k", 1, "v", 1, 0), -ECONNREFUSED);
    ck_assert_int_eq(shmds_redis_wait_listener(h, 50), -ETIMEDOUT);
    shmds_redis_close(h);

    /* A socket that accepts connections (the kernel's backlog does) but
     * never answers. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 16), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    h = open_nc(r, ntohs(sa.sin_port), 200);
    /* The socket never answers: a call that did not apply its timeout
     * would never return (and Check's bound would report the hang). */
    ck_assert_int_eq(shmds_redis_get(h, "k", 1, buf, sizeof buf, &len, 0), -ETIMEDOUT);
    ck_assert_int_eq(shmds_redis_set(h, "k", 1, "v", 1, 0), -ETIMEDOUT);
    ck_assert_int_eq(stats(h).listener_up, 0);
    shmds_redis_close(h);
    close(fd);
    ck_assert_int_eq(shmds_region_close(r), 0);
}
END_TEST

/* The example: two hosts, one Redis; writes on one are seen on the other. */
START_TEST(test_redis_example_hosts)
{
    rs_server srv;
    start(&srv);
    char path[512], port[16];
    snprintf(path, sizeof path, "%s/contrib/redis/nearcache_hosts", tu_builddir());
    snprintf(port, sizeof port, "%d", srv.port);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0)
            dup2(null, 1);
        execl(path, "nearcache_hosts", port, (char *)NULL);
        _exit(127);
    }
    int st = tu_wait(pid, 30000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "nearcache_hosts: status %d", st);
    rs_destroy(&srv);
}
END_TEST

int main(void)
{
    if (rs_binary() == NULL) {
        printf("check_redis: no redis-server installed: SKIP\n");
        return 77;
    }
    Suite *s = suite_create("redis");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_redis_hit_miss);
    tcase_add_test(tc, test_redis_invalidate_other_client);
    tcase_add_test(tc, test_redis_unreachable);
    suite_add_tcase(s, tc);
    tc = tcase_create("multiprocess");
    tcase_add_test(tc, test_redis_single_flight);
    tcase_add_test(tc, test_redis_example_hosts);
    suite_add_tcase(s, tc);
    tc = tcase_create("crash");
    tcase_add_test(tc, test_redis_listener_killed);
    tcase_add_test(tc, test_redis_restart);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
