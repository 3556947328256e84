/*
 * shards.c: N pipelines in N threads fed by one reader (see tw_shards.h).
 *
 * Each shard has a ring of framed records guarded by a mutex and two condition variables. The
 * reader copies a record in (waiting while full); the shard thread processes it in place and only
 * then frees its bytes, so no record is copied twice. A record that does not fit contiguously at
 * the end of the ring leaves a wrap marker and goes to the start. Routing reads only the
 * institution_id (a JSON key scan or a msgpack map walk): the full decode happens once, in the
 * shard.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_rules.h"
#include "tw_shards.h"

#define QREC_RECORD 0u
#define QREC_WRAP 1u
#define QREC_TICK 2u   /* serving: tw_pipeline_tick at wall clock offset_bytes, then commit */
#define QREC_RELOAD 3u /* the rule file's bytes follow; the shard reloads and replies */
#define QREC_DRAIN 4u  /* end of input: flush, then reply with the newest event time */

typedef struct qrec {
  uint32_t kind;
  uint32_t len; /* data bytes after the header */
  uint64_t full_len_bytes, offset_bytes, line;
  uint32_t flags;
  uint8_t format;
  char reason[27];
} qrec_t;

typedef struct shard {
  struct tw_shards *owner;
  int index;
  pthread_t thread;
  int started;
  tw_pipeline_t *p;
  pthread_mutex_t mu;
  pthread_cond_t cv_data, cv_space;
  char *ring;
  size_t cap, head, tail, used; /* bytes in use from head, wrapping; tail = where to write */
  int eof;
  int rc; /* the shard's failure, 0 while fine */
  tw_pipeline_stats_t stats;
  int reload_rc;
  char reload_msg[2048];
  int64_t max_event_ms; /* replied to QREC_DRAIN */
} shard_t;

struct tw_shards {
  int n;
  shard_t *shards;
  const char *origin; /* the reader's input name, for dead-letter positions */
  /* A reload in progress: the shards reply here. */
  pthread_mutex_t reply_mu;
  pthread_cond_t reply_cv;
  int replies_pending;
  const char *reload_name;
  int64_t final_sweep_ms; /* end of a replay: every shard sweeps up to this (the newest event) */
  int finishing;
  unsigned route_needs; /* TW_ROUTE_* of the current rules (tw_pipeline_route_needs) */
};

static size_t align8(size_t n) {
  return (n + 7) & ~(size_t)7;
}

/* ---- routing ------------------------------------------------------------------------------ */

/* json_string: the JSON string at d[*i] (which is '"'), unescaped into out (up to cap bytes;
 * longer strings are truncated but still skipped whole). Advances *i past the closing quote.
 * Returns the unescaped length, or -1 on malformed input. \uXXXX escapes below U+0080 are
 * decoded (an institution code is ASCII); others are kept as '?', so such a code routes
 * somewhere deterministic and the decoder then rejects it. */
static long json_string(const char *d, size_t len, size_t *i, char *out, size_t cap) {
  size_t j = *i + 1, n = 0;
  while (j < len && d[j] != '"') {
    char c = d[j++];
    if (c == '\\') {
      if (j >= len) return -1;
      char e = d[j++];
      switch (e) {
        case 'b':
          c = '\b';
          break;
        case 'f':
          c = '\f';
          break;
        case 'n':
          c = '\n';
          break;
        case 'r':
          c = '\r';
          break;
        case 't':
          c = '\t';
          break;
        case 'u': {
          if (len - j < 4) return -1;
          unsigned v = 0;
          for (int k = 0; k < 4; k++) {
            char h = d[j + (size_t)k];
            v = v * 16 + (unsigned)(h >= '0' && h <= '9'   ? h - '0'
                                    : h >= 'a' && h <= 'f' ? h - 'a' + 10
                                    : h >= 'A' && h <= 'F' ? h - 'A' + 10
                                                           : 0);
          }
          j += 4;
          c = v < 0x80 ? (char)v : '?';
          break;
        }
        default:
          c = e; /* \" \\ \/ */
      }
    }
    if (n < cap) out[n] = c;
    n++;
  }
  if (j >= len) return -1;
  *i = j + 1;
  return (long)(n < cap ? n : cap);
}

