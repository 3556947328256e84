/*
 * tw_alert.h: the alert record and its canonical JSON form.
 *
 * An alert is produced when a rule's condition holds for an event and the rule's cooldown for
 * the key allows it. Its id is deterministic: the first 16 bytes (32 hex) of BLAKE2b over
 * rule name, key and the triggering event's event_id and event time, so the same input and
 * rules give the same ids whatever the batch size or run. The JSON form has a fixed key order:
 *
 *   {"alert_id":"…","rule":"prepaid_over_cap","severity":"high","by":"institution_id",
 *    "key":"…","institution_id":"…","region":"440106","event_time":"2025-03-01T10:00:00.000+08:00",
 *    "message":"…","values":{"amount_fen":600000},"event_ids":["p-1"],"source":"…"}
 *
 * Strings are JSON-escaped; nothing in an alert is a raw student identifier (pseudonymised at
 * ingest).
 */
#ifndef TW_ALERT_H
#define TW_ALERT_H

#include <stddef.h>
#include <stdint.h>

#include "tw_rules.h"

#define TW_ALERT_ID_LEN 32
#define TW_ALERT_MESSAGE_MAX 1024
#define TW_ALERT_JSON_MAX 8192

typedef struct tw_alert {
  char alert_id[TW_ALERT_ID_LEN + 1];
  const tw_rule_t *rule;           /* name, severity, source; borrowed from the ruleset */
  const char *by;                  /* the rule's key field name */
  tw_str_t key;                    /* the key value (borrowed from the event) */
  tw_str_t institution_id, region; /* borrowed from the event */
  int64_t event_time_ms;
  char message[TW_ALERT_MESSAGE_MAX];
  const tw_eval_read_t *values; /* borrowed from the evaluation context */
  size_t n_values;
  tw_str_t event_id; /* the triggering event */
  uint64_t seq;      /* journal sequence number (0 until journaled) */
} tw_alert_t;

/*
 * tw_alert_make_id: fill a->alert_id from rule name, key, event id and event time.
 */
void tw_alert_make_id(tw_alert_t *a);

/*
 * tw_alert_to_json: write the canonical JSON (one line, no newline) into buf. Returns the length,
 * or TW_ETOOBIG when cap is too small (the message is bounded, so TW_ALERT_JSON_MAX suffices).
 */
int tw_alert_to_json(const tw_alert_t *a, char *buf, size_t cap);

#endif
