#include "dtype.h"

#include <immintrin.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define M2C_X86 1
#endif

#ifdef M2C_X86
__attribute__((target("avx2,f16c"))) static void widen_f16_f16c(float *dst, const uint16_t *src,
                                                                size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++) dst[i] = m2c_f16_to_f32(src[i]);
}
#endif

void m2c_widen(float *dst, m2c_tensor t, size_t offset, size_t n) {
    if (t.dtype == M2C_F32) {
        memcpy(dst, (const float *)t.data + offset, n * sizeof(float));
    } else if (t.dtype == M2C_BF16) {
        const uint16_t *src = (const uint16_t *)t.data + offset;
        uint32_t *out = (uint32_t *)dst; /* a shift is the whole conversion: vectorises as is */
        for (size_t i = 0; i < n; i++) out[i] = (uint32_t)src[i] << 16;
    } else {
        const uint16_t *src = (const uint16_t *)t.data + offset;
#ifdef M2C_X86
        if (__builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2")) {
            widen_f16_f16c(dst, src, n);
            return;
        }
#endif
        for (size_t i = 0; i < n; i++) dst[i] = m2c_f16_to_f32(src[i]);
    }
}
