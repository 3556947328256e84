/*
 * ruletest.c: the runner behind `tutorwatch test`: reads the `tests` section of a rule file,
 * runs each test through the real pipeline on a private temporary state, and compares alerts.
 *
 * Loading builds a small tree of the `tests` value only (other top-level values are stepped over
 * event by event), refusing anchors and aliases, nesting over TW_RULETEST_MAX_DEPTH and more than
 * TW_RULETEST_MAX_NODES nodes, so a hostile file costs bounded memory; the tree is then checked
 * and turned into plain data (JSON text of each given event, parsed expectations) and freed.
 *
 * Running a test hands each given event to tw_pipeline_record as a JSON Lines record whose origin
 * is the rule file and whose line is the event's YAML line, so the engine decodes, validates,
 * dead-letters, orders, dedups and sweeps it exactly as it would in `tutorwatch run`; alerts
 * reach an in-memory sink after the commit that journals them, and rejected events are read back
 * from the test's own dead-letter file.
 */
#define _XOPEN_SOURCE 700
#include "tw_ruletest.h"

#include <errno.h>
#include <ftw.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_pipeline.h"
#include "tw_sink.h"

#define RT_TZ_OFFSET_MIN 480 /* times in messages at Asia/Shanghai, as alerts print them */
/* `at` stays within the event times the decoder accepts (0000-01-01T00:00:00Z to
 * 9999-12-31T23:59:59.999+08:00), so sweeping up to it cannot overflow. */
#define RT_AT_MIN_MS (-62167219200000LL)
#define RT_AT_MAX_MS (253402300799999LL - 8LL * 3600 * 1000)

/* ---- the YAML tree of the tests section ------------------------------------------------------ */

enum { Y_SCALAR, Y_MAP, Y_SEQ };

typedef struct ynode {
  int kind;
  bool quoted; /* single- or double-quoted, block, or tagged !!str: always a string */
  char *text;  /* scalars: NUL-terminated (may hold NULs before len) */
  size_t len;
  int line, col;       /* 1-based */
  struct ynode **kids; /* maps: key, value, key, value...; sequences: items */
  size_t n, cap;
} ynode_t;

typedef struct loader {
  const char *path;
  yaml_parser_t parser;
  tw_rule_error_t *err;
  size_t n_nodes;
} loader_t;

static void ynode_free(ynode_t *n) {
  if (n == NULL) return;
  for (size_t i = 0; i < n->n; i++) ynode_free(n->kids[i]);
  free(n->kids);
  free(n->text);
  free(n);
}

static int set_err(tw_rule_error_t *err, const char *path, int line, int col, int rc,
                   const char *fmt, ...) __attribute__((format(printf, 6, 7)));
static int set_err(tw_rule_error_t *err, const char *path, int line, int col, int rc,
                   const char *fmt, ...) {
  if (err == NULL) return rc;
  snprintf(err->file, sizeof err->file, "%s", path ? path : "");
  err->line = line;
  err->col = col;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
  return rc;
}

static int yaml_failed(loader_t *L) {
  yaml_parser_t *p = &L->parser;
  if (p->error == YAML_MEMORY_ERROR)
    return set_err(L->err, L->path, 0, 0, TW_ENOMEM, "out of memory");
  return set_err(L->err, L->path, (int)p->problem_mark.line + 1, (int)p->problem_mark.column + 1,
                 TW_EPARSE, "YAML: %s%s%s", p->problem ? p->problem : "syntax error",
                 p->context ? " " : "", p->context ? p->context : "");
}

static int next_event(loader_t *L, yaml_event_t *ev) {
  if (!yaml_parser_parse(&L->parser, ev)) return yaml_failed(L);
  return 0;
}

/* Anchors and aliases are refused outright, as the rule loader does, so nothing is expanded. */
static int check_anchor(loader_t *L, const yaml_event_t *ev) {
  const yaml_char_t *a = NULL;
  if (ev->type == YAML_ALIAS_EVENT) a = ev->data.alias.anchor;
  if (ev->type == YAML_SCALAR_EVENT) a = ev->data.scalar.anchor;
  if (ev->type == YAML_SEQUENCE_START_EVENT) a = ev->data.sequence_start.anchor;
  if (ev->type == YAML_MAPPING_START_EVENT) a = ev->data.mapping_start.anchor;
  if (a == NULL && ev->type != YAML_ALIAS_EVENT) return 0;
  return set_err(L->err, L->path, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                 TW_ETOOBIG, "YAML %s '%.40s' refused: rule files may not use anchors or aliases",
                 ev->type == YAML_ALIAS_EVENT ? "alias" : "anchor", a ? (const char *)a : "");
}

static int too_deep(loader_t *L, const yaml_event_t *ev) {
  return set_err(L->err, L->path, (int)ev->start_mark.line + 1, (int)ev->start_mark.column + 1,
                 TW_ETOOBIG, "YAML nesting deeper than %d", TW_RULETEST_MAX_DEPTH);
}

/* skip: step over the node that starts with ev, checking anchors and depth, keeping nothing. */
static int skip(loader_t *L, const yaml_event_t *first, int depth) {
  int rc = check_anchor(L, first);
  if (rc != 0) return rc;
  if (first->type != YAML_SEQUENCE_START_EVENT && first->type != YAML_MAPPING_START_EVENT) return 0;
  if (depth >= TW_RULETEST_MAX_DEPTH) return too_deep(L, first);
  for (;;) {
    yaml_event_t ev;
    rc = next_event(L, &ev);
    if (rc != 0) return rc;
    if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&ev);
      return 0;
    }
    rc = skip(L, &ev, depth + 1);
    yaml_event_delete(&ev);
    if (rc != 0) return rc;
  }
}

static int add_kid(ynode_t *n, ynode_t *kid) {
  if (n->n == n->cap) {
    size_t cap = n->cap ? n->cap * 2 : 8;
    ynode_t **k = realloc(n->kids, cap * sizeof *k);
    if (k == NULL) return TW_ENOMEM;
    n->kids = k;
    n->cap = cap;
  }
  n->kids[n->n++] = kid;
  return 0;
}

