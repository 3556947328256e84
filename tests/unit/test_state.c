/*
 * test_state.c: persistence of tw_state across close and reopen (aggregates, cooldowns, alert
 * journal, meta), group-commit failure and retry, map growth from a tiny map, and corrupt
 * entries written with raw LMDB. Each test gets a mkdtemp state directory, removed in teardown.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <limits.h>
#include <lmdb.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "state_internal.h"
#include "tw_error.h"
#include "tw_state.h"

#define MIN 60000LL
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define T0 1740787200000LL /* 2025-03-01T00:00:00Z */

typedef struct fx {
  char dir[64];
  tw_state_t *st;
} fx_t;

static const tw_state_opts_t opts = {.no_sync = true};
static const tw_window_spec_t cnt7d = {"complaints_7d", TW_AGG_COUNT, 7 * DAY, 0};
static const tw_window_spec_t sum_all = {"prepaid_fen", TW_AGG_SUM, 0, 0};

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  strcpy(f->dir, "/tmp/tw-state-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fx_t *f = *state;
  tw_state_close(f->st);
  nftw(f->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
  free(f);
  return 0;
}

static void reopen(fx_t *f) {
  tw_state_close(f->st);
  f->st = NULL;
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
}

static int64_t val(tw_state_t *st, const tw_window_spec_t *s, const char *key, int64_t t) {
  int64_t v = -1;
  assert_int_equal(tw_state_agg_value(st, s, key, strlen(key), t, &v), 0);
  return v;
}

static void add(tw_state_t *st, const tw_window_spec_t *s, const char *key, int64_t t, int64_t v) {
  assert_int_equal(tw_state_agg_add(st, s, key, strlen(key), t, v), 0);
}

/* Collects the keys tw_state_agg_keys lists, as "a,b,c,"; adds a key from inside the callback. */
typedef struct keys_seen {
  char buf[512];
  tw_state_t *st;
  int add_from_cb;
} keys_seen_t;

static int keys_cb(void *ud, const char *key, size_t len) {
  keys_seen_t *k = ud;
  size_t n = strlen(k->buf);
  assert_true(n + len + 2 < sizeof k->buf);
  memcpy(k->buf + n, key, len);
  k->buf[n + len] = ',';
  k->buf[n + len + 1] = '\0';
  if (k->add_from_cb) add(k->st, &sum_all, "zz-added-in-cb", T0, 1);
  return 0;
}

/* Committed and staged keys are merged in LMDB order (bytes, then shorter first), each once; a
 * key of another aggregate or added by the callback is not listed; after the commit, the same. */
static void test_agg_keys_staged_and_committed(void **state) {
  fx_t *f = *state;
  keys_seen_t k = {.st = f->st};
  add(f->st, &sum_all, "b", T0, 1);
  add(f->st, &sum_all, "d", T0, 1);
  add(f->st, &cnt7d, "c-other-agg", T0, 1);
  assert_int_equal(tw_state_commit(f->st), 0);
  add(f->st, &sum_all, "ab", T0, 1); /* staged, between committed keys */
  add(f->st, &sum_all, "a", T0, 1);  /* staged, a prefix of "ab": shorter first */
  add(f->st, &sum_all, "d", T0, 1);  /* committed and dirty: listed once */
  add(f->st, &sum_all, "e", T0, 1);  /* staged, after the last committed key */
  k.add_from_cb = 1;
  assert_int_equal(tw_state_agg_keys(f->st, &sum_all, keys_cb, &k), 0);
  assert_string_equal(k.buf, "a,ab,b,d,e,");
  assert_int_equal(tw_state_commit(f->st), 0);
  k.buf[0] = '\0';
  k.add_from_cb = 0;
  assert_int_equal(tw_state_agg_keys(f->st, &sum_all, keys_cb, &k), 0);
  assert_string_equal(k.buf, "a,ab,b,d,e,zz-added-in-cb,");
  k.buf[0] = '\0';
  assert_int_equal(tw_state_agg_keys(f->st, &cnt7d, keys_cb, &k), 0);
  assert_string_equal(k.buf, "c-other-agg,");
}

/* No memory while the staged-key cache grows: TW_ENOMEM, and the next call still lists every key
 * once and in order (the failed call's half-scanned entries are scanned again). */
static void test_agg_keys_after_enomem(void **state) {
  fx_t *f = *state;
  char k[16];
  for (int i = 0; i < 60; i++) {
    snprintf(k, sizeof k, "m%02d", i);
    add(f->st, &sum_all, k, T0, 1);
  }
  for (int i = 0; i < 10; i++) {
    snprintf(k, sizeof k, "a%02d", i);
    add(f->st, &sum_all, k, T0, 1);
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  for (int i = 0; i < 60; i++) {
    snprintf(k, sizeof k, "m%02d", i);
    add(f->st, &sum_all, k, T0, 1);
  }
  keys_seen_t *ks = calloc(1, sizeof *ks);
  assert_non_null(ks);
  assert_int_equal(tw_state_agg_keys(f->st, &sum_all, keys_cb, ks), 0); /* 60 cached: cap 64 */
  for (int i = 9; i >= 0; i--) { /* dirty again, in reverse: the cache must grow past 64 */
    snprintf(k, sizeof k, "a%02d", i);
    add(f->st, &sum_all, k, T0, 1);
  }
  tw__state_fail_keys_grow(f->st);
  ks->buf[0] = '\0';
  assert_int_equal(tw_state_agg_keys(f->st, &sum_all, keys_cb, ks), TW_ENOMEM);
  char want[512] = "";
  for (int i = 0; i < 10; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "a%02d,", i);
  for (int i = 0; i < 60; i++) snprintf(want + strlen(want), sizeof want - strlen(want), "m%02d,", i);
  ks->buf[0] = '\0';
  assert_int_equal(tw_state_agg_keys(f->st, &sum_all, keys_cb, ks), 0);
  assert_string_equal(ks->buf, want);
  free(ks);
}

static void test_open_creates_dir_0700(void **state) {
  fx_t *f = *state;
  char sub[128];
  snprintf(sub, sizeof sub, "%s/shard0", f->dir);
  tw_state_t *st = NULL;
  assert_int_equal(tw_state_open(sub, NULL, &st), 0);
  struct stat sb;
  assert_int_equal(stat(sub, &sb), 0);
  assert_int_equal(sb.st_mode & 0777, 0700);
  tw_state_close(st);
  tw_state_close(NULL);
  /* A path under a regular file cannot be created. */
  char bad[160];
  snprintf(bad, sizeof bad, "%s/data.mdb/x", sub);
  assert_int_equal(tw_state_open(bad, NULL, &st), TW_EIO);
}

static void test_commit_reopen_same_values(void **state) {
  fx_t *f = *state;
  for (int i = 0; i < 50; i++) {
    add(f->st, &cnt7d, "inst-a", T0 + i * HOUR, 0);
    add(f->st, &sum_all, "inst-a", T0 + i * HOUR, 1000 + i);
  }
  add(f->st, &cnt7d, "inst-b", T0 + 3 * HOUR, 0);
  int64_t a = val(f->st, &cnt7d, "inst-a", T0 + 49 * HOUR);
  int64_t s = val(f->st, &sum_all, "inst-a", 0);
  assert_int_equal(a, 50);
  assert_int_equal(s, 50 * 1000 + 49 * 50 / 2);
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.commits, 1);
  assert_int_equal(st.entries_written, 3);
  /* Nothing dirty: a second commit writes nothing. */
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.entries_written, 3);

  reopen(f);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.keys_in_memory, 0);
  assert_int_equal(val(f->st, &cnt7d, "inst-a", T0 + 49 * HOUR), 50);
  assert_int_equal(val(f->st, &cnt7d, "inst-a", T0 + 20 * HOUR), 21);
  assert_int_equal(val(f->st, &sum_all, "inst-a", 0), s);
  assert_int_equal(val(f->st, &cnt7d, "inst-b", T0 + 3 * HOUR), 1);
  assert_int_equal(val(f->st, &cnt7d, "inst-c", T0), 0);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.keys_loaded, 3);
  assert_int_equal(st.keys_in_memory, 4);
  /* Loaded once: a second read does not go back to LMDB. */
  assert_int_equal(val(f->st, &cnt7d, "inst-a", T0 + 49 * HOUR), 50);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.keys_loaded, 3);
}

