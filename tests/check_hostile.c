/* Hostile region images: truncated, wrong sizes, bad header fields,
 * damaged directories, and links inside the heap bent out of bounds, onto
 * themselves and into cycles. Each image goes through the same path the
 * fuzzer uses (image.c: attach from memory, check, every read operation)
 * and, for the header cases, through a real shared-memory object and
 * shmds_region_open. Nothing may crash or hang; damage the library can see
 * must be reported as the documented error.
 *
 * `check_hostile --write-corpus DIR` writes every image into DIR instead of
 * testing: they are the fuzzer's seed corpus. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image.h"
#include "internal.h"
#include "testutil.h"

#define IMG_SIZE SHMDS_REGION_MIN_SIZE

/* ---- the healthy image every hostile one is made from ---- */

static unsigned char *base_img; /* IMG_SIZE bytes, 64-aligned */

/* Build a populated region in a real shm object, then copy its bytes. */
static void base_build(void)
{
    if (base_img != NULL)
        return;
    /* Not tu_name: this also runs outside Check (--write-corpus). */
    char name[64];
    snprintf(name, sizeof name, "/shmds-t-%ld-hostile-base", (long)getpid());
    shmds_region *r = NULL;
    if (shmds_region_create(name, IMG_SIZE, NULL, &r) != 0)
        abort();
    /* Two user roots pointing into the heap, and a heap with live and free
     * blocks of several sizes (free lists, boundary tags, a split tail). */
    /* A third in alpha's bucket: its chain has two blocks, the second
     * with a free entry. */
    char c0[16];
    tu_dir_collide("alpha", 0, c0);
    if (shmds_root_set(r, "alpha", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE) != 0 ||
        shmds_root_set(r, "beta", SHMDS_TYPE_USER + 1, SHMDS_HEADER_SIZE + 64) != 0 ||
        shmds_root_set(r, c0, SHMDS_TYPE_USER, SHMDS_HEADER_SIZE) != 0)
        abort();
    shmds_off_t b[12];
    for (unsigned i = 0; i < 12; i++)
        if (shmds_alloc(r, 24 + 40 * i, &b[i]) != 0)
            abort();
    for (unsigned i = 0; i < 12; i += 3)
        if (shmds_free(r, b[i]) != 0)
            abort();
    /* A list with a few elements (node links, lengths, payloads). */
    shmds_list *l;
    if (shmds_list_create(r, "gamma", &l) != 0)
        abort();
    for (unsigned i = 0; i < 4; i++)
        if (shmds_list_push_back(l, "element", 2 + i) != 0)
            abort();
    shmds_list_close(l);
    /* A map (one stripe: it fits) with a few entries, and a queue with
     * two messages in its ring. */
    shmds_map_opts mo = {.stripes = 1};
    shmds_map *m;
    if (shmds_map_create(r, "delta", &mo, &m) != 0)
        abort();
    for (unsigned i = 0; i < 3; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%u", i);
        if (shmds_map_put(m, k, 2, "value", 1 + i, 0, 0) != 0)
            abort();
    }
    shmds_map_close(m);
    shmds_queue *q;
    if (shmds_queue_create(r, "eps", 128, 32, 0, &q) != 0 || shmds_queue_send(q, "one", 3, 0) != 0 ||
        shmds_queue_send(q, "two", 3, 0) != 0)
        abort();
    shmds_queue_close(q);
    /* A published table of three pairs. */
    shmds_table_builder *tb;
    if (shmds_table_build(r, "zeta", 3, &tb) != 0 || shmds_table_add(tb, "k0", 2, "v0", 2) != 0 ||
        shmds_table_add(tb, "k1", 2, "value1", 6) != 0 || shmds_table_add(tb, "k2", 2, "", 0) != 0 ||
        shmds_table_publish(tb, NULL) != 0)
        abort();
    base_img = aligned_alloc(64, IMG_SIZE);
    if (base_img == NULL)
        abort();
    memcpy(base_img, shmds_region_base(r), IMG_SIZE);
    shmds_region_close(r);
    shmds_region_unlink(name);
}

static struct shmds__hdr *hdr_of(unsigned char *img)
{
    return (struct shmds__hdr *)img;
}

static void reseal(unsigned char *img)
{
    struct shmds__hdr *h = hdr_of(img);
    h->checksum = shmds__fnv1a(SHMDS__FNV_INIT, h, offsetof(struct shmds__hdr, checksum));
}

/* ---- the hand-made cases ----
 * Each makes an image from the base and says what open and check must
 * return (check_rc is only looked at when open succeeds; CHECK_ANY: the
 * image is legal or not, but it must not crash). */

#define CHECK_ANY 1

typedef struct hostile {
    const char *name;
    size_t len; /* bytes of the image handed over */
    void (*make)(unsigned char *img);
    int open_rc;
    int check_rc;
} hostile;

