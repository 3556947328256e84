/*
 * test_agg_fns.c: every aggregate function (count, sum, avg, min, max, distinct, first, last)
 * over sliding windows, `all` windows and calendar buckets, checked against brute force: in
 * order, out of order (late inside the window), at the window edge, after eviction, across
 * commit / close / reopen; calendar series with empty buckets, Monday weeks, the case-009 day
 * split and other time zones; DISTINCT's switch from the exact table to the HyperLogLog sketch,
 * its estimate cut to the window's events, and the same values whatever commits, eviction and
 * restarts; ties of FIRST and LAST; saturation; the memory bound per key; corrupt version 3
 * entries.
 * Each test gets a fresh state directory from mkdtemp, removed in teardown.
 */
#define _XOPEN_SOURCE 700
#include <ftw.h>
#include <limits.h>
#include <lmdb.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "state_internal.h"
#include "tw_error.h"
#include "tw_state.h"

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)
#define DAY (24 * HOUR)
#define T0 1740787200000LL       /* 2025-03-01T00:00:00Z = 08:00 local */
#define MID_0301 1740758400000LL /* 2025-03-01T00:00:00+08:00 (a Saturday) */

typedef struct fx {
  char dir[64];
  tw_state_t *st;
} fx_t;

static const tw_state_opts_t opts = {.no_sync = true};

static const tw_agg_fn_t all_fns[] = {TW_AGG_COUNT, TW_AGG_SUM,      TW_AGG_AVG,   TW_AGG_MIN,
                                      TW_AGG_MAX,   TW_AGG_DISTINCT, TW_AGG_FIRST, TW_AGG_LAST};
#define NFNS (sizeof all_fns / sizeof all_fns[0])
static const char *fn_names[] = {"count", "sum", "avg", "min", "max", "distinct", "first", "last"};

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}

static int setup(void **state) {
  fx_t *f = calloc(1, sizeof *f);
  assert_non_null(f);
  strcpy(f->dir, "/tmp/tw-aggfn-XXXXXX");
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

static void reopen_with(fx_t *f, const tw_state_opts_t *o) {
  tw_state_close(f->st);
  f->st = NULL;
  assert_int_equal(tw_state_open(f->dir, o, &f->st), 0);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* The caller hashes DISTINCT values; splitmix64 stands in for BLAKE2b. */
static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

typedef struct ev {
  int64_t ts, v;
} ev_t;

/* Brute force over the events with lo < ts ≤ hi. */
static tw_agg_out_t oracle(tw_agg_fn_t fn, const ev_t *evs, int n, int64_t lo, int64_t hi) {
  tw_agg_out_t o;
  memset(&o, 0, sizeof o);
  int64_t ts = 0;
  for (int i = 0; i < n; i++) {
    if (evs[i].ts <= lo || evs[i].ts > hi) continue;
    int64_t v = evs[i].v;
    int first = o.count == 0;
    o.count++;
    switch (fn) {
      case TW_AGG_COUNT:
        o.value++;
        break;
      case TW_AGG_SUM:
      case TW_AGG_AVG:
        o.value += v;
        break;
      case TW_AGG_MIN:
        if (first || v < o.value) o.value = v;
        break;
      case TW_AGG_MAX:
        if (first || v > o.value) o.value = v;
        break;
      case TW_AGG_FIRST:
        if (first || evs[i].ts < ts || (evs[i].ts == ts && v < o.value))
          o.value = v, ts = evs[i].ts;
        break;
      case TW_AGG_LAST:
        if (first || evs[i].ts > ts || (evs[i].ts == ts && v > o.value))
          o.value = v, ts = evs[i].ts;
        break;
      case TW_AGG_DISTINCT: {
        int dup = 0;
        for (int j = 0; j < i && !dup; j++)
          dup = evs[j].ts > lo && evs[j].ts <= hi && evs[j].v == v;
        o.value += !dup;
        break;
      }
    }
  }
  o.present = o.count > 0;
  return o;
}

static void same_out(tw_agg_out_t a, tw_agg_out_t b) {
  assert_int_equal(a.present, b.present);
  assert_int_equal(a.approximate, b.approximate);
  assert_int_equal(a.value, b.value);
  assert_int_equal(a.count, b.count);
  assert_int_equal(a.bucket_ms, b.bucket_ms);
}

static tw_agg_out_t get(tw_state_t *st, const tw_window_spec_t *s, const char *key, int64_t at) {
  tw_agg_out_t o;
  assert_int_equal(tw_state_agg_get(st, s, key, strlen(key), at, &o), 0);
  return o;
}

static void expect_out(tw_agg_fn_t fn, tw_agg_out_t got, tw_agg_out_t want, const char *what) {
  if (got.value != want.value || got.count != want.count ||
      (fn != TW_AGG_COUNT && fn != TW_AGG_SUM && fn != TW_AGG_DISTINCT &&
       got.present != want.present)) {
    fail_msg("%s %s: got value %lld count %lld present %d, want %lld %lld %d", fn_names[fn], what,
             (long long)got.value, (long long)got.count, got.present, (long long)want.value,
             (long long)want.count, want.present);
  }
}

/* A value for event i of function fn: small numbers; hashes of a small domain for DISTINCT. */
static int64_t value_for(tw_agg_fn_t fn) {
  if (fn == TW_AGG_DISTINCT) return (int64_t)mix(rnd() % 30); /* ≤ 210 rows over 7 days */
  return (int64_t)(rnd() % 2001) - 1000;
}

/* Events on whole minutes (bucket ends of a 1h window's 1m buckets), several per minute (so
 * FIRST and LAST meet ties): every value at the newest time is exact. */
static void test_in_order_against_brute_force(void **state) {
  fx_t *f = *state;
  enum { N = 1500 };
  static ev_t evs[N];
  for (size_t k = 0; k < NFNS; k++) {
    tw_agg_fn_t fn = all_fns[k];
    tw_window_spec_t s = {fn_names[fn], fn, HOUR, 0};
    int64_t t = T0;
    for (int i = 0; i < N; i++) {
      t += (int64_t)(rnd() % 3) * MIN;
      evs[i] = (ev_t){t, value_for(fn)};
      assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t, evs[i].v), 0);
      expect_out(fn, get(f->st, &s, "k", t), oracle(fn, evs, i + 1, t - HOUR, t), "in order");
      /* Half a window back, also exact on a minute, over what is kept: buckets older than the
       * newest time's window were evicted (documented: an earlier time undercounts). */
      int64_t back = t - 30 * MIN;
      if (fn != TW_AGG_DISTINCT)
        expect_out(fn, get(f->st, &s, "k", back), oracle(fn, evs, i + 1, t - HOUR, back),
                   "half a window back");
    }
  }
}

/* Late events inside the window land in their bucket; events at or before newest − W are
 * ignored. The value at the newest time equals brute force over the accepted events. */
static void test_out_of_order_against_brute_force(void **state) {
  fx_t *f = *state;
  enum { N = 1500 };
  static ev_t evs[N];
  for (size_t k = 0; k < NFNS; k++) {
    tw_agg_fn_t fn = all_fns[k];
    tw_window_spec_t s = {fn_names[fn], fn, HOUR, 0};
    int64_t t = T0, newest = INT64_MIN;
    int n = 0;
    uint64_t too_old = 0;
    tw_state_stats_t st;
    tw_state_stats(f->st, &st);
    uint64_t too_old0 = st.too_old;
    for (int i = 0; i < N; i++) {
      t += (int64_t)(rnd() % 2) * MIN;
      int64_t ts = t - (int64_t)(rnd() % 80) * MIN; /* up to 80 minutes late: some too old */
      ev_t e = {ts, value_for(fn)};
      assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, ts, e.v), 0);
      if (newest != INT64_MIN && ts <= newest - HOUR) {
        too_old++;
        continue;
      }
      if (ts > newest) newest = ts;
      evs[n++] = e;
      expect_out(fn, get(f->st, &s, "k", newest), oracle(fn, evs, n, newest - HOUR, newest),
                 "out of order");
    }
    tw_state_stats(f->st, &st);
    assert_int_equal(st.too_old - too_old0, too_old);
    assert_true(too_old > 0);
  }
}

