/* The operations the layer loop calls, one table per backend. The CPU table (csrc/cpu/backend.c)
 * points at the kernels of csrc/cpu/kernels.h; the CUDA table (csrc/cuda/backend.cu) lives in
 * the separate mamba2c._cuda module and reaches the engine as a pointer in a capsule, so a
 * CPU-only process never loads CUDA. Every entry has the meaning of the CPU kernel of the same
 * name; pointers are memory of the backend (host memory or device memory). */
#ifndef M2C_BACKEND_H
#define M2C_BACKEND_H

#include "mamba2c.h"

#ifdef __cplusplus
extern "C" {
#endif

struct m2c_backend {
    const char *name;
    int host_memory;   /* the engine may read argument buffers (ids) directly */
    int64_t max_chunk; /* longest SSD chunk worth its quadratic in-chunk work */

    /* Called at the start of each forward (thread counts, current device). */
    m2c_status (*begin)(void);
    /* Waits for queued work and reports any asynchronous failure. */
    m2c_status (*finish)(void);
    /* The message of this backend's last failure, kept by the module it was built into. */
    const char *(*last_error)(void);

    m2c_status (*alloc)(void **out, size_t bytes, const char *what);
    void (*release)(void *p);
    void (*copy)(void *dst, const void *src, size_t bytes);

    void (*embedding)(float *out, const int64_t *ids, m2c_tensor table, int64_t R, int64_t D,
                      int64_t V);
    /* The type `linear` takes R rows of input in against weights of type `weights`: the norms
     * write the outputs that feed a product in that type, so that no separate pass converts
     * them (CUDA: the weights' 16-bit type for tensor-core products; the CPU: float32). */
    m2c_dtype (*product_input)(m2c_dtype weights, int64_t R);
    /* The type the input projection's output is stored in, for weights of type `weights`:
     * float32, or (CUDA) the weights' 16-bit type, rounded there as transformers' 16-bit model
     * rounds it. The conv, ssd_inputs and the gated norm's z read it in that type, and the conv
     * writes its output, which transformers rounds too, in the same type. */
    m2c_dtype (*product_output)(m2c_dtype weights);
    /* The norms' `out` holds elements of `out_dtype`, float32 or what product_input gave. */
    void (*rmsnorm)(void *out, m2c_dtype out_dtype, const float *x, m2c_tensor weight,
                    const float *row_scale, int64_t R, int64_t D, float eps);
    void (*rmsnorm_gated)(void *out, m2c_dtype out_dtype, const float *y, const void *z,
                          m2c_dtype z_dtype, int64_t ldz, m2c_tensor weight, int64_t R, int64_t I,
                          int64_t group_size, float eps);
    /* x: float32, or the type product_input gave for these weights and rows. out: float32, or
     * what product_output gave for W when not accumulating. */
    m2c_status (*linear)(void *out, m2c_dtype out_dtype, int64_t ldo, const void *x,
                         m2c_dtype x_dtype, int64_t ldx, m2c_tensor W, m2c_tensor bias, int64_t R,
                         int64_t K, int64_t O, int accumulate);
    /* in and out: elements of `dtype` (what product_output gave); the conv state: float32. */
    void (*conv1d)(void *out, float *state, int has_state, const void *in, m2c_dtype dtype,
                   int64_t ldin, m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B,
                   int64_t T, int64_t C, int64_t K, int silu);
    /* The SSD entries' per-head inputs, in float32: time steps dt[r, h] = clamp(softplus(
     * raw[r, h] + dt_bias[h]), lo, hi) for R rows (raw of `raw_dtype`), decay rates A[h] =
     * -exp(A_log[h]) and D[h]. One entry, so that a decode step spends one launch on them. */
    void (*ssd_inputs)(float *dt, float *A, float *D, const void *raw, m2c_dtype raw_dtype,
                       int64_t ldraw, m2c_tensor dt_bias, m2c_tensor A_log, m2c_tensor D_weight,
                       int64_t R, int64_t H, float lo, float hi);
    /* x, Bm, Cm: the conv's output, rows of ldx elements of `dtype` (what product_output
     * gave). For 16-bit inputs a backend may run the in-chunk products at reduced precision
     * (CUDA: TF32 tensor cores, which hold 16-bit values exactly); float32 inputs get float32
     * accuracy. The CPU computes in float32 whatever it is given. */
    m2c_status (*ssd_chunked)(float *y, float *state, int has_state, const void *x,
                              const void *Bm, const void *Cm, m2c_dtype dtype, int64_t ldx,
                              const float *dt, const float *A, const float *D, int64_t B,
                              int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Q,
                              float *work);
    size_t (*ssd_work_floats)(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                              int64_t Q);
    void (*ssd_step)(float *y, float *state, int has_state, const void *x, const void *Bm,
                     const void *Cm, m2c_dtype dtype, int64_t ldx, const float *dt,
                     const float *A, const float *D, int64_t B, int64_t H, int64_t P, int64_t N,
                     int64_t G);
    /* *loss = mean next-token cross-entropy (NaN when no label counts), written to host memory. */
    m2c_status (*cross_entropy)(float *loss, const float *logits, const int64_t *labels,
                                int64_t B, int64_t T, int64_t V);
};

extern const m2c_backend m2c_cpu_backend;

#ifdef __cplusplus
}
#endif
#endif
