/*
 * tw_acked.h: acknowledged ingest: the engine's ROUTER source ("zmq-router", `run --ingest`) and
 * its client (`tutorwatch send --acked`).
 *
 * Protocol. A client (DEALER) sends batches as one multipart message:
 *   [batch sequence number (ASCII decimal, 1..2^63), record, record, ...]
 * each record one JSON line or one msgpack map (format per record as on the PULL endpoint), at
 * most TW_ACKED_BATCH_MAX records of at most 256 KiB each (a larger frame drops the connection;
 * records above 64 KiB are dead-lettered as too_long). The engine replies [batch sequence number]
 * once every record of the batch has been processed (or dead-lettered, or found a duplicate) and
 * committed in LMDB (tw_pipeline_opts_t.on_commit). A batch it cannot parse is dropped and logged,
 * never acknowledged. Acknowledgements to one client come in the order its batches arrived.
 *
 * Exactly once: the client keeps every unacknowledged batch and sends them again, oldest first,
 * after a reconnect or a silence; the engine's dedup by event_id makes the repeats count once.
 */
#ifndef TW_ACKED_H
#define TW_ACKED_H

#include <stdint.h>

#include "tw_push.h"
#include "tw_source.h"

#define TW_ACKED_BATCH_MAX 1000     /* records in one batch */
#define TW_ACKED_PENDING_MAX 100000 /* batches received and not yet acknowledged (engine) */

/*
 * tw_acked_committed: tell a "zmq-router" source that every record below finished_below_offset
 * (the pipeline's on_commit argument) is committed: it acknowledges each batch that lies wholly
 * below it. No effect on other sources or NULL. Same thread as the source's poll.
 */
void tw_acked_committed(tw_source_t *src, uint64_t finished_below_offset);

typedef struct tw_acked_stats {
  uint64_t records, bytes; /* records read from the input and sent (first time) */
  uint64_t batches;        /* batches acknowledged */
  uint64_t resent;         /* batches sent again after a reconnect or silence */
} tw_acked_stats_t;

/*
 * tw_push_acked: send every record of path ("-" = stdin) in batches of batch_records (1..
 * TW_ACKED_BATCH_MAX), at most window batches unacknowledged at a time, and return once all are
 * acknowledged. After a disconnect the unacknowledged batches are sent again, oldest first,
 * before anything new; so are they when no acknowledgement arrives for 2 s. Gives up when the
 * engine has been unreachable, or has acknowledged nothing, for timeout_ms (TW_EZMQ, errno
 * EAGAIN). keys: NULL or CURVE keys. Memory: window × batch records. Blocking; owns its context.
 * Returns 0, TW_ENOENT / TW_EIO (input; errno), TW_EZMQ, TW_EINVAL, TW_ENOMEM.
 */
int tw_push_acked(const char *path, const tw_source_opts_t *opts, const char *endpoint,
                  int timeout_ms, const tw_push_keys_t *keys, int batch_records, int window,
                  tw_acked_stats_t *stats);

#endif
