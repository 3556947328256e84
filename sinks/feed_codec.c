/*
 * feed_codec.c: feed payloads: the regulator and self-check views of an alert, msgpack or JSON,
 * and back to JSON for `tutorwatch feed` (contract in tw_feed_codec.h).
 *
 * Bounds: every output goes to a tw_feed_buf_t with a maximum size; conversions recurse at most
 * TW_FEED_DEPTH_MAX levels; msgpack input is framed by tw_msgpack_frame first (declared counts
 * checked against the bytes, depth and size bounded) and only then unpacked, so a hostile
 * payload costs at most what its own bytes can claim.
 */
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_feed_codec.h"

void tw_feed_buf_free(tw_feed_buf_t *b) {
  if (b == NULL) return;
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

int tw_feed_buf_put(tw_feed_buf_t *b, const void *p, size_t n) {
  size_t max = b->max ? b->max : TW_FEED_PAYLOAD_MAX;
  if (n > max || b->len > max - n) return TW_ETOOBIG;
  if (b->len + n > b->cap) {
    size_t ncap = b->cap ? b->cap : 1024;
    while (ncap < b->len + n) ncap *= 2;
    if (ncap > max) ncap = max;
    char *d = realloc(b->data, ncap);
    if (d == NULL) return TW_ENOMEM;
    b->data = d;
    b->cap = ncap;
  }
  if (n > 0) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

static int buf_puts(tw_feed_buf_t *b, const char *s) {
  return tw_feed_buf_put(b, s, strlen(s));
}

/* msgpack_packer writes through this; a failed write makes the packer return -1. */
typedef struct pack_sink {
  tw_feed_buf_t *b;
  int rc;
} pack_sink_t;

static int pack_write(void *data, const char *buf, size_t len) {
  pack_sink_t *ps = data;
  int rc = tw_feed_buf_put(ps->b, buf, len);
  if (rc != 0) ps->rc = rc;
  return rc == 0 ? 0 : -1;
}

static int pack_json(msgpack_packer *pk, const json_t *v, int depth) {
  if (depth > TW_FEED_DEPTH_MAX) return TW_EINVAL;
  switch (json_typeof(v)) {
    case JSON_OBJECT: {
      const char *k;
      json_t *x;
      if (msgpack_pack_map(pk, json_object_size(v)) != 0) return TW_ETOOBIG;
      json_object_foreach((json_t *)v, k, x) {
        size_t kl = strlen(k);
        if (msgpack_pack_str(pk, kl) != 0 || msgpack_pack_str_body(pk, k, kl) != 0)
          return TW_ETOOBIG;
        int rc = pack_json(pk, x, depth + 1);
        if (rc != 0) return rc;
      }
      return 0;
    }
    case JSON_ARRAY: {
      size_t i;
      json_t *x;
      if (msgpack_pack_array(pk, json_array_size(v)) != 0) return TW_ETOOBIG;
      json_array_foreach(v, i, x) {
        int rc = pack_json(pk, x, depth + 1);
        if (rc != 0) return rc;
      }
      return 0;
    }
    case JSON_STRING: {
      size_t n = json_string_length(v);
      return msgpack_pack_str(pk, n) == 0 && msgpack_pack_str_body(pk, json_string_value(v), n) == 0
                 ? 0
                 : TW_ETOOBIG;
    }
    case JSON_INTEGER:
      return msgpack_pack_int64(pk, (int64_t)json_integer_value(v)) == 0 ? 0 : TW_ETOOBIG;
    case JSON_REAL:
      return msgpack_pack_double(pk, json_real_value(v)) == 0 ? 0 : TW_ETOOBIG;
    case JSON_TRUE:
      return msgpack_pack_true(pk) == 0 ? 0 : TW_ETOOBIG;
    case JSON_FALSE:
      return msgpack_pack_false(pk) == 0 ? 0 : TW_ETOOBIG;
    case JSON_NULL:
      return msgpack_pack_nil(pk) == 0 ? 0 : TW_ETOOBIG;
  }
  return TW_EINVAL;
}

/* ---- msgpack → JSON text -------------------------------------------------------------------- */

static int put_jstr(tw_feed_buf_t *b, const char *s, size_t n) {
  int rc = tw_feed_buf_put(b, "\"", 1);
  for (size_t i = 0; i < n && rc == 0; i++) {
    unsigned char c = (unsigned char)s[i];
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      rc = tw_feed_buf_put(b, esc, 2);
    } else if (c == '\n') {
      rc = buf_puts(b, "\\n");
    } else if (c == '\r') {
      rc = buf_puts(b, "\\r");
    } else if (c == '\t') {
      rc = buf_puts(b, "\\t");
    } else if (c < 0x20 || c == 0x7f) {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      rc = buf_puts(b, esc);
    } else {
      rc = tw_feed_buf_put(b, &s[i], 1);
    }
  }
  return rc == 0 ? tw_feed_buf_put(b, "\"", 1) : rc;
}

/* The shortest %g form that reads back as the same double; non-finite values are null. */
static int put_double(tw_feed_buf_t *b, double d) {
  char s[40];
  if (!isfinite(d)) return buf_puts(b, "null");
  for (int prec = 1; prec <= 17; prec++) {
    snprintf(s, sizeof s, "%.*g", prec, d);
    if (strtod(s, NULL) == d) break;
  }
  return buf_puts(b, s);
}

static int put_obj(tw_feed_buf_t *b, const msgpack_object *o, int depth) {
  char num[32];
  if (depth > TW_FEED_DEPTH_MAX) return TW_EINVAL;
  switch (o->type) {
    case MSGPACK_OBJECT_NIL:
      return buf_puts(b, "null");
    case MSGPACK_OBJECT_BOOLEAN:
      return buf_puts(b, o->via.boolean ? "true" : "false");
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
      snprintf(num, sizeof num, "%llu", (unsigned long long)o->via.u64);
      return buf_puts(b, num);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
      snprintf(num, sizeof num, "%lld", (long long)o->via.i64);
      return buf_puts(b, num);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
      return put_double(b, o->via.f64);
    case MSGPACK_OBJECT_STR:
      return put_jstr(b, o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
      int rc = buf_puts(b, "[");
      for (uint32_t i = 0; i < o->via.array.size && rc == 0; i++) {
        if (i > 0) rc = buf_puts(b, ",");
        if (rc == 0) rc = put_obj(b, &o->via.array.ptr[i], depth + 1);
      }
      return rc == 0 ? buf_puts(b, "]") : rc;
    }
    case MSGPACK_OBJECT_MAP: {
      int rc = buf_puts(b, "{");
      for (uint32_t i = 0; i < o->via.map.size && rc == 0; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR) return TW_EINVAL;
        if (i > 0) rc = buf_puts(b, ",");
        if (rc == 0) rc = put_jstr(b, kv->key.via.str.ptr, kv->key.via.str.size);
        if (rc == 0) rc = buf_puts(b, ":");
        if (rc == 0) rc = put_obj(b, &kv->val, depth + 1);
      }
      return rc == 0 ? buf_puts(b, "}") : rc;
    }
    default:
      return buf_puts(b, "null"); /* bin and ext: never in an alert */
  }
}

