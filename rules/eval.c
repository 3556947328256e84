/*
 * eval.c: evaluation of compiled expressions, once per event and rule.
 *
 * A tree walk over nodes whose names were resolved at load: a field is one slot read, an
 * aggregate one callback by index, a list membership one binary search, a regex one JIT match.
 * No allocation, no string lookup. Recursion is bounded by TW__MAX_TREE_DEPTH; a series function
 * reads at most TW__MAX_SERIES buckets into a buffer on the stack (checked at load), and sorts a
 * copy of them for the median (insertion sort: at most 366² / 2 steps).
 *
 * Null (an absent field, an absent MIN/MAX/AVG/FIRST/LAST aggregate, or no aggregate callback)
 * propagates through arithmetic; comparisons, `in`, `matches`, `contains` and `startswith` with
 * null are false; `and`, `or`, `not` treat null as false; coalesce() picks the first non-null.
 * Integer overflow is TW_EOVERFLOW (checked with __builtin_*_overflow), division or remainder by
 * zero TW_EDIVZERO. Decimals are doubles: a non-finite result is TW_EOVERFLOW; money scaled by a
 * decimal is rounded half away from zero to whole fen. Reads of fields and aggregates are
 * recorded once each in ctx->reads.
 */
#define _GNU_SOURCE /* memmem: linear-time substring search */
#include <math.h>
#include <string.h>

#include "rules_internal.h"
#include "tw_error.h"

static void record_read(tw_eval_ctx_t *ctx, const char *name, tw_value_t v) {
  for (size_t i = 0; i < ctx->n_reads; i++)
    if (ctx->reads[i].name == name) return;
  if (ctx->n_reads >= TW_EVAL_MAX_READS) return;
  ctx->reads[ctx->n_reads].name = name;
  ctx->reads[ctx->n_reads].value = v;
  ctx->n_reads++;
}

static tw_value_t null_value(void) {
  tw_value_t v;
  v.kind = TW_V_NULL;
  v.u.i = 0;
  return v;
}

static tw_value_t bool_value(int b) {
  return tw_value_int(TW_V_BOOL, b != 0);
}

static int is_true(tw_value_t v) {
  return v.kind == TW_V_BOOL && v.u.i != 0;
}

static int str_eq(tw_str_t a, tw_str_t b) {
  return a.len == b.len && memcmp(a.ptr, b.ptr, a.len) == 0;
}

static int in_str(const tw_str_t *set, size_t n, tw_str_t s) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = set[mid].len != s.len ? (set[mid].len < s.len ? -1 : 1)
                                  : memcmp(set[mid].ptr, s.ptr, s.len);
    if (c == 0) return 1;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return 0;
}

static int in_int(const int64_t *set, size_t n, int64_t x) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (set[mid] == x) return 1;
    if (set[mid] < x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return 0;
}

static int eval_node(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_value_t *out);

static double as_double(tw_value_t v) {
  return v.kind == TW_V_DEC ? v.u.d : (double)v.u.i;
}

/* A double rounded half away from zero to an int64 (fen); TW_EOVERFLOW outside int64. */
static int round_to_i64(double x, int64_t *out) {
  if (!isfinite(x)) return TW_EOVERFLOW;
  double r = round(x);
  if (!(r >= -9223372036854775808.0 && r < 9223372036854775808.0)) return TW_EOVERFLOW;
  *out = (int64_t)r;
  return 0;
}

/* num / den rounded half away from zero (den > 0); TW_EOVERFLOW outside int64. */
static int div_round(__int128 num, int64_t den, int64_t *out) {
  __int128 q = num / den, r = num % den;
  __int128 ar = r < 0 ? -r : r;
  if (2 * ar >= den) q += num < 0 ? -1 : 1;
  if (q > INT64_MAX || q < INT64_MIN) return TW_EOVERFLOW;
  *out = (int64_t)q;
  return 0;
}

