/* What every CUDA kernel file shares: weight loads that widen 16-bit storage to float32, the
 * stream all work is queued on, and small launch helpers. */
#ifndef M2C_CUDA_COMMON_CUH
#define M2C_CUDA_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include <type_traits>

#include "mamba2c.h"

/* Devices a process may use: the per-device tables (streams, cuBLAS handles, scratch) have this
 * many slots. */
enum { M2C_MAX_DEVICES = 64 };

/* The current device's slot in those tables, or -1 for a device beyond them. */
static inline int m2c_device_slot(void) {
    int device = 0;
    cudaGetDevice(&device);
    return device >= 0 && device < M2C_MAX_DEVICES ? device : -1;
}

/* The one stream every kernel and copy of this process goes on (created on first use), so a
 * whole forward can be captured into a CUDA graph. */
extern "C" cudaStream_t m2c_cuda_stream(void);

/* Whether the current device runs this module's kernels from a binary for sm_90 or later
 * (clusters, early launch). */
extern "C" bool m2c_sm90_binary(void);

/* Programmatic dependent launch (sm_90 and later; no-ops before). A kernel launched with
 * m2c_launch_early may start while the kernel before it still runs, once every block of that
 * one has called m2c_let_next_start (or finished). Before its wait it touches only weights and
 * state no other kernel writes; m2c_wait_for_previous returns when the previous kernel has
 * finished and its writes are visible. Every such kernel waits before it lets the next one
 * start, so a kernel overlaps only the one just before it, and whatever came earlier has
 * finished. A binary built for older devices has no such wait, and is launched in the usual
 * order. */
__device__ __forceinline__ void m2c_let_next_start() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

__device__ __forceinline__ void m2c_wait_for_previous() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* The line holding p, fetched into L2 ahead of its use. */
__device__ __forceinline__ void m2c_prefetch_l2(const void *p) {
    asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}

/* `cluster`: blocks a cluster along x (1: no clusters). */
template <class... Params, class... Args>
static void m2c_launch_early(void (*kernel)(Params...), dim3 grid, dim3 block,
                             size_t shared_bytes, unsigned cluster, Args... args) {
    cudaLaunchConfig_t config = {};
    cudaLaunchAttribute attrs[2];
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = m2c_cuda_stream();
    config.attrs = attrs;
    if (cluster > 1) {
        attrs[config.numAttrs].id = cudaLaunchAttributeClusterDimension;
        attrs[config.numAttrs].val.clusterDim.x = cluster;
        attrs[config.numAttrs].val.clusterDim.y = attrs[config.numAttrs].val.clusterDim.z = 1;
        config.numAttrs++;
    }
    if (m2c_sm90_binary()) {
        attrs[config.numAttrs].id = cudaLaunchAttributeProgrammaticStreamSerialization;
        attrs[config.numAttrs].val.programmaticStreamSerializationAllowed = 1;
        config.numAttrs++;
    }
    cudaLaunchKernelEx(&config, kernel, (Params)args...);
}

/* Element i of a weight tensor in float32, whatever its storage type. */
__device__ __forceinline__ float m2c_load(m2c_tensor t, int64_t i) {
    switch (t.dtype) {
    case M2C_BF16: return __bfloat162float(((const __nv_bfloat16 *)t.data)[i]);
    case M2C_F16: return __half2float(((const __half *)t.data)[i]);
    default: return ((const float *)t.data)[i];
    }
}

/* Element i of an optional tensor (a bias), 0 when absent. */
__device__ __forceinline__ float m2c_load_or_zero(m2c_tensor t, int64_t i) {
    return t.data ? m2c_load(t, i) : 0.0f;
}

__device__ __forceinline__ float m2c_silu(float x) { return x / (1.0f + __expf(-x)); }

