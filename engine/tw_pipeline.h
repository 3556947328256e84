/*
 * tw_pipeline.h: the engine's data flow for one shard, from raw record to published alert.
 *
 *   record → decode + validate (bad → dead-letter file with the reason; counted; never a crash)
 *   → pseudonymise personal identifiers → update the aggregates the event feeds → evaluate the
 *   rules the event triggers → alerts (cooldown, deterministic ids) → alert journal (same LMDB
 *   transaction as the state, in group commits) → sinks, after the commit that made them durable.
 *
 * A group commit happens every batch_events records, on tw_pipeline_commit, and at close.
 * Alerts are handed to the sinks only after the commit that journals them succeeds, so nothing a
 * subscriber saw can be lost from the journal by a crash.
 *
 * Not thread-safe: one pipeline per thread.
 */
#ifndef TW_PIPELINE_H
#define TW_PIPELINE_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tw_rules.h"
#include "tw_sink.h"
#include "tw_source.h"

typedef struct tw_pipeline tw_pipeline_t;

#define TW_OUTPUTS_MAX_SINKS 8

/*
 * The outputs of one or more pipelines: the sinks and the dead-letter file, behind one mutex, so
 * several shards (threads) can share them. A pipeline opened without shared outputs owns its
 * own. Every write and flush takes the lock; alerts and rejected events are rare next to events,
 * so it is not contended on the hot path.
 */
typedef struct tw_outputs {
  pthread_mutex_t lock;
  FILE *dead_letter;
  char dead_letter_path[4096];
  tw_sink_t *sinks[TW_OUTPUTS_MAX_SINKS];
  size_t n_sinks;
  bool no_sync; /* no fdatasync of the dead-letter file before commits */
  bool open;
} tw_outputs_t;

/* tw_outputs_open: open the dead-letter file (append; NULL path = "dead-letter.jsonl"; a torn last
 * line is cut) and prepare for sinks. Returns 0 or TW_EIO with a message in errbuf. */
int tw_outputs_open(tw_outputs_t *o, const char *dead_letter_path, bool no_sync, char *errbuf,
                    size_t errcap);

/* tw_outputs_add_sink: take ownership of sink. Returns 0 or TW_ETOOBIG (8 sinks already). */
int tw_outputs_add_sink(tw_outputs_t *o, tw_sink_t *sink);

/* tw_outputs_close: close the sinks (flushing them) and the dead-letter file. Returns 0 or TW_EIO.
 * A zeroed or closed struct is accepted. */
int tw_outputs_close(tw_outputs_t *o);

/* The group commit's record cap when serving (run --listen, --ingest). A serving engine also
 * commits whenever it has emptied its socket and at least every 100 ms, so the cap only binds
 * under sustained load: there each commit rewrites every state entry touched since the last
 * one, and a small cap made commits the bottleneck (1,000 records: at 50k events/s on 2,000
 * institutions the engine fell behind, p99 3.4 s; 10,000: it keeps up, p99 73 ms, and reaches
 * 100k events/s; bench/RESULTS.md). */
#define TW_PIPELINE_SERVE_BATCH 10000

