/*
 * test_alert.c: deterministic alert ids and the canonical alert JSON (key order, escaping,
 * value rendering), checked by parsing the output back with jansson.
 */
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tw_alert.h"
#include "tw_error.h"

static tw_rule_t make_rule(void) {
  tw_rule_t r;
  memset(&r, 0, sizeof r);
  r.name = "prepaid_over_amount_cap";
  r.source = "13-department opinion (2022)";
  r.severity = TW_SEV_HIGH;
  return r;
}

static tw_str_t S(const char *s) {
  tw_str_t t = {s, (uint32_t)strlen(s)};
  return t;
}

static void fill(tw_alert_t *a, const tw_rule_t *r, const tw_eval_read_t *reads, size_t n) {
  memset(a, 0, sizeof *a);
  a->rule = r;
  a->by = "institution_id";
  a->key = S("52440106MJL176301K");
  a->institution_id = S("52440106MJL176301K");
  a->region = S("440106");
  a->event_id = S("p-1");
  a->event_time_ms = 1740794400000; /* 2025-03-01T10:00:00+08:00 */
  snprintf(a->message, sizeof a->message, "payment of \"6000\" yuan\nline two");
  a->values = reads;
  a->n_values = n;
  tw_alert_make_id(a);
}

static void test_id_is_deterministic_and_input_sensitive(void **state) {
  (void)state;
  tw_rule_t r = make_rule();
  tw_alert_t a, b;
  fill(&a, &r, NULL, 0);
  fill(&b, &r, NULL, 0);
  assert_int_equal(strlen(a.alert_id), TW_ALERT_ID_LEN);
  assert_string_equal(a.alert_id, b.alert_id);
  b.event_id = S("p-2");
  tw_alert_make_id(&b);
  assert_string_not_equal(a.alert_id, b.alert_id);
  b.event_id = S("p-1");
  b.event_time_ms += 1;
  tw_alert_make_id(&b);
  assert_string_not_equal(a.alert_id, b.alert_id);
}

static void test_json_shape_and_values(void **state) {
  (void)state;
  tw_rule_t r = make_rule();
  tw_eval_read_t reads[3];
  reads[0].name = "amount_fen";
  reads[0].value = tw_value_int(TW_V_MONEY, 600000);
  reads[1].name = "channel";
  reads[1].value = tw_value_str("supervised", 10);
  reads[2].name = "ts";
  reads[2].value = tw_value_int(TW_V_TIME, 1740794400000);
  tw_alert_t a;
  fill(&a, &r, reads, 3);
  char buf[TW_ALERT_JSON_MAX];
  int len = tw_alert_to_json(&a, buf, sizeof buf);
  assert_true(len > 0);
  assert_int_equal((size_t)len, strlen(buf));
  assert_null(strchr(buf, '\n'));
  /* fixed key order */
  const char *order[] = {
      "\"alert_id\":", "\"rule\":",           "\"severity\":",  "\"by\":",
      "\"key\":",      "\"institution_id\":", "\"region\":",    "\"event_time\":",
      "\"message\":",  "\"values\":",         "\"event_ids\":", "\"source\":"};
  const char *prev = buf;
  for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
    const char *at = strstr(buf, order[i]);
    assert_non_null(at);
    assert_true(at >= prev);
    prev = at;
  }
  json_error_t jerr;
  json_t *o = json_loadb(buf, (size_t)len, 0, &jerr);
  assert_non_null(o);
  assert_string_equal(json_string_value(json_object_get(o, "severity")), "high");
  assert_string_equal(json_string_value(json_object_get(o, "event_time")),
                      "2025-03-01T10:00:00.000+08:00");
  assert_string_equal(json_string_value(json_object_get(o, "message")),
                      "payment of \"6000\" yuan\nline two");
  json_t *v = json_object_get(o, "values");
  assert_int_equal(json_integer_value(json_object_get(v, "amount_fen")), 600000);
  assert_string_equal(json_string_value(json_object_get(v, "channel")), "supervised");
  assert_string_equal(json_string_value(json_object_get(v, "ts")), "2025-03-01T10:00:00.000+08:00");
  assert_string_equal(json_string_value(json_array_get(json_object_get(o, "event_ids"), 0)), "p-1");
  json_decref(o);
}

static void test_json_too_small_buffer(void **state) {
  (void)state;
  tw_rule_t r = make_rule();
  tw_alert_t a;
  fill(&a, &r, NULL, 0);
  char small[64];
  assert_int_equal(tw_alert_to_json(&a, small, sizeof small), TW_ETOOBIG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_id_is_deterministic_and_input_sensitive),
      cmocka_unit_test(test_json_shape_and_values),
      cmocka_unit_test(test_json_too_small_buffer),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
