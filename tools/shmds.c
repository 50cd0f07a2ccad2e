/*
 * shmds — the operator's view of shmds regions, in the spirit of ipcs.
 *
 *   shmds ls                 every shmds region in /dev/shm
 *   shmds info NAME          header, locks, heap and named objects
 *   shmds check NAME [--repair]  verify everything; exit 0 healthy, 1 not
 *   shmds dump NAME OBJECT   a list's elements or a map's entries
 *   shmds stat NAME OBJECT   an object's statistics
 *   shmds get|put|del|ttl NAME MAP KEY [...]   one key of a map
 *
 * How bytes are shown (dump, get): text that is valid UTF-8 is written as
 * it is, with C escapes (text) or JSON escapes (--json) for control
 * characters, quotes and backslashes; every byte that is not part of valid
 * UTF-8 is written as \xXX (text) or, in JSON, as the escaped lone
 * surrogate \udcXX (the "surrogateescape" convention of PEP 383: valid
 * UTF-8 never holds a surrogate, so the bytes come back exactly, e.g. with
 * Python's bytes(s, "utf-8", "surrogateescape")). A map value of exactly 8
 * bytes that is not printable text is a counter (shmds_map_add) and is
 * shown as a signed decimal number (unquoted in JSON).
 *
 *   shmds rm NAME...         remove region names
 *
 * Every command takes --json (anywhere on the line): one JSON document on
 * standard output, built in memory and printed only when the command
 * succeeds; a failure prints {"error": {...}} there instead, so a script
 * always gets valid JSON. Exit status: 0 success (check: healthy), 1 the
 * operation failed (check: not healthy), 2 usage error.
 *
 * Everything here goes through the public API, as any user program would.
 *
 * The tool is what an operator (often root) points at regions other users
 * made, so it is where a hostile region would attack first (README, "Threat
 * model"). Hence: every view (`ls`, `info`, `dump`, `stat`, `check`)
 * attaches read-only, takes no lock and so never waits on one (nor runs a
 * repair); only `check --repair` attaches read-write, to run pending
 * repairs and reclaim orphans. A region owned by another user is refused
 * unless --any-owner is given. An object truncated while the tool reads it
 * ends the command with an error (SIGBUS is caught), not a crash.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <shmds.h>

#define SHM_DIR "/dev/shm"
#define VIEW_WAIT_MS 100u

static const char *prog = "shmds";
static bool any_owner; /* --any-owner: attach regions other users own */

/* Attach read-only (or read-write for `check --repair`), refusing another
 * user's region unless --any-owner was given. */
static int attach(const char *name, bool writable, shmds_region **r)
{
    unsigned flags = (writable ? 0u : (unsigned)SHMDS_RDONLY) | (any_owner ? 0u : (unsigned)SHMDS_SAME_UID);
    int rc = shmds_region_open(name, flags, r);
    /* A view waits for no lock, and for a writer caught mid-change (alive,
     * or dead and not yet repaired) at most VIEW_WAIT_MS, not the region's
     * bound: an operator looks at a stuck region to see why it is stuck. */
    if (rc == 0 && !writable)
        (void)shmds_region_set_lock_timeout(*r, VIEW_WAIT_MS);
    return rc;
}

/* --json: the document goes to `jout` (a memory stream), printed by main
 * when the command succeeded; `jerr` holds the first failure instead. */
static int json;
static FILE *jout;
static char jerr[4096];

/* Length of the valid UTF-8 sequence at p (at most n bytes): 1 to 4, or 0
 * when p does not start one (overlong forms, surrogates and code points
 * past U+10FFFF are not valid). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
        return 0;
    return len;
}

/* True when the bytes are valid UTF-8 without control characters. */
static int is_text(const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t l = utf8_len(p + i, n - i);
        if (l == 0 || (l == 1 && (p[i] < 0x20 || p[i] == 0x7f)))
            return 0;
        i += l;
    }
    return 1;
}

/* Bytes as a quoted string, by the rule at the top of the file. */
static void quote(FILE *f, const void *data, size_t len, int as_json)
{
    const unsigned char *p = data;
    putc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        size_t l = utf8_len(p + i, len - i);
        if (l > 1) {
            fwrite(p + i, 1, l, f);
            i += l;
            continue;
        }
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (l == 1 && c >= 0x20 && c < 0x7f)
            putc((int)c, f);
        else if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (l == 1)
            fprintf(f, as_json ? "\\u%04x" : "\\x%02x", c);
        else
            fprintf(f, as_json ? "\\udc%02x" : "\\x%02x", c);
        i++;
    }
    putc('"', f);
}

/* A map value: a counter as a number, anything else as bytes. */
static void quote_value(FILE *f, const void *v, size_t vl, int as_json)
{
    if (vl == 8 && !is_text(v, vl)) {
        int64_t n;
        memcpy(&n, v, 8);
        fprintf(f, "%" PRId64, n);
    } else {
        quote(f, v, vl, as_json);
    }
}

static void json_cstr(FILE *f, const char *s)
{
    quote(f, s, strlen(s), 1);
}

/* With --json, the document to print instead of the command's: the
 * first failure, {"error": {object, name, code, message}}. */
static void json_fail(const char *what, const char *name, int code, const char *message)
{
    if (!json || jerr[0] != '\0')
        return;
    FILE *f = fmemopen(jerr, sizeof jerr, "w");
    if (f == NULL)
        return;
    fputs("{\"error\": {\"object\": ", f);
    json_cstr(f, what);
    fprintf(f, ", \"name\": \"%s\", \"code\": %d, \"message\": ", name, code);
    json_cstr(f, message);
    fputs("}}\n", f);
    fclose(f);
}

static int complain(const char *what, int rc)
{
    fprintf(stderr, "%s: %s: %s (%s)\n", prog, what, shmds_strerror(rc), shmds_errname(rc));
    json_fail(what, shmds_errname(rc), rc, shmds_strerror(rc));
    return 1;
}

static const char *type_name(uint32_t type)
{
    switch (type) {
    case SHMDS_TYPE_LIST:
        return "list";
    case SHMDS_TYPE_MAP:
        return "map";
    case SHMDS_TYPE_QUEUE:
        return "queue";
    case SHMDS_TYPE_TABLE:
        return "table";
    default:
        return type >= SHMDS_TYPE_USER ? "user" : "unknown";
    }
}

