"""Each kernel of the engine on its own, on NumPy arrays (float32 compute).

Weights (``weight``, ``bias``, ``table``) may be float32, float16, bfloat16 (ml_dtypes or torch)
arrays; every other float input is used as float32. Shapes use B batch, T tokens, D width,
H heads, P head_dim, N state, G groups, K conv kernel.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
from numpy.typing import ArrayLike

from . import _C
from .dtypes import STORAGE, as_numpy


def _f32(x: Any, name: str, ndim: Optional[int] = None) -> np.ndarray:
    array, kind = as_numpy(x)
    if kind == "bfloat16":
        from .dtypes import bfloat16_bits_to_float32

        array = bfloat16_bits_to_float32(array)
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{name} must hold floats, got {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _weight(x: Any, name: str, shape: Tuple[int, ...]) -> Optional[Tuple[np.ndarray, int]]:
    if x is None:
        return None
    array, kind = as_numpy(x)
    if kind is None:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{name} must hold floats, got {array.dtype}")
        array, kind = array.astype(np.float32), "float32"
    if array.size != int(np.prod(shape)):
        raise ValueError(f"{name} must have shape {shape}, got {array.shape}")
    return np.ascontiguousarray(array, dtype=STORAGE[kind][0]), STORAGE[kind][1]


def rmsnorm(x: ArrayLike, weight: ArrayLike, eps: float = 1e-5) -> np.ndarray:
    """x [..., D] -> weight * x / sqrt(mean(x^2) + eps), float32."""
    x = _f32(x, "x")
    D = x.shape[-1]
    out = np.empty_like(x)
    _C.rmsnorm(out, x, _weight(weight, "weight", (D,)), None, x.size // max(D, 1), D, float(eps))
    return out


def rmsnorm_gated(y: ArrayLike, z: ArrayLike, weight: ArrayLike, group_size: Optional[int] = None,
                  eps: float = 1e-5) -> np.ndarray:
    """g = y * silu(z), then RMSNorm of g over groups of `group_size` channels of the last axis
    (all of it by default, as transformers does). y, z [..., I] -> [..., I] float32."""
    y, z = _f32(y, "y"), _f32(z, "z")
    if y.shape != z.shape:
        raise ValueError(f"y and z must have the same shape, got {y.shape} and {z.shape}")
    width = y.shape[-1]
    out = np.empty_like(y)
    _C.rmsnorm_gated(out, y, z, _weight(weight, "weight", (width,)), y.size // max(width, 1),
                     width, int(group_size or width), float(eps))
    return out


def linear(x: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None) -> np.ndarray:
    """x [..., K] @ weight[O, K]^T + bias[O] -> [..., O] float32."""
    x = _f32(x, "x")
    w, _ = as_numpy(weight)
    if w.ndim != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(f"weight must have shape [out, {x.shape[-1]}], got {w.shape}")
    O, K = w.shape
    out = np.empty(x.shape[:-1] + (O,), np.float32)
    _C.linear(out, x, _weight(weight, "weight", (O, K)), _weight(bias, "bias", (O,)),
              x.size // max(K, 1), K, O, False)
    return out


def causal_conv1d(x: ArrayLike, weight: ArrayLike, bias: Optional[ArrayLike] = None,
                  state: Optional[np.ndarray] = None, mask: Optional[ArrayLike] = None,
                  activation: Optional[str] = "silu") -> np.ndarray:
    """Causal depthwise conv over time. x [B, T, C]; weight [C, K] (or [C, 1, K]); bias [C];
    state [B, C, K] float32: when given, the conv continues from it (its last K-1 columns are the
    inputs before x) and it is updated in place to the last K inputs; mask [B, T] zeroes rows of
    the output. activation "silu" or None. Returns [B, T, C] float32."""
    x = _f32(x, "x", 3)
    B, T, C = x.shape
    w, _ = as_numpy(weight)
    K = w.shape[-1]
    if w.size != C * K:
        raise ValueError(f"weight must have shape [{C}, K], got {w.shape}")
    if activation not in ("silu", None):
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    has_state = state is not None
    if has_state:
        if not (isinstance(state, np.ndarray) and state.dtype == np.float32
                and state.shape == (B, C, K) and state.flags.c_contiguous):
            raise ValueError(f"state must be a C-contiguous float32 array of shape {(B, C, K)}")
    if mask is not None:
        mask = _f32(mask, "mask", 2)
        if mask.shape != (B, T):
            raise ValueError(f"mask must have shape {(B, T)}, got {mask.shape}")
    out = np.empty_like(x)
    _C.conv1d(out, state, has_state, x, _weight(weight, "weight", (C, K)),
              _weight(bias, "bias", (C,)), mask, B, T, C, K, activation == "silu")
    return out


def dt_softplus(dt: ArrayLike, dt_bias: ArrayLike,
                time_step_limit: Tuple[float, float] = (0.0, float("inf"))) -> np.ndarray:
    """clamp(softplus(dt + dt_bias), *time_step_limit). dt [..., H] -> [..., H] float32."""
    dt = _f32(dt, "dt")
    H = dt.shape[-1]
    lo, hi = time_step_limit
    out = np.empty_like(dt)
    _C.dt_softplus(out, dt, _weight(dt_bias, "dt_bias", (H,)), dt.size // max(H, 1), H,
                   float(lo), min(float(hi), float(np.finfo(np.float32).max)))
    return out


def ssd_chunked(x: ArrayLike, dt: ArrayLike, A: ArrayLike, B: ArrayLike, C: ArrayLike,
                D: ArrayLike, chunk_size: int = 256,
                initial_state: Optional[ArrayLike] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The SSD scan, chunked: for each sequence and head h (group g = h // (H/G)),
        s_t = exp(dt_t A_h) s_{t-1} + dt_t x_t (outer) B_t,   y_t = s_t C_t + D_h x_t.
    x [Bt, T, H, P]; dt [Bt, T, H] (already softplus'd); A, D [H]; B, C [Bt, T, G, N];
    initial_state [Bt, H, P, N] or None (zeros). Returns (y [Bt, T, H, P], final_state
    [Bt, H, P, N]), float32."""
    x, dt = _f32(x, "x", 4), _f32(dt, "dt", 3)
    Bm, Cm = _f32(B, "B", 4), _f32(C, "C", 4)
    batch, T, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    if dt.shape != (batch, T, H):
        raise ValueError(f"dt must have shape {(batch, T, H)}, got {dt.shape}")
    if Bm.shape != (batch, T, G, N) or Cm.shape != Bm.shape:
        raise ValueError(f"B and C must have shape [{batch}, {T}, G, N], got {Bm.shape}, {Cm.shape}")
    if G == 0 or H % G:
        raise ValueError(f"the {H} heads must split evenly into the {G} groups")
    if int(chunk_size) <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if T == 0:
        raise ValueError("the sequence is empty")
    A, D = _f32(A, "A", 1), _f32(D, "D", 1)
    if A.shape != (H,) or D.shape != (H,):
        raise ValueError(f"A and D must have shape ({H},)")
    xbc = np.concatenate([x.reshape(batch, T, H * P), Bm.reshape(batch, T, G * N),
                          Cm.reshape(batch, T, G * N)], axis=-1)
    if initial_state is None:
        state = np.zeros((batch, H, P, N), np.float32)
    else:
        state = _f32(initial_state, "initial_state", 4).copy()
        if state.shape != (batch, H, P, N):
            raise ValueError(f"initial_state must have shape {(batch, H, P, N)}, got {state.shape}")
    y = np.empty((batch, T, H, P), np.float32)
    _C.ssd_chunked(y, state, initial_state is not None, xbc, dt, A, D, batch, T, H, P, N, G,
                   int(chunk_size))
    return y, state


