/* Causal depthwise conv1d + SiLU + padding mask, and the conv-state update. The input is the
 * projection's output, in float32 or in the 16-bit type it was rounded to (Elem); the output is
 * stored in the same type (rounded there, as transformers' 16-bit model rounds it) and the state
 * in float32. Threads run across channels (coalesced reads of each input row, in
 * 16-byte accesses of four channels where the rows allow them) and each walks a segment of time
 * with the last K inputs in registers; segments give a long prompt enough blocks to fill the
 * GPU. The state is rewritten once every segment has read it: by the same thread when there is
 * one segment (decode), else by a second launch. Launched early: the taps are read while the
 * product before finishes. */
#include "kernels.cuh"

enum { CONV_THREADS = 128, CONV_SEGMENT = 64, CONV_AHEAD = 4, CONV_MAX_K = 16 };

/* state[b, c, :] = the last K inputs (older ones from the previous state, or zeros); ascending
 * k reads only entries not yet rewritten. */
template <class Elem>
__device__ __forceinline__ void store_state(float *s, int has_state, const Elem *in,
                                            int64_t ldin, int64_t b, int64_t c, int64_t T, int K) {
    for (int k = 0; k < K; k++) {
        int64_t src = T - K + k;
        s[k] = src >= 0 ? m2c_to_float(in[(b * T + src) * ldin + c])
                        : has_state ? s[K + src] : 0.0f;
    }
}

/* Thread: VEC adjacent channels (16-byte loads and stores when VEC is 4). K is a template
 * argument so that the window and taps stay in registers (runtime indices would put them in
 * local memory); conv1d_launch instantiates 1..CONV_MAX_K. The inputs of CONV_AHEAD steps are
 * loaded before any of their outputs is computed, so that each thread has that many loads in
 * flight (one at a time left the H200 at 60% of its bandwidth). */
template <int K, int VEC, class Elem>
__global__ void conv1d_kernel(Elem *__restrict__ out, float *state, int has_state,
                              const Elem *__restrict__ in, int64_t ldin, m2c_tensor w,
                              m2c_tensor bias, const float *mask, int64_t T, int64_t C,
                              int silu) {
    const int64_t c0 = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * VEC;
    const int64_t b = blockIdx.z, t0 = (int64_t)blockIdx.y * CONV_SEGMENT;
    if (c0 >= C) return;
    float taps[K][VEC], b0[VEC];
#pragma unroll
    for (int k = 0; k < K; k++)
        for (int v = 0; v < VEC; v++) taps[k][v] = m2c_load(w, (c0 + v) * K + k);
    for (int v = 0; v < VEC; v++) b0[v] = m2c_load_or_zero(bias, c0 + v);
    m2c_wait_for_previous(); /* the weights are in: now the inputs */
    m2c_let_next_start();
    /* window[k]: the input at time t - (K-1) + k for the step t the loop is at; the last
     * CONV_AHEAD entries are the inputs of steps t .. t + CONV_AHEAD - 1 */
    m2c_floats<VEC> window[K - 1 + CONV_AHEAD];
#pragma unroll
    for (int k = 0; k < K - 1; k++) {
        const int64_t src = t0 - (K - 1) + k;
        if (src >= 0) window[k] = m2c_load_as<VEC>(in + (b * T + src) * ldin + c0);
        else
            for (int v = 0; v < VEC; v++)
                window[k].v[v] = has_state ? state[(b * C + c0 + v) * K + K + src] : 0.0f;
    }
    const int64_t t1 = t0 + CONV_SEGMENT < T ? t0 + CONV_SEGMENT : T;
    for (int64_t t = t0; t < t1; t += CONV_AHEAD) {
#pragma unroll
        for (int u = 0; u < CONV_AHEAD; u++)
            if (t + u < t1)
                window[K - 1 + u] = m2c_load_as<VEC>(in + (b * T + t + u) * ldin + c0);
#pragma unroll
        for (int u = 0; u < CONV_AHEAD; u++) {
            if (t + u >= t1) break;
            const float scale = mask ? mask[b * T + t + u] : 1.0f;
            m2c_floats<VEC> y;
            for (int v = 0; v < VEC; v++) {
                float acc = b0[v];
#pragma unroll
                for (int k = 0; k < K; k++) acc += taps[k][v] * window[u + k].v[v];
                y.v[v] = (silu ? m2c_silu(acc) : acc) * scale;
            }
            m2c_store_as(out + (b * T + t + u) * C + c0, y);
        }
#pragma unroll
        for (int k = 0; k < K - 1; k++) window[k] = window[CONV_AHEAD + k];
    }
    if (state && gridDim.y == 1)
        for (int v = 0; v < VEC; v++)
            store_state(state + (b * C + c0 + v) * K, has_state, in, ldin, b, c0 + v, T, K);
}

template <int K, int VEC, class Elem>
static void conv1d_launch(int kernel_width, dim3 grid, Elem *out, float *state, int has_state,
                          const Elem *in, int64_t ldin, m2c_tensor w, m2c_tensor bias,
                          const float *mask, int64_t T, int64_t C, int silu) {
    if (kernel_width == K)
        m2c_launch_early(conv1d_kernel<K, VEC, Elem>, grid, dim3(CONV_THREADS), 0, 1, out, state,
                         has_state, in, ldin, w, bias, mask, T, C, silu);
    else if constexpr (K < CONV_MAX_K)
        conv1d_launch<K + 1, VEC>(kernel_width, grid, out, state, has_state, in, ldin, w, bias,
                                  mask, T, C, silu);
}

template <class Elem>
__global__ void conv_state_kernel(float *state, int has_state, const Elem *in, int64_t ldin,
                                  int64_t T, int64_t C, int K) {
    const int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (c < C) store_state(state + (b * C + c) * K, has_state, in, ldin, b, c, T, K);
}

template <class Elem>
static void conv1d(Elem *out, float *state, int has_state, const Elem *in, int64_t ldin,
                   m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B, int64_t T,
                   int64_t C, int64_t K, int silu) {
    const unsigned segments = m2c_blocks(T, CONV_SEGMENT);
    /* Four channels a thread where the rows allow it, except for a single token (decode): there
     * the conv-state update is most of the work, and a thread a channel spreads it wider. */
    if (T > 1 && m2c_rows_vec4(in, ldin) && m2c_rows_vec4(out, C))
        conv1d_launch<1, 4>((int)K, dim3(m2c_blocks(C / 4, CONV_THREADS), segments, (unsigned)B),
                            out, state, has_state, in, ldin, w, bias, mask, T, C, silu);
    else
        conv1d_launch<1, 1>((int)K, dim3(m2c_blocks(C, CONV_THREADS), segments, (unsigned)B), out,
                            state, has_state, in, ldin, w, bias, mask, T, C, silu);
    if (state && segments > 1)
        conv_state_kernel<<<dim3(m2c_blocks(C, CONV_THREADS), (unsigned)B), CONV_THREADS, 0,
                            m2c_cuda_stream()>>>(state, has_state, in, ldin, T, C, (int)K);
}

void m2c_cuda_conv1d(void *out, float *state, int has_state, const void *in, m2c_dtype dtype,
                     int64_t ldin, m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B,
                     int64_t T, int64_t C, int64_t K, int silu) {
    if (B * T * C == 0) return;
    has_state = has_state && state;
    m2c_with_type(out, dtype, [&](auto *typed_out) {
        using Typed = std::remove_pointer_t<decltype(typed_out)>;
        conv1d(typed_out, state, has_state, (const Typed *)in, ldin, w, bias, mask, B, T, C, K,
               silu);
    });
}