/* build: the node that starts with first, into *out (owned by the caller). */
static int build(loader_t *L, const yaml_event_t *first, int depth, ynode_t **out) {
  *out = NULL;
  int rc = check_anchor(L, first);
  if (rc != 0) return rc;
  if (++L->n_nodes > TW_RULETEST_MAX_NODES)
    return set_err(L->err, L->path, (int)first->start_mark.line + 1,
                   (int)first->start_mark.column + 1, TW_ETOOBIG,
                   "the tests section has more than %d YAML nodes", TW_RULETEST_MAX_NODES);
  ynode_t *n = calloc(1, sizeof *n);
  if (n == NULL) return TW_ENOMEM;
  n->line = (int)first->start_mark.line + 1;
  n->col = (int)first->start_mark.column + 1;
  if (first->type == YAML_SCALAR_EVENT) {
    n->kind = Y_SCALAR;
    n->len = first->data.scalar.length;
    n->text = malloc(n->len + 1);
    if (n->text == NULL) {
      ynode_free(n);
      return TW_ENOMEM;
    }
    memcpy(n->text, first->data.scalar.value, n->len);
    n->text[n->len] = '\0';
    const char *tag = (const char *)first->data.scalar.tag;
    n->quoted = first->data.scalar.style != YAML_PLAIN_SCALAR_STYLE ||
                (tag != NULL && strcmp(tag, YAML_STR_TAG) == 0);
    *out = n;
    return 0;
  }
  n->kind = first->type == YAML_MAPPING_START_EVENT ? Y_MAP : Y_SEQ;
  if (depth >= TW_RULETEST_MAX_DEPTH) {
    ynode_free(n);
    return too_deep(L, first);
  }
  for (;;) {
    yaml_event_t ev;
    rc = next_event(L, &ev);
    if (rc != 0) break;
    if (ev.type == YAML_SEQUENCE_END_EVENT || ev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&ev);
      *out = n;
      return 0;
    }
    ynode_t *kid = NULL;
    rc = build(L, &ev, depth + 1, &kid);
    yaml_event_delete(&ev);
    if (rc == 0) rc = add_kid(n, kid);
    if (rc != 0) {
      ynode_free(kid);
      break;
    }
  }
  ynode_free(n);
  return rc;
}

/* parse_tree: the value of the top-level `tests` key into *tests (NULL when absent). */
static int parse_tree(loader_t *L, const char *data, size_t len, ynode_t **tests) {
  *tests = NULL;
  if (!yaml_parser_initialize(&L->parser)) return TW_ENOMEM;
  yaml_parser_set_input_string(&L->parser, (const unsigned char *)data, len);
  yaml_event_t ev;
  int rc, docs = 0, state = 0; /* 0 before the root, 1 in the root map, 2 after it */
  while ((rc = next_event(L, &ev)) == 0) {
    int line = (int)ev.start_mark.line + 1, col = (int)ev.start_mark.column + 1;
    yaml_event_type_t t = ev.type;
    if (t == YAML_STREAM_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    if (t == YAML_STREAM_START_EVENT || t == YAML_DOCUMENT_END_EVENT) {
      yaml_event_delete(&ev);
      continue;
    }
    if (t == YAML_DOCUMENT_START_EVENT) {
      yaml_event_delete(&ev);
      if (++docs > 1) {
        rc = set_err(L->err, L->path, line, col, TW_EINVAL, "a rule file is one YAML document");
        break;
      }
      continue;
    }
    if (state == 0) {
      if (t != YAML_MAPPING_START_EVENT) {
        rc = check_anchor(L, &ev);
        if (rc == 0)
          rc = set_err(L->err, L->path, line, col, TW_EINVAL,
                       "a rule file is a map of version, lists, aggregates, rules and tests");
        yaml_event_delete(&ev);
        break;
      }
      rc = check_anchor(L, &ev);
      yaml_event_delete(&ev);
      if (rc != 0) break;
      state = 1;
      continue;
    }
    if (state == 1 && t == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&ev);
      state = 2;
      continue;
    }
    if (state != 1) { /* cannot happen after one document: the parser ends the stream */
      yaml_event_delete(&ev);
      rc = set_err(L->err, L->path, line, col, TW_EPARSE, "unexpected YAML content");
      break;
    }
    /* A key of the root map, then its value. */
    bool is_tests = t == YAML_SCALAR_EVENT && ev.data.scalar.length == 5 &&
                    memcmp(ev.data.scalar.value, "tests", 5) == 0;
    rc = skip(L, &ev, 1);
    yaml_event_delete(&ev);
    if (rc != 0) break;
    rc = next_event(L, &ev);
    if (rc != 0) break;
    if (is_tests && *tests != NULL) {
      rc = set_err(L->err, L->path, line, col, TW_EINVAL, "duplicate key 'tests'");
      yaml_event_delete(&ev);
      break;
    }
    rc = is_tests ? build(L, &ev, 1, tests) : skip(L, &ev, 1);
    yaml_event_delete(&ev);
    if (rc != 0) break;
  }
  yaml_parser_delete(&L->parser);
  if (rc != 0) {
    ynode_free(*tests);
    *tests = NULL;
  }
  return rc;
}

/* ---- small helpers --------------------------------------------------------------------------- */

/* Edit distance, for "did you mean"; strings over 64 bytes are never suggested. */
static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return SIZE_MAX;
  size_t row[65];
  for (size_t j = 0; j <= lb; j++) row[j] = j;
  for (size_t i = 1; i <= la; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  return row[lb];
}

/* suggest: " (did you mean 'x'?)" for the closest of names within an edit distance of 2, or of
 * a third of the word's length when that is more, else "". */
static void suggest(const char *word, const char *const *names, size_t n, char *buf, size_t cap) {
  size_t best = strlen(word) / 3 > 2 ? strlen(word) / 3 + 1 : 3;
  const char *pick = NULL;
  for (size_t i = 0; i < n; i++) {
    size_t d = edit_distance(word, names[i]);
    if (d < best) best = d, pick = names[i];
  }
  if (pick != NULL)
    snprintf(buf, cap, " (did you mean '%s'?)", pick);
  else if (cap > 0)
    buf[0] = '\0';
}

static bool scalar_is(const ynode_t *n, const char *s) {
  return n->kind == Y_SCALAR && n->len == strlen(s) && memcmp(n->text, s, n->len) == 0;
}

static const char *kind_name(const ynode_t *n) {
  return n->kind == Y_MAP ? "a map" : n->kind == Y_SEQ ? "a list" : "a scalar";
}

/* A growable text buffer with a ceiling; over the ceiling it only counts. */
typedef struct tbuf {
  char *p;
  size_t len, cap, max;
  bool nomem, over;
} tbuf_t;

static void tb_put(tbuf_t *b, const char *s, size_t n) {
  if (b->nomem || b->over || n == 0) return;
  if (b->len + n + 1 > b->max) {
    b->over = true;
    return;
  }
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *q = realloc(b->p, cap);
    if (q == NULL) {
      b->nomem = true;
      return;
    }
    b->p = q;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
}

static void tb_puts(tbuf_t *b, const char *s) {
  tb_put(b, s, strlen(s));
}

static void tb_jstr(tbuf_t *b, const char *s, size_t n) {
  tb_put(b, "\"", 1);
  size_t run = 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    tb_put(b, s + run, i - run);
    run = i + 1;
    char esc[8];
    if (c == '"' || c == '\\') {
      esc[0] = '\\', esc[1] = (char)c;
      tb_put(b, esc, 2);
    } else if (c == '\n') {
      tb_put(b, "\\n", 2);
    } else if (c == '\t') {
      tb_put(b, "\\t", 2);
    } else {
      snprintf(esc, sizeof esc, "\\u%04x", c);
      tb_put(b, esc, 6);
    }
  }
  tb_put(b, s + run, n - run);
  tb_put(b, "\"", 1);
}

