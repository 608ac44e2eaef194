/* Chunked SSD scan. One block per (batch row, head, slice of the head's channels) walks its
 * sequence chunk by chunk, L tokens at a time, keeping the slice of the state in shared memory.
 * For each chunk, with cs the running sum of dt*A inside it:
 *   M[q, s] = (C_q . B_s) exp(cs_q - cs_s) dt_s       for s <= q, else 0
 *   y[q, p] = sum_s M[q, s] x_s[p] + exp(cs_q) sum_n C_q[n] S[p, n] + D x_q[p]
 *   S[p, n] <- exp(cs_last) S[p, n] + sum_s exp(cs_last - cs_s) dt_s x_s[p] B_s[n]
 * Three small matrix products a chunk, all on operands already in shared memory, while the next
 * chunk's x and B are copied in behind them (cp.async). The state never leaves the block until
 * the last chunk, so the scan reads its inputs once and writes y and the final state once.
 * Decays are exponentiated only for s <= q (differences of a decreasing sum, never > 0), so no
 * inf * 0 appears. The chunk length is the scan's own (what fits in shared memory): it changes
 * only the rounding, not the result. */
#include "../model/status.h"
#include "kernels.cuh"

/* 16 warps a block: with one block a multiprocessor (the shared memory of a block), four warps
 * a scheduler hide the latency of each other's fragment loads and products. */
enum { SCAN_THREADS = 512, SCAN_WARPS = SCAN_THREADS / 32 };

/* A block's shared memory, in floats. L tokens a chunk, PT channels, NP state columns (each a
 * multiple of 32: the warps' output tiles cover them exactly; the padding is zero).
 * `stages` copies of the per-chunk x, B and dt, so the next chunk's arrive while this one is
 * used; C, the masked products M and the state S once. Row strides are chosen so that the
 * tensor-core fragment loads of each product fall in 32 different banks. */
struct ScanLayout {
    int L, PT, NP, stages;
    __host__ __device__ int x_ld() const { return PT + 8; }
    __host__ __device__ int b_ld() const { return NP + 8; }
    __host__ __device__ int c_ld() const { return NP + 4; } /* C and S */
    __host__ __device__ int m_ld() const { return L + 4; }
    __host__ __device__ int stage_floats() const { return L * (x_ld() + b_ld() + 1); }
    __host__ __device__ int floats() const {
        return stages * stage_floats() + L * c_ld() + L * m_ld() + PT * c_ld() + 3 * L;
    }
};

/* Copies BYTES (4 or 16) from global to shared memory, or zeros where !valid: asynchronous from
 * sm_80 on (complete after copies_wait), a plain copy before. */
template <int BYTES>
__device__ __forceinline__ void copy_async(float *dst, const float *src, bool valid) {
#if __CUDA_ARCH__ >= 800
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if constexpr (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                     "r"(valid ? 16 : 0));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
                     "r"(valid ? 4 : 0));
#else
    for (int i = 0; i < BYTES / 4; i++) dst[i] = valid ? src[i] : 0.0f;
#endif
}

__device__ __forceinline__ void copies_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* Waits until at most `pending` (0 or 1) of this thread's committed copy groups are in flight. */
__device__ __forceinline__ void copies_wait(int pending) {
#if __CUDA_ARCH__ >= 800
    if (pending) asm volatile("cp.async.wait_group 1;\n" ::);
    else asm volatile("cp.async.wait_group 0;\n" ::);
#endif
}

/* rows x width floats of a token-major matrix (row r at src + r * ld) into shared rows `sld`
 * apart, a warp a row; rows >= rows_valid and columns >= cols_valid are zero. VEC = 4 moves 16
 * bytes a copy (src, ld and cols_valid then multiples of 4 floats). */
template <int VEC>
__device__ __forceinline__ void load_tile(float *dst, int sld, const float *src, int64_t ld,
                                          int rows, int rows_valid, int width, int cols_valid) {
    for (int r = threadIdx.x / 32; r < rows; r += SCAN_WARPS)
        for (int col = threadIdx.x % 32 * VEC; col < width; col += 32 * VEC) {
            const bool valid = r < rows_valid && col < cols_valid;
            copy_async<4 * VEC>(dst + r * sld + col, valid ? src + r * ld + col : src, valid);
        }
}

/* Two ways to multiply: Exact, float32 on the CUDA cores, and Tf32, tensor cores with the
 * operands rounded to TF32 (float32's exponent, 10 mantissa bits: closer to float32 than the
 * 16-bit types, and the scan's states and decays never leave float32's range) and float32
 * accumulation. */
