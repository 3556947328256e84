/*
 * nats.c: events over NATS JetStream (contract and layout in tw_nats.h; design in
 * docs/scaling.md): `send --nats` publishes records to tw.events.<partition>, and a partition
 * consumer (one durable pull consumer per partition, recreated at the position of the engine's
 * state) delivers them to the partition's pipeline and acknowledges them after its commits.
 *
 * A consumer keeps every delivered message, in delivery (= stream) order, until a commit covers
 * its sequence; at most TW_NATS_MAX_ACK_PENDING, the consumer's MaxAckPending, so the server
 * never delivers more than it can keep.
 */
#include <jansson.h>
#include <msgpack.h>
#include <pthread.h>
#include <sodium.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_nats.h"
#include "nats_internal.h"
#include "tw_pipeline.h"

#define NATS_MS_TO_NS TW_NATS_MS_TO_NS
#define TW_NATS_SERVERS_MAX 16 /* servers in a --nats list */
/* An empty fetch asks the consumer's count at most every CONSUMER_INFO_MS while it is not known to
 * be zero, and every CONSUMER_ALIVE_MS once it is (whether the consumer is still there); the
 * question waits at most CONSUMER_INFO_WAIT_MS (a consumer whose server is lost never answers,
 * and the engine's loop must not wait the context's 5 s for each such partition). */
#define CONSUMER_INFO_MS 250
#define CONSUMER_ALIVE_MS 1000
#define CONSUMER_INFO_WAIT_MS 500

int tw_nats_partition(const char *institution_id, size_t len, int partitions) {
  return tw_key_shard(institution_id, len, partitions);
}

/* ---- record ids -------------------------------------------------------------------------------
 */

static void copy_id(char *dst, const char *src, size_t len) {
  dst[0] = '\0';
  if (src == NULL || len == 0 || len > TW_NATS_ID_MAX) return;
  for (size_t i = 0; i < len; i++)
    if ((unsigned char)src[i] < 0x21 || (unsigned char)src[i] > 0x7e) return;
  memcpy(dst, src, len);
  dst[len] = '\0';
}

static void ids_json(const char *data, size_t len, char *event_id, char *inst) {
  json_error_t jerr;
  json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
  if (o == NULL) return;
  if (json_is_object(o)) {
    json_t *v = json_object_get(o, "event_id");
    if (json_is_string(v)) copy_id(event_id, json_string_value(v), json_string_length(v));
    v = json_object_get(o, "institution_id");
    if (json_is_string(v)) copy_id(inst, json_string_value(v), json_string_length(v));
  }
  json_decref(o);
}

static void ids_msgpack(const char *data, size_t len, char *event_id, char *inst) {
  msgpack_unpacked u;
  msgpack_unpacked_init(&u);
  size_t off = 0;
  if (msgpack_unpack_next(&u, data, len, &off) == MSGPACK_UNPACK_SUCCESS &&
      u.data.type == MSGPACK_OBJECT_MAP) {
    const msgpack_object_map *m = &u.data.via.map;
    for (uint32_t i = 0; i < m->size; i++) {
      const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
      if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR) continue;
      if (k->via.str.size == 8 && memcmp(k->via.str.ptr, "event_id", 8) == 0)
        copy_id(event_id, v->via.str.ptr, v->via.str.size);
      else if (k->via.str.size == 14 && memcmp(k->via.str.ptr, "institution_id", 14) == 0)
        copy_id(inst, v->via.str.ptr, v->via.str.size);
    }
  }
  msgpack_unpacked_destroy(&u);
}

static tw_format_t detect(const unsigned char *data, size_t len) {
  if (len == 0) return TW_FORMAT_JSONL;
  unsigned b = data[0];
  if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) return TW_FORMAT_MSGPACK;
  return TW_FORMAT_JSONL; /* '{', whitespace, or garbage for the decoder to dead-letter */
}

void tw_nats_record_ids(const char *data, size_t len, tw_format_t format, char *event_id,
                        char *institution_id) {
  event_id[0] = institution_id[0] = '\0';
  if (data == NULL || len == 0) return;
  if (format == TW_FORMAT_AUTO) format = detect((const unsigned char *)data, len);
  if (format == TW_FORMAT_MSGPACK)
    ids_msgpack(data, len, event_id, institution_id);
  else
    ids_json(data, len, event_id, institution_id);
}

/* ---- connection and stream --------------------------------------------------------------------
 */

