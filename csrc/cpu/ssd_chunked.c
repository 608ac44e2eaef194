/* Chunked SSD on the CPU. Within a chunk of Q tokens the scan is a masked "attention" product,
 * across chunks a P x N state is carried:
 *   Y_diag = (C B^T o L o dt) X        L[l, s] = exp(cs_l - cs_s), s <= l, cs = cumsum(dt A)
 *   Y_off  = diag(exp(cs)) C S^T       S = state entering the chunk
 *   S'     = exp(cs_last) S + (X o exp(cs_last - cs) dt)^T B
 * C B^T is shared by the H/G heads of a group, so it is computed once per (row, chunk, group)
 * before the per-head pass (ssd_common.h, shared with the backward). */
#include <stdlib.h>
#include <string.h>

#include "../model/status.h"
#include "kernels.h"
#include "simd.h"
#include "ssd_common.h"

/* Rows of the in-chunk product computed together; a multiple of the GEMM's 6-row tile. */
enum { DIAG_ROWS = 18 };

size_t m2c_ssd_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                           int64_t Q) {
    (void)H, (void)P, (void)N;
    int64_t chunks = (T + Q - 1) / Q, q = T < Q ? T : Q;
    return (size_t)(B * chunks * G) * (size_t)(q * q);
}

/* The decays of one chunk, from cs = cumsum(dt A) and the chunk's dt:
 *   M[l, s] = CB[l, s] exp(cs_l - cs_s) dt_s (s <= l; 0 above the diagonal),
 *   into_state[s] = exp(cs_last - cs_s) dt_s,   from_state[l] = exp(cs_l). */
static M2C_VECTORIZE void chunk_decays(float *M, float *into_state, float *from_state,
                                       const float *CB, int64_t ld, const double *cs,
                                       const float *dt, int64_t q) {
    for (int64_t l = 0; l < q; l++) {
#pragma omp simd
        for (int64_t s = 0; s <= l; s++)
            M[l * ld + s] = CB[l * ld + s] * m2c_expf((float)(cs[l] - cs[s])) * dt[s];
        for (int64_t s = l + 1; s < q; s++) M[l * ld + s] = 0.0f;
    }
#pragma omp simd
    for (int64_t s = 0; s < q; s++) {
        into_state[s] = m2c_expf((float)(cs[q - 1] - cs[s])) * dt[s];
        from_state[s] = m2c_expf((float)cs[s]);
    }
}

m2c_status m2c_ssd_chunked(float *y, float *state, int has_state, const float *x, const float *Bm,
                     const float *Cm, int64_t ldx, const float *dt, const float *A, const float *D,
                     int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G, int64_t Q,
                     float *work) {
    const int64_t chunks = (T + Q - 1) / Q, Qc = T < Q ? T : Q, HP = H * P, heads_per_group = H / G;
    float *CB = work; /* [B, chunks, G, Qc, Qc] */
    m2c_ssd_chunk_cb(CB, Bm, Cm, ldx, B, T, N, G, Q);

    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        /* per-thread scratch, one chunk's worth */
        float *M = malloc(sizeof(float) * (Qc * Qc + 2 * P * Qc + 3 * Qc));
        double *cs = malloc(sizeof(double) * Qc);
        float *xs_t = M ? M + Qc * Qc : NULL, *off = M ? xs_t + P * Qc : NULL;
        float *dts = M ? off + P * Qc : NULL, *into_state = dts + Qc, *from_state = into_state + Qc;
        failed = !M || !cs;
#pragma omp for collapse(2) schedule(static)
        for (int64_t b = 0; b < B; b++)
            for (int64_t h = 0; h < H; h++) {
                if (failed) continue;
                const int64_t g = h / heads_per_group;
                float *S = state + (b * H + h) * P * N;
                if (!has_state) memset(S, 0, sizeof(float) * P * N);
                for (int64_t c = 0; c < chunks; c++) {
                    const int64_t t0 = c * Q, q = T - t0 < Q ? T - t0 : Q;
                    const float *dtc = dt + (b * T + t0) * H + h;
                    const float *xc = x + (b * T + t0) * ldx + h * P;
                    const float *Bc = Bm + (b * T + t0) * ldx + g * N;
                    const float *Cc = Cm + (b * T + t0) * ldx + g * N;
                    const float *CBc = CB + ((b * chunks + c) * G + g) * Qc * Qc;
                    float *yc = y + (b * T + t0) * HP + h * P;

                    m2c_ssd_chunk_cumsum(cs, dts, dtc, H, A[h], q);
                    chunk_decays(M, into_state, from_state, CBc, Qc, cs, dts, q);
                    /* M is lower-triangular: each block of rows only needs the tokens up to
                     * its last row */
                    for (int64_t r0 = 0; r0 < q; r0 += DIAG_ROWS) {
                        int64_t rows = q - r0 < DIAG_ROWS ? q - r0 : DIAG_ROWS;
                        m2c_sgemm_serial(rows, P, r0 + rows, M + r0 * Qc, Qc, xc, ldx, 0, 0.0f,
                                         yc + r0 * HP, HP);
                    }
                    m2c_sgemm_serial(q, P, N, Cc, ldx, S, N, 1, 0.0f, off, P);
                    for (int64_t l = 0; l < q; l++)
                        for (int64_t p = 0; p < P; p++)
                            yc[l * HP + p] += from_state[l] * off[l * P + p] + D[h] * xc[l * ldx + p];
                    for (int64_t s = 0; s < q; s++)
                        for (int64_t p = 0; p < P; p++)
                            xs_t[p * Qc + s] = xc[s * ldx + p] * into_state[s];
                    m2c_sgemm_serial(P, N, q, xs_t, Qc, Bc, ldx, 0, from_state[q - 1], S, N);
                }
            }
        free(M);
        free(cs);
    }
    return failed ? m2c_fail(M2C_ERR_MEMORY, "out of memory for the SSD's per-thread scratch")
                  : M2C_OK;
}
