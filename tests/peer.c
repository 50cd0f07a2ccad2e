/*
 * A separately exec'd peer for the multi-process tests.
 *
 *   peer read NAME ROOT AVOID_ADDR AVOID_LEN
 *     Reserve [AVOID_ADDR, +AVOID_LEN) first, so the region cannot land where
 *     the parent mapped it; open NAME; print the mapping address and the
 *     NUL-terminated string at ROOT's offset; then write "pong from PID"
 *     just after that string's 256-byte slot.
 *   peer open NAME [ro]
 *     Print the symbolic result of shmds_region_open.
 *   peer mkmap NAME MAP KEY VALUE...
 *     Create map MAP in region NAME holding the given pairs.
 *   peer mkqueue NAME QUEUE MSG...
 *     Create queue QUEUE in region NAME holding the given messages.
 *   peer mktable NAME TABLE KEY VALUE...
 *     Publish the given pairs as the next version of table TABLE.
 *   peer mkackq NAME QUEUE MSG...
 *     The same with an at-least-once queue, then lease the first message
 *     and exit without acknowledging it.
 *   peer layout
 *     Print the size and member offsets of the public structs the Python
 *     binding declares again ("struct size member:offset..."), so its tests
 *     catch a struct that changed under it.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <shmds.h>

#define MEMBER(type, m) printf(" %s:%zu", #m, offsetof(type, m))

static void layout(void)
{
    printf("shmds_region_opts %zu", sizeof(shmds_region_opts));
    MEMBER(shmds_region_opts, mode);
    MEMBER(shmds_region_opts, lock_timeout_ms);
    MEMBER(shmds_region_opts, max_size);
    printf("\nshmds_region_info %zu", sizeof(shmds_region_info));
    MEMBER(shmds_region_info, size);
    MEMBER(shmds_region_info, heap_offset);
    MEMBER(shmds_region_info, heap_size);
    MEMBER(shmds_region_info, format_version);
    MEMBER(shmds_region_info, lock_timeout_ms);
    MEMBER(shmds_region_info, created_unix_ns);
    MEMBER(shmds_region_info, creator_pid);
    MEMBER(shmds_region_info, creator_uid);
    MEMBER(shmds_region_info, epoch);
    MEMBER(shmds_region_info, roots);
    MEMBER(shmds_region_info, roots_max);
    MEMBER(shmds_region_info, max_size);
    MEMBER(shmds_region_info, initial_size);
    MEMBER(shmds_region_info, mapped_size);
    MEMBER(shmds_region_info, map_calls);
    printf("\nshmds_alloc_stats %zu", sizeof(shmds_alloc_stats));
    MEMBER(shmds_alloc_stats, heap_bytes);
    MEMBER(shmds_alloc_stats, used_bytes);
    MEMBER(shmds_alloc_stats, free_bytes);
    MEMBER(shmds_alloc_stats, largest_free);
    MEMBER(shmds_alloc_stats, used_blocks);
    MEMBER(shmds_alloc_stats, free_blocks);
    printf("\nshmds_map_opts %zu", sizeof(shmds_map_opts));
    MEMBER(shmds_map_opts, capacity);
    MEMBER(shmds_map_opts, mem_limit);
    MEMBER(shmds_map_opts, stripes);
    MEMBER(shmds_map_opts, default_ttl_s);
    MEMBER(shmds_map_opts, flags);
    MEMBER(shmds_map_opts, default_ttl_ms);
    printf("\nshmds_map_stats %zu", sizeof(shmds_map_stats));
    MEMBER(shmds_map_stats, entries);
    MEMBER(shmds_map_stats, buckets);
    MEMBER(shmds_map_stats, hits);
    MEMBER(shmds_map_stats, misses);
    MEMBER(shmds_map_stats, inserts);
    MEMBER(shmds_map_stats, deletes);
    MEMBER(shmds_map_stats, evictions);
    MEMBER(shmds_map_stats, expirations);
    MEMBER(shmds_map_stats, recoveries);
    MEMBER(shmds_map_stats, mem_used);
    MEMBER(shmds_map_stats, fills);
    MEMBER(shmds_map_stats, takeovers);
    MEMBER(shmds_map_stats, mem_limit);
    MEMBER(shmds_map_stats, default_ttl_ms);
    MEMBER(shmds_map_stats, flags);
    MEMBER(shmds_map_stats, stripes);
    printf("\nshmds_table_stats %zu", sizeof(shmds_table_stats));
    MEMBER(shmds_table_stats, version);
    MEMBER(shmds_table_stats, count);
    MEMBER(shmds_table_stats, slots);
    MEMBER(shmds_table_stats, bytes);
    MEMBER(shmds_table_stats, data_bytes);
    MEMBER(shmds_table_stats, max_probe);
    MEMBER(shmds_table_stats, builds);
    MEMBER(shmds_table_stats, published_ns);
    MEMBER(shmds_table_stats, publishes);
    MEMBER(shmds_table_stats, reclaimed);
    printf("\n");
}

int main(int argc, char **argv)
{
    shmds_region *r;
    if (argc == 2 && strcmp(argv[1], "layout") == 0) {
        layout();
        return 0;
    }
    if (argc >= 3 && strcmp(argv[1], "open") == 0) {
        unsigned flags = (argc > 3 && strcmp(argv[3], "ro") == 0) ? SHMDS_RDONLY : 0;
        int rc = shmds_region_open(argv[2], flags, &r);
        printf("%s\n", shmds_errname(rc));
        if (rc == 0)
            shmds_region_close(r);
        return 0;
    }
    if (argc == 6 && strcmp(argv[1], "read") == 0) {
        void *avoid = (void *)(uintptr_t)strtoull(argv[4], NULL, 0);
        size_t len = (size_t)strtoull(argv[5], NULL, 0);
        /* Not MAP_FIXED: if something else is already there, that also keeps
         * the region away from that address. */
        mmap(avoid, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        int rc = shmds_region_open(argv[2], 0, &r);
        if (rc != 0) {
            fprintf(stderr, "peer: open %s: %s\n", argv[2], shmds_strerror(rc));
            return 1;
        }
        shmds_off_t off;
        rc = shmds_root_get(r, argv[3], NULL, &off);
        if (rc != 0) {
            fprintf(stderr, "peer: root %s: %s\n", argv[3], shmds_strerror(rc));
            return 1;
        }
        char *s = shmds_ptr(r, off);
        printf("%p\n%s\n", shmds_region_base(r), s);
        snprintf(s + 256, 256, "pong from %ld", (long)getpid());
        shmds_region_close(r);
        return 0;
    }
    if (argc >= 4 && argc % 2 == 0 && strcmp(argv[1], "mkmap") == 0) {
        shmds_map *m;
        int rc = shmds_region_open(argv[2], 0, &r);
        if (rc == 0 && (rc = shmds_map_create(r, argv[3], NULL, &m)) == 0) {
            for (int i = 4; i + 1 < argc && rc == 0; i += 2)
                rc = shmds_map_put(m, argv[i], strlen(argv[i]), argv[i + 1], strlen(argv[i + 1]),
                                   0, 0);
            shmds_map_close(m);
        }
        if (rc == 0)
            shmds_region_close(r);
        else
            fprintf(stderr, "peer: mkmap: %s\n", shmds_strerror(rc));
        return rc == 0 ? 0 : 1;
    }
    if (argc >= 4 && argc % 2 == 0 && strcmp(argv[1], "mktable") == 0) {
        shmds_table_builder *b;
        int rc = shmds_region_open(argv[2], 0, &r);
        if (rc == 0 && (rc = shmds_table_build(r, argv[3], 0, &b)) == 0) {
            for (int i = 4; i + 1 < argc && rc == 0; i += 2)
                rc = shmds_table_add(b, argv[i], strlen(argv[i]), argv[i + 1],
                                     strlen(argv[i + 1]));
            if (rc == 0)
                rc = shmds_table_publish(b, NULL);
            else
                shmds_table_abort(b);
        }
        if (rc == 0)
            shmds_region_close(r);
        else
            fprintf(stderr, "peer: mktable: %s\n", shmds_strerror(rc));
        return rc == 0 ? 0 : 1;
    }
    bool ack = argc >= 5 && strcmp(argv[1], "mkackq") == 0;
    if ((argc >= 4 && strcmp(argv[1], "mkqueue") == 0) || ack) {
        shmds_queue *q;
        shmds_queue_opts o = {.capacity_bytes = 65536, .max_msg = 4096,
                              .flags = ack ? SHMDS_QUEUE_ACK : 0};
        int rc = shmds_region_open(argv[2], 0, &r);
        if (rc == 0 && (rc = shmds_queue_create_ex(r, argv[3], &o, &q)) == 0) {
            for (int i = 4; i < argc && rc == 0; i++)
                rc = shmds_queue_send(q, argv[i], strlen(argv[i]), 0);
            char buf[4096];
            size_t len;
            uint64_t id;
            if (rc == 0 && ack)
                rc = shmds_queue_recv_lease(q, buf, sizeof buf, &len, &id, 0);
            shmds_queue_close(q);
        }
        if (rc == 0)
            shmds_region_close(r);
        else
            fprintf(stderr, "peer: mkqueue: %s\n", shmds_strerror(rc));
        return rc == 0 ? 0 : 1;
    }
    fprintf(stderr, "usage: peer read NAME ROOT AVOID_ADDR AVOID_LEN | peer open NAME [ro] | peer mkmap NAME MAP K V...\n"
                    "       | peer mkqueue NAME QUEUE MSG... | peer mkackq NAME QUEUE MSG...\n"
                    "       | peer mktable NAME TABLE K V...\n"
                    "       | peer layout\n");
    return 2;
}
