"""Training transformers' Mamba-2 models on mamba2c's CPU kernels.

``import mamba2c`` never imports PyTorch; this module does, when it is imported.

- ``torch.autograd.Function``s around the forward and backward kernels: ``conv1d_silu``,
  ``dt_softplus``, ``ssd_chunked``, ``rmsnorm_gated``, ``rmsnorm``, ``causal_lm_cross_entropy``.
  Contiguous CPU float32 tensors are handed to C without a copy; other float dtypes (bfloat16,
  float16) are computed in float32 and their gradients returned in the input's dtype.
- ``use_mamba2c_kernels(model)`` patches a ``transformers`` ``Mamba2ForCausalLM`` /
  ``Mamba2Model`` (also inside a PEFT wrapper) in place so that each mixer runs in_proj and
  out_proj in torch (PEFT's LoRA layers on them keep working) and everything in between on these
  Functions; the RMSNorms and the causal-LM loss too. Calls with a cache (generation) use the
  original forward.

Example::

    model = transformers.Mamba2ForCausalLM(config)
    use_mamba2c_kernels(model)
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
"""
from __future__ import annotations

import types
from typing import Optional

import numpy as np
import torch

from . import _C

__all__ = ["conv1d_silu", "dt_softplus", "ssd_chunked", "rmsnorm_gated", "rmsnorm",
           "causal_lm_cross_entropy", "use_mamba2c_kernels", "remove_mamba2c_kernels"]

_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _check_cpu(*tensors) -> None:
    for t in tensors:
        if t is not None and t.device.type != "cpu":
            kind = "CUDA" if t.device.type == "cuda" else f"'{t.device.type}'"
            raise NotImplementedError(
                f"mamba2c's training kernels run on the CPU only, got a tensor on {kind} device "
                f"{t.device}: move the model and its inputs to the CPU, or train on the GPU "
                f"without use_mamba2c_kernels")


