/* unit/test_version.c: the version macros of fhirsync/version.h: FHIRSYNC_VERSION_NUM encodes
 * the same numbers as FHIRSYNC_VERSION, compares in version order, works in #if, and
 * FHIRSYNC_VERSION_CHECK answers "at least this version"; the library reports the headers'
 * version string. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

#include <cmocka.h>

#include "fhirsync/fhirsync.h"

#if !FHIRSYNC_VERSION_CHECK(0, 0, 0) || FHIRSYNC_VERSION_CHECK(FHIRSYNC_VERSION_MAJOR + 1, 0, 0)
#error "FHIRSYNC_VERSION_CHECK does not work in #if"
#endif

static void test_num_matches_string(void **state)
{
    (void)state;
    int major = -1, minor = -1, patch = -1;
    assert_int_equal(sscanf(FHIRSYNC_VERSION, "%d.%d.%d", &major, &minor, &patch), 3);
    assert_int_equal(major, FHIRSYNC_VERSION_MAJOR);
    assert_int_equal(minor, FHIRSYNC_VERSION_MINOR);
    assert_int_equal(patch, FHIRSYNC_VERSION_PATCH);
    assert_int_equal(FHIRSYNC_VERSION_NUM, major * 65536 + minor * 256 + patch);
    assert_string_equal(fhirsync_version(), FHIRSYNC_VERSION);
}

static void test_encode_orders_versions(void **state)
{
    (void)state;
    assert_int_equal(FHIRSYNC_VERSION_ENCODE(1, 2, 3), 0x010203);
    assert_true(FHIRSYNC_VERSION_ENCODE(0, 9, 255) < FHIRSYNC_VERSION_ENCODE(0, 10, 0));
    assert_true(FHIRSYNC_VERSION_ENCODE(0, 255, 255) < FHIRSYNC_VERSION_ENCODE(1, 0, 0));
    assert_true(FHIRSYNC_VERSION_ENCODE(2, 0, 0) > FHIRSYNC_VERSION_ENCODE(1, 255, 255));
}

static void test_check(void **state)
{
    (void)state;
    const int M = FHIRSYNC_VERSION_MAJOR, m = FHIRSYNC_VERSION_MINOR, p = FHIRSYNC_VERSION_PATCH;
    assert_true(FHIRSYNC_VERSION_CHECK(M, m, p));
    assert_true(FHIRSYNC_VERSION_CHECK(0, 0, 0));
    assert_false(FHIRSYNC_VERSION_CHECK(M, m, p + 1));
    assert_false(FHIRSYNC_VERSION_CHECK(M, m + 1, 0));
    assert_false(FHIRSYNC_VERSION_CHECK(M + 1, 0, 0));
    if (p > 0)
        assert_true(FHIRSYNC_VERSION_CHECK(M, m, p - 1));
    if (m > 0)
        assert_true(FHIRSYNC_VERSION_CHECK(M, m - 1, 255));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_num_matches_string),
        cmocka_unit_test(test_encode_orders_versions),
        cmocka_unit_test(test_check),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
