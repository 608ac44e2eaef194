"""Reading and writing safetensors files and sharded checkpoints, with NumPy only.

A safetensors file is an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping
tensor names to ``{"dtype", "shape", "data_offsets"}`` (plus an optional ``"__metadata__"``
object of strings), then the raw little-endian tensor bytes; offsets are relative to the end
of the header.

Nothing in a file is trusted: the header is checked completely before any tensor is handed
out, and no memory is allocated for a size the header claims before that size has been
checked against the file. Malformed content raises :class:`SafetensorsError` (a
``ValueError``); a truncated or unreadable file raises ``OSError``. Messages name the file and,
where one is involved, the tensor.

The checks accept exactly the layouts the ``safetensors`` library accepts: the tensors'
byte ranges must tile the data section with no overlap, no gap and no trailing bytes. On top
of that, duplicate JSON keys and unknown fields in a tensor entry are rejected (the library
silently keeps one of the duplicates and ignores unknown fields). ``"__metadata__": null`` is
read as no metadata, as the library does.

bfloat16 has no NumPy dtype: BF16 tensors are read as ``uint16`` arrays of bit patterns, and
are written from ``(uint16 array, "bfloat16")`` pairs (or ml_dtypes bfloat16 arrays).
"""
from __future__ import annotations

import contextlib
import json
import mmap
import os
import re
import secrets
from typing import Any, Callable, Dict, Iterator, List, Mapping, NamedTuple, Optional, Tuple, Union

import numpy as np

__all__ = ["SafetensorsError", "SafetensorsFile", "save_file", "save_sharded",
           "load_checkpoint_dir", "parse_size", "MAX_HEADER_SIZE",
           "WEIGHTS_NAME", "WEIGHTS_INDEX_NAME"]

#: The safetensors library refuses headers larger than this; so do we.
MAX_HEADER_SIZE = 100_000_000
#: An index lists one line per tensor; anything this large is not an index.
MAX_INDEX_SIZE = 100_000_000

WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
_SHARD_RE = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")

# safetensors dtype -> (the package's dtype name, little-endian NumPy storage dtype)
_DTYPES: Dict[str, Tuple[str, np.dtype]] = {
    "F64": ("float64", np.dtype("<f8")),
    "F32": ("float32", np.dtype("<f4")),
    "F16": ("float16", np.dtype("<f2")),
    "BF16": ("bfloat16", np.dtype("<u2")),
    "I64": ("int64", np.dtype("<i8")),
    "I32": ("int32", np.dtype("<i4")),
    "I16": ("int16", np.dtype("<i2")),
    "I8": ("int8", np.dtype("i1")),
    "U64": ("uint64", np.dtype("<u8")),
    "U32": ("uint32", np.dtype("<u4")),
    "U16": ("uint16", np.dtype("<u2")),
    "U8": ("uint8", np.dtype("u1")),
    "BOOL": ("bool", np.dtype("?")),
}
_BY_NAME = {name: (st, np_dtype) for st, (name, np_dtype) in _DTYPES.items()}
# Types of the format that NumPy cannot hold; named so the error says "unsupported", not "unknown".
_UNSUPPORTED = {"F4", "F6_E2M3", "F6_E3M2", "F8_E5M2", "F8_E4M3", "F8_E8M0",
                "F8_E4M3FNUZ", "F8_E5M2FNUZ", "C64"}
# The library lays tensors out by decreasing rank in its Dtype enum (roughly alignment), then
# by name; following it keeps every tensor aligned and our files byte-identical to its files.
_WRITE_ORDER = ["U64", "I64", "F64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16",
                "I8", "U8", "BOOL"]
_WRITE_RANK = {st: i for i, st in enumerate(_WRITE_ORDER)}
_ENTRY_FIELDS = {"dtype", "shape", "data_offsets"}

TensorLike = Union[np.ndarray, Tuple[np.ndarray, str]]


class SafetensorsError(ValueError):
    """Malformed safetensors content: header, tensor entry, layout or checkpoint index."""


class _TensorInfo(NamedTuple):
    dtype: str
    shape: Tuple[int, ...]
    begin: int
    end: int


