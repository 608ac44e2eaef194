/* mamba2c._C.Engine: a model's config and borrowed weight buffers, and its forward call.
 * The engine holds the weight buffers (Py_buffer) for its whole life, so the arrays cannot be
 * freed or resized under it; Python replaces the engine when the weights change.
 *
 * With a backend capsule (mamba2c._cuda.backend()) the engine computes on that backend and
 * every weight and forward buffer is a device pointer given as an int; Python's DeviceArray
 * objects own that memory and the model keeps them alive as long as the engine. */
#include "binding.h"

#include <string.h>

#include "../model/backend.h"

enum { LAYER_TENSORS = 11 };

typedef struct {
    PyObject_HEAD
    m2c_engine *engine;
    m2c_config config;
    m2c_layer_weights *layers;
    Py_buffer *views; /* every weight view held, LAYER_TENSORS per layer + 3 */
    Py_ssize_t n_views;
    int on_device;    /* buffers are device pointers */
} EngineObject;

/* A device weight: (pointer, dtype code) or None. */
static int device_weight(PyObject *spec, m2c_tensor *out, const char *name, int required) {
    memset(out, 0, sizeof *out);
    if (spec == Py_None) {
        if (!required) return 0;
        PyErr_Format(PyExc_ValueError, "weight %s is required", name);
        return -1;
    }
    PyObject *ptr;
    int dtype;
    if (!PyTuple_Check(spec) || !PyArg_ParseTuple(spec, "O!i", &PyLong_Type, &ptr, &dtype)) {
        PyErr_Format(PyExc_TypeError, "device weight %s must be a (pointer, dtype code) pair",
                     name);
        return -1;
    }
    if (dtype < M2C_F32 || dtype > M2C_F16) {
        PyErr_Format(PyExc_TypeError, "weight %s has an unknown dtype code %d", name, dtype);
        return -1;
    }
    out->data = PyLong_AsVoidPtr(ptr);
    out->dtype = (m2c_dtype)dtype;
    return PyErr_Occurred() ? -1 : 0;
}

static int weight(EngineObject *self, PyObject *spec, Py_buffer *view, m2c_tensor *out,
                  const char *name, Py_ssize_t count, int required) {
    if (self->on_device) return device_weight(spec, out, name, required);
    return m2c_get_weight(spec, view, out, name, count, required);
}

/* "O&" converter: an int pointer. */
static int pointer_converter(PyObject *obj, void *out) {
    if (!PyLong_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "expected a pointer (int)");
        return 0;
    }
    *(void **)out = PyLong_AsVoidPtr(obj);
    return !PyErr_Occurred();
}

/* A device buffer argument: an int pointer or None. */
static int device_pointer(PyObject *obj, void **out, const char *name) {
    *out = NULL;
    if (obj == Py_None) return 0;
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be a device pointer (int) or None", name);
        return -1;
    }
    *out = PyLong_AsVoidPtr(obj);
    return PyErr_Occurred() ? -1 : 0;
}

static void Engine_dealloc(EngineObject *self) {
    m2c_engine_destroy(self->engine);
    for (Py_ssize_t i = 0; i < self->n_views; i++) m2c_release(&self->views[i]);
    PyMem_Free(self->views);
    PyMem_Free(self->layers);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Products of config sizes; the config was range-checked in Python, this guards the C side. */
static int mul(Py_ssize_t *out, Py_ssize_t a, Py_ssize_t b) {
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, out)) {
        PyErr_SetString(PyExc_ValueError, "config sizes overflow");
        return -1;
    }
    return 0;
}

static int add(Py_ssize_t *out, Py_ssize_t a, Py_ssize_t b) {
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, out)) {
        PyErr_SetString(PyExc_ValueError, "config sizes overflow");
        return -1;
    }
    return 0;
}

