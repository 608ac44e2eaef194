/* mamba2c._C: the Engine type and each kernel on its own (mamba2c.ops wraps these with shapes,
 * dtypes and allocation). Every function releases the GIL while the kernel runs. */
#include "binding.h"

#include "../cpu/kernels.h"

static PyObject *op_rmsnorm(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *out, *x, *w, *scale;
    long long R, D;
    float eps;
    Py_buffer v[4] = {0};
    m2c_tensor weight;
    if (!PyArg_ParseTuple(args, "OOOOLLf", &out, &x, &w, &scale, &R, &D, &eps)) return NULL;
    if (M2C_CHECK_SIZES("R D", R, D) < 0) return NULL;
    if (m2c_get_array(out, &v[0], "out", ARRAY_F32, R * D, 1) < 0 ||
        m2c_get_array(x, &v[1], "x", ARRAY_F32, R * D, 0) < 0 ||
        m2c_get_weight(w, &v[2], &weight, "weight", D, 1) < 0 ||
        m2c_get_optional_array(scale, &v[3], "row_scale", ARRAY_F32, R, 0) < 0) {
        m2c_release_all(v, 4);
        return NULL;
    }
    M2C_WITHOUT_GIL(m2c_rmsnorm(v[0].buf, v[1].buf, weight, v[3].buf, R, D, eps));
    m2c_release_all(v, 4);
    Py_RETURN_NONE;
}

static PyObject *op_rmsnorm_gated(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *out, *y, *z, *w;
    long long R, I, group;
    float eps;
    Py_buffer v[4] = {0};
    m2c_tensor weight;
    if (!PyArg_ParseTuple(args, "OOOOLLLf", &out, &y, &z, &w, &R, &I, &group, &eps)) return NULL;
    if (group <= 0 || I % group) {
        PyErr_SetString(PyExc_ValueError, "group_size must divide the width");
        return NULL;
    }
    if (M2C_CHECK_SIZES("R I", R, I) < 0) return NULL;
    if (m2c_get_array(out, &v[0], "out", ARRAY_F32, R * I, 1) < 0 ||
        m2c_get_array(y, &v[1], "y", ARRAY_F32, R * I, 0) < 0 ||
        m2c_get_array(z, &v[2], "z", ARRAY_F32, R * I, 0) < 0 ||
        m2c_get_weight(w, &v[3], &weight, "weight", I, 1) < 0) {
        m2c_release_all(v, 4);
        return NULL;
    }
    M2C_WITHOUT_GIL(m2c_rmsnorm_gated(v[0].buf, v[1].buf, v[2].buf, I, weight, R, I, group, eps));
    m2c_release_all(v, 4);
    Py_RETURN_NONE;
}

static PyObject *op_linear(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *out, *x, *w, *b;
    long long R, K, O;
    int accumulate;
    Py_buffer v[4] = {0};
    m2c_tensor weight, bias;
    m2c_status st;
    if (!PyArg_ParseTuple(args, "OOOOLLLp", &out, &x, &w, &b, &R, &K, &O, &accumulate))
        return NULL;
    if (M2C_CHECK_SIZES("R K O", R, K, O) < 0) return NULL;
    if (m2c_get_array(out, &v[0], "out", ARRAY_F32, R * O, 1) < 0 ||
        m2c_get_array(x, &v[1], "x", ARRAY_F32, R * K, 0) < 0 ||
        m2c_get_weight(w, &v[2], &weight, "weight", O * K, 1) < 0 ||
        m2c_get_weight(b, &v[3], &bias, "bias", O, 0) < 0) {
        m2c_release_all(v, 4);
        return NULL;
    }
    M2C_WITHOUT_GIL(st = m2c_linear(v[0].buf, O, v[1].buf, K, weight, bias, R, K, O, accumulate));
    m2c_release_all(v, 4);
    if (st != M2C_OK) return m2c_raise(st);
    Py_RETURN_NONE;
}

