/*
 * fuzz_source_file.c: the file source's framing (JSON Lines and msgpack) on arbitrary bytes.
 *
 * The first input byte picks the format (bit 0) and max_record_bytes (bits 1-3); the rest is the
 * file. Every delivered record must be a true slice of the input at its offset_bytes, no longer
 * than its full length, within the bound unless flagged, with increasing line numbers, and the
 * source must reach TW_EOF after a bounded number of polls. Violations abort.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tw_error.h"
#include "tw_source.h"

typedef struct check {
  const uint8_t *input;
  size_t size, max_record_bytes;
  uint64_t last_line;
  int broken_seen;
} check_t;

static int check_record(void *ud, const tw_record_t *rec) {
  check_t *c = ud;
  if (c->broken_seen) abort(); /* nothing may follow a broken msgpack record */
  if (rec->len_bytes > rec->full_len_bytes) abort();
  if (rec->line <= c->last_line) abort();
  c->last_line = rec->line;
  if (rec->offset_bytes > c->size || rec->len_bytes > c->size - rec->offset_bytes) abort();
  if (rec->len_bytes > 0 && memcmp(rec->data, c->input + rec->offset_bytes, rec->len_bytes) != 0)
    abort();
  if (rec->flags & TW_REC_TRUNCATED) {
    if (rec->full_len_bytes <= c->max_record_bytes || rec->len_bytes > TW_REC_HEAD_BYTES) abort();
    if (rec->reason == NULL) abort();
  } else if (rec->flags & TW_REC_BROKEN) {
    if (rec->reason == NULL || rec->len_bytes > TW_REC_HEAD_BYTES) abort();
    c->broken_seen = 1;
  } else {
    if (rec->len_bytes != rec->full_len_bytes || rec->len_bytes > c->max_record_bytes) abort();
    if (rec->len_bytes == 0) abort(); /* empty lines are never delivered */
  }
  if (rec->format != TW_FORMAT_JSONL && rec->format != TW_FORMAT_MSGPACK) abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const size_t kMax[8] = {1, 2, 7, 16, 64, 4096, 5000, 65536};
  static int fd = -1;
  static char path[64];
  if (size == 0) return 0;
  if (fd < 0) {
    char tmpl[] = "/tmp/tw_fuzz_source_XXXXXX";
    fd = mkstemp(tmpl);
    if (fd < 0) abort();
    unlink(tmpl); /* reopened through /proc, gone when the process ends */
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  }
  check_t c = {data + 1, size - 1, kMax[(data[0] >> 1) & 7], 0, 0};
  if (ftruncate(fd, 0) != 0) abort();
  if (c.size > 0 && pwrite(fd, c.input, c.size, 0) != (ssize_t)c.size) abort();
  tw_source_opts_t opts = {.format = (data[0] & 1) ? TW_FORMAT_MSGPACK : TW_FORMAT_JSONL,
                           .max_record_bytes = c.max_record_bytes};
  const tw_source_vt_t *vt = tw_source_find("file");
  tw_source_t *src = NULL;
  if (vt->open(path, &opts, &src) != 0) abort();
  int rc = 0;
  for (size_t polls = 0; polls <= c.size + 2; polls++) {
    rc = src->vt->poll(src, 7, check_record, &c);
    if (rc < 0) break;
  }
  if (rc != TW_EOF) abort();
  src->vt->close(src);
  return 0;
}
