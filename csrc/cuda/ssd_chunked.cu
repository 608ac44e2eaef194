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
#include <mma.h>

#include "kernels.cuh"

/* TILE_MIN_BLOCKS: blocks a multiprocessor must fit at once (it caps registers at 64): the tile
 * kernels mostly wait on their loads, and more resident blocks hide more of that wait. */
enum { TILE = 64, TILE_THREADS = 256, TILE_MIN_BLOCKS = 4 };

static int64_t chunks_of(int64_t T, int64_t Q) { return (T + Q - 1) / Q; }

size_t m2c_cuda_ssd_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                int64_t Q) {
    const int64_t C = chunks_of(T, Q);
    return (size_t)(2 * B * H * T + B * C * G * Q * Q + B * C * H * P * N);
}

/* SLAB_PAD spreads k-major fills over the banks and keeps rows 32-byte aligned */
enum { K_SLAB = 16, SLAB_PAD = 8 };

/* A 64x64 tile of a product, sum_k left(i, k) right(k, j), built up over slabs of K_SLAB k that
 * the loaders write to shared memory (0 outside the matrices). Two ways to multiply: Exact,
 * float32 on the CUDA cores, and Tf32, tensor cores with the operands rounded to TF32 (float32's
 * exponent, 10 mantissa bits: closer to float32 than the 16-bit types, and the scan's states and
 * decays never leave float32's range) and float32 accumulation. Either way a thread reads its
 * result as the 4x4 block (4 * ty + a, 4 * tx + b), tx = thread % 16, ty = thread / 16. */

/* A tile product's shared memory: the two slabs, or the finished tile. */
union TileShared {
    struct {
        float L[K_SLAB][TILE + SLAB_PAD], R[K_SLAB][TILE + SLAB_PAD];
    } slab;
    float result[TILE][TILE + SLAB_PAD];
};

struct Exact {
    float v[4][4] = {};
    __device__ static float operand(float x) { return x; }
    __device__ void mma(const TileShared &sh) {
        const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
        for (int kk = 0; kk < K_SLAB; kk++) {
            const float4 l = *(const float4 *)&sh.slab.L[kk][4 * ty],
                         r = *(const float4 *)&sh.slab.R[kk][4 * tx];
            const float lv[4] = {l.x, l.y, l.z, l.w}, rv[4] = {r.x, r.y, r.z, r.w};
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) v[a][b] += lv[a] * rv[b];
        }
    }
    __device__ void values(float out[4][4], TileShared &) const {
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) out[a][b] = v[a][b];
    }
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
struct Tf32 : Exact {}; /* no TF32 tensor cores before sm_80: the same products in float32 */
#else
/* Warp w owns the 16x32 strip at rows 16 * (w / 2), columns 32 * (w % 2). */
struct Tf32 {
    nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 8, float> f[2];
    __device__ Tf32() {
        nvcuda::wmma::fill_fragment(f[0], 0.0f);
        nvcuda::wmma::fill_fragment(f[1], 0.0f);
    }
    __device__ static float operand(float x) { return nvcuda::wmma::__float_to_tf32(x); }
    __device__ void mma(const TileShared &sh) {
        using namespace nvcuda::wmma;
        const int w = threadIdx.x / 32, row = 16 * (w / 2), col = 32 * (w % 2);
#pragma unroll
        for (int kk = 0; kk < K_SLAB; kk += 8) {
            fragment<matrix_a, 16, 16, 8, precision::tf32, col_major> a; /* L[k][m] */
            load_matrix_sync(a, &sh.slab.L[kk][row], TILE + SLAB_PAD);
            for (int j = 0; j < 2; j++) {
                fragment<matrix_b, 16, 16, 8, precision::tf32, row_major> b;
                load_matrix_sync(b, &sh.slab.R[kk][col + 16 * j], TILE + SLAB_PAD);
                mma_sync(f[j], a, b, f[j]);
            }
        }
    }
    __device__ void values(float out[4][4], TileShared &sh) const {
        const int w = threadIdx.x / 32, row = 16 * (w / 2), col = 32 * (w % 2);
        __syncthreads(); /* the slabs (same memory) are no longer read */
        for (int j = 0; j < 2; j++)
            nvcuda::wmma::store_matrix_sync(&sh.result[row][col + 16 * j], f[j],
                                            TILE + SLAB_PAD, nvcuda::wmma::mem_row_major);
        __syncthreads();
        const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
        for (int a = 0; a < 4; a++)
            for (int b = 0; b < 4; b++) out[a][b] = sh.result[4 * ty + a][4 * tx + b];
        __syncthreads(); /* before another product writes its slabs here */
    }
};
#endif