static int Engine_init(EngineObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"config", "embeddings", "norm_f", "lm_head", "layers", "backend",
                             NULL};
    PyObject *cfg, *emb, *norm_f, *lm_head, *layers, *backend = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!OOOO!|O", kwlist, &PyTuple_Type, &cfg, &emb,
                                     &norm_f, &lm_head, &PyList_Type, &layers, &backend))
        return -1;
    const m2c_backend *be = &m2c_cpu_backend;
    if (backend != Py_None) {
        be = PyCapsule_GetPointer(backend, "mamba2c.backend");
        if (!be) return -1;
    }
    if (self->engine || self->views) { /* a second __init__ would drop the held views */
        PyErr_SetString(PyExc_RuntimeError, "Engine is already initialised");
        return -1;
    }
    m2c_config *c = &self->config;
    if (!PyArg_ParseTuple(cfg, "LLLLLLLLLfffL", &c->hidden_size, &c->num_heads, &c->head_dim,
                          &c->state_size, &c->n_groups, &c->conv_kernel, &c->chunk_size,
                          &c->vocab_size, &c->num_layers, &c->eps, &c->dt_min, &c->dt_max,
                          &c->norm_groups))
        return -1;
    if (PyList_GET_SIZE(layers) != c->num_layers) {
        PyErr_Format(PyExc_ValueError, "expected %lld layers, got %zd", (long long)c->num_layers,
                     PyList_GET_SIZE(layers));
        return -1;
    }
    Py_ssize_t D = c->hidden_size, H = c->num_heads, K = c->conv_kernel, V = c->vocab_size, I, GN,
               conv, proj, VD, projD, convK, DI;
    if (mul(&I, H, c->head_dim) || mul(&GN, c->n_groups, c->state_size) || mul(&VD, V, D))
        return -1;
    if (add(&conv, I, GN) || add(&conv, conv, GN) || add(&proj, I, conv) || add(&proj, proj, H))
        return -1;
    if (mul(&projD, proj, D) || mul(&convK, conv, K) || mul(&DI, D, I)) return -1;

    self->n_views = 3 + LAYER_TENSORS * c->num_layers;
    self->views = PyMem_Calloc(self->n_views, sizeof(Py_buffer));
    self->layers = PyMem_Calloc(c->num_layers ? c->num_layers : 1, sizeof(m2c_layer_weights));
    if (!self->views || !self->layers) {
        PyErr_NoMemory();
        return -1;
    }
    self->on_device = !be->host_memory;
    m2c_weights w = {0};
    if (weight(self, emb, &self->views[0], &w.embeddings, "embeddings", VD, 1) < 0 ||
        weight(self, norm_f, &self->views[1], &w.norm_f, "norm_f", D, 1) < 0 ||
        weight(self, lm_head, &self->views[2], &w.lm_head, "lm_head", VD, 0) < 0)
        return -1;
    static const char *names[LAYER_TENSORS] = {"norm",   "in_proj",    "in_proj.bias",
                                               "conv1d", "conv1d.bias", "dt_bias",
                                               "A_log",  "D",           "mixer.norm",
                                               "out_proj", "out_proj.bias"};
    const Py_ssize_t counts[LAYER_TENSORS] = {D, projD, proj, convK, conv, H, H, H, I, DI, D};
    const int required[LAYER_TENSORS] = {1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0};
    for (Py_ssize_t l = 0; l < c->num_layers; l++) {
        PyObject *spec = PyList_GET_ITEM(layers, l);
        if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != LAYER_TENSORS) {
            PyErr_Format(PyExc_TypeError, "layer %zd must be a tuple of %d weights", l,
                         LAYER_TENSORS);
            return -1;
        }
        m2c_tensor *slots[LAYER_TENSORS] = {
            &self->layers[l].norm,    &self->layers[l].in_proj,     &self->layers[l].in_proj_bias,
            &self->layers[l].conv1d,  &self->layers[l].conv1d_bias, &self->layers[l].dt_bias,
            &self->layers[l].A_log,   &self->layers[l].D,           &self->layers[l].gated_norm,
            &self->layers[l].out_proj, &self->layers[l].out_proj_bias};
        for (int i = 0; i < LAYER_TENSORS; i++) {
            char name[64];
            snprintf(name, sizeof name, "layers.%zd.%s", l, names[i]);
            if (weight(self, PyTuple_GET_ITEM(spec, i), &self->views[3 + l * LAYER_TENSORS + i],
                       slots[i], name, counts[i], required[i]) < 0)
                return -1;
        }
    }
    w.layers = self->layers;
    m2c_status st = m2c_engine_create_on(&self->engine, c, &w, be);
    if (st != M2C_OK) {
        m2c_raise(st);
        return -1;
    }
    return 0;
}