/* A JSON number exactly: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool is_json_number(const char *s, size_t n) {
  size_t i = 0;
  if (i < n && s[i] == '-') i++;
  if (i == n) return false;
  if (s[i] == '0') {
    i++;
  } else if (s[i] >= '1' && s[i] <= '9') {
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
  } else {
    return false;
  }
  if (i < n && s[i] == '.') {
    size_t d = ++i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i == d) return false;
  }
  if (i < n && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < n && (s[i] == '+' || s[i] == '-')) i++;
    size_t d = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') i++;
    if (i == d) return false;
  }
  return i == n;
}

static bool text_in(const ynode_t *n, const char *const *words) {
  for (size_t i = 0; words[i] != NULL; i++)
    if (scalar_is(n, words[i])) return true;
  return false;
}

static const char *const kNulls[] = {"", "~", "null", "Null", "NULL", NULL};
static const char *const kTrues[] = {"true", "True", "TRUE", NULL};
static const char *const kFalses[] = {"false", "False", "FALSE", NULL};

/* emit: node as JSON (the YAML 1.2 core schema for plain scalars, see tw_ruletest.h). */
static void emit(tbuf_t *b, const ynode_t *n) {
  if (n->kind == Y_SCALAR) {
    if (n->quoted)
      tb_jstr(b, n->text, n->len);
    else if (text_in(n, kNulls))
      tb_puts(b, "null");
    else if (text_in(n, kTrues))
      tb_puts(b, "true");
    else if (text_in(n, kFalses))
      tb_puts(b, "false");
    else if (is_json_number(n->text, n->len))
      tb_put(b, n->text, n->len);
    else
      tb_jstr(b, n->text, n->len);
    return;
  }
  bool map = n->kind == Y_MAP;
  tb_put(b, map ? "{" : "[", 1);
  for (size_t i = 0; i < n->n; i += map ? 2 : 1) {
    if (i > 0) tb_put(b, ",", 1);
    if (map) {
      tb_jstr(b, n->kids[i]->text, n->kids[i]->len);
      tb_put(b, ":", 1);
      emit(b, n->kids[i + 1]);
    } else {
      emit(b, n->kids[i]);
    }
  }
  tb_put(b, map ? "}" : "]", 1);
}

/* ---- the suite ------------------------------------------------------------------------------- */

typedef struct rt_expect {
  char *rule;                    /* the rule it names */
  json_t *fields;                /* the item without message_contains */
  char *message_contains;        /* or NULL */
  char *json;                    /* the item as written, as JSON (for the diff) */
  int line, rule_line, rule_col; /* of the item, and of its rule's name */
} rt_expect_t;

typedef struct rt_name {
  char *name;
  int line, col;
} rt_name_t;

typedef struct rt_test {
  char *name;
  int line;
  char **given; /* JSON objects */
  size_t *given_len;
  int *given_line;
  size_t n_given;
  bool has_at;
  int64_t at_ms;
  char **set; /* "name=value" */
  size_t n_set;
  rt_expect_t *expect;
  size_t n_expect;
  rt_name_t *none; /* expect_none */
  size_t n_none;
} rt_test_t;

struct tw_ruletest_suite {
  char *path;
  rt_test_t *tests;
  size_t n_tests;
};

static void test_fini(rt_test_t *t) {
  free(t->name);
  for (size_t j = 0; j < t->n_given; j++) free(t->given[j]);
  free(t->given);
  free(t->given_len);
  free(t->given_line);
  for (size_t j = 0; j < t->n_set; j++) free(t->set[j]);
  free(t->set);
  for (size_t j = 0; j < t->n_expect; j++) {
    free(t->expect[j].rule);
    json_decref(t->expect[j].fields);
    free(t->expect[j].message_contains);
    free(t->expect[j].json);
  }
  free(t->expect);
  for (size_t j = 0; j < t->n_none; j++) free(t->none[j].name);
  free(t->none);
}

void tw_ruletest_free(tw_ruletest_suite_t *s) {
  if (s == NULL) return;
  for (size_t i = 0; i < s->n_tests; i++) test_fini(&s->tests[i]);
  free(s->tests);
  free(s->path);
  free(s);
}

typedef struct pctx {
  const char *path;
  tw_rule_error_t *err;
} pctx_t;

