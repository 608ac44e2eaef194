/* Chunked SSD scan, in five launches over the whole piece:
 *   1. per chunk, the running sum of dt*A (cs) and each token's weight in its chunk's end
 *      state, exp(cs_last - cs_s) * dt_s;
 *   2. CB[q, s] = C_q . B_s for every chunk and group (shared by the group's heads);
 *   3. each chunk's own end state S_c[p, n] = sum_s w_s x_s[p] B_s[n];
 *   4. the pass over chunks: S_in[c] is the state entering chunk c, written over S_c, and the
 *      final state goes to `state`;
 *   5. y_t = sum_{s <= t in chunk} CB[t, s] exp(cs_t - cs_s) dt_s x_s + exp(cs_t) S_in C_t + D x_t.
 * Decays are exponentiated only for s <= t (differences of a decreasing sum, never > 0), so no
 * inf * 0 can appear. Work layout (floats): cs [B, H, T] | w [B, H, T] |
 * CB [B, chunks, G, Q, Q] | S [B, chunks, H, P, N]. */
#include "kernels.cuh"

static int64_t chunks_of(int64_t T, int64_t Q) { return (T + Q - 1) / Q; }

size_t m2c_cuda_ssd_work_floats(int64_t B, int64_t T, int64_t H, int64_t P, int64_t N, int64_t G,
                                int64_t Q) {
    const int64_t C = chunks_of(T, Q);
    return (size_t)(2 * B * H * T + B * C * G * Q * Q + B * C * H * P * N);
}

/* One thread per (b, h, chunk). */
__global__ void ssd_cumsum_kernel(float *cs, float *w, const float *dt, const float *A,
                                  int64_t H, int64_t T, int64_t Q, int64_t C) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x, b = blockIdx.y;
    if (i >= H * C) return;
    const int64_t h = i / C, c = i % C;
    const int64_t t0 = c * Q, t1 = t0 + Q < T ? t0 + Q : T;
    float *csb = cs + (b * H + h) * T, *wb = w + (b * H + h) * T;
    float sum = 0.0f;
    for (int64_t t = t0; t < t1; t++) {
        sum += dt[(b * T + t) * H + h] * A[h];
        csb[t] = sum;
    }
    for (int64_t t = t0; t < t1; t++) wb[t] = expf(sum - csb[t]) * dt[(b * T + t) * H + h];
}

/* One thread per (b, chunk, g, q, s) with s <= q. */
__global__ void ssd_cb_kernel(float *CB, const float *Bm, const float *Cm, int64_t ldx, int64_t T,
                              int64_t N, int64_t G, int64_t Q, int64_t C, int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int64_t s = i % Q, q = (i / Q) % Q, g = (i / (Q * Q)) % G, c = (i / (Q * Q * G)) % C,
                  b = i / (Q * Q * G * C);
    const int64_t tq = c * Q + q, ts = c * Q + s;
    float acc = 0.0f;
    if (s <= q && tq < T) {
        const float *cq = Cm + (b * T + tq) * ldx + g * N, *bs = Bm + (b * T + ts) * ldx + g * N;
        for (int64_t n = 0; n < N; n++) acc += cq[n] * bs[n];
    }
    CB[i] = acc;
}

/* One thread per (b, chunk, h, p, n). */
__global__ void ssd_chunk_state_kernel(float *S, const float *x, const float *Bm, int64_t ldx,
                                       const float *w, int64_t T, int64_t H, int64_t P, int64_t N,
                                       int64_t heads_per_group, int64_t Q, int64_t C,
                                       int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int64_t n = i % N, p = (i / N) % P, h = (i / (N * P)) % H, c = (i / (N * P * H)) % C,
                  b = i / (N * P * H * C);
    const int64_t g = h / heads_per_group, t0 = c * Q, t1 = t0 + Q < T ? t0 + Q : T;
    const float *wb = w + (b * H + h) * T;
    float acc = 0.0f;
    for (int64_t t = t0; t < t1; t++) {
        const int64_t row = (b * T + t) * ldx;
        acc += wb[t] * x[row + h * P + p] * Bm[row + g * N + n];
    }
    S[i] = acc;
}

