/*
 * tw_push.h: the core of `tutorwatch send`: read records from a file or stdin with the file
 * source and PUSH each, as one ZeroMQ message, to an engine's PULL endpoint ("zmq-pull" source).
 */
#ifndef TW_PUSH_H
#define TW_PUSH_H

#include <stdint.h>

#include "tw_source.h"

typedef struct tw_push_stats {
  uint64_t records; /* messages sent, one per record */
  uint64_t bytes;   /* payload bytes sent */
  uint64_t flagged; /* of which truncated or broken (sent anyway: the engine dead-letters) */
} tw_push_stats_t;

/*
 * tw_push_file: connect a PUSH socket to endpoint and send every record of path ("-" = stdin),
 * read as opts says (see tw_source_vt_t.open of "file"). A truncated or broken record is sent as
 * its first TW_REC_HEAD_BYTES, so the engine dead-letters it rather than losing it silently.
 *
 * ZMQ_IMMEDIATE is set, so a send waits for a connected engine; if none takes a message within
 * timeout_ms (> 0) the push fails. At the end the socket lingers up to timeout_ms to deliver what
 * is queued. Blocking; owns its own ZeroMQ context; *stats (may be NULL) counts what was sent,
 * also on failure.
 *
 * Returns 0; TW_ENOENT / TW_EIO (errno says why) when the input cannot be opened or read;
 * TW_EZMQ with errno set when the endpoint is invalid or a send fails (errno EAGAIN: no engine
 * accepted within timeout_ms); TW_EINVAL for bad arguments; TW_ENOMEM.
 */
int tw_push_file(const char *path, const tw_source_opts_t *opts, const char *endpoint,
                 int timeout_ms, tw_push_stats_t *stats);

/* A client's CURVE keys (Z85, 40 characters each), for an engine run with --keys. */
typedef struct tw_push_keys {
  const char *secret_z85, *public_z85; /* this client's pair (an operator's key) */
  const char *server_z85;              /* the engine's public key */
} tw_push_keys_t;

/*
 * tw_push_file_keyed: tw_push_file over CURVE with keys (NULL: plain, as tw_push_file). An engine
 * that refuses the key accepts no message, so the push fails with EAGAIN after timeout_ms.
 * Returns as tw_push_file.
 */
int tw_push_file_keyed(const char *path, const tw_source_opts_t *opts, const char *endpoint,
                       int timeout_ms, const tw_push_keys_t *keys, tw_push_stats_t *stats);

#endif