void tw__nats_err(char *errbuf, size_t errcap, const char *what, natsStatus s, jsErrCode jerr) {
  if (errbuf == NULL || errcap == 0) return;
  /* The library's detail when its last error is this one (it keeps the last error of the
   * thread, which may be an older, unrelated failure), else the status text. */
  natsStatus last_status = NATS_OK;
  const char *last = nats_GetLastError(&last_status);
  int n = snprintf(errbuf, errcap, "%s: %s", what,
                   last != NULL && last[0] != '\0' && last_status == s ? last
                                                                      : natsStatus_GetText(s));
  if (jerr != 0 && n > 0 && (size_t)n < errcap)
    snprintf(errbuf + n, errcap - (size_t)n, " (JetStream error %d)", (int)jerr);
}

int tw__nats_transient(natsStatus s) {
  return s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS || s == NATS_CONNECTION_DISCONNECTED ||
         s == NATS_NO_SERVER || s == NATS_IO_ERROR || s == NATS_STALE_CONNECTION;
}

/* connect: url (one server, or a comma-separated list of a cluster's) with a 2 s connect timeout;
 * a lost server is replaced by another of the cluster (reconnecting for up to about 30 s; then the
 * connection is closed and the run stops: what it did not acknowledge is delivered again). */
int tw__nats_connect(const char *url, natsConnection **nc, jsCtx **js, char *errbuf,
                     size_t errcap) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  /* One URL, or a cluster's as a comma-separated list (libnats wants the list split). */
  char list[2048];
  const char *servers[TW_NATS_SERVERS_MAX];
  int n = 0;
  snprintf(list, sizeof list, "%s", url);
  for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL && n < TW_NATS_SERVERS_MAX;
       tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    if (*tok != '\0') servers[n++] = tok;
  }
  if (s == NATS_OK && n == 0) s = NATS_INVALID_ARG;
  if (s == NATS_OK) s = n == 1 ? natsOptions_SetURL(o, servers[0]) : natsOptions_SetServers(o, servers, n);
  if (s == NATS_OK && n > 1) s = natsOptions_SetNoRandomize(o, false);
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, 120);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 250);
  if (s == NATS_OK) s = natsOptions_SetRetryOnFailedConnect(o, false, NULL, NULL);
  if (s == NATS_OK) s = natsConnection_Connect(nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    tw__nats_err(errbuf, errcap, url, s, 0);
    *nc = NULL;
    return s == NATS_NO_MEMORY ? TW_ENOMEM : TW_EIO;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 5000;
  s = natsConnection_JetStream(js, *nc, &jo);
  if (s != NATS_OK) {
    tw__nats_err(errbuf, errcap, "JetStream context", s, 0);
    natsConnection_Destroy(*nc);
    *nc = NULL;
    return TW_EIO;
  }
  return 0;
}

/* A stream's info; a cluster electing its leaders (or busy making streams for several engines
 * starting together) answers late or not at all for a while: try for about 30 s. */
static natsStatus stream_info(jsCtx *js, const char *name, jsStreamInfo **si, jsErrCode *jerr) {
  natsStatus s;
  for (int attempt = 1;; attempt++) {
    *si = NULL;
    *jerr = 0;
    s = js_GetStreamInfo(si, js, name, NULL, jerr);
    if (!tw__nats_transient(s) || attempt >= 30) return s;
    nats_Sleep(1000);
  }
}

int tw__nats_events_stream(jsCtx *js, int partitions, int replicas, char *errbuf,
                           size_t errcap) {
  char desc[64];
  snprintf(desc, sizeof desc, "tutorwatch events, partitions=%d", partitions);
  int rc = tw__nats_ensure_stream_desc(js, TW_NATS_EVENTS_STREAM, "tw.events.>", replicas, desc,
                                       errbuf, errcap);
  if (rc != 0) return rc;
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = stream_info(js, TW_NATS_EVENTS_STREAM, &si, &jerr);
  if (s != NATS_OK) {
    tw__nats_err(errbuf, errcap, TW_NATS_EVENTS_STREAM, s, jerr);
    return TW_EIO;
  }
  const char *d = si->Config != NULL ? si->Config->Description : NULL;
  const char *at = d != NULL ? strstr(d, "partitions=") : NULL;
  int have = at != NULL ? atoi(at + strlen("partitions=")) : 0;
  jsStreamInfo_Destroy(si);
  if (have > 0 && have != partitions) {
    snprintf(errbuf, errcap,
             "stream EVENTS is partitioned %d ways (made with --partitions %d), not %d: every "
             "sender and engine must use --partitions %d",
             have, have, partitions, have);
    return TW_EINVAL;
  }
  return 0;
}

