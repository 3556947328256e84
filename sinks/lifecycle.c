/*
 * lifecycle.c: alert lifecycle, snoozes, escalation and the hash-chained audit log (contract in
 * tw_lifecycle.h).
 *
 * Two threads write the store, one LMDB write transaction at a time (LMDB serialises writers):
 * the engine side (sink write/flush, under the outputs' lock) records new alerts; the control
 * thread applies commands and escalations. The audit chain is extended inside each write
 * transaction, reading the last record in that same transaction, so the chain stays one line
 * whatever the interleaving. Snoozes are also kept in memory behind a mutex for the feeds'
 * per-alert check (a linear scan of at most TW_LC_SNOOZES_MAX, skipped when there is none).
 *
 * Bounds: requests ≤ TW_LC_REQUEST_MAX bytes; texts ≤ TW_LC_TEXT_MAX; comments per alert ≤
 * TW_LC_COMMENTS_MAX; a list reply ≤ TW_LC_LIST_MAX alerts and 50,000 records scanned;
 * escalation handles at most 100 due alerts per second. The map is reserved at 4 GiB (sparse).
 */
#include <errno.h>
#include <jansson.h>
#include <lmdb.h>
#include <pthread.h>
#include <sodium.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_lifecycle.h"

#define LC_MAP_BYTES (4ULL << 30)
#define LC_POLL_MS 200
#define LC_ESCALATE_PER_TURN 100
#define LC_LIST_SCAN_MAX 50000
#define LC_HASH_HEX 64
#define LC_NAME_MAX 128

extern const tw_sink_vt_t tw__sink_lifecycle_vt;

typedef struct snooze {
  char rule[LC_NAME_MAX + 1];
  char inst[24];
  int64_t until_ms;
} snooze_t;

typedef struct staged {
  size_t off, len; /* alert JSON in the arena */
  int snoozed;
} staged_t;

typedef struct lc {
  tw_sink_t base;
  tw_lifecycle_opts_t opts;
  MDB_env *env;
  MDB_dbi alerts, deadlines, snoozes, audit;
  pthread_mutex_t snooze_lock;
  snooze_t *snz;
  size_t n_snz;
  _Atomic size_t n_snz_hint; /* read without the lock: 0 means no snooze, skip */
  /* engine side (under the outputs' lock) */
  staged_t *staged;
  size_t n_staged, cap_staged;
  char *arena;
  size_t arena_len, arena_cap;
  /* control thread */
  void *ctx, *router;
  tw_auth_zap_t *zap;
  pthread_t thread;
  int started;
  _Atomic int stop;
  int64_t last_escalation_ms;
} lc_t;

static const tw_rule_t kEscalationRules[5] = {
    {.name = "escalation",
     .source = "tutorwatch: an open alert not acknowledged within its severity's deadline",
     .severity = TW_SEV_INFO},
    {.name = "escalation",
     .source = "tutorwatch: an open alert not acknowledged within its severity's deadline",
     .severity = TW_SEV_LOW},
    {.name = "escalation",
     .source = "tutorwatch: an open alert not acknowledged within its severity's deadline",
     .severity = TW_SEV_MEDIUM},
    {.name = "escalation",
     .source = "tutorwatch: an open alert not acknowledged within its severity's deadline",
     .severity = TW_SEV_HIGH},
    {.name = "escalation",
     .source = "tutorwatch: an open alert not acknowledged within its severity's deadline",
     .severity = TW_SEV_CRITICAL},
};

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int severity_of(const char *s) {
  for (int i = TW_SEV_INFO; i <= TW_SEV_CRITICAL; i++)
    if (s != NULL && strcmp(s, tw_severity_name((tw_severity_t)i)) == 0) return i;
  return -1;
}

void tw_lifecycle_default_deadlines(int64_t d[5]) {
  memset(d, 0, 5 * sizeof d[0]);
  d[TW_SEV_CRITICAL] = 24LL * 3600 * 1000;
  d[TW_SEV_HIGH] = 72LL * 3600 * 1000;
}

int tw_lifecycle_parse_deadlines(const char *spec, int64_t d[5]) {
  if (spec == NULL) return TW_EINVAL;
  const char *p = spec;
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t n = comma ? (size_t)(comma - p) : strlen(p);
    const char *eq = memchr(p, '=', n);
    if (eq == NULL) return TW_EINVAL;
    char sev[16];
    size_t sl = (size_t)(eq - p);
    if (sl == 0 || sl >= sizeof sev) return TW_EINVAL;
    memcpy(sev, p, sl);
    sev[sl] = '\0';
    int s = severity_of(sev);
    int64_t ms;
    if (s < 0 || tw_duration_parse(eq + 1, n - sl - 1, &ms) != 0 || ms > INT64_MAX / 4)
      return TW_EINVAL;
    d[s] = ms;
    p += n;
    if (*p == ',') p++;
  }
  return 0;
}

/* ---- audit chain ---------------------------------------------------------------------------- */

static void put_be64(unsigned char *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (unsigned char)(v & 0xff);
}
static uint64_t get_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

static void hash_hex(const char *data, size_t len, char *hex) {
  unsigned char h[32];
  crypto_generichash(h, sizeof h, (const unsigned char *)data, len, NULL, 0);
  sodium_bin2hex(hex, LC_HASH_HEX + 1, h, sizeof h);
}

/* The bytes a record's hash covers: everything before its last `,"hash":"`. */
static const char *hash_split(const char *rec, size_t len) {
  static const char k[] = ",\"hash\":\"";
  const size_t kl = sizeof k - 1;
  if (len < kl + LC_HASH_HEX + 2) return NULL;
  const char *at = rec + len - (kl + LC_HASH_HEX + 2);
  if (memcmp(at, k, kl) != 0 || rec[len - 2] != '"' || rec[len - 1] != '}') return NULL;
  return at;
}