/* Case 004's edge for every function: an event exactly at t − W is out, one 1 ms later is in. */
static void test_window_edge(void **state) {
  fx_t *f = *state;
  for (size_t k = 0; k < NFNS; k++) {
    tw_agg_fn_t fn = all_fns[k];
    tw_window_spec_t s = {fn_names[fn], fn, 7 * DAY, 0};
    int64_t t = T0 + 2 * HOUR;
    ev_t evs[3] = {{t - 7 * DAY, 3}, {t - 7 * DAY + 1, 5}, {t, 9}};
    for (int i = 0; i < 3; i++)
      assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, evs[i].ts, evs[i].v), 0);
    tw_agg_out_t o = get(f->st, &s, "k", t);
    expect_out(fn, o, oracle(fn, evs, 3, t - 7 * DAY, t), "edge");
    assert_int_equal(o.count, 2);
    /* An hour later the second event's bucket has left too. */
    expect_out(fn, get(f->st, &s, "k", t + HOUR), oracle(fn, evs, 3, t + HOUR - 7 * DAY, t + HOUR),
               "edge + 1h");
  }
}

/* FIRST and LAST do not depend on arrival order: ties on event time go to the smallest (FIRST)
 * or largest (LAST) value, in every window kind. */
static void test_first_last_ties(void **state) {
  fx_t *f = *state;
  const int64_t vals[5] = {7, -3, 12, 7, 4};
  const tw_agg_fn_t fns[2] = {TW_AGG_FIRST, TW_AGG_LAST};
  const int64_t windows[3][2] = {{HOUR, 0}, {0, 0}, {7 * DAY, DAY}};
  for (int w = 0; w < 3; w++) {
    for (int k = 0; k < 2; k++) {
      char name[32];
      snprintf(name, sizeof name, "tie%d%d", w, k);
      tw_window_spec_t s = {name, fns[k], windows[w][0], windows[w][1]};
      /* Key "a" gets the values in one order, "b" in the reverse; same times. */
      for (int i = 0; i < 5; i++) {
        assert_int_equal(tw_state_agg_add(f->st, &s, "a", 1, T0, vals[i]), 0);
        assert_int_equal(tw_state_agg_add(f->st, &s, "b", 1, T0, vals[4 - i]), 0);
      }
      tw_agg_out_t a = get(f->st, &s, "a", T0), b = get(f->st, &s, "b", T0);
      assert_int_equal(a.value, fns[k] == TW_AGG_FIRST ? -3 : 12);
      assert_int_equal(b.value, a.value);
      assert_int_equal(a.count, 5);
      /* An earlier event (FIRST) or later one (LAST) wins whatever its value. */
      int64_t ts = fns[k] == TW_AGG_FIRST ? T0 - MIN : T0 + MIN;
      assert_int_equal(tw_state_agg_add(f->st, &s, "a", 1, ts, 100), 0);
      assert_int_equal(get(f->st, &s, "a", T0 + MIN).value, 100);
    }
  }
}

/* `all` windows: one running state per key, whatever the order and spread of event times. */
static void test_all_windows(void **state) {
  fx_t *f = *state;
  enum { N = 800 };
  static ev_t evs[N];
  for (size_t k = 0; k < NFNS; k++) {
    tw_agg_fn_t fn = all_fns[k];
    tw_window_spec_t s = {fn_names[fn], fn, 0, 0};
    for (int i = 0; i < N; i++) {
      evs[i] = (ev_t){1000000LL * (int64_t)((i * 7919) % 1000) - 500000000LL, value_for(fn)};
      assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, evs[i].ts, evs[i].v), 0);
    }
    tw_agg_out_t want = oracle(fn, evs, N, INT64_MIN, INT64_MAX);
    expect_out(fn, get(f->st, &s, "k", 0), want, "all");
    expect_out(fn, get(f->st, &s, "k", INT64_MAX / 8), want, "all, any time");
    tw_agg_out_t none = get(f->st, &s, "never", 0);
    assert_int_equal(none.value, 0);
    assert_int_equal(none.count, 0);
    assert_int_equal(none.present, fn == TW_AGG_COUNT || fn == TW_AGG_SUM || fn == TW_AGG_DISTINCT);
    /* tw_state_agg_value is out.value for every function. */
    int64_t v;
    assert_int_equal(tw_state_agg_value(f->st, &s, "k", 1, 0, &v), 0);
    assert_int_equal(v, want.value);
  }
}

/* Every function, sliding, `all` and calendar: commit, close, reopen, same answers. */
static void test_persistence(void **state) {
  fx_t *f = *state;
  enum { N = 600, NS = 3 * NFNS };
  static tw_window_spec_t specs[NS];
  static char names[NS][32];
  static tw_agg_out_t before[NS][3];
  static tw_agg_out_t series_before[NFNS][7];
  for (size_t k = 0; k < NFNS; k++) {
    for (int w = 0; w < 3; w++) {
      size_t i = k * 3 + (size_t)w;
      snprintf(names[i], sizeof names[i], "p_%s_%d", fn_names[all_fns[k]], w);
      const int64_t win[3][2] = {{7 * DAY, 0}, {0, 0}, {7 * DAY, DAY}};
      specs[i] = (tw_window_spec_t){names[i], all_fns[k], win[w][0], win[w][1]};
    }
  }
  int64_t t = T0;
  for (int e = 0; e < N; e++) {
    t += (int64_t)(rnd() % (40 * MIN));
    int64_t ts = t - (int64_t)(rnd() % (6 * HOUR));
    for (size_t i = 0; i < NS; i++) {
      int64_t v =
          specs[i].fn == TW_AGG_DISTINCT ? (int64_t)mix(rnd() % 1000) : value_for(specs[i].fn);
      assert_int_equal(tw_state_agg_add(f->st, &specs[i], "inst", 4, ts, v), 0);
    }
  }
  const int64_t at[3] = {t, t - DAY, t - 3 * HOUR};
  for (size_t i = 0; i < NS; i++)
    for (int a = 0; a < 3; a++) before[i][a] = get(f->st, &specs[i], "inst", at[a]);
  size_t n;
  for (size_t k = 0; k < NFNS; k++)
    assert_int_equal(
        tw_state_agg_series(f->st, &specs[k * 3 + 2], "inst", 4, t, series_before[k], 7, &n), 0);
  /* DISTINCT over ~450 values: the sliding and `all` ones went approximate. */
  assert_true(before[5 * 3 + 0][0].approximate);
  assert_true(before[5 * 3 + 1][0].approximate);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen_with(f, &opts);
  for (size_t i = 0; i < NS; i++)
    for (int a = 0; a < 3; a++) {
      same_out(get(f->st, &specs[i], "inst", at[a]), before[i][a]);
    }
  tw_agg_out_t s2[7];
  for (size_t k = 0; k < NFNS; k++) {
    assert_int_equal(tw_state_agg_series(f->st, &specs[k * 3 + 2], "inst", 4, t, s2, 7, &n), 0);
    for (int d = 0; d < 7; d++) same_out(s2[d], series_before[k][d]);
  }
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.keys_loaded, NS);
  assert_int_equal(st.entries_rebucketed, 0);
}

/* Eviction: an expired entry of any function is dropped and deleted; reading it again gives
 * nothing; live entries stay. Calendar entries expire when the watermark's window passed them. */