static void mk_nothing(unsigned char *img) { (void)img; }
static void mk_magic(unsigned char *img) { hdr_of(img)->magic ^= 1; }
static void mk_magic_swapped(unsigned char *img)
{
    hdr_of(img)->magic = __builtin_bswap64(SHMDS__MAGIC);
}
static void mk_format(unsigned char *img) { hdr_of(img)->format++; reseal(img); }
static void mk_abi(unsigned char *img) { hdr_of(img)->abi ^= 8; reseal(img); }
static void mk_checksum(unsigned char *img) { hdr_of(img)->created_ns++; }
static void mk_size_huge(unsigned char *img)
{
    hdr_of(img)->size = UINT64_MAX - 4095;
    hdr_of(img)->max_size = UINT64_MAX - 4095;
    reseal(img);
}
static void mk_size_small(unsigned char *img)
{
    hdr_of(img)->size = SHMDS_HEADER_SIZE;
    reseal(img);
}
static void mk_heap_off(unsigned char *img)
{
    hdr_of(img)->heap_off = 64;
    reseal(img);
}
static void mk_heap_size(unsigned char *img)
{
    hdr_of(img)->max_size = hdr_of(img)->size - 4096; /* below the size */
    reseal(img);
}
/* A grower died after recording its target (step 1 of a growth): the
 * next taker of the grow lock finishes it, where the region has a file to
 * grow (through shm; an image in memory has none). */
static void mk_grow_pending(unsigned char *img) { hdr_of(img)->grow_to = hdr_of(img)->size + 8192; }
static void mk_grow_to_max(unsigned char *img) { hdr_of(img)->grow_to = hdr_of(img)->max_size; }
static void mk_grow_to_odd(unsigned char *img) { hdr_of(img)->grow_to = hdr_of(img)->size + 100; }
/* A size published past the object's end. */
static void mk_cur_size_past_end(unsigned char *img)
{
    hdr_of(img)->cur_size = hdr_of(img)->size + 4096;
}
static void mk_hdr_size(unsigned char *img) { hdr_of(img)->hdr_size = 8192; reseal(img); }
static void mk_dir_buckets(unsigned char *img) { hdr_of(img)->dir_buckets = 1000; reseal(img); }
static void mk_timeout_zero(unsigned char *img)
{
    hdr_of(img)->lock_timeout_ms = 0;
    reseal(img);
}
static void mk_timeout_huge(unsigned char *img)
{
    hdr_of(img)->lock_timeout_ms = UINT32_MAX;
    reseal(img);
}
static struct shmds__root *alpha(unsigned char *img)
{
    struct shmds__root *e = tu_dir_entry(img, "alpha");
    if (e == NULL)
        abort();
    return e;
}
static void mk_root_off_out(unsigned char *img) { alpha(img)->off = IMG_SIZE; }
static void mk_root_off_huge(unsigned char *img) { alpha(img)->off = UINT64_MAX - 7; }
static void mk_root_off_header(unsigned char *img) { alpha(img)->off = 8; }
static void mk_root_off_unaligned(unsigned char *img) { alpha(img)->off = SHMDS_HEADER_SIZE + 3; }
static void mk_root_name_unterminated(unsigned char *img)
{
    memset(alpha(img)->name, 'x', sizeof alpha(img)->name);
}
static void mk_root_name_empty(unsigned char *img)
{
    memset(alpha(img)->name, 0, sizeof alpha(img)->name);
}
/* Alpha's name a second time, in the free entry of its own chain. */
static void mk_root_duplicate(unsigned char *img)
{
    struct shmds__root *e = tu_dir_free_entry(img, "alpha");
    if (e == NULL)
        abort();
    memcpy(e, alpha(img), sizeof *e);
}
/* A valid name in a bucket that is not its own. */
static void mk_root_wrong_bucket(unsigned char *img)
{
    memcpy(alpha(img)->name, "beta2", 6);
}
/* The free entry taken by a well-formed name of the bucket. */
static void mk_root_all_slots(unsigned char *img)
{
    struct shmds__root *e = tu_dir_free_entry(img, "alpha");
    if (e == NULL)
        abort();
    tu_dir_collide("alpha", 1, e->name);
    e->type = SHMDS_TYPE_USER;
    e->off = SHMDS_HEADER_SIZE + 8;
}
/* A writer's sequence left odd with the lock free: a stale image. Reads
 * must not wait out the lock bound. */
static void mk_dir_seq_odd(unsigned char *img) { hdr_of(img)->dir_seq |= 1; }
/* Garbage in the free entries and the reserved tail must not matter. */
static void mk_free_slot_garbage(unsigned char *img)
{
    struct shmds__root *e = tu_dir_free_entry(img, "alpha");
    if (e == NULL)
        abort();
    memset(e->name, 0xA5, sizeof e->name);
    e->owner_pid = UINT32_MAX;
    e->off = UINT64_MAX;
    memset(hdr_of(img)->reserved, 0x5A, sizeof hdr_of(img)->reserved);
}
/* The links of alpha's chain: the bucket head, then the first block's
 * next (to the second block). */
