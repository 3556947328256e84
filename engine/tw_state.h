/*
 * tw_state.h: keyed, windowed aggregate state kept in memory and persisted in LMDB.
 *
 * One LMDB environment per state directory. Each (aggregate name, key) owns a small series of
 * buckets over event time. A sliding window of width W uses the spec's bucket width g, or by
 * default one chosen from {1s, 1m, 5m, 15m, 1h, 6h, 1d} as the smallest with W/g ≤ 256, so
 * memory per key is bounded by ⌈W/g⌉ + 1 buckets; empty buckets are not stored. Buckets are
 * aligned to local time: with off the configured time-zone offset, bucket b covers event times
 * (b·g − off, (b+1)·g − off], so at g = 1d a bucket is one local day (00:00, 24:00] — it ends
 * at, and includes, the local midnight that closes it. The value at time t covers the buckets
 * that end after t − W and start before t: exact when t and t − W fall on bucket ends, otherwise
 * within one bucket at the old edge. `all` windows keep one running value. An explicit
 * spec.bucket_ms gives calendar (tumbling) buckets instead, covering [start, end) (see
 * tw_window_spec_t).
 *
 * Every function keeps a small state per bucket: COUNT its events; SUM and AVG a saturated sum
 * and the events; MIN and MAX the extreme; FIRST and LAST the (event time, value) of the chosen
 * event; DISTINCT the events per bucket plus, per key, either an exact table of up to
 * TW_STATE_DISTINCT_EXACT hashes or one HyperLogLog sketch row (256 one-byte registers) per
 * bucket. Memory per key: about 120 bytes + the key + 16, 24 or 32 bytes per stored bucket
 * (COUNT/DISTINCT, SUM/AVG/MIN/MAX, FIRST/LAST); a DISTINCT key adds ≤ 256 · 16 bytes while
 * exact, and once approximate 256 bytes per stored bucket plus one merged row (≤ 170 · 256 ≈
 * 43 KiB for a 7-day window with its automatic 1h buckets; 512 bytes for `all`; ≤ 4097 · 256
 * bytes, about 1 MiB, for the largest calendar series). docs/rules.md, "Memory and accuracy of aggregates".
 *
 * Hot state lives in a hash table in memory; an update marks the entry dirty. tw_state_commit
 * writes every dirty entry, the appended alerts (the alert journal, with sequence numbers), the
 * event ids recorded for dedup and the meta records (input position, counters) in one LMDB write
 * transaction: a group commit. A later run on the same directory reads entries back lazily on
 * first use and continues. tw_state_evict bounds the table: it drops expired and clean entries.
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
#define TW_STATE_EVENT_ID_MAX 256    /* bytes of an event_id given to tw_state_dedup */
#define TW_STATE_BUCKETS_MAX 4096    /* window / explicit bucket width */
#define TW_STATE_TZ_DEFAULT_MS (8 * 3600000LL) /* Asia/Shanghai, UTC+8, no daylight saving */
#define TW_STATE_TZ_LIMIT_MS (18 * 3600000LL)  /* |tz_offset_ms| */

#define TW_STATE_DISTINCT_EXACT 256 /* distinct values counted exactly per key up to this */

/*
 * Aggregate functions. The value each event gives tw_state_agg_add is: ignored (COUNT), the
 * field's integer (SUM, AVG, MIN, MAX, FIRST, LAST: fen, int or epoch ms), or a 64-bit hash of
 * the field's value (DISTINCT; the caller hashes, e.g. BLAKE2b of the bytes).
 */
typedef enum tw_agg_fn {
  TW_AGG_COUNT = 0, /* number of events */
  TW_AGG_SUM,       /* sum of an integer field; overflow saturates and is reported */
  TW_AGG_AVG,       /* mean of an integer field: tw_agg_out_t gives sum (value) and count */
  TW_AGG_MIN,       /* smallest value in the window */
  TW_AGG_MAX,       /* largest value in the window */
  TW_AGG_DISTINCT,  /* number of distinct hashes: exact up to TW_STATE_DISTINCT_EXACT per key
                       (calendar: distinct (hash, bucket) pairs in the window), then an estimate
                       (HyperLogLog, 2^8 registers per bucket: standard error 1.04/√256 ≈ 6.5%;
                       the key counts exactly again once its window empties). The estimate is
                       cut to the events in the window (n events hold at most n values); it is
                       a function of the set of hashes in each bucket, not of arrival order,
                       commits, eviction or reloads, so other hashes of the same values (e.g.
                       pseudonyms under another key) give other estimates */
  TW_AGG_FIRST,     /* value of the event with the earliest event time (ties: smallest value) */
  TW_AGG_LAST       /* value of the event with the latest event time (ties: largest value) */
} tw_agg_fn_t;

