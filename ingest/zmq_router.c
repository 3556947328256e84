/*
 * zmq_router.c: the acknowledged-ingest source ("zmq-router", `run --ingest ENDPOINT`): the
 * engine BINDs a ROUTER; clients send batches [seq, record...] and get [seq] back once the batch
 * is committed (protocol in tw_acked.h).
 *
 * Records are delivered one per frame with positions as on the PULL source: origin the endpoint,
 * line the record number since open, offset_bytes the byte offset in the concatenation of every
 * record received. Each batch is queued as (client routing id, seq, offset after its last
 * record) when its last frame arrives, before that record is handed on, so the commit that
 * record may trigger already sees the batch; tw_acked_committed acknowledges, in arrival order,
 * the batches that lie wholly below the committed position.
 *
 * Bounds: a frame above 256 KiB makes libzmq drop the client's connection (ZMQ_MAXMSGSIZE); a
 * record above max_record_bytes is delivered truncated for the dead-letter file; a batch has at
 * most TW_ACKED_BATCH_MAX records (the rest is dropped and the batch never acknowledged); the
 * socket queues at most 4 batches' worth of frames per client (so at most 1 GiB from a hostile
 * client, 4000 frames of 256 KiB; a few MB for real events); at most TW_ACKED_PENDING_MAX batches
 * wait for their commit — beyond that poll takes nothing more, so ZeroMQ's high-water marks push
 * back on the clients. With opts->auth the socket is a CURVE
 * server that admits operators only.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "tw_acked.h"
#include "tw_auth.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_source.h"

#define ROUTER_MAX_MSG_BYTES (256 * 1024)      /* per frame (record): 4x the dead-letter bound */
#define ROUTER_RCVHWM (4 * TW_ACKED_BATCH_MAX) /* frames; above one batch, or it never completes \
                                                */

extern const tw_source_vt_t tw__source_zmq_router_vt;

typedef struct pending {
  unsigned char id[256];
  size_t id_len;
  char seq[24];
  uint64_t end_offset; /* UINT64_MAX until its last record has arrived */
} pending_t;

typedef struct router_source {
  tw_source_t base;
  void *ctx, *sock;
  tw_auth_zap_t *zap;
  char *origin;
  tw_format_t format;
  size_t max_record_bytes;
  uint64_t rec_no, offset_bytes;
  /* the batch being read: its frames follow in the socket */
  int in_batch, batch_bad;
  size_t batch_records;
  /* ring of batches waiting for their commit */
  pending_t *pend;
  size_t pend_cap, pend_head, pend_count;
  uint64_t dropped_batches;
} router_source_t;

static tw_format_t detect(const unsigned char *data, size_t len) {
  if (len == 0) return TW_FORMAT_JSONL;
  unsigned b = data[0];
  if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) return TW_FORMAT_MSGPACK;
  return TW_FORMAT_JSONL;
}

static pending_t *pend_at(router_source_t *rs, size_t i) {
  return &rs->pend[(rs->pend_head + i) % rs->pend_cap];
}

static int pend_push(router_source_t *rs, zmq_msg_t *id, const char *seq) {
  if (rs->pend_count == rs->pend_cap) {
    size_t ncap = rs->pend_cap ? rs->pend_cap * 2 : 64;
    pending_t *n = malloc(ncap * sizeof *n);
    if (n == NULL) return TW_ENOMEM;
    for (size_t i = 0; i < rs->pend_count; i++) n[i] = *pend_at(rs, i);
    free(rs->pend);
    rs->pend = n;
    rs->pend_cap = ncap;
    rs->pend_head = 0;
  }
  pending_t *p = pend_at(rs, rs->pend_count++);
  p->id_len = zmq_msg_size(id) < sizeof p->id ? zmq_msg_size(id) : sizeof p->id;
  memcpy(p->id, zmq_msg_data(id), p->id_len);
  snprintf(p->seq, sizeof p->seq, "%s", seq);
  p->end_offset = UINT64_MAX;
  return 0;
}

