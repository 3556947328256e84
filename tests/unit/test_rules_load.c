/*
 * test_rules_load.c: loading rule files: a valid file and what it compiles to, the rules firing
 * on hand-built events, and a table of invalid rule texts with their EXACT error strings
 * "name:line:col: message" (line/col point at the offending key, value or expression character).
 * Also the bounds: YAML aliases (case 011, refused fast), file size, list size, nesting.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <sodium.h>

#include "rules_internal.h"
#include "rules_test_schema.h"
#include "tw_error.h"
#include "tw_rules.h"

static tw_schema_t schema;

static const char VALID[] =
    "version: 1\n"
    "lists:\n"
    "  runaway_words: [跑路, 卷款, 关门, 停课, 联系不上, 退费难, 欠薪]\n"
    "  closing_actions: [close, suspend, license_revoked]\n"
    "aggregates:\n"
    "  collected_all: {on: [payment], by: institution_id, fn: sum(amount_fen), window: all}\n"
    "  refunded_all:  {on: [refund], where: 'status == \"paid\"', by: institution_id, fn: "
    "sum(amount_fen), window: all}\n"
    "  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}\n"
    "rules:\n"
    "  - name: prepaid_over_cap\n"
    "    description: one prepaid payment over 5,000 yuan, 60 class hours or 90 days of service\n"
    "    source: \"2022 thirteen-department opinion on non-academic tutoring; "
    "教监管函〔2021〕2号\"\n"
    "    on: [payment]\n"
    "    by: institution_id\n"
    "    when: amount_fen > 5000yuan or class_hours > 60 or service_days > 90\n"
    "    severity: high\n"
    "    cooldown: 1d\n"
    "    message: \"payment of {amount_fen / 100} yuan for {class_hours} class hours, "
    "{service_days} days\"\n"
    "    labels: {family: collection_caps}\n"
    "  - name: complaint_runaway_words\n"
    "    on: [complaint]\n"
    "    by: institution_id\n"
    "    when: text matches any(runaway_words)\n"
    "    severity: high\n"
    "    message: \"complaint names running away or closure\"\n"
    "  - name: complaint_storm\n"
    "    on: [complaint]\n"
    "    by: institution_id\n"
    "    when: |\n"
    "      complaints_7d >= 3\n"
    "        and collected_all - refunded_all > 10000yuan\n"
    "    severity: critical\n"
    "tests:\n"
    "  - anything: goes here for now\n";

/* The state name of an aggregate for a one-aggregate file with the given definition line and
 * list; copied into out. */
static void state_name_of(const char *agg_def, const char *list, char *out, size_t cap) {
  char text[1024];
  snprintf(text, sizeof text,
           "version: 1\nlists:\n  words: [%s]\naggregates:\n  n: %s\nrules:\n"
           "  - name: r\n    on: [complaint]\n    by: institution_id\n    when: n > 0\n"
           "    severity: low\n",
           list, agg_def);
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  int rc = tw_rules_load_buffer("fp.yaml", text, strlen(text), &schema, &rs, &err);
  if (rc != 0) fprintf(stderr, "%s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
  assert_int_equal(rc, 0);
  snprintf(out, cap, "%s", tw_rules_aggregate(rs, 0)->spec.name);
  tw_rules_free(rs);
}

static void test_state_name_follows_definition(void **state) {
  (void)state;
  char a[64], b[64];
  const char *base = "{on: [complaint], by: institution_id, fn: count(), window: 7d}";
  state_name_of(base, "a, b", a, sizeof a);
  state_name_of(base, "a, b", b, sizeof b);
  assert_string_equal(a, b); /* same definition: same state */
  state_name_of(base, "a, c", b, sizeof b);
  assert_string_equal(a, b); /* no filter: the lists do not matter */
  state_name_of("{on: [complaint], by: institution_id, fn: count(), window: 8d}", "a, b", b,
                sizeof b);
  assert_string_not_equal(a, b);
  const char *filtered =
      "{on: [complaint], where: 'text matches any(words)', by: institution_id, fn: count(), "
      "window: 7d}";
  state_name_of(filtered, "a, b", a, sizeof a);
  state_name_of(filtered, "a, c", b, sizeof b);
  assert_string_not_equal(a, b); /* the filter reads the list: a new list is a new series */
  state_name_of(
      "{on: [complaint], where: 'category == \"x\"', by: institution_id, fn: count(), "
      "window: 7d}",
      "a, b", b, sizeof b);
  assert_string_not_equal(a, b);
}

static void test_valid_file(void **state) {
  (void)state;
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  int rc = tw_rules_load_buffer("valid.yaml", VALID, strlen(VALID), &schema, &rs, &err);
  if (rc != 0) fprintf(stderr, "%s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(tw_rules_n_aggregates(rs), 3);
  const tw_agg_def_t *a = tw_rules_aggregate(rs, 0);
  assert_string_equal(a->name, "collected_all");
  /* The state name carries a fingerprint of the definition (see fingerprint_agg). */
  assert_int_equal(strncmp(a->spec.name, "collected_all#", 14), 0);
  assert_int_equal(strlen(a->spec.name), 14 + 16);
  assert_int_equal(a->spec.fn, TW_AGG_SUM);
  assert_int_equal(a->spec.window_ms, 0);
  assert_int_equal(a->on_types, 1u << TT_PAYMENT);
  assert_int_equal(a->by_slot, TW_SLOT_INSTITUTION_ID);
  assert_int_equal(a->arg_slot, TS_AMOUNT_FEN);
  assert_null(a->where);
  assert_int_equal(a->line, 6);
  a = tw_rules_aggregate(rs, 1);
  assert_non_null(a->where);
  assert_int_equal(a->on_types, 1u << TT_REFUND);
  a = tw_rules_aggregate(rs, 2);
  assert_int_equal(a->spec.fn, TW_AGG_COUNT);
  assert_int_equal(a->arg_slot, -1);
  assert_int_equal(a->spec.window_ms, 7 * 86400000LL);
  assert_null(tw_rules_aggregate(rs, 3));

  assert_int_equal(tw_rules_n_rules(rs), 3);
  const tw_rule_t *r = tw_rules_rule(rs, 0);
  assert_string_equal(r->name, "prepaid_over_cap");
  assert_string_equal(r->description,
                      "one prepaid payment over 5,000 yuan, 60 class hours or 90 days of service");
  assert_string_equal(
      r->source, "2022 thirteen-department opinion on non-academic tutoring; 教监管函〔2021〕2号");
  assert_int_equal(r->on_types, 1u << TT_PAYMENT);
  assert_int_equal(r->by_slot, TW_SLOT_INSTITUTION_ID);
  assert_int_equal(r->severity, TW_SEV_HIGH);
  assert_int_equal(r->cooldown_ms, 86400000LL);
  assert_int_equal(r->n_labels, 1);
  assert_string_equal(r->labels[0].key, "family");
  assert_string_equal(r->labels[0].value, "collection_caps");
  assert_int_equal(r->line, 10);
  assert_non_null(r->message);
  r = tw_rules_rule(rs, 1);
  assert_int_equal(r->cooldown_ms, 0);
  assert_string_equal(r->description, "");
  assert_int_equal(r->n_labels, 0);
  r = tw_rules_rule(rs, 2);
  assert_int_equal(r->severity, TW_SEV_CRITICAL);
  assert_int_equal(r->by_slot, TW_SLOT_INSTITUTION_ID);
  assert_int_equal(r->by_derive, TW_KEY_FIELD);
  assert_string_equal(r->by_name, "institution_id");
  assert_null(r->message);

  /* hash: SHA-256 of the bytes, lowercase hex */
  unsigned char d[32];
  char hex[65];
  crypto_hash_sha256(d, (const unsigned char *)VALID, strlen(VALID));
  sodium_bin2hex(hex, sizeof hex, d, sizeof d);
  assert_string_equal(tw_rules_hash(rs), hex);
  assert_int_equal(strlen(tw_rules_hash(rs)), 64);
  tw_rules_free(rs);
}

static int agg_cb(void *ud, size_t index, tw_agg_out_t *agg) {
  int64_t *out = &agg->value;
  agg->present = true;
  const int64_t *values = ud;
  *out = values[index];
  return 0;
}

static void test_rules_fire(void **state) {
  (void)state;
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_rules_load_buffer("valid.yaml", VALID, strlen(VALID), &schema, &rs, &err), 0);
  tw_event_t ev;
  tw_event_init(&ev);
  ts_envelope(&ev, TT_PAYMENT, "p-1");
  ts_set_int(&ev, TS_AMOUNT_FEN, TW_V_MONEY, 600000);
  ts_set_int(&ev, TS_CLASS_HOURS, TW_V_INT, 40);
  ts_set_int(&ev, TS_SERVICE_DAYS, TW_V_INT, 30);
  int64_t aggs[3] = {2000000, 100000, 5};
  tw_eval_ctx_t ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.ev = &ev;
  ctx.now_ms = ev.ts_ms;
  ctx.agg_get = agg_cb;
  ctx.ud = aggs;
  tw_value_t v;
  const tw_rule_t *r = tw_rules_rule(rs, 0);
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), 0);
  assert_int_equal(v.kind, TW_V_BOOL);
  assert_int_equal(v.u.i, 1);
  assert_int_equal(ctx.n_reads, 1);
  assert_string_equal(ctx.reads[0].name, "amount_fen");
  char msg[256];
  assert_true(tw_template_render(r->message, &ctx, msg, sizeof msg) > 0);
  assert_string_equal(msg, "payment of 6000 yuan for 40 class hours, 30 days");
  /* under every cap: no alert */
  ts_set_int(&ev, TS_AMOUNT_FEN, TW_V_MONEY, 500000);
  memset(ctx.reads, 0, sizeof ctx.reads);
  ctx.n_reads = 0;
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), 0);
  assert_int_equal(v.u.i, 0);
  assert_int_equal(ctx.n_reads, 3);

  /* the literal-block rule over aggregates */
  r = tw_rules_rule(rs, 2);
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), 0);
  assert_int_equal(v.u.i, 1);
  aggs[2] = 2;
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), 0);
  assert_int_equal(v.u.i, 0);

  /* the refund aggregate's where */
  ts_envelope(&ev, TT_REFUND, "r-1");
  ts_set_str(&ev, TS_STATUS, "paid");
  assert_int_equal(tw_expr_eval(tw_rules_aggregate(rs, 1)->where, &ctx, &v), 0);
  assert_int_equal(v.u.i, 1);
  ts_envelope(&ev, TT_REFUND, "r-2");
  ts_set_str(&ev, TS_STATUS, "requested");
  assert_int_equal(tw_expr_eval(tw_rules_aggregate(rs, 1)->where, &ctx, &v), 0);
  assert_int_equal(v.u.i, 0);

  /* complaint words */
  ts_envelope(&ev, TT_COMPLAINT, "c-1");
  ts_set_str(&ev, TS_TEXT, "老师说机构要停课了");
  r = tw_rules_rule(rs, 1);
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), 0);
  assert_int_equal(v.u.i, 1);
  ts_set_str(&ev, TS_TEXT, "课程很好");
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), 0);
  assert_int_equal(v.u.i, 0);
  tw_event_fini(&ev);
  tw_rules_free(rs);
}

