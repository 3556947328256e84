/*
 * test_expr.c: table tests of the expression language: expression, event, expected value and
 * kind, or expected evaluation error; a table of compile errors with their exact message and
 * byte position; null semantics, overflow, reads, regex limits (case 010) and templates.
 *
 * Expressions are compiled against a ruleset loaded from RULES below (its lists and aggregates),
 * on the hand-built schema of rules_test_schema.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>

#include <cmocka.h>

#include "rules_internal.h"
#include "rules_test_schema.h"
#include "tw_error.h"
#include "tw_rules.h"

static const char RULES[] =
    "version: 1\n"
    "lists:\n"
    "  runaway_words: [跑路, 卷款, 关门, 停课, 联系不上, 退费难, 欠薪, \"a.b\"]\n"
    "  closing_actions: [close, suspend, license_revoked]\n"
    "aggregates:\n"
    "  collected_all: {on: [payment], by: institution_id, fn: sum(amount_fen), window: all}\n"
    "  refunded_all:  {on: [refund], where: 'status == \"paid\"', by: institution_id, fn: "
    "sum(amount_fen), window: all}\n"
    "  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}\n"
    "  hours_all: {on: [payment], by: institution_id, fn: sum(class_hours), window: all}\n"
    "  avg_paid: {on: [payment], by: institution_id, fn: avg(amount_fen), window: 30d}\n"
    "  avg_hours: {on: [payment], by: institution_id, fn: avg(class_hours), window: 30d}\n"
    "  first_pay: {on: [payment], by: institution_id, fn: first(ts), window: all}\n"
    "  max_paid: {on: [payment], by: institution_id, fn: max(amount_fen), window: 30d}\n"
    "  payers: {on: [payment], by: institution_id, fn: distinct(student_id), window: 30d}\n"
    "  weekly_paid: {on: [payment], by: institution_id, fn: sum(amount_fen), window: 63d, "
    "bucket: 7d}\n"
    "  weekly_count: {on: [payment], by: institution_id, fn: count(), window: 63d, bucket: 7d}\n"
    "  weekly_min: {on: [payment], by: institution_id, fn: min(amount_fen), window: 28d, "
    "bucket: 7d}\n"
    "  weekly_hours: {on: [payment], by: institution_id, fn: avg(class_hours), window: 21d, "
    "bucket: 7d}\n"
    "  city_complaints: {on: [complaint], by: city, fn: count(), window: 1d}\n"
    "  long_daily: {on: [payment], by: institution_id, fn: count(), window: 400d, bucket: 1d}\n"
    "  weekly_first: {on: [payment], by: institution_id, fn: first(ts), window: 14d, bucket: 7d}\n"
    "  avg_neg: {on: [refund], by: institution_id, fn: avg(amount_fen), window: 30d}\n"
    "  half_paid: {on: [payment], by: institution_id, fn: sum(amount_fen), window: 14d, "
    "bucket: 7d}\n"
    "  min_gone: {on: [payment], by: institution_id, fn: min(amount_fen), window: 14d, "
    "bucket: 7d}\n"
    "  last_refund: {on: [refund], by: institution_id, fn: last(ts), window: all}\n"
    "params:\n"
    "  cap: 5000yuan\n"
    "  ratio: 0.25\n"
    "  label: \"x y\"\n"
    "  flag: true\n"
    "  wait: 14d\n"
    "  minus: -3\n"
    "macros:\n"
    "  unconsumed: collected_all - refunded_all\n"
    "  big_payment: amount_fen > cap\n"
    "  twice_big: big_payment and unconsumed > cap\n"
    "rules: []\n";

typedef struct fixture {
  tw_schema_t schema;
  tw_ruleset_t *rs;
  tw_event_t pay, complaint, bare; /* bare: a payment with only the envelope */
} fixture_t;

/* What the fake engine answers for each aggregate of RULES, by index. */
static const tw_agg_out_t agg_values[] = {
    {true, false, 1000000, 3, 0},             /* collected_all */
    {true, false, 200000, 1, 0},              /* refunded_all */
    {true, false, 4, 4, 0},                   /* complaints_7d */
    {true, false, 150, 2, 0},                 /* hours_all */
    {true, false, 5, 2, 0},                   /* avg_paid: 2.5 fen → 3 */
    {true, false, 10, 4, 0},                  /* avg_hours: 2.5 */
    {true, false, TS_T0_MS - 86400000, 1, 0}, /* first_pay */
    {false, false, 0, 0, 0},                  /* max_paid: nothing in the window */
    {true, true, 300, 500, 0},                /* payers (approximate) */
    {true, false, 0, 0, 0},                   /* weekly_paid (as a whole) */
    {true, false, 0, 0, 0},                   /* weekly_count */
    {true, false, 0, 0, 0},                   /* weekly_min */
    {true, false, 0, 0, 0},                   /* weekly_hours */
    {false, false, 0, 0, 0},                  /* city_complaints: empty count is 0 */
    {true, false, 0, 0, 0},                   /* long_daily */
    {true, false, 0, 0, 0},                   /* weekly_first */
    {true, false, -5, 2, 0},                  /* avg_neg: -2.5 fen → -3 */
    {true, false, 0, 0, 0},                   /* half_paid */
    {true, false, 0, 0, 0},                   /* min_gone */
    {false, false, 0, 0, 0},                  /* last_refund: none yet */
};
#define N_AGGS (sizeof agg_values / sizeof agg_values[0])

static int agg_cb(void *ud, size_t index, tw_agg_out_t *agg) {
  (void)ud;
  if (index >= N_AGGS) return TW_EINVAL;
  *agg = agg_values[index];
  return 0;
}

/* Bucket series: {present, value, count}, oldest first, the last one holds now. */
typedef struct fake_bucket {
  bool present;
  int64_t value, count;
} fake_bucket_t;

static const fake_bucket_t weekly_paid[] = {{1, 100, 1}, {1, 200, 1}, {1, 300, 1},
                                            {1, 400, 1}, {0, 0, 0},   {1, 500, 1},
                                            {1, 600, 1}, {1, 700, 1}, {1, 5000, 2}};
static const fake_bucket_t weekly_count[] = {{1, 1, 1}, {1, 2, 2}, {1, 3, 3}, {1, 4, 4},  {0, 0, 0},
                                             {1, 5, 5}, {1, 6, 6}, {1, 7, 7}, {1, 20, 20}};
static const fake_bucket_t weekly_min[] = {{1, 100, 1}, {0, 0, 0}, {1, 300, 2}, {1, 50, 1}};
static const fake_bucket_t weekly_hours[] = {{1, 10, 4}, {1, 9, 3}, {1, 4, 1}};
static const fake_bucket_t weekly_first[] = {{1, TS_T0_MS - 604800000, 1}, {1, TS_T0_MS, 1}};
static const fake_bucket_t half_paid[] = {{1, 1, 1}, {1, 2, 1}};
static const fake_bucket_t min_gone[] = {{1, 100, 1}, {0, 0, 0}};

