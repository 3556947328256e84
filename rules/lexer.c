/*
 * lexer.c: tokens of the expression language.
 *
 * Numbers carry their unit in a suffix: `60` (int), `5000yuan` / `12.50yuan` / `500000fen`
 * (money, converted to integer fen exactly, at most two decimals, never through floating point),
 * `500ms 15s 30m 12h 7d` (durations in ms). A number with a fraction and no unit is a decimal
 * (`0.3`, a double). Every integer conversion checks for int64 overflow.
 * Strings are double-quoted with the escapes \" \\ \n \t \uXXXX and are decoded into the
 * ruleset's arena. Each call does work linear in the token's length; positions are byte offsets.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rules_internal.h"
#include "tw_error.h"
#include "tw_event.h"

static int is_digit(char c) {
  return c >= '0' && c <= '9';
}

static int is_ident_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static int is_ident(char c) {
  return is_ident_start(c) || is_digit(c);
}

const char *tw__tok_name(tw__tok_t kind) {
  static const char *const names[] = {"end of expression",
                                      "integer",
                                      "money",
                                      "duration",
                                      "string",
                                      "name",
                                      "'('",
                                      "')'",
                                      "'['",
                                      "']'",
                                      "','",
                                      "'=='",
                                      "'!='",
                                      "'<'",
                                      "'<='",
                                      "'>'",
                                      "'>='",
                                      "'+'",
                                      "'-'",
                                      "'*'",
                                      "'/'",
                                      "'%'",
                                      "'and'",
                                      "'or'",
                                      "'not'",
                                      "'in'",
                                      "'matches'",
                                      "'true'",
                                      "'false'",
                                      "decimal",
                                      "'contains'",
                                      "'startswith'"};
  if ((unsigned)kind >= sizeof names / sizeof names[0]) return "?";
  return names[kind];
}

static int lex_number(tw__lexer_t *lx, tw__token_t *tok, tw__perr_t *err) {
  const char *s = lx->src;
  size_t start = lx->pos, i = lx->pos;
  int64_t whole = 0;
  while (i < lx->len && is_digit(s[i])) {
    if (__builtin_mul_overflow(whole, 10, &whole) ||
        __builtin_add_overflow(whole, s[i] - '0', &whole))
      return tw__perr_set(err, TW_EPARSE, start, "number too large");
    i++;
  }
  size_t frac_start = 0, frac_len = 0;
  if (i + 1 < lx->len && s[i] == '.' && is_digit(s[i + 1])) {
    frac_start = ++i;
    while (i < lx->len && is_digit(s[i])) i++;
    frac_len = i - frac_start;
  }
  size_t unit_start = i;
  while (i < lx->len && is_ident(s[i])) i++;
  const char *unit = s + unit_start;
  size_t unit_len = i - unit_start;
  tok->pos = start;
  tok->len = i - start;
  lx->pos = i;
  if (unit_len == 4 && memcmp(unit, "yuan", 4) == 0) {
    if (frac_len > 2)
      return tw__perr_set(err, TW_EPARSE, start, "money has at most 2 decimals (fen)");
    int64_t frac = 0;
    for (size_t k = 0; k < 2; k++) frac = frac * 10 + (k < frac_len ? s[frac_start + k] - '0' : 0);
    if (__builtin_mul_overflow(whole, 100, &tok->i) ||
        __builtin_add_overflow(tok->i, frac, &tok->i))
      return tw__perr_set(err, TW_EPARSE, start, "amount too large");
    tok->kind = TW__TK_MONEY;
    return 0;
  }
  if (frac_len > 0) {
    if (unit_len != 0)
      return tw__perr_set(err, TW_EPARSE, start, "only yuan amounts may have decimals");
    char tmp[64];
    if (unit_start - start >= sizeof tmp)
      return tw__perr_set(err, TW_EPARSE, start, "decimal has more than %zu digits",
                          sizeof tmp - 2);
    memcpy(tmp, s + start, unit_start - start);
    tmp[unit_start - start] = '\0';
    tok->d = strtod(tmp, NULL); /* digits '.' digits: no locale or exponent surprises */
    if (!isfinite(tok->d)) return tw__perr_set(err, TW_EPARSE, start, "decimal too large");
    tok->kind = TW__TK_DEC;
    return 0;
  }
  if (unit_len == 0) {
    tok->kind = TW__TK_INT;
    tok->i = whole;
    return 0;
  }
  if (unit_len == 3 && memcmp(unit, "fen", 3) == 0) {
    tok->kind = TW__TK_MONEY;
    tok->i = whole;
    return 0;
  }
  int64_t ms = tw_duration_unit_ms(unit, unit_len);
  if (ms == 0)
    return tw__perr_set(
        err, TW_EPARSE, unit_start,
        "unknown unit '%.*s' (write 5000yuan, 500000fen, 500ms, 15s, 30m, 12h or 7d)",
        (int)(unit_len > 32 ? 32 : unit_len), unit);
  if (__builtin_mul_overflow(whole, ms, &tok->i))
    return tw__perr_set(err, TW_EPARSE, start, "duration too large");
  tok->kind = TW__TK_DURATION;
  return 0;
}

