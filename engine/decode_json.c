/*
 * decode_json.c: one JSON Lines record → raw values → the shared validation layer.
 *
 * jansson parses (duplicate keys refused, integers kept as json_int_t so 2^53 + 1 stays exact,
 * invalid UTF-8 refused at parse). Bounds are checked before or right after parsing: the line
 * is at most TW_EVENT_MAX_BYTES, the object has at most TW_EVENT_MAX_KEYS keys and nesting at
 * most TW_EVENT_MAX_DEPTH (jansson itself stops at 2048). When jansson refuses the line, a small
 * scan of the bytes before the error position names the key it was reading, so "too big
 * integer" becomes out_of_range on amount_fen. jansson allocates its tree per event; that is
 * the only allocation here.
 */
#include <jansson.h>
#include <string.h>

#include "decode_internal.h"
#include "tw_error.h"

/* Name of the top-level key whose value contains byte offset pos (the last key fully read
 * before pos), copied into field; "" when none. O(pos). */
static void key_before(const char *data, size_t len, size_t pos, char field[TW_NAME_MAX]) {
  int depth = 0, in_str = 0, esc = 0, expect_key = 0;
  size_t start = 0;
  field[0] = '\0';
  if (pos > len) pos = len;
  for (size_t i = 0; i < pos; i++) {
    char c = data[i];
    if (in_str) {
      if (esc)
        esc = 0;
      else if (c == '\\')
        esc = 1;
      else if (c == '"') {
        in_str = 0;
        if (depth == 1 && expect_key) {
          size_t n = i - start;
          if (n > TW_NAME_MAX - 1) n = TW_NAME_MAX - 1;
          memcpy(field, data + start, n);
          field[n] = '\0';
          expect_key = 0;
        }
      }
      continue;
    }
    switch (c) {
      case '"':
        in_str = 1, start = i + 1;
        break;
      case '{':
      case '[':
        depth++, expect_key = depth == 1 && c == '{';
        break;
      case '}':
      case ']':
        depth--;
        break;
      case ',':
        if (depth == 1) expect_key = 1;
        break;
      default:
        break;
    }
  }
}

static int parse_error(const char *data, size_t len, const json_error_t *je,
                       tw_decode_error_t *err) {
  char field[TW_NAME_MAX];
  size_t pos = je->position > 0 ? (size_t)je->position : 0;
  key_before(data, len, pos, field);
  switch (json_error_code(je)) {
    case json_error_numeric_overflow:
      return tw__decode_fail(err, TW_ESCHEMA, "out_of_range", field,
                             "field '%s' is a number beyond the 64-bit range (%s)", field,
                             je->text);
    case json_error_invalid_utf8:
      return tw__decode_fail(err, TW_EPARSE, "invalid_utf8", field,
                             "field '%s' is not valid UTF-8 (byte %zu of the line)", field, pos);
    case json_error_duplicate_key:
      return tw__decode_fail(err, TW_EPARSE, "duplicate_key", field, "field '%s' appears twice",
                             field);
    case json_error_stack_overflow:
      return tw__decode_fail(err, TW_ETOOBIG, "too_deep", field,
                             "the event is nested deeper than %d levels", TW_EVENT_MAX_DEPTH);
    case json_error_wrong_type:
      return tw__decode_fail(err, TW_EPARSE, "not_an_object", "",
                             "the event must be a JSON object");
    default:
      return tw__decode_fail(err, TW_EPARSE, "invalid_json", "",
                             "invalid JSON at line %d column %d: %s", je->line, je->column,
                             je->text);
  }
}

/* 1 if v nests deeper than `room` more levels. Recursion is bounded by TW_EVENT_MAX_DEPTH. */
static int too_deep(const json_t *v, int room) {
  if (!json_is_object(v) && !json_is_array(v)) return 0;
  if (room <= 0) return 1;
  if (json_is_array(v)) {
    size_t i;
    const json_t *e;
    json_array_foreach(v, i, e) if (too_deep(e, room - 1)) return 1;
  } else {
    const char *k;
    const json_t *e;
    json_object_foreach((json_t *)v, k, e) if (too_deep(e, room - 1)) return 1;
  }
  return 0;
}

