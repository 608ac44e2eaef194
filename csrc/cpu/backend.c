/* The CPU operation table: host memory and the kernels of kernels.h. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../model/backend.h"
#include "../model/status.h"
#include "dtype.h"
#include "kernels.h"

static m2c_status cpu_begin(void) {
    m2c_threads_apply();
    return M2C_OK;
}

static m2c_status cpu_finish(void) { return M2C_OK; }

/* Refuses sizes that cannot fit before trying: a huge malloc can succeed lazily and then kill
 * the process when touched. */
static m2c_status cpu_alloc(void **out, size_t bytes, const char *what) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    *out = NULL;
    if (bytes == 0 || bytes > SIZE_MAX - 63 ||
        (pages > 0 && page > 0 && bytes / (size_t)page > (size_t)pages))
        return m2c_fail(M2C_ERR_MEMORY, "%s needs %zu bytes, more than this machine's memory",
                        what, bytes);
    *out = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!*out) return m2c_fail(M2C_ERR_MEMORY, "out of memory allocating %zu bytes for %s", bytes,
                               what);
    return M2C_OK;
}

static void cpu_copy(void *dst, const void *src, size_t bytes) { memcpy(dst, src, bytes); }

static void cpu_embedding(float *out, const int64_t *ids, m2c_tensor table, int64_t R, int64_t D,
                          int64_t V) {
    (void)V; /* the engine validated every id */
    m2c_embedding(out, ids, table, R, D);
}

/* Products take float32 input (the 16-bit weights are widened as they are packed), so the
 * norms below are only ever asked for float32 output. */
static m2c_dtype cpu_product_input(m2c_dtype weights, int64_t R) {
    (void)weights, (void)R;
    return M2C_F32;
}

static void cpu_rmsnorm(void *out, m2c_dtype out_dtype, const float *x, m2c_tensor weight,
                        const float *row_scale, int64_t R, int64_t D, float eps) {
    (void)out_dtype;
    m2c_rmsnorm(out, x, weight, row_scale, R, D, eps);
}

/* Products write float32 too, so the activations below are float32 whatever type they are
 * said to hold. */
static m2c_dtype cpu_product_output(m2c_dtype weights) {
    (void)weights;
    return M2C_F32;
}

static void cpu_rmsnorm_gated(void *out, m2c_dtype out_dtype, const float *y, const void *z,
                              m2c_dtype z_dtype, int64_t ldz, m2c_tensor weight, int64_t R,
                              int64_t I, int64_t group_size, float eps) {
    (void)out_dtype, (void)z_dtype;
    m2c_rmsnorm_gated(out, y, z, ldz, weight, R, I, group_size, eps);
}

static m2c_status cpu_linear(void *out, m2c_dtype out_dtype, int64_t ldo, const void *x,
                             m2c_dtype x_dtype, int64_t ldx, m2c_tensor W, m2c_tensor bias,
                             int64_t R, int64_t K, int64_t O, int accumulate) {
    (void)out_dtype, (void)x_dtype;
    return m2c_linear(out, ldo, x, ldx, W, bias, R, K, O, accumulate);
}

static void cpu_conv1d(void *out, float *state, int has_state, const void *in, m2c_dtype dtype,
                       int64_t ldin, m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B,
                       int64_t T, int64_t C, int64_t K, int silu) {
    (void)dtype;
    m2c_conv1d(out, state, has_state, in, ldin, w, bias, mask, B, T, C, K, silu);
}

static void cpu_ssd_inputs(float *dt, float *A, float *D, const void *raw, m2c_dtype raw_dtype,
                           int64_t ldraw, m2c_tensor dt_bias, m2c_tensor A_log,
                           m2c_tensor D_weight, int64_t R, int64_t H, float lo, float hi) {
    (void)raw_dtype;
    m2c_dt_softplus(dt, raw, ldraw, dt_bias, R, H, lo, hi);
    for (int64_t h = 0; h < H; h++) {
        A[h] = -expf(m2c_load(A_log, h));
        D[h] = m2c_load(D_weight, h);
    }
}

static m2c_status cpu_cross_entropy(float *loss, const float *logits, const int64_t *labels,
                                    int64_t B, int64_t T, int64_t V) {
    *loss = (float)m2c_cross_entropy(logits, labels, B, T, V);
    return M2C_OK;
}

static m2c_status cpu_ssd_chunked(float *y, float *state, int has_state, const void *x,
                                  const void *Bm, const void *Cm, m2c_dtype dtype, int64_t ldx,
                                  const float *dt, const float *A, const float *D, int64_t B,
                                  int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Q,
                                  float *work) {
    (void)dtype;
    return m2c_ssd_chunked(y, state, has_state, x, Bm, Cm, ldx, dt, A, D, B, T, H, P, N, G, Q,
                           work);
}

static void cpu_ssd_step(float *y, float *state, int has_state, const void *x, const void *Bm,
                         const void *Cm, m2c_dtype dtype, int64_t ldx, const float *dt,
                         const float *A, const float *D, int64_t B, int64_t H, int64_t P,
                         int64_t N, int64_t G) {
    (void)dtype;
    m2c_ssd_step(y, state, has_state, x, Bm, Cm, ldx, dt, A, D, B, H, P, N, G);
}

const m2c_backend m2c_cpu_backend = {
    .name = "cpu",
    .host_memory = 1,
    /* Past 64 tokens the quadratic in-chunk work outgrows what longer chunks save in state
     * passes on a CPU; any chunk gives the same result up to rounding. */
    .max_chunk = 64,
    .begin = cpu_begin,
    .finish = cpu_finish,
    .last_error = m2c_last_error,
    .alloc = cpu_alloc,
    .release = free,
    .copy = cpu_copy,
    .embedding = cpu_embedding,
    .product_input = cpu_product_input,
    .product_output = cpu_product_output,
    .rmsnorm = cpu_rmsnorm,
    .rmsnorm_gated = cpu_rmsnorm_gated,
    .linear = cpu_linear,
    .conv1d = cpu_conv1d,
    .ssd_inputs = cpu_ssd_inputs,
    .ssd_chunked = cpu_ssd_chunked,
    .ssd_work_floats = m2c_ssd_work_floats,
    .ssd_step = cpu_ssd_step,
    .cross_entropy = cpu_cross_entropy,
};
