/* Robust aggregates of n update vectors of numel values each, for the
 * median, trimmed-mean and Krum strategies of agg.c.
 *
 * The rows are the updates as the server stores them (after norm bounding).
 * All three aggregates ignore client weights: each is defined on the
 * unweighted set of updates, and a weight reported by a bad client would
 * otherwise let it pull the result. */
#ifndef FEDC_AGG_ROBUST_H
#define FEDC_AGG_ROBUST_H

#include <stddef.h>

/* Writes the coordinate-wise median of the rows to out (numel values). For
 * an even n it is the mean of the two middle values. scratch holds n
 * doubles. n must be at least 1. */
void fedc_robust_median(const float *const *rows, size_t n, size_t numel,
                        double *scratch, double *out);

/* Writes the coordinate-wise trimmed mean to out: per coordinate, the trim
 * lowest and the trim highest values are dropped and the rest averaged.
 * scratch holds n doubles. Requires 2 * trim < n. */
void fedc_robust_trimmed_mean(const float *const *rows, size_t n,
                              size_t numel, size_t trim, double *scratch,
                              double *out);

/* Returns the number of values cut at each end for a trim fraction. */
size_t fedc_robust_trim_count(double fraction, size_t n);

/* Computes each row's Krum score into scores (n values): the sum of the
 * squared L2 distances to its n - f - 2 nearest other rows (Blanchard et
 * al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
 * Descent", NeurIPS 2017). Returns 0, FEDC_EINVAL unless n > 2f + 2, or
 * FEDC_ENOMEM. */
int fedc_robust_krum_scores(const float *const *rows, size_t n, size_t numel,
                            size_t f, double *scores);

/* Averages the m rows with the lowest Krum scores into out: Krum for
 * m = 1, Multi-Krum otherwise. Ties go to the lower row index. chosen, if
 * not NULL, receives the m row indices, best first. Returns 0, FEDC_EINVAL
 * unless n > 2f + 2 and 1 <= m <= n, or FEDC_ENOMEM. */
int fedc_robust_krum(const float *const *rows, size_t n, size_t numel,
                     size_t f, size_t m, double *out, size_t *chosen);

#endif
