/* CPU kernels: one operation a file, float32 compute, 16-bit weights widened as they load.
 * Row-major throughout; `ld*` arguments are row strides in elements, so a kernel can read a
 * column slice of a wider buffer (e.g. x, B or C inside the conv output) without a copy.
 * Every kernel parallelises itself over the machine's cores; none may be called from inside
 * another parallel region. */
#ifndef M2C_KERNELS_H
#define M2C_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "mamba2c.h"

/* out[r, :] = table[ids[r], :] for r < R. Ids must already be validated. */
void m2c_embedding(float *out, const int64_t *ids, m2c_tensor table, int64_t R, int64_t D);

/* out[r, :] = weight * x[r, :] / sqrt(mean(x[r, :]^2) + eps) * (row_scale ? row_scale[r] : 1).
 * out may alias x. */
void m2c_rmsnorm(float *out, const float *x, m2c_tensor weight, const float *row_scale, int64_t R,
                 int64_t D, float eps);

/* Gated RMSNorm (gate before the norm): g = y * silu(z); out = weight * g / rms(g), the statistic
 * taken over consecutive groups of `group_size` channels (I for the transformers norm).
 * y, out [R, I] (may alias); z [R, I] with row stride ldz. */
void m2c_rmsnorm_gated(float *out, const float *y, const float *z, int64_t ldz, m2c_tensor weight,
                       int64_t R, int64_t I, int64_t group_size, float eps);

/* out[r, o] = sum_k x[r, k] * W[o, k] + bias[o] (+ out[r, o] when accumulate).
 * x [R, K] row stride ldx; W [O, K] in any weight dtype; out [R, O] row stride ldo. */
m2c_status m2c_linear(float *out, int64_t ldo, const float *x, int64_t ldx, m2c_tensor W,
                      m2c_tensor bias, int64_t R, int64_t K, int64_t O, int accumulate);

/* Serial float32 GEMM for small products inside parallel regions:
 * C[M, N] = A[M, K] * op(B) + beta * C, op(B) = B [K, N] or, with b_transposed, B [N, K]^T. */
void m2c_sgemm_serial(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                      int64_t ldb, int b_transposed, float beta, float *C, int64_t ldc);

/* Uses OpenBLAS for large float32 products when the build has it (on by default). */
void m2c_gemm_use_blas(int enable);
int m2c_gemm_has_blas(void);

/* Causal depthwise conv over time + optional SiLU + optional row mask, per batch row b:
 *   out[b, t, c] = act(bias[c] + sum_k w[c, k] * in_ext[b, t + k, c]) * mask[b, t]
 * where in_ext is the K-1 previous inputs (from `state` when has_state, zeros otherwise)
 * followed by in[b, 0..T). When `state` is given it is left holding the last K inputs.
 * in [B, T, C] row stride ldin; out [B, T, C]; state [B, C, K]; mask [B, T] or NULL. */
void m2c_conv1d(float *out, float *state, int has_state, const float *in, int64_t ldin,
                m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B, int64_t T, int64_t C,
                int64_t K, int silu);

/* dt[r, h] = clamp(softplus(raw[r, h] + dt_bias[h]), lo, hi); raw row stride ldraw. */
void m2c_dt_softplus(float *dt, const float *raw, int64_t ldraw, m2c_tensor dt_bias, int64_t R,
                     int64_t H, float lo, float hi);

/* Chunked SSD (state-space dual) scan with per-head scalar decay, for each batch row b:
 *   s_t = exp(dt_t A_h) s_{t-1} + dt_t x_t (x) B_t ;  y_t = s_t C_t + D_h x_t
 * computed chunk by chunk with GEMMs (never a [Q, Q, H, N] tensor).
 * x [B, T, H*P] and Bm, Cm [B, T, G*N] with row stride ldx; dt [B, T, H]; A, D [H] float32;
 * y [B, T, H*P]; state [B, H, P, N]: the initial state when has_state (zeros otherwise), left
 * holding the final state. `work` holds m2c_ssd_work_floats(...) floats. */
m2c_status m2c_ssd_chunked(float *y, float *state, int has_state, const float *x, const float *Bm,
                           const float *Cm, int64_t ldx, const float *dt, const float *A,
                           const float *D, int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                           int64_t G, int64_t Q, float *work);
size_t m2c_ssd_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                           int64_t Q);

/* The same recurrence for one token per batch row (decode), without chunking or scratch:
 * x [B, H*P] and Bm, Cm [B, G*N] with row stride ldx; dt [B, H]; y [B, H*P]; state as above. */
void m2c_ssd_step(float *y, float *state, int has_state, const float *x, const float *Bm,
                  const float *Cm, int64_t ldx, const float *dt, const float *A, const float *D,
                  int64_t B, int64_t H, int64_t P, int64_t N, int64_t G);

/* Mean next-token cross-entropy: position t of row b predicts labels[b, t+1]; labels equal to
 * -100 are skipped. logits [B, T, V]. Returns NaN when no label counts (as torch does). */
double m2c_cross_entropy(const float *logits, const int64_t *labels, int64_t B, int64_t T,
                         int64_t V);

/* Number of threads the kernels use. */
int m2c_threads(void);

/* The calling thread's number in its parallel region's team, 0 outside one. */
int m2c_thread_id(void);

/* Makes the calling thread use the count set with m2c_set_num_threads; every entry point calls
 * it before its first parallel region. */
void m2c_threads_apply(void);

/* Called once at load: makes forked children compute on one thread (see threads.c). */
void m2c_threads_init(void);

#endif