typedef struct tw_pipeline_opts {
  const char *rules_path;       /* required: the YAML rule file */
  const char *schema_path;      /* NULL: schema.yaml beside the rules file, else the shipped one */
  const char *state_dir;        /* required: LMDB state and the pseudonym key live here */
  const char *dead_letter_path; /* NULL: "dead-letter.jsonl" in the current directory; opened
                                   (append, created if absent) at open, so a bad path fails early */
  size_t batch_events;          /* group commit every N records; 0 = 100,000 (serving sets
                                   TW_PIPELINE_SERVE_BATCH) */
  bool no_sync;                 /* LMDB without fsync (tests, benchmarks) */
  /* Event time (docs/engine.md). Watermark = newest event time seen - allowed lateness. */
  int64_t allowed_lateness_ms;  /* < 0: the default, 1 h */
  int64_t max_future_skew_ms;   /* < 0: the default, 10 min */
  int64_t dedup_horizon_ms;     /* how long event_ids are remembered; < 0: 7 d; 0: no dedup */
  tw_outputs_t *shared_outputs; /* NULL: the pipeline opens and owns its outputs; else shared
                                   by several pipelines (shards), which neither open nor close it */
  const char *pseudonym_dir;    /* where pseudonym.key lives; NULL = state_dir */
  bool live;                    /* serving (wall clock bounds the future; an idle stream's
                                   watermark follows the wall clock) rather than replaying */
  const char *const *params_set; /* "name=value" overrides of the rule file's params (--set);
                                    kept for reloads, so must outlive the pipeline */
  size_t n_params_set;
  int shard_index, n_shards; /* one of n_shards (> 1): the pipeline keeps only the keys whose
                                hash (tw_key_shard) is shard_index; 0, 0: every key */
  const volatile sig_atomic_t *stop; /* NULL, or a flag a signal handler sets: scheduled sweeps
                                        stop between two sweeps (their clock is kept, so a
                                        restart goes on from there) */
  int64_t idle_flush_ms;     /* serving: after this long without a record, the events held for
                                the watermark are processed (the watermark moves up to the newest
                                event time). 0: the default, 1 s; < 0: never (only the wall
                                clock of a live stream, and the end, release them) */
  /* Acknowledged ingest: called at the end of every successful tw_pipeline_commit (same thread)
   * with the input position below which every record read is processed and committed: the
   * offset_bytes of the oldest record still held (reorder buffer, suspects), else the end of the
   * last record read. NULL: not called. */
  void (*on_commit)(void *ud, uint64_t finished_below_offset);
  void *on_commit_ud;
  /* Investigations (docs/replay.md). */
  struct tw_recorder *record; /* run --record: every accepted event (pseudonymised, deduplicated,
                                 before rules) is appended to the record's stream shard_index
                                 (0 without shards), synced before each group commit; borrowed,
                                 must outlive the pipeline. NULL: nothing is recorded */
  bool from_record;           /* the records are events read back from a record (replay): already
                                 pseudonymised and checked against the clock when recorded, so
                                 they are neither pseudonymised again nor held as suspected
                                 future timestamps */
  const struct tw_pipeline_observer *observer; /* NULL, or told of aggregate updates and alerts
                                                  (replay --explain); borrowed */
} tw_pipeline_opts_t;

#define TW_DEFAULT_IDLE_FLUSH_MS 1000

/*
 * What a replay observes inside the pipeline (replay --explain). Both are called on the
 * pipeline's thread, in processing order; pointers are valid for the call only.
 */
typedef struct tw_pipeline_observer {
  /* ev (an input event, or an alert re-entering as an event) was added to aggregate agg under
   * key, with value (1 for count; the field's value; the hash for distinct). */
  void (*agg_added)(void *ud, const tw_agg_def_t *agg, const char *key, size_t key_len,
                    const tw_event_t *ev, int64_t value);
  /* rule raised alert a (after its cooldown allowed it; a->message rendered, a->seq not yet
   * set). ctx is the context its condition was evaluated in: its callbacks read the state as the
   * rule saw it, so tw_expr_eval_trace(rule->when, copy of ctx, ...) gives the same values.
   * A non-zero return is an engine failure and stops the pipeline. */
  int (*alert_raised)(void *ud, const tw_rule_t *rule, const tw_alert_t *a,
                      const tw_eval_ctx_t *ctx);
  void *ud;
} tw_pipeline_observer_t;

/* What the shard router must read from a record to send it to every shard that owns one of its
 * keys (tw_pipeline_route_needs). */
#define TW_ROUTE_REGION 1u /* aggregates or rules keyed by city or province: route by region too */
#define TW_ROUTE_ALL 2u    /* keyed by another field: every shard gets every record */

/* tw_key_shard: the shard (0..n-1) that owns a key: FNV-1a 64 of its bytes mod n; 0 for n ≤ 1. */
int tw_key_shard(const char *key, size_t len, int n);

/* tw_pipeline_route_needs: TW_ROUTE_* flags for the current rules (0: by institution only). */
unsigned tw_pipeline_route_needs(const tw_pipeline_t *p);

#define TW_DEFAULT_ALLOWED_LATENESS_MS (60 * 60 * 1000)
#define TW_DEFAULT_MAX_FUTURE_SKEW_MS (10 * 60 * 1000)
#define TW_DEFAULT_DEDUP_HORIZON_MS (7LL * 24 * 60 * 60 * 1000)