/* ---- invalid files: exact errors ---- */

typedef struct bad {
  const char *text;
  int rc;
  const char *want; /* "name:line:col: message" */
} bad_t;

#define HEAD                                                                                   \
  "version: 1\nrules:\n  - name: r\n    on: [payment]\n    by: institution_id\n    severity: " \
  "low\n"

static const bad_t bad_cases[] = {
    {"version: 2\n", TW_EINVAL,
     "bad.yaml:1:10: unsupported version '2': this tutorwatch reads version 1"},
    {"rules: []\n", TW_EINVAL, "bad.yaml:1:1: missing 'version: 1'"},
    {"", TW_EINVAL, "bad.yaml:1:1: empty rule file: expected 'version: 1'"},
    {"- 1\n", TW_EINVAL, "bad.yaml:1:1: a rule file is a mapping with 'version: 1'"},
    {"version: 1\nrulez: []\n", TW_EINVAL,
     "bad.yaml:2:1: unknown key 'rulez' in the rule file (did you mean 'rules'?)"},
    {"version: 1\nparamz: {}\n", TW_EINVAL,
     "bad.yaml:2:1: unknown key 'paramz' in the rule file (did you mean 'params'?)"},
    {"version: 1\nversion: 1\n", TW_EINVAL,
     "bad.yaml:2:1: duplicate key 'version' (first at line 1)"},
    {"version: 1\nrules: [\n", TW_EPARSE,
     "bad.yaml:3:1: YAML: did not find expected node content while parsing a flow node"},
    {HEAD "    when: amount_fen > 5000\n", TW_ETYPE,
     "bad.yaml:7:24: compare money with money: write 5000yuan or 500000fen"},
    {HEAD "    when: amout_fen > 5000yuan\n", TW_EINVAL,
     "bad.yaml:7:11: unknown field 'amout_fen' (did you mean 'amount_fen'?)"},
    {HEAD "    when: 'amount_fen > 5000'\n", TW_ETYPE,
     "bad.yaml:7:25: compare money with money: write 5000yuan or 500000fen"},
    {HEAD "    when: 'channel == ''x'' and amount_fen > 5000yuan'\n", TW_EPARSE,
     "bad.yaml:7:23: unexpected character '''"},
    {HEAD "    when: \"channel == \\\"x\\\" and amount_fen > 5000\"\n", TW_ETYPE,
     "bad.yaml:7:46: compare money with money: write 5000yuan or 500000fen"},
    {HEAD "    when: \"class_hours > 1 or \\u8dd1 == 1\"\n", TW_EPARSE,
     "bad.yaml:7:31: unexpected character '跑'"},
    {HEAD "    when: \"\\\"\\u8dd1\\\" == channel and amout_fen > 1yuan\"\n", TW_EINVAL,
     "bad.yaml:7:38: unknown field 'amout_fen' (did you mean 'amount_fen'?)"},
    {HEAD "    when: channel matches \"跑路\" or amout_fen > 1yuan\n", TW_EINVAL,
     "bad.yaml:7:35: unknown field 'amout_fen' (did you mean 'amount_fen'?)"},
    {HEAD "    when: |\n      amount_fen > 1yuan and\n        class_hours > 5000yuan\n", TW_ETYPE,
     "bad.yaml:9:21: cannot compare int with money"},
    {HEAD "    when: >\n      amount_fen > 1yuan and\n      class_hours > 5000yuan\n", TW_ETYPE,
     "bad.yaml:7:11: cannot compare int with money"},
    {HEAD "    when: channel matches \"(a\"\n", TW_EPARSE,
     "bad.yaml:7:27: invalid regex at offset 2: missing closing parenthesis"},
    {HEAD "    when: class_hours + 1\n", TW_ETYPE,
     "bad.yaml:7:11: condition must be bool, not int"},
    {HEAD "    when: text == \"x\"\n", TW_EINVAL,
     "bad.yaml:7:11: field 'text' does not occur in the event types this runs on"},
    {HEAD "    when: true\n    message: \"{clas_hours} hours\"\n", TW_EINVAL,
     "bad.yaml:8:16: unknown field 'clas_hours' (did you mean 'class_hours'?)"},
    {HEAD "    when: true\n    message: \"a } b\"\n", TW_EPARSE,
     "bad.yaml:8:17: single '}' in message: write '}}' for a brace"},
    {HEAD, TW_EINVAL, "bad.yaml:3:5: rule 'r' is missing 'when'"},
    {"version: 1\nrules:\n  - on: [payment]\n", TW_EINVAL, "bad.yaml:3:5: rule is missing 'name'"},
    {HEAD "    when: true\n    severty: low\n", TW_EINVAL,
     "bad.yaml:8:5: unknown key 'severty' in a rule (did you mean 'severity'?)"},
    {"version: 1\nrules:\n  - name: r\n    on: [payment]\n    by: institution_id\n    when: true\n"
     "    severity: hihg\n",
     TW_EINVAL, "bad.yaml:7:15: unknown severity 'hihg' (did you mean 'high'?)"},
    {"version: 1\nrules:\n  - name: r\n    on: [paymnt]\n    by: institution_id\n    when: true\n"
     "    severity: low\n",
     TW_EINVAL, "bad.yaml:4:10: unknown event type 'paymnt' (did you mean 'payment'?)"},
    {"version: 1\nrules:\n  - name: r\n    on: [payment]\n    by: institution\n    when: true\n"
     "    severity: low\n",
     TW_EINVAL, "bad.yaml:5:9: unknown field 'institution' (did you mean 'institution_id'?)"},
    {"version: 1\nrules:\n  - name: r\n    on: [payment]\n    by: amount_fen\n    when: true\n"
     "    severity: low\n",
     TW_ETYPE, "bad.yaml:5:9: 'by' must be a string field, and 'amount_fen' is money"},
    {HEAD "    when: true\n    cooldown: 1 day\n", TW_EINVAL,
     "bad.yaml:8:15: cooldown '1 day' is not a duration (write 500ms, 30s, 15m, 12h or 7d)"},
    {"version: 1\nrules:\n  - {name: r, on: [payment], by: institution_id, when: true, severity: "
     "low}\n"
     "  - {name: r, on: [payment], by: institution_id, when: true, severity: low}\n",
     TW_EINVAL, "bad.yaml:4:12: duplicate rule name 'r' (first at line 3)"},
    {"version: 1\nrules:\n  - {name: Bad-Name, on: [payment], by: institution_id, when: true, "
     "severity: low}\n",
     TW_EINVAL, "bad.yaml:3:12: rule name 'Bad-Name' must be lowercase letters, digits and '_'"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: agv(amount_fen), "
     "window: all}\n",
     TW_EINVAL, "bad.yaml:3:46: unknown aggregate function 'agv' (did you mean 'avg'?)"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: median(amount_fen), "
     "window: all}\n",
     TW_EINVAL,
     "bad.yaml:3:46: unknown aggregate function 'median' (count, sum, avg, min, max, distinct, "
     "first or last)"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: sum(amout_fen), "
     "window: all}\n",
     TW_EINVAL, "bad.yaml:3:50: unknown field 'amout_fen' (did you mean 'amount_fen'?)"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: sum(channel), window: "
     "all}\n",
     TW_ETYPE, "bad.yaml:3:50: sum() needs an integer or money field, and 'channel' is string"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count(), window: 7 "
     "days}\n",
     TW_EINVAL,
     "bad.yaml:3:63: window '7 days' is not a duration (write 500ms, 30s, 15m, 12h or 7d)"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count()}\n", TW_EINVAL,
     "bad.yaml:3:3: aggregate 'a' is missing 'window'"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count(), window: all, "
     "wher: x}\n",
     TW_EINVAL, "bad.yaml:3:68: unknown key 'wher' in an aggregate (did you mean 'where'?)"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count(), window: all}\n"
     "  b: {on: [payment], by: institution_id, fn: count(), window: all, where: a > 1}\n",
     TW_EINVAL, "bad.yaml:4:75: aggregate 'a' cannot be used in an aggregate's 'where'"},
    {"version: 1\naggregates:\n  amount_fen: {on: [payment], by: institution_id, fn: count(), "
     "window: all}\n",
     TW_EINVAL, "bad.yaml:3:3: aggregate 'amount_fen' has the name of a field"},
    {"version: 1\nlists:\n  w: [a]\naggregates:\n  w: {on: [payment], by: institution_id, fn: "
     "count(), window: all}\n",
     TW_EINVAL, "bad.yaml:5:3: aggregate 'w' is already defined"},
    {"version: 1\nlists:\n  w: a\n", TW_EINVAL,
     "bad.yaml:3:6: list 'w' must be a sequence of words"},
    {"version: 1\nlists:\n  w: [a, '']\n", TW_EINVAL, "bad.yaml:3:10: empty item in list 'w'"},
    {"version: 1\nlists:\n  w: [a, [b]]\n", TW_EINVAL, "bad.yaml:3:10: list items must be words"},
    {"version: 1\nlists: &x\n  w: [a]\n", TW_ETOOBIG,
     "bad.yaml:2:8: YAML anchor '&x' refused: rule files may not use anchors or aliases"},
    {"version: 1\naggregates:\n ? {a: 1}\n : 2\n", TW_EINVAL,
     "bad.yaml:3:4: mapping keys must be plain names"},
    {"\xEF\xBB\xBF{version: 1, rules: [{name: r, on: [payment], by: region, severity: low, when: "
     "'x'}]}\n",
     TW_EINVAL, "bad.yaml:1:81: unknown field 'x'"},
    {"version: 1\n---\nversion: 1\n", TW_EPARSE,
     "bad.yaml:2:1: a rule file holds one YAML document"},
    /* params */
    {"version: 1\nparams:\n  cap: 5000 yuan\n", TW_EPARSE,
     "bad.yaml:3:13: expected one literal, found more after it"},
    {"version: 1\nparams:\n  cap: 12.505yuan\n", TW_EPARSE,
     "bad.yaml:3:8: money has at most 2 decimals (fen)"},
    {"version: 1\nparams:\n  cap: [1]\n", TW_EINVAL,
     "bad.yaml:3:8: param 'cap' must be one literal (5000yuan, 14d, 3, \"text\")"},
    {"version: 1\nparams:\n  cap: amount_fen\n", TW_EPARSE,
     "bad.yaml:3:8: expected a literal (5000yuan, 14d, 3, 0.3, \"text\", true), found name"},
    {"version: 1\nparams:\n  amount_fen: 1\n", TW_EINVAL,
     "bad.yaml:3:3: param 'amount_fen' has the name of a field"},
    {"version: 1\nparams:\n  w: 1\nlists:\n  w: [a]\n", TW_EINVAL,
     "bad.yaml:5:3: list 'w' is already defined"},
    {"version: 1\nlists:\n  and: [a]\n", TW_EINVAL,
     "bad.yaml:3:3: list name 'and' is a keyword of the language"},
    {HEAD "    when: amount_fen > cap\nparams:\n  cap: 3\n", TW_ETYPE,
     "bad.yaml:7:24: compare money with money: write 5000yuan or 500000fen"},
    /* macros: errors point into the macro's own source */
    {"version: 1\nmacros:\n  a: b + 1\n  b: a + 1\n", TW_EINVAL,
     "bad.yaml:4:6: macro cycle: a -> b -> a"},
    {"version: 1\nmacros:\n  a: a\n", TW_EINVAL, "bad.yaml:3:6: macro cycle: a -> a"},
    {"version: 1\nmacros:\n  big: amout_fen > 1yuan\n", TW_EINVAL,
     "bad.yaml:3:8: unknown field 'amout_fen' (did you mean 'amount_fen'?)"},
    {HEAD "    when: m\nmacros:\n  m: text contains \"x\"\n", TW_EINVAL,
     "bad.yaml:9:6: field 'text' does not occur in the event types this runs on"},
    {"version: 1\nmacros:\n  m: n > 1\naggregates:\n  n: {on: [payment], by: institution_id, "
     "fn: count(), window: 1d, where: m}\n",
     TW_EINVAL, "bad.yaml:3:6: aggregate 'n' cannot be used in an aggregate's 'where'"},
    {"version: 1\nmacros:\n  m: 1 +\n", TW_EPARSE,
     "bad.yaml:3:9: expected a value, found end of expression"},
    {"version: 1\nmacros:\n  m: [1]\n", TW_EINVAL,
     "bad.yaml:3:6: macro 'm' must be one expression"},
    {HEAD "    when: channel == \"x\" or amount_fen > five_k\nmacros:\n  five_k: 5000\n", TW_ETYPE,
     "bad.yaml:7:42: compare money with money: write 5000yuan or 500000fen"},
    {HEAD "    when: true\n    message: \"{m + 1}\"\nmacros:\n  m: 1yuan\n", TW_ETYPE,
     "bad.yaml:8:18: cannot apply '+' to money and int"},
    /* aggregates: functions, buckets, keys */
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: min(channel), "
     "window: 1d}\n",
     TW_ETYPE,
     "bad.yaml:3:50: min() needs an integer, money or time field, and 'channel' is string"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: distinct(), "
     "window: 1d}\n",
     TW_EINVAL, "bad.yaml:3:46: distinct() needs a field: distinct(student_id)"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count(), "
     "window: all, bucket: 1d}\n",
     TW_EINVAL, "bad.yaml:3:76: a window of 'all' has no buckets: remove 'bucket'"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count(), "
     "window: 10d, bucket: 7d}\n",
     TW_EINVAL, "bad.yaml:3:76: window 10d is not a whole number of buckets of 7d"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count(), "
     "window: 10d, bucket: 500ms}\n",
     TW_EINVAL, "bad.yaml:3:76: bucket must be at least 1s"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: institution_id, fn: count(), "
     "window: 5000d, bucket: 1d}\n",
     TW_EINVAL, "bad.yaml:3:78: window / bucket is 5000 buckets; at most 4096"},
    {"version: 1\naggregates:\n  a: {on: [payment], by: cty, fn: count(), window: 1d}\n", TW_EINVAL,
     "bad.yaml:3:26: unknown field 'cty' (did you mean 'city'?)"},
    {"version: 1\naggregates:\n  c: {on: [complaint], by: city, fn: count(), window: 1d}\n"
     "rules:\n  - {name: r, on: [complaint], by: institution_id, when: c > 1, severity: low}\n",
     TW_EINVAL,
     "bad.yaml:5:58: aggregate 'c' is kept by city, and this rule is by institution_id: a rule "
     "reads only aggregates with its own key"},
    {"version: 1\naggregates:\n  c: {on: [complaint], by: city, fn: count(), window: 1d}\n"
     "rules:\n  - {name: r, on: [complaint], by: province, when: c > 1, severity: low}\n",
     TW_EINVAL,
     "bad.yaml:5:52: aggregate 'c' is kept by city, and this rule is by province: a rule reads "
     "only aggregates with its own key"},
    {"version: 1\nrules:\n  - {name: r, every: 1d, by: city, when: true, severity: low}\n",
     TW_EINVAL,
     "bad.yaml:3:30: a rule with 'every' sweeps institutions: 'by' must be institution_id"},
    {HEAD "    when: latest(w) > 1\naggregates:\n  w: {on: [payment], by: institution_id, fn: "
          "count(), window: 400d, bucket: 1d}\n",
     TW_ETOOBIG,
     "bad.yaml:7:18: latest() reads at most 366 buckets, and 'w' has 400 (window / bucket)"},
};

