/*
 * state.c: the keyed state store: an in-memory hash table of entries over one LMDB environment.
 *
 * Entries (aggregate series and cooldowns) are grouped by key: an open-addressing table (linear
 * probing, power-of-two size, load ≤ 0.7, backward-shift deletion) maps the key bytes (an
 * institution id, a region...), hashed by a word-at-a-time multiply-xorshift mix, to a group that
 * holds one entry pointer per identity. An identity is what the stored key holds before the key
 * bytes (kind byte, aggregate name, function, window and bucket width; or rule name); identities
 * are numbered as first seen, and a small cache maps the caller's spec (or rule name) pointer to
 * its number, checked against the fields and the name on every use (callers that resolve a
 * reference once, tw_state_agg_ref, skip even that). So the ten or so aggregates an event feeds
 * cost one probe between them, and the last group found is tried first. Each entry still
 * carries its whole stored key (kind byte + LMDB key) for commits and deletes. A miss reads the
 * entry from LMDB once through the read transaction (keys_loaded), or starts an empty one.
 * tw_state_agg_prefetch and tw_state_key_prefetch only issue CPU prefetches. A change marks the
 * entry dirty and appends it to the dirty array, so a commit costs O(dirty · log dirty) (it writes
 * the dirty entries in key order for B-tree locality), never O(all keys). tw_state_evict sweeps the
 * table like a CLOCK, a group at a time: bounded visits per call, dropping expired entries (deleted
 * from LMDB at the next commit) and, over the budget, clean entries not used since the last pass; a
 * group left without entries is freed.
 *
 * The read transaction is opened on the first read after a commit and kept until the next
 * commit, so the per-event reads (lazy loads) pay no begin/reset each.
 *
 * Dedup: committed event ids are in one database, `dedup_ts` (biased big-endian event time + id →
 * empty), and in an in-memory set that mirrors it (dedup_set.c), loaded at open and changed only
 * after a commit succeeded; ids recorded since the last commit are in a small open-addressing set
 * over a byte arena. A lookup is the staged set, then the committed set: no LMDB read. A commit
 * writes the staged ids in time order (neighbouring pages) instead of one random B-tree page per
 * id. States from before kept a second database by id (`dedup`); it is dropped at open.
 *
 * tw_state_commit is the group commit: deletes of expired entries, dirty entries, staged dedup
 * ids (plus a purge of at most 1024 + 2·staged expired ones, so purging outruns recording),
 * staged journal records (MDB_APPEND under 8-byte big-endian sequence numbers) and staged meta
 * records go into one write transaction. On MDB_MAP_FULL the transaction is aborted, the map
 * doubled, and the whole batch retried. On any failure nothing in memory is cleared, so the next
 * commit writes it all again with the same sequence numbers. LMDB errors are logged to stderr
 * with the directory and mdb_strerror.
 *
 * Bounds: names ≤ TW_STATE_NAME_MAX, keys ≤ TW_STATE_KEY_MAX, event ids ≤ TW_STATE_EVENT_ID_MAX,
 * buckets per key ≤ window cap, journal records ≤ TW_STATE_JOURNAL_MAX, meta records ≤
 * TW_STATE_META_MAX. Allocation happens per new key, while a key's bucket array grows to its cap
 * (and a DISTINCT key's table to 256 rows, or once to its sketch), and when staging areas grow
 * (their size follows the batch); never per event on a key already in memory otherwise. The
 * aggregate functions, calendar buckets and the entry format are window.c's. Not thread-safe
 * (see tw_state.h).
 */
#include <errno.h>
#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "dedup_set.h"
#include "state_internal.h"
#include "tw_error.h"
#include "tw_state.h"

#define TW__DEFAULT_MAP_BYTES ((size_t)1 << 30)
#define TW__TS_LIMIT ((int64_t)1 << 61) /* |event time| and window bounds, so sums cannot wrap */
#define TW__INITIAL_SLOTS 1024u
#define TW__MAX_GROWS 40
#define TW__DEDUP_META "tw.dedup"   /* meta record: newest event time seen by dedup (i64 LE) */
#define TW__PURGE_BASE 1024u        /* dedup records purged per commit: base + 2 · staged */
#define TW__FN_EXPLICIT_BUCKET 0x80 /* fn byte flag in an agg key: bucket_ms follows window_ms */
#define TW__EVICT_SCAN_FACTOR 8 /* slots examined per entry visit allowed, empty ones included */

/* The entries of one key: row id holds the entry of identity id (below), or NULL. The key bytes
 * follow the header; the rows follow the key, 8-byte aligned (tw__rows). */
typedef struct tw__group {
  uint32_t n;    /* rows */
  uint32_t live; /* rows not NULL */
  uint16_t key_len;
  unsigned char key[];
} tw__group_t;

typedef struct tw__slot {
  uint64_t hash;
  tw__group_t *g; /* NULL = empty */
} tw__slot_t;

/* An identity: what an entry's stored key holds before the caller's key bytes (kind byte, then
 * the aggregate's name, NUL, fn, window [, bucket], or the rule's name and NUL), numbered in the
 * order first seen. Never removed, so an id stays valid for the state's life. */
typedef struct tw__ident {
  uint8_t fn;
  uint16_t plen; /* bytes of prefix */
  int64_t window_ms, bucket_ms;
  unsigned char prefix[1 + TW_STATE_NAME_MAX + 1 + 1 + 8 + 8]; /* [0]: the kind byte */
} tw__ident_t;

/* Which identity a caller's spec (or rule name) pointer was last; checked against the identity's
 * fields and name on every use, so a pointer reused for another spec is never mistaken. */
typedef struct tw__pcache {
  const void *ptr;
  uint32_t id;
} tw__pcache_t;
#define TW__PCACHE 256u

/* One id staged for dedup; p is set only while a commit sorts and writes them. */
typedef struct tw__dd_rec {
  uint64_t hash;
  int64_t ts_ms;
  uint32_t off; /* into dd_bytes */
  uint32_t len;
  const unsigned char *p;
} tw__dd_rec_t;

typedef struct tw__meta_rec {
  char name[TW_STATE_META_NAME_MAX + 1];
  unsigned char *data;
  size_t len, cap;
} tw__meta_rec_t;

struct tw_state {
  char *dir;
  MDB_env *env;
  MDB_dbi dbi_agg, dbi_cool, dbi_journal, dbi_meta, dbi_dedup_ts;
  MDB_txn *rtxn;   /* read transaction reused for lazy loads and dedup lookups, or NULL */
  int rtxn_active; /* rtxn holds a snapshot (released at commit) */
  size_t map_size_bytes;
  int64_t tz_offset_ms;
  size_t max_keys; /* eviction budget, 0 = none */
  size_t evict_pos;

  unsigned char *dels; /* keys of evicted expired entries: u16 length (native), kind + LMDB key */
  size_t dels_len, dels_cap;

  tw__dd_rec_t *dd; /* staged dedup ids */
  size_t dd_n, dd_cap;
  unsigned char *dd_bytes;
  size_t dd_blen, dd_bcap;
  uint32_t *dd_slots; /* index + 1 into dd, 0 = empty; load ≤ 0.5 */
  size_t dd_nslots;
  int64_t dd_newest_ms; /* newest event time seen by dedup (valid when dd_newest_set) */
  int dd_newest_set, dd_newest_dirty;
  int64_t dd_horizon_ms; /* of the latest call; 0 = none yet (no purge) */
  tw__dds_t dds;         /* the committed ids: exactly those in dedup_ts (dedup_set.h) */
  unsigned char *pg;     /* ids the commit in progress purged: i64 time, u16 length, bytes */
  size_t pg_len, pg_cap;

  tw__slot_t *slots;             /* groups by key */
  size_t nslots, ngroups, nkeys; /* nkeys: entries */

  tw__group_t *mru; /* the group found last, or NULL (reset when groups move) */
  size_t mru_slot;
  tw__ident_t *idents;
  size_t nidents, idents_cap;
  tw__pcache_t pcache[TW__PCACHE];

  tw__entry_t **dirty;
  size_t ndirty, dirty_cap;

  /* tw_state_agg_keys' cache: the dirty entries of one aggregate (ks_prefix), sorted by key, from
   * dirty[0, ks_scanned); emptied by every commit attempt (a commit reorders the dirty array). */
  tw__entry_t **ks;
  size_t ks_n, ks_cap, ks_scanned, ks_plen;
  unsigned char ks_prefix[TW__STATE_DBKEY_MAX];

  unsigned char *jbuf; /* staged journal records: u32 length (native) then the bytes */
  size_t jlen, jcap;
  uint64_t jcommitted; /* last sequence number in LMDB */
  uint64_t jassigned;  /* last sequence number handed out */

  tw__meta_rec_t *meta;
  size_t nmeta, meta_cap;

  unsigned char *enc;
  size_t enc_cap;
  unsigned char kbuf[1 + TW__STATE_DBKEY_MAX];

  int fail_commits;
  int fail_keys_grow; /* tests: the next growth of the ks cache fails */
  tw_state_stats_t stats;
};

static void tw__log(const tw_state_t *st, const char *what, int rc) {
  fprintf(stderr, "tutorwatch: state %s: %s: %s\n", st->dir ? st->dir : "?", what,
          mdb_strerror(rc));
}

static uint64_t tw__mix(uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 33;
  return h;
}

/* Word-at-a-time hash; byte order does not matter, it never leaves memory. */
static uint64_t tw__hash(const unsigned char *p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)n * 0x100000001b3ULL);
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    h = (h ^ v) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 31;
    p += 8;
    n -= 8;
  }
  uint64_t v = 0;
  memcpy(&v, p, n);
  h = (h ^ v) * 0x94d049bb133111ebULL;
  return tw__mix(h);
}

/* tw__grow: make *buf hold at least need bytes, doubling from initial; 0 or TW_ENOMEM (*buf kept). */
static int tw__grow(unsigned char **buf, size_t *cap, size_t need, size_t initial) {
  if (need <= *cap) return 0;
  size_t n = *cap ? *cap : initial;
  while (n < need) n *= 2;
  unsigned char *b = realloc(*buf, n);
  if (b == NULL) return TW_ENOMEM;
  *buf = b;
  *cap = n;
  return 0;
}

