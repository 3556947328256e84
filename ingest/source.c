/*
 * source.c: the table of event sources and the record-format helpers.
 *
 * Every transport is one file defining one tw_source_vt_t; this table is the only place that
 * names them, so adding a transport is one new file and one row here. Lookups are a linear scan
 * of a handful of rows at start-up, never on the hot path.
 */
#include <stddef.h>
#include <string.h>

#include "tw_error.h"
#include "tw_source.h"

extern const tw_source_vt_t tw__source_file_vt;
extern const tw_source_vt_t tw__source_zmq_pull_vt;
extern const tw_source_vt_t tw__source_zmq_router_vt;

static const tw_source_vt_t *const kSources[] = {
    &tw__source_file_vt,
    &tw__source_zmq_pull_vt,
    &tw__source_zmq_router_vt,
};

const tw_source_vt_t *tw_source_find(const char *name) {
  if (name == NULL) return NULL;
  for (size_t i = 0; i < sizeof kSources / sizeof kSources[0]; i++)
    if (strcmp(kSources[i]->name, name) == 0) return kSources[i];
  return NULL;
}

int tw_format_parse(const char *s, tw_format_t *out) {
  if (s == NULL || out == NULL) return TW_EINVAL;
  if (strcmp(s, "jsonl") == 0 || strcmp(s, "json") == 0) {
    *out = TW_FORMAT_JSONL;
  } else if (strcmp(s, "msgpack") == 0 || strcmp(s, "mp") == 0) {
    *out = TW_FORMAT_MSGPACK;
  } else if (strcmp(s, "auto") == 0) {
    *out = TW_FORMAT_AUTO;
  } else {
    return TW_EINVAL;
  }
  return 0;
}

static int has_suffix(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && strcmp(s + n - m, suffix) == 0;
}

tw_format_t tw_format_from_path(const char *path) {
  if (path != NULL && (has_suffix(path, ".msgpack") || has_suffix(path, ".mp")))
    return TW_FORMAT_MSGPACK;
  return TW_FORMAT_JSONL;
}
