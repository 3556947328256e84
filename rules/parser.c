/*
 * parser.c: expression parser, name resolution and type checker in one pass.
 *
 * Recursive descent over the grammar in docs/rules.md, lowest precedence first:
 *   or < and < not < comparison / in / matches < + - < * / % < unary - < primary.
 * Each node is built already type-checked and with its names resolved (field → slot,
 * aggregate → index, list → sorted constants, regex → JIT code), so the tree needs no further
 * pass. Work is bounded: recursion by TW__MAX_NESTING, tree depth by TW__MAX_TREE_DEPTH (so the
 * evaluator's recursion is bounded too), list literals by TW__MAX_LIST_ITEMS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_internal.h"
#include "tw_error.h"

/* The macros being expanded, innermost last: a use of one of them again is a cycle. */
typedef struct mstack {
  int idx[TW__MAX_MACRO_DEPTH];
  int n;
  size_t nodes; /* built for this expression, macro expansions included */
} mstack_t;

typedef struct parser {
  tw__lexer_t lx;
  tw__token_t tok;
  const tw__env_t *env;
  tw__perr_t *err;
  int nesting;
  int macro;    /* 0: the compiled text; i > 0: the source of macro i - 1 */
  mstack_t *ms; /* shared by the parsers of nested macro expansions */
} parser_t;

static int advance(parser_t *p) {
  return tw__lex_next(&p->lx, &p->tok, p->err);
}

static tw_expr_t *new_node(parser_t *p, tw__op_t op, int type, size_t pos, const tw_expr_t *a,
                           const tw_expr_t *b) {
  int depth = 1;
  if (a != NULL && a->depth + 1 > depth) depth = a->depth + 1;
  if (b != NULL && b->depth + 1 > depth) depth = b->depth + 1;
  if (depth > TW__MAX_TREE_DEPTH) {
    tw__perr_set(p->err, TW_ETOOBIG, pos, "expression too deep (more than %d levels)",
                 TW__MAX_TREE_DEPTH);
    return NULL;
  }
  /* macros expand at each use, so a few lines can ask for a huge tree: bound it */
  if (++p->ms->nodes > TW__MAX_EXPR_NODES) {
    tw__perr_set(p->err, TW_ETOOBIG, pos,
                 "expression too large (more than %d nodes with its "
                 "macros expanded)",
                 TW__MAX_EXPR_NODES);
    return NULL;
  }
  if (++p->env->rs->n_nodes > TW__MAX_RULESET_NODES) {
    tw__perr_set(p->err, TW_ETOOBIG, pos,
                 "rule file too large (more than %d expression nodes "
                 "with macros expanded)",
                 TW__MAX_RULESET_NODES);
    return NULL;
  }
  tw_expr_t *n = tw__arena_alloc(&p->env->rs->arena, sizeof *n);
  if (n == NULL) {
    tw__perr_set(p->err, TW_ENOMEM, pos, "out of memory");
    return NULL;
  }
  n->op = (uint8_t)op;
  n->type = (uint8_t)type;
  n->depth = (uint16_t)depth;
  n->pos = (uint32_t)pos;
  n->a = a;
  n->b = b;
  return n;
}

static int expect(parser_t *p, tw__tok_t kind, const char *what) {
  if (p->tok.kind != kind)
    return tw__perr_set(p->err, TW_EPARSE, p->tok.pos, "expected %s, found %s", what,
                        tw__tok_name(p->tok.kind));
  return advance(p);
}

/* ---- names ---- */

enum {
  FN_NOW = 0,
  FN_ABS,
  FN_MIN,
  FN_MAX,
  FN_DAYS,
  FN_HOURS,
  FN_COALESCE,
  FN_LATEST,
  FN_MEAN_OF,
  FN_MEDIAN_OF,
  FN_STDDEV_OF,
  FN_ZSCORE,
  N_FUNCTIONS
};

static const char *const function_names[N_FUNCTIONS] = {
    "now",      "abs",    "min",     "max",       "days",      "hours",
    "coalesce", "latest", "mean_of", "median_of", "stddev_of", "zscore"};

#define TW__MAX_ARGS 16 /* arguments of one call (coalesce) */

static void consider(const char *cand, const char *name, size_t len, const char **best,
                     size_t *best_d) {
  size_t d = tw__edit_distance(name, len, cand, strlen(cand));
  if (d < *best_d && d <= (len / 3 > 2 ? len / 3 : 2) && d < len) {
    *best = cand;
    *best_d = d;
  }
}

static const char *suggest_name(const tw__env_t *env, const char *name, size_t len, int funcs) {
  const char *best = NULL;
  size_t best_d = (size_t)-1;
  if (env->rs->n_suggested++ >= TW__MAX_SUGGESTIONS) return NULL; /* bounded work per file */
  if (funcs) {
    for (size_t i = 0; i < sizeof function_names / sizeof function_names[0]; i++)
      consider(function_names[i], name, len, &best, &best_d);
    return best;
  }
  const tw_schema_t *sc = env->rs->schema;
  for (uint32_t i = 0; i < sc->n_fields; i++)
    consider(sc->fields[i].name, name, len, &best, &best_d);
  for (size_t i = 0; i < env->rs->n_aggs; i++)
    consider(env->rs->aggs[i].name, name, len, &best, &best_d);
  for (size_t i = 0; i < env->rs->n_lists; i++)
    consider(env->rs->lists[i].name, name, len, &best, &best_d);
  for (size_t i = 0; i < env->rs->n_params; i++)
    consider(env->rs->params[i].name, name, len, &best, &best_d);
  for (size_t i = 0; i < env->rs->n_macros; i++)
    consider(env->rs->macros[i].name, name, len, &best, &best_d);
  return best;
}