/* Unpack exactly one msgpack map from data. Returns 0 with *u holding it, else TW_EINVAL. */
static int unpack_map(const char *data, size_t len, msgpack_unpacked *u) {
  size_t off = 0, obj_len = 0;
  tw_decode_error_t err;
  /* msgpack-c sizes tables from declared counts: check them against the bytes first */
  if (tw_msgpack_frame(data, len, &obj_len, &err) != 0 || obj_len != len) return TW_EINVAL;
  msgpack_unpacked_init(u);
  if (msgpack_unpack_next(u, data, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len ||
      u->data.type != MSGPACK_OBJECT_MAP) {
    msgpack_unpacked_destroy(u);
    return TW_EINVAL;
  }
  return 0;
}

int tw_feed_to_json(const char *data, size_t len, tw_feed_buf_t *out) {
  if (data == NULL || out == NULL || len == 0) return TW_EINVAL;
  if (data[0] == '{') {
    if (data[len - 1] != '}' || memchr(data, '\n', len) != NULL) return TW_EINVAL;
    return tw_feed_buf_put(out, data, len);
  }
  msgpack_unpacked u;
  if (unpack_map(data, len, &u) != 0) return TW_EINVAL;
  int rc = put_obj(out, &u.data, 0);
  msgpack_unpacked_destroy(&u);
  return rc;
}

uint64_t tw_feed_payload_seq(const char *data, size_t len) {
  if (data == NULL || len == 0) return 0;
  if (data[0] == '{') {
    static const char k[] = "{\"seq\":";
    if (len < sizeof k || memcmp(data, k, sizeof k - 1) != 0) return 0;
    uint64_t v = 0;
    for (size_t i = sizeof k - 1; i < len && data[i] >= '0' && data[i] <= '9'; i++) {
      if (v > (UINT64_MAX - 9) / 10) return 0;
      v = v * 10 + (uint64_t)(data[i] - '0');
    }
    return v;
  }
  msgpack_unpacked u;
  if (unpack_map(data, len, &u) != 0) return 0;
  uint64_t seq = 0;
  const msgpack_object_map *m = &u.data.via.map;
  for (uint32_t i = 0; i < m->size; i++) {
    const msgpack_object_kv *kv = &m->ptr[i];
    if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == 3 &&
        memcmp(kv->key.via.str.ptr, "seq", 3) == 0 &&
        kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
      seq = kv->val.via.u64;
      break;
    }
  }
  msgpack_unpacked_destroy(&u);
  return seq;
}

