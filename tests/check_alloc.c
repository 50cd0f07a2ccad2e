/* The offset heap: alloc/free/realloc, bad input, accounting, the heap
 * check, two processes at once, and processes SIGKILLed inside the
 * allocator (at random moments, and at every named fault point when the
 * library is built with --enable-fault-injection). */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define SZ (1024 * 1024)

static shmds_alloc_stats stats(shmds_region *r)
{
    shmds_alloc_stats st;
    int rc = shmds_alloc_stats_get(r, &st);
    ck_assert_msg(rc == 0, "stats: %s", shmds_errname(rc));
    ck_assert_uint_eq(st.used_bytes + st.free_bytes, st.heap_bytes);
    return st;
}

/* A small block freed by shmds_free may stay in the handle's cache (still
 * a used block of the heap); the statistics give the handle's cached
 * blocks back. Tests of the heap's own layout call this after such
 * frees. */
static void uncache(shmds_region *r)
{
    (void)stats(r);
}

static void heap_ok(shmds_region *r)
{
    int rc = shmds_region_check(r);
    ck_assert_msg(rc == 0, "region check: %s", shmds_errname(rc));
}

static shmds_off_t must_alloc(shmds_region *r, size_t size)
{
    shmds_off_t off = SHMDS_NULL;
    int rc = shmds_alloc(r, size, &off);
    ck_assert_msg(rc == 0, "alloc %zu: %s", size, shmds_errname(rc));
    return off;
}

#define ASZ (8 * SZ)

/* A region of ASZ bytes with `n` arenas: arena 0 and n - 1 carved from
 * it, as processes that allocate at once make them. */
static shmds_region *arena_region(const char *tag, unsigned n)
{
    shmds_region *r = tu_region(tag, ASZ);
    ck_assert_uint_eq(shmds_alloc_arena_count(r), 1);
    while (shmds_alloc_arena_count(r) < n)
        ck_assert_int_eq(shmds__alloc_arena_add(r), 0);
    return r;
}

/* The heap holds nothing: every arena is free but for arena 0's carriers
 * of the others, which split its free space into at most n pieces. */
static void heap_empty(shmds_region *r)
{
    unsigned n = shmds_alloc_arena_count(r);
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_eq(st.used_blocks, 0);
    ck_assert_uint_eq(st.used_bytes, 0);
    ck_assert_uint_ge(st.free_blocks, n);
    ck_assert_uint_le(st.free_blocks, 2 * n - 1);
    heap_ok(r);
}

/* The arena whose range holds the block at `off` (from the handle's
 * table: no lock taken; carved arenas lie inside arena 0). */
static unsigned arena_at(shmds_region *r, shmds_off_t off)
{
    unsigned n = shmds_alloc_arena_count(r);
    for (unsigned i = n; i-- > 0;)
        if (off >= r->arena[i].base && off < r->arena[i].end + 16)
            return i;
    ck_abort_msg("block %" PRIu64 " in no arena", off);
    return 0;
}

/* Fill / verify a block with bytes that depend on where it is and a key. */
static void fill(shmds_region *r, shmds_off_t off, size_t len, uint64_t key)
{
    unsigned char *p = shmds_ptr(r, off);
    for (size_t i = 0; i < len; i++)
        p[i] = (unsigned char)((off >> 4) * 131 + key * 7 + i);
}

static int intact(shmds_region *r, shmds_off_t off, size_t len, uint64_t key)
{
    const unsigned char *p = shmds_ptr(r, off);
    for (size_t i = 0; i < len; i++)
        if (p[i] != (unsigned char)((off >> 4) * 131 + key * 7 + i))
            return 0;
    return 1;
}

/* A copy of every arena's control block and blocks, to show that a refused
 * call changed nothing (an arena's lock and sequence word, at its start,
 * change with every call). */
static unsigned char *heap_copy(shmds_region *r)
{
    size_t len = r->heap_end - r->heap_off;
    unsigned char *c = malloc(len);
    ck_assert_ptr_nonnull(c);
    memcpy(c, r->base + r->heap_off, len);
    return c;
}

static void heap_same(shmds_region *r, unsigned char *copy)
{
    for (unsigned i = 0; i < r->narenas; i++) {
        const struct shmds__heap_geo *g = &r->arena[i];
        ck_assert_int_eq(memcmp(copy + (g->ctl - r->heap_off), r->base + g->ctl,
                                g->end + 16 - g->ctl),
                         0);
    }
    free(copy);
}

/* ---------------------------------------------------------------------------
 * core
 * ------------------------------------------------------------------------ */

START_TEST(test_alloc_unformatted_heap_is_all_free)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_eq(st.used_blocks, 0);
    ck_assert_uint_eq(st.free_blocks, 1);
    ck_assert_uint_eq(st.free_bytes, st.heap_bytes);
    ck_assert_uint_gt(st.heap_bytes, SZ - 4096 - 8192);
    heap_ok(r);
    /* The first allocation formats the heap; the stats agree afterwards. */
    shmds_off_t a = must_alloc(r, st.largest_free);
    ck_assert_uint_eq(shmds_usable_size(r, a), st.largest_free);
    ck_assert_uint_eq(stats(r).free_blocks, 0);
    ck_assert_int_eq(shmds_free(r, a), 0);
    shmds_alloc_stats st2 = stats(r);
    ck_assert_mem_eq(&st, &st2, sizeof st);
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

/* Sizes up to SIZE_MAX: -ENOMEM (never a wrapped small block), for a new
 * block and for growing one; the heap and the old block are unchanged. */
