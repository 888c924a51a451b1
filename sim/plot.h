/* Plots of test accuracy against round and against time, side by side.
 *
 * The path's extension picks the format: ".svg" is written directly,
 * ".png" is drawn by gnuplot, which must be on PATH. Any other extension
 * is rejected rather than given a file whose content does not match its
 * name. */
#ifndef FEDC_SIM_PLOT_H
#define FEDC_SIM_PLOT_H

#include <stddef.h>
#include <stdint.h>

typedef struct fedc_plot_point {
  uint64_t round;
  double seconds;              /* time at the end of the round */
  double accuracy;             /* test accuracy, 0..1; NAN points are skipped */
} fedc_plot_point;

enum fedc_plot_format {
  FEDC_PLOT_SVG,
  FEDC_PLOT_PNG,
};

/* Picks the format of path from its extension, ".svg" or ".png" in any
 * letter case, so that a bad path can be rejected before a long run.
 * Returns 0, FEDC_EINVAL for any other extension, or FEDC_ENOENT for a
 * PNG when gnuplot is not on PATH. */
int fedc_plot_check_path(const char *path, enum fedc_plot_format *format);

/* Writes the plots of points (in round order) to path, under title, in
 * the format of its extension. time_name names the time axis, "simulated
 * time" or "real time"; its unit (seconds to days) is picked from the last
 * point. Returns 0, FEDC_EINVAL for an extension other than .svg and .png,
 * FEDC_EIO when the file cannot be written, FEDC_ENOENT when a PNG was
 * requested and gnuplot cannot be run, or FEDC_ECHILD when gnuplot fails. */
int fedc_plot_write(const char *path, const fedc_plot_point *points,
                    size_t n, const char *title, const char *time_name);

/* Writes the SVG document to path whatever its extension. */
int fedc_plot_write_svg(const char *path, const fedc_plot_point *points,
                        size_t n, const char *title, const char *time_name);

#endif
