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
#include <stdio.h>
#include <string.h>

#include "rules_internal.h"
#include "tw_error.h"

/* Once per name: each use of a series function has its own name string, and an alert's values
 * object must not repeat a key. */
static void record_read(tw_eval_ctx_t *ctx, const char *name, tw_value_t v) {
  for (size_t i = 0; i < ctx->n_reads; i++)
    if (ctx->reads[i].name == name || strcmp(ctx->reads[i].name, name) == 0) return;
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
  int c; /* -1, 0, 1: a before, equal to, after b (decimals are finite: no unordered case) */
  if (a.kind == TW_V_DEC || b.kind == TW_V_DEC) {
    double x = a.kind == TW_V_DEC ? a.u.d : (double)a.u.i;
    double y = b.kind == TW_V_DEC ? b.u.d : (double)b.u.i;
    c = (x > y) - (x < y);
  } else {
    c = (a.u.i > b.u.i) - (a.u.i < b.u.i);
  }
  switch ((tw__op_t)e->op) {
    case TW__OP_EQ:
      return c == 0;
    case TW__OP_NE:
      return c != 0;
    case TW__OP_LT:
      return c < 0;
    case TW__OP_LE:
      return c <= 0;
    case TW__OP_GT:
      return c > 0;
    default:
      return c >= 0;
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

/* ---- tracing evaluation (replay --explain) -------------------------------------------------- */

/* A bounded text buffer: appends stop (with "…") when it is full. */
typedef struct pbuf {
  char *p;
  size_t cap, n;
  int full;
} pbuf_t;

static void pb_put(pbuf_t *b, const char *s, size_t len) {
  if (b->full) return;
  if (b->n + len + 4 > b->cap) { /* keep room for "…" and the NUL */
    size_t room = b->cap - b->n - 4;
    if (room > len) room = len;
    while (room > 0 && ((unsigned char)s[room] & 0xC0) == 0x80) room--; /* a UTF-8 boundary */
    memcpy(b->p + b->n, s, room);
    b->n += room;
    memcpy(b->p + b->n, "\xe2\x80\xa6", 3);
    b->n += 3;
    b->full = 1;
  } else {
    memcpy(b->p + b->n, s, len);
    b->n += len;
  }
  b->p[b->n] = '\0';
}

static void pb_str(pbuf_t *b, const char *s) {
  pb_put(b, s, strlen(s));
}

/* A constant in the rule language's own literal syntax where it has one. */
static void pb_value(pbuf_t *b, tw_value_t v) {
  char tmp[96];
  int n;
  switch (v.kind) {
    case TW_V_MONEY:
      if (v.u.i % 100 == 0)
        n = snprintf(tmp, sizeof tmp, "%lldyuan", (long long)(v.u.i / 100));
      else
        n = snprintf(tmp, sizeof tmp, "%lldfen", (long long)v.u.i);
      break;
    case TW_V_STR:
      pb_put(b, "\"", 1);
      pb_put(b, v.u.s.ptr, v.u.s.len);
      pb_put(b, "\"", 1);
      return;
    default:
      n = tw__value_format(v, tmp, sizeof tmp);
      break;
  }
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof tmp) n = (int)sizeof tmp - 1;
  pb_put(b, tmp, (size_t)n);
}

static const char *op_word(int op) {
  switch ((tw__op_t)op) {
    case TW__OP_AND:
      return " and ";
    case TW__OP_OR:
      return " or ";
    case TW__OP_EQ:
      return " == ";
    case TW__OP_NE:
      return " != ";
    case TW__OP_LT:
      return " < ";
    case TW__OP_LE:
      return " <= ";
    case TW__OP_GT:
      return " > ";
    case TW__OP_GE:
      return " >= ";
    case TW__OP_ADD:
      return " + ";
    case TW__OP_SUB:
      return " - ";
    case TW__OP_MUL:
      return " * ";
    case TW__OP_DIV:
      return " / ";
    case TW__OP_MOD:
      return " % ";
    case TW__OP_CONTAINS:
      return " contains ";
    case TW__OP_STARTSWITH:
      return " startswith ";
    default:
      return NULL;
  }
}

static int is_binary(const tw_expr_t *e) {
  return op_word(e->op) != NULL;
}

static void print_expr(pbuf_t *b, const tw_expr_t *e);

static void print_operand(pbuf_t *b, const tw_expr_t *e) {
  if (is_binary(e)) pb_put(b, "(", 1);
  print_expr(b, e);
  if (is_binary(e)) pb_put(b, ")", 1);
}

static void print_call(pbuf_t *b, const char *fn, const tw_expr_t *x, const tw_expr_t *y) {
  pb_str(b, fn);
  pb_put(b, "(", 1);
  print_expr(b, x);
  if (y != NULL) {
    pb_put(b, ", ", 2);
    print_expr(b, y);
  }
  pb_put(b, ")", 1);
}

/* print_expr: the canonical text of a compiled expression (params and macros appear expanded,
 * as the evaluator sees them). Recursion is bounded by the tree depth (TW__MAX_TREE_DEPTH). */
static void print_expr(pbuf_t *b, const tw_expr_t *e) {
  if (b->full || e == NULL) return;
  const char *w = op_word(e->op);
  if (w != NULL) {
    print_operand(b, e->a);
    pb_str(b, w);
    print_operand(b, e->b);
    return;
  }
  switch ((tw__op_t)e->op) {
    case TW__OP_CONST:
      pb_value(b, e->u.k);
      return;
    case TW__OP_FIELD:
      pb_str(b, e->u.field.name);
      return;
    case TW__OP_AGG:
    case TW__OP_SERIES:
      pb_str(b, e->u.agg.name);
      return;
    case TW__OP_NOW:
      pb_str(b, "now()");
      return;
    case TW__OP_NOT:
      pb_str(b, "not ");
      print_operand(b, e->a);
      return;
    case TW__OP_NEG:
      pb_str(b, "-");
      print_operand(b, e->a);
      return;
    case TW__OP_ABS:
      print_call(b, "abs", e->a, NULL);
      return;
    case TW__OP_MIN:
      print_call(b, "min", e->a, e->b);
      return;
    case TW__OP_MAX:
      print_call(b, "max", e->a, e->b);
      return;
    case TW__OP_DAYS:
      print_call(b, "days", e->a, NULL);
      return;
    case TW__OP_HOURS:
      print_call(b, "hours", e->a, NULL);
      return;
    case TW__OP_COALESCE:
      print_call(b, "coalesce", e->a, e->b);
      return;
    case TW__OP_IN_STR:
      print_operand(b, e->a);
      pb_str(b, " in [");
      for (size_t i = 0; i < e->u.sset.n && !b->full; i++) {
        if (i > 0) pb_put(b, ", ", 2);
        if (i == 8) {
          char more[48];
          int n = snprintf(more, sizeof more, "%zu more", e->u.sset.n - i);
          pb_put(b, more, (size_t)n);
          break;
        }
        pb_value(b, tw_value_str(e->u.sset.items[i].ptr, e->u.sset.items[i].len));
      }
      pb_put(b, "]", 1);
      return;
    case TW__OP_IN_INT:
      print_operand(b, e->a);
      pb_str(b, " in [");
      for (size_t i = 0; i < e->u.iset.n && !b->full; i++) {
        if (i > 0) pb_put(b, ", ", 2);
        if (i == 8) {
          char more[48];
          int n = snprintf(more, sizeof more, "%zu more", e->u.iset.n - i);
          pb_put(b, more, (size_t)n);
          break;
        }
        pb_value(b, tw_value_int((tw_vkind_t)e->a->type, e->u.iset.items[i]));
      }
      pb_put(b, "]", 1);
      return;
    case TW__OP_MATCH:
      print_operand(b, e->a);
      pb_str(b, " matches <regex>");
      return;
    default:
      pb_str(b, "?");
      return;
  }
}

int tw_expr_text(const tw_expr_t *e, char *buf, size_t cap) {
  if (e == NULL || buf == NULL || cap < 8) return TW_EINVAL;
  pbuf_t b = {buf, cap, 0, 0};
  buf[0] = '\0';
  print_expr(&b, e);
  return (int)b.n;
}

typedef struct trace {
  tw_trace_node_t *nodes;
  size_t cap, n;
} trace_t;

static void trace_rec(const tw_expr_t *e, tw_eval_ctx_t *ctx, trace_t *t, uint16_t depth,
                      int evaluated) {
  if (e == NULL) return;
  tw_trace_node_t *me = NULL;
  if (e->op != TW__OP_CONST && t->n < t->cap) {
    me = &t->nodes[t->n++];
    memset(me, 0, sizeof *me);
    me->pos = e->pos;
    me->depth = depth;
    me->evaluated = evaluated != 0;
    me->value = null_value();
    (void)tw_expr_text(e, me->text, sizeof me->text);
  }
  tw_value_t v = null_value();
  if (evaluated) {
    int rc = eval_node(e, ctx, &v);
    if (me != NULL) me->error = rc;
    if (rc != 0) v = null_value();
  }
  if (me != NULL) me->value = v;
  if (e->op == TW__OP_CONST || e->op == TW__OP_FIELD || e->op == TW__OP_AGG ||
      e->op == TW__OP_SERIES || e->op == TW__OP_NOW)
    return; /* leaves */
  int eval_b = evaluated;
  if (evaluated && (e->op == TW__OP_AND || e->op == TW__OP_OR || e->op == TW__OP_COALESCE)) {
    tw_value_t a;
    if (eval_node(e->a, ctx, &a) != 0)
      eval_b = 0;
    else if (e->op == TW__OP_COALESCE)
      eval_b = a.kind == TW_V_NULL;
    else
      eval_b = is_true(a) != (e->op == TW__OP_OR); /* not short-circuited */
  }
  trace_rec(e->a, ctx, t, (uint16_t)(depth + 1), evaluated);
  trace_rec(e->b, ctx, t, (uint16_t)(depth + 1), eval_b);
}

int tw_expr_eval_trace(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_trace_node_t *nodes, size_t cap,
                       size_t *n, tw_value_t *out) {
  if (e == NULL || ctx == NULL || out == NULL || n == NULL || (nodes == NULL && cap > 0))
    return TW_EINVAL;
  trace_t t = {nodes, cap, 0};
  trace_rec(e, ctx, &t, 0, 1);
  *n = t.n;
  return tw_expr_eval(e, ctx, out);
}
