#include "nn/spec.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/activation.h"
#include "nn/conv.h"
#include "nn/dense.h"
#include "nn/dropout.h"
#include "nn/embedding.h"
#include "nn/flatten.h"
#include "nn/norm.h"
#include "nn/pool.h"
#include "nn/residual.h"
#include "util/error.h"
#include "util/log.h"

#define STMT_MAX_ARGS 8

/* One statement: a keyword, positional arguments and key=value options. */
typedef struct stmt {
  const char *kind;
  const char *pos[STMT_MAX_ARGS];
  size_t num_pos;
  const char *key[STMT_MAX_ARGS];
  const char *value[STMT_MAX_ARGS];
  bool used[STMT_MAX_ARGS];
  size_t num_keys;
} stmt;

/* The spec split into NUL-terminated tokens: words, "{", "}" and ";". */
typedef struct tokens {
  char *storage;
  char **items;
  size_t count;
  size_t next;
} tokens;

typedef struct parser {
  tokens tok;
  enum fedc_loss loss;
  bool have_loss;
  uint64_t params;
} parser;

typedef int (*build_fn)(parser *p, stmt *s, const char *name,
                        const fedc_shape *in, fedc_layer **out);

static int spec_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int spec_error(const char *fmt, ...)
{
  char msg[256];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  fedc_warn("nn", "invalid model spec: %s", msg);
  return FEDC_EINVAL;
}

/* --- Tokens ---------------------------------------------------------------- */

static bool is_punct(char c)
{
  return c == '{' || c == '}' || c == ';' || c == '\n';
}

static int tokenize(const char *text, tokens *tok)
{
  size_t len = strlen(text);
  char *out;

  memset(tok, 0, sizeof(*tok));
  tok->storage = malloc(2 * len + 2);
  tok->items = malloc((len + 1) * sizeof(char *));
  if (tok->storage == NULL || tok->items == NULL)
    return FEDC_ENOMEM;
  out = tok->storage;
  for (const char *c = text; *c != '\0';) {
    if (is_punct(*c)) {
      tok->items[tok->count++] = out;
      *out++ = *c == '\n' ? ';' : *c;
      *out++ = '\0';
      c++;
    } else if (isspace((unsigned char)*c)) {
      c++;
    } else {
      tok->items[tok->count++] = out;
      while (*c != '\0' && !is_punct(*c) && !isspace((unsigned char)*c))
        *out++ = *c++;
      *out++ = '\0';
    }
  }
  return 0;
}

static void tokens_close(tokens *tok)
{
  free(tok->storage);
  free(tok->items);
  memset(tok, 0, sizeof(*tok));
}

static const char *peek(const tokens *tok)
{
  return tok->next < tok->count ? tok->items[tok->next] : NULL;
}

static bool is_word(const char *t)
{
  return t != NULL && !(t[1] == '\0' && (t[0] == '{' || t[0] == '}' ||
                                         t[0] == ';'));
}

/* Reads words up to the next ";", "{", "}" or the end into s. */
static int read_stmt(tokens *tok, stmt *s)
{
  memset(s, 0, sizeof(*s));
  s->kind = tok->items[tok->next++];
  while (is_word(peek(tok))) {
    char *word = tok->items[tok->next++];
    char *eq = strchr(word, '=');

    if (eq == NULL) {
      if (s->num_pos == STMT_MAX_ARGS)
        return spec_error("%s: too many arguments", s->kind);
      s->pos[s->num_pos++] = word;
    } else {
      if (s->num_keys == STMT_MAX_ARGS)
        return spec_error("%s: too many options", s->kind);
      *eq = '\0';
      s->key[s->num_keys] = word;
      s->value[s->num_keys++] = eq + 1;
    }
  }
  return 0;
}

/* --- Arguments ------------------------------------------------------------- */

static int parse_u32(const char *text, uint32_t *out)
{
  char *end;
  unsigned long long v;

  if (text == NULL || !isdigit((unsigned char)text[0]))
    return FEDC_EINVAL;
  errno = 0;
  v = strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0' || v > UINT32_MAX)
    return FEDC_EINVAL;
  *out = (uint32_t)v;
  return 0;
}