static PyObject *op_conv1d(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *out, *state, *x, *w, *b, *mask;
    long long B, T, C, K;
    int has_state, silu;
    Py_buffer v[6] = {0};
    m2c_tensor weight, bias;
    if (!PyArg_ParseTuple(args, "OOpOOOOLLLLp", &out, &state, &has_state, &x, &w, &b, &mask, &B,
                          &T, &C, &K, &silu))
        return NULL;
    if (K < 1 || K > 16) {
        PyErr_SetString(PyExc_ValueError, "the conv kernel width must be in [1, 16]");
        return NULL;
    }
    if (M2C_CHECK_SIZES("B T C K", B, T, C, K) < 0) return NULL;
    if (m2c_get_array(out, &v[0], "out", ARRAY_F32, B * T * C, 1) < 0 ||
        m2c_get_optional_array(state, &v[1], "state", ARRAY_F32, B * C * K, 1) < 0 ||
        m2c_get_array(x, &v[2], "x", ARRAY_F32, B * T * C, 0) < 0 ||
        m2c_get_weight(w, &v[3], &weight, "weight", C * K, 1) < 0 ||
        m2c_get_weight(b, &v[4], &bias, "bias", C, 0) < 0 ||
        m2c_get_optional_array(mask, &v[5], "mask", ARRAY_F32, B * T, 0) < 0) {
        m2c_release_all(v, 6);
        return NULL;
    }
    M2C_WITHOUT_GIL(m2c_conv1d(v[0].buf, v[1].buf, has_state && v[1].buf, v[2].buf, C, weight,
                               bias, v[5].buf, B, T, C, K, silu));
    m2c_release_all(v, 6);
    Py_RETURN_NONE;
}

static PyObject *op_dt_softplus(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *out, *raw, *bias;
    long long R, H;
    float lo, hi;
    Py_buffer v[3] = {0};
    m2c_tensor dt_bias;
    if (!PyArg_ParseTuple(args, "OOOLLff", &out, &raw, &bias, &R, &H, &lo, &hi)) return NULL;
    if (M2C_CHECK_SIZES("R H", R, H) < 0) return NULL;
    if (m2c_get_array(out, &v[0], "out", ARRAY_F32, R * H, 1) < 0 ||
        m2c_get_array(raw, &v[1], "dt", ARRAY_F32, R * H, 0) < 0 ||
        m2c_get_weight(bias, &v[2], &dt_bias, "dt_bias", H, 1) < 0) {
        m2c_release_all(v, 3);
        return NULL;
    }
    M2C_WITHOUT_GIL(m2c_dt_softplus(v[0].buf, v[1].buf, H, dt_bias, R, H, lo, hi));
    m2c_release_all(v, 3);
    Py_RETURN_NONE;
}

static PyObject *op_ssd_chunked(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *y, *state, *xbc, *dt, *A, *D;
    long long B, T, H, P, N, G, Q;
    int has_state;
    Py_buffer v[6] = {0};
    m2c_status st = M2C_OK;
    if (!PyArg_ParseTuple(args, "OOpOOOOLLLLLLL", &y, &state, &has_state, &xbc, &dt, &A, &D, &B,
                          &T, &H, &P, &N, &G, &Q))
        return NULL;
    if (G <= 0 || H % G || Q <= 0) {
        PyErr_SetString(PyExc_ValueError, "heads must split evenly into groups; chunk must be > 0");
        return NULL;
    }
    if (M2C_CHECK_SIZES("B T H P N G chunk", B, T, H, P, N, G, Q < T ? Q : T) < 0) return NULL;
    if (Q > T) Q = T > 0 ? T : 1; /* one chunk either way, and T + Q - 1 cannot overflow */
    long long ld = H * P + 2 * G * N;
    if (m2c_get_array(y, &v[0], "y", ARRAY_F32, B * T * H * P, 1) < 0 ||
        m2c_get_array(state, &v[1], "state", ARRAY_F32, B * H * P * N, 1) < 0 ||
        m2c_get_array(xbc, &v[2], "xbc", ARRAY_F32, B * T * ld, 0) < 0 ||
        m2c_get_array(dt, &v[3], "dt", ARRAY_F32, B * T * H, 0) < 0 ||
        m2c_get_array(A, &v[4], "A", ARRAY_F32, H, 0) < 0 ||
        m2c_get_array(D, &v[5], "D", ARRAY_F32, H, 0) < 0) {
        m2c_release_all(v, 6);
        return NULL;
    }
    float *work = PyMem_RawMalloc(sizeof(float) * (m2c_ssd_work_floats(B, T, H, P, N, G, Q) + 1));
    if (!work) {
        m2c_release_all(v, 6);
        return PyErr_NoMemory();
    }
    const float *x = v[2].buf;
    M2C_WITHOUT_GIL(st = m2c_ssd_chunked(v[0].buf, v[1].buf, has_state, x, x + H * P,
                                         x + H * P + G * N, ld, v[3].buf, v[4].buf, v[5].buf, B,
                                         T, H, P, N, G, Q, work));
    PyMem_RawFree(work);
    m2c_release_all(v, 6);
    if (st != M2C_OK) return m2c_raise(st);
    Py_RETURN_NONE;
}

