/*
 * tw_nats.h: events over NATS JetStream (docs/scaling.md): the producer (`tutorwatch send
 * --nats`) and the consumer of one partition, used by the engine group (tw_nats_group.h).
 *
 * Layout on the server:
 *   stream EVENTS, subjects tw.events.<partition>, partition = tw_key_shard(institution_id) mod P
 *     (FNV-1a 64), each message one record (a JSON line, or one msgpack map), header
 *     Nats-Msg-Id = event_id (the stream drops a repeat within its duplicate window);
 *   one durable pull consumer per partition and owner, named tw-p<partition>-<engine>-<random>,
 *     AckAll (acknowledging a message acknowledges the earlier ones: one ack per commit),
 *     made by the partition's owner at the position of its state; the server
 *     removes it TW_NATS_CONSUMER_INACTIVE_MS after the last pull (InactiveThreshold).
 * The stream sequence of a message is its input position: a record from NATS carries it as its
 * line and offset (dead-letter files show it), and the partition's LMDB state records the
 * sequence up to which it is committed (tw_pipeline_track_stream).
 *
 * Every NATS failure is reported as TW_EIO with the client library's words in errbuf; the
 * library has no errno. Not thread-safe: one consumer per thread (libnats's own threads are
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
/* A partition consumer's MaxAckPending: messages delivered and waiting for the commit that
 * covers them (the memory bound of a consumer). */
#define TW_NATS_MAX_ACK_PENDING 20000
/* A consumer's AckWait: a message not acknowledged this long after delivery is delivered again
 * (an owner that holds it is then long gone: leases last seconds). */
