/*
 * test_source_file.c: the file / stdin source: JSON Lines framing (CRLF, empty lines, last line
 * without a newline, chunk boundaries), over-long lines (one truncated record, bounded memory,
 * the next line intact), msgpack streams (framing across chunks, truncated and malformed input),
 * positions, poll's max_records and stop contract, and the format helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <msgpack.h>

#include "tw_error.h"
#include "tw_source.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#endif
#ifdef TEST_ASAN
size_t __sanitizer_get_current_allocated_bytes(
    void); /* ASan runtime; header not always installed */
static size_t heap_in_use(void) {
  return __sanitizer_get_current_allocated_bytes();
}
#else
#include <malloc.h>
static size_t heap_in_use(void) {
  struct mallinfo2 mi = mallinfo2();
  return mi.uordblks + mi.hblkhd; /* small blocks + mmapped large ones */
}
#endif

#define MAX_RECS 64
#define REC_COPY 5000

typedef struct got_rec {
  char data[REC_COPY];
  size_t len;
  uint64_t full_len, offset, line;
  uint32_t flags;
  tw_format_t format;
  char reason[32];
  char origin[256];
} got_rec_t;

typedef struct collector {
  got_rec_t recs[MAX_RECS];
  size_t n;                        /* records kept (the first MAX_RECS) */
  uint64_t total;                  /* records seen */
  uint64_t next_offset, last_line; /* for the contiguity check of long streams */
  int contiguous;                  /* every record started where the previous ended (+1 for '\n') */
  size_t heap_base, heap_peak;
  int stop_at; /* return 42 from the stop_at-th callback (1-based); 0 = never */
} collector_t;

static char g_dir[] = "/tmp/tw_test_source_XXXXXX";

static int collect(void *ud, const tw_record_t *rec) {
  collector_t *c = ud;
  c->total++;
  if (c->heap_base != 0) {
    size_t h = heap_in_use();
    if (h > c->heap_peak) c->heap_peak = h;
  }
  if (c->n < MAX_RECS) {
    got_rec_t *g = &c->recs[c->n++];
    g->len = rec->len_bytes;
    memcpy(g->data, rec->data, rec->len_bytes < REC_COPY ? rec->len_bytes : REC_COPY);
    g->full_len = rec->full_len_bytes;
    g->offset = rec->offset_bytes;
    g->line = rec->line;
    g->flags = rec->flags;
    g->format = rec->format;
    snprintf(g->reason, sizeof g->reason, "%s", rec->reason ? rec->reason : "");
    snprintf(g->origin, sizeof g->origin, "%s", rec->origin ? rec->origin : "");
  }
  if (c->stop_at > 0 && (uint64_t)c->stop_at == c->total) return 42;
  return 0;
}

static int collect_stream(void *ud, const tw_record_t *rec) {
  collector_t *c = ud;
  if (rec->offset_bytes != c->next_offset || rec->line != c->last_line + 1) c->contiguous = 0;
  c->next_offset = rec->offset_bytes + rec->len_bytes + (rec->format == TW_FORMAT_JSONL ? 1 : 0);
  c->last_line = rec->line;
  c->total++;
  return 0;
}

static void write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
}

static void path_in_dir(char *buf, size_t cap, const char *name) {
  snprintf(buf, cap, "%s/%s", g_dir, name);
}

static tw_source_t *open_file(const char *path, tw_format_t format, size_t max_record_bytes) {
  const tw_source_vt_t *vt = tw_source_find("file");
  assert_non_null(vt);
  tw_source_opts_t opts = {.format = format, .max_record_bytes = max_record_bytes};
  tw_source_t *src = NULL;
  assert_int_equal(vt->open(path, &opts, &src), 0);
  assert_non_null(src);
  assert_int_equal(src->vt->fd(src), -1);
  return src;
}

/* drain: poll until TW_EOF; returns the number of polls that delivered records. */
static int drain(tw_source_t *src, size_t max_records, tw_record_cb cb, collector_t *c) {
  int polls = 0;
  for (int guard = 0; guard < 100000; guard++) {
    int rc = src->vt->poll(src, max_records, cb, c);
    if (rc == TW_EOF) return polls;
    assert_true(rc > 0);
    assert_true((size_t)rc <= max_records);
    polls++;
  }
  fail_msg("source never reached TW_EOF");
  return polls;
}