static int series_cb(void *ud, size_t index, tw_agg_out_t *buf, size_t cap, size_t *n) {
  const fake_bucket_t *b;
  size_t nb;
  (void)ud;
#define PICK(i, arr)                 \
  case i:                            \
    b = arr;                         \
    nb = sizeof arr / sizeof arr[0]; \
    break
  switch (index) {
    PICK(9, weekly_paid);
    PICK(10, weekly_count);
    PICK(11, weekly_min);
    PICK(12, weekly_hours);
    PICK(15, weekly_first);
    PICK(17, half_paid);
    PICK(18, min_gone);
    default:
      return TW_EINVAL;
  }
#undef PICK
  if (nb > cap) return TW_ETOOBIG;
  for (size_t i = 0; i < nb; i++) {
    memset(&buf[i], 0, sizeof buf[i]);
    buf[i].present = b[i].present;
    buf[i].value = b[i].value;
    buf[i].count = b[i].count;
    buf[i].bucket_ms = TS_T0_MS - (int64_t)(nb - 1 - i) * 604800000;
  }
  *n = nb;
  return 0;
}

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  tw_rule_error_t err;
  ts_build(&f->schema);
  int rc = tw_rules_load_buffer("expr.yaml", RULES, strlen(RULES), &f->schema, &f->rs, &err);
  if (rc != 0) {
    fprintf(stderr, "%s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
    free(f);
    return -1;
  }
  tw_event_init(&f->pay);
  tw_event_init(&f->complaint);
  tw_event_init(&f->bare);
  ts_envelope(&f->pay, TT_PAYMENT, "p-1");
  ts_set_int(&f->pay, TS_AMOUNT_FEN, TW_V_INT, 600000); /* decoders may tag money as INT */
  ts_set_int(&f->pay, TS_CLASS_HOURS, TW_V_INT, 40);
  ts_set_int(&f->pay, TS_SERVICE_DAYS, TW_V_INT, 120);
  ts_set_str(&f->pay, TS_CHANNEL, "supervised");
  ts_envelope(&f->complaint, TT_COMPLAINT, "c-1");
  ts_set_str(&f->complaint, TS_TEXT, "家长反映机构老板跑路了，联系不上");
  ts_set_str(&f->complaint, TS_CATEGORY, "refund");
  ts_envelope(&f->bare, TT_PAYMENT, "p-2");
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  tw_rules_free(f->rs);
  tw_event_fini(&f->pay);
  tw_event_fini(&f->complaint);
  tw_event_fini(&f->bare);
  free(f);
  return 0;
}

static tw_expr_t *compile(fixture_t *f, const char *src, uint32_t on_types, tw__perr_t *err) {
  tw__env_t env = {.rs = f->rs, .on_types = on_types, .allow_aggs = 1};
  tw_expr_t *e = NULL;
  if (tw__expr_compile(&env, src, strlen(src), -1, &e, err) != 0) return NULL;
  return e;
}

static void ctx_for(tw_eval_ctx_t *ctx, const tw_event_t *ev) {
  memset(ctx, 0, sizeof *ctx);
  ctx->ev = ev;
  ctx->now_ms = ev->ts_ms;
  ctx->agg_get = agg_cb;
  ctx->agg_series = series_cb;
}

/* ---- value table ---- */

typedef struct vcase {
  const char *expr;
  char ev;       /* 'p' payment, 'c' complaint, 'b' bare payment (fields absent) */
  int rc;        /* expected tw_expr_eval result */
  int kind;      /* expected kind when rc == 0 */
  int64_t i;     /* expected integer value */
  const char *s; /* expected string value for TW_V_STR */
} vcase_t;

#define B(x) TW_V_BOOL, (x), NULL
#define I(x) TW_V_INT, (x), NULL
#define M(x) TW_V_MONEY, (x), NULL
#define D(x) TW_V_DURATION, (x), NULL
#define T(x) TW_V_TIME, (x), NULL
#define N TW_V_NULL, 0, NULL
#define S(x) TW_V_STR, 0, (x)
#define DEC(x) TW_V_DEC, 0, (x) /* as templates print it */
#define BIG18 "999999999999999999.0 * "