/* The top-level string field `name` (at most 15 bytes) of a JSON object, unescaped into out:
 * keys of nested objects and strings inside values are skipped, as the decoder would read them. */
static int json_top_string(const char *d, size_t len, const char *name, char *out, size_t cap,
                           size_t *id_len) {
  int depth = 0;
  size_t i = 0, name_len = strlen(name);
  char key[16];
  while (i < len) {
    char c = d[i];
    if (c == '{' || c == '[') {
      depth++, i++;
    } else if (c == '}' || c == ']') {
      depth--, i++;
    } else if (c == '"') {
      long n = json_string(d, len, &i, key, sizeof key);
      if (n < 0) return -1;
      size_t j = i;
      while (j < len && (d[j] == ' ' || d[j] == '\t' || d[j] == '\r' || d[j] == '\n')) j++;
      if (depth != 1 || j >= len || d[j] != ':') continue; /* a value, or a nested key */
      if ((size_t)n != name_len || memcmp(key, name, name_len) != 0) continue;
      j++;
      while (j < len && (d[j] == ' ' || d[j] == '\t' || d[j] == '\r' || d[j] == '\n')) j++;
      if (j >= len || d[j] != '"') return -1;
      n = json_string(d, len, &j, out, cap);
      if (n < 0) return -1;
      *id_len = (size_t)n;
      return 0;
    } else {
      i++;
    }
  }
  return -1;
}

/* A msgpack str header at p: its length and header size, or -1. */
static int mp_str(const unsigned char *p, size_t avail, size_t *hdr, size_t *slen) {
  if (avail < 1) return -1;
  if ((p[0] & 0xe0) == 0xa0) {
    *hdr = 1, *slen = p[0] & 0x1f;
  } else if (p[0] == 0xd9 && avail >= 2) {
    *hdr = 2, *slen = p[1];
  } else if (p[0] == 0xda && avail >= 3) {
    *hdr = 3, *slen = (size_t)p[1] << 8 | p[2];
  } else if (p[0] == 0xdb && avail >= 5) {
    *hdr = 5, *slen = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
  } else {
    return -1;
  }
  return *hdr + *slen <= avail ? 0 : -1;
}

/* The top-level string field `name` of a msgpack map, borrowed from d. */
static int msgpack_top_string(const char *d, size_t len, const char *name, const char **id,
                              size_t *id_len) {
  const unsigned char *p = (const unsigned char *)d;
  size_t pos, n, name_len = strlen(name);
  if (len < 1) return -1;
  if ((p[0] & 0xf0) == 0x80) {
    n = p[0] & 0x0f, pos = 1;
  } else if (p[0] == 0xde && len >= 3) {
    n = (size_t)p[1] << 8 | p[2], pos = 3;
  } else if (p[0] == 0xdf && len >= 5) {
    n = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4], pos = 5;
  } else {
    return -1;
  }
  for (size_t i = 0; i < n && pos < len; i++) {
    size_t hdr, slen, vlen;
    tw_decode_error_t err;
    int is_key = mp_str(p + pos, len - pos, &hdr, &slen) == 0 && slen == name_len &&
                 memcmp(p + pos + hdr, name, name_len) == 0;
    if (tw_msgpack_extent(d + pos, len - pos, len - pos, &vlen, &err) != 0) return -1;
    pos += vlen;
    if (is_key) {
      if (mp_str(p + pos, len - pos, &hdr, &slen) != 0) return -1;
      *id = d + pos + hdr;
      *id_len = slen;
      return 0;
    }
    if (pos >= len || tw_msgpack_extent(d + pos, len - pos, len - pos, &vlen, &err) != 0) return -1;
    pos += vlen;
  }
  return -1;
}

/* top_string: the top-level string field `name` of a record (JSON or msgpack), in buf or
 * borrowed from the record. */
static int top_string(const tw_record_t *rec, const char *name, char *buf, size_t cap,
                      const char **out, size_t *out_len) {
  if (rec->format == TW_FORMAT_MSGPACK)
    return msgpack_top_string(rec->data, rec->len_bytes, name, out, out_len);
  *out = buf;
  return json_top_string(rec->data, rec->len_bytes, name, buf, cap, out_len);
}