/* ---- keys ---- */

static int tw__name_len(const char *name, size_t *len) {
  if (name == NULL) return TW_EINVAL;
  size_t n = strnlen(name, TW_STATE_NAME_MAX + 1);
  if (n > TW_STATE_NAME_MAX) return TW_ETOOBIG;
  if (n == 0) return TW_EINVAL;
  *len = n;
  return 0;
}

static int tw__check_spec(const tw_window_spec_t *spec) {
  if (spec == NULL) return TW_EINVAL;
  if ((unsigned)spec->fn > (unsigned)TW_AGG_LAST) return TW_EINVAL;
  if (spec->window_ms < 0 || spec->window_ms > TW__TS_LIMIT) return TW_EINVAL;
  if (spec->bucket_ms != 0) {
    if (spec->window_ms == 0 || spec->bucket_ms < 1000 || spec->bucket_ms > spec->window_ms ||
        spec->window_ms % spec->bucket_ms != 0 ||
        spec->window_ms / spec->bucket_ms > TW_STATE_BUCKETS_MAX)
      return TW_EINVAL;
  }
  return 0;
}

static void tw__put_be64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t tw__get_be64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

/* LMDB key of an aggregate: name, NUL, fn, window_ms (big-endian), [bucket_ms (big-endian) when
 * explicit, flagged in the fn byte], key bytes. Automatic widths keep the version 1 key. */
static int tw__agg_dbkey(const tw_window_spec_t *spec, const char *key, size_t key_len,
                         unsigned char *out, size_t *out_len) {
  size_t nl;
  int rc = tw__check_spec(spec);
  if (rc != 0) return rc;
  if ((rc = tw__name_len(spec->name, &nl)) != 0) return rc;
  if (key_len > TW_STATE_KEY_MAX) return TW_ETOOBIG;
  if (key == NULL && key_len != 0) return TW_EINVAL;
  memcpy(out, spec->name, nl);
  out[nl] = 0;
  out[nl + 1] = (unsigned char)spec->fn;
  tw__put_be64(out + nl + 2, (uint64_t)spec->window_ms);
  size_t n = nl + 10;
  if (spec->bucket_ms != 0) {
    out[nl + 1] |= TW__FN_EXPLICIT_BUCKET;
    tw__put_be64(out + n, (uint64_t)spec->bucket_ms);
    n += 8;
  }
  if (key_len) memcpy(out + n, key, key_len);
  *out_len = n + key_len;
  return 0;
}

int tw__state_agg_dbkey(const tw_window_spec_t *spec, const char *key, size_t key_len,
                        unsigned char *out, size_t cap) {
  size_t n;
  if (cap < TW__STATE_DBKEY_MAX) return TW_ETOOBIG;
  int rc = tw__agg_dbkey(spec, key, key_len, out, &n);
  return rc != 0 ? rc : (int)n;
}

/* ---- read transaction ---- */

static int tw__rtxn_begin(tw_state_t *st) {
  if (st->rtxn_active) return 0;
  int rc = st->rtxn ? mdb_txn_renew(st->rtxn) : mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn);
  if (rc == MDB_MAP_RESIZED) {
    /* Another process grew the map: adopt its size and try once more. */
    if (st->rtxn) {
      mdb_txn_abort(st->rtxn);
      st->rtxn = NULL;
    }
    rc = mdb_env_set_mapsize(st->env, 0);
    if (rc == 0) rc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &st->rtxn);
  }
  if (rc != 0) {
    tw__log(st, "read transaction", rc);
    return TW_ESTATE;
  }
  st->rtxn_active = 1;
  return 0;
}

/* Drop the snapshot so the next read sees the latest commit. */
static void tw__rtxn_release(tw_state_t *st) {
  if (st->rtxn && st->rtxn_active) mdb_txn_reset(st->rtxn);
  st->rtxn_active = 0;
}

/* ---- identities ---- */

static size_t tw__pcache_pos(const void *ptr, unsigned char kind) {
  return (size_t)tw__mix((uint64_t)(uintptr_t)ptr ^ kind) & (TW__PCACHE - 1);
}

/* The identity's name (NUL-terminated) inside its prefix. */
static const char *tw__ident_name(const tw__ident_t *d) {
  return (const char *)d->prefix + 1;
}

/* Does identity d describe spec (kind 'a') or rule name (spec NULL, kind 'c')? */
static int tw__ident_is(const tw__ident_t *d, unsigned char kind, const tw_window_spec_t *spec,
                        const char *name) {
  if (d->prefix[0] != kind) return 0;
  if (spec != NULL && ((unsigned)d->fn != (unsigned)spec->fn || d->window_ms != spec->window_ms ||
                       d->bucket_ms != spec->bucket_ms))
    return 0;
  return strcmp(tw__ident_name(d), name) == 0;
}

/*
 * tw__ident_id: the id of an aggregate's identity (spec) or a cooldown's (spec NULL, rule), kind
 * TW__KIND_AGG or TW__KIND_COOL; registered at first sight. A pointer seen before costs a cache
 * probe and a comparison of the fields and the name. Returns 0, TW_EINVAL or TW_ETOOBIG (a bad
 * spec or name, see tw__agg_dbkey), TW_ENOMEM.
 */
static int tw__ident_id(tw_state_t *st, unsigned char kind, const tw_window_spec_t *spec,
                        const char *rule, uint32_t *id) {
  const void *ptr = kind == TW__KIND_AGG ? (const void *)spec : (const void *)rule;
  if (ptr == NULL) return TW_EINVAL;
  const char *name = kind == TW__KIND_AGG ? spec->name : rule;
  tw__pcache_t *pc = &st->pcache[tw__pcache_pos(ptr, kind)];
  if (pc->ptr == ptr && name != NULL && tw__ident_is(&st->idents[pc->id], kind, spec, name)) {
    *id = pc->id;
    return 0;
  }
  /* First sight of this pointer (or of what it points to now): validate, then find or add. */
  tw__ident_t d;
  size_t nl, plen;
  int rc;
  memset(&d, 0, sizeof d);
  d.prefix[0] = kind;
  if (kind == TW__KIND_AGG) {
    if ((rc = tw__agg_dbkey(spec, NULL, 0, d.prefix + 1, &plen)) != 0) return rc;
    d.fn = (uint8_t)spec->fn;
    d.window_ms = spec->window_ms;
    d.bucket_ms = spec->bucket_ms;
  } else {
    if ((rc = tw__name_len(rule, &nl)) != 0) return rc;
    memcpy(d.prefix + 1, rule, nl);
    d.prefix[1 + nl] = 0;
    plen = nl + 1;
  }
  d.plen = (uint16_t)(plen + 1);
  size_t i = 0;
  while (i < st->nidents &&
         !(st->idents[i].plen == d.plen && memcmp(st->idents[i].prefix, d.prefix, d.plen) == 0))
    i++;
  if (i == st->nidents) {
    if (st->nidents == UINT32_MAX) return TW_ENOMEM;
    if (st->nidents == st->idents_cap) {
      size_t n = st->idents_cap ? st->idents_cap * 2 : 32;
      tw__ident_t *nd = realloc(st->idents, n * sizeof *nd);
      if (nd == NULL) return TW_ENOMEM;
      st->idents = nd;
      st->idents_cap = n;
    }
    st->idents[st->nidents++] = d;
  }
  pc->ptr = ptr;
  pc->id = (uint32_t)i;
  *id = (uint32_t)i;
  return 0;
}

/* ---- hash table of groups ---- */

#define TW__ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

static size_t tw__group_bytes(size_t key_len, size_t rows) {
  return TW__ALIGN8(offsetof(tw__group_t, key) + key_len) + rows * sizeof(tw__entry_t *);
}

static tw__entry_t **tw__rows(tw__group_t *g) {
  return (tw__entry_t **)((unsigned char *)g + TW__ALIGN8(offsetof(tw__group_t, key) + g->key_len));
}

static int tw__table_grow(tw_state_t *st) {
  size_t n = st->nslots * 2;
  tw__slot_t *s = calloc(n, sizeof *s);
  if (s == NULL) return TW_ENOMEM;
  for (size_t i = 0; i < st->nslots; i++) {
    if (st->slots[i].g == NULL) continue;
    size_t j = (size_t)st->slots[i].hash & (n - 1);
    while (s[j].g != NULL) j = (j + 1) & (n - 1);
    s[j] = st->slots[i];
  }
  free(st->slots);
  st->slots = s;
  st->nslots = n;
  st->mru = NULL;
  return 0;
}

static void tw__entry_free(tw__entry_t *e) {
  if (e == NULL) return;
  tw__entry_release(e);
  free(e);
}

/* Remove group slot i, which holds no entry (backward-shift deletion keeps every probe chain
 * unbroken). */
static void tw__table_remove(tw_state_t *st, size_t i) {
  size_t mask = st->nslots - 1;
  st->mru = NULL;
  free(st->slots[i].g);
  for (size_t j = (i + 1) & mask; st->slots[j].g != NULL; j = (j + 1) & mask) {
    size_t home = (size_t)st->slots[j].hash & mask;
    /* Group j may move to i unless its home lies cyclically in (i, j]. */
    int stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
    if (stays) continue;
    st->slots[i] = st->slots[j];
    i = j;
  }
  st->slots[i].g = NULL;
  st->slots[i].hash = 0;
  st->ngroups--;
}

/* Free row id of group g. */
static void tw__row_remove(tw_state_t *st, tw__group_t *g, uint32_t id) {
  tw__entry_t **rows = tw__rows(g);
  tw__entry_free(rows[id]);
  rows[id] = NULL;
  g->live--;
  st->nkeys--;
  st->stats.keys_in_memory = st->nkeys;
}

