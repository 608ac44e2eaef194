"""Host arrays on transparent huge pages, for what a decode step streams: the weights and the
cache's states.

A decode step reads every weight once, and on 4 KiB pages that is a TLB miss for every 4 KiB.
Linux backs an anonymous mapping with 2 MiB pages when advised to (madvise MADV_HUGEPAGE), the
only way to get them where transparent huge pages are set to "madvise", the default of Debian
and Ubuntu; but only the 2 MiB-aligned stretches of it. NumPy advises its own arrays of 4 MiB or
more, which start just past a page boundary, and Linux aligns an anonymous mapping to 2 MiB only
when its length is a whole number of huge pages (6.12 and later; none at all before 6.7). So an
array gets huge pages from end to end only from a mapping that starts at the first 2 MiB
boundary past its own start and covers whole huge pages: `huge_buffer`. The weights share one
such buffer, back to back, so that the partly used last huge page is wasted once, not once an
array (benchmarks/bench_pages.py times them against NumPy's arrays; benchmarks/RESULTS.md has
the numbers). Where the advice does not exist, arrays are allocated as usual.
"""
from __future__ import annotations

import mmap
from typing import Dict, Sequence

import numpy as np

HUGE_PAGE_BYTES = 2 << 20
#: Each weight in the shared buffer starts on a cache line, as an array of its own would.
WEIGHT_ALIGNMENT = 64
_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _worth_huge_pages(nbytes: int) -> bool:
    """Less than a huge page gains nothing from one and would waste the rest of it."""
    return _ADVICE is not None and nbytes >= HUGE_PAGE_BYTES


def huge_buffer(nbytes: int) -> np.ndarray:
    """`nbytes` zero bytes (uint8) starting on a huge-page boundary, advised huge pages to the
    end of the last one. The mapping has one huge page more, so that a boundary falls inside
    it; the stretch before the boundary is never touched and never given memory."""
    memory = mmap.mmap(-1, _round_up(nbytes, HUGE_PAGE_BYTES) + HUGE_PAGE_BYTES,
                       flags=mmap.MAP_PRIVATE)  # anonymous, zero-filled, and not shared
    try:
        memory.madvise(_ADVICE)
    except OSError:  # a kernel built without transparent huge pages: ordinary pages
        pass
    whole = np.frombuffer(memory, np.uint8)
    start = -whole.__array_interface__["data"][0] % HUGE_PAGE_BYTES
    return whole[start:start + nbytes]


def zeros(shape: Sequence[int], dtype) -> np.ndarray:
    """A zero-filled C-contiguous array, on huge pages when it is large enough for them."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if not _worth_huge_pages(nbytes):
        return np.zeros(shape, dtype)
    return huge_buffer(nbytes).view(dtype).reshape(shape)


def _placed(array: np.ndarray) -> bool:
    """Whether `array` is a view of memory that `huge_buffer` mapped."""
    while isinstance(array, np.ndarray):
        array = array.base
    if isinstance(array, memoryview):  # what np.frombuffer keeps of the mapping
        array = array.obj
    return isinstance(array, mmap.mmap)


def place_weights(weights: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Copies every writable array of `weights` (unless it is placed already) into one huge-page
    buffer, back to back in the dict's order, in place, and returns `weights`. Each original is
    dropped as soon as its copy is made, and the buffer gets memory only as it is written, so
    placing costs one tensor of memory at a time. Read-only arrays (views of a checkpoint file,
    or of another model's state_dict) are kept as they are, shared."""
    names = [name for name, array in weights.items()
             if array.flags.writeable and not _placed(array)]
    offsets, end = [], 0
    for name in names:
        offsets.append(end)
        end = _round_up(end + weights[name].nbytes, WEIGHT_ALIGNMENT)
    if not _worth_huge_pages(end):
        return weights
    buffer = huge_buffer(end)
    for name, offset in zip(names, offsets):
        array = weights[name]
        copy = buffer[offset:offset + array.nbytes].view(array.dtype).reshape(array.shape)
        np.copyto(copy, array)
        weights[name] = copy
    return weights
