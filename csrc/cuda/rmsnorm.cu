/* RMSNorm and the gated RMSNorm: one block per row (or per row and norm group), a block-wide
 * sum of squares, then a second pass scaling the row, which is still in L1/L2. */
#include "kernels.cuh"

/* Few rows (decode) get wide blocks, so one row's loads are spread over many threads. */
static int norm_threads(int64_t rows) { return rows < 128 ? 1024 : 256; }

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
    rmsnorm_kernel<<<(unsigned)R, norm_threads(R), 0, m2c_cuda_stream()>>>(out, x, weight,
                                                                            row_scale, D, eps);
}

/* Block (group, row): g = y * silu(z) over the group's channels, normalised by its own rms.
 * A thread keeps its first GATED_KEPT gate values in registers between the two passes; wider
 * groups recompute the rest. */
enum { GATED_KEPT = 8 };

__global__ void rmsnorm_gated_kernel(float *out, const float *y, const float *z, int64_t ldz,
                                     m2c_tensor weight, int64_t I, int64_t group_size, float eps) {
    __shared__ float scratch[32];
    const int64_t r = blockIdx.y, g0 = (int64_t)blockIdx.x * group_size;
    const float *yr = y + r * I + g0, *zr = z + r * ldz + g0;
    const int64_t kept_end = (int64_t)GATED_KEPT * blockDim.x;
    float kept[GATED_KEPT], sum = 0.0f;
#pragma unroll
    for (int j = 0; j < GATED_KEPT; j++) { /* constant indices: kept stays in registers */
        const int64_t i = threadIdx.x + (int64_t)j * blockDim.x;
        kept[j] = i < group_size ? yr[i] * m2c_silu(zr[i]) : 0.0f;
        sum += kept[j] * kept[j];
    }
    for (int64_t i = threadIdx.x + kept_end; i < group_size; i += blockDim.x) {
        const float g = yr[i] * m2c_silu(zr[i]);
        sum += g * g;
    }
    sum = m2c_block_sum(sum, scratch); /* every thread has read its y before any writes out */
    const float scale = 1.0f / sqrtf(sum / (float)group_size + eps);
#pragma unroll
    for (int j = 0; j < GATED_KEPT; j++) {
        const int64_t i = threadIdx.x + (int64_t)j * blockDim.x;
        if (i < group_size) out[r * I + g0 + i] = m2c_load(weight, g0 + i) * (kept[j] * scale);
    }
    for (int64_t i = threadIdx.x + kept_end; i < group_size; i += blockDim.x)
        out[r * I + g0 + i] = m2c_load(weight, g0 + i) * (yr[i] * m2c_silu(zr[i]) * scale);
}

void m2c_cuda_rmsnorm_gated(float *out, const float *y, const float *z, int64_t ldz,
                            m2c_tensor weight, int64_t R, int64_t I, int64_t group_size,
                            float eps) {
    if (R == 0 || I == 0) return;
    dim3 grid((unsigned)(I / group_size), (unsigned)R);
    rmsnorm_gated_kernel<<<grid, norm_threads(R * (I / group_size)), 0, m2c_cuda_stream()>>>(
        out, y, z, ldz, weight, I, group_size, eps);
}