static const vcase_t value_cases[] = {
    /* literals */
    {"60", 'p', 0, I(60)},
    {"5000yuan", 'p', 0, M(500000)},
    {"12.50yuan", 'p', 0, M(1250)},
    {"12.5yuan", 'p', 0, M(1250)},
    {"0.01yuan", 'p', 0, M(1)},
    {"500000fen", 'p', 0, M(500000)},
    {"500ms", 'p', 0, D(500)},
    {"15s", 'p', 0, D(15000)},
    {"30m", 'p', 0, D(1800000)},
    {"12h", 'p', 0, D(43200000)},
    {"7d", 'p', 0, D(604800000)},
    {"true", 'p', 0, B(1)},
    {"false", 'p', 0, B(0)},
    {"\"a\\\"b\\\\c\"", 'p', 0, S("a\"b\\c")},
    {"\"tab\\there\\n\"", 'p', 0, S("tab\there\n")},
    {"\"\\u8dd1\\u8DEF\"", 'p', 0, S("跑路")},
    {"-5", 'p', 0, I(-5)},
    /* fields, with the schema's kind */
    {"amount_fen", 'p', 0, M(600000)},
    {"class_hours", 'p', 0, I(40)},
    {"channel", 'p', 0, S("supervised")},
    {"ts", 'p', 0, T(TS_T0_MS)},
    {"institution_id", 'p', 0, S("52440106MJL17630G")},
    /* the brief's prepaid cap rule */
    {"amount_fen > 5000yuan or class_hours > 60 or service_days > 90", 'p', 0, B(1)},
    {"amount_fen > 5000yuan", 'p', 0, B(1)},
    {"amount_fen >= 6000yuan and amount_fen <= 6000yuan", 'p', 0, B(1)},
    {"amount_fen > 6000yuan", 'p', 0, B(0)},
    {"amount_fen == 600000fen", 'p', 0, B(1)},
    {"amount_fen != 600000fen", 'p', 0, B(0)},
    {"class_hours < 60 and not (service_days <= 90)", 'p', 0, B(1)},
    /* arithmetic and its types */
    {"amount_fen / 100", 'p', 0, M(6000)},
    {"amount_fen / 1yuan", 'p', 0, I(6000)},
    {"amount_fen * 2", 'p', 0, M(1200000)},
    {"2 * amount_fen", 'p', 0, M(1200000)},
    {"amount_fen + 1yuan - 50fen", 'p', 0, M(600050)},
    {"amount_fen % 7yuan", 'p', 0, M(600000 % 700)},
    {"1 + 2 * 3", 'p', 0, I(7)},
    {"(1 + 2) * 3", 'p', 0, I(9)},
    {"-7 / 2", 'p', 0, I(-3)}, /* toward zero */
    {"-7 % 2", 'p', 0, I(-1)},
    {"7 - -2", 'p', 0, I(9)},
    {"-class_hours", 'p', 0, I(-40)},
    {"now() - ts", 'p', 0, D(0)},
    {"now() + 1h - ts", 'p', 0, D(3600000)},
    {"ts + 1d", 'p', 0, T(TS_T0_MS + 86400000)},
    {"1d + ts", 'p', 0, T(TS_T0_MS + 86400000)},
    {"ts - 500ms", 'p', 0, T(TS_T0_MS - 500)},
    {"now()", 'p', 0, T(TS_T0_MS)},
    {"1h + 30m", 'p', 0, D(5400000)},
    {"1d / 1h", 'p', 0, I(24)},
    {"1d / 2", 'p', 0, D(43200000)},
    {"now() - ts < 15m", 'p', 0, B(1)},
    /* functions */
    {"abs(-5)", 'p', 0, I(5)},
    {"abs(0fen - amount_fen)", 'p', 0, M(600000)},
    {"min(class_hours, service_days)", 'p', 0, I(40)},
    {"max(class_hours, service_days)", 'p', 0, I(120)},
    {"max(amount_fen, 10000yuan)", 'p', 0, M(1000000)},
    /* in and matches */
    {"channel in [\"supervised\", \"pay_after_class\"]", 'p', 0, B(1)},
    {"channel in [\"unsupervised\"]", 'p', 0, B(0)},
    {"channel in []", 'p', 0, B(0)},
    {"channel in closing_actions", 'p', 0, B(0)},
    {"\"suspend\" in closing_actions", 'p', 0, B(1)},
    {"class_hours in [10, 40, -3]", 'p', 0, B(1)},
    {"class_hours in [10, 41]", 'p', 0, B(0)},
    {"amount_fen in [6000yuan, 1fen]", 'p', 0, B(1)},
    {"text matches any(runaway_words)", 'c', 0, B(1)},
    {"text matches \"老板.*跑路\"", 'c', 0, B(1)},
    {"text matches \"^跑路\"", 'c', 0, B(0)},
    {"category matches any(runaway_words)", 'c', 0, B(0)},
    {"\"axb\" matches any(runaway_words)", 'c', 0, B(0)}, /* "a.b" is escaped: '.' is literal */
    {"\"a.b\" matches any(runaway_words)", 'c', 0, B(1)},
    {"text matches \"\\\\p{Han}{2}\"", 'c', 0, B(1)},
    /* aggregates */
    {"collected_all", 'p', 0, M(1000000)},
    {"collected_all - refunded_all", 'p', 0, M(800000)},
    {"collected_all / refunded_all", 'p', 0, I(5)},
    {"complaints_7d >= 3", 'c', 0, B(1)},
    {"hours_all", 'p', 0, I(150)},
    /* null: absent fields */
    {"amount_fen", 'b', 0, N},
    {"amount_fen > 1yuan", 'b', 0, B(0)},
    {"amount_fen <= 1yuan", 'b', 0, B(0)},
    {"amount_fen == amount_fen", 'b', 0, B(0)},
    {"amount_fen + 1yuan", 'b', 0, N},
    {"amount_fen / 0", 'b', 0, N},
    {"-amount_fen", 'b', 0, N},
    {"abs(amount_fen)", 'b', 0, N},
    {"min(amount_fen, 1yuan)", 'b', 0, N},
    {"not (amount_fen > 1yuan)", 'b', 0, B(1)},
    {"amount_fen > 1yuan or true", 'b', 0, B(1)},
    {"amount_fen > 1yuan and true", 'b', 0, B(0)},
    {"amount_fen in [1fen]", 'b', 0, B(0)},
    {"channel in closing_actions", 'b', 0, B(0)},
    {"text matches \".*\"", 'b', 0, B(0)},
    /* errors at evaluation */
    {"9223372036854775807 + 1", 'p', TW_EOVERFLOW, N},
    {"-9223372036854775807 - 2", 'p', TW_EOVERFLOW, N},
    {"9223372036854775807 * 2", 'p', TW_EOVERFLOW, N},
    {"amount_fen * 9223372036854775807", 'p', TW_EOVERFLOW, N},
    {"(-9223372036854775807 - 1) / -1", 'p', TW_EOVERFLOW, N},
    {"abs(-9223372036854775807 - 1)", 'p', TW_EOVERFLOW, N},
    {"class_hours / 0", 'p', TW_EDIVZERO, N},
    {"class_hours % (class_hours - 40)", 'p', TW_EDIVZERO, N},
    {"amount_fen / 0fen", 'p', TW_EDIVZERO, N},
    {"false or class_hours / 0 > 1", 'p', TW_EDIVZERO, N},
    {"true or class_hours / 0 > 1", 'p', 0, B(1)}, /* short circuit */
    {"false and class_hours / 0 > 1", 'p', 0, B(0)},
    /* decimals */
    {"0.3", 'p', 0, DEC("0.3")},
    {"2.5", 'p', 0, DEC("2.5")},
    {"-0.25", 'p', 0, DEC("-0.25")},
    {"0.1 + 0.2", 'p', 0, DEC("0.3")},
    {"1.5 + 1", 'p', 0, DEC("2.5")},
    {"1 - 1.5", 'p', 0, DEC("-0.5")},
    {"0.5 * 3", 'p', 0, DEC("1.5")},
    {"1 / 3.0", 'p', 0, DEC("0.333333")},
    {"2.0 / 3", 'p', 0, DEC("0.666667")},
    {"10 / 4", 'p', 0, I(2)}, /* int / int stays int */
    {"-(0.5)", 'p', 0, DEC("-0.5")},
    {"abs(-2.5)", 'p', 0, DEC("2.5")},
    {"min(0.5, 0.25)", 'p', 0, DEC("0.25")},
    {"max(0.5, 0.25)", 'p', 0, DEC("0.5")},
    {"0.5 == 0.5", 'p', 0, B(1)},
    {"0.5 < 1", 'p', 0, B(1)},
    {"1 >= 1.0", 'p', 0, B(1)},
    {"class_hours > 39.5", 'p', 0, B(1)},
    {"class_hours != 40.0", 'p', 0, B(0)},
    {"0.0000001", 'p', 0, DEC("0")},
    {"0.0000015", 'p', 0, DEC("0.000002")},
    {"1.5 / 0", 'p', TW_EDIVZERO, N},
    {"1.5 / 0.0", 'p', TW_EDIVZERO, N},
    {"amount_fen / 0.0", 'p', TW_EDIVZERO, N},
    {BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18 BIG18
         BIG18 BIG18 "1.0",
     'p', TW_EOVERFLOW, N}, /* not finite */
    /* money scaled by a decimal: rounded half away from zero to whole fen */
    {"amount_fen * 0.3", 'p', 0, M(180000)},
    {"0.3 * amount_fen", 'p', 0, M(180000)},
    {"1fen * 0.5", 'p', 0, M(1)},
    {"1fen * 0.49", 'p', 0, M(0)},
    {"-1fen * 0.5", 'p', 0, M(-1)},
    {"3fen * 0.5", 'p', 0, M(2)},
    {"-3fen * 0.5", 'p', 0, M(-2)},
    {"5fen / 2.0", 'p', 0, M(3)},
    {"amount_fen / 0.3", 'p', 0, M(2000000)},
    {"90000000000000000fen * 1000.0", 'p', TW_EOVERFLOW, N},
    {"amount_fen * 0.3 > 1700yuan", 'p', 0, B(1)},
    {"amount_fen * 0.5", 'b', 0, N},
    {"0.5 > class_hours", 'b', 0, B(0)}, /* class_hours absent: null */
    /* contains, startswith */
    {"text contains \"跑路\"", 'c', 0, B(1)},
    {"text contains \"退费\"", 'c', 0, B(0)},
    {"text contains \"\"", 'c', 0, B(1)},
    {"text startswith \"家长\"", 'c', 0, B(1)},
    {"text startswith \"跑路\"", 'c', 0, B(0)},
    {"\"ab\" startswith \"abc\"", 'c', 0, B(0)},
    {"category contains text", 'c', 0, B(0)},
    {"text contains category", 'b', 0, B(0)},
    {"channel startswith \"super\" and not (channel contains \"un\")", 'p', 0, B(1)},
    /* days, hours: toward zero */
    {"days(14d)", 'p', 0, I(14)},
    {"days(36h)", 'p', 0, I(1)},
    {"days(-36h)", 'p', 0, I(-1)},
    {"hours(90m)", 'p', 0, I(1)},
    {"hours(now() - ts + 1d)", 'p', 0, I(24)},
    {"days(now() - first_pay)", 'p', 0, I(1)},
    {"days(ts - ts)", 'b', 0, I(0)},
    {"last_refund", 'p', 0, N},
    {"days(now() - last_refund)", 'p', 0, N},
    {"hours(now() - last_refund) > 1", 'p', 0, B(0)},
    {"coalesce(last_refund, first_pay)", 'p', 0, T(TS_T0_MS - 86400000)},
    /* coalesce: first non-null */
    {"coalesce(amount_fen, 1yuan)", 'p', 0, M(600000)},
    {"coalesce(amount_fen, 1yuan)", 'b', 0, M(100)},
    {"coalesce(amount_fen, list_price_fen, 2yuan)", 'b', 0, M(200)},
    {"coalesce(amount_fen, list_price_fen)", 'b', 0, N},
    {"coalesce(max_paid, 0fen)", 'p', 0, M(0)},
    {"coalesce(channel, \"none\")", 'b', 0, S("none")},
    /* aggregate functions and presence */
    {"avg_paid", 'p', 0, M(3)},
    {"avg_neg", 'p', 0, M(-3)},
    {"avg_hours", 'p', 0, DEC("2.5")},
    {"first_pay", 'p', 0, T(TS_T0_MS - 86400000)},
    {"max_paid", 'p', 0, N},
    {"max_paid > 1fen or max_paid <= 1fen", 'p', 0, B(0)},
    {"payers", 'p', 0, I(300)},
    {"city_complaints", 'c', 0, I(0)}, /* an empty count is 0, not null */
    /* series functions */
    {"latest(weekly_paid)", 'p', 0, M(5000)},
    {"mean_of(weekly_paid)", 'p', 0, M(350)},
    {"median_of(weekly_paid)", 'p', 0, M(350)},
    {"stddev_of(weekly_paid)", 'p', 0, M(229)},
    {"zscore(weekly_paid)", 'p', 0, DEC("20.294264")},
    {"latest(weekly_paid) > 3 * median_of(weekly_paid)", 'p', 0, B(1)},
    {"latest(weekly_count)", 'p', 0, I(20)},
    {"mean_of(weekly_count)", 'p', 0, DEC("3.5")},
    {"median_of(weekly_count)", 'p', 0, DEC("3.5")},
    {"stddev_of(weekly_count)", 'p', 0, DEC("2.291288")},
    {"zscore(weekly_count)", 'p', 0, DEC("7.20119")},
    {"zscore(weekly_count) > 3", 'p', 0, B(1)},
    {"latest(weekly_min)", 'p', 0, M(50)}, /* empty buckets of min are skipped */
    {"mean_of(weekly_min)", 'p', 0, M(200)},
    {"median_of(weekly_min)", 'p', 0, M(200)},
    {"stddev_of(weekly_min)", 'p', 0, M(100)},
    {"zscore(weekly_min)", 'p', 0, DEC("-1.5")},
    {"latest(weekly_hours)", 'p', 0, DEC("4")},
    {"mean_of(weekly_hours)", 'p', 0, DEC("2.75")},
    {"median_of(weekly_hours)", 'p', 0, DEC("2.75")},
    {"stddev_of(weekly_hours)", 'p', 0, DEC("0.25")},
    {"zscore(weekly_hours)", 'p', 0, DEC("5")},
    {"latest(weekly_first)", 'p', 0, T(TS_T0_MS)},
    {"mean_of(half_paid)", 'p', 0, M(1)},
    {"zscore(half_paid)", 'p', 0, N}, /* one earlier bucket: no z-score */
    {"stddev_of(half_paid)", 'p', 0, M(0)},
    {"latest(min_gone)", 'p', 0, N}, /* the bucket of now is empty */
    {"zscore(min_gone)", 'p', 0, N},
    {"mean_of(min_gone)", 'p', 0, M(100)},
    /* params are constants; macros expand in place */
    {"cap", 'p', 0, M(500000)},
    {"ratio", 'p', 0, DEC("0.25")},
    {"label", 'p', 0, S("x y")},
    {"flag", 'p', 0, B(1)},
    {"wait", 'p', 0, D(1209600000)},
    {"minus", 'p', 0, I(-3)},
    {"amount_fen * ratio", 'p', 0, M(150000)},
    {"unconsumed", 'p', 0, M(800000)},
    {"big_payment", 'p', 0, B(1)},
    {"twice_big", 'p', 0, B(1)},
    {"big_payment", 'b', 0, B(0)},
    {"unconsumed / 100 * ratio", 'p', 0, M(2000)},
};