/* audit_append: one record in txn. detail is stolen. */
static int audit_append(lc_t *lc, MDB_txn *txn, const char *kind, const char *actor,
                        const char *alert_id, json_t *detail) {
  MDB_cursor *cur;
  MDB_val k, v;
  uint64_t seq = 1;
  char prev[LC_HASH_HEX + 1];
  memset(prev, '0', LC_HASH_HEX);
  prev[LC_HASH_HEX] = '\0';
  int rc = mdb_cursor_open(txn, lc->audit, &cur);
  if (rc != 0) {
    json_decref(detail);
    return rc;
  }
  if (mdb_cursor_get(cur, &k, &v, MDB_LAST) == 0 && k.mv_size == 8) {
    seq = get_be64(k.mv_data) + 1;
    const char *at = hash_split(v.mv_data, v.mv_size);
    if (at != NULL) memcpy(prev, at + 9, LC_HASH_HEX);
  }
  mdb_cursor_close(cur);
  json_t *o = json_object();
  json_object_set_new(o, "seq", json_integer((json_int_t)seq));
  json_object_set_new(o, "at", json_integer((json_int_t)wall_ms()));
  json_object_set_new(o, "kind", json_string(kind));
  json_object_set_new(o, "actor", json_string(actor ? actor : "local"));
  json_object_set_new(o, "alert_id", alert_id ? json_string(alert_id) : json_null());
  json_object_set_new(o, "detail", detail ? detail : json_object());
  json_object_set_new(o, "prev", json_string(prev));
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (s == NULL) return ENOMEM;
  size_t n = strlen(s) - 1; /* without the closing brace */
  char hex[LC_HASH_HEX + 1];
  hash_hex(s, n, hex);
  size_t total = n + 9 + LC_HASH_HEX + 2;
  char *rec = malloc(total + 1);
  if (rec == NULL) {
    free(s);
    return ENOMEM;
  }
  memcpy(rec, s, n);
  snprintf(rec + n, total + 1 - n, ",\"hash\":\"%s\"}", hex);
  free(s);
  unsigned char kb[8];
  put_be64(kb, seq);
  MDB_val ak = {8, kb}, av = {total, rec};
  rc = mdb_put(txn, lc->audit, &ak, &av, MDB_APPEND);
  free(rec);
  return rc;
}

/* ---- records -------------------------------------------------------------------------------- */

static json_t *get_record(lc_t *lc, MDB_txn *txn, const char *alert_id) {
  MDB_val k = {strlen(alert_id), (void *)alert_id}, v;
  if (mdb_get(txn, lc->alerts, &k, &v) != 0) return NULL;
  json_error_t e;
  return json_loadb(v.mv_data, v.mv_size, 0, &e);
}

static int put_record(lc_t *lc, MDB_txn *txn, const char *alert_id, json_t *rec) {
  char *s = json_dumps(rec, JSON_COMPACT);
  if (s == NULL) return ENOMEM;
  MDB_val k = {strlen(alert_id), (void *)alert_id}, v = {strlen(s), s};
  int rc = mdb_put(txn, lc->alerts, &k, &v, 0);
  free(s);
  return rc;
}

static void deadline_key(unsigned char *kb, int64_t at_ms, const char *alert_id) {
  put_be64(kb, (uint64_t)at_ms);
  memset(kb + 8, 0, TW_ALERT_ID_LEN);
  memcpy(kb + 8, alert_id, strnlen(alert_id, TW_ALERT_ID_LEN));
}

static void deadline_del(lc_t *lc, MDB_txn *txn, json_t *rec) {
  json_t *d = json_object_get(rec, "deadline_ms");
  const char *id = json_string_value(json_object_get(rec, "alert_id"));
  if (!json_is_integer(d) || id == NULL) return;
  unsigned char kb[8 + TW_ALERT_ID_LEN];
  deadline_key(kb, (int64_t)json_integer_value(d), id);
  MDB_val k = {sizeof kb, kb};
  mdb_del(txn, lc->deadlines, &k, NULL);
  json_object_del(rec, "deadline_ms");
}

/* A new alert: its lifecycle record (open), its deadline, an audit record. Already known: 0. */
static int record_alert(lc_t *lc, MDB_txn *txn, const char *json, size_t len, int snoozed) {
  json_error_t e;
  json_t *a = json_loadb(json, len, 0, &e);
  const char *id = json_string_value(json_object_get(a, "alert_id"));
  int rc = 0;
  if (id == NULL) goto out;
  MDB_val k = {strlen(id), (void *)id}, v;
  if (mdb_get(txn, lc->alerts, &k, &v) == 0) goto out;
  int64_t now = wall_ms(), et = 0;
  const char *ets = json_string_value(json_object_get(a, "event_time"));
  if (ets != NULL) tw_parse_rfc3339(ets, strlen(ets), &et);
  int sev = severity_of(json_string_value(json_object_get(a, "severity")));
  json_t *r = json_object();
  static const char *const keep[] = {"alert_id",       "rule",   "severity",   "by",
                                     "institution_id", "region", "event_time", "message"};
  for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++) {
    json_t *x = json_object_get(a, keep[i]);
    if (x != NULL) json_object_set(r, keep[i], x);
  }
  json_object_set_new(r, "event_time_ms", json_integer((json_int_t)et));
  json_object_set_new(r, "state", json_string("open"));
  json_object_set_new(r, "assignee", json_null());
  json_object_set_new(r, "opened_at", json_integer((json_int_t)now));
  json_object_set_new(r, "updated_at", json_integer((json_int_t)now));
  json_object_set_new(r, "snoozed", json_boolean(snoozed));
  json_object_set_new(r, "escalated_to", json_null());
  json_object_set_new(r, "comments", json_array());
  int64_t dl = sev >= 0 ? lc->opts.deadline_ms[sev] : 0;
  const char *region = json_string_value(json_object_get(a, "region"));
  int top = region == NULL || strlen(region) != 6 || strcmp(region + 2, "0000") == 0;
  if (dl > 0 && !snoozed && !top) {
    unsigned char kb[8 + TW_ALERT_ID_LEN];
    deadline_key(kb, now + dl, id);
    MDB_val dk = {sizeof kb, kb}, dv = {0, ""};
    rc = mdb_put(txn, lc->deadlines, &dk, &dv, 0);
    json_object_set_new(r, "deadline_ms", json_integer((json_int_t)(now + dl)));
  }
  if (rc == 0) rc = put_record(lc, txn, id, r);
  if (rc == 0)
    rc = audit_append(
        lc, txn, "alert", "engine", id,
        json_pack("{s:O?,s:O?,s:O?,s:O?,s:b}", "rule", json_object_get(a, "rule"), "severity",
                  json_object_get(a, "severity"), "region", json_object_get(a, "region"),
                  "institution_id", json_object_get(a, "institution_id"), "snoozed", snoozed));
  json_decref(r);
