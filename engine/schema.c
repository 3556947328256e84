/*
 * schema.c: load rules/packs/schema.yaml (libyaml event API) into a tw_schema_t.
 *
 * Two passes. The first reads libyaml events into a small tree of nodes, refusing anchors and
 * aliases at once (a "billion laughs" file costs nothing), files over 1 MiB, more than
 * SCHEMA_MAX_NODES nodes and nesting deeper than SCHEMA_MAX_DEPTH, so the tree is bounded by the
 * file. The second walks the tree and fills the schema, refusing unknown keys and kinds, a field
 * name with two kinds, duplicate names and names that do not fit. Every error carries
 * file:line:col. Allocation happens only here, at load time; the schema is one flat struct.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "tw_error.h"
#include "tw_schema.h"

#define SCHEMA_MAX_BYTES (1u << 20)
#define SCHEMA_MAX_NODES 20000
#define SCHEMA_MAX_DEPTH 16
#define DEFAULT_STRING_MAX_BYTES 128
#define TEXT_MAX_BYTES 4096
#define DEFAULT_INT_MAX 100000

enum { NODE_SCALAR, NODE_SEQ, NODE_MAP };

typedef struct ynode {
  int type;
  int line, col;       /* 1-based */
  char *val;           /* scalars: NUL-terminated */
  size_t len;          /* scalars: bytes */
  int plain;           /* scalars: unquoted */
  struct ynode **kids; /* maps: key, value, key, value, ... */
  size_t n, cap;
} ynode_t;

typedef struct loader {
  const char *path;
  tw_schema_error_t *err;
  size_t n_nodes;
} loader_t;

static int fail_at(loader_t *ld, int code, int line, int col, const char *fmt, ...) {
  tw_schema_error_t *e = ld->err;
  if (e != NULL) {
    snprintf(e->file, sizeof e->file, "%s", ld->path);
    e->line = line;
    e->col = col;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
  }
  return code;
}

static void node_free(ynode_t *n) {
  if (n == NULL) return;
  for (size_t i = 0; i < n->n; i++) node_free(n->kids[i]);
  free(n->kids);
  free(n->val);
  free(n);
}

static ynode_t *node_new(loader_t *ld, int type, const yaml_mark_t *m) {
  if (++ld->n_nodes > SCHEMA_MAX_NODES) return NULL;
  ynode_t *n = calloc(1, sizeof *n);
  if (n == NULL) return NULL;
  n->type = type;
  n->line = (int)m->line + 1;
  n->col = (int)m->column + 1;
  return n;
}

static int node_push(ynode_t *parent, ynode_t *kid) {
  if (parent->n == parent->cap) {
    size_t cap = parent->cap ? parent->cap * 2 : 8;
    ynode_t **k = realloc(parent->kids, cap * sizeof *k);
    if (k == NULL) return TW_ENOMEM;
    parent->kids = k;
    parent->cap = cap;
  }
  parent->kids[parent->n++] = kid;
  return 0;
}

