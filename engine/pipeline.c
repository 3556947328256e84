/*
 * pipeline.c: one shard's data flow (see tw_pipeline.h for the contract).
 *
 * Per accepted event the work is bounded by the ruleset: each aggregate and rule that the
 * event's type feeds is visited once (lists are precomputed per type at open, so no string
 * compare or rule scan happens per event), each evaluation is allocation-free, and the event is
 * decoded into one reused arena. Alerts are staged until the group commit that journals them and
 * only then handed to the sinks, in order.
 */
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tw_alert.h"
#include "tw_code.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_order.h"
#include "tw_pipeline.h"
#include "tw_pseudo.h"
#include "tw_record.h"
#include "tw_rules.h"
#include "tw_schema.h"
#include "tw_state.h"

#define TW_DEAD_LETTER_RAW_MAX 4096 /* bytes of the raw input kept in a dead-letter line */
#define TW_EVAL_ERROR_LOG_MAX 20    /* evaluation errors logged in full; the rest are counted */
#define TW_INPUT_PROBE_BYTES 4096   /* bytes hashed at the head and before the resume offset */
#define TW_INPUT_META "input_position"
#define TW_INPUT_META_VERSION 1
#define TW_SUSPECTS_MAX 16       /* events held as suspected future timestamps at once */
#define TW_SUSPECT_PATIENCE 8    /* later events staying behind a suspect before it is refused */
#define TW_RECENT 64             /* event times kept to measure the stream's recent span */
#define TW_SPAN_FACTOR 10        /* a jump beyond 10x the recent span (and the skew) is suspect */
#define TW_EVICT_PER_COMMIT 4096 /* state entries examined for eviction per group commit, */
#define TW_EVICT_PER_EVENT 8     /* ... in proportion to its events, */
#define TW_EVICT_MIN_PER_COMMIT 64                  /* ... and at least this many */
#define TW_SUSPECT_MIN_JUMP_MS (24LL * 3600 * 1000) /* a quiet night or a weekend is no suspect */
#define TW_IDLE_MS 1000 /* live: no record for this long = idle (wall-clock watermark) */
#define TW_SUSPECT_EOF_MAX_JUMP_MS (30LL * 24 * 3600 * 1000) /* accepted unconfirmed at the end */
#define TW_LIVE_STREAM_MS                                                 \
  (24LL * 3600 * 1000) /* newest event this close to the wall clock: live \
                        */
#define TW_SWEEP_CATCH_UP                                                                        \
  1000 /* at most this many missed intervals are swept one by one */ /* live: no record for this \
                                                                        long = idle */
#define TW_PUBLISHED_META "published_seq" /* last journal seq handed to the sinks */
#define TW_STREAM_META "stream_position" /* tracked stream: last sequence done (8 bytes LE) */

/* An alert made durable by the next commit, then published. Strings live in pipeline->pend_buf
 * at the recorded offsets (the buffer may move while it grows). */
typedef struct pending_alert {
  tw_alert_t alert;
  size_t json_off, json_len;
  size_t key_off, inst_off, region_off, event_id_off;
} pending_alert_t;

/* A record read but not yet finished: where it starts, so a resume can re-read it. */
typedef struct arrival {
  uint64_t offset_bytes, line;
  uint8_t done;
} arrival_t;

/* An event held because its time jumps far ahead of the stream: its raw record, so it can be
 * decoded again when confirmed or dead-lettered when refused. */
typedef struct suspect {
  uint64_t arrival;
  int64_t ts_ms;
  unsigned age;         /* accepted events since it arrived */
  int64_t tolerance_ms; /* a later event this close before it (or after it) confirms it */
  char *raw;
  size_t raw_len;
  uint64_t full_len_bytes, offset_bytes, line;
  tw_format_t format;
  uint32_t flags; /* TW_REC_SECONDARY survives the hold */
  char *origin;
} suspect_t;

typedef struct type_plan {
  uint16_t *aggs; /* aggregate indices fed by this type */
  size_t n_aggs;
  uint16_t *rules; /* rule indices triggered by this type */
  size_t n_rules;
} type_plan_t;

struct tw_pipeline {
  tw_schema_t *schema;
  tw_ruleset_t *rules;
  tw_state_t *state;
  tw_pseudo_key_t pseudo_key;
  tw_event_t ev;
  tw_event_t *cur;     /* the event rules read: &ev, or &sweep_ev during a scheduled sweep */
  tw_event_t sweep_ev; /* the synthetic event of a sweep: institution_id, region, ts = sweep time */
  int64_t *next_sweep_ms; /* per rule: next sweep of an `every` rule; INT64_MIN = not yet known */
  bool has_every;
  size_t sweep_clocks_unset; /* every rules whose clock waits for the first event */
  tw_state_ref_t *agg_ref;   /* per aggregate of the rules: its state reference, or NO_REF */
  tw_state_ref_t inst_ref;   /* the institutions seen (kInstitutions), or NO_REF */
  size_t *sweep_due;         /* the scheduled rules of the sweep in progress, in rule order */
  size_t n_sweep_due;
  char *sk_bytes; /* the institutions of the sweep in progress: key bytes, back to back */
  size_t sk_len, sk_cap;
  size_t *sk_off; /* sk_n + 1 offsets into sk_bytes */
  size_t sk_n, sk_off_cap;
  int64_t sweep_at_ms;
  type_plan_t plan[TW_MAX_TYPES];
  tw_outputs_t own_out; /* used when no shared outputs are given */
  tw_outputs_t *out;    /* sinks and dead-letter file: own_out, or shared by shards */
  size_t batch_events;
  uint64_t pending_events;
  tw_pipeline_stats_t stats;
  pending_alert_t *pend;
  size_t n_pend, cap_pend;
  char *pend_buf;
  size_t pend_used, pend_cap;
  char json[TW_ALERT_JSON_MAX];
  /* The tracked input file (tw_pipeline_track_input): -1 when none. */
  int input_fd;
  uint8_t input_head_hash[16];
  uint32_t input_head_len;
  uint64_t input_offset, input_line; /* end of the last record read */
  bool no_sync;
  uint64_t published_seq; /* last journal sequence number handed to the sinks */
  uint64_t republished;
  /* Event time. */
  tw_order_t *order; /* events waiting for the watermark */
  int64_t lateness_ms, skew_ms, retention_ms, dedup_horizon_ms;
  bool live;
  bool have_max;
  int64_t max_seen_ms; /* newest event time accepted */
  int64_t wm_floor_ms; /* live: watermark moved by the wall clock while idle */
  int64_t last_record_wall_ms;
  int64_t idle_flush_ms; /* < 0: a pause does not release what is held */
  const volatile sig_atomic_t *stop; /* opts.stop */
  int64_t recent[TW_RECENT]; /* event times of the last accepted events, circular */
  size_t n_recent;
  suspect_t suspects[TW_SUSPECTS_MAX];
  size_t n_suspects;
  /* Records read and not yet finished (held in the buffer or as suspects), in arrival order:
   * the committed input position stops before the oldest one. A ring; arrival numbers are
   * arr_base .. arr_base + arr_count - 1. */
  arrival_t *arr;
  size_t arr_cap, arr_head, arr_count;
  uint64_t arr_base;
  /* Shards: records before this offset were finished by this pipeline before a restart; the
   * shared reader re-reads them for other shards, this one skips them. */
  uint64_t skip_below_offset;
  bool stream_tracked;   /* tw_pipeline_track_stream: records' lines are stream sequences */
  uint64_t stream_done;  /* ... and every sequence up to this one is committed */
  /* The first engine failure (state store, memory, an output): nothing more is committed, so a
   * restart redoes the batch in which it happened. */
  int failed;
  bool uncommitted; /* events processed (or swept) since the last commit */
  /* Keys and shards: this pipeline keeps the keys whose tw_key_shard is shard_index. */
  int shard_index, n_shards;
  char keybuf[2][8]; /* derived keys (city, province): [0] for aggregate reads, [1] a rule's key */
  const char *const *params_set;
  size_t n_params_set;
  /* Alerts re-entering as events of the internal `alert` type (composite rules). */
  int alert_type; /* schema type id, -1 when the schema has none */
  int slot_rule, slot_severity, slot_labels;
  tw_event_t alert_ev;
  const tw_rule_t *reenter_from_rule; /* the rule whose alert p->alert_ev is: its key decides */
  void (*on_commit)(void *ud, uint64_t finished_below_offset); /* opts.on_commit */
  void *on_commit_ud;
  /* Investigations: the event record (run --record), replayed input, observer (replay). */
  tw_recorder_t *record;
  bool from_record;
  const tw_pipeline_observer_t *observer;
};

/* A re-entering alert feeds only what is keyed as the rule that raised it (docs/rules.md): an
 * institution's composite rule counts institution rules' alerts, a city's counts city rules'. So
 * the alert stays on the shard that raised it and every shard count gives the same alerts. */
static bool same_key(const tw_pipeline_t *p, int by_slot, tw_key_derive_t derive) {
  const tw_rule_t *r = p->reenter_from_rule;
  return p->cur != &p->alert_ev || r == NULL || (r->by_slot == by_slot && r->by_derive == derive);
}

static void errf(char *buf, size_t cap, const char *fmt, const char *a, const char *b) {
  if (buf != NULL && cap > 0) snprintf(buf, cap, fmt, a, b);
}

/* "file:line:col: message", or "file: message" when the position is not known. */
static void located(char *buf, size_t cap, const char *file, int line, int col, const char *msg) {
  if (buf == NULL || cap == 0) return;
  if (line > 0)
    snprintf(buf, cap, "%s:%d:%d: %s", file, line, col, msg);
  else
    snprintf(buf, cap, "%s: %s", file, msg);
}

/* Every institution an event has named, for the sweeps: an `all` count per institution. */
static const tw_window_spec_t kInstitutions = {"tw.institutions", TW_AGG_COUNT, 0, 0};

#define NO_REF UINT32_MAX /* the state refused the aggregate: each use gets its error */

/* The state reference of aggregate i, or NO_REF (none resolved, or no plan: a reload that ran
 * out of memory leaves agg_ref NULL until the next plan). */
static tw_state_ref_t agg_ref(const tw_pipeline_t *p, size_t i) {
  return p->agg_ref != NULL ? p->agg_ref[i] : NO_REF;
}

static void plan_free(tw_pipeline_t *p) {
  free(p->agg_ref);
  p->agg_ref = NULL;
  p->inst_ref = NO_REF;
  for (uint32_t t = 0; t < TW_MAX_TYPES; t++) {
    free(p->plan[t].aggs);
    free(p->plan[t].rules);
    memset(&p->plan[t], 0, sizeof p->plan[t]);
  }
}

/* plan_build: per event type, the aggregates it feeds and the rules it triggers; and the longest
 * sliding window (what state retains behind the watermark). */
