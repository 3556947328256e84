/*
 * nats_alerts.c: the NATS JetStream alert sink (contract in tw_sink_nats.h).
 *
 * One synchronous publish per alert: alerts are rare next to events, and waiting for each
 * acknowledgement keeps the contract simple (what write returned 0 for is in the stream). The
 * subject is built on the stack from tw_feed_topic's "<region>/<severity>/<rule>" (which validates
 * the region). NATS wildcards match whole tokens, so the subject carries the six-digit region code
 * and a consumer of one province filters by its codes (tw.alerts.440106.>) or by the JSON.
 */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ingest/nats_internal.h"
#include "tw_error.h"
#include "tw_nats.h"
#include "tw_sink.h"
#include "tw_sink_nats.h"

#define NATS_ALERT_WAIT_MS 5000
#define NATS_ALERT_ATTEMPTS 60
#define NATS_TOPIC_MAX 192


extern const tw_sink_vt_t tw__sink_nats_alerts_vt;

typedef struct nats_sink {
  tw_sink_t base;
  natsConnection *nc;
  jsCtx *js;
  unsigned long long duplicates;
} nats_sink_t;

static void sink_close(tw_sink_t *sink) {
  nats_sink_t *s = (nats_sink_t *)sink;
  if (s == NULL) return;
  jsCtx_Destroy(s->js);
  natsConnection_Destroy(s->nc);
  free(s);
}

int tw_sink_nats_open(const char *url, int replicas, tw_sink_t **out, char *errbuf,
                      size_t errcap) {
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (url == NULL || out == NULL) return TW_EINVAL;
  nats_sink_t *s = calloc(1, sizeof *s);
  if (s == NULL) return TW_ENOMEM;
  s->base.vt = &tw__sink_nats_alerts_vt;
  int rc = tw__nats_connect(url, &s->nc, &s->js, errbuf, errcap);
  if (rc == 0)
    rc = tw__nats_ensure_stream(s->js, TW_NATS_ALERTS_STREAM, "tw.alerts.>", replicas, errbuf,
                                errcap);
  if (rc != 0) {
    sink_close(&s->base);
    return rc;
  }
  *out = &s->base;
  return 0;
}

static int sink_open(const char *target, tw_sink_t **out) {
  return tw_sink_nats_open(target, 1, out, NULL, 0);
}

static int sink_write(tw_sink_t *sink, const tw_alert_t *alert, const char *json, size_t len) {
  nats_sink_t *s = (nats_sink_t *)sink;
  char topic[NATS_TOPIC_MAX], subject[NATS_TOPIC_MAX + 16];
  if (tw_feed_topic(alert, topic, sizeof topic) < 0) return TW_EINVAL;
  /* topic = "<6 digits>/<severity>/<rule>": keep region and severity. */
  char *slash = strchr(topic + 7, '/');
  if (slash == NULL) return TW_EINVAL;
  *slash = '\0';
  topic[6] = '.';
  snprintf(subject, sizeof subject, "tw.alerts.%s", topic);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = NATS_ALERT_WAIT_MS;
  po.MsgId = alert->alert_id;
  po.ExpectStream = TW_NATS_ALERTS_STREAM;
  jsPubAck *pa = NULL;
  jsErrCode jerr = 0;
  natsStatus st;
  /* A timeout or a lost server (a cluster node going, a leader election) is tried again for about
   * NATS_ALERT_ATTEMPTS × 0.5 s more: the same Nats-Msg-Id, so the stream keeps it once. */
  for (int attempt = 1;; attempt++) {
    jerr = 0;
    st = js_Publish(&pa, s->js, subject, json, (int)len, &po, &jerr);
    if (st == NATS_OK || !tw__nats_transient(st) || attempt >= NATS_ALERT_ATTEMPTS) break;
    nats_Sleep(500);
  }
  if (st != NATS_OK) {
    fprintf(stderr, "tutorwatch: publish of alert %s to %s failed: %s (jetstream error %d)\n",
            alert->alert_id, subject, natsStatus_GetText(st), (int)jerr);
    return TW_EIO;
  }
  if (pa != NULL && pa->Duplicate) s->duplicates++;
  jsPubAck_Destroy(pa);
  return 0;
}

static int sink_flush(tw_sink_t *sink) {
  (void)sink;
  return 0;
}

unsigned long long tw_sink_nats_duplicates(const tw_sink_t *sink) {
  if (sink == NULL || sink->vt != &tw__sink_nats_alerts_vt) return 0;
  return ((const nats_sink_t *)sink)->duplicates;
}

const tw_sink_vt_t tw__sink_nats_alerts_vt = {
    .name = "nats-alerts",
    .open = sink_open,
    .write = sink_write,
    .flush = sink_flush,
    .close = sink_close,
};
