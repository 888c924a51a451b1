#include "agg/robust.h"

#include <math.h>
#include <stdlib.h>

#include "util/error.h"

static int compare_double(const void *a, const void *b)
{
  double x = *(const double *)a;
  double y = *(const double *)b;

  return (x > y) - (x < y);
}

/* Copies coordinate j of every row into scratch and sorts it. */
static void sorted_column(const float *const *rows, size_t n, size_t j,
                          double *scratch)
{
  for (size_t i = 0; i < n; i++)
    scratch[i] = rows[i][j];
  qsort(scratch, n, sizeof(double), compare_double);
}

void fedc_robust_median(const float *const *rows, size_t n, size_t numel,
                        double *scratch, double *out)
{
  for (size_t j = 0; j < numel; j++) {
    sorted_column(rows, n, j, scratch);
    if (n % 2 == 1)
      out[j] = scratch[n / 2];
    else
      out[j] = 0.5 * (scratch[n / 2 - 1] + scratch[n / 2]);
  }
}

void fedc_robust_trimmed_mean(const float *const *rows, size_t n,
                              size_t numel, size_t trim, double *scratch,
                              double *out)
{
  size_t kept = n - 2 * trim;

  for (size_t j = 0; j < numel; j++) {
    double sum = 0.0;

    sorted_column(rows, n, j, scratch);
    for (size_t i = trim; i < n - trim; i++)
      sum += scratch[i];
    out[j] = sum / (double)kept;
  }
}

size_t fedc_robust_trim_count(double fraction, size_t n)
{
  /* The small slack keeps products such as 0.29 * 100, which is
   * 28.999999999999996 in double, from losing a whole value. */
  size_t trim = (size_t)floor(fraction * (double)n + 1e-9);

  if (n > 0 && 2 * trim >= n)
    trim = (n - 1) / 2;
  return trim;
}

static double squared_distance(const float *a, const float *b, size_t numel)
{
  double sum = 0.0;

  for (size_t j = 0; j < numel; j++) {
    double d = (double)a[j] - (double)b[j];

    sum += d * d;
  }
  return sum;
}

/* Fills the n x n matrix of squared distances between rows. */
static void distance_matrix(const float *const *rows, size_t n, size_t numel,
                            double *dist)
{
  for (size_t i = 0; i < n; i++) {
    dist[i * n + i] = 0.0;
    for (size_t k = i + 1; k < n; k++) {
      double d = squared_distance(rows[i], rows[k], numel);

      dist[i * n + k] = d;
      dist[k * n + i] = d;
    }
  }
}

int fedc_robust_krum_scores(const float *const *rows, size_t n, size_t numel,
                            size_t f, double *scores)
{
  double *dist = NULL;
  double *others = NULL;
  size_t nearest;
  int rc = 0;

  if (n < 2 * f + 3)
    return FEDC_EINVAL;
  nearest = n - f - 2;
  dist = malloc(n * n * sizeof(double));
  others = malloc(n * sizeof(double));
  if (!dist || !others) {
    rc = FEDC_ENOMEM;
    goto out;
  }
  distance_matrix(rows, n, numel, dist);

  for (size_t i = 0; i < n; i++) {
    size_t count = 0;
    double score = 0.0;

    for (size_t k = 0; k < n; k++)
      if (k != i)
        others[count++] = dist[i * n + k];
    qsort(others, count, sizeof(double), compare_double);
    for (size_t k = 0; k < nearest; k++)
      score += others[k];
    scores[i] = score;
  }
out:
  free(dist);
  free(others);
  return rc;
}

typedef struct scored_row {
  double score;
  size_t index;
} scored_row;

static int compare_scored(const void *a, const void *b)
{
  const scored_row *x = a;
  const scored_row *y = b;

  if (x->score != y->score)
    return x->score < y->score ? -1 : 1;
  return (x->index > y->index) - (x->index < y->index);
}

/* Writes the mean of the rows listed first in order to out. */
static void mean_of_rows(const float *const *rows, const scored_row *order,
                         size_t m, size_t numel, double *out)
{
  for (size_t j = 0; j < numel; j++)
    out[j] = 0.0;
  for (size_t k = 0; k < m; k++) {
    const float *row = rows[order[k].index];

    for (size_t j = 0; j < numel; j++)
      out[j] += row[j];
  }
  for (size_t j = 0; j < numel; j++)
    out[j] /= (double)m;
}

int fedc_robust_krum(const float *const *rows, size_t n, size_t numel,
                     size_t f, size_t m, double *out, size_t *chosen)
{
  double *scores = NULL;
  scored_row *order = NULL;
  int rc;

  if (n < 2 * f + 3 || m < 1 || m > n)
    return FEDC_EINVAL;
  scores = malloc(n * sizeof(double));
  order = malloc(n * sizeof(scored_row));
  if (!scores || !order) {
    rc = FEDC_ENOMEM;
    goto out;
  }
  rc = fedc_robust_krum_scores(rows, n, numel, f, scores);
  if (rc < 0)
    goto out;

  for (size_t i = 0; i < n; i++) {
    order[i].score = scores[i];
    order[i].index = i;
  }
  qsort(order, n, sizeof(scored_row), compare_scored);
  mean_of_rows(rows, order, m, numel, out);
  for (size_t k = 0; chosen && k < m; k++)
    chosen[k] = order[k].index;
out:
  free(scores);
  free(order);
  return rc;
}
