/*
 * decode_validate.c: one validation layer for both decoders (see decode_internal.h).
 *
 * Work per event is O(keys × fields) for key lookup (at most 64 × 64 first-byte compares) plus
 * O(bytes) for UTF-8 checks and string copies; nothing is allocated: strings go into the
 * event's arena, which tw_event_init sized for the largest event plus its NULs and pseudonyms.
 * Fields are validated in slot order, so the reported error does not depend on key order.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "decode_internal.h"
#include "tw_code.h"
#include "tw_error.h"

/* Epoch ms of 0000-01-01T00:00:00Z, and of 9999-12-31T23:59:59.999+08:00: what RFC 3339 can write,
 * in UTC and in Asia/Shanghai, where alerts show their times. */
#define TS_MIN_MS (-62167219200000LL)
#define TS_MAX_MS (253402300799999LL - 8LL * 3600 * 1000)

int tw__decode_fail(tw_decode_error_t *err, int code, const char *reason, const char *field,
                    const char *fmt, ...) {
  if (err == NULL) return code;
  snprintf(err->reason, sizeof err->reason, "%s", reason);
  snprintf(err->field, sizeof err->field, "%s", field ? field : "");
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
  return code;
}

static int lookup_slot(const tw_schema_t *schema, const char *key, size_t len) {
  if (len == 0 || len >= TW_NAME_MAX) return -1;
  for (uint32_t i = 0; i < schema->n_fields; i++) {
    const char *name = schema->fields[i].name;
    if (name[0] == key[0] && name[len] == '\0' && memcmp(name, key, len) == 0) return (int)i;
  }
  return -1;
}

int tw__raw_put(const tw_schema_t *schema, tw__raw_event_t *raw, const char *key, size_t key_len,
                const tw__raw_t *val, tw_decode_error_t *err) {
  int slot = lookup_slot(schema, key, key_len);
  if (slot < 0) return 0;
  uint64_t bit = (uint64_t)1 << slot;
  if (raw->seen & bit)
    return tw__decode_fail(err, TW_EPARSE, "duplicate_key", schema->fields[slot].name,
                           "field '%s' appears twice", schema->fields[slot].name);
  raw->seen |= bit;
  raw->v[slot] = *val;
  return 0;
}

static const char *raw_kind_words(const tw__raw_t *r) {
  switch (r->kind) {
    case TW__RAW_BOOL:
      return "a boolean";
    case TW__RAW_INT:
    case TW__RAW_INT_BIG:
      return "a number";
    case TW__RAW_FLOAT:
      return "a decimal number";
    case TW__RAW_STR:
      return "a string";
    case TW__RAW_TIMESTAMP:
      return "a timestamp";
    case TW__RAW_NESTED:
      return "an object or array";
    case TW__RAW_NULL:
      return "null";
    default:
      return "binary or extension data";
  }
}

/* Copies s[0..len) and a NUL into the arena; the value points at the copy. */
static int arena_str(tw_event_t *out, const char *s, uint32_t len, tw_value_t *v, const char *field,
                     tw_decode_error_t *err) {
  if (out->arena_cap - out->arena_used < (size_t)len + 1)
    return tw__decode_fail(err, TW_ETOOBIG, "too_long", field,
                           "field '%s' does not fit: the event's strings exceed its arena", field);
  char *dst = out->arena + out->arena_used;
  memcpy(dst, s, len);
  dst[len] = '\0';
  out->arena_used += (size_t)len + 1;
  *v = tw_value_str(dst, len);
  return 0;
}

static int check_string(const tw__raw_t *r, const tw_field_spec_t *spec, const char *field,
                        tw_decode_error_t *err) {
  if (r->kind != TW__RAW_STR)
    return tw__decode_fail(err, TW_ESCHEMA, "wrong_type", field,
                           "field '%s' must be a string, not %s", field, raw_kind_words(r));
  if (r->len > spec->max_len_bytes)
    return tw__decode_fail(err, TW_ESCHEMA, "too_long", field,
                           "field '%s' is %" PRIu32 " bytes long; at most %" PRIu32 " allowed",
                           field, r->len, spec->max_len_bytes);
  if (!r->utf8_checked && !tw_utf8_valid(r->u.s, r->len))
    return tw__decode_fail(err, TW_EPARSE, "invalid_utf8", field, "field '%s' is not valid UTF-8",
                           field);
  if (memchr(r->u.s, '\0', r->len) != NULL)
    return tw__decode_fail(err, TW_EPARSE, "invalid_utf8", field,
                           "field '%s' contains a NUL character", field);
  return 0;
}

