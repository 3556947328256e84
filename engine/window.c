/*
 * window.c: sparse event-time buckets of one aggregate key, and their on-disk encoding.
 *
 * Invariants of a windowed entry (window W, bucket width g, alignment a, newest event time N);
 * bucket idx covers (idx·g − a, (idx+1)·g − a], a being the time-zone offset mod g:
 *   - buckets[0..nb) are sorted by idx, strictly increasing, each non-empty in the sense that an
 *     event landed in it (a SUM bucket may net to 0);
 *   - every bucket ends after N − W and starts before N, so nb ≤ ceil(W/g) + 1 = nb_max;
 *   - total is the saturated sum of the buckets, i.e. the value of the window ending at N.
 * Work per add: O(1) for in-order events (append or update of the last bucket), O(nb_max) for an
 * eviction or a late event; allocation only while the bucket array grows ×2 towards nb_max.
 * Decoding trusts nothing: every count, offset and varint is checked, errors give TW_ESTATE.
 * Format version 2 adds the bucket width and alignment; version 1 entries (automatic width,
 * UTC alignment) still load, moved onto the current alignment when it differs.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "state_internal.h"
#include "tw_error.h"

#define TW__FORMAT_VERSION 2
#define TW__AGG_HEADER_V1_BYTES 40
#define TW__AGG_HEADER_BYTES 56
#define TW__COOL_BYTES 12
#define TW__FLAG_SEEN 1u

static const int64_t tw__widths_ms[] = {
    1000LL, 60000LL, 300000LL, 900000LL, 3600000LL, 21600000LL, 86400000LL,
};

int64_t tw__window_granularity_ms(int64_t window_ms) {
  const int64_t day_ms = 86400000LL;
  for (size_t i = 0; i < sizeof tw__widths_ms / sizeof tw__widths_ms[0]; i++)
    if (window_ms <= 256 * tw__widths_ms[i]) return tw__widths_ms[i];
  /* Longer than 256 days: whole days, window/256 rounded up. */
  int64_t per_bucket = window_ms / 256 + (window_ms % 256 != 0);
  int64_t days = per_bucket / day_ms + (per_bucket % day_ms != 0);
  return days * day_ms;
}

uint32_t tw__window_cap(int64_t window_ms) {
  if (window_ms <= 0) return 0;
  int64_t g = tw__window_granularity_ms(window_ms);
  return (uint32_t)(window_ms / g + (window_ms % g != 0) + 1);
}

static int64_t tw__floor_div(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
  return q;
}

int64_t tw__spec_granularity_ms(const tw_window_spec_t *spec) {
  return spec->bucket_ms > 0 ? spec->bucket_ms : tw__window_granularity_ms(spec->window_ms);
}

uint32_t tw__spec_cap(const tw_window_spec_t *spec) {
  if (spec->window_ms <= 0) return 0;
  int64_t g = tw__spec_granularity_ms(spec);
  return (uint32_t)(spec->window_ms / g + (spec->window_ms % g != 0) + 1);
}

int64_t tw__align_ms(int64_t tz_offset_ms, int64_t g_ms) {
  if (g_ms <= 0) return 0;
  int64_t r = tz_offset_ms % g_ms;
  return r < 0 ? r + g_ms : r;
}

static int64_t tw__bucket_of(const tw__entry_t *e, int64_t ts_ms) {
  return tw__floor_div(ts_ms - 1 + e->align_ms, e->g_ms);
}

static int64_t tw__bucket_end(const tw__entry_t *e, int64_t idx) {
  return (idx + 1) * e->g_ms - e->align_ms;
}

/* Saturating add; sets *sat when it saturated. */
static int64_t tw__sat_add(int64_t a, int64_t b, int *sat) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    *sat = 1;
    return b > 0 ? INT64_MAX : INT64_MIN;
  }
  return r;
}

/* Exact sum of v[lo..hi) clamped to int64: the wrapped sum plus a count of 2^64 carries, so the
 * order of the buckets does not matter. Sets *sat when clamped. */
typedef struct tw__acc {
  int64_t wrapped;
  int64_t carries;
} tw__acc_t;