static int hex4(const char *s, size_t avail, uint32_t *out) {
  uint32_t v = 0;
  if (avail < 4) return -1;
  for (int k = 0; k < 4; k++) {
    char c = s[k];
    int d = (c >= '0' && c <= '9')   ? c - '0'
            : (c >= 'a' && c <= 'f') ? c - 'a' + 10
            : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                     : -1;
    if (d < 0) return -1;
    v = v * 16 + (uint32_t)d;
  }
  *out = v;
  return 0;
}

static size_t put_utf8(char *o, uint32_t cp) {
  if (cp < 0x80) {
    o[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
  }
  o[0] = (char)(0xE0 | (cp >> 12));
  o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
  o[2] = (char)(0x80 | (cp & 0x3F));
  return 3;
}

static int lex_string(tw__lexer_t *lx, tw__token_t *tok, tw__perr_t *err) {
  size_t start = lx->pos, i = lx->pos + 1;
  /* decoded text is never longer than the source text */
  size_t end = i;
  while (end < lx->len && lx->src[end] != '"') end += lx->src[end] == '\\' ? 2 : 1;
  if (end >= lx->len) return tw__perr_set(err, TW_EPARSE, start, "unterminated string");
  char *out = tw__arena_alloc(lx->arena, end - i + 1);
  if (out == NULL) return tw__perr_set(err, TW_ENOMEM, start, "out of memory");
  size_t o = 0;
  while (i < end) {
    char c = lx->src[i];
    if (c != '\\') {
      out[o++] = c;
      i++;
      continue;
    }
    char e = lx->src[i + 1];
    switch (e) {
      case '"':
        out[o++] = '"';
        i += 2;
        break;
      case '\\':
        out[o++] = '\\';
        i += 2;
        break;
      case 'n':
        out[o++] = '\n';
        i += 2;
        break;
      case 't':
        out[o++] = '\t';
        i += 2;
        break;
      case 'u': {
        uint32_t cp;
        if (hex4(lx->src + i + 2, end - (i + 2), &cp) != 0)
          return tw__perr_set(err, TW_EPARSE, i, "\\u needs 4 hex digits");
        if (cp == 0 || (cp >= 0xD800 && cp <= 0xDFFF))
          return tw__perr_set(err, TW_EPARSE, i, "\\u%04X is not allowed in a string", cp);
        o += put_utf8(out + o, cp);
        i += 6;
        break;
      }
      default:
        return tw__perr_set(err, TW_EPARSE, i,
                            "unknown escape '\\%c' (use \\\" \\\\ \\n \\t or \\uXXXX; in a regex "
                            "write \\\\d for \\d)",
                            (e >= 0x20 && e < 0x7f) ? e : '?');
    }
  }
  out[o] = '\0';
  tok->kind = TW__TK_STRING;
  tok->pos = start;
  tok->len = end + 1 - start;
  tok->s = out;
  tok->slen = o;
  lx->pos = end + 1;
  return 0;
}

static const struct {
  const char *word;
  tw__tok_t kind;
} keywords[] = {{"and", TW__TK_AND},
                {"or", TW__TK_OR},
                {"not", TW__TK_NOT},
                {"in", TW__TK_IN},
                {"matches", TW__TK_MATCHES},
                {"true", TW__TK_TRUE},
                {"false", TW__TK_FALSE},
                {"contains", TW__TK_CONTAINS},
                {"startswith", TW__TK_STARTSWITH}};

int tw__lex_next(tw__lexer_t *lx, tw__token_t *tok, tw__perr_t *err) {
  const char *s = lx->src;
  while (lx->pos < lx->len &&
         (s[lx->pos] == ' ' || s[lx->pos] == '\t' || s[lx->pos] == '\n' || s[lx->pos] == '\r'))
    lx->pos++;
  memset(tok, 0, sizeof *tok);
  tok->pos = lx->pos;
  if (lx->pos >= lx->len) {
    tok->kind = TW__TK_EOF;
    return 0;
  }
  char c = s[lx->pos];
  if (is_digit(c)) return lex_number(lx, tok, err);
  if (c == '"') return lex_string(lx, tok, err);
  if (is_ident_start(c)) {
    size_t i = lx->pos;
    while (i < lx->len && is_ident(s[i])) i++;
    tok->len = i - lx->pos;
    tok->kind = TW__TK_IDENT;
    tok->s = s + lx->pos;
    tok->slen = tok->len;
    for (size_t k = 0; k < sizeof keywords / sizeof keywords[0]; k++)
      if (strlen(keywords[k].word) == tok->len && memcmp(keywords[k].word, tok->s, tok->len) == 0)
        tok->kind = keywords[k].kind;
    lx->pos = i;
    return 0;
  }
  char n = lx->pos + 1 < lx->len ? s[lx->pos + 1] : '\0';
  tok->len = 1;
  switch (c) {
    case '(':
      tok->kind = TW__TK_LPAREN;
      break;
    case ')':
      tok->kind = TW__TK_RPAREN;
      break;
    case '[':
      tok->kind = TW__TK_LBRACK;
      break;
    case ']':
      tok->kind = TW__TK_RBRACK;
      break;
    case ',':
      tok->kind = TW__TK_COMMA;
      break;
    case '+':
      tok->kind = TW__TK_PLUS;
      break;
    case '-':
      tok->kind = TW__TK_MINUS;
      break;
    case '*':
      tok->kind = TW__TK_STAR;
      break;
    case '/':
      tok->kind = TW__TK_SLASH;
      break;
    case '%':
      tok->kind = TW__TK_PERCENT;
      break;
    case '=':
      if (n != '=')
        return tw__perr_set(err, TW_EPARSE, lx->pos, "unexpected '=' (write '==' to compare)");
      tok->kind = TW__TK_EQ;
      tok->len = 2;
      break;
    case '!':
      if (n != '=')
        return tw__perr_set(err, TW_EPARSE, lx->pos, "unexpected '!' (write 'not' or '!=')");
      tok->kind = TW__TK_NE;
      tok->len = 2;
      break;
    case '<':
      tok->kind = n == '=' ? TW__TK_LE : TW__TK_LT;
      tok->len = n == '=' ? 2 : 1;
      break;
    case '>':
      tok->kind = n == '=' ? TW__TK_GE : TW__TK_GT;
      tok->len = n == '=' ? 2 : 1;
      break;
    case '&':
    case '|':
      return tw__perr_set(err, TW_EPARSE, lx->pos, "unexpected '%c' (write 'and' / 'or')", c);
    default:
      if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
        return tw__perr_set(err, TW_EPARSE, lx->pos, "unexpected character '%c'", c);
      {
        /* show the whole UTF-8 sequence, bounded by what is left of the source */
        size_t w = (unsigned char)c >= 0xF0   ? 4
                   : (unsigned char)c >= 0xE0 ? 3
                   : (unsigned char)c >= 0xC0 ? 2
                                              : 1;
        if (w > lx->len - lx->pos) w = lx->len - lx->pos;
        return tw__perr_set(err, TW_EPARSE, lx->pos, "unexpected character '%.*s'", (int)w,
                            s + lx->pos);
      }
  }
  lx->pos += tok->len;
  return 0;
}

int tw__parse_literal(tw__arena_t *arena, const char *src, size_t len, tw_value_t *out,
                      tw__perr_t *err) {
  tw__lexer_t lx = {src, len, 0, arena};
  tw__token_t t, end;
  int neg = 0;
  memset(err, 0, sizeof *err);
  if (tw__lex_next(&lx, &t, err) != 0) return err->code;
  if (t.kind == TW__TK_MINUS) {
    neg = 1;
    if (tw__lex_next(&lx, &t, err) != 0) return err->code;
  }
  if (tw__lex_next(&lx, &end, err) != 0) return err->code;
  if (end.kind != TW__TK_EOF)
    return tw__perr_set(err, TW_EPARSE, end.pos, "expected one literal, found more after it");
  switch (t.kind) {
    case TW__TK_INT:
    case TW__TK_MONEY:
    case TW__TK_DURATION:
      *out = tw_value_int(t.kind == TW__TK_INT     ? TW_V_INT
                          : t.kind == TW__TK_MONEY ? TW_V_MONEY
                                                   : TW_V_DURATION,
                          neg ? -t.i : t.i); /* t.i ≥ 0: negation cannot overflow */
      return 0;
    case TW__TK_DEC:
      *out = tw_value_dec(neg ? -t.d : t.d);
      return 0;
    case TW__TK_STRING:
    case TW__TK_TRUE:
    case TW__TK_FALSE:
      if (neg) break;
      *out = t.kind == TW__TK_STRING ? tw_value_str(t.s, (uint32_t)t.slen)
                                     : tw_value_int(TW_V_BOOL, t.kind == TW__TK_TRUE);
      return 0;
    default:
      break;
  }
  return tw__perr_set(err, TW_EPARSE, t.pos,
                      "expected a literal (5000yuan, 14d, 3, 0.3, \"text\", true), found %s",
                      tw__tok_name(t.kind));
}
