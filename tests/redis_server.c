/* See redis_server.h. */
#include "redis_server.h"

#include <config.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

/* The servers this process started and has not stopped yet (their pids:
 * the rs_server structs may be gone by exit time). */
#define MAX_SERVERS 16
static pid_t running[MAX_SERVERS];
static pid_t owner;

static void stop_pid(pid_t pid);

static void stop_all(void)
{
    if (getpid() != owner)
        return; /* a forked child does not own its parent's servers */
    for (int i = 0; i < MAX_SERVERS; i++)
        if (running[i] > 0)
            stop_pid(running[i]);
}

static void track_pid(pid_t old, pid_t now)
{
    if (owner != getpid()) {
        memset(running, 0, sizeof running);
        owner = getpid();
        atexit(stop_all);
    }
    for (int i = 0; i < MAX_SERVERS; i++)
        if (running[i] == old) {
            running[i] = now;
            return;
        }
}

const char *rs_binary(void)
{
    const char *b = REDIS_SERVER;
    return b[0] != '\0' && access(b, X_OK) == 0 ? b : NULL;
}

int rs_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void msleep(int ms)
{
    struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
    nanosleep(&ts, NULL);
}

static int answers(const rs_server *s)
{
    struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    int ok = 0;
    if (c != NULL && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

static int start_once(rs_server *s)
{
    char port[16];
    snprintf(port, sizeof port, "%d", s->port);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
        }
        execl(rs_binary(), "redis-server", "--port", port, "--bind", "127.0.0.1", "--dir",
              s->dir, "--save", "", "--appendonly", "no", "--daemonize", "no",
              "--logfile", "redis.log", "--protected-mode", "yes", (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    track_pid(0, pid);
    for (int i = 0; i < 2000; i++) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            track_pid(pid, 0);
            s->pid = 0;
            return -1; /* it exited: the port was taken meanwhile? */
        }
        if (answers(s))
            return 0;
        msleep(5);
    }
    rs_stop(s);
    return -1;
}

int rs_start(rs_server *s)
{
    if (rs_binary() == NULL)
        return -1;
    if (s->dir[0] == '\0') {
        snprintf(s->dir, sizeof s->dir, "/tmp/shmds-redis-XXXXXX");
        if (mkdtemp(s->dir) == NULL)
            return -1;
    }
    int fixed = s->port != 0;
    for (int tries = 0; tries < 5; tries++) {
        if (!fixed)
            s->port = rs_free_port();
        if (s->port > 0 && start_once(s) == 0)
            return 0;
    }
    return -1;
}

static void stop_pid(pid_t pid)
{
    kill(pid, SIGTERM);
    for (int i = 0; i < 2500; i++) {
        pid_t w = waitpid(pid, NULL, WNOHANG);
        if (w == pid || (w < 0 && errno == ECHILD)) {
            track_pid(pid, 0);
            return;
        }
        msleep(2);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    track_pid(pid, 0);
}

void rs_stop(rs_server *s)
{
    if (s->pid > 0)
        stop_pid(s->pid);
    s->pid = 0;
}

void rs_destroy(rs_server *s)
{
    rs_stop(s);
    if (s->dir[0] != '\0') {
        char path[128];
        snprintf(path, sizeof path, "%s/redis.log", s->dir);
        unlink(path);
        snprintf(path, sizeof path, "%s/dump.rdb", s->dir);
        unlink(path);
        rmdir(s->dir);
        s->dir[0] = '\0';
    }
}

static redisReply *vcmd(const rs_server *s, const char *fmt, va_list ap)
{
    struct timeval tv = {.tv_sec = 2, .tv_usec = 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", s->port, tv);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    redisReply *r = redisvCommand(c, fmt, ap);
    redisFree(c);
    return r;
}

long long rs_cmd(const rs_server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(s, fmt, ap);
    va_end(ap);
    long long v = -1;
    if (r != NULL && r->type == REDIS_REPLY_INTEGER)
        v = r->integer;
    else if (r != NULL && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS))
        v = (long long)r->len;
    if (r)
        freeReplyObject(r);
    return v;
}

static redisReply *reply_of(const rs_server *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(s, fmt, ap);
    va_end(ap);
    return r;
}

static redisReply *info_reply(const rs_server *s)
{
    return reply_of(s, "INFO commandstats");
}

static long long calls_of(const char *info, const char *cmd)
{
    char pat[64];
    snprintf(pat, sizeof pat, "cmdstat_%s:calls=", cmd);
    const char *p = strstr(info, pat);
    return p ? strtoll(p + strlen(pat), NULL, 10) : 0;
}

long long rs_calls(const rs_server *s, const char *cmd)
{
    redisReply *r = info_reply(s);
    long long v = -1;
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        v = calls_of(r->str, cmd);
    if (r)
        freeReplyObject(r);
    return v;
}
