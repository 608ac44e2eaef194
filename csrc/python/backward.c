/* The backward kernels on their own (mamba2c.ops_backward wraps these with shapes, dtypes and
 * allocation). Same calling convention as module.c: gradient outputs first, buffers checked for
 * dtype and size, weights as (array, dtype code) or None, the GIL released while a kernel runs. */
#include "binding.h"

#include "../cpu/backward.h"

static PyObject *op_rmsnorm_backward(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *dx, *dw, *dout, *x, *w, *scale;
    long long R, D;
    float eps;
    Py_buffer v[6] = {0};
    m2c_tensor weight;
    m2c_status st;
    if (!PyArg_ParseTuple(args, "OOOOOOLLf", &dx, &dw, &dout, &x, &w, &scale, &R, &D, &eps))
        return NULL;
    if (D <= 0) { /* the kernel splits columns into groups of D: zero would divide by zero */
        PyErr_Format(PyExc_ValueError, "the normalised width D must be positive, got %lld", D);
        return NULL;
    }
    if (M2C_CHECK_SIZES("R D", R, D) < 0) return NULL;
    if (m2c_get_array(dx, &v[0], "dx", ARRAY_F32, R * D, 1) < 0 ||
        m2c_get_array(dw, &v[1], "dweight", ARRAY_F32, D, 1) < 0 ||
        m2c_get_array(dout, &v[2], "dout", ARRAY_F32, R * D, 0) < 0 ||
        m2c_get_array(x, &v[3], "x", ARRAY_F32, R * D, 0) < 0 ||
        m2c_get_weight(w, &v[4], &weight, "weight", D, 1) < 0 ||
        m2c_get_optional_array(scale, &v[5], "row_scale", ARRAY_F32, R, 0) < 0) {
        m2c_release_all(v, 6);
        return NULL;
    }
    M2C_WITHOUT_GIL(st = m2c_rmsnorm_backward(v[0].buf, v[1].buf, v[2].buf, v[3].buf, weight,
                                          v[5].buf, R, D, eps));
    m2c_release_all(v, 6);
    if (st != M2C_OK) return m2c_raise(st);
    Py_RETURN_NONE;
}

static PyObject *op_rmsnorm_gated_backward(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *dy, *dz, *dw, *dout, *y, *z, *w;
    long long R, I, group;
    float eps;
    Py_buffer v[7] = {0};
    m2c_tensor weight;
    m2c_status st;
    if (!PyArg_ParseTuple(args, "OOOOOOOLLLf", &dy, &dz, &dw, &dout, &y, &z, &w, &R, &I, &group,
                          &eps))
        return NULL;
    if (group <= 0 || I % group) {
        PyErr_SetString(PyExc_ValueError, "group_size must divide the width");
        return NULL;
    }
    if (M2C_CHECK_SIZES("R I", R, I) < 0) return NULL;
    if (m2c_get_array(dy, &v[0], "dy", ARRAY_F32, R * I, 1) < 0 ||
        m2c_get_array(dz, &v[1], "dz", ARRAY_F32, R * I, 1) < 0 ||
        m2c_get_array(dw, &v[2], "dweight", ARRAY_F32, I, 1) < 0 ||
        m2c_get_array(dout, &v[3], "dout", ARRAY_F32, R * I, 0) < 0 ||
        m2c_get_array(y, &v[4], "y", ARRAY_F32, R * I, 0) < 0 ||
        m2c_get_array(z, &v[5], "z", ARRAY_F32, R * I, 0) < 0 ||
        m2c_get_weight(w, &v[6], &weight, "weight", I, 1) < 0) {
        m2c_release_all(v, 7);
        return NULL;
    }
    M2C_WITHOUT_GIL(st = m2c_rmsnorm_gated_backward(v[0].buf, v[1].buf, I, v[2].buf, v[3].buf,
                                                v[4].buf, v[5].buf, I, weight, R, I, group, eps));
    m2c_release_all(v, 7);
    if (st != M2C_OK) return m2c_raise(st);
    Py_RETURN_NONE;
}

