/*
 * record.c: the event record (see tw_record.h for the layout and the contract).
 *
 * Writing: each stream appends encoded records to a 256 KiB buffer, written out when full and at
 * each tw_recorder_sync (the pipeline's group commit); the open segment's index (institution,
 * offset) grows in memory and is written, sorted, when the segment is sealed. Encoding packs
 * msgpack by hand into a fixed buffer: no allocation per event.
 *
 * Reading: one cursor per stream walks its segments in order. A sealed segment's index lets the
 * cursor skip the segment (time range, institutions) or read only the selected institutions'
 * records (pread at their offsets); otherwise the segment is read sequentially through a 1 MiB
 * buffer. The cursors are merged by (event time, institution, payload bytes), so the delivered
 * order does not depend on how the events were split over streams. Every record's checksum is
 * verified before it is delivered; an index is trusted only when its own checksum and its
 * segment's size match.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tw_error.h"
#include "tw_record.h"

#define WBUF_BYTES (256u << 10)
#define RBUF_BYTES (1u << 20)
#define IDX_MAGIC "TWRI"
#define IDX_VERSION 1
#define IDX_HEADER_BYTES 40
#define IDX_INST_BYTES 28
#define REC_VERSION 1
#define MAX_SEGMENTS 1000000 /* segment numbers are 6 digits */

