/* Backward of the causal depthwise conv1d + SiLU + row mask. The pre-activation is recomputed
 * (cheaper than storing it), then each output row scatters its gradient onto the K input rows
 * it read. Tasks own blocks of channels across every batch row and time step, so the weight and
 * bias gradients are summed by one thread in a fixed order (deterministic for any number of
 * threads) and no two tasks write the same input gradient. */
#include <string.h>

#include "../model/status.h"
#include "activations.h"
#include "backward.h"
#include "dtype.h"
#include "simd.h"

/* Channels per task: small, so that the few thousand channels of a layer spread over the cores. */
enum { CONV_BWD_BLOCK = 64, CONV_BWD_MAX_K = 16 };

typedef struct {
    float *din, *dstate;
    int64_t lddin, ldin, B, T, C, K;
    const float *dout, *in, *state, *mask;
    int silu;
} conv_bwd;

/* Channels [c0, c0 + n) of every batch row. */
static M2C_VECTORIZE void conv_block_backward(const conv_bwd *a, float *dw, float *dbias,
                                              m2c_tensor w, m2c_tensor bias, int64_t c0,
                                              int64_t n) {
    const int64_t T = a->T, C = a->C, K = a->K;
    float taps[CONV_BWD_MAX_K][CONV_BWD_BLOCK], bias_row[CONV_BWD_BLOCK];
    double dw_acc[CONV_BWD_MAX_K][CONV_BWD_BLOCK], db_acc[CONV_BWD_BLOCK];
    for (int64_t c = 0; c < n; c++) {
        for (int64_t k = 0; k < K; k++) {
            taps[k][c] = m2c_load(w, (size_t)(c0 + c) * K + k);
            dw_acc[k][c] = 0;
        }
        bias_row[c] = bias.data ? m2c_load(bias, c0 + c) : 0.0f;
        db_acc[c] = 0;
    }
    /* Without time steps a batch row only zeroes its state gradient: without one, there is
     * nothing to do however many rows there are. */
    const int64_t B = T > 0 || a->dstate ? a->B : 0;
    for (int64_t b = 0; b < B; b++) {
        const float *in = a->in + b * T * a->ldin + c0;
        const float *state = a->state ? a->state + (b * C + c0) * K : NULL;
        float *din = a->din + b * T * a->lddin + c0;
        float *dstate = a->dstate ? a->dstate + (b * C + c0) * K : NULL;
        for (int64_t t = 0; t < T; t++) memset(din + t * a->lddin, 0, sizeof(float) * n);
        if (dstate)
            for (int64_t c = 0; c < n * K; c++) dstate[c] = 0.0f;
        for (int64_t t = 0; t < T; t++) {
            float m = a->mask ? a->mask[b * T + t] : 1.0f;
            if (m == 0.0f) continue; /* a masked row passes no gradient back */
            const float *dout = a->dout + (b * T + t) * C + c0;
            float dpre[CONV_BWD_BLOCK];
            if (a->silu) {
                float pre[CONV_BWD_BLOCK];
                for (int64_t c = 0; c < n; c++) pre[c] = bias_row[c];
                for (int64_t k = 0; k < K; k++) {
                    int64_t src = t - (K - 1) + k; /* time of the input under tap k */
                    if (src >= 0) {
                        const float *row = in + src * a->ldin;
                        for (int64_t c = 0; c < n; c++) pre[c] += taps[k][c] * row[c];
                    } else if (state) { /* state[c, K + src] holds the input at time src */
                        for (int64_t c = 0; c < n; c++)
                            pre[c] += taps[k][c] * state[c * K + K + src];
                    }
                }
                for (int64_t c = 0; c < n; c++) dpre[c] = dout[c] * m * m2c_silu_grad(pre[c]);
            } else {
                for (int64_t c = 0; c < n; c++) dpre[c] = dout[c] * m;
            }
            for (int64_t c = 0; c < n; c++) db_acc[c] += dpre[c];
            for (int64_t k = 0; k < K; k++) {
                int64_t src = t - (K - 1) + k;
                if (src >= 0) {
                    const float *row = in + src * a->ldin;
                    float *drow = din + src * a->lddin;
                    for (int64_t c = 0; c < n; c++) {
                        drow[c] += taps[k][c] * dpre[c];
                        dw_acc[k][c] += (double)(dpre[c] * row[c]);
                    }
                } else {
                    for (int64_t c = 0; c < n; c++) {
                        if (dstate) dstate[c * K + K + src] += taps[k][c] * dpre[c];
                        if (state) dw_acc[k][c] += (double)(dpre[c] * state[c * K + K + src]);
                    }
                }
            }
        }
    }
    for (int64_t c = 0; c < n; c++) {
        for (int64_t k = 0; k < K; k++) dw[(c0 + c) * K + k] = (float)dw_acc[k][c];
        if (dbias) dbias[c0 + c] = (float)db_acc[c];
    }
}

m2c_status m2c_conv1d_backward(float *din, int64_t lddin, float *dw, float *dbias, float *dstate,
                               const float *dout, const float *in, int64_t ldin,
                               const float *state, m2c_tensor w, m2c_tensor bias,
                               const float *mask, int64_t B, int64_t T, int64_t C, int64_t K,
                               int silu) {
    if (K < 1 || K > CONV_BWD_MAX_K)
        return m2c_fail(M2C_ERR_VALUE, "conv1d backward: kernel width %lld is not in [1, %d]",
                        (long long)K, CONV_BWD_MAX_K);
    conv_bwd a = {.din = din, .dstate = dstate, .lddin = lddin, .ldin = ldin, .B = B, .T = T,
                  .C = C, .K = K, .dout = dout, .in = in, .state = state, .mask = mask,
                  .silu = silu};
    int64_t blocks = (C + CONV_BWD_BLOCK - 1) / CONV_BWD_BLOCK;
#pragma omp parallel for schedule(dynamic)
    for (int64_t blk = 0; blk < blocks; blk++) {
        int64_t c0 = blk * CONV_BWD_BLOCK;
        int64_t n = (c0 + CONV_BWD_BLOCK < C ? c0 + CONV_BWD_BLOCK : C) - c0;
        conv_block_backward(&a, dw, dbias, w, bias, c0, n);
    }
    return M2C_OK;
}
