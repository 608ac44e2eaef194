/* Shared pieces of the CPython binding: the only C that includes Python.h. */
#ifndef M2C_BINDING_H
#define M2C_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "mamba2c.h"
#include "../cpu/kernels.h"

/* Element kinds a buffer argument may hold. */
typedef enum { ARRAY_F32, ARRAY_I64, ARRAY_16BIT } array_kind;

/* Fills `view` with a C-contiguous buffer of `obj` holding exactly `count` elements of `kind`
 * (writable if asked). On failure sets a Python exception naming `name` and returns -1. */
int m2c_get_array(PyObject *obj, Py_buffer *view, const char *name, array_kind kind,
                  Py_ssize_t count, int writable);

/* Like m2c_get_array, but None leaves view->buf NULL and succeeds. */
int m2c_get_optional_array(PyObject *obj, Py_buffer *view, const char *name, array_kind kind,
                           Py_ssize_t count, int writable);

void m2c_release(Py_buffer *view);
void m2c_release_all(Py_buffer *views, int n);

/* Checks a kernel's size arguments before any element count is formed from them: each must be
 * >= 0 and their product (zeros counted as ones) at most 2**60, so every count built from them
 * (products of some of them, plus small multiples) fits in 64 bits: a count that wrapped around
 * could otherwise match a small buffer. `names` holds one space-separated name per size, for the
 * message. Sets ValueError and returns -1 when they do not pass. */
int m2c_check_sizes(const char *names, int n, const long long *sizes);
#define M2C_CHECK_SIZES(names, ...)                                                          \
    m2c_check_sizes(names, (int)(sizeof((long long[]){__VA_ARGS__}) / sizeof(long long)), \
                    (long long[]){__VA_ARGS__})

/* A weight given as (array, dtype code) or None; the view stays held by the caller. */
int m2c_get_weight(PyObject *spec, Py_buffer *view, m2c_tensor *out, const char *name,
                   Py_ssize_t count, int required);

/* Runs a kernel call with the GIL released, on the thread count set by set_num_threads. */
#define M2C_WITHOUT_GIL(stmt)        \
    do {                             \
        Py_BEGIN_ALLOW_THREADS       \
        m2c_threads_apply();         \
        stmt;                        \
        Py_END_ALLOW_THREADS         \
    } while (0)

/* Raises the Python exception matching `status` with the engine's message; returns NULL. */
PyObject *m2c_raise(m2c_status status);

extern PyTypeObject m2c_EngineType;
extern PyMethodDef m2c_backward_methods[]; /* backward.c: the training kernels */

/* Ctrl-C handling around a long call (see interrupt.c). */
typedef struct {
    int installed;
    PyOS_sighandler_t previous;
} m2c_sigint_guard;
void m2c_sigint_begin(m2c_sigint_guard *guard);
void m2c_sigint_end(m2c_sigint_guard *guard);
const volatile int *m2c_sigint_flag(void);

#endif
