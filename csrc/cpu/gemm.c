/* Float32 GEMM: a small register-blocked kernel (6x16 tiles, AVX2/FMA when the CPU has it) used
 * serially for the SSD's per-head products and, split over threads, as the built-in fallback
 * for the projections when the build has no BLAS. */
#include <string.h>

#include "kernels.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define M2C_X86 1
#endif

enum { MR = 6, NR = 16, KC = 256 };

/* acc[MR][NR] = sum_k a[i][k] * panel[k][0..NR), a[i] being MR row pointers. */
typedef void (*tile_kernel)(float acc[MR][NR], const float *const a[MR], const float *panel,
                            int64_t kc);

static void tile_generic(float acc[MR][NR], const float *const a[MR], const float *panel,
                         int64_t kc) {
    memset(acc, 0, sizeof(float) * MR * NR);
    for (int64_t k = 0; k < kc; k++)
        for (int i = 0; i < MR; i++) {
            float av = a[i][k];
            for (int j = 0; j < NR; j++) acc[i][j] += av * panel[k * NR + j];
        }
}

#ifdef M2C_X86
__attribute__((target("avx2,fma"))) static void tile_avx2(float acc[MR][NR],
                                                         const float *const a[MR],
                                                         const float *panel, int64_t kc) {
    __m256 c[MR][2];
    for (int i = 0; i < MR; i++) c[i][0] = c[i][1] = _mm256_setzero_ps();
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(panel + k * NR), b1 = _mm256_loadu_ps(panel + k * NR + 8);
        for (int i = 0; i < MR; i++) {
            __m256 av = _mm256_broadcast_ss(a[i] + k);
            c[i][0] = _mm256_fmadd_ps(av, b0, c[i][0]);
            c[i][1] = _mm256_fmadd_ps(av, b1, c[i][1]);
        }
    }
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(acc[i], c[i][0]);
        _mm256_storeu_ps(acc[i] + 8, c[i][1]);
    }
}
#endif

static tile_kernel pick_tile_kernel(void) {
#ifdef M2C_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return tile_avx2;
#endif
    return tile_generic;
}

void m2c_sgemm_serial(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                      int64_t ldb, int b_transposed, float beta, float *C, int64_t ldc) {
    static const float zeros[KC];
    tile_kernel tile = pick_tile_kernel();
    float panel[KC * NR];
    float acc[MR][NR];
    if (K == 0) { /* nothing to multiply: C = beta * C */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
        return;
    }
    for (int64_t k0 = 0; k0 < K; k0 += KC) {
        int64_t kc = K - k0 < KC ? K - k0 : KC;
        float scale = k0 == 0 ? beta : 1.0f; /* later K blocks add to what the first wrote */
        for (int64_t j0 = 0; j0 < N; j0 += NR) {
            int64_t nr = N - j0 < NR ? N - j0 : NR;
            for (int64_t k = 0; k < kc; k++)
                for (int64_t j = 0; j < NR; j++)
                    panel[k * NR + j] = j >= nr ? 0.0f
                                        : b_transposed ? B[(j0 + j) * ldb + k0 + k]
                                                       : B[(k0 + k) * ldb + j0 + j];
            for (int64_t i0 = 0; i0 < M; i0 += MR) {
                int64_t mr = M - i0 < MR ? M - i0 : MR;
                const float *rows[MR];
                for (int i = 0; i < MR; i++) rows[i] = i < mr ? A + (i0 + i) * lda + k0 : zeros;
                tile(acc, rows, panel, kc);
                for (int64_t i = 0; i < mr; i++) {
                    float *c = C + (i0 + i) * ldc + j0;
                    if (scale == 0)
                        for (int64_t j = 0; j < nr; j++) c[j] = acc[i][j];
                    else
                        for (int64_t j = 0; j < nr; j++) c[j] = scale * c[j] + acc[i][j];
                }
            }
        }
    }
}
