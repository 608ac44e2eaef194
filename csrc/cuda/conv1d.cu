/* Causal depthwise conv1d + SiLU + padding mask, and the conv-state update.
 * Threads run across channels (coalesced reads of each input row) and each walks a segment of
 * time with the last K inputs in registers; segments give a long prompt enough blocks to fill
 * the GPU. The state is rewritten once every segment has read it: by the same thread when there
 * is one segment (decode), else by a second launch. */
#include "kernels.cuh"

enum { CONV_THREADS = 128, CONV_SEGMENT = 32, CONV_MAX_K = 16 };

/* state[b, c, :] = the last K inputs (older ones from the previous state, or zeros); ascending
 * k reads only entries not yet rewritten. */
__device__ __forceinline__ void store_state(float *s, int has_state, const float *in,
                                            int64_t ldin, int64_t b, int64_t c, int64_t T, int K) {
    for (int k = 0; k < K; k++) {
        int64_t src = T - K + k;
        s[k] = src >= 0 ? in[(b * T + src) * ldin + c] : has_state ? s[K + src] : 0.0f;
    }
}

/* K is a template argument so that the window and taps stay in registers (runtime indices
 * would put them in local memory); conv1d_launch instantiates 1..CONV_MAX_K. */
template <int K>
__global__ void conv1d_kernel(float *out, float *state, int has_state, const float *in,
                              int64_t ldin, m2c_tensor w, m2c_tensor bias, const float *mask,
                              int64_t T, int64_t C, int silu) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    const int64_t b = blockIdx.z, t0 = (int64_t)blockIdx.y * CONV_SEGMENT;
    if (c >= C) return;
    float taps[K], window[K]; /* window[k]: the input at time t - (K-1) + k */
#pragma unroll
    for (int k = 0; k < K; k++) {
        taps[k] = m2c_load(w, c * K + k);
        int64_t src = t0 - (K - 1) + k;
        window[k] = src >= 0   ? in[(b * T + src) * ldin + c]
                    : has_state ? state[(b * C + c) * K + K + src]
                                : 0.0f;
    }
    const float b0 = m2c_load_or_zero(bias, c);
    const int64_t t1 = t0 + CONV_SEGMENT < T ? t0 + CONV_SEGMENT : T;
    for (int64_t t = t0; t < t1; t++) {
        if (t > t0) {
#pragma unroll
            for (int k = 0; k < K - 1; k++) window[k] = window[k + 1];
            window[K - 1] = in[(b * T + t) * ldin + c];
        }
        float acc = b0;
#pragma unroll
        for (int k = 0; k < K; k++) acc += taps[k] * window[k];
        if (silu) acc = m2c_silu(acc);
        out[(b * T + t) * C + c] = mask ? acc * mask[b * T + t] : acc;
    }
    if (state && gridDim.y == 1) store_state(state + (b * C + c) * K, has_state, in, ldin, b, c, T, K);
}

template <int K>
static void conv1d_launch(int kernel_width, dim3 grid, float *out, float *state, int has_state,
                          const float *in, int64_t ldin, m2c_tensor w, m2c_tensor bias,
                          const float *mask, int64_t T, int64_t C, int silu) {
    if (kernel_width == K)
        conv1d_kernel<K><<<grid, CONV_THREADS, 0, m2c_cuda_stream()>>>(
            out, state, has_state, in, ldin, w, bias, mask, T, C, silu);
    else if constexpr (K < CONV_MAX_K)
        conv1d_launch<K + 1>(kernel_width, grid, out, state, has_state, in, ldin, w, bias, mask,
                             T, C, silu);
}

__global__ void conv_state_kernel(float *state, int has_state, const float *in, int64_t ldin,
                                  int64_t T, int64_t C, int K) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c < C) store_state(state + (b * C + c) * K, has_state, in, ldin, b, c, T, K);
}

void m2c_cuda_conv1d(float *out, float *state, int has_state, const float *in, int64_t ldin,
                     m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B, int64_t T,
                     int64_t C, int64_t K, int silu) {
    if (B * T * C == 0) return;
    dim3 grid(m2c_blocks(C, CONV_THREADS), m2c_blocks(T, CONV_SEGMENT), (unsigned)B);
    conv1d_launch<1>((int)K, grid, out, state, has_state && state, in, ldin, w, bias, mask, T, C,
                     silu);
    if (state && grid.y > 1)
        conv_state_kernel<<<dim3(m2c_blocks(C, CONV_THREADS), (unsigned)B), CONV_THREADS, 0,
                            m2c_cuda_stream()>>>(state, has_state, in, ldin, T, C, (int)K);
}
