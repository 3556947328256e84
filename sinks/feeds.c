/*
 * feeds.c: the "feeds" sink: feed history in LMDB, regulator and self-check XPUB feeds, history
 * ROUTER (contract in tw_feeds.h).
 *
 * Two sides share this struct. The engine side (write and flush, called under the outputs'
 * lock, so one thread at a time) stages alerts and, at flush, appends them to the history in
 * one LMDB write transaction, then raises `committed` and wakes the feed thread through an
 * inproc PUSH socket (also used only under that lock). The feed thread owns every network
 * socket: it publishes history records (committed_seq, published up to sent_seq] read in its
 * own read transactions, applies or refuses subscriptions, and answers history requests.
 * Readers and the single writer never wait for each other (LMDB MVCC).
 *
 * History store: LMDB environment STATE/feeds with two databases: "alerts" (8-byte big-endian
 * feed sequence → record) and "ids" (alert_id → sequence). A record is
 *   version(1)=1 | topic_len(1) | topic | code_len(1) | credit code | canonical alert JSON
 * The map is reserved at 8 GiB of address space (sparse); when it is full, appends fail and are
 * counted (store_errors) while the engine's journal keeps every alert.
 */
#include <errno.h>
#include <jansson.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zmq.h>

#include "tw_error.h"
#include "tw_feeds.h"

#define FEEDS_MAP_BYTES (8ULL << 30)
#define FEEDS_SNDHWM 100000
#define FEEDS_LINGER_MS 1000
#define FEEDS_POLL_MS 100
#define FEEDS_PUBLISH_PER_TURN 10000
#define FEEDS_PAGE_DEFAULT 500
#define FEEDS_PAGE_MAX 1000
#define FEEDS_SCAN_MAX 20000
#define FEEDS_REPLY_BYTES (4u << 20)
#define FEEDS_REQUEST_MAX 4096
#define FEEDS_SUB_MAX 256 /* bytes of a subscription */
#define FEEDS_TOPIC_MAX 192

extern const tw_sink_vt_t tw__sink_feeds_vt;

typedef struct staged {
  char alert_id[TW_ALERT_ID_LEN];
  size_t off, len; /* record bytes in the arena */
} staged_t;

typedef struct feeds {
  tw_sink_t base;
  tw_feeds_opts_t opts;
  MDB_env *env;
  MDB_dbi alerts, ids;
  /* engine side */
  staged_t *staged;
  size_t n_staged, cap_staged;
  char *arena;
  size_t arena_len, arena_cap;
  uint64_t last_seq; /* last sequence stored */
  void *notify_push;
  /* shared */
  _Atomic uint64_t committed_seq;
  _Atomic uint64_t dropped, refused, store_errors, unencodable;
  _Atomic int stop;
  /* feed thread */
  void *ctx, *notify_pull, *xpub_reg, *xpub_self, *router;
  tw_auth_zap_t *zap;
  pthread_t thread;
  int thread_started;
  uint64_t sent_seq;
  tw_feed_buf_t payload;
  char notify_ep[64];
} feeds_t;

static void put_be64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)(v & 0xff);
}
static uint64_t get_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

/* A stored record, parsed in place. */
typedef struct rec_view {
  const char *topic, *code, *json;
  size_t topic_len, code_len, json_len;
} rec_view_t;

static int rec_parse(const MDB_val *v, rec_view_t *r) {
  const unsigned char *p = v->mv_data;
  size_t n = v->mv_size, at = 0;
  if (n < 3 || p[0] != 1) return -1;
  r->topic_len = p[1];
  at = 2;
  if (at + r->topic_len + 1 > n) return -1;
  r->topic = (const char *)p + at;
  at += r->topic_len;
  r->code_len = p[at++];
  if (at + r->code_len > n) return -1;
  r->code = (const char *)p + at;
  at += r->code_len;
  r->json = (const char *)p + at;
  r->json_len = n - at;
  return 0;
}

/* ---- engine side ---------------------------------------------------------------------------- */