START_TEST(test_alloc_sizes_that_overflow_are_enomem)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t b, o = 0;
    ck_assert_int_eq(shmds_alloc(r, 40, &b), 0);
    memcpy(shmds_ptr(r, b), "keep", 5);
    shmds_alloc_stats before = stats(r);
    for (size_t i = 0; i < TU_HUGE_SIZES; i++) {
        size_t n = tu_huge_sizes[i];
        ck_assert_int_eq(shmds_alloc(r, n, &o), -ENOMEM);
        ck_assert_int_eq(shmds_realloc(r, b, n, &o), -ENOMEM);
        ck_assert_int_eq(shmds_realloc(r, SHMDS_NULL, n, &o), -ENOMEM);
        ck_assert_uint_eq(o, 0);
        shmds_alloc_stats now = stats(r);
        ck_assert_uint_eq(now.used_blocks, before.used_blocks);
        ck_assert_uint_eq(now.used_bytes, before.used_bytes);
        ck_assert_int_eq(shmds_region_check(r), 0);
        ck_assert_str_eq(shmds_ptr(r, b), "keep");
    }
    ck_assert_int_eq(shmds_free(r, b), 0);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_blocks_are_aligned_disjoint_and_kept)
{
    shmds_region *r = tu_region("al", SZ);
    enum { N = 300 };
    shmds_off_t off[N];
    size_t len[N];
    for (int i = 0; i < N; i++) {
        len[i] = 1 + (size_t)(i * 37) % 700;
        off[i] = must_alloc(r, len[i]);
        ck_assert_uint_eq(off[i] % 16, 0);
        ck_assert_uint_ge(shmds_usable_size(r, off[i]), len[i]);
        ck_assert_uint_lt(shmds_usable_size(r, off[i]), len[i] + 32);
        fill(r, off[i], shmds_usable_size(r, off[i]), (uint64_t)i);
    }
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_eq(st.used_blocks, N);
    heap_ok(r);
    for (int i = 0; i < N; i++)
        ck_assert(intact(r, off[i], shmds_usable_size(r, off[i]), (uint64_t)i));
    /* Free every other block, then the rest: coalescing leaves one block. */
    for (int i = 0; i < N; i += 2)
        ck_assert_int_eq(shmds_free(r, off[i]), 0);
    heap_ok(r);
    for (int i = 1; i < N; i += 2)
        ck_assert(intact(r, off[i], shmds_usable_size(r, off[i]), (uint64_t)i));
    for (int i = 1; i < N; i += 2)
        ck_assert_int_eq(shmds_free(r, off[i]), 0);
    st = stats(r);
    ck_assert_uint_eq(st.used_blocks, 0);
    ck_assert_uint_eq(st.used_bytes, 0);
    ck_assert_uint_eq(st.free_blocks, 1);
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_stats_accounting)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_alloc_stats st0 = stats(r);
    shmds_off_t a = must_alloc(r, 100); /* block of 128 */
    shmds_off_t b = must_alloc(r, 1);   /* block of 32 */
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_eq(st.used_blocks, 2);
    ck_assert_uint_eq(st.used_bytes, 128 + 32);
    ck_assert_uint_eq(st.free_blocks, 1);
    ck_assert_uint_eq(st.largest_free, st0.largest_free - 160);
    ck_assert_uint_eq(shmds_usable_size(r, a), 112);
    ck_assert_uint_eq(shmds_usable_size(r, b), 16);
    ck_assert_int_eq(shmds_free(r, a), 0);
    st = stats(r);
    ck_assert_uint_eq(st.used_blocks, 1);
    ck_assert_uint_eq(st.free_blocks, 2); /* a's hole and the tail */
    ck_assert_int_eq(shmds_free(r, b), 0);
    st = stats(r);
    ck_assert_mem_eq(&st, &st0, sizeof st);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_realloc_grows_in_place_when_neighbour_free)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t a = must_alloc(r, 100);
    shmds_off_t b = must_alloc(r, 400);
    shmds_off_t c = must_alloc(r, 16);
    fill(r, a, 100, 1);
    ck_assert_int_eq(shmds_free(r, b), 0);
    uncache(r);
    shmds_off_t out = SHMDS_NULL;
    ck_assert_int_eq(shmds_realloc(r, a, 300, &out), 0);
    ck_assert_uint_eq(out, a);
    ck_assert_uint_ge(shmds_usable_size(r, a), 300);
    ck_assert(intact(r, a, 100, 1));
    heap_ok(r);
    /* All the hole, to the byte. */
    ck_assert_int_eq(shmds_realloc(r, a, 112 + 416, &out), 0);
    ck_assert_uint_eq(out, a);
    ck_assert_uint_eq(stats(r).used_blocks, 2);
    ck_assert(intact(r, a, 100, 1));
    heap_ok(r);
    ck_assert_int_eq(shmds_free(r, c), 0);
    ck_assert_int_eq(shmds_free(r, a), 0);
    ck_assert_uint_eq(stats(r).free_blocks, 1);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_realloc_moves_when_neighbour_used)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t a = must_alloc(r, 200);
    shmds_off_t b = must_alloc(r, 16);
    fill(r, a, 200, 2);
    fill(r, b, 16, 3);
    shmds_off_t out = SHMDS_NULL;
    ck_assert_int_eq(shmds_realloc(r, a, 5000, &out), 0);
    ck_assert_uint_ne(out, a);
    ck_assert(intact(r, out, 200, 2) == 0); /* moved: the pattern is keyed by offset */
    ck_assert_int_eq(shmds_usable_size(r, a), 0); /* the old block is free */
    /* The bytes moved unchanged. */
    const unsigned char *p = shmds_ptr(r, out);
    for (size_t i = 0; i < 200; i++)
        ck_assert_uint_eq(p[i], (unsigned char)((a >> 4) * 131 + 2 * 7 + i));
    ck_assert(intact(r, b, 16, 3));
    ck_assert_uint_eq(stats(r).used_blocks, 2);
    heap_ok(r);
    ck_assert_int_eq(shmds_free(r, a), -EINVAL);
    ck_assert_int_eq(shmds_free(r, out), 0);
    ck_assert_int_eq(shmds_free(r, b), 0);
    ck_assert_uint_eq(stats(r).free_blocks, 1);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_realloc_shrinks_in_place)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t a = must_alloc(r, 1000);
    shmds_off_t b = must_alloc(r, 16);
    fill(r, a, 1000, 4);
    shmds_off_t out;
    ck_assert_int_eq(shmds_realloc(r, a, 200, &out), 0);
    ck_assert_uint_eq(out, a);
    ck_assert_uint_lt(shmds_usable_size(r, a), 240);
    ck_assert(intact(r, a, 200, 4));
    ck_assert_uint_eq(stats(r).free_blocks, 2); /* the freed tail and the heap's tail */
    heap_ok(r);
    /* A shrink by less than a block keeps the block as it is. */
    size_t u = shmds_usable_size(r, a);
    ck_assert_int_eq(shmds_realloc(r, a, u - 15, &out), 0);
    ck_assert_uint_eq(out, a);
    ck_assert_uint_eq(shmds_usable_size(r, a), u);
    /* SHMDS_NULL acts as alloc. */
    shmds_off_t c = SHMDS_NULL;
    ck_assert_int_eq(shmds_realloc(r, SHMDS_NULL, 64, &c), 0);
    ck_assert_uint_ge(shmds_usable_size(r, c), 64);
    ck_assert_int_eq(shmds_free(r, c), 0);
    ck_assert_int_eq(shmds_free(r, a), 0);
    ck_assert_int_eq(shmds_free(r, b), 0);
    ck_assert_uint_eq(stats(r).free_blocks, 1);
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

/* A table of slots inside the region, as a structure's intent log would be. */
START_TEST(test_alloc_into_and_free_from_write_the_slot)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t t = must_alloc(r, 8 * sizeof(shmds_off_t));
    shmds_off_t *slot = shmds_ptr(r, t);
    memset(slot, 0, 8 * sizeof *slot);
    ck_assert_int_eq(shmds__alloc_into(r, 50, &slot[3]), 0);
    ck_assert_uint_ne(slot[3], SHMDS_NULL);
    uint64_t usable = 0;
    ck_assert_int_eq(shmds__alloc_block_live(r, slot[3], &usable), 0);
    ck_assert_uint_ge(usable, 50);
    /* The slot must be empty on entry; on error it is unchanged. */
    shmds_off_t keep = slot[3];
    ck_assert_int_eq(shmds__alloc_into(r, 50, &slot[3]), -EINVAL);
    ck_assert_uint_eq(slot[3], keep);
    ck_assert_int_eq(shmds__alloc_into(r, 0, &slot[4]), -EINVAL);
    ck_assert_int_eq(shmds__alloc_into(r, SIZE_MAX, &slot[4]), -ENOMEM);
    ck_assert_uint_eq(slot[4], SHMDS_NULL);
    /* A slot outside the heap's blocks is refused. */
    shmds_off_t local = SHMDS_NULL;
    ck_assert_int_eq(shmds__alloc_into(r, 50, &local), -EINVAL);
    ck_assert_int_eq(shmds__alloc_into(r, 50, (shmds_off_t *)shmds_region_base(r)), -EINVAL);
    ck_assert_int_eq(shmds__alloc_into(r, 50, (shmds_off_t *)((char *)&slot[5] + 4)), -EINVAL);
    ck_assert_uint_eq(stats(r).used_blocks, 2);

    ck_assert_int_eq(shmds__free_from(r, &slot[3]), 0);
    ck_assert_uint_eq(slot[3], SHMDS_NULL);
    ck_assert_int_eq(shmds__alloc_block_live(r, keep, NULL), -EINVAL);
    ck_assert_int_eq(shmds__free_from(r, &slot[3]), 0); /* empty: nothing to do */
    slot[6] = keep;                                     /* a freed block */
    ck_assert_int_eq(shmds__free_from(r, &slot[6]), -EINVAL);
    ck_assert_uint_eq(slot[6], keep);
    ck_assert_int_eq(shmds__alloc_settle(r), 0);
    ck_assert_uint_eq(stats(r).used_blocks, 1);
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * limits
 * ------------------------------------------------------------------------ */