/* Builds the node tree of the first document. Iterative: an explicit stack of open nodes. */
static int read_tree(loader_t *ld, const unsigned char *buf, size_t len, ynode_t **root) {
  yaml_parser_t parser;
  yaml_event_t ev;
  ynode_t *stack[SCHEMA_MAX_DEPTH + 1];
  int depth = 0, rc = 0, have_event = 0, done = 0;
  *root = NULL;
  if (!yaml_parser_initialize(&parser)) return fail_at(ld, TW_ENOMEM, 0, 0, "out of memory");
  yaml_parser_set_input_string(&parser, buf, len);
  while (!done) {
    if (!yaml_parser_parse(&parser, &ev)) {
      rc = fail_at(ld, TW_EPARSE, (int)parser.problem_mark.line + 1,
                   (int)parser.problem_mark.column + 1, "YAML syntax error: %s",
                   parser.problem ? parser.problem : "unknown problem");
      goto fail;
    }
    have_event = 1;
    ynode_t *n = NULL;
    const yaml_mark_t *m = &ev.start_mark;
    switch (ev.type) {
      case YAML_ALIAS_EVENT:
        rc = fail_at(ld, TW_ETOOBIG, (int)m->line + 1, (int)m->column + 1,
                     "YAML aliases (*%s) are not allowed in the schema",
                     (const char *)ev.data.alias.anchor);
        goto fail;
      case YAML_SCALAR_EVENT:
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        const yaml_char_t *anchor = ev.type == YAML_SCALAR_EVENT ? ev.data.scalar.anchor
                                    : ev.type == YAML_SEQUENCE_START_EVENT
                                        ? ev.data.sequence_start.anchor
                                        : ev.data.mapping_start.anchor;
        if (anchor != NULL) {
          rc = fail_at(ld, TW_ETOOBIG, (int)m->line + 1, (int)m->column + 1,
                       "YAML anchors and aliases (&%s) are not allowed in the schema",
                       (const char *)anchor);
          goto fail;
        }
        int type = ev.type == YAML_SCALAR_EVENT           ? NODE_SCALAR
                   : ev.type == YAML_SEQUENCE_START_EVENT ? NODE_SEQ
                                                          : NODE_MAP;
        n = node_new(ld, type, m);
        if (n == NULL) {
          rc = ld->n_nodes > SCHEMA_MAX_NODES
                   ? fail_at(ld, TW_ETOOBIG, (int)m->line + 1, (int)m->column + 1,
                             "schema has more than %d YAML nodes", SCHEMA_MAX_NODES)
                   : fail_at(ld, TW_ENOMEM, 0, 0, "out of memory");
          goto fail;
        }
        if (type == NODE_SCALAR) {
          n->len = ev.data.scalar.length;
          n->plain = ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
          n->val = malloc(n->len + 1);
          if (n->val == NULL) {
            node_free(n);
            rc = fail_at(ld, TW_ENOMEM, 0, 0, "out of memory");
            goto fail;
          }
          memcpy(n->val, ev.data.scalar.value, n->len);
          n->val[n->len] = '\0';
        }
        if (depth == 0) {
          if (*root != NULL) {
            node_free(n);
            rc = fail_at(ld, TW_ESCHEMA, (int)m->line + 1, (int)m->column + 1,
                         "the schema must be a single YAML document");
            goto fail;
          }
          *root = n;
        } else if ((rc = node_push(stack[depth - 1], n)) != 0) {
          node_free(n);
          fail_at(ld, rc, 0, 0, "out of memory");
          goto fail;
        }
        if (type != NODE_SCALAR) {
          if (depth == SCHEMA_MAX_DEPTH) {
            rc = fail_at(ld, TW_ETOOBIG, (int)m->line + 1, (int)m->column + 1,
                         "schema nested deeper than %d levels", SCHEMA_MAX_DEPTH);
            goto fail;
          }
          stack[depth++] = n;
        }
        break;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        depth--;
        break;
      case YAML_DOCUMENT_END_EVENT:
        done = 1;
        break;
      case YAML_STREAM_END_EVENT:
        done = 1;
        break;
      default:
        break;
    }
    yaml_event_delete(&ev);
    have_event = 0;
  }
  yaml_parser_delete(&parser);
  if (*root == NULL) return fail_at(ld, TW_ESCHEMA, 1, 1, "the schema file is empty");
  return 0;
fail:
  if (have_event) yaml_event_delete(&ev);
  yaml_parser_delete(&parser);
  node_free(*root);
  *root = NULL;
  return rc;
}

/* ---- second pass: tree → schema ---- */

static int expect(loader_t *ld, const ynode_t *n, int type, const char *what) {
  static const char *kNames[] = {"a scalar", "a list", "a mapping"};
  if (n->type == type) return 0;
  return fail_at(ld, TW_ESCHEMA, n->line, n->col, "%s must be %s", what, kNames[type]);
}

static int check_name(loader_t *ld, const ynode_t *k, const char *what) {
  int ok = k->type == NODE_SCALAR && k->len > 0 && k->len < TW_NAME_MAX && k->val[0] >= 'a' &&
           k->val[0] <= 'z';
  for (size_t i = 0; ok && i < k->len; i++) {
    char c = k->val[i];
    ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
  }
  if (ok) return 0;
  return fail_at(ld, TW_ESCHEMA, k->line, k->col,
                 "%s name '%.*s' must be 1-%d characters of a-z, 0-9 and _, starting with a "
                 "letter",
                 what, k->type == NODE_SCALAR ? (int)(k->len > 40 ? 40 : k->len) : 1,
                 k->type == NODE_SCALAR ? k->val : "?", TW_NAME_MAX - 1);
}