static int parse_float(const char *text, float *out)
{
  char *end;
  float v;

  errno = 0;
  v = strtof(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !isfinite(v))
    return FEDC_EINVAL;
  *out = v;
  return 0;
}

/* Reads positional argument i as a positive integer. */
static int arg_u32(const stmt *s, size_t i, const char *meaning,
                   uint32_t *out)
{
  if (i >= s->num_pos)
    return spec_error("%s: missing %s", s->kind, meaning);
  if (parse_u32(s->pos[i], out) != 0 || *out == 0)
    return spec_error("%s: %s \"%s\" is not a positive integer", s->kind,
                      meaning, s->pos[i]);
  return 0;
}

static const char *opt_text(stmt *s, const char *key)
{
  for (size_t i = 0; i < s->num_keys; i++) {
    if (strcmp(s->key[i], key) == 0) {
      s->used[i] = true;
      return s->value[i];
    }
  }
  return NULL;
}

/* Reads option key as an integer, or def when absent. */
static int opt_u32(stmt *s, const char *key, uint32_t def, uint32_t *out)
{
  const char *text = opt_text(s, key);

  *out = def;
  if (text != NULL && parse_u32(text, out) != 0)
    return spec_error("%s: %s=%s is not an integer", s->kind, key, text);
  return 0;
}

static int opt_float(stmt *s, const char *key, float def, float *out)
{
  const char *text = opt_text(s, key);

  *out = def;
  if (text != NULL && parse_float(text, out) != 0)
    return spec_error("%s: %s=%s is not a number", s->kind, key, text);
  return 0;
}

static int opt_bool(stmt *s, const char *key, bool def, bool *out)
{
  uint32_t v;
  int rc = opt_u32(s, key, def ? 1 : 0, &v);

  if (rc == 0 && v > 1)
    return spec_error("%s: %s must be 0 or 1", s->kind, key);
  *out = v == 1;
  return rc;
}

/* Rejects extra positional arguments and options no builder read. */
static int check_consumed(const stmt *s, size_t num_pos)
{
  if (s->num_pos > num_pos)
    return spec_error("%s: unexpected argument \"%s\"", s->kind,
                      s->pos[num_pos]);
  for (size_t i = 0; i < s->num_keys; i++)
    if (!s->used[i])
      return spec_error("%s: unknown option %s", s->kind, s->key[i]);
  return 0;
}

/* Parses "784" or "1x28x28". */
static int parse_shape(const char *text, fedc_shape *shape)
{
  char buf[64];
  char *save = NULL;
  uint64_t size = 1;

  memset(shape, 0, sizeof(*shape));
  if (text == NULL || strlen(text) >= sizeof(buf))
    return FEDC_EINVAL;
  strcpy(buf, text);
  for (char *part = strtok_r(buf, "x", &save); part != NULL;
       part = strtok_r(NULL, "x", &save)) {
    uint32_t *dim = &shape->dim[shape->ndim];

    if (shape->ndim == FEDC_SHAPE_MAX_DIMS || parse_u32(part, dim) != 0 ||
        *dim == 0 || *dim > FEDC_SPEC_MAX_ACTIVATION)
      return FEDC_EINVAL;
    /* Each factor is at most the limit, so the product cannot wrap. */
    size *= *dim;
    if (size > FEDC_SPEC_MAX_ACTIVATION)
      return FEDC_EINVAL;
    shape->ndim++;
  }
  return shape->ndim == 0 ? FEDC_EINVAL : 0;
}

/* --- Layer builders -------------------------------------------------------- */

/* Maps a layer constructor's FEDC_EINVAL, which means the layer does not fit
 * its input shape, to a logged reason. */
static int fit(int rc, const stmt *s, const fedc_shape *in)
{
  char dims[64];

  if (rc != FEDC_EINVAL)
    return rc;
  fedc_layer_shape_format(in, dims, sizeof(dims));
  return spec_error("%s: does not fit input shape %s", s->kind, dims);
}

