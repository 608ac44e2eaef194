/* Buffer-protocol arguments. The Python layer hands over arrays it has already shaped; these
 * checks make sure a wrong call still fails cleanly instead of reading out of bounds. */
#include "binding.h"

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
    if (view->len != count * view->itemsize) {
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

void m2c_release(Py_buffer *view) {
    if (view->obj) PyBuffer_Release(view);
    view->buf = NULL;
    view->obj = NULL;
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
