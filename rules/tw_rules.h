/*
 * tw_rules.h: the rule language: loading a YAML rule file, compiled expressions, evaluation.
 *
 * A rule file (libyaml) has `version`, `params`, `lists`, `macros`, `aggregates`, `rules` and
 * `tests` (see docs/rules.md). Loading resolves every field name to a schema slot, every
 * aggregate name to an index, every param to a constant, every macro to its expansion and every
 * list to a constant set, compiles and JITs every regex (PCRE2) once, and type-checks the
 * expressions, so evaluation does no string lookup, no allocation and no regex compilation.
 * Errors name the file, line and column: "rules/default.yaml:42:17: unknown field 'amout_fen'
 * (did you mean 'amount_fen'?)".
 *
 * The loaded ruleset is immutable and may be shared by threads; evaluation state lives in the
 * caller's tw_eval_ctx_t.
 */
#ifndef TW_RULES_H
#define TW_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tw_event.h"
#include "tw_schema.h"
#include "tw_state.h"
#include "tw_value.h"

#define TW_RULES_MAX_FILE_BYTES (4u << 20) /* a rule file is refused above 4 MiB */
#define TW_EVAL_MAX_READS 16               /* reads recorded per evaluation (alert `values`) */
#define TW_REGEX_MATCH_LIMIT 100000        /* PCRE2 match limit per match (ReDoS bound) */

typedef enum tw_severity {
  TW_SEV_INFO = 0,
  TW_SEV_LOW,
  TW_SEV_MEDIUM,
  TW_SEV_HIGH,
  TW_SEV_CRITICAL
} tw_severity_t;

/* tw_severity_name: "info", "low", "medium", "high", "critical" (static). */
const char *tw_severity_name(tw_severity_t sev);

typedef struct tw_expr tw_expr_t;         /* compiled expression (opaque) */
typedef struct tw_template tw_template_t; /* compiled message template (opaque) */

/*
 * How a key is taken from an event: a field as it is, or the city / province of the region
 * code (GB/T 2260), written as a 6-digit code: region 440106 → city 440100, province 440000.
 */
typedef enum tw_key_derive {
  TW_KEY_FIELD = 0, /* the by field's value */
  TW_KEY_CITY,      /* by: city     (by_slot is the region slot) */
  TW_KEY_PROVINCE   /* by: province (by_slot is the region slot) */
} tw_key_derive_t;

typedef struct tw_agg_def {
  const char *name;          /* aggregate name */
  uint32_t on_types;         /* bit t set: events of schema type t feed it */
  const tw_expr_t *where;    /* optional filter; NULL = every event of those types */
  int by_slot;               /* key field slot (the region slot for city / province) */
  tw_key_derive_t by_derive; /* field, city or province */
  const char *by_name;       /* "institution_id", "city", ... as written in `by` */
  int arg_slot;              /* the field given to fn(field); -1 for count(). Events without
                                the field do not feed the aggregate. DISTINCT hashes the value */
  uint8_t arg_kind;          /* tw_vkind_t of the argument (TW_V_NULL for count) */
  uint8_t value_type;        /* tw_vkind_t of the aggregate's value in expressions */
  tw_window_spec_t spec;     /* name, fn, window_ms (0 = all), bucket_ms for tw_state */
  int line;                  /* where it was defined in the rule file */
} tw_agg_def_t;

typedef struct tw_label {
  const char *key, *value;
} tw_label_t;

typedef struct tw_rule {
  const char *name;
  const char *description;
  const char *source;        /* the regulation, local measure or documented case */
  uint32_t on_types;         /* triggering event types (bit per schema type id; the internal
                                `alert` type for rules on re-entering alerts) */
  int by_slot;               /* key field slot; the alert's `by` is its field name */
  tw_key_derive_t by_derive; /* field, city or province (by_slot is then the region slot) */
  const char *by_name;       /* the alert's `by`: the field name, "city" or "province" */
  const tw_expr_t *when;     /* the condition; must type-check to bool */
  tw_severity_t severity;
  int64_t cooldown_ms; /* 0 = fire on every matching event */
  int64_t every_ms;    /* > 0: a scheduled rule, evaluated for every institution each time the
                          watermark crosses a multiple of it (aligned to local midnight); its
                          `when` reads aggregates and now(), no event fields. 0: on events */
  const tw_template_t *message;
  const tw_label_t *labels;
  size_t n_labels;
  int line;
} tw_rule_t;

