/*
 * util.c: the ruleset's bump arena, compile-error formatting, edit distance for suggestions and
 * type names. All of it runs at load time only.
 *
 * The arena hands out zeroed 16-byte-aligned blocks from 64 KiB chunks (larger requests get a
 * chunk of their own); it is freed whole. Edit distance is the classic two-row Levenshtein over
 * bytes, bounded by the names' lengths (names are short: fields ≤ 31 bytes).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rules_internal.h"
#include "tw_error.h"

#define TW__CHUNK_BYTES (64u * 1024u)

struct tw__chunk {
  tw__chunk_t *next;
  size_t used, cap;
  _Alignas(16) unsigned char data[];
};

void *tw__arena_alloc(tw__arena_t *a, size_t size) {
  size = (size + 15u) & ~(size_t)15u;
  if (size == 0) size = 16;
  if (a->limit > 0 && (size > a->limit || a->bytes > a->limit - size)) {
    a->over = 1; /* the loader reports it as a bound, not as the machine's memory */
    return NULL;
  }
  a->bytes += size;
  tw__chunk_t *c = a->head;
  if (c == NULL || c->cap - c->used < size) {
    size_t cap = size > TW__CHUNK_BYTES ? size : TW__CHUNK_BYTES;
    c = malloc(sizeof *c + cap);
    if (c == NULL) return NULL;
    c->used = 0;
    c->cap = cap;
    if (a->head != NULL && size > TW__CHUNK_BYTES) {
      /* a big block: keep the current chunk's free space for later small ones */
      c->next = a->head->next;
      a->head->next = c;
    } else {
      c->next = a->head;
      a->head = c;
    }
  }
  void *p = c->data + c->used;
  c->used += size;
  memset(p, 0, size);
  return p;
}

