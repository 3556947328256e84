/*
 * dedup_set.h: the committed dedup ids, in memory (internal to engine/state.c and its tests).
 *
 * tw_state remembers every accepted event id for the dedup horizon. LMDB keeps them in one
 * time-ordered database (`dedup_ts`: event time + id), appended and purged from the front at each
 * group commit; this set is the index that answers "was this id recorded, and at what time?"
 * without a B-tree lookup per event or a random B-tree write per id at commit. It is rebuilt from
 * `dedup_ts` when the state opens, and changed only after a commit succeeded, so it always holds
 * exactly the ids LMDB holds.
 *
 * Layout: an open-addressing table (linear probing, power of two, load ≤ 0.5, backward-shift
 * deletion) of {hash, record}; records {event time, chunk, length, id bytes} are packed into 64 KiB
 * chunks in insertion order, each chunk freed when its last record is forgotten (ids are
 * forgotten roughly in the order they were recorded, so chunks empty from the oldest).
 * Memory: about 16 / 0.5 bytes of table plus 16 + len rounded up to 8 bytes of record per id.
 * Not thread-safe; one per tw_state.
 */
#ifndef TW_DEDUP_SET_H
#define TW_DEDUP_SET_H

#include <stddef.h>
#include <stdint.h>

typedef struct tw__dds_slot {
  uint64_t hash;
  unsigned char *rec; /* NULL = empty */
} tw__dds_slot_t;

typedef struct tw__dds_chunk {
  unsigned char *mem; /* NULL = a free descriptor */
  size_t cap, used;   /* bytes */
  size_t live;        /* records in it still indexed */
} tw__dds_chunk_t;

typedef struct tw__dds {
  tw__dds_slot_t *slots;
  size_t nslots, n; /* n ids recorded */
  tw__dds_chunk_t *chunks;
  size_t nchunks, chunks_cap;
  size_t cur; /* chunk taking new records; valid when nchunks > 0 */
  size_t bytes; /* table and chunks allocated */
} tw__dds_t;

/* tw__dds_get: 1 and *ts_ms the recorded event time when id (len bytes, hash h) is in the set,
 * else 0. */
int tw__dds_get(const tw__dds_t *s, const unsigned char *id, size_t len, uint64_t h,
                int64_t *ts_ms);

/* tw__dds_reserve: make room for n more ids of total id bytes `bytes`, so that the next n
 * tw__dds_put calls of at most that many bytes cannot fail. 0 or TW_ENOMEM (nothing changed). */
int tw__dds_reserve(tw__dds_t *s, size_t n, size_t bytes);

/* tw__dds_put: record id with ts_ms, replacing the id's earlier record. Needs room reserved by
 * tw__dds_reserve (never allocates); returns 0, or TW_ENOMEM without room. */
int tw__dds_put(tw__dds_t *s, const unsigned char *id, size_t len, uint64_t h, int64_t ts_ms);

/* tw__dds_forget: forget id if it is recorded with exactly ts_ms (a later record of the same id,
 * recorded again after it expired, stays). Never allocates. */
void tw__dds_forget(tw__dds_t *s, const unsigned char *id, size_t len, uint64_t h, int64_t ts_ms);

/* tw__dds_free: release everything; the set is empty and usable again. */
void tw__dds_free(tw__dds_t *s);

#endif