static int plan_build(tw_pipeline_t *p) {
  size_t na = tw_rules_n_aggregates(p->rules), nr = tw_rules_n_rules(p->rules);
  p->retention_ms = 0;
  for (size_t i = 0; i < na; i++) {
    int64_t w = tw_rules_aggregate(p->rules, i)->spec.window_ms;
    if (w > p->retention_ms) p->retention_ms = w;
  }
  p->inst_ref = NO_REF;
  p->agg_ref = malloc((na ? na : 1) * sizeof *p->agg_ref);
  if (p->agg_ref == NULL) return TW_ENOMEM;
  for (size_t i = 0; i < na; i++) p->agg_ref[i] = NO_REF; /* a failure below leaves no gap */
  for (size_t i = 0; i < na; i++) {
    int rc = tw_state_agg_ref(p->state, &tw_rules_aggregate(p->rules, i)->spec, &p->agg_ref[i]);
    if (rc == TW_ENOMEM) return rc;
    if (rc != 0) p->agg_ref[i] = NO_REF;
  }
  int rc = tw_state_agg_ref(p->state, &kInstitutions, &p->inst_ref);
  if (rc == TW_ENOMEM) return rc;
  if (rc != 0) p->inst_ref = NO_REF;
  for (uint32_t t = 0; t < p->schema->n_types; t++) {
    type_plan_t *tp = &p->plan[t];
    tp->aggs = calloc(na ? na : 1, sizeof *tp->aggs);
    tp->rules = calloc(nr ? nr : 1, sizeof *tp->rules);
    if (tp->aggs == NULL || tp->rules == NULL) return TW_ENOMEM;
    for (size_t i = 0; i < na; i++)
      if (tw_rules_aggregate(p->rules, i)->on_types & (1u << t))
        tp->aggs[tp->n_aggs++] = (uint16_t)i;
    for (size_t i = 0; i < nr; i++)
      if (tw_rules_rule(p->rules, i)->on_types & (1u << t)) tp->rules[tp->n_rules++] = (uint16_t)i;
  }
  return 0;
}

int tw_outputs_open(tw_outputs_t *o, const char *dead_letter_path, bool no_sync, char *errbuf,
                    size_t errcap) {
  memset(o, 0, sizeof *o);
  snprintf(o->dead_letter_path, sizeof o->dead_letter_path, "%s",
           dead_letter_path ? dead_letter_path : "dead-letter.jsonl");
  o->no_sync = no_sync;
  /* Opened now, so an unwritable path stops the start, not the first bad event hours later. */
  o->dead_letter = tw_jsonl_open_append(o->dead_letter_path, NULL);
  if (o->dead_letter == NULL) {
    errf(errbuf, errcap, "cannot open the dead-letter file '%s': %s", o->dead_letter_path,
         strerror(errno));
    return TW_EIO;
  }
  pthread_mutex_init(&o->lock, NULL);
  o->open = true;
  return 0;
}

int tw_outputs_add_sink(tw_outputs_t *o, tw_sink_t *sink) {
  if (o->n_sinks == TW_OUTPUTS_MAX_SINKS) return TW_ETOOBIG;
  o->sinks[o->n_sinks++] = sink;
  return 0;
}

int tw_outputs_close(tw_outputs_t *o) {
  int rc = 0;
  if (o == NULL || !o->open) return 0;
  for (size_t s = 0; s < o->n_sinks; s++) o->sinks[s]->vt->close(o->sinks[s]);
  if (fclose(o->dead_letter) != 0) rc = TW_EIO;
  pthread_mutex_destroy(&o->lock);
  memset(o, 0, sizeof *o);
  return rc;
}

static int sweeps_init(tw_pipeline_t *p);

int tw_pipeline_open(const tw_pipeline_opts_t *opts, tw_pipeline_t **out, char *errbuf,
                     size_t errcap) {
  char schema_path[4096];
  int rc;
  tw_pipeline_t *p = calloc(1, sizeof *p);
  if (p == NULL) return TW_ENOMEM;
  p->input_fd = -1;
  if (opts->schema_path != NULL) {
    snprintf(schema_path, sizeof schema_path, "%s", opts->schema_path);
  } else {
    tw_schema_path_for_rules(opts->rules_path, schema_path, sizeof schema_path);
  }
  tw_schema_error_t serr = {0};
  rc = tw_schema_load(schema_path, &p->schema, &serr);
  if (rc != 0) {
    located(errbuf, errcap, serr.file[0] ? serr.file : schema_path, serr.line, serr.col,
            serr.message);
    goto fail;
  }
  tw_rule_error_t rerr = {0};
  p->params_set = opts->params_set;
  p->n_params_set = opts->n_params_set;
  tw_rules_load_opts_t lopts = {.set = p->params_set, .n_set = p->n_params_set};
  rc = tw_rules_load_ex(opts->rules_path, NULL, 0, p->schema, &lopts, &p->rules, &rerr);
  if (rc != 0) {
    located(errbuf, errcap, rerr.file[0] ? rerr.file : opts->rules_path, rerr.line, rerr.col,
            rerr.message);
    goto fail;
  }
  {
    char marker[4200];
    struct stat mst;
    snprintf(marker, sizeof marker, "%s/shards", opts->state_dir);
    if (stat(marker, &mst) == 0) {
      rc = TW_EINVAL;
      errf(errbuf, errcap, "state %s was made with --shards; give the same --shards%s",
           opts->state_dir, "");
      goto fail;
    }
  }
  tw_state_opts_t sopts = {0};
  sopts.no_sync = opts->no_sync;
  rc = tw_state_open(opts->state_dir, &sopts, &p->state);
  if (rc != 0) {
    errf(errbuf, errcap, "cannot open state directory '%s': %s", opts->state_dir, tw_strerror(rc));
    goto fail;
  }
  rc = tw_pseudo_key_load(opts->pseudonym_dir ? opts->pseudonym_dir : opts->state_dir,
                          &p->pseudo_key);
  if (rc != 0) {
    errf(errbuf, errcap, "cannot load the pseudonym key in '%s': %s", opts->state_dir,
         tw_strerror(rc));
    goto fail;
  }
  rc = tw_event_init(&p->ev);
  if (rc == 0) rc = tw_event_init(&p->sweep_ev);
  if (rc == 0) rc = tw_event_init(&p->alert_ev);
  if (rc != 0) goto fail;
  p->shard_index = opts->n_shards > 1 ? opts->shard_index : 0;
  p->n_shards = opts->n_shards > 1 ? opts->n_shards : 1;
  p->alert_type = tw_schema_type_id(p->schema, "alert", 5);
  p->slot_rule = tw_schema_field_slot(p->schema, "rule", 4);
  p->slot_severity = tw_schema_field_slot(p->schema, "severity", 8);
  p->slot_labels = tw_schema_field_slot(p->schema, "labels", 6);
  if (p->slot_rule < 0 || p->slot_severity < 0 || p->slot_labels < 0) p->alert_type = -1;
  p->cur = &p->ev;
  rc = plan_build(p);
  if (rc == 0) rc = sweeps_init(p);
  if (rc != 0) goto fail;
  p->batch_events = opts->batch_events ? opts->batch_events : 100000;
  p->lateness_ms =
      opts->allowed_lateness_ms < 0 ? TW_DEFAULT_ALLOWED_LATENESS_MS : opts->allowed_lateness_ms;
  p->skew_ms =
      opts->max_future_skew_ms < 0 ? TW_DEFAULT_MAX_FUTURE_SKEW_MS : opts->max_future_skew_ms;
  p->live = opts->live;
  p->stop = opts->stop;
  p->idle_flush_ms = opts->idle_flush_ms == 0 ? TW_DEFAULT_IDLE_FLUSH_MS : opts->idle_flush_ms;
  p->dedup_horizon_ms =
      opts->dedup_horizon_ms < 0 ? TW_DEFAULT_DEDUP_HORIZON_MS : opts->dedup_horizon_ms;
  p->wm_floor_ms = INT64_MIN;
  rc = tw_order_new(&p->order);
  if (rc != 0) goto fail;
  p->no_sync = opts->no_sync;
  p->on_commit = opts->on_commit;
  p->on_commit_ud = opts->on_commit_ud;
  p->record = opts->record;
  p->from_record = opts->from_record;
  p->observer = opts->observer;
  if (opts->shared_outputs != NULL) {
    p->out = opts->shared_outputs;
  } else {
    rc = tw_outputs_open(&p->own_out, opts->dead_letter_path, opts->no_sync, errbuf, errcap);
    if (rc != 0) goto fail;
    p->out = &p->own_out;
  }
  *out = p;
  return 0;
fail:
  if (rc == TW_ENOMEM) errf(errbuf, errcap, "%s%s", "out of memory", "");
  tw_pipeline_close(p);
  return rc;
}

int tw_pipeline_add_sink(tw_pipeline_t *p, tw_sink_t *sink) {
  return tw_outputs_add_sink(p->out, sink);
}

/* ---- dead-letter ---------------------------------------------------------------------------- */

static int dead_letter(tw_pipeline_t *p, const tw_record_t *rec, const char *reason,
                       const char *field, const char *message) {
  if (rec->flags & TW_REC_SECONDARY) return 0; /* the primary copy is dead-lettered */
  p->stats.rejected++;
  size_t raw_len =
      rec->len_bytes < TW_DEAD_LETTER_RAW_MAX ? rec->len_bytes : TW_DEAD_LETTER_RAW_MAX;
  /* Cut at a UTF-8 boundary so a valid text stays valid when shortened. */
  if (raw_len < rec->len_bytes)
    while (raw_len > 0 && ((unsigned char)rec->data[raw_len] & 0xC0) == 0x80) raw_len--;
  json_t *o = json_object();
  if (o == NULL) return TW_ENOMEM;
  json_object_set_new(o, "reason", json_string(reason));
  if (field != NULL && field[0] != '\0') json_object_set_new(o, "field", json_string(field));
  json_object_set_new(o, "message", json_string(message));
  json_object_set_new(o, "origin", json_string(rec->origin ? rec->origin : "-"));
  json_object_set_new(o, "line", json_integer((json_int_t)rec->line));
  json_object_set_new(o, "offset", json_integer((json_int_t)rec->offset_bytes));
  json_object_set_new(o, "raw_len", json_integer((json_int_t)rec->full_len_bytes));
  json_object_set_new(o, "raw_truncated", json_boolean(raw_len < rec->full_len_bytes));
  if (tw_utf8_valid(rec->data, raw_len)) {
    json_object_set_new(o, "raw", json_stringn(rec->data, raw_len));
  } else {
    size_t cap = sodium_base64_ENCODED_LEN(raw_len, sodium_base64_VARIANT_ORIGINAL);
    char *b64 = malloc(cap);
    if (b64 != NULL) {
      sodium_bin2base64(b64, cap, (const unsigned char *)rec->data, raw_len,
                        sodium_base64_VARIANT_ORIGINAL);
      json_object_set_new(o, "raw_base64", json_string(b64));
      free(b64);
    }
  }
  char *line = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (line == NULL) return TW_ENOMEM;
  pthread_mutex_lock(&p->out->lock);
  int ok = fputs(line, p->out->dead_letter) >= 0 && fputc('\n', p->out->dead_letter) != EOF;
  pthread_mutex_unlock(&p->out->lock);
  free(line);
  if (!ok) {
    fprintf(stderr, "tutorwatch: cannot write the dead-letter file '%s': %s\n",
            p->out->dead_letter_path, strerror(errno));
    return TW_EIO;
  }
  return 0;
}

/* ---- evaluation ----------------------------------------------------------------------------- */

int tw_key_shard(const char *key, size_t len, int n) {
  if (n <= 1) return 0;
  uint64_t h = 14695981039346656037ULL; /* FNV-1a 64: offset basis, then prime 2^40 + 435 */
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 1099511628211ULL;
  }
  return (int)(h % (uint64_t)n);
}

/* key_of: the key of an aggregate or rule in ev: the `by` field's string, or the city / province
 * code derived from the region code, written into buf (8 bytes) as 6 digits (440106 → 440100,
 * 440000). TW_ENOENT when the event has no such key. */
static int key_of(const tw_event_t *ev, int slot, tw_key_derive_t derive, char *buf,
                  const char **key, size_t *len) {
  tw_value_t v = tw_event_get(ev, slot);
  if (v.kind != TW_V_STR) return TW_ENOENT;
  if (derive == TW_KEY_FIELD) {
    *key = v.u.s.ptr;
    *len = v.u.s.len;
    return 0;
  }
  if (v.u.s.len != 6) return TW_ENOENT;
  size_t keep = derive == TW_KEY_CITY ? 4 : 2;
  memcpy(buf, v.u.s.ptr, keep);
  memset(buf + keep, '0', 6 - keep);
  buf[6] = '\0';
  *key = buf;
  *len = 6;
  return 0;
}