static void send_ack(router_source_t *rs, const pending_t *p) {
  if (zmq_send(rs->sock, p->id, p->id_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
    zmq_send(rs->sock, p->seq, strlen(p->seq), ZMQ_DONTWAIT);
  /* A lost acknowledgement (client gone or full) is repaired by the client's resend. */
}

void tw_acked_committed(tw_source_t *src, uint64_t finished_below) {
  if (src == NULL || src->vt != &tw__source_zmq_router_vt) return;
  router_source_t *rs = (router_source_t *)src;
  while (rs->pend_count > 0) {
    pending_t *p = pend_at(rs, 0);
    if (p->end_offset == UINT64_MAX || p->end_offset > finished_below) break;
    send_ack(rs, p);
    rs->pend_head = (rs->pend_head + 1) % rs->pend_cap;
    rs->pend_count--;
  }
}

/* Receive and drop the rest of a multipart message. */
static void drain_message(router_source_t *rs) {
  int more = 1;
  size_t sz = sizeof more;
  while (zmq_getsockopt(rs->sock, ZMQ_RCVMORE, &more, &sz) == 0 && more) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    int r = zmq_msg_recv(&m, rs->sock, ZMQ_DONTWAIT);
    zmq_msg_close(&m);
    if (r < 0) break;
  }
}

/* Start of a message: [routing id, seq]. Returns 1 when a batch begins, 0 when the message was
 * dropped or the socket is empty (*empty), or an error. */
static int begin_batch(router_source_t *rs, int *empty) {
  zmq_msg_t id, seq;
  zmq_msg_init(&id);
  *empty = 0;
  if (zmq_msg_recv(&id, rs->sock, ZMQ_DONTWAIT) < 0) {
    int e = zmq_errno();
    zmq_msg_close(&id);
    if (e == EAGAIN || e == EINTR) {
      *empty = 1;
      return 0;
    }
    errno = e;
    return TW_EZMQ;
  }
  int rc = 0;
  char num[24] = "";
  zmq_msg_init(&seq);
  if (!zmq_msg_more(&id) || zmq_msg_recv(&seq, rs->sock, ZMQ_DONTWAIT) < 0) goto bad;
  size_t n = zmq_msg_size(&seq);
  const char *d = zmq_msg_data(&seq);
  if (n == 0 || n > 19) goto bad;
  for (size_t i = 0; i < n; i++)
    if (d[i] < '0' || d[i] > '9') goto bad;
  memcpy(num, d, n);
  num[n] = '\0';
  rc = pend_push(rs, &id, num);
  if (rc != 0) goto out;
  rs->in_batch = 1;
  rs->batch_bad = 0;
  rs->batch_records = 0;
  if (!zmq_msg_more(&seq)) { /* an empty batch: nothing to commit */
    pend_at(rs, rs->pend_count - 1)->end_offset = rs->offset_bytes;
    rs->in_batch = 0;
    if (rs->pend_count == 1) tw_acked_committed(&rs->base, rs->offset_bytes);
  }
  rc = 1;
  goto out;
bad:
  rs->dropped_batches++;
  fprintf(stderr,
          "tutorwatch run: %s: dropped a message that is not a batch [seq, record...] (%llu so "
          "far)\n",
          rs->origin, (unsigned long long)rs->dropped_batches);
  drain_message(rs);
out:
  zmq_msg_close(&id);
  zmq_msg_close(&seq);
  return rc;
}

static int router_poll(tw_source_t *src, size_t max_records, tw_record_cb cb, void *ud) {
  router_source_t *rs = (router_source_t *)src;
  if (rs == NULL || cb == NULL) return TW_EINVAL;
  int n = 0;
  while ((size_t)n < max_records && n < INT32_MAX) {
    if (!rs->in_batch) {
      if (rs->pend_count >= TW_ACKED_PENDING_MAX) break; /* wait for commits */
      int empty, rc = begin_batch(rs, &empty);
      if (rc < 0) return rc;
      if (empty) break;
      continue;
    }
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, rs->sock, ZMQ_DONTWAIT) < 0) { /* frames of a message come together */
      zmq_msg_close(&m);
      rs->in_batch = 0;
      continue;
    }
    int last = !zmq_msg_more(&m);
    if (rs->batch_bad || ++rs->batch_records > TW_ACKED_BATCH_MAX) {
      if (!rs->batch_bad) {
        rs->batch_bad = 1;
        rs->pend_count--; /* never acknowledged: the client resends, dedup drops the repeats */
        fprintf(stderr, "tutorwatch run: %s: a batch has more than %d records; rest dropped\n",
                rs->origin, TW_ACKED_BATCH_MAX);
      }
      zmq_msg_close(&m);
      if (last) rs->in_batch = 0;
      continue;
    }
    size_t len = zmq_msg_size(&m);
    tw_record_t rec;
    memset(&rec, 0, sizeof rec);
    rec.data = zmq_msg_data(&m);
    rec.len_bytes = len;
    rec.full_len_bytes = len;
    rec.format = rs->format != TW_FORMAT_AUTO ? rs->format : detect(zmq_msg_data(&m), len);
    rec.origin = rs->origin;
    rec.offset_bytes = rs->offset_bytes;
    rec.line = ++rs->rec_no;
    if (len > rs->max_record_bytes) {
      rec.len_bytes = TW_REC_HEAD_BYTES;
      rec.flags = TW_REC_TRUNCATED;
      rec.reason = "too_long";
    }
    rs->offset_bytes += len;
    if (last) {
      pend_at(rs, rs->pend_count - 1)->end_offset = rs->offset_bytes;
      rs->in_batch = 0;
    }
    n++;
    int rc = len > 0 ? cb(ud, &rec) : 0;
    zmq_msg_close(&m);
    if (rc != 0) return rc;
  }
  return n;
}

