"""The recurrent state a Mamba-2 model carries between calls."""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from . import cuda, hugepages
from .configuration import Mamba2Config


class Mamba2Cache:
    """Conv and SSM state of every layer for a batch of sequences, in float32.

    conv_states: float32 [L, B, I + 2*G*N, K], the last K inputs of the causal conv (before
      the conv);
    ssm_states: float32 [L, B, H, P, N].
    A model call with ``cache_params=cache`` continues from the state when
    ``has_previous_state`` is true, and always leaves the state after its last token;
    ``seqlen_offset`` counts the tokens seen. `device`: "cpu" (NumPy arrays) or "cuda:N"
    (DeviceArrays), where the model runs. `dtype` is accepted for transformers' signature and
    ignored: the state is float32 whatever the weights are.
    """

    def __init__(self, config: Mamba2Config, batch_size: int, dtype: Any = None,
                 device: Any = None) -> None:
        if int(batch_size) <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.config = config
        self.batch_size = int(batch_size)
        self.conv_kernel_size = config.conv_kernel
        self.n_groups = config.n_groups
        self.state_size = config.state_size
        self.num_heads = config.num_heads
        self.head_dim = config.head_dim
        self.intermediate_size = config.intermediate_size
        # The state is float32 whatever the weights are: 16-bit states drift over long decodes.
        self.dtype = "float32"
        index = cuda.parse_device("cpu" if device is None else device)
        self.device = "cpu" if index is None else f"cuda:{index}"
        L = config.num_hidden_layers
        conv = (L, self.batch_size, config.conv_dim, config.conv_kernel)
        ssm = (L, self.batch_size, config.num_heads, config.head_dim, config.state_size)
        if index is None:
            self.conv_states = np.zeros(conv, np.float32)
            self.ssm_states = hugepages.zeros(ssm, np.float32)  # read and written every step
        else:
            self.conv_states = cuda.DeviceArray.zeros(conv, "float32", index)
            self.ssm_states = cuda.DeviceArray.zeros(ssm, "float32", index)
        self.has_previous_state = False
        self.seqlen_offset = 0

    def reset(self) -> None:
        """Forget everything: zero states, as a fresh cache."""
        for states in (self.conv_states, self.ssm_states):
            if isinstance(states, np.ndarray):
                states[...] = 0
            else:
                cuda._cuda.zero(states.pointer, states.nbytes)
        self.has_previous_state = False
        self.seqlen_offset = 0

    def select(self, rows: Union[Sequence[int], np.ndarray]) -> "Mamba2Cache":
        """A new cache holding the given batch rows, in that order (repeats allowed)."""
        index = np.asarray(rows, dtype=np.int64)
        if index.ndim != 1 or index.size == 0:
            raise ValueError("rows must be a non-empty 1-D sequence of batch indices")
        if index.min() < -self.batch_size or index.max() >= self.batch_size:
            raise IndexError(f"batch rows {index.tolist()} out of range for batch {self.batch_size}")
        out = Mamba2Cache.__new__(Mamba2Cache)
        out.__dict__.update(self.__dict__)
        out.batch_size = int(index.size)
        out.conv_states = self._place(np.asarray(self.conv_states)[:, index])
        out.ssm_states = self._place(np.asarray(self.ssm_states)[:, index])
        return out

    def _place(self, host: np.ndarray) -> "np.ndarray | cuda.DeviceArray":
        """A host array where this cache keeps its state."""
        host = np.ascontiguousarray(host)
        if self.device == "cpu":
            return host
        return cuda.DeviceArray.from_numpy(host, device=cuda.parse_device(self.device))

    def reorder_cache(self, beam_idx: Union[Sequence[int], np.ndarray]) -> None:
        """Reorders the batch rows in place (beam search)."""
        picked = self.select(beam_idx)
        if picked.batch_size != self.batch_size:
            raise ValueError("reorder_cache keeps the batch size; use select() to change it")
        # Into the same buffers: whoever holds them (a captured CUDA graph) sees the new order.
        for mine, new in ((self.conv_states, picked.conv_states),
                          (self.ssm_states, picked.ssm_states)):
            if isinstance(mine, np.ndarray):
                mine[...] = new
            else:
                cuda._cuda.copy(mine.pointer, new.pointer, mine.nbytes)

    def copy(self) -> "Mamba2Cache":
        """An independent copy (the arrays are copied)."""
        return self.select(np.arange(self.batch_size))

    def __repr__(self) -> str:
        return (f"Mamba2Cache(layers={self.conv_states.shape[0]}, batch={self.batch_size}, "
                f"seen={self.seqlen_offset} tokens)")