__device__ __forceinline__ float m2c_warp_sum(float v) {
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

/* Sum over a block whose size is a multiple of 32 (at most 1024); every thread gets the total.
 * `scratch` is 32 floats of shared memory. */
__device__ __forceinline__ float m2c_block_sum(float v, float *scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = m2c_warp_sum(v);
    __syncthreads(); /* scratch may still be read by a previous call */
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return m2c_warp_sum(v);
}

/* VEC consecutive floats, moved as one 16-byte access when VEC is 4 (the address then a
 * multiple of 16 bytes) and one at a time when VEC is 1: kernels pick VEC = 4 when their rows
 * allow it. */
template <int VEC> struct m2c_floats { float v[VEC]; };

template <int VEC>
__device__ __forceinline__ m2c_floats<VEC> m2c_load_floats(const float *p) {
    m2c_floats<VEC> f;
    if constexpr (VEC == 4) {
        const float4 q = *(const float4 *)p;
        f.v[0] = q.x, f.v[1] = q.y, f.v[2] = q.z, f.v[3] = q.w;
    } else {
        for (int i = 0; i < VEC; i++) f.v[i] = p[i];
    }
    return f;
}

/* v widened to float32. */
__device__ __forceinline__ float m2c_to_float(float v) { return v; }
__device__ __forceinline__ float m2c_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float m2c_to_float(__half v) { return __half2float(v); }

/* The two 16-bit values packed in v (the first in the low half) widened to float32. */
__device__ __forceinline__ float2 m2c_widen2(uint32_t v, __nv_bfloat16) {
    return __bfloat1622float2(*(const __nv_bfloat162 *)&v);
}
__device__ __forceinline__ float2 m2c_widen2(uint32_t v, __half) {
    return __half22float2(*(const __half2 *)&v);
}

/* VEC consecutive elements of T (float, bf16 or f16) widened to float32, moved as one access of
 * 4 x sizeof(T) bytes when VEC is 4 (p then a multiple of that). */
template <int VEC, class T> __device__ __forceinline__ m2c_floats<VEC> m2c_load_as(const T *p) {
    if constexpr (std::is_same_v<T, float>) {
        return m2c_load_floats<VEC>(p);
    } else if constexpr (VEC == 4) {
        const uint2 q = *(const uint2 *)p;
        const float2 lo = m2c_widen2(q.x, T{}), hi = m2c_widen2(q.y, T{});
        return {{lo.x, lo.y, hi.x, hi.y}};
    } else {
        m2c_floats<VEC> f;
        for (int i = 0; i < VEC; i++) f.v[i] = m2c_to_float(p[i]);
        return f;
    }
}

/* v rounded to nearest even in T (float: unchanged). */
template <class T> __device__ __forceinline__ T m2c_round_to(float v) {
    if constexpr (std::is_same_v<T, __nv_bfloat16>) return __float2bfloat16_rn(v);
    else if constexpr (std::is_same_v<T, __half>) return __float2half_rn(v);
    else return v;
}

/* *p = v, or *p + v when accumulating, rounded to T once (a product's output, its bias). */
template <class T>
__device__ __forceinline__ void m2c_store_sum(T *p, float v, int accumulate) {
    *p = m2c_round_to<T>((accumulate ? m2c_to_float(*p) : 0.0f) + v);
}

/* f stored as elements of T (float, or rounded to bf16 / f16): VEC = 4 writes 4 x sizeof(T)
 * bytes at once (p then a multiple of that). */
template <class T, int VEC>
__device__ __forceinline__ void m2c_store_as(T *p, const m2c_floats<VEC> &f) {
    if constexpr (std::is_same_v<T, float> && VEC == 4) {
        *(float4 *)p = make_float4(f.v[0], f.v[1], f.v[2], f.v[3]);
    } else if constexpr (VEC == 4) {
        unsigned bits[4];
        for (int i = 0; i < 4; i++) {
            const T h = m2c_round_to<T>(f.v[i]);
            if constexpr (std::is_same_v<T, __nv_bfloat16>) bits[i] = __bfloat16_as_ushort(h);
            else bits[i] = __half_as_ushort(h);
        }
        *(uint2 *)p = make_uint2(bits[0] | bits[1] << 16, bits[2] | bits[3] << 16);
    } else {
        for (int i = 0; i < VEC; i++) p[i] = m2c_round_to<T>(f.v[i]);
    }
}

/* Whether rows of T starting at p, `stride` elements apart, all start at a multiple of `bytes`
 * (a power of two). */
template <class T>
static inline bool m2c_rows_aligned(const T *p, int64_t stride, size_t bytes) {
    return (uintptr_t)p % bytes == 0 && (size_t)stride * sizeof(T) % bytes == 0;
}

/* Whether such rows allow accesses of four elements at once (m2c_load_floats<4>,
 * m2c_store_as<T, 4>). */
template <class T> static inline bool m2c_rows_vec4(const T *p, int64_t stride) {
    return m2c_rows_aligned(p, stride, 4 * sizeof(T));
}

/* f(p) with p seen as pointing to elements of `dtype` (float, bf16 or f16), const as given. */
template <class V, class F> static void m2c_with_type(V *p, m2c_dtype dtype, F f) {
    constexpr bool c = std::is_const_v<V>;
    switch (dtype) {
    case M2C_BF16: f((std::conditional_t<c, const __nv_bfloat16, __nv_bfloat16> *)p); break;
    case M2C_F16: f((std::conditional_t<c, const __half, __half> *)p); break;
    default: f((std::conditional_t<c, const float, float> *)p);
    }
}

static inline unsigned m2c_blocks(int64_t n, int threads) {
    return (unsigned)((n + threads - 1) / threads);
}

#endif
