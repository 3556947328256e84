/*
 * tw_feeds.h: the "feeds" sink: the regulator feed, the institution self-check feed and the
 * history service, behind one tw_sink_t.
 *
 * Every alert handed to the sink is appended, at the sink's flush (which the pipeline calls
 * after each group commit), to the feed history: its own LMDB environment in STATE/feeds, where
 * it gets the next feed sequence number (1, 2, ...). The feed sequence is one order over the
 * whole engine, also with --shards (each shard's journal has its own numbering; the feeds
 * number alerts in the order the shards hand them over). An alert handed over again after a
 * restart (republished from a journal) is recognised by its alert_id and neither stored nor
 * published twice.
 *
 * A thread owns the ZeroMQ sockets. After each append it publishes the new alerts, read back
 * from the history, so whatever a subscriber receives live with sequence S is already in the
 * history with every alert before S:
 *
 *   regulator feed (XPUB): [topic "<region>/<severity>/<rule>", payload (regulator view)]
 *   self-check feed (XPUB): [topic = credit code, payload (self-check view)], only alerts keyed
 *                           by institution_id
 *   history (ROUTER): request one JSON frame {"prefix":P,"since":S[,"max":N][,"view":V]};
 *     reply frames: {"ok":true,"next":T,"more":B,"last":L} then one payload per alert with
 *     S < seq ≤ T whose topic starts with P (view "feed", the default except for institutions)
 *     or whose credit code starts with P (view "self-check"), at most N (≤ 1000, default 500)
 *     alerts and 20,000 scanned records per request; ask again with since=T while more.
 *     On refusal: {"ok":false,"error":"..."}.
 *
 * Payloads are tw_feed_payload's (msgpack or JSON, with "seq"). Both feeds run XPUB in manual
 * subscription mode: each subscription is checked with tw_auth_scope_allows against the
 * subscriber's key (with auth) and refused and logged when outside its scope; without auth
 * every subscription is accepted. History requests are checked the same way.
 *
 * Delivery never blocks the engine: each subscriber may have up to 100,000 messages queued
 * (opts.sndhwm);
 * past that an alert is dropped for the subscribers of its topic and counted
 * (tw_feeds_stats.dropped), and stays in the history. Work per loop turn is bounded (10,000
 * alerts published, one history page), so subscriptions and requests are served in between.
 */
#ifndef TW_FEEDS_H
#define TW_FEEDS_H

#include <stdbool.h>
#include <stdint.h>

#include "tw_auth.h"
#include "tw_feed_codec.h"
#include "tw_sink.h"

typedef struct tw_feeds_opts {
  const char *state_dir;           /* required: the history lives in state_dir/feeds */
  const char *feed_endpoint;       /* regulator feed (XPUB bind), or NULL */
  const char *self_check_endpoint; /* self-check feed (XPUB bind), or NULL */
  const char *history_endpoint;    /* history (ROUTER bind), or NULL */
  tw_feed_format_t format;         /* payload encoding of feeds and history */
  const tw_auth_t *auth;           /* NULL: no authentication (bind loopback only);
                                      borrowed, must outlive the sink */
  bool no_sync;                    /* no fsync of the history store */
  /* NULL, or: true for an alert the feeds must not push (a snooze; tw_lifecycle_snoozed). Such
   * an alert is neither stored in the history nor published. Called under the outputs' lock. */
  bool (*suppress)(void *ud, const tw_alert_t *alert);
  void *suppress_ud;
  int sndhwm; /* messages queued per subscriber before drops; 0: 100,000 */
} tw_feeds_opts_t;

typedef struct tw_feeds_stats {
  uint64_t published;    /* alerts appended to the history (feed sequence of the last) */
  uint64_t dropped;      /* live messages dropped for a subscriber at its high-water mark */
  uint64_t refused;      /* subscriptions and history requests refused (outside the scope) */
  uint64_t store_errors; /* appends that failed (the alert is still in the engine's journal) */
  uint64_t unencodable;  /* alerts (live or from history) whose JSON the feed format could not
                            carry; each is logged on stderr and stays in the history */
} tw_feeds_stats_t;

/*
 * tw_feeds_open: open (creating) the history store, bind the endpoints given, and start the
 * thread. On failure returns TW_ESTATE (history store), TW_EZMQ (an endpoint: errno holds the
 * ZeroMQ error), TW_EINVAL (no state_dir), TW_ENOMEM, with a message in errbuf. On success *out
 * is owned by the caller: attach it to the outputs (which close it) or call its vt->close.
 * The vtable's open is not usable (it needs these options) and returns TW_EINVAL.
 */
int tw_feeds_open(const tw_feeds_opts_t *opts, tw_sink_t **out, char *errbuf, size_t errcap);

/* tw_feeds_stats: counters so far (any thread). Zero for NULL or another kind of sink. */
void tw_feeds_stats(tw_sink_t *sink, tw_feeds_stats_t *out);

#endif
