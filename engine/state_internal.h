/*
 * state_internal.h: what state.c and window.c share, and the few hooks the unit tests use.
 * Not a public contract: nothing outside engine/state.c, engine/window.c and tests includes it.
 *
 * An entry is one (aggregate, key) or one (rule, key) cooldown. Its in-memory key is a kind byte
 * followed by the LMDB key of its database, so aggregates and cooldowns share one hash table.
 * A windowed entry holds at most its nb_max buckets, sorted by bucket index; the window
 * functions below never allocate beyond that cap (a DISTINCT entry adds its exact table of at
 * most TW_STATE_DISTINCT_EXACT rows, or one sketch row per bucket).
 */
#ifndef TW_STATE_INTERNAL_H
#define TW_STATE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tw_state.h"

#define TW__KIND_AGG 'a'
#define TW__KIND_COOL 'c'

/*
 * Buckets are rows of `stride` int64 words in e->b, sorted by idx (word 0), strictly increasing:
 *   [TW__B_IDX]   bucket index; sliding: covers (idx·g − a, (idx+1)·g − a]; calendar: covers
 *                 [idx·g − a, (idx+1)·g − a); `all`: the single bucket 0
 *   [TW__B_COUNT] events that landed in it (saturating; 0 only for SUM buckets stored before
 *                 format version 3, which did not count events)
 *   [TW__B_VAL]   SUM, AVG: saturated sum; MIN, MAX: extreme; FIRST, LAST: the chosen value
 *                 (absent for COUNT and DISTINCT: stride 2)
 *   [TW__B_TS]    FIRST, LAST: event time of the chosen value (stride 4)
 */
#define TW__B_IDX 0
#define TW__B_COUNT 1
#define TW__B_VAL 2
#define TW__B_TS 3

#define TW__HLL_M 256       /* HyperLogLog registers per bucket (p = 8) */
#define TW__HLL_RANK_MAX 57 /* 64 − p + 1: the largest register value */

/* DISTINCT exact table row: a hash and, for sliding and `all` windows, the newest event time it
 * was seen at; for calendar windows the bucket index it was seen in (one row per hash and
 * bucket). Rows are sorted by (hash, t), strictly increasing. */
typedef struct tw__dx {
  uint64_t hash;
  int64_t t;
} tw__dx_t;

typedef struct tw__entry {
  int64_t *b; /* nb rows of stride words (above); NULL until the first bucket */
  union {
    uint8_t *hll; /* DISTINCT, approx: nb_alloc + 1 rows of TW__HLL_M registers: row 0 the
                     merge of all stored buckets (the window at newest), row i + 1 bucket i */
    tw__dx_t *dx; /* DISTINCT, exact: ndx rows (≤ TW_STATE_DISTINCT_EXACT) */
  };
  int64_t c_count;      /* cache: the aggregate of every stored bucket (the window at newest) */
  int64_t c_val;        /*   SUM, AVG: wrapped sum (with c_carries); MIN..LAST: the value */
  int64_t c_ts;         /*   FIRST, LAST: event time of c_val */
  int64_t window_ms;    /* 0 = `all` */
  int64_t g_ms;         /* bucket width; 0 for `all` and cooldowns */
  int64_t align_ms;     /* bucket grid offset in [0, g_ms): the time-zone offset mod g (buckets
                           meet at local midnight), for calendar 7d multiples (tz − 4d) mod g
                           (local Monday 00:00) */
  int64_t newest_ts_ms; /* newest event time seen; cooldown: last firing time (valid when seen) */
  int64_t dx_min_t;     /* DISTINCT, exact: no row's t is below this (a lower bound, so evicting
                           finds nothing to drop while it is inside the window); INT64_MIN when
                           not known, INT64_MAX after a scan left no row */
  int32_t c_carries;    /* cache: 2^64 carries of c_val (SUM, AVG) */
  uint32_t nb;          /* buckets in use */
  uint32_t nb_alloc;    /* buckets allocated (grows ×2 up to nb_max) */
  uint32_t nb_max;      /* most buckets the window can hold */
  uint16_t ndx;         /* rows in dx */
  uint16_t ndx_alloc;   /* rows allocated in dx */
  uint16_t key_len;     /* bytes of key[] including the kind byte */
  uint8_t fn;           /* tw_agg_fn_t */
  uint8_t stride;       /* int64 words per bucket row: 2, 3 or 4 */
  uint8_t cal;          /* calendar buckets ([start, end), explicit width) */
  uint8_t approx;       /* DISTINCT switched to the HyperLogLog sketch */
  uint8_t seen;         /* an event (or a firing) has been recorded */
  uint8_t dirty;        /* changed since the last successful commit */
  uint8_t ref;          /* used since the eviction sweep last passed (CLOCK second chance) */
  unsigned char key[];  /* kind byte + LMDB key */
} tw__entry_t;

/* Row i of e's buckets. */
static inline int64_t *tw__bk(const tw__entry_t *e, uint32_t i) {
  return e->b + (size_t)i * e->stride;
}
/* The value a bucket contributes (COUNT: its count). */
static inline int64_t tw__bk_value(const tw__entry_t *e, uint32_t i) {
  return e->stride > 2 ? tw__bk(e, i)[TW__B_VAL] : tw__bk(e, i)[TW__B_COUNT];
}