static PyObject *Engine_forward(EngineObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"batch",       "tokens",        "input_ids",     "inputs_embeds",
                             "attention_mask", "labels",     "conv_states",   "ssm_states",
                             "has_state",   "last_hidden",   "hidden_states", "logits",
                             "logit_positions", "want_loss", "prefill_tokens", "workspace", NULL};
    long long B, T, prefill = 0;
    int has_state = 0, want_loss = 0;
    PyObject *ids = Py_None, *embeds = Py_None, *mask = Py_None, *labels = Py_None,
             *conv = Py_None, *ssm = Py_None, *last = Py_None, *hidden = Py_None,
             *logits = Py_None, *positions = Py_None, *workspace = Py_None;
    if (!self->engine) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LL|$OOOOOOpOOOOpLO", kwlist, &B, &T, &ids,
                                     &embeds, &mask, &labels, &conv, &ssm, &has_state, &last,
                                     &hidden, &logits, &positions, &want_loss, &prefill,
                                     &workspace))
        return NULL;
    const m2c_config *c = &self->config;
    Py_ssize_t BT, BTD, LB, IN, conv_n, ssm_n, hidden_n, n_logits = 0, logits_n = 0;
    if (B <= 0 || T <= 0) {
        PyErr_SetString(PyExc_ValueError, "batch and tokens must be positive");
        return NULL;
    }
    Py_ssize_t I = c->num_heads * c->head_dim, CK = (I + 2 * c->n_groups * c->state_size) *
                                                    c->conv_kernel;
    if (mul(&BT, B, T) || mul(&BTD, BT, c->hidden_size) || mul(&LB, c->num_layers, B) ||
        mul(&conv_n, LB, CK) || mul(&IN, I, c->state_size) || mul(&ssm_n, LB, IN) ||
        mul(&hidden_n, c->num_layers + 1, BTD))
        return NULL;

    Py_buffer v[10];
    memset(v, 0, sizeof v);
    PyObject *result = NULL;
    if (positions != Py_None) {
        if (m2c_get_array(positions, &v[9], "logit_positions", ARRAY_I64,
                          PyObject_Length(positions), 0) < 0)
            goto done;
        n_logits = v[9].len / 8;
        if (mul(&logits_n, n_logits, c->vocab_size) || mul(&logits_n, logits_n, B)) goto done;
    }
    if (self->on_device) {
        /* Device buffers: Python sized them from the same config (cuda.py). */
        PyObject *objs[9] = {ids, embeds, mask, labels, conv, ssm, last, hidden, logits};
        static const char *names[9] = {"input_ids",  "inputs_embeds", "attention_mask",
                                       "labels",     "conv_states",   "ssm_states",
                                       "last_hidden", "hidden_states", "logits"};
        for (int i = 0; i < 9; i++)
            if (device_pointer(objs[i], &v[i].buf, names[i]) < 0) goto done;
    } else if (m2c_get_optional_array(ids, &v[0], "input_ids", ARRAY_I64, BT, 0) < 0 ||
               m2c_get_optional_array(embeds, &v[1], "inputs_embeds", ARRAY_F32, BTD, 0) < 0 ||
               m2c_get_optional_array(mask, &v[2], "attention_mask", ARRAY_F32, BT, 0) < 0 ||
               m2c_get_optional_array(labels, &v[3], "labels", ARRAY_I64, BT, 0) < 0 ||
               m2c_get_optional_array(conv, &v[4], "conv_states", ARRAY_F32, conv_n, 1) < 0 ||
               m2c_get_optional_array(ssm, &v[5], "ssm_states", ARRAY_F32, ssm_n, 1) < 0 ||
               m2c_get_optional_array(last, &v[6], "last_hidden", ARRAY_F32, BTD, 1) < 0 ||
               m2c_get_optional_array(hidden, &v[7], "hidden_states", ARRAY_F32, hidden_n, 1) < 0 ||
               m2c_get_optional_array(logits, &v[8], "logits", ARRAY_F32, logits_n, 1) < 0) {
        goto done;
    }
    void *ws_data = NULL;
    Py_ssize_t ws_bytes = 0;
    if (workspace != Py_None &&
        (!PyTuple_Check(workspace) || !PyArg_ParseTuple(workspace, "O&n", pointer_converter,
                                                        &ws_data, &ws_bytes)))
        goto done;

    float loss = 0;
    m2c_forward_args fa = {
        .batch = B,
        .tokens = T,
        .input_ids = v[0].buf,
        .inputs_embeds = v[1].buf,
        .attention_mask = v[2].buf,
        .labels = v[3].buf,
        .conv_states = v[4].buf,
        .ssm_states = v[5].buf,
        .has_state = has_state,
        .last_hidden = v[6].buf,
        .hidden_states = v[7].buf,
        .logits = v[8].buf,
        .logit_positions = v[9].buf,
        .n_logits = n_logits,
        .loss = want_loss ? &loss : NULL,
        .stop = m2c_sigint_flag(),
    };
    m2c_status st;
    m2c_sigint_guard guard;
    m2c_sigint_begin(&guard);
    if (!guard.installed) fa.stop = NULL; /* another thread's call owns the flag */
    Py_BEGIN_ALLOW_THREADS
    st = ws_data ? m2c_engine_forward_in(self->engine, &fa, prefill, ws_data, (size_t)ws_bytes)
                 : m2c_engine_forward(self->engine, &fa, prefill);
    Py_END_ALLOW_THREADS
    m2c_sigint_end(&guard);
    if (st != M2C_OK)
        m2c_raise(st);
    else if (want_loss)
        result = PyFloat_FromDouble(loss);
    else
        result = Py_NewRef(Py_None);
