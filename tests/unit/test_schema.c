/*
 * test_schema.c: the shipped schema loads with the slots and bounds the contract fixes, and a
 * table of broken schema files is refused with the right code, location and message.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tw_error.h"
#include "tw_schema.h"

static char g_path[4096];

static const char *source_path(const char *rel) {
  const char *root = getenv("TW_SOURCE_DIR");
  snprintf(g_path, sizeof g_path, "%s/%s", root ? root : TW_SOURCE_DIR, rel);
  return g_path;
}

static void test_shipped_schema(void **state) {
  (void)state;
  tw_schema_t *s = NULL;
  tw_schema_error_t err;
  int rc = tw_schema_load(source_path("rules/packs/schema.yaml"), &s, &err);
  if (rc != 0) fail_msg("%s:%d:%d: %s", err.file, err.line, err.col, err.message);
  const char *env[] = {"event_id", "type", "ts", "institution_id", "region"};
  for (int i = 0; i < 5; i++) assert_int_equal(tw_schema_field_slot(s, env[i], strlen(env[i])), i);
  assert_int_equal(s->fields[TW_SLOT_TS].kind, TW_FK_TIME);
  assert_int_equal(s->fields[TW_SLOT_INSTITUTION_ID].kind, TW_FK_CREDIT_CODE);
  assert_int_equal(s->fields[TW_SLOT_REGION].kind, TW_FK_REGION);
  assert_int_equal(s->n_types, 9);
  const char *types[] = {"payment",     "refund", "consumption", "enrollment", "complaint",
                         "institution", "escrow", "staff",       "alert"};
  for (int i = 0; i < 9; i++) {
    int t = tw_schema_type_id(s, types[i], strlen(types[i]));
    assert_true(t >= 0);
    assert_int_equal(s->types[t].internal, i == 8); /* only alert is made by the engine */
  }

  int amount = tw_schema_field_slot(s, "amount_fen", 10);
  int student = tw_schema_field_slot(s, "student_id", 10);
  int action = tw_schema_field_slot(s, "action", 6);
  int text = tw_schema_field_slot(s, "text", 4);
  int list_price = tw_schema_field_slot(s, "list_price_fen", 14);
  assert_true(amount >= 5 && student >= 5 && action >= 5 && text >= 5 && list_price >= 5);
  assert_int_equal(s->fields[amount].kind, TW_FK_FEN);
  assert_int_equal(s->fields[student].kind, TW_FK_PSEUDONYM);
  assert_int_equal(s->fields[text].kind, TW_FK_TEXT);

  const tw_type_def_t *pay = &s->types[tw_schema_type_id(s, "payment", 7)];
  assert_true(pay->required_mask & (1ull << amount));
  assert_false(pay->required_mask & (1ull << list_price));
  assert_true(pay->present_mask & (1ull << list_price));
  assert_false(pay->present_mask & (1ull << text));
  assert_int_equal(pay->required_mask & 0x1f, 0x1f);
  assert_int_equal(pay->spec[amount].min, 0);
  assert_true(pay->spec[amount].max == INT64_MAX);
  assert_int_equal(pay->spec[TW_SLOT_EVENT_ID].max_len_bytes, 64);
  int hours = tw_schema_field_slot(s, "class_hours", 11);
  assert_int_equal(pay->spec[hours].max, 100000);

  /* action: one slot, per-type enum values */
  const tw_type_def_t *inst = &s->types[tw_schema_type_id(s, "institution", 11)];
  const tw_type_def_t *staff = &s->types[tw_schema_type_id(s, "staff", 5)];
  assert_int_equal(inst->spec[action].n_enum, 9);
  assert_string_equal(inst->spec[action].enum_values[4], "license_revoked");
  assert_int_equal(staff->spec[action].n_enum, 5);
  assert_string_equal(staff->spec[action].enum_values[4], "wage_arrears");
  const tw_type_def_t *comp = &s->types[tw_schema_type_id(s, "complaint", 9)];
  assert_int_equal(comp->spec[text].max_len_bytes, 4096);
  tw_schema_free(s);
  tw_schema_free(NULL);
}

#define HEAD                                        \
  "version: 1\n"                                    \
  "envelope:\n"                                     \
  "  event_id: {kind: string, max_len_bytes: 64}\n" \
  "  type: {kind: string}\n"                        \
  "  ts: {kind: time}\n"                            \
  "  institution_id: {kind: credit_code}\n"         \
  "  region: {kind: region}\n"

