/*
 * cmd_replay.c: `tutorwatch replay`: run rules over recorded events, for investigations
 * (docs/replay.md).
 *
 * Events come from an event record (`run --record DIR`, read through its time and institution
 * index, merged in event-time order) or from event files. They go through the ordinary pipeline,
 * on a fresh private state in a temporary directory (never a live state), with the wall clock
 * out of the picture (replay mode), so the same inputs give the same bytes on every machine.
 * Events before --from warm the state (within the longest window, cooldown or sweep interval)
 * and their alerts are not written. With --institution / --region only those events are read,
 * and rules whose key the selection does not cover whole are left out (and named).
 *
 * --diff OLD runs a second pipeline with the old rules over the same events in the same pass and
 * compares the two sets of alerts per rule; --explain / --explain-all / --evidence attach an
 * explainer (replay_explain.c) to the pipeline. On a terminal, a progress line on stderr shows
 * events, rate, ETA and alerts; it reads the wall clock for that alone.
 *
 * Bounds: memory is the pipeline's, plus one record buffer per record stream, plus, with --diff,
 * the alerts of both runs (kept to compare them), plus the explainer's (replay_explain.h).
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <ftw.h>
#include <getopt.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "replay_explain.h"
#include "tw_cli.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_pipeline.h"
#include "tw_record.h"
#include "tw_rules.h"
#include "tw_schema.h"
#include "tw_sink.h"
#include "tw_source.h"

#define REPLAY_MAX_SET 64
#define REPLAY_MAX_INST 1024
#define REPLAY_MAX_INPUTS 256
#define REPLAY_MAX_EXPLAIN 1024
#define REPLAY_POLL_BATCH 4096
#define REPLAY_PROGRESS_EVERY 4096 /* events between looks at the clock for the progress line */
#define REPLAY_TZ_MS (8LL * 3600 * 1000) /* dates are local days, Asia/Shanghai */

static void usage(FILE *out) {
  fprintf(
      out,
      "usage: tutorwatch replay --rules FILE (--record DIR | --input FILE...) [options]\n"
      "\n"
      "Run rules over recorded events on a fresh, private state (never a live one), in event-time\n"
      "order, and write the alerts. Same inputs, the same bytes: the wall clock is never read.\n"
      "\n"
      "events:\n"
      "  --record DIR          an event record made by `run --record DIR`\n"
      "  --input FILE          event files (JSON Lines or msgpack; repeatable, read in order);\n"
      "                        student ids are pseudonymised with a fresh key unless\n"
      "                        --pseudonym-dir names the state directory whose key to use\n"
      "  --from T              write the alerts from T on; the events before T (within the\n"
      "                        longest window, cooldown or sweep interval; all of them when a\n"
      "                        rule has an `all` window) warm the state without alerts\n"
      "  --to T                stop before T (events and alerts at T or later are left out)\n"
      "                        T: 2025-03-01 (local midnight, +08:00), RFC 3339, or epoch ms\n"
      "  --institution CODE    only this institution's events (repeatable); rules keyed by a\n"
      "                        wider key (city, province) are left out, and named\n"
      "  --region PREFIX       only events whose region starts with PREFIX (2, 4 or 6 digits);\n"
      "                        city rules need a prefix of at most 4 digits, province rules 2\n"
      "\n"
      "output:\n"
      "  --alerts FILE|-       write alerts (or explanations, or the diff) to FILE (default -)\n"
      "  --diff OLD_RULES      also run OLD_RULES over the same events in the same pass and\n"
      "                        report alerts only in the new, only in the old, and changed\n"
      "                        (severity, time), per rule, with counts\n"
      "  --explain ALERT_ID    write, instead of alerts, the explanation of this alert\n"
      "                        (repeatable): the condition with every sub-expression's value,\n"
      "                        each aggregate's window and value, the contributing events\n"
      "  --explain-all         explain every alert written\n"
      "  --evidence FILE       with --explain or --explain-all: also write a self-contained\n"
      "                        JSON evidence pack with the SHA-256 of each part\n"
      "  --progress / --no-progress   force the progress line on stderr on or off (default: on\n"
      "                        when stderr is a terminal)\n"
      "\n"
      "rules:\n"
      "  --rules FILE          the YAML rule file\n"
      "  --set NAME=VALUE      override a param of the rule file (repeatable; not of OLD_RULES)\n"
      "  --schema FILE         the event schema (default: beside the rule file, else shipped)\n"
      "  --allowed-lateness D  as `run` (default 1h); give the live engine's value\n"
      "  -h, --help            show this help\n"
      "\n"
      "A summary goes to stderr. Exit status: 0 done, 1 bad rules or inputs (or an asked alert\n"
      "that did not fire), 2 usage error, 70 internal failure.\n");
}

/* ---- arguments ---------------------------------------------------------------------------- */

/* A time: YYYY-MM-DD (local midnight, +08:00), RFC 3339 with offset, or integer epoch ms. */
static int parse_time(const char *s, int64_t *out) {
  size_t len = strlen(s);
  unsigned y, m, d;
  char tail;
  if (len == 10 && sscanf(s, "%4u-%2u-%2u%c", &y, &m, &d, &tail) == 3 && m >= 1 && m <= 12 &&
      d >= 1 && d <= 31) {
    *out = tw_days_from_civil(y, m, d) * 86400000LL - REPLAY_TZ_MS;
    return 0;
  }
  if (tw_parse_rfc3339(s, len, out) == 0) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (end != s && *end == '\0' && errno == 0) {
    *out = v;
    return 0;
  }
  return -1;
}

static int valid_prefix(const char *p) {
  size_t n = strlen(p);
  if (n < 1 || n > 6) return 0;
  for (size_t i = 0; i < n; i++)
    if (p[i] < '0' || p[i] > '9') return 0;
  return 1;
}

