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
#include <sys/stat.h>
#include <unistd.h>

#include "tw_alert.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_pipeline.h"
#include "tw_pseudo.h"
#include "tw_rules.h"
#include "tw_schema.h"
#include "tw_state.h"

#define TW_PIPELINE_MAX_SINKS 8
#define TW_DEAD_LETTER_RAW_MAX 4096 /* bytes of the raw input kept in a dead-letter line */
#define TW_EVAL_ERROR_LOG_MAX 20    /* evaluation errors logged in full; the rest are counted */
#define TW_INPUT_PROBE_BYTES 4096   /* bytes hashed at the head and before the resume offset */
#define TW_INPUT_META "input_position"
#define TW_INPUT_META_VERSION 1
#define TW_PUBLISHED_META "published_seq" /* last journal seq handed to the sinks */

/* An alert made durable by the next commit, then published. Strings live in pipeline->pend_buf
 * at the recorded offsets (the buffer may move while it grows). */
typedef struct pending_alert {
  tw_alert_t alert;
  size_t json_off, json_len;
  size_t key_off, inst_off, region_off, event_id_off;
} pending_alert_t;

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
  type_plan_t plan[TW_MAX_TYPES];
  tw_sink_t *sinks[TW_PIPELINE_MAX_SINKS];
  size_t n_sinks;
  char dead_letter_path[4096];
  FILE *dead_letter;
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
  uint64_t input_offset, input_line; /* end of the last processed record */
  bool no_sync;
  uint64_t published_seq; /* last journal sequence number handed to the sinks */
  uint64_t republished;
};

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

static int plan_build(tw_pipeline_t *p) {
  size_t na = tw_rules_n_aggregates(p->rules), nr = tw_rules_n_rules(p->rules);
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
  rc = tw_rules_load(opts->rules_path, p->schema, &p->rules, &rerr);
  if (rc != 0) {
    located(errbuf, errcap, rerr.file[0] ? rerr.file : opts->rules_path, rerr.line, rerr.col,
            rerr.message);
    goto fail;
  }
  tw_state_opts_t sopts = {0};
  sopts.no_sync = opts->no_sync;
  rc = tw_state_open(opts->state_dir, &sopts, &p->state);
  if (rc != 0) {
    errf(errbuf, errcap, "cannot open state directory '%s': %s", opts->state_dir, tw_strerror(rc));
    goto fail;
  }
  rc = tw_pseudo_key_load(opts->state_dir, &p->pseudo_key);
  if (rc != 0) {
    errf(errbuf, errcap, "cannot load the pseudonym key in '%s': %s", opts->state_dir,
         tw_strerror(rc));
    goto fail;
  }
  rc = tw_event_init(&p->ev);
  if (rc != 0) goto fail;
  rc = plan_build(p);
  if (rc != 0) goto fail;
  snprintf(p->dead_letter_path, sizeof p->dead_letter_path, "%s",
           opts->dead_letter_path ? opts->dead_letter_path : "dead-letter.jsonl");
  p->batch_events = opts->batch_events ? opts->batch_events : 10000;
  p->no_sync = opts->no_sync;
  /* Opened now, so an unwritable path stops the start, not the first bad event hours later. */
  p->dead_letter = tw_jsonl_open_append(p->dead_letter_path, NULL);
  if (p->dead_letter == NULL) {
    rc = TW_EIO;
    errf(errbuf, errcap, "cannot open the dead-letter file '%s': %s", p->dead_letter_path,
         strerror(errno));
    goto fail;
  }
  *out = p;
  return 0;
fail:
  if (rc == TW_ENOMEM) errf(errbuf, errcap, "%s%s", "out of memory", "");
  tw_pipeline_close(p);
  return rc;
}

int tw_pipeline_add_sink(tw_pipeline_t *p, tw_sink_t *sink) {
  if (p->n_sinks == TW_PIPELINE_MAX_SINKS) return TW_ETOOBIG;
  p->sinks[p->n_sinks++] = sink;
  return 0;
}

/* ---- dead-letter ---------------------------------------------------------------------------- */

