/* Linear layers, out = x W^T + bias, by shape:
 *  - a few rows (decode): a GEMV that streams each weight row once, widening 16-bit weights in
 *    registers, so the cost is the bytes of W and nothing else;
 *  - many rows (prefill): OpenBLAS sgemm when the build has it (16-bit weights widened block by
 *    block into a float32 buffer first), else the built-in register-blocked GEMM over threads. */
#include <stdlib.h>

#include "../model/status.h"
#include "dtype.h"
#include "kernels.h"
#include "spans.h"

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define M2C_X86 1
#endif

#ifdef M2C_HAVE_OPENBLAS
#include <cblas.h>
static int blas_enabled = 1;
#else
static int blas_enabled = 0;
#endif

void m2c_gemm_use_blas(int enable) {
#ifdef M2C_HAVE_OPENBLAS
    blas_enabled = enable != 0;
#else
    (void)enable;
#endif
}

int m2c_gemm_has_blas(void) { return blas_enabled; }

enum { GEMV_MAX_ROWS = 8, GEMV_MAX_TILE = 4, GEMV_BLOCK = 16, WIDEN_ROWS = 256, BUILTIN_COLS = 64 };

/* How far ahead of its reads a one-row GEMV prefetches (6-9 KB measured best on AVX2 and
 * AVX-512 hosts). With R rows a tile takes R times as long, so the same lead is R times fewer
 * bytes: further ahead, the lines would be evicted from L1, which x's R rows fill, before use. */
enum { GEMV_PREFETCH_BYTES = 8192 };

/* ---- GEMV: R <= GEMV_MAX_ROWS rows against every weight row ----
 * Memory-bound: each weight is loaded once and used for every row. With one row, a tile streams
 * several weight rows at once, two FMA chains each, so that the FMA latency stays hidden: two
 * rows of 16-bit weights (four made bfloat16 decode a sixth slower on the 130m shape) and four
 * of float32 (two made its decode slower). */

static void gemv_generic(float *dots, const float *x, int64_t ldx, int64_t R, m2c_tensor W,
                         int64_t o, int64_t K) {
    for (int64_t r = 0; r < R; r++) dots[r] = 0;
    for (int64_t k = 0; k < K; k++) {
        float w = m2c_load(W, (size_t)o * K + k);
        for (int64_t r = 0; r < R; r++) dots[r] += w * x[r * ldx + k];
    }
}

/* x in the order load16 yields the weights: for bfloat16, each block of sixteen becomes its
 * eight even elements then its eight odd ones; the tail past the last whole block is unused. */
static void split_x(float *split, const float *x, int64_t ldx, int64_t R, int64_t K) {
    for (int64_t r = 0; r < R; r++)
        for (int64_t k = 0; k + 16 <= K; k += 16)
            for (int j = 0; j < 8; j++) {
                split[r * K + k + j] = x[r * ldx + k + 2 * j];
                split[r * K + k + 8 + j] = x[r * ldx + k + 2 * j + 1];
            }
}

#ifdef M2C_X86
#define AVX2 __attribute__((target("avx2,fma,f16c")))
#define INLINE_AVX2 __attribute__((always_inline, target("avx2,fma,f16c"))) static inline

/* Sixteen weights from index i as two vectors of eight floats. float32 and float16 give
 * elements i..i+7 and i+8..i+15. bfloat16 is the high half of a float32, so one 32-byte load
 * holds sixteen of them and two bit operations widen it: a shift gives the even elements, a mask
 * the odd ones. The x rows are laid out to match (split_x), which halves the widening work. */
INLINE_AVX2 void load16(const void *w, m2c_dtype dtype, size_t i, __m256 *a, __m256 *b) {
    if (dtype == M2C_F32) {
        *a = _mm256_loadu_ps((const float *)w + i);
        *b = _mm256_loadu_ps((const float *)w + i + 8);
    } else if (dtype == M2C_F16) {
        const __m128i *h = (const __m128i *)((const uint16_t *)w + i);
        *a = _mm256_cvtph_ps(_mm_loadu_si128(h));
        *b = _mm256_cvtph_ps(_mm_loadu_si128(h + 1));
    } else {
        __m256i v = _mm256_loadu_si256((const __m256i *)((const uint16_t *)w + i));
        *a = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
        *b = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32((int)0xffff0000u)));
    }
}

INLINE_AVX2 float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_hadd_ps(s, s);
    return _mm_cvtss_f32(_mm_hadd_ps(s, s));
}

/* dots[t * R + r] = W[o + t] . x[r] for OT weight rows and R input rows; R, OT and dtype are
 * compile-time constants at every call site, so the accumulators live in registers. xs is x in
 * load16's order (x itself but for bfloat16). The rows are short, too short for the hardware
 * prefetcher to get ahead of interleaved streams, so the tiles GEMV_PREFETCH_BYTES ahead, which
 * follow these in memory, are prefetched here at the rate these are read. */
