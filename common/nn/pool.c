#include "nn/pool.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "nn/parallel.h"
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

/* The usual max pooling: 2x2 windows, stride 2, no padding. */
static bool pool_is_max_2x2(const pool *p)
{
  return p->kind == FEDC_POOL_MAX && p->kernel_h == 2 && p->kernel_w == 2 &&
         p->stride_h == 2 && p->stride_w == 2 && p->padding == 0;
}

/* Moves *best to v and *offset to at when v > *best, in integer masks so
 * that the compiler emits no branch. */
static void take_larger(float v, int32_t at, float *best, int32_t *offset)
{
  uint32_t take = v > *best;

  *offset ^= (*offset ^ at) & -(int32_t)take;
  *best = v > *best ? v : *best;
}

/* One output of a 2x2 max pool whose window starts at top (offset at in
 * its plane): the first maximum in row-major order, as in window_max.
 * Without NaN that is a chain of selects, which compile without branches;
 * branches on pixel values would mispredict half of the time. */
static float max_of_four(const float *top, uint32_t width, int32_t at,
                         int32_t *where)
{
  float a = top[0], b = top[1], c = top[width], d = top[width + 1];
  float best = a;
  int32_t offset = 0;

  if (a != a || b != b || c != c || d != d) {
    window w = { 0, 2, 0, 2 };
    pool two = { .in_w = width };
    int32_t first;

    best = window_max(&two, top, w, &first);
    *where = at + first;
    return best;
  }
  take_larger(b, 1, &best, &offset);
  take_larger(c, (int32_t)width, &best, &offset);
  take_larger(d, (int32_t)width + 1, &best, &offset);
  *where = at + offset;
  return best;
}

#ifdef __SSE2__
/* Four outputs of a 2x2 max pool at once, from eight floats of the top
 * row and of the row below: the vector form of max_of_four for windows
 * without NaN. Returns false, storing nothing, if any input is NaN. */
static bool max_2x2_four(const float *top, uint32_t width, int32_t at,
                         float *out, int32_t *argmax)
{
  __m128 t0 = _mm_loadu_ps(top), t1 = _mm_loadu_ps(top + 4);
  __m128 b0 = _mm_loadu_ps(top + width), b1 = _mm_loadu_ps(top + width + 4);
  __m128 v[4] = {
    _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(2, 0, 2, 0)),
    _mm_shuffle_ps(t0, t1, _MM_SHUFFLE(3, 1, 3, 1)),
    _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(2, 0, 2, 0)),
    _mm_shuffle_ps(b0, b1, _MM_SHUFFLE(3, 1, 3, 1)),
  };
  int32_t offset[4] = { 0, 1, (int32_t)width, (int32_t)width + 1 };
  __m128 best = v[0];
  __m128i where = _mm_setzero_si128();

  if (_mm_movemask_ps(_mm_or_ps(_mm_cmpunord_ps(v[0], v[1]),
                                _mm_cmpunord_ps(v[2], v[3]))) != 0)
    return false;
  for (int j = 1; j < 4; j++) {
    __m128i take = _mm_castps_si128(_mm_cmpgt_ps(v[j], best));

    where = _mm_or_si128(_mm_andnot_si128(take, where),
                         _mm_and_si128(take, _mm_set1_epi32(offset[j])));
    best = _mm_max_ps(v[j], best);
  }
  where = _mm_add_epi32(where, _mm_add_epi32(_mm_set1_epi32(at),
                                             _mm_setr_epi32(0, 2, 4, 6)));
  _mm_storeu_ps(out, best);
  _mm_storeu_si128((__m128i *)(void *)argmax, where);
  return true;
}
#endif

static void max_2x2_forward(const pool *p, const float *in, float *out,
                            int32_t *argmax)
{
  for (uint32_t oh = 0; oh < p->out_h; oh++) {
    int32_t row = (int32_t)(2 * oh * p->in_w);
    uint32_t ow = 0;

#ifdef __SSE2__
    for (; ow + 4 <= p->out_w; ow += 4)
      if (!max_2x2_four(in + row + 2 * ow, p->in_w, row + (int32_t)(2 * ow),
                        out + ow, argmax + ow))
        break;
#endif
    for (; ow < p->out_w; ow++)
      out[ow] = max_of_four(in + row + 2 * ow, p->in_w,
                            row + (int32_t)(2 * ow), &argmax[ow]);
    out += p->out_w;
    argmax += p->out_w;
  }
}