static int unknown_name(parser_t *p, const char *kind, const tw__token_t *t, int funcs) {
  const char *s = suggest_name(p->env, t->s, t->slen, funcs);
  int n = t->slen > 64 ? 64 : (int)t->slen;
  if (s != NULL)
    return tw__perr_set(p->err, TW_EINVAL, t->pos, "unknown %s '%.*s' (did you mean '%s'?)", kind,
                        n, t->s, s);
  return tw__perr_set(p->err, TW_EINVAL, t->pos, "unknown %s '%.*s'", kind, n, t->s);
}

static long find_kind(const tw__env_t *env, const char *s, size_t len, int want) {
  int kind;
  long i = tw__names_find(env->rs, s, len, 1u << want, &kind);
  return i >= 0 && kind == want ? i : -1;
}

static tw__list_t *find_list(const tw__env_t *env, const char *s, size_t len) {
  long i = find_kind(env, s, len, TW__NAME_LIST);
  return i >= 0 ? &env->rs->lists[i] : NULL;
}

static int find_agg(const tw__env_t *env, const char *s, size_t len) {
  return (int)find_kind(env, s, len, TW__NAME_AGG);
}

static int find_param(const tw__env_t *env, const char *s, size_t len) {
  return (int)find_kind(env, s, len, TW__NAME_PARAM);
}

static int find_macro(const tw__env_t *env, const char *s, size_t len) {
  return (int)find_kind(env, s, len, TW__NAME_MACRO);
}

static void count_use(const tw__env_t *env, int *used) {
  if (!env->precheck) (*used)++;
}

/* An error that follows from one already reported (a broken macro or aggregate). */
static void quiet_error(parser_t *p, size_t pos, const char *what, const char *name) {
  tw__perr_set(p->err, TW_EINVAL, pos, "%s '%s' has errors", what, name);
  p->err->quiet = 1;
}

/* The aggregate may be read here: not in a `where`, and with the rule's own key. */
static int check_agg_use(parser_t *p, int agg, size_t pos) {
  const tw__env_t *env = p->env;
  const tw_agg_def_t *a = &env->rs->aggs[agg];
  if (env->rs->agg_bad != NULL && env->rs->agg_bad[agg]) {
    quiet_error(p, pos, "aggregate", a->name);
    return TW_EINVAL;
  }
  if (!env->allow_aggs)
    return tw__perr_set(p->err, TW_EINVAL, pos,
                        "aggregate '%s' cannot be used in an aggregate's 'where'", a->name);
  if (env->key_name != NULL &&
      (a->by_slot != env->key_slot || (int)a->by_derive != env->key_derive))
    return tw__perr_set(p->err, TW_EINVAL, pos,
                        "aggregate '%s' is kept by %s, and this rule is by %s: a rule reads only "
                        "aggregates with its own key",
                        a->name, a->by_name, env->key_name);
  if (env->rs->agg_used != NULL) count_use(env, &env->rs->agg_used[agg]);
  return 0;
}

/* ---- grammar ---- */

static tw_expr_t *parse_or(parser_t *p);

static int is_numeric(int t) {
  return t == TW_V_INT || t == TW_V_MONEY || t == TW_V_DURATION;
}

static int is_signed(int t) { /* unary minus, abs */
  return is_numeric(t) || t == TW_V_DEC;
}

static int is_ordered(int t) {
  return is_numeric(t) || t == TW_V_TIME || t == TW_V_DEC;
}

/* dec and int compare with each other */
static int comparable(int a, int b) {
  return a == b || (a == TW_V_DEC && b == TW_V_INT) || (a == TW_V_INT && b == TW_V_DEC);
}

/* latest(a), mean_of(a)...: the argument is the name of a calendar (bucketed) aggregate. */
static tw_expr_t *parse_series(parser_t *p, tw__token_t name, int fn) {
  tw__series_fn_t sf = (tw__series_fn_t)(fn - FN_LATEST);
  const char *fname = function_names[fn];
  if (advance(p) != 0) return NULL; /* '(' */
  tw__token_t t = p->tok;
  int agg = t.kind == TW__TK_IDENT ? find_agg(p->env, t.s, t.slen) : -1;
  if (agg < 0) {
    if (t.kind == TW__TK_IDENT && tw_schema_field_slot(p->env->rs->schema, t.s, t.slen) < 0 &&
        find_macro(p->env, t.s, t.slen) < 0 && find_param(p->env, t.s, t.slen) < 0 &&
        find_list(p->env, t.s, t.slen) == NULL) {
      unknown_name(p, "aggregate", &t, 0);
      return NULL;
    }
    tw__perr_set(p->err, TW_ETYPE, t.pos, "%s() takes the name of a bucketed aggregate", fname);
    return NULL;
  }
  const tw_agg_def_t *a = &p->env->rs->aggs[agg];
  if (check_agg_use(p, agg, t.pos) != 0) return NULL;
  if (a->spec.bucket_ms <= 0) {
    tw__perr_set(p->err, TW_ETYPE, t.pos,
                 "%s() needs a bucketed aggregate (with 'bucket'), and '%s' has none", fname,
                 a->name);
    return NULL;
  }
  int64_t nb = a->spec.window_ms / a->spec.bucket_ms;
  if (nb > TW__MAX_SERIES) {
    tw__perr_set(p->err, TW_ETOOBIG, t.pos,
                 "%s() reads at most %d buckets, and '%s' has %lld (window / bucket)", fname,
                 TW__MAX_SERIES, a->name, (long long)nb);
    return NULL;
  }
  int vt = a->value_type, type;
  if (sf == TW__SER_LATEST) {
    type = vt;
  } else if (vt != TW_V_INT && vt != TW_V_MONEY && vt != TW_V_DEC) {
    tw__perr_set(p->err, TW_ETYPE, t.pos, "%s() needs a series of int, money or dec, not %s", fname,
                 tw__type_name(vt));
    return NULL;
  } else {
    type = sf == TW__SER_ZSCORE ? TW_V_DEC : vt == TW_V_MONEY ? TW_V_MONEY : TW_V_DEC;
  }
  if (advance(p) != 0 || expect(p, TW__TK_RPAREN, "')'") != 0) return NULL;
  tw_expr_t *n = new_node(p, TW__OP_SERIES, type, name.pos, NULL, NULL);
  if (n == NULL) return NULL;
  size_t nl = strlen(fname) + strlen(a->name) + 3;
  char *label = tw__arena_alloc(&p->env->rs->arena, nl);
  if (label == NULL) {
    tw__perr_set(p->err, TW_ENOMEM, name.pos, "out of memory");
    return NULL;
  }
  snprintf(label, nl, "%s(%s)", fname, a->name);
  n->u.agg.index = (size_t)agg;
  n->u.agg.name = label;
  n->u.agg.fn = (uint8_t)a->spec.fn;
  n->u.agg.kind = (uint8_t)vt;
  n->u.agg.series = (uint8_t)sf;
  return n;
}

