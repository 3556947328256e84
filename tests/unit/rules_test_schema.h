/*
 * rules_test_schema.h: a hand-built event schema and event helpers for the rule-language tests
 * (test_expr.c, test_rules_load.c, fuzz_rules.c), so they do not depend on the schema loader.
 *
 * Slots 0..4 are the envelope; the rest follow design.md's event types. present_mask is set
 * per type as the shipped schema would, so "field not carried by this type" errors are testable.
 */
#ifndef RULES_TEST_SCHEMA_H
#define RULES_TEST_SCHEMA_H

#include <stdint.h>
#include <string.h>

#include "tw_event.h"
#include "tw_schema.h"

enum {
  TS_STUDENT_ID = 5,
  TS_COURSE_ID,
  TS_AMOUNT_FEN,
  TS_CLASS_HOURS,
  TS_SERVICE_DAYS,
  TS_CHANNEL,
  TS_LIST_PRICE_FEN,
  TS_REQUEST_ID,
  TS_STATUS,
  TS_ACTION,
  TS_COMPLAINT_ID,
  TS_CATEGORY,
  TS_TEXT,
  TS_STAFF_ID,
  TS_N_FIELDS
};

enum {
  TT_PAYMENT = 0,
  TT_REFUND,
  TT_CONSUMPTION,
  TT_ENROLLMENT,
  TT_COMPLAINT,
  TT_INSTITUTION,
  TT_ESCROW,
  TT_STAFF,
  TT_N_TYPES
};

static inline void ts_field(tw_schema_t *s, int slot, const char *name, tw_field_kind_t kind) {
  strncpy(s->fields[slot].name, name, TW_NAME_MAX - 1);
  s->fields[slot].kind = kind;
}

static inline void ts_type(tw_schema_t *s, int id, const char *name, const int *slots) {
  strncpy(s->types[id].name, name, TW_NAME_MAX - 1);
  s->types[id].present_mask = 0x1f; /* envelope */
  s->types[id].required_mask = 0x1f;
  for (; *slots >= 0; slots++) s->types[id].present_mask |= (uint64_t)1 << *slots;
}

static inline void ts_build(tw_schema_t *s) {
  memset(s, 0, sizeof *s);
  ts_field(s, TW_SLOT_EVENT_ID, "event_id", TW_FK_STRING);
  ts_field(s, TW_SLOT_TYPE, "type", TW_FK_STRING);
  ts_field(s, TW_SLOT_TS, "ts", TW_FK_TIME);
  ts_field(s, TW_SLOT_INSTITUTION_ID, "institution_id", TW_FK_CREDIT_CODE);
  ts_field(s, TW_SLOT_REGION, "region", TW_FK_REGION);
  ts_field(s, TS_STUDENT_ID, "student_id", TW_FK_PSEUDONYM);
  ts_field(s, TS_COURSE_ID, "course_id", TW_FK_STRING);
  ts_field(s, TS_AMOUNT_FEN, "amount_fen", TW_FK_FEN);
  ts_field(s, TS_CLASS_HOURS, "class_hours", TW_FK_INT);
  ts_field(s, TS_SERVICE_DAYS, "service_days", TW_FK_INT);
  ts_field(s, TS_CHANNEL, "channel", TW_FK_ENUM);
  ts_field(s, TS_LIST_PRICE_FEN, "list_price_fen", TW_FK_FEN);
  ts_field(s, TS_REQUEST_ID, "request_id", TW_FK_STRING);
  ts_field(s, TS_STATUS, "status", TW_FK_ENUM);
  ts_field(s, TS_ACTION, "action", TW_FK_ENUM);
  ts_field(s, TS_COMPLAINT_ID, "complaint_id", TW_FK_STRING);
  ts_field(s, TS_CATEGORY, "category", TW_FK_STRING);
  ts_field(s, TS_TEXT, "text", TW_FK_TEXT);
  ts_field(s, TS_STAFF_ID, "staff_id", TW_FK_STRING);
  s->n_fields = TS_N_FIELDS;
  static const int payment[] = {TS_STUDENT_ID,   TS_COURSE_ID, TS_AMOUNT_FEN,     TS_CLASS_HOURS,
                                TS_SERVICE_DAYS, TS_CHANNEL,   TS_LIST_PRICE_FEN, -1};
  static const int refund[] = {TS_REQUEST_ID, TS_STUDENT_ID, TS_AMOUNT_FEN, TS_STATUS, -1};
  static const int consumption[] = {TS_STUDENT_ID, TS_COURSE_ID, TS_AMOUNT_FEN, TS_CLASS_HOURS, -1};
  static const int enrollment[] = {TS_STUDENT_ID, TS_COURSE_ID, TS_ACTION, -1};
  static const int complaint[] = {TS_COMPLAINT_ID, TS_CATEGORY, TS_TEXT, -1};
  static const int institution[] = {TS_ACTION, -1};
  static const int escrow[] = {TS_ACTION, TS_AMOUNT_FEN, -1};
  static const int staff[] = {TS_STAFF_ID, TS_ACTION, -1};
  ts_type(s, TT_PAYMENT, "payment", payment);
  ts_type(s, TT_REFUND, "refund", refund);
  ts_type(s, TT_CONSUMPTION, "consumption", consumption);
  ts_type(s, TT_ENROLLMENT, "enrollment", enrollment);
  ts_type(s, TT_COMPLAINT, "complaint", complaint);
  ts_type(s, TT_INSTITUTION, "institution", institution);
  ts_type(s, TT_ESCROW, "escrow", escrow);
  ts_type(s, TT_STAFF, "staff", staff);
  s->n_types = TT_N_TYPES;
}

/* Copy a string into the event's arena and set the slot. */
static inline void ts_set_str(tw_event_t *ev, int slot, const char *s) {
  size_t len = strlen(s);
  char *p = ev->arena + ev->arena_used;
  memcpy(p, s, len + 1);
  ev->arena_used += len + 1;
  ev->f[slot] = tw_value_str(p, (uint32_t)len);
  ev->present |= (uint64_t)1 << slot;
}

static inline void ts_set_int(tw_event_t *ev, int slot, tw_vkind_t kind, int64_t v) {
  ev->f[slot] = tw_value_int(kind, v);
  ev->present |= (uint64_t)1 << slot;
}

/* 2025-03-01T10:00:00+08:00 */
#define TS_T0_MS INT64_C(1740794400000)

static inline void ts_envelope(tw_event_t *ev, int type, const char *id) {
  ev->type = (uint16_t)type;
  ev->ts_ms = TS_T0_MS;
  ev->present = 0;
  ev->arena_used = 0;
  ts_set_str(ev, TW_SLOT_EVENT_ID, id);
  ts_set_str(ev, TW_SLOT_TYPE, type == TT_PAYMENT ? "payment" : "complaint");
  ts_set_int(ev, TW_SLOT_TS, TW_V_TIME, TS_T0_MS);
  ts_set_str(ev, TW_SLOT_INSTITUTION_ID, "52440106MJL17630G");
  ts_set_str(ev, TW_SLOT_REGION, "440106");
}

#endif