static void tw__acc_add(tw__acc_t *a, int64_t v) {
  if (__builtin_add_overflow(a->wrapped, v, &a->wrapped)) a->carries += v > 0 ? 1 : -1;
}

static int64_t tw__acc_get(const tw__acc_t *a, int *sat) {
  if (a->carries > 0) {
    *sat = 1;
    return INT64_MAX;
  }
  if (a->carries < 0) {
    *sat = 1;
    return INT64_MIN;
  }
  return a->wrapped;
}

/* Returns 1 when the sum saturated. */
static int tw__recompute_total(tw__entry_t *e) {
  int sat = 0;
  tw__acc_t a = {0, 0};
  for (uint32_t i = 0; i < e->nb; i++) tw__acc_add(&a, e->buckets[i].value);
  e->total = tw__acc_get(&a, &sat);
  return sat;
}

/* Drop buckets that end at or before newest − W. */
static void tw__evict(tw__entry_t *e) {
  int64_t cutoff = e->newest_ts_ms - e->window_ms;
  uint32_t k = 0;
  while (k < e->nb && tw__bucket_end(e, e->buckets[k].idx) <= cutoff) k++;
  if (k == 0) return;
  memmove(e->buckets, e->buckets + k, (size_t)(e->nb - k) * sizeof e->buckets[0]);
  e->nb -= k;
  (void)tw__recompute_total(e);
}

static int tw__reserve(tw__entry_t *e) {
  if (e->nb < e->nb_alloc) return 0;
  if (e->nb_alloc >= e->nb_max) return TW_ESTATE; /* the cap proof says this cannot happen */
  uint32_t n = e->nb_alloc ? e->nb_alloc * 2 : 4;
  if (n > e->nb_max) n = e->nb_max;
  tw__bucket_t *b = realloc(e->buckets, (size_t)n * sizeof *b);
  if (b == NULL) return TW_ENOMEM;
  e->buckets = b;
  e->nb_alloc = n;
  return 0;
}

int tw__window_add(tw__entry_t *e, int64_t ts_ms, int64_t v, int *too_old) {
  int sat = 0;
  *too_old = 0;
  if (e->window_ms == 0) {
    if (!e->seen || ts_ms > e->newest_ts_ms) e->newest_ts_ms = ts_ms;
    e->seen = 1;
    e->total = tw__sat_add(e->total, v, &sat);
    return sat ? TW_EOVERFLOW : 0;
  }
  if (!e->seen) {
    e->newest_ts_ms = ts_ms;
    e->seen = 1;
  } else if (ts_ms > e->newest_ts_ms) {
    e->newest_ts_ms = ts_ms;
    tw__evict(e);
  } else if (ts_ms <= e->newest_ts_ms - e->window_ms) {
    *too_old = 1;
    return 0;
  }
  int64_t b = tw__bucket_of(e, ts_ms);
  uint32_t pos = e->nb;
  /* Search from the end: in-order events hit the last bucket or append. */
  while (pos > 0 && e->buckets[pos - 1].idx > b) pos--;
  if (pos > 0 && e->buckets[pos - 1].idx == b) {
    tw__bucket_t *bk = &e->buckets[pos - 1];
    bk->value = tw__sat_add(bk->value, v, &sat);
  } else {
    int rc = tw__reserve(e);
    if (rc != 0) return rc;
    memmove(e->buckets + pos + 1, e->buckets + pos, (size_t)(e->nb - pos) * sizeof e->buckets[0]);
    e->buckets[pos].idx = b;
    e->buckets[pos].value = v;
    e->nb++;
  }
  if (sat) {
    (void)tw__recompute_total(e);
    return TW_EOVERFLOW;
  }
  /* Once saturated, the running total no longer tracks the buckets: sum them again. */
  if (e->total == INT64_MAX || e->total == INT64_MIN)
    return tw__recompute_total(e) ? TW_EOVERFLOW : 0;
  e->total = tw__sat_add(e->total, v, &sat);
  if (sat && tw__recompute_total(e)) return TW_EOVERFLOW;
  return 0;
}