START_TEST(test_alloc_bad_free_leaves_heap_unchanged)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t a = must_alloc(r, 64);
    shmds_off_t b = must_alloc(r, 256);
    shmds_off_t c = must_alloc(r, 64);
    ck_assert_int_eq(shmds_free(r, b), 0);
    fill(r, a, 64, 9);
    const shmds_off_t bad[] = {
        1, 8, 16, 4096, /* inside the header, not the heap */
        r->heap_off, r->heap_off + 16, /* the control block */
        a + 16, a + 32, a + 8, /* inside a block, misaligned */
        b, /* already free */
        c + 64, /* past the last block: free space */
        r->heap_end - 16, r->heap_end, r->heap_end + 16, /* the end and beyond */
        UINT64_MAX - 15, UINT64_MAX,
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char *copy = heap_copy(r);
        int rc = shmds_free(r, bad[i]);
        ck_assert_msg(rc == -EINVAL, "free(%" PRIu64 "): %s", bad[i], shmds_errname(rc));
        heap_same(r, copy);
        ck_assert_uint_eq(shmds_usable_size(r, bad[i]), 0);
        shmds_off_t out = 7;
        ck_assert_int_eq(shmds_realloc(r, bad[i], 10, &out), -EINVAL);
        ck_assert_uint_eq(out, 7);
    }
    /* Data that looks like a header inside a block is not a block either. */
    shmds_off_t *p = shmds_ptr(r, a);
    p[1] = 48 | 2; /* size 48, the mark flag, tag 0 */
    unsigned char *copy = heap_copy(r);
    ck_assert_int_eq(shmds_free(r, a + 16), -EINVAL);
    heap_same(r, copy);
    /* Double free. */
    ck_assert_int_eq(shmds_free(r, c), 0);
    copy = heap_copy(r);
    ck_assert_int_eq(shmds_free(r, c), -EINVAL);
    heap_same(r, copy);
    ck_assert_int_eq(shmds_free(r, SHMDS_NULL), 0);
    ck_assert_uint_eq(stats(r).used_blocks, 1);
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_size_zero_and_huge_sizes)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t a = must_alloc(r, 32);
    fill(r, a, 32, 5);
    unsigned char *copy = heap_copy(r);
    shmds_off_t out = 7;
    ck_assert_int_eq(shmds_alloc(r, 0, &out), -EINVAL);
    const size_t huge[] = {SIZE_MAX, SIZE_MAX - 15, SIZE_MAX - 16, SIZE_MAX / 2 + 1,
                           (size_t)1 << 47, SZ, SZ - 4096};
    for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
        ck_assert_int_eq(shmds_alloc(r, huge[i], &out), -ENOMEM);
        ck_assert_int_eq(shmds_realloc(r, a, huge[i], &out), -ENOMEM);
    }
    ck_assert_int_eq(shmds_realloc(r, a, 0, &out), -EINVAL);
    ck_assert_uint_eq(out, 7);
    heap_same(r, copy);
    ck_assert(intact(r, a, 32, 5));
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_full_heap_is_enomem_and_unchanged)
{
    shmds_region *r = tu_region("al", 64 * 1024);
    enum { MAX = 4096 };
    static shmds_off_t off[MAX];
    int n = 0, rc;
    while ((rc = shmds_alloc(r, 48, &off[n])) == 0) {
        fill(r, off[n], 48, (uint64_t)n);
        ck_assert_int_lt(++n, MAX);
    }
    ck_assert_int_eq(rc, -ENOMEM);
    ck_assert_int_gt(n, 100);
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_lt(st.largest_free, 48);
    unsigned char *copy = heap_copy(r);
    shmds_off_t out = 7;
    ck_assert_int_eq(shmds_alloc(r, 48, &out), -ENOMEM);
    ck_assert_int_eq(shmds_realloc(r, off[0], 100, &out), -ENOMEM);
    ck_assert_uint_eq(out, 7);
    heap_same(r, copy);
    heap_ok(r);
    /* A hole is found again, and largest_free is exactly what fits. */
    ck_assert_int_eq(shmds_free(r, off[10]), 0);
    ck_assert_int_eq(shmds_free(r, off[11]), 0);
    st = stats(r);
    ck_assert_uint_ge(st.largest_free, 2 * 48);
    shmds_off_t big = must_alloc(r, st.largest_free);
    ck_assert_uint_eq(big, off[10]);
    ck_assert_int_eq(shmds_alloc(r, st.largest_free, &out), -ENOMEM);
    for (int i = 0; i < n; i++)
        if (i != 10 && i != 11)
            ck_assert(intact(r, off[i], 48, (uint64_t)i));
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_readonly_region_refuses_writes)
{
    const char *name = tu_name("al");
    shmds_region *r = NULL;
    ck_assert_int_eq(shmds_region_create(name, SZ, NULL, &r), 0);
    shmds_region *ro = NULL;
    ck_assert_int_eq(shmds_region_open(name, SHMDS_RDONLY, &ro), 0);
    /* Before the heap is formatted, and after. */
    ck_assert_uint_eq(stats(ro).used_blocks, 0);
    ck_assert_int_eq(shmds_alloc_check(ro), 0);
    shmds_off_t a = must_alloc(r, 64);
    shmds_off_t out = 7;
    ck_assert_int_eq(shmds_alloc(ro, 16, &out), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_free(ro, a), SHMDS_ERDONLY);
    ck_assert_int_eq(shmds_realloc(ro, a, 100, &out), SHMDS_ERDONLY);
    ck_assert_uint_eq(out, 7);
    ck_assert_uint_eq(shmds_usable_size(ro, a), 48 + 16);
    shmds_alloc_stats st = stats(ro);
    ck_assert_uint_eq(st.used_blocks, 1);
    ck_assert_int_eq(shmds_alloc_check(ro), 0);
    ck_assert_int_eq(shmds_region_check(ro), 0);
    ck_assert_int_eq(shmds_region_close(ro), 0);
    shmds_region_close(r);
}
END_TEST

START_TEST(test_alloc_check_finds_damage)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t a = must_alloc(r, 64);
    shmds_off_t b = must_alloc(r, 64);
    must_alloc(r, 64);
    ck_assert_int_eq(shmds_free(r, b), 0);
    uncache(r);
    heap_ok(r);
    /* A write past the end of `a` overwrites b's boundary tag. */
    uint64_t *tag = shmds_ptr(r, a + 80);
    uint64_t saved = *tag;
    *tag = 12345;
    ck_assert_int_eq(shmds_region_check(r), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_alloc_check(r), SHMDS_ECORRUPT);
    *tag = saved;
    heap_ok(r);
    /* A block's size word. */
    uint64_t *word = shmds_ptr(r, a - 8);
    saved = *word;
    *word += 16;
    ck_assert_int_eq(shmds_alloc_check(r), SHMDS_ECORRUPT);
    ck_assert_int_eq(shmds_free(r, a), -EINVAL); /* no longer a genuine header */
    *word = saved;
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

/* A damaged free list is rebuilt from the physical walk, the fallback. */
START_TEST(test_alloc_damaged_free_list_is_rebuilt)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t a = must_alloc(r, 64);
    shmds_off_t b = must_alloc(r, 64);
    must_alloc(r, 64);
    ck_assert_int_eq(shmds_free(r, b), 0);
    uncache(r);
    fill(r, a, 64, 6);
    uint64_t *link = shmds_ptr(r, b); /* b's next-free link */
    link[1] = 999999;                 /* its prev link, pointing nowhere */
    link[0] = a - 16;                 /* its next link, at a used block */
    ck_assert_int_eq(shmds_alloc_check(r), SHMDS_ECORRUPT);
    shmds_off_t c = must_alloc(r, 64); /* takes b's hole after the rebuild */
    ck_assert_uint_eq(c, b);
    ck_assert(intact(r, a, 64, 6));
    heap_ok(r);
    ck_assert_int_eq(shmds_free(r, c), 0);
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

/* A heap starts as one arena spanning it; arenas carved from arena 0 lie
 * inside it, apart, up to the table's size; the totals are the arenas'
 * sums without the carriers; a block that cannot grow in its full arena
 * moves to another. */
