/* Backward of the mean next-token cross-entropy: softmax minus the one-hot target, per row. The
 * loss comes out of the same pass over the logits (a row's log-sum-exp is what its softmax
 * needs), so training computes the loss and its gradient with one read of the logits. */
#include <math.h>
#include <string.h>

#include "backward.h"
#include "simd.h"

/* d = scale * (softmax(row) - onehot(target)) when d is not NULL; returns the row's loss. */
static M2C_VECTORIZE double row_loss_and_grad(float *d, const float *row, int64_t V,
                                              int64_t target, float scale) {
    float peak = row[0];
    for (int64_t v = 1; v < V; v++) peak = row[v] > peak ? row[v] : peak;
    double sum = 0;
    if (d) {
#pragma omp simd reduction(+ : sum)
        for (int64_t v = 0; v < V; v++) {
            d[v] = m2c_expf(row[v] - peak);
            sum += d[v];
        }
        float k = (float)(scale / sum);
#pragma omp simd
        for (int64_t v = 0; v < V; v++) d[v] *= k;
        d[target] -= scale;
    } else {
#pragma omp simd reduction(+ : sum)
        for (int64_t v = 0; v < V; v++) sum += m2c_expf(row[v] - peak);
    }
    return log(sum) + peak - row[target];
}

double m2c_cross_entropy_with_grad(float *dlogits, const float *logits, const int64_t *labels,
                                   int64_t B, int64_t T, int64_t V, float scale) {
    double total = 0;
    int64_t count = 0;
#pragma omp parallel for collapse(2) reduction(+ : total, count) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            float *d = dlogits ? dlogits + (b * T + t) * V : NULL;
            int64_t target = t + 1 < T ? labels[b * T + t + 1] : -100;
            if (target == -100) {
                if (d) memset(d, 0, sizeof(float) * V);
                continue;
            }
            total += row_loss_and_grad(d, logits + (b * T + t) * V, V, target, scale);
            count++;
        }
    return count ? total / count : NAN;
}

void m2c_cross_entropy_backward(float *dlogits, const float *logits, const int64_t *labels,
                                int64_t B, int64_t T, int64_t V, float scale) {
    (void)m2c_cross_entropy_with_grad(dlogits, logits, labels, B, T, V, scale);
}