int64_t tw__window_value(const tw__entry_t *e, int64_t at_ms) {
  if (!e->seen) return 0;
  if (e->window_ms == 0 || at_ms == e->newest_ts_ms) return e->total;
  int sat = 0;
  tw__acc_t a = {0, 0};
  int64_t lo = at_ms - e->window_ms;
  for (uint32_t i = 0; i < e->nb; i++) {
    int64_t start = e->buckets[i].idx * e->g_ms - e->align_ms;
    if (start >= at_ms) break;
    if (start + e->g_ms > lo) tw__acc_add(&a, e->buckets[i].value);
  }
  return tw__acc_get(&a, &sat);
}

int tw__window_expired(const tw__entry_t *e, int64_t watermark_ms) {
  if (e->window_ms == 0 || !e->seen || e->key[0] != TW__KIND_AGG) return 0;
  if (e->nb == 0) return 1;
  return tw__bucket_end(e, e->buckets[e->nb - 1].idx) <= watermark_ms - e->window_ms;
}

/* ---- encoding: fixed little-endian header, then (u16 offset, zigzag varint value) pairs ---- */

static void tw__put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void tw__put_i64(unsigned char *p, int64_t v) {
  uint64_t u = (uint64_t)v;
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(u >> (8 * i));
}
static uint32_t tw__get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
  return v;
}
static int64_t tw__get_i64(const unsigned char *p) {
  uint64_t u = 0;
  for (int i = 0; i < 8; i++) u |= (uint64_t)p[i] << (8 * i);
  return (int64_t)u;
}

size_t tw__entry_encoded_max(const tw__entry_t *e) {
  if (e->key[0] == TW__KIND_COOL) return TW__COOL_BYTES;
  return TW__AGG_HEADER_BYTES + (size_t)e->nb * (2 + 10);
}

size_t tw__entry_encode(const tw__entry_t *e, unsigned char *out) {
  out[0] = TW__FORMAT_VERSION;
  out[2] = e->seen ? TW__FLAG_SEEN : 0;
  out[3] = 0;
  if (e->key[0] == TW__KIND_COOL) {
    out[1] = TW__KIND_COOL;
    tw__put_i64(out + 4, e->total);
    return TW__COOL_BYTES;
  }
  out[1] = e->fn;
  tw__put_u32(out + 4, e->nb);
  tw__put_i64(out + 8, e->window_ms);
  tw__put_i64(out + 16, e->newest_ts_ms);
  tw__put_i64(out + 24, e->window_ms == 0 ? e->total : 0);
  int64_t base = e->nb ? e->buckets[0].idx : 0;
  tw__put_i64(out + 32, base);
  tw__put_i64(out + 40, e->g_ms);
  tw__put_i64(out + 48, e->align_ms);
  size_t n = TW__AGG_HEADER_BYTES;
  for (uint32_t i = 0; i < e->nb; i++) {
    uint16_t off = (uint16_t)(e->buckets[i].idx - base);
    out[n++] = (unsigned char)off;
    out[n++] = (unsigned char)(off >> 8);
    uint64_t z = ((uint64_t)e->buckets[i].value << 1) ^ (uint64_t)(e->buckets[i].value >> 63);
    while (z >= 0x80) {
      out[n++] = (unsigned char)(z | 0x80);
      z >>= 7;
    }
    out[n++] = (unsigned char)z;
  }
  return n;
}

/* Move decoded buckets (aligned at stored_align) onto e->align_ms; see state_internal.h. */
static void tw__rebucket(tw__entry_t *e, int64_t stored_align_ms) {
  uint32_t k = 0;
  int sat = 0;
  for (uint32_t i = 0; i < e->nb; i++) {
    int64_t end = (e->buckets[i].idx + 1) * e->g_ms - stored_align_ms;
    int64_t t = end < e->newest_ts_ms ? end : e->newest_ts_ms;
    int64_t b = tw__bucket_of(e, t);
    if (k > 0 && e->buckets[k - 1].idx == b) {
      e->buckets[k - 1].value = tw__sat_add(e->buckets[k - 1].value, e->buckets[i].value, &sat);
    } else {
      e->buckets[k].idx = b;
      e->buckets[k].value = e->buckets[i].value;
      k++;
    }
  }
  e->nb = k;
}

