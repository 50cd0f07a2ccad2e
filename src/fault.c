/*
 * Fault points (built with --enable-fault-injection only).
 *
 * Layer: the bottom (called from every layer, calls none).
 *
 * SHMDS_FAULT("name") calls shmds__fault("name"). The environment decides
 * what happens:
 *   SHMDS_FAULT=name        SIGKILL this process at the point called `name`
 *   SHMDS_FAULT_SKIP=N      ... but only on its (N+1)-th hit (default 0)
 *   SHMDS_FAULT_TRACE=path  append every point's name to `path` when hit
 * A real SIGKILL, not an exit: no atexit handler, no unlock, exactly what a
 * crash or the OOM killer leaves behind.
 */
#include "internal.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef SHMDS_FAULT_INJECTION

void shmds__fault(const char *point)
{
    const char *trace = getenv("SHMDS_FAULT_TRACE");
    if (trace != NULL) {
        int fd = open(trace, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
        if (fd >= 0) {
            char line[128];
            size_t n = strnlen(point, sizeof line - 2);
            memcpy(line, point, n);
            line[n] = '\n';
            (void)!write(fd, line, n + 1); /* one write: lines stay whole */
            close(fd);
        }
    }
    const char *target = getenv("SHMDS_FAULT");
    if (target == NULL || strcmp(target, point) != 0)
        return;
    static long hits; /* per process; a fork starts from the parent's count */
    const char *skip = getenv("SHMDS_FAULT_SKIP");
    if (hits++ < (skip != NULL ? atol(skip) : 0))
        return;
    raise(SIGKILL);
}

#endif