static bool owns(const tw_pipeline_t *p, const char *key, size_t len) {
  return p->n_shards <= 1 || tw_key_shard(key, len, p->n_shards) == p->shard_index;
}

/* The event's institution is this shard's: it counts the event (a secondary copy does not). */
static bool primary(const tw_pipeline_t *p, const tw_event_t *ev) {
  tw_value_t inst = tw_event_get(ev, TW_SLOT_INSTITUTION_ID);
  return inst.kind != TW_V_STR || owns(p, inst.u.s.ptr, inst.u.s.len);
}

unsigned tw_pipeline_route_needs(const tw_pipeline_t *p) {
  unsigned needs = 0;
  for (size_t i = 0; i < tw_rules_n_aggregates(p->rules); i++) {
    const tw_agg_def_t *a = tw_rules_aggregate(p->rules, i);
    if (a->by_derive != TW_KEY_FIELD) needs |= TW_ROUTE_REGION;
    else if (a->by_slot != TW_SLOT_INSTITUTION_ID) needs |= TW_ROUTE_ALL;
  }
  for (size_t i = 0; i < tw_rules_n_rules(p->rules); i++) {
    const tw_rule_t *r = tw_rules_rule(p->rules, i);
    if (r->by_derive != TW_KEY_FIELD) needs |= TW_ROUTE_REGION;
    else if (r->by_slot != TW_SLOT_INSTITUTION_ID) needs |= TW_ROUTE_ALL;
  }
  return needs;
}

/* The 64-bit value DISTINCT counts for one field value: SipHash-2-4 (libsodium shorthash) under
 * a fixed key, so the same value hashes alike in every run and on every shard. */
static int64_t distinct_hash(tw_value_t v) {
  static const unsigned char kKey[crypto_shorthash_KEYBYTES] = {0};
  unsigned char in[9], out[crypto_shorthash_BYTES];
  uint64_t h;
  if (v.kind == TW_V_STR) {
    crypto_shorthash(out, (const unsigned char *)v.u.s.ptr, v.u.s.len, kKey);
  } else {
    in[0] = v.kind;
    for (int i = 0; i < 8; i++) in[1 + i] = (unsigned char)((uint64_t)v.u.i >> (8 * i));
    crypto_shorthash(out, in, sizeof in, kKey);
  }
  memcpy(&h, out, sizeof h);
  return (int64_t)h;
}

static int agg_get_cb(void *ud, size_t agg_index, tw_agg_out_t *out) {
  tw_pipeline_t *p = ud;
  const tw_agg_def_t *a = tw_rules_aggregate(p->rules, agg_index);
  const char *key;
  size_t len;
  if (key_of(p->cur, a->by_slot, a->by_derive, p->keybuf[0], &key, &len) != 0) {
    memset(out, 0, sizeof *out); /* no key: nothing counted, and no value for min, max... */
    return 0;
  }
  tw_state_ref_t ref = agg_ref(p, agg_index);
  if (ref == NO_REF) return tw_state_agg_get(p->state, &a->spec, key, len, p->cur->ts_ms, out);
  return tw_state_agg_get_ref(p->state, ref, key, len, p->cur->ts_ms, out);
}

static int agg_series_cb(void *ud, size_t agg_index, tw_agg_out_t *buf, size_t cap, size_t *n) {
  tw_pipeline_t *p = ud;
  const tw_agg_def_t *a = tw_rules_aggregate(p->rules, agg_index);
  const char *key;
  size_t len;
  if (key_of(p->cur, a->by_slot, a->by_derive, p->keybuf[0], &key, &len) != 0) {
    *n = 0;
    return 0;
  }
  tw_state_ref_t ref = agg_ref(p, agg_index);
  if (ref == NO_REF)
    return tw_state_agg_series(p->state, &a->spec, key, len, p->cur->ts_ms, buf, cap, n);
  return tw_state_agg_series_ref(p->state, ref, key, len, p->cur->ts_ms, buf, cap, n);
}

static tw_eval_ctx_t eval_ctx(tw_pipeline_t *p) {
  tw_eval_ctx_t ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.ev = p->cur;
  ctx.now_ms = p->cur->ts_ms;
  ctx.agg_get = agg_get_cb;
  ctx.agg_series = agg_series_cb;
  ctx.ud = p;
  return ctx;
}

static void log_eval_error(tw_pipeline_t *p, const char *what, const char *name, int rc) {
  p->stats.eval_errors++;
  if (p->stats.eval_errors <= TW_EVAL_ERROR_LOG_MAX) {
    tw_value_t id = tw_event_get(p->cur, TW_SLOT_EVENT_ID);
    fprintf(
        stderr, "tutorwatch: %s '%s' on event '%s': %s%s\n", what, name,
        id.kind == TW_V_STR ? id.u.s.ptr : "?", tw_strerror(rc),
        p->stats.eval_errors == TW_EVAL_ERROR_LOG_MAX ? " (further errors are only counted)" : "");
  }
}

/* agg_key: the key under which event ev feeds aggregate a on this pipeline (buf holds a derived
 * one); false when a is keyed otherwise than this shard's keys or ev has no such key. */
static bool agg_key(const tw_pipeline_t *p, const tw_event_t *ev, const tw_agg_def_t *a,
                    char buf[8], const char **key, size_t *len) {
  return same_key(p, a->by_slot, a->by_derive) &&
         key_of(ev, a->by_slot, a->by_derive, buf, key, len) == 0;
}

/* prefetch_aggregates: start loading the state entries the event's aggregates will update, so
 * their cache misses overlap (tw_state_agg_prefetch). */
static void prefetch_aggregates(tw_pipeline_t *p, const type_plan_t *tp, bool data) {
  for (size_t i = 0; i < tp->n_aggs; i++) {
    const char *key;
    size_t len;
    char buf[8];
    const tw_agg_def_t *a = tw_rules_aggregate(p->rules, tp->aggs[i]);
    tw_state_ref_t ref = agg_ref(p, tp->aggs[i]);
    if (ref != NO_REF && agg_key(p, &p->ev, a, buf, &key, &len))
      tw_state_agg_prefetch_ref(p->state, ref, key, len, data);
  }
}

/* update_aggregates: feed p->cur to every aggregate its type feeds whose key this shard owns. */
static int update_aggregates(tw_pipeline_t *p, const type_plan_t *tp) {
  const tw_event_t *ev = p->cur;
  for (size_t i = 0; i < tp->n_aggs; i++) {
    const tw_agg_def_t *a = tw_rules_aggregate(p->rules, tp->aggs[i]);
    const char *key;
    size_t len;
    char buf[8];
    if (!agg_key(p, ev, a, buf, &key, &len) || !owns(p, key, len)) continue;
    int64_t value = 1;
    if (a->arg_slot >= 0) {
      tw_value_t arg = tw_event_get(ev, a->arg_slot);
      if (arg.kind == TW_V_NULL) continue; /* fn(field) counts only events that carry it */
      value = a->spec.fn == TW_AGG_DISTINCT ? distinct_hash(arg) : arg.u.i;
    }
    if (a->where != NULL) {
      tw_eval_ctx_t ctx = eval_ctx(p);
      tw_value_t v;
      int rc = tw_expr_eval(a->where, &ctx, &v);
      if (rc != 0) {
        log_eval_error(p, "aggregate filter", a->name, rc);
        continue;
      }
      if (v.kind != TW_V_BOOL || !v.u.i) continue;
    }
    tw_state_ref_t ref = agg_ref(p, tp->aggs[i]);
    int rc = ref == NO_REF ? tw_state_agg_add(p->state, &a->spec, key, len, ev->ts_ms, value)
                           : tw_state_agg_add_ref(p->state, ref, key, len, ev->ts_ms, value);
    if (p->observer != NULL && p->observer->agg_added != NULL && (rc == 0 || rc == TW_EOVERFLOW))
      p->observer->agg_added(p->observer->ud, a, key, len, ev, value);
    if (rc == TW_EOVERFLOW || rc == TW_ETOOBIG) { /* a saturated sum; a key over 256 bytes */
      log_eval_error(p, "aggregate", a->name, rc);
    } else if (rc != 0) {
      return rc;
    }
  }
  return 0;
}

static int pend_put(tw_pipeline_t *p, const char *s, size_t len, size_t *off) {
  if (p->pend_cap - p->pend_used < len + 1) {
    size_t cap = p->pend_cap ? p->pend_cap : 65536;
    while (cap - p->pend_used < len + 1) cap *= 2;
    char *nb = realloc(p->pend_buf, cap);
    if (nb == NULL) return TW_ENOMEM;
    p->pend_buf = nb;
    p->pend_cap = cap;
  }
  memcpy(p->pend_buf + p->pend_used, s, len);
  p->pend_buf[p->pend_used + len] = '\0';
  *off = p->pend_used;
  p->pend_used += len + 1;
  return 0;
}

static int stage_alert(tw_pipeline_t *p, const tw_alert_t *a, int json_len) {
  if (p->n_pend == p->cap_pend) {
    size_t cap = p->cap_pend ? 2 * p->cap_pend : 64;
    pending_alert_t *np = realloc(p->pend, cap * sizeof *np);
    if (np == NULL) return TW_ENOMEM;
    p->pend = np;
    p->cap_pend = cap;
  }
  pending_alert_t *pa = &p->pend[p->n_pend];
  pa->alert = *a;
  pa->alert.values = NULL;
  pa->alert.n_values = 0;
  pa->json_len = (size_t)json_len;
  int rc = pend_put(p, p->json, (size_t)json_len, &pa->json_off);
  if (rc == 0) rc = pend_put(p, a->key.ptr, a->key.len, &pa->key_off);
  if (rc == 0) rc = pend_put(p, a->institution_id.ptr, a->institution_id.len, &pa->inst_off);
  if (rc == 0) rc = pend_put(p, a->region.ptr, a->region.len, &pa->region_off);
  if (rc == 0) rc = pend_put(p, a->event_id.ptr, a->event_id.len, &pa->event_id_off);
  if (rc != 0) return rc;
  p->n_pend++;
  return 0;
}

static int fire(tw_pipeline_t *p, const tw_rule_t *r, tw_eval_ctx_t *ctx, const char *key,
                size_t key_len) {
  bool allowed = true;
  int rc =
      tw_state_cooldown(p->state, r->name, key, key_len, p->cur->ts_ms, r->cooldown_ms, &allowed);
  if (rc == TW_ETOOBIG) { /* a key over 256 bytes cannot be kept: counted, the engine goes on */
    log_eval_error(p, "cooldown of rule", r->name, rc);
    return 0;
  }
  if (rc != 0) return rc;
  if (!allowed) {
    p->stats.suppressed++;
    return 0;
  }
  tw_alert_t a;
  memset(&a, 0, sizeof a);
  a.rule = r;
  a.by = r->by_name;
  a.key.ptr = key;
  a.key.len = (uint32_t)key_len;
  a.institution_id = tw_event_get(p->cur, TW_SLOT_INSTITUTION_ID).u.s;
  a.region = tw_event_get(p->cur, TW_SLOT_REGION).u.s;
  a.event_id = tw_event_get(p->cur, TW_SLOT_EVENT_ID).u.s;
  a.event_time_ms = p->cur->ts_ms;
  tw_alert_make_id(&a);
  if (r->message != NULL) {
    size_t n_reads = ctx->n_reads; /* the message's reads are not the condition's */
    rc = tw_template_render(r->message, ctx, a.message, sizeof a.message);
    ctx->n_reads = n_reads;
    if (rc < 0) {
      log_eval_error(p, "message of rule", r->name, rc);
      snprintf(a.message, sizeof a.message, "%s", r->description ? r->description : r->name);
    }
  } else {
    snprintf(a.message, sizeof a.message, "%s", r->description ? r->description : r->name);
  }
  a.values = ctx->reads;
  a.n_values = ctx->n_reads;
  if (p->observer != NULL && p->observer->alert_raised != NULL &&
      (rc = p->observer->alert_raised(p->observer->ud, r, &a, ctx)) != 0)
    return rc;
  int len = tw_alert_to_json(&a, p->json, sizeof p->json);
  if (len < 0) return len;
  uint64_t seq = 0;
  rc = tw_state_journal_append(p->state, p->json, (size_t)len, &seq);
  if (rc != 0) return rc;
  a.seq = seq;
  p->stats.alerts++;
  return stage_alert(p, &a, len);
}

