/*
 * test_window.c: sliding-window semantics of tw_state aggregates (bucket width, edges, late
 * events, eviction, the bucket cap, `all` windows, saturation), checked against brute force.
 * Each test gets a fresh state directory from mkdtemp, removed in teardown.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "state_internal.h"
#include "tw_error.h"
#include "tw_event.h"
#include "tw_state.h"

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)

typedef struct fx {
  char dir[64];
  tw_state_t *st;
} fx_t;

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  strcpy(f->dir, "/tmp/tw-window-XXXXXX");
  assert_non_null(mkdtemp(f->dir));
  tw_state_opts_t o = {.no_sync = true};
  assert_int_equal(tw_state_open(f->dir, &o, &f->st), 0);
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

static uint64_t rng_state = 0x12345678abcdefULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int64_t value_at(tw_state_t *st, const tw_window_spec_t *s, const char *key, int64_t t) {
  int64_t v = -12345;
  assert_int_equal(tw_state_agg_value(st, s, key, strlen(key), t, &v), 0);
  return v;
}

static void test_granularity(void **state) {
  (void)state;
  assert_int_equal(tw__window_granularity_ms(256 * SEC), SEC);
  assert_int_equal(tw__window_granularity_ms(257 * SEC), MIN);
  assert_int_equal(tw__window_granularity_ms(HOUR), MIN);
  assert_int_equal(tw__window_granularity_ms(24 * HOUR), 15 * MIN);
  assert_int_equal(tw__window_granularity_ms(7 * DAY), HOUR);
  assert_int_equal(tw__window_granularity_ms(30 * DAY), 6 * HOUR);
  assert_int_equal(tw__window_granularity_ms(256 * DAY), DAY);
  assert_int_equal(tw__window_granularity_ms(300 * DAY), 2 * DAY);
  assert_int_equal(tw__window_granularity_ms(3650 * DAY), 15 * DAY);
  assert_int_equal(tw__window_cap(7 * DAY), 169);
  assert_int_equal(tw__window_cap(500), 2);
  assert_true(tw__window_cap(3650 * DAY) <= 257);
}

/* Parse "2025-03-01T10:00:00.001+08:00" from the "ts" field of a JSON line. */
static int64_t parse_ts(const char *line) {
  const char *p = strstr(line, "\"ts\": \"");
  assert_non_null(p);
  p += 7;
  struct tm tm = {0};
  int ms = 0, oh = 0, om = 0;
  char sign = 0;
  assert_int_equal(sscanf(p, "%4d-%2d-%2dT%2d:%2d:%2d.%3d%c%2d:%2d", &tm.tm_year, &tm.tm_mon,
                          &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms, &sign, &oh, &om),
                   10);
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  int64_t off = (oh * 60 + om) * MIN * (sign == '-' ? -1 : 1);
  return (int64_t)timegm(&tm) * SEC + ms - off;
}

/* Case 004: c-1 at exactly t − 7d is out of (t − 7d, t], c-2 one millisecond later is in. */
static void test_case_004_window_edge(void **state) {
  fx_t *f = *state;
  /* The copy in tests/data (the shared cases are not part of the repository). */
  const char *src = getenv("TW_SOURCE_DIR");
  char path[512];
  snprintf(path, sizeof path, "%s/tests/data/004-window-edge.jsonl", src ? src : TW_SOURCE_DIR);
  FILE *in = fopen(path, "r");
  assert_non_null(in);
  tw_window_spec_t s = {"complaints_7d", TW_AGG_COUNT, 7 * DAY, 0};
  char line[2048];
  int64_t ts[3];
  int n = 0;
  while (n < 3 && fgets(line, sizeof line, in)) {
    ts[n] = parse_ts(line);
    assert_int_equal(tw_state_agg_add(f->st, &s, "52440106MJL17630G", 17, ts[n], 0), 0);
    n++;
  }
  fclose(in);
  assert_int_equal(n, 3);
  assert_int_equal(ts[2] - ts[0], 7 * DAY);
  assert_int_equal(ts[1] - ts[0], 1);
  assert_int_equal(value_at(f->st, &s, "52440106MJL17630G", ts[2]), 2);
  /* A 7d window one hour later has lost c-2's bucket too. */
  assert_int_equal(value_at(f->st, &s, "52440106MJL17630G", ts[2] + 3600000), 1);
}