static void test_eviction(void **state) {
  fx_t *f = *state;
  for (size_t k = 0; k < NFNS; k++) {
    tw_agg_fn_t fn = all_fns[k];
    char n1[32], n2[32];
    snprintf(n1, sizeof n1, "ev_%s", fn_names[fn]);
    snprintf(n2, sizeof n2, "evc_%s", fn_names[fn]);
    tw_window_spec_t s = {strdup(n1), fn, HOUR, 0}, c = {strdup(n2), fn, 7 * DAY, DAY};
    for (int i = 0; i < 300; i++) {
      int64_t v = fn == TW_AGG_DISTINCT ? (int64_t)mix((uint64_t)i) : i;
      assert_int_equal(tw_state_agg_add(f->st, &s, "old", 3, T0 + i * SEC, v), 0);
      assert_int_equal(tw_state_agg_add(f->st, &c, "old", 3, T0 + i * SEC, v), 0);
    }
    assert_int_equal(tw_state_agg_add(f->st, &s, "new", 3, T0 + 10 * DAY, 1), 0);
    assert_int_equal(tw_state_agg_add(f->st, &c, "new", 3, T0 + 10 * DAY, 1), 0);
    free((char *)s.name);
    free((char *)c.name);
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_stats_t st;
  /* Watermark one day on: the 1h windows of "old" expired, the 7-day calendar ones not yet. */
  assert_int_equal(tw_state_evict(f->st, T0 + DAY, 1000), 0);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.evicted_expired, NFNS);
  /* 03-01 local holds T0; at 03-08 00:00 local its 7-day calendar window (03-02 .. 03-08) has
   * passed it. One millisecond before, not. */
  assert_int_equal(tw_state_evict(f->st, MID_0301 + 7 * DAY - 1, 1000), 0);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.evicted_expired, NFNS);
  assert_int_equal(tw_state_evict(f->st, MID_0301 + 7 * DAY, 1000), 0);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.evicted_expired, 2 * NFNS);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen_with(f, &opts);
  for (size_t k = 0; k < NFNS; k++) {
    tw_agg_fn_t fn = all_fns[k];
    char n1[32];
    snprintf(n1, sizeof n1, "ev_%s", fn_names[fn]);
    tw_window_spec_t s = {n1, fn, HOUR, 0};
    assert_int_equal(get(f->st, &s, "old", T0 + 2 * DAY).count, 0);
    assert_int_equal(get(f->st, &s, "new", T0 + 10 * DAY).count, 1);
  }
  tw_state_stats(f->st, &st);
  assert_int_equal(st.keys_loaded, NFNS); /* "old" is gone from LMDB; "new" loads */
}

/* Calendar buckets for every function: values and series against brute force over whole local
 * days, with late events into older days and empty days in between. */
static void test_calendar_against_brute_force(void **state) {
  fx_t *f = *state;
  enum { N = 400 };
  static ev_t evs[N];
  for (size_t k = 0; k < NFNS; k++) {
    tw_agg_fn_t fn = all_fns[k];
    char name[32];
    snprintf(name, sizeof name, "cal_%s", fn_names[fn]);
    tw_window_spec_t s = {name, fn, 7 * DAY, DAY};
    int64_t t = MID_0301 + 3 * HOUR, newest = INT64_MIN;
    int n = 0;
    for (int i = 0; i < N; i++) {
      t += (int64_t)(rnd() % (90 * MIN)) + (i % 97 == 0 ? 3 * DAY : 0); /* some empty days */
      int64_t ts = t - (int64_t)(rnd() % (2 * DAY));
      ev_t e = {ts, value_for(fn)};
      assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, ts, e.v), 0);
      if (newest != INT64_MIN) {
        int64_t nd = (newest - MID_0301) / DAY - ((newest - MID_0301) % DAY < 0);
        int64_t ed = (ts - MID_0301) / DAY - ((ts - MID_0301) % DAY < 0);
        if (ed <= nd - 7) continue; /* too old: before the 7 local days of the newest */
      }
      if (ts > newest) newest = ts;
      evs[n++] = e;
      /* The window at newest: 7 whole local days up to and including newest's. */
      int64_t day_start = MID_0301 + ((newest - MID_0301) / DAY) * DAY;
      if (newest < day_start) day_start -= DAY;
      int64_t lo = day_start - 6 * DAY - 1, hi = day_start + DAY - 1;
      expect_out(fn, get(f->st, &s, "k", newest), oracle(fn, evs, n, lo, hi), "calendar");
      if (i % 25 == 0) {
        tw_agg_out_t ser[7];
        size_t m = 0;
        assert_int_equal(tw_state_agg_series(f->st, &s, "k", 1, newest, ser, 7, &m), 0);
        assert_int_equal(m, 7);
        for (int d = 0; d < 7; d++) {
          int64_t start = day_start - (6 - d) * DAY;
          assert_int_equal(ser[d].bucket_ms, start);
          tw_agg_out_t want = oracle(fn, evs, n, start - 1, start + DAY - 1);
          expect_out(fn, ser[d], want, "series bucket");
          assert_int_equal(ser[d].present, want.present);
        }
      }
    }
  }
}

/* 7d calendar buckets start on local Monday 00:00; under another zone on that zone's Monday. */
static void test_calendar_monday_and_zones(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t wk = {"weeks", TW_AGG_SUM, 28 * DAY, 7 * DAY};
  const int64_t mon_0303 = MID_0301 + 2 * DAY; /* 2025-03-03 (Monday) 00:00 +08:00 */
  assert_int_equal(tw_state_agg_add(f->st, &wk, "k", 1, mon_0303 - 1, 1), 0); /* Sunday */
  assert_int_equal(tw_state_agg_add(f->st, &wk, "k", 1, mon_0303, 10), 0);    /* Monday */
  assert_int_equal(tw_state_agg_add(f->st, &wk, "k", 1, mon_0303 + 6 * DAY + 23 * HOUR, 100), 0);
  assert_int_equal(tw_state_agg_add(f->st, &wk, "k", 1, mon_0303 + 7 * DAY, 1000), 0);
  tw_agg_out_t s[4];
  size_t n = 0;
  assert_int_equal(tw_state_agg_series(f->st, &wk, "k", 1, mon_0303 + 7 * DAY, s, 4, &n), 0);
  assert_int_equal(n, 4);
  assert_int_equal(s[3].bucket_ms, mon_0303 + 7 * DAY);
  assert_int_equal(s[3].value, 1000);
  assert_int_equal(s[2].bucket_ms, mon_0303);
  assert_int_equal(s[2].value, 110);
  assert_int_equal(s[1].bucket_ms, mon_0303 - 7 * DAY);
  assert_int_equal(s[1].value, 1);
  assert_false(s[0].present);
  assert_int_equal(s[0].value, 0);
  /* 2025-02-24 was a Monday too: the grid is the one of 1970-01-05. */
  assert_int_equal((s[1].bucket_ms + 8 * HOUR) % (7 * DAY), 4 * DAY);
  assert_int_equal(get(f->st, &wk, "k", mon_0303 + 7 * DAY).value, 1111);

  /* UTC−05:00 (no daylight saving): days start at 05:00Z, weeks on Monday 05:00Z. */
  tw_state_opts_t ny = {.no_sync = true, .tz_set = true, .tz_offset_ms = -5 * HOUR};
  reopen_with(f, &ny);
  const tw_window_spec_t d = {"days_ny", TW_AGG_COUNT, 3 * DAY, DAY};
  const tw_window_spec_t w2 = {"weeks_ny", TW_AGG_COUNT, 14 * DAY, 7 * DAY};
  const int64_t mid_ny = T0 + 5 * HOUR; /* 2025-03-01T00:00:00-05:00 */
  assert_int_equal(tw_state_agg_add(f->st, &d, "k", 1, mid_ny - 1, 0), 0);
  assert_int_equal(tw_state_agg_add(f->st, &d, "k", 1, mid_ny, 0), 0);
  assert_int_equal(tw_state_agg_add(f->st, &d, "k", 1, mid_ny + DAY - 1, 0), 0);
  assert_int_equal(tw_state_agg_series(f->st, &d, "k", 1, mid_ny, s, 4, &n), 0);
  assert_int_equal(n, 3);
  assert_int_equal(s[2].bucket_ms, mid_ny);
  assert_int_equal(s[2].value, 2);
  assert_int_equal(s[1].bucket_ms, mid_ny - DAY);
  assert_int_equal(s[1].value, 1);
  const int64_t mon_ny = mid_ny + 2 * DAY; /* Monday 2025-03-03 00:00 −05:00 */
  assert_int_equal(tw_state_agg_add(f->st, &w2, "k", 1, mon_ny - 1, 0), 0);
  assert_int_equal(tw_state_agg_add(f->st, &w2, "k", 1, mon_ny, 0), 0);
  assert_int_equal(tw_state_agg_series(f->st, &w2, "k", 1, mon_ny, s, 2, &n), 0);
  assert_int_equal(s[1].bucket_ms, mon_ny);
  assert_int_equal(s[1].value, 1);
  assert_int_equal(s[0].value, 1);
  /* A non-hour zone (UTC+05:30): days start at 18:30Z. */
  tw_state_opts_t in = {.no_sync = true, .tz_set = true, .tz_offset_ms = 5 * HOUR + 30 * MIN};
  reopen_with(f, &in);
  const tw_window_spec_t di = {"days_in", TW_AGG_COUNT, DAY, DAY};
  assert_int_equal(tw_state_agg_add(f->st, &di, "k", 1, T0 - 5 * HOUR - 30 * MIN, 0), 0);
  assert_int_equal(tw_state_agg_series(f->st, &di, "k", 1, T0, s, 1, &n), 0);
  assert_int_equal(s[0].bucket_ms, T0 - 5 * HOUR - 30 * MIN);
  assert_int_equal(s[0].value, 1);
  /* Not a calendar aggregate: no series. */
  const tw_window_spec_t sl = {"sliding", TW_AGG_COUNT, DAY, 0};
  assert_int_equal(tw_state_agg_series(f->st, &sl, "k", 1, T0, s, 4, &n), TW_EINVAL);
}