static int parse_i64(loader_t *ld, const ynode_t *n, const char *what, int64_t *out) {
  if (n->type != NODE_SCALAR || n->len == 0)
    return fail_at(ld, TW_ESCHEMA, n->line, n->col, "%s must be an integer", what);
  errno = 0;
  char *end = NULL;
  long long v = strtoll(n->val, &end, 10);
  if (end != n->val + n->len || (n->val[0] != '-' && (n->val[0] < '0' || n->val[0] > '9')))
    return fail_at(ld, TW_ESCHEMA, n->line, n->col, "%s must be an integer, not '%s'", what,
                   n->val);
  if (errno == ERANGE)
    return fail_at(ld, TW_ESCHEMA, n->line, n->col, "%s %s does not fit in 64 bits", what, n->val);
  *out = (int64_t)v;
  return 0;
}

static int parse_bool(loader_t *ld, const ynode_t *n, const char *what, uint8_t *out) {
  if (n->type == NODE_SCALAR && strcmp(n->val, "true") == 0) return *out = 1, 0;
  if (n->type == NODE_SCALAR && strcmp(n->val, "false") == 0) return *out = 0, 0;
  return fail_at(ld, TW_ESCHEMA, n->line, n->col, "%s must be true or false", what);
}

static const char *const kKindNames[] = {"string", "text",        "int",    "fen",      "enum",
                                         "time",   "credit_code", "region", "pseudonym"};

static int parse_kind(loader_t *ld, const ynode_t *n, tw_field_kind_t *out) {
  if (n->type == NODE_SCALAR)
    for (size_t i = 0; i < sizeof kKindNames / sizeof kKindNames[0]; i++)
      if (strcmp(n->val, kKindNames[i]) == 0) return *out = (tw_field_kind_t)i, 0;
  return fail_at(ld, TW_ESCHEMA, n->line, n->col,
                 "unknown kind '%s' (expected string, text, int, fen, enum, time, credit_code, "
                 "region or pseudonym)",
                 n->type == NODE_SCALAR ? n->val : "?");
}

static int key_is(const ynode_t *k, const char *s) {
  return k->type == NODE_SCALAR && strcmp(k->val, s) == 0;
}

/* Checks that a mapping has no key twice and only keys from allowed (NULL-terminated). */
static int check_keys(loader_t *ld, const ynode_t *map, const char *const *allowed,
                      const char *where) {
  for (size_t i = 0; i < map->n; i += 2) {
    const ynode_t *k = map->kids[i];
    if (k->type != NODE_SCALAR)
      return fail_at(ld, TW_ESCHEMA, k->line, k->col, "keys in %s must be scalars", where);
    for (size_t j = 0; j < i; j += 2)
      if (strcmp(map->kids[j]->val, k->val) == 0)
        return fail_at(ld, TW_ESCHEMA, k->line, k->col, "duplicate key '%s' in %s", k->val, where);
    if (allowed == NULL) continue;
    int ok = 0;
    for (const char *const *a = allowed; *a != NULL && !ok; a++) ok = strcmp(*a, k->val) == 0;
    if (!ok)
      return fail_at(ld, TW_ESCHEMA, k->line, k->col, "unknown key '%s' in %s", k->val, where);
  }
  return 0;
}

static const ynode_t *map_get(const ynode_t *map, const char *key) {
  for (size_t i = 0; i + 1 < map->n; i += 2)
    if (key_is(map->kids[i], key)) return map->kids[i + 1];
  return NULL;
}

/* Finds or adds the slot of a field name, enforcing one kind per name. */
static int field_slot(loader_t *ld, tw_schema_t *s, const ynode_t *name, tw_field_kind_t kind,
                      const ynode_t *kind_node) {
  int slot = tw_schema_field_slot(s, name->val, name->len);
  if (slot >= 0) {
    if (s->fields[slot].kind != kind)
      return fail_at(ld, TW_ESCHEMA, kind_node->line, kind_node->col,
                     "field '%s' is declared as %s here but as %s elsewhere; a field name has "
                     "one kind",
                     name->val, kKindNames[kind], kKindNames[s->fields[slot].kind]);
    return slot;
  }
  if (s->n_fields >= TW_MAX_FIELDS)
    return fail_at(ld, TW_ESCHEMA, name->line, name->col, "more than %d distinct fields",
                   TW_MAX_FIELDS);
  slot = (int)s->n_fields++;
  memcpy(s->fields[slot].name, name->val, name->len + 1);
  s->fields[slot].kind = kind;
  return slot;
}