static int dead_letter(tw_pipeline_t *p, const tw_record_t *rec, const char *reason,
                       const char *field, const char *message) {
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
  int ok = fputs(line, p->dead_letter) >= 0 && fputc('\n', p->dead_letter) != EOF;
  free(line);
  if (!ok) {
    fprintf(stderr, "tutorwatch: cannot write the dead-letter file '%s': %s\n", p->dead_letter_path,
            strerror(errno));
    return TW_EIO;
  }
  return 0;
}

/* ---- evaluation ----------------------------------------------------------------------------- */

static int agg_key(const tw_event_t *ev, int slot, const char **key, size_t *len) {
  tw_value_t v = tw_event_get(ev, slot);
  if (v.kind != TW_V_STR) return TW_ENOENT;
  *key = v.u.s.ptr;
  *len = v.u.s.len;
  return 0;
}

static int agg_value_cb(void *ud, size_t agg_index, int64_t *out) {
  tw_pipeline_t *p = ud;
  const tw_agg_def_t *a = tw_rules_aggregate(p->rules, agg_index);
  const char *key;
  size_t len;
  if (agg_key(&p->ev, a->by_slot, &key, &len) != 0) {
    *out = 0;
    return 0;
  }
  return tw_state_agg_value(p->state, &a->spec, key, len, p->ev.ts_ms, out);
}

static void log_eval_error(tw_pipeline_t *p, const char *what, const char *name, int rc) {
  p->stats.eval_errors++;
  if (p->stats.eval_errors <= TW_EVAL_ERROR_LOG_MAX) {
    tw_value_t id = tw_event_get(&p->ev, TW_SLOT_EVENT_ID);
    fprintf(
        stderr, "tutorwatch: %s '%s' on event '%s': %s%s\n", what, name,
        id.kind == TW_V_STR ? id.u.s.ptr : "?", tw_strerror(rc),
        p->stats.eval_errors == TW_EVAL_ERROR_LOG_MAX ? " (further errors are only counted)" : "");
  }
}