static void test_bad_files(void **state) {
  (void)state;
  int failures = 0;
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const bad_t *c = &bad_cases[i];
    tw_ruleset_t *rs = NULL;
    tw_rule_error_t err;
    int rc = tw_rules_load_buffer("bad.yaml", c->text, strlen(c->text), &schema, &rs, &err);
    char got[1024];
    snprintf(got, sizeof got, "%s:%d:%d: %s", err.file, err.line, err.col, err.message);
    if (rc != c->rc || strcmp(got, c->want) != 0 || rs != NULL) {
      fprintf(stderr, "case %zu:\n  got  %d %s\n  want %d %s\n", i, rc, got, c->rc, c->want);
      failures++;
    }
    tw_rules_free(rs);
  }
  assert_int_equal(failures, 0);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Case 011: a "billion laughs" through aliases is refused at its first anchor, fast. */
static void test_alias_bomb(void **state) {
  (void)state;
  static const char bomb[] =
      "version: 1\n"
      "lists:\n"
      "  a0: &a0 [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
      "  a1: &a1 [*a0,*a0,*a0,*a0,*a0,*a0,*a0,*a0,*a0]\n"
      "  a2: &a2 [*a1,*a1,*a1,*a1,*a1,*a1,*a1,*a1,*a1]\n"
      "rules: []\n";
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  double t0 = now_ms();
  assert_int_equal(tw_rules_load_buffer("bomb.yaml", bomb, strlen(bomb), &schema, &rs, &err),
                   TW_ETOOBIG);
  assert_null(rs);
  assert_int_equal(err.line, 3);
  assert_int_equal(err.col, 7);
  assert_string_equal(err.message,
                      "YAML anchor '&a0' refused: rule files may not use anchors or aliases");
  /* an alias without an anchor is refused too (libyaml reports it before resolving anything) */
  static const char alias[] = "version: 1\nrules: *nothing\n";
  assert_int_not_equal(tw_rules_load_buffer("alias.yaml", alias, strlen(alias), &schema, &rs, &err),
                       0);
  assert_null(rs);
  assert_string_equal(err.message,
                      "YAML alias '*nothing' refused: rule files may not use anchors or aliases");

  const char *dir = getenv("TW_SHARED_CASES");
  if (dir != NULL) {
    char path[1024];
    snprintf(path, sizeof path, "%s/011-yaml-alias-bomb.yaml", dir);
    FILE *fp = fopen(path, "r");
    if (fp != NULL) {
      fclose(fp);
      assert_int_equal(tw_rules_load(path, &schema, &rs, &err), TW_ETOOBIG);
      assert_non_null(strstr(err.message, "aliases"));
    }
  }
  assert_true(now_ms() - t0 < 1000.0);
}

