/*
 * test_dedup.c: tw_state_dedup — case 002 (duplicate delivery counted once), duplicates inside a
 * batch and across commits and reopen, uncommitted ids vanishing like the aggregates with a
 * crash, failed commits keeping the staged ids, the horizon edge, bounded purging, re-recording
 * after expiry, argument checks, and a lookup-rate measurement (1e6 ids with TW_BENCH=1).
 * Each test gets a mkdtemp state directory, removed in teardown.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <cmocka.h>
#include <lmdb.h>

#include "dedup_set.h"

#include "state_internal.h"
#include "tw_error.h"
#include "tw_state.h"

#define MIN 60000LL
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define HORIZON (7 * DAY)
#define T0 1740794400000LL /* 2025-03-01T10:00:00+08:00 */

typedef struct fx {
  char dir[64];
  tw_state_t *st;
} fx_t;

static const tw_state_opts_t opts = {.no_sync = true};

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  strcpy(f->dir, "/tmp/tw-dedup-XXXXXX");
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

/* Close without committing: what a kill -9 leaves behind. */
static void crash_and_reopen(fx_t *f) {
  tw_state_close(f->st);
  f->st = NULL;
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
}

static bool dd(tw_state_t *st, const char *id, int64_t ts) {
  bool dup = true;
  assert_int_equal(tw_state_dedup(st, id, strlen(id), ts, HORIZON, &dup), 0);
  return dup;
}

static tw_state_stats_t stats(tw_state_t *st) {
  tw_state_stats_t s;
  tw_state_stats(st, &s);
  return s;
}

/* Case 002: p-1, p-2, p-1, p-3, p-2 → 3 payments, 900,000 fen; 2 duplicates. */
static void test_case_002_duplicate_delivery(void **state) {
  fx_t *f = *state;
  static const struct {
    const char *id;
    int64_t ts;
  } in[] = {{"p-1", T0},
            {"p-2", T0 + 5 * MIN},
            {"p-1", T0},
            {"p-3", T0 + 10 * MIN},
            {"p-2", T0 + 5 * MIN}};
  const tw_window_spec_t n = {"payments_30d", TW_AGG_COUNT, 30 * DAY, 0};
  const tw_window_spec_t fen = {"prepaid_fen_30d", TW_AGG_SUM, 30 * DAY, 0};
  const char *inst = "52440106MJL17630G2";
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++) {
    if (dd(f->st, in[i].id, in[i].ts)) continue;
    assert_int_equal(tw_state_agg_add(f->st, &n, inst, strlen(inst), in[i].ts, 0), 0);
    assert_int_equal(tw_state_agg_add(f->st, &fen, inst, strlen(inst), in[i].ts, 300000), 0);
  }
  int64_t v;
  assert_int_equal(tw_state_agg_value(f->st, &n, inst, strlen(inst), T0 + 10 * MIN, &v), 0);
  assert_int_equal(v, 3);
  assert_int_equal(tw_state_agg_value(f->st, &fen, inst, strlen(inst), T0 + 10 * MIN, &v), 0);
  assert_int_equal(v, 900000);
  assert_int_equal(stats(f->st).duplicates, 2);
  assert_int_equal(stats(f->st).dedup_staged, 3);
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_int_equal(stats(f->st).dedup_staged, 0);
  /* Redelivered after the commit, and after a restart: still duplicates. */
  assert_true(dd(f->st, "p-3", T0 + 10 * MIN));
  crash_and_reopen(f);
  assert_true(dd(f->st, "p-1", T0));
  assert_true(dd(f->st, "p-2", T0 + 5 * MIN));
  assert_false(dd(f->st, "p-4", T0 + 11 * MIN));
}

/* Ids staged but not committed vanish with a crash, exactly like the aggregates: the event,
 * re-read after restart, is not a duplicate of its uncommitted self. */
