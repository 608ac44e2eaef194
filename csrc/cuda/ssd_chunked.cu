/* Chunked SSD scan, in two kernels. With cs the running sum of dt*A inside a chunk:
 *   M[q, s] = (C_q . B_s) exp(cs_q - cs_s) dt_s       for s <= q, else 0
 *   y[q, p] = sum_s M[q, s] x_s[p] + exp(cs_q) sum_n C_q[n] S[p, n] + D x_q[p]
 *   S[p, n] <- exp(cs_last) S[p, n] + sum_s exp(cs_last - cs_s) dt_s x_s[p] B_s[n]
 * The products C_q . B_s do not depend on the head, only on its group, and not on the state:
 * the first kernel computes them for every chunk and group at once, into the work memory, with
 * the chunk's C and B^T in float32 as the walk's products read them (so no walking block widens
 * them again). The second is the walk: one block per (batch row, head, slice of the head's
 * channels) goes through its sequence chunk by chunk, L tokens at a time. Three small matrix
 * products a chunk, on operands already in shared memory, in two chains that run side by side
 * on two teams of warps: the output warps make y (C S^T, then M x), the state warps M (from
 * C B^T, the decays and the mask) and the next state ((w x)^T B), which they keep in their
 * registers. M x stops at the diagonal, right of which M is zero. Meanwhile the next chunk's x,
 * B^T, dt and C B^T are copied in behind them (cp.async), and its C once this chunk's C is read.
 * The state never leaves the block until the last chunk, so the walk reads its inputs once and
 * writes y and the final state once. x, B and C are the conv's output, in float32 or in a
 * 16-bit type (XT); the walk keeps x in that type in shared memory. Decays are exponentiated
 * only for s <= q (differences of a decreasing sum, never > 0), so no inf * 0 appears. The
 * chunk length is the scan's own (what fits in shared memory): it changes only the rounding,
 * not the result. */
#include "../model/status.h"
#include "kernels.cuh"

/* 16 warps a block (one block a multiprocessor, for its shared memory), in the walk half of them
 * output warps and half state warps: with 64-token chunks and 64-channel slices, an output warp
 * has one 16 x 32 tile of y and a state warp two of the state. */
enum { SCAN_THREADS = 512, SCAN_WARPS = SCAN_THREADS / 32, OUTPUT_WARPS = 8,
       STATE_WARPS = SCAN_WARPS - OUTPUT_WARPS };

/* A walking block's shared memory, in floats. L tokens a chunk, PT channels, NP state columns
 * (each a multiple of 32: the warps' output tiles cover them exactly; the padding is zero); x
 * is held in its own type XT.
 * `stages` copies of the per-chunk x, B^T, C B^T (made into M in place) and dt, so the next
 * chunk's arrive while this one is used; C and the state S once (S as the products read it:
 * the state itself stays in the state warps' registers); each state warp's own copy of the
 * running sums (which become its weights w), and the output decays e. Row strides: rows that
 * ldmatrix reads (C, B^T, M, S) are an odd number of 16-byte units apart, rows read a column
 * at a time (x; B in the products kernel) 32 bytes past a multiple of 128, so that each
 * fragment load hits 32 different banks (B read by ldmatrix, in C B^T, takes two passes). */
template <class Dims, class XT> struct Layout : Dims {
    __host__ __device__ int x_ld() const { return this->PT + 32 / (int)sizeof(XT); } /* in XT */
    __host__ __device__ int x_floats() const { return this->L * x_ld() * (int)sizeof(XT) / 4; }
    __host__ __device__ int b_ld() const { return this->NP + 8; }
    __host__ __device__ int c_ld() const { return this->NP + 4; } /* C and S */
    __host__ __device__ int m_ld() const { return this->L + 4; }
    __host__ __device__ int stage_floats() const {
        return x_floats() + this->L * (m_ld() + 1) + this->NP * m_ld();
    }
    __host__ __device__ int floats() const {
        return this->stages * stage_floats() + this->L * c_ld() + this->PT * c_ld() +
               (STATE_WARPS + 1) * this->L;
    }
    /* 16 x 32 tiles of the state, spread over the state warps' registers */
    __host__ __device__ constexpr int state_tiles() const {
        return this->PT / 16 * (this->NP / 32);
    }
    /* the products kernel's shared memory: one chunk's C and B */
    __host__ __device__ int product_floats() const { return this->L * (c_ld() + b_ld()); }
    /* the products kernel's output for one chunk and group: C B^T, C and B^T, dense */
    __host__ __device__ int operand_floats() const { return this->L * (this->L + 2 * this->NP); }
};