static void test_bounds(void **state) {
  (void)state;
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  /* over TW_RULES_MAX_FILE_BYTES */
  size_t big = TW_RULES_MAX_FILE_BYTES + 1u;
  char *buf = malloc(big);
  memset(buf, '#', big);
  assert_int_equal(tw_rules_load_buffer("big.yaml", buf, big, &schema, &rs, &err), TW_ETOOBIG);
  assert_string_equal(err.message, "rule file is larger than 4194304 bytes");
  free(buf);
  /* a list of 10,001 items */
  size_t cap = 64 + 10001 * 3;
  buf = malloc(cap);
  size_t o = (size_t)sprintf(buf, "version: 1\nlists:\n  w: [");
  for (int i = 0; i < 10001; i++) o += (size_t)sprintf(buf + o, "%s", i ? ",a" : "a");
  o += (size_t)sprintf(buf + o, "]\n");
  assert_int_equal(tw_rules_load_buffer("list.yaml", buf, o, &schema, &rs, &err), TW_ETOOBIG);
  assert_string_equal(err.message, "more than 10000 items in one list");
  free(buf);
  /* YAML nesting */
  char deep[256];
  o = (size_t)sprintf(deep, "version: 1\ntests: ");
  for (int i = 0; i < 40; i++) deep[o++] = '[';
  for (int i = 0; i < 40; i++) deep[o++] = ']';
  deep[o++] = '\n';
  assert_int_equal(tw_rules_load_buffer("deep.yaml", deep, o, &schema, &rs, &err), TW_ETOOBIG);
  assert_string_equal(err.message, "YAML nested deeper than 32 levels");
  /* no such file */
  assert_int_equal(tw_rules_load("/nonexistent/rules.yaml", &schema, &rs, &err), TW_ENOENT);
  assert_string_equal(err.file, "/nonexistent/rules.yaml");
  tw_rules_free(NULL);
}

static void test_empty_sections(void **state) {
  (void)state;
  static const char text[] = "version: 1\nlists:\naggregates:\nrules:\ntests:\n";
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_rules_load_buffer("empty.yaml", text, strlen(text), &schema, &rs, &err), 0);
  assert_int_equal(tw_rules_n_rules(rs), 0);
  assert_int_equal(tw_rules_n_aggregates(rs), 0);
  assert_null(tw_rules_rule(rs, 0));
  tw_rules_free(rs);
  static const char quoted[] = "version: 1\nrules: ''\n";
  assert_int_equal(tw_rules_load_buffer("q.yaml", quoted, strlen(quoted), &schema, &rs, &err),
                   TW_EINVAL);
  assert_string_equal(err.message, "'rules' must be a sequence of rules");
  assert_int_equal(err.line, 2);
  assert_int_equal(err.col, 8);
}

static void test_load_from_file(void **state) {
  (void)state;
  char path[] = "/tmp/tw_rules_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs(VALID, f);
  fclose(f);
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_rules_load(path, &schema, &rs, &err), 0);
  assert_int_equal(tw_rules_n_rules(rs), 3);
  tw_rules_free(rs);
  remove(path);
}

static void test_severity_names(void **state) {
  (void)state;
  assert_string_equal(tw_severity_name(TW_SEV_INFO), "info");
  assert_string_equal(tw_severity_name(TW_SEV_LOW), "low");
  assert_string_equal(tw_severity_name(TW_SEV_MEDIUM), "medium");
  assert_string_equal(tw_severity_name(TW_SEV_HIGH), "high");
  assert_string_equal(tw_severity_name(TW_SEV_CRITICAL), "critical");
  assert_string_equal(tw_severity_name((tw_severity_t)99), "unknown");
}

/* Every ```yaml block of docs/rules.md loads against the shipped schema, without errors: the
 * docs cannot drift from the code. */
