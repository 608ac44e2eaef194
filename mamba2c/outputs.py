"""Model outputs that behave like transformers' ``ModelOutput``: attributes, string keys, integer
indices and ``to_tuple()``, where fields that are None are left out of keys and tuples."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields
from typing import Any, Optional, Tuple

import numpy as np


def _describe(value: Any) -> str:
    """A short description of one output field: arrays by dtype and shape, never their values
    (a scalar is shown with its value)."""
    if isinstance(value, (np.ndarray, np.generic)):
        if value.ndim == 0:
            return f"{value.dtype.name}({str(value)})"
        return f"{value.dtype.name}[{', '.join(str(n) for n in value.shape)}]"
    if isinstance(value, tuple):
        parts = [_describe(v) for v in value]
        if parts and all(p == parts[0] for p in parts):
            return f"({len(parts)} x {parts[0]})"
        return "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    return repr(value)


class ModelOutput(OrderedDict):
    """Base class of the output classes: a dataclass that is also an ordered mapping of its
    fields that are not None, and a tuple of them by integer index or :meth:`to_tuple`.

    ``repr`` shows each field that is set with its dtype and shape, not the array values.
    """

    def __post_init__(self) -> None:
        for field in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
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

    def to_tuple(self) -> Tuple[Any, ...]:
        """The fields that are not None, in field order."""
        return tuple(self[key] for key in self.keys())

    def __repr__(self) -> str:
        if not self:
            return f"{type(self).__name__}()"
        lines = [f"  {key}={_describe(value)}," for key, value in self.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


@dataclass(repr=False)
class Mamba2Output(ModelOutput):
    """What :class:`Mamba2Model` returns.

    last_hidden_state: float32 [B, T, D], the output of the final norm (norm_f).
    cache_params: the :class:`Mamba2Cache` after the last token, when ``use_cache``.
    hidden_states: with ``output_hidden_states``, a tuple of L+1 float32 arrays [B, T, D]: the
      output of each of the L blocks (the residual stream, before norm_f), then the norm_f
      output (the same values as last_hidden_state).
    """

    last_hidden_state: Optional[np.ndarray] = None
    cache_params: Any = None
    hidden_states: Optional[Tuple[np.ndarray, ...]] = None


@dataclass(repr=False)
class Mamba2CausalLMOutput(ModelOutput):
    """What :class:`Mamba2ForCausalLM` returns.

    loss: with ``labels``, the mean next-token cross-entropy as a ``numpy.float32`` scalar.
    logits: float32 [B, T_kept, V] for the positions ``logits_to_keep`` selects (all by default).
    cache_params, hidden_states: as in :class:`Mamba2Output`.
    """

    loss: Optional[np.floating] = None
    logits: Optional[np.ndarray] = None
    cache_params: Any = None
    hidden_states: Optional[Tuple[np.ndarray, ...]] = None