static int check_integer(const tw__raw_t *r, const tw_field_spec_t *spec, tw_field_kind_t kind,
                         const char *field, tw_decode_error_t *err) {
  const char *what = kind == TW_FK_FEN ? "an amount in fen" : "a whole number";
  switch (r->kind) {
    case TW__RAW_INT:
      if (kind == TW_FK_FEN && r->u.i < 0)
        return tw__decode_fail(err, TW_ESCHEMA, "out_of_range", field,
                               "field '%s' is negative (%" PRId64 "); money is never negative",
                               field, r->u.i);
      if (r->u.i < spec->min || r->u.i > spec->max)
        return tw__decode_fail(err, TW_ESCHEMA, "out_of_range", field,
                               "field '%s' is %" PRId64 ", outside %" PRId64 "..%" PRId64, field,
                               r->u.i, spec->min, spec->max);
      return 0;
    case TW__RAW_INT_BIG:
      return tw__decode_fail(err, TW_ESCHEMA, "out_of_range", field,
                             "field '%s' is beyond the 64-bit integer range", field);
    case TW__RAW_FLOAT:
      return tw__decode_fail(err, TW_ESCHEMA, "not_integer", field,
                             "field '%s' is a decimal number (%.17g); it must be %s written as "
                             "an integer",
                             field, r->u.d, what);
    case TW__RAW_STR:
      return tw__decode_fail(err, TW_ESCHEMA, "wrong_type", field,
                             "field '%s' is a string; it must be %s written as a number", field,
                             what);
    default:
      return tw__decode_fail(err, TW_ESCHEMA, "wrong_type", field, "field '%s' must be %s, not %s",
                             field, what, raw_kind_words(r));
  }
}

static int check_time(const tw__raw_t *r, const char *field, int64_t *ms, tw_decode_error_t *err) {
  switch (r->kind) {
    case TW__RAW_STR:
      if (tw_parse_rfc3339(r->u.s, r->len, ms) == 0) return 0;
      return tw__decode_fail(err, TW_ESCHEMA, "bad_timestamp", field,
                             "field '%s' is not an RFC 3339 time with an offset (like "
                             "2025-03-01T10:00:00+08:00)",
                             field);
    case TW__RAW_INT:
      if (r->u.i >= TS_MIN_MS && r->u.i <= TS_MAX_MS) {
        *ms = r->u.i;
        return 0;
      }
      return tw__decode_fail(err, TW_ESCHEMA, "bad_timestamp", field,
                             "field '%s' epoch milliseconds %" PRId64
                             " are outside years "
                             "0000..9999",
                             field, r->u.i);
    case TW__RAW_TIMESTAMP:
      if (r->u.ts.nsec < 1000000000u && r->u.ts.sec >= TS_MIN_MS / 1000 &&
          r->u.ts.sec <= TS_MAX_MS / 1000) {
        *ms = r->u.ts.sec * 1000 + (int64_t)(r->u.ts.nsec / 1000000u);
        return 0;
      }
      return tw__decode_fail(err, TW_ESCHEMA, "bad_timestamp", field,
                             "field '%s' timestamp extension is out of range", field);
    default:
      return tw__decode_fail(err, TW_ESCHEMA, "bad_timestamp", field,
                             "field '%s' must be an RFC 3339 string or integer epoch "
                             "milliseconds, not %s",
                             field, raw_kind_words(r));
  }
}

