/*
 * seqnum_get [-d MS] NAME [RUN-LENGTH] — reserve RUN-LENGTH sequence numbers
 * (default 1) and print the first.
 *
 * The update holds the lock for MS milliseconds (default 500) on purpose, so
 * that several copies started together can be seen waiting for each other.
 * Kill one with SIGKILL while it holds the lock: the next one is told the
 * owner died, repairs, and goes on.
 *
 * The update is written in two steps to show what a repair does: the new
 * value goes into `pending` first (the intent), then into `value`, then
 * `pending` is cleared. A holder killed in between leaves `pending` set, and
 * the repair rolls it forward: the numbers that holder reserved stay used, so
 * no number is ever handed out twice.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "seqnum.h"

static int repaired;

static int repair(void *arg)
{
    struct seqnum *s = arg;
    if (s->pending != 0) {
        s->value = s->pending; /* roll the dead holder's update forward */
        s->pending = 0;
    }
    repaired = 1;
    return 0;
}

static int fail(const char *prog, const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, shmds_strerror(rc), shmds_errname(rc));
    return 1;
}

int main(int argc, char **argv)
{
    long hold_ms = 500;
    int opt;
    while ((opt = getopt(argc, argv, "d:")) != -1) {
        if (opt != 'd' || (hold_ms = strtol(optarg, NULL, 10)) < 0)
            goto usage;
    }
    unsigned long long run = 1;
    if (optind + 1 == argc - 1) {
        char *end;
        errno = 0;
        run = strtoull(argv[optind + 1], &end, 10);
        if (errno != 0 || *end != '\0' || run == 0 || argv[optind + 1][0] == '-')
            goto usage;
    } else if (optind + 1 != argc) {
        goto usage;
    }
    const char *name = argv[optind];

    shmds_region *r;
    int rc = shmds_region_open(name, 0, &r);
    if (rc != 0)
        return fail(argv[0], name, rc);
    uint32_t type;
    shmds_off_t off;
    rc = shmds_root_get(r, SEQNUM_ROOT, &type, &off);
    if (rc == 0 && type != SEQNUM_TYPE)
        rc = SHMDS_ETYPE;
    if (rc == 0 && shmds_usable_size(r, off) < sizeof(struct seqnum))
        rc = SHMDS_ECORRUPT;
    if (rc != 0) {
        shmds_region_close(r);
        return fail(argv[0], rc == -ENOENT ? "no sequence number (run seqnum_init)" : "seqnum",
                    rc);
    }
    struct seqnum *s = shmds_ptr(r, off);

    printf("[%ld] waiting for the lock\n", (long)getpid());
    fflush(stdout);
    rc = shmds_mutex_lock(&s->lock, -1, repair, s);
    if (rc < 0) {
        shmds_region_close(r);
        return fail(argv[0], "lock", rc);
    }
    if (rc == SHMDS_RECOVERED)
        printf("[%ld] the previous holder died; repaired\n", (long)getpid());
    uint64_t first = s->value;
    /* The intent is written before the message, so that a process killed
     * once the message is out has reserved its numbers for sure. */
    s->pending = first + run; /* intent */
    printf("[%ld] holding the lock; updating slowly (%ld ms)\n", (long)getpid(), hold_ms);
    fflush(stdout);
    struct timespec ts = {hold_ms / 1000, (hold_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    s->value = first + run;
    s->pending = 0; /* done */
    shmds_mutex_unlock(&s->lock);
    printf("[%ld] got %llu (run of %llu)%s\n", (long)getpid(), (unsigned long long)first, run,
           repaired ? ", after a repair" : "");
    shmds_region_close(r);
    return 0;

usage:
    fprintf(stderr, "usage: %s [-d MS] NAME [RUN-LENGTH]\n"
                    "  Reserve RUN-LENGTH sequence numbers (default 1) from region NAME and\n"
                    "  print the first, holding the lock MS milliseconds (default 500).\n",
            argv[0]);
    return 2;
}
