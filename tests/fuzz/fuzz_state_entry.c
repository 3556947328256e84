/*
 * fuzz_state_entry.c: the decoder of stored state entries (window.c) must turn any bytes into
 * either an entry that respects its invariants or TW_ESTATE, within bounded memory.
 * The first input byte picks the entry's shape (kind, fn, window); the rest is the stored value.
 * A decoded entry is re-encoded and decoded again: the round trip must be exact.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "state_internal.h"
#include "tw_error.h"

static const int64_t windows_ms[] = {0, 90000, 3600000, 604800000, 2592000000, 31536000000};

static tw__entry_t *make(uint8_t shape) {
  tw__entry_t *e = calloc(1, sizeof *e + 2);
  if (e == NULL) abort();
  e->key_len = 2;
  e->key[0] = (shape & 0x80) ? TW__KIND_COOL : TW__KIND_AGG;
  e->key[1] = 'k';
  e->fn = shape & 1;
  e->window_ms = windows_ms[(shape >> 1) % (sizeof windows_ms / sizeof windows_ms[0])];
  if (e->window_ms > 0) {
    e->g_ms = tw__window_granularity_ms(e->window_ms);
    e->nb_max = tw__window_cap(e->window_ms);
  }
  return e;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  tw__entry_t *e = make(data[0]), *e2 = make(data[0]);
  unsigned char *buf = NULL;
  if (tw__entry_decode(e, data + 1, size - 1) == 0) {
    if (e->nb > e->nb_max && e->key[0] == TW__KIND_AGG) abort();
    for (uint32_t i = 1; i < e->nb; i++)
      if (e->buckets[i].idx <= e->buckets[i - 1].idx) abort();
    buf = malloc(tw__entry_encoded_max(e));
    if (buf == NULL) abort();
    size_t n = tw__entry_encode(e, buf);
    if (tw__entry_decode(e2, buf, n) != 0) abort();
    if (e2->nb != e->nb || e2->total != e->total || e2->seen != e->seen) abort();
    if (e->nb && memcmp(e->buckets, e2->buckets, e->nb * sizeof e->buckets[0]) != 0) abort();
    if (e->key[0] == TW__KIND_AGG && e->seen) {
      int too_old;
      (void)tw__window_value(e, e->newest_ts_ms - 1);
      (void)tw__window_add(e, e->newest_ts_ms + 1, 1, &too_old);
      (void)tw__window_add(e, e->newest_ts_ms - e->window_ms / 2, 1, &too_old);
      if (e->key[0] == TW__KIND_AGG && e->nb > e->nb_max) abort();
    }
  }
  free(buf);
  free(e->buckets);
  free(e2->buckets);
  free(e);
  free(e2);
  return 0;
}