def ssd_step(x: ArrayLike, dt: ArrayLike, A: ArrayLike, B: ArrayLike, C: ArrayLike,
             D: ArrayLike, state: np.ndarray) -> np.ndarray:
    """One token of the SSD recurrence, updating `state` in place:
        state = exp(dt A) state + dt x (outer) B,   y = state C + D x.
    x [Bt, H, P]; dt [Bt, H]; A, D [H]; B, C [Bt, G, N]; state [Bt, H, P, N] float32 C-contiguous.
    Returns y [Bt, H, P] float32."""
    x, dt = _f32(x, "x", 3), _f32(dt, "dt", 2)
    Bm, Cm = _f32(B, "B", 3), _f32(C, "C", 3)
    batch, H, P = x.shape
    G, N = Bm.shape[1], Bm.shape[2]
    if dt.shape != (batch, H) or Bm.shape != (batch, G, N) or Cm.shape != Bm.shape:
        raise ValueError(f"dt must have shape {(batch, H)} and B, C [{batch}, G, N]")
    if not (isinstance(state, np.ndarray) and state.dtype == np.float32
            and state.shape == (batch, H, P, N) and state.flags.c_contiguous):
        raise ValueError(f"state must be a C-contiguous float32 array of shape {(batch, H, P, N)}")
    A, D = _f32(A, "A", 1), _f32(D, "D", 1)
    xbc = np.concatenate([x.reshape(batch, H * P), Bm.reshape(batch, G * N),
                          Cm.reshape(batch, G * N)], axis=-1)
    y = np.empty((batch, H, P), np.float32)
    _C.ssd_step(y, state, True, xbc, dt, A, D, batch, H, P, N, G)
    return y


def cross_entropy(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean next-token cross-entropy: logits [B, T, V] at position t predict labels[:, t+1];
    -100 labels are ignored. NaN when nothing counts."""
    logits = _f32(logits, "logits", 3)
    labels = np.ascontiguousarray(as_numpy(labels)[0], dtype=np.int64)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape {logits.shape[:2]}, got {labels.shape}")
    return _C.cross_entropy(logits, labels, *logits.shape)


def embedding(ids: ArrayLike, table: ArrayLike) -> np.ndarray:
    """table[ids]: ids [...] ints in [0, V), table [V, D] -> [..., D] float32."""
    ids = np.ascontiguousarray(as_numpy(ids)[0], dtype=np.int64)
    t, _ = as_numpy(table)
    if t.ndim != 2:
        raise ValueError(f"table must have shape [V, D], got {t.shape}")
    V, D = t.shape
    out = np.empty(ids.shape + (D,), np.float32)
    _C.embedding(out, ids, _weight(table, "table", (V, D)), ids.size, V, D)
    return out
from .ops_backward import *  # noqa: E402,F401,F403
