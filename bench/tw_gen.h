/*
 * tw_gen.h: the synthetic event stream generator behind `tutorwatch gen`.
 *
 * It simulates N tutoring institutions over D days: students enrol, prepay packages (within the
 * caps for healthy institutions), attend weekly lessons that consume the prepaid hours, renew or
 * withdraw, sometimes ask for refunds; supervised payments are mirrored into the escrow account
 * and released weekly as lessons are delivered; staff come and go; complaints are rare and mild.
 * About 2% of the institutions (at least one of each kind) are given a scenario that starts in
 * the middle of the period (tw_gen_problem_t): a problem of one rule family, the documented
 * run-away timeline, or a healthy look-alike; the generator can write that ground truth so
 * `tutorwatch eval` can score the alerts against it.
 *
 * Invariants: output is sorted by event time (ties in creation order), and the same options give
 * byte-identical output (own PRNG, no clock, no rand()). Work is day by day: one day's events are
 * buffered, sorted and written, so memory is O(N) (per-institution and per-student state plus one
 * day's buffer) and does not grow with D. Money is integer fen; timestamps are RFC 3339 with the
 * +08:00 offset, about 10% with millisecond fractions.
 *
 * Thread rules: functions keep no global mutable state; distinct runs may go on distinct threads.
 */
#ifndef TW_GEN_H
#define TW_GEN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Bounds on the options, so a typo cannot ask for unbounded memory or time. */
#define TW_GEN_MAX_INSTITUTIONS 200000u
#define TW_GEN_MAX_DAYS 3660u

/* Healthy caps (13-department opinion, Dec 2022; 2021 six-department notice): one payment at
 * most 5,000 yuan, 60 class hours and 3 months of service. Problem `over_cap` breaks them. */
#define TW_GEN_CAP_AMOUNT_FEN 500000
#define TW_GEN_CAP_CLASS_HOURS 60
#define TW_GEN_CAP_SERVICE_DAYS 90

typedef enum tw_gen_format { TW_GEN_JSONL = 0, TW_GEN_MSGPACK = 1 } tw_gen_format_t;

/* Event types, in the order the summary reports them. */
typedef enum tw_gen_type {
  TW_GEN_PAYMENT = 0,
  TW_GEN_REFUND,
  TW_GEN_CONSUMPTION,
  TW_GEN_ENROLLMENT,
  TW_GEN_COMPLAINT,
  TW_GEN_INSTITUTION,
  TW_GEN_ESCROW,
  TW_GEN_STAFF,
  TW_GEN_TYPE_COUNT
} tw_gen_type_t;

/*
 * Injected scenarios. Each scenario institution behaves as a healthy one until its problem day,
 * then shows its scenario (docs/gen.md has the details and the rule family each one belongs to):
 *   OVER_CAP              sells packages over a cap (8,800 yuan, or 96 class hours, or 180 days);
 *   UNSUPERVISED          takes payments with channel "unsupervised" (no escrow deposit);
 *   COMPLAINT_STORM       6-9 complaints within 5 days naming run-away, closure, unpaid refunds or
 *                         wages, and a wage arrears event;
 *   CLOSURE_WITH_BALANCE  a collection surge for a few days, then an `institution` close (or
 *                         suspend) event while prepaid fees remain; nothing after but complaints;
 *   SPLIT_ORDERS          students pay several orders within days, each within the caps, together
 *                         over them;
 *   TRAINING_LOAN         sales financed through training loans or instalment plans;
 *   RELEASE_AHEAD         weekly escrow releases of twice the lessons delivered;
 *   ESCROW_DRAIN          withdrawals of about half the supervised balance within a few days;
 *   COLLECTION_SURGE      current students buy again for a week, lessons stay as they were;
 *   DEEP_DISCOUNT         half the sales at 35-45% of the listed price;
 *   CLASSES_STOP          lessons stop (no event at all) while prepaid fees remain;
 *   TIMEOUT_CONFIRM       most lessons confirmed by timeout instead of by the parent;
 *   REFUND_BACKLOG        many refund requests, none paid;
 *   STAFF_EXODUS          half the teachers leave within three weeks;
 *   UNCHECKED_TEACHER     a teacher whose background check failed gives lessons;
 *   BRANCH_CLOSURES       two or three branches close within three weeks;
 *   RUNAWAY               the documented run-away timeline, a phase a week: a discount surge,
 *                         lessons thin out, wage arrears and teachers leave, refunds pile up
 *                         unpaid, a complaint storm, then the doors close (the collapse);
 *   SEASONAL_SURGE        healthy look-alike: many new students in a few days at full price, who
 *                         then take their lessons;
 *   PLANNED_CLOSURE       healthy look-alike: a public closure notice, every unused fee refunded
 *                         within days, lessons until the end, then a close with nothing owed.
 * The first four keep their values (and names) of the first generator.
 */