static int dec_result(double d, tw_value_t *out) {
  if (!isfinite(d)) return TW_EOVERFLOW;
  *out = tw_value_dec(d);
  return 0;
}

/* Arithmetic where one side is a decimal: dec ± * / dec|int → dec; money * dec, dec * money,
 * money / dec → money rounded half away from zero. */
static int eval_dec_arith(const tw_expr_t *e, tw_value_t a, tw_value_t b, tw_value_t *out) {
  double x = as_double(a), y = as_double(b), r;
  switch ((tw__op_t)e->op) {
    case TW__OP_ADD:
      r = x + y;
      break;
    case TW__OP_SUB:
      r = x - y;
      break;
    case TW__OP_MUL:
      r = x * y;
      break;
    case TW__OP_DIV:
      if (y == 0) return TW_EDIVZERO;
      r = x / y;
      break;
    default:
      return TW_EINVAL;
  }
  if (e->type == TW_V_MONEY) {
    int64_t fen;
    int rc = round_to_i64(r, &fen);
    if (rc != 0) return rc;
    *out = tw_value_int(TW_V_MONEY, fen);
    return 0;
  }
  return dec_result(r, out);
}

/* The value of an aggregate (or of one bucket) in expressions: COUNT, SUM, DISTINCT are their
 * value (0 when empty); MIN, MAX, FIRST, LAST the value when present, else null; AVG the mean
 * when present: money rounded half away from zero, an int field's as a decimal. */
static int agg_value(int fn, int kind, const tw_agg_out_t *v, tw_value_t *out) {
  switch ((tw_agg_fn_t)fn) {
    case TW_AGG_COUNT:
    case TW_AGG_SUM:
    case TW_AGG_DISTINCT:
      *out = tw_value_int((tw_vkind_t)kind, v->value);
      return 0;
    case TW_AGG_AVG:
      if (!v->present || v->count <= 0) {
        *out = null_value();
        return 0;
      }
      if (kind == TW_V_MONEY) {
        int64_t m;
        int rc = div_round(v->value, v->count, &m);
        if (rc != 0) return rc;
        *out = tw_value_int(TW_V_MONEY, m);
        return 0;
      }
      return dec_result((double)v->value / (double)v->count, out);
    default:
      *out = v->present ? tw_value_int((tw_vkind_t)kind, v->value) : null_value();
      return 0;
  }
}

static void sort_i64(int64_t *x, size_t n) {
  for (size_t i = 1; i < n; i++) {
    int64_t k = x[i];
    size_t j = i;
    for (; j > 0 && x[j - 1] > k; j--) x[j] = x[j - 1];
    x[j] = k;
  }
}

static void sort_dbl(double *x, size_t n) {
  for (size_t i = 1; i < n; i++) {
    double k = x[i];
    size_t j = i;
    for (; j > 0 && x[j - 1] > k; j--) x[j] = x[j - 1];
    x[j] = k;
  }
}

/* latest / mean_of / median_of / stddev_of / zscore over the buckets of a calendar aggregate:
 * the last bucket holds now; the statistics run over the earlier ones. For COUNT, SUM and
 * DISTINCT an empty bucket is 0; for the others an empty bucket is skipped. */
