/*
 * window.c: sparse event-time buckets of one aggregate key, the aggregate functions over them,
 * and their on-disk encoding.
 *
 * Invariants of a windowed entry (window W, bucket width g, grid offset a, newest event time N,
 * n = W/g for calendar entries):
 *   - rows b[0..nb) are sorted by idx, strictly increasing; each got at least one event;
 *   - sliding: every bucket ends after N − W and starts before N, so nb ≤ ceil(W/g) + 1;
 *     calendar: every bucket idx is in (bucket(N) − n, bucket(N)], so nb ≤ n;
 *     `all`: one bucket, idx 0, once an event was seen;
 *   - the cache (c_count, c_val, c_carries, c_ts, and sketch row 0 of an approximate DISTINCT) is
 *     the aggregate of every stored bucket, i.e. the window ending at N, so the common query (at
 *     N) costs O(1) (DISTINCT: O(table) exact, one 256-register estimate approximate);
 *   - DISTINCT: either an exact table of ≤ TW_STATE_DISTINCT_EXACT rows, each inside the window
 *     of N (calendar rows name a stored bucket), or a HyperLogLog sketch row per bucket.
 * Work per add: O(1) for in-order events on a bucket in place (plus O(log 256 + 256) for an exact
 * DISTINCT insertion), O(nb_max) for an eviction or a late event; allocation only while the
 * arrays grow ×2 towards their caps, and once when DISTINCT switches to the sketch.
 * Decoding trusts nothing: every count, offset, varint, register and table row is checked,
 * errors give TW_ESTATE. Versions 1 and 2 (COUNT and SUM only) still load.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "state_internal.h"
#include "tw_error.h"

#define TW__FORMAT_VERSION 3
#define TW__AGG_HEADER_V1_BYTES 40
#define TW__AGG_HEADER_V2_BYTES 56
#define TW__AGG_HEADER_BYTES 56
#define TW__COOL_BYTES 12
#define TW__FLAG_SEEN 1u
#define TW__FLAG_CAL 2u
#define TW__FLAG_APPROX 4u
#define TW__DAY_MS 86400000LL
#define TW__TS_LIM ((int64_t)1 << 61) /* |event time| ≤ 2^61 at entry (state.c's limit) */

static const int64_t tw__widths_ms[] = {
    1000LL, 60000LL, 300000LL, 900000LL, 3600000LL, 21600000LL, 86400000LL,
};

int64_t tw__window_granularity_ms(int64_t window_ms) {
  for (size_t i = 0; i < sizeof tw__widths_ms / sizeof tw__widths_ms[0]; i++)
    if (window_ms <= 256 * tw__widths_ms[i]) return tw__widths_ms[i];
  /* Longer than 256 days: whole days, window/256 rounded up. */
  int64_t per_bucket = window_ms / 256 + (window_ms % 256 != 0);
  int64_t days = per_bucket / TW__DAY_MS + (per_bucket % TW__DAY_MS != 0);
  return days * TW__DAY_MS;
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
  if (spec->window_ms <= 0) return 0;
  return spec->bucket_ms > 0 ? spec->bucket_ms : tw__window_granularity_ms(spec->window_ms);
}

uint32_t tw__spec_cap(const tw_window_spec_t *spec) {
  if (spec->window_ms <= 0) return 1;
  if (spec->bucket_ms > 0) return (uint32_t)(spec->window_ms / spec->bucket_ms);
  int64_t g = tw__spec_granularity_ms(spec);
  return (uint32_t)(spec->window_ms / g + (spec->window_ms % g != 0) + 1);
}

int64_t tw__align_ms(int64_t tz_offset_ms, int64_t g_ms) {
  if (g_ms <= 0) return 0;
  int64_t r = tz_offset_ms % g_ms;
  return r < 0 ? r + g_ms : r;
}

int64_t tw__calendar_align_ms(int64_t tz_offset_ms, int64_t g_ms) {
  /* 1970-01-05 (day 4 of the epoch) was a Monday: weeks start at local day 4 + 7k. */
  if (g_ms > 0 && g_ms % (7 * TW__DAY_MS) == 0)
    return tw__align_ms(tz_offset_ms - 4 * TW__DAY_MS, g_ms);
  return tw__align_ms(tz_offset_ms, g_ms);
}

static uint8_t tw__fn_stride(int fn) {
  switch (fn) {
    case TW_AGG_COUNT:
    case TW_AGG_DISTINCT:
      return 2;
    case TW_AGG_FIRST:
    case TW_AGG_LAST:
      return 4;
    default:
      return 3;
  }
}

void tw__entry_init(tw__entry_t *e, const tw_window_spec_t *spec, int64_t tz_offset_ms) {
  e->fn = (uint8_t)spec->fn;
  e->stride = tw__fn_stride(spec->fn);
  e->window_ms = spec->window_ms;
  e->g_ms = tw__spec_granularity_ms(spec);
  e->nb_max = tw__spec_cap(spec);
  e->cal = spec->window_ms > 0 && spec->bucket_ms > 0;
  e->align_ms =
      e->cal ? tw__calendar_align_ms(tz_offset_ms, e->g_ms) : tw__align_ms(tz_offset_ms, e->g_ms);
  e->dx_min_t = INT64_MIN;
}

void tw__entry_release(tw__entry_t *e) {
  free(e->b);
  free(e->dx); /* or the sketch: one pointer */
  e->b = NULL;
  e->dx = NULL;
  e->nb = e->nb_alloc = 0;
  e->ndx = e->ndx_alloc = 0;
  e->approx = 0;
  e->dx_min_t = INT64_MIN;
}

size_t tw__entry_mem_bytes(const tw__entry_t *e) {
  size_t n = sizeof *e + e->key_len;
  n += (size_t)e->nb_alloc * e->stride * sizeof(int64_t);
  if (e->approx) n += ((size_t)e->nb_alloc + 1) * TW__HLL_M;
  n += (size_t)e->ndx_alloc * sizeof(tw__dx_t);
  return n;
}

/* ---- bucket grid ---- */

static int64_t tw__bucket_of(const tw__entry_t *e, int64_t ts_ms) {
  if (e->window_ms == 0) return 0;
  return tw__floor_div(ts_ms - (e->cal ? 0 : 1) + e->align_ms, e->g_ms);
}

