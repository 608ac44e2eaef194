/* RMSNorm and the gated RMSNorm, one kernel: a block per row (or per row and norm group), a
 * block-wide sum of squares, then a second pass scaling the values kept in registers; at decode
 * a wide gated-norm group is split over a cluster of blocks instead. The output is float32, or
 * the 16-bit type a tensor-core product reads (OutT), rounded as it is stored; the gate z is in
 * the type the projection before wrote it (ZT). Both are launched early; the cluster kernel
 * reads its weights before waiting for its input. */
#include <cooperative_groups.h>

#include "kernels.cuh"

/* Few rows (decode) get wide blocks, so one row's loads are spread over many threads. */
static int norm_threads(int64_t rows) { return rows < 128 ? 1024 : 256; }

/* Block (group, row) of both norms: g = y (RMSNorm) or y * silu(z) (the gated norm) over the
 * group's channels, normalised by its own rms, times row_scale[row] when given. A thread keeps
 * its first KEPT x VEC values of g in registers between the two passes, all of their loads
 * issued before the sum waits on any; wider groups recompute the rest. The launch keeps no more
 * than the group needs: registers kept for nothing cost resident blocks, and so loads in flight
 * (a 1,024-wide group: 93 -> 47 us over 2,048 rows on the H200). With VEC = 4 a block has
 * NORM_VEC_THREADS threads (more would not have the registers) and keeps groups of up to 4,096
 * whole. Wider ones re-read the rest, mostly from L2: keeping all of an 8,192-wide gated row
 * took more in resident blocks than the re-reading (62.1 against 56.8 us over 2,048 rows). */
enum { NORM_MAX_KEPT = 4, NORM_VEC_THREADS = 256 };

template <int VEC, int KEPT, bool GATED, class OutT, class ZT>
__global__ void __launch_bounds__(VEC == 4 ? NORM_VEC_THREADS : 1024)
norm_rows_kernel(OutT *out, const float *y, const ZT *z, int64_t ldz, m2c_tensor weight,
                 const float *row_scale, int64_t I, int64_t group_size, float eps) {
    __shared__ float scratch[32];
    m2c_wait_for_previous();
    m2c_let_next_start(); /* a product reading this output may begin streaming its weights */
    const int64_t r = blockIdx.y, g0 = (int64_t)blockIdx.x * group_size;
    const float *yr = y + r * I + g0;
    const ZT *zr = GATED ? z + r * ldz + g0 : nullptr;
    OutT *outr = out + r * I + g0;
    const int64_t first = (int64_t)VEC * threadIdx.x, stride = (int64_t)VEC * blockDim.x;
    const int64_t kept_end = KEPT * stride;
    auto gate = [&](int64_t i) { /* g at i .. i + VEC - 1 */
        m2c_floats<VEC> g = m2c_load_floats<VEC>(yr + i);
        if constexpr (GATED) {
            const m2c_floats<VEC> zv = m2c_load_as<VEC>(zr + i);
            for (int e = 0; e < VEC; e++) g.v[e] *= m2c_silu(zv.v[e]);
        }
        return g;
    };
    m2c_floats<VEC> kept[KEPT];
    float sum = 0.0f;
#pragma unroll
    for (int j = 0; j < KEPT; j++) { /* constant indices: kept stays in registers */
        const int64_t i = first + j * stride;
        if (i < group_size) kept[j] = gate(i);
        else
            for (int e = 0; e < VEC; e++) kept[j].v[e] = 0.0f;
        for (int e = 0; e < VEC; e++) sum += kept[j].v[e] * kept[j].v[e];
    }
    for (int64_t i = first + kept_end; i < group_size; i += stride) {
        const m2c_floats<VEC> g = gate(i);
        for (int e = 0; e < VEC; e++) sum += g.v[e] * g.v[e];
    }
    sum = m2c_block_sum(sum, scratch); /* every thread has read its y before any writes out */
    float scale = 1.0f / sqrtf(sum / (float)group_size + eps);
    if (row_scale) scale *= row_scale[r];
#pragma unroll
    for (int j = 0; j < KEPT; j++) {
        const int64_t i = first + j * stride;
        if (i >= group_size) continue;
        m2c_floats<VEC> o;
        for (int e = 0; e < VEC; e++)
            o.v[e] = m2c_load(weight, g0 + i + e) * (kept[j].v[e] * scale);
        m2c_store_as<OutT, VEC>(outr + i, o);
    }
    for (int64_t i = first + kept_end; i < group_size; i += stride) {
        const m2c_floats<VEC> g = gate(i);
        m2c_floats<VEC> o;
        for (int e = 0; e < VEC; e++) o.v[e] = m2c_load(weight, g0 + i + e) * (g.v[e] * scale);
        m2c_store_as<OutT, VEC>(outr + i, o);
    }
}

/* The kernel keeping KEPT values a thread, the fewest of 1, 2, 4 .. NORM_MAX_KEPT that hold a
 * group of group_size in `threads` threads (or NORM_MAX_KEPT). */
template <int VEC, bool GATED, int KEPT = 1, class OutT, class ZT>
static void launch_kept(int threads, OutT *out, const float *y, const ZT *z, int64_t ldz,
                        m2c_tensor weight, const float *row_scale, int64_t R, int64_t I,
                        int64_t group_size, float eps) {
    if constexpr (KEPT < NORM_MAX_KEPT) {
        if (group_size > (int64_t)KEPT * VEC * threads)
            return launch_kept<VEC, GATED, 2 * KEPT>(threads, out, y, z, ldz, weight, row_scale,
                                                      R, I, group_size, eps);
    }
    m2c_launch_early(norm_rows_kernel<VEC, KEPT, GATED, OutT, ZT>,
                     dim3((unsigned)(I / group_size), (unsigned)R), dim3(threads), 0, 1, out, y, z,
                     ldz, weight, row_scale, I, group_size, eps);
}

