"""The whole model against transformers 5.17 (torch_forward on the CPU, float32)."""
import numpy as np
import pytest

import mamba2c
from conftest import randomize_torch_model, rel_err, tiny_config_kwargs, torch_state_dict_as_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BAR = 1e-5

# Together: groups 1, 2 and = heads; chunk 1, non-power-of-two and > T; T = 1, T < K, T a
# multiple of the chunk and T over several chunks; K 2..4; biases; tied embeddings;
# residual_in_fp32 False; a clamping time_step_limit.
CONFIGS = {
    "g1-chunks": (dict(n_groups=1, chunk_size=8), 20),
    "g2-chunk3-bias": (dict(n_groups=2, chunk_size=3, use_bias=True), 7),
    "gH-chunk1-k2-noconvbias": (dict(n_groups=8, chunk_size=1, conv_kernel=2,
                                     use_conv_bias=False), 5),
    "chunk-gt-T-tied-k3": (dict(chunk_size=64, conv_kernel=3, tie_word_embeddings=True), 10),
    "T1": (dict(), 1),
    "T-lt-K": (dict(conv_kernel=4), 2),
    "T-multiple-no-fp32-residual": (dict(chunk_size=4, residual_in_fp32=False), 16),
    "dt-clamp": (dict(time_step_limit=(0.05, 0.3), chunk_size=5), 13),
    "3-layers-wide-state": (dict(num_hidden_layers=3, state_size=16, head_dim=8, num_heads=4,
                                 hidden_size=16, n_groups=4), 11),
}


def make_pair(overrides, seed=0, dtype="float32"):
    kwargs = tiny_config_kwargs(**overrides)
    hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kwargs)).eval()
    randomize_torch_model(hf, seed)
    if dtype == "bfloat16":  # the same bf16 values on both sides; transformers computes in fp32
        with torch.no_grad():
            for p in hf.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    ours = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**kwargs), dtype=dtype)
    state = hf.state_dict()
    if dtype == "bfloat16":
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    ours.load_state_dict(state)
    return hf, ours


def hf_forward(hf, ids, **kwargs):
    with torch.no_grad():
        return hf(input_ids=torch.from_numpy(ids), use_cache=False, **kwargs)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_hidden_states_and_loss(name, rng):
    overrides, T = CONFIGS[name]
    hf, ours = make_pair(overrides, seed=len(name))
    vocab = hf.config.vocab_size
    ids = rng.integers(0, vocab, size=(2, T))
    labels = rng.integers(0, vocab, size=(2, T))
    labels[0, -1] = labels[1, 0] = -100
    want = hf_forward(hf, ids, labels=torch.from_numpy(labels), output_hidden_states=True)
    got = ours(input_ids=ids, labels=labels, output_hidden_states=True, use_cache=False)
    assert got.logits.dtype == np.float32
    assert rel_err(got.logits, want.logits) <= BAR
    assert len(got.hidden_states) == len(want.hidden_states) == hf.config.num_hidden_layers + 1
    for mine, theirs in zip(got.hidden_states, want.hidden_states):
        assert rel_err(mine, theirs) <= BAR
    if T > 1:
        assert abs(float(got.loss) - float(want.loss)) <= BAR * abs(float(want.loss))


