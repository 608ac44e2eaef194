/* The CUDA operation table: device memory, the kernels of kernels.cuh, cuBLAS for large
 * products. Everything is queued on one stream per device; the forward waits once, at the end
 * (finish), unless the stream is being captured into a graph. */
#include <atomic>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#include "../model/backend.h"
#include "../model/status.h"
#include "cublas.cuh"
#include "kernels.cuh"

static cudaStream_t streams[M2C_MAX_DEVICES];
static pthread_mutex_t streams_lock = PTHREAD_MUTEX_INITIALIZER;

cudaStream_t m2c_cuda_stream(void) {
    const int device = m2c_device_slot();
    if (device < 0) return 0;
    pthread_mutex_lock(&streams_lock);
    /* A blocking stream: work that other libraries queue on the legacy default stream (torch's
     * copies, our own synchronous copies) stays ordered with ours. */
    if (!streams[device]) cudaStreamCreate(&streams[device]);
    cudaStream_t s = streams[device];
    pthread_mutex_unlock(&streams_lock);
    return s;
}

static m2c_status cuda_failed(cudaError_t err, const char *doing) {
    return m2c_fail(err == cudaErrorMemoryAllocation ? M2C_ERR_MEMORY : M2C_ERR_RUNTIME,
                    "CUDA error while %s: %s", doing, cudaGetErrorString(err));
}

static m2c_status cuda_begin(void) {
    cudaError_t err = cudaGetLastError(); /* a failure left by earlier work would be blamed on us */
    if (err != cudaSuccess) return cuda_failed(err, "starting the forward");
    return M2C_OK;
}

static m2c_status cuda_finish(void) {
    cudaStream_t s = m2c_cuda_stream();
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    cudaError_t err = cudaStreamIsCapturing(s, &capture);
    if (err == cudaSuccess && capture == cudaStreamCaptureStatusNone) err = cudaStreamSynchronize(s);
    if (err == cudaSuccess) err = cudaGetLastError();
    return err == cudaSuccess ? M2C_OK : cuda_failed(err, "running the forward");
}

static m2c_status cuda_alloc(void **out, size_t bytes, const char *what) {
    *out = NULL;
    cudaError_t err = cudaMalloc(out, bytes ? bytes : 1);
    if (err != cudaSuccess) {
        cudaGetLastError();
        *out = NULL;
        size_t free_bytes = 0, total = 0;
        cudaMemGetInfo(&free_bytes, &total);
        return m2c_fail(M2C_ERR_MEMORY, "%s needs %zu bytes of GPU memory; %zu of %zu are free "
                        "(%s)", what, bytes, free_bytes, total, cudaGetErrorString(err));
    }
    return M2C_OK;
}

static void cuda_release(void *p) {
    if (p) cudaFree(p);
}

static void cuda_copy(void *dst, const void *src, size_t bytes) {
    if (bytes) cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, m2c_cuda_stream());
}

static void cuda_embedding(float *out, const int64_t *ids, m2c_tensor table, int64_t R,
                           int64_t D, int64_t V) {
    m2c_cuda_embedding(out, ids, R, table, 1, R, D, V);
}

/* Never launched: it tells which of this module's binaries the device loaded, the same for
 * every kernel, as all are built for the same targets. */
__global__ void binary_probe_kernel() {}

bool m2c_sm90_binary(void) {
    /* 0: not asked yet, 1: yes, -1: no */
    static std::atomic<signed char> known[M2C_MAX_DEVICES];
    const int device = m2c_device_slot();
    if (device < 0) return false;
    signed char answer = known[device].load();
    if (!answer) {
        cudaFuncAttributes attr;
        const bool sm90 = cudaFuncGetAttributes(&attr, binary_probe_kernel) == cudaSuccess &&
                          attr.binaryVersion >= 90;
        cudaGetLastError();
        answer = sm90 ? 1 : -1;
        known[device].store(answer);
    }
    return answer > 0;
}

/* Activations rounded to the weights' 16-bit type for tensor-core products, in a per-device
 * buffer that only grows (between graph captures the sizes it has seen are reused). */
static struct {
    void *data;
    size_t bytes;
} rounded[M2C_MAX_DEVICES];

/* Counts reallocations of those buffers: a CUDA graph captured before one would read freed
 * memory, so graphs record the count and are recaptured when it changed. */
static std::atomic<unsigned long> scratch_epoch{0};

extern "C" unsigned long m2c_cuda_scratch_epoch(void) { return scratch_epoch.load(); }

static m2c_status rounded_buffer(size_t bytes, void **out) {
    const int device = m2c_device_slot();
    if (device < 0)
        return m2c_fail(M2C_ERR_RUNTIME, "the current device is beyond the %d supported",
                        M2C_MAX_DEVICES);
    if (rounded[device].bytes < bytes) {
        cudaStreamSynchronize(m2c_cuda_stream()); /* the old buffer may still be read */
        cuda_release(rounded[device].data);
        scratch_epoch++;
        rounded[device].bytes = 0;
        m2c_status st = cuda_alloc(&rounded[device].data, bytes, "16-bit activations");
        if (st != M2C_OK) return st;
        rounded[device].bytes = bytes;
    }
    *out = rounded[device].data;
    return M2C_OK;
}

