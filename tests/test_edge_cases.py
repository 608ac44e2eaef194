"""Hostile and extreme input: requests larger than the machine, NaN and Inf, empty inputs, the
smallest and largest sizes a config allows, sizes the engine refuses, the C arguments the
fuzzers found crashes with, and the files and mappings a loaded model leaves behind."""
import gc
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import mamba2c
import reference as ref
from conftest import rel_err, tiny_config_kwargs
from mamba2c import _C
from mamba2c.checkpoint import read_checkpoint

PHYSICAL_MEMORY = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def randomized(model, rng):
    """The model with every parameter perturbed, so that no term hides behind a 1 or a 0."""
    sd = {k: np.asarray(v, np.float32) for k, v in model.state_dict().items()}
    for name, value in sd.items():
        if not name.endswith("A_log"):
            sd[name] = value + np.float32(0.2) * rng.standard_normal(value.shape, np.float32)
    model.load_state_dict(sd)
    return model


def reference_logits(model, ids):
    """float64 logits of a Mamba2ForCausalLM, block by block from tests/reference.py."""
    c = model.config
    sd = {k.removeprefix("backbone."): np.asarray(v, np.float64)
          for k, v in model.state_dict().items()}
    B, T = ids.shape
    I, G, N, H, P = c.intermediate_size, c.n_groups, c.state_size, c.num_heads, c.head_dim
    lo, hi = c.time_step_limit
    h = sd["embeddings.weight"][ids]
    for layer in range(c.num_hidden_layers):
        p = f"layers.{layer}.mixer."
        proj = ref.rmsnorm(h, sd[f"layers.{layer}.norm.weight"], c.layer_norm_epsilon)
        proj = proj @ sd[p + "in_proj.weight"].T + sd.get(p + "in_proj.bias", 0)
        z, xbc, dt = np.split(proj, [I, 2 * I + 2 * G * N], axis=-1)
        xbc, _ = ref.causal_conv1d(xbc, sd[p + "conv1d.weight"][:, 0, :],
                                   sd.get(p + "conv1d.bias"))
        x, Bm, Cm = np.split(xbc, [I, I + G * N], axis=-1)
        dt = np.clip(ref.softplus(dt + sd[p + "dt_bias"]), lo, hi)
        y, _ = ref.ssd_scan(x.reshape(B, T, H, P), dt, -np.exp(sd[p + "A_log"]),
                            Bm.reshape(B, T, G, N), Cm.reshape(B, T, G, N), sd[p + "D"])
        group = I if c.norm_groups == "full" else I // G
        y = ref.rmsnorm_gated(y.reshape(B, T, I), z, sd[p + "norm.weight"], group,
                              c.layer_norm_epsilon)
        h = h + y @ sd[p + "out_proj.weight"].T + sd.get(p + "out_proj.bias", 0)
    h = ref.rmsnorm(h, sd["norm_f.weight"], c.layer_norm_epsilon)
    return h @ sd["lm_head.weight"].T


# ---------------------------------------------------------------- requests larger than memory

def wide_config(**overrides):
    """hidden_size 1 and a 2**20-wide SSM branch: a few MB of weights, but 8 MB of workspace
    per token, so a batch of 16k tokens asks for about 128 GB."""
    kwargs = dict(vocab_size=8, hidden_size=1, expand=2**20, num_heads=16, head_dim=2**16,
                  state_size=1, n_groups=1, num_hidden_layers=1, conv_kernel=2, chunk_size=8)
    kwargs.update(overrides)
    return mamba2c.Mamba2Config(**kwargs)


@pytest.fixture(scope="module")
def wide_model():
    return mamba2c.Mamba2ForCausalLM(wide_config(), seed=0)


def test_workspace_larger_than_memory_is_a_memory_error_before_allocating(wide_model):
    B = 2**14
    assert B * 4 * 2**20 * 4 > PHYSICAL_MEMORY, "this machine is too large for the test"
    ids = np.zeros((B, 1), np.int64)
    before = resident_bytes()
    with pytest.raises(MemoryError) as info:
        wide_model(input_ids=ids, use_cache=False, logits_to_keep=1)
    grew = resident_bytes() - before
    asked = int(re.search(r"needs (\d+) bytes", str(info.value)).group(1))
    # in_proj's output alone is B rows of 2 * 2**20 floats
    assert asked >= B * 2 * 2**20 * 4 > PHYSICAL_MEMORY, str(info.value)
    assert "memory" in str(info.value)
    assert grew < 64 * 2**20, f"resident memory grew by {grew / 2**20:.0f} MiB before the error"
    # the engine is still usable
    out = wide_model(input_ids=np.array([[1, 2, 3]]), use_cache=False)
    assert out.logits.shape == (1, 3, 8) and np.isfinite(out.logits).all()


