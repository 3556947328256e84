/*
 * eval.c: evaluation of compiled expressions, once per event and rule.
 *
 * A tree walk over nodes whose names were resolved at load: a field is one slot read, an
 * aggregate one callback by index, a list membership one binary search, a regex one JIT match.
 * No allocation, no string lookup. Recursion is bounded by TW__MAX_TREE_DEPTH.
 *
 * Null (an absent field, or no aggregate callback) propagates through arithmetic; comparisons,
 * `in` and `matches` with null are false; `and`, `or`, `not` treat null as false. Integer
 * overflow is TW_EOVERFLOW (checked with __builtin_*_overflow), division or remainder by zero
 * TW_EDIVZERO. Reads of fields and aggregates are recorded once each in ctx->reads.
 */
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
        if ((rc = ctx->agg_get(ctx->ud, e->u.agg.index, &v)) != 0) return rc;
        *out = v.present ? tw_value_int((tw_vkind_t)e->type, v.value) : null_value();
      }
      record_read(ctx, e->u.agg.name, *out);
      return 0;
    }
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
      return eval_arith(e, a, b, out);
    case TW__OP_MIN:
    case TW__OP_MAX:
      if ((rc = eval_node(e->a, ctx, &a)) != 0) return rc;
      if ((rc = eval_node(e->b, ctx, &b)) != 0) return rc;
      if (a.kind == TW_V_NULL || b.kind == TW_V_NULL)
        *out = null_value();
      else
        *out = ((a.u.i < b.u.i) == (e->op == TW__OP_MIN)) ? a : b;
      return 0;
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
