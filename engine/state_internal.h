/*
 * state_internal.h: what state.c and window.c share, and the few hooks the unit tests use.
 * Not a public contract: nothing outside engine/state.c, engine/window.c and tests includes it.
 *
 * An entry is one (aggregate, key) or one (rule, key) cooldown. Its in-memory key is a kind byte
 * followed by the LMDB key of its database, so aggregates and cooldowns share one hash table.
 * A windowed entry holds at most its nb_max buckets, sorted by bucket index; the window
 * functions below never allocate beyond that cap.
 */
#ifndef TW_STATE_INTERNAL_H
#define TW_STATE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tw_state.h"

#define TW__KIND_AGG 'a'
#define TW__KIND_COOL 'c'

/* One non-empty bucket: it covers event times (idx·g − align, (idx+1)·g − align]. */
typedef struct tw__bucket {
  int64_t idx;
  int64_t value;
} tw__bucket_t;

typedef struct tw__entry {
  uint64_t hash;
  tw__bucket_t *buckets; /* sorted by idx, strictly increasing; NULL until the first bucket */
  int64_t window_ms;     /* 0 = `all` */
  int64_t g_ms;          /* bucket width; 0 for `all` and cooldowns */
  int64_t align_ms;      /* time-zone offset mod g_ms, in [0, g_ms): buckets end at local
                            multiples of g (local midnight for g = 1d) */
  int64_t newest_ts_ms;  /* newest event time seen (valid when seen) */
  int64_t total;         /* windowed: saturated sum of the buckets; all: running value;
                            cooldown: last firing time (valid when seen) */
  uint32_t nb;           /* buckets in use */
  uint32_t nb_alloc;     /* buckets allocated (grows ×2 up to nb_max) */
  uint32_t nb_max;       /* tw__window_cap(window_ms) */
  uint16_t key_len;      /* bytes of key[] including the kind byte */
  uint8_t fn;            /* tw_agg_fn_t */
  uint8_t seen;          /* an event (or a firing) has been recorded */
  uint8_t dirty;         /* changed since the last successful commit */
  uint8_t ref;           /* used since the eviction sweep last passed (CLOCK second chance) */
  unsigned char key[];   /* kind byte + LMDB key */
} tw__entry_t;

/* Automatic bucket width for a window (> 0), see tw_state.h. */
int64_t tw__window_granularity_ms(int64_t window_ms);
/* Most buckets a window can hold at once with the automatic width: ceil(window/g) + 1. */
uint32_t tw__window_cap(int64_t window_ms);
/* Bucket width of a spec (its bucket_ms, or the automatic one), and its cap ceil(W/g) + 1.
 * The spec must have passed validation (window > 0). */
int64_t tw__spec_granularity_ms(const tw_window_spec_t *spec);
uint32_t tw__spec_cap(const tw_window_spec_t *spec);
/* tz offset reduced to [0, g). */
int64_t tw__align_ms(int64_t tz_offset_ms, int64_t g_ms);

/*
 * tw__window_add: add v (already 1 for COUNT) at ts_ms to a windowed or `all` entry, evicting
 * buckets that left the window of the newest time. Sets *too_old when the event is older than the
 * whole window of the newest time (then nothing changes). Returns 0, TW_EOVERFLOW (saturated, the
 * saturated value is kept), TW_ENOMEM (bucket array could not grow), TW_ESTATE (cap invariant).
 */
int tw__window_add(tw__entry_t *e, int64_t ts_ms, int64_t v, int *too_old);

/* tw__window_value: the value of the window ending at at_ms (saturating). */
int64_t tw__window_value(const tw__entry_t *e, int64_t at_ms);

/* tw__window_expired: every bucket of a windowed entry ended at or before watermark − W, so
 * the window holds nothing at any time after the watermark. False for `all` and unseen. */
int tw__window_expired(const tw__entry_t *e, int64_t watermark_ms);

/* Encoded size bound of an entry, and encode/decode of its LMDB value. Encoding writes format
 * version 2 (bucket width and alignment in the header); decoding reads versions 1 (automatic
 * width, UTC alignment) and 2. */
size_t tw__entry_encoded_max(const tw__entry_t *e);
size_t tw__entry_encode(const tw__entry_t *e, unsigned char *out);
/* Decode into e (whose key, kind, fn, window, g_ms, align_ms and nb_max are already set);
 * TW_ESTATE on any inconsistency (including a stored bucket width other than e->g_ms),
 * TW_ENOMEM when the bucket array cannot be allocated. A windowed entry stored with another
 * alignment (the time zone changed, or a version 1 entry under a non-UTC zone) is moved onto
 * e's alignment: each bucket goes to the bucket holding min(its end, newest), so an event may
 * count up to one bucket longer than before; _ex sets *rebucketed (may be NULL) to 1 then. */
int tw__entry_decode_ex(tw__entry_t *e, const unsigned char *p, size_t len, int *rebucketed);
int tw__entry_decode(tw__entry_t *e, const unsigned char *p, size_t len);

/* Test hooks. */
/* Bucket count and cap of (spec, key), loading it if needed; TW_ENOENT if not present. */
int tw__state_agg_buckets(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                          size_t key_len, uint32_t *nb, uint32_t *nb_max);
/* Make the next n commits fail after writing (the transaction is aborted). */
void tw__state_fail_commits(tw_state_t *st, int n);
/* Records in the committed dedup databases (ids, time index); TW_ESTATE on LMDB errors. */
int tw__state_dedup_committed(tw_state_t *st, size_t *ids, size_t *index);
/* The LMDB key under which (spec, key) is stored in the `agg` database; returns its length or
 * a negative TW_E code. cap must be ≥ TW__STATE_DBKEY_MAX. */
#define TW__STATE_DBKEY_MAX (TW_STATE_NAME_MAX + 1 + 1 + 8 + 8 + TW_STATE_KEY_MAX)
int tw__state_agg_dbkey(const tw_window_spec_t *spec, const char *key, size_t key_len,
                        unsigned char *out, size_t cap);

#endif
