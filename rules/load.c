/*
 * load.c: reading a rule file (YAML, libyaml) into a compiled, immutable ruleset.
 *
 * The file is parsed event by event into a small tree of our own (so every node keeps its line
 * and column), refusing anchors and aliases outright (a "billion laughs" file is refused at its
 * first anchor, before any expansion), nesting deeper than TW__YAML_MAX_DEPTH and files over
 * TW_RULES_MAX_FILE_BYTES. Then, in a fixed order whatever the key order in the file: lists,
 * aggregates (their `where` may use fields and lists), rules (fields, lists and aggregates).
 *
 * Every error names file:line:col (1-based; columns count characters, as libyaml does). For an
 * error inside an expression the column is that of the offending character: exact for plain and
 * quoted single-line scalars (escapes in quoted scalars are accounted for) and for literal block
 * scalars (`|`); for folded (`>`) and multi-line flow scalars the position is the scalar's start.
 */
#include <ctype.h>
#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "rules_internal.h"
#include "tw_error.h"

#define TW__YAML_MAX_DEPTH 32

/* ---- our YAML tree ---- */
enum { YN_SCALAR, YN_SEQ, YN_MAP };

typedef struct ynode {
  int kind;
  int line, col; /* 1-based start */
  int end_line;  /* 1-based end (scalars) */
  int style;     /* yaml_scalar_style_t */
  char *s;       /* scalar value, NUL-terminated */
  size_t len;
  struct ynode *child, *last, *next; /* maps: children alternate key, value */
  size_t n;
} ynode_t;

typedef struct loader {
  const char *name;
  const char *data;
  size_t len;
  const tw_schema_t *schema;
  tw_ruleset_t *rs;
  tw_rule_error_t *err;
  tw__arena_t tmp; /* the YAML tree; freed after loading */
} loader_t;

