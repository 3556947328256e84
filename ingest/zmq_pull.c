/*
 * zmq_pull.c: the ZeroMQ PULL source: the engine BINDs, producers (`tutorwatch send`, the
 * platform's exporters) connect with PUSH, and each message carries one record.
 *
 * Format per message when opts->format is AUTO: a first byte of '{' or JSON whitespace is JSON
 * Lines, a msgpack map marker (0x80-0x8f, 0xde, 0xdf) is msgpack, anything else is handed on as
 * JSONL so the decoder dead-letters it with a JSON error. A JSONL message may hold several lines
 * (a producer may batch); each non-empty line is one record. A msgpack message is one record.
 * A record longer than max_record_bytes is delivered once as TW_REC_TRUNCATED with its first
 * TW_REC_HEAD_BYTES. libzmq itself refuses messages above ZMQ_MAXMSGSIZE (16 MiB) by dropping
 * the sending peer's connection, which bounds the memory one message can cost.
 *
 * Positions: origin is the endpoint, line the message number (1-based, since open), offset_bytes
 * the byte offset of the record in the concatenation of all messages received.
 *
 * The source owns its ZeroMQ context (one I/O thread), so it needs nothing from its owner and
 * closing it ends every thread it started. poll receives with ZMQ_DONTWAIT and never blocks.
 * fd is ZMQ_FD, which is edge-triggered: after it signals, the owner must call poll until poll
 * returns 0 (a poll that returns max_records may have left messages queued), or it may never
 * signal again. With opts->auth the socket is a CURVE server and only operators' keys are admitted
 * (a ZAP handler thread runs in the source's context until close). close sets ZMQ_LINGER 0:
 * messages queued but not yet polled are discarded, the producers' PUSH sockets keep what they have
 * not sent.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "tw_auth.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_source.h"

#define PULL_MAX_MSG_BYTES (16 * 1024 * 1024)
#define PULL_RCVHWM 100000

extern const tw_source_vt_t tw__source_zmq_pull_vt;

typedef struct pull_source {
  tw_source_t base;
  void *ctx, *sock;
  char *origin;
  tw_format_t format; /* AUTO: per message */
  size_t max_record_bytes;
  uint64_t msg_no;       /* messages received so far */
  uint64_t offset_bytes; /* bytes of the messages before the current one */
  zmq_msg_t cur;         /* the message being split into records, when have_cur */
  int have_cur;
  size_t cur_pos;
  tw_format_t cur_format;
  tw_auth_zap_t *zap; /* with keys: the ZAP handler of ctx */
} pull_source_t;

static tw_format_t detect(const unsigned char *data, size_t len) {
  if (len == 0) return TW_FORMAT_JSONL;
  unsigned b = data[0];
  if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) return TW_FORMAT_MSGPACK;
  return TW_FORMAT_JSONL; /* '{', whitespace, or garbage for the decoder to dead-letter */
}

static void release_cur(pull_source_t *ps) {
  if (!ps->have_cur) return;
  ps->offset_bytes += zmq_msg_size(&ps->cur);
  zmq_msg_close(&ps->cur);
  ps->have_cur = 0;
}

/* next_record: the next record of the current message into *rec. Returns 1 when one was found,
 * 0 when the message is exhausted (it is then released). */
static int next_record(pull_source_t *ps, tw_record_t *rec) {
  const char *data = zmq_msg_data(&ps->cur);
  size_t size = zmq_msg_size(&ps->cur);
  size_t start, len;
  for (;;) {
    if (ps->cur_pos >= size) {
      release_cur(ps);
      return 0;
    }
    start = ps->cur_pos;
    if (ps->cur_format == TW_FORMAT_MSGPACK) {
      len = size - start;
      ps->cur_pos = size;
      break;
    }
    const char *nl = memchr(data + start, '\n', size - start);
    len = nl != NULL ? (size_t)(nl - (data + start)) : size - start;
    ps->cur_pos = start + len + (nl != NULL ? 1 : 0);
    if (len > 0 && data[start + len - 1] == '\r') len--;
    if (len > 0) break;
  }
  memset(rec, 0, sizeof *rec);
  rec->data = data + start;
  rec->len_bytes = len;
  rec->full_len_bytes = len;
  rec->format = ps->cur_format;
  rec->origin = ps->origin;
  rec->offset_bytes = ps->offset_bytes + start;
  rec->line = ps->msg_no;
  if (len > ps->max_record_bytes) {
    rec->len_bytes = len < TW_REC_HEAD_BYTES ? len : TW_REC_HEAD_BYTES;
    rec->flags = TW_REC_TRUNCATED;
    rec->reason = "too_long";
  }
  return 1;
}