static uint64_t *alpha_head(unsigned char *img)
{
    return &hdr_of(img)->dir_heads[shmds__dir_bucket("alpha")];
}
static struct shmds__dir_blk *blk_at(unsigned char *img, uint64_t off)
{
    if (off < SHMDS_HEADER_SIZE || off + 16 > IMG_SIZE)
        abort();
    return (struct shmds__dir_blk *)(void *)(img + off);
}
/* The second block links back to the first: a cycle. */
static void mk_dir_chain_cycle(unsigned char *img)
{
    uint64_t b0 = *alpha_head(img), b1 = blk_at(img, b0)->next;
    blk_at(img, b1)->next = b0;
}
/* The first block links to itself. */
static void mk_dir_chain_self(unsigned char *img)
{
    uint64_t b0 = *alpha_head(img);
    blk_at(img, b0)->next = b0;
}
static void mk_dir_link_out(unsigned char *img) { *alpha_head(img) = IMG_SIZE + 4096; }
static void mk_dir_link_huge(unsigned char *img) { *alpha_head(img) = UINT64_MAX - 15; }
static void mk_dir_link_header(unsigned char *img) { *alpha_head(img) = 64; }
static void mk_dir_link_unaligned(unsigned char *img) { *alpha_head(img) += 8; }
/* A link into the heap's free space: no live block there. */
static void mk_dir_link_free(unsigned char *img)
{
    *alpha_head(img) = IMG_SIZE - 1024;
}
/* The second block's link to a block whose size overruns the image. */
static void mk_dir_link_tail(unsigned char *img)
{
    uint64_t b0 = *alpha_head(img);
    blk_at(img, blk_at(img, b0)->next)->next = IMG_SIZE - 64;
}
/* Counts that disagree with the chains. */
static void mk_dir_names_wrong(unsigned char *img) { hdr_of(img)->dir_names += 5; }
static void mk_dir_slots_wrong(unsigned char *img) { hdr_of(img)->dir_slots = 1; }

/* ---- maps and queues ----
 * Their layouts are private to map.c and queue.c; these offsets are the
 * format (both files assert them). */
#define MAP_SBITS 12   /* struct map_hdr: stripe bits (log2 of the stripe count) */
#define MAP_TAB_OLD 72 /* struct map_hdr: offset of the bucket table */
#define MAP_BITS_OLD 88
#define MAP_LINK_OFF ((UINT64_C(1) << 48) - 1) /* a bucket word's offset; above it, a filter */
#define MAP_TSEQ 64      /* table sequence word: odd while the table state changes */
#define MAP_RLOG 192     /* resize log: op (1 = START), new bits, new table, ... */
#define MAP_RLOG_EPOCH 216
#define Q_CAP 16  /* struct qhdr: ring bytes (covered by the checksum) */
#define Q_RING 40 /* offset of the ring */
#define Q_TAIL 128
#define Q_HEAD 192

static uint64_t *word_at(unsigned char *img, uint64_t off)
{
    if (off == 0 || off + 8 > IMG_SIZE)
        abort();
    return (uint64_t *)(void *)(img + off);
}

/* A structure's header: its directory entry holds the start of the
 * header's block, and the header is 64-byte aligned inside it. */
static uint64_t root_off(unsigned char *img, const char *name)
{
    struct shmds__root *e = tu_dir_entry(img, name);
    if (e == NULL)
        abort();
    return shmds__hdr_of(e->off);
}

/* The first non-empty bucket of the map's table. */
static uint64_t *map_bucket(unsigned char *img)
{
    uint64_t m = root_off(img, "delta"), tab = *word_at(img, m + MAP_TAB_OLD);
    uint32_t bits;
    memcpy(&bits, img + m + MAP_BITS_OLD, 4);
    for (uint64_t b = 0; b < (UINT64_C(1) << bits); b++)
        if (*word_at(img, tab + 8 * b) != 0)
            return word_at(img, tab + 8 * b);
    abort();
}

static void mk_map_chain_cycle(unsigned char *img)
{
    uint64_t e = *map_bucket(img) & MAP_LINK_OFF;
    *word_at(img, e) = e; /* the entry's next: itself */
}
/* Out of the region, behind a filter that lets every key in. */
static void mk_map_chain_out(unsigned char *img)
{
    *map_bucket(img) = (IMG_SIZE + 4096) | ~MAP_LINK_OFF;
}
static void mk_map_table_out(unsigned char *img)
{
    *word_at(img, root_off(img, "delta") + MAP_TAB_OLD) = IMG_SIZE - 64;
}
/* Found by the fuzzer: a stripe-bits word used as a shift count before it
 * was bounded (undefined behaviour). */
static void mk_map_sbits_huge(unsigned char *img)
{
    uint32_t sb = 1024;
    memcpy(img + root_off(img, "delta") + MAP_SBITS, &sb, sizeof sb);
}
/* Found by an adversarial pass (issue 19): a writer killed in the map's
 * first growth just after the table sequence word went from 0 to 1. A
 * fresh handle took it for the table state it had "already read" and its
 * lock-free get used an empty one (SIGSEGV). */
static void mk_map_tseq_odd(unsigned char *img)
{
    *word_at(img, root_off(img, "delta") + MAP_TSEQ) |= 1;
}
/* The same window with the resize log as the killed writer left it: START
 * logged, a new table in place (here: the old one's block). */
