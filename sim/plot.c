#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util/error.h"

#define SVG_WIDTH 960
#define SVG_HEIGHT 400
#define PANEL_WIDTH 380
#define PANEL_HEIGHT 280
#define PANEL_TOP 60

/* A data range and the unit its tick labels are written in. */
typedef struct axis {
  double lo, hi;
  double step;          /* distance between ticks, in data units */
  double scale;         /* data units per label unit (3600 for hours) */
  char label[64];
} axis;

typedef struct panel {
  double x, y;          /* top-left corner of the plot area, pixels */
  axis xaxis, yaxis;
} panel;

/* Returns 1, 2 or 5 times a power of ten, so that span contains 4 to 10 steps. */
static double nice_step(double span)
{
  double raw = span / 6.0;
  double power = pow(10.0, floor(log10(raw)));
  double m = raw / power;

  if (m < 1.5)
    return power;
  if (m < 3.5)
    return 2.0 * power;
  if (m < 7.5)
    return 5.0 * power;
  return 10.0 * power;
}

static void fit_axis(axis *a, double lo, double hi)
{
  if (!(hi > lo))
    hi = lo + 1.0;
  a->step = nice_step((hi - lo) / a->scale) * a->scale;
  a->lo = floor(lo / a->step) * a->step;
  a->hi = ceil(hi / a->step) * a->step;
}

static void time_axis(axis *a, double max_seconds, const char *name)
{
  const char *unit = "seconds";

  a->scale = 1.0;
  if (max_seconds >= 2 * 86400.0) {
    a->scale = 86400.0;
    unit = "days";
  } else if (max_seconds >= 2 * 3600.0) {
    a->scale = 3600.0;
    unit = "hours";
  } else if (max_seconds >= 120.0) {
    a->scale = 60.0;
    unit = "minutes";
  }
  snprintf(a->label, sizeof(a->label), "%s (%s)", name, unit);
  fit_axis(a, 0.0, max_seconds);
}

static double px(const panel *p, double x)
{
  return p->x + (x - p->xaxis.lo) / (p->xaxis.hi - p->xaxis.lo) * PANEL_WIDTH;
}

static double py(const panel *p, double y)
{
  return p->y + PANEL_HEIGHT -
         (y - p->yaxis.lo) / (p->yaxis.hi - p->yaxis.lo) * PANEL_HEIGHT;
}

static void write_escaped(FILE *f, const char *text)
{
  for (; *text != '\0'; text++) {
    if (*text == '<')
      fputs("&lt;", f);
    else if (*text == '>')
      fputs("&gt;", f);
    else if (*text == '&')
      fputs("&amp;", f);
    else
      fputc(*text, f);
  }
}

static void draw_ticks(FILE *f, const panel *p)
{
  const axis *xa = &p->xaxis, *ya = &p->yaxis;
  double bottom = p->y + PANEL_HEIGHT;

  for (double v = xa->lo; v <= xa->hi + xa->step / 2; v += xa->step) {
    double x = px(p, v);

    fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
            "stroke='#ddd'/>\n", x, p->y, x, bottom);
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle'>%g</text>\n",
            x, bottom + 16, v / xa->scale);
  }
  for (double v = ya->lo; v <= ya->hi + ya->step / 2; v += ya->step) {
    double y = py(p, v);

    fprintf(f, "<line x1='%.1f' y1='%.1f' x2='%.1f' y2='%.1f' "
            "stroke='#ddd'/>\n", p->x, y, p->x + PANEL_WIDTH, y);
    fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='end'>%g</text>\n",
            p->x - 6, y + 4, v);
  }
}

static void draw_frame(FILE *f, const panel *p)
{
  draw_ticks(f, p);
  fprintf(f, "<rect x='%.1f' y='%.1f' width='%d' height='%d' fill='none' "
          "stroke='#333'/>\n", p->x, p->y, PANEL_WIDTH, PANEL_HEIGHT);
  fprintf(f, "<text x='%.1f' y='%.1f' text-anchor='middle'>%s</text>\n",
          p->x + PANEL_WIDTH / 2.0, p->y + PANEL_HEIGHT + 38, p->xaxis.label);
  fprintf(f, "<text transform='translate(%.1f,%.1f) rotate(-90)' "
          "text-anchor='middle'>test accuracy</text>\n",
          p->x - 44, p->y + PANEL_HEIGHT / 2.0);
}

