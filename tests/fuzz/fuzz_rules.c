/*
 * fuzz_rules.c: libFuzzer target for the rule loader and the expression compiler.
 *
 * Each input is used twice: as a whole rule file (tw_rules_load_buffer), whose compiled
 * conditions and messages are then evaluated against fixed payment and complaint events; and,
 * when short, as one expression compiled and evaluated against a fixed ruleset (lists and
 * aggregates). The hand-made schema and the fixed ruleset are built once. Any crash, leak,
 * sanitizer report or unbounded time is a finding; load and evaluation errors are expected.
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
    "aggregates:\n"
    "  collected_all: {on: [payment], by: institution_id, fn: sum(amount_fen), window: all}\n"
    "  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}\n";

static tw_schema_t schema;
static tw_ruleset_t *fixed;
static tw_event_t events[2];

static int agg_cb(void *ud, size_t index, tw_agg_out_t *agg) {
  int64_t *out = &agg->value;
  agg->present = true;
  (void)ud;
  *out = index == 0 ? INT64_C(9223372036854775000) : 3;
  return 0;
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
    if (e != NULL) (void)tw_expr_eval(e, &ctx, &v);
    if (t != NULL) (void)tw_template_render(t, &ctx, buf, sizeof buf);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  init_once();
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
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
    if (compiled_bytes > (64u << 20)) {
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