def _short(obj: Any, limit: int = 120) -> str:
    """repr for error messages: a hostile name or shape can be megabytes long."""
    text = repr(obj)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


def _where(path: str, name: Optional[str] = None) -> str:
    return f"{path}: tensor {_short(name)}" if name is not None else str(path)


def _is_text(value: Any) -> bool:
    """A str that can be written as UTF-8 (JSON escapes can smuggle in lone surrogates)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _no_duplicate_keys(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_short(key)}")
            seen.add(key)
    return result


def _reject_constant(token: str) -> None:
    raise ValueError(f"{token} is not valid JSON")


def _json_int(token: str) -> Any:
    # JSON's -0 is an integer to Python's reader but a float to others (the safetensors
    # library refuses it for a size): read as the float it is, it is then no size here either.
    return -0.0 if token == "-0" else int(token)


def _load_json(raw: bytes, what: str) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SafetensorsError(f"{what} is not valid UTF-8 ({exc})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys,
                          parse_constant=_reject_constant, parse_int=_json_int)
    except (ValueError, RecursionError) as exc:
        # RecursionError: deeply nested arrays in a hostile header.
        raise SafetensorsError(f"{what} is not valid JSON ({_short(str(exc), 300)})") from None


def _is_count(value: Any) -> bool:
    # bool is an int subclass, but `true` is not a size.
    return type(value) is int and value >= 0


def _parse_header(raw: bytes, path: str) -> Tuple[Dict[str, _TensorInfo], Dict[str, str]]:
    header = _load_json(raw, f"{path}: header")
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None)
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(
            _is_text(k) and _is_text(v) for k, v in metadata.items()):
        raise SafetensorsError(f"{path}: __metadata__ must be an object of strings to strings, "
                               f"got {_short(metadata)}")
    tensors = {}
    for name, entry in header.items():
        where = _where(path, name)
        if not _is_text(name):
            raise SafetensorsError(f"{where}: the name is not valid Unicode")
        if not isinstance(entry, dict) or set(entry) != _ENTRY_FIELDS:
            raise SafetensorsError(f"{where}: entry must be an object with exactly the fields "
                                   f"dtype, shape and data_offsets, got {_short(entry)}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str):  # a list or an object would not even hash
            raise SafetensorsError(f"{where}: dtype must be a string, got {_short(dtype)}")
        if dtype not in _DTYPES:
            kind = "unsupported" if dtype in _UNSUPPORTED else "unknown"
            raise SafetensorsError(f"{where}: {kind} dtype {_short(dtype)}")
        if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
            raise SafetensorsError(f"{where}: shape must be a list of non-negative integers, "
                                   f"got {_short(shape)}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_count(o) for o in offsets) or offsets[0] > offsets[1]):
            raise SafetensorsError(f"{where}: data_offsets must be two integers "
                                   f"0 <= begin <= end, got {_short(offsets)}")
        tensors[name] = _TensorInfo(dtype, tuple(shape), offsets[0], offsets[1])
    return tensors, metadata


def _nbytes(shape: Tuple[int, ...], itemsize: int, limit: int) -> int:
    """Bytes the shape needs, or any number above `limit` once it is known to exceed it (a
    hostile shape can multiply out to a number with millions of digits)."""
    if 0 in shape:
        return 0
    n = itemsize
    for dim in shape:
        n *= dim
        if n > limit:
            return n
    return n


def _check_layout(tensors: Dict[str, _TensorInfo], data_len: int, path: str) -> None:
    for name, t in tensors.items():
        if t.end > data_len:
            raise OSError(f"{_where(path, name)}: data_offsets [{t.begin}, {t.end}] run past the "
                          f"end of the data section ({data_len} bytes): the file is truncated")
        itemsize = _DTYPES[t.dtype][1].itemsize
        need = _nbytes(t.shape, itemsize, t.end - t.begin)
        if need != t.end - t.begin:
            raise SafetensorsError(
                f"{_where(path, name)}: shape {_short(list(t.shape))} of dtype {t.dtype} needs "
                f"{need if need <= data_len else 'more than the file'} bytes but data_offsets "
                f"[{t.begin}, {t.end}] hold {t.end - t.begin}")
    pos, previous = 0, None
    for name, t in sorted(tensors.items(), key=lambda item: (item[1].begin, item[1].end)):
        if t.begin < pos:
            raise SafetensorsError(f"{_where(path, name)}: bytes [{t.begin}, {t.end}) overlap "
                                   f"tensor {_short(previous)}, which ends at {pos}")
        if t.begin > pos:
            raise SafetensorsError(f"{_where(path, name)}: starts at {t.begin}, leaving bytes "
                                   f"[{pos}, {t.begin}) of the data section unused")
        pos, previous = t.end, name
    if pos != data_len:
        raise SafetensorsError(f"{path}: the tensors cover {pos} bytes but the data section has "
                               f"{data_len} (trailing bytes after the last tensor)")


class SafetensorsFile:
    """A validated safetensors file, memory-mapped read-only.

    Every check runs in the constructor; afterwards :meth:`get` only creates views. Views stay
    valid after :meth:`close`: each keeps the mapping alive, and the mapping is released when
    the file object is closed (or collected) and the last view is gone.
    """

    def __init__(self, path: Union[str, "os.PathLike[str]"]) -> None:
        self.path = os.fspath(path)
        self._mmap: Optional[mmap.mmap] = None
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise OSError(f"{self.path}: {size} bytes is too short for a safetensors file "
                              f"(the header length alone is 8 bytes)")
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        try:
            self._open(mm)
        except BaseException:
            mm.close()
            raise
        self._mmap = mm

    def _open(self, mm: mmap.mmap) -> None:
        # Sizes come from the mapping, not the earlier fstat, in case the file changed between.
        size = len(mm)
        n = int.from_bytes(mm[:8], "little")
        if n > MAX_HEADER_SIZE:
            raise SafetensorsError(f"{self.path}: header length {n} is over the "
                                   f"{MAX_HEADER_SIZE}-byte limit")
        if 8 + n > size:
            raise OSError(f"{self.path}: header length {n} runs past the end of the "
                          f"{size}-byte file: the file is truncated")
        self._tensors, self._metadata = _parse_header(mm[8:8 + n], self.path)
        self._data_start = 8 + n
        _check_layout(self._tensors, size - self._data_start, self.path)
        self._tensors = dict(sorted(self._tensors.items(), key=lambda item: item[1].begin))

    def keys(self) -> List[str]:
        """Tensor names, in file order."""
        return list(self._tensors)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tensors))

    @property
    def metadata(self) -> Dict[str, str]:
        """The ``__metadata__`` strings ({} when the file has none)."""
        return dict(self._metadata)

    def _info(self, name: str) -> _TensorInfo:
        try:
            return self._tensors[name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {_short(name)}") from None

    def dtype(self, name: str) -> str:
        """The safetensors dtype string, e.g. "BF16"."""
        return self._info(name).dtype

    def dtype_name(self, name: str) -> str:
        """The package's dtype name, e.g. "bfloat16"."""
        return _DTYPES[self._info(name).dtype][0]

    def shape(self, name: str) -> Tuple[int, ...]:
        return self._info(name).shape

    def get(self, name: str) -> np.ndarray:
        """A read-only view of the tensor in the mapped file (no copy).

        BF16 comes back as uint16 bit patterns. The view is unaligned when the file's writer
        did not align the data (the library and :func:`save_file` always do).
        """
        info = self._info(name)
        if self._mmap is None:
            raise ValueError(f"{self.path}: the file is closed")
        np_dtype = _DTYPES[info.dtype][1]
        flat = np.frombuffer(self._mmap, dtype=np_dtype,
                             count=(info.end - info.begin) // np_dtype.itemsize,
                             offset=self._data_start + info.begin)
        if info.dtype == "BOOL" and flat.size and flat.view(np.uint8).max() > 1:
            raise SafetensorsError(f"{_where(self.path, name)}: BOOL bytes other than 0 and 1")
        try:
            return flat.reshape(info.shape)
        except (ValueError, OverflowError) as exc:
            raise SafetensorsError(f"{_where(self.path, name)}: shape "
                                   f"{_short(list(info.shape))} cannot be a NumPy array "
                                   f"({exc})") from None

    def close(self) -> None:
        """Stop handing out views; the mapping goes when the last view goes."""
        mm, self._mmap = self._mmap, None
        if mm is not None:
            with contextlib.suppress(BufferError):  # views still export the buffer
                mm.close()

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mmap is None else f"{len(self._tensors)} tensors"
        return f"SafetensorsFile({self.path!r}, {state})"


