/* RMSNorm and the gated RMSNorm: one block per row (or per row and norm group), a block-wide
 * sum of squares, then a second pass scaling the row, which is still in L1/L2. */
#include "kernels.cuh"

enum { NORM_THREADS = 256 };

__global__ void rmsnorm_kernel(float *out, const float *x, m2c_tensor weight,
                               const float *row_scale, int64_t D, float eps) {
    __shared__ float scratch[32];
    const int64_t r = blockIdx.x;
    const float *row = x + r * D;
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x) sum += row[i] * row[i];
    sum = m2c_block_sum(sum, scratch);
    float scale = 1.0f / sqrtf(sum / (float)D + eps);
    if (row_scale) scale *= row_scale[r];
    for (int64_t i = threadIdx.x; i < D; i += blockDim.x)
        out[r * D + i] = m2c_load(weight, i) * (row[i] * scale);
}

void m2c_cuda_rmsnorm(float *out, const float *x, m2c_tensor weight, const float *row_scale,
                      int64_t R, int64_t D, float eps) {
    if (R == 0) return;
    rmsnorm_kernel<<<(unsigned)R, NORM_THREADS, 0, m2c_cuda_stream()>>>(out, x, weight, row_scale,
                                                                         D, eps);
}

/* Block (group, row): g = y * silu(z) over the group's channels, normalised by its own rms. */
__global__ void rmsnorm_gated_kernel(float *out, const float *y, const float *z, int64_t ldz,
                                     m2c_tensor weight, int64_t I, int64_t group_size, float eps) {
    __shared__ float scratch[32];
    const int64_t r = blockIdx.y, g0 = (int64_t)blockIdx.x * group_size;
    const float *yr = y + r * I + g0, *zr = z + r * ldz + g0;
    float sum = 0.0f;
    for (int64_t i = threadIdx.x; i < group_size; i += blockDim.x) {
        float g = yr[i] * m2c_silu(zr[i]);
        sum += g * g;
    }
    sum = m2c_block_sum(sum, scratch); /* every thread has read its y before any writes out */
    const float scale = 1.0f / sqrtf(sum / (float)group_size + eps);
    for (int64_t i = threadIdx.x; i < group_size; i += blockDim.x) {
        float g = yr[i] * m2c_silu(zr[i]);
        out[r * I + g0 + i] = m2c_load(weight, g0 + i) * (g * scale);
    }
}

void m2c_cuda_rmsnorm_gated(float *out, const float *y, const float *z, int64_t ldz,
                            m2c_tensor weight, int64_t R, int64_t I, int64_t group_size,
                            float eps) {
    if (R == 0 || I == 0) return;
    dim3 grid((unsigned)(I / group_size), (unsigned)R);
    rmsnorm_gated_kernel<<<grid, NORM_THREADS, 0, m2c_cuda_stream()>>>(out, y, z, ldz, weight, I,
                                                                        group_size, eps);
}
