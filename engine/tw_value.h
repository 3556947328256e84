/*
 * tw_value.h: the tagged value that events, aggregates and expressions share.
 *
 * A value is 16 bytes, passed by value, never owns memory. Strings point into storage owned by
 * someone else (an event's arena, a compiled rule's constants) and are valid as long as that
 * owner is; they are always followed by a NUL byte, which is not counted in len.
 * Money is integer fen (1 yuan = 100 fen) and never floating point; times are epoch milliseconds
 * (UTC); durations are milliseconds. Decimals (TW_V_DEC, a double) appear only where the rule
 * language computes a ratio or a statistic (avg of an integer field, zscore, decimal literals);
 * they are never stored as money.
 */
#ifndef TW_VALUE_H
#define TW_VALUE_H

#include <stdbool.h>
#include <stdint.h>

typedef enum tw_vkind {
  TW_V_NULL = 0, /* absent field, or no value yet */
  TW_V_BOOL,     /* u.i is 0 or 1 */
  TW_V_INT,      /* u.i: signed 64-bit integer */
  TW_V_MONEY,    /* u.i: fen */
  TW_V_DURATION, /* u.i: milliseconds */
  TW_V_TIME,     /* u.i: epoch milliseconds, UTC */
  TW_V_STR,      /* u.s: UTF-8 bytes, validated at decode */
  TW_V_DEC       /* u.d: a finite IEEE-754 double (decimal in the rule language) */
} tw_vkind_t;

typedef struct tw_str {
  const char *ptr; /* not owned; ptr[len] == '\0' */
  uint32_t len;    /* bytes, excluding the NUL */
} tw_str_t;

typedef struct tw_value {
  uint8_t kind; /* tw_vkind_t */
  union {
    int64_t i;
    double d;
    tw_str_t s;
  } u;
} tw_value_t;

static inline tw_value_t tw_value_int(tw_vkind_t kind, int64_t i) {
  tw_value_t v;
  v.kind = (uint8_t)kind;
  v.u.i = i;
  return v;
}

static inline tw_value_t tw_value_dec(double d) {
  tw_value_t v;
  v.kind = (uint8_t)TW_V_DEC;
  v.u.d = d;
  return v;
}

static inline tw_value_t tw_value_str(const char *ptr, uint32_t len) {
  tw_value_t v;
  v.kind = TW_V_STR;
  v.u.s.ptr = ptr;
  v.u.s.len = len;
  return v;
}

#endif