out:
  json_decref(a);
  return rc;
}

/* ---- sink ----------------------------------------------------------------------------------- */

bool tw_lifecycle_snoozed(void *ud, const tw_alert_t *a) {
  lc_t *lc = ud;
  if (lc == NULL || a == NULL || a->rule == NULL || a->rule->name == NULL) return false;
  if (atomic_load(&lc->n_snz_hint) == 0) return false;
  int64_t now = wall_ms();
  bool hit = false;
  pthread_mutex_lock(&lc->snooze_lock);
  for (size_t i = 0; i < lc->n_snz && !hit; i++) {
    const snooze_t *s = &lc->snz[i];
    hit = s->until_ms > now && strcmp(s->rule, a->rule->name) == 0 &&
          a->institution_id.len == strlen(s->inst) &&
          memcmp(a->institution_id.ptr, s->inst, a->institution_id.len) == 0;
  }
  pthread_mutex_unlock(&lc->snooze_lock);
  return hit;
}

static int lc_write(tw_sink_t *sink, const tw_alert_t *a, const char *json, size_t len) {
  lc_t *lc = (lc_t *)sink;
  if (lc == NULL || json == NULL) return TW_EINVAL;
  if (lc->n_staged == lc->cap_staged) {
    size_t ncap = lc->cap_staged ? lc->cap_staged * 2 : 64;
    staged_t *s = realloc(lc->staged, ncap * sizeof *s);
    if (s == NULL) return TW_ENOMEM;
    lc->staged = s;
    lc->cap_staged = ncap;
  }
  if (lc->arena_len + len > lc->arena_cap) {
    size_t ncap = lc->arena_cap ? lc->arena_cap : 16384;
    while (ncap < lc->arena_len + len) ncap *= 2;
    char *d = realloc(lc->arena, ncap);
    if (d == NULL) return TW_ENOMEM;
    lc->arena = d;
    lc->arena_cap = ncap;
  }
  memcpy(lc->arena + lc->arena_len, json, len);
  lc->staged[lc->n_staged++] = (staged_t){lc->arena_len, len, tw_lifecycle_snoozed(lc, a)};
  lc->arena_len += len;
  return 0;
}

static int lc_flush(tw_sink_t *sink) {
  lc_t *lc = (lc_t *)sink;
  if (lc == NULL) return TW_EINVAL;
  if (lc->n_staged == 0) return 0;
  MDB_txn *txn;
  int rc = mdb_txn_begin(lc->env, NULL, 0, &txn);
  for (size_t i = 0; i < lc->n_staged && rc == 0; i++)
    rc = record_alert(lc, txn, lc->arena + lc->staged[i].off, lc->staged[i].len,
                      lc->staged[i].snoozed);
  if (rc == 0)
    rc = mdb_txn_commit(txn);
  else
    mdb_txn_abort(txn);
  size_t n = lc->n_staged;
  lc->n_staged = 0;
  lc->arena_len = 0;
  if (rc != 0) {
    fprintf(stderr, "tutorwatch: alert lifecycle: cannot record %zu alerts: %s\n", n,
            mdb_strerror(rc));
    return TW_EIO;
  }
  return 0;
}

/* ---- control -------------------------------------------------------------------------------- */

typedef struct request {
  const tw_client_t *client; /* NULL without keys */
  const char *actor;
} request_t;

static bool may_touch_region(const lc_t *lc, const request_t *rq, const char *region) {
  if (lc->opts.auth == NULL) return true;
  return region != NULL &&
         tw_auth_scope_allows(rq->client, TW_VIEW_CONTROL, region, strlen(region));
}

static json_t *err_reply(const char *fmt, const char *arg) {
  char msg[512];
  snprintf(msg, sizeof msg, fmt, arg ? arg : "");
  return json_pack("{s:b,s:s}", "ok", 0, "error", msg);
}

static const char *text_arg(json_t *req, const char *name, int *bad) {
  json_t *x = json_object_get(req, name);
  if (x == NULL || json_is_null(x)) return NULL;
  if (!json_is_string(x) || json_string_length(x) > TW_LC_TEXT_MAX) {
    *bad = 1;
    return NULL;
  }
  return json_string_value(x);
}

