/*
 * tw_code.h: identifiers of the domain: unified social credit codes and region codes.
 *
 * Unified social credit code (统一社会信用代码), GB 32100-2015: 18 characters from the 31-symbol
 * alphabet 0-9 A-H J-N P-R T U W-Y (no I, O, Z, S, V); position 1 registration authority,
 * 2 category, 3-8 the GB/T 2260 region of registration, 9-17 organisation code, 18 a check
 * character: with weights 1 3 9 27 19 26 16 17 20 29 25 13 8 24 10 30 28 over positions 1-17,
 * check = 31 - (Σ value×weight mod 31), where 31 maps to 0.
 *
 * Region code, GB/T 2260: 6 digits, province (2) + prefecture (2) + county (2). The alert topic
 * starts with it, so a subscription to "44" is Guangdong and "4401" Guangzhou.
 */
#ifndef TW_CODE_H
#define TW_CODE_H

#include <stddef.h>

#define TW_CREDIT_CODE_LEN 18
#define TW_REGION_LEN 6

/*
 * tw_credit_code_check_char: the GB 32100-2015 check character for the first 17 characters of
 * code. Returns the character, or 0 when one of them is outside the alphabet.
 */
char tw_credit_code_check_char(const char *code17);

/*
 * tw_credit_code_valid: 1 if code[0..len) is an 18-character code over the alphabet whose last
 * character is its check character, else 0.
 */
int tw_credit_code_valid(const char *code, size_t len);

/*
 * tw_region_valid: 1 if region[0..len) is 6 ASCII digits with a province in 11..82 and a
 * non-zero prefecture and county part where given (XX0000 and XXYY00 are valid codes of a
 * province and a prefecture), else 0. It checks the shape, not a versioned division table.
 */
int tw_region_valid(const char *region, size_t len);

#endif