/* The sizes as run-time values, chosen for the device and the model ... */
struct RuntimeDims {
    int L, PT, NP, stages;
};
template <class XT> using ScanLayout = Layout<RuntimeDims, XT>;

/* ... or as constants, for the layout of every released Mamba-2 checkpoint on a GPU with 190 KB
 * of shared memory a block (64-channel heads, 128 state columns): the compiler then folds the
 * addressing and unrolls the loops over tiles and k steps. */
template <int L_, int PT_, int NP_, int STAGES> struct FixedDims {
    static constexpr int L = L_, PT = PT_, NP = NP_, stages = STAGES;
};
template <class XT> using CommonLayout = Layout<FixedDims<64, 64, 128, 2>, XT>;

template <class XT> static bool same_layout(const ScanLayout<XT> &a, const CommonLayout<XT> &b) {
    return a.L == b.L && a.PT == b.PT && a.NP == b.NP && a.stages == b.stages;
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
#error "the chunked scan needs compute capability 8.0 or newer (cp.async, TF32 tensor cores)"
#endif

/* Copies BYTES (4 or 16) from global to shared memory, or zeros where !valid, asynchronously:
 * complete once copies_wait says so. */
template <int BYTES>
__device__ __forceinline__ void copy_async(void *dst, const void *src, bool valid) {
    const unsigned d = (unsigned)__cvta_generic_to_shared(dst);
    if constexpr (BYTES == 16)
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
                     "r"(valid ? 16 : 0));
    else
        asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(d), "l"(src),
                     "r"(valid ? 4 : 0));
}

__device__ __forceinline__ void copies_commit() { asm volatile("cp.async.commit_group;\n" ::); }

/* Waits until at most `pending` (0 or 1) of this thread's committed copy groups are in flight. */
__device__ __forceinline__ void copies_wait(int pending) {
    if (pending) asm volatile("cp.async.wait_group 1;\n" ::);
    else asm volatile("cp.async.wait_group 0;\n" ::);
}

/* The warps sharing a copy: this one's index among them, and how many they are. */
struct Team {
    int warp, warps;
};

/* move(from, to, valid) for each group of VEC elements of a rows x width tile of a token-major
 * matrix (row r at r * ld) going to shared rows `sld` apart, a warp of the team a row; valid is
 * false for rows >= rows_valid and columns >= cols_valid. A lane walks its column down the rows,
 * so a copy's addresses cost an add each, not a product. */
template <int VEC, class Move>
__device__ __forceinline__ void each_tile_group(int64_t ld, int sld, int rows, int rows_valid,
                                                int width, int cols_valid, Team team,
                                                Move move) {
    const int r0 = team.warp;
    for (int col = threadIdx.x % 32 * VEC; col < width; col += 32 * VEC) {
        const bool col_valid = col < cols_valid;
        int64_t from = r0 * ld + col;
        int to = r0 * sld + col;
        for (int r = r0; r < rows; r += team.warps) {
            move(from, to, col_valid && r < rows_valid);
            from += team.warps * ld, to += team.warps * sld;
        }
    }
}

/* A tile as it is (zeros where not valid), asynchronously: VEC elements a copy, 16 bytes (src,
 * ld and cols_valid then multiples of VEC) or one element. A single 16-bit element is stored at
 * once, as an asynchronous copy moves at least 4 bytes. */
template <int VEC, class T>
__device__ __forceinline__ void load_tile(T *dst, int sld, const T *src, int64_t ld, int rows,
                                          int rows_valid, int width, int cols_valid, Team team) {
    each_tile_group<VEC>(ld, sld, rows, rows_valid, width, cols_valid, team,
                         [&](int64_t from, int to, bool valid) {
                             if constexpr (VEC * sizeof(T) >= 4)
                                 copy_async<VEC * sizeof(T)>(dst + to, valid ? src + from : src,
                                                             valid);
                             else
                                 dst[to] = valid ? src[from] : m2c_round_to<T>(0.0f);
                         });
}

/* A tile widened to float32: float32 elements copied asynchronously, 16-bit ones loaded at once
 * (four at a time when VEC is a multiple of four) and widened. */
template <int VEC, class T>
__device__ __forceinline__ void load_tile_floats(float *dst, int sld, const T *src, int64_t ld,
                                                 int rows, int rows_valid, int width,
                                                 int cols_valid, Team team) {
    if constexpr (std::is_same_v<T, float>) {
        load_tile<VEC>(dst, sld, src, ld, rows, rows_valid, width, cols_valid, team);
    } else {
        constexpr int step = VEC % 4 == 0 ? 4 : 1;
        each_tile_group<VEC>(ld, sld, rows, rows_valid, width, cols_valid, team,
                             [&](int64_t from, int to, bool valid) {
                                 for (int i = 0; i < VEC; i += step) {
                                     m2c_floats<step> v = {};
                                     if (valid) v = m2c_load_as<step>(src + from + i);
                                     m2c_store_as(dst + to + i, v);
                                 }
                             });
    }
}

