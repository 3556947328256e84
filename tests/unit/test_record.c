/*
 * test_record.c: the event record (engine/record.c) and the tracing evaluator (rules/eval.c):
 * an event survives encode → record → scan → decode; records are merged across streams in
 * event-time order; a sealed segment's index skips what a selection does not need; a torn tail
 * is cut when the record is opened again; a damaged record is found by its checksum; the header
 * parser refuses bad bytes; tw_expr_eval_trace gives every sub-expression's value, marks the
 * short-circuited side, and agrees with tw_expr_eval.
 */
#define _XOPEN_SOURCE 700
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_record.h"
#include "tw_rules.h"
#include "tw_schema.h"

#define INST_A "52440106MJL176301K"
#define INST_B "91110000600037341L"

static tw_schema_t *schema;

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

static char *tmpdir(void) {
  char *d = strdup("/tmp/tw-test-record-XXXXXX");
  assert_non_null(mkdtemp(d));
  return d;
}

static void rmdir_all(char *d) {
  nftw(d, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  free(d);
}

static int setup(void **state) {
  (void)state;
  char path[4096];
  const char *src = getenv("TW_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/rules/packs/schema.yaml", src ? src : TW_SOURCE_DIR);
  tw_schema_error_t err;
  return tw_schema_load(path, &schema, &err);
}

static int teardown(void **state) {
  (void)state;
  tw_schema_free(schema);
  return 0;
}

/* A complaint of inst at ts_ms (epoch ms), decoded into ev. */
static void complaint(tw_event_t *ev, const char *id, const char *inst, int64_t ts_ms) {
  char json[512];
  snprintf(json, sizeof json,
           "{\"event_id\":\"%s\",\"type\":\"complaint\",\"ts\":%lld,\"institution_id\":\"%s\","
           "\"region\":\"%.6s\",\"complaint_id\":\"k-%s\",\"category\":\"refund\","
           "\"text\":\"退费难 %s\"}",
           id, (long long)ts_ms, inst, inst + 2, id, id);
  tw_decode_error_t derr;
  int rc = tw_decode_json(schema, json, strlen(json), ev, &derr);
  if (rc != 0) fail_msg("decode %s: %s", json, derr.message);
}

static void test_roundtrip(void **state) {
  (void)state;
  tw_event_t ev, back;
  assert_int_equal(tw_event_init(&ev), 0);
  assert_int_equal(tw_event_init(&back), 0);
  const char *json =
      "{\"event_id\":\"p-1\",\"type\":\"payment\",\"ts\":\"2025-03-01T10:00:00.123+08:00\","
      "\"institution_id\":\"" INST_A
      "\",\"region\":\"440106\",\"student_id\":\"p:0123\","
      "\"course_id\":\"C-1\",\"amount_fen\":600000,\"class_hours\":70,\"service_days\":120,"
      "\"channel\":\"supervised\",\"list_price_fen\":600000}";
  tw_decode_error_t derr;
  assert_int_equal(tw_decode_json(schema, json, strlen(json), &ev, &derr), 0);
  uint8_t buf[4096];
  int n = tw_record_encode_event(schema, &ev, buf, sizeof buf);
  assert_true(n > 0);
  assert_int_equal(tw_decode_msgpack(schema, (const char *)buf, (size_t)n, &back, &derr), 0);
  assert_int_equal(back.type, ev.type);
  assert_int_equal(back.ts_ms, ev.ts_ms);
  assert_int_equal(back.present, ev.present);
  for (int s = 0; s < TW_MAX_FIELDS; s++) {
    if (!(ev.present >> s & 1)) continue;
    tw_value_t a = ev.f[s], b = back.f[s];
    if (a.kind == TW_V_STR) {
      assert_int_equal(b.kind, TW_V_STR);
      assert_int_equal(a.u.s.len, b.u.s.len);
      assert_memory_equal(a.u.s.ptr, b.u.s.ptr, a.u.s.len);
    } else {
      assert_int_equal(a.u.i, b.u.i);
    }
  }
  /* too small a buffer: refused, never overrun */
  assert_int_equal(tw_record_encode_event(schema, &ev, buf, 20), TW_ETOOBIG);
  tw_event_fini(&ev);
  tw_event_fini(&back);
}

typedef struct collected {
  int64_t last_ts;
  uint64_t n, n_a, out_of_order;
  int stop_at;
} collected_t;

static int collect(void *ud, const tw_record_entry_t *e) {
  collected_t *c = ud;
  if (c->n > 0 && e->ts_ms < c->last_ts) c->out_of_order++;
  c->last_ts = e->ts_ms;
  c->n++;
  if (strcmp(e->institution_id, INST_A) == 0) c->n_a++;
  if (c->stop_at > 0 && c->n == (uint64_t)c->stop_at) return 42;
  return 0;
}

#define BASE_MS 1740787200000LL /* 2025-03-01T00:00:00Z */
#define N_EVENTS (TW_RECORD_SEGMENT_RECORDS + 5000)

static void test_streams_index_and_filters(void **state) {
  (void)state;
  char *dir = tmpdir();
  char err[512];
  tw_recorder_t *r = NULL;
  assert_int_equal(tw_recorder_open(dir, 2, true, &r, err, sizeof err), 0);
  tw_recorder_t *r2 = NULL;
  assert_int_equal(tw_recorder_open(dir, 2, true, &r2, err, sizeof err), TW_EEXIST);
  tw_event_t ev;
  assert_int_equal(tw_event_init(&ev), 0);
  /* Stream 0: INST_A every minute, then INST_B for the last 5000 (so the sealed first segment
   * holds only A); stream 1: INST_B every minute, offset by 30 s. */
  char id[32];
  for (unsigned i = 0; i < N_EVENTS; i++) {
    snprintf(id, sizeof id, "a-%u", i);
    complaint(&ev, id, i < TW_RECORD_SEGMENT_RECORDS ? INST_A : INST_B, BASE_MS + 60000LL * i);
    assert_int_equal(tw_recorder_append(r, 0, schema, &ev), 0);
    if (i % 10 == 0) {
      snprintf(id, sizeof id, "b-%u", i);
      complaint(&ev, id, INST_B, BASE_MS + 60000LL * i + 30000);
      assert_int_equal(tw_recorder_append(r, 1, schema, &ev), 0);
    }
  }
  assert_int_equal(tw_recorder_append(r, 2, schema, &ev), TW_EINVAL);
  assert_int_equal(tw_recorder_close(r), 0);
  char path[4200];
  snprintf(path, sizeof path, "%s/stream-0/000001.idx", dir);
  assert_int_equal(access(path, R_OK), 0); /* the first segment was sealed */

  tw_record_scan_stats_t info;
  assert_int_equal(tw_record_scan_info(dir, &info, err, sizeof err), 0);
  uint64_t total = N_EVENTS + (N_EVENTS + 9) / 10;
  assert_int_equal(info.total_records, total);
  assert_int_equal(info.min_ts_ms, BASE_MS);
  assert_int_equal(info.max_ts_ms, BASE_MS + 60000LL * (N_EVENTS - 1));

  /* everything, merged in event-time order */
  tw_record_filter_t all = {INT64_MIN, INT64_MAX, NULL, 0, NULL};
  collected_t c = {0};
  tw_record_scan_stats_t st;
  assert_int_equal(tw_record_scan(dir, &all, collect, &c, &st, err, sizeof err), 0);
  assert_int_equal(c.n, total);
  assert_int_equal(c.out_of_order, 0);
  assert_int_equal(c.n_a, TW_RECORD_SEGMENT_RECORDS);

  /* INST_B only: the sealed segment of stream 0 holds none, so its index skips it unread */
  const char *only_b[] = {INST_B};
  tw_record_filter_t fb = {INT64_MIN, INT64_MAX, only_b, 1, NULL};
  memset(&c, 0, sizeof c);
  assert_int_equal(tw_record_scan(dir, &fb, collect, &c, &st, err, sizeof err), 0);
  assert_int_equal(c.n, total - TW_RECORD_SEGMENT_RECORDS);
  assert_int_equal(c.n_a, 0);
  assert_int_equal(st.segments_skipped, 1);
  assert_true(st.records_read < total / 2);

  /* a time range inside the first segment: the open segments are read, the sealed one through
   * its index (time range), and only the range is delivered */
  tw_record_filter_t ft = {BASE_MS + 60000LL * 100, BASE_MS + 60000LL * 199, NULL, 0, NULL};
  memset(&c, 0, sizeof c);
  assert_int_equal(tw_record_scan(dir, &ft, collect, &c, &st, err, sizeof err), 0);
  assert_int_equal(c.n, 100 + 10);
  /* a region prefix */
  tw_record_filter_t fr = {INT64_MIN, INT64_MAX, NULL, 0, "1100"}; /* INST_B: region 110000 */
  memset(&c, 0, sizeof c);
  assert_int_equal(tw_record_scan(dir, &fr, collect, &c, &st, err, sizeof err), 0);
  assert_int_equal(c.n, total - TW_RECORD_SEGMENT_RECORDS);
  /* the callback's value stops the scan */
  memset(&c, 0, sizeof c);
  c.stop_at = 7;
  assert_int_equal(tw_record_scan(dir, &all, collect, &c, &st, err, sizeof err), 42);
  tw_event_fini(&ev);
  rmdir_all(dir);
}

static void test_torn_tail_and_checksum(void **state) {
  (void)state;
  char *dir = tmpdir();
  char err[512], path[4200];
  tw_recorder_t *r = NULL;
  tw_event_t ev;
  assert_int_equal(tw_event_init(&ev), 0);
  assert_int_equal(tw_recorder_open(dir, 1, true, &r, err, sizeof err), 0);
  for (int i = 0; i < 10; i++) {
    char id[16];
    snprintf(id, sizeof id, "c-%d", i);
    complaint(&ev, id, INST_A, BASE_MS + i);
    assert_int_equal(tw_recorder_append(r, 0, schema, &ev), 0);
  }
  assert_int_equal(tw_recorder_close(r), 0);
  snprintf(path, sizeof path, "%s/stream-0/000001.seg", dir);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(truncate(path, st.st_size - 3), 0); /* a writer killed mid-record */
  tw_record_filter_t all = {INT64_MIN, INT64_MAX, NULL, 0, NULL};
  collected_t c = {0};
  assert_int_equal(tw_record_scan(dir, &all, collect, &c, NULL, err, sizeof err), 0);
  assert_int_equal(c.n, 9); /* readers ignore the torn record */
  /* opened again for writing: cut, and appends continue after the last whole record */
  assert_int_equal(tw_recorder_open(dir, 1, true, &r, err, sizeof err), 0);
  complaint(&ev, "c-new", INST_A, BASE_MS + 100);
  assert_int_equal(tw_recorder_append(r, 0, schema, &ev), 0);
  assert_int_equal(tw_recorder_close(r), 0);
  memset(&c, 0, sizeof c);
  assert_int_equal(tw_record_scan(dir, &all, collect, &c, NULL, err, sizeof err), 0);
  assert_int_equal(c.n, 10);
  /* one flipped byte in the middle: the checksum finds it */
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  fseek(f, TW_RECORD_HEADER_BYTES + 20, SEEK_SET);
  int ch = fgetc(f);
  fseek(f, TW_RECORD_HEADER_BYTES + 20, SEEK_SET);
  fputc(ch ^ 0x01, f);
  fclose(f);
  memset(&c, 0, sizeof c);
  err[0] = '\0';
  assert_int_equal(tw_record_scan(dir, &all, collect, &c, NULL, err, sizeof err), TW_EINVAL);
  assert_non_null(strstr(err, "checksum mismatch"));
  /* opened again for writing: the damaged segment is left as it is (evidence is not cut away)
   * and recording goes on in the next segment */
  assert_int_equal(stat(path, &st), 0);
  off_t damaged_size = st.st_size;
  assert_int_equal(tw_recorder_open(dir, 1, true, &r, err, sizeof err), 0);
  complaint(&ev, "c-after", INST_A, BASE_MS + 200);
  assert_int_equal(tw_recorder_append(r, 0, schema, &ev), 0);
  assert_int_equal(tw_recorder_close(r), 0);
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_size, damaged_size);
  snprintf(path, sizeof path, "%s/stream-0/000002.seg", dir);
  assert_int_equal(access(path, R_OK), 0);
  assert_int_equal(tw_record_scan(dir, &all, collect, &c, NULL, err, sizeof err), TW_EINVAL);
  /* no record at all */
  assert_int_equal(
      tw_record_scan("/nonexistent-tw-record", &all, collect, &c, NULL, err, sizeof err),
      TW_ENOENT);
  tw_event_fini(&ev);
  rmdir_all(dir);
}