#define TW_NATS_ACK_WAIT_MS (2LL * 3600 * 1000)
/* A consumer nobody pulls from this long is removed by the server: a dead owner's. */
#define TW_NATS_CONSUMER_INACTIVE_MS (60LL * 1000)

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
 * bounds) to the EVENTS stream at url (one server or a comma-separated list of a cluster's),
 * creating the stream when absent (subjects tw.events.>, file storage, `replicas` copies, 1..5,
 * duplicate window TW_NATS_DUPLICATE_WINDOW_MS), each on tw.events.<partition> with Nats-Msg-Id =
 * event_id. Publishing is asynchronous, at most 4,096 messages awaiting the stream's
 * acknowledgement; a message refused for a transient reason (a lost server, an election) is sent
 * again with the same Nats-Msg-Id; at the end it waits up to 12 × timeout_ms for the last
 * acknowledgements, and returns 0 only when every record was acknowledged. partitions:
 * 1..TW_NATS_PARTITIONS_MAX. A truncated or broken record is published too (its first bytes), so
 * the engine dead-letters it. Blocking; stats may be NULL.
 * Returns 0; TW_EINVAL (partitions out of range); TW_ENOENT / TW_EIO for the input (errno set,
 * errbuf empty); TW_EIO for NATS (connect, stream, publish; errbuf says which); TW_ENOMEM.
 */
int tw_nats_send(const char *url, int partitions, int replicas, const char *path,
                 const tw_source_opts_t *opts, int timeout_ms, tw_nats_send_stats_t *stats,
                 char *errbuf, size_t errcap);

typedef struct tw_nats_consumer tw_nats_consumer_t;

/*
 * tw_nats_consumer_open: make a durable pull consumer of partition on the EVENTS stream, named
 * tw-p<partition>-<owner>-<random> (owner: the engine's id, printable ASCII, at most
 * TW_NATS_ID_MAX bytes), one copy, in memory (it holds nothing the engine's state does not),
 * delivering from after_seq + 1 (after_seq = the sequence the partition's state is committed up
 * to; 0 = from the start), and bind a pull subscription to it. A previous owner's consumer is
 * left to the server's InactiveThreshold. nc and js are a natsConnection* and jsCtx* (void* to keep libnats out of this header),
 * borrowed: they must outlive the consumer. format: per message as the PULL source when AUTO;
 * max_record_bytes: 0 = TW_EVENT_MAX_BYTES (a longer body is delivered cut, to be dead-lettered
 * as too_long). Returns 0 with *out the caller's (tw_nats_consumer_close), TW_EINVAL, TW_EIO
 * (errbuf), TW_ENOMEM.
 */
int tw_nats_consumer_open(void *nc, void *js, int partition, const char *owner,
                          uint64_t after_seq, tw_format_t format, size_t max_record_bytes,
                          tw_nats_consumer_t **out, char *errbuf, size_t errcap);

/* tw_nats_consumer_broken: 1 when nothing more can come from the consumer until
 * tw_nats_consumer_reset, though its server answers (a delivery that never came, a message
 * without its sequences): the owner may make it again at once. 0 otherwise (a consumer whose
 * making failed is retried after a while, not at once) and for NULL. */
int tw_nats_consumer_broken(const tw_nats_consumer_t *c);

/* tw_nats_consumer_name: the name of the consumer now in use ("" for NULL). */
const char *tw_nats_consumer_name(const tw_nats_consumer_t *c);

/*
 * tw_nats_consumer_fetch: fetch up to max messages (fewer when that many already wait for their
 * acknowledgement), waiting up to wait_ms for the first (0: ask without waiting; the answer may
 * come with a later call), and hand each to cb as a record: data the body (borrowed for the
 * call), origin "nats:tw.events.<k>", line and offset_bytes the stream sequence. The messages are
 * kept until tw_nats_consumer_ack covers them. *caught_up is set to 1 when the consumer has
 * nothing more right now (no message, and its count says none is pending; an empty fetch asks
 * the consumer's count at most every 250 ms while it is not known to be zero, and every second
 * once it is, which also tells whether the consumer is still there; each question waits at most
 * 500 ms). Messages that reached the subscription after their pull request expired here are
 * delivered first, one per call (see the libnats 3.4.1 note in nats.c). When
 * TW_NATS_MAX_ACK_PENDING messages wait for their acknowledgement, nothing is fetched and 0 is
 * returned (*caught_up 0): the caller must commit what it holds (see tw_nats_consumer_pending).
 * Returns the number delivered; the callback's non-zero value (the rest of the batch is dropped;
 * it comes again to the next owner, or after a reset); TW_EAGAIN when the fetch failed (a lost
 * server, a leader election), the consumer is gone or does not answer, a message came without
 * its sequences, a delivery of the consumer never came (its consumer sequence skipped one: lost
 * with a connection to a server that went away; the messages after the gap are not delivered),
 * or the consumer's last making failed. In the last three cases nothing is delivered until
 * tw_nats_consumer_reset, which makes the consumer again after the last message delivered (the
 * two before it: tw_nats_consumer_broken); a failure met after some records were delivered
 * returns their count, and TW_EAGAIN with the next call. TW_EINVAL; TW_ENOMEM.
 */
int tw_nats_consumer_fetch(tw_nats_consumer_t *c, int max, int64_t wait_ms, tw_record_cb cb,
                           void *ud, int *caught_up);

/*
 * tw_nats_consumer_ack: acknowledge every kept message with sequence <= done_seq (the partition's
 * committed position, tw_pipeline_stream_done) by acknowledging the newest of them (AckAll) and
 * free them; then flush the ack to the server (at most 2 s). A failed acknowledgement is counted, not fatal: the message comes
 * again only to a consumer recreated below it, which the state's position skips. Returns the
 * number acknowledged.
 */
int tw_nats_consumer_ack(tw_nats_consumer_t *c, uint64_t done_seq);

/*
 * tw_nats_consumer_reset: make a new consumer (a new name), delivering from just after the last
 * message delivered. The kept messages are freed unacknowledged (they belong to the old
 * subscription; the state's position, not an acknowledgement, is what counts). For a consumer
 * whose server went away (fetches keep failing with TW_EAGAIN). Returns 0, TW_EINVAL (NULL),
 * TW_EIO (errbuf; the consumer then has no subscription: fetches fail until a reset succeeds) or
 * TW_ENOMEM.
 */
int tw_nats_consumer_reset(tw_nats_consumer_t *c, char *errbuf, size_t errcap);

/* tw_nats_consumer_pending: messages delivered and not yet acknowledged (0 for NULL). */
size_t tw_nats_consumer_pending(const tw_nats_consumer_t *c);

/* tw_nats_consumer_close: free the consumer (NULL: nothing); the server's consumer stays for the
 * next owner, which recreates it at its own position. */
void tw_nats_consumer_close(tw_nats_consumer_t *c);

#endif
