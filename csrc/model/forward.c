/* The whole-model forward: embedding, the Mamba-2 blocks, norm_f, lm_head and the loss, for a
 * batch of token rows, in pieces of at most `piece` tokens that carry conv and SSM state forward
 * so scratch memory does not grow with the prompt.
 *
 * Block: h += out_proj(gated_norm(ssd(conv(in_proj(norm(h) * mask)) * mask), z)) */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "status.h"
#include "workspace.h"

struct m2c_engine {
    m2c_config config;
    m2c_weights weights;
    const m2c_backend *be;
    /* One arena kept between calls; a call that finds it taken (another thread) makes its own. */
    _Atomic(m2c_arena *) spare;
};

/* Rows per piece the engine aims for: big enough for efficient GEMMs, small enough that the
 * arena stays in the tens of megabytes for small models. */
enum { PIECE_ROWS = 2048, MAX_CONV_KERNEL = 16 };

static int weight_present(m2c_tensor t) { return t.data != NULL; }

m2c_status m2c_engine_create_on(m2c_engine **out, const m2c_config *c, const m2c_weights *w,
                                const m2c_backend *be) {
    *out = NULL;
    if (c->hidden_size <= 0 || c->num_heads <= 0 || c->head_dim <= 0 || c->state_size <= 0 ||
        c->n_groups <= 0 || c->conv_kernel <= 0 || c->chunk_size <= 0 || c->vocab_size <= 0 ||
        c->num_layers < 0 || c->norm_groups <= 0)
        return m2c_fail(M2C_ERR_VALUE, "every size in the config must be positive");
    if (c->num_heads % c->n_groups)
        return m2c_fail(M2C_ERR_VALUE, "num_heads (%lld) must be a multiple of n_groups (%lld)",
                        (long long)c->num_heads, (long long)c->n_groups);
    if ((c->num_heads * c->head_dim) % c->norm_groups)
        return m2c_fail(M2C_ERR_VALUE, "the intermediate size (%lld) must be a multiple of the "
                        "gated-norm group count (%lld)", (long long)(c->num_heads * c->head_dim),
                        (long long)c->norm_groups);
    if (c->conv_kernel > MAX_CONV_KERNEL)
        return m2c_fail(M2C_ERR_VALUE, "conv_kernel %lld is larger than the supported %d",
                        (long long)c->conv_kernel, MAX_CONV_KERNEL);
    if (!weight_present(w->embeddings) || !weight_present(w->norm_f) ||
        (c->num_layers > 0 && !w->layers))
        return m2c_fail(M2C_ERR_VALUE, "the embeddings, norm_f and layer weights are required");
    for (int64_t l = 0; l < c->num_layers; l++) {
        const m2c_layer_weights *lw = &w->layers[l];
        if (!weight_present(lw->norm) || !weight_present(lw->in_proj) ||
            !weight_present(lw->conv1d) || !weight_present(lw->dt_bias) ||
            !weight_present(lw->A_log) || !weight_present(lw->D) ||
            !weight_present(lw->gated_norm) || !weight_present(lw->out_proj))
            return m2c_fail(M2C_ERR_VALUE, "layer %lld is missing a weight", (long long)l);
    }
    m2c_engine *e = calloc(1, sizeof *e);
    if (!e) return m2c_fail(M2C_ERR_MEMORY, "out of memory creating the engine");
    e->config = *c;
    e->weights = *w;
    e->be = be;
    atomic_init(&e->spare, NULL);
    *out = e;
    return M2C_OK;
}

m2c_status m2c_engine_create(m2c_engine **out, const m2c_config *c, const m2c_weights *w) {
    return m2c_engine_create_on(out, c, w, &m2c_cpu_backend);
}

/* A backend built into another module keeps its own message: bring it into ours. */
static m2c_status backend_status(const m2c_backend *be, m2c_status st) {
    if (st == M2C_OK || be->last_error == m2c_last_error) return st;
    return m2c_fail(st, "%s", be->last_error());
}

static void arena_free(const m2c_backend *be, m2c_arena *a) {
    if (a) be->release(a->base);
    free(a);
}

void m2c_engine_destroy(m2c_engine *e) {
    if (!e) return;
    arena_free(e->be, atomic_exchange(&e->spare, NULL));
    free(e);
}

static m2c_status arena_take(m2c_engine *e, size_t bytes, m2c_arena **out) {
    m2c_arena *a = atomic_exchange(&e->spare, NULL);
    if (a && a->bytes >= bytes) {
        *out = a;
        return M2C_OK;
    }
    arena_free(e->be, a); /* too small: grow */
    a = calloc(1, sizeof *a);
    if (!a) return m2c_fail(M2C_ERR_MEMORY, "out of memory");
    m2c_status st = backend_status(e->be, e->be->alloc(&a->base, bytes, "the forward's workspace"));
    if (st != M2C_OK) {
        free(a);
        return st;
    }
    a->bytes = bytes;
    *out = a;
    return M2C_OK;
}

