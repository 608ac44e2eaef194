/* The SSD's per-head inputs in one small launch: the time steps of R rows (from the projection's
 * output, float32 or 16-bit), and the decay rates and skip weights of the H heads, which the
 * first H threads write as well. Launched early: the decay rates and skip weights, from weights
 * alone, are written while the conv finishes. */
#include "kernels.cuh"

template <class RawT>
__global__ void ssd_inputs_kernel(float *dt, float *A, float *D, const RawT *raw, int64_t ldraw,
                                  m2c_tensor dt_bias, m2c_tensor A_log, m2c_tensor D_weight,
                                  int64_t R, int64_t H, float lo, float hi) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < H) { /* from weights only: before the wait */
        A[i] = -expf(m2c_load(A_log, i));
        D[i] = m2c_load(D_weight, i);
    }
    m2c_wait_for_previous();
    m2c_let_next_start(); /* the state update may begin fetching its state */
    if (i >= R * H) return;
    const int64_t r = i / H, h = i % H;
    float v = m2c_to_float(raw[r * ldraw + h]) + m2c_load(dt_bias, h);
    v = v > 20.0f ? v : log1pf(expf(v)); /* torch's softplus threshold */
    dt[i] = fminf(fmaxf(v, lo), hi);
}

template <class RawT>
static void launch(float *dt, float *A, float *D, const RawT *raw, int64_t ldraw,
                   m2c_tensor dt_bias, m2c_tensor A_log, m2c_tensor D_weight, int64_t R, int64_t H,
                   float lo, float hi) {
    m2c_launch_early(ssd_inputs_kernel<RawT>, dim3(m2c_blocks(R * H, 256)), dim3(256), 0, 1, dt,
                     A, D, raw, ldraw, dt_bias, A_log, D_weight, R, H, lo, hi);
}

void m2c_cuda_ssd_inputs(float *dt, float *A, float *D, const void *raw, m2c_dtype raw_dtype,
                         int64_t ldraw, m2c_tensor dt_bias, m2c_tensor A_log,
                         m2c_tensor D_weight, int64_t R, int64_t H, float lo, float hi) {
    if (H == 0) return;
    m2c_with_type(raw, raw_dtype, [&](auto *typed) {
        launch(dt, A, D, typed, ldraw, dt_bias, A_log, D_weight, R, H, lo, hi);
    });
}
