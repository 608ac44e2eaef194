"""The recurrent state a Mamba-2 model carries between calls."""
from __future__ import annotations

from typing import Any, Sequence, Union

import numpy as np

from .configuration import Mamba2Config


class Mamba2Cache:
    """Conv and SSM state of every layer for a batch of sequences, in float32.

    conv_states: float32 [L, B, I + 2*G*N, K], the last K inputs of the causal conv (before
      the conv);
    ssm_states: float32 [L, B, H, P, N].
    A model call with ``cache_params=cache`` continues from the state when
    ``has_previous_state`` is true, and always leaves the state after its last token;
    ``seqlen_offset`` counts the tokens seen. `dtype` and `device` are accepted for
    transformers' signature and ignored: the state is float32 on the CPU whatever the
    weights are.
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
        self.device = "cpu"
        L = config.num_hidden_layers
        self.conv_states = np.zeros((L, self.batch_size, config.conv_dim, config.conv_kernel),
                                    np.float32)
        self.ssm_states = np.zeros((L, self.batch_size, config.num_heads, config.head_dim,
                                    config.state_size), np.float32)
        self.has_previous_state = False
        self.seqlen_offset = 0

    def reset(self) -> None:
        """Forget everything: zero states, as a fresh cache."""
        self.conv_states[...] = 0
        self.ssm_states[...] = 0
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
        out.conv_states = np.ascontiguousarray(self.conv_states[:, index])
        out.ssm_states = np.ascontiguousarray(self.ssm_states[:, index])
        return out

    def reorder_cache(self, beam_idx: Union[Sequence[int], np.ndarray]) -> None:
        """Reorders the batch rows in place (beam search)."""
        picked = self.select(beam_idx)
        if picked.batch_size != self.batch_size:
            raise ValueError("reorder_cache keeps the batch size; use select() to change it")
        self.conv_states[...] = picked.conv_states
        self.ssm_states[...] = picked.ssm_states

    def copy(self) -> "Mamba2Cache":
        """An independent copy (the arrays are copied)."""
        return self.select(np.arange(self.batch_size))

    def __repr__(self) -> str:
        return (f"Mamba2Cache(layers={self.conv_states.shape[0]}, batch={self.batch_size}, "
                f"seen={self.seqlen_offset} tokens)")