static void human_size(uint64_t n, char *buf, size_t len)
{
    static const char units[] = "BKMGTP";
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 5) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%" PRIu64 "B", n);
    else
        snprintf(buf, len, "%.1f%c", v, units[u]);
}

/* ---- ls ---- */

/* What /dev/shm/NAME looks like: 1 a region (its signature), 2 an
 * unpublished one (the format words a creator stamps first, no magic yet),
 * 0 something else, -1 unreadable. Opened without blocking and without
 * following links: anyone can put a FIFO there. */
static int looks_like_region(const char *file)
{
    char path[512];
    unsigned char head[16];
    snprintf(path, sizeof path, SHM_DIR "/%s", file);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return errno == EACCES ? -1 : 0;
    struct stat st;
    int kind = 0;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
        pread(fd, head, sizeof head, 0) == (ssize_t)sizeof head) {
        const uint32_t stamp[2] = {SHMDS_FORMAT_VERSION, (uint32_t)SHMDS_HEADER_SIZE};
        static const unsigned char zero[8];
        if (memcmp(head, SHMDS_REGION_SIGNATURE, 8) == 0)
            kind = 1;
        else if (memcmp(head, zero, 8) == 0 && memcmp(head + 8, stamp, sizeof stamp) == 0)
            kind = 2;
    }
    close(fd);
    return kind;
}

static int cmd_ls(int argc, char **argv)
{
    (void)argv;
    if (argc != 1)
        return -1;
    DIR *d = opendir(SHM_DIR);
    if (d == NULL)
        return complain(SHM_DIR, -errno);
    if (json)
        fputs("[", jout);
    else
        printf("%-32s %9s %6s %8s %s\n", "NAME", "SIZE", "ROOTS", "CREATOR", "CREATED");
    struct dirent *e;
    int found = 0;
    while ((e = readdir(d)) != NULL) {
        int kind;
        if (e->d_name[0] == '.' || (kind = looks_like_region(e->d_name)) == 0)
            continue;
        char name[SHMDS_NAME_MAX + 2];
        snprintf(name, sizeof name, "/%s", e->d_name);
        shmds_region *r;
        int rc = attach(name, false, &r);
        /* What an error means here, when it means more than its name. */
        const char *why = rc == -EPERM                    ? "another user's: --any-owner to read it"
                          : kind == 2 && rc == -ENOENT ? "abandoned creation: its creator died; "
                                                         "create it again or rm"
                          : kind == 2 && rc == -EAGAIN ? "being created"
                                                       : NULL;
        shmds_region_info info;
        if (rc == 0) {
            shmds_region_info_get(r, &info);
            shmds_region_close(r);
        }
        if (json) {
            fputs(found ? ",\n  {\"name\": " : "\n  {\"name\": ", jout);
            json_cstr(jout, name);
            if (rc != 0) {
                fprintf(jout, ", \"error\": \"%s\"", shmds_errname(rc));
                if (why != NULL) {
                    fputs(", \"note\": ", jout);
                    json_cstr(jout, why);
                }
                fputs("}", jout);
            } else {
                fprintf(jout,
                        ", \"size\": %" PRIu64 ", \"roots\": %" PRIu32 ", \"creator_pid\": %ld"
                        ", \"creator_uid\": %ld, \"created_unix_ns\": %" PRIu64 "}",
                        info.size, info.roots, (long)info.creator_pid, (long)info.creator_uid,
                        info.created_unix_ns);
            }
        } else if (rc != 0) {
            printf("%-32s (%s)\n", name, why != NULL ? why : shmds_errname(rc));
        } else {
            char size[16], when[32];
            human_size(info.size, size, sizeof size);
            time_t t = (time_t)(info.created_unix_ns / 1000000000u);
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime(&t));
            printf("%-32s %9s %6" PRIu32 " %8ld %s\n", name, size, info.roots,
                   (long)info.creator_pid, when);
        }
        found++;
    }
    closedir(d);
    if (json)
        fputs(found ? "\n]\n" : "]\n", jout);
    else if (found == 0)
        printf("(no shmds regions)\n");
    return 0;
}

/* ---- info ---- */

static void print_lock(const char *what, const shmds_mutex_info *m)
{
    if (json) {
        fprintf(jout,
                "    \"%s\": {\"state\": \"%s\", \"owner_pid\": %ld, \"held_ns\": %" PRIu64
                ", \"recoveries\": %" PRIu64 "}",
                what, m->fenced ? "fenced" : m->owner_pid != 0 ? "held" : "free",
                (long)m->owner_pid, m->owner_pid != 0 ? (uint64_t)m->held_ns : 0, m->recoveries);
        return;
    }
    printf("  %-10s ", what);
    if (m->fenced)
        printf("FENCED (a repair failed; the object is unusable)");
    else if (m->owner_pid != 0)
        printf("held by pid %ld for %.3f s", (long)m->owner_pid, (double)m->held_ns / 1e9);
    else
        printf("free");
    printf(", %" PRIu64 " recover%s\n", m->recoveries, m->recoveries == 1 ? "y" : "ies");
}

/* One line per allocator arena: where, how full, its lock. */
static void print_arenas(shmds_region *r)
{
    unsigned n = shmds_alloc_arena_count(r);
    printf("  arenas     %u\n", n);
    for (unsigned i = 0; i < n; i++) {
        shmds_alloc_arena_info a;
        int rc = shmds_alloc_arena_info_get(r, i, &a);
        if (rc != 0) {
            printf("    arena %u: (%s)\n", i, shmds_errname(rc));
            continue;
        }
        char size[16], used[16];
        human_size(a.size, size, sizeof size);
        human_size(a.stats.used_bytes, used, sizeof used);
        printf("    arena %u at %" PRIu64 ", %s: %s used in %" PRIu64 " blocks, %" PRIu64
               " free blocks; %" PRIu64 " repairs\n",
               i, a.offset, size, used, a.stats.used_blocks, a.stats.free_blocks, a.repairs);
        char what[24];
        snprintf(what, sizeof what, "  lock %u", i);
        print_lock(what, &a.lock);
    }
}

static int queue_len(shmds_region *r, const char *name, uint64_t *n)
{
    shmds_queue *q;
    int rc = shmds_queue_open(r, name, &q);
    if (rc == 0) {
        rc = shmds_queue_len(q, n);
        shmds_queue_close(q);
    }
    return rc;
}

