"""Each kernel of mamba2c.ops against its float64 NumPy reference, on fresh random inputs."""
import numpy as np
import pytest

from mamba2c import _C, ops
from mamba2c.dtypes import bfloat16_bits_to_float32, float32_to_bfloat16_bits

import reference as ref
from conftest import rel_err


@pytest.mark.parametrize("rows,dim", [(1, 1), (3, 7), (17, 64), (5, 768)])
def test_rmsnorm(rng, rows, dim):
    x = rng.normal(size=(rows, dim)).astype(np.float32) * 3
    w = rng.normal(size=dim).astype(np.float32)
    assert rel_err(ops.rmsnorm(x, w, 1e-5), ref.rmsnorm(x, w, 1e-5)) < 1e-6


@pytest.mark.parametrize("width,group", [(8, 8), (64, 16), (96, 32), (256, 256)])
def test_rmsnorm_gated(rng, width, group):
    y = rng.normal(size=(2, 5, width)).astype(np.float32)
    z = rng.normal(size=(2, 5, width)).astype(np.float32) * 2
    w = rng.normal(size=width).astype(np.float32)
    got = ops.rmsnorm_gated(y, z, w, group_size=group, eps=1e-6)
    assert rel_err(got, ref.rmsnorm_gated(y, z, w, group, 1e-6)) < 1e-6


@pytest.mark.parametrize("use_blas", [True, False])
@pytest.mark.parametrize("rows,k,o", [(1, 8, 3), (1, 47, 13), (2, 40, 9), (3, 200, 33),
                                      (4, 33, 17), (8, 64, 64), (9, 70, 5), (50, 129, 67),
                                      (300, 96, 200),
                                      # shared over threads, a partial block and tile at the end
                                      (1, 300, 1001), (2, 300, 1001), (5, 300, 1001)])
@pytest.mark.parametrize("wdtype", ["float32", "bfloat16", "float16"])
def test_linear(rng, use_blas, rows, k, o, wdtype):
    x = rng.normal(size=(rows, k)).astype(np.float32)
    w32 = rng.normal(size=(o, k)).astype(np.float32)
    if wdtype == "bfloat16":
        import ml_dtypes

        bits = float32_to_bfloat16_bits(w32)
        w, wref = bits.view(ml_dtypes.bfloat16), bfloat16_bits_to_float32(bits)
    elif wdtype == "float16":
        w = w32.astype(np.float16)
        wref = w.astype(np.float32)
    else:
        w = wref = w32
    bias = rng.normal(size=o).astype(np.float32)
    previous = _C.use_blas(use_blas)
    try:
        got = ops.linear(x, w, bias)
    finally:
        _C.use_blas(True)
    assert previous in (True, False)
    want = x.astype(np.float64) @ wref.astype(np.float64).T + bias
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("K", [2, 3, 4])
@pytest.mark.parametrize("T", [1, 2, 5, 19])
def test_conv1d(rng, K, T):
    B, C = 2, 300  # more channels than one block, a partial block at the end
    x = rng.normal(size=(B, T, C)).astype(np.float32)
    w = rng.normal(size=(C, K)).astype(np.float32)
    b = rng.normal(size=C).astype(np.float32)
    mask = (rng.random((B, T)) > 0.3).astype(np.float32)
    want, want_state = ref.causal_conv1d(x, w, b, None, mask)
    got = ops.causal_conv1d(x, w, b, mask=mask)
    assert rel_err(got, want) < 1e-6
    # a fresh cache: whatever its state holds is read as zeros, then replaced
    state = rng.normal(size=(B, C, K)).astype(np.float32)
    got = np.empty_like(x)
    _C.conv1d(got, state, False, x, (w, 0), (b, 0), mask, B, T, C, K, True)
    assert rel_err(got, want) < 1e-6
    assert np.array_equal(state, want_state.astype(np.float32))
    # continuing from a state: fresh state in, the next K inputs out
    state = rng.normal(size=(B, C, K)).astype(np.float32)
    want, want_state = ref.causal_conv1d(x, w, b, state.astype(np.float64), mask)
    got = ops.causal_conv1d(x, w, b, state=state, mask=mask)
    assert rel_err(got, want) < 1e-6
    assert np.array_equal(state, want_state.astype(np.float32))


def test_conv1d_without_activation(rng):
    x = rng.normal(size=(1, 6, 5)).astype(np.float32)
    w = rng.normal(size=(5, 1, 4)).astype(np.float32)
    want, _ = ref.causal_conv1d(x, w[:, 0], None, None, None, silu_act=False)
    assert rel_err(ops.causal_conv1d(x, w, activation=None), want) < 1e-6


def test_dt_softplus(rng):
    dt = (rng.normal(size=(3, 4, 6)) * 10).astype(np.float32)  # reaches the >20 branch
    bias = rng.normal(size=6).astype(np.float32) * 5
    want = ref.softplus(dt.astype(np.float64) + bias)
    assert rel_err(ops.dt_softplus(dt, bias), want) < 1e-6
    clamped = ops.dt_softplus(dt, bias, (0.01, 0.5))
    assert rel_err(clamped, np.clip(want, 0.01, 0.5)) < 1e-6


