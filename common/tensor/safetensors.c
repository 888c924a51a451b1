#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "json.h"
#include "util/error.h"
#include "util/log.h"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; fedc copies it without swapping"
#endif

#define LOG_COMPONENT "safetensors"
#define METADATA_KEY "__metadata__"

/* ------------------------------------------------------------------------
 * Metadata
 */

void fedc_metadata_init(fedc_metadata *meta)
{
  meta->keys = NULL;
  meta->values = NULL;
  meta->count = 0;
}

void fedc_metadata_close(fedc_metadata *meta)
{
  for (size_t i = 0; i < meta->count; i++) {
    free(meta->keys[i]);
    free(meta->values[i]);
  }
  free(meta->keys);
  free(meta->values);
  fedc_metadata_init(meta);
}

static ptrdiff_t metadata_index(const fedc_metadata *meta, const char *key)
{
  for (size_t i = 0; i < meta->count; i++)
    if (strcmp(meta->keys[i], key) == 0)
      return (ptrdiff_t)i;
  return -1;
}

/* Appends key and value, taking ownership of both on success. */
static int metadata_append(fedc_metadata *meta, char *key, char *value)
{
  size_t n = meta->count + 1;
  char **keys, **values;

  keys = realloc(meta->keys, n * sizeof(*keys));
  if (keys == NULL)
    return FEDC_ENOMEM;
  meta->keys = keys;
  values = realloc(meta->values, n * sizeof(*values));
  if (values == NULL)
    return FEDC_ENOMEM;
  meta->values = values;
  keys[meta->count] = key;
  values[meta->count] = value;
  meta->count = n;
  return 0;
}

int fedc_metadata_set(fedc_metadata *meta, const char *key, const char *value)
{
  ptrdiff_t i = metadata_index(meta, key);
  char *key_copy = NULL, *value_copy = strdup(value);
  int rc = FEDC_ENOMEM;

  if (value_copy == NULL)
    goto out;
  if (i >= 0) {
    free(meta->values[i]);
    meta->values[i] = value_copy;
    return 0;
  }
  key_copy = strdup(key);
  if (key_copy == NULL)
    goto out;
  rc = metadata_append(meta, key_copy, value_copy);
out:
  if (rc != 0) {
    free(key_copy);
    free(value_copy);
  }
  return rc;
}

const char *fedc_metadata_get(const fedc_metadata *meta, const char *key)
{
  ptrdiff_t i = metadata_index(meta, key);

  return i >= 0 ? meta->values[i] : NULL;
}

/* ------------------------------------------------------------------------
 * Encoding
 */

/* A growing text buffer. A failed append sets failed and makes later
 * appends do nothing, so the encoder checks once at the end. */
typedef struct text {
  char *data;
  size_t len;
  size_t cap;
  int failed;
} text;

static void text_append(text *t, const char *s, size_t len)
{
  if (t->failed)
    return;
  if (len > t->cap - t->len) {
    size_t cap = t->cap > 0 ? t->cap : 256;
    char *data;

    while (len > cap - t->len) {
      if (cap > SIZE_MAX / 2) {
        t->failed = 1;
        return;
      }
      cap *= 2;
    }
    data = realloc(t->data, cap);
    if (data == NULL) {
      t->failed = 1;
      return;
    }
    t->data = data;
    t->cap = cap;
  }
  memcpy(t->data + t->len, s, len);
  t->len += len;
}

static void text_puts(text *t, const char *s)
{
  text_append(t, s, strlen(s));
}

static void text_u64(text *t, uint64_t v)
{
  char buf[24];
  int n = snprintf(buf, sizeof(buf), "%llu", (unsigned long long)v);

  text_append(t, buf, (size_t)n);
}

/* Appends s as a JSON string. Bytes from 0x80 up pass through unchanged,
 * so valid UTF-8 stays valid. */
static void text_json_string(text *t, const char *s)
{
  text_puts(t, "\"");
  for (; *s != '\0'; s++) {
    unsigned char c = (unsigned char)*s;
    char esc[8];

    if (c == '"' || c == '\\') {
      esc[0] = '\\';
      esc[1] = (char)c;
      text_append(t, esc, 2);
    } else if (c < 0x20) {
      snprintf(esc, sizeof(esc), "\\u%04x", c);
      text_append(t, esc, 6);
    } else {
      text_append(t, s, 1);
    }
  }
  text_puts(t, "\"");
}

