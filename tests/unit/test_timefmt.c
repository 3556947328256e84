/*
 * test_timefmt.c: RFC 3339 parsing and formatting, and strict UTF-8 validation, as tables.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_event.h"

static const struct {
  const char *in;
  int64_t ms;
} kGood[] = {
    {"1970-01-01T00:00:00Z", 0},
    {"1970-01-01T00:00:00.001Z", 1},
    {"1970-01-01t00:00:00z", 0},
    /* case 009's four times */
    {"2025-03-01T23:30:00+08:00", 1740843000000},
    {"2025-03-01T16:30:00Z", 1740846600000},
    {"2025-03-01T15:59:59.999Z", 1740844799999},
    {"2025-03-01T16:00:00Z", 1740844800000}, /* = epoch ms 1740844800000, Shanghai midnight */
    {"2025-03-02T00:00:00+08:00", 1740844800000},
    {"2025-03-01T10:00:00+08:00", 1740794400000},
    {"2025-03-01T02:00:00Z", 1740794400000},
    {"2025-03-01T10:00:00.5+08:00", 1740794400500},
    {"2025-03-01T10:00:00.123456789+08:00", 1740794400123},
    {"2025-02-28T21:30:00-04:30", 1740794400000},
    {"2024-02-29T00:00:00Z", 1709164800000},
    {"2000-02-29T12:00:00Z", 951825600000},
    {"1969-12-31T23:59:59.999Z", -1},
    {"9999-12-31T23:59:59.999Z", 253402300799999},
};

static const char *const kBad[] = {
    "",
    "2025-03-01",
    "2025-03-01T10:00:00",      /* no offset: ambiguous local time */
    "2025-03-01 10:00:00Z",     /* space separator */
    "2025-03-01T10:00:00+0800", /* offset without colon */
    "2025-03-01T10:00:00+08",   /* short offset */
    "2025-13-01T10:00:00Z",     /* month 13 */
    "2025-02-29T10:00:00Z",     /* not a leap year */
    "1900-02-29T10:00:00Z",     /* century, not leap */
    "2025-04-31T10:00:00Z",     /* April has 30 days */
    "2025-03-01T24:00:00Z",
    "2025-03-01T10:60:00Z",
    "2025-03-01T10:00:60Z",
    "2025-03-01T10:00:00.Z",           /* empty fraction */
    "2025-03-01T10:00:00.1234567890Z", /* 10 fraction digits */
    "2025-03-01T10:00:00Zjunk",
    "2025-03-01T10:00:00+24:00",
    "2025-3-01T10:00:00Z",
    "+2025-03-01T10:00:00Z",
    "1740844800000",
};

static void test_parse_good(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof kGood / sizeof kGood[0]; i++) {
    int64_t ms = 42;
    int rc = tw_parse_rfc3339(kGood[i].in, strlen(kGood[i].in), &ms);
    if (rc != 0 || ms != kGood[i].ms)
      fail_msg("'%s': rc %d, ms %lld, want %lld", kGood[i].in, rc, (long long)ms,
               (long long)kGood[i].ms);
  }
}

static void test_parse_bad(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof kBad / sizeof kBad[0]; i++) {
    int64_t ms = 42;
    if (tw_parse_rfc3339(kBad[i], strlen(kBad[i]), &ms) != TW_EINVAL)
      fail_msg("'%s' was accepted as %lld", kBad[i], (long long)ms);
  }
  int64_t ms;
  assert_int_equal(tw_parse_rfc3339(NULL, 0, &ms), TW_EINVAL);
  /* length is respected: no reading past len even when the buffer goes on */
  assert_int_equal(tw_parse_rfc3339("2025-03-01T10:00:00Z", 19, &ms), TW_EINVAL);
}

static void test_format(void **state) {
  (void)state;
  char buf[40];
  assert_int_equal(tw_format_rfc3339(1740844800000, 480, buf, sizeof buf), 29);
  assert_string_equal(buf, "2025-03-02T00:00:00.000+08:00");
  tw_format_rfc3339(1740844799999, 480, buf, sizeof buf);
  assert_string_equal(buf, "2025-03-01T23:59:59.999+08:00");
  assert_int_equal(tw_format_rfc3339(0, 0, buf, sizeof buf), 24);
  assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
  tw_format_rfc3339(-1, 0, buf, sizeof buf);
  assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
  tw_format_rfc3339(1740794400000, -270, buf, sizeof buf);
  assert_string_equal(buf, "2025-02-28T21:30:00.000-04:30");
  assert_int_equal(tw_format_rfc3339(0, 0, buf, 31), TW_EINVAL);
  assert_int_equal(tw_format_rfc3339(253402300799999 + 1, 0, buf, sizeof buf), TW_EINVAL);
  /* round trip over every offset form */
  for (size_t i = 0; i < sizeof kGood / sizeof kGood[0]; i++) {
    int offsets[] = {0, 480, -300, 345};
    for (size_t k = 0; k < 4; k++) {
      int64_t back;
      int n = tw_format_rfc3339(kGood[i].ms, offsets[k], buf, sizeof buf);
      if (n < 0) continue; /* 9999-12-31 at +08:00 is year 10000 */
      assert_int_equal(tw_parse_rfc3339(buf, (size_t)n, &back), 0);
      assert_int_equal(back, kGood[i].ms);
    }
  }
}