def test_cache_larger_than_memory_is_a_memory_error_with_the_size(wide_model):
    """The cache (128 GB of conv state here) and the outputs are NumPy arrays allocated before
    the engine runs: NumPy refuses them with the size, or, where it hands memory out lazily,
    the engine's workspace check refuses the call before anything is written."""
    before = resident_bytes()
    with pytest.raises(MemoryError, match=r"Unable to allocate \d.*GiB|needs \d+ bytes"):
        wide_model(input_ids=np.zeros((2**14, 1), np.int64), use_cache=True)
    assert resident_bytes() - before < 64 * 2**20


@pytest.mark.skipif(open("/proc/sys/vm/overcommit_memory").read().strip() == "1",
                    reason="with vm.overcommit_memory=1 NumPy hands out any size lazily")
def test_logits_larger_than_memory_are_a_memory_error_with_the_size():
    """B x T x V logits beyond the machine's memory: NumPy refuses the output array, with the
    size in the message, before the engine starts."""
    config = wide_config(vocab_size=2**17, expand=2, num_heads=1, head_dim=2)
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    ids = np.zeros((2**12, 2**10), np.int64)  # 4M tokens: 2 TB of logits
    assert ids.size * config.vocab_size * 4 > PHYSICAL_MEMORY
    before = resident_bytes()
    with pytest.raises(MemoryError) as info:
        model(input_ids=ids, use_cache=False)
    assert re.search(r"\d", str(info.value)), str(info.value)
    assert resident_bytes() - before < 256 * 2**20


# ---------------------------------------------------------------- NaN and Inf are values

@pytest.fixture
def model(rng):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs())
    return randomized(mamba2c.Mamba2ForCausalLM(config, seed=3), rng)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_embeddings_poison_their_row_from_their_chunk_on(model, rng, bad):
    """A NaN or Inf at position 12 makes every later position of its row non-finite and leaves
    the other row alone. Positions 8-11 share its SSD chunk (chunk_size 8), whose scan
    multiplies by a causal mask, and 0 * NaN is NaN: they may be poisoned too, as in
    transformers' chunked scan. The chunk before is untouched."""
    assert model.config.chunk_size == 8
    embeds = rng.standard_normal((2, 20, model.config.hidden_size)).astype(np.float32)
    clean = model(inputs_embeds=embeds).logits
    embeds[0, 12, 3] = bad
    got = model(inputs_embeds=embeds).logits
    assert np.array_equal(got[0, :8], clean[0, :8])
    assert not np.isfinite(got[0, 12:]).any()  # the state carries it to every later position
    assert np.array_equal(got[1], clean[1])  # rows are independent


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
def test_non_finite_weights_propagate_as_values(model, dtype):
    ids = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 5, 3]])
    model.to(dtype)
    clean = model(input_ids=ids).logits
    sd = {k: np.array(v, np.float32) for k, v in model.state_dict().items()}
    sd["lm_head.weight"][7] = np.nan
    model.load_state_dict(sd)
    got = model(input_ids=ids).logits
    assert np.isnan(got[..., 7]).all()
    assert np.array_equal(np.delete(got, 7, axis=-1), np.delete(clean, 7, axis=-1))
    sd["backbone.layers.1.mixer.dt_bias"][0] = np.inf  # dt clamped to the float32 maximum
    sd["backbone.layers.0.mixer.A_log"][1] = np.inf  # A = -inf
    model.load_state_dict(sd)
    assert model(input_ids=ids).logits.shape == clean.shape
    sd["backbone.layers.0.norm.weight"][:] = np.inf
    model.load_state_dict(sd)
    got = model(input_ids=ids).logits
    assert got.shape == clean.shape and not np.isfinite(got).any()


# ---------------------------------------------------------------- empty input