/* The value of an aggregate, or of one bucket of it. */
typedef struct tw_agg_out {
  bool present;      /* false: no event in the window/bucket (MIN, MAX, AVG, FIRST, LAST have no
                        value then). tw_state_agg_get reports COUNT, SUM and DISTINCT as present
                        always (0 of nothing is a value; count says whether events fed it);
                        tw_state_agg_series reports empty buckets as not present for every fn */
  bool approximate;  /* DISTINCT beyond TW_STATE_DISTINCT_EXACT: value is an estimate (≤ count);
                        false when no event of the window fed it (value 0) */
  int64_t value;     /* COUNT, SUM (saturated), MIN, MAX, FIRST, LAST, DISTINCT; AVG: the sum */
  int64_t count;     /* events that fed it (all functions; a SUM bucket stored by a version
                        before 3 did not count its events and adds 0) */
  int64_t bucket_ms; /* tw_state_agg_series only: start of the bucket (epoch ms, inclusive) */
} tw_agg_out_t;

/* What identifies an aggregate's state: its name (stable across runs), function and window. */
typedef struct tw_window_spec {
  const char *name; /* aggregate name, NUL-terminated, ≤ 64 bytes (TW_STATE_NAME_MAX enforced);
                       not owned. The state is keyed by (name, fn, window_ms, key): changing
                       an aggregate's fn or window starts a fresh series. */
  tw_agg_fn_t fn;
  int64_t window_ms; /* sliding window width; 0 means `all` (since the beginning) */
  int64_t bucket_ms; /* 0 = a sliding window over automatic buckets (above). Otherwise a
                        series of calendar (tumbling) buckets of this width: ≥ 1000, divides
                        window_ms, window_ms / bucket_ms ≤ TW_STATE_BUCKETS_MAX, and 0 for `all`
                        windows; else TW_EINVAL. A calendar bucket covers [start, end): buckets
                        of a whole number of days start at local midnight, those of 7d on local
                        Monday 00:00 (1970-01-05 was a Monday), other widths on the grid through
                        local midnight of 1970-01-01 (so widths dividing a day start at every
                        local midnight); the value at t aggregates the window_ms / bucket_ms
                        buckets up to and including the one that holds t. An explicit width is
                        part of the state's identity (changing it starts a fresh series). */
} tw_window_spec_t;

typedef struct tw_state tw_state_t;
/* An aggregate's identity resolved by tw_state_agg_ref (below). */
typedef uint32_t tw_state_ref_t;

typedef struct tw_state_opts {
  size_t map_size_bytes;     /* initial LMDB map size; 0 = 1 GiB. Grows on MDB_MAP_FULL. */
  bool no_sync;              /* MDB_NOSYNC for tests and benchmarks; default durable */
  bool tz_set;               /* false (and opts NULL): Asia/Shanghai, TW_STATE_TZ_DEFAULT_MS */
  int64_t tz_offset_ms;      /* when tz_set: local time − UTC (UTC+8 = 28800000, UTC = 0);
                                |offset| ≤ TW_STATE_TZ_LIMIT_MS else TW_EINVAL. A fixed offset:
                                zones with daylight saving are not representable. Changing it on an
                                existing state moves each stored series onto the new day
                                boundaries when it is next loaded (an event may then count up to
                                one bucket longer), counted in stats.entries_rebucketed. */
  size_t max_keys_in_memory; /* budget for tw_state_evict's clean-entry dropping; 0 = none */
} tw_state_opts_t;

/*
 * tw_state_open: open (creating if needed) the LMDB environment in dir (created mode 0700 if
 * absent). opts may be NULL for defaults. On success *out is owned by the caller.
 * Errors: TW_EINVAL (tz_offset_ms out of range), TW_EIO (cannot create dir), TW_ESTATE (LMDB
 * error, logged with mdb_strerror), TW_ENOMEM.
 */
int tw_state_open(const char *dir, const tw_state_opts_t *opts, tw_state_t **out);

/* tw_state_close: commit nothing, close the environment, free everything; NULL accepted.
 * Call tw_state_commit first to keep pending changes. */
void tw_state_close(tw_state_t *st);

/*
 * tw_state_agg_prefetch: a hint that (spec, key) will be added to or read soon: when its entry is
 * in memory, ask the CPU to start loading it (data false: the entry itself; data true: its
 * buckets and distinct-value table, which reads the entry, so call it once the entry had time to
 * arrive). The entries one event feeds (about ten with the default pack) then arrive in parallel
 * rather than one cache miss after another. Never reads LMDB and changes no value; like every
 * call by spec it registers the spec's identity at first sight (the only allocation) and notes
 * the spec's address in the identity cache. Bad arguments are ignored.
 */