int tw_shard_of(const tw_record_t *rec, int n) {
  char buf[TW_EVENT_ID_MAX];
  const char *id;
  size_t id_len;
  if (n <= 1 || (rec->flags & (TW_REC_TRUNCATED | TW_REC_BROKEN))) return 0;
  if (top_string(rec, "institution_id", buf, sizeof buf, &id, &id_len) != 0) return 0;
  return tw_key_shard(id, id_len, n);
}

uint64_t tw_shards_route(const tw_record_t *rec, int n, unsigned needs, int *primary_shard) {
  int k0 = tw_shard_of(rec, n);
  uint64_t mask = (uint64_t)1 << k0;
  *primary_shard = k0;
  if (n <= 1 || (rec->flags & (TW_REC_TRUNCATED | TW_REC_BROKEN))) return mask;
  if (needs & TW_ROUTE_ALL) return n >= 64 ? ~(uint64_t)0 : ((uint64_t)1 << n) - 1;
  if (needs & TW_ROUTE_REGION) {
    char buf[16], key[8];
    const char *region;
    size_t len;
    if (top_string(rec, "region", buf, sizeof buf, &region, &len) == 0 && len == 6) {
      for (int keep = 2; keep <= 4; keep += 2) { /* province, city */
        memcpy(key, region, (size_t)keep);
        memset(key + keep, '0', (size_t)(6 - keep));
        mask |= (uint64_t)1 << tw_key_shard(key, 6, n);
      }
    }
  }
  return mask;
}

/* ---- the shard threads -------------------------------------------------------------------- */

static void *shard_main(void *arg) {
  shard_t *sh = arg;
  int rc = 0;
  for (;;) {
    pthread_mutex_lock(&sh->mu);
    while (sh->used == 0 && !sh->eof) pthread_cond_wait(&sh->cv_data, &sh->mu);
    if (sh->used == 0) { /* eof and drained */
      pthread_mutex_unlock(&sh->mu);
      break;
    }
    qrec_t *q = (qrec_t *)(sh->ring + sh->head);
    size_t span = q->kind == QREC_WRAP ? sh->cap - sh->head : sizeof *q + align8(q->len);
    pthread_mutex_unlock(&sh->mu);
    if (q->kind == QREC_TICK && rc == 0) {
      rc = tw_pipeline_tick(sh->p, (int64_t)q->offset_bytes);
      if (rc == 0 && tw_pipeline_pending(sh->p) > 0) rc = tw_pipeline_commit(sh->p);
    } else if (q->kind == QREC_DRAIN) {
      if (rc == 0) rc = tw_pipeline_flush(sh->p);
      pthread_mutex_lock(&sh->owner->reply_mu);
      sh->max_event_ms = tw_pipeline_max_event_time(sh->p);
      sh->owner->replies_pending--;
      pthread_cond_broadcast(&sh->owner->reply_cv);
      pthread_mutex_unlock(&sh->owner->reply_mu);
    } else if (q->kind == QREC_RELOAD) {
      int rrc =
          rc != 0 ? rc
                  : tw_pipeline_reload_buffer(sh->p, sh->owner->reload_name, (const char *)(q + 1),
                                              q->len, sh->reload_msg, sizeof sh->reload_msg);
      if (rc != 0)
        snprintf(sh->reload_msg, sizeof sh->reload_msg, "shard %d has failed", sh->index);
      pthread_mutex_lock(&sh->owner->reply_mu);
      sh->reload_rc = rrc;
      sh->owner->replies_pending--;
      pthread_cond_broadcast(&sh->owner->reply_cv);
      pthread_mutex_unlock(&sh->owner->reply_mu);
    } else if (q->kind == QREC_RECORD && rc == 0) {
      tw_record_t r;
      memset(&r, 0, sizeof r);
      r.data = (const char *)(q + 1);
      r.len_bytes = q->len;
      r.full_len_bytes = q->full_len_bytes;
      r.offset_bytes = q->offset_bytes;
      r.line = q->line;
      r.flags = q->flags;
      r.format = (tw_format_t)q->format;
      r.reason = q->reason[0] ? q->reason : NULL;
      r.origin = sh->owner->origin;
      rc = tw_pipeline_record(sh->p, &r);
    }
    pthread_mutex_lock(&sh->mu);
    sh->head = (sh->head + span) % sh->cap;
    sh->used -= span;
    if (rc != 0 && sh->rc == 0) sh->rc = rc;
    pthread_cond_signal(&sh->cv_space);
    pthread_mutex_unlock(&sh->mu);
  }
  if (rc == 0) rc = tw_pipeline_flush(sh->p);
  if (rc == 0 && sh->owner->final_sweep_ms != INT64_MIN)
    rc = tw_pipeline_sweep_until(sh->p, sh->owner->final_sweep_ms);
  if (rc == 0) rc = tw_pipeline_commit(sh->p);
  tw_pipeline_stats(sh->p, &sh->stats);
  pthread_mutex_lock(&sh->mu);
  if (rc != 0 && sh->rc == 0) sh->rc = rc;
  pthread_cond_broadcast(&sh->cv_space);
  pthread_mutex_unlock(&sh->mu);
  return NULL;
}

