"""Decode steps replayed from a CUDA graph: one launch per generated token instead of one per
kernel (hundreds for a 64-layer model), which at batch 1 is the difference between being
bound by launch overhead and by reading the weights.

A graph records the device addresses it was captured with, so it owns the buffers it reads and
writes (token ids, logits, the engine's scratch memory) and serves only the cache it was
captured on, and only while the backend's own scratch buffers have not been reallocated (a
larger call in between); :meth:`DecodeGraph.serves` tells.
"""
from __future__ import annotations

import weakref
from typing import Any

import numpy as np

from . import cuda
from .cuda import DeviceArray


class DecodeGraph:
    """One token per row on a filled cache: the model's whole forward and the LM head."""

    def __init__(self, model: Any, cache: Any) -> None:
        c = model.config
        device = model._device
        B = cache.batch_size
        self.batch = B
        self._cache_buffers = (cache.conv_states.pointer, cache.ssm_states.pointer)
        self._epoch = cuda._cuda.scratch_epoch()
        self._ids = DeviceArray.empty((B, 1), "int64", device)
        self._logits = DeviceArray.empty((B, 1, c.vocab_size), "float32", device)
        engine = model._get_engine()
        self._workspace = DeviceArray.empty((engine.workspace_bytes(B, 1),), "uint8", device)
        positions = np.zeros(1, np.int64)

        def step() -> None:
            engine.forward(B, 1, input_ids=self._ids.pointer, conv_states=cache.conv_states.pointer,
                           ssm_states=cache.ssm_states.pointer, has_state=True,
                           logits=self._logits.pointer, logit_positions=positions,
                           workspace=(self._workspace.pointer, self._workspace.nbytes))

        self._graph = cuda._cuda.capture(step)
        weakref.finalize(self, cuda._cuda.destroy_graph, self._graph)

    def serves(self, cache: Any) -> bool:
        """Whether this graph was captured on `cache`'s buffers and every buffer it reads is
        still where it was."""
        return (cache.batch_size == self.batch and
                (cache.conv_states.pointer, cache.ssm_states.pointer) == self._cache_buffers and
                cuda._cuda.scratch_epoch() == self._epoch)

    def step(self, ids: np.ndarray) -> np.ndarray:
        """Runs one step for token ids [B, 1] and returns the logits [B, V] on the host."""
        cuda._cuda.upload(self._ids.pointer, np.ascontiguousarray(ids, np.int64).view(np.uint8))
        cuda._cuda.launch(self._graph)
        return self._logits.numpy()[:, 0]