typedef struct tw_pipeline_stats {
  uint64_t read;        /* records offered */
  uint64_t accepted;    /* decoded, valid, processed */
  uint64_t rejected;    /* dead-lettered */
  uint64_t alerts;      /* alerts raised (after cooldown) */
  uint64_t suppressed;  /* rule matches held back by a cooldown */
  uint64_t eval_errors; /* rule evaluations that failed (overflow, regex limit...) */
  uint64_t commits;     /* group commits */
  uint64_t sink_errors; /* failed sink writes */
  uint64_t late;        /* accepted behind the watermark (inside retention), processed at once */
  uint64_t too_late;    /* rejected: older than the watermark minus the longest window */
  uint64_t future_skew; /* rejected: too far ahead of the wall clock or of the stream */
  uint64_t held;        /* events waiting in the reorder buffer or as suspects now */
  uint64_t duplicates;  /* events whose event_id was already processed within the horizon */
  uint64_t evicted;     /* state entries dropped: expired behind the watermark, or idle in memory */
  uint64_t incomplete;  /* a tracked file ended inside its last record: left for the grown file */
  uint64_t reentered;   /* alerts that re-entered as `alert` events (composite rules) */
} tw_pipeline_stats_t;

/*
 * tw_pipeline_open: load the schema and rules, open the state and the pseudonym key.
 * On failure returns the TW_E... code and writes a message for a person into errbuf
 * ("rules/packs/default.yaml:12:9: unknown field 'amout_fen' (did you mean 'amount_fen'?)").
 * On success *out is owned by the caller (tw_pipeline_close).
 */
int tw_pipeline_open(const tw_pipeline_opts_t *opts, tw_pipeline_t **out, char *errbuf,
                     size_t errcap);

/* tw_pipeline_add_sink: publish alerts to sink too; the pipeline takes ownership on success.
 * Returns 0, or TW_ETOOBIG when 8 sinks are already attached. */
int tw_pipeline_add_sink(tw_pipeline_t *p, tw_sink_t *sink);

/*
 * tw_pipeline_record: process one raw record (a tw_record_cb: pass p as ud). Rejected records
 * go to the dead-letter file and return 0: bad input never stops the run. Returns non-zero only
 * for failures of the engine itself (TW_ESTATE, TW_ENOMEM, TW_EIO on the dead-letter file), which
 * stop the source's poll.
 */
int tw_pipeline_record(void *p, const tw_record_t *rec);

/*
 * tw_pipeline_track_input: make the position in the input file part of every group commit, and
 * say where a run on this state should resume. path must name a regular file. A committed
 * position is reused only for the same file: the BLAKE2b hashes of its first 4 KiB and of the
 * 4 KiB before the committed offset must match what was committed (a file that has grown since
 * matches; a different or rewritten file does not and is read from the start). On return
 * *start_offset_bytes and *start_line are the resume point (both 0 = from the start).
 * Returns 0, TW_EIO (cannot open or read path), TW_ESTATE, TW_ENOMEM.
 */
int tw_pipeline_track_input(tw_pipeline_t *p, const char *path, uint64_t *start_offset_bytes,
                            uint64_t *start_line);

/*
 * tw_pipeline_flush: the input has ended (or the engine is stopping): events held as suspected
 * future timestamps that no later event contradicted are accepted, and every event in the reorder
 * buffer is processed in event-time order. Returns 0 or an engine failure (TW_ESTATE, TW_ENOMEM,
 * TW_EIO).
 */
int tw_pipeline_flush(tw_pipeline_t *p);

/* tw_pipeline_max_event_time: the newest event time accepted, or INT64_MIN before any. */
int64_t tw_pipeline_max_event_time(const tw_pipeline_t *p);

/*
 * tw_pipeline_sweep_until: run the scheduled sweeps due at or before limit_ms (after
 * tw_pipeline_flush). Shards use it at the end of a replay, so every shard sweeps up to the
 * newest event time of the whole input, not only of its own events. Returns as tw_pipeline_flush.
 */
int tw_pipeline_sweep_until(tw_pipeline_t *p, int64_t limit_ms);

/*
 * tw_pipeline_tick: called periodically when serving (live) with the wall clock in epoch ms;
 * when no record has arrived for 1 s, the watermark advances to the newest event time seen and
 * the events held are processed (a pause ends the wait for stragglers), then committed. No
 * effect when not live.
 * Returns as tw_pipeline_flush.
 */