static int at_node(const pctx_t *c, const ynode_t *n, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int at_node(const pctx_t *c, const ynode_t *n, int rc, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return set_err(c->err, c->path, n->line, n->col, rc, "%s", msg);
}

static char *dup_text(const ynode_t *n) {
  char *s = malloc(n->len + 1);
  if (s != NULL) {
    memcpy(s, n->text, n->len);
    s[n->len] = '\0';
  }
  return s;
}

/* A scalar that names something: a non-empty string without NUL bytes. */
static int want_name(const pctx_t *c, const ynode_t *n, const char *what) {
  if (n->kind != Y_SCALAR)
    return at_node(c, n, TW_EINVAL, "%s must be a string, not %s", what, kind_name(n));
  if (n->len == 0 || memchr(n->text, '\0', n->len) != NULL || n->len > 256)
    return at_node(c, n, TW_EINVAL, "%s must be a non-empty string of at most 256 bytes", what);
  return 0;
}

/* check_map: a map whose keys are distinct scalars, with at most max_keys keys. */
static int check_map(const pctx_t *c, const ynode_t *n, const char *what, size_t max_keys) {
  if (n->kind != Y_MAP)
    return at_node(c, n, TW_EINVAL, "%s must be a map, not %s", what, kind_name(n));
  if (n->n / 2 > max_keys)
    return at_node(c, n, TW_ETOOBIG, "%s has more than %zu keys", what, max_keys);
  for (size_t i = 0; i < n->n; i += 2) {
    const ynode_t *k = n->kids[i];
    if (k->kind != Y_SCALAR)
      return at_node(c, k, TW_EINVAL, "a key in %s must be a scalar, not %s", what, kind_name(k));
    for (size_t j = 0; j < i; j += 2)
      if (n->kids[j]->len == k->len && memcmp(n->kids[j]->text, k->text, k->len) == 0)
        return at_node(c, k, TW_EINVAL, "duplicate key '%.64s' in %s", k->text, what);
  }
  return 0;
}

static const ynode_t *map_get(const ynode_t *map, const char *key) {
  if (map == NULL) return NULL;
  for (size_t i = 0; i < map->n; i += 2)
    if (scalar_is(map->kids[i], key)) return map->kids[i + 1];
  return NULL;
}

/* seq_items: a list; a null value is an empty list. */
static int seq_items(const pctx_t *c, const ynode_t *n, const char *what, size_t max,
                     const ynode_t *const **items, size_t *count) {
  *items = NULL, *count = 0;
  if (n->kind == Y_SCALAR && !n->quoted && text_in(n, kNulls)) return 0;
  if (n->kind != Y_SEQ)
    return at_node(c, n, TW_EINVAL, "%s must be a list, not %s", what, kind_name(n));
  if (n->n > max) return at_node(c, n, TW_ETOOBIG, "%s has more than %zu items", what, max);
  *items = (const ynode_t *const *)n->kids;
  *count = n->n;
  return 0;
}

/* check_keys: every key of every map inside n is a scalar (JSON keys are strings). */
static int check_keys(const pctx_t *c, const ynode_t *n) {
  for (size_t i = 0; i < n->n; i++) {
    const ynode_t *k = n->kids[i];
    if (n->kind == Y_MAP && i % 2 == 0 && k->kind != Y_SCALAR)
      return at_node(c, k, TW_EINVAL, "a map key must be a scalar, not %s", kind_name(k));
    int rc = check_keys(c, k);
    if (rc != 0) return rc;
  }
  return 0;
}

static int parse_given(const pctx_t *c, rt_test_t *t, size_t test_no, const ynode_t *given,
                       const ynode_t *defaults) {
  const ynode_t *const *items;
  size_t n;
  int rc = seq_items(c, given, "given", TW_RULETEST_MAX_GIVEN, &items, &n);
  if (rc != 0) return rc;
  if (n == 0) return 0;
  t->given = calloc(n, sizeof *t->given);
  t->given_len = calloc(n, sizeof *t->given_len);
  t->given_line = calloc(n, sizeof *t->given_line);
  if (t->given == NULL || t->given_len == NULL || t->given_line == NULL) return TW_ENOMEM;
  for (size_t j = 0; j < n; j++) {
    const ynode_t *ev = items[j];
    rc = check_map(c, ev, "a given event", TW_RULETEST_MAX_KEYS);
    if (rc == 0) rc = check_keys(c, ev);
    if (rc != 0) return rc;
    tbuf_t b = {.max = TW_EVENT_MAX_BYTES + 1};
    tb_put(&b, "{", 1);
    for (size_t k = 0; k < ev->n; k += 2) {
      if (k > 0) tb_put(&b, ",", 1);
      tb_jstr(&b, ev->kids[k]->text, ev->kids[k]->len);
      tb_put(&b, ":", 1);
      emit(&b, ev->kids[k + 1]);
    }
    bool comma = ev->n > 0;
    for (size_t k = 0; defaults != NULL && k < defaults->n; k += 2) {
      const ynode_t *key = defaults->kids[k];
      bool given_too = false;
      for (size_t m = 0; m < ev->n && !given_too; m += 2)
        given_too =
            ev->kids[m]->len == key->len && memcmp(ev->kids[m]->text, key->text, key->len) == 0;
      if (given_too) continue;
      if (comma) tb_put(&b, ",", 1);
      comma = true;
      tb_jstr(&b, key->text, key->len);
      tb_put(&b, ":", 1);
      emit(&b, defaults->kids[k + 1]);
    }
    if (map_get(ev, "event_id") == NULL && map_get(defaults, "event_id") == NULL) {
      char id[64]; /* ,"event_id":"N-M" with two 20-digit numbers */
      snprintf(id, sizeof id, "%s\"event_id\":\"%zu-%zu\"", comma ? "," : "", test_no, j + 1);
      tb_puts(&b, id);
    }
    tb_put(&b, "}", 1);
    if (b.nomem) {
      free(b.p);
      return TW_ENOMEM;
    }
    if (b.over || b.len > TW_EVENT_MAX_BYTES) {
      free(b.p);
      return at_node(c, ev, TW_ETOOBIG, "this event is over the %u-byte limit of one event as JSON",
                     TW_EVENT_MAX_BYTES);
    }
    t->given[j] = b.p;
    t->given_len[j] = b.len;
    t->given_line[j] = ev->line;
    t->n_given = j + 1;
  }
  return 0;
}

/* The keys of an alert's JSON (tw_alert.h), and message_contains. */
static const char *const kAlertKeys[] = {
    "alert_id",   "rule",    "severity",         "by",     "key",       "institution_id", "region",
    "event_time", "message", "message_contains", "values", "event_ids", "source"};

static int parse_expect(const pctx_t *c, rt_test_t *t, const ynode_t *node) {
  const ynode_t *const *items;
  size_t n;
  int rc = seq_items(c, node, "expect", TW_RULETEST_MAX_EXPECT, &items, &n);
  if (rc != 0) return rc;
  if (n == 0) return 0;
  t->expect = calloc(n, sizeof *t->expect);
  if (t->expect == NULL) return TW_ENOMEM;
  for (size_t j = 0; j < n; j++) {
    const ynode_t *it = items[j];
    rc = check_map(c, it, "an expect item", sizeof kAlertKeys / sizeof kAlertKeys[0]);
    if (rc == 0) rc = check_keys(c, it);
    if (rc != 0) return rc;
    rt_expect_t *e = &t->expect[j];
    t->n_expect = j + 1;
    e->line = it->line;
    for (size_t k = 0; k < it->n; k += 2) {
      const ynode_t *key = it->kids[k], *val = it->kids[k + 1];
      bool known = false;
      for (size_t m = 0; m < sizeof kAlertKeys / sizeof kAlertKeys[0] && !known; m++)
        known = scalar_is(key, kAlertKeys[m]);
      if (!known) {
        char hint[96];
        suggest(key->text, kAlertKeys, sizeof kAlertKeys / sizeof kAlertKeys[0], hint, sizeof hint);
        return at_node(c, key, TW_EINVAL, "unknown alert field '%.64s' in an expect item%s",
                       key->text, hint);
      }
      if (scalar_is(key, "message_contains") || scalar_is(key, "rule")) {
        if (val->kind != Y_SCALAR || memchr(val->text, '\0', val->len) != NULL)
          return at_node(c, val, TW_EINVAL, "'%s' must be a string, not %s", key->text,
                         kind_name(val));
        char **dst = scalar_is(key, "rule") ? &e->rule : &e->message_contains;
        if (dst == &e->rule) e->rule_line = val->line, e->rule_col = val->col;
        if ((*dst = dup_text(val)) == NULL) return TW_ENOMEM;
      }
    }
    if (e->rule == NULL) return at_node(c, it, TW_EINVAL, "an expect item must name its 'rule'");
    tbuf_t b = {.max = 1u << 20};
    emit(&b, it);
    if (b.nomem || b.over) {
      free(b.p);
      return b.nomem ? TW_ENOMEM
                     : at_node(c, it, TW_ETOOBIG, "this expect item is over 1 MiB as JSON");
    }
    e->json = b.p;
    json_error_t jerr;
    e->fields = json_loadb(b.p, b.len, JSON_DECODE_ANY, &jerr);
    if (e->fields == NULL)
      return at_node(c, it, TW_EINVAL, "this expect item is not valid as JSON: %s", jerr.text);
    json_object_del(e->fields, "message_contains");
  }
  return 0;
}

static int parse_expect_none(const pctx_t *c, rt_test_t *t, const ynode_t *node) {
  const ynode_t *const *items;
  const ynode_t *one = node;
  size_t n;
  int rc;
  if (node->kind == Y_SCALAR && (node->quoted || !text_in(node, kNulls))) {
    items = &one, n = 1; /* expect_none: prepaid_over_cap */
  } else {
    rc = seq_items(c, node, "expect_none", TW_RULETEST_MAX_EXPECT, &items, &n);
    if (rc != 0) return rc;
  }
  if (n == 0) return 0;
  t->none = calloc(n, sizeof *t->none);
  if (t->none == NULL) return TW_ENOMEM;
  for (size_t j = 0; j < n; j++) {
    rc = want_name(c, items[j], "a rule name in expect_none");
    if (rc != 0) return rc;
    if ((t->none[j].name = dup_text(items[j])) == NULL) return TW_ENOMEM;
    t->none[j].line = items[j]->line;
    t->none[j].col = items[j]->col;
    t->n_none = j + 1;
    for (size_t e = 0; e < t->n_expect; e++)
      if (strcmp(t->expect[e].rule, t->none[j].name) == 0)
        return at_node(c, items[j], TW_EINVAL,
                       "rule '%s' is both expected and in expect_none in this test",
                       t->none[j].name);
  }
  return 0;
}

static int parse_set(const pctx_t *c, rt_test_t *t, const ynode_t *node) {
  int rc = check_map(c, node, "set", TW_RULETEST_MAX_SET);
  if (rc != 0) return rc;
  size_t n = node->n / 2;
  if (n == 0) return 0;
  t->set = calloc(n, sizeof *t->set);
  if (t->set == NULL) return TW_ENOMEM;
  for (size_t j = 0; j < n; j++) {
    const ynode_t *key = node->kids[2 * j], *val = node->kids[2 * j + 1];
    rc = want_name(c, key, "a parameter name in set");
    if (rc != 0) return rc;
    if (val->kind != Y_SCALAR || memchr(val->text, '\0', val->len) != NULL)
      return at_node(c, val, TW_EINVAL, "the value of parameter '%s' must be a scalar, not %s",
                     key->text, kind_name(val));
    tbuf_t b = {.max = 1u << 16};
    tb_put(&b, key->text, key->len);
    tb_put(&b, "=", 1);
    if (val->quoted)
      tb_jstr(&b, val->text, val->len); /* a string literal of the rule language */
    else
      tb_put(&b, val->text, val->len);
    if (b.nomem || b.over) {
      free(b.p);
      return b.nomem ? TW_ENOMEM : at_node(c, val, TW_ETOOBIG, "parameter value over 64 KiB");
    }
    t->set[j] = b.p;
    t->n_set = j + 1;
  }
  return 0;
}

static int parse_at(const pctx_t *c, rt_test_t *t, const ynode_t *n) {
  if (n->kind != Y_SCALAR)
    return at_node(c, n, TW_EINVAL, "'at' must be a time, not %s", kind_name(n));
  int64_t ms;
  char *end = NULL;
  errno = 0;
  long long v = (!n->quoted && n->len > 0) ? strtoll(n->text, &end, 10) : 0;
  if (end != NULL && end == n->text + n->len && errno == 0) {
    ms = (int64_t)v;
  } else if (tw_parse_rfc3339(n->text, n->len, &ms) != 0) {
    return at_node(c, n, TW_EINVAL,
                   "bad time '%.64s' in 'at': write RFC 3339 with an offset "
                   "(\"2025-03-20T00:00:00+08:00\") or epoch milliseconds",
                   n->text);
  }
  if (ms < RT_AT_MIN_MS || ms > RT_AT_MAX_MS)
    return at_node(c, n, TW_EINVAL,
                   "'at' is outside the event times the engine accepts (years 0000 to 9999)");
  t->has_at = true;
  t->at_ms = ms;
  return 0;
}

static const char *const kTestKeys[] = {"name", "defaults", "given",      "at",
                                        "set",  "expect",   "expect_none"};

static int parse_test(const pctx_t *c, tw_ruletest_suite_t *s, size_t i, const ynode_t *item) {
  rt_test_t *t = &s->tests[i];
  t->line = item->line;
  int rc = check_map(c, item, "a test", 16);
  if (rc != 0) return rc;
  for (size_t k = 0; k < item->n; k += 2) {
    const ynode_t *key = item->kids[k];
    bool known = false;
    for (size_t m = 0; m < sizeof kTestKeys / sizeof kTestKeys[0] && !known; m++)
      known = scalar_is(key, kTestKeys[m]);
    if (!known) {
      char hint[96];
      suggest(key->text, kTestKeys, sizeof kTestKeys / sizeof kTestKeys[0], hint, sizeof hint);
      return at_node(c, key, TW_EINVAL, "unknown key '%.64s' in a test%s", key->text, hint);
    }
  }
  const ynode_t *name = map_get(item, "name");
  if (name == NULL) return at_node(c, item, TW_EINVAL, "a test needs a 'name'");
  rc = want_name(c, name, "a test's name");
  if (rc != 0) return rc;
  for (size_t j = 0; j < i; j++)
    if (strcmp(s->tests[j].name, name->text) == 0)
      return at_node(c, name, TW_EINVAL, "duplicate test name '%s' (first at line %d)", name->text,
                     s->tests[j].line);
  if ((t->name = dup_text(name)) == NULL) return TW_ENOMEM;
  const ynode_t *defaults = map_get(item, "defaults"), *n;
  if (defaults != NULL) {
    rc = check_map(c, defaults, "defaults", TW_RULETEST_MAX_KEYS);
    if (rc == 0) rc = check_keys(c, defaults);
    if (rc != 0) return rc;
  }
  if ((n = map_get(item, "given")) != NULL && (rc = parse_given(c, t, i + 1, n, defaults)) != 0)
    return rc;
  if ((n = map_get(item, "at")) != NULL && (rc = parse_at(c, t, n)) != 0) return rc;
  if ((n = map_get(item, "set")) != NULL && (rc = parse_set(c, t, n)) != 0) return rc;
  if ((n = map_get(item, "expect")) != NULL && (rc = parse_expect(c, t, n)) != 0) return rc;
  if ((n = map_get(item, "expect_none")) != NULL && (rc = parse_expect_none(c, t, n)) != 0)
    return rc;
  return 0;
}

static int read_file(const char *path, char **data, size_t *len, tw_rule_error_t *err) {
  *data = NULL;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return set_err(err, path, 0, 0, TW_ENOENT, "cannot open: %s", strerror(errno));
  char *buf = malloc(TW_RULES_MAX_FILE_BYTES + 1);
  if (buf == NULL) {
    fclose(f);
    return TW_ENOMEM;
  }
  size_t n = fread(buf, 1, TW_RULES_MAX_FILE_BYTES + 1, f);
  int bad = ferror(f);
  fclose(f);
  if (bad) {
    free(buf);
    return set_err(err, path, 0, 0, TW_ENOENT, "cannot read: %s", strerror(errno));
  }
  if (n > TW_RULES_MAX_FILE_BYTES) {
    free(buf);
    return set_err(err, path, 0, 0, TW_ETOOBIG, "file over %u bytes", TW_RULES_MAX_FILE_BYTES);
  }
  *data = buf;
  *len = n;
  return 0;
}

int tw_ruletest_load(const char *path, const char *data, size_t len, tw_ruletest_suite_t **out,
                     tw_rule_error_t *err) {
  *out = NULL;
  if (err != NULL) memset(err, 0, sizeof *err);
  char *owned = NULL;
  ynode_t *tests = NULL;
  int rc;
  if (data == NULL) {
    rc = read_file(path, &owned, &len, err);
    if (rc != 0) return rc;
    data = owned;
  } else if (len > TW_RULES_MAX_FILE_BYTES) {
    return set_err(err, path, 0, 0, TW_ETOOBIG, "file over %u bytes", TW_RULES_MAX_FILE_BYTES);
  }
  tw_ruletest_suite_t *s = calloc(1, sizeof *s);
  if (s == NULL || (s->path = strdup(path)) == NULL) {
    rc = TW_ENOMEM;
    goto fail;
  }
  loader_t L = {.path = path, .err = err};
  rc = parse_tree(&L, data, len, &tests);
  if (rc != 0) goto fail;
  pctx_t c = {path, err};
  if (tests != NULL) {
    const ynode_t *const *items;
    size_t n;
    rc = seq_items(&c, tests, "tests", TW_RULETEST_MAX_TESTS, &items, &n);
    if (rc != 0) goto fail;
    if (n > 0 && (s->tests = calloc(n, sizeof *s->tests)) == NULL) {
      rc = TW_ENOMEM;
      goto fail;
    }
    for (size_t i = 0; i < n; i++) {
      s->n_tests = i + 1;
      rc = parse_test(&c, s, i, items[i]);
      if (rc != 0) goto fail;
    }
  }
  ynode_free(tests);
  free(owned);
  *out = s;
  return 0;
fail:
  if (rc == TW_ENOMEM) set_err(err, path, 0, 0, rc, "out of memory");
  ynode_free(tests);
  free(owned);
  tw_ruletest_free(s);
  return rc;
}

size_t tw_ruletest_count(const tw_ruletest_suite_t *s) {
  return s->n_tests;
}
const char *tw_ruletest_path(const tw_ruletest_suite_t *s) {
  return s->path;
}
const char *tw_ruletest_name(const tw_ruletest_suite_t *s, size_t i) {
  return s->tests[i].name;
}
int tw_ruletest_line(const tw_ruletest_suite_t *s, size_t i) {
  return s->tests[i].line;
}
size_t tw_ruletest_n_given(const tw_ruletest_suite_t *s, size_t i) {
  return s->tests[i].n_given;
}

const char *tw_ruletest_given_json(const tw_ruletest_suite_t *s, size_t i, size_t j,
                                   size_t *len_bytes, int *line) {
  const rt_test_t *t = &s->tests[i];
  if (len_bytes != NULL) *len_bytes = t->given_len[j];
  if (line != NULL) *line = t->given_line[j];
  return t->given[j];
}

const char *const *tw_ruletest_set(const tw_ruletest_suite_t *s, size_t i, size_t *n) {
  *n = s->tests[i].n_set;
  return (const char *const *)s->tests[i].set;
}

int tw_ruletest_check_rules(const tw_ruletest_suite_t *s, const tw_ruleset_t *rs,
                            tw_rule_error_t *err) {
  size_t nr = tw_rules_n_rules(rs);
  const char *names[256];
  size_t nn = nr < 256 ? nr : 256; /* suggestions among the first 256 rules */
  for (size_t r = 0; r < nn; r++) names[r] = tw_rules_rule(rs, r)->name;
  for (size_t i = 0; i < s->n_tests; i++) {
    const rt_test_t *t = &s->tests[i];
    for (size_t k = 0; k < t->n_expect + t->n_none; k++) {
      const char *name = k < t->n_expect ? t->expect[k].rule : t->none[k - t->n_expect].name;
      bool found = false;
      for (size_t r = 0; r < nr && !found; r++)
        found = strcmp(tw_rules_rule(rs, r)->name, name) == 0;
      if (found) continue;
      char hint[96];
      suggest(name, names, nn, hint, sizeof hint);
      int line = k < t->n_expect ? t->expect[k].rule_line : t->none[k - t->n_expect].line;
      int col = k < t->n_expect ? t->expect[k].rule_col : t->none[k - t->n_expect].col;
      return set_err(err, s->path, line, col, TW_EINVAL, "unknown rule '%.64s' in test '%.64s'%s",
                     name, t->name, hint);
    }
  }
  return 0;
}

/* ---- reports --------------------------------------------------------------------------------- */

void tw_ruletest_report_init(tw_ruletest_report_t *rep) {
  memset(rep, 0, sizeof *rep);
  rep->passed = true;
}

void tw_ruletest_report_fini(tw_ruletest_report_t *rep) {
  for (size_t i = 0; i < rep->n_lines; i++) free(rep->lines[i]);
  free(rep->lines);
  memset(rep, 0, sizeof *rep);
}

static int report_add(tw_ruletest_report_t *rep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int report_add(tw_ruletest_report_t *rep, const char *fmt, ...) {
  rep->passed = false;
  if (rep->n_lines == rep->cap_lines) {
    size_t cap = rep->cap_lines ? rep->cap_lines * 2 : 8;
    char **l = realloc(rep->lines, cap * sizeof *l);
    if (l == NULL) return TW_ENOMEM;
    rep->lines = l;
    rep->cap_lines = cap;
  }
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return TW_EINVAL;
  char *line = malloc((size_t)n + 1);
  if (line == NULL) return TW_ENOMEM;
  va_start(ap, fmt);
  vsnprintf(line, (size_t)n + 1, fmt, ap);
  va_end(ap);
  rep->lines[rep->n_lines++] = line;
  return 0;
}

/* ---- matching -------------------------------------------------------------------------------- */

/* A string and a number match when the string is the number's JSON text. */
static bool str_is_number(const json_t *str, const json_t *num) {
  char buf[64];
  if (json_is_integer(num))
    snprintf(buf, sizeof buf, "%" JSON_INTEGER_FORMAT, json_integer_value(num));
  else
    return false;
  return strcmp(json_string_value(str), buf) == 0;
}

static bool value_matches(const json_t *want, const json_t *got) {
  if (json_is_object(want)) {
    if (!json_is_object(got)) return false;
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)want, k, v) {
      const json_t *g = json_object_get(got, k);
      if (g == NULL || !value_matches(v, g)) return false;
    }
    return true;
  }
  if (json_is_array(want)) {
    if (!json_is_array(got) || json_array_size(want) != json_array_size(got)) return false;
    for (size_t i = 0; i < json_array_size(want); i++)
      if (!value_matches(json_array_get(want, i), json_array_get(got, i))) return false;
    return true;
  }
  if (json_equal((json_t *)want, (json_t *)got)) return true;
  if (json_is_string(want) && json_is_string(got)) {
    int64_t a, b;
    return tw_parse_rfc3339(json_string_value(want), json_string_length(want), &a) == 0 &&
           tw_parse_rfc3339(json_string_value(got), json_string_length(got), &b) == 0 && a == b;
  }
  if (json_is_number(want) && json_is_number(got))
    return json_number_value(want) == json_number_value(got) &&
           (!json_is_integer(want) || !json_is_integer(got));
  if (json_is_string(want) && json_is_number(got)) return str_is_number(want, got);
  if (json_is_number(want) && json_is_string(got)) return str_is_number(got, want);
  return false;
}