static json_t *cmd_list(lc_t *lc, const request_t *rq, json_t *req) {
  int bad = 0;
  const char *state = text_arg(req, "state", &bad), *prefix = text_arg(req, "prefix", &bad);
  json_t *jmax = json_object_get(req, "max");
  size_t max = json_is_integer(jmax) && json_integer_value(jmax) > 0 &&
                       json_integer_value(jmax) <= TW_LC_LIST_MAX
                   ? (size_t)json_integer_value(jmax)
                   : 100;
  if (bad) return err_reply("bad list request%s", "");
  if (prefix == NULL && rq->client != NULL && rq->client->role == TW_ROLE_REGULATOR)
    prefix = rq->client->scope;
  if (prefix == NULL) prefix = "";
  if (lc->opts.auth != NULL &&
      !tw_auth_scope_allows(rq->client, TW_VIEW_CONTROL, prefix, strlen(prefix)))
    return err_reply("prefix '%s' outside your scope", prefix);
  MDB_txn *txn;
  MDB_cursor *cur;
  if (mdb_txn_begin(lc->env, NULL, MDB_RDONLY, &txn) != 0) return err_reply("store%s", "");
  if (mdb_cursor_open(txn, lc->alerts, &cur) != 0) {
    mdb_txn_abort(txn);
    return err_reply("store%s", "");
  }
  json_t *arr = json_array();
  MDB_val k, v;
  size_t scanned = 0;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
       rc == 0 && json_array_size(arr) < max && scanned < LC_LIST_SCAN_MAX;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT), scanned++) {
    json_error_t e;
    json_t *r = json_loadb(v.mv_data, v.mv_size, 0, &e);
    const char *region = json_string_value(json_object_get(r, "region"));
    const char *st = json_string_value(json_object_get(r, "state"));
    if (r != NULL && region != NULL && strncmp(region, prefix, strlen(prefix)) == 0 &&
        (state == NULL || (st != NULL && strcmp(st, state) == 0)))
      json_array_append(arr, r);
    json_decref(r);
  }
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
  return json_pack("{s:b,s:o}", "ok", 1, "alerts", arr);
}

/* A change of one alert's record: state transition, assignee, comment. */
static json_t *cmd_change(lc_t *lc, const request_t *rq, json_t *req, const char *cmd) {
  int bad = 0;
  const char *id = text_arg(req, "alert_id", &bad);
  const char *comment = text_arg(req, "comment", &bad);
  const char *assignee = text_arg(req, "assignee", &bad);
  if (bad || id == NULL || strlen(id) != TW_ALERT_ID_LEN)
    return err_reply("%s needs an alert_id (32 hex characters)", cmd);
  MDB_txn *txn;
  if (mdb_txn_begin(lc->env, NULL, 0, &txn) != 0) return err_reply("store%s", "");
  json_t *r = get_record(lc, txn, id), *reply = NULL;
  if (r == NULL) {
    reply = err_reply("no alert %s", id);
    goto abort;
  }
  if (!may_touch_region(lc, rq, json_string_value(json_object_get(r, "region")))) {
    fprintf(stderr, "tutorwatch run: control: refused %s of alert %s (region %s) to '%s'\n", cmd,
            id, json_string_value(json_object_get(r, "region")), rq->actor);
    reply = err_reply("alert %s is outside your scope", id);
    goto abort;
  }
  char st[24]; /* a copy: the record's own string is replaced below */
  snprintf(st, sizeof st, "%s",
           json_string_value(json_object_get(r, "state"))
               ? json_string_value(json_object_get(r, "state"))
               : "?");
  const char *to = NULL;
  int open = strcmp(st, "open") == 0, acked = strcmp(st, "acknowledged") == 0,
      inprog = strcmp(st, "in_progress") == 0;
  if (strcmp(cmd, "ack") == 0) {
    if (!open) goto bad_state;
    to = "acknowledged";
  } else if (strcmp(cmd, "assign") == 0) {
    if (!(open || acked || inprog)) goto bad_state;
    if (assignee == NULL || assignee[0] == '\0') {
      reply = err_reply("assign needs an assignee%s", "");
      goto abort;
    }
    to = "in_progress";
    json_object_set_new(r, "assignee", json_string(assignee));
  } else if (strcmp(cmd, "resolve") == 0) {
    if (!(acked || inprog)) goto bad_state;
    to = "resolved";
  } else if (strcmp(cmd, "dismiss") == 0) {
    if (!(open || acked || inprog)) goto bad_state;
    if (comment == NULL || comment[0] == '\0') {
      reply = err_reply("dismiss needs a reason%s", "");
      goto abort;
    }
    to = "dismissed";
  } else if (strcmp(cmd, "comment") == 0) {
    if (comment == NULL || comment[0] == '\0') {
      reply = err_reply("comment needs a text%s", "");
      goto abort;
    }
  }
  int64_t now = wall_ms();
  if (comment != NULL && comment[0] != '\0') {
    json_t *cs = json_object_get(r, "comments");
    if (json_array_size(cs) >= TW_LC_COMMENTS_MAX) {
      reply = err_reply("alert %s has the most comments it may keep", id);
      goto abort;
    }
    json_array_append_new(
        cs, json_pack("{s:I,s:s,s:s}", "at", (json_int_t)now, "by", rq->actor, "text", comment));
  }
  if (to != NULL) {
    json_object_set_new(r, "state", json_string(to));
    deadline_del(lc, txn, r); /* someone is on it: no escalation */
  }
  json_object_set_new(r, "updated_at", json_integer((json_int_t)now));
  int rc = put_record(lc, txn, id, r);
  if (rc == 0)
    rc = audit_append(lc, txn, cmd, rq->actor, id,
                      json_pack("{s:s,s:s,s:s?,s:s?}", "from", st, "to", to ? to : st, "assignee",
                                assignee, "comment", comment));
  if (rc == 0)
    rc = mdb_txn_commit(txn);
  else
    mdb_txn_abort(txn);
  if (rc != 0) {
    json_decref(r);
    return err_reply("store: %s", mdb_strerror(rc));
  }
  reply = json_pack("{s:b,s:O}", "ok", 1, "alert", r);
  json_decref(r);
  return reply;
bad_state:
  reply = json_pack("{s:b,s:s}", "ok", 0, "error", "not allowed in this state");
  {
    char msg[256];
    snprintf(msg, sizeof msg, "%s is not allowed for an alert that is %s", cmd, st);
    json_object_set_new(reply, "error", json_string(msg));
  }
abort:
  json_decref(r);
  mdb_txn_abort(txn);
  return reply;
}

