/*
 * tw_state.h: keyed, windowed aggregate state kept in memory and persisted in LMDB.
 *
 * One LMDB environment per state directory. Each (aggregate name, key) owns a small series of
 * buckets over event time. A sliding window of width W uses a bucket width g chosen from
 * {1s, 1m, 5m, 15m, 1h, 6h, 1d} as the smallest with W/g ≤ 256, so memory per key is bounded by
 * W/g + 1 buckets; empty buckets are not stored. Bucket b covers event times (b·g, (b+1)·g]
 * (aligned to the Unix epoch, so days are UTC-aligned at g = 1d), and the value at time t covers
 * the buckets that end after t − W and start before t: exact when t and t − W fall on bucket
 * ends, otherwise within one bucket at the old edge. `all` windows keep one running value.
 *
 * Hot state lives in a hash table in memory; an update marks the entry dirty. tw_state_commit
 * writes every dirty entry, the appended alerts (the alert journal, with sequence numbers) and
 * the meta records (input position, counters) in one LMDB write transaction: a group commit.
 * A later run on the same directory reads entries back lazily on first use and continues.
 *
 * Not thread-safe: one state per thread (one shard); no call may overlap another on the same
 * state, and a tw_state_journal_foreach callback must not call tw_state_commit.
 */
#ifndef TW_STATE_H
#define TW_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TW_STATE_KEY_MAX 256         /* bytes of an aggregate key (institution_id, region, ...) */
#define TW_STATE_NAME_MAX 128        /* bytes of an aggregate or rule name (TW_ETOOBIG beyond) */
#define TW_STATE_META_NAME_MAX 64    /* bytes of a meta record name */
#define TW_STATE_META_MAX 65536      /* bytes of a meta record */
#define TW_STATE_JOURNAL_MAX 1048576 /* bytes of one journal record */

typedef enum tw_agg_fn {
  TW_AGG_COUNT = 0, /* number of events */
  TW_AGG_SUM        /* sum of an integer field; overflow saturates and is reported */
} tw_agg_fn_t;

/* What identifies an aggregate's state: its name (stable across runs), function and window. */
typedef struct tw_window_spec {
  const char *name; /* aggregate name, NUL-terminated, ≤ 64 bytes (TW_STATE_NAME_MAX enforced);
                       not owned. The state is keyed by (name, fn, window_ms, key): changing
                       an aggregate's fn or window starts a fresh series. */
  tw_agg_fn_t fn;
  int64_t window_ms; /* sliding window width; 0 means `all` (since the beginning) */
} tw_window_spec_t;

typedef struct tw_state tw_state_t;

typedef struct tw_state_opts {
  size_t map_size_bytes; /* initial LMDB map size; 0 = 1 GiB. Grows on MDB_MAP_FULL. */
  bool no_sync;          /* MDB_NOSYNC for tests and benchmarks; default durable */
} tw_state_opts_t;

/*
 * tw_state_open: open (creating if needed) the LMDB environment in dir (created mode 0700 if
 * absent). opts may be NULL for defaults. On success *out is owned by the caller.
 * Errors: TW_EIO (cannot create dir), TW_ESTATE (LMDB error, logged with mdb_strerror), TW_ENOMEM.
 */
int tw_state_open(const char *dir, const tw_state_opts_t *opts, tw_state_t **out);

/* tw_state_close: commit nothing, close the environment, free everything; NULL accepted.
 * Call tw_state_commit first to keep pending changes. */
void tw_state_close(tw_state_t *st);

/*
 * tw_state_agg_add: add one event's contribution at event time ts_ms to (spec, key):
 * for COUNT value is ignored (adds 1); for SUM value is added. Buckets older than the window
 * relative to the newest time seen for the key are dropped. An event at or before newest − window
 * is ignored (returns 0) and counted in stats.too_old: lateness policy belongs to the engine.
 * Returns 0, TW_ETOOBIG (key or name too long), TW_EINVAL (bad spec, or |ts_ms| > 2^61),
 * TW_EOVERFLOW (sum saturated at INT64_MAX/MIN; the state keeps the saturated value),
 * TW_ESTATE (LMDB read failed or the stored entry is corrupt), TW_ENOMEM.
 * No allocation for a key already in memory once its bucket array reached its size.
 */