__device__ __forceinline__ unsigned to_tf32(float v) {
    unsigned r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(v));
    return r;
}

/* d += a b on the tensor cores: one m16n8k8 step with TF32 operands (a[4] and b[2] in the
 * fragment layouts of the PTX ISA) and float32 accumulation. */
__device__ __forceinline__ void mma_tf32(float d[4], const unsigned a[4], const unsigned b[2]) {
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, "
        "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

/* Two ways to multiply, both on tensor cores with float32 accumulation. Tf32 (16-bit inputs):
 * operands rounded to TF32 (float32's exponent, 10 mantissa bits: closer to float32 than the
 * 16-bit types, and the scan's states and decays never leave float32's range). Exact (float32
 * inputs): each operand split into a TF32 value and the TF32 rounding of what it left out,
 * three products (the small-by-small one is below float32's precision): float32 accuracy.
 * "Staged" operands need no rounding as their fragments are loaded: x, B and C (16-bit values,
 * which TF32 holds exactly) and M and S (rounded once as they are written to shared memory);
 * the other one, the state update's (w x)^T, is rounded at each use. */
struct Tf32 {
    /* the in-chunk decays become TF32 operands: the fast exponential's error (about 1e-6
     * relative) is far below TF32's rounding */
    __device__ static float exp(float v) { return __expf(v); }
    __device__ static float stage(float v) { return __uint_as_float(to_tf32(v)); }
    template <bool A_STAGED, bool B_STAGED>
    __device__ static void mma(float d[4], const float a[4], const float b[2]) {
        unsigned ua[4], ub[2];
        for (int i = 0; i < 4; i++) ua[i] = A_STAGED ? __float_as_uint(a[i]) : to_tf32(a[i]);
        for (int i = 0; i < 2; i++) ub[i] = B_STAGED ? __float_as_uint(b[i]) : to_tf32(b[i]);
        mma_tf32(d, ua, ub);
    }
};
struct Exact {
    __device__ static float exp(float v) { return expf(v); }
    __device__ static float stage(float v) { return v; }
    template <bool, bool>
    __device__ static void mma(float d[4], const float a[4], const float b[2]) {
        unsigned a_big[4], a_small[4], b_big[2], b_small[2];
        for (int i = 0; i < 4; i++)
            a_big[i] = to_tf32(a[i]), a_small[i] = to_tf32(a[i] - __uint_as_float(a_big[i]));
        for (int i = 0; i < 2; i++)
            b_big[i] = to_tf32(b[i]), b_small[i] = to_tf32(b[i] - __uint_as_float(b_big[i]));
        mma_tf32(d, a_small, b_big);
        mma_tf32(d, a_big, b_small);
        mma_tf32(d, a_big, b_big);
    }
};

template <class XT> using ModeOf = std::conditional_t<std::is_same_v<XT, float>, Exact, Tf32>;

/* ldmatrix on floats: four blocks of 8 rows of 4 floats (16 bytes), lanes 8m to 8m + 7 giving
 * the row addresses of block m; lane l receives float l % 4 of row l / 4 of each block. */
__device__ __forceinline__ void ldmatrix_x4(float out[4], const float *row) {
    unsigned r[4];
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"((unsigned)__cvta_generic_to_shared(row)));
    for (int i = 0; i < 4; i++) out[i] = __uint_as_float(r[i]);
}

/* Fragment loaders: k steps of 8 of a warp's 16 x 8J output tile, relative to the tile. With
 * g = lane / 4 and t = lane % 4, the A fragment holds (g, t), (g + 8, t), (g, t + 4),
 * (g + 8, t + 4) and the B fragment of column tile j holds (t, 8j + g), (t + 4, 8j + g). */

/* A stored by rows (row i holds its k values): one ldmatrix a step. */
struct ARows {
    const float *base;
    int ld;
    __device__ void operator()(int k, float a[4]) const {
        const int lane = threadIdx.x % 32;
        ldmatrix_x4(a, base + (lane % 16) * ld + k + 4 * (lane / 16));
    }
};

/* B stored by output columns (row j holds column j's k values): one ldmatrix a pair of tiles. */
template <int J> struct BColumns {
    const float *base;
    int ld;
    __device__ void operator()(int k, float b[J][2]) const {
        const int lane = threadIdx.x % 32;
        for (int j = 0; j < J; j += 2) {
            float r[4];
            const int row = 8 * j + lane % 8 + 8 * (lane / 16);
            ldmatrix_x4(r, base + row * ld + k + 4 * (lane / 8 % 2));
            b[j][0] = r[0], b[j][1] = r[1], b[j + 1][0] = r[2], b[j + 1][1] = r[3];
        }
    }
};

/* B stored by k (row k holds the output columns), in float32 or a 16-bit type. */
template <int J, class T> struct BRows {
    const T *base;
    int ld;
    __device__ void operator()(int k, float b[J][2]) const {
        const int g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
        for (int j = 0; j < J; j++) {
            b[j][0] = m2c_to_float(base[(k + t) * ld + 8 * j + g]);
            b[j][1] = m2c_to_float(base[(k + t + 4) * ld + 8 * j + g]);
        }
    }
};

/* acc += a x b over k < K (a multiple of 8) for a warp's 16 x 8J output tile, acc[j] in the
 * m16n8k8 accumulator layout: acc[j][i] is row g + 8 * (i / 2), column 8j + 2t + i % 2. */
template <class Mode, int J, bool A_STAGED, bool B_STAGED, class AFrag, class BFrag>
__device__ __forceinline__ void warp_product(float (&acc)[J][4], int K, AFrag a_frag,
                                             BFrag b_frag) {
#pragma unroll 4 /* the next steps' fragment loads overlap this step's products */
    for (int k = 0; k < K; k += 8) {
        float a[4], b[J][2];
        a_frag(k, a);
        b_frag(k, b);
        for (int j = 0; j < J; j++) Mode::template mma<A_STAGED, B_STAGED>(acc[j], a, b[j]);
    }
}

/* f(v, row, column) for each element v of this thread's share of a warp's output tile at
 * (r0, c0), in warp_product's accumulator layout. */
template <int J, class F>
__device__ __forceinline__ void each_element(float (&acc)[J][4], int r0, int c0, F f) {
    for (int j = 0; j < J; j++)
        for (int i = 0; i < 4; i++)
            f(acc[j][i], r0 + (threadIdx.x % 32 / 4 + 8 * (i / 2)),
              c0 + (8 * j + 2 * (threadIdx.x % 4) + i % 2));
}

/* A warp's running sums cs of dt*A over the chunk; returns the last, cs_last. dt is zero past
 * the sequence's end, so those tokens weigh nothing. */
__device__ float running_sums(float *cs, const float *dt, float A, int L) {
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
    return carried;
}

/* Named barriers beside __syncthreads (barrier 0), between the two teams: S_READ, where the
 * output warps arrive once they have read C and S and the state warps wait before they
 * overwrite S; M_READY, where the state warps arrive once M and e are written and the output
 * warps wait before they read them (and overwrite C). A barrier orders the shared-memory
 * accesses made before it. M was the output warps' work until their chain proved the longer:
 * a quarter of the walk's stall samples were warps waiting at the chunk's block barrier. */
enum { S_READ = 1, M_READY = 2 };

__device__ __forceinline__ void barrier_sync(int id, int threads) {
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

__device__ __forceinline__ void barrier_arrive(int id, int threads) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

/* The products kernel. Block (chunk, group, batch row): the chunk's operands for the walk, in
 * its block of operand_floats() of `work`: C B^T of the chunk's L tokens (L x L), then C
 * (L x NP) and B^T (NP x L), both in float32 as the walk's products read them. The 16 x 16
 * tiles of C B^T above the diagonal, which the walk does not read, are written as zeros. */
template <class XT, int VEC, class Lay>
__global__ void __launch_bounds__(SCAN_THREADS)
chunk_products_kernel(float *work, const XT *Bm, const XT *Cm, int64_t ldx, int64_t T, int64_t N,
                      Lay lay) {
    extern __shared__ float4 shared_floats4[];
    const int L = lay.L, warp = threadIdx.x / 32;
    float *const Cs = (float *)shared_floats4, *const Bs = Cs + L * lay.c_ld();
    const int64_t c = blockIdx.x, g = blockIdx.y, b = blockIdx.z, t0 = c * L;
    const int len = (int)(T - t0 < L ? T - t0 : L);
    const int64_t from = (b * T + t0) * ldx + g * N;
    const Team everyone = {warp, SCAN_WARPS};
    load_tile_floats<VEC>(Cs, lay.c_ld(), Cm + from, ldx, L, len, lay.NP, (int)N, everyone);
    load_tile_floats<VEC>(Bs, lay.b_ld(), Bm + from, ldx, L, len, lay.NP, (int)N, everyone);
    copies_commit();
    copies_wait(0);
    __syncthreads();
    float *const cb = work + ((b * gridDim.x + c) * gridDim.y + g) * lay.operand_floats();
    for (int tile = warp; tile < L / 16 * (L / 16); tile += SCAN_WARPS) {
        const int mr = tile / (L / 16) * 16, mc = tile % (L / 16) * 16;
        float acc[2][4] = {};
        if (mc <= mr)
            warp_product<ModeOf<XT>, 2, true, true>(acc, lay.NP,
                                                    ARows{Cs + mr * lay.c_ld(), lay.c_ld()},
                                                    BColumns<2>{Bs + mc * lay.b_ld(), lay.b_ld()});
        each_element(acc, mr, mc, [&](float v, int q, int s) { cb[q * L + s] = v; });
    }
    float *const c_out = cb + L * L, *const bt_out = c_out + L * lay.NP;
    for (int i = 4 * threadIdx.x; i < L * lay.NP; i += 4 * SCAN_THREADS)
        *(float4 *)(c_out + i) = *(const float4 *)(Cs + i / lay.NP * lay.c_ld() + i % lay.NP);
    for (int i = threadIdx.x; i < lay.NP * L; i += SCAN_THREADS)
        bt_out[i] = Bs[i % L * lay.b_ld() + i / L];
}

/* The walk. Block (channel slice, head, batch row). x: rows of ldx elements, one a token; work:
 * the products kernel's output. The output warps write y; the state warps hold the state, PT x
 * NP in 16 x 32 tiles, at most TILES a warp (tile i * STATE_WARPS + the warp's index among
 * them), in their registers from the first chunk to the last. Each chunk's update accumulates
 * into them and is written to shared memory as the next chunk's output product reads it
 * (rounded once, not at every use), once this chunk's output product has read the last one. */
/* The layouts are sized for one block a multiprocessor, and the bounds say so: without the 1,
 * ptxas may cap the registers for two blocks and spill. */
template <class XT, int VEC, int TILES, class Lay>
__global__ void __launch_bounds__(SCAN_THREADS, 1)
ssd_scan_kernel(float *y, float *state, int has_state, const XT *x, int64_t ldx,
                const float *work, const float *dt, const float *A, const float *D, int64_t T,
                int64_t H, int64_t P, int64_t N, int64_t G, Lay lay) {
    using Mode = ModeOf<XT>;
    extern __shared__ float4 shared_floats4[];
    float *const sm = (float *)shared_floats4;
    const int L = lay.L, PT = lay.PT, NP = lay.NP, warp = threadIdx.x / 32;
    const bool output_warp = warp < OUTPUT_WARPS;
    const Team everyone = {warp, SCAN_WARPS}, outputs = {warp, OUTPUT_WARPS};
    const int64_t b = blockIdx.z, h = blockIdx.y, g = h / (H / G), p0 = blockIdx.x * PT;
    const int pw = (int)(P - p0 < PT ? P - p0 : PT); /* the slice's channels */
    float *const Cs = sm + lay.stages * lay.stage_floats(), *const S = Cs + L * lay.c_ld();
    const int state_warp = warp - OUTPUT_WARPS;
    /* each state warp's copy of the running sums (cs: the state warps' only), then e */
    float *const sums = S + PT * lay.c_ld();
    float *const cs = sums + state_warp * L, *const e = sums + STATE_WARPS * L;
    const XT *const xb = x + b * T * ldx + h * P + p0;
    const float *const dtb = dt + b * T * H + h;
    float *const stateb = state + ((b * H + h) * P + p0) * N;
    const int64_t chunks = (T + L - 1) / L;
    /* chunk c's C B^T, C and B^T */
    auto operands = [&](int64_t c) {
        return work + ((b * chunks + c) * G + g) * lay.operand_floats();
    };

    /* a stage: x (in its own type), B^T, C B^T (then M) and dt of one chunk */
    auto stage = [&](int64_t c) { return sm + c % lay.stages * lay.stage_floats(); };
    auto stage_BT = [&](float *st) { return st + lay.x_floats(); };
    auto stage_M = [&](float *st) { return stage_BT(st) + NP * lay.m_ld(); };
    auto stage_dt = [&](float *st) { return stage_M(st) + L * lay.m_ld(); };
    auto load_stage = [&](int64_t c) {
        const int64_t t0 = c * L;
        const int len = (int)(T - t0 < L ? T - t0 : L);
        float *const st = stage(c), *const dts = stage_dt(st);
        const float *const ops = operands(c);
        load_tile<VEC>((XT *)st, lay.x_ld(), xb + t0 * ldx, ldx, L, len, PT, pw, everyone);
        load_tile<4>(stage_M(st), lay.m_ld(), ops, L, L, L, L, L, everyone);
        load_tile<4>(stage_BT(st), lay.m_ld(), ops + L * L + L * NP, L, NP, NP, L, L, everyone);
        for (int s = threadIdx.x; s < L; s += SCAN_THREADS)
            copy_async<4>(dts + s, s < len ? dtb + (t0 + s) * H : dtb, s < len);
    };
    /* by the output warps, the only ones reading C */
    auto load_c = [&](int64_t c) {
        load_tile<4>(Cs, lay.c_ld(), operands(c) + L * L, NP, L, L, NP, NP, outputs);
    };

    const int state_tiles = lay.state_tiles();
    float state_acc[TILES][4][4];
    /* f(acc, first row, first column) for each of this state warp's tiles of the state */
    auto each_state_tile = [&](auto f) {
#pragma unroll
        for (int i = 0; i < TILES; i++) {
            const int tile = state_warp + i * STATE_WARPS;
            if (tile < state_tiles) f(state_acc[i], tile / (NP / 32) * 16, tile % (NP / 32) * 32);
        }
    };
    auto store_state_tiles = [&] { /* S as the next output product reads it */
        each_state_tile([&](float(&acc)[4][4], int sr, int sc) {
            each_element(acc, sr, sc,
                         [&](float v, int p, int n) { S[p * lay.c_ld() + n] = Mode::stage(v); });
        });
    };
    if (output_warp) {
        load_c(0);
    } else {
        each_state_tile([&](float(&acc)[4][4], int sr, int sc) {
            each_element(acc, sr, sc, [&](float &v, int p, int n) {
                v = has_state && p < pw && n < N ? stateb[p * N + n] : 0.0f;
            });
        });
        store_state_tiles();
    }
    if (lay.stages == 2) load_stage(0);
    copies_commit();

    const float a_h = A[h], d_h = D[h];
    const int m_tiles = L / 16 * (L / 16), y_tiles = L / 16 * (PT / 32);
    for (int64_t c = 0; c < chunks; c++) {
        if (lay.stages == 1) { /* one stage: this chunk's, once the last one is read */
            __syncthreads();
            load_stage(c);
            copies_commit();
        }
        copies_wait(0);
        __syncthreads(); /* this chunk's operands, C and the last chunk's S are in */
        if (lay.stages == 2 && c + 1 < chunks) { /* into the stage the last chunk read */
            load_stage(c + 1);
            copies_commit();
        }
        const int64_t t0 = c * L;
        const int len = (int)(T - t0 < L ? T - t0 : L);
        float *const st = stage(c), *const BT = stage_BT(st), *const M = stage_M(st);
        float *const dts = stage_dt(st);
        const XT *const xs = (const XT *)st;
        if (output_warp) {
            /* y = e (C S^T) + M x + D x: an L x PT output in 16 x 32 tiles, at most one a warp.
             * C S^T first, while the state warps make M and e. */
            const int yr = warp / (PT / 32) * 16, yc = warp % (PT / 32) * 32;
            float out[4][4] = {};
            if (warp < y_tiles)
                warp_product<Mode, 4, true, true>(out, NP,
                                                  ARows{Cs + yr * lay.c_ld(), lay.c_ld()},
                                                  BColumns<4>{S + yc * lay.c_ld(), lay.c_ld()});
            barrier_arrive(S_READ, SCAN_THREADS);
            barrier_sync(M_READY, SCAN_THREADS); /* M and e are whole, and C is read */
            if (c + 1 < chunks) {
                load_c(c + 1);
                copies_commit();
            }
            if (warp < y_tiles) {
                each_element(out, yr, yc, [&](float &v, int q, int) { v *= e[q]; });
                /* M is zero right of the diagonal: a row tile needs the tokens up to its end */
                warp_product<Mode, 4, true, true>(out, yr + 16,
                                                  ARows{M + yr * lay.m_ld(), lay.m_ld()},
                                                  BRows<4, XT>{xs + yc, lay.x_ld()});
                each_element(out, yr, yc, [&](float v, int q, int p) {
                    if (q < len && p < pw)
                        y[((b * T + t0 + q) * H + h) * P + p0 + p] =
                            v + d_h * m2c_to_float(xs[q * lay.x_ld() + p]);
                });
            }
        } else {
            const float cs_last = running_sums(cs, dts, a_h, L);
            if (state_warp == 0)
                for (int q = threadIdx.x % 32; q < L; q += 32) e[q] = expf(cs[q]);
            /* M from C B^T in place, masked and decayed: the 16 x 16 tiles on and left of the
             * diagonal, which the output product reads, four floats a lane at a time */
            for (int tile = state_warp; tile < m_tiles; tile += STATE_WARPS) {
                const int mr = tile / (L / 16) * 16, mc = tile % (L / 16) * 16;
                if (mc > mr) continue;
                for (int i = threadIdx.x % 32; i < 64; i += 32) {
                    const int q = mr + i / 4, s0 = mc + i % 4 * 4;
                    float4 *const p = (float4 *)(M + q * lay.m_ld() + s0);
                    const float4 m4 = *p, cs4 = *(const float4 *)(cs + s0),
                                 dt4 = *(const float4 *)(dts + s0);
                    const float m[4] = {m4.x, m4.y, m4.z, m4.w},
                                c[4] = {cs4.x, cs4.y, cs4.z, cs4.w},
                                d[4] = {dt4.x, dt4.y, dt4.z, dt4.w};
                    const float cs_q = cs[q];
                    float v[4];
                    for (int k = 0; k < 4; k++) { /* selects, not branches */
                        const bool kept = s0 + k <= q;
                        const float decayed = m[k] * Mode::exp(kept ? cs_q - c[k] : 0.0f) * d[k];
                        v[k] = Mode::stage(kept ? decayed : 0.0f);
                    }
                    *p = make_float4(v[0], v[1], v[2], v[3]);
                }
            }
            barrier_arrive(M_READY, SCAN_THREADS);
            __syncwarp(); /* every lane has read the running sums */
            /* S = exp(cs_last) S + (w x)^T B, in each warp's tiles; the running sums become the
             * end-state weights w_s = exp(cs_last - cs_s) dt_s */
            float *const w = cs;
            for (int s = threadIdx.x % 32; s < L; s += 32) w[s] = expf(cs_last - cs[s]) * dts[s];
            __syncwarp();
            const float decay = expf(cs_last);
            each_state_tile([&](float(&acc)[4][4], int sr, int sc) {
                each_element(acc, sr, sc, [&](float &v, int, int) { v *= decay; });
                const XT *xt = xs + sr + threadIdx.x % 32 / 4;
                const int t = threadIdx.x % 4;
                warp_product<Mode, 4, false, true>(
                    acc, L,
                    [&](int k, float a[4]) { /* (w x)^T: x stored by token, weighted as read */
                        const float w0 = w[k + t], w1 = w[k + t + 4];
                        const XT *r0 = xt + (k + t) * lay.x_ld(),
                                 *r1 = xt + (k + t + 4) * lay.x_ld();
                        a[0] = m2c_to_float(r0[0]) * w0, a[1] = m2c_to_float(r0[8]) * w0;
                        a[2] = m2c_to_float(r1[0]) * w1, a[3] = m2c_to_float(r1[8]) * w1;
                    },
                    BColumns<4>{BT + sc * lay.m_ld(), lay.m_ld()});
            });
            barrier_sync(S_READ, SCAN_THREADS); /* the output warps have read S */
            store_state_tiles();
        }
    }
    if (!output_warp)
        each_state_tile([&](float(&acc)[4][4], int sr, int sc) {
            each_element(acc, sr, sc, [&](float v, int p, int n) {
                if (p < pw && n < N) stateb[p * N + n] = v;
            });
        });
}

static int round_up(int64_t v, int m) { return (int)((v + m - 1) / m * m); }

/* The chunk lengths the walk may take: the longest that fits, so the work memory is sized for
 * the first. A state warp holds at most MAX_TILES tiles of the state in its registers. */
enum { LONG_CHUNK = 64, SHORT_CHUNK = 32, MAX_TILES = 4 };

/* The largest layout that fits the device's shared memory (`limit` bytes a block): long chunks
 * first (fewer steps in the sequential walk), then narrower channel slices, then a single
 * stage of copies. */
template <class XT>
static bool choose_layout(int64_t P, int64_t N, int limit, ScanLayout<XT> *out) {
    const int NP = round_up(N, 32), PT = P > 32 ? 64 : 32;
    const ScanLayout<XT> options[] = {{LONG_CHUNK, PT, NP, 2},
                                      {LONG_CHUNK, 32, NP, 2},
                                      {SHORT_CHUNK, 32, NP, 2},
                                      {SHORT_CHUNK, 32, NP, 1}};
    for (const ScanLayout<XT> &lay : options)
        if ((size_t)lay.floats() * sizeof(float) <= (size_t)limit &&
            lay.state_tiles() <= MAX_TILES * STATE_WARPS) {
            *out = lay;
            return true;
        }
    return false;
}

/* chunks x operand_floats() a group and batch row: at most what long chunks take */
size_t m2c_cuda_ssd_work_floats(int64_t B, int64_t T, int64_t N, int64_t G) {
    const ScanLayout<float> longest = {LONG_CHUNK, 32, round_up(N, 32), 1}; /* L, NP matter */
    const int64_t chunks = (T + LONG_CHUNK - 1) / LONG_CHUNK;
    return (size_t)(B * G * chunks) * longest.operand_floats();
}

/* A scan's operands, as m2c_cuda_ssd_chunked receives them, x, B and C in their type. */
template <class XT> struct ScanArgs {
    float *y, *state;
    int has_state;
    const XT *x, *Bm, *Cm;
    int64_t ldx;
    const float *dt, *A, *D;
    int64_t B, T, H, P, N, G;
    float *work;
};

template <class XT, int VEC, int TILES, class Lay>
static void launch_with(const ScanArgs<XT> &a, const Lay &lay) {
    const unsigned chunks = (unsigned)((a.T + lay.L - 1) / lay.L);
    const int product_bytes = lay.product_floats() * (int)sizeof(float);
    cudaFuncSetAttribute(chunk_products_kernel<XT, VEC, Lay>,
                         cudaFuncAttributeMaxDynamicSharedMemorySize, product_bytes);
    chunk_products_kernel<XT, VEC, Lay>
        <<<dim3(chunks, (unsigned)a.G, (unsigned)a.B), SCAN_THREADS, product_bytes,
           m2c_cuda_stream()>>>(a.work, a.Bm, a.Cm, a.ldx, a.T, a.N, lay);

    const int bytes = lay.floats() * (int)sizeof(float);
    cudaFuncSetAttribute(ssd_scan_kernel<XT, VEC, TILES, Lay>,
                         cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
    const dim3 grid((unsigned)((a.P + lay.PT - 1) / lay.PT), (unsigned)a.H, (unsigned)a.B);
    ssd_scan_kernel<XT, VEC, TILES, Lay><<<grid, SCAN_THREADS, bytes, m2c_cuda_stream()>>>(
        a.y, a.state, a.has_state, a.x, a.ldx, a.work, a.dt, a.A, a.D, a.T, a.H, a.P, a.N, a.G,
        lay);
}

template <class XT, int VEC>
static void launch_scan(const ScanArgs<XT> &a, const ScanLayout<XT> &lay) {
    static_assert(CommonLayout<XT>{}.state_tiles() == 2 * STATE_WARPS, "two tiles a warp");
    if (same_layout(lay, CommonLayout<XT>{})) launch_with<XT, VEC, 2>(a, CommonLayout<XT>{});
    else if (lay.state_tiles() <= 2 * STATE_WARPS) launch_with<XT, VEC, 2>(a, lay);
    else launch_with<XT, VEC, MAX_TILES>(a, lay);
}

template <class XT>
static m2c_status scan(const ScanArgs<XT> &a) {
    int device = 0, limit = 0;
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
    ScanLayout<XT> lay;
    if (!choose_layout(a.P, a.N, limit, &lay))
        return m2c_fail(M2C_ERR_VALUE, "state_size %lld is too large for the CUDA scan on this "
                        "GPU: its state does not fit in a block (%d bytes of shared memory, %d "
                        "registers a thread for it)",
                        (long long)a.N, limit, MAX_TILES * 16);
    /* 16 bytes a copy where the rows allow it, else one element */
    constexpr int vec = 16 / sizeof(XT);
    if (a.P % vec == 0 && a.N % vec == 0 && m2c_rows_aligned(a.x, a.ldx, 16) &&
        m2c_rows_aligned(a.Bm, a.ldx, 16) && m2c_rows_aligned(a.Cm, a.ldx, 16))
        launch_scan<XT, vec>(a, lay);
    else
        launch_scan<XT, 1>(a, lay);
    return M2C_OK;
}

m2c_status m2c_cuda_ssd_chunked(float *y, float *state, int has_state, const void *x,
                                const void *Bm, const void *Cm, m2c_dtype dtype, int64_t ldx,
                                const float *dt, const float *A, const float *D, int64_t B,
                                int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                float *work) {
    if (B * T * H == 0) return M2C_OK;
    m2c_status st = M2C_OK;
    m2c_with_type(x, dtype, [&](auto *typed) {
        using Elem = std::remove_const_t<std::remove_pointer_t<decltype(typed)>>;
        const ScanArgs<Elem> args = {y, state, has_state, typed, (const Elem *)Bm,
                                     (const Elem *)Cm, ldx, dt, A, D, B, T, H, P, N, G, work};
        st = scan(args);
    });
    return st;
}
