/* Causal depthwise conv1d over time, fused with the activation, the padding mask and the
 * conv-state update. Time is the outer loop and channels the inner one, so every input row is
 * read with unit stride and the tap loop vectorises across channels. */
#include <string.h>

#include "dtype.h"
#include "kernels.h"
#include "simd.h"

/* Channels handled per task: enough to vectorise, few enough to spread over the cores. */
enum { CONV_BLOCK = 256, CONV_MAX_K = 16 };

/* The bias of channels [c0, c0 + n) as float32, zeros when there is none. */
static void bias_slice(float *row, m2c_tensor bias, int64_t c0, int64_t n) {
    if (bias.data)
        m2c_widen(row, bias, (size_t)c0, (size_t)n);
    else
        memset(row, 0, sizeof(float) * n);
}

/* One batch row, channels [c0, c0 + n). */
static M2C_VECTORIZE void conv_block(float *out, float *state, int has_state, const float *in,
                                     int64_t ldin, m2c_tensor w, m2c_tensor bias,
                                     const float *mask, int64_t T, int64_t C, int64_t K,
                                     int silu, int64_t c0, int64_t n) {
    float taps[CONV_MAX_K][CONV_BLOCK], bias_row[CONV_BLOCK];
    for (int64_t c = 0; c < n; c++)
        for (int64_t k = 0; k < K; k++) taps[k][c] = m2c_load(w, (size_t)(c0 + c) * K + k);
    bias_slice(bias_row, bias, c0, n);
    for (int64_t t = 0; t < T; t++) {
        float acc[CONV_BLOCK];
        for (int64_t c = 0; c < n; c++) acc[c] = bias_row[c];
        for (int64_t k = 0; k < K; k++) {
            int64_t src = t - (K - 1) + k; /* time of the input under tap k */
            if (src >= 0) {
                const float *row = in + src * ldin;
                for (int64_t c = 0; c < n; c++) acc[c] += taps[k][c] * row[c];
            } else if (has_state) { /* state[c, K + src] holds the input at time src */
                for (int64_t c = 0; c < n; c++) acc[c] += taps[k][c] * state[c * K + K + src];
            }
        }
        float m = mask ? mask[t] : 1.0f;
        if (silu) {
#pragma omp simd
            for (int64_t c = 0; c < n; c++) out[t * C + c] = m2c_silu(acc[c]) * m;
        } else
            for (int64_t c = 0; c < n; c++) out[t * C + c] = acc[c] * m;
    }
    if (state) /* keep the last K inputs; ascending k only reads entries not yet written */
        for (int64_t c = 0; c < n; c++)
            for (int64_t k = 0; k < K; k++) {
                int64_t src = T - K + k;
                state[c * K + k] = src >= 0 ? in[src * ldin + c]
                                   : has_state ? state[c * K + K + src] : 0.0f;
            }
}

/* One token (decode) of channels [c0, c0 + n). The state is [channel, tap], so shifting every
 * channel's window by one is a single move of the block; the new inputs then fill each window's
 * last tap, and the taps' products are a flat, vectorised loop with the weights widened first. */
static M2C_VECTORIZE void conv_step(float *out, float *state, int has_state, const float *in,
                                    m2c_tensor w, m2c_tensor bias, float m, int64_t K, int silu,
                                    int64_t c0, int64_t n) {
    float taps[CONV_BLOCK * CONV_MAX_K], bias_row[CONV_BLOCK];
    m2c_widen(taps, w, (size_t)c0 * K, (size_t)(n * K));
    bias_slice(bias_row, bias, c0, n);
    if (has_state) /* each window's oldest input drops out; its last slot is rewritten below */
        memmove(state, state + 1, sizeof(float) * (n * K - 1));
    else
        memset(state, 0, sizeof(float) * n * K);
    for (int64_t c = 0; c < n; c++) state[c * K + K - 1] = in[c];
    for (int64_t c = 0; c < n; c++) {
        float acc = bias_row[c];
        for (int64_t k = 0; k < K; k++) acc += taps[c * K + k] * state[c * K + k];
        out[c] = acc;
    }
    if (silu) {
#pragma omp simd
        for (int64_t c = 0; c < n; c++) out[c] = m2c_silu(out[c]) * m;
    } else
        for (int64_t c = 0; c < n; c++) out[c] *= m;
}

void m2c_conv1d(float *out, float *state, int has_state, const float *in, int64_t ldin,
                m2c_tensor w, m2c_tensor bias, const float *mask, int64_t B, int64_t T, int64_t C,
                int64_t K, int silu) {
    if (T == 0 && !state) return; /* no outputs and no state, however many rows: nothing to do */
    int64_t blocks = (C + CONV_BLOCK - 1) / CONV_BLOCK;
    /* even one token's conv is worth both cores: serial, it would take long enough for the other
     * thread to fall asleep before the state update needs it */
#pragma omp parallel for collapse(2) schedule(static) if (B * T * C * K > 4096)
    for (int64_t b = 0; b < B; b++)
        for (int64_t blk = 0; blk < blocks; blk++) {
            int64_t c0 = blk * CONV_BLOCK, n = (c0 + CONV_BLOCK < C ? c0 + CONV_BLOCK : C) - c0;
            if (T == 1 && state) {
                conv_step(out + b * C + c0, state + (b * C + c0) * K, has_state,
                          in + b * ldin + c0, w, bias, mask ? mask[b] : 1.0f, K, silu, c0, n);
                continue;
            }
            conv_block(out + b * T * C + c0, state ? state + (b * C + c0) * K : NULL, has_state,
                       in + b * T * ldin + c0, ldin, w, bias, mask ? mask + b * T : NULL, T, C,
                       K, silu, c0, n);
        }
}
