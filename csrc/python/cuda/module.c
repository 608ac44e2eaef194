/* mamba2c._cuda: device memory, copies, graphs and DLPack for the Python layer, and the CUDA
 * operation table that mamba2c._C's engine runs on (handed over in a capsule). Pointers cross
 * into Python as integers; mamba2c/cuda.py wraps them in DeviceArray objects that own them. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <cuda_runtime_api.h>
#include <stdlib.h>
#include <string.h>

#include "../../model/backend.h"
#include "dlpack.h"

extern const m2c_backend m2c_cuda_backend;
cudaStream_t m2c_cuda_stream(void);
unsigned long m2c_cuda_scratch_epoch(void);
m2c_status m2c_cuda_prepare_products(m2c_dtype dtype);

static PyObject *raise_cuda(cudaError_t err, const char *doing) {
    cudaGetLastError(); /* clear it, so the next call starts clean */
    PyErr_Format(err == cudaErrorMemoryAllocation ? PyExc_MemoryError : PyExc_RuntimeError,
                 "CUDA error while %s: %s", doing, cudaGetErrorString(err));
    return NULL;
}

static void *as_pointer(PyObject *obj) { return PyLong_AsVoidPtr(obj); }

/* (number of devices, None) or (0, why not): never raises, so import works everywhere. */
static PyObject *probe(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
        cudaGetLastError();
        return Py_BuildValue("(is)", 0, cudaGetErrorString(err));
    }
    if (count == 0) return Py_BuildValue("(is)", 0, "no CUDA device was found");
    return Py_BuildValue("(iO)", count, Py_None);
}

static PyObject *device_name(PyObject *self, PyObject *arg) {
    (void)self;
    int device = (int)PyLong_AsLong(arg);
    if (device == -1 && PyErr_Occurred()) return NULL;
    struct cudaDeviceProp prop;
    cudaError_t err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) return raise_cuda(err, "reading the device's properties");
    return Py_BuildValue("(sii)", prop.name, prop.major, prop.minor);
}

static PyObject *set_device(PyObject *self, PyObject *arg) {
    (void)self;
    int device = (int)PyLong_AsLong(arg);
    if (device == -1 && PyErr_Occurred()) return NULL;
    cudaError_t err = cudaSetDevice(device);
    if (err != cudaSuccess) return raise_cuda(err, "selecting the device");
    Py_RETURN_NONE;
}

static PyObject *mem_info(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    size_t free_bytes = 0, total = 0;
    cudaError_t err = cudaMemGetInfo(&free_bytes, &total);
    if (err != cudaSuccess) return raise_cuda(err, "reading the memory in use");
    return Py_BuildValue("(nn)", (Py_ssize_t)free_bytes, (Py_ssize_t)total);
}

static PyObject *alloc(PyObject *self, PyObject *arg) {
    (void)self;
    Py_ssize_t bytes = PyLong_AsSsize_t(arg);
    if (bytes < 0) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a negative size");
        return NULL;
    }
    void *p = NULL;
    cudaError_t err;
    Py_BEGIN_ALLOW_THREADS
    err = cudaMalloc(&p, bytes ? (size_t)bytes : 1);
    Py_END_ALLOW_THREADS
    if (err != cudaSuccess) {
        size_t free_bytes = 0, total = 0;
        cudaGetLastError();
        cudaMemGetInfo(&free_bytes, &total);
        PyErr_Format(PyExc_MemoryError, "cannot allocate %zd bytes of GPU memory (%zu of %zu "
                     "free): %s", bytes, free_bytes, total, cudaGetErrorString(err));
        return NULL;
    }
    return PyLong_FromVoidPtr(p);
}

static PyObject *release(PyObject *self, PyObject *arg) {
    (void)self;
    void *p = as_pointer(arg);
    if (!p && PyErr_Occurred()) return NULL;
    cudaFree(p);
    Py_RETURN_NONE;
}

/* A copy between a host buffer and device memory at `ptr`, complete on return. */
static PyObject *host_copy(PyObject *ptr, Py_buffer *view, int to_device) {
    void *p = as_pointer(ptr);
    cudaError_t err = cudaSuccess;
    if (!PyErr_Occurred()) {
        Py_BEGIN_ALLOW_THREADS
        err = to_device ? cudaMemcpyAsync(p, view->buf, (size_t)view->len,
                                          cudaMemcpyHostToDevice, m2c_cuda_stream())
                        : cudaMemcpyAsync(view->buf, p, (size_t)view->len,
                                          cudaMemcpyDeviceToHost, m2c_cuda_stream());
        if (err == cudaSuccess) err = cudaStreamSynchronize(m2c_cuda_stream());
        Py_END_ALLOW_THREADS
    }
    PyBuffer_Release(view);
    if (PyErr_Occurred()) return NULL;
    if (err != cudaSuccess) return raise_cuda(err, to_device ? "copying to the GPU"
                                                             : "copying from the GPU");
    Py_RETURN_NONE;
}