/* ---- opening ------------------------------------------------------------------------------ */

/* The shard count is part of the state, written to DIR/shards once every shard has opened: a
 * directory made with another count, or without shards, is refused. Shard directories without
 * that file come from a start that failed before any event was read: they are reused. */
/* DIR/shards holds the shard count and the name of the hash that placed keys on them. */
#define TW__LAYOUT_HASH "fnv1a64"

static int check_layout(const char *dir, int n, int *have_marker, char *errbuf, size_t errcap) {
  char path[4200];
  struct stat st;
  *have_marker = 0;
  snprintf(path, sizeof path, "%s/data.mdb", dir);
  if (stat(path, &st) == 0) {
    snprintf(errbuf, errcap,
             "state %s was made without shards; run it without --shards (or use a new directory)",
             dir);
    return TW_EINVAL;
  }
  snprintf(path, sizeof path, "%s/shards", dir);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  int made = 0;
  char hash[16] = "";
  int ok = fscanf(f, "%d %15s", &made, hash) >= 1;
  fclose(f);
  if (ok && strcmp(hash, TW__LAYOUT_HASH) != 0) {
    snprintf(errbuf, errcap,
             "state %s was made by an earlier tutorwatch that placed keys on shards with another "
             "hash; replay its input into a new directory",
             dir);
    return TW_EINVAL;
  }
  if (!ok || made != n) {
    snprintf(errbuf, errcap,
             "state %s was made with --shards %d (institutions would change shards and lose their "
             "state); use the same count or a new directory",
             dir, made);
    return TW_EINVAL;
  }
  *have_marker = 1;
  return 0;
}

static int write_layout(const char *dir, int n) {
  char path[4200], tmp[4300];
  snprintf(path, sizeof path, "%s/shards", dir);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (f == NULL) return TW_EIO;
  int ok = fprintf(f, "%d %s\n", n, TW__LAYOUT_HASH) > 0;
  ok = fflush(f) == 0 && fsync(fileno(f)) == 0 && ok;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) return TW_EIO;
  return 0;
}