static int64_t tw__bucket_start(const tw__entry_t *e, int64_t idx) {
  return e->window_ms == 0 ? 0 : idx * e->g_ms - e->align_ms;
}

/* Does bucket idx belong to the window ending at at_ms? */
static int tw__in_window(const tw__entry_t *e, int64_t idx, int64_t at_ms) {
  if (e->window_ms == 0) return 1;
  if (e->cal) {
    int64_t bt = tw__bucket_of(e, at_ms);
    return idx <= bt && idx > bt - (int64_t)e->nb_max;
  }
  int64_t start = tw__bucket_start(e, idx);
  return start < at_ms && start + e->g_ms > at_ms - e->window_ms;
}

/* Is an event at ts older than the whole window of the newest time? */
static int tw__too_old(const tw__entry_t *e, int64_t ts_ms) {
  if (e->window_ms == 0 || !e->seen || ts_ms >= e->newest_ts_ms) return 0;
  if (e->cal) return tw__bucket_of(e, ts_ms) <= tw__bucket_of(e, e->newest_ts_ms) - e->nb_max;
  return ts_ms <= e->newest_ts_ms - e->window_ms;
}

/* Does an exact DISTINCT row still belong to the window of the newest time? */
static int tw__dx_live(const tw__entry_t *e, const tw__dx_t *r) {
  if (e->window_ms == 0) return 1;
  if (e->cal) return r->t > tw__bucket_of(e, e->newest_ts_ms) - e->nb_max;
  return r->t > e->newest_ts_ms - e->window_ms;
}

/* ---- saturating arithmetic ---- */

static int64_t tw__sat_add(int64_t a, int64_t b, int *sat) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    *sat = 1;
    return b > 0 ? INT64_MAX : INT64_MIN;
  }
  return r;
}

/* Exact sum clamped to int64: the wrapped sum plus a count of 2^64 carries, so the order of the
 * terms does not matter. */
static void tw__acc_add(int64_t *wrapped, int32_t *carries, int64_t v) {
  if (__builtin_add_overflow(*wrapped, v, wrapped)) *carries += v > 0 ? 1 : -1;
}

static int64_t tw__acc_get(int64_t wrapped, int32_t carries, int *sat) {
  if (carries > 0) {
    *sat = 1;
    return INT64_MAX;
  }
  if (carries < 0) {
    *sat = 1;
    return INT64_MIN;
  }
  return wrapped;
}

/* ---- folding buckets into an aggregate ---- */

typedef struct tw__fold {
  int64_t count, val, ts;
  int32_t carries;
  uint32_t n; /* buckets folded */
} tw__fold_t;

/* Does (ts, v) win over the fold's (ts, val) for FIRST / LAST? Ties go to the smaller value for
 * FIRST and the larger for LAST, so the result does not depend on arrival order. */
static int tw__wins(int fn, int64_t ts, int64_t v, int64_t cur_ts, int64_t cur_v) {
  if (fn == TW_AGG_FIRST) return ts < cur_ts || (ts == cur_ts && v < cur_v);
  return ts > cur_ts || (ts == cur_ts && v > cur_v);
}

/* Fold one bucket state (count, value, ts; value and ts as the function uses them). */
static void tw__fold_one(tw__fold_t *f, int fn, int64_t count, int64_t v, int64_t ts) {
  int sat = 0;
  f->count = tw__sat_add(f->count, count, &sat);
  switch (fn) {
    case TW_AGG_SUM:
    case TW_AGG_AVG:
      tw__acc_add(&f->val, &f->carries, v);
      break;
    case TW_AGG_MIN:
      if (f->n == 0 || v < f->val) f->val = v;
      break;
    case TW_AGG_MAX:
      if (f->n == 0 || v > f->val) f->val = v;
      break;
    case TW_AGG_FIRST:
    case TW_AGG_LAST:
      if (f->n == 0 || tw__wins(fn, ts, v, f->ts, f->val)) {
        f->val = v;
        f->ts = ts;
      }
      break;
    default:
      break;
  }
  f->n++;
}

static void tw__fold_row(tw__fold_t *f, const tw__entry_t *e, uint32_t i) {
  const int64_t *r = tw__bk(e, i);
  tw__fold_one(f, e->fn, r[TW__B_COUNT], e->stride > 2 ? r[TW__B_VAL] : 0,
               e->stride > 3 ? r[TW__B_TS] : 0);
}

static void tw__fold_out(const tw__fold_t *f, int fn, tw_agg_out_t *out) {
  int sat = 0;
  out->present = f->n > 0;
  out->count = f->count;
  switch (fn) {
    case TW_AGG_COUNT:
      out->value = f->count;
      break;
    case TW_AGG_SUM:
    case TW_AGG_AVG:
      out->value = tw__acc_get(f->val, f->carries, &sat);
      break;
    case TW_AGG_DISTINCT:
      break; /* the caller fills value from the table or sketch */
    default:
      out->value = f->n > 0 ? f->val : 0;
      break;
  }
}

static void tw__cache_set(tw__entry_t *e, const tw__fold_t *f) {
  e->c_count = f->count;
  e->c_val = f->val;
  e->c_carries = f->carries;
  e->c_ts = f->ts;
}

/* Sketch row of bucket i. Row 0 of e->hll is the merge of every stored bucket's row (the window
 * at the newest time), so that common query reads one row instead of merging nb. */
static uint8_t *tw__hll_row(const tw__entry_t *e, uint32_t i) {
  return e->hll + (size_t)(i + 1) * TW__HLL_M;
}

static void tw__cache_recompute(tw__entry_t *e) {
  tw__fold_t f = {0, 0, 0, 0, 0};
  for (uint32_t i = 0; i < e->nb; i++) tw__fold_row(&f, e, i);
  tw__cache_set(e, &f);
  if (!e->approx) return;
  memset(e->hll, 0, TW__HLL_M);
  for (uint32_t i = 0; i < e->nb; i++) {
    const uint8_t *row = tw__hll_row(e, i);
    for (int j = 0; j < TW__HLL_M; j++)
      if (row[j] > e->hll[j]) e->hll[j] = row[j];
  }
}

/* ---- HyperLogLog (p = 8, 64-bit hashes) ---- */