typedef struct tw_ruleset tw_ruleset_t;

typedef struct tw_rule_error {
  char file[256];
  int line, col; /* 1-based; 0 when not known */
  char message[512];
} tw_rule_error_t;

/*
 * tw_rules_load: read, parse and compile the rule file at path against schema (which must
 * outlive the ruleset). On success *out is owned by the caller (tw_rules_free). Errors, each with
 * *err filled (file:line:col and message; the first error found, loading stops there):
 * TW_ENOENT (cannot open), TW_EIO (cannot read), TW_ETOOBIG (file over TW_RULES_MAX_FILE_BYTES;
 * YAML aliases, which are refused outright; a series function over more than 366 buckets),
 * TW_EPARSE (YAML or expression syntax; a regex error names its offset), TW_ETYPE (type errors,
 * a --set value of another type), TW_EINVAL (unknown names with a suggestion, duplicates,
 * missing keys, bad severity, duration or bucket, macro cycles, an aggregate read by a rule of
 * another key), TW_ECRYPTO (libsodium failed to initialise), TW_ENOMEM.
 */
int tw_rules_load(const char *path, const tw_schema_t *schema, tw_ruleset_t **out,
                  tw_rule_error_t *err);

/* tw_rules_load_buffer: as tw_rules_load, from memory; name is used in error locations. */
int tw_rules_load_buffer(const char *name, const char *data, size_t len, const tw_schema_t *schema,
                         tw_ruleset_t **out, tw_rule_error_t *err);

/* A diagnostic (error or lint warning) reported while loading, in file order. */
typedef void (*tw_rules_diag_cb)(void *ud, const tw_rule_error_t *d, bool warning);

typedef struct tw_rules_load_opts {
  const char *const *set; /* "name=value" overrides of params (`--set`); value in the param's
                             literal syntax (5000yuan, 14d, 3, "text"); an unknown name or a
                             value of another type is an error */
  size_t n_set;
  tw_rules_diag_cb diag; /* NULL: only the first error, in *err. Else every error and warning
                            (unused names, risky regexes...) is reported here too */
  void *diag_ud;
} tw_rules_load_opts_t;

/*
 * tw_rules_load_ex: tw_rules_load with options (opts may be NULL); data NULL reads path,
 * else data[0..len) is the file (borrowed for the call) and path names it in messages.
 * opts->set overrides params before anything is compiled. With opts->diag, an error in one
 * param, list, macro, aggregate or rule does not stop the load: it goes on with the next one,
 * and when it ends every error and lint warning (unused params, lists, macros and aggregates on a
 * file without errors; regexes with nested unbounded quantifiers; rules on `alert` that cannot
 * tell their own alerts) is passed to opts->diag once, in file order (line 0 first: --set),
 * each d valid for the call only; an error that only follows from another (a use of a broken
 * macro or aggregate) is not reported. Returns as tw_rules_load: the code of the first error
 * (*err holds it), or 0 (warnings alone do not fail the load). At most 1000 diagnostics.
 */
int tw_rules_load_ex(const char *path, const char *data, size_t len, const tw_schema_t *schema,
                     const tw_rules_load_opts_t *opts, tw_ruleset_t **out, tw_rule_error_t *err);

/* tw_rules_free: free a ruleset; NULL accepted. */
void tw_rules_free(tw_ruleset_t *rs);

/* Introspection; pointers are valid for the ruleset's lifetime. */
size_t tw_rules_n_aggregates(const tw_ruleset_t *rs);
const tw_agg_def_t *tw_rules_aggregate(const tw_ruleset_t *rs, size_t i);
size_t tw_rules_n_rules(const tw_ruleset_t *rs);
const tw_rule_t *tw_rules_rule(const tw_ruleset_t *rs, size_t i);
/* tw_rules_hash: 64 lowercase hex of the SHA-256 of the rule file's bytes (static per ruleset). */
const char *tw_rules_hash(const tw_ruleset_t *rs);

/* One value the condition read, recorded for the alert's `values`. */
typedef struct tw_eval_read {
  const char *name; /* field or aggregate name (static for the ruleset's lifetime) */
  tw_value_t value;
} tw_eval_read_t;

