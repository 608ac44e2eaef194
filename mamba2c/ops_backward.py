"""The backward of each kernel of mamba2c.ops, on NumPy arrays (float32 compute).

Each function takes the gradient of the forward's output (``dout``, ``dy``, ...) and the
forward's inputs again (the intermediates are recomputed in C, not stored), and returns a dict
of float32 gradients keyed by the forward's argument names. Weights may be float32, float16 or
bfloat16 like in the forward; their gradients are float32.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _C
from .dtypes import as_numpy
from .ops import _f32, _weight

__all__ = ["rmsnorm_backward", "rmsnorm_gated_backward", "causal_conv1d_backward",
           "dt_softplus_backward", "ssd_chunked_backward", "cross_entropy_backward",
           "cross_entropy_with_grad"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _same_shape(grad: np.ndarray, like: np.ndarray, gname: str, lname: str) -> None:
    if grad.shape != like.shape:
        raise ValueError(f"{gname} must have the shape of {lname} {like.shape}, got {grad.shape}")


def rmsnorm_backward(dout, x, weight, eps: float = 1e-5, row_scale=None) -> dict:
    """Of out = weight * x / sqrt(mean(x^2) + eps) * row_scale. x, dout [..., D]; row_scale
    [...] or None. Returns {"x": [..., D], "weight": [D]}."""
    x, dout = _f32(x, "x"), _f32(dout, "dout")
    _same_shape(dout, x, "dout", "x")
    D = x.shape[-1]
    R = x.size // max(D, 1)
    if row_scale is not None:
        row_scale = _f32(row_scale, "row_scale")
        if row_scale.shape != x.shape[:-1]:
            raise ValueError(f"row_scale must have shape {x.shape[:-1]}, got {row_scale.shape}")
    dx, dw = np.empty_like(x), np.empty(D, np.float32)
    _C.rmsnorm_backward(dx, dw, dout, x, _weight(weight, "weight", (D,)), row_scale, R, D,
                        float(eps))
    return {"x": dx, "weight": dw}


def rmsnorm_gated_backward(dout, y, z, weight, group_size: Optional[int] = None,
                           eps: float = 1e-5) -> dict:
    """Of g = y * silu(z), out = weight * g / rms(g) over groups of `group_size` channels (all
    of the last axis by default). Returns {"y", "z": [..., I], "weight": [I]}."""
    y, z, dout = _f32(y, "y"), _f32(z, "z"), _f32(dout, "dout")
    _same_shape(z, y, "z", "y")
    _same_shape(dout, y, "dout", "y")
    width = y.shape[-1]
    group = int(group_size or width)
    if group <= 0 or width % group:
        raise ValueError(f"group_size {group_size} must divide the width {width}")
    dy, dz, dw = np.empty_like(y), np.empty_like(y), np.empty(width, np.float32)
    _C.rmsnorm_gated_backward(dy, dz, dw, dout, y, z, _weight(weight, "weight", (width,)),
                              y.size // max(width, 1), width, group, float(eps))
    return {"y": dy, "z": dz, "weight": dw}


def causal_conv1d_backward(dout, x, weight, bias=None, state=None, mask=None,
                           activation: Optional[str] = "silu") -> dict:
    """Of ops.causal_conv1d with the same arguments (state: the initial state given to the
    forward, before the forward updated it). Returns {"x": [B, T, C], "weight": weight's shape,
    "bias": [C] or None, "state": [B, C, K] or None}; the state's gradient is that of the zero
    initial state when none was given."""
    x, dout = _f32(x, "x", 3), _f32(dout, "dout", 3)
    _same_shape(dout, x, "dout", "x")
    B, T, C = x.shape
    w, _ = as_numpy(weight)
    K = w.shape[-1]
    if w.size != C * K or K < 1:
        raise ValueError(f"weight must have shape [{C}, K], got {w.shape}")
    if activation not in ("silu", None):
        raise ValueError(f"activation must be 'silu' or None, got {activation!r}")
    if state is not None:
        state = _f32(state, "state", 3)
        if state.shape != (B, C, K):
            raise ValueError(f"state must have shape {(B, C, K)}, got {state.shape}")
    if mask is not None:
        mask = _f32(mask, "mask", 2)
        if mask.shape != (B, T):
            raise ValueError(f"mask must have shape {(B, T)}, got {mask.shape}")
    dx = np.empty_like(x)
    dw = np.empty((C, K), np.float32)
    db = np.empty(C, np.float32) if bias is not None else None
    dstate = np.empty((B, C, K), np.float32)
    _C.conv1d_backward(dx, dw, db, dstate, dout, x, state, _weight(weight, "weight", (C, K)),
                       _weight(bias, "bias", (C,)), mask, B, T, C, K, activation == "silu")
    return {"x": dx, "weight": dw.reshape(w.shape), "bias": db, "state": dstate}


def dt_softplus_backward(ddt, dt, dt_bias, time_step_limit=(0.0, float("inf"))) -> dict:
    """Of clamp(softplus(dt + dt_bias), *time_step_limit): zero where the clamp bites.
    dt, ddt [..., H]. Returns {"dt": [..., H], "dt_bias": [H]}."""
    dt, ddt = _f32(dt, "dt"), _f32(ddt, "ddt")
    _same_shape(ddt, dt, "ddt", "dt")
    H = dt.shape[-1]
    lo, hi = time_step_limit
    draw, dbias = np.empty_like(dt), np.empty(H, np.float32)
    _C.dt_softplus_backward(draw, dbias, ddt, dt, _weight(dt_bias, "dt_bias", (H,)),
                            dt.size // max(H, 1), H, float(lo), float(min(hi, _FLOAT32_MAX)))
    return {"dt": draw, "dt_bias": dbias}


def ssd_chunked_backward(dy, x, dt, A, B, C, D, chunk_size: int = 256, initial_state=None,
                         dfinal_state=None) -> dict:
    """Of ops.ssd_chunked (same arguments), given dy [Bt, T, H, P] and optionally the gradient
    of the final state [Bt, H, P, N]. Returns {"x", "dt", "A", "B", "C", "D", "initial_state"}
    (the last is the gradient of the initial state, zeros or not)."""
    x, dt = _f32(x, "x", 4), _f32(dt, "dt", 3)
    Bm, Cm = _f32(B, "B", 4), _f32(C, "C", 4)
    dy = _f32(dy, "dy", 4)
    batch, T, H, P = x.shape
    G, N = Bm.shape[2], Bm.shape[3]
    _same_shape(dy, x, "dy", "x")
    if dt.shape != (batch, T, H):
        raise ValueError(f"dt must have shape {(batch, T, H)}, got {dt.shape}")
    if Bm.shape != (batch, T, G, N) or Cm.shape != Bm.shape:
        raise ValueError(f"B and C must have shape [{batch}, {T}, G, N], got {Bm.shape}, "
                         f"{Cm.shape}")
    if G == 0 or H % G:
        raise ValueError(f"the {H} heads must split evenly into the {G} groups")
    if int(chunk_size) <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if T == 0 or batch == 0 or P == 0 or N == 0:
        raise ValueError(f"empty input: x {x.shape}, B {Bm.shape}")
    A, D = _f32(A, "A", 1), _f32(D, "D", 1)
    if A.shape != (H,) or D.shape != (H,):
        raise ValueError(f"A and D must have shape ({H},)")
    states = []
    for name, s in (("initial_state", initial_state), ("dfinal_state", dfinal_state)):
        if s is not None:
            s = _f32(s, name, 4)
            if s.shape != (batch, H, P, N):
                raise ValueError(f"{name} must have shape {(batch, H, P, N)}, got {s.shape}")
        states.append(s)
    xbc = np.concatenate([x.reshape(batch, T, H * P), Bm.reshape(batch, T, G * N),
                          Cm.reshape(batch, T, G * N)], axis=-1)
    dxbc = np.empty_like(xbc)
    ddt = np.empty_like(dt)
    dA, dD = np.empty(H, np.float32), np.empty(H, np.float32)
    dstate = np.empty((batch, H, P, N), np.float32)
    _C.ssd_chunked_backward(dxbc, ddt, dA, dD, dstate, dy, states[1], states[0], xbc, dt, A, D,
                            batch, T, H, P, N, G, int(chunk_size))
    HP, GN = H * P, G * N
    part = lambda lo, hi, shape: np.ascontiguousarray(dxbc[..., lo:hi]).reshape(shape)
    return {"x": part(0, HP, x.shape), "dt": ddt, "A": dA, "B": part(HP, HP + GN, Bm.shape),
            "C": part(HP + GN, HP + 2 * GN, Cm.shape), "D": dD, "initial_state": dstate}


def _logits_and_labels(logits, labels):
    logits = _f32(logits, "logits", 3)
    labels = np.ascontiguousarray(as_numpy(labels)[0], dtype=np.int64)
    if labels.shape != logits.shape[:2]:
        raise ValueError(f"labels must have shape {logits.shape[:2]}, got {labels.shape}")
    return logits, labels, int(np.count_nonzero(labels[:, 1:] != -100))


def cross_entropy_backward(logits, labels, grad: float = 1.0) -> np.ndarray:
    """Of ops.cross_entropy (mean next-token cross-entropy, -100 ignored) scaled by `grad`:
    the gradient of the logits [B, T, V], zero at ignored and last positions (all zeros when no
    label counts)."""
    return cross_entropy_with_grad(logits, labels, grad)[1]


def cross_entropy_with_grad(logits, labels, grad: float = 1.0):
    """(ops.cross_entropy(logits, labels), cross_entropy_backward(logits, labels, grad)) from
    one pass over the logits."""
    logits, labels, count = _logits_and_labels(logits, labels)
    dlogits = np.empty_like(logits)
    loss = _C.cross_entropy_with_grad(dlogits, logits, labels, *logits.shape,
                                      float(grad) / max(count, 1))
    return loss, dlogits