static bool expect_matches(const rt_expect_t *e, const json_t *alert) {
  if (!value_matches(e->fields, alert)) return false;
  if (e->message_contains != NULL) {
    const char *m = json_string_value(json_object_get(alert, "message"));
    if (m == NULL || strstr(m, e->message_contains) == NULL) return false;
  }
  return true;
}

typedef struct matcher {
  size_t n_exp, n_alerts;
  size_t **cand; /* per expectation: the alerts it matches */
  size_t *n_cand;
  size_t *owner; /* per alert: the expectation matched to it, or SIZE_MAX */
  bool *seen;    /* per alert, in one search */
} matcher_t;

/* augment: Kuhn's search for an augmenting path from expectation e. Recursion depth is at most
 * the number of expectations (TW_RULETEST_MAX_EXPECT). */
static bool augment(matcher_t *m, size_t e) {
  for (size_t k = 0; k < m->n_cand[e]; k++) {
    size_t a = m->cand[e][k];
    if (m->seen[a]) continue;
    m->seen[a] = true;
    if (m->owner[a] == SIZE_MAX || augment(m, m->owner[a])) {
      m->owner[a] = e;
      return true;
    }
  }
  return false;
}

int tw_ruletest_match(const tw_ruletest_suite_t *s, size_t i, const char *const *alerts,
                      const size_t *lens, size_t n, tw_ruletest_report_t *rep) {
  const rt_test_t *t = &s->tests[i];
  int rc = 0;
  json_t **parsed = calloc(n ? n : 1, sizeof *parsed);
  const char **rule = calloc(n ? n : 1, sizeof *rule);
  matcher_t m = {.n_exp = t->n_expect, .n_alerts = n};
  m.cand = calloc(t->n_expect ? t->n_expect : 1, sizeof *m.cand);
  m.n_cand = calloc(t->n_expect ? t->n_expect : 1, sizeof *m.n_cand);
  m.owner = malloc((n ? n : 1) * sizeof *m.owner);
  m.seen = malloc(n ? n : 1);
  if (parsed == NULL || rule == NULL || m.cand == NULL || m.n_cand == NULL || m.owner == NULL ||
      m.seen == NULL) {
    rc = TW_ENOMEM;
    goto done;
  }
  for (size_t a = 0; a < n; a++) {
    parsed[a] = json_loadb(alerts[a], lens[a], 0, NULL);
    rule[a] = json_string_value(json_object_get(parsed[a], "rule"));
    if (rule[a] == NULL) {
      rc = TW_EINVAL;
      goto done;
    }
    m.owner[a] = SIZE_MAX;
  }
  for (size_t e = 0; e < t->n_expect; e++) {
    m.cand[e] = malloc((n ? n : 1) * sizeof **m.cand);
    if (m.cand[e] == NULL) {
      rc = TW_ENOMEM;
      goto done;
    }
    for (size_t a = 0; a < n; a++)
      if (strcmp(rule[a], t->expect[e].rule) == 0 && expect_matches(&t->expect[e], parsed[a]))
        m.cand[e][m.n_cand[e]++] = a;
  }
  bool *matched = calloc(t->n_expect ? t->n_expect : 1, sizeof *matched);
  if (matched == NULL) {
    rc = TW_ENOMEM;
    goto done;
  }
  for (size_t e = 0; e < t->n_expect; e++) {
    memset(m.seen, 0, n ? n : 1);
    augment(&m, e);
  }
  for (size_t a = 0; a < n; a++)
    if (m.owner[a] != SIZE_MAX) matched[m.owner[a]] = true;
  for (size_t e = 0; e < t->n_expect && rc == 0; e++)
    if (!matched[e]) rc = report_add(rep, "- expected %s", t->expect[e].json);
  free(matched);
  for (size_t a = 0; a < n && rc == 0; a++) {
    if (m.owner[a] != SIZE_MAX) continue;
    bool counted = false;
    for (size_t e = 0; e < t->n_expect && !counted; e++)
      counted = strcmp(t->expect[e].rule, rule[a]) == 0;
    for (size_t k = 0; k < t->n_none && !counted; k++)
      counted = strcmp(t->none[k].name, rule[a]) == 0;
    if (counted) rc = report_add(rep, "+ unexpected %.*s", (int)lens[a], alerts[a]);
  }
done:
  for (size_t a = 0; parsed != NULL && a < n; a++) json_decref(parsed[a]);
  for (size_t e = 0; m.cand != NULL && e < t->n_expect; e++) free(m.cand[e]);
  free(parsed);
  free(rule);
  free(m.cand);
  free(m.n_cand);
  free(m.owner);
  free(m.seen);
  return rc;
}