static const tw_event_t *pick(fixture_t *f, char c) {
  return c == 'p' ? &f->pay : c == 'c' ? &f->complaint : &f->bare;
}

static void test_values(void **state) {
  fixture_t *f = *state;
  int failures = 0;
  for (size_t i = 0; i < sizeof value_cases / sizeof value_cases[0]; i++) {
    const vcase_t *c = &value_cases[i];
    tw__perr_t perr;
    tw_expr_t *e = compile(f, c->expr, 0, &perr);
    if (e == NULL) {
      fprintf(stderr, "case %zu `%s`: compile error at %zu: %s\n", i, c->expr, perr.pos, perr.msg);
      failures++;
      continue;
    }
    tw_eval_ctx_t ctx;
    tw_value_t v;
    ctx_for(&ctx, pick(f, c->ev));
    int rc = tw_expr_eval(e, &ctx, &v);
    int ok = rc == c->rc;
    if (ok && rc == 0) {
      ok = v.kind == c->kind;
      if (ok && c->kind == TW_V_STR) {
        ok = v.u.s.len == strlen(c->s) && memcmp(v.u.s.ptr, c->s, v.u.s.len) == 0;
      } else if (ok && c->kind == TW_V_DEC) {
        char got[64];
        tw__dec_format(v.u.d, got, sizeof got);
        ok = strcmp(got, c->s) == 0;
        if (!ok) fprintf(stderr, "case %zu: decimal %s, want %s\n", i, got, c->s);
      } else if (ok && c->kind != TW_V_NULL)
        ok = v.u.i == c->i;
    }
    if (!ok) {
      fprintf(stderr,
              "case %zu `%s`: got rc %d kind %d value %lld, want rc %d kind %d value %lld\n", i,
              c->expr, rc, v.kind, (long long)(v.kind == TW_V_STR ? 0 : v.u.i), c->rc, c->kind,
              (long long)c->i);
      failures++;
    }
  }
  assert_int_equal(failures, 0);
}

