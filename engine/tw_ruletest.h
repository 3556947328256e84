/*
 * tw_ruletest.h: rule files carry their own tests (`tests:`), run by `tutorwatch test`.
 *
 * A test gives events, optionally advances event time, and says which alerts must (`expect`)
 * and must not (`expect_none`) come out. Each test runs the real pipeline (tw_pipeline.h) on a
 * fresh private state in a temporary directory that is removed afterwards, with alerts collected
 * in memory, so a rule file is tested exactly as `tutorwatch run` would evaluate it and no live
 * state is ever touched. docs/rules.md ("Rule tests") describes the format.
 *
 * Loading reads the `tests` section of a rule file with libyaml (the rule loader accepts the key
 * and ignores it). Given events are converted from YAML to one JSON object each, which the
 * pipeline decodes with the engine's own decoder exactly as it decodes input:
 *   - plain scalars that are JSON numbers (`500000`, `-3`, `1.5`, `1e6`) are copied as numbers,
 *     `true` / `false` as booleans, `null`, `~` and empty as null; every other scalar, and every
 *     quoted or block scalar, is a JSON string;
 *   - the test's `defaults` are added for keys the event does not give;
 *   - `event_id` is "<test number>-<event number>" (both 1-based) when neither gives one.
 *
 * Bounds (a hostile file costs bounded time and memory): the file at most
 * TW_RULES_MAX_FILE_BYTES, nesting at most TW_RULETEST_MAX_DEPTH, YAML anchors and aliases refused
 * outright, at most TW_RULETEST_MAX_TESTS tests, TW_RULETEST_MAX_GIVEN events and
 * TW_RULETEST_MAX_EXPECT expectations per test, one given event at most TW_EVENT_MAX_BYTES of
 * JSON, at most TW_RULETEST_MAX_ALERTS alerts collected per test (the test fails beyond),
 * at most TW_RULETEST_MAX_NODES YAML nodes in the section, TW_RULETEST_MAX_KEYS keys in a given
 * event or in defaults (the decoder itself takes at most TW_EVENT_MAX_KEYS). Matching is a
 * maximum bipartite matching (Kuhn's augmenting paths) over pairs of the same rule, so at most
 * TW_RULETEST_MAX_EXPECT searches of at most TW_RULETEST_MAX_EXPECT × TW_RULETEST_MAX_ALERTS steps.
 *
 * Not thread-safe: one suite per thread. Functions return 0 or a negative TW_E... code.
 */
#ifndef TW_RULETEST_H
#define TW_RULETEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tw_rules.h"

#define TW_RULETEST_MAX_DEPTH 32     /* YAML nesting of the whole file */
#define TW_RULETEST_MAX_TESTS 1000   /* tests per file */
#define TW_RULETEST_MAX_GIVEN 10000  /* given events per test */
#define TW_RULETEST_MAX_EXPECT 256   /* expect items and expect_none names per test */
#define TW_RULETEST_MAX_SET 64       /* parameter overrides per test */
#define TW_RULETEST_MAX_ALERTS 4096  /* alerts collected per test; more fails the test */
#define TW_RULETEST_MAX_NODES 500000 /* YAML nodes in the tests section */
#define TW_RULETEST_MAX_KEYS 256     /* keys of one given event or of defaults */
#define TW_RULETEST_MAX_REJECTS 100  /* rejected given events listed per test (all are counted) */

typedef struct tw_ruletest_suite tw_ruletest_suite_t;

/*
 * tw_ruletest_load: read the `tests` section of the rule file path (data NULL: read the file;
 * else data[0..len) is its content and path names it). A file without `tests` gives a suite of
 * zero tests. On success *out is owned by the caller (tw_ruletest_free); it keeps path for
 * tw_ruletest_run, which loads the rules from that file.
 * Errors, each with *err filled (file, 1-based line and column in characters as libyaml counts
 * them, and a message such as "unknown key 'expcet' in a test (did you mean 'expect'?)"):
 * TW_ENOENT (cannot read path), TW_ETOOBIG (file over TW_RULES_MAX_FILE_BYTES, YAML anchors or
 * aliases, nesting or a list over its bound, a given event over TW_EVENT_MAX_BYTES), TW_EPARSE
 * (YAML syntax), TW_EINVAL (the section's shape: unknown or missing key, a value of the wrong
 * kind, a bad time in `at`, an empty or duplicate test name, a rule both expected and in
 * expect_none), TW_ENOMEM.
 */
int tw_ruletest_load(const char *path, const char *data, size_t len, tw_ruletest_suite_t **out,
                     tw_rule_error_t *err);

/* tw_ruletest_free: free a suite; NULL accepted. */
void tw_ruletest_free(tw_ruletest_suite_t *s);

/* tw_ruletest_count: the number of tests in the file. */
size_t tw_ruletest_count(const tw_ruletest_suite_t *s);

/* tw_ruletest_path: the rule file's path as given to tw_ruletest_load (valid for the suite). */
const char *tw_ruletest_path(const tw_ruletest_suite_t *s);

/* tw_ruletest_name / tw_ruletest_line: test i's name and the line of its item (i < count;
 * the string is valid for the suite's lifetime). */