static void arena_give_back(m2c_engine *e, m2c_arena *a) {
    m2c_arena *expected = NULL;
    if (!atomic_compare_exchange_strong(&e->spare, &expected, a)) arena_free(e->be, a);
}

static m2c_status check_args(const m2c_config *c, const m2c_backend *be,
                             const m2c_forward_args *a) {
    if (a->batch <= 0 || a->tokens <= 0)
        return m2c_fail(M2C_ERR_VALUE, "batch and tokens must be positive (got %lld and %lld)",
                        (long long)a->batch, (long long)a->tokens);
    if (!a->input_ids == !a->inputs_embeds)
        return m2c_fail(M2C_ERR_VALUE, "exactly one of input_ids and inputs_embeds is required");
    if (!a->conv_states != !a->ssm_states)
        return m2c_fail(M2C_ERR_VALUE, "conv_states and ssm_states go together");
    if (a->logits && (a->n_logits <= 0 || !a->logit_positions))
        return m2c_fail(M2C_ERR_VALUE, "logits need at least one position");
    if (a->loss && (!a->labels || !a->logits || a->n_logits != a->tokens))
        return m2c_fail(M2C_ERR_VALUE, "the loss needs labels and the logits of every position");
    for (int64_t j = 0; a->logits && j < a->n_logits; j++) {
        int64_t p = a->logit_positions[j];
        if (p < 0 || p >= a->tokens || (j > 0 && p <= a->logit_positions[j - 1]))
            return m2c_fail(M2C_ERR_VALUE, "logit positions must increase within [0, %lld)",
                            (long long)a->tokens);
    }
    if (!a->input_ids || !be->host_memory) return M2C_OK; /* device ids: checked by the caller */
    for (int64_t i = 0; i < a->batch * a->tokens; i++)
        if (a->input_ids[i] < 0 || a->input_ids[i] >= c->vocab_size)
            return m2c_fail(M2C_ERR_VALUE, "input_ids[%lld, %lld] = %lld is out of range [0, %lld)",
                            (long long)(i / a->tokens), (long long)(i % a->tokens),
                            (long long)a->input_ids[i], (long long)c->vocab_size);
    return M2C_OK;
}

/* Where the conv and SSM state of layer l live for this call. */
typedef struct {
    float *conv, *ssm;
    size_t conv_stride, ssm_stride; /* per layer; 0 when one scratch state serves all layers */
    int has_state;
} layer_states;

/* Pieces of `piece` tokens the call's tokens make. */
static int piece_count(const m2c_forward_args *a, int64_t piece) {
    return (int)((a->tokens + piece - 1) / piece);
}

/* Floats of one layer's conv and SSM state. */
static void state_floats(const m2c_config *c, int64_t batch, size_t *conv, size_t *ssm) {
    *conv = (size_t)(batch * (c->num_heads * c->head_dim + 2 * c->n_groups * c->state_size) *
                     c->conv_kernel);
    *ssm = (size_t)(batch * c->num_heads * c->head_dim * c->state_size);
}

/* Bytes of state a call without a cache carries, in the arena after the workspace: a single
 * piece needs only a zero-started SSM state, which every layer reuses; several pieces carry
 * every layer's conv and SSM state from one piece to the next. SIZE_MAX when it overflows. */
static size_t carried_bytes(const m2c_config *c, const m2c_forward_args *a, int pieces) {
    if (a->conv_states) return 0;
    size_t conv, ssm, floats;
    state_floats(c, a->batch, &conv, &ssm);
    const size_t layers = pieces > 1 ? (size_t)c->num_layers : 1;
    if (__builtin_mul_overflow(layers, (pieces > 1 ? conv : 0) + ssm, &floats) ||
        floats > SIZE_MAX / sizeof(float))
        return SIZE_MAX;
    return floats * sizeof(float);
}

/* `carried`: carried_bytes of room, used when the caller gave no cache. */
static void states_init(layer_states *s, const m2c_config *c, const m2c_forward_args *a,
                        int pieces, float *carried) {
    size_t conv, ssm;
    state_floats(c, a->batch, &conv, &ssm);
    memset(s, 0, sizeof *s);
    if (a->conv_states) {
        s->conv = a->conv_states;
        s->ssm = a->ssm_states;
        s->conv_stride = conv;
        s->ssm_stride = ssm;
        s->has_state = a->has_state;
        return;
    }
    s->ssm = carried;
    if (pieces > 1) {
        s->ssm_stride = ssm;
        s->conv = carried + (size_t)c->num_layers * ssm;
        s->conv_stride = conv;
    }
}

