/*
 * write NAME STRING — put STRING in the region's message board.
 *
 * The shmds version of the classic "write a string into shared memory"
 * program. The board is allocated and named on first use; see message.h for
 * why a writer killed at any moment leaves either the old or the new text.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "message.h"

static int fail(const char *prog, const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, shmds_strerror(rc), shmds_errname(rc));
    return 1;
}

/* Find the board, or make and name it. */
static int board_get(shmds_region *r, struct message_board **out)
{
    uint32_t type;
    shmds_off_t off;
    int rc = shmds_root_get(r, MESSAGE_ROOT, &type, &off);
    if (rc == -ENOENT) {
        if ((rc = shmds_alloc(r, sizeof(struct message_board), &off)) != 0)
            return rc;
        struct message_board *b = shmds_ptr(r, off);
        memset(b, 0, sizeof *b);
        if ((rc = shmds_mutex_init(&b->lock)) != 0)
            return rc;
        rc = shmds_root_set(r, MESSAGE_ROOT, MESSAGE_TYPE, off);
        if (rc == -EEXIST) { /* another writer named one first: use theirs */
            shmds_free(r, off);
            rc = shmds_root_get(r, MESSAGE_ROOT, &type, &off);
        } else {
            type = MESSAGE_TYPE;
        }
    }
    if (rc != 0)
        return rc;
    if (type != MESSAGE_TYPE)
        return SHMDS_ETYPE;
    if (shmds_usable_size(r, off) < sizeof(struct message_board))
        return SHMDS_ECORRUPT;
    *out = shmds_ptr(r, off);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s NAME STRING\n"
                        "  Store STRING (at most %d bytes) in the region NAME.\n",
                argv[0], MESSAGE_MAX);
        return 2;
    }
    size_t len = strlen(argv[2]);
    if (len > MESSAGE_MAX) {
        fprintf(stderr, "%s: message is %zu bytes; the board holds %d\n", argv[0], len,
                MESSAGE_MAX);
        return 1;
    }
    shmds_region *r;
    int rc = shmds_region_open(argv[1], 0, &r);
    if (rc != 0)
        return fail(argv[0], argv[1], rc);
    struct message_board *b;
    if ((rc = board_get(r, &b)) != 0) {
        shmds_region_close(r);
        return fail(argv[0], "message board", rc);
    }
    /* Nothing to repair: a dead writer only ever touched the inactive slot. */
    rc = shmds_mutex_lock(&b->lock, 10000, NULL, NULL);
    if (rc < 0) {
        shmds_region_close(r);
        return fail(argv[0], "lock", rc);
    }
    uint64_t next = b->gen + 1;
    memcpy(b->text[next % 2], argv[2], len);
    b->len[next % 2] = len;
    __atomic_store_n(&b->gen, next, __ATOMIC_RELEASE); /* commit */
    shmds_mutex_unlock(&b->lock);
    shmds_region_close(r);
    return 0;
}