int tw_shards_open(const tw_pipeline_opts_t *opts, int n, tw_outputs_t *outputs, tw_shards_t **out,
                   char *errbuf, size_t errcap) {
  if (n < 2 || n > TW_SHARDS_MAX) {
    snprintf(errbuf, errcap, "--shards wants 1 to %d", TW_SHARDS_MAX);
    return TW_EINVAL;
  }
  if (mkdir(opts->state_dir, 0700) != 0 && errno != EEXIST) {
    snprintf(errbuf, errcap, "cannot create state directory '%s': %s", opts->state_dir,
             strerror(errno));
    return TW_EIO;
  }
  int have_marker = 0;
  int rc = check_layout(opts->state_dir, n, &have_marker, errbuf, errcap);
  if (rc != 0) return rc;
  tw_shards_t *s = calloc(1, sizeof *s);
  if (s == NULL) goto oom;
  s->n = n;
  s->final_sweep_ms = INT64_MIN;
  pthread_mutex_init(&s->reply_mu, NULL);
  pthread_cond_init(&s->reply_cv, NULL);
  s->shards = calloc((size_t)n, sizeof *s->shards);
  if (s->shards == NULL) {
    free(s);
    goto oom;
  }
  for (int k = 0; k < n; k++) { /* every lock exists before anything can fail */
    shard_t *sh = &s->shards[k];
    sh->owner = s;
    sh->index = k;
    pthread_mutex_init(&sh->mu, NULL);
    pthread_cond_init(&sh->cv_data, NULL);
    pthread_cond_init(&sh->cv_space, NULL);
  }
  for (int k = 0; k < n; k++) {
    shard_t *sh = &s->shards[k];
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/shard-%d", opts->state_dir, k);
    tw_pipeline_opts_t po = *opts;
    po.state_dir = dir;
    po.pseudonym_dir = opts->state_dir;
    po.shared_outputs = outputs;
    po.shard_index = k;
    po.n_shards = n;
    sh->cap = TW_SHARD_QUEUE_BYTES;
    sh->ring = malloc(sh->cap);
    if (sh->ring == NULL) {
      snprintf(errbuf, errcap, "out of memory for the queue of shard %d", k);
      rc = TW_ENOMEM;
      goto fail;
    }
    rc = tw_pipeline_open(&po, &sh->p, errbuf, errcap);
    if (rc != 0) goto fail;
  }
  s->route_needs = tw_pipeline_route_needs(s->shards[0].p);
  if (!have_marker && write_layout(opts->state_dir, n) != 0) {
    snprintf(errbuf, errcap, "cannot write %s/shards: %s", opts->state_dir, strerror(errno));
    rc = TW_EIO;
    goto fail;
  }
  for (int k = 0; k < n; k++) {
    if (pthread_create(&s->shards[k].thread, NULL, shard_main, &s->shards[k]) != 0) {
      snprintf(errbuf, errcap, "cannot start shard thread %d", k);
      rc = TW_ENOMEM;
      goto fail;
    }
    s->shards[k].started = 1;
  }
  *out = s;
  return 0;
oom:
  snprintf(errbuf, errcap, "out of memory");
  return TW_ENOMEM;
fail:
  tw_shards_close(s);
  return rc;
}

int tw_shards_track_input(tw_shards_t *s, const char *path, uint64_t *start_offset_bytes,
                          uint64_t *start_line) {
  uint64_t best = UINT64_MAX, best_line = 0;
  for (int k = 0; k < s->n; k++) {
    uint64_t off, line;
    int rc = tw_pipeline_track_input(s->shards[k].p, path, &off, &line);
    if (rc != 0) return rc;
    if (off < best) best = off, best_line = line;
  }
  *start_offset_bytes = best == UINT64_MAX ? 0 : best;
  *start_line = best == UINT64_MAX ? 0 : best_line;
  return 0;
}

int tw_shards_republish(tw_shards_t *s, uint64_t *count) {
  *count = 0;
  for (int k = 0; k < s->n; k++) {
    uint64_t c = 0;
    int rc = tw_pipeline_republish(s->shards[k].p, &c);
    if (rc != 0) return rc;
    *count += c;
  }
  return 0;
}

/* ---- the reader --------------------------------------------------------------------------- */

/* enqueue: copy a record (or a control message with its payload) into a shard's ring, waiting
 * while it is full. Returns 0 or the shard's failure. */
