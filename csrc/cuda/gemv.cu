/* The decode product of one row, out[o] = x . W[o, :]: memory-bound, so the whole design is
 * about reading W once at full bandwidth. A warp owns one output o and streams its row of W
 * with 16-byte loads (8 bf16/f16 or 4 f32 values per lane) against x (small, served from L1),
 * accumulating in float32 registers; a shuffle reduction ends the row. With more rows each
 * 16-byte load of weights would need one load of x per row from L1, which soon costs more than
 * the weights: cuBLAS takes those. Misaligned or ragged shapes take a scalar path. */
#include "kernels.cuh"

enum { GEMV_WARPS = 8 };

/* One 16-byte load of weights holds N of them: eight 16-bit values or four float32. They stay
 * packed in registers until used, so that a warp can keep several loads in flight cheaply. */
template <typename T> struct Pack { static constexpr int N = 16 / sizeof(T); };

/* 16 bytes of weights, read once: they bypass L1, and each miss asks L2 for the whole 128-byte
 * line, which the warp's next loads along the row need. Timed alone on the H200 this took the
 * Codestral products from 2.5-3.8 to 3.2-4.0 TB/s; between the small kernels of a decode step
 * the gain is far smaller (benchmarks/RESULTS.md). */
__device__ __forceinline__ uint4 load_weights(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.L2::128B.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* The N weights of `raw` dotted with x[k : k + N]. */
__device__ __forceinline__ float dot(uint4 raw, float, const float *x, int64_t k) {
    const float4 xv = *(const float4 *)(x + k), w = *(const float4 *)&raw;
    return w.x * xv.x + w.y * xv.y + w.z * xv.z + w.w * xv.w;
}
template <typename T>
__device__ __forceinline__ float dot(uint4 raw, T type, const float *x, int64_t k) {
    const float4 *xk = (const float4 *)(x + k);
    const uint32_t h[4] = {raw.x, raw.y, raw.z, raw.w};
    float acc = 0.0f;
    for (int j = 0; j < 2; j++) {
        const float4 xv = xk[j];
        const float2 a = m2c_widen2(h[2 * j], type), b = m2c_widen2(h[2 * j + 1], type);
        acc += a.x * xv.x + a.y * xv.y + b.x * xv.z + b.y * xv.w;
    }
    return acc;
}

/* out: float32, or (never accumulating) the 16-bit type the projection rounds to. */
template <typename T, typename OutT>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(OutT *out, const float *x, const T *W, m2c_tensor bias, int64_t K, int64_t O,
            int accumulate) {
    constexpr int N = Pack<T>::N;
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (o >= O) return;
    const T *w = W + o * K;
    /* UNROLL loads issued before any is used: enough bytes in flight per warp to cover the
     * memory latency. */
    constexpr int UNROLL = 4, STEP = 32 * N;
    uint4 wv[UNROLL];
    float acc = 0.0f;
    int64_t k = (int64_t)lane * N;
    for (int u = 0; u < UNROLL; u++)
        if (k + u * STEP < K) wv[u] = load_weights(w + k + u * STEP);
    m2c_wait_for_previous(); /* x and out are the previous kernel's */
    for (;;) {
        for (int u = 0; u < UNROLL; u++)
            if (k + u * STEP < K) acc += dot(wv[u], T{}, x, k + u * STEP);
        k += UNROLL * STEP;
        if (k >= K) break;
        for (int u = 0; u < UNROLL; u++)
            if (k + u * STEP < K) wv[u] = load_weights(w + k + u * STEP);
    }
    m2c_let_next_start(); /* this block's weights are read: the next kernel may be placed */
    acc = m2c_warp_sum(acc);
    if (lane == 0) m2c_store_sum(out + o, acc + m2c_load_or_zero(bias, o), accumulate);
}

/* Any alignment, any K: one weight at a time. */
template <typename OutT>
__global__ void gemv_scalar_kernel(OutT *out, const float *x, m2c_tensor W, m2c_tensor bias,
                                   int64_t K, int64_t O, int accumulate) {
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (o >= O) return;
    float acc = 0.0f;
    for (int64_t k = lane; k < K; k += 32) acc += m2c_load(W, o * K + k) * x[k];
    acc = m2c_warp_sum(acc);
    if (lane == 0) m2c_store_sum(out + o, acc + m2c_load_or_zero(bias, o), accumulate);
}

template <typename T, typename OutT>
static void launch(OutT *out, const float *x, const void *W, m2c_tensor bias, int64_t K,
                   int64_t O, int accumulate) {
    /* Early: the first weights stream in while the norm before it finishes. */
    m2c_launch_early(gemv_kernel<T, OutT>, dim3(m2c_blocks(O, GEMV_WARPS)),
                     dim3(GEMV_WARPS * 32), 0, 1, out, x, (const T *)W, bias, K, O, accumulate);
}

void m2c_cuda_gemv(void *out, m2c_dtype out_dtype, const float *x, m2c_tensor W, m2c_tensor bias,
                   int64_t K, int64_t O, int accumulate) {
    if (O == 0) return;
    const int per_load = 16 / (int)m2c_dtype_size(W.dtype);
    const int aligned = (uintptr_t)W.data % 16 == 0 && (uintptr_t)x % 16 == 0 && K % per_load == 0;
    m2c_with_type(out, out_dtype, [&](auto *typed) {
        if (!aligned) {
            gemv_scalar_kernel<<<m2c_blocks(O, GEMV_WARPS), GEMV_WARPS * 32, 0,
                                 m2c_cuda_stream()>>>(typed, x, W, bias, K, O, accumulate);
            return;
        }
        switch (W.dtype) {
        case M2C_BF16: launch<__nv_bfloat16>(typed, x, W.data, bias, K, O, accumulate); break;
        case M2C_F16: launch<__half>(typed, x, W.data, bias, K, O, accumulate); break;
        default: launch<float>(typed, x, W.data, bias, K, O, accumulate); break;
        }
    });
}