static void test_uncommitted_lost_and_second_run_accumulates(void **state) {
  fx_t *f = *state;
  add(f->st, &cnt7d, "k", T0, 0);
  add(f->st, &sum_all, "k", T0, 100);
  assert_int_equal(tw_state_commit(f->st), 0);
  add(f->st, &cnt7d, "k", T0 + HOUR, 0);
  add(f->st, &sum_all, "k", T0 + HOUR, 100);
  add(f->st, &cnt7d, "fresh", T0, 0);
  reopen(f); /* no commit: the last three adds are gone */
  assert_int_equal(val(f->st, &cnt7d, "k", T0 + HOUR), 1);
  assert_int_equal(val(f->st, &sum_all, "k", 0), 100);
  assert_int_equal(val(f->st, &cnt7d, "fresh", T0), 0);
  /* Second run on the same directory continues from the committed state. */
  add(f->st, &cnt7d, "k", T0 + 2 * HOUR, 0);
  add(f->st, &sum_all, "k", T0 + 2 * HOUR, 50);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen(f);
  assert_int_equal(val(f->st, &cnt7d, "k", T0 + 2 * HOUR), 2);
  assert_int_equal(val(f->st, &sum_all, "k", 0), 150);
  /* The window keeps sliding across runs: 7 days after the last event, both are out. */
  add(f->st, &cnt7d, "k", T0 + 2 * HOUR + 7 * DAY, 0);
  assert_int_equal(val(f->st, &cnt7d, "k", T0 + 2 * HOUR + 7 * DAY), 1);
}

typedef struct jrec {
  uint64_t seq[64];
  char text[64][32];
  int n;
  int stop_after;
} jrec_t;

static int collect(void *ud, uint64_t seq, const char *json, size_t len) {
  jrec_t *r = ud;
  assert_true(r->n < 64 && len < 32);
  r->seq[r->n] = seq;
  memcpy(r->text[r->n], json, len);
  r->text[r->n][len] = 0;
  r->n++;
  return r->stop_after && r->n == r->stop_after ? 42 : 0;
}

static void append(tw_state_t *st, int i, uint64_t expect_seq) {
  char j[32];
  int n = snprintf(j, sizeof j, "{\"alert\":%d}", i);
  uint64_t seq = 0;
  assert_int_equal(tw_state_journal_append(st, j, (size_t)n, &seq), 0);
  assert_int_equal(seq, expect_seq);
}

static void test_journal(void **state) {
  fx_t *f = *state;
  jrec_t r = {0};
  assert_int_equal(tw_state_journal_foreach(f->st, 0, collect, &r), 0);
  assert_int_equal(r.n, 0);
  for (int i = 1; i <= 5; i++) append(f->st, i, (uint64_t)i);
  /* Staged records are not visible until committed. */
  assert_int_equal(tw_state_journal_foreach(f->st, 0, collect, &r), 0);
  assert_int_equal(r.n, 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  append(f->st, 6, 6); /* staged, then lost by closing without commit */
  reopen(f);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.journal_seq, 5);
  for (int i = 6; i <= 12; i++) append(f->st, i, (uint64_t)i);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen(f);
  append(f->st, 13, 13);
  tw_state_close(f->st); /* drop it */
  f->st = NULL;
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);

  assert_int_equal(tw_state_journal_foreach(f->st, 0, collect, &r), 0);
  assert_int_equal(r.n, 12);
  for (int i = 0; i < 12; i++) {
    char j[32];
    snprintf(j, sizeof j, "{\"alert\":%d}", i + 1);
    assert_int_equal(r.seq[i], (uint64_t)i + 1);
    assert_string_equal(r.text[i], j);
  }
  memset(&r, 0, sizeof r);
  assert_int_equal(tw_state_journal_foreach(f->st, 9, collect, &r), 0);
  assert_int_equal(r.n, 3);
  assert_int_equal(r.seq[0], 10);
  assert_int_equal(r.seq[2], 12);
  memset(&r, 0, sizeof r);
  assert_int_equal(tw_state_journal_foreach(f->st, 12, collect, &r), 0);
  assert_int_equal(r.n, 0);
  /* The callback's non-zero return stops the walk and is passed back. */
  memset(&r, 0, sizeof r);
  r.stop_after = 2;
  assert_int_equal(tw_state_journal_foreach(f->st, 3, collect, &r), 42);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.seq[1], 5);
  char big[16];
  assert_int_equal(tw_state_journal_append(f->st, big, (size_t)TW_STATE_JOURNAL_MAX + 1, NULL),
                   TW_ETOOBIG);
}

