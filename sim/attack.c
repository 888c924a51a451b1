#include "attack.h"

#include <math.h>
#include <string.h>

#include "util/error.h"

int fedc_attack_kind_parse(const char *name, enum fedc_attack_kind *out)
{
  static const char *const names[] = { "none", "scale", "sign_flip" };

  for (int i = 0; name != NULL && i < 3; i++) {
    if (strcmp(name, names[i]) == 0) {
      *out = (enum fedc_attack_kind)i;
      return 0;
    }
  }
  return FEDC_EINVAL;
}

int fedc_attack_check(const fedc_attack *attack)
{
  if ((unsigned)attack->kind > FEDC_ATTACK_SIGN_FLIP)
    return FEDC_EINVAL;
  if (attack->kind == FEDC_ATTACK_NONE)
    return 0;
  if (!(attack->fraction >= 0.0 && attack->fraction <= 1.0))
    return FEDC_EINVAL;
  if (!(attack->scale > 0.0 && isfinite(attack->scale)))
    return FEDC_EINVAL;
  return 0;
}

bool fedc_attack_client(const fedc_attack *attack, uint32_t client)
{
  double f = attack->fraction;

  if (attack->kind == FEDC_ATTACK_NONE)
    return false;
  return floor((double)(client + 1) * f) > floor((double)client * f);
}

int fedc_attack_apply(const fedc_attack *attack, uint32_t client,
                      const fedc_tensor_list *global,
                      fedc_tensor_list *weights)
{
  double factor = attack->kind == FEDC_ATTACK_SIGN_FLIP ? -attack->scale
                                                        : attack->scale;

  if (!fedc_attack_client(attack, client))
    return 0;
  if (fedc_tensor_list_check_layout(global, weights) < 0)
    return FEDC_ESHAPE;
  for (size_t i = 0; i < weights->count; i++) {
    fedc_tensor *w = &weights->items[i];
    const float *g = global->items[i].data;
    float *x = w->data;
    uint64_t n = fedc_tensor_numel(w);

    if (w->dtype != FEDC_DTYPE_F32)
      continue;
    for (uint64_t k = 0; k < n; k++)
      x[k] = (float)(g[k] + factor * ((double)x[k] - g[k]));
  }
  return 0;
}
