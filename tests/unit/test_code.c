/*
 * test_code.c: GB 32100-2015 check characters and GB/T 2260 region code shape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tw_code.h"

/* Check characters computed by hand from the standard's weights (1 3 9 27 19 26 16 17 20 29 25
 * 13 8 24 10 30 28, modulus 31) for these 17-character prefixes. */
static const struct {
  const char *code;
} kValid[] = {
    {"52440106MJL176301K"},
    {"52440111MJA000017B"},
    {"52110105MJB0000256"},
    {"52310115MJC0000334"},
    {"52510107MJD0000410"},
};

static void test_valid_codes(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof kValid / sizeof kValid[0]; i++) {
    const char *c = kValid[i].code;
    assert_true(tw_credit_code_valid(c, strlen(c)));
    assert_int_equal(tw_credit_code_check_char(c), c[17]);
  }
}

static void test_every_single_change_is_caught(void **state) {
  (void)state;
  static const char alphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
  char code[19];
  memcpy(code, kValid[0].code, 19);
  for (int pos = 0; pos < 18; pos++) {
    char orig = code[pos];
    for (const char *a = alphabet; *a; a++) {
      if (*a == orig) continue;
      code[pos] = *a;
      assert_false(tw_credit_code_valid(code, 18));
    }
    code[pos] = orig;
  }
  assert_true(tw_credit_code_valid(code, 18));
}

static void test_shape_errors(void **state) {
  (void)state;
  assert_false(tw_credit_code_valid("52440106MJL17630G", 17)); /* the 17-character shared case */
  assert_false(tw_credit_code_valid("52440106MJL176301K0", 19));
  assert_false(tw_credit_code_valid("52440106mjl176301K", 18)); /* lower case */
  const char *excluded = "IOZSV";                             /* not in the alphabet */
  for (const char *x = excluded; *x; x++) {
    char code[19];
    memcpy(code, kValid[0].code, 19);
    code[9] = *x;
    assert_int_equal(tw_credit_code_check_char(code), 0);
    assert_false(tw_credit_code_valid(code, 18));
  }
}

static void test_regions(void **state) {
  (void)state;
  assert_true(tw_region_valid("440106", 6));
  assert_true(tw_region_valid("110105", 6));
  assert_true(tw_region_valid("440000", 6)); /* a province */
  assert_true(tw_region_valid("440100", 6)); /* a prefecture */
  assert_true(tw_region_valid("429004", 6)); /* county-level unit directly under a province */
  assert_false(tw_region_valid("4401", 4));
  assert_false(tw_region_valid("4401060", 7));
  assert_false(tw_region_valid("44a106", 6));
  assert_false(tw_region_valid("100106", 6)); /* no province 10 */
  assert_false(tw_region_valid("440006", 6)); /* a county without a prefecture */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_valid_codes),
      cmocka_unit_test(test_every_single_change_is_caught),
      cmocka_unit_test(test_shape_errors),
      cmocka_unit_test(test_regions),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
