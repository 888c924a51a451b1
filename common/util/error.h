/* Error codes shared by every fedc module.
 *
 * Fallible functions return 0 on success or one negative FEDC_E* code.
 * fedc_strerror() and fedc_errname() map a code to its message and name. */
#ifndef FEDC_UTIL_ERROR_H
#define FEDC_UTIL_ERROR_H

/* X(name, value, message): the one table of codes. */
#define FEDC_ERROR_TABLE(X)                                                  \
  X(FEDC_ENOMEM,     -1,  "out of memory")                                   \
  X(FEDC_EINVAL,     -2,  "invalid argument")                                \
  X(FEDC_EIO,        -3,  "input/output error")                              \
  X(FEDC_ENOENT,     -4,  "no such file or entry")                           \
  X(FEDC_EFORMAT,    -5,  "malformed input")                                 \
  X(FEDC_ESHAPE,     -6,  "tensor name or shape mismatch")                   \
  X(FEDC_ENONFINITE, -7,  "NaN or Inf value")                                \
  X(FEDC_ETOOBIG,    -8,  "size above the configured maximum")               \
  X(FEDC_ESTATE,     -9,  "message not valid in the current state")          \
  X(FEDC_ESTALE,     -10, "stale or unknown round")                          \
  X(FEDC_EDUP,       -11, "duplicate message")                               \
  X(FEDC_ETLS,       -12, "TLS error")                                       \
  X(FEDC_ECLOSED,    -13, "connection closed")                               \
  X(FEDC_ETIMEDOUT,  -14, "timed out")                                       \
  X(FEDC_EVERSION,   -15, "unsupported protocol version")                    \
  X(FEDC_EUNSUPPORTED, -16, "unsupported feature")                           \
  X(FEDC_EOVERFLOW,  -17, "arithmetic or buffer overflow")                   \
  X(FEDC_ECHILD,     -18, "child process failed")

enum fedc_error {
  FEDC_OK = 0,
#define FEDC_ERROR_ENUM(name, value, msg) name = (value),
  FEDC_ERROR_TABLE(FEDC_ERROR_ENUM)
#undef FEDC_ERROR_ENUM
};

/* Returns the message of a FEDC_E* code, or "unknown error". */
const char *fedc_strerror(int err);

/* Returns the symbolic name of a FEDC_E* code, e.g. "FEDC_EINVAL". */
const char *fedc_errname(int err);

#endif