static int arena_put(feeds_t *f, const void *p, size_t n) {
  if (f->arena_len + n > f->arena_cap) {
    size_t ncap = f->arena_cap ? f->arena_cap : 16384;
    while (ncap < f->arena_len + n) ncap *= 2;
    char *a = realloc(f->arena, ncap);
    if (a == NULL) return TW_ENOMEM;
    f->arena = a;
    f->arena_cap = ncap;
  }
  memcpy(f->arena + f->arena_len, p, n);
  f->arena_len += n;
  return 0;
}

static int feeds_write(tw_sink_t *sink, const tw_alert_t *a, const char *json, size_t len) {
  feeds_t *f = (feeds_t *)sink;
  char topic[FEEDS_TOPIC_MAX];
  if (f == NULL || a == NULL || json == NULL || len < 2) return TW_EINVAL;
  if (f->opts.suppress != NULL && f->opts.suppress(f->opts.suppress_ud, a)) return 0;
  int t = tw_feed_topic(a, topic, sizeof topic);
  if (t < 0)
    t = 0; /* kept in the history, never on the regulator feed: only an operator's
              empty prefix reads it */
  size_t code_len =
      a->institution_id.ptr != NULL && a->institution_id.len <= 64 ? a->institution_id.len : 0;
  if (f->n_staged == f->cap_staged) {
    size_t ncap = f->cap_staged ? f->cap_staged * 2 : 64;
    staged_t *s = realloc(f->staged, ncap * sizeof *s);
    if (s == NULL) return TW_ENOMEM;
    f->staged = s;
    f->cap_staged = ncap;
  }
  staged_t *s = &f->staged[f->n_staged];
  memcpy(s->alert_id, a->alert_id, TW_ALERT_ID_LEN);
  s->off = f->arena_len;
  unsigned char hdr[2] = {1, (unsigned char)t};
  unsigned char cl = (unsigned char)code_len;
  int rc = arena_put(f, hdr, 2);
  if (rc == 0) rc = arena_put(f, topic, (size_t)t);
  if (rc == 0) rc = arena_put(f, &cl, 1);
  if (rc == 0 && code_len > 0) rc = arena_put(f, a->institution_id.ptr, code_len);
  if (rc == 0) rc = arena_put(f, json, len);
  if (rc != 0) {
    f->arena_len = s->off;
    return rc;
  }
  s->len = f->arena_len - s->off;
  f->n_staged++;
  return 0;
}

static int store_staged(feeds_t *f) {
  MDB_txn *txn = NULL;
  uint64_t seq = f->last_seq;
  int rc = mdb_txn_begin(f->env, NULL, 0, &txn);
  for (size_t i = 0; i < f->n_staged && rc == 0; i++) {
    staged_t *s = &f->staged[i];
    MDB_val k = {TW_ALERT_ID_LEN, s->alert_id}, v;
    rc = mdb_get(txn, f->ids, &k, &v);
    if (rc == 0) continue; /* handed over again after a restart: stored and published before */
    if (rc != MDB_NOTFOUND) break;
    unsigned char kb[8];
    put_be64(kb, ++seq);
    MDB_val sk = {8, kb}, sv = {s->len, f->arena + s->off};
    rc = mdb_put(txn, f->alerts, &sk, &sv, MDB_APPEND);
    if (rc == 0) {
      MDB_val iv = {8, kb};
      rc = mdb_put(txn, f->ids, &k, &iv, 0);
    }
  }
  if (rc == 0) {
    rc = mdb_txn_commit(txn);
  } else {
    mdb_txn_abort(txn);
  }
  if (rc != 0) {
    fprintf(stderr, "tutorwatch: feed history: cannot store %zu alerts: %s\n", f->n_staged,
            mdb_strerror(rc));
    f->store_errors += f->n_staged;
    return TW_EIO;
  }
  f->last_seq = seq;
  return 0;
}

static int feeds_flush(tw_sink_t *sink) {
  feeds_t *f = (feeds_t *)sink;
  if (f == NULL) return TW_EINVAL;
  if (f->n_staged == 0) return 0;
  int rc = store_staged(f);
  f->n_staged = 0;
  f->arena_len = 0;
  atomic_store(&f->committed_seq, f->last_seq);
  /* A wake-up only: the thread reads committed_seq, so a lost one is caught by its timeout. */
  zmq_send(f->notify_push, "", 0, ZMQ_DONTWAIT);
  return rc;
}

/* ---- feed thread ---------------------------------------------------------------------------- */

