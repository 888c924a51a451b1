/* Device profile files: an INI file that describes device classes and
 * exact devices for chosen clients.
 *
 *   [class phone]          ; a distribution; clients pick one by weight
 *   weight = 3
 *   speed = 0.4            ; median compute speed, reference device = 1
 *   speed_sigma = 0.5      ; spread of ln(speed)
 *   download_bps = 2e6     ; median bandwidths, bytes per second
 *   upload_bps = 5e5
 *   bandwidth_sigma = 0.7  ; spread of ln(bandwidth)
 *   dropout = 0.1          ; probability of leaving mid-round
 *   period = 86400         ; availability cycle, seconds; 0 = always online
 *   online = 0.3           ; fraction of each cycle online
 *
 *   [client 17]            ; one client's exact device
 *   speed = 2
 *   period = 3600
 *   online = 0.5
 *   phase = 900            ; seconds into the cycle at virtual time 0
 *
 * Keys a section leaves out take the reference device's values (see
 * fedc_device_class_default()). A class section takes every key above; a
 * client section takes speed, download_bps, upload_bps, dropout, period,
 * online and phase. */
#ifndef FEDC_SIM_PROFILE_H
#define FEDC_SIM_PROFILE_H

#include <stddef.h>

#include "device.h"

/* Adds the classes and client devices of the profile at path to m.
 * Returns 0, FEDC_ENOENT when the file cannot be opened, or FEDC_EINVAL
 * for an unknown section or key or a value that does not parse or is out
 * of range. On an error, errmsg names the file and line. */
int fedc_profile_load(const char *path, fedc_device_model *m, char *errmsg,
                      size_t errlen);

#endif