__attribute__((noinline)) /* its 20 KiB of buffers stay out of eval_node's recursive frame */
static int
eval_series(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_value_t *out) {
  tw_agg_out_t buf[TW__MAX_SERIES];
  int64_t iv[TW__MAX_SERIES];
  double dv[TW__MAX_SERIES];
  size_t n = 0, m = 0;
  int fn = e->u.agg.fn, kind = e->u.agg.kind, rc;
  *out = null_value();
  if (ctx->agg_series == NULL) return 0;
  memset(buf, 0, sizeof buf);
  if ((rc = ctx->agg_series(ctx->ud, e->u.agg.index, buf, TW__MAX_SERIES, &n)) != 0) return rc;
  if (n == 0 || n > TW__MAX_SERIES) return 0;
  tw_value_t latest;
  if ((rc = agg_value(fn, kind, &buf[n - 1], &latest)) != 0) return rc;
  if (e->u.agg.series == TW__SER_LATEST) {
    *out = latest;
    return 0;
  }
  for (size_t i = 0; i + 1 < n; i++) { /* the earlier buckets */
    tw_value_t v;
    if ((rc = agg_value(fn, kind, &buf[i], &v)) != 0) return rc;
    if (v.kind == TW_V_NULL) continue;
    iv[m] = v.kind == TW_V_DEC ? 0 : v.u.i;
    dv[m] = as_double(v);
    m++;
  }
  if (m == 0) return 0;
  int money = kind == TW_V_MONEY;
  __int128 isum = 0;
  double dsum = 0;
  for (size_t i = 0; i < m; i++) {
    isum += iv[i];
    dsum += dv[i];
  }
  double mean = kind == TW_V_DEC ? dsum / (double)m : (double)isum / (double)m;
  switch ((tw__series_fn_t)e->u.agg.series) {
    case TW__SER_MEAN:
      if (money) {
        int64_t r;
        if ((rc = div_round(isum, (int64_t)m, &r)) != 0) return rc;
        *out = tw_value_int(TW_V_MONEY, r);
        return 0;
      }
      return dec_result(mean, out);
    case TW__SER_MEDIAN:
      if (kind == TW_V_DEC) {
        sort_dbl(dv, m);
        return dec_result(m % 2 ? dv[m / 2] : (dv[m / 2 - 1] + dv[m / 2]) / 2, out);
      }
      sort_i64(iv, m);
      if (money) {
        int64_t r = iv[m / 2];
        if (m % 2 == 0 && (rc = div_round((__int128)iv[m / 2 - 1] + iv[m / 2], 2, &r)) != 0)
          return rc;
        *out = tw_value_int(TW_V_MONEY, r);
        return 0;
      }
      return dec_result(m % 2 ? (double)iv[m / 2] : ((double)iv[m / 2 - 1] + (double)iv[m / 2]) / 2,
                        out);
    case TW__SER_STDDEV:
    case TW__SER_ZSCORE: {
      double ss = 0;
      for (size_t i = 0; i < m; i++) ss += (dv[i] - mean) * (dv[i] - mean);
      double sd = sqrt(ss / (double)m); /* population standard deviation */
      if (e->u.agg.series == TW__SER_STDDEV) {
        if (money) {
          int64_t r;
          if ((rc = round_to_i64(sd, &r)) != 0) return rc;
          *out = tw_value_int(TW_V_MONEY, r);
          return 0;
        }
        return dec_result(sd, out);
      }
      if (m < 2 || sd == 0 || latest.kind == TW_V_NULL) return 0;
      return dec_result((as_double(latest) - mean) / sd, out);
    }
    default:
      return TW_EINVAL;
  }
}

static int eval_field(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_value_t *out) {
  tw_value_t v = ctx->ev != NULL ? tw_event_get(ctx->ev, e->u.field.slot) : null_value();
  if (v.kind != TW_V_NULL) {
    /* the decoder may tag numbers loosely; the schema's kind decides the type */
    int is_str = v.kind == TW_V_STR;
    if (is_str != (e->type == TW_V_STR) || v.kind == TW_V_BOOL)
      v = null_value();
    else if (!is_str)
      v.kind = e->type;
  }
  record_read(ctx, e->u.field.name, v);
  *out = v;
  return 0;
}