/* Parses one field's attributes into spec. envelope: required is implied and not accepted. */
static int parse_field(loader_t *ld, tw_schema_t *s, const ynode_t *name, const ynode_t *def,
                       int envelope, tw_field_spec_t *spec, int *slot_out) {
  static const char *const kFieldKeys[] = {"kind", "description", "required", "max_len_bytes",
                                           "min",  "max",         "values",   NULL};
  static const char *const kEnvKeys[] = {"kind", "description", "max_len_bytes", NULL};
  char where[64];
  int rc;
  snprintf(where, sizeof where, "field '%s'", name->val);
  if ((rc = check_name(ld, name, "field")) != 0) return rc;
  if ((rc = expect(ld, def, NODE_MAP, where)) != 0) return rc;
  if ((rc = check_keys(ld, def, envelope ? kEnvKeys : kFieldKeys, where)) != 0) return rc;
  const ynode_t *kn = map_get(def, "kind");
  if (kn == NULL)
    return fail_at(ld, TW_ESCHEMA, def->line, def->col, "field '%s' has no kind", name->val);
  tw_field_kind_t kind = TW_FK_STRING;
  if ((rc = parse_kind(ld, kn, &kind)) != 0) return rc;
  memset(spec, 0, sizeof *spec);
  spec->required = (uint8_t)envelope;
  spec->max_len_bytes = kind == TW_FK_TEXT ? TEXT_MAX_BYTES : DEFAULT_STRING_MAX_BYTES;
  spec->min = 0;
  spec->max = kind == TW_FK_FEN ? INT64_MAX : DEFAULT_INT_MAX;
  for (size_t i = 0; i < def->n; i += 2) {
    const ynode_t *k = def->kids[i], *v = def->kids[i + 1];
    int is_len = key_is(k, "max_len_bytes"), is_bound = key_is(k, "min") || key_is(k, "max");
    int is_values = key_is(k, "values");
    if (key_is(k, "required")) {
      if ((rc = parse_bool(ld, v, "required", &spec->required)) != 0) return rc;
    } else if (key_is(k, "description")) {
      if ((rc = expect(ld, v, NODE_SCALAR, "description")) != 0) return rc;
    } else if (is_len) {
      if (kind != TW_FK_STRING && kind != TW_FK_TEXT && kind != TW_FK_PSEUDONYM)
        return fail_at(ld, TW_ESCHEMA, k->line, k->col,
                       "max_len_bytes applies to string, text and pseudonym fields, not %s",
                       kKindNames[kind]);
      int64_t n;
      if ((rc = parse_i64(ld, v, "max_len_bytes", &n)) != 0) return rc;
      int64_t cap = kind == TW_FK_TEXT ? TEXT_MAX_BYTES : 1024;
      if (n < 1 || n > cap)
        return fail_at(ld, TW_ESCHEMA, v->line, v->col,
                       "max_len_bytes of a %s field must be 1..%" PRId64, kKindNames[kind], cap);
      spec->max_len_bytes = (uint32_t)n;
    } else if (is_bound) {
      if (kind != TW_FK_INT && kind != TW_FK_FEN)
        return fail_at(ld, TW_ESCHEMA, k->line, k->col, "%s applies to int and fen fields, not %s",
                       k->val, kKindNames[kind]);
      if ((rc = parse_i64(ld, v, k->val, key_is(k, "min") ? &spec->min : &spec->max)) != 0)
        return rc;
    } else if (is_values) {
      if (kind != TW_FK_ENUM)
        return fail_at(ld, TW_ESCHEMA, k->line, k->col, "values applies to enum fields only");
      if ((rc = expect(ld, v, NODE_SEQ, "values")) != 0) return rc;
      if (v->n == 0 || v->n > TW_MAX_ENUM)
        return fail_at(ld, TW_ESCHEMA, v->line, v->col, "an enum has 1..%d values", TW_MAX_ENUM);
      for (size_t j = 0; j < v->n; j++) {
        const ynode_t *e = v->kids[j];
        if ((rc = check_name(ld, e, "enum value")) != 0) return rc;
        for (size_t q = 0; q < j; q++)
          if (strcmp(spec->enum_values[q], e->val) == 0)
            return fail_at(ld, TW_ESCHEMA, e->line, e->col, "enum value '%s' listed twice", e->val);
        memcpy(spec->enum_values[j], e->val, e->len + 1);
      }
      spec->n_enum = (uint8_t)v->n;
    }
  }
  if (kind == TW_FK_ENUM && spec->n_enum == 0)
    return fail_at(ld, TW_ESCHEMA, def->line, def->col, "enum field '%s' has no values", name->val);
  if (kind == TW_FK_FEN && spec->min < 0)
    return fail_at(ld, TW_ESCHEMA, def->line, def->col,
                   "fen field '%s' cannot allow negative money (min %" PRId64 ")", name->val,
                   spec->min);
  if (spec->min > spec->max)
    return fail_at(ld, TW_ESCHEMA, def->line, def->col, "field '%s' has min > max", name->val);
  int slot = field_slot(ld, s, name, kind, kn);
  if (slot < 0) return slot;
  *slot_out = slot;
  return 0;
}