static void test_cooldown(void **state) {
  fx_t *f = *state;
  bool fire = false;
  const char *k = "52440106MJL17630G";
  assert_int_equal(tw_state_cooldown(f->st, "storm", k, 17, T0, HOUR, &fire), 0);
  assert_true(fire);
  assert_int_equal(tw_state_cooldown(f->st, "storm", k, 17, T0 + 10 * MIN, HOUR, &fire), 0);
  assert_false(fire);
  /* Another key and another rule are independent. */
  assert_int_equal(tw_state_cooldown(f->st, "storm", "other", 5, T0 + 10 * MIN, HOUR, &fire), 0);
  assert_true(fire);
  assert_int_equal(tw_state_cooldown(f->st, "closure", k, 17, T0 + 10 * MIN, HOUR, &fire), 0);
  assert_true(fire);
  /* Exactly one cooldown after the firing: fires again (last ≤ ts − cooldown). */
  assert_int_equal(tw_state_cooldown(f->st, "storm", k, 17, T0 + HOUR - 1, HOUR, &fire), 0);
  assert_false(fire);
  assert_int_equal(tw_state_cooldown(f->st, "storm", k, 17, T0 + HOUR, HOUR, &fire), 0);
  assert_true(fire);
  assert_int_equal(tw_state_commit(f->st), 0);
  /* An uncommitted firing is forgotten. */
  assert_int_equal(tw_state_cooldown(f->st, "storm", k, 17, T0 + 3 * HOUR, HOUR, &fire), 0);
  assert_true(fire);
  reopen(f);
  assert_int_equal(tw_state_cooldown(f->st, "storm", k, 17, T0 + 90 * MIN, HOUR, &fire), 0);
  assert_false(fire); /* last firing T0 + 1h survived the reopen */
  assert_int_equal(tw_state_cooldown(f->st, "storm", k, 17, T0 + 2 * HOUR, HOUR, &fire), 0);
  assert_true(fire);
  assert_int_equal(tw_state_cooldown(f->st, "none", k, 17, T0, 0, &fire), 0);
  assert_true(fire);
  assert_int_equal(tw_state_cooldown(f->st, "none", k, 17, T0, 0, &fire), 0);
  assert_true(fire);
  assert_int_equal(tw_state_cooldown(f->st, "none", k, 17, T0, -1, &fire), TW_EINVAL);
  char big[TW_STATE_KEY_MAX + 1] = {0};
  assert_int_equal(tw_state_cooldown(f->st, "none", big, sizeof big, T0, 0, &fire), TW_ETOOBIG);
  /* A cooldown and an aggregate with the same name and key do not collide. */
  tw_window_spec_t s = {"storm", TW_AGG_COUNT, 0, 0};
  assert_int_equal(val(f->st, &s, k, T0), 0);
}

static void test_meta(void **state) {
  fx_t *f = *state;
  char buf[64];
  size_t len = 0;
  assert_int_equal(tw_state_meta_get(f->st, "input", buf, sizeof buf, &len), TW_ENOENT);
  assert_int_equal(tw_state_meta_put(f->st, "input", "offset=100", 10), 0);
  assert_int_equal(tw_state_meta_get(f->st, "input", buf, sizeof buf, &len), 0);
  assert_int_equal(len, 10);
  assert_memory_equal(buf, "offset=100", 10);
  assert_int_equal(tw_state_meta_put(f->st, "input", "offset=2000", 11), 0);
  assert_int_equal(tw_state_meta_put(f->st, "counters", "x", 1), 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  /* Staged beats committed. */
  assert_int_equal(tw_state_meta_put(f->st, "input", "offset=3", 8), 0);
  assert_int_equal(tw_state_meta_get(f->st, "input", buf, sizeof buf, &len), 0);
  assert_int_equal(len, 8);
  reopen(f);
  assert_int_equal(tw_state_meta_get(f->st, "input", buf, sizeof buf, &len), 0);
  assert_int_equal(len, 11);
  assert_memory_equal(buf, "offset=2000", 11);
  assert_int_equal(tw_state_meta_get(f->st, "counters", buf, sizeof buf, &len), 0);
  assert_int_equal(len, 1);
  assert_int_equal(tw_state_meta_get(f->st, "input", buf, 4, &len), TW_ETOOBIG);
  assert_int_equal(len, 11);
  assert_int_equal(tw_state_meta_put(f->st, "input", "", 0), 0);
  assert_int_equal(tw_state_meta_get(f->st, "input", buf, 4, &len), 0);
  assert_int_equal(len, 0);
  char name[TW_STATE_META_NAME_MAX + 2];
  memset(name, 'n', sizeof name - 1);
  name[sizeof name - 1] = 0;
  assert_int_equal(tw_state_meta_put(f->st, name, "x", 1), TW_ETOOBIG);
  assert_int_equal(tw_state_meta_put(f->st, "big", buf, (size_t)TW_STATE_META_MAX + 1), TW_ETOOBIG);
}

/* A failed commit loses nothing: entries stay dirty, journal records stay staged with their
 * sequence numbers, and the next commit writes them all. */
static void test_failed_commit_keeps_everything(void **state) {
  fx_t *f = *state;
  add(f->st, &cnt7d, "k", T0, 0);
  append(f->st, 1, 1);
  assert_int_equal(tw_state_meta_put(f->st, "pos", "1", 1), 0);
  tw__state_fail_commits(f->st, 1);
  assert_int_equal(tw_state_commit(f->st), TW_ESTATE);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.commits, 0);
  jrec_t r = {0};
  assert_int_equal(tw_state_journal_foreach(f->st, 0, collect, &r), 0);
  assert_int_equal(r.n, 0);
  add(f->st, &cnt7d, "k", T0 + 1, 0);
  append(f->st, 2, 2); /* numbering continues: seq 1 is not reused */
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen(f);
  assert_int_equal(val(f->st, &cnt7d, "k", T0 + 1), 2);
  assert_int_equal(tw_state_journal_foreach(f->st, 0, collect, &r), 0);
  assert_int_equal(r.n, 2);
  assert_int_equal(r.seq[0], 1);
  assert_string_equal(r.text[0], "{\"alert\":1}");
  assert_int_equal(r.seq[1], 2);
  char buf[8];
  size_t len;
  assert_int_equal(tw_state_meta_get(f->st, "pos", buf, sizeof buf, &len), 0);
  assert_int_equal(len, 1);
}