int tw__nats_ensure_stream(jsCtx *js, const char *name, const char *subjects, int replicas,
                           char *errbuf, size_t errcap) {
  return tw__nats_ensure_stream_desc(js, name, subjects, replicas, NULL, errbuf, errcap);
}

int tw__nats_ensure_stream_desc(jsCtx *js, const char *name, const char *subjects, int replicas,
                                const char *description, char *errbuf, size_t errcap) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = stream_info(js, name, &si, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return 0;
  }
  if (s != NATS_NOT_FOUND) {
    tw__nats_err(errbuf, errcap, name, s, jerr);
    return TW_EIO;
  }
  jsStreamConfig sc;
  jsStreamConfig_Init(&sc);
  const char *subj[1] = {subjects};
  sc.Name = name;
  sc.Subjects = subj;
  sc.SubjectsLen = 1;
  sc.Storage = js_FileStorage;
  sc.Duplicates = TW_NATS_DUPLICATE_WINDOW_MS * NATS_MS_TO_NS;
  sc.Replicas = replicas > 0 ? replicas : 1;
  sc.Description = description;
  for (int attempt = 1;; attempt++) {
    si = NULL;
    jerr = 0;
    s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (!tw__nats_transient(s) || attempt >= 30) break;
    jsStreamInfo_Destroy(si);
    nats_Sleep(1000);
  }
  /* Another process may have created it meanwhile: that is as good. */
  if (s != NATS_OK && jerr == JSStreamNameExistErr) s = NATS_OK;
  jsStreamInfo_Destroy(si);
  if (s != NATS_OK) {
    char what[128];
    snprintf(what, sizeof what, "cannot create stream %s", name);
    tw__nats_err(errbuf, errcap, what, s, jerr);
    return TW_EIO;
  }
  return 0;
}


/* ---- send -------------------------------------------------------------------------------------
 */

/* The producer publishes asynchronously, at most SEND_WINDOW messages awaiting their
 * acknowledgement; a message refused for a transient reason (a node lost, an election) is sent
 * again, with its Nats-Msg-Id, up to SEND_ATTEMPTS times; the acknowledgement handler runs on a
 * library thread, hence the mutex. */
#define SEND_WINDOW 4096
#define SEND_ATTEMPTS 60

typedef struct sender {
  jsCtx *js;
  int partitions;
  int timeout_ms;
  tw_nats_send_stats_t *st;
  pthread_mutex_t mu; /* st, failed, errbuf, retries (the ack handler's thread) */
  char *errbuf;
  size_t errcap;
  int failed; /* a NATS failure: errbuf holds it */
  uint64_t retries;
} sender_t;

static void on_publish_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *ud) {
  sender_t *sd = ud;
  if (pa != NULL) {
    pthread_mutex_lock(&sd->mu);
    if (pa->Duplicate) sd->st->duplicates++;
    sd->st->records++;
    sd->st->bytes += (uint64_t)natsMsg_GetDataLength(msg);
    pthread_mutex_unlock(&sd->mu);
  } else if (pae != NULL) {
    pthread_mutex_lock(&sd->mu);
    int again = tw__nats_transient(pae->Err) && sd->retries < (uint64_t)SEND_ATTEMPTS * 1024 &&
                !sd->failed;
    if (again) sd->retries++;
    if (!again && !sd->failed) {
      char what[160];
      snprintf(what, sizeof what, "publish to %s", natsMsg_GetSubject(msg));
      if (pae->ErrText != NULL)
        snprintf(sd->errbuf, sd->errcap, "%s: %s (JetStream error %d)", what, pae->ErrText,
                 (int)pae->ErrCode);
      else
        tw__nats_err(sd->errbuf, sd->errcap, what, pae->Err, pae->ErrCode);
      sd->failed = 1;
    }
    pthread_mutex_unlock(&sd->mu);
    /* Sent again with the same Nats-Msg-Id: the stream stores it once whatever reached it. */
    if (again) {
      natsStatus rs = js_PublishMsgAsync(js, &msg, NULL);
      if (rs == NATS_OK) return;
      pthread_mutex_lock(&sd->mu);
      if (!sd->failed)
        tw__nats_err(sd->errbuf, sd->errcap, "publishing again after a failure", rs, 0);
      sd->failed = 1;
      pthread_mutex_unlock(&sd->mu);
    }
  }
  natsMsg_Destroy(msg);
}