static int build_dense(parser *p, stmt *s, const char *name,
                       const fedc_shape *in, fedc_layer **out)
{
  uint32_t units;
  bool bias;
  int rc;

  if ((rc = arg_u32(s, 0, "output size", &units)) != 0 ||
      (rc = opt_bool(s, "bias", true, &bias)) != 0 ||
      (rc = check_consumed(s, 1)) != 0)
    return rc;
  return fit(fedc_dense_new(name, in, units, bias, out), s, in);
}

static int build_activation(parser *p, stmt *s, const char *name,
                            const fedc_shape *in, fedc_layer **out)
{
  static const char *const kinds[] = {
    [FEDC_ACT_RELU] = "relu", [FEDC_ACT_LEAKY_RELU] = "leaky_relu",
    [FEDC_ACT_GELU] = "gelu", [FEDC_ACT_SIGMOID] = "sigmoid",
    [FEDC_ACT_TANH] = "tanh",
  };
  float slope = 0.0f;
  int rc;

  for (size_t k = 0; k < sizeof(kinds) / sizeof(kinds[0]); k++) {
    if (strcmp(s->kind, kinds[k]) != 0)
      continue;
    if (k == FEDC_ACT_LEAKY_RELU &&
        (rc = opt_float(s, "slope", 0.01f, &slope)) != 0)
      return rc;
    if ((rc = check_consumed(s, 0)) != 0)
      return rc;
    return fedc_activation_new(name, in, (enum fedc_activation)k, slope,
                               out);
  }
  return FEDC_EINVAL;
}

static int build_conv(parser *p, stmt *s, const char *name,
                      const fedc_shape *in, fedc_layer **out)
{
  uint32_t channels, kernel, stride, pad;
  bool bias;
  int rc;

  if ((rc = arg_u32(s, 0, "output channels", &channels)) != 0 ||
      (rc = arg_u32(s, 1, "kernel size", &kernel)) != 0 ||
      (rc = opt_u32(s, "stride", 1, &stride)) != 0 ||
      (rc = opt_u32(s, "pad", 0, &pad)) != 0 ||
      (rc = opt_bool(s, "bias", true, &bias)) != 0 ||
      (rc = check_consumed(s, 2)) != 0)
    return rc;
  return fit(fedc_conv_new(name, in, channels, kernel, stride, pad, bias, out),
             s, in);
}

/* Reads "K" or "HxW" into h and w. */
static int parse_pair(const char *text, uint32_t *h, uint32_t *w)
{
  fedc_shape pair;

  if (parse_shape(text, &pair) != 0 || pair.ndim > 2)
    return FEDC_EINVAL;
  *h = pair.dim[0];
  *w = pair.ndim == 2 ? pair.dim[1] : pair.dim[0];
  return 0;
}

static int build_pool(parser *p, stmt *s, const char *name,
                      const fedc_shape *in, fedc_layer **out)
{
  enum fedc_pool kind = strcmp(s->kind, "maxpool") == 0 ? FEDC_POOL_MAX
                                                        : FEDC_POOL_AVG;
  uint32_t kh, kw, sh, sw, pad;
  const char *stride;
  int rc;

  if (s->num_pos < 1 || parse_pair(s->pos[0], &kh, &kw) != 0)
    return spec_error("%s: missing or invalid kernel size (K or HxW)",
                      s->kind);
  stride = opt_text(s, "stride");
  sh = kh;
  sw = kw;
  if (stride != NULL && parse_pair(stride, &sh, &sw) != 0)
    return spec_error("%s: invalid stride \"%s\"", s->kind, stride);
  if ((rc = opt_u32(s, "pad", 0, &pad)) != 0 ||
      (rc = check_consumed(s, 1)) != 0)
    return rc;
  return fit(fedc_pool_new(name, in, kind, kh, kw, sh, sw, pad, out), s, in);
}

static int build_batchnorm(parser *p, stmt *s, const char *name,
                           const fedc_shape *in, fedc_layer **out)
{
  float eps, momentum;
  int rc;

  if ((rc = opt_float(s, "eps", 1e-5f, &eps)) != 0 ||
      (rc = opt_float(s, "momentum", 0.1f, &momentum)) != 0 ||
      (rc = check_consumed(s, 0)) != 0)
    return rc;
  return fit(fedc_norm_batch_new(name, in, eps, momentum, out), s, in);
}