static void test_uncommitted_ids_vanish(void **state) {
  fx_t *f = *state;
  assert_false(dd(f->st, "a", T0));
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_false(dd(f->st, "b", T0 + 1));
  assert_true(dd(f->st, "b", T0 + 1));
  crash_and_reopen(f);
  assert_true(dd(f->st, "a", T0));
  assert_false(dd(f->st, "b", T0 + 1));
  assert_int_equal(tw_state_commit(f->st), 0);
  size_t ids, idx;
  assert_int_equal(tw__state_dedup_committed(f->st, &ids, &idx), 0);
  assert_int_equal(ids, 2);
  assert_int_equal(idx, 2);
}

static void test_failed_commit_keeps_staged_ids(void **state) {
  fx_t *f = *state;
  char id[32];
  for (int i = 0; i < 3000; i++) {
    snprintf(id, sizeof id, "ev-%d", (i * 7919) % 3000);
    assert_false(dd(f->st, id, T0 + i));
  }
  tw__state_fail_commits(f->st, 1);
  assert_int_equal(tw_state_commit(f->st), TW_ESTATE);
  /* The failed commit sorted the staged ids; they must still be found. */
  for (int i = 0; i < 3000; i++) {
    snprintf(id, sizeof id, "ev-%d", i);
    assert_true(dd(f->st, id, T0));
  }
  assert_int_equal(stats(f->st).dedup_staged, 3000);
  assert_int_equal(tw_state_commit(f->st), 0);
  crash_and_reopen(f);
  for (int i = 0; i < 3000; i++) {
    snprintf(id, sizeof id, "ev-%d", i);
    assert_true(dd(f->st, id, T0));
  }
}

/* Remembered while its time ≥ newest − horizon; forgotten after, and then not recorded again
 * when the event itself is older than that (it would be forgotten at once). */
static void test_horizon_edge(void **state) {
  fx_t *f = *state;
  assert_false(dd(f->st, "old", T0));
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_false(dd(f->st, "new", T0 + HORIZON));
  assert_true(dd(f->st, "old", T0)); /* T0 = newest − horizon: inside */
  assert_false(dd(f->st, "newer", T0 + HORIZON + 1));
  assert_false(dd(f->st, "old", T0)); /* now outside: forgotten */
  assert_false(dd(f->st, "old", T0)); /* and not recorded again */
  /* The newest time survives a restart with the commit. */
  assert_int_equal(tw_state_commit(f->st), 0);
  crash_and_reopen(f);
  assert_false(dd(f->st, "old", T0));
  assert_true(dd(f->st, "new", T0 + HORIZON));
  /* Staged ids expire the same way. */
  assert_false(dd(f->st, "s", T0 + HORIZON + 2));
  assert_false(dd(f->st, "z", T0 + 2 * HORIZON + 3));
  assert_false(dd(f->st, "s", T0 + HORIZON + 2));
}

/* Purging is bounded per commit (1024 + 2 · staged) and eventually forgets every expired id,
 * in both databases; the newest ids are kept. */
static void test_purge_bounded(void **state) {
  fx_t *f = *state;
  char id[32];
  const int n = 5000;
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "e%d", i);
    assert_false(dd(f->st, id, T0 + i * MIN));
    if (i % 1000 == 999) assert_int_equal(tw_state_commit(f->st), 0);
  }
  assert_int_equal(stats(f->st).dedup_ids_purged, 0);
  /* One event a horizon later expires all but the ids at or after its time − horizon. */
  int64_t t = T0 + HORIZON + 4000 * MIN;
  assert_false(dd(f->st, "late-1", t));
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_int_equal(stats(f->st).dedup_ids_purged, 1024 + 2);
  size_t ids, idx;
  assert_int_equal(tw__state_dedup_committed(f->st, &ids, &idx), 0);
  assert_int_equal(ids, (size_t)n + 1 - 1026);
  assert_int_equal(idx, ids);
  for (int c = 0; c < 3; c++) {
    snprintf(id, sizeof id, "late-%d", c + 2);
    assert_false(dd(f->st, id, t));
    assert_int_equal(tw_state_commit(f->st), 0);
  }
  assert_int_equal(stats(f->st).dedup_ids_purged, 4000);
  assert_int_equal(tw__state_dedup_committed(f->st, &ids, &idx), 0);
  assert_int_equal(ids, 1000 + 4);
  assert_int_equal(idx, ids);
  assert_true(dd(f->st, "e4000", T0 + 4000 * MIN));
  assert_false(dd(f->st, "e3999", T0 + 3999 * MIN));
}

