/*
 * test_stream_position.c: what an engine of a NATS group relies on in the pipeline
 * (tw_pipeline_track_stream, tw_pipeline_checkpoint, tw_pipeline_abandon):
 * - each commit records the stream sequence every record up to which is processed, in the same
 *   transaction as the state; a reopened pipeline reports it and skips records at or below it;
 * - abandoning a pipeline commits nothing (a lost lease): the position stays at the last commit;
 * - a checkpoint is a compact copy of the committed state that a pipeline opened on it resumes
 *   at the same sequence, with the same dedup memory (an event seen before is a duplicate).
 * No server needed.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_pipeline.h"

static char g_dir[256], g_rules[512], g_state[300], g_copy[300], g_dl[300];

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/tw-streampos-XXXXXX");
  if (mkdtemp(g_dir) == NULL) return -1;
  const char *root = getenv("TW_SOURCE_DIR");
  snprintf(g_rules, sizeof g_rules, "%s/rules/packs/default.yaml", root ? root : TW_SOURCE_DIR);
  snprintf(g_state, sizeof g_state, "%s/state", g_dir);
  snprintf(g_copy, sizeof g_copy, "%s/copy", g_dir);
  snprintf(g_dl, sizeof g_dl, "%s/dead-letter.jsonl", g_dir);
  return mkdir(g_state, 0700) == 0 && mkdir(g_copy, 0700) == 0 ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

static tw_pipeline_t *open_on(const char *dir) {
  tw_pipeline_opts_t o;
  memset(&o, 0, sizeof o);
  o.rules_path = g_rules;
  o.state_dir = dir;
  o.pseudonym_dir = g_dir;
  o.dead_letter_path = g_dl;
  o.no_sync = true;
  o.allowed_lateness_ms = -1;
  o.max_future_skew_ms = -1;
  o.dedup_horizon_ms = -1;
  tw_pipeline_t *p = NULL;
  char err[512];
  int rc = tw_pipeline_open(&o, &p, err, sizeof err);
  if (rc != 0) fail_msg("tw_pipeline_open: %s", err);
  return p;
}

/* Record seq: a complaint of institution 52440106MJL17630G2, event_id "c-<id>", on day `day`. */
static int feed(tw_pipeline_t *p, uint64_t seq, int id) {
  char json[512];
  int n = snprintf(json, sizeof json,
                   "{\"event_id\":\"c-%d\",\"type\":\"complaint\",\"ts\":\"2025-03-%02dT10:00:00+08:00\","
                   "\"institution_id\":\"52440106MJL17630G2\",\"region\":\"440106\","
                   "\"complaint_id\":\"K-%d\",\"category\":\"refund\",\"text\":\"slow refund\"}",
                   id, 1 + id % 20, id);
  tw_record_t rec;
  memset(&rec, 0, sizeof rec);
  rec.data = json;
  rec.len_bytes = rec.full_len_bytes = (size_t)n;
  rec.format = TW_FORMAT_JSONL;
  rec.origin = "nats:tw.events.0";
  rec.offset_bytes = seq;
  rec.line = seq;
  return tw_pipeline_record(p, &rec);
}

static void test_commit_records_the_sequence(void **state) {
  (void)state;
  tw_pipeline_t *p = open_on(g_state);
  uint64_t done = 99;
  assert_int_equal(tw_pipeline_track_stream(p, &done), 0);
  assert_int_equal(done, 0); /* a new state covers nothing */
  /* Sequences of one partition are increasing, not contiguous (other partitions in between). */
  for (int i = 0; i < 5; i++) assert_int_equal(feed(p, 10 + 3 * (uint64_t)i, i), 0);
  assert_int_equal(tw_pipeline_flush(p), 0); /* nothing left held for the watermark */
  assert_int_equal(tw_pipeline_commit(p), 0);
  assert_int_equal(tw_pipeline_stream_done(p), 22);
  assert_int_equal(tw_pipeline_close(p), 0);

  p = open_on(g_state);
  assert_int_equal(tw_pipeline_track_stream(p, &done), 0);
  assert_int_equal(done, 22);
  tw_pipeline_stats_t st;
  /* Redelivered records at or below the position are skipped, not counted or processed. */
  assert_int_equal(feed(p, 22, 4), 0);
  assert_int_equal(feed(p, 16, 2), 0);
  tw_pipeline_stats(p, &st);
  assert_int_equal(st.read, 0);
  assert_int_equal(feed(p, 25, 5), 0);
  assert_int_equal(tw_pipeline_flush(p), 0);
  tw_pipeline_stats(p, &st);
  assert_int_equal(st.read, 1);
  assert_int_equal(st.accepted, 1);

  /* Abandoned (a lost lease): nothing of this is committed. */
  tw_pipeline_abandon(p);
  p = open_on(g_state);
  assert_int_equal(tw_pipeline_track_stream(p, &done), 0);
  assert_int_equal(done, 22);

  /* A record held for the watermark keeps the position before it. */
  assert_int_equal(feed(p, 30, 6), 0);
  assert_int_equal(tw_pipeline_commit(p), 0);
  assert_true(tw_pipeline_stream_done(p) >= 22 && tw_pipeline_stream_done(p) <= 30);
  assert_int_equal(tw_pipeline_flush(p), 0);
  assert_int_equal(tw_pipeline_commit(p), 0);
  assert_int_equal(tw_pipeline_stream_done(p), 30);
  assert_int_equal(tw_pipeline_close(p), 0);
}

static void test_checkpoint_resumes_there(void **state) {
  (void)state;
  tw_pipeline_t *p = open_on(g_state);
  uint64_t done = 0, covered = 0;
  assert_int_equal(tw_pipeline_track_stream(p, &done), 0);
  assert_int_equal(feed(p, done + 1, 100), 0);
  assert_int_equal(tw_pipeline_flush(p), 0);
  assert_int_equal(tw_pipeline_checkpoint(p, g_copy, &covered), 0);
  assert_int_equal(covered, done + 1);
  /* Processed after the checkpoint: not in it. */
  assert_int_equal(feed(p, done + 2, 101), 0);
  assert_int_equal(tw_pipeline_close(p), 0);

  char file[400];
  snprintf(file, sizeof file, "%s/data.mdb", g_copy);
  struct stat sb;
  assert_int_equal(stat(file, &sb), 0);
  assert_true(sb.st_size > 0);

  tw_pipeline_t *q = open_on(g_copy);
  uint64_t resumed = 0;
  assert_int_equal(tw_pipeline_track_stream(q, &resumed), 0);
  assert_int_equal(resumed, covered);
  /* The copy remembers the event ids it processed: the same event under a new sequence (sent
   * again) is a duplicate; the one after the checkpoint is new to it. */
  assert_int_equal(feed(q, covered + 5, 100), 0);
  assert_int_equal(feed(q, covered + 6, 101), 0);
  assert_int_equal(tw_pipeline_flush(q), 0);
  tw_pipeline_stats_t st;
  tw_pipeline_stats(q, &st);
  assert_int_equal(st.duplicates, 1);
  assert_int_equal(st.accepted, 1);
  assert_int_equal(tw_pipeline_close(q), 0);

  /* Into a directory that does not exist: an error, not a crash. */
  p = open_on(g_state);
  char missing[400];
  snprintf(missing, sizeof missing, "%s/none/deeper", g_dir);
  assert_int_equal(tw_pipeline_checkpoint(p, missing, &covered), TW_EIO);
  assert_int_equal(tw_pipeline_close(p), 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_commit_records_the_sequence),
      cmocka_unit_test(test_checkpoint_resumes_there),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