static const struct {
  const char *s;
  size_t len;
  int valid;
} kUtf8[] = {
    {"", 0, 1},
    {"plain ascii, long enough for the 8-byte path", 44, 1},
    {"\xe9\x80\x80\xe8\xb4\xb9", 6, 1}, /* 退费 */
    {"\xc2\x80", 2, 1},                 /* U+0080 */
    {"\xf0\x9f\x98\x80", 4, 1},         /* U+1F600 */
    {"\xf4\x8f\xbf\xbf", 4, 1},         /* U+10FFFF */
    {"\xed\x9f\xbf", 3, 1},             /* U+D7FF */
    {"\xee\x80\x80", 3, 1},             /* U+E000 */
    {"\xc0\xaf", 2, 0},                 /* overlong '/' */
    {"\xc1\xbf", 2, 0},                 /* overlong */
    {"\xe0\x80\xaf", 3, 0},             /* overlong 3-byte */
    {"\xf0\x80\x80\xaf", 4, 0},         /* overlong 4-byte */
    {"\xed\xa0\x80", 3, 0},             /* surrogate U+D800 */
    {"\xed\xbf\xbf", 3, 0},             /* surrogate U+DFFF */
    {"\xf4\x90\x80\x80", 4, 0},         /* U+110000 */
    {"\xf5\x80\x80\x80", 4, 0},
    {"\xff", 1, 0},
    {"\xfe", 1, 0},
    {"\x80", 1, 0},                                          /* lone continuation */
    {"\xe9\x80", 2, 0},                                      /* truncated at end */
    {"\xe9\x80\x80\xe8\xb4\xb9\xe9\x9a\xbe\xc0\xaf", 11, 0}, /* case 005 c-bad-1 */
    {"abcdefgh\xe9\x80zzzzzzzz", 18, 0}, /* bad continuation after the fast path */
};

/* Durations as rules and options write them: digits and one unit, nothing else. */
static void test_duration(void **state) {
  (void)state;
  static const struct {
    const char *s;
    int rc;
    int64_t ms;
  } kCases[] = {
      {"500ms", 0, 500},       {"90s", 0, 90000},       {"15m", 0, 900000},
      {"2h", 0, 7200000},      {"7d", 0, 604800000},    {"0s", 0, 0},
      {"0", TW_EINVAL, 0},     {"5", TW_EINVAL, 0},     {"", TW_EINVAL, 0},
      {"-1s", TW_EINVAL, 0},   {"+1s", TW_EINVAL, 0},   {" 1s", TW_EINVAL, 0},
      {"1s ", TW_EINVAL, 0},   {"1.5h", TW_EINVAL, 0},  {"1w", TW_EINVAL, 0},
      {"1mss", TW_EINVAL, 0},  {"106751991167301d", TW_EOVERFLOW, 0},
      {"99999999999999999999s", TW_EOVERFLOW, 0},
  };
  for (size_t i = 0; i < sizeof kCases / sizeof kCases[0]; i++) {
    int64_t ms = -1;
    int rc = tw_duration_parse(kCases[i].s, strlen(kCases[i].s), &ms);
    if (rc != kCases[i].rc) fail_msg("'%s': rc %d, want %d", kCases[i].s, rc, kCases[i].rc);
    if (rc == 0 && ms != kCases[i].ms) fail_msg("'%s': %lld ms", kCases[i].s, (long long)ms);
  }
  int64_t ms = 0;
  assert_int_equal(tw_duration_parse("15mx", 3, &ms), 0); /* len bytes only */
  assert_int_equal(ms, 900000);
  assert_int_equal(tw_duration_unit_ms("ms", 2), 1);
  assert_int_equal(tw_duration_unit_ms("yuan", 4), 0);
}

static void test_utf8(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof kUtf8 / sizeof kUtf8[0]; i++)
    if (tw_utf8_valid(kUtf8[i].s, kUtf8[i].len) != kUtf8[i].valid)
      fail_msg("utf8 case %zu: want %d", i, kUtf8[i].valid);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_good),
      cmocka_unit_test(test_parse_bad),
      cmocka_unit_test(test_format),
      cmocka_unit_test(test_utf8),
      cmocka_unit_test(test_duration),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