static void test_docs_examples(void **state) {
  (void)state;
  const char *root = getenv("TW_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/docs/rules.md", root ? root : TW_SOURCE_DIR);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  static char doc[1 << 18];
  size_t n = fread(doc, 1, sizeof doc - 1, f);
  fclose(f);
  assert_true(n < sizeof doc - 1); /* read whole */
  doc[n] = '\0';
  snprintf(path, sizeof path, "%s/rules/packs/schema.yaml", root ? root : TW_SOURCE_DIR);
  tw_schema_t *shipped = NULL;
  tw_schema_error_t serr;
  assert_int_equal(tw_schema_load(path, &shipped, &serr), 0);
  int blocks = 0;
  for (char *p = strstr(doc, "```yaml\n"); p != NULL; p = strstr(p, "```yaml\n")) {
    p += 8;
    char *end = strstr(p, "```");
    assert_non_null(end);
    tw_ruleset_t *rs = NULL;
    tw_rule_error_t err;
    int rc = tw_rules_load_buffer("docs/rules.md", p, (size_t)(end - p), shipped, &rs, &err);
    if (rc != 0) fprintf(stderr, "block %d: %d:%d: %s\n", blocks, err.line, err.col, err.message);
    assert_int_equal(rc, 0);
    tw_rules_free(rs);
    blocks++;
    p = end + 3;
  }
  tw_schema_free(shipped);
  assert_true(blocks >= 9);
}

/* Bounds found by attacking the loader (each failed before its fix): a key field longer than a
 * state key, durations beyond the engine's time bound, NUL characters in scalars, a macro that
 * multiplies a long string or a big regex at each use. Checked with the shipped schema. */
