/* Large products through cuBLAS (loaded on first use, see cublas.cu). */
#ifndef M2C_CUDA_CUBLAS_CUH
#define M2C_CUDA_CUBLAS_CUH

#include "common.cuh"

/* out[r, o] = sum_k x[r, k] W[o, k] (+ out[r, o] when accumulate), float32 accumulation, the
 * output stored as `out_dtype` (float32, or W's 16-bit type). x [R, K] with row stride ldx holds
 * `x_dtype`, the same type as W. */
m2c_status m2c_cuda_gemm(void *out, m2c_dtype out_dtype, int64_t ldo, const void *x, int64_t ldx,
                         m2c_dtype x_dtype, m2c_tensor W, int64_t R, int64_t K, int64_t O,
                         int accumulate);

/* cuBLAS spends tens of milliseconds on the first product of a process (40 ms on an H200),
 * setting itself up and loading kernels. This opens it on the current device and runs one small
 * product with `dtype` operands, so that a model placed on the device pays that then rather than
 * in its first forward. Does nothing after the first success for a device and type. */
extern "C" m2c_status m2c_cuda_prepare_products(m2c_dtype dtype);

#endif