/* Calendar DISTINCT: per-day distinct counts in the series, the window counts a hash once. */
static void test_calendar_distinct(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t s = {"students_7d", TW_AGG_DISTINCT, 7 * DAY, DAY};
  /* Day 0: a, b, a; day 1: a, c; day 3: d. */
  const struct {
    int day;
    uint64_t v;
  } in[] = {{0, 1}, {0, 2}, {0, 1}, {1, 1}, {1, 3}, {3, 4}};
  for (size_t i = 0; i < sizeof in / sizeof in[0]; i++)
    assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, MID_0301 + in[i].day * DAY + HOUR,
                                      (int64_t)mix(in[i].v)),
                     0);
  tw_agg_out_t o = get(f->st, &s, "k", MID_0301 + 3 * DAY + HOUR);
  assert_int_equal(o.value, 4);
  assert_int_equal(o.count, 6);
  assert_false(o.approximate);
  tw_agg_out_t ser[7];
  size_t n;
  assert_int_equal(tw_state_agg_series(f->st, &s, "k", 1, MID_0301 + 3 * DAY, ser, 7, &n), 0);
  assert_int_equal(ser[3].value, 2);
  assert_int_equal(ser[3].count, 3);
  assert_int_equal(ser[4].value, 2);
  assert_false(ser[5].present);
  assert_int_equal(ser[6].value, 1);
  /* Seven days on, day 0 leaves: a (day 1), c, d remain. */
  assert_int_equal(get(f->st, &s, "k", MID_0301 + 7 * DAY).value, 3);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, MID_0301 + 7 * DAY, (int64_t)mix(9)), 0);
  assert_int_equal(get(f->st, &s, "k", MID_0301 + 7 * DAY).value, 4);
}

static double rel_err(int64_t est, int64_t truth) {
  return fabs((double)(est - truth)) / (double)truth;
}

/* DISTINCT is exact up to TW_STATE_DISTINCT_EXACT hashes, then an estimate within the stated
 * error (3 standard errors of 6.5%), also after commit and reopen; sliding and `all`. */
static void test_distinct_exact_then_approximate(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t s = {"students_7d", TW_AGG_DISTINCT, 7 * DAY, 0};
  const tw_window_spec_t a = {"students_all", TW_AGG_DISTINCT, 0, 0};
  int64_t t = T0;
  for (int i = 0; i < TW_STATE_DISTINCT_EXACT; i++) {
    t += 10 * SEC;
    for (int rep = 0; rep < 2; rep++) { /* each value twice: duplicates do not count */
      assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t, (int64_t)mix((uint64_t)i)), 0);
      assert_int_equal(tw_state_agg_add(f->st, &a, "k", 1, t, (int64_t)mix((uint64_t)i)), 0);
    }
  }
  tw_agg_out_t o = get(f->st, &s, "k", t);
  assert_int_equal(o.value, TW_STATE_DISTINCT_EXACT);
  assert_int_equal(o.count, 2 * TW_STATE_DISTINCT_EXACT);
  assert_false(o.approximate);
  assert_false(get(f->st, &a, "k", t).approximate);
  /* One more distinct value: the sketch. */
  t += SEC;
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t, (int64_t)mix(100000)), 0);
  o = get(f->st, &s, "k", t);
  assert_true(o.approximate);
  assert_true(rel_err(o.value, TW_STATE_DISTINCT_EXACT + 1) < 0.195);
  /* 10,000 distinct values in the window (and again, duplicates). */
  for (int i = 0; i < 10000; i++) {
    t += 30 * SEC;
    int64_t h = (int64_t)mix(1000000 + (uint64_t)i);
    assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t, h), 0);
    assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, t, h), 0);
    assert_int_equal(tw_state_agg_add(f->st, &a, "k", 1, t, h), 0);
  }
  /* 10,000 · 30 s = 3.5 days: everything since the start is still in the 7-day window. */
  o = get(f->st, &s, "k", t);
  assert_true(o.approximate);
  int64_t truth = 10000 + TW_STATE_DISTINCT_EXACT + 1;
  /* The cached merge (at the newest time) and a merge of the rows (1 ms later, same buckets). */
  same_out(get(f->st, &s, "k", t + 1), o);
  printf("distinct: %lld for %lld (%.2f%%)\n", (long long)o.value, (long long)truth,
         100 * rel_err(o.value, truth));
  assert_true(rel_err(o.value, truth) < 0.195);
  tw_agg_out_t oa = get(f->st, &a, "k", t);
  assert_true(oa.approximate);
  assert_true(rel_err(oa.value, 10000 + TW_STATE_DISTINCT_EXACT) < 0.195);
  /* The memory bound: buckets plus one sketch row each. */
  size_t bytes = 0;
  assert_int_equal(tw__state_agg_mem(f->st, &s, "k", 1, &bytes), 0);
  uint32_t nb, cap;
  assert_int_equal(tw__state_agg_buckets(f->st, &s, "k", 1, &nb, &cap), 0);
  assert_true(bytes <= sizeof(tw__entry_t) + 64 + (size_t)cap * (2 * 8 + TW__HLL_M) + TW__HLL_M);
  assert_int_equal(tw__state_agg_mem(f->st, &a, "k", 1, &bytes), 0);
  assert_true(bytes <= sizeof(tw__entry_t) + 64 + 2 * 8 + 2 * TW__HLL_M);
  /* Persisted as such. */
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen_with(f, &opts);
  same_out(get(f->st, &s, "k", t), o);
  /* At T0 + 7d + 1h the window (T0 + 1h, ...] has lost the first hour: the 257 exact values and
   * the first 34 of the 10,000 (hour buckets end on the hour, so the edge is exact). */
  int64_t later = T0 + 7 * DAY + HOUR;
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, later, (int64_t)mix(7)), 0);
  o = get(f->st, &s, "k", later);
  int64_t in_window = 0;
  for (int i = 0; i < 10000; i++)
    in_window +=
        T0 + TW_STATE_DISTINCT_EXACT * 10 * SEC + SEC + (i + 1) * 30 * SEC > later - 7 * DAY;
  assert_true(rel_err(o.value, in_window + 1) < 0.195);
  /* Once the window empties, the key counts exactly again. */
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, later + 30 * DAY, (int64_t)mix(8)), 0);
  o = get(f->st, &s, "k", later + 30 * DAY);
  assert_false(o.approximate);
  assert_int_equal(o.value, 1);
}

