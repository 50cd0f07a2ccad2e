/*
 * xfr_reader — copy a shared-memory queue to standard output.
 *
 * The reader half of the exercise (see xfr_writer.c). It may start before
 * the writer: it waits for the region and the queue to appear. It copies
 * every message to standard output, straight from the queue's ring
 * (shmds_queue_recv_ref, write(2), shmds_queue_release), until the queue
 * reports end of stream,
 * then tells the writer it is done (the writer unlinks the region).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <shmds.h>

#include "xfr.h"

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-n NAME] [-t SECONDS] [-v] > output\n"
            "  Copy what xfr_writer sends through the shmds region NAME (default %s)\n"
            "  to standard output.\n"
            "  -t SECONDS  give up when nothing arrives for that long, and wait at most\n"
            "              that long for the writer to start (default: %d s to start,\n"
            "              then without bound)\n"
            "  -v          report bytes, time and throughput on standard error\n",
            argv0, XFR_DEFAULT_NAME, XFR_START_WAIT_S);
}

static int write_all(int fd, const unsigned char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Open the region and the queues, waiting for the writer to make them. */
static int attach(const char *name, int wait_ms, shmds_region **r, shmds_queue **data,
                  shmds_queue **done)
{
    uint64_t deadline = xfr_now_ns() + (uint64_t)wait_ms * 1000000u;
    for (;;) {
        int rc = shmds_region_open(name, 0, r);
        if (rc == 0) {
            rc = shmds_queue_open(*r, XFR_QDATA, data);
            if (rc == 0 && (rc = shmds_queue_open(*r, XFR_QDONE, done)) == 0)
                return 0;
            if (rc == 0)
                shmds_queue_close(*data);
            shmds_region_close(*r);
        }
        if ((rc != -ENOENT && rc != -EAGAIN) || xfr_now_ns() >= deadline)
            return rc;
        struct timespec nap = {0, 5 * 1000000L};
        nanosleep(&nap, NULL);
    }
}

int main(int argc, char **argv)
{
    const char *name = XFR_DEFAULT_NAME;
    int timeout_ms = -1, verbose = 0, opt;
    while ((opt = getopt(argc, argv, "n:t:vh")) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 't':
            if (xfr_parse_seconds(optarg, &timeout_ms) != 0) {
                fprintf(stderr, "%s: bad time-out '%s'\n", argv[0], optarg);
                return 2;
            }
            break;
        case 'v': verbose = 1; break;
        case 'h': usage(argv[0]); return 0;
        default: usage(argv[0]); return 2;
        }
    }
    if (optind != argc) {
        usage(argv[0]);
        return 2;
    }
    shmds_region *r;
    shmds_queue *data, *done;
    int rc = attach(name, timeout_ms >= 0 ? timeout_ms : XFR_START_WAIT_S * 1000, &r, &data, &done);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot open %s: %s (%s)%s\n", argv[0], name, shmds_strerror(rc),
                shmds_errname(rc), rc == -ENOENT ? "; is xfr_writer running?" : "");
        return 1;
    }
    size_t len = 0, largest = 0;
    uint64_t t0 = 0, total = 0;
    int status = 1;
    const char *what = "receive";
    for (;;) {
        /* Zero-copy: each block is written out straight from the ring. */
        const void *block;
        if ((rc = shmds_queue_recv_ref(data, &block, &len, timeout_ms)) != 0)
            break;
        if (t0 == 0)
            t0 = xfr_now_ns();
        int wrc = write_all(STDOUT_FILENO, block, len);
        shmds_queue_release(data);
        if (wrc != 0) {
            fprintf(stderr, "%s: writing standard output: %s\n", argv[0], strerror(errno));
            rc = 0;
            break;
        }
        total += len;
        if (len > largest)
            largest = len;
    }
    if (rc == SHMDS_ECLOSED) {
        what = "tell the writer";
        rc = shmds_queue_send(done, "done", 4, timeout_ms);
        if (rc == 0)
            status = 0;
    }
    if (rc != 0 && rc != SHMDS_ECLOSED)
        fprintf(stderr, "%s: cannot %s: %s (%s)\n", argv[0], what, shmds_strerror(rc),
                shmds_errname(rc));
    if (status == 0 && verbose)
        xfr_report("xfr_reader", total, t0 ? xfr_now_ns() - t0 : 0, largest);
    shmds_queue_close(data);
    shmds_queue_close(done);
    shmds_region_close(r);
    return status;
}