/* One row (decode at batch 1) goes to the GEMV, which reads float32 input; more rows to cuBLAS,
 * whose tensor cores take both operands in the weights' type. */
static m2c_dtype cuda_product_input(m2c_dtype weights, int64_t R) {
    return R == 1 ? M2C_F32 : weights;
}

/* A 16-bit model's input projection is stored in its 16-bit type, as transformers' model
 * rounds it: the conv, the time steps and the gate then read half the bytes, and the conv
 * writes (and the scan reads) half as many too. */
static m2c_dtype cuda_product_output(m2c_dtype weights) { return weights; }

static m2c_status cuda_linear(void *out, m2c_dtype out_dtype, int64_t ldo, const void *x,
                              m2c_dtype x_dtype, int64_t ldx, m2c_tensor W, m2c_tensor bias,
                              int64_t R, int64_t K, int64_t O, int accumulate) {
    if (accumulate && out_dtype != M2C_F32)
        return m2c_fail(M2C_ERR_TYPE, "a product accumulates only into float32");
    if (R == 1 && x_dtype == M2C_F32) { /* memory-bound: one pass over W */
        m2c_cuda_gemv(out, out_dtype, (const float *)x, W, bias, K, O, accumulate);
        return M2C_OK;
    }
    if (x_dtype != W.dtype) { /* float32 rows for 16-bit weights: rounded here first */
        void *buf;
        m2c_status st = rounded_buffer((size_t)R * K * 2, &buf);
        if (st != M2C_OK) return st;
        m2c_cuda_round_rows(buf, W.dtype, (const float *)x, ldx, R, K);
        x = buf;
        ldx = K;
    }
    if (bias.data) { /* the bias first, so that the product's output is rounded once */
        m2c_cuda_bias_rows(out, out_dtype, ldo, bias, R, O, accumulate);
        accumulate = 1;
    }
    return m2c_cuda_gemm(out, out_dtype, ldo, x, ldx, W.dtype, W, R, K, O, accumulate);
}

/* The scan picks its own chunk length: Q goes unused. */
static m2c_status cuda_ssd_chunked(float *y, float *state, int has_state, const void *x,
                                   const void *Bm, const void *Cm, m2c_dtype dtype, int64_t ldx,
                                   const float *dt, const float *A, const float *D, int64_t B,
                                   int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                   int64_t Q, float *work) {
    (void)Q;
    return m2c_cuda_ssd_chunked(y, state, has_state, x, Bm, Cm, dtype, ldx, dt, A, D, B, T, H, P,
                                N, G, work);
}

static size_t cuda_ssd_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                                   int64_t G, int64_t Q) {
    (void)H, (void)P, (void)Q;
    return m2c_cuda_ssd_work_floats(B, T, N, G);
}

static m2c_status cuda_cross_entropy(float *loss, const float *logits, const int64_t *labels,
                                     int64_t B, int64_t T, int64_t V) {
    const size_t rows = (size_t)(B * T);
    float *buf = NULL;
    m2c_status st = cuda_alloc((void **)&buf, 2 * rows * sizeof(float), "the loss");
    if (st != M2C_OK) return st;
    m2c_cuda_cross_entropy_rows(buf, buf + rows, logits, labels, B, T, V);
    float *host = (float *)malloc(2 * rows * sizeof(float));
    cudaError_t err = host ? cudaMemcpyAsync(host, buf, 2 * rows * sizeof(float),
                                             cudaMemcpyDeviceToHost, m2c_cuda_stream())
                           : cudaErrorMemoryAllocation;
    if (err == cudaSuccess) err = cudaStreamSynchronize(m2c_cuda_stream());
    if (err == cudaSuccess) {
        double sum = 0, count = 0; /* summed in double, as the CPU kernel does */
        for (size_t i = 0; i < rows; i++) sum += host[i], count += host[rows + i];
        *loss = count > 0 ? (float)(sum / count) : NAN;
    }
    free(host);
    cuda_release(buf);
    return err == cudaSuccess ? M2C_OK : cuda_failed(err, "computing the loss");
}

/* The longest chunk the CUDA scan walks in (ssd_chunked.cu, which picks its own length). */
enum { CUDA_MAX_CHUNK = 64 };

extern "C" const m2c_backend m2c_cuda_backend = {
    /* name */ "cuda",
    /* host_memory */ 0,
    /* max_chunk */ CUDA_MAX_CHUNK,
    cuda_begin,
    cuda_finish,
    m2c_last_error,
    cuda_alloc,
    cuda_release,
    cuda_copy,
    cuda_embedding,
    cuda_product_input,
    cuda_product_output,
    m2c_cuda_rmsnorm,
    m2c_cuda_rmsnorm_gated,
    cuda_linear,
    m2c_cuda_conv1d,
    m2c_cuda_ssd_inputs,
    cuda_ssd_chunked,
    cuda_ssd_work_floats,
    m2c_cuda_ssd_step,
    cuda_cross_entropy,
};
