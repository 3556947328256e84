/*
 * nats.c: events over NATS JetStream (contract and layout in tw_nats.h; design in
 * docs/scaling.md): `send --nats` publishes records to tw.events.<partition>, and the "nats"
 * source consumes the engine's partitions with durable pull consumers.
 *
 * The source keeps every delivered message in a ring, in delivery order, with the end of its body
 * in the source's own byte positions (offset_bytes of the records), until tw_nats_committed
 * acknowledges the messages wholly below a committed position. Acknowledgements per consumer are
 * thus in stream order, so a consumer's ack floor is exactly how far its partition is committed,
 * and a restart recreates the consumer to deliver from just above it.
 *
 * Bounds: the ring holds at most n_owns × max_ack_pending messages (the server delivers no more
 * to a consumer while that many wait for their ack); a fetch never asks for more than the ring's
 * free room; a poll waits at most SOURCE_IDLE_WAIT_MS in all when nothing is available; a record
 * above max_record_bytes is delivered truncated for the dead-letter file.
 */
#include <jansson.h>
#include <msgpack.h>
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_nats.h"
#include "tw_pipeline.h"

#define SOURCE_DEFAULT_BATCH 256
#define SOURCE_DEFAULT_ACK_WAIT_MS (10LL * 60 * 1000)
#define SOURCE_DEFAULT_MAX_ACK_PENDING 20000
#define SOURCE_IDLE_WAIT_MS 50 /* a poll that finds nothing waits this long in all */
#define NATS_MS_TO_NS 1000000LL

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

static void nats_err(char *errbuf, size_t errcap, const char *what, natsStatus s, jsErrCode jerr) {
  if (errbuf == NULL || errcap == 0) return;
  const char *last = nats_GetLastError(NULL); /* the library's detail, else its status text */
  int n = snprintf(errbuf, errcap, "%s: %s", what,
                   last != NULL && last[0] != '\0' ? last : natsStatus_GetText(s));
  if (jerr != 0 && n > 0 && (size_t)n < errcap)
    snprintf(errbuf + n, errcap - (size_t)n, " (JetStream error %d)", (int)jerr);
}

/* connect: url with a 2 s connect timeout and no endless reconnect (a lost server stops the run;
 * what it did not acknowledge is delivered again to the next run). */
static int nats_open(const char *url, natsConnection **nc, jsCtx **js, char *errbuf,
                     size_t errcap) {
  natsOptions *o = NULL;
  natsStatus s = natsOptions_Create(&o);
  if (s == NATS_OK) s = natsOptions_SetURL(o, url);
  if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
  if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, 10);
  if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 200);
  if (s == NATS_OK) s = natsConnection_Connect(nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK) {
    nats_err(errbuf, errcap, url, s, 0);
    *nc = NULL;
    return s == NATS_NO_MEMORY ? TW_ENOMEM : TW_EIO;
  }
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 5000;
  s = natsConnection_JetStream(js, *nc, &jo);
  if (s != NATS_OK) {
    nats_err(errbuf, errcap, "JetStream context", s, 0);
    natsConnection_Destroy(*nc);
    *nc = NULL;
    return TW_EIO;
  }
  return 0;
}

int tw__nats_ensure_stream(jsCtx *js, const char *name, const char *subjects, char *errbuf,
                           size_t errcap);

/* tw__nats_ensure_stream: create stream name on subjects (file storage,
 * TW_NATS_DUPLICATE_WINDOW_MS) unless it exists; an existing stream is used as it is. Returns 0 or
 * TW_EIO (errbuf). Shared with sinks/nats_alerts.c. */