static void test_attack_bounds(void **state) {
  (void)state;
  const char *root = getenv("TW_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof path, "%s/rules/packs/schema.yaml", root ? root : TW_SOURCE_DIR);
  tw_schema_t *shipped = NULL;
  tw_schema_error_t serr;
  assert_int_equal(tw_schema_load(path, &shipped, &serr), 0);
  static const struct {
    const char *text;
    int rc;
    const char *msg;
  } cases[] = {
      {"version: 1\naggregates:\n  same: {on: [complaint], by: text, fn: count(), window: 7d}\n",
       TW_EINVAL, "'text' may be 4096 bytes long, and a key at most 256: it cannot be a 'by' key"},
      {"version: 1\nrules:\n  - {name: r, on: [alert], by: labels, when: true, severity: low}\n",
       TW_EINVAL,
       "'labels' may be 1024 bytes long, and a key at most 256: it cannot be a 'by' key"},
      {"version: 1\naggregates:\n  n: {on: [payment], by: institution_id, fn: count(), window: "
       "30000000000d}\n",
       TW_EINVAL, "window '30000000000d' is too long (at most 26687997791d, 2^61 ms)"},
      {"version: 1\nrules:\n  - {name: r, on: [payment], by: institution_id, when: true, "
       "severity: low, cooldown: 30000000000d}\n",
       TW_EINVAL, "cooldown '30000000000d' is too long (at most 26687997791d, 2^61 ms)"},
      {"version: 1\nparams:\n  \"cap\\0junk\": 1\n", TW_EPARSE,
       "a NUL character (\\0) in a scalar: names, expressions and texts may not hold one"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tw_ruleset_t *rs = NULL;
    tw_rule_error_t err;
    int rc = tw_rules_load_buffer("a.yaml", cases[i].text, strlen(cases[i].text), shipped, &rs,
                                  &err);
    if (rc != cases[i].rc || strcmp(err.message, cases[i].msg) != 0)
      fail_msg("case %zu: rc %d: %s", i, rc, err.message);
    assert_null(rs);
  }
  /* 15 doublings of a 10 KB string: half a gigabyte before the bound, refused at 256 MiB now */
  size_t cap = 64 * 1024, o;
  char *text = malloc(cap);
  assert_non_null(text);
  o = (size_t)snprintf(text, cap, "version: 1\nmacros:\n  m0: text == \"");
  memset(text + o, 'x', 10000);
  o += 10000;
  o += (size_t)snprintf(text + o, cap - o, "\"\n");
  for (int k = 1; k <= 14; k++)
    o += (size_t)snprintf(text + o, cap - o, "  m%d: m%d or m%d\n", k, k - 1, k - 1);
  o += (size_t)snprintf(text + o, cap - o,
                        "rules:\n  - {name: r, on: [complaint], by: institution_id, when: m14, "
                        "severity: low}\n");
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_rules_load_buffer("lol.yaml", text, o, shipped, &rs, &err), TW_ETOOBIG);
  assert_null(rs);
  assert_string_equal(err.message,
                      "rule file too large: its compiled form (macros expanded at each use, with "
                      "their strings) exceeds 256 MiB");
  free(text);
  tw_schema_free(shipped);
}

/* Aggregate functions, buckets and derived keys compile to what tw_state and the engine need. */
static void test_aggregate_defs(void **state) {
  (void)state;
  static const char text[] =
      "version: 1\n"
      "aggregates:\n"
      "  n: {on: [payment], by: institution_id, fn: count(), window: 7d}\n"
      "  s: {on: [payment], by: institution_id, fn: sum(class_hours), window: 7d}\n"
      "  am: {on: [payment], by: institution_id, fn: avg(amount_fen), window: 7d}\n"
      "  ai: {on: [payment], by: institution_id, fn: avg(class_hours), window: 7d}\n"
      "  mn: {on: [payment], by: institution_id, fn: min(amount_fen), window: 7d}\n"
      "  mx: {on: [payment], by: institution_id, fn: max(ts), window: 7d}\n"
      "  d: {on: [payment], by: institution_id, fn: distinct(student_id), window: 30d}\n"
      "  f: {on: [payment], by: institution_id, fn: first(class_hours), window: all}\n"
      "  l: {on: [consumption], by: institution_id, fn: last(ts), window: all}\n"
      "  wk: {on: [payment], by: institution_id, fn: sum(amount_fen), window: 63d, bucket: 7d}\n"
      "  cc: {on: [complaint], by: city, fn: count(), window: 1d}\n"
      "  pc: {on: [complaint], by: province, fn: distinct(institution_id), window: 1d}\n"
      "  ch: {on: [payment], by: channel, fn: count(), window: 1d}\n"
      "rules:\n"
      "  - {name: by_city, on: [complaint], by: city, when: cc > 10, severity: low}\n"
      "  - {name: by_province, on: [complaint], by: province, when: pc > 10, severity: low}\n"
      "  - {name: by_inst, on: [payment], by: institution_id, severity: low, when: 'n > 1 and s > "
      "1 "
      "and am > 1yuan and ai > 0.5 and mn > 1fen and mx > ts and d > 1 and f > 1 and latest(wk) > "
      "1fen'}\n"
      "  - {name: by_channel, on: [payment], by: channel, when: ch > 1, severity: low}\n";
  static const struct {
    const char *name;
    tw_agg_fn_t fn;
    int arg_slot, arg_kind, value_type;
  } want[] = {
      {"n", TW_AGG_COUNT, -1, TW_V_NULL, TW_V_INT},
      {"s", TW_AGG_SUM, TS_CLASS_HOURS, TW_V_INT, TW_V_INT},
      {"am", TW_AGG_AVG, TS_AMOUNT_FEN, TW_V_MONEY, TW_V_MONEY},
      {"ai", TW_AGG_AVG, TS_CLASS_HOURS, TW_V_INT, TW_V_DEC},
      {"mn", TW_AGG_MIN, TS_AMOUNT_FEN, TW_V_MONEY, TW_V_MONEY},
      {"mx", TW_AGG_MAX, TW_SLOT_TS, TW_V_TIME, TW_V_TIME},
      {"d", TW_AGG_DISTINCT, TS_STUDENT_ID, TW_V_STR, TW_V_INT},
      {"f", TW_AGG_FIRST, TS_CLASS_HOURS, TW_V_INT, TW_V_INT},
      {"l", TW_AGG_LAST, TW_SLOT_TS, TW_V_TIME, TW_V_TIME},
      {"wk", TW_AGG_SUM, TS_AMOUNT_FEN, TW_V_MONEY, TW_V_MONEY},
      {"cc", TW_AGG_COUNT, -1, TW_V_NULL, TW_V_INT},
      {"pc", TW_AGG_DISTINCT, TW_SLOT_INSTITUTION_ID, TW_V_STR, TW_V_INT},
      {"ch", TW_AGG_COUNT, -1, TW_V_NULL, TW_V_INT},
  };
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  int rc = tw_rules_load_buffer("aggs.yaml", text, strlen(text), &schema, &rs, &err);
  if (rc != 0) fprintf(stderr, "%s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(tw_rules_n_aggregates(rs), sizeof want / sizeof want[0]);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const tw_agg_def_t *a = tw_rules_aggregate(rs, i);
    assert_string_equal(a->name, want[i].name);
    assert_int_equal(a->spec.fn, want[i].fn);
    assert_int_equal(a->arg_slot, want[i].arg_slot);
    assert_int_equal(a->arg_kind, want[i].arg_kind);
    assert_int_equal(a->value_type, want[i].value_type);
  }
  const tw_agg_def_t *wk = tw_rules_aggregate(rs, 9);
  assert_int_equal(wk->spec.window_ms, 63 * 86400000LL);
  assert_int_equal(wk->spec.bucket_ms, 7 * 86400000LL);
  assert_int_equal(tw_rules_aggregate(rs, 0)->spec.bucket_ms, 0);
  const tw_agg_def_t *cc = tw_rules_aggregate(rs, 10), *pc = tw_rules_aggregate(rs, 11);
  assert_int_equal(cc->by_slot, TW_SLOT_REGION);
  assert_int_equal(cc->by_derive, TW_KEY_CITY);
  assert_string_equal(cc->by_name, "city");
  assert_int_equal(pc->by_slot, TW_SLOT_REGION);
  assert_int_equal(pc->by_derive, TW_KEY_PROVINCE);
  assert_string_equal(pc->by_name, "province");
  const tw_agg_def_t *ch = tw_rules_aggregate(rs, 12);
  assert_int_equal(ch->by_slot, TS_CHANNEL);
  assert_int_equal(ch->by_derive, TW_KEY_FIELD);
  assert_string_equal(ch->by_name, "channel");
  const tw_rule_t *r = tw_rules_rule(rs, 0);
  assert_int_equal(r->by_slot, TW_SLOT_REGION);
  assert_int_equal(r->by_derive, TW_KEY_CITY);
  assert_string_equal(r->by_name, "city");
  r = tw_rules_rule(rs, 1);
  assert_int_equal(r->by_derive, TW_KEY_PROVINCE);
  assert_string_equal(r->by_name, "province");
  r = tw_rules_rule(rs, 2);
  assert_int_equal(r->by_derive, TW_KEY_FIELD);
  assert_string_equal(r->by_name, "institution_id");
  tw_rules_free(rs);
  /* the bucket is part of the state's identity */
  char a[64], b[64];
  state_name_of("{on: [complaint], by: institution_id, fn: count(), window: 14d}", "a", a,
                sizeof a);
  state_name_of("{on: [complaint], by: institution_id, fn: count(), window: 14d, bucket: 7d}", "a",
                b, sizeof b);
  assert_string_not_equal(a, b);
  state_name_of("{on: [complaint], by: institution_id, fn: count(), window: 14d, bucket: 1d}", "a",
                a, sizeof a);
  assert_string_not_equal(a, b);
}

/* The state name of an aggregate without a bucket is what it was before buckets existed
 * (BLAKE2b-64 of on, by, fn, window, where), so upgrading keeps the stored series. */
static void test_state_name_stable(void **state) {
  (void)state;
  char got[64];
  state_name_of("{on: [complaint], by: institution_id, fn: count(), window: 7d}", "a", got,
                sizeof got);
  crypto_generichash_state h;
  unsigned char out[8];
  char hex[17], want[64];
  static const char *const parts[][2] = {{"on", "complaint"},
                                         {"by", "institution_id"},
                                         {"fn", "count()"},
                                         {"window", "7d"},
                                         {"where", NULL}};
  crypto_generichash_init(&h, NULL, 0, sizeof out);
  for (size_t i = 0; i < 5; i++) {
    crypto_generichash_update(&h, (const unsigned char *)parts[i][0], strlen(parts[i][0]) + 1);
    if (parts[i][1] != NULL)
      crypto_generichash_update(&h, (const unsigned char *)parts[i][1], strlen(parts[i][1]) + 1);
  }
  crypto_generichash_final(&h, out, sizeof out);
  sodium_bin2hex(hex, sizeof hex, out, sizeof out);
  snprintf(want, sizeof want, "n#%s", hex);
  assert_string_equal(got, want);
}

/* The state name of an aggregate with a filter follows what the filter reads: a param it reads
 * (and its --set value), a macro it reads; not the params it does not read. */
static void where_state_name(const char *text, const char *set, char *out, size_t cap) {
  const char *sets[] = {set};
  tw_rules_load_opts_t opts = {sets, set ? 1 : 0, NULL, NULL};
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  int rc = tw_rules_load_ex("w.yaml", text, strlen(text), &schema, &opts, &rs, &err);
  if (rc != 0) fprintf(stderr, "%d:%d: %s\n", err.line, err.col, err.message);
  assert_int_equal(rc, 0);
  snprintf(out, cap, "%s", tw_rules_aggregate(rs, 0)->spec.name);
  tw_rules_free(rs);
}

static void test_state_name_params(void **state) {
  (void)state;
  static const char reads[] =
      "version: 1\nparams:\n  floor: 1yuan\n  cap: 5yuan\n"
      "aggregates:\n  n: {on: [payment], where: amount_fen > floor, by: institution_id, fn: "
      "count(), window: 7d}\n";
  static const char via_macro[] =
      "version: 1\nparams:\n  floor: 1yuan\n  cap: 5yuan\nmacros:\n  big: amount_fen > floor\n"
      "aggregates:\n  n: {on: [payment], where: big, by: institution_id, fn: count(), window: "
      "7d}\n";
  char a[64], b[64];
  where_state_name(reads, NULL, a, sizeof a);
  where_state_name(reads, "cap=9yuan", b, sizeof b);
  assert_string_equal(a, b); /* cap is not read by the filter */
  where_state_name(reads, "floor=2yuan", b, sizeof b);
  assert_string_not_equal(a, b);
  where_state_name(via_macro, NULL, a, sizeof a);
  where_state_name(via_macro, "cap=9yuan", b, sizeof b);
  assert_string_equal(a, b);
  where_state_name(via_macro, "floor=2yuan", b, sizeof b);
  assert_string_not_equal(a, b);
}

/* --set overrides a param with a value of its type. */
static void test_set_params(void **state) {
  (void)state;
  static const char text[] =
      "version: 1\n"
      "params:\n"
      "  cap: 5000yuan\n"
      "  ratio: 0.5\n"
      "  word: \"跑路\"\n"
      "  window: 14d\n"
      "rules:\n"
      "  - name: r\n"
      "    on: [payment]\n"
      "    by: institution_id\n"
      "    when: amount_fen > cap and amount_fen * ratio > 1fen and channel != word and "
      "now() - ts < window\n"
      "    severity: low\n";
  static const struct {
    const char *set;
    int rc;
    const char *msg; /* NULL: loads */
  } cases[] = {
      {"cap=3000yuan", 0, NULL},
      {"ratio=2", 0, NULL}, /* an int is a decimal */
      {"ratio=0.25", 0, NULL},
      {"word=关门", 0, NULL}, /* a string param takes the text as it is */
      {"word=\"关门\"", 0, NULL},
      {"word=440106", 0, NULL}, /* not an int: a string param takes its text (region codes) */
      {"word=true", 0, NULL},
      {"word=7d", 0, NULL},
      {"window=30d", 0, NULL},
      {"cap=-1yuan", 0, NULL},
      {"cpa=3000yuan", TW_EINVAL, "--set: unknown param 'cpa' (did you mean 'cap'?)"},
      {"zzzzzzz=1", TW_EINVAL, "--set: unknown param 'zzzzzzz'"},
      {"cap", TW_EINVAL, "--set 'cap': write name=value"},
      {"=1", TW_EINVAL, "--set '=1': write name=value"},
      {"cap=3000", TW_ETYPE, "--set cap=3000: param 'cap' is money, and the value is int"},
      {"window=3000yuan", TW_ETYPE,
       "--set window=3000yuan: param 'window' is duration, and the value is money"},
      {"cap=3000 yuan", TW_EINVAL,
       "--set cap=3000 yuan: expected one literal, found more after it"},
      {"ratio=abc", TW_EINVAL,
       "--set ratio=abc: expected a literal (5000yuan, 14d, 3, 0.3, \"text\", true), found name"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const char *set[] = {cases[i].set};
    tw_rules_load_opts_t opts = {set, 1, NULL, NULL};
    tw_ruleset_t *rs = NULL;
    tw_rule_error_t err;
    int rc = tw_rules_load_ex("set.yaml", text, strlen(text), &schema, &opts, &rs, &err);
    if (rc != cases[i].rc || (cases[i].msg && strcmp(err.message, cases[i].msg) != 0)) {
      fprintf(stderr, "case %zu: got %d '%s'\n", i, rc, err.message);
      fail();
    }
    if (cases[i].msg != NULL) {
      assert_null(rs);
      assert_string_equal(err.file, "set.yaml");
      assert_int_equal(err.line, 0);
    }
    tw_rules_free(rs);
  }
  /* the override reaches the compiled condition */
  const char *set[] = {"cap=7000yuan", "ratio=0.1"};
  tw_rules_load_opts_t opts = {set, 2, NULL, NULL};
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_rules_load_ex("set.yaml", text, strlen(text), &schema, &opts, &rs, &err), 0);
  tw_event_t ev;
  tw_event_init(&ev);
  ts_envelope(&ev, TT_PAYMENT, "p-1");
  ts_set_int(&ev, TS_AMOUNT_FEN, TW_V_MONEY, 600000);
  ts_set_str(&ev, TS_CHANNEL, "supervised");
  tw_eval_ctx_t ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.ev = &ev;
  ctx.now_ms = ev.ts_ms;
  tw_value_t v;
  assert_int_equal(tw_expr_eval(tw_rules_rule(rs, 0)->when, &ctx, &v), 0);
  assert_int_equal(v.u.i, 0); /* 6000 yuan is under the new cap of 7000 */
  tw_rules_free(rs);
  assert_int_equal(tw_rules_load_buffer("set.yaml", text, strlen(text), &schema, &rs, &err), 0);
  assert_int_equal(tw_expr_eval(tw_rules_rule(rs, 0)->when, &ctx, &v), 0);
  assert_int_equal(v.u.i, 1); /* over the file's cap of 5000 */
  tw_rules_free(rs);
  tw_event_fini(&ev);
}

typedef struct collected {
  char lines[32][1024];
  int n;
} collected_t;

static void collect(void *ud, const tw_rule_error_t *d, bool warning) {
  collected_t *c = ud;
  if (c->n < 32)
    snprintf(c->lines[c->n++], sizeof c->lines[0], "%s:%d:%d: %s: %s", d->file, d->line, d->col,
             warning ? "warning" : "error", d->message);
}

static void expect_diags(const char *text, const char *const *set, size_t n_set, int want_rc,
                         const char *const *want, int n_want) {
  collected_t c;
  memset(&c, 0, sizeof c);
  tw_rules_load_opts_t opts = {set, n_set, collect, &c};
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  int rc = tw_rules_load_ex("d.yaml", text, strlen(text), &schema, &opts, &rs, &err);
  int ok = rc == want_rc && c.n == n_want;
  for (int i = 0; ok && i < n_want; i++) ok = strcmp(c.lines[i], want[i]) == 0;
  if (!ok) {
    fprintf(stderr, "rc %d (want %d), %d diagnostics (want %d):\n", rc, want_rc, c.n, n_want);
    for (int i = 0; i < c.n; i++) fprintf(stderr, "  got  %s\n", c.lines[i]);
    for (int i = 0; i < n_want; i++) fprintf(stderr, "  want %s\n", want[i]);
  }
  assert_true(ok);
  if (want_rc != 0) {
    /* tw_rules_load's contract holds: the first error (in load order) is in *err */
    assert_null(rs);
    assert_int_not_equal(err.message[0], '\0');
  }
  tw_rules_free(rs);
}

/* With opts.diag every error is reported (the load goes on with the next item) and the lint
 * warnings are added, in file order, each once. */
static void test_diagnostics(void **state) {
  (void)state;
  static const char errors[] =
      "version: 1\n"
      "params:\n"
      "  cap: 5000yuan\n"
      "  bad: 5000 yuan\n"
      "macros:\n"
      "  a: b + 1\n"
      "  b: a + 1\n"
      "  big: amount_fen > cap\n"
      "aggregates:\n"
      "  n: {on: [payment], by: institution_id, fn: avg(channel), window: 1d}\n"
      "  c: {on: [complaint], by: city, fn: count(), window: 1d}\n"
      "rules:\n"
      "  - {name: r1, on: [payment], by: institution_id, when: a > 1, severity: low}\n"
      "  - {name: r2, on: [payment], by: institution_id, when: n > 1, severity: low}\n"
      "  - {name: r3, on: [complaint], by: institution_id, when: c > 1, severity: hihg}\n"
      "  - {name: r4, on: [complaint], by: institution_id, when: c > 1, severity: low}\n"
      "  - {name: r5, on: [complaint], by: institution_id, when: big, severity: low}\n"
      "  - {name: r5, on: [payment], by: institution_id, when: big, severity: low}\n"
      "  - {name: r6, on: [payment], by: institution_id, when: 'amount_fen > bad or channel in "
      "broken', severity: low}\n"
      "lists:\n"
      "  broken: [a, '']\n";
  static const char *const want_errors[] = {
      "d.yaml:4:13: error: expected one literal, found more after it",
      "d.yaml:7:6: error: macro cycle: a -> b -> a",
      "d.yaml:8:8: error: field 'amount_fen' does not occur in the event types this runs on",
      "d.yaml:10:50: error: avg() needs an integer or money field, and 'channel' is string",
      "d.yaml:15:76: error: unknown severity 'hihg' (did you mean 'high'?)",
      "d.yaml:16:59: error: aggregate 'c' is kept by city, and this rule is by institution_id: a "
      "rule reads only aggregates with its own key",
      "d.yaml:18:12: error: duplicate rule name 'r5' (first at line 17)",
      "d.yaml:21:15: error: empty item in list 'broken'",
  };
  /* no error at r6: its param and list are broken, and that is reported once, where they are */
  expect_diags(errors, NULL, 0, TW_EPARSE, want_errors, 8);

  static const char warnings[] =
      "version: 1\n"
      "params:\n"
      "  cap: 5000yuan\n"
      "  spare: 3\n"
      "lists:\n"
      "  words: [a]\n"
      "macros:\n"
      "  big: amount_fen > cap\n"
      "  unused_m: 1 + 1\n"
      "  risky: channel matches \"(x+)*y\"\n"
      "aggregates:\n"
      "  n: {on: [payment], by: institution_id, fn: count(), window: 1d}\n"
      "  unread: {on: [payment], by: institution_id, fn: count(), window: 1d}\n"
      "  only_where: {on: [payment], by: institution_id, fn: count(), window: 1d, where: big}\n"
      "rules:\n"
      "  - name: r\n"
      "    on: [payment]\n"
      "    by: institution_id\n"
      "    when: big and n > 1 and only_where > 0 and (channel matches \"(a|b+)+$\" or risky)\n"
      "    severity: low\n";
  static const char *const want_warnings[] = {
      "d.yaml:4:3: warning: param 'spare' is never used",
      "d.yaml:6:3: warning: list 'words' is never used",
      "d.yaml:9:3: warning: macro 'unused_m' is never used",
      "d.yaml:10:26: warning: regex may backtrack catastrophically: a quantifier at offset 4 "
      "repeats a group that holds one (as in (a+)+); the match limit will cut it short",
      "d.yaml:13:3: warning: aggregate 'unread' is never read by a rule",
      "d.yaml:19:65: warning: regex may backtrack catastrophically: a quantifier at offset 6 "
      "repeats a group that holds one (as in (a+)+); the match limit will cut it short",
  };
  expect_diags(warnings, NULL, 0, 0, want_warnings, 6);

  /* --set errors have no line; they come first */
  const char *set[] = {"cpa=1yuan"};
  static const char *const want_set[] = {
      "d.yaml:0:0: error: --set: unknown param 'cpa' (did you mean 'cap'?)",
  };
  static const char one[] =
      "version: 1\nparams:\n  cap: 5000yuan\nrules:\n"
      "  - {name: r, on: [payment], by: institution_id, when: amount_fen > cap, severity: low}\n";
  expect_diags(one, set, 1, TW_EINVAL, want_set, 1);
}

/* Macros expand at each use: a "billion laughs" of macros is refused by the node budgets, fast. */
static void test_macro_bomb(void **state) {
  (void)state;
  static const char bomb[] =
      "version: 1\n"
      "macros:\n"
      "  m0: 1+1+1+1+1+1+1+1+1+1\n"
      "  m1: m0+m0+m0+m0+m0+m0+m0+m0+m0+m0\n"
      "  m2: m1+m1+m1+m1+m1+m1+m1+m1+m1+m1\n"
      "  m3: m2+m2+m2+m2+m2+m2+m2+m2+m2+m2\n"
      "  m4: m3+m3+m3+m3+m3+m3+m3+m3+m3+m3\n"
      "  m5: m4+m4+m4+m4+m4+m4+m4+m4+m4+m4\n";
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  double t0 = now_ms();
  assert_int_equal(tw_rules_load_buffer("bomb.yaml", bomb, strlen(bomb), &schema, &rs, &err),
                   TW_ETOOBIG);
  assert_null(rs);
  assert_string_equal(err.message,
                      "expression too large (more than 100000 nodes with its macros expanded)");
  /* many uses of a big macro: the ruleset's budget */
  char *text = malloc(64 * 1024);
  size_t o = (size_t)sprintf(text,
                             "version: 1\nmacros:\n  m0: 1+1+1+1+1+1+1+1+1+1\n"
                             "  m1: m0+m0+m0+m0+m0+m0+m0+m0+m0+m0\n"
                             "  m2: m1+m1+m1+m1+m1+m1+m1+m1+m1+m1\n"
                             "  m3: m2+m2+m2+m2+m2+m2+m2+m2+m2+m2\nrules:\n");
  for (int i = 0; i < 120; i++)
    o += (size_t)sprintf(text + o,
                         "  - {name: r%d, on: [payment], by: institution_id, when: m3 > 1, "
                         "severity: low}\n",
                         i);
  assert_int_equal(tw_rules_load_buffer("many.yaml", text, o, &schema, &rs, &err), TW_ETOOBIG);
  assert_null(rs);
  assert_string_equal(err.message,
                      "rule file too large (more than 2000000 expression nodes with macros "
                      "expanded)");
  free(text);
  assert_true(now_ms() - t0 < 5000.0);
}

/* Names are found through a hash index: a file with 20,000 lists and 9,000 rules (a sequence
 * holds at most 10,000 items) loads in linear time. */
static void test_many_names(void **state) {
  (void)state;
  size_t cap = 4u << 20;
  char *text = malloc(cap);
  size_t o = (size_t)sprintf(text, "version: 1\nlists:\n");
  for (int i = 0; i < 20000; i++) o += (size_t)sprintf(text + o, "  l%d: [w%d]\n", i, i);
  o += (size_t)sprintf(text + o, "rules:\n");
  for (int i = 0; i < 9000; i++)
    o += (size_t)sprintf(text + o,
                         "  - {name: r%d, on: [payment], by: institution_id, when: channel in "
                         "l%d, severity: low}\n",
                         i, 19999 - i);
  assert_true(o < cap);
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  double t0 = now_ms();
  int rc = tw_rules_load_buffer("many.yaml", text, o, &schema, &rs, &err);
  if (rc != 0) fprintf(stderr, "%d:%d: %s\n", err.line, err.col, err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(tw_rules_n_rules(rs), 9000);
  assert_true(now_ms() - t0 < 10000.0);
  tw_rules_free(rs);
  free(text);
}

/* Diagnostics mode reading a file: a missing file is one error without a line. */
static void test_diagnostics_from_path(void **state) {
  (void)state;
  collected_t c;
  memset(&c, 0, sizeof c);
  tw_rules_load_opts_t opts = {NULL, 0, collect, &c};
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_rules_load_ex("/nonexistent/r.yaml", NULL, 0, &schema, &opts, &rs, &err),
                   TW_ENOENT);
  assert_null(rs);
  assert_int_equal(c.n, 1);
  assert_string_equal(c.lines[0],
                      "/nonexistent/r.yaml:0:0: error: cannot open: No such file or directory");
  char path[] = "/tmp/tw_rules_diag_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs("version: 1\nparams:\n  unused: 1\n", f);
  fclose(f);
  memset(&c, 0, sizeof c);
  assert_int_equal(tw_rules_load_ex(path, NULL, 0, &schema, &opts, &rs, &err), 0);
  assert_int_equal(c.n, 1);
  assert_non_null(strstr(c.lines[0], ":3:3: warning: param 'unused' is never used"));
  tw_rules_free(rs);
  remove(path);
}

/* Regex lint: nested unbounded quantifiers; others are not flagged. */
static void test_regex_risky(void **state) {
  (void)state;
  static const struct {
    const char *re;
    long at;
  } cases[] = {
      {"(a+)+$", 4},     {"(a*)*", 4},      {"(\\w+\\s?)*$", 8}, {"((ab)+c)+", 8},
      {"(?:x+){2,}", 6}, {"(a|b+)+", 6},    {"a+b+", -1},        {"(ab)+", -1},
      {"(a+)?", -1},     {"(a+){1,3}", -1}, {"(?>a+)+", -1},     {"(a+)++", -1},
      {"[(a+)]+", -1},   {"\\(a+\\)+", -1}, {"跑路|卷款", -1},   {"(((((a)))))", -1},
      {"(a+", -1},       {"a)+", -1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    long got = tw__regex_risky(cases[i].re, strlen(cases[i].re));
    if (got != cases[i].at)
      fprintf(stderr, "%s: got %ld want %ld\n", cases[i].re, got, cases[i].at);
    assert_int_equal(got, cases[i].at);
  }
}

/* Rules on the internal alert type: a composite rule over alerts compiles; the lint says that
 * alerts of rules on `alert` do not re-enter, unless the condition reads `rule`. */
static void test_alert_rules(void **state) {
  (void)state;
  tw_schema_t s2 = schema;
  int t = (int)s2.n_types++;
  int base = (int)s2.n_fields;
  ts_field(&s2, base, "rule", TW_FK_STRING);
  ts_field(&s2, base + 1, "severity", TW_FK_ENUM);
  ts_field(&s2, base + 2, "labels", TW_FK_TEXT);
  s2.n_fields += 3;
  static const int alert_fields[] = {TS_N_FIELDS, TS_N_FIELDS + 1, TS_N_FIELDS + 2, -1};
  ts_type(&s2, t, "alert", alert_fields);
  s2.types[t].internal = true;
  static const char text[] =
      "version: 1\n"
      "aggregates:\n"
      "  alert_rules_14d: {on: [alert], by: institution_id, fn: distinct(rule), window: 14d}\n"
      "rules:\n"
      "  - name: many_signals\n"
      "    on: [alert]\n"
      "    by: institution_id\n"
      "    when: alert_rules_14d >= 3\n"
      "    severity: critical\n"
      "    cooldown: 14d\n"
      "  - name: critical_echo\n"
      "    on: [alert]\n"
      "    by: institution_id\n"
      "    when: severity == \"critical\" and rule != \"many_signals\" and labels contains "
      "\"runaway\"\n"
      "    severity: high\n";
  static const char *const want[] = {
      "d.yaml:11:11: warning: rule 'critical_echo' runs on alerts without a cooldown: it fires "
      "again on every later alert of its key while its condition holds",
  };
  collected_t c;
  memset(&c, 0, sizeof c);
  tw_rules_load_opts_t opts = {NULL, 0, collect, &c};
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  int rc = tw_rules_load_ex("d.yaml", text, strlen(text), &s2, &opts, &rs, &err);
  if (rc != 0) fprintf(stderr, "%d:%d: %s\n", err.line, err.col, err.message);
  assert_int_equal(rc, 0);
  assert_int_equal(c.n, 1);
  assert_string_equal(c.lines[0], want[0]);
  assert_int_equal(tw_rules_rule(rs, 0)->on_types, 1u << t);
  assert_int_equal(tw_rules_aggregate(rs, 0)->arg_slot, TS_N_FIELDS);
  tw_rules_free(rs);
}

int main(void) {
  ts_build(&schema);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_file),
      cmocka_unit_test(test_state_name_follows_definition),
      cmocka_unit_test(test_rules_fire),
      cmocka_unit_test(test_bad_files),
      cmocka_unit_test(test_alias_bomb),
      cmocka_unit_test(test_bounds),
      cmocka_unit_test(test_load_from_file),
      cmocka_unit_test(test_empty_sections),
      cmocka_unit_test(test_severity_names),
      cmocka_unit_test(test_docs_examples),
      cmocka_unit_test(test_attack_bounds),
      cmocka_unit_test(test_aggregate_defs),
      cmocka_unit_test(test_state_name_stable),
      cmocka_unit_test(test_set_params),
      cmocka_unit_test(test_diagnostics),
      cmocka_unit_test(test_regex_risky),
      cmocka_unit_test(test_alert_rules),
      cmocka_unit_test(test_state_name_params),
      cmocka_unit_test(test_diagnostics_from_path),
      cmocka_unit_test(test_macro_bomb),
      cmocka_unit_test(test_many_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