static void encode_metadata(text *t, const fedc_metadata *meta)
{
  text_puts(t, "\"" METADATA_KEY "\":{");
  for (size_t i = 0; i < meta->count; i++) {
    if (i > 0)
      text_puts(t, ",");
    text_json_string(t, meta->keys[i]);
    text_puts(t, ":");
    text_json_string(t, meta->values[i]);
  }
  text_puts(t, "}");
}

static void encode_tensor(text *t, const fedc_tensor *tensor, uint64_t begin,
                          uint64_t end)
{
  text_json_string(t, tensor->name);
  text_puts(t, ":{\"dtype\":\"");
  text_puts(t, fedc_dtype_name(tensor->dtype));
  text_puts(t, "\",\"shape\":[");
  for (int d = 0; d < tensor->ndim; d++) {
    if (d > 0)
      text_puts(t, ",");
    text_u64(t, tensor->shape[d]);
  }
  text_puts(t, "],\"data_offsets\":[");
  text_u64(t, begin);
  text_puts(t, ",");
  text_u64(t, end);
  text_puts(t, "]}");
}

/* Builds the 8-byte length prefix and the JSON header, padded with spaces
 * to a multiple of 8 bytes so that the data starts aligned, as the
 * huggingface/safetensors Rust writer does. *data_len gets the total
 * tensor bytes. */
static int encode_header(const fedc_tensor_list *list,
                         const fedc_metadata *meta, text *t,
                         uint64_t *data_len)
{
  uint64_t offset = 0, header_len;
  int first = 1;

  text_append(t, "\0\0\0\0\0\0\0\0", 8);
  text_puts(t, "{");
  if (meta != NULL && meta->count > 0) {
    encode_metadata(t, meta);
    first = 0;
  }
  for (size_t i = 0; i < list->count; i++) {
    const fedc_tensor *tensor = &list->items[i];
    uint64_t bytes;

    if (fedc_dtype_name(tensor->dtype) == NULL ||
        fedc_tensor_shape_nbytes(tensor->dtype, tensor->ndim, tensor->shape,
                                 &bytes) != 0 ||
        bytes > UINT64_MAX - offset)
      return FEDC_EINVAL;
    if (!first)
      text_puts(t, ",");
    encode_tensor(t, tensor, offset, offset + bytes);
    offset += bytes;
    first = 0;
  }
  text_puts(t, "}");
  while (t->len % 8 != 0)
    text_puts(t, " ");
  if (t->failed)
    return FEDC_ENOMEM;

  header_len = t->len - 8;
  for (int i = 0; i < 8; i++)
    t->data[i] = (char)(header_len >> (8 * i));
  *data_len = offset;
  return 0;
}

int fedc_safetensors_encode(const fedc_tensor_list *list,
                            const fedc_metadata *meta,
                            uint8_t **out, size_t *out_len)
{
  text header = { 0 };
  uint64_t data_len;
  uint8_t *buf = NULL, *p;
  int rc;

  rc = encode_header(list, meta, &header, &data_len);
  if (rc != 0)
    goto out;
  rc = FEDC_ENOMEM;
  if (data_len > SIZE_MAX - header.len)
    goto out;
  buf = malloc(header.len + (size_t)data_len);
  if (buf == NULL)
    goto out;

  memcpy(buf, header.data, header.len);
  p = buf + header.len;
  for (size_t i = 0; i < list->count; i++) {
    size_t bytes = (size_t)fedc_tensor_nbytes(&list->items[i]);

    memcpy(p, list->items[i].data, bytes);
    p += bytes;
  }
  *out = buf;
  *out_len = header.len + (size_t)data_len;
  rc = 0;
out:
  free(header.data);
  return rc;
}

/* ------------------------------------------------------------------------
 * Decoding
 */

/* One tensor's header entry before it is checked against the data. */
typedef struct entry {
  char name[FEDC_TENSOR_NAME_MAX];
  enum fedc_dtype dtype;
  int ndim;
  uint64_t shape[FEDC_TENSOR_MAX_DIMS];
  uint64_t begin, end;
} entry;

typedef struct entries {
  entry *items;
  size_t count;
  size_t cap;
} entries;