static tw_expr_t *parse_call(parser_t *p, tw__token_t name) {
  tw_expr_t *args[TW__MAX_ARGS];
  size_t nargs = 0;
  int fn = -1;
  for (size_t i = 0; i < N_FUNCTIONS; i++)
    if (strlen(function_names[i]) == name.slen && memcmp(function_names[i], name.s, name.slen) == 0)
      fn = (int)i;
  if (fn < 0) {
    unknown_name(p, "function", &name, 1);
    return NULL;
  }
  if (fn >= FN_LATEST) return parse_series(p, name, fn);
  if (advance(p) != 0) return NULL; /* '(' */
  if (p->tok.kind != TW__TK_RPAREN) {
    for (;;) {
      if (nargs == TW__MAX_ARGS) {
        tw__perr_set(p->err, TW_EPARSE, p->tok.pos, "too many arguments to %s()",
                     function_names[fn]);
        return NULL;
      }
      args[nargs] = parse_or(p);
      if (args[nargs] == NULL) return NULL;
      nargs++;
      if (p->tok.kind != TW__TK_COMMA) break;
      if (advance(p) != 0) return NULL;
    }
  }
  if (expect(p, TW__TK_RPAREN, "')'") != 0) return NULL;
  static const size_t arity[] = {0, 1, 2, 2, 1, 1, 0};
  if (fn == FN_COALESCE) {
    if (nargs < 2) {
      tw__perr_set(p->err, TW_EPARSE, name.pos, "coalesce() takes at least 2 arguments, not %zu",
                   nargs);
      return NULL;
    }
  } else if (nargs != arity[fn]) {
    tw__perr_set(p->err, TW_EPARSE, name.pos, "%s() takes %zu argument%s, not %zu",
                 function_names[fn], arity[fn], arity[fn] == 1 ? "" : "s", nargs);
    return NULL;
  }
  switch (fn) {
    case FN_NOW:
      return new_node(p, TW__OP_NOW, TW_V_TIME, name.pos, NULL, NULL);
    case FN_ABS:
      if (!is_signed(args[0]->type)) {
        tw__perr_set(p->err, TW_ETYPE, args[0]->pos,
                     "abs() needs int, money, duration or dec, not %s",
                     tw__type_name(args[0]->type));
        return NULL;
      }
      return new_node(p, TW__OP_ABS, args[0]->type, name.pos, args[0], NULL);
    case FN_DAYS:
    case FN_HOURS:
      if (args[0]->type != TW_V_DURATION) {
        tw__perr_set(p->err, TW_ETYPE, args[0]->pos, "%s() needs a duration, not %s",
                     function_names[fn], tw__type_name(args[0]->type));
        return NULL;
      }
      return new_node(p, fn == FN_DAYS ? TW__OP_DAYS : TW__OP_HOURS, TW_V_INT, name.pos, args[0],
                      NULL);
    case FN_COALESCE: {
      for (size_t i = 1; i < nargs; i++)
        if (args[i]->type != args[0]->type) {
          tw__perr_set(p->err, TW_ETYPE, args[i]->pos,
                       "coalesce() needs arguments of one type: %s, then %s",
                       tw__type_name(args[0]->type), tw__type_name(args[i]->type));
          return NULL;
        }
      tw_expr_t *n = args[nargs - 1];
      for (size_t i = nargs - 1; i-- > 0 && n != NULL;)
        n = new_node(p, TW__OP_COALESCE, args[0]->type, name.pos, args[i], n);
      return n;
    }
    default:
      if (args[0]->type != args[1]->type || !is_ordered(args[0]->type)) {
        tw__perr_set(p->err, TW_ETYPE, name.pos,
                     "%s() needs two values of the same type (int, money, duration, time or "
                     "dec), not %s and %s",
                     function_names[fn], tw__type_name(args[0]->type),
                     tw__type_name(args[1]->type));
        return NULL;
      }
      return new_node(p, fn == FN_MIN ? TW__OP_MIN : TW__OP_MAX, args[0]->type, name.pos, args[0],
                      args[1]);
  }
}

