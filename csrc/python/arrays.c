/* Buffer-protocol arguments. The Python layer hands over arrays it has already shaped; these
 * checks make sure a wrong call still fails cleanly instead of reading out of bounds. */
#include "binding.h"

#include <stdio.h>
#include <string.h>

static const char *kind_name(array_kind kind) {
    return kind == ARRAY_F32 ? "float32" : kind == ARRAY_I64 ? "int64" : "a 16-bit float";
}

static int format_matches(const char *format, Py_ssize_t itemsize, array_kind kind) {
    if (!format) format = "B";
    if (*format == '<' || *format == '=' || *format == '@') format++;
    switch (kind) {
    case ARRAY_F32: return itemsize == 4 && strcmp(format, "f") == 0;
    case ARRAY_I64: return itemsize == 8 && (strcmp(format, "q") == 0 || strcmp(format, "l") == 0);
    default: return itemsize == 2 && (strcmp(format, "H") == 0 || strcmp(format, "e") == 0 ||
                                      strcmp(format, "h") == 0);
    }
}

int m2c_get_array(PyObject *obj, Py_buffer *view, const char *name, array_kind kind,
                  Py_ssize_t count, int writable) {
    int flags = PyBUF_C_CONTIGUOUS | PyBUF_FORMAT | (writable ? PyBUF_WRITABLE : 0);
    view->buf = NULL;
    view->obj = NULL;
    if (PyObject_GetBuffer(obj, view, flags) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s must be a C-contiguous%s buffer of %s", name,
                     writable ? " writable" : "", kind_name(kind));
        view->buf = NULL;
        view->obj = NULL;
        return -1;
    }
    if (!format_matches(view->format, view->itemsize, kind)) {
        PyErr_Format(PyExc_TypeError, "%s must hold %s (buffer format '%s')", name,
                     kind_name(kind), view->format ? view->format : "B");
        m2c_release(view);
        return -1;
    }
    if (count < 0 || count > PY_SSIZE_T_MAX / view->itemsize ||
        view->len != count * view->itemsize) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd elements, expected %zd", name,
                     view->len / view->itemsize, count);
        m2c_release(view);
        return -1;
    }
    return 0;
}

int m2c_get_optional_array(PyObject *obj, Py_buffer *view, const char *name, array_kind kind,
                           Py_ssize_t count, int writable) {
    if (obj == NULL || obj == Py_None) {
        view->buf = NULL;
        view->obj = NULL;
        return 0;
    }
    return m2c_get_array(obj, view, name, kind, count, writable);
}

enum { MAX_SIZES_LOG2 = 60 };

int m2c_check_sizes(const char *names, int n, const long long *sizes) {
    const char *name = names;
    long long product = 1;
    for (int i = 0; i < n; i++) {
        char one[32];
        size_t len = strcspn(name, " ");
        snprintf(one, sizeof one, "%.*s", (int)len, name);
        if (sizes[i] < 0) {
            PyErr_Format(PyExc_ValueError, "size %s must be >= 0, got %lld", one, sizes[i]);
            return -1;
        }
        if (sizes[i] > 1 && (__builtin_mul_overflow(product, sizes[i], &product) ||
                             product > (1LL << MAX_SIZES_LOG2))) {
            PyErr_Format(PyExc_ValueError, "sizes (%s) are too large: their product is over 2**%d",
                         names, MAX_SIZES_LOG2);
            return -1;
        }
        name += len + (name[len] == ' ');
    }
    return 0;
}

void m2c_release(Py_buffer *view) {
    if (view->obj) PyBuffer_Release(view);
    view->buf = NULL;
    view->obj = NULL;
}

void m2c_release_all(Py_buffer *views, int n) {
    for (int i = 0; i < n; i++) m2c_release(&views[i]);
}

int m2c_get_weight(PyObject *spec, Py_buffer *view, m2c_tensor *out, const char *name,
                   Py_ssize_t count, int required) {
    memset(out, 0, sizeof *out);
    view->buf = NULL;
    view->obj = NULL;
    if (spec == Py_None) {
        if (!required) return 0;
        PyErr_Format(PyExc_ValueError, "weight %s is required", name);
        return -1;
    }
    PyObject *array;
    int dtype;
    /* PyArg_ParseTuple on a non-tuple raises SystemError, which reads as an interpreter bug. */
    if (!PyTuple_Check(spec) || PyTuple_GET_SIZE(spec) != 2) {
        PyErr_Format(PyExc_TypeError, "weight %s must be an (array, dtype code) pair or None, "
                     "got %.100s", name, Py_TYPE(spec)->tp_name);
        return -1;
    }
    if (!PyArg_ParseTuple(spec, "Oi", &array, &dtype)) return -1;
    if (dtype < M2C_F32 || dtype > M2C_F16) {
        PyErr_Format(PyExc_TypeError, "weight %s has an unknown dtype code %d", name, dtype);
        return -1;
    }
    if (m2c_get_array(array, view, name, dtype == M2C_F32 ? ARRAY_F32 : ARRAY_16BIT, count, 0) < 0)
        return -1;
    out->data = view->buf;
    out->dtype = (m2c_dtype)dtype;
    return 0;
}