/* Draws the accuracy line; by_time picks simulated time over round. */
static void draw_line(FILE *f, const panel *p, const fedc_plot_point *points,
                      size_t n, int by_time)
{
  const char *cmd = "M";

  fprintf(f, "<path fill='none' stroke='#1f77b4' stroke-width='1.5' d='");
  for (size_t i = 0; i < n; i++) {
    double x = by_time ? points[i].seconds : (double)points[i].round;

    if (!isfinite(points[i].accuracy))
      continue;
    fprintf(f, "%s%.1f %.1f ", cmd, px(p, x), py(p, points[i].accuracy));
    cmd = "L";
  }
  fprintf(f, "'/>\n");
}

/* Sets the shared accuracy axis from the points' range. */
static void accuracy_axis(axis *a, const fedc_plot_point *points, size_t n)
{
  double lo = 1.0, hi = 0.0;

  for (size_t i = 0; i < n; i++) {
    if (!isfinite(points[i].accuracy))
      continue;
    lo = fmin(lo, points[i].accuracy);
    hi = fmax(hi, points[i].accuracy);
  }
  if (hi < lo) {
    lo = 0.0;
    hi = 1.0;
  }
  a->scale = 1.0;
  snprintf(a->label, sizeof(a->label), "test accuracy");
  fit_axis(a, fmax(0.0, floor(lo * 10) / 10), fmin(1.0, ceil(hi * 10) / 10));
}

static void layout_panels(panel *rounds, panel *times,
                          const fedc_plot_point *points, size_t n,
                          const char *time_name)
{
  double last_round = n > 0 ? (double)points[n - 1].round : 1.0;
  double last_time = n > 0 ? points[n - 1].seconds : 1.0;

  *rounds = (panel){ .x = 80, .y = PANEL_TOP };
  *times = (panel){ .x = 80 + PANEL_WIDTH + 90, .y = PANEL_TOP };
  accuracy_axis(&rounds->yaxis, points, n);
  times->yaxis = rounds->yaxis;

  rounds->xaxis = (axis){ .scale = 1.0, .label = "round" };
  fit_axis(&rounds->xaxis, 0.0, last_round);
  time_axis(&times->xaxis, last_time, time_name);
}

int fedc_plot_write_svg(const char *path, const fedc_plot_point *points,
                        size_t n, const char *title, const char *time_name)
{
  panel rounds, times;
  FILE *f = fopen(path, "w");
  int err = 0;

  if (f == NULL)
    return FEDC_EIO;
  layout_panels(&rounds, &times, points, n, time_name);

  fprintf(f, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' "
          "height='%d' font-family='sans-serif' font-size='12'>\n",
          SVG_WIDTH, SVG_HEIGHT);
  fprintf(f, "<rect width='100%%' height='100%%' fill='white'/>\n");
  fprintf(f, "<text x='%d' y='30' text-anchor='middle' font-size='16'>",
          SVG_WIDTH / 2);
  write_escaped(f, title);
  fprintf(f, "</text>\n");

  draw_frame(f, &rounds);
  draw_line(f, &rounds, points, n, 0);
  draw_frame(f, &times);
  draw_line(f, &times, points, n, 1);
  fprintf(f, "</svg>\n");

  if (ferror(f))
    err = FEDC_EIO;
  if (fclose(f) != 0)
    err = FEDC_EIO;
  return err;
}

/* Writes "round simulated_time accuracy" rows, the time in units of
 * scale seconds, to a new temporary file whose name goes to path_out (at
 * least 32 bytes). */
static int write_gnuplot_data(const fedc_plot_point *points, size_t n,
                              double scale, char *path_out)
{
  FILE *f;
  int fd;

  strcpy(path_out, "/tmp/fedc-plot-XXXXXX");
  fd = mkstemp(path_out);
  if (fd < 0)
    return FEDC_EIO;
  f = fdopen(fd, "w");
  if (f == NULL) {
    close(fd);
    unlink(path_out);
    return FEDC_EIO;
  }
  for (size_t i = 0; i < n; i++) {
    if (isfinite(points[i].accuracy))
      fprintf(f, "%llu %.6f %.6f\n", (unsigned long long)points[i].round,
              points[i].seconds / scale, points[i].accuracy);
  }
  if (fclose(f) != 0) {
    unlink(path_out);
    return FEDC_EIO;
  }
  return 0;
}

