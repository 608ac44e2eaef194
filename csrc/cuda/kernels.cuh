/* CUDA kernels: the operations of csrc/cpu/kernels.h with the same arguments and meaning, on
 * device pointers. Every launcher queues its work on m2c_cuda_stream() and returns at once;
 * errors surface at the backend's next check (cudaGetLastError). Activations are float32, except
 * where a type is passed with them: the norms may write theirs in a product's 16-bit type, and a
 * 16-bit model's input projection is written in its 16-bit type, which the conv, the time steps
 * and the gate read, and so is the conv's output, which the scan reads. Weights are m2c_tensor
 * in float32, bfloat16 or float16; accumulation is float32. */
#ifndef M2C_CUDA_KERNELS_CUH
#define M2C_CUDA_KERNELS_CUH

#include "common.cuh"

/* out[r, :] = table[ids[b * ld_ids + t], :] for r = b * T + t; rows whose id is outside [0, V)
 * are filled with NaN (ids are validated in Python; this keeps a bad id from reading out of
 * bounds). */
void m2c_cuda_embedding(float *out, const int64_t *ids, int64_t ld_ids, m2c_tensor table,
                        int64_t B, int64_t T, int64_t D, int64_t V);

/* The norms write `out` in `out_dtype`: float32, or bf16 / f16 (rounded to nearest even) for a
 * tensor-core product to read directly. */
void m2c_cuda_rmsnorm(void *out, m2c_dtype out_dtype, const float *x, m2c_tensor weight,
                      const float *row_scale, int64_t R, int64_t D, float eps);

void m2c_cuda_rmsnorm_gated(void *out, m2c_dtype out_dtype, const float *y, const void *z,
                            m2c_dtype z_dtype, int64_t ldz, m2c_tensor weight, int64_t R,
                            int64_t I, int64_t group_size, float eps);

/* in and out: elements of `dtype`; the state: float32. */
void m2c_cuda_conv1d(void *out, float *state, int has_state, const void *in, m2c_dtype dtype,
                     int64_t ldin, m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B,
                     int64_t T, int64_t C, int64_t K, int silu);

void m2c_cuda_ssd_inputs(float *dt, float *A, float *D, const void *raw, m2c_dtype raw_dtype,
                         int64_t ldraw, m2c_tensor dt_bias, m2c_tensor A_log,
                         m2c_tensor D_weight, int64_t R, int64_t H, float lo, float hi);

/* x, Bm, Cm: elements of `dtype` (the conv's output); the state: float32. */
void m2c_cuda_ssd_step(float *y, float *state, int has_state, const void *x, const void *Bm,
                       const void *Cm, m2c_dtype dtype, int64_t ldx, const float *dt,
                       const float *A, const float *D, int64_t B, int64_t H, int64_t P, int64_t N,
                       int64_t G);

/* Chunked scan as in the CPU kernel, in chunks of its own length (ssd_chunked.cu). x, Bm, Cm:
 * elements of `dtype`. 16-bit inputs (a 16-bit model) take the in-chunk products on tensor
 * cores with TF32 operands and float32 accumulation; float32 inputs keep float32 accuracy (each
 * operand split in two TF32 parts). `work`: m2c_cuda_ssd_work_floats(B, T, N, G) floats, for
 * the in-chunk products C B^T and C and B^T as the products read them. Fails (M2C_ERR_VALUE)
 * only when a state of N columns cannot fit in the device's shared memory. */
m2c_status m2c_cuda_ssd_chunked(float *y, float *state, int has_state, const void *x,
                                const void *Bm, const void *Cm, m2c_dtype dtype, int64_t ldx,
                                const float *dt, const float *A, const float *D, int64_t B,
                                int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                float *work);
size_t m2c_cuda_ssd_work_floats(int64_t B, int64_t T, int64_t N, int64_t G);

/* The product of one row (decode at batch 1): out[o] = sum_k x[k] W[o, k] + bias[o] (+ out[o]
 * when accumulate, float32 only), each weight read once in 16-byte loads; out holds
 * `out_dtype`. */
void m2c_cuda_gemv(void *out, m2c_dtype out_dtype, const float *x, m2c_tensor W, m2c_tensor bias,
                   int64_t K, int64_t O, int accumulate);

/* dst[r, k] = src[r * lds + k] rounded to `dtype` (bf16 or f16), dst dense [R, K]: the
 * activation side of a tensor-core GEMM. */
void m2c_cuda_round_rows(void *dst, m2c_dtype dtype, const float *src, int64_t lds, int64_t R,
                         int64_t K);

/* out[r, o] = bias[o] (+ out[r, o] when accumulate) for out [R, O] of `out_dtype` with row
 * stride ldo: a product accumulating onto it then rounds a 16-bit output once, bias included,
 * as a product with a bias does in transformers. */
void m2c_cuda_bias_rows(void *out, m2c_dtype out_dtype, int64_t ldo, m2c_tensor bias, int64_t R,
                        int64_t O, int accumulate);

/* losses[b * T + t] = cross-entropy of logits[b, t] against labels[b, t + 1] (0 and counts[..]
 * = 0 where the label is -100 or t is the last position); counts[...] = 1 where it counts. */
void m2c_cuda_cross_entropy_rows(float *losses, float *counts, const float *logits,
                                 const int64_t *labels, int64_t B, int64_t T, int64_t V);

#endif