static int reject(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Logs why a buffer was rejected and returns FEDC_EFORMAT. */
static int reject(const char *fmt, ...)
{
  char why[256];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  fedc_warn(LOG_COMPONENT, "rejected input: %s", why);
  return FEDC_EFORMAT;
}

static int parse_shape(fedc_json_reader *r, entry *e)
{
  int rc;

  if (fedc_json_array_begin(r) != 0)
    return FEDC_EFORMAT;
  for (size_t i = 0;; i++) {
    rc = fedc_json_array_next(r, i);
    if (rc <= 0)
      return rc;
    if (i >= FEDC_TENSOR_MAX_DIMS ||
        fedc_json_u64(r, &e->shape[i]) != 0)
      return FEDC_EFORMAT;
    e->ndim = (int)i + 1;
  }
}

static int parse_offsets(fedc_json_reader *r, entry *e)
{
  if (fedc_json_array_begin(r) != 0 || fedc_json_array_next(r, 0) != 1 ||
      fedc_json_u64(r, &e->begin) != 0 || fedc_json_array_next(r, 1) != 1 ||
      fedc_json_u64(r, &e->end) != 0 || fedc_json_array_next(r, 2) != 0)
    return FEDC_EFORMAT;
  return 0;
}

enum { HAVE_DTYPE = 1, HAVE_SHAPE = 2, HAVE_OFFSETS = 4 };

/* Parses {"dtype": ..., "shape": [...], "data_offsets": [b, e]} into e.
 * Other members are skipped so that files with extra fields still load,
 * but a repeated member is rejected. */
static int parse_tensor_info(fedc_json_reader *r, entry *e)
{
  char key[32], dtype[16];
  unsigned have = 0, field;
  int rc;

  if (fedc_json_object_begin(r) != 0)
    return FEDC_EFORMAT;
  for (size_t i = 0;; i++) {
    rc = fedc_json_object_next(r, i, key, sizeof(key));
    if (rc < 0)
      return rc;
    if (rc == 0)
      break;
    if (strcmp(key, "dtype") == 0) {
      field = HAVE_DTYPE;
      rc = fedc_json_string(r, dtype, sizeof(dtype));
      if (rc == 0 && fedc_dtype_parse(dtype, &e->dtype) != 0)
        return reject("unsupported dtype");
    } else if (strcmp(key, "shape") == 0) {
      field = HAVE_SHAPE;
      rc = parse_shape(r, e);
    } else if (strcmp(key, "data_offsets") == 0) {
      field = HAVE_OFFSETS;
      rc = parse_offsets(r, e);
    } else {
      field = 0;
      rc = fedc_json_skip(r);
    }
    if (rc != 0 || (have & field) != 0)
      return FEDC_EFORMAT;
    have |= field;
  }
  return have == (HAVE_DTYPE | HAVE_SHAPE | HAVE_OFFSETS) ? 0 : FEDC_EFORMAT;
}

/* Parses the "__metadata__" object, whose values must all be strings. */
static int parse_metadata(fedc_json_reader *r, fedc_metadata *meta)
{
  char key[FEDC_SAFETENSORS_METADATA_KEY_MAX];
  char *value;
  int rc;

  if (fedc_json_object_begin(r) != 0)
    return FEDC_EFORMAT;
  for (size_t i = 0;; i++) {
    rc = fedc_json_object_next(r, i, key, sizeof(key));
    if (rc <= 0)
      return rc;
    if (i >= FEDC_SAFETENSORS_MAX_METADATA)
      return reject("more than %d metadata entries",
                    FEDC_SAFETENSORS_MAX_METADATA);
    if (fedc_metadata_get(meta, key) != NULL)
      return reject("repeated metadata key");
    rc = fedc_json_string_dup(r, &value);
    if (rc != 0)
      return rc;
    rc = fedc_metadata_set(meta, key, value);
    free(value);
    if (rc != 0)
      return rc;
  }
}

static entry *entries_push(entries *list)
{
  if (list->count == list->cap) {
    size_t cap = list->cap > 0 ? list->cap * 2 : 16;
    entry *items = realloc(list->items, cap * sizeof(*items));

    if (items == NULL)
      return NULL;
    list->items = items;
    list->cap = cap;
  }
  memset(&list->items[list->count], 0, sizeof(entry));
  return &list->items[list->count++];
}

/* Parses the whole header object into tensor entries and metadata. */
static int parse_header(const char *json, size_t len, entries *found,
                        fedc_metadata *meta)
{
  char key[FEDC_TENSOR_NAME_MAX];
  fedc_json_reader r;
  int rc, have_meta = 0;

  fedc_json_init(&r, json, len);
  if (fedc_json_object_begin(&r) != 0)
    return reject("header is not a JSON object");
  for (size_t i = 0;; i++) {
    rc = fedc_json_object_next(&r, i, key, sizeof(key));
    if (rc == 0)
      break;
    if (rc < 0)
      return reject("malformed JSON or name of %d bytes or more in header",
                    FEDC_TENSOR_NAME_MAX);
    if (key[0] == '\0')
      return reject("empty tensor name");
    if (strcmp(key, METADATA_KEY) == 0) {
      if (have_meta)
        return reject("repeated " METADATA_KEY);
      have_meta = 1;
      rc = parse_metadata(&r, meta);
    } else {
      entry *e = entries_push(found);

      if (e == NULL)
        return FEDC_ENOMEM;
      if (found->count > FEDC_SAFETENSORS_MAX_TENSORS)
        return reject("more than %d tensors", FEDC_SAFETENSORS_MAX_TENSORS);
      memcpy(e->name, key, sizeof(key));
      rc = parse_tensor_info(&r, e);
    }
    if (rc != 0)
      return rc == FEDC_ENOMEM ? rc
                               : reject("malformed entry %zu in header", i);
  }
  if (fedc_json_finish(&r) != 0)
    return reject("data after the header object");
  return 0;
}

static int compare_offsets(const void *a, const void *b)
{
  const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;

  if (x->begin != y->begin)
    return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end)
    return x->end < y->end ? -1 : 1;
  return 0;
}