/* acc += left x right over k < K. LEFT_K / RIGHT_K: the operand is contiguous along k in memory,
 * so neighbouring threads load neighbouring k (coalesced) rather than neighbouring rows. */
template <bool LEFT_K, bool RIGHT_K, class Acc, class Left, class Right>
__device__ __forceinline__ void tile_product(Acc &acc, TileShared &sh, int64_t K, Left left,
                                             Right right) {
    for (int64_t k0 = 0; k0 < K; k0 += K_SLAB) {
        /* a rolled loop: unrolled, its hoisted addresses cost more registers (and occupancy)
         * than the loads it overlaps save */
        for (int e = threadIdx.x; e < K_SLAB * TILE; e += TILE_THREADS) {
            const int kl = LEFT_K ? e % K_SLAB : e / TILE, ml = LEFT_K ? e / K_SLAB : e % TILE;
            const int kr = RIGHT_K ? e % K_SLAB : e / TILE, mr = RIGHT_K ? e / K_SLAB : e % TILE;
            sh.slab.L[kl][ml] = Acc::operand(k0 + kl < K ? left(ml, k0 + kl) : 0.0f);
            sh.slab.R[kr][mr] = Acc::operand(k0 + kr < K ? right(k0 + kr, mr) : 0.0f);
        }
        __syncthreads();
        acc.mma(sh);
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

/* One warp per (b, h, chunk): the running sum cs (a warp scan, 32 tokens at a time) and the
 * end-state weights w. */
__global__ void ssd_cumsum_kernel(float *cs, float *w, const float *dt, const float *A,
                                  int64_t H, int64_t T, int64_t Q, int64_t C) {
    const int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / 32, b = blockIdx.y;
    const int lane = threadIdx.x % 32;
    if (i >= H * C) return;
    const int64_t h = i / C;
    const Chunk k = chunk_at(b, i % C, T, Q);
    float *csb = cs + (b * H + h) * T, *wb = w + (b * H + h) * T;
    float carried = 0.0f;
    for (int64_t t0 = k.t0; t0 < k.t0 + k.len; t0 += 32) {
        const int64_t t = t0 + lane;
        float v = t < k.t0 + k.len ? dt[(b * T + t) * H + h] * A[h] : 0.0f;
        for (int offset = 1; offset < 32; offset <<= 1) {
            const float before = __shfl_up_sync(0xffffffffu, v, offset);
            if (lane >= offset) v += before;
        }
        if (t < k.t0 + k.len) csb[t] = carried + v;
        carried += __shfl_sync(0xffffffffu, v, 31);
    }
    __syncwarp();
    for (int64_t t = k.t0 + lane; t < k.t0 + k.len; t += 32)
        wb[t] = expf(carried - csb[t]) * dt[(b * T + t) * H + h];
}

/* Block (chunk, group, b): CB = C B^T over the chunk's tokens. */
template <class Acc>
__global__ void __launch_bounds__(TILE_THREADS, TILE_MIN_BLOCKS)
ssd_cb_kernel(float *CB, const float *Bm, const float *Cm, int64_t ldx, int64_t T,
              int64_t N, int64_t G, int64_t Q, int64_t C) {
    const int64_t g = blockIdx.y;
    const Chunk k = chunk_at(blockIdx.z, blockIdx.x, T, Q);
    const float *c0 = Cm + (k.b * T + k.t0) * ldx + g * N, *b0 = Bm + (k.b * T + k.t0) * ldx + g * N;
    __shared__ TileShared sh;
    Acc acc;
    tile_product<true, true>(
        acc, sh, N, [&](int q, int64_t n) { return q < k.len ? c0[q * ldx + n] : 0.0f; },
        [&](int64_t n, int s) { return s < k.len ? b0[s * ldx + n] : 0.0f; });
    float v[4][4];
    acc.values(v, sh);
    float *out = CB + ((k.b * C + k.c) * G + g) * Q * Q;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int a = 0; a < 4; a++)
        for (int bb = 0; bb < 4; bb++) {
            const int q = 4 * ty + a, s = 4 * tx + bb;
            if (q < Q && s < Q) out[q * Q + s] = v[a][bb];
        }
}

/* Block (chunk x tile of (p, n), head, b): the chunk's own end state S_c = (w x)^T B. */
template <class Acc>
__global__ void __launch_bounds__(TILE_THREADS, TILE_MIN_BLOCKS)
ssd_chunk_state_kernel(float *S, const float *x, const float *Bm, int64_t ldx,
                       const float *w, int64_t T, int64_t H, int64_t P, int64_t N,
                       int64_t heads_per_group, int64_t Q, int64_t C,
                       int64_t p_tiles, int64_t n_tiles) {
    const int64_t tiles = p_tiles * n_tiles, h = blockIdx.y, g = h / heads_per_group;
    const int64_t p0 = (blockIdx.x % tiles) / n_tiles * TILE, n0 = blockIdx.x % n_tiles * TILE;
    const Chunk k = chunk_at(blockIdx.z, blockIdx.x / tiles, T, Q);
    const float *xs = x + (k.b * T + k.t0) * ldx + h * P, *bs = Bm + (k.b * T + k.t0) * ldx + g * N;
    const float *ws = w + (k.b * H + h) * T + k.t0;
    __shared__ TileShared sh;
    Acc acc;
    tile_product<false, false>(
        acc, sh, k.len,
        [&](int p, int64_t s) { return p0 + p < P ? ws[s] * xs[s * ldx + p0 + p] : 0.0f; },
        [&](int64_t s, int n) { return n0 + n < N ? bs[s * ldx + n0 + n] : 0.0f; });
    float v[4][4];
    acc.values(v, sh);
    float *out = S + ((k.b * C + k.c) * H + h) * P * N;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int a = 0; a < 4; a++)
        for (int bb = 0; bb < 4; bb++) {
            const int64_t p = p0 + 4 * ty + a, n = n0 + 4 * tx + bb;
            if (p < P && n < N) out[p * N + n] = v[a][bb];
        }
}