static void tw__hll_add(uint8_t *reg, uint64_t h) {
  uint32_t j = (uint32_t)(h >> 56);
  uint64_t w = h << 8;
  uint8_t r = w == 0 ? TW__HLL_RANK_MAX : (uint8_t)(__builtin_clzll(w) + 1);
  if (r > reg[j]) reg[j] = r;
}

/* Flajolet et al. 2007 with linear counting below 2.5·m: standard error 1.04/√256 ≈ 6.5%.
 * The estimate is cut to events, the events that fed the registers: n events hold at most n
 * distinct values, while the raw estimate of a small set can exceed it (and registers at the
 * largest rank estimate about 2.7e19, beyond int64; cutting in double avoids that overflow). */
static int64_t tw__hll_estimate(const uint8_t *reg, int64_t events) {
  double sum = 0.0;
  int zeros = 0;
  for (int j = 0; j < TW__HLL_M; j++) {
    sum += 1.0 / (double)((uint64_t)1 << reg[j]);
    zeros += reg[j] == 0;
  }
  const double m = TW__HLL_M;
  double est = 0.7213 / (1.0 + 1.079 / m) * m * m / sum;
  if (est <= 2.5 * m && zeros > 0) est = m * log(m / zeros);
  if (events <= 0) return 0;
  if (!(est + 0.5 < (double)events)) return events; /* (double)events ≤ 2^63: no overflow */
  return (int64_t)(est + 0.5);
}

/* ---- DISTINCT exact table ---- */

static int tw__dx_cmp(uint64_t h, int64_t t, const tw__dx_t *r) {
  if (h != r->hash) return h < r->hash ? -1 : 1;
  if (t != r->t) return t < r->t ? -1 : 1;
  return 0;
}