/* A macro: its source compiled here, in this expression's environment. Errors inside it point
 * into its own source (err->macro); a use of a macro being expanded is a cycle. */
static tw_expr_t *expand_macro(parser_t *p, int mi, const tw__token_t *t) {
  tw__macro_t *m = &p->env->rs->macros[mi];
  mstack_t *ms = p->ms;
  for (int i = 0; i < ms->n; i++) {
    if (ms->idx[i] != mi) continue;
    char chain[400];
    size_t o = 0;
    for (int k = i; k < ms->n && o < sizeof chain; k++)
      o += (size_t)snprintf(chain + o, sizeof chain - o, "%s -> ",
                            p->env->rs->macros[ms->idx[k]].name);
    if (o < sizeof chain) snprintf(chain + o, sizeof chain - o, "%s", m->name);
    tw__perr_set(p->err, TW_EINVAL, t->pos, "macro cycle: %s", chain);
    return NULL;
  }
  if (m->bad) {
    quiet_error(p, t->pos, "macro", m->name);
    return NULL;
  }
  if (ms->n >= TW__MAX_MACRO_DEPTH) {
    tw__perr_set(p->err, TW_ETOOBIG, t->pos, "macros nested deeper than %d", TW__MAX_MACRO_DEPTH);
    return NULL;
  }
  count_use(p->env, &m->used);
  parser_t q;
  memset(&q, 0, sizeof q);
  q.lx.src = m->src;
  q.lx.len = m->len;
  q.lx.arena = &p->env->rs->arena;
  q.env = p->env;
  q.err = p->err;
  q.nesting = p->nesting;
  q.macro = mi + 1;
  q.ms = ms;
  ms->idx[ms->n++] = mi;
  tw_expr_t *n = NULL;
  if (advance(&q) == 0) {
    if (q.tok.kind == TW__TK_EOF)
      tw__perr_set(q.err, TW_EPARSE, 0, "empty expression");
    else if ((n = parse_or(&q)) != NULL && q.tok.kind != TW__TK_EOF) {
      tw__perr_set(q.err, TW_EPARSE, q.tok.pos, "unexpected %s", tw__tok_name(q.tok.kind));
      n = NULL;
    }
  }
  ms->n--;
  if (n == NULL && p->err->macro == 0) p->err->macro = q.macro;
  /* a fresh tree per use: errors about it as an operand point at the use, in this source */
  if (n != NULL) n->pos = (uint32_t)t->pos;
  return n;
}

static tw_expr_t *parse_name(parser_t *p) {
  tw__token_t t = p->tok;
  if (advance(p) != 0) return NULL;
  if (p->tok.kind == TW__TK_LPAREN) return parse_call(p, t);
  const tw__env_t *env = p->env;
  const tw_schema_t *sc = env->rs->schema;
  int slot = tw_schema_field_slot(sc, t.s, t.slen);
  if (slot >= 0) {
    if (env->sweep && slot != TW_SLOT_TS && slot != TW_SLOT_INSTITUTION_ID &&
        slot != TW_SLOT_REGION) {
      tw__perr_set(p->err, TW_EINVAL, t.pos,
                   "a scheduled rule ('every') reads no event: only institution_id, region and ts "
                   "(the sweep time) are there, not '%s'",
                   sc->fields[slot].name);
      return NULL;
    }
    if (env->on_types != 0 && slot > TW_SLOT_REGION) { /* the envelope is in every event */
      int carried = 0;
      for (uint32_t ty = 0; ty < sc->n_types && ty < 32; ty++)
        if ((env->on_types & (1u << ty)) && (sc->types[ty].present_mask & ((uint64_t)1 << slot)))
          carried = 1;
      if (!carried) {
        tw__perr_set(p->err, TW_EINVAL, t.pos,
                     "field '%s' does not occur in the event types this runs on",
                     sc->fields[slot].name);
        return NULL;
      }
    }
    tw_expr_t *n =
        new_node(p, TW__OP_FIELD, tw__field_type(sc->fields[slot].kind), t.pos, NULL, NULL);
    if (n == NULL) return NULL;
    n->u.field.slot = slot;
    n->u.field.name = sc->fields[slot].name;
    return n;
  }
  int agg = find_agg(env, t.s, t.slen);
  if (agg >= 0) {
    if (check_agg_use(p, agg, t.pos) != 0) return NULL;
    const tw_agg_def_t *a = &env->rs->aggs[agg];
    tw_expr_t *n = new_node(p, TW__OP_AGG, a->value_type, t.pos, NULL, NULL);
    if (n == NULL) return NULL;
    n->u.agg.index = (size_t)agg;
    n->u.agg.name = a->name;
    n->u.agg.fn = (uint8_t)a->spec.fn;
    n->u.agg.kind = a->value_type;
    return n;
  }
  int pi = find_param(env, t.s, t.slen);
  if (pi >= 0) {
    tw__param_t *pm = &env->rs->params[pi];
    if (pm->bad) {
      quiet_error(p, t.pos, "param", pm->name);
      return NULL;
    }
    count_use(env, &pm->used);
    tw_expr_t *n = new_node(p, TW__OP_CONST, pm->value.kind, t.pos, NULL, NULL);
    if (n != NULL) n->u.k = pm->value;
    return n;
  }
  int mi = find_macro(env, t.s, t.slen);
  if (mi >= 0) return expand_macro(p, mi, &t);
  tw__list_t *list = find_list(env, t.s, t.slen);
  if (list != NULL) {
    count_use(env, &list->used);
    tw__perr_set(p->err, TW_ETYPE, t.pos,
                 "list '%s' can only be used after 'in' or inside 'matches any(...)'", list->name);
    return NULL;
  }
  unknown_name(p, "field", &t, 0);
  return NULL;
}