static PyObject *op_conv1d_backward(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *dx, *dw, *db, *dstate, *dout, *x, *state, *w, *b, *mask;
    long long B, T, C, K;
    int silu;
    Py_buffer v[10] = {0};
    m2c_tensor weight, bias;
    m2c_status st;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOLLLLp", &dx, &dw, &db, &dstate, &dout, &x, &state, &w,
                          &b, &mask, &B, &T, &C, &K, &silu))
        return NULL;
    if (K < 1 || K > 16) {
        PyErr_SetString(PyExc_ValueError, "the conv kernel width must be in [1, 16]");
        return NULL;
    }
    if (M2C_CHECK_SIZES("B T C K", B, T, C, K) < 0) return NULL;
    if (m2c_get_array(dx, &v[0], "dx", ARRAY_F32, B * T * C, 1) < 0 ||
        m2c_get_array(dw, &v[1], "dweight", ARRAY_F32, C * K, 1) < 0 ||
        m2c_get_optional_array(db, &v[2], "dbias", ARRAY_F32, C, 1) < 0 ||
        m2c_get_optional_array(dstate, &v[3], "dstate", ARRAY_F32, B * C * K, 1) < 0 ||
        m2c_get_array(dout, &v[4], "dout", ARRAY_F32, B * T * C, 0) < 0 ||
        m2c_get_array(x, &v[5], "x", ARRAY_F32, B * T * C, 0) < 0 ||
        m2c_get_optional_array(state, &v[6], "state", ARRAY_F32, B * C * K, 0) < 0 ||
        m2c_get_weight(w, &v[7], &weight, "weight", C * K, 1) < 0 ||
        m2c_get_weight(b, &v[8], &bias, "bias", C, 0) < 0 ||
        m2c_get_optional_array(mask, &v[9], "mask", ARRAY_F32, B * T, 0) < 0) {
        m2c_release_all(v, 10);
        return NULL;
    }
    M2C_WITHOUT_GIL(st = m2c_conv1d_backward(v[0].buf, C, v[1].buf, v[2].buf, v[3].buf, v[4].buf,
                                         v[5].buf, C, v[6].buf, weight, bias, v[9].buf, B, T, C,
                                         K, silu));
    m2c_release_all(v, 10);
    if (st != M2C_OK) return m2c_raise(st);
    Py_RETURN_NONE;
}

static PyObject *op_dt_softplus_backward(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *draw, *dbias, *ddt, *raw, *bias;
    long long R, H;
    float lo, hi;
    Py_buffer v[5] = {0};
    m2c_tensor dt_bias;
    if (!PyArg_ParseTuple(args, "OOOOOLLff", &draw, &dbias, &ddt, &raw, &bias, &R, &H, &lo, &hi))
        return NULL;
    if (M2C_CHECK_SIZES("R H", R, H) < 0) return NULL;
    if (m2c_get_array(draw, &v[0], "ddt_raw", ARRAY_F32, R * H, 1) < 0 ||
        m2c_get_optional_array(dbias, &v[1], "ddt_bias", ARRAY_F32, H, 1) < 0 ||
        m2c_get_array(ddt, &v[2], "ddt", ARRAY_F32, R * H, 0) < 0 ||
        m2c_get_array(raw, &v[3], "dt", ARRAY_F32, R * H, 0) < 0 ||
        m2c_get_weight(bias, &v[4], &dt_bias, "dt_bias", H, 1) < 0) {
        m2c_release_all(v, 5);
        return NULL;
    }
    M2C_WITHOUT_GIL(m2c_dt_softplus_backward(v[0].buf, H, v[1].buf, v[2].buf, v[3].buf, H, dt_bias,
                                         R, H, lo, hi));
    m2c_release_all(v, 5);
    Py_RETURN_NONE;
}

