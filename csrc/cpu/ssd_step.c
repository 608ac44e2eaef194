/* One-token SSD update (decode): every state element is read, decayed, updated and contracted
 * with C in a single pass, so a step costs one read and one write of the state. */
#include <math.h>
#include <string.h>

#include "kernels.h"
#include "spans.h"
#include "simd.h"

/* One head's P x N state: s = s * decay + (dt x) B^T, y = s C + D x. */
static M2C_VECTORIZE void head_step(float *y, float *s, const float *x, const float *Bv,
                                    const float *Cv, float step, float decay, float D, int64_t P,
                                    int64_t N) {
    for (int64_t p = 0; p < P; p++) {
        float *sp = s + p * N, input = step * x[p], acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int64_t n = 0; n < N; n++) {
            sp[n] = sp[n] * decay + input * Bv[n];
            acc += sp[n] * Cv[n];
        }
        y[p] = acc + D * x[p];
    }
}

void m2c_ssd_step(float *y, float *state, int has_state, const float *x, const float *Bm,
                  const float *Cm, int64_t ldx, const float *dt, const float *A, const float *D,
                  int64_t B, int64_t H, int64_t P, int64_t N, int64_t G) {
    const int64_t heads_per_group = H / G;
    m2c_spans spans;
    m2c_spans_init(&spans, B * H);
#pragma omp parallel if (B * H * P * N > 32768)
    for (int64_t bh; (bh = m2c_spans_next(&spans)) >= 0;) {
        const int64_t b = bh / H, h = bh % H;
        float *s = state + bh * P * N;
        const float step = dt[bh];
        if (!has_state) memset(s, 0, sizeof(float) * P * N);
        head_step(y + bh * P, s, x + b * ldx + h * P, Bm + b * ldx + (h / heads_per_group) * N,
                  Cm + b * ldx + (h / heads_per_group) * N, step, expf(step * A[h]), D[h], P, N);
    }
}