/* Load (kind + LMDB key) from LMDB into a fresh entry; spec is NULL for cooldowns. */
static int tw__entry_load(tw_state_t *st, const unsigned char *k, size_t klen,
                          const tw_window_spec_t *spec, tw__entry_t **out) {
  int rc;
  tw__entry_t *e = calloc(1, sizeof *e + klen);
  if (e == NULL) return TW_ENOMEM;
  e->key_len = (uint16_t)klen;
  memcpy(e->key, k, klen);
  if (spec != NULL) tw__entry_init(e, spec, st->tz_offset_ms);
  if ((rc = tw__rtxn_begin(st)) != 0) goto fail;
  MDB_val key = {klen - 1, (void *)(k + 1)}, val;
  int mrc = mdb_get(st->rtxn, k[0] == TW__KIND_AGG ? st->dbi_agg : st->dbi_cool, &key, &val);
  if (mrc == 0) {
    int moved = 0;
    rc = tw__entry_decode_ex(e, val.mv_data, val.mv_size, &moved);
    if (rc == TW_ESTATE)
      fprintf(stderr, "tutorwatch: state %s: corrupt entry in database '%s' (%zu bytes)\n", st->dir,
              k[0] == TW__KIND_AGG ? "agg" : "cool", val.mv_size);
    if (rc != 0) goto fail;
    st->stats.keys_loaded++;
    st->stats.entries_rebucketed += (uint64_t)moved;
  } else {
    if (mrc != MDB_NOTFOUND) {
      tw__log(st, "read entry", mrc);
      rc = TW_ESTATE;
      goto fail;
    }
  }
  *out = e;
  return 0;
fail:
  tw__entry_free(e);
  return rc;
}

/* The group of key, or NULL; sets *h to the key's hash and *slot to the group's slot, or to the
 * empty slot ending its probe. The group found last is checked first: an event's aggregates
 * usually share one key; remember false (prefetch hints about other keys) leaves it so. */
static tw__group_t *tw__group_find(tw_state_t *st, const unsigned char *k, size_t key_len,
                                   uint64_t *h, size_t *slot, bool remember) {
  tw__group_t *g = st->mru;
  if (g != NULL && g->key_len == key_len && (key_len == 0 || memcmp(g->key, k, key_len) == 0)) {
    *h = st->slots[st->mru_slot].hash;
    *slot = st->mru_slot;
    return g;
  }
  *h = tw__hash(k, key_len);
  size_t mask = st->nslots - 1, i = (size_t)*h & mask;
  for (; st->slots[i].g != NULL; i = (i + 1) & mask) {
    g = st->slots[i].g;
    if (st->slots[i].hash == *h && g->key_len == key_len &&
        (key_len == 0 || memcmp(g->key, k, key_len) == 0)) {
      if (remember) {
        st->mru = g;
        st->mru_slot = i;
      }
      *slot = i;
      return g;
    }
  }
  *slot = i;
  return NULL;
}

/*
 * tw__lookup: the entry of identity id (an aggregate's or a cooldown's) for key; from memory,
 * else loaded from LMDB (an aggregate set up from its identity's spec), else a fresh empty one. The
 * key is hashed once and its group holds the entries of every identity, so the aggregates an event
 * feeds cost one table probe between them. Returns 0, TW_ETOOBIG (key over TW_STATE_KEY_MAX),
 * TW_EINVAL, TW_ENOMEM, TW_ESTATE (LMDB error or a corrupt stored entry).
 */
static int tw__lookup(tw_state_t *st, uint32_t id, const char *key, size_t key_len,
                      tw__entry_t **out) {
  if (key_len > TW_STATE_KEY_MAX) return TW_ETOOBIG;
  if (key == NULL && key_len != 0) return TW_EINVAL;
  const unsigned char *k = (const unsigned char *)key;
  size_t i, mask = st->nslots - 1;
  uint64_t h;
  tw__group_t *g = tw__group_find(st, k, key_len, &h, &i, true);
  if (g != NULL && id < g->n) {
    tw__entry_t *e = tw__rows(g)[id];
    if (e != NULL) {
      e->ref = 1;
      *out = e;
      return 0;
    }
  }
  const tw__ident_t *d = &st->idents[id];
  const tw_window_spec_t spec = {tw__ident_name(d), (tw_agg_fn_t)d->fn, d->window_ms, d->bucket_ms};
  memcpy(st->kbuf, d->prefix, d->plen);
  if (key_len) memcpy(st->kbuf + d->plen, k, key_len);
  tw__entry_t *e = NULL;
  int rc = tw__entry_load(st, st->kbuf, d->plen + key_len,
                          d->prefix[0] == TW__KIND_AGG ? &spec : NULL, &e);
  if (rc != 0) return rc;
  size_t rows = st->nidents; /* room for every identity known now */
  if (g == NULL) {
    if ((st->ngroups + 1) * 10 > st->nslots * 7) {
      if ((rc = tw__table_grow(st)) != 0) {
        tw__entry_free(e);
        return rc;
      }
      mask = st->nslots - 1;
      i = (size_t)h & mask;
      while (st->slots[i].g != NULL) i = (i + 1) & mask;
    }
    g = calloc(1, tw__group_bytes(key_len, rows));
    if (g == NULL) {
      tw__entry_free(e);
      return TW_ENOMEM;
    }
    g->n = (uint32_t)rows;
    g->key_len = (uint16_t)key_len;
    if (key_len) memcpy(g->key, k, key_len);
    st->slots[i].hash = h;
    st->slots[i].g = g;
    st->ngroups++;
  } else if (id >= g->n) {
    uint32_t old = g->n;
    tw__group_t *ng = realloc(g, tw__group_bytes(key_len, rows));
    if (ng == NULL) {
      tw__entry_free(e);
      return TW_ENOMEM;
    }
    g = ng;
    g->n = (uint32_t)rows;
    memset(tw__rows(g) + old, 0, (rows - old) * sizeof(tw__entry_t *));
    st->slots[i].g = g;
  }
  st->mru = g;
  st->mru_slot = i;
  e->ref = 1;
  tw__rows(g)[id] = e;
  g->live++;
  st->nkeys++;
  st->stats.keys_in_memory = st->nkeys;
  *out = e;
  return 0;
}

/* Room for one more dirty entry, taken before the change so a failure loses nothing. */
static int tw__dirty_reserve(tw_state_t *st) {
  if (st->ndirty < st->dirty_cap) return 0;
  size_t n = st->dirty_cap ? st->dirty_cap * 2 : 256;
  tw__entry_t **d = realloc(st->dirty, n * sizeof *d);
  if (d == NULL) return TW_ENOMEM;
  st->dirty = d;
  st->dirty_cap = n;
  return 0;
}

static void tw__mark_dirty(tw_state_t *st, tw__entry_t *e) {
  if (e->dirty) return;
  e->dirty = 1;
  st->dirty[st->ndirty++] = e;
}

/* ---- open / close ---- */

static int tw__dd_load(tw_state_t *st, MDB_txn *txn, int *mrc);

int tw_state_open(const char *dir, const tw_state_opts_t *opts, tw_state_t **out) {
  int rc = TW_ESTATE, mrc = 0;
  const char *what = "";
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  tw_state_t *st = NULL;
  struct stat sb;

  if (dir == NULL || out == NULL) return TW_EINVAL;
  if (opts && opts->tz_set &&
      (opts->tz_offset_ms > TW_STATE_TZ_LIMIT_MS || opts->tz_offset_ms < -TW_STATE_TZ_LIMIT_MS))
    return TW_EINVAL;
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    fprintf(stderr, "tutorwatch: state %s: cannot create directory: %s\n", dir, strerror(errno));
    return TW_EIO;
  }
  if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
    fprintf(stderr, "tutorwatch: state %s: not a directory\n", dir);
    return TW_EIO;
  }
  st = calloc(1, sizeof *st);
  if (st == NULL) return TW_ENOMEM;
  st->dir = strdup(dir);
  st->nslots = TW__INITIAL_SLOTS;
  st->slots = calloc(st->nslots, sizeof *st->slots);
  if (st->dir == NULL || st->slots == NULL) {
    rc = TW_ENOMEM;
    goto fail;
  }
  st->map_size_bytes = opts && opts->map_size_bytes ? opts->map_size_bytes : TW__DEFAULT_MAP_BYTES;
  st->tz_offset_ms = opts && opts->tz_set ? opts->tz_offset_ms : TW_STATE_TZ_DEFAULT_MS;
  st->max_keys = opts ? opts->max_keys_in_memory : 0;

  what = "mdb_env_create";
  if ((mrc = mdb_env_create(&st->env)) != 0) goto fail;
  what = "mdb_env_set_maxdbs";
  if ((mrc = mdb_env_set_maxdbs(st->env, 6)) != 0) goto fail;
  what = "mdb_env_set_mapsize";
  if ((mrc = mdb_env_set_mapsize(st->env, st->map_size_bytes)) != 0) goto fail;
  what = "mdb_env_open";
  unsigned flags = MDB_NOTLS | (opts && opts->no_sync ? MDB_NOSYNC : 0);
  if ((mrc = mdb_env_open(st->env, dir, flags, 0600)) != 0) goto fail;
  int dead = 0;
  what = "mdb_reader_check";
  if ((mrc = mdb_reader_check(st->env, &dead)) != 0) goto fail;
  MDB_envinfo info;
  what = "mdb_env_info";
  if ((mrc = mdb_env_info(st->env, &info)) != 0) goto fail;
  st->map_size_bytes = info.me_mapsize;

  what = "open databases";
  if ((mrc = mdb_txn_begin(st->env, NULL, 0, &txn)) != 0) goto fail;
  if ((mrc = mdb_dbi_open(txn, "agg", MDB_CREATE, &st->dbi_agg)) != 0) goto fail;
  if ((mrc = mdb_dbi_open(txn, "cool", MDB_CREATE, &st->dbi_cool)) != 0) goto fail;
  if ((mrc = mdb_dbi_open(txn, "journal", MDB_CREATE, &st->dbi_journal)) != 0) goto fail;
  if ((mrc = mdb_dbi_open(txn, "meta", MDB_CREATE, &st->dbi_meta)) != 0) goto fail;
  if ((mrc = mdb_dbi_open(txn, "dedup_ts", MDB_CREATE, &st->dbi_dedup_ts)) != 0) goto fail;
  /* States written before the ids moved into memory also kept them by id in `dedup`: every record
   * there is in dedup_ts too, so it is dropped. */
  what = "drop the old dedup database";
  MDB_dbi old_dedup;
  mrc = mdb_dbi_open(txn, "dedup", 0, &old_dedup);
  if (mrc == 0)
    mrc = mdb_drop(txn, old_dedup, 1);
  else if (mrc == MDB_NOTFOUND)
    mrc = 0;
  if (mrc != 0) goto fail;
  what = "load dedup ids";
  if ((rc = tw__dd_load(st, txn, &mrc)) != 0) goto fail;
  rc = TW_ESTATE; /* what the failures below return (they leave mrc 0 for a corrupt record) */
  what = "read dedup meta";
  MDB_val dk = {strlen(TW__DEDUP_META), TW__DEDUP_META}, dv;
  mrc = mdb_get(txn, st->dbi_meta, &dk, &dv);
  if (mrc == 0) {
    if (dv.mv_size != 8) {
      fprintf(stderr, "tutorwatch: state %s: corrupt dedup record\n", dir);
      mrc = 0;
      goto fail;
    }
    const unsigned char *q = dv.mv_data;
    uint64_t u = 0;
    for (int i = 0; i < 8; i++) u |= (uint64_t)q[i] << (8 * i);
    st->dd_newest_ms = (int64_t)u;
    st->dd_newest_set = 1;
  } else if (mrc != MDB_NOTFOUND) {
    goto fail;
  }
  mrc = 0;
  what = "journal cursor";
  if ((mrc = mdb_cursor_open(txn, st->dbi_journal, &cur)) != 0) goto fail;
  MDB_val k, v;
  mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
  if (mrc == 0) {
    if (k.mv_size != 8) {
      fprintf(stderr, "tutorwatch: state %s: corrupt journal key\n", dir);
      goto fail;
    }
    const unsigned char *p = k.mv_data;
    for (int i = 0; i < 8; i++) st->jcommitted = (st->jcommitted << 8) | p[i];
  } else if (mrc != MDB_NOTFOUND) {
    goto fail;
  }
  mrc = 0;
  mdb_cursor_close(cur);
  cur = NULL;
  what = "commit at open";
  mrc = mdb_txn_commit(txn);
  txn = NULL;
  if (mrc != 0) goto fail;
  st->jassigned = st->jcommitted;
  st->stats.journal_seq = st->jassigned;
  st->stats.map_size_bytes = st->map_size_bytes;
  *out = st;
  return 0;
