/*
 * rules_internal.h: what the files of rules/ share and nobody else sees.
 *
 * A ruleset owns one bump arena: every string, list, expression node and template of a loaded
 * file lives there and is freed at once by tw_rules_free, so nothing is freed piecemeal and
 * evaluation never allocates. Compiled regexes are chained in the ruleset and freed with it.
 *
 * Expressions compile to a tree of tw_expr nodes whose names are already resolved: fields to
 * schema slots, aggregates to indexes, lists to sorted constant arrays, regexes to JIT code.
 * Every node carries its static type, checked at load. Parse errors carry a byte offset into
 * the expression source; load.c maps it to the YAML file's line and column.
 */
#ifndef TW_RULES_INTERNAL_H
#define TW_RULES_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tw_rules.h"

#define TW__MAX_NESTING 64     /* parenthesis / operator nesting while parsing an expression */
#define TW__MAX_TREE_DEPTH 256 /* depth of a compiled tree, so evaluation recursion is bounded */
#define TW__MAX_LIST_ITEMS 10000
#define TW__REGEX_DEPTH_LIMIT 10000
#define TW__MAX_MACRO_DEPTH 16        /* macros using macros, nested */
#define TW__MAX_SERIES 366            /* buckets a series function reads (window / bucket) */
#define TW__MAX_EXPR_NODES 100000     /* nodes of one compiled expression, macros expanded */
#define TW__MAX_RULESET_NODES 2000000 /* nodes of every expression of a ruleset */

/* ---- arena ---- */
typedef struct tw__chunk tw__chunk_t;
typedef struct tw__arena {
  tw__chunk_t *head;
  size_t bytes; /* allocated so far */
  size_t limit; /* 0: none; else tw__arena_alloc fails (and sets over) beyond it */
  int over;
} tw__arena_t;

#define TW__MAX_RULESET_BYTES ((size_t)256 << 20) /* a compiled ruleset: strings, nodes, lists */
#define TW__MAX_DURATION_MS ((int64_t)1 << 61) /* windows, buckets, cooldowns, every: the
                                                  engine's bound on times (engine/state.c) */
#define TW__MAX_SUGGESTIONS 100 /* "did you mean" per file: names x errors stays linear */
#define TW__MAX_REGEXES 1000 /* regexes compiled per file (a macro's regex once per use) */
#define TW__MAX_REGEX_BYTES ((size_t)64 << 20) /* their compiled and JIT code together */

void *tw__arena_alloc(tw__arena_t *a, size_t size); /* zeroed, 16-aligned; NULL on OOM */
char *tw__arena_strndup(tw__arena_t *a, const char *s, size_t len); /* NUL-terminated copy */
void tw__arena_free(tw__arena_t *a);

/* ---- errors while compiling an expression or template ---- */
typedef struct tw__perr {
  int code;   /* TW_EPARSE, TW_ETYPE, TW_EINVAL, TW_ENOMEM */
  size_t pos; /* byte offset into the source text */
  int macro;  /* 0: pos is in the compiled text; i > 0: in the source of macro i - 1 */
  int quiet;  /* 1: follows from an error already reported (a broken macro): not reported */
  char msg[480];
} tw__perr_t;

int tw__perr_set(tw__perr_t *e, int code, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Index the name of rs's list / aggregate / param / macro / rule number index (its name pointer
 * must be set). 0, or TW_ENOMEM, TW_ETOOBIG (more than 2^28 names). */
int tw__names_add(tw_ruleset_t *rs, int kind, size_t index);
/* The index of the name[0..len) of a kind whose bit (1 << kind) is in mask, *kind set; -1 if
 * none. Rules have their own namespace (mask 1 << TW__NAME_RULE). */
long tw__names_find(const tw_ruleset_t *rs, const char *name, size_t len, unsigned mask, int *kind);

/* Levenshtein distance, bounded by the shorter work; used for "did you mean". */
size_t tw__edit_distance(const char *a, size_t alen, const char *b, size_t blen);

/* ---- regexes ---- */
typedef struct tw__regex tw__regex_t;

/* ---- named string lists ---- */
typedef struct tw__list {
  const char *name;
  tw_str_t *items; /* sorted by (len, bytes) for binary search */
  size_t n;
  const tw__regex_t *alternation; /* compiled on first `matches any(name)`; NULL before */
  int line, col;
  int used; /* references from rules and aggregates (for the unused-name lint) */
} tw__list_t;

/* ---- params: named constants (`params:`), overridable with --set ---- */
typedef struct tw__param {
  const char *name;
  tw_value_t value; /* strings live in the arena */
  int line, col;
  int used;
  int bad; /* its value was refused: uses fail quietly */
} tw__param_t;

/* ---- macros: named expressions compiled at each use ---- */
typedef struct tw__macro {
  const char *name;
  const char *src; /* the expression text (arena) */
  size_t len;
  const void *node; /* load.c's YAML node of the source, for error locations (load time only) */
  int line, col;
  int used;
  int bad; /* its own compilation failed: uses fail quietly */
} tw__macro_t;