static int send_record(void *ud, const tw_record_t *rec) {
  sender_t *sd = ud;
  char event_id[TW_NATS_ID_MAX + 1], inst[TW_NATS_ID_MAX + 1], subject[48];
  int partition = 0;
  if ((rec->flags & (TW_REC_TRUNCATED | TW_REC_BROKEN)) != 0) {
    event_id[0] = inst[0] = '\0';
  } else {
    tw_nats_record_ids(rec->data, rec->len_bytes, rec->format, event_id, inst);
  }
  pthread_mutex_lock(&sd->mu);
  int failed = sd->failed;
  if (inst[0] == '\0') sd->st->unkeyed++;
  pthread_mutex_unlock(&sd->mu);
  if (failed) return TW_EIO;
  if (inst[0] != '\0') partition = tw_nats_partition(inst, strlen(inst), sd->partitions);
  snprintf(subject, sizeof subject, "tw.events.%d", partition);
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, NULL, rec->data, (int)rec->len_bytes);
  if (s == NATS_OK && event_id[0] != '\0') s = natsMsgHeader_Set(m, "Nats-Msg-Id", event_id);
  if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Expected-Stream", TW_NATS_EVENTS_STREAM);
  for (int attempt = 1; s == NATS_OK; attempt++) {
    s = js_PublishMsgAsync(sd->js, &m, NULL); /* blocks while the window is full */
    if (s == NATS_OK || !tw__nats_transient(s) || attempt >= SEND_ATTEMPTS) break;
    nats_Sleep(500);
    s = NATS_OK;
  }
  natsMsg_Destroy(m); /* NULL when the library took it */
  if (s != NATS_OK) {
    char what[128];
    snprintf(what, sizeof what, "publish of record %llu to %s", (unsigned long long)rec->line,
             subject);
    pthread_mutex_lock(&sd->mu);
    tw__nats_err(sd->errbuf, sd->errcap, what, s, 0);
    sd->failed = 1;
    pthread_mutex_unlock(&sd->mu);
    return s == NATS_NO_MEMORY ? TW_ENOMEM : TW_EIO;
  }
  return 0;
}

int tw_nats_send(const char *url, int partitions, int replicas, const char *path,
                 const tw_source_opts_t *opts, int timeout_ms, tw_nats_send_stats_t *stats,
                 char *errbuf, size_t errcap) {
  tw_nats_send_stats_t local;
  if (stats == NULL) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (url == NULL || path == NULL || partitions < 1 || partitions > TW_NATS_PARTITIONS_MAX ||
      timeout_ms <= 0)
    return TW_EINVAL;
  natsConnection *nc = NULL;
  jsCtx *js = NULL, *ajs = NULL;
  tw_source_t *src = NULL;
  sender_t sd;
  memset(&sd, 0, sizeof sd);
  pthread_mutex_init(&sd.mu, NULL);
  sd.partitions = partitions;
  sd.timeout_ms = timeout_ms;
  sd.st = stats;
  sd.errbuf = errbuf;
  sd.errcap = errcap;
  int rc = tw__nats_connect(url, &nc, &js, errbuf, errcap);
  if (rc != 0) goto done;
  rc = tw__nats_events_stream(js, partitions, replicas, errbuf, errcap);
  if (rc != 0) goto done;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = timeout_ms;
  jo.PublishAsync.MaxPending = SEND_WINDOW;
  jo.PublishAsync.AckHandler = on_publish_ack;
  jo.PublishAsync.AckHandlerClosure = &sd;
  jo.PublishAsync.StallWait = timeout_ms;
  if (natsConnection_JetStream(&ajs, nc, &jo) != NATS_OK) {
    tw__nats_err(errbuf, errcap, "JetStream context", NATS_ERR, 0);
    rc = TW_EIO;
    goto done;
  }
  sd.js = ajs;
  rc = tw_source_find("file")->open(path, opts, &src);
  if (rc != 0) goto done;
  do {
    rc = src->vt->poll(src, 1024, send_record, &sd);
  } while (rc >= 0);
  if (rc == TW_EOF) rc = 0;
  /* Wait for the acknowledgements still outstanding (and the resends they cause). */
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = (int64_t)timeout_ms * 12;
  natsStatus s = js_PublishAsyncComplete(ajs, &po);
  pthread_mutex_lock(&sd.mu);
  if (rc == 0 && sd.failed) rc = TW_EIO;
  if (rc == 0 && s != NATS_OK) {
    tw__nats_err(errbuf, errcap, "waiting for the stream's acknowledgements", s, 0);
    rc = TW_EIO;
  }
  pthread_mutex_unlock(&sd.mu);
done:
  if (src != NULL) src->vt->close(src);
  jsCtx_Destroy(ajs);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  pthread_mutex_destroy(&sd.mu);
  return rc;
}