/* upload(pointer, buffer): host to device. */
static PyObject *upload(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ptr;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "Oy*", &ptr, &view)) return NULL;
    return host_copy(ptr, &view, 1);
}

/* download(buffer, pointer): device to a writable host buffer. */
static PyObject *download(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *ptr;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "w*O", &view, &ptr)) return NULL;
    return host_copy(ptr, &view, 0);
}

/* copy(dst, src, bytes): device to device, queued on the stream. */
static PyObject *copy(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *dst, *src;
    Py_ssize_t bytes;
    if (!PyArg_ParseTuple(args, "OOn", &dst, &src, &bytes)) return NULL;
    void *d = as_pointer(dst), *s = as_pointer(src);
    if (PyErr_Occurred()) return NULL;
    cudaError_t err = cudaMemcpyAsync(d, s, (size_t)bytes, cudaMemcpyDeviceToDevice,
                                      m2c_cuda_stream());
    if (err != cudaSuccess) return raise_cuda(err, "copying on the GPU");
    Py_RETURN_NONE;
}

static PyObject *zero(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *dst;
    Py_ssize_t bytes;
    if (!PyArg_ParseTuple(args, "On", &dst, &bytes)) return NULL;
    void *d = as_pointer(dst);
    if (PyErr_Occurred()) return NULL;
    cudaError_t err = cudaMemsetAsync(d, 0, (size_t)bytes, m2c_cuda_stream());
    if (err != cudaSuccess) return raise_cuda(err, "zeroing GPU memory");
    Py_RETURN_NONE;
}

static PyObject *synchronize(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    cudaError_t err;
    Py_BEGIN_ALLOW_THREADS
    err = cudaStreamSynchronize(m2c_cuda_stream());
    Py_END_ALLOW_THREADS
    if (err != cudaSuccess) return raise_cuda(err, "waiting for the GPU");
    Py_RETURN_NONE;
}

/* capture(fn) -> graph: records what fn() queues on the stream (one engine call) into an
 * executable CUDA graph, replayed by launch(graph) with no per-kernel launch cost. */
static PyObject *capture(PyObject *self, PyObject *fn) {
    (void)self;
    cudaStream_t s = m2c_cuda_stream();
    cudaError_t err = cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal);
    if (err != cudaSuccess) return raise_cuda(err, "starting a graph capture");
    PyObject *result = PyObject_CallNoArgs(fn);
    cudaGraph_t graph = NULL;
    err = cudaStreamEndCapture(s, &graph);
    if (!result) {
        if (graph) cudaGraphDestroy(graph);
        cudaGetLastError();
        return NULL;
    }
    Py_DECREF(result);
    if (err != cudaSuccess) return raise_cuda(err, "capturing a graph");
    cudaGraphExec_t exec = NULL;
    err = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    if (err != cudaSuccess) return raise_cuda(err, "instantiating a graph");
    return PyLong_FromVoidPtr(exec);
}

static PyObject *launch(PyObject *self, PyObject *arg) {
    (void)self;
    cudaGraphExec_t exec = (cudaGraphExec_t)as_pointer(arg);
    if (PyErr_Occurred()) return NULL;
    cudaError_t err = cudaGraphLaunch(exec, m2c_cuda_stream());
    if (err != cudaSuccess) return raise_cuda(err, "replaying a graph");
    Py_RETURN_NONE;
}

static PyObject *destroy_graph(PyObject *self, PyObject *arg) {
    (void)self;
    cudaGraphExec_t exec = (cudaGraphExec_t)as_pointer(arg);
    if (PyErr_Occurred()) return NULL;
    cudaGraphExecDestroy(exec);
    Py_RETURN_NONE;
}

static PyObject *scratch_epoch(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    return PyLong_FromUnsignedLong(m2c_cuda_scratch_epoch());
}