/* Start with a 64 KiB map and write far more: the map doubles until everything fits. */
static void test_map_growth(void **state) {
  fx_t *f = *state;
  tw_state_close(f->st);
  f->st = NULL;
  nftw(f->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
  assert_int_equal(mkdir(f->dir, 0700), 0);
  tw_state_opts_t tiny = {.map_size_bytes = 64 * 1024, .no_sync = true};
  assert_int_equal(tw_state_open(f->dir, &tiny, &f->st), 0);
  char k[32];
  for (int i = 0; i < 5000; i++) {
    int n = snprintf(k, sizeof k, "inst-%05d", i);
    for (int h = 0; h < 10; h++)
      assert_int_equal(tw_state_agg_add(f->st, &cnt7d, k, (size_t)n, T0 + h * HOUR, 0), 0);
    if (i % 10 == 0) append(f->st, i, (uint64_t)(i / 10 + 1));
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_true(st.map_grows >= 2);
  assert_true(st.map_size_bytes > 64 * 1024);
  assert_int_equal(st.entries_written, 5000);
  tw_state_close(f->st);
  f->st = NULL;
  assert_int_equal(tw_state_open(f->dir, &tiny, &f->st), 0);
  for (int i = 0; i < 5000; i++) {
    int n = snprintf(k, sizeof k, "inst-%05d", i);
    int64_t v;
    assert_int_equal(tw_state_agg_value(f->st, &cnt7d, k, (size_t)n, T0 + 9 * HOUR, &v), 0);
    assert_int_equal(v, 10);
  }
  jrec_t r = {0};
  assert_int_equal(tw_state_journal_foreach(f->st, 440, collect, &r), 0);
  assert_int_equal(r.n, 500 - 440);
  assert_int_equal(r.seq[0], 441);
  assert_string_equal(r.text[59], "{\"alert\":4990}");
}

static void raw_put(const char *dir, const char *db, const void *k, size_t klen, const void *v,
                    size_t vlen) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
  assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
  MDB_val mk = {klen, (void *)k}, mv = {vlen, (void *)v};
  assert_int_equal(mdb_put(txn, dbi, &mk, &mv, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

static int raw_get(const char *dir, const char *db, const void *k, size_t klen, void *v,
                   size_t cap) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 4), 0);
  assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
  MDB_val mk = {klen, (void *)k}, mv;
  assert_int_equal(mdb_get(txn, dbi, &mk, &mv), 0);
  assert_true(mv.mv_size <= cap);
  memcpy(v, mv.mv_data, mv.mv_size);
  int n = (int)mv.mv_size;
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return n;
}

static void test_corrupt_entry(void **state) {
  fx_t *f = *state;
  unsigned char dbkey[TW__STATE_DBKEY_MAX];
  int kl = tw__state_agg_dbkey(&cnt7d, "bad", 3, dbkey, sizeof dbkey);
  assert_true(kl > 0);
  /* A good entry with a few buckets to mutate. */
  for (int h = 0; h < 5; h++) add(f->st, &cnt7d, "good", T0 + h * HOUR, 0);
  add(f->st, &cnt7d, "good", T0 + 3 * HOUR + 5, 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_close(f->st);
  f->st = NULL;
  unsigned char gk[TW__STATE_DBKEY_MAX];
  int gkl = tw__state_agg_dbkey(&cnt7d, "good", 4, gk, sizeof gk);
  unsigned char good[512];
  int gl = raw_get(f->dir, "agg", gk, (size_t)gkl, good, sizeof good);
  assert_true(gl > 40);

  raw_put(f->dir, "agg", dbkey, (size_t)kl, "garbage!", 8);
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  int64_t v;
  assert_int_equal(tw_state_agg_value(f->st, &cnt7d, "bad", 3, T0, &v), TW_ESTATE);
  assert_int_equal(tw_state_agg_add(f->st, &cnt7d, "bad", 3, T0, 0), TW_ESTATE);
  assert_int_equal(val(f->st, &cnt7d, "good", T0 + 4 * HOUR), 6);

  /* Every truncation and many single-byte changes of a good entry: TW_ESTATE or a value,
   * never a crash or a read out of bounds (ASan watches). */
  unsigned char m[512];
  int estate = 0;
  for (int cut = 0; cut < gl; cut++) {
    tw_state_close(f->st);
    f->st = NULL;
    raw_put(f->dir, "agg", dbkey, (size_t)kl, good, (size_t)cut);
    assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
    assert_int_equal(tw_state_agg_value(f->st, &cnt7d, "bad", 3, T0, &v), TW_ESTATE);
  }
  for (int pos = 0; pos < gl; pos++) {
    memcpy(m, good, (size_t)gl);
    m[pos] ^= (unsigned char)(0x80 | pos);
    tw_state_close(f->st);
    f->st = NULL;
    raw_put(f->dir, "agg", dbkey, (size_t)kl, m, (size_t)gl);
    assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
    int rc = tw_state_agg_value(f->st, &cnt7d, "bad", 3, T0 + 4 * HOUR, &v);
    assert_true(rc == 0 || rc == TW_ESTATE);
    if (rc == TW_ESTATE)
      estate++;
    else
      assert_int_equal(tw_state_agg_add(f->st, &cnt7d, "bad", 3, T0 + 5 * HOUR, 0), 0);
  }
  assert_true(estate > gl / 2);
  /* Corrupt cooldown record too. */
  tw_state_close(f->st);
  f->st = NULL;
  raw_put(f->dir, "cool", "rule\0k", 6,
          "\x01"
          "c\x01",
          3);
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  bool fire;
  assert_int_equal(tw_state_cooldown(f->st, "rule", "k", 1, T0, 0, &fire), TW_ESTATE);
}

/* A version 1 entry (before zones and explicit widths): 40-byte header, UTC buckets. */
static size_t v1_entry(unsigned char *out, int64_t window_ms, int64_t newest_ms, int64_t base,
                       const uint16_t *off, const uint8_t *val, uint32_t nb) {
  memset(out, 0, 40);
  out[0] = 1;
  out[1] = TW_AGG_COUNT;
  out[2] = 1;
  for (int i = 0; i < 4; i++) out[4 + i] = (unsigned char)(nb >> (8 * i));
  for (int i = 0; i < 8; i++) {
    out[8 + i] = (unsigned char)((uint64_t)window_ms >> (8 * i));
    out[16 + i] = (unsigned char)((uint64_t)newest_ms >> (8 * i));
    out[32 + i] = (unsigned char)((uint64_t)base >> (8 * i));
  }
  size_t n = 40;
  for (uint32_t b = 0; b < nb; b++) {
    out[n++] = (unsigned char)off[b];
    out[n++] = (unsigned char)(off[b] >> 8);
    out[n++] = (unsigned char)(val[b] << 1); /* zigzag, < 64 */
  }
  return n;
}

/* Version 1 entries still load: as they were when their alignment matches (1h buckets, or a
 * UTC state), moved onto local days otherwise (30-day window, 6h buckets, Asia/Shanghai). */
static void test_v1_entries_load(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t c7 = {"c7d", TW_AGG_COUNT, 7 * DAY, 0};    /* g = 1h */
  const tw_window_spec_t c30 = {"c30d", TW_AGG_COUNT, 30 * DAY, 0}; /* g = 6h */
  unsigned char key[TW__STATE_DBKEY_MAX], vb[128];
  const uint16_t off[3] = {0, 1, 5};
  const uint8_t cnt[3] = {2, 3, 4};
  /* 7d: buckets at T0 + 1h, 2h, 6h (UTC idx = T0/1h + {0,1,5}); newest in the last one. */
  int64_t base7 = T0 / HOUR;
  int kn = tw__state_agg_dbkey(&c7, "k", 1, key, sizeof key);
  size_t vn = v1_entry(vb, 7 * DAY, T0 + 6 * HOUR, base7, off, cnt, 3);
  tw_state_close(f->st);
  f->st = NULL;
  raw_put(f->dir, "agg", key, (size_t)kn, vb, vn);
  /* 30d: 6h UTC buckets ending 06:00, 12:00 and 12:00 + 1d UTC. */
  int64_t base30 = T0 / (6 * HOUR);
  const uint16_t off30[3] = {0, 1, 5};
  kn = tw__state_agg_dbkey(&c30, "k", 1, key, sizeof key);
  vn = v1_entry(vb, 30 * DAY, T0 + 36 * HOUR, base30, off30, cnt, 3);
  raw_put(f->dir, "agg", key, (size_t)kn, vb, vn);
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  assert_int_equal(val(f->st, &c7, "k", T0 + 6 * HOUR), 9);
  assert_int_equal(val(f->st, &c7, "k", T0 + 2 * HOUR), 5);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.entries_rebucketed, 0);
  /* Asia/Shanghai 6h buckets end at 02:00, 08:00, 14:00, 20:00 UTC: each UTC bucket moves to
   * the local bucket holding its end (06:00 → (02:00, 08:00], 12:00 → (08:00, 14:00], ...). */
  assert_int_equal(val(f->st, &c30, "k", T0 + 36 * HOUR), 9);
  assert_int_equal(val(f->st, &c30, "k", T0 + 8 * HOUR), 2);
  assert_int_equal(val(f->st, &c30, "k", T0 + 14 * HOUR), 5);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.entries_rebucketed, 1);
  uint32_t nb, cap;
  assert_int_equal(tw__state_agg_buckets(f->st, &c30, "k", 1, &nb, &cap), 0);
  assert_int_equal(nb, 3);
  /* Written back as version 2 with the next change; reloads as is in the same zone. */
  add(f->st, &c30, "k", T0 + 37 * HOUR, 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen(f);
  assert_int_equal(val(f->st, &c30, "k", T0 + 37 * HOUR), 10);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.entries_rebucketed, 0);
  /* In a UTC state the same version 2 entry moves back (another zone), keeping its total. */
  tw_state_close(f->st);
  f->st = NULL;
  tw_state_opts_t utc = {.no_sync = true, .tz_set = true, .tz_offset_ms = 0};
  assert_int_equal(tw_state_open(f->dir, &utc, &f->st), 0);
  assert_int_equal(val(f->st, &c30, "k", T0 + 37 * HOUR), 10);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.entries_rebucketed, 1);
  /* A version 2 entry whose stored width is not the spec's is corrupt. */
  unsigned char enc[256];
  tw__entry_t *e = calloc(1, sizeof *e + 2);
  assert_non_null(e);
  e->key_len = 2;
  e->key[0] = TW__KIND_AGG;
  e->window_ms = 7 * DAY;
  e->g_ms = 2 * HOUR;
  e->nb_max = 85;
  e->stride = 2;
  size_t en = tw__entry_encode(e, enc);
  e->g_ms = HOUR;
  e->nb_max = 169;
  assert_int_equal(tw__entry_decode(e, enc, en), TW_ESTATE);
  tw__entry_release(e);
  free(e);
}