static json_t *cmd_show(lc_t *lc, const request_t *rq, json_t *req) {
  int bad = 0;
  const char *id = text_arg(req, "alert_id", &bad);
  if (bad || id == NULL) return err_reply("show needs an alert_id%s", "");
  MDB_txn *txn;
  if (mdb_txn_begin(lc->env, NULL, MDB_RDONLY, &txn) != 0) return err_reply("store%s", "");
  json_t *r = get_record(lc, txn, id);
  mdb_txn_abort(txn);
  if (r == NULL) return err_reply("no alert %s", id);
  if (!may_touch_region(lc, rq, json_string_value(json_object_get(r, "region")))) {
    json_decref(r);
    return err_reply("alert %s is outside your scope", id);
  }
  return json_pack("{s:b,s:o}", "ok", 1, "alert", r);
}

static void load_snoozes(lc_t *lc, MDB_txn *txn);

static json_t *cmd_snooze(lc_t *lc, const request_t *rq, json_t *req) {
  int bad = 0;
  const char *rule = text_arg(req, "rule", &bad), *inst = text_arg(req, "institution_id", &bad),
             *reason = text_arg(req, "reason", &bad);
  json_t *until = json_object_get(req, "until_ms");
  if (bad || rule == NULL || inst == NULL || strlen(rule) > LC_NAME_MAX || strlen(inst) != 18 ||
      reason == NULL || reason[0] == '\0' || !json_is_integer(until))
    return err_reply("snooze needs rule, institution_id (18 characters), until_ms and a reason%s",
                     "");
  char region[7];
  memcpy(region, inst + 2, 6); /* the region of registration, positions 3-8 of the code */
  region[6] = '\0';
  if (!may_touch_region(lc, rq, region))
    return err_reply("institution %s is outside your scope", inst);
  if (atomic_load(&lc->n_snz_hint) >= TW_LC_SNOOZES_MAX) return err_reply("too many snoozes%s", "");
  char key[LC_NAME_MAX + 24];
  int kl = snprintf(key, sizeof key, "%s/%s", rule, inst);
  json_t *rec = json_pack("{s:s,s:s,s:I,s:s,s:s,s:I}", "rule", rule, "institution_id", inst,
                          "until_ms", json_integer_value(until), "reason", reason, "by", rq->actor,
                          "at", (json_int_t)wall_ms());
  char *s = json_dumps(rec, JSON_COMPACT);
  MDB_txn *txn;
  int rc = mdb_txn_begin(lc->env, NULL, 0, &txn);
  if (rc == 0) {
    MDB_val k = {(size_t)kl, key}, v = {strlen(s), s};
    rc = mdb_put(txn, lc->snoozes, &k, &v, 0);
    if (rc == 0) rc = audit_append(lc, txn, "snooze", rq->actor, NULL, json_incref(rec));
    if (rc == 0) {
      load_snoozes(lc, txn);
      rc = mdb_txn_commit(txn);
    } else {
      mdb_txn_abort(txn);
    }
  }
  free(s);
  if (rc != 0) {
    json_decref(rec);
    return err_reply("store: %s", mdb_strerror(rc));
  }
  return json_pack("{s:b,s:o}", "ok", 1, "snooze", rec);
}

/* Snoozes in force, into memory (expired ones are skipped; they stay in the audit log). */
static void load_snoozes(lc_t *lc, MDB_txn *txn) {
  MDB_cursor *cur;
  MDB_val k, v;
  int64_t now = wall_ms();
  snooze_t *list = NULL;
  size_t n = 0, cap = 0;
  if (mdb_cursor_open(txn, lc->snoozes, &cur) != 0) return;
  for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < TW_LC_SNOOZES_MAX;
       rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    json_error_t e;
    json_t *r = json_loadb(v.mv_data, v.mv_size, 0, &e);
    const char *rule = json_string_value(json_object_get(r, "rule"));
    const char *inst = json_string_value(json_object_get(r, "institution_id"));
    int64_t until = (int64_t)json_integer_value(json_object_get(r, "until_ms"));
    if (rule != NULL && inst != NULL && until > now && strlen(rule) <= LC_NAME_MAX &&
        strlen(inst) < 24) {
      if (n == cap) {
        size_t ncap = cap ? cap * 2 : 16;
        snooze_t *nl = realloc(list, ncap * sizeof *nl);
        if (nl == NULL) {
          json_decref(r);
          break;
        }
        list = nl;
        cap = ncap;
      }
      snprintf(list[n].rule, sizeof list[n].rule, "%s", rule);
      snprintf(list[n].inst, sizeof list[n].inst, "%s", inst);
      list[n].until_ms = until;
      n++;
    }
    json_decref(r);
  }
  mdb_cursor_close(cur);
  pthread_mutex_lock(&lc->snooze_lock);
  free(lc->snz);
  lc->snz = list;
  lc->n_snz = n;
  atomic_store(&lc->n_snz_hint, n);
  pthread_mutex_unlock(&lc->snooze_lock);
}

