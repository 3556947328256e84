/*
 * load.c: reading a rule file (YAML, libyaml) into a compiled, immutable ruleset.
 *
 * The file is parsed event by event into a small tree of our own (so every node keeps its line
 * and column), refusing anchors and aliases outright (a "billion laughs" file is refused at its
 * first anchor, before any expansion), nesting deeper than TW__YAML_MAX_DEPTH and files over
 * TW_RULES_MAX_FILE_BYTES. Then, in a fixed order whatever the key order in the file: params
 * (and --set overrides), lists, macros, aggregates (their `where` may use fields, params, lists
 * and macros), each macro checked on its own, rules (everything, aggregates of their own key).
 *
 * Diagnostics: without opts.diag the first error ends the load and is returned in *err. With
 * it, an error in one param, list, macro, aggregate or rule is reported and loading goes on with
 * the next one; lint warnings (unused names, risky regexes, rules on alerts) are added, and
 * every diagnostic is handed to opts.diag in file order, each once, when loading ends. An error
 * that only follows from another (a use of a broken macro or aggregate) is not reported again.
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
#include "tw_event.h"

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

#define TW__MAX_DIAGS 1000 /* diagnostics kept per file; more are counted, not kept */
#define TW__MAX_SUGGESTING_ERRORS 100 /* errors that get a 'did you mean' */

typedef struct diag {
  tw_rule_error_t e;
  int warning;
  size_t seq; /* report order, to keep the sort stable */
} diag_t;

typedef struct loader {
  const char *name;
  const char *data;
  size_t len;
  const tw_schema_t *schema;
  tw_ruleset_t *rs;
  tw_rule_error_t *err;
  tw__arena_t tmp; /* the YAML tree; freed after loading */
  const tw_rules_load_opts_t *opts;
  int n_errors;   /* errors reported (the first is in *err) */
  int first_code; /* its code */
  diag_t *diags;  /* with opts->diag: every error and warning, flushed sorted at the end */
  size_t n_diags, cap_diags;
  const struct ynode *cur_node;  /* the expression being compiled (warning locations) */
  const struct ynode **agg_keys; /* per aggregate: its name's node (warning locations) */
} loader_t;

static int diag_mode(const loader_t *L) {
  return L->opts != NULL && L->opts->diag != NULL;
}

static void keep_diag(loader_t *L, const tw_rule_error_t *e, int warning) {
  if (!diag_mode(L) || L->n_diags >= TW__MAX_DIAGS) return;
  if (L->n_diags == L->cap_diags) {
    size_t cap = L->cap_diags ? 2 * L->cap_diags : 16;
    diag_t *d = realloc(L->diags, cap * sizeof *d);
    if (d == NULL) return; /* diagnostics are best effort; the first error is in *err */
    L->diags = d;
    L->cap_diags = cap;
  }
  L->diags[L->n_diags].e = *e;
  L->diags[L->n_diags].warning = warning;
  L->diags[L->n_diags].seq = L->n_diags;
  L->n_diags++;
}

static int vreport(loader_t *L, int code, int warning, int line, int col, const char *fmt,
                   va_list ap) {
  tw_rule_error_t d;
  memset(&d, 0, sizeof d);
  snprintf(d.file, sizeof d.file, "%s", L->name);
  d.line = line;
  d.col = col;
  vsnprintf(d.message, sizeof d.message, fmt, ap);
  if (code == TW_ENOMEM && L->rs != NULL && L->rs->arena.over) {
    code = TW_ETOOBIG; /* the bound on the compiled form, not the machine, ran out */
    snprintf(d.message, sizeof d.message,
             "rule file too large: its compiled form (macros expanded at each use, with their "
             "strings) exceeds %zu MiB",
             TW__MAX_RULESET_BYTES >> 20);
  }
  if (!warning) {
    if (L->n_errors == 0) {
      *L->err = d;
      L->first_code = code;
    }
    L->n_errors++;
  }
  keep_diag(L, &d, warning);
  return code;
}