/* One thread per (b, h, p, n): walks the chunks in order. */
__global__ void ssd_state_pass_kernel(float *S, float *state, int has_state, const float *cs,
                                      int64_t T, int64_t H, int64_t PN, int64_t Q, int64_t C,
                                      int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int64_t e = i % PN, h = (i / PN) % H, b = i / (PN * H);
    float carried = has_state ? state[i] : 0.0f;
    for (int64_t c = 0; c < C; c++) {
        const int64_t last = (c * Q + Q < T ? c * Q + Q : T) - 1;
        float *slot = S + ((b * C + c) * H + h) * PN + e;
        const float own = *slot;
        *slot = carried; /* the state entering chunk c */
        carried = expf(cs[(b * H + h) * T + last]) * carried + own;
    }
    state[i] = carried;
}

/* One thread per (b, t, h, p). */
__global__ void ssd_output_kernel(float *y, const float *x, const float *Cm, int64_t ldx,
                                  const float *dt, const float *D, const float *cs,
                                  const float *CB, const float *S, int64_t T, int64_t H,
                                  int64_t P, int64_t N, int64_t G, int64_t Q, int64_t C,
                                  int64_t total) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= total) return;
    const int64_t p = i % P, h = (i / P) % H, t = (i / (P * H)) % T, b = i / (P * H * T);
    const int64_t g = h / (H / G), c = t / Q, q = t % Q, t0 = c * Q;
    const float *csb = cs + (b * H + h) * T;
    const float cs_t = csb[t];
    /* the state entering the chunk, decayed to t and read out through C_t */
    const float *s = S + ((b * C + c) * H + h) * P * N + p * N;
    const float *ct = Cm + (b * T + t) * ldx + g * N;
    float carried = 0.0f;
    for (int64_t n = 0; n < N; n++) carried += s[n] * ct[n];
    float acc = expf(cs_t) * carried;
    const float *cb = CB + (((b * C + c) * G + g) * Q + q) * Q;
    for (int64_t k = 0; k <= q; k++) {
        const int64_t ts = t0 + k;
        acc += cb[k] * expf(cs_t - csb[ts]) * dt[(b * T + ts) * H + h] * x[(b * T + ts) * ldx + h * P + p];
    }
    y[(b * T + t) * H * P + h * P + p] = acc + D[h] * x[(b * T + t) * ldx + h * P + p];
}

void m2c_cuda_ssd_chunked(float *y, float *state, int has_state, const float *x, const float *Bm,
                          const float *Cm, int64_t ldx, const float *dt, const float *A,
                          const float *D, int64_t B, int64_t T, int64_t H, int64_t P, int64_t N,
                          int64_t G, int64_t Q, float *work) {
    if (B * T * H == 0) return;
    const int64_t C = chunks_of(T, Q);
    float *cs = work, *w = cs + B * H * T, *CB = w + B * H * T, *S = CB + B * C * G * Q * Q;
    cudaStream_t st = m2c_cuda_stream();
    const int threads = 256;
    ssd_cumsum_kernel<<<dim3(m2c_blocks(H * C, threads), (unsigned)B), threads, 0, st>>>(
        cs, w, dt, A, H, T, Q, C);
    int64_t n = B * C * G * Q * Q;
    ssd_cb_kernel<<<m2c_blocks(n, threads), threads, 0, st>>>(CB, Bm, Cm, ldx, T, N, G, Q, C, n);
    n = B * C * H * P * N;
    ssd_chunk_state_kernel<<<m2c_blocks(n, threads), threads, 0, st>>>(S, x, Bm, ldx, w, T, H, P,
                                                                        N, H / G, Q, C, n);
    n = B * H * P * N;
    ssd_state_pass_kernel<<<m2c_blocks(n, threads), threads, 0, st>>>(S, state, has_state, cs, T,
                                                                       H, P * N, Q, C, n);
    n = B * T * H * P;
    ssd_output_kernel<<<m2c_blocks(n, threads), threads, 0, st>>>(y, x, Cm, ldx, dt, D, cs, CB, S,
                                                                   T, H, P, N, G, Q, C, n);
}