static void mk_map_first_growth_killed(unsigned char *img)
{
    uint64_t m = root_off(img, "delta");
    uint32_t bits;
    memcpy(&bits, img + m + MAP_BITS_OLD, 4);
    *word_at(img, m + MAP_TSEQ) = 1;
    uint32_t op_bits[2] = {1, bits + 1};
    memcpy(word_at(img, m + MAP_RLOG), op_bits, 8);
    *word_at(img, m + MAP_RLOG_EPOCH) = 1;
    *word_at(img, m + MAP_TAB_OLD + 8) = *word_at(img, m + MAP_TAB_OLD);
}
/* Every bucket points at one chain: a walk must not cost buckets x chain. */
static void mk_map_buckets_share_chain(unsigned char *img)
{
    uint64_t m = root_off(img, "delta"), tab = *word_at(img, m + MAP_TAB_OLD);
    uint64_t head = *map_bucket(img);
    uint32_t bits;
    memcpy(&bits, img + m + MAP_BITS_OLD, 4);
    for (uint64_t b = 0; b < (UINT64_C(1) << bits); b++)
        *word_at(img, tab + 8 * b) = head;
}
static void mk_queue_head_past_tail(unsigned char *img)
{
    *word_at(img, root_off(img, "eps") + Q_HEAD) = 3; /* index beyond the tail's 2 records */
}
static void mk_queue_index_out(unsigned char *img)
{
    *word_at(img, root_off(img, "eps") + Q_TAIL) |= 0xfffffff0u; /* index past 2 * ring */
}
static void mk_queue_count_wrong(unsigned char *img)
{
    *word_at(img, root_off(img, "eps") + Q_TAIL) += UINT64_C(5) << 32;
}
static void mk_queue_record_len(unsigned char *img)
{
    uint64_t q = root_off(img, "eps"), ring = *word_at(img, q + Q_RING);
    uint32_t huge = 0xfffffff0u;
    memcpy(img + ring, &huge, 4); /* the first record's length */
}
static void mk_queue_geometry(unsigned char *img)
{
    *word_at(img, root_off(img, "eps") + Q_CAP) += 1u << 20; /* checksum no longer matches */
}

/* The doorbell line: sleeper counts, then the two semaphores (glibc's
 * 64-bit sem_t: count and sleepers word, then the futex flags word). */
#define Q_SLEEPERS 256
#define Q_NOT_EMPTY 320
#define Q_NOT_FULL 352
#define SEM_PRIVATE 8
/* Issue 19: damaged doorbells made a receive abort in glibc (sem_post's
 * FUTEX_WAKE turned into another operation) or sleep for ever. Sleepers
 * are counted so that every receive and send rings. */
static void queue_sem_private(unsigned char *img, int32_t bad)
{
    uint64_t q = root_off(img, "eps");
    uint32_t one[2] = {1, 1};
    memcpy(img + q + Q_SLEEPERS, one, sizeof one);
    memcpy(img + q + Q_NOT_EMPTY + SEM_PRIVATE, &bad, sizeof bad);
    memcpy(img + q + Q_NOT_FULL + SEM_PRIVATE, &bad, sizeof bad);
    /* One sleeper in each, so that sem_post calls the futex. */
    *word_at(img, q + Q_NOT_EMPTY) = UINT64_C(1) << 32;
    *word_at(img, q + Q_NOT_FULL) = UINT64_C(1) << 32;
}
/* glibc's sem_post wakes with FUTEX_WAKE | FUTEX_PRIVATE_FLAG xor `private`:
 * 1 makes it FUTEX_WAIT_PRIVATE on a count of 1 (asleep for ever), 149 an
 * operation the kernel does not know (ENOSYS: glibc aborts). */
static void mk_queue_sem_private_wait(unsigned char *img) { queue_sem_private(img, 1); }
static void mk_queue_sem_private_abort(unsigned char *img) { queue_sem_private(img, 149); }
static void mk_queue_sem_count(unsigned char *img)
{
    uint64_t q = root_off(img, "eps");
    uint32_t one[2] = {1, 1};
    memcpy(img + q + Q_SLEEPERS, one, sizeof one);
    *word_at(img, q + Q_NOT_FULL) = UINT64_C(0xffffffff); /* count past SEM_VALUE_MAX */
}
static void mk_queue_lock_kind(unsigned char *img)
{
    int32_t bad = 0x12345;
    memcpy(img + root_off(img, "eps") + 64 + offsetof(pthread_mutex_t, __data.__kind), &bad,
           sizeof bad);
}
static void mk_dir_lock_kind(unsigned char *img)
{
    hdr_of(img)->dir_lock.mtx.__data.__kind = 0x12345;
}
/* Issue 19: a header's lock bound of INT32_MAX ms (24 days) is legal in
 * the format but clamped by every handle (SHMDS_LOCK_TIMEOUT_MAX_MS). */
/* Table "zeta" (table.c's layout: the header's root at 80, its build
 * records at 176, 32 bytes each {pid, -, start, block, base}; a version:
 * nslots at 8, the skew (u32) at 36, slots from 128, then after the skew
 * the records {klen, vlen, ...}). */
