/* mamba2c public C API: a Mamba-2 language-model forward over borrowed buffers.
 *
 * The caller owns every buffer (weights, caches, outputs); the engine borrows them for the length
 * of one call and keeps only its own scratch arena. Nothing here prints, aborts or exits: every
 * entry point returns an m2c_status and leaves a message readable with m2c_last_error().
 *
 * Shape letters: B batch, T tokens, D hidden, I intermediate (expand*D), H heads, P head_dim,
 * N state, G groups, K conv kernel, Q chunk, V vocab, L layers.
 */
#ifndef MAMBA2C_H
#define MAMBA2C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    M2C_OK = 0,
    M2C_ERR_VALUE,       /* a bad argument value or shape */
    M2C_ERR_TYPE,        /* a bad dtype */
    M2C_ERR_MEMORY,      /* an allocation failed or would be too large */
    M2C_ERR_RUNTIME,     /* anything else that went wrong while computing */
    M2C_ERR_INTERRUPTED, /* the caller's stop flag was raised */
} m2c_status;

/* Storage type of a weight tensor. Compute is always float32. */
typedef enum { M2C_F32 = 0, M2C_BF16 = 1, M2C_F16 = 2 } m2c_dtype;

/* Bytes an element of `d` takes. */
static inline size_t m2c_dtype_size(m2c_dtype d) { return d == M2C_F32 ? 4 : 2; }

/* A borrowed, C-contiguous weight tensor; data == NULL means "absent" (e.g. no bias). */
typedef struct {
    const void *data;
    m2c_dtype dtype;
} m2c_tensor;

typedef struct {
    int64_t hidden_size;   /* D */
    int64_t num_heads;     /* H */
    int64_t head_dim;      /* P; H*P is the intermediate size I */
    int64_t state_size;    /* N */
    int64_t n_groups;      /* G: heads h uses B/C of group h / (H/G) */
    int64_t conv_kernel;   /* K */
    int64_t chunk_size;    /* Q */
    int64_t vocab_size;    /* V */
    int64_t num_layers;    /* L */
    float eps;             /* every RMSNorm */
    float dt_min, dt_max;  /* time_step_limit: dt is clamped to [dt_min, dt_max] after softplus */
    int64_t norm_groups;   /* gated RMSNorm statistics over I/norm_groups channels: 1 (transformers) or G */
} m2c_config;

/* Weights of one Mamba-2 block, named after the transformers state dict. */
typedef struct {
    m2c_tensor norm;           /* [D]            block RMSNorm */
    m2c_tensor in_proj;        /* [2I+2GN+H, D] */
    m2c_tensor in_proj_bias;   /* [2I+2GN+H] or absent */
    m2c_tensor conv1d;         /* [I+2GN, K]     depthwise, tap K-1 multiplies the current token */
    m2c_tensor conv1d_bias;    /* [I+2GN] or absent */
    m2c_tensor dt_bias;        /* [H] */
    m2c_tensor A_log;          /* [H]            A = -exp(A_log) */
    m2c_tensor D;              /* [H] */
    m2c_tensor gated_norm;     /* [I]            mixer.norm */
    m2c_tensor out_proj;       /* [D, I] */
    m2c_tensor out_proj_bias;  /* [D] or absent */
} m2c_layer_weights;

typedef struct {
    m2c_tensor embeddings;           /* [V, D] */
    const m2c_layer_weights *layers; /* [L] */
    m2c_tensor norm_f;               /* [D] */
    m2c_tensor lm_head;              /* [V, D]; may alias embeddings (tied); absent for a base model */
} m2c_weights;

/* Everything one forward call reads and writes. Pointers not used are NULL. */
typedef struct {
    int64_t batch, tokens;          /* B, T (T >= 1) */

    /* inputs: exactly one of the two */
    const int64_t *input_ids;       /* [B, T], each in [0, V) */
    const float *inputs_embeds;     /* [B, T, D] */
    const float *attention_mask;    /* [B, T] of 0/1, or NULL; zeroes padded positions */
    const int64_t *labels;          /* [B, T] or NULL; -100 is ignored */

    /* cache: both or neither. With has_state the call continues from it; it is always updated. */
    float *conv_states;             /* [L, B, I+2GN, K]  last K conv inputs per channel */
    float *ssm_states;              /* [L, B, H, P, N] */
    int has_state;

    /* outputs */
    float *last_hidden;             /* [B, T, D]  norm_f output, or NULL */
    float *hidden_states;           /* [L+1, B, T, D] block outputs then norm_f output, or NULL */
    float *logits;                  /* [B, n_logits, V], or NULL */
    const int64_t *logit_positions; /* [n_logits] token positions, increasing, in [0, T) */
    int64_t n_logits;
    float *loss;                    /* scalar: mean shifted cross-entropy over labels != -100 */

    /* polled between kernels: when it becomes non-zero the call stops with M2C_ERR_INTERRUPTED
     * (the cache then holds a partial update and should be reset) */
    const volatile int *stop;
} m2c_forward_args;

typedef struct m2c_engine m2c_engine;

/* A table of kernels and memory functions (see csrc/model/backend.h). */
typedef struct m2c_backend m2c_backend;

/* Checks the config and the weights' presence; the engine borrows `weights->layers`. The
 * engine computes on the CPU; with _on, on `backend`, whose memory every pointer of the weights
 * and of the forward arguments (except logit_positions and loss) must then be. */
m2c_status m2c_engine_create(m2c_engine **out, const m2c_config *config, const m2c_weights *weights);
m2c_status m2c_engine_create_on(m2c_engine **out, const m2c_config *config,
                                const m2c_weights *weights, const m2c_backend *backend);
void m2c_engine_destroy(m2c_engine *engine);

/* One whole-model call: every layer, in pieces of at most `prefill_tokens` tokens that carry the
 * conv and SSM state forward (0: the engine's default). Safe to call from several threads at once. */
m2c_status m2c_engine_forward(m2c_engine *engine, const m2c_forward_args *args, int64_t prefill_tokens);

/* The same call on scratch memory the caller owns (of the backend's memory, at least
 * m2c_engine_workspace_bytes): nothing is allocated, so the call can be recorded and replayed
 * (a CUDA graph) as long as the buffers stay. Needs a cache. */
m2c_status m2c_engine_forward_in(m2c_engine *engine, const m2c_forward_args *args,
                                 int64_t prefill_tokens, void *workspace, size_t workspace_bytes);

/* Bytes of scratch memory a call with this batch and token count needs (0 on overflow). */
size_t m2c_engine_workspace_bytes(const m2c_engine *engine, int64_t batch, int64_t tokens,
                                  int64_t prefill_tokens);

/* The message of the last failure on this thread. */
const char *m2c_last_error(void);

/* Threads used by the CPU kernels (0 or less: all cores). */
void m2c_set_num_threads(int n);
int m2c_get_num_threads(void);

#ifdef __cplusplus
}
#endif
#endif