/* ---- names of lists, aggregates, params and macros: one hash index, so a lookup costs the
 * same with 10 names or 100,000 ---- */
enum { TW__NAME_LIST = 0, TW__NAME_AGG, TW__NAME_PARAM, TW__NAME_MACRO, TW__NAME_RULE };
#define TW__NAMES_SHARED 0x0f /* lists, aggregates, params and macros share one namespace */

typedef struct tw__names {
  uint32_t *slot; /* 0 empty, else (kind << 28 | index) + 1; open addressing, linear probing */
  size_t cap;     /* a power of two, or 0 */
  size_t n;
} tw__names_t;

/* ---- the ruleset ---- */
struct tw_ruleset {
  const tw_schema_t *schema;
  tw__arena_t arena;
  tw__list_t *lists;
  size_t n_lists;
  tw__param_t *params;
  size_t n_params;
  tw__macro_t *macros;
  size_t n_macros;
  tw_agg_def_t *aggs;
  size_t n_aggs;
  int *agg_used;    /* per aggregate: references from rules (unused-name lint) */
  uint8_t *agg_bad; /* per aggregate: its definition failed (diagnostics mode): uses fail quietly */
  tw_rule_t *rules;
  size_t n_rules;
  tw__regex_t *regexes; /* chain of compiled regexes, freed with the ruleset */
  size_t n_regexes;
  size_t regex_bytes; /* compiled + JIT code of every regex */
  size_t n_suggested; /* unknown names given a "did you mean" (TW__MAX_SUGGESTIONS at most) */
  size_t n_nodes;       /* expression nodes built so far (TW__MAX_RULESET_NODES) */
  tw__names_t names;    /* every list, aggregate, param and macro by name (arena) */
  void *match_ctx;      /* pcre2_match_context_8 *: match and depth limits, read-only */
  char hash[65];
};

/* ---- expression tree ---- */
typedef enum tw__op {
  TW__OP_CONST = 0,
  TW__OP_FIELD,
  TW__OP_AGG,
  TW__OP_NOW,
  TW__OP_NOT,
  TW__OP_NEG,
  TW__OP_ABS,
  TW__OP_AND,
  TW__OP_OR,
  TW__OP_EQ,
  TW__OP_NE,
  TW__OP_LT,
  TW__OP_LE,
  TW__OP_GT,
  TW__OP_GE,
  TW__OP_ADD,
  TW__OP_SUB,
  TW__OP_MUL,
  TW__OP_DIV,
  TW__OP_MOD,
  TW__OP_MIN,
  TW__OP_MAX,
  TW__OP_IN_STR,     /* a in sorted string set */
  TW__OP_IN_INT,     /* a in sorted int64 set (int, money, duration) */
  TW__OP_MATCH,      /* a matches regex */
  TW__OP_CONTAINS,   /* string a contains string b */
  TW__OP_STARTSWITH, /* string a starts with string b */
  TW__OP_DAYS,       /* duration → int days, toward zero */
  TW__OP_HOURS,      /* duration → int hours, toward zero */
  TW__OP_COALESCE,   /* a if not null, else b (chained for more arguments) */
  TW__OP_SERIES      /* a series function over a calendar aggregate */
} tw__op_t;

/* Series functions over the buckets of a calendar aggregate. */
typedef enum tw__series_fn {
  TW__SER_LATEST = 0,
  TW__SER_MEAN,
  TW__SER_MEDIAN,
  TW__SER_STDDEV,
  TW__SER_ZSCORE
} tw__series_fn_t;

struct tw_expr {
  uint8_t op;   /* tw__op_t */
  uint8_t type; /* tw_vkind_t of the result */
  uint16_t depth;
  uint32_t pos; /* byte offset in the source, for errors */
  const struct tw_expr *a, *b;
  union {
    tw_value_t k; /* CONST */
    struct {
      int slot;
      const char *name;
    } field; /* FIELD */
    struct {
      size_t index;
      const char *name;
      uint8_t fn;     /* tw_agg_fn_t */
      uint8_t kind;   /* value_type of the aggregate */
      uint8_t series; /* SERIES: tw__series_fn_t */
    } agg;            /* AGG, SERIES (name is then "fn(aggregate)") */
    struct {
      const tw_str_t *items;
      size_t n;
    } sset; /* IN_STR */
    struct {
      const int64_t *items;
      size_t n;
    } iset;                /* IN_INT */
    const tw__regex_t *re; /* MATCH */
  } u;
};

/* A lint warning found while compiling (pos / macro as in tw__perr_t). */
typedef void (*tw__warn_cb)(void *ud, const tw__perr_t *w);