/* ---- masking -------------------------------------------------------------------------------- */

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}
static int is_code_char(char c) {
  return is_digit(c) || (c >= 'A' && c <= 'Z');
}

static void mask_range(char *s, size_t start, size_t n) {
  for (size_t i = start + 3; i + 2 < start + n; i++) s[i] = '*';
}

size_t tw_feed_mask_text(char *s, size_t len, const char *own_code) {
  size_t masked = 0, i = 0;
  if (s == NULL) return 0;
  while (i < len) {
    if (!is_code_char(s[i]) || (i > 0 && is_code_char(s[i - 1]))) {
      i++;
      continue;
    }
    size_t j = i, digits = 0;
    while (j < len && is_code_char(s[j])) digits += is_digit(s[j++]);
    size_t n = j - i;
    int all_digits = digits == n;
    int id_x = digits == n - 1 && n == 18 && (s[j - 1] == 'X');
    int code_like =
        n == 18 && digits >= 8 &&
        !(own_code != NULL && strlen(own_code) == 18 && memcmp(s + i, own_code, 18) == 0);
    if (((all_digits || id_x) && n >= 11) || code_like) {
      mask_range(s, i, n);
      masked++;
    }
    i = j;
  }
  return masked;
}

/* ---- views ---------------------------------------------------------------------------------- */

static const char *const kSelfCheckKeys[] = {
    "alert_id",   "rule",    "severity", "institution_id", "region",
    "event_time", "message", "values",   "event_ids",      "source"};

