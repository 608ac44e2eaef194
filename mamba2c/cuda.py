"""The CUDA backend's Python side: whether a GPU can be used, and DeviceArray, a block of GPU
memory with a shape and dtype that the engine reads and writes and that other libraries take
without a copy (DLPack, ``__cuda_array_interface__``).

Importing this module never fails: on a machine without the CUDA build, a driver or a GPU,
:func:`is_available` is False and :func:`unavailable_reason` says why.
"""
from __future__ import annotations

import math
import weakref
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .dtypes import STORAGE, as_numpy, convert, public_view

try:
    from . import _cuda
    _PROBE = _cuda.probe()
except ImportError as error:  # built without nvcc, or the CUDA runtime cannot load
    _cuda = None
    _PROBE = (0, f"the CUDA backend is not built or cannot load ({error})")

#: dtype name -> (item size, DLPack (type code, bits), __cuda_array_interface__ typestr or None)
_DTYPES = {
    "float32": (4, (2, 32), "<f4"),
    "float16": (2, (2, 16), "<f2"),
    "bfloat16": (2, (4, 16), None),  # no typestr describes bfloat16 unambiguously
    "int64": (8, (0, 64), "<i8"),
    "uint8": (1, (1, 8), "|u1"),
}
_FROM_DLPACK = {value[1]: name for name, value in _DTYPES.items()}


def is_available() -> bool:
    """True when the CUDA backend is built and at least one GPU can be used."""
    return _PROBE[0] > 0


def unavailable_reason() -> Optional[str]:
    """Why CUDA cannot be used here, or None when it can."""
    return _PROBE[1]


def device_count() -> int:
    """Number of usable GPUs (0 without CUDA)."""
    return _PROBE[0]


def parse_device(device: Any) -> Optional[int]:
    """The GPU index of "cuda", "cuda:N" or a torch device; None for "cpu"."""
    text = str(device)
    if text == "cpu":
        return None
    if text == "cuda" or text.startswith("cuda:"):
        index = int(text[5:]) if text.startswith("cuda:") else 0
        if not is_available():
            raise RuntimeError(f"device {text!r} is not available: {unavailable_reason()}")
        if not 0 <= index < device_count():
            raise ValueError(f"device {text!r} does not exist: {device_count()} GPU(s) found")
        return index
    raise ValueError(f"unknown device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'")


def _require() -> Any:
    if not is_available():
        raise RuntimeError(f"CUDA is not available: {unavailable_reason()}")
    _load_cublas_from_wheels()
    return _cuda


_CUBLAS_SEARCHED = False


def _load_cublas_from_wheels() -> None:
    """Makes the CUDA backend's dlopen("libcublas.so.13") succeed when cuBLAS comes from the
    nvidia-cublas wheel (as torch installs it) rather than from a folder the loader searches:
    a library already loaded under that name is found by name."""
    global _CUBLAS_SEARCHED
    if _CUBLAS_SEARCHED:
        return
    _CUBLAS_SEARCHED = True
    import ctypes
    import glob
    import importlib.util
    import os

    try:
        ctypes.CDLL("libcublas.so.13")
        return
    except OSError:
        pass
    spec = importlib.util.find_spec("nvidia")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for path in sorted(glob.glob(os.path.join(folder, "*", "lib", "libcublas.so.1[0-9]"))):
            try:
                ctypes.CDLL(os.path.join(os.path.dirname(path), "libcublasLt.so" + path[-3:]),
                            mode=ctypes.RTLD_GLOBAL)
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return
            except OSError:
                continue