@pytest.mark.parametrize("name", ["g1-chunks", "g2-chunk3-bias", "chunk-gt-T-tied-k3"])
def test_left_padding_matches_transformers(name, rng):
    overrides, T = CONFIGS[name]
    hf, ours = make_pair(overrides, seed=3)
    ids = rng.integers(0, hf.config.vocab_size, size=(3, T))
    mask = np.ones((3, T), np.int64)
    mask[0, :2] = 0
    mask[2, :T - 1] = 0
    want = hf_forward(hf, ids, attention_mask=torch.from_numpy(mask), output_hidden_states=True)
    got = ours(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
    assert rel_err(got.logits, want.logits) <= BAR
    for mine, theirs in zip(got.hidden_states, want.hidden_states):
        assert rel_err(mine, theirs) <= BAR


@pytest.mark.parametrize("name", ["g1-chunks", "dt-clamp", "T-multiple-no-fp32-residual"])
def test_padded_rows_equal_unpadded_runs(name, rng):
    """Without in_proj bias, a left-padded row gives the logits of the same tokens unpadded."""
    overrides, T = CONFIGS[name]
    _, ours = make_pair(overrides, seed=5)
    ids = rng.integers(0, ours.config.vocab_size, size=(2, T))
    mask = np.ones((2, T), np.int64)
    pad = T // 3 + 1
    mask[1, :pad] = 0
    batched = ours(input_ids=ids, attention_mask=mask).logits
    alone = ours(input_ids=ids[1:, pad:]).logits
    assert rel_err(batched[1, pad:], alone[0]) <= BAR
    assert rel_err(batched[0], ours(input_ids=ids[:1]).logits[0]) <= BAR


def test_single_row_mask_is_honoured(rng):
    hf, ours = make_pair({}, seed=6)
    ids = rng.integers(0, hf.config.vocab_size, size=(1, 9))
    mask = np.ones((1, 9), np.int64)
    mask[0, :4] = 0
    want = hf_forward(hf, ids, attention_mask=torch.from_numpy(mask))
    got = ours(input_ids=ids, attention_mask=mask)
    assert rel_err(got.logits, want.logits) <= BAR


def test_bfloat16_weights_match_transformers_on_same_values(rng):
    hf, ours = make_pair(dict(n_groups=2, chunk_size=4), seed=7, dtype="bfloat16")
    assert ours.dtype == "bfloat16"
    ids = rng.integers(0, hf.config.vocab_size, size=(2, 11))
    want = hf_forward(hf, ids, output_hidden_states=True)
    got = ours(input_ids=ids, output_hidden_states=True)
    assert rel_err(got.logits, want.logits) <= BAR
    for mine, theirs in zip(got.hidden_states, want.hidden_states):
        assert rel_err(mine, theirs) <= BAR


def test_inputs_embeds_and_logits_to_keep(rng):
    hf, ours = make_pair(dict(chunk_size=4), seed=8)
    ids = rng.integers(0, hf.config.vocab_size, size=(2, 9))
    embeds = rng.normal(size=(2, 9, hf.config.hidden_size)).astype(np.float32)
    with torch.no_grad():
        want = hf(inputs_embeds=torch.from_numpy(embeds), use_cache=False, logits_to_keep=3)
    got = ours(inputs_embeds=embeds, logits_to_keep=3)
    assert got.logits.shape == (2, 3, hf.config.vocab_size)
    assert rel_err(got.logits, want.logits) <= BAR
    index = np.array([4, 0, 4, 8])
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids), use_cache=False,
                  logits_to_keep=torch.from_numpy(index))
    assert rel_err(ours(input_ids=ids, logits_to_keep=index).logits, want.logits) <= BAR


def test_base_model_matches_transformers(rng):
    kwargs = tiny_config_kwargs(n_groups=4)
    hf = transformers.Mamba2Model(transformers.Mamba2Config(**kwargs)).eval()
    randomize_torch_model(hf, 9)
    ours = mamba2c.Mamba2Model(mamba2c.Mamba2Config(**kwargs))
    ours.load_state_dict(torch_state_dict_as_numpy(hf))
    ids = rng.integers(0, kwargs["vocab_size"], size=(2, 12))
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids), use_cache=False, output_hidden_states=True)
    got = ours(input_ids=ids, output_hidden_states=True, use_cache=False)
    assert rel_err(got.last_hidden_state, want.last_hidden_state) <= BAR
    assert len(got.hidden_states) == kwargs["num_hidden_layers"] + 1


def test_long_prompt_in_pieces_equals_one_call(rng):
    """Prefill in pieces carries the state: identical up to float rounding."""
    _, ours = make_pair(dict(chunk_size=4), seed=10)
    ids = rng.integers(0, ours.config.vocab_size, size=(2, 37))
    whole = ours(input_ids=ids, output_hidden_states=True, use_cache=True)
    ours.prefill_chunk = 8
    pieces = ours(input_ids=ids, output_hidden_states=True, use_cache=True)
    assert rel_err(pieces.logits, whole.logits) <= BAR
    assert rel_err(pieces.cache_params.ssm_states, whole.cache_params.ssm_states) <= BAR
    assert rel_err(pieces.cache_params.conv_states, whole.cache_params.conv_states) <= BAR
    # without a cache the call carries every layer's state between pieces itself
    assert rel_err(ours(input_ids=ids, use_cache=False).logits, whole.logits) <= BAR
    # wanted positions that fill a piece, part of one, or lie apart in one
    for keep, positions in ((11, np.arange(26, 37)), (np.array([1, 3, 9, 10, 20, 36]),) * 2):
        got = ours(input_ids=ids, logits_to_keep=keep).logits
        assert rel_err(got, whole.logits[:, positions]) <= BAR