static int compare_names(const void *a, const void *b)
{
  const entry *x = *(const entry *const *)a, *y = *(const entry *const *)b;

  return strcmp(x->name, y->name);
}

/* Checks that the entries, sorted into offset order in *order, tile the
 * data region exactly: each begins where the previous one ended, the last
 * ends at data_len, and each spans its shape's byte size. */
static int check_layout(entry **order, size_t count, uint64_t data_len)
{
  uint64_t next = 0, bytes;

  qsort(order, count, sizeof(*order), compare_names);
  for (size_t i = 1; i < count; i++)
    if (strcmp(order[i - 1]->name, order[i]->name) == 0)
      return reject("repeated tensor name");

  qsort(order, count, sizeof(*order), compare_offsets);
  for (size_t i = 0; i < count; i++) {
    const entry *e = order[i];

    if (e->begin != next || e->end < e->begin)
      return reject("data_offsets [%llu, %llu] leave a gap or overlap",
                    (unsigned long long)e->begin, (unsigned long long)e->end);
    if (fedc_tensor_shape_nbytes(e->dtype, e->ndim, e->shape, &bytes) != 0 ||
        bytes != e->end - e->begin)
      return reject("shape does not match data_offsets [%llu, %llu]",
                    (unsigned long long)e->begin, (unsigned long long)e->end);
    next = e->end;
  }
  if (next != data_len)
    return reject("tensors cover %llu of %llu data bytes",
                  (unsigned long long)next, (unsigned long long)data_len);
  return 0;
}

/* Copies the checked entries, in offset order, into list. */
static int fill_list(fedc_tensor_list *list, entry **order, size_t count,
                     const uint8_t *data)
{
  int rc = fedc_tensor_list_reserve(list, count);

  if (rc != 0)
    return rc;

  /* Names are already known to be distinct, so the tensors go straight
   * into the array instead of through fedc_tensor_list_add(), whose
   * duplicate check would make this quadratic in the tensor count. */
  for (size_t i = 0; i < count; i++) {
    const entry *e = order[i];
    size_t bytes = (size_t)(e->end - e->begin);
    fedc_tensor *t = &list->items[list->count];

    memset(t, 0, sizeof(*t));
    t->data = malloc(bytes > 0 ? bytes : 1);
    if (t->data == NULL)
      return FEDC_ENOMEM;
    memcpy(t->data, data + e->begin, bytes);
    memcpy(t->name, e->name, sizeof(t->name));
    t->dtype = e->dtype;
    t->ndim = e->ndim;
    memcpy(t->shape, e->shape, sizeof(t->shape));
    list->count++;
  }
  return 0;
}

static int read_header_len(const uint8_t *buf, size_t len, uint64_t *out)
{
  uint64_t n = 0;

  if (len < 8)
    return reject("%zu bytes is shorter than the 8-byte length prefix", len);
  for (int i = 7; i >= 0; i--)
    n = (n << 8) | buf[i];
  if (n < 2 || n > FEDC_SAFETENSORS_MAX_HEADER || n > len - 8)
    return reject("header length %llu invalid for a %zu-byte buffer",
                  (unsigned long long)n, len);
  *out = n;
  return 0;
}

