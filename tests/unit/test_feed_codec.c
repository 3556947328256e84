/*
 * test_feed_codec.c: feed payloads: the regulator JSON view is the journal's bytes with "seq"
 * spliced in; msgpack prints back as the same JSON; the self-check view drops key, by and string
 * values and masks phone, id and other institutions' codes; alerts not keyed by institution have
 * no self-check view; hostile payloads are refused, not printed; the masking table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_feed_codec.h"

static const char kAlert[] =
    "{\"alert_id\":\"0123456789abcdef0123456789abcdef\",\"rule\":\"complaint_runaway_words\","
    "\"severity\":\"high\",\"by\":\"institution_id\",\"key\":\"52440111DWK00007H2\","
    "\"institution_id\":\"52440111DWK00007H2\",\"region\":\"440111\","
    "\"event_time\":\"2025-06-02T11:00:00.000+08:00\","
    "\"message\":\"complaint K-13812345678 about 52440111DWK00007H2 and 91440101MA59U0A48D\","
    "\"values\":{\"text\":\"老板跑路 13812345678\",\"amount\":12.5,\"n\":3,\"phone\":13812345678},"
    "\"event_ids\":[\"k1\"],\"source\":\"heuristic\"}";

static void test_regulator_json(void **state) {
  (void)state;
  tw_feed_buf_t b = {0};
  assert_int_equal(tw_feed_payload(0, TW_FEED_JSON, 42, kAlert, strlen(kAlert), &b), 0);
  assert_true(b.len == strlen(kAlert) + 9);
  assert_memory_equal(b.data, "{\"seq\":42,", 10);
  assert_memory_equal(b.data + 10, kAlert + 1, strlen(kAlert) - 1);
  assert_int_equal(tw_feed_payload_seq(b.data, b.len), 42);
  tw_feed_buf_free(&b);
}

static void test_msgpack_round_trip(void **state) {
  (void)state;
  tw_feed_buf_t mp = {0}, js = {0}, direct = {0};
  assert_int_equal(tw_feed_payload(0, TW_FEED_MSGPACK, 7, kAlert, strlen(kAlert), &mp), 0);
  assert_true((unsigned char)mp.data[0] >= 0x80); /* a msgpack map */
  assert_int_equal(tw_feed_payload_seq(mp.data, mp.len), 7);
  assert_int_equal(tw_feed_to_json(mp.data, mp.len, &js), 0);
  assert_int_equal(tw_feed_payload(0, TW_FEED_JSON, 7, kAlert, strlen(kAlert), &direct), 0);
  assert_int_equal(js.len, direct.len); /* the same line, including 12.5 printed as 12.5 */
  assert_memory_equal(js.data, direct.data, js.len);
  tw_feed_buf_free(&mp);
  tw_feed_buf_free(&js);
  tw_feed_buf_free(&direct);
}

static void test_self_check_view(void **state) {
  (void)state;
  tw_feed_buf_t b = {0};
  assert_int_equal(tw_feed_payload(1, TW_FEED_JSON, 3, kAlert, strlen(kAlert), &b), 0);
  char *s = strndup(b.data, b.len);
  assert_non_null(strstr(s, "{\"seq\":3,\"alert_id\":"));
  assert_null(strstr(s, "\"key\""));
  assert_null(strstr(s, "\"by\""));
  assert_null(strstr(s, "13812345678"));
  assert_null(strstr(s, "跑路"));                         /* string values left out */
  assert_null(strstr(s, "91440101MA59U0A48D"));           /* another institution's code */
  assert_non_null(strstr(s, "about 52440111DWK00007H2")); /* its own code stays */
  assert_non_null(strstr(s, "K-138******78"));
  assert_non_null(strstr(s, "\"values\":{\"amount\":12.5,\"n\":3,\"phone\":\"138******78\"}"));
  free(s);
  /* keyed by region: it concerns several institutions, so no self-check view */
  char other[sizeof kAlert + 16];
  snprintf(other, sizeof other, "%s", kAlert);
  char *by = strstr(other, "\"by\":\"institution_id\"");
  memcpy(by, "\"by\":\"region\",\"x_\":\"\"", strlen("\"by\":\"region\",\"x_\":\"\""));
  assert_int_equal(tw_feed_payload(1, TW_FEED_MSGPACK, 3, other, strlen(other), &b), TW_ENOENT);
  tw_feed_buf_free(&b);
}

static void test_refused_input(void **state) {
  (void)state;
  tw_feed_buf_t b = {0};
  assert_int_equal(tw_feed_payload(0, TW_FEED_JSON, 1, "[1]", 3, &b), TW_EINVAL);
  assert_int_equal(tw_feed_payload(0, TW_FEED_MSGPACK, 1, "{\"a\":", 5, &b), TW_EINVAL);
  assert_int_equal(tw_feed_to_json("{\"a\":1}\n{", 9, &b), TW_EINVAL);
  static const unsigned char not_map[] = {0x93, 1, 2, 3};
  assert_int_equal(tw_feed_to_json((const char *)not_map, sizeof not_map, &b), TW_EINVAL);
  static const unsigned char int_key[] = {0x81, 0x01, 0x02};
  assert_int_equal(tw_feed_to_json((const char *)int_key, sizeof int_key, &b), TW_EINVAL);
  static const unsigned char cut[] = {0x82, 0xa1, 'a'};
  assert_int_equal(tw_feed_to_json((const char *)cut, sizeof cut, &b), TW_EINVAL);
  static const unsigned char huge[] = {0xdf, 0xff, 0xff, 0xff, 0xff}; /* claims 4G pairs */
  assert_int_equal(tw_feed_to_json((const char *)huge, sizeof huge, &b), TW_EINVAL);
  unsigned char deep[64];
  deep[0] = 0x81, deep[1] = 0xa1, deep[2] = 'a';
  for (size_t i = 3; i < sizeof deep - 1; i++) deep[i] = 0x91; /* arrays nested 60 deep */
  deep[sizeof deep - 1] = 0x01;
  assert_int_equal(tw_feed_to_json((const char *)deep, sizeof deep, &b), TW_EINVAL);
  assert_int_equal(tw_feed_payload_seq("{\"seq\":x", 8), 0);
  tw_feed_buf_free(&b);
}

static void test_mask_table(void **state) {
  (void)state;
  static const struct {
    const char *in, *out;
  } cases[] = {
      {"call 13812345678 now", "call 138******78 now"},
      {"id 44010619900101123X ok", "id 440*************3X ok"},
      {"id 440106199001011234", "id 440*************34"},
      {"amount 600000 fen", "amount 600000 fen"},
      {"1234567890", "1234567890"}, /* ten digits: kept */
      {"K-13812345678", "K-138******78"},
      {"org 91440101MA59U0A48D", "org 914*************8D"},
      {"own 52440111DWK00007H2", "own 52440111DWK00007H2"},
      {"", ""},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char buf[128];
    snprintf(buf, sizeof buf, "%s", cases[i].in);
    tw_feed_mask_text(buf, strlen(buf), "52440111DWK00007H2");
    if (strcmp(buf, cases[i].out) != 0)
      fail_msg("mask '%s': got '%s', expected '%s'", cases[i].in, buf, cases[i].out);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_regulator_json),  cmocka_unit_test(test_msgpack_round_trip),
      cmocka_unit_test(test_self_check_view), cmocka_unit_test(test_refused_input),
      cmocka_unit_test(test_mask_table),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
