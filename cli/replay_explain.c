/*
 * replay_explain.c: explanations of alerts for `tutorwatch replay --explain` (see
 * replay_explain.h).
 *
 * The contributions of each (aggregate, key) are kept in a ring of the latest
 * TW_EXPLAIN_EVENTS, in an open-addressing table that grows ×2 (load ≤ 0.5); a key longer than
 * TRACK_KEY_MAX bytes is not tracked (its explanation says so). An explanation is built inside
 * the pipeline, while the state is exactly what the rule read; it holds no pointer into the
 * pipeline afterwards. Every number in an explanation is an integer or a string (decimals are
 * written as the alerts write them, as text), so the SHA-256 of a part can be checked by any
 * JSON library that writes compact, key-sorted JSON.
 */
#include <errno.h>
#include <sodium.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "replay_explain.h"
#include "tw_error.h"
#include "tw_event.h"

#define TRACK_KEY_MAX 64
#define TRACE_NODES 64
#define TZ_MIN 480 /* times are shown in Asia/Shanghai, as in alerts */

typedef struct contrib {
  char event_id[TW_EVENT_ID_MAX + 1];
  int64_t ts_ms, value;
} contrib_t;

typedef struct track {
  const char *agg; /* aggregate name, owned by the pipeline's ruleset (lives as long as it) */
  char key[TRACK_KEY_MAX];
  uint8_t key_len;
  uint32_t n;     /* in the ring, ≤ TW_EXPLAIN_EVENTS */
  uint32_t head;  /* next slot to write */
  uint64_t total; /* contributions ever */
  int64_t dropped_ts_ms; /* newest event time pushed out of the ring; INT64_MIN when none */
  contrib_t ring[TW_EXPLAIN_EVENTS];
} track_t;

struct tw_explain {
  const tw_ruleset_t *rs;
  const char *rules_path;
  const char *const *ids;
  size_t n_ids;
  uint8_t *id_found;
  bool all;
  tw_explain_keep_cb keep;
  void *keep_ud;
  tw_pipeline_observer_t obs;
  track_t **slots;
  size_t cap, n;
  json_t *items; /* array of {"alert": line, "explanation": {...}} */
  json_t *whens; /* rule name → its `when` text as written in the file (positions refer to it) */
  int failed;
  tw_trace_node_t nodes[TRACE_NODES];
};

static void load_whens(tw_explain_t *x);

static uint64_t hash_of(const char *agg, const char *key, size_t len) {
  uint64_t h = 14695981039346656037ULL;
  for (const char *p = agg; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ULL;
  h = (h ^ 0xff) * 1099511628211ULL;
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)key[i]) * 1099511628211ULL;
  return h;
}

static track_t **slot_of(track_t **slots, size_t cap, const char *agg, const char *key,
                         size_t len) {
  size_t i = (size_t)hash_of(agg, key, len) & (cap - 1);
  for (;; i = (i + 1) & (cap - 1)) {
    track_t *t = slots[i];
    if (t == NULL || (t->key_len == len && memcmp(t->key, key, len) == 0 &&
                      (t->agg == agg || strcmp(t->agg, agg) == 0)))
      return &slots[i];
  }
}

static int grow(tw_explain_t *x) {
  size_t cap = x->cap ? 2 * x->cap : 1024;
  track_t **ns = calloc(cap, sizeof *ns);
  if (ns == NULL) return TW_ENOMEM;
  for (size_t i = 0; i < x->cap; i++)
    if (x->slots[i] != NULL)
      *slot_of(ns, cap, x->slots[i]->agg, x->slots[i]->key, x->slots[i]->key_len) = x->slots[i];
  free(x->slots);
  x->slots = ns;
  x->cap = cap;
  return 0;
}

static const track_t *find_track(const tw_explain_t *x, const char *agg, const char *key,
                                 size_t len) {
  if (x->cap == 0 || len > TRACK_KEY_MAX) return NULL;
  return *slot_of(x->slots, x->cap, agg, key, len);
}