START_TEST(test_alloc_arenas_are_carved_from_arena_0)
{
    const char *name = tu_name("aa");
    shmds_region *r;
    ck_assert_int_eq(shmds_region_create(name, ASZ, NULL, &r), 0);
    ck_assert_uint_eq(shmds_alloc_arena_count(r), 1);
    shmds_alloc_stats st0 = stats(r);
    ck_assert_uint_gt(st0.largest_free, ASZ - 16384);
    while (shmds__alloc_arena_add(r) == 0)
        ;
    unsigned n = shmds_alloc_arena_count(r);
    ck_assert_uint_eq(n, SHMDS__ARENAS_MAX);
    ck_assert_int_eq(shmds__alloc_arena_add(r), -ENOMEM);
    shmds_alloc_arena_info a0, ai, prev;
    ck_assert_int_eq(shmds_alloc_arena_info_get(r, 0, &a0), 0);
    uint64_t heap = a0.stats.heap_bytes, small_max = 0;
    for (unsigned i = 1; i < n; i++) {
        ck_assert_int_eq(shmds_alloc_arena_info_get(r, i, &ai), 0);
        ck_assert_uint_gt(ai.offset, a0.offset);
        ck_assert_uint_le(ai.offset + ai.size, a0.offset + a0.size);
        if (i > 1)
            ck_assert_uint_ge(ai.offset, prev.offset + prev.size);
        ck_assert_uint_eq(ai.stats.used_blocks, 0);
        ck_assert_uint_eq(ai.stats.free_blocks, 1);
        ck_assert_int_eq(ai.lock.owner_pid, 0);
        heap += ai.stats.heap_bytes;
        heap -= ai.size + 64; /* its carrier, at most 64 bytes before it */
        if (ai.stats.largest_free > small_max)
            small_max = ai.stats.largest_free;
        prev = ai;
    }
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_le(st.heap_bytes - heap, 64 * (n - 1));
    ck_assert_uint_eq(st.used_blocks, 0);
    ck_assert_uint_eq(st.free_blocks, n);
    ck_assert_int_eq(shmds_alloc_arena_info_get(r, n, &ai), -EINVAL);
    heap_ok(r);
    /* The carriers are not the caller's to free. */
    for (unsigned i = 1; i < n; i++)
        ck_assert_int_eq(shmds_free(r, r->arena[i].carrier), -EINVAL);
    /* A block that cannot grow in its full small arena moves to another. */
    r->arena_hint = 1;
    shmds_off_t b = must_alloc(r, 1000), out;
    ck_assert_uint_eq(arena_at(r, b), 1);
    fill(r, b, 1000, 9);
    unsigned char before[1000];
    memcpy(before, shmds_ptr(r, b), sizeof before);
    ck_assert_int_eq(shmds_realloc(r, b, small_max + 4096, &out), 0);
    ck_assert_uint_eq(arena_at(r, out), 0);
    ck_assert_mem_eq(shmds_ptr(r, out), before, sizeof before);
    ck_assert_uint_eq(stats(r).used_blocks, 1);
    ck_assert_int_eq(shmds_free(r, out), 0);
    heap_empty(r);
    /* Another handle sees the same table. */
    shmds_region *r2;
    ck_assert_int_eq(shmds_region_open(name, 0, &r2), 0);
    ck_assert_int_eq(shmds_alloc_check(r2), 0);
    ck_assert_uint_eq(shmds_alloc_arena_count(r2), n);
    shmds_region_close(r2);
    shmds_region_close(r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * multiprocess: two processes allocate, resize and free at once
 * ------------------------------------------------------------------------ */

struct mp_arg {
    shmds_region *r;
    unsigned seed;
    tu_chan *chan;
};

enum { MP_LIVE = 200, MP_OPS = 20000 };

struct mp_block {
    shmds_off_t off;
    uint32_t len;
    uint32_t key;
};

static int mp_worker(void *p)
{
    struct mp_arg *a = p;
    shmds_region *r = a->r;
    unsigned s = a->seed;
    struct mp_block live[MP_LIVE];
    memset(live, 0, sizeof live);
    for (int i = 0; i < MP_OPS; i++) {
        int k = rand_r(&s) % MP_LIVE;
        struct mp_block *m = &live[k];
        uint32_t len = 1 + (uint32_t)(rand_r(&s) % 600);
        int op = rand_r(&s) % 3;
        if (m->off != SHMDS_NULL && !intact(r, m->off, m->len, m->key))
            return 10;
        if (m->off == SHMDS_NULL) {
            if (shmds_alloc(r, len, &m->off) != 0)
                return 11;
        } else if (op == 0) {
            if (shmds_free(r, m->off) != 0)
                return 12;
            m->off = SHMDS_NULL;
            continue;
        } else {
            shmds_off_t out;
            if (shmds_realloc(r, m->off, len, &out) != 0)
                return 13;
            /* The kept prefix moved unchanged (keyed by the old offset). */
            const unsigned char *q = shmds_ptr(r, out);
            uint32_t keep = len < m->len ? len : m->len;
            for (uint32_t j = 0; j < keep; j++)
                if (q[j] != (unsigned char)((m->off >> 4) * 131 + m->key * 7 + j))
                    return 14;
            m->off = out;
        }
        m->len = len;
        m->key = (uint32_t)i;
        fill(r, m->off, len, m->key);
    }
    for (int k = 0; k < MP_LIVE; k++)
        if (live[k].off != SHMDS_NULL && !intact(r, live[k].off, live[k].len, live[k].key))
            return 15;
    tu_send(a->chan, live, sizeof live);
    return 0;
}

START_TEST(test_alloc_two_processes_at_once)
{
    shmds_region *r = tu_region("al", 4 * SZ);
    tu_chan ch[2];
    struct mp_arg arg[2];
    pid_t pid[2];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 2; i++) {
            tu_chan_open(&ch[i]);
            arg[i] = (struct mp_arg){r, (unsigned)(round * 2 + i + 1), &ch[i]};
            pid[i] = tu_fork(mp_worker, &arg[i]);
        }
        struct mp_block got[2][MP_LIVE];
        for (int i = 0; i < 2; i++) {
            ck_assert_int_eq(tu_recv(&ch[i], got[i], sizeof got[i]), 1);
            int st = tu_wait(pid[i], 60000);
            ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: status %d", i, st);
            tu_chan_close(&ch[i]);
        }
        /* Phase end: the heap is sound and holds exactly the live blocks. */
        heap_ok(r);
        uint64_t n = 0;
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < MP_LIVE; k++)
                if (got[i][k].off != SHMDS_NULL) {
                    n++;
                    ck_assert(intact(r, got[i][k].off, got[i][k].len, got[i][k].key));
                }
        ck_assert_uint_eq(stats(r).used_blocks, n);
        for (int i = 0; i < 2; i++)
            for (int k = 0; k < MP_LIVE; k++)
                if (got[i][k].off != SHMDS_NULL)
                    ck_assert_int_eq(shmds_free(r, got[i][k].off), 0);
        heap_empty(r);
    }
    shmds_region_close(r);
}
END_TEST

/* Four processes at once, each starting in its own arena: every block
 * keeps its fill pattern, and the accounting is exact afterwards. */