/* ---- running --------------------------------------------------------------------------------- */

/* The alerts of one run, in publication order. */
typedef struct collected {
  char **json;
  size_t *len;
  size_t n, cap;
  bool overflow; /* more than TW_RULETEST_MAX_ALERTS */
  bool nomem;
} collected_t;

typedef struct mem_sink {
  tw_sink_t base;
  collected_t *dst;
} mem_sink_t;

static int mem_write(tw_sink_t *sink, const tw_alert_t *alert, const char *json, size_t len) {
  (void)alert;
  collected_t *c = ((mem_sink_t *)sink)->dst;
  if (c->n == TW_RULETEST_MAX_ALERTS) {
    c->overflow = true;
    return 0;
  }
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 16;
    char **j = realloc(c->json, cap * sizeof *j);
    if (j == NULL) goto nomem;
    c->json = j;
    size_t *l = realloc(c->len, cap * sizeof *l);
    if (l == NULL) goto nomem;
    c->len = l;
    c->cap = cap;
  }
  char *copy = malloc(len + 1);
  if (copy == NULL) goto nomem;
  memcpy(copy, json, len);
  copy[len] = '\0';
  c->json[c->n] = copy;
  c->len[c->n++] = len;
  return 0;
nomem:
  c->nomem = true;
  return TW_EIO; /* counted by the pipeline as a sink error; the run reports out of memory */
}

