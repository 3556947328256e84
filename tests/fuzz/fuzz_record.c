/*
 * fuzz_record.c: libFuzzer target for the event record's decoder (engine/record.c).
 *
 * Input: mode (1 byte), index length (u16 LE), index bytes, segment bytes. The segment bytes are
 * walked with tw_record_parse (resynchronising byte by byte after a refusal); every record that
 * parses must lie inside the input, and its payload, when it decodes as an event, must encode
 * back to bytes that decode and encode to the same bytes. Then the segment (with the index when
 * mode bit 0 is set; its checksum is fixed up so the fuzzer explores the index's structure, and
 * with mode bit 1 its segment size too) is written as a one-stream record in a private
 * directory and scanned whole, by institution and by time: any outcome but a crash, a sanitizer
 * report or an unbounded allocation is fine.
 */
#define _XOPEN_SOURCE 700
#include <fcntl.h>
#include <sodium.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tw_event.h"
#include "tw_record.h"
#include "tw_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static tw_schema_t *schema;
static tw_event_t ev, ev2;
static uint8_t enc1[TW_RECORD_MAX_PAYLOAD], enc2[TW_RECORD_MAX_PAYLOAD];
static char dir[64], seg_path[128], idx_path[128];

static void cleanup(void) {
  unlink(seg_path);
  unlink(idx_path);
  char sdir[96];
  snprintf(sdir, sizeof sdir, "%s/stream-0", dir);
  rmdir(sdir);
  rmdir(dir);
}

static void init(void) {
  char path[4096];
  const char *root = getenv("TW_SOURCE_DIR");
  tw_schema_error_t err;
  snprintf(path, sizeof path, "%s/rules/packs/schema.yaml", root ? root : TW_SOURCE_DIR);
  if (tw_schema_load(path, &schema, &err) != 0 || tw_event_init(&ev) != 0 ||
      tw_event_init(&ev2) != 0 || sodium_init() < 0) {
    fprintf(stderr, "fuzz_record: %s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
    abort();
  }
  snprintf(dir, sizeof dir, "/tmp/tw-fuzz-record-%ld", (long)getpid());
  char sdir[96];
  snprintf(sdir, sizeof sdir, "%s/stream-0", dir);
  mkdir(dir, 0700);
  mkdir(sdir, 0700);
  snprintf(seg_path, sizeof seg_path, "%s/000001.seg", sdir);
  snprintf(idx_path, sizeof idx_path, "%s/000001.idx", sdir);
  atexit(cleanup);
}

static void put_file(const char *path, const uint8_t *b, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) abort();
  if (n > 0 && write(fd, b, n) != (ssize_t)n) abort();
  close(fd);
}

static int count_cb(void *ud, const tw_record_entry_t *e) {
  uint64_t *n = ud;
  if (e->payload == NULL || e->payload_len == 0 || e->payload_len > TW_RECORD_MAX_PAYLOAD) abort();
  (*n)++;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (schema == NULL) init();
  if (size < 3) return 0;
  unsigned mode = data[0];
  size_t idx_len = (size_t)data[1] | (size_t)data[2] << 8;
  data += 3, size -= 3;
  if (idx_len > size) idx_len = size;
  const uint8_t *idx = data, *seg = data + idx_len;
  size_t seg_len = size - idx_len;

  for (size_t at = 0; at < seg_len;) {
    tw_record_entry_t e;
    size_t rl = 0;
    if (tw_record_parse(seg + at, seg_len - at, &e, &rl) != 0) {
      at++;
      continue;
    }
    if (rl < TW_RECORD_HEADER_BYTES || rl > seg_len - at ||
        e.payload != seg + at + TW_RECORD_HEADER_BYTES ||
        e.payload_len != rl - TW_RECORD_HEADER_BYTES)
      abort();
    tw_decode_error_t derr;
    if (tw_decode_msgpack(schema, (const char *)e.payload, e.payload_len, &ev, &derr) == 0) {
      int n1 = tw_record_encode_event(schema, &ev, enc1, sizeof enc1);
      if (n1 < 0) abort(); /* a decoded event always fits */
      if (tw_decode_msgpack(schema, (const char *)enc1, (size_t)n1, &ev2, &derr) != 0) abort();
      int n2 = tw_record_encode_event(schema, &ev2, enc2, sizeof enc2);
      if (n2 != n1 || memcmp(enc1, enc2, (size_t)n1) != 0) abort();
    }
    at += rl;
  }

  put_file(seg_path, seg, seg_len);
  unlink(idx_path);
  if ((mode & 1) && idx_len >= 48) {
    uint8_t *b = malloc(idx_len);
    if (b == NULL) abort();
    memcpy(b, idx, idx_len);
    if (mode & 2)
      for (int i = 0; i < 8; i++) b[32 + i] = (uint8_t)((uint64_t)seg_len >> (8 * i));
    crypto_shorthash(b + idx_len - 8, b, idx_len - 8, (const unsigned char[16]){0});
    put_file(idx_path, b, idx_len);
    free(b);
  }
  char err[256];
  uint64_t n = 0;
  tw_record_scan_stats_t st;
  (void)tw_record_scan_info(dir, &st, err, sizeof err);
  tw_record_filter_t all = {INT64_MIN, INT64_MAX, NULL, 0, NULL};
  (void)tw_record_scan(dir, &all, count_cb, &n, &st, err, sizeof err);
  const char *insts[] = {"52440106MJL176301K", "91110000600037341L"};
  tw_record_filter_t some = {INT64_MIN, INT64_MAX, insts, 2, NULL};
  (void)tw_record_scan(dir, &some, count_cb, &n, &st, err, sizeof err);
  tw_record_filter_t range = {1740787200000LL, 1743465600000LL, NULL, 0, "44"};
  (void)tw_record_scan(dir, &range, count_cb, &n, &st, err, sizeof err);
  return 0;
}