/* Copies rows [src_t0, src_t0 + n) of each batch row of src [B, src_T, row] to rows from dst_t0
 * of dst [B, dst_T, row], `row` bytes a row: one copy when both hold just those rows. */
static void copy_rows(const m2c_backend *be, void *dst, int64_t dst_T, int64_t dst_t0,
                      const void *src, int64_t src_T, int64_t src_t0, int64_t B, int64_t n,
                      size_t row) {
    if (dst_T == n && src_T == n) {
        be->copy(dst, src, (size_t)(B * n) * row);
        return;
    }
    for (int64_t b = 0; b < B; b++)
        be->copy((char *)dst + (size_t)(b * dst_T + dst_t0) * row,
                 (const char *)src + (size_t)(b * src_T + src_t0) * row, (size_t)n * row);
}

static m2c_status interrupted(const m2c_forward_args *a) {
    return a->stop && *a->stop ? m2c_fail(M2C_ERR_INTERRUPTED, "interrupted") : M2C_OK;
}

static m2c_status run_block(const m2c_config *c, const m2c_backend *be,
                            const m2c_layer_weights *lw, m2c_workspace *ws,
                            float *conv_state, float *ssm_state, int has_state,
                            const float *mask, int64_t B, int64_t Tp,
                            const m2c_forward_args *a) {
    const int64_t R = B * Tp, D = c->hidden_size, H = c->num_heads, I = H * c->head_dim;
    const int64_t GN = c->n_groups * c->state_size, C = I + 2 * GN, proj = I + C + H;
    m2c_status st;
    /* The norms write what feeds a product in the type the product takes. */
    const m2c_dtype in_type = be->product_input(lw->in_proj.dtype, R);
    const m2c_dtype out_type = be->product_input(lw->out_proj.dtype, R);
    /* The projection's rows [z, xBC, dt], in the type the backend stores them in. */
    const m2c_dtype proj_type = be->product_output(lw->in_proj.dtype);
    const size_t proj_size = m2c_dtype_size(proj_type);
    char *const z = (char *)ws->zxbcdt, *const xBC = z + I * proj_size;
    char *const dt = xBC + C * proj_size;
    /* The conv's output rows [x, B, C], in the same type. */
    char *const x = (char *)ws->xbc, *const Bm = x + I * proj_size;
    char *const Cm = Bm + GN * proj_size;
    be->rmsnorm(ws->normed, in_type, ws->hidden, lw->norm, mask, R, D, c->eps);
    st = be->linear(z, proj_type, proj, ws->normed, in_type, D, lw->in_proj, lw->in_proj_bias, R,
                    D, proj, 0);
    if (st != M2C_OK) return backend_status(be, st);
    if ((st = interrupted(a)) != M2C_OK) return st;
    be->conv1d(x, conv_state, has_state, xBC, proj_type, proj, lw->conv1d, lw->conv1d_bias, mask,
               B, Tp, C, c->conv_kernel, 1);
    be->ssd_inputs(ws->dt, ws->A, ws->D, dt, proj_type, proj, lw->dt_bias, lw->A_log, lw->D, R, H,
                   c->dt_min, c->dt_max);
    if (Tp == 1) { /* decode: a single pass over the state, nothing chunked */
        be->ssd_step(ws->y, ssm_state, has_state, x, Bm, Cm, proj_type, C, ws->dt, ws->A, ws->D,
                     B, H, c->head_dim, c->state_size, c->n_groups);
    } else {
        st = be->ssd_chunked(ws->y, ssm_state, has_state, x, Bm, Cm, proj_type, C, ws->dt, ws->A,
                             ws->D, B, Tp, H, c->head_dim, c->state_size, c->n_groups,
                             m2c_ssd_chunk_size(c, be), ws->ssd);
        if (st != M2C_OK) return backend_status(be, st);
    }
    if ((st = interrupted(a)) != M2C_OK) return st;
    /* In float32 the gated norm overwrites y in place. Narrower elements cannot (a row's output
     * would land on rows other blocks are still reading), so they go to xbc, whose x, B and C
     * the scan has consumed. */
    void *gated = out_type == M2C_F32 ? (void *)ws->y : (void *)ws->xbc;
    be->rmsnorm_gated(gated, out_type, ws->y, z, proj_type, proj, lw->gated_norm, R, I,
                      I / c->norm_groups, c->eps);
    return backend_status(be, be->linear(ws->hidden, M2C_F32, D, gated, out_type, I, lw->out_proj,
                                         lw->out_proj_bias, R, I, D, 1));
}

