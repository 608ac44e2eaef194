"""Host arrays on transparent huge pages, for what a decode step streams: the weights and the
cache's states.

A decode step reads every weight once, and on 4 KiB pages that is a TLB miss for every 4 KiB.
Linux backs an anonymous mapping with 2 MiB pages when advised to (madvise MADV_HUGEPAGE), the
only way to get them where transparent huge pages are set to "madvise", the default of Debian
and Ubuntu. NumPy advises its own arrays of 4 MiB or more, but they start just past a page
boundary, so only the 2 MiB-aligned inside of each gets huge pages (80% of the mamba2-130m
shape's float32 weights), and arrays under 4 MiB none. A mapping of each array's own is huge
from end to end (benchmarks/bench_pages.py times the two; benchmarks/RESULTS.md has the
numbers). Where the advice does not exist, arrays are allocated as usual.
"""
from __future__ import annotations

import mmap
from typing import Dict, Sequence

import numpy as np

#: Arrays smaller than a huge page gain nothing and would waste the rest of one.
HUGE_PAGE_BYTES = 2 << 20
_ADVICE = getattr(mmap, "MADV_HUGEPAGE", None)


def zeros(shape: Sequence[int], dtype) -> np.ndarray:
    """A zero-filled C-contiguous array, on huge pages when it is large enough for them."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if _ADVICE is None or nbytes < HUGE_PAGE_BYTES:
        return np.zeros(shape, dtype)
    # Private anonymous memory (no file: mmap adds MAP_ANONYMOUS itself): zero-filled, and,
    # unlike shared memory, given huge pages on the first touch of each 2 MiB once advised.
    memory = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    try:
        memory.madvise(_ADVICE)
    except OSError:  # a kernel built without transparent huge pages: ordinary pages
        pass
    return np.frombuffer(memory, dtype=dtype).reshape(shape)


def _placed(array: np.ndarray) -> bool:
    """Whether `array` is a view of memory that `zeros` mapped."""
    while isinstance(array, np.ndarray):
        array = array.base
    return isinstance(array, mmap.mmap)


def place_weights(weights: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Copies each writable array of `weights` of a huge page or more onto huge pages (unless
    it is there already), in place, and returns `weights`: each original is dropped as soon as
    its copy is made, so placing costs one tensor of memory at a time. Read-only arrays (views
    of a checkpoint file, or of another model's state_dict) are kept as they are, shared."""
    if _ADVICE is None:
        return weights
    for name, array in weights.items():
        if array.flags.writeable and array.nbytes >= HUGE_PAGE_BYTES and not _placed(array):
            copy = zeros(array.shape, array.dtype)
            np.copyto(copy, array)
            weights[name] = copy
    return weights