def _f32(t: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Contiguous float32 values of t (t itself when it already is)."""
    if t is None:
        return None
    if not t.is_floating_point():
        raise TypeError(f"expected a floating-point tensor, got {t.dtype}")
    return t.detach().to(torch.float32).contiguous()


def _np(t: Optional[torch.Tensor]) -> Optional[np.ndarray]:
    return None if t is None else t.numpy()


def _w(t: Optional[torch.Tensor]):
    """A float32 weight as the (array, dtype code) pair the kernels take."""
    return None if t is None else (t.numpy(), 0)


def _specs(*tensors):
    """(shape, dtype) of each input, kept on ctx instead of the tensors themselves: a tensor
    held outside save_for_backward would stay alive through gradient checkpointing."""
    return tuple(None if t is None else (t.shape, t.dtype) for t in tensors)


def _grad_as(grad: Optional[torch.Tensor], spec, needed: bool):
    """grad in the shape and dtype of the input described by `spec`, if that input wants one."""
    if grad is None or spec is None or not needed:
        return None
    return grad.reshape(spec[0]).to(spec[1])


def _expect(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


class _Conv1dSiLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, mask):
        _check_cpu(x, weight, bias, mask)
        _expect(x.dim() == 3, f"x must be [B, T, C], got shape {tuple(x.shape)}")
        B, T, C = x.shape
        K = weight.shape[-1]
        _expect(weight.numel() == C * K and 1 <= K <= 16,
                f"weight must be [{C}, K] with K in [1, 16], got {tuple(weight.shape)}")
        _expect(bias is None or bias.numel() == C, f"bias must have {C} elements")
        _expect(mask is None or tuple(mask.shape) == (B, T), f"mask must be [{B}, {T}]")
        x32, w32, b32, m32 = _f32(x), _f32(weight), _f32(bias), _f32(mask)
        out = torch.empty((B, T, C), dtype=torch.float32)
        _C.conv1d(_np(out), None, False, _np(x32), _w(w32), _w(b32), _np(m32), B, T, C, K, True)
        ctx.save_for_backward(x32, w32, b32, m32)
        ctx.meta = _specs(x, weight, bias)
        return out

    @staticmethod
    def backward(ctx, dout):
        x32, w32, b32, m32 = ctx.saved_tensors
        x, weight, bias = ctx.meta
        B, T, C = x32.shape
        K = w32.shape[-1]
        dx = torch.empty_like(x32)
        dw = torch.empty((C, K), dtype=torch.float32)
        db = torch.empty(C, dtype=torch.float32) if b32 is not None else None
        _C.conv1d_backward(_np(dx), _np(dw), _np(db), None, _np(_f32(dout)), _np(x32), None,
                           _w(w32), _w(b32), _np(m32), B, T, C, K, True)
        return (_grad_as(dx, x, ctx.needs_input_grad[0]),
                _grad_as(dw, weight, ctx.needs_input_grad[1]),
                _grad_as(db, bias, ctx.needs_input_grad[2]), None)


def conv1d_silu(x, weight, bias=None, mask=None):
    """silu(causal depthwise conv over time) * mask. x [B, T, C]; weight [C, K] or [C, 1, K];
    bias [C] or None; mask [B, T] (0/1) or None. Returns float32 [B, T, C]."""
    return _Conv1dSiLU.apply(x, weight, bias, mask)


class _DtSoftplus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, raw, dt_bias, lo, hi):
        _check_cpu(raw, dt_bias)
        H = raw.shape[-1]
        _expect(dt_bias.numel() == H, f"dt_bias must have {H} elements, got {dt_bias.numel()}")
        raw32, b32 = _f32(raw), _f32(dt_bias)
        out = torch.empty_like(raw32)
        R = raw32.numel() // max(H, 1)
        _C.dt_softplus(_np(out), _np(raw32), _w(b32), R, H, lo, hi)
        ctx.save_for_backward(raw32, b32)
        ctx.meta = _specs(raw, dt_bias) + (lo, hi)
        return out

    @staticmethod
    def backward(ctx, ddt):
        raw32, b32 = ctx.saved_tensors
        raw, dt_bias, lo, hi = ctx.meta
        H = raw32.shape[-1]
        draw, dbias = torch.empty_like(raw32), torch.empty(H, dtype=torch.float32)
        _C.dt_softplus_backward(_np(draw), _np(dbias), _np(_f32(ddt)), _np(raw32), _w(b32),
                                raw32.numel() // max(H, 1), H, lo, hi)
        return (_grad_as(draw, raw, ctx.needs_input_grad[0]),
                _grad_as(dbias, dt_bias, ctx.needs_input_grad[1]), None, None)


def dt_softplus(raw, dt_bias, time_step_limit=(0.0, float("inf"))):
    """clamp(softplus(raw + dt_bias), *time_step_limit); raw [..., H]. Returns float32."""
    lo, hi = (float(v) for v in time_step_limit)
    return _DtSoftplus.apply(raw, dt_bias, lo, min(hi, _FLOAT32_MAX))


class _SSDChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xbc, dt, A, D, initial_state, sizes):
        _check_cpu(xbc, dt, A, D, initial_state)
        H, P, N, G, Q = sizes
        _expect(xbc.dim() == 3 and xbc.shape[-1] == H * P + 2 * G * N,
                f"xbc must be [B, T, {H * P + 2 * G * N}] (x, B, C), got {tuple(xbc.shape)}")
        B, T, _ = xbc.shape
        _expect(tuple(dt.shape) == (B, T, H), f"dt must be [{B}, {T}, {H}], got {tuple(dt.shape)}")
        _expect(A.numel() == H and D.numel() == H, f"A and D must have {H} elements")
        _expect(initial_state is None or tuple(initial_state.shape) == (B, H, P, N),
                f"initial_state must be [{B}, {H}, {P}, {N}]")
        xbc32, dt32, A32, D32 = _f32(xbc), _f32(dt), _f32(A), _f32(D)
        s32 = _f32(initial_state)
        y = torch.empty((B, T, H * P), dtype=torch.float32)
        final = torch.zeros((B, H, P, N), dtype=torch.float32) if s32 is None else s32.clone()
        _C.ssd_chunked(_np(y), _np(final), s32 is not None, _np(xbc32), _np(dt32), _np(A32),
                       _np(D32), B, T, H, P, N, G, Q)
        ctx.save_for_backward(xbc32, dt32, A32, D32, s32)
        ctx.meta = _specs(xbc, dt, A, D, initial_state) + (sizes,)
        ctx.set_materialize_grads(False)
        return y, final

    @staticmethod
    def backward(ctx, dy, dfinal):
        xbc32, dt32, A32, D32, s32 = ctx.saved_tensors
        xbc, dt, A, D, initial_state, (H, P, N, G, Q) = ctx.meta
        B, T, _ = xbc32.shape
        dxbc, ddt = torch.empty_like(xbc32), torch.empty_like(dt32)
        dA, dD = torch.empty(H, dtype=torch.float32), torch.empty(H, dtype=torch.float32)
        dstate = torch.empty((B, H, P, N), dtype=torch.float32)
        dy32 = torch.zeros((B, T, H * P), dtype=torch.float32) if dy is None else _f32(dy)
        _C.ssd_chunked_backward(_np(dxbc), _np(ddt), _np(dA), _np(dD), _np(dstate), _np(dy32),
                                _np(_f32(dfinal)), _np(s32), _np(xbc32), _np(dt32), _np(A32),
                                _np(D32), B, T, H, P, N, G, Q)
        need = ctx.needs_input_grad
        return (_grad_as(dxbc, xbc, need[0]), _grad_as(ddt, dt, need[1]),
                _grad_as(dA, A, need[2]), _grad_as(dD, D, need[3]),
                _grad_as(dstate, initial_state, need[4]), None)


def ssd_chunked(xbc, dt, A, D, num_heads: int, head_dim: int, state_size: int, n_groups: int,
                chunk_size: int = 256, initial_state=None, return_final_state: bool = False):
    """The chunked SSD scan on the conv output xbc [B, T, H*P + 2*G*N] (x, then B, then C, as the
    Mamba-2 mixer lays them out); dt [B, T, H] (after softplus); A, D [H]; initial_state
    [B, H, P, N] or None. Returns y [B, T, H*P] float32 (and the final state)."""
    y, final = _SSDChunked.apply(xbc, dt, A, D, initial_state,
                                 (int(num_heads), int(head_dim), int(state_size), int(n_groups),
                                  int(chunk_size)))
    return (y, final) if return_final_state else y


class _RMSNormGated(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y, z, weight, group_size, eps):
        _check_cpu(y, z, weight)
        _expect(y.shape == z.shape, f"y and z must have one shape, got {tuple(y.shape)} and "
                                    f"{tuple(z.shape)}")
        width = y.shape[-1]
        _expect(weight.numel() == width, f"weight must have {width} elements")
        _expect(width % group_size == 0, f"group_size {group_size} must divide {width}")
        y32, z32, w32 = _f32(y), _f32(z), _f32(weight)
        out = torch.empty_like(y32)
        R = y32.numel() // max(width, 1)
        _C.rmsnorm_gated(_np(out), _np(y32), _np(z32), _w(w32), R, width, group_size, eps)
        ctx.save_for_backward(y32, z32, w32)
        ctx.meta = _specs(y, z, weight) + (group_size, eps)
        return out

    @staticmethod
    def backward(ctx, dout):
        y32, z32, w32 = ctx.saved_tensors
        y, z, weight, group_size, eps = ctx.meta
        width = y32.shape[-1]
        dy, dz, dw = torch.empty_like(y32), torch.empty_like(z32), torch.empty_like(w32)
        _C.rmsnorm_gated_backward(_np(dy), _np(dz), _np(dw), _np(_f32(dout)), _np(y32),
                                  _np(z32), _w(w32), y32.numel() // max(width, 1), width,
                                  group_size, eps)
        need = ctx.needs_input_grad
        return (_grad_as(dy, y, need[0]), _grad_as(dz, z, need[1]),
                _grad_as(dw, weight, need[2]), None, None)


def rmsnorm_gated(y, z, weight, eps: float = 1e-6, group_size: Optional[int] = None):
    """weight * g / rms(g), g = y * silu(z), over groups of group_size channels (the whole last
    axis by default, as transformers' MambaRMSNormGated). Returns float32."""
    return _RMSNormGated.apply(y, z, weight, int(group_size or y.shape[-1]), float(eps))


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        _check_cpu(x, weight)
        D = x.shape[-1]
        _expect(weight.numel() == D, f"weight must have {D} elements")
        x32, w32 = _f32(x), _f32(weight)
        out = torch.empty_like(x32)
        _C.rmsnorm(_np(out), _np(x32), _w(w32), None, x32.numel() // max(D, 1), D, eps)
        ctx.save_for_backward(x32, w32)
        ctx.meta = _specs(x, weight) + (eps,)
        return out

    @staticmethod
    def backward(ctx, dout):
        x32, w32 = ctx.saved_tensors
        x, weight, eps = ctx.meta
        D = x32.shape[-1]
        dx, dw = torch.empty_like(x32), torch.empty_like(w32)
        _C.rmsnorm_backward(_np(dx), _np(dw), _np(_f32(dout)), _np(x32), _w(w32), None,
                            x32.numel() // max(D, 1), D, eps)
        return (_grad_as(dx, x, ctx.needs_input_grad[0]),
                _grad_as(dw, weight, ctx.needs_input_grad[1]), None)


def rmsnorm(x, weight, eps: float = 1e-6):
    """weight * x / sqrt(mean(x^2) + eps) over the last axis. Returns float32."""
    return _RMSNorm.apply(x, weight, float(eps))


class _CrossEntropy(torch.autograd.Function):
    """The loss and, when a gradient will be wanted, its gradient in the same pass over the
    logits; backward only scales the kept gradient."""

    @staticmethod
    def forward(ctx, logits, labels, denominator):
        _check_cpu(logits, labels)
        _expect(logits.dim() == 3 and tuple(labels.shape) == tuple(logits.shape[:2]),
                f"logits must be [B, T, V] and labels [B, T], got {tuple(logits.shape)} and "
                f"{tuple(labels.shape)}")
        logits32 = _f32(logits)
        labels64 = labels.detach().to(torch.int64).contiguous()
        count = int((labels64[:, 1:] != -100).sum())
        if denominator is None:  # the mean, NaN when nothing counts (as torch)
            denominator = count
        dlogits = torch.empty_like(logits32) if ctx.needs_input_grad[0] else None
        mean = _C.cross_entropy_with_grad(_np(dlogits), _np(logits32), _np(labels64),
                                          *logits32.shape,
                                          1.0 / denominator if denominator else 0.0)
        loss = mean * count / denominator if count else (mean if denominator == 0 else 0.0)
        ctx.save_for_backward(dlogits)
        ctx.logits_dtype = logits.dtype
        return torch.tensor(loss, dtype=torch.float32)

    @staticmethod
    def backward(ctx, grad):
        (dlogits,) = ctx.saved_tensors
        if dlogits is None:
            return None, None, None
        if float(grad) != 1.0:
            dlogits = dlogits * grad
        return dlogits.to(ctx.logits_dtype), None, None


def causal_lm_cross_entropy(logits, labels, num_items_in_batch=None):
    """transformers' causal-LM loss: position t of logits [B, T, V] predicts labels[:, t+1],
    -100 ignored; the mean over counted positions, or their sum / num_items_in_batch."""
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = float(num_items_in_batch.item())
    return _CrossEntropy.apply(logits, labels, num_items_in_batch)


# --- patching transformers models ------------------------------------------------------------


def _mixer_forward(self, hidden_states, cache_params=None, attention_mask=None, **kwargs):
    """Mamba2Mixer.forward without a cache on mamba2c's kernels (the math of transformers'
    chunked torch path, attention mask included)."""
    if cache_params is not None or self.activation != "silu":
        return self._mamba2c_forward(hidden_states, cache_params=cache_params,
                                     attention_mask=attention_mask, **kwargs)
    _check_cpu(hidden_states)
    dtype = hidden_states.dtype
    if attention_mask is not None:
        hidden_states = (hidden_states * attention_mask[:, :, None]).to(dtype)
    projected = self.in_proj(hidden_states)
    gate, xbc, dt = projected.split([self.intermediate_size, self.conv_dim, self.num_heads], -1)
    mask = None if attention_mask is None else attention_mask.to(torch.float32)
    xbc = conv1d_silu(xbc, self.conv1d.weight.squeeze(1), self.conv1d.bias, mask)
    dt = dt_softplus(dt, self.dt_bias, self.time_step_limit)
    A = -torch.exp(self.A_log.float())
    y = ssd_chunked(xbc, dt, A, self.D, self.num_heads, self.head_dim, self.ssm_state_size,
                    self.n_groups, self.chunk_size)
    y = rmsnorm_gated(y, gate, self.norm.weight, self.norm.variance_epsilon)
    return self.out_proj(y.to(dtype))


def _rmsnorm_forward(self, hidden_states):
    out = rmsnorm(hidden_states, self.weight, self.variance_epsilon)
    return out.to(torch.promote_types(hidden_states.dtype, self.weight.dtype))


def _loss_function(original):
    def loss_function(logits, labels, vocab_size, num_items_in_batch=None, ignore_index=-100,
                      shift_labels=None, **kwargs):
        if (shift_labels is not None or ignore_index != -100 or logits.dim() != 3
                or labels is None or tuple(labels.shape) != tuple(logits.shape[:2])):
            return original(logits, labels, vocab_size, num_items_in_batch=num_items_in_batch,
                            ignore_index=ignore_index, shift_labels=shift_labels, **kwargs)
        return causal_lm_cross_entropy(logits, labels.to(logits.device), num_items_in_batch)

    loss_function._mamba2c_original = original
    return loss_function


def _patch(module, method) -> None:
    """Replaces module.forward by `method` on this instance only, keeping what it replaced."""
    if "_mamba2c_forward" in vars(module):
        return
    module._mamba2c_had_own_forward = "forward" in vars(module)  # e.g. an accelerate hook
    module._mamba2c_forward = module.forward
    module.forward = types.MethodType(method, module)


def use_mamba2c_kernels(model, norms: bool = True, loss: bool = True):
    """Runs a transformers Mamba2ForCausalLM / Mamba2Model (or a PEFT model wrapping one) on
    mamba2c's CPU kernels, in place, and returns it. Each Mamba2Mixer keeps in_proj and out_proj
    (and whatever PEFT put on them) in torch and computes the conv, dt, SSD and gated norm with
    mamba2c's autograd Functions when called without a cache; with a cache it uses its original
    forward, and so does a mixer whose activation is not SiLU. `norms` also patches the block
    and final RMSNorms, `loss` the causal-LM loss (calls with shift_labels or another
    ignore_index keep transformers' loss). Calling it twice is harmless;
    remove_mamba2c_kernels undoes it."""
    from transformers.models.mamba2 import modeling_mamba2 as hf

    mixers = 0
    for module in model.modules():
        if isinstance(module, hf.Mamba2Mixer):
            _patch(module, _mixer_forward)
            mixers += 1
        elif norms and isinstance(module, hf.Mamba2RMSNorm):
            _patch(module, _rmsnorm_forward)
        elif loss and isinstance(module, hf.Mamba2ForCausalLM):
            if "_mamba2c_had_own_loss" not in vars(module):
                module._mamba2c_had_own_loss = "_loss_function" in vars(module)
                module.loss_function = _loss_function(module.loss_function)
    if mixers == 0:
        raise ValueError(f"no transformers Mamba2Mixer found in {type(model).__name__}")
    return model


def remove_mamba2c_kernels(model):
    """Undoes use_mamba2c_kernels on `model`, in place, and returns it."""
    for module in model.modules():
        if "_mamba2c_forward" in vars(module):
            if module._mamba2c_had_own_forward:
                module.forward = module._mamba2c_forward
            else:
                del module.forward
            del module._mamba2c_forward, module._mamba2c_had_own_forward
        if "_mamba2c_had_own_loss" in vars(module):
            if module._mamba2c_had_own_loss:
                module.loss_function = module.loss_function._mamba2c_original
            else:
                del module._loss_function
            del module._mamba2c_had_own_loss
    return model