/* ---- compile error table ---- */

typedef struct ecase {
  const char *expr;
  uint32_t on_types; /* 0: any */
  int rc;
  size_t pos;
  const char *msg;
} ecase_t;

#define PAY (1u << TT_PAYMENT)

static const ecase_t error_cases[] = {
    {"amount_fen > 5000", 0, TW_ETYPE, 13, "compare money with money: write 5000yuan or 500000fen"},
    {"5000 < amount_fen", 0, TW_ETYPE, 0, "compare money with money: write 5000yuan or 500000fen"},
    {"now() - ts > 3600", 0, TW_ETYPE, 13,
     "compare duration with duration: write 500ms, 15s, 30m, 12h or 7d"},
    {"class_hours > 5yuan", 0, TW_ETYPE, 12, "cannot compare int with money"},
    {"amout_fen > 5000yuan", 0, TW_EINVAL, 0,
     "unknown field 'amout_fen' (did you mean 'amount_fen'?)"},
    {"class_hours > 1 and colected_all > 1yuan", 0, TW_EINVAL, 20,
     "unknown field 'colected_all' (did you mean 'collected_all'?)"},
    {"zzzzzz > 1", 0, TW_EINVAL, 0, "unknown field 'zzzzzz'"},
    {"text in runaway_wordz", 0, TW_EINVAL, 8,
     "unknown list 'runaway_wordz' (did you mean 'runaway_words'?)"},
    {"text matches any(closing_action)", 0, TW_EINVAL, 17,
     "unknown list 'closing_action' (did you mean 'closing_actions'?)"},
    {"runaway_words", 0, TW_ETYPE, 0,
     "list 'runaway_words' can only be used after 'in' or inside 'matches any(...)'"},
    {"text", PAY, TW_EINVAL, 0, "field 'text' does not occur in the event types this runs on"},
    {"12.505yuan > amount_fen", 0, TW_EPARSE, 0, "money has at most 2 decimals (fen)"},
    {"1.5d > 1d", 0, TW_EPARSE, 0, "only yuan amounts may have decimals"},
    {"1e6 > 1", 0, TW_EPARSE, 1,
     "unknown unit 'e6' (write 5000yuan, 500000fen, 500ms, 15s, 30m, 12h or 7d)"},
    {"99999999999999999999 > 1", 0, TW_EPARSE, 0, "number too large"},
    {"99999999999999999yuan > 1yuan", 0, TW_EPARSE, 0, "amount too large"},
    {"class_hours > ", 0, TW_EPARSE, 14, "expected a value, found end of expression"},
    {"class_hours = 1", 0, TW_EPARSE, 12, "unexpected '=' (write '==' to compare)"},
    {"class_hours > 1 && true", 0, TW_EPARSE, 16, "unexpected '&' (write 'and' / 'or')"},
    {"(class_hours > 1", 0, TW_EPARSE, 16, "expected ')', found end of expression"},
    {"class_hours > 1)", 0, TW_EPARSE, 15, "unexpected ')'"},
    {"1 < 2 < 3", 0, TW_EPARSE, 6, "comparisons do not chain: use 'and'"},
    {"", 0, TW_EPARSE, 0, "empty expression"},
    {"\"abc", 0, TW_EPARSE, 0, "unterminated string"},
    {"text matches \"\\d+\"", 0, TW_EPARSE, 14,
     "unknown escape '\\d' (use \\\" \\\\ \\n \\t or \\uXXXX; in a regex write \\\\d for \\d)"},
    {"text matches \"(a\"", 0, TW_EPARSE, 13,
     "invalid regex at offset 2: missing closing parenthesis"},
    {"text matches 5", 0, TW_EPARSE, 13,
     "expected a regex string or any(list) after 'matches', found integer"},
    {"amount_fen matches \"a\"", 0, TW_ETYPE, 11,
     "'matches' needs a string on the left, not money"},
    {"class_hours in closing_actions", 0, TW_ETYPE, 12,
     "'in closing_actions' needs a string on the left, not int"},
    {"channel in [\"a\", 1]", 0, TW_ETYPE, 17, "list item is int, but the left side is string"},
    {"channel in [\"a\", channel]", 0, TW_ETYPE, 17, "list items must be literals"},
    {"\"a\" < \"b\"", 0, TW_ETYPE, 4, "'<' needs int, money, duration, time or dec, not string"},
    {"now() - 5", 0, TW_ETYPE, 6, "cannot apply '-' to time and int"},
    {"amount_fen * amount_fen", 0, TW_ETYPE, 11, "cannot apply '*' to money and money"},
    {"ts + ts", 0, TW_ETYPE, 3, "cannot apply '+' to time and time"},
    {"\"a\" + \"b\"", 0, TW_ETYPE, 4, "cannot apply '+' to string and string"},
    {"not class_hours", 0, TW_ETYPE, 0, "'not' needs bool, not int"},
    {"class_hours and true", 0, TW_ETYPE, 0, "'and' needs bool on both sides, not int"},
    {"-channel", 0, TW_ETYPE, 0, "unary '-' needs int, money, duration or dec, not string"},
    {"abs(channel)", 0, TW_ETYPE, 4, "abs() needs int, money, duration or dec, not string"},
    {"max(class_hours, amount_fen)", 0, TW_ETYPE, 0,
     "max() needs two values of the same type (int, money, duration, time or dec), not int and "
     "money"},
    {"abs(1, 2)", 0, TW_EPARSE, 0, "abs() takes 1 argument, not 2"},
    {"now(1)", 0, TW_EPARSE, 0, "now() takes 0 arguments, not 1"},
    {"mx(1, 2)", 0, TW_EINVAL, 0, "unknown function 'mx' (did you mean 'max'?)"},
    {"class_hours > 1 #", 0, TW_EPARSE, 16, "unexpected character '#'"},
    {"class_hours > 5000 yuan", 0, TW_EPARSE, 19,
     "unexpected name 'yuan' (write a unit without a space: 5000yuan, 7d)"},
    {"class_hours > 1 class_hours", 0, TW_EPARSE, 16, "unexpected name 'class_hours'"},
    {"text matches \"跑\" or 跑", 0, TW_EPARSE, 22, "unexpected character '跑'"},
    /* decimals */
    {"0.5 > 1yuan", 0, TW_ETYPE, 4, "cannot compare dec with money"},
    {"amount_fen % 0.5", 0, TW_ETYPE, 11, "cannot apply '%' to money and dec"},
    {"1.5 / amount_fen", 0, TW_ETYPE, 4, "cannot apply '/' to dec and money"},
    {"1.5 + 1d", 0, TW_ETYPE, 4, "cannot apply '+' to dec and duration"},
    {"0.5d", 0, TW_EPARSE, 0, "only yuan amounts may have decimals"},
    {"1.2.3", 0, TW_EPARSE, 3, "unexpected character '.'"},
    /* strings */
    {"channel contains 1", 0, TW_ETYPE, 8, "'contains' needs strings on both sides, not int"},
    {"class_hours startswith \"a\"", 0, TW_ETYPE, 12,
     "'startswith' needs strings on both sides, not int"},
    /* functions */
    {"days(1)", 0, TW_ETYPE, 5, "days() needs a duration, not int"},
    {"hours(ts)", 0, TW_ETYPE, 6, "hours() needs a duration, not time"},
    {"days()", 0, TW_EPARSE, 0, "days() takes 1 argument, not 0"},
    {"coalesce(1)", 0, TW_EPARSE, 0, "coalesce() takes at least 2 arguments, not 1"},
    {"coalesce(1, \"a\")", 0, TW_ETYPE, 12,
     "coalesce() needs arguments of one type: int, then string"},
    {"coalesc(1, 2)", 0, TW_EINVAL, 0, "unknown function 'coalesc' (did you mean 'coalesce'?)"},
    {"latest(collected_all)", 0, TW_ETYPE, 7,
     "latest() needs a bucketed aggregate (with 'bucket'), and 'collected_all' has none"},
    {"latest(amount_fen)", 0, TW_ETYPE, 7, "latest() takes the name of a bucketed aggregate"},
    {"mean_of(1)", 0, TW_ETYPE, 8, "mean_of() takes the name of a bucketed aggregate"},
    {"latest(weekly_payd)", 0, TW_EINVAL, 7,
     "unknown aggregate 'weekly_payd' (did you mean 'weekly_paid'?)"},
    {"mean_of(long_daily)", 0, TW_ETOOBIG, 8,
     "mean_of() reads at most 366 buckets, and 'long_daily' has 400 (window / bucket)"},
    {"mean_of(weekly_first)", 0, TW_ETYPE, 8,
     "mean_of() needs a series of int, money or dec, not time"},
    {"zscore(weekly_paid, 1)", 0, TW_EPARSE, 18, "expected ')', found ','"},
    {"first_pay > 1yuan", 0, TW_ETYPE, 10, "cannot compare time with money"},
    {"avg_hours > 1yuan", 0, TW_ETYPE, 10, "cannot compare dec with money"},
    /* params and macros */
    {"cap > 5", 0, TW_ETYPE, 6, "compare money with money: write 5000yuan or 500000fen"},
    {"capp > 1yuan", 0, TW_EINVAL, 0, "unknown field 'capp' (did you mean 'cap'?)"},
    {"big_paymnt", 0, TW_EINVAL, 0, "unknown field 'big_paymnt' (did you mean 'big_payment'?)"},
    {"big_payment", 1u << TT_COMPLAINT, TW_EINVAL, 0,
     "field 'amount_fen' does not occur in the event types this runs on"},
    {"unconsumed + 1", 0, TW_ETYPE, 11, "cannot apply '+' to money and int"},
};