static const struct {
  const char *name;
  tw_field_kind_t kind;
} kEnvelope[] = {{"event_id", TW_FK_STRING},
                 {"type", TW_FK_STRING},
                 {"ts", TW_FK_TIME},
                 {"institution_id", TW_FK_CREDIT_CODE},
                 {"region", TW_FK_REGION}};
#define N_ENVELOPE 5

static int build(loader_t *ld, const ynode_t *root, tw_schema_t *s) {
  static const char *const kTopKeys[] = {"version", "envelope", "types", NULL};
  static const char *const kTypeKeys[] = {"description", "fields", "internal", NULL};
  tw_field_spec_t env_spec[N_ENVELOPE];
  int rc;
  if ((rc = expect(ld, root, NODE_MAP, "the schema")) != 0) return rc;
  if ((rc = check_keys(ld, root, kTopKeys, "the schema")) != 0) return rc;
  const ynode_t *ver = map_get(root, "version"), *env = map_get(root, "envelope"),
                *types = map_get(root, "types");
  if (ver == NULL || env == NULL || types == NULL)
    return fail_at(ld, TW_ESCHEMA, root->line, root->col,
                   "the schema needs version, envelope and types");
  if (ver->type != NODE_SCALAR || strcmp(ver->val, "1") != 0)
    return fail_at(ld, TW_ESCHEMA, ver->line, ver->col, "unsupported schema version (expected 1)");
  if ((rc = expect(ld, env, NODE_MAP, "envelope")) != 0) return rc;
  if ((rc = check_keys(ld, env, NULL, "envelope")) != 0) return rc;
  if (env->n != 2 * N_ENVELOPE)
    return fail_at(ld, TW_ESCHEMA, env->line, env->col,
                   "envelope must declare exactly event_id, type, ts, institution_id, region");
  for (int i = 0; i < N_ENVELOPE; i++) {
    const ynode_t *k = env->kids[2 * i];
    if (!key_is(k, kEnvelope[i].name))
      return fail_at(ld, TW_ESCHEMA, k->line, k->col,
                     "envelope field %d must be '%s' (order: event_id, type, ts, "
                     "institution_id, region)",
                     i + 1, kEnvelope[i].name);
    int slot;
    if ((rc = parse_field(ld, s, k, env->kids[2 * i + 1], 1, &env_spec[i], &slot)) != 0) return rc;
    if (s->fields[slot].kind != kEnvelope[i].kind)
      return fail_at(ld, TW_ESCHEMA, k->line, k->col, "envelope field '%s' must have kind %s",
                     kEnvelope[i].name, kKindNames[kEnvelope[i].kind]);
  }
  if ((rc = expect(ld, types, NODE_MAP, "types")) != 0) return rc;
  if ((rc = check_keys(ld, types, NULL, "types")) != 0) return rc;
  if (types->n == 0) return fail_at(ld, TW_ESCHEMA, types->line, types->col, "no types declared");
  for (size_t t = 0; t < types->n; t += 2) {
    const ynode_t *tn = types->kids[t], *td = types->kids[t + 1];
    if ((rc = check_name(ld, tn, "type")) != 0) return rc;
    if (s->n_types >= TW_MAX_TYPES)
      return fail_at(ld, TW_ESCHEMA, tn->line, tn->col, "more than %d types", TW_MAX_TYPES);
    char where[64];
    snprintf(where, sizeof where, "type '%s'", tn->val);
    if ((rc = expect(ld, td, NODE_MAP, where)) != 0) return rc;
    if ((rc = check_keys(ld, td, kTypeKeys, where)) != 0) return rc;
    tw_type_def_t *ty = &s->types[s->n_types++];
    memcpy(ty->name, tn->val, tn->len + 1);
    const ynode_t *internal = map_get(td, "internal");
    if (internal != NULL) {
      if (internal->type != NODE_SCALAR ||
          (strcmp(internal->val, "true") != 0 && strcmp(internal->val, "false") != 0))
        return fail_at(ld, TW_ESCHEMA, internal->line, internal->col,
                       "internal must be true or false");
      ty->internal = strcmp(internal->val, "true") == 0;
    }
    for (int i = 0; i < N_ENVELOPE; i++) {
      ty->spec[i] = env_spec[i];
      ty->present_mask |= (uint64_t)1 << i;
      ty->required_mask |= (uint64_t)1 << i;
    }
    const ynode_t *fields = map_get(td, "fields");
    if (fields == NULL) continue; /* a type may carry the envelope only */
    if ((rc = expect(ld, fields, NODE_MAP, "fields")) != 0) return rc;
    if ((rc = check_keys(ld, fields, NULL, where)) != 0) return rc;
    for (size_t f = 0; f < fields->n; f += 2) {
      const ynode_t *fname = fields->kids[f];
      tw_field_spec_t spec;
      int slot;
      if ((rc = check_name(ld, fname, "field")) != 0) return rc;
      if (tw_schema_field_slot(s, fname->val, fname->len) >= 0 &&
          tw_schema_field_slot(s, fname->val, fname->len) < N_ENVELOPE)
        return fail_at(ld, TW_ESCHEMA, fname->line, fname->col,
                       "'%s' is an envelope field; declare it under envelope only", fname->val);
      if ((rc = parse_field(ld, s, fname, fields->kids[f + 1], 0, &spec, &slot)) != 0) return rc;
      ty->spec[slot] = spec;
      ty->present_mask |= (uint64_t)1 << slot;
      if (spec.required) ty->required_mask |= (uint64_t)1 << slot;
    }
  }
  return 0;
}