static size_t raw_count(const char *dir, const char *db) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  MDB_stat ms;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
  assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, db, 0, &dbi), 0);
  assert_int_equal(mdb_stat(txn, dbi, &ms), 0);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return ms.ms_entries;
}

/* A long run of keys touched once (a 1-hour window, a new key every 10 s for ~6 days): with
 * commit + evict per batch, memory and LMDB both hold only the keys still inside the window. */
static void test_evict_expired_bounded(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t s = {"once_1h", TW_AGG_SUM, HOUR, 0};
  const int64_t lateness = 10 * MIN;
  const int n = 50000;
  char k[32];
  uint64_t peak = 0;
  for (int i = 0; i < n; i++) {
    int64_t t = T0 + (int64_t)i * 10000;
    int kl = snprintf(k, sizeof k, "inst-%d", i);
    assert_int_equal(tw_state_agg_add(f->st, &s, k, (size_t)kl, t, i), 0);
    if (i % 500 == 499) {
      assert_int_equal(tw_state_commit(f->st), 0);
      assert_int_equal(tw_state_evict(f->st, t - lateness, 2000), 0);
      tw_state_stats_t st;
      tw_state_stats(f->st, &st);
      if (st.keys_in_memory > peak) peak = st.keys_in_memory;
    }
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  /* Inside window + lateness: 420 keys; plus up to one batch between sweeps. */
  assert_true(peak <= 1000);
  assert_true(st.evicted_expired >= (uint64_t)n - 1000);
  /* Recent keys are intact; an evicted key reads as empty, which it is. */
  for (int i = n - 300; i < n; i++) {
    int kl = snprintf(k, sizeof k, "inst-%d", i);
    int64_t v;
    assert_int_equal(
        tw_state_agg_value(f->st, &s, k, (size_t)kl, T0 + (int64_t)(n - 1) * 10000, &v), 0);
    assert_int_equal(v, i);
  }
  tw_state_close(f->st);
  f->st = NULL;
  size_t in_lmdb = raw_count(f->dir, "agg");
  assert_true(in_lmdb <= 1000);
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
}

/* Over the memory budget, clean entries are dropped and reload with the same values; dirty
 * entries are never dropped. */
static void test_evict_clean_reload(void **state) {
  fx_t *f = *state;
  tw_state_close(f->st);
  f->st = NULL;
  tw_state_opts_t small = {.no_sync = true, .max_keys_in_memory = 100};
  assert_int_equal(tw_state_open(f->dir, &small, &f->st), 0);
  char k[32];
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 1000; i++) {
      int kl = snprintf(k, sizeof k, "inst-%d", i);
      assert_int_equal(tw_state_agg_add(f->st, &sum_all, k, (size_t)kl, T0 + round, i), 0);
      assert_int_equal(tw_state_agg_add(f->st, &cnt7d, k, (size_t)kl, T0 + round * HOUR, 0), 0);
      if (i % 100 == 99) {
        /* Before the commit the 200 entries of this batch are dirty: they stay. */
        tw_state_stats_t st;
        assert_int_equal(tw_state_evict(f->st, T0, 10000), 0);
        assert_int_equal(tw_state_evict(f->st, T0, 10000), 0);
        tw_state_stats(f->st, &st);
        assert_true(st.keys_in_memory >= 200);
        assert_int_equal(tw_state_commit(f->st), 0);
        assert_int_equal(tw_state_evict(f->st, T0, 10000), 0);
        assert_int_equal(tw_state_evict(f->st, T0, 10000), 0); /* second chance used up */
        tw_state_stats(f->st, &st);
        assert_true(st.keys_in_memory <= 100);
      }
    }
  }
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_true(st.evicted_clean > 5000);
  assert_int_equal(st.evicted_expired, 0);
  uint64_t loaded = st.keys_loaded;
  for (int i = 0; i < 1000; i++) {
    int kl = snprintf(k, sizeof k, "inst-%d", i);
    int64_t v;
    assert_int_equal(tw_state_agg_value(f->st, &sum_all, k, (size_t)kl, T0 + 2, &v), 0);
    assert_int_equal(v, 3 * i);
    assert_int_equal(tw_state_agg_value(f->st, &cnt7d, k, (size_t)kl, T0 + 2 * HOUR, &v), 0);
    assert_int_equal(v, 3);
  }
  tw_state_stats(f->st, &st);
  assert_true(st.keys_loaded >= loaded + 1800);
}