/* Any window shape, max or average: the reference path. */
static void window_forward(const pool *p, const float *in, float *out,
                           int32_t *argmax)
{
  for (uint32_t oh = 0; oh < p->out_h; oh++) {
    for (uint32_t ow = 0; ow < p->out_w; ow++) {
      size_t o = (size_t)oh * p->out_w + ow;
      window w = pool_window(p, oh, ow);

      out[o] = p->kind == FEDC_POOL_MAX ? window_max(p, in, w, &argmax[o])
                                        : window_mean(p, in, w);
    }
  }
}

/* What the workers of one pass read and write. */
typedef struct pool_job {
  const fedc_layer *layer;
  const float *x;
  float *y;                  /* forward: the output */
  const float *out;          /* backward: the forward's output */
  const float *dy;
  float *dx;
} pool_job;

/* Pools planes [begin, end) of the batch (one plane per image channel). */
static void forward_planes(void *ctx, unsigned worker, size_t chunk,
                           size_t begin, size_t end)
{
  const pool_job *job = ctx;
  const pool *p = job->layer->priv;
  size_t in_area = (size_t)p->in_h * p->in_w;
  size_t out_area = (size_t)p->out_h * p->out_w;
  bool fast = pool_is_max_2x2(p) && !fedc_layer_reference();

  for (size_t plane = begin; plane < end; plane++) {
    const float *in = job->x + plane * in_area;
    float *out = job->y + plane * out_area;
    int32_t *argmax = p->argmax != NULL ? p->argmax + plane * out_area : NULL;

    if (fast)
      max_2x2_forward(p, in, out, argmax);
    else
      window_forward(p, in, out, argmax);
  }
}

static int pool_forward(fedc_layer *layer, const float *x, float *y,
                        uint32_t batch, const fedc_pass *pass)
{
  pool *p = layer->priv;
  pool_job job = { .layer = layer, .x = x, .y = y };
  int rc;

  if (p->kind == FEDC_POOL_MAX &&
      (rc = fedc_layer_reserve_index(&p->argmax, &p->argmax_cap,
                                     batch * layer->out_size)) != 0)
    return rc;
  fedc_parallel_run((size_t)batch * p->channels, forward_planes, &job);
  return 0;
}

/* Returns the gradient dy that output o passes to its maximum: dy, or 0
 * when the layer applies the derivative of the ReLU before it (y is not
 * NULL) and the maximum, y[o], is not positive. */
static float relu_grad(float dy, const float *y, size_t o)
{
  return y != NULL && !(y[o] > 0) ? 0.0f : dy;
}

#ifdef __SSE2__
/* Writes the gradient of four 2x2 windows at once, every input once: lane
 * pairs of the two rows get g where the window's maximum is, by comparing
 * its offset in the window (0, 1, width or width + 1). g is dy, zeroed
 * where y (when not NULL) is not positive, as in relu_grad. */
static void max_2x2_four_backward(const float *dy, const float *y,
                                  const int32_t *argmax, int32_t at,
                                  uint32_t width, float *top)
{
  __m128 g = _mm_loadu_ps(dy);
  __m128i offset = _mm_sub_epi32(
      _mm_loadu_si128((const __m128i *)(const void *)argmax),
      _mm_add_epi32(_mm_set1_epi32(at), _mm_setr_epi32(0, 2, 4, 6)));
  __m128 row[4];

  if (y != NULL)
    g = _mm_and_ps(g, _mm_cmpgt_ps(_mm_loadu_ps(y), _mm_setzero_ps()));
  for (int j = 0; j < 4; j++) {
    int32_t where = (j < 2 ? 0 : (int32_t)width) + j % 2;

    row[j] = _mm_and_ps(g, _mm_castsi128_ps(_mm_cmpeq_epi32(
                               offset, _mm_set1_epi32(where))));
  }
  _mm_storeu_ps(top, _mm_unpacklo_ps(row[0], row[1]));
  _mm_storeu_ps(top + 4, _mm_unpackhi_ps(row[0], row[1]));
  _mm_storeu_ps(top + width, _mm_unpacklo_ps(row[2], row[3]));
  _mm_storeu_ps(top + width + 4, _mm_unpackhi_ps(row[2], row[3]));
}
#endif