static void handle_control(lc_t *lc) {
  zmq_msg_t parts[3];
  if (!tw_auth_recv_request(lc->router, parts, 0)) return;
  request_t rq = {NULL, "local"};
  const char *uid = zmq_msg_gets(&parts[2], "User-Id");
  if (lc->opts.auth != NULL && uid != NULL) {
    rq.client = tw_auth_find_name(lc->opts.auth, uid);
    if (rq.client != NULL) rq.actor = rq.client->name;
  }
  json_t *reply = NULL, *req = NULL;
  if (zmq_msg_size(&parts[2]) > TW_LC_REQUEST_MAX) {
    reply = err_reply("request larger than %s bytes", "8192");
  } else {
    json_error_t e;
    req = json_loadb(zmq_msg_data(&parts[2]), zmq_msg_size(&parts[2]), 0, &e);
    const char *cmd = json_string_value(json_object_get(req, "cmd"));
    if (cmd == NULL)
      reply = err_reply("a request is a JSON object with \"cmd\"%s", "");
    else if (lc->opts.auth != NULL && rq.client == NULL)
      reply = err_reply("unknown client%s", "");
    else if (strcmp(cmd, "list") == 0)
      reply = cmd_list(lc, &rq, req);
    else if (strcmp(cmd, "show") == 0)
      reply = cmd_show(lc, &rq, req);
    else if (strcmp(cmd, "snooze") == 0)
      reply = cmd_snooze(lc, &rq, req);
    else if (strcmp(cmd, "ack") == 0 || strcmp(cmd, "assign") == 0 || strcmp(cmd, "resolve") == 0 ||
             strcmp(cmd, "dismiss") == 0 || strcmp(cmd, "comment") == 0)
      reply = cmd_change(lc, &rq, req, cmd);
    else
      reply = err_reply("unknown command '%s'", cmd);
  }
  char *s = reply ? json_dumps(reply, JSON_COMPACT) : NULL;
  zmq_msg_send(&parts[0], lc->router, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  zmq_send(lc->router, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT);
  const char *out = s ? s : "{\"ok\":false,\"error\":\"out of memory\"}";
  zmq_send(lc->router, out, strlen(out), ZMQ_DONTWAIT);
  free(s);
  json_decref(reply);
  json_decref(req);
  for (int i = 0; i < 3; i++) zmq_msg_close(&parts[i]);
}

/* ---- escalation ----------------------------------------------------------------------------- */

static int parent_region(const char *r, char *out) {
  if (r == NULL || strlen(r) != 6) return -1;
  if (strcmp(r + 4, "00") != 0) {
    snprintf(out, 7, "%.4s00", r);
    return 0;
  }
  if (strcmp(r + 2, "0000") != 0) {
    snprintf(out, 7, "%.2s0000", r);
    return 0;
  }
  return -1;
}

static void escalate_one(lc_t *lc, const char *id) {
  MDB_txn *txn;
  if (mdb_txn_begin(lc->env, NULL, MDB_RDONLY, &txn) != 0) return;
  json_t *r = get_record(lc, txn, id);
  mdb_txn_abort(txn);
  if (r == NULL) return;
  const char *st = json_string_value(json_object_get(r, "state"));
  const char *region = json_string_value(json_object_get(r, "region"));
  const char *inst = json_string_value(json_object_get(r, "institution_id"));
  const char *rule = json_string_value(json_object_get(r, "rule"));
  int sev = severity_of(json_string_value(json_object_get(r, "severity")));
  char parent[7];
  int due = st != NULL && strcmp(st, "open") == 0 &&
            json_is_null(json_object_get(r, "escalated_to")) && inst != NULL && rule != NULL &&
            sev >= 0 && parent_region(region, parent) == 0;
  char new_id[TW_ALERT_ID_LEN + 1] = "";
  if (due) {
    tw_alert_t a;
    memset(&a, 0, sizeof a);
    a.rule = &kEscalationRules[sev];
    a.by = "institution_id";
    a.key.ptr = inst;
    a.key.len = (uint32_t)strlen(inst);
    a.institution_id = a.key;
    a.region.ptr = parent;
    a.region.len = 6;
    a.event_time_ms = (int64_t)json_integer_value(json_object_get(r, "event_time_ms"));
    a.event_id.ptr = id;
    a.event_id.len = (uint32_t)strlen(id);
    int64_t dl = lc->opts.deadline_ms[sev];
    char within[32];
    if (dl % 3600000 == 0)
      snprintf(within, sizeof within, "%lld h", (long long)(dl / 3600000));
    else if (dl % 60000 == 0)
      snprintf(within, sizeof within, "%lld min", (long long)(dl / 60000));
    else
      snprintf(within, sizeof within, "%lld s", (long long)(dl / 1000));
    snprintf(a.message, sizeof a.message,
             "alert %s (%s, region %s) not acknowledged within %s: escalated from %s to %s", id,
             rule, region, within, region, parent);
    tw_alert_make_id(&a);
    snprintf(new_id, sizeof new_id, "%s", a.alert_id);
    char json[TW_ALERT_JSON_MAX];
    int n = tw_alert_to_json(&a, json, sizeof json);
    tw_outputs_t *o = lc->opts.outputs;
    if (n > 0 && o != NULL) {
      pthread_mutex_lock(&o->lock);
      for (size_t s = 0; s < o->n_sinks; s++)
        o->sinks[s]->vt->write(o->sinks[s], &a, json, (size_t)n);
      for (size_t s = 0; s < o->n_sinks; s++) o->sinks[s]->vt->flush(o->sinks[s]);
      pthread_mutex_unlock(&o->lock);
    }
    fprintf(stderr, "tutorwatch run: alert %s (%s, %s) not acknowledged in time: escalated to %s\n",
            id, rule, region, parent);
  }
  if (mdb_txn_begin(lc->env, NULL, 0, &txn) != 0) {
    json_decref(r);
    return;
  }
  json_t *cur = get_record(lc, txn, id);
  int rc = 0;
  if (cur != NULL) {
    deadline_del(lc, txn, cur);
    if (due) {
      json_object_set_new(cur, "escalated_to", json_string(new_id));
      json_object_set_new(cur, "updated_at", json_integer((json_int_t)wall_ms()));
    }
    rc = put_record(lc, txn, id, cur);
    if (rc == 0 && due)
      rc = audit_append(lc, txn, "escalate", "engine", id,
                        json_pack("{s:s,s:s,s:s}", "from_region", region, "to_region", parent,
                                  "escalation_alert_id", new_id));
  }
  if (rc == 0)
    mdb_txn_commit(txn);
  else
    mdb_txn_abort(txn);
  json_decref(cur);
  json_decref(r);
}

static void run_escalation(lc_t *lc) {
  char ids[LC_ESCALATE_PER_TURN][TW_ALERT_ID_LEN + 1];
  size_t n = 0;
  int64_t now = wall_ms();
  MDB_txn *txn;
  MDB_cursor *cur;
  if (mdb_txn_begin(lc->env, NULL, MDB_RDONLY, &txn) != 0) return;
  if (mdb_cursor_open(txn, lc->deadlines, &cur) == 0) {
    MDB_val k, v;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0 && n < LC_ESCALATE_PER_TURN;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
      if (k.mv_size != 8 + TW_ALERT_ID_LEN) continue;
      if ((int64_t)get_be64(k.mv_data) > now) break;
      memcpy(ids[n], (const char *)k.mv_data + 8, TW_ALERT_ID_LEN);
      ids[n++][TW_ALERT_ID_LEN] = '\0';
    }
    mdb_cursor_close(cur);
  }
  mdb_txn_abort(txn);
  for (size_t i = 0; i < n; i++) escalate_one(lc, ids[i]);
}

