#include <math.h>

#include "kernels.h"

double m2c_cross_entropy(const float *logits, const int64_t *labels, int64_t B, int64_t T,
                         int64_t V) {
    double total = 0;
    int64_t count = 0;
#pragma omp parallel for collapse(2) reduction(+ : total, count) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T - 1; t++) {
            int64_t target = labels[b * T + t + 1];
            if (target == -100) continue;
            const float *row = logits + (b * T + t) * V;
            float peak = row[0];
            for (int64_t v = 1; v < V; v++) peak = fmaxf(peak, row[v]);
            double sum = 0;
            for (int64_t v = 0; v < V; v++) sum += exp((double)row[v] - peak);
            total += log(sum) + peak - row[target];
            count++;
        }
    return count ? total / count : NAN;
}