void tw_state_agg_prefetch(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                           size_t key_len, bool data);
/* tw_state_agg_prefetch_ref: the same by reference (tw_state_agg_ref, declared below). */
void tw_state_agg_prefetch_ref(tw_state_t *st, tw_state_ref_t ref, const char *key, size_t key_len,
                               bool data);

/*
 * tw_state_key_prefetch: a hint that every entry of key (all aggregates and cooldowns kept under
 * it) will be read soon, in four stages that each need the previous one's memory: stage 0 the
 * key's hash-table slot, 1 its group of entry pointers, 2 the entries, 3 their buckets. A scan
 * over many keys (a scheduled sweep) calls stage 3 for key i + 1, 2 for i + 2, 1 for i + 3 and 0
 * for i + 4 before it reads key i, so the cache misses of several keys overlap. Never reads
 * LMDB, allocates nothing, changes nothing (the last-found-key shortcut aside); bad arguments and
 * keys not in memory are ignored.
 */
void tw_state_key_prefetch(tw_state_t *st, const char *key, size_t key_len, int stage);

/*
 * tw_state_agg_add: add one event at event time ts_ms to (spec, key). value is ignored for COUNT;
 * the field's integer for SUM, AVG, MIN, MAX, FIRST and LAST; a 64-bit hash of the field's value
 * for DISTINCT. Buckets older than the window relative to the newest time seen for the key are
 * dropped. An event at or before newest − window (calendar: in a bucket before the window_ms /
 * bucket_ms buckets ending with the newest time's) is ignored (returns 0) and counted in
 * stats.too_old: lateness policy belongs to the engine.
 * Returns 0, TW_ETOOBIG (key or name too long), TW_EINVAL (bad spec, or |ts_ms| > 2^61),
 * TW_EOVERFLOW (SUM/AVG: a bucket sum or the window's sum saturated at INT64_MAX/MIN; the state
 * keeps the saturated value), TW_ESTATE (LMDB read failed or the stored entry is corrupt),
 * TW_ENOMEM (the event was not counted). No allocation for a key already in memory once its
 * bucket array reached its size, except the DISTINCT table's growth (≤ 256 rows) and its one
 * switch to the sketch.
 */
int tw_state_agg_add(tw_state_t *st, const tw_window_spec_t *spec, const char *key, size_t key_len,
                     int64_t ts_ms, int64_t value);

/*
 * tw_state_agg_value: the value of (spec, key) for the window ending at at_ms (see above);
 * 0 for a key never seen. For COUNT and SUM the count and the (saturated) sum as always; for the
 * other functions tw_state_agg_get's out.value (AVG: the sum; MIN, MAX, FIRST, LAST: 0 for an
 * empty window — use tw_state_agg_get to tell). Buckets evicted by a newer event are gone, so
 * asking for at_ms well before the newest event time undercounts; `all` windows return the
 * running value whatever at_ms. Returns 0, TW_ETOOBIG, TW_EINVAL, TW_ESTATE, TW_ENOMEM.
 */
int tw_state_agg_value(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                       size_t key_len, int64_t at_ms, int64_t *out);

/*
 * tw_state_agg_get: as tw_state_agg_value, for every function: the aggregate of (spec, key)
 * for the window ending at at_ms into *out: value, count of events, present (see tw_agg_out_t),
 * approximate (DISTINCT past its exact table); bucket_ms 0. A key never seen has value 0 and
 * count 0. FIRST and LAST: ties on event time go to the smallest (FIRST) or largest (LAST) value,
 * so the result does not depend on arrival order. DISTINCT over a sliding window while exact
 * counts hashes whose newest time seen is in (at_ms − W, at_ms] (exact at the newest time; an
 * earlier at_ms misses hashes seen again later). Cost: O(1) at the newest time except DISTINCT
 * (O(table) exact, O(buckets · 256) approximate), otherwise O(buckets).
 * Returns 0, TW_ETOOBIG, TW_EINVAL, TW_ESTATE, TW_ENOMEM.
 */
int tw_state_agg_get(tw_state_t *st, const tw_window_spec_t *spec, const char *key, size_t key_len,
                     int64_t at_ms, tw_agg_out_t *out);

