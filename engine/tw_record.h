/*
 * tw_record.h: the event record of `run --record DIR`: an append-only, compact, checksummed log
 * of every accepted event (after pseudonymisation and dedup, before rules), indexed by event
 * time and institution, that `tutorwatch replay` reads back (docs/replay.md).
 *
 * Layout. DIR holds one stream per writer (shard): DIR/stream-K/, each a sequence of segments
 * NNNNNN.seg. A segment is a sequence of records, each a fixed 48-byte header and a payload:
 *
 *   magic "TR" (2) | version 1 (1) | flags 0 (1) | payload length (u32 LE) | event time (i64 LE,
 *   epoch ms) | institution_id (18 bytes, NUL-padded) | region (6 bytes, NUL-padded) |
 *   checksum (8 bytes: SipHash-2-4, libsodium crypto_shorthash under a fixed all-zero key, of
 *   the 40 header bytes before it and the payload) | payload
 *
 * The payload is one msgpack map of the decoded, pseudonymised event (field name → value; times
 * as epoch ms), which tw_decode_msgpack decodes back into the same event. A segment is sealed at
 * TW_RECORD_SEGMENT_RECORDS records or TW_RECORD_SEGMENT_BYTES bytes, and when the recorder
 * is closed (the next run starts a new segment); sealing writes its index
 * NNNNNN.idx (event-time range, record count, and per institution the offsets of its records),
 * so a replay of one institution over one month reads only that institution's records of the
 * segments whose time range meets the month. The last, open segment has no index yet: readers
 * scan its headers. A torn last record (a writer killed mid-write) is cut when the stream is
 * opened for writing again, and ignored by readers.
 *
 * Writers: one tw_recorder_t for all streams; each stream is written by one thread only (its
 * shard), so streams need no lock. Readers never trust the bytes: lengths are bounded, every
 * record's checksum is verified, an index that does not match its segment is ignored (the
 * segment is scanned instead).
 */
#ifndef TW_RECORD_H
#define TW_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tw_event.h"
#include "tw_schema.h"

#define TW_RECORD_HEADER_BYTES 48
#define TW_RECORD_MAX_PAYLOAD (TW_EVENT_MAX_BYTES + 8192u) /* msgpack of one decoded event */
#define TW_RECORD_SEGMENT_RECORDS 65536u
#define TW_RECORD_SEGMENT_BYTES (64u << 20)
#define TW_RECORD_MAX_STREAMS 256
#define TW_RECORD_INST_LEN 18
#define TW_RECORD_REGION_LEN 6

typedef struct tw_recorder tw_recorder_t;

/*
 * tw_recorder_open: open (creating it, mode 0700) the record directory dir for appending with
 * n_streams streams (1 ≤ n ≤ TW_RECORD_MAX_STREAMS; one per shard). Each stream's open segment
 * is checked and a torn last record cut; a segment damaged before its end is left as it is (a
 * replay reports it) and the stream goes on in a new segment. no_sync: tw_recorder_sync writes without fdatasync.
 * Holds an exclusive lock (flock on dir/lock) until closed, so two engines cannot append to one
 * record. Returns 0 with *out owned by the caller (tw_recorder_close), or TW_EINVAL (bad n),
 * TW_EIO (cannot create, open, lock or read; errbuf says which), TW_EEXIST (another process
 * holds the lock), TW_ENOMEM.
 */
int tw_recorder_open(const char *dir, int n_streams, bool no_sync, tw_recorder_t **out,
                     char *errbuf, size_t errcap);

/*
 * tw_recorder_append: append ev (decoded and pseudonymised; schema gives the field names) to
 * stream (0..n_streams-1) as one record, buffered. Seals the segment and starts the next one
 * when it is full. Allocates only when the stream's index of its open segment grows.
 * Thread rules: one thread per stream. Returns 0, TW_EINVAL (bad stream), TW_ETOOBIG (the
 * encoded event exceeds TW_RECORD_MAX_PAYLOAD: not recorded), TW_EIO, TW_ENOMEM.
 */
int tw_recorder_append(tw_recorder_t *r, int stream, const tw_schema_t *schema,
                       const tw_event_t *ev);

/*
 * tw_recorder_sync: write what stream has buffered and, unless no_sync, fdatasync it. The
 * pipeline calls it before each group commit, so every event the state has committed is in the
 * record. Returns 0, TW_EINVAL (bad stream), TW_EIO.
 */