static const unsigned char kSumKey[crypto_shorthash_KEYBYTES] = {0};

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le(const uint8_t *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* SipHash-2-4 of a then b (the header before the checksum, then the payload). */
static void checksum2(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen,
                      uint8_t out[8]) {
  /* crypto_shorthash takes one buffer; hash the payload, then the header with that hash, so no
   * copy is needed and a change anywhere changes the result. */
  uint8_t h[crypto_shorthash_BYTES], tmp[40 + crypto_shorthash_BYTES];
  crypto_shorthash(h, b, blen, kSumKey);
  memcpy(tmp, a, alen);
  memcpy(tmp + alen, h, sizeof h);
  crypto_shorthash(out, tmp, alen + sizeof h, kSumKey);
}

/* ---- msgpack encoding of one event ---------------------------------------------------------- */

typedef struct wbuf {
  uint8_t *p;
  size_t n, cap;
  int over;
} wbuf_t;

static void w_bytes(wbuf_t *w, const void *src, size_t len) {
  if (w->over || w->cap - w->n < len) {
    w->over = 1;
    return;
  }
  memcpy(w->p + w->n, src, len);
  w->n += len;
}

static void w_u8(wbuf_t *w, uint8_t b) {
  w_bytes(w, &b, 1);
}

static void w_be(wbuf_t *w, uint64_t v, int n) {
  uint8_t b[8];
  for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
  w_bytes(w, b, (size_t)n);
}

static void w_str(wbuf_t *w, const char *s, size_t len) {
  if (len < 32) {
    w_u8(w, (uint8_t)(0xa0 | len));
  } else if (len < 256) {
    w_u8(w, 0xd9);
    w_u8(w, (uint8_t)len);
  } else if (len < 65536) {
    w_u8(w, 0xda);
    w_be(w, len, 2);
  } else {
    w_u8(w, 0xdb);
    w_be(w, len, 4);
  }
  w_bytes(w, s, len);
}

static void w_int(wbuf_t *w, int64_t v) {
  if (v >= 0 && v < 128) {
    w_u8(w, (uint8_t)v);
  } else if (v < 0 && v >= -32) {
    w_u8(w, (uint8_t)(0xe0 | (v + 32)));
  } else if (v >= 0) {
    w_u8(w, 0xcf);
    w_be(w, (uint64_t)v, 8);
  } else {
    w_u8(w, 0xd3);
    w_be(w, (uint64_t)v, 8);
  }
}

int tw_record_encode_event(const tw_schema_t *schema, const tw_event_t *ev, uint8_t *buf,
                           size_t cap) {
  wbuf_t w = {buf, 0, cap, 0};
  unsigned n = 0;
  for (uint32_t s = 0; s < schema->n_fields; s++)
    if (ev->present >> s & 1) n++;
  w_u8(&w, 0xde); /* map16: an event has at most 64 fields */
  w_be(&w, n, 2);
  for (uint32_t s = 0; s < schema->n_fields; s++) {
    if (!(ev->present >> s & 1)) continue;
    const char *name = schema->fields[s].name;
    w_str(&w, name, strlen(name));
    tw_value_t v = ev->f[s];
    if (v.kind == TW_V_STR)
      w_str(&w, v.u.s.ptr, v.u.s.len);
    else if (v.kind == TW_V_NULL || v.kind == TW_V_DEC)
      w_u8(&w, 0xc0); /* the decoder makes neither; nil is absence */
    else
      w_int(&w, v.u.i);
  }
  return w.over ? TW_ETOOBIG : (int)w.n;
}

/* ---- records ------------------------------------------------------------------------------- */

int tw_record_parse(const uint8_t *buf, size_t len, tw_record_entry_t *e, size_t *rec_len) {
  if (len < 4) {
    if (len >= 1 && buf[0] != 'T') return TW_EPARSE;
    if (len >= 2 && buf[1] != 'R') return TW_EPARSE;
    return TW_EAGAIN;
  }
  if (buf[0] != 'T' || buf[1] != 'R' || buf[2] != REC_VERSION || buf[3] != 0) return TW_EPARSE;
  if (len < 8) return TW_EAGAIN;
  uint64_t plen = get_le(buf + 4, 4);
  if (plen == 0 || plen > TW_RECORD_MAX_PAYLOAD) return TW_EPARSE;
  if (len < TW_RECORD_HEADER_BYTES + plen) return TW_EAGAIN;
  uint8_t sum[8];
  checksum2(buf, 40, buf + TW_RECORD_HEADER_BYTES, (size_t)plen, sum);
  if (sodium_memcmp(sum, buf + 40, 8) != 0) return TW_EINVAL;
  memset(e, 0, sizeof *e);
  e->ts_ms = (int64_t)get_le(buf + 8, 8);
  memcpy(e->institution_id, buf + 16, TW_RECORD_INST_LEN);
  memcpy(e->region, buf + 34, TW_RECORD_REGION_LEN);
  e->payload = buf + TW_RECORD_HEADER_BYTES;
  e->payload_len = (size_t)plen;
  *rec_len = TW_RECORD_HEADER_BYTES + (size_t)plen;
  return 0;
}

/* ---- writing --------------------------------------------------------------------------------- */

typedef struct inst_off {
  char inst[TW_RECORD_INST_LEN];
  uint32_t off;
} inst_off_t;

typedef struct stream {
  char dir[4200];
  int fd;
  uint32_t seg;
  uint64_t seg_bytes; /* bytes in the segment, written or buffered */
  uint32_t seg_records;
  int64_t min_ts, max_ts;
  inst_off_t *idx;
  size_t cap_idx;
  uint8_t *wbuf;
  size_t wused;
  uint8_t *enc; /* header + payload of the record being appended */
} stream_t;

struct tw_recorder {
  int n;
  stream_t *s;
  int lock_fd;
  bool no_sync;
};

static void seg_path(char *buf, size_t cap, const char *dir, uint32_t seg, const char *ext) {
  snprintf(buf, cap, "%s/%06u.%s", dir, seg, ext);
}

/* The segment numbers in dir, sorted (a *.seg name of 6 digits). *out is malloc'd. */
static int list_segments(const char *dir, uint32_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  DIR *d = opendir(dir);
  if (d == NULL) return errno == ENOENT ? TW_ENOENT : TW_EIO;
  size_t cap = 0;
  struct dirent *de;
  int rc = 0;
  while ((de = readdir(d)) != NULL) {
    const char *nm = de->d_name;
    if (strlen(nm) != 10 || strcmp(nm + 6, ".seg") != 0) continue;
    uint32_t v = 0;
    int ok = 1;
    for (int i = 0; i < 6; i++) {
      if (nm[i] < '0' || nm[i] > '9') ok = 0;
      v = v * 10 + (uint32_t)(nm[i] - '0');
    }
    if (!ok) continue;
    if (*n == cap) {
      cap = cap ? 2 * cap : 16;
      uint32_t *nv = realloc(*out, cap * sizeof *nv);
      if (nv == NULL) {
        rc = TW_ENOMEM;
        break;
      }
      *out = nv;
    }
    (*out)[(*n)++] = v;
  }
  closedir(d);
  if (rc != 0) {
    free(*out);
    *out = NULL;
    *n = 0;
    return rc;
  }
  for (size_t i = 1; i < *n; i++) { /* insertion sort: readdir order is nearly sorted or small */
    uint32_t k = (*out)[i];
    size_t j = i;
    for (; j > 0 && (*out)[j - 1] > k; j--) (*out)[j] = (*out)[j - 1];
    (*out)[j] = k;
  }
  return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return TW_EIO;
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

static int stream_write_out(stream_t *s) {
  int rc = write_all(s->fd, s->wbuf, s->wused);
  if (rc == 0) s->wused = 0;
  return rc;
}

static int cmp_inst_off(const void *a, const void *b) {
  const inst_off_t *x = a, *y = b;
  int c = memcmp(x->inst, y->inst, TW_RECORD_INST_LEN);
  if (c != 0) return c;
  return x->off < y->off ? -1 : x->off > y->off;
}

/* write_index: the sealed segment's index, written whole (temporary file + rename). */
static int write_index(stream_t *s, bool no_sync) {
  qsort(s->idx, s->seg_records, sizeof *s->idx, cmp_inst_off);
  size_t n_inst = 0;
  for (size_t i = 0; i < s->seg_records; i++)
    if (i == 0 || memcmp(s->idx[i].inst, s->idx[i - 1].inst, TW_RECORD_INST_LEN) != 0) n_inst++;
  size_t len = IDX_HEADER_BYTES + n_inst * IDX_INST_BYTES + (size_t)s->seg_records * 4 + 8;
  uint8_t *b = calloc(1, len);
  if (b == NULL) return TW_ENOMEM;
  memcpy(b, IDX_MAGIC, 4);
  put_le(b + 4, IDX_VERSION, 4);
  put_le(b + 8, s->seg_records, 4);
  put_le(b + 12, n_inst, 4);
  put_le(b + 16, (uint64_t)s->min_ts, 8);
  put_le(b + 24, (uint64_t)s->max_ts, 8);
  put_le(b + 32, s->seg_bytes, 8);
  uint8_t *ip = b + IDX_HEADER_BYTES, *op = ip + n_inst * IDX_INST_BYTES;
  size_t k = 0;
  for (size_t i = 0; i < s->seg_records; i++) {
    if (i == 0 || memcmp(s->idx[i].inst, s->idx[i - 1].inst, TW_RECORD_INST_LEN) != 0) {
      uint8_t *e = ip + k * IDX_INST_BYTES;
      memcpy(e, s->idx[i].inst, TW_RECORD_INST_LEN);
      put_le(e + 20, i, 4);
      k++;
    }
    uint8_t *e = ip + (k - 1) * IDX_INST_BYTES;
    put_le(e + 24, get_le(e + 24, 4) + 1, 4);
    put_le(op + 4 * i, s->idx[i].off, 4);
  }
  crypto_shorthash(b + len - 8, b, len - 8, kSumKey);
  char path[4300], tmp[4300];
  seg_path(path, sizeof path, s->dir, s->seg, "idx");
  seg_path(tmp, sizeof tmp, s->dir, s->seg, "idx.tmp");
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int rc = fd < 0 ? TW_EIO : write_all(fd, b, len);
  if (rc == 0 && !no_sync && fdatasync(fd) != 0) rc = TW_EIO;
  if (fd >= 0 && close(fd) != 0 && rc == 0) rc = TW_EIO;
  if (rc == 0 && rename(tmp, path) != 0) rc = TW_EIO;
  free(b);
  return rc;
}

static int open_segment(stream_t *s, uint32_t seg, bool create) {
  char path[4300];
  seg_path(path, sizeof path, s->dir, seg, "seg");
  s->fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | (create ? O_CREAT : 0), 0600);
  if (s->fd < 0) return TW_EIO;
  s->seg = seg;
  s->seg_bytes = 0;
  s->seg_records = 0;
  s->min_ts = INT64_MAX;
  s->max_ts = INT64_MIN;
  return 0;
}

static int idx_note(stream_t *s, const char *inst, int64_t ts) {
  if (s->seg_records == s->cap_idx) {
    size_t cap = s->cap_idx ? 2 * s->cap_idx : 1024;
    inst_off_t *ni = realloc(s->idx, cap * sizeof *ni);
    if (ni == NULL) return TW_ENOMEM;
    s->idx = ni;
    s->cap_idx = cap;
  }
  memcpy(s->idx[s->seg_records].inst, inst, TW_RECORD_INST_LEN);
  s->idx[s->seg_records].off = (uint32_t)s->seg_bytes;
  s->seg_records++;
  if (ts < s->min_ts) s->min_ts = ts;
  if (ts > s->max_ts) s->max_ts = ts;
  return 0;
}

/* recover_segment: read the open segment back, rebuild its in-memory index, and cut a torn tail
 * (a writer killed mid-write) so appends continue after the last good record. TW_EINVAL when a
 * record before the end is damaged (the caller leaves the segment alone and starts the next). */
static int recover_segment(stream_t *s) {
  struct stat st;
  if (fstat(s->fd, &st) != 0) return TW_EIO;
  uint64_t size = (uint64_t)st.st_size, pos = 0;
  uint8_t *buf = malloc(RBUF_BYTES + TW_RECORD_HEADER_BYTES + TW_RECORD_MAX_PAYLOAD);
  if (buf == NULL) return TW_ENOMEM;
  size_t have = 0, at = 0;
  int rc = 0;
  for (;;) {
    tw_record_entry_t e;
    size_t rl;
    int prc = tw_record_parse(buf + at, have - at, &e, &rl);
    if (prc == 0) {
      if ((rc = idx_note(s, e.institution_id, e.ts_ms)) != 0) break;
      s->seg_bytes += rl;
      at += rl;
      pos += rl;
      continue;
    }
    if (prc == TW_EAGAIN && pos + (have - at) < size) { /* read more */
      memmove(buf, buf + at, have - at);
      have -= at;
      at = 0;
      ssize_t r = pread(s->fd, buf + have, RBUF_BYTES, (off_t)(pos + have));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        rc = TW_EIO;
        break;
      }
      have += (size_t)r;
      continue;
    }
    if (pos < size && prc == TW_EAGAIN) {
      fprintf(stderr,
              "tutorwatch: record %s/%06u.seg: %llu bytes after byte %llu are a torn last "
              "record; cut\n",
              s->dir, s->seg, (unsigned long long)(size - pos), (unsigned long long)pos);
      if (ftruncate(s->fd, (off_t)pos) != 0) rc = TW_EIO;
    } else if (pos < size) {
      /* Damage before the end is not a torn write: keep it for the reader to report (evidence is
       * not destroyed) and record into a new segment. */
      fprintf(stderr,
              "tutorwatch: record %s/%06u.seg: damaged record at byte %llu; left as it "
              "is, recording goes on in the next segment\n",
              s->dir, s->seg, (unsigned long long)pos);
      rc = TW_EINVAL;
    }
    break;
  }
  free(buf);
  return rc;
}

