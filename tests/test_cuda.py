"""The CUDA backend against the CPU backend (and transformers on the GPU for bfloat16).

Run on a GPU machine with ``pytest -m cuda``; everywhere else these tests skip, saying why.
"""
import numpy as np
import pytest

import mamba2c
from conftest import rel_err, rms_rel_err, tiny_config_kwargs

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not mamba2c.cuda.is_available(),
                       reason=f"CUDA is not available: {mamba2c.cuda.unavailable_reason()}"),
]

CONFIGS = {
    "groups2-chunk8": dict(),
    "groups1-chunk5-bias": dict(n_groups=1, chunk_size=5, use_bias=True, use_conv_bias=True),
    "groups-per-head-chunk3": dict(n_groups=8, chunk_size=3, tie_word_embeddings=False),
    "chunk1-kernel2": dict(chunk_size=1, conv_kernel=2),
    "wide-chunk64": dict(hidden_size=64, num_heads=8, head_dim=16, state_size=16, chunk_size=64,
                         vocab_size=97),
    "per-group-norm": dict(n_groups=2, norm_groups="n_groups", time_step_limit=(0.01, 0.5)),
    # gated-norm groups wide enough for the decode path that splits a group over a cluster
    "wide-norm": dict(hidden_size=1024, num_heads=32, head_dim=64, state_size=16, vocab_size=97),
    "wide-group-norm": dict(hidden_size=2048, num_heads=64, head_dim=64, state_size=16,
                            n_groups=2, norm_groups="n_groups", vocab_size=97),
    # rows whose widths are not multiples of four: the kernels' one-float paths
    "odd-widths": dict(hidden_size=15, num_heads=6, head_dim=5),
    # heads wider than the scan's 64-channel slices (a full and a partial one), a state width
    # that is not a multiple of 32
    "wide-heads": dict(hidden_size=96, num_heads=2, head_dim=96, state_size=40),
    # a state too wide for the scan's longest chunks and widest slices: its fallback layouts
    "wide-state": dict(hidden_size=96, num_heads=2, head_dim=96, state_size=200),
    # a state of more 16 x 32 tiles (20) than the scan has warps (16): two in some warps' registers
    "state-two-tiles-a-warp": dict(hidden_size=64, num_heads=4, head_dim=32, state_size=300,
                                   vocab_size=97),
    # the head and state widths of the released checkpoints (64 and 128): the scan's common layout
    "checkpoint-heads": dict(hidden_size=128, num_heads=4, head_dim=64, state_size=128,
                             vocab_size=97),
}


def random_pair(rng, dtype="float32", **overrides):
    """The same random weights in a CPU model and a CUDA model."""
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(**overrides))
    cpu = mamba2c.Mamba2ForCausalLM(config, dtype=dtype, seed=int(rng.integers(1 << 30)))
    weights = {}
    for name, value in cpu.state_dict().items():
        values = rng.normal(0, 0.3, np.shape(value)).astype(np.float32)
        if name.endswith("A_log"):
            values = rng.uniform(-1, 1, values.shape).astype(np.float32)
        elif name.endswith("dt_bias"):
            values = rng.uniform(-3, 0, values.shape).astype(np.float32)
        elif "norm" in name or name.endswith(".D"):
            values = (1 + 0.5 * rng.normal(size=values.shape)).astype(np.float32)
        weights[name] = values
    cpu.load_state_dict(weights)
    gpu = mamba2c.Mamba2ForCausalLM(config, dtype=dtype, device="cuda")
    gpu.load_state_dict(cpu.state_dict())
    return cpu, gpu


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("T", [1, 7, 8, 21, 150])  # 150: across the scan's chunks
def test_forward_matches_cpu(rng, name, T):
    cpu, gpu = random_pair(rng, **CONFIGS[name])
    ids = rng.integers(0, cpu.config.vocab_size, size=(2, T))
    want = cpu(ids, output_hidden_states=True)
    got = gpu(ids, output_hidden_states=True)
    assert isinstance(got.logits, mamba2c.cuda.DeviceArray)
    assert rel_err(got.logits.numpy(), want.logits) <= 1e-4
    for g, w in zip(got.hidden_states, want.hidden_states):
        assert rel_err(g.numpy(), w) <= 1e-4
    assert rel_err(got.cache_params.ssm_states.numpy(), want.cache_params.ssm_states) <= 1e-4
    # a deeper layer's conv state is its input projection, as close as the hidden states are
    assert rel_err(got.cache_params.conv_states.numpy(), want.cache_params.conv_states) <= 1e-4


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("name", ["wide-chunk64", "odd-widths", "wide-heads", "checkpoint-heads",
                                  "groups1-chunk5-bias", "wide-state", "state-two-tiles-a-warp"])