static int enqueue(shard_t *sh, uint32_t kind, const tw_record_t *rec, const char *data,
                   size_t len) {
  size_t need = sizeof(qrec_t) + align8(len);
  if (need > sh->cap / 2) return TW_ETOOBIG; /* records are bounded far below; rule files too */
  pthread_mutex_lock(&sh->mu);
  for (;;) {
    if (sh->rc != 0 && kind != QREC_RELOAD) {
      int rc = sh->rc;
      pthread_mutex_unlock(&sh->mu);
      return rc;
    }
    size_t to_end = sh->cap - sh->tail;
    size_t want = need <= to_end ? need : to_end + need; /* a wrap wastes the end */
    if (sh->cap - sh->used >= want) break;
    pthread_cond_wait(&sh->cv_space, &sh->mu);
  }
  if (need > sh->cap - sh->tail) {
    qrec_t *w = (qrec_t *)(sh->ring + sh->tail);
    w->kind = QREC_WRAP;
    sh->used += sh->cap - sh->tail;
    sh->tail = 0;
  }
  qrec_t *q = (qrec_t *)(sh->ring + sh->tail);
  memset(q, 0, sizeof *q);
  q->kind = kind;
  q->len = (uint32_t)len;
  if (rec != NULL) {
    q->full_len_bytes = rec->full_len_bytes;
    q->offset_bytes = rec->offset_bytes;
    q->line = rec->line;
    q->flags = rec->flags;
    q->format = (uint8_t)rec->format;
    snprintf(q->reason, sizeof q->reason, "%s", rec->reason ? rec->reason : "");
  }
  if (len) memcpy(q + 1, data, len);
  sh->tail = (sh->tail + need) % sh->cap;
  sh->used += need;
  pthread_cond_signal(&sh->cv_data);
  pthread_mutex_unlock(&sh->mu);
  return 0;
}

int tw_shards_record(void *ud, const tw_record_t *rec) {
  tw_shards_t *s = ud;
  if (s->origin == NULL) s->origin = rec->origin; /* the source's, valid until it closes */
  int k0;
  uint64_t mask = tw_shards_route(rec, s->n, s->route_needs, &k0);
  int rc = enqueue(&s->shards[k0], QREC_RECORD, rec, rec->data, rec->len_bytes);
  if (rc != 0 || mask == ((uint64_t)1 << k0)) return rc;
  tw_record_t copy = *rec; /* the same record for the shards that own its other keys */
  copy.flags |= TW_REC_SECONDARY;
  for (int k = 0; k < s->n && rc == 0; k++)
    if (k != k0 && (mask >> k & 1))
      rc = enqueue(&s->shards[k], QREC_RECORD, &copy, copy.data, copy.len_bytes);
  return rc;
}

int tw_shards_tick(tw_shards_t *s, int64_t wall_ms) {
  tw_record_t t;
  memset(&t, 0, sizeof t);
  t.offset_bytes = (uint64_t)wall_ms;
  for (int k = 0; k < s->n; k++) {
    int rc = enqueue(&s->shards[k], QREC_TICK, &t, NULL, 0);
    if (rc != 0) return rc;
  }
  return 0;
}

int tw_shards_reload(tw_shards_t *s, const char *rules_path, char *msg, size_t cap) {
  FILE *f = fopen(rules_path, "rb");
  if (f == NULL) {
    snprintf(msg, cap, "%s: cannot open: %s", rules_path, strerror(errno));
    return TW_ENOENT;
  }
  char *buf = malloc(TW_RULES_MAX_FILE_BYTES + 1);
  size_t len = buf ? fread(buf, 1, TW_RULES_MAX_FILE_BYTES + 1, f) : 0;
  fclose(f);
  if (buf == NULL || len > TW_RULES_MAX_FILE_BYTES) {
    free(buf);
    snprintf(msg, cap, "%s: %s", rules_path, buf ? "larger than 4 MiB" : "out of memory");
    return buf ? TW_ETOOBIG : TW_ENOMEM;
  }
  s->reload_name = rules_path;
  pthread_mutex_lock(&s->reply_mu);
  s->replies_pending = s->n;
  pthread_mutex_unlock(&s->reply_mu);
  int rc = 0;
  for (int k = 0; k < s->n; k++) {
    int erc = enqueue(&s->shards[k], QREC_RELOAD, NULL, buf, len);
    if (erc != 0) { /* cannot happen for a bounded file; count the shard as answered */
      pthread_mutex_lock(&s->reply_mu);
      s->replies_pending--;
      s->shards[k].reload_rc = erc;
      pthread_mutex_unlock(&s->reply_mu);
    }
  }
  pthread_mutex_lock(&s->reply_mu);
  while (s->replies_pending > 0) pthread_cond_wait(&s->reply_cv, &s->reply_mu);
  pthread_mutex_unlock(&s->reply_mu);
  free(buf);
  /* Every shard has answered and waits for records: the rules are settled, route by them. */
  s->route_needs = tw_pipeline_route_needs(s->shards[0].p);
  snprintf(msg, cap, "%s", s->shards[0].reload_msg);
  for (int k = 0; k < s->n && rc == 0; k++)
    if (s->shards[k].reload_rc != 0) {
      rc = s->shards[k].reload_rc;
      snprintf(msg, cap, "%s", s->shards[k].reload_msg);
    }
  return rc;
}

