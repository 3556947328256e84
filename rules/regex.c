/*
 * regex.c: PCRE2 regexes of the rule language, compiled with PCRE2_UTF and JIT-compiled once at
 * load; `matches any(list)` becomes ONE alternation of the list's words, each escaped.
 *
 * Matching is bounded: every match runs under the ruleset's match context with match limit
 * TW_REGEX_MATCH_LIMIT, depth limit TW__REGEX_DEPTH_LIMIT and a heap limit, so a
 * catastrophic-backtracking pattern such as `(a+)+$` stops within milliseconds with TW_ELIMIT.
 * Subjects are matched with PCRE2_NO_UTF_CHECK: the decoders validate UTF-8 once per event.
 *
 * Match data: the ruleset is shared read-only between threads, so match data cannot live in it.
 * Each thread gets one match data (one ovector pair) on its first match, reused by every later
 * match on that thread: no allocation per match. It is freed when the thread exits (a pthread key
 * destructor) and stays reachable from a global registry until then, so the main thread's copy
 * is not a leak at exit. A thread that cannot allocate it gets TW_ENOMEM from the match.
 */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "rules_internal.h"
#include "tw_error.h"

#define TW__REGEX_HEAP_LIMIT_KIB 20000

struct tw__regex {
  pcre2_code *code;
  pcre2_match_context *mctx; /* the ruleset's; not owned */
  tw__regex_t *next;
};

/* ---- per-thread match data ---- */
typedef struct md_slot {
  pcre2_match_data *md;
  struct md_slot *prev, *next;
} md_slot_t;

static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static pthread_key_t md_key;
static pthread_mutex_t md_lock = PTHREAD_MUTEX_INITIALIZER;
static md_slot_t *md_all; /* every live thread's slot */
static _Thread_local md_slot_t *md_mine;

static void md_destroy(void *p) {
  md_slot_t *s = p;
  pthread_mutex_lock(&md_lock);
  if (s->prev)
    s->prev->next = s->next;
  else
    md_all = s->next;
  if (s->next) s->next->prev = s->prev;
  pthread_mutex_unlock(&md_lock);
  pcre2_match_data_free(s->md);
  free(s);
}

static void md_init_key(void) {
  (void)pthread_key_create(&md_key, md_destroy);
}

static pcre2_match_data *thread_match_data(void) {
  if (md_mine != NULL) return md_mine->md;
  pthread_once(&md_once, md_init_key);
  md_slot_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->md = pcre2_match_data_create(1, NULL);
  if (s->md == NULL) {
    free(s);
    return NULL;
  }
  pthread_mutex_lock(&md_lock);
  s->next = md_all;
  if (md_all) md_all->prev = s;
  md_all = s;
  pthread_mutex_unlock(&md_lock);
  (void)pthread_setspecific(md_key, s);
  md_mine = s;
  return s->md;
}

/* ---- compile ---- */

static int ensure_match_ctx(tw_ruleset_t *rs, tw__perr_t *err) {
  if (rs->match_ctx != NULL) return 0;
  pcre2_match_context *m = pcre2_match_context_create(NULL);
  if (m == NULL) return tw__perr_set(err, TW_ENOMEM, 0, "out of memory");
  pcre2_set_match_limit(m, TW_REGEX_MATCH_LIMIT);
  pcre2_set_depth_limit(m, TW__REGEX_DEPTH_LIMIT);
  pcre2_set_heap_limit(m, TW__REGEX_HEAP_LIMIT_KIB);
  rs->match_ctx = m;
  return 0;
}

int tw__regex_compile(tw_ruleset_t *rs, const char *pattern, size_t len, const tw__regex_t **out,
                      tw__perr_t *err) {
  int errcode = 0;
  PCRE2_SIZE erroff = 0;
  if (ensure_match_ctx(rs, err) != 0) return err->code;
  if (rs->n_regexes >= TW__MAX_REGEXES)
    return tw__perr_set(err, TW_ETOOBIG, 0,
                        "more than %d regexes to compile (a macro's regex is compiled at each use)",
                        TW__MAX_REGEXES);
  pcre2_code *code = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_NEVER_BACKSLASH_C,
                                   &errcode, &erroff, NULL);
  if (code == NULL) {
    PCRE2_UCHAR buf[256];
    if (pcre2_get_error_message(errcode, buf, sizeof buf) < 0) strcpy((char *)buf, "error");
    return tw__perr_set(err, TW_EPARSE, 0, "invalid regex at offset %zu: %s", (size_t)erroff,
                        (const char *)buf);
  }
  (void)pcre2_jit_compile(code, PCRE2_JIT_COMPLETE); /* without JIT the interpreter is used */
  size_t size = 0, jit = 0;
  (void)pcre2_pattern_info(code, PCRE2_INFO_SIZE, &size);
  (void)pcre2_pattern_info(code, PCRE2_INFO_JITSIZE, &jit);
  if (size + jit > TW__MAX_REGEX_BYTES - rs->regex_bytes) {
    pcre2_code_free(code);
    return tw__perr_set(err, TW_ETOOBIG, 0,
                        "regexes too large: compiled and JIT-compiled they would exceed %zu MiB (a "
                        "macro's regex is compiled at each use)",
                        TW__MAX_REGEX_BYTES >> 20);
  }
  rs->regex_bytes += size + jit;
  tw__regex_t *re = tw__arena_alloc(&rs->arena, sizeof *re);
  if (re == NULL) {
    pcre2_code_free(code);
    return tw__perr_set(err, TW_ENOMEM, 0, "out of memory");
  }
  re->code = code;
  re->mctx = rs->match_ctx;
  re->next = rs->regexes;
  rs->regexes = re;
  rs->n_regexes++;
  *out = re;
  return 0;
}