/* An id forgotten and delivered again later is recorded with its new time; purging the old
 * time-index record must not delete the new one. */
static void test_rerecorded_after_expiry(void **state) {
  fx_t *f = *state;
  assert_false(dd(f->st, "x", T0));
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_false(dd(f->st, "tick", T0 + HORIZON + 1));
  /* Same id, a new event time (a producer reusing ids): not a duplicate, recorded again. */
  assert_false(dd(f->st, "x", T0 + HORIZON + 1));
  assert_int_equal(tw_state_commit(f->st), 0); /* purges x@T0 from the index only */
  assert_int_equal(stats(f->st).dedup_ids_purged, 1);
  assert_true(dd(f->st, "x", T0 + HORIZON + 1));
  crash_and_reopen(f);
  assert_true(dd(f->st, "x", T0 + HORIZON + 1));
  size_t ids, idx;
  assert_int_equal(tw__state_dedup_committed(f->st, &ids, &idx), 0);
  assert_int_equal(ids, 2);
  assert_int_equal(idx, 2);
}

static void test_bad_arguments(void **state) {
  fx_t *f = *state;
  bool dup = true;
  char big[TW_STATE_EVENT_ID_MAX + 1];
  memset(big, 'a', sizeof big);
  assert_int_equal(tw_state_dedup(f->st, "a", 0, T0, HORIZON, &dup), TW_EINVAL);
  assert_false(dup);
  assert_int_equal(tw_state_dedup(f->st, NULL, 1, T0, HORIZON, &dup), TW_EINVAL);
  assert_int_equal(tw_state_dedup(f->st, "a", 1, T0, 0, &dup), TW_EINVAL);
  assert_int_equal(tw_state_dedup(f->st, "a", 1, T0, -5, &dup), TW_EINVAL);
  assert_int_equal(tw_state_dedup(f->st, "a", 1, INT64_MAX, HORIZON, &dup), TW_EINVAL);
  assert_int_equal(tw_state_dedup(f->st, "a", 1, T0, HORIZON, NULL), TW_EINVAL);
  assert_int_equal(tw_state_dedup(NULL, "a", 1, T0, HORIZON, &dup), TW_EINVAL);
  assert_int_equal(tw_state_dedup(f->st, big, sizeof big, T0, HORIZON, &dup), TW_ETOOBIG);
  assert_int_equal(tw_state_dedup(f->st, big, sizeof big - 1, T0, HORIZON, &dup), 0);
  assert_false(dup);
  assert_int_equal(tw_state_commit(f->st), 0);
  assert_int_equal(tw_state_dedup(f->st, big, sizeof big - 1, T0, HORIZON, &dup), 0);
  assert_true(dup);
  /* Ids are bytes: embedded NULs and prefixes are distinct ids. */
  assert_int_equal(tw_state_dedup(f->st, "a\0b", 3, T0, HORIZON, &dup), 0);
  assert_false(dup);
  assert_int_equal(tw_state_dedup(f->st, "a\0c", 3, T0, HORIZON, &dup), 0);
  assert_false(dup);
  assert_int_equal(tw_state_dedup(f->st, "a", 1, T0, HORIZON, &dup), 0);
  assert_false(dup);
  /* The store's meta names are reserved. */
  assert_int_equal(tw_state_meta_put(f->st, "tw.dedup", "x", 1), TW_EINVAL);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* n distinct ids in batches of 10,000 (commit each), then the same n again (all duplicates).
 * With TW_BENCH=1, n = 1e6 and the rates are printed (build with CMAKE_BUILD_TYPE=Release). */
static void test_lookup_rate(void **state) {
  fx_t *f = *state;
  const char *b = getenv("TW_BENCH");
  int n = b && *b == '1' ? 1000000 : 30000;
  char id[40];
  double t0 = now_s();
  for (int i = 0; i < n; i++) {
    int len = snprintf(id, sizeof id, "evt-%08x-%d", (unsigned)(i * 2654435761u), i);
    bool dup = true;
    assert_int_equal(tw_state_dedup(f->st, id, (size_t)len, T0 + i, HORIZON, &dup), 0);
    if (dup) fail();
    if (i % 10000 == 9999) assert_int_equal(tw_state_commit(f->st), 0);
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  double t1 = now_s();
  for (int i = 0; i < n; i++) {
    int len = snprintf(id, sizeof id, "evt-%08x-%d", (unsigned)(i * 2654435761u), i);
    bool dup = false;
    assert_int_equal(tw_state_dedup(f->st, id, (size_t)len, T0 + i, HORIZON, &dup), 0);
    if (!dup) fail();
  }
  double t2 = now_s();
  assert_int_equal(stats(f->st).duplicates, (uint64_t)n);
  if (b && *b == '1')
    printf(
        "dedup: %d distinct ids (commit every 10,000): %.2f s, %.0f/s; %d repeats: %.2f s, "
        "%.0f/s\n",
        n, t1 - t0, n / (t1 - t0), n, t2 - t1, n / (t2 - t1));
}

/* Write one record into database db of the closed state in dir with raw LMDB (creating db). */
static void raw_put(const char *dir, const char *db, const char *key, size_t klen, const char *val,
                    size_t vlen) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
  assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, db, MDB_CREATE, &dbi), 0);
  MDB_val k = {klen, (void *)key}, v = {vlen, (void *)val};
  assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