/* Counts and sums at many times against brute force, with times on bucket ends (exact). */
static void test_sliding_exact_on_bucket_ends(void **state) {
  fx_t *f = *state;
  tw_window_spec_t c = {"c1h", TW_AGG_COUNT, HOUR, 0}; /* g = 1m */
  tw_window_spec_t s = {"s1h", TW_AGG_SUM, HOUR, 0};
  enum { N = 3000 };
  static int64_t ts[N], val[N];
  int64_t t = 1700000000000LL / MIN * MIN;
  for (int i = 0; i < N; i++) {
    t += (int64_t)(rnd() % 3) * MIN; /* several events per minute, gaps up to 2 minutes */
    ts[i] = t;
    val[i] = (int64_t)(rnd() % 20001) - 10000;
    assert_int_equal(tw_state_agg_add(f->st, &c, "k", 1, ts[i], 0), 0);
    assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, ts[i], val[i]), 0);
    int64_t bc = 0, bs = 0;
    for (int j = 0; j <= i; j++)
      if (ts[j] > t - HOUR && ts[j] <= t) bc++, bs += val[j];
    assert_int_equal(value_at(f->st, &c, "k", t), bc);
    assert_int_equal(value_at(f->st, &s, "k", t), bs);
  }
}

/* Unaligned times: the value is within one bucket at the old edge. */
static void test_sliding_unaligned_bounds(void **state) {
  fx_t *f = *state;
  tw_window_spec_t c = {"c10m", TW_AGG_COUNT, 10 * MIN, 0}; /* g = 1m? 600s > 256s, so 1m */
  enum { N = 4000 };
  static int64_t ts[N];
  int64_t t = 1700000000123LL;
  for (int i = 0; i < N; i++) {
    t += (int64_t)(rnd() % 20000);
    ts[i] = t;
    assert_int_equal(tw_state_agg_add(f->st, &c, "u", 1, t, 0), 0);
    int64_t lo = 0, hi = 0;
    for (int j = 0; j <= i; j++) {
      if (ts[j] > t - 10 * MIN) lo++;
      if (ts[j] > t - 10 * MIN - MIN) hi++;
    }
    int64_t v = value_at(f->st, &c, "u", t);
    assert_true(v >= lo);
    assert_true(v <= hi);
  }
}

static void test_late_event_inside_window(void **state) {
  fx_t *f = *state;
  tw_window_spec_t s = {"late", TW_AGG_SUM, 7 * DAY, 0};
  int64_t t0 = 1740000000000LL / HOUR * HOUR;
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 10 * HOUR, 5), 0);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 12 * HOUR, 7), 0);
  /* Late, between the two, and late into the same bucket as the first. */
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 11 * HOUR, 100), 0);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 10 * HOUR - 1, 1000), 0);
  /* Late, older than everything but still inside the window. */
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 - 6 * DAY, 10000), 0);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 12 * HOUR), 11112);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 11 * HOUR), 11105);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 10 * HOUR), 11005);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 9 * HOUR), 10000);
  uint32_t nb = 0, cap = 0;
  assert_int_equal(tw__state_agg_buckets(f->st, &s, "k", 1, &nb, &cap), 0);
  assert_int_equal(nb, 4);
  /* Too old: at or before newest − 7d is ignored and counted. */
  tw_state_stats_t st;
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 12 * HOUR - 7 * DAY, 1), 0);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.too_old, 1);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 12 * HOUR), 11112);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 12 * HOUR - 7 * DAY + 1, 1), 0);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 12 * HOUR), 11113);
}