/* evaluate_rules: every rule p->cur's type triggers, for the keys this shard owns. */
static int evaluate_rules(tw_pipeline_t *p, const type_plan_t *tp) {
  for (size_t i = 0; i < tp->n_rules; i++) {
    const tw_rule_t *r = tw_rules_rule(p->rules, tp->rules[i]);
    const char *key;
    size_t key_len;
    if (!same_key(p, r->by_slot, r->by_derive)) continue;
    if (key_of(p->cur, r->by_slot, r->by_derive, p->keybuf[1], &key, &key_len) != 0) continue;
    if (!owns(p, key, key_len)) continue;
    tw_eval_ctx_t ctx = eval_ctx(p);
    tw_value_t v;
    int rc = tw_expr_eval(r->when, &ctx, &v);
    if (rc != 0) {
      if (rc == TW_ESTATE || rc == TW_ENOMEM) return rc;
      log_eval_error(p, "rule", r->name, rc);
      continue;
    }
    if (v.kind != TW_V_BOOL || !v.u.i) continue;
    rc = fire(p, r, &ctx, key, key_len);
    if (rc != 0) return rc;
  }
  return 0;
}

/* ---- alerts re-entering as events ------------------------------------------------------------ */

/* labels_text: a rule's labels as "name=value" pairs in name order joined by ";" into buf. */
static size_t labels_text(const tw_rule_t *r, char *buf, size_t cap) {
  size_t used = 0;
  const char *prev = NULL;
  buf[0] = '\0';
  for (size_t k = 0; k < r->n_labels; k++) { /* selection by name: labels are few */
    const tw_label_t *best = NULL;
    for (size_t j = 0; j < r->n_labels; j++) {
      const tw_label_t *l = &r->labels[j];
      if (prev != NULL && strcmp(l->key, prev) <= 0) continue;
      if (best == NULL || strcmp(l->key, best->key) < 0) best = l;
    }
    if (best == NULL) break;
    int n = snprintf(buf + used, cap - used, "%s%s=%s", used ? ";" : "", best->key, best->value);
    if (n < 0 || (size_t)n >= cap - used) {
      buf[used] = '\0'; /* cut at a whole pair */
      break;
    }
    used += (size_t)n;
    prev = best->key;
  }
  return used;
}

/* reenter: the alerts staged from index `from` on become events of the internal `alert` type and
 * feed the aggregates and rules on `alert` (composite rules), in the order they were raised.
 * Alerts raised by rules on `alert` do not re-enter again, so this ends. */
static int reenter(tw_pipeline_t *p, size_t from) {
  if (p->alert_type < 0) return 0;
  const type_plan_t *tp = &p->plan[p->alert_type];
  if (tp->n_aggs == 0 && tp->n_rules == 0) return 0;
  size_t until = p->n_pend;
  tw_event_t *saved = p->cur, *e = &p->alert_ev;
  int rc = 0;
  for (size_t i = from; i < until && rc == 0; i++) {
    const pending_alert_t *pa = &p->pend[i];
    const tw_alert_t *a = &pa->alert;
    /* Copy what the event needs out of pend_buf, which may move while its rules fire. */
    char *w = e->arena;
    size_t cap = e->arena_cap, used = 0;
    const char *parts[4] = {a->alert_id, p->pend_buf + pa->inst_off, p->pend_buf + pa->region_off,
                            a->rule->name};
    tw_str_t str[4];
    for (int k = 0; k < 4; k++) {
      size_t n = strlen(parts[k]);
      if (used + n + 1 > cap) return TW_ENOMEM;
      memcpy(w + used, parts[k], n + 1);
      str[k].ptr = w + used;
      str[k].len = (uint32_t)n;
      used += n + 1;
    }
    if (cap - used < 2) return TW_ENOMEM;
    size_t ll = labels_text(a->rule, w + used, cap - used < 1024 ? cap - used : 1024);
    const char *sev = tw_severity_name(a->rule->severity);
    e->type = (uint16_t)p->alert_type;
    e->ts_ms = a->event_time_ms;
    e->present = 0;
    e->f[TW_SLOT_EVENT_ID] = tw_value_str(str[0].ptr, str[0].len);
    e->f[TW_SLOT_TYPE] = tw_value_str("alert", 5);
    e->f[TW_SLOT_TS] = tw_value_int(TW_V_TIME, a->event_time_ms);
    e->present |= (1ull << TW_SLOT_EVENT_ID) | (1ull << TW_SLOT_TYPE) | (1ull << TW_SLOT_TS);
    if (str[1].len > 0) {
      e->f[TW_SLOT_INSTITUTION_ID] = tw_value_str(str[1].ptr, str[1].len);
      e->present |= 1ull << TW_SLOT_INSTITUTION_ID;
    }
    if (str[2].len > 0) {
      e->f[TW_SLOT_REGION] = tw_value_str(str[2].ptr, str[2].len);
      e->present |= 1ull << TW_SLOT_REGION;
    }
    e->f[p->slot_rule] = tw_value_str(str[3].ptr, str[3].len);
    e->f[p->slot_severity] = tw_value_str(sev, (uint32_t)strlen(sev));
    e->f[p->slot_labels] = tw_value_str(w + used, (uint32_t)ll);
    e->present |= (1ull << p->slot_rule) | (1ull << p->slot_severity) | (1ull << p->slot_labels);
    p->cur = e;
    p->reenter_from_rule = a->rule;
    p->stats.reentered++;
    rc = update_aggregates(p, tp);
    if (rc == 0) rc = evaluate_rules(p, tp);
    p->cur = saved;
  }
  return rc;
}

/* ---- event time: arrivals, reorder buffer, watermark, suspects --------------------------------
 */

static int64_t wall_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* arrival_push: remember a record read; its number is returned in *seq. */
static int arrival_push(tw_pipeline_t *p, const tw_record_t *rec, uint64_t *seq) {
  if (p->arr_count == p->arr_cap) {
    size_t cap = p->arr_cap ? 2 * p->arr_cap : 4096;
    arrival_t *na = malloc(cap * sizeof *na);
    if (na == NULL) return TW_ENOMEM;
    for (size_t i = 0; i < p->arr_count; i++) na[i] = p->arr[(p->arr_head + i) & (p->arr_cap - 1)];
    free(p->arr);
    p->arr = na;
    p->arr_cap = cap;
    p->arr_head = 0;
  }
  arrival_t *a = &p->arr[(p->arr_head + p->arr_count) & (p->arr_cap - 1)];
  a->offset_bytes = rec->offset_bytes;
  a->line = rec->line;
  a->done = 0;
  *seq = p->arr_base + p->arr_count++;
  return 0;
}

/* arrival_done: the record is finished (processed or rejected); drop finished ones at the head. */
static void arrival_done(tw_pipeline_t *p, uint64_t seq) {
  p->arr[(p->arr_head + (size_t)(seq - p->arr_base)) & (p->arr_cap - 1)].done = 1;
  while (p->arr_count > 0 && p->arr[p->arr_head].done) {
    p->arr_head = (p->arr_head + 1) & (p->arr_cap - 1);
    p->arr_count--;
    p->arr_base++;
  }
}

static int64_t watermark(const tw_pipeline_t *p) {
  int64_t wm = p->have_max ? p->max_seen_ms - p->lateness_ms : INT64_MIN;
  return wm > p->wm_floor_ms ? wm : p->wm_floor_ms;
}

/* process_event: aggregates and rules for the event in p->ev (in event-time order). */
/* Little-endian integers of meta records. */
static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* ---- scheduled rules (every) ---------------------------------------------------------------- */

/* The first interval boundary after t, aligned to local midnight (Asia/Shanghai, UTC+8). */
static int64_t boundary_after(int64_t t, int64_t every_ms) {
  int64_t local = t + TW_STATE_TZ_DEFAULT_MS;
  int64_t n = local / every_ms;
  if (local < 0 && local % every_ms != 0) n--;
  return (n + 1) * every_ms - TW_STATE_TZ_DEFAULT_MS;
}

static void sweep_meta_name(const tw_rule_t *r, char *buf, size_t cap) {
  snprintf(buf, cap, "sweep:%s", r->name);
}

/* put_last_sweep: stage the time of the last sweep of r (or of its start) for the next commit. */
static void put_last_sweep(tw_pipeline_t *p, const tw_rule_t *r, int64_t at) {
  char name[80];
  uint8_t b[8];
  sweep_meta_name(r, name, sizeof name);
  put_le(b, (uint64_t)at, 8);
  tw_state_meta_put(p->state, name, b, sizeof b); /* a name too long only loses the resume */
}

/* register_for_sweeps: remember the institution of the event being processed, and start the
 * sweep clocks at the first event (the earliest, since events are processed in time order). */
static int register_for_sweeps(tw_pipeline_t *p) {
  tw_value_t inst = tw_event_get(&p->ev, TW_SLOT_INSTITUTION_ID);
  if (!owns(p, inst.u.s.ptr, inst.u.s.len)) return 0; /* a secondary copy */
  int rc =
      p->inst_ref == NO_REF
          ? tw_state_agg_add(p->state, &kInstitutions, inst.u.s.ptr, inst.u.s.len, p->ev.ts_ms, 1)
          : tw_state_agg_add_ref(p->state, p->inst_ref, inst.u.s.ptr, inst.u.s.len, p->ev.ts_ms, 1);
  if (rc != 0) return rc;
  for (size_t i = 0; p->sweep_clocks_unset > 0 && i < tw_rules_n_rules(p->rules); i++) {
    const tw_rule_t *r = tw_rules_rule(p->rules, i);
    if (r->every_ms > 0 && p->next_sweep_ms[i] == INT64_MIN) {
      p->next_sweep_ms[i] = boundary_after(p->ev.ts_ms, r->every_ms);
      put_last_sweep(p, r, p->next_sweep_ms[i] - r->every_ms); /* the clock survives restarts */
      p->sweep_clocks_unset--;
    }
  }
  return 0;
}

/* One institution of a sweep: the rule's condition at the sweep time, on a synthetic event that
 * carries the institution, its region (positions 3-8 of its credit code) and the sweep time. */
