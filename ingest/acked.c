/*
 * acked.c: the client of acknowledged ingest (`tutorwatch send --acked`; contract in tw_acked.h).
 *
 * A DEALER socket with ZMQ_IMMEDIATE (nothing is queued for an engine that is not connected) and
 * a socket monitor. Records are read with the file source into batches kept in a ring of
 * `window` slots until their acknowledgement; a slot owns copies of its records. The loop:
 *   - after a disconnect, or 2 s without an acknowledgement while batches wait, every
 *     unacknowledged batch is sent again, oldest first, before anything new, so an engine that
 *     restarted sees the events in their original order (and drops the repeats by event_id);
 *   - while connected and a slot is free, the next batch is read and sent;
 *   - acknowledgements free slots from the oldest.
 * It gives up when for timeout_ms it was not connected or got no acknowledgement while batches
 * waited. Bounded: window × batch_records records in memory, each at most the source's bound.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "tw_acked.h"
#include "tw_auth.h"
#include "tw_error.h"

#define ACKED_SILENCE_MS 2000
#define ACKED_POLL_MS 50

typedef struct batch {
  uint64_t seq;
  size_t n;     /* records */
  size_t *lens; /* batch_records entries */
  char *data;   /* records back to back */
  size_t used, cap;
  int acked;
} batch_t;

typedef struct acked {
  void *sock, *mon;
  batch_t *ring;
  size_t window, head, count; /* unacknowledged batches: ring[head .. head+count) */
  size_t batch_records;
  uint64_t next_seq;
  tw_acked_stats_t *stats;
  int zmq_err;
  batch_t *filling; /* the batch the source callback appends to */
} acked_t;

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int add_record(void *ud, const tw_record_t *rec) {
  acked_t *a = ud;
  batch_t *b = a->filling;
  if (b->used + rec->len_bytes > b->cap) {
    size_t ncap = b->cap ? b->cap : 65536;
    while (ncap < b->used + rec->len_bytes) ncap *= 2;
    char *d = realloc(b->data, ncap);
    if (d == NULL) return TW_ENOMEM;
    b->data = d;
    b->cap = ncap;
  }
  memcpy(b->data + b->used, rec->data, rec->len_bytes);
  b->used += rec->len_bytes;
  b->lens[b->n++] = rec->len_bytes;
  a->stats->records++;
  a->stats->bytes += rec->len_bytes;
  return 0;
}

/* Send one batch. Returns 0, or -1 with a->zmq_err (EAGAIN: not connected now). */
static int send_batch(acked_t *a, const batch_t *b) {
  char seq[24];
  int n = snprintf(seq, sizeof seq, "%" PRIu64, b->seq);
  if (zmq_send(a->sock, seq, (size_t)n, ZMQ_DONTWAIT | (b->n > 0 ? ZMQ_SNDMORE : 0)) < 0) {
    a->zmq_err = zmq_errno();
    return -1;
  }
  /* Once the first frame is accepted, the rest of the message is. */
  size_t at = 0;
  for (size_t i = 0; i < b->n; i++) {
    zmq_send(a->sock, b->data + at, b->lens[i], i + 1 < b->n ? ZMQ_SNDMORE : 0);
    at += b->lens[i];
  }
  return 0;
}

static void on_ack(acked_t *a, const char *d, size_t n) {
  char buf[24];
  if (n == 0 || n >= sizeof buf) return;
  memcpy(buf, d, n);
  buf[n] = '\0';
  uint64_t seq = strtoull(buf, NULL, 10);
  for (size_t i = 0; i < a->count; i++) {
    batch_t *b = &a->ring[(a->head + i) % a->window];
    if (b->seq == seq) b->acked = 1;
  }
  while (a->count > 0 && a->ring[a->head].acked) {
    a->stats->batches++;
    a->head = (a->head + 1) % a->window;
    a->count--;
  }
}

/* Monitor events: 1 connected (handshake done), 0 disconnected, -1 other, -2 none queued. */
static int monitor_event(acked_t *a) {
  zmq_msg_t m;
  zmq_msg_init(&m);
  if (zmq_msg_recv(&m, a->mon, ZMQ_DONTWAIT) < 0) {
    zmq_msg_close(&m);
    return -2;
  }
  uint16_t ev = 0;
  if (zmq_msg_size(&m) >= 2) memcpy(&ev, zmq_msg_data(&m), 2);
  int more = zmq_msg_more(&m);
  zmq_msg_close(&m);
  while (more) { /* the address frame */
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, a->mon, ZMQ_DONTWAIT) < 0)
      more = 0;
    else
      more = zmq_msg_more(&m);
    zmq_msg_close(&m);
  }
  if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) return 1;
  if (ev == ZMQ_EVENT_DISCONNECTED) return 0;
  return -1;
}