static void test_eviction(void **state) {
  fx_t *f = *state;
  tw_window_spec_t s = {"evict", TW_AGG_COUNT, HOUR, 0};
  int64_t t0 = 1740000000000LL / MIN * MIN;
  uint32_t nb = 0, cap = 0;
  for (int i = 1; i <= 60; i++)
    assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + i * MIN, 0), 0);
  assert_int_equal(tw__state_agg_buckets(f->st, &s, "k", 1, &nb, &cap), 0);
  assert_int_equal(nb, 60);
  assert_int_equal(cap, 61);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 60 * MIN), 60);
  /* 30 minutes on, half the buckets fall out. */
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 90 * MIN, 0), 0);
  assert_int_equal(tw__state_agg_buckets(f->st, &s, "k", 1, &nb, &cap), 0);
  assert_int_equal(nb, 31);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 90 * MIN), 31);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t0 + 10 * HOUR, 0), 0);
  assert_int_equal(tw__state_agg_buckets(f->st, &s, "k", 1, &nb, &cap), 0);
  assert_int_equal(nb, 1);
  assert_int_equal(value_at(f->st, &s, "k", t0 + 10 * HOUR), 1);
  /* A query past the newest event sees the window slide too. */
  assert_int_equal(value_at(f->st, &s, "k", t0 + 12 * HOUR), 0);
}

/* 1e5 events over a year, with late jitter, for several windows: never more than the cap. */
static void test_bucket_cap_year(void **state) {
  fx_t *f = *state;
  const int64_t windows[] = {90 * SEC, HOUR, 7 * DAY, 30 * DAY, 365 * DAY};
  const int nw = (int)(sizeof windows / sizeof windows[0]);
  tw_window_spec_t s[5];
  char names[5][16];
  for (int w = 0; w < nw; w++) {
    snprintf(names[w], sizeof names[w], "cap%d", w);
    s[w] = (tw_window_spec_t){names[w], TW_AGG_COUNT, windows[w], 0};
  }
  int64_t t = 1704067200000LL, step = 365 * DAY / 100000;
  uint32_t max_seen[5] = {0};
  for (int i = 0; i < 100000; i++) {
    t += (int64_t)(rnd() % (uint64_t)(2 * step));
    int64_t ev = t - (int64_t)(rnd() % (uint64_t)(20 * MIN)); /* up to 20 minutes late */
    for (int w = 0; w < nw; w++) {
      assert_int_equal(tw_state_agg_add(f->st, &s[w], "k", 1, ev, 0), 0);
      uint32_t nb, cap;
      assert_int_equal(tw__state_agg_buckets(f->st, &s[w], "k", 1, &nb, &cap), 0);
      assert_true(nb <= cap);
      if (nb > max_seen[w]) max_seen[w] = nb;
    }
  }
  /* The long windows are dense at this rate (an event every ~5 minutes): they reach their cap. */
  for (int w = 2; w < nw; w++) assert_true(max_seen[w] + 1 >= tw__window_cap(windows[w]));
  /* Commit and reload: the stored form stays within the cap too. */
  assert_int_equal(tw_state_commit(f->st), 0);
}

static void test_all_window(void **state) {
  fx_t *f = *state;
  tw_window_spec_t c = {"total", TW_AGG_COUNT, 0, 0};
  tw_window_spec_t s = {"total_fen", TW_AGG_SUM, 0, 0};
  for (int i = 0; i < 1000; i++) {
    int64_t ts = 1000000LL * ((i * 7919) % 1000); /* out of order, spread over years */
    assert_int_equal(tw_state_agg_add(f->st, &c, "k", 1, ts, 0), 0);
    assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, ts, i), 0);
  }
  assert_int_equal(value_at(f->st, &c, "k", 0), 1000);
  assert_int_equal(value_at(f->st, &s, "k", 5), 999 * 1000 / 2);
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.too_old, 0);
  assert_int_equal(value_at(f->st, &c, "never", 0), 0);
}

