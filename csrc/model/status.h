/* Failure reporting shared by the engine and the kernels: a status plus a per-thread message. */
#ifndef M2C_STATUS_H
#define M2C_STATUS_H

#include "mamba2c.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Records a printf-style message for m2c_last_error() and returns `status`. */
m2c_status m2c_fail(m2c_status status, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