static int eval_arith(const tw_expr_t *e, tw_value_t a, tw_value_t b, tw_value_t *out) {
  int64_t x = a.u.i, y = b.u.i, r = 0;
  switch ((tw__op_t)e->op) {
    case TW__OP_ADD:
      if (__builtin_add_overflow(x, y, &r)) return TW_EOVERFLOW;
      break;
    case TW__OP_SUB:
      if (__builtin_sub_overflow(x, y, &r)) return TW_EOVERFLOW;
      break;
    case TW__OP_MUL:
      if (__builtin_mul_overflow(x, y, &r)) return TW_EOVERFLOW;
      break;
    case TW__OP_DIV:
    case TW__OP_MOD:
      if (y == 0) return TW_EDIVZERO;
      if (x == INT64_MIN && y == -1) return TW_EOVERFLOW;
      r = e->op == TW__OP_DIV ? x / y : x % y; /* C truncates toward zero */
      break;
    default:
      return TW_EINVAL;
  }
  *out = tw_value_int((tw_vkind_t)e->type, r);
  return 0;
}

static int compare(const tw_expr_t *e, tw_value_t a, tw_value_t b) {
  if (a.kind == TW_V_STR) {
    int eq = str_eq(a.u.s, b.u.s);
    return e->op == TW__OP_EQ ? eq : !eq;
  }
  if (a.kind == TW_V_DEC || b.kind == TW_V_DEC) {
    double x = a.kind == TW_V_DEC ? a.u.d : (double)a.u.i;
    double y = b.kind == TW_V_DEC ? b.u.d : (double)b.u.i;
    switch ((tw__op_t)e->op) {
      case TW__OP_EQ:
        return x == y;
      case TW__OP_NE:
        return x != y;
      case TW__OP_LT:
        return x < y;
      case TW__OP_LE:
        return x <= y;
      case TW__OP_GT:
        return x > y;
      default:
        return x >= y;
    }
  }
  int64_t x = a.u.i, y = b.u.i;
  switch ((tw__op_t)e->op) {
    case TW__OP_EQ:
      return x == y;
    case TW__OP_NE:
      return x != y;
    case TW__OP_LT:
      return x < y;
    case TW__OP_LE:
      return x <= y;
    case TW__OP_GT:
      return x > y;
    default:
      return x >= y;
  }
}

