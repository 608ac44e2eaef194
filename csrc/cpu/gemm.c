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

/* B[k0.., j0..] as a [kc, NR] panel, zero past column N. */
static inline void pack_panel(float *panel, const float *B, int64_t ldb, int b_transposed,
                              int64_t k0, int64_t kc, int64_t j0, int64_t nr) {
    if (b_transposed) { /* row j of B is column j of the product: read it contiguously */
        for (int64_t j = 0; j < NR; j++)
            for (int64_t k = 0; k < kc; k++)
                panel[k * NR + j] = j < nr ? B[(j0 + j) * ldb + k0 + k] : 0.0f;
    } else if (nr == NR) { /* whole rows of the panel: plain copies */
        for (int64_t k = 0; k < kc; k++)
            memcpy(panel + k * NR, B + (k0 + k) * ldb + j0, sizeof(float) * NR);
    } else {
        for (int64_t k = 0; k < kc; k++)
            for (int64_t j = 0; j < NR; j++)
                panel[k * NR + j] = j < nr ? B[(k0 + k) * ldb + j0 + j] : 0.0f;
    }
}

/* C[i, j] = scale * C[i, j] + acc[i][j] over an mr x nr corner (scale 0: C is not read). */
static inline void store_tile(float *C, int64_t ldc, float acc[MR][NR], int64_t mr, int64_t nr,
                              float scale) {
    for (int64_t i = 0; i < mr; i++)
        for (int64_t j = 0; j < nr; j++)
            C[i * ldc + j] = scale == 0 ? acc[i][j] : scale * C[i * ldc + j] + acc[i][j];
}

/* The loop nest shared by both kernels: K in blocks of KC, B packed NR columns at a time, each
 * panel used by every MR-row tile of A; `tile` computes one tile into C. */
#define SGEMM_LOOPS(tile)                                                                      \
    for (int64_t k0 = 0; k0 < K; k0 += KC) {                                                   \
        const int64_t kc = K - k0 < KC ? K - k0 : KC;                                          \
        const float scale = k0 == 0 ? beta : 1.0f; /* later K blocks add to the first's */     \
        for (int64_t j0 = 0; j0 < N; j0 += NR) {                                               \
            const int64_t nr = N - j0 < NR ? N - j0 : NR;                                      \
            pack_panel(panel, B, ldb, b_transposed, k0, kc, j0, nr);                           \
            for (int64_t i0 = 0; i0 < M; i0 += MR) {                                           \
                const int64_t mr = M - i0 < MR ? M - i0 : MR;                                  \
                tile(C + i0 * ldc + j0, ldc, A + i0 * lda + k0, lda, mr, nr, panel, kc, scale); \
            }                                                                                  \
        }                                                                                      \
    }

static void tile_generic(float *C, int64_t ldc, const float *A, int64_t lda, int64_t mr,
                         int64_t nr, const float *panel, int64_t kc, float scale) {
    float acc[MR][NR] = {{0}};
    for (int64_t k = 0; k < kc; k++)
        for (int64_t i = 0; i < mr; i++) {
            float av = A[i * lda + k];
            for (int j = 0; j < NR; j++) acc[i][j] += av * panel[k * NR + j];
        }
    store_tile(C, ldc, acc, mr, nr, scale);
}

static void sgemm_generic(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                          const float *B, int64_t ldb, int b_transposed, float beta, float *C,
                          int64_t ldc) {
    float panel[KC * NR];
    SGEMM_LOOPS(tile_generic)
}

#ifdef M2C_X86
#define INLINE_AVX2 __attribute__((always_inline, target("avx2,fma"))) static inline

/* One MR x NR tile in twelve registers; a whole tile is written straight to C, a corner goes
 * through a buffer. Rows of A past mr repeat the last row, so the loop has no branches. */
INLINE_AVX2 void tile_avx2(float *C, int64_t ldc, const float *A, int64_t lda, int64_t mr,
                           int64_t nr, const float *panel, int64_t kc, float scale) {
    const float *a[MR];
    for (int i = 0; i < MR; i++) a[i] = A + (i < mr ? i : mr - 1) * lda;
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
    if (mr == MR && nr == NR) {
        const __m256 s = _mm256_set1_ps(scale);
        for (int i = 0; i < MR; i++)
            for (int h = 0; h < 2; h++) {
                float *out = C + i * ldc + 8 * h;
                __m256 v = scale == 0 ? c[i][h] : _mm256_fmadd_ps(s, _mm256_loadu_ps(out), c[i][h]);
                _mm256_storeu_ps(out, v);
            }
        return;
    }
    float acc[MR][NR];
    for (int i = 0; i < MR; i++) {
        _mm256_storeu_ps(acc[i], c[i][0]);
        _mm256_storeu_ps(acc[i] + 8, c[i][1]);
    }
    store_tile(C, ldc, acc, mr, nr, scale);
}

__attribute__((target("avx2,fma"))) static void
sgemm_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
           int64_t ldb, int b_transposed, float beta, float *C, int64_t ldc) {
    float panel[KC * NR];
    SGEMM_LOOPS(tile_avx2)
}
#endif

void m2c_sgemm_serial(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                      int64_t ldb, int b_transposed, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K == 0) { /* nothing to multiply: C = beta * C */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
        return;
    }
#ifdef M2C_X86
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        sgemm_avx2(M, N, K, A, lda, B, ldb, b_transposed, beta, C, ldc);
        return;
    }
#endif
    sgemm_generic(M, N, K, A, lda, B, ldb, b_transposed, beta, C, ldc);
}