/*
 * tw_state_agg_series: the buckets of a calendar aggregate (spec->bucket_ms > 0) for the window
 * ending at at_ms, oldest first, one per bucket including empty ones (present false, value and
 * count 0): out[n-1] is the bucket that holds at_ms; out[i].bucket_ms is bucket i's start (epoch
 * ms, inclusive). DISTINCT gives each bucket's own distinct count. *n = window_ms / bucket_ms
 * when cap allows, else TW_ETOOBIG (*n = 0). out is caller-owned, written only on success.
 * Buckets before the newest time's window were evicted and show as empty.
 * Returns 0, TW_EINVAL (not a calendar aggregate, or bad arguments), TW_ETOOBIG, TW_ESTATE,
 * TW_ENOMEM.
 */
int tw_state_agg_series(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                        size_t key_len, int64_t at_ms, tw_agg_out_t *out, size_t cap, size_t *n);

/*
 * References: an aggregate's identity (name, fn, window_ms, bucket_ms) resolved once, for callers
 * that add and read the same aggregates for every event (the pipeline resolves its rule set's
 * once per load). A call by reference skips the spec's checks and its identity lookup (a pointer
 * cache probe and a comparison of the name); it behaves exactly as the call by spec would.
 *
 * tw_state_agg_ref: the reference of spec's aggregate, valid for st's life (identities are never
 * removed; the same identity always gives the same reference). Returns 0, TW_EINVAL (bad spec,
 * st or ref NULL), TW_ETOOBIG (name too long), TW_ENOMEM.
 */
int tw_state_agg_ref(tw_state_t *st, const tw_window_spec_t *spec, tw_state_ref_t *ref);

/* tw_state_agg_add_ref, tw_state_agg_get_ref, tw_state_agg_series_ref: tw_state_agg_add,
 * tw_state_agg_get and tw_state_agg_series by reference; the same arguments, results and errors.
 * A reference is only meaningful to the state that gave it: the calls return TW_EINVAL for a
 * number no identity of st has, or one of a cooldown (series: or of an aggregate without
 * calendar buckets), but cannot tell another state's reference from one of st's own. */
int tw_state_agg_add_ref(tw_state_t *st, tw_state_ref_t ref, const char *key, size_t key_len,
                         int64_t ts_ms, int64_t value);
int tw_state_agg_get_ref(tw_state_t *st, tw_state_ref_t ref, const char *key, size_t key_len,
                         int64_t at_ms, tw_agg_out_t *out);
int tw_state_agg_series_ref(tw_state_t *st, tw_state_ref_t ref, const char *key, size_t key_len,
                            int64_t at_ms, tw_agg_out_t *out, size_t cap, size_t *n);

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
 * tw_state_dedup: has this event already been accepted? event_id is len bytes (1 ≤ len ≤
 * TW_STATE_EVENT_ID_MAX, not NUL-terminated, borrowed for the call), ts_ms its event time,
 * horizon_ms (> 0) how long ids are remembered (--dedup-horizon, 7 days by default).
 * Let N be the newest event time any dedup call has seen, this one included. *dup is true when
 * event_id was recorded with a time ≥ N − horizon_ms (the earlier delivery is still
 * remembered); the caller then drops the event. Otherwise *dup is false and the id is recorded
 * with ts_ms — unless ts_ms < N − horizon_ms, since such a record would be forgotten at once.
 * Records staged since the last commit live in a small in-memory set; tw_state_commit writes
 * them in the same transaction as the state, so records and aggregates vanish together with a
 * crash, and an event re-read after restart is not a duplicate of its uncommitted self.
 * Committed records are in LMDB once, ordered by event time (database `dedup_ts`: appended and
 * purged from the front), and indexed in memory (engine/dedup_set.h: about 50 bytes plus the id
 * per record, stats.dedup_memory_bytes), rebuilt from LMDB when the state opens; so a lookup
 * reads no B-tree and a commit writes no page per id at random. Each commit forgets a bounded
 * number of the oldest records older than N − horizon (the horizon of the latest call),
 * stats.dedup_ids_purged. An id is the same id whatever the event's type or key.
 * Returns 0, TW_EINVAL (len 0, NULL, horizon ≤ 0, |ts_ms| > 2^61), TW_ETOOBIG (len), TW_ENOMEM,
 * On error *dup is false and nothing was recorded. Amortised O(1), in memory.
 */
int tw_state_dedup(tw_state_t *st, const char *event_id, size_t len, int64_t ts_ms,
                   int64_t horizon_ms, bool *dup);