/* ---- partition consumer -----------------------------------------------------------------------
 */

typedef struct held {
  natsMsg *msg;
  uint64_t seq;
} held_t;

struct tw_nats_consumer {
  natsConnection *nc; /* borrowed */
  jsCtx *js;          /* borrowed */
  int partition;
  natsSubscription *sub;
  char origin[48]; /* "nats:tw.events.<k>" */
  tw_format_t format;
  size_t max_record_bytes;
  held_t *ring; /* delivered, not yet acknowledged: ring[head .. head+count) */
  size_t cap, head, count;
  uint64_t last_seq; /* the stream sequence of the last message delivered */
  uint64_t pending;  /* messages the consumer still had after the last one delivered (its
                        metadata), or from the consumer's info; UINT64_MAX: not known yet */
  int64_t info_ms;   /* when the consumer's info was last asked for (monotonic ms) */
  uint64_t last_cseq; /* the consumer sequence of the last message received from the current
                         consumer (0: none yet); each delivery, redeliveries too, takes the next */
  int broken;         /* a message came without its sequences, or after a gap in the consumer's
                         deliveries: nothing more until a reset */
  char owner[TW_NATS_ID_MAX + 1]; /* the engine's id, in the consumer's name */
  char name[TW_NATS_ID_MAX + 48];  /* the current consumer: tw-p<K>-<owner>-<random> */
  uint64_t ack_failures;
};

/* (Re)create the partition's consumer to deliver from after_seq + 1 and bind a pull subscription
 * to it. The consumer is recreated at the position of the state the engine holds for the
 * partition: that state, not the consumer's ack floor, says what is done (an engine that took the
 * partition over from a checkpoint resumes from the checkpoint). A previous owner's pull
 * subscription stops receiving when its consumer goes. The consumer keeps one copy, in memory
 * (Replicas 1): it holds nothing the state does not, and a cluster makes it without electing a
 * group; when its server goes, the owner makes it again (tw_nats_consumer_reset). */
static int make_consumer(tw_nats_consumer_t *c, uint64_t after_seq, char *errbuf, size_t errcap) {
  char subject[32];
  const char *durable = c->name;
  snprintf(subject, sizeof subject, "tw.events.%d", c->partition);
  if (c->sub != NULL) {
    natsSubscription_Destroy(c->sub);
    c->sub = NULL;
  }
  /* A new name each time: a cluster deletes or replaces a consumer through its metadata leader,
   * which waits for the consumer's server, perhaps the one that went away; a new consumer needs
   * none of that. The old ones go by themselves once nobody pulls from them (InactiveThreshold). */
  c->last_cseq = 0; /* a new consumer numbers its deliveries from 1 */
  uint32_t rnd = randombytes_random();
  snprintf(c->name, sizeof c->name, "tw-p%d-%s-%08x", c->partition, c->owner, (unsigned)rnd);
  jsErrCode jerr = 0;
  natsStatus s;
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = durable;
  cc.FilterSubject = subject;
  cc.AckPolicy = js_AckAll; /* acknowledging a message acknowledges every earlier one */
  cc.AckWait = TW_NATS_ACK_WAIT_MS * TW_NATS_MS_TO_NS;
  cc.MaxAckPending = TW_NATS_MAX_ACK_PENDING;
  cc.MaxDeliver = -1;
  cc.Replicas = 1;
  cc.MemoryStorage = true;
  cc.InactiveThreshold = TW_NATS_CONSUMER_INACTIVE_MS * TW_NATS_MS_TO_NS;
  if (after_seq > 0) {
    cc.DeliverPolicy = js_DeliverByStartSequence;
    cc.OptStartSeq = after_seq + 1;
  } else {
    cc.DeliverPolicy = js_DeliverAll;
  }
  jsConsumerInfo *ci = NULL;
  jerr = 0;
  s = js_AddConsumer(&ci, c->js, TW_NATS_EVENTS_STREAM, &cc, NULL, &jerr);
  jsConsumerInfo_Destroy(ci);
  if (s == NATS_OK) {
    jsSubOptions so;
    jsSubOptions_Init(&so);
    so.Stream = TW_NATS_EVENTS_STREAM;
    so.Consumer = durable;
    so.Config.MemoryStorage = true; /* the library checks these against the consumer */
    so.Config.Replicas = 1;
    so.Config.AckPolicy = js_AckAll;
    jerr = 0;
    s = js_PullSubscribe(&c->sub, c->js, subject, durable, NULL, &so, &jerr);
  }
  if (s != NATS_OK) {
    tw__nats_err(errbuf, errcap, "cannot create the partition's consumer", s, jerr);
    return s == NATS_NO_MEMORY ? TW_ENOMEM : TW_EIO;
  }
  return 0;
}