int tw__entry_decode_ex(tw__entry_t *e, const unsigned char *p, size_t len, int *rebucketed) {
  if (rebucketed) *rebucketed = 0;
  if (len < 4 || (p[0] != 1 && p[0] != TW__FORMAT_VERSION) || p[3] != 0 ||
      (p[2] & ~TW__FLAG_SEEN) != 0)
    return TW_ESTATE;
  e->seen = (p[2] & TW__FLAG_SEEN) != 0;
  if (e->key[0] == TW__KIND_COOL) {
    if (len != TW__COOL_BYTES || p[1] != TW__KIND_COOL) return TW_ESTATE;
    e->total = tw__get_i64(p + 4);
    return 0;
  }
  size_t header = p[0] == 1 ? TW__AGG_HEADER_V1_BYTES : TW__AGG_HEADER_BYTES;
  if (len < header || p[1] != e->fn) return TW_ESTATE;
  uint32_t nb = tw__get_u32(p + 4);
  if (tw__get_i64(p + 8) != e->window_ms) return TW_ESTATE;
  e->newest_ts_ms = tw__get_i64(p + 16);
  int64_t base = tw__get_i64(p + 32);
  /* Version 1 had no zones and only automatic widths: g is the window's, alignment UTC. */
  int64_t g = e->window_ms == 0 ? 0 : tw__window_granularity_ms(e->window_ms), sa = 0;
  if (p[0] != 1) {
    g = tw__get_i64(p + 40);
    sa = tw__get_i64(p + 48);
  }
  if (g != e->g_ms || sa < 0 || (g == 0 ? sa != 0 : sa >= g)) return TW_ESTATE;
  /* Event times are bounded at entry (|ts| ≤ 2^61), which keeps idx·g and ts − W from wrapping. */
  int64_t lim = INT64_MAX / 4;
  if (e->seen ? (e->newest_ts_ms > lim || e->newest_ts_ms < -lim) : e->newest_ts_ms != 0)
    return TW_ESTATE;
  if (e->window_ms == 0) {
    if (nb != 0 || len != header || base != 0) return TW_ESTATE;
    e->total = tw__get_i64(p + 24);
    return 0;
  }
  if (nb > e->nb_max || (!e->seen && nb != 0) || tw__get_i64(p + 24) != 0) return TW_ESTATE;
  /* Buckets must lie where the invariants put them. */
  int64_t newest_b = e->seen ? tw__floor_div(e->newest_ts_ms - 1 + sa, g) : 0;
  if (nb != 0 && (base > newest_b || base < newest_b - (int64_t)e->nb_max)) return TW_ESTATE;
  if (nb != 0 && (base + 1) * g - sa <= e->newest_ts_ms - e->window_ms) return TW_ESTATE;
  if (nb > e->nb_alloc) {
    tw__bucket_t *b = realloc(e->buckets, (size_t)nb * sizeof *b);
    if (b == NULL) return TW_ENOMEM;
    e->buckets = b;
    e->nb_alloc = nb;
  }
  size_t n = header;
  int64_t prev = -1;
  for (uint32_t i = 0; i < nb; i++) {
    if (len - n < 3) return TW_ESTATE;
    int64_t off = (int64_t)p[n] | ((int64_t)p[n + 1] << 8);
    n += 2;
    if (off <= prev || base + off > newest_b) return TW_ESTATE;
    prev = off;
    uint64_t z = 0;
    int shift = 0;
    for (;;) {
      if (n >= len || shift > 63) return TW_ESTATE;
      unsigned char c = p[n++];
      if (shift == 63 && (c & 0x7e) != 0) return TW_ESTATE;
      z |= (uint64_t)(c & 0x7f) << shift;
      if ((c & 0x80) == 0) break;
      shift += 7;
    }
    e->buckets[i].idx = base + off;
    e->buckets[i].value = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
  }
  if (n != len) return TW_ESTATE;
  e->nb = nb;
  if (sa != e->align_ms) {
    tw__rebucket(e, sa);
    if (rebucketed) *rebucketed = 1;
  }
  (void)tw__recompute_total(e);
  return 0;
}

int tw__entry_decode(tw__entry_t *e, const unsigned char *p, size_t len) {
  return tw__entry_decode_ex(e, p, len, NULL);
}