struct Exact {
    static constexpr bool tensor = false;
    __device__ static float exp(float v) { return expf(v); }
};
struct Tf32 {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    static constexpr bool tensor = false; /* no TF32 tensor cores before sm_80 */
#else
    static constexpr bool tensor = true;
#endif
    /* the in-chunk decays become TF32 operands: the fast exponential's error (about 1e-6
     * relative) is far below TF32's rounding */
    __device__ static float exp(float v) { return __expf(v); }
};

__device__ __forceinline__ unsigned to_tf32(float v) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
    return r;
}

/* acc += a x b for a warp's 16 x 8J output tile over k < K (a multiple of 32), a(i, k) and
 * b(k, j) reading the operands relative to the tile. Both ways leave acc in the layout of the
 * m16n8k8 accumulator: acc[j][i] is row g + 8 * (i / 2), column 8 * j + 2 * t + i % 2, where
 * g = lane / 4 and t = lane % 4. */
template <class Mode, int J, class A, class B>
__device__ __forceinline__ void warp_product(float acc[J][4], int K, A a, B b) {
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    if constexpr (Mode::tensor) {
#pragma unroll 4 /* the next steps' fragment loads overlap this step's products */
        for (int k = 0; k < K; k += 8) {
            const unsigned a0 = to_tf32(a(g, k + t)), a1 = to_tf32(a(g + 8, k + t)),
                           a2 = to_tf32(a(g, k + t + 4)), a3 = to_tf32(a(g + 8, k + t + 4));
#pragma unroll
            for (int j = 0; j < J; j++) {
                const unsigned b0 = to_tf32(b(k + t, 8 * j + g)),
                               b1 = to_tf32(b(k + t + 4, 8 * j + g));
                asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
                    "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                    : "+f"(acc[j][0]), "+f"(acc[j][1]), "+f"(acc[j][2]), "+f"(acc[j][3])
                    : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
            }
        }
    } else {
        for (int k = 0; k < K; k++) {
            const float top = a(g, k), bottom = a(g + 8, k);
#pragma unroll
            for (int j = 0; j < J; j++) {
                const float left = b(k, 8 * j + 2 * t), right = b(k, 8 * j + 2 * t + 1);
                acc[j][0] += top * left, acc[j][1] += top * right;
                acc[j][2] += bottom * left, acc[j][3] += bottom * right;
            }
        }
    }
}

/* Row and column, inside its tile, of accumulator element acc[j][i]. */
__device__ __forceinline__ int acc_row(int i) { return threadIdx.x % 32 / 4 + 8 * (i / 2); }
__device__ __forceinline__ int acc_col(int j, int i) { return 8 * j + 2 * (threadIdx.x % 4) + i % 2; }

/* Warp 0: the chunk's running sum cs of dt*A, the end-state weights w_s = exp(cs_last - cs_s)
 * dt_s and the output decays e_q = exp(cs_q). dt is zero past the sequence's end, so cs_last is
 * cs[L - 1] and those tokens weigh nothing. */
__device__ void chunk_decays(float *cs, float *w, float *e, const float *dt, float A, int L) {
    const int lane = threadIdx.x % 32;
    float carried = 0.0f;
    for (int s0 = 0; s0 < L; s0 += 32) {
        float v = dt[s0 + lane] * A;
        for (int offset = 1; offset < 32; offset <<= 1) {
            const float before = __shfl_up_sync(0xffffffffu, v, offset);
            if (lane >= offset) v += before;
        }
        cs[s0 + lane] = carried + v;
        carried += __shfl_sync(0xffffffffu, v, 31);
    }
    __syncwarp();
    for (int s = lane; s < L; s += 32) {
        w[s] = expf(carried - cs[s]) * dt[s];
        e[s] = expf(cs[s]);
    }
}