static int eval_node(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_value_t *out) {
  tw_value_t a, b;
  int rc;
  switch ((tw__op_t)e->op) {
    case TW__OP_CONST:
      *out = e->u.k;
      return 0;
    case TW__OP_FIELD:
      return eval_field(e, ctx, out);
    case TW__OP_AGG: {
      tw_agg_out_t v;
      if (ctx->agg_get == NULL) {
        *out = null_value();
      } else {
        memset(&v, 0, sizeof v);
        if ((rc = ctx->agg_get(ctx->ud, e->u.agg.index, &v)) != 0) return rc;
        if ((rc = agg_value(e->u.agg.fn, e->u.agg.kind, &v, out)) != 0) return rc;
      }
      record_read(ctx, e->u.agg.name, *out);
      return 0;
    }
    case TW__OP_SERIES:
      if ((rc = eval_series(e, ctx, out)) != 0) return rc;
      record_read(ctx, e->u.agg.name, *out);
      return 0;
    case TW__OP_NOW:
      *out = tw_value_int(TW_V_TIME, ctx->now_ms);
      return 0;
    case TW__OP_NOT:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      *out = bool_value(!is_true(a));
      return 0;
    case TW__OP_AND:
    case TW__OP_OR:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if (is_true(a) == (e->op == TW__OP_OR)) { /* short circuit */
        *out = bool_value(is_true(a));
        return 0;
      }
      if ((rc = eval_node(e->b, ctx, &b)) != 0) return rc;
      *out = bool_value(is_true(b));
      return 0;
    case TW__OP_NEG:
    case TW__OP_ABS:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if (a.kind == TW_V_NULL) {
        *out = a;
        return 0;
      }
      if (a.kind == TW_V_DEC) {
        *out = tw_value_dec(e->op == TW__OP_ABS ? fabs(a.u.d) : -a.u.d);
        return 0;
      }
      if (e->op == TW__OP_ABS && a.u.i >= 0) {
        *out = a;
        return 0;
      }
      if (a.u.i == INT64_MIN) return TW_EOVERFLOW;
      *out = tw_value_int((tw_vkind_t)e->type, -a.u.i);
      return 0;
    case TW__OP_EQ:
    case TW__OP_NE:
    case TW__OP_LT:
    case TW__OP_LE:
    case TW__OP_GT:
    case TW__OP_GE:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if ((rc = eval_node(e->b, ctx, &b)) != 0) return rc;
      *out = bool_value(a.kind != TW_V_NULL && b.kind != TW_V_NULL && compare(e, a, b));
      return 0;
    case TW__OP_ADD:
    case TW__OP_SUB:
    case TW__OP_MUL:
    case TW__OP_DIV:
    case TW__OP_MOD:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if ((rc = eval_node(e->b, ctx, &b)) != 0) return rc;
      if (a.kind == TW_V_NULL || b.kind == TW_V_NULL) {
        *out = null_value();
        return 0;
      }
      if (a.kind == TW_V_DEC || b.kind == TW_V_DEC) return eval_dec_arith(e, a, b, out);
      return eval_arith(e, a, b, out);
    case TW__OP_MIN:
    case TW__OP_MAX:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if ((rc = eval_node(e->b, ctx, &b)) != 0) return rc;
      if (a.kind == TW_V_NULL || b.kind == TW_V_NULL)
        *out = null_value();
      else if (a.kind == TW_V_DEC)
        *out = ((a.u.d < b.u.d) == (e->op == TW__OP_MIN)) ? a : b;
      else
        *out = ((a.u.i < b.u.i) == (e->op == TW__OP_MIN)) ? a : b;
      return 0;
    case TW__OP_CONTAINS:
    case TW__OP_STARTSWITH:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if ((rc = eval_node(e->b, ctx, &b)) != 0) return rc;
      if (a.kind != TW_V_STR || b.kind != TW_V_STR)
        *out = bool_value(0);
      else if (e->op == TW__OP_STARTSWITH)
        *out = bool_value(b.u.s.len <= a.u.s.len && memcmp(a.u.s.ptr, b.u.s.ptr, b.u.s.len) == 0);
      else
        *out = bool_value(b.u.s.len == 0 ||
                          memmem(a.u.s.ptr, a.u.s.len, b.u.s.ptr, b.u.s.len) != NULL);
      return 0;
    case TW__OP_DAYS:
    case TW__OP_HOURS:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      *out = a.kind == TW_V_NULL
                 ? a
                 : tw_value_int(TW_V_INT, a.u.i / (e->op == TW__OP_DAYS ? 86400000 : 3600000));
      return 0;
    case TW__OP_COALESCE:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if (a.kind != TW_V_NULL) {
        *out = a;
        return 0;
      }
      return eval_node(e->b, ctx, out);
    case TW__OP_IN_STR:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      *out = bool_value(a.kind == TW_V_STR && in_str(e->u.sset.items, e->u.sset.n, a.u.s));
      return 0;
    case TW__OP_IN_INT:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      *out = bool_value(a.kind != TW_V_NULL && in_int(e->u.iset.items, e->u.iset.n, a.u.i));
      return 0;
    case TW__OP_MATCH:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if (a.kind != TW_V_STR) {
        *out = bool_value(0);
        return 0;
      }
      rc = tw__regex_match(e->u.re, a.u.s.ptr, a.u.s.len, ctx);
      *out = bool_value(rc == 1);
      return rc < 0 ? rc : 0;
  }
  return TW_EINVAL;
}

int tw_expr_eval(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_value_t *out) {
  if (e == NULL || ctx == NULL || out == NULL) return TW_EINVAL;
  int rc = eval_node(e, ctx, out);
  if (rc != 0) *out = bool_value(0);
  return rc;
}
