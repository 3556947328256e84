/*
 * test_order.c: the reorder buffer releases events in (event time, event_id, arrival) order
 * whatever order they were pushed in, and restores every field and string exactly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_order.h"

/* Fill ev as a minimal event: id, ts, a string field in slot 3 and an integer in slot 6. */
static void make(tw_event_t *ev, const char *id, int64_t ts, int64_t amount) {
  ev->arena_used = 0;
  ev->present = 0;
  size_t n = strlen(id);
  memcpy(ev->arena, id, n + 1);
  ev->f[TW_SLOT_EVENT_ID] = tw_value_str(ev->arena, (uint32_t)n);
  char *inst = ev->arena + n + 1;
  memcpy(inst, "52440106MJL176301K", 19);
  ev->f[TW_SLOT_INSTITUTION_ID] = tw_value_str(inst, 18);
  ev->f[TW_SLOT_TS] = tw_value_int(TW_V_TIME, ts);
  ev->f[6] = tw_value_int(TW_V_MONEY, amount);
  ev->present =
      (1u << TW_SLOT_EVENT_ID) | (1u << TW_SLOT_INSTITUTION_ID) | (1u << TW_SLOT_TS) | (1u << 6);
  ev->ts_ms = ts;
  ev->type = 2;
}

static void test_releases_in_event_time_order(void **state) {
  (void)state;
  tw_order_t *o = NULL;
  tw_event_t ev, out;
  assert_int_equal(tw_order_new(&o), 0);
  assert_int_equal(tw_event_init(&ev), 0);
  assert_int_equal(tw_event_init(&out), 0);
  /* A deterministic shuffle of 2000 events over 1000 distinct times (pairs share a time). */
  enum { N = 2000 };
  uint64_t x = 7;
  int idx[N];
  for (int i = 0; i < N; i++) idx[i] = i;
  for (int i = N - 1; i > 0; i--) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    int j = (int)((x >> 33) % (uint64_t)(i + 1));
    int t = idx[i];
    idx[i] = idx[j];
    idx[j] = t;
  }
  for (int k = 0; k < N; k++) {
    char id[16];
    snprintf(id, sizeof id, "e-%05d", idx[k]);
    make(&ev, id, 1000 * (idx[k] / 2), idx[k]);
    assert_int_equal(tw_order_push(o, &ev, (uint64_t)k), 0);
  }
  assert_int_equal(tw_order_size(o), N);
  for (int i = 0; i < N; i++) {
    int64_t ts;
    uint64_t arrival;
    assert_int_equal(tw_order_peek_ts(o, &ts), 0);
    assert_int_equal(tw_order_pop(o, &out, &arrival), 0);
    char want[16];
    snprintf(want, sizeof want, "e-%05d", i);
    assert_int_equal(out.ts_ms, 1000 * (i / 2));
    assert_int_equal(ts, out.ts_ms);
    assert_string_equal(out.f[TW_SLOT_EVENT_ID].u.s.ptr, want); /* ties: by event_id */
    assert_int_equal(out.f[TW_SLOT_EVENT_ID].u.s.len, strlen(want));
    assert_string_equal(out.f[TW_SLOT_INSTITUTION_ID].u.s.ptr, "52440106MJL176301K");
    assert_int_equal(out.f[6].kind, TW_V_MONEY);
    assert_int_equal(out.f[6].u.i, i);
    assert_int_equal(out.type, 2);
    assert_true(out.present & (1u << 6));
    assert_int_equal(idx[arrival], i);
  }
  int64_t ts;
  uint64_t arrival;
  assert_int_equal(tw_order_peek_ts(o, &ts), TW_ENOENT);
  assert_int_equal(tw_order_pop(o, &out, &arrival), TW_ENOENT);
  tw_order_free(o);
  tw_event_fini(&ev);
  tw_event_fini(&out);
}

static void test_same_time_same_id_keeps_arrival_order(void **state) {
  (void)state;
  tw_order_t *o = NULL;
  tw_event_t ev, out;
  assert_int_equal(tw_order_new(&o), 0);
  assert_int_equal(tw_event_init(&ev), 0);
  assert_int_equal(tw_event_init(&out), 0);
  for (int k = 0; k < 5; k++) {
    make(&ev, "dup", 42, k);
    assert_int_equal(tw_order_push(o, &ev, (uint64_t)(10 + k)), 0);
  }
  for (int k = 0; k < 5; k++) {
    uint64_t arrival;
    assert_int_equal(tw_order_pop(o, &out, &arrival), 0);
    assert_int_equal(arrival, (uint64_t)(10 + k));
    assert_int_equal(out.f[6].u.i, k);
  }
  tw_order_free(o);
  tw_event_fini(&ev);
  tw_event_fini(&out);
}

/* A mostly ordered stream (the run) with late events (the heap), pushes and pops interleaved
 * and the ring wrapping and growing: every pop is the smallest (ts, event_id, arrival) held,
 * checked against a plain list; events still held are freed with the buffer. */