int tw_decode_json(const tw_schema_t *schema, const char *data, size_t len, tw_event_t *out,
                   tw_decode_error_t *err) {
  json_t *root = NULL;
  json_error_t je;
  tw__raw_event_t raw;
  int rc;
  out->present = 0;
  if (len > TW_EVENT_MAX_BYTES) {
    rc = tw__decode_fail(err, TW_ETOOBIG, "too_long", "",
                         "the event is %zu bytes; at most %u allowed", len, TW_EVENT_MAX_BYTES);
    goto fail;
  }
  /* a leading '[' is an array: say so instead of jansson's generic message */
  size_t i = 0;
  while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\r' || data[i] == '\n')) i++;
  if (i < len && data[i] != '{') {
    rc = tw__decode_fail(err, TW_EPARSE, data[i] == '[' ? "not_an_object" : "invalid_json", "",
                         data[i] == '[' ? "the event must be a JSON object, not an array"
                                        : "the event must be a JSON object");
    goto fail;
  }
  root = json_loadb(data, len, JSON_REJECT_DUPLICATES, &je);
  if (root == NULL) {
    rc = parse_error(data, len, &je, err);
    goto fail;
  }
  if (!json_is_object(root)) {
    rc = tw__decode_fail(err, TW_EPARSE, "not_an_object", "", "the event must be a JSON object");
    goto fail;
  }
  if (json_object_size(root) > TW_EVENT_MAX_KEYS) {
    rc = tw__decode_fail(err, TW_ETOOBIG, "too_many_keys", "",
                         "the event has %zu keys; at most %d allowed", json_object_size(root),
                         TW_EVENT_MAX_KEYS);
    goto fail;
  }
  tw__raw_begin(&raw);
  void *it = json_object_iter(root);
  for (; it != NULL; it = json_object_iter_next(root, it)) {
    const char *key = json_object_iter_key(it);
    size_t key_len = json_object_iter_key_len(it);
    json_t *v = json_object_iter_value(it);
    tw__raw_t r;
    memset(&r, 0, sizeof r);
    switch (json_typeof(v)) {
      case JSON_OBJECT:
      case JSON_ARRAY:
        if (too_deep(v, TW_EVENT_MAX_DEPTH - 1)) {
          rc = tw__decode_fail(err, TW_ETOOBIG, "too_deep", "",
                               "the event is nested deeper than %d levels", TW_EVENT_MAX_DEPTH);
          goto fail;
        }
        r.kind = TW__RAW_NESTED;
        break;
      case JSON_STRING:
        r.kind = TW__RAW_STR;
        r.utf8_checked = 1; /* jansson refused invalid UTF-8 and NUL (no JSON_ALLOW_NUL) */
        if (json_string_length(v) > UINT32_MAX) goto fail_long;
        r.len = (uint32_t)json_string_length(v);
        r.u.s = json_string_value(v);
        break;
      case JSON_INTEGER:
        r.kind = TW__RAW_INT;
        r.u.i = (int64_t)json_integer_value(v);
        break;
      case JSON_REAL:
        r.kind = TW__RAW_FLOAT;
        r.u.d = json_real_value(v);
        break;
      case JSON_TRUE:
      case JSON_FALSE:
        r.kind = TW__RAW_BOOL;
        r.u.i = json_is_true(v);
        break;
      case JSON_NULL:
      default:
        r.kind = TW__RAW_NULL;
        break;
    }
    if ((rc = tw__raw_put(schema, &raw, key, key_len, &r, err)) != 0) goto fail;
  }
  rc = tw__event_validate(schema, &raw, out, err);
  json_decref(root); /* the strings are in out's arena now */
  return rc;
fail_long:
  rc = tw__decode_fail(err, TW_ETOOBIG, "too_long", "", "a string is too long");
fail:
  json_decref(root);
  out->present = 0;
  return rc;
}
