/*
 * fuzz_msgpack.c: libFuzzer target for tw_decode_msgpack. Loads the shipped schema once (from
 * $TW_SOURCE_DIR, else the compile-time TW_SOURCE_DIR) and decodes each input into one reused
 * event; any outcome but a crash, a sanitizer report or an unbounded allocation is fine.
 * Accepted events must hold a known type and an event time equal to f[TW_SLOT_TS].
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "tw_event.h"
#include "tw_schema.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static tw_schema_t *schema;
  static tw_event_t ev;
  if (schema == NULL) {
    char path[4096];
    const char *root = getenv("TW_SOURCE_DIR");
    tw_schema_error_t err;
    snprintf(path, sizeof path, "%s/rules/packs/schema.yaml", root ? root : TW_SOURCE_DIR);
    if (tw_schema_load(path, &schema, &err) != 0 || tw_event_init(&ev) != 0) {
      fprintf(stderr, "fuzz_msgpack: %s:%d:%d: %s\n", err.file, err.line, err.col, err.message);
      abort();
    }
  }
  tw_decode_error_t err;
  if (tw_decode_msgpack(schema, (const char *)data, size, &ev, &err) == 0) {
    if (ev.type >= schema->n_types || ev.f[TW_SLOT_TS].u.i != ev.ts_ms ||
        (ev.present & 0x1f) != 0x1f)
      abort();
  }
  return 0;
}
