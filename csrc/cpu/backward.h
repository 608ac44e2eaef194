/* CPU backward kernels for training: each gives the gradients of one forward kernel of kernels.h
 * with respect to its inputs, given the gradient of its output (`d<name>` is dLoss/d<name>).
 * Same conventions as the forward: row-major, `ld*` row strides in elements, float32 compute,
 * 16-bit weights widened as they load, gradients of weights always float32. Every function
 * parallelises itself; none may be called from inside another parallel region. The forward's
 * intermediates are recomputed, not stored, so each takes the forward's inputs again.
 * Gradient buffers are written, never accumulated into. */
#ifndef M2C_BACKWARD_H
#define M2C_BACKWARD_H

#include <stddef.h>
#include <stdint.h>

#include "mamba2c.h"

/* Of m2c_rmsnorm: out = weight * x / rms(x) * row_scale.
 * dx [R, D]; dweight [D]; dout, x [R, D]; row_scale [R] or NULL.
 * Fails only when scratch memory cannot be allocated. */
m2c_status m2c_rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x,
                                m2c_tensor weight, const float *row_scale, int64_t R, int64_t D,
                                float eps);

/* Of m2c_rmsnorm_gated: g = y * silu(z), out = weight * g / rms(g) over groups of `group_size`.
 * dy [R, I]; dz [R, I] row stride lddz; dweight [I]; dout, y [R, I]; z [R, I] row stride ldz.
 * Fails only when scratch memory cannot be allocated. */
m2c_status m2c_rmsnorm_gated_backward(float *dy, float *dz, int64_t lddz, float *dweight,
                                      const float *dout, const float *y, const float *z,
                                      int64_t ldz, m2c_tensor weight, int64_t R, int64_t I,
                                      int64_t group_size, float eps);

/* Of m2c_conv1d (causal depthwise conv + optional SiLU + row mask), per batch row b.
 * din [B, T, C] row stride lddin; dw [C, K]; dbias [C] or NULL; dstate [B, C, K] or NULL: the
 * gradient of the initial `state` (column 0 is never read by the forward, so it gets 0).
 * dout [B, T, C]; in [B, T, C] row stride ldin; state [B, C, K] the forward's initial state or
 * NULL for zeros (never modified here); mask [B, T] or NULL. K <= 16. */
m2c_status m2c_conv1d_backward(float *din, int64_t lddin, float *dw, float *dbias, float *dstate,
                               const float *dout, const float *in, int64_t ldin,
                               const float *state, m2c_tensor w, m2c_tensor bias,
                               const float *mask, int64_t B, int64_t T, int64_t C, int64_t K,
                               int silu);

/* Of m2c_dt_softplus: dt = clamp(softplus(raw + dt_bias), lo, hi). The gradient is zero where the
 * clamp is active (as torch.clamp's: it passes where lo <= value <= hi).
 * draw [R, H] row stride lddraw; ddt_bias [H] or NULL; ddt [R, H]; raw [R, H] row stride ldraw. */
void m2c_dt_softplus_backward(float *draw, int64_t lddraw, float *ddt_bias, const float *ddt,
                              const float *raw, int64_t ldraw, m2c_tensor dt_bias, int64_t R,
                              int64_t H, float lo, float hi);

/* Of m2c_ssd_chunked, chunk by chunk with GEMMs like the forward; the states entering each chunk
 * are recomputed per (row, head).
 * dx [B, T, H*P] and dBm, dCm [B, T, G*N] with row stride lddx; ddt [B, T, H]; dA, dD [H];
 * dstate [B, H, P, N] the gradient of the initial state, or NULL.
 * dy [B, T, H*P]; dfinal [B, H, P, N] the gradient of the final state, or NULL for zeros;
 * state [B, H, P, N] the forward's initial state, or NULL for zeros; the other inputs as in
 * m2c_ssd_chunked. `work` holds m2c_ssd_backward_work_floats(...) floats. */
m2c_status m2c_ssd_chunked_backward(float *dx, float *dBm, float *dCm, int64_t lddx, float *ddt,
                                    float *dA, float *dD, float *dstate, const float *dy,
                                    const float *dfinal, const float *state, const float *x,
                                    const float *Bm, const float *Cm, int64_t ldx,
                                    const float *dt, const float *A, const float *D, int64_t B,
                                    int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                    int64_t Q, float *work);
size_t m2c_ssd_backward_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                                    int64_t G, int64_t Q);

/* Of m2c_cross_entropy with the loss scaled by `scale`: for each counted position (row b, time
 * t < T-1, labels[b, t+1] != -100) dlogits[b, t] = scale * (softmax(logits[b, t]) - onehot);
 * every other row is zero. For the mean loss scale is dLoss / (number of counted positions).
 * dlogits, logits [B, T, V]; labels [B, T] already checked to lie in [0, V) or be -100. */
void m2c_cross_entropy_backward(float *dlogits, const float *logits, const int64_t *labels,
                                int64_t B, int64_t T, int64_t V, float scale);

/* The loss of m2c_cross_entropy (the mean, NaN when no label counts) and, when dlogits is not
 * NULL, the gradient of m2c_cross_entropy_backward, from one pass over the logits. */
double m2c_cross_entropy_with_grad(float *dlogits, const float *logits, const int64_t *labels,
                                   int64_t B, int64_t T, int64_t V, float scale);

#endif