/* Rows of groups: 16-byte accesses where the rows allow them. */
template <bool GATED, class OutT, class ZT>
static void norm_rows(OutT *out, const float *y, const ZT *z, int64_t ldz, m2c_tensor weight,
                      const float *row_scale, int64_t R, int64_t I, int64_t group_size,
                      float eps) {
    if (group_size % 4 == 0 && m2c_rows_vec4(y, I) && m2c_rows_vec4(out, I) &&
        (!GATED || m2c_rows_vec4(z, ldz)))
        launch_kept<4, GATED>(NORM_VEC_THREADS, out, y, z, ldz, weight, row_scale, R, I,
                              group_size, eps);
    else
        launch_kept<1, GATED>(norm_threads(R * (I / group_size)), out, y, z, ldz, weight,
                              row_scale, R, I, group_size, eps);
}

void m2c_cuda_rmsnorm(void *out, m2c_dtype out_dtype, const float *x, m2c_tensor weight,
                      const float *row_scale, int64_t R, int64_t D, float eps) {
    if (R == 0 || D == 0) return;
    m2c_with_type(out, out_dtype, [&](auto *o) {
        norm_rows<false>(o, x, (const float *)nullptr, 0, weight, row_scale, R, D, D, eps);
    });
}

/* Few rows with wide groups (decode over the full intermediate width): a block per group would
 * leave the GPU idle and walk its group serially. On Hopper a group is split over a cluster of
 * SLICES blocks instead: each gates its slice in registers, and the blocks add their sums of
 * squares through distributed shared memory, so the group is read once, in parallel. */
enum { SLICES = 8, SLICE_THREADS = 256, SLICE_KEPT = 8 };

template <class OutT, class ZT>
__global__ void rmsnorm_gated_cluster_kernel(OutT *out, const float *y, const ZT *z,
                                             int64_t ldz, m2c_tensor weight, int64_t I,
                                             int64_t group_size, float eps) {
#if __CUDA_ARCH__ >= 900
    __shared__ float scratch[32], partial;
    namespace cg = cooperative_groups;
    cg::cluster_group cluster = cg::this_cluster();
    const int64_t r = blockIdx.y, slice = group_size / SLICES, i0 = (int64_t)blockIdx.x * slice;
    float g[SLICE_KEPT], w[SLICE_KEPT], sum = 0.0f;
#pragma unroll
    for (int j = 0; j < SLICE_KEPT; j++) { /* the weights, before the wait */
        const int64_t i = i0 + threadIdx.x + (int64_t)j * SLICE_THREADS;
        w[j] = i < i0 + slice ? m2c_load(weight, i) : 0.0f;
    }
    m2c_wait_for_previous();
    m2c_let_next_start();
#pragma unroll
    for (int j = 0; j < SLICE_KEPT; j++) { /* every load issued before the reduction waits */
        const int64_t i = i0 + threadIdx.x + (int64_t)j * SLICE_THREADS;
        g[j] = i < i0 + slice ? y[r * I + i] * m2c_silu(m2c_to_float(z[r * ldz + i])) : 0.0f;
        sum += g[j] * g[j];
    }
    sum = m2c_block_sum(sum, scratch);
    if (threadIdx.x == 0) partial = sum;
    cluster.sync();
    float total = 0.0f;
    for (unsigned b = 0; b < SLICES; b++) total += *cluster.map_shared_rank(&partial, b);
    cluster.sync(); /* no block leaves while another may still read its partial */
    const float scale = 1.0f / sqrtf(total / (float)group_size + eps);
#pragma unroll
    for (int j = 0; j < SLICE_KEPT; j++) {
        const int64_t i = i0 + threadIdx.x + (int64_t)j * SLICE_THREADS;
        if (i < i0 + slice) out[r * I + i] = m2c_round_to<OutT>(w[j] * (g[j] * scale));
    }
#endif
}

template <class OutT, class ZT>
static void rmsnorm_gated(OutT *out, const float *y, const ZT *z, int64_t ldz,
                          m2c_tensor weight, int64_t R, int64_t I, int64_t group_size, float eps) {
    const int64_t blocks = R * (I / group_size);
    if (blocks < 32 && group_size % (SLICES * SLICE_THREADS) == 0 &&
        group_size <= (int64_t)SLICES * SLICE_THREADS * SLICE_KEPT && m2c_sm90_binary()) {
        m2c_launch_early(rmsnorm_gated_cluster_kernel<OutT, ZT>,
                         dim3((unsigned)(I / group_size * SLICES), (unsigned)R),
                         dim3(SLICE_THREADS), 0, SLICES, out, y, z, ldz, weight, I, group_size,
                         eps);
        return;
    }
    norm_rows<true>(out, y, z, ldz, weight, nullptr, R, I, group_size, eps);
}

void m2c_cuda_rmsnorm_gated(void *out, m2c_dtype out_dtype, const float *y, const void *z,
                            m2c_dtype z_dtype, int64_t ldz, m2c_tensor weight, int64_t R,
                            int64_t I, int64_t group_size, float eps) {
    if (R == 0 || I == 0) return;
    m2c_with_type(out, out_dtype, [&](auto *o) {
        m2c_with_type(z, z_dtype, [&](auto *zt) {
            rmsnorm_gated(o, y, zt, ldz, weight, R, I, group_size, eps);
        });
    });
}