/* Automatic bucket width for a window (> 0), see tw_state.h. */
int64_t tw__window_granularity_ms(int64_t window_ms);
/* Most buckets a window can hold at once with the automatic width: ceil(window/g) + 1. */
uint32_t tw__window_cap(int64_t window_ms);
/* Bucket width of a spec (its bucket_ms, or the automatic one), and its cap: ceil(W/g) + 1 for
 * sliding windows, W/g for calendar ones, 1 for `all`. The spec must have passed validation. */
int64_t tw__spec_granularity_ms(const tw_window_spec_t *spec);
uint32_t tw__spec_cap(const tw_window_spec_t *spec);
/* tz offset reduced to [0, g). */
int64_t tw__align_ms(int64_t tz_offset_ms, int64_t g_ms);
/* Grid offset of calendar buckets of width g: local midnight, local Monday for multiples of 7d. */
int64_t tw__calendar_align_ms(int64_t tz_offset_ms, int64_t g_ms);
/* Set e's function, window, width, alignment, cap and row stride from a validated spec. */
void tw__entry_init(tw__entry_t *e, const tw_window_spec_t *spec, int64_t tz_offset_ms);
/* Free what e owns besides itself (buckets, sketch, table); e stays valid and empty. */
void tw__entry_release(tw__entry_t *e);
/* Heap bytes e holds (itself, key, rows, sketch, table), for the memory bound tests. */
size_t tw__entry_mem_bytes(const tw__entry_t *e);

/*
 * tw__window_add: add one event (value v: ignored for COUNT, the hash for DISTINCT) at ts_ms to
 * a windowed or `all` entry, evicting what left the window of the newest time. Sets *too_old
 * when the event is older than the whole window of the newest time (nothing changes then).
 * Returns 0, TW_EOVERFLOW (SUM/AVG saturated; the saturated value is kept), TW_ENOMEM (nothing
 * of this event was recorded), TW_ESTATE (cap invariant).
 */
int tw__window_add(tw__entry_t *e, int64_t ts_ms, int64_t v, int *too_old);

/* tw__window_get: the aggregate of the window ending at at_ms (see tw_state.h); bucket_ms 0. */
void tw__window_get(const tw__entry_t *e, int64_t at_ms, tw_agg_out_t *out);
/* tw__window_value: tw__window_get's value (saturating sums). */
int64_t tw__window_value(const tw__entry_t *e, int64_t at_ms);
/* tw__window_series: a calendar entry's n = nb_max buckets up to the one holding at_ms, oldest
 * first (out must hold nb_max). */
void tw__window_series(const tw__entry_t *e, int64_t at_ms, tw_agg_out_t *out);

/* tw__window_expired: the window holds nothing at any time after the watermark (sliding: every
 * bucket ended at or before watermark − W; calendar: every bucket is before the window of the
 * watermark's bucket). False for `all` and unseen. */
int tw__window_expired(const tw__entry_t *e, int64_t watermark_ms);

/* Encoded size bound of an entry, and encode/decode of its LMDB value. Encoding writes format
 * version 3 (per-function bucket state, DISTINCT table or sketch); decoding reads versions 1
 * (automatic width, UTC alignment, COUNT/SUM), 2 (width and alignment in the header, COUNT/SUM)
 * and 3. */
size_t tw__entry_encoded_max(const tw__entry_t *e);
size_t tw__entry_encode(const tw__entry_t *e, unsigned char *out);
/* Decode into e (set up by tw__entry_init, or a cooldown with its key) replacing what it held;
 * TW_ESTATE on any inconsistency (including a stored bucket width other than e->g_ms), TW_ENOMEM
 * when an array cannot be allocated. A windowed entry stored with another alignment (the time
 * zone changed, or a version 1 entry under a non-UTC zone) is moved onto e's alignment: each
 * bucket goes to the bucket holding min(its last instant, newest), so an event may count up to
 * one bucket longer than before; _ex sets *rebucketed (may be NULL) to 1 then. */
int tw__entry_decode_ex(tw__entry_t *e, const unsigned char *p, size_t len, int *rebucketed);
int tw__entry_decode(tw__entry_t *e, const unsigned char *p, size_t len);

/* Test hooks. */
/* Bucket count and cap of (spec, key), loading it if needed; TW_ENOENT if not present. */
int tw__state_agg_buckets(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                          size_t key_len, uint32_t *nb, uint32_t *nb_max);
/* Heap bytes (spec, key) holds in memory, its hash-table slot included, loading it if needed. */
int tw__state_agg_mem(tw_state_t *st, const tw_window_spec_t *spec, const char *key, size_t key_len,
                      size_t *bytes);
/* Make the next n commits fail after writing (the transaction is aborted). */
void tw__state_fail_commits(tw_state_t *st, int n);
/* Tests: the next growth of tw_state_agg_keys' staged-key cache fails with TW_ENOMEM. */
void tw__state_fail_keys_grow(tw_state_t *st);
/* Records in the committed dedup databases (ids, time index); TW_ESTATE on LMDB errors. */
int tw__state_dedup_committed(tw_state_t *st, size_t *ids, size_t *index);
/* The LMDB key under which (spec, key) is stored in the `agg` database; returns its length or
 * a negative TW_E code. cap must be ≥ TW__STATE_DBKEY_MAX. */
#define TW__STATE_DBKEY_MAX (TW_STATE_NAME_MAX + 1 + 1 + 8 + 8 + TW_STATE_KEY_MAX)
int tw__state_agg_dbkey(const tw_window_spec_t *spec, const char *key, size_t key_len,
                        unsigned char *out, size_t cap);

#endif
