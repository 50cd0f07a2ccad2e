/* Handles across fork(): what each header promises a child may do with its
 * parent's region, list, queue and map handles, done by real children. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "testutil.h"

#define MB (1024 * 1024)

struct handles {
    shmds_region *r;
    shmds_list *l;
    shmds_map *m;
    shmds_queue *q, *spsc;
};

/* The child works through the inherited handles, then closes them all
 * (which must not disturb the parent). Exit codes name the failed step. */
static int child(void *arg)
{
    struct handles *h = arg;
    if (shmds_list_push_back(h->l, "child", 5) != 0)
        return 10;
    if (shmds_map_put(h->m, "child", 5, "yes", 3, 0, 0) != 0)
        return 11;
    char buf[16];
    size_t n = 0;
    if (shmds_map_get(h->m, "parent", 6, buf, sizeof buf, &n) != 0 || n != 3)
        return 12;
    if (shmds_queue_send(h->q, "from child", 10, 0) != 0)
        return 13;
    /* The parent's thread holds the SPSC producer side. */
    if (shmds_queue_send(h->spsc, "x", 1, 0) != -EBUSY)
        return 14;
    shmds_fill *f = NULL;
    if (shmds_map_fetch(h->m, "lazy", 4, buf, sizeof buf, &n, NULL, 0, 0, &f) != SHMDS_FILL ||
        shmds_map_fill_done(f, "filled", 6, NULL, NULL) != 0)
        return 15;
    shmds_queue_close(h->spsc);
    shmds_queue_close(h->q);
    shmds_map_close(h->m);
    shmds_list_close(h->l);
    if (shmds_region_close(h->r) != 0)
        return 16;
    return 0;
}

START_TEST(test_fork_child_uses_and_closes_inherited_handles)
{
    struct handles h;
    h.r = tu_region("fork", MB);
    ck_assert_int_eq(shmds_list_create(h.r, "l", &h.l), 0);
    ck_assert_int_eq(shmds_map_create(h.r, "m", NULL, &h.m), 0);
    ck_assert_int_eq(shmds_queue_create(h.r, "q", 4096, 64, 0, &h.q), 0);
    ck_assert_int_eq(shmds_queue_create(h.r, "s", 4096, 64, SHMDS_QUEUE_SPSC, &h.spsc), 0);
    ck_assert_int_eq(shmds_map_put(h.m, "parent", 6, "yes", 3, 0, 0), 0);
    ck_assert_int_eq(shmds_queue_send(h.spsc, "p", 1, 0), 0); /* claims the producer side */
    pid_t p = tu_fork(child, &h);
    int st = tu_wait(p, 30000);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: %d", st);
    /* Everything the child did is there, and the parent's handles work. */
    char buf[16];
    size_t n = 0;
    ck_assert_int_eq(shmds_list_pop_front(h.l, buf, sizeof buf, &n), 0);
    ck_assert_int_eq(memcmp(buf, "child", 5), 0);
    ck_assert_int_eq(shmds_map_get(h.m, "child", 5, buf, sizeof buf, &n), 0);
    ck_assert_int_eq(shmds_map_get(h.m, "lazy", 4, buf, sizeof buf, &n), 0);
    ck_assert_int_eq(memcmp(buf, "filled", 6), 0);
    ck_assert_int_eq(shmds_queue_recv(h.q, buf, sizeof buf, &n, 0), 0);
    ck_assert_int_eq(memcmp(buf, "from child", 10), 0);
    /* The child's close left the parent's SPSC claim alone. */
    ck_assert_int_eq(shmds_queue_send(h.spsc, "p", 1, 0), 0);
    ck_assert_int_eq(shmds_region_check(h.r), 0);
    shmds_queue_close(h.spsc);
    shmds_queue_close(h.q);
    shmds_map_close(h.m);
    shmds_list_close(h.l);
    ck_assert_int_eq(shmds_region_close(h.r), 0);
}
END_TEST

static Suite *fork_suite(void)
{
    Suite *s = suite_create("fork");
    TCase *mp = tcase_create("multiprocess");
    tcase_add_test(mp, test_fork_child_uses_and_closes_inherited_handles);
    suite_add_tcase(s, mp);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(fork_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