/* sweep_rule_key: evaluate scheduled rule r for one institution at the sweep time. */
static int sweep_rule_key(tw_pipeline_t *p, const tw_rule_t *r, const char *key, size_t len) {
  tw_event_t *e = &p->sweep_ev;
  int n = snprintf(e->arena, e->arena_cap, "every:%s:%lld", r->name, (long long)p->sweep_at_ms);
  if (n < 0 || (size_t)n + len + 16 > e->arena_cap) return 0;
  char *inst = e->arena + n + 1, *region = inst + len + 1;
  memcpy(inst, key, len);
  inst[len] = '\0';
  memcpy(region, len == TW_CREDIT_CODE_LEN ? key + 2 : "000000", 6);
  region[6] = '\0';
  if (!tw_region_valid(region, 6)) memcpy(region, "000000", 7);
  e->present = 0;
  e->f[TW_SLOT_EVENT_ID] = tw_value_str(e->arena, (uint32_t)n);
  e->f[TW_SLOT_INSTITUTION_ID] = tw_value_str(inst, (uint32_t)len);
  e->f[TW_SLOT_REGION] = tw_value_str(region, 6);
  e->f[TW_SLOT_TS] = tw_value_int(TW_V_TIME, p->sweep_at_ms);
  e->present = (1u << TW_SLOT_EVENT_ID) | (1u << TW_SLOT_INSTITUTION_ID) | (1u << TW_SLOT_REGION) |
               (1u << TW_SLOT_TS);
  e->ts_ms = p->sweep_at_ms;
  p->cur = e;
  tw_eval_ctx_t ctx = eval_ctx(p);
  tw_value_t v;
  size_t from = p->n_pend;
  int rc = tw_expr_eval(r->when, &ctx, &v);
  if (rc != 0) {
    if (rc == TW_ESTATE || rc == TW_ENOMEM) {
      p->cur = &p->ev;
      return rc;
    }
    log_eval_error(p, "rule", r->name, rc);
    rc = 0;
  } else if (v.kind == TW_V_BOOL && v.u.i) {
    rc = fire(p, r, &ctx, inst, len);
    if (rc == 0) rc = reenter(p, from);
  }
  p->cur = &p->ev;
  return rc;
}

/* sweep_collect: tw_state_agg_keys' callback: append one institution to the sweep's list. */
static int sweep_collect(void *ud, const char *key, size_t len) {
  tw_pipeline_t *p = ud;
  if (p->sk_n + 2 > p->sk_off_cap) {
    size_t n = p->sk_off_cap ? p->sk_off_cap * 2 : 1024;
    size_t *o = realloc(p->sk_off, n * sizeof *o);
    if (o == NULL) return TW_ENOMEM;
    p->sk_off = o;
    p->sk_off_cap = n;
  }
  if (p->sk_len + len > p->sk_cap) {
    size_t n = p->sk_cap ? p->sk_cap : 16384;
    while (n < p->sk_len + len) n *= 2;
    char *b = realloc(p->sk_bytes, n);
    if (b == NULL) return TW_ENOMEM;
    p->sk_bytes = b;
    p->sk_cap = n;
  }
  if (p->sk_n == 0) p->sk_off[0] = 0;
  if (len) memcpy(p->sk_bytes + p->sk_len, key, len);
  p->sk_len += len;
  p->sk_off[++p->sk_n] = p->sk_len;
  return 0;
}

/* sweep_institutions: list the institutions, then evaluate every rule of the sweep for each, in
 * rule order, with the state of the next four being fetched into the cache meanwhile
 * (tw_state_key_prefetch): an institution's state is read once for all the rules. */
static int sweep_institutions(tw_pipeline_t *p) {
  p->sk_n = 0;
  p->sk_len = 0;
  int rc = tw_state_agg_keys(p->state, &kInstitutions, sweep_collect, p);
  if (rc != 0) return rc;
  for (size_t i = 0; i < p->sk_n; i++) {
    for (int ahead = 1; ahead <= 4; ahead++) {
      if (i + (size_t)ahead >= p->sk_n) break;
      size_t j = i + (size_t)ahead;
      tw_state_key_prefetch(p->state, p->sk_bytes + p->sk_off[j], p->sk_off[j + 1] - p->sk_off[j],
                            4 - ahead);
    }
    for (size_t d = 0; d < p->n_sweep_due; d++) {
      rc = sweep_rule_key(p, tw_rules_rule(p->rules, p->sweep_due[d]), p->sk_bytes + p->sk_off[i],
                          p->sk_off[i + 1] - p->sk_off[i]);
      if (rc != 0) return rc;
    }
  }
  return 0;
}

/* The time rule i's next sweep runs at, given limit (a jump in time sweeps its end only). */
static int64_t sweep_time(const tw_pipeline_t *p, size_t i, int64_t limit) {
  const tw_rule_t *r = tw_rules_rule(p->rules, i);
  int64_t at = p->next_sweep_ms[i];
  if ((limit - at) / r->every_ms > TW_SWEEP_CATCH_UP)
    at = boundary_after(limit - r->every_ms, r->every_ms);
  return at;
}

/* run_sweeps: every sweep due at or before limit, earliest first. The scheduled rules due at the
 * same time sweep together: one pass over the institutions, each institution's rules in rule
 * order, so alerts of one sweep time come out by institution, then rule. The alerts themselves
 * are those of one rule after the other: a scheduled rule is keyed by institution, reads only
 * aggregates of its own key, and an alert feeds only rules and aggregates keyed as the rule that
 * raised it (docs/rules.md), so no institution's sweep sees another's. */
static int run_sweeps(tw_pipeline_t *p, int64_t limit) {
  size_t n_rules = tw_rules_n_rules(p->rules);
  for (;;) {
    if (p->stop != NULL && *p->stop) return 0; /* interrupted: the clocks say where it stopped */
    size_t pick = SIZE_MAX;
    for (size_t i = 0; i < n_rules; i++)
      if (tw_rules_rule(p->rules, i)->every_ms > 0 && p->next_sweep_ms[i] != INT64_MIN &&
          p->next_sweep_ms[i] <= limit &&
          (pick == SIZE_MAX || p->next_sweep_ms[i] < p->next_sweep_ms[pick]))
        pick = i;
    if (pick == SIZE_MAX) return 0;
    int64_t at = sweep_time(p, pick, limit);
    p->n_sweep_due = 0;
    for (size_t i = 0; i < n_rules; i++)
      if (tw_rules_rule(p->rules, i)->every_ms > 0 && p->next_sweep_ms[i] != INT64_MIN &&
          p->next_sweep_ms[i] <= limit && sweep_time(p, i, limit) == at)
        p->sweep_due[p->n_sweep_due++] = i;
    p->sweep_at_ms = at;
    int rc = sweep_institutions(p);
    if (rc != 0) return rc;
    p->uncommitted = true;
    for (size_t k = 0; k < p->n_sweep_due; k++) {
      const tw_rule_t *r = tw_rules_rule(p->rules, p->sweep_due[k]);
      put_last_sweep(p, r, at);
      p->next_sweep_ms[p->sweep_due[k]] = at + r->every_ms;
    }
  }
}

/* sweeps_init: the sweep clocks of the current rules: after the last sweep committed, or unknown
 * until the first event. */
static int sweeps_init(tw_pipeline_t *p) {
  size_t n = tw_rules_n_rules(p->rules);
  free(p->next_sweep_ms);
  free(p->sweep_due);
  p->has_every = false;
  p->sweep_due = malloc((n ? n : 1) * sizeof *p->sweep_due);
  p->next_sweep_ms = malloc((n ? n : 1) * sizeof *p->next_sweep_ms);
  if (p->next_sweep_ms == NULL || p->sweep_due == NULL) return TW_ENOMEM;
  p->sweep_clocks_unset = 0;
  for (size_t i = 0; i < n; i++) {
    const tw_rule_t *r = tw_rules_rule(p->rules, i);
    p->next_sweep_ms[i] = INT64_MIN;
    if (r->every_ms <= 0) continue;
    p->has_every = true;
    char name[80];
    uint8_t b[8];
    size_t len = 0;
    sweep_meta_name(r, name, sizeof name);
    if (tw_state_meta_get(p->state, name, b, sizeof b, &len) == 0 && len == 8)
      p->next_sweep_ms[i] = (int64_t)get_le(b, 8) + r->every_ms;
    else
      p->sweep_clocks_unset++;
  }
  return 0;
}

static int process_event(tw_pipeline_t *p) {
  /* Dedup here, in event-time order, after the skew checks: an id is recorded only when its event
   * is processed, so a restart that re-reads held (unprocessed) records does not skip them. */
  const type_plan_t *tp = &p->plan[p->ev.type];
  prefetch_aggregates(p, tp, false);
  tw_value_t id = tw_event_get(&p->ev, TW_SLOT_EVENT_ID);
  bool dup = false;
  int drc = p->dedup_horizon_ms == 0 ? 0
                                     : tw_state_dedup(p->state, id.u.s.ptr, id.u.s.len, p->ev.ts_ms,
                                                      p->dedup_horizon_ms, &dup);
  if (drc == TW_ESTATE || drc == TW_ENOMEM) return drc;
  bool counted = primary(p, &p->ev); /* a secondary copy is counted by its primary shard */
  if (drc == 0 && dup) {
    if (counted) p->stats.duplicates++;
    return 0;
  }
  if (counted) p->stats.accepted++;
  if (counted && p->record != NULL) {
    /* TW_ETOOBIG cannot happen for a decoded event; such an event would not be recorded */
    int rrc =
        tw_recorder_append(p->record, p->n_shards > 1 ? p->shard_index : 0, p->schema, &p->ev);
    if (rrc != 0 && rrc != TW_ETOOBIG) return rrc;
  }
  p->uncommitted = true;
  p->cur = &p->ev;
  int rc = p->has_every ? register_for_sweeps(p) : 0;
  if (rc != 0) return rc;
  prefetch_aggregates(p, tp, true);
  size_t from = p->n_pend;
  rc = update_aggregates(p, tp);
  if (rc == 0) rc = evaluate_rules(p, tp);
  if (rc == 0 && p->n_pend > from) rc = reenter(p, from);
  return rc;
}

/* release: process, in event-time order, every held event at or before limit, and run the
 * scheduled sweeps due at or before sweep_limit between them (a sweep at S sees every event at or
 * before S and none after). */
static int release(tw_pipeline_t *p, int64_t limit, int64_t sweep_limit) {
  int64_t ts;
  uint64_t seq;
  while (tw_order_peek_ts(p->order, &ts) == 0 && ts <= limit) {
    /* Interrupted with scheduled rules: stop here, between events, so no event is processed
     * ahead of a sweep due before it; what is held is read again by the next run. */
    if (p->has_every && p->stop != NULL && *p->stop) return 0;
    if (p->has_every) {
      int rc = run_sweeps(p, ts - 1 < sweep_limit ? ts - 1 : sweep_limit);
      if (rc != 0) return rc;
    }
    tw_order_pop(p->order, &p->ev, &seq);
    int rc = process_event(p);
    if (rc != 0) return rc;
    arrival_done(p, seq);
  }
  return p->has_every ? run_sweeps(p, sweep_limit) : 0;
}

/* place: the event in p->ev is accepted as evidence of time: too late, late, or held until the
 * watermark passes it. */
static int place(tw_pipeline_t *p, const tw_record_t *rec, uint64_t seq) {
  int64_t ts = p->ev.ts_ms, wm = watermark(p);
  if (wm != INT64_MIN && p->retention_ms > 0 && ts < wm - p->retention_ms) {
    char msg[200];
    snprintf(msg, sizeof msg,
             "event time is %lld ms behind the watermark, beyond the longest window (%lld ms): "
             "state no longer holds its buckets",
             (long long)(wm - ts), (long long)p->retention_ms);
    if (!(rec->flags & TW_REC_SECONDARY)) p->stats.too_late++;
    arrival_done(p, seq);
    return dead_letter(p, rec, "too_late", "ts", msg);
  }
  if (wm != INT64_MIN && ts < wm) {
    if (!(rec->flags & TW_REC_SECONDARY)) p->stats.late++;
    int rc = process_event(p);
    arrival_done(p, seq);
    return rc;
  }
  int rc = tw_order_push(p->order, &p->ev, seq);
  if (rc != 0) return rc;
  if (!p->have_max || ts > p->max_seen_ms) p->max_seen_ms = ts;
  p->have_max = true;
  p->recent[p->n_recent++ % TW_RECENT] = ts;
  return 0;
}