/* ---- the replay ----------------------------------------------------------------------------- */

/* An alert of a --diff run, kept to compare. */
typedef struct kept_alert {
  char *rule, *key, *json;
  char alert_id[TW_ALERT_ID_LEN + 1];
  int64_t event_time_ms;
  int severity;
} kept_alert_t;

typedef struct alert_list {
  kept_alert_t *a;
  size_t n, cap;
} alert_list_t;

typedef struct replay replay_t;

typedef struct replay_sink {
  tw_sink_t base;
  replay_t *r;
  alert_list_t *keep; /* --diff: keep them here; else write them to r->out */
} replay_sink_t;

struct replay {
  /* selection */
  int64_t from_ms, to_ms; /* alerts in [from, to); INT64_MIN / INT64_MAX: open */
  const char *insts[REPLAY_MAX_INST];
  size_t n_insts;
  const char *region;
  bool filtered;
  /* outputs */
  FILE *out;
  bool write_alerts; /* false when explaining: the explanations are the output */
  uint64_t written, out_errors;
  alert_list_t diff_new, diff_old;
  /* progress */
  bool progress;
  double t0, last_draw;
  uint64_t events, alerts_seen;
  int64_t span_from, span_to; /* event-time range being read, for the ETA */
  int64_t last_ts;
  bool by_bytes; /* --input: the fraction is the bytes read of all the files */
  uint64_t bytes_total, bytes_before, bytes_at;
  /* pipelines */
  tw_pipeline_t *p, *p_old;
  int64_t max_ts; /* newest event time read (input files) */
  tw_schema_t *schema;
  tw_event_t scratch; /* input files: decoded once to apply the selection */
  uint64_t not_selected;
};

/* SIGINT / SIGTERM: stop reading, remove the private state, exit 130. */
static volatile sig_atomic_t g_stop;
static void on_stop_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static bool has_prefix(tw_str_t s, const char *prefix) {
  size_t n = strlen(prefix);
  return s.len >= n && memcmp(s.ptr, prefix, n) == 0;
}

/* rule_covered: does the selection hold every event of each key of this rule? */
static bool rule_covered(const replay_t *r, const tw_rule_t *rule) {
  if (!r->filtered) return true;
  if (rule->by_derive == TW_KEY_FIELD) return rule->by_slot == TW_SLOT_INSTITUTION_ID;
  size_t need = rule->by_derive == TW_KEY_CITY ? 4 : 2;
  return r->region != NULL && strlen(r->region) <= need;
}

/* keep_alert: is this alert part of the replay's output? */
static bool keep_alert(void *ud, const tw_alert_t *a) {
  const replay_t *r = ud;
  if (a->event_time_ms < r->from_ms || a->event_time_ms >= r->to_ms) return false;
  if (!r->filtered) return true;
  if (!rule_covered(r, a->rule)) return false;
  if (a->rule->by_derive != TW_KEY_FIELD) return has_prefix(a->key, r->region);
  for (size_t i = 0; i < r->n_insts; i++)
    if (a->institution_id.len == strlen(r->insts[i]) &&
        memcmp(a->institution_id.ptr, r->insts[i], a->institution_id.len) == 0)
      return true;
  return r->region != NULL && has_prefix(a->region, r->region);
}

static char *dupn(const char *s, size_t n) {
  char *d = malloc(n + 1);
  if (d != NULL) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

static int keep_push(alert_list_t *l, const tw_alert_t *a, const char *json, size_t len) {
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 256;
    kept_alert_t *na = realloc(l->a, cap * sizeof *na);
    if (na == NULL) return TW_ENOMEM;
    l->a = na;
    l->cap = cap;
  }
  kept_alert_t *k = &l->a[l->n];
  memset(k, 0, sizeof *k);
  k->rule = dupn(a->rule->name, strlen(a->rule->name));
  k->key = dupn(a->key.ptr, a->key.len);
  k->json = dupn(json, len);
  if (k->rule == NULL || k->key == NULL || k->json == NULL) {
    free(k->rule), free(k->key), free(k->json);
    return TW_ENOMEM;
  }
  memcpy(k->alert_id, a->alert_id, sizeof k->alert_id);
  k->event_time_ms = a->event_time_ms;
  k->severity = (int)a->rule->severity;
  l->n++;
  return 0;
}

static void keep_free(alert_list_t *l) {
  for (size_t i = 0; i < l->n; i++) {
    free(l->a[i].rule);
    free(l->a[i].key);
    free(l->a[i].json);
  }
  free(l->a);
  memset(l, 0, sizeof *l);
}

static int rsink_write(tw_sink_t *s, const tw_alert_t *a, const char *json, size_t len) {
  replay_sink_t *rs = (replay_sink_t *)s;
  replay_t *r = rs->r;
  if (g_stop || !keep_alert(r, a)) return 0;
  if (rs->keep != NULL) return keep_push(rs->keep, a, json, len);
  r->alerts_seen++;
  if (!r->write_alerts) return 0;
  if (fwrite(json, 1, len, r->out) != len || fputc('\n', r->out) == EOF) return TW_EIO;
  r->written++;
  return 0;
}

static int rsink_flush(tw_sink_t *s) {
  replay_sink_t *rs = (replay_sink_t *)s;
  return fflush(rs->r->out) == 0 ? 0 : TW_EIO;
}

static void rsink_close(tw_sink_t *s) {
  free(s);
}

static const tw_sink_vt_t kReplaySink = {
    .name = "replay", .write = rsink_write, .flush = rsink_flush, .close = rsink_close};

