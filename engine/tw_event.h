/*
 * tw_event.h: one decoded, validated event, and the decoders that produce it.
 *
 * An event is a type id, its event time, and one tw_value_t per schema slot, with a presence
 * mask. Strings live in the event's own arena (allocated once by tw_event_init, reused by every
 * decode), so decoding does no allocation per event. Values read from an event are valid until
 * the next decode into it or tw_event_fini.
 *
 * Bounds (a hostile input costs bounded time and memory):
 *   TW_EVENT_MAX_BYTES   one encoded event (JSON line or msgpack object) at most 64 KiB;
 *   TW_EVENT_MAX_KEYS    at most 64 top-level keys;
 *   TW_EVENT_MAX_DEPTH   nesting depth 8 (events are flat; deeper input is rejected early).
 */
#ifndef TW_EVENT_H
#define TW_EVENT_H

#include <stddef.h>
#include <stdint.h>

#include "tw_schema.h"
#include "tw_value.h"

#define TW_EVENT_MAX_BYTES (64u * 1024u)
#define TW_EVENT_MAX_KEYS 64
#define TW_EVENT_MAX_DEPTH 8
#define TW_EVENT_ID_MAX 64 /* bytes */

typedef struct tw_event {
  uint16_t type;    /* schema type id */
  int64_t ts_ms;    /* event time, epoch ms UTC (also f[TW_SLOT_TS] as TW_V_TIME) */
  uint64_t present; /* bit s set when f[s] holds a value */
  tw_value_t f[TW_MAX_FIELDS];
  char *arena; /* owned; strings of f[] point here */
  size_t arena_used, arena_cap;
} tw_event_t;

/* Why an event was rejected: a stable reason code for the dead-letter file, the field (if any)
 * and a plain message. Reason codes: invalid_json, invalid_msgpack, not_an_object, too_deep,
 * too_long, too_many_keys, unknown_type, reserved_type, missing_field, wrong_type, not_integer, out_of_range,
 * bad_enum, bad_credit_code, bad_region, bad_timestamp, invalid_utf8, duplicate_key. */
typedef struct tw_decode_error {
  char reason[32];
  char field[TW_NAME_MAX];
  char message[256];
} tw_decode_error_t;

/* tw_event_init: allocate the arena (TW_EVENT_MAX_BYTES + slack). Returns 0 or TW_ENOMEM. */
int tw_event_init(tw_event_t *ev);

/* tw_event_fini: free the arena; safe on a zeroed or already finished event. */
void tw_event_fini(tw_event_t *ev);

/* tw_event_get: the value in a slot, or a TW_V_NULL value when absent. */
static inline tw_value_t tw_event_get(const tw_event_t *ev, int slot) {
  if (slot < 0 || slot >= TW_MAX_FIELDS || !(ev->present & ((uint64_t)1 << slot))) {
    tw_value_t v;
    v.kind = TW_V_NULL;
    v.u.i = 0;
    return v;
  }
  return ev->f[slot];
}

/*
 * tw_decode_json: decode one JSON object (one line of JSON Lines, without the newline) with
 * jansson and validate it against the schema into *out (which must be tw_event_init-ed).
 * Numbers for INT/FEN fields must be JSON integers (1e6, 5.0E5 and "500000" are rejected with
 * not_integer/wrong_type; values beyond int64 with out_of_range) and money is never negative.
 * Strings must be valid UTF-8 (invalid_utf8) within the field's max_len_bytes (too_long).
 * Unknown keys are ignored. Returns 0, or TW_ESCHEMA / TW_EPARSE / TW_ETOOBIG with *err filled.
 * Pseudonym fields are stored as given; the pipeline pseudonymises them (tw_pseudo_apply)
 * before anything stores them. Thread-safe for distinct events.
 */
int tw_decode_json(const tw_schema_t *schema, const char *data, size_t len, tw_event_t *out,
                   tw_decode_error_t *err);