static PyObject *prepare_products(PyObject *self, PyObject *arg) {
    (void)self;
    long dtype = PyLong_AsLong(arg);
    if (dtype == -1 && PyErr_Occurred()) return NULL;
    if (dtype != M2C_F32 && dtype != M2C_BF16 && dtype != M2C_F16)
        return PyErr_Format(PyExc_ValueError, "unknown dtype code %ld", dtype);
    m2c_status st;
    Py_BEGIN_ALLOW_THREADS
    st = m2c_cuda_prepare_products((m2c_dtype)dtype);
    Py_END_ALLOW_THREADS
    if (st != M2C_OK) return PyErr_Format(PyExc_RuntimeError, "%s", m2c_last_error());
    Py_RETURN_NONE;
}

static PyObject *backend(PyObject *self, PyObject *args) {
    (void)self, (void)args;
    return PyCapsule_New((void *)&m2c_cuda_backend, "mamba2c.backend", NULL);
}

/* ---- DLPack ---- */

/* What an exported capsule owns: the managed tensor (either layout), its shape, and a
 * reference to the Python object whose memory it describes. */
typedef struct {
    DLManagedTensor legacy;
    DLManagedTensorVersioned versioned;
    PyObject *owner;
    int64_t shape[8];
} exported;

static void exported_free(exported *e) {
    PyGILState_STATE gil = PyGILState_Ensure(); /* the consumer may drop it on any thread */
    Py_XDECREF(e->owner);
    PyGILState_Release(gil);
    free(e);
}

static void legacy_deleter(DLManagedTensor *t) { exported_free((exported *)t->manager_ctx); }
static void versioned_deleter(DLManagedTensorVersioned *t) {
    exported_free((exported *)t->manager_ctx);
}

/* A capsule still carrying its original name was never consumed: its owner must be freed. */
static void legacy_capsule_free(PyObject *capsule) {
    if (PyCapsule_IsValid(capsule, "dltensor")) {
        DLManagedTensor *t = PyCapsule_GetPointer(capsule, "dltensor");
        t->deleter(t);
    }
}

static void versioned_capsule_free(PyObject *capsule) {
    if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
        DLManagedTensorVersioned *t = PyCapsule_GetPointer(capsule, "dltensor_versioned");
        t->deleter(t);
    }
}

/* to_dlpack(owner, pointer, shape, (code, bits), device, versioned) -> capsule */
static PyObject *to_dlpack(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *owner, *ptr, *shape;
    int code, bits, device, versioned;
    if (!PyArg_ParseTuple(args, "OOO!(ii)ip", &owner, &ptr, &PyTuple_Type, &shape, &code, &bits,
                          &device, &versioned))
        return NULL;
    void *data = as_pointer(ptr);
    if (PyErr_Occurred()) return NULL;
    Py_ssize_t ndim = PyTuple_GET_SIZE(shape);
    if (ndim > 8) {
        PyErr_SetString(PyExc_ValueError, "at most 8 dimensions can be exported");
        return NULL;
    }
    exported *e = calloc(1, sizeof *e);
    if (!e) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < ndim; i++) {
        e->shape[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(shape, i));
        if (PyErr_Occurred()) {
            free(e);
            return NULL;
        }
    }
    DLTensor t = {data, {DL_CUDA, device}, (int32_t)ndim,
                  {(uint8_t)code, (uint8_t)bits, 1}, e->shape, NULL, 0};
    e->owner = Py_NewRef(owner);
    if (versioned) {
        e->versioned = (DLManagedTensorVersioned){{1, 0}, e, versioned_deleter, 0, t};
        PyObject *c = PyCapsule_New(&e->versioned, "dltensor_versioned", versioned_capsule_free);
        if (!c) exported_free(e);
        return c;
    }
    e->legacy = (DLManagedTensor){t, e, legacy_deleter};
    PyObject *c = PyCapsule_New(&e->legacy, "dltensor", legacy_capsule_free);
    if (!c) exported_free(e);
    return c;
}

/* The managed tensor a consumed capsule gave us, freed with the keep-alive object. */
static void imported_free(PyObject *keepalive) {
    const char *name = PyCapsule_GetName(keepalive);
    void *t = PyCapsule_GetPointer(keepalive, name);
    if (!t) return;
    if (strcmp(name, "mamba2c.dlpack_versioned") == 0) {
        DLManagedTensorVersioned *v = t;
        if (v->deleter) v->deleter(v);
    } else {
        DLManagedTensor *m = t;
        if (m->deleter) m->deleter(m);
    }
}

/* from_dlpack(capsule) -> (pointer, shape, strides or None, (code, bits), (device type, id),
 * keep-alive): consumes the capsule; the memory stays valid while keep-alive lives. */
