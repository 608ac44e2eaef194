#include "status.h"

#include <stdarg.h>
#include <stdio.h>

/* One message per thread, so concurrent calls on different threads keep their own errors. */
static _Thread_local char last_error[512];

m2c_status m2c_fail(m2c_status status, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, args);
    va_end(args);
    return status;
}

const char *m2c_last_error(void) { return last_error; }
