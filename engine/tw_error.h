/*
 * tw_error.h: the one set of error codes used by every part of tutorwatch.
 *
 * Functions return 0 on success or a negative TW_E... code. The codes mean the same thing in
 * every file. Errors that reach a person (rule files, events, requests) also carry a location and
 * a plain message in a per-module error struct; the code only says which kind of failure it was.
 *
 * Out-of-memory policy (the one place it is written down): allocation happens at load time
 * (schema, rules, buffers) and per new key in state. A failed allocation returns TW_ENOMEM up to
 * the command, which logs it, commits nothing further and exits with status 70 (EX_SOFTWARE);
 * what was committed before stays consistent because every LMDB write is transactional.
 */
#ifndef TW_ERROR_H
#define TW_ERROR_H

/* X(name, value, message) */
#define TW_ERRORS(X)                                                       \
  X(TW_OK, 0, "success")                                                   \
  X(TW_ENOMEM, -1, "out of memory")                                        \
  X(TW_EINVAL, -2, "invalid argument or input")                            \
  X(TW_EIO, -3, "input/output error")                                      \
  X(TW_ENOENT, -4, "no such file, key or name")                            \
  X(TW_EOF, -5, "end of input")                                            \
  X(TW_EAGAIN, -6, "no data available now; try again")                     \
  X(TW_ETOOBIG, -7, "input exceeds a configured bound")                    \
  X(TW_EPARSE, -8, "syntax error")                                         \
  X(TW_ETYPE, -9, "type error")                                            \
  X(TW_ESCHEMA, -10, "event does not match the schema")                    \
  X(TW_EOVERFLOW, -11, "integer overflow")                                 \
  X(TW_ELIMIT, -12, "evaluation limit reached (regex match limit, depth)") \
  X(TW_ESTATE, -13, "state store (LMDB) error")                            \
  X(TW_EZMQ, -14, "ZeroMQ error")                                          \
  X(TW_EEXIST, -15, "already exists")                                      \
  X(TW_EDIVZERO, -16, "division by zero")                                  \
  X(TW_ECRYPTO, -17, "cryptography (libsodium) error")

enum {
#define TW_ERROR_ENUM(name, value, msg) name = value,
  TW_ERRORS(TW_ERROR_ENUM)
#undef TW_ERROR_ENUM
};

/*
 * tw_strerror: a static, human-readable message for a TW_E... code.
 * Never returns NULL; unknown codes give "unknown error". The string is static: do not free.
 */
const char *tw_strerror(int code);

/*
 * tw_errname: the symbolic name of a code ("TW_EINVAL"), static; "TW_E?" for unknown codes.
 */
const char *tw_errname(int code);

#endif