#define T_ROOT 80
#define T_BUILDS 176
static uint64_t table_version(unsigned char *img)
{
    return *word_at(img, root_off(img, "zeta") + T_ROOT);
}
static void mk_table_root_out(unsigned char *img)
{
    *word_at(img, root_off(img, "zeta") + T_ROOT) = IMG_SIZE + 4096;
}
static void mk_table_nslots_huge(unsigned char *img)
{
    *word_at(img, table_version(img) + 8) = UINT64_C(1) << 40;
}
static void mk_table_slots_ones(unsigned char *img)
{
    uint64_t v = table_version(img), n = *word_at(img, v + 8);
    for (uint64_t j = 0; j < n; j++)
        *word_at(img, v + 128 + 8 * j) = UINT64_MAX;
}
static uint64_t table_data(unsigned char *img)
{
    uint64_t v = table_version(img);
    uint32_t skew;
    memcpy(&skew, img + v + 36, 4);
    return v + 128 + 8 * *word_at(img, v + 8) + skew;
}
static void mk_table_record_len(unsigned char *img)
{
    memset(img + table_data(img), 0xff, 4);
}
static void mk_table_skew(unsigned char *img)
{
    uint32_t skew = 64;
    memcpy(img + table_version(img) + 36, &skew, 4);
}
static void mk_table_pad_long(unsigned char *img)
{
    /* The first record made a pad as long as a line. */
    uint32_t pad[2] = {0, 56};
    memcpy(img + table_data(img), pad, sizeof pad);
}
static void mk_table_dead_builder(unsigned char *img)
{
    /* A build record of a process that cannot exist, owning a "block"
     * that is not one. */
    uint64_t rec = root_off(img, "zeta") + T_BUILDS;
    uint32_t pid = 0x7ffffff0u;
    memcpy(img + rec, &pid, 4);
    *word_at(img, rec + 16) = SHMDS_HEADER_SIZE + 8;
}

static void mk_timeout_int32(unsigned char *img)
{
    hdr_of(img)->lock_timeout_ms = INT32_MAX;
    reseal(img);
}

