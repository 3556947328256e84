/*
 * error.c: messages and names for the TW_E... codes declared once in tw_error.h.
 * No state; every function is thread-safe.
 */
#include "tw_error.h"

const char *tw_strerror(int code) {
  switch (code) {
#define TW_ERROR_MSG(name, value, msg) \
  case value:                          \
    return msg;
    TW_ERRORS(TW_ERROR_MSG)
#undef TW_ERROR_MSG
  }
  return "unknown error";
}

const char *tw_errname(int code) {
  switch (code) {
#define TW_ERROR_NAME(name, value, msg) \
  case value:                           \
    return #name;
    TW_ERRORS(TW_ERROR_NAME)
#undef TW_ERROR_NAME
  }
  return "TW_E?";
}