static int fail(loader_t *L, int code, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(loader_t *L, int code, int line, int col, const char *fmt, ...) {
  va_list ap;
  L->err->line = line;
  L->err->col = col;
  va_start(ap, fmt);
  vsnprintf(L->err->message, sizeof L->err->message, fmt, ap);
  va_end(ap);
  return code;
}

static int fail_at(loader_t *L, int code, const ynode_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail_at(loader_t *L, int code, const ynode_t *n, const char *fmt, ...) {
  va_list ap;
  L->err->line = n ? n->line : 0;
  L->err->col = n ? n->col : 0;
  va_start(ap, fmt);
  vsnprintf(L->err->message, sizeof L->err->message, fmt, ap);
  va_end(ap);
  return code;
}

static ynode_t *new_ynode(loader_t *L, int kind, yaml_mark_t m) {
  ynode_t *n = tw__arena_alloc(&L->tmp, sizeof *n);
  if (n == NULL) return NULL;
  n->kind = kind;
  n->line = (int)m.line + 1;
  n->col = (int)m.column + 1;
  n->end_line = n->line;
  return n;
}

static void add_child(ynode_t *parent, ynode_t *c) {
  if (parent->last)
    parent->last->next = c;
  else
    parent->child = c;
  parent->last = c;
  parent->n++;
}

static int refuse_anchor(loader_t *L, yaml_mark_t m, const char *kind, const yaml_char_t *name) {
  return fail(L, TW_ETOOBIG, (int)m.line + 1, (int)m.column + 1,
              "YAML %s '%s%.40s' refused: rule files may not use anchors or aliases", kind,
              kind[0] == 'a' && kind[1] == 'l' ? "*" : "&", name ? (const char *)name : "");
}

static int parse_yaml(loader_t *L, ynode_t **root) {
  yaml_parser_t parser;
  yaml_event_t ev;
  ynode_t *stack[TW__YAML_MAX_DEPTH + 1];
  int depth = 0, rc = 0, docs = 0, done = 0;
  *root = NULL;
  if (!yaml_parser_initialize(&parser)) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  yaml_parser_set_input_string(&parser, (const unsigned char *)L->data, L->len);
  while (!done) {
    if (!yaml_parser_parse(&parser, &ev)) {
      rc =
          fail(L, TW_EPARSE, (int)parser.problem_mark.line + 1, (int)parser.problem_mark.column + 1,
               "YAML: %s%s%s", parser.problem ? parser.problem : "syntax error",
               parser.context ? " " : "", parser.context ? parser.context : "");
      break;
    }
    ynode_t *n = NULL;
    switch (ev.type) {
      case YAML_STREAM_END_EVENT:
        done = 1;
        break;
      case YAML_DOCUMENT_START_EVENT:
        if (++docs > 1)
          rc = fail(L, TW_EPARSE, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                    "a rule file holds one YAML document");
        break;
      case YAML_ALIAS_EVENT:
        rc = refuse_anchor(L, ev.start_mark, "alias", ev.data.alias.anchor);
        break;
      case YAML_SCALAR_EVENT:
        if (ev.data.scalar.anchor) {
          rc = refuse_anchor(L, ev.start_mark, "anchor", ev.data.scalar.anchor);
          break;
        }
        n = new_ynode(L, YN_SCALAR, ev.start_mark);
        if (n == NULL || (n->s = tw__arena_strndup(&L->tmp, (const char *)ev.data.scalar.value,
                                                   ev.data.scalar.length)) == NULL) {
          rc = fail(L, TW_ENOMEM, 0, 0, "out of memory");
          break;
        }
        n->len = ev.data.scalar.length;
        n->style = ev.data.scalar.style;
        n->end_line = (int)ev.end_mark.line + 1;
        break;
      case YAML_SEQUENCE_START_EVENT:
      case YAML_MAPPING_START_EVENT: {
        yaml_char_t *anchor = ev.type == YAML_SEQUENCE_START_EVENT ? ev.data.sequence_start.anchor
                                                                   : ev.data.mapping_start.anchor;
        if (anchor) {
          rc = refuse_anchor(L, ev.start_mark, "anchor", anchor);
          break;
        }
        if (depth >= TW__YAML_MAX_DEPTH) {
          rc = fail(L, TW_ETOOBIG, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                    "YAML nested deeper than %d levels", TW__YAML_MAX_DEPTH);
          break;
        }
        n = new_ynode(L, ev.type == YAML_SEQUENCE_START_EVENT ? YN_SEQ : YN_MAP, ev.start_mark);
        if (n == NULL) rc = fail(L, TW_ENOMEM, 0, 0, "out of memory");
        break;
      }
      case YAML_SEQUENCE_END_EVENT:
      case YAML_MAPPING_END_EVENT:
        depth--;
        break;
      default:
        break;
    }
    if (rc == 0 && n != NULL) {
      if (depth > 0) {
        ynode_t *parent = stack[depth - 1];
        if (parent->kind == YN_MAP && parent->n % 2 == 0 && n->kind != YN_SCALAR)
          rc = fail_at(L, TW_EINVAL, n, "mapping keys must be plain names");
        else if (parent->kind == YN_SEQ && parent->n >= TW__MAX_LIST_ITEMS)
          rc = fail_at(L, TW_ETOOBIG, n, "more than %d items in one list", TW__MAX_LIST_ITEMS);
        else
          add_child(parent, n);
      } else if (*root == NULL) {
        *root = n;
      }
      if (rc == 0 && n->kind != YN_SCALAR) stack[depth++] = n;
    }
    yaml_event_delete(&ev);
    if (rc != 0) break;
  }
  yaml_parser_delete(&parser);
  if (rc == 0 && *root == NULL)
    rc = fail(L, TW_EINVAL, 1, 1, "empty rule file: expected 'version: 1'");
  return rc;
}

/* ---- helpers over the tree ---- */

static const char *suggest(const char *name, size_t len, const char *const *cands, size_t n) {
  const char *best = NULL;
  size_t best_d = (size_t)-1;
  for (size_t i = 0; i < n; i++) {
    size_t d = tw__edit_distance(name, len, cands[i], strlen(cands[i]));
    if (d < best_d && d <= (len / 3 > 2 ? len / 3 : 2) && d < len) {
      best = cands[i];
      best_d = d;
    }
  }
  return best;
}

/* Check a mapping's keys against the allowed ones; duplicates and unknown keys are errors. */
static int check_keys(loader_t *L, const ynode_t *map, const char *what, const char *const *keys,
                      size_t n_keys) {
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next) {
    if (k->kind != YN_SCALAR) return fail_at(L, TW_EINVAL, k, "%s keys must be plain names", what);
    int known = 0;
    for (size_t i = 0; i < n_keys; i++)
      if (strcmp(k->s, keys[i]) == 0) known = 1;
    if (!known) {
      const char *s = suggest(k->s, k->len, keys, n_keys);
      if (s)
        return fail_at(L, TW_EINVAL, k, "unknown key '%.64s' in %s (did you mean '%s'?)", k->s,
                       what, s);
      return fail_at(L, TW_EINVAL, k, "unknown key '%.64s' in %s", k->s, what);
    }
    for (const ynode_t *j = map->child; j != k; j = j->next->next)
      if (strcmp(j->s, k->s) == 0)
        return fail_at(L, TW_EINVAL, k, "duplicate key '%s' (first at line %d)", k->s, j->line);
  }
  return 0;
}

static const ynode_t *get(const ynode_t *map, const char *key) {
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next)
    if (k->kind == YN_SCALAR && strcmp(k->s, key) == 0) return k->next;
  return NULL;
}

static int want_scalar(loader_t *L, const ynode_t *n, const char *what) {
  if (n->kind != YN_SCALAR) return fail_at(L, TW_EINVAL, n, "%s must be a single value", what);
  return 0;
}