static int fail(loader_t *L, int code, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static int fail(loader_t *L, int code, int line, int col, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  code = vreport(L, code, 0, line, col, fmt, ap); /* TW_ETOOBIG for the ruleset's memory bound */
  va_end(ap);
  return code;
}

static int fail_at(loader_t *L, int code, const struct ynode *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void warn(loader_t *L, int line, int col, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void warn(loader_t *L, int line, int col, const char *fmt, ...) {
  va_list ap;
  if (!diag_mode(L)) return;
  va_start(ap, fmt);
  vreport(L, 0, 1, line, col, fmt, ap);
  va_end(ap);
}

static int fail_at(loader_t *L, int code, const ynode_t *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  code = vreport(L, code, 0, n ? n->line : 0, n ? n->col : 0, fmt, ap);
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
        if (memchr(ev.data.scalar.value, '\0', ev.data.scalar.length) != NULL) {
          rc = fail(L, TW_EPARSE, (int)ev.start_mark.line + 1, (int)ev.start_mark.column + 1,
                    "a NUL character (\\0) in a scalar: names, expressions and texts may not "
                    "hold one");
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

/* suggest: the closest candidate by edit distance, or NULL. After TW__MAX_SUGGESTING_ERRORS
 * errors no more suggestions are made, so a file of thousands of misspelt names costs linear
 * time, not names x errors. */
static const char *suggest(const loader_t *L, const char *name, size_t len,
                           const char *const *cands, size_t n) {
  if (L->n_errors >= TW__MAX_SUGGESTING_ERRORS) return NULL;
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
      const char *s = suggest(L, k->s, k->len, keys, n_keys);
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

/* Read a rule file whole into *buf (malloc'd, owned by the caller); at most one byte past
 * TW_RULES_MAX_FILE_BYTES, so an oversized file is refused without reading all of it. */
static int read_file(const char *path, char **buf, size_t *len, tw_rule_error_t *err) {
  int rc = 0;
  *buf = NULL;
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
  *buf = malloc(TW_RULES_MAX_FILE_BYTES + 1u);
  if (*buf == NULL) {
    snprintf(err->message, sizeof err->message, "out of memory");
    rc = TW_ENOMEM;
    goto fail;
  }
  *len = fread(*buf, 1, TW_RULES_MAX_FILE_BYTES + 1u, f);
  if (ferror(f)) {
    snprintf(err->message, sizeof err->message, "read error");
    rc = TW_EIO;
    free(*buf);
    *buf = NULL;
  }
fail:
  fclose(f);
  return rc;
}

/* Where an error or warning of an expression compiled from node n lies: in n, or in the source
 * of the macro it names. */
static void perr_location(const loader_t *L, const ynode_t *n, const tw__perr_t *pe, int *line,
                          int *col) {
  const ynode_t *at = n;
  if (pe->macro > 0 && (size_t)pe->macro <= L->rs->n_macros) at = L->rs->macros[pe->macro - 1].node;
  expr_location(L, at, pe->pos, line, col);
}

static void expr_warn(void *ud, const tw__perr_t *w) {
  loader_t *L = ud;
  int line, col;
  if (L->cur_node == NULL) return;
  perr_location(L, L->cur_node, w, &line, &col);
  warn(L, line, col, "%s", w->msg);
}

static void env_init(loader_t *L, tw__env_t *env, uint32_t on_types, int allow_aggs) {
  memset(env, 0, sizeof *env);
  env->rs = L->rs;
  env->on_types = on_types;
  env->allow_aggs = allow_aggs;
  if (diag_mode(L)) {
    env->warn = expr_warn;
    env->warn_ud = L;
  }
}

/* A compile error: reported at its place, unless it follows from one already reported. */
static int report_perr(loader_t *L, const ynode_t *n, int rc, const tw__perr_t *pe) {
  int line, col;
  if (pe->quiet) return rc;
  perr_location(L, n, pe, &line, &col);
  return fail(L, rc, line, col, "%s", pe->msg);
}

static int compile_expr(loader_t *L, const ynode_t *n, const tw__env_t *env, int want,
                        tw_expr_t **out) {
  tw__perr_t pe;
  L->cur_node = n;
  int rc = tw__expr_compile(env, n->s, n->len, want, out, &pe);
  L->cur_node = NULL;
  if (rc != 0) return report_perr(L, n, rc, &pe);
  return 0;
}

/* ---- sections ---- */

/* A name already taken by a list, aggregate, param or macro. */
static int name_taken(const tw_ruleset_t *rs, const char *name) {
  int kind;
  return tw__names_find(rs, name, strlen(name), TW__NAMES_SHARED, &kind) >= 0;
}

static int index_name(loader_t *L, int kind, size_t index) {
  int rc = tw__names_add(L->rs, kind, index);
  if (rc != 0) return fail(L, rc, 0, 0, rc == TW_ENOMEM ? "out of memory" : "too many names");
  return 0;
}

static const char *const reserved_words[] = {"and",  "or",    "not",      "in",         "matches",
                                             "true", "false", "contains", "startswith", "any"};

/* A new param/list/macro/aggregate name: valid, not a keyword, a field or another name. */
static int check_new_name(loader_t *L, const ynode_t *k, const char *what) {
  if (!valid_name(k->s))
    return fail_at(L, TW_EINVAL, k, "%s name '%.64s' must be lowercase letters, digits and '_'",
                   what, k->s);
  for (size_t i = 0; i < sizeof reserved_words / sizeof reserved_words[0]; i++)
    if (strcmp(k->s, reserved_words[i]) == 0)
      return fail_at(L, TW_EINVAL, k, "%s name '%s' is a keyword of the language", what, k->s);
  if (tw_schema_field_slot(L->schema, k->s, k->len) >= 0)
    return fail_at(L, TW_EINVAL, k, "%s '%s' has the name of a field", what, k->s);
  if (name_taken(L->rs, k->s))
    return fail_at(L, TW_EINVAL, k, "%s '%s' is already defined", what, k->s);
  return 0;
}

static int cmp_str(const void *x, const void *y) {
  const tw_str_t *a = x, *b = y;
  if (a->len != b->len) return a->len < b->len ? -1 : 1;
  return memcmp(a->ptr, b->ptr, a->len);
}

/* In diagnostics mode an error in one item of a section is reported and the next item is
 * loaded; otherwise the first error ends the load. */
#define NEXT_OR_RETURN(L, rc)       \
  do {                              \
    if (!diag_mode(L)) return (rc); \
  } while (0)

static int load_list(loader_t *L, const ynode_t *k) {
  tw_ruleset_t *rs = L->rs;
  const ynode_t *v = k->next;
  int rc = check_new_name(L, k, "list");
  if (rc != 0) return rc;
  tw__list_t *list = &rs->lists[rs->n_lists];
  list->name = keep(L, k->s);
  list->items = tw__arena_alloc(&rs->arena, (v->n ? v->n : 1) * sizeof *list->items);
  if (list->name == NULL || list->items == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  list->line = k->line;
  list->col = k->col;
  if ((rc = index_name(L, TW__NAME_LIST, rs->n_lists)) != 0) return rc;
  rs->n_lists++; /* known by name even if broken: no "unknown list" at its uses */
  if (v->kind != YN_SEQ)
    return fail_at(L, TW_EINVAL, v, "list '%s' must be a sequence of words", k->s);
  for (const ynode_t *it = v->child; it != NULL; it = it->next) {
    if (it->kind != YN_SCALAR) return fail_at(L, TW_EINVAL, it, "list items must be words");
    if (it->len == 0) return fail_at(L, TW_EINVAL, it, "empty item in list '%s'", k->s);
    char *s = tw__arena_strndup(&rs->arena, it->s, it->len);
    if (s == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    list->items[list->n++] = tw_value_str(s, (uint32_t)it->len).u.s;
  }
  qsort(list->items, list->n, sizeof *list->items, cmp_str);
  return 0;
}

static int load_lists(loader_t *L, const ynode_t *map) {
  if (map->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, map, "'lists' must map names to lists of words");
  tw_ruleset_t *rs = L->rs;
  rs->lists = tw__arena_alloc(&rs->arena, (map->n / 2 + 1) * sizeof *rs->lists);
  if (rs->lists == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next) {
    int rc = load_list(L, k);
    if (rc != 0) NEXT_OR_RETURN(L, rc);
  }
  return 0;
}

/* ---- params ---- */

/* The value of a param written in the file: a quoted YAML scalar is a string; otherwise one
 * literal of the expression language (5000yuan, 14d, 3, 0.3, "text", true). */
static int param_value(loader_t *L, const ynode_t *v, tw_value_t *out) {
  if (v->style == YAML_SINGLE_QUOTED_SCALAR_STYLE || v->style == YAML_DOUBLE_QUOTED_SCALAR_STYLE) {
    const char *s = tw__arena_strndup(&L->rs->arena, v->s, v->len);
    if (s == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    *out = tw_value_str(s, (uint32_t)v->len);
    return 0;
  }
  tw__perr_t pe;
  int rc = tw__parse_literal(&L->rs->arena, v->s, v->len, out, &pe);
  if (rc != 0) return report_perr(L, v, rc, &pe);
  return 0;
}

static int load_params(loader_t *L, const ynode_t *map) {
  if (map->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, map, "'params' must map names to literals (5000yuan, 14d, 3)");
  tw_ruleset_t *rs = L->rs;
  rs->params = tw__arena_alloc(&rs->arena, (map->n / 2 + 1) * sizeof *rs->params);
  if (rs->params == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next) {
    const ynode_t *v = k->next;
    int rc = check_new_name(L, k, "param");
    if (rc != 0) {
      NEXT_OR_RETURN(L, rc);
      continue;
    }
    tw__param_t *pm = &rs->params[rs->n_params];
    if ((pm->name = keep(L, k->s)) == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    pm->line = k->line;
    pm->col = k->col;
    if ((rc = index_name(L, TW__NAME_PARAM, rs->n_params)) != 0) return rc;
    rs->n_params++; /* known by name even if broken: its uses fail quietly */
    if (v->kind != YN_SCALAR)
      rc = fail_at(L, TW_EINVAL, v, "param '%s' must be one literal (5000yuan, 14d, 3, \"text\")",
                   k->s);
    else
      rc = param_value(L, v, &pm->value);
    if (rc != 0) {
      pm->bad = 1;
      NEXT_OR_RETURN(L, rc);
    }
  }
  return 0;
}

/* --set name=value: replace a param's value with one of the same type. */
static int apply_set(loader_t *L, const char *set) {
  tw_ruleset_t *rs = L->rs;
  const char *eq = strchr(set, '=');
  if (eq == NULL || eq == set)
    return fail(L, TW_EINVAL, 0, 0, "--set '%.64s': write name=value", set);
  size_t nl = (size_t)(eq - set);
  int pi = -1;
  for (size_t i = 0; i < rs->n_params; i++)
    if (strlen(rs->params[i].name) == nl && memcmp(rs->params[i].name, set, nl) == 0) pi = (int)i;
  if (pi < 0) {
    const char *cands[64];
    size_t nc = 0;
    for (size_t i = 0; i < rs->n_params && nc < 64; i++) cands[nc++] = rs->params[i].name;
    const char *sg = suggest(L, set, nl, cands, nc);
    if (sg)
      return fail(L, TW_EINVAL, 0, 0, "--set: unknown param '%.*s' (did you mean '%s'?)",
                  (int)(nl > 64 ? 64 : nl), set, sg);
    return fail(L, TW_EINVAL, 0, 0, "--set: unknown param '%.*s'", (int)(nl > 64 ? 64 : nl), set);
  }
  tw__param_t *pm = &rs->params[pi];
  if (pm->bad) return 0; /* its own error is reported */
  const char *val = eq + 1;
  size_t vl = strlen(val);
  tw_value_t v;
  tw__perr_t pe;
  int lit = tw__parse_literal(&rs->arena, val, vl, &v, &pe);
  if (lit != 0 && pm->value.kind != TW_V_STR)
    return fail(L, TW_EINVAL, 0, 0, "--set %s=%.64s: %s", pm->name, val, pe.msg);
  if (pm->value.kind == TW_V_STR && (lit != 0 || v.kind != TW_V_STR)) {
    /* a string param takes the text as it is (440106, true, 7d) unless it is a quoted literal */
    const char *s = tw__arena_strndup(&rs->arena, val, vl);
    if (s == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    v = tw_value_str(s, (uint32_t)vl);
  }
  if (v.kind == TW_V_INT && pm->value.kind == TW_V_DEC) v = tw_value_dec((double)v.u.i);
  if (v.kind != pm->value.kind)
    return fail(L, TW_ETYPE, 0, 0, "--set %s=%.64s: param '%s' is %s, and the value is %s",
                pm->name, val, pm->name, tw__type_name(pm->value.kind), tw__type_name(v.kind));
  pm->value = v;
  return 0;
}

/* ---- macros ---- */

static int load_macros(loader_t *L, const ynode_t *map) {
  if (map->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, map, "'macros' must map names to expressions");
  tw_ruleset_t *rs = L->rs;
  rs->macros = tw__arena_alloc(&rs->arena, (map->n / 2 + 1) * sizeof *rs->macros);
  if (rs->macros == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next) {
    const ynode_t *v = k->next;
    int rc = check_new_name(L, k, "macro");
    if (rc == 0 && v->kind != YN_SCALAR)
      rc = fail_at(L, TW_EINVAL, v, "macro '%s' must be one expression", k->s);
    tw__macro_t *m = &rs->macros[rs->n_macros];
    if (rc == 0 && ((m->name = keep(L, k->s)) == NULL ||
                    (m->src = tw__arena_strndup(&rs->arena, v->s, v->len)) == NULL))
      rc = fail(L, TW_ENOMEM, 0, 0, "out of memory");
    if (rc != 0) {
      NEXT_OR_RETURN(L, rc);
      continue;
    }
    m->len = v->len;
    m->node = v;
    m->line = k->line;
    m->col = k->col;
    if ((rc = index_name(L, TW__NAME_MACRO, rs->n_macros)) != 0) return rc;
    rs->n_macros++;
  }
  return 0;
}

/* Compile each macro once on its own (any event type, aggregates allowed), so errors in it and
 * cycles are reported once, at their place, even when no rule uses it. A broken macro is marked:
 * its uses then fail without a second report. */
static int check_macros(loader_t *L) {
  tw_ruleset_t *rs = L->rs;
  int first = 0;
  for (size_t i = 0; i < rs->n_macros; i++) {
    tw__macro_t *m = &rs->macros[i];
    tw__env_t env;
    env_init(L, &env, 0, 1);
    env.precheck = 1;
    tw_expr_t *e;
    tw__perr_t pe;
    L->cur_node = m->node;
    int rc = tw__expr_compile(&env, m->name, strlen(m->name), -1, &e, &pe);
    L->cur_node = NULL;
    if (rc != 0) {
      m->bad = 1;
      rc = report_perr(L, m->node, rc, &pe);
      if (first == 0) first = rc;
      NEXT_OR_RETURN(L, rc);
    }
  }
  return first;
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
      const char *s = suggest(L, t->s, t->len, cands, L->schema->n_types);
      if (s)
        return fail_at(L, TW_EINVAL, t, "unknown event type '%.64s' (did you mean '%s'?)", t->s, s);
      return fail_at(L, TW_EINVAL, t, "unknown event type '%.64s'", t->s);
    }
    *out |= 1u << id;
  }
  return 0;
}

/* A field name in `by` or `fn(...)`: must exist and be carried by the types. */
static int resolve_field(loader_t *L, const ynode_t *n, const char *name, size_t len, int col_off,
                         uint32_t types, int *slot) {
  const tw_schema_t *sc = L->schema;
  int s = tw_schema_field_slot(sc, name, len);
  if (s < 0) {
    const char *cands[TW_MAX_FIELDS + 2];
    uint32_t nc = 0;
    for (uint32_t i = 0; i < sc->n_fields && i < TW_MAX_FIELDS; i++)
      cands[nc++] = sc->fields[i].name;
    const char *sg = suggest(L, name, len, cands, nc);
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

/* `by`: a string field, or `city` / `province`, derived from the region code. */
static int parse_by(loader_t *L, const ynode_t *n, uint32_t types, int *slot,
                    tw_key_derive_t *derive, const char **name) {
  int rc = want_scalar(L, n, "'by'");
  if (rc != 0) return rc;
  *derive = TW_KEY_FIELD;
  if (tw_schema_field_slot(L->schema, n->s, n->len) < 0 &&
      (strcmp(n->s, "city") == 0 || strcmp(n->s, "province") == 0)) {
    *slot = TW_SLOT_REGION;
    *derive = n->s[0] == 'c' ? TW_KEY_CITY : TW_KEY_PROVINCE;
    *name = n->s[0] == 'c' ? "city" : "province";
    return 0;
  }
  if (tw_schema_field_slot(L->schema, n->s, n->len) < 0) {
    const tw_schema_t *sc = L->schema;
    const char *cands[TW_MAX_FIELDS + 2];
    uint32_t nc = 0;
    for (uint32_t i = 0; i < sc->n_fields && i < TW_MAX_FIELDS; i++)
      cands[nc++] = sc->fields[i].name;
    cands[nc++] = "city";
    cands[nc++] = "province";
    const char *sg = suggest(L, n->s, n->len, cands, nc);
    if (sg) return fail_at(L, TW_EINVAL, n, "unknown field '%.64s' (did you mean '%s'?)", n->s, sg);
    return fail_at(L, TW_EINVAL, n, "unknown field '%.64s'", n->s);
  }
  rc = resolve_field(L, n, n->s, n->len, 0, types, slot);
  if (rc == 0 && tw__field_type(L->schema->fields[*slot].kind) != TW_V_STR)
    return fail_at(L, TW_ETYPE, n, "'by' must be a string field, and '%s' is %s", n->s,
                   tw__type_name(tw__field_type(L->schema->fields[*slot].kind)));
  if (rc == 0) { /* a key is at most TW_STATE_KEY_MAX bytes: a longer value could not be kept */
    uint32_t longest = 0;
    for (uint32_t t = 0; t < L->schema->n_types && t < 32; t++)
      if ((types & (1u << t)) && (L->schema->types[t].present_mask & ((uint64_t)1 << *slot)) &&
          L->schema->types[t].spec[*slot].max_len_bytes > longest)
        longest = L->schema->types[t].spec[*slot].max_len_bytes;
    if (longest > TW_STATE_KEY_MAX)
      return fail_at(L, TW_EINVAL, n,
                     "'%s' may be %u bytes long, and a key at most %d: it cannot be a 'by' key",
                     n->s, longest, TW_STATE_KEY_MAX);
  }
  if (rc == 0) *name = L->schema->fields[*slot].name;
  return rc;
}

static int parse_duration_node(loader_t *L, const ynode_t *n, const char *what, int64_t *ms) {
  int rc = want_scalar(L, n, what);
  if (rc != 0) return rc;
  rc = tw_duration_parse(n->s, n->len, ms);
  if (rc == 0 && *ms > TW__MAX_DURATION_MS) rc = TW_EOVERFLOW; /* the engine's time bound */
  if (rc == TW_EOVERFLOW)
    return fail_at(L, TW_EINVAL, n, "%s '%.64s' is too long (at most 26687997791d, 2^61 ms)",
                   what, n->s);
  if (rc != 0)
    return fail_at(L, TW_EINVAL, n,
                   "%s '%.64s' is not a duration (write 500ms, 30s, 15m, 12h or 7d)", what, n->s);
  return 0;
}

/* The aggregate functions: what argument each takes and the type of its value. */
enum { ARG_NONE, ARG_NUM, ARG_ORDERED, ARG_ANY };
static const struct {
  const char *name;
  tw_agg_fn_t fn;
  int arg;
} agg_fns[] = {
    {"count", TW_AGG_COUNT, ARG_NONE},    {"sum", TW_AGG_SUM, ARG_NUM},
    {"avg", TW_AGG_AVG, ARG_NUM},         {"min", TW_AGG_MIN, ARG_ORDERED},
    {"max", TW_AGG_MAX, ARG_ORDERED},     {"distinct", TW_AGG_DISTINCT, ARG_ANY},
    {"first", TW_AGG_FIRST, ARG_ORDERED}, {"last", TW_AGG_LAST, ARG_ORDERED},
};

static int parse_fn(loader_t *L, const ynode_t *n, tw_agg_def_t *a) {
  int rc = want_scalar(L, n, "'fn'");
  if (rc != 0) return rc;
  const char *s = n->s;
  size_t i = 0, len = n->len;
  while (i < len && isalpha((unsigned char)s[i])) i++;
  size_t name_len = i;
  while (i < len && s[i] == ' ') i++;
  if (i >= len || s[i] != '(' || s[len - 1] != ')')
    return fail_at(L, TW_EINVAL, n,
                   "'fn' must be a function call such as count() or "
                   "sum(amount_fen), not '%.64s'",
                   s);
  size_t a0 = i + 1, a1 = len - 1;
  while (a0 < a1 && s[a0] == ' ') a0++;
  while (a1 > a0 && s[a1 - 1] == ' ') a1--;
  int k = -1;
  for (size_t j = 0; j < sizeof agg_fns / sizeof agg_fns[0]; j++)
    if (strlen(agg_fns[j].name) == name_len && memcmp(agg_fns[j].name, s, name_len) == 0)
      k = (int)j;
  if (k < 0) {
    const char *cands[8];
    for (size_t j = 0; j < 8; j++) cands[j] = agg_fns[j].name;
    const char *sg = suggest(L, s, name_len, cands, 8);
    int nl = (int)(name_len > 32 ? 32 : name_len);
    if (sg)
      return fail_at(L, TW_EINVAL, n, "unknown aggregate function '%.*s' (did you mean '%s'?)", nl,
                     s, sg);
    return fail_at(L, TW_EINVAL, n,
                   "unknown aggregate function '%.*s' (count, sum, avg, min, max, distinct, "
                   "first or last)",
                   nl, s);
  }
  const char *fname = agg_fns[k].name;
  a->spec.fn = agg_fns[k].fn;
  if (agg_fns[k].arg == ARG_NONE) {
    if (a1 != a0) return fail_at(L, TW_EINVAL, n, "%s() takes no argument", fname);
    a->arg_slot = -1;
    a->arg_kind = TW_V_NULL;
    a->value_type = TW_V_INT;
    return 0;
  }
  if (a1 == a0)
    return fail_at(L, TW_EINVAL, n, "%s() needs a field: %s(%s)", fname, fname,
                   agg_fns[k].arg == ARG_ANY ? "student_id" : "amount_fen");
  int col = (int)utf8_chars(s, a0);
  rc = resolve_field(L, n, s + a0, a1 - a0, col, a->on_types, &a->arg_slot);
  if (rc != 0) return rc;
  int t = tw__field_type(L->schema->fields[a->arg_slot].kind);
  a->arg_kind = (uint8_t)t;
  const char *fld = L->schema->fields[a->arg_slot].name;
  switch (agg_fns[k].arg) {
    case ARG_NUM:
      if (t != TW_V_INT && t != TW_V_MONEY)
        return fail(L, TW_ETYPE, n->line, n->col + col,
                    "%s() needs an integer or money field, and '%s' is %s", fname, fld,
                    tw__type_name(t));
      a->value_type = (uint8_t)(a->spec.fn == TW_AGG_AVG && t == TW_V_INT ? TW_V_DEC : t);
      return 0;
    case ARG_ORDERED:
      if (t != TW_V_INT && t != TW_V_MONEY && t != TW_V_TIME)
        return fail(L, TW_ETYPE, n->line, n->col + col,
                    "%s() needs an integer, money or time field, and '%s' is %s", fname, fld,
                    tw__type_name(t));
      a->value_type = (uint8_t)t;
      return 0;
    default:
      a->value_type = TW_V_INT;
      return 0;
  }
}

static void hash_node(crypto_generichash_state *h, const char *part, const ynode_t *n) {
  crypto_generichash_update(h, (const unsigned char *)part, strlen(part) + 1);
  if (n == NULL) return;
  if (n->kind == YN_SCALAR) {
    crypto_generichash_update(h, (const unsigned char *)n->s, n->len + 1);
  } else {
    for (const ynode_t *c = n->child; c != NULL; c = c->next)
      if (c->kind == YN_SCALAR)
        crypto_generichash_update(h, (const unsigned char *)c->s, c->len + 1);
  }
}

/* fingerprint_agg: the state name of an aggregate is "name#" + 16 hex of a BLAKE2b of its
 * definition (on, by, fn, window, bucket when given, where, and what a filter could read: every
 * list, and the values of the params and the sources of the macros it reads), so state is reused
 * exactly when the definition is unchanged: a run or a reload with a changed filter, key or
 * function starts that aggregate afresh instead of mixing two definitions in one series. A param
 * that the filter does not read (a --set of a rule's threshold) leaves the state alone; without a
 * bucket, params or macros the name is what it was before they existed. param_read / macro_read
 * flag what the filter read (NULL: nothing). */
static int fingerprint_agg(loader_t *L, const ynode_t *k, const ynode_t *v, tw_agg_def_t *a,
                           const uint8_t *param_read, const uint8_t *macro_read) {
  crypto_generichash_state h;
  unsigned char out[8];
  char hex[17], *name;
  static const char *const parts[] = {"on", "by", "fn", "window", "where"};
  crypto_generichash_init(&h, NULL, 0, sizeof out);
  for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
    hash_node(&h, parts[i], get(v, parts[i]));
  if (get(v, "bucket") != NULL) hash_node(&h, "bucket", get(v, "bucket"));
  if (get(v, "where") != NULL) {
    for (size_t i = 0; i < L->rs->n_lists; i++) {
      const tw__list_t *l = &L->rs->lists[i];
      crypto_generichash_update(&h, (const unsigned char *)l->name, strlen(l->name) + 1);
      for (size_t j = 0; j < l->n; j++)
        crypto_generichash_update(&h, (const unsigned char *)l->items[j].ptr, l->items[j].len + 1);
    }
    for (size_t i = 0; param_read != NULL && i < L->rs->n_params; i++) {
      const tw__param_t *pm = &L->rs->params[i];
      char val[64];
      if (!param_read[i]) continue;
      crypto_generichash_update(&h, (const unsigned char *)pm->name, strlen(pm->name) + 1);
      if (pm->value.kind == TW_V_STR) {
        crypto_generichash_update(&h, (const unsigned char *)pm->value.u.s.ptr, pm->value.u.s.len);
      } else {
        int nv = pm->value.kind == TW_V_DEC ? snprintf(val, sizeof val, "%.17g", pm->value.u.d)
                                            : snprintf(val, sizeof val, "%d:%lld", pm->value.kind,
                                                       (long long)pm->value.u.i);
        crypto_generichash_update(&h, (const unsigned char *)val, (size_t)nv);
      }
    }
    for (size_t i = 0; macro_read != NULL && i < L->rs->n_macros; i++) {
      const tw__macro_t *m = &L->rs->macros[i];
      if (!macro_read[i]) continue;
      crypto_generichash_update(&h, (const unsigned char *)m->name, strlen(m->name) + 1);
      crypto_generichash_update(&h, (const unsigned char *)m->src, m->len + 1);
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

static const char *const agg_keys[] = {"on", "where", "by", "fn", "window", "bucket"};

/* An aggregate's definition, except its `where` (compiled once every aggregate is known). */
static int load_agg_def(loader_t *L, const ynode_t *k, tw_agg_def_t *a) {
  const ynode_t *v = k->next;
  int rc;
  if (v->kind != YN_MAP) return fail_at(L, TW_EINVAL, v, "aggregate '%s' must be a mapping", k->s);
  if ((rc = check_keys(L, v, "an aggregate", agg_keys, 6)) != 0) return rc;
  static const char *const required[] = {"on", "by", "fn", "window"};
  for (size_t i = 0; i < 4; i++)
    if (get(v, required[i]) == NULL)
      return fail_at(L, TW_EINVAL, k, "aggregate '%s' is missing '%s'", k->s, required[i]);
  if ((rc = parse_types(L, get(v, "on"), &a->on_types)) != 0) return rc;
  if ((rc = parse_by(L, get(v, "by"), a->on_types, &a->by_slot, &a->by_derive, &a->by_name)) != 0)
    return rc;
  if ((rc = parse_fn(L, get(v, "fn"), a)) != 0) return rc;
  const ynode_t *w = get(v, "window");
  if ((rc = want_scalar(L, w, "'window'")) != 0) return rc;
  if (strcmp(w->s, "all") == 0)
    a->spec.window_ms = 0;
  else if ((rc = parse_duration_node(L, w, "window", &a->spec.window_ms)) != 0)
    return rc;
  else if (a->spec.window_ms <= 0)
    return fail_at(L, TW_EINVAL, w, "window must be longer than 0");
  const ynode_t *b = get(v, "bucket");
  if (b != NULL) {
    if ((rc = parse_duration_node(L, b, "bucket", &a->spec.bucket_ms)) != 0) return rc;
    if (a->spec.window_ms == 0)
      return fail_at(L, TW_EINVAL, b, "a window of 'all' has no buckets: remove 'bucket'");
    if (a->spec.bucket_ms < 1000) return fail_at(L, TW_EINVAL, b, "bucket must be at least 1s");
    if (a->spec.window_ms % a->spec.bucket_ms != 0)
      return fail_at(L, TW_EINVAL, b, "window %s is not a whole number of buckets of %s", w->s,
                     b->s);
    if (a->spec.window_ms / a->spec.bucket_ms > TW_STATE_BUCKETS_MAX)
      return fail_at(L, TW_EINVAL, b, "window / bucket is %lld buckets; at most %d",
                     (long long)(a->spec.window_ms / a->spec.bucket_ms), TW_STATE_BUCKETS_MAX);
  }
  /* with a filter, the name waits for it: it depends on what the filter reads */
  return get(v, "where") == NULL ? fingerprint_agg(L, k, v, a, NULL, NULL) : 0;
}

static int load_aggregates(loader_t *L, const ynode_t *map) {
  if (map->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, map, "'aggregates' must map names to definitions");
  tw_ruleset_t *rs = L->rs;
  size_t cap = map->n / 2 + 1;
  rs->aggs = tw__arena_alloc(&rs->arena, cap * sizeof *rs->aggs);
  rs->agg_used = tw__arena_alloc(&rs->arena, cap * sizeof *rs->agg_used);
  rs->agg_bad = tw__arena_alloc(&rs->arena, cap);
  L->agg_keys = tw__arena_alloc(&L->tmp, cap * sizeof *L->agg_keys);
  if (rs->aggs == NULL || rs->agg_used == NULL || rs->agg_bad == NULL || L->agg_keys == NULL)
    return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  /* every name first, so a `where` (or a macro in it) can name any aggregate */
  for (const ynode_t *k = map->child; k != NULL; k = k->next->next) {
    int rc = check_new_name(L, k, "aggregate");
    if (rc != 0) {
      NEXT_OR_RETURN(L, rc);
      continue;
    }
    size_t i = rs->n_aggs;
    tw_agg_def_t *a = &rs->aggs[i];
    a->name = keep(L, k->s);
    if (a->name == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    a->spec.name = a->name;
    a->line = k->line;
    a->arg_slot = -1;
    L->agg_keys[i] = k;
    if ((rc = index_name(L, TW__NAME_AGG, i)) != 0) return rc;
    rs->n_aggs++;
    if ((rc = load_agg_def(L, k, a)) != 0) {
      rs->agg_bad[i] = 1;
      NEXT_OR_RETURN(L, rc);
    }
  }
  return 0;
}

static int compile_wheres(loader_t *L) {
  tw_ruleset_t *rs = L->rs;
  int first = 0;
  for (size_t i = 0; i < rs->n_aggs; i++) {
    const ynode_t *where = rs->agg_bad[i] ? NULL : get(L->agg_keys[i]->next, "where");
    if (where == NULL) continue;
    tw_agg_def_t *a = &rs->aggs[i];
    tw__env_t env;
    tw_expr_t *e;
    env_init(L, &env, a->on_types, 0);
    /* what the filter reads: the use counts it raises */
    int *pu = tw__arena_alloc(&L->tmp, (rs->n_params + 1) * sizeof *pu);
    int *mu = tw__arena_alloc(&L->tmp, (rs->n_macros + 1) * sizeof *mu);
    uint8_t *pr = tw__arena_alloc(&L->tmp, rs->n_params + 1);
    uint8_t *mr = tw__arena_alloc(&L->tmp, rs->n_macros + 1);
    if (pu == NULL || mu == NULL || pr == NULL || mr == NULL)
      return fail(L, TW_ENOMEM, 0, 0, "out of memory");
    for (size_t j = 0; j < rs->n_params; j++) pu[j] = rs->params[j].used;
    for (size_t j = 0; j < rs->n_macros; j++) mu[j] = rs->macros[j].used;
    int rc = want_scalar(L, where, "'where'");
    if (rc == 0) rc = compile_expr(L, where, &env, TW_V_BOOL, &e);
    if (rc == 0) {
      for (size_t j = 0; j < rs->n_params; j++) pr[j] = rs->params[j].used != pu[j];
      for (size_t j = 0; j < rs->n_macros; j++) mr[j] = rs->macros[j].used != mu[j];
      rc = fingerprint_agg(L, L->agg_keys[i], L->agg_keys[i]->next, a, pr, mr);
    }
    if (rc != 0) {
      rs->agg_bad[i] = 1;
      if (first == 0) first = rc;
      NEXT_OR_RETURN(L, rc);
      continue;
    }
    a->where = e;
  }
  return first;
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
  int kind;
  long dup = tw__names_find(rs, name->s, name->len, 1u << TW__NAME_RULE, &kind);
  if (dup >= 0)
    return fail_at(L, TW_EINVAL, name, "duplicate rule name '%s' (first at line %d)", name->s,
                   rs->rules[dup].line);
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
  if ((rc = index_name(L, TW__NAME_RULE, rs->n_rules)) != 0) return rc;
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
  if ((rc = parse_by(L, get(m, "by"), r->on_types, &r->by_slot, &r->by_derive, &r->by_name)) != 0)
    return rc;
  if (r->every_ms > 0 && (r->by_slot != TW_SLOT_INSTITUTION_ID || r->by_derive != TW_KEY_FIELD))
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
    const char *sg = suggest(L, sev->s, sev->len, sevs, 5);
    if (sg)
      return fail_at(L, TW_EINVAL, sev, "unknown severity '%.64s' (did you mean '%s'?)", sev->s,
                     sg);
    return fail_at(L, TW_EINVAL, sev,
                   "unknown severity '%.64s' (info, low, medium, high or critical)", sev->s);
  }
  const ynode_t *cd = get(m, "cooldown");
  if (cd != NULL && (rc = parse_duration_node(L, cd, "cooldown", &r->cooldown_ms)) != 0) return rc;
  tw__env_t env;
  env_init(L, &env, r->on_types, 1);
  env.sweep = r->every_ms > 0;
  env.key_name = r->by_name;
  env.key_slot = r->by_slot;
  env.key_derive = (int)r->by_derive;
  const ynode_t *when = get(m, "when");
  tw_expr_t *e;
  if ((rc = want_scalar(L, when, "'when'")) != 0) return rc;
  if ((rc = compile_expr(L, when, &env, TW_V_BOOL, &e)) != 0) return rc;
  r->when = e;
  const ynode_t *msg = get(m, "message");
  if (msg != NULL) {
    tw__perr_t pe;
    if ((rc = want_scalar(L, msg, "'message'")) != 0) return rc;
    L->cur_node = msg;
    rc = tw__template_compile(&env, msg->s, msg->len, &r->message, &pe);
    L->cur_node = NULL;
    if (rc != 0) return report_perr(L, msg, rc, &pe);
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
  /* A composite rule fires on alerts: without a cooldown it fires again on every later alert of
   * its key while its condition holds (one critical alert per warning, not per institution). */
  int alert_type = tw_schema_type_id(L->schema, "alert", 5);
  if (alert_type >= 0 && alert_type < 32 && (r->on_types & (1u << alert_type)) &&
      r->cooldown_ms == 0)
    warn(L, name->line, name->col,
         "rule '%s' runs on alerts without a cooldown: it fires again on every later alert of its "
         "key while its condition holds",
         r->name);
  return 0;
}

static int load_rules_section(loader_t *L, const ynode_t *seq) {
  if (seq->kind != YN_SEQ) return fail_at(L, TW_EINVAL, seq, "'rules' must be a sequence of rules");
  tw_ruleset_t *rs = L->rs;
  rs->rules = tw__arena_alloc(&rs->arena, (seq->n + 1) * sizeof *rs->rules);
  if (rs->rules == NULL) return fail(L, TW_ENOMEM, 0, 0, "out of memory");
  for (const ynode_t *m = seq->child; m != NULL; m = m->next) {
    tw_rule_t *r = &rs->rules[rs->n_rules];
    int rc = load_rule(L, m, r);
    if (rc != 0) {
      NEXT_OR_RETURN(L, rc);
      /* keep a named rule, so a later duplicate of its name is still reported */
      if (r->name != NULL) rs->n_rules++;
      continue;
    }
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

/* Lint: names defined and never used by a rule (directly or through a macro). */
static void warn_unused(loader_t *L) {
  tw_ruleset_t *rs = L->rs;
  for (size_t i = 0; i < rs->n_params; i++)
    if (rs->params[i].used == 0)
      warn(L, rs->params[i].line, rs->params[i].col, "param '%s' is never used",
           rs->params[i].name);
  for (size_t i = 0; i < rs->n_lists; i++)
    if (rs->lists[i].used == 0)
      warn(L, rs->lists[i].line, rs->lists[i].col, "list '%s' is never used", rs->lists[i].name);
  for (size_t i = 0; i < rs->n_macros; i++)
    if (rs->macros[i].used == 0 && !rs->macros[i].bad)
      warn(L, rs->macros[i].line, rs->macros[i].col, "macro '%s' is never used",
           rs->macros[i].name);
  for (size_t i = 0; i < rs->n_aggs; i++)
    if (rs->agg_used[i] == 0)
      warn(L, L->agg_keys[i]->line, L->agg_keys[i]->col, "aggregate '%s' is never read by a rule",
           rs->aggs[i].name);
}

static const char *const top_keys[] = {"version",    "params", "lists", "macros",
                                       "aggregates", "rules",  "tests"};

/* Sections in a fixed order whatever their order in the file: params (then --set), lists,
 * macros (names), aggregates (definitions, then their filters), macros checked alone, rules. */
static int load_tree(loader_t *L, const ynode_t *root) {
  int rc;
  if (root->kind != YN_MAP)
    return fail_at(L, TW_EINVAL, root, "a rule file is a mapping with 'version: 1'");
  if ((rc = check_keys(L, root, "the rule file", top_keys, 7)) != 0) return rc;
  const ynode_t *v = get(root, "version");
  if (v == NULL) return fail_at(L, TW_EINVAL, root, "missing 'version: 1'");
  if (v->kind != YN_SCALAR || strcmp(v->s, "1") != 0)
    return fail_at(L, TW_EINVAL, v, "unsupported version '%.16s': this tutorwatch reads version 1",
                   v->kind == YN_SCALAR ? v->s : "?");
  const ynode_t *n;
#define STEP(call)                                 \
  do {                                             \
    if ((rc = (call)) != 0) NEXT_OR_RETURN(L, rc); \
  } while (0)
  if ((n = section(root, "params")) != NULL) STEP(load_params(L, n));
  for (size_t i = 0; L->opts != NULL && i < L->opts->n_set; i++)
    STEP(apply_set(L, L->opts->set[i]));
  if ((n = section(root, "lists")) != NULL) STEP(load_lists(L, n));
  if ((n = section(root, "macros")) != NULL) STEP(load_macros(L, n));
  if ((n = section(root, "aggregates")) != NULL) STEP(load_aggregates(L, n));
  STEP(compile_wheres(L));
  STEP(check_macros(L));
  if ((n = section(root, "rules")) != NULL) STEP(load_rules_section(L, n));
#undef STEP
  /* after an error, uses in the broken parts were not counted: no claims of unused names */
  if (L->n_errors == 0) warn_unused(L);
  return L->n_errors ? L->first_code : 0;
}

static int cmp_diag(const void *x, const void *y) {
  const diag_t *a = x, *b = y;
  if (a->e.line != b->e.line) return a->e.line < b->e.line ? -1 : 1;
  if (a->e.col != b->e.col) return a->e.col < b->e.col ? -1 : 1;
  return a->seq < b->seq ? -1 : a->seq > b->seq;
}

/* Every diagnostic in file order (those without a line, such as --set, first), once each. */
static void flush_diags(loader_t *L) {
  if (!diag_mode(L) || L->n_diags == 0) return;
  qsort(L->diags, L->n_diags, sizeof *L->diags, cmp_diag);
  for (size_t i = 0; i < L->n_diags; i++) {
    const diag_t *d = &L->diags[i];
    int dup = 0;
    for (size_t j = i; j-- > 0 && L->diags[j].e.line == d->e.line && L->diags[j].e.col == d->e.col;)
      if (L->diags[j].warning == d->warning && strcmp(L->diags[j].e.message, d->e.message) == 0)
        dup = 1;
    if (!dup) L->opts->diag(L->opts->diag_ud, &d->e, d->warning != 0);
  }
}

int tw_rules_load_ex(const char *path, const char *data, size_t len, const tw_schema_t *schema,
                     const tw_rules_load_opts_t *opts, tw_ruleset_t **out, tw_rule_error_t *err) {
  tw_rule_error_t dummy;
  loader_t L;
  ynode_t *root = NULL;
  char *buf = NULL;
  int rc;
  if (err == NULL) err = &dummy;
  memset(err, 0, sizeof *err);
  snprintf(err->file, sizeof err->file, "%s", path ? path : "<rules>");
  memset(&L, 0, sizeof L);
  L.name = err->file;
  L.schema = schema;
  L.err = err;
  L.opts = opts;
  *out = NULL;
  if (data == NULL && path != NULL) {
    if ((rc = read_file(path, &buf, &len, err)) != 0) {
      if (diag_mode(&L)) opts->diag(opts->diag_ud, err, false);
      return rc;
    }
    data = buf;
  }
  L.data = data;
  L.len = len;
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
  L.rs->arena.limit = TW__MAX_RULESET_BYTES;
  if (sodium_init() < 0) {
    rc = fail(&L, TW_ECRYPTO, 0, 0, "libsodium failed to initialise");
    goto fail;
  }
  unsigned char digest[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(digest, (const unsigned char *)data, len);
  sodium_bin2hex(L.rs->hash, sizeof L.rs->hash, digest, sizeof digest);
  if ((rc = parse_yaml(&L, &root)) != 0) goto fail;
  if ((rc = load_tree(&L, root)) != 0) goto fail;
  flush_diags(&L);
  free(L.diags);
  tw__arena_free(&L.tmp);
  free(buf);
  *out = L.rs;
  return 0;
fail:
  if (L.rs != NULL && L.rs->arena.over && L.first_code == TW_ETOOBIG) rc = TW_ETOOBIG;
  flush_diags(&L);
  free(L.diags);
  tw__arena_free(&L.tmp);
  tw_rules_free(L.rs);
  free(buf);
  return rc;
}

int tw_rules_load_buffer(const char *name, const char *data, size_t len, const tw_schema_t *schema,
                         tw_ruleset_t **out, tw_rule_error_t *err) {
  if (data == NULL) {
    tw_rule_error_t dummy;
    if (err == NULL) err = &dummy;
    memset(err, 0, sizeof *err);
    snprintf(err->file, sizeof err->file, "%s", name ? name : "<rules>");
    snprintf(err->message, sizeof err->message, "no rule text or no schema");
    *out = NULL;
    return TW_EINVAL;
  }
  return tw_rules_load_ex(name, data, len, schema, NULL, out, err);
}

int tw_rules_load(const char *path, const tw_schema_t *schema, tw_ruleset_t **out,
                  tw_rule_error_t *err) {
  return tw_rules_load_ex(path, NULL, 0, schema, NULL, out, err);
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
