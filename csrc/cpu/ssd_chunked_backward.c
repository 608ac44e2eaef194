/* Backward of the chunked SSD. Per (row, head) the states entering each chunk are recomputed
 * with a forward sweep, then the chunks are walked in reverse carrying dS, the gradient of the
 * state leaving the chunk. With xd_s = dt_s x_s, cs = cumsum(dt A), L[l, s] = exp(cs_l - cs_s):
 *   y_l   = sum_{s<=l} CB[l, s] L[l, s] xd_s + exp(cs_l) S C_l + D x_l
 *   S'    = exp(cs_last) S + sum_s exp(cs_last - cs_s) xd_s (x) B_s
 * so, per chunk, with GEMMs:
 *   dxd   = (CB o L)^T dY + diag(exp(cs_last - cs)) B dS^T
 *   dCB   = L o (dY xd^T)                  dC = dCB B + diag(exp(cs)) dY S
 *                                          dB = dCB^T C + diag(exp(cs_last - cs)) xd dS
 *   dS_in = exp(cs_last) dS + (diag(exp(cs)) dY)^T C
 * The log-decays get their gradient without ever subtracting two large sums ("stable ddA"):
 * dA_k, the log-decay of token k, enters L[l, s] exactly when s < k <= l, so its intra-chunk
 * gradient is the sum of E = CB o L o (dY xd^T) over that rectangle, accumulated from column
 * suffix sums, instead of the row-sum minus column-sum of E followed by a cumsum, whose
 * cancellations lose the small terms. The state terms are a prefix and a suffix sum of
 * per-token products.
 * dB and dC are shared by the H/G heads of a group, so a task owns a (row, group) pair, or a
 * slice of its heads when that gives too few tasks: it sums dCB over its heads and multiplies
 * by B and C once (instead of once per head), and writes its rows of dB, dC without races.
 * The slices are a fixed function of the sizes, so results do not depend on the thread count. */
#include <stdlib.h>
#include <string.h>

#include "../model/status.h"
#include "backward.h"
#include "kernels.h"
#include "simd.h"
#include "ssd_common.h"

/* Tasks wanted per call: (row, group) pairs are split into slices of heads up to this. */
enum { TASK_TARGET = 8 };

static int64_t group_slices(int64_t B, int64_t H, int64_t G) {
    int64_t pairs = B * G, slices = (TASK_TARGET + pairs - 1) / pairs;
    return slices < H / G ? slices : H / G;
}

size_t m2c_ssd_backward_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                                    int64_t G, int64_t Q) {
    (void)P;
    int64_t chunks = (T + Q - 1) / Q, Qc = T < Q ? T : Q, slices = group_slices(B, H, G);
    size_t cb = (size_t)(B * chunks * G) * (size_t)(Qc * Qc);
    /* with several slices per group, each writes its dB, dC terms apart, summed afterwards */
    size_t partial = slices > 1 ? 2 * (size_t)slices * (size_t)(B * T * G * N) : 0;
    return cb + partial + 2 * (size_t)(B * H);
}

typedef struct {
    float *dx, *ddt, *dstate;
    int64_t lddx;
    float *dB_out, *dC_out;   /* where tasks write dB, dC: dBm, dCm or the slices' partial sums */
    int64_t ld_out, slice_stride;
    float *part_dA, *part_dD; /* [B, H] */
    const float *dy, *dfinal, *state, *x, *Bm, *Cm, *dt, *A, *D, *CB;
    int64_t ldx, B, T, H, P, N, G, Q, chunks, Qc, slices;
} ssd_bwd;

/* One thread's scratch: a head's chunk states, one chunk's matrices, a task's sum of dCB. */
typedef struct {
    float *states, *dS, *M, *Mt, *dCB, *dCBt, *Xd, *XdW, *dXd, *tmp, *dYt, *DS, *dCBsum;
    float *dts, *fs, *wdec, *off, *e;
    double *cs, *colacc, *ddA;
    void *block, *dblock;
} ssd_scratch;