int tw__nats_ensure_stream(jsCtx *js, const char *name, const char *subjects, char *errbuf,
                           size_t errcap) {
  jsStreamInfo *si = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_GetStreamInfo(&si, js, name, NULL, &jerr);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(si);
    return 0;
  }
  if (s != NATS_NOT_FOUND) {
    nats_err(errbuf, errcap, name, s, jerr);
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
  s = js_AddStream(&si, js, &sc, NULL, &jerr);
  /* Another process may have created it meanwhile: that is as good. */
  if (s != NATS_OK && jerr == JSStreamNameExistErr) s = NATS_OK;
  jsStreamInfo_Destroy(si);
  if (s != NATS_OK) {
    char what[128];
    snprintf(what, sizeof what, "cannot create stream %s", name);
    nats_err(errbuf, errcap, what, s, jerr);
    return TW_EIO;
  }
  return 0;
}

int tw__nats_connect(const char *url, natsConnection **nc, jsCtx **js, char *errbuf, size_t errcap);

/* tw__nats_connect: as nats_open, for sinks/nats_alerts.c. */
int tw__nats_connect(const char *url, natsConnection **nc, jsCtx **js, char *errbuf,
                     size_t errcap) {
  return nats_open(url, nc, js, errbuf, errcap);
}

/* ---- send -------------------------------------------------------------------------------------
 */

typedef struct sender {
  jsCtx *js;
  int partitions;
  int timeout_ms;
  tw_nats_send_stats_t *st;
  char *errbuf;
  size_t errcap;
  int failed; /* a NATS failure: errbuf holds it */
} sender_t;

static int send_record(void *ud, const tw_record_t *rec) {
  sender_t *sd = ud;
  char event_id[TW_NATS_ID_MAX + 1], inst[TW_NATS_ID_MAX + 1], subject[48];
  int partition = 0;
  if ((rec->flags & (TW_REC_TRUNCATED | TW_REC_BROKEN)) != 0) {
    event_id[0] = inst[0] = '\0';
  } else {
    tw_nats_record_ids(rec->data, rec->len_bytes, rec->format, event_id, inst);
  }
  if (inst[0] != '\0')
    partition = tw_nats_partition(inst, strlen(inst), sd->partitions);
  else
    sd->st->unkeyed++;
  snprintf(subject, sizeof subject, "tw.events.%d", partition);
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = sd->timeout_ms;
  po.ExpectStream = TW_NATS_EVENTS_STREAM;
  if (event_id[0] != '\0') po.MsgId = event_id;
  jsPubAck *pa = NULL;
  jsErrCode jerr = 0;
  natsStatus s = js_Publish(&pa, sd->js, subject, rec->data, (int)rec->len_bytes, &po, &jerr);
  if (s != NATS_OK) {
    char what[128];
    snprintf(what, sizeof what, "publish of record %llu to %s", (unsigned long long)rec->line,
             subject);
    nats_err(sd->errbuf, sd->errcap, what, s, jerr);
    sd->failed = 1;
    return s == NATS_NO_MEMORY ? TW_ENOMEM : TW_EIO;
  }
  if (pa != NULL && pa->Duplicate) sd->st->duplicates++;
  jsPubAck_Destroy(pa);
  sd->st->records++;
  sd->st->bytes += rec->len_bytes;
  return 0;
}

int tw_nats_send(const char *url, int partitions, const char *path, const tw_source_opts_t *opts,
                 int timeout_ms, tw_nats_send_stats_t *stats, char *errbuf, size_t errcap) {
  tw_nats_send_stats_t local;
  if (stats == NULL) stats = &local;
  memset(stats, 0, sizeof *stats);
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (url == NULL || path == NULL || partitions < 1 || partitions > TW_NATS_PARTITIONS_MAX ||
      timeout_ms <= 0)
    return TW_EINVAL;
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  tw_source_t *src = NULL;
  int rc = nats_open(url, &nc, &js, errbuf, errcap);
  if (rc != 0) goto done;
  rc = tw__nats_ensure_stream(js, TW_NATS_EVENTS_STREAM, "tw.events.>", errbuf, errcap);
  if (rc != 0) goto done;
  rc = tw_source_find("file")->open(path, opts, &src);
  if (rc != 0) goto done;
  sender_t sd = {js, partitions, timeout_ms, stats, errbuf, errcap, 0};
  do {
    rc = src->vt->poll(src, 1024, send_record, &sd);
  } while (rc >= 0);
  if (rc == TW_EOF) rc = 0;
done:
  if (src != NULL) src->vt->close(src);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  return rc;
}