static int build_layernorm(parser *p, stmt *s, const char *name,
                           const fedc_shape *in, fedc_layer **out)
{
  uint32_t dims;
  float eps;
  int rc;

  if ((rc = opt_u32(s, "dims", 1, &dims)) != 0 ||
      (rc = opt_float(s, "eps", 1e-5f, &eps)) != 0 ||
      (rc = check_consumed(s, 0)) != 0)
    return rc;
  return fit(fedc_norm_layer_new(name, in, dims, eps, out), s, in);
}

static int build_dropout(parser *p, stmt *s, const char *name,
                         const fedc_shape *in, fedc_layer **out)
{
  float prob;
  int rc;

  if (s->num_pos < 1 || parse_float(s->pos[0], &prob) != 0 ||
      !(prob >= 0.0f && prob < 1.0f))
    return spec_error("dropout: the probability must be in [0, 1)");
  if ((rc = check_consumed(s, 1)) != 0)
    return rc;
  return fit(fedc_dropout_new(name, in, prob, out), s, in);
}

static int build_flatten(parser *p, stmt *s, const char *name,
                         const fedc_shape *in, fedc_layer **out)
{
  int rc = check_consumed(s, 0);

  return rc != 0 ? rc : fedc_flatten_new(name, in, out);
}

static int build_embedding(parser *p, stmt *s, const char *name,
                           const fedc_shape *in, fedc_layer **out)
{
  bool bag = strcmp(s->kind, "embeddingbag") == 0;
  const char *pad_text = opt_text(s, "padding");
  int64_t padding = FEDC_EMBEDDING_NO_PADDING;
  uint32_t vocab, dim, pad;
  int rc;

  if ((rc = arg_u32(s, 0, "vocabulary size", &vocab)) != 0 ||
      (rc = arg_u32(s, 1, "embedding size", &dim)) != 0 ||
      (rc = check_consumed(s, 2)) != 0)
    return rc;
  if (pad_text != NULL) {
    if (parse_u32(pad_text, &pad) != 0 || pad >= vocab)
      return spec_error("%s: padding=%s is not an id below %u", s->kind,
                        pad_text, vocab);
    padding = pad;
  }
  return fit(fedc_embedding_new(name, in, vocab, dim, bag, padding, out), s,
             in);
}

static const struct {
  const char *kind;
  build_fn build;
} builders[] = {
  { "dense", build_dense },
  { "conv", build_conv },
  { "maxpool", build_pool },
  { "avgpool", build_pool },
  { "batchnorm", build_batchnorm },
  { "layernorm", build_layernorm },
  { "dropout", build_dropout },
  { "flatten", build_flatten },
  { "embedding", build_embedding },
  { "embeddingbag", build_embedding },
  { "relu", build_activation },
  { "leaky_relu", build_activation },
  { "gelu", build_activation },
  { "sigmoid", build_activation },
  { "tanh", build_activation },
};

/* --- Blocks ---------------------------------------------------------------- */

static int check_limits(parser *p, const fedc_layer *layer)
{
  for (size_t i = 0; i < layer->num_params; i++)
    p->params += layer->params[i].numel;
  for (size_t i = 0; i < layer->num_buffers; i++)
    p->params += layer->buffers[i].numel;
  if (p->params > FEDC_SPEC_MAX_PARAMS)
    return spec_error("more than %u parameters", FEDC_SPEC_MAX_PARAMS);
  if (layer->out_size > FEDC_SPEC_MAX_ACTIVATION)
    return spec_error("%s: output of %zu floats per example is above %u",
                      layer->ops->kind, layer->out_size,
                      FEDC_SPEC_MAX_ACTIVATION);
  return 0;
}

static int parse_block(parser *p, fedc_net *net, const char *prefix,
                       int depth);

/* Parses "{ LAYERS }" into a new net that takes in. */
static int parse_sub_block(parser *p, const fedc_shape *in, const char *prefix,
                           int depth, fedc_net **out)
{
  const char *t = peek(&p->tok);
  int rc;

  *out = NULL;
  if (t == NULL || strcmp(t, "{") != 0)
    return spec_error("expected \"{\" after residual or shortcut");
  p->tok.next++;
  if ((rc = fedc_net_new(in, out)) != 0 ||
      (rc = parse_block(p, *out, prefix, depth)) != 0) {
    fedc_net_free(out);
    return rc;
  }
  p->tok.next++;                     /* the "}" that ended the block */
  return 0;
}

