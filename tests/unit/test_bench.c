/*
 * test_bench.c: the pieces of `tutorwatch bench` that its figures rest on: the log-bucket
 * histogram (contiguous buckets, bounded relative error, exact ranks, max and merge) and the
 * loading of a stream into records (JSON Lines with empty lines and CRLF, msgpack framing, a
 * stream cut short), and the probe rule file.
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

#include "tw_bench.h"
#include "tw_error.h"

static void test_hist_buckets_are_contiguous_and_narrow(void **state) {
  (void)state;
  assert_int_equal(tw_hist_bucket_low(0), 0);
  for (size_t b = 1; b < TW_HIST_BUCKETS; b++) {
    uint64_t lo = tw_hist_bucket_low(b), hi = tw_hist_bucket_high(b);
    assert_true(lo == tw_hist_bucket_high(b - 1) + 1); /* no gap, no overlap */
    assert_true(hi >= lo);
    assert_int_equal(tw_hist_bucket_of(lo), b);
    assert_int_equal(tw_hist_bucket_of(hi), b);
    if (b >= 2 * TW_HIST_SUB_COUNT) /* width ≤ 1/S of the bucket's smallest value */
      assert_true((double)(hi - lo + 1) <= (double)lo / TW_HIST_SUB_COUNT);
  }
  assert_true(tw_hist_bucket_high(TW_HIST_BUCKETS - 1) == UINT64_MAX);
  assert_int_equal(tw_hist_bucket_of(UINT64_MAX), TW_HIST_BUCKETS - 1);
}

static void test_hist_small_values_exact(void **state) {
  (void)state;
  tw_hist_t *h = malloc(sizeof *h);
  assert_non_null(h);
  tw_hist_init(h);
  assert_int_equal(tw_hist_percentile(h, 50), 0); /* empty */
  for (uint64_t v = 1; v <= 200; v++) tw_hist_record(h, v);
  assert_int_equal(h->count, 200);
  assert_int_equal(h->min, 1);
  assert_int_equal(h->max, 200);
  assert_int_equal(tw_hist_percentile(h, 50), 100); /* rank 100 */
  assert_int_equal(tw_hist_percentile(h, 99), 198); /* rank 198 */
  assert_int_equal(tw_hist_percentile(h, 100), 200);
  assert_int_equal(tw_hist_percentile(h, 0.001), 1); /* rank 1 */
  free(h);
}

static void test_hist_percentiles_within_bound(void **state) {
  (void)state;
  tw_hist_t *h = malloc(sizeof *h);
  assert_non_null(h);
  tw_hist_init(h);
  /* 1,000 latencies of 1..1000 µs, in ns. */
  for (uint64_t us = 1; us <= 1000; us++) tw_hist_record(h, us * 1000u);
  struct {
    double p;
    uint64_t exact;
  } cases[] = {{50, 500000}, {99, 990000}, {99.9, 999000}, {100, 1000000}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    uint64_t got = tw_hist_percentile(h, cases[i].p);
    /* Never below the exact rank's value, never more than one bucket (< 0.79%) above it. */
    assert_true(got >= cases[i].exact);
    assert_true((double)got <= (double)cases[i].exact * (1.0 + 1.0 / TW_HIST_SUB_COUNT));
  }
  /* 99.9% of 1000 is rank 999, not 1000 (binary fractions must not push it up). */
  assert_true(tw_hist_percentile(h, 99.9) < 1000000);
  /* The maximum is exact, and a percentile never reports more than it. */
  tw_hist_t *one = malloc(sizeof *one);
  assert_non_null(one);
  tw_hist_init(one);
  tw_hist_record(one, 1000003);
  assert_int_equal(tw_hist_percentile(one, 50), 1000003);
  assert_int_equal(tw_hist_percentile(one, 100), 1000003);
  tw_hist_merge(h, one);
  assert_int_equal(h->count, 1001);
  assert_int_equal(h->max, 1000003);
  assert_int_equal(h->min, 1000);
  assert_int_equal(tw_hist_percentile(h, 100), 1000003);
  free(one);
  free(h);
}

