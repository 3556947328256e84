/*
 * tw_schema.h: the event schema, loaded from rules/packs/schema.yaml.
 *
 * The schema declares the event types and their fields. The decoders validate against it and
 * the rule compiler resolves field names to slots with it, so adding a field to the YAML needs
 * no C change. A field name maps to one slot across all types (amount_fen is the same slot in
 * payment, refund, consumption and escrow) and must have the same kind wherever it appears;
 * enum values, required-ness and bounds are per type (`action` differs between types).
 *
 * Slots 0..4 are fixed for the envelope every event has: event_id, type, ts, institution_id,
 * region. At most TW_MAX_FIELDS slots and TW_MAX_TYPES types, so an event's presence set is one
 * 64-bit mask and a type set (rule `on:`) is one 32-bit mask.
 */
#ifndef TW_SCHEMA_H
#define TW_SCHEMA_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "tw_value.h"

#define TW_MAX_FIELDS 64
#define TW_MAX_TYPES 32
#define TW_MAX_ENUM 16
#define TW_NAME_MAX 32 /* bytes, including the NUL, of a type, field or enum value name */

/* Fixed envelope slots. */
enum {
  TW_SLOT_EVENT_ID = 0,
  TW_SLOT_TYPE = 1,
  TW_SLOT_TS = 2,
  TW_SLOT_INSTITUTION_ID = 3,
  TW_SLOT_REGION = 4
};

typedef enum tw_field_kind {
  TW_FK_STRING = 0,  /* UTF-8 string, bounded by max_len_bytes */
  TW_FK_TEXT,        /* free UTF-8 text (complaints), bounded by max_len_bytes (≤ 4096) */
  TW_FK_INT,         /* integer in [min, max] */
  TW_FK_FEN,         /* money: non-negative integer fen in [min, max]; never a float */
  TW_FK_ENUM,        /* one of the per-type enum values */
  TW_FK_TIME,        /* RFC 3339 with offset, or integer epoch ms (msgpack: also timestamp ext) */
  TW_FK_CREDIT_CODE, /* 18-char unified social credit code, GB 32100-2015 check character */
  TW_FK_REGION,      /* 6-digit GB/T 2260 administrative division code */
  TW_FK_PSEUDONYM    /* personal identifier: replaced by a keyed hash at ingest */
} tw_field_kind_t;

/* How one field appears in one type. */
typedef struct tw_field_spec {
  uint8_t required;       /* 1 if the type requires the field */
  uint8_t n_enum;         /* TW_FK_ENUM: number of values */
  uint32_t max_len_bytes; /* strings: bound in bytes (UTF-8) */
  int64_t min, max;       /* INT/FEN: inclusive bounds */
  char enum_values[TW_MAX_ENUM][TW_NAME_MAX];
} tw_field_spec_t;

typedef struct tw_field_def {
  char name[TW_NAME_MAX];
  tw_field_kind_t kind;
} tw_field_def_t;

typedef struct tw_type_def {
  char name[TW_NAME_MAX];
  uint64_t present_mask;               /* slots the type may carry */
  uint64_t required_mask;              /* slots the type must carry */
  bool internal;                       /* made by the engine (alerts re-entering as events);
                                          decoders refuse it in input: reserved_type */
  tw_field_spec_t spec[TW_MAX_FIELDS]; /* indexed by slot; meaningful where present_mask is set */
} tw_type_def_t;

typedef struct tw_schema {
  uint32_t n_fields;
  uint32_t n_types;
  tw_field_def_t fields[TW_MAX_FIELDS]; /* indexed by slot */
  tw_type_def_t types[TW_MAX_TYPES];    /* indexed by type id */
} tw_schema_t;

/* A located error for a person: "rules/packs/schema.yaml:12:5: unknown kind 'fenn'". */
typedef struct tw_schema_error {
  char file[256];
  int line, col; /* 1-based; 0 when not known */
  char message[256];
} tw_schema_error_t;

/*
 * tw_schema_load: parse the schema YAML at path (libyaml) into a new schema.
 * On success *out is a heap schema owned by the caller (free with tw_schema_free) and 0 is
 * returned. Errors: TW_ENOENT (cannot open), TW_EPARSE (YAML syntax, with line/col),
 * TW_ESCHEMA (unknown kind, conflicting kinds for one field name, too many fields/types/enum
 * values, missing envelope field), TW_ETOOBIG (file over 1 MiB, or aliases used), TW_ENOMEM.
 * err is filled on every error. Thread-safe; the returned schema is immutable and may be shared.
 */
int tw_schema_load(const char *path, tw_schema_t **out, tw_schema_error_t *err);

/* tw_schema_free: free a schema from tw_schema_load; NULL is accepted. */
void tw_schema_free(tw_schema_t *schema);

/* tw_schema_field_slot: slot of a field name, or TW_ENOENT. len is the name's length in bytes. */
int tw_schema_field_slot(const tw_schema_t *schema, const char *name, size_t len);

/* tw_schema_type_id: id of an event type name, or TW_ENOENT. */
int tw_schema_type_id(const tw_schema_t *schema, const char *name, size_t len);

/*
 * tw_schema_default_path: the path of the schema shipped with the sources
 * (TW_SOURCE_DIR "/rules/packs/schema.yaml"), overridable by the TW_SCHEMA environment variable.
 * Returns a static string.
 */
const char *tw_schema_default_path(void);

/*
 * tw_schema_path_for_rules: the schema that goes with a rule file: schema.yaml in the rule
 * file's directory when it exists, else tw_schema_default_path(). Writes the path into out
 * (cap bytes, NUL-terminated). Returns 0, or TW_ETOOBIG when cap is too small.
 */
int tw_schema_path_for_rules(const char *rules_path, char *out, size_t cap);

#endif
