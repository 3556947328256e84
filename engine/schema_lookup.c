/*
 * schema_lookup.c: name → slot and name → type id lookups over a loaded schema, and where the
 * shipped schema lives. Linear scans over at most 64 fields / 32 types: used at load time only
 * (rules resolve names to slots once), never per event.
 */
#include <stdlib.h>
#include <string.h>

#include "tw_error.h"
#include "tw_schema.h"

static int name_eq(const char *name, const char *s, size_t len) {
  return strlen(name) == len && memcmp(name, s, len) == 0;
}

int tw_schema_field_slot(const tw_schema_t *schema, const char *name, size_t len) {
  for (uint32_t i = 0; i < schema->n_fields; i++)
    if (name_eq(schema->fields[i].name, name, len)) return (int)i;
  return TW_ENOENT;
}

int tw_schema_type_id(const tw_schema_t *schema, const char *name, size_t len) {
  for (uint32_t i = 0; i < schema->n_types; i++)
    if (name_eq(schema->types[i].name, name, len)) return (int)i;
  return TW_ENOENT;
}

const char *tw_schema_default_path(void) {
  const char *env = getenv("TW_SCHEMA");
  if (env != NULL && env[0] != '\0') return env;
  return TW_SOURCE_DIR "/rules/packs/schema.yaml";
}