static void assert_rec(const got_rec_t *g, const char *data, uint64_t offset, uint64_t line) {
  assert_int_equal(g->len, strlen(data));
  assert_memory_equal(g->data, data, g->len);
  assert_int_equal(g->full_len, g->len);
  assert_int_equal(g->offset, offset);
  assert_int_equal(g->line, line);
  assert_int_equal(g->flags, 0);
}

static void test_jsonl_lines_crlf_empty(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "basic.jsonl");
  const char text[] = "{\"a\":1}\n\r\n\n{\"b\":2}\r\n{\"c\":3}";
  write_file(path, text, sizeof text - 1);
  tw_source_t *src = open_file(path, TW_FORMAT_AUTO, 0);
  static collector_t c;
  memset(&c, 0, sizeof c);
  drain(src, 100, collect, &c);
  assert_int_equal(c.n, 3);
  assert_rec(&c.recs[0], "{\"a\":1}", 0, 1);
  assert_rec(&c.recs[1], "{\"b\":2}", 11, 4);
  /* The last line without '\n' is still delivered, marked as possibly unfinished. */
  assert_int_equal(c.recs[2].flags, TW_REC_UNTERMINATED);
  c.recs[2].flags = 0;
  assert_rec(&c.recs[2], "{\"c\":3}", 20, 5);
  for (size_t i = 0; i < 3; i++) {
    assert_int_equal(c.recs[i].format, TW_FORMAT_JSONL);
    assert_string_equal(c.recs[i].origin, path);
  }
  /* After the end, it stays at the end. */
  assert_int_equal(src->vt->poll(src, 10, collect, &c), TW_EOF);
  src->vt->close(src);
}

static void test_max_records_and_stop(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "three.jsonl");
  const char text[] = "{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n";
  write_file(path, text, sizeof text - 1);
  static collector_t c;
  memset(&c, 0, sizeof c);
  tw_source_t *src = open_file(path, TW_FORMAT_JSONL, 0);
  assert_int_equal(src->vt->poll(src, 0, collect, &c), 0);
  assert_int_equal(src->vt->poll(src, 2, collect, &c), 2);
  assert_int_equal(src->vt->poll(src, 2, collect, &c), 1);
  assert_int_equal(src->vt->poll(src, 2, collect, &c), TW_EOF);
  assert_int_equal(c.n, 3);
  src->vt->close(src);

  /* A callback's non-zero value stops the poll and is returned; the record counts as taken. */
  memset(&c, 0, sizeof c);
  c.stop_at = 2;
  src = open_file(path, TW_FORMAT_JSONL, 0);
  assert_int_equal(src->vt->poll(src, 10, collect, &c), 42);
  assert_int_equal(c.n, 2);
  c.stop_at = 0;
  assert_int_equal(src->vt->poll(src, 10, collect, &c), 1);
  assert_rec(&c.recs[2], "{\"n\":3}", 16, 3);
  src->vt->close(src);
}

static void test_overlong_line_bounded(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "long.jsonl");
  const size_t long_len = 10u * 1024 * 1024;
  const char first[] = "{\"a\":1}\n", last[] = "{\"b\":2}\n";
  size_t total = strlen(first) + long_len + 2 + strlen(last);
  char *text = malloc(total);
  assert_non_null(text);
  memcpy(text, first, strlen(first));
  text[strlen(first)] = '{';
  for (size_t i = 1; i < long_len; i++) text[strlen(first) + i] = (char)('a' + i % 26);
  memcpy(text + strlen(first) + long_len, "\r\n", 2);
  memcpy(text + strlen(first) + long_len + 2, last, strlen(last));
  write_file(path, text, total);

  static collector_t c;
  memset(&c, 0, sizeof c);
  c.heap_base = heap_in_use();
  tw_source_t *src = open_file(path, TW_FORMAT_JSONL, 0);
  drain(src, 100, collect, &c);
  src->vt->close(src);

  assert_int_equal(c.n, 3);
  assert_rec(&c.recs[0], "{\"a\":1}", 0, 1);
  got_rec_t *g = &c.recs[1];
  assert_int_equal(g->flags, TW_REC_TRUNCATED);
  assert_string_equal(g->reason, "too_long");
  assert_int_equal(g->len, TW_REC_HEAD_BYTES);
  assert_int_equal(g->full_len, long_len); /* the "\r\n" is not part of the line */
  assert_memory_equal(g->data, text + strlen(first), TW_REC_HEAD_BYTES);
  assert_int_equal(g->offset, strlen(first));
  assert_int_equal(g->line, 2);
  assert_rec(&c.recs[2], "{\"b\":2}", strlen(first) + long_len + 2, 3);
  /* The 10 MB line never sat in memory: the source's own buffer is about 1.1 MiB. */
  assert_true(c.heap_peak > 0);
  assert_true(c.heap_peak - c.heap_base < 3u * 1024 * 1024);
  free(text);
}

