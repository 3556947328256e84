/*
 * code.c: GB 32100-2015 credit-code check characters and GB/T 2260 region code shape.
 * Pure functions over bounded inputs; no state.
 */
#include "tw_code.h"

static const char kAlphabet[] = "0123456789ABCDEFGHJKLMNPQRTUWXY";
static const int kWeights[17] = {1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28};

/* Value of each byte in the alphabet, or -1 (kAlphabet[v] == c for table[c] == v), so validating
 * a code costs 17 lookups rather than 17 scans of the alphabet; it runs on every event. */
static const signed char kValue[256] = {
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    0,  1,  2,  3,  4,  5,  6,  7,  8,  9,  -1, -1, -1, -1, -1, -1, -1, 10, 11, 12, 13, 14, 15, 16,
    17, -1, 18, 19, 20, 21, 22, -1, 23, 24, 25, -1, 26, 27, -1, 28, 29, 30, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
};

static int code_value(char c) {
  return kValue[(unsigned char)c];
}

char tw_credit_code_check_char(const char *code17) {
  int sum = 0;
  for (int i = 0; i < 17; i++) {
    int v = code_value(code17[i]);
    if (v < 0) return 0;
    sum += v * kWeights[i];
  }
  int check = 31 - sum % 31;
  if (check == 31) check = 0;
  return kAlphabet[check];
}

int tw_credit_code_valid(const char *code, size_t len) {
  if (len != TW_CREDIT_CODE_LEN) return 0;
  char want = tw_credit_code_check_char(code);
  return want != 0 && code[17] == want;
}

int tw_region_valid(const char *region, size_t len) {
  if (len != TW_REGION_LEN) return 0;
  for (size_t i = 0; i < len; i++)
    if (region[i] < '0' || region[i] > '9') return 0;
  int province = (region[0] - '0') * 10 + (region[1] - '0');
  if (province < 11 || province > 82) return 0;
  int prefecture = (region[2] - '0') * 10 + (region[3] - '0');
  int county = (region[4] - '0') * 10 + (region[5] - '0');
  if (prefecture == 0 && county != 0) return 0;
  return 1;
}
