/* Pieces of the chunked SSD shared by its forward and backward passes. */
#ifndef M2C_SSD_COMMON_H
#define M2C_SSD_COMMON_H

#include "kernels.h"

/* CB[b, c, g] = C_chunk B_chunk^T for every batch row, chunk and group: the [q, q] products
 * shared by the H/G heads of a group. Bm, Cm [B, T, G*N] row stride ldx; CB [B, chunks, G, Qc,
 * Qc] with Qc = min(T, Q) (a last partial chunk fills its top-left corner). */
static inline void m2c_ssd_chunk_cb(float *CB, const float *Bm, const float *Cm, int64_t ldx,
                                    int64_t B, int64_t T, int64_t N, int64_t G, int64_t Q) {
    const int64_t chunks = (T + Q - 1) / Q, Qc = T < Q ? T : Q;
#pragma omp parallel for collapse(3) schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < chunks; c++)
            for (int64_t g = 0; g < G; g++) {
                int64_t t0 = c * Q, q = T - t0 < Q ? T - t0 : Q;
                m2c_sgemm_serial(q, q, N, Cm + (b * T + t0) * ldx + g * N, ldx,
                                 Bm + (b * T + t0) * ldx + g * N, ldx, 1, 0.0f,
                                 CB + ((b * chunks + c) * G + g) * Qc * Qc, Qc);
            }
}

/* Cumulative log-decay of one chunk in double (differences of long float32 cumsums lose the
 * small values that matter once exponentiated); dts[l] = dt of token l, read with stride H. */
static inline void m2c_ssd_chunk_cumsum(double *cs, float *dts, const float *dtc, int64_t H,
                                        float A, int64_t q) {
    double sum = 0;
    for (int64_t l = 0; l < q; l++) {
        dts[l] = dtc[l * H];
        cs[l] = sum += (double)dts[l] * A;
    }
}

#endif
