/* One-token SSD update for every head of a layer in one launch. A block owns (b, h) and
 * STEP_ROWS rows p of its [P, N] state, one warp a row, lanes along n: each state element is
 * read and written once, coalesced, and y[p] = s[p, :] . C is a warp reduction. Small blocks
 * give the GPU enough independent loads in flight at batch 1, where the step is latency-bound. */
#include "kernels.cuh"

enum { STEP_ROWS = 4, STEP_THREADS = 32 * STEP_ROWS };

__global__ void ssd_step_kernel(float *y, float *state, int has_state, const float *x,
                                const float *Bm, const float *Cm, int64_t ldx, const float *dt,
                                const float *A, const float *D, int64_t H, int64_t P, int64_t N,
                                int64_t heads_per_group) {
    extern __shared__ float shared[]; /* B then C of the head's group, N each */
    float *Bs = shared, *Cs = shared + N;
    const int64_t b = blockIdx.y, h = blockIdx.x, g = h / heads_per_group;
    for (int64_t n = threadIdx.x; n < N; n += blockDim.x) {
        Bs[n] = Bm[b * ldx + g * N + n];
        Cs[n] = Cm[b * ldx + g * N + n];
    }
    __syncthreads();
    const float step = dt[b * H + h], decay = expf(step * A[h]);
    const int lane = threadIdx.x & 31;
    float *s = state + (b * H + h) * P * N;
    const int64_t p = (int64_t)blockIdx.z * STEP_ROWS + (threadIdx.x >> 5);
    if (p < P) {
        const float xp = x[b * ldx + h * P + p], input = step * xp;
        float *sp = s + p * N, acc = 0.0f;
        for (int64_t n = lane; n < N; n += 32) {
            const float v = (has_state ? sp[n] * decay : 0.0f) + input * Bs[n];
            sp[n] = v;
            acc += v * Cs[n];
        }
        acc = m2c_warp_sum(acc);
        if (lane == 0) y[(b * H + h) * P + p] = acc + D[h] * xp;
    }
}

void m2c_cuda_ssd_step(float *y, float *state, int has_state, const float *x, const float *Bm,
                       const float *Cm, int64_t ldx, const float *dt, const float *A,
                       const float *D, int64_t B, int64_t H, int64_t P, int64_t N, int64_t G) {
    if (B * H == 0) return;
    ssd_step_kernel<<<dim3((unsigned)H, (unsigned)B, m2c_blocks(P, STEP_ROWS)), STEP_THREADS,
                      2 * N * sizeof(float),
                      m2c_cuda_stream()>>>(
        y, state, has_state, x, Bm, Cm, ldx, dt, A, D, H, P, N, H / G);
}
