/* A pull reader for JSON text (RFC 8259) held in memory.
 *
 * The caller walks the document in order: it opens an object or array,
 * asks for each member or element in turn, and reads each value with the
 * function for the type it expects. Nothing is allocated except by
 * fedc_json_string_dup(), so a hostile document costs no more memory than
 * its own size. Every function returns FEDC_EFORMAT on malformed or
 * unexpected input and leaves the reader unusable after that. */
#ifndef FEDC_TENSOR_JSON_H
#define FEDC_TENSOR_JSON_H

#include <stddef.h>
#include <stdint.h>

/* Nesting deeper than this is rejected, so recursion stays bounded. */
#define FEDC_JSON_MAX_DEPTH 32

typedef struct fedc_json_reader {
  const char *pos;
  const char *end;
  int depth;            /* open objects and arrays */
} fedc_json_reader;

enum fedc_json_type {
  FEDC_JSON_INVALID = 0,
  FEDC_JSON_NULL,
  FEDC_JSON_BOOL,
  FEDC_JSON_NUMBER,
  FEDC_JSON_STRING,
  FEDC_JSON_ARRAY,
  FEDC_JSON_OBJECT,
};

void fedc_json_init(fedc_json_reader *r, const char *text, size_t len);

/* Returns the type of the next value without consuming it, or
 * FEDC_JSON_INVALID if no value can start here. */
enum fedc_json_type fedc_json_peek(fedc_json_reader *r);

/* Consumes the '{' or '[' that opens an object or array. */
int fedc_json_object_begin(fedc_json_reader *r);
int fedc_json_array_begin(fedc_json_reader *r);

/* Reads the next member key of the current object into key (cap bytes,
 * NUL-terminated) and consumes the ':' after it. index counts the members
 * read so far, so the reader knows whether a ',' must come first. Returns 1
 * for a member, 0 at the closing '}', or FEDC_EFORMAT (also for a key of
 * cap bytes or more). */
int fedc_json_object_next(fedc_json_reader *r, size_t index, char *key,
                          size_t cap);

/* Like fedc_json_object_next() for arrays: returns 1 when an element
 * follows, 0 at the closing ']'. */
int fedc_json_array_next(fedc_json_reader *r, size_t index);

/* Reads a string value into out (cap bytes, NUL-terminated). Escapes are
 * decoded to UTF-8; "\u0000", lone surrogates and raw control characters
 * are rejected. */
int fedc_json_string(fedc_json_reader *r, char *out, size_t cap);

/* Reads a string value of any length into a new malloc'ed buffer. */
int fedc_json_string_dup(fedc_json_reader *r, char **out);

/* Reads a number that must be a non-negative integer without fraction or
 * exponent, as safetensors shapes and offsets are. */
int fedc_json_u64(fedc_json_reader *r, uint64_t *out);

/* Reads any number (at most 63 characters of JSON text) as a double; a
 * value beyond the double range becomes +-HUGE_VAL, as strtod returns. */
int fedc_json_double(fedc_json_reader *r, double *out);

/* Reads and discards one value of any type, nested values included. */
int fedc_json_skip(fedc_json_reader *r);

/* Checks that only whitespace remains. */
int fedc_json_finish(fedc_json_reader *r);

#endif
