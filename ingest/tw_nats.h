/*
 * tw_nats.h: events over NATS JetStream (docs/scaling.md): the producer (`tutorwatch send --nats`)
 * and the engine's source (`tutorwatch run --nats`).
 *
 * Layout on the server:
 *   stream EVENTS, subjects tw.events.<partition>, partition = tw_key_shard(institution_id) mod P,
 *     each message one record (a JSON line without its newline, or one msgpack map), header
 *     Nats-Msg-Id = event_id (the stream drops a repeat within its duplicate window);
 *   one durable pull consumer per partition, named tw-p<partition>, explicit acks.
 * The stream sequence of a message is its input position: a record from NATS carries it as its
 * line (dead-letter files show it); the consumer's ack floor is how far a partition is done.
 *
 * Every NATS failure is reported as TW_EIO with the client library's words in errbuf; the
 * library has no errno. Not thread-safe: one source per thread (libnats's own threads are
 * internal to it).
 */
#ifndef TW_NATS_H
#define TW_NATS_H

#include <stddef.h>
#include <stdint.h>

#include "tw_source.h"

#define TW_NATS_EVENTS_STREAM "EVENTS"
#define TW_NATS_ALERTS_STREAM "ALERTS"
#define TW_NATS_PARTITIONS_MAX 1024
/* How long a stream remembers a Nats-Msg-Id to drop a repeat: longer than any restart or
 * failover we plan for; the server keeps one entry per message inside it. */
#define TW_NATS_DUPLICATE_WINDOW_MS (24LL * 3600 * 1000)

/*
 * tw_nats_partition: the partition (0..partitions-1) of an institution's credit code: FNV-1a 64
 * of its bytes mod partitions (tw_key_shard), the same hash the engine's shards use.
 */
int tw_nats_partition(const char *institution_id, size_t len, int partitions);

#define TW_NATS_ID_MAX 128 /* bytes of an event_id or institution_id used as id or key */

/*
 * tw_nats_record_ids: read event_id and institution_id from one record (JSON object, or msgpack
 * map when format is TW_FORMAT_MSGPACK; AUTO decides by the first byte) into event_id and
 * institution_id (each TW_NATS_ID_MAX + 1 bytes, NUL-terminated). A field that is absent, not a
 * string, empty, longer than TW_NATS_ID_MAX or holding a byte outside printable ASCII (it would
 * break a NATS header line) comes back as "", as do both when the record does not parse.
 * Bounded by len. Never fails.
 */
void tw_nats_record_ids(const char *data, size_t len, tw_format_t format, char *event_id,
                        char *institution_id);

typedef struct tw_nats_send_stats {
  uint64_t records, bytes; /* published and acknowledged by the stream */
  uint64_t duplicates;     /* acknowledged as duplicates (Nats-Msg-Id seen within the window) */
  uint64_t unkeyed;        /* records without a readable institution_id: sent to partition 0
                              without Nats-Msg-Id, for the engine to dead-letter */
} tw_nats_send_stats_t;

/*
 * tw_nats_send: publish every record of path ("-" = stdin, read with the file source and its
 * bounds) to the EVENTS stream of the server at url (creating the stream when absent, with the
 * subjects tw.events.> and TW_NATS_DUPLICATE_WINDOW_MS), each on tw.events.<partition> with
 * Nats-Msg-Id = event_id, waiting for each publish acknowledgement (at most timeout_ms each).
 * partitions: 1..TW_NATS_PARTITIONS_MAX. A truncated or broken record is published too (its
 * first bytes), so the engine dead-letters it. Blocking; stats may be NULL.
 * Returns 0; TW_EINVAL (partitions out of range); TW_ENOENT / TW_EIO for the input (errno set,
 * errbuf empty); TW_EIO for NATS (connect, stream, publish; errbuf says which); TW_ENOMEM.
 */
int tw_nats_send(const char *url, int partitions, const char *path, const tw_source_opts_t *opts,
                 int timeout_ms, tw_nats_send_stats_t *stats, char *errbuf, size_t errcap);

typedef struct tw_nats_source_opts {
  const char *url;         /* nats://host:port; borrowed for the call */
  int partitions;          /* P, 1..TW_NATS_PARTITIONS_MAX */
  const int *owns;         /* the partitions this engine consumes (each 0..P-1, no repeats) */
  size_t n_owns;           /* 1..P */
  int batch;               /* messages per fetch and partition; 0 = 256 */
  int64_t ack_wait_ms;     /* consumer AckWait: a message not acknowledged this long after its
                              delivery is delivered again; 0 = 10 min */
  int max_ack_pending;     /* per consumer; 0 = 20,000 (the memory bound of the source) */
  tw_format_t format;      /* AUTO: per message, as the PULL source */
  size_t max_record_bytes; /* 0 = TW_EVENT_MAX_BYTES */
} tw_nats_source_opts_t;

/*
 * tw_nats_source_open: connect, create the EVENTS stream if absent, and for each owned partition
 * create (or replace) its durable pull consumer tw-p<k> so that delivery starts right after the
 * consumer's ack floor: every message a previous run fetched but did not acknowledge is
 * delivered again at once and in stream order, before anything newer. A crashed run's held
 * messages thus come back in their order instead of after AckWait.
 *
 * The source's poll fetches up to max_records messages and delivers them merged in stream-sequence
 * order over the owned partitions (a batch run's order), waiting at most about 50 ms in all when
 * none is available (up to 1 s for a partition whose consumer said messages were pending), as
 * records: data the message
 * body (borrowed for the callback), origin "nats:tw.events.<k>", line the stream sequence,
 * offset_bytes a position in the concatenation of the bodies delivered since open. It never
 * acknowledges by itself: see tw_nats_committed. fd is -1 (poll itself waits, as said).
 * poll returns the number delivered, the callback's non-zero value, TW_EIO (lost connection;
 * the run should stop: nothing unacknowledged is lost) or TW_ENOMEM.
 *
 * Returns 0 with *out owned by the caller (vt->close: the messages not acknowledged are left for
 * the next run), TW_EINVAL (bad options), TW_EIO (NATS; errbuf), TW_ENOMEM.
 */
int tw_nats_source_open(const tw_nats_source_opts_t *opts, tw_source_t **out, char *errbuf,
                        size_t errcap);

/*
 * tw_nats_committed: every record delivered below finished_below_offset (the pipeline's
 * on_commit argument) is committed: acknowledge its message, in delivery order, and free it.
 * A failed acknowledgement is counted, not fatal: the message comes again and the engine's dedup
 * by event_id drops it. When something was acknowledged it waits (at most 2 s) for the
 * acknowledgements to reach the server, so a crash right after loses none that a commit covered.
 * No effect on NULL or on another source. Same thread as poll.
 */
void tw_nats_committed(tw_source_t *src, uint64_t finished_below_offset);

/* tw_nats_source_pending: messages delivered and not yet acknowledged (0 for NULL). */
size_t tw_nats_source_pending(const tw_source_t *src);

#endif