struct roots {
    shmds_region *r;
    int first;
};

/* One line on a named object: what it is, and how much it holds. */
static int print_root(const char *name, uint32_t type, shmds_off_t off, void *arg)
{
    struct roots *ro = arg;
    shmds_region *r = ro->r;
    char what[96] = "";
    const char *count = NULL; /* the JSON member for n */
    uint64_t n = 0;
    int rc = 0;
    if (type == SHMDS_TYPE_LIST) {
        shmds_list *l;
        size_t len = 0;
        if ((rc = shmds_list_open(r, name, &l)) == 0) {
            rc = shmds_list_len(l, &len);
            shmds_list_close(l);
        }
        n = len;
        count = "elements";
        if (rc == 0)
            snprintf(what, sizeof what, "%zu element%s", len, len == 1 ? "" : "s");
    }
    if (type == SHMDS_TYPE_MAP) {
        shmds_map *m;
        if ((rc = shmds_map_open(r, name, &m)) == 0) {
            rc = shmds_map_count(m, &n);
            shmds_map_close(m);
        }
        count = "entries";
        if (rc == 0)
            snprintf(what, sizeof what, "%" PRIu64 " entr%s", n, n == 1 ? "y" : "ies");
    }
    if (type == SHMDS_TYPE_QUEUE) {
        count = "messages";
        if ((rc = queue_len(r, name, &n)) == 0)
            snprintf(what, sizeof what, "%" PRIu64 " message%s waiting", n, n == 1 ? "" : "s");
    }
    uint64_t version = 0;
    if (type == SHMDS_TYPE_TABLE) {
        shmds_table *t;
        shmds_table_stats st;
        if ((rc = shmds_table_open(r, name, &t)) == 0) {
            rc = shmds_table_stat(t, &st);
            shmds_table_close(t);
        }
        count = "entries";
        if (rc == 0) {
            n = st.count;
            version = st.version;
            snprintf(what, sizeof what, "%" PRIu64 " entr%s, version %" PRIu64, n,
                     n == 1 ? "y" : "ies", version);
        }
    }
    if (json) {
        fputs(ro->first ? "\n    {\"name\": " : ",\n    {\"name\": ", jout);
        json_cstr(jout, name);
        fprintf(jout, ", \"type\": \"%s\", \"type_tag\": %" PRIu32 ", \"offset\": %" PRIu64,
                type_name(type), type, off);
        if (rc != 0)
            fprintf(jout, ", \"error\": \"%s\"", shmds_errname(rc));
        else if (count != NULL)
            fprintf(jout, ", \"%s\": %" PRIu64, count, n);
        if (rc == 0 && type == SHMDS_TYPE_TABLE)
            fprintf(jout, ", \"version\": %" PRIu64, version);
        fputs("}", jout);
        ro->first = 0;
        return 0;
    }
    if (rc != 0)
        snprintf(what, sizeof what, "(%s)", shmds_errname(rc));
    printf("  %-24s %-6s at offset %-10" PRIu64 " %s\n", name, type_name(type), off, what);
    return 0;
}

/* The readers part of info: slots, the oldest reader inside a guard (a
 * stuck one delays frees), blocks waiting for readers. */
static void print_readers(shmds_region *r)
{
    shmds_guard_info g;
    int rc = shmds_guard_info_get(r, &g);
    if (json) {
        if (rc != 0) {
            fprintf(jout, ",\n  \"readers\": {\"error\": \"%s\"}", shmds_errname(rc));
            return;
        }
        fprintf(jout,
                ",\n  \"readers\": {\"slots\": %" PRIu32 ", \"inside\": %" PRIu32
                ", \"epoch\": %" PRIu64 ", \"retired\": %" PRIu64 ", \"oldest_pid\": %" PRId64
                ", \"oldest_tid\": %" PRId64 ", \"oldest_epoch\": %" PRIu64
                ", \"oldest_alive\": %s}",
                g.slots, g.inside, g.epoch, g.retired, g.oldest_pid, g.oldest_tid, g.oldest_epoch,
                g.oldest_alive ? "true" : "false");
        return;
    }
    if (rc != 0) {
        printf("readers\n  (%s)\n", shmds_errname(rc));
        return;
    }
    printf("readers\n  slots      %" PRIu32 " held, %" PRIu32 " inside a guard; epoch %" PRIu64
           "; %" PRIu64 " retired block%s not freed yet\n",
           g.slots, g.inside, g.epoch, g.retired, g.retired == 1 ? "" : "s");
    if (g.oldest_pid != 0)
        printf("  oldest     pid %" PRId64 " tid %" PRId64 ", inside since epoch %" PRIu64
               " (%" PRIu64 " reclamation%s ago)%s\n",
               g.oldest_pid, g.oldest_tid, g.oldest_epoch, g.epoch - g.oldest_epoch,
               g.epoch - g.oldest_epoch == 1 ? "" : "s",
               g.oldest_alive ? (g.epoch - g.oldest_epoch > 1 ? ": alive, holding frees back" : "")
                              : ": dead (cleared by the next reclamation)");
}

static void info_json(const char *name, const shmds_region_info *info,
                      const shmds_mutex_info *dir, const shmds_mutex_info *alloc, int heap_rc,
                      const shmds_alloc_stats *st)
{
    fputs("{\n  \"name\": ", jout);
    json_cstr(jout, name);
    fprintf(jout,
            ",\n  \"size\": %" PRIu64 ", \"max_size\": %" PRIu64 ", \"heap_offset\": %" PRIu64
            ", \"heap_size\": %" PRIu64
            ",\n  \"format_version\": %" PRIu32 ", \"library_version\": \"%s\""
            ",\n  \"created_unix_ns\": %" PRIu64 ", \"creator_pid\": %ld, \"creator_uid\": %ld"
            ",\n  \"lock_timeout_ms\": %" PRIu32 ", \"epoch\": %" PRIu64 ",\n  \"locks\": {\n",
            info->size, info->max_size, info->heap_offset, info->heap_size, info->format_version,
            shmds_version_string(), info->created_unix_ns, (long)info->creator_pid,
            (long)info->creator_uid, info->lock_timeout_ms, info->epoch);
    print_lock("directory", dir);
    fputs(",\n", jout);
    print_lock("allocator", alloc);
    fputs("\n  },\n  \"heap\": ", jout);
    if (heap_rc != 0)
        fprintf(jout, "{\"error\": \"%s\"}", shmds_errname(heap_rc));
    else
        fprintf(jout,
                "{\"heap_bytes\": %" PRIu64 ", \"used_bytes\": %" PRIu64 ", \"free_bytes\": %" PRIu64
                ", \"largest_free\": %" PRIu64 ", \"used_blocks\": %" PRIu64
                ", \"free_blocks\": %" PRIu64 "}",
                st->heap_bytes, st->used_bytes, st->free_bytes, st->largest_free,
                st->used_blocks, st->free_blocks);
    fprintf(jout, ",\n  \"roots\": %" PRIu32 ", \"roots_max\": %" PRIu32, info->roots,
            info->roots_max);
}