static int scratch_alloc(ssd_scratch *s, const ssd_bwd *a) {
    const int64_t Qc = a->Qc, P = a->P, N = a->N;
    size_t floats = (size_t)(a->chunks * P * N + P * N + 4 * Qc * Qc + 5 * Qc * P + Qc * N +
                             5 * Qc + a->chunks * Qc * Qc);
    s->block = malloc(sizeof(float) * floats);
    s->dblock = malloc(sizeof(double) * 3 * (size_t)Qc);
    if (!s->block || !s->dblock) return -1;
    float *f = s->block;
    s->states = f, f += a->chunks * P * N;
    s->dS = f, f += P * N;
    s->M = f, f += Qc * Qc;
    s->Mt = f, f += Qc * Qc;
    s->dCB = f, f += Qc * Qc;
    s->dCBt = f, f += Qc * Qc;
    s->Xd = f, f += Qc * P;
    s->XdW = f, f += Qc * P;
    s->dXd = f, f += Qc * P;
    s->tmp = f, f += Qc * P;
    s->dYt = f, f += Qc * P;
    s->DS = f, f += Qc * N;
    s->dCBsum = f, f += a->chunks * Qc * Qc;
    s->dts = f, f += Qc;
    s->fs = f, f += Qc;
    s->wdec = f, f += Qc;
    s->off = f, f += Qc;
    s->e = f;
    s->cs = s->dblock;
    s->colacc = s->cs + Qc;
    s->ddA = s->colacc + Qc;
    return 0;
}

/* cs, dts, fs = exp(cs), wdec = exp(cs_last - cs) of the chunk of head h starting at t0. */
static M2C_VECTORIZE void chunk_decays(ssd_scratch *s, const ssd_bwd *a, int64_t b, int64_t h,
                                       int64_t t0, int64_t q) {
    m2c_ssd_chunk_cumsum(s->cs, s->dts, a->dt + (b * a->T + t0) * a->H + h, a->H,
                         a->A[h], q);
    for (int64_t l = 0; l < q; l++) {
        s->fs[l] = m2c_expf((float)s->cs[l]);
        s->wdec[l] = m2c_expf((float)(s->cs[q - 1] - s->cs[l]));
    }
}

/* The states entering every chunk of head h of row b, into s->states. */
static void recompute_states(ssd_scratch *s, const ssd_bwd *a, int64_t b, int64_t h) {
    const int64_t P = a->P, N = a->N, Qc = a->Qc, g = h / (a->H / a->G);
    float *S = s->states;
    if (a->state)
        memcpy(S, a->state + (b * a->H + h) * P * N, sizeof(float) * P * N);
    else
        memset(S, 0, sizeof(float) * P * N);
    for (int64_t c = 0; c + 1 < a->chunks; c++) {
        const int64_t t0 = c * a->Q, q = a->T - t0 < a->Q ? a->T - t0 : a->Q;
        const float *xc = a->x + (b * a->T + t0) * a->ldx + h * P;
        const float *Bc = a->Bm + (b * a->T + t0) * a->ldx + g * N;
        chunk_decays(s, a, b, h, t0, q);
        float *xw_t = s->dYt; /* [P, q]: x_s dt_s exp(cs_last - cs_s), transposed */
        for (int64_t l = 0; l < q; l++)
            for (int64_t p = 0; p < P; p++)
                xw_t[p * Qc + l] = xc[l * a->ldx + p] * (s->dts[l] * s->wdec[l]);
        float *next = S + P * N;
        memcpy(next, S, sizeof(float) * P * N);
        m2c_sgemm_serial(P, N, q, xw_t, Qc, Bc, a->ldx, 0, s->fs[q - 1], next, N);
        S = next;
    }
}

/* Products with the chunk's triangular [q, q] matrices skip the blocks known to be zero. */
enum { TRI_BLOCK = 64, TRANSPOSE_TILE = 16 };

/* C[q, n] = A[q, q] B[q, n] + beta C, A lower (upper) triangular. */
static void triangular_gemm(int upper, int64_t q, int64_t n, const float *A, int64_t lda,
                            const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    for (int64_t i0 = 0; i0 < q; i0 += TRI_BLOCK) {
        int64_t m = q - i0 < TRI_BLOCK ? q - i0 : TRI_BLOCK;
        int64_t k0 = upper ? i0 : 0, k1 = upper ? q : i0 + m;
        m2c_sgemm_serial(m, n, k1 - k0, A + i0 * lda + k0, lda, B + k0 * ldb, ldb, 0, beta,
                         C + i0 * ldc, ldc);
    }
}

/* The lower triangle of C[q, q] = A[q, k] B[q, k]^T (blocks above the diagonal left unset). */
static void lower_gemm_bt(int64_t q, int64_t k, const float *A, int64_t lda, const float *B,
                          int64_t ldb, float *C, int64_t ldc) {
    for (int64_t i0 = 0; i0 < q; i0 += TRI_BLOCK) {
        int64_t m = q - i0 < TRI_BLOCK ? q - i0 : TRI_BLOCK;
        m2c_sgemm_serial(m, i0 + m, k, A + i0 * lda, lda, B, ldb, 1, 0.0f, C + i0 * ldc, ldc);
    }
}

