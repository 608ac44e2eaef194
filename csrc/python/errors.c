#include "binding.h"

PyObject *m2c_raise(m2c_status status) {
    PyObject *type = PyExc_RuntimeError;
    switch (status) {
    case M2C_ERR_VALUE: type = PyExc_ValueError; break;
    case M2C_ERR_TYPE: type = PyExc_TypeError; break;
    case M2C_ERR_MEMORY: type = PyExc_MemoryError; break;
    case M2C_ERR_INTERRUPTED: type = PyExc_KeyboardInterrupt; break;
    default: break;
    }
    PyErr_SetString(type, m2c_last_error());
    return NULL;
}