static PyObject *op_ssd_chunked_backward(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *dxbc, *ddt, *dA, *dD, *dstate, *dy, *dfinal, *state, *xbc, *dt, *A, *D;
    long long B, T, H, P, N, G, Q;
    Py_buffer v[12] = {0};
    m2c_status st;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOLLLLLLL", &dxbc, &ddt, &dA, &dD, &dstate, &dy,
                          &dfinal, &state, &xbc, &dt, &A, &D, &B, &T, &H, &P, &N, &G, &Q))
        return NULL;
    if (B <= 0 || T <= 0 || H <= 0 || P <= 0 || N <= 0 || G <= 0 || H % G || Q <= 0) {
        PyErr_SetString(PyExc_ValueError, "sizes must be positive, heads must split evenly "
                                          "into groups and the chunk must be > 0");
        return NULL;
    }
    if (M2C_CHECK_SIZES("B T H P N G chunk", B, T, H, P, N, G, Q < T ? Q : T) < 0) return NULL;
    if (Q > T) Q = T; /* one chunk either way, and T + Q - 1 cannot overflow */
    long long ld = H * P + 2 * G * N;
    if (m2c_get_array(dxbc, &v[0], "dxbc", ARRAY_F32, B * T * ld, 1) < 0 ||
        m2c_get_array(ddt, &v[1], "ddt", ARRAY_F32, B * T * H, 1) < 0 ||
        m2c_get_array(dA, &v[2], "dA", ARRAY_F32, H, 1) < 0 ||
        m2c_get_array(dD, &v[3], "dD", ARRAY_F32, H, 1) < 0 ||
        m2c_get_optional_array(dstate, &v[4], "dstate", ARRAY_F32, B * H * P * N, 1) < 0 ||
        m2c_get_array(dy, &v[5], "dy", ARRAY_F32, B * T * H * P, 0) < 0 ||
        m2c_get_optional_array(dfinal, &v[6], "dfinal", ARRAY_F32, B * H * P * N, 0) < 0 ||
        m2c_get_optional_array(state, &v[7], "state", ARRAY_F32, B * H * P * N, 0) < 0 ||
        m2c_get_array(xbc, &v[8], "xbc", ARRAY_F32, B * T * ld, 0) < 0 ||
        m2c_get_array(dt, &v[9], "dt", ARRAY_F32, B * T * H, 0) < 0 ||
        m2c_get_array(A, &v[10], "A", ARRAY_F32, H, 0) < 0 ||
        m2c_get_array(D, &v[11], "D", ARRAY_F32, H, 0) < 0) {
        m2c_release_all(v, 12);
        return NULL;
    }
    float *work = PyMem_RawMalloc(
        sizeof(float) * (m2c_ssd_backward_work_floats(B, T, H, P, N, G, Q) + 1));
    if (!work) {
        m2c_release_all(v, 12);
        return PyErr_NoMemory();
    }
    float *dx = v[0].buf;
    const float *x = v[8].buf;
    M2C_WITHOUT_GIL(st = m2c_ssd_chunked_backward(
                    dx, dx + H * P, dx + H * P + G * N, ld, v[1].buf, v[2].buf, v[3].buf,
                    v[4].buf, v[5].buf, v[6].buf, v[7].buf, x, x + H * P, x + H * P + G * N, ld,
                    v[9].buf, v[10].buf, v[11].buf, B, T, H, P, N, G, Q, work));
    PyMem_RawFree(work);
    m2c_release_all(v, 12);
    if (st != M2C_OK) return m2c_raise(st);
    Py_RETURN_NONE;
}

