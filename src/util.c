/* Small helpers shared by the modules: clocks, deadlines, naps, the
 * liveness probes and hashing. Layer: the bottom (calls nothing above). */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

uint64_t shmds__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t shmds__unix_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

struct timespec shmds__deadline(int ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

int shmds__ms_left(uint64_t deadline_ns)
{
    uint64_t now = shmds__now_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t ms = (deadline_ns - now + 999999u) / 1000000u;
    return ms > INT32_MAX ? INT32_MAX : (int)ms;
}

void shmds__nap_1ms(void)
{
    struct timespec ts = {0, 1000000L};
    nanosleep(&ts, NULL);
}

int shmds__wait_nap(struct shmds__wait *w, uint32_t bound_ms)
{
    if (bound_ms == 0)
        return -ETIMEDOUT; /* never wait: the spin was all (region.h) */
    uint64_t now = shmds__now_ns();
    if (w->deadline_ns == 0)
        w->deadline_ns = now + (uint64_t)bound_ms * 1000000u;
    else if (now >= w->deadline_ns)
        return -ETIMEDOUT;
    shmds__nap_1ms();
    return 0;
}

bool shmds__proc_gone(uint32_t pid)
{
    return pid != 0 && pid <= INT32_MAX && kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

int shmds__buf_put(struct shmds__buf *b, const void *data, size_t len)
{
    if (len > SIZE_MAX - b->len)
        return -ENOMEM;
    if (b->cap - b->len < len) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc - b->len < len) {
            if (nc > SIZE_MAX / 2)
                return -ENOMEM;
            nc *= 2;
        }
        unsigned char *np = realloc(b->p, nc);
        if (np == NULL)
            return -ENOMEM;
        b->p = np;
        b->cap = nc;
    }
    if (len > 0)
        memcpy(b->p + b->len, data, len);
    b->len += len;
    return 0;
}

/* /proc/PID/stat: "pid (comm) S ppid ... starttime(22) ...". The command
 * name may hold spaces and parentheses, so fields are counted from the
 * last ')'. Returns false when the file cannot be read or parsed. */
static bool proc_stat(uint32_t pid, char *state, uint64_t *start)
{
    char path[32], buf[512];
    snprintf(path, sizeof path, "/proc/%u/stat", (unsigned)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (p == NULL || p[1] != ' ' || p[2] == '\0')
        return false;
    *state = p[2];
    p += 3; /* now at field 4 (ppid) */
    for (int field = 4; field < 22; field++) {
        p = strchr(p, ' ');
        if (p == NULL)
            return false;
        p++;
    }
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, 10);
    if (end == p || errno != 0)
        return false;
    *start = v;
    return true;
}

uint64_t shmds__proc_start(uint32_t pid)
{
    char state;
    uint64_t start;
    return proc_stat(pid, &state, &start) ? start : 0;
}

uint64_t shmds__self_start(void)
{
    static uint32_t pid;
    static uint64_t start;
    uint32_t me = shmds__self_pid();
    if (__atomic_load_n(&pid, __ATOMIC_ACQUIRE) != me) {
        __atomic_store_n(&start, shmds__proc_start(me), __ATOMIC_RELAXED);
        __atomic_store_n(&pid, me, __ATOMIC_RELEASE);
    }
    return __atomic_load_n(&start, __ATOMIC_RELAXED);
}

bool shmds__proc_alive(uint32_t pid, uint64_t start)
{
    if (pid == 0 || pid > INT32_MAX || shmds__proc_gone(pid))
        return false;
    char state;
    uint64_t now_start;
    if (!proc_stat(pid, &state, &now_start))
        return true; /* no /proc: kill() is all there is to go on */
    if (state == 'Z' || state == 'X')
        return false;
    return start == 0 || now_start == start;
}

uint64_t shmds__random_seed(void)
{
    uint64_t seed;
    if (getrandom(&seed, sizeof seed, GRND_NONBLOCK) != (ssize_t)sizeof seed)
        seed = shmds__mix64(shmds__now_ns() ^ ((uint64_t)getpid() << 32));
    return seed;
}