class _Prepared(NamedTuple):
    name: str
    dtype: str  # safetensors dtype string
    array: np.ndarray  # C-contiguous, little-endian storage


def _prepare(name: Any, value: TensorLike) -> _Prepared:
    if not _is_text(name) or name == "__metadata__":
        raise ValueError(f"invalid tensor name {_short(name)}")
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"tensor {_short(name)}: expected an array or (array, dtype name)")
        array, dtype_name = np.asarray(value[0]), value[1]
        if dtype_name not in _BY_NAME:
            raise ValueError(f"tensor {_short(name)}: unknown dtype name {_short(dtype_name)}; "
                             f"expected one of {sorted(_BY_NAME)}")
    else:
        array = np.asarray(value)
        dtype_name = _numpy_dtype_name(array.dtype, name)
    if array.dtype.name == "bfloat16":  # ml_dtypes
        array = array.view(np.uint16)
    st, storage = _BY_NAME[dtype_name]
    if array.dtype.kind != storage.kind or array.dtype.itemsize != storage.itemsize:
        raise ValueError(f"tensor {_short(name)}: a {array.dtype} array cannot be saved as "
                         f"{dtype_name} (it needs {storage.name} storage)")
    # asarray, not ascontiguousarray, which turns 0-d arrays into 1-d ones.
    return _Prepared(name, st, np.asarray(array, dtype=storage, order="C"))