static int cmd_info(int argc, char **argv)
{
    if (argc != 2)
        return -1;
    shmds_region *r;
    int rc = attach(argv[1], false, &r);
    if (rc != 0)
        return complain(argv[1], rc);
    shmds_region_info info;
    shmds_region_info_get(r, &info);
    if (json) {
        shmds_mutex_info dir, alloc;
        shmds_alloc_stats st;
        shmds_region_lock_info(r, SHMDS_LOCK_DIRECTORY, &dir);
        shmds_region_lock_info(r, SHMDS_LOCK_ALLOCATOR, &alloc);
        info_json(argv[1], &info, &dir, &alloc, shmds_alloc_stats_get(r, &st), &st);
        print_readers(r);
        fputs(",\n  \"objects\": [", jout);
        struct roots ro = {r, 1};
        rc = shmds_root_foreach(r, print_root, &ro);
        fputs(ro.first ? "]\n}\n" : "\n  ]\n}\n", jout);
        shmds_region_close(r);
        return rc == 0 ? 0 : complain("directory", rc);
    }
    char size[16], heap[16], max[16], when[32];
    human_size(info.size, size, sizeof size);
    human_size(info.heap_size, heap, sizeof heap);
    human_size(info.max_size, max, sizeof max);
    time_t t = (time_t)(info.created_unix_ns / 1000000000u);
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S %z", localtime(&t));
    printf("region %s\n", argv[1]);
    printf("  size       %s (%" PRIu64 " bytes), heap %s at offset %" PRIu64 "\n", size, info.size,
           heap, info.heap_offset);
    printf("  maximum    %s (%" PRIu64 " bytes of address space; grows on demand)\n", max,
           info.max_size);
    printf("  format     %" PRIu32 " (library %s)\n", info.format_version, shmds_version_string());
    printf("  created    %s by pid %ld, uid %ld\n", when, (long)info.creator_pid,
           (long)info.creator_uid);
    printf("  locks      bounded at %" PRIu32 " ms; %" PRIu64 " repair%s after deaths so far\n",
           info.lock_timeout_ms, info.epoch, info.epoch == 1 ? "" : "s");
    shmds_mutex_info m;
    shmds_region_lock_info(r, SHMDS_LOCK_DIRECTORY, &m);
    print_lock("directory", &m);
    shmds_region_lock_info(r, SHMDS_LOCK_ALLOCATOR, &m);
    print_lock("heap", &m);
    shmds_alloc_stats st;
    rc = shmds_alloc_stats_get(r, &st);
    if (rc == 0) {
        char used[16], free_[16], largest[16];
        human_size(st.used_bytes, used, sizeof used);
        human_size(st.free_bytes, free_, sizeof free_);
        human_size(st.largest_free, largest, sizeof largest);
        double frag = st.free_bytes == 0 ? 0.0
                                         : 100.0 * (1.0 - (double)st.largest_free / (double)st.free_bytes);
        printf("heap\n  used       %s in %" PRIu64 " blocks\n", used, st.used_blocks);
        printf("  free       %s in %" PRIu64 " blocks; largest %s (fragmentation %.1f%%)\n", free_,
               st.free_blocks, largest, frag);
        print_arenas(r);
    } else {
        printf("heap\n  (%s)\n", shmds_errname(rc));
    }
    print_readers(r);
    printf("objects (%" PRIu32 "; the directory's blocks hold %" PRIu32 " and grow with it)\n",
           info.roots, info.roots_max);
    struct roots ro = {r, 1};
    rc = shmds_root_foreach(r, print_root, &ro);
    shmds_region_close(r);
    return rc == 0 ? 0 : complain("directory", rc);
}

/* ---- check ---- */

static int cmd_check(int argc, char **argv)
{
    bool repair = argc == 3 && strcmp(argv[2], "--repair") == 0;
    if (argc != 2 && !repair)
        return -1;
    /* Read-only, the default, verifies without changing anything (and
     * skips what needs a lock, such as a map's locked walk); --repair
     * attaches read-write so that each lock runs a pending repair and
     * orphans of dead creates are reclaimed. */
    shmds_region *r;
    int rc = attach(argv[1], repair, &r);
    if (rc != 0)
        return complain(argv[1], rc);
    rc = shmds_region_check(r);
    shmds_region_close(r);
    if (json) { /* a verdict either way: the document is the result */
        fputs("{\"name\": ", jout);
        json_cstr(jout, argv[1]);
        fprintf(jout, ", \"repair\": %s, \"healthy\": %s", repair ? "true" : "false",
                rc == 0 ? "true" : "false");
        if (rc != 0) {
            fprintf(jout, ", \"error\": \"%s\", \"message\": ", shmds_errname(rc));
            json_cstr(jout, shmds_strerror(rc));
        }
        fputs("}\n", jout);
    }
    if (rc != 0) {
        complain(argv[1], rc);
        jerr[0] = '\0';
        return 1;
    }
    if (!json)
        printf("%s: healthy%s\n", argv[1], repair ? "" : " (read-only check)");
    return 0;
}

/* ---- dump and stat ---- */

/* Attach region `name` read-only and look `object` up in its directory.
 * *r is NULL when the region itself could not be opened; otherwise the
 * caller closes it, whatever the lookup returned. */
static int open_object(const char *name, const char *object, shmds_region **r, uint32_t *type)
{
    int rc = attach(name, false, r);
    if (rc != 0) {
        *r = NULL;
        return rc;
    }
    return shmds_root_get(*r, object, type, NULL);
}

struct dump {
    FILE *f;
    int first;
};

