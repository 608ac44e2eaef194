/* Backward of dt = clamp(softplus(raw + dt_bias), lo, hi). */
#include "activations.h"
#include "backward.h"
#include "dtype.h"

void m2c_dt_softplus_backward(float *draw, int64_t lddraw, float *ddt_bias, const float *ddt,
                              const float *raw, int64_t ldraw, m2c_tensor dt_bias, int64_t R,
                              int64_t H, float lo, float hi) {
#pragma omp parallel for schedule(static) if (R * H > 65536)
    for (int64_t r = 0; r < R; r++)
        for (int64_t h = 0; h < H; h++) {
            float v = raw[r * ldraw + h] + m2c_load(dt_bias, h);
            float dt = m2c_softplus(v);
            /* torch.clamp passes the gradient where lo <= value <= hi, the bounds included */
            draw[r * lddraw + h] = dt >= lo && dt <= hi ? ddt[r * H + h] * m2c_softplus_grad(v)
                                                        : 0.0f;
        }
    if (!ddt_bias) return;
    /* a few heads, summed over rows in a fixed order */
    for (int64_t h = 0; h < H; h++) {
        double sum = 0;
        for (int64_t r = 0; r < R; r++) sum += draw[r * lddraw + h];
        ddt_bias[h] = (float)sum;
    }
}
