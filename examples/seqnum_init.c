/*
 * seqnum_init NAME [VALUE] — create (or reset) the sequence number in a
 * region, starting at VALUE (default 0).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seqnum.h"

static int fail(const char *prog, const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, shmds_strerror(rc), shmds_errname(rc));
    return 1;
}

int main(int argc, char **argv)
{
    unsigned long long value = 0;
    char *end = NULL;
    if (argc == 3) {
        errno = 0;
        value = strtoull(argv[2], &end, 10);
    }
    if (argc < 2 || argc > 3 || (argc == 3 && (errno != 0 || *end != '\0' || argv[2][0] == '-'))) {
        fprintf(stderr, "usage: %s NAME [VALUE]\n"
                        "  Create the sequence number in region NAME, or reset it, to VALUE"
                        " (default 0).\n",
                argv[0]);
        return 2;
    }
    shmds_region *r;
    int rc = shmds_region_open(argv[1], 0, &r);
    if (rc != 0)
        return fail(argv[0], argv[1], rc);
    uint32_t type;
    shmds_off_t off;
    rc = shmds_root_get(r, SEQNUM_ROOT, &type, &off);
    if (rc == -ENOENT) {
        if ((rc = shmds_alloc(r, sizeof(struct seqnum), &off)) == 0) {
            struct seqnum *s = shmds_ptr(r, off);
            memset(s, 0, sizeof *s);
            s->value = value;
            if ((rc = shmds_mutex_init(&s->lock)) == 0)
                rc = shmds_root_set(r, SEQNUM_ROOT, SEQNUM_TYPE, off);
            if (rc != 0)
                shmds_free(r, off);
        }
        if (rc == 0)
            printf("sequence number created at %llu\n", value);
    } else if (rc == 0 && type != SEQNUM_TYPE) {
        rc = SHMDS_ETYPE;
    } else if (rc == 0) {
        struct seqnum *s = shmds_ptr(r, off);
        rc = shmds_mutex_lock(&s->lock, 10000, NULL, NULL);
        if (rc >= 0) {
            s->pending = 0;
            s->value = value;
            shmds_mutex_unlock(&s->lock);
            rc = 0;
            printf("sequence number reset to %llu\n", value);
        }
    }
    shmds_region_close(r);
    return rc == 0 ? 0 : fail(argv[0], "sequence number", rc);
}