/* Chunks whose slots one thread of the state pass loads before it stores any: the loads do not
 * wait on the carried value, so a batch of them is in flight at once. */
enum { PASS_BATCH = 8 };

/* One thread per (b, h, p, n): walks the chunks in order, leaving in each slot of S the state
 * entering that chunk, and the final state in `state`. The only sequential part of the scan;
 * the chain itself is one multiply-add per chunk. */
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
    for (int64_t c0 = 0; c0 < C; c0 += PASS_BATCH) {
        float own[PASS_BATCH], decay[PASS_BATCH];
#pragma unroll
        for (int j = 0; j < PASS_BATCH; j++) {
            const int64_t c = c0 + j, last = (c * Q + Q < T ? c * Q + Q : T) - 1;
            own[j] = c < C ? slot[c * stride] : 0.0f;
            decay[j] = c < C ? expf(csb[last]) : 0.0f;
        }
#pragma unroll
        for (int j = 0; j < PASS_BATCH; j++)
            if (c0 + j < C) {
                slot[(c0 + j) * stride] = carried;
                carried = decay[j] * carried + own[j];
            }
    }
    state[i] = carried;
}

/* Block (chunk x tile of p, head, b): the chunk's outputs, from inside the chunk and from the
 * state entering it. */
template <class Acc>
__global__ void __launch_bounds__(TILE_THREADS, TILE_MIN_BLOCKS)
ssd_output_kernel(float *y, const float *x, const float *Cm, int64_t ldx,
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
    __shared__ TileShared sh;
    Acc acc;
    tile_product<true, false>(
        acc, sh, k.len,
        [&](int q, int64_t s) {
            return q < k.len && s <= q ? cb[q * Q + s] * expf(css[q] - css[s]) * dts[s * H] : 0.0f;
        },
        [&](int64_t s, int p) { return p0 + p < P ? xs[s * ldx + p0 + p] : 0.0f; });
    tile_product<true, true>(
        acc, sh, N,
        [&](int q, int64_t n) { return q < k.len ? expf(css[q]) * cq[q * ldx + n] : 0.0f; },
        [&](int64_t n, int p) { return p0 + p < P ? sin[(p0 + p) * N + n] : 0.0f; });
    float v[4][4];
    acc.values(v, sh);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    for (int a = 0; a < 4; a++)
        for (int bb = 0; bb < 4; bb++) {
            const int64_t q = 4 * ty + a, p = p0 + 4 * tx + bb;
            if (q < k.len && p < P)
                y[(k.b * T + k.t0 + q) * H * P + h * P + p] = v[a][bb] + D[h] * xs[q * ldx + p];
        }
}

