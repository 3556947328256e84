/*
 * template.c: message templates: literal text with `{expr}` holes; `{{` and `}}` are literal
 * braces. Holes are compiled like conditions (any type) at load; rendering evaluates them and
 * writes into the caller's buffer, so rendering allocates nothing.
 *
 * Value formats: int and money as integers (money in fen; authors write `{amount_fen / 100}`
 * for yuan), decimals with 6 decimals and trailing zeros cut (as alerts print them), durations in
 * the largest exact unit (7d, 36h, 90s, 500ms), times as RFC 3339 at +08:00 with milliseconds,
 * strings raw, bool true/false, null `null`. Output longer than the buffer is cut at a UTF-8
 * boundary and ends with "…".
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "rules_internal.h"
#include "tw_error.h"

typedef struct tw__part {
  const char *text; /* literal (braces already unescaped) when expr is NULL */
  size_t len;
  const tw_expr_t *expr;
} tw__part_t;

struct tw_template {
  tw__part_t *parts;
  size_t n;
};

/* Split src into parts; with parts == NULL only count them. lit receives unescaped literals. */
static int split(const tw__env_t *env, const char *src, size_t len, tw__part_t *parts, char *lit,
                 size_t *n_out, tw__perr_t *err) {
  size_t n = 0, i = 0, o = 0, lit_start = 0;
  for (;;) {
    char c = i < len ? src[i] : '\0';
    int hole = i < len && c == '{' && !(i + 1 < len && src[i + 1] == '{');
    if (i >= len || hole) {
      if (o > lit_start) { /* flush the literal run */
        if (parts) {
          parts[n].text = lit + lit_start;
          parts[n].len = o - lit_start;
        }
        n++;
        lit_start = o;
      }
      if (i >= len) break;
      size_t start = ++i;
      int in_str = 0;
      while (i < len && (in_str || src[i] != '}')) {
        if (src[i] == '"')
          in_str = !in_str;
        else if (in_str && src[i] == '\\')
          i++;
        i++;
      }
      if (i >= len) return tw__perr_set(err, TW_EPARSE, start - 1, "unclosed '{' in message");
      if (parts) {
        tw_expr_t *e;
        if (tw__expr_compile(env, src + start, i - start, -1, &e, err) != 0) {
          if (err->macro == 0) err->pos += start; /* else it points into the macro's source */
          return err->code;
        }
        parts[n].expr = e;
      }
      n++;
      i++;
      continue;
    }
    if (c == '{' || (c == '}' && i + 1 < len && src[i + 1] == '}')) {
      if (lit) lit[o] = c;
      o++;
      i += 2;
      continue;
    }
    if (c == '}')
      return tw__perr_set(err, TW_EPARSE, i, "single '}' in message: write '}}' for a brace");
    if (lit) lit[o] = c;
    o++;
    i++;
  }
  *n_out = n;
  return 0;
}

int tw__template_compile(const tw__env_t *env, const char *src, size_t len,
                         const tw_template_t **out, tw__perr_t *err) {
  size_t n = 0;
  memset(err, 0, sizeof *err);
  if (split(env, src, len, NULL, NULL, &n, err) != 0) return err->code;
  tw_template_t *t = tw__arena_alloc(&env->rs->arena, sizeof *t);
  char *lit = tw__arena_alloc(&env->rs->arena, len + 1);
  tw__part_t *parts = tw__arena_alloc(&env->rs->arena, (n ? n : 1) * sizeof *parts);
  if (t == NULL || lit == NULL || parts == NULL)
    return tw__perr_set(err, TW_ENOMEM, 0, "out of memory");
  if (split(env, src, len, parts, lit, &n, err) != 0) return err->code;
  t->parts = parts;
  t->n = n;
  *out = t;
  return 0;
}

/* Times print in Asia/Shanghai (UTC+8, no daylight saving); beyond years 0000-9999 as epoch ms. */
static int format_time(int64_t ms, char *buf, size_t cap) {
  char tmp[40];
  if (tw_format_rfc3339(ms, 480, tmp, sizeof tmp) < 0) return snprintf(buf, cap, "%" PRId64, ms);
  return snprintf(buf, cap, "%s", tmp);
}

static int format_duration(int64_t ms, char *buf, size_t cap) {
  static const struct {
    int64_t ms;
    const char *unit;
  } units[] = {{86400000, "d"}, {3600000, "h"}, {60000, "m"}, {1000, "s"}, {1, "ms"}};
  if (ms == 0) return snprintf(buf, cap, "0s");
  for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
    if (ms % units[i].ms == 0)
      return snprintf(buf, cap, "%" PRId64 "%s", ms / units[i].ms, units[i].unit);
  return snprintf(buf, cap, "%" PRId64 "ms", ms);
}

int tw__value_format(tw_value_t v, char *buf, size_t cap) {
  switch (v.kind) {
    case TW_V_BOOL:
      return snprintf(buf, cap, "%s", v.u.i ? "true" : "false");
    case TW_V_INT:
    case TW_V_MONEY:
      return snprintf(buf, cap, "%" PRId64, v.u.i);
    case TW_V_DURATION:
      return format_duration(v.u.i, buf, cap);
    case TW_V_TIME:
      return format_time(v.u.i, buf, cap);
    case TW_V_STR:
      return snprintf(buf, cap, "%.*s", (int)v.u.s.len, v.u.s.ptr);
    case TW_V_DEC:
      return tw__dec_format(v.u.d, buf, cap);
    default:
      return snprintf(buf, cap, "null");
  }
}

/* Append len bytes; returns 0, or 1 once the buffer is full (then nothing more is written). */
static int append(char *buf, size_t cap, size_t *o, const char *s, size_t len) {
  if (*o + len < cap) {
    memcpy(buf + *o, s, len);
    *o += len;
    return 0;
  }
  /* cut, keeping room for "…" (3 bytes) and the NUL, at a UTF-8 boundary */
  size_t room = cap - 1 - *o;
  memcpy(buf + *o, s, room);
  *o += room;
  size_t end = cap >= 4 ? cap - 4 : 0;
  if (*o > end) *o = end;
  while (*o > 0 && ((unsigned char)buf[*o] & 0xC0) == 0x80) (*o)--;
  if (cap >= 4) {
    memcpy(buf + *o, "\xE2\x80\xA6", 3);
    *o += 3;
  }
  return 1;
}

int tw_template_render(const tw_template_t *t, tw_eval_ctx_t *ctx, char *buf, size_t cap) {
  size_t o = 0;
  int rc = 0;
  if (buf == NULL || cap == 0) return TW_EINVAL;
  buf[0] = '\0';
  if (t == NULL) return 0;
  for (size_t i = 0; i < t->n; i++) {
    const tw__part_t *p = &t->parts[i];
    int full;
    if (p->expr == NULL) {
      full = append(buf, cap, &o, p->text, p->len);
    } else {
      tw_value_t v;
      char tmp[64];
      if ((rc = tw_expr_eval(p->expr, ctx, &v)) != 0) break;
      if (v.kind == TW_V_STR) {
        full = append(buf, cap, &o, v.u.s.ptr, v.u.s.len);
      } else {
        int n = tw__value_format(v, tmp, sizeof tmp);
        if (n >= (int)sizeof tmp) n = (int)sizeof tmp - 1; /* snprintf cut it */
        full = append(buf, cap, &o, tmp, n < 0 ? 0 : (size_t)n);
      }
    }
    if (full) break;
  }
  buf[o] = '\0';
  return rc != 0 ? rc : (int)o;
}