/* An estimate never exceeds the events in the window (a sketch can overshoot a small set: 339
 * "distinct" payers out of 308 payments), nor overflows: hashes that set every register to its
 * largest rank would estimate about 2.7e19, beyond int64. Sliding, `all`, calendar (window and
 * per-bucket series), at the newest time and earlier. */
static void test_distinct_estimate_clamped(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t specs[] = {{"cl_7d", TW_AGG_DISTINCT, 7 * DAY, 0},
                                    {"cl_all", TW_AGG_DISTINCT, 0, 0},
                                    {"cl_cal", TW_AGG_DISTINCT, 7 * DAY, DAY}};
  /* Hash j << 56 goes to register j with 56 zero bits after it: rank 57. 256 of them fill the
   * table; hash 1 (register 0, rank 56) is the 257th and switches to the sketch. */
  for (size_t k = 0; k < 3; k++) {
    int64_t t = MID_0301 + HOUR;
    for (uint64_t j = 0; j < 256; j++, t += MIN)
      assert_int_equal(tw_state_agg_add(f->st, &specs[k], "max", 3, t, (int64_t)(j << 56)), 0);
    assert_int_equal(tw_state_agg_add(f->st, &specs[k], "max", 3, t, 1), 0);
    tw_agg_out_t o = get(f->st, &specs[k], "max", t);
    assert_true(o.approximate);
    assert_int_equal(o.count, 257);
    assert_int_equal(o.value, 257);
    o = get(f->st, &specs[k], "max", t + 1); /* the merge of the rows, not the cached one */
    assert_int_equal(o.value, 257);
    if (specs[k].bucket_ms > 0) {
      tw_agg_out_t series[7];
      size_t n;
      assert_int_equal(tw_state_agg_series(f->st, &specs[k], "max", 3, t, series, 7, &n), 0);
      for (size_t d = 0; d < n; d++) {
        assert_true(series[d].value <= series[d].count);
        assert_true(series[d].value >= 0);
      }
      assert_int_equal(series[6].value, 257); /* every event on 03-01 */
    }
  }
  /* Random hashes just past the switch: the estimate is about as often above the truth as
   * below it; wherever it is above the events of the window it is cut to them. */
  int over = 0;
  for (int key = 0; key < 20; key++) {
    char k[16];
    snprintf(k, sizeof k, "r%d", key);
    int64_t t = T0;
    for (int i = 0; i < 400; i++, t += MIN) {
      assert_int_equal(tw_state_agg_add(f->st, &specs[0], k, strlen(k), t,
                                        (int64_t)mix((uint64_t)key * 100000 + (uint64_t)i)),
                       0);
      tw_agg_out_t o = get(f->st, &specs[0], k, t);
      assert_int_equal(o.count, i + 1);
      if (o.value > o.count)
        fail_msg("%s: %lld distinct of %lld events", k, (long long)o.value, (long long)o.count);
      over += o.approximate && o.value == o.count;
    }
  }
  assert_true(over > 0); /* the clamp was needed: the test can tell */
}

/* Determinism (docs/engine.md): the same adds give the same DISTINCT values whatever the group
 * commit size, eviction and restarts. State A only adds; state B, fed the same events, commits,
 * evicts (max_keys_in_memory 1, so clean entries drop and reload from LMDB; expired ones go
 * with the watermark) or closes and reopens, on a schedule that differs per round and always
 * includes the adds just before, at and after each key's switch to the sketch. Events arrive
 * up to 2 h late (some too old for the 1 h window), keys cross the exact limit, fall back under
 * it with the window still holding events (they stay approximate), empty their windows (exact
 * again) and cross it again. After every add, every aggregate of every key is compared at the
 * event's time, at the newest time and 30 minutes before the event. */
enum { DET_N = 2200, DET_KEYS = 2, DET_SPECS = 4 };
typedef struct det_ev {
  int64_t ts;
  uint64_t h;
  int key;
} det_ev_t;

/* State B lives here so that teardown closes and removes it when an assertion ends the test. */
static struct {
  char dir[64];
  tw_state_t *st;
} det_b;