/* dst = src^T for a lower-triangular src[q, q] (zeros below dst's diagonal), tile by tile. */
static void transpose_lower(float *dst, const float *src, int64_t ld, int64_t q) {
    for (int64_t i0 = 0; i0 < q; i0 += TRANSPOSE_TILE)
        for (int64_t j0 = 0; j0 < q; j0 += TRANSPOSE_TILE) {
            int64_t i1 = i0 + TRANSPOSE_TILE < q ? i0 + TRANSPOSE_TILE : q;
            int64_t j1 = j0 + TRANSPOSE_TILE < q ? j0 + TRANSPOSE_TILE : q;
            for (int64_t i = i0; i < i1; i++)
                for (int64_t j = j0; j < j1; j++) dst[j * ld + i] = j <= i ? src[i * ld + j] : 0.0f;
        }
}

/* The rows of E = CB o L o (dY xd^T), walked from the last: dCB, M = CB o L (and its
 * transpose), and the intra-chunk part of ddA from column suffix sums of E. On entry the lower
 * triangle of dCB holds dY xd^T. */
static M2C_VECTORIZE void intra_chunk(ssd_scratch *s, const float *CB, int64_t Qc, int64_t q) {
    const double *cs = s->cs;
    double *colacc = s->colacc;
    for (int64_t l = 0; l < q; l++) colacc[l] = 0;
    for (int64_t l = q - 1; l >= 0; l--) {
        float *row = s->dCB + l * Qc, *m = s->M + l * Qc;
        const float *cb = CB + l * Qc;
        const double csl = cs[l];
        for (int64_t j = 0; j <= l; j++) {
            float decay = m2c_expf((float)(csl - cs[j]));
            float d = decay * row[j];
            colacc[j] += (double)(cb[j] * d);
            row[j] = d;
            m[j] = cb[j] * decay;
        }
        for (int64_t j = l + 1; j < q; j++) row[j] = m[j] = 0.0f;
        double inside = 0; /* the E entries with s < l <= l' */
        for (int64_t j = 0; j < l; j++) inside += colacc[j];
        s->ddA[l] = inside;
    }
    transpose_lower(s->Mt, s->M, Qc, q);
}

/* Every term of head h of row b, except dCB's products with B and C: its dCB is added to
 * s->dCBsum, its state terms to dBg, dCg (the task's [T, N] block of dB, dC, row stride ld). */