/* An expired entry evicted, then reloaded and changed before the commit that deletes it:
 * the commit writes the new value (deletes go first). Cooldowns and `all` never expire. */
static void test_evict_then_reuse_before_commit(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t s = {"w1h", TW_AGG_COUNT, HOUR, 0};
  bool fire;
  add(f->st, &s, "k", T0, 0);
  add(f->st, &sum_all, "k", T0, 5);
  assert_int_equal(tw_state_cooldown(f->st, "r", "k", 1, T0, HOUR, &fire), 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_int_equal(tw_state_evict(f->st, T0 + 2 * HOUR, 100), 0);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.evicted_expired, 1);
  assert_int_equal(st.keys_in_memory, 2);
  add(f->st, &s, "k", T0 + 3 * HOUR, 0);
  assert_int_equal(val(f->st, &s, "k", T0 + 3 * HOUR), 1);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen(f);
  assert_int_equal(val(f->st, &s, "k", T0 + 3 * HOUR), 1);
  assert_int_equal(val(f->st, &sum_all, "k", T0 + 3 * HOUR), 5);
  assert_int_equal(tw_state_cooldown(f->st, "r", "k", 1, T0 + 1, HOUR, &fire), 0);
  assert_false(fire);
  /* Evicted and not touched again: gone from LMDB after the commit. */
  assert_int_equal(tw_state_evict(f->st, T0 + 5 * HOUR, 100), 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_close(f->st);
  f->st = NULL;
  assert_int_equal(raw_count(f->dir, "agg"), 1); /* the `all` sum */
  assert_int_equal(raw_count(f->dir, "cool"), 1);
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  assert_int_equal(tw_state_evict(f->st, T0, 0), 0);
  assert_int_equal(tw_state_evict(NULL, T0, 10), TW_EINVAL);
  /* No watermark yet, or a huge one: nothing wraps (UBSan checks). */
  add(f->st, &s, "k2", T0, 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_int_equal(tw_state_evict(f->st, INT64_MIN, 100), 0);
  assert_int_equal(val(f->st, &s, "k2", T0), 1);
  assert_int_equal(tw_state_evict(f->st, INT64_MAX, 100), 0);
}

/* The entries of one key share a group; a spec variable reused for another aggregate (as a rule
 * reload may reuse memory) is another series, never the one the address held before; a rule name
 * and an aggregate name alike are distinct; the prefetch hint changes nothing and ignores bad
 * arguments; evicting every entry of a key and adding again works. */
static void test_identities_and_groups(void **state) {
  fx_t *f = *state;
  tw_window_spec_t s = {"same_name", TW_AGG_SUM, 0, 0};
  char name[16] = "alpha";
  bool fire;
  add(f->st, &s, "k", T0, 5);
  s.fn = TW_AGG_COUNT; /* same address, same name, another function: another series */
  add(f->st, &s, "k", T0, 5);
  assert_int_equal(val(f->st, &s, "k", T0), 1);
  s.fn = TW_AGG_SUM;
  assert_int_equal(val(f->st, &s, "k", T0), 5);
  s.window_ms = DAY; /* another window */
  assert_int_equal(val(f->st, &s, "k", T0), 0);
  s.window_ms = 0;
  s.name = name; /* the name's bytes change under the same pointer */
  add(f->st, &s, "k", T0, 7);
  memcpy(name, "beta", 5);
  assert_int_equal(val(f->st, &s, "k", T0), 0);
  memcpy(name, "alpha", 6);
  assert_int_equal(val(f->st, &s, "k", T0), 7);
  /* A cooldown named like an aggregate is its own entry. */
  assert_int_equal(tw_state_cooldown(f->st, "alpha", "k", 1, T0, HOUR, &fire), 0);
  assert_true(fire);
  assert_int_equal(val(f->st, &s, "k", T0), 7);
  /* The hint: on present and absent keys, specs and bad arguments alike. */
  tw_state_agg_prefetch(f->st, &s, "k", 1, false);
  tw_state_agg_prefetch(f->st, &s, "k", 1, true);
  tw_state_agg_prefetch(f->st, &s, "absent", 6, true);
  tw_state_agg_prefetch(f->st, &cnt7d, "k", 1, true);
  tw_state_agg_prefetch(f->st, NULL, "k", 1, true);
  tw_state_agg_prefetch(NULL, &s, "k", 1, true);
  tw_state_agg_prefetch(f->st, &s, NULL, 3, true);
  tw_state_agg_prefetch(f->st, &s, "k", TW_STATE_KEY_MAX + 1, false);
  const tw_window_spec_t bad = {"bad", TW_AGG_SUM, 0, 12};
  tw_state_agg_prefetch(f->st, &bad, "k", 1, true);
  assert_int_equal(tw_state_agg_add(f->st, &bad, "k", 1, T0, 1), TW_EINVAL);
  assert_int_equal(val(f->st, &s, "k", T0), 7);
  /* A function changed to an invalid one under the same pointer is refused, not matched; a
   * bucket width changed under it is another series. */
  tw_window_spec_t w = {"weekly", TW_AGG_SUM, 14 * DAY, 7 * DAY};
  assert_int_equal(tw_state_agg_add(f->st, &w, "k", 1, T0, 4), 0);
  w.fn = (tw_agg_fn_t)(0x100 + TW_AGG_SUM);
  assert_int_equal(tw_state_agg_add(f->st, &w, "k", 1, T0, 4), TW_EINVAL);
  w.fn = TW_AGG_SUM;
  w.bucket_ms = DAY;
  assert_int_equal(val(f->st, &w, "k", T0), 0);
  w.bucket_ms = 7 * DAY;
  assert_int_equal(val(f->st, &w, "k", T0), 4);
  /* Bad arguments keep the errors the checks gave before references: cheap checks first. */
  char longname[TW_STATE_NAME_MAX + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = '\0';
  const tw_window_spec_t lng = {longname, TW_AGG_SUM, 0, 0};
  const tw_window_spec_t lngcal = {longname, TW_AGG_SUM, 14 * DAY, 7 * DAY};
  tw_agg_out_t o, series[4];
  size_t n_out;
  assert_int_equal(tw_state_agg_add(f->st, &lng, "k", 1, T0, 1), TW_ETOOBIG);
  assert_int_equal(tw_state_agg_add(f->st, &lng, "k", 1, INT64_MAX, 1), TW_EINVAL);
  assert_int_equal(tw_state_agg_get(f->st, &lng, "k", 1, INT64_MAX, &o), TW_EINVAL);
  assert_int_equal(tw_state_agg_series(f->st, &lngcal, "k", 1, T0, series, 4, NULL), TW_EINVAL);
  assert_int_equal(tw_state_agg_series(f->st, &lngcal, "k", 1, T0, series, 4, &n_out), TW_ETOOBIG);
  char longkey[TW_STATE_KEY_MAX + 1];
  memset(longkey, 'k', sizeof longkey);
  assert_int_equal(tw_state_cooldown(f->st, "r", longkey, sizeof longkey, T0, -1, &fire),
                   TW_ETOOBIG);
  assert_int_equal(tw_state_cooldown(f->st, longname, "k", 1, T0, -1, &fire), TW_ETOOBIG);
  assert_int_equal(tw_state_cooldown(f->st, NULL, "k", 1, T0, 0, &fire), TW_EINVAL);
  assert_int_equal(tw_state_agg_add(f->st, &s, longkey, sizeof longkey, T0, 1), TW_ETOOBIG);
  /* References: resolved once, the same series as by spec; numbers no identity has, and a
   * cooldown's, are refused. */
  tw_state_ref_t ref, ref2;
  assert_int_equal(tw_state_agg_ref(f->st, &s, &ref), 0);
  assert_int_equal(tw_state_agg_ref(f->st, &s, &ref2), 0);
  assert_int_equal(ref, ref2);
  assert_int_equal(tw_state_agg_get_ref(f->st, ref, "k", 1, T0, &o), 0);
  assert_int_equal(o.value, 7);
  assert_int_equal(tw_state_agg_add_ref(f->st, ref, "k", 1, T0, 1), 0);
  assert_int_equal(val(f->st, &s, "k", T0), 8);
  assert_int_equal(tw_state_agg_add_ref(f->st, 100000, "k", 1, T0, 1), TW_EINVAL);
  assert_int_equal(tw_state_agg_get_ref(f->st, 100000, "k", 1, T0, &o), TW_EINVAL);
  assert_int_equal(tw_state_agg_series_ref(f->st, ref, "k", 1, T0, series, 4, &n_out), TW_EINVAL);
  tw_state_ref_t cool_ref = UINT32_MAX;
  for (tw_state_ref_t r = 0; r < 64; r++) /* the cooldown "alpha" has some number below 64 */
    if (tw_state_agg_get_ref(f->st, r, "k", 1, T0, &o) == TW_EINVAL) {
      cool_ref = r;
      break;
    }
  assert_true(cool_ref != UINT32_MAX);
  assert_int_equal(tw_state_agg_add_ref(f->st, cool_ref, "k", 1, T0, 1), TW_EINVAL);
  s.fn = TW_AGG_SUM;
  /* The empty key is a key like any other. */
  assert_int_equal(tw_state_agg_add(f->st, &s, "", 0, T0, 3), 0);
  int64_t v = 0;
  assert_int_equal(tw_state_agg_value(f->st, &s, "", 0, T0, &v), 0);
  assert_int_equal(v, 3);
  /* Everything committed, then every entry of many keys expired and evicted: the groups go, and
   * the keys come back. */
  const tw_window_spec_t h1 = {"h1", TW_AGG_COUNT, HOUR, 0};
  char k[32];
  for (int i = 0; i < 3000; i++) {
    int kl = snprintf(k, sizeof k, "inst-%d", i);
    assert_int_equal(tw_state_agg_add(f->st, &h1, k, (size_t)kl, T0, 0), 0);
    assert_int_equal(tw_state_agg_add(f->st, &cnt7d, k, (size_t)kl, T0, 0), 0);
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  uint64_t before = st.keys_in_memory;
  for (int i = 0; i < 10; i++) assert_int_equal(tw_state_evict(f->st, T0 + 30 * DAY, 100000), 0);
  tw_state_stats(f->st, &st);
  assert_true(st.evicted_expired >= 6000);         /* and the windows of the checks above */
  assert_true(st.keys_in_memory <= before - 6000); /* and entries only read, never added to */
  for (int i = 0; i < 3000; i += 7) {
    int kl = snprintf(k, sizeof k, "inst-%d", i);
    assert_int_equal(tw_state_agg_add(f->st, &h1, k, (size_t)kl, T0 + 30 * DAY, 0), 0);
    assert_int_equal(tw_state_agg_value(f->st, &h1, k, (size_t)kl, T0 + 30 * DAY, &v), 0);
    assert_int_equal(v, 1);
  }
  assert_int_equal(val(f->st, &s, "k", T0), 8);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen(f);
  assert_int_equal(val(f->st, &s, "k", T0), 8);
  s.name = "same_name";
  assert_int_equal(val(f->st, &s, "k", T0), 5);
}

/* A sliding DISTINCT drops each value exactly when its newest sighting leaves the window, also
 * when a value seen again keeps the table's oldest time bound stale, and when a value arrives
 * older than every row held (late, but inside the window). */
static void test_distinct_rows_leave_on_time(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t d = {"payers_1d", TW_AGG_DISTINCT, DAY, 0};
  const int64_t A = 0x1111, B = 0x2222, C = 0x3333;
  add(f->st, &d, "k", T0, A);
  add(f->st, &d, "k", T0 + HOUR, B);
  add(f->st, &d, "k", T0 + 2 * HOUR, A); /* A's row moves to T0 + 2h */
  assert_int_equal(val(f->st, &d, "k", T0 + 2 * HOUR), 2);
  /* Newest T0 + 1d + 90min: B (T0 + 1h) has left, A (T0 + 2h) has not. */
  add(f->st, &d, "k", T0 + DAY + 90 * MIN, A);
  assert_int_equal(val(f->st, &d, "k", T0 + DAY + 90 * MIN), 1);
  /* C late, at T0 + 1d − 10min: older than every row, inside the window. */
  add(f->st, &d, "k", T0 + DAY - 10 * MIN, C);
  assert_int_equal(val(f->st, &d, "k", T0 + DAY + 90 * MIN), 2);
  /* Newest T0 + 2d − 5min: C (T0 + 1d − 10min) has left; A (T0 + 1d + 90min) stays. */
  add(f->st, &d, "k", T0 + 2 * DAY - 5 * MIN, A);
  assert_int_equal(val(f->st, &d, "k", T0 + 2 * DAY - 5 * MIN), 1);
  /* Many values, each seen once, 400 a day: the table holds only the last day's (under its 256
   * exact rows), so the count stays exact; a table that kept what left would turn approximate. */
  const tw_window_spec_t d6 = {"orders_6h", TW_AGG_DISTINCT, 6 * HOUR, 0};
  for (int i = 0; i < 4000; i++) {
    int64_t t = T0 + (int64_t)i * (DAY / 400);
    add(f->st, &d6, "k", t, 0x5000 + i);
    if (i % 97 == 0) {
      tw_agg_out_t o;
      assert_int_equal(tw_state_agg_get(f->st, &d6, "k", 1, t, &o), 0);
      assert_false(o.approximate);
      assert_int_equal(o.value, i < 100 ? i + 1 : 100); /* 6 h hold 100 of them */
    }
  }
  /* The same through a commit and a reload. */
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen(f);
  add(f->st, &d, "k", T0 + 2 * DAY, B);
  assert_int_equal(val(f->st, &d, "k", T0 + 2 * DAY), 2);
  add(f->st, &d, "k", T0 + 3 * DAY, C);
  assert_int_equal(val(f->st, &d, "k", T0 + 3 * DAY), 1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_open_creates_dir_0700, setup, teardown),
      cmocka_unit_test_setup_teardown(test_commit_reopen_same_values, setup, teardown),
      cmocka_unit_test_setup_teardown(test_uncommitted_lost_and_second_run_accumulates, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_journal, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cooldown, setup, teardown),
      cmocka_unit_test_setup_teardown(test_meta, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_commit_keeps_everything, setup, teardown),
      cmocka_unit_test_setup_teardown(test_map_growth, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_entry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_v1_entries_load, setup, teardown),
      cmocka_unit_test_setup_teardown(test_evict_expired_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_evict_clean_reload, setup, teardown),
      cmocka_unit_test_setup_teardown(test_evict_then_reuse_before_commit, setup, teardown),
      cmocka_unit_test_setup_teardown(test_agg_keys_staged_and_committed, setup, teardown),
      cmocka_unit_test_setup_teardown(test_agg_keys_after_enomem, setup, teardown),
      cmocka_unit_test_setup_teardown(test_identities_and_groups, setup, teardown),
      cmocka_unit_test_setup_teardown(test_distinct_rows_leave_on_time, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