int tw_shards_finish(tw_shards_t *s) {
  int rc = 0;
  /* First every shard drains and reports its newest event time; then all sweep up to the
   * newest of the whole input, as one pipeline would (a shard whose last event came early would
   * otherwise stop its scheduled rules early). Shards that have stopped are skipped. */
  if (s->final_sweep_ms == INT64_MIN && !s->finishing) {
    s->finishing = 1;
    int sent = 0;
    pthread_mutex_lock(&s->reply_mu);
    s->replies_pending = 0;
    pthread_mutex_unlock(&s->reply_mu);
    for (int k = 0; k < s->n; k++) {
      if (!s->shards[k].started) continue;
      pthread_mutex_lock(&s->reply_mu);
      s->replies_pending++;
      pthread_mutex_unlock(&s->reply_mu);
      if (enqueue(&s->shards[k], QREC_DRAIN, NULL, NULL, 0) != 0) {
        pthread_mutex_lock(&s->reply_mu);
        s->replies_pending--;
        pthread_mutex_unlock(&s->reply_mu);
      } else {
        sent++;
      }
    }
    pthread_mutex_lock(&s->reply_mu);
    while (s->replies_pending > 0) pthread_cond_wait(&s->reply_cv, &s->reply_mu);
    pthread_mutex_unlock(&s->reply_mu);
    int64_t newest = INT64_MIN;
    for (int k = 0; k < s->n && sent > 0; k++)
      if (s->shards[k].started && s->shards[k].max_event_ms > newest)
        newest = s->shards[k].max_event_ms;
    s->final_sweep_ms = newest;
  }
  for (int k = 0; k < s->n; k++) {
    shard_t *sh = &s->shards[k];
    pthread_mutex_lock(&sh->mu);
    sh->eof = 1;
    pthread_cond_signal(&sh->cv_data);
    pthread_mutex_unlock(&sh->mu);
  }
  for (int k = 0; k < s->n; k++) {
    shard_t *sh = &s->shards[k];
    if (!sh->started) continue;
    pthread_join(sh->thread, NULL);
    sh->started = 0;
    if (sh->rc != 0 && rc == 0) rc = sh->rc;
  }
  return rc;
}

void tw_shards_stats(const tw_shards_t *s, tw_pipeline_stats_t *out) {
  memset(out, 0, sizeof *out);
  for (int k = 0; k < s->n; k++) {
    const tw_pipeline_stats_t *st = &s->shards[k].stats;
    out->read += st->read;
    out->accepted += st->accepted;
    out->rejected += st->rejected;
    out->alerts += st->alerts;
    out->suppressed += st->suppressed;
    out->eval_errors += st->eval_errors;
    out->commits += st->commits;
    out->sink_errors += st->sink_errors;
    out->late += st->late;
    out->too_late += st->too_late;
    out->future_skew += st->future_skew;
    out->held += st->held;
    out->duplicates += st->duplicates;
    out->evicted += st->evicted;
    out->incomplete += st->incomplete;
  }
}

int tw_shards_close(tw_shards_t *s) {
  int rc = 0;
  if (s == NULL) return 0;
  if (s->shards != NULL) {
    tw_shards_finish(s); /* a no-op for threads already joined */
    for (int k = 0; k < s->n; k++) {
      shard_t *sh = &s->shards[k];
      int crc = tw_pipeline_close(sh->p);
      if (crc != 0 && rc == 0) rc = crc;
      free(sh->ring);
      pthread_mutex_destroy(&sh->mu);
      pthread_cond_destroy(&sh->cv_data);
      pthread_cond_destroy(&sh->cv_space);
    }
    free(s->shards);
  }
  pthread_mutex_destroy(&s->reply_mu);
  pthread_cond_destroy(&s->reply_cv);
  free(s);
  return rc;
}