@pytest.mark.parametrize("kwargs", [
    dict(input_ids=np.zeros((0, 5), np.int64)),
    dict(input_ids=np.zeros((2, 0), np.int64)),
    dict(inputs_embeds=np.zeros((0, 3, 16), np.float32)),
    dict(inputs_embeds=np.zeros((1, 0, 16), np.float32)),
])
def test_empty_input_is_a_clear_error(model, kwargs):
    with pytest.raises(ValueError, match=r"the input is empty \(batch \d+, tokens \d+\)"):
        model(**kwargs)
    with pytest.raises(ValueError, match="empty"):
        mamba2c.Mamba2Model(model.config)(**kwargs)


def test_empty_prompt_and_empty_cache_are_clear_errors(model):
    with pytest.raises(ValueError, match=r"input_ids is empty \(shape \(1, 0\)\)"):
        model.generate(np.zeros((1, 0), np.int64), max_new_tokens=2)
    with pytest.raises(ValueError, match="batch_size must be positive, got 0"):
        mamba2c.Mamba2Cache(model.config, 0)
    with pytest.raises(ValueError, match="logits_to_keep positions must be a non-empty"):
        model(input_ids=np.array([[1, 2]]), logits_to_keep=np.array([], np.int64))


# ---------------------------------------------------------------- extreme configs

EXTREMES = {
    "head_dim=1": dict(num_heads=32, head_dim=1),
    "state_size=1": dict(state_size=1),
    "n_groups=num_heads": dict(n_groups=8),
    "conv_kernel=1": dict(conv_kernel=1),
    "conv_kernel=16": dict(conv_kernel=16),
    "chunk_size=1": dict(chunk_size=1),
    "vocab_size=1": dict(vocab_size=1, pad_token_id=None, eos_token_id=None),
    "one head, one group": dict(num_heads=1, head_dim=32, n_groups=1),
    "n_groups norm": dict(norm_groups="n_groups"),
    "no layers": dict(num_hidden_layers=0),
}


@pytest.mark.parametrize("overrides", EXTREMES.values(), ids=EXTREMES.keys())
def test_extreme_config_matches_the_reference_and_decodes_like_it_prefills(overrides, rng):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(**overrides))
    model = randomized(mamba2c.Mamba2ForCausalLM(config, seed=5), rng)
    ids = rng.integers(0, config.vocab_size, size=(2, 19))  # not a multiple of the chunk
    out = model(input_ids=ids, use_cache=True)
    assert rel_err(out.logits, reference_logits(model, ids)) < 1e-4
    # a prompt prefix, then one token at a time from the cache
    first = model(input_ids=ids[:, :11], use_cache=True)
    steps = [first.logits]
    for t in range(11, 19):
        steps.append(model(input_ids=ids[:, t:t + 1], cache_params=first.cache_params,
                           use_cache=True).logits)
    assert rel_err(np.concatenate(steps, axis=1), out.logits) < 1e-4


def test_vocab_of_one_token(rng):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(vocab_size=1, pad_token_id=None,
                                                       eos_token_id=None))
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    ids = np.zeros((2, 6), np.int64)
    out = model(input_ids=ids, labels=ids)
    assert out.logits.shape == (2, 6, 1) and out.loss == 0  # one class: log-softmax is 0
    assert np.array_equal(model.generate(ids, max_new_tokens=3), np.zeros((2, 9), np.int64))
    assert model.generate(ids, max_new_tokens=3, do_sample=True, seed=0).max() == 0


def test_no_layers_forward_generate_save_and_load(tmp_path, rng):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(num_hidden_layers=0, eos_token_id=None))
    model = randomized(mamba2c.Mamba2ForCausalLM(config, seed=0), rng)
    ids = rng.integers(2, config.vocab_size, size=(2, 5))
    out = model(input_ids=ids, use_cache=True, output_hidden_states=True)
    assert len(out.hidden_states) == 1 and out.cache_params.conv_states.shape[0] == 0
    # with no blocks, each position's logits depend on its own token only
    assert rel_err(out.logits, reference_logits(model, ids)) < 1e-5
    generated = model.generate(ids, max_new_tokens=4)
    assert generated.shape == (2, 9) and np.array_equal(generated[:, :5], ids)
    model.save_pretrained(tmp_path)
    assert sorted(read_checkpoint(tmp_path)) == ["backbone.embeddings.weight",
                                                 "backbone.norm_f.weight", "lm_head.weight"]
    loaded = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.num_hidden_layers == 0
    assert np.array_equal(loaded(input_ids=ids).logits, out.logits)
    assert np.array_equal(loaded.generate(ids, max_new_tokens=4), generated)