done:
    for (int i = 0; i < 10; i++)
        if (!self->on_device || i == 9) m2c_release(&v[i]);
    return result;
}

static PyObject *Engine_workspace_bytes(EngineObject *self, PyObject *args) {
    long long B, T, prefill = 0;
    if (!self->engine) {
        PyErr_SetString(PyExc_RuntimeError, "Engine is not initialised");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "LL|L", &B, &T, &prefill)) return NULL;
    size_t bytes = m2c_engine_workspace_bytes(self->engine, B, T, prefill);
    if (bytes == 0) {
        PyErr_SetString(PyExc_ValueError, "no workspace fits this batch and token count");
        return NULL;
    }
    return PyLong_FromSize_t(bytes);
}

static PyMethodDef Engine_methods[] = {
    {"forward", (PyCFunction)(void (*)(void))Engine_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(batch, tokens, *, input_ids=None, inputs_embeds=None, attention_mask=None, "
     "labels=None, conv_states=None, ssm_states=None, has_state=False, last_hidden=None, "
     "hidden_states=None, logits=None, logit_positions=None, want_loss=False, prefill_tokens=0)\n"
     "Runs every layer in one call on caller-owned buffers; returns the loss or None.\n"
     "workspace=(pointer, bytes) runs on that scratch memory instead of the engine's."},
    {"workspace_bytes", (PyCFunction)Engine_workspace_bytes, METH_VARARGS,
     "workspace_bytes(batch, tokens, prefill_tokens=0) -> scratch bytes of such a call"},
    {NULL, NULL, 0, NULL},
};

PyTypeObject m2c_EngineType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mamba2c._C.Engine",
    .tp_basicsize = sizeof(EngineObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine(config, embeddings, norm_f, lm_head, layers): a model's C forward.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Engine_init,
    .tp_dealloc = (destructor)Engine_dealloc,
    .tp_methods = Engine_methods,
};