/* Block (channel slice, head, batch row). x, Bm and Cm: rows of ldx floats, one a token. */
template <class Mode, int VEC>
__global__ void __launch_bounds__(SCAN_THREADS)
ssd_scan_kernel(float *y, float *state, int has_state, const float *x, const float *Bm,
                const float *Cm, int64_t ldx, const float *dt, const float *A, const float *D,
                int64_t T, int64_t H, int64_t P, int64_t N, int64_t heads_per_group,
                ScanLayout lay) {
    extern __shared__ float4 shared_floats4[];
    float *const sm = (float *)shared_floats4;
    const int L = lay.L, PT = lay.PT, NP = lay.NP, warp = threadIdx.x / 32;
    const int64_t b = blockIdx.z, h = blockIdx.y, g = h / heads_per_group, p0 = blockIdx.x * PT;
    const int pw = (int)(P - p0 < PT ? P - p0 : PT); /* the slice's channels */
    float *const Cs = sm + lay.stages * lay.stage_floats(), *const M = Cs + L * lay.c_ld();
    float *const S = M + L * lay.m_ld(), *const cs = S + PT * lay.c_ld(), *const w = cs + L,
                 *const e = w + L;
    const float *const xb = x + b * T * ldx + h * P + p0, *const Bb = Bm + b * T * ldx + g * N,
                       *const Cb = Cm + b * T * ldx + g * N, *const dtb = dt + b * T * H + h;
    float *const stateb = state + ((b * H + h) * P + p0) * N;
    const int64_t chunks = (T + L - 1) / L;

    auto stage = [&](int64_t c) { return sm + c % lay.stages * lay.stage_floats(); };
    auto load_x_b_dt = [&](int64_t c) {
        const int64_t t0 = c * L;
        const int len = (int)(T - t0 < L ? T - t0 : L);
        float *xs = stage(c), *Bs = xs + L * lay.x_ld(), *dts = Bs + L * lay.b_ld();
        load_tile<VEC>(xs, lay.x_ld(), xb + t0 * ldx, ldx, L, len, PT, pw);
        load_tile<VEC>(Bs, lay.b_ld(), Bb + t0 * ldx, ldx, L, len, NP, (int)N);
        for (int s = threadIdx.x; s < L; s += SCAN_THREADS)
            copy_async<4>(dts + s, s < len ? dtb + (t0 + s) * H : dtb, s < len);
    };
    auto load_c = [&](int64_t c) {
        const int64_t t0 = c * L;
        load_tile<VEC>(Cs, lay.c_ld(), Cb + t0 * ldx, ldx, L, (int)(T - t0 < L ? T - t0 : L), NP,
                       (int)N);
    };

    for (int i = threadIdx.x; i < PT * NP; i += SCAN_THREADS) {
        const int p = i / NP, n = i % NP;
        S[p * lay.c_ld() + n] = has_state && p < pw && n < N ? stateb[p * N + n] : 0.0f;
    }
    load_c(0);
    if (lay.stages == 2) load_x_b_dt(0);
    copies_commit();

    const float a_h = A[h], d_h = D[h];
    for (int64_t c = 0; c < chunks; c++) {
        /* two stages: the next chunk's x, B and dt now; one: this chunk's, waited for at once */
        if (lay.stages == 1) load_x_b_dt(c);
        else if (c + 1 < chunks) load_x_b_dt(c + 1);
        copies_commit();
        copies_wait(lay.stages - 1);
        __syncthreads();
        const int64_t t0 = c * L;
        const int len = (int)(T - t0 < L ? T - t0 : L);
        const float *xs = stage(c), *Bs = xs + L * lay.x_ld(), *dts = Bs + L * lay.b_ld();
        if (warp == 0) chunk_decays(cs, w, e, dts, a_h, L);

        /* M = C B^T, masked and decayed: an L x L output in 16 x 16 tiles, at most one a warp */
        const int m_tiles = L / 16 * (L / 16);
        const int mr = warp / (L / 16) * 16, mc = warp % (L / 16) * 16;
        float acc[2][4] = {};
        if (warp < m_tiles)
            warp_product<Mode, 2>(
                acc, NP, [&](int i, int k) { return Cs[(mr + i) * lay.c_ld() + k]; },
                [&](int k, int j) { return Bs[(mc + j) * lay.b_ld() + k]; });
        __syncthreads(); /* cs */
        if (warp < m_tiles)
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < 4; i++) {
                    const int q = mr + acc_row(i), s = mc + acc_col(j, i);
                    M[q * lay.m_ld() + s] =
                        s <= q ? acc[j][i] * Mode::exp(cs[q] - cs[s]) * dts[s] : 0.0f;
                }
        __syncthreads();

        /* y = e (C S^T) + M x + D x: an L x PT output in 16 x 16 tiles, at most one a warp */
        const int y_tiles = L / 16 * (PT / 16);
        if (warp < y_tiles) {
            const int yr = warp / (PT / 16) * 16, yc = warp % (PT / 16) * 16;
            float out[2][4] = {};
            warp_product<Mode, 2>(
                out, NP, [&](int i, int k) { return Cs[(yr + i) * lay.c_ld() + k]; },
                [&](int k, int j) { return S[(yc + j) * lay.c_ld() + k]; });
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < 4; i++) out[j][i] *= e[yr + acc_row(i)];
            warp_product<Mode, 2>(
                out, L, [&](int i, int k) { return M[(yr + i) * lay.m_ld() + k]; },
                [&](int k, int j) { return xs[k * lay.x_ld() + yc + j]; });
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < 4; i++) {
                    const int q = yr + acc_row(i), p = yc + acc_col(j, i);
                    if (q < len && p < pw)
                        y[((b * T + t0 + q) * H + h) * P + p0 + p] =
                            out[j][i] + d_h * xs[q * lay.x_ld() + p];
                }
        }
        __syncthreads(); /* C and S are read */
        if (c + 1 < chunks) load_c(c + 1);
        copies_commit();

        /* S = exp(cs_last) S + (w x)^T B: a PT x NP output in 16 x 32 tiles shared out over the
         * warps */
        const float decay = expf(cs[L - 1]);
        for (int tile = warp; tile < PT / 16 * (NP / 32); tile += SCAN_WARPS) {
            const int sr = tile / (NP / 32) * 16, sc = tile % (NP / 32) * 32;
            float upd[4][4];
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 4; i++)
                    upd[j][i] = decay * S[(sr + acc_row(i)) * lay.c_ld() + sc + acc_col(j, i)];
            warp_product<Mode, 4>(
                upd, L, [&](int i, int k) { return xs[k * lay.x_ld() + sr + i] * w[k]; },
                [&](int k, int j) { return Bs[k * lay.b_ld() + sc + j]; });
            for (int j = 0; j < 4; j++)
                for (int i = 0; i < 4; i++)
                    S[(sr + acc_row(i)) * lay.c_ld() + sc + acc_col(j, i)] = upd[j][i];
        }
        __syncthreads(); /* S is whole; this chunk's stage and decays may be overwritten */
    }
    for (int i = threadIdx.x; i < pw * N; i += SCAN_THREADS)
        stateb[i] = S[i / N * lay.c_ld() + i % N];
}