static void *lc_main(void *arg) {
  lc_t *lc = arg;
  while (!atomic_load(&lc->stop)) {
    if (lc->router != NULL) {
      zmq_pollitem_t it = {lc->router, 0, ZMQ_POLLIN, 0};
      int rc = zmq_poll(&it, 1, LC_POLL_MS);
      if (rc < 0 && zmq_errno() != EINTR) break;
      if (rc > 0)
        for (int k = 0; k < 16; k++) {
          int ev = 0;
          size_t sz = sizeof ev;
          if (zmq_getsockopt(lc->router, ZMQ_EVENTS, &ev, &sz) != 0 || !(ev & ZMQ_POLLIN)) break;
          handle_control(lc);
        }
    } else {
      struct timespec ts = {0, LC_POLL_MS * 1000000L};
      nanosleep(&ts, NULL);
    }
    int64_t now = wall_ms();
    if (now - lc->last_escalation_ms >= 1000) {
      lc->last_escalation_ms = now;
      run_escalation(lc);
      MDB_txn *txn;
      if (atomic_load(&lc->n_snz_hint) > 0 && mdb_txn_begin(lc->env, NULL, MDB_RDONLY, &txn) == 0) {
        load_snoozes(lc, txn); /* drops the expired */
        mdb_txn_abort(txn);
      }
    }
  }
  return NULL;
}

/* ---- open / close --------------------------------------------------------------------------- */

void tw_lifecycle_stop(tw_sink_t *sink) {
  if (sink == NULL || sink->vt != &tw__sink_lifecycle_vt) return;
  lc_t *lc = (lc_t *)sink;
  if (lc->started) {
    atomic_store(&lc->stop, 1);
    pthread_join(lc->thread, NULL);
    lc->started = 0;
  }
}

static void lc_close(tw_sink_t *sink) {
  lc_t *lc = (lc_t *)sink;
  if (lc == NULL) return;
  tw_lifecycle_stop(sink);
  if (lc->n_staged > 0 && lc->env != NULL) lc_flush(sink);
  if (lc->router != NULL) {
    int linger = 0;
    zmq_setsockopt(lc->router, ZMQ_LINGER, &linger, sizeof linger);
    zmq_close(lc->router);
  }
  if (lc->ctx != NULL) zmq_ctx_term(lc->ctx);
  tw_auth_zap_join(lc->zap);
  if (lc->env != NULL) mdb_env_close(lc->env);
  pthread_mutex_destroy(&lc->snooze_lock);
  free(lc->snz);
  free(lc->staged);
  free(lc->arena);
  free(lc);
}

static int open_env(const char *state_dir, bool no_sync, unsigned flags, MDB_env **env,
                    MDB_dbi dbi[4], char *err, size_t cap) {
  char dir[4200];
  snprintf(dir, sizeof dir, "%s/lifecycle", state_dir);
  if (!(flags & MDB_RDONLY) && mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(err, cap, "cannot create '%s': %s", dir, strerror(errno));
    return TW_ESTATE;
  }
  struct stat sb;
  if (stat(dir, &sb) != 0) return TW_ENOENT;
  static const char *const names[4] = {"alerts", "deadlines", "snoozes", "audit"};
  MDB_txn *txn = NULL;
  int rc = mdb_env_create(env);
  if (rc == 0) rc = mdb_env_set_maxdbs(*env, 8);
  if (rc == 0) rc = mdb_env_set_mapsize(*env, (size_t)LC_MAP_BYTES);
  if (rc == 0) rc = mdb_env_open(*env, dir, MDB_NOTLS | flags | (no_sync ? MDB_NOSYNC : 0), 0600);
  if (rc == 0) rc = mdb_txn_begin(*env, NULL, flags & MDB_RDONLY, &txn);
  for (int i = 0; i < 4 && rc == 0; i++)
    rc = mdb_dbi_open(txn, names[i], (flags & MDB_RDONLY) ? 0 : MDB_CREATE, &dbi[i]);
  if (rc == 0 && !(flags & MDB_RDONLY)) {
    rc = mdb_txn_commit(txn);
    txn = NULL;
  }
  if (txn != NULL) {
    if (rc == 0 && (flags & MDB_RDONLY)) {
      mdb_txn_commit(txn); /* keeps the handles open for later read transactions */
    } else {
      mdb_txn_abort(txn);
    }
  }
  if (rc != 0) {
    snprintf(err, cap, "cannot open the lifecycle store '%s': %s", dir, mdb_strerror(rc));
    if (*env != NULL) mdb_env_close(*env);
    *env = NULL;
    return rc == MDB_NOTFOUND ? TW_ENOENT : TW_ESTATE;
  }
  return 0;
}

