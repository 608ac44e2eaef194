/* Time steps and decay rates: small element-wise passes over [R, H] and [H]. */
#include "kernels.cuh"

__global__ void dt_softplus_kernel(float *dt, const float *raw, int64_t ldraw, m2c_tensor dt_bias,
                                   int64_t R, int64_t H, float lo, float hi) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= R * H) return;
    const int64_t r = i / H, h = i % H;
    float v = raw[r * ldraw + h] + m2c_load(dt_bias, h);
    v = v > 20.0f ? v : log1pf(expf(v)); /* torch's softplus threshold */
    dt[i] = fminf(fmaxf(v, lo), hi);
}

void m2c_cuda_dt_softplus(float *dt, const float *raw, int64_t ldraw, m2c_tensor dt_bias,
                          int64_t R, int64_t H, float lo, float hi) {
    if (R * H == 0) return;
    dt_softplus_kernel<<<m2c_blocks(R * H, 256), 256, 0, m2c_cuda_stream()>>>(dt, raw, ldraw,
                                                                               dt_bias, R, H, lo, hi);
}

__global__ void ssd_decay_kernel(float *A, float *Dout, m2c_tensor A_log, m2c_tensor D, int64_t H) {
    const int64_t h = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (h >= H) return;
    A[h] = -expf(m2c_load(A_log, h));
    Dout[h] = m2c_load(D, h);
}

void m2c_cuda_ssd_decay(float *A, float *Dout, m2c_tensor A_log, m2c_tensor D, int64_t H) {
    if (H == 0) return;
    ssd_decay_kernel<<<m2c_blocks(H, 128), 128, 0, m2c_cuda_stream()>>>(A, Dout, A_log, D, H);
}