static int validate_field(const tw_schema_t *schema, int slot, const tw_field_spec_t *spec,
                          const tw__raw_t *r, tw_event_t *out, tw_decode_error_t *err) {
  const char *field = schema->fields[slot].name;
  tw_field_kind_t kind = schema->fields[slot].kind;
  tw_value_t *v = &out->f[slot];
  int rc;
  switch (kind) {
    case TW_FK_INT:
    case TW_FK_FEN:
      if ((rc = check_integer(r, spec, kind, field, err)) != 0) return rc;
      *v = tw_value_int(kind == TW_FK_FEN ? TW_V_MONEY : TW_V_INT, r->u.i);
      return 0;
    case TW_FK_TIME: {
      int64_t ms;
      if ((rc = check_time(r, field, &ms, err)) != 0) return rc;
      *v = tw_value_int(TW_V_TIME, ms);
      return 0;
    }
    case TW_FK_ENUM:
      if (r->kind != TW__RAW_STR)
        return tw__decode_fail(err, TW_ESCHEMA, "wrong_type", field,
                               "field '%s' must be a string, not %s", field, raw_kind_words(r));
      for (int i = 0; i < spec->n_enum; i++) {
        const char *e = spec->enum_values[i];
        if (r->len < TW_NAME_MAX && e[r->len] == '\0' && memcmp(e, r->u.s, r->len) == 0) {
          /* point at the schema's copy: no arena use, and equal values share a pointer */
          *v = tw_value_str(e, r->len);
          return 0;
        }
      }
      {
        char allowed[160] = "";
        size_t used = 0;
        for (int i = 0; i < spec->n_enum && used < sizeof allowed; i++)
          used += (size_t)snprintf(allowed + used, sizeof allowed - used, "%s%s", i ? ", " : "",
                                   spec->enum_values[i]);
        return tw__decode_fail(err, TW_ESCHEMA, "bad_enum", field,
                               "field '%s' is '%.*s'; expected one of: %s", field,
                               (int)(r->len > 40 ? 40 : r->len), r->u.s, allowed);
      }
    case TW_FK_CREDIT_CODE:
      if (r->kind != TW__RAW_STR)
        return tw__decode_fail(err, TW_ESCHEMA, "wrong_type", field,
                               "field '%s' must be a string, not %s", field, raw_kind_words(r));
      if (!tw_credit_code_valid(r->u.s, r->len))
        return tw__decode_fail(err, TW_ESCHEMA, "bad_credit_code", field,
                               "field '%s' is not an 18-character unified social credit code "
                               "with a valid check character (GB 32100-2015)",
                               field);
      return arena_str(out, r->u.s, r->len, v, field, err);
    case TW_FK_REGION:
      if (r->kind != TW__RAW_STR)
        return tw__decode_fail(err, TW_ESCHEMA, "wrong_type", field,
                               "field '%s' must be a string, not %s", field, raw_kind_words(r));
      if (!tw_region_valid(r->u.s, r->len))
        return tw__decode_fail(err, TW_ESCHEMA, "bad_region", field,
                               "field '%s' is not a 6-digit GB/T 2260 region code", field);
      return arena_str(out, r->u.s, r->len, v, field, err);
    case TW_FK_STRING:
    case TW_FK_TEXT:
    case TW_FK_PSEUDONYM:
    default:
      if ((rc = check_string(r, spec, field, err)) != 0) return rc;
      return arena_str(out, r->u.s, r->len, v, field, err);
  }
}

int tw__event_validate(const tw_schema_t *schema, const tw__raw_event_t *raw, tw_event_t *out,
                       tw_decode_error_t *err) {
  int rc;
  out->present = 0;
  out->arena_used = 0;
  uint64_t seen = raw->seen;
  /* null is absence */
  for (uint32_t s = 0; s < schema->n_fields; s++)
    if ((seen >> s & 1) && raw->v[s].kind == TW__RAW_NULL) seen &= ~((uint64_t)1 << s);

  if (!(seen >> TW_SLOT_TYPE & 1))
    return tw__decode_fail(err, TW_ESCHEMA, "missing_field", "type",
                           "the event has no 'type' field");
  const tw__raw_t *traw = &raw->v[TW_SLOT_TYPE];
  if (traw->kind != TW__RAW_STR)
    return tw__decode_fail(err, TW_ESCHEMA, "wrong_type", "type",
                           "field 'type' must be a string, not %s", raw_kind_words(traw));
  int type_id = -1;
  if (traw->len < TW_NAME_MAX)
    for (uint32_t t = 0; t < schema->n_types; t++) {
      const char *name = schema->types[t].name;
      if (name[traw->len] == '\0' && memcmp(name, traw->u.s, traw->len) == 0) {
        type_id = (int)t;
        break;
      }
    }
  if (type_id < 0)
    return tw__decode_fail(err, TW_ESCHEMA, "unknown_type", "type", "unknown event type '%.*s'",
                           (int)(traw->len > 40 ? 40 : traw->len), traw->u.s);
  const tw_type_def_t *ty = &schema->types[type_id];
  if (ty->internal)
    return tw__decode_fail(err, TW_ESCHEMA, "reserved_type", "type",
                           "event type '%s' is made by the engine, not accepted as input",
                           ty->name);
  uint64_t missing = ty->required_mask & ~seen;
  for (uint32_t s = 0; s < schema->n_fields; s++) {
    uint64_t bit = (uint64_t)1 << s;
    if (missing & bit) {
      rc = tw__decode_fail(err, TW_ESCHEMA, "missing_field", schema->fields[s].name,
                           "a %s event needs field '%s'", ty->name, schema->fields[s].name);
      goto fail;
    }
    if (!(seen & ty->present_mask & bit)) continue; /* absent, or not a field of this type */
    if (s == TW_SLOT_TYPE) {
      out->f[s] = tw_value_str(ty->name, traw->len);
    } else if ((rc = validate_field(schema, (int)s, &ty->spec[s], &raw->v[s], out, err)) != 0) {
      goto fail;
    }
    out->present |= bit;
  }
  out->type = (uint16_t)type_id;
  out->ts_ms = out->f[TW_SLOT_TS].u.i;
  return 0;
fail:
  out->present = 0;
  out->arena_used = 0;
  return rc;
}