/* Writes the gradient of a 2x2 max pool: each window gets dy at its
 * maximum and zeros elsewhere. Inputs outside every window (the last row
 * or column of an odd size) get zeros too, so no memset of din is
 * needed. */
static void max_2x2_backward(const pool *p, const float *dy, const float *y,
                             const int32_t *argmax, float *din)
{
  for (uint32_t oh = 0; oh < p->out_h; oh++) {
    float *top = din + 2 * oh * p->in_w;
    uint32_t first = 0;

#ifdef __SSE2__
    for (; first + 4 <= p->out_w; first += 4)
      max_2x2_four_backward(dy + first, y != NULL ? y + first : NULL,
                            argmax + first,
                            (int32_t)(2 * oh * p->in_w + 2 * first), p->in_w,
                            top + 2 * first);
#endif
    for (uint32_t ow = first; ow < p->out_w; ow++) {
      top[2 * ow] = top[2 * ow + 1] = 0.0f;
      top[p->in_w + 2 * ow] = top[p->in_w + 2 * ow + 1] = 0.0f;
    }
    for (uint32_t ow = first; ow < p->out_w; ow++)
      din[argmax[ow]] = relu_grad(dy[ow], y, ow);
    dy += p->out_w;
    argmax += p->out_w;
    y = y != NULL ? y + p->out_w : NULL;
    if (p->in_w % 2 != 0)
      top[p->in_w - 1] = top[2 * p->in_w - 1] = 0.0f;
  }
  if (p->in_h % 2 != 0)
    memset(din + (size_t)(p->in_h - 1) * p->in_w, 0,
           p->in_w * sizeof(float));
}

/* Any window shape, max or average: the reference path. */
static void window_backward(const pool *p, const float *dy, const float *y,
                            const int32_t *argmax, float *din)
{
  float scale = 1.0f / (float)(p->kernel_h * p->kernel_w);

  memset(din, 0, (size_t)p->in_h * p->in_w * sizeof(float));
  for (uint32_t oh = 0; oh < p->out_h; oh++) {
    for (uint32_t ow = 0; ow < p->out_w; ow++) {
      size_t o = (size_t)oh * p->out_w + ow;
      window w = pool_window(p, oh, ow);

      if (p->kind == FEDC_POOL_MAX) {
        din[argmax[o]] += relu_grad(dy[o], y, o);
        continue;
      }
      for (long ih = w.h0; ih < w.h1; ih++)
        for (long iw = w.w0; iw < w.w1; iw++)
          din[ih * p->in_w + iw] += dy[o] * scale;
    }
  }
}

static void backward_planes(void *ctx, unsigned worker, size_t chunk,
                            size_t begin, size_t end)
{
  const pool_job *job = ctx;
  const pool *p = job->layer->priv;
  size_t in_area = (size_t)p->in_h * p->in_w;
  size_t out_area = (size_t)p->out_h * p->out_w;
  bool fast = pool_is_max_2x2(p) && !fedc_layer_reference();

  for (size_t plane = begin; plane < end; plane++) {
    const float *dy = job->dy + plane * out_area;
    const float *y =
        job->layer->relu_grad ? job->out + plane * out_area : NULL;
    const int32_t *argmax =
        p->argmax != NULL ? p->argmax + plane * out_area : NULL;
    float *din = job->dx + plane * in_area;

    if (fast)
      max_2x2_backward(p, dy, y, argmax, din);
    else
      window_backward(p, dy, y, argmax, din);
  }
}

static int pool_backward(fedc_layer *layer, const float *x, const float *y,
                         const float *dy, float *dx, uint32_t batch)
{
  const pool *p = layer->priv;
  pool_job job = { .layer = layer, .out = y, .dy = dy, .dx = dx };

  if (dx != NULL)
    fedc_parallel_run((size_t)batch * p->channels, backward_planes, &job);
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
  layer->takes_relu_grad = kind == FEDC_POOL_MAX;
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