int tw_nats_consumer_reset(tw_nats_consumer_t *c, char *errbuf, size_t errcap) {
  if (c == NULL) return TW_EINVAL;
  /* The kept messages belong to the subscription about to go (a message refers to it): free
   * them first. Their acknowledgement is not needed: the new consumer starts after them, and the
   * state's position, not the consumer, says what is done. */
  for (size_t i = 0; i < c->count; i++) natsMsg_Destroy(c->ring[(c->head + i) % c->cap].msg);
  c->head = c->count = 0;
  c->pending = UINT64_MAX;
  c->broken = 0;
  return make_consumer(c, c->last_seq, errbuf, errcap);
}

int tw_nats_consumer_open(void *nc, void *js, int partition, const char *owner,
                          uint64_t after_seq, tw_format_t format, size_t max_record_bytes,
                          tw_nats_consumer_t **out, char *errbuf, size_t errcap) {
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (nc == NULL || js == NULL || out == NULL || partition < 0 ||
      partition >= TW_NATS_PARTITIONS_MAX || owner == NULL || owner[0] == '\0' ||
      strlen(owner) > TW_NATS_ID_MAX)
    return TW_EINVAL;
  tw_nats_consumer_t *c = calloc(1, sizeof *c);
  if (c == NULL) return TW_ENOMEM;
  c->nc = nc;
  c->js = js;
  c->partition = partition;
  snprintf(c->owner, sizeof c->owner, "%s", owner);
  c->format = format;
  c->max_record_bytes = max_record_bytes > 0 ? max_record_bytes : TW_EVENT_MAX_BYTES;
  c->cap = TW_NATS_MAX_ACK_PENDING;
  c->ring = calloc(c->cap, sizeof *c->ring);
  c->last_seq = after_seq;
  c->pending = UINT64_MAX;
  if (c->ring == NULL) {
    free(c);
    return TW_ENOMEM;
  }
  snprintf(c->origin, sizeof c->origin, "nats:tw.events.%d", partition);
  int rc = make_consumer(c, after_seq, errbuf, errcap);
  if (rc != 0) {
    tw_nats_consumer_close(c);
    return rc;
  }
  *out = c;
  return 0;
}

void tw_nats_consumer_close(tw_nats_consumer_t *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < c->count; i++) natsMsg_Destroy(c->ring[(c->head + i) % c->cap].msg);
  if (c->sub != NULL) natsSubscription_Destroy(c->sub);
  free(c->ring);
  free(c);
}

/* Deliver one fetched message as a record: body borrowed for the call, line = stream sequence. */
static int deliver(tw_nats_consumer_t *c, natsMsg *m, uint64_t seq, tw_record_cb cb, void *ud) {
  const char *data = natsMsg_GetData(m);
  size_t len = (size_t)natsMsg_GetDataLength(m);
  if (data == NULL) data = "";
  tw_record_t rec;
  memset(&rec, 0, sizeof rec);
  rec.data = data;
  rec.len_bytes = len;
  /* A JSON line published with its newline. */
  while (rec.len_bytes > 0 && (data[rec.len_bytes - 1] == '\n' || data[rec.len_bytes - 1] == '\r'))
    rec.len_bytes--;
  rec.full_len_bytes = rec.len_bytes;
  rec.format = c->format != TW_FORMAT_AUTO ? c->format
                                           : detect((const unsigned char *)data, rec.len_bytes);
  rec.origin = c->origin;
  rec.offset_bytes = seq; /* positions are stream sequences (tw_pipeline_track_stream) */
  rec.line = seq;
  if (rec.len_bytes > c->max_record_bytes) {
    rec.len_bytes = TW_REC_HEAD_BYTES;
    rec.flags = TW_REC_TRUNCATED;
    rec.reason = "too_long";
  }
  return cb(ud, &rec);
}

