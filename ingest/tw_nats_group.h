/*
 * tw_nats_group.h: a group of engines sharing the partitions of a NATS JetStream event stream
 * (`tutorwatch run --nats`; design and operation in docs/scaling.md).
 *
 * Every engine of the group runs tw_nats_group_run with the same URL, partition count P and rule
 * file. Partition ownership is a lease in the JetStream key-value bucket tw-leases (keys p.<K>;
 * the bucket's TTL is the lease time): an engine takes a free partition with a create (which
 * fails when the key exists), renews it by compare-and-set on the revision it holds, and gives it
 * up by deleting it. A lease not renewed within the lease time expires with its key, and the
 * partition is free for another engine. The holder stops using a partition once it could not
 * renew it for lease - lease/4 (measured from before its last successful renewal, so before the
 * server can expire it): that, and the revision check of every renewal, keep two engines from
 * processing one partition at once. Each engine also keeps a key engines.<id> alive; the live
 * engines split the partitions evenly (ceil(P / engines) each): an engine holding more gives the
 * extra ones up (after a checkpoint), one holding fewer takes free ones.
 *
 * A partition an engine owns is one pipeline (its own LMDB environment in DIR/partition-K, its
 * own watermark, dedup and alert journal) fed by a durable pull consumer of the partition; messages
 * are acknowledged after the commit that covers them, and the commit records the stream sequence
 * it covers (tw_pipeline_track_stream). A compact copy of the partition's LMDB environment is put
 * into the object store tw-checkpoints (object partition-K, tagged with that sequence) every
 * checkpoint interval and whenever the engine gives the partition up. An engine taking a
 * partition uses its local state when it is as new as the checkpoint, else restores the
 * checkpoint; then it recreates the consumer just after the sequence the state covers. Events it
 * sees again are skipped by position; alerts it raises again carry the same alert_id, which the
 * ALERTS stream drops (Nats-Msg-Id).
 *
 * The group shares one pseudonym key (kept in the key-value bucket tw-group, created from the
 * first engine's DIR/pseudonym.key), so a partition's pseudonyms stay the same whichever engine
 * holds it. Anyone who can read that bucket can compute pseudonyms: protect the NATS account.
 *
 * Watermarks are per partition. When a partition has nothing more to read (its consumer has no
 * pending message) for a second, the events it holds for the watermark are processed (and a live
 * stream's watermark follows the wall clock, as in serving). Owners report in their leases each
 * partition's newest event time and whether it is idle; when every partition is idle, each runs
 * its scheduled rules up to the newest event time of the whole stream, as a batch run over all the
 * events does at its end.
 *
 * Consumers are named tw-p<K>-<engine>-<random> and made anew on each take (see tw_nats.h); the
 * lease value {"engine", "idle", "max_event_ms", "consumer"} names the one in use.
 */
#ifndef TW_NATS_GROUP_H
#define TW_NATS_GROUP_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "tw_pipeline.h"
#include "tw_source.h"

#define TW_NATS_LEASE_BUCKET "tw-leases"
#define TW_NATS_GROUP_BUCKET "tw-group"
#define TW_NATS_CHECKPOINT_BUCKET "tw-checkpoints"
#define TW_NATS_DEFAULT_LEASE_MS 5000
#define TW_NATS_DEFAULT_CHECKPOINT_MS 30000
#define TW_NATS_ENGINE_ID_MAX 64

typedef struct tw_nats_group_opts {
  const char *url;       /* nats://host:port, or a comma-separated list of a cluster's servers */
  int partitions;        /* P, 1..TW_NATS_PARTITIONS_MAX; the same for every engine and sender */
  int replicas;          /* copies of the streams and buckets it creates (1..5); 0 = 1 */
  const char *engine_id; /* unique in the group ([A-Za-z0-9_-], at most TW_NATS_ENGINE_ID_MAX);
                            NULL: "<hostname>-<pid>" */
  int64_t lease_ms;      /* lease time (ms, >= 1000); 0 = TW_NATS_DEFAULT_LEASE_MS. A dead
                            engine's partitions move after about this long */
  int64_t checkpoint_ms; /* ms between checkpoints of a partition that changed; 0 = default
                            (TW_NATS_DEFAULT_CHECKPOINT_MS); < 0: only when giving one up */
  int fetch_batch;       /* messages per fetch and partition; 0 = 1000 */
  tw_format_t format;    /* AUTO: per message */
  /* The pipelines' options: rules_path, state_dir (the engine's root: partition-K directories and
   * pseudonym.key live there) and shared_outputs (the sinks, including the ALERTS sink, and the
   * dead-letter file; required) must be set; live (true), pseudonym_dir (state_dir), on_commit
   * (none) and the shard fields (none) are set by the group; batch_events 0 means 1000 (records
   * per partition between commits; a partition also commits every 200 ms and when caught up).
   * Copied. */
  tw_pipeline_opts_t pipeline;
  const volatile sig_atomic_t *stop; /* a signal handler sets it: the engine commits, checkpoints
                                        and gives up every partition, then returns 0 */
} tw_nats_group_opts_t;

typedef struct tw_nats_group_stats {
  uint64_t records;                 /* messages handed to the pipelines */
  uint64_t commits;                 /* pipeline commits followed by acknowledgements */
  uint64_t acquired, released, lost; /* partition leases taken, given up, lost (not renewed) */
  uint64_t restored, checkpoints;   /* checkpoints restored and written */
  uint64_t alerts;                  /* alerts raised by this engine's pipelines */
  uint64_t republished;             /* journal alerts handed to the sinks again on taking a
                                       partition (the ALERTS stream drops those it holds) */
} tw_nats_group_stats_t;

/*
 * tw_nats_group_run: join the group and process the partitions this engine holds until *stop is
 * set, logging each lease taken, given up or lost and each checkpoint restored to stderr. Blocks.
 * A transient NATS failure (a lost node, a leader election) is retried; partitions whose lease
 * could not be renewed in time are dropped without committing (their events are processed again
 * by the next owner from its position).
 * Returns 0 after a stop; TW_EINVAL (bad options; errbuf says which); TW_EIO (NATS unreachable at
 * start or the connection closed for good; a pseudonym key that differs from the group's; errbuf);
 * TW_ESTATE / TW_ENOMEM / a pipeline error (a partition's pipeline failed: the engine stops, its
 * leases expire and the others take its partitions). stats may be NULL.
 */
int tw_nats_group_run(const tw_nats_group_opts_t *opts, tw_nats_group_stats_t *stats,
                      char *errbuf, size_t errcap);

#endif