def test_conv_kernel_above_the_engine_limit_is_refused_by_the_config(tmp_path):
    with pytest.raises(ValueError, match=r"conv_kernel=17 is not supported.*at most 16"):
        mamba2c.Mamba2Config(**tiny_config_kwargs(conv_kernel=17))
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(conv_kernel=16))
    with pytest.raises(ValueError, match="conv_kernel=64"):
        config.conv_kernel = 64
    assert config.conv_kernel == 16
    (tmp_path / "config.json").write_text(json.dumps(tiny_config_kwargs(conv_kernel=32)))
    with pytest.raises(ValueError, match=r"config\.json: conv_kernel=32 is not supported"):
        mamba2c.Mamba2Config.from_pretrained(tmp_path)


def test_engine_refuses_a_conv_kernel_it_cannot_run():
    """A config that slipped past validation still gets an error, not a crash."""
    config = mamba2c.Mamba2Config(**tiny_config_kwargs())
    object.__setattr__(config, "conv_kernel", 17)
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    with pytest.raises(ValueError, match="conv_kernel 17 is larger than the supported 16"):
        model(input_ids=np.array([[1, 2]]))


# ---------------------------------------------------------------- C arguments found by fuzzing

def f32(n):
    return np.zeros(n, np.float32)


def test_sizes_whose_product_wraps_around_are_refused():
    # 4 * (2**62 + 1) is 4 in 64-bit arithmetic: a 4-float buffer used to pass the size check
    # and the kernel then ran over 2**62 rows.
    with pytest.raises(ValueError, match=r"sizes \(R D\) are too large"):
        _C.rmsnorm(f32(4), f32(4), (f32(4) + 1, 0), None, 2**62 + 1, 4, 1e-5)
    with pytest.raises(ValueError, match="too large"):
        _C.linear(f32(4), f32(4), (f32(1), 0), None, 2**61 + 1, 2**3, 1, False)


def test_negative_sizes_are_refused_even_when_a_product_is_zero():
    with pytest.raises(ValueError, match="size T must be >= 0, got -1"):
        _C.conv1d_backward(f32(0), f32(1), f32(1), f32(0), f32(0), f32(0), f32(0), (f32(1), 0),
                           (f32(1), 0), f32(0), 0, -1, 1, 1, True)
    with pytest.raises(ValueError, match="size R must be >= 0"):
        _C.linear(f32(1), f32(1), (f32(1), 0), None, -1, -1, -1, False)


def test_a_weight_that_is_not_a_pair_is_a_type_error():
    for spec in ([f32(4), 0], f32(4), (f32(4),), "weight"):
        with pytest.raises(TypeError, match=r"weight must be an \(array, dtype code\) pair"):
            _C.rmsnorm(f32(4), f32(4), spec, None, 1, 4, 1e-5)


def test_engine_config_whose_sizes_wrap_around_is_refused():
    # I + 2 * n_groups * state_size wraps to 2 for state_size 2**63 - 1: the engine used to
    # accept a conv of 2 channels and then index its state with the real size.
    D, H, P, N, G, K, V = 8, 4, 1, 2**63 - 1, 1, 2, 5
    w = lambda n: (np.full(n, 0.1, np.float32), 0)  # noqa: E731
    layer = (w(D), w(10 * D), None, w(2 * K), None, w(H), w(H), w(H), w(H * P), w(D * H * P),
             None)
    with pytest.raises(ValueError, match="config sizes overflow"):
        _C.Engine((D, H, P, N, G, K, 8, V, 1, 1e-5, 0.0, 1e30, 1), w(V * D), w(D), None,
                  [layer])


def test_zero_width_norm_backward_is_refused():
    # the kernel divides by the width (an integer division by zero, SIGFPE at -O0)
    with pytest.raises(ValueError, match="D must be positive, got 0"):
        _C.rmsnorm_backward(f32(0), f32(0), f32(0), f32(0), (f32(0), 0), None, 1, 0, 1e-5)


