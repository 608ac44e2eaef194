/* The decode product out[r, o] = x[r, :] . W[o, :] for a few rows r: memory-bound, so the whole
 * design is about reading W once at full bandwidth. A warp owns one output o and streams its
 * row of W with 16-byte loads (8 bf16/f16 or 4 f32 values per lane), multiplying each against
 * every one of the R <= 4 activation rows (small, served from L1/L2; beyond four rows
 * re-reading them costs more than the weights, and cuBLAS takes over), accumulating in float32
 * registers; a shuffle reduction ends the row. Misaligned or ragged shapes take a scalar path. */
#include "kernels.cuh"

enum { GEMV_WARPS = 8 };

/* One 16-byte load of weights, widened: eight 16-bit values or four float32. */
__device__ __forceinline__ float2 widen2(__nv_bfloat162 v) { return __bfloat1622float2(v); }
__device__ __forceinline__ float2 widen2(__half2 v) { return __half22float2(v); }

template <typename Pair> struct Pack16 {
    static constexpr int N = 8;
    static __device__ __forceinline__ void load(float *v, const void *p) {
        uint4 raw = __ldg((const uint4 *)p);
        const Pair *h = (const Pair *)&raw;
        for (int i = 0; i < 4; i++) {
            float2 f = widen2(h[i]);
            v[2 * i] = f.x, v[2 * i + 1] = f.y;
        }
    }
};

template <typename T> struct Pack;
template <> struct Pack<__nv_bfloat16> : Pack16<__nv_bfloat162> {};
template <> struct Pack<__half> : Pack16<__half2> {};
template <> struct Pack<float> {
    static constexpr int N = 4;
    static __device__ __forceinline__ void load(float *v, const void *p) {
        float4 f = __ldg((const float4 *)p);
        v[0] = f.x, v[1] = f.y, v[2] = f.z, v[3] = f.w;
    }
};

/* acc[r] += wv . x[r, k : k + N] for the first `rows` rows. */
template <int ROWS, int N>
__device__ __forceinline__ void accumulate_rows(float *acc, const float *wv, const float *x,
                                                int64_t ldx, int64_t k, int rows) {
    for (int r = 0; r < ROWS; r++) {
        if (r >= rows) break;
        const float4 *xr = (const float4 *)(x + r * ldx + k);
        for (int j = 0; j < N / 4; j++) {
            float4 xv = xr[j];
            acc[r] += wv[4 * j] * xv.x + wv[4 * j + 1] * xv.y + wv[4 * j + 2] * xv.z +
                      wv[4 * j + 3] * xv.w;
        }
    }
}

template <typename T, int ROWS>
__global__ void __launch_bounds__(GEMV_WARPS * 32)
gemv_kernel(float *out, int64_t ldo, const float *x, int64_t ldx, const T *W, m2c_tensor bias,
            int rows, int64_t K, int64_t O, int accumulate) {
    constexpr int N = Pack<T>::N;
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (o >= O) return;
    const T *w = W + o * K;
    float acc[ROWS];
    for (int r = 0; r < ROWS; r++) acc[r] = 0.0f;
    /* UNROLL loads issued before any is used: enough bytes in flight per warp to cover the
     * memory latency. */
    constexpr int UNROLL = 4, STEP = 32 * N;
    int64_t k = (int64_t)lane * N;
    for (; k + (UNROLL - 1) * STEP < K; k += UNROLL * STEP) {
        float wv[UNROLL][N];
        for (int u = 0; u < UNROLL; u++) Pack<T>::load(wv[u], w + k + u * STEP);
        for (int u = 0; u < UNROLL; u++) accumulate_rows<ROWS, N>(acc, wv[u], x, ldx, k + u * STEP, rows);
    }
    for (; k < K; k += STEP) {
        float wv[N];
        Pack<T>::load(wv, w + k);
        accumulate_rows<ROWS, N>(acc, wv, x, ldx, k, rows);
    }
    const float b = m2c_load_or_zero(bias, o);
    for (int r = 0; r < ROWS; r++) {
        if (r >= rows) break;
        float v = m2c_warp_sum(acc[r]);
        if (lane == r) {
            float *dst = out + r * ldo + o;
            *dst = (accumulate ? *dst : 0.0f) + v + b;
        }
    }
}

/* Any alignment, any K: one weight at a time. */
__global__ void gemv_scalar_kernel(float *out, int64_t ldo, const float *x, int64_t ldx,
                                   m2c_tensor W, m2c_tensor bias, int rows, int64_t K, int64_t O,
                                   int accumulate) {
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * GEMV_WARPS + (threadIdx.x >> 5);
    if (o >= O) return;
    const float b = m2c_load_or_zero(bias, o);
    for (int r = 0; r < rows; r++) {
        float acc = 0.0f;
        for (int64_t k = lane; k < K; k += 32) acc += m2c_load(W, o * K + k) * x[r * ldx + k];
        acc = m2c_warp_sum(acc);
        if (lane == 0) {
            float *dst = out + r * ldo + o;
            *dst = (accumulate ? *dst : 0.0f) + acc + b;
        }
    }
}

template <typename T>
static void launch(float *out, int64_t ldo, const float *x, int64_t ldx, const void *W,
                   m2c_tensor bias, int rows, int64_t K, int64_t O, int accumulate) {
    const unsigned blocks = m2c_blocks(O, GEMV_WARPS);
    cudaStream_t s = m2c_cuda_stream();
    const T *w = (const T *)W;
#define M2C_GEMV(R)                                                                          \
    gemv_kernel<T, R><<<blocks, GEMV_WARPS * 32, 0, s>>>(out, ldo, x, ldx, w, bias, rows, K, O, \
                                                         accumulate)
    if (rows <= 1) M2C_GEMV(1);
    else if (rows <= 2) M2C_GEMV(2);
    else M2C_GEMV(M2C_CUDA_GEMV_ROWS);
#undef M2C_GEMV
}

void m2c_cuda_gemv(float *out, int64_t ldo, const float *x, int64_t ldx, m2c_tensor W,
                   m2c_tensor bias, int64_t R, int64_t K, int64_t O, int accumulate) {
    if (R == 0 || O == 0) return;
    const int per_load = W.dtype == M2C_F32 ? 4 : 8;
    const size_t elem = W.dtype == M2C_F32 ? 4 : 2;
    const int aligned = (uintptr_t)W.data % 16 == 0 && (K * elem) % 16 == 0 &&
                        (uintptr_t)x % 16 == 0 && ldx % 4 == 0 && K % per_load == 0;
    if (!aligned) {
        gemv_scalar_kernel<<<m2c_blocks(O, GEMV_WARPS), GEMV_WARPS * 32, 0, m2c_cuda_stream()>>>(
            out, ldo, x, ldx, W, bias, (int)R, K, O, accumulate);
        return;
    }
    switch (W.dtype) {
    case M2C_BF16: launch<__nv_bfloat16>(out, ldo, x, ldx, W.data, bias, (int)R, K, O, accumulate); break;
    case M2C_F16: launch<__half>(out, ldo, x, ldx, W.data, bias, (int)R, K, O, accumulate); break;
    default: launch<float>(out, ldo, x, ldx, W.data, bias, (int)R, K, O, accumulate); break;
    }
}