/* Checks the logits, labels and (optional) gradient buffers of the two entries below. */
static int cross_entropy_args(Py_buffer *v, PyObject *dlogits, PyObject *logits, PyObject *labels,
                              long long B, long long T, long long V) {
    if (M2C_CHECK_SIZES("B T V", B, T, V) < 0) return -1;
    if (m2c_get_optional_array(dlogits, &v[0], "dlogits", ARRAY_F32, B * T * V, 1) < 0 ||
        m2c_get_array(logits, &v[1], "logits", ARRAY_F32, B * T * V, 0) < 0 ||
        m2c_get_array(labels, &v[2], "labels", ARRAY_I64, B * T, 0) < 0) {
        m2c_release_all(v, 3);
        return -1;
    }
    const int64_t *lab = v[2].buf;
    for (long long i = 0; i < B * T; i++)
        if (lab[i] != -100 && (lab[i] < 0 || lab[i] >= V)) {
            m2c_release_all(v, 3);
            PyErr_Format(PyExc_ValueError, "label %lld is out of range [0, %lld)",
                         (long long)lab[i], V);
            return -1;
        }
    return 0;
}

static PyObject *op_cross_entropy_backward(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *dlogits, *logits, *labels;
    long long B, T, V;
    float scale;
    Py_buffer v[3] = {0};
    if (!PyArg_ParseTuple(args, "OOOLLLf", &dlogits, &logits, &labels, &B, &T, &V, &scale))
        return NULL;
    if (dlogits == Py_None) {
        PyErr_SetString(PyExc_TypeError, "dlogits must be a writable float32 buffer");
        return NULL;
    }
    if (cross_entropy_args(v, dlogits, logits, labels, B, T, V) < 0) return NULL;
    M2C_WITHOUT_GIL(m2c_cross_entropy_backward(v[0].buf, v[1].buf, v[2].buf, B, T, V, scale));
    m2c_release_all(v, 3);
    Py_RETURN_NONE;
}

static PyObject *op_cross_entropy_with_grad(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *dlogits, *logits, *labels;
    long long B, T, V;
    float scale;
    double loss;
    Py_buffer v[3] = {0};
    if (!PyArg_ParseTuple(args, "OOOLLLf", &dlogits, &logits, &labels, &B, &T, &V, &scale))
        return NULL;
    if (cross_entropy_args(v, dlogits, logits, labels, B, T, V) < 0) return NULL;
    M2C_WITHOUT_GIL(loss = m2c_cross_entropy_with_grad(v[0].buf, v[1].buf, v[2].buf, B, T, V, scale));
    m2c_release_all(v, 3);
    return PyFloat_FromDouble(loss);
}

PyMethodDef m2c_backward_methods[] = {
    {"rmsnorm_backward", op_rmsnorm_backward, METH_VARARGS,
     "rmsnorm_backward(dx, dweight, dout, x, weight, row_scale, R, D, eps)"},
    {"rmsnorm_gated_backward", op_rmsnorm_gated_backward, METH_VARARGS,
     "rmsnorm_gated_backward(dy, dz, dweight, dout, y, z, weight, R, I, group_size, eps)"},
    {"conv1d_backward", op_conv1d_backward, METH_VARARGS,
     "conv1d_backward(dx, dweight, dbias, dstate, dout, x, state, weight, bias, mask, B, T, C, "
     "K, silu)"},
    {"dt_softplus_backward", op_dt_softplus_backward, METH_VARARGS,
     "dt_softplus_backward(ddt_raw, ddt_bias, ddt, dt, dt_bias, R, H, lo, hi)"},
    {"ssd_chunked_backward", op_ssd_chunked_backward, METH_VARARGS,
     "ssd_chunked_backward(dxbc, ddt, dA, dD, dstate, dy, dfinal, state, xbc, dt, A, D, B, T, H, "
     "P, N, G, Q)"},
    {"cross_entropy_backward", op_cross_entropy_backward, METH_VARARGS,
     "cross_entropy_backward(dlogits, logits, labels, B, T, V, scale)"},
    {"cross_entropy_with_grad", op_cross_entropy_with_grad, METH_VARARGS,
     "cross_entropy_with_grad(dlogits_or_None, logits, labels, B, T, V, scale) -> mean loss"},
    {NULL, NULL, 0, NULL},
};
