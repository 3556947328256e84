/*
 * tw_shards.h: N pipelines in N threads, each owning the institutions whose key hashes to it.
 *
 * One reader (the caller's thread) offers raw records; each goes, in arrival order, to the shard
 * that owns its institution_id (FNV-1a of the code, modulo N; records without one go to shard 0,
 * which dead-letters them). A shard is a whole tw_pipeline_t with its own LMDB environment in
 * DIR/shard-K: its own aggregates, cooldowns, dedup, alert journal and input position. The
 * pseudonym key (DIR/pseudonym.key) and the outputs (sinks, dead-letter file) are shared.
 * Every aggregate of the first-cut rule language is keyed by institution_id, so one shard holds
 * all the state an institution's rules read, and the alerts are those of a single pipeline, in a
 * different interleaving (tests compare sorted journals).
 *
 * The shard count is part of the state: a state directory made with N shards is refused with
 * another N (institutions would change shards and lose their state).
 *
 * Each shard has a bounded queue (TW_SHARD_QUEUE_BYTES); the reader blocks while the shard it
 * feeds is full. When serving, the reader also sends each shard its ticks and reloads through the
 * same queues, so they happen in order with the records.
 */
#ifndef TW_SHARDS_H
#define TW_SHARDS_H

#include <stddef.h>
#include <stdint.h>

#include "tw_pipeline.h"
#include "tw_source.h"

#define TW_SHARDS_MAX 64
#define TW_SHARD_QUEUE_BYTES (8u << 20)

typedef struct tw_shards tw_shards_t;

/*
 * tw_shards_open: open n (2..TW_SHARDS_MAX) pipelines under opts->state_dir (shard-0 .. shard-n-1,
 * created as needed), sharing outputs (not owned: the caller closes them after tw_shards_close)
 * and the pseudonym key in state_dir, and start their threads. Errors: TW_EINVAL (n out of range,
 * or the state was made with another shard count; errbuf says which), or any tw_pipeline_open
 * error, with the message in errbuf.
 */
int tw_shards_open(const tw_pipeline_opts_t *opts, int n, tw_outputs_t *outputs, tw_shards_t **out,
                   char *errbuf, size_t errcap);

/*
 * tw_shards_track_input: every shard tracks the input file (see tw_pipeline_track_input); the
 * reader must start at the returned offset, the earliest point any shard needs (records before
 * a shard's own point are skipped by that shard). Call before the first record.
 */
int tw_shards_track_input(tw_shards_t *s, const char *path, uint64_t *start_offset_bytes,
                          uint64_t *start_line);

/* tw_shards_republish: tw_pipeline_republish in every shard; *count is the total. */
int tw_shards_republish(tw_shards_t *s, uint64_t *count);

/*
 * tw_shards_record: a tw_record_cb (ud = the shards): copy the record into its shard's queue,
 * waiting while that queue is full. Returns 0, or the first failure of a shard (which stops).
 */
int tw_shards_record(void *ud, const tw_record_t *rec);

/*
 * tw_shards_tick: serving: every shard runs tw_pipeline_tick(wall_ms) and commits what is
 * pending, after the records already queued. Returns 0 or the first shard failure.
 */
int tw_shards_tick(tw_shards_t *s, int64_t wall_ms);

/*
 * tw_shards_reload: read the rule file once and have every shard reload from those bytes (after
 * the records already queued); waits for all. On success msg holds a shard's report (all agree);
 * otherwise the first failure's located error, and the shards that refused keep their rules (a
 * file that does not compile is refused by all). Returns 0 or the error.
 */
int tw_shards_reload(tw_shards_t *s, const char *rules_path, char *msg, size_t cap);

/*
 * tw_shards_finish: the input has ended: every shard processes what it holds (tw_pipeline_flush),
 * commits, and its thread ends. Returns 0 or the first shard failure.
 */
int tw_shards_finish(tw_shards_t *s);

/* tw_shards_stats: the shards' counters added up (valid after tw_shards_finish). */
void tw_shards_stats(const tw_shards_t *s, tw_pipeline_stats_t *out);

/* tw_shards_close: stop any running thread (after finish there is none), close the pipelines,
 * free everything; NULL accepted. Returns the first close failure. */
int tw_shards_close(tw_shards_t *s);

/* tw_shard_of: the shard (0..n-1) that owns a raw record: its institution_id, found without a full
 * decode (JSON key scan, or a msgpack map walk), FNV-1a hashed; 0 when none is found. */
int tw_shard_of(const tw_record_t *rec, int n);

/* tw_shards_route: the shards (bit k set) that must see rec: its primary shard (tw_shard_of,
 * stored in *primary_shard), plus, for rules needing it (TW_ROUTE_* flags of
 * tw_pipeline_route_needs), the owners of its region's city and province codes (from a key scan
 * of "region"), or every shard (TW_ROUTE_ALL: keys of other fields, found only by decoding).
 * The other shards get a copy flagged TW_REC_SECONDARY. n ≤ TW_SHARDS_MAX (64). */
uint64_t tw_shards_route(const tw_record_t *rec, int n, unsigned needs, int *primary_shard);

#endif