int tw_nats_consumer_fetch(tw_nats_consumer_t *c, int max, int64_t wait_ms, tw_record_cb cb,
                           void *ud, int *caught_up) {
  *caught_up = 0;
  if (c == NULL || cb == NULL || max < 1) return TW_EINVAL;
  /* Broken, or its making failed (no subscription): nothing until tw_nats_consumer_reset. */
  if (c->broken || c->sub == NULL) return TW_EAGAIN;
  size_t room = c->cap - c->count;
  if (room == 0) return 0; /* everything delivered waits for a commit */
  if ((size_t)max > room) max = (int)room;
  natsMsgList list = {0};
  jsFetchRequest fr;
  jsFetchRequest_Init(&fr);
  fr.Batch = max;
  if (wait_ms <= 0) {
    fr.NoWait = true;
    fr.Expires = 0;
  } else {
    fr.Expires = wait_ms * TW_NATS_MS_TO_NS;
  }
  /* Messages already queued on the subscription are answers to earlier pull requests that came
   * after the request expired here: usually only the server's "request timeout" status (a short
   * poll's request outlives it), sometimes messages (a node lost, a leader moved). libnats 3.4.1
   * (Debian 12) takes the queued ones first, asks the server for the rest of the batch and then
   * reads until it holds that rest, not the batch: with more than half a batch of messages queued
   * it writes past its array of Batch messages while answers keep coming (it overflowed under
   * tests/e2e/test_nats.sh). With a batch of 1 it stops at one message: a queued one, or (when
   * only statuses were queued) the answer to a no-wait request of 1. Left: answers arriving
   * between this count and libnats's own (microseconds; more than half a batch of messages must
   * arrive in them, and more after); only a fetch of our own, outside libnats, would close that. */
  if (tw__nats_consumer_queued(c) > 0) {
    fr.Batch = 1;
    fr.NoWait = true;
    fr.Expires = 0;
    max = 1;
  }
  jsErrCode jerr = 0;
  natsStatus s = natsSubscription_FetchRequest(&list, c->sub, &fr);
  (void)jerr;
  if (list.Count == 0) {
    natsMsgList_Destroy(&list);
    if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND || s == NATS_OK) {
      /* A fetch that expired empty does not say the partition is read to its end (the request
       * may expire before the server sends): the consumer's own count does, asked at most every
       * CONSUMER_INFO_MS while it is not known to be zero. Once it is zero, every
       * CONSUMER_ALIVE_MS: a consumer whose server went away answers no fetch, and without the
       * question its partition would look read to its end for ever (no new event read, and its
       * scheduled rules run as if nothing were missing). */
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      int64_t now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
      if (now - c->info_ms >= (c->pending != 0 ? CONSUMER_INFO_MS : CONSUMER_ALIVE_MS)) {
        c->info_ms = now;
        jsConsumerInfo *ci = NULL;
        jsErrCode ierr = 0;
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = CONSUMER_INFO_WAIT_MS;
        natsStatus is = js_GetConsumerInfo(&ci, c->js, TW_NATS_EVENTS_STREAM, c->name, &jo, &ierr);
        if (is == NATS_OK) c->pending = ci->NumPending;
        jsConsumerInfo_Destroy(ci);
        /* The consumer is gone or offline (its server lost): a failure, so that the owner makes
         * a new one, not a partition that looks read to its end for ever. Its count is no longer
         * known: the next empty fetch must not report the partition read to its end (that would
         * tell the owner the consumer works, and it would never make a new one). */
        if (is != NATS_OK) {
          c->pending = UINT64_MAX;
          return TW_EAGAIN;
        }
      }
      *caught_up = c->pending == 0;
      return 0;
    }
    fprintf(stderr, "tutorwatch: NATS fetch from %s failed: %s\n", c->origin,
            natsStatus_GetText(s));
    return s == NATS_NO_MEMORY ? TW_ENOMEM : TW_EAGAIN;
  }
  int rc = 0, n = 0;
  for (int i = 0; i < list.Count; i++) {
    natsMsg *m = list.Msgs[i];
    list.Msgs[i] = NULL;
    if (rc != 0 || n >= max) { /* after a failure, or more than asked: left for redelivery */
      natsMsg_Destroy(m);
      continue;
    }
    jsMsgMetaData *meta = NULL;
    uint64_t seq = 0, cseq = 0, pending = 1;
    if (natsMsg_GetMetaData(&meta, m) == NATS_OK) {
      seq = meta->Sequence.Stream;
      cseq = meta->Sequence.Consumer;
      pending = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
    }
    if (cseq != 0 && cseq <= c->last_cseq) { /* a delivery received already (cannot happen;
                                                 kept safe) */
      natsMsg_Destroy(m);
      continue;
    }
    if (seq == 0 || cseq != c->last_cseq + 1) {
      /* A message without its sequences cannot be placed. A gap in the consumer's sequence means
       * deliveries the server made never came (lost with a connection to a server that went
       * away, or dropped by the client library), and the messages in them are not redelivered
       * once a later one is acknowledged (AckAll). Either way this and the rest come again after
       * a reset, which starts after the last stream sequence delivered. */
      if (rc == 0 && seq != 0 && cseq != 0)
        fprintf(stderr,
                "tutorwatch: NATS consumer %s: deliveries %llu..%llu never came; the consumer "
                "is made again after stream sequence %llu\n",
                c->name, (unsigned long long)c->last_cseq + 1, (unsigned long long)cseq - 1,
                (unsigned long long)c->last_seq);
      natsMsg_Destroy(m);
      c->broken = 1;
      if (rc == 0) rc = TW_EAGAIN;
      continue;
    }
    c->last_cseq = cseq;
    if (seq <= c->last_seq) { /* a redelivery of what was delivered already (its
                                 acknowledgement waited longer than the ack wait) */
      natsMsg_Destroy(m);
      continue;
    }
    c->last_seq = seq;
    c->pending = pending;
    held_t *h = &c->ring[(c->head + c->count) % c->cap];
    h->msg = m;
    h->seq = seq;
    c->count++;
    n++;
    rc = deliver(c, m, seq, cb, ud);
    *caught_up = pending == 0;
  }
  natsMsgList_Destroy(&list);
  /* A failure after some records were delivered returns their count; the failure (c->broken)
   * comes with the next call. */
  if (rc == TW_EAGAIN && n > 0) return n;
  return rc != 0 ? rc : n;
}

