/* Vectorisation helpers. Element-wise loops are written in plain C and compiled twice, for
 * AVX2/FMA (x86-64-v3) and for the baseline, the right copy picked at load time; the exp below
 * uses only arithmetic and bit moves so those loops vectorise with it inlined. */
#ifndef M2C_SIMD_H
#define M2C_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__linux__)
#define M2C_VECTORIZE __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define M2C_VECTORIZE
#endif

/* exp(x) to ~1 ulp over the float range (Cody-Waite reduction, degree-6 polynomial); NaN in,
 * NaN out; underflows to the smallest normal rather than to zero. */
static inline float m2c_expf(float x) {
    const float round = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    /* NaN takes the low branch, so the integer conversion below stays defined; it is put back
     * at the end */
    float clamped = x >= -87.3f ? (x <= 88.7f ? x : 88.7f) : -87.3f;
    float n = (clamped * 1.44269504f + round) - round;
    float r = clamped - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    float y = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x != x ? x : y * scale;
}

static inline float m2c_silu(float x) { return x / (1.0f + m2c_expf(-x)); }

#endif