def test_chunk_longer_than_the_sequence_is_one_chunk(rng):
    # T + Q - 1 overflowed for Q near 2**63 (undefined behaviour)
    B, T, H, P, N, G = 1, 5, 2, 2, 3, 1
    args = [rng.standard_normal(B * T * (H * P + 2 * G * N)).astype(np.float32),
            rng.random(B * T * H).astype(np.float32),
            -rng.random(H).astype(np.float32), rng.standard_normal(H).astype(np.float32)]
    results = []
    for Q in (T, 2**63 - 1):
        y, state = f32(B * T * H * P), f32(B * H * P * N)
        _C.ssd_chunked(y, state, False, *args, B, T, H, P, N, G, Q)
        results.append((y, state))
    assert np.array_equal(results[0][0], results[1][0])
    assert np.array_equal(results[0][1], results[1][1])


EMPTY_WORK_CALLS = textwrap.dedent("""
    import numpy as np
    import mamba2c
    from mamba2c import _C

    E = lambda: np.empty(0, np.float32)
    w = lambda n: (np.ones(n, np.float32), 0)
    HUGE = 2**40
    assert mamba2c.ops.rmsnorm(np.empty((HUGE, 0), np.float32), E()).shape == (HUGE, 0)
    _C.rmsnorm(E(), E(), w(0), None, HUGE, 0, 1e-5)
    _C.rmsnorm_gated(E(), E(), E(), w(0), HUGE, 0, 1, 1e-5)
    _C.rmsnorm_gated_backward(E(), E(), E(), E(), E(), E(), w(0), HUGE, 0, 1, 1e-5)
    _C.conv1d(E(), None, False, E(), w(4), None, None, HUGE, 0, 4, 1, True)
    dweight, dbias = np.ones(4, np.float32), np.ones(4, np.float32)
    _C.conv1d_backward(E(), dweight, dbias, None, E(), E(), None, w(4), None, None, HUGE, 0, 4,
                       1, True)
    assert not dweight.any() and not dbias.any()  # no time steps: no gradient
    print("done")
""")