static int dump_element(const void *data, size_t len, void *arg)
{
    struct dump *d = arg;
    if (json)
        fputs(d->first ? "\n  " : ",\n  ", d->f);
    quote(d->f, data, len, json);
    if (!json)
        putc('\n', d->f);
    d->first = 0;
    return 0;
}

static int dump_entry(const void *k, size_t kl, const void *v, size_t vl, void *arg)
{
    struct dump *d = arg;
    if (json)
        fputs(d->first ? "\n  " : ",\n  ", d->f);
    quote(d->f, k, kl, json);
    fputs(json ? ": " : " = ", d->f);
    quote_value(d->f, v, vl, json);
    if (!json)
        putc('\n', d->f);
    d->first = 0;
    return 0;
}

static int cmd_dump(int argc, char **argv)
{
    struct dump d = {json ? jout : stdout, 1};
    if (argc != 3)
        return -1;
    shmds_region *r;
    uint32_t type;
    int rc = open_object(argv[1], argv[2], &r, &type);
    if (r == NULL)
        return complain(argv[1], rc);
    if (rc == 0 && type == SHMDS_TYPE_LIST) {
        shmds_list *l;
        if ((rc = shmds_list_open(r, argv[2], &l)) == 0) {
            fputs(json ? "[" : "", d.f);
            rc = shmds_list_foreach(l, dump_element, &d);
            fputs(json ? (d.first ? "]\n" : "\n]\n") : "", d.f);
            shmds_list_close(l);
        }
    } else if (rc == 0 && type == SHMDS_TYPE_MAP) {
        shmds_map *m;
        if ((rc = shmds_map_open(r, argv[2], &m)) == 0) {
            fputs(json ? "{" : "", d.f);
            rc = shmds_map_foreach(m, dump_entry, &d);
            fputs(json ? (d.first ? "}\n" : "\n}\n") : "", d.f);
            shmds_map_close(m);
        }
    } else if (rc == 0 && type == SHMDS_TYPE_TABLE) {
        shmds_table *t;
        if ((rc = shmds_table_open(r, argv[2], &t)) == 0) {
            fputs(json ? "{" : "", d.f);
            rc = shmds_table_foreach(t, dump_entry, &d, NULL);
            fputs(json ? (d.first ? "}\n" : "\n}\n") : "", d.f);
            shmds_table_close(t);
        }
    } else if (rc == 0) {
        rc = SHMDS_ETYPE;
    }
    shmds_region_close(r);
    return rc == 0 ? 0 : complain(argv[2], rc);
}

static int print_queue_stats(shmds_region *r, const char *name)
{
    shmds_queue *q;
    shmds_queue_stats st;
    int rc = shmds_queue_open(r, name, &q);
    if (rc != 0)
        return rc;
    if ((rc = shmds_queue_stats_get(q, &st)) == 0) {
        printf("queue %s (%s)\n", name,
               st.flags & SHMDS_QUEUE_SPSC        ? "spsc"
               : st.flags & SHMDS_QUEUE_ACK       ? "at-least-once"
               : st.flags & SHMDS_QUEUE_BLOCK     ? "broadcast, blocking"
               : st.flags & SHMDS_QUEUE_BROADCAST ? "broadcast"
                                                  : "mpmc");
        printf("  waiting      %" PRIu64 " messages\n", st.waiting);
        printf("  sent         %" PRIu64 "\n  received     %" PRIu64 "\n", st.sent,
               st.received);
        if (st.flags & SHMDS_QUEUE_ACK) {
            printf("  redelivered  %" PRIu64 "\n", st.redelivered);
            printf("  in flight    %" PRIu64 " (at most %" PRIu32 "; lease %" PRIu32 " ms)\n",
                   st.in_flight, st.max_in_flight, st.lease_ms);
            printf("  oldest lease %.3f s\n", (double)st.oldest_in_flight_ns / 1e9);
            printf("  requeued     %" PRIu64 "\n", st.requeued);
        }
        if (st.flags & SHMDS_QUEUE_BROADCAST)
            printf("  subscribers  %" PRIu32 "\n  missed       %" PRIu64 "\n", st.subscribers,
                   st.missed);
        printf("  recoveries   %" PRIu64 "\n", st.recoveries);
    }
    shmds_queue_close(q);
    return rc;
}

static void stat_json_head(const char *type, const char *name)
{
    fprintf(jout, "{\"type\": \"%s\", \"name\": ", type);
    json_cstr(jout, name);
}

static int print_table_stats(shmds_region *r, const char *name)
{
    shmds_table *t;
    shmds_table_stats st;
    int rc = shmds_table_open(r, name, &t);
    if (rc != 0)
        return rc;
    if ((rc = shmds_table_stat(t, &st)) == 0 && json) {
        stat_json_head("table", name);
        fprintf(jout,
                ", \"version\": %" PRIu64 ", \"entries\": %" PRIu64 ", \"slots\": %" PRIu64
                ", \"bytes\": %" PRIu64 ", \"data_bytes\": %" PRIu64 ", \"max_probe\": %" PRIu32
                ", \"published_ns\": %" PRIu64 ", \"publishes\": %" PRIu64
                ", \"builds\": %" PRIu32 ", \"reclaimed\": %" PRIu64 "}\n",
                st.version, st.count, st.slots, st.bytes, st.data_bytes, st.max_probe,
                st.published_ns, st.publishes, st.builds, st.reclaimed);
    } else if (rc == 0) {
        printf("table %s\n", name);
        if (st.version == 0) {
            printf("  version      none published yet\n");
        } else {
            time_t when = (time_t)(st.published_ns / 1000000000u);
            char at[64] = "?";
            struct tm tm;
            if (gmtime_r(&when, &tm) != NULL)
                strftime(at, sizeof at, "%Y-%m-%d %H:%M:%S UTC", &tm);
            printf("  version      %" PRIu64 " (published %s)\n", st.version, at);
            printf("  entries      %" PRIu64 " in %" PRIu64 " slots (%.0f%% full)\n", st.count,
                   st.slots, 100.0 * (double)st.count / (double)st.slots);
            printf("  bytes        %" PRIu64 " (%" PRIu64 " of keys and values)\n", st.bytes,
                   st.data_bytes);
            printf("  max probe    %" PRIu32 " slots\n", st.max_probe);
        }
        printf("  publishes    %" PRIu64 "\n", st.publishes);
        printf("  builds       %" PRIu32 " publishing now\n", st.builds);
        printf("  reclaimed    %" PRIu64 " dead builders' blocks\n", st.reclaimed);
    }
    shmds_table_close(t);
    return rc;
}

