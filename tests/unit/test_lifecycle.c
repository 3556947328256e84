/*
 * test_lifecycle.c: escalation deadlines as a table (valid and invalid specs); the lifecycle
 * sink records each alert once and chains its audit records; tw_lifecycle_verify accepts the
 * chain, names a record whose content was changed (through LMDB, as an attacker with file
 * access could) and one whose link was broken, and reports a missing store.
 */
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_lifecycle.h"

static char g_dir[] = "/tmp/tw_test_lifecycle_XXXXXX";

static void test_deadlines(void **state) {
  (void)state;
  int64_t d[5];
  tw_lifecycle_default_deadlines(d);
  assert_int_equal(d[TW_SEV_CRITICAL], 24LL * 3600 * 1000);
  assert_int_equal(d[TW_SEV_HIGH], 72LL * 3600 * 1000);
  assert_int_equal(d[TW_SEV_MEDIUM], 0);
  assert_int_equal(tw_lifecycle_parse_deadlines("critical=2h,medium=90m,high=0s", d), 0);
  assert_int_equal(d[TW_SEV_CRITICAL], 2LL * 3600 * 1000);
  assert_int_equal(d[TW_SEV_MEDIUM], 90LL * 60 * 1000);
  assert_int_equal(d[TW_SEV_HIGH], 0);
  static const char *const bad[] = {"critical", "critical=", "urgent=1h", "high=1x",
                                    "high=-1h", "=1h",       "high=1h,,", "high=99999999999999d"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    if (tw_lifecycle_parse_deadlines(bad[i], d) != TW_EINVAL) fail_msg("accepted '%s'", bad[i]);
}

static const char *alert_json(int i, char *buf, size_t cap) {
  snprintf(buf, cap,
           "{\"alert_id\":\"%032d\",\"rule\":\"prepaid_over_cap\",\"severity\":\"high\","
           "\"by\":\"institution_id\",\"key\":\"52440111DWK00007H2\","
           "\"institution_id\":\"52440111DWK00007H2\",\"region\":\"440111\","
           "\"event_time\":\"2025-06-02T10:00:00.000+08:00\",\"message\":\"m\",\"values\":{},"
           "\"event_ids\":[\"e%d\"]}",
           i, i);
  return buf;
}

/* Rewrite audit record seq with fn applied to its bytes, through LMDB. */
static void tamper(uint64_t seq, void (*fn)(char *, size_t)) {
  char dir[300];
  snprintf(dir, sizeof dir, "%s/lifecycle", g_dir);
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  mdb_env_set_maxdbs(env, 8);
  mdb_env_set_mapsize(env, 4ULL << 30);
  assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "audit", 0, &dbi), 0);
  unsigned char kb[8];
  for (int i = 7; i >= 0; i--, seq >>= 8) kb[i] = (unsigned char)(seq & 0xff);
  MDB_val k = {8, kb}, v;
  assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
  char *copy = malloc(v.mv_size);
  memcpy(copy, v.mv_data, v.mv_size);
  fn(copy, v.mv_size);
  MDB_val nv = {v.mv_size, copy};
  assert_int_equal(mdb_put(txn, dbi, &k, &nv, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  free(copy);
  mdb_env_close(env);
}

static char g_saved[4096];
static size_t g_saved_len;
static void change_actor(char *rec, size_t len) {
  memcpy(g_saved, rec, len); /* kept to restore */
  g_saved_len = len;
  char *p = strstr(rec, "\"engine\"");
  assert_non_null(p);
  p[1] = 'E';
}
static void restore(char *rec, size_t len) {
  assert_int_equal(len, g_saved_len);
  memcpy(rec, g_saved, len);
}
static void change_prev(char *rec, size_t len) {
  memcpy(g_saved, rec, len);
  g_saved_len = len;
  char *p = strstr(rec, "\"prev\":\"");
  assert_non_null(p);
  p[8] = p[8] == 'a' ? 'b' : 'a'; /* the record's own hash no longer matches either */
}

static void test_chain(void **state) {
  (void)state;
  tw_lifecycle_opts_t o;
  memset(&o, 0, sizeof o);
  o.state_dir = g_dir;
  o.no_sync = true;
  tw_lifecycle_default_deadlines(o.deadline_ms);
  char err[256], buf[1024];
  tw_sink_t *s = NULL;
  assert_int_equal(tw_lifecycle_open(&o, &s, err, sizeof err), 0);
  tw_rule_t rule = {.name = "prepaid_over_cap", .severity = TW_SEV_HIGH};
  tw_alert_t a;
  memset(&a, 0, sizeof a);
  a.rule = &rule;
  a.institution_id.ptr = "52440111DWK00007H2";
  a.institution_id.len = 18;
  for (int i = 1; i <= 3; i++) {
    const char *j = alert_json(i, buf, sizeof buf);
    assert_int_equal(s->vt->write(s, &a, j, strlen(j)), 0);
  }
  const char *again = alert_json(2, buf, sizeof buf); /* republished after a restart: no record */
  assert_int_equal(s->vt->write(s, &a, again, strlen(again)), 0);
  assert_int_equal(s->vt->flush(s), 0);
  assert_false(tw_lifecycle_snoozed(s, &a));
  s->vt->close(s);

  uint64_t n = 0, bad = 0;
  assert_int_equal(tw_lifecycle_verify(g_dir, &n, &bad, err, sizeof err), 0);
  assert_int_equal(n, 3);
  assert_string_equal(err, "3 audit records, chain intact");

  tamper(2, change_actor);
  assert_int_equal(tw_lifecycle_verify(g_dir, &n, &bad, err, sizeof err), TW_ESTATE);
  assert_int_equal(bad, 2);
  assert_int_equal(n, 1);
  assert_non_null(strstr(err, "content does not match its hash"));
  tamper(2, restore);
  assert_int_equal(tw_lifecycle_verify(g_dir, &n, &bad, err, sizeof err), 0);

  tamper(3, change_prev);
  assert_int_equal(tw_lifecycle_verify(g_dir, &n, &bad, err, sizeof err), TW_ESTATE);
  assert_int_equal(bad, 3);
  tamper(3, restore);

  char nowhere[320];
  snprintf(nowhere, sizeof nowhere, "%s/none", g_dir);
  assert_int_equal(tw_lifecycle_verify(nowhere, &n, &bad, err, sizeof err), TW_ENOENT);
}

static int setup(void **state) {
  (void)state;
  return mkdtemp(g_dir) == NULL ? -1 : 0;
}

static int teardown(void **state) {
  (void)state;
  char cmd[512];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
  return system(cmd) == 0 ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_deadlines),
                                     cmocka_unit_test(test_chain)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
