#include "json.h"

#include <stdlib.h>
#include <string.h>

#include "util/error.h"

void fedc_json_init(fedc_json_reader *r, const char *text, size_t len)
{
  r->pos = text;
  r->end = text + len;
  r->depth = 0;
}

static void skip_space(fedc_json_reader *r)
{
  while (r->pos < r->end && (*r->pos == ' ' || *r->pos == '\t' ||
                             *r->pos == '\n' || *r->pos == '\r'))
    r->pos++;
}

/* Consumes c after optional whitespace. */
static int expect(fedc_json_reader *r, char c)
{
  skip_space(r);
  if (r->pos >= r->end || *r->pos != c)
    return FEDC_EFORMAT;
  r->pos++;
  return 0;
}

enum fedc_json_type fedc_json_peek(fedc_json_reader *r)
{
  skip_space(r);
  if (r->pos >= r->end)
    return FEDC_JSON_INVALID;
  switch (*r->pos) {
  case '{': return FEDC_JSON_OBJECT;
  case '[': return FEDC_JSON_ARRAY;
  case '"': return FEDC_JSON_STRING;
  case 't': case 'f': return FEDC_JSON_BOOL;
  case 'n': return FEDC_JSON_NULL;
  default:
    if (*r->pos == '-' || (*r->pos >= '0' && *r->pos <= '9'))
      return FEDC_JSON_NUMBER;
    return FEDC_JSON_INVALID;
  }
}

static int open_container(fedc_json_reader *r, char c)
{
  if (r->depth >= FEDC_JSON_MAX_DEPTH || expect(r, c) != 0)
    return FEDC_EFORMAT;
  r->depth++;
  return 0;
}

int fedc_json_object_begin(fedc_json_reader *r)
{
  return open_container(r, '{');
}

int fedc_json_array_begin(fedc_json_reader *r)
{
  return open_container(r, '[');
}

/* Consumes the closing character or, for a later item, the ',' before it.
 * Returns 1 when an item follows, 0 at the close. */
static int next_item(fedc_json_reader *r, size_t index, char close)
{
  skip_space(r);
  if (r->pos < r->end && *r->pos == close) {
    r->pos++;
    r->depth--;
    return 0;
  }
  if (index > 0 && expect(r, ',') != 0)
    return FEDC_EFORMAT;
  return 1;
}

int fedc_json_object_next(fedc_json_reader *r, size_t index, char *key,
                          size_t cap)
{
  int rc = next_item(r, index, '}');

  if (rc <= 0)
    return rc;
  if (fedc_json_string(r, key, cap) != 0 || expect(r, ':') != 0)
    return FEDC_EFORMAT;
  return 1;
}

int fedc_json_array_next(fedc_json_reader *r, size_t index)
{
  return next_item(r, index, ']');
}

/* Returns the length of the valid UTF-8 sequence at p (overlong forms,
 * surrogates and code points above U+10FFFF are invalid), or 0. */