/* Builds "residual { BODY } [shortcut { SHORTCUT }]" and appends it. */
static int add_residual(parser *p, stmt *s, const char *name, fedc_net *net,
                        int depth)
{
  char prefix[FEDC_LAYER_NAME_MAX + 16];
  fedc_net *body = NULL, *shortcut = NULL;
  fedc_layer *layer;
  const char *t;
  int rc;

  if ((rc = check_consumed(s, 0)) != 0)
    return rc;
  if (depth >= FEDC_SPEC_MAX_DEPTH)
    return spec_error("residual blocks nested deeper than %d",
                      FEDC_SPEC_MAX_DEPTH);
  snprintf(prefix, sizeof(prefix), "%s.body.", name);
  if ((rc = parse_sub_block(p, &net->out, prefix, depth + 1, &body)) != 0)
    return rc;
  t = peek(&p->tok);
  if (t != NULL && strcmp(t, "shortcut") == 0) {
    p->tok.next++;
    snprintf(prefix, sizeof(prefix), "%s.shortcut.", name);
    rc = parse_sub_block(p, &net->out, prefix, depth + 1, &shortcut);
    if (rc != 0) {
      fedc_net_free(&body);
      return rc;
    }
  }
  rc = fedc_residual_new(name, &net->out, body, shortcut, &layer);
  if (rc == FEDC_EINVAL)
    return spec_error("residual %s: body and shortcut outputs differ in "
                      "shape, or the body is empty", name);
  if (rc == 0 && (rc = check_limits(p, layer)) != 0)
    fedc_layer_free(&layer);
  return rc != 0 ? rc : fedc_net_append(net, layer);
}

/* Builds one layer statement and appends it to net. */
static int add_layer(parser *p, stmt *s, const char *prefix, size_t index,
                     fedc_net *net, int depth)
{
  char name[FEDC_LAYER_NAME_MAX];
  const char *custom_name = opt_text(s, "name");
  fedc_layer *layer = NULL;
  int n, rc;

  if (custom_name != NULL)
    n = snprintf(name, sizeof(name), "%s%s", prefix, custom_name);
  else
    n = snprintf(name, sizeof(name), "%s%zu", prefix, index);
  if (n < 0 || (size_t)n >= sizeof(name) - 16)
    return spec_error("%s: layer name too long", s->kind);
  if (custom_name != NULL &&
      (custom_name[0] == '\0' || strchr(custom_name, '.') != NULL))
    return spec_error("%s: name=\"%s\" must be non-empty without dots",
                      s->kind, custom_name);
  if (strcmp(s->kind, "residual") == 0)
    return add_residual(p, s, name, net, depth);
  for (size_t i = 0; i < sizeof(builders) / sizeof(builders[0]); i++) {
    if (strcmp(s->kind, builders[i].kind) != 0)
      continue;
    rc = builders[i].build(p, s, name, &net->out, &layer);
    if (rc == 0)
      rc = check_limits(p, layer);
    if (rc == 0)
      return fedc_net_append(net, layer);
    fedc_layer_free(&layer);
    return rc;
  }
  return spec_error("unknown layer \"%s\"", s->kind);
}

/* Parses statements into net until "}" (inside a block, depth > 0) or the
 * end (at the top, depth 0). */