static void det_b_remove(void) {
  tw_state_close(det_b.st);
  det_b.st = NULL;
  if (det_b.dir[0] != '\0') nftw(det_b.dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
  det_b.dir[0] = '\0';
}

static int teardown_det(void **state) {
  det_b_remove();
  return teardown(state);
}

static void test_distinct_determinism(void **state) {
  fx_t *f = *state; /* state A */
  static det_ev_t evs[DET_N];
  static int64_t wm_after[DET_N]; /* below every later add and query: B's eviction watermark */
  const tw_window_spec_t specs[DET_SPECS] = {{"d_7d", TW_AGG_DISTINCT, 7 * DAY, 0},
                                             {"d_1h", TW_AGG_DISTINCT, HOUR, 0},
                                             {"d_all", TW_AGG_DISTINCT, 0, 0},
                                             {"d_cal", TW_AGG_DISTINCT, 7 * DAY, DAY}};
  const char *keys[DET_KEYS] = {"440000", "310000"};
  /* Phases of the stream (per event i): 0..899 fresh values a minute apart (both keys cross 256
   * in the 7d, all and calendar windows; the 1h window holds about 60); 900..1299 mostly a few
   * values repeated over 9 days (the old ones leave the 7d window, which keeps about 155 events:
   * back under the limit, still approximate); then a 12-day gap (every window empties: exact
   * again) and 900 fresh values. */
  int64_t t = T0;
  for (int i = 0; i < DET_N; i++) {
    if (i < 900 || i >= 1300) {
      t += MIN;
    } else {
      t += 9 * DAY / 400;
    }
    if (i == 1300) t += 12 * DAY;
    int64_t late = rnd() % 5 == 0 ? (int64_t)(rnd() % (2 * HOUR)) : 0;
    evs[i].ts = t - late;
    evs[i].key = (int)(rnd() % DET_KEYS);
    uint64_t v = (i >= 900 && i < 1300) ? rnd() % 7 : 1000 + (uint64_t)i;
    if (rnd() % 6 == 0 && i > 0) v = 1000 + rnd() % (uint64_t)i; /* seen before (maybe) */
    evs[i].h = mix(v);
  }
  int64_t lo = INT64_MAX;
  for (int i = DET_N - 1; i >= 0; i--) {
    wm_after[i] = lo == INT64_MAX ? lo : lo - 30 * MIN - 1;
    if (evs[i].ts < lo) lo = evs[i].ts;
  }
  const tw_state_opts_t ob = {.no_sync = true, .max_keys_in_memory = 1};
  for (int round = 0; round < 3; round++) {
    strcpy(det_b.dir, "/tmp/tw-aggdet-XXXXXX");
    assert_non_null(mkdtemp(det_b.dir));
    assert_int_equal(tw_state_open(det_b.dir, &ob, &det_b.st), 0);
    /* A starts afresh too, under other names each round. */
    tw_window_spec_t sp[DET_SPECS];
    char names[DET_SPECS][32];
    for (int s = 0; s < DET_SPECS; s++) {
      snprintf(names[s], sizeof names[s], "%s_r%d", specs[s].name, round);
      sp[s] = specs[s];
      sp[s].name = names[s];
    }
    int64_t newest = INT64_MIN;
    int64_t prev_exact[DET_KEYS] = {0, 0};
    int switches = 0, back_exact = 0, under_approx = 0;
    for (int i = 0; i < DET_N; i++) {
      const det_ev_t *ev = &evs[i];
      const char *k = keys[ev->key];
      for (int s = 0; s < DET_SPECS; s++) {
        assert_int_equal(tw_state_agg_add(f->st, &sp[s], k, strlen(k), ev->ts, (int64_t)ev->h), 0);
        assert_int_equal(tw_state_agg_add(det_b.st, &sp[s], k, strlen(k), ev->ts, (int64_t)ev->h),
                         0);
      }
      if (ev->ts > newest) newest = ev->ts;
      const int64_t at[3] = {ev->ts, newest, ev->ts - 30 * MIN};
      for (int s = 0; s < DET_SPECS; s++)
        for (int kk = 0; kk < DET_KEYS; kk++)
          for (int a = 0; a < 3; a++) {
            tw_agg_out_t oa = get(f->st, &sp[s], keys[kk], at[a]);
            tw_agg_out_t ob2 = get(det_b.st, &sp[s], keys[kk], at[a]);
            if (oa.value != ob2.value || oa.count != ob2.count ||
                oa.approximate != ob2.approximate || oa.present != ob2.present)
              fail_msg(
                  "round %d, add %d (%s at %lld), %s key %s at %lld: value %lld/%lld "
                  "count %lld/%lld approximate %d/%d (A/B)",
                  round, i, k, (long long)ev->ts, sp[s].name, keys[kk], (long long)at[a],
                  (long long)oa.value, (long long)ob2.value, (long long)oa.count,
                  (long long)ob2.count, oa.approximate, ob2.approximate);
          }
      /* Where the 7d window of this key stands: near the switch, B restarts or reloads. */
      tw_agg_out_t o7 = get(f->st, &sp[0], k, newest);
      int near_switch = !o7.approximate && o7.value >= TW_STATE_DISTINCT_EXACT - 2;
      int switched = o7.approximate && prev_exact[ev->key] >= TW_STATE_DISTINCT_EXACT - 2;
      switches += switched;
      back_exact += !o7.approximate && prev_exact[ev->key] < 0;
      under_approx += o7.approximate && o7.count < TW_STATE_DISTINCT_EXACT;
      prev_exact[ev->key] = o7.approximate ? -1 : o7.value;
      int act; /* 0 nothing, 1 commit, 2 commit and evict, 3 commit and reopen */
      switch (round) {
        case 0: /* every add: commit and evict, every 61st reopen */
          act = i % 61 == 0 ? 3 : 2;
          break;
        case 1: /* batches of 97 adds, evicting */
          act = i % 97 == 96 ? 2 : 0;
          break;
        default: /* batches of 500 adds, with restarts */
          act = i % 500 == 499 ? 3 : 0;
          break;
      }
      if (near_switch || switched) act = round == 1 ? 2 : 3;
      if (act >= 1) assert_int_equal(tw_state_commit(det_b.st), 0);
      if (act == 2) {
        assert_int_equal(tw_state_evict(det_b.st, wm_after[i], 1000), 0);
        assert_int_equal(tw_state_evict(det_b.st, wm_after[i], 1000), 0); /* second chance */
      }
      if (act == 3) {
        tw_state_close(det_b.st);
        det_b.st = NULL;
        assert_int_equal(tw_state_open(det_b.dir, &ob, &det_b.st), 0);
      }
    }
    assert_true(switches >= 2 * DET_KEYS);
    assert_true(back_exact >= 1);
    assert_true(under_approx > 0); /* back under the limit, window not empty: still approximate */
    tw_state_stats_t stb;
    tw_state_stats(det_b.st, &stb);
    assert_true(stb.keys_loaded > 0);
    if (round == 0) assert_true(stb.evicted_clean > 0);
    det_b_remove();
  }
}

/* A sliding exact DISTINCT drops a hash when its newest time leaves the window. */
static void test_distinct_sliding_newest_time(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t s = {"d1h", TW_AGG_DISTINCT, HOUR, 0};
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, T0, (int64_t)mix(1)), 0);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, T0 + 10 * MIN, (int64_t)mix(2)), 0);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, T0 + 30 * MIN, (int64_t)mix(1)), 0);
  assert_int_equal(get(f->st, &s, "k", T0 + 30 * MIN).value, 2);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, T0 + 70 * MIN, (int64_t)mix(3)), 0);
  assert_int_equal(get(f->st, &s, "k", T0 + 70 * MIN).value, 2); /* 1 (seen at +30m) and 3 */
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, T0 + 90 * MIN, (int64_t)mix(4)), 0);
  assert_int_equal(get(f->st, &s, "k", T0 + 90 * MIN).value, 2); /* 3 and 4 */
}

/* AVG gives the sum and the count; saturation of sums is reported and kept. */
static void test_avg_and_saturation(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t avg = {"avg_fee", TW_AGG_AVG, DAY, 0};
  assert_int_equal(tw_state_agg_add(f->st, &avg, "k", 1, T0, 300), 0);
  assert_int_equal(tw_state_agg_add(f->st, &avg, "k", 1, T0 + HOUR, 500), 0);
  tw_agg_out_t o = get(f->st, &avg, "k", T0 + HOUR);
  assert_int_equal(o.value, 800);
  assert_int_equal(o.count, 2);
  assert_true(o.present);
  o = get(f->st, &avg, "k", T0 + 3 * DAY);
  assert_false(o.present);
  const tw_window_spec_t sat = {"avg_sat", TW_AGG_AVG, DAY, 0};
  assert_int_equal(tw_state_agg_add(f->st, &sat, "k", 1, T0, INT64_MAX - 1), 0);
  assert_int_equal(tw_state_agg_add(f->st, &sat, "k", 1, T0, 5), TW_EOVERFLOW);
  assert_int_equal(tw_state_agg_add(f->st, &sat, "k", 1, T0 + HOUR, 5), TW_EOVERFLOW);
  o = get(f->st, &sat, "k", T0 + HOUR);
  assert_int_equal(o.value, INT64_MAX);
  assert_int_equal(o.count, 3);
  const tw_window_spec_t cal = {"sum_cal", TW_AGG_SUM, 2 * DAY, DAY};
  assert_int_equal(tw_state_agg_add(f->st, &cal, "k", 1, T0, INT64_MIN + 3), 0);
  assert_int_equal(tw_state_agg_add(f->st, &cal, "k", 1, T0 + DAY, -5), TW_EOVERFLOW);
  assert_int_equal(get(f->st, &cal, "k", T0 + DAY).value, INT64_MIN);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen_with(f, &opts);
  assert_int_equal(get(f->st, &sat, "k", T0 + HOUR).value, INT64_MAX);
  assert_int_equal(get(f->st, &cal, "k", T0 + DAY).value, INT64_MIN);
  assert_int_equal(get(f->st, &cal, "k", T0 + 2 * DAY).value, -5);
}