static int seal_and_next(tw_recorder_t *r, stream_t *s) {
  int rc = stream_write_out(s);
  if (rc == 0 && !r->no_sync && fdatasync(s->fd) != 0) rc = TW_EIO;
  if (rc == 0) rc = write_index(s, r->no_sync);
  if (rc != 0) return rc;
  close(s->fd);
  s->fd = -1;
  if (s->seg + 1 >= MAX_SEGMENTS) return TW_ETOOBIG;
  return open_segment(s, s->seg + 1, true);
}

static int stream_open(tw_recorder_t *r, stream_t *s, const char *dir, int k, char *errbuf,
                       size_t errcap) {
  s->fd = -1;
  snprintf(s->dir, sizeof s->dir, "%s/stream-%d", dir, k);
  if (mkdir(s->dir, 0700) != 0 && errno != EEXIST) {
    snprintf(errbuf, errcap, "cannot create %s: %s", s->dir, strerror(errno));
    return TW_EIO;
  }
  s->wbuf = malloc(WBUF_BYTES);
  s->enc = malloc(TW_RECORD_HEADER_BYTES + TW_RECORD_MAX_PAYLOAD);
  if (s->wbuf == NULL || s->enc == NULL) return TW_ENOMEM;
  uint32_t *segs = NULL;
  size_t n = 0;
  int rc = list_segments(s->dir, &segs, &n);
  if (rc != 0) {
    snprintf(errbuf, errcap, "cannot list %s", s->dir);
    return rc;
  }
  uint32_t last = n ? segs[n - 1] : 0;
  free(segs);
  char idx[4300];
  seg_path(idx, sizeof idx, s->dir, last, "idx");
  struct stat st;
  if (last == 0 || stat(idx, &st) == 0) { /* none yet, or the last is sealed: start the next */
    rc = open_segment(s, last + 1, true);
  } else {
    rc = open_segment(s, last, false);
    if (rc == 0) rc = recover_segment(s);
    if (rc == TW_EINVAL) { /* damaged: start the next segment */
      close(s->fd);
      s->fd = -1;
      rc = open_segment(s, last + 1, true);
    }
    if (rc == 0 && s->seg_records >= TW_RECORD_SEGMENT_RECORDS) rc = seal_and_next(r, s);
  }
  if (rc != 0)
    snprintf(errbuf, errcap, "cannot open the segments of %s: %s", s->dir, tw_strerror(rc));
  return rc;
}