static const tw_client_t *msg_client(const feeds_t *f, zmq_msg_t *m, const char **name) {
  const char *uid = zmq_msg_gets(m, "User-Id");
  *name = uid != NULL && uid[0] != '\0' ? uid : "anonymous";
  return f->opts.auth != NULL && uid != NULL ? tw_auth_find_name(f->opts.auth, uid) : NULL;
}

/* Subscriptions on an XPUB in manual mode: apply those inside the subscriber's scope. */
static void handle_subscriptions(feeds_t *f, void *xpub, tw_view_t view) {
  for (int i = 0; i < 1000; i++) {
    zmq_msg_t m;
    zmq_msg_init(&m);
    if (zmq_msg_recv(&m, xpub, ZMQ_DONTWAIT) < 0) {
      zmq_msg_close(&m);
      return;
    }
    const unsigned char *d = zmq_msg_data(&m);
    size_t n = zmq_msg_size(&m);
    if (n >= 1 && (d[0] == 0 || d[0] == 1)) {
      const char *who;
      const tw_client_t *c = msg_client(f, &m, &who);
      const char *prefix = (const char *)d + 1;
      size_t plen = n - 1;
      bool ok = plen <= FEEDS_SUB_MAX &&
                (f->opts.auth == NULL || tw_auth_scope_allows(c, view, prefix, plen));
      if (ok) {
        zmq_setsockopt(xpub, d[0] == 1 ? ZMQ_SUBSCRIBE : ZMQ_UNSUBSCRIBE, prefix, plen);
      } else if (d[0] == 1) {
        char role[64] = "";
        if (c != NULL)
          snprintf(role, sizeof role, " (%s%s%s)", tw_role_name(c->role), c->scope[0] ? " " : "",
                   c->scope);
        f->refused++;
        fprintf(stderr,
                "tutorwatch run: %s feed: refused subscription '%.*s' from '%s'%s: outside its "
                "scope\n",
                view == TW_VIEW_FEED ? "regulator" : "self-check", (int)(plen > 64 ? 64 : plen),
                prefix, who, role);
      }
    }
    zmq_msg_close(&m);
  }
}