def _numpy_dtype_name(dtype: np.dtype, name: str) -> str:
    if dtype.name == "bfloat16":
        return "bfloat16"
    for dtype_name, (_, storage) in _BY_NAME.items():
        # uint16 stays uint16: bfloat16 bits must be labelled with an explicit pair.
        if (dtype_name != "bfloat16" and dtype.kind == storage.kind
                and dtype.itemsize == storage.itemsize):
            return dtype_name
    raise ValueError(f"tensor {_short(name)}: dtype {dtype} cannot be saved in safetensors")


def _header_bytes(items: List[_Prepared], metadata: Optional[Mapping[str, str]]) -> bytes:
    header: Dict[str, Any] = {}
    if metadata is not None:
        if not all(_is_text(k) and _is_text(v) for k, v in metadata.items()):
            raise ValueError(f"metadata must map strings to strings, got {_short(metadata)}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for item in items:
        header[item.name] = {"dtype": item.dtype, "shape": list(item.array.shape),
                             "data_offsets": [offset, offset + item.array.nbytes]}
        offset += item.array.nbytes
    # Compact, non-ASCII kept as UTF-8: the same bytes serde_json writes for the library.
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # keeps the data section 8-byte aligned
    if len(raw) > MAX_HEADER_SIZE:
        raise ValueError(f"the header would be {len(raw)} bytes, over the "
                         f"{MAX_HEADER_SIZE}-byte limit of the format")
    return raw


def _write_atomically(path: str, write: Callable[[Any], None]) -> None:
    """Write through a temporary file in the same directory, then rename: the final path
    holds either its old content or the complete new file, never a partial one."""
    path = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(path),
                       f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    # os.open with 0o666 lets the umask decide the permissions, as a plain open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _save_prepared(items: List[_Prepared], path: str,
                   metadata: Optional[Mapping[str, str]]) -> None:
    items = sorted(items, key=lambda item: (_WRITE_RANK[item.dtype], item.name))
    header = _header_bytes(items, metadata)

    def write(f: Any) -> None:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for item in items:
            f.write(item.array.reshape(-1).view(np.uint8))

    _write_atomically(path, write)