fail:
  if (mrc != 0) {
    tw__log(st, what, mrc);
    rc = TW_ESTATE;
  }
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  tw_state_close(st);
  return rc;
}

void tw_state_close(tw_state_t *st) {
  if (st == NULL) return;
  if (st->rtxn) mdb_txn_abort(st->rtxn);
  if (st->env) mdb_env_close(st->env);
  for (size_t i = 0; st->slots != NULL && i < st->nslots; i++) {
    tw__group_t *g = st->slots[i].g;
    if (g == NULL) continue;
    for (uint32_t r = 0; r < g->n; r++) tw__entry_free(tw__rows(g)[r]);
    free(g);
  }
  free(st->slots);
  free(st->idents);
  free(st->dirty);
  free(st->ks);
  free(st->jbuf);
  for (size_t i = 0; i < st->meta_cap; i++) free(st->meta[i].data);
  free(st->meta);
  free(st->enc);
  free(st->dels);
  free(st->dd);
  free(st->dd_bytes);
  free(st->dd_slots);
  tw__dds_free(&st->dds);
  free(st->pg);
  free(st->dir);
  free(st);
}

/* ---- aggregates and cooldowns ---- */

/* The entry of aggregate reference id for key (tw__lookup), or TW_EINVAL for a reference that is
 * not an aggregate's. */
static int tw__ref_entry(tw_state_t *st, tw_state_ref_t id, const char *key, size_t key_len,
                         tw__entry_t **e) {
  if (id >= st->nidents || st->idents[id].prefix[0] != TW__KIND_AGG) return TW_EINVAL;
  return tw__lookup(st, id, key, key_len, e);
}

int tw_state_agg_ref(tw_state_t *st, const tw_window_spec_t *spec, tw_state_ref_t *ref) {
  if (st == NULL || ref == NULL) return TW_EINVAL;
  return tw__ident_id(st, TW__KIND_AGG, spec, NULL, ref);
}

/* The entry of spec for key, for the test hooks. */
static int tw__agg_entry(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                         size_t key_len, tw__entry_t **e) {
  tw_state_ref_t ref;
  int rc = tw_state_agg_ref(st, spec, &ref);
  return rc != 0 ? rc : tw__ref_entry(st, ref, key, key_len, e);
}

/* Ask the CPU for an entry's header (its first two cache lines). */
static void tw__prefetch_entry(const tw__entry_t *e) {
  __builtin_prefetch(e);
  __builtin_prefetch((const unsigned char *)e + 64);
}

/* Ask the CPU for an entry's oldest and newest buckets (adds land in the newest); reads the
 * entry. */
static void tw__prefetch_buckets(const tw__entry_t *e) {
  if (e->b == NULL) return;
  const unsigned char *b = (const unsigned char *)e->b;
  size_t bytes = (size_t)e->nb * e->stride * sizeof(int64_t);
  __builtin_prefetch(b);
  if (bytes > 64) __builtin_prefetch(b + bytes - 64);
}

void tw_state_agg_prefetch_ref(tw_state_t *st, tw_state_ref_t id, const char *key, size_t key_len,
                               bool data) {
  size_t i;
  uint64_t h;
  if (st == NULL || key_len > TW_STATE_KEY_MAX || (key == NULL && key_len != 0)) return;
  if (id >= st->nidents) return;
  tw__group_t *g = tw__group_find(st, (const unsigned char *)key, key_len, &h, &i, true);
  if (g == NULL || id >= g->n) return;
  const tw__entry_t *e = tw__rows(g)[id];
  if (e == NULL) return;
  if (!data) {
    tw__prefetch_entry(e);
    return;
  }
  tw__prefetch_buckets(e);
  if (e->fn == TW_AGG_DISTINCT && e->dx != NULL) __builtin_prefetch(e->dx);
}

void tw_state_key_prefetch(tw_state_t *st, const char *key, size_t key_len, int stage) {
  if (st == NULL || key_len > TW_STATE_KEY_MAX || (key == NULL && key_len != 0)) return;
  if (stage < 0 || stage > 3) return;
  const unsigned char *k = (const unsigned char *)key;
  if (stage == 0) {
    uint64_t h = tw__hash(k, key_len);
    __builtin_prefetch(&st->slots[(size_t)h & (st->nslots - 1)]);
    return;
  }
  size_t i;
  uint64_t h;
  tw__group_t *g = tw__group_find(st, k, key_len, &h, &i, false);
  if (g == NULL) return;
  tw__entry_t **rows = tw__rows(g);
  if (stage == 1) {
    for (size_t off = 0; off < (size_t)g->n * sizeof *rows; off += 64)
      __builtin_prefetch((const unsigned char *)rows + off);
    return;
  }
  for (uint32_t r = 0; r < g->n; r++) {
    const tw__entry_t *e = rows[r];
    if (e == NULL) continue;
    if (stage == 2)
      tw__prefetch_entry(e);
    else
      tw__prefetch_buckets(e);
  }
}

void tw_state_agg_prefetch(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                           size_t key_len, bool data) {
  uint32_t id;
  if (st == NULL || tw__ident_id(st, TW__KIND_AGG, spec, NULL, &id) != 0) return;
  tw_state_agg_prefetch_ref(st, id, key, key_len, data);
}

static int tw__add(tw_state_t *st, tw__entry_t *e, int64_t ts_ms, int64_t value) {
  int too_old = 0;
  int rc = tw__dirty_reserve(st);
  if (rc != 0) return rc;
  rc = tw__window_add(e, ts_ms, value, &too_old);
  if (too_old) {
    st->stats.too_old++;
    return 0;
  }
  if (rc == 0 || rc == TW_EOVERFLOW) tw__mark_dirty(st, e);
  return rc;
}

int tw_state_agg_add(tw_state_t *st, const tw_window_spec_t *spec, const char *key, size_t key_len,
                     int64_t ts_ms, int64_t value) {
  tw_state_ref_t ref;
  if (st == NULL || ts_ms > TW__TS_LIMIT || ts_ms < -TW__TS_LIMIT) return TW_EINVAL;
  int rc = tw_state_agg_ref(st, spec, &ref);
  return rc != 0 ? rc : tw_state_agg_add_ref(st, ref, key, key_len, ts_ms, value);
}

int tw_state_agg_add_ref(tw_state_t *st, tw_state_ref_t ref, const char *key, size_t key_len,
                         int64_t ts_ms, int64_t value) {
  tw__entry_t *e;
  if (st == NULL) return TW_EINVAL;
  if (ts_ms > TW__TS_LIMIT || ts_ms < -TW__TS_LIMIT) return TW_EINVAL;
  int rc = tw__ref_entry(st, ref, key, key_len, &e);
  return rc != 0 ? rc : tw__add(st, e, ts_ms, value);
}

static void tw__get(const tw__entry_t *e, int64_t at_ms, tw_agg_out_t *out) {
  tw__window_get(e, at_ms, out);
  /* A count, sum or distinct count of nothing is 0: a value (see tw_state.h). */
  if (e->fn == TW_AGG_COUNT || e->fn == TW_AGG_SUM || e->fn == TW_AGG_DISTINCT) out->present = true;
}