int tw_lifecycle_open(const tw_lifecycle_opts_t *opts, tw_sink_t **out, char *err, size_t cap) {
  if (opts == NULL || opts->state_dir == NULL || out == NULL) {
    snprintf(err, cap, "the alert lifecycle needs a state directory");
    return TW_EINVAL;
  }
  lc_t *lc = calloc(1, sizeof *lc);
  if (lc == NULL) {
    snprintf(err, cap, "out of memory");
    return TW_ENOMEM;
  }
  lc->base.vt = &tw__sink_lifecycle_vt;
  lc->opts = *opts;
  pthread_mutex_init(&lc->snooze_lock, NULL);
  MDB_dbi dbi[4];
  int rc = open_env(opts->state_dir, opts->no_sync, 0, &lc->env, dbi, err, cap);
  if (rc != 0) goto fail;
  lc->alerts = dbi[0], lc->deadlines = dbi[1], lc->snoozes = dbi[2], lc->audit = dbi[3];
  MDB_txn *txn;
  if (mdb_txn_begin(lc->env, NULL, MDB_RDONLY, &txn) == 0) {
    load_snoozes(lc, txn);
    mdb_txn_abort(txn);
  }
  if (opts->control_endpoint != NULL) {
    rc = TW_EZMQ;
    lc->ctx = zmq_ctx_new();
    if (lc->ctx == NULL) goto zfail;
    if (opts->auth != NULL &&
        tw_auth_zap_start(opts->auth, lc->ctx, "tutorwatch run", &lc->zap) != 0)
      goto zfail;
    lc->router = zmq_socket(lc->ctx, ZMQ_ROUTER);
    int64_t max_msg = TW_LC_REQUEST_MAX;
    if (lc->router == NULL ||
        zmq_setsockopt(lc->router, ZMQ_MAXMSGSIZE, &max_msg, sizeof max_msg) != 0 ||
        (opts->auth != NULL &&
         tw_auth_server_socket(opts->auth, lc->router, TW_VIEW_CONTROL) != 0) ||
        zmq_bind(lc->router, opts->control_endpoint) != 0)
      goto zfail;
  }
  if (pthread_create(&lc->thread, NULL, lc_main, lc) != 0) {
    snprintf(err, cap, "cannot start the lifecycle thread");
    rc = TW_ENOMEM;
    goto fail;
  }
  lc->started = 1;
  *out = &lc->base;
  return 0;
zfail:
  snprintf(err, cap, "cannot open control endpoint '%s': %s", opts->control_endpoint,
           zmq_strerror(zmq_errno()));
fail:
  lc_close(&lc->base);
  return rc;
}

int tw_lifecycle_verify(const char *state_dir, uint64_t *records, uint64_t *first_bad, char *msg,
                        size_t cap) {
  MDB_env *env = NULL;
  MDB_dbi dbi[4];
  char err[512];
  *records = 0;
  *first_bad = 0;
  int rc = open_env(state_dir, true, MDB_RDONLY, &env, dbi, err, sizeof err);
  if (rc != 0) {
    snprintf(msg, cap, "%s", rc == TW_ENOENT ? "no alert lifecycle in this state directory" : err);
    return rc;
  }
  MDB_txn *txn;
  MDB_cursor *cur;
  rc = TW_ESTATE;
  if (mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) != 0) goto out;
  if (mdb_cursor_open(txn, dbi[3], &cur) != 0) {
    mdb_txn_abort(txn);
    goto out;
  }
  char prev[LC_HASH_HEX + 1];
  memset(prev, '0', LC_HASH_HEX);
  prev[LC_HASH_HEX] = '\0';
  MDB_val k, v;
  uint64_t expect = 1;
  rc = 0;
  for (int g = mdb_cursor_get(cur, &k, &v, MDB_FIRST); g == 0;
       g = mdb_cursor_get(cur, &k, &v, MDB_NEXT), expect++) {
    uint64_t seq = k.mv_size == 8 ? get_be64(k.mv_data) : 0;
    const char *rec = v.mv_data;
    const char *at = hash_split(rec, v.mv_size);
    char hex[LC_HASH_HEX + 1];
    json_error_t e;
    json_t *o = NULL;
    if (seq != expect) {
      snprintf(msg, cap, "sequence %llu where %llu was expected (a record was removed or inserted)",
               (unsigned long long)seq, (unsigned long long)expect);
    } else if (at == NULL) {
      snprintf(msg, cap, "no hash at its end (truncated or rewritten)");
    } else {
      hash_hex(rec, (size_t)(at - rec), hex);
      if (memcmp(hex, at + 9, LC_HASH_HEX) != 0) {
        snprintf(msg, cap, "its content does not match its hash (changed after it was written)");
      } else {
        o = json_loadb(rec, v.mv_size, 0, &e);
        const char *p = json_string_value(json_object_get(o, "prev"));
        if (o == NULL || p == NULL || strcmp(p, prev) != 0 ||
            (uint64_t)json_integer_value(json_object_get(o, "seq")) != seq) {
          snprintf(msg, cap,
                   "it does not link to the hash of record %llu (a record before it was "
                   "changed, removed or reordered)",
                   (unsigned long long)seq - 1);
        } else {
          memcpy(prev, at + 9, LC_HASH_HEX);
          json_decref(o);
          (*records)++;
          continue;
        }
      }
    }
    json_decref(o);
    *first_bad = seq ? seq : expect;
    rc = TW_ESTATE;
    break;
  }
  if (rc == 0) snprintf(msg, cap, "%llu audit records, chain intact", (unsigned long long)*records);
  mdb_cursor_close(cur);
  mdb_txn_abort(txn);
out:
  mdb_env_close(env);
  return rc;
}

static int lc_open_vt(const char *target, tw_sink_t **out) {
  (void)target, (void)out;
  return TW_EINVAL; /* needs tw_lifecycle_opts_t: use tw_lifecycle_open */
}

const tw_sink_vt_t tw__sink_lifecycle_vt = {
    .name = "lifecycle",
    .open = lc_open_vt,
    .write = lc_write,
    .flush = lc_flush,
    .close = lc_close,
};
