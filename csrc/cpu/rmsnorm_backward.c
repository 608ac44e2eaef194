/* Backward of RMSNorm and of the gated RMSNorm. With n = g r, r = 1/sqrt(mean(g^2) + eps) over
 * a group of m channels and dn = dout * weight:
 *   dg = r (dn - g r^2 (dn . g) / m),   dweight = sum over rows of dout * n.
 * Input gradients are computed row by row (parallel over rows); the weight gradient, a sum over
 * rows, is computed afterwards column block by column block from the kept per-row scales, so
 * it is summed in a fixed order whatever the number of threads. Dot products accumulate in
 * double like the forward's sums of squares. */
#include <math.h>
#include <stdlib.h>

#include "../model/status.h"
#include "activations.h"
#include "backward.h"
#include "dtype.h"
#include "simd.h"

enum { COLUMN_BLOCK = 256 };

/* The gradient of one group whose forward output was w * g * r * out_scale (out_scale: the
 * plain norm's row mask): dg = out_scale r (dout w - g r^2 (dout w . g) / m). Returns r. */
static M2C_VECTORIZE float group_backward(float *dg, const float *dout, const float *g,
                                          const float *w, int64_t m, float eps,
                                          float out_scale) {
    double ss = 0, dot = 0;
#pragma omp simd reduction(+ : ss, dot)
    for (int64_t i = 0; i < m; i++) {
        ss += (double)g[i] * g[i];
        dot += (double)(dout[i] * w[i]) * g[i];
    }
    /* the same float32 rounding as the forward's scale */
    float r = 1.0f / sqrtf((float)(ss / m) + eps);
    float coef = (float)(dot * out_scale) * r * r / (float)m, s = r * out_scale;
#pragma omp simd
    for (int64_t i = 0; i < m; i++) dg[i] = s * (dout[i] * w[i]) - r * (g[i] * coef);
    return r;
}

/* acc[i] += d[i] * g[i] * scale, g = x or x * silu(gate) */
static M2C_VECTORIZE void accumulate_row(double *acc, const float *d, const float *x,
                                         const float *gate, float scale, int64_t n) {
    if (gate) {
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            acc[i] += (double)(d[i] * (x[i] * m2c_silu(gate[i]) * scale));
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; i++) acc[i] += (double)(d[i] * (x[i] * scale));
    }
}

/* dweight[i] = sum_r dout[r, i] * g(r, i) * scales[r, i / m], column block by column block;
 * g(r, .) is x itself (gate NULL) or x * silu(gate). */
static void weight_gradient(float *dweight, const float *dout, const float *x, const float *gate,
                            int64_t ldgate, const float *scales, int64_t R, int64_t width,
                            int64_t m) {
    const int64_t blocks = (width + COLUMN_BLOCK - 1) / COLUMN_BLOCK, groups = width / m;
#pragma omp parallel for schedule(static) if (R * width > 65536)
    for (int64_t blk = 0; blk < blocks; blk++) {
        const int64_t i0 = blk * COLUMN_BLOCK;
        const int64_t i1 = i0 + COLUMN_BLOCK < width ? i0 + COLUMN_BLOCK : width;
        double acc[COLUMN_BLOCK] = {0};
        for (int64_t r = 0; r < R; r++)
            /* pieces of the block inside one group share a scale */
            for (int64_t a = i0; a < i1;) {
                int64_t b = (a / m + 1) * m < i1 ? (a / m + 1) * m : i1;
                accumulate_row(acc + (a - i0), dout + r * width + a, x + r * width + a,
                               gate ? gate + r * ldgate + a : NULL, scales[r * groups + a / m],
                               b - a);
                a = b;
            }
        for (int64_t i = i0; i < i1; i++) dweight[i] = (float)acc[i - i0];
    }
}

static M2C_VECTORIZE void gate_row(float *g, const float *y, const float *z, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) g[i] = y[i] * m2c_silu(z[i]);
}

static M2C_VECTORIZE void gate_backward_row(float *dy, float *dz, const float *dg, const float *y,
                                            const float *z, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        dy[i] = dg[i] * m2c_silu(z[i]);
        dz[i] = dg[i] * y[i] * m2c_silu_grad(z[i]);
    }
}

m2c_status m2c_rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x,
                                m2c_tensor weight, const float *row_scale, int64_t R, int64_t D,
                                float eps) {
    float *scales = malloc(sizeof(float) * (size_t)(R + D > 0 ? R + D : 1));
    if (!scales) return m2c_fail(M2C_ERR_MEMORY, "out of memory for the RMSNorm backward");
    float *w = scales + R;
    m2c_widen(w, weight, 0, (size_t)D);
#pragma omp parallel for schedule(static) if (R * D > 65536)
    for (int64_t r = 0; r < R; r++) {
        float s = row_scale ? row_scale[r] : 1.0f;
        scales[r] = s * group_backward(dx + r * D, dout + r * D, x + r * D, w, D, eps, s);
    }
    weight_gradient(dweight, dout, x, NULL, 0, scales, R, D, D);
    free(scales);
    return M2C_OK;
}

m2c_status m2c_rmsnorm_gated_backward(float *dy, float *dz, int64_t lddz, float *dweight,
                                      const float *dout, const float *y, const float *z,
                                      int64_t ldz, m2c_tensor weight, int64_t R, int64_t I,
                                      int64_t group_size, float eps) {
    if (group_size <= 0 || I % group_size)
        return m2c_fail(M2C_ERR_VALUE, "gated RMSNorm backward: group size %lld does not divide "
                        "the width %lld", (long long)group_size, (long long)I);
    if (I == 0) return M2C_OK; /* empty rows, however many: nothing to write */
    const int64_t groups = I / group_size;
    float *scales = malloc(sizeof(float) * (size_t)(R * groups + I > 0 ? R * groups + I : 1));
    if (!scales) return m2c_fail(M2C_ERR_MEMORY, "out of memory for the gated RMSNorm backward");
    float *w = scales + R * groups;
    m2c_widen(w, weight, 0, (size_t)I);
    int failed = 0;
#pragma omp parallel reduction(| : failed) if (R * I > 65536)
    {
        float *g = malloc(sizeof(float) * (size_t)(2 * I > 0 ? 2 * I : 1)), *dg = g ? g + I : NULL;
        failed = !g;
#pragma omp for schedule(static)
        for (int64_t r = 0; r < R; r++) {
            if (failed) continue;
            gate_row(g, y + r * I, z + r * ldz, I);
            for (int64_t g0 = 0; g0 < I; g0 += group_size)
                scales[r * groups + g0 / group_size] = group_backward(
                    dg + g0, dout + r * I + g0, g + g0, w + g0, group_size, eps, 1.0f);
            gate_backward_row(dy + r * I, dz + r * lddz, dg, y + r * I, z + r * ldz, I);
        }
        free(g);
    }
    if (!failed) weight_gradient(dweight, dout, y, z, ldz, scales, R, I, group_size);
    free(scales);
    return failed ? m2c_fail(M2C_ERR_MEMORY, "out of memory for the gated RMSNorm backward")
                  : M2C_OK;
}
