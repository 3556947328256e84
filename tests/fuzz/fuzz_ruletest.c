/*
 * fuzz_ruletest.c: libFuzzer target for the `tests:` reader of the rule-test runner
 * (tw_ruletest_load) and its matcher (tw_ruletest_match).
 *
 * Each input is read as a whole rule file; every test it yields has its given events read back
 * (each must be a NUL-terminated JSON object of the stated length) and is matched against a fixed
 * set of alerts. The pipeline is not run: that is the engine's own fuzzers' ground. Any crash,
 * leak, sanitizer report or unbounded time is a finding; load errors are expected.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tw_error.h"
#include "tw_ruletest.h"

static const char *const kAlerts[] = {
    "{\"alert_id\":\"a\",\"rule\":\"r\",\"severity\":\"high\",\"by\":\"institution_id\","
    "\"key\":\"52440106MJL176301K\",\"institution_id\":\"52440106MJL176301K\",\"region\":"
    "\"440106\",\"event_time\":\"2025-03-01T10:00:00.000+08:00\",\"message\":\"payment of 6000 "
    "yuan\",\"values\":{\"amount_fen\":600000},\"event_ids\":[\"1-1\"]}",
    "{\"rule\":\"prepaid_over_cap\",\"key\":\"A\",\"values\":{}}",
    "{\"rule\":\"classes_stopped\",\"event_time\":\"2025-03-10T00:00:00.000+08:00\"}",
    "{\"rule\":\"r\",\"region\":\"440106\"}",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  tw_ruletest_suite_t *s = NULL;
  tw_rule_error_t err;
  if (tw_ruletest_load("fuzz.yaml", (const char *)data, size, &s, &err) != 0) {
    if (s != NULL) abort(); /* nothing is handed out on failure */
    return 0;
  }
  size_t lens[sizeof kAlerts / sizeof kAlerts[0]];
  for (size_t k = 0; k < sizeof kAlerts / sizeof kAlerts[0]; k++) lens[k] = strlen(kAlerts[k]);
  for (size_t i = 0; i < tw_ruletest_count(s); i++) {
    if (tw_ruletest_name(s, i) == NULL) abort();
    for (size_t j = 0; j < tw_ruletest_n_given(s, i); j++) {
      size_t len = 0;
      int line = 0;
      const char *json = tw_ruletest_given_json(s, i, j, &len, &line);
      if (json == NULL || strlen(json) > len || json[0] != '{' || line <= 0) abort();
    }
    size_t n_set = 0;
    const char *const *set = tw_ruletest_set(s, i, &n_set);
    for (size_t k = 0; k < n_set; k++)
      if (strchr(set[k], '=') == NULL) abort();
    tw_ruletest_report_t rep;
    tw_ruletest_report_init(&rep);
    int rc = tw_ruletest_match(s, i, kAlerts, lens, sizeof kAlerts / sizeof kAlerts[0], &rep);
    if (rc != 0 && rc != TW_ENOMEM) abort();
    tw_ruletest_report_fini(&rep);
  }
  tw_ruletest_free(s);
  return 0;
}