static int cmd_stat(int argc, char **argv)
{
    if (argc != 3)
        return -1;
    shmds_region *r;
    uint32_t type;
    int rc = open_object(argv[1], argv[2], &r, &type);
    if (r == NULL)
        return complain(argv[1], rc);
    if (rc == 0 && type == SHMDS_TYPE_LIST) {
        shmds_list *l;
        size_t n;
        if ((rc = shmds_list_open(r, argv[2], &l)) == 0) {
            if ((rc = shmds_list_len(l, &n)) == 0 && json) {
                stat_json_head("list", argv[2]);
                fprintf(jout, ", \"elements\": %zu}\n", n);
            } else if (rc == 0) {
                printf("list %s\n  elements     %zu\n", argv[2], n);
            }
            shmds_list_close(l);
        }
    } else if (rc == 0 && type == SHMDS_TYPE_MAP) {
        shmds_map *m;
        shmds_map_stats st;
        if ((rc = shmds_map_open(r, argv[2], &m)) == 0) {
            if ((rc = shmds_map_stats_get(m, &st)) == 0 && json) {
                stat_json_head("map", argv[2]);
                fprintf(jout,
                        ", \"entries\": %" PRIu64 ", \"buckets\": %" PRIu64
                        ", \"mem_used\": %" PRIu64 ", \"hits\": %" PRIu64 ", \"misses\": %" PRIu64
                        ", \"inserts\": %" PRIu64 ", \"deletes\": %" PRIu64
                        ", \"evictions\": %" PRIu64 ", \"expirations\": %" PRIu64
                        ", \"recoveries\": %" PRIu64 ", \"fills\": %" PRIu64
                        ", \"takeovers\": %" PRIu64 ", \"mem_limit\": %" PRIu64
                        ", \"default_ttl_ms\": %" PRIu64 ", \"evict\": %s, \"stripes\": %" PRIu32
                        "}\n",
                        st.entries, st.buckets, st.mem_used, st.hits, st.misses, st.inserts,
                        st.deletes, st.evictions, st.expirations, st.recoveries, st.fills,
                        st.takeovers, st.mem_limit, st.default_ttl_ms,
                        st.flags & SHMDS_MAP_EVICT ? "true" : "false", st.stripes);
            } else if (rc == 0) {
                uint64_t gets = st.hits + st.misses;
                printf("map %s\n", argv[2]);
                printf("  entries      %" PRIu64 " in %" PRIu64
                       " buckets (expired ones not reaped yet included)\n",
                       st.entries, st.buckets);
                printf("  memory       %" PRIu64 " bytes\n", st.mem_used);
                printf("  hits         %" PRIu64 " (%.1f%% of %" PRIu64 " gets)\n", st.hits,
                       gets ? 100.0 * (double)st.hits / (double)gets : 0.0, gets);
                printf("  misses       %" PRIu64 "\n", st.misses);
                printf("  inserts      %" PRIu64 "\n  deletes      %" PRIu64 "\n", st.inserts,
                       st.deletes);
                printf("  evictions    %" PRIu64 "\n  expirations  %" PRIu64 "\n",
                       st.evictions, st.expirations);
                printf("  recoveries   %" PRIu64 "\n", st.recoveries);
                printf("  fills        %" PRIu64 " (%" PRIu64 " taken over from a dead holder)\n",
                       st.fills, st.takeovers);
                if (st.mem_limit != 0)
                    printf("  budget       %" PRIu64 " bytes of entries\n", st.mem_limit);
                else
                    printf("  budget       none\n");
                if (st.default_ttl_ms != 0)
                    printf("  default ttl  %" PRIu64 " ms\n", st.default_ttl_ms);
                else
                    printf("  default ttl  none\n");
                printf("  flags        %s\n", st.flags & SHMDS_MAP_EVICT ? "evict" : "none");
                printf("  stripes      %" PRIu32 "\n", st.stripes);
            }
            shmds_map_close(m);
        }
    } else if (rc == 0 && type == SHMDS_TYPE_TABLE) {
        rc = print_table_stats(r, argv[2]);
    } else if (rc == 0 && type == SHMDS_TYPE_QUEUE) {
        uint64_t n;
        if (json) {
            if ((rc = queue_len(r, argv[2], &n)) == 0) {
                stat_json_head("queue", argv[2]);
                fprintf(jout, ", \"messages\": %" PRIu64 "}\n", n);
            }
        } else {
            rc = print_queue_stats(r, argv[2]);
        }
    } else if (rc == 0) {
        rc = SHMDS_ETYPE;
    }
    shmds_region_close(r);
    return rc == 0 ? 0 : complain(argv[2], rc);
}

/* ---- one key of a map: get, put, del, ttl ---- */

/* Open map `mapname` of region `name`, writable or read-only. */
static int open_map(const char *name, const char *mapname, int write, shmds_region **r,
                    shmds_map **m)
{
    int rc = attach(name, write, r);
    if (rc != 0) {
        *r = NULL;
        return complain(name, rc);
    }
    if ((rc = shmds_map_open(*r, mapname, m)) != 0) {
        shmds_region_close(*r);
        return complain(mapname, rc);
    }
    return 0;
}

static void close_map(shmds_region *r, shmds_map *m)
{
    shmds_map_close(m);
    shmds_region_close(r);
}

/* shmds get NAME TABLE KEY: the value, then the version it was read from. */
static int table_get(shmds_region *r, const char *name, const char *key)
{
    shmds_table *t;
    int rc = shmds_table_open(r, name, &t);
    if (rc != 0)
        return complain(name, rc);
    shmds_guard *g;
    const void *v;
    size_t vl;
    uint64_t version;
    if ((rc = shmds_guard_enter(r, &g)) == 0) {
        rc = shmds_table_get_ref(t, g, key, strlen(key), &v, &vl, &version);
        if (rc == 0) {
            quote_value(stdout, v, vl, 0);
            printf("\ntable version %" PRIu64 "\n", version);
        }
        shmds_guard_leave(g);
    }
    shmds_table_close(t);
    return rc == 0 ? 0 : complain(key, rc);
}

/* shmds get NAME MAP KEY: the value as dump shows it, then its version,
 * TTL and flags on a second line (a table's: its version). */