static int parse_block(parser *p, fedc_net *net, const char *prefix,
                       int depth)
{
  size_t index = 0;
  stmt s;
  int rc;

  for (const char *t = peek(&p->tok); t != NULL; t = peek(&p->tok)) {
    if (strcmp(t, ";") == 0) {
      p->tok.next++;
      continue;
    }
    if (strcmp(t, "}") == 0)
      return depth == 0 ? spec_error("unmatched \"}\"") : 0;
    if (!is_word(t))
      return spec_error("unexpected \"%s\"", t);
    if ((rc = read_stmt(&p->tok, &s)) != 0)
      return rc;
    if (strcmp(s.kind, "loss") == 0) {
      if (depth > 0 || p->have_loss || s.num_pos != 1 || s.num_keys != 0 ||
          fedc_loss_parse(s.pos[0], &p->loss) != 0)
        return spec_error("loss takes one of ce, bce, mse, once, at the top");
      p->have_loss = true;
      continue;
    }
    if (strcmp(s.kind, "input") == 0)
      return spec_error("input must be the first statement");
    if ((rc = add_layer(p, &s, prefix, index++, net, depth)) != 0)
      return rc;
  }
  return depth == 0 ? 0 : spec_error("missing \"}\"");
}

static int parse_layers(parser *p, fedc_net **net)
{
  fedc_shape in;
  stmt s;
  int rc;

  while (peek(&p->tok) != NULL && strcmp(peek(&p->tok), ";") == 0)
    p->tok.next++;
  if (!is_word(peek(&p->tok)))
    return spec_error("empty spec");
  if ((rc = read_stmt(&p->tok, &s)) != 0)
    return rc;
  if (strcmp(s.kind, "input") != 0 || s.num_pos != 1 || s.num_keys != 0 ||
      parse_shape(s.pos[0], &in) != 0)
    return spec_error("the first statement must be \"input DIMS\" with DIMS "
                      "like 784 or 1x28x28");
  if ((rc = fedc_net_new(&in, net)) != 0)
    return rc;
  return parse_block(p, *net, "", 0);
}

int fedc_spec_build(const char *spec, fedc_net **net, enum fedc_loss *loss)
{
  parser p = { .loss = FEDC_LOSS_CE };
  char *text = NULL;
  int rc;

  *net = NULL;
  if ((rc = fedc_spec_expand(spec, &text)) != 0)
    goto out;
  if ((rc = tokenize(text, &p.tok)) != 0)
    goto out;
  rc = parse_layers(&p, net);
  if (rc == 0 && (*net)->count == 0)
    rc = spec_error("no layers");
  if (rc == 0)
    *loss = p.loss;

out:
  if (rc != 0)
    fedc_net_free(net);
  tokens_close(&p.tok);
  free(text);
  return rc;
}

/* --- Built-in models ------------------------------------------------------- */

#define BUILTIN_MAX_SIZES 16

/* A growing string; err is set once an allocation fails. */
typedef struct text {
  char *buf;
  size_t len;
  size_t cap;
  int err;
} text;

static void text_add(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_add(text *t, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (t->err != 0)
    return;
  va_start(ap, fmt);
  n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) {
    t->err = FEDC_EINVAL;
    return;
  }
  if (t->len + (size_t)n + 1 > t->cap) {
    size_t cap = 2 * (t->len + (size_t)n + 64);
    char *grown = realloc(t->buf, cap);

    if (grown == NULL) {
      t->err = FEDC_ENOMEM;
      return;
    }
    t->buf = grown;
    t->cap = cap;
  }
  va_start(ap, fmt);
  vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
  va_end(ap);
  t->len += (size_t)n;
}

static void expand_mlp(text *t, const uint32_t *sizes, size_t count,
                       const char *first_name)
{
  text_add(t, "input %u", sizes[0]);
  for (size_t i = 1; i < count; i++) {
    if (count == 2)
      text_add(t, "; dense %u name=%s", sizes[i], first_name);
    else
      text_add(t, "; dense %u name=fc%zu", sizes[i], i);
    if (i + 1 < count)
      text_add(t, "; relu");
  }
}

/* Two 5x5 convolutions with max pooling and two dense layers. */
static void expand_cnn(text *t, const uint32_t *s)
{
  text_add(t, "input %ux%ux%u; conv 16 5 pad=2 name=conv1; relu; maxpool 2; "
           "conv 32 5 pad=2 name=conv2; relu; maxpool 2; flatten; "
           "dense 128 name=fc1; relu; dense %u name=fc2",
           s[0], s[1], s[2], s[3]);
}

/* A ResNet-style stem, one identity block, one strided block with a 1x1
 * projection shortcut, global average pooling and a dense classifier. */