static const hostile cases[] = {
    {"healthy", IMG_SIZE, mk_nothing, 0, 0},
    {"empty", 0, mk_nothing, SHMDS_ECORRUPT, 0},
    {"truncated_in_header", 100, mk_nothing, SHMDS_ECORRUPT, 0},
    {"header_only", SHMDS_HEADER_SIZE, mk_nothing, SHMDS_ECORRUPT, 0},
    {"truncated_heap", IMG_SIZE - 4096, mk_nothing, SHMDS_ECORRUPT, 0},
    {"bad_magic", IMG_SIZE, mk_magic, SHMDS_EFORMAT, 0},
    {"other_endian", IMG_SIZE, mk_magic_swapped, SHMDS_EABI, 0},
    {"other_format", IMG_SIZE, mk_format, SHMDS_EFORMAT, 0},
    {"other_abi", IMG_SIZE, mk_abi, SHMDS_EABI, 0},
    {"bad_checksum", IMG_SIZE, mk_checksum, SHMDS_ECORRUPT, 0},
    {"size_huge", IMG_SIZE, mk_size_huge, SHMDS_ECORRUPT, 0},
    {"size_small", IMG_SIZE, mk_size_small, SHMDS_ECORRUPT, 0},
    {"heap_in_header", IMG_SIZE, mk_heap_off, SHMDS_ECORRUPT, 0},
    {"heap_past_end", IMG_SIZE, mk_heap_size, SHMDS_ECORRUPT, 0},
    {"hdr_size", IMG_SIZE, mk_hdr_size, SHMDS_ECORRUPT, 0},
    {"grow_pending", IMG_SIZE, mk_grow_pending, 0, CHECK_ANY},
    {"grow_to_max", IMG_SIZE, mk_grow_to_max, 0, CHECK_ANY},
    {"grow_to_odd", IMG_SIZE, mk_grow_to_odd, 0, CHECK_ANY},
    {"cur_size_past_end", IMG_SIZE, mk_cur_size_past_end, SHMDS_ECORRUPT, 0},
    {"dir_buckets", IMG_SIZE, mk_dir_buckets, SHMDS_ECORRUPT, 0},
    {"lock_timeout_zero", IMG_SIZE, mk_timeout_zero, SHMDS_ECORRUPT, 0},
    {"lock_timeout_huge", IMG_SIZE, mk_timeout_huge, SHMDS_ECORRUPT, 0},
    {"lock_timeout_int32_max", IMG_SIZE, mk_timeout_int32, 0, 0},
    {"dir_lock_kind", IMG_SIZE, mk_dir_lock_kind, 0, SHMDS_ECORRUPT},
    {"queue_sem_private_wait", IMG_SIZE, mk_queue_sem_private_wait, 0, SHMDS_ECORRUPT},
    {"queue_sem_private_abort", IMG_SIZE, mk_queue_sem_private_abort, 0, SHMDS_ECORRUPT},
    {"queue_sem_count", IMG_SIZE, mk_queue_sem_count, 0, SHMDS_ECORRUPT},
    {"queue_lock_kind", IMG_SIZE, mk_queue_lock_kind, 0, SHMDS_ECORRUPT},
    {"root_off_past_end", IMG_SIZE, mk_root_off_out, 0, SHMDS_ECORRUPT},
    {"root_off_huge", IMG_SIZE, mk_root_off_huge, 0, SHMDS_ECORRUPT},
    {"root_off_in_header", IMG_SIZE, mk_root_off_header, 0, SHMDS_ECORRUPT},
    {"root_off_unaligned", IMG_SIZE, mk_root_off_unaligned, 0, SHMDS_ECORRUPT},
    {"root_name_unterminated", IMG_SIZE, mk_root_name_unterminated, 0, SHMDS_ECORRUPT},
    {"root_name_empty", IMG_SIZE, mk_root_name_empty, 0, SHMDS_ECORRUPT},
    {"root_duplicate", IMG_SIZE, mk_root_duplicate, 0, SHMDS_ECORRUPT},
    {"root_wrong_bucket", IMG_SIZE, mk_root_wrong_bucket, 0, SHMDS_ECORRUPT},
    {"root_all_slots", IMG_SIZE, mk_root_all_slots, 0, CHECK_ANY},
    {"dir_chain_cycle", IMG_SIZE, mk_dir_chain_cycle, 0, SHMDS_ECORRUPT},
    {"dir_chain_self", IMG_SIZE, mk_dir_chain_self, 0, SHMDS_ECORRUPT},
    {"dir_link_past_end", IMG_SIZE, mk_dir_link_out, 0, SHMDS_ECORRUPT},
    {"dir_link_huge", IMG_SIZE, mk_dir_link_huge, 0, SHMDS_ECORRUPT},
    {"dir_link_in_header", IMG_SIZE, mk_dir_link_header, 0, SHMDS_ECORRUPT},
    {"dir_link_unaligned", IMG_SIZE, mk_dir_link_unaligned, 0, SHMDS_ECORRUPT},
    {"dir_link_free_space", IMG_SIZE, mk_dir_link_free, 0, SHMDS_ECORRUPT},
    {"dir_link_overruns", IMG_SIZE, mk_dir_link_tail, 0, SHMDS_ECORRUPT},
    {"dir_names_wrong", IMG_SIZE, mk_dir_names_wrong, 0, SHMDS_ECORRUPT},
    {"dir_slots_wrong", IMG_SIZE, mk_dir_slots_wrong, 0, SHMDS_ECORRUPT},
    {"dir_seq_odd", IMG_SIZE, mk_dir_seq_odd, 0, CHECK_ANY},
    {"free_slot_garbage", IMG_SIZE, mk_free_slot_garbage, 0, 0},
    {"map_chain_cycle", IMG_SIZE, mk_map_chain_cycle, 0, SHMDS_ECORRUPT},
    {"map_chain_out", IMG_SIZE, mk_map_chain_out, 0, SHMDS_ECORRUPT},
    {"map_table_out", IMG_SIZE, mk_map_table_out, 0, SHMDS_ECORRUPT},
    {"map_sbits_huge", IMG_SIZE, mk_map_sbits_huge, 0, SHMDS_ECORRUPT},
    {"map_tseq_odd", IMG_SIZE, mk_map_tseq_odd, 0, CHECK_ANY},
    {"map_first_growth_killed", IMG_SIZE, mk_map_first_growth_killed, 0, CHECK_ANY},
    {"map_buckets_share_chain", IMG_SIZE, mk_map_buckets_share_chain, 0, SHMDS_ECORRUPT},
    {"queue_head_past_tail", IMG_SIZE, mk_queue_head_past_tail, 0, SHMDS_ECORRUPT},
    {"queue_index_out", IMG_SIZE, mk_queue_index_out, 0, SHMDS_ECORRUPT},
    {"queue_count_wrong", IMG_SIZE, mk_queue_count_wrong, 0, SHMDS_ECORRUPT},
    {"queue_record_len", IMG_SIZE, mk_queue_record_len, 0, SHMDS_ECORRUPT},
    {"queue_geometry", IMG_SIZE, mk_queue_geometry, 0, SHMDS_ECORRUPT},
    {"table_root_out", IMG_SIZE, mk_table_root_out, 0, SHMDS_ECORRUPT},
    {"table_nslots_huge", IMG_SIZE, mk_table_nslots_huge, 0, SHMDS_ECORRUPT},
    {"table_slots_ones", IMG_SIZE, mk_table_slots_ones, 0, SHMDS_ECORRUPT},
    {"table_record_len", IMG_SIZE, mk_table_record_len, 0, SHMDS_ECORRUPT},
    {"table_skew", IMG_SIZE, mk_table_skew, 0, SHMDS_ECORRUPT},
    {"table_pad_long", IMG_SIZE, mk_table_pad_long, 0, SHMDS_ECORRUPT},
    {"table_dead_builder", IMG_SIZE, mk_table_dead_builder, 0, SHMDS_ECORRUPT},
};
#define NCASES (sizeof cases / sizeof cases[0])

static unsigned char *case_image(const hostile *c)
{
    base_build();
    unsigned char *img = aligned_alloc(64, IMG_SIZE);
    ck_assert_ptr_nonnull(img);
    memcpy(img, base_img, IMG_SIZE);
    c->make(img);
    return img;
}

/* ---- generic link and size damage ----
 * Every non-zero 8-byte word of the heap is a candidate link or size (the
 * heap's boundary tags and free lists, and every structure as it lands,
 * without knowing their layouts). Each is bent seven ways: past the end,
 * onto itself, into the header, onto the previous candidate's value (a
 * cycle when the two are neighbours in a chain), zero, all ones, and 16
 * more (a size that overlaps the next block). */

enum {
    BEND_PAST_END,
    BEND_SELF,
    BEND_HEADER,
    BEND_BACK,
    BEND_ZERO,
    BEND_ONES,
    BEND_PLUS16,
    BEND_KINDS
};

