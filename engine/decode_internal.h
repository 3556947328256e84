/*
 * decode_internal.h: the validation layer shared by the JSON and msgpack decoders.
 *
 * Each decoder turns its input into raw values (tw__raw_t: what the wire said, before any
 * schema rule) and hands each top-level key to tw__raw_put, which resolves the key to a slot
 * and keeps the value; unknown keys are dropped. tw__event_validate then applies the schema
 * once, in slot order, for both formats: type, required fields, kinds, bounds, enum values,
 * codes, times, lengths and UTF-8, and copies the strings into the event's arena. So the two
 * formats accept and reject the same events with the same reasons.
 *
 * Raw strings are borrowed from the decoder's parse (jansson's tree, the msgpack input bytes)
 * and must stay valid until tw__event_validate returns. Nothing here allocates.
 */
#ifndef TW_DECODE_INTERNAL_H
#define TW_DECODE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tw_event.h"
#include "tw_schema.h"

typedef enum tw__raw_kind {
  TW__RAW_NULL = 0,  /* JSON null / msgpack nil: treated as absent */
  TW__RAW_BOOL,      /* u.i 0 or 1 */
  TW__RAW_INT,       /* u.i */
  TW__RAW_INT_BIG,   /* an integer beyond int64 (msgpack uint64 above INT64_MAX) */
  TW__RAW_FLOAT,     /* u.d: a number written with a fraction or exponent */
  TW__RAW_STR,       /* u.s, len bytes; utf8_checked when the parser already validated it */
  TW__RAW_TIMESTAMP, /* msgpack timestamp extension: u.ts */
  TW__RAW_NESTED,    /* an object/array/map */
  TW__RAW_OTHER      /* binary, other extension types */
} tw__raw_kind_t;

typedef struct tw__raw {
  uint8_t kind;
  uint8_t utf8_checked;
  uint32_t len;
  union {
    int64_t i;
    double d;
    const char *s;
    struct {
      int64_t sec;
      uint32_t nsec;
    } ts;
  } u;
} tw__raw_t;

typedef struct tw__raw_event {
  uint64_t seen; /* slots that have a raw value */
  tw__raw_t v[TW_MAX_FIELDS];
} tw__raw_event_t;

/* Fills err (any argument may be "" for none) and returns code. */
int tw__decode_fail(tw_decode_error_t *err, int code, const char *reason, const char *field,
                    const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

/* Starts a raw event. */
static inline void tw__raw_begin(tw__raw_event_t *raw) {
  raw->seen = 0;
}

/*
 * tw__raw_put: keep the value of top-level key[0..key_len). Unknown keys are ignored (returns
 * 0). A key seen twice gives duplicate_key (TW_EPARSE).
 */
int tw__raw_put(const tw_schema_t *schema, tw__raw_event_t *raw, const char *key, size_t key_len,
                const tw__raw_t *val, tw_decode_error_t *err);

/*
 * tw__event_validate: check raw against the schema and fill *out (type, ts_ms, present, f[],
 * strings copied NUL-terminated into out's arena). Returns 0 or TW_ESCHEMA / TW_EPARSE /
 * TW_ETOOBIG with err filled; on error out->present is 0.
 */
int tw__event_validate(const tw_schema_t *schema, const tw__raw_event_t *raw, tw_event_t *out,
                       tw_decode_error_t *err);

#endif
