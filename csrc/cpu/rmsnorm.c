/* RMSNorm and the gated RMSNorm of the Mamba-2 mixer. Statistics accumulate in double: the
 * rows are long (up to I = 8192) and the result must track a float32 reference to ~1e-7. */
#include <math.h>

#include "dtype.h"
#include "kernels.h"

void m2c_rmsnorm(float *out, const float *x, m2c_tensor weight, const float *row_scale, int64_t R,
                 int64_t D, float eps) {
#pragma omp parallel for schedule(static) if (R * D > 65536)
    for (int64_t r = 0; r < R; r++) {
        const float *xr = x + r * D;
        float *yr = out + r * D;
        double sum = 0;
        for (int64_t i = 0; i < D; i++) sum += (double)xr[i] * xr[i];
        float scale = 1.0f / sqrtf((float)(sum / D) + eps);
        if (row_scale) scale *= row_scale[r];
        for (int64_t i = 0; i < D; i++) yr[i] = m2c_load(weight, i) * (xr[i] * scale);
    }
}

void m2c_rmsnorm_gated(float *out, const float *y, const float *z, int64_t ldz, m2c_tensor weight,
                       int64_t R, int64_t I, int64_t group_size, float eps) {
#pragma omp parallel for schedule(static) if (R * I > 65536)
    for (int64_t r = 0; r < R; r++) {
        const float *yr = y + r * I;
        const float *zr = z + r * ldz;
        float *outr = out + r * I;
        for (int64_t g0 = 0; g0 < I; g0 += group_size) {
            double sum = 0;
            for (int64_t i = g0; i < g0 + group_size; i++) {
                float gated = yr[i] * (zr[i] / (1.0f + expf(-zr[i])));
                outr[i] = gated;
                sum += (double)gated * gated;
            }
            float scale = 1.0f / sqrtf((float)(sum / group_size) + eps);
            for (int64_t i = g0; i < g0 + group_size; i++)
                outr[i] = m2c_load(weight, i) * (outr[i] * scale);
        }
    }
}