static void test_mostly_ordered_interleaved(void **state) {
  (void)state;
  enum { N = 30000, MAXHELD = 3000 };
  typedef struct {
    int64_t ts;
    char id[16];
    uint64_t arrival;
  } ref_t;
  ref_t *held = calloc(MAXHELD + 1, sizeof *held);
  assert_non_null(held);
  size_t n_held = 0;
  tw_order_t *o = NULL;
  tw_event_t ev, out;
  assert_int_equal(tw_order_new(&o), 0);
  assert_int_equal(tw_event_init(&ev), 0);
  assert_int_equal(tw_event_init(&out), 0);
  uint64_t x = 11;
  int64_t clock = 0;
  for (uint64_t k = 0; k < N; k++) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    unsigned r = (unsigned)(x >> 40);
    clock += r % 3;                                           /* ties are common */
    int64_t ts = r % 10 == 0 ? clock - (r >> 8) % 50 : clock; /* one in ten is late */
    ref_t *h = &held[n_held++];
    h->ts = ts;
    h->arrival = k;
    snprintf(h->id, sizeof h->id, "i-%u", (r >> 4) % 7); /* few ids: ties on id too */
    make(&ev, h->id, ts, (int64_t)k);
    assert_int_equal(tw_order_push(o, &ev, k), 0);
    assert_int_equal(tw_order_size(o), n_held);
    /* Pop a few: in bursts, sometimes down to empty, sometimes holding thousands. */
    size_t pops = (r >> 12) % 8 == 0 ? n_held : (n_held > MAXHELD - 10 ? 20 : (r >> 16) % 2);
    for (size_t p = 0; p < pops && n_held > 0; p++) {
      size_t best = 0;
      for (size_t i = 1; i < n_held; i++) {
        const ref_t *a = &held[i], *b = &held[best];
        int c = a->ts != b->ts ? (a->ts < b->ts ? -1 : 1) : 0;
        if (c == 0) {
          size_t la = strlen(a->id), lb = strlen(b->id);
          c = memcmp(a->id, b->id, la < lb ? la : lb);
          if (c == 0) c = la != lb ? (la < lb ? -1 : 1) : (a->arrival < b->arrival ? -1 : 1);
        }
        if (c < 0) best = i;
      }
      int64_t ts_peek;
      uint64_t arrival;
      assert_int_equal(tw_order_peek_ts(o, &ts_peek), 0);
      assert_int_equal(tw_order_pop(o, &out, &arrival), 0);
      assert_int_equal(arrival, held[best].arrival);
      assert_int_equal(out.ts_ms, held[best].ts);
      assert_int_equal(ts_peek, held[best].ts);
      assert_string_equal(out.f[TW_SLOT_EVENT_ID].u.s.ptr, held[best].id);
      assert_int_equal(out.f[6].u.i, (int64_t)held[best].arrival);
      held[best] = held[--n_held];
    }
  }
  /* Leave events in the run and in the heap. */
  make(&ev, "tail-1", clock + 10, 0);
  assert_int_equal(tw_order_push(o, &ev, N), 0);
  make(&ev, "late-1", clock - 100, 0);
  assert_int_equal(tw_order_push(o, &ev, N + 1), 0);
  assert_int_equal(tw_order_size(o), n_held + 2);
  tw_order_free(o); /* with events in both the run and the heap (ASan checks the frees) */
  tw_event_fini(&ev);
  tw_event_fini(&out);
  free(held);
}

static void test_large_event_and_free_with_contents(void **state) {
  (void)state;
  tw_order_t *o = NULL;
  tw_event_t ev, out;
  assert_int_equal(tw_order_new(&o), 0);
  assert_int_equal(tw_event_init(&ev), 0);
  assert_int_equal(tw_event_init(&out), 0);
  make(&ev, "big", 5, 1);
  char *text = ev.arena + 100;
  memset(text, 'a', 3000); /* over the small-block size: takes its own allocation */
  text[3000] = '\0';
  ev.f[9] = tw_value_str(text, 3000);
  ev.present |= 1u << 9;
  assert_int_equal(tw_order_push(o, &ev, 1), 0);
  uint64_t arrival;
  assert_int_equal(tw_order_pop(o, &out, &arrival), 0);
  assert_int_equal(out.f[9].u.s.len, 3000);
  assert_int_equal(out.f[9].u.s.ptr[2999], 'a');
  assert_int_equal(out.f[9].u.s.ptr[3000], '\0');
  /* Freeing a buffer that still holds events releases them (ASan checks the leak). */
  assert_int_equal(tw_order_push(o, &ev, 2), 0);
  make(&ev, "small", 6, 2);
  assert_int_equal(tw_order_push(o, &ev, 3), 0);
  tw_order_free(o);
  tw_event_fini(&ev);
  tw_event_fini(&out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_releases_in_event_time_order),
      cmocka_unit_test(test_same_time_same_id_keeps_arrival_order),
      cmocka_unit_test(test_large_event_and_free_with_contents),
      cmocka_unit_test(test_mostly_ordered_interleaved),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