static int mem_flush(tw_sink_t *sink) {
  (void)sink;
  return 0;
}

static void mem_close(tw_sink_t *sink) {
  free(sink);
}

/* Not in the sink table: only the test runner makes it, around its own collection. */
static const tw_sink_vt_t kMemSinkVt = {"ruletest-memory", NULL, mem_write, mem_flush, mem_close};

static void collected_free(collected_t *c) {
  for (size_t k = 0; k < c->n; k++) free(c->json[k]);
  free(c->json);
  free(c->len);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* report_rejected: one "!" line per dead-lettered given event (the first TW_RULETEST_MAX_REJECTS),
 * with the decoder's (or the pipeline's) reason and the event's YAML line. */
static int report_rejected(const char *dl_path, tw_ruletest_report_t *rep) {
  FILE *f = fopen(dl_path, "r");
  if (f == NULL) return errno == ENOENT ? 0 : TW_EIO;
  char *line = NULL;
  size_t cap = 0, count = 0;
  ssize_t got;
  int rc = 0;
  while (rc == 0 && (got = getline(&line, &cap, f)) > 0) {
    if (++count > TW_RULETEST_MAX_REJECTS) continue;
    json_t *o = json_loadb(line, (size_t)got, 0, NULL);
    const char *reason = json_string_value(json_object_get(o, "reason"));
    const char *field = json_string_value(json_object_get(o, "field"));
    const char *msg = json_string_value(json_object_get(o, "message"));
    json_int_t at = json_integer_value(json_object_get(o, "line"));
    rc = report_add(rep, "! given event at line %lld rejected: %s%s%s%s: %s", (long long)at,
                    reason ? reason : "invalid", field ? " (" : "", field ? field : "",
                    field ? ")" : "", msg ? msg : "");
    json_decref(o);
  }
  free(line);
  fclose(f);
  if (rc == 0 && count > TW_RULETEST_MAX_REJECTS)
    rc = report_add(rep, "! ... and %zu more rejected given events",
                    count - TW_RULETEST_MAX_REJECTS);
  return rc;
}