/* Logits of the wanted positions that fall in this piece, from the norm_f output. */
static m2c_status piece_logits(const m2c_engine *e, const m2c_forward_args *a, m2c_workspace *ws,
                               int64_t t0, int64_t Tp) {
    const m2c_backend *be = e->be;
    const int64_t D = e->config.hidden_size, V = e->config.vocab_size;
    int64_t j0 = 0;
    while (j0 < a->n_logits && a->logit_positions[j0] < t0) j0++;
    int64_t j1 = j0;
    while (j1 < a->n_logits && a->logit_positions[j1] < t0 + Tp) j1++;
    if (j1 == j0) return M2C_OK;
    const int64_t n = j1 - j0, first = a->logit_positions[j0] - t0;
    /* The LM head's input rows: the norm's output itself when they are all of the piece's
     * rows, else gathered, one copy a batch row when the positions are consecutive (they
     * increase), one a row otherwise. */
    const float *rows = ws->gathered;
    if (n == Tp)
        rows = ws->normed;
    else if (a->logit_positions[j1 - 1] - t0 - first == n - 1)
        copy_rows(be, ws->gathered, n, 0, ws->normed, Tp, first, a->batch, n, sizeof(float) * D);
    else
        for (int64_t b = 0; b < a->batch; b++)
            for (int64_t j = j0; j < j1; j++)
                be->copy(ws->gathered + (b * n + j - j0) * D,
                         ws->normed + (b * Tp + a->logit_positions[j] - t0) * D,
                         sizeof(float) * D);
    m2c_tensor none = {0};
    /* When this piece holds every wanted position (always in decode), the rows of all batch
     * rows are consecutive in the logits: one product reads the LM head once for the batch.
     * Otherwise each batch row's rows are a separate block of the logits. */
    const int whole = n == a->n_logits;
    const int64_t calls = whole ? 1 : a->batch, n_rows = whole ? a->batch * n : n;
    for (int64_t b = 0; b < calls; b++) {
        m2c_status st = be->linear(a->logits + (b * a->n_logits + j0) * V, M2C_F32, V,
                                   rows + b * n * D, M2C_F32, D, e->weights.lm_head, none, n_rows,
                                   D, V, 0);
        if (st != M2C_OK) return backend_status(be, st);
    }
    return M2C_OK;
}

static m2c_status run_piece(const m2c_engine *e, const m2c_forward_args *a, m2c_workspace *ws,
                            layer_states *s, int64_t t0, int64_t Tp) {
    const m2c_config *c = &e->config;
    const m2c_backend *be = e->be;
    const int64_t B = a->batch, T = a->tokens, D = c->hidden_size, R = B * Tp, L = c->num_layers;
    if (a->input_ids) {
        copy_rows(be, ws->ids, Tp, 0, a->input_ids, T, t0, B, Tp, sizeof(int64_t));
        be->embedding(ws->hidden, ws->ids, e->weights.embeddings, R, D, c->vocab_size);
    } else {
        copy_rows(be, ws->hidden, Tp, 0, a->inputs_embeds, T, t0, B, Tp, sizeof(float) * D);
    }
    const float *mask = NULL;
    if (a->attention_mask) {
        copy_rows(be, ws->mask, Tp, 0, a->attention_mask, T, t0, B, Tp, sizeof(float));
        mask = ws->mask;
    }
    for (int64_t l = 0; l < L; l++) {
        m2c_status st = run_block(c, be, &e->weights.layers[l], ws,
                                  s->conv ? s->conv + l * s->conv_stride : NULL,
                                  s->ssm + l * s->ssm_stride, s->has_state, mask, B, Tp, a);
        if (st != M2C_OK || (st = interrupted(a)) != M2C_OK) return st;
        if (a->hidden_states)
            copy_rows(be, a->hidden_states + (size_t)l * B * T * D, T, t0, ws->hidden, Tp, 0, B,
                      Tp, sizeof(float) * D);
    }
    /* float32: the last hidden state is an output too */
    be->rmsnorm(ws->normed, M2C_F32, ws->hidden, e->weights.norm_f, NULL, R, D, c->eps);
    if (a->last_hidden)
        copy_rows(be, a->last_hidden, T, t0, ws->normed, Tp, 0, B, Tp, sizeof(float) * D);
    if (a->hidden_states)
        copy_rows(be, a->hidden_states + (size_t)L * B * T * D, T, t0, ws->normed, Tp, 0, B, Tp,
                  sizeof(float) * D);
    return a->logits ? piece_logits(e, a, ws, t0, Tp) : M2C_OK;
}