def save_file(tensors: Mapping[str, TensorLike], path: Union[str, "os.PathLike[str]"],
              metadata: Optional[Mapping[str, str]] = None) -> None:
    """Write `tensors` to a safetensors file at `path`, byte for byte as the library would.

    Values are NumPy arrays or ``(array, dtype_name)`` pairs; bfloat16 needs the pair form
    ``(uint16_bits, "bfloat16")`` (a bare uint16 array is saved as U16) unless the array is an
    ml_dtypes bfloat16 array. `metadata` (strings to strings) goes into ``__metadata__``;
    transformers writes ``{"format": "pt"}``.
    """
    items = [_prepare(name, value) for name, value in tensors.items()]
    _save_prepared(items, os.fspath(path), metadata)


_SIZE_UNITS = {"TB": 10**12, "GB": 10**9, "MB": 10**6, "KB": 10**3}


def parse_size(size: Union[int, str]) -> int:
    """Bytes in a shard size: an int, or "5GB", "500MB", "10KB", "1TB" (powers of 1000, as in
    huggingface_hub's parse_size_to_int; "1.5GB" is allowed)."""
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise ValueError(f"max_shard_size must be an int or a string like '5GB', got {size!r}")
    if isinstance(size, int):
        value = size
    else:
        text = size.strip()
        unit = text[-2:].upper()
        if unit not in _SIZE_UNITS:
            raise ValueError(f"max_shard_size {size!r}: unit must be TB, GB, MB or KB")
        try:
            value = int(float(text[:-2].strip()) * _SIZE_UNITS[unit])
        except ValueError:
            raise ValueError(f"max_shard_size {size!r}: no number before the unit") from None
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def _split(items: List[_Prepared], max_bytes: int) -> List[List[_Prepared]]:
    """huggingface_hub's split: walk the tensors in order, start a new shard when the next
    tensor would overflow the current one; a tensor larger than the limit gets its own."""
    shards: List[List[_Prepared]] = []
    current: List[_Prepared] = []
    current_size = 0
    for item in items:
        size = item.array.nbytes
        if size > max_bytes:
            shards.append([item])
            continue
        if current_size + size > max_bytes:
            shards.append(current)
            current, current_size = [], 0
        current.append(item)
        current_size += size
    if current or not shards:
        shards.append(current)
    return shards