static tw_expr_t *parse_primary(parser_t *p) {
  tw__token_t t = p->tok;
  tw_expr_t *n;
  switch (t.kind) {
    case TW__TK_INT:
    case TW__TK_MONEY:
    case TW__TK_DURATION:
    case TW__TK_TRUE:
    case TW__TK_FALSE: {
      int type = t.kind == TW__TK_INT        ? TW_V_INT
                 : t.kind == TW__TK_MONEY    ? TW_V_MONEY
                 : t.kind == TW__TK_DURATION ? TW_V_DURATION
                                             : TW_V_BOOL;
      n = new_node(p, TW__OP_CONST, type, t.pos, NULL, NULL);
      if (n == NULL) return NULL;
      n->u.k = tw_value_int((tw_vkind_t)type, type == TW_V_BOOL ? t.kind == TW__TK_TRUE : t.i);
      if (advance(p) != 0) return NULL;
      return n;
    }
    case TW__TK_DEC:
      n = new_node(p, TW__OP_CONST, TW_V_DEC, t.pos, NULL, NULL);
      if (n == NULL) return NULL;
      n->u.k = tw_value_dec(t.d);
      if (advance(p) != 0) return NULL;
      return n;
    case TW__TK_STRING:
      n = new_node(p, TW__OP_CONST, TW_V_STR, t.pos, NULL, NULL);
      if (n == NULL) return NULL;
      n->u.k = tw_value_str(t.s, (uint32_t)t.slen);
      if (advance(p) != 0) return NULL;
      return n;
    case TW__TK_IDENT:
      return parse_name(p);
    case TW__TK_LPAREN:
      if (advance(p) != 0) return NULL;
      n = parse_or(p);
      if (n == NULL) return NULL;
      if (expect(p, TW__TK_RPAREN, "')'") != 0) return NULL;
      return n;
    default:
      tw__perr_set(p->err, TW_EPARSE, t.pos, "expected a value, found %s", tw__tok_name(t.kind));
      return NULL;
  }
}

static int enter(parser_t *p) {
  if (++p->nesting > TW__MAX_NESTING)
    return tw__perr_set(p->err, TW_ETOOBIG, p->tok.pos, "expression nested too deeply (limit %d)",
                        TW__MAX_NESTING);
  return 0;
}

static tw_expr_t *parse_unary(parser_t *p) {
  if (p->tok.kind != TW__TK_MINUS) return parse_primary(p);
  size_t pos = p->tok.pos;
  if (enter(p) != 0 || advance(p) != 0) return NULL;
  tw_expr_t *a = parse_unary(p);
  p->nesting--;
  if (a == NULL) return NULL;
  if (!is_signed(a->type)) {
    tw__perr_set(p->err, TW_ETYPE, pos, "unary '-' needs int, money, duration or dec, not %s",
                 tw__type_name(a->type));
    return NULL;
  }
  if (a->op == TW__OP_CONST && a->type == TW_V_DEC) {
    tw_expr_t *n = new_node(p, TW__OP_CONST, TW_V_DEC, pos, NULL, NULL);
    if (n != NULL) n->u.k = tw_value_dec(-a->u.k.u.d);
    return n;
  }
  if (a->op == TW__OP_CONST) { /* fold, so `-5` is a constant (list items) */
    if (a->u.k.u.i == INT64_MIN) {
      tw__perr_set(p->err, TW_EPARSE, pos, "number too large");
      return NULL;
    }
    tw_expr_t *n = new_node(p, TW__OP_CONST, a->type, pos, NULL, NULL);
    if (n != NULL) n->u.k = tw_value_int((tw_vkind_t)a->type, -a->u.k.u.i);
    return n;
  }
  return new_node(p, TW__OP_NEG, a->type, pos, a, NULL);
}

/* Result type of a op b for + - * / %, or -1. */
static int arith_type(tw__tok_t op, int a, int b) {
  int dec = (a == TW_V_DEC && (b == TW_V_DEC || b == TW_V_INT)) || (b == TW_V_DEC && a == TW_V_INT);
  if (op != TW__TK_PERCENT && dec) return TW_V_DEC;
  if (op == TW__TK_STAR &&
      ((a == TW_V_MONEY && b == TW_V_DEC) || (a == TW_V_DEC && b == TW_V_MONEY)))
    return TW_V_MONEY;
  if (op == TW__TK_SLASH && a == TW_V_MONEY && b == TW_V_DEC) return TW_V_MONEY;
  switch (op) {
    case TW__TK_PLUS:
      if (a == b && is_numeric(a)) return a;
      if ((a == TW_V_TIME && b == TW_V_DURATION) || (a == TW_V_DURATION && b == TW_V_TIME))
        return TW_V_TIME;
      return -1;
    case TW__TK_MINUS:
      if (a == b && is_numeric(a)) return a;
      if (a == TW_V_TIME && b == TW_V_TIME) return TW_V_DURATION;
      if (a == TW_V_TIME && b == TW_V_DURATION) return TW_V_TIME;
      return -1;
    case TW__TK_STAR:
      if (a == TW_V_INT && is_numeric(b)) return b;
      if (b == TW_V_INT && is_numeric(a)) return a;
      return -1;
    case TW__TK_SLASH:
      if (a == b && is_numeric(a)) return TW_V_INT;
      if (b == TW_V_INT && is_numeric(a)) return a;
      return -1;
    case TW__TK_PERCENT:
      if (a == b && is_numeric(a)) return a;
      return -1;
    default:
      return -1;
  }
}