/* A state written before the ids moved into memory had a second database by id, `dedup`: it is
 * dropped at open, and the ids it held are still duplicates (they are in dedup_ts too). */
static void test_old_dedup_database_dropped(void **state) {
  fx_t *f = *state;
  assert_false(dd(f->st, "kept", T0));
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_close(f->st);
  f->st = NULL;
  raw_put(f->dir, "dedup", "kept", 4, "\0\0\0\0\0\0\0\0", 8);
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  assert_true(dd(f->st, "kept", T0));
  assert_false(dd(f->st, "fresh", T0 + 1));
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_close(f->st);
  f->st = NULL;
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
  assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "dedup", 0, &dbi), MDB_NOTFOUND);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  assert_true(dd(f->st, "fresh", T0 + 1));
}

/* The in-memory set follows LMDB: ids join it at commit, leave it with the purge, and the chunks
 * that held them are freed; reopening rebuilds the same set. */
static void test_memory_follows_purge(void **state) {
  fx_t *f = *state;
  char id[40];
  const int n = 50000;
  for (int i = 0; i < n; i++) {
    snprintf(id, sizeof id, "old-%d", i);
    assert_false(dd(f->st, id, T0 + i));
    if (i % 5000 == 4999) assert_int_equal(tw_state_commit(f->st), 0);
  }
  assert_int_equal(stats(f->st).dedup_ids_committed, (uint64_t)n);
  uint64_t full = stats(f->st).dedup_memory_bytes;
  assert_true(full > (uint64_t)n * 24);
  crash_and_reopen(f);
  assert_int_equal(stats(f->st).dedup_ids_committed, (uint64_t)n);
  assert_true(dd(f->st, "old-49999", T0 + 49999));
  /* A horizon later: every commit purges 1024 + 2 · staged, until only the new ids are left. */
  int64_t t = T0 + HORIZON + n;
  for (int c = 0; stats(f->st).dedup_ids_committed > (uint64_t)c; c++) {
    snprintf(id, sizeof id, "new-%d", c);
    assert_false(dd(f->st, id, t));
    assert_int_equal(tw_state_commit(f->st), 0);
    assert_true(c < 100);
    if (stats(f->st).dedup_ids_committed == (uint64_t)c + 1) break;
  }
  size_t ids, idx;
  assert_int_equal(tw__state_dedup_committed(f->st, &ids, &idx), 0);
  assert_int_equal(ids, idx);
  assert_true(ids < 100);
  /* The table keeps its size; the chunks of the old ids are gone. */
  uint64_t after = stats(f->st).dedup_memory_bytes;
  assert_true(after < full);
  assert_true(after <= full - (uint64_t)n * 16);
  assert_false(dd(f->st, "old-0", T0));
}

