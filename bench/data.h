/* Benchmark tables as data files, for the plots `make bench` draws.
 *
 * When the environment variable SHMDS_BENCH_DATA names a directory, a
 * benchmark writes each of its tables there as NAME.dat, in the shape
 * gnuplot's clustered histograms read: comment lines (title, unit,
 * machine), a header row naming the implementations, then one row per
 * workload with one figure per implementation. bench/plot.sh draws every
 * such file into NAME.png. Without the variable nothing is written. */
#ifndef SHMDS_BENCH_DATA_H
#define SHMDS_BENCH_DATA_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* "N CPUs online, MODEL", from /proc/cpuinfo. */
static inline void bench_machine(char *out, size_t cap)
{
    char line[512], model[256] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        char *c = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && c != NULL) {
            snprintf(model, sizeof model, "%s", c + 2);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    snprintf(out, cap, "%ld CPUs online, %s", sysconf(_SC_NPROCESSORS_ONLN), model);
}

/* Open NAME.dat and write its head: the title, the unit of the figures
 * (the y axis), "log" or "linear" scale, the machine, and the names of the
 * nimpl implementations (shmds first). NULL when SHMDS_BENCH_DATA is unset
 * or the file cannot be made (reported on stderr). */
static inline FILE *bench_data_open(const char *name, const char *title, const char *unit,
                                    const char *scale, const char *const *impl, int nimpl)
{
    const char *dir = getenv("SHMDS_BENCH_DATA");
    if (dir == NULL || *dir == '\0')
        return NULL;
    char path[4096], machine[400];
    snprintf(path, sizeof path, "%s/%s.dat", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return NULL;
    }
    bench_machine(machine, sizeof machine);
    fprintf(f, "# title: %s\n# unit: %s\n# scale: %s\n# machine: %s\nworkload", title, unit,
            scale, machine);
    for (int i = 0; i < nimpl; i++)
        fprintf(f, " \"%s\"", impl[i]);
    fputc('\n', f);
    return f;
}

/* One workload's row: its label and one figure per implementation (a
 * figure that could not be measured, <= 0 or NaN, is written as NaN). */
static inline void bench_data_row(FILE *f, const char *workload, const double *v, int n)
{
    if (f == NULL)
        return;
    fprintf(f, "\"%s\"", workload);
    for (int i = 0; i < n; i++) {
        if (v[i] > 0 && !isnan(v[i]))
            fprintf(f, " %.6g", v[i]);
        else
            fputs(" NaN", f);
    }
    fputc('\n', f);
}

static inline void bench_data_close(FILE *f)
{
    if (f != NULL)
        fclose(f);
}

#endif