int tw_state_agg_get(tw_state_t *st, const tw_window_spec_t *spec, const char *key, size_t key_len,
                     int64_t at_ms, tw_agg_out_t *out) {
  tw_state_ref_t ref;
  if (out == NULL) return TW_EINVAL;
  memset(out, 0, sizeof *out);
  if (st == NULL || at_ms > TW__TS_LIMIT || at_ms < -TW__TS_LIMIT) return TW_EINVAL;
  int rc = tw_state_agg_ref(st, spec, &ref);
  return rc != 0 ? rc : tw_state_agg_get_ref(st, ref, key, key_len, at_ms, out);
}

int tw_state_agg_get_ref(tw_state_t *st, tw_state_ref_t ref, const char *key, size_t key_len,
                         int64_t at_ms, tw_agg_out_t *out) {
  tw__entry_t *e;
  if (out == NULL) return TW_EINVAL;
  memset(out, 0, sizeof *out);
  if (st == NULL) return TW_EINVAL;
  if (at_ms > TW__TS_LIMIT || at_ms < -TW__TS_LIMIT) return TW_EINVAL;
  int rc = tw__ref_entry(st, ref, key, key_len, &e);
  if (rc != 0) return rc;
  tw__get(e, at_ms, out);
  return 0;
}

int tw_state_agg_value(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                       size_t key_len, int64_t at_ms, int64_t *out) {
  tw_agg_out_t o;
  if (out == NULL) return TW_EINVAL;
  int rc = tw_state_agg_get(st, spec, key, key_len, at_ms, &o);
  *out = o.value;
  return rc;
}

static int tw__series(tw__entry_t *e, int64_t at_ms, tw_agg_out_t *out, size_t cap, size_t *n) {
  if (cap < e->nb_max) return TW_ETOOBIG;
  tw__window_series(e, at_ms, out);
  *n = e->nb_max;
  return 0;
}

int tw_state_agg_series(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                        size_t key_len, int64_t at_ms, tw_agg_out_t *out, size_t cap, size_t *n) {
  tw_state_ref_t ref;
  if (n != NULL) *n = 0;
  if (st == NULL || spec == NULL || n == NULL || (out == NULL && cap != 0)) return TW_EINVAL;
  if (spec->bucket_ms <= 0) return TW_EINVAL;
  if (at_ms > TW__TS_LIMIT || at_ms < -TW__TS_LIMIT) return TW_EINVAL;
  int rc = tw_state_agg_ref(st, spec, &ref);
  return rc != 0 ? rc : tw_state_agg_series_ref(st, ref, key, key_len, at_ms, out, cap, n);
}

int tw_state_agg_series_ref(tw_state_t *st, tw_state_ref_t ref, const char *key, size_t key_len,
                            int64_t at_ms, tw_agg_out_t *out, size_t cap, size_t *n) {
  tw__entry_t *e;
  if (n != NULL) *n = 0;
  if (st == NULL || n == NULL || (out == NULL && cap != 0)) return TW_EINVAL;
  if (ref >= st->nidents || st->idents[ref].bucket_ms <= 0) return TW_EINVAL;
  if (at_ms > TW__TS_LIMIT || at_ms < -TW__TS_LIMIT) return TW_EINVAL;
  int rc = tw__ref_entry(st, ref, key, key_len, &e);
  return rc != 0 ? rc : tw__series(e, at_ms, out, cap, n);
}

int tw__state_agg_mem(tw_state_t *st, const tw_window_spec_t *spec, const char *key, size_t key_len,
                      size_t *bytes) {
  tw__entry_t *e;
  int rc = tw__agg_entry(st, spec, key, key_len, &e);
  if (rc != 0) return rc;
  *bytes = tw__entry_mem_bytes(e) + sizeof(tw__entry_t *); /* and its row in the key's group */
  return 0;
}

int tw__state_agg_buckets(tw_state_t *st, const tw_window_spec_t *spec, const char *key,
                          size_t key_len, uint32_t *nb, uint32_t *nb_max) {
  tw__entry_t *e;
  int rc = tw__agg_entry(st, spec, key, key_len, &e);
  if (rc != 0) return rc;
  if (!e->seen) return TW_ENOENT;
  *nb = e->nb;
  *nb_max = e->nb_max;
  return 0;
}

int tw_state_cooldown(tw_state_t *st, const char *rule, const char *key, size_t key_len,
                      int64_t ts_ms, int64_t cooldown_ms, bool *fire) {
  tw__entry_t *e;
  uint32_t id;
  if (st == NULL || fire == NULL) return TW_EINVAL;
  int rc = tw__ident_id(st, TW__KIND_COOL, NULL, rule, &id); /* the name's checks */
  if (rc != 0) return rc;
  if (key_len > TW_STATE_KEY_MAX) return TW_ETOOBIG;
  if ((key == NULL && key_len != 0) || cooldown_ms < 0 || cooldown_ms > TW__TS_LIMIT ||
      ts_ms > TW__TS_LIMIT || ts_ms < -TW__TS_LIMIT)
    return TW_EINVAL;
  if ((rc = tw__lookup(st, id, key, key_len, &e)) != 0) return rc;
  *fire = !e->seen || cooldown_ms == 0 || e->newest_ts_ms <= ts_ms - cooldown_ms;
  if (!*fire) return 0;
  if ((rc = tw__dirty_reserve(st)) != 0) {
    *fire = false;
    return rc;
  }
  e->seen = 1;
  e->newest_ts_ms = ts_ms;
  tw__mark_dirty(st, e);
  return 0;
}

/* ---- dedup ---- */

static tw__dd_rec_t *tw__dd_find(tw_state_t *st, const char *id, size_t len, uint64_t h) {
  if (st->dd_nslots == 0) return NULL;
  size_t mask = st->dd_nslots - 1;
  for (size_t i = (size_t)h & mask; st->dd_slots[i] != 0; i = (i + 1) & mask) {
    tw__dd_rec_t *r = &st->dd[st->dd_slots[i] - 1];
    if (r->hash == h && r->len == len && memcmp(st->dd_bytes + r->off, id, len) == 0) return r;
  }
  return NULL;
}

static void tw__dd_index(tw_state_t *st) {
  size_t mask = st->dd_nslots - 1;
  memset(st->dd_slots, 0, st->dd_nslots * sizeof st->dd_slots[0]);
  for (size_t k = 0; k < st->dd_n; k++) {
    size_t i = (size_t)st->dd[k].hash & mask;
    while (st->dd_slots[i] != 0) i = (i + 1) & mask;
    st->dd_slots[i] = (uint32_t)(k + 1);
  }
}

/* Stage (id, ts); all growth happens before anything changes, so TW_ENOMEM leaves no trace. */
static int tw__dd_stage(tw_state_t *st, const char *id, size_t len, uint64_t h, int64_t ts_ms) {
  if (st->dd_n >= UINT32_MAX - 1) return TW_ENOMEM;
  if (st->dd_n == st->dd_cap) {
    size_t n = st->dd_cap ? st->dd_cap * 2 : 1024;
    tw__dd_rec_t *r = realloc(st->dd, n * sizeof *r);
    if (r == NULL) return TW_ENOMEM;
    st->dd = r;
    st->dd_cap = n;
  }
  if (st->dd_blen + len > st->dd_bcap) {
    size_t n = st->dd_bcap ? st->dd_bcap : 16384;
    while (n < st->dd_blen + len) n *= 2;
    unsigned char *b = realloc(st->dd_bytes, n);
    if (b == NULL) return TW_ENOMEM;
    st->dd_bytes = b;
    st->dd_bcap = n;
  }
  if ((st->dd_n + 1) * 2 > st->dd_nslots) {
    size_t n = st->dd_nslots ? st->dd_nslots * 2 : 2048;
    uint32_t *sl = realloc(st->dd_slots, n * sizeof *sl);
    if (sl == NULL) return TW_ENOMEM;
    st->dd_slots = sl;
    st->dd_nslots = n;
    tw__dd_index(st);
  }
  tw__dd_rec_t *r = &st->dd[st->dd_n];
  r->hash = h;
  r->ts_ms = ts_ms;
  r->off = (uint32_t)st->dd_blen;
  r->len = (uint32_t)len;
  r->p = NULL;
  memcpy(st->dd_bytes + st->dd_blen, id, len);
  st->dd_blen += len;
  size_t mask = st->dd_nslots - 1, i = (size_t)h & mask;
  while (st->dd_slots[i] != 0) i = (i + 1) & mask;
  st->dd_slots[i] = (uint32_t)(++st->dd_n);
  st->stats.dedup_staged = st->dd_n;
  return 0;
}

int tw_state_dedup(tw_state_t *st, const char *event_id, size_t len, int64_t ts_ms,
                   int64_t horizon_ms, bool *dup) {
  if (dup != NULL) *dup = false;
  if (st == NULL || dup == NULL || event_id == NULL || len == 0 || horizon_ms <= 0 ||
      horizon_ms > TW__TS_LIMIT || ts_ms > TW__TS_LIMIT || ts_ms < -TW__TS_LIMIT)
    return TW_EINVAL;
  if (len > TW_STATE_EVENT_ID_MAX) return TW_ETOOBIG;
  int64_t newest = st->dd_newest_set && st->dd_newest_ms > ts_ms ? st->dd_newest_ms : ts_ms;
  int64_t cutoff = newest - horizon_ms;
  uint64_t h = tw__hash((const unsigned char *)event_id, len);
  int rc = 0;
  tw__dd_rec_t *r = tw__dd_find(st, event_id, len, h);
  if (r != NULL) {
    if (r->ts_ms >= cutoff) {
      *dup = true;
    } else if (ts_ms >= cutoff) {
      r->ts_ms = ts_ms; /* the staged delivery was forgotten: this one is recorded instead */
    }
  } else {
    int64_t seen_ms;
    if (tw__dds_get(&st->dds, (const unsigned char *)event_id, len, h, &seen_ms))
      *dup = seen_ms >= cutoff;
    if (!*dup && ts_ms >= cutoff && (rc = tw__dd_stage(st, event_id, len, h, ts_ms)) != 0)
      return rc;
  }
  if (*dup) st->stats.duplicates++;
  if (!st->dd_newest_set || newest != st->dd_newest_ms) st->dd_newest_dirty = 1;
  st->dd_newest_ms = newest;
  st->dd_newest_set = 1;
  st->dd_horizon_ms = horizon_ms;
  return 0;
}