/* First row ≥ (h, t). */
static uint32_t tw__dx_lower(const tw__entry_t *e, uint64_t h, int64_t t) {
  uint32_t lo = 0, hi = e->ndx;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (tw__dx_cmp(h, t, &e->dx[mid]) > 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Drop table rows that left the window of the newest time. */
static void tw__dx_evict(tw__entry_t *e) {
  tw__dx_t oldest = {0, e->dx_min_t};  /* INT64_MIN (not known) is never live: a scan */
  if (tw__dx_live(e, &oldest)) return; /* every row is at least this new */
  uint32_t k = 0;
  int64_t min_t = INT64_MAX;
  for (uint32_t i = 0; i < e->ndx; i++) {
    if (!tw__dx_live(e, &e->dx[i])) continue;
    if (e->dx[i].t < min_t) min_t = e->dx[i].t;
    e->dx[k++] = e->dx[i];
  }
  e->ndx = (uint16_t)k;
  e->dx_min_t = min_t;
}

/* Distinct hashes of the table in the window ending at at_ms. */
static int64_t tw__dx_count(const tw__entry_t *e, int64_t at_ms) {
  int64_t n = 0;
  if (e->window_ms == 0) return e->ndx;
  int64_t bt = e->cal ? tw__bucket_of(e, at_ms) : 0;
  for (uint32_t i = 0; i < e->ndx; i++) {
    const tw__dx_t *r = &e->dx[i];
    int in = e->cal ? r->t <= bt && r->t > bt - (int64_t)e->nb_max
                    : r->t <= at_ms && r->t > at_ms - e->window_ms;
    if (!in) continue;
    n++;
    /* Calendar rows of one hash are adjacent: count the hash once. */
    while (i + 1 < e->ndx && e->dx[i + 1].hash == r->hash) i++;
  }
  return n;
}

/* Position of the bucket with the smallest idx ≥ idx (nb when none). */
static uint32_t tw__bucket_pos(const tw__entry_t *e, int64_t idx) {
  uint32_t lo = 0, hi = e->nb;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (tw__bk(e, mid)[TW__B_IDX] < idx)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

/* Move the exact table into per-bucket sketch rows (hll: zeroed, nb_alloc + 1 rows). A sliding
 * row goes to its time's bucket, or the next stored one if a re-bucketing merged it. */
static void tw__dx_to_sketch(tw__entry_t *e, uint8_t *hll) {
  tw__dx_t *dx = e->dx;
  uint32_t ndx = e->ndx;
  e->hll = hll;
  e->approx = 1;
  for (uint32_t i = 0; i < ndx; i++) {
    int64_t idx = e->cal ? dx[i].t : tw__bucket_of(e, dx[i].t);
    uint32_t pos = tw__bucket_pos(e, idx);
    if (pos >= e->nb) pos = e->nb - 1;
    tw__hll_add(tw__hll_row(e, pos), dx[i].hash);
    tw__hll_add(e->hll, dx[i].hash);
  }
  free(dx);
  e->ndx = e->ndx_alloc = 0;
}

/* ---- add ---- */

/* Drop buckets (and table rows) that left the window of the newest time. */
static void tw__evict(tw__entry_t *e) {
  if (e->window_ms == 0) return;
  uint32_t k = 0;
  if (e->cal) {
    int64_t cut = tw__bucket_of(e, e->newest_ts_ms) - e->nb_max;
    while (k < e->nb && tw__bk(e, k)[TW__B_IDX] <= cut) k++;
  } else {
    int64_t cutoff = e->newest_ts_ms - e->window_ms;
    while (k < e->nb && tw__bucket_start(e, tw__bk(e, k)[TW__B_IDX]) + e->g_ms <= cutoff) k++;
  }
  if (e->fn == TW_AGG_DISTINCT && !e->approx) tw__dx_evict(e);
  if (k == 0) return;
  memmove(e->b, tw__bk(e, k), (size_t)(e->nb - k) * e->stride * sizeof(int64_t));
  if (e->approx) memmove(tw__hll_row(e, 0), tw__hll_row(e, k), (size_t)(e->nb - k) * TW__HLL_M);
  e->nb -= k;
  if (e->nb == 0 && e->approx) {
    /* The window emptied: count exactly again. */
    free(e->hll);
    e->hll = NULL;
    e->approx = 0;
  }
  tw__cache_recompute(e);
}

/* Room for one more bucket row (and sketch row). */
static int tw__reserve(tw__entry_t *e) {
  if (e->nb < e->nb_alloc) return 0;
  if (e->nb_alloc >= e->nb_max) return TW_ESTATE; /* the cap proof says this cannot happen */
  uint32_t n = e->nb_alloc ? e->nb_alloc * 2 : 1;
  if (n > e->nb_max) n = e->nb_max;
  if (e->approx) {
    uint8_t *h = realloc(e->hll, ((size_t)n + 1) * TW__HLL_M);
    if (h == NULL) return TW_ENOMEM;
    e->hll = h;
  }
  int64_t *b = realloc(e->b, (size_t)n * e->stride * sizeof *b);
  if (b == NULL) return TW_ENOMEM; /* a grown sketch array is harmless */
  e->b = b;
  e->nb_alloc = n;
  return 0;
}

/* What a DISTINCT add will do to the table, decided (and allocated) before anything changes. */
enum { TW__DX_NONE, TW__DX_UPDATE, TW__DX_INSERT, TW__DX_SWITCH };

static int tw__dx_prepare(tw__entry_t *e, uint64_t h, int64_t t, uint32_t *pos, int *op,
                          uint8_t **hll) {
  *op = TW__DX_NONE;
  if (e->approx) return 0;
  if (e->cal) {
    *pos = tw__dx_lower(e, h, t);
    if (*pos < e->ndx && e->dx[*pos].hash == h && e->dx[*pos].t == t) return 0; /* seen there */
  } else {
    *pos = tw__dx_lower(e, h, INT64_MIN);
    if (*pos < e->ndx && e->dx[*pos].hash == h) {
      *op = TW__DX_UPDATE;
      return 0;
    }
  }
  if (e->ndx < TW_STATE_DISTINCT_EXACT) {
    if (e->ndx == e->ndx_alloc) {
      uint32_t n = e->ndx_alloc ? e->ndx_alloc * 2u : 4u;
      if (n > TW_STATE_DISTINCT_EXACT) n = TW_STATE_DISTINCT_EXACT;
      tw__dx_t *d = realloc(e->dx, n * sizeof *d);
      if (d == NULL) return TW_ENOMEM;
      e->dx = d;
      e->ndx_alloc = (uint16_t)n;
    }
    *op = TW__DX_INSERT;
    return 0;
  }
  *hll = calloc((size_t)e->nb_alloc + 1, TW__HLL_M);
  if (*hll == NULL) return TW_ENOMEM;
  *op = TW__DX_SWITCH;
  return 0;
}

int tw__window_add(tw__entry_t *e, int64_t ts_ms, int64_t v, int *too_old) {
  int sat = 0, rc;
  *too_old = 0;
  if (tw__too_old(e, ts_ms)) {
    *too_old = 1;
    return 0;
  }
  if (!e->seen || ts_ms > e->newest_ts_ms) {
    e->newest_ts_ms = ts_ms;
    e->seen = 1;
    tw__evict(e);
  }
  int64_t idx = tw__bucket_of(e, ts_ms);
  uint32_t pos = e->nb;
  /* Search from the end: in-order events hit the last bucket or append. */
  while (pos > 0 && tw__bk(e, pos - 1)[TW__B_IDX] > idx) pos--;
  int found = pos > 0 && tw__bk(e, pos - 1)[TW__B_IDX] == idx;
  if (!found && (rc = tw__reserve(e)) != 0) return rc;
  uint32_t dpos = 0;
  int dop = TW__DX_NONE;
  uint8_t *new_hll = NULL;
  uint64_t h = (uint64_t)v;
  int64_t dt = e->cal ? idx : ts_ms;
  if (e->fn == TW_AGG_DISTINCT && (rc = tw__dx_prepare(e, h, dt, &dpos, &dop, &new_hll)) != 0)
    return rc;
  /* Nothing below fails. */
  int64_t *r;
  if (found) {
    pos--;
    r = tw__bk(e, pos);
  } else {
    memmove(tw__bk(e, pos + 1), tw__bk(e, pos), (size_t)(e->nb - pos) * e->stride * sizeof *r);
    if (e->approx) {
      uint8_t *row = tw__hll_row(e, pos);
      memmove(row + TW__HLL_M, row, (size_t)(e->nb - pos) * TW__HLL_M);
      memset(row, 0, TW__HLL_M);
    }
    e->nb++;
    r = tw__bk(e, pos);
    r[TW__B_IDX] = idx;
    r[TW__B_COUNT] = 0;
  }
  int first = r[TW__B_COUNT] == 0 && !found;
  r[TW__B_COUNT] = tw__sat_add(r[TW__B_COUNT], 1, &sat);
  int bucket_sat = 0;
  switch (e->fn) {
    case TW_AGG_SUM:
    case TW_AGG_AVG:
      r[TW__B_VAL] = first ? v : tw__sat_add(r[TW__B_VAL], v, &bucket_sat);
      break;
    case TW_AGG_MIN:
      if (first || v < r[TW__B_VAL]) r[TW__B_VAL] = v;
      break;
    case TW_AGG_MAX:
      if (first || v > r[TW__B_VAL]) r[TW__B_VAL] = v;
      break;
    case TW_AGG_FIRST:
    case TW_AGG_LAST:
      if (first || tw__wins(e->fn, ts_ms, v, r[TW__B_TS], r[TW__B_VAL])) {
        r[TW__B_VAL] = v;
        r[TW__B_TS] = ts_ms;
      }
      break;
    case TW_AGG_DISTINCT:
      if (dop == TW__DX_UPDATE) {
        if (ts_ms > e->dx[dpos].t) e->dx[dpos].t = ts_ms;
      } else if (dop == TW__DX_INSERT) {
        memmove(e->dx + dpos + 1, e->dx + dpos, (size_t)(e->ndx - dpos) * sizeof e->dx[0]);
        e->dx[dpos].hash = h;
        e->dx[dpos].t = dt;
        e->ndx++;
        if (dt < e->dx_min_t) e->dx_min_t = dt;
      } else if (dop == TW__DX_SWITCH) {
        tw__dx_to_sketch(e, new_hll);
      }
      if (e->approx) {
        tw__hll_add(tw__hll_row(e, pos), h);
        tw__hll_add(e->hll, h);
      }
      break;
    default:
      break;
  }
  /* The cache: merge the event, unless its bucket saturated (the window sum is then the sum of
   * the clamped buckets, no longer of the events): then fold the buckets again. */
  tw__fold_t f = {e->c_count, e->c_val, e->c_ts, e->c_carries, e->nb - (found ? 0u : 1u)};
  if (bucket_sat) {
    tw__cache_recompute(e);
  } else {
    tw__fold_one(&f, e->fn, 1, v, ts_ms);
    tw__cache_set(e, &f);
  }
  if (e->fn == TW_AGG_SUM || e->fn == TW_AGG_AVG) {
    int wsat = 0;
    (void)tw__acc_get(e->c_val, e->c_carries, &wsat);
    if (bucket_sat || wsat) return TW_EOVERFLOW;
  }
  return 0;
}

/* ---- queries ---- */

void tw__window_get(const tw__entry_t *e, int64_t at_ms, tw_agg_out_t *out) {
  memset(out, 0, sizeof *out);
  if (!e->seen || e->key[0] != TW__KIND_AGG) return;
  tw__fold_t f = {0, 0, 0, 0, 0};
  uint8_t merged[TW__HLL_M];
  const uint8_t *sketch = e->hll; /* row 0: every stored bucket */
  if (e->window_ms == 0 || at_ms == e->newest_ts_ms) {
    f = (tw__fold_t){e->c_count, e->c_val, e->c_ts, e->c_carries, e->nb};
  } else {
    if (e->approx) {
      memset(merged, 0, sizeof merged);
      sketch = merged;
    }
    for (uint32_t i = 0; i < e->nb; i++) {
      if (!tw__in_window(e, tw__bk(e, i)[TW__B_IDX], at_ms)) continue;
      tw__fold_row(&f, e, i);
      if (e->approx) {
        const uint8_t *row = tw__hll_row(e, i);
        for (int j = 0; j < TW__HLL_M; j++)
          if (row[j] > merged[j]) merged[j] = row[j];
      }
    }
  }
  tw__fold_out(&f, e->fn, out);
  if (e->fn == TW_AGG_DISTINCT) {
    if (!e->approx) {
      out->value = tw__dx_count(e, at_ms);
    } else if (f.n > 0) {
      out->approximate = true;
      out->value = tw__hll_estimate(sketch, f.count);
    }
    /* An approximate key with no bucket in this window counts 0 exactly, as it would after
     * tw_state_evict dropped it or a newer event emptied its window: the flag does not depend
     * on when eviction ran. */
  }
}

int64_t tw__window_value(const tw__entry_t *e, int64_t at_ms) {
  tw_agg_out_t o;
  tw__window_get(e, at_ms, &o);
  return o.value;
}

void tw__window_series(const tw__entry_t *e, int64_t at_ms, tw_agg_out_t *out) {
  uint32_t n = e->nb_max;
  int64_t first = tw__bucket_of(e, at_ms) - (int64_t)n + 1;
  for (uint32_t i = 0; i < n; i++) {
    memset(&out[i], 0, sizeof out[i]);
    out[i].bucket_ms = tw__bucket_start(e, first + i);
  }
  if (!e->seen) return;
  for (uint32_t i = 0; i < e->nb; i++) {
    int64_t k = tw__bk(e, i)[TW__B_IDX] - first;
    if (k < 0 || k >= (int64_t)n) continue;
    tw__fold_t f = {0, 0, 0, 0, 0};
    tw__fold_row(&f, e, i);
    int64_t start = out[k].bucket_ms;
    tw__fold_out(&f, e->fn, &out[k]);
    out[k].bucket_ms = start;
    if (e->approx) {
      out[k].approximate = true;
      out[k].value = tw__hll_estimate(tw__hll_row(e, i), out[k].count);
    }
  }
  if (e->fn == TW_AGG_DISTINCT && !e->approx) {
    /* One calendar row per (hash, bucket): a bucket's distinct count is its rows. */
    for (uint32_t i = 0; i < e->ndx; i++) {
      int64_t k = e->dx[i].t - first;
      if (k >= 0 && k < (int64_t)n) out[k].value++;
    }
  }
}

int tw__window_expired(const tw__entry_t *e, int64_t watermark_ms) {
  if (e->window_ms == 0 || !e->seen || e->key[0] != TW__KIND_AGG) return 0;
  if (e->nb == 0) return 1;
  int64_t last = tw__bk(e, e->nb - 1)[TW__B_IDX];
  if (e->cal) return last <= tw__bucket_of(e, watermark_ms) - (int64_t)e->nb_max;
  return tw__bucket_start(e, last) + e->g_ms <= watermark_ms - e->window_ms;
}

/* ---- encoding ----
 * Version 3, little-endian 56-byte header: version, fn, flags (seen, calendar, approximate),
 * reserved 0, bucket count (u32), window_ms, newest event time, bucket width, grid offset, base
 * bucket index (i64 each), table rows (u32), reserved u32 0. Then per bucket: u16 offset from the
 * base, count (varint), [value (zigzag varint)], [event time − bucket start (zigzag varint)];
 * then 256 register bytes per bucket when approximate; then per table row the hash (u64) and
 * its distance back from the newest time (sliding, `all`) or newest bucket (calendar) (varint).
 */

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

static size_t tw__put_uvar(unsigned char *out, uint64_t z) {
  size_t n = 0;
  while (z >= 0x80) {
    out[n++] = (unsigned char)(z | 0x80);
    z >>= 7;
  }
  out[n++] = (unsigned char)z;
  return n;
}

static size_t tw__put_zz(unsigned char *out, int64_t v) {
  return tw__put_uvar(out, ((uint64_t)v << 1) ^ (uint64_t)(v >> 63));
}

/* Read a varint at p[*n..len); 0 or -1 (truncated, longer than 64 bits). */
static int tw__get_uvar(const unsigned char *p, size_t len, size_t *n, uint64_t *out) {
  uint64_t z = 0;
  int shift = 0;
  for (;;) {
    if (*n >= len || shift > 63) return -1;
    unsigned char c = p[(*n)++];
    if (shift == 63 && (c & 0x7e) != 0) return -1;
    z |= (uint64_t)(c & 0x7f) << shift;
    if ((c & 0x80) == 0) break;
    shift += 7;
  }
  *out = z;
  return 0;
}

static int tw__get_zz(const unsigned char *p, size_t len, size_t *n, int64_t *out) {
  uint64_t z;
  if (tw__get_uvar(p, len, n, &z) != 0) return -1;
  *out = (int64_t)(z >> 1) ^ -(int64_t)(z & 1);
  return 0;
}

size_t tw__entry_encoded_max(const tw__entry_t *e) {
  if (e->key[0] == TW__KIND_COOL) return TW__COOL_BYTES;
  return TW__AGG_HEADER_BYTES + (size_t)e->nb * (2 + 3 * 10) +
         (e->approx ? (size_t)e->nb * TW__HLL_M : 0) + (size_t)e->ndx * (8 + 10);
}

size_t tw__entry_encode(const tw__entry_t *e, unsigned char *out) {
  out[0] = TW__FORMAT_VERSION;
  out[2] = e->seen ? TW__FLAG_SEEN : 0;
  out[3] = 0;
  if (e->key[0] == TW__KIND_COOL) {
    out[1] = TW__KIND_COOL;
    tw__put_i64(out + 4, e->newest_ts_ms);
    return TW__COOL_BYTES;
  }
  out[1] = e->fn;
  out[2] |= (e->cal ? TW__FLAG_CAL : 0) | (e->approx ? TW__FLAG_APPROX : 0);
  int64_t base = e->nb ? tw__bk(e, 0)[TW__B_IDX] : 0;
  tw__put_u32(out + 4, e->nb);
  tw__put_i64(out + 8, e->window_ms);
  tw__put_i64(out + 16, e->newest_ts_ms);
  tw__put_i64(out + 24, e->g_ms);
  tw__put_i64(out + 32, e->align_ms);
  tw__put_i64(out + 40, base);
  tw__put_u32(out + 48, e->ndx);
  tw__put_u32(out + 52, 0);
  size_t n = TW__AGG_HEADER_BYTES;
  for (uint32_t i = 0; i < e->nb; i++) {
    const int64_t *r = tw__bk(e, i);
    uint16_t off = (uint16_t)(r[TW__B_IDX] - base);
    out[n++] = (unsigned char)off;
    out[n++] = (unsigned char)(off >> 8);
    n += tw__put_uvar(out + n, (uint64_t)r[TW__B_COUNT]);
    if (e->stride > 2) n += tw__put_zz(out + n, r[TW__B_VAL]);
    if (e->stride > 3) n += tw__put_zz(out + n, r[TW__B_TS] - tw__bucket_start(e, r[TW__B_IDX]));
  }
  if (e->approx) {
    memcpy(out + n, tw__hll_row(e, 0), (size_t)e->nb * TW__HLL_M);
    n += (size_t)e->nb * TW__HLL_M;
  }
  int64_t ref = e->cal ? tw__bucket_of(e, e->newest_ts_ms) : e->newest_ts_ms;
  for (uint32_t i = 0; i < e->ndx; i++) {
    tw__put_i64(out + n, (int64_t)e->dx[i].hash);
    n += 8;
    n += tw__put_uvar(out + n, (uint64_t)(ref - e->dx[i].t));
  }
  return n;
}

/* Where a bucket stored on grid offset stored_align_ms goes: the bucket holding the earlier of
 * its last instant and the newest time. Monotone in idx, and a function of idx alone. */
static int64_t tw__rebucket_idx(const tw__entry_t *e, int64_t idx, int64_t stored_align_ms) {
  int64_t last = (idx + 1) * e->g_ms - stored_align_ms - (e->cal ? 1 : 0);
  return tw__bucket_of(e, last < e->newest_ts_ms ? last : e->newest_ts_ms);
}

/* Move buckets stored on grid offset stored_align_ms onto e->align_ms. Rows only merge (nb
 * shrinks), so nothing is allocated; calendar table rows follow their buckets, and rows of one
 * hash that now share a bucket merge. */
static void tw__rebucket(tw__entry_t *e, int64_t stored_align_ms) {
  uint32_t k = 0;
  for (uint32_t i = 0; i < e->nb; i++) {
    int64_t *r = tw__bk(e, i);
    int64_t b = tw__rebucket_idx(e, r[TW__B_IDX], stored_align_ms);
    if (k > 0 && tw__bk(e, k - 1)[TW__B_IDX] == b) {
      int64_t *d = tw__bk(e, k - 1);
      int sat = 0;
      d[TW__B_COUNT] = tw__sat_add(d[TW__B_COUNT], r[TW__B_COUNT], &sat);
      switch (e->fn) {
        case TW_AGG_SUM:
        case TW_AGG_AVG:
          d[TW__B_VAL] = tw__sat_add(d[TW__B_VAL], r[TW__B_VAL], &sat);
          break;
        case TW_AGG_MIN:
          if (r[TW__B_VAL] < d[TW__B_VAL]) d[TW__B_VAL] = r[TW__B_VAL];
          break;
        case TW_AGG_MAX:
          if (r[TW__B_VAL] > d[TW__B_VAL]) d[TW__B_VAL] = r[TW__B_VAL];
          break;
        case TW_AGG_FIRST:
        case TW_AGG_LAST:
          if (tw__wins(e->fn, r[TW__B_TS], r[TW__B_VAL], d[TW__B_TS], d[TW__B_VAL])) {
            d[TW__B_VAL] = r[TW__B_VAL];
            d[TW__B_TS] = r[TW__B_TS];
          }
          break;
        default:
          break;
      }
      if (e->approx) {
        uint8_t *dst = tw__hll_row(e, k - 1), *src = tw__hll_row(e, i);
        for (int j = 0; j < TW__HLL_M; j++)
          if (src[j] > dst[j]) dst[j] = src[j];
      }
      continue;
    }
    if (k != i) {
      memmove(tw__bk(e, k), r, (size_t)e->stride * sizeof *r);
      if (e->approx) memmove(tw__hll_row(e, k), tw__hll_row(e, i), TW__HLL_M);
    }
    tw__bk(e, k)[TW__B_IDX] = b;
    k++;
  }
  e->nb = k;
  if (!e->cal || e->approx || e->ndx == 0) return;
  e->dx_min_t = INT64_MIN; /* row times move: not known until the next eviction scan */
  for (uint32_t i = 0; i < e->ndx; i++)
    e->dx[i].t = tw__rebucket_idx(e, e->dx[i].t, stored_align_ms);
  /* The map is monotone, so rows stay sorted; rows of one hash that now share a bucket merge. */
  uint32_t m = 1;
  for (uint32_t i = 1; i < e->ndx; i++)
    if (tw__dx_cmp(e->dx[i].hash, e->dx[i].t, &e->dx[m - 1]) != 0) e->dx[m++] = e->dx[i];
  e->ndx = (uint16_t)m;
}

/* Allocate rows for nb buckets (and sketch rows when approximate). */
static int tw__alloc_rows(tw__entry_t *e, uint32_t nb, int approx) {
  if (nb == 0) return 0;
  int64_t *b = malloc((size_t)nb * e->stride * sizeof *b);
  if (b == NULL) return TW_ENOMEM;
  e->b = b;
  e->nb_alloc = nb;
  if (approx) {
    e->hll = calloc((size_t)nb + 1, TW__HLL_M);
    if (e->hll == NULL) return TW_ENOMEM;
  }
  return 0;
}

/* Versions 1 and 2: COUNT and SUM; a fixed header, then (u16 offset, zigzag value) pairs. The
 * buckets were sliding ones; under a calendar spec they are read as [start, end) of the same
 * grid. `all` entries kept their running value in the header. Event counts were not stored: a
 * COUNT bucket's count is its value, a SUM bucket's count is unknown (0). */
static int tw__decode_legacy(tw__entry_t *e, const unsigned char *p, size_t len, int64_t *sa_out) {
  size_t header = p[0] == 1 ? TW__AGG_HEADER_V1_BYTES : TW__AGG_HEADER_V2_BYTES;
  if (len < header || p[1] != e->fn || (e->fn != TW_AGG_COUNT && e->fn != TW_AGG_SUM))
    return TW_ESTATE;
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
  if (e->seen ? (e->newest_ts_ms > TW__TS_LIM || e->newest_ts_ms < -TW__TS_LIM)
              : e->newest_ts_ms != 0)
    return TW_ESTATE;
  *sa_out = sa;
  if (e->window_ms == 0) {
    int64_t total = tw__get_i64(p + 24);
    if (nb != 0 || len != header || base != 0) return TW_ESTATE;
    if (!e->seen) return total == 0 ? 0 : TW_ESTATE;
    if (e->fn == TW_AGG_COUNT && total < 1) return TW_ESTATE;
    if (tw__alloc_rows(e, 1, 0) != 0) return TW_ENOMEM;
    int64_t *r = tw__bk(e, 0);
    r[TW__B_IDX] = 0;
    r[TW__B_COUNT] = e->fn == TW_AGG_COUNT ? total : 0;
    if (e->stride > 2) r[TW__B_VAL] = total;
    e->nb = 1;
    return 0;
  }
  /* Sliding capacity of the stored grid; calendar entries drop what their window excludes. */
  uint32_t cap = tw__window_cap(e->window_ms);
  if (e->cal) cap = (uint32_t)(e->window_ms / g + 1);
  if (nb > cap || (!e->seen && nb != 0) || tw__get_i64(p + 24) != 0) return TW_ESTATE;
  int64_t newest_b = e->seen ? tw__floor_div(e->newest_ts_ms - 1 + sa, g) : 0;
  if (nb != 0 && (base > newest_b || base < newest_b - (int64_t)cap)) return TW_ESTATE;
  if (nb != 0 && (base + 1) * g - sa <= e->newest_ts_ms - e->window_ms) return TW_ESTATE;
  if (tw__alloc_rows(e, nb, 0) != 0) return TW_ENOMEM;
  size_t n = header;
  int64_t prev = -1;
  for (uint32_t i = 0; i < nb; i++) {
    if (len - n < 3) return TW_ESTATE;
    int64_t off = (int64_t)p[n] | ((int64_t)p[n + 1] << 8);
    n += 2;
    if (off <= prev || base + off > newest_b) return TW_ESTATE;
    prev = off;
    int64_t v;
    if (tw__get_zz(p, len, &n, &v) != 0) return TW_ESTATE;
    if (e->fn == TW_AGG_COUNT && v < 1) return TW_ESTATE;
    int64_t *r = tw__bk(e, i);
    r[TW__B_IDX] = base + off;
    r[TW__B_COUNT] = e->fn == TW_AGG_COUNT ? v : 0;
    if (e->stride > 2) r[TW__B_VAL] = v;
  }
  if (n != len) return TW_ESTATE;
  e->nb = nb;
  return 0;
}

static int tw__decode_v3(tw__entry_t *e, const unsigned char *p, size_t len, int64_t *sa_out) {
  if (len < TW__AGG_HEADER_BYTES || p[1] != e->fn) return TW_ESTATE;
  int cal = (p[2] & TW__FLAG_CAL) != 0, approx = (p[2] & TW__FLAG_APPROX) != 0;
  uint32_t nb = tw__get_u32(p + 4), ndx = tw__get_u32(p + 48);
  int64_t g = tw__get_i64(p + 24), sa = tw__get_i64(p + 32), base = tw__get_i64(p + 40);
  e->newest_ts_ms = tw__get_i64(p + 16);
  if (cal != e->cal || tw__get_i64(p + 8) != e->window_ms || g != e->g_ms ||
      tw__get_u32(p + 52) != 0)
    return TW_ESTATE;
  if (sa < 0 || (g == 0 ? sa != 0 : sa >= g)) return TW_ESTATE;
  if (e->seen ? (e->newest_ts_ms > TW__TS_LIM || e->newest_ts_ms < -TW__TS_LIM)
              : (e->newest_ts_ms != 0 || nb != 0 || ndx != 0 || approx))
    return TW_ESTATE;
  e->align_ms = sa; /* bucket times below are on the stored grid; the caller moves them */
  if (approx ? (e->fn != TW_AGG_DISTINCT || ndx != 0 || nb == 0)
             : (ndx > TW_STATE_DISTINCT_EXACT || (ndx != 0 && e->fn != TW_AGG_DISTINCT)))
    return TW_ESTATE;
  *sa_out = sa;
  int64_t newest_b = 0, lo_b = 0; /* buckets must lie in [lo_b, newest_b] */
  if (e->window_ms == 0) {
    if (nb != (e->seen ? 1u : 0u) || base != 0) return TW_ESTATE;
  } else if (e->seen) {
    newest_b = tw__floor_div(e->newest_ts_ms - (cal ? 0 : 1) + sa, g);
    /* Sliding: the bucket must end after newest − W; calendar: within the last n buckets. */
    lo_b = cal ? newest_b - (int64_t)e->nb_max + 1
               : tw__floor_div(e->newest_ts_ms - e->window_ms + sa, g);
    if (nb > e->nb_max || (nb != 0 && (base < lo_b || base > newest_b))) return TW_ESTATE;
  }
  if (tw__alloc_rows(e, nb, approx) != 0) return TW_ENOMEM;
  size_t n = TW__AGG_HEADER_BYTES;
  int64_t prev = -1;
  for (uint32_t i = 0; i < nb; i++) {
    if (len - n < 3) return TW_ESTATE;
    int64_t off = (int64_t)p[n] | ((int64_t)p[n + 1] << 8);
    n += 2;
    if (off <= prev || base + off > newest_b) return TW_ESTATE;
    prev = off;
    int64_t *r = tw__bk(e, i);
    uint64_t c;
    r[TW__B_IDX] = base + off;
    if (tw__get_uvar(p, len, &n, &c) != 0 || c > INT64_MAX) return TW_ESTATE;
    if (c == 0 && e->fn != TW_AGG_SUM) return TW_ESTATE; /* only legacy SUM buckets lack counts */
    r[TW__B_COUNT] = (int64_t)c;
    if (e->stride > 2 && tw__get_zz(p, len, &n, &r[TW__B_VAL]) != 0) return TW_ESTATE;
    if (e->stride > 3) {
      int64_t d;
      if (tw__get_zz(p, len, &n, &d) != 0 || d > TW__TS_LIM || d < -TW__TS_LIM) return TW_ESTATE;
      int64_t ts = tw__bucket_start(e, r[TW__B_IDX]) + d;
      if (ts > e->newest_ts_ms || ts < -TW__TS_LIM) return TW_ESTATE;
      r[TW__B_TS] = ts;
    }
  }
  if (approx) {
    if (len - n < (size_t)nb * TW__HLL_M) return TW_ESTATE;
    for (size_t j = 0; j < (size_t)nb * TW__HLL_M; j++)
      if (p[n + j] > TW__HLL_RANK_MAX) return TW_ESTATE;
    memcpy(tw__hll_row(e, 0), p + n, (size_t)nb * TW__HLL_M);
    n += (size_t)nb * TW__HLL_M;
  }
  e->nb = nb;
  e->approx = (uint8_t)approx;
  if (ndx > 0) {
    e->dx = malloc(ndx * sizeof *e->dx);
    if (e->dx == NULL) return TW_ENOMEM;
    e->ndx_alloc = (uint16_t)ndx;
  }
  int64_t ref = cal ? newest_b : e->newest_ts_ms;
  for (uint32_t i = 0; i < ndx; i++) {
    uint64_t d;
    if (len - n < 9) return TW_ESTATE;
    uint64_t h = (uint64_t)tw__get_i64(p + n);
    n += 8;
    if (tw__get_uvar(p, len, &n, &d) != 0 || d > (uint64_t)TW__TS_LIM * 2) return TW_ESTATE;
    int64_t t = ref - (int64_t)d;
    if (i > 0 && tw__dx_cmp(h, t, &e->dx[i - 1]) <= 0) return TW_ESTATE;
    if (!cal && i > 0 && e->dx[i - 1].hash == h) return TW_ESTATE; /* one row per hash */
    e->dx[i].hash = h;
    e->dx[i].t = t;
    e->ndx = (uint16_t)(i + 1);
    if (t < -TW__TS_LIM) return TW_ESTATE;
    if (e->window_ms != 0 && !tw__dx_live(e, &e->dx[i])) return TW_ESTATE;
    if (cal) {
      uint32_t pos = tw__bucket_pos(e, t);
      if (pos >= e->nb || tw__bk(e, pos)[TW__B_IDX] != t) return TW_ESTATE;
    }
  }
  if (n != len) return TW_ESTATE;
  return 0;
}

int tw__entry_decode_ex(tw__entry_t *e, const unsigned char *p, size_t len, int *rebucketed) {
  if (rebucketed) *rebucketed = 0;
  tw__entry_release(e);
  e->seen = 0;
  e->newest_ts_ms = 0;
  if (len < 4 || p[0] < 1 || p[0] > TW__FORMAT_VERSION || p[3] != 0) return TW_ESTATE;
  unsigned flags_ok = p[0] == TW__FORMAT_VERSION && e->key[0] == TW__KIND_AGG
                          ? (TW__FLAG_SEEN | TW__FLAG_CAL | TW__FLAG_APPROX)
                          : TW__FLAG_SEEN;
  if ((p[2] & ~flags_ok) != 0) return TW_ESTATE;
  e->seen = (p[2] & TW__FLAG_SEEN) != 0;
  if (e->key[0] == TW__KIND_COOL) {
    if (len != TW__COOL_BYTES || p[1] != TW__KIND_COOL) return TW_ESTATE;
    e->newest_ts_ms = tw__get_i64(p + 4);
    return 0;
  }
  int64_t sa = 0, align = e->align_ms;
  int rc = p[0] == TW__FORMAT_VERSION ? tw__decode_v3(e, p, len, &sa)
                                      : tw__decode_legacy(e, p, len, &sa);
  e->align_ms = align; /* tw__decode_v3 reads on the stored grid */
  if (rc != 0) {
    tw__entry_release(e);
    e->seen = 0;
    e->newest_ts_ms = 0;
    return rc;
  }
  if (e->window_ms != 0 && sa != e->align_ms) {
    tw__rebucket(e, sa);
    if (rebucketed) *rebucketed = 1;
  }
  /* A legacy sliding grid read as calendar may hold a bucket before the calendar window. */
  if (e->seen) tw__evict(e);
  tw__cache_recompute(e);
  return 0;
}

int tw__entry_decode(tw__entry_t *e, const unsigned char *p, size_t len) {
  return tw__entry_decode_ex(e, p, len, NULL);
}
