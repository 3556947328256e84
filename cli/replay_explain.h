/*
 * replay_explain.h: the explanations of `tutorwatch replay --explain` (docs/replay.md).
 *
 * An explainer observes a replay's pipeline (tw_pipeline_observer_t): it remembers, per aggregate
 * and key, the latest TW_EXPLAIN_EVENTS contributions (event id, event time, value), and when a
 * rule raises an alert that is asked for (by id, or every alert that the replay writes), it
 * evaluates the rule's condition again with tw_expr_eval_trace on the state as the rule saw it
 * and builds the explanation: the rule and its source, the condition with every
 * sub-expression's value, each aggregate's window bounds and value, the contributing events and
 * the rule file's SHA-256.
 *
 * Memory: one entry per (aggregate, key) seen, about 2.7 KiB each, and one explanation (a few
 * KiB) per explained alert, kept until written. Not thread-safe (one replay pipeline).
 */
#ifndef TW_REPLAY_EXPLAIN_H
#define TW_REPLAY_EXPLAIN_H

#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>

#include "tw_alert.h"
#include "tw_pipeline.h"
#include "tw_rules.h"

#define TW_EXPLAIN_EVENTS 32 /* contributions remembered per aggregate and key */

typedef struct tw_explain tw_explain_t;

/* Which alerts the replay writes (the same test as its output), so --explain-all explains what
 * the user sees and nothing of the warm-up. */
typedef bool (*tw_explain_keep_cb)(void *ud, const tw_alert_t *a);

/*
 * tw_explain_new: an explainer for the rules at rules_path (rs: the same rules, loaded by the
 * caller, for the aggregate definitions and the file's hash; borrowed). ids: the alert ids asked
 * for (borrowed), or all = true. keep decides which alerts count. Returns 0 with *out owned by
 * the caller (tw_explain_free), or TW_ENOMEM.
 */
int tw_explain_new(const tw_ruleset_t *rs, const char *rules_path, const char *const *ids,
                   size_t n_ids, bool all, tw_explain_keep_cb keep, void *keep_ud,
                   tw_explain_t **out);

/* tw_explain_observer: the observer to put in tw_pipeline_opts_t (valid while x lives). */
const tw_pipeline_observer_t *tw_explain_observer(tw_explain_t *x);

/* tw_explain_count: explanations made so far. */
size_t tw_explain_count(const tw_explain_t *x);

/* tw_explain_failed: the first failure inside the observer (TW_ENOMEM), or 0. */
int tw_explain_failed(const tw_explain_t *x);

/* tw_explain_report_missing: write to err each asked id that no alert of the replay had;
 * returns how many. */
size_t tw_explain_report_missing(const tw_explain_t *x, FILE *err);

/* tw_explain_write_lines: every explanation, one JSON line each (keys sorted), in the order the
 * alerts were raised. Returns 0 or TW_EIO. */
int tw_explain_write_lines(const tw_explain_t *x, FILE *out);

/*
 * tw_explain_write_evidence: write the self-contained evidence pack to path (JSON, keys sorted):
 * the replay's inputs (borrowed json object, may be NULL), the rule file's text, and per alert
 * its canonical JSON line, its explanation and its contributing events, with the SHA-256 of
 * each part (of its exact bytes as stored in the pack: the rule text as read, the alert line,
 * and the compact, key-sorted JSON of the explanation and of the events). Written whole
 * (temporary file + rename). Returns 0, TW_EIO (errbuf says why), TW_ENOMEM.
 */
int tw_explain_write_evidence(const tw_explain_t *x, const char *path, json_t *inputs, char *errbuf,
                              size_t errcap);

/* tw_explain_free: NULL accepted. */
void tw_explain_free(tw_explain_t *x);

#endif