static int tw__dd_cmp_id(const void *a, const void *b) {
  const tw__dd_rec_t *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->p, y->p, n);
  if (c != 0) return c;
  return (x->len > y->len) - (x->len < y->len);
}

static int tw__dd_cmp_ts(const void *a, const void *b) {
  const tw__dd_rec_t *x = a, *y = b;
  if (x->ts_ms != y->ts_ms) return x->ts_ms < y->ts_ms ? -1 : 1;
  return tw__dd_cmp_id(a, b);
}

/* Sortable time-index key: event time with the sign bit flipped, big-endian, then the id. */
static size_t tw__dd_tskey(unsigned char *out, int64_t ts_ms, const unsigned char *id, size_t len) {
  tw__put_be64(out, (uint64_t)ts_ms ^ ((uint64_t)1 << 63));
  memcpy(out + 8, id, len);
  return 8 + len;
}

int tw__state_dedup_committed(tw_state_t *st, size_t *ids, size_t *index) {
  MDB_txn *txn = NULL;
  MDB_stat b;
  int mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn);
  if (mrc == 0) mrc = mdb_stat(txn, st->dbi_dedup_ts, &b);
  if (txn) mdb_txn_abort(txn);
  if (mrc != 0) return TW_ESTATE;
  *ids = st->dds.n;
  *index = b.ms_entries;
  return 0;
}

/* ---- eviction ---- */

static int tw__dels_push(tw_state_t *st, const tw__entry_t *e) {
  size_t need = st->dels_len + sizeof(uint16_t) + e->key_len;
  if (tw__grow(&st->dels, &st->dels_cap, need, 4096) != 0) return TW_ENOMEM;
  memcpy(st->dels + st->dels_len, &e->key_len, sizeof(uint16_t));
  memcpy(st->dels + st->dels_len + sizeof(uint16_t), e->key, e->key_len);
  st->dels_len = need;
  return 0;
}

int tw_state_evict(tw_state_t *st, int64_t watermark_ms, size_t max_entries) {
  if (st == NULL) return TW_EINVAL;
  /* Clamped so watermark − window cannot wrap; INT64_MIN means "no watermark yet". */
  if (watermark_ms < -TW__TS_LIMIT) watermark_ms = -TW__TS_LIMIT;
  if (watermark_ms > TW__TS_LIMIT) watermark_ms = TW__TS_LIMIT;
  /* A scan step is an empty table slot or an entry kept; at most the whole table once. */
  size_t mask = st->nslots - 1, visited = 0, scanned = 0;
  size_t whole = st->nslots + st->nkeys;
  size_t scan_max =
      max_entries > whole / TW__EVICT_SCAN_FACTOR ? whole : max_entries * TW__EVICT_SCAN_FACTOR;
  size_t i = st->evict_pos & mask;
  while (visited < max_entries && scanned < scan_max && st->nkeys > 0) {
    tw__group_t *g = st->slots[i].g;
    if (g == NULL) {
      scanned++;
      i = (i + 1) & mask;
      continue;
    }
    tw__entry_t **rows = tw__rows(g);
    for (uint32_t r = 0; r < g->n; r++) { /* a group is visited whole */
      tw__entry_t *e = rows[r];
      if (e == NULL) continue;
      if (e->dirty) {
        scanned++;
        continue;
      }
      visited++;
      if (!e->seen) { /* holds nothing */
        tw__row_remove(st, g, r);
        st->stats.evicted_clean++;
        continue;
      }
      if (tw__window_expired(e, watermark_ms)) {
        int rc = tw__dels_push(st, e);
        if (rc != 0) {
          st->evict_pos = i;
          return rc;
        }
        tw__row_remove(st, g, r);
        st->stats.evicted_expired++;
        continue;
      }
      if (st->max_keys != 0 && st->nkeys > st->max_keys) {
        if (e->ref) {
          e->ref = 0;
        } else {
          tw__row_remove(st, g, r);
          st->stats.evicted_clean++;
          continue;
        }
      }
      scanned++;
    }
    if (g->live == 0) {
      tw__table_remove(st, i); /* slot i now holds a later group or none */
      continue;
    }
    i = (i + 1) & mask;
  }
  st->evict_pos = i;
  return 0;
}

/* ---- journal and meta staging ---- */

int tw_state_journal_append(tw_state_t *st, const char *json, size_t len, uint64_t *seq) {
  if (st == NULL || (json == NULL && len != 0)) return TW_EINVAL;
  if (len > TW_STATE_JOURNAL_MAX) return TW_ETOOBIG;
  size_t need = st->jlen + sizeof(uint32_t) + len;
  if (tw__grow(&st->jbuf, &st->jcap, need, 4096) != 0) return TW_ENOMEM;
  uint32_t l = (uint32_t)len;
  memcpy(st->jbuf + st->jlen, &l, sizeof l);
  if (len) memcpy(st->jbuf + st->jlen + sizeof l, json, len);
  st->jlen = need;
  st->jassigned++;
  st->stats.journal_seq = st->jassigned;
  if (seq) *seq = st->jassigned;
  return 0;
}

static tw__meta_rec_t *tw__meta_staged(tw_state_t *st, const char *name) {
  for (size_t i = 0; i < st->nmeta; i++)
    if (strcmp(st->meta[i].name, name) == 0) return &st->meta[i];
  return NULL;
}

int tw_state_meta_put(tw_state_t *st, const char *name, const void *data, size_t len) {
  if (st == NULL || name == NULL || (data == NULL && len != 0)) return TW_EINVAL;
  size_t nl = strnlen(name, TW_STATE_META_NAME_MAX + 1);
  if (nl > TW_STATE_META_NAME_MAX || len > TW_STATE_META_MAX) return TW_ETOOBIG;
  if (nl == 0 || strncmp(name, "tw.", 3) == 0) return TW_EINVAL;
  tw__meta_rec_t *m = tw__meta_staged(st, name);
  if (m == NULL) {
    if (st->nmeta == st->meta_cap) {
      size_t n = st->meta_cap ? st->meta_cap * 2 : 8;
      tw__meta_rec_t *r = realloc(st->meta, n * sizeof *r);
      if (r == NULL) return TW_ENOMEM;
      memset(r + st->meta_cap, 0, (n - st->meta_cap) * sizeof *r);
      st->meta = r;
      st->meta_cap = n;
    }
    m = &st->meta[st->nmeta]; /* its buffer, if any, is kept from an earlier batch */
  }
  if (len > m->cap) {
    unsigned char *b = realloc(m->data, len);
    if (b == NULL) return TW_ENOMEM;
    m->data = b;
    m->cap = len;
  }
  if (len) memcpy(m->data, data, len);
  m->len = len;
  if (m == &st->meta[st->nmeta]) {
    memcpy(m->name, name, nl + 1);
    st->nmeta++;
  }
  return 0;
}

int tw_state_meta_get(tw_state_t *st, const char *name, void *buf, size_t cap, size_t *len) {
  if (st == NULL || name == NULL || len == NULL || (buf == NULL && cap != 0)) return TW_EINVAL;
  size_t nl = strnlen(name, TW_STATE_META_NAME_MAX + 1);
  if (nl > TW_STATE_META_NAME_MAX || nl == 0) return TW_ENOENT;
  tw__meta_rec_t *m = tw__meta_staged(st, name);
  if (m != NULL) {
    *len = m->len;
    if (m->len > cap) return TW_ETOOBIG;
    if (m->len) memcpy(buf, m->data, m->len);
    return 0;
  }
  int rc = tw__rtxn_begin(st);
  if (rc != 0) return rc;
  MDB_val k = {nl, (void *)name}, v;
  int mrc = mdb_get(st->rtxn, st->dbi_meta, &k, &v);
  if (mrc == 0) {
    *len = v.mv_size;
    if (v.mv_size > cap) {
      rc = TW_ETOOBIG;
    } else if (v.mv_size) {
      memcpy(buf, v.mv_data, v.mv_size);
    }
  } else if (mrc == MDB_NOTFOUND) {
    rc = TW_ENOENT;
  } else {
    tw__log(st, "read meta", mrc);
    rc = TW_ESTATE;
  }
  return rc;
}

/* ---- group commit ---- */

static int tw__entry_cmp(const void *a, const void *b) {
  const tw__entry_t *x = *(tw__entry_t *const *)a, *y = *(tw__entry_t *const *)b;
  size_t n = x->key_len < y->key_len ? x->key_len : y->key_len;
  int c = memcmp(x->key, y->key, n);
  if (c != 0) return c;
  return (x->key_len > y->key_len) - (x->key_len < y->key_len);
}

/* Staged dedup ids in id order into `dedup`, then in time order into `dedup_ts`. */
static int tw__commit_dedup(tw_state_t *st, MDB_txn *txn) {
  unsigned char kb[8 + TW_STATE_EVENT_ID_MAX], vb[8];
  int mrc;
  if (st->dd_n == 0) return 0;
  for (size_t i = 0; i < st->dd_n; i++) st->dd[i].p = st->dd_bytes + st->dd[i].off;
  qsort(st->dd, st->dd_n, sizeof st->dd[0], tw__dd_cmp_ts);
  for (size_t i = 0; i < st->dd_n; i++) {
    MDB_val k = {tw__dd_tskey(kb, st->dd[i].ts_ms, st->dd[i].p, st->dd[i].len), kb}, v = {0, vb};
    if ((mrc = mdb_put(txn, st->dbi_dedup_ts, &k, &v, 0)) != 0) return mrc;
  }
  return 0;
}