/* How far ahead of the newest event time an event may jump before it is held as a suspect. */
static int64_t suspect_margin(const tw_pipeline_t *p) {
  size_t n = p->n_recent < TW_RECENT ? p->n_recent : TW_RECENT;
  int64_t oldest = p->max_seen_ms;
  for (size_t i = 0; i < n; i++)
    if (p->recent[i] < oldest) oldest = p->recent[i];
  int64_t span = p->max_seen_ms - oldest;
  int64_t m = span > INT64_MAX / TW_SPAN_FACTOR ? INT64_MAX : span * TW_SPAN_FACTOR;
  if (m < TW_SUSPECT_MIN_JUMP_MS) m = TW_SUSPECT_MIN_JUMP_MS;
  return m > p->skew_ms ? m : p->skew_ms;
}

static void suspect_free(suspect_t *s) {
  free(s->raw);
  free(s->origin);
  memset(s, 0, sizeof *s);
}

static tw_record_t suspect_record(const suspect_t *s) {
  tw_record_t r;
  memset(&r, 0, sizeof r);
  r.data = s->raw;
  r.len_bytes = s->raw_len;
  r.full_len_bytes = s->full_len_bytes;
  r.format = s->format;
  r.origin = s->origin;
  r.offset_bytes = s->offset_bytes;
  r.line = s->line;
  r.flags = s->flags;
  return r;
}

/* suspect_refuse: dead-letter suspect i as future_skew and remove it. */
static int suspect_refuse(tw_pipeline_t *p, size_t i, const char *why) {
  suspect_t *s = &p->suspects[i];
  tw_record_t r = suspect_record(s);
  char msg[256];
  snprintf(msg, sizeof msg,
           "event time jumps %lld ms ahead of the stream (newest accepted event time) and %s",
           (long long)(s->ts_ms - p->max_seen_ms), why);
  if (!(r.flags & TW_REC_SECONDARY)) p->stats.future_skew++;
  int rc = dead_letter(p, &r, "future_skew", "ts", msg);
  arrival_done(p, s->arrival);
  suspect_free(s);
  p->suspects[i] = p->suspects[--p->n_suspects];
  return rc;
}

/* Does an event at ts confirm a held jump (it lands within the skew before it, or after it)? */
/* Does an event at ts confirm held jump s? An ordinary event confirms it when the stream has
 * come within the suspect's tolerance before it (or past it). An event that is itself a jump
 * (jump_ms > 0, the current margin) confirms only a suspect within that margin of it: two jumps
 * to about the same time agree, while a clock in 2099 does not vouch for one in 2030. */
static bool confirms(const suspect_t *s, int64_t ts, int64_t jump_ms) {
  if (jump_ms > 0) return ts - s->ts_ms <= jump_ms && s->ts_ms - ts <= jump_ms;
  return ts >= s->ts_ms - s->tolerance_ms;
}

static bool corroborates(const tw_pipeline_t *p, int64_t ts, int64_t jump_ms) {
  for (size_t i = 0; i < p->n_suspects; i++)
    if (confirms(&p->suspects[i], ts, jump_ms)) return true;
  return false;
}

static int suspect_hold(tw_pipeline_t *p, const tw_record_t *rec, uint64_t seq,
                        int64_t tolerance_ms) {
  if (p->n_suspects == TW_SUSPECTS_MAX) { /* refuse the one held longest */
    size_t oldest = 0;
    for (size_t i = 1; i < p->n_suspects; i++)
      if (p->suspects[i].arrival < p->suspects[oldest].arrival) oldest = i;
    int rc = suspect_refuse(p, oldest, "too many suspects are held");
    if (rc != 0) return rc;
  }
  suspect_t *s = &p->suspects[p->n_suspects];
  memset(s, 0, sizeof *s);
  s->raw = malloc(rec->len_bytes ? rec->len_bytes : 1);
  s->origin = strdup(rec->origin ? rec->origin : "-");
  if (s->raw == NULL || s->origin == NULL) {
    suspect_free(s);
    return TW_ENOMEM;
  }
  memcpy(s->raw, rec->data, rec->len_bytes);
  s->raw_len = rec->len_bytes;
  s->full_len_bytes = rec->full_len_bytes;
  s->offset_bytes = rec->offset_bytes;
  s->line = rec->line;
  s->format = rec->format;
  s->flags = rec->flags & TW_REC_SECONDARY;
  s->arrival = seq;
  s->ts_ms = p->ev.ts_ms;
  s->tolerance_ms = tolerance_ms;
  p->n_suspects++;
  return 0;
}

static int decode_record(tw_pipeline_t *p, const tw_record_t *rec, tw_decode_error_t *derr);

/* confirm_suspects: an event at ts corroborates the held jumps it lands within the skew before,
 * or after: they are accepted, earliest first, before that event is placed (so they are not
 * counted late against it). Overwrites p->ev. */
static int confirm_suspects(tw_pipeline_t *p, int64_t ts, int64_t jump_ms) {
  for (;;) {
    size_t pick = p->n_suspects;
    for (size_t i = 0; i < p->n_suspects; i++)
      if (confirms(&p->suspects[i], ts, jump_ms) &&
          (pick == p->n_suspects || p->suspects[i].ts_ms < p->suspects[pick].ts_ms))
        pick = i;
    if (pick == p->n_suspects) return 0;
    suspect_t *s = &p->suspects[pick];
    tw_decode_error_t derr;
    tw_record_t r = suspect_record(s);
    uint64_t seq = s->arrival;
    int rc = decode_record(p, &r, &derr);
    if (rc == 0) rc = place(p, &r, seq);
    suspect_free(s);
    p->suspects[pick] = p->suspects[--p->n_suspects];
    if (rc != 0) return rc;
  }
}

/* age_suspects: an accepted event stayed behind every held jump; refuse those it was the
 * TW_SUSPECT_PATIENCE-th to contradict. */
static int age_suspects(tw_pipeline_t *p) {
  for (size_t i = 0; i < p->n_suspects;) {
    if (++p->suspects[i].age >= TW_SUSPECT_PATIENCE) {
      int rc = suspect_refuse(p, i, "no later event confirmed it");
      if (rc != 0) return rc;
      continue;
    }
    i++;
  }
  return 0;
}

/* decode_record: decode, validate and pseudonymise rec into p->ev. 0, or TW_EINVAL after the
 * record was dead-lettered (with *derr), or an engine failure. */
static int decode_record(tw_pipeline_t *p, const tw_record_t *rec, tw_decode_error_t *derr) {
  int rc;
  memset(derr, 0, sizeof *derr);
  if (rec->format == TW_FORMAT_MSGPACK) {
    rc = tw_decode_msgpack(p->schema, rec->data, rec->len_bytes, &p->ev, derr);
  } else {
    const char *data = rec->data;
    size_t len = rec->len_bytes;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) data += 3, len -= 3; /* UTF-8 BOM */
    rc = tw_decode_json(p->schema, data, len, &p->ev, derr);
  }
  if (rc == TW_ENOMEM) return rc;
  if (rc != 0) {
    if (!derr->reason[0]) snprintf(derr->reason, sizeof derr->reason, "invalid");
    if (!derr->message[0]) snprintf(derr->message, sizeof derr->message, "%s", tw_strerror(rc));
    return TW_EINVAL;
  }
  if (!p->from_record && tw_pseudo_apply(&p->pseudo_key, p->schema, &p->ev) != 0) {
    snprintf(derr->reason, sizeof derr->reason, "too_long");
    snprintf(derr->message, sizeof derr->message, "no room to pseudonymise the event");
    return TW_EINVAL;
  }
  return 0;
}

/* leave_incomplete: a tracked file ends inside this record (it may still be being written): it is
 * neither processed nor dead-lettered, and the committed position stays before it, so a run on
 * the grown file reads it whole. */
static int leave_incomplete(tw_pipeline_t *p, const tw_record_t *rec) {
  p->stats.incomplete++;
  fprintf(stderr,
          "tutorwatch: %s ends inside a record at %s %llu (byte %llu); it is left for a run on the "
          "grown file\n",
          rec->origin ? rec->origin : "the input",
          rec->format == TW_FORMAT_MSGPACK ? "record" : "line", (unsigned long long)rec->line,
          (unsigned long long)rec->offset_bytes);
  return 0;
}

static int admit(tw_pipeline_t *p, const tw_record_t *rec) {
  uint64_t seq;
  int rc = arrival_push(p, rec, &seq);
  if (rc != 0) return rc;
  int tail = (rec->flags & TW_REC_UNTERMINATED) && p->input_fd >= 0;
  if (tail && (rec->flags & TW_REC_BROKEN)) return leave_incomplete(p, rec);
  if (rec->flags & (TW_REC_TRUNCATED | TW_REC_BROKEN)) {
    char msg[256];
    if (rec->flags & TW_REC_TRUNCATED)
      snprintf(msg, sizeof msg, "record of %llu bytes exceeds the %u-byte limit of one event",
               (unsigned long long)rec->full_len_bytes, TW_EVENT_MAX_BYTES);
    else
      snprintf(msg, sizeof msg,
               "malformed msgpack at byte %llu: no object boundary can be found after it, so "
               "the rest of this input is not read",
               (unsigned long long)rec->offset_bytes);
    arrival_done(p, seq);
    return dead_letter(p, rec, rec->reason ? rec->reason : "too_long", NULL, msg);
  }
  tw_decode_error_t derr;
  rc = decode_record(p, rec, &derr);
  if (rc != 0) {
    if (rc != TW_EINVAL) return rc;
    /* A last line without its newline that is not whole JSON: the rest is probably still to come.
     */
    if (tail && strcmp(derr.reason, "invalid_json") == 0) return leave_incomplete(p, rec);
    arrival_done(p, seq);
    return dead_letter(p, rec, derr.reason, derr.field, derr.message);
  }
  if (tw_event_get(&p->ev, TW_SLOT_EVENT_ID).u.s.len == 0) {
    arrival_done(p, seq);
    return dead_letter(p, rec, "missing_field", "event_id",
                       "event_id is empty: it is the dedup key and must name the event");
  }
  int64_t ts = p->ev.ts_ms, jump_ms = 0;
  if (p->live) {
    int64_t now = wall_now_ms();
    if (ts > now + p->skew_ms) {
      char msg[200];
      snprintf(msg, sizeof msg,
               "event time is %lld ms ahead of the wall clock, more than the allowed %lld ms",
               (long long)(ts - now), (long long)p->skew_ms);
      if (!(rec->flags & TW_REC_SECONDARY)) p->stats.future_skew++;
      arrival_done(p, seq);
      return dead_letter(p, rec, "future_skew", "ts", msg);
    }
  } else if (p->from_record) {
    /* recorded events passed these checks when they were recorded */
  } else if (!p->have_max && p->n_suspects == 0) {
    /* The first event of a replay (or after a restart) has nothing to be checked against: it
     * waits for the next one, which confirms it if it lands within a day before it or after it,
     * so one wrong clock at the start cannot make the whole stream late. */
    return suspect_hold(p, rec, seq, TW_SUSPECT_MIN_JUMP_MS);
  } else if (p->have_max && ts > p->max_seen_ms) {
    int64_t margin = suspect_margin(p);
    if (ts - p->max_seen_ms > margin) {
      if (!corroborates(p, ts, margin)) return suspect_hold(p, rec, seq, p->skew_ms);
      jump_ms = margin;
    }
  }
  if (p->n_suspects > 0 && corroborates(p, ts, jump_ms)) {
    /* The held jumps go first; then this record is decoded again (p->ev was reused). */
    rc = confirm_suspects(p, ts, jump_ms);
    if (rc == 0) rc = decode_record(p, rec, &derr);
    if (rc != 0) return rc;
  }
  rc = place(p, rec, seq);
  if (rc == 0 && p->n_suspects > 0) rc = age_suspects(p);
  if (rc == 0) rc = release(p, watermark(p), watermark(p));
  return rc;
}