class DeviceArray:
    """A C-contiguous array in GPU memory.

    The engine writes its outputs (logits, hidden states, cache) into DeviceArrays; ``numpy()``
    copies one to the host, and ``torch.from_dlpack(array)`` or ``cupy.from_dlpack(array)`` view
    it without a copy. Memory is freed when the last reference (including views handed out
    through DLPack) goes.
    """

    __slots__ = ("_pointer", "shape", "dtype", "device_index", "_owner", "__weakref__")

    def __init__(self, pointer: int, shape: Sequence[int], dtype: str, device_index: int,
                 owner: Any = None) -> None:
        self._pointer = int(pointer)
        self.shape: Tuple[int, ...] = tuple(int(n) for n in shape)
        self.dtype: str = dtype
        self.device_index = int(device_index)
        self._owner = owner  # what keeps the memory alive when it is not ours

    # ---- making them ----
    @classmethod
    def empty(cls, shape: Sequence[int], dtype: str = "float32", device: int = 0) -> "DeviceArray":
        """Uninitialised memory of this shape and dtype on GPU `device`."""
        cuda = _require()
        cuda.set_device(device)
        nbytes = math.prod(shape) * _DTYPES[dtype][0]
        pointer = cuda.alloc(nbytes)
        array = cls(pointer, shape, dtype, device)
        weakref.finalize(array, cuda.release, pointer)
        return array

    @classmethod
    def zeros(cls, shape: Sequence[int], dtype: str = "float32", device: int = 0) -> "DeviceArray":
        """Zero-filled memory of this shape and dtype on GPU `device`."""
        array = cls.empty(shape, dtype, device)
        _cuda.zero(array.pointer, array.nbytes)
        return array

    @classmethod
    def from_numpy(cls, array: np.ndarray, dtype: Optional[str] = None,
                   device: int = 0) -> "DeviceArray":
        """A copy of a host array on the GPU. `dtype` names the storage when it is not the
        array's own (bfloat16 arrives as its uint16 bits)."""
        host = np.ascontiguousarray(array)
        name = dtype or host.dtype.name
        if name not in _DTYPES:
            raise TypeError(f"cannot put {host.dtype} values on the GPU")
        out = cls.empty(host.shape, name, device)
        if host.nbytes:
            _cuda.upload(out.pointer, host.reshape(-1).view(np.uint8))
        return out

    @classmethod
    def from_dlpack(cls, obj: Any) -> "DeviceArray":
        """A view, without a copy, of a CUDA tensor from torch, CuPy or anything else that
        exports DLPack; it must be C-contiguous."""
        kind, index = obj.__dlpack_device__()
        if int(kind) != 2:
            raise ValueError("from_dlpack needs a CUDA tensor; copy host data with from_numpy")
        pointer, shape, strides, dtype, _, keepalive = _require().from_dlpack(obj.__dlpack__())
        name = _FROM_DLPACK.get(tuple(dtype))
        if name is None:
            raise TypeError(f"unsupported DLPack dtype (code, bits) = {tuple(dtype)}")
        if strides is not None and not _c_contiguous(shape, strides):
            raise ValueError("the tensor is not C-contiguous: call .contiguous() first")
        return cls(pointer, shape, name, int(index), owner=keepalive)

    # ---- what they are ----
    @property
    def pointer(self) -> int:
        """The device address of element 0."""
        return self._pointer

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of memory the elements take."""
        return self.size * _DTYPES[self.dtype][0]

    @property
    def device(self) -> str:
        """"cuda:N", as torch names it."""
        return f"cuda:{self.device_index}"

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, device={self.device})"

    # ---- to the host ----
    def numpy(self) -> np.ndarray:
        """A host copy (bfloat16 as ml_dtypes.bfloat16 when installed, else its uint16 bits)."""
        storage = STORAGE[self.dtype][0] if self.dtype in STORAGE else np.dtype(self.dtype)
        host = np.empty(self.shape, storage)
        if host.nbytes:
            _cuda.set_device(self.device_index)
            _cuda.download(host.reshape(-1).view(np.uint8), self.pointer)
        return public_view(host, self.dtype) if self.dtype in STORAGE else host

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        host = self.numpy()
        return host if dtype is None else host.astype(dtype)

    # ---- exchange without copies ----
    def __dlpack_device__(self) -> Tuple[int, int]:
        return (2, self.device_index)

    def __dlpack__(self, stream: Any = None, max_version: Optional[Tuple[int, int]] = None,
                   dl_device: Any = None, copy: Optional[bool] = None) -> Any:
        if copy:
            raise BufferError("DeviceArray exports views only (copy=True is not supported)")
        if dl_device is not None and tuple(dl_device) != self.__dlpack_device__():
            raise BufferError(f"cannot export to device {dl_device}")
        # Our work is queued on the engine's stream: finish it before another stream reads.
        _cuda.synchronize()
        versioned = max_version is not None and tuple(max_version)[0] >= 1
        return _cuda.to_dlpack(self, self.pointer, self.shape, _DTYPES[self.dtype][1],
                               self.device_index, versioned)

    @property
    def __cuda_array_interface__(self) -> dict:
        typestr = _DTYPES[self.dtype][2]
        if typestr is None:
            raise AttributeError("bfloat16 has no __cuda_array_interface__ typestr: use DLPack")
        _cuda.synchronize()
        return {"shape": self.shape, "typestr": typestr, "data": (self.pointer, False),
                "version": 3, "strides": None, "stream": None}

    def __getitem__(self, index: int) -> "DeviceArray":
        """Element `index` of the first axis, as a view sharing this array's memory (other
        indexing: copy to the host with numpy() first)."""
        if not isinstance(index, (int, np.integer)) or not self.shape:
            raise TypeError("a DeviceArray takes one integer index; use .numpy() for more")
        i = int(index) + (self.shape[0] if index < 0 else 0)
        if not 0 <= i < self.shape[0]:
            raise IndexError(f"index {index} out of range for {self.shape[0]}")
        step = math.prod(self.shape[1:]) * _DTYPES[self.dtype][0]
        return DeviceArray(self.pointer + i * step, self.shape[1:], self.dtype,
                           self.device_index, owner=self)


def _c_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    expected = 1
    for n, s in zip(reversed(shape), reversed(strides)):
        if n != 1 and s != expected:
            return False
        expected *= n
    return True


def to_device(value: Any, device: int, dtype: Optional[str] = None) -> DeviceArray:
    """`value` on GPU `device`: a DeviceArray or a CUDA tensor of the right dtype is used as
    it is (no copy); anything else (NumPy, lists, CPU tensors) is copied, converted to `dtype`
    when given."""
    if isinstance(value, DeviceArray):
        array = value
    elif hasattr(value, "__dlpack_device__") and int(value.__dlpack_device__()[0]) == 2:
        array = DeviceArray.from_dlpack(value)
    else:
        host, src = as_numpy(value)
        if dtype in STORAGE:
            if src is None:
                host, src = np.asarray(host, dtype=np.float32), "float32"
            host = convert(host, src, dtype)
        elif dtype is not None:
            host = np.asarray(host, dtype=dtype)
        return DeviceArray.from_numpy(host, dtype, device)
    if dtype is not None and array.dtype != dtype:
        raise TypeError(f"expected a {dtype} tensor on the GPU, got {array.dtype}")
    if array.device_index != device:
        raise ValueError(f"the tensor is on cuda:{array.device_index}, the model on cuda:{device}")
    return array


def prepare_products(device: int, dtype: str) -> None:
    """Opens cuBLAS on GPU `device` and lets it set itself up for products of `dtype` weights
    (tens of milliseconds, once per process, device and dtype), so that a model placed there
    does not spend that time in its first forward. A missing cuBLAS is not an error here: it is
    reported by the first product that needs it, and single-row decoding never does."""
    _cuda.set_device(device)
    try:
        _cuda.prepare_products(STORAGE[dtype][1])
    except RuntimeError:
        pass