static int update_aggregates(tw_pipeline_t *p, const type_plan_t *tp) {
  for (size_t i = 0; i < tp->n_aggs; i++) {
    const tw_agg_def_t *a = tw_rules_aggregate(p->rules, tp->aggs[i]);
    if (a->where != NULL) {
      tw_eval_ctx_t ctx = {.ev = &p->ev, .now_ms = p->ev.ts_ms, .agg_value = agg_value_cb, .ud = p};
      tw_value_t v;
      int rc = tw_expr_eval(a->where, &ctx, &v);
      if (rc != 0) {
        log_eval_error(p, "aggregate filter", a->name, rc);
        continue;
      }
      if (v.kind != TW_V_BOOL || !v.u.i) continue;
    }
    const char *key;
    size_t len;
    if (agg_key(&p->ev, a->by_slot, &key, &len) != 0) continue;
    int64_t value = 1;
    if (a->arg_slot >= 0) {
      tw_value_t arg = tw_event_get(&p->ev, a->arg_slot);
      if (arg.kind == TW_V_NULL) continue;
      value = arg.u.i;
    }
    int rc = tw_state_agg_add(p->state, &a->spec, key, len, p->ev.ts_ms, value);
    if (rc == TW_EOVERFLOW) {
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
      tw_state_cooldown(p->state, r->name, key, key_len, p->ev.ts_ms, r->cooldown_ms, &allowed);
  if (rc != 0) return rc;
  if (!allowed) {
    p->stats.suppressed++;
    return 0;
  }
  tw_alert_t a;
  memset(&a, 0, sizeof a);
  a.rule = r;
  a.by = p->schema->fields[r->by_slot].name;
  a.key.ptr = key;
  a.key.len = (uint32_t)key_len;
  a.institution_id = tw_event_get(&p->ev, TW_SLOT_INSTITUTION_ID).u.s;
  a.region = tw_event_get(&p->ev, TW_SLOT_REGION).u.s;
  a.event_id = tw_event_get(&p->ev, TW_SLOT_EVENT_ID).u.s;
  a.event_time_ms = p->ev.ts_ms;
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
  int len = tw_alert_to_json(&a, p->json, sizeof p->json);
  if (len < 0) return len;
  uint64_t seq = 0;
  rc = tw_state_journal_append(p->state, p->json, (size_t)len, &seq);
  if (rc != 0) return rc;
  a.seq = seq;
  p->stats.alerts++;
  return stage_alert(p, &a, len);
}

static int evaluate_rules(tw_pipeline_t *p, const type_plan_t *tp) {
  for (size_t i = 0; i < tp->n_rules; i++) {
    const tw_rule_t *r = tw_rules_rule(p->rules, tp->rules[i]);
    const char *key;
    size_t key_len;
    if (agg_key(&p->ev, r->by_slot, &key, &key_len) != 0) continue;
    tw_eval_ctx_t ctx = {.ev = &p->ev, .now_ms = p->ev.ts_ms, .agg_value = agg_value_cb, .ud = p};
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

int tw_pipeline_record(void *ud, const tw_record_t *rec) {
  tw_pipeline_t *p = ud;
  tw_decode_error_t derr;
  int rc;
  p->stats.read++;
  p->input_offset = rec->offset_bytes + rec->full_len_bytes;
  p->input_line = rec->line;
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
    return dead_letter(p, rec, rec->reason ? rec->reason : "too_long", NULL, msg);
  }
  memset(&derr, 0, sizeof derr);
  if (rec->format == TW_FORMAT_MSGPACK) {
    rc = tw_decode_msgpack(p->schema, rec->data, rec->len_bytes, &p->ev, &derr);
  } else {
    const char *data = rec->data;
    size_t len = rec->len_bytes;
    if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0) data += 3, len -= 3; /* UTF-8 BOM */
    rc = tw_decode_json(p->schema, data, len, &p->ev, &derr);
  }
  if (rc != 0) {
    if (rc == TW_ENOMEM) return rc;
    return dead_letter(p, rec, derr.reason[0] ? derr.reason : "invalid", derr.field,
                       derr.message[0] ? derr.message : tw_strerror(rc));
  }
  rc = tw_pseudo_apply(&p->pseudo_key, p->schema, &p->ev);
  if (rc != 0) return dead_letter(p, rec, "too_long", NULL, "no room to pseudonymise the event");
  p->stats.accepted++;
  const type_plan_t *tp = &p->plan[p->ev.type];
  rc = update_aggregates(p, tp);
  if (rc == 0) rc = evaluate_rules(p, tp);
  if (rc != 0) return rc;
  if (++p->pending_events >= p->batch_events) return tw_pipeline_commit(p);
  return 0;
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

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static size_t tail_len(uint64_t offset) {
  return offset < TW_INPUT_PROBE_BYTES ? (size_t)offset : TW_INPUT_PROBE_BYTES;
}

static int put_input_position(tw_pipeline_t *p) {
  uint8_t rec[INPUT_META_BYTES];
  size_t n = tail_len(p->input_offset);
  rec[0] = TW_INPUT_META_VERSION;
  put_le(rec + 1, p->input_head_len, 4);
  memcpy(rec + 5, p->input_head_hash, 16);
  if (hash_range(p->input_fd, p->input_offset - n, n, rec + 21) != 0) return TW_EIO;
  put_le(rec + 37, p->input_offset, 8);
  put_le(rec + 45, p->input_line, 8);
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
  return 0;
}

/* ---- group commit and publication ----------------------------------------------------------- */

static void publish(tw_pipeline_t *p) {
  for (size_t i = 0; i < p->n_pend; i++) {
    pending_alert_t *pa = &p->pend[i];
    tw_alert_t *a = &pa->alert;
    a->key.ptr = p->pend_buf + pa->key_off;
    a->institution_id.ptr = p->pend_buf + pa->inst_off;
    a->region.ptr = p->pend_buf + pa->region_off;
    a->event_id.ptr = p->pend_buf + pa->event_id_off;
    for (size_t s = 0; s < p->n_sinks; s++) {
      if (p->sinks[s]->vt->write(p->sinks[s], a, p->pend_buf + pa->json_off, pa->json_len) != 0)
        p->stats.sink_errors++;
    }
    p->published_seq = a->seq;
  }
  p->n_pend = 0;
  p->pend_used = 0;
}

/* flush_dead_letter: make the dead-letter lines of every record up to the position about to be
 * committed durable first, so a crash can repeat a line but never lose one. */
static int flush_dead_letter(tw_pipeline_t *p) {
  if (p->dead_letter == NULL) return 0;
  if (fflush(p->dead_letter) != 0 || (!p->no_sync && fdatasync(fileno(p->dead_letter)) != 0 &&
                                      errno != EINVAL && errno != EROFS)) {
    fprintf(stderr, "tutorwatch: cannot write the dead-letter file '%s': %s\n", p->dead_letter_path,
            strerror(errno));
    return TW_EIO;
  }
  return 0;
}

static void put_le64(uint8_t *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | b[i];
  return v;
}

int tw_pipeline_commit(tw_pipeline_t *p) {
  /* The alerts handed to the sinks since the last commit are recorded now: a crash before the
   * next commit makes a restart hand them over again (at least once, never lost). */
  uint8_t pub[8];
  put_le64(pub, p->published_seq);
  int rc = flush_dead_letter(p);
  if (rc == 0) rc = tw_state_meta_put(p->state, TW_PUBLISHED_META, pub, sizeof pub);
  if (rc == 0 && p->input_fd >= 0) rc = put_input_position(p);
  if (rc == 0) rc = tw_state_commit(p->state);
  if (rc != 0) {
    fprintf(stderr, "tutorwatch: group commit failed: %s\n", tw_strerror(rc));
    return rc;
  }
  p->stats.commits++;
  p->pending_events = 0;
  publish(p);
  for (size_t s = 0; s < p->n_sinks; s++)
    if (p->sinks[s]->vt->flush(p->sinks[s]) != 0) p->stats.sink_errors++;
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
  for (size_t s = 0; s < p->n_sinks; s++)
    if (p->sinks[s]->vt->write(p->sinks[s], &a, json, len) != 0) p->stats.sink_errors++;
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
  p->published_seq = get_le64(pub);
  if (p->published_seq >= st.journal_seq) return 0;
  rc = tw_state_journal_foreach(p->state, p->published_seq, republish_one, p);
  for (size_t s = 0; s < p->n_sinks; s++)
    if (p->sinks[s]->vt->flush(p->sinks[s]) != 0) p->stats.sink_errors++;
  *count = p->republished;
  return rc;
}

uint64_t tw_pipeline_pending(const tw_pipeline_t *p) {
  return p->pending_events;
}

void tw_pipeline_stats(const tw_pipeline_t *p, tw_pipeline_stats_t *out) {
  *out = p->stats;
}

const char *tw_pipeline_dead_letter_path(const tw_pipeline_t *p) {
  return p->dead_letter_path;
}

int tw_pipeline_close(tw_pipeline_t *p) {
  int rc = 0;
  if (p == NULL) return 0;
  if (p->state != NULL && p->rules != NULL) rc = tw_pipeline_commit(p);
  for (size_t s = 0; s < p->n_sinks; s++) p->sinks[s]->vt->close(p->sinks[s]);
  if (p->dead_letter != NULL && fclose(p->dead_letter) != 0 && rc == 0) rc = TW_EIO;
  for (uint32_t t = 0; t < TW_MAX_TYPES; t++) {
    free(p->plan[t].aggs);
    free(p->plan[t].rules);
  }
  free(p->pend);
  free(p->pend_buf);
  tw_event_fini(&p->ev);
  if (p->input_fd >= 0) close(p->input_fd);
  tw_state_close(p->state);
  tw_rules_free(p->rules);
  tw_schema_free(p->schema);
  sodium_memzero(&p->pseudo_key, sizeof p->pseudo_key);
  free(p);
  return rc;
}