int tw_pipeline_record(void *ud, const tw_record_t *rec) {
  tw_pipeline_t *p = ud;
  if (rec->offset_bytes < p->skip_below_offset && p->input_fd >= 0) return 0;
  if (p->stream_tracked && rec->line <= p->stream_done) return 0;
  if (!(rec->flags & TW_REC_SECONDARY)) p->stats.read++; /* the primary copy counts it */
  p->input_offset = rec->offset_bytes + rec->full_len_bytes;
  p->input_line = rec->line;
  if (p->live) p->last_record_wall_ms = wall_now_ms();
  if (p->failed) return p->failed;
  int rc = admit(p, rec);
  if (rc != 0) return p->failed = rc;
  if (++p->pending_events >= p->batch_events) return tw_pipeline_commit(p);
  return 0;
}

int tw_pipeline_flush(tw_pipeline_t *p) {
  if (p->failed) return p->failed;
  /* At the end, a jump that no later event stayed behind is accepted if it is at most 30 days (the
   * input may simply have ended after a quiet spell); one that later events contradicted, or a
   * longer one, is refused. Earliest first, so each is judged against what was accepted. */
  while (p->n_suspects > 0) {
    size_t pick = 0;
    for (size_t i = 1; i < p->n_suspects; i++)
      if (p->suspects[i].ts_ms < p->suspects[pick].ts_ms) pick = i;
    suspect_t *s = &p->suspects[pick];
    if (s->age > 0 || (p->have_max && s->ts_ms - p->max_seen_ms > TW_SUSPECT_EOF_MAX_JUMP_MS)) {
      int rc = suspect_refuse(p, pick,
                              s->age > 0 ? "the later events stayed behind it"
                                         : "the input ended before any event confirmed a jump "
                                           "of more than 30 days");
      if (rc != 0) return rc;
      continue;
    }
    tw_decode_error_t derr;
    tw_record_t r = suspect_record(s);
    uint64_t seq = s->arrival;
    int rc = decode_record(p, &r, &derr);
    if (rc == 0) rc = place(p, &r, seq);
    suspect_free(s);
    p->suspects[pick] = p->suspects[--p->n_suspects];
    if (rc != 0) return rc;
  }
  /* Scheduled sweeps run up to the newest event time: in a replay time ends with the input. */
  return release(p, INT64_MAX, p->have_max ? p->max_seen_ms : INT64_MIN);
}

int64_t tw_pipeline_max_event_time(const tw_pipeline_t *p) {
  return p->have_max ? p->max_seen_ms : INT64_MIN;
}

int tw_pipeline_sweep_until(tw_pipeline_t *p, int64_t limit_ms) {
  if (p->failed) return p->failed;
  return p->has_every ? run_sweeps(p, limit_ms) : 0;
}

int tw_pipeline_tick(tw_pipeline_t *p, int64_t wall_ms) {
  /* A pause in a live stream ends the wait: what is held is processed now, as if every event up
   * to the newest had arrived. When the stream is live (its newest event is within a day of the
   * wall clock), event time then follows the wall clock, so scheduled rules ("no lesson for 7
   * days") fire while nothing arrives; an old stream replayed through a live engine is not
   * pushed ahead of itself. */
  int64_t idle = wall_ms - p->last_record_wall_ms;
  if (!p->live || !p->have_max || idle < TW_IDLE_MS) return 0;
  if (p->idle_flush_ms > 0 && idle >= p->idle_flush_ms && p->max_seen_ms > p->wm_floor_ms)
    p->wm_floor_ms = p->max_seen_ms;
  int64_t wall_wm = wall_ms - p->lateness_ms;
  if (p->max_seen_ms >= wall_wm - TW_LIVE_STREAM_MS && wall_wm > p->wm_floor_ms)
    p->wm_floor_ms = wall_wm;
  int rc = release(p, watermark(p), watermark(p));
  /* What the pause released is committed (and its alerts published) now, not at the next event,
   * which may not come for a long time. */
  if (rc == 0 && p->uncommitted) rc = tw_pipeline_commit(p);
  return rc;
}

/* ---- input position ------------------------------------------------------------------------ */

/* Hash len bytes of fd at offset (BLAKE2b-128). Returns 0 or TW_EIO on a short read. */
static int hash_range(int fd, uint64_t offset, size_t len, uint8_t out[16]) {
  unsigned char buf[TW_INPUT_PROBE_BYTES];
  size_t got = 0;
  while (got < len) {
    ssize_t r = pread(fd, buf + got, len - got, (off_t)(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return TW_EIO;
    got += (size_t)r;
  }
  crypto_generichash(out, 16, buf, len, NULL, 0);
  return 0;
}

/* The record: version(1) head_len(4) head_hash(16) tail_hash(16) offset(8) line(8), LE. */
#define INPUT_META_BYTES (1 + 4 + 16 + 16 + 8 + 8)

static size_t tail_len(uint64_t offset) {
  return offset < TW_INPUT_PROBE_BYTES ? (size_t)offset : TW_INPUT_PROBE_BYTES;
}

/* The committed position: before the oldest record not yet finished (held in the reorder buffer
 * or as a suspect), else after the last record read. A resume re-reads from there; events that
 * were processed after it are then skipped by the dedup by event_id. */
static void resume_point(const tw_pipeline_t *p, uint64_t *offset, uint64_t *line) {
  if (p->arr_count > 0) {
    const arrival_t *a = &p->arr[p->arr_head];
    *offset = a->offset_bytes;
    *line = a->line > 0 ? a->line - 1 : 0;
  } else {
    *offset = p->input_offset;
    *line = p->input_line;
  }
}

static int put_input_position(tw_pipeline_t *p) {
  uint8_t rec[INPUT_META_BYTES];
  uint64_t offset, line;
  resume_point(p, &offset, &line);
  size_t n = tail_len(offset);
  rec[0] = TW_INPUT_META_VERSION;
  put_le(rec + 1, p->input_head_len, 4);
  memcpy(rec + 5, p->input_head_hash, 16);
  if (hash_range(p->input_fd, offset - n, n, rec + 21) != 0) return TW_EIO;
  put_le(rec + 37, offset, 8);
  put_le(rec + 45, line, 8);
  return tw_state_meta_put(p->state, TW_INPUT_META, rec, sizeof rec);
}

int tw_pipeline_track_input(tw_pipeline_t *p, const char *path, uint64_t *start_offset_bytes,
                            uint64_t *start_line) {
  struct stat st;
  *start_offset_bytes = 0;
  *start_line = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return TW_EIO;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return TW_EIO;
  }
  if (p->input_fd >= 0) close(p->input_fd);
  p->input_fd = fd;
  p->input_head_len = (uint32_t)tail_len((uint64_t)st.st_size);
  int rc = hash_range(fd, 0, p->input_head_len, p->input_head_hash);
  if (rc != 0) return rc;
  uint8_t rec[INPUT_META_BYTES];
  size_t len = 0;
  rc = tw_state_meta_get(p->state, TW_INPUT_META, rec, sizeof rec, &len);
  if (rc == TW_ENOENT) return 0;
  if (rc != 0) return rc == TW_ETOOBIG ? 0 : rc;
  if (len != sizeof rec || rec[0] != TW_INPUT_META_VERSION) return 0;
  uint32_t head_len = (uint32_t)get_le(rec + 1, 4);
  uint64_t offset = get_le(rec + 37, 8);
  uint8_t h[16];
  if (offset > (uint64_t)st.st_size || head_len > (uint64_t)st.st_size) return 0;
  if (hash_range(fd, 0, head_len, h) != 0 || memcmp(h, rec + 5, 16) != 0) return 0;
  size_t n = tail_len(offset);
  if (hash_range(fd, offset - n, n, h) != 0 || memcmp(h, rec + 21, 16) != 0) return 0;
  p->input_offset = offset;
  p->input_line = get_le(rec + 45, 8);
  *start_offset_bytes = offset;
  *start_line = p->input_line;
  p->skip_below_offset = offset;
  return 0;
}

int tw_pipeline_track_stream(tw_pipeline_t *p, uint64_t *done_seq) {
  uint8_t pos[8];
  size_t len = 0;
  *done_seq = 0;
  int rc = tw_state_meta_get(p->state, TW_STREAM_META, pos, sizeof pos, &len);
  if (rc == TW_ENOENT) rc = 0, len = 0;
  if (rc != 0) return rc;
  if (len != 0 && len != sizeof pos) return TW_ESTATE;
  p->stream_tracked = true;
  p->stream_done = len == sizeof pos ? get_le(pos, 8) : 0;
  if (p->stream_done > p->input_line) p->input_line = p->stream_done;
  *done_seq = p->stream_done;
  return 0;
}

uint64_t tw_pipeline_stream_done(const tw_pipeline_t *p) {
  return p->stream_tracked ? p->stream_done : 0;
}

int tw_pipeline_checkpoint(tw_pipeline_t *p, const char *dir, uint64_t *done_seq) {
  int rc = tw_pipeline_commit(p);
  if (rc == 0) rc = tw_state_copy_compact(p->state, dir);
  if (rc == 0 && done_seq != NULL) *done_seq = tw_pipeline_stream_done(p);
  return rc;
}

/* ---- group commit and publication ----------------------------------------------------------- */

static void publish(tw_pipeline_t *p) {
  tw_outputs_t *o = p->out;
  pthread_mutex_lock(&o->lock);
  for (size_t i = 0; i < p->n_pend; i++) {
    pending_alert_t *pa = &p->pend[i];
    tw_alert_t *a = &pa->alert;
    a->key.ptr = p->pend_buf + pa->key_off;
    a->institution_id.ptr = p->pend_buf + pa->inst_off;
    a->region.ptr = p->pend_buf + pa->region_off;
    a->event_id.ptr = p->pend_buf + pa->event_id_off;
    for (size_t s = 0; s < o->n_sinks; s++) {
      if (o->sinks[s]->vt->write(o->sinks[s], a, p->pend_buf + pa->json_off, pa->json_len) != 0)
        p->stats.sink_errors++;
    }
    p->published_seq = a->seq;
  }
  for (size_t s = 0; s < o->n_sinks; s++)
    if (o->sinks[s]->vt->flush(o->sinks[s]) != 0) p->stats.sink_errors++;
  pthread_mutex_unlock(&o->lock);
  p->n_pend = 0;
  p->pend_used = 0;
}

/* flush_dead_letter: make the dead-letter lines of every record up to the position about to be
 * committed durable first, so a crash can repeat a line but never lose one. */
static int flush_dead_letter(tw_pipeline_t *p) {
  tw_outputs_t *o = p->out;
  int rc = 0;
  pthread_mutex_lock(&o->lock);
  if (fflush(o->dead_letter) != 0 || (!o->no_sync && fdatasync(fileno(o->dead_letter)) != 0 &&
                                      errno != EINVAL && errno != EROFS)) {
    fprintf(stderr, "tutorwatch: cannot write the dead-letter file '%s': %s\n", o->dead_letter_path,
            strerror(errno));
    rc = TW_EIO;
  }
  pthread_mutex_unlock(&o->lock);
  return rc;
}

int tw_pipeline_commit(tw_pipeline_t *p) {
  if (p->failed) return p->failed;
  /* The alerts handed to the sinks since the last commit are recorded now: a crash before the
   * next commit makes a restart hand them over again (at least once, never lost). */
  uint8_t pub[8];
  put_le(pub, p->published_seq, 8);
  int rc = flush_dead_letter(p);
  if (rc == 0) rc = tw_state_meta_put(p->state, TW_PUBLISHED_META, pub, sizeof pub);
  if (rc == 0 && p->input_fd >= 0) rc = put_input_position(p);
  uint64_t stream_done = p->stream_done;
  if (rc == 0 && p->stream_tracked) {
    uint64_t offset, line;
    resume_point(p, &offset, &line);
    if (line > stream_done) stream_done = line;
    uint8_t pos[8];
    put_le(pos, stream_done, 8);
    rc = tw_state_meta_put(p->state, TW_STREAM_META, pos, sizeof pos);
  }
  /* The record holds every event the state is about to commit (a restart may record some again;
   * a replay deduplicates them as the engine did). */
  if (rc == 0 && p->record != NULL)
    rc = tw_recorder_sync(p->record, p->n_shards > 1 ? p->shard_index : 0);
  if (rc == 0) rc = tw_state_commit(p->state);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch: group commit failed: %s\n", tw_strerror(rc));
    return p->failed = rc;
  }
  p->stats.commits++;
  p->stream_done = stream_done;
  uint64_t committed = p->pending_events;
  p->pending_events = 0;
  p->uncommitted = false;
  publish(p);
  if (p->on_commit != NULL) {
    uint64_t offset, line;
    resume_point(p, &offset, &line);
    p->on_commit(p->on_commit_ud, offset);
  }
  /* Entries no query can reach any more: nothing older than watermark - longest window is
   * accepted (too_late), so series that ended before that minus their own window are dropped.
   * After the alerts have left (housekeeping must not delay them), and in proportion to the
   * commit: a serving engine commits small batches often, and a fixed share per commit made
   * small commits pay for a scan their few events did not need. */
  int64_t wm = watermark(p);
  int64_t horizon = (wm == INT64_MIN || p->retention_ms == 0) ? INT64_MIN : wm - p->retention_ms;
  uint64_t budget = committed * TW_EVICT_PER_EVENT;
  if (budget < TW_EVICT_MIN_PER_COMMIT) budget = TW_EVICT_MIN_PER_COMMIT;
  if (budget > TW_EVICT_PER_COMMIT) budget = TW_EVICT_PER_COMMIT;
  rc = tw_state_evict(p->state, horizon, (size_t)budget);
  if (rc != 0 && rc != TW_EINVAL) return rc;
  return 0;
}

