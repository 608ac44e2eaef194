"""The backward kernels, their torch autograd Functions and a patched transformers model.

Each kernel's gradients are checked two ways: element by element against torch float64 autograd
of the same math, and (without torch) as directional derivatives against central differences
of the float64 NumPy references of tests/reference.py. The patched transformers model is
checked against transformers' own autograd on the unpatched model."""
import copy
import subprocess
import sys

import numpy as np
import pytest

from mamba2c import ops

import reference as ref
from conftest import randomize_torch_model, rel_err, tiny_config_kwargs


def f32(rng, *shape, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(np.float32)


def torch64(*arrays):
    torch = pytest.importorskip("torch")
    return [None if a is None else torch.tensor(np.asarray(a, np.float64), requires_grad=True)
            for a in arrays]


def directional_check(forward, inputs, grads, dout, eps=1e-6, tol=2e-5):
    """<grads, v> == d/de <dout, forward(inputs + e v)> for a random direction v, the
    derivative taken by central differences of the float64 reference `forward`."""
    rng = np.random.default_rng(1)
    inputs = [np.asarray(a, np.float64) for a in inputs]
    directions = [rng.normal(size=a.shape) for a in inputs]
    plus = forward(*[a + eps * v for a, v in zip(inputs, directions)])
    minus = forward(*[a - eps * v for a, v in zip(inputs, directions)])
    if not isinstance(plus, tuple):
        plus, minus, dout = (plus,), (minus,), (dout,)
    numeric = sum(float(np.sum(d * (p - m))) for d, p, m in zip(dout, plus, minus)) / (2 * eps)
    analytic = sum(float(np.sum(np.asarray(g, np.float64) * v)) for g, v in zip(grads, directions))
    assert abs(analytic - numeric) <= tol * max(abs(numeric), 1.0), (analytic, numeric)


# --- RMSNorm ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rows,dim", [(1, 3), (3, 7), (17, 64), (5, 768)])
@pytest.mark.parametrize("with_scale", [False, True])
def test_rmsnorm_backward(rng, rows, dim, with_scale):
    x, w, dout = f32(rng, rows, dim, scale=3), f32(rng, dim), f32(rng, rows, dim)
    scale = (rng.random(rows) > 0.3).astype(np.float32) if with_scale else None
    got = ops.rmsnorm_backward(dout, x, w, 1e-5, row_scale=scale)
    tx, tw = torch64(x, w)
    out = tw * tx / (tx.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
    if with_scale:
        out = out * torch64(scale)[0].detach()[:, None]
    (out * torch64(dout)[0].detach()).sum().backward()
    assert rel_err(got["x"], tx.grad) < 1e-5
    assert rel_err(got["weight"], tw.grad) < 1e-5


@pytest.mark.parametrize("width,group", [(8, 8), (64, 16), (96, 32), (256, 256)])
def test_rmsnorm_gated_backward(rng, width, group):
    y, z = f32(rng, 2, 5, width), f32(rng, 2, 5, width, scale=2)
    w, dout = f32(rng, width), f32(rng, 2, 5, width)
    got = ops.rmsnorm_gated_backward(dout, y, z, w, group_size=group, eps=1e-6)
    ty, tz, tw = torch64(y, z, w)
    g = (ty * tz * tz.sigmoid()).reshape(2, 5, width // group, group)
    out = (g / (g.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt()).reshape(2, 5, width) * tw
    (out * torch64(dout)[0].detach()).sum().backward()
    for name, t in (("y", ty), ("z", tz), ("weight", tw)):
        assert rel_err(got[name], t.grad) < 1e-5, name


def test_rmsnorm_backward_finite_differences(rng):
    x, y, z = f32(rng, 3, 12), f32(rng, 3, 12), f32(rng, 3, 12)
    w, dout = f32(rng, 12), f32(rng, 3, 12)
    got = ops.rmsnorm_backward(dout, x, w, 1e-5)
    directional_check(lambda x, w: ref.rmsnorm(x, w, 1e-5), [x, w], [got["x"], got["weight"]],
                      dout)
    got = ops.rmsnorm_gated_backward(dout, y, z, w, group_size=4, eps=1e-5)
    directional_check(lambda y, z, w: ref.rmsnorm_gated(y, z, w, 4, 1e-5), [y, z, w],
                      [got["y"], got["z"], got["weight"]], dout)


# --- conv1d ----------------------------------------------------------------------------------


def torch_conv(x, w, b, state, mask, silu=True):
    """x [B,T,C], w [C,K], state [B,C,K] (only its last K-1 columns are read)."""
    import torch

    K = w.shape[-1]
    left = (torch.zeros(x.shape[0], K - 1, x.shape[2], dtype=x.dtype) if state is None
            else state[:, :, 1:].transpose(1, 2))
    ext = torch.cat([left, x], 1)
    out = sum(w[:, k] * ext[:, k:k + x.shape[1]] for k in range(K))
    if b is not None:
        out = out + b
    if silu:
        out = out * out.sigmoid()
    return out if mask is None else out * mask[:, :, None]


@pytest.mark.parametrize("K", [2, 4])
@pytest.mark.parametrize("T", [1, 3, 19])
@pytest.mark.parametrize("with_state", [False, True])
def test_conv1d_backward(rng, K, T, with_state):
    B, C = 2, 150  # more channels than one task's block, a partial block at the end
    x, w, b, dout = f32(rng, B, T, C), f32(rng, C, K), f32(rng, C), f32(rng, B, T, C)
    mask = (rng.random((B, T)) > 0.3).astype(np.float32)
    state = f32(rng, B, C, K) if with_state else None
    got = ops.causal_conv1d_backward(dout, x, w, b, state=state, mask=mask)
    tx, tw, tb, ts = torch64(x, w, b, state if with_state else np.zeros((B, C, K)))
    out = torch_conv(tx, tw, tb, ts, torch64(mask)[0].detach())
    (out * torch64(dout)[0].detach()).sum().backward()
    for name, t in (("x", tx), ("weight", tw), ("bias", tb), ("state", ts)):
        assert rel_err(got[name], t.grad) < 1e-5, name
    assert np.all(got["state"][:, :, 0] == 0)  # the oldest column is never read


def test_conv1d_backward_without_activation_bias_or_mask(rng):
    x, w, dout = f32(rng, 1, 6, 5), f32(rng, 5, 1, 3), f32(rng, 1, 6, 5)
    got = ops.causal_conv1d_backward(dout, x, w, activation=None)
    assert got["bias"] is None and got["weight"].shape == (5, 1, 3)
    directional_check(lambda x, w: ref.causal_conv1d(x, w, None, silu_act=False)[0],
                      [x, w[:, 0]], [got["x"], got["weight"][:, 0]], dout)


def test_conv1d_backward_finite_differences(rng):
    x, w, b, dout = f32(rng, 2, 7, 9), f32(rng, 9, 4), f32(rng, 9), f32(rng, 2, 7, 9)
    state = f32(rng, 2, 9, 4)
    mask = np.array([[0, 0, 1, 1, 1, 1, 1], [1] * 7], np.float32)
    got = ops.causal_conv1d_backward(dout, x, w, b, state=state, mask=mask)
    directional_check(lambda x, w, b, s: ref.causal_conv1d(x, w, b, s, mask)[0],
                      [x, w, b, state], [got[k] for k in ("x", "weight", "bias", "state")], dout)


# --- dt softplus -----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [(0.0, float("inf")), (0.01, 0.5)])
def test_dt_softplus_backward(rng, limit):
    dt = f32(rng, 3, 4, 6, scale=10)  # reaches the > 20 branch
    bias, ddt = f32(rng, 6, scale=5), f32(rng, 3, 4, 6)
    got = ops.dt_softplus_backward(ddt, dt, bias, limit)
    torch = pytest.importorskip("torch")
    tdt, tb = torch64(dt, bias)
    out = torch.clamp(torch.nn.functional.softplus(tdt + tb), *limit)
    (out * torch64(ddt)[0].detach()).sum().backward()
    assert rel_err(got["dt"], tdt.grad) < 1e-6
    assert rel_err(got["dt_bias"], tb.grad) < 1e-6
    if limit[1] < 1:
        clamped = ref.softplus(dt.astype(np.float64) + bias) > limit[1]
        assert clamped.any() and np.all(got["dt"][clamped] == 0)


# --- SSD -------------------------------------------------------------------------------------


def torch_ssd_scan(x, dt, A, B, C, D, init):
    """The token recurrence of reference.ssd_scan in torch (for float64 autograd)."""
    import torch

    H, G = x.shape[2], B.shape[2]
    Bh, Ch = B.repeat_interleave(H // G, 2), C.repeat_interleave(H // G, 2)
    s, ys = init, []
    for t in range(x.shape[1]):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]
        s = s * decay + (dt[:, t][:, :, None, None] * x[:, t][..., None]) * Bh[:, t][:, :, None, :]
        ys.append(torch.einsum("bhpn,bhn->bhp", s, Ch[:, t]) + D[None, :, None] * x[:, t])
    return torch.stack(ys, 1), s


def ssd_inputs(rng, b, T, H, P, N, G):
    x = f32(rng, b, T, H, P)
    dt = ref.softplus(rng.normal(size=(b, T, H)) - 1).astype(np.float32)
    A = -np.exp(rng.normal(size=H)).astype(np.float32)
    return x, dt, A, f32(rng, b, T, G, N), f32(rng, b, T, G, N), f32(rng, H)


SSD_CASES = [  # (batch, T, H, P, N, G, chunk)
    (1, 1, 2, 4, 3, 1, 4),
    (2, 7, 4, 3, 5, 2, 8),       # one partial chunk
    (2, 20, 8, 3, 4, 2, 8),      # chunks plus a remainder, 2 groups
    (1, 20, 6, 5, 4, 6, 3),      # a group per head, odd chunk
    (2, 9, 4, 2, 3, 1, 1),       # chunk of one token, 1 group
    (1, 64, 2, 16, 8, 1, 32),    # T a multiple of the chunk
    (4, 10, 4, 2, 3, 2, 4),      # one task per (row, group): heads summed without slices
    (2, 9, 5, 2, 3, 1, 4),       # 5 heads in uneven slices, one of them empty
]


@pytest.mark.parametrize("case", SSD_CASES)
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_chunked_backward(rng, case, with_state):
    pytest.importorskip("torch")
    b, T, H, P, N, G, Q = case
    x, dt, A, Bm, Cm, D = ssd_inputs(rng, b, T, H, P, N, G)
    init = f32(rng, b, H, P, N) if with_state else None
    dy = f32(rng, b, T, H, P)
    dfinal = f32(rng, b, H, P, N) if with_state else None
    got = ops.ssd_chunked_backward(dy, x, dt, A, Bm, Cm, D, chunk_size=Q, initial_state=init,
                                   dfinal_state=dfinal)
    tensors = torch64(x, dt, A, Bm, Cm, D, init if with_state else np.zeros((b, H, P, N)))
    y, final = torch_ssd_scan(*tensors)
    loss = (y * torch64(dy)[0].detach()).sum()
    if with_state:
        loss = loss + (final * torch64(dfinal)[0].detach()).sum()
    loss.backward()
    for name, t in zip(("x", "dt", "A", "B", "C", "D", "initial_state"), tensors):
        assert rel_err(got[name], t.grad) < 2e-6, name


def test_ssd_backward_strong_decay_long_chunk(rng):
    """Large cumulative decays in a long chunk: the log-decay gradients must stay accurate."""
    pytest.importorskip("torch")
    b, T, H, P, N = 1, 256, 4, 4, 4
    x, _, _, Bm, Cm, _ = ssd_inputs(rng, b, T, H, P, N, 1)
    dt = rng.uniform(0.5, 1.5, size=(b, T, H)).astype(np.float32)
    A = -np.array([1.0, 4.0, 8.0, 16.0], np.float32)
    D, dy = np.ones(H, np.float32), f32(rng, b, T, H, P)
    got = ops.ssd_chunked_backward(dy, x, dt, A, Bm, Cm, D, chunk_size=256)
    tensors = torch64(x, dt, A, Bm, Cm, D, np.zeros((b, H, P, N)))
    y, _ = torch_ssd_scan(*tensors)
    (y * torch64(dy)[0].detach()).sum().backward()
    for name, t in zip(("x", "dt", "A", "B", "C"), tensors):
        assert rel_err(got[name], t.grad) < 2e-6, name


@pytest.mark.parametrize("G,Q", [(1, 4), (2, 3), (4, 16)])
def test_ssd_backward_finite_differences(rng, G, Q):
    b, T, H, P, N = 2, 11, 4, 3, 5
    x, dt, A, Bm, Cm, D = ssd_inputs(rng, b, T, H, P, N, G)
    init, dy, dfinal = f32(rng, b, H, P, N), f32(rng, b, T, H, P), f32(rng, b, H, P, N)
    got = ops.ssd_chunked_backward(dy, x, dt, A, Bm, Cm, D, Q, init, dfinal)
    names = ("x", "dt", "A", "B", "C", "D", "initial_state")
    directional_check(lambda x, dt, A, B, C, D, s: ref.ssd_scan(x, dt, A, B, C, D, init=s),
                      [x, dt, A, Bm, Cm, D, init], [got[k] for k in names], (dy, dfinal))


# --- cross-entropy ---------------------------------------------------------------------------


def test_cross_entropy_backward(rng):
    torch = pytest.importorskip("torch")
    logits = f32(rng, 3, 6, 11, scale=4)
    labels = rng.integers(0, 11, size=(3, 6))
    labels[0, 2] = labels[2, 5] = -100
    got = ops.cross_entropy_backward(logits, labels, grad=0.7)
    (tl,) = torch64(logits)
    shifted = torch.tensor(np.concatenate([labels[:, 1:], np.full((3, 1), -100)], 1))
    loss = torch.nn.functional.cross_entropy(tl.reshape(-1, 11), shifted.reshape(-1),
                                             ignore_index=-100)
    (0.7 * loss).backward()
    assert rel_err(got, tl.grad) < 1e-6
    assert np.all(got[:, -1] == 0) and np.all(got[0, 1] == 0)
    assert np.all(ops.cross_entropy_backward(logits, np.full((3, 6), -100)) == 0)
    loss, dlogits = ops.cross_entropy_with_grad(logits, labels, grad=0.7)
    assert abs(loss - ref.cross_entropy(logits, labels)) < 1e-6 and np.array_equal(dlogits, got)


@pytest.mark.parametrize("num_items", [None, 40])
def test_causal_lm_loss_function_matches_transformers(rng, num_items):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.loss.loss_utils import ForCausalLMLoss

    from mamba2c.torch import causal_lm_cross_entropy

    logits = torch.tensor(f32(rng, 2, 7, 13, scale=3), requires_grad=True)
    labels = torch.tensor(rng.integers(0, 13, size=(2, 7)))
    labels[0, 3] = -100
    items = None if num_items is None else torch.tensor(num_items)
    want = ForCausalLMLoss(logits, labels, 13, num_items_in_batch=items)
    (2.5 * want).backward()
    want_grad, logits.grad = logits.grad, None
    got = causal_lm_cross_entropy(logits, labels, num_items_in_batch=items)
    (2.5 * got).backward()
    assert abs(got.item() - want.item()) < 1e-6 * abs(want.item())
    assert rel_err(logits.grad, want_grad) < 1e-6


def test_cross_entropy_backward_finite_differences(rng):
    logits, labels = f32(rng, 2, 5, 7), rng.integers(0, 7, size=(2, 5))
    labels[1, 3] = -100
    got = ops.cross_entropy_backward(logits, labels)
    directional_check(lambda lg: np.array(ref.cross_entropy(lg, labels)), [logits], [got],
                      np.array(1.0))


def test_backward_bad_arguments_raise(rng):
    x = f32(rng, 2, 5)
    with pytest.raises(ValueError, match="shape"):
        ops.rmsnorm_backward(f32(rng, 2, 4), x, f32(rng, 5))
    with pytest.raises(ValueError, match="group_size"):
        ops.rmsnorm_gated_backward(x, x, x, f32(rng, 5), group_size=2)
    with pytest.raises(TypeError, match="floats"):
        ops.dt_softplus_backward(x, x.astype(np.int32), f32(rng, 5))
    with pytest.raises(ValueError, match="state"):
        ops.causal_conv1d_backward(f32(rng, 1, 3, 4), f32(rng, 1, 3, 4), f32(rng, 4, 2),
                                   state=f32(rng, 1, 4, 3))
    xs = f32(rng, 1, 2, 3, 2)
    with pytest.raises(ValueError, match="groups"):
        ops.ssd_chunked_backward(xs, xs, np.ones((1, 2, 3), np.float32), np.ones(3),
                                 np.ones((1, 2, 2, 2)), np.ones((1, 2, 2, 2)), np.ones(3))
    with pytest.raises(ValueError, match="out of range"):
        ops.cross_entropy_backward(f32(rng, 1, 3, 4), np.array([[0, 4, 1]]))


# --- torch Functions and the patched transformers model --------------------------------------


def test_import_mamba2c_does_not_import_torch():
    code = "import sys, mamba2c, mamba2c.ops; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def make_models(seed=0, **overrides):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from mamba2c.torch import use_mamba2c_kernels

    torch.manual_seed(seed)
    config = transformers.Mamba2Config(**tiny_config_kwargs(**overrides))
    hf = randomize_torch_model(transformers.Mamba2ForCausalLM(config), seed).train()
    ours = use_mamba2c_kernels(copy.deepcopy(hf))
    return hf, ours


def random_ids(vocab, shape, seed):
    import torch

    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def run_step(model, ids, labels, mask):
    """Forward + backward of loss + a term on every logit; returns (outputs, embedding grad)."""
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_(True)
    out = model(inputs_embeds=embeds, labels=labels, attention_mask=mask)
    (out.loss + (out.logits ** 2).mean()).backward()
    return out, embeds.grad


# groups 2 with a chunk that does not divide T, a clamping dt limit and left padding; one group
# with a chunk that does, biases and tied embeddings; a group per head
MODEL_CASES = {
    "g2-clamp-pad": (dict(chunk_size=5, time_step_limit=(0.05, 1.5)), 13, True),
    "g1-bias-tied": (dict(n_groups=1, chunk_size=4, use_bias=True, tie_word_embeddings=True),
                     16, False),
    "gH": (dict(n_groups=8, chunk_size=3, num_hidden_layers=1), 7, True),
}


@pytest.mark.parametrize("name", list(MODEL_CASES))
def test_patched_model_gradients_match_transformers(name):
    torch = pytest.importorskip("torch")
    overrides, T, padded = MODEL_CASES[name]
    hf, ours = make_models(len(name), **overrides)
    ids = random_ids(hf.config.vocab_size, (3, T), 3)
    labels = ids.clone()
    labels[1, T // 2] = -100
    mask = None
    if padded:
        mask = torch.ones(3, T, dtype=torch.long)
        mask[0, :4] = mask[2, :1] = 0
    want, want_embeds = run_step(hf, ids, labels, mask)
    got, got_embeds = run_step(ours, ids, labels, mask)
    assert rel_err(got.logits.detach(), want.logits.detach()) < 1e-5
    assert abs(got.loss.item() - want.loss.item()) < 1e-5 * abs(want.loss.item())
    assert rel_err(got_embeds, want_embeds) < 1e-4
    for (pname, p), (_, q) in zip(hf.named_parameters(), ours.named_parameters()):
        if p.grad is None:  # the input embedding when untied: inputs_embeds were given
            assert q.grad is None, pname
            continue
        assert rel_err(q.grad, p.grad) < 1e-4, pname


def test_patched_model_with_ids_and_gradient_checkpointing():
    hf, ours = make_models(5, chunk_size=4)
    for model in (hf, ours):
        model.gradient_checkpointing_enable()
    ids = random_ids(hf.config.vocab_size, (2, 10), 0)
    for model in (hf, ours):
        model(input_ids=ids, labels=ids).loss.backward()
    for (pname, p), (_, q) in zip(hf.named_parameters(), ours.named_parameters()):
        assert rel_err(q.grad, p.grad) < 1e-4, pname


def test_cached_calls_use_the_original_forward():
    torch = pytest.importorskip("torch")
    from mamba2c.torch import remove_mamba2c_kernels

    hf, ours = make_models(7)
    hf.eval(), ours.eval()
    ids = random_ids(hf.config.vocab_size, (2, 6), 1)
    with torch.no_grad():
        want = hf.generate(ids, max_new_tokens=4, do_sample=False)
        got = ours.generate(ids, max_new_tokens=4, do_sample=False)
        assert torch.equal(got, want)
        remove_mamba2c_kernels(ours)
        assert not any("_mamba2c_forward" in vars(m) for m in ours.modules())
        assert torch.equal(ours(input_ids=ids).logits, hf(input_ids=ids).logits)


def test_bfloat16_parameters_are_upcast():
    torch = pytest.importorskip("torch")
    _, ours = make_models(9, chunk_size=4)
    full = copy.deepcopy(ours)
    ours.to(torch.bfloat16)
    ids = random_ids(ours.config.vocab_size, (2, 9), 2)
    loss = ours(input_ids=ids, labels=ids).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert abs(loss.item() - full(input_ids=ids, labels=ids).loss.item()) < 0.05 * loss.item()
    for name, p in ours.named_parameters():
        if p.grad is not None:
            assert p.grad.dtype == torch.bfloat16 and torch.isfinite(p.grad).all(), name


def test_lora_steps_train_the_patched_model():
    torch = pytest.importorskip("torch")
    peft = pytest.importorskip("peft")
    _, model = make_models(11, chunk_size=4)
    # PEFT refuses LoRA on a Mamba model's out_proj (see examples/finetune_lora.py)
    model = peft.get_peft_model(model, peft.LoraConfig(
        r=4, lora_alpha=8, target_modules=["x_proj", "embeddings", "in_proj"]))
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert lora and all("lora_" in n for n in lora)
    ids = random_ids(model.config.vocab_size, (2, 12), 4)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(6):
        loss = model(input_ids=ids, labels=ids).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.05, losses
    changed = [n for n, p in model.named_parameters() if n in lora and not torch.equal(p, lora[n])]
    assert len(changed) == len(lora)


def test_non_cpu_tensors_raise_not_implemented():
    torch = pytest.importorskip("torch")
    from mamba2c import torch as m2t

    # meta tensors stand in for any non-CPU device: the check is on the device type
    x = torch.empty(1, 4, 8, device="meta")
    with pytest.raises(NotImplementedError, match="CPU only"):
        m2t.conv1d_silu(x, torch.empty(8, 4, device="meta"))
    with pytest.raises(NotImplementedError, match="CPU only"):
        m2t.rmsnorm(x, torch.empty(8, device="meta"))
    if torch.cuda.is_available():
        _, model = make_models(1)
        model.cuda()
        ids = torch.zeros(1, 4, dtype=torch.long, device="cuda")
        with pytest.raises(NotImplementedError, match="CUDA"):
            model(input_ids=ids)


def test_functions_reject_bad_shapes():
    torch = pytest.importorskip("torch")
    from mamba2c import torch as m2t

    with pytest.raises(ValueError, match="xbc"):
        m2t.ssd_chunked(torch.zeros(1, 3, 10), torch.zeros(1, 3, 2), torch.zeros(2),
                        torch.zeros(2), num_heads=2, head_dim=2, state_size=2, n_groups=1)
    with pytest.raises(ValueError, match="weight"):
        m2t.rmsnorm(torch.zeros(2, 4), torch.zeros(3))
    with pytest.raises(TypeError, match="floating"):
        m2t.rmsnorm(torch.zeros(2, 4, dtype=torch.long), torch.zeros(4))
