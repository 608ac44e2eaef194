/* Widening 16-bit weights to float32 as kernels load them (no float32 copy of a checkpoint). */
#ifndef M2C_DTYPE_H
#define M2C_DTYPE_H

#include <stdint.h>
#include <string.h>

#include "mamba2c.h"

static inline float m2c_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* IEEE half to float, subnormals and inf/NaN included; F16C is used instead where it pays. */
static inline float m2c_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exponent = (h >> 10) & 0x1f;
    uint32_t mantissa = h & 0x3ff;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;
    } else { /* subnormal: renormalise */
        exponent = 113;
        while (!(mantissa & 0x400)) {
            mantissa <<= 1;
            exponent--;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ff) << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float m2c_load(m2c_tensor t, size_t i) {
    switch (t.dtype) {
    case M2C_BF16: return m2c_bf16_to_f32(((const uint16_t *)t.data)[i]);
    case M2C_F16: return m2c_f16_to_f32(((const uint16_t *)t.data)[i]);
    default: return ((const float *)t.data)[i];
    }
}

/* dst[0..n) = float32 of t[offset .. offset+n) */
void m2c_widen(float *dst, m2c_tensor t, size_t offset, size_t n);

#endif
