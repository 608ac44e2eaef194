#include <math.h>

#include "activations.h"
#include "dtype.h"
#include "kernels.h"

void m2c_dt_softplus(float *dt, const float *raw, int64_t ldraw, m2c_tensor dt_bias, int64_t R,
                     int64_t H, float lo, float hi) {
#pragma omp parallel for schedule(static) if (R * H > 65536)
    for (int64_t r = 0; r < R; r++)
        for (int64_t h = 0; h < H; h++)
            dt[r * H + h] = fminf(fmaxf(m2c_softplus(raw[r * ldraw + h] + m2c_load(dt_bias, h)), lo), hi);
}
