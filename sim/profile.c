#include "profile.h"

#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

enum section_kind { SECTION_NONE, SECTION_CLASS, SECTION_CLIENT };

/* The section being read; it is added to the model when the next section
 * starts or the file ends. */
typedef struct profile_state {
  fedc_device_model *model;
  char section[64];          /* the header text, to notice a new section */
  enum section_kind kind;
  fedc_device_class cls;
  fedc_device device;
  unsigned long client;
  int err;
  char *errmsg;
  size_t errlen;
} profile_state;

static void reference_device(fedc_device *d)
{
  fedc_device_class c;

  fedc_device_class_default(&c, "reference");
  *d = (fedc_device){
    .speed = (float)c.speed, .down_bps = (float)c.down_bps,
    .up_bps = (float)c.up_bps, .dropout = 0.0f, .period = 0.0f,
    .online = 1.0f, .phase = 0.0f,
  };
}

static int commit_section(profile_state *st)
{
  int err = 0;

  if (st->kind == SECTION_CLASS)
    err = fedc_device_model_add_class(st->model, &st->cls);
  else if (st->kind == SECTION_CLIENT)
    err = fedc_device_model_set_client(st->model, (uint32_t)st->client,
                                       &st->device);
  if (err == FEDC_EINVAL)
    snprintf(st->errmsg, st->errlen,
             "section [%s] has a value out of range", st->section);
  st->kind = SECTION_NONE;
  return err;
}

/* Starts a "class NAME" or "client INDEX" section. */
static int begin_section(profile_state *st, const char *section)
{
  char *end = NULL;

  snprintf(st->section, sizeof(st->section), "%s", section);
  if (strncmp(section, "class ", 6) == 0 && section[6] != '\0') {
    st->kind = SECTION_CLASS;
    fedc_device_class_default(&st->cls, section + 6);
    return 0;
  }
  if (strncmp(section, "client ", 7) == 0 && section[7] != '-') {
    errno = 0;
    st->client = strtoul(section + 7, &end, 10);
    if (errno == 0 && end != section + 7 && *end == '\0' &&
        st->client <= UINT32_MAX - 1) {
      st->kind = SECTION_CLIENT;
      reference_device(&st->device);
      return 0;
    }
  }
  snprintf(st->errmsg, st->errlen,
           "unknown section [%s]; expected [class NAME] or [client INDEX]",
           section);
  return FEDC_EINVAL;
}

static int parse_value(const char *text, double *out)
{
  char *end = NULL;

  errno = 0;
  *out = strtod(text, &end);
  if (errno != 0 || end == text || *end != '\0' || !isfinite(*out))
    return FEDC_EINVAL;
  return 0;
}

static double *class_field(fedc_device_class *c, const char *key)
{
  if (strcmp(key, "weight") == 0) return &c->weight;
  if (strcmp(key, "speed") == 0) return &c->speed;
  if (strcmp(key, "speed_sigma") == 0) return &c->speed_sigma;
  if (strcmp(key, "download_bps") == 0) return &c->down_bps;
  if (strcmp(key, "upload_bps") == 0) return &c->up_bps;
  if (strcmp(key, "bandwidth_sigma") == 0) return &c->bandwidth_sigma;
  if (strcmp(key, "dropout") == 0) return &c->dropout;
  if (strcmp(key, "period") == 0) return &c->period;
  if (strcmp(key, "online") == 0) return &c->online;
  return NULL;
}

static float *client_field(fedc_device *d, const char *key)
{
  if (strcmp(key, "speed") == 0) return &d->speed;
  if (strcmp(key, "download_bps") == 0) return &d->down_bps;
  if (strcmp(key, "upload_bps") == 0) return &d->up_bps;
  if (strcmp(key, "dropout") == 0) return &d->dropout;
  if (strcmp(key, "period") == 0) return &d->period;
  if (strcmp(key, "online") == 0) return &d->online;
  if (strcmp(key, "phase") == 0) return &d->phase;
  return NULL;
}

static int set_key(profile_state *st, const char *key, const char *text)
{
  double value = 0.0;
  double *class_slot = NULL;
  float *client_slot = NULL;

  if (st->kind == SECTION_CLASS)
    class_slot = class_field(&st->cls, key);
  else
    client_slot = client_field(&st->device, key);
  if (class_slot == NULL && client_slot == NULL) {
    snprintf(st->errmsg, st->errlen, "unknown key \"%s\" in section [%s]",
             key, st->section);
    return FEDC_EINVAL;
  }
  if (parse_value(text, &value) != 0) {
    snprintf(st->errmsg, st->errlen, "invalid number \"%s\" for %s in [%s]",
             text, key, st->section);
    return FEDC_EINVAL;
  }

  if (class_slot != NULL)
    *class_slot = value;
  else
    *client_slot = (float)value;
  return 0;
}

/* inih calls this once per key; returning 0 stops the parse there. */
static int on_entry(void *user, const char *section, const char *key,
                    const char *value)
{
  profile_state *st = user;

  if (st->kind == SECTION_NONE || strcmp(section, st->section) != 0) {
    if (st->kind != SECTION_NONE)
      st->err = commit_section(st);
    if (st->err == 0)
      st->err = begin_section(st, section);
  }
  if (st->err == 0)
    st->err = set_key(st, key, value);
  return st->err == 0;
}

int fedc_profile_load(const char *path, fedc_device_model *m, char *errmsg,
                      size_t errlen)
{
  profile_state st = {
    .model = m, .kind = SECTION_NONE, .errmsg = errmsg, .errlen = errlen,
  };
  int line;

  errmsg[0] = '\0';
  line = ini_parse(path, on_entry, &st);
  if (line < 0) {
    snprintf(errmsg, errlen, "cannot open device profile %s", path);
    return FEDC_ENOENT;
  }
  if (line == 0 && st.err == 0)
    st.err = commit_section(&st);
  if (line > 0 && st.err == 0) {
    snprintf(errmsg, errlen, "line does not parse as INI");
    st.err = FEDC_EINVAL;
  }

  if (st.err != 0) {
    char reason[256];

    snprintf(reason, sizeof(reason), "%s", errmsg);
    if (line > 0)
      snprintf(errmsg, errlen, "%s:%d: %s", path, line, reason);
    else
      snprintf(errmsg, errlen, "%s: %s", path, reason);
  }
  return st.err;
}