static size_t utf8_length(const unsigned char *p, const unsigned char *end)
{
  size_t len;
  uint32_t cp;

  if (p[0] < 0x80)
    return 1;
  if (p[0] >= 0xc2 && p[0] <= 0xdf) {
    len = 2;
    cp = p[0] & 0x1f;
  } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
    len = 3;
    cp = p[0] & 0x0f;
  } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
    len = 4;
    cp = p[0] & 0x07;
  } else {
    return 0;
  }
  if ((size_t)(end - p) < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((p[i] & 0xc0) != 0x80)
      return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
      (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
    return 0;
  return len;
}

static int hex4(const char *p, const char *end, uint32_t *out)
{
  uint32_t v = 0;

  if (end - p < 4)
    return FEDC_EFORMAT;
  for (int i = 0; i < 4; i++) {
    char c = p[i];

    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (uint32_t)(c - 'A' + 10);
    else
      return FEDC_EFORMAT;
  }
  *out = v;
  return 0;
}

/* Decodes the \u escape whose hex digits start at *pos, joining a
 * surrogate pair, and advances *pos past it. */
static int unicode_escape(const char **pos, const char *end, uint32_t *cp)
{
  uint32_t high, low;

  if (hex4(*pos, end, &high) != 0)
    return FEDC_EFORMAT;
  *pos += 4;
  if (high == 0 || (high >= 0xdc00 && high <= 0xdfff))
    return FEDC_EFORMAT;
  if (high < 0xd800 || high > 0xdbff) {
    *cp = high;
    return 0;
  }
  if (end - *pos < 6 || (*pos)[0] != '\\' || (*pos)[1] != 'u' ||
      hex4(*pos + 2, end, &low) != 0 || low < 0xdc00 || low > 0xdfff)
    return FEDC_EFORMAT;
  *pos += 6;
  *cp = 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
  return 0;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
  if (cp < 0x80) {
    out[0] = (char)cp;
    return 1;
  }
  if (cp < 0x800) {
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    return 2;
  }
  if (cp < 0x10000) {
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
  }
  out[0] = (char)(0xf0 | (cp >> 18));
  out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
  out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
  out[3] = (char)(0x80 | (cp & 0x3f));
  return 4;
}

/* Decodes one escape sequence after its backslash into buf. */
static int escape(const char **pos, const char *end, char *buf, size_t *len)
{
  static const char from[] = "\"\\/bfnrt";
  static const char to[] = "\"\\/\b\f\n\r\t";
  const char *match;
  uint32_t cp;

  if (*pos >= end)
    return FEDC_EFORMAT;
  if (**pos == 'u') {
    (*pos)++;
    if (unicode_escape(pos, end, &cp) != 0)
      return FEDC_EFORMAT;
    *len = utf8_encode(cp, buf);
    return 0;
  }
  match = memchr(from, **pos, sizeof(from) - 1);
  if (match == NULL)
    return FEDC_EFORMAT;
  buf[0] = to[match - from];
  *len = 1;
  (*pos)++;
  return 0;
}

/* Decodes the string at r->pos. With out NULL it only measures: *len gets
 * the decoded length and cap is ignored. */
static int decode_string(fedc_json_reader *r, char *out, size_t cap,
                         size_t *len)
{
  const char *p;
  size_t n = 0;

  if (expect(r, '"') != 0)
    return FEDC_EFORMAT;
  p = r->pos;
  while (p < r->end && *p != '"') {
    char buf[4];
    const char *piece = p;
    size_t piece_len;

    if ((unsigned char)*p < 0x20)
      return FEDC_EFORMAT;
    if (*p == '\\') {
      p++;
      if (escape(&p, r->end, buf, &piece_len) != 0)
        return FEDC_EFORMAT;
      piece = buf;
    } else {
      piece_len = utf8_length((const unsigned char *)p,
                              (const unsigned char *)r->end);
      if (piece_len == 0)
        return FEDC_EFORMAT;
      p += piece_len;
    }
    if (out != NULL) {
      if (piece_len >= cap - n)
        return FEDC_EFORMAT;
      memcpy(out + n, piece, piece_len);
    }
    n += piece_len;
  }
  if (p >= r->end)
    return FEDC_EFORMAT;
  if (out != NULL)
    out[n] = '\0';
  r->pos = p + 1;
  *len = n;
  return 0;
}

int fedc_json_string(fedc_json_reader *r, char *out, size_t cap)
{
  size_t len;

  if (cap == 0)
    return FEDC_EFORMAT;
  return decode_string(r, out, cap, &len);
}

int fedc_json_string_dup(fedc_json_reader *r, char **out)
{
  const char *start = r->pos;
  size_t len;
  char *s;

  if (decode_string(r, NULL, 0, &len) != 0)
    return FEDC_EFORMAT;
  s = malloc(len + 1);
  if (s == NULL)
    return FEDC_ENOMEM;
  r->pos = start;
  if (decode_string(r, s, len + 1, &len) != 0) {
    free(s);
    return FEDC_EFORMAT;
  }
  *out = s;
  return 0;
}

static const char *skip_digits(const char *p, const char *end)
{
  while (p < end && *p >= '0' && *p <= '9')
    p++;
  return p;
}

/* Consumes a number per the RFC 8259 grammar and reports whether it was a
 * plain non-negative integer. */
static int scan_number(fedc_json_reader *r, const char **digits,
                       size_t *ndigits, int *integer)
{
  const char *p = r->pos, *start;
  int plain = 1;

  if (p < r->end && *p == '-') {
    plain = 0;
    p++;
  }
  start = p;
  if (p >= r->end || *p < '0' || *p > '9')
    return FEDC_EFORMAT;
  p = (*p == '0') ? p + 1 : skip_digits(p, r->end);
  *digits = start;
  *ndigits = (size_t)(p - start);
  if (p < r->end && *p == '.') {
    const char *frac = p + 1;

    p = skip_digits(frac, r->end);
    if (p == frac)
      return FEDC_EFORMAT;
    plain = 0;
  }
  if (p < r->end && (*p == 'e' || *p == 'E')) {
    const char *exp;

    p++;
    if (p < r->end && (*p == '+' || *p == '-'))
      p++;
    exp = p;
    p = skip_digits(exp, r->end);
    if (p == exp)
      return FEDC_EFORMAT;
    plain = 0;
  }
  r->pos = p;
  *integer = plain;
  return 0;
}

int fedc_json_u64(fedc_json_reader *r, uint64_t *out)
{
  const char *digits;
  size_t ndigits;
  uint64_t v = 0;
  int integer;

  skip_space(r);
  if (scan_number(r, &digits, &ndigits, &integer) != 0 || !integer)
    return FEDC_EFORMAT;
  for (size_t i = 0; i < ndigits; i++) {
    uint64_t d = (uint64_t)(digits[i] - '0');

    if (v > (UINT64_MAX - d) / 10)
      return FEDC_EFORMAT;
    v = v * 10 + d;
  }
  *out = v;
  return 0;
}

int fedc_json_double(fedc_json_reader *r, double *out)
{
  char buf[64];
  const char *start, *digits;
  size_t ndigits, len;
  int integer;

  skip_space(r);
  start = r->pos;
  if (scan_number(r, &digits, &ndigits, &integer) != 0)
    return FEDC_EFORMAT;
  len = (size_t)(r->pos - start);
  if (len >= sizeof(buf))
    return FEDC_EFORMAT;
  memcpy(buf, start, len);
  buf[len] = '\0';
  *out = strtod(buf, NULL);
  return 0;
}

static int literal(fedc_json_reader *r, const char *word)
{
  size_t len = strlen(word);

  if ((size_t)(r->end - r->pos) < len || memcmp(r->pos, word, len) != 0)
    return FEDC_EFORMAT;
  r->pos += len;
  return 0;
}

static int skip_object(fedc_json_reader *r)
{
  int rc;

  if (fedc_json_object_begin(r) != 0)
    return FEDC_EFORMAT;
  for (size_t i = 0;; i++) {
    size_t len;

    /* Keys of skipped members may be of any length, so they are only
     * measured, never copied. */
    rc = next_item(r, i, '}');
    if (rc <= 0)
      return rc;
    if (decode_string(r, NULL, 0, &len) != 0 || expect(r, ':') != 0 ||
        fedc_json_skip(r) != 0)
      return FEDC_EFORMAT;
  }
}

static int skip_array(fedc_json_reader *r)
{
  int rc;

  if (fedc_json_array_begin(r) != 0)
    return FEDC_EFORMAT;
  for (size_t i = 0;; i++) {
    rc = fedc_json_array_next(r, i);
    if (rc <= 0)
      return rc;
    if (fedc_json_skip(r) != 0)
      return FEDC_EFORMAT;
  }
}

int fedc_json_skip(fedc_json_reader *r)
{
  enum fedc_json_type type = fedc_json_peek(r);
  const char *digits;
  size_t len;
  int integer;

  switch (type) {
  case FEDC_JSON_NULL:
    return literal(r, "null");
  case FEDC_JSON_BOOL:
    return (literal(r, "true") == 0 || literal(r, "false") == 0)
               ? 0 : FEDC_EFORMAT;
  case FEDC_JSON_NUMBER:
    return scan_number(r, &digits, &len, &integer);
  case FEDC_JSON_STRING:
    return decode_string(r, NULL, 0, &len);
  case FEDC_JSON_OBJECT:
    return skip_object(r);
  case FEDC_JSON_ARRAY:
    return skip_array(r);
  default:
    return FEDC_EFORMAT;
  }
}

int fedc_json_finish(fedc_json_reader *r)
{
  skip_space(r);
  return r->pos == r->end ? 0 : FEDC_EFORMAT;
}