/* ---- source -----------------------------------------------------------------------------------
 */

extern const tw_source_vt_t tw__source_nats_vt;

typedef struct held {
  natsMsg *msg;
  uint64_t end_offset; /* the source position after its body */
} held_t;

typedef struct part {
  int partition;
  natsSubscription *sub;
  char origin[48];  /* "nats:tw.events.<k>" */
  natsMsgList list; /* fetched, not yet delivered: Msgs[next .. Count) */
  int next;
  uint64_t *seqs;     /* stream sequence of each fetched message (batch entries) */
  uint64_t remote;    /* messages the consumer still holds after the last one fetched */
  uint64_t idle_poll; /* the poll in which it was last fetched while idle */
} part_t;

typedef struct nats_source {
  tw_source_t base;
  natsConnection *nc;
  jsCtx *js;
  part_t *parts;
  size_t n_parts, next_part; /* round robin */
  int batch;
  tw_format_t format;
  size_t max_record_bytes;
  uint64_t offset_bytes;
  uint64_t polls;
  held_t *ring; /* delivered, not yet acknowledged: ring[head .. head+count) */
  size_t cap, head, count;
  uint64_t ack_failures;
} nats_source_t;

/* (Re)create the durable consumer of a partition so that it delivers from just above its ack
 * floor, and bind a pull subscription to it. */