static void test_overlong_small_bound(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "bound.jsonl");
  /* With max_record_bytes 10: 10 bytes pass (also before "\r\n"), 11 are truncated, and an
   * over-long last line without a newline is still reported once. */
  const char text[] = "0123456789\n0123456789\r\n01234567890\nok\n0123456789ABCDEF";
  write_file(path, text, sizeof text - 1);
  static collector_t c;
  memset(&c, 0, sizeof c);
  tw_source_t *src = open_file(path, TW_FORMAT_JSONL, 10);
  drain(src, 1, collect, &c);
  src->vt->close(src);
  assert_int_equal(c.n, 5);
  assert_rec(&c.recs[0], "0123456789", 0, 1);
  assert_rec(&c.recs[1], "0123456789", 11, 2);
  assert_int_equal(c.recs[2].flags, TW_REC_TRUNCATED);
  assert_int_equal(c.recs[2].full_len, 11);
  assert_int_equal(c.recs[2].len, 11); /* shorter than the 4 KiB head: all of it */
  assert_int_equal(c.recs[2].offset, 23);
  assert_int_equal(c.recs[2].line, 3);
  assert_rec(&c.recs[3], "ok", 35, 4);
  assert_int_equal(c.recs[4].flags, TW_REC_TRUNCATED);
  assert_int_equal(c.recs[4].full_len, 16);
  assert_memory_equal(c.recs[4].data, "0123456789ABCDEF", 16);
  assert_int_equal(c.recs[4].line, 5);
}

static void test_jsonl_across_chunks(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "many.jsonl");
  const size_t n = 60000; /* ~3.5 MB: several 1 MiB chunks, lines cut at chunk edges */
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  for (size_t i = 0; i < n; i++)
    fprintf(f, "{\"event_id\":\"e-%zu\",\"pad\":\"%0*d\"}\n", i, (int)(i % 40), 0);
  assert_int_equal(fclose(f), 0);
  static collector_t c;
  memset(&c, 0, sizeof c);
  c.contiguous = 1;
  tw_source_t *src = open_file(path, TW_FORMAT_JSONL, 0);
  drain(src, 777, collect_stream, &c);
  src->vt->close(src);
  assert_int_equal(c.total, n);
  assert_true(c.contiguous);
}

/* pack_event: one msgpack map {"event_id": id, "amount_fen": amount} into sb. */
static void pack_event(msgpack_sbuffer *sb, const char *id, int64_t amount) {
  msgpack_packer pk;
  msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
  msgpack_pack_map(&pk, 2);
  msgpack_pack_str(&pk, 8);
  msgpack_pack_str_body(&pk, "event_id", 8);
  msgpack_pack_str(&pk, strlen(id));
  msgpack_pack_str_body(&pk, id, strlen(id));
  msgpack_pack_str(&pk, 10);
  msgpack_pack_str_body(&pk, "amount_fen", 10);
  msgpack_pack_int64(&pk, amount);
}