static int add_sink(replay_t *r, tw_pipeline_t *p, alert_list_t *keep) {
  replay_sink_t *s = calloc(1, sizeof *s);
  if (s == NULL) return TW_ENOMEM;
  s->base.vt = &kReplaySink;
  s->r = r;
  s->keep = keep;
  int rc = tw_pipeline_add_sink(p, &s->base);
  if (rc != 0) free(s);
  return rc;
}

/* ---- progress ------------------------------------------------------------------------------ */

static void draw_progress(replay_t *r, bool final) {
  double now = now_s();
  if (!final && now - r->last_draw < 0.1) return;
  r->last_draw = now;
  double secs = now - r->t0, rate = secs > 0 ? (double)r->events / secs : 0;
  double frac = 0;
  if (r->by_bytes)
    frac = r->bytes_total > 0 ? (double)r->bytes_at / (double)r->bytes_total : 0;
  else if (r->span_to > r->span_from && r->last_ts > r->span_from)
    frac = (double)(r->last_ts - r->span_from) / (double)(r->span_to - r->span_from);
  if (final || frac > 1) frac = 1;
  char eta[32] = "--";
  if (frac > 0.001 && !final) snprintf(eta, sizeof eta, "%.0fs", secs / frac * (1 - frac));
  if (final) snprintf(eta, sizeof eta, "0s");
  char bar[31];
  int fill = (int)(frac * 30);
  for (int i = 0; i < 30; i++) bar[i] = i < fill ? '#' : '.';
  bar[30] = '\0';
  uint64_t alerts = r->alerts_seen + r->diff_new.n;
  fprintf(stderr, "\r[%s] %3.0f%% %llu events, %.0f events/s, ETA %s, %llu alerts%s", bar,
          frac * 100, (unsigned long long)r->events, rate, eta, (unsigned long long)alerts,
          final ? "\n" : "  ");
  fflush(stderr);
}

/* ---- feeding -------------------------------------------------------------------------------- */

static int feed(replay_t *r, const tw_record_t *rec, int64_t ts) {
  if (g_stop) return TW_EAGAIN; /* interrupted: stops the scan or the poll */
  r->events++;
  r->last_ts = ts;
  int rc = tw_pipeline_record(r->p, rec);
  if (rc == 0 && r->p_old != NULL) rc = tw_pipeline_record(r->p_old, rec);
  if (r->progress && r->events % REPLAY_PROGRESS_EVERY == 0) draw_progress(r, false);
  return rc;
}

static int from_record_cb(void *ud, const tw_record_entry_t *e) {
  replay_t *r = ud;
  tw_record_t rec;
  memset(&rec, 0, sizeof rec);
  rec.data = (const char *)e->payload;
  rec.len_bytes = e->payload_len;
  rec.full_len_bytes = e->payload_len;
  rec.format = TW_FORMAT_MSGPACK;
  rec.origin = "record";
  rec.offset_bytes = e->offset;
  rec.line = r->events + 1;
  return feed(r, &rec, e->ts_ms);
}

/* from_file_cb: a raw record of an input file: decoded once for the selection, then given to the
 * pipeline(s), which decode it again (and dead-letter it when it is bad). */
static int from_file_cb(void *ud, const tw_record_t *rec) {
  replay_t *r = ud;
  tw_decode_error_t derr;
  int drc = -1;
  r->bytes_at = r->bytes_before + rec->offset_bytes + rec->full_len_bytes;
  if (!(rec->flags & (TW_REC_TRUNCATED | TW_REC_BROKEN)))
    drc = rec->format == TW_FORMAT_MSGPACK
              ? tw_decode_msgpack(r->schema, rec->data, rec->len_bytes, &r->scratch, &derr)
              : tw_decode_json(r->schema, rec->data, rec->len_bytes, &r->scratch, &derr);
  if (drc == 0) {
    int64_t ts = r->scratch.ts_ms;
    if (ts > r->max_ts) r->max_ts = ts;
    tw_record_entry_t e;
    memset(&e, 0, sizeof e);
    tw_value_t inst = tw_event_get(&r->scratch, TW_SLOT_INSTITUTION_ID);
    tw_value_t reg = tw_event_get(&r->scratch, TW_SLOT_REGION);
    bool sel = ts >= r->span_from && ts < r->to_ms;
    if (sel && r->filtered) {
      sel = false;
      for (size_t i = 0; i < r->n_insts && !sel; i++)
        sel = inst.kind == TW_V_STR && inst.u.s.len == strlen(r->insts[i]) &&
              memcmp(inst.u.s.ptr, r->insts[i], inst.u.s.len) == 0;
      if (!sel && r->region != NULL) sel = reg.kind == TW_V_STR && has_prefix(reg.u.s, r->region);
    }
    if (!sel) {
      r->not_selected++;
      return 0;
    }
    return feed(r, rec, ts);
  }
  /* undecodable: only an unfiltered replay sees it (and dead-letters it, as `run` would) */
  if (r->filtered || r->from_ms != INT64_MIN) return 0;
  return feed(r, rec, r->last_ts);
}

/* ---- diff ----------------------------------------------------------------------------------- */

static int cmp_kept(const void *x, const void *y) {
  const kept_alert_t *a = x, *b = y;
  int c = strcmp(a->rule, b->rule);
  if (c == 0) c = strcmp(a->key, b->key);
  if (c == 0 && a->event_time_ms != b->event_time_ms)
    c = a->event_time_ms < b->event_time_ms ? -1 : 1;
  if (c == 0) c = strcmp(a->alert_id, b->alert_id);
  return c;
}

typedef struct rule_count {
  const char *rule;
  uint64_t old_n, new_n, same, only_old, only_new, changed;
} rule_count_t;