static void on_agg_added(void *ud, const tw_agg_def_t *agg, const char *key, size_t key_len,
                         const tw_event_t *ev, int64_t value) {
  tw_explain_t *x = ud;
  if (x->failed || key_len > TRACK_KEY_MAX) return;
  if ((x->n + 1) * 2 > x->cap && grow(x) != 0) {
    x->failed = TW_ENOMEM;
    return;
  }
  track_t **s = slot_of(x->slots, x->cap, agg->name, key, key_len);
  if (*s == NULL) {
    track_t *t = calloc(1, sizeof *t);
    if (t == NULL) {
      x->failed = TW_ENOMEM;
      return;
    }
    t->agg = agg->name;
    t->dropped_ts_ms = INT64_MIN;
    memcpy(t->key, key, key_len);
    t->key_len = (uint8_t)key_len;
    *s = t;
    x->n++;
  }
  track_t *t = *s;
  contrib_t *c = &t->ring[t->head];
  if (t->n == TW_EXPLAIN_EVENTS && c->ts_ms > t->dropped_ts_ms) t->dropped_ts_ms = c->ts_ms;
  tw_value_t id = tw_event_get(ev, TW_SLOT_EVENT_ID);
  size_t il = id.kind == TW_V_STR ? id.u.s.len : 0;
  if (il > TW_EVENT_ID_MAX) il = TW_EVENT_ID_MAX;
  if (il > 0) memcpy(c->event_id, id.u.s.ptr, il);
  c->event_id[il] = '\0';
  c->ts_ms = ev->ts_ms;
  c->value = value;
  t->head = (t->head + 1) % TW_EXPLAIN_EVENTS;
  if (t->n < TW_EXPLAIN_EVENTS) t->n++;
  t->total++;
}

/* ---- JSON of values ---------------------------------------------------------------------- */

static json_t *time_json(int64_t ms) {
  char b[40];
  if (tw_format_rfc3339(ms, TZ_MIN, b, sizeof b) < 0) return json_integer((json_int_t)ms);
  return json_string(b);
}

static const char *kind_name(int k) {
  switch ((tw_vkind_t)k) {
    case TW_V_BOOL:
      return "bool";
    case TW_V_INT:
      return "int";
    case TW_V_MONEY:
      return "money_fen";
    case TW_V_DURATION:
      return "duration_ms";
    case TW_V_TIME:
      return "time";
    case TW_V_STR:
      return "string";
    case TW_V_DEC:
      return "dec";
    default:
      return "null";
  }
}

static json_t *value_json(tw_value_t v) {
  switch ((tw_vkind_t)v.kind) {
    case TW_V_BOOL:
      return json_boolean(v.u.i != 0);
    case TW_V_INT:
    case TW_V_MONEY:
    case TW_V_DURATION:
      return json_integer((json_int_t)v.u.i);
    case TW_V_TIME:
      return time_json(v.u.i);
    case TW_V_STR:
      return json_stringn(v.u.s.ptr, v.u.s.len);
    case TW_V_DEC: {
      char d[64];
      snprintf(d, sizeof d, "%.6f", v.u.d);
      return json_string(d); /* text, as alerts round it: hashes stay portable */
    }
    default:
      return json_null();
  }
}

static const char *fn_name(tw_agg_fn_t fn) {
  static const char *const kNames[] = {"count", "sum",      "avg",   "min",
                                       "max",   "distinct", "first", "last"};
  return (unsigned)fn < sizeof kNames / sizeof kNames[0] ? kNames[fn] : "?";
}

static json_t *duration_json(int64_t ms) {
  char b[32];
  if (ms % 86400000 == 0)
    snprintf(b, sizeof b, "%lldd", (long long)(ms / 86400000));
  else if (ms % 3600000 == 0)
    snprintf(b, sizeof b, "%lldh", (long long)(ms / 3600000));
  else if (ms % 1000 == 0)
    snprintf(b, sizeof b, "%llds", (long long)(ms / 1000));
  else
    snprintf(b, sizeof b, "%lldms", (long long)ms);
  return json_string(b);
}

/* The aggregate a read names: "complaints_7d", or a series function "mean_of(daily_paid)". */
static const tw_agg_def_t *agg_named(const tw_ruleset_t *rs, const char *name) {
  const char *open = strchr(name, '(');
  size_t len = strlen(name);
  if (open != NULL && len > 0 && name[len - 1] == ')') {
    len = len - (size_t)(open + 1 - name) - 1;
    name = open + 1;
  }
  for (size_t i = 0; i < tw_rules_n_aggregates(rs); i++) {
    const tw_agg_def_t *a = tw_rules_aggregate(rs, i);
    if (strlen(a->name) == len && memcmp(a->name, name, len) == 0) return a;
  }
  return NULL;
}