int tw_state_agg_add(tw_state_t *st, const tw_window_spec_t *spec, const char *key, size_t key_len,
                     int64_t ts_ms, int64_t value);

/*
 * tw_state_agg_value: the value of (spec, key) for the window ending at at_ms (see above);
 * 0 for a key never seen. Buckets evicted by a newer event are gone, so asking for at_ms well
 * before the newest event time undercounts; `all` windows return the running value whatever
 * at_ms. A sum beyond int64 saturates. Returns 0, TW_ETOOBIG, TW_EINVAL, TW_ESTATE, TW_ENOMEM.
 */
int tw_state_agg_value(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                       size_t key_len, int64_t at_ms, int64_t *out);

/*
 * tw_state_cooldown: decide whether rule `rule` may fire for key at ts_ms given its cooldown
 * (ms, 0 = none): *fire is true when it never fired for key or last fired at or before
 * ts_ms - cooldown_ms; when *fire, ts_ms is recorded as the last firing. Persisted like
 * aggregates. cooldown_ms 0 always fires. Returns 0, TW_ETOOBIG, TW_EINVAL (cooldown_ms < 0),
 * TW_ESTATE, TW_ENOMEM.
 */
int tw_state_cooldown(tw_state_t *st, const char *rule, const char *key, size_t key_len,
                      int64_t ts_ms, int64_t cooldown_ms, bool *fire);

/*
 * tw_state_journal_append: stage an alert (its JSON bytes, copied) for the alert journal; it is
 * written with the next commit under the next sequence number (1, 2, ...), stored in *seq.
 * Returns 0, TW_ETOOBIG (len > TW_STATE_JOURNAL_MAX) or TW_ENOMEM.
 */
int tw_state_journal_append(tw_state_t *st, const char *json, size_t len, uint64_t *seq);

/*
 * tw_state_meta_put / get: small named records (input position, counters) written with the next
 * commit; a later put of the same name replaces the staged one. put returns 0, TW_ETOOBIG (name
 * > TW_STATE_META_NAME_MAX or len > TW_STATE_META_MAX) or TW_ENOMEM. get sees staged records
 * first, then committed ones; it returns TW_ENOENT when absent, TW_ETOOBIG when cap is too small
 * (*len is set), TW_ESTATE.
 */
int tw_state_meta_put(tw_state_t *st, const char *name, const void *data, size_t len);
int tw_state_meta_get(tw_state_t *st, const char *name, void *buf, size_t cap, size_t *len);

/*
 * tw_state_commit: write every dirty entry, staged journal records and meta records in one LMDB
 * transaction (growing the map on MDB_MAP_FULL). Returns 0 or TW_ESTATE; on error nothing of
 * this batch is written and the in-memory changes stay dirty.
 */
int tw_state_commit(tw_state_t *st);

/*
 * tw_state_journal_foreach: call cb for every committed journal record with seq > since, in
 * order; stop early when cb returns non-zero (that value is returned). Returns 0 or TW_ESTATE.
 */
typedef int (*tw_state_journal_cb)(void *ud, uint64_t seq, const char *json, size_t len);
int tw_state_journal_foreach(tw_state_t *st, uint64_t since, tw_state_journal_cb cb, void *ud);

/* Counters for the summary and for tests. */
typedef struct tw_state_stats {
  uint64_t keys_in_memory;
  uint64_t keys_loaded; /* read back from LMDB */
  uint64_t commits;
  uint64_t entries_written;
  uint64_t journal_seq; /* last sequence number assigned */
  uint64_t too_old;     /* agg_add events older than the whole window of the newest; ignored */
  uint64_t map_grows;   /* times the LMDB map was doubled on MDB_MAP_FULL */
  uint64_t map_size_bytes;
} tw_state_stats_t;
void tw_state_stats(const tw_state_t *st, tw_state_stats_t *out);

#endif