static json_t *alert_json(const kept_alert_t *k) {
  json_t *o = json_loads(k->json, 0, NULL);
  return o != NULL ? o : json_string(k->json);
}

static void put_line(FILE *out, json_t *o) {
  char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
  if (s != NULL) {
    fputs(s, out);
    fputc('\n', out);
    free(s);
  }
  json_decref(o);
}

static void diff_entry(FILE *out, const char *what, const kept_alert_t *k) {
  json_t *o = json_object();
  json_object_set_new(o, "diff", json_string(what));
  json_object_set_new(o, "rule", json_string(k->rule));
  json_object_set_new(o, "key", json_string(k->key));
  json_object_set_new(o, "alert", alert_json(k));
  put_line(out, o);
}

static void diff_changed(FILE *out, const kept_alert_t *o_, const kept_alert_t *n_) {
  json_t *o = json_object(), *what = json_array();
  if (o_->severity != n_->severity) json_array_append_new(what, json_string("severity"));
  if (o_->event_time_ms != n_->event_time_ms) json_array_append_new(what, json_string("time"));
  json_object_set_new(o, "diff", json_string("changed"));
  json_object_set_new(o, "rule", json_string(n_->rule));
  json_object_set_new(o, "key", json_string(n_->key));
  json_object_set_new(o, "changed", what);
  json_object_set_new(o, "old", alert_json(o_));
  json_object_set_new(o, "new", alert_json(n_));
  put_line(out, o);
}

static rule_count_t *count_for(rule_count_t *rc, size_t *n, const char *rule) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp(rc[i].rule, rule) == 0) return &rc[i];
  memset(&rc[*n], 0, sizeof rc[*n]);
  rc[*n].rule = rule;
  return &rc[(*n)++];
}

/*
 * write_diff: per (rule, key), in event-time order: an alert with the same id in both runs (same
 * rule, key, triggering event and time) is the same, or changed when its severity differs; the
 * rest are paired in order (the same alert raised at another time: changed, "time"), and what
 * is left is only in the old or only in the new run. Then one summary line per rule.
 */
static int write_diff(replay_t *r, size_t n_rules_max, uint64_t totals[4]) {
  alert_list_t *O = &r->diff_old, *N = &r->diff_new;
  qsort(O->a, O->n, sizeof *O->a, cmp_kept);
  qsort(N->a, N->n, sizeof *N->a, cmp_kept);
  rule_count_t *counts = calloc(n_rules_max + 1, sizeof *counts);
  uint8_t *o_used = calloc(O->n + 1, 1), *n_used = calloc(N->n + 1, 1);
  if (counts == NULL || o_used == NULL || n_used == NULL) {
    free(counts), free(o_used), free(n_used);
    return TW_ENOMEM;
  }
  size_t nc = 0, i = 0, j = 0;
  while (i < O->n || j < N->n) {
    /* the next group: the smaller (rule, key) of the two heads */
    const kept_alert_t *g = NULL;
    if (i < O->n) g = &O->a[i];
    if (j < N->n && (g == NULL || strcmp(N->a[j].rule, g->rule) < 0 ||
                     (strcmp(N->a[j].rule, g->rule) == 0 && strcmp(N->a[j].key, g->key) < 0)))
      g = &N->a[j];
    const char *rule = g->rule, *key = g->key;
    size_t oi = i, nj = j;
    while (oi < O->n && strcmp(O->a[oi].rule, rule) == 0 && strcmp(O->a[oi].key, key) == 0) oi++;
    while (nj < N->n && strcmp(N->a[nj].rule, rule) == 0 && strcmp(N->a[nj].key, key) == 0) nj++;
    rule_count_t *c = count_for(counts, &nc, rule);
    c->old_n += oi - i;
    c->new_n += nj - j;
    for (size_t a = i; a < oi; a++) /* same trigger */
      for (size_t b = j; b < nj; b++)
        if (!n_used[b] && strcmp(O->a[a].alert_id, N->a[b].alert_id) == 0) {
          o_used[a] = n_used[b] = 1;
          if (O->a[a].severity == N->a[b].severity) {
            c->same++;
          } else {
            c->changed++;
            diff_changed(r->out, &O->a[a], &N->a[b]);
          }
          break;
        }
    size_t a = i, b = j;
    for (;;) { /* pair what is left in order */
      while (a < oi && o_used[a]) a++;
      while (b < nj && n_used[b]) b++;
      if (a >= oi || b >= nj) break;
      o_used[a] = n_used[b] = 1;
      c->changed++;
      diff_changed(r->out, &O->a[a], &N->a[b]);
    }
    for (a = i; a < oi; a++)
      if (!o_used[a]) {
        c->only_old++;
        diff_entry(r->out, "only_old", &O->a[a]);
      }
    for (b = j; b < nj; b++)
      if (!n_used[b]) {
        c->only_new++;
        diff_entry(r->out, "only_new", &N->a[b]);
      }
    i = oi;
    j = nj;
    if (nc == n_rules_max) break; /* cannot happen: rules are named in one of the two files */
  }
  memset(totals, 0, 4 * sizeof *totals);
  for (size_t k = 0; k < nc; k++) {
    rule_count_t *c = &counts[k];
    json_t *o = json_object();
    json_object_set_new(o, "summary", json_string(c->rule));
    json_object_set_new(o, "old", json_integer((json_int_t)c->old_n));
    json_object_set_new(o, "new", json_integer((json_int_t)c->new_n));
    json_object_set_new(o, "same", json_integer((json_int_t)c->same));
    json_object_set_new(o, "only_old", json_integer((json_int_t)c->only_old));
    json_object_set_new(o, "only_new", json_integer((json_int_t)c->only_new));
    json_object_set_new(o, "changed", json_integer((json_int_t)c->changed));
    put_line(r->out, o);
    fprintf(stderr,
            "tutorwatch replay: diff %-36s old %6llu new %6llu: same %llu, only old %llu, "
            "only new %llu, changed %llu\n",
            c->rule, (unsigned long long)c->old_n, (unsigned long long)c->new_n,
            (unsigned long long)c->same, (unsigned long long)c->only_old,
            (unsigned long long)c->only_new, (unsigned long long)c->changed);
    totals[0] += c->same;
    totals[1] += c->only_old;
    totals[2] += c->only_new;
    totals[3] += c->changed;
  }
  free(counts), free(o_used), free(n_used);
  return 0;
}