static void test_parse_refuses(void **state) {
  (void)state;
  uint8_t b[TW_RECORD_HEADER_BYTES + 8];
  tw_record_entry_t e;
  size_t rl;
  memset(b, 0, sizeof b);
  assert_int_equal(tw_record_parse(b, 0, &e, &rl), TW_EAGAIN);
  assert_int_equal(tw_record_parse(b, sizeof b, &e, &rl), TW_EPARSE); /* no magic */
  b[0] = 'T';
  b[1] = 'R';
  b[2] = 1;
  assert_int_equal(tw_record_parse(b, 3, &e, &rl), TW_EAGAIN);
  assert_int_equal(tw_record_parse(b, sizeof b, &e, &rl), TW_EPARSE); /* length 0 */
  b[4] = 0xff, b[5] = 0xff, b[6] = 0xff, b[7] = 0x7f;                 /* 2 GiB claimed */
  assert_int_equal(tw_record_parse(b, sizeof b, &e, &rl), TW_EPARSE);
  b[4] = 8, b[5] = b[6] = b[7] = 0;
  assert_int_equal(tw_record_parse(b, sizeof b - 1, &e, &rl), TW_EAGAIN);
  assert_int_equal(tw_record_parse(b, sizeof b, &e, &rl), TW_EINVAL); /* checksum */
  b[3] = 1;
  assert_int_equal(tw_record_parse(b, sizeof b, &e, &rl), TW_EPARSE); /* flags */
}

