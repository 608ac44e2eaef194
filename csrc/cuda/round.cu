/* The element-wise passes around a cuBLAS product: activations rounded to the weights' 16-bit
 * type (tensor cores take both operands in one type), and the bias added to the result. */
#include "kernels.cuh"

/* Block (row, slice of 256 x VEC columns): no division per element; VEC = 4 reads the row in
 * 16-byte loads. */
template <int VEC>
__global__ void round_rows_kernel(void *dst, int is_bf16, const float *src, int64_t lds,
                                  int64_t K) {
    const int64_t k = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * VEC, r = blockIdx.x;
    if (k >= K) return;
    const m2c_floats<VEC> v = m2c_load_floats<VEC>(src + r * lds + k);
    for (int e = 0; e < VEC; e++) {
        if (is_bf16)
            ((__nv_bfloat16 *)dst)[r * K + k + e] = __float2bfloat16_rn(v.v[e]);
        else
            ((__half *)dst)[r * K + k + e] = __float2half_rn(v.v[e]);
    }
}

void m2c_cuda_round_rows(void *dst, m2c_dtype dtype, const float *src, int64_t lds, int64_t R,
                         int64_t K) {
    if (R * K == 0) return;
    cudaStream_t s = m2c_cuda_stream();
    if (K % 4 == 0 && m2c_rows_aligned16(src, lds))
        round_rows_kernel<4><<<dim3((unsigned)R, m2c_blocks(K / 4, 256)), 256, 0, s>>>(
            dst, dtype == M2C_BF16, src, lds, K);
    else
        round_rows_kernel<1><<<dim3((unsigned)R, m2c_blocks(K, 256)), 256, 0, s>>>(
            dst, dtype == M2C_BF16, src, lds, K);
}

__global__ void add_bias_kernel(float *out, int64_t ldo, m2c_tensor bias, int64_t O, int64_t n) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    out[(i / O) * ldo + i % O] += m2c_load(bias, i % O);
}

void m2c_cuda_add_bias(float *out, int64_t ldo, m2c_tensor bias, int64_t R, int64_t O) {
    if (R * O == 0) return;
    add_bias_kernel<<<m2c_blocks(R * O, 256), 256, 0, m2c_cuda_stream()>>>(out, ldo, bias, O,
                                                                            R * O);
}