static int pull_poll(tw_source_t *src, size_t max_records, tw_record_cb cb, void *ud) {
  pull_source_t *ps = (pull_source_t *)src;
  if (ps == NULL || cb == NULL) return TW_EINVAL;
  int n = 0;
  while ((size_t)n < max_records && n < INT32_MAX) {
    if (!ps->have_cur) {
      zmq_msg_init(&ps->cur);
      if (zmq_msg_recv(&ps->cur, ps->sock, ZMQ_DONTWAIT) < 0) {
        int e = zmq_errno();
        zmq_msg_close(&ps->cur);
        if (e == EAGAIN || e == EINTR) break;
        errno = e;
        return TW_EZMQ;
      }
      ps->have_cur = 1;
      ps->cur_pos = 0;
      ps->msg_no++;
      ps->cur_format = ps->format != TW_FORMAT_AUTO
                           ? ps->format
                           : detect(zmq_msg_data(&ps->cur), zmq_msg_size(&ps->cur));
    }
    tw_record_t rec;
    if (!next_record(ps, &rec)) continue;
    n++;
    int rc = cb(ud, &rec);
    /* Release an exhausted message now, so its memory does not wait for the next poll. */
    if (ps->have_cur && ps->cur_pos >= zmq_msg_size(&ps->cur)) release_cur(ps);
    if (rc != 0) return rc;
  }
  return n;
}

static int pull_fd(tw_source_t *src) {
  pull_source_t *ps = (pull_source_t *)src;
  int fd = -1;
  size_t sz = sizeof fd;
  if (ps == NULL || zmq_getsockopt(ps->sock, ZMQ_FD, &fd, &sz) != 0) return -1;
  return fd;
}

static void pull_close(tw_source_t *src) {
  pull_source_t *ps = (pull_source_t *)src;
  if (ps == NULL) return;
  release_cur(ps);
  if (ps->sock != NULL) {
    int linger_ms = 0;
    zmq_setsockopt(ps->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    zmq_close(ps->sock);
  }
  if (ps->ctx != NULL) zmq_ctx_term(ps->ctx);
  tw_auth_zap_join(ps->zap);
  free(ps->origin);
  free(ps);
}

/* On TW_EZMQ, errno holds the ZeroMQ error (zmq_strerror(errno) explains it to a person). */
static int pull_open(const char *target, const tw_source_opts_t *opts, tw_source_t **out) {
  pull_source_t *ps = NULL;
  int rc = TW_ENOMEM, e = 0;
  if (target == NULL || out == NULL) return TW_EINVAL;
  ps = calloc(1, sizeof *ps);
  if (ps == NULL) goto fail;
  ps->base.vt = &tw__source_zmq_pull_vt;
  ps->format = opts != NULL ? opts->format : TW_FORMAT_AUTO;
  ps->max_record_bytes =
      opts != NULL && opts->max_record_bytes > 0 ? opts->max_record_bytes : TW_EVENT_MAX_BYTES;
  ps->origin = strdup(target);
  if (ps->origin == NULL) goto fail;
  rc = TW_EZMQ;
  ps->ctx = zmq_ctx_new();
  if (ps->ctx == NULL) goto fail;
  if (opts != NULL && opts->auth != NULL) {
    int zrc = tw_auth_zap_start(opts->auth, ps->ctx, "tutorwatch run", &ps->zap);
    if (zrc != 0) {
      rc = zrc;
      goto fail;
    }
  }
  ps->sock = zmq_socket(ps->ctx, ZMQ_PULL);
  if (ps->sock == NULL) goto fail;
  if (opts != NULL && opts->auth != NULL &&
      tw_auth_server_socket(opts->auth, ps->sock, TW_VIEW_INGEST) != 0)
    goto fail;
  int64_t max_msg = PULL_MAX_MSG_BYTES;
  int hwm = PULL_RCVHWM;
  if (zmq_setsockopt(ps->sock, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
      zmq_setsockopt(ps->sock, ZMQ_RCVHWM, &hwm, sizeof hwm) != 0 ||
      zmq_bind(ps->sock, target) != 0)
    goto fail;
  *out = &ps->base;
  return 0;
fail:
  if (rc == TW_EZMQ) e = zmq_errno(); /* every failure after rc = TW_EZMQ is a zmq call */
  pull_close(ps ? &ps->base : NULL);
  if (e != 0) errno = e;
  return rc;
}

const tw_source_vt_t tw__source_zmq_pull_vt = {
    .name = "zmq-pull",
    .open = pull_open,
    .poll = pull_poll,
    .fd = pull_fd,
    .close = pull_close,
};
