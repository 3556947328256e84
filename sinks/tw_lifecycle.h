/*
 * tw_lifecycle.h: what happens to an alert after it is raised: its state, assignee and comments,
 * snoozes, escalation of alerts nobody acknowledged, and a hash-chained audit log of all of it.
 *
 *   open → acknowledged → in_progress → resolved | dismissed
 *
 *   ack      open → acknowledged
 *   assign   open | acknowledged | in_progress → in_progress, with an assignee
 *   resolve  acknowledged | in_progress → resolved
 *   dismiss  open | acknowledged | in_progress → dismissed (a reason is required)
 *   comment  any state
 *
 * The "lifecycle" sink records every alert it is handed (once per alert_id) as open, with the
 * wall-clock time it was seen. An open alert whose severity has a deadline (configurable,
 * default critical 24 h, high 72 h) and that nobody acknowledged (or assigned, resolved,
 * dismissed) by then escalates: a new alert of rule "escalation", same severity, to the region
 * one level up (county 440106 → city 440100 → province 440000; a province-level alert does not
 * escalate), handed to every sink like any alert (feeds and files), and itself open. Its
 * alert_id is derived from the original's, so repeating an escalation after a crash repeats no
 * alert.
 *
 * A snooze silences one rule for one institution until a wall-clock time, with a reason: alerts
 * it covers are still in the engine's journal and recorded here (snoozed, never escalated), but
 * the feeds do not push them (tw_lifecycle_snoozed). It expires by itself.
 *
 * Every new alert, every state change, comment, snooze and escalation appends one audit record:
 *   {"seq":N,"at":MS,"kind":K,"actor":A,"alert_id":…,"detail":{…},"prev":"<64 hex>","hash":"<64
 * hex>"} where hash = BLAKE2b-256 of the record's bytes before `,"hash":` and prev is the previous
 * record's hash (64 zeros for the first). tw_lifecycle_verify recomputes the chain.
 *
 * Storage: an LMDB environment of its own in STATE/lifecycle (databases "alerts", "deadlines",
 * "snoozes", "audit"), so the engine's state is untouched. Commands come over the control
 * endpoint (ROUTER; `tutorwatch alerts`), served by a thread that also runs escalation once a
 * second. With keys, a regulator may act on alerts of its region (and snooze institutions
 * registered there, by the region in the credit code), an operator on everything; institutions
 * are not admitted. Requests are one JSON frame (≤ 8 KiB); see docs/feeds.md for them.
 */
#ifndef TW_LIFECYCLE_H
#define TW_LIFECYCLE_H

#include <stdbool.h>
#include <stdint.h>

#include "tw_auth.h"
#include "tw_pipeline.h"
#include "tw_sink.h"

#define TW_LC_COMMENTS_MAX 100  /* comments kept per alert (later ones are refused) */
#define TW_LC_TEXT_MAX 1000     /* bytes of a comment, reason or assignee */
#define TW_LC_SNOOZES_MAX 10000 /* snoozes in force at once */
#define TW_LC_LIST_MAX 1000     /* alerts in one list reply */
#define TW_LC_REQUEST_MAX 8192  /* bytes of a control request */

typedef struct tw_lifecycle_opts {
  const char *state_dir;        /* required: STATE/lifecycle */
  const char *control_endpoint; /* ROUTER bind, or NULL (escalation still runs) */
  const tw_auth_t *auth;        /* NULL: no authentication; borrowed */
  int64_t deadline_ms[5];       /* per severity (tw_severity_t order: info..critical); 0 none */
  tw_outputs_t *outputs;        /* where escalation alerts go (every sink, this one too) */
  bool no_sync;
} tw_lifecycle_opts_t;

/* The defaults: critical 24 h, high 72 h, others none. */
void tw_lifecycle_default_deadlines(int64_t deadline_ms[5]);

/*
 * tw_lifecycle_parse_deadlines: "critical=24h,high=72h,medium=0s" (durations ms s m h d; 0: no
 * escalation) over deadline_ms. Returns 0 or TW_EINVAL.
 */
int tw_lifecycle_parse_deadlines(const char *spec, int64_t deadline_ms[5]);

/*
 * tw_lifecycle_open: open (creating) STATE/lifecycle, bind the control endpoint, start the
 * thread. Attach the sink to the outputs before the feeds sink is given tw_lifecycle_snoozed.
 * Errors: TW_ESTATE, TW_EZMQ, TW_EINVAL, TW_ENOMEM, with a message in errbuf. The vtable's open
 * is not usable (it returns TW_EINVAL). close (the outputs close it) stops the thread first.
 */
int tw_lifecycle_open(const tw_lifecycle_opts_t *opts, tw_sink_t **out, char *errbuf,
                      size_t errcap);

/*
 * tw_lifecycle_stop: stop the control thread (no more commands or escalations), so the other
 * sinks it writes escalations to can be closed. Call before closing the outputs; idempotent;
 * no effect on NULL or another kind of sink. The sink still records alerts until closed.
 */
void tw_lifecycle_stop(tw_sink_t *sink);

/*
 * tw_lifecycle_snoozed: whether a snooze in force now covers alert (its rule and institution).
 * A tw_feeds_opts_t.suppress callback: ud is the lifecycle sink. Any thread.
 */
bool tw_lifecycle_snoozed(void *ud, const tw_alert_t *alert);

/*
 * tw_lifecycle_verify: check the audit chain of STATE/lifecycle (opened read-only). Returns 0 and
 * *records when every record's hash and link hold (msg: "N audit records, chain intact");
 * TW_ESTATE with *first_bad (its sequence number), *records (how many before it held) and the
 * reason in msg at the first broken record; TW_ENOENT when there is no lifecycle store; another
 * TW_ESTATE (with *first_bad 0) when the store cannot be read. A removed last record is not
 * detectable by the chain alone.
 */
int tw_lifecycle_verify(const char *state_dir, uint64_t *records, uint64_t *first_bad, char *msg,
                        size_t cap);

#endif
