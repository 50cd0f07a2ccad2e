/* Error names and descriptions: every code a call can return is named. */
#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <shmds.h>

static const int lib_codes[] = {
#define CODE_(name, value, text) SHMDS_##name,
    SHMDS_ERRNO_MAP(CODE_)
#undef CODE_
};
#define N_LIB_CODES (sizeof lib_codes / sizeof lib_codes[0])

START_TEST(test_error_every_library_code_named)
{
    for (size_t i = 0; i < N_LIB_CODES; i++) {
        int c = lib_codes[i];
        ck_assert_int_lt(c, -4000);
        ck_assert_int_gt(c, -4100);
        ck_assert_msg(strncmp(shmds_errname(c), "SHMDS_E", 7) == 0, "code %d named %s", c,
                      shmds_errname(c));
        ck_assert_str_ne(shmds_strerror(c), "unknown error");
        for (size_t j = 0; j < i; j++) {
            ck_assert_int_ne(lib_codes[j], c);
            ck_assert_str_ne(shmds_errname(lib_codes[j]), shmds_errname(c));
        }
    }
    ck_assert_str_eq(shmds_errname(SHMDS_ECORRUPT), "SHMDS_ECORRUPT");
    ck_assert_str_eq(shmds_errname(SHMDS_ENOTRECOVERABLE), "SHMDS_ENOTRECOVERABLE");
}
END_TEST

START_TEST(test_error_success_values_named)
{
    ck_assert_str_eq(shmds_errname(0), "OK");
    ck_assert_str_eq(shmds_errname(SHMDS_RECOVERED), "SHMDS_RECOVERED");
    ck_assert_int_gt(SHMDS_RECOVERED, 0);
    ck_assert_str_ne(shmds_strerror(SHMDS_RECOVERED), "unknown error");
}
END_TEST

START_TEST(test_error_errno_values_named)
{
    static const int errs[] = {ENOENT, EEXIST, EINVAL, ENOMEM, ENOSPC, ETIMEDOUT, EAGAIN,
                               EBUSY, EDEADLK, EPERM, EACCES, EMSGSIZE, ENOBUFS, EFBIG};
    static const char *const names[] = {"ENOENT", "EEXIST", "EINVAL", "ENOMEM", "ENOSPC",
                                        "ETIMEDOUT", "EAGAIN", "EBUSY", "EDEADLK", "EPERM",
                                        "EACCES", "EMSGSIZE", "ENOBUFS", "EFBIG"};
    for (size_t i = 0; i < sizeof errs / sizeof errs[0]; i++) {
        ck_assert_str_eq(shmds_errname(-errs[i]), names[i]);
        ck_assert_str_ne(shmds_strerror(-errs[i]), "unknown error");
    }
}
END_TEST

START_TEST(test_error_unknown_values)
{
    ck_assert_str_eq(shmds_errname(-4099), "UNKNOWN");
    ck_assert_str_eq(shmds_strerror(-4099), "unknown error");
    ck_assert_str_eq(shmds_errname(12345), "UNKNOWN");
    ck_assert_str_eq(shmds_errname(-100000), "UNKNOWN");
}
END_TEST

START_TEST(test_error_version_matches_header)
{
    ck_assert_uint_eq(shmds_version(), SHMDS_VERSION_HEX);
    ck_assert_str_eq(shmds_version_string(), SHMDS_VERSION_STRING);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("error");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_error_every_library_code_named);
    tcase_add_test(tc, test_error_success_values_named);
    tcase_add_test(tc, test_error_errno_values_named);
    tcase_add_test(tc, test_error_unknown_values);
    tcase_add_test(tc, test_error_version_matches_header);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