static void test_compile_errors(void **state) {
  fixture_t *f = *state;
  int failures = 0;
  for (size_t i = 0; i < sizeof error_cases / sizeof error_cases[0]; i++) {
    const ecase_t *c = &error_cases[i];
    tw__perr_t perr;
    memset(&perr, 0, sizeof perr);
    tw_expr_t *e = compile(f, c->expr, c->on_types, &perr);
    if (e != NULL || perr.code != c->rc || perr.pos != c->pos || strcmp(perr.msg, c->msg) != 0 ||
        perr.macro != (strncmp(c->expr, "big_payment", 11) == 0 && c->on_types != 0 ? 2 : 0)) {
      fprintf(stderr, "case %zu `%s`:\n  got  %d @%zu %s\n  want %d @%zu %s\n", i, c->expr,
              perr.code, perr.pos, perr.msg, c->rc, c->pos, c->msg);
      failures++;
    }
  }
  assert_int_equal(failures, 0);
}

static void test_condition_must_be_bool(void **state) {
  fixture_t *f = *state;
  tw__env_t env = {.rs = f->rs, .allow_aggs = 1};
  tw_expr_t *e = NULL;
  tw__perr_t perr;
  assert_int_equal(tw__expr_compile(&env, "class_hours + 1", 15, TW_V_BOOL, &e, &perr), TW_ETYPE);
  assert_string_equal(perr.msg, "condition must be bool, not int");
}