/* Writes s as a gnuplot single-quoted string, where '' is one quote. */
static void write_gnuplot_string(FILE *f, const char *s)
{
  fputc('\'', f);
  for (; *s != '\0'; s++) {
    if (*s == '\'')
      fputc('\'', f);
    fputc(*s, f);
  }
  fputc('\'', f);
}

static void write_gnuplot_script(FILE *g, const char *path,
                                 const char *data, const char *title,
                                 const char *time_label)
{
  fprintf(g, "set terminal png size %d,%d\nset output ", SVG_WIDTH,
          SVG_HEIGHT);
  write_gnuplot_string(g, path);
  fprintf(g, "\nset multiplot layout 1,2 title ");
  write_gnuplot_string(g, title);
  fprintf(g, "\nset grid\nset key off\nset ylabel 'test accuracy'\n"
          "set xlabel 'round'\nplot ");
  write_gnuplot_string(g, data);
  fprintf(g, " using 1:3 with lines\nset xlabel ");
  write_gnuplot_string(g, time_label);
  fprintf(g, "\nplot ");
  write_gnuplot_string(g, data);
  fprintf(g, " using 2:3 with lines\nunset multiplot\n");
}

/* Returns 1 when an executable named name is in a folder listed in PATH.
 * Checking first keeps popen() from starting a shell that cannot find the
 * program and then closes the pipe under our writes (SIGPIPE). */
static int program_on_path(const char *name)
{
  const char *path = getenv("PATH");
  char candidate[4096];

  while (path != NULL && *path != '\0') {
    const char *colon = strchr(path, ':');
    size_t len = colon != NULL ? (size_t)(colon - path) : strlen(path);

    if (len > 0 && len + strlen(name) + 2 <= sizeof(candidate)) {
      snprintf(candidate, sizeof(candidate), "%.*s/%s", (int)len, path, name);
      if (access(candidate, X_OK) == 0)
        return 1;
    }
    path = colon != NULL ? colon + 1 : NULL;
  }
  return 0;
}

static int write_png(const char *path, const fedc_plot_point *points,
                     size_t n, const char *title, const char *time_name)
{
  char data[32];
  axis time = { .scale = 1.0 };
  FILE *g;
  int err, status;

  time_axis(&time, n > 0 ? points[n - 1].seconds : 1.0, time_name);
  err = write_gnuplot_data(points, n, time.scale, data);
  if (err != 0)
    return err;
  g = popen("gnuplot", "w");
  if (g == NULL) {
    unlink(data);
    return FEDC_ENOENT;
  }
  write_gnuplot_script(g, path, data, title, time.label);
  status = pclose(g);
  unlink(data);

  if (status == -1 || !WIFEXITED(status))
    return FEDC_ECHILD;
  if (WEXITSTATUS(status) == 127)
    return FEDC_ENOENT;
  return WEXITSTATUS(status) == 0 ? 0 : FEDC_ECHILD;
}

static int has_suffix(const char *s, const char *suffix)
{
  size_t n = strlen(s), m = strlen(suffix);

  return n > m && strcasecmp(s + n - m, suffix) == 0;
}

int fedc_plot_check_path(const char *path, enum fedc_plot_format *format)
{
  if (has_suffix(path, ".svg")) {
    *format = FEDC_PLOT_SVG;
    return 0;
  }
  if (!has_suffix(path, ".png"))
    return FEDC_EINVAL;
  *format = FEDC_PLOT_PNG;
  return program_on_path("gnuplot") ? 0 : FEDC_ENOENT;
}

int fedc_plot_write(const char *path, const fedc_plot_point *points,
                    size_t n, const char *title, const char *time_name)
{
  enum fedc_plot_format format;
  int rc = fedc_plot_check_path(path, &format);

  if (rc < 0)
    return rc;
  if (format == FEDC_PLOT_PNG)
    return write_png(path, points, n, title, time_name);
  return fedc_plot_write_svg(path, points, n, title, time_name);
}