static int router_fd(tw_source_t *src) {
  router_source_t *rs = (router_source_t *)src;
  int fd = -1;
  size_t sz = sizeof fd;
  if (rs == NULL || zmq_getsockopt(rs->sock, ZMQ_FD, &fd, &sz) != 0) return -1;
  return fd;
}

static void router_close(tw_source_t *src) {
  router_source_t *rs = (router_source_t *)src;
  if (rs == NULL) return;
  if (rs->sock != NULL) {
    int linger_ms = 100; /* hand the last acknowledgements to the network */
    zmq_setsockopt(rs->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    zmq_close(rs->sock);
  }
  if (rs->ctx != NULL) zmq_ctx_term(rs->ctx);
  tw_auth_zap_join(rs->zap);
  free(rs->pend);
  free(rs->origin);
  free(rs);
}

/* On TW_EZMQ, errno holds the ZeroMQ error. */
static int router_open(const char *target, const tw_source_opts_t *opts, tw_source_t **out) {
  router_source_t *rs = NULL;
  int rc = TW_ENOMEM, e = 0;
  if (target == NULL || out == NULL) return TW_EINVAL;
  rs = calloc(1, sizeof *rs);
  if (rs == NULL) goto fail;
  rs->base.vt = &tw__source_zmq_router_vt;
  rs->format = opts != NULL ? opts->format : TW_FORMAT_AUTO;
  rs->max_record_bytes =
      opts != NULL && opts->max_record_bytes > 0 ? opts->max_record_bytes : TW_EVENT_MAX_BYTES;
  rs->origin = strdup(target);
  if (rs->origin == NULL) goto fail;
  rc = TW_EZMQ;
  rs->ctx = zmq_ctx_new();
  if (rs->ctx == NULL) goto fail;
  if (opts != NULL && opts->auth != NULL) {
    int zrc = tw_auth_zap_start(opts->auth, rs->ctx, "tutorwatch run", &rs->zap);
    if (zrc != 0) {
      rc = zrc;
      goto fail;
    }
  }
  rs->sock = zmq_socket(rs->ctx, ZMQ_ROUTER);
  if (rs->sock == NULL) goto fail;
  int64_t max_msg = ROUTER_MAX_MSG_BYTES;
  int hwm = ROUTER_RCVHWM;
  if (zmq_setsockopt(rs->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
      zmq_setsockopt(rs->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(rs->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0)
    goto fail;
  if (opts != NULL && opts->auth != NULL &&
      tw_auth_server_socket(opts->auth, rs->sock, TW_VIEW_INGEST) != 0)
    goto fail;
  if (zmq_bind(rs->sock, target) != 0) goto fail;
  *out = &rs->base;
  return 0;
fail:
  if (rc == TW_EZMQ) e = zmq_errno();
  router_close(rs ? &rs->base : NULL);
  if (e != 0) errno = e;
  return rc;
}

const tw_source_vt_t tw__source_zmq_router_vt = {
    .name = "zmq-router",
    .open = router_open,
    .poll = router_poll,
    .fd = router_fd,
    .close = router_close,
};