/* MIN and MAX: absent on an empty window; a late extreme counts; eviction forgets it. */
static void test_min_max(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t mn = {"min_fee", TW_AGG_MIN, HOUR, 0},
                         mx = {"max_fee", TW_AGG_MAX, HOUR, 0};
  assert_false(get(f->st, &mn, "k", T0).present);
  const int64_t ts[4] = {T0 + 10 * MIN, T0 + 20 * MIN, T0 + 5 * MIN, T0 + 50 * MIN};
  const int64_t vs[4] = {50, 70, -20, 60};
  for (int i = 0; i < 4; i++) {
    assert_int_equal(tw_state_agg_add(f->st, &mn, "k", 1, ts[i], vs[i]), 0);
    assert_int_equal(tw_state_agg_add(f->st, &mx, "k", 1, ts[i], vs[i]), 0);
  }
  assert_int_equal(get(f->st, &mn, "k", T0 + 50 * MIN).value, -20);
  assert_int_equal(get(f->st, &mx, "k", T0 + 50 * MIN).value, 70);
  /* At +65m the window (5m, 65m] has lost -20 (at 5m); at +81m it lost 50 and 70 too. */
  assert_int_equal(tw_state_agg_add(f->st, &mn, "k", 1, T0 + 65 * MIN, 100), 0);
  assert_int_equal(get(f->st, &mn, "k", T0 + 65 * MIN).value, 50);
  assert_int_equal(tw_state_agg_add(f->st, &mx, "k", 1, T0 + 81 * MIN, 0), 0);
  assert_int_equal(get(f->st, &mx, "k", T0 + 81 * MIN).value, 60);
}

/* The default pack's ~10 aggregates for one active institution: small state per key. */
static void test_memory_per_institution(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t pack[10] = {
      {"collected_all#0a1b2c3d4e5f6071", TW_AGG_SUM, 0, 0},
      {"consumed_all#0a1b2c3d4e5f6071", TW_AGG_SUM, 0, 0},
      {"refunded_all#0a1b2c3d4e5f6071", TW_AGG_SUM, 0, 0},
      {"complaints_7d#0a1b2c3d4e5f6071", TW_AGG_COUNT, 7 * DAY, 0},
      {"lessons_all#0a1b2c3d4e5f6071", TW_AGG_COUNT, 0, 0},
      {"lessons_7d#0a1b2c3d4e5f6071", TW_AGG_COUNT, 7 * DAY, 0},
      {"payments_30d#0a1b2c3d4e5f6071", TW_AGG_SUM, 30 * DAY, 0},
      {"max_payment_30d#0a1b2c3d4e5f6071", TW_AGG_MAX, 30 * DAY, 0},
      {"last_escrow#0a1b2c3d4e5f6071", TW_AGG_LAST, 0, 0},
      {"avg_fee_7d#0a1b2c3d4e5f6071", TW_AGG_AVG, 7 * DAY, DAY},
  };
  const char *inst = "52440106MJL176301K";
  /* A busy week: a few events a day on each. */
  for (int d = 0; d < 7; d++)
    for (int e = 0; e < 3; e++)
      for (int a = 0; a < 10; a++)
        assert_int_equal(
            tw_state_agg_add(f->st, &pack[a], inst, 18, T0 + d * DAY + e * 3 * HOUR, 100), 0);
  size_t total = 0;
  for (int a = 0; a < 10; a++) {
    size_t b = 0;
    assert_int_equal(tw__state_agg_mem(f->st, &pack[a], inst, 18, &b), 0);
    total += b;
  }
  printf("state of a busy institution with 10 aggregates: %zu bytes\n", total);
  /* A week of activity fills 21 hourly or 6-hourly buckets per sliding aggregate. */
  assert_true(total <= 6144);
  /* Sparse (an event or two a week, the common case) stays within 2 KiB. */
  const char *quiet = "91440101MA59XXXX1X";
  total = 0;
  for (int a = 0; a < 10; a++) {
    assert_int_equal(tw_state_agg_add(f->st, &pack[a], quiet, 18, T0, 100), 0);
    size_t b = 0;
    assert_int_equal(tw__state_agg_mem(f->st, &pack[a], quiet, 18, &b), 0);
    total += b;
  }
  printf("state of a quiet institution with 10 aggregates: %zu bytes\n", total);
  assert_true(total <= 2048);
}

/* Version 3 entries of every function, truncated or with a byte changed: TW_ESTATE or a value,
 * never a crash or an out-of-bounds read (ASan watches). */
static void raw_put(const char *dir, const void *k, size_t klen, const void *v, size_t vlen) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
  assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "agg", 0, &dbi), 0);
  MDB_val mk = {klen, (void *)k}, mv = {vlen, (void *)v};
  assert_int_equal(mdb_put(txn, dbi, &mk, &mv, 0), 0);
  assert_int_equal(mdb_txn_commit(txn), 0);
  mdb_env_close(env);
}

static size_t raw_get(const char *dir, const void *k, size_t klen, void *v, size_t cap) {
  MDB_env *env;
  MDB_txn *txn;
  MDB_dbi dbi;
  assert_int_equal(mdb_env_create(&env), 0);
  assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
  assert_int_equal(mdb_env_open(env, dir, MDB_RDONLY, 0600), 0);
  assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
  assert_int_equal(mdb_dbi_open(txn, "agg", 0, &dbi), 0);
  MDB_val mk = {klen, (void *)k}, mv;
  assert_int_equal(mdb_get(txn, dbi, &mk, &mv), 0);
  assert_true(mv.mv_size <= cap);
  memcpy(v, mv.mv_data, mv.mv_size);
  size_t n = mv.mv_size;
  mdb_txn_abort(txn);
  mdb_env_close(env);
  return n;
}

static void test_corrupt_v3_entries(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t specs[] = {
      {"c_first", TW_AGG_FIRST, 7 * DAY, 0},
      {"c_dist", TW_AGG_DISTINCT, 7 * DAY, DAY},
      {"c_avg", TW_AGG_AVG, 0, 0},
      {"c_dapprox", TW_AGG_DISTINCT, DAY, 0},
  };
  for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
    int many = k == 3 ? 300 : 6;
    for (int i = 0; i < many; i++) {
      int64_t v = k == 2 ? i : (int64_t)mix(k == 3 ? 1000 + (uint64_t)i : (uint64_t)i % 4);
      int64_t ts = T0 + i * (k == 3 ? MIN : 7 * MIN);
      assert_int_equal(tw_state_agg_add(f->st, &specs[k], "good", 4, ts, v), 0);
    }
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  static unsigned char good[8192], m[8192];
  for (size_t k = 0; k < sizeof specs / sizeof specs[0]; k++) {
    unsigned char gk[TW__STATE_DBKEY_MAX], bk[TW__STATE_DBKEY_MAX];
    int gkl = tw__state_agg_dbkey(&specs[k], "good", 4, gk, sizeof gk);
    int bkl = tw__state_agg_dbkey(&specs[k], "bad", 3, bk, sizeof bk);
    tw_state_close(f->st);
    f->st = NULL;
    size_t gl = raw_get(f->dir, gk, (size_t)gkl, good, sizeof good);
    assert_int_equal(good[0], 3);
    assert_int_equal((good[2] & 4) != 0, k == 3); /* the sketch is stored as such */
    int estate = 0, tried = 0;
    size_t step = gl > 600 ? 7 : 1;
    for (size_t cut = 0; cut < gl; cut += step) {
      raw_put(f->dir, bk, (size_t)bkl, good, cut);
      assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
      tw_agg_out_t o;
      assert_int_equal(tw_state_agg_get(f->st, &specs[k], "bad", 3, T0, &o), TW_ESTATE);
      tw_state_close(f->st);
      f->st = NULL;
    }
    for (size_t pos = 0; pos < gl; pos += step) {
      memcpy(m, good, gl);
      m[pos] ^= (unsigned char)(0x80 | pos);
      raw_put(f->dir, bk, (size_t)bkl, m, gl);
      assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
      tw_agg_out_t o;
      int rc = tw_state_agg_get(f->st, &specs[k], "bad", 3, T0 + HOUR, &o);
      assert_true(rc == 0 || rc == TW_ESTATE);
      tried++;
      if (rc == TW_ESTATE) {
        estate++;
      } else {
        rc = tw_state_agg_add(f->st, &specs[k], "bad", 3, T0 + 2 * HOUR, 1);
        assert_true(rc == 0 || rc == TW_EOVERFLOW);
      }
      tw_state_close(f->st);
      f->st = NULL;
    }
    assert_true(estate > 0);
    (void)tried;
    assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  }
}