const char *tw_ruletest_name(const tw_ruletest_suite_t *s, size_t i);
int tw_ruletest_line(const tw_ruletest_suite_t *s, size_t i);

/* tw_ruletest_n_given: the number of given events of test i. */
size_t tw_ruletest_n_given(const tw_ruletest_suite_t *s, size_t i);

/* tw_ruletest_given_json: given event j of test i as the JSON object handed to the decoder
 * (NUL-terminated; *len_bytes, when not NULL, its length) and *line its YAML line (may be NULL).
 * Valid for the suite's lifetime. */
const char *tw_ruletest_given_json(const tw_ruletest_suite_t *s, size_t i, size_t j,
                                   size_t *len_bytes, int *line);

/* tw_ruletest_set: test i's parameter overrides as "name=value" strings in the syntax of
 * tw_rules_load_opts_t.set (a quoted YAML value becomes a quoted string literal); *n their
 * count. Valid for the suite's lifetime. */
const char *const *tw_ruletest_set(const tw_ruletest_suite_t *s, size_t i, size_t *n);

/*
 * tw_ruletest_check_rules: every rule named in an `expect` item or in `expect_none` must be a
 * rule of rs, so a misspelt name cannot make a test pass vacuously. Returns 0, or TW_EINVAL with
 * *err at the name ("unknown rule 'prepaid_over_cp' (did you mean 'prepaid_over_cap'?)").
 */
int tw_ruletest_check_rules(const tw_ruletest_suite_t *s, const tw_ruleset_t *rs,
                            tw_rule_error_t *err);

/*
 * The outcome of one test: passed, and the lines of its diff, in this order:
 *   "! ..."              a test that could not run as written, or a given event the engine
 *                        rejected ("! given event at line 42 rejected: bad_credit_code
 *                        (institution_id): ...")
 *   "- expected {...}"   an expect item that no alert matched (the item as JSON)
 *   "+ unexpected {...}" an alert that no expect item accounts for, of a rule named in an
 *                        expect item or in expect_none (the alert's canonical JSON)
 * lines are owned by the report (tw_ruletest_report_fini).
 */
typedef struct tw_ruletest_report {
  bool passed;
  char **lines;
  size_t n_lines, cap_lines;
} tw_ruletest_report_t;

/* tw_ruletest_report_init: an empty report that has passed. */
void tw_ruletest_report_init(tw_ruletest_report_t *rep);

/* tw_ruletest_report_fini: free the lines and reset to empty; a zeroed report is accepted. */
void tw_ruletest_report_fini(tw_ruletest_report_t *rep);

/*
 * tw_ruletest_match: compare the alerts of a run of test i (alerts[k] the canonical JSON of
 * alert k, lens[k] its length) with its expectations, appending the diff to rep and clearing
 * rep->passed on any difference:
 *   - each expect item must match a distinct alert: every field it names equals the alert's
 *     field (objects match when each named key matches, arrays element by element; a number
 *     matches a string of its decimal digits; two RFC 3339 times match when they are the same
 *     instant; `message_contains` matches when the message contains the text); the pairing is
 *     a maximum matching, so the order of items and alerts does not matter;
 *   - every alert of a rule named in some expect item must be matched (the count per named rule
 *     is exact);
 *   - an alert of a rule in expect_none fails the test; alerts of other rules are ignored.
 * Returns 0, TW_EINVAL (an alert is not a JSON object with a string `rule`), TW_ENOMEM.
 */
int tw_ruletest_match(const tw_ruletest_suite_t *s, size_t i, const char *const *alerts,
                      const size_t *lens, size_t n, tw_ruletest_report_t *rep);

typedef struct tw_ruletest_opts {
  const char *schema_path; /* NULL: schema.yaml beside the rule file, else the shipped one */
  const char *tmp_dir;     /* where the private state directory is made; NULL: $TMPDIR or /tmp */
} tw_ruletest_opts_t;

/*
 * tw_ruletest_run: run test i: open a pipeline (no_sync, default event-time settings) on the
 * suite's rule file with a fresh state in a new directory under the temporary directory, feed
 * the given events in order (origin the rule file, line the event's YAML line), flush, advance
 * event time to `at` when given (scheduled rules sweep up to it), commit, collect the alerts and
 * the rejected events, match (tw_ruletest_match), and remove the directory. rep is initialised
 * by the call (any earlier content is not freed: pass a fresh or finished report).
 * A test that cannot run as written (a `set`, which the pipeline cannot take yet; `at` before
 * the newest given event; more than TW_RULETEST_MAX_ALERTS alerts) is a failed test with a
 * "! ..." line, not an error. Returns 0 when the test ran (passed or not); an engine failure
 * TW_ENOMEM, TW_ESTATE, TW_EIO (the temporary directory cannot be made, state or dead-letter
 * files fail), or the rule or schema load error of tw_pipeline_open; the report then holds a
 * "! ..." line saying why and has not passed.
 */
int tw_ruletest_run(const tw_ruletest_suite_t *s, size_t i, const tw_ruletest_opts_t *opts,
                    tw_ruletest_report_t *rep);

#endif