static size_t link_words(const unsigned char *img, size_t *at, size_t max)
{
    size_t n = 0;
    for (size_t off = SHMDS_HEADER_SIZE; off + 8 <= IMG_SIZE && n < max; off += 8) {
        uint64_t v;
        memcpy(&v, img + off, 8);
        if (v != 0)
            at[n++] = off;
    }
    return n;
}

static void bend(unsigned char *img, const size_t *at, size_t i, int kind)
{
    uint64_t v;
    memcpy(&v, img + at[i], 8);
    switch (kind) {
    case BEND_PAST_END: v = IMG_SIZE + 8 * i; break;
    case BEND_SELF: v = at[i]; break;
    case BEND_HEADER: v = 64; break;
    case BEND_BACK: memcpy(&v, img + at[i > 0 ? i - 1 : 0], 8); v -= 8 * (i == 0); break;
    case BEND_ZERO: v = 0; break;
    case BEND_ONES: v = UINT64_MAX; break;
    default: v += 16; break;
    }
    memcpy(img + at[i], &v, 8);
}

#define MAX_LINKS 512

/* ---- tests ---- */

static void expect(const hostile *c, img_result res)
{
    ck_assert_msg(res.open_rc == c->open_rc, "%s: attach gave %s, expected %s", c->name,
                  shmds_errname(res.open_rc), shmds_errname(c->open_rc));
    if (res.open_rc == 0 && c->check_rc != CHECK_ANY)
        ck_assert_msg(res.check_rc == c->check_rc, "%s: check gave %s, expected %s", c->name,
                      shmds_errname(res.check_rc), shmds_errname(c->check_rc));
}

START_TEST(test_hostile_image_from_memory)
{
    const hostile *c = &cases[_i];
    unsigned char *img = case_image(c);
    expect(c, img_exercise(img, c->len));
    free(img);
}
END_TEST

/* The same bytes through a read-only attach (the `shmds` tool's views): it
 * takes no lock, so the locks' words cannot matter; it verifies less (no
 * locked walks), so a damaged image may look healthy, but it never crashes
 * or hangs, and answers health, damage or (a writer's sequence left odd)
 * -ETIMEDOUT after the lock bound. */
START_TEST(test_hostile_image_read_only)
{
    const hostile *c = &cases[_i];
    unsigned char *img = case_image(c);
    img_result res = img_exercise_readonly(img, c->len);
    ck_assert_msg(res.open_rc == c->open_rc, "%s: attach gave %s", c->name,
                  shmds_errname(res.open_rc));
    if (res.open_rc == 0)
        /* -ETIMEDOUT: a writer's sequence left odd (it waits the bound). */
        ck_assert_msg(res.check_rc == 0 || res.check_rc == SHMDS_ECORRUPT ||
                          res.check_rc == -ETIMEDOUT || res.check_rc == c->check_rc,
                      "%s: read-only check gave %s", c->name, shmds_errname(res.check_rc));
    free(img);
}
END_TEST

/* The same bytes in a real shared-memory object, through shmds_region_open. */
START_TEST(test_hostile_image_through_shm)
{
    const hostile *c = &cases[_i];
    unsigned char *img = case_image(c);
    const char *name = tu_name("hshm");
    int fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, img, c->len), (ssize_t)c->len);
    close(fd);
    shmds_region *r = NULL;
    int rc = shmds_region_open(name, 0, &r);
    if (c->len == 0)
        ck_assert_int_eq(rc, -ENOENT); /* an empty object no creator holds: abandoned */
    else
        ck_assert_msg(rc == c->open_rc, "%s: open gave %s", c->name, shmds_errname(rc));
    if (rc == 0) {
        int crc = shmds_region_check(r);
        if (c->check_rc != CHECK_ANY)
            ck_assert_msg(crc == c->check_rc, "%s: check gave %s", c->name, shmds_errname(crc));
        ck_assert_int_eq(shmds_region_close(r), 0);
    }
    shmds_region_unlink(name);
    free(img);
}
END_TEST

/* A stale odd directory sequence in a writable region is closed by the
 * next reader that takes the lock, instead of costing every lookup the
 * whole lock bound and then -ETIMEDOUT. */
START_TEST(test_hostile_stale_dir_seq_is_closed)
{
    base_build();
    unsigned char *img = aligned_alloc(64, IMG_SIZE);
    memcpy(img, base_img, IMG_SIZE);
    mk_dir_seq_odd(img);
    shmds_region *r = NULL;
    ck_assert_int_eq(shmds__region_attach_mem(img, IMG_SIZE, 0, &r), 0);
    uint32_t type;
    shmds_off_t off;
    ck_assert_int_eq(shmds_root_get(r, "alpha", &type, &off), 0);
    ck_assert_uint_eq(type, SHMDS_TYPE_USER);
    ck_assert_uint_eq(hdr_of(img)->dir_seq & 1, 0);
    ck_assert_int_eq(shmds_region_check(r), 0);
    ck_assert_int_eq(shmds_region_close(r), 0);
    free(img);
}
END_TEST

/* A region lock whose pthread kind word is garbage is damage in the
 * region: SHMDS_ECORRUPT, as the contracts say. Before the fix glibc gave
 * a bare -EINVAL for an unknown kind, and for a priority-protect or
 * priority-inheritance kind it asserted and aborted the process. */
