/*
 * fuzz_state_entry.c: the decoder of stored state entries (window.c) must turn any bytes into
 * either an entry that respects its invariants or TW_ESTATE, within bounded memory.
 * The first input byte picks the entry's shape: bit 7 a cooldown; bit 0 and bits 4–5 the
 * function (fn = bit0 | bits4-5 << 1, so the version 1 and 2 seeds keep COUNT and SUM); bits 1–3
 * the window; bit 6 calendar buckets. The rest is the stored value. A decoded entry is re-encoded
 * and decoded again (the round trip must be exact), queried (a DISTINCT value, even an estimate
 * from hostile registers, lies within its events), fed a few events, and round-tripped once more.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state_internal.h"
#include "tw_error.h"

#define DAY 86400000LL

static const int64_t windows_ms[] = {0, 90000, 3600000, 7 * DAY, 30 * DAY, 365 * DAY};
static const int64_t calendar_ms[] = {7 * DAY, 30000, 60000, DAY, DAY, DAY};

static tw__entry_t *make(uint8_t shape) {
  tw__entry_t *e = calloc(1, sizeof *e + 2);
  if (e == NULL) abort();
  e->key_len = 2;
  e->key[0] = (shape & 0x80) ? TW__KIND_COOL : TW__KIND_AGG;
  e->key[1] = 'k';
  if (e->key[0] == TW__KIND_COOL) return e;
  int w = ((shape >> 1) & 7) % 6;
  tw_window_spec_t s = {"k", (tw_agg_fn_t)((shape & 1) | (((shape >> 4) & 3) << 1)), windows_ms[w],
                        0};
  if (shape & 0x40) {
    s.bucket_ms = calendar_ms[w];
    if (w == 0) s.window_ms = 28 * DAY; /* four local weeks, Monday-aligned */
  }
  tw__entry_init(e, &s, TW_STATE_TZ_DEFAULT_MS);
  return e;
}

static void check(const tw__entry_t *e) {
  if (e->key[0] != TW__KIND_AGG) return;
  if (e->nb > e->nb_max || e->nb > e->nb_alloc) abort();
  if (e->ndx > TW_STATE_DISTINCT_EXACT || e->ndx > e->ndx_alloc) abort();
  if (e->approx && (e->hll == NULL || e->ndx != 0)) abort();
  for (uint32_t i = 0; i < e->nb; i++) {
    if (tw__bk(e, i)[TW__B_COUNT] < 0) abort();
    if (i > 0 && tw__bk(e, i)[TW__B_IDX] <= tw__bk(e, i - 1)[TW__B_IDX]) abort();
  }
  for (uint32_t i = 0; i < e->ndx; i++)
    if (i > 0 && (e->dx[i].hash < e->dx[i - 1].hash ||
                  (e->dx[i].hash == e->dx[i - 1].hash && e->dx[i].t <= e->dx[i - 1].t)))
      abort();
  if (e->approx) {
    for (size_t j = 0; j < ((size_t)e->nb + 1) * TW__HLL_M; j++)
      if (e->hll[j] > TW__HLL_RANK_MAX) abort();
    /* Row 0 is the merge of the bucket rows. */
    for (size_t j = 0; j < TW__HLL_M; j++) {
      uint8_t m = 0;
      for (uint32_t i = 0; i < e->nb; i++)
        if (e->hll[(size_t)(i + 1) * TW__HLL_M + j] > m)
          m = e->hll[(size_t)(i + 1) * TW__HLL_M + j];
      if (e->hll[j] != m) abort();
    }
  }
}

/* A DISTINCT value (estimate or exact) lies in [0, events]; only events make it approximate. */
static void check_distinct(const tw__entry_t *e, const tw_agg_out_t *o) {
  if (e->fn != TW_AGG_DISTINCT) return;
  if (o->value < 0 || o->value > o->count || (o->approximate && o->count == 0)) abort();
}

/* Encode e, decode into a fresh entry of the same shape, and require the same contents. */
static void round_trip(const tw__entry_t *e, uint8_t shape) {
  tw__entry_t *e2 = make(shape);
  unsigned char *buf = malloc(tw__entry_encoded_max(e));
  if (buf == NULL) abort();
  size_t n = tw__entry_encode(e, buf);
  if (n > tw__entry_encoded_max(e)) abort();
  if (tw__entry_decode(e2, buf, n) != 0) abort();
  if (e2->nb != e->nb || e2->seen != e->seen || e2->newest_ts_ms != e->newest_ts_ms ||
      e2->approx != e->approx || e2->ndx != e->ndx || e2->c_count != e->c_count ||
      e2->c_val != e->c_val)
    abort();
  if (e->nb && memcmp(e->b, e2->b, (size_t)e->nb * e->stride * sizeof(int64_t)) != 0) abort();
  if (e->approx && memcmp(e->hll, e2->hll, ((size_t)e->nb + 1) * TW__HLL_M) != 0) abort();
  if (e->ndx && memcmp(e->dx, e2->dx, e->ndx * sizeof e->dx[0]) != 0) abort();
  free(buf);
  tw__entry_release(e2);
  free(e2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  uint8_t shape = data[0];
  tw__entry_t *e = make(shape);
  if (tw__entry_decode(e, data + 1, size - 1) == 0) {
    check(e);
    round_trip(e, shape);
    if (e->key[0] == TW__KIND_AGG && e->seen) {
      tw_agg_out_t o;
      tw__window_get(e, e->newest_ts_ms, &o);
      check_distinct(e, &o);
      tw__window_get(e, e->newest_ts_ms - 1, &o);
      check_distinct(e, &o);
      if (e->cal) {
        tw_agg_out_t *series = calloc(e->nb_max, sizeof *series);
        if (series == NULL) abort();
        tw__window_series(e, e->newest_ts_ms, series);
        for (uint32_t i = 0; i < e->nb_max; i++) check_distinct(e, &series[i]);
        free(series);
      }
      int too_old;
      uint64_t h = 0x9e3779b97f4a7c15ULL;
      for (int i = 0; i < 4; i++) {
        h = h * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t back = e->window_ms / 2 * (i & 1);
        int64_t ts = e->newest_ts_ms + (i & 1 ? -back : 1);
        if (ts > ((int64_t)1 << 61) || ts < -((int64_t)1 << 61)) continue; /* the API's range */
        int rc = tw__window_add(e, ts, (int64_t)h, &too_old);
        if (rc != 0 && rc != TW_EOVERFLOW && rc != TW_ENOMEM) abort();
        check(e);
      }
      round_trip(e, shape);
    }
  }
  tw__entry_release(e);
  free(e);
  return 0;
}