/* aggregate_json: an aggregate the condition read: its definition, window bounds and value, and
 * the contributions in the window that the explainer remembers (the latest ones). */
static json_t *aggregate_json(const tw_explain_t *x, const tw_agg_def_t *a, const char *read_name,
                              tw_value_t value, const tw_alert_t *al, json_t *all_events) {
  json_t *o = json_object();
  int64_t now = al->event_time_ms, w = a->spec.window_ms;
  json_object_set_new(o, "name", json_string(read_name));
  json_object_set_new(o, "fn", json_string(fn_name(a->spec.fn)));
  json_object_set_new(o, "by", json_string(a->by_name));
  json_object_set_new(o, "key", json_stringn(al->key.ptr, al->key.len));
  json_object_set_new(o, "window", w == 0 ? json_string("all") : duration_json(w));
  /* (now - W, now]: the sliding window the value covers (docs/engine.md: up to one bucket
   * older at its far end) */
  json_object_set_new(o, "window_after", w == 0 ? json_null() : time_json(now - w));
  json_object_set_new(o, "window_until", time_json(now));
  json_object_set_new(o, "value", value_json(value));
  json_object_set_new(o, "type", json_string(kind_name(value.kind)));
  const track_t *t = find_track(x, a->name, al->key.ptr, al->key.len);
  json_t *ev = json_array();
  uint64_t listed = 0;
  bool older_in_window = false;
  if (t != NULL) {
    for (uint32_t k = 0; k < t->n; k++) { /* oldest first */
      const contrib_t *c = &t->ring[(t->head + TW_EXPLAIN_EVENTS - t->n + k) % TW_EXPLAIN_EVENTS];
      if (w != 0 && c->ts_ms <= now - w) continue;
      if (c->ts_ms > now) continue;
      json_t *e = json_object();
      json_object_set_new(e, "event_id", json_string(c->event_id));
      json_object_set_new(e, "event_time", time_json(c->ts_ms));
      json_object_set_new(e, "value", json_integer((json_int_t)c->value));
      json_array_append(ev, e);
      if (all_events != NULL) {
        json_t *copy = json_deep_copy(e);
        json_object_set_new(copy, "aggregate", json_string(read_name));
        json_array_append_new(all_events, copy);
      }
      json_decref(e);
      listed++;
    }
    /* an event pushed out of the ring was in the window: the list misses some */
    older_in_window = t->total > t->n && (w == 0 || t->dropped_ts_ms > now - w);
  }
  json_object_set_new(o, "events", ev);
  json_object_set_new(o, "events_listed", json_integer((json_int_t)listed));
  if (t == NULL) {
    json_object_set_new(o, "events_note",
                        json_string(al->key.len > TRACK_KEY_MAX ? "key too long to track"
                                                                : "no event fed it for this key"));
  } else if (older_in_window) {
    char note[160];
    if (a->spec.fn == TW_AGG_COUNT && value.kind == TW_V_INT && (uint64_t)value.u.i > listed)
      snprintf(note, sizeof note,
               "%llu earlier events in the window are not listed (the list "
               "holds the latest %d)",
               (unsigned long long)((uint64_t)value.u.i - listed), TW_EXPLAIN_EVENTS);
    else
      snprintf(note, sizeof note,
               "earlier events in the window are not listed (the list holds "
               "the latest %d of %llu that fed this key)",
               TW_EXPLAIN_EVENTS, (unsigned long long)t->total);
    json_object_set_new(o, "events_note", json_string(note));
  }
  return o;
}