/* ---- the command ---------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* The warm-up the rules need before --from: their longest window, cooldown and sweep interval,
 * plus the allowed lateness; INT64_MAX when an aggregate has an `all` window (everything). */
static int64_t warm_up_ms(const tw_ruleset_t *rs, int64_t lateness_ms) {
  int64_t w = 0;
  for (size_t i = 0; i < tw_rules_n_aggregates(rs); i++) {
    int64_t x = tw_rules_aggregate(rs, i)->spec.window_ms;
    if (x == 0) return INT64_MAX;
    if (x > w) w = x;
  }
  for (size_t i = 0; i < tw_rules_n_rules(rs); i++) {
    const tw_rule_t *r = tw_rules_rule(rs, i);
    if (r->cooldown_ms > w) w = r->cooldown_ms;
    if (r->every_ms > w) w = r->every_ms;
  }
  return w + lateness_ms;
}

typedef struct tmpdir {
  char dir[4096];
  bool made;
} tmpdir_t;

static int make_tmp(tmpdir_t *t) {
  const char *base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0' || strlen(base) > sizeof t->dir - 32) base = "/tmp";
  snprintf(t->dir, sizeof t->dir, "%s/tw-replay-XXXXXX", base);
  if (mkdtemp(t->dir) == NULL) return TW_EIO;
  t->made = true;
  return 0;
}

