/* CSV files of numbers (RFC 4180 layout): comma-separated fields, optional
 * double quotes around a field, CRLF or LF line ends, blank lines skipped.
 * A first line with any non-numeric field is a header and is skipped. */
#include "dataset.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"
#include "util/log.h"

#define LOG_COMPONENT "csv"
#define FIELD_MAX 128     /* bytes of one numeric field, with the NUL */

/* The rows parsed so far: features row-major, labels, and the sizes. */
typedef struct table {
  float *x;
  int32_t *y;
  uint64_t n, cap;
  uint32_t columns;       /* fields per line, fixed by the first line */
  uint32_t label;         /* index of the label column */
  int32_t max_label;
} table;

static int csv_error(const char *path, uint64_t line, const char *why,
                     int rc)
{
  if (line > 0)
    fedc_warn(LOG_COMPONENT, "cannot load %s line %llu: %s", path,
              (unsigned long long)line, why);
  else
    fedc_warn(LOG_COMPONENT, "cannot load %s: %s", path, why);
  return rc;
}

/* Reads the whole file into a new NUL-terminated buffer. */
static int read_file(const char *path, char **out, size_t *out_len)
{
  FILE *f = fopen(path, "rb");
  size_t len = 0, cap = 1 << 16, n;
  char *buf = NULL, *bigger;

  if (f == NULL)
    return csv_error(path, 0, errno == ENOENT ? "file not found"
                                              : "cannot open file",
                     errno == ENOENT ? FEDC_ENOENT : FEDC_EIO);
  for (;;) {
    bigger = realloc(buf, cap);
    if (bigger == NULL) {
      free(buf);
      fclose(f);
      return FEDC_ENOMEM;
    }
    buf = bigger;
    n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (len < cap - 1)
      break;
    cap *= 2;
  }
  n = ferror(f);
  fclose(f);
  if (n != 0) {
    free(buf);
    return csv_error(path, 0, "read failed", FEDC_EIO);
  }
  buf[len] = '\0';
  *out = buf;
  *out_len = len;
  return 0;
}

/* Copies the field at *pos into field, without surrounding spaces and
 * quotes, and advances *pos past it and its comma. Returns 1 when the line
 * ends after this field, 0 when a comma follows, or FEDC_EFORMAT. */
static int next_field(const char **pos, const char *end, char *field)
{
  const char *p = *pos;
  size_t len = 0;
  int quoted;

  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  quoted = p < end && *p == '"';
  if (quoted)
    p++;
  while (p < end) {
    if (quoted && *p == '"') {
      if (p + 1 < end && p[1] == '"') {
        p++;                  /* "" is an escaped quote */
      } else {
        quoted = 0;
        p++;
        continue;
      }
    } else if (!quoted && *p == ',') {
      break;
    }
    if (len + 1 < FIELD_MAX)
      field[len] = *p;
    len++;
    p++;
  }
  if (quoted)
    return FEDC_EFORMAT;

  /* No number needs FIELD_MAX bytes, so an overlong field becomes empty,
   * which is not a number: a header name, or an error in a data line. */
  if (len >= FIELD_MAX)
    len = 0;
  while (len > 0 && (field[len - 1] == ' ' || field[len - 1] == '\t'))
    len--;
  field[len] = '\0';
  *pos = p < end ? p + 1 : p;
  return p < end ? 0 : 1;
}

/* Parses a whole field as a finite number that fits in a float. */
static int parse_number(const char *field, double *out)
{
  char *end;
  double v;

  if (field[0] == '\0')
    return FEDC_EFORMAT;
  errno = 0;
  v = strtod(field, &end);
  if (*end != '\0' || errno == ERANGE || !isfinite(v) || fabs(v) > FLT_MAX)
    return FEDC_EFORMAT;
  *out = v;
  return 0;
}

/* Counts the fields of a line and sets *numeric when all are numbers. */
static int scan_line(const char *p, const char *end, uint32_t *fields,
                     int *numeric)
{
  char field[FIELD_MAX];
  double v;
  int rc;

  *fields = 0;
  *numeric = 1;
  do {
    rc = next_field(&p, end, field);
    if (rc < 0)
      return rc;
    if (parse_number(field, &v) != 0)
      *numeric = 0;
    if (++*fields == 0)
      return FEDC_EFORMAT;
  } while (rc == 0);
  return 0;
}

static int table_grow(table *t)
{
  uint64_t cap = t->cap > 0 ? t->cap * 2 : 1024;
  uint32_t dim = t->columns - 1;
  float *x;
  int32_t *y;

  if (cap > FEDC_DATASET_MAX_ROWS || cap > SIZE_MAX / sizeof(float) / dim)
    return FEDC_ETOOBIG;
  x = realloc(t->x, (size_t)(cap * dim) * sizeof(float));
  if (x == NULL)
    return FEDC_ENOMEM;
  t->x = x;
  y = realloc(t->y, (size_t)cap * sizeof(int32_t));
  if (y == NULL)
    return FEDC_ENOMEM;
  t->y = y;
  t->cap = cap;
  return 0;
}