static void test_msgpack_stream(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "events.msgpack");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  size_t ends[3];
  pack_event(&sb, "p-1", 600000);
  ends[0] = sb.size;
  pack_event(&sb, "p-22", 1);
  ends[1] = sb.size;
  pack_event(&sb, "p-333", -5);
  ends[2] = sb.size;
  write_file(path, sb.data, sb.size);
  static collector_t c;
  memset(&c, 0, sizeof c);
  tw_source_t *src = open_file(path, TW_FORMAT_AUTO, 0); /* .msgpack → msgpack */
  drain(src, 2, collect, &c);
  src->vt->close(src);
  assert_int_equal(c.n, 3);
  for (size_t i = 0; i < 3; i++) {
    size_t start = i == 0 ? 0 : ends[i - 1];
    assert_int_equal(c.recs[i].format, TW_FORMAT_MSGPACK);
    assert_int_equal(c.recs[i].flags, 0);
    assert_int_equal(c.recs[i].offset, start);
    assert_int_equal(c.recs[i].len, ends[i] - start);
    assert_memory_equal(c.recs[i].data, sb.data + start, ends[i] - start);
    assert_int_equal(c.recs[i].line, i + 1);
  }
  msgpack_sbuffer_destroy(&sb);
}

static void test_msgpack_across_chunks(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "many.mp");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  const size_t n = 120000; /* ~3.6 MB */
  char id[32];
  for (size_t i = 0; i < n; i++) {
    snprintf(id, sizeof id, "e-%zu", i);
    pack_event(&sb, id, (int64_t)i * 1000);
  }
  write_file(path, sb.data, sb.size);
  msgpack_sbuffer_destroy(&sb);
  static collector_t c;
  memset(&c, 0, sizeof c);
  c.contiguous = 1;
  tw_source_t *src = open_file(path, TW_FORMAT_AUTO, 0);
  drain(src, 1000, collect_stream, &c);
  src->vt->close(src);
  assert_int_equal(c.total, n);
  assert_true(c.contiguous);
}

static void test_msgpack_truncated(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "cut.msgpack");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  pack_event(&sb, "p-1", 1);
  pack_event(&sb, "p-2", 2);
  size_t two = sb.size;
  pack_event(&sb, "p-3", 3);
  size_t cut = two + (sb.size - two) / 2;
  write_file(path, sb.data, cut);
  static collector_t c;
  memset(&c, 0, sizeof c);
  tw_source_t *src = open_file(path, TW_FORMAT_MSGPACK, 0);
  drain(src, 10, collect, &c);
  assert_int_equal(src->vt->poll(src, 10, collect, &c), TW_EOF);
  src->vt->close(src);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.recs[0].flags, 0);
  assert_int_equal(c.recs[1].flags, 0);
  got_rec_t *g = &c.recs[2];
  assert_int_equal(g->flags, TW_REC_BROKEN | TW_REC_UNTERMINATED); /* the input ended inside it */
  assert_string_equal(g->reason, "truncated");
  assert_int_equal(g->offset, two);
  assert_int_equal(g->line, 3);
  assert_int_equal(g->len, cut - two);
  assert_memory_equal(g->data, sb.data + two, cut - two);
  msgpack_sbuffer_destroy(&sb);
}

static void test_msgpack_malformed_ends_input(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "bad.msgpack");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  pack_event(&sb, "p-1", 1);
  size_t one = sb.size;
  msgpack_sbuffer_write(&sb, "\xc1", 1); /* reserved type byte */
  pack_event(&sb, "p-2", 2);             /* never delivered: msgpack cannot resync */
  write_file(path, sb.data, sb.size);
  static collector_t c;
  memset(&c, 0, sizeof c);
  tw_source_t *src = open_file(path, TW_FORMAT_MSGPACK, 0);
  drain(src, 10, collect, &c);
  src->vt->close(src);
  assert_int_equal(c.n, 2);
  assert_int_equal(c.recs[1].flags, TW_REC_BROKEN);
  assert_string_equal(c.recs[1].reason, "invalid_msgpack");
  assert_int_equal(c.recs[1].offset, one);
  assert_int_equal(c.recs[1].len, sb.size - one);
  msgpack_sbuffer_destroy(&sb);
}