/* ---- the tracing evaluator ---- */

static int64_t fake_count = 7;

static int fake_agg(void *ud, size_t i, tw_agg_out_t *out) {
  (void)ud, (void)i;
  memset(out, 0, sizeof *out);
  out->present = true;
  out->value = fake_count;
  out->count = fake_count;
  return 0;
}

static const char TRACE_RULES[] =
    "version: 1\n"
    "params:\n"
    "  spike: 5\n"
    "aggregates:\n"
    "  complaints_7d: {on: [complaint], by: institution_id, fn: count(), window: 7d}\n"
    "rules:\n"
    "  - name: spike\n"
    "    on: [complaint]\n"
    "    by: institution_id\n"
    "    when: complaints_7d >= spike or category == \"x\"\n"
    "    severity: high\n";

static void test_trace(void **state) {
  (void)state;
  tw_ruleset_t *rs = NULL;
  tw_rule_error_t rerr;
  int rc = tw_rules_load_buffer("trace.yaml", TRACE_RULES, strlen(TRACE_RULES), schema, &rs, &rerr);
  if (rc != 0) fail_msg("%s:%d:%d: %s", rerr.file, rerr.line, rerr.col, rerr.message);
  const tw_rule_t *r = tw_rules_rule(rs, 0);
  tw_event_t ev;
  assert_int_equal(tw_event_init(&ev), 0);
  complaint(&ev, "k-1", INST_A, BASE_MS);
  tw_eval_ctx_t ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.ev = &ev;
  ctx.now_ms = ev.ts_ms;
  ctx.agg_get = fake_agg;
  tw_trace_node_t nodes[16];
  size_t n = 0;
  tw_value_t v, plain;
  assert_int_equal(tw_expr_eval_trace(r->when, &ctx, nodes, 16, &n, &v), 0);
  tw_eval_ctx_t ctx2 = ctx;
  ctx2.n_reads = 0;
  assert_int_equal(tw_expr_eval(r->when, &ctx2, &plain), 0);
  assert_int_equal(v.kind, TW_V_BOOL);
  assert_int_equal(v.u.i, plain.u.i);
  assert_int_equal(v.u.i, 1);
  /* pre-order: or, >=, complaints_7d, ==, category (constants are not listed) */
  assert_int_equal(n, 5);
  assert_string_equal(nodes[0].text, "(complaints_7d >= 5) or (category == \"x\")");
  assert_int_equal(nodes[0].depth, 0);
  assert_string_equal(nodes[1].text, "complaints_7d >= 5");
  assert_true(nodes[1].evaluated && nodes[1].value.u.i == 1);
  assert_string_equal(nodes[2].text, "complaints_7d");
  assert_int_equal(nodes[2].depth, 2);
  assert_int_equal(nodes[2].value.u.i, 7);
  assert_string_equal(nodes[3].text, "category == \"x\"");
  assert_false(nodes[3].evaluated); /* short-circuited */
  assert_false(nodes[4].evaluated);
  /* below the threshold, the right side is evaluated (and false) */
  fake_count = 2;
  assert_int_equal(tw_expr_eval_trace(r->when, &ctx, nodes, 16, &n, &v), 0);
  assert_int_equal(v.u.i, 0);
  assert_true(nodes[3].evaluated);
  assert_int_equal(nodes[3].value.u.i, 0);
  assert_true(nodes[4].evaluated);
  assert_int_equal(nodes[4].value.kind, TW_V_STR);
  assert_memory_equal(nodes[4].value.u.s.ptr, "refund", 6);
  /* a cap of 2 nodes: only the first two, and the same result */
  assert_int_equal(tw_expr_eval_trace(r->when, &ctx, nodes, 2, &n, &v), 0);
  assert_int_equal(n, 2);
  assert_int_equal(tw_expr_eval_trace(NULL, &ctx, nodes, 2, &n, &v), TW_EINVAL);
  char text[8];
  assert_true(tw_expr_text(r->when, text, sizeof text) > 0);
  assert_non_null(strstr(text, "\xe2\x80\xa6")); /* cut with an ellipsis */
  fake_count = 7;
  tw_event_fini(&ev);
  tw_rules_free(rs);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_roundtrip),
      cmocka_unit_test(test_streams_index_and_filters),
      cmocka_unit_test(test_torn_tail_and_checksum),
      cmocka_unit_test(test_parse_refuses),
      cmocka_unit_test(test_trace),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