static void expand_rescnn(text *t, const uint32_t *s)
{
  uint32_t h = (s[1] - 1) / 2 + 1;
  uint32_t w = (s[2] - 1) / 2 + 1;

  text_add(t, "input %ux%ux%u; conv 16 3 pad=1 bias=0 name=conv1; "
           "batchnorm name=bn1; relu; residual name=block1 { "
           "conv 16 3 pad=1 bias=0; batchnorm; relu; "
           "conv 16 3 pad=1 bias=0; batchnorm }; relu; "
           "residual name=block2 { conv 32 3 stride=2 pad=1 bias=0; "
           "batchnorm; relu; conv 32 3 pad=1 bias=0; batchnorm } "
           "shortcut { conv 32 1 stride=2 bias=0; batchnorm }; relu; "
           "avgpool %ux%u; flatten; dense %u name=fc",
           s[0], s[1], s[2], h, w, s[3]);
}

static void expand_textbag(text *t, const uint32_t *s)
{
  text_add(t, "input %u; embeddingbag %u %u padding=0 name=embedding; "
           "dense %u name=fc", s[1], s[0], s[2], s[3]);
}

/* Splits "name:1:2:3" into name and sizes. */
static int split_builtin(const char *spec, char *name, size_t name_len,
                         uint32_t *sizes, size_t *count)
{
  const char *colon = strchr(spec, ':');
  size_t len = colon != NULL ? (size_t)(colon - spec) : strlen(spec);

  *count = 0;
  if (len == 0 || len >= name_len)
    return FEDC_EINVAL;
  memcpy(name, spec, len);
  name[len] = '\0';
  while (colon != NULL) {
    char part[16];
    const char *next = strchr(colon + 1, ':');
    size_t plen = next != NULL ? (size_t)(next - colon - 1)
                               : strlen(colon + 1);

    if (*count == BUILTIN_MAX_SIZES || plen == 0 || plen >= sizeof(part))
      return FEDC_EINVAL;
    memcpy(part, colon + 1, plen);
    part[plen] = '\0';
    if (parse_u32(part, &sizes[*count]) != 0 || sizes[*count] == 0)
      return FEDC_EINVAL;
    (*count)++;
    colon = next;
  }
  return 0;
}

static int expand_builtin(const char *spec, text *t)
{
  static const uint32_t image_default[4] = { 1, 28, 28, 10 };
  uint32_t sizes[BUILTIN_MAX_SIZES];
  size_t count;
  char name[16];
  bool image;

  if (split_builtin(spec, name, sizeof(name), sizes, &count) != 0)
    return spec_error("\"%s\" is neither a layer list nor NAME:SIZE:...", spec);
  image = strcmp(name, "cnn") == 0 || strcmp(name, "rescnn") == 0;
  if (image && count == 0) {
    memcpy(sizes, image_default, sizeof(image_default));
    count = 4;
  }
  if (strcmp(name, "logreg") == 0 && count == 2)
    expand_mlp(t, sizes, count, "fc");
  else if (strcmp(name, "mlp") == 0 && count >= 2)
    expand_mlp(t, sizes, count, "fc1");
  else if (image && count == 4 && sizes[1] >= 4 && sizes[2] >= 4)
    (name[0] == 'c' ? expand_cnn : expand_rescnn)(t, sizes);
  else if (strcmp(name, "textbag") == 0 && count == 4)
    expand_textbag(t, sizes);
  else
    return spec_error("unknown built-in model or wrong sizes in \"%s\"", spec);
  return t->err;
}

int fedc_spec_expand(const char *spec, char **out)
{
  text t = { 0 };
  int rc;

  *out = NULL;
  if (strnlen(spec, FEDC_SPEC_MAX_LEN + 1) > FEDC_SPEC_MAX_LEN)
    return spec_error("longer than %u bytes", FEDC_SPEC_MAX_LEN);
  if (strpbrk(spec, " \t\r\n;{}") != NULL)
    text_add(&t, "%s", spec);
  else if ((rc = expand_builtin(spec, &t)) != 0) {
    free(t.buf);
    return rc;
  }
  if (t.err != 0) {
    free(t.buf);
    return t.err;
  }
  *out = t.buf;
  return 0;
}
