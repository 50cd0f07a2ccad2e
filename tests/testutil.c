/* Test helpers; see testutil.h. */
#include "testutil.h"
#include "internal.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const size_t tu_huge_sizes[TU_HUGE_SIZES] = {SIZE_MAX,         SIZE_MAX - 15, SIZE_MAX - 47,
                                             SIZE_MAX - 63,    SIZE_MAX / 2,  SIZE_MAX / 2 + 1,
                                             UINT32_MAX,       (size_t)UINT32_MAX + 1};

#define MAX_NAMES 256
static char names[MAX_NAMES][64];
static int n_names;
static pid_t names_owner;

static void unlink_names(void)
{
    if (getpid() != names_owner)
        return; /* a forked child must not remove its parent's regions */
    for (int i = 0; i < n_names; i++)
        shmds_region_unlink(names[i]);
}

const char *tu_name(const char *tag)
{
    static unsigned counter;
    if (names_owner != getpid()) {
        /* First name in this process (Check runs each test in a fork). */
        n_names = 0;
        names_owner = getpid();
        atexit(unlink_names);
    }
    ck_assert_int_lt(n_names, MAX_NAMES);
    char *s = names[n_names++];
    /* The pid alone can repeat across runs, and a run killed by a signal
     * leaves its objects behind: a per-process nonce keeps names fresh. */
    static unsigned nonce;
    static pid_t nonce_pid;
    if (nonce_pid != getpid()) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        nonce = (unsigned)(ts.tv_nsec ^ ts.tv_sec) & 0xffffff;
        nonce_pid = getpid();
    }
    snprintf(s, sizeof names[0], "/shmds-t-%ld-%06x-%s-%u", (long)getpid(), nonce, tag,
             counter++);
    return s;
}

shmds_region *tu_region(const char *tag, size_t size)
{
    return tu_region_max(tag, size, size);
}

shmds_region *tu_region_max(const char *tag, size_t size, size_t max_size)
{
    shmds_region *r = NULL;
    shmds_region_opts o = {.max_size = max_size};
    int rc = shmds_region_create(tu_name(tag), size, &o, &r);
    ck_assert_msg(rc == 0, "region_create: %s", shmds_errname(rc));
    return r;
}

pid_t tu_fork(int (*fn)(void *arg), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fn(arg));
    return pid;
}

int tu_coarse_past(uint64_t t_ns)
{
    struct timespec nap = {0, 1000000L};
    for (int napped = 0; shmds__coarse_now_ns() < t_ns; napped++) {
        if (napped >= 10000)
            return -1;
        nanosleep(&nap, NULL);
    }
    return 0;
}

int tu_wait(pid_t pid, int timeout_ms)
{
    struct timespec nap = {0, 1000000L};
    for (int waited = 0;; waited++) {
        int status;
        pid_t got = waitpid(pid, &status, WNOHANG);
        if (got == pid)
            return status;
        ck_assert_msg(got == 0, "waitpid: %s", strerror(errno));
        if (waited >= timeout_ms) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        nanosleep(&nap, NULL);
    }
}

int tu_kill(pid_t pid)
{
    int status;
    kill(pid, SIGKILL);
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

void tu_chan_open(tu_chan *c)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    c->rd = fds[0];
    c->wr = fds[1];
}

void tu_chan_close(tu_chan *c)
{
    close(c->rd);
    close(c->wr);
}

void tu_send(tu_chan *c, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(c->wr, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(99);
        p += n;
        len -= (size_t)n;
    }
}

void tu_send_and_stay(tu_chan *c, char tag)
{
    tu_send(c, &tag, 1);
    for (;;)
        pause();
}

int tu_recv(tu_chan *c, void *buf, size_t len)
{
    char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(c->rd, p + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 && got == 0)
            return 0;
        ck_assert_msg(n > 0, "short read on test channel");
        got += (size_t)n;
    }
    return 1;
}

void *tu_shared_alloc(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    return p;
}

const char *tu_builddir(void)
{
    const char *d = getenv("top_builddir");
    return d != NULL ? d : ".";
}

/* ---- the directory's layout ---- */

static struct shmds__root *dir_walk(void *base, const char *name, bool want_free)
{
    unsigned char *b = base;
    const struct shmds__hdr *h = base;
    uint64_t off = h->dir_heads[shmds__dir_bucket(name)];
    for (uint64_t k = 0; off != 0; k++) {
        struct shmds__dir_blk *blk = (struct shmds__dir_blk *)(void *)(b + off);
        for (uint32_t i = 0; i < shmds__dir_blk_cap(k); i++) {
            struct shmds__root *e = &blk->e[i];
            if (want_free ? e->type == 0
                          : e->type != 0 && strncmp(e->name, name, sizeof e->name) == 0)
                return e;
        }
        off = blk->next;
    }
    return NULL;
}

struct shmds__root *tu_dir_entry(void *base, const char *name)
{
    return dir_walk(base, name, false);
}

struct shmds__root *tu_dir_free_entry(void *base, const char *name)
{
    return dir_walk(base, name, true);
}

void tu_dir_collide(const char *name, unsigned i, char out[16])
{
    uint32_t want = shmds__dir_bucket(name);
    for (unsigned n = 0;; n++) {
        snprintf(out, 16, "c%u", n);
        if (shmds__dir_bucket(out) == want && strcmp(out, name) != 0 && i-- == 0)
            return;
    }
}

uint64_t tu_dir_blocks(shmds_region *r)
{
    unsigned char *b = shmds_region_base(r);
    const struct shmds__hdr *h = (const void *)b;
    uint64_t n = 0;
    for (uint32_t bk = 0; bk < SHMDS__DIR_BUCKETS; bk++)
        for (uint64_t off = h->dir_heads[bk]; off != 0;
             off = ((const struct shmds__dir_blk *)(const void *)(b + off))->next)
            n++;
    return n;
}

uint64_t tu_obj_blocks(shmds_region *r)
{
    shmds_alloc_stats st;
    ck_assert_int_eq(shmds_alloc_stats_get(r, &st), 0);
    return st.used_blocks - tu_dir_blocks(r);
}