def test_16bit_weights_match_cpu(rng, dtype, name):
    cpu, gpu = random_pair(rng, dtype=dtype, **CONFIGS[name])
    ids = rng.integers(0, cpu.config.vocab_size, size=(3, 150))
    # The GPU rounds activations to the weights' type where transformers' 16-bit models do (the
    # input projection's output, the conv's output, the products' inputs); the CPU keeps them in
    # float32. Over 24 random models of each of the first five configs the RMS error reached
    # 1.6e-2 (bf16) and 2.8e-3 (f16); over 6 of each of the scan's fallback layouts (the last
    # two), 8.5e-3 and 1.1e-3.
    bound = {"bfloat16": 2e-2, "float16": 4e-3}[dtype]
    assert rms_rel_err(gpu(ids).logits.numpy(), cpu(ids).logits) <= bound


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("rows", [2, 5, 16])
def test_decode_sized_16bit_products(rng, dtype, rows):
    # A few rows (decode at batch > 1) take the same rounded tensor-core products as a prompt:
    # one sequence of `rows` tokens gives what the first `rows` positions of a longer one give.
    cpu, gpu = random_pair(rng, dtype=dtype, **CONFIGS["wide-chunk64"])
    V = cpu.config.vocab_size
    batch = rng.integers(0, V, size=(rows, 1))
    # One token's logits do not average the rounding out: over 24 random models the RMS error
    # from the CPU's float32 activations reached 6.3e-2 in bf16 (one model as sensitive to the
    # rounding of its conv's output as transformers' bf16 path is; the median 6.5e-3) and
    # 7.1e-3 in f16.
    bound = {"bfloat16": 7e-2, "float16": 1e-2}[dtype]
    assert rms_rel_err(gpu(batch).logits.numpy(), cpu(batch).logits) <= bound
    ids = rng.integers(0, V, size=(1, 40))
    long = gpu(ids).logits.numpy()[:, :rows]
    assert rel_err(gpu(ids[:, :rows]).logits.numpy(), long) <= 1e-3


def test_loss_and_labels(rng):
    cpu, gpu = random_pair(rng, **CONFIGS["groups2-chunk8"])
    ids = rng.integers(0, cpu.config.vocab_size, size=(2, 19))
    labels = ids.copy()
    labels[0, :5] = -100
    want, got = cpu(ids, labels=labels), gpu(ids, labels=labels)
    assert abs(float(got.loss) - float(want.loss)) <= 1e-4 * abs(float(want.loss))


@pytest.mark.parametrize("name", ["groups2-chunk8", "wide-chunk64"])  # scalar and float4 steps
def test_continuation_matches_full_forward(rng, name):
    cpu, gpu = random_pair(rng, **CONFIGS[name])
    ids = rng.integers(0, cpu.config.vocab_size, size=(2, 29))
    full = gpu(ids).logits.numpy()
    for split in (1, 3, 8, 17, 28):
        out = gpu(ids[:, :split], use_cache=True)
        cache = out.cache_params
        parts = [out.logits.numpy()]
        if split == 17:  # one token at a time: the decode path
            for t in range(split, ids.shape[1]):
                parts.append(gpu(ids[:, t:t + 1], cache_params=cache, use_cache=True).logits.numpy())
        else:
            parts.append(gpu(ids[:, split:], cache_params=cache, use_cache=True).logits.numpy())
        assert rel_err(np.concatenate(parts, axis=1), full) <= 1e-4, split


@pytest.mark.parametrize("piece", [10, 70])  # 70: pieces of several scan chunks
def test_pieces_match_one_call(rng, piece):
    _, gpu = random_pair(rng, **CONFIGS["groups1-chunk5-bias"])
    ids = rng.integers(0, gpu.config.vocab_size, size=(1, 167))
    whole = gpu(ids).logits.numpy()
    gpu.prefill_chunk = piece
    assert rel_err(gpu(ids).logits.numpy(), whole) <= 1e-4
    assert rel_err(gpu(ids, use_cache=False).logits.numpy(), whole) <= 1e-4


def test_state_too_wide_for_the_scan_is_a_value_error(rng):
    _, gpu = random_pair(rng, state_size=4096)
    ids = rng.integers(0, gpu.config.vocab_size, size=(1, 5))
    with pytest.raises(ValueError, match="state_size 4096 is too large for the CUDA scan"):
        gpu(ids)
    gpu(ids[:, :1])  # one token takes the state update, which has no such limit


def test_left_padded_batch_and_greedy_generate(rng):
    cpu, gpu = random_pair(rng, **CONFIGS["groups2-chunk8"])
    ids = rng.integers(1, cpu.config.vocab_size, size=(3, 12))
    mask = np.ones_like(ids)
    ids[0, :4], mask[0, :4] = 0, 0
    kwargs = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=0)
    want = cpu.generate(ids, **kwargs)
    got = gpu.generate(ids, **kwargs)
    np.testing.assert_array_equal(got, want)
    alone = gpu.generate(ids[:1, 4:], max_new_tokens=12, do_sample=False, pad_token_id=0)
    np.testing.assert_array_equal(got[0, 4:], alone[0])