int tw__regex_compile_list(tw_ruleset_t *rs, tw__list_t *list, const tw__regex_t **out,
                           tw__perr_t *err) {
  if (list->alternation != NULL) {
    *out = list->alternation;
    return 0;
  }
  if (list->n == 0)
    return tw__perr_set(err, TW_EINVAL, 0, "list '%s' is empty: it can never match", list->name);
  size_t cap = 8;
  for (size_t i = 0; i < list->n; i++) cap += 2 * (size_t)list->items[i].len + 1;
  char *pat = malloc(cap);
  if (pat == NULL) return tw__perr_set(err, TW_ENOMEM, 0, "out of memory");
  size_t o = 0;
  memcpy(pat + o, "(?:", 3);
  o += 3;
  for (size_t i = 0; i < list->n; i++) {
    if (i) pat[o++] = '|';
    for (uint32_t k = 0; k < list->items[i].len; k++) {
      unsigned char c = (unsigned char)list->items[i].ptr[k];
      int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
      if (c < 0x80 && !alnum) pat[o++] = '\\'; /* backslash + non-alphanumeric is a literal */
      pat[o++] = (char)c;
    }
  }
  pat[o++] = ')';
  int rc = tw__regex_compile(rs, pat, o, out, err);
  free(pat);
  if (rc == 0) list->alternation = *out;
  return rc;
}

int tw__regex_match(const tw__regex_t *re, const char *s, size_t len, tw_eval_ctx_t *ctx) {
  pcre2_match_data *md = thread_match_data();
  if (md == NULL) return TW_ENOMEM;
  int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, PCRE2_NO_UTF_CHECK, md, re->mctx);
  if (rc >= 0) return 1;
  if (rc == PCRE2_ERROR_NOMATCH) return 0;
  if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
      rc == PCRE2_ERROR_JIT_STACKLIMIT) {
    ctx->regex_limit_hits++;
    return TW_ELIMIT;
  }
  return TW_EINVAL;
}

/* Length of a quantifier at pattern[i] (0 if none); *unbounded when it has no upper bound. */
static size_t quantifier(const char *pt, size_t len, size_t i, int *unbounded) {
  *unbounded = 0;
  if (i >= len) return 0;
  if (pt[i] == '*' || pt[i] == '+') {
    *unbounded = 1;
    return 1;
  }
  if (pt[i] == '?') return 1;
  if (pt[i] != '{') return 0;
  size_t k = i + 1, digits = 0;
  while (k < len && pt[k] >= '0' && pt[k] <= '9') k++, digits++;
  if (digits == 0) return 0;
  if (k < len && pt[k] == '}') return k + 1 - i;
  if (k >= len || pt[k] != ',') return 0;
  k++;
  size_t upper = 0;
  while (k < len && pt[k] >= '0' && pt[k] <= '9') k++, upper++;
  if (k >= len || pt[k] != '}') return 0;
  *unbounded = upper == 0;
  return k + 1 - i;
}

long tw__regex_risky(const char *pt, size_t len) {
  struct {
    int unbounded, atomic;
  } st[64];
  int depth = 0, group_unb = 0; /* group_unb: the atom just closed is a group holding one */
  st[0].unbounded = st[0].atomic = 0;
  size_t i = 0;
  while (i < len) {
    char c = pt[i];
    int atom_group = 0;
    if (c == '\\') {
      i += 2;
    } else if (c == '[') {
      i++;
      if (i < len && pt[i] == '^') i++;
      if (i < len && pt[i] == ']') i++;
      while (i < len && pt[i] != ']') i += pt[i] == '\\' ? 2 : 1;
      i++;
    } else if (c == '(') {
      if (depth + 1 >= (int)(sizeof st / sizeof st[0])) return -1; /* too deep to judge */
      depth++;
      st[depth].unbounded = 0;
      st[depth].atomic = i + 2 < len && pt[i + 1] == '?' && pt[i + 2] == '>';
      i++;
      continue;
    } else if (c == ')') {
      if (depth == 0) return -1;
      int inner = st[depth].unbounded && !st[depth].atomic;
      depth--;
      st[depth].unbounded |= inner;
      group_unb = inner;
      atom_group = 1;
      i++;
    } else {
      i++;
    }
    int unb;
    size_t q = quantifier(pt, len, i, &unb);
    if (q == 0) continue;
    int possessive = i + q < len && pt[i + q] == '+';
    if (atom_group && group_unb && unb && !possessive) return (long)i;
    if (unb && !possessive) st[depth].unbounded = 1;
    i += q + (i + q < len && (pt[i + q] == '?' || pt[i + q] == '+'));
  }
  return -1;
}

void tw__regex_release(tw_ruleset_t *rs) {
  tw__regex_t *chain = rs->regexes;
  rs->regexes = NULL;
  pcre2_match_context_free(rs->match_ctx);
  rs->match_ctx = NULL;
  while (chain != NULL) {
    tw__regex_t *next = chain->next;
    pcre2_code_free(chain->code);
    chain = next;
  }
}
