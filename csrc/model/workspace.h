/* The engine's scratch arena: every buffer one piece of a forward needs, carved from one block. */
#ifndef M2C_WORKSPACE_H
#define M2C_WORKSPACE_H

#include "backend.h"

typedef struct {
    float *hidden;   /* [R, D]   residual stream */
    float *normed;   /* [R, D]   block-norm output (in the product's input type), then
                        norm_f output (float32) */
    float *zxbcdt;   /* [R, 2I+2GN+H] in_proj output */
    float *xbc;      /* [R, I+2GN] conv output: x | B | C, in the in_proj output's type;
                        after the scan, the gated-norm output when the product takes it
                        narrower than float32 */
    float *dt;       /* [R, H] */
    float *y;        /* [R, I]   SSD output, then gated-norm output */
    float *mask;     /* [R]      this piece's attention mask */
    float *gathered; /* [R, D]   rows whose logits are wanted */
    float *A, *D;    /* [H]      this layer's A = -exp(A_log) and D in float32 */
    float *ssd;      /* m2c_ssd_work_floats */
    int64_t *ids;    /* [R]      this piece's token ids */
} m2c_workspace;

typedef struct {
    void *base;
    size_t bytes;
} m2c_arena;

/* The SSD chunk a backend uses: the config's, capped at the backend's max_chunk. */
int64_t m2c_ssd_chunk_size(const m2c_config *c, const m2c_backend *be);

/* Bytes for a piece of B x Tp tokens, or 0 when the size overflows. */
size_t m2c_workspace_size(const m2c_config *c, const m2c_backend *be, int64_t B, int64_t Tp);

/* Points every field of `ws` into `arena`, which holds at least m2c_workspace_size bytes. */
void m2c_workspace_carve(m2c_workspace *ws, void *arena, const m2c_config *c,
                         const m2c_backend *be, int64_t B, int64_t Tp);

#endif