int fedc_safetensors_decode(const uint8_t *buf, size_t len,
                            fedc_tensor_list *list, fedc_metadata *meta)
{
  entries found = { 0 };
  entry **order = NULL;
  fedc_metadata parsed;
  uint64_t header_len;
  int rc;

  fedc_tensor_list_close(list);
  fedc_metadata_init(&parsed);
  rc = read_header_len(buf, len, &header_len);
  if (rc != 0)
    goto out;
  rc = parse_header((const char *)buf + 8, (size_t)header_len, &found,
                    &parsed);
  if (rc != 0)
    goto out;

  rc = FEDC_ENOMEM;
  order = malloc((found.count > 0 ? found.count : 1) * sizeof(*order));
  if (order == NULL)
    goto out;
  for (size_t i = 0; i < found.count; i++)
    order[i] = &found.items[i];
  rc = check_layout(order, found.count, len - 8 - header_len);
  if (rc != 0)
    goto out;
  rc = fill_list(list, order, found.count, buf + 8 + header_len);
out:
  if (rc != 0)
    fedc_tensor_list_close(list);
  if (rc == 0 && meta != NULL) {
    fedc_metadata_close(meta);
    *meta = parsed;
  } else {
    fedc_metadata_close(&parsed);
    if (meta != NULL)
      fedc_metadata_close(meta);
  }
  free(order);
  free(found.items);
  return rc;
}

/* ------------------------------------------------------------------------
 * Files
 */

static int write_all(int fd, const void *buf, size_t len)
{
  const uint8_t *p = buf;

  while (len > 0) {
    ssize_t n = write(fd, p, len);

    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return FEDC_EIO;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Writes the encoded file to fd without building it in memory, so saving a
 * model needs no second copy of its tensors. */
static int write_encoded(int fd, const fedc_tensor_list *list,
                         const fedc_metadata *meta)
{
  text header = { 0 };
  uint64_t data_len;
  int rc;

  rc = encode_header(list, meta, &header, &data_len);
  if (rc == 0)
    rc = write_all(fd, header.data, header.len);
  for (size_t i = 0; rc == 0 && i < list->count; i++)
    rc = write_all(fd, list->items[i].data,
                   (size_t)fedc_tensor_nbytes(&list->items[i]));
  free(header.data);
  return rc;
}

/* Returns the folder part of path as a new string, "." when it has none. */
static char *folder_of(const char *path)
{
  const char *slash = strrchr(path, '/');

  if (slash == NULL)
    return strdup(".");
  if (slash == path)
    return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

/* Flushes the folder entry of a rename to disk, so the new name survives
 * a crash as well as the new contents do. */
static int sync_folder(const char *path)
{
  char *folder = folder_of(path);
  int fd, rc = FEDC_EIO;

  if (folder == NULL)
    return FEDC_ENOMEM;
  fd = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    if (fsync(fd) == 0)
      rc = 0;
    close(fd);
  }
  free(folder);
  return rc;
}

int fedc_safetensors_write(const char *path, const fedc_tensor_list *list,
                           const fedc_metadata *meta)
{
  char *tmp = NULL;
  int fd = -1, rc = FEDC_ENOMEM;

  if (asprintf(&tmp, "%s.tmp.XXXXXX", path) < 0) {
    tmp = NULL;
    goto out;
  }

  /* mkstemp creates the file with mode 0600, which suits client data and
   * models because they are private to the user who writes them. */
  fd = mkostemp(tmp, O_CLOEXEC);
  if (fd < 0) {
    rc = errno == ENOENT ? FEDC_ENOENT : FEDC_EIO;
    goto out;
  }
  rc = write_encoded(fd, list, meta);
  if (rc == 0 && fsync(fd) != 0)
    rc = FEDC_EIO;
  if (close(fd) != 0 && rc == 0)
    rc = FEDC_EIO;
  fd = -1;
  if (rc == 0 && rename(tmp, path) != 0)
    rc = FEDC_EIO;
  if (rc == 0)
    rc = sync_folder(path);
  else
    unlink(tmp);
out:
  if (fd >= 0)
    close(fd);
  free(tmp);
  return rc;
}

int fedc_safetensors_read(const char *path, fedc_tensor_list *list,
                          fedc_metadata *meta)
{
  struct stat st;
  void *map = MAP_FAILED;
  int fd, rc;

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? FEDC_ENOENT : FEDC_EIO;
  rc = FEDC_EIO;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
    goto out;
  if ((uint64_t)st.st_size > SIZE_MAX) {
    rc = FEDC_ETOOBIG;
    goto out;
  }

  /* A mapping lets decode copy each tensor straight from the page cache,
   * with no second buffer of the whole file. */
  if (st.st_size > 0) {
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED)
      goto out;
  }
  rc = fedc_safetensors_decode(map == MAP_FAILED ? (const uint8_t *)"" : map,
                               (size_t)st.st_size, list, meta);
out:
  if (map != MAP_FAILED)
    munmap(map, (size_t)st.st_size);
  close(fd);
  return rc;
}