char *tw__arena_strndup(tw__arena_t *a, const char *s, size_t len) {
  char *p = tw__arena_alloc(a, len + 1);
  if (p == NULL) return NULL;
  if (len) memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

void tw__arena_free(tw__arena_t *a) {
  if (a == NULL) return;
  tw__chunk_t *c = a->head;
  while (c != NULL) {
    tw__chunk_t *next = c->next;
    free(c);
    c = next;
  }
  a->head = NULL;
}

int tw__perr_set(tw__perr_t *e, int code, size_t pos, const char *fmt, ...) {
  va_list ap;
  e->code = code;
  e->pos = pos;
  va_start(ap, fmt);
  vsnprintf(e->msg, sizeof e->msg, fmt, ap);
  va_end(ap);
  return code;
}

size_t tw__edit_distance(const char *a, size_t alen, const char *b, size_t blen) {
  size_t row[65], prev[65];
  if (alen > 64 || blen > 64) return (size_t)-1;
  for (size_t j = 0; j <= blen; j++) prev[j] = j;
  for (size_t i = 1; i <= alen; i++) {
    row[0] = i;
    for (size_t j = 1; j <= blen; j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      size_t best = prev[j - 1] + cost;
      if (prev[j] + 1 < best) best = prev[j] + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
    }
    memcpy(prev, row, (blen + 1) * sizeof row[0]);
  }
  return prev[blen];
}

const char *tw__type_name(int kind) {
  switch (kind) {
    case TW_V_NULL:
      return "null";
    case TW_V_BOOL:
      return "bool";
    case TW_V_INT:
      return "int";
    case TW_V_MONEY:
      return "money";
    case TW_V_DURATION:
      return "duration";
    case TW_V_TIME:
      return "time";
    case TW_V_STR:
      return "string";
    case TW_V_DEC:
      return "dec";
    default:
      return "?";
  }
}

int tw__field_type(tw_field_kind_t kind) {
  switch (kind) {
    case TW_FK_INT:
      return TW_V_INT;
    case TW_FK_FEN:
      return TW_V_MONEY;
    case TW_FK_TIME:
      return TW_V_TIME;
    default:
      return TW_V_STR;
  }
}

const char *tw_severity_name(tw_severity_t sev) {
  static const char *const names[] = {"info", "low", "medium", "high", "critical"};
  if ((unsigned)sev > TW_SEV_CRITICAL) return "unknown";
  return names[sev];
}

int tw__dec_format(double d, char *buf, size_t cap) {
  char tmp[64];
  int n;
  /* the same bytes as engine/alert.c: six decimals, trailing zeros cut, "-0" is "0"; beyond
   * 1e15 (where six decimals are no longer exact) in exponent form */
  if (!isfinite(d)) return snprintf(buf, cap, "null");
  if (fabs(d) >= 1e15) return snprintf(buf, cap, "%.6e", d);
  n = snprintf(tmp, sizeof tmp, "%.6f", d);
  while (n > 1 && tmp[n - 1] == '0') n--;
  if (n > 1 && tmp[n - 1] == '.') n--;
  tmp[n] = '\0';
  if (strcmp(tmp, "-0") == 0) return snprintf(buf, cap, "0");
  return snprintf(buf, cap, "%s", tmp);
}

static const char *name_of(const tw_ruleset_t *rs, uint32_t v) {
  size_t i = (v - 1) & 0x0fffffffu;
  switch ((v - 1) >> 28) {
    case TW__NAME_LIST:
      return rs->lists[i].name;
    case TW__NAME_AGG:
      return rs->aggs[i].name;
    case TW__NAME_PARAM:
      return rs->params[i].name;
    case TW__NAME_MACRO:
      return rs->macros[i].name;
    default:
      return rs->rules[i].name;
  }
}

static uint64_t name_hash(const char *s, size_t len) {
  uint64_t h = 14695981039346656037ULL; /* FNV-1a */
  for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ULL;
  return h;
}

static void names_put(uint32_t *slot, size_t cap, uint64_t h, uint32_t v) {
  size_t i = (size_t)h & (cap - 1);
  while (slot[i] != 0) i = (i + 1) & (cap - 1);
  slot[i] = v;
}

int tw__names_add(tw_ruleset_t *rs, int kind, size_t index) {
  tw__names_t *t = &rs->names;
  if (index >= 0x0fffffffu) return TW_ETOOBIG;
  if (2 * (t->n + 1) > t->cap) { /* load factor ≤ 1/2; the old table stays in the arena */
    size_t cap = t->cap ? 2 * t->cap : 64;
    uint32_t *slot = tw__arena_alloc(&rs->arena, cap * sizeof *slot);
    if (slot == NULL) return TW_ENOMEM;
    for (size_t i = 0; i < t->cap; i++)
      if (t->slot[i] != 0) {
        const char *nm = name_of(rs, t->slot[i]);
        names_put(slot, cap, name_hash(nm, strlen(nm)), t->slot[i]);
      }
    t->slot = slot;
    t->cap = cap;
  }
  uint32_t v = (((uint32_t)kind << 28) | (uint32_t)index) + 1;
  const char *nm = name_of(rs, v);
  names_put(t->slot, t->cap, name_hash(nm, strlen(nm)), v);
  t->n++;
  return 0;
}

long tw__names_find(const tw_ruleset_t *rs, const char *name, size_t len, unsigned mask,
                    int *kind) {
  const tw__names_t *t = &rs->names;
  if (t->cap == 0) return -1;
  for (size_t i = (size_t)name_hash(name, len) & (t->cap - 1); t->slot[i] != 0;
       i = (i + 1) & (t->cap - 1)) {
    const char *nm = name_of(rs, t->slot[i]);
    if (!(mask & (1u << ((t->slot[i] - 1) >> 28)))) continue;
    if (strlen(nm) == len && memcmp(nm, name, len) == 0) {
      *kind = (int)((t->slot[i] - 1) >> 28);
      return (long)((t->slot[i] - 1) & 0x0fffffffu);
    }
  }
  return -1;
}