static int on_alert_raised(void *ud, const tw_rule_t *rule, const tw_alert_t *a,
                           const tw_eval_ctx_t *ctx) {
  tw_explain_t *x = ud;
  if (x->failed) return 0;
  if (!x->keep(x->keep_ud, a)) return 0;
  if (!x->all) {
    size_t i = 0;
    for (; i < x->n_ids; i++)
      if (strcmp(x->ids[i], a->alert_id) == 0) break;
    if (i == x->n_ids) return 0;
    x->id_found[i] = 1;
  }
  char line[TW_ALERT_JSON_MAX];
  int len = tw_alert_to_json(a, line, sizeof line);
  if (len < 0) return 0;
  tw_eval_ctx_t c = *ctx;
  size_t n = 0;
  tw_value_t result;
  int erc = tw_expr_eval_trace(rule->when, &c, x->nodes, TRACE_NODES, &n, &result);
  json_t *o = json_object();
  json_object_set_new(o, "alert_id", json_string(a->alert_id));
  json_object_set_new(o, "rule", json_string(rule->name));
  if (rule->description) json_object_set_new(o, "description", json_string(rule->description));
  if (rule->source) json_object_set_new(o, "source", json_string(rule->source));
  json_object_set_new(o, "severity", json_string(tw_severity_name(rule->severity)));
  json_object_set_new(o, "by", json_string(rule->by_name));
  json_object_set_new(o, "key", json_stringn(a->key.ptr, a->key.len));
  json_object_set_new(o, "institution_id",
                      json_stringn(a->institution_id.ptr, a->institution_id.len));
  json_object_set_new(o, "region", json_stringn(a->region.ptr, a->region.len));
  json_object_set_new(o, "event_time", time_json(a->event_time_ms));
  json_object_set_new(o, "message", json_string(a->message));
  json_t *trig = json_object();
  json_object_set_new(trig, "event_id", json_stringn(a->event_id.ptr, a->event_id.len));
  json_object_set_new(trig, "event_time", time_json(a->event_time_ms));
  if (rule->every_ms > 0) {
    json_object_set_new(trig, "kind", json_string("scheduled sweep"));
    json_object_set_new(trig, "every", duration_json(rule->every_ms));
  } else {
    tw_value_t ty = tw_event_get(ctx->ev, TW_SLOT_TYPE);
    json_object_set_new(trig, "kind", json_string("event"));
    if (ty.kind == TW_V_STR)
      json_object_set_new(trig, "type", json_stringn(ty.u.s.ptr, ty.u.s.len));
  }
  json_object_set_new(o, "trigger", trig);
  json_object_set_new(o, "rules_file", json_string(x->rules_path));
  json_object_set_new(o, "rules_sha256", json_string(tw_rules_hash(x->rs)));
  if (rule->cooldown_ms > 0) json_object_set_new(o, "cooldown", duration_json(rule->cooldown_ms));
  json_t *cond = json_object(), *subs = json_array();
  json_object_set_new(cond, "text", json_string(n > 0 ? x->nodes[0].text : ""));
  json_t *src = json_object_get(x->whens, rule->name);
  if (src != NULL) json_object_set(cond, "source", src);
  json_object_set_new(cond, "value", erc == 0 ? value_json(result) : json_null());
  for (size_t i = 0; i < n; i++) {
    const tw_trace_node_t *t = &x->nodes[i];
    json_t *s = json_object();
    json_object_set_new(s, "depth", json_integer(t->depth));
    json_object_set_new(s, "pos", json_integer((json_int_t)t->pos));
    json_object_set_new(s, "text", json_string(t->text));
    json_object_set_new(s, "evaluated", json_boolean(t->evaluated));
    if (t->evaluated) {
      json_object_set_new(s, "value", value_json(t->value));
      json_object_set_new(s, "type", json_string(kind_name(t->value.kind)));
    }
    if (t->error != 0) json_object_set_new(s, "error", json_string(tw_strerror(t->error)));
    json_array_append_new(subs, s);
  }
  json_object_set_new(cond, "subexpressions", subs);
  json_object_set_new(o, "condition", cond);
  json_t *aggs = json_array(), *events = json_array();
  for (size_t i = 0; i < ctx->n_reads; i++) {
    const tw_agg_def_t *ad = agg_named(x->rs, ctx->reads[i].name);
    if (ad == NULL) continue; /* a field of the event */
    json_array_append_new(
        aggs, aggregate_json(x, ad, ctx->reads[i].name, ctx->reads[i].value, a, events));
  }
  json_object_set_new(o, "aggregates", aggs);
  json_t *item = json_object();
  json_object_set_new(item, "alert", json_stringn(line, (size_t)len));
  json_object_set_new(item, "explanation", o);
  json_object_set_new(item, "events", events);
  if (json_array_append_new(x->items, item) != 0) x->failed = TW_ENOMEM;
  return 0;
}

