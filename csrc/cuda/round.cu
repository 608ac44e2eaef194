/* The element-wise passes around a cuBLAS product: activations rounded to the weights' 16-bit
 * type (tensor cores take both operands in one type), and the bias added to the result. */
#include "kernels.cuh"

/* Block (row, slice of 256 x VEC columns): no division per element; VEC = 4 reads the row in
 * 16-byte loads. */
template <class T, int VEC>
__global__ void round_rows_kernel(T *dst, const float *src, int64_t lds, int64_t K) {
    const int64_t k = ((int64_t)blockIdx.y * blockDim.x + threadIdx.x) * VEC, r = blockIdx.x;
    if (k < K) m2c_store_as<T, VEC>(dst + r * K + k, m2c_load_floats<VEC>(src + r * lds + k));
}

template <class T>
static void round_rows(T *dst, const float *src, int64_t lds, int64_t R, int64_t K) {
    cudaStream_t s = m2c_cuda_stream();
    if (m2c_rows_vec4(src, lds) && m2c_rows_vec4(dst, K))
        round_rows_kernel<T, 4><<<dim3((unsigned)R, m2c_blocks(K / 4, 256)), 256, 0, s>>>(
            dst, src, lds, K);
    else
        round_rows_kernel<T, 1><<<dim3((unsigned)R, m2c_blocks(K, 256)), 256, 0, s>>>(dst, src,
                                                                                      lds, K);
}

void m2c_cuda_round_rows(void *dst, m2c_dtype dtype, const float *src, int64_t lds, int64_t R,
                         int64_t K) {
    if (R * K == 0) return;
    if (dtype == M2C_BF16) round_rows((__nv_bfloat16 *)dst, src, lds, R, K);
    else round_rows((__half *)dst, src, lds, R, K);
}

template <class T>
__global__ void bias_rows_kernel(T *out, int64_t ldo, m2c_tensor bias, int64_t O, int64_t n,
                                 int accumulate) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    m2c_store_sum(out + (i / O) * ldo + i % O, m2c_load(bias, i % O), accumulate);
}

void m2c_cuda_bias_rows(void *out, m2c_dtype out_dtype, int64_t ldo, m2c_tensor bias, int64_t R,
                        int64_t O, int accumulate) {
    if (R * O == 0) return;
    m2c_with_type(out, out_dtype, [&](auto *typed) {
        bias_rows_kernel<<<m2c_blocks(R * O, 256), 256, 0, m2c_cuda_stream()>>>(
            typed, ldo, bias, O, R * O, accumulate);
    });
}
