/* In-memory labelled datasets and row views of them.
 *
 * Features are float32, row-major, one row per example. A client, a
 * partition or a mini-batch sees a dataset through a fedc_dataset_view: a
 * list of row indices, never a copy of the rows. */
#ifndef FEDC_DATA_DATASET_H
#define FEDC_DATA_DATASET_H

#include <stddef.h>
#include <stdint.h>

/* Views index rows with uint32_t, so a dataset has at most this many. */
#define FEDC_DATASET_MAX_ROWS UINT32_MAX

typedef struct fedc_dataset {
  uint64_t n;                /* rows */
  uint32_t dim;              /* features per row */
  uint32_t num_classes;      /* labels are 0 .. num_classes-1 */
  uint32_t image_shape[3];   /* channels, height, width; all 0 if not images */
  float *x;                  /* n * dim, owned */
  int32_t *y;                /* n, owned */
} fedc_dataset;

typedef struct fedc_dataset_view {
  const fedc_dataset *base;
  const uint32_t *rows;      /* n row indices into base, or NULL for 0..n-1 */
  uint64_t n;
} fedc_dataset_view;

/* Allocates an n x dim dataset with zeroed features and labels and no
 * image shape. Returns 0, FEDC_ETOOBIG above FEDC_DATASET_MAX_ROWS rows,
 * FEDC_EOVERFLOW or FEDC_ENOMEM. */
int fedc_dataset_alloc(fedc_dataset *ds, uint64_t n, uint32_t dim,
                       uint32_t num_classes);
void fedc_dataset_close(fedc_dataset *ds);

/* Returns a view of every row of ds. */
fedc_dataset_view fedc_dataset_all(const fedc_dataset *ds);

/* Counts the rows of each label in the view into counts, which has
 * view->base->num_classes entries. Returns 0, or FEDC_EINVAL when a label
 * is outside 0..num_classes-1. */
int fedc_dataset_label_counts(const fedc_dataset_view *view,
                              uint64_t *counts);

/* Returns the base row index of the i-th row of the view. */
static inline uint64_t fedc_view_row(const fedc_dataset_view *v, uint64_t i)
{
  return v->rows != NULL ? v->rows[i] : i;
}

/* Loads an IDX image file and its IDX label file (MNIST family, plain or
 * gzipped). Pixels are scaled to [0, 1]. Returns 0 or a FEDC_E* code. */
int fedc_idx_load(const char *images_path, const char *labels_path,
                  fedc_dataset *ds);

/* Loads a CSV file of numbers with the label in column label_column
 * (negative counts from the end). A non-numeric first line is a header. */
int fedc_csv_load(const char *path, int label_column, fedc_dataset *ds);

/* Loads and saves a client data file: safetensors with "features" (F32 or
 * U8 scaled by 1/255, [n, dim] or [n, c, h, w]) and "labels" (I32 or U8,
 * [n]); metadata "num_classes" and, for images, "image_shape" ("c,h,w").
 * Save writes U8 features when every value is exactly k/255, so the load
 * returns the same floats, and F32 otherwise; labels are always I32. Load
 * takes num_classes from the largest label when the metadata has none,
 * and rejects NaN or Inf features and labels outside 0..num_classes-1. */
int fedc_dataset_load(const char *path, fedc_dataset *ds);
int fedc_dataset_save(const char *path, const fedc_dataset_view *view);

#endif