/* One journal record handed to the sinks again: the fields the sinks need, from its JSON. */
static int republish_one(void *ud, uint64_t seq, const char *json, size_t len) {
  tw_pipeline_t *p = ud;
  json_error_t jerr;
  json_t *o = json_loadb(json, len, 0, &jerr);
  if (o == NULL) return TW_ESTATE;
  tw_rule_t rule;
  tw_alert_t a;
  memset(&rule, 0, sizeof rule);
  memset(&a, 0, sizeof a);
  const char *sev = json_string_value(json_object_get(o, "severity"));
  rule.name = json_string_value(json_object_get(o, "rule"));
  for (int s = TW_SEV_INFO; s <= TW_SEV_CRITICAL; s++)
    if (sev != NULL && strcmp(sev, tw_severity_name((tw_severity_t)s)) == 0)
      rule.severity = (tw_severity_t)s;
  const char *region = json_string_value(json_object_get(o, "region"));
  const char *inst = json_string_value(json_object_get(o, "institution_id"));
  const char *key = json_string_value(json_object_get(o, "key"));
  const char *id = json_string_value(json_object_get(o, "alert_id"));
  if (rule.name == NULL || region == NULL || inst == NULL || key == NULL || id == NULL) {
    json_decref(o);
    return TW_ESTATE;
  }
  a.rule = &rule;
  a.region = tw_value_str(region, (uint32_t)strlen(region)).u.s;
  a.institution_id = tw_value_str(inst, (uint32_t)strlen(inst)).u.s;
  a.key = tw_value_str(key, (uint32_t)strlen(key)).u.s;
  snprintf(a.alert_id, sizeof a.alert_id, "%s", id);
  a.seq = seq;
  tw_outputs_t *out = p->out;
  pthread_mutex_lock(&out->lock);
  for (size_t s = 0; s < out->n_sinks; s++)
    if (out->sinks[s]->vt->write(out->sinks[s], &a, json, len) != 0) p->stats.sink_errors++;
  pthread_mutex_unlock(&out->lock);
  json_decref(o);
  p->published_seq = seq;
  p->republished++;
  return 0;
}

int tw_pipeline_republish(tw_pipeline_t *p, uint64_t *count) {
  uint8_t pub[8];
  size_t len = 0;
  tw_state_stats_t st;
  *count = 0;
  tw_state_stats(p->state, &st);
  int rc = tw_state_meta_get(p->state, TW_PUBLISHED_META, pub, sizeof pub, &len);
  if (rc == TW_ENOENT) {
    p->published_seq = st.journal_seq; /* a state from before this record: nothing to redo */
    return 0;
  }
  if (rc != 0 || len != sizeof pub) return rc != 0 ? rc : TW_ESTATE;
  p->published_seq = get_le(pub, 8);
  if (p->published_seq >= st.journal_seq) return 0;
  rc = tw_state_journal_foreach(p->state, p->published_seq, republish_one, p);
  pthread_mutex_lock(&p->out->lock);
  for (size_t s = 0; s < p->out->n_sinks; s++)
    if (p->out->sinks[s]->vt->flush(p->out->sinks[s]) != 0) p->stats.sink_errors++;
  pthread_mutex_unlock(&p->out->lock);
  *count = p->republished;
  return rc;
}

static int reload_with(tw_pipeline_t *p, tw_ruleset_t *fresh, char *msg, size_t cap);

int tw_pipeline_reload(tw_pipeline_t *p, const char *rules_path, char *msg, size_t cap) {
  tw_ruleset_t *fresh = NULL;
  tw_rule_error_t err;
  memset(&err, 0, sizeof err);
  tw_rules_load_opts_t lopts = {.set = p->params_set, .n_set = p->n_params_set};
  int rc = tw_rules_load_ex(rules_path, NULL, 0, p->schema, &lopts, &fresh, &err);
  if (rc != 0) {
    located(msg, cap, err.file[0] ? err.file : rules_path, err.line, err.col, err.message);
    return rc;
  }
  return reload_with(p, fresh, msg, cap);
}

int tw_pipeline_reload_buffer(tw_pipeline_t *p, const char *name, const char *data, size_t len,
                              char *msg, size_t cap) {
  tw_ruleset_t *fresh = NULL;
  tw_rule_error_t err;
  memset(&err, 0, sizeof err);
  tw_rules_load_opts_t lopts = {.set = p->params_set, .n_set = p->n_params_set};
  int rc = tw_rules_load_ex(name, data, len, p->schema, &lopts, &fresh, &err);
  if (rc != 0) {
    located(msg, cap, err.file[0] ? err.file : name, err.line, err.col, err.message);
    return rc;
  }
  return reload_with(p, fresh, msg, cap);
}

static int reload_with(tw_pipeline_t *p, tw_ruleset_t *fresh, char *msg, size_t cap) {
  int rc;
  /* Alerts staged for the sinks point at the old rules: make them durable and hand them over
   * before the old rules go. */
  rc = tw_pipeline_commit(p);
  if (rc != 0) {
    tw_rules_free(fresh);
    snprintf(msg, cap, "group commit before the reload failed: %s", tw_strerror(rc));
    return rc;
  }
  /* Report which aggregates keep their state (same definition, so the same state name). */
  size_t used = (size_t)snprintf(msg, cap, "%zu rules, %zu aggregates;", tw_rules_n_rules(fresh),
                                 tw_rules_n_aggregates(fresh));
  size_t kept = 0, started = 0;
  for (int pass = 0; pass < 2; pass++) {
    int any = 0;
    for (size_t i = 0; i < tw_rules_n_aggregates(fresh); i++) {
      const tw_agg_def_t *a = tw_rules_aggregate(fresh, i);
      int same = 0;
      for (size_t j = 0; j < tw_rules_n_aggregates(p->rules) && !same; j++)
        same = strcmp(tw_rules_aggregate(p->rules, j)->spec.name, a->spec.name) == 0;
      if (same != (pass == 0)) continue;
      if (pass == 0)
        kept++;
      else
        started++;
      if (used < cap)
        used += (size_t)snprintf(msg + used, cap - used, "%s %s",
                                 any         ? ","
                                 : pass == 0 ? " keep state:"
                                 : kept > 0  ? "; start empty:"
                                             : " start empty:",
                                 a->name);
      any = 1;
    }
  }
  if (kept + started == 0 && used < cap) snprintf(msg + used, cap - used, " no aggregates");
  tw_ruleset_t *old = p->rules;
  p->rules = fresh;
  plan_free(p);
  rc = plan_build(p);
  if (rc != 0) { /* out of memory: go back to the old rules, whose plan fits */
    p->rules = old;
    plan_free(p);
    tw_rules_free(fresh);
    snprintf(msg, cap, "out of memory while planning the new rules; the old rules go on");
    (void)plan_build(p); /* smaller than the plan that just failed, or the same */
    return TW_ENOMEM;
  }
  tw_rules_free(old);
  return sweeps_init(p);
}

uint64_t tw_pipeline_pending(const tw_pipeline_t *p) {
  return p->pending_events;
}

void tw_pipeline_stats(const tw_pipeline_t *p, tw_pipeline_stats_t *out) {
  *out = p->stats;
  out->held = tw_order_size(p->order) + p->n_suspects;
  if (p->state != NULL) {
    tw_state_stats_t ss;
    tw_state_stats(p->state, &ss);
    out->evicted = ss.evicted_expired + ss.evicted_clean;
  }
}

const char *tw_pipeline_dead_letter_path(const tw_pipeline_t *p) {
  return p->out->dead_letter_path;
}

static int pipeline_close(tw_pipeline_t *p, bool commit) {
  int rc = 0;
  if (p == NULL) return 0;
  if (commit && p->state != NULL && p->rules != NULL && p->out != NULL) rc = tw_pipeline_commit(p);
  if (p->out == &p->own_out) {
    int orc = tw_outputs_close(&p->own_out);
    if (orc != 0 && rc == 0) rc = orc;
  }
  plan_free(p);
  free(p->pend);
  free(p->pend_buf);
  tw_order_free(p->order);
  for (size_t i = 0; i < p->n_suspects; i++) suspect_free(&p->suspects[i]);
  free(p->arr);
  tw_event_fini(&p->ev);
  tw_event_fini(&p->sweep_ev);
  tw_event_fini(&p->alert_ev);
  free(p->next_sweep_ms);
  free(p->sweep_due);
  free(p->sk_bytes);
  free(p->sk_off);
  if (p->input_fd >= 0) close(p->input_fd);
  tw_state_close(p->state);
  tw_rules_free(p->rules);
  tw_schema_free(p->schema);
  sodium_memzero(&p->pseudo_key, sizeof p->pseudo_key);
  free(p);
  return rc;
}

int tw_pipeline_close(tw_pipeline_t *p) {
  return pipeline_close(p, true);
}

void tw_pipeline_abandon(tw_pipeline_t *p) {
  (void)pipeline_close(p, false);
}