static int garbage_kind(int i)
{
    shmds_mutex t;
    ck_assert_int_eq(shmds_mutex_init(&t), 0);
    int k = t.mtx.__data.__kind;
    pthread_mutex_destroy(&t.mtx);
    const int kinds[] = {IMG_SIZE + 8, k | 64 /* prio protect */, k | 32 /* prio inherit */};
    return kinds[i];
}

START_TEST(test_hostile_garbage_lock_is_corrupt)
{
    base_build();
    unsigned char *img = aligned_alloc(64, IMG_SIZE);
    memcpy(img, base_img, IMG_SIZE);
    hdr_of(img)->dir_lock.mtx.__data.__kind = garbage_kind(_i);
    shmds_region *r = NULL;
    ck_assert_int_eq(shmds__region_attach_mem(img, IMG_SIZE, 0, &r), 0);
    ck_assert_int_eq(shmds_root_set(r, "delta", SHMDS_TYPE_USER, SHMDS_HEADER_SIZE),
                     SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_root_del(r, "alpha"), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_region_close(r), 0);
    free(img);
}
END_TEST

START_TEST(test_hostile_lock_bound_is_clamped)
{
    base_build();
    unsigned char *img = aligned_alloc(64, IMG_SIZE);
    memcpy(img, base_img, IMG_SIZE);
    mk_timeout_int32(img);
    shmds_region *r = NULL;
    ck_assert_int_eq(shmds__region_attach_mem(img, IMG_SIZE, SHMDS_RDONLY, &r), 0);
    shmds_region_info info;
    ck_assert_int_eq(shmds_region_info_get(r, &info), 0);
    ck_assert_uint_eq(info.lock_timeout_ms, SHMDS_LOCK_TIMEOUT_MAX_MS);
    ck_assert_int_eq(shmds_region_close(r), 0);
    free(img);
}
END_TEST

START_TEST(test_hostile_bent_links)
{
    base_build();
    size_t at[MAX_LINKS];
    size_t n = link_words(base_img, at, MAX_LINKS);
    unsigned char *img = aligned_alloc(64, IMG_SIZE);
    ck_assert_ptr_nonnull(img);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < BEND_KINDS; k++) {
            memcpy(img, base_img, IMG_SIZE);
            bend(img, at, i, k);
            img_result res = img_exercise(img, IMG_SIZE);
            ck_assert_int_eq(res.open_rc, 0);
            /* A bent word inside a lock reads as a lock some live process
             * holds (-ETIMEDOUT after the bound) or as one fenced off. */
            ck_assert_msg(res.check_rc == 0 || res.check_rc == SHMDS_ECORRUPT ||
                              res.check_rc == -ETIMEDOUT ||
                              res.check_rc == SHMDS_ENOTRECOVERABLE,
                          "word at %zu bent %d: check gave %s", at[i], k,
                          shmds_errname(res.check_rc));
        }
    }
    free(img);
}
END_TEST

/* ---- the corpus ---- */

static int write_file(const char *dir, const char *name, const void *img, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || fwrite(img, 1, len, f) != len || fclose(f) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static int write_corpus(const char *dir)
{
    base_build();
    unsigned char *img = aligned_alloc(64, IMG_SIZE);
    int bad = 0;
    for (size_t i = 0; i < NCASES; i++) {
        memcpy(img, base_img, IMG_SIZE);
        cases[i].make(img);
        bad |= write_file(dir, cases[i].name, img, cases[i].len);
        /* Its twin the harness attaches through a file descriptor. */
        if (cases[i].len >= SHMDS_HEADER_SIZE) {
            char name[64];
            snprintf(name, sizeof name, "%s.fd", cases[i].name);
            img[SHMDS_HEADER_SIZE - 1] |= IMG_CTL_FD;
            bad |= write_file(dir, name, img, cases[i].len);
        }
    }
    size_t at[MAX_LINKS];
    size_t n = link_words(base_img, at, MAX_LINKS);
    for (size_t i = 0; i < n; i++) {
        for (int k = 0; k < BEND_KINDS; k++) {
            char name[64];
            memcpy(img, base_img, IMG_SIZE);
            bend(img, at, i, k);
            snprintf(name, sizeof name, "bent_%zu_%d", at[i], k);
            bad |= write_file(dir, name, img, IMG_SIZE);
        }
    }
    free(img);
    printf("%zu images in %s\n", NCASES + n * BEND_KINDS, dir);
    return bad;
}

static Suite *hostile_suite(void)
{
    Suite *s = suite_create("hostile");
    TCase *tc = tcase_create("limits");
    tcase_add_loop_test(tc, test_hostile_image_from_memory, 0, NCASES);
    tcase_add_loop_test(tc, test_hostile_image_through_shm, 0, NCASES);
    tcase_add_loop_test(tc, test_hostile_image_read_only, 0, NCASES);
    tcase_add_test(tc, test_hostile_stale_dir_seq_is_closed);
    tcase_add_loop_test(tc, test_hostile_garbage_lock_is_corrupt, 0, 3);
    tcase_add_test(tc, test_hostile_bent_links);
    tcase_add_test(tc, test_hostile_lock_bound_is_clamped);
    suite_add_tcase(s, tc);
    return s;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--write-corpus") == 0)
        return write_corpus(argv[2]);
    SRunner *sr = srunner_create(hostile_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
