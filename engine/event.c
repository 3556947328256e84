/*
 * event.c: the event's arena lifecycle. Decoding lives in decode_json.c / decode_msgpack.c.
 * The arena is allocated once per event struct and reused by every decode into it.
 */
#include <stdlib.h>
#include <string.h>

#include "tw_error.h"
#include "tw_event.h"

/* Room for every string of an event within TW_EVENT_MAX_BYTES, their NULs, and pseudonyms. */
#define TW_EVENT_ARENA_BYTES (TW_EVENT_MAX_BYTES + 8192u)

int tw_event_init(tw_event_t *ev) {
  memset(ev, 0, sizeof *ev);
  ev->arena = malloc(TW_EVENT_ARENA_BYTES);
  if (ev->arena == NULL) return TW_ENOMEM;
  ev->arena_cap = TW_EVENT_ARENA_BYTES;
  return 0;
}

void tw_event_fini(tw_event_t *ev) {
  if (ev == NULL) return;
  free(ev->arena);
  memset(ev, 0, sizeof *ev);
}
