/*
 * tw_source.h: event sources behind one small vtable.
 *
 * A source yields raw records (one JSON line or one msgpack object each) with their input
 * position; decoding is the pipeline's job. Sources are registered in one table (source.c), so a
 * new transport is one new file and one row. Sources are single-threaded.
 */
#ifndef TW_SOURCE_H
#define TW_SOURCE_H

#include <stddef.h>
#include <stdint.h>

typedef enum tw_format {
  TW_FORMAT_AUTO = 0, /* per record: '{' is JSON, a msgpack map marker is msgpack */
  TW_FORMAT_JSONL,
  TW_FORMAT_MSGPACK
} tw_format_t;

/* tw_format_parse: "jsonl"/"json" → JSONL, "msgpack"/"mp" → MSGPACK, "auto"; else TW_EINVAL. */
int tw_format_parse(const char *s, tw_format_t *out);

/* tw_format_from_path: MSGPACK for *.msgpack / *.mp, JSONL otherwise. */
tw_format_t tw_format_from_path(const char *path);

/* Record flags. */
#define TW_REC_TRUNCATED                                                                    \
  1u                     /* record exceeded the source's bound; data holds its first bytes, \
                            full_len_bytes its real length; it must be dead-lettered */
#define TW_REC_BROKEN 2u /* framing failed (malformed msgpack); data holds what was skipped */
#define TW_REC_UNTERMINATED 4u /* the input ended inside this record: a last line without its
                                  newline, or a msgpack object cut short (with BROKEN). A file
                                  still being written may complete it later */
#define TW_REC_SECONDARY 8u /* shards: a copy of a record for a shard that owns another of its keys
                               (a city's aggregates); it updates only what that shard owns and is
                               never dead-lettered or counted there (the primary copy is) */
#define TW_REC_HEAD_BYTES                                                \
  4096u /* a truncated or broken record carries at most this many of its \
           first bytes, enough for the dead-letter file */

typedef struct tw_record {
  const char *data; /* borrowed for the callback's duration */
  size_t len_bytes;
  uint64_t full_len_bytes; /* == len_bytes unless TW_REC_TRUNCATED */
  tw_format_t format;      /* never AUTO when delivered */
  uint32_t flags;
  const char *reason; /* for TW_REC_BROKEN/TRUNCATED: a reason code ("too_long", ...) */
  /* input position, for the dead-letter file and resume */
  const char *origin;    /* file path, "-" for stdin, or the endpoint */
  uint64_t offset_bytes; /* byte offset of the record in a file or stream */
  uint64_t line;         /* 1-based line (JSONL), or record number (msgpack, messages) */
} tw_record_t;

/* Called once per record; a non-zero return stops the poll and is returned by it. */
typedef int (*tw_record_cb)(void *ud, const tw_record_t *rec);

typedef struct tw_source_opts {
  tw_format_t format;      /* AUTO: from the path's extension (files) or per message */
  size_t max_record_bytes; /* 0 = TW_EVENT_MAX_BYTES */
  /* Resume (regular files only): start reading at this byte offset, which is the end of a record
   * already processed (a JSONL line's terminator there is skipped), numbering the next record
   * start_line + 1. Both 0 = from the beginning. Ignored for stdin and sockets. */
  uint64_t start_offset_bytes;
  uint64_t start_line;
  /* Sockets only: NULL, or the keys (tw_auth.h) that make the endpoint a CURVE server admitting
   * operators only; borrowed, must outlive the source. */
  const struct tw_auth *auth;
} tw_source_opts_t;

typedef struct tw_source tw_source_t;

typedef struct tw_source_vt {
  const char *name; /* "file", "zmq-pull", "zmq-router" (tw_acked.h) */
  /* open: target is a path ("-" = stdin) or an endpoint. Errors: TW_ENOENT, TW_EIO, TW_EZMQ,
   * TW_ENOMEM. On success *out is owned by the caller (close). */
  int (*open)(const char *target, const tw_source_opts_t *opts, tw_source_t **out);
  /* poll: deliver up to max_records available records without blocking (files read ahead in
   * bounded chunks). Returns the number delivered (≥ 0), TW_EOF at the end of a finite input,
   * the callback's non-zero value, or a TW_E... error. */
  int (*poll)(tw_source_t *src, size_t max_records, tw_record_cb cb, void *ud);
  /* fd: a descriptor that becomes readable when poll may deliver more (for libuv uv_poll), or
   * -1 when the source is always ready (files). For ZeroMQ it is ZMQ_FD: edge-triggered, so
   * the owner must poll until it returns 0 after each wake-up. */
  int (*fd)(tw_source_t *src);
  void (*close)(tw_source_t *src); /* NULL accepted */
} tw_source_vt_t;

struct tw_source {
  const tw_source_vt_t *vt; /* first member of every implementation */
};

/* tw_source_find: the vtable registered under name, or NULL. */
const tw_source_vt_t *tw_source_find(const char *name);

#endif