static tw_expr_t *parse_binary_level(parser_t *p, int level);

static tw_expr_t *parse_arith(parser_t *p, int mul_level) {
  tw_expr_t *a = mul_level ? parse_unary(p) : parse_arith(p, 1);
  while (a != NULL) {
    tw__tok_t k = p->tok.kind;
    int ok = mul_level ? (k == TW__TK_STAR || k == TW__TK_SLASH || k == TW__TK_PERCENT)
                       : (k == TW__TK_PLUS || k == TW__TK_MINUS);
    if (!ok) break;
    size_t pos = p->tok.pos;
    if (advance(p) != 0) return NULL;
    tw_expr_t *b = mul_level ? parse_unary(p) : parse_arith(p, 1);
    if (b == NULL) return NULL;
    int t = arith_type(k, a->type, b->type);
    if (t < 0) {
      tw__perr_set(p->err, TW_ETYPE, pos, "cannot apply %s to %s and %s", tw__tok_name(k),
                   tw__type_name(a->type), tw__type_name(b->type));
      return NULL;
    }
    tw__op_t op = k == TW__TK_PLUS    ? TW__OP_ADD
                  : k == TW__TK_MINUS ? TW__OP_SUB
                  : k == TW__TK_STAR  ? TW__OP_MUL
                  : k == TW__TK_SLASH ? TW__OP_DIV
                                      : TW__OP_MOD;
    a = new_node(p, op, t, pos, a, b);
  }
  return a;
}

static int cmp_str(const void *x, const void *y) {
  const tw_str_t *a = x, *b = y;
  if (a->len != b->len) return a->len < b->len ? -1 : 1;
  return memcmp(a->ptr, b->ptr, a->len);
}

static int cmp_i64(const void *x, const void *y) {
  int64_t a = *(const int64_t *)x, b = *(const int64_t *)y;
  return (a > b) - (a < b);
}

static tw_expr_t *parse_in(parser_t *p, tw_expr_t *a, size_t pos) {
  if (p->tok.kind == TW__TK_IDENT) {
    tw__token_t t = p->tok;
    tw__list_t *list = find_list(p->env, t.s, t.slen);
    if (list == NULL) {
      unknown_name(p, "list", &t, 0);
      return NULL;
    }
    count_use(p->env, &list->used);
    if (a->type != TW_V_STR) {
      tw__perr_set(p->err, TW_ETYPE, pos, "'in %s' needs a string on the left, not %s", list->name,
                   tw__type_name(a->type));
      return NULL;
    }
    if (advance(p) != 0) return NULL;
    tw_expr_t *n = new_node(p, TW__OP_IN_STR, TW_V_BOOL, pos, a, NULL);
    if (n == NULL) return NULL;
    n->u.sset.items = list->items;
    n->u.sset.n = list->n;
    return n;
  }
  if (p->tok.kind != TW__TK_LBRACK) {
    tw__perr_set(p->err, TW_EPARSE, p->tok.pos, "expected '[' or a list name after 'in', found %s",
                 tw__tok_name(p->tok.kind));
    return NULL;
  }
  if (a->type != TW_V_STR && !is_numeric(a->type)) {
    tw__perr_set(p->err, TW_ETYPE, pos,
                 "'in' needs a string, int, money or duration on the left, not %s",
                 tw__type_name(a->type));
    return NULL;
  }
  /* items are parsed twice: once to count, once to fill; both bounded by the source length */
  tw__lexer_t save_lx = p->lx;
  tw__token_t save_tok = p->tok;
  size_t n_items = 0;
  tw_expr_t **items = NULL;
  for (int pass = 0; pass < 2; pass++) {
    p->lx = save_lx;
    p->tok = save_tok;
    if (pass == 1) {
      items = tw__arena_alloc(&p->env->rs->arena, (n_items ? n_items : 1) * sizeof *items);
      if (items == NULL) {
        tw__perr_set(p->err, TW_ENOMEM, pos, "out of memory");
        return NULL;
      }
    }
    size_t count = 0;
    if (advance(p) != 0) return NULL; /* '[' */
    while (p->tok.kind != TW__TK_RBRACK) {
      if (count == TW__MAX_LIST_ITEMS) {
        tw__perr_set(p->err, TW_ETOOBIG, p->tok.pos, "list has more than %d items",
                     TW__MAX_LIST_ITEMS);
        return NULL;
      }
      tw_expr_t *it = parse_unary(p);
      if (it == NULL) return NULL;
      if (it->op != TW__OP_CONST) {
        tw__perr_set(p->err, TW_ETYPE, it->pos, "list items must be literals");
        return NULL;
      }
      if (it->type != a->type) {
        tw__perr_set(p->err, TW_ETYPE, it->pos, "list item is %s, but the left side is %s",
                     tw__type_name(it->type), tw__type_name(a->type));
        return NULL;
      }
      if (pass == 1) items[count] = it;
      count++;
      if (p->tok.kind == TW__TK_COMMA) {
        if (advance(p) != 0) return NULL;
      } else if (p->tok.kind != TW__TK_RBRACK) {
        tw__perr_set(p->err, TW_EPARSE, p->tok.pos, "expected ',' or ']', found %s",
                     tw__tok_name(p->tok.kind));
        return NULL;
      }
    }
    n_items = count;
  }
  if (advance(p) != 0) return NULL; /* ']' */
  tw_expr_t *n =
      new_node(p, a->type == TW_V_STR ? TW__OP_IN_STR : TW__OP_IN_INT, TW_V_BOOL, pos, a, NULL);
  if (n == NULL) return NULL;
  if (a->type == TW_V_STR) {
    tw_str_t *set = tw__arena_alloc(&p->env->rs->arena, (n_items ? n_items : 1) * sizeof *set);
    if (set == NULL) goto oom;
    for (size_t i = 0; i < n_items; i++) set[i] = items[i]->u.k.u.s;
    qsort(set, n_items, sizeof *set, cmp_str);
    n->u.sset.items = set;
    n->u.sset.n = n_items;
  } else {
    int64_t *set = tw__arena_alloc(&p->env->rs->arena, (n_items ? n_items : 1) * sizeof *set);
    if (set == NULL) goto oom;
    for (size_t i = 0; i < n_items; i++) set[i] = items[i]->u.k.u.i;
    qsort(set, n_items, sizeof *set, cmp_i64);
    n->u.iset.items = set;
    n->u.iset.n = n_items;
  }
  return n;
oom:
  tw__perr_set(p->err, TW_ENOMEM, pos, "out of memory");
  return NULL;
}

