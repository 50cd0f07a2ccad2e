/*
 * lookup TABLE.tsv NWORKERS KEY... — a table loaded once, read by many.
 *
 * The loader reads "key<TAB>value" lines into a map in a fresh region. Then
 * NWORKERS worker processes attach the region READ-ONLY (PROT_READ: they
 * cannot damage it) and answer the KEYs, worker i taking every NWORKERS-th
 * one. Their gets take no lock. Each answer is printed as
 * "KEY<TAB>VALUE (worker N)", or "KEY<TAB>not found (worker N)".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <shmds.h>

static int load(const char *rname, const char *path, long *rows)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    /* First pass sizes the region. */
    long n = 0;
    size_t kmax = 1, vmax = 1, len = 0;
    char *line = NULL;
    ssize_t got;
    while ((got = getline(&line, &len, f)) > 0) {
        char *tab = strchr(line, '\t');
        if (tab == NULL)
            continue;
        n++;
        if ((size_t)(tab - line) > kmax)
            kmax = (size_t)(tab - line);
        if ((size_t)got > vmax)
            vmax = (size_t)got;
    }
    shmds_region *r;
    shmds_map *m;
    int rc = shmds_region_create(rname, (size_t)shmds_map_size_hint((uint64_t)n, kmax, vmax),
                                 NULL, &r);
    shmds_map_opts o = {.capacity = (uint64_t)n};
    if (rc == 0 && (rc = shmds_map_create(r, "table", &o, &m)) != 0) {
        shmds_region_close(r);
        shmds_region_unlink(rname);
    }
    if (rc != 0) {
        fprintf(stderr, "lookup: %s\n", shmds_strerror(rc));
        fclose(f);
        free(line);
        return -1;
    }
    rewind(f);
    while (rc >= 0 && (got = getline(&line, &len, f)) > 0) {
        char *tab = strchr(line, '\t');
        if (tab == NULL)
            continue;
        size_t vl = strcspn(tab + 1, "\r\n");
        rc = shmds_map_put(m, line, (size_t)(tab - line), tab + 1, vl, 0, 0);
    }
    free(line);
    fclose(f);
    shmds_map_count(m, (uint64_t *)rows);
    shmds_map_close(m);
    shmds_region_close(r);
    if (rc < 0) {
        fprintf(stderr, "lookup: loading: %s\n", shmds_strerror(rc));
        return -1;
    }
    return 0;
}

static int worker(const char *rname, int id, int nworkers, int nkeys, char **keys)
{
    shmds_region *r;
    shmds_map *m;
    int rc = shmds_region_open(rname, SHMDS_RDONLY, &r);
    if (rc == 0 && (rc = shmds_map_open(r, "table", &m)) != 0)
        shmds_region_close(r);
    if (rc != 0) {
        fprintf(stderr, "worker %d: %s\n", id, shmds_strerror(rc));
        return 1;
    }
    for (int i = id; i < nkeys; i += nworkers) {
        char val[4096];
        size_t vl;
        rc = shmds_map_get(m, keys[i], strlen(keys[i]), val, sizeof val, &vl);
        if (rc == 0)
            printf("%s\t%.*s (worker %d)\n", keys[i], (int)vl, val, id);
        else if (rc == -ENOENT)
            printf("%s\tnot found (worker %d)\n", keys[i], id);
        else
            printf("%s\terror %s (worker %d)\n", keys[i], shmds_errname(rc), id);
        fflush(stdout);
    }
    shmds_map_close(m);
    shmds_region_close(r);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || atoi(argv[2]) < 1 || atoi(argv[2]) > 64) {
        fprintf(stderr, "usage: %s TABLE.tsv NWORKERS(1..64) KEY...\n", argv[0]);
        return 2;
    }
    char rname[64];
    snprintf(rname, sizeof rname, "/shmds-lookup-%ld", (long)getpid());
    long rows = 0;
    if (load(rname, argv[1], &rows) != 0)
        return 1;
    printf("loaded %ld rows\n", rows);
    fflush(stdout);
    int n = atoi(argv[2]), bad = 0;
    pid_t pids[64];
    for (int i = 0; i < n; i++) {
        pids[i] = fork();
        if (pids[i] == 0)
            _exit(worker(rname, i, n, argc - 3, argv + 3));
    }
    for (int i = 0; i < n; i++) {
        int st;
        waitpid(pids[i], &st, 0);
        bad |= !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    shmds_region_unlink(rname);
    return bad;
}