static json_t *self_check_view(json_t *a, uint64_t seq) {
  const char *by = json_string_value(json_object_get(a, "by"));
  const char *inst = json_string_value(json_object_get(a, "institution_id"));
  const char *rule = json_string_value(json_object_get(a, "rule"));
  if (by == NULL || strcmp(by, "institution_id") != 0 || inst == NULL) return NULL;
  if (rule != NULL && strcmp(rule, "escalation") == 0) return NULL; /* between regulators */
  json_t *o = json_object();
  if (o == NULL) return NULL;
  json_object_set_new(o, "seq", json_integer((json_int_t)seq));
  for (size_t k = 0; k < sizeof kSelfCheckKeys / sizeof kSelfCheckKeys[0]; k++) {
    const char *name = kSelfCheckKeys[k];
    json_t *v = json_object_get(a, name);
    if (v == NULL) continue;
    if (strcmp(name, "message") == 0 && json_is_string(v)) {
      size_t n = json_string_length(v);
      char *m = malloc(n + 1);
      if (m == NULL) goto fail;
      memcpy(m, json_string_value(v), n + 1);
      tw_feed_mask_text(m, n, inst);
      json_object_set_new(o, name, json_stringn(m, n));
      free(m);
    } else if (strcmp(name, "values") == 0 && json_is_object(v)) {
      json_t *vals = json_object();
      const char *vk;
      json_t *x;
      if (vals == NULL) goto fail;
      json_object_foreach(v, vk, x) {
        if (json_is_integer(x)) {
          char d[32];
          int n = snprintf(d, sizeof d, "%lld", (long long)json_integer_value(x));
          if (n - (d[0] == '-') >= 11) { /* an integer that may be a phone or id number */
            tw_feed_mask_text(d, (size_t)n, NULL);
            json_object_set_new(vals, vk, json_string(d));
          } else {
            json_object_set(vals, vk, x);
          }
        } else if (json_is_number(x) || json_is_boolean(x) || json_is_null(x)) {
          json_object_set(vals, vk, x);
        }
      }
      json_object_set_new(o, name, vals);
    } else {
      json_object_set(o, name, v);
    }
  }
  return o;
fail:
  json_decref(o);
  return NULL;
}

int tw_feed_payload(int self_check, tw_feed_format_t fmt, uint64_t seq, const char *json,
                    size_t len, tw_feed_buf_t *out) {
  char head[40];
  if (json == NULL || out == NULL || len < 2 || json[0] != '{' || json[len - 1] != '}')
    return TW_EINVAL;
  out->len = 0;
  if (!self_check && fmt == TW_FEED_JSON) {
    int n = snprintf(head, sizeof head, "{\"seq\":%llu%s", (unsigned long long)seq,
                     len == 2 ? "" : ",");
    int rc = tw_feed_buf_put(out, head, (size_t)n);
    return rc == 0 ? tw_feed_buf_put(out, json + 1, len - 1) : rc;
  }
  json_error_t jerr;
  json_t *a = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
  if (a == NULL || !json_is_object(a)) {
    json_decref(a);
    return TW_EINVAL;
  }
  json_t *view = NULL;
  int rc = 0;
  if (self_check) {
    view = self_check_view(a, seq);
    if (view == NULL) rc = TW_ENOENT;
  } else {
    view = json_object();
    if (view == NULL) {
      rc = TW_ENOMEM;
    } else {
      const char *k;
      json_t *x;
      json_object_set_new(view, "seq", json_integer((json_int_t)seq));
      json_object_foreach(a, k, x) if (strcmp(k, "seq") != 0) json_object_set(view, k, x);
    }
  }
  json_decref(a);
  if (rc != 0) return rc;
  pack_sink_t ps = {out, 0};
  msgpack_packer pk;
  msgpack_packer_init(&pk, &ps, pack_write);
  rc = pack_json(&pk, view, 0);
  json_decref(view);
  if (rc != 0) return ps.rc != 0 ? ps.rc : rc;
  if (fmt == TW_FEED_MSGPACK) return 0;
  /* JSON: print the packed map (one printer for both encodings). */
  tw_feed_buf_t tmp = {NULL, 0, 0, out->max};
  rc = tw_feed_to_json(out->data, out->len, &tmp);
  if (rc == 0) {
    out->len = 0;
    rc = tw_feed_buf_put(out, tmp.data, tmp.len);
  }
  tw_feed_buf_free(&tmp);
  return rc;
}
