/* IDX files, the format of MNIST and Fashion-MNIST: a 4-byte magic number
 * (two zero bytes, a type code, the number of dimensions), each dimension
 * as a big-endian uint32, then the data in row-major order. The type code
 * 0x08 means unsigned bytes, the only type these data sets use. */
#include "dataset.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "util/error.h"
#include "util/log.h"

#define LOG_COMPONENT "idx"
#define IDX_TYPE_U8 0x08
#define READ_CHUNK (1u << 20)

static int idx_error(const char *path, const char *why, int rc)
{
  fedc_warn(LOG_COMPONENT, "cannot load %s: %s", path, why);
  return rc;
}

/* Opens a plain or gzipped file; zlib reads plain files unchanged. */
static int idx_open(const char *path, gzFile *out)
{
  gzFile f;

  errno = 0;
  f = gzopen(path, "rb");
  if (f == NULL) {
    int rc = errno == ENOENT ? FEDC_ENOENT : FEDC_EIO;

    return idx_error(path, rc == FEDC_ENOENT ? "file not found"
                                              : "cannot open file", rc);
  }
  *out = f;
  return 0;
}

/* Reads up to len bytes. Returns the count read, or -1 on an error. */
static int64_t idx_read(gzFile f, void *buf, size_t len)
{
  size_t done = 0;

  while (done < len) {
    size_t chunk = len - done < READ_CHUNK ? len - done : READ_CHUNK;
    int n = gzread(f, (uint8_t *)buf + done, (unsigned)chunk);

    if (n < 0)
      return -1;
    if (n == 0)
      break;
    done += (size_t)n;
  }
  return (int64_t)done;
}

/* Reads the magic number and the dimensions, checking that the file contains
 * unsigned bytes in ndim dimensions. */
static int read_header(const char *path, gzFile f, int ndim, uint32_t *dims)
{
  uint8_t head[4 + 4 * 3];
  size_t len = 4 + 4 * (size_t)ndim;

  if (idx_read(f, head, len) != (int64_t)len)
    return idx_error(path, "file shorter than its IDX header", FEDC_EFORMAT);
  if (head[0] != 0 || head[1] != 0 || head[2] != IDX_TYPE_U8 ||
      head[3] != ndim)
    return idx_error(path, ndim == 3 ? "bad magic number for IDX images"
                                     : "bad magic number for IDX labels",
                     FEDC_EFORMAT);
  for (int d = 0; d < ndim; d++) {
    const uint8_t *p = head + 4 + 4 * d;

    dims[d] = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
              (uint32_t)p[2] << 8 | p[3];
  }
  return 0;
}

/* Reads exactly len payload bytes into a new buffer and checks that the
 * file ends there. The buffer grows with the bytes that actually arrive,
 * so a header that declares a huge count costs no huge allocation. */
static int read_payload(const char *path, gzFile f, uint64_t len,
                        uint8_t **out)
{
  uint8_t *buf = NULL, extra;
  uint64_t have = 0, cap = 0;
  int64_t n;

  while (have < len) {
    uint8_t *bigger;

    cap = cap == 0 ? READ_CHUNK : cap * 2;
    if (cap > len)
      cap = len;
    bigger = realloc(buf, (size_t)cap);
    if (bigger == NULL) {
      free(buf);
      return idx_error(path, "out of memory", FEDC_ENOMEM);
    }
    buf = bigger;
    n = idx_read(f, buf + have, (size_t)(cap - have));
    if (n < 0 || (uint64_t)n < cap - have) {
      free(buf);
      return idx_error(path, n < 0 ? "read failed or corrupt gzip data"
                                   : "file shorter than its header declares",
                       n < 0 ? FEDC_EIO : FEDC_EFORMAT);
    }
    have = cap;
  }
  if (idx_read(f, &extra, 1) != 0) {
    free(buf);
    return idx_error(path, "data after the declared items", FEDC_EFORMAT);
  }
  *out = buf != NULL ? buf : malloc(1);
  return *out != NULL ? 0 : FEDC_ENOMEM;
}

/* Reads an IDX image file: n images of rows x cols bytes. */
static int read_images(const char *path, uint32_t dims[3], uint8_t **pixels)
{
  gzFile f;
  uint64_t len;
  int rc = idx_open(path, &f);

  if (rc != 0)
    return rc;
  rc = read_header(path, f, 3, dims);
  if (rc == 0 && (dims[1] == 0 || dims[2] == 0 ||
                  (uint64_t)dims[1] * dims[2] > UINT32_MAX))
    rc = idx_error(path, "image size out of range", FEDC_EFORMAT);
  if (rc == 0) {
    len = (uint64_t)dims[0] * dims[1] * dims[2];
    if (len > SIZE_MAX / sizeof(float))
      rc = idx_error(path, "images too large for memory", FEDC_ETOOBIG);
  }
  if (rc == 0)
    rc = read_payload(path, f, len, pixels);
  gzclose(f);
  return rc;
}

static int read_labels(const char *path, uint32_t *count, uint8_t **labels)
{
  gzFile f;
  int rc = idx_open(path, &f);

  if (rc != 0)
    return rc;
  rc = read_header(path, f, 1, count);
  if (rc == 0)
    rc = read_payload(path, f, *count, labels);
  gzclose(f);
  return rc;
}

int fedc_idx_load(const char *images_path, const char *labels_path,
                  fedc_dataset *ds)
{
  uint8_t *pixels = NULL, *labels = NULL;
  uint32_t dims[3], count, max_label = 0;
  int rc;

  memset(ds, 0, sizeof(*ds));
  rc = read_labels(labels_path, &count, &labels);
  if (rc == 0)
    rc = read_images(images_path, dims, &pixels);
  if (rc == 0 && dims[0] != count) {
    fedc_warn(LOG_COMPONENT, "%s has %u images but %s has %u labels",
              images_path, dims[0], labels_path, count);
    rc = FEDC_EFORMAT;
  }
  if (rc == 0)
    rc = fedc_dataset_alloc(ds, count, dims[1] * dims[2], 0);
  if (rc != 0)
    goto out;

  for (uint64_t i = 0; i < ds->n * ds->dim; i++)
    ds->x[i] = pixels[i] / 255.0f;
  for (uint32_t i = 0; i < count; i++) {
    ds->y[i] = labels[i];
    if (labels[i] > max_label)
      max_label = labels[i];
  }
  ds->num_classes = count > 0 ? max_label + 1 : 0;
  ds->image_shape[0] = 1;
  ds->image_shape[1] = dims[1];
  ds->image_shape[2] = dims[2];
out:
  free(pixels);
  free(labels);
  return rc;
}