/* What an expression may refer to while it is compiled. */
typedef struct tw__env {
  tw_ruleset_t *rs;
  uint32_t on_types;    /* the event types it runs on: fields must be carried by one of them */
  int allow_aggs;       /* 0 inside an aggregate's `where` */
  int sweep;            /* a scheduled rule: only institution_id, region and ts exist */
  const char *key_name; /* the rule's `by`; NULL = no key (aggregates of any key may be read) */
  int key_slot;         /* with key_name: aggregates read must have this by_slot... */
  int key_derive;       /* ...and this tw_key_derive_t */
  int precheck;         /* compiling a macro on its own: uses are not counted */
  tw__warn_cb warn;     /* NULL: lint warnings are not wanted */
  void *warn_ud;
} tw__env_t;

/* Compile src[0..len) to a tree whose result type is any (want_type < 0) or want_type. */
int tw__expr_compile(const tw__env_t *env, const char *src, size_t len, int want_type,
                     tw_expr_t **out, tw__perr_t *err);

/* The type's name in messages: "int", "money", "duration", "time", "string", "bool", "dec",
 * "null". */
const char *tw__type_name(int kind);

/* Static type of a schema field kind (TW_V_STR, TW_V_INT, TW_V_MONEY, TW_V_TIME). */
int tw__field_type(tw_field_kind_t kind);

/* Compile a regex (UTF, JIT) into the ruleset. err->pos is 0; the message names the offset. */
int tw__regex_compile(tw_ruleset_t *rs, const char *pattern, size_t len, const tw__regex_t **out,
                      tw__perr_t *err);
/* Compile a list into one alternation of escaped words (cached in the list). */
int tw__regex_compile_list(tw_ruleset_t *rs, tw__list_t *list, const tw__regex_t **out,
                           tw__perr_t *err);
/* 1 match, 0 no match, TW_ELIMIT (counted in ctx), TW_ENOMEM (no per-thread match data). */
int tw__regex_match(const tw__regex_t *re, const char *s, size_t len, tw_eval_ctx_t *ctx);
/* Lint: offset of a quantifier applied to a group that itself holds an unbounded quantifier
 * (`(a+)+`, `(\\w*x)*`), the shape that can backtrack catastrophically; -1 when none. */
long tw__regex_risky(const char *pattern, size_t len);
/* Free every compiled regex and the match context (before the arena that holds them). */
void tw__regex_release(tw_ruleset_t *rs);

/* Templates. */
int tw__template_compile(const tw__env_t *env, const char *src, size_t len,
                         const tw_template_t **out, tw__perr_t *err);
/* Format one value as templates do; returns bytes that would be written (snprintf-like). */
int tw__value_format(tw_value_t v, char *buf, size_t cap);

/* ---- lexer (lexer.c) ---- */
typedef enum tw__tok {
  TW__TK_EOF = 0,
  TW__TK_INT,
  TW__TK_MONEY,
  TW__TK_DURATION,
  TW__TK_STRING,
  TW__TK_IDENT,
  TW__TK_LPAREN,
  TW__TK_RPAREN,
  TW__TK_LBRACK,
  TW__TK_RBRACK,
  TW__TK_COMMA,
  TW__TK_EQ,
  TW__TK_NE,
  TW__TK_LT,
  TW__TK_LE,
  TW__TK_GT,
  TW__TK_GE,
  TW__TK_PLUS,
  TW__TK_MINUS,
  TW__TK_STAR,
  TW__TK_SLASH,
  TW__TK_PERCENT,
  TW__TK_AND,
  TW__TK_OR,
  TW__TK_NOT,
  TW__TK_IN,
  TW__TK_MATCHES,
  TW__TK_TRUE,
  TW__TK_FALSE,
  TW__TK_DEC,
  TW__TK_CONTAINS,
  TW__TK_STARTSWITH
} tw__tok_t;

typedef struct tw__token {
  tw__tok_t kind;
  size_t pos, len; /* bytes of the token in the source */
  int64_t i;       /* INT; MONEY in fen; DURATION in ms */
  double d;        /* DEC */
  const char *s;   /* STRING: decoded, NUL-terminated, in the arena; IDENT: points into source */
  size_t slen;
} tw__token_t;

typedef struct tw__lexer {
  const char *src;
  size_t len, pos;
  tw__arena_t *arena;
} tw__lexer_t;

int tw__lex_next(tw__lexer_t *lx, tw__token_t *tok, tw__perr_t *err);
const char *tw__tok_name(tw__tok_t kind);
/* Parse src[0..len) as one literal (an optional '-', then int, money, duration, decimal, string,
 * true or false) into *out; strings are decoded into arena. 0, or TW_EPARSE with err set. */
int tw__parse_literal(tw__arena_t *arena, const char *src, size_t len, tw_value_t *out,
                      tw__perr_t *err);
/* Format a decimal as templates and alerts do: 6 decimals, trailing zeros cut. */
int tw__dec_format(double d, char *buf, size_t cap);

#endif