/*
 * tw_msgpack_frame: find the extent of the first msgpack object in buf without trusting declared
 * lengths or counts (each declared element needs at least one byte of input; depth ≤
 * TW_EVENT_MAX_DEPTH; object ≤ TW_EVENT_MAX_BYTES). Allocates nothing.
 * Returns 0 with *obj_len set when a whole object is in buf; TW_EAGAIN when buf ends inside the
 * object and it could still be valid (read more); TW_EPARSE (malformed: reserved byte 0xc1) or
 * TW_ETOOBIG (too deep or too large) with *err filled.
 */
int tw_msgpack_frame(const char *buf, size_t len, size_t *obj_len, tw_decode_error_t *err);

/*
 * tw_msgpack_extent: the extent of the first msgpack object in buf at any depth, up to max_bytes,
 * so a source can step over an object the decoder will reject (too deep, too large) and go on.
 * One counter of pending elements replaces a stack; declared counts and lengths are checked
 * against max_bytes; nothing is allocated. Returns 0 with *obj_len set; TW_EAGAIN when buf ends
 * inside the object; TW_ETOOBIG when the object would exceed max_bytes; TW_EPARSE (byte 0xc1);
 * err is filled on TW_ETOOBIG and TW_EPARSE.
 */
int tw_msgpack_extent(const char *buf, size_t len, size_t max_bytes, size_t *obj_len,
                      tw_decode_error_t *err);

/*
 * tw_decode_msgpack: decode one msgpack map (exactly data[0..len), as framed by
 * tw_msgpack_frame) with msgpack-c and validate it like tw_decode_json. Keys are strings;
 * `ts` may also be the msgpack timestamp extension (-1). Returns as tw_decode_json.
 */
int tw_decode_msgpack(const tw_schema_t *schema, const char *data, size_t len, tw_event_t *out,
                      tw_decode_error_t *err);

/*
 * tw_parse_rfc3339: parse "2025-03-01T10:00:00+08:00" (fraction up to 9 digits, offset Z or
 * ±hh:mm required) into epoch ms (fraction truncated to ms). Returns 0 or TW_EINVAL.
 */
int tw_parse_rfc3339(const char *s, size_t len, int64_t *out_ms);

/*
 * tw_duration_unit_ms: milliseconds in one duration unit, "ms", "s", "m", "h" or "d" (n bytes,
 * not NUL-terminated); 0 for anything else.
 */
int64_t tw_duration_unit_ms(const char *u, size_t n);

/*
 * tw_duration_parse: a duration as rules and options write it: decimal digits, then one unit
 * ("500ms", "90s", "15m", "12h", "7d"), len bytes (not NUL-terminated), into *out_ms
 * (milliseconds). No sign, no spaces, no bare number. Returns 0, TW_EINVAL (not that form) or
 * TW_EOVERFLOW (over 2^63 − 1 ms); callers bound it further (rules: 2^61 ms).
 */
int tw_duration_parse(const char *s, size_t len, int64_t *out_ms);

/*
 * tw_format_rfc3339: write epoch ms as "2025-03-01T10:00:00.000+08:00" at the given UTC offset
 * in minutes (480 for Asia/Shanghai). buf must hold at least 32 bytes. Returns the length.
 */
int tw_format_rfc3339(int64_t ms, int offset_min, char *buf, size_t cap);

/*
 * tw_days_from_civil / tw_civil_from_days: proleptic Gregorian date <-> days since 1970-01-01
 * (Howard Hinnant's algorithms), for years within ±2^40. m is 1..12, d 1..31; no validation.
 */
int64_t tw_days_from_civil(int64_t y, unsigned m, unsigned d);
void tw_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d);

/*
 * tw_utf8_valid: 1 if data[0..len) is well-formed UTF-8 (no overlongs, surrogates or code
 * points above U+10FFFF), else 0. Validate once at decode; regex matching then skips the check.
 */
int tw_utf8_valid(const char *data, size_t len);

#endif
