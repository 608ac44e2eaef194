"""Weight dtypes and conversions between NumPy, torch and the engine's storage.

bfloat16 has no NumPy dtype, so bfloat16 weights are stored as ``uint16`` arrays holding the bit
patterns; float16 uses NumPy's ``float16``. The engine widens both to float32 as it loads them.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

#: dtype name -> (NumPy storage dtype, engine dtype code)
STORAGE: Dict[str, Tuple[np.dtype, int]] = {
    "float32": (np.dtype(np.float32), 0),
    "bfloat16": (np.dtype(np.uint16), 1),
    "float16": (np.dtype(np.float16), 2),
}

_ALIASES = {
    "float32": "float32", "fp32": "float32", "float": "float32", "torch.float32": "float32",
    "bfloat16": "bfloat16", "bf16": "bfloat16", "torch.bfloat16": "bfloat16",
    "float16": "float16", "fp16": "float16", "half": "float16", "torch.float16": "float16",
}


def dtype_name(dtype: Any) -> str:
    """The canonical weight dtype name ("float32", "bfloat16", "float16") of a string, NumPy,
    ml_dtypes or torch dtype; ValueError for anything else."""
    key = str(dtype).lower()
    if key not in _ALIASES and isinstance(dtype, (type, np.dtype)):
        key = np.dtype(dtype).name
    if key not in _ALIASES:
        raise ValueError(f"unsupported dtype {dtype!r}: expected float32, bfloat16 or float16")
    return _ALIASES[key]


def float32_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest even, NaN kept NaN) and return the bits."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    """float32 values of bfloat16 bit patterns (exact)."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def to_float32(array: np.ndarray, name: str) -> np.ndarray:
    """float32 values of a stored weight."""
    if name == "bfloat16":
        return bfloat16_bits_to_float32(array)
    return np.asarray(array, dtype=np.float32)


def from_float32(values: np.ndarray, name: str) -> np.ndarray:
    """Storage array of dtype `name` holding `values` (rounded to nearest)."""
    if name == "bfloat16":
        return float32_to_bfloat16_bits(values)
    return np.ascontiguousarray(values, dtype=STORAGE[name][0])


def convert(array: np.ndarray, src: str, dst: str) -> np.ndarray:
    """A stored weight of dtype `src` as dtype `dst` (the array itself when they are equal)."""
    if src == dst:
        return array
    return from_float32(to_float32(array, src), dst)


def _is_torch_tensor(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "torch" and hasattr(obj, "detach")


def as_numpy(obj: Any) -> tuple[np.ndarray, str | None]:
    """A NumPy array for `obj` (NumPy array, torch tensor, ml_dtypes array, nested lists, CUDA
    arrays through DLPack) and its weight dtype name when it holds float32/bfloat16/float16
    values (None otherwise). Torch CPU tensors and NumPy arrays are viewed, not copied."""
    if _is_torch_tensor(obj):
        tensor = obj.detach()
        if tensor.device.type != "cpu":
            tensor = tensor.cpu()
        if str(tensor.dtype) == "torch.bfloat16":
            import torch

            return tensor.contiguous().view(torch.int16).numpy().view(np.uint16), "bfloat16"
        array = tensor.numpy()
    elif hasattr(obj, "__dlpack_device__") and int(obj.__dlpack_device__()[0]) == 2:
        from .cuda import DeviceArray  # CuPy arrays, DeviceArrays: copied to the host

        array = (obj if isinstance(obj, DeviceArray) else DeviceArray.from_dlpack(obj)).numpy()
    else:
        array = np.asarray(obj)
    if array.dtype.name == "bfloat16":  # ml_dtypes
        return array.view(np.uint16), "bfloat16"
    if array.dtype in (np.float32, np.float16):
        return array, array.dtype.name
    return array, None


def public_view(array: np.ndarray, name: str) -> np.ndarray:
    """What users see of a stored weight: bfloat16 as ml_dtypes.bfloat16 when ml_dtypes is
    installed, else the raw uint16 bits."""
    if name != "bfloat16":
        return array
    try:
        import ml_dtypes
    except ImportError:
        return array
    return array.view(ml_dtypes.bfloat16)