int tw_ruletest_run(const tw_ruletest_suite_t *s, size_t i, const tw_ruletest_opts_t *opts,
                    tw_ruletest_report_t *rep) {
  const rt_test_t *t = &s->tests[i];
  tw_ruletest_report_init(rep);
  const char *tmp = opts && opts->tmp_dir ? opts->tmp_dir : getenv("TMPDIR");
  if (tmp == NULL || tmp[0] == '\0') tmp = "/tmp";
  char dir[4096], dl[4200], err[4096];
  int rc;
  if (snprintf(dir, sizeof dir, "%s/tutorwatch-test-XXXXXX", tmp) >= (int)sizeof dir) {
    report_add(rep, "! temporary directory path too long: %s", tmp);
    return TW_EIO;
  }
  if (mkdtemp(dir) == NULL) {
    report_add(rep, "! cannot make a temporary state directory in %s: %s", tmp, strerror(errno));
    return TW_EIO;
  }
  snprintf(dl, sizeof dl, "%s/dead-letter.jsonl", dir);
  collected_t col = {0};
  tw_pipeline_t *p = NULL;
  tw_pipeline_opts_t po = {
      .rules_path = s->path,
      .schema_path = opts ? opts->schema_path : NULL,
      .state_dir = dir,
      .dead_letter_path = dl,
      .no_sync = true,
      .allowed_lateness_ms = -1,
      .max_future_skew_ms = -1,
      .dedup_horizon_ms = -1,
      .params_set = (const char *const *)t->set, /* the test's `set`, as `run --set` */
      .n_params_set = t->n_set,
  };
  rc = tw_pipeline_open(&po, &p, err, sizeof err);
  if (rc != 0) {
    report_add(rep, "! cannot open the pipeline: %s", err);
    goto done;
  }
  mem_sink_t *sink = calloc(1, sizeof *sink);
  if (sink == NULL) {
    rc = TW_ENOMEM;
    goto done;
  }
  sink->base.vt = &kMemSinkVt;
  sink->dst = &col;
  rc = tw_pipeline_add_sink(p, &sink->base);
  if (rc != 0) {
    free(sink);
    goto done;
  }
  for (size_t j = 0; j < t->n_given && rc == 0; j++) {
    tw_record_t rec = {.data = t->given[j],
                       .len_bytes = t->given_len[j],
                       .full_len_bytes = t->given_len[j],
                       .format = TW_FORMAT_JSONL,
                       .origin = s->path,
                       .offset_bytes = j,
                       .line = (uint64_t)t->given_line[j]};
    rc = tw_pipeline_record(p, &rec);
  }
  if (rc == 0) rc = tw_pipeline_flush(p);
  bool at_ok = true;
  if (rc == 0 && t->has_at) {
    int64_t newest = tw_pipeline_max_event_time(p);
    if (newest != INT64_MIN && t->at_ms < newest) {
      char a[40], b[40];
      tw_format_rfc3339(t->at_ms, RT_TZ_OFFSET_MIN, a, sizeof a);
      tw_format_rfc3339(newest, RT_TZ_OFFSET_MIN, b, sizeof b);
      at_ok = false;
      rc = report_add(rep, "! at %s is before the newest given event (%s): time cannot go back", a,
                      b);
    } else {
      rc = tw_pipeline_sweep_until(p, t->at_ms);
    }
  }
  if (rc == 0) rc = tw_pipeline_commit(p);
  tw_pipeline_stats_t st;
  tw_pipeline_stats(p, &st);
  int crc = tw_pipeline_close(p);
  p = NULL;
  if (rc == 0) rc = crc;
  if (rc == 0 && col.nomem) rc = TW_ENOMEM;
  if (rc != 0) {
    report_add(rep, "! the engine failed: %s", tw_strerror(rc));
    goto done;
  }
  rc = report_rejected(dl, rep);
  if (rc == 0 && col.overflow)
    rc = report_add(rep, "! more than %d alerts: the test is too large to compare",
                    TW_RULETEST_MAX_ALERTS);
  if (rc == 0 && at_ok && !col.overflow)
    rc = tw_ruletest_match(s, i, (const char *const *)col.json, col.len, col.n, rep);
  if (rc == 0 && !rep->passed && st.duplicates > 0)
    rc = report_add(rep, "! note: %llu given %s a duplicate event_id and %s not processed",
                    (unsigned long long)st.duplicates,
                    st.duplicates == 1 ? "event had" : "events had",
                    st.duplicates == 1 ? "was" : "were");
done:
  tw_pipeline_close(p);
  collected_free(&col);
  nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  if (rc != 0) rep->passed = false;
  return rc;
}