int tw_pipeline_tick(tw_pipeline_t *p, int64_t wall_ms);

/*
 * tw_pipeline_track_stream: the input is a replicated stream (NATS JetStream) whose records carry
 * their stream sequence as line, in increasing order: every commit records, in the same
 * transaction as the state, the sequence up to which every record is processed (records held for
 * the watermark stop it before them), and records at or below it are skipped from now on.
 * *done_seq receives the committed sequence (0: none yet); the source resumes after it. Call once,
 * before the first record. Returns 0, TW_ESTATE (a corrupt position record) or the state's error
 * reading it (tw_state_meta_get).
 */
int tw_pipeline_track_stream(tw_pipeline_t *p, uint64_t *done_seq);

/* tw_pipeline_stream_done: the sequence the last commit recorded (0 when not tracking). */
uint64_t tw_pipeline_stream_done(const tw_pipeline_t *p);

/*
 * tw_pipeline_checkpoint: commit, then write a compacted copy of the committed state (LMDB
 * mdb_env_copy2 with MDB_CP_COMPACT) to dir/data.mdb (dir exists and is empty); *done_seq (may be
 * NULL) receives the stream sequence the copy covers. Opening a pipeline on a directory holding
 * that copy resumes the partition exactly there. Returns 0, a tw_pipeline_commit error, or TW_EIO.
 */
int tw_pipeline_checkpoint(tw_pipeline_t *p, const char *dir, uint64_t *done_seq);

/*
 * tw_pipeline_republish: call once after the sinks are attached. Alerts that a previous run
 * committed to the journal but may not have handed to its sinks (it was killed between a commit
 * and the next) are handed to the sinks now, in journal order, byte for byte; *count says how
 * many. Delivery to sinks is thus at least once: a consumer that saw an alert before the crash
 * can see it again, with the same alert_id. Returns 0, TW_ESTATE.
 */
int tw_pipeline_republish(tw_pipeline_t *p, uint64_t *count);

/*
 * tw_pipeline_reload: load the rule file at rules_path again (SIGHUP when serving). On success the
 * new rules apply from the next event; an aggregate whose definition is unchanged keeps its state
 * (state is named by the definition's fingerprint), a new or changed one starts empty, and msg
 * says which ("5 rules, 4 aggregates; keep state: a, b; start empty: c"). What was staged under
 * the old rules is committed and published first. On failure msg holds the located error
 * ("file:line:col: message") and the old rules go on. Returns 0, the loader's error
 * (TW_EPARSE, TW_EINVAL, TW_ETYPE, TW_ENOENT, TW_ETOOBIG), or a commit failure.
 */
int tw_pipeline_reload(tw_pipeline_t *p, const char *rules_path, char *msg, size_t cap);

/* tw_pipeline_reload_buffer: as tw_pipeline_reload, from the rule file's bytes (name is used in
 * error locations), so several shards load exactly the same rules. */
int tw_pipeline_reload_buffer(tw_pipeline_t *p, const char *name, const char *data, size_t len,
                              char *msg, size_t cap);

/* tw_pipeline_commit: group commit now (state + journal + meta), then publish the alerts it made
 * durable and flush the sinks. Returns 0 or TW_ESTATE / TW_EIO. */
int tw_pipeline_commit(tw_pipeline_t *p);

/* tw_pipeline_pending: accepted events not yet committed. */
uint64_t tw_pipeline_pending(const tw_pipeline_t *p);

void tw_pipeline_stats(const tw_pipeline_t *p, tw_pipeline_stats_t *out);

/* tw_pipeline_dead_letter_path: where rejected events go (static for the pipeline's life). */
const char *tw_pipeline_dead_letter_path(const tw_pipeline_t *p);

/* tw_pipeline_close: commit what is pending, close sinks, state, rules; NULL accepted.
 * Returns the result of the final commit (0 or TW_ESTATE / TW_EIO). */
int tw_pipeline_close(tw_pipeline_t *p);

/*
 * tw_pipeline_abandon: free the pipeline WITHOUT committing: what it processed since its last
 * commit is dropped, and no pending alert reaches the sinks. For a partition whose lease was lost
 * (another engine now owns it and will process those events again from its own position). The
 * committed state stays as it was. NULL: no effect.
 */
void tw_pipeline_abandon(tw_pipeline_t *p);

#endif