int tw_recorder_sync(tw_recorder_t *r, int stream);

/* tw_recorder_close: sync every stream, seal each open segment that holds records (write its
 * index), and release the lock; NULL accepted. Returns 0 or TW_EIO (a write failed; what was
 * written before stays readable). */
int tw_recorder_close(tw_recorder_t *r);

/* tw_record_encode_event: the msgpack payload of ev into buf (cap bytes). Returns the length,
 * or TW_ETOOBIG. No allocation. */
int tw_record_encode_event(const tw_schema_t *schema, const tw_event_t *ev, uint8_t *buf,
                           size_t cap);

/* One record read back; pointers are valid for the callback only. */
typedef struct tw_record_entry {
  int64_t ts_ms;
  char institution_id[TW_RECORD_INST_LEN + 1]; /* NUL-terminated */
  char region[TW_RECORD_REGION_LEN + 1];
  const uint8_t *payload; /* msgpack map of the event */
  size_t payload_len;
  int stream;       /* which stream (shard) recorded it */
  uint32_t segment; /* segment number */
  uint64_t offset;  /* byte offset of the record's header in the segment */
} tw_record_entry_t;

/*
 * tw_record_parse: check a record at buf[0..len): magic, version, payload length within
 * TW_RECORD_MAX_PAYLOAD and the checksum. On success fills e (payload pointing into buf) and
 * *rec_len (header + payload). Returns 0, TW_EAGAIN (buf ends inside the record: torn or not
 * yet written), TW_EPARSE (bad magic, version or length), TW_EINVAL (checksum mismatch).
 * No allocation; it is the decoder tests/fuzz/fuzz_record.c fuzzes.
 */
int tw_record_parse(const uint8_t *buf, size_t len, tw_record_entry_t *e, size_t *rec_len);

/* Which records a scan delivers. A record is selected when its event time is in [from_ms, to_ms]
 * and, if any institution or region prefix is given, its institution is one of them or its
 * region starts with the prefix. */
typedef struct tw_record_filter {
  int64_t from_ms, to_ms; /* INT64_MIN / INT64_MAX: open */
  const char *const *institutions;
  size_t n_institutions;
  const char *region_prefix; /* NULL: none; 1 to 6 digits */
} tw_record_filter_t;

typedef struct tw_record_scan_stats {
  uint64_t segments, segments_skipped; /* skipped by their index: time or institution */
  uint64_t records_read;               /* headers read and checked */
  uint64_t delivered;
  uint64_t bytes_read;
  int64_t min_ts_ms, max_ts_ms; /* event-time range of the whole record (every stream); INT64_MAX
                                   / INT64_MIN when empty. Known from the indexes before the first
                                   delivery (tw_record_scan_info) */
  uint64_t total_records;       /* records in the whole record */
} tw_record_scan_stats_t;

/* Called per delivered record, in merged event-time order; non-zero stops the scan and is
 * returned by it. */
typedef int (*tw_record_entry_cb)(void *ud, const tw_record_entry_t *e);

/*
 * tw_record_scan_info: the event-time range and record count of the record in dir (every
 * stream), from the segment indexes and a header scan of the open segments. Fills st's
 * min_ts_ms, max_ts_ms and total_records. Returns 0, TW_ENOENT (no record there), TW_EIO,
 * TW_ENOMEM; errbuf says why.
 */
int tw_record_scan_info(const char *dir, tw_record_scan_stats_t *st, char *errbuf, size_t errcap);

/*
 * tw_record_scan: deliver the selected records of dir to cb, merging the streams by (event
 * time, institution, payload bytes), so the order does not depend on how many streams (shards)
 * recorded them; within a stream the recorded order is kept. Segments whose index shows no
 * selected record are not read. Reads at most one record per stream at a time (memory: one
 * TW_RECORD_MAX_PAYLOAD buffer and one segment index per stream). A record that fails its check
 * in the middle of a segment stops the scan with TW_EINVAL and a message naming the file and
 * offset; a torn last record of an open segment ends that stream quietly. Returns 0, cb's value,
 * TW_ENOENT, TW_EIO, TW_EINVAL, TW_ENOMEM. st (may be NULL) is filled.
 */
int tw_record_scan(const char *dir, const tw_record_filter_t *f, tw_record_entry_cb cb, void *ud,
                   tw_record_scan_stats_t *st, char *errbuf, size_t errcap);

#endif