static M2C_VECTORIZE void head_backward(ssd_scratch *s, const ssd_bwd *a, int64_t b, int64_t h,
                                        float *dBg, float *dCg, int64_t ld) {
    const int64_t P = a->P, N = a->N, H = a->H, Qc = a->Qc, HP = H * P, ldx = a->ldx;
    const int64_t g = h / (H / a->G);
    const float Ah = a->A[h], Dh = a->D[h];
    double dA_acc = 0, dD_acc = 0;
    float *dS = s->dS;

    recompute_states(s, a, b, h);
    if (a->dfinal)
        memcpy(dS, a->dfinal + (b * H + h) * P * N, sizeof(float) * P * N);
    else
        memset(dS, 0, sizeof(float) * P * N);

    for (int64_t c = a->chunks - 1; c >= 0; c--) {
        const int64_t t0 = c * a->Q, q = a->T - t0 < a->Q ? a->T - t0 : a->Q, row0 = b * a->T + t0;
        const float *xc = a->x + row0 * ldx + h * P;
        const float *Bc = a->Bm + row0 * ldx + g * N;
        const float *Cc = a->Cm + row0 * ldx + g * N;
        const float *dYc = a->dy + row0 * HP + h * P;
        const float *Sin = s->states + c * P * N;
        const float *CBc = a->CB + ((b * a->chunks + c) * a->G + g) * Qc * Qc;
        float *fs = s->fs, *wdec = s->wdec, *dts = s->dts;
        double *ddA = s->ddA;

        chunk_decays(s, a, b, h, t0, q);
        for (int64_t l = 0; l < q; l++)
            for (int64_t p = 0; p < P; p++) {
                s->Xd[l * P + p] = xc[l * ldx + p] * dts[l];
                s->XdW[l * P + p] = s->Xd[l * P + p] * wdec[l];
            }

        /* output from the entering state: y_off_l = exp(cs_l) S C_l */
        m2c_sgemm_serial(q, N, P, dYc, HP, Sin, N, 0, 0.0f, s->DS, N);
        for (int64_t l = 0; l < q; l++) {
            double dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t n = 0; n < N; n++) dot += (double)s->DS[l * N + n] * Cc[l * ldx + n];
            s->off[l] = (float)(fs[l] * dot);
        }

        /* intra-chunk products */
        lower_gemm_bt(q, P, dYc, HP, s->Xd, P, s->dCB, Qc);
        intra_chunk(s, CBc, Qc, q);

        /* the state leaving the chunk */
        m2c_sgemm_serial(q, P, N, Bc, ldx, dS, N, 1, 0.0f, s->tmp, P);
        double through = 0; /* exp(cs_last) <dS, S_in>: every token's decay reaches it */
#pragma omp simd reduction(+ : through)
        for (int64_t i = 0; i < P * N; i++) through += (double)dS[i] * Sin[i];
        through *= fs[q - 1];
        triangular_gemm(1, q, P, s->Mt, Qc, dYc, HP, 0.0f, s->dXd, P);
        for (int64_t l = 0; l < q; l++) {
            double dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int64_t p = 0; p < P; p++) {
                dot += (double)s->Xd[l * P + p] * s->tmp[l * P + p];
                s->dXd[l * P + p] += wdec[l] * s->tmp[l * P + p];
            }
            s->e[l] = (float)(wdec[l] * dot);
        }

        /* ddA_k: + sum_{l >= k} off_l + sum_{s < k} e_s + through */
        double suffix = 0, prefix = 0;
        for (int64_t k = q - 1; k >= 0; k--) {
            suffix += s->off[k];
            ddA[k] += suffix + through;
        }
        for (int64_t k = 0; k < q; k++) {
            ddA[k] += prefix;
            prefix += s->e[k];
        }

        for (int64_t l = 0; l < q; l++) {
            double dxd_x = 0;
            float *dxr = a->dx + (row0 + l) * a->lddx + h * P;
#pragma omp simd reduction(+ : dxd_x, dD_acc)
            for (int64_t p = 0; p < P; p++) {
                float dXd = s->dXd[l * P + p], xv = xc[l * ldx + p], dyv = dYc[l * HP + p];
                dxd_x += (double)dXd * xv;
                dD_acc += (double)dyv * xv;
                dxr[p] = dts[l] * dXd + Dh * dyv;
            }
            a->ddt[(row0 + l) * H + h] = (float)(dxd_x + Ah * ddA[l]);
            dA_acc += dts[l] * ddA[l];
        }

        float *dBc = dBg + t0 * ld, *dCc = dCg + t0 * ld, *sum = s->dCBsum + c * Qc * Qc;
        m2c_sgemm_serial(q, N, P, s->XdW, P, dS, N, 0, 1.0f, dBc, ld);
        for (int64_t l = 0; l < q; l++) {
#pragma omp simd
            for (int64_t n = 0; n < N; n++) dCc[l * ld + n] += fs[l] * s->DS[l * N + n];
#pragma omp simd
            for (int64_t j = 0; j <= l; j++) sum[l * Qc + j] += s->dCB[l * Qc + j];
        }

        /* dS of the state entering this chunk, which left the previous one */
        for (int64_t l = 0; l < q; l++)
            for (int64_t p = 0; p < P; p++) s->dYt[p * Qc + l] = fs[l] * dYc[l * HP + p];
        m2c_sgemm_serial(P, N, q, s->dYt, Qc, Cc, ldx, 0, fs[q - 1], dS, N);
    }
    if (a->dstate) memcpy(a->dstate + (b * H + h) * P * N, dS, sizeof(float) * P * N);
    a->part_dA[b * H + h] = (float)dA_acc;
    a->part_dD[b * H + h] = (float)dD_acc;
}

/* Task (b, g, slice j): heads j*per_slice .. of group g, summed into dB, dC rows of row b. */
static void task_backward(ssd_scratch *s, const ssd_bwd *a, int64_t b, int64_t g, int64_t j) {
    const int64_t T = a->T, N = a->N, Qc = a->Qc, hpg = a->H / a->G;
    const int64_t per_slice = (hpg + a->slices - 1) / a->slices;
    const int64_t h0 = g * hpg + j * per_slice;
    const int64_t h1 = h0 + per_slice < (g + 1) * hpg ? h0 + per_slice : (g + 1) * hpg;
    const int64_t ld = a->ld_out;
    float *dBg = a->dB_out + j * a->slice_stride + b * T * ld + g * N;
    float *dCg = a->dC_out + j * a->slice_stride + b * T * ld + g * N;
    for (int64_t t = 0; t < T; t++) {
        memset(dBg + t * ld, 0, sizeof(float) * N);
        memset(dCg + t * ld, 0, sizeof(float) * N);
    }
    memset(s->dCBsum, 0, sizeof(float) * a->chunks * Qc * Qc);
    for (int64_t h = h0; h < h1; h++) head_backward(s, a, b, h, dBg, dCg, ld);
    for (int64_t c = 0; c < a->chunks; c++) {
        const int64_t t0 = c * a->Q, q = T - t0 < a->Q ? T - t0 : a->Q;
        const float *Bc = a->Bm + (b * T + t0) * a->ldx + g * N;
        const float *Cc = a->Cm + (b * T + t0) * a->ldx + g * N;
        const float *sum = s->dCBsum + c * Qc * Qc;
        transpose_lower(s->dCBt, sum, Qc, q);
        triangular_gemm(1, q, N, s->dCBt, Qc, Cc, a->ldx, 1.0f, dBg + t0 * ld, ld);
        triangular_gemm(0, q, N, sum, Qc, Bc, a->ldx, 1.0f, dCg + t0 * ld, ld);
    }
}

