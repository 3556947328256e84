/*
 * test_sink.c: the sink table, the JSON Lines sink (exact lines, append mode, refused input) and
 * the regulator-feed topic format (region/severity/rule, bounds, malformed regions refused).
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
#include "tw_sink.h"
#include "tw_sink_zmq.h"

static char g_dir[] = "/tmp/tw_test_sink_XXXXXX";

static void make_alert(tw_alert_t *a, const tw_rule_t *rule, const char *region) {
  memset(a, 0, sizeof *a);
  a->rule = rule;
  a->region.ptr = region;
  a->region.len = (uint32_t)strlen(region);
}

static size_t read_file(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  size_t n = fread(buf, 1, cap - 1, f);
  buf[n] = '\0';
  fclose(f);
  return n;
}

static void test_find(void **state) {
  (void)state;
  const tw_sink_vt_t *j = tw_sink_find("jsonl");
  assert_non_null(j);
  assert_string_equal(j->name, "jsonl");
  assert_non_null(tw_sink_find("zmq-pub"));
  assert_null(tw_sink_find("kafka"));
  assert_null(tw_sink_find(NULL));
}

static void test_jsonl_exact_lines_and_append(void **state) {
  (void)state;
  char path[512], buf[4096];
  snprintf(path, sizeof path, "%s/alerts.jsonl", g_dir);
  const tw_sink_vt_t *vt = tw_sink_find("jsonl");
  const tw_rule_t rule = {.name = "prepaid_over_cap", .severity = TW_SEV_HIGH};
  tw_alert_t a;
  make_alert(&a, &rule, "440106");
  const char *l1 = "{\"alert_id\":\"1\",\"rule\":\"prepaid_over_cap\"}";
  const char *l2 = "{\"alert_id\":\"2\",\"message\":\"预收费超过上限\"}";

  tw_sink_t *s = NULL;
  assert_int_equal(vt->open(path, &s), 0);
  assert_int_equal(s->vt->write(s, &a, l1, strlen(l1)), 0);
  assert_int_equal(s->vt->write(s, &a, l2, strlen(l2)), 0);
  /* A line break inside the JSON would split one alert into two records: refused. */
  assert_int_equal(s->vt->write(s, &a, "{\n}", 3), TW_EINVAL);
  assert_int_equal(s->vt->flush(s), 0);
  char expect[1024];
  snprintf(expect, sizeof expect, "%s\n%s\n", l1, l2);
  read_file(path, buf, sizeof buf);
  assert_string_equal(buf, expect);                /* flush makes them visible */
  assert_int_equal(tw_sink_zmq_pub_dropped(s), 0); /* not a feed */
  s->vt->close(s);

  /* A second run appends. */
  s = NULL;
  assert_int_equal(vt->open(path, &s), 0);
  assert_int_equal(s->vt->write(s, &a, l1, strlen(l1)), 0);
  s->vt->close(s); /* close flushes */
  snprintf(expect, sizeof expect, "%s\n%s\n%s\n", l1, l2, l1);
  read_file(path, buf, sizeof buf);
  assert_string_equal(buf, expect);
  vt->close(NULL);
}

static void test_jsonl_open_errors_and_stdout(void **state) {
  (void)state;
  const tw_sink_vt_t *vt = tw_sink_find("jsonl");
  tw_sink_t *s = NULL;
  assert_int_equal(vt->open("/nonexistent/dir/alerts.jsonl", &s), TW_EIO);
  assert_null(s);
  assert_int_equal(vt->open("-", &s), 0);
  assert_int_equal(s->vt->flush(s), 0);
  s->vt->close(s);
  /* stdout stays open */
  assert_true(fprintf(stdout, "# stdout still usable\n") > 0);
}

static void test_topic(void **state) {
  (void)state;
  const tw_rule_t high = {.name = "prepaid_over_cap", .severity = TW_SEV_HIGH};
  const tw_rule_t crit = {.name = "closure_with_balance", .severity = TW_SEV_CRITICAL};
  const tw_rule_t info = {.name = "x", .severity = TW_SEV_INFO};
  tw_alert_t a;
  char buf[128];

  make_alert(&a, &high, "440106");
  assert_int_equal(tw_feed_topic(&a, buf, sizeof buf), (int)strlen("440106/high/prepaid_over_cap"));
  assert_string_equal(buf, "440106/high/prepaid_over_cap");
  make_alert(&a, &crit, "110101");
  assert_int_equal(tw_feed_topic(&a, buf, sizeof buf), 36);
  assert_string_equal(buf, "110101/critical/closure_with_balance");
  make_alert(&a, &info, "310000");
  assert_int_equal(tw_feed_topic(&a, buf, sizeof buf), 13);
  assert_string_equal(buf, "310000/info/x");

  /* Exactly enough room, then one byte short. */
  make_alert(&a, &high, "440106");
  assert_int_equal(tw_feed_topic(&a, buf, 29), 28);
  assert_int_equal(tw_feed_topic(&a, buf, 28), TW_ETOOBIG);
  assert_string_equal(buf, "");

  /* A region that is not exactly six digits must not produce a topic. */
  const char *bad[] = {"4401", "4401066", "44/x01", "", "44010a"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    make_alert(&a, &high, bad[i]);
    assert_int_equal(tw_feed_topic(&a, buf, sizeof buf), TW_EINVAL);
  }
  make_alert(&a, NULL, "440106");
  assert_int_equal(tw_feed_topic(&a, buf, sizeof buf), TW_EINVAL);
  const tw_rule_t odd = {.name = "y", .severity = (tw_severity_t)9};
  make_alert(&a, &odd, "440106");
  assert_int_equal(tw_feed_topic(&a, buf, sizeof buf), TW_EINVAL);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(g_dir) != NULL ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_find),
      cmocka_unit_test(test_jsonl_exact_lines_and_append),
      cmocka_unit_test(test_jsonl_open_errors_and_stdout),
      cmocka_unit_test(test_topic),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