static void send_live(feeds_t *f, void *sock, const char *topic, size_t tlen) {
  if (zmq_send(sock, topic, tlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
      zmq_send(sock, f->payload.data, f->payload.len, ZMQ_DONTWAIT) < 0) {
    if (zmq_errno() == EAGAIN) f->dropped++;
  }
}

/* Publish (sent_seq, committed_seq], at most FEEDS_PUBLISH_PER_TURN; 1 when more is left. */
/* encode: the payload of one stored alert for a view into f->payload; 0, or -1 after logging the
 * alert that cannot be encoded (it stays in the history and the journal) and counting it. */
static int encode(feeds_t *f, int self_check, uint64_t seq, const rec_view_t *r) {
  int rc = tw_feed_payload(self_check, f->opts.format, seq, r->json, r->json_len, &f->payload);
  if (rc == 0) return 0;
  f->unencodable++;
  fprintf(stderr,
          "tutorwatch: feed: alert %llu cannot be encoded for the %s feed (%s); not sent, still in "
          "the history and the journal\n",
          (unsigned long long)seq, self_check ? "self-check" : "regulator", tw_strerror(rc));
  return -1;
}

static int publish_new(feeds_t *f) {
  uint64_t upto = atomic_load(&f->committed_seq);
  if (f->sent_seq >= upto) return 0;
  MDB_txn *txn;
  MDB_cursor *cur;
  if (mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn) != 0) return 0;
  if (mdb_cursor_open(txn, f->alerts, &cur) != 0) {
    mdb_txn_abort(txn);
    return 0;
  }
  unsigned char kb[8];
  put_be64(kb, f->sent_seq + 1);
  MDB_val k = {8, kb}, v;
  int n = 0;
  int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
  while (rc == 0 && n < FEEDS_PUBLISH_PER_TURN) {
    uint64_t seq = get_be64(k.mv_data);
    if (seq > upto) break;
    rec_view_t r;
    if (rec_parse(&v, &r) == 0) {
      if (f->xpub_reg != NULL && r.topic_len > 0 && encode(f, 0, seq, &r) == 0)
        send_live(f, f->xpub_reg, r.topic, r.topic_len);
      if (f->xpub_self != NULL && r.code_len == 18 && encode(f, 1, seq, &r) == 0)
        send_live(f, f->xpub_self, r.code, r.code_len);
    }
    f->sent_seq = seq;
    n++;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return f->sent_seq < upto;
}

static void reply_error(feeds_t *f, zmq_msg_t *id, const char *msg) {
  char buf[512];
  json_t *o = json_pack("{s:b,s:s}", "ok", 0, "error", msg);
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  snprintf(buf, sizeof buf, "%s", s ? s : "{\"ok\":false}");
  free(s);
  json_decref(o);
  zmq_msg_send(id, f->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(f->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(f->router, buf, strlen(buf), ZMQ_DONTWAIT);
}

/* One history request: [identity, "", request] from a REQ (or DEALER sending the empty
 * delimiter). Anything else is dropped whole. */
static void handle_history(feeds_t *f) {
  zmq_msg_t parts[3];
  if (!tw_auth_recv_request(f->router, parts, FEEDS_REQUEST_MAX)) return;
  const char *who;
  const tw_client_t *c = msg_client(f, &parts[2], &who);
  json_error_t jerr;
  json_t *req = json_loadb(zmq_msg_data(&parts[2]), zmq_msg_size(&parts[2]), 0, &jerr);
  const char *prefix = json_string_value(json_object_get(req, "prefix"));
  json_t *jsince = json_object_get(req, "since"), *jmax = json_object_get(req, "max");
  const char *vname = json_string_value(json_object_get(req, "view"));
  tw_view_t view = c != NULL && c->role == TW_ROLE_INSTITUTION ? TW_VIEW_SELF_CHECK : TW_VIEW_FEED;
  if (vname != NULL) view = strcmp(vname, "self-check") == 0 ? TW_VIEW_SELF_CHECK : TW_VIEW_FEED;
  if (prefix == NULL || !json_is_integer(jsince) || json_integer_value(jsince) < 0 ||
      (jmax != NULL && (!json_is_integer(jmax) || json_integer_value(jmax) < 1)) ||
      (vname != NULL && strcmp(vname, "self-check") != 0 && strcmp(vname, "feed") != 0) ||
      strlen(prefix) > FEEDS_SUB_MAX) {
    reply_error(f, &parts[0],
                "bad request: want {\"prefix\":\"4401\",\"since\":0} with optional \"max\" "
                "and \"view\" (feed or self-check)");
    goto done;
  }
  size_t plen = strlen(prefix);
  if (f->opts.auth != NULL && !tw_auth_scope_allows(c, view, prefix, plen)) {
    f->refused++;
    fprintf(stderr,
            "tutorwatch run: history: refused prefix '%.*s' (%s) to '%s'%s%s: outside its "
            "scope\n",
            (int)(plen > 64 ? 64 : plen), prefix, tw_view_name(view), who, c ? " " : "",
            c ? tw_role_name(c->role) : "");
    reply_error(f, &parts[0], "prefix outside your scope");
    goto done;
  }
  uint64_t since = (uint64_t)json_integer_value(jsince);
  size_t max = jmax ? (size_t)json_integer_value(jmax) : FEEDS_PAGE_DEFAULT;
  if (max > FEEDS_PAGE_MAX) max = FEEDS_PAGE_MAX;
  uint64_t last = atomic_load(&f->committed_seq);
  /* Only what has been published live is served, so history and live agree at every seq. */
  if (last > f->sent_seq) last = f->sent_seq;
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  tw_feed_buf_t out = {NULL, 0, 0, FEEDS_REPLY_BYTES};
  size_t *lens = calloc(max, sizeof *lens), found = 0;
  uint64_t next = since;
  if (lens == NULL || mdb_txn_begin(f->env, NULL, MDB_RDONLY, &txn) != 0 ||
      mdb_cursor_open(txn, f->alerts, &cur) != 0) {
    reply_error(f, &parts[0], "history store unavailable");
    goto page_done;
  }
  unsigned char kb[8];
  put_be64(kb, since + 1);
  MDB_val k = {8, kb}, v;
  int rc = since < UINT64_MAX ? mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE) : MDB_NOTFOUND;
  for (size_t scanned = 0; rc == 0 && scanned < FEEDS_SCAN_MAX && found < max; scanned++) {
    uint64_t seq = get_be64(k.mv_data);
    if (seq > last) break;
    rec_view_t r;
    if (rec_parse(&v, &r) == 0) {
      int self = view == TW_VIEW_SELF_CHECK;
      const char *hay = self ? r.code : r.topic;
      size_t hlen = self ? r.code_len : r.topic_len;
      if (hlen >= plen && memcmp(hay, prefix, plen) == 0 && (!self || r.code_len == 18) &&
          encode(f, self, seq, &r) == 0) {
        size_t before = out.len;
        if (tw_feed_buf_put(&out, f->payload.data, f->payload.len) != 0) {
          out.len = before;
          break; /* this reply is full: the client asks again from next */
        }
        lens[found++] = f->payload.len;
      }
    }
    next = seq;
    rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
  }
  {
    char head[160];
    snprintf(head, sizeof head, "{\"ok\":true,\"next\":%llu,\"more\":%s,\"last\":%llu}",
             (unsigned long long)next, next < last ? "true" : "false", (unsigned long long)last);
    zmq_msg_send(&parts[0], f->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(f->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(f->router, head, strlen(head), found > 0 ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT);
    size_t at = 0;
    for (size_t i = 0; i < found; i++) {
      zmq_send(f->router, out.data + at, lens[i],
               i + 1 < found ? ZMQ_SNDMORE | ZMQ_DONTWAIT : ZMQ_DONTWAIT);
      at += lens[i];
    }
  }
page_done:
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  free(lens);
  tw_feed_buf_free(&out);
done:
  json_decref(req);
  for (int i = 0; i < 3; i++) zmq_msg_close(&parts[i]);
}

static void *feeds_main(void *arg) {
  feeds_t *f = arg;
  while (!atomic_load(&f->stop)) {
    zmq_pollitem_t items[4];
    int n = 0, i_notify = -1, i_reg = -1, i_self = -1, i_hist = -1;
    items[i_notify = n++] = (zmq_pollitem_t){f->notify_pull, 0, ZMQ_POLLIN, 0};
    if (f->xpub_reg) items[i_reg = n++] = (zmq_pollitem_t){f->xpub_reg, 0, ZMQ_POLLIN, 0};
    if (f->xpub_self) items[i_self = n++] = (zmq_pollitem_t){f->xpub_self, 0, ZMQ_POLLIN, 0};
    if (f->router) items[i_hist = n++] = (zmq_pollitem_t){f->router, 0, ZMQ_POLLIN, 0};
    int more = f->sent_seq < atomic_load(&f->committed_seq);
    int rc = zmq_poll(items, n, more ? 0 : FEEDS_POLL_MS);
    if (rc < 0 && zmq_errno() != EINTR) break;
    if (rc > 0 && (items[i_notify].revents & ZMQ_POLLIN)) {
      char b[8];
      while (zmq_recv(f->notify_pull, b, sizeof b, ZMQ_DONTWAIT) >= 0) {
      }
    }
    /* Subscriptions first, so a subscriber that asked before an alert was published gets it. */
    if (i_reg >= 0 && (items[i_reg].revents & ZMQ_POLLIN))
      handle_subscriptions(f, f->xpub_reg, TW_VIEW_FEED);
    if (i_self >= 0 && (items[i_self].revents & ZMQ_POLLIN))
      handle_subscriptions(f, f->xpub_self, TW_VIEW_SELF_CHECK);
    publish_new(f);
    if (i_hist >= 0 && (items[i_hist].revents & ZMQ_POLLIN))
      for (int k = 0; k < 16; k++) {
        int ev = 0;
        size_t sz = sizeof ev;
        if (zmq_getsockopt(f->router, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)) break;
        handle_history(f);
      }
  }
  /* Stopping: what was committed before close is published. */
  while (publish_new(f)) {
  }
  return NULL;
}

/* ---- open / close --------------------------------------------------------------------------- */

static void close_sock(void *s, int linger_ms) {
  if (s == NULL) return;
  zmq_setsockopt(s, ZMQ_LINGER, &linger_ms, sizeof linger_ms);
  zmq_close(s);
}

static void feeds_close(tw_sink_t *sink) {
  feeds_t *f = (feeds_t *)sink;
  if (f == NULL) return;
  if (f->n_staged > 0) feeds_flush(sink);
  if (f->thread_started) {
    atomic_store(&f->stop, 1);
    zmq_send(f->notify_push, "", 0, ZMQ_DONTWAIT);
    pthread_join(f->thread, NULL);
  }
  close_sock(f->notify_push, 0);
  close_sock(f->notify_pull, 0);
  close_sock(f->xpub_reg, FEEDS_LINGER_MS);
  close_sock(f->xpub_self, FEEDS_LINGER_MS);
  close_sock(f->router, 0);
  if (f->ctx != NULL) zmq_ctx_term(f->ctx);
  tw_auth_zap_join(f->zap);
  if (f->env != NULL) mdb_env_close(f->env);
  tw_feed_buf_free(&f->payload);
  free(f->staged);
  free(f->arena);
  free(f);
}

static int open_store(feeds_t *f, char *err, size_t cap) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/feeds", f->opts.state_dir);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, cap, "cannot create the feed history '%s': %s", dir, strerror(errno));
    return TW_ESTATE;
  }
  MDB_txn *txn = NULL;
  int rc = mdb_env_create(&f->env);
  if (rc == 0) rc = mdb_env_set_maxdbs(f->env, 4);
  if (rc == 0) rc = mdb_env_set_mapsize(f->env, (size_t)FEEDS_MAP_BYTES);
  if (rc == 0) rc = mdb_env_open(f->env, dir, MDB_NOTLS | (f->opts.no_sync ? MDB_NOSYNC : 0), 0600);
  if (rc == 0) rc = mdb_txn_begin(f->env, NULL, 0, &txn);
  if (rc == 0) rc = mdb_dbi_open(txn, "alerts", MDB_CREATE, &f->alerts);
  if (rc == 0) rc = mdb_dbi_open(txn, "ids", MDB_CREATE, &f->ids);
  if (rc == 0) {
    MDB_cursor *cur;
    MDB_val k, v;
    rc = mdb_cursor_open(txn, f->alerts, &cur);
    if (rc == 0) {
      int g = mdb_cursor_get(cur, &k, &v, MDB_LAST);
      if (g == 0 && k.mv_size == 8) f->last_seq = get_be64(k.mv_data);
      mdb_cursor_close(cur);
    }
  }
  if (rc == 0) {
    rc = mdb_txn_commit(txn);
    txn = NULL;
  }
  if (txn) mdb_txn_abort(txn);
  if (rc != 0) {
    snprintf(err, cap, "cannot open the feed history '%s': %s", dir, mdb_strerror(rc));
    return TW_ESTATE;
  }
  return 0;
}

static int bind_endpoint(feeds_t *f, int type, const char *ep, tw_view_t view, void **out,
                         char *err, size_t cap) {
  void *s = zmq_socket(f->ctx, type);
  int hwm = f->opts.sndhwm > 0 ? f->opts.sndhwm : FEEDS_SNDHWM, one = 1;
  int64_t max_msg = FEEDS_REQUEST_MAX;
  if (s == NULL) goto fail;
  if (type == ZMQ_XPUB && (zmq_setsockopt(s, ZMQ_SNDHWM, &hwm, sizeof hwm) != 0 ||
                           zmq_setsockopt(s, ZMQ_XPUB_NODROP, &one, sizeof one) != 0 ||
                           zmq_setsockopt(s, ZMQ_XPUB_MANUAL, &one, sizeof one) != 0 ||
                           zmq_setsockopt(s, ZMQ_XPUB_VERBOSER, &one, sizeof one) != 0))
    goto fail;
  if (zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0) goto fail;
  if (f->opts.auth != NULL && tw_auth_server_socket(f->opts.auth, s, view) != 0) goto fail;
  if (zmq_bind(s, ep) != 0) goto fail;
  *out = s;
  return 0;
fail:;
  int e = zmq_errno();
  snprintf(err, cap, "cannot open %s endpoint '%s': %s%s", tw_view_name(view), ep, zmq_strerror(e),
           strstr(ep, "://") == NULL ? " (an endpoint looks like tcp://127.0.0.1:7601)" : "");
  close_sock(s, 0);
  errno = e;
  return TW_EZMQ;
}

int tw_feeds_open(const tw_feeds_opts_t *opts, tw_sink_t **out, char *err, size_t cap) {
  feeds_t *f = NULL;
  int rc = TW_EINVAL;
  if (opts == NULL || opts->state_dir == NULL || out == NULL) {
    snprintf(err, cap, "the feeds need a state directory");
    return TW_EINVAL;
  }
  f = calloc(1, sizeof *f);
  rc = TW_ENOMEM;
  if (f == NULL) {
    snprintf(err, cap, "%s", tw_strerror(rc));
    return rc;
  }
  f->base.vt = &tw__sink_feeds_vt;
  f->opts = *opts;
  rc = open_store(f, err, cap);
  if (rc != 0) goto fail;
  f->sent_seq = f->last_seq; /* what an earlier run stored it also published (or dropped) */
  atomic_store(&f->committed_seq, f->last_seq);
  rc = TW_EZMQ;
  f->ctx = zmq_ctx_new();
  if (f->ctx == NULL) {
    snprintf(err, cap, "cannot create a ZeroMQ context: %s", zmq_strerror(zmq_errno()));
    goto fail;
  }
  if (opts->auth != NULL && tw_auth_zap_start(opts->auth, f->ctx, "tutorwatch run", &f->zap) != 0) {
    snprintf(err, cap, "cannot start the ZAP handler: %s", zmq_strerror(zmq_errno()));
    goto fail;
  }
  snprintf(f->notify_ep, sizeof f->notify_ep, "inproc://tw-feeds-%p", (void *)f);
  f->notify_pull = zmq_socket(f->ctx, ZMQ_PULL);
  f->notify_push = zmq_socket(f->ctx, ZMQ_PUSH);
  if (f->notify_pull == NULL || f->notify_push == NULL ||
      zmq_bind(f->notify_pull, f->notify_ep) != 0 ||
      zmq_connect(f->notify_push, f->notify_ep) != 0) {
    snprintf(err, cap, "cannot create the feed wake-up socket: %s", zmq_strerror(zmq_errno()));
    goto fail;
  }
  if (opts->feed_endpoint != NULL &&
      (rc = bind_endpoint(f, ZMQ_XPUB, opts->feed_endpoint, TW_VIEW_FEED, &f->xpub_reg, err,
                          cap)) != 0)
    goto fail;
  if (opts->self_check_endpoint != NULL &&
      (rc = bind_endpoint(f, ZMQ_XPUB, opts->self_check_endpoint, TW_VIEW_SELF_CHECK, &f->xpub_self,
                          err, cap)) != 0)
    goto fail;
  if (opts->history_endpoint != NULL &&
      (rc = bind_endpoint(f, ZMQ_ROUTER, opts->history_endpoint, TW_VIEW_HISTORY, &f->router, err,
                          cap)) != 0)
    goto fail;
  rc = TW_ENOMEM;
  if (pthread_create(&f->thread, NULL, feeds_main, f) != 0) {
    snprintf(err, cap, "cannot start the feed thread");
    goto fail;
  }
  f->thread_started = 1;
  *out = &f->base;
  return 0;
fail:;
  int e = errno;
  feeds_close(&f->base);
  errno = e;
  return rc;
}

void tw_feeds_stats(tw_sink_t *sink, tw_feeds_stats_t *out) {
  memset(out, 0, sizeof *out);
  if (sink == NULL || sink->vt != &tw__sink_feeds_vt) return;
  feeds_t *f = (feeds_t *)sink;
  out->published = atomic_load(&f->committed_seq);
  out->dropped = atomic_load(&f->dropped);
  out->refused = atomic_load(&f->refused);
  out->store_errors = atomic_load(&f->store_errors);
  out->unencodable = atomic_load(&f->unencodable);
}

static int feeds_open_vt(const char *target, tw_sink_t **out) {
  (void)target, (void)out;
  return TW_EINVAL; /* needs tw_feeds_opts_t: use tw_feeds_open */
}

const tw_sink_vt_t tw__sink_feeds_vt = {
    .name = "feeds",
    .open = feeds_open_vt,
    .write = feeds_write,
    .flush = feeds_flush,
    .close = feeds_close,
};