static PyObject *op_ssd_step(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *y, *state, *xbc, *dt, *A, *D;
    long long B, H, P, N, G;
    int has_state;
    Py_buffer v[6] = {0};
    if (!PyArg_ParseTuple(args, "OOpOOOOLLLLL", &y, &state, &has_state, &xbc, &dt, &A, &D, &B,
                          &H, &P, &N, &G))
        return NULL;
    if (G <= 0 || H % G) {
        PyErr_SetString(PyExc_ValueError, "heads must split evenly into groups");
        return NULL;
    }
    if (M2C_CHECK_SIZES("B H P N G", B, H, P, N, G) < 0) return NULL;
    long long ld = H * P + 2 * G * N;
    if (m2c_get_array(y, &v[0], "y", ARRAY_F32, B * H * P, 1) < 0 ||
        m2c_get_array(state, &v[1], "state", ARRAY_F32, B * H * P * N, 1) < 0 ||
        m2c_get_array(xbc, &v[2], "xbc", ARRAY_F32, B * ld, 0) < 0 ||
        m2c_get_array(dt, &v[3], "dt", ARRAY_F32, B * H, 0) < 0 ||
        m2c_get_array(A, &v[4], "A", ARRAY_F32, H, 0) < 0 ||
        m2c_get_array(D, &v[5], "D", ARRAY_F32, H, 0) < 0) {
        m2c_release_all(v, 6);
        return NULL;
    }
    const float *x = v[2].buf;
    M2C_WITHOUT_GIL(m2c_ssd_step(v[0].buf, v[1].buf, has_state, x, x + H * P, x + H * P + G * N,
                                 ld, v[3].buf, v[4].buf, v[5].buf, B, H, P, N, G));
    m2c_release_all(v, 6);
    Py_RETURN_NONE;
}

static PyObject *op_cross_entropy(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *logits, *labels;
    long long B, T, V;
    Py_buffer v[2] = {0};
    double loss;
    if (!PyArg_ParseTuple(args, "OOLLL", &logits, &labels, &B, &T, &V)) return NULL;
    if (M2C_CHECK_SIZES("B T V", B, T, V) < 0) return NULL;
    if (m2c_get_array(logits, &v[0], "logits", ARRAY_F32, B * T * V, 0) < 0 ||
        m2c_get_array(labels, &v[1], "labels", ARRAY_I64, B * T, 0) < 0) {
        m2c_release_all(v, 2);
        return NULL;
    }
    const int64_t *lab = v[1].buf;
    for (long long i = 0; i < B * T; i++)
        if (lab[i] != -100 && (lab[i] < 0 || lab[i] >= V)) {
            m2c_release_all(v, 2);
            return PyErr_Format(PyExc_ValueError, "label %lld is out of range [0, %lld)",
                                (long long)lab[i], V);
        }
    M2C_WITHOUT_GIL(loss = m2c_cross_entropy(v[0].buf, lab, B, T, V));
    m2c_release_all(v, 2);
    return PyFloat_FromDouble(loss);
}