typedef enum tw_gen_problem {
  TW_GEN_OVER_CAP = 0,
  TW_GEN_UNSUPERVISED,
  TW_GEN_COMPLAINT_STORM,
  TW_GEN_CLOSURE_WITH_BALANCE,
  TW_GEN_SPLIT_ORDERS,
  TW_GEN_TRAINING_LOAN,
  TW_GEN_RELEASE_AHEAD,
  TW_GEN_ESCROW_DRAIN,
  TW_GEN_COLLECTION_SURGE,
  TW_GEN_DEEP_DISCOUNT,
  TW_GEN_CLASSES_STOP,
  TW_GEN_TIMEOUT_CONFIRM,
  TW_GEN_REFUND_BACKLOG,
  TW_GEN_STAFF_EXODUS,
  TW_GEN_UNCHECKED_TEACHER,
  TW_GEN_BRANCH_CLOSURES,
  TW_GEN_RUNAWAY,
  TW_GEN_SEASONAL_SURGE,
  TW_GEN_PLANNED_CLOSURE,
  TW_GEN_PROBLEM_COUNT
} tw_gen_problem_t;

typedef struct tw_gen_opts {
  uint32_t institutions; /* 1..TW_GEN_MAX_INSTITUTIONS */
  uint32_t days;         /* 1..TW_GEN_MAX_DAYS */
  uint64_t seed;         /* any value; same seed, same output */
  int64_t start_day;     /* first local (+08:00) day, in days since 1970-01-01 */
  tw_gen_format_t format;
} tw_gen_opts_t;

typedef struct tw_gen_stats {
  uint64_t events;                         /* all events written */
  uint64_t by_type[TW_GEN_TYPE_COUNT];     /* events written per tw_gen_type_t */
  uint32_t problems[TW_GEN_PROBLEM_COUNT]; /* scenario institutions injected per kind */
} tw_gen_stats_t;

/* A real GB/T 2260 county-level division used by the generator. */
typedef struct tw_gen_region {
  char code[7];     /* 6 digits, NUL-terminated */
  const char *name; /* UTF-8, static */
} tw_gen_region_t;

/*
 * tw_gen_opts_default: fill *opts with the command's defaults: 100 institutions, 30 days,
 * seed 1, start 2025-03-01, JSON Lines.
 */
void tw_gen_opts_default(tw_gen_opts_t *opts);

/*
 * tw_gen_run: generate the stream described by *opts.
 *   out    (in) where events go: JSON Lines (one object and '\n' per event) or a sequence of
 *          msgpack maps with the same keys and values (ts as the same string). Not closed.
 *   truth  (in, may be NULL) gets one JSON line per scenario institution, in institution order:
 *          {"institution_id":..,"region":..,"scenario":"over_cap","family":"collection_caps",
 *          "onset":..,"collapse":..} where onset is the event time (RFC 3339, +08:00) of the first
 *          event showing the scenario (the local midnight of the problem day for CLASSES_STOP,
 *          whose sign is an absence) and collapse the close event of CLOSURE_WITH_BALANCE and
 *          RUNAWAY (null for the others, and when it would fall after the period). Healthy
 *          look-alikes have family "healthy". A scenario whose onset would fall after the period
 *          is not listed.
 *   stats  (out, may be NULL) counts of what was written; zeroed first.
 * Returns 0; TW_EINVAL when an option is out of range (nothing written); TW_ENOMEM when memory
 * runs out (the state, about 1.5 KB per institution, is allocated before anything is written; a
 * day buffer that cannot grow later leaves the output incomplete); TW_EIO when writing failed
 * (output incomplete).
 * The caller flushes and closes out and truth.
 */
int tw_gen_run(const tw_gen_opts_t *opts, FILE *out, FILE *truth, tw_gen_stats_t *stats);

/*
 * tw_gen_parse_date: parse a calendar date "YYYY-MM-DD" (exactly that shape, a real date, years
 * 1970..9999) into days since 1970-01-01. Returns 0, or TW_EINVAL leaving *day_out untouched.
 */
int tw_gen_parse_date(const char *text, int64_t *day_out);

/* tw_gen_type_name: "payment", "refund", ... for a tw_gen_type_t; "?" when out of range. Static. */
const char *tw_gen_type_name(int type);

/* tw_gen_problem_name: the scenario's name in the truth file ("over_cap", "unsupervised",
 * "complaint_storm", "closure_with_balance", "split_orders", ...); "?" when out of range. Static.
 */
const char *tw_gen_problem_name(int problem);

/* tw_gen_problem_family: the rule family a scenario belongs to, as the rule pack labels its
 * rules (`family`): "collection_caps", "supervised_account", "collection_behaviour", "delivery",
 * "refunds", "complaints_staff", "closures", "runaway", or "healthy" for the look-alikes; "?"
 * when out of range. Static. */
const char *tw_gen_problem_family(int problem);

/* tw_gen_region_count / tw_gen_region_at: the static table of regions the generator draws from
 * (real county-level codes in 11 31 32 33 35 42 44 51 61). tw_gen_region_at returns NULL when
 * index >= count. */
size_t tw_gen_region_count(void);
const tw_gen_region_t *tw_gen_region_at(size_t index);

#endif