/* Remember an id the commit in progress purged, for the in-memory set once the commit succeeds. */
static int tw__pg_push(tw_state_t *st, int64_t ts_ms, const unsigned char *id, size_t len) {
  size_t need = st->pg_len + 10 + len;
  if (tw__grow(&st->pg, &st->pg_cap, need, 16384) != 0) return ENOMEM; /* an LMDB-style code */
  uint16_t l = (uint16_t)len;
  memcpy(st->pg + st->pg_len, &ts_ms, 8);
  memcpy(st->pg + st->pg_len + 8, &l, 2);
  memcpy(st->pg + st->pg_len + 10, id, len);
  st->pg_len = need;
  return 0;
}

/* Forget the oldest committed ids older than newest − horizon, at most a budget of them, from
 * dedup_ts; the in-memory set follows after the commit (tw__dd_apply). */
static int tw__commit_purge(tw_state_t *st, MDB_txn *txn, uint64_t *purged) {
  MDB_cursor *cur = NULL;
  *purged = 0;
  st->pg_len = 0;
  if (st->dd_horizon_ms <= 0 || !st->dd_newest_set) return 0;
  int64_t cutoff = st->dd_newest_ms - st->dd_horizon_ms;
  size_t budget = TW__PURGE_BASE + 2 * st->dd_n;
  int mrc = mdb_cursor_open(txn, st->dbi_dedup_ts, &cur);
  if (mrc != 0) return mrc;
  MDB_val k, v;
  while (*purged < budget && (mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0) {
    if (k.mv_size < 9 || k.mv_size > 8 + TW_STATE_EVENT_ID_MAX) {
      fprintf(stderr, "tutorwatch: state %s: corrupt dedup time index key\n", st->dir);
      mrc = MDB_CORRUPTED;
      break;
    }
    int64_t ts = (int64_t)(tw__get_be64(k.mv_data) ^ ((uint64_t)1 << 63));
    if (ts >= cutoff) break;
    if ((mrc = tw__pg_push(st, ts, (const unsigned char *)k.mv_data + 8, k.mv_size - 8)) != 0)
      break;
    if ((mrc = mdb_cursor_del(cur, 0)) != 0) break;
    (*purged)++;
  }
  if (mrc == MDB_NOTFOUND) mrc = 0;
  mdb_cursor_close(cur);
  return mrc;
}

/* After a successful commit: the staged ids join the in-memory set, then the purged ones leave
 * it (an id staged and purged by the same commit ends absent, as in dedup_ts). Cannot fail: the
 * room was reserved before the commit. */
static void tw__dd_apply(tw_state_t *st) {
  for (size_t i = 0; i < st->dd_n; i++) {
    const tw__dd_rec_t *r = &st->dd[i];
    tw__dds_put(&st->dds, st->dd_bytes + r->off, r->len, r->hash, r->ts_ms);
  }
  for (size_t off = 0; off < st->pg_len;) {
    int64_t ts;
    uint16_t l;
    memcpy(&ts, st->pg + off, 8);
    memcpy(&l, st->pg + off + 8, 2);
    const unsigned char *id = st->pg + off + 10;
    tw__dds_forget(&st->dds, id, l, tw__hash(id, l), ts);
    off += 10 + (size_t)l;
  }
  st->pg_len = 0;
}

/* tw__dd_load: fill the in-memory set from dedup_ts (at open). Returns 0, TW_ENOMEM, or
 * TW_ESTATE with *mrc the LMDB code (or 0 for a corrupt key, reported here). */
static int tw__dd_load(tw_state_t *st, MDB_txn *txn, int *mrc) {
  MDB_cursor *cur = NULL;
  MDB_val k, v;
  int rc = 0;
  if ((*mrc = mdb_cursor_open(txn, st->dbi_dedup_ts, &cur)) != 0) return TW_ESTATE;
  for (*mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); *mrc == 0;
       *mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size < 9 || k.mv_size > 8 + TW_STATE_EVENT_ID_MAX) {
      fprintf(stderr, "tutorwatch: state %s: corrupt dedup time index key\n", st->dir);
      *mrc = 0;
      rc = TW_ESTATE;
      break;
    }
    const unsigned char *id = (const unsigned char *)k.mv_data + 8;
    size_t len = k.mv_size - 8;
    int64_t ts = (int64_t)(tw__get_be64(k.mv_data) ^ ((uint64_t)1 << 63));
    if ((rc = tw__dds_reserve(&st->dds, 1, len)) != 0 ||
        (rc = tw__dds_put(&st->dds, id, len, tw__hash(id, len), ts)) != 0)
      break;
  }
  if (*mrc == MDB_NOTFOUND) *mrc = 0;
  if (*mrc != 0) rc = TW_ESTATE;
  mdb_cursor_close(cur);
  st->stats.dedup_ids_committed = st->dds.n;
  st->stats.dedup_memory_bytes = st->dds.bytes;
  return rc;
}

/* One attempt; returns an LMDB code (0 on success), or -1 for an injected failure. */
static int tw__commit_once(tw_state_t *st, const char **what, uint64_t *purged) {
  MDB_txn *txn = NULL;
  int mrc;
  *what = "begin write transaction";
  mrc = mdb_txn_begin(st->env, NULL, 0, &txn);
  if (mrc == MDB_MAP_RESIZED) {
    if ((mrc = mdb_env_set_mapsize(st->env, 0)) == 0) mrc = mdb_txn_begin(st->env, NULL, 0, &txn);
  }
  if (mrc != 0) return mrc;
  /* Deletes first: an expired entry reloaded and changed since is written again below. */
  *what = "delete evicted entry";
  for (size_t off = 0; off < st->dels_len;) {
    uint16_t l;
    memcpy(&l, st->dels + off, sizeof l);
    const unsigned char *key = st->dels + off + sizeof l;
    MDB_val k = {(size_t)l - 1, (void *)(key + 1)};
    mrc = mdb_del(txn, key[0] == TW__KIND_AGG ? st->dbi_agg : st->dbi_cool, &k, NULL);
    if (mrc != 0 && mrc != MDB_NOTFOUND) goto fail;
    off += sizeof l + l;
  }
  *what = "write entry";
  for (size_t i = 0; i < st->ndirty; i++) {
    tw__entry_t *e = st->dirty[i];
    size_t need = tw__entry_encoded_max(e);
    if (need > st->enc_cap) {
      size_t n = st->enc_cap ? st->enc_cap : 256;
      while (n < need) n *= 2;
      unsigned char *b = realloc(st->enc, n);
      if (b == NULL) {
        mdb_txn_abort(txn);
        return ENOMEM;
      }
      st->enc = b;
      st->enc_cap = n;
    }
    MDB_val k = {(size_t)e->key_len - 1, e->key + 1};
    MDB_val v = {tw__entry_encode(e, st->enc), st->enc};
    mrc = mdb_put(txn, e->key[0] == TW__KIND_AGG ? st->dbi_agg : st->dbi_cool, &k, &v, 0);
    if (mrc != 0) goto fail;
  }
  *what = "write dedup ids";
  if ((mrc = tw__commit_dedup(st, txn)) != 0) goto fail;
  *what = "purge dedup ids";
  if ((mrc = tw__commit_purge(st, txn, purged)) != 0) goto fail;
  if (st->dd_newest_dirty) {
    unsigned char nb[8];
    uint64_t u = (uint64_t)st->dd_newest_ms;
    for (int b = 0; b < 8; b++) nb[b] = (unsigned char)(u >> (8 * b));
    MDB_val k = {strlen(TW__DEDUP_META), TW__DEDUP_META}, v = {8, nb};
    *what = "write dedup meta";
    if ((mrc = mdb_put(txn, st->dbi_meta, &k, &v, 0)) != 0) goto fail;
  }
  *what = "append journal";
  uint64_t seq = st->jcommitted;
  for (size_t off = 0; off < st->jlen;) {
    uint32_t l;
    memcpy(&l, st->jbuf + off, sizeof l);
    unsigned char kb[8];
    seq++;
    for (int i = 0; i < 8; i++) kb[i] = (unsigned char)(seq >> (56 - 8 * i));
    MDB_val k = {8, kb}, v = {l, st->jbuf + off + sizeof l};
    mrc = mdb_put(txn, st->dbi_journal, &k, &v, MDB_APPEND);
    if (mrc != 0) goto fail;
    off += sizeof l + l;
  }
  *what = "write meta";
  for (size_t i = 0; i < st->nmeta; i++) {
    MDB_val k = {strlen(st->meta[i].name), st->meta[i].name};
    MDB_val v = {st->meta[i].len, st->meta[i].data};
    mrc = mdb_put(txn, st->dbi_meta, &k, &v, 0);
    if (mrc != 0) goto fail;
  }
  if (st->fail_commits > 0) {
    st->fail_commits--;
    *what = "injected failure";
    mrc = -1;
    goto fail;
  }
  *what = "commit";
  return mdb_txn_commit(txn);
fail:
  mdb_txn_abort(txn);
  return mrc;
}

int tw_state_copy_compact(tw_state_t *st, const char *dir) {
  if (st == NULL || dir == NULL) return TW_EINVAL;
  int mrc = mdb_env_copy2(st->env, dir, MDB_CP_COMPACT);
  if (mrc != 0) {
    fprintf(stderr, "tutorwatch: cannot copy the state to '%s': %s\n", dir, mdb_strerror(mrc));
    return TW_EIO;
  }
  return 0;
}