int tw_explain_new(const tw_ruleset_t *rs, const char *rules_path, const char *const *ids,
                   size_t n_ids, bool all, tw_explain_keep_cb keep, void *keep_ud,
                   tw_explain_t **out) {
  tw_explain_t *x = calloc(1, sizeof *x);
  if (x == NULL) return TW_ENOMEM;
  x->rs = rs;
  x->rules_path = rules_path;
  x->ids = ids;
  x->n_ids = n_ids;
  x->all = all;
  x->keep = keep;
  x->keep_ud = keep_ud;
  x->id_found = calloc(n_ids + 1, 1);
  x->items = json_array();
  x->whens = json_object();
  if (x->id_found == NULL || x->items == NULL || x->whens == NULL) {
    tw_explain_free(x);
    return TW_ENOMEM;
  }
  x->obs.agg_added = on_agg_added;
  x->obs.alert_raised = on_alert_raised;
  x->obs.ud = x;
  load_whens(x);
  *out = x;
  return 0;
}

const tw_pipeline_observer_t *tw_explain_observer(tw_explain_t *x) {
  return &x->obs;
}

size_t tw_explain_count(const tw_explain_t *x) {
  return json_array_size(x->items);
}

int tw_explain_failed(const tw_explain_t *x) {
  return x->failed;
}

size_t tw_explain_report_missing(const tw_explain_t *x, FILE *err) {
  size_t n = 0;
  for (size_t i = 0; i < x->n_ids; i++)
    if (!x->id_found[i]) {
      fprintf(err,
              "tutorwatch replay: alert %s was not raised by this replay (check the rules, "
              "--set, and the time range and selection)\n",
              x->ids[i]);
      n++;
    }
  return n;
}

int tw_explain_write_lines(const tw_explain_t *x, FILE *out) {
  for (size_t i = 0; i < json_array_size(x->items); i++) {
    json_t *o = json_object_get(json_array_get(x->items, i), "explanation");
    char *s = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    if (s == NULL) return TW_ENOMEM;
    int ok = fputs(s, out) >= 0 && fputc('\n', out) != EOF;
    free(s);
    if (!ok) return TW_EIO;
  }
  return fflush(out) == 0 ? 0 : TW_EIO;
}

static void sha256_hex(const void *data, size_t len, char hex[65]) {
  unsigned char h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(h, data, len);
  sodium_bin2hex(hex, 65, h, sizeof h);
}

/* The SHA-256 of a part as stored: a string's bytes, or compact key-sorted JSON. */
static int part_hash(json_t *part, char hex[65]) {
  if (json_is_string(part)) {
    sha256_hex(json_string_value(part), json_string_length(part), hex);
    return 0;
  }
  char *s = json_dumps(part, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
  if (s == NULL) return TW_ENOMEM;
  sha256_hex(s, strlen(s), hex);
  free(s);
  return 0;
}

static char *read_file(const char *path, size_t *len);

static const yaml_node_t *map_get(yaml_document_t *d, const yaml_node_t *m, const char *key) {
  if (m == NULL || m->type != YAML_MAPPING_NODE) return NULL;
  for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top; p++) {
    const yaml_node_t *k = yaml_document_get_node(d, p->key);
    if (k != NULL && k->type == YAML_SCALAR_NODE && k->data.scalar.length == strlen(key) &&
        memcmp(k->data.scalar.value, key, k->data.scalar.length) == 0)
      return yaml_document_get_node(d, p->value);
  }
  return NULL;
}

/* load_whens: each rule's `when` as written (libyaml's document API: the loader has already
 * accepted this file, so it is at most TW_RULES_MAX_FILE_BYTES and has no aliases). Best effort:
 * an explanation without it still has the canonical text. */
