/*
 * test_pseudo.c: the pseudonym key file (creation, mode, reuse, wrong size) and the keyed hash,
 * and that tw_pseudo_apply replaces student ids in a decoded event and wipes the raw bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <sodium.h>

#include "tw_error.h"
#include "tw_event.h"
#include "tw_pseudo.h"

static char g_dir[64];
static char g_key[128];

static int setup(void **state) {
  (void)state;
  snprintf(g_dir, sizeof g_dir, "/tmp/tw_pseudo_XXXXXX");
  if (mkdtemp(g_dir) == NULL) return -1;
  snprintf(g_key, sizeof g_key, "%s/pseudonym.key", g_dir);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  unlink(g_key);
  rmdir(g_dir);
  return 0;
}

static void test_key_created_and_reused(void **state) {
  (void)state;
  tw_pseudo_key_t k1, k2;
  assert_int_equal(tw_pseudo_key_load(g_dir, &k1), 0);
  struct stat st;
  assert_int_equal(stat(g_key, &st), 0);
  assert_int_equal(st.st_size, TW_PSEUDO_KEY_BYTES);
  assert_int_equal(st.st_mode & 0777, 0600);
  assert_int_equal(tw_pseudo_key_load(g_dir, &k2), 0);
  assert_memory_equal(k1.key, k2.key, TW_PSEUDO_KEY_BYTES);
  static const uint8_t zero[TW_PSEUDO_KEY_BYTES];
  assert_memory_not_equal(k1.key, zero, TW_PSEUDO_KEY_BYTES);
}

static void test_key_wrong_size(void **state) {
  (void)state;
  tw_pseudo_key_t k;
  FILE *f = fopen(g_key, "wb");
  assert_non_null(f);
  fputs("short", f);
  fclose(f);
  assert_int_equal(tw_pseudo_key_load(g_dir, &k), TW_EIO);
  f = fopen(g_key, "wb");
  for (int i = 0; i < 33; i++) fputc('k', f);
  fclose(f);
  assert_int_equal(tw_pseudo_key_load(g_dir, &k), TW_EIO);
  assert_int_equal(tw_pseudo_key_load("/nonexistent/dir", &k), TW_EIO);
}

/* A NATS group's engines share one key: read without creating, install a given key, and an
 * existing key is never replaced (the caller compares what is in place). */
static void test_key_read_and_install(void **state) {
  (void)state;
  tw_pseudo_key_t k, given, placed, other;
  assert_int_equal(tw_pseudo_key_read(g_dir, &k), TW_ENOENT);
  assert_int_equal(access(g_key, F_OK), -1); /* reading made nothing */
  memset(given.key, 0xA5, sizeof given.key);
  assert_int_equal(tw_pseudo_key_install(g_dir, &given, &placed), 0);
  assert_memory_equal(placed.key, given.key, sizeof given.key);
  assert_int_equal(tw_pseudo_key_read(g_dir, &k), 0);
  assert_memory_equal(k.key, given.key, sizeof given.key);
  memset(other.key, 0x5A, sizeof other.key);
  assert_int_equal(tw_pseudo_key_install(g_dir, &other, &placed), 0);
  assert_memory_equal(placed.key, given.key, sizeof given.key); /* the first stays */
  struct stat st;
  assert_int_equal(stat(g_key, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_hash(void **state) {
  (void)state;
  tw_pseudo_key_t k;
  memset(k.key, 0x11, sizeof k.key);
  char a[TW_PSEUDO_LEN + 1], b[TW_PSEUDO_LEN + 1], c[TW_PSEUDO_LEN + 1];
  tw_pseudo_hash(&k, "S1001", 5, a);
  tw_pseudo_hash(&k, "S1001", 5, b);
  tw_pseudo_hash(&k, "S1002", 5, c);
  assert_int_equal(strlen(a), TW_PSEUDO_LEN);
  assert_memory_equal(a, "p:", 2);
  for (int i = 2; i < TW_PSEUDO_LEN; i++) assert_non_null(strchr("0123456789abcdef", a[i]));
  assert_string_equal(a, b);
  assert_string_not_equal(a, c);
  /* it is the keyed BLAKE2b-128 of the raw value */
  unsigned char h[16];
  char hex[33];
  assert_true(sodium_init() >= 0);
  crypto_generichash(h, 16, (const unsigned char *)"S1001", 5, k.key, 32);
  sodium_bin2hex(hex, sizeof hex, h, 16);
  assert_string_equal(a + 2, hex);
  /* another key gives another pseudonym */
  k.key[0] ^= 1;
  tw_pseudo_hash(&k, "S1001", 5, c);
  assert_string_not_equal(a, c);
}

static void test_apply(void **state) {
  (void)state;
  const char *root = getenv("TW_SOURCE_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/rules/packs/schema.yaml", root ? root : TW_SOURCE_DIR);
  tw_schema_t *s = NULL;
  tw_schema_error_t serr;
  assert_int_equal(tw_schema_load(path, &s, &serr), 0);
  tw_event_t ev;
  assert_int_equal(tw_event_init(&ev), 0);
  const char *line =
      "{\"event_id\":\"e\",\"type\":\"payment\",\"ts\":0,\"institution_id\":\"52440106MJL17630G2\","
      "\"region\":\"440106\",\"student_id\":\"S1001-secret\",\"course_id\":\"C\",\"amount_fen\":1,"
      "\"class_hours\":1,\"service_days\":1,\"channel\":\"supervised\"}";
  tw_decode_error_t err;
  int rc = tw_decode_json(s, line, strlen(line), &ev, &err);
  tw_pseudo_key_t k;
  memset(k.key, 7, sizeof k.key);
  if (rc == 0) rc = tw_pseudo_apply(&k, s, &ev);
  int slot = tw_schema_field_slot(s, "student_id", 10);
  tw_value_t v = tw_event_get(&ev, slot);
  char want[TW_PSEUDO_LEN + 1];
  tw_pseudo_hash(&k, "S1001-secret", 12, want);
  int ok =
      rc == 0 && v.kind == TW_V_STR && v.u.s.len == TW_PSEUDO_LEN && strcmp(v.u.s.ptr, want) == 0;
  /* the raw id is nowhere in the arena any more */
  int leaked = 0;
  for (size_t i = 0; i + 12 <= ev.arena_used; i++)
    if (memcmp(ev.arena + i, "S1001-secret", 12) == 0) leaked = 1;
  /* course_id, not a pseudonym field, is untouched */
  int course_ok =
      strcmp(tw_event_get(&ev, tw_schema_field_slot(s, "course_id", 9)).u.s.ptr, "C") == 0;
  tw_event_fini(&ev);
  tw_schema_free(s);
  assert_true(ok);
  assert_false(leaked);
  assert_true(course_ok);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_key_created_and_reused, setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_wrong_size, setup, teardown),
      cmocka_unit_test_setup_teardown(test_key_read_and_install, setup, teardown),
      cmocka_unit_test(test_hash),
      cmocka_unit_test(test_apply),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