static PyObject *from_dlpack(PyObject *self, PyObject *capsule) {
    (void)self;
    DLTensor *t;
    PyObject *keepalive;
    if (PyCapsule_IsValid(capsule, "dltensor_versioned")) {
        DLManagedTensorVersioned *v = PyCapsule_GetPointer(capsule, "dltensor_versioned");
        if (v->version.major != 1) {
            PyErr_Format(PyExc_BufferError, "DLPack version %u is not supported", v->version.major);
            return NULL;
        }
        t = &v->dl_tensor;
        keepalive = PyCapsule_New(v, "mamba2c.dlpack_versioned", imported_free);
        if (!keepalive) return NULL;
        PyCapsule_SetName(capsule, "used_dltensor_versioned"); /* ours now */
    } else if (PyCapsule_IsValid(capsule, "dltensor")) {
        DLManagedTensor *m = PyCapsule_GetPointer(capsule, "dltensor");
        t = &m->dl_tensor;
        keepalive = PyCapsule_New(m, "mamba2c.dlpack", imported_free);
        if (!keepalive) return NULL;
        PyCapsule_SetName(capsule, "used_dltensor");
    } else {
        PyErr_SetString(PyExc_TypeError, "expected an unconsumed DLPack capsule");
        return NULL;
    }
    PyObject *shape = PyTuple_New(t->ndim), *strides = Py_None;
    if (!shape) goto fail;
    for (int i = 0; i < t->ndim; i++) PyTuple_SET_ITEM(shape, i, PyLong_FromLongLong(t->shape[i]));
    if (t->strides) {
        strides = PyTuple_New(t->ndim);
        if (!strides) goto fail;
        for (int i = 0; i < t->ndim; i++)
            PyTuple_SET_ITEM(strides, i, PyLong_FromLongLong(t->strides[i]));
    } else {
        Py_INCREF(strides);
    }
    return Py_BuildValue("(NNN(ii)(ii)N)", PyLong_FromVoidPtr((char *)t->data + t->byte_offset),
                         shape, strides, t->dtype.code, t->dtype.bits * t->dtype.lanes,
                         t->device.device_type, t->device.device_id, keepalive);
fail:
    Py_XDECREF(keepalive);
    return NULL;
}

static PyMethodDef methods[] = {
    {"probe", probe, METH_NOARGS, "probe() -> (device count, None or the reason there is none)"},
    {"device_name", device_name, METH_O, "device_name(i) -> (name, major, minor)"},
    {"set_device", set_device, METH_O, "set_device(i): the device later calls use"},
    {"mem_info", mem_info, METH_NOARGS, "mem_info() -> (free bytes, total bytes)"},
    {"alloc", alloc, METH_O, "alloc(bytes) -> pointer"},
    {"release", release, METH_O, "release(pointer)"},
    {"upload", upload, METH_VARARGS, "upload(pointer, buffer): host to device"},
    {"download", download, METH_VARARGS, "download(buffer, pointer): device to host"},
    {"copy", copy, METH_VARARGS, "copy(dst, src, bytes): device to device"},
    {"zero", zero, METH_VARARGS, "zero(pointer, bytes)"},
    {"synchronize", synchronize, METH_NOARGS, "synchronize(): wait for queued work"},
    {"capture", capture, METH_O, "capture(fn) -> graph: record fn()'s GPU work"},
    {"launch", launch, METH_O, "launch(graph): replay a recorded graph"},
    {"destroy_graph", destroy_graph, METH_O, "destroy_graph(graph)"},
    {"scratch_epoch", scratch_epoch, METH_NOARGS,
     "scratch_epoch() -> how many times the backend's own scratch buffers were reallocated"},
    {"prepare_products", prepare_products, METH_O, "prepare_products(dtype code): cuBLAS "
     "opened on the current device and set up for products of that type"},
    {"backend", backend, METH_NOARGS, "backend() -> capsule of the CUDA operation table"},
    {"to_dlpack", to_dlpack, METH_VARARGS, "to_dlpack(owner, pointer, shape, (code, bits), "
     "device, versioned) -> capsule"},
    {"from_dlpack", from_dlpack, METH_O, "from_dlpack(capsule) -> (pointer, shape, strides, "
     "(code, bits), (device type, id), keep-alive)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mamba2c._cuda",
    .m_doc = "mamba2c's CUDA backend.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC PyInit__cuda(void) { return PyModule_Create(&module); }