/*
 * tw_state_evict: keep the table bounded; visits at most max_entries entries per call (0 = none),
 * resuming where the previous call stopped, so repeated calls sweep the whole table.
 * watermark_ms is the caller's promise that no later agg_add or agg_value uses a time at or
 * before it (the engine's watermark: highest event time − allowed lateness); INT64_MIN when
 * there is none yet, so that only (b) applies.
 * (a) A sliding-window entry whose every bucket ended at or before watermark_ms − window, or a
 *     calendar entry whose every bucket lies before the window of the bucket holding
 *     watermark_ms, holds nothing for any later time: it is dropped from memory and deleted from
 *     LMDB by the next commit (stats.evicted_expired). Any function.
 * (b) While more than opts.max_keys_in_memory entries are in memory, clean entries not used
 *     since the sweep last passed them (second chance) are dropped from memory only; they reload
 *     from LMDB on next use (stats.evicted_clean). Entries holding nothing are always dropped.
 * Dirty entries are never dropped: call it after tw_state_commit. Cooldown and `all` entries
 * are subject to (b) only. Returns 0, or TW_ENOMEM (the delete list cannot grow; nothing was
 * dropped for that entry).
 */
int tw_state_evict(tw_state_t *st, int64_t watermark_ms, size_t max_entries);

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
 * (*len is set), TW_ESTATE. Names starting with "tw." are the store's own: put refuses them
 * (TW_EINVAL).
 */
int tw_state_meta_put(tw_state_t *st, const char *name, const void *data, size_t len);
int tw_state_meta_get(tw_state_t *st, const char *name, void *buf, size_t cap, size_t *len);

/*
 * tw_state_commit: write every dirty entry, the deletes of evicted expired entries, the staged
 * dedup records (and purge of expired ones), journal records and meta records in one LMDB
 * transaction (growing the map on MDB_MAP_FULL); after it succeeded, the staged dedup ids join the
 * in-memory set of committed ids (room for them is reserved before the transaction). Returns 0,
 * TW_ENOMEM (no room for that set or an encoding buffer) or TW_ESTATE; on error nothing of this
 * batch is written and the in-memory changes stay dirty and staged.
 */
int tw_state_commit(tw_state_t *st);

/*
 * tw_state_copy_compact: write a compacted copy of the committed state (free pages left out) to
 * dir/data.mdb, dir an existing empty directory; what is staged and not committed is not in it.
 * The copy runs in a read transaction, so commits may go on meanwhile (same thread here). This is
 * what a partition checkpoint holds (docs/scaling.md). Returns 0, TW_EINVAL (NULL) or TW_EIO
 * (LMDB could not write it: missing directory, full disk; the reason is on stderr).
 */
int tw_state_copy_compact(tw_state_t *st, const char *dir);

/*
 * tw_state_journal_foreach: call cb for every committed journal record with seq > since, in
 * order; stop early when cb returns non-zero (that value is returned). Returns 0 or TW_ESTATE.
 */
typedef int (*tw_state_journal_cb)(void *ud, uint64_t seq, const char *json, size_t len);

/*
 * tw_state_agg_keys: call cb once for every key of the aggregate spec, committed or staged since
 * the last commit (a dirty entry), in key byte order (LMDB's: bytes, then the shorter first); stop
 * early when cb returns non-zero (returned). Keys added by cb itself are not seen. A key whose
 * expired window was evicted since the last commit is still listed until that commit deletes it
 * (cb reads an empty window). The key bytes are borrowed for the call (not NUL-terminated). cb may
 * read and change state (its own read transaction; the staged keys are copied first). Costs one
 * pass over the dirty entries and a sort of the staged keys of the spec. Returns 0, TW_EINVAL,
 * TW_ENOMEM, TW_ESTATE.
 */
typedef int (*tw_state_key_cb)(void *ud, const char *key, size_t len);
int tw_state_agg_keys(tw_state_t *st, const tw_window_spec_t *spec, tw_state_key_cb cb, void *ud);
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
  uint64_t duplicates;         /* tw_state_dedup calls that answered *dup = true */
  uint64_t dedup_staged;       /* ids recorded since the last commit (in memory) */
  uint64_t dedup_ids_purged;   /* committed dedup records forgotten past the horizon */
  uint64_t dedup_ids_committed; /* ids in the in-memory set of committed ids */
  uint64_t dedup_memory_bytes;  /* bytes that set has allocated (table and id chunks) */
  uint64_t evicted_expired;    /* entries dropped by tw_state_evict (a) */
  uint64_t evicted_clean;      /* entries dropped by tw_state_evict (b) */
  uint64_t entries_rebucketed; /* stored series moved onto the current time zone at load */
} tw_state_stats_t;
void tw_state_stats(const tw_state_t *st, tw_state_stats_t *out);

#endif
