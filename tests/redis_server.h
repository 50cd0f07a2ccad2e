/* A throwaway redis-server for the contrib/redis tests, benchmark and
 * example: 127.0.0.1 only, a free port, a temporary directory, no
 * persistence. The server dies with the process that started it
 * (PR_SET_PDEATHSIG), also when that process is killed, and is stopped by
 * an atexit handler otherwise. */
#ifndef SHMDS_REDIS_SERVER_H
#define SHMDS_REDIS_SERVER_H

#include <sys/types.h>

typedef struct rs_server {
    pid_t pid;     /* 0: not running */
    int port;
    char dir[64];  /* its working directory (kept across restarts) */
} rs_server;

/* The redis-server binary configure found, or NULL (tests then SKIP). */
const char *rs_binary(void);

/* A TCP port on 127.0.0.1 nothing listens on right now. */
int rs_free_port(void);

/* Start a server on s->port (0: a free one, stored) in s->dir (made if
 * empty) and wait until it answers PING (at most 10 s). 0 or -1. */
int rs_start(rs_server *s);

/* Stop it (SIGTERM, then SIGKILL after 5 s) and reap it; the directory stays. */
void rs_stop(rs_server *s);

/* Stop it and remove its directory. */
void rs_destroy(rs_server *s);

/* Run one command (printf-style, as hiredis) on a fresh connection and
 * return its integer reply, or the length of a string reply; -1 on error. */
long long rs_cmd(const rs_server *s, const char *fmt, ...);

/* The "calls=" figure of `INFO commandstats` for command @p cmd (0 if never
 * called), -1 on error. */
long long rs_calls(const rs_server *s, const char *cmd);

#endif
