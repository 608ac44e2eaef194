"""float64 NumPy references of every kernel, written from the math, not from the C code."""
import numpy as np


def silu(v):
    return v / (1.0 + np.exp(-v))


def softplus(v):
    return np.where(v > 20, v, np.log1p(np.exp(np.minimum(v, 20))))


def rmsnorm(x, w, eps):
    x = x.astype(np.float64)
    return w * x / np.sqrt(np.mean(x * x, -1, keepdims=True) + eps)


def rmsnorm_gated(y, z, w, group_size, eps):
    g = y.astype(np.float64) * silu(z.astype(np.float64))
    shape = g.shape
    g = g.reshape(shape[:-1] + (shape[-1] // group_size, group_size))
    g = g / np.sqrt(np.mean(g * g, -1, keepdims=True) + eps)
    return w * g.reshape(shape)


def causal_conv1d(x, w, b, state=None, mask=None, silu_act=True):
    """x [B,T,C], w [C,K], state [B,C,K] (last K inputs) -> (out, new_state)."""
    B, T, C = x.shape
    K = w.shape[-1]
    left = np.zeros((B, K - 1, C)) if state is None else state[:, :, 1:].transpose(0, 2, 1)
    ext = np.concatenate([left, x], 1)
    out = np.zeros((B, T, C))
    for k in range(K):
        out += w[None, None, :, k] * ext[:, k:k + T]
    if b is not None:
        out += b
    if silu_act:
        out = silu(out)
    if mask is not None:
        out = out * mask[:, :, None]
    full = np.concatenate([np.zeros((B, K, C)) if state is None
                           else state.transpose(0, 2, 1), x], 1)
    return out, full[:, -K:].transpose(0, 2, 1)


def ssd_scan(x, dt, A, B, C, D, init=None):
    """Token-by-token recurrence. x [b,T,H,P], dt [b,T,H], B/C [b,T,G,N] -> (y, final)."""
    b, T, H, P = x.shape
    G, N = B.shape[2], B.shape[3]
    Bh = np.repeat(B, H // G, axis=2)
    Ch = np.repeat(C, H // G, axis=2)
    s = np.zeros((b, H, P, N)) if init is None else init.astype(np.float64).copy()
    ys = []
    for t in range(T):
        decay = np.exp(dt[:, t] * A)[:, :, None, None]
        s = s * decay + dt[:, t][:, :, None, None] * x[:, t][..., None] * Bh[:, t][:, :, None, :]
        ys.append(np.einsum("bhpn,bhn->bhp", s, Ch[:, t]) + D[None, :, None] * x[:, t])
    return np.stack(ys, 1), s


def cross_entropy(logits, labels):
    logits = logits.astype(np.float64)
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        for t in range(logits.shape[1] - 1):
            target = labels[b, t + 1]
            if target == -100:
                continue
            row = logits[b, t]
            total += np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[target]
            count += 1
    return total / count if count else float("nan")
