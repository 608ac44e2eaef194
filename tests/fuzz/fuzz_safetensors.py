#!/usr/bin/env python3
"""Fuzzes mamba2c's safetensors reader and writer.

The first byte of an input picks what the rest is:

* a safetensors file, opened with ``SafetensorsFile`` and every tensor read. Contract: it raises
  ValueError (SafetensorsError) or OSError, or it succeeds, and then every view lies inside the
  file with the bytes its shape and dtype need, and the ``safetensors`` library (when installed)
  accepts the same bytes with the same names, dtypes, shapes and data: our rules are stricter
  than the library's, never looser.
* a ``model.safetensors.index.json`` next to two valid shards, read with
  ``load_checkpoint_dir``: ValueError or OSError, or exactly the tensors the index names, each
  holding its shard's data.
* tensor names, metadata, dtypes and shapes for ``save_file``: ValueError, or a file that both
  readers load back unchanged.

    python tests/fuzz/fuzz_safetensors.py [-max_total_time=N] tests/fuzz/corpus/safetensors
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Reader, instrumented_imports, main  # noqa: E402

with instrumented_imports(__name__):
    from mamba2c import safetensors as st  # noqa: E402

try:
    import safetensors as library
except ImportError:  # the differential check is skipped, the rest still runs
    library = None

ALLOWED = (ValueError, OSError)

# /dev/shm when there is one: a file is written per input.
_WORK = tempfile.mkdtemp(prefix="fuzz-safetensors-",
                         dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)
_FILE = os.path.join(_WORK, "input.safetensors")
_CHECKPOINT = os.path.join(_WORK, "checkpoint")
_SHARDS = {
    "model-00001-of-00002.safetensors": {"a": np.arange(6, dtype=np.float32).reshape(2, 3),
                                         "b": (np.arange(4, dtype=np.uint16), "bfloat16")},
    "model-00002-of-00002.safetensors": {"c": np.array([True, False]),
                                         "d": np.zeros((0, 3), np.int64)},
}


def _library_tensors(data: bytes):
    """name -> (dtype, shape, bytes) as the library reads them, or None when it refuses."""
    try:
        return {name: (t["dtype"], tuple(t["shape"]), bytes(t["data"]))
                for name, t in library.deserialize(data)}
    except Exception:  # the library's errors have no common base class
        return None


def _address(array: np.ndarray) -> int:
    return array.__array_interface__["data"][0]


def check_file(data: bytes) -> None:
    with open(_FILE, "wb") as f:
        f.write(data)
    ours = {}
    try:
        with st.SafetensorsFile(_FILE) as f:
            mapped = np.frombuffer(f._mmap, np.uint8)
            for name in f.keys():
                ours[name] = (f.dtype(name), f.get(name))
    except ALLOWED:
        return
    data_start = _address(mapped) + 8 + int.from_bytes(data[:8], "little")
    data_end = _address(mapped) + mapped.nbytes
    del mapped
    for name, (dtype, view) in ours.items():
        if view.flags.writeable:
            raise AssertionError(f"tensor {name!r} is a writable view of the file")
        if view.nbytes != int(np.prod(view.shape, dtype=object)) * view.itemsize:
            raise AssertionError(f"tensor {name!r}: {view.nbytes} bytes for shape {view.shape}")
        if view.nbytes and not data_start <= _address(view) <= data_end - view.nbytes:
            raise AssertionError(f"tensor {name!r} lies outside the data section")
    if library is None:
        return
    theirs = _library_tensors(data)
    if theirs is None:
        raise AssertionError("mamba2c read a file that the safetensors library refuses")
    if set(theirs) != set(ours):
        raise AssertionError(f"tensor names differ: {sorted(ours)} vs {sorted(theirs)}")
    for name, (dtype, view) in ours.items():
        want_dtype, want_shape, want_bytes = theirs[name]
        if (dtype, view.shape, view.tobytes()) != (want_dtype, want_shape, want_bytes):
            raise AssertionError(f"tensor {name!r} differs from the library's reading")


def _write_shards() -> None:
    os.makedirs(_CHECKPOINT, exist_ok=True)
    for name, tensors in _SHARDS.items():
        path = os.path.join(_CHECKPOINT, name)
        if not os.path.exists(path):
            st.save_file(tensors, path)


def check_index(data: bytes) -> None:
    _write_shards()
    with open(os.path.join(_CHECKPOINT, st.WEIGHTS_INDEX_NAME), "wb") as f:
        f.write(data)
    try:
        tensors = st.load_checkpoint_dir(_CHECKPOINT)
    except ALLOWED:
        return
    weight_map = json.loads(data)["weight_map"]
    if list(tensors) != list(weight_map):
        raise AssertionError(f"loaded {list(tensors)} for an index naming {list(weight_map)}")
    for name, (array, _) in tensors.items():
        want = _SHARDS[weight_map[name]][name]
        want = want[0] if isinstance(want, tuple) else want
        if not np.array_equal(array, want):
            raise AssertionError(f"tensor {name!r} does not hold its shard's data")


_SAVE_DTYPES = ["float32", "float16", "bfloat16", "int64", "int8", "uint8", "bool", "float64"]


def check_save(r: Reader) -> None:
    tensors = {}
    for _ in range(r.int_in(0, 3)):
        name = r.take(r.int_in(0, 12)).decode("utf-8", "surrogatepass" if r.bool() else "replace")
        dtype = r.pick(_SAVE_DTYPES)
        shape = tuple(r.int_in(0, 3) for _ in range(r.int_in(0, 3)))
        storage = {"bfloat16": np.uint16, "bool": np.bool_}.get(dtype, dtype)
        values = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape).astype(storage)
        tensors[name] = (values, dtype)
    metadata = None
    if r.bool():
        metadata = {r.take(r.int_in(0, 6)).decode("utf-8", "surrogatepass"):
                    r.take(r.int_in(0, 6)).decode("utf-8", "replace")
                    for _ in range(r.int_in(0, 2))} if r.bool() else {}
    try:
        st.save_file(tensors, _FILE, metadata=metadata)
    except ValueError:
        return
    with st.SafetensorsFile(_FILE) as f:
        if f.metadata != (metadata or {}):
            raise AssertionError(f"metadata {metadata!r} came back as {f.metadata!r}")
        for name, (values, dtype) in tensors.items():
            if f.dtype_name(name) != dtype or not np.array_equal(f.get(name), values):
                raise AssertionError(f"tensor {name!r} did not survive the round trip")
    with open(_FILE, "rb") as f:
        check_file(f.read())  # and the library reads it the same way


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    mode = r.int_in(0, 7)
    if mode <= 5:
        check_file(r.rest())
    elif mode == 6:
        check_index(r.rest())
    else:
        try:
            check_save(r)
        except UnicodeDecodeError:
            pass


if __name__ == "__main__":
    main(TestOneInput)