def test_decode_graph_recaptured_after_scratch_grows(rng):
    # Beyond one row a bf16 decode step rounds the LM head's input into a scratch buffer that a
    # larger call reallocates; a graph captured before that must not replay on the old one.
    _, gpu = random_pair(rng, dtype="bfloat16", **CONFIGS["groups2-chunk8"])
    V = gpu.config.vocab_size
    ids = rng.integers(0, V, size=(5, 6))
    big = rng.integers(0, V, size=(5, 300))

    def decode(grow_between):
        cache = gpu(ids, use_cache=True).cache_params
        steps = []
        for step in range(4):
            if grow_between and step == 2:
                gpu(big)
            steps.append(gpu._decode_logits(ids[:, -1:], cache))
        return np.stack(steps)

    np.testing.assert_array_equal(decode(True), decode(False))


def test_dlpack_and_cuda_array_interface(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    _, gpu = random_pair(rng, **CONFIGS["groups2-chunk8"])
    ids = torch.from_numpy(rng.integers(0, gpu.config.vocab_size, size=(2, 9))).cuda()
    out = gpu(ids)
    logits = torch.from_dlpack(out.logits)
    assert logits.device.type == "cuda" and logits.shape == (2, 9, gpu.config.vocab_size)
    np.testing.assert_array_equal(logits.cpu().numpy(), out.logits.numpy())
    assert out.logits.__cuda_array_interface__["data"][0] == logits.data_ptr()
    # A CUDA tensor goes in without a copy and comes back the same memory.
    embeds = torch.randn(2, 9, gpu.config.hidden_size, device="cuda")
    view = mamba2c.cuda.DeviceArray.from_dlpack(embeds)
    assert view.pointer == embeds.data_ptr() and view.dtype == "float32"
    from_embeds = gpu(inputs_embeds=embeds).logits.numpy()
    from_host = gpu(inputs_embeds=embeds.cpu().numpy()).logits.numpy()
    np.testing.assert_array_equal(from_embeds, from_host)


def test_cupy_arrays_in_and_out(rng):
    cupy = pytest.importorskip("cupy")
    _, gpu = random_pair(rng, **CONFIGS["groups2-chunk8"])
    ids = rng.integers(0, gpu.config.vocab_size, size=(2, 9))
    out = gpu(cupy.asarray(ids))
    logits = cupy.from_dlpack(out.logits)
    assert logits.data.ptr == out.logits.pointer
    np.testing.assert_array_equal(cupy.asnumpy(logits), gpu(ids).logits.numpy())


def test_bfloat16_against_transformers_on_cuda(rng):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA here")
    from conftest import randomize_torch_model

    kwargs = tiny_config_kwargs(**CONFIGS["wide-chunk64"])
    # One model's largest error is a noisy sample (it favoured transformers on a third of random
    # models whose RMS error favoured mamba2c): each of several models' RMS error is compared.
    for seed in (3, 4, 5, 6):
        hf = randomize_torch_model(
            transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kwargs)), seed=seed).eval()
        ids = torch.from_numpy(rng.integers(0, kwargs["vocab_size"], size=(2, 50)))
        with torch.no_grad():
            reference = hf.double()(ids).logits.numpy()  # float64 on the CPU: the truth
            theirs = hf.to("cuda", torch.bfloat16)(ids.cuda()).logits.float().cpu().numpy()
        ours = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**kwargs), dtype="bfloat16",
                                         device="cuda")
        ours.load_state_dict(hf.state_dict())  # the same bfloat16 values, straight from the GPU
        mine = ours(ids.numpy()).logits.numpy()
        theirs_err, ours_err = rms_rel_err(theirs, reference), rms_rel_err(mine, reference)
        print(f"seed {seed}: bf16 vs float64 (RMS): transformers {theirs_err:.2e}, "
              f"mamba2c {ours_err:.2e}")
        assert ours_err <= theirs_err, seed


def test_model_moves_between_devices(rng):
    cpu, gpu = random_pair(rng, **CONFIGS["groups2-chunk8"])
    ids = rng.integers(0, cpu.config.vocab_size, size=(1, 6))
    assert gpu.device == "cuda:0" and cpu.device == "cpu"
    back = gpu.to("cpu")
    assert back.device == "cpu"
    np.testing.assert_allclose(back(ids).logits, cpu(ids).logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="cuda"):
        cpu(ids, cache_params=mamba2c.Mamba2Cache(cpu.config, 1, device="cuda"))


def test_cublas_prepared_for_each_weight_type():
    """What placing a model on the GPU runs (mamba2c.cuda.prepare_products): cuBLAS opened and
    one small product of each weight type done, which must succeed where cuBLAS is installed."""
    for code in (0, 1, 2):  # float32, bfloat16, float16
        mamba2c.cuda._cuda.prepare_products(code)
        mamba2c.cuda._cuda.prepare_products(code)  # prepared already: returns at once
    with pytest.raises(ValueError, match="dtype code"):
        mamba2c.cuda._cuda.prepare_products(7)
