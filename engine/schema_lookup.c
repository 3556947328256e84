/*
 * schema_lookup.c: name → slot and name → type id lookups over a loaded schema, and where the
 * shipped schema lives. Linear scans over at most 64 fields / 32 types: used at load time only
 * (rules resolve names to slots once), never per event.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

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

int tw_schema_path_for_rules(const char *rules_path, char *out, size_t cap) {
  const char *slash = strrchr(rules_path, '/');
  int n = slash != NULL
              ? snprintf(out, cap, "%.*s/schema.yaml", (int)(slash - rules_path), rules_path)
              : snprintf(out, cap, "schema.yaml");
  if (n < 0 || (size_t)n >= cap) return TW_ETOOBIG;
  struct stat st;
  if (stat(out, &st) == 0 && S_ISREG(st.st_mode)) return 0;
  n = snprintf(out, cap, "%s", tw_schema_default_path());
  return n < 0 || (size_t)n >= cap ? TW_ETOOBIG : 0;
}
