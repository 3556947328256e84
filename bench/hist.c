/*
 * hist.c: the log-bucket latency histogram of `tutorwatch bench` (HdrHistogram's layout with 2
 * significant binary digits of 7 bits each).
 *
 * Bucket b < 2·S holds exactly the value b. Above, a value v with its highest set bit at position
 * m (m ≥ TW_HIST_SUB_BITS + 1) is shifted right by s = m − TW_HIST_SUB_BITS, which leaves its
 * top S..2S−1 part, and lands in bucket (s + 1)·S + (v >> s) − S: buckets are contiguous, each of
 * width 2^s, i.e. at most 1/S of its values. Recording is a count-leading-zeros and an
 * increment; percentiles walk the fixed array once.
 */
#include <string.h>

#include "tw_bench.h"

void tw_hist_init(tw_hist_t *h) {
  memset(h, 0, sizeof *h);
  h->min = UINT64_MAX;
}

size_t tw_hist_bucket_of(uint64_t value) {
  if (value < 2u * TW_HIST_SUB_COUNT) return (size_t)value;
  unsigned msb = 63u - (unsigned)__builtin_clzll(value);
  unsigned shift = msb - TW_HIST_SUB_BITS;
  return (size_t)(shift + 1u) * TW_HIST_SUB_COUNT + (size_t)(value >> shift) - TW_HIST_SUB_COUNT;
}

uint64_t tw_hist_bucket_low(size_t b) {
  if (b < 2u * TW_HIST_SUB_COUNT) return (uint64_t)b;
  unsigned shift = (unsigned)(b / TW_HIST_SUB_COUNT) - 1u;
  uint64_t sub = (uint64_t)(b % TW_HIST_SUB_COUNT) + TW_HIST_SUB_COUNT;
  return sub << shift;
}

uint64_t tw_hist_bucket_high(size_t b) {
  if (b < 2u * TW_HIST_SUB_COUNT) return (uint64_t)b;
  unsigned shift = (unsigned)(b / TW_HIST_SUB_COUNT) - 1u;
  /* The last bucket ends at UINT64_MAX: (low + 2^shift − 1) never overflows. */
  return tw_hist_bucket_low(b) + (((uint64_t)1 << shift) - 1u);
}

void tw_hist_record(tw_hist_t *h, uint64_t value) {
  h->counts[tw_hist_bucket_of(value)]++;
  h->count++;
  h->sum += (double)value;
  if (value < h->min) h->min = value;
  if (value > h->max) h->max = value;
}

void tw_hist_merge(tw_hist_t *dst, const tw_hist_t *src) {
  for (size_t b = 0; b < TW_HIST_BUCKETS; b++) dst->counts[b] += src->counts[b];
  dst->count += src->count;
  dst->sum += src->sum;
  if (src->min < dst->min) dst->min = src->min;
  if (src->max > dst->max) dst->max = src->max;
}

uint64_t tw_hist_percentile(const tw_hist_t *h, double p) {
  if (h->count == 0) return 0;
  if (!(p > 0.0)) p = 0.0;
  if (p > 100.0) p = 100.0;
  /* rank = ⌈p/100 · count⌉, at least 1; computed in double (counts stay far below 2^53). */
  /* The tolerance keeps 99.9% of 1000 at rank 999 despite binary fractions. */
  double r = p / 100.0 * (double)h->count - 1e-9 * (double)h->count;
  uint64_t rank = r > 0 ? (uint64_t)r : 0;
  if ((double)rank < r) rank++;
  if (rank == 0) rank = 1;
  if (rank > h->count) rank = h->count;
  uint64_t seen = 0;
  for (size_t b = 0; b < TW_HIST_BUCKETS; b++) {
    seen += h->counts[b];
    if (seen >= rank) {
      uint64_t v = tw_hist_bucket_high(b);
      return v > h->max ? h->max : v;
    }
  }
  return h->max;
}