INLINE_AVX2 void gemv_tile(float *dots, const float *x, const float *xs, int64_t ldx,
                           int64_t ldxs, const int R, const int OT, m2c_tensor W,
                           const m2c_dtype dtype, int64_t o, int64_t K) {
    const size_t size = m2c_dtype_size(dtype);
    const size_t lead = (size_t)OT * K * size * R; /* a tile's bytes, scaled by its R rows */
    const size_t ahead = lead && lead < GEMV_PREFETCH_BYTES ? GEMV_PREFETCH_BYTES / lead : 1;
    const char *next = (const char *)W.data + (size_t)(o + OT * ahead) * K * size;
    __m256 acc[GEMV_MAX_TILE][GEMV_MAX_ROWS], acc2[GEMV_MAX_TILE][GEMV_MAX_ROWS];
    for (int t = 0; t < OT; t++)
        for (int r = 0; r < R; r++) acc[t][r] = acc2[t][r] = _mm256_setzero_ps();
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        for (size_t line = 0; line < OT * 16 * size; line += 64)
            _mm_prefetch(next + (size_t)k * OT * size + line, _MM_HINT_T0);
        __m256 xa[GEMV_MAX_ROWS], xb[GEMV_MAX_ROWS];
        for (int r = 0; r < R; r++) {
            xa[r] = _mm256_loadu_ps(xs + r * ldxs + k);
            xb[r] = _mm256_loadu_ps(xs + r * ldxs + k + 8);
        }
        for (int t = 0; t < OT; t++) {
            __m256 wa, wb;
            load16(W.data, dtype, (size_t)(o + t) * K + k, &wa, &wb);
            for (int r = 0; r < R; r++) {
                acc[t][r] = _mm256_fmadd_ps(wa, xa[r], acc[t][r]);
                if (R <= 2) /* few chains: give each a second one; more would spill */
                    acc2[t][r] = _mm256_fmadd_ps(wb, xb[r], acc2[t][r]);
                else
                    acc[t][r] = _mm256_fmadd_ps(wb, xb[r], acc[t][r]);
            }
        }
    }
    for (int t = 0; t < OT; t++)
        for (int r = 0; r < R; r++) {
            float d = hsum(_mm256_add_ps(acc[t][r], acc2[t][r]));
            for (int64_t kk = k; kk < K; kk++)
                d += m2c_load(W, (size_t)(o + t) * K + kk) * x[r * ldx + kk];
            dots[t * R + r] = d;
        }
}

#define GEMV_CASE(R_, OT_)                                                       \
    case R_:                                                                     \
        if (OT >= (OT_)) {                                                       \
            gemv_tile(dots, x, xs, ldx, ldxs, R_, (OT_), W, dtype, o, K);        \
            return (OT_);                                                        \
        }                                                                        \
        gemv_tile(dots, x, xs, ldx, ldxs, R_, 1, W, dtype, o, K);                \
        return 1;

/* Computes as many of the OT rows from o as one tile does; returns how many. */
INLINE_AVX2 int gemv_dtype(float *dots, const float *x, const float *xs, int64_t ldx,
                           int64_t ldxs, int64_t R, m2c_tensor W, const m2c_dtype dtype, int64_t o,
                           int64_t OT, int64_t K) {
    switch (R) {
        GEMV_CASE(1, dtype == M2C_F32 ? 4 : 2)
        GEMV_CASE(2, 2)
        GEMV_CASE(3, 1)
        GEMV_CASE(4, 1)
        GEMV_CASE(5, 1)
        GEMV_CASE(6, 1)
        GEMV_CASE(7, 1)
        default: gemv_tile(dots, x, xs, ldx, ldxs, GEMV_MAX_ROWS, 1, W, dtype, o, K); return 1;
    }
}

AVX2 static int gemv_avx2(float *dots, const float *x, const float *xs, int64_t ldx,
                          int64_t ldxs, int64_t R, m2c_tensor W, int64_t o, int64_t OT, int64_t K) {
    switch (W.dtype) {
    case M2C_BF16: return gemv_dtype(dots, x, xs, ldx, ldxs, R, W, M2C_BF16, o, OT, K);
    case M2C_F16: return gemv_dtype(dots, x, xs, ldx, ldxs, R, W, M2C_F16, o, OT, K);
    default: return gemv_dtype(dots, x, xs, ldx, ldxs, R, W, M2C_F32, o, OT, K);
    }
}
#endif