static void test_sum_overflow(void **state) {
  fx_t *f = *state;
  tw_window_spec_t a = {"ovf_all", TW_AGG_SUM, 0, 0};
  tw_window_spec_t w = {"ovf_win", TW_AGG_SUM, HOUR, 0};
  int64_t t = 1740000000000LL;
  assert_int_equal(tw_state_agg_add(f->st, &a, "k", 1, t, INT64_MAX - 1), 0);
  assert_int_equal(tw_state_agg_add(f->st, &a, "k", 1, t, 5), TW_EOVERFLOW);
  assert_int_equal(value_at(f->st, &a, "k", t), INT64_MAX);
  assert_int_equal(tw_state_agg_add(f->st, &a, "n", 1, t, INT64_MIN + 1), 0);
  assert_int_equal(tw_state_agg_add(f->st, &a, "n", 1, t, -2), TW_EOVERFLOW);
  assert_int_equal(value_at(f->st, &a, "n", t), INT64_MIN);

  /* Same bucket saturates. */
  assert_int_equal(tw_state_agg_add(f->st, &w, "k", 1, t, INT64_MAX), 0);
  assert_int_equal(tw_state_agg_add(f->st, &w, "k", 1, t, 1), TW_EOVERFLOW);
  assert_int_equal(value_at(f->st, &w, "k", t), INT64_MAX);
  /* Two buckets whose sum saturates, then a negative one brings the window back in range. */
  assert_int_equal(tw_state_agg_add(f->st, &w, "m", 1, t, INT64_MAX - 10), 0);
  assert_int_equal(tw_state_agg_add(f->st, &w, "m", 1, t + 2 * MIN, 100), TW_EOVERFLOW);
  assert_int_equal(value_at(f->st, &w, "m", t + 2 * MIN), INT64_MAX);
  assert_int_equal(tw_state_agg_add(f->st, &w, "m", 1, t + 4 * MIN, -1000), 0);
  assert_int_equal(value_at(f->st, &w, "m", t + 4 * MIN), INT64_MAX - 910);
  /* The state is committed and reloaded with its saturated bucket intact. */
  assert_int_equal(tw_state_commit(f->st), 0);
}