/* Parses one data line into the next row of t. why gets the reason of a
 * FEDC_EFORMAT. */
static int add_row(table *t, const char *p, const char *end, const char **why)
{
  char field[FIELD_MAX];
  float *row;
  uint32_t col = 0, out = 0;
  double v;
  int rc = 0;

  if (t->n == t->cap && (rc = table_grow(t)) != 0)
    return rc;
  row = t->x + t->n * (t->columns - 1);
  for (rc = 0; rc == 0; col++) {
    rc = next_field(&p, end, field);
    *why = "unterminated quote";
    if (rc < 0)
      return rc;
    *why = "wrong number of fields";
    if (col >= t->columns)
      return FEDC_EFORMAT;
    *why = "field is not a finite number in float range";
    if (parse_number(field, &v) != 0)
      return FEDC_EFORMAT;
    if (col != t->label) {
      row[out++] = (float)v;
      continue;
    }
    *why = "label is not an integer in 0..2^31-2";
    if (v < 0 || v > INT32_MAX - 1 || v != floor(v))
      return FEDC_EFORMAT;
    t->y[t->n] = (int32_t)v;
    if (t->y[t->n] > t->max_label)
      t->max_label = t->y[t->n];
  }
  *why = "wrong number of fields";
  if (col != t->columns)
    return FEDC_EFORMAT;
  t->n++;
  return 0;
}

/* Sets the column count and label index from the first line. */
static int table_start(table *t, uint32_t columns, int label_column)
{
  int64_t label = label_column < 0 ? (int64_t)columns + label_column
                                   : label_column;

  if (columns < 2)
    return FEDC_EFORMAT;
  if (label < 0 || label >= columns)
    return FEDC_EINVAL;
  t->columns = columns;
  t->label = (uint32_t)label;
  return 0;
}

/* Returns 1 when the line contains only spaces and tabs. */
static int line_blank(const char *p, const char *end)
{
  for (; p < end; p++)
    if (*p != ' ' && *p != '\t')
      return 0;
  return 1;
}

/* Sets up t from the first non-blank line and reports whether that line
 * is data (all numbers) rather than a header. */
static int start_table(const char *path, uint64_t line, const char *p,
                       const char *end, int label_column, table *t,
                       int *numeric)
{
  uint32_t fields;
  int rc = scan_line(p, end, &fields, numeric);

  if (rc != 0)
    return csv_error(path, line, "unterminated quote", rc);
  rc = table_start(t, fields, label_column);
  if (rc == FEDC_EFORMAT)
    return csv_error(path, line, "fewer than 2 fields", rc);
  if (rc != 0)
    return csv_error(path, line, "--label-column is outside the fields", rc);
  return 0;
}

/* Parses one non-blank line into t; the first one may be a header. */
static int parse_line(const char *path, uint64_t line, const char *p,
                      const char *end, int label_column, table *t)
{
  const char *why = "";
  int rc;

  if (t->columns == 0) {
    int numeric;

    rc = start_table(path, line, p, end, label_column, t, &numeric);
    if (rc != 0 || !numeric)
      return rc;
  }
  rc = add_row(t, p, end, &why);
  if (rc != 0)
    return csv_error(path, line, rc == FEDC_EFORMAT ? why : fedc_strerror(rc),
                     rc);
  return 0;
}

/* Parses every line of text into t. */
static int parse_text(const char *path, const char *text, size_t len,
                      int label_column, table *t)
{
  const char *p = text, *end = text + len;
  uint64_t line = 0;
  int rc;

  if (memchr(text, '\0', len) != NULL)
    return csv_error(path, 0, "NUL byte in text", FEDC_EFORMAT);
  while (p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *stop = eol != NULL ? eol : end;

    line++;
    if (stop > p && stop[-1] == '\r')
      stop--;
    if (!line_blank(p, stop)) {
      rc = parse_line(path, line, p, stop, label_column, t);
      if (rc != 0)
        return rc;
    }
    p = eol != NULL ? eol + 1 : end;
  }
  return 0;
}

int fedc_csv_load(const char *path, int label_column, fedc_dataset *ds)
{
  table t = { .max_label = -1 };
  char *text = NULL;
  size_t len;
  int rc;

  memset(ds, 0, sizeof(*ds));
  rc = read_file(path, &text, &len);
  if (rc == 0)
    rc = parse_text(path, text, len, label_column, &t);
  if (rc == 0 && t.n == 0)
    rc = csv_error(path, 0, "no data rows", FEDC_EFORMAT);
  if (rc == 0) {
    ds->n = t.n;
    ds->dim = t.columns - 1;
    ds->num_classes = (uint32_t)t.max_label + 1;
    ds->x = t.x;
    ds->y = t.y;
    t.x = NULL;
    t.y = NULL;
  }
  free(t.x);
  free(t.y);
  free(text);
  return rc;
}
