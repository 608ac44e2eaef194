#include "dtype.h"
#include "kernels.h"

void m2c_embedding(float *out, const int64_t *ids, m2c_tensor table, int64_t R, int64_t D) {
#pragma omp parallel for schedule(static) if (R * D > 65536)
    for (int64_t r = 0; r < R; r++) m2c_widen(out + r * D, table, (size_t)ids[r] * D, D);
}
