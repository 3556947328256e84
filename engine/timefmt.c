/*
 * timefmt.c: RFC 3339 event times to and from epoch milliseconds, durations ("15m"), and strict
 * UTF-8 validation.
 *
 * Pure functions over bounded inputs, no allocation, no locale, no libc time zone state (timegm
 * and gmtime_r are avoided: civil dates are converted with Howard Hinnant's days-from-civil
 * algorithm, exact for every proleptic Gregorian date). Work is O(len) for every function.
 * Years are bounded to 0000..9999, which is what RFC 3339 can write.
 */
#include <stdio.h>
#include <string.h>

#include "tw_error.h"
#include "tw_event.h"

#define MS_PER_DAY 86400000LL

/* Days since 1970-01-01 of the civil date y-m-d (proleptic Gregorian). */
int64_t tw_days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  int64_t era = (y >= 0 ? y : y - 399) / 400;
  unsigned yoe = (unsigned)(y - era * 400);
  unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

void tw_civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  unsigned doe = (unsigned)(z - era * 146097);
  unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static int is_leap(int64_t y) {
  return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(int64_t y, unsigned m) {
  static const unsigned kDays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return m == 2 && is_leap(y) ? 29 : kDays[m - 1];
}

/* Reads exactly n decimal digits at s; -1 if one is not a digit. */
static int digits(const char *s, int n) {
  int v = 0;
  for (int i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return -1;
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

int tw_parse_rfc3339(const char *s, size_t len, int64_t *out_ms) {
  /* Shortest form: YYYY-MM-DDTHH:MM:SSZ (20 bytes); longest with 9 fraction digits and an
   * offset: 35 bytes. Anything longer is not a time. */
  if (s == NULL || len < 20 || len > 35) return TW_EINVAL;
  if (s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't') || s[13] != ':' || s[16] != ':')
    return TW_EINVAL;
  int y = digits(s, 4), mo = digits(s + 5, 2), d = digits(s + 8, 2);
  int h = digits(s + 11, 2), mi = digits(s + 14, 2), se = digits(s + 17, 2);
  if (y < 0 || mo < 1 || mo > 12 || d < 1 || (unsigned)d > days_in_month(y, (unsigned)mo) ||
      h < 0 || h > 23 || mi < 0 || mi > 59 || se < 0 || se > 59)
    return TW_EINVAL;
  size_t i = 19;
  int frac_ms = 0;
  if (i < len && s[i] == '.') {
    size_t start = ++i;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
      if (i - start < 3) frac_ms = frac_ms * 10 + (s[i] - '0');
      i++;
    }
    size_t n = i - start;
    if (n == 0 || n > 9) return TW_EINVAL;
    for (size_t k = n; k < 3; k++) frac_ms *= 10;
  }
  int offset_min;
  if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
    offset_min = 0;
    i++;
  } else if (i < len && (s[i] == '+' || s[i] == '-')) {
    if (len - i != 6 || s[i + 3] != ':') return TW_EINVAL;
    int oh = digits(s + i + 1, 2), om = digits(s + i + 4, 2);
    if (oh < 0 || oh > 23 || om < 0 || om > 59) return TW_EINVAL;
    offset_min = (oh * 60 + om) * (s[i] == '-' ? -1 : 1);
    i += 6;
  } else {
    return TW_EINVAL; /* the offset is required: a local time without one is ambiguous */
  }
  if (i != len) return TW_EINVAL;
  int64_t days = tw_days_from_civil(y, (unsigned)mo, (unsigned)d);
  int64_t ms = days * MS_PER_DAY + ((int64_t)h * 3600 + mi * 60 + se) * 1000 + frac_ms;
  *out_ms = ms - (int64_t)offset_min * 60000;
  return 0;
}

/* floor division, for times before 1970 */
static int64_t floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

int tw_format_rfc3339(int64_t ms, int offset_min, char *buf, size_t cap) {
  /* ±9999 years around 1970 keeps every product below in range */
  if (buf == NULL || cap < 32 || offset_min <= -24 * 60 || offset_min >= 24 * 60 ||
      ms < -62167219200000LL || ms > 253402300799999LL)
    return TW_EINVAL;
  int64_t local = ms + (int64_t)offset_min * 60000;
  int64_t days = floor_div(local, MS_PER_DAY);
  int64_t rem = local - days * MS_PER_DAY;
  int64_t y;
  unsigned mo, d;
  tw_civil_from_days(days, &y, &mo, &d);
  if (y < 0 || y > 9999) return TW_EINVAL;
  int h = (int)(rem / 3600000), mi = (int)(rem / 60000 % 60), se = (int)(rem / 1000 % 60);
  int frac = (int)(rem % 1000);
  int n = snprintf(buf, cap, "%04d-%02u-%02uT%02d:%02d:%02d.%03d", (int)y, mo, d, h, mi, se, frac);
  if (offset_min == 0) {
    n += snprintf(buf + n, cap - (size_t)n, "Z");
  } else {
    int a = offset_min < 0 ? -offset_min : offset_min;
    n += snprintf(buf + n, cap - (size_t)n, "%c%02d:%02d", offset_min < 0 ? '-' : '+', a / 60,
                  a % 60);
  }
  return n;
}

int tw_utf8_valid(const char *data, size_t len) {
  const unsigned char *p = (const unsigned char *)data;
  size_t i = 0;
  while (i < len) {
    /* ASCII fast path, 8 bytes at a time */
    if (len - i >= 8) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      if ((w & 0x8080808080808080ULL) == 0) {
        i += 8;
        continue;
      }
    }
    unsigned c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    unsigned lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c >= 0xc2 && c <= 0xdf) {
      n = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 3;
      if (c == 0xe0)
        lo = 0xa0; /* overlong */
      else if (c == 0xed)
        hi = 0x9f; /* UTF-16 surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 4;
      if (c == 0xf0)
        lo = 0x90; /* overlong */
      else if (c == 0xf4)
        hi = 0x8f; /* above U+10FFFF */
    } else {
      return 0; /* continuation byte, 0xc0/0xc1 overlong lead, or 0xf5..0xff */
    }
    if (len - i < n) return 0;
    if (p[i + 1] < lo || p[i + 1] > hi) return 0;
    for (size_t k = 2; k < n; k++)
      if ((p[i + k] & 0xc0) != 0x80) return 0;
    i += n;
  }
  return 1;
}

int64_t tw_duration_unit_ms(const char *u, size_t n) {
  if (n == 2 && memcmp(u, "ms", 2) == 0) return 1;
  if (n != 1) return 0;
  switch (u[0]) {
    case 's':
      return 1000;
    case 'm':
      return 60 * 1000;
    case 'h':
      return 3600 * 1000;
    case 'd':
      return 24 * 3600 * 1000;
    default:
      return 0;
  }
}

int tw_duration_parse(const char *s, size_t len, int64_t *out_ms) {
  size_t i = 0;
  int64_t n = 0;
  if (len == 0 || s[0] < '0' || s[0] > '9') return TW_EINVAL;
  while (i < len && s[i] >= '0' && s[i] <= '9') {
    if (__builtin_mul_overflow(n, 10, &n) || __builtin_add_overflow(n, s[i] - '0', &n))
      return TW_EOVERFLOW;
    i++;
  }
  int64_t unit = tw_duration_unit_ms(s + i, len - i);
  if (unit == 0) return TW_EINVAL;
  if (__builtin_mul_overflow(n, unit, out_ms)) return TW_EOVERFLOW;
  return 0;
}