/* A corrupt record found after the ids are loaded (here the newest-time meta record) makes the
 * open fail with TW_ESTATE; it returned 0 without a state when loading the ids had succeeded. */
static void test_open_corrupt_meta_after_ids(void **state) {
  fx_t *f = *state;
  assert_false(dd(f->st, "id-1", T0));
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_close(f->st);
  f->st = NULL;
  raw_put(f->dir, "meta", "tw.dedup", 8, "abcd", 4);
  tw_state_t *st = NULL;
  assert_int_equal(tw_state_open(f->dir, &opts, &st), TW_ESTATE);
  assert_null(st);
}

/* The set itself: replacing, forgetting by time, and probe chains with one hash for every id. */
static void test_dedup_set(void **state) {
  (void)state;
  tw__dds_t s;
  memset(&s, 0, sizeof s);
  int64_t t = 0;
  char id[16];
  assert_int_equal(tw__dds_put(&s, (const unsigned char *)"x", 1, 7, 1), TW_ENOMEM); /* no room */
  assert_int_equal(tw__dds_reserve(&s, 100, 100 * 8), 0);
  for (int i = 0; i < 100; i++) {
    int len = snprintf(id, sizeof id, "id%d", i);
    assert_int_equal(tw__dds_put(&s, (const unsigned char *)id, (size_t)len, 42, i), 0);
  }
  assert_int_equal(s.n, 100);
  assert_int_equal(tw__dds_reserve(&s, 1, 3), 0);
  assert_int_equal(tw__dds_put(&s, (const unsigned char *)"id5", 3, 42, 500), 0); /* replaces */
  assert_int_equal(s.n, 100);
  assert_int_equal(tw__dds_get(&s, (const unsigned char *)"id5", 3, 42, &t), 1);
  assert_int_equal(t, 500);
  tw__dds_forget(&s, (const unsigned char *)"id5", 3, 42, 5); /* an older time: stays */
  assert_int_equal(tw__dds_get(&s, (const unsigned char *)"id5", 3, 42, &t), 1);
  for (int i = 0; i < 100; i += 2) {
    int len = snprintf(id, sizeof id, "id%d", i);
    tw__dds_forget(&s, (const unsigned char *)id, (size_t)len, 42, i == 5 ? 500 : i);
  }
  assert_int_equal(s.n, 50);
  for (int i = 0; i < 100; i++) {
    int len = snprintf(id, sizeof id, "id%d", i);
    int found = tw__dds_get(&s, (const unsigned char *)id, (size_t)len, 42, &t);
    assert_int_equal(found, i % 2);
    if (found) assert_int_equal(t, i == 5 ? 500 : i);
  }
  assert_int_equal(tw__dds_get(&s, (const unsigned char *)"id1", 3, 43, &t), 0); /* other hash */
  tw__dds_free(&s);
  assert_int_equal(s.n, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_case_002_duplicate_delivery, setup, teardown),
      cmocka_unit_test_setup_teardown(test_uncommitted_ids_vanish, setup, teardown),
      cmocka_unit_test_setup_teardown(test_failed_commit_keeps_staged_ids, setup, teardown),
      cmocka_unit_test_setup_teardown(test_horizon_edge, setup, teardown),
      cmocka_unit_test_setup_teardown(test_purge_bounded, setup, teardown),
      cmocka_unit_test_setup_teardown(test_rerecorded_after_expiry, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_lookup_rate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_old_dedup_database_dropped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_follows_purge, setup, teardown),
      cmocka_unit_test_setup_teardown(test_open_corrupt_meta_after_ids, setup, teardown),
      cmocka_unit_test(test_dedup_set),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