static void test_bad_arguments(void **state) {
  fx_t *f = *state;
  char big[TW_STATE_KEY_MAX + 1];
  memset(big, 'x', sizeof big);
  char longname[TW_STATE_NAME_MAX + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = 0;
  tw_window_spec_t ok = {"ok", TW_AGG_COUNT, HOUR, 0};
  tw_window_spec_t neg = {"neg", TW_AGG_COUNT, -1, 0};
  tw_window_spec_t ln = {longname, TW_AGG_COUNT, HOUR, 0};
  tw_window_spec_t badfn = {"badfn", (tw_agg_fn_t)(TW_AGG_LAST + 1), HOUR, 0};
  int64_t v;
  assert_int_equal(tw_state_agg_add(f->st, &ok, big, sizeof big, 1, 0), TW_ETOOBIG);
  assert_int_equal(tw_state_agg_add(f->st, &ok, big, TW_STATE_KEY_MAX, 1, 0), 0);
  assert_int_equal(tw_state_agg_value(f->st, &ok, big, sizeof big, 1, &v), TW_ETOOBIG);
  assert_int_equal(tw_state_agg_add(f->st, &neg, "k", 1, 1, 0), TW_EINVAL);
  assert_int_equal(tw_state_agg_add(f->st, &ln, "k", 1, 1, 0), TW_ETOOBIG);
  assert_int_equal(tw_state_agg_add(f->st, &badfn, "k", 1, 1, 0), TW_EINVAL);
  assert_int_equal(tw_state_agg_add(f->st, &ok, "k", 1, INT64_MAX, 0), TW_EINVAL);
  /* Keys are bytes: embedded NULs and distinct lengths are distinct keys. */
  assert_int_equal(tw_state_agg_add(f->st, &ok, "a\0b", 3, 10, 0), 0);
  assert_int_equal(tw_state_agg_value(f->st, &ok, "a\0c", 3, 10, &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(tw_state_agg_value(f->st, &ok, "a", 1, 10, &v), 0);
  assert_int_equal(v, 0);
  assert_int_equal(tw_state_agg_value(f->st, &ok, "a\0b", 3, 10, &v), 0);
  assert_int_equal(v, 1);
  /* Same name, other window: a separate series. */
  tw_window_spec_t other = {"ok", TW_AGG_COUNT, DAY, 0};
  assert_int_equal(tw_state_agg_value(f->st, &other, "a\0b", 3, 10, &v), 0);
  assert_int_equal(v, 0);
}

/* Many keys force the hash table to grow; every key keeps its own value. */
static void test_many_keys(void **state) {
  fx_t *f = *state;
  tw_window_spec_t s = {"many", TW_AGG_SUM, DAY, 0};
  char k[32];
  for (int i = 0; i < 20000; i++) {
    int n = snprintf(k, sizeof k, "inst-%d", i);
    assert_int_equal(tw_state_agg_add(f->st, &s, k, (size_t)n, 1000 + i, i), 0);
    assert_int_equal(tw_state_agg_add(f->st, &s, k, (size_t)n, 2000 + i, i), 0);
  }
  for (int i = 0; i < 20000; i++) {
    int n = snprintf(k, sizeof k, "inst-%d", i);
    int64_t v;
    assert_int_equal(tw_state_agg_value(f->st, &s, k, (size_t)n, 2000 + i, &v), 0);
    assert_int_equal(v, 2 * i);
  }
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.keys_in_memory, 20000);
}

/* Case 009: with 1d buckets in Asia/Shanghai, a bucket is one local day (00:00, 24:00]. */
static void test_case_009_local_days(void **state) {
  (void)state;
  const int64_t p1 = 1740843000000LL; /* 2025-03-01T23:30:00+08:00 */
  const int64_t p2 = 1740846600000LL; /* 2025-03-01T16:30:00Z = 03-02 00:30 local */
  const int64_t p3 = 1740844799999LL; /* 2025-03-01T15:59:59.999Z = 03-01 23:59:59.999 local */
  const int64_t p4 = 1740844800000LL; /* epoch ms = 2025-03-02T00:00:00.000 local */
  const int64_t day_0301 = 1740787200000LL / DAY; /* days since 1970-01-01 of 2025-03-01 */
  tw__entry_t *e = calloc(1, sizeof *e + 2);
  assert_non_null(e);
  e->key_len = 2;
  e->key[0] = TW__KIND_AGG;
  e->key[1] = 'k';
  e->window_ms = 7 * DAY;
  e->g_ms = DAY;
  e->nb_max = 8;
  e->stride = 2;
  e->align_ms = tw__align_ms(TW_STATE_TZ_DEFAULT_MS, DAY);
  assert_int_equal(e->align_ms, 8 * HOUR);
  const int64_t ts[4] = {p1, p2, p3, p4};
  /* Bucket idx covers local day idx (days since the local epoch), ending at its closing
   * midnight. p-4, exactly at local midnight 03-02 00:00:00.000, closes 03-01's bucket: the
   * windows are (t − W, t], so a 7-day window evaluated at 03-09 00:00 local leaves it out. */
  const int64_t want[4] = {day_0301, day_0301 + 1, day_0301, day_0301};
  for (int i = 0; i < 4; i++) {
    int too_old = 0;
    assert_int_equal(tw__window_add(e, ts[i], 1, &too_old), 0);
    assert_false(too_old);
    int found = 0;
    for (uint32_t b = 0; b < e->nb; b++) found |= tw__bk(e, b)[TW__B_IDX] == want[i];
    assert_true(found);
  }
  assert_int_equal(e->nb, 2);
  assert_int_equal(tw__bk_value(e, 0), 3);
  assert_int_equal(tw__bk_value(e, 1), 1);
  /* The fault the case names: aligned to UTC, p-2 (00:30 local on 03-02) shared 03-01's bucket. */
  e->nb = 0;
  e->seen = 0;
  e->c_count = 0;
  e->align_ms = 0;
  for (int i = 0; i < 4; i++) {
    int too_old = 0;
    assert_int_equal(tw__window_add(e, ts[i], 1, &too_old), 0);
  }
  assert_int_equal(e->nb, 1);
  tw__entry_release(e);
  free(e);
}

/* Case 009 through the API, calendar days in Asia/Shanghai: a bucket is one local day
 * [00:00, 24:00). p-1 and p-3 fall on 03-01; p-2 and p-4 (exactly local midnight) on 03-02. */
/* The "ts" of each line of tests/data/009-time-zones.jsonl: RFC 3339 or epoch ms. */
static int read_case_009(int64_t *ts, int cap) {
  const char *src = getenv("TW_SOURCE_DIR");
  char path[512], line[2048];
  snprintf(path, sizeof path, "%s/tests/data/009-time-zones.jsonl", src ? src : TW_SOURCE_DIR);
  FILE *in = fopen(path, "r");
  assert_non_null(in);
  int n = 0;
  while (n < cap && fgets(line, sizeof line, in)) {
    const char *p = strstr(line, "\"ts\": ");
    assert_non_null(p);
    p += 6;
    if (*p == '"') {
      const char *end = strchr(p + 1, '"');
      assert_non_null(end);
      assert_int_equal(tw_parse_rfc3339(p + 1, (size_t)(end - p - 1), &ts[n]), 0);
    } else {
      ts[n] = strtoll(p, NULL, 10);
    }
    n++;
  }
  fclose(in);
  return n;
}

static void test_case_009_calendar_days(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t s = {"pay_7d", TW_AGG_COUNT, 7 * DAY, DAY};
  int64_t ts[4];
  assert_int_equal(read_case_009(ts, 4), 4);
  assert_int_equal(ts[0], 1740843000000LL); /* p-1 2025-03-01T23:30:00+08:00 */
  assert_int_equal(ts[1], 1740846600000LL); /* p-2 2025-03-01T16:30:00Z */
  assert_int_equal(ts[2], 1740844799999LL); /* p-3 2025-03-01T15:59:59.999Z */
  assert_int_equal(ts[3], 1740844800000LL); /* p-4 epoch ms: 03-02 00:00 local */
  const int64_t mid_0302 = 1740844800000LL; /* 2025-03-02T00:00:00+08:00 */
  for (int i = 0; i < 4; i++) assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, ts[i], 0), 0);
  assert_int_equal(value_at(f->st, &s, "k", mid_0302), 4);               /* 02-24 .. 03-02 */
  assert_int_equal(value_at(f->st, &s, "k", mid_0302 - 1), 2);           /* 02-23 .. 03-01 */
  assert_int_equal(value_at(f->st, &s, "k", mid_0302 + 6 * DAY - 1), 4); /* 03-01 .. 03-07 */
  assert_int_equal(value_at(f->st, &s, "k", mid_0302 + 6 * DAY), 2);     /* 03-02 .. 03-08 */
  assert_int_equal(value_at(f->st, &s, "k", mid_0302 + 7 * DAY), 0);     /* 03-03 .. 03-09 */
  tw_agg_out_t out[7];
  size_t n = 0;
  assert_int_equal(tw_state_agg_series(f->st, &s, "k", 1, mid_0302 + 12 * HOUR, out, 7, &n), 0);
  assert_int_equal(n, 7);
  for (int i = 0; i < 7; i++) {
    assert_int_equal(out[i].bucket_ms, mid_0302 - (6 - i) * DAY);
    assert_int_equal(out[i].present, i >= 5);
    assert_int_equal(out[i].value, i >= 5 ? 2 : 0);
    assert_int_equal(out[i].count, i >= 5 ? 2 : 0);
  }
  assert_int_equal(tw_state_agg_series(f->st, &s, "k", 1, mid_0302, out, 6, &n), TW_ETOOBIG);
  /* In a UTC state all four fall on the UTC day 03-01 (the fault the case names). */
  tw_state_t *utc = NULL;
  char dir[64];
  strcpy(dir, "/tmp/tw-window-utc-XXXXXX");
  assert_non_null(mkdtemp(dir));
  tw_state_opts_t o = {.no_sync = true, .tz_set = true, .tz_offset_ms = 0};
  assert_int_equal(tw_state_open(dir, &o, &utc), 0);
  for (int i = 0; i < 4; i++) assert_int_equal(tw_state_agg_add(utc, &s, "k", 1, ts[i], 0), 0);
  assert_int_equal(tw_state_agg_series(utc, &s, "k", 1, mid_0302, out, 7, &n), 0);
  assert_int_equal(out[6].bucket_ms, 1740787200000LL); /* 2025-03-01T00:00:00Z */
  assert_int_equal(out[6].value, 4);
  assert_int_equal(out[5].present, false);
  tw_state_close(utc);
  nftw(dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
  /* Offsets beyond ±18h are refused. */
  o.tz_offset_ms = 19 * HOUR;
  assert_int_equal(tw_state_open(dir, &o, &utc), TW_EINVAL);
  o.tz_offset_ms = -5 * HOUR - 30 * MIN; /* a negative, non-hour offset aligns too */
  assert_int_equal(tw__align_ms(o.tz_offset_ms, DAY), DAY - 5 * HOUR - 30 * MIN);
  assert_int_equal(tw__align_ms(o.tz_offset_ms, HOUR), 30 * MIN);
}

/* Explicit bucket widths: validation, the cap, and identity (another width, another series). */
static void test_explicit_bucket(void **state) {
  fx_t *f = *state;
  int64_t v;
  const struct {
    int64_t window_ms, bucket_ms;
    int rc;
  } cases[] = {
      {7 * DAY, DAY, 0},
      {7 * DAY, 999, TW_EINVAL},
      {7 * DAY, 5 * DAY, TW_EINVAL},
      {0, DAY, TW_EINVAL},
      {DAY, 2 * DAY, TW_EINVAL},
      {4096 * SEC, SEC, 0},
      {4097 * SEC, SEC, TW_EINVAL},
      {HOUR, -MIN, TW_EINVAL},
      {HOUR, HOUR, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    tw_window_spec_t s = {"xb", TW_AGG_COUNT, cases[i].window_ms, cases[i].bucket_ms};
    assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, DAY, 0), cases[i].rc);
    assert_int_equal(tw_state_agg_value(f->st, &s, "k", 1, DAY, &v), cases[i].rc);
  }
  /* 4096 one-second calendar buckets: the cap is 4096 and holds. */
  tw_window_spec_t fine = {"fine", TW_AGG_SUM, 4096 * SEC, SEC};
  assert_int_equal(tw__spec_cap(&fine), 4096);
  int64_t t0 = 1740000000000LL;
  for (int i = 0; i < 9000; i++)
    assert_int_equal(tw_state_agg_add(f->st, &fine, "k", 1, t0 + i * SEC, 1), 0);
  uint32_t nb = 0, cap = 0;
  assert_int_equal(tw__state_agg_buckets(f->st, &fine, "k", 1, &nb, &cap), 0);
  assert_int_equal(cap, 4096);
  assert_int_equal(nb, cap);
  assert_int_equal(value_at(f->st, &fine, "k", t0 + 8999 * SEC), 4096);
  /* Same name, fn and window, automatic vs explicit width: separate series. */
  tw_window_spec_t a = {"same", TW_AGG_COUNT, 7 * DAY, 0}, b = {"same", TW_AGG_COUNT, 7 * DAY, DAY};
  assert_int_equal(tw_state_agg_add(f->st, &a, "k", 1, t0, 0), 0);
  assert_int_equal(value_at(f->st, &b, "k", t0), 0);
  unsigned char ka[TW__STATE_DBKEY_MAX], kb[TW__STATE_DBKEY_MAX];
  int na = tw__state_agg_dbkey(&a, "k", 1, ka, sizeof ka);
  int nb2 = tw__state_agg_dbkey(&b, "k", 1, kb, sizeof kb);
  assert_int_equal(na + 8, nb2);
  assert_int_equal(ka[5], TW_AGG_COUNT);        /* "same" NUL fn: version 1 key unchanged */
  assert_int_equal(kb[5], TW_AGG_COUNT | 0x80); /* explicit width flagged */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_granularity),
      cmocka_unit_test_setup_teardown(test_case_004_window_edge, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sliding_exact_on_bucket_ends, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sliding_unaligned_bounds, setup, teardown),
      cmocka_unit_test_setup_teardown(test_late_event_inside_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_eviction, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bucket_cap_year, setup, teardown),
      cmocka_unit_test_setup_teardown(test_all_window, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sum_overflow, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_arguments, setup, teardown),
      cmocka_unit_test_setup_teardown(test_many_keys, setup, teardown),
      cmocka_unit_test(test_case_009_local_days),
      cmocka_unit_test_setup_teardown(test_case_009_calendar_days, setup, teardown),
      cmocka_unit_test_setup_teardown(test_explicit_bucket, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
