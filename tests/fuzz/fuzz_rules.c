/*
 * fuzz_rules.c: libFuzzer target for the rule loader and the expression compiler.
 *
 * Each input is used twice: as a whole rule file (tw_rules_load_ex, in diagnostics mode with a
 * --set override, then plainly), whose compiled conditions and messages are then evaluated
 * against fixed payment and complaint events with fake aggregates and bucket series; and, when
 * short, as one expression compiled and evaluated against a fixed ruleset (params, lists,
 * macros, aggregates, a bucketed one). The hand-made schema and the fixed ruleset are built once.
 * Any crash, leak, sanitizer report or unbounded time is a finding; load and evaluation errors are
 * expected.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../unit/rules_test_schema.h"
#include "rules_internal.h"
#include "tw_rules.h"

static const char FIXED[] =
    "version: 1\n"
    "lists:\n"
    "  words: [跑路, 卷款, 关门, \"a.b\"]\n"
    "params:\n"
    "  cap: 5000yuan\n"
    "  ratio: 0.3\n"
    "macros:\n"
    "  unconsumed: collected_all - 1yuan\n"
    "aggregates:\n"
    "  collected_all: {on: [payment], by: institution_id, fn: sum(amount_fen), window: all}\n"
    "  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}\n"
    "  weekly: {on: [payment], by: institution_id, fn: sum(amount_fen), window: 63d, bucket: 7d}\n"
    "  avg_hours: {on: [payment], by: institution_id, fn: avg(class_hours), window: 7d}\n"
    "  low: {on: [payment], by: institution_id, fn: min(amount_fen), window: 28d, bucket: 7d}\n";

static tw_schema_t schema;
static tw_ruleset_t *fixed;
static tw_event_t events[2];

/* Extreme values on purpose: sums near INT64_MAX, odd presence. */
static int agg_cb(void *ud, size_t index, tw_agg_out_t *agg) {
  (void)ud;
  memset(agg, 0, sizeof *agg);
  agg->present = index % 3 != 2;
  agg->value = index == 0 ? INT64_C(9223372036854775000) : index % 2 ? INT64_MIN + 1 : 3;
  agg->count = index % 4 == 3 ? 0 : 7;
  return 0;
}

static int series_cb(void *ud, size_t index, tw_agg_out_t *buf, size_t cap, size_t *n) {
  (void)ud;
  size_t want = 1 + index % 9;
  if (want > cap) return -7; /* TW_ETOOBIG */
  for (size_t i = 0; i < want; i++) {
    memset(&buf[i], 0, sizeof buf[i]);
    buf[i].present = (i + index) % 3 != 0;
    buf[i].value = i % 2 ? INT64_MAX - (int64_t)i : (int64_t)(i * 1000) - 5;
    buf[i].count = (int64_t)(i % 3);
  }
  *n = want;
  return 0;
}

static void ignore_diag(void *ud, const tw_rule_error_t *d, bool warning) {
  (void)ud;
  (void)d;
  (void)warning;
}

static void init_once(void) {
  static int done;
  tw_rule_error_t err;
  if (done) return;
  done = 1;
  ts_build(&schema);
  if (tw_rules_load_buffer("fixed.yaml", FIXED, strlen(FIXED), &schema, &fixed, &err) != 0) abort();
  for (int i = 0; i < 2; i++)
    if (tw_event_init(&events[i]) != 0) abort();
  ts_envelope(&events[0], TT_PAYMENT, "p-1");
  ts_set_int(&events[0], TS_AMOUNT_FEN, TW_V_MONEY, 600000);
  ts_set_int(&events[0], TS_CLASS_HOURS, TW_V_INT, INT64_MIN);
  ts_set_str(&events[0], TS_CHANNEL, "supervised");
  ts_envelope(&events[1], TT_COMPLAINT, "c-1");
  ts_set_str(&events[1], TS_TEXT, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa! 机构跑路了");
}

static void eval_all(const tw_expr_t *e, const tw_template_t *t) {
  for (int i = 0; i < 2; i++) {
    tw_eval_ctx_t ctx;
    tw_value_t v;
    char buf[128];
    memset(&ctx, 0, sizeof ctx);
    ctx.ev = &events[i];
    ctx.now_ms = events[i].ts_ms;
    ctx.agg_get = agg_cb;
    ctx.agg_series = series_cb;
    if (e != NULL) (void)tw_expr_eval(e, &ctx, &v);
    if (t != NULL) (void)tw_template_render(t, &ctx, buf, sizeof buf);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init_once();
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  const char *set[] = {"cap=1yuan", "ratio=2"};
  tw_rules_load_opts_t opts = {set, 2, ignore_diag, NULL};
  if (tw_rules_load_ex("fuzz.yaml", (const char *)data, size, &schema, &opts, &rs, &err) == 0)
    tw_rules_free(rs);
  rs = NULL;
  if (tw_rules_load_buffer("fuzz.yaml", (const char *)data, size, &schema, &rs, &err) == 0) {
    for (size_t i = 0; i < tw_rules_n_rules(rs); i++)
      eval_all(tw_rules_rule(rs, i)->when, tw_rules_rule(rs, i)->message);
    for (size_t i = 0; i < tw_rules_n_aggregates(rs); i++)
      eval_all(tw_rules_aggregate(rs, i)->where, NULL);
    tw_rules_free(rs);
  }
  if (size <= 4096) {
    /* one expression against the fixed ruleset; its nodes stay in that arena, so bound the total */
    static size_t compiled_bytes;
    if (compiled_bytes > (64u << 20) || fixed->n_nodes > TW__MAX_RULESET_NODES / 2) {
      tw_rules_free(fixed);
      fixed = NULL;
      if (tw_rules_load_buffer("fixed.yaml", FIXED, strlen(FIXED), &schema, &fixed, &err) != 0)
        abort();
      compiled_bytes = 0;
    }
    compiled_bytes += size * 8 + 64;
    tw__env_t env = {.rs = fixed, .allow_aggs = 1};
    tw_expr_t *e = NULL;
    tw__perr_t perr;
    if (tw__expr_compile(&env, (const char *)data, size, -1, &e, &perr) == 0) eval_all(e, NULL);
    const tw_template_t *t = NULL;
    if (tw__template_compile(&env, (const char *)data, size, &t, &perr) == 0) eval_all(NULL, t);
  }
  return 0;
}
