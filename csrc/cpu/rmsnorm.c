/* RMSNorm and the gated RMSNorm of the Mamba-2 mixer. Sums of squares accumulate in double: the
 * rows are long (up to I = 8192) and the result must track a float32 reference to ~1e-7. */
#include <math.h>

#include "dtype.h"
#include "kernels.h"
#include "simd.h"

static M2C_VECTORIZE double sum_of_squares(const float *x, int64_t n) {
    double sum = 0;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < n; i++) sum += (double)x[i] * x[i];
    return sum;
}

/* out[i] = weight[offset + i] * x[i] * scale */
static M2C_VECTORIZE void scale_by_weight(float *out, const float *x, m2c_tensor weight,
                                          int64_t offset, int64_t n, float scale) {
    if (weight.dtype == M2C_F32) {
        const float *w = (const float *)weight.data + offset;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) out[i] = w[i] * (x[i] * scale);
    } else {
        for (int64_t i = 0; i < n; i++) out[i] = m2c_load(weight, offset + i) * (x[i] * scale);
    }
}

void m2c_rmsnorm(float *out, const float *x, m2c_tensor weight, const float *row_scale, int64_t R,
                 int64_t D, float eps) {
    if (D == 0) return; /* empty rows, however many: nothing to write */
#pragma omp parallel for schedule(static) if (R * D > 65536)
    for (int64_t r = 0; r < R; r++) {
        float scale = 1.0f / sqrtf((float)(sum_of_squares(x + r * D, D) / D) + eps);
        if (row_scale) scale *= row_scale[r]; /* the padding mask, 0 or 1 */
        scale_by_weight(out + r * D, x + r * D, weight, 0, D, scale);
    }
}

static M2C_VECTORIZE void gate(float *out, const float *y, const float *z, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) out[i] = y[i] * m2c_silu(z[i]);
}

void m2c_rmsnorm_gated(float *out, const float *y, const float *z, int64_t ldz, m2c_tensor weight,
                       int64_t R, int64_t I, int64_t group_size, float eps) {
    if (I == 0) return; /* empty rows, however many: nothing to write */
#pragma omp parallel for schedule(static) if (R * I > 65536)
    for (int64_t r = 0; r < R; r++) {
        float *row = out + r * I;
        gate(row, y + r * I, z + r * ldz, I);
        for (int64_t g0 = 0; g0 < I; g0 += group_size) {
            double sum = sum_of_squares(row + g0, group_size);
            float scale = 1.0f / sqrtf((float)(sum / group_size) + eps);
            scale_by_weight(row + g0, row + g0, weight, g0, group_size, scale);
        }
    }
}
