/* Chunked SSD scan. Within a chunk of Q <= 64 tokens (the backend's max_chunk) the scan is three small matrix products,
 * which run as one shared-memory tile product (tile_product below) fed by element loaders:
 *   CB[q, s]  = sum_n C_q[n] B_s[n]                                  per chunk and group
 *   S_c[p, n] = sum_s w_s x_s[p] B_s[n],  w_s = exp(cs_last - cs_s) dt_s  per chunk and head
 *   y[q, p]   = sum_{s <= q} CB[q, s] exp(cs_q - cs_s) dt_s x_s[p]
 *             + sum_n exp(cs_q) C_q[n] S_in[p, n] + D x_q[p]
 * where cs is the running sum of dt*A inside the chunk and S_in the state entering the chunk,
 * found by a sequential pass over the chunks (the only part that is not parallel in time).
 * Decays are exponentiated only for s <= q (differences of a decreasing sum, never > 0), so no
 * inf * 0 appears. Work layout (floats): cs [B, H, T] | w [B, H, T] | CB [B, C, G, Q, Q] |
 * S [B, C, H, P, N]. */
#include "kernels.cuh"

enum { TILE = 64, TILE_K = 16, TILE_THREADS = 256 };

static int64_t chunks_of(int64_t T, int64_t Q) { return (T + Q - 1) / Q; }

size_t m2c_cuda_ssd_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                int64_t Q) {
    const int64_t C = chunks_of(T, Q);
    return (size_t)(2 * B * H * T + B * C * G * Q * Q + B * C * H * P * N);
}

/* acc[a][b] += sum_k left(i, k) right(k, j) for this thread's 4x4 outputs (i = 4*ty + a,
 * j = 4*tx + b) of a 64x64 tile; the loaders return 0 outside the matrices. LEFT_K / RIGHT_K:
 * the operand is contiguous along k in memory, so neighbouring threads load neighbouring k
 * (coalesced) rather than neighbouring rows. */
template <bool LEFT_K, bool RIGHT_K, class Left, class Right>
__device__ __forceinline__ void tile_product(float acc[4][4], int64_t K, Left left, Right right) {
    /* +4: a k-major fill writes down a column; the pad spreads it over the banks */
    __shared__ __align__(16) float Ls[TILE_K][TILE + 4], Rs[TILE_K][TILE + 4];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int64_t k0 = 0; k0 < K; k0 += TILE_K) {
        for (int e = threadIdx.x; e < TILE_K * TILE; e += TILE_THREADS) {
            const int kl = LEFT_K ? e % TILE_K : e / TILE, ml = LEFT_K ? e / TILE_K : e % TILE;
            const int kr = RIGHT_K ? e % TILE_K : e / TILE, mr = RIGHT_K ? e / TILE_K : e % TILE;
            Ls[kl][ml] = k0 + kl < K ? left(ml, k0 + kl) : 0.0f;
            Rs[kr][mr] = k0 + kr < K ? right(k0 + kr, mr) : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < TILE_K; kk++) {
            const float4 l = *(const float4 *)&Ls[kk][4 * ty], r = *(const float4 *)&Rs[kk][4 * tx];
            const float lv[4] = {l.x, l.y, l.z, l.w}, rv[4] = {r.x, r.y, r.z, r.w};
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) acc[a][b] += lv[a] * rv[b];
        }
        __syncthreads();
    }
}

/* Where chunk c of batch row b lives. */
struct Chunk {
    int64_t b, c, t0, len;
};

__device__ __forceinline__ Chunk chunk_at(int64_t b, int64_t c, int64_t T, int64_t Q) {
    const int64_t t0 = c * Q;
    return {b, c, t0, (t0 + Q < T ? t0 + Q : T) - t0};
}

/* One thread per (b, h, chunk): the running sum cs and the end-state weights w. */
__global__ void ssd_cumsum_kernel(float *cs, float *w, const float *dt, const float *A,
                                  int64_t H, int64_t T, int64_t Q, int64_t C) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (i >= H * C) return;
    const int64_t h = i / C;
    const Chunk k = chunk_at(b, i % C, T, Q);
    float *csb = cs + (b * H + h) * T, *wb = w + (b * H + h) * T;
    float sum = 0.0f;
    for (int64_t t = k.t0; t < k.t0 + k.len; t++) {
        sum += dt[(b * T + t) * H + h] * A[h];
        csb[t] = sum;
    }
    for (int64_t t = k.t0; t < k.t0 + k.len; t++)
        wb[t] = expf(sum - csb[t]) * dt[(b * T + t) * H + h];
}

