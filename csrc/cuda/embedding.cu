/* Embedding gather: one block per token row, threads across the hidden size. */
#include "kernels.cuh"

__global__ void embedding_kernel(float *out, const int64_t *ids, int64_t ld_ids, m2c_tensor table,
                                 int64_t T, int64_t D, int64_t V) {
    const int64_t r = blockIdx.x, b = r / T, t = r % T;
    const int64_t id = ids[b * ld_ids + t];
    float *row = out + r * D;
    if (id < 0 || id >= V) { /* never read outside the table */
        for (int64_t i = threadIdx.x; i < D; i += blockDim.x) row[i] = __int_as_float(0x7fc00000);
        return;
    }
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) row[i] = m2c_load(table, id * D + i);
}

void m2c_cuda_embedding(float *out, const int64_t *ids, int64_t ld_ids, m2c_tensor table,
                        int64_t B, int64_t T, int64_t D, int64_t V) {
    if (B * T == 0) return;
    embedding_kernel<<<(unsigned)(B * T), 256, 0, m2c_cuda_stream()>>>(out, ids, ld_ids, table, T,
                                                                        D, V);
}