/* Version 1 `all` entries (running value in the header) still load for COUNT and SUM; a SUM
 * entry of version 1 or 2 has no event count (0) but its value. */
static void test_legacy_all_entries(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t c = {"lc", TW_AGG_COUNT, 0, 0}, s = {"ls", TW_AGG_SUM, 0, 0};
  unsigned char vb[40], key[TW__STATE_DBKEY_MAX];
  tw_state_close(f->st);
  f->st = NULL;
  for (int k = 0; k < 2; k++) {
    memset(vb, 0, sizeof vb);
    vb[0] = 1;
    vb[1] = k == 0 ? TW_AGG_COUNT : TW_AGG_SUM;
    vb[2] = 1;
    uint64_t newest = (uint64_t)T0, total = k == 0 ? 42 : 123456;
    for (int i = 0; i < 8; i++) {
      vb[16 + i] = (unsigned char)(newest >> (8 * i));
      vb[24 + i] = (unsigned char)(total >> (8 * i));
    }
    int kn = tw__state_agg_dbkey(k == 0 ? &c : &s, "k", 1, key, sizeof key);
    raw_put(f->dir, key, (size_t)kn, vb, sizeof vb);
  }
  assert_int_equal(tw_state_open(f->dir, &opts, &f->st), 0);
  tw_agg_out_t o = get(f->st, &c, "k", T0);
  assert_int_equal(o.value, 42);
  assert_int_equal(o.count, 42);
  o = get(f->st, &s, "k", T0);
  assert_int_equal(o.value, 123456);
  assert_int_equal(o.count, 0);
  assert_true(o.present);
  assert_int_equal(tw_state_agg_add(f->st, &s, "k", 1, T0 + 1, 4), 0);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen_with(f, &opts);
  o = get(f->st, &s, "k", T0);
  assert_int_equal(o.value, 123460);
  assert_int_equal(o.count, 1);
}

/* Changing the time zone moves stored series onto the new grid: every event still counts once,
 * extremes and first/last survive, DISTINCT rows follow their buckets. */
static void test_zone_change_rebuckets(void **state) {
  fx_t *f = *state;
  const tw_window_spec_t specs[5] = {
      {"z_count", TW_AGG_COUNT, 7 * DAY, DAY}, {"z_min", TW_AGG_MIN, 7 * DAY, DAY},
      {"z_first", TW_AGG_FIRST, 7 * DAY, DAY}, {"z_dist", TW_AGG_DISTINCT, 7 * DAY, DAY},
      {"z_last6h", TW_AGG_LAST, 30 * DAY, 0}, /* automatic 6h buckets: aligned to the zone */
  };
  int64_t t = MID_0301;
  for (int i = 0; i < 40; i++) {
    t += 3 * HOUR + (int64_t)(rnd() % HOUR);
    for (int k = 0; k < 5; k++) {
      int64_t v = k == 3 ? (int64_t)mix((uint64_t)i % 9) : (int64_t)(i * 13 % 17);
      assert_int_equal(tw_state_agg_add(f->st, &specs[k], "k", 1, t, v), 0);
    }
  }
  tw_agg_out_t before[5];
  for (int k = 0; k < 5; k++) before[k] = get(f->st, &specs[k], "k", t);
  assert_int_equal(tw_state_commit(f->st), 0);
  tw_state_opts_t utc = {.no_sync = true, .tz_set = true, .tz_offset_ms = 0};
  reopen_with(f, &utc);
  for (int k = 0; k < 5; k++) {
    tw_agg_out_t o = get(f->st, &specs[k], "k", t);
    assert_true(o.count >= before[k].count); /* an event may count up to one bucket longer */
    if (k == 1) assert_int_equal(o.value, 0);
    if (k == 2 || k == 4) assert_int_equal(o.value, before[k].value);
    if (k == 3) assert_int_equal(o.value, 9);
  }
  tw_state_stats_t st;
  tw_state_stats(f->st, &st);
  assert_int_equal(st.entries_rebucketed, 5);
  /* Written back on the new grid with the next change, and read as such. */
  for (int k = 0; k < 5; k++)
    assert_int_equal(
        tw_state_agg_add(f->st, &specs[k], "k", 1, t + 1, k == 3 ? (int64_t)mix(1) : 5), 0);
  tw_agg_out_t after[5];
  for (int k = 0; k < 5; k++) after[k] = get(f->st, &specs[k], "k", t + 1);
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen_with(f, &utc);
  for (int k = 0; k < 5; k++) same_out(get(f->st, &specs[k], "k", t + 1), after[k]);
  tw_state_stats(f->st, &st);
  assert_int_equal(st.entries_rebucketed, 0);
}

/* Event times at the API's limits (|ts| = 2^61) are stored and load again. */
static void test_time_limits_persist(void **state) {
  fx_t *f = *state;
  const int64_t lim = (int64_t)1 << 61;
  const tw_window_spec_t specs[4] = {
      {"lim_count", TW_AGG_COUNT, 7 * DAY, 0},
      {"lim_first", TW_AGG_FIRST, 0, 0},
      {"lim_cal", TW_AGG_LAST, 7 * DAY, DAY},
      {"lim_dist", TW_AGG_DISTINCT, HOUR, 0},
  };
  for (int k = 0; k < 4; k++) {
    assert_int_equal(tw_state_agg_add(f->st, &specs[k], "hi", 2, lim, 1), 0);
    assert_int_equal(tw_state_agg_add(f->st, &specs[k], "lo", 2, -lim, 1), 0);
    assert_int_equal(tw_state_agg_add(f->st, &specs[k], "hi", 2, lim + 1, 1), TW_EINVAL);
  }
  assert_int_equal(tw_state_commit(f->st), 0);
  reopen_with(f, &opts);
  for (int k = 0; k < 4; k++) {
    assert_int_equal(get(f->st, &specs[k], "hi", lim).count, 1);
    assert_int_equal(get(f->st, &specs[k], "lo", -lim).count, 1);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_in_order_against_brute_force, setup, teardown),
      cmocka_unit_test_setup_teardown(test_out_of_order_against_brute_force, setup, teardown),
      cmocka_unit_test_setup_teardown(test_window_edge, setup, teardown),
      cmocka_unit_test_setup_teardown(test_first_last_ties, setup, teardown),
      cmocka_unit_test_setup_teardown(test_all_windows, setup, teardown),
      cmocka_unit_test_setup_teardown(test_persistence, setup, teardown),
      cmocka_unit_test_setup_teardown(test_eviction, setup, teardown),
      cmocka_unit_test_setup_teardown(test_calendar_against_brute_force, setup, teardown),
      cmocka_unit_test_setup_teardown(test_calendar_monday_and_zones, setup, teardown),
      cmocka_unit_test_setup_teardown(test_calendar_distinct, setup, teardown),
      cmocka_unit_test_setup_teardown(test_distinct_exact_then_approximate, setup, teardown),
      cmocka_unit_test_setup_teardown(test_distinct_sliding_newest_time, setup, teardown),
      cmocka_unit_test_setup_teardown(test_distinct_estimate_clamped, setup, teardown),
      cmocka_unit_test_setup_teardown(test_distinct_determinism, setup, teardown_det),
      cmocka_unit_test_setup_teardown(test_avg_and_saturation, setup, teardown),
      cmocka_unit_test_setup_teardown(test_min_max, setup, teardown),
      cmocka_unit_test_setup_teardown(test_memory_per_institution, setup, teardown),
      cmocka_unit_test_setup_teardown(test_corrupt_v3_entries, setup, teardown),
      cmocka_unit_test_setup_teardown(test_legacy_all_entries, setup, teardown),
      cmocka_unit_test_setup_teardown(test_zone_change_rebuckets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_time_limits_persist, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