static int round_up(int64_t v, int m) { return (int)((v + m - 1) / m * m); }

/* The largest layout that fits the device's shared memory: long chunks first (fewer steps in
 * the sequential walk), then narrower channel slices, then a single stage of copies. */
static bool choose_layout(int64_t P, int64_t N, ScanLayout *out) {
    int device = 0, limit = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    const int NP = round_up(N, 32), PT = P > 32 ? 64 : 32;
    const ScanLayout options[] = {
        {64, PT, NP, 2}, {64, 32, NP, 2}, {32, 32, NP, 2}, {32, 32, NP, 1}};
    for (const ScanLayout &lay : options)
        if ((size_t)lay.floats() * sizeof(float) <= (size_t)limit) {
            *out = lay;
            return true;
        }
    return false;
}

template <class Mode, int VEC>
static void launch_scan(float *y, float *state, int has_state, const float *x, const float *Bm,
                        const float *Cm, int64_t ldx, const float *dt, const float *A,
                        const float *D, int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                        int64_t G, const ScanLayout &lay) {
    const int bytes = lay.floats() * (int)sizeof(float);
    cudaFuncSetAttribute(ssd_scan_kernel<Mode, VEC>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         bytes);
    const dim3 grid((unsigned)((P + lay.PT - 1) / lay.PT), (unsigned)H, (unsigned)B);
    ssd_scan_kernel<Mode, VEC><<<grid, SCAN_THREADS, bytes, m2c_cuda_stream()>>>(
        y, state, has_state, x, Bm, Cm, ldx, dt, A, D, T, H, P, N, H / G, lay);
}

template <class Mode>
static void scan_with(float *y, float *state, int has_state, const float *x, const float *Bm,
                      const float *Cm, int64_t ldx, const float *dt, const float *A,
                      const float *D, int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                      int64_t G, const ScanLayout &lay) {
    const bool vec4 = P % 4 == 0 && N % 4 == 0 && m2c_rows_aligned16(x, ldx) &&
                      m2c_rows_aligned16(Bm, ldx) && m2c_rows_aligned16(Cm, ldx);
    if (vec4)
        launch_scan<Mode, 4>(y, state, has_state, x, Bm, Cm, ldx, dt, A, D, B, T, H, P, N, G, lay);
    else
        launch_scan<Mode, 1>(y, state, has_state, x, Bm, Cm, ldx, dt, A, D, B, T, H, P, N, G, lay);
}

m2c_status m2c_cuda_ssd_chunked(float *y, float *state, int has_state, const float *x,
                                const float *Bm, const float *Cm, int64_t ldx, const float *dt,
                                const float *A, const float *D, int64_t B, int64_t T, int64_t H,
                                int64_t P, int64_t N, int64_t G, m2c_dtype operands) {
    if (B * T * H == 0) return M2C_OK;
    ScanLayout lay;
    if (!choose_layout(P, N, &lay))
        return m2c_fail(M2C_ERR_VALUE, "a state of %lld columns does not fit in this GPU's "
                        "shared memory", (long long)N);
    if (operands == M2C_F32)
        scan_with<Exact>(y, state, has_state, x, Bm, Cm, ldx, dt, A, D, B, T, H, P, N, G, lay);
    else
        scan_with<Tf32>(y, state, has_state, x, Bm, Cm, ldx, dt, A, D, B, T, H, P, N, G, lay);
    return M2C_OK;
}