static void test_nesting_limit(void **state) {
  fixture_t *f = *state;
  char buf[512];
  size_t o = 0;
  for (int i = 0; i < 70; i++) buf[o++] = '(';
  buf[o++] = '1';
  for (int i = 0; i < 70; i++) buf[o++] = ')';
  buf[o] = '\0';
  tw__perr_t perr;
  assert_null(compile(f, buf, 0, &perr));
  assert_int_equal(perr.code, TW_ETOOBIG);
  assert_string_equal(perr.msg, "expression nested too deeply (limit 64)");
  /* 60 levels are fine */
  o = 0;
  for (int i = 0; i < 60; i++) buf[o++] = '(';
  buf[o++] = '1';
  for (int i = 0; i < 60; i++) buf[o++] = ')';
  buf[o] = '\0';
  assert_non_null(compile(f, buf, 0, &perr));
  /* a long flat chain grows the tree, not the parser's recursion: bounded by tree depth */
  char *chain = malloc(4 * 400 + 8);
  o = 0;
  chain[o++] = '1';
  for (int i = 0; i < 400; i++) o += (size_t)sprintf(chain + o, " + 1");
  chain[o] = '\0';
  assert_null(compile(f, chain, 0, &perr));
  assert_string_equal(perr.msg, "expression too deep (more than 256 levels)");
  free(chain);
}

static void test_reads(void **state) {
  fixture_t *f = *state;
  tw__perr_t perr;
  tw_expr_t *e = compile(
      f, "amount_fen > 5000yuan or class_hours > 60 or amount_fen > 1yuan or collected_all > 1fen",
      0, &perr);
  assert_non_null(e);
  tw_eval_ctx_t ctx;
  tw_value_t v;
  ctx_for(&ctx, &f->bare); /* nothing present: every term is evaluated */
  assert_int_equal(tw_expr_eval(e, &ctx, &v), 0);
  assert_int_equal(v.u.i, 1);
  assert_int_equal(ctx.n_reads, 3); /* amount_fen once, class_hours, collected_all */
  assert_string_equal(ctx.reads[0].name, "amount_fen");
  assert_int_equal(ctx.reads[0].value.kind, TW_V_NULL);
  assert_string_equal(ctx.reads[1].name, "class_hours");
  assert_string_equal(ctx.reads[2].name, "collected_all");
  assert_int_equal(ctx.reads[2].value.kind, TW_V_MONEY);
  assert_int_equal(ctx.reads[2].value.u.i, 1000000);
  /* short circuit: the first true term stops the reads */
  ctx_for(&ctx, &f->pay);
  assert_int_equal(tw_expr_eval(e, &ctx, &v), 0);
  assert_int_equal(ctx.n_reads, 1);
  assert_int_equal(ctx.reads[0].value.kind, TW_V_MONEY);
  assert_int_equal(ctx.reads[0].value.u.i, 600000);
}

/* A series function used twice is one read: the alert's values object must not repeat a key
 * (lessons_halved named median_of(weekly_lessons) three times, and a feed in msgpack, whose codec
 * refuses duplicate keys, dropped every such alert). */
static void test_reads_series_once(void **state) {
  fixture_t *f = *state;
  tw__perr_t perr;
  tw_expr_t *e = compile(f,
                         "latest(weekly_paid) > 3 * median_of(weekly_paid) and "
                         "median_of(weekly_paid) > 1fen and median_of(weekly_paid) > 2fen",
                         0, &perr);
  assert_non_null(e);
  tw_eval_ctx_t ctx;
  tw_value_t v;
  ctx_for(&ctx, &f->pay);
  assert_int_equal(tw_expr_eval(e, &ctx, &v), 0);
  assert_int_equal(v.u.i, 1);
  assert_int_equal(ctx.n_reads, 2);
  assert_string_equal(ctx.reads[0].name, "latest(weekly_paid)");
  assert_string_equal(ctx.reads[1].name, "median_of(weekly_paid)");
}

static void test_no_agg_callback_is_null(void **state) {
  fixture_t *f = *state;
  tw__perr_t perr;
  tw_expr_t *e = compile(f, "collected_all > 1fen", 0, &perr);
  tw_eval_ctx_t ctx;
  tw_value_t v;
  ctx_for(&ctx, &f->pay);
  ctx.agg_get = NULL;
  assert_int_equal(tw_expr_eval(e, &ctx, &v), 0);
  assert_int_equal(v.u.i, 0);
}

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Case 010: `(a+)+$` on "aaaa…a!" stops at the match limit within milliseconds. */
static void test_redos_limit(void **state) {
  fixture_t *f = *state;
  tw_schema_t *schema = &f->schema;
  static const char redos[] =
      "version: 1\n"
      "rules:\n"
      "  - name: catastrophic\n"
      "    on: [complaint]\n"
      "    by: institution_id\n"
      "    when: text matches \"(a+)+$\"\n"
      "    severity: low\n";
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t err;
  assert_int_equal(tw_rules_load_buffer("010.yaml", redos, strlen(redos), schema, &rs, &err), 0);
  const tw_rule_t *r = tw_rules_rule(rs, 0);
  tw_event_t ev;
  tw_event_init(&ev);
  ts_envelope(&ev, TT_COMPLAINT, "c-redos");
  char text[4001];
  memset(text, 'a', 3999);
  text[3999] = '!';
  text[4000] = '\0';
  ts_set_str(&ev, TS_TEXT, text);
  tw_eval_ctx_t ctx;
  tw_value_t v;
  ctx_for(&ctx, &ev);
  double t0 = now_ms();
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), TW_ELIMIT);
  double took = now_ms() - t0;
  assert_int_equal(ctx.regex_limit_hits, 1);
  assert_int_equal(v.kind, TW_V_BOOL);
  assert_int_equal(v.u.i, 0); /* the condition is false */
  assert_true(took < 250.0);  /* milliseconds, even under sanitizers */
  /* a second evaluation reuses the per-thread match data and is bounded again */
  assert_int_equal(tw_expr_eval(r->when, &ctx, &v), TW_ELIMIT);
  assert_int_equal(ctx.regex_limit_hits, 2);
  tw_event_fini(&ev);
  tw_rules_free(rs);

  /* the shared case file itself, when present */
  const char *dir = getenv("TW_SHARED_CASES");
  char path[1024];
  if (dir != NULL) {
    snprintf(path, sizeof path, "%s/010-redos-rules.yaml", dir);
    FILE *fp = fopen(path, "r");
    if (fp != NULL) {
      fclose(fp);
      assert_int_equal(tw_rules_load(path, schema, &rs, &err), 0);
      assert_int_equal(tw_rules_n_rules(rs), 1);
      tw_rules_free(rs);
    }
  }
}

/* ---- templates ---- */

typedef struct tcase {
  const char *tmpl;
  char ev;
  const char *want;
} tcase_t;