/*
 * The evaluation context, filled by the caller. agg_get fills the value of aggregate agg_index
 * for the context's key at now_ms; agg_series the buckets of a calendar (bucketed) aggregate,
 * oldest first, the last one holding now_ms (as tw_state_agg_series). Both return 0 or a
 * TW_E... code. The evaluator turns tw_agg_out_t into a value of the aggregate's value_type
 * (an absent MIN/MAX/AVG/FIRST/LAST is null). Reads are appended, without duplicates, up to
 * TW_EVAL_MAX_READS.
 */
typedef struct tw_eval_ctx {
  const tw_event_t *ev;
  int64_t now_ms; /* now(): the triggering event's time (or the sweep time) */
  int (*agg_get)(void *ud, size_t agg_index, tw_agg_out_t *out);
  int (*agg_series)(void *ud, size_t agg_index, tw_agg_out_t *buf, size_t cap, size_t *n);
  void *ud;
  tw_eval_read_t reads[TW_EVAL_MAX_READS];
  size_t n_reads;
  uint64_t regex_limit_hits; /* matches stopped by TW_REGEX_MATCH_LIMIT */
} tw_eval_ctx_t;

/*
 * tw_expr_eval: evaluate a compiled expression. Returns 0 with *out set (null, or a value of the
 * expression's type); TW_EOVERFLOW on integer overflow, a decimal result that is not finite, or
 * money scaled by a decimal beyond int64; TW_EDIVZERO (by 0 or 0.0); TW_ELIMIT when a regex hit
 * its match limit (the condition is then false: the caller counts and logs it); TW_ENOMEM (no
 * per-thread regex match data); or an error returned by agg_get / agg_series. On an error *out
 * is false. No allocation; stack use is bounded (tree depth 256, one series buffer of 366
 * buckets, about 30 KiB).
 */
int tw_expr_eval(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_value_t *out);

/* One sub-expression of a traced evaluation (tw_expr_eval_trace). */
#define TW_TRACE_TEXT_MAX 256
typedef struct tw_trace_node {
  uint32_t pos;      /* byte offset of the sub-expression in the source text it was compiled from
                        (the condition, or the macro it came from) */
  uint16_t depth;    /* 0: the whole expression; children are one deeper, listed after it */
  bool evaluated;    /* false: not evaluated (the other side of a short-circuited and / or, or of
                        a coalesce whose first argument was not null); value is then null */
  int error;         /* 0, or the TW_E... code its evaluation returned; value is then null */
  tw_value_t value;  /* strings borrow from the event: valid as long as the event is */
  char text[TW_TRACE_TEXT_MAX]; /* its canonical text, params and macros expanded, cut with "…" */
} tw_trace_node_t;

/*
 * tw_expr_eval_trace: evaluate e as tw_expr_eval does (same *out, same return codes) and also
 * record every sub-expression except constants, in pre-order (a node, then its operands), with
 * its value, into nodes[0..cap); *n says how many were written (at most cap; deeper nodes beyond
 * it are left out). For investigations (replay --explain), not the hot path: each recorded node
 * is evaluated on its own, so the cost is O(nodes × depth) evaluations, and aggregates are read
 * again through ctx's callbacks. No allocation. Returns as tw_expr_eval, or TW_EINVAL (NULL
 * argument).
 */
int tw_expr_eval_trace(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_trace_node_t *nodes,
                       size_t cap, size_t *n, tw_value_t *out);

/*
 * tw_expr_text: the canonical text of a compiled expression ("(complaints_7d >= 5) and ...";
 * params and macros appear expanded, money as yuan, regexes as <regex>) into buf, cut with "…"
 * when longer than cap - 4 bytes. Returns the length, or TW_EINVAL (NULL, or cap < 8).
 */
int tw_expr_text(const tw_expr_t *e, char *buf, size_t cap);

/*
 * tw_template_render: render a message template into buf (cap bytes, always NUL-terminated,
 * truncated with "…" when too long). Holes `{expr}` are evaluated in ctx; money renders in fen
 * as an integer, decimals with six decimals and trailing zeros cut (as engine/alert.c), times
 * as RFC 3339 (+08:00). Returns the length written, TW_EINVAL (buf NULL or cap 0), or the first
 * error of tw_expr_eval in a hole (buf then holds the text before that hole).
 */
int tw_template_render(const tw_template_t *t, tw_eval_ctx_t *ctx, char *buf, size_t cap);

#endif
