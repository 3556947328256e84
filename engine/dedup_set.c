/*
 * dedup_set.c: the committed dedup ids, in memory (see dedup_set.h).
 */
#include "dedup_set.h"

#include <stdlib.h>
#include <string.h>

#include "tw_error.h"

#define DDS_CHUNK_BYTES ((size_t)64 * 1024)
#define DDS_HDR 16 /* event time (i64), chunk (u32), length (u16), reserved (u16) */
#define DDS_MIN_SLOTS 1024u

static size_t rec_size(size_t len) {
  return (DDS_HDR + len + 7) & ~(size_t)7;
}

static int64_t rec_ts(const unsigned char *r) {
  int64_t t;
  memcpy(&t, r, 8);
  return t;
}

static uint32_t rec_chunk(const unsigned char *r) {
  uint32_t c;
  memcpy(&c, r + 8, 4);
  return c;
}

static size_t rec_len(const unsigned char *r) {
  uint16_t l;
  memcpy(&l, r + 12, 2);
  return l;
}

/* The slot holding id, or SIZE_MAX. */
static size_t find(const tw__dds_t *s, const unsigned char *id, size_t len, uint64_t h) {
  if (s->nslots == 0) return SIZE_MAX;
  size_t mask = s->nslots - 1;
  for (size_t i = (size_t)h & mask; s->slots[i].rec != NULL; i = (i + 1) & mask) {
    const unsigned char *r = s->slots[i].rec;
    if (s->slots[i].hash == h && rec_len(r) == len && memcmp(r + DDS_HDR, id, len) == 0) return i;
  }
  return SIZE_MAX;
}

int tw__dds_get(const tw__dds_t *s, const unsigned char *id, size_t len, uint64_t h,
                int64_t *ts_ms) {
  size_t i = find(s, id, len, h);
  if (i == SIZE_MAX) return 0;
  *ts_ms = rec_ts(s->slots[i].rec);
  return 1;
}

/* A record is no longer indexed: its chunk is freed once empty (or reused, if current). */
static void release(tw__dds_t *s, const unsigned char *r) {
  tw__dds_chunk_t *c = &s->chunks[rec_chunk(r)];
  if (--c->live > 0) return;
  if (rec_chunk(r) == s->cur) {
    c->used = 0;
    return;
  }
  s->bytes -= c->cap;
  free(c->mem);
  c->mem = NULL;
  c->cap = c->used = 0;
}

static int grow_table(tw__dds_t *s, size_t n) {
  tw__dds_slot_t *t = calloc(n, sizeof *t);
  if (t == NULL) return TW_ENOMEM;
  for (size_t i = 0; i < s->nslots; i++) {
    if (s->slots[i].rec == NULL) continue;
    size_t j = (size_t)s->slots[i].hash & (n - 1);
    while (t[j].rec != NULL) j = (j + 1) & (n - 1);
    t[j] = s->slots[i];
  }
  s->bytes += (n - s->nslots) * sizeof *t;
  free(s->slots);
  s->slots = t;
  s->nslots = n;
  return 0;
}

int tw__dds_reserve(tw__dds_t *s, size_t n, size_t bytes) {
  if (n == 0) return 0;
  size_t want = s->nslots ? s->nslots : DDS_MIN_SLOTS;
  while ((s->n + n) * 2 > want) want *= 2;
  if (want != s->nslots && grow_table(s, want) != 0) return TW_ENOMEM;
  size_t need = n * (DDS_HDR + 7) + bytes;
  if (s->nchunks > 0) {
    const tw__dds_chunk_t *c = &s->chunks[s->cur];
    if (c->cap - c->used >= need) return 0;
  }
  /* A new current chunk, in a free descriptor if there is one. */
  size_t k = 0;
  while (k < s->nchunks && s->chunks[k].mem != NULL) k++;
  if (k == s->nchunks) {
    if (s->nchunks == UINT32_MAX) return TW_ENOMEM;
    if (s->nchunks == s->chunks_cap) {
      size_t m = s->chunks_cap ? s->chunks_cap * 2 : 16;
      tw__dds_chunk_t *d = realloc(s->chunks, m * sizeof *d);
      if (d == NULL) return TW_ENOMEM;
      s->chunks = d;
      s->chunks_cap = m;
    }
    s->chunks[k].mem = NULL;
  }
  size_t cap = need > DDS_CHUNK_BYTES ? need : DDS_CHUNK_BYTES;
  unsigned char *mem = malloc(cap);
  if (mem == NULL) return TW_ENOMEM;
  if (k == s->nchunks) s->nchunks++;
  size_t old = s->cur;
  s->chunks[k] = (tw__dds_chunk_t){mem, cap, 0, 0};
  s->cur = k;
  s->bytes += cap;
  /* The chunk given up as current may already be empty. */
  if (old != k && old < s->nchunks && s->chunks[old].mem != NULL && s->chunks[old].live == 0) {
    s->bytes -= s->chunks[old].cap;
    free(s->chunks[old].mem);
    s->chunks[old] = (tw__dds_chunk_t){NULL, 0, 0, 0};
  }
  return 0;
}

int tw__dds_put(tw__dds_t *s, const unsigned char *id, size_t len, uint64_t h, int64_t ts_ms) {
  if (len > UINT16_MAX || s->nchunks == 0) return TW_ENOMEM;
  tw__dds_chunk_t *c = &s->chunks[s->cur];
  size_t rs = rec_size(len);
  size_t i = find(s, id, len, h);
  if (c->cap - c->used < rs || (i == SIZE_MAX && (s->n + 1) * 2 > s->nslots)) return TW_ENOMEM;
  unsigned char *r = c->mem + c->used;
  uint32_t ci = (uint32_t)s->cur;
  uint16_t l = (uint16_t)len, z = 0;
  memcpy(r, &ts_ms, 8);
  memcpy(r + 8, &ci, 4);
  memcpy(r + 12, &l, 2);
  memcpy(r + 14, &z, 2);
  memcpy(r + DDS_HDR, id, len);
  c->used += rs;
  c->live++;
  if (i != SIZE_MAX) {
    unsigned char *old = s->slots[i].rec;
    s->slots[i].rec = r;
    release(s, old);
    return 0;
  }
  size_t mask = s->nslots - 1;
  for (i = (size_t)h & mask; s->slots[i].rec != NULL; i = (i + 1) & mask) {
  }
  s->slots[i].hash = h;
  s->slots[i].rec = r;
  s->n++;
  return 0;
}

void tw__dds_forget(tw__dds_t *s, const unsigned char *id, size_t len, uint64_t h, int64_t ts_ms) {
  size_t i = find(s, id, len, h);
  if (i == SIZE_MAX || rec_ts(s->slots[i].rec) != ts_ms) return;
  unsigned char *r = s->slots[i].rec;
  size_t mask = s->nslots - 1;
  for (size_t j = (i + 1) & mask; s->slots[j].rec != NULL; j = (j + 1) & mask) {
    size_t home = (size_t)s->slots[j].hash & mask;
    /* Entry j may move to i unless its home lies cyclically in (i, j]. */
    int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    s->slots[i] = s->slots[j];
    i = j;
  }
  s->slots[i].rec = NULL;
  s->slots[i].hash = 0;
  s->n--;
  release(s, r);
}

void tw__dds_free(tw__dds_t *s) {
  for (size_t k = 0; k < s->nchunks; k++) free(s->chunks[k].mem);
  free(s->chunks);
  free(s->slots);
  memset(s, 0, sizeof *s);
}
