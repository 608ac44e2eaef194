/* One layout function serves both sizing and carving, so the two can never disagree. */
#include "workspace.h"

#include <stdint.h>


typedef struct {
    char *base; /* NULL while only measuring */
    size_t used;
    int overflow;
} bump;

/* Each buffer starts on a 64-byte line so vector loads never straddle two buffers' lines. */
static void *take(bump *a, size_t count, size_t elem_size) {
    size_t bytes;
    if (a->overflow || __builtin_mul_overflow(count, elem_size, &bytes) || bytes > SIZE_MAX - 63) {
        a->overflow = 1;
        return NULL;
    }
    void *p = a->base ? a->base + a->used : NULL;
    if (__builtin_add_overflow(a->used, (bytes + 63) & ~(size_t)63, &a->used)) a->overflow = 1;
    return p;
}

int64_t m2c_ssd_chunk_size(const m2c_config *c, const m2c_backend *be) {
    return c->chunk_size < be->max_chunk ? c->chunk_size : be->max_chunk;
}

static size_t layout(m2c_workspace *ws, void *base, const m2c_config *c, const m2c_backend *be,
                     int64_t B, int64_t Tp) {
    bump a = {base, 0, 0};
    size_t R, f = sizeof(float);
    if (__builtin_mul_overflow((size_t)B, (size_t)Tp, &R)) return 0;
    size_t I = (size_t)(c->num_heads * c->head_dim), GN = (size_t)(c->n_groups * c->state_size);
    size_t H = (size_t)c->num_heads, D = (size_t)c->hidden_size, rows[4];
    if (__builtin_mul_overflow(R, D, &rows[0]) ||
        __builtin_mul_overflow(R, 2 * I + 2 * GN + H, &rows[1]) ||
        __builtin_mul_overflow(R, I + 2 * GN, &rows[2]) || __builtin_mul_overflow(R, I, &rows[3]))
        return 0;
    ws->hidden = take(&a, rows[0], f);
    ws->normed = take(&a, rows[0], f);
    ws->zxbcdt = take(&a, rows[1], f);
    ws->xbc = take(&a, rows[2], f);
    ws->dt = take(&a, R * H, f);
    ws->y = take(&a, rows[3], f);
    ws->mask = take(&a, R, f);
    ws->gathered = take(&a, rows[0], f);
    ws->A = take(&a, H, f);
    ws->D = take(&a, H, f);
    ws->ssd = take(&a, be->ssd_work_floats(B, Tp, c->num_heads, c->head_dim, c->state_size,
                                           c->n_groups, m2c_ssd_chunk_size(c, be)), f);
    ws->ids = take(&a, R, sizeof(int64_t));
    return a.overflow ? 0 : a.used;
}

size_t m2c_workspace_size(const m2c_config *c, const m2c_backend *be, int64_t B, int64_t Tp) {
    m2c_workspace unused;
    return layout(&unused, NULL, c, be, B, Tp);
}

void m2c_workspace_carve(m2c_workspace *ws, void *arena, const m2c_config *c,
                         const m2c_backend *be, int64_t B, int64_t Tp) {
    layout(ws, arena, c, be, B, Tp);
}