static char *write_temp(const void *data, size_t len) {
  char *path = strdup("/tmp/tw-test-bench-XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, data, len), (ssize_t)len);
  close(fd);
  return path;
}

static void test_input_jsonl_records(void **state) {
  (void)state;
  const char text[] = "{\"a\":1}\n\n{\"b\":22}\r\n{\"c\":333}";
  char *path = write_temp(text, sizeof text - 1);
  tw_bench_input_t in;
  assert_int_equal(tw_bench_input_load(path, TW_FORMAT_JSONL, 1 << 20, &in), 0);
  assert_int_equal(in.n, 3);
  const char *want[] = {"{\"a\":1}", "{\"b\":22}", "{\"c\":333}"};
  for (size_t i = 0; i < 3; i++) {
    tw_record_t rec;
    tw_bench_input_record(&in, i, &rec);
    assert_int_equal(rec.len_bytes, strlen(want[i]));
    assert_memory_equal(rec.data, want[i], rec.len_bytes);
    assert_int_equal(rec.format, TW_FORMAT_JSONL);
    assert_int_equal(rec.line, i + 1);
  }
  tw_bench_input_free(&in);
  /* A file over the bound is refused. */
  assert_int_equal(tw_bench_input_load(path, TW_FORMAT_JSONL, 4, &in), TW_ETOOBIG);
  assert_int_equal(tw_bench_input_load(path, TW_FORMAT_AUTO, 1 << 20, &in), TW_EINVAL);
  unlink(path);
  free(path);
  assert_int_equal(tw_bench_input_load("/nonexistent/x", TW_FORMAT_JSONL, 1 << 20, &in), TW_EIO);
}

static void test_input_msgpack_records(void **state) {
  (void)state;
  /* {"a":1} {"bb":"xy"} as two msgpack maps, then the same cut inside the second. */
  const unsigned char mp[] = {0x81, 0xa1, 'a', 0x01, 0x81, 0xa2, 'b', 'b', 0xa2, 'x', 'y'};
  char *path = write_temp(mp, sizeof mp);
  tw_bench_input_t in;
  assert_int_equal(tw_bench_input_load(path, TW_FORMAT_MSGPACK, 1 << 20, &in), 0);
  assert_int_equal(in.n, 2);
  tw_record_t rec;
  tw_bench_input_record(&in, 1, &rec);
  assert_int_equal(rec.len_bytes, 7);
  assert_memory_equal(rec.data, mp + 4, 7);
  tw_bench_input_free(&in);
  unlink(path);
  free(path);
  path = write_temp(mp, sizeof mp - 2);
  assert_int_equal(tw_bench_input_load(path, TW_FORMAT_MSGPACK, 1 << 20, &in), TW_EPARSE);
  unlink(path);
  free(path);
}

/* The probe rule goes first under the top-level `rules:`, so a `tests:` section after the rules
 * (the default pack has one) does not swallow it; a file without such a line is refused. */
static void test_probe_rules_inserted(void **state) {
  (void)state;
  const char rules[] = "version: 1\nrules:\n  - name: a\n    on: [payment]\ntests:\n  - name: t\n";
  char *src = write_temp(rules, sizeof rules - 1);
  char out[] = "/tmp/tw-test-bench-probe-XXXXXX";
  int fd = mkstemp(out);
  assert_true(fd >= 0);
  close(fd);
  assert_int_equal(tw_bench_probe_rules(src, out), 0);
  FILE *f = fopen(out, "r");
  assert_non_null(f);
  char buf[4096];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *probe = strstr(buf, "rules:\n  # Appended by `tutorwatch bench`");
  assert_non_null(probe);
  assert_non_null(strstr(probe, "  - name: bench_probe\n"));
  assert_true(strstr(buf, "  - name: bench_probe\n") < strstr(buf, "  - name: a\n"));
  assert_true(strstr(buf, "  - name: a\n") < strstr(buf, "tests:\n"));
  assert_int_equal(n, sizeof rules - 1 + strlen(probe) - strlen(strstr(probe, "  - name: a")) -
                          strlen("rules:\n"));
  unlink(src);
  free(src);
  const char flow[] = "version: 1\nrules: []\n";
  src = write_temp(flow, sizeof flow - 1);
  assert_int_equal(tw_bench_probe_rules(src, out), TW_EINVAL);
  assert_int_equal(tw_bench_probe_rules("/nonexistent/rules.yaml", out), TW_EIO);
  unlink(out);
  unlink(src);
  free(src);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_hist_buckets_are_contiguous_and_narrow),
      cmocka_unit_test(test_hist_small_values_exact),
      cmocka_unit_test(test_hist_percentiles_within_bound),
      cmocka_unit_test(test_input_jsonl_records),
      cmocka_unit_test(test_input_msgpack_records),
      cmocka_unit_test(test_probe_rules_inserted),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
