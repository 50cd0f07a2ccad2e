/*
 * xfr_writer — copy standard input into a shared-memory queue.
 *
 * The writer half of the classic POSIX shared-memory exercise, done with a
 * shmds queue: it creates the region and a stream queue in it, reads its
 * standard input in blocks straight into the queue's ring (zero-copy:
 * shmds_queue_reserve, read(2) into the room, shmds_queue_commit), shuts
 * the queue down at end of file (so the
 * reader sees end of stream after the last block) and waits for the
 * reader's "done" message on a second, small queue before it unlinks the
 * region. Run it beside xfr_reader:
 *
 *     xfr_writer < in & xfr_reader > out; wait; cmp in out
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
            "usage: %s [-n NAME] [-b BLOCK] [-c CAPACITY] [-t SECONDS] [-v] < input\n"
            "  Copy standard input through the shmds region NAME (default %s) to\n"
            "  xfr_reader, which must use the same NAME.\n"
            "  -b BLOCK     bytes per message (default %s; k and m suffixes)\n"
            "  -c CAPACITY  bytes of queue ring (default %s)\n"
            "  -t SECONDS   give up when the reader does not keep up for that long\n"
            "               (default: wait without bound)\n"
            "  -v           report bytes, time and throughput on standard error\n",
            argv0, XFR_DEFAULT_NAME, XFR_DEFAULT_BLOCK_TEXT, XFR_DEFAULT_CAPACITY_TEXT);
}

/* Read up to len bytes, retrying short reads: a block is full unless the
 * input ended. Returns bytes read, or -1 on a read error. */
static ssize_t read_block(int fd, unsigned char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int main(int argc, char **argv)
{
    const char *name = XFR_DEFAULT_NAME;
    size_t block = XFR_DEFAULT_BLOCK, capacity = XFR_DEFAULT_CAPACITY;
    int timeout_ms = -1, verbose = 0, opt;
    while ((opt = getopt(argc, argv, "n:b:c:t:vh")) != -1) {
        switch (opt) {
        case 'n': name = optarg; break;
        case 'b':
            if (xfr_parse_size(optarg, &block) != 0 || block == 0) {
                fprintf(stderr, "%s: bad block size '%s'\n", argv[0], optarg);
                return 2;
            }
            break;
        case 'c':
            if (xfr_parse_size(optarg, &capacity) != 0) {
                fprintf(stderr, "%s: bad capacity '%s'\n", argv[0], optarg);
                return 2;
            }
            break;
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
    if (capacity < shmds_queue_bytes_for(2, block)) {
        fprintf(stderr, "%s: capacity %zu too small for blocks of %zu bytes (need %zu)\n",
                argv[0], capacity, block, shmds_queue_bytes_for(2, block));
        return 2;
    }

    shmds_region *r;
    int rc = shmds_region_create(name, capacity + XFR_REGION_SLACK, NULL, &r);
    if (rc != 0) {
        fprintf(stderr, "%s: cannot create region %s: %s (%s)%s\n", argv[0], name,
                shmds_strerror(rc), shmds_errname(rc),
                rc == -EEXIST ? "; a reader or writer may still use it, or remove it with "
                                "examples/unlink"
                              : "");
        return 1;
    }
    shmds_queue *data = NULL, *done = NULL;
    const char *what = "create the queues";
    if ((rc = shmds_queue_create(r, XFR_QDONE, 64, 8, 0, &done)) != 0 ||
        (rc = shmds_queue_create(r, XFR_QDATA, capacity, block, SHMDS_QUEUE_SPSC, &data)) != 0)
        goto fail;

    uint64_t t0 = xfr_now_ns(), total = 0;
    for (;;) {
        void *room;
        what = "reserve a block";
        if ((rc = shmds_queue_reserve(data, block, &room, timeout_ms)) != 0)
            goto fail;
        ssize_t n = read_block(STDIN_FILENO, room, block);
        if (n <= 0) {
            shmds_queue_cancel(data);
            if (n == 0)
                break;
            fprintf(stderr, "%s: reading standard input: %s\n", argv[0], strerror(errno));
            rc = 1;
            goto out;
        }
        what = "send a block";
        if ((rc = shmds_queue_commit(data, (size_t)n)) != 0)
            goto fail;
        total += (uint64_t)n;
    }
    what = "shut the queue down";
    if ((rc = shmds_queue_shutdown(data)) != 0)
        goto fail;
    char ack[8];
    size_t len;
    what = "hear from the reader";
    if ((rc = shmds_queue_recv(done, ack, sizeof ack, &len, timeout_ms)) != 0)
        goto fail;
    if (verbose)
        xfr_report("xfr_writer", total, xfr_now_ns() - t0, block);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "%s: cannot %s: %s (%s)\n", argv[0], what, shmds_strerror(rc),
            shmds_errname(rc));
    rc = 1;
out:
    shmds_queue_close(data);
    shmds_queue_close(done);
    shmds_region_close(r);
    shmds_region_unlink(name);
    return rc;
}
