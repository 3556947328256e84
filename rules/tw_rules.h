/*
 * tw_rules.h: the rule language: loading a YAML rule file, compiled expressions, evaluation.
 *
 * A rule file (libyaml) has `version`, `lists`, `aggregates` and `rules` (see docs/rules.md).
 * Loading resolves every field name to a schema slot, every aggregate name to an index and
 * every list to a constant set, compiles and JITs every regex (PCRE2) once, and type-checks the
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

typedef struct tw_agg_def {
  const char *name;       /* aggregate name */
  uint32_t on_types;      /* bit t set: events of schema type t feed it */
  const tw_expr_t *where; /* optional filter; NULL = every event of those types */
  int by_slot;            /* key field slot (institution_id in the first cut) */
  int arg_slot;           /* field summed by SUM; -1 for COUNT */
  tw_window_spec_t spec;  /* name, fn, window_ms (0 = all) for tw_state */
  int line;               /* where it was defined in the rule file */
} tw_agg_def_t;

typedef struct tw_label {
  const char *key, *value;
} tw_label_t;

typedef struct tw_rule {
  const char *name;
  const char *description;
  const char *source;    /* the regulation, local measure or documented case */
  uint32_t on_types;     /* triggering event types (bit per schema type id) */
  int by_slot;           /* key field slot; the alert's `by` is its field name */
  const tw_expr_t *when; /* the condition; must type-check to bool */
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
 * *err filled (file:line:col and message): TW_ENOENT (cannot open), TW_ETOOBIG (file over
 * TW_RULES_MAX_FILE_BYTES; YAML aliases, which are refused outright), TW_EPARSE (YAML or
 * expression syntax; a regex error names its offset), TW_ETYPE (type errors), TW_EINVAL
 * (unknown names with a suggestion, duplicates, missing keys, bad severity or duration),
 * TW_ENOMEM.
 */
int tw_rules_load(const char *path, const tw_schema_t *schema, tw_ruleset_t **out,
                  tw_rule_error_t *err);

/* tw_rules_load_buffer: as tw_rules_load, from memory; name is used in error locations. */
int tw_rules_load_buffer(const char *name, const char *data, size_t len, const tw_schema_t *schema,
                         tw_ruleset_t **out, tw_rule_error_t *err);

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
 * The evaluation context, filled by the caller. agg_value returns the value of aggregate
 * agg_index for the context's key at now_ms (0 or a TW_E... code). Reads are appended, without
 * duplicates, up to TW_EVAL_MAX_READS.
 */
typedef struct tw_eval_ctx {
  const tw_event_t *ev;
  int64_t now_ms; /* now(): the triggering event's time (or the sweep time) */
  int (*agg_value)(void *ud, size_t agg_index, int64_t *out);
  void *ud;
  tw_eval_read_t reads[TW_EVAL_MAX_READS];
  size_t n_reads;
  uint64_t regex_limit_hits; /* matches stopped by TW_REGEX_MATCH_LIMIT */
} tw_eval_ctx_t;

/*
 * tw_expr_eval: evaluate a compiled expression. Returns 0 with *out set; TW_EOVERFLOW on
 * integer overflow, TW_EDIVZERO, TW_ELIMIT when a regex hit its match limit (the condition is
 * then false: the caller counts and logs it), or an error from agg_value. No allocation.
 */
int tw_expr_eval(const tw_expr_t *e, tw_eval_ctx_t *ctx, tw_value_t *out);

/*
 * tw_template_render: render a message template into buf (cap bytes, always NUL-terminated,
 * truncated with "…" when too long). Holes `{expr}` are evaluated in ctx; money renders in fen
 * as an integer, times as RFC 3339 (+08:00). Returns the length written or a TW_E... code.
 */
int tw_template_render(const tw_template_t *t, tw_eval_ctx_t *ctx, char *buf, size_t cap);

#endif