int tw_state_commit(tw_state_t *st) {
  const char *what = "";
  int mrc;
  uint64_t purged = 0;
  if (st == NULL) return TW_EINVAL;
  /* With ids past the horizon in LMDB, a commit also purges them; skipping an empty commit only
   * delays that to the next batch. */
  if (st->ndirty == 0 && st->jlen == 0 && st->nmeta == 0 && st->dd_n == 0 && st->dels_len == 0 &&
      !st->dd_newest_dirty)
    return 0;
  /* Room in the in-memory id set first, so that nothing can fail once LMDB has committed. */
  if (tw__dds_reserve(&st->dds, st->dd_n, st->dd_blen) != 0) return TW_ENOMEM;
  tw__rtxn_release(st);
  st->ks_n = st->ks_scanned = 0; /* the sort below reorders the dirty array */
  if (st->ndirty > 1) qsort(st->dirty, st->ndirty, sizeof st->dirty[0], tw__entry_cmp);
  for (int attempt = 0;; attempt++) {
    mrc = tw__commit_once(st, &what, &purged);
    if (mrc != MDB_MAP_FULL || attempt >= TW__MAX_GROWS) break;
    /* No transaction may be open while the map is resized. */
    if (st->rtxn) {
      mdb_txn_abort(st->rtxn);
      st->rtxn = NULL;
      st->rtxn_active = 0;
    }
    size_t n = st->map_size_bytes * 2;
    if (n < st->map_size_bytes) break;
    int grc = mdb_env_set_mapsize(st->env, n);
    if (grc != 0) {
      tw__log(st, "grow map", grc);
      break;
    }
    st->map_size_bytes = n;
    st->stats.map_grows++;
    st->stats.map_size_bytes = n;
  }
  if (mrc != 0) {
    if (mrc == -1)
      fprintf(stderr, "tutorwatch: state %s: commit: injected failure\n", st->dir);
    else
      tw__log(st, what, mrc);
    if (st->dd_n) tw__dd_index(st); /* the commit sorted the staged ids */
    st->pg_len = 0;
    return mrc == ENOMEM ? TW_ENOMEM : TW_ESTATE;
  }
  tw__dd_apply(st);
  st->stats.dedup_ids_committed = st->dds.n;
  st->stats.dedup_memory_bytes = st->dds.bytes;
  for (size_t i = 0; i < st->ndirty; i++) st->dirty[i]->dirty = 0;
  st->stats.entries_written += st->ndirty;
  st->stats.commits++;
  st->ndirty = 0;
  st->jlen = 0;
  st->jcommitted = st->jassigned;
  st->nmeta = 0;
  st->dels_len = 0;
  if (st->dd_n) {
    st->dd_n = 0;
    st->dd_blen = 0;
    memset(st->dd_slots, 0, st->dd_nslots * sizeof st->dd_slots[0]);
  }
  st->stats.dedup_staged = 0;
  st->stats.dedup_ids_purged += purged;
  st->dd_newest_dirty = 0;
  return 0;
}

int tw_state_journal_foreach(tw_state_t *st, uint64_t since, tw_state_journal_cb cb, void *ud) {
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  int rc = 0, mrc = 0;
  const char *what = "journal read transaction";
  if (st == NULL || cb == NULL) return TW_EINVAL;
  if (since == UINT64_MAX) return 0;
  /* Its own transaction: the callback may read state, which reuses st->rtxn. */
  if ((mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)) != 0) goto fail;
  what = "journal cursor";
  if ((mrc = mdb_cursor_open(txn, st->dbi_journal, &cur)) != 0) goto fail;
  unsigned char kb[8];
  uint64_t from = since + 1;
  for (int i = 0; i < 8; i++) kb[i] = (unsigned char)(from >> (56 - 8 * i));
  MDB_val k = {8, kb}, v;
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size != 8) {
      fprintf(stderr, "tutorwatch: state %s: corrupt journal key\n", st->dir);
      rc = TW_ESTATE;
      goto fail;
    }
    const unsigned char *p = k.mv_data;
    uint64_t seq = 0;
    for (int i = 0; i < 8; i++) seq = (seq << 8) | p[i];
    rc = cb(ud, seq, v.mv_data, v.mv_size);
    if (rc != 0) goto fail;
  }
  what = "journal iterate";
  if (mrc == MDB_NOTFOUND) mrc = 0;
fail:
  if (mrc != 0) {
    tw__log(st, what, mrc);
    rc = TW_ESTATE;
  }
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  return rc;
}

/* LMDB's default key order: bytes, then the shorter first. */
static int tw__key_order(const unsigned char *a, size_t an, const unsigned char *b, size_t bn) {
  int c = memcmp(a, b, an < bn ? an : bn);
  return c != 0 ? c : (an > bn) - (an < bn);
}

/* Whole keys (kind byte + LMDB key) in LMDB order: with one prefix shared, the order of the keys
 * after it. */
static int tw__ks_cmp(const void *x, const void *y) {
  const tw__entry_t *a = *(tw__entry_t *const *)x, *b = *(tw__entry_t *const *)y;
  return tw__key_order(a->key, a->key_len, b->key, b->key_len);
}

/* tw__staged_keys: bring the cache of dirty entries of the aggregate (prefix) up to date, sorted
 * by key. The dirty array only grows between commits (dirty entries are never evicted) and a
 * commit empties the cache, so each call scans only the entries dirtied since the previous one
 * and merges them in: a sweep a day costs the day's new dirty entries, not all of them. */
static int tw__staged_keys(tw_state_t *st, const unsigned char *prefix, size_t plen) {
  if (st->ks_plen != plen || memcmp(st->ks_prefix, prefix, plen) != 0) {
    memcpy(st->ks_prefix, prefix, plen);
    st->ks_plen = plen;
    st->ks_n = 0;
    st->ks_scanned = 0;
  }
  size_t old_n = st->ks_n, old_scanned = st->ks_scanned;
  for (; st->ks_scanned < st->ndirty; st->ks_scanned++) {
    tw__entry_t *e = st->dirty[st->ks_scanned];
    if (e->key[0] != TW__KIND_AGG || e->key_len < 1 + plen || memcmp(e->key + 1, prefix, plen) != 0)
      continue;
    if (st->ks_n == st->ks_cap) {
      size_t n = st->ks_cap ? st->ks_cap * 2 : 64;
      tw__entry_t **k = st->fail_keys_grow ? NULL : realloc(st->ks, n * sizeof *k);
      st->fail_keys_grow = 0;
      if (k == NULL) { /* forget what this call appended: the next one scans it again */
        st->ks_scanned = old_scanned;
        st->ks_n = old_n;
        return TW_ENOMEM;
      }
      st->ks = k;
      st->ks_cap = n;
    }
    st->ks[st->ks_n++] = e;
  }
  if (st->ks_n == old_n) return 0;
  qsort(st->ks + old_n, st->ks_n - old_n, sizeof *st->ks, tw__ks_cmp);
  if (old_n == 0) return 0;
  /* Merge the sorted new tail into the sorted head, from the back, through a copy of the tail. */
  size_t nt = st->ks_n - old_n;
  tw__entry_t **tail = malloc(nt * sizeof *tail);
  if (tail == NULL) {
    qsort(st->ks, st->ks_n, sizeof *st->ks, tw__ks_cmp); /* no memory for the merge: sort it all */
    return 0;
  }
  memcpy(tail, st->ks + old_n, nt * sizeof *tail);
  size_t i = old_n, j = nt, o = st->ks_n;
  while (j > 0) {
    if (i > 0 && tw__ks_cmp(&st->ks[i - 1], &tail[j - 1]) > 0)
      st->ks[--o] = st->ks[--i];
    else
      st->ks[--o] = tail[--j];
  }
  free(tail);
  return 0;
}

int tw_state_agg_keys(tw_state_t *st, const tw_window_spec_t *spec, tw_state_key_cb cb, void *ud) {
  unsigned char prefix[TW__STATE_DBKEY_MAX];
  size_t plen, si = 0, ns;
  MDB_txn *txn = NULL;
  MDB_cursor *cur = NULL;
  int rc, mrc = 0;
  const char *what = "keys read transaction";
  if (st == NULL || spec == NULL || cb == NULL) return TW_EINVAL;
  if ((rc = tw__agg_dbkey(spec, NULL, 0, prefix, &plen)) != 0) return rc;
  if ((rc = tw__staged_keys(st, prefix, plen)) != 0) return rc;
  /* The keys cb adds land after ks_n (listed by the next call, not this one); nothing frees a
   * dirty entry before the commit, which cb cannot start. */
  ns = st->ks_n;
  /* Its own transaction: the callback reads state, which reuses st->rtxn. */
  if ((mrc = mdb_txn_begin(st->env, NULL, MDB_RDONLY, &txn)) != 0) goto fail;
  what = "keys cursor";
  if ((mrc = mdb_cursor_open(txn, st->dbi_agg, &cur)) != 0) goto fail;
  MDB_val k = {plen, prefix}, v;
  /* Merge the committed keys (cursor order) with the staged ones; a key in both is called once. */
  for (mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); mrc == 0;
       mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
    if (k.mv_size < plen || memcmp(k.mv_data, prefix, plen) != 0) break;
    const unsigned char *kp = (const unsigned char *)k.mv_data + plen;
    size_t kn = k.mv_size - plen;
    int c = 1;
    while (si < ns) {
      const tw__entry_t *e = st->ks[si];
      const unsigned char *ep = e->key + 1 + plen;
      size_t en = e->key_len - 1u - plen;
      if ((c = tw__key_order(ep, en, kp, kn)) >= 0) break;
      if ((rc = cb(ud, (const char *)ep, en)) != 0) goto fail;
      si++;
    }
    if (si < ns && c == 0) si++;
    if ((rc = cb(ud, (const char *)kp, kn)) != 0) goto fail;
  }
  what = "keys iterate";
  if (mrc == MDB_NOTFOUND) mrc = 0;
  for (; mrc == 0 && si < ns; si++) {
    const tw__entry_t *e = st->ks[si];
    if ((rc = cb(ud, (const char *)e->key + 1 + plen, e->key_len - 1u - plen)) != 0) goto fail;
  }
fail:
  if (mrc != 0) {
    tw__log(st, what, mrc);
    rc = TW_ESTATE;
  }
  if (cur) mdb_cursor_close(cur);
  if (txn) mdb_txn_abort(txn);
  return rc;
}

void tw__state_fail_keys_grow(tw_state_t *st) {
  st->fail_keys_grow = 1;
}

void tw__state_fail_commits(tw_state_t *st, int n) {
  st->fail_commits = n;
}

void tw_state_stats(const tw_state_t *st, tw_state_stats_t *out) {
  if (out == NULL) return;
  if (st == NULL) {
    memset(out, 0, sizeof *out);
    return;
  }
  *out = st->stats;
}