def test_a_zero_size_empties_the_work_however_large_the_others():
    """Rows of zero width, or batch rows of zero time steps, have nothing to compute: the kernels
    used to loop over the other size anyway (2**40 rows of nothing: hours). Found by the
    arrays fuzzer (tests/fuzz/corpus/arrays/regression-empty-rows)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", EMPTY_WORK_CALLS], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "done", result.stderr[-2000:]


GUARDED_CALLS = textwrap.dedent("""
    import ctypes, mmap, sys
    import numpy as np
    from mamba2c import _C

    PAGE = mmap.PAGESIZE
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    keep = []

    def E(dtype=np.float32):
        # an empty array whose data pointer is the first byte of an inaccessible page
        mm = mmap.mmap(-1, 2 * PAGE)
        anchor = ctypes.c_char.from_buffer(mm)
        address = ctypes.addressof(anchor)
        assert libc.mprotect(address + PAGE, PAGE, 0) == 0
        keep.append((mm, anchor))
        array = np.frombuffer(mm, dtype, count=0, offset=PAGE)
        assert array.__array_interface__["data"][0] == address + PAGE
        return array

    I = lambda: E(np.int64)
    f = lambda n: np.ones(n, np.float32)
    w = lambda n: (np.ones(n, np.float32), 0)
    calls = {
        "rmsnorm": lambda: _C.rmsnorm(E(), E(), w(4), None, 0, 4, 1e-5),
        "rmsnorm_gated": lambda: _C.rmsnorm_gated(E(), E(), E(), w(4), 0, 4, 4, 1e-5),
        "linear": lambda: _C.linear(E(), E(), w(12), w(3), 0, 4, 3, False),
        "conv1d B=0": lambda: _C.conv1d(E(), E(), True, E(), w(16), w(4), E(), 0, 3, 4, 4, True),
        "conv1d T=0": lambda: _C.conv1d(E(), f(32), True, E(), w(16), w(4), E(), 2, 0, 4, 4, True),
        "dt_softplus": lambda: _C.dt_softplus(E(), E(), w(4), 0, 4, 0.0, 1e30),
        "ssd_chunked B=0": lambda: _C.ssd_chunked(E(), E(), False, E(), E(), f(2), f(2),
                                                  0, 3, 2, 2, 2, 1, 4),
        "ssd_chunked T=0": lambda: _C.ssd_chunked(E(), f(8), True, E(), E(), f(2), f(2),
                                                  1, 0, 2, 2, 2, 1, 4),
        "ssd_step": lambda: _C.ssd_step(E(), E(), True, E(), E(), f(2), f(2), 0, 2, 2, 2, 1),
        "cross_entropy": lambda: _C.cross_entropy(E(), I(), 0, 3, 5),
        "embedding": lambda: _C.embedding(E(), I(), w(20), 0, 5, 4),
        "rmsnorm_backward": lambda: _C.rmsnorm_backward(E(), f(4), E(), E(), w(4), None,
                                                        0, 4, 1e-5),
        "rmsnorm_gated_backward": lambda: _C.rmsnorm_gated_backward(
            E(), E(), f(4), E(), E(), E(), w(4), 0, 4, 4, 1e-5),
        "conv1d_backward": lambda: _C.conv1d_backward(E(), f(16), f(4), E(), E(), E(), E(),
                                                      w(16), w(4), E(), 0, 3, 4, 4, True),
        "dt_softplus_backward": lambda: _C.dt_softplus_backward(E(), f(4), E(), E(), w(4),
                                                                0, 4, 0.0, 1e30),
        "cross_entropy_backward": lambda: _C.cross_entropy_backward(E(), E(), I(), 0, 3, 5, 1.0),
        "cross_entropy_with_grad": lambda: _C.cross_entropy_with_grad(None, E(), I(),
                                                                      0, 3, 5, 1.0),
    }
    for name, call in calls.items():
        print(name, end=": ", flush=True)
        call()
        print("ok", flush=True)
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mprotect through ctypes")
def test_kernels_read_nothing_from_empty_buffers():
    """Every kernel called with zero rows, its empty buffers placed just before an inaccessible
    page: a kernel that reads or writes one crashes the child (linear used to read 8 rows)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", GUARDED_CALLS], capture_output=True,
                            text=True, env=env, timeout=120)
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"crashed in {last!r} (exit {result.returncode}):\n" \
                                   f"{result.stderr[-2000:]}"
    assert result.stdout.count(": ok") == 17, result.stdout


# ---------------------------------------------------------------- files and mappings

def open_files(directory):
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the descriptor listdir itself used, closed since
            continue
        if target.startswith(str(directory)):
            fds.append(target)
    return fds


def mapped_files(directory):
    with open("/proc/self/maps") as f:
        return [line.split()[-1] for line in f if str(directory) in line]


@pytest.fixture
def checkpoint(tmp_path, rng):
    model = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**tiny_config_kwargs()), seed=0)
    directory = tmp_path / "checkpoint"
    model.save_pretrained(directory, max_shard_size="8KB")
    shards = sorted(p.name for p in directory.glob("model-*.safetensors"))
    assert len(shards) >= 3
    return directory, shards


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_deleting_a_loaded_model_closes_its_files_and_unmaps_them(checkpoint):
    directory, shards = checkpoint
    gc.collect()
    assert open_files(directory) == [] and mapped_files(directory) == []
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(directory)
    model(input_ids=np.array([[1, 2, 3]]))  # the engine now holds views of the weights
    # zero-copy: every shard mapped (and Python's mmap keeps a duplicate of each descriptor)
    assert {os.path.basename(p) for p in mapped_files(directory)} == set(shards)
    assert {os.path.basename(p) for p in open_files(directory)} <= set(shards)
    del model
    gc.collect()
    assert mapped_files(directory) == []
    assert open_files(directory) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_a_view_outliving_the_model_keeps_only_its_own_file_mapped(checkpoint):
    directory, shards = checkpoint
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(directory)
    embeddings = model.get_input_embeddings()
    del model
    gc.collect()
    assert len(set(mapped_files(directory))) == 1  # the shard holding the embeddings
    del embeddings
    gc.collect()
    assert mapped_files(directory) == []


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_converting_or_failing_loads_keep_nothing_open(checkpoint):
    directory, shards = checkpoint
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(directory, dtype="bfloat16")
    gc.collect()
    assert mapped_files(directory) == [] and open_files(directory) == []  # all copies
    del model
    with pytest.raises(ValueError):  # strict: the second layer's tensors are unexpected
        mamba2c.Mamba2ForCausalLM.from_pretrained(directory, num_hidden_layers=1)
    last = directory / shards[-1]
    last.write_bytes(last.read_bytes()[:-4])  # truncated
    with pytest.raises(OSError, match="truncated"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(directory)
    gc.collect()
    assert mapped_files(directory) == [] and open_files(directory) == []
