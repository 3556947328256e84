/*
 * test_ruletest.c: the rule-test runner (engine/tw_ruletest.h): the YAML → JSON conversion of
 * given events (scalar kinds, defaults, event ids), parameter overrides, the errors of a bad
 * tests section with their locations, the matching of alerts against expectations (maximum
 * matching, exact counts per named rule, expect_none, field comparisons), runs through the real
 * pipeline (including `at` and `set`), and the example of docs/rules.md ("Rule tests"), which
 * must pass.
 */
#define _XOPEN_SOURCE 700
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_rules.h"
#include "tw_ruletest.h"
#include "tw_schema.h"

static tw_ruletest_suite_t *load_ok(const char *yaml) {
  tw_ruletest_suite_t *s = NULL;
  tw_rule_error_t err;
  int rc = tw_ruletest_load("t.yaml", yaml, strlen(yaml), &s, &err);
  if (rc != 0) fprintf(stderr, "%s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
  assert_int_equal(rc, 0);
  assert_non_null(s);
  return s;
}

static const char *given(const tw_ruletest_suite_t *s, size_t i, size_t j, int *line) {
  size_t len = 0;
  const char *json = tw_ruletest_given_json(s, i, j, &len, line);
  assert_int_equal(len, strlen(json));
  return json;
}

static void test_given_conversion(void **state) {
  (void)state;
  tw_ruletest_suite_t *s = load_ok(
      "version: 1\n"
      "tests:\n"
      "  - name: first\n"
      "    given: []\n"
      "  - name: conversion\n"
      "    defaults: {region: \"440106\", institution_id: \"52440106MJL176301K\", channel: "
      "supervised}\n"
      "    given:\n"
      "      - {type: payment, ts: \"2025-03-01T10:00:00+08:00\", amount_fen: 600000, n: -3, "
      "r: 1.5, e: 1e6, t: true, f: False, z: ~, y: null, zip: 007, plus: +5, q: \"600000\", "
      "s: 'it''s', x: \"a \\\"q\\\"\\nb\\u0001\", channel: unsupervised}\n"
      "      - {type: payment, event_id: mine}\n"
      "      - {nested: {a: 1, b: [x, \"2\"]}, 12: v}\n"
      "  - name: block\n"
      "    given:\n"
      "      - type: complaint\n"
      "        text: |\n"
      "          123\n"
      "        n: 0x10\n"
      "        m: !!str 42\n"
      "    set: {cap: 3000yuan, label: \"x y\", n: 3}\n");
  assert_int_equal(tw_ruletest_count(s), 3);
  assert_string_equal(tw_ruletest_name(s, 1), "conversion");
  assert_int_equal(tw_ruletest_line(s, 1), 5);
  assert_int_equal(tw_ruletest_n_given(s, 0), 0);
  assert_int_equal(tw_ruletest_n_given(s, 1), 3);
  int line = 0;
  /* Plain numbers stay numbers, the YAML core booleans and nulls become JSON's, anything else
   * and everything quoted is a string; defaults fill in what the event lacks; ids are added. */
  assert_string_equal(
      given(s, 1, 0, &line),
      "{\"type\":\"payment\",\"ts\":\"2025-03-01T10:00:00+08:00\",\"amount_fen\":600000,\"n\":-3,"
      "\"r\":1.5,\"e\":1e6,\"t\":true,\"f\":false,\"z\":null,\"y\":null,\"zip\":\"007\","
      "\"plus\":\"+5\",\"q\":\"600000\",\"s\":\"it's\",\"x\":\"a \\\"q\\\"\\nb\\u0001\","
      "\"channel\":\"unsupervised\",\"region\":\"440106\","
      "\"institution_id\":\"52440106MJL176301K\",\"event_id\":\"2-1\"}");
  assert_int_equal(line, 8);
  assert_string_equal(given(s, 1, 1, &line),
                      "{\"type\":\"payment\",\"event_id\":\"mine\",\"region\":\"440106\","
                      "\"institution_id\":\"52440106MJL176301K\",\"channel\":\"supervised\"}");
  assert_int_equal(line, 9);
  assert_string_equal(
      given(s, 1, 2, NULL),
      "{\"nested\":{\"a\":1,\"b\":[\"x\",\"2\"]},\"12\":\"v\",\"region\":\"440106\","
      "\"institution_id\":\"52440106MJL176301K\",\"channel\":\"supervised\","
      "\"event_id\":\"2-3\"}");
  /* Block scalars are strings; a !!str tag makes a plain scalar a string. */
  assert_string_equal(given(s, 2, 0, &line),
                      "{\"type\":\"complaint\",\"text\":\"123\\n\",\"n\":\"0x10\",\"m\":\"42\","
                      "\"event_id\":\"3-1\"}");
  assert_int_equal(line, 13);
  size_t n = 0;
  const char *const *set = tw_ruletest_set(s, 2, &n);
  assert_int_equal(n, 3);
  assert_string_equal(set[0], "cap=3000yuan");
  assert_string_equal(set[1], "label=\"x y\"");
  assert_string_equal(set[2], "n=3");
  tw_ruletest_set(s, 1, &n);
  assert_int_equal(n, 0);
  tw_ruletest_free(s);
}

static void test_no_tests(void **state) {
  (void)state;
  tw_ruletest_suite_t *s = load_ok("version: 1\nrules: []\n");
  assert_int_equal(tw_ruletest_count(s), 0);
  tw_ruletest_free(s);
  s = load_ok("version: 1\ntests:\n");
  assert_int_equal(tw_ruletest_count(s), 0);
  tw_ruletest_free(s);
  s = load_ok("");
  assert_int_equal(tw_ruletest_count(s), 0);
  tw_ruletest_free(s);
  tw_ruletest_free(NULL);
}

typedef struct bad_case {
  const char *yaml;
  int rc;
  const char *where_what; /* "line:col: message" */
} bad_case_t;

static void test_errors(void **state) {
  (void)state;
  static const bad_case_t cases[] = {
      {"tests: 5\n", TW_EINVAL, "1:8: tests must be a list, not a scalar"},
      {"tests:\n  - name: a\n    expcet: []\n", TW_EINVAL,
       "3:5: unknown key 'expcet' in a test (did you mean 'expect'?)"},
      {"tests:\n  - given: []\n", TW_EINVAL, "2:5: a test needs a 'name'"},
      {"tests:\n  - name: ''\n", TW_EINVAL,
       "2:11: a test's name must be a non-empty string of at most 256 bytes"},
      {"tests:\n  - name: a\n  - name: a\n", TW_EINVAL,
       "3:11: duplicate test name 'a' (first at line 2)"},
      {"tests:\n  - [a]\n", TW_EINVAL, "2:5: a test must be a map, not a list"},
      {"tests:\n  - name: a\n    given: [1]\n", TW_EINVAL,
       "3:13: a given event must be a map, not a scalar"},
      {"tests:\n  - name: a\n    given: [{type: x, type: y}]\n", TW_EINVAL,
       "3:23: duplicate key 'type' in a given event"},
      {"tests:\n  - name: a\n    given: [{[k]: v}]\n", TW_EINVAL,
       "3:14: a key in a given event must be a scalar, not a list"},
      {"tests:\n  - name: a\n    given: [{v: {[k]: 1}}]\n", TW_EINVAL,
       "3:18: a map key must be a scalar, not a list"},
      {"tests:\n  - name: a\n    defaults: [1]\n", TW_EINVAL,
       "3:15: defaults must be a map, not a list"},
      {"tests:\n  - name: a\n    at: tomorrow\n", TW_EINVAL,
       "3:9: bad time 'tomorrow' in 'at': write RFC 3339 with an offset "
       "(\"2025-03-20T00:00:00+08:00\") or epoch milliseconds"},
      {"tests:\n  - name: a\n    at: \"2025-03-20T00:00:00\"\n", TW_EINVAL,
       "3:9: bad time '2025-03-20T00:00:00' in 'at': write RFC 3339 with an offset "
       "(\"2025-03-20T00:00:00+08:00\") or epoch milliseconds"},
      {"tests:\n  - name: a\n    at: 9223372036854775807\n", TW_EINVAL,
       "3:9: 'at' is outside the event times the engine accepts (years 0000 to 9999)"},
      {"tests:\n  - name: a\n    at: 99999999999999999999\n", TW_EINVAL,
       "3:9: bad time '99999999999999999999' in 'at': write RFC 3339 with an offset "
       "(\"2025-03-20T00:00:00+08:00\") or epoch milliseconds"},
      {"tests:\n  - name: a\n    expect: [{severity: high}]\n", TW_EINVAL,
       "3:14: an expect item must name its 'rule'"},
      {"tests:\n  - name: a\n    expect: [{rule: r, institution: x}]\n", TW_EINVAL,
       "3:24: unknown alert field 'institution' in an expect item (did you mean "
       "'institution_id'?)"},
      {"tests:\n  - name: a\n    expect: [{rule: [r]}]\n", TW_EINVAL,
       "3:21: 'rule' must be a string, not a list"},
      {"tests:\n  - name: a\n    expect: {rule: r}\n", TW_EINVAL,
       "3:13: expect must be a list, not a map"},
      {"tests:\n  - name: a\n    expect: [{rule: r}]\n    expect_none: [q, r]\n", TW_EINVAL,
       "4:22: rule 'r' is both expected and in expect_none in this test"},
      {"tests:\n  - name: a\n    expect_none: [{r: 1}]\n", TW_EINVAL,
       "3:19: a rule name in expect_none must be a string, not a map"},
      {"tests:\n  - name: a\n    set: {cap: [1]}\n", TW_EINVAL,
       "3:16: the value of parameter 'cap' must be a scalar, not a list"},
      {"tests:\n  - name: a\n    given: [&x {type: payment}]\n", TW_ETOOBIG,
       "3:13: YAML anchor 'x' refused: rule files may not use anchors or aliases"},
      {"lists:\n  a: &x [1]\n  b: *x\ntests: []\n", TW_ETOOBIG,
       "2:6: YAML anchor 'x' refused: rule files may not use anchors or aliases"},
      {"tests: [\n", TW_EPARSE, NULL},
      {"tests: []\n---\ntests: []\n", TW_EINVAL, "2:1: a rule file is one YAML document"},
      {"- a\n", TW_EINVAL,
       "1:1: a rule file is a map of version, lists, aggregates, rules and tests"},
      {"tests: []\ntests: []\n", TW_EINVAL, "2:1: duplicate key 'tests'"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tw_ruletest_suite_t *s = NULL;
    tw_rule_error_t err;
    int rc = tw_ruletest_load("t.yaml", cases[i].yaml, strlen(cases[i].yaml), &s, &err);
    char got[700];
    snprintf(got, sizeof got, "%d:%d: %s", err.line, err.col, err.message);
    if (rc != cases[i].rc || (cases[i].where_what && strcmp(got, cases[i].where_what) != 0))
      fprintf(stderr, "case %zu: rc %d, %s\n", i, rc, got);
    assert_int_equal(rc, cases[i].rc);
    assert_null(s);
    assert_string_equal(err.file, "t.yaml");
    if (cases[i].where_what != NULL) assert_string_equal(got, cases[i].where_what);
  }
}

static void test_bounds(void **state) {
  (void)state;
  /* Nesting deeper than TW_RULETEST_MAX_DEPTH, inside the tests and elsewhere. */
  char yaml[4096];
  for (int where = 0; where < 2; where++) {
    int n = snprintf(yaml, sizeof yaml, "%s",
                     where ? "lists:\n  x: " : "tests:\n  - name: a\n    given: [{v: ");
    for (int d = 0; d < 40; d++) n += snprintf(yaml + n, sizeof yaml - (size_t)n, "[");
    for (int d = 0; d < 40; d++) n += snprintf(yaml + n, sizeof yaml - (size_t)n, "]");
    snprintf(yaml + n, sizeof yaml - (size_t)n, "%s\n", where ? "" : "}]");
    tw_ruletest_suite_t *s = NULL;
    tw_rule_error_t err;
    assert_int_equal(tw_ruletest_load("t.yaml", yaml, strlen(yaml), &s, &err), TW_ETOOBIG);
    assert_non_null(strstr(err.message, "nesting deeper than"));
  }
  /* A given event over the 64 KiB limit of one event. */
  size_t cap = 80 * 1024;
  char *big = malloc(cap);
  assert_non_null(big);
  int n = snprintf(big, cap, "tests:\n  - name: a\n    given:\n      - {text: \"");
  memset(big + n, 'x', 70 * 1024);
  n += 70 * 1024;
  snprintf(big + n, cap - (size_t)n, "\"}\n");
  tw_ruletest_suite_t *s = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_ruletest_load("t.yaml", big, strlen(big), &s, &err), TW_ETOOBIG);
  assert_int_equal(err.line, 4);
  assert_non_null(strstr(err.message, "over the 65536-byte limit"));
  free(big);
  /* A file over the rule loader's limit is refused before it is parsed. */
  assert_int_equal(tw_ruletest_load("t.yaml", "x", TW_RULES_MAX_FILE_BYTES + 1, &s, &err),
                   TW_ETOOBIG);
  assert_int_equal(tw_ruletest_load("/nonexistent/r.yaml", NULL, 0, &s, &err), TW_ENOENT);
}

/* ---- matching -------------------------------------------------------------------------------- */

static int match(const tw_ruletest_suite_t *s, size_t i, const char *const *alerts, size_t n,
                 tw_ruletest_report_t *rep) {
  size_t lens[16];
  assert_true(n <= 16);
  for (size_t k = 0; k < n; k++) lens[k] = strlen(alerts[k]);
  tw_ruletest_report_init(rep);
  return tw_ruletest_match(s, i, alerts, lens, n, rep);
}

#define RA "{\"rule\":\"r\",\"key\":\"A\"}"
#define RB "{\"rule\":\"r\",\"key\":\"B\"}"
#define RC "{\"rule\":\"r\",\"key\":\"C\"}"
#define NA "{\"rule\":\"n\",\"key\":\"A\"}"
#define OA "{\"rule\":\"o\",\"key\":\"A\"}"

static void test_match_counts(void **state) {
  (void)state;
  tw_ruletest_suite_t *s = load_ok(
      "tests:\n"
      "  - name: m\n"
      "    expect:\n"
      "      - {rule: r}\n"
      "      - {rule: r, key: A}\n"
      "    expect_none: [n]\n");
  tw_ruletest_report_t rep;
  /* The first item could take A, leaving the second without: the matching is maximum. Alerts
   * of rules named nowhere are ignored. */
  const char *ok[] = {RA, OA, RB};
  assert_int_equal(match(s, 0, ok, 3, &rep), 0);
  assert_true(rep.passed);
  assert_int_equal(rep.n_lines, 0);
  tw_ruletest_report_fini(&rep);
  const char *ok2[] = {RB, RA};
  assert_int_equal(match(s, 0, ok2, 2, &rep), 0);
  assert_true(rep.passed);
  tw_ruletest_report_fini(&rep);
  /* One alert too many of an expected rule: exact counts. */
  const char *extra[] = {RA, RB, RC};
  assert_int_equal(match(s, 0, extra, 3, &rep), 0);
  assert_false(rep.passed);
  assert_int_equal(rep.n_lines, 1);
  assert_string_equal(rep.lines[0], "+ unexpected " RC);
  tw_ruletest_report_fini(&rep);
  /* One too few: the item only A satisfies is the one reported. */
  const char *few[] = {RB};
  assert_int_equal(match(s, 0, few, 1, &rep), 0);
  assert_false(rep.passed);
  assert_int_equal(rep.n_lines, 1);
  assert_string_equal(rep.lines[0], "- expected {\"rule\":\"r\",\"key\":\"A\"}");
  tw_ruletest_report_fini(&rep);
  /* Nothing at all. */
  assert_int_equal(match(s, 0, NULL, 0, &rep), 0);
  assert_false(rep.passed);
  assert_int_equal(rep.n_lines, 2);
  assert_string_equal(rep.lines[0], "- expected {\"rule\":\"r\"}");
  tw_ruletest_report_fini(&rep);
  /* A rule in expect_none. */
  const char *none[] = {RA, NA, RB};
  assert_int_equal(match(s, 0, none, 3, &rep), 0);
  assert_false(rep.passed);
  assert_int_equal(rep.n_lines, 1);
  assert_string_equal(rep.lines[0], "+ unexpected " NA);
  tw_ruletest_report_fini(&rep);
  /* An alert that is not an alert. */
  const char *junk[] = {"{\"key\":\"A\"}"};
  assert_int_equal(match(s, 0, junk, 1, &rep), TW_EINVAL);
  tw_ruletest_report_fini(&rep);
  const char *notjson[] = {"{"};
  assert_int_equal(match(s, 0, notjson, 1, &rep), TW_EINVAL);
  tw_ruletest_report_fini(&rep);
  tw_ruletest_free(s);
}

static void test_match_fields(void **state) {
  (void)state;
  tw_ruletest_suite_t *s = load_ok(
      "tests:\n"
      "  - name: fields\n"
      "    expect:\n"
      "      - {rule: r, region: 440106, event_time: \"2025-03-01T02:00:00Z\",\n"
      "         values: {amount_fen: 600000}, event_ids: [\"1-1\"], message_contains: 6000 yuan}\n"
      "  - name: severity\n"
      "    expect: [{rule: r, severity: high}]\n"
      "    expect_none: q\n");
  static const char base[] =
      "{\"rule\":\"r\",\"severity\":\"high\",\"region\":\"440106\","
      "\"event_time\":\"2025-03-01T10:00:00.000+08:00\",\"message\":\"payment of 6000 yuan\","
      "\"values\":{\"amount_fen\":600000,\"class_hours\":40},\"event_ids\":[\"1-1\"]}";
  struct {
    const char *from, *to;
  } spoil[] = {
      {"\"440106\"", "\"440107\""},     {"10:00:00.000", "10:00:01.000"},
      {"600000,", "500000,"},           {"[\"1-1\"]", "[\"1-1\",\"1-2\"]"},
      {"of 6000 yuan", "of 7000 yuan"}, {"\"values\":{", "\"valuez\":{"},
  };
  tw_ruletest_report_t rep;
  const char *one[] = {base};
  assert_int_equal(match(s, 0, one, 1, &rep), 0);
  assert_true(rep.passed);
  tw_ruletest_report_fini(&rep);
  for (size_t k = 0; k < sizeof spoil / sizeof spoil[0]; k++) {
    char alert[512];
    const char *at = strstr(base, spoil[k].from);
    assert_non_null(at);
    snprintf(alert, sizeof alert, "%.*s%s%s", (int)(at - base), base, spoil[k].to,
             at + strlen(spoil[k].from));
    one[0] = alert;
    assert_int_equal(match(s, 0, one, 1, &rep), 0);
    if (rep.passed) fprintf(stderr, "spoilt alert %zu matched: %s\n", k, alert);
    assert_false(rep.passed);
    assert_int_equal(rep.n_lines, 2); /* the item, and the alert of the same rule */
    assert_string_equal(
        rep.lines[0],
        "- expected {\"rule\":\"r\",\"region\":440106,"
        "\"event_time\":\"2025-03-01T02:00:00Z\",\"values\":{\"amount_fen\":600000},"
        "\"event_ids\":[\"1-1\"],\"message_contains\":\"6000 yuan\"}");
    tw_ruletest_report_fini(&rep);
  }
  /* A single name in expect_none; severities compare as strings. */
  one[0] = base;
  assert_int_equal(match(s, 1, one, 1, &rep), 0);
  assert_true(rep.passed);
  tw_ruletest_report_fini(&rep);
  const char *q[] = {base, "{\"rule\":\"q\"}"};
  assert_int_equal(match(s, 1, q, 2, &rep), 0);
  assert_false(rep.passed);
  assert_string_equal(rep.lines[0], "+ unexpected {\"rule\":\"q\"}");
  tw_ruletest_report_fini(&rep);
  tw_ruletest_free(s);
}

/* ---- runs through the pipeline --------------------------------------------------------------- */

static char g_dir[256];
static char g_schema[1024];

static void source_path(char *buf, size_t cap, const char *rel) {
  const char *root = getenv("TW_SOURCE_DIR");
  snprintf(buf, cap, "%s/%s", root ? root : TW_SOURCE_DIR, rel);
}

static void write_file(const char *path, const char *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static size_t entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
  closedir(d);
  return n;
}

static const char kRunRules[] =
    "version: 1\n"
    "params:\n"
    "  cap: 5000yuan\n"
    "rules:\n"
    "  - name: big_payment\n"
    "    on: [payment]\n"
    "    by: institution_id\n"
    "    when: amount_fen > cap\n"
    "    severity: high\n"
    "    message: \"payment of {amount_fen / 100} yuan\"\n"
    "tests:\n"
    "  - name: fires\n"
    "    defaults: {institution_id: \"52440106MJL176301K\", region: \"440106\", student_id: S1,\n"
    "               course_id: C1, class_hours: 1, service_days: 1, channel: supervised}\n"
    "    given:\n"
    "      - {type: payment, ts: \"2025-03-01T10:00:00+08:00\", amount_fen: 600000}\n"
    "      - {type: payment, ts: \"2025-03-01T10:05:00+08:00\", amount_fen: 700000}\n"
    "    at: \"2025-03-02T00:00:00+08:00\"\n"
    "    expect:\n"
    "      - {rule: big_payment, message: payment of 7000 yuan, event_ids: [\"1-2\"]}\n"
    "      - {rule: big_payment, message: payment of 6000 yuan, event_ids: [\"1-1\"]}\n"
    "  - name: time goes back\n"
    "    given:\n"
    "      - {type: payment, ts: \"2025-03-01T10:00:00+08:00\", institution_id: "
    "\"52440106MJL176301K\",\n"
    "         region: \"440106\", student_id: S1, course_id: C1, amount_fen: 1, class_hours: 1,\n"
    "         service_days: 1, channel: supervised}\n"
    "    at: \"2025-02-01T00:00:00+08:00\"\n"
    "  - name: with params\n"
    "    set: {cap: 3000yuan}\n"
    "    given:\n"
    "      - {type: payment, ts: \"2025-03-01T10:00:00+08:00\", institution_id: "
    "\"52440106MJL176301K\",\n"
    "         region: \"440106\", student_id: S1, course_id: C1, amount_fen: 400000,\n"
    "         class_hours: 1, service_days: 1, channel: supervised}\n"
    "    expect: [{rule: big_payment, message: payment of 4000 yuan}]\n"
    "  - name: rejected\n"
    "    given:\n"
    "      - {type: payment, ts: \"2025-03-01T10:00:00+08:00\"}\n"
    "    expect_none: [big_payment]\n"
    "  - name: typo\n"
    "    expect_none: [big_paymnet]\n";

static void test_run(void **state) {
  (void)state;
  char rules[512];
  snprintf(rules, sizeof rules, "%s/rules.yaml", g_dir);
  write_file(rules, kRunRules, sizeof kRunRules - 1);
  tw_ruletest_suite_t *s = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_ruletest_load(rules, NULL, 0, &s, &err), 0);
  assert_string_equal(tw_ruletest_path(s), rules);
  assert_int_equal(tw_ruletest_count(s), 5);
  tw_ruletest_opts_t opts = {.schema_path = g_schema, .tmp_dir = g_dir};
  tw_ruletest_report_t rep;

  assert_int_equal(tw_ruletest_run(s, 0, &opts, &rep), 0);
  for (size_t k = 0; k < rep.n_lines; k++) fprintf(stderr, "%s\n", rep.lines[k]);
  assert_true(rep.passed);
  tw_ruletest_report_fini(&rep);

  assert_int_equal(tw_ruletest_run(s, 1, &opts, &rep), 0);
  assert_false(rep.passed);
  assert_int_equal(rep.n_lines, 1);
  assert_string_equal(rep.lines[0],
                      "! at 2025-02-01T00:00:00.000+08:00 is before the newest given event "
                      "(2025-03-01T10:00:00.000+08:00): time cannot go back");
  tw_ruletest_report_fini(&rep);

  assert_int_equal(tw_ruletest_run(s, 2, &opts, &rep), 0); /* set: cap lowered to 3000 yuan */
  for (size_t k = 0; k < rep.n_lines; k++) fprintf(stderr, "%s\n", rep.lines[k]);
  assert_true(rep.passed);
  tw_ruletest_report_fini(&rep);

  assert_int_equal(tw_ruletest_run(s, 3, &opts, &rep), 0);
  assert_false(rep.passed);
  assert_int_equal(rep.n_lines, 1);
  assert_non_null(
      strstr(rep.lines[0], "! given event at line 37 rejected: missing_field (institution_id): "));
  tw_ruletest_report_fini(&rep);

  /* Each run removed its state: only the rule file is left. */
  assert_int_equal(entries(g_dir), 1);

  /* Rule names are checked against the compiled rules. */
  tw_schema_t *schema = NULL;
  tw_schema_error_t serr;
  assert_int_equal(tw_schema_load(g_schema, &schema, &serr), 0);
  tw_ruleset_t *rs = NULL;
  assert_int_equal(tw_rules_load(rules, schema, &rs, &err), 0);
  assert_int_equal(tw_ruletest_check_rules(s, rs, &err), TW_EINVAL);
  assert_int_equal(err.line, 40);
  assert_int_equal(err.col, 19);
  assert_string_equal(err.message,
                      "unknown rule 'big_paymnet' in test 'typo' (did you mean 'big_payment'?)");
  tw_rules_free(rs);
  tw_schema_free(schema);
  tw_ruletest_free(s);
  unlink(rules);
}