m2c_status m2c_ssd_chunked_backward(float *dx, float *dBm, float *dCm, int64_t lddx, float *ddt,
                                    float *dA, float *dD, float *dstate, const float *dy,
                                    const float *dfinal, const float *state, const float *x,
                                    const float *Bm, const float *Cm, int64_t ldx,
                                    const float *dt, const float *A, const float *D, int64_t B,
                                    int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                    int64_t Q, float *work) {
    if (B <= 0 || T <= 0 || H <= 0 || P <= 0 || N <= 0 || G <= 0 || H % G || Q <= 0)
        return m2c_fail(M2C_ERR_VALUE, "ssd backward: bad sizes (B %lld, T %lld, H %lld, P %lld, "
                        "N %lld, G %lld, Q %lld)", (long long)B, (long long)T, (long long)H,
                        (long long)P, (long long)N, (long long)G, (long long)Q);
    ssd_bwd a = {
        .dx = dx, .ddt = ddt, .dstate = dstate, .lddx = lddx, .dy = dy, .dfinal = dfinal,
        .state = state, .x = x, .Bm = Bm, .Cm = Cm, .dt = dt, .A = A, .D = D, .ldx = ldx,
        .B = B, .T = T, .H = H, .P = P, .N = N, .G = G, .Q = Q, .chunks = (T + Q - 1) / Q,
        .Qc = T < Q ? T : Q, .slices = group_slices(B, H, G),
    };
    const int64_t slices = a.slices, rows = B * T;
    float *rest = work + (size_t)(B * a.chunks * G) * (size_t)(a.Qc * a.Qc);
    a.CB = work;
    if (slices > 1) {
        a.dB_out = rest;
        a.dC_out = rest + slices * rows * G * N;
        a.ld_out = G * N;
        a.slice_stride = rows * G * N;
        rest += 2 * slices * rows * G * N;
    } else {
        a.dB_out = dBm;
        a.dC_out = dCm;
        a.ld_out = lddx;
    }
    a.part_dA = rest;
    a.part_dD = rest + B * H;

    m2c_ssd_chunk_cb(work, Bm, Cm, ldx, B, T, N, G, Q);

    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        ssd_scratch s;
        failed = scratch_alloc(&s, &a) < 0;
#pragma omp for collapse(3) schedule(dynamic)
        for (int64_t b = 0; b < B; b++)
            for (int64_t g = 0; g < G; g++)
                for (int64_t j = 0; j < slices; j++)
                    if (!failed) task_backward(&s, &a, b, g, j);
        free(s.block);
        free(s.dblock);
    }
    if (failed)
        return m2c_fail(M2C_ERR_MEMORY, "out of memory for the SSD backward's per-thread scratch");

    if (slices > 1) {
        const int64_t GN = G * N;
#pragma omp parallel for schedule(static) if (rows * GN * slices > 65536)
        for (int64_t r = 0; r < rows; r++) {
            float *db = dBm + r * lddx, *dc = dCm + r * lddx;
            const float *pb = a.dB_out + r * GN, *pc = a.dC_out + r * GN;
            memcpy(db, pb, sizeof(float) * GN);
            memcpy(dc, pc, sizeof(float) * GN);
            for (int64_t j = 1; j < slices; j++)
                for (int64_t i = 0; i < GN; i++) {
                    db[i] += pb[j * a.slice_stride + i];
                    dc[i] += pc[j * a.slice_stride + i];
                }
        }
    }
    for (int64_t h = 0; h < H; h++) {
        double sa = 0, sd = 0;
        for (int64_t b = 0; b < B; b++) {
            sa += a.part_dA[b * H + h];
            sd += a.part_dD[b * H + h];
        }
        dA[h] = (float)sa;
        dD[h] = (float)sd;
    }
    return M2C_OK;
}