def save_sharded(tensors: Mapping[str, TensorLike], directory: Union[str, "os.PathLike[str]"],
                 max_shard_size: Union[int, str] = "5GB",
                 metadata: Optional[Mapping[str, str]] = None,
                 progress: Optional[Callable[[int, int], None]] = None) -> List[str]:
    """Save a checkpoint as transformers' ``save_pretrained`` does.

    One shard: ``model.safetensors``. Several: ``model-00001-of-0000N.safetensors`` ... and
    ``model.safetensors.index.json`` with ``{"metadata": {"total_parameters", "total_size"},
    "weight_map"}`` (total_size: bytes of tensor data; total_parameters: elements), written
    with ``indent=2, sort_keys=True`` and a final newline. Tensors are assigned to shards in
    the order of `tensors`. `metadata` defaults to ``{"format": "pt"}``; pass {} for none.

    Checkpoint files of an earlier save that this one does not overwrite (other shard files, a
    stale index or single file) are removed afterwards so they cannot shadow the new ones.
    `progress(done, total)` is called after each file. Returns the paths written.
    """
    directory = os.fspath(directory)
    max_bytes = parse_size(max_shard_size)
    if metadata is None:
        metadata = {"format": "pt"}
    items = [_prepare(name, value) for name, value in tensors.items()]
    shards = _split(items, max_bytes)
    os.makedirs(directory, exist_ok=True)

    if len(shards) == 1:
        names = [WEIGHTS_NAME]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    total = len(names) + (len(names) > 1)
    written = []
    for i, (name, shard) in enumerate(zip(names, shards)):
        path = os.path.join(directory, name)
        _save_prepared(shard, path, metadata or None)
        written.append(path)
        if progress is not None:
            progress(i + 1, total)

    if len(shards) > 1:
        index = {
            "metadata": {
                "total_parameters": sum(int(item.array.size) for item in items),
                "total_size": sum(item.array.nbytes for item in items),
            },
            "weight_map": {item.name: name for name, shard in zip(names, shards) for item in shard},
        }
        content = (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")
        path = os.path.join(directory, WEIGHTS_INDEX_NAME)
        _write_atomically(path, lambda f: f.write(content))
        written.append(path)
        if progress is not None:
            progress(total, total)

    for entry in os.listdir(directory):
        stale = (entry not in names
                 and (_SHARD_RE.fullmatch(entry) or entry == WEIGHTS_NAME
                      or (entry == WEIGHTS_INDEX_NAME and len(shards) == 1)))
        if stale and os.path.isfile(os.path.join(directory, entry)):
            os.remove(os.path.join(directory, entry))
    return written


def _valid_shard_name(name: Any) -> bool:
    if not _is_text(name) or name in ("", ".", ".."):
        return False
    forbidden = {"/", "\\", ":", "\0", os.sep} | ({os.altsep} if os.altsep else set())
    return not any(ch in name for ch in forbidden)


def _read_index(path: str) -> Dict[str, str]:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_INDEX_SIZE:
            raise SafetensorsError(f"{path}: {size} bytes is too large for a checkpoint index")
        raw = f.read(MAX_INDEX_SIZE + 1)
    index = _load_json(raw, path)
    if not isinstance(index, dict):
        raise SafetensorsError(f"{path}: the index is a JSON {type(index).__name__}, "
                               f"not an object")
    if not isinstance(index.get("metadata", {}), dict):
        raise SafetensorsError(f"{path}: 'metadata' must be an object")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict):
        raise SafetensorsError(f"{path}: 'weight_map' must be an object of tensor names to "
                               f"shard files, got {_short(weight_map)}")
    for name, shard in weight_map.items():
        if not _is_text(name):
            raise SafetensorsError(f"{_where(path, name)}: the name is not valid Unicode")
        if not _valid_shard_name(shard):
            raise SafetensorsError(f"{_where(path, name)}: shard {_short(shard)} is not a plain "
                                   f"file name in the checkpoint directory")
    return weight_map


def load_checkpoint_dir(directory: Union[str, "os.PathLike[str]"]
                        ) -> Dict[str, Tuple[np.ndarray, str]]:
    """name -> (read-only view, dtype name) for a checkpoint directory.

    Reads ``model.safetensors`` when present (transformers prefers it too), otherwise the
    shards named by ``model.safetensors.index.json``. Every tensor the index lists must be in
    the shard it names, and no tensor may appear in two of the shards. Views keep their
    files mapped; nothing stays open otherwise.
    """
    directory = os.fspath(directory)
    single = os.path.join(directory, WEIGHTS_NAME)
    if os.path.isfile(single):
        with SafetensorsFile(single) as f:
            return {name: (f.get(name), f.dtype_name(name)) for name in f.keys()}
    index_path = os.path.join(directory, WEIGHTS_INDEX_NAME)
    if not os.path.isfile(index_path):
        raise FileNotFoundError(f"{directory}: neither {WEIGHTS_NAME} nor {WEIGHTS_INDEX_NAME} "
                                f"is there")
    weight_map = _read_index(index_path)
    by_shard: Dict[str, List[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)

    found: Dict[str, Tuple[np.ndarray, str]] = {}
    home: Dict[str, str] = {}
    for shard, names in by_shard.items():
        with SafetensorsFile(os.path.join(directory, shard)) as f:
            for name in f.keys():
                if name in home:
                    raise SafetensorsError(f"{_where(index_path, name)}: in both {home[name]} "
                                           f"and {shard}")
                home[name] = shard
            for name in names:
                if name not in f:
                    raise SafetensorsError(f"{_where(index_path, name)}: listed in {shard} but "
                                           f"{f.path} has no such tensor")
                found[name] = (f.get(name), f.dtype_name(name))
    return {name: found[name] for name in weight_map}