START_TEST(test_alloc_four_processes_in_different_arenas)
{
    shmds_region *r = arena_region("a4", 4);
    unsigned n = shmds_alloc_arena_count(r);
    enum { P = 4 };
    tu_chan ch[P];
    struct mp_arg arg[P];
    pid_t pid[P];
    for (int i = 0; i < P; i++) {
        tu_chan_open(&ch[i]);
        arg[i] = (struct mp_arg){r, (unsigned)(i + 11), &ch[i]};
        r->arena_hint = (uint32_t)((unsigned)i % n); /* the child's first arena */
        pid[i] = tu_fork(mp_worker, &arg[i]);
    }
    static struct mp_block got[P][MP_LIVE];
    uint64_t live = 0, in_arena[SHMDS__ARENAS_MAX] = {0};
    for (int i = 0; i < P; i++) {
        ck_assert_int_eq(tu_recv(&ch[i], got[i], sizeof got[i]), 1);
        int st = tu_wait(pid[i], 60000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker %d: status %d", i, st);
        tu_chan_close(&ch[i]);
    }
    heap_ok(r);
    n = shmds_alloc_arena_count(r); /* workers that met busy arenas made more */
    for (int i = 0; i < P; i++)
        for (int k = 0; k < MP_LIVE; k++)
            if (got[i][k].off != SHMDS_NULL) {
                live++;
                in_arena[arena_at(r, got[i][k].off)]++;
                ck_assert(intact(r, got[i][k].off, got[i][k].len, got[i][k].key));
            }
    ck_assert_uint_eq(stats(r).used_blocks, live);
    uint64_t sum = 0;
    for (unsigned i = 0; i < n; i++) {
        shmds_alloc_arena_info ai;
        ck_assert_int_eq(shmds_alloc_arena_info_get(r, i, &ai), 0);
        ck_assert_uint_eq(ai.stats.used_blocks, in_arena[i] + (i == 0 ? n - 1 : 0));
        sum += ai.stats.used_blocks;
    }
    ck_assert_uint_eq(sum, live + n - 1);
    for (int i = 0; i < P; i++)
        for (int k = 0; k < MP_LIVE; k++)
            if (got[i][k].off != SHMDS_NULL)
                ck_assert_int_eq(shmds_free(r, got[i][k].off), 0);
    heap_empty(r);
    shmds_region_close(r);
}
END_TEST

/* Blocks cross between processes: what one allocated, another frees (into
 * the arena that holds it), both ways, with their contents intact. */
struct cross_arg {
    shmds_region *r;
    shmds_off_t table; /* CROSS_N offsets the parent allocated */
    tu_chan *chan;
};

enum { CROSS_N = 64 };

static int cross_worker(void *p)
{
    struct cross_arg *a = p;
    shmds_region *r = a->r;
    const shmds_off_t *theirs = shmds_ptr(r, a->table);
    for (int i = 0; i < CROSS_N; i++) {
        if (!intact(r, theirs[i], 100 + (size_t)i, (uint64_t)i))
            return 60;
        if (shmds_free(r, theirs[i]) != 0)
            return 61;
    }
    shmds_off_t mine[CROSS_N];
    r->arena_hint = 2;
    for (int i = 0; i < CROSS_N; i++) {
        if (shmds_alloc(r, 200 + (size_t)i, &mine[i]) != 0)
            return 62;
        fill(r, mine[i], 200 + (size_t)i, (uint64_t)i + 1000);
    }
    tu_send(a->chan, mine, sizeof mine);
    return 0;
}

START_TEST(test_alloc_block_freed_by_another_process)
{
    shmds_region *r = arena_region("ax", 4);
    unsigned n = shmds_alloc_arena_count(r);
    shmds_off_t table = must_alloc(r, CROSS_N * sizeof(shmds_off_t));
    shmds_off_t *blk = shmds_ptr(r, table);
    for (int i = 0; i < CROSS_N; i++) {
        r->arena_hint = (uint32_t)((unsigned)i % n); /* spread them over every arena */
        blk[i] = must_alloc(r, 100 + (size_t)i);
        ck_assert_uint_eq(arena_at(r, blk[i]), (unsigned)i % n);
        fill(r, blk[i], 100 + (size_t)i, (uint64_t)i);
    }
    tu_chan ch;
    tu_chan_open(&ch);
    struct cross_arg arg = {r, table, &ch};
    pid_t pid = tu_fork(cross_worker, &arg);
    shmds_off_t theirs[CROSS_N];
    ck_assert_int_eq(tu_recv(&ch, theirs, sizeof theirs), 1);
    int st = tu_wait(pid, 60000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "worker: status %d", st);
    tu_chan_close(&ch);
    ck_assert_uint_eq(stats(r).used_blocks, 1 + CROSS_N);
    heap_ok(r);
    for (int i = 0; i < CROSS_N; i++) {
        ck_assert(intact(r, theirs[i], 200 + (size_t)i, (uint64_t)i + 1000));
        ck_assert_int_eq(shmds_free(r, theirs[i]), 0);
        ck_assert_int_eq(shmds_free(r, theirs[i]), -EINVAL); /* not twice */
    }
    ck_assert_int_eq(shmds_free(r, table), 0);
    heap_empty(r);
    shmds_region_close(r);
}
END_TEST

/* A process holding an arena's lock (as a large allocation does while it
 * zeroes its block) holds up no allocation: they take other arenas,
 * without waiting for it, small and large alike. */
struct hold_arg {
    shmds_region *r;
    unsigned arena;
    tu_chan *held;    /* child -> parent: the lock is held */
    tu_chan *release; /* parent -> child: let it go */
};

static int hold_worker(void *p)
{
    struct hold_arg *a = p;
    shmds_mutex *m = (shmds_mutex *)(void *)(a->r->base + a->r->arena[a->arena].base);
    if (shmds_mutex_lock(m, -1, NULL, NULL) != 0)
        return 70;
    char c = 1;
    tu_send(a->held, &c, 1);
    if (tu_recv(a->release, &c, 1) != 1)
        return 71;
    return shmds_mutex_unlock(m) == 0 ? 0 : 72;
}

START_TEST(test_alloc_busy_arena_is_passed_over)
{
    shmds_region *r = arena_region("ah", 3);
    for (unsigned busy = 0; busy < 2; busy++) {
        tu_chan held, release;
        tu_chan_open(&held);
        tu_chan_open(&release);
        struct hold_arg arg = {r, busy, &held, &release};
        pid_t pid = tu_fork(hold_worker, &arg);
        char c;
        ck_assert_int_eq(tu_recv(&held, &c, 1), 1);
        r->arena_hint = busy;
        shmds_off_t small[16], large;
        for (int i = 0; i < 16; i++) {
            small[i] = must_alloc(r, 64);
            ck_assert_uint_ne(arena_at(r, small[i]), busy);
        }
        large = must_alloc(r, 256 * 1024); /* starts at arena 0 */
        ck_assert_uint_ne(arena_at(r, large), busy);
        ck_assert_uint_ne(r->arena_hint, busy);
        for (int i = 0; i < 16; i++)
            ck_assert_int_eq(shmds_free(r, small[i]), 0);
        ck_assert_int_eq(shmds_free(r, large), 0);
        tu_send(&release, &c, 1);
        int st = tu_wait(pid, 30000);
        ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "holder: status %d", st);
        tu_chan_close(&held);
        tu_chan_close(&release);
    }
    heap_empty(r);
    shmds_region_close(r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * crash: a child allocates into and frees from slots of a table in the
 * region and is SIGKILLed at random moments
 * ------------------------------------------------------------------------ */

enum { SLOTS = 64 };

struct crash_msg {
    uint32_t kind; /* 'I' intent (before the call), 'D' done (after it returned) */
    uint32_t slot;
    uint64_t off;  /* 'D': the slot's value after the call */
    uint64_t len;
};

struct crash_arg {
    shmds_region *r;
    shmds_off_t table;
    unsigned seed;
    tu_chan *chan;
};

/* Each live block holds its requested length in its first 8 bytes and a
 * pattern keyed by its slot after that. */
static void crash_fill(shmds_region *r, shmds_off_t off, uint64_t len, uint32_t slot)
{
    memcpy(shmds_ptr(r, off), &len, 8);
    fill(r, off + 8, len - 8, slot);
}

static int crash_intact(shmds_region *r, shmds_off_t off, uint32_t slot)
{
    uint64_t len;
    memcpy(&len, shmds_ptr(r, off), 8);
    return len >= 16 && len <= shmds_usable_size(r, off) && intact(r, off + 8, len - 8, slot);
}

static int crash_worker(void *p)
{
    struct crash_arg *a = p;
    shmds_off_t *slot = shmds_ptr(a->r, a->table);
    unsigned s = a->seed;
    for (;;) {
        struct crash_msg m = {'I', (uint32_t)(rand_r(&s) % SLOTS), 0, 0};
        m.len = 16 + (uint64_t)(rand_r(&s) % 2000);
        tu_send(a->chan, &m, sizeof m);
        int rc;
        if (slot[m.slot] == SHMDS_NULL) {
            rc = shmds__alloc_into(a->r, m.len, &slot[m.slot]);
            if (rc == 0)
                crash_fill(a->r, slot[m.slot], m.len, m.slot);
        } else {
            rc = shmds__free_from(a->r, &slot[m.slot]);
        }
        if (rc != 0 && rc != -ENOMEM)
            return 20;
        m.kind = 'D';
        m.off = slot[m.slot];
        tu_send(a->chan, &m, sizeof m);
    }
}

static void crash_round(shmds_region *r, shmds_off_t table, shmds_off_t *model, unsigned seed,
                        int acks)
{
    tu_chan ch;
    tu_chan_open(&ch);
    struct crash_arg arg = {r, table, seed, &ch};
    pid_t pid = tu_fork(crash_worker, &arg);
    close(ch.wr);
    struct crash_msg m;
    int seen = 0;
    int inflight = -1;
    while (seen < acks && tu_recv(&ch, &m, sizeof m) == 1) {
        if (m.kind == 'I') {
            inflight = (int)m.slot;
        } else {
            model[m.slot] = m.off;
            inflight = -1;
            seen++;
        }
    }
    int st = tu_kill(pid);
    ck_assert_msg(WIFSIGNALED(st), "worker exited early: %d", st);
    /* Messages the child sent before it died still count. */
    while (tu_recv(&ch, &m, sizeof m) == 1) {
        if (m.kind == 'I') {
            inflight = (int)m.slot;
        } else {
            model[m.slot] = m.off;
            inflight = -1;
        }
    }
    close(ch.rd);

    ck_assert_int_eq(shmds__alloc_settle(r), 0);
    heap_ok(r);
    const shmds_off_t *slot = shmds_ptr(r, table);
    uint64_t live = 1; /* the table */
    for (int i = 0; i < SLOTS; i++) {
        if (i == inflight) {
            /* All or nothing: empty, or a live block (filled only if the
             * child got that far, so its contents are not checked). */
            ck_assert(model[i] == SHMDS_NULL || slot[i] == model[i] || slot[i] == SHMDS_NULL);
            if (slot[i] != SHMDS_NULL)
                ck_assert_int_eq(shmds__alloc_block_live(r, slot[i], NULL), 0);
            if (slot[i] != model[i] && slot[i] != SHMDS_NULL) {
                /* An allocation that committed before the child filled
                 * it: fill it, so that later rounds can check it. */
                crash_fill(r, slot[i], 16, (uint32_t)i);
            }
            model[i] = slot[i];
        }
        ck_assert_msg(slot[i] == model[i], "slot %d: %" PRIu64 " != reported %" PRIu64, i,
                      slot[i], model[i]);
        if (slot[i] != SHMDS_NULL) {
            live++;
            ck_assert_int_eq(shmds__alloc_block_live(r, slot[i], NULL), 0);
            ck_assert_msg(crash_intact(r, slot[i], (uint32_t)i), "slot %d damaged", i);
        }
    }
    /* No leak: every allocated block is the table or in a slot. */
    ck_assert_uint_eq(stats(r).used_blocks, live);
}

START_TEST(test_alloc_killed_at_random_moments_loses_nothing)
{
    shmds_region *r = tu_region("al", SZ);
    shmds_off_t table = must_alloc(r, SLOTS * sizeof(shmds_off_t));
    memset(shmds_ptr(r, table), 0, SLOTS * sizeof(shmds_off_t));
    shmds_off_t model[SLOTS] = {0};
    unsigned s = 12345;
    for (int round = 0; round < 300; round++)
        crash_round(r, table, model, (unsigned)round * 7919u + 1, 1 + rand_r(&s) % 40);
    ck_assert_uint_gt(stats(r).used_blocks, 1);
    shmds_region_close(r);
}
END_TEST

/* The same in a heap of several arenas: each round's child starts in
 * another arena, and frees blocks that earlier children allocated in
 * other arenas; after every kill the slots and the accounting are exact. */
START_TEST(test_alloc_killed_in_every_arena_loses_nothing)
{
    shmds_region *r = arena_region("ak", 5);
    unsigned n = shmds_alloc_arena_count(r);
    shmds_off_t table = must_alloc(r, SLOTS * sizeof(shmds_off_t));
    memset(shmds_ptr(r, table), 0, SLOTS * sizeof(shmds_off_t));
    shmds_off_t model[SLOTS] = {0};
    unsigned s = 4242;
    for (int round = 0; round < 200; round++) {
        r->arena_hint = (uint32_t)((unsigned)round % n);
        crash_round(r, table, model, (unsigned)round * 104729u + 3, 1 + rand_r(&s) % 40);
    }
    uint64_t in_arena[SHMDS__ARENAS_MAX] = {0};
    const shmds_off_t *slot = shmds_ptr(r, table);
    for (int i = 0; i < SLOTS; i++)
        if (slot[i] != SHMDS_NULL)
            in_arena[arena_at(r, slot[i])]++;
    unsigned used = 0;
    for (unsigned i = 0; i < n; i++) {
        shmds_alloc_arena_info ai;
        ck_assert_int_eq(shmds_alloc_arena_info_get(r, i, &ai), 0);
        used += ai.stats.used_blocks > 0;
        ck_assert_uint_eq(ai.stats.used_blocks,
                          in_arena[i] + (i == arena_at(r, table)) + (i == 0 ? n - 1 : 0));
    }
    ck_assert_uint_gt(used, 1);
    shmds_region_close(r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * the handles' block caches
 * ------------------------------------------------------------------------ */

/* A small block freed by shmds_free waits in the handle's cache: it is
 * free to the caller (no size, a second free or a realloc is refused),
 * the statistics count it free, and the next allocation of its size gets
 * it back. */
START_TEST(test_alloc_cached_block_is_free_to_the_caller)
{
    shmds_region *r = tu_region("ac", SZ);
    shmds_off_t keep = must_alloc(r, 200);
    shmds_off_t a = must_alloc(r, 48);
    fill(r, a, 48, 3);
    ck_assert_int_eq(shmds_free(r, a), 0);
    ck_assert_uint_eq(shmds_usable_size(r, a), 0);
    ck_assert_int_eq(shmds_free(r, a), -EINVAL);
    shmds_off_t out = SHMDS_NULL;
    ck_assert_int_eq(shmds_realloc(r, a, 100, &out), -EINVAL);
    ck_assert_int_eq(shmds_alloc_check(r), 0);
    shmds_off_t b = must_alloc(r, 40); /* the same block size: 64 bytes */
    ck_assert_uint_eq(b, a);
    ck_assert_uint_ge(shmds_usable_size(r, b), 40);
    fill(r, b, 40, 4);
    ck_assert(intact(r, b, 40, 4));
    ck_assert_int_eq(shmds_free(r, b), 0);
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_eq(st.used_blocks, 1);
    ck_assert_uint_eq(st.free_blocks, 1);
    ck_assert_int_eq(shmds_free(r, keep), 0);
    heap_empty(r);
    shmds_region_close(r);
}
END_TEST

/* Fill the handle's cache: 40 blocks of sizes 16-328 (the slots of many
 * sizes), then 40 of one size (its slots, then the batch), all freed. 0 or
 * a child's exit code. */
static int cache_fill(shmds_region *r)
{
    shmds_off_t b[80];
    for (int i = 0; i < 80; i++)
        if (shmds_alloc(r, i < 40 ? 16 + 8 * (size_t)i : 100, &b[i]) != 0)
            return 36;
    for (int i = 0; i < 80; i++)
        if (shmds_free(r, b[i]) != 0)
            return 37;
    return 0;
}

static int cache_fill_child(void *p)
{
    int rc = cache_fill(p);
    if (rc != 0)
        return rc;
    raise(SIGKILL);
    return 38;
}

/* A process SIGKILLed with blocks in its cache: the check finds its
 * record sound, and the statistics give every block back, exactly. */
START_TEST(test_alloc_cache_owner_killed_gives_back)
{
    shmds_region *r = tu_region("ac", SZ);
    int st = tu_wait(tu_fork(cache_fill_child, r), 30000);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    heap_ok(r);
    heap_empty(r);
    ck_assert_uint_eq(stats(r).free_blocks, 1);
    shmds_region_close(r);
}
END_TEST

struct cache_hold_arg {
    shmds_region *r;
    tu_chan up, down;
};

static int cache_hold_child(void *p)
{
    struct cache_hold_arg *a = p;
    int rc = cache_fill(a->r);
    if (rc != 0)
        return rc;
    char c = 1;
    tu_send(&a->up, &c, 1);
    if (tu_recv(&a->down, &c, 1) != 1)
        return 38;
    return shmds_region_close(a->r) == 0 ? 0 : 39;
}

/* Another live process's cached blocks count as free in the statistics,
 * and come back to the heap when it closes its handle. */
START_TEST(test_alloc_live_cache_counts_free_and_closes_empty)
{
    shmds_region *r = tu_region("ac", SZ);
    static struct cache_hold_arg arg;
    arg.r = r;
    tu_chan_open(&arg.up);
    tu_chan_open(&arg.down);
    pid_t pid = tu_fork(cache_hold_child, &arg);
    char c;
    ck_assert_int_eq(tu_recv(&arg.up, &c, 1), 1);
    shmds_alloc_stats st = stats(r);
    ck_assert_uint_eq(st.used_blocks, 0);
    ck_assert_uint_eq(st.used_bytes, 0);
    ck_assert_uint_gt(st.free_blocks, 1); /* the cached blocks, apart */
    heap_ok(r);
    tu_send(&arg.down, &c, 1);
    int ws = tu_wait(pid, 30000);
    ck_assert_msg(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "child: %d", ws);
    tu_chan_close(&arg.up);
    tu_chan_close(&arg.down);
    heap_empty(r);
    ck_assert_uint_eq(stats(r).free_blocks, 1);
    shmds_region_close(r);
}
END_TEST

/* ---------------------------------------------------------------------------
 * fault points (--enable-fault-injection): die at each named step
 * ------------------------------------------------------------------------ */

#ifdef SHMDS_FAULT_INJECTION

/* The script a child runs with SHMDS_FAULT set; it dies somewhere inside. */
struct script_arg {
    shmds_region *r;
    shmds_off_t table;
};

enum { S_A, S_B, S_C, S_D, S_N };

static int script(void *p)
{
    struct script_arg *a = p;
    shmds_region *r = a->r;
    shmds_off_t *slot = shmds_ptr(r, a->table);
    shmds_off_t out;
    /* Allocs with a split, frees that merge one way and then both ways,
     * and on a block only this process knows: grow in place, shrink in
     * place, move, free. */
    if (shmds__alloc_into(r, 100, &slot[S_A]) != 0 || shmds__alloc_into(r, 100, &slot[S_B]) != 0 ||
        shmds__alloc_into(r, 100, &slot[S_C]) != 0 || shmds__alloc_into(r, 100, &slot[S_D]) != 0 ||
        shmds__free_from(r, &slot[S_A]) != 0 || shmds__free_from(r, &slot[S_C]) != 0 ||
        shmds__free_from(r, &slot[S_B]) != 0 || shmds_alloc(r, 100, &out) != 0 ||
        shmds_realloc(r, out, 200, &out) != 0 || shmds_realloc(r, out, 40, &out) != 0 ||
        shmds_realloc(r, out, 3000, &out) != 0 || shmds_free(r, out) != 0 ||
        shmds__free_from(r, &slot[S_D]) != 0)
        return 30;
    return 0;
}

/* The same over arenas: carve an arena, allocate and free in it, move a
 * block that outgrows it to arena 0. */
static int arena_script(void *p)
{
    struct script_arg *a = p;
    shmds_region *r = a->r;
    shmds_off_t *slot = shmds_ptr(r, a->table);
    shmds_off_t out;
    if (shmds__alloc_arena_add(r) != 0)
        return 31;
    r->arena_hint = 1;
    if (shmds__alloc_into(r, 100, &slot[S_A]) != 0 || shmds__alloc_into(r, 100, &slot[S_B]) != 0 ||
        shmds__free_from(r, &slot[S_A]) != 0 || shmds_alloc(r, 100, &out) != 0 ||
        shmds_realloc(r, out, 200000, &out) != 0 || shmds_free(r, out) != 0 ||
        shmds__free_from(r, &slot[S_B]) != 0)
        return 32;
    return 0;
}

/* Small blocks through the handle's cache, one held at a time: freed into
 * it (its record made on the way), taken back, freed again; given back at
 * close. */
static int cache_script(void *p)
{
    struct script_arg *a = p;
    shmds_region *r = a->r;
    for (int i = 0; i < 6; i++) {
        shmds_off_t b;
        if (shmds_alloc(r, 48 + 16 * (size_t)(i % 2), &b) != 0)
            return 33;
        memset(shmds_ptr(r, b), i + 1, 48);
        if (shmds_free(r, b) != 0)
            return 34;
    }
    return shmds_region_close(r) == 0 ? 0 : 35;
}

static int run_script(shmds_region *r, shmds_off_t table, int (*fn)(void *), const char *point,
                      int skip)
{
    struct script_arg a = {r, table};
    char buf[16];
    snprintf(buf, sizeof buf, "%d", skip);
    setenv("SHMDS_FAULT", point, 1);
    setenv("SHMDS_FAULT_SKIP", buf, 1);
    pid_t pid = tu_fork(fn, &a);
    unsetenv("SHMDS_FAULT");
    unsetenv("SHMDS_FAULT_SKIP");
    return tu_wait(pid, 30000);
}

static int run_with_fault(shmds_region *r, shmds_off_t table, const char *point, int skip)
{
    return run_script(r, table, script, point, skip);
}

static void fault_settle_and_check(shmds_region *r, shmds_off_t table, const char *point,
                                   int skip)
{
    int rc = shmds__alloc_settle(r);
    ck_assert_msg(rc == 0, "%s/%d: settle: %s", point, skip, shmds_errname(rc));
    rc = shmds_region_check(r);
    ck_assert_msg(rc == 0, "%s/%d: check: %s", point, skip, shmds_errname(rc));
    shmds_off_t *slot = shmds_ptr(r, table);
    uint64_t live = 1;
    for (int i = 0; i < S_N; i++)
        if (slot[i] != SHMDS_NULL) {
            live++;
            ck_assert_msg(shmds__alloc_block_live(r, slot[i], NULL) == 0, "%s/%d: slot %d", point, skip, i);
        }
    /* The script's public alloc and realloc hand a block to the process
     * only: a death while it holds it leaves a block no slot names, two
     * between the commits of a realloc that moves (old and new). */
    shmds_alloc_stats st = stats(r);
    ck_assert_msg(st.used_blocks >= live && st.used_blocks <= live + 2,
                  "%s/%d: %" PRIu64 " used blocks, %" PRIu64 " in slots", point, skip,
                  st.used_blocks, live);
}

static const char *const points[] = {
    "alloc.alloc.unlinked",   "alloc.alloc.done",     "alloc.commit.before_seal",
    "alloc.commit.sealed",    "alloc.commit.store",   "alloc.commit.cleared",
    "alloc.free.unlinked",    "alloc.free.done",      "alloc.realloc.unlinked",
    "alloc.realloc.done",     "alloc.realloc.copied",
};

static const char *const arena_points[] = {
    "alloc.arena.carved",     "alloc.arena.published", "alloc.format.mid",
    "alloc.alloc.unlinked",   "alloc.alloc.done",      "alloc.commit.before_seal",
    "alloc.commit.sealed",    "alloc.commit.store",    "alloc.commit.cleared",
    "alloc.free.unlinked",    "alloc.free.done",       "alloc.realloc.copied",
};

/* Every hit of every point in a script: die there, repair, check. */
static void each_fault_point(int (*fn)(void *), const char *const *pts, size_t npoints)
{
    for (size_t p = 0; p < npoints; p++) {
        for (int skip = 0;; skip++) {
            ck_assert_int_lt(skip, 100);
            shmds_region *r = tu_region("af", SZ);
            shmds_off_t table = must_alloc(r, 8 * sizeof(shmds_off_t));
            memset(shmds_ptr(r, table), 0, 8 * sizeof(shmds_off_t));
            int st = run_script(r, table, fn, pts[p], skip);
            if (WIFEXITED(st)) {
                /* The script finished: the point has fewer hits than that,
                 * but at least one. */
                ck_assert_int_eq(WEXITSTATUS(st), 0);
                ck_assert_msg(skip > 0, "%s never reached", pts[p]);
                shmds_region_close(r);
                break;
            }
            ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s/%d: %d", pts[p],
                          skip, st);
            fault_settle_and_check(r, table, pts[p], skip);
            shmds_region_close(r);
        }
    }
}

START_TEST(test_alloc_killed_at_each_fault_point_is_repaired)
{
    each_fault_point(script, points, sizeof points / sizeof points[0]);
}
END_TEST

/* The same in carved arenas, the carving included: a carver killed
 * anywhere leaves an arena that the next locker of the heap lock lays out
 * and publishes (or nothing at all), never a lost carrier. */
START_TEST(test_alloc_killed_at_each_arena_fault_point_is_repaired)
{
    each_fault_point(arena_script, arena_points, sizeof arena_points / sizeof arena_points[0]);
}
END_TEST

/* The same through the handle's cache: a process killed while it makes
 * its record, puts a block in, takes one out or gives them back leaves
 * a record the next settle gives back, every block exactly once. */
static const char *const cache_points[] = {
    "alloc.cache.made",    "alloc.cache.put",     "alloc.cache.unflagged",
    "alloc.cache.given",   "alloc.commit.sealed", "alloc.free.unlinked",
};

START_TEST(test_alloc_killed_at_each_cache_fault_point_is_repaired)
{
    each_fault_point(cache_script, cache_points, sizeof cache_points / sizeof cache_points[0]);
}
END_TEST

/* Frees beyond a size's slots wait in the handle's batch, freed to their
 * arenas together once it is full. A process killed at each step of that
 * flush loses no block whose free returned and frees none twice: after
 * the settle, exactly the blocks it still held are used, and freeing
 * those empties the heap. */
#define BATCH_RUN 90

struct batch_share {
    uint32_t returned; /* frees that returned */
    shmds_off_t b[BATCH_RUN];
};

struct batch_arg {
    shmds_region *r;
    struct batch_share *sh;
};

static int batch_child(void *p)
{
    struct batch_arg *a = p;
    for (int i = 0; i < BATCH_RUN; i++)
        if (shmds_alloc(a->r, 64, &a->sh->b[i]) != 0)
            return 36;
    for (int i = 0; i < BATCH_RUN; i++) {
        if (shmds_free(a->r, a->sh->b[i]) != 0)
            return 37;
        __atomic_store_n(&a->sh->returned, (uint32_t)i + 1, __ATOMIC_SEQ_CST);
    }
    return 38; /* the flush never reached the fault point */
}

START_TEST(test_alloc_killed_while_flushing_batch_loses_nothing)
{
    static const struct {
        const char *point;
        const char *skip;
    } at[] = {{"alloc.cache.flushed", "0"},  {"alloc.cache.flushed", "1"},
              {"alloc.cache.flushed", "40"}, {"alloc.cache.flushed", "63"},
              {"alloc.free.unlinked", "0"},  {"alloc.free.unlinked", "33"}};
    struct batch_share *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ck_assert(sh != MAP_FAILED);
    for (size_t p = 0; p < sizeof at / sizeof at[0]; p++) {
        shmds_region *r = tu_region("ab", SZ);
        memset(sh, 0, sizeof *sh);
        struct batch_arg a = {r, sh};
        setenv("SHMDS_FAULT", at[p].point, 1);
        setenv("SHMDS_FAULT_SKIP", at[p].skip, 1);
        pid_t pid = tu_fork(batch_child, &a);
        unsetenv("SHMDS_FAULT");
        unsetenv("SHMDS_FAULT_SKIP");
        int st = tu_wait(pid, 30000);
        ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s/%s: %d", at[p].point,
                      at[p].skip, st);
        /* Eight frees fill the size's slots, 64 the batch: the 73rd flushes. */
        uint32_t n = sh->returned;
        ck_assert_uint_eq(n, 72);
        ck_assert_int_eq(shmds__alloc_settle(r), 0);
        heap_ok(r);
        ck_assert_uint_eq(stats(r).used_blocks, BATCH_RUN - n);
        for (uint32_t i = n; i < BATCH_RUN; i++)
            ck_assert_int_eq(shmds_free(r, sh->b[i]), 0);
        heap_empty(r);
        shmds_region_close(r);
    }
    munmap(sh, sizeof *sh);
}
END_TEST

static int settle_child(void *p);

/* A dead owner's record is given back by whoever settles next; that one
 * dies too, at the reclaim and half-way through the blocks; the next
 * settle finishes, and the heap comes out whole. */
START_TEST(test_alloc_cache_reclaimer_killed_is_reclaimed_again)
{
    static const char *const pts[] = {"alloc.cache.reclaim", "alloc.cache.given"};
    for (size_t p = 0; p < 2; p++) {
        shmds_region *r = tu_region("ac", SZ);
        int st = tu_wait(tu_fork(cache_fill_child, r), 30000);
        ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        setenv("SHMDS_FAULT", pts[p], 1);
        setenv("SHMDS_FAULT_SKIP", p == 0 ? "0" : "7", 1);
        st = tu_wait(tu_fork(settle_child, r), 30000);
        unsetenv("SHMDS_FAULT");
        unsetenv("SHMDS_FAULT_SKIP");
        ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s: %d", pts[p], st);
        ck_assert_int_eq(shmds__alloc_settle(r), 0);
        heap_empty(r);
        ck_assert_uint_eq(stats(r).free_blocks, 1);
        shmds_region_close(r);
    }
}
END_TEST

static int first_alloc(void *p)
{
    shmds_off_t off;
    return shmds_alloc(p, 64, &off) == 0 ? 0 : 50;
}

/* The first allocation formats the heap; dying half-way is harmless. */
START_TEST(test_alloc_killed_while_formatting_is_repaired)
{
    shmds_region *r = tu_region("ag", SZ);
    setenv("SHMDS_FAULT", "alloc.format.mid", 1);
    pid_t pid = tu_fork(first_alloc, r);
    unsetenv("SHMDS_FAULT");
    int st = tu_wait(pid, 30000);
    ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    shmds_off_t a = must_alloc(r, 64);
    shmds_alloc_stats s = stats(r);
    ck_assert_uint_eq(s.used_blocks, 1);
    ck_assert_uint_eq(s.free_blocks, 1);
    ck_assert_uint_ge(shmds_usable_size(r, a), 64);
    heap_ok(r);
    shmds_region_close(r);
}
END_TEST

/* The repairer dies too, at each step of the repair; the next one finishes. */
static int settle_child(void *p)
{
    return shmds__alloc_settle(p) == 0 ? 0 : 40;
}

START_TEST(test_alloc_repairer_killed_is_repaired_again)
{
    static const char *const repair_points[] = {"alloc.repair.redone", "alloc.repair.rebuilt",
                                                "alloc.rebuild.block"};
    for (size_t p = 0; p < sizeof repair_points / sizeof repair_points[0]; p++) {
        for (int skip = 0; skip < 3; skip++) {
            shmds_region *r = tu_region("ar", SZ);
            shmds_off_t table = must_alloc(r, 8 * sizeof(shmds_off_t));
            memset(shmds_ptr(r, table), 0, 8 * sizeof(shmds_off_t));
            /* A first death after the commit point of the free that merges
             * both ways (the 7th commit), so the repair has stores to redo. */
            int st = run_with_fault(r, table, "alloc.commit.sealed", 6);
            ck_assert(WIFSIGNALED(st));
            setenv("SHMDS_FAULT", repair_points[p], 1);
            char buf[16];
            snprintf(buf, sizeof buf, "%d", skip);
            setenv("SHMDS_FAULT_SKIP", buf, 1);
            pid_t pid = tu_fork(settle_child, r);
            unsetenv("SHMDS_FAULT");
            unsetenv("SHMDS_FAULT_SKIP");
            st = tu_wait(pid, 30000);
            /* The repair points are hit once per repair; the rebuild's once
             * per block, and there are more than three blocks. */
            if (skip == 0 || p == 2)
                ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "%s/%d: %d",
                              repair_points[p], skip, st);
            else
                ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s/%d: %d",
                              repair_points[p], skip, st);
            fault_settle_and_check(r, table, repair_points[p], skip);
            shmds_off_t *slot = shmds_ptr(r, table);
            ck_assert_uint_eq(slot[S_B], SHMDS_NULL); /* the free happened */
            ck_assert_uint_eq(slot[S_A], SHMDS_NULL);
            ck_assert_uint_ne(slot[S_D], SHMDS_NULL);
            ck_assert_uint_eq(stats(r).used_blocks, 2);
            shmds_region_close(r);
        }
    }
}
END_TEST