static int valid_name(const char *s) {
  if (!(*s >= 'a' && *s <= 'z') && *s != '_') return 0;
  size_t len = 0;
  for (; *s; s++, len++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return 0;
  return len <= 64;
}

static const char *keep(loader_t *L, const char *s) {
  return tw__arena_strndup(&L->rs->arena, s, strlen(s));
}

/* ---- positions inside expressions ---- */

static size_t utf8_chars(const char *s, size_t len) {
  size_t n = 0;
  for (size_t i = 0; i < len; i++)
    if (((unsigned char)s[i] & 0xC0) != 0x80) n++;
  return n;
}

static size_t utf8_len(unsigned char c) {
  return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Byte offset in the file of (line, col), 1-based, col in characters; len when out of range. */
static size_t source_offset(const loader_t *L, int line, int col) {
  size_t i = 0;
  /* libyaml does not count a UTF-8 byte order mark in columns */
  if (L->len >= 3 && memcmp(L->data, "\xEF\xBB\xBF", 3) == 0) i = 3;
  for (int l = 1; l < line && i < L->len; i++) {
    if (L->data[i] == '\n')
      l++;
    else if (L->data[i] == '\r' && !(i + 1 < L->len && L->data[i + 1] == '\n'))
      l++;
  }
  for (int c = 1; c < col && i < L->len; c++) i += utf8_len((unsigned char)L->data[i]);
  return i < L->len ? i : L->len;
}

/* Bytes that one escape at src produces in a double-quoted YAML scalar; *src_chars consumed. */
static size_t dq_escape(const char *src, size_t avail, size_t *src_chars) {
  if (avail < 2) {
    *src_chars = 1;
    return 1;
  }
  size_t hex = src[1] == 'x' ? 2 : src[1] == 'u' ? 4 : src[1] == 'U' ? 8 : 0;
  if (hex == 0) {
    *src_chars = 2;
    switch (src[1]) {
      case 'N':
      case '_':
        return 2;
      case 'L':
      case 'P':
        return 3;
      default:
        return 1;
    }
  }
  unsigned long cp = 0;
  for (size_t k = 0; k < hex && 2 + k < avail; k++) {
    char c = src[2 + k];
    cp = cp * 16 + (unsigned long)(isdigit((unsigned char)c)
                                       ? c - '0'
                                       : (tolower((unsigned char)c) - 'a' + 10));
  }
  *src_chars = 2 + hex;
  return cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
}

static void expr_location(const loader_t *L, const ynode_t *n, size_t off, int *line, int *col) {
  *line = n->line;
  *col = n->col;
  if (off > n->len) off = n->len;
  if (n->style == YAML_PLAIN_SCALAR_STYLE && n->end_line == n->line) {
    *col = n->col + (int)utf8_chars(n->s, off);
  } else if ((n->style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
              n->style == YAML_DOUBLE_QUOTED_SCALAR_STYLE) &&
             n->end_line == n->line) {
    size_t i = source_offset(L, n->line, n->col) + 1, v = 0;
    int c = n->col + 1;
    while (v < off && i < L->len) {
      size_t src_chars = 1, produced;
      if (n->style == YAML_SINGLE_QUOTED_SCALAR_STYLE && L->data[i] == '\'') {
        src_chars = 2;
        produced = 1;
        i += 2;
      } else if (n->style == YAML_DOUBLE_QUOTED_SCALAR_STYLE && L->data[i] == '\\') {
        produced = dq_escape(L->data + i, L->len - i, &src_chars);
        i += src_chars;
      } else {
        produced = utf8_len((unsigned char)L->data[i]);
        i += produced;
      }
      v += produced;
      c += (int)src_chars;
    }
    *col = c;
  } else if (n->style == YAML_LITERAL_SCALAR_STYLE) {
    size_t k = 0, line_start = 0;
    for (size_t i = 0; i < off; i++)
      if (n->s[i] == '\n') {
        k++;
        line_start = i + 1;
      }
    int src_line = n->line + 1 + (int)k;
    size_t so = source_offset(L, src_line, 1), indent = 0, vindent = 0;
    while (so + indent < L->len && L->data[so + indent] == ' ') indent++;
    while (line_start + vindent < n->len && n->s[line_start + vindent] == ' ') vindent++;
    *line = src_line;
    *col = (int)(indent - (vindent <= indent ? vindent : indent)) + 1 +
           (int)utf8_chars(n->s + line_start, off - line_start);
  }
}

static int compile_expr(loader_t *L, const ynode_t *n, const tw__env_t *env, int want,
                        tw_expr_t **out) {
  tw__perr_t pe;
  int rc = tw__expr_compile(env, n->s, n->len, want, out, &pe);
  if (rc != 0) {
    int line, col;
    expr_location(L, n, pe.pos, &line, &col);
    return fail(L, rc, line, col, "%s", pe.msg);
  }
  return 0;
}

/* ---- sections ---- */

static const tw__list_t *find_list(const tw_ruleset_t *rs, const char *name) {
  for (size_t i = 0; i < rs->n_lists; i++)
    if (strcmp(rs->lists[i].name, name) == 0) return &rs->lists[i];
  return NULL;
}

static int find_agg(const tw_ruleset_t *rs, const char *name) {
  for (size_t i = 0; i < rs->n_aggs; i++)
    if (strcmp(rs->aggs[i].name, name) == 0) return (int)i;
  return -1;
}

/* A new list/aggregate name must be a valid name and must not shadow a field or another name. */
static int check_new_name(loader_t *L, const ynode_t *k, const char *what) {
  if (!valid_name(k->s))
    return fail_at(L, TW_EINVAL, k, "%s name '%.64s' must be lowercase letters, digits and '_'",
                   what, k->s);
  if (tw_schema_field_slot(L->schema, k->s, k->len) >= 0)
    return fail_at(L, TW_EINVAL, k, "%s '%s' has the name of a field", what, k->s);
  if (find_list(L->rs, k->s) != NULL || find_agg(L->rs, k->s) >= 0)
    return fail_at(L, TW_EINVAL, k, "%s '%s' is already defined", what, k->s);
  return 0;
}

static int cmp_str(const void *x, const void *y) {
  const tw_str_t *a = x, *b = y;
  if (a->len != b->len) return a->len < b->len ? -1 : 1;
  return memcmp(a->ptr, b->ptr, a->len);
}

static int load_lists(loader_t *L, const ynode_t *map) {
  if (map->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, map, "'lists' must map names to lists of words");
  tw_ruleset_t *rs = L->rs;
  rs->lists = tw__arena_alloc(&rs->arena, (map->n / 2 + 1) * sizeof *rs->lists);
  if (rs->lists == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next) {
    const ynode_t *v = k->next;
    int rc = check_new_name(L, k, "list");
    if (rc != 0) return rc;
    if (v->kind != YN_SEQ)
      return fail_at(L, TW_EINVAL, v, "list '%s' must be a sequence of words", k->s);
    tw__list_t *list = &rs->lists[rs->n_lists];
    list->name = keep(L, k->s);
    list->items = tw__arena_alloc(&rs->arena, (v->n ? v->n : 1) * sizeof *list->items);
    if (list->name == NULL || list->items == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    list->line = k->line;
    list->col = k->col;
    for (const ynode_t *it = v->child; it != NULL; it = it->next) {
      if (it->kind != YN_SCALAR) return fail_at(L, TW_EINVAL, it, "list items must be words");
      if (it->len == 0) return fail_at(L, TW_EINVAL, it, "empty item in list '%s'", k->s);
      char *s = tw__arena_strndup(&rs->arena, it->s, it->len);
      if (s == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
      list->items[list->n++] = tw_value_str(s, (uint32_t)it->len).u.s;
    }
    qsort(list->items, list->n, sizeof *list->items, cmp_str);
    rs->n_lists++;
  }
  return 0;
}

static int parse_types(loader_t *L, const ynode_t *n, uint32_t *out) {
  *out = 0;
  const ynode_t *first = n->kind == YN_SEQ ? n->child : n;
  if (n->kind == YN_MAP || (n->kind == YN_SEQ && n->n == 0))
    return fail_at(L, TW_EINVAL, n, "'on' must list event types, e.g. [payment]");
  for (const ynode_t *t = first; t != NULL; t = n->kind == YN_SEQ ? t->next : NULL) {
    if (t->kind != YN_SCALAR) return fail_at(L, TW_EINVAL, t, "an event type is a name");
    int id = tw_schema_type_id(L->schema, t->s, t->len);
    if (id < 0 || id >= 32) {
      const char *cands[TW_MAX_TYPES];
      for (uint32_t i = 0; i < L->schema->n_types && i < TW_MAX_TYPES; i++)
        cands[i] = L->schema->types[i].name;
      const char *s = suggest(t->s, t->len, cands, L->schema->n_types);
      if (s)
        return fail_at(L, TW_EINVAL, t, "unknown event type '%.64s' (did you mean '%s'?)", t->s, s);
      return fail_at(L, TW_EINVAL, t, "unknown event type '%.64s'", t->s);
    }
    *out |= 1u << id;
  }
  return 0;
}

/* A field name in `by` or `sum(...)`: must exist and be carried by the types. */
static int resolve_field(loader_t *L, const ynode_t *n, const char *name, size_t len, int col_off,
                         uint32_t types, int *slot) {
  const tw_schema_t *sc = L->schema;
  int s = tw_schema_field_slot(sc, name, len);
  if (s < 0) {
    const char *cands[TW_MAX_FIELDS];
    for (uint32_t i = 0; i < sc->n_fields && i < TW_MAX_FIELDS; i++) cands[i] = sc->fields[i].name;
    const char *sg = suggest(name, len, cands, sc->n_fields);
    int nl = len > 64 ? 64 : (int)len;
    if (sg)
      return fail(L, TW_EINVAL, n->line, n->col + col_off,
                  "unknown field '%.*s' (did you mean '%s'?)", nl, name, sg);
    return fail(L, TW_EINVAL, n->line, n->col + col_off, "unknown field '%.*s'", nl, name);
  }
  for (uint32_t t = 0; t < sc->n_types && t < 32 && s > TW_SLOT_REGION; t++)
    if ((types & (1u << t)) && !(sc->types[t].present_mask & ((uint64_t)1 << s)))
      return fail(L, TW_EINVAL, n->line, n->col + col_off,
                  "field '%s' does not occur in event type '%s'", sc->fields[s].name,
                  sc->types[t].name);
  *slot = s;
  return 0;
}

static int parse_by(loader_t *L, const ynode_t *n, uint32_t types, int *slot) {
  int rc = want_scalar(L, n, "'by'");
  if (rc == 0) rc = resolve_field(L, n, n->s, n->len, 0, types, slot);
  if (rc == 0 && tw__field_type(L->schema->fields[*slot].kind) != TW_V_STR)
    return fail_at(L, TW_ETYPE, n, "'by' must be a string field, and '%s' is %s", n->s,
                   tw__type_name(tw__field_type(L->schema->fields[*slot].kind)));
  return rc;
}

static int parse_duration_node(loader_t *L, const ynode_t *n, const char *what, int64_t *ms) {
  int rc = want_scalar(L, n, what);
  if (rc != 0) return rc;
  rc = tw__parse_duration(n->s, n->len, ms);
  if (rc == TW_EOVERFLOW) return fail_at(L, TW_EINVAL, n, "%s '%.64s' is too long", what, n->s);
  if (rc != 0)
    return fail_at(L, TW_EINVAL, n,
                   "%s '%.64s' is not a duration (write 500ms, 30s, 15m, 12h or 7d)", what, n->s);
  return 0;
}

static int parse_fn(loader_t *L, const ynode_t *n, tw_agg_def_t *a) {
  int rc = want_scalar(L, n, "'fn'");
  if (rc != 0) return rc;
  const char *s = n->s;
  size_t i = 0, len = n->len;
  while (i < len && isalpha((unsigned char)s[i])) i++;
  size_t name_len = i;
  while (i < len && s[i] == ' ') i++;
  if (i >= len || s[i] != '(' || s[len - 1] != ')')
    return fail_at(L, TW_EINVAL, n, "'fn' must be count() or sum(field), not '%.64s'", s);
  size_t a0 = i + 1, a1 = len - 1;
  while (a0 < a1 && s[a0] == ' ') a0++;
  while (a1 > a0 && s[a1 - 1] == ' ') a1--;
  if (name_len == 5 && memcmp(s, "count", 5) == 0) {
    if (a1 != a0) return fail_at(L, TW_EINVAL, n, "count() takes no argument");
    a->spec.fn = TW_AGG_COUNT;
    a->arg_slot = -1;
    a->arg_kind = TW_V_NULL;
    a->value_type = TW_V_INT;
    return 0;
  }
  if (name_len == 3 && memcmp(s, "sum", 3) == 0) {
    if (a1 == a0) return fail_at(L, TW_EINVAL, n, "sum() needs a field: sum(amount_fen)");
    rc = resolve_field(L, n, s + a0, a1 - a0, (int)utf8_chars(s, a0), a->on_types, &a->arg_slot);
    if (rc != 0) return rc;
    tw_field_kind_t k = L->schema->fields[a->arg_slot].kind;
    if (k != TW_FK_INT && k != TW_FK_FEN)
      return fail(L, TW_ETYPE, n->line, n->col + (int)utf8_chars(s, a0),
                  "sum() needs an integer or money field, and '%s' is %s",
                  L->schema->fields[a->arg_slot].name, tw__type_name(tw__field_type(k)));
    a->spec.fn = TW_AGG_SUM;
    a->arg_kind = (uint8_t)tw__field_type(k);
    a->value_type = a->arg_kind;
    return 0;
  }
  return fail_at(L, TW_EINVAL, n,
                 "unknown aggregate function '%.*s' (this version has count() and sum(field))",
                 (int)(name_len > 32 ? 32 : name_len), s);
}

/* fingerprint_agg: the state name of an aggregate is "name#" + 16 hex of a BLAKE2b of its
 * definition (on, by, fn, window, where, and the lists a filter could read), so state is reused
 * exactly when the definition is unchanged: a run or a reload with a changed filter, key or
 * function starts that aggregate afresh instead of mixing two definitions in one series. */
static int fingerprint_agg(loader_t *L, const ynode_t *k, const ynode_t *v, tw_agg_def_t *a) {
  crypto_generichash_state h;
  unsigned char out[8];
  char hex[17], *name;
  static const char *const parts[] = {"on", "by", "fn", "window", "where"};
  crypto_generichash_init(&h, NULL, 0, sizeof out);
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
    const ynode_t *n = get(v, parts[i]);
    crypto_generichash_update(&h, (const unsigned char *)parts[i], strlen(parts[i]) + 1);
    if (n == NULL) continue;
    if (n->kind == YN_SCALAR) {
      crypto_generichash_update(&h, (const unsigned char *)n->s, n->len + 1);
    } else {
      for (const ynode_t *c = n->child; c != NULL; c = c->next)
        if (c->kind == YN_SCALAR)
          crypto_generichash_update(&h, (const unsigned char *)c->s, c->len + 1);
    }
  }
  if (get(v, "where") != NULL) {
    for (size_t i = 0; i < L->rs->n_lists; i++) {
      const tw__list_t *l = &L->rs->lists[i];
      crypto_generichash_update(&h, (const unsigned char *)l->name, strlen(l->name) + 1);
      for (size_t j = 0; j < l->n; j++)
        crypto_generichash_update(&h, (const unsigned char *)l->items[j].ptr, l->items[j].len + 1);
    }
  }
  crypto_generichash_final(&h, out, sizeof out);
  sodium_bin2hex(hex, sizeof hex, out, sizeof out);
  size_t n = strlen(k->s);
  name = tw__arena_alloc(&L->rs->arena, n + 18);
  if (name == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  memcpy(name, k->s, n);
  name[n] = '#';
  memcpy(name + n + 1, hex, 17);
  a->spec.name = name;
  return 0;
}

static const char *const agg_keys[] = {"on", "where", "by", "fn", "window"};

static int load_aggregates(loader_t *L, const ynode_t *map) {
  if (map->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, map, "'aggregates' must map names to definitions");
  tw_ruleset_t *rs = L->rs;
  size_t cap = map->n / 2 + 1;
  rs->aggs = tw__arena_alloc(&rs->arena, cap * sizeof *rs->aggs);
  if (rs->aggs == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next) {
    const ynode_t *v = k->next;
    int rc = check_new_name(L, k, "aggregate");
    if (rc != 0) return rc;
    if (v->kind != YN_MAP)
      return fail_at(L, TW_EINVAL, v, "aggregate '%s' must be a mapping", k->s);
    if ((rc = check_keys(L, v, "an aggregate", agg_keys, 5)) != 0) return rc;
    static const char *const required[] = {"on", "by", "fn", "window"};
    for (size_t i = 0; i < 4; i++)
      if (get(v, required[i]) == NULL)
        return fail_at(L, TW_EINVAL, k, "aggregate '%s' is missing '%s'", k->s, required[i]);
    tw_agg_def_t *a = &rs->aggs[rs->n_aggs];
    a->name = keep(L, k->s);
    if (a->name == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    a->spec.name = a->name;
    a->line = k->line;
    if ((rc = parse_types(L, get(v, "on"), &a->on_types)) != 0) return rc;
    if ((rc = parse_by(L, get(v, "by"), a->on_types, &a->by_slot)) != 0) return rc;
    a->by_derive = TW_KEY_FIELD;
    a->by_name = L->schema->fields[a->by_slot].name;
    if ((rc = parse_fn(L, get(v, "fn"), a)) != 0) return rc;
    const ynode_t *w = get(v, "window");
    if ((rc = want_scalar(L, w, "'window'")) != 0) return rc;
    if (strcmp(w->s, "all") == 0)
      a->spec.window_ms = 0;
    else if ((rc = parse_duration_node(L, w, "window", &a->spec.window_ms)) != 0)
      return rc;
    else if (a->spec.window_ms <= 0)
      return fail_at(L, TW_EINVAL, w, "window must be longer than 0");
    const ynode_t *where = get(v, "where");
    if (where != NULL) {
      tw__env_t env = {rs, a->on_types, 0, 0};
      tw_expr_t *e;
      if ((rc = want_scalar(L, where, "'where'")) != 0) return rc;
      if ((rc = compile_expr(L, where, &env, TW_V_BOOL, &e)) != 0) return rc;
      a->where = e;
    }
    if ((rc = fingerprint_agg(L, k, v, a)) != 0) return rc;
    rs->n_aggs++;
  }
  return 0;
}

static const char *const rule_keys[] = {"name", "description", "source",   "on",      "every", "by",
                                        "when", "severity",    "cooldown", "message", "labels"};

static int load_rule(loader_t *L, const ynode_t *m, tw_rule_t *r) {
  tw_ruleset_t *rs = L->rs;
  int rc;
  if (m->kind != YN_MAP) return fail_at(L, TW_EINVAL, m, "a rule must be a mapping");
  if ((rc = check_keys(L, m, "a rule", rule_keys, sizeof rule_keys / sizeof rule_keys[0])) != 0)
    return rc;
  const ynode_t *name = get(m, "name");
  if (name == NULL) return fail_at(L, TW_EINVAL, m, "rule is missing 'name'");
  if ((rc = want_scalar(L, name, "'name'")) != 0) return rc;
  if (!valid_name(name->s))
    return fail_at(L, TW_EINVAL, name,
                   "rule name '%.64s' must be lowercase letters, digits and '_'", name->s);
  for (size_t i = 0; i < rs->n_rules; i++)
    if (strcmp(rs->rules[i].name, name->s) == 0)
      return fail_at(L, TW_EINVAL, name, "duplicate rule name '%s' (first at line %d)", name->s,
                     rs->rules[i].line);
  static const char *const required[] = {"by", "when", "severity"};
  for (size_t i = 0; i < 3; i++)
    if (get(m, required[i]) == NULL)
      return fail_at(L, TW_EINVAL, m, "rule '%s' is missing '%s'", name->s, required[i]);
  if ((get(m, "on") == NULL) == (get(m, "every") == NULL))
    return fail_at(L, TW_EINVAL, get(m, "every") ? get(m, "every") : m,
                   "rule '%s' needs exactly one of 'on' (event types that trigger it) or 'every' "
                   "(a sweep over its keys at that interval of event time)",
                   name->s);
  r->name = keep(L, name->s);
  r->line = m->line;
  if (r->name == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  static const char *const texts[] = {"description", "source"};
  for (size_t i = 0; i < 2; i++) {
    const ynode_t *t = get(m, texts[i]);
    const char *s = "";
    if (t != NULL) {
      if ((rc = want_scalar(L, t, texts[i])) != 0) return rc;
      if ((s = keep(L, t->s)) == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    }
    if (i == 0)
      r->description = s;
    else
      r->source = s;
  }
  if (get(m, "every") != NULL) {
    const ynode_t *ev = get(m, "every");
    if ((rc = parse_duration_node(L, ev, "every", &r->every_ms)) != 0) return rc;
    if (r->every_ms < 1000) return fail_at(L, TW_EINVAL, ev, "'every' must be at least 1s");
    r->on_types = 0;
  } else if ((rc = parse_types(L, get(m, "on"), &r->on_types)) != 0) {
    return rc;
  }
  if ((rc = parse_by(L, get(m, "by"), r->on_types, &r->by_slot)) != 0) return rc;
  r->by_derive = TW_KEY_FIELD;
  r->by_name = L->schema->fields[r->by_slot].name;
  if (r->every_ms > 0 && r->by_slot != TW_SLOT_INSTITUTION_ID)
    return fail_at(L, TW_EINVAL, get(m, "by"),
                   "a rule with 'every' sweeps institutions: 'by' must be institution_id");
  const ynode_t *sev = get(m, "severity");
  if ((rc = want_scalar(L, sev, "'severity'")) != 0) return rc;
  int found = 0;
  for (int s = TW_SEV_INFO; s <= TW_SEV_CRITICAL; s++)
    if (strcmp(sev->s, tw_severity_name((tw_severity_t)s)) == 0) {
      r->severity = (tw_severity_t)s;
      found = 1;
    }
  if (!found) {
    static const char *const sevs[] = {"info", "low", "medium", "high", "critical"};
    const char *sg = suggest(sev->s, sev->len, sevs, 5);
    if (sg)
      return fail_at(L, TW_EINVAL, sev, "unknown severity '%.64s' (did you mean '%s'?)", sev->s,
                     sg);
    return fail_at(L, TW_EINVAL, sev,
                   "unknown severity '%.64s' (info, low, medium, high or critical)", sev->s);
  }
  const ynode_t *cd = get(m, "cooldown");
  if (cd != NULL && (rc = parse_duration_node(L, cd, "cooldown", &r->cooldown_ms)) != 0) return rc;
  tw__env_t env = {rs, r->on_types, 1, r->every_ms > 0};
  const ynode_t *when = get(m, "when");
  tw_expr_t *e;
  if ((rc = want_scalar(L, when, "'when'")) != 0) return rc;
  if ((rc = compile_expr(L, when, &env, TW_V_BOOL, &e)) != 0) return rc;
  r->when = e;
  const ynode_t *msg = get(m, "message");
  if (msg != NULL) {
    tw__perr_t pe;
    if ((rc = want_scalar(L, msg, "'message'")) != 0) return rc;
    if ((rc = tw__template_compile(&env, msg->s, msg->len, &r->message, &pe)) != 0) {
      int line, col;
      expr_location(L, msg, pe.pos, &line, &col);
      return fail(L, rc, line, col, "%s", pe.msg);
    }
  }
  const ynode_t *labels = get(m, "labels");
  if (labels != NULL) {
    if (labels->kind != YN_MAP)
      return fail_at(L, TW_EINVAL, labels, "'labels' must map names to values");
    tw_label_t *ls = tw__arena_alloc(&rs->arena, (labels->n / 2 + 1) * sizeof *ls);
    if (ls == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    for (const ynode_t *k = labels->child; k != NULL; k = k->next->next) {
      if (k->kind != YN_SCALAR || k->next->kind != YN_SCALAR)
        return fail_at(L, TW_EINVAL, k, "labels are names with single values");
      for (size_t i = 0; i < r->n_labels; i++)
        if (strcmp(ls[i].key, k->s) == 0)
          return fail_at(L, TW_EINVAL, k, "duplicate label '%s'", k->s);
      ls[r->n_labels].key = keep(L, k->s);
      ls[r->n_labels].value = keep(L, k->next->s);
      if (ls[r->n_labels].key == NULL || ls[r->n_labels].value == NULL)
        return fail(L, TW_ENOMEM, 0, 0, "out of memory");
      r->n_labels++;
    }
    r->labels = ls;
  }
  return 0;
}

static int load_rules_section(loader_t *L, const ynode_t *seq) {
  if (seq->kind != YN_SEQ) return fail_at(L, TW_EINVAL, seq, "'rules' must be a sequence of rules");
  tw_ruleset_t *rs = L->rs;
  rs->rules = tw__arena_alloc(&rs->arena, (seq->n + 1) * sizeof *rs->rules);
  if (rs->rules == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  for (const ynode_t *m = seq->child; m != NULL; m = m->next) {
    int rc = load_rule(L, m, &rs->rules[rs->n_rules]);
    if (rc != 0) return rc;
    rs->n_rules++;
  }
  return 0;
}

/* A top-level section; an empty one (`rules:` with nothing after it) is the same as none. */
static const ynode_t *section(const ynode_t *root, const char *key) {
  const ynode_t *n = get(root, key);
  if (n != NULL && n->kind == YN_SCALAR && n->len == 0 && n->style == YAML_PLAIN_SCALAR_STYLE)
    return NULL;
  return n;
}

static const char *const top_keys[] = {"version", "lists", "aggregates", "rules", "tests"};

static int load_tree(loader_t *L, const ynode_t *root) {
  int rc;
  if (root->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, root, "a rule file is a mapping with 'version: 1'");
  if ((rc = check_keys(L, root, "the rule file", top_keys, 5)) != 0) return rc;
  const ynode_t *v = get(root, "version");
  if (v == NULL) return fail_at(L, TW_EINVAL, root, "missing 'version: 1'");
  if (v->kind != YN_SCALAR || strcmp(v->s, "1") != 0)
    return fail_at(L, TW_EINVAL, v, "unsupported version '%.16s': this tutorwatch reads version 1",
                   v->kind == YN_SCALAR ? v->s : "?");
  const ynode_t *n;
  if ((n = section(root, "lists")) != NULL && (rc = load_lists(L, n)) != 0) return rc;
  if ((n = section(root, "aggregates")) != NULL && (rc = load_aggregates(L, n)) != 0) return rc;
  if ((n = section(root, "rules")) != NULL && (rc = load_rules_section(L, n)) != 0) return rc;
  return 0;
}

int tw_rules_load_buffer(const char *name, const char *data, size_t len, const tw_schema_t *schema,
                         tw_ruleset_t **out, tw_rule_error_t *err) {
  tw_rule_error_t dummy;
  loader_t L;
  ynode_t *root = NULL;
  int rc;
  if (err == NULL) err = &dummy;
  memset(err, 0, sizeof *err);
  snprintf(err->file, sizeof err->file, "%s", name ? name : "<rules>");
  memset(&L, 0, sizeof L);
  L.name = err->file;
  L.data = data;
  L.len = len;
  L.schema = schema;
  L.err = err;
  *out = NULL;
  if (len > TW_RULES_MAX_FILE_BYTES) {
    rc = fail(&L, TW_ETOOBIG, 0, 0, "rule file is larger than %u bytes", TW_RULES_MAX_FILE_BYTES);
    goto fail;
  }
  if (data == NULL || schema == NULL) {
    rc = fail(&L, TW_EINVAL, 0, 0, "no rule text or no schema");
    goto fail;
  }
  L.rs = calloc(1, sizeof *L.rs);
  if (L.rs == NULL) {
    rc = fail(&L, TW_ENOMEM, 0, 0, "out of memory");
    goto fail;
  }
  L.rs->schema = schema;
  if (sodium_init() < 0) {
    rc = fail(&L, TW_ECRYPTO, 0, 0, "libsodium failed to initialise");
    goto fail;
  }
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, (const unsigned char *)data, len);
  sodium_bin2hex(L.rs->hash, sizeof L.rs->hash, digest, sizeof digest);
  if ((rc = parse_yaml(&L, &root)) != 0) goto fail;
  if ((rc = load_tree(&L, root)) != 0) goto fail;
  tw__arena_free(&L.tmp);
  *out = L.rs;
  return 0;
fail:
  tw__arena_free(&L.tmp);
  tw_rules_free(L.rs);
  return rc;
}

int tw_rules_load(const char *path, const tw_schema_t *schema, tw_ruleset_t **out,
                  tw_rule_error_t *err) {
  tw_rule_error_t dummy;
  char *buf = NULL;
  int rc;
  if (err == NULL) err = &dummy;
  memset(err, 0, sizeof *err);
  snprintf(err->file, sizeof err->file, "%s", path);
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    snprintf(err->message, sizeof err->message, "cannot open: %s", strerror(errno));
    return TW_ENOENT;
  }
  struct stat st;
  if (fstat(fileno(f), &st) != 0) {
    snprintf(err->message, sizeof err->message, "cannot stat: %s", strerror(errno));
    rc = TW_EIO;
    goto fail;
  }
  if (st.st_size > (off_t)TW_RULES_MAX_FILE_BYTES) {
    snprintf(err->message, sizeof err->message, "rule file is larger than %u bytes",
             TW_RULES_MAX_FILE_BYTES);
    rc = TW_ETOOBIG;
    goto fail;
  }
  /* read at most one byte past the bound: the file may have grown since fstat */
  buf = malloc(TW_RULES_MAX_FILE_BYTES + 1u);
  if (buf == NULL) {
    snprintf(err->message, sizeof err->message, "out of memory");
    rc = TW_ENOMEM;
    goto fail;
  }
  size_t n = fread(buf, 1, TW_RULES_MAX_FILE_BYTES + 1u, f);
  if (ferror(f)) {
    snprintf(err->message, sizeof err->message, "read error");
    rc = TW_EIO;
    goto fail;
  }
  rc = tw_rules_load_buffer(path, buf, n, schema, out, err);
fail:
  free(buf);
  fclose(f);
  return rc;
}

void tw_rules_free(tw_ruleset_t *rs) {
  if (rs == NULL) return;
  tw__regex_release(rs);
  tw__arena_free(&rs->arena);
  free(rs);
}

size_t tw_rules_n_aggregates(const tw_ruleset_t *rs) {
  return rs->n_aggs;
}

const tw_agg_def_t *tw_rules_aggregate(const tw_ruleset_t *rs, size_t i) {
  return i < rs->n_aggs ? &rs->aggs[i] : NULL;
}

size_t tw_rules_n_rules(const tw_ruleset_t *rs) {
  return rs->n_rules;
}

const tw_rule_t *tw_rules_rule(const tw_ruleset_t *rs, size_t i) {
  return i < rs->n_rules ? &rs->rules[i] : NULL;
}

const char *tw_rules_hash(const tw_ruleset_t *rs) {
  return rs->hash;
}

/* TEMPORARY (lead's branch only, replaced by the language branch): no options yet. */
int tw_rules_load_ex(const char *path, const char *data, size_t len, const tw_schema_t *schema,
                     const tw_rules_load_opts_t *opts, tw_ruleset_t **out, tw_rule_error_t *err) {
  if (opts != NULL && opts->n_set > 0) return TW_EINVAL;
  if (data != NULL) return tw_rules_load_buffer(path, data, len, schema, out, err);
  return tw_rules_load(path, schema, out, err);
}