static const tcase_t template_cases[] = {
    {"payment of {amount_fen / 100} yuan for {class_hours} class hours, {service_days} days", 'p',
     "payment of 6000 yuan for 40 class hours, 120 days"},
    {"plain text", 'p', "plain text"},
    {"", 'p', ""},
    {"{{literal}} and {{{class_hours}}}", 'p', "{literal} and {40}"},
    {"{7d} {36h} {90s} {500ms} {1500ms} {0s} {-2h}", 'p', "7d 36h 90s 500ms 1500ms 0s -2h"},
    {"at {ts}", 'p', "at 2025-03-01T10:00:00.000+08:00"},
    {"{ts + 14h + 5ms}", 'p', "2025-03-02T00:00:00.005+08:00"},
    {"{channel}/{institution_id}", 'p', "supervised/52440106MJL17630G"},
    {"{amount_fen > 1yuan} {false}", 'p', "true false"},
    {"missing: {amount_fen}", 'b', "missing: null"},
    {"{text}", 'c', "家长反映机构老板跑路了，联系不上"},
    {"{\"}\" + \"\"}", 'p', NULL}, /* compile error: string + string */
    {"{\"a}b\"}", 'p', "a}b"},
    {"{collected_all - refunded_all} fen", 'p', "800000 fen"},
    {"{0.25} {avg_hours} {1.0} {-0.0000001} {2.0 / 3} {amount_fen * ratio}", 'p',
     "0.25 2.5 1 0 0.666667 150000"},
    {"{zscore(weekly_paid)} / {mean_of(weekly_count)} / {latest(min_gone)}", 'p',
     "20.294264 / 3.5 / null"},
    {"{999999999999999999.0 * 1000.0}", 'p', "1.000000e+21"},
    {"no lessons for {days(now() - first_pay)} days, {unconsumed / 100} yuan unconsumed", 'p',
     "no lessons for 1 days, 8000 yuan unconsumed"},
};

static void test_templates(void **state) {
  fixture_t *f = *state;
  int failures = 0;
  for (size_t i = 0; i < sizeof template_cases / sizeof template_cases[0]; i++) {
    const tcase_t *c = &template_cases[i];
    tw__env_t env = {.rs = f->rs, .allow_aggs = 1};
    const tw_template_t *t = NULL;
    tw__perr_t perr;
    int rc = tw__template_compile(&env, c->tmpl, strlen(c->tmpl), &t, &perr);
    if (c->want == NULL) {
      if (rc == 0) {
        fprintf(stderr, "template %zu: expected a compile error\n", i);
        failures++;
      }
      continue;
    }
    if (rc != 0) {
      fprintf(stderr, "template %zu: compile error %s\n", i, perr.msg);
      failures++;
      continue;
    }
    tw_eval_ctx_t ctx;
    char buf[256];
    ctx_for(&ctx, pick(f, c->ev));
    int n = tw_template_render(t, &ctx, buf, sizeof buf);
    if (n != (int)strlen(c->want) || strcmp(buf, c->want) != 0) {
      fprintf(stderr, "template %zu: got %d '%s', want '%s'\n", i, n, buf, c->want);
      failures++;
    }
  }
  assert_int_equal(failures, 0);
}

static void test_template_errors(void **state) {
  fixture_t *f = *state;
  static const struct {
    const char *tmpl;
    size_t pos;
    const char *msg;
  } cases[] = {
      {"a } b", 2, "single '}' in message: write '}}' for a brace"},
      {"a {class_hours", 2, "unclosed '{' in message"},
      {"x {clas_hours}", 3, "unknown field 'clas_hours' (did you mean 'class_hours'?)"},
      {"x {}", 3, "empty expression"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tw__env_t env = {.rs = f->rs, .allow_aggs = 1};
    const tw_template_t *t = NULL;
    tw__perr_t perr;
    assert_int_not_equal(
        tw__template_compile(&env, cases[i].tmpl, strlen(cases[i].tmpl), &t, &perr), 0);
    assert_string_equal(perr.msg, cases[i].msg);
    assert_int_equal(perr.pos, cases[i].pos);
  }
}

static void test_template_truncation(void **state) {
  fixture_t *f = *state;
  tw__env_t env = {.rs = f->rs, .allow_aggs = 1};
  const tw_template_t *t = NULL;
  tw__perr_t perr;
  const char *src = "跑路跑路跑路 {text}";
  assert_int_equal(tw__template_compile(&env, src, strlen(src), &t, &perr), 0);
  tw_eval_ctx_t ctx;
  ctx_for(&ctx, &f->complaint);
  char buf[12];
  int n = tw_template_render(t, &ctx, buf, sizeof buf);
  /* 11 bytes of room: two whole 3-byte characters, then "…" (3 bytes) */
  assert_string_equal(buf, "跑路…");
  assert_int_equal(n, 9);
  char big[4];
  n = tw_template_render(t, &ctx, big, sizeof big);
  assert_true(n >= 0 && (size_t)n < sizeof big);
  assert_string_equal(big, "…");
  /* errors in holes are returned, the buffer stays a string */
  const char *div = "x {class_hours / 0}";
  assert_int_equal(tw__template_compile(&env, div, strlen(div), &t, &perr), 0);
  ctx_for(&ctx, &f->pay);
  assert_int_equal(tw_template_render(t, &ctx, buf, sizeof buf), TW_EDIVZERO);
  assert_string_equal(buf, "x ");
}

/* The ruleset is shared read-only; each thread matches with its own cached match data. */
typedef struct thread_arg {
  fixture_t *f;
  const tw_expr_t *e;
  int hits;
} thread_arg_t;

static void *match_thread(void *p) {
  thread_arg_t *a = p;
  for (int i = 0; i < 2000; i++) {
    tw_eval_ctx_t ctx;
    tw_value_t v;
    ctx_for(&ctx, &a->f->complaint);
    if (tw_expr_eval(a->e, &ctx, &v) == 0 && v.u.i == 1) a->hits++;
  }
  return NULL;
}

static void test_threads_share_ruleset(void **state) {
  fixture_t *f = *state;
  tw__perr_t perr;
  const tw_expr_t *e =
      compile(f, "text matches any(runaway_words) and text matches \"老板\"", 0, &perr);
  assert_non_null(e);
  pthread_t th[4];
  thread_arg_t args[4];
  for (int i = 0; i < 4; i++) {
    args[i].f = f;
    args[i].e = e;
    args[i].hits = 0;
    assert_int_equal(pthread_create(&th[i], NULL, match_thread, &args[i]), 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(th[i], NULL);
    assert_int_equal(args[i].hits, 2000);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_values),
      cmocka_unit_test(test_compile_errors),
      cmocka_unit_test(test_condition_must_be_bool),
      cmocka_unit_test(test_nesting_limit),
      cmocka_unit_test(test_reads),
      cmocka_unit_test(test_reads_series_once),
      cmocka_unit_test(test_no_agg_callback_is_null),
      cmocka_unit_test(test_redos_limit),
      cmocka_unit_test(test_templates),
      cmocka_unit_test(test_template_errors),
      cmocka_unit_test(test_template_truncation),
      cmocka_unit_test(test_threads_share_ruleset),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
