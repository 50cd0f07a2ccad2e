/*
 * jobs REGION init|add TEXT|take|ls — a job list built from intrusive links.
 *
 * Shows shmds_link: the user's own struct (`struct job`) carries the two
 * offsets, a root struct in the region holds the user's shmds_mutex and the
 * list head, and shmds_link_entry() turns a link's offset back into the job.
 * The link helpers take no lock, so every use is under the root's mutex.
 *
 *   create /demo 1m; jobs /demo init; jobs /demo add "wash"; jobs /demo ls
 *   jobs /demo take      # prints and removes the oldest job; exit 3 if none
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <shmds.h>

#define ROOT "jobs"
#define TEXT_MAX 64

struct job {
    shmds_link link;
    char text[TEXT_MAX];
};

struct jobs {
    shmds_mutex lock;
    shmds_link head;
};

static shmds_region *region;

static int count_job(shmds_region *r, shmds_off_t node, void *arg)
{
    (void)r;
    (void)node;
    ++*(unsigned long *)arg;
    return 0;
}

/* After a process died holding the lock: keep the list if its links still
 * check out (a walk follows and verifies every one); otherwise report that
 * it cannot be repaired, which fences the lock off for good. A program whose
 * updates must survive any crash would log its intent first, as the
 * library's own list does. */
static int repair(void *arg)
{
    struct jobs *js = arg;
    unsigned long n = 0;
    return shmds_link_foreach(region, shmds_off(region, &js->head), count_job, &n);
}

static int print_job(shmds_region *r, shmds_off_t node, void *arg)
{
    struct job *j = shmds_link_entry(r, node, struct job, link);
    (void)arg;
    printf("%.*s\n", TEXT_MAX, j->text);
    return 0;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "jobs: %s: %s (%s)\n", what, shmds_strerror(rc), shmds_errname(rc));
    return 1;
}

static int init(void)
{
    /* Heap blocks are 16-aligned; a shmds_mutex wants its own cache line,
     * so take 48 bytes more and start at the first 64-byte boundary. */
    shmds_off_t block;
    int rc = shmds_alloc(region, sizeof(struct jobs) + 48, &block);
    if (rc != 0)
        return fail("alloc", rc);
    shmds_off_t off = (block + 63) & ~(shmds_off_t)63;
    struct jobs *js = shmds_ptr(region, off);
    if ((rc = shmds_mutex_init(&js->lock)) != 0 ||
        (rc = shmds_link_init(region, shmds_off(region, &js->head))) != 0 ||
        (rc = shmds_root_set(region, ROOT, SHMDS_TYPE_USER, off)) != 0) {
        shmds_free(region, block);
        return fail("init", rc);
    }
    return 0;
}

static int run(const char *cmd, const char *text, struct jobs *js)
{
    shmds_off_t head = shmds_off(region, &js->head);
    shmds_off_t joff = SHMDS_NULL;
    int rc;
    if (strcmp(cmd, "add") == 0) {
        /* Allocated before taking the lock: lock order is user lock, then
         * the allocator's, so either order works, but holding it shorter is
         * kinder to the other processes. */
        if ((rc = shmds_alloc(region, sizeof(struct job), &joff)) != 0)
            return fail("alloc", rc);
        struct job *j = shmds_ptr(region, joff);
        memset(j, 0, sizeof *j);
        strncpy(j->text, text, TEXT_MAX - 1);
    }
    rc = shmds_mutex_lock(&js->lock, 5000, repair, js);
    if (rc < 0)
        return fail("lock", rc);
    int status = 0;
    if (strcmp(cmd, "add") == 0) {
        struct job *j = shmds_ptr(region, joff);
        rc = shmds_link_insert_before(region, head, shmds_off(region, &j->link));
        status = rc != 0 ? fail("add", rc) : 0;
    } else if (strcmp(cmd, "take") == 0) {
        shmds_off_t first;
        rc = shmds_link_next(region, head, &first);
        if (rc == 0 && first == head) {
            status = 3;
        } else if (rc == 0 && (rc = shmds_link_remove(region, first)) == 0) {
            struct job *j = shmds_link_entry(region, first, struct job, link);
            printf("%.*s\n", TEXT_MAX, j->text);
            joff = shmds_off(region, j);
        } else {
            status = fail("take", rc);
        }
    } else {
        rc = shmds_link_foreach(region, head, print_job, NULL);
        status = rc != 0 ? fail("ls", rc) : 0;
    }
    shmds_mutex_unlock(&js->lock);
    /* add: free the job only if it was not linked; take: free the job taken. */
    if (joff != SHMDS_NULL && (strcmp(cmd, "take") == 0 || status != 0))
        shmds_free(region, joff);
    return status;
}

int main(int argc, char **argv)
{
    int add = argc == 4 && strcmp(argv[2], "add") == 0;
    int other = argc == 3 && (strcmp(argv[2], "init") == 0 || strcmp(argv[2], "take") == 0 ||
                              strcmp(argv[2], "ls") == 0);
    if (!add && !other) {
        fprintf(stderr, "usage: %s REGION init | add TEXT | take | ls\n", argv[0]);
        return 2;
    }
    int rc = shmds_region_open(argv[1], 0, &region);
    if (rc != 0)
        return fail(argv[1], rc);
    int status;
    if (strcmp(argv[2], "init") == 0) {
        status = init();
    } else {
        uint32_t type;
        shmds_off_t off;
        rc = shmds_root_get(region, ROOT, &type, &off);
        if (rc == 0 && type != SHMDS_TYPE_USER)
            rc = SHMDS_ETYPE;
        /* The root's offset is data from shared memory: check it first. */
        if (rc == 0 && (off % 64 != 0 || off + sizeof(struct jobs) > shmds_region_size(region)))
            rc = SHMDS_ECORRUPT;
        if (rc != 0)
            status = fail("open " ROOT, rc);
        else
            status = run(argv[2], add ? argv[3] : "", shmds_ptr(region, off));
    }
    shmds_region_close(region);
    return status;
}
