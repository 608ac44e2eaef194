/* What every CUDA kernel file shares: weight loads that widen 16-bit storage to float32, the
 * stream all work is queued on, and small launch helpers. */
#ifndef M2C_CUDA_COMMON_CUH
#define M2C_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "mamba2c.h"

/* The one stream every kernel and copy of this process goes on (created on first use), so a
 * whole forward can be captured into a CUDA graph. */
extern "C" cudaStream_t m2c_cuda_stream(void);

/* Element i of a weight tensor in float32, whatever its storage type. */
__device__ __forceinline__ float m2c_load(m2c_tensor t, int64_t i) {
    switch (t.dtype) {
    case M2C_BF16: return __bfloat162float(((const __nv_bfloat16 *)t.data)[i]);
    case M2C_F16: return __half2float(((const __half *)t.data)[i]);
    default: return ((const float *)t.data)[i];
    }
}

/* Element i of an optional tensor (a bias), 0 when absent. */
__device__ __forceinline__ float m2c_load_or_zero(m2c_tensor t, int64_t i) {
    return t.data ? m2c_load(t, i) : 0.0f;
}

__device__ __forceinline__ float m2c_silu(float x) { return x / (1.0f + __expf(-x)); }

__device__ __forceinline__ float m2c_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* Sum over a block whose size is a multiple of 32 (at most 1024); every thread gets the total.
 * `scratch` is 32 floats of shared memory. */
__device__ __forceinline__ float m2c_block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = m2c_warp_sum(v);
    __syncthreads(); /* scratch may still be read by a previous call */
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return m2c_warp_sum(v);
}

static inline unsigned m2c_blocks(int64_t n, int threads) {
    return (unsigned)((n + threads - 1) / threads);
}

#endif
