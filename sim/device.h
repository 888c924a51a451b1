/* Simulated device heterogeneity: each client's compute speed, bandwidth,
 * availability over time and mid-round dropout probability.
 *
 * A device model is a weighted mixture of device classes, each a
 * distribution (log-normal speed and bandwidth around a median), plus
 * optional exact devices for chosen clients. A client's device is drawn
 * from a random stream seeded by (seed, client index) alone, so it does not
 * depend on how many clients exist or in which order they are drawn.
 *
 * Availability is periodic: a client with period P, online fraction f and
 * phase s is online at virtual time t exactly when
 * (t + s) mod P < f * P. A period of 0 means always online. */
#ifndef FEDC_SIM_DEVICE_H
#define FEDC_SIM_DEVICE_H

#include <stddef.h>
#include <stdint.h>

#define FEDC_DEVICE_CLASS_NAME_MAX 32

/* One client's device, 28 bytes. */
typedef struct fedc_device {
  float speed;         /* compute speed relative to the reference device */
  float down_bps;      /* download bandwidth, bytes per second */
  float up_bps;        /* upload bandwidth, bytes per second */
  float dropout;       /* probability of leaving in the middle of a round */
  float period;        /* availability cycle, seconds; 0 is always online */
  float online;        /* fraction of each cycle spent online, 0..1 */
  float phase;         /* seconds into the cycle at virtual time 0 */
} fedc_device;

/* A distribution of devices. Speed and both bandwidths are log-normal: the
 * median times exp(sigma * N(0, 1)). The phase is uniform over the period. */
typedef struct fedc_device_class {
  char name[FEDC_DEVICE_CLASS_NAME_MAX];
  double weight;           /* share of clients, relative to the other classes */
  double speed;            /* median relative compute speed */
  double speed_sigma;      /* spread of ln(speed) */
  double down_bps;         /* median download bandwidth, bytes per second */
  double up_bps;           /* median upload bandwidth, bytes per second */
  double bandwidth_sigma;  /* spread of ln(bandwidth), both directions */
  double dropout;          /* mid-round dropout probability */
  double period;           /* availability cycle, seconds; 0 is always online */
  double online;           /* fraction of each cycle spent online */
} fedc_device_class;

typedef struct fedc_device_override {
  uint32_t client;
  fedc_device device;
} fedc_device_override;

typedef struct fedc_device_model {
  fedc_device_class *classes;
  size_t class_count;
  fedc_device_override *overrides;   /* sorted by client */
  size_t override_count;
} fedc_device_model;

/* Fills c with the reference device: speed 1, 10 MB/s down, 2 MB/s up, no
 * spread, no dropout, always online, weight 1. */
void fedc_device_class_default(fedc_device_class *c, const char *name);

void fedc_device_model_init(fedc_device_model *m);
void fedc_device_model_close(fedc_device_model *m);

/* Checks c's values and appends a copy. Returns 0, FEDC_EINVAL (negative or
 * non-finite value, probability or fraction outside 0..1, zero speed or
 * bandwidth median) or FEDC_ENOMEM. */
int fedc_device_model_add_class(fedc_device_model *m,
                                const fedc_device_class *c);

/* Gives client exactly the device d, replacing an earlier one. Returns 0,
 * FEDC_EINVAL or FEDC_ENOMEM. */
int fedc_device_model_set_client(fedc_device_model *m, uint32_t client,
                                 const fedc_device *d);

/* Checks a device's values, as fedc_device_model_add_class() does. */
int fedc_device_check(const fedc_device *d);

/* Draws client's device into out: its exact device if one was set, else
 * one from a class chosen by weight. A model with no class draws the
 * reference device. */
void fedc_device_draw(const fedc_device_model *m, uint64_t seed,
                      uint32_t client, fedc_device *out);

/* Returns 1 when the device is online at virtual time t (seconds). */
int fedc_device_online(const fedc_device *d, double t);

/* Returns the first time after t at which the device goes online or
 * offline, or INFINITY when its status never changes. */
double fedc_device_next_change(const fedc_device *d, double t);

/* Returns the seconds the device needs to receive (upload == 0) or send
 * (upload != 0) bytes. */
double fedc_device_transfer_seconds(const fedc_device *d, uint64_t bytes,
                                    int upload);

/* Returns the seconds the device needs for flops floating-point operations
 * when the reference device (speed 1) does reference_flops per second. */
double fedc_device_compute_seconds(const fedc_device *d, double flops,
                                   double reference_flops);

#endif
