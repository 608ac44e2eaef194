/* cuBLAS, opened with dlopen on the first large product: importing the CUDA module needs only
 * the driver, and a process that never runs a prefill never maps the library. The few entry
 * points used are declared here with their documented ABI (cublas_api.h), so building needs no
 * cuBLAS headers either. */
#include <dlfcn.h>
#include <pthread.h>

#include <atomic>

#include "cublas.cuh"
#include "../model/status.h"

typedef void *cublasHandle_t;
typedef int cublasStatus_t; /* 0: CUBLAS_STATUS_SUCCESS */
enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 };
enum { CUBLAS_COMPUTE_32F = 68 };
enum { CUBLAS_GEMM_DEFAULT = -1 };

static struct {
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    cublasStatus_t (*set_workspace)(cublasHandle_t, void *, size_t);
    cublasStatus_t (*gemm_ex)(cublasHandle_t, int, int, int, int, int, const void *, const void *,
                              cudaDataType_t, int, const void *, cudaDataType_t, int, const void *,
                              void *, cudaDataType_t, int, int, int);
    const char *error;
} lib;

static pthread_once_t lib_once = PTHREAD_ONCE_INIT;

static void lib_open(void) {
    /* The soname of CUDA 13's cuBLAS, then of CUDA 12's (same ABI for these calls). */
    static const char *names[] = {"libcublas.so.13", "libcublas.so.12", "libcublas.so"};
    void *handle = NULL;
    for (size_t i = 0; !handle && i < sizeof names / sizeof *names; i++)
        handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        lib.error = "cuBLAS (libcublas.so.13) could not be loaded: install the CUDA toolkit or "
                    "the nvidia-cublas package, or add its folder to LD_LIBRARY_PATH";
        return;
    }
    *(void **)&lib.create = dlsym(handle, "cublasCreate_v2");
    *(void **)&lib.set_stream = dlsym(handle, "cublasSetStream_v2");
    *(void **)&lib.set_workspace = dlsym(handle, "cublasSetWorkspace_v2");
    *(void **)&lib.gemm_ex = dlsym(handle, "cublasGemmEx");
    if (!lib.create || !lib.set_stream || !lib.set_workspace || !lib.gemm_ex)
        lib.error = "the cuBLAS library found lacks cublasGemmEx or cublasSetWorkspace_v2";
}

enum { WORKSPACE_BYTES = 32 << 20 };

/* One handle per device, with its own workspace so that no call allocates (graph capture). */
static struct {
    cublasHandle_t handle;
    void *workspace;
    std::atomic<unsigned> prepared; /* bit d: m2c_cuda_prepare_products ran for m2c_dtype d */
} devices[M2C_MAX_DEVICES];
static pthread_mutex_t devices_lock = PTHREAD_MUTEX_INITIALIZER;

static m2c_status handle_for_device(cublasHandle_t *out) {
    pthread_once(&lib_once, lib_open);
    if (lib.error) return m2c_fail(M2C_ERR_RUNTIME, "%s", lib.error);
    const int device = m2c_device_slot();
    if (device < 0)
        return m2c_fail(M2C_ERR_RUNTIME, "the current device is beyond the %d supported",
                        M2C_MAX_DEVICES);
    m2c_status st = M2C_OK;
    pthread_mutex_lock(&devices_lock);
    if (!devices[device].handle) {
        cublasHandle_t h = NULL;
        void *ws = NULL;
        if (lib.create(&h) != 0 || cudaMalloc(&ws, WORKSPACE_BYTES) != cudaSuccess ||
            lib.set_workspace(h, ws, WORKSPACE_BYTES) != 0)
            st = m2c_fail(M2C_ERR_RUNTIME, "cuBLAS could not be initialised on device %d",
                          device);
        else
            devices[device].handle = h, devices[device].workspace = ws;
    }
    pthread_mutex_unlock(&devices_lock);
    if (st == M2C_OK) *out = devices[device].handle;
    return st;
}

static cudaDataType_t data_type(m2c_dtype dtype) {
    switch (dtype) {
    case M2C_BF16: return CUDA_R_16BF;
    case M2C_F16: return CUDA_R_16F;
    default: return CUDA_R_32F;
    }
}

m2c_status m2c_cuda_gemm(void *out, m2c_dtype out_dtype, int64_t ldo, const void *x, int64_t ldx,
                         m2c_dtype x_dtype, m2c_tensor W, int64_t R, int64_t K, int64_t O,
                         int accumulate) {
    cublasHandle_t h;
    m2c_status st = handle_for_device(&h);
    if (st != M2C_OK) return st;
    if (R > INT32_MAX || K > INT32_MAX || O > INT32_MAX || ldo > INT32_MAX || ldx > INT32_MAX)
        return m2c_fail(M2C_ERR_VALUE, "a product of %lld x %lld x %lld is too large for cuBLAS",
                        (long long)R, (long long)K, (long long)O);
    const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
    lib.set_stream(h, m2c_cuda_stream());
    /* Column-major view: out^T [O, R] = W [K, O]^T x^T [K, R]. Pure float32 math for float32
     * weights (no TF32), so results match the CPU to float32 rounding. */
    cublasStatus_t s = lib.gemm_ex(h, CUBLAS_OP_T, CUBLAS_OP_N, (int)O, (int)R, (int)K, &alpha,
                                   W.data, data_type(W.dtype), (int)K, x, data_type(x_dtype),
                                   (int)ldx, &beta, out, data_type(out_dtype), (int)ldo,
                                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    if (s != 0)
        return m2c_fail(M2C_ERR_RUNTIME, "cublasGemmEx failed with status %d (%lld x %lld x %lld)",
                        s, (long long)R, (long long)K, (long long)O);
    return M2C_OK;
}

m2c_status m2c_cuda_prepare_products(m2c_dtype dtype) {
    enum { SIDE = 16 };
    cublasHandle_t h;
    m2c_status st = handle_for_device(&h);
    if (st != M2C_OK) return st;
    const int device = m2c_device_slot(); /* in range: handle_for_device checked it */
    if (devices[device].prepared.load() & (1u << dtype)) return M2C_OK;
    /* W, x and out of a SIDE^3 product, at most four bytes an element; zeroed, as the values
     * do not matter but should be defined. */
    float *buf = NULL;
    const size_t elements = SIDE * SIDE;
    cudaError_t err = cudaMalloc(&buf, 3 * elements * sizeof(float));
    if (err == cudaSuccess) err = cudaMemsetAsync(buf, 0, 3 * elements * sizeof(float),
                                                  m2c_cuda_stream());
    if (err == cudaSuccess) {
        const m2c_tensor W = {buf, dtype};
        st = m2c_cuda_gemm(buf + 2 * elements, M2C_F32, SIDE, buf + elements, SIDE, dtype, W,
                           SIDE, SIDE, SIDE, 0);
        err = cudaStreamSynchronize(m2c_cuda_stream());
    }
    cudaFree(buf);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return m2c_fail(M2C_ERR_RUNTIME, "CUDA error while preparing cuBLAS: %s",
                        cudaGetErrorString(err));
    }
    if (st == M2C_OK) devices[device].prepared.fetch_or(1u << dtype);
    return st;
}
