/*
 * zmq_pub.c: the regulator feed: a ZeroMQ PUB socket that BINDs; regulators SUB-connect with a
 * region prefix ("44" a province, "4401" a city, "440106" a county).
 *
 * Each alert is one two-frame message [topic, JSON], topic "<region>/<severity>/<rule>" from
 * tw_feed_topic; PUB filters on the first frame, so a subscriber only ever receives the alerts
 * under its prefixes. Nothing is allocated per alert (the topic is built on the stack, libzmq
 * copies the frames).
 *
 * Never blocks: ZMQ_SNDHWM is 100,000 messages per subscriber and ZMQ_XPUB_NODROP is set, so a
 * subscriber at its high-water mark makes zmq_send fail with EAGAIN instead of libzmq dropping
 * silently; we drop the alert and count it (tw_sink_zmq_pub_dropped). The cost of counting: while
 * one matching subscriber is full, the alert is dropped for every subscriber of that topic.
 * Alerts nobody subscribes to are discarded by libzmq and not counted.
 *
 * The sink owns its ZeroMQ context. close lingers at most PUB_LINGER_MS to hand queued alerts to
 * the network, so shutdown stays bounded. Not authenticated: CURVE and per-role subscription
 * checks (XPUB + ZAP) come later; until then bind to loopback or a protected network.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <zmq.h>

#include "tw_error.h"
#include "tw_sink.h"
#include "tw_sink_zmq.h"

#define PUB_SNDHWM 100000
#define PUB_LINGER_MS 1000
#define PUB_TOPIC_MAX 192

extern const tw_sink_vt_t tw__sink_zmq_pub_vt;

typedef struct pub_sink {
  tw_sink_t base;
  void *ctx, *sock;
  uint64_t dropped;
} pub_sink_t;

static int pub_write(tw_sink_t *sink, const tw_alert_t *alert, const char *json, size_t len) {
  pub_sink_t *ps = (pub_sink_t *)sink;
  char topic[PUB_TOPIC_MAX];
  if (ps == NULL || (json == NULL && len > 0)) return TW_EINVAL;
  int t = tw_feed_topic(alert, topic, sizeof topic);
  if (t < 0) return t == TW_ETOOBIG ? TW_EINVAL : t;
  if (zmq_send(ps->sock, topic, (size_t)t, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) goto fail;
  /* Once the first frame is accepted, libzmq accepts the rest of the message. */
  if (zmq_send(ps->sock, json, len, ZMQ_DONTWAIT) < 0) goto fail;
  return 0;
fail:
  if (zmq_errno() == EAGAIN) {
    ps->dropped++;
    return 0;
  }
  return TW_EZMQ;
}

static int pub_flush(tw_sink_t *sink) {
  (void)sink; /* libzmq's I/O thread sends as soon as a message is queued */
  return 0;
}

static void pub_close(tw_sink_t *sink) {
  pub_sink_t *ps = (pub_sink_t *)sink;
  if (ps == NULL) return;
  if (ps->sock != NULL) {
    int linger_ms = PUB_LINGER_MS;
    zmq_setsockopt(ps->sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
    zmq_close(ps->sock);
  }
  if (ps->ctx != NULL) zmq_ctx_term(ps->ctx);
  free(ps);
}

/* On TW_EZMQ, errno holds the ZeroMQ error (zmq_strerror(errno) explains it to a person). */
static int pub_open(const char *target, tw_sink_t **out) {
  pub_sink_t *ps = NULL;
  int rc = TW_ENOMEM, e = 0;
  if (target == NULL || out == NULL) return TW_EINVAL;
  ps = calloc(1, sizeof *ps);
  if (ps == NULL) goto fail;
  ps->base.vt = &tw__sink_zmq_pub_vt;
  rc = TW_EZMQ;
  ps->ctx = zmq_ctx_new();
  if (ps->ctx == NULL) goto fail;
  ps->sock = zmq_socket(ps->ctx, ZMQ_PUB);
  if (ps->sock == NULL) goto fail;
  int hwm = PUB_SNDHWM, nodrop = 1;
  if (zmq_setsockopt(ps->sock, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
      zmq_setsockopt(ps->sock, ZMQ_XPUB_NODROP, &nodrop, sizeof nodrop) != 0 ||
      zmq_bind(ps->sock, target) != 0)
    goto fail;
  *out = &ps->base;
  return 0;
fail:
  if (rc == TW_EZMQ) e = zmq_errno(); /* every failure after rc = TW_EZMQ is a zmq call */
  pub_close(ps ? &ps->base : NULL);
  if (e != 0) errno = e;
  return rc;
}

uint64_t tw_sink_zmq_pub_dropped(tw_sink_t *sink) {
  if (sink == NULL || sink->vt != &tw__sink_zmq_pub_vt) return 0;
  return ((pub_sink_t *)sink)->dropped;
}

const tw_sink_vt_t tw__sink_zmq_pub_vt = {
    .name = "zmq-pub",
    .open = pub_open,
    .write = pub_write,
    .flush = pub_flush,
    .close = pub_close,
};
