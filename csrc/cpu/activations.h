/* Scalar activations and their derivatives, shared by the forward and backward kernels. */
#ifndef M2C_ACTIVATIONS_H
#define M2C_ACTIVATIONS_H

#include <math.h>

#include "simd.h"

/* softplus with torch's threshold: above 20 the input is returned as is. */
static inline float m2c_softplus(float v) { return v > 20.0f ? v : log1pf(expf(v)); }

/* d softplus / dv with the same threshold (torch returns exactly 1 above it). */
static inline float m2c_softplus_grad(float v) {
    return v > 20.0f ? 1.0f : 1.0f / (1.0f + m2c_expf(-v));
}

/* d silu / dv = sigmoid(v) * (1 + v * (1 - sigmoid(v))). */
static inline float m2c_silu_grad(float v) {
    float s = 1.0f / (1.0f + m2c_expf(-v));
    return s * (1.0f + v * (1.0f - s));
}

#endif