int tw_recorder_open(const char *dir, int n_streams, bool no_sync, tw_recorder_t **out,
                     char *errbuf, size_t errcap) {
  *out = NULL;
  if (n_streams < 1 || n_streams > TW_RECORD_MAX_STREAMS) {
    snprintf(errbuf, errcap, "a record has 1 to %d streams", TW_RECORD_MAX_STREAMS);
    return TW_EINVAL;
  }
  if (sodium_init() < 0) {
    snprintf(errbuf, errcap, "libsodium failed to initialise");
    return TW_ECRYPTO;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    snprintf(errbuf, errcap, "cannot create the record directory '%s': %s", dir, strerror(errno));
    return TW_EIO;
  }
  tw_recorder_t *r = calloc(1, sizeof *r);
  if (r == NULL) return TW_ENOMEM;
  r->no_sync = no_sync;
  r->lock_fd = -1;
  char lock[4200];
  snprintf(lock, sizeof lock, "%s/lock", dir);
  int rc = 0;
  r->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (r->lock_fd < 0) {
    snprintf(errbuf, errcap, "cannot open %s: %s", lock, strerror(errno));
    rc = TW_EIO;
    goto fail;
  }
  if (flock(r->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    snprintf(errbuf, errcap, "another engine is recording into '%s' (%s is locked)", dir, lock);
    rc = TW_EEXIST;
    goto fail;
  }
  r->s = calloc((size_t)n_streams, sizeof *r->s);
  if (r->s == NULL) {
    rc = TW_ENOMEM;
    goto fail;
  }
  for (int k = 0; k < n_streams; k++) r->s[k].fd = -1;
  r->n = n_streams;
  for (int k = 0; k < n_streams; k++)
    if ((rc = stream_open(r, &r->s[k], dir, k, errbuf, errcap)) != 0) goto fail;
  *out = r;
  return 0;
fail:
  if (rc == TW_ENOMEM) snprintf(errbuf, errcap, "out of memory");
  tw_recorder_close(r);
  return rc;
}

int tw_recorder_append(tw_recorder_t *r, int stream, const tw_schema_t *schema,
                       const tw_event_t *ev) {
  if (r == NULL || stream < 0 || stream >= r->n) return TW_EINVAL;
  stream_t *s = &r->s[stream];
  if (s->fd < 0) return TW_EIO;
  int plen =
      tw_record_encode_event(schema, ev, s->enc + TW_RECORD_HEADER_BYTES, TW_RECORD_MAX_PAYLOAD);
  if (plen < 0) return plen;
  uint8_t *h = s->enc;
  memset(h, 0, TW_RECORD_HEADER_BYTES);
  h[0] = 'T';
  h[1] = 'R';
  h[2] = REC_VERSION;
  put_le(h + 4, (uint64_t)plen, 4);
  put_le(h + 8, (uint64_t)ev->ts_ms, 8);
  tw_value_t inst = tw_event_get(ev, TW_SLOT_INSTITUTION_ID);
  tw_value_t region = tw_event_get(ev, TW_SLOT_REGION);
  if (inst.kind == TW_V_STR)
    memcpy(h + 16, inst.u.s.ptr,
           inst.u.s.len < TW_RECORD_INST_LEN ? inst.u.s.len : TW_RECORD_INST_LEN);
  if (region.kind == TW_V_STR)
    memcpy(h + 34, region.u.s.ptr,
           region.u.s.len < TW_RECORD_REGION_LEN ? region.u.s.len : TW_RECORD_REGION_LEN);
  checksum2(h, 40, h + TW_RECORD_HEADER_BYTES, (size_t)plen, h + 40);
  size_t rl = TW_RECORD_HEADER_BYTES + (size_t)plen;
  int rc = idx_note(s, (const char *)h + 16, ev->ts_ms);
  if (rc != 0) return rc;
  if (WBUF_BYTES - s->wused < rl && (rc = stream_write_out(s)) != 0) return rc;
  if (rl > WBUF_BYTES) {
    rc = write_all(s->fd, s->enc, rl);
  } else {
    memcpy(s->wbuf + s->wused, s->enc, rl);
    s->wused += rl;
  }
  if (rc != 0) return rc;
  s->seg_bytes += rl;
  if (s->seg_records >= TW_RECORD_SEGMENT_RECORDS || s->seg_bytes >= TW_RECORD_SEGMENT_BYTES)
    return seal_and_next(r, s);
  return 0;
}

int tw_recorder_sync(tw_recorder_t *r, int stream) {
  if (r == NULL || stream < 0 || stream >= r->n) return TW_EINVAL;
  stream_t *s = &r->s[stream];
  if (s->fd < 0) return TW_EIO;
  int rc = stream_write_out(s);
  if (rc == 0 && !r->no_sync && fdatasync(s->fd) != 0) rc = TW_EIO;
  return rc;
}

int tw_recorder_close(tw_recorder_t *r) {
  int rc = 0;
  if (r == NULL) return 0;
  for (int k = 0; k < r->n && r->s != NULL; k++) {
    stream_t *s = &r->s[k];
    if (s->fd >= 0) {
      if (tw_recorder_sync(r, k) != 0) rc = TW_EIO;
      /* Seal what was written, so a replay reads it through an index too; the next run starts
       * a new segment (an index whose size no longer matches its segment is ignored anyway). */
      else if (s->seg_records > 0 && write_index(s, r->no_sync) != 0)
        rc = TW_EIO;
      close(s->fd);
    }
    free(s->idx);
    free(s->wbuf);
    free(s->enc);
  }
  free(r->s);
  if (r->lock_fd >= 0) close(r->lock_fd); /* releases the lock */
  free(r);
  return rc;
}

/* ---- reading --------------------------------------------------------------------------------- */

/* A sealed segment's index, as loaded and checked. */
typedef struct seg_index {
  uint8_t *buf;
  uint32_t n_records, n_inst;
  int64_t min_ts, max_ts;
  uint64_t seg_bytes;
  const uint8_t *inst; /* n_inst entries of IDX_INST_BYTES */
  const uint8_t *offs; /* n_records u32 */
} seg_index_t;

/* load_index: read and check dir/seg.idx against the segment's size. TW_ENOENT when absent or not
 * trustworthy (the caller scans the segment instead). */
static int load_index(const char *dir, uint32_t seg, uint64_t seg_size, seg_index_t *ix) {
  char path[4300];
  memset(ix, 0, sizeof *ix);
  seg_path(path, sizeof path, dir, seg, "idx");
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return TW_ENOENT;
  struct stat st;
  size_t max = IDX_HEADER_BYTES + (size_t)TW_RECORD_SEGMENT_RECORDS * (IDX_INST_BYTES + 4) + 8;
  if (fstat(fd, &st) != 0 || st.st_size < IDX_HEADER_BYTES + 8 || (uint64_t)st.st_size > max) {
    close(fd);
    return TW_ENOENT;
  }
  size_t len = (size_t)st.st_size, got = 0;
  uint8_t *b = malloc(len);
  if (b == NULL) {
    close(fd);
    return TW_ENOMEM;
  }
  while (got < len) {
    ssize_t r = pread(fd, b + got, len - got, (off_t)got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  uint8_t sum[8];
  if (got != len) goto bad;
  crypto_shorthash(sum, b, len - 8, kSumKey);
  if (memcmp(b, IDX_MAGIC, 4) != 0 || get_le(b + 4, 4) != IDX_VERSION ||
      sodium_memcmp(sum, b + len - 8, 8) != 0)
    goto bad;
  ix->n_records = (uint32_t)get_le(b + 8, 4);
  ix->n_inst = (uint32_t)get_le(b + 12, 4);
  ix->min_ts = (int64_t)get_le(b + 16, 8);
  ix->max_ts = (int64_t)get_le(b + 24, 8);
  ix->seg_bytes = get_le(b + 32, 8);
  if (ix->n_records > TW_RECORD_SEGMENT_RECORDS || ix->n_inst > ix->n_records ||
      len !=
          IDX_HEADER_BYTES + (size_t)ix->n_inst * IDX_INST_BYTES + (size_t)ix->n_records * 4 + 8 ||
      ix->seg_bytes != seg_size)
    goto bad;
  ix->inst = b + IDX_HEADER_BYTES;
  ix->offs = ix->inst + (size_t)ix->n_inst * IDX_INST_BYTES;
  for (uint32_t i = 0; i < ix->n_inst; i++) {
    uint64_t first = get_le(ix->inst + (size_t)i * IDX_INST_BYTES + 20, 4);
    uint64_t cnt = get_le(ix->inst + (size_t)i * IDX_INST_BYTES + 24, 4);
    if (first + cnt > ix->n_records) goto bad;
  }
  ix->buf = b;
  return 0;
bad:
  free(b);
  memset(ix, 0, sizeof *ix);
  return TW_ENOENT;
}

/* The index entry of an institution code (binary search), or -1. */
static long index_find(const seg_index_t *ix, const char *inst) {
  char key[TW_RECORD_INST_LEN];
  memset(key, 0, sizeof key);
  memcpy(key, inst, strnlen(inst, TW_RECORD_INST_LEN));
  size_t lo = 0, hi = ix->n_inst;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    int c = memcmp(ix->inst + mid * IDX_INST_BYTES, key, TW_RECORD_INST_LEN);
    if (c == 0) return (long)mid;
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  return -1;
}

typedef struct cursor {
  int stream;
  char dir[4200];
  uint32_t *segs;
  size_t n_segs, i_seg;
  int fd;
  uint32_t seg;
  uint64_t size;
  /* offsets mode: only these records of the segment (sorted) */
  uint32_t *offs;
  size_t n_offs, i_off, cap_offs;
  bool use_offs;
  /* sequential mode */
  uint8_t *rbuf;
  size_t have, at;
  uint64_t pos; /* file offset of rbuf[at] */
  uint8_t *rec; /* offsets mode: the record read */
  tw_record_entry_t cur;
  bool have_cur, done;
} cursor_t;

static bool selected(const tw_record_filter_t *f, const tw_record_entry_t *e) {
  if (e->ts_ms < f->from_ms || e->ts_ms > f->to_ms) return false;
  if (f->n_institutions == 0 && f->region_prefix == NULL) return true;
  for (size_t i = 0; i < f->n_institutions; i++)
    if (strcmp(f->institutions[i], e->institution_id) == 0) return true;
  return f->region_prefix != NULL &&
         strncmp(e->region, f->region_prefix, strlen(f->region_prefix)) == 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* cursor_open_segment: open the next segment worth reading; 0, TW_EOF (none left), or an error. */
static int cursor_open_segment(cursor_t *c, const tw_record_filter_t *f,
                               tw_record_scan_stats_t *st) {
  for (;;) {
    if (c->fd >= 0) {
      close(c->fd);
      c->fd = -1;
    }
    if (c->i_seg >= c->n_segs) return TW_EOF;
    uint32_t seg = c->segs[c->i_seg++];
    char path[4300];
    seg_path(path, sizeof path, c->dir, seg, "seg");
    c->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (c->fd < 0) return TW_EIO;
    struct stat sst;
    if (fstat(c->fd, &sst) != 0) return TW_EIO;
    c->seg = seg;
    c->size = (uint64_t)sst.st_size;
    c->use_offs = false;
    c->have = c->at = 0;
    c->pos = 0;
    st->segments++;
    seg_index_t ix;
    int rc = load_index(c->dir, seg, c->size, &ix);
    if (rc == TW_ENOMEM) return rc;
    if (rc != 0) return 0; /* no usable index: scan it */
    bool skip = ix.n_records == 0 || ix.max_ts < f->from_ms || ix.min_ts > f->to_ms;
    if (!skip && f->n_institutions > 0 && f->region_prefix == NULL) {
      c->n_offs = c->i_off = 0;
      for (size_t i = 0; i < f->n_institutions && rc == 0; i++) {
        long k = index_find(&ix, f->institutions[i]);
        if (k < 0) continue;
        const uint8_t *e = ix.inst + (size_t)k * IDX_INST_BYTES;
        size_t first = (size_t)get_le(e + 20, 4), cnt = (size_t)get_le(e + 24, 4);
        if (c->n_offs + cnt > c->cap_offs) {
          size_t cap = c->n_offs + cnt;
          uint32_t *no = realloc(c->offs, (cap ? cap : 1) * sizeof *no);
          if (no == NULL) {
            rc = TW_ENOMEM;
            break;
          }
          c->offs = no;
          c->cap_offs = cap;
        }
        for (size_t j = 0; j < cnt; j++)
          c->offs[c->n_offs++] = (uint32_t)get_le(ix.offs + 4 * (first + j), 4);
      }
      if (c->n_offs > 1) qsort(c->offs, c->n_offs, sizeof *c->offs, cmp_u32);
      c->use_offs = true;
      skip = c->n_offs == 0;
    }
    free(ix.buf);
    if (rc != 0) return rc;
    if (!skip) return 0;
    st->segments_skipped++;
  }
}

static int pread_all(int fd, uint8_t *b, size_t len, uint64_t off) {
  size_t got = 0;
  while (got < len) {
    ssize_t r = pread(fd, b + got, len - got, (off_t)(off + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return TW_EIO;
    if (r == 0) return TW_EAGAIN;
    got += (size_t)r;
  }
  return 0;
}

/* cursor_next: the cursor's next selected record into c->cur (c->have_cur), or c->done. */
static int cursor_next(cursor_t *c, const tw_record_filter_t *f, tw_record_scan_stats_t *st,
                       char *errbuf, size_t errcap) {
  c->have_cur = false;
  for (;;) {
    if (c->fd < 0) {
      int rc = cursor_open_segment(c, f, st);
      if (rc == TW_EOF) {
        c->done = true;
        return 0;
      }
      if (rc != 0) {
        snprintf(errbuf, errcap, "cannot read segment %s/%06u.seg", c->dir, c->seg);
        return rc;
      }
    }
    tw_record_entry_t e;
    size_t rl = 0;
    int prc;
    uint64_t at_off;
    if (c->use_offs) {
      if (c->i_off >= c->n_offs) {
        close(c->fd);
        c->fd = -1;
        continue;
      }
      at_off = c->offs[c->i_off++];
      int rc = pread_all(c->fd, c->rec, TW_RECORD_HEADER_BYTES, at_off);
      prc = rc == 0 ? tw_record_parse(c->rec, TW_RECORD_HEADER_BYTES, &e, &rl) : rc;
      if (prc == TW_EAGAIN && rc == 0) {
        size_t plen = (size_t)get_le(c->rec + 4, 4);
        rc = pread_all(c->fd, c->rec + TW_RECORD_HEADER_BYTES, plen,
                       at_off + TW_RECORD_HEADER_BYTES);
        prc = rc == 0 ? tw_record_parse(c->rec, TW_RECORD_HEADER_BYTES + plen, &e, &rl) : rc;
      }
      if (prc == TW_EIO) return TW_EIO;
      st->bytes_read += rl;
    } else {
      at_off = c->pos;
      prc = tw_record_parse(c->rbuf + c->at, c->have - c->at, &e, &rl);
      if (prc == TW_EAGAIN && c->pos + (c->have - c->at) < c->size) {
        memmove(c->rbuf, c->rbuf + c->at, c->have - c->at);
        c->have -= c->at;
        c->at = 0;
        size_t want = RBUF_BYTES;
        if (c->size - (c->pos + c->have) < want) want = (size_t)(c->size - (c->pos + c->have));
        int rc = pread_all(c->fd, c->rbuf + c->have, want, c->pos + c->have);
        if (rc == TW_EIO) return rc;
        if (rc == TW_EAGAIN)
          c->size = c->pos + c->have; /* shrank under us */
        else
          c->have += want;
        st->bytes_read += want;
        continue;
      }
      if (prc == 0) {
        c->at += rl;
        c->pos += rl;
      } else if (prc == TW_EAGAIN) { /* end of the segment, or a torn last record */
        close(c->fd);
        c->fd = -1;
        continue;
      }
    }
    if (prc != 0) {
      snprintf(errbuf, errcap, "record %s/%06u.seg: %s at byte %llu", c->dir, c->seg,
               prc == TW_EINVAL ? "checksum mismatch" : "malformed record",
               (unsigned long long)at_off);
      return TW_EINVAL;
    }
    st->records_read++;
    if (!selected(f, &e)) continue;
    e.stream = c->stream;
    e.segment = c->seg;
    e.offset = at_off;
    c->cur = e;
    c->have_cur = true;
    return 0;
  }
}

/* The streams of dir: stream-K directories, K in 0..TW_RECORD_MAX_STREAMS-1, in order. */
static int list_streams(const char *dir, int *ks, int *n) {
  *n = 0;
  DIR *d = opendir(dir);
  if (d == NULL) return errno == ENOENT ? TW_ENOENT : TW_EIO;
  bool have[TW_RECORD_MAX_STREAMS] = {false};
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    int k;
    char tail;
    if (sscanf(de->d_name, "stream-%d%c", &k, &tail) == 1 && k >= 0 && k < TW_RECORD_MAX_STREAMS)
      have[k] = true;
  }
  closedir(d);
  for (int k = 0; k < TW_RECORD_MAX_STREAMS; k++)
    if (have[k]) ks[(*n)++] = k;
  return *n ? 0 : TW_ENOENT;
}

static void cursor_free(cursor_t *c) {
  if (c->fd >= 0) close(c->fd);
  free(c->segs);
  free(c->offs);
  free(c->rbuf);
  free(c->rec);
}

static int cursors_open(const char *dir, cursor_t **out, int *n, char *errbuf, size_t errcap) {
  int ks[TW_RECORD_MAX_STREAMS];
  *out = NULL;
  int rc = list_streams(dir, ks, n);
  if (rc != 0) {
    snprintf(errbuf, errcap, "'%s' holds no event record (no stream-K directory)", dir);
    return rc;
  }
  cursor_t *cs = calloc((size_t)*n, sizeof *cs);
  if (cs == NULL) return TW_ENOMEM;
  for (int i = 0; i < *n; i++) cs[i].fd = -1;
  for (int i = 0; i < *n && rc == 0; i++) {
    cursor_t *c = &cs[i];
    c->stream = ks[i];
    snprintf(c->dir, sizeof c->dir, "%s/stream-%d", dir, ks[i]);
    rc = list_segments(c->dir, &c->segs, &c->n_segs);
    if (rc == 0) {
      c->rbuf = malloc(RBUF_BYTES + TW_RECORD_HEADER_BYTES + TW_RECORD_MAX_PAYLOAD);
      c->rec = malloc(TW_RECORD_HEADER_BYTES + TW_RECORD_MAX_PAYLOAD);
      if (c->rbuf == NULL || c->rec == NULL) rc = TW_ENOMEM;
    } else {
      snprintf(errbuf, errcap, "cannot list %s", c->dir);
    }
  }
  if (rc != 0) {
    if (rc == TW_ENOMEM) snprintf(errbuf, errcap, "out of memory");
    for (int i = 0; i < *n; i++) cursor_free(&cs[i]);
    free(cs);
    return rc;
  }
  *out = cs;
  return 0;
}

/* The merge order: event time, then institution, then payload bytes (then stream). */
static int entry_cmp(const tw_record_entry_t *a, const tw_record_entry_t *b) {
  if (a->ts_ms != b->ts_ms) return a->ts_ms < b->ts_ms ? -1 : 1;
  int c = strcmp(a->institution_id, b->institution_id);
  if (c != 0) return c;
  size_t n = a->payload_len < b->payload_len ? a->payload_len : b->payload_len;
  c = memcmp(a->payload, b->payload, n);
  if (c != 0) return c;
  if (a->payload_len != b->payload_len) return a->payload_len < b->payload_len ? -1 : 1;
  return a->stream - b->stream;
}

int tw_record_scan(const char *dir, const tw_record_filter_t *f, tw_record_entry_cb cb, void *ud,
                   tw_record_scan_stats_t *st, char *errbuf, size_t errcap) {
  tw_record_scan_stats_t local;
  if (st == NULL) st = &local;
  memset(st, 0, sizeof *st);
  st->min_ts_ms = INT64_MAX;
  st->max_ts_ms = INT64_MIN;
  cursor_t *cs = NULL;
  int n = 0;
  int rc = cursors_open(dir, &cs, &n, errbuf, errcap);
  if (rc != 0) return rc;
  for (int i = 0; i < n && rc == 0; i++) rc = cursor_next(&cs[i], f, st, errbuf, errcap);
  while (rc == 0) {
    int pick = -1;
    for (int i = 0; i < n; i++)
      if (cs[i].have_cur && (pick < 0 || entry_cmp(&cs[i].cur, &cs[pick].cur) < 0)) pick = i;
    if (pick < 0) break;
    /* the entry points into the cursor's buffers: deliver before reading on */
    st->delivered++;
    rc = cb(ud, &cs[pick].cur);
    if (rc == 0) rc = cursor_next(&cs[pick], f, st, errbuf, errcap);
  }
  for (int i = 0; i < n; i++) cursor_free(&cs[i]);
  free(cs);
  return rc;
}

static int count_cb(void *ud, const tw_record_entry_t *e) {
  tw_record_scan_stats_t *st = ud;
  st->total_records++;
  if (e->ts_ms < st->min_ts_ms) st->min_ts_ms = e->ts_ms;
  if (e->ts_ms > st->max_ts_ms) st->max_ts_ms = e->ts_ms;
  return 0;
}

int tw_record_scan_info(const char *dir, tw_record_scan_stats_t *st, char *errbuf, size_t errcap) {
  memset(st, 0, sizeof *st);
  st->min_ts_ms = INT64_MAX;
  st->max_ts_ms = INT64_MIN;
  cursor_t *cs = NULL;
  int n = 0;
  int rc = cursors_open(dir, &cs, &n, errbuf, errcap);
  if (rc != 0) return rc;
  /* Sealed segments answer from their index; open ones are scanned. */
  tw_record_filter_t all = {INT64_MIN, INT64_MAX, NULL, 0, NULL};
  tw_record_scan_stats_t scan;
  memset(&scan, 0, sizeof scan);
  for (int i = 0; i < n && rc == 0; i++) {
    cursor_t *c = &cs[i];
    for (size_t s = 0; s < c->n_segs && rc == 0; s++) {
      char path[4300];
      struct stat sst;
      seg_path(path, sizeof path, c->dir, c->segs[s], "seg");
      if (stat(path, &sst) != 0) {
        rc = TW_EIO;
        snprintf(errbuf, errcap, "cannot stat %s", path);
        break;
      }
      seg_index_t ix;
      int irc = load_index(c->dir, c->segs[s], (uint64_t)sst.st_size, &ix);
      if (irc == TW_ENOMEM) rc = irc;
      if (irc == 0) {
        st->total_records += ix.n_records;
        if (ix.n_records > 0) {
          if (ix.min_ts < st->min_ts_ms) st->min_ts_ms = ix.min_ts;
          if (ix.max_ts > st->max_ts_ms) st->max_ts_ms = ix.max_ts;
        }
        free(ix.buf);
        continue;
      }
      if (irc != TW_ENOENT) break;
      /* scan this one segment alone */
      cursor_t one = *c;
      one.segs = &c->segs[s];
      one.n_segs = 1;
      one.i_seg = 0;
      one.fd = -1;
      one.offs = NULL;
      one.cap_offs = 0;
      one.done = false;
      for (;;) {
        rc = cursor_next(&one, &all, &scan, errbuf, errcap);
        if (rc != 0 || one.done) break;
        count_cb(st, &one.cur);
      }
      if (one.fd >= 0) close(one.fd);
      free(one.offs);
    }
  }
  for (int i = 0; i < n; i++) cursor_free(&cs[i]);
  free(cs);
  return rc;
}