int tw_push_acked(const char *path, const tw_source_opts_t *opts, const char *endpoint,
                  int timeout_ms, const tw_push_keys_t *keys, int batch_records, int window,
                  tw_acked_stats_t *stats) {
  const tw_source_vt_t *vt = tw_source_find("file");
  tw_source_t *src = NULL;
  tw_acked_stats_t local;
  acked_t a;
  void *ctx = NULL;
  int rc, e = 0;
  memset(&a, 0, sizeof a);
  memset(&local, 0, sizeof local);
  a.stats = stats != NULL ? stats : &local;
  memset(a.stats, 0, sizeof *a.stats);
  if (path == NULL || endpoint == NULL || timeout_ms <= 0 || vt == NULL || batch_records < 1 ||
      batch_records > TW_ACKED_BATCH_MAX || window < 1 || window > 4096)
    return TW_EINVAL;
  a.window = (size_t)window;
  a.batch_records = (size_t)batch_records;
  a.next_seq = 1;
  rc = TW_ENOMEM;
  a.ring = calloc(a.window, sizeof *a.ring);
  if (a.ring == NULL) goto fail;
  for (size_t i = 0; i < a.window; i++) {
    a.ring[i].lens = malloc(a.batch_records * sizeof *a.ring[i].lens);
    if (a.ring[i].lens == NULL) goto fail;
  }
  rc = vt->open(path, opts, &src);
  if (rc != 0) goto fail;
  rc = TW_EZMQ;
  ctx = zmq_ctx_new();
  if (ctx == NULL) goto fail;
  a.sock = zmq_socket(ctx, ZMQ_DEALER);
  a.mon = zmq_socket(ctx, ZMQ_PAIR);
  if (a.sock == NULL || a.mon == NULL) goto fail;
  char mon_ep[64];
  snprintf(mon_ep, sizeof mon_ep, "inproc://tw-acked-%p", (void *)&a);
  int immediate = 1, linger_ms = 0, hwm = 0;
  if (zmq_setsockopt(a.sock, ZMQ_IMMEDIATE, &immediate, sizeof immediate) != 0 ||
      zmq_setsockopt(a.sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms) != 0 ||
      zmq_setsockopt(a.sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(a.mon, ZMQ_LINGER, &linger_ms, sizeof linger_ms) != 0 ||
      (keys != NULL &&
       tw_auth_client_socket(a.sock, keys->secret_z85, keys->public_z85, keys->server_z85) != 0) ||
      zmq_socket_monitor(a.sock, mon_ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) !=
          0 ||
      zmq_connect(a.mon, mon_ep) != 0 || zmq_connect(a.sock, endpoint) != 0)
    goto fail;

  int connected = 0, resend = 0, eof = 0;
  int64_t last_progress = mono_ms(), last_ack = last_progress;
  for (;;) {
    if (eof && a.count == 0) break;
    int64_t now = mono_ms();
    if (connected && a.count > 0 && now - last_ack > ACKED_SILENCE_MS) {
      resend = 1; /* lost on the way (an engine that died before its commit) */
      last_ack = now;
    }
    if (connected && resend) {
      int ok = 1;
      for (size_t i = 0; i < a.count && ok; i++)
        if (send_batch(&a, &a.ring[(a.head + i) % a.window]) != 0) ok = 0;
      if (ok) {
        a.stats->resent += a.count;
        resend = 0;
      }
    }
    while (connected && !resend && !eof && a.count < a.window) {
      batch_t *b = &a.ring[(a.head + a.count) % a.window];
      b->n = 0;
      b->used = 0;
      b->acked = 0;
      b->seq = a.next_seq;
      a.filling = b;
      while (b->n < a.batch_records) {
        int r = vt->poll(src, a.batch_records - b->n, add_record, &a);
        if (r == TW_EOF) {
          eof = 1;
          break;
        }
        if (r < 0) {
          rc = r;
          goto fail;
        }
      }
      if (b->n == 0) break; /* nothing left */
      a.next_seq++;
      a.count++;
      if (send_batch(&a, b) != 0) resend = 1; /* sent again once connected */
      if (a.count == 1) last_ack = mono_ms();
    }
    zmq_pollitem_t items[2] = {{a.sock, 0, ZMQ_POLLIN, 0}, {a.mon, 0, ZMQ_POLLIN, 0}};
    int pr = zmq_poll(items, 2, ACKED_POLL_MS);
    if (pr < 0 && zmq_errno() != EINTR) goto fail;
    if (items[1].revents & ZMQ_POLLIN) {
      int ev;
      while ((ev = monitor_event(&a)) != -2) {
        if (ev == 1) {
          connected = 1;
          resend = a.count > 0;
          last_progress = last_ack = mono_ms();
        } else if (ev == 0) {
          connected = 0;
        }
      }
    }
    if (items[0].revents & ZMQ_POLLIN) {
      for (;;) {
        char buf[32];
        int n = zmq_recv(a.sock, buf, sizeof buf, ZMQ_DONTWAIT);
        if (n < 0) break;
        on_ack(&a, buf, (size_t)n < sizeof buf ? (size_t)n : 0);
        last_progress = last_ack = mono_ms();
      }
    }
    if (connected && a.count == 0) last_progress = mono_ms();
    if (mono_ms() - last_progress > timeout_ms) {
      a.zmq_err = EAGAIN;
      rc = TW_EZMQ;
      goto fail;
    }
  }
  rc = 0;
fail:
  if (rc == TW_EZMQ) {
    e = a.zmq_err != 0 ? a.zmq_err : zmq_errno();
  } else if (rc != 0) {
    e = errno;
  }
  if (a.sock != NULL) {
    zmq_socket_monitor(a.sock, NULL, 0);
    zmq_close(a.sock);
  }
  if (a.mon != NULL) zmq_close(a.mon);
  if (ctx != NULL) zmq_ctx_term(ctx);
  if (src != NULL) src->vt->close(src);
  if (a.ring != NULL)
    for (size_t i = 0; i < a.window; i++) {
      free(a.ring[i].lens);
      free(a.ring[i].data);
    }
  free(a.ring);
  if (e != 0) errno = e;
  return rc;
}