int tw_nats_consumer_ack(tw_nats_consumer_t *c, uint64_t done_seq) {
  if (c == NULL) return 0;
  size_t acked = 0;
  natsMsg *last = NULL; /* AckAll: the newest one covered acknowledges the others */
  while (c->count > 0) {
    held_t *h = &c->ring[c->head];
    if (h->seq > done_seq) break;
    natsMsg_Destroy(last);
    last = h->msg;
    h->msg = NULL;
    c->head = (c->head + 1) % c->cap;
    c->count--;
    acked++;
  }
  if (last != NULL && natsMsg_Ack(last, NULL) != NATS_OK) c->ack_failures++;
  natsMsg_Destroy(last);
  /* Acks are published asynchronously; push them out so the server's view follows the commits.
   * A lost one only means a redelivery, which the state's position skips. */
  if (acked > 0) natsConnection_FlushTimeout(c->nc, 2000);
  return (int)(acked > INT32_MAX ? INT32_MAX : acked);
}

int tw_nats_consumer_broken(const tw_nats_consumer_t *c) {
  return c != NULL && c->broken;
}

const char *tw_nats_consumer_name(const tw_nats_consumer_t *c) {
  return c != NULL ? c->name : "";
}

const char *tw__nats_consumer_subject(const struct tw_nats_consumer *c) {
  return c != NULL && c->sub != NULL ? natsSubscription_GetSubject(c->sub) : NULL;
}

int tw__nats_consumer_queued(const struct tw_nats_consumer *c) {
  int queued = 0;
  if (c == NULL || c->sub == NULL || natsSubscription_GetPending(c->sub, &queued, NULL) != NATS_OK)
    return 0;
  return queued;
}

size_t tw_nats_consumer_pending(const tw_nats_consumer_t *c) {
  return c != NULL ? c->count : 0;
}