static m2c_status linear_gemv(float *out, int64_t ldo, const float *x, int64_t ldx, m2c_tensor W,
                              int64_t R, int64_t K, int64_t O, int accumulate) {
#ifdef M2C_X86
    const int vector = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                       __builtin_cpu_supports("f16c");
#else
    const int vector = 0;
#endif
    const float *xs = x;
    int64_t ldxs = ldx;
    float *split = NULL;
    if (vector && W.dtype == M2C_BF16 && K >= 16) {
        split = malloc(sizeof(float) * R * K);
        if (!split) return m2c_fail(M2C_ERR_MEMORY, "out of memory for a GEMV's input rows");
        split_x(split, x, ldx, R, K);
        xs = split;
        ldxs = K;
    }
    m2c_spans spans;
    m2c_spans_init(&spans, (O + GEMV_BLOCK - 1) / GEMV_BLOCK);
#pragma omp parallel if (O * K > 32768)
    for (int64_t b; (b = m2c_spans_next(&spans)) >= 0;) {
        int64_t o0 = b * GEMV_BLOCK, end = o0 + GEMV_BLOCK < O ? o0 + GEMV_BLOCK : O;
        for (int64_t o = o0; o < end;) {
            float dots[GEMV_MAX_TILE * GEMV_MAX_ROWS];
            int done = 1;
#ifdef M2C_X86
            if (vector)
                done = gemv_avx2(dots, x, xs, ldx, ldxs, R, W, o, end - o, K);
            else
#endif
                gemv_generic(dots, x, ldx, R, W, o, K);
            for (int t = 0; t < done; t++)
                for (int64_t r = 0; r < R; r++)
                    out[r * ldo + o + t] = accumulate ? out[r * ldo + o + t] + dots[t * R + r]
                                                      : dots[t * R + r];
            o += done;
        }
    }
    free(split);
    (void)xs;
    (void)ldxs;
    return M2C_OK;
}

/* ---- GEMM ---- */

#ifdef M2C_HAVE_OPENBLAS
static m2c_status linear_blas(float *out, int64_t ldo, const float *x, int64_t ldx, m2c_tensor W,
                              int64_t R, int64_t K, int64_t O, int accumulate) {
    float beta = accumulate ? 1.0f : 0.0f;
    if (W.dtype == M2C_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)O, (int)K, 1.0f, x,
                    (int)ldx, (const float *)W.data, (int)K, beta, out, (int)ldo);
        return M2C_OK;
    }
    int64_t rows = O < WIDEN_ROWS ? O : WIDEN_ROWS;
    float *wide = malloc(sizeof(float) * rows * K);
    if (!wide) return m2c_fail(M2C_ERR_MEMORY, "out of memory widening a %lld x %lld weight block",
                               (long long)rows, (long long)K);
    for (int64_t o0 = 0; o0 < O; o0 += rows) {
        int64_t n = O - o0 < rows ? O - o0 : rows;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) m2c_widen(wide + i * K, W, (size_t)(o0 + i) * K, K);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)n, (int)K, 1.0f, x,
                    (int)ldx, wide, (int)K, beta, out + o0, (int)ldo);
    }
    free(wide);
    return M2C_OK;
}
#endif

static m2c_status linear_builtin(float *out, int64_t ldo, const float *x, int64_t ldx,
                                 m2c_tensor W, int64_t R, int64_t K, int64_t O, int accumulate) {
    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        float *wide = W.dtype == M2C_F32 ? NULL : malloc(sizeof(float) * BUILTIN_COLS * K);
        if (W.dtype != M2C_F32 && !wide) failed = 1;
#pragma omp for schedule(dynamic)
        for (int64_t o0 = 0; o0 < O; o0 += BUILTIN_COLS) {
            if (failed) continue;
            int64_t n = O - o0 < BUILTIN_COLS ? O - o0 : BUILTIN_COLS;
            const float *block = (const float *)W.data + o0 * K;
            if (wide) {
                m2c_widen(wide, W, (size_t)o0 * K, (size_t)n * K);
                block = wide;
            }
            m2c_sgemm_serial(R, n, K, x, ldx, block, K, 1, accumulate ? 1.0f : 0.0f, out + o0, ldo);
        }
        free(wide);
    }
    return failed ? m2c_fail(M2C_ERR_MEMORY, "out of memory widening weights for a GEMM") : M2C_OK;
}

m2c_status m2c_linear(float *out, int64_t ldo, const float *x, int64_t ldx, m2c_tensor W,
                      m2c_tensor bias, int64_t R, int64_t K, int64_t O, int accumulate) {
    m2c_status st = M2C_OK;
    if (R <= 0) return M2C_OK; /* no rows: the GEMV tiles would still read GEMV_MAX_ROWS of x */
    if (R <= GEMV_MAX_ROWS)
        st = linear_gemv(out, ldo, x, ldx, W, R, K, O, accumulate);
#ifdef M2C_HAVE_OPENBLAS
    else if (blas_enabled)
        st = linear_blas(out, ldo, x, ldx, W, R, K, O, accumulate);
#endif
    else
        st = linear_builtin(out, ldo, x, ldx, W, R, K, O, accumulate);
    if (st != M2C_OK || !bias.data) return st;
#pragma omp parallel for schedule(static) if (R * O > 65536)
    for (int64_t r = 0; r < R; r++)
        for (int64_t o = 0; o < O; o++) out[r * ldo + o] += m2c_load(bias, o);
    return M2C_OK;
}