static tw_expr_t *parse_matches(parser_t *p, tw_expr_t *a, size_t pos) {
  if (a->type != TW_V_STR) {
    tw__perr_set(p->err, TW_ETYPE, pos, "'matches' needs a string on the left, not %s",
                 tw__type_name(a->type));
    return NULL;
  }
  const tw__regex_t *re = NULL;
  tw__token_t t = p->tok;
  if (t.kind == TW__TK_STRING) {
    if (tw__regex_compile(p->env->rs, t.s, t.slen, &re, p->err) != 0) {
      p->err->pos = t.pos;
      return NULL;
    }
    /* warned once: where it is written (a macro's regex when the macro is checked alone) */
    long risky = p->env->warn != NULL && (p->env->precheck || p->macro == 0)
                     ? tw__regex_risky(t.s, t.slen)
                     : -1;
    if (risky >= 0) {
      tw__perr_t w;
      memset(&w, 0, sizeof w);
      tw__perr_set(&w, 0, t.pos,
                   "regex may backtrack catastrophically: a quantifier at offset %ld repeats a "
                   "group that holds one (as in (a+)+); the match limit will cut it short",
                   risky);
      w.macro = p->macro;
      p->env->warn(p->env->warn_ud, &w);
    }
    if (advance(p) != 0) return NULL;
  } else if (t.kind == TW__TK_IDENT && t.slen == 3 && memcmp(t.s, "any", 3) == 0) {
    if (advance(p) != 0 || expect(p, TW__TK_LPAREN, "'('") != 0) return NULL;
    tw__token_t lt = p->tok;
    if (lt.kind != TW__TK_IDENT) {
      tw__perr_set(p->err, TW_EPARSE, lt.pos, "expected a list name in any(...), found %s",
                   tw__tok_name(lt.kind));
      return NULL;
    }
    tw__list_t *list = find_list(p->env, lt.s, lt.slen);
    if (list == NULL) {
      unknown_name(p, "list", &lt, 0);
      return NULL;
    }
    count_use(p->env, &list->used);
    if (tw__regex_compile_list(p->env->rs, list, &re, p->err) != 0) {
      p->err->pos = lt.pos;
      return NULL;
    }
    if (advance(p) != 0 || expect(p, TW__TK_RPAREN, "')'") != 0) return NULL;
  } else {
    tw__perr_set(p->err, TW_EPARSE, t.pos,
                 "expected a regex string or any(list) after 'matches', found %s",
                 tw__tok_name(t.kind));
    return NULL;
  }
  tw_expr_t *n = new_node(p, TW__OP_MATCH, TW_V_BOOL, pos, a, NULL);
  if (n != NULL) n->u.re = re;
  return n;
}