static int cmd_get(int argc, char **argv)
{
    if (argc != 4)
        return -1;
    shmds_region *r;
    shmds_map *m;
    uint32_t type;
    int trc = open_object(argv[1], argv[2], &r, &type);
    if (r == NULL)
        return complain(argv[1], trc);
    if (trc == 0 && type == SHMDS_TYPE_TABLE) {
        trc = table_get(r, argv[2], argv[3]);
        shmds_region_close(r);
        return trc;
    }
    shmds_region_close(r);
    if (open_map(argv[1], argv[2], 0, &r, &m) != 0)
        return 1;
    const char *key = argv[3];
    shmds_map_entry_info info;
    size_t vl = 0;
    int rc = shmds_map_get_ex(m, key, strlen(key), NULL, 0, &vl, 0, &info);
    if (rc == SHMDS_ERDONLY) {
        /* An evicting map's get marks the entry used: attach writable. */
        close_map(r, m);
        if (open_map(argv[1], argv[2], 1, &r, &m) != 0)
            return 1;
        rc = shmds_map_get_ex(m, key, strlen(key), NULL, 0, &vl, 0, &info);
    }
    void *buf = rc == 0 ? malloc(vl ? vl : 1) : NULL;
    if (rc == 0 && buf == NULL)
        rc = -ENOMEM;
    if (rc == 0)
        rc = shmds_map_get_ex(m, key, strlen(key), buf, vl, &vl, 0, &info);
    if (rc == 0) {
        quote_value(stdout, buf, vl, 0);
        printf("\nversion %" PRIu64 ", ttl %" PRId64 " ms, flags %" PRIu32 "\n", info.version,
               info.ttl_ms, info.user_flags);
    }
    free(buf);
    close_map(r, m);
    return rc == 0 ? 0 : complain(key, rc);
}

/* shmds put NAME MAP KEY VALUE [--int] [--ttl MS] [--nx|--xx] */
static int cmd_put(int argc, char **argv)
{
    if (argc < 5)
        return -1;
    shmds_put_opts o = {0};
    int as_int = 0;
    for (int i = 5; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--int") == 0) {
            as_int = 1;
        } else if (strcmp(argv[i], "--nx") == 0) {
            o.flags |= SHMDS_PUT_NX;
        } else if (strcmp(argv[i], "--xx") == 0) {
            o.flags |= SHMDS_PUT_XX;
        } else if (strcmp(argv[i], "--ttl") == 0 && i + 1 < argc) {
            errno = 0;
            o.ttl_ms = strtoull(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || argv[i][0] == '-')
                return -1;
        } else {
            return -1;
        }
    }
    const char *key = argv[3], *val = argv[4];
    int64_t n = 0;
    if (as_int) {
        char *end;
        errno = 0;
        n = strtoll(val, &end, 10);
        if (errno != 0 || *end != '\0' || *val == '\0')
            return -1;
    }
    shmds_region *r;
    shmds_map *m;
    if (open_map(argv[1], argv[2], 1, &r, &m) != 0)
        return 1;
    uint64_t ver = 0;
    int rc = as_int ? shmds_map_put_ex(m, key, strlen(key), &n, sizeof n, &o, &ver)
                    : shmds_map_put_ex(m, key, strlen(key), val, strlen(val), &o, &ver);
    if (rc >= 0)
        printf("version %" PRIu64 "\n", ver);
    close_map(r, m);
    return rc >= 0 ? 0 : complain(key, rc);
}

static int cmd_del(int argc, char **argv)
{
    if (argc != 4)
        return -1;
    shmds_region *r;
    shmds_map *m;
    if (open_map(argv[1], argv[2], 1, &r, &m) != 0)
        return 1;
    int rc = shmds_map_del(m, argv[3], strlen(argv[3]));
    close_map(r, m);
    return rc >= 0 ? 0 : complain(argv[3], rc);
}

/* shmds ttl NAME MAP KEY [MS]: print the time left (-1: none), or set it
 * (0: never expires). */
static int cmd_ttl(int argc, char **argv)
{
    if (argc != 4 && argc != 5)
        return -1;
    uint64_t ms = 0;
    if (argc == 5) {
        char *end;
        errno = 0;
        ms = strtoull(argv[4], &end, 10);
        if (errno != 0 || *end != '\0' || argv[4][0] == '-' || argv[4][0] == '\0')
            return -1;
    }
    shmds_region *r;
    shmds_map *m;
    if (open_map(argv[1], argv[2], argc == 5, &r, &m) != 0)
        return 1;
    const char *key = argv[3];
    int64_t left = 0;
    int rc = argc == 5 ? shmds_map_expire(m, key, strlen(key), ms)
                       : shmds_map_ttl(m, key, strlen(key), &left);
    if (rc == 0 && argc == 4)
        printf("%" PRId64 "\n", left);
    close_map(r, m);
    return rc >= 0 ? 0 : complain(key, rc);
}

/* ---- rm ---- */

static int cmd_rm(int argc, char **argv)
{
    if (argc < 2)
        return -1;
    int status = 0;
    if (json)
        fputs("[", jout);
    for (int i = 1; i < argc; i++) {
        int rc = shmds_region_unlink(argv[i]);
        if (json) { /* one verdict per name: the document is the result */
            fputs(i == 1 ? "\n  {\"name\": " : ",\n  {\"name\": ", jout);
            json_cstr(jout, argv[i]);
            if (rc == 0)
                fputs(", \"removed\": true}", jout);
            else
                fprintf(jout, ", \"removed\": false, \"error\": \"%s\"}", shmds_errname(rc));
        }
        if (rc != 0) {
            fprintf(stderr, "%s: %s: %s (%s)\n", prog, argv[i], shmds_strerror(rc),
                    shmds_errname(rc));
            status = 1;
        }
    }
    if (json)
        fputs("\n]\n", jout);
    return status;
}

/* SIZE: bytes, or with a suffix k, m, g (powers of 1024). */
static int parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || end == s || *s == '-')
        return -1;
    unsigned shift = *end == 'k' || *end == 'K' ? 10 : *end == 'm' || *end == 'M' ? 20
                   : *end == 'g' || *end == 'G' ? 30 : 0;
    if (shift != 0)
        end++;
    if (*end != '\0' || v > (UINT64_MAX >> shift))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