static void load_whens(tw_explain_t *x) {
  size_t len = 0;
  char *data = read_file(x->rules_path, &len);
  if (data == NULL) return;
  yaml_parser_t parser;
  yaml_document_t doc;
  if (!yaml_parser_initialize(&parser)) {
    free(data);
    return;
  }
  yaml_parser_set_input_string(&parser, (const unsigned char *)data, len);
  if (yaml_parser_load(&parser, &doc)) {
    const yaml_node_t *rules = map_get(&doc, yaml_document_get_root_node(&doc), "rules");
    if (rules != NULL && rules->type == YAML_SEQUENCE_NODE)
      for (yaml_node_item_t *it = rules->data.sequence.items.start;
           it < rules->data.sequence.items.top; it++) {
        const yaml_node_t *r = yaml_document_get_node(&doc, *it);
        const yaml_node_t *name = map_get(&doc, r, "name"), *when = map_get(&doc, r, "when");
        if (name == NULL || when == NULL || name->type != YAML_SCALAR_NODE ||
            when->type != YAML_SCALAR_NODE)
          continue;
        char *n = strndup((const char *)name->data.scalar.value, name->data.scalar.length);
        json_t *w = json_stringn((const char *)when->data.scalar.value, when->data.scalar.length);
        if (n != NULL && w != NULL) json_object_set(x->whens, n, w);
        json_decref(w);
        free(n);
      }
    yaml_document_delete(&doc);
  }
  yaml_parser_delete(&parser);
  free(data);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  size_t cap = 65536, n = 0;
  char *b = malloc(cap);
  while (b != NULL) {
    size_t r = fread(b + n, 1, cap - n, f);
    n += r;
    if (n < cap) break;
    if (cap >= TW_RULES_MAX_FILE_BYTES) { /* the loader refuses bigger files */
      free(b);
      b = NULL;
      break;
    }
    char *nb = realloc(b, cap * 2);
    if (nb == NULL) {
      free(b);
      b = NULL;
      break;
    }
    b = nb;
    cap *= 2;
  }
  fclose(f);
  if (b != NULL) *len = n;
  return b;
}

int tw_explain_write_evidence(const tw_explain_t *x, const char *path, json_t *inputs, char *errbuf,
                              size_t errcap) {
  size_t rlen = 0;
  char *rules = read_file(x->rules_path, &rlen);
  if (rules == NULL) {
    snprintf(errbuf, errcap, "cannot read the rule file '%s' for the evidence pack", x->rules_path);
    return TW_EIO;
  }
  char hex[65];
  int rc = 0;
  json_t *pack = json_object(), *alerts = json_array(), *rj = json_object();
  json_object_set_new(pack, "format", json_string("tutorwatch-evidence/1"));
  json_object_set_new(pack, "hash_rule",
                      json_string("sha256 of a string part's bytes; of an object part's compact "
                                  "JSON with keys sorted"));
  if (inputs != NULL) json_object_set(pack, "inputs", inputs);
  json_object_set_new(rj, "path", json_string(x->rules_path));
  json_t *text = json_stringn(rules, rlen);
  if (text == NULL) text = json_string("(the rule file is not valid UTF-8)");
  json_object_set_new(rj, "text", text);
  part_hash(text, hex);
  json_object_set_new(rj, "sha256", json_string(hex));
  json_object_set_new(pack, "rules", rj);
  free(rules);
  for (size_t i = 0; i < json_array_size(x->items) && rc == 0; i++) {
    json_t *it = json_array_get(x->items, i), *one = json_object(), *sums = json_object();
    static const char *const kParts[] = {"alert", "explanation", "events"};
    for (size_t k = 0; k < 3 && rc == 0; k++) {
      json_t *part = json_object_get(it, kParts[k]);
      json_object_set(one, kParts[k], part);
      rc = part_hash(part, hex);
      json_object_set_new(sums, kParts[k], json_string(hex));
    }
    json_object_set_new(one, "sha256", sums);
    json_array_append_new(alerts, one);
  }
  json_object_set_new(pack, "alerts", alerts);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  if (rc == 0 && json_dump_file(pack, tmp, JSON_INDENT(1) | JSON_SORT_KEYS) != 0) rc = TW_EIO;
  if (rc == 0 && rename(tmp, path) != 0) rc = TW_EIO;
  if (rc != 0) {
    snprintf(errbuf, errcap, "cannot write the evidence pack '%s': %s", path, strerror(errno));
    remove(tmp);
  }
  json_decref(pack);
  return rc;
}

void tw_explain_free(tw_explain_t *x) {
  if (x == NULL) return;
  for (size_t i = 0; i < x->cap; i++) free(x->slots[i]);
  free(x->slots);
  free(x->id_found);
  json_decref(x->items);
  json_decref(x->whens);
  free(x);
}
