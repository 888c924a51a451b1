#include "nn/pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

typedef struct pool {
  enum fedc_pool kind;
  uint32_t channels, in_h, in_w, out_h, out_w;
  uint32_t kernel_h, kernel_w, stride_h, stride_w, padding;
  int32_t *argmax;           /* max: input offset in its plane per output */
  size_t argmax_cap;
} pool;

/* The window of output (oh, ow), clipped to the unpadded input. */
typedef struct window {
  long h0, h1, w0, w1;
} window;

static window pool_window(const pool *p, uint32_t oh, uint32_t ow)
{
  window w;

  w.h0 = (long)oh * p->stride_h - p->padding;
  w.w0 = (long)ow * p->stride_w - p->padding;
  w.h1 = w.h0 + p->kernel_h < (long)p->in_h ? w.h0 + p->kernel_h : p->in_h;
  w.w1 = w.w0 + p->kernel_w < (long)p->in_w ? w.w0 + p->kernel_w : p->in_w;
  w.h0 = w.h0 > 0 ? w.h0 : 0;
  w.w0 = w.w0 > 0 ? w.w0 : 0;
  return w;
}

/* Max over the window; the first maximum wins and NaN propagates, as in
 * torch's CPU kernel. */
static float window_max(const pool *p, const float *plane, window w,
                        int32_t *where)
{
  float best = -INFINITY;

  *where = (int32_t)(w.h0 * p->in_w + w.w0);
  for (long ih = w.h0; ih < w.h1; ih++) {
    for (long iw = w.w0; iw < w.w1; iw++) {
      float v = plane[ih * p->in_w + iw];

      /* True for a larger value and for NaN, which then ends the search. */
      if (!(v <= best)) {
        best = v;
        *where = (int32_t)(ih * p->in_w + iw);
        if (v != v)
          return v;
      }
    }
  }
  return best;
}

static float window_mean(const pool *p, const float *plane, window w)
{
  float sum = 0.0f;

  for (long ih = w.h0; ih < w.h1; ih++)
    for (long iw = w.w0; iw < w.w1; iw++)
      sum += plane[ih * p->in_w + iw];
  return sum / (float)(p->kernel_h * p->kernel_w);
}

static int pool_forward(fedc_layer *layer, const float *x, float *y,
                        uint32_t batch, const fedc_pass *pass)
{
  pool *p = layer->priv;
  size_t planes = (size_t)batch * p->channels;
  size_t in_area = (size_t)p->in_h * p->in_w;
  int rc = 0;

  if (p->kind == FEDC_POOL_MAX)
    rc = fedc_layer_reserve_index(&p->argmax, &p->argmax_cap,
                                  batch * layer->out_size);
  for (size_t plane = 0; rc == 0 && plane < planes; plane++) {
    const float *in = x + plane * in_area;

    for (uint32_t oh = 0; oh < p->out_h; oh++) {
      for (uint32_t ow = 0; ow < p->out_w; ow++) {
        size_t o = (plane * p->out_h + oh) * p->out_w + ow;
        window w = pool_window(p, oh, ow);

        y[o] = p->kind == FEDC_POOL_MAX
                   ? window_max(p, in, w, &p->argmax[o])
                   : window_mean(p, in, w);
      }
    }
  }
  return rc;
}

static int pool_backward(fedc_layer *layer, const float *x, const float *y,
                         const float *dy, float *dx, uint32_t batch)
{
  const pool *p = layer->priv;
  size_t planes = (size_t)batch * p->channels;
  size_t in_area = (size_t)p->in_h * p->in_w;
  float scale = 1.0f / (float)(p->kernel_h * p->kernel_w);

  if (dx == NULL)
    return 0;
  memset(dx, 0, batch * layer->in_size * sizeof(float));
  for (size_t plane = 0; plane < planes; plane++) {
    float *din = dx + plane * in_area;

    for (uint32_t oh = 0; oh < p->out_h; oh++) {
      for (uint32_t ow = 0; ow < p->out_w; ow++) {
        size_t o = (plane * p->out_h + oh) * p->out_w + ow;
        window w = pool_window(p, oh, ow);

        if (p->kind == FEDC_POOL_MAX) {
          din[p->argmax[o]] += dy[o];
          continue;
        }
        for (long ih = w.h0; ih < w.h1; ih++)
          for (long iw = w.w0; iw < w.w1; iw++)
            din[ih * p->in_w + iw] += dy[o] * scale;
      }
    }
  }
  return 0;
}

static size_t pool_scratch_bytes(const fedc_layer *layer, uint32_t batch)
{
  const pool *p = layer->priv;

  return p->kind == FEDC_POOL_MAX ? batch * layer->out_size * sizeof(int32_t)
                                  : 0;
}

static void pool_destroy(fedc_layer *layer)
{
  pool *p = layer->priv;

  if (p != NULL)
    free(p->argmax);
  free(p);
}

static const fedc_layer_ops pool_ops[] = {
  [FEDC_POOL_MAX] = { "maxpool", NULL, pool_forward, pool_backward,
                      pool_scratch_bytes, pool_destroy },
  [FEDC_POOL_AVG] = { "avgpool", NULL, pool_forward, pool_backward,
                      pool_scratch_bytes, pool_destroy },
};

static bool pool_valid(const fedc_shape *in, enum fedc_pool kind,
                       uint32_t kernel_h, uint32_t kernel_w, uint32_t stride_h,
                       uint32_t stride_w, uint32_t padding)
{
  return in->ndim == 3 && (unsigned)kind <= FEDC_POOL_AVG && kernel_h > 0 &&
         kernel_w > 0 && stride_h > 0 && stride_w > 0 &&
         padding <= kernel_h / 2 && padding <= kernel_w / 2 &&
         (uint64_t)in->dim[1] + 2 * padding >= kernel_h &&
         (uint64_t)in->dim[2] + 2 * padding >= kernel_w;
}

int fedc_pool_new(const char *name, const fedc_shape *in, enum fedc_pool kind,
                  uint32_t kernel_h, uint32_t kernel_w, uint32_t stride_h,
                  uint32_t stride_w, uint32_t padding, fedc_layer **out)
{
  fedc_layer *layer;
  pool *p;

  *out = NULL;
  if (!pool_valid(in, kind, kernel_h, kernel_w, stride_h, stride_w, padding))
    return FEDC_EINVAL;
  layer = fedc_layer_alloc(&pool_ops[kind], name, in);
  p = calloc(1, sizeof(*p));
  if (layer == NULL || p == NULL) {
    free(p);
    fedc_layer_free(&layer);
    return FEDC_ENOMEM;
  }
  layer->priv = p;
  *p = (pool){ .kind = kind, .channels = in->dim[0], .in_h = in->dim[1],
               .in_w = in->dim[2], .kernel_h = kernel_h, .kernel_w = kernel_w,
               .stride_h = stride_h, .stride_w = stride_w,
               .padding = padding };
  p->out_h = (p->in_h + 2 * padding - kernel_h) / stride_h + 1;
  p->out_w = (p->in_w + 2 * padding - kernel_w) / stride_w + 1;
  fedc_layer_set_out(layer, &(fedc_shape){ 3, { p->channels, p->out_h,
                                                p->out_w } });
  *out = layer;
  return 0;
}