static void test_msgpack_over_bound_is_truncated(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "bound.mp");
  msgpack_sbuffer sb;
  msgpack_sbuffer_init(&sb);
  pack_event(&sb, "p-1", 1);
  size_t one = sb.size;
  pack_event(&sb, "p-2-with-a-much-longer-event-id", 2);
  pack_event(&sb, "p-3", 3);
  write_file(path, sb.data, sb.size);
  static collector_t c;
  memset(&c, 0, sizeof c);
  tw_source_t *src = open_file(path, TW_FORMAT_MSGPACK, one); /* only the short ones fit */
  drain(src, 10, collect, &c);
  src->vt->close(src);
  assert_int_equal(c.n, 3); /* framed objects resync: the next one is delivered */
  assert_int_equal(c.recs[0].flags, 0);
  assert_int_equal(c.recs[1].flags, TW_REC_TRUNCATED);
  assert_string_equal(c.recs[1].reason, "too_long");
  assert_true(c.recs[1].full_len > one);
  assert_int_equal(c.recs[2].flags, 0);
  assert_int_equal(c.recs[2].line, 3);
  msgpack_sbuffer_destroy(&sb);
}

static void test_stdin(void **state) {
  (void)state;
  char path[512];
  path_in_dir(path, sizeof path, "stdin.jsonl");
  write_file(path, "{\"s\":1}\n", 8);
  int saved = dup(STDIN_FILENO);
  assert_true(saved >= 0);
  assert_non_null(freopen(path, "rb", stdin));
  static collector_t c;
  memset(&c, 0, sizeof c);
  tw_source_t *src = open_file("-", TW_FORMAT_AUTO, 0);
  drain(src, 10, collect, &c);
  src->vt->close(src);
  assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
  close(saved);
  assert_int_equal(c.n, 1);
  assert_rec(&c.recs[0], "{\"s\":1}", 0, 1);
  assert_string_equal(c.recs[0].origin, "-");
  assert_int_equal(c.recs[0].format, TW_FORMAT_JSONL);
}

static void test_open_errors_and_helpers(void **state) {
  (void)state;
  const tw_source_vt_t *vt = tw_source_find("file");
  tw_source_t *src = NULL;
  assert_int_equal(vt->open("/nonexistent/dir/x.jsonl", NULL, &src), TW_ENOENT);
  assert_null(src);
  vt->close(NULL);
  assert_non_null(tw_source_find("zmq-pull"));
  assert_null(tw_source_find("kafka"));
  assert_null(tw_source_find(NULL));

  tw_format_t f = TW_FORMAT_AUTO;
  assert_int_equal(tw_format_parse("jsonl", &f), 0);
  assert_int_equal(f, TW_FORMAT_JSONL);
  assert_int_equal(tw_format_parse("json", &f), 0);
  assert_int_equal(f, TW_FORMAT_JSONL);
  assert_int_equal(tw_format_parse("msgpack", &f), 0);
  assert_int_equal(f, TW_FORMAT_MSGPACK);
  assert_int_equal(tw_format_parse("mp", &f), 0);
  assert_int_equal(f, TW_FORMAT_MSGPACK);
  assert_int_equal(tw_format_parse("auto", &f), 0);
  assert_int_equal(f, TW_FORMAT_AUTO);
  assert_int_equal(tw_format_parse("xml", &f), TW_EINVAL);
  assert_int_equal(tw_format_parse(NULL, &f), TW_EINVAL);
  assert_int_equal(tw_format_from_path("a/b.msgpack"), TW_FORMAT_MSGPACK);
  assert_int_equal(tw_format_from_path("b.mp"), TW_FORMAT_MSGPACK);
  assert_int_equal(tw_format_from_path("b.jsonl"), TW_FORMAT_JSONL);
  assert_int_equal(tw_format_from_path("-"), TW_FORMAT_JSONL);
  assert_int_equal(tw_format_from_path("mp"), TW_FORMAT_JSONL);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(g_dir) != NULL ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_jsonl_lines_crlf_empty),
      cmocka_unit_test(test_max_records_and_stop),
      cmocka_unit_test(test_overlong_line_bounded),
      cmocka_unit_test(test_overlong_small_bound),
      cmocka_unit_test(test_jsonl_across_chunks),
      cmocka_unit_test(test_msgpack_stream),
      cmocka_unit_test(test_msgpack_across_chunks),
      cmocka_unit_test(test_msgpack_truncated),
      cmocka_unit_test(test_msgpack_malformed_ends_input),
      cmocka_unit_test(test_msgpack_over_bound_is_truncated),
      cmocka_unit_test(test_stdin),
      cmocka_unit_test(test_open_errors_and_helpers),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