static const struct {
  const char *yaml;
  int code;
  int line, col;       /* 0: not checked */
  const char *message; /* substring */
} kBad[] = {
    {HEAD "types:\n  payment:\n    fields:\n      amount_fen: {kind: fenn}\n", TW_ESCHEMA, 11, 26,
     "unknown kind 'fenn'"},
    {HEAD "types:\n  payment:\n    fields:\n      amount_fen: {kind: fen}\n"
          "  refund:\n    fields:\n      amount_fen: {kind: int}\n",
     TW_ESCHEMA, 14, 26, "declared as int here but as fen elsewhere"},
    {HEAD "types:\n  payment:\n    fields:\n      amount_fen: {kind: fen, requird: true}\n",
     TW_ESCHEMA, 11, 31, "unknown key 'requird'"},
    {HEAD "types:\n  payment:\n    descripton: x\n", TW_ESCHEMA, 10, 5,
     "unknown key 'descripton' in type 'payment'"},
    {HEAD "types: {}\nrules: []\n", TW_ESCHEMA, 9, 1, "unknown key 'rules'"},
    {HEAD "types:\n  payment:\n    fields:\n      channel: {kind: enum}\n", TW_ESCHEMA, 0, 0,
     "enum field 'channel' has no values"},
    {HEAD "types:\n  payment:\n    fields:\n      amount_fen: {kind: fen, min: -1}\n", TW_ESCHEMA,
     0, 0, "cannot allow negative money"},
    {HEAD "types:\n  payment:\n    fields:\n      n: {kind: int, max: 99999999999999999999}\n",
     TW_ESCHEMA, 11, 27, "does not fit in 64 bits"},
    {HEAD "types:\n  payment:\n    fields:\n      t: {kind: text, max_len_bytes: 5000}\n",
     TW_ESCHEMA, 0, 0, "max_len_bytes of a text field must be 1..4096"},
    {HEAD "types:\n  payment:\n    fields:\n      Amount: {kind: fen}\n", TW_ESCHEMA, 11, 7,
     "field name 'Amount'"},
    {HEAD "types:\n  payment:\n    fields:\n      ts: {kind: time}\n", TW_ESCHEMA, 11, 7,
     "envelope field"},
    {HEAD "types:\n  payment:\n    fields:\n      a: {kind: enum, values: [x, y, x]}\n", TW_ESCHEMA,
     0, 0, "enum value 'x' listed twice"},
    {"version: 1\nenvelope:\n  type: {kind: string}\n  event_id: {kind: string}\n"
     "  ts: {kind: time}\n  institution_id: {kind: credit_code}\n  region: {kind: region}\n"
     "types: {p: {}}\n",
     TW_ESCHEMA, 3, 3, "envelope field 1 must be 'event_id'"},
    {"version: 1\nenvelope:\n  event_id: {kind: string}\ntypes: {p: {}}\n", TW_ESCHEMA, 0, 0,
     "envelope must declare exactly"},
    {"version: 2\nenvelope: {}\ntypes: {}\n", TW_ESCHEMA, 1, 10, "unsupported schema version"},
    {HEAD "types:\n  payment: [\n", TW_EPARSE, 0, 0, "YAML syntax error"},
    {HEAD "x: &a {kind: fen}\n", TW_ETOOBIG, 8, 4, "anchors and aliases (&a)"},
    {"", TW_ESCHEMA, 0, 0, "empty"},
};

static void test_bad_schemas(void **state) {
  (void)state;
  char path[] = "/tmp/tw_schema_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  close(fd);
  for (size_t i = 0; i < sizeof kBad / sizeof kBad[0]; i++) {
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(kBad[i].yaml, f);
    fclose(f);
    tw_schema_t *s = (tw_schema_t *)1;
    tw_schema_error_t err;
    int rc = tw_schema_load(path, &s, &err);
    if (rc != kBad[i].code || s != NULL || strstr(err.message, kBad[i].message) == NULL ||
        strcmp(err.file, path) != 0 || (kBad[i].line && err.line != kBad[i].line) ||
        (kBad[i].col && err.col != kBad[i].col)) {
      unlink(path);
      fail_msg("case %zu: rc %d (want %d) %s:%d:%d: %s (want '%s' at %d:%d)", i, rc, kBad[i].code,
               err.file, err.line, err.col, err.message, kBad[i].message, kBad[i].line,
               kBad[i].col);
    }
  }
  unlink(path);
}

static void test_alias_bomb_refused_fast(void **state) {
  (void)state;
  tw_schema_t *s = NULL;
  tw_schema_error_t err;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  int rc = tw_schema_load(source_path("tests/data/011-yaml-alias-bomb.yaml"), &s, &err);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  assert_int_equal(rc, TW_ETOOBIG);
  assert_null(s);
  assert_non_null(strstr(err.message, "aliases"));
  assert_int_equal(err.line, 3);
  double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
  assert_true(ms < 1000.0);
}

static void test_too_big_and_missing(void **state) {
  (void)state;
  char path[] = "/tmp/tw_schema_big_XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  FILE *f = fdopen(fd, "w");
  fputs(HEAD "types: {}\n", f);
  for (int i = 0; i < (1 << 20) / 16 + 1; i++) fputs("# padding.......\n", f);
  fclose(f);
  tw_schema_t *s = NULL;
  tw_schema_error_t err;
  int rc = tw_schema_load(path, &s, &err);
  unlink(path);
  assert_int_equal(rc, TW_ETOOBIG);
  assert_non_null(strstr(err.message, "1 MiB"));
  rc = tw_schema_load("/nonexistent/schema.yaml", &s, &err);
  assert_int_equal(rc, TW_ENOENT);
  assert_null(s);
  assert_string_equal(err.file, "/nonexistent/schema.yaml");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_shipped_schema),
      cmocka_unit_test(test_bad_schemas),
      cmocka_unit_test(test_alias_bomb_refused_fast),
      cmocka_unit_test(test_too_big_and_missing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