static int open_part(nats_source_t *ns, part_t *pt, const tw_nats_source_opts_t *o, char *errbuf,
                     size_t errcap) {
  char durable[32], subject[32];
  snprintf(durable, sizeof durable, "tw-p%d", pt->partition);
  snprintf(subject, sizeof subject, "tw.events.%d", pt->partition);
  snprintf(pt->origin, sizeof pt->origin, "nats:%s", subject);
  jsConsumerInfo *ci = NULL;
  jsErrCode jerr = 0;
  uint64_t start = 0;
  natsStatus s = js_GetConsumerInfo(&ci, ns->js, TW_NATS_EVENTS_STREAM, durable, NULL, &jerr);
  if (s == NATS_OK) {
    start = ci->AckFloor.Stream + 1;
    jsConsumerInfo_Destroy(ci);
    ci = NULL;
    s = js_DeleteConsumer(ns->js, TW_NATS_EVENTS_STREAM, durable, NULL, &jerr);
    if (s != NATS_OK) {
      nats_err(errbuf, errcap, "cannot replace consumer", s, jerr);
      return TW_EIO;
    }
  } else if (s != NATS_NOT_FOUND) {
    nats_err(errbuf, errcap, "consumer info", s, jerr);
    return TW_EIO;
  }
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = durable;
  cc.FilterSubject = subject;
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = (o->ack_wait_ms > 0 ? o->ack_wait_ms : SOURCE_DEFAULT_ACK_WAIT_MS) * NATS_MS_TO_NS;
  cc.MaxAckPending = o->max_ack_pending > 0 ? o->max_ack_pending : SOURCE_DEFAULT_MAX_ACK_PENDING;
  cc.MaxDeliver = -1;
  if (start > 1) {
    cc.DeliverPolicy = js_DeliverByStartSequence;
    cc.OptStartSeq = start;
  } else {
    cc.DeliverPolicy = js_DeliverAll;
  }
  s = js_AddConsumer(&ci, ns->js, TW_NATS_EVENTS_STREAM, &cc, NULL, &jerr);
  jsConsumerInfo_Destroy(ci);
  if (s != NATS_OK) {
    nats_err(errbuf, errcap, "cannot create consumer", s, jerr);
    return TW_EIO;
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = TW_NATS_EVENTS_STREAM;
  so.Consumer = durable;
  s = js_PullSubscribe(&pt->sub, ns->js, subject, durable, NULL, &so, &jerr);
  if (s != NATS_OK) {
    nats_err(errbuf, errcap, "pull subscription", s, jerr);
    return TW_EIO;
  }
  return 0;
}

static void source_close(tw_source_t *src) {
  nats_source_t *ns = (nats_source_t *)src;
  if (ns == NULL) return;
  for (size_t i = 0; i < ns->count; i++) natsMsg_Destroy(ns->ring[(ns->head + i) % ns->cap].msg);
  for (size_t i = 0; i < ns->n_parts; i++) {
    natsMsgList_Destroy(&ns->parts[i].list);
    free(ns->parts[i].seqs);
    if (ns->parts[i].sub != NULL) natsSubscription_Destroy(ns->parts[i].sub);
  }
  free(ns->parts);
  free(ns->ring);
  jsCtx_Destroy(ns->js);
  natsConnection_Destroy(ns->nc);
  free(ns);
}

int tw_nats_source_open(const tw_nats_source_opts_t *o, tw_source_t **out, char *errbuf,
                        size_t errcap) {
  if (errbuf != NULL && errcap > 0) errbuf[0] = '\0';
  if (o == NULL || out == NULL || o->url == NULL || o->partitions < 1 ||
      o->partitions > TW_NATS_PARTITIONS_MAX || o->owns == NULL || o->n_owns < 1 ||
      o->n_owns > (size_t)o->partitions || o->batch < 0 || o->max_ack_pending < 0) {
    if (errbuf != NULL) snprintf(errbuf, errcap, "invalid NATS source options");
    return TW_EINVAL;
  }
  for (size_t i = 0; i < o->n_owns; i++) {
    if (o->owns[i] < 0 || o->owns[i] >= o->partitions) {
      snprintf(errbuf, errcap, "partition %d is not in 0..%d", o->owns[i], o->partitions - 1);
      return TW_EINVAL;
    }
    for (size_t j = 0; j < i; j++)
      if (o->owns[j] == o->owns[i]) {
        snprintf(errbuf, errcap, "partition %d is listed twice", o->owns[i]);
        return TW_EINVAL;
      }
  }
  nats_source_t *ns = calloc(1, sizeof *ns);
  if (ns == NULL) return TW_ENOMEM;
  ns->base.vt = &tw__source_nats_vt;
  ns->batch = o->batch > 0 ? o->batch : SOURCE_DEFAULT_BATCH;
  ns->format = o->format;
  ns->max_record_bytes = o->max_record_bytes > 0 ? o->max_record_bytes : TW_EVENT_MAX_BYTES;
  size_t per =
      (size_t)(o->max_ack_pending > 0 ? o->max_ack_pending : SOURCE_DEFAULT_MAX_ACK_PENDING);
  ns->cap = per * o->n_owns;
  ns->ring = calloc(ns->cap, sizeof *ns->ring);
  ns->parts = calloc(o->n_owns, sizeof *ns->parts);
  int rc = TW_ENOMEM;
  if (ns->ring == NULL || ns->parts == NULL) goto fail;
  rc = nats_open(o->url, &ns->nc, &ns->js, errbuf, errcap);
  if (rc != 0) goto fail;
  rc = tw__nats_ensure_stream(ns->js, TW_NATS_EVENTS_STREAM, "tw.events.>", errbuf, errcap);
  if (rc != 0) goto fail;
  for (size_t i = 0; i < o->n_owns; i++) {
    ns->parts[i].partition = o->owns[i];
    ns->n_parts = i + 1;
    ns->parts[i].seqs = calloc((size_t)ns->batch, sizeof *ns->parts[i].seqs);
    if (ns->parts[i].seqs == NULL) {
      rc = TW_ENOMEM;
      goto fail;
    }
    rc = open_part(ns, &ns->parts[i], o, errbuf, errcap);
    if (rc != 0) goto fail;
  }
  *out = &ns->base;
  return 0;
fail:
  source_close(&ns->base);
  return rc;
}

/* Deliver one fetched message: keep it for its acknowledgement, then hand its body on. */
static int deliver(nats_source_t *ns, const part_t *pt, natsMsg *m, uint64_t seq, tw_record_cb cb,
                   void *ud) {
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
  rec.format = ns->format != TW_FORMAT_AUTO ? ns->format
                                            : detect((const unsigned char *)data, rec.len_bytes);
  rec.origin = pt->origin;
  rec.offset_bytes = ns->offset_bytes;
  rec.line = seq;
  if (rec.len_bytes > ns->max_record_bytes) {
    rec.len_bytes = TW_REC_HEAD_BYTES;
    rec.flags = TW_REC_TRUNCATED;
    rec.reason = "too_long";
  }
  /* The pipeline's position after this record is offset + full_len_bytes; the next record starts
   * one further, so that even an empty body moves the position. */
  ns->offset_bytes += rec.full_len_bytes + 1;
  held_t *h = &ns->ring[(ns->head + ns->count) % ns->cap];
  h->msg = m;
  h->end_offset = rec.offset_bytes + rec.full_len_bytes;
  ns->count++;
  return cb(ud, &rec);
}

/* Fill a partition's buffer when it is empty: at most `want` messages, waiting up to wait_ms.
 * Returns 0 (possibly nothing fetched), TW_EIO or TW_ENOMEM. */
static int refill(nats_source_t *ns, part_t *pt, size_t want, int64_t wait_ms) {
  if (pt->next < pt->list.Count || want == 0) return 0;
  natsMsgList_Destroy(&pt->list);
  pt->list.Msgs = NULL;
  pt->list.Count = pt->next = 0;
  if (want > (size_t)ns->batch) want = (size_t)ns->batch;
  jsErrCode jerr = 0;
  natsStatus s = natsSubscription_Fetch(&pt->list, pt->sub, (int)want, wait_ms, &jerr);
  if ((s == NATS_TIMEOUT || s == NATS_NOT_FOUND) && pt->list.Count == 0) {
    natsMsgList_Destroy(&pt->list);
    pt->list.Msgs = NULL;
    pt->list.Count = 0;
    pt->remote = 0;
    return 0;
  }
  if (s != NATS_OK && s != NATS_TIMEOUT && s != NATS_NOT_FOUND) {
    natsMsgList_Destroy(&pt->list);
    pt->list.Msgs = NULL;
    pt->list.Count = 0;
    fprintf(stderr, "tutorwatch: NATS fetch from %s failed: %s\n", pt->origin,
            natsStatus_GetText(s));
    return s == NATS_NO_MEMORY ? TW_ENOMEM : TW_EIO;
  }
  if (pt->list.Count > ns->batch) { /* more than asked: the library broke its contract */
    natsMsgList_Destroy(&pt->list);
    pt->list.Msgs = NULL;
    pt->list.Count = 0;
    return TW_EIO;
  }
  for (int i = 0; i < pt->list.Count; i++) {
    jsMsgMetaData *meta = NULL;
    pt->seqs[i] = UINT64_MAX; /* no metadata (cannot happen on a pull consumer): last */
    if (natsMsg_GetMetaData(&meta, pt->list.Msgs[i]) == NATS_OK) {
      pt->seqs[i] = meta->Sequence.Stream;
      pt->remote = meta->NumPending;
      jsMsgMetaData_Destroy(meta);
    }
  }
  return 0;
}

/*
 * Poll: the owned partitions are merged in stream-sequence order, so one engine sees its
 * partitions' events in the order they were published (the order of a batch run over the same
 * file), not one partition racing ahead of another in event time. A partition whose buffer is
 * empty is fetched first: briefly when its consumer said nothing more was pending (a partition
 * that is idle must not hold the others back), for up to a second when messages are known to
 * wait. Then the head with the lowest stream sequence is delivered, until max_records or the
 * ring's room is reached, or a partition with messages still pending runs dry (refetch first).
 */
static int source_poll(tw_source_t *src, size_t max_records, tw_record_cb cb, void *ud) {
  nats_source_t *ns = (nats_source_t *)src;
  if (ns == NULL || cb == NULL) return TW_EINVAL;
  int64_t idle_wait_ms = SOURCE_IDLE_WAIT_MS / (int64_t)ns->n_parts;
  if (idle_wait_ms < 1) idle_wait_ms = 1;
  size_t n = 0;
  ns->polls++;
  while (n < max_records && ns->count < ns->cap) {
    size_t room = ns->cap - ns->count;
    for (size_t i = 0; i < ns->n_parts; i++) {
      part_t *pt = &ns->parts[i];
      if (pt->next < pt->list.Count) continue;
      /* An idle partition is asked once per poll, so it costs one short wait, not one per
       * record delivered from the others. */
      if (pt->remote == 0 && pt->idle_poll == ns->polls) continue;
      if (pt->remote == 0) pt->idle_poll = ns->polls;
      /* Never fetch more than the ring can keep, counting what other buffers already hold. */
      size_t buffered = 0;
      for (size_t j = 0; j < ns->n_parts; j++)
        buffered += (size_t)(ns->parts[j].list.Count - ns->parts[j].next);
      if (buffered >= room) break;
      int rc = refill(ns, pt, room - buffered, pt->remote > 0 ? 1000 : idle_wait_ms);
      if (rc != 0) return rc;
    }
    part_t *best = NULL;
    for (size_t i = 0; i < ns->n_parts; i++) {
      part_t *pt = &ns->parts[i];
      if (pt->next < pt->list.Count &&
          (best == NULL || pt->seqs[pt->next] < best->seqs[best->next]))
        best = pt;
    }
    if (best == NULL) break;
    /* Deliver from the best partition while it stays the lowest. */
    for (;;) {
      natsMsg *m = best->list.Msgs[best->next];
      uint64_t seq = best->seqs[best->next];
      best->list.Msgs[best->next++] = NULL; /* the ring owns it now */
      n++;
      int rc = deliver(ns, best, m, seq, cb, ud);
      if (rc != 0) return rc;
      if (n >= max_records || ns->count >= ns->cap || best->next >= best->list.Count) break;
      int lowest = 1;
      for (size_t i = 0; i < ns->n_parts && lowest; i++) {
        part_t *pt = &ns->parts[i];
        if (pt == best) continue;
        if (pt->next < pt->list.Count ? pt->seqs[pt->next] < best->seqs[best->next]
                                      : pt->remote > 0)
          lowest = 0;
      }
      if (!lowest) break;
    }
  }
  return n > (size_t)INT32_MAX ? INT32_MAX : (int)n;
}

void tw_nats_committed(tw_source_t *src, uint64_t finished_below_offset) {
  if (src == NULL || src->vt != &tw__source_nats_vt) return;
  nats_source_t *ns = (nats_source_t *)src;
  size_t acked = 0;
  while (ns->count > 0) {
    held_t *h = &ns->ring[ns->head];
    if (h->end_offset > finished_below_offset) break;
    if (natsMsg_Ack(h->msg, NULL) != NATS_OK) ns->ack_failures++;
    natsMsg_Destroy(h->msg);
    h->msg = NULL;
    ns->head = (ns->head + 1) % ns->cap;
    ns->count--;
    acked++;
  }
  /* Acks are published asynchronously; flush them out so a kill right after loses none that the
   * commit covered (a lost one would only mean a redelivery, dropped by the dedup). */
  if (acked > 0) natsConnection_FlushTimeout(ns->nc, 2000);
}

size_t tw_nats_source_pending(const tw_source_t *src) {
  if (src == NULL || src->vt != &tw__source_nats_vt) return 0;
  return ((const nats_source_t *)src)->count;
}

static int source_open_unsupported(const char *target, const tw_source_opts_t *opts,
                                   tw_source_t **out) {
  (void)target, (void)opts, (void)out;
  return TW_EINVAL; /* partitions and ownership do not fit a target string: tw_nats_source_open */
}

static int source_fd(tw_source_t *src) {
  (void)src;
  return -1;
}

const tw_source_vt_t tw__source_nats_vt = {
    .name = "nats",
    .open = source_open_unsupported,
    .poll = source_poll,
    .fd = source_fd,
    .close = source_close,
};