SSD_CASES = [  # (batch, T, H, P, N, G, chunk)
    (1, 1, 2, 4, 3, 1, 4),
    (2, 7, 4, 3, 5, 2, 8),       # one partial chunk
    (2, 20, 8, 3, 4, 2, 8),      # chunks plus a remainder
    (1, 20, 6, 5, 4, 6, 3),      # a group per head, odd chunk
    (2, 9, 4, 2, 3, 4, 1),       # chunk of one token
    (1, 33, 4, 8, 16, 1, 16),
    (1, 64, 2, 16, 8, 1, 32),    # T a multiple of the chunk
]


@pytest.mark.parametrize("case", SSD_CASES)
@pytest.mark.parametrize("with_state", [False, True])
def test_ssd_chunked(rng, case, with_state):
    b, T, H, P, N, G, Q = case
    x = rng.normal(size=(b, T, H, P)).astype(np.float32)
    dt = ref.softplus(rng.normal(size=(b, T, H)) - 1).astype(np.float32)
    A = -np.exp(rng.normal(size=H)).astype(np.float32)
    Bm = rng.normal(size=(b, T, G, N)).astype(np.float32)
    Cm = rng.normal(size=(b, T, G, N)).astype(np.float32)
    D = rng.normal(size=H).astype(np.float32)
    init = rng.normal(size=(b, H, P, N)).astype(np.float32) if with_state else None
    y, final = ops.ssd_chunked(x, dt, A, Bm, Cm, D, chunk_size=Q, initial_state=init)
    y_ref, final_ref = ref.ssd_scan(*(v.astype(np.float64) for v in (x, dt, A, Bm, Cm, D)),
                                    init=None if init is None else init.astype(np.float64))
    assert rel_err(y, y_ref) < 2e-6
    assert rel_err(final, final_ref) < 2e-6


@pytest.mark.parametrize("G", [1, 2, 4])
@pytest.mark.parametrize("P, N", [(5, 6), (7, 37)])  # N: under one vector, and several plus a rest
def test_ssd_step_matches_the_recurrence(rng, G, P, N):
    b, H = 3, 4
    state = rng.normal(size=(b, H, P, N)).astype(np.float32)
    x = rng.normal(size=(b, H, P)).astype(np.float32)
    dt = ref.softplus(rng.normal(size=(b, H))).astype(np.float32)
    A = -np.exp(rng.normal(size=H)).astype(np.float32)
    Bm = rng.normal(size=(b, G, N)).astype(np.float32)
    Cm = rng.normal(size=(b, G, N)).astype(np.float32)
    D = rng.normal(size=H).astype(np.float32)
    y_ref, s_ref = ref.ssd_scan(x[:, None].astype(np.float64), dt[:, None].astype(np.float64),
                                A.astype(np.float64), Bm[:, None].astype(np.float64),
                                Cm[:, None].astype(np.float64), D.astype(np.float64),
                                init=state.astype(np.float64))
    y = ops.ssd_step(x, dt, A, Bm, Cm, D, state)
    assert rel_err(y, y_ref[:, 0]) < 1e-6
    assert rel_err(state, s_ref) < 1e-6


def test_ssd_strong_decay_long_chunk(rng):
    """Large cumulative decays: differences of long cumsums must stay accurate."""
    b, T, H, P, N = 1, 256, 4, 4, 4
    x = rng.normal(size=(b, T, H, P)).astype(np.float32)
    dt = rng.uniform(0.5, 1.5, size=(b, T, H)).astype(np.float32)
    A = -np.array([1.0, 4.0, 8.0, 16.0], np.float32)
    Bm = rng.normal(size=(b, T, 1, N)).astype(np.float32)
    Cm = rng.normal(size=(b, T, 1, N)).astype(np.float32)
    D = np.ones(H, np.float32)
    y, final = ops.ssd_chunked(x, dt, A, Bm, Cm, D, chunk_size=256)
    y_ref, final_ref = ref.ssd_scan(*(v.astype(np.float64) for v in (x, dt, A, Bm, Cm, D)))
    assert rel_err(y, y_ref) < 2e-6
    assert rel_err(final, final_ref) < 2e-6


def test_cross_entropy(rng):
    logits = rng.normal(size=(3, 6, 11)).astype(np.float32) * 4
    labels = rng.integers(0, 11, size=(3, 6))
    labels[0, 2] = labels[2, 5] = -100
    assert abs(ops.cross_entropy(logits, labels) - ref.cross_entropy(logits, labels)) < 1e-6
    assert np.isnan(ops.cross_entropy(logits, np.full((3, 6), -100)))


@pytest.mark.parametrize("wdtype", ["float32", "float16"])
def test_embedding(rng, wdtype):
    table = rng.normal(size=(13, 7)).astype(wdtype)
    ids = rng.integers(0, 13, size=(2, 5))
    assert np.array_equal(ops.embedding(ids, table), table[ids].astype(np.float32))
    with pytest.raises(ValueError, match="out of range"):
        ops.embedding(np.array([[13]]), table)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="shape"):
        ops.linear(np.ones((2, 3), np.float32), np.ones((4, 5), np.float32))
    with pytest.raises(TypeError, match="floats"):
        ops.rmsnorm(np.ones((2, 3), np.int32), np.ones(3, np.float32))
    with pytest.raises(ValueError, match="groups"):
        x = np.ones((1, 2, 3, 2), np.float32)
        ops.ssd_chunked(x, np.ones((1, 2, 3), np.float32), np.ones(3), np.ones((1, 2, 2, 2)),
                        np.ones((1, 2, 2, 2)), np.ones(3))