static PyObject *op_embedding(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *out, *ids, *table;
    long long R, V, D;
    Py_buffer v[3] = {0};
    m2c_tensor weight;
    if (!PyArg_ParseTuple(args, "OOOLLL", &out, &ids, &table, &R, &V, &D)) return NULL;
    if (M2C_CHECK_SIZES("R V D", R, V, D) < 0) return NULL;
    if (m2c_get_array(out, &v[0], "out", ARRAY_F32, R * D, 1) < 0 ||
        m2c_get_array(ids, &v[1], "ids", ARRAY_I64, R, 0) < 0 ||
        m2c_get_weight(table, &v[2], &weight, "table", V * D, 1) < 0) {
        m2c_release_all(v, 3);
        return NULL;
    }
    const int64_t *id = v[1].buf;
    for (long long i = 0; i < R; i++)
        if (id[i] < 0 || id[i] >= V) {
            m2c_release_all(v, 3);
            return PyErr_Format(PyExc_ValueError, "token id %lld is out of range [0, %lld)",
                                (long long)id[i], V);
        }
    M2C_WITHOUT_GIL(m2c_embedding(v[0].buf, id, weight, R, D));
    m2c_release_all(v, 3);
    Py_RETURN_NONE;
}

static PyObject *set_num_threads(PyObject *mod, PyObject *arg) {
    (void)mod;
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    m2c_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *get_num_threads(PyObject *mod, PyObject *unused) {
    (void)mod, (void)unused;
    return PyLong_FromLong(m2c_get_num_threads());
}

static PyObject *use_blas(PyObject *mod, PyObject *arg) {
    (void)mod;
    int enable = PyObject_IsTrue(arg);
    if (enable < 0) return NULL;
    m2c_gemm_use_blas(enable);
    return PyBool_FromLong(m2c_gemm_has_blas());
}

static PyMethodDef module_methods[] = {
    {"rmsnorm", op_rmsnorm, METH_VARARGS, "rmsnorm(out, x, weight, row_scale, R, D, eps)"},
    {"rmsnorm_gated", op_rmsnorm_gated, METH_VARARGS,
     "rmsnorm_gated(out, y, z, weight, R, I, group_size, eps)"},
    {"linear", op_linear, METH_VARARGS, "linear(out, x, weight, bias, R, K, O, accumulate)"},
    {"conv1d", op_conv1d, METH_VARARGS,
     "conv1d(out, state, has_state, x, weight, bias, mask, B, T, C, K, silu)"},
    {"dt_softplus", op_dt_softplus, METH_VARARGS, "dt_softplus(out, dt, dt_bias, R, H, lo, hi)"},
    {"ssd_chunked", op_ssd_chunked, METH_VARARGS,
     "ssd_chunked(y, state, has_state, xbc, dt, A, D, B, T, H, P, N, G, Q)"},
    {"ssd_step", op_ssd_step, METH_VARARGS,
     "ssd_step(y, state, has_state, xbc, dt, A, D, B, H, P, N, G)"},
    {"cross_entropy", op_cross_entropy, METH_VARARGS, "cross_entropy(logits, labels, B, T, V)"},
    {"embedding", op_embedding, METH_VARARGS, "embedding(out, ids, table, R, V, D)"},
    {"set_num_threads", set_num_threads, METH_O, "set_num_threads(n): 0 means every core"},
    {"get_num_threads", get_num_threads, METH_NOARGS, "get_num_threads()"},
    {"use_blas", use_blas, METH_O, "use_blas(flag) -> whether OpenBLAS is now used for GEMMs"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "mamba2c._C", "mamba2c's C engine and kernels.", -1, module_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__C(void) {
    if (PyType_Ready(&m2c_EngineType) < 0) return NULL;
    m2c_threads_init();
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (PyModule_AddFunctions(m, m2c_backward_methods) < 0) { Py_DECREF(m); return NULL; }
    if (PyModule_AddObjectRef(m, "Engine", (PyObject *)&m2c_EngineType) < 0 ||
        PyModule_AddIntConstant(m, "HAS_OPENBLAS", m2c_gemm_has_blas()) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