/* Tokens per piece: about PIECE_ROWS rows, whole SSD chunks where a piece holds several. */
static int64_t piece_tokens(const m2c_config *c, int64_t batch, int64_t tokens, int64_t piece) {
    if (piece <= 0) {
        piece = PIECE_ROWS / batch > 0 ? PIECE_ROWS / batch : 1;
        if (piece >= c->chunk_size) piece -= piece % c->chunk_size;
    }
    return piece < tokens ? piece : tokens;
}

size_t m2c_engine_workspace_bytes(const m2c_engine *e, int64_t batch, int64_t tokens,
                                  int64_t prefill_tokens) {
    if (batch <= 0 || tokens <= 0) return 0;
    return m2c_workspace_size(&e->config, e->be, batch,
                              piece_tokens(&e->config, batch, tokens, prefill_tokens));
}

/* The call on a workspace of at least m2c_engine_workspace_bytes, and `carried` (see
 * carried_bytes). */
static m2c_status forward_on(m2c_engine *e, const m2c_forward_args *a, int64_t piece,
                             void *workspace, float *carried) {
    const m2c_config *c = &e->config;
    const int pieces = piece_count(a, piece);
    layer_states states;
    states_init(&states, c, a, pieces, carried);
    m2c_workspace ws;
    m2c_workspace_carve(&ws, workspace, c, e->be, a->batch, piece);
    m2c_status st = M2C_OK;
    for (int64_t t0 = 0; t0 < a->tokens && st == M2C_OK; t0 += piece) {
        int64_t n = a->tokens - t0 < piece ? a->tokens - t0 : piece;
        if (n < piece) m2c_workspace_carve(&ws, workspace, c, e->be, a->batch, n);
        st = run_piece(e, a, &ws, &states, t0, n);
        if (states.conv) states.has_state = 1; /* later pieces continue from this one */
    }
    if (st == M2C_OK && a->loss)
        st = backend_status(e->be, e->be->cross_entropy(a->loss, a->logits, a->labels, a->batch,
                                                        a->tokens, c->vocab_size));
    /* Wait for queued work before the arena is reused and before the caller reads results. */
    m2c_status done = backend_status(e->be, e->be->finish());
    return st != M2C_OK ? st : done;
}

static m2c_status forward_begin(m2c_engine *e, const m2c_forward_args *a) {
    m2c_status st = backend_status(e->be, e->be->begin());
    if (st != M2C_OK || (st = check_args(&e->config, e->be, a)) != M2C_OK) return st;
    if (a->logits && !e->weights.lm_head.data)
        return m2c_fail(M2C_ERR_VALUE, "this model has no lm_head: it cannot produce logits");
    return M2C_OK;
}

m2c_status m2c_engine_forward(m2c_engine *e, const m2c_forward_args *a, int64_t piece) {
    m2c_status st = forward_begin(e, a);
    if (st != M2C_OK) return st;
    piece = piece_tokens(&e->config, a->batch, a->tokens, piece);
    size_t bytes = m2c_workspace_size(&e->config, e->be, a->batch, piece);
    if (bytes == 0) return m2c_fail(M2C_ERR_MEMORY, "the forward's workspace size overflows");
    const size_t carried = carried_bytes(&e->config, a, piece_count(a, piece));
    if (carried > SIZE_MAX - bytes)
        return m2c_fail(M2C_ERR_MEMORY, "the prompt's carried state does not fit in memory");
    m2c_arena *arena = NULL;
    if ((st = arena_take(e, bytes + carried, &arena)) != M2C_OK) return st;
    st = forward_on(e, a, piece, arena->base, (float *)((char *)arena->base + bytes));
    arena_give_back(e, arena);
    return st;
}

m2c_status m2c_engine_forward_in(m2c_engine *e, const m2c_forward_args *a, int64_t piece,
                                 void *workspace, size_t workspace_bytes) {
    m2c_status st = forward_begin(e, a);
    if (st != M2C_OK) return st;
    piece = piece_tokens(&e->config, a->batch, a->tokens, piece);
    size_t bytes = m2c_workspace_size(&e->config, e->be, a->batch, piece);
    if (bytes == 0 || bytes > workspace_bytes)
        return m2c_fail(M2C_ERR_VALUE, "the workspace holds %zu bytes; this call needs %zu",
                        workspace_bytes, bytes);
    if (!a->conv_states)
        return m2c_fail(M2C_ERR_VALUE, "a call on a given workspace needs a cache");
    return forward_on(e, a, piece, workspace, NULL);
}