static void drop_tmp(tmpdir_t *t) {
  if (t->made) nftw(t->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  t->made = false;
}

static int open_pipeline(const tw_pipeline_opts_t *base, const char *rules_path,
                         const char *const *set, size_t n_set, tmpdir_t *t,
                         const tw_pipeline_observer_t *obs, tw_pipeline_t **out) {
  char err[4096], dl[4200];
  if (make_tmp(t) != 0) {
    fprintf(stderr, "tutorwatch replay: cannot create a temporary state directory: %s\n",
            strerror(errno));
    return TW_EIO;
  }
  snprintf(dl, sizeof dl, "%s/dead-letter.jsonl", t->dir);
  tw_pipeline_opts_t po = *base;
  po.rules_path = rules_path;
  po.params_set = set;
  po.n_params_set = n_set;
  po.state_dir = t->dir;
  po.dead_letter_path = dl;
  po.observer = obs;
  if (po.pseudonym_dir == NULL) po.pseudonym_dir = t->dir;
  int rc = tw_pipeline_open(&po, out, err, sizeof err);
  if (rc != 0) fprintf(stderr, "tutorwatch replay: %s\n", err);
  return rc;
}

static int finish_pipeline(tw_pipeline_t *p, int64_t sweep_limit) {
  int rc = tw_pipeline_flush(p);
  if (rc == 0 && sweep_limit != INT64_MIN) rc = tw_pipeline_sweep_until(p, sweep_limit);
  if (rc == 0) rc = tw_pipeline_commit(p);
  return rc;
}

int tw_cmd_replay(int argc, char **argv) {
  static const struct option longopts[] = {{"rules", required_argument, NULL, 'r'},
                                           {"record", required_argument, NULL, 'R'},
                                           {"input", required_argument, NULL, 'i'},
                                           {"from", required_argument, NULL, 'f'},
                                           {"to", required_argument, NULL, 't'},
                                           {"institution", required_argument, NULL, 'I'},
                                           {"region", required_argument, NULL, 'g'},
                                           {"alerts", required_argument, NULL, 'a'},
                                           {"set", required_argument, NULL, 'P'},
                                           {"schema", required_argument, NULL, 'S'},
                                           {"diff", required_argument, NULL, 'd'},
                                           {"explain", required_argument, NULL, 'x'},
                                           {"explain-all", no_argument, NULL, 'X'},
                                           {"evidence", required_argument, NULL, 'e'},
                                           {"progress", no_argument, NULL, 'p'},
                                           {"no-progress", no_argument, NULL, 'q'},
                                           {"allowed-lateness", required_argument, NULL, 'L'},
                                           {"pseudonym-dir", required_argument, NULL, 'k'},
                                           {"help", no_argument, NULL, 'h'},
                                           {NULL, 0, NULL, 0}};
  static replay_t r; /* large (lists of ids); one replay per process */
  static const char *params[REPLAY_MAX_SET], *inputs[REPLAY_MAX_INPUTS],
      *explain_ids[REPLAY_MAX_EXPLAIN];
  memset(&r, 0, sizeof r);
  size_t n_params = 0, n_inputs = 0, n_explain = 0;
  const char *rules_path = NULL, *record = NULL, *alerts = "-", *schema_path = NULL,
             *diff_old = NULL, *evidence = NULL, *pseudo_dir = NULL, *from_arg = NULL,
             *to_arg = NULL;
  bool explain_all = false;
  int progress = -1;
  int64_t lateness_ms = TW_DEFAULT_ALLOWED_LATENESS_MS;
  r.from_ms = INT64_MIN;
  r.to_ms = INT64_MAX;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
    switch (c) {
      case 'r':
        rules_path = optarg;
        break;
      case 'R':
        record = optarg;
        break;
      case 'i':
        if (n_inputs == REPLAY_MAX_INPUTS) {
          fprintf(stderr, "tutorwatch replay: at most %d --input files\n", REPLAY_MAX_INPUTS);
          return 2;
        }
        inputs[n_inputs++] = optarg;
        break;
      case 'f':
      case 't': {
        int64_t t;
        if (parse_time(optarg, &t) != 0) {
          fprintf(stderr,
                  "tutorwatch replay: --%s wants a date (2025-03-01), an RFC 3339 time "
                  "(2025-03-01T10:00:00+08:00) or epoch ms, not '%s'\n",
                  c == 'f' ? "from" : "to", optarg);
          return 2;
        }
        if (c == 'f') {
          r.from_ms = t;
          from_arg = optarg;
        } else {
          r.to_ms = t;
          to_arg = optarg;
        }
        break;
      }
      case 'I':
        if (strlen(optarg) != TW_RECORD_INST_LEN) {
          fprintf(stderr,
                  "tutorwatch replay: --institution wants an 18-character credit code, "
                  "not '%s'\n",
                  optarg);
          return 2;
        }
        if (r.n_insts == REPLAY_MAX_INST) {
          fprintf(stderr, "tutorwatch replay: at most %d --institution options\n", REPLAY_MAX_INST);
          return 2;
        }
        r.insts[r.n_insts++] = optarg;
        break;
      case 'g':
        if (!valid_prefix(optarg)) {
          fprintf(stderr, "tutorwatch replay: --region wants 1 to 6 digits, not '%s'\n", optarg);
          return 2;
        }
        r.region = optarg;
        break;
      case 'a':
        alerts = optarg;
        break;
      case 'P':
        if (strchr(optarg, '=') == NULL || optarg[0] == '=') {
          fprintf(stderr, "tutorwatch replay: --set wants NAME=VALUE, not '%s'\n", optarg);
          return 2;
        }
        if (n_params == REPLAY_MAX_SET) {
          fprintf(stderr, "tutorwatch replay: at most %d --set options\n", REPLAY_MAX_SET);
          return 2;
        }
        params[n_params++] = optarg;
        break;
      case 'S':
        schema_path = optarg;
        break;
      case 'd':
        diff_old = optarg;
        break;
      case 'x':
        if (n_explain == REPLAY_MAX_EXPLAIN) {
          fprintf(stderr, "tutorwatch replay: at most %d --explain options\n", REPLAY_MAX_EXPLAIN);
          return 2;
        }
        explain_ids[n_explain++] = optarg;
        break;
      case 'X':
        explain_all = true;
        break;
      case 'e':
        evidence = optarg;
        break;
      case 'p':
        progress = 1;
        break;
      case 'q':
        progress = 0;
        break;
      case 'L':
        if (tw_cli_duration_ms(optarg, &lateness_ms) != 0) {
          fprintf(stderr,
                  "tutorwatch replay: --allowed-lateness wants a duration such as 0s, "
                  "15m or 1h, not '%s'\n",
                  optarg);
          return 2;
        }
        break;
      case 'k':
        pseudo_dir = optarg;
        break;
      case 'h':
        usage(stdout);
        return 0;
      default:
        fprintf(stderr, "'tutorwatch replay --help' lists the options\n");
        return 2;
    }
  }
  for (; optind < argc; optind++) { /* --input a.jsonl b.jsonl: the files after it */
    if (n_inputs == 0 || n_inputs == REPLAY_MAX_INPUTS) {
      fprintf(stderr, "tutorwatch replay: unexpected argument '%s'\n", argv[optind]);
      return 2;
    }
    inputs[n_inputs++] = argv[optind];
  }
  if (rules_path == NULL || (record == NULL) == (n_inputs == 0)) {
    fprintf(stderr,
            "tutorwatch replay: need --rules FILE and exactly one of --record DIR or "
            "--input FILE...\n'tutorwatch replay --help' lists the options\n");
    return 2;
  }
  bool explaining = explain_all || n_explain > 0;
  if (evidence != NULL && !explaining) {
    fprintf(stderr, "tutorwatch replay: --evidence goes with --explain ID or --explain-all\n");
    return 2;
  }
  if (explaining && diff_old != NULL) {
    fprintf(stderr,
            "tutorwatch replay: --explain and --diff are separate questions: run them "
            "one at a time\n");
    return 2;
  }
  if (r.from_ms != INT64_MIN && r.to_ms != INT64_MAX && r.to_ms <= r.from_ms) {
    fprintf(stderr, "tutorwatch replay: --to %s is not after --from %s\n", to_arg, from_arg);
    return 2;
  }
  r.filtered = r.n_insts > 0 || r.region != NULL;
  /* A closed output (`| head`) is a write error, not a death that would leave the private state
   * behind; an interrupt stops the replay and removes it. */
  signal(SIGPIPE, SIG_IGN);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  g_stop = 0;
  r.write_alerts = !explaining && diff_old == NULL;
  r.progress = progress >= 0 ? progress == 1 : isatty(STDERR_FILENO) == 1;

  int status = 0, rc;
  tw_ruleset_t *rs = NULL;
  tw_explain_t *ex = NULL;
  tmpdir_t t_new = {{0}, false}, t_old = {{0}, false};
  char schema_buf[4096];
  tw_pipeline_opts_t po;
  memset(&po, 0, sizeof po);
  r.out = NULL;
  /* The rules, loaded here too: warm-up, rule keys, explanations, the file's hash. */
  if (schema_path == NULL) {
    tw_schema_path_for_rules(rules_path, schema_buf, sizeof schema_buf);
    schema_path = schema_buf;
  }
  tw_schema_error_t serr;
  memset(&serr, 0, sizeof serr);
  if ((rc = tw_schema_load(schema_path, &r.schema, &serr)) != 0) {
    fprintf(stderr, "tutorwatch replay: %s:%d:%d: %s\n", serr.file[0] ? serr.file : schema_path,
            serr.line, serr.col, serr.message);
    return 1;
  }
  tw_rule_error_t rerr;
  memset(&rerr, 0, sizeof rerr);
  tw_rules_load_opts_t lopts = {.set = params, .n_set = n_params};
  if ((rc = tw_rules_load_ex(rules_path, NULL, 0, r.schema, &lopts, &rs, &rerr)) != 0) {
    fprintf(stderr, "tutorwatch replay: %s:%d:%d: %s\n", rerr.file[0] ? rerr.file : rules_path,
            rerr.line, rerr.col, rerr.message);
    status = 1;
    goto done;
  }
  if (tw_event_init(&r.scratch) != 0) {
    status = 70;
    goto done;
  }
  /* What an institution- or region-only replay leaves out. */
  if (r.filtered) {
    char left[2048] = "";
    size_t used = 0, n_left = 0;
    for (size_t i = 0; i < tw_rules_n_rules(rs); i++) {
      const tw_rule_t *rule = tw_rules_rule(rs, i);
      if (rule_covered(&r, rule)) continue;
      n_left++;
      if (used < sizeof left)
        used += (size_t)snprintf(left + used, sizeof left - used, "%s%s (by %s)",
                                 n_left > 1 ? ", " : "", rule->name, rule->by_name);
    }
    if (n_left > 0)
      fprintf(stderr,
              "tutorwatch replay: %s replay: %zu %s keyed by a wider key %s left out (give "
              "--region with the key's prefix to include %s): %s\n",
              r.region ? "a region" : "an institution-only", n_left, n_left == 1 ? "rule" : "rules",
              n_left == 1 ? "is" : "are", n_left == 1 ? "it" : "them", left);
  }
  int64_t warm = warm_up_ms(rs, lateness_ms);
  r.span_from = r.from_ms == INT64_MIN || warm == INT64_MAX || r.from_ms < INT64_MIN + warm
                    ? INT64_MIN
                    : r.from_ms - warm;
  r.span_to = r.to_ms;
  if (strcmp(alerts, "-") == 0) {
    r.out = stdout;
  } else if ((r.out = fopen(alerts, "w")) == NULL) {
    fprintf(stderr, "tutorwatch replay: cannot open '%s': %s\n", alerts, strerror(errno));
    status = 1;
    goto done;
  }
  if (explaining && tw_explain_new(rs, rules_path, explain_ids, n_explain, explain_all, keep_alert,
                                   &r, &ex) != 0) {
    status = 70;
    goto done;
  }
  /* The range and count of the record, for sweeps at the end and the progress line. */
  tw_record_scan_stats_t info;
  memset(&info, 0, sizeof info);
  char err[4096] = "";
  if (record != NULL && (rc = tw_record_scan_info(record, &info, err, sizeof err)) != 0) {
    fprintf(stderr, "tutorwatch replay: %s\n", err);
    status = rc == TW_ENOMEM ? 70 : 1;
    goto done;
  }
  po.schema_path = schema_path;
  po.no_sync = true; /* a private state thrown away at the end */
  po.allowed_lateness_ms = lateness_ms;
  po.max_future_skew_ms = -1;
  po.dedup_horizon_ms = -1; /* as live: a record may hold an event twice after a restart */
  po.from_record = record != NULL;
  po.pseudonym_dir = pseudo_dir;
  rc = open_pipeline(&po, rules_path, params, n_params, &t_new, ex ? tw_explain_observer(ex) : NULL,
                     &r.p);
  if (rc == 0) rc = add_sink(&r, r.p, diff_old ? &r.diff_new : NULL);
  if (rc == 0 && diff_old != NULL) {
    rc = open_pipeline(&po, diff_old, NULL, 0, &t_old, NULL, &r.p_old);
    if (rc == 0) rc = add_sink(&r, r.p_old, &r.diff_old);
  }
  if (rc != 0) {
    status = rc == TW_ENOMEM || rc == TW_ESTATE ? 70 : 1;
    goto done;
  }
  r.t0 = now_s();
  r.max_ts = INT64_MIN;
  tw_record_scan_stats_t scan;
  memset(&scan, 0, sizeof scan);
  if (record != NULL) {
    if (r.span_from == INT64_MIN) r.span_from = info.min_ts_ms;
    if (r.span_to == INT64_MAX) r.span_to = info.max_ts_ms;
    tw_record_filter_t f = {r.span_from, r.to_ms == INT64_MAX ? INT64_MAX : r.to_ms - 1, r.insts,
                            r.n_insts, r.region};
    if (r.span_from == INT64_MAX) f.from_ms = INT64_MIN; /* an empty record */
    rc = tw_record_scan(record, &f, from_record_cb, &r, &scan, err, sizeof err);
    if (rc != 0 && err[0] != '\0') fprintf(stderr, "tutorwatch replay: %s\n", err);
    r.max_ts = info.max_ts_ms;
  } else {
    rc = 0;
    r.by_bytes = true;
    for (size_t i = 0; i < n_inputs; i++) {
      struct stat ist;
      if (stat(inputs[i], &ist) == 0 && S_ISREG(ist.st_mode))
        r.bytes_total += (uint64_t)ist.st_size;
    }
    for (size_t i = 0; i < n_inputs && rc == 0; i++) {
      tw_source_opts_t so;
      memset(&so, 0, sizeof so);
      so.format = tw_format_from_path(inputs[i]);
      tw_source_t *src = NULL;
      errno = 0;
      rc = tw_source_find("file")->open(inputs[i], &so, &src);
      if (rc != 0) {
        fprintf(stderr, "tutorwatch replay: cannot open input '%s': %s\n", inputs[i],
                errno ? strerror(errno) : tw_strerror(rc));
        status = 1;
        break;
      }
      do {
        rc = src->vt->poll(src, REPLAY_POLL_BATCH, from_file_cb, &r);
      } while (rc >= 0);
      if (rc == TW_EOF) rc = 0;
      src->vt->close(src);
      struct stat ist;
      if (stat(inputs[i], &ist) == 0 && S_ISREG(ist.st_mode))
        r.bytes_before += (uint64_t)ist.st_size;
    }
  }
  /* Scheduled sweeps run up to the end of the whole input (not only of the events selected),
   * as they did live; never past --to. */
  int64_t sweep_limit = r.max_ts;
  if (r.to_ms != INT64_MAX && sweep_limit >= r.to_ms) sweep_limit = r.to_ms - 1;
  if (rc == 0) rc = finish_pipeline(r.p, sweep_limit);
  if (rc == 0 && r.p_old != NULL) rc = finish_pipeline(r.p_old, sweep_limit);
  if (rc == 0 && ex != NULL) rc = tw_explain_failed(ex);
  if (r.progress) draw_progress(&r, true);
  if (g_stop) {
    fprintf(stderr, "tutorwatch replay: interrupted; nothing more is written\n");
    status = 130;
    goto done;
  }
  if (rc != 0) {
    if (status == 0) {
      fprintf(stderr, "tutorwatch replay: stopped: %s\n", tw_strerror(rc));
      status = rc == TW_EINVAL || rc == TW_EIO ? 1 : 70;
    }
    goto done;
  }
  double secs = now_s() - r.t0;
  tw_pipeline_stats_t st;
  tw_pipeline_stats(r.p, &st);
  if (diff_old != NULL) {
    uint64_t tot[4];
    if (write_diff(&r, tw_rules_n_rules(rs) + 4096, tot) != 0) {
      status = 70;
      goto done;
    }
    fprintf(stderr,
            "tutorwatch replay: diff of %s (old) and %s (new): %zu old alerts, %zu new; same "
            "%llu, only old %llu, only new %llu, changed %llu\n",
            diff_old, rules_path, r.diff_old.n, r.diff_new.n, (unsigned long long)tot[0],
            (unsigned long long)tot[1], (unsigned long long)tot[2], (unsigned long long)tot[3]);
  }
  if (ex != NULL) {
    if (tw_explain_write_lines(ex, r.out) != 0) status = 1;
    if (evidence != NULL) {
      json_t *in = json_object();
      json_object_set_new(in, record ? "record" : "input",
                          json_string(record ? record : inputs[0]));
      if (from_arg) json_object_set_new(in, "from", json_string(from_arg));
      if (to_arg) json_object_set_new(in, "to", json_string(to_arg));
      json_t *ia = json_array();
      for (size_t i = 0; i < r.n_insts; i++) json_array_append_new(ia, json_string(r.insts[i]));
      json_object_set_new(in, "institutions", ia);
      if (r.region) json_object_set_new(in, "region", json_string(r.region));
      json_t *sets = json_array();
      for (size_t i = 0; i < n_params; i++) json_array_append_new(sets, json_string(params[i]));
      json_object_set_new(in, "set", sets);
      json_object_set_new(in, "events_replayed", json_integer((json_int_t)r.events));
      if (tw_explain_write_evidence(ex, evidence, in, err, sizeof err) != 0) {
        fprintf(stderr, "tutorwatch replay: %s\n", err);
        status = 1;
      }
      json_decref(in);
    }
    if (tw_explain_report_missing(ex, stderr) > 0) status = 1;
  }
  if (fflush(r.out) != 0 || st.sink_errors > 0) {
    fprintf(stderr, "tutorwatch replay: cannot write '%s'\n", alerts);
    status = 1;
  }
  fprintf(stderr,
          "tutorwatch replay: %llu events replayed (%llu rejected, %llu duplicates), %llu %s "
          "written%s%s in %.2f s (%.0f events/s)",
          (unsigned long long)r.events, (unsigned long long)st.rejected,
          (unsigned long long)st.duplicates,
          (unsigned long long)(explaining ? tw_explain_count(ex)
                               : diff_old ? r.diff_new.n
                                          : r.written),
          explaining ? "explanations" : "alerts", r.from_ms != INT64_MIN ? " (from --from on)" : "",
          diff_old ? " (new rules)" : "", secs, secs > 0 ? (double)r.events / secs : 0.0);
  if (record != NULL)
    fprintf(stderr, "; record: %llu of %llu segments read, %llu records checked",
            (unsigned long long)(scan.segments - scan.segments_skipped),
            (unsigned long long)scan.segments, (unsigned long long)scan.records_read);
  fprintf(stderr, "\n");
  if (st.rejected > 0)
    fprintf(stderr, "tutorwatch replay: %llu events were rejected as `run` would reject them\n",
            (unsigned long long)st.rejected);
done:
  if (r.p != NULL && tw_pipeline_close(r.p) != 0 && status == 0) status = 70;
  if (r.p_old != NULL && tw_pipeline_close(r.p_old) != 0 && status == 0) status = 70;
  drop_tmp(&t_new);
  drop_tmp(&t_old);
  if (r.out != NULL && r.out != stdout) fclose(r.out);
  keep_free(&r.diff_new);
  keep_free(&r.diff_old);
  tw_explain_free(ex);
  tw_event_fini(&r.scratch);
  tw_rules_free(rs);
  tw_schema_free(r.schema);
  return status;
}