int tw_schema_load(const char *path, tw_schema_t **out, tw_schema_error_t *err) {
  loader_t ld = {path, err, 0};
  unsigned char *buf = NULL;
  ynode_t *root = NULL;
  tw_schema_t *s = NULL;
  FILE *f = NULL;
  int rc;
  *out = NULL;
  if (err != NULL) memset(err, 0, sizeof *err);
  f = fopen(path, "rb");
  if (f == NULL) {
    rc = fail_at(&ld, TW_ENOENT, 0, 0, "cannot open: %s", strerror(errno));
    goto fail;
  }
  /* Read at most one byte past the bound, so a file growing under us is still caught. */
  buf = malloc(SCHEMA_MAX_BYTES + 1);
  if (buf == NULL) {
    rc = fail_at(&ld, TW_ENOMEM, 0, 0, "out of memory");
    goto fail;
  }
  size_t len = fread(buf, 1, SCHEMA_MAX_BYTES + 1, f);
  if (ferror(f)) {
    rc = fail_at(&ld, TW_ENOENT, 0, 0, "cannot read: %s", strerror(errno));
    goto fail;
  }
  if (len > SCHEMA_MAX_BYTES) {
    rc = fail_at(&ld, TW_ETOOBIG, 0, 0, "schema file is larger than 1 MiB");
    goto fail;
  }
  if ((rc = read_tree(&ld, buf, len, &root)) != 0) goto fail;
  s = calloc(1, sizeof *s);
  if (s == NULL) {
    rc = fail_at(&ld, TW_ENOMEM, 0, 0, "out of memory");
    goto fail;
  }
  if ((rc = build(&ld, root, s)) != 0) goto fail;
  node_free(root);
  free(buf);
  fclose(f);
  *out = s;
  return 0;
fail:
  tw_schema_free(s);
  node_free(root);
  free(buf);
  if (f != NULL) fclose(f);
  return rc;
}

void tw_schema_free(tw_schema_t *schema) {
  free(schema);
}
