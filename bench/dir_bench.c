/* The directory of named objects (issue 14): what creating, opening,
 * looking up and destroying a list costs with 32 names (the most a format 3
 * region held) and with 1 000, 10 000 and 100 000, in one run. A region
 * of 1 MiB that grows as the names come. Prints wall and CPU time per
 * operation (CPU time is what to compare on a loaded machine) and the
 * ratio of each row's CPU cost to the 32-name row's. */
#include <shmds.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static double clock_s(clockid_t c)
{
    struct timespec t;
    clock_gettime(c, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

struct lap {
    double wall, cpu;
};

static struct lap lap_start(void)
{
    return (struct lap){clock_s(CLOCK_MONOTONIC), clock_s(CLOCK_PROCESS_CPUTIME_ID)};
}

/* Per operation, in microseconds, since `l`. */
static struct lap lap_end(struct lap l, unsigned n)
{
    return (struct lap){(clock_s(CLOCK_MONOTONIC) - l.wall) / n * 1e6,
                        (clock_s(CLOCK_PROCESS_CPUTIME_ID) - l.cpu) / n * 1e6};
}

enum { OP_CREATE, OP_OPEN, OP_GET, OP_DESTROY, OP_N };
static const char *const op_name[OP_N] = {"list create", "list open", "root_get", "list destroy"};

static void die(const char *what, int rc)
{
    fprintf(stderr, "dir_bench: %s: %s\n", what, shmds_strerror(rc));
    exit(1);
}

static void run(unsigned n, struct lap out[OP_N])
{
    char region[64], name[32];
    snprintf(region, sizeof region, "/shmds-bench-dir-%ld", (long)getpid());
    shmds_region_unlink(region);
    shmds_region_opts o = {.max_size = (size_t)1 << 30};
    shmds_region *r;
    int rc = shmds_region_create(region, 1 << 20, &o, &r);
    if (rc != 0)
        die("region create", rc);
    shmds_list *l;
    struct lap t = lap_start();
    for (unsigned i = 0; i < n; i++) {
        snprintf(name, sizeof name, "object-%u", i);
        if ((rc = shmds_list_create(r, name, &l)) != 0)
            die("create", rc);
        shmds_list_close(l);
    }
    out[OP_CREATE] = lap_end(t, n);
    t = lap_start();
    for (unsigned i = 0; i < n; i++) {
        snprintf(name, sizeof name, "object-%u", (i * 7919u) % n);
        if ((rc = shmds_list_open(r, name, &l)) != 0)
            die("open", rc);
        shmds_list_close(l);
    }
    out[OP_OPEN] = lap_end(t, n);
    t = lap_start();
    for (unsigned i = 0; i < n; i++) {
        snprintf(name, sizeof name, "object-%u", (i * 7919u) % n);
        if ((rc = shmds_root_get(r, name, NULL, NULL)) != 0)
            die("root_get", rc);
    }
    out[OP_GET] = lap_end(t, n);
    t = lap_start();
    for (unsigned i = 0; i < n; i++) {
        snprintf(name, sizeof name, "object-%u", i);
        if ((rc = shmds_list_open(r, name, &l)) != 0 || (rc = shmds_list_destroy(l)) != 0)
            die("destroy", rc);
    }
    out[OP_DESTROY] = lap_end(t, n);
    shmds_region_close(r);
    shmds_region_unlink(region);
}

int main(void)
{
    static const unsigned sizes[] = {32, 1000, 10000, 100000};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    struct lap res[NS][OP_N];
    for (unsigned s = 0; s < NS; s++)
        run(sizes[s], res[s]);
    double load[3] = {0, 0, 0};
    if (getloadavg(load, 3) < 0)
        load[0] = -1;
    printf("directory: per operation, us wall / us CPU (xN: CPU cost over the 32-name row); "
           "load %.2f, %ld CPUs\n",
           load[0], sysconf(_SC_NPROCESSORS_ONLN));
    printf("%-14s", "names");
    for (unsigned s = 0; s < NS; s++)
        printf(" %22u", sizes[s]);
    printf("\n");
    for (unsigned op = 0; op < OP_N; op++) {
        printf("%-14s", op_name[op]);
        for (unsigned s = 0; s < NS; s++)
            printf("   %6.2f / %5.2f x%4.1f", res[s][op].wall, res[s][op].cpu,
                   res[s][op].cpu / res[0][op].cpu);
        printf("\n");
    }
    return 0;
}