static tw_expr_t *parse_comparison(parser_t *p) {
  tw_expr_t *a = parse_arith(p, 0);
  if (a == NULL) return NULL;
  tw__tok_t k = p->tok.kind;
  size_t pos = p->tok.pos;
  if (k == TW__TK_IN || k == TW__TK_MATCHES) {
    if (advance(p) != 0) return NULL;
    return k == TW__TK_IN ? parse_in(p, a, pos) : parse_matches(p, a, pos);
  }
  if (k == TW__TK_CONTAINS || k == TW__TK_STARTSWITH) {
    if (advance(p) != 0) return NULL;
    tw_expr_t *b = parse_arith(p, 0);
    if (b == NULL) return NULL;
    const tw_expr_t *bad = a->type != TW_V_STR ? a : b->type != TW_V_STR ? b : NULL;
    if (bad != NULL) {
      tw__perr_set(p->err, TW_ETYPE, pos, "%s needs strings on both sides, not %s", tw__tok_name(k),
                   tw__type_name(bad->type));
      return NULL;
    }
    return new_node(p, k == TW__TK_CONTAINS ? TW__OP_CONTAINS : TW__OP_STARTSWITH, TW_V_BOOL, pos,
                    a, b);
  }
  if (k < TW__TK_EQ || k > TW__TK_GE) return a;
  if (advance(p) != 0) return NULL;
  tw_expr_t *b = parse_arith(p, 0);
  if (b == NULL) return NULL;
  if (!comparable(a->type, b->type)) {
    /* a bare integer literal next to money or a duration: say how to write it */
    const tw_expr_t *bare = (a->type == TW_V_INT && a->op == TW__OP_CONST)   ? a
                            : (b->type == TW_V_INT && b->op == TW__OP_CONST) ? b
                                                                             : NULL;
    int other = bare == a ? b->type : a->type;
    if (bare != NULL && other == TW_V_MONEY)
      tw__perr_set(p->err, TW_ETYPE, bare->pos,
                   "compare money with money: write 5000yuan or 500000fen");
    else if (bare != NULL && other == TW_V_DURATION)
      tw__perr_set(p->err, TW_ETYPE, bare->pos,
                   "compare duration with duration: write 500ms, 15s, 30m, 12h or 7d");
    else
      tw__perr_set(p->err, TW_ETYPE, pos, "cannot compare %s with %s", tw__type_name(a->type),
                   tw__type_name(b->type));
    return NULL;
  }
  if (k != TW__TK_EQ && k != TW__TK_NE && !is_ordered(a->type)) {
    tw__perr_set(p->err, TW_ETYPE, pos, "%s needs int, money, duration, time or dec, not %s",
                 tw__tok_name(k), tw__type_name(a->type));
    return NULL;
  }
  tw__op_t op = (tw__op_t)(TW__OP_EQ + (k - TW__TK_EQ));
  tw_expr_t *n = new_node(p, op, TW_V_BOOL, pos, a, b);
  if (n != NULL && p->tok.kind >= TW__TK_EQ && p->tok.kind <= TW__TK_GE)
    tw__perr_set(p->err, TW_EPARSE, p->tok.pos, "comparisons do not chain: use 'and'");
  return p->err->code ? NULL : n;
}

static tw_expr_t *parse_not(parser_t *p) {
  if (p->tok.kind != TW__TK_NOT) return parse_comparison(p);
  size_t pos = p->tok.pos;
  if (enter(p) != 0 || advance(p) != 0) return NULL;
  tw_expr_t *a = parse_not(p);
  p->nesting--;
  if (a == NULL) return NULL;
  if (a->type != TW_V_BOOL) {
    tw__perr_set(p->err, TW_ETYPE, pos, "'not' needs bool, not %s", tw__type_name(a->type));
    return NULL;
  }
  return new_node(p, TW__OP_NOT, TW_V_BOOL, pos, a, NULL);
}

/* level 0: or, level 1: and */
static tw_expr_t *parse_binary_level(parser_t *p, int level) {
  tw_expr_t *a = level ? parse_not(p) : parse_binary_level(p, 1);
  tw__tok_t want = level ? TW__TK_AND : TW__TK_OR;
  while (a != NULL && p->tok.kind == want) {
    size_t pos = p->tok.pos;
    if (advance(p) != 0) return NULL;
    tw_expr_t *b = level ? parse_not(p) : parse_binary_level(p, 1);
    if (b == NULL) return NULL;
    const tw_expr_t *bad = a->type != TW_V_BOOL ? a : b->type != TW_V_BOOL ? b : NULL;
    if (bad != NULL) {
      tw__perr_set(p->err, TW_ETYPE, bad->pos, "%s needs bool on both sides, not %s",
                   tw__tok_name(want), tw__type_name(bad->type));
      return NULL;
    }
    a = new_node(p, level ? TW__OP_AND : TW__OP_OR, TW_V_BOOL, pos, a, b);
  }
  return a;
}

static tw_expr_t *parse_or(parser_t *p) {
  if (enter(p) != 0) return NULL;
  tw_expr_t *n = parse_binary_level(p, 0);
  p->nesting--;
  return n;
}

int tw__expr_compile(const tw__env_t *env, const char *src, size_t len, int want_type,
                     tw_expr_t **out, tw__perr_t *err) {
  parser_t p;
  memset(&p, 0, sizeof p);
  memset(err, 0, sizeof *err);
  p.lx.src = src;
  p.lx.len = len;
  p.lx.arena = &env->rs->arena;
  p.env = env;
  p.err = err;
  mstack_t ms;
  ms.n = 0;
  ms.nodes = 0;
  p.ms = &ms;
  if (advance(&p) != 0) return err->code;
  if (p.tok.kind == TW__TK_EOF) return tw__perr_set(err, TW_EPARSE, 0, "empty expression");
  tw_expr_t *n = parse_or(&p);
  if (n == NULL) return err->code ? err->code : TW_EPARSE;
  if (p.tok.kind == TW__TK_IDENT) {
    static const char *const units[] = {"yuan", "fen", "ms", "s", "m", "h", "d"};
    int nl = p.tok.slen > 64 ? 64 : (int)p.tok.slen;
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
      if (strlen(units[i]) == p.tok.slen && memcmp(units[i], p.tok.s, p.tok.slen) == 0)
        return tw__perr_set(err, TW_EPARSE, p.tok.pos,
                            "unexpected name '%.*s' (write a unit without a space: 5000yuan, 7d)",
                            nl, p.tok.s);
    return tw__perr_set(err, TW_EPARSE, p.tok.pos, "unexpected name '%.*s'", nl, p.tok.s);
  }
  if (p.tok.kind != TW__TK_EOF)
    return tw__perr_set(err, TW_EPARSE, p.tok.pos, "unexpected %s", tw__tok_name(p.tok.kind));
  if (want_type >= 0 && n->type != want_type)
    return tw__perr_set(err, TW_ETYPE, 0, "condition must be %s, not %s", tw__type_name(want_type),
                        tw__type_name(n->type));
  *out = n;
  return 0;
}