/* The three tile-product kernels of the scan, multiplying the Acc way. */
template <class Acc>
static void ssd_products(float *y, float *state, int has_state, const float *x, const float *Bm,
                         const float *Cm, int64_t ldx, const float *dt, const float *D,
                         const float *cs, const float *w, float *CB, float *S, int64_t B,
                         int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Q) {
    const int64_t C = chunks_of(T, Q), p_tiles = (P + TILE - 1) / TILE,
                  n_tiles = (N + TILE - 1) / TILE;
    cudaStream_t st = m2c_cuda_stream();
    ssd_cb_kernel<Acc><<<dim3((unsigned)C, (unsigned)G, (unsigned)B), TILE_THREADS, 0, st>>>(
        CB, Bm, Cm, ldx, T, N, G, Q, C);
    ssd_chunk_state_kernel<Acc>
        <<<dim3((unsigned)(C * p_tiles * n_tiles), (unsigned)H, (unsigned)B), TILE_THREADS, 0,
           st>>>(S, x, Bm, ldx, w, T, H, P, N, H / G, Q, C, p_tiles, n_tiles);
    const int64_t n = B * H * P * N;
    ssd_state_pass_kernel<<<m2c_blocks(n, 256), 256, 0, st>>>(S, state, has_state, cs, T, H, P * N,
                                                              Q, C, n);
    ssd_output_kernel<Acc><<<dim3((unsigned)(C * p_tiles), (unsigned)H, (unsigned)B), TILE_THREADS,
                            0, st>>>(y, x, Cm, ldx, dt, D, cs, CB, S, T, H, P, N, G, Q, C,
                                     p_tiles);
}

void m2c_cuda_ssd_chunked(float *y, float *state, int has_state, const float *x, const float *Bm,
                          const float *Cm, int64_t ldx, const float *dt, const float *A,
                          const float *D, int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                          int64_t G, int64_t Q, m2c_dtype operands, float *work) {
    if (B * T * H == 0) return;
    const int64_t C = chunks_of(T, Q);
    float *cs = work, *w = cs + B * H * T, *CB = w + B * H * T, *S = CB + B * C * G * Q * Q;
    ssd_cumsum_kernel<<<dim3(m2c_blocks(32 * H * C, 256), (unsigned)B), 256, 0,
                        m2c_cuda_stream()>>>(cs, w, dt, A, H, T, Q, C);
    if (operands == M2C_F32)
        ssd_products<Exact>(y, state, has_state, x, Bm, Cm, ldx, dt, D, cs, w, CB, S, B, T, H, P,
                            N, G, Q);
    else
        ssd_products<Tf32>(y, state, has_state, x, Bm, Cm, ldx, dt, D, cs, w, CB, S, B, T, H, P,
                           N, G, Q);
}
