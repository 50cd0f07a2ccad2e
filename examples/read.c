/*
 * read NAME — print the region's message board.
 *
 * Attaches read-only and takes no lock: it copies the current text and keeps
 * the copy only if no writer committed meanwhile (see message.h).
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

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s NAME\n  Print the message stored in the region NAME.\n",
                argv[0]);
        return 2;
    }
    shmds_region *r;
    int rc = shmds_region_open(argv[1], SHMDS_RDONLY, &r);
    if (rc != 0)
        return fail(argv[0], argv[1], rc);
    uint32_t type;
    shmds_off_t off;
    rc = shmds_root_get(r, MESSAGE_ROOT, &type, &off);
    if (rc == 0 && type != MESSAGE_TYPE)
        rc = SHMDS_ETYPE;
    if (rc == 0 && shmds_usable_size(r, off) < sizeof(struct message_board))
        rc = SHMDS_ECORRUPT;
    if (rc != 0) {
        shmds_region_close(r);
        return fail(argv[0], rc == -ENOENT ? "no message yet" : "message board", rc);
    }
    const struct message_board *b = shmds_ptr(r, off);
    static char copy[MESSAGE_MAX];
    uint64_t len;
    for (;;) {
        uint64_t g = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
        len = b->len[g % 2];
        if (len > MESSAGE_MAX) { /* only a stray write can do this */
            shmds_region_close(r);
            return fail(argv[0], "message board", SHMDS_ECORRUPT);
        }
        memcpy(copy, b->text[g % 2], len);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&b->gen, __ATOMIC_RELAXED) == g)
            break;
    }
    fwrite(copy, 1, len, stdout);
    putchar('\n');
    shmds_region_close(r);
    return 0;
}
