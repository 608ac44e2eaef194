/* One-token SSD update for every head of a layer in one launch. A block owns (b, h) and
 * STEP_ROWS rows p of its [P, N] state; a warp takes ROWS_PER_WARP rows, its lanes along n, and
 * issues the loads of all its rows before using any, so that each lane has several state loads
 * in flight: the step is bound by reading and writing the state once. y[p] = s[p, :] . C ends
 * each row with a warp reduction. x, B and C are the conv's output, in float32 or the 16-bit
 * type it was stored in (T). The kernel is launched early, fetching its state into L2 while the
 * time steps before it are computed. */
#include "kernels.cuh"

enum { STEP_WARPS = 8, ROWS_PER_WARP = 4, STEP_ROWS = STEP_WARPS * ROWS_PER_WARP };

template <int VEC, class T>
__global__ void __launch_bounds__(STEP_WARPS * 32)
ssd_step_kernel(float *y, float *state, int has_state, const T *x, const T *Bm, const T *Cm,
                int64_t ldx, const float *dt, const float *A, const float *D, int64_t H, int64_t P,
                int64_t N, int64_t heads_per_group) {
    extern __shared__ float shared[]; /* B then C of the head's group, N each */
    float *Bs = shared, *Cs = shared + N;
    const int64_t b = blockIdx.y, h = blockIdx.x, g = h / heads_per_group;
    const int lane = threadIdx.x & 31;
    const int64_t p0 = (int64_t)blockIdx.z * STEP_ROWS + (threadIdx.x >> 5) * ROWS_PER_WARP;
    float *s = state + (b * H + h) * P * N;
    /* Launched early: the state, which no other kernel writes, is fetched into L2 while the
     * time steps are computed; the inputs are read after waiting for them. */
    for (int r = 0; has_state && r < ROWS_PER_WARP && p0 + r < P; r++)
        for (int64_t n = (int64_t)lane * VEC; n < N; n += 32 * VEC)
            m2c_prefetch_l2(s + (p0 + r) * N + n);
    m2c_wait_for_previous();
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
        Bs[n] = m2c_to_float(Bm[b * ldx + g * N + n]);
        Cs[n] = m2c_to_float(Cm[b * ldx + g * N + n]);
    }
    __syncthreads();
    const float step = dt[b * H + h], decay = expf(step * A[h]);
    const T *xh = x + b * ldx + h * P;
    float input[ROWS_PER_WARP], acc[ROWS_PER_WARP];
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        input[r] = p0 + r < P ? step * m2c_to_float(xh[p0 + r]) : 0.0f;
        acc[r] = 0.0f;
    }
    for (int64_t n = (int64_t)lane * VEC; n < N; n += 32 * VEC) {
        m2c_floats<VEC> v[ROWS_PER_WARP];
        for (int r = 0; r < ROWS_PER_WARP; r++)
            if (p0 + r < P && has_state) v[r] = m2c_load_floats<VEC>(s + (p0 + r) * N + n);
        const m2c_floats<VEC> Bv = m2c_load_floats<VEC>(Bs + n), Cv = m2c_load_floats<VEC>(Cs + n);
        for (int r = 0; r < ROWS_PER_WARP; r++) {
            if (p0 + r >= P) break;
            for (int i = 0; i < VEC; i++) {
                v[r].v[i] = (has_state ? v[r].v[i] * decay : 0.0f) + input[r] * Bv.v[i];
                acc[r] += v[r].v[i] * Cv.v[i];
            }
            m2c_store_as(s + (p0 + r) * N + n, v[r]);
        }
    }
    m2c_let_next_start();
    for (int r = 0; r < ROWS_PER_WARP; r++) {
        const float sum = m2c_warp_sum(acc[r]);
        if (lane == 0 && p0 + r < P)
            y[(b * H + h) * P + p0 + r] = sum + D[h] * m2c_to_float(xh[p0 + r]);
    }
}

template <class T>
static void ssd_step(float *y, float *state, int has_state, const T *x, const T *Bm, const T *Cm,
                     int64_t ldx, const float *dt, const float *A, const float *D, int64_t B,
                     int64_t H, int64_t P, int64_t N, int64_t G) {
    const dim3 grid((unsigned)H, (unsigned)B, m2c_blocks(P, STEP_ROWS));
    const size_t shared = 2 * N * sizeof(float);
    const auto kernel = m2c_rows_vec4(state, N) ? ssd_step_kernel<4, T> : ssd_step_kernel<1, T>;
    m2c_launch_early(kernel, grid, dim3(STEP_WARPS * 32), shared, 1, y, state, has_state, x, Bm,
                     Cm, ldx, dt, A, D, H, P, N, H / G);
}

void m2c_cuda_ssd_step(float *y, float *state, int has_state, const void *x, const void *Bm,
                       const void *Cm, m2c_dtype dtype, int64_t ldx, const float *dt,
                       const float *A, const float *D, int64_t B, int64_t H, int64_t P, int64_t N,
                       int64_t G) {
    if (B * H == 0) return;
    m2c_with_type(x, dtype, [&](auto *typed) {
        using Ptr = decltype(typed);
        ssd_step(y, state, has_state, typed, (Ptr)Bm, (Ptr)Cm, ldx, dt, A, D, B, H, P, N, G);
    });
}
