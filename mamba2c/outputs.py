"""Model outputs that behave like transformers' ``ModelOutput``: attributes, string keys, integer
indices and ``to_tuple()``, where fields that are None are left out of keys and tuples."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Optional

import numpy as np


class ModelOutput(OrderedDict):
    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None:
                super().__setitem__(field.name, value)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        return self.to_tuple()[key]

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        super().__setattr__(key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.keys() and value is not None:
            super().__setitem__(name, value)
        super().__setattr__(name, value)

    def to_tuple(self) -> tuple:
        return tuple(self[key] for key in self.keys())


@dataclass(repr=False)
class Mamba2Output(ModelOutput):
    """last_hidden_state [B, T, D] float32 (after norm_f); cache_params when use_cache;
    hidden_states: L+1 arrays [B, T, D], each block's output then the norm_f output."""

    last_hidden_state: Optional[np.ndarray] = None
    cache_params: Any = None
    hidden_states: Optional[tuple] = None


@dataclass(repr=False)
class Mamba2CausalLMOutput(ModelOutput):
    """loss (float32 scalar array) when labels are given; logits [B, T_kept, V] float32;
    cache_params and hidden_states as in Mamba2Output."""

    loss: Optional[np.ndarray] = None
    logits: Optional[np.ndarray] = None
    cache_params: Any = None
    hidden_states: Optional[tuple] = None