static int cmd_grow(int argc, char **argv)
{
    uint64_t want;
    if (argc != 3 || parse_size(argv[2], &want) != 0 || want > SIZE_MAX)
        return -1;
    shmds_region *r;
    int rc = attach(argv[1], true, &r);
    if (rc != 0)
        return complain(argv[1], rc);
    rc = shmds_region_grow(r, (size_t)want);
    shmds_region_info info;
    shmds_region_info_get(r, &info);
    shmds_region_close(r);
    if (rc == -ENOMEM) {
        fprintf(stderr, "%s: %s is above the region's maximum of %" PRIu64 " bytes\n", argv[1],
                argv[2], info.max_size);
        json_fail(argv[1], shmds_errname(rc), rc, "above the region's maximum size");
        return 1;
    }
    if (rc != 0)
        return complain(argv[1], rc);
    if (json) {
        fputs("{\"name\": ", jout);
        json_cstr(jout, argv[1]);
        fprintf(jout, ", \"size\": %" PRIu64 ", \"max_size\": %" PRIu64 "}\n", info.size,
                info.max_size);
        return 0;
    }
    char size[16], max[16];
    human_size(info.size, size, sizeof size);
    human_size(info.max_size, max, sizeof max);
    printf("%s: size %s (%" PRIu64 " bytes), maximum %s\n", argv[1], size, info.size, max);
    return 0;
}

/* ---- main ---- */

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *args;
    const char *help;
} commands[] = {
    {"ls", cmd_ls, "", "list the shmds regions in " SHM_DIR},
    {"info", cmd_info, "NAME", "header, locks and named objects of a region"},
    {"check", cmd_check, "NAME [--repair]", "verify a region; exit 0 when healthy, 1 when not"},
    {"dump", cmd_dump, "NAME OBJECT", "a list's elements, a map's or a table's entries"},
    {"stat", cmd_stat, "NAME OBJECT", "an object's statistics"},
    {"get", cmd_get, "NAME MAP KEY", "a key's value, version, TTL and flags (also of a table)"},
    {"put", cmd_put, "NAME MAP KEY VALUE [--int] [--ttl MS] [--nx|--xx]",
     "store a value (--int: an 8-byte counter)"},
    {"del", cmd_del, "NAME MAP KEY", "remove a key"},
    {"ttl", cmd_ttl, "NAME MAP KEY [MS]", "a key's time left in ms (-1: none), or set it (0: none)"},
    {"grow", cmd_grow, "NAME SIZE", "grow a region to SIZE bytes now (suffix k, m, g)"},
    {"rm", cmd_rm, "NAME...", "remove region names"},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static int usage(FILE *f)
{
    fprintf(f, "usage: %s [--any-owner] [--json] COMMAND [ARGS]\n\ncommands:\n", prog);
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-6s %-16s %s\n", commands[i].name, commands[i].args, commands[i].help);
    fprintf(f, "\nNAME is a region name with its leading '/', e.g. /myapp.\n"
               "\nSafety: every view attaches read-only and takes no lock (it never waits on\n"
               "a stuck holder, never repairs); `check --repair` attaches read-write to run\n"
               "pending repairs. Regions owned by another user are refused unless\n"
               "--any-owner is given: a region's bytes are whatever its writers put there.\n\n"
               "--json (anywhere on the line): one JSON document on standard output;\n"
               "  on failure it is {\"error\": {...}} (check and rm: their verdicts).\n"
               "Exit status: 0 success (check: healthy); 1 the operation failed\n"
               "  (check: not healthy; rm: some name not removed); 2 usage error.\n"
               "See shmds(1).\n");
    return 2;
}

/* An object truncated while this process reads it: SIGBUS on the first
 * access past its new end. The views hold no lock, so leaving the command
 * from the handler is safe. */
static sigjmp_buf bus_jump;

static void on_sigbus(int sig)
{
    (void)sig;
    siglongjmp(bus_jump, 1);
}

/* Run one command with SIGBUS turned into an error. */
static int run(const struct command *c, int argc, char **argv)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigbus;
    sigemptyset(&sa.sa_mask);
    if (sigsetjmp(bus_jump, 1) != 0) {
        fflush(stdout);
        const char *what = argc > 1 ? argv[1] : c->name;
        fprintf(stderr, "%s: %s: the region's object was truncated while being read\n", prog,
                what);
        json_fail(what, shmds_errname(SHMDS_ECORRUPT), SHMDS_ECORRUPT,
                  "the region's object was truncated while being read");
        return 1;
    }
    sigaction(SIGBUS, &sa, NULL);
    int rc = c->run(argc, argv);
    if (rc < 0) {
        fprintf(stderr, "usage: %s %s %s\n", prog, c->name, c->args);
        return 2;
    }
    return rc;
}

/* Run a command with --json: its document goes to memory and is printed
 * whole, or the error document is, so the output is always valid JSON. */
static int run_json(const struct command *c, int argc, char **argv)
{
    char *doc = NULL;
    size_t len = 0;
    jout = open_memstream(&doc, &len);
    if (jout == NULL)
        return complain("--json", -errno);
    int rc = run(c, argc, argv);
    fclose(jout);
    if (rc != 2)
        fputs(jerr[0] != '\0' ? jerr : doc, stdout);
    free(doc);
    return rc;
}

int main(int argc, char **argv)
{
    int n = 0;
    for (int i = 0; i < argc; i++) { /* --json anywhere: drop it, remember it */
        if (i > 0 && strcmp(argv[i], "--json") == 0)
            json = 1;
        else
            argv[n++] = argv[i];
    }
    argv[n] = NULL;
    argc = n;
    if (argc >= 2 && strcmp(argv[1], "--any-owner") == 0) {
        any_owner = true;
        argv[1] = argv[0];
        argc--;
        argv++;
    }
    if (argc < 2)
        return usage(stderr);
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        if (json)
            printf("{\"version\": \"%s\", \"format_version\": %d}\n", shmds_version_string(),
                   SHMDS_FORMAT_VERSION);
        else
            printf("shmds %s (region format %d)\n", shmds_version_string(), SHMDS_FORMAT_VERSION);
        return 0;
    }
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return json ? run_json(&commands[i], argc - 1, argv + 1)
                        : run(&commands[i], argc - 1, argv + 1);
    fprintf(stderr, "%s: unknown command '%s'\n", prog, argv[1]);
    return usage(stderr);
}
