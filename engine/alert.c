/*
 * alert.c: deterministic alert ids and the canonical one-line JSON of an alert.
 *
 * The JSON writer is hand-written rather than built with jansson because it runs once per alert
 * on the engine's thread and its key order and number formatting are part of the golden-file
 * contract: same input and rules, same bytes. Work is bounded by TW_ALERT_JSON_MAX.
 */
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "tw_alert.h"
#include "tw_error.h"

#define TW_TZ_OFFSET_MIN 480 /* alert times are shown in Asia/Shanghai (UTC+8, no DST) */

void tw_alert_make_id(tw_alert_t *a) {
  crypto_generichash_state h;
  unsigned char out[TW_ALERT_ID_LEN / 2];
  unsigned char sep = 0;
  unsigned char ts[8];
  for (int i = 0; i < 8; i++) ts[i] = (unsigned char)((uint64_t)a->event_time_ms >> (56 - 8 * i));
  crypto_generichash_init(&h, NULL, 0, sizeof out);
  crypto_generichash_update(&h, (const unsigned char *)a->rule->name, strlen(a->rule->name));
  crypto_generichash_update(&h, &sep, 1);
  crypto_generichash_update(&h, (const unsigned char *)a->key.ptr, a->key.len);
  crypto_generichash_update(&h, &sep, 1);
  crypto_generichash_update(&h, (const unsigned char *)a->event_id.ptr, a->event_id.len);
  crypto_generichash_update(&h, &sep, 1);
  crypto_generichash_update(&h, ts, sizeof ts);
  crypto_generichash_final(&h, out, sizeof out);
  sodium_bin2hex(a->alert_id, sizeof a->alert_id, out, sizeof out);
}

typedef struct jbuf {
  char *p;
  size_t len, cap;
  int overflow;
} jbuf_t;

static void put(jbuf_t *b, const char *s, size_t n) {
  if (b->overflow || b->cap - b->len <= n) {
    b->overflow = 1;
    return;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void puts_(jbuf_t *b, const char *s) {
  put(b, s, strlen(s));
}

/* A JSON string: quotes, escapes for '"', '\\' and control characters; UTF-8 passes through
 * (every string here was validated as UTF-8 at decode or comes from the rule file). */
static void put_jstr(jbuf_t *b, const char *s, size_t n) {
  put(b, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    put(b, s + run, i - run);
    run = i + 1;
    char esc[8];
    switch (c) {
      case '"':
        put(b, "\\\"", 2);
        break;
      case '\\':
        put(b, "\\\\", 2);
        break;
      case '\n':
        put(b, "\\n", 2);
        break;
      case '\r':
        put(b, "\\r", 2);
        break;
      case '\t':
        put(b, "\\t", 2);
        break;
      default:
        snprintf(esc, sizeof esc, "\\u%04x", c);
        put(b, esc, 6);
    }
  }
  put(b, s + run, n - run);
  put(b, "\"", 1);
}

static void put_int(jbuf_t *b, int64_t v) {
  char num[24];
  int n = snprintf(num, sizeof num, "%lld", (long long)v);
  put(b, num, (size_t)n);
}

/* A time as RFC 3339 in Asia/Shanghai; outside years 0000-9999, as epoch ms. */
static void put_time(jbuf_t *b, int64_t ms) {
  char ts[40];
  if (tw_format_rfc3339(ms, TW_TZ_OFFSET_MIN, ts, sizeof ts) < 0) {
    put_int(b, ms);
    return;
  }
  put_jstr(b, ts, strlen(ts));
}

static void put_value(jbuf_t *b, const tw_value_t *v) {
  switch ((tw_vkind_t)v->kind) {
    case TW_V_NULL:
      puts_(b, "null");
      break;
    case TW_V_BOOL:
      puts_(b, v->u.i ? "true" : "false");
      break;
    case TW_V_INT:
    case TW_V_MONEY:
    case TW_V_DURATION:
      put_int(b, v->u.i);
      break;
    case TW_V_TIME:
      put_time(b, v->u.i);
      break;
    case TW_V_STR:
      put_jstr(b, v->u.s.ptr, v->u.s.len);
      break;
    case TW_V_DEC: {
      /* six decimals, trailing zeros cut: the same bytes on every machine (glibc rounds
       * exactly); JSON has no NaN or infinity, so those print as null */
      char d[64];
      if (!isfinite(v->u.d) || fabs(v->u.d) >= 1e15) {
        puts_(b, "null");
        break;
      }
      int n = snprintf(d, sizeof d, "%.6f", v->u.d);
      while (n > 1 && d[n - 1] == '0') n--;
      if (n > 1 && d[n - 1] == '.') n--;
      if (n == 2 && d[0] == '-' && d[1] == '0') (void)memmove(d, "0", 2), n = 1;
      put(b, d, (size_t)n);
      break;
    }
  }
}

static void put_key(jbuf_t *b, const char *key, int first) {
  if (!first) put(b, ",", 1);
  put_jstr(b, key, strlen(key));
  put(b, ":", 1);
}

int tw_alert_to_json(const tw_alert_t *a, char *buf, size_t cap) {
  jbuf_t b = {buf, 0, cap, 0};
  if (cap == 0) return TW_ETOOBIG;
  buf[0] = '\0';
  put(&b, "{", 1);
  put_key(&b, "alert_id", 1);
  put_jstr(&b, a->alert_id, strlen(a->alert_id));
  put_key(&b, "rule", 0);
  put_jstr(&b, a->rule->name, strlen(a->rule->name));
  put_key(&b, "severity", 0);
  puts_(&b, "\"");
  puts_(&b, tw_severity_name(a->rule->severity));
  puts_(&b, "\"");
  put_key(&b, "by", 0);
  put_jstr(&b, a->by, strlen(a->by));
  put_key(&b, "key", 0);
  put_jstr(&b, a->key.ptr, a->key.len);
  put_key(&b, "institution_id", 0);
  put_jstr(&b, a->institution_id.ptr, a->institution_id.len);
  put_key(&b, "region", 0);
  put_jstr(&b, a->region.ptr, a->region.len);
  put_key(&b, "event_time", 0);
  put_time(&b, a->event_time_ms);
  put_key(&b, "message", 0);
  put_jstr(&b, a->message, strlen(a->message));
  put_key(&b, "values", 0);
  put(&b, "{", 1);
  for (size_t i = 0; i < a->n_values; i++) {
    put_key(&b, a->values[i].name, i == 0);
    put_value(&b, &a->values[i].value);
  }
  put(&b, "}", 1);
  put_key(&b, "event_ids", 0);
  put(&b, "[", 1);
  put_jstr(&b, a->event_id.ptr, a->event_id.len);
  put(&b, "]", 1);
  if (a->rule->source != NULL && a->rule->source[0] != '\0') {
    put_key(&b, "source", 0);
    put_jstr(&b, a->rule->source, strlen(a->rule->source));
  }
  put(&b, "}", 1);
  if (b.overflow) return TW_ETOOBIG;
  return (int)b.len;
}