/* Block (chunk, group, b): CB = C B^T over the chunk's tokens. */
__global__ void ssd_cb_kernel(float *CB, const float *Bm, const float *Cm, int64_t ldx, int64_t T,
                              int64_t N, int64_t G, int64_t Q, int64_t C) {
    const int64_t g = blockIdx.y;
    const Chunk k = chunk_at(blockIdx.z, blockIdx.x, T, Q);
    const float *c0 = Cm + (k.b * T + k.t0) * ldx + g * N, *b0 = Bm + (k.b * T + k.t0) * ldx + g * N;
    float acc[4][4] = {};
    tile_product<true, true>(
        acc, N, [&](int q, int64_t n) { return q < k.len ? c0[q * ldx + n] : 0.0f; },
        [&](int64_t n, int s) { return s < k.len ? b0[s * ldx + n] : 0.0f; });
    float *out = CB + ((k.b * C + k.c) * G + g) * Q * Q;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int a = 0; a < 4; a++)
        for (int bb = 0; bb < 4; bb++) {
            const int q = 4 * ty + a, s = 4 * tx + bb;
            if (q < Q && s < Q) out[q * Q + s] = acc[a][bb];
        }
}

/* Block (chunk x tile of (p, n), head, b): the chunk's own end state S_c = (w x)^T B. */
__global__ void ssd_chunk_state_kernel(float *S, const float *x, const float *Bm, int64_t ldx,
                                       const float *w, int64_t T, int64_t H, int64_t P, int64_t N,
                                       int64_t heads_per_group, int64_t Q, int64_t C,
                                       int64_t p_tiles, int64_t n_tiles) {
    const int64_t tiles = p_tiles * n_tiles, h = blockIdx.y, g = h / heads_per_group;
    const int64_t p0 = (blockIdx.x % tiles) / n_tiles * TILE, n0 = blockIdx.x % n_tiles * TILE;
    const Chunk k = chunk_at(blockIdx.z, blockIdx.x / tiles, T, Q);
    const float *xs = x + (k.b * T + k.t0) * ldx + h * P, *bs = Bm + (k.b * T + k.t0) * ldx + g * N;
    const float *ws = w + (k.b * H + h) * T + k.t0;
    float acc[4][4] = {};
    tile_product<false, false>(
        acc, k.len,
        [&](int p, int64_t s) { return p0 + p < P ? ws[s] * xs[s * ldx + p0 + p] : 0.0f; },
        [&](int64_t s, int n) { return n0 + n < N ? bs[s * ldx + n0 + n] : 0.0f; });
    float *out = S + ((k.b * C + k.c) * H + h) * P * N;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int a = 0; a < 4; a++)
        for (int bb = 0; bb < 4; bb++) {
            const int64_t p = p0 + 4 * ty + a, n = n0 + 4 * tx + bb;
            if (p < P && n < N) out[p * N + n] = acc[a][bb];
        }
}

/* One thread per (b, h, p, n): walks the chunks in order, leaving in each slot of S the state
 * entering that chunk, and the final state in `state`. The only sequential part of the scan:
 * its loads do not depend on the carried value (restrict, unrolled), so they are all in flight
 * together and the chain is just one multiply-add per chunk. */
__global__ void ssd_state_pass_kernel(float *__restrict__ S, float *__restrict__ state,
                                      int has_state, const float *__restrict__ cs, int64_t T,
                                      int64_t H, int64_t PN, int64_t Q, int64_t C, int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int64_t e = i % PN, h = (i / PN) % H, b = i / (PN * H);
    const float *csb = cs + (b * H + h) * T;
    float *slot = S + b * C * H * PN + h * PN + e;
    const int64_t stride = H * PN; /* from one chunk's slot to the next */
    float carried = has_state ? state[i] : 0.0f;
#pragma unroll 8
    for (int64_t c = 0; c < C; c++) {
        const int64_t last = (c * Q + Q < T ? c * Q + Q : T) - 1;
        const float own = slot[c * stride], decay = expf(csb[last]);
        slot[c * stride] = carried;
        carried = decay * carried + own;
    }
    state[i] = carried;
}