#endif

static Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");
    TCase *core = tcase_create("core");
    tcase_add_test(core, test_alloc_unformatted_heap_is_all_free);
    tcase_add_test(core, test_alloc_blocks_are_aligned_disjoint_and_kept);
    tcase_add_test(core, test_alloc_sizes_that_overflow_are_enomem);
    tcase_add_test(core, test_alloc_stats_accounting);
    tcase_add_test(core, test_alloc_realloc_grows_in_place_when_neighbour_free);
    tcase_add_test(core, test_alloc_realloc_moves_when_neighbour_used);
    tcase_add_test(core, test_alloc_realloc_shrinks_in_place);
    tcase_add_test(core, test_alloc_into_and_free_from_write_the_slot);
    tcase_add_test(core, test_alloc_arenas_are_carved_from_arena_0);
    suite_add_tcase(s, core);

    TCase *limits = tcase_create("limits");
    tcase_add_test(limits, test_alloc_bad_free_leaves_heap_unchanged);
    tcase_add_test(limits, test_alloc_size_zero_and_huge_sizes);
    tcase_add_test(limits, test_alloc_full_heap_is_enomem_and_unchanged);
    tcase_add_test(limits, test_alloc_readonly_region_refuses_writes);
    tcase_add_test(limits, test_alloc_check_finds_damage);
    tcase_add_test(limits, test_alloc_damaged_free_list_is_rebuilt);
    suite_add_tcase(s, limits);

    TCase *mp = tcase_create("multiprocess");
    tcase_set_timeout(mp, 120);
    tcase_add_test(mp, test_alloc_two_processes_at_once);
    tcase_add_test(mp, test_alloc_four_processes_in_different_arenas);
    tcase_add_test(mp, test_alloc_block_freed_by_another_process);
    tcase_add_test(mp, test_alloc_busy_arena_is_passed_over);
    tcase_add_test(mp, test_alloc_cached_block_is_free_to_the_caller);
    tcase_add_test(mp, test_alloc_cache_owner_killed_gives_back);
    tcase_add_test(mp, test_alloc_live_cache_counts_free_and_closes_empty);
    suite_add_tcase(s, mp);

    TCase *crash = tcase_create("crash");
    tcase_set_timeout(crash, 120);
    tcase_add_test(crash, test_alloc_killed_at_random_moments_loses_nothing);
    tcase_add_test(crash, test_alloc_killed_in_every_arena_loses_nothing);
#ifdef SHMDS_FAULT_INJECTION
    tcase_add_test(crash, test_alloc_killed_at_each_fault_point_is_repaired);
    tcase_add_test(crash, test_alloc_killed_at_each_arena_fault_point_is_repaired);
    tcase_add_test(crash, test_alloc_killed_at_each_cache_fault_point_is_repaired);
    tcase_add_test(crash, test_alloc_cache_reclaimer_killed_is_reclaimed_again);
    tcase_add_test(crash, test_alloc_killed_while_flushing_batch_loses_nothing);
    tcase_add_test(crash, test_alloc_killed_while_formatting_is_repaired);
    tcase_add_test(crash, test_alloc_repairer_killed_is_repaired_again);
#endif
    suite_add_tcase(s, crash);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(alloc_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
