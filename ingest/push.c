/*
 * push.c: read records with the file source and send each as one ZeroMQ PUSH message.
 *
 * The file source reads in bounded chunks and the records are copied by libzmq, so memory is
 * bounded by the source's buffer plus the socket's queue (PUSH_SNDHWM messages). Messages are
 * sent with blocking zmq_send bounded by ZMQ_SNDTIMEO, so a vanished engine turns into an error
 * after timeout_ms instead of a hang.
 */
#include <errno.h>
#include <stddef.h>
#include <zmq.h>

#include "tw_auth.h"
#include "tw_error.h"
#include "tw_push.h"
#include "tw_source.h"

#define PUSH_SNDHWM 100000
#define PUSH_BATCH_RECORDS 1024

typedef struct push_ctx {
  void *sock;
  tw_push_stats_t *stats;
  int zmq_err;
} push_ctx_t;

static int send_record(void *ud, const tw_record_t *rec) {
  push_ctx_t *pc = ud;
  if (zmq_send(pc->sock, rec->data, rec->len_bytes, 0) < 0) {
    pc->zmq_err = zmq_errno();
    return TW_EZMQ;
  }
  pc->stats->records++;
  pc->stats->bytes += rec->len_bytes;
  if (rec->flags & (TW_REC_TRUNCATED | TW_REC_BROKEN)) pc->stats->flagged++;
  return 0;
}

int tw_push_file(const char *path, const tw_source_opts_t *opts, const char *endpoint,
                 int timeout_ms, tw_push_stats_t *stats) {
  return tw_push_file_keyed(path, opts, endpoint, timeout_ms, NULL, stats);
}

int tw_push_file_keyed(const char *path, const tw_source_opts_t *opts, const char *endpoint,
                       int timeout_ms, const tw_push_keys_t *keys, tw_push_stats_t *stats) {
  const tw_source_vt_t *vt = tw_source_find("file");
  tw_source_t *src = NULL;
  tw_push_stats_t local = {0, 0, 0};
  push_ctx_t pc = {NULL, stats != NULL ? stats : &local, 0};
  void *ctx = NULL;
  int rc, e = 0;
  *pc.stats = local;
  if (path == NULL || endpoint == NULL || timeout_ms <= 0 || vt == NULL) return TW_EINVAL;
  rc = vt->open(path, opts, &src);
  if (rc != 0) goto fail;
  rc = TW_EZMQ;
  ctx = zmq_ctx_new();
  if (ctx == NULL) goto fail;
  pc.sock = zmq_socket(ctx, ZMQ_PUSH);
  if (pc.sock == NULL) goto fail;
  int hwm = PUSH_SNDHWM, immediate = 1;
  if (zmq_setsockopt(pc.sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(pc.sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate) != 0 ||
      zmq_setsockopt(pc.sock, ZMQ_SNDTIMEO, &timeout_ms, sizeof timeout_ms) != 0 ||
      zmq_setsockopt(pc.sock, ZMQ_LINGER, &timeout_ms, sizeof timeout_ms) != 0 ||
      (keys != NULL &&
       tw_auth_client_socket(pc.sock, keys->secret_z85, keys->public_z85, keys->server_z85) != 0) ||
      zmq_connect(pc.sock, endpoint) != 0)
    goto fail;
  for (;;) {
    rc = vt->poll(src, PUSH_BATCH_RECORDS, send_record, &pc);
    if (rc == TW_EOF) break;
    if (rc < 0) goto fail;
  }
  rc = 0;
fail:
  if (rc == TW_EZMQ) {
    e = pc.zmq_err != 0 ? pc.zmq_err : zmq_errno();
  } else if (rc != 0) {
    e = errno; /* the source's open or read error; cleanup below may overwrite errno */
  }
  if (pc.sock != NULL) {
    if (rc != 0) {
      int linger_ms = 0; /* failed: do not wait to deliver the rest */
      zmq_setsockopt(pc.sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    }
    zmq_close(pc.sock);
  }
  if (ctx != NULL) zmq_ctx_term(ctx); /* waits up to the linger for queued messages */
  if (src != NULL) src->vt->close(src);
  if (e != 0) errno = e;
  return rc;
}