/* Block (chunk x tile of p, head, b): the chunk's outputs, from inside the chunk and from the
 * state entering it. */
__global__ void ssd_output_kernel(float *y, const float *x, const float *Cm, int64_t ldx,
                                  const float *dt, const float *D, const float *cs,
                                  const float *CB, const float *S, int64_t T, int64_t H,
                                  int64_t P, int64_t N, int64_t G, int64_t Q, int64_t C,
                                  int64_t p_tiles) {
    const int64_t h = blockIdx.y, g = h / (H / G), p0 = blockIdx.x % p_tiles * TILE;
    const Chunk k = chunk_at(blockIdx.z, blockIdx.x / p_tiles, T, Q);
    const float *xs = x + (k.b * T + k.t0) * ldx + h * P, *cq = Cm + (k.b * T + k.t0) * ldx + g * N;
    const float *css = cs + (k.b * H + h) * T + k.t0, *dts = dt + (k.b * T + k.t0) * H + h;
    const float *cb = CB + ((k.b * C + k.c) * G + g) * Q * Q;
    const float *sin = S + ((k.b * C + k.c) * H + h) * P * N;
    float acc[4][4] = {};
    tile_product<true, false>(
        acc, k.len,
        [&](int q, int64_t s) {
            return q < k.len && s <= q ? cb[q * Q + s] * expf(css[q] - css[s]) * dts[s * H] : 0.0f;
        },
        [&](int64_t s, int p) { return p0 + p < P ? xs[s * ldx + p0 + p] : 0.0f; });
    tile_product<true, true>(
        acc, N, [&](int q, int64_t n) { return q < k.len ? expf(css[q]) * cq[q * ldx + n] : 0.0f; },
        [&](int64_t n, int p) { return p0 + p < P ? sin[(p0 + p) * N + n] : 0.0f; });
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int a = 0; a < 4; a++)
        for (int bb = 0; bb < 4; bb++) {
            const int64_t q = 4 * ty + a, p = p0 + 4 * tx + bb;
            if (q < k.len && p < P)
                y[(k.b * T + k.t0 + q) * H * P + h * P + p] = acc[a][bb] + D[h] * xs[q * ldx + p];
        }
}

void m2c_cuda_ssd_chunked(float *y, float *state, int has_state, const float *x, const float *Bm,
                          const float *Cm, int64_t ldx, const float *dt, const float *A,
                          const float *D, int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                          int64_t G, int64_t Q, float *work) {
    if (B * T * H == 0) return;
    const int64_t C = chunks_of(T, Q), p_tiles = (P + TILE - 1) / TILE,
                  n_tiles = (N + TILE - 1) / TILE;
    float *cs = work, *w = cs + B * H * T, *CB = w + B * H * T, *S = CB + B * C * G * Q * Q;
    cudaStream_t st = m2c_cuda_stream();
    ssd_cumsum_kernel<<<dim3(m2c_blocks(H * C, 256), (unsigned)B), 256, 0, st>>>(cs, w, dt, A, H,
                                                                                 T, Q, C);
    ssd_cb_kernel<<<dim3((unsigned)C, (unsigned)G, (unsigned)B), TILE_THREADS, 0, st>>>(
        CB, Bm, Cm, ldx, T, N, G, Q, C);
    ssd_chunk_state_kernel<<<dim3((unsigned)(C * p_tiles * n_tiles), (unsigned)H, (unsigned)B),
                             TILE_THREADS, 0, st>>>(S, x, Bm, ldx, w, T, H, P, N, H / G, Q, C,
                                                    p_tiles, n_tiles);
    const int64_t n = B * H * P * N;
    ssd_state_pass_kernel<<<m2c_blocks(n, 256), 256, 0, st>>>(S, state, has_state, cs, T, H, P * N,
                                                              Q, C, n);
    ssd_output_kernel<<<dim3((unsigned)(C * p_tiles), (unsigned)H, (unsigned)B), TILE_THREADS, 0,
                        st>>>(y, x, Cm, ldx, dt, D, cs, CB, S, T, H, P, N, G, Q, C, p_tiles);
}