/* The example of docs/rules.md, "Rule tests", passes: the docs cannot drift from the runner. */
static void test_docs_example(void **state) {
  (void)state;
  char path[1024];
  source_path(path, sizeof path, "docs/rules.md");
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char doc[1 << 17];
  size_t n = fread(doc, 1, sizeof doc - 1, f);
  fclose(f);
  doc[n] = '\0';
  char *sec = strstr(doc, "\n## Rule tests\n");
  assert_non_null(sec);
  char *p = strstr(sec, "```yaml\n");
  assert_non_null(p);
  p += 8;
  char *end = strstr(p, "```");
  assert_non_null(end);
  char rules[512];
  snprintf(rules, sizeof rules, "%s/doc.yaml", g_dir);
  write_file(rules, p, (size_t)(end - p));
  tw_ruletest_suite_t *s = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_ruletest_load(rules, NULL, 0, &s, &err), 0);
  assert_true(tw_ruletest_count(s) >= 2);
  tw_ruletest_opts_t opts = {.schema_path = g_schema, .tmp_dir = g_dir};
  for (size_t i = 0; i < tw_ruletest_count(s); i++) {
    tw_ruletest_report_t rep;
    assert_int_equal(tw_ruletest_run(s, i, &opts, &rep), 0);
    for (size_t k = 0; k < rep.n_lines; k++) fprintf(stderr, "%s\n", rep.lines[k]);
    assert_true(rep.passed);
    tw_ruletest_report_fini(&rep);
  }
  tw_ruletest_free(s);
  unlink(rules);
}

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "test_ruletest.XXXXXX");
  if (mkdtemp(g_dir) == NULL) return -1;
  source_path(g_schema, sizeof g_schema, "rules/packs/schema.yaml");
  return 0;
}

static int teardown(void **state) {
  (void)state;
  return rmdir(g_dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_given_conversion),
      cmocka_unit_test(test_no_tests),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_match_counts),
      cmocka_unit_test(test_match_fields),
      cmocka_unit_test(test_run),
      cmocka_unit_test(test_docs_example),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
