/* Per-position cross-entropy of next-token prediction: one block per (b, t) row, a max and a
 * sum of exponentials over the vocabulary; the host averages the rows (backend.cu). */
#include <cfloat>

#include "kernels.cuh"

__global__ void cross_entropy_kernel(float *losses, float *counts, const float *logits,
                                     const int64_t *labels, int64_t T, int64_t V) {
    __shared__ float scratch[32];
    const int64_t r = blockIdx.x, t = r % T;
    const int64_t target = t + 1 < T ? labels[r + 1] : -100;
    if (target == -100 || target < 0 || target >= V) {
        if (threadIdx.x == 0) losses[r] = 0.0f, counts[r] = 0.0f;
        return;
    }
    const float *row = logits + r * V;
    float peak = -FLT_MAX;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) peak = fmaxf(peak, row[v]);
    for (int offset = 16; offset > 0; offset >>= 1)
        peak = fmaxf(peak, __shfl_xor_sync(0xffffffffu, peak, offset));
    __shared__ float peaks[32];
    if ((threadIdx.x & 31) == 0) peaks[threadIdx.x >> 5] = peak;
    __syncthreads();
    peak = peaks[0];
    for (int w = 1; w < (int)(blockDim.x >> 5); w++) peak = fmaxf(peak, peaks[w]);
    float sum = 0.0f;
    for (int64_t v = threadIdx.x; v < V; v += blockDim.x) sum += expf(row[v] - peak);
    sum = m2c_block_sum(sum, scratch);
    if (threadIdx.x == 0) {
        losses[r] = logf(sum) + peak - row[target];
        counts[r] = 1.0f;
    }
}

void m2c_cuda_cross_entropy_rows(float *losses, float *counts, const float *logits,
                                 const int64_t *labels, int64_t B, int64_t T, int64_t V) {
    if (B * T == 0) return;
    cross_entropy_kernel<<<(unsigned)(B * T), 256, 0, m2c_cuda_stream()>>>(losses, counts, logits,
                                                                            labels, T, V);
}
