"""The model objects' API, ported from transformers' Mamba2 tests where it applies, plus the
errors that bad input must raise."""
import numpy as np
import pytest

import mamba2c
from conftest import rel_err, tiny_config_kwargs


@pytest.fixture
def model():
    return mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**tiny_config_kwargs()), seed=0)


def ids_for(model, rng, B=2, T=7):
    return rng.integers(0, model.config.vocab_size, size=(B, T))


# ---- ported from transformers' tests/models/mamba2/test_modeling_mamba2.py ----

def test_initialization_invariants():
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(rescale_prenorm_residual=True,
                                                       use_bias=True))
    model = mamba2c.Mamba2ForCausalLM(config, seed=1)
    H = config.num_heads
    sd = model.state_dict()
    for i in range(config.num_hidden_layers):
        p = f"backbone.layers.{i}.mixer."
        assert np.allclose(sd[p + "A_log"], np.log(np.arange(1, H + 1)))
        assert np.allclose(sd[p + "D"], 1.0)
        dt = np.log1p(np.exp(sd[p + "dt_bias"].astype(np.float64)))  # softplus(dt_bias) = dt
        assert np.all(dt >= config.time_step_min * (1 - 1e-5))
        assert np.all(dt <= config.time_step_max * (1 + 1e-5))
        assert np.all(sd[p + "in_proj.bias"] == 0) and np.all(sd[p + "conv1d.bias"] == 0)
        bound = 1 / np.sqrt(config.intermediate_size) / np.sqrt(config.num_hidden_layers)
        assert np.abs(sd[p + "out_proj.weight"]).max() <= bound
    emb = sd["backbone.embeddings.weight"]
    assert abs(emb.std() - config.initializer_range) < 0.2 * config.initializer_range
    assert np.all(sd["backbone.norm_f.weight"] == 1)


def test_seed_makes_weights_reproducible():
    config = mamba2c.Mamba2Config(**tiny_config_kwargs())
    a = mamba2c.Mamba2ForCausalLM(config, seed=3).state_dict()
    b = mamba2c.Mamba2ForCausalLM(config, seed=3).state_dict()
    c = mamba2c.Mamba2ForCausalLM(config, seed=4).state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["lm_head.weight"], c["lm_head.weight"])


@pytest.mark.parametrize("with_labels", [False, True])
@pytest.mark.parametrize("hidden", [False, True])
def test_tuple_and_dict_outputs_are_equivalent(model, rng, with_labels, hidden):
    ids = ids_for(model, rng)
    kwargs = dict(input_ids=ids, output_hidden_states=hidden, use_cache=True)
    if with_labels:
        kwargs["labels"] = ids
    as_dict = model(**kwargs)
    as_tuple = model(return_dict=False, **kwargs)
    flat = as_dict.to_tuple()
    assert len(flat) == len(as_tuple)
    for a, b in zip(flat, as_tuple):
        if isinstance(a, mamba2c.Mamba2Cache):
            assert np.array_equal(a.conv_states, b.conv_states)
            assert np.array_equal(a.ssm_states, b.ssm_states)
        elif isinstance(a, tuple):
            assert all(np.array_equal(x, y) for x, y in zip(a, b))
        else:
            assert np.array_equal(a, b)
    assert as_dict[0] is flat[0] and as_dict["logits"] is as_dict.logits
    assert ("loss" in as_dict) == with_labels


def test_hidden_state_count_and_shapes(model, rng):
    out = model(input_ids=ids_for(model, rng, 3, 5), output_hidden_states=True)
    c = model.config
    assert len(out.hidden_states) == c.num_hidden_layers + 1
    assert all(h.shape == (3, 5, c.hidden_size) for h in out.hidden_states)


def test_base_model_outputs(rng):
    model = mamba2c.Mamba2Model(mamba2c.Mamba2Config(**tiny_config_kwargs()), seed=2)
    out = model(input_ids=rng.integers(0, 61, size=(2, 4)), use_cache=False)
    assert set(out.keys()) == {"last_hidden_state"}
    assert out.last_hidden_state.shape == (2, 4, 16)
    assert "lm_head.weight" not in model.state_dict()
    assert "embeddings.weight" in model.state_dict()


def test_inputs_embeds_equals_input_ids(model, rng):
    ids = ids_for(model, rng)
    embeds = model.get_input_embeddings()[ids]
    a = model(input_ids=ids).logits
    b = model(inputs_embeds=embeds).logits
    assert rel_err(a, b) < 1e-6


def test_caching_continues_a_prompt(model, rng):
    """Prefix with a cache, then the rest with one call or several: the full run's logits."""
    ids = ids_for(model, rng, 2, 12)
    full = model(input_ids=ids).logits
    out = model(input_ids=ids[:, :5], use_cache=True)
    cache = out.cache_params
    step = model(input_ids=ids[:, 5:6], cache_params=cache, use_cache=True)
    rest = model(input_ids=ids[:, 6:], cache_params=step.cache_params, use_cache=True)
    assert rel_err(step.logits[:, 0], full[:, 5]) < 1e-5
    assert rel_err(rest.logits, full[:, 6:]) < 1e-5


def test_tied_lm_head_follows_embeddings(rng):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(tie_word_embeddings=True))
    model = mamba2c.Mamba2ForCausalLM(config, seed=5)
    sd = model.state_dict()
    assert np.shares_memory(sd["lm_head.weight"], sd["backbone.embeddings.weight"])
    new = {k: np.asarray(v) for k, v in sd.items() if k != "lm_head.weight"}
    new["backbone.embeddings.weight"] = rng.normal(size=new["backbone.embeddings.weight"].shape)
    model.load_state_dict(new)
    h = model(input_ids=np.array([[1, 2, 3]]), output_hidden_states=True)
    want = h.hidden_states[-1] @ new["backbone.embeddings.weight"].T
    assert rel_err(h.logits, want) < 1e-5


def test_num_parameters_and_repr(model):
    c = model.config
    expected = sum(np.prod(v.shape) for v in model.state_dict().values())
    assert model.num_parameters() == expected
    assert model.num_parameters(exclude_embeddings=True) == expected - 2 * c.vocab_size * c.hidden_size
    text = repr(model)
    assert "Mamba2ForCausalLM" in text and "layers=2" in text and "float32" in text


def test_dtype_conversion_and_bfloat16_state_dict(model, rng):
    ids = ids_for(model, rng)
    want = model(input_ids=ids).logits
    model.to("bfloat16")
    assert model.dtype == "bfloat16"
    w = model.state_dict()["backbone.embeddings.weight"]
    assert w.dtype.name in ("bfloat16", "uint16")
    got = model(input_ids=ids).logits
    assert 0 < rel_err(got, want) < 0.05  # bf16 rounding of the weights only
    model.to("float16")
    assert model.state_dict()["lm_head.weight"].dtype == np.float16


def test_state_dict_is_read_only_and_load_reports_names(model):
    sd = model.state_dict()
    with pytest.raises(ValueError):
        sd["lm_head.weight"][0, 0] = 1
    partial = {k: v for k, v in sd.items() if "layers.1." not in k}
    partial["backbone.extra.weight"] = np.zeros(3)
    with pytest.raises(KeyError, match="layers.1.mixer.D.*extra.weight|extra.weight"):
        model.load_state_dict(partial)
    missing, unexpected = model.load_state_dict(partial, strict=False)
    assert "backbone.layers.1.mixer.D" in missing and unexpected == ["backbone.extra.weight"]
    renamed = {k.replace("embeddings", "embedding"): v for k, v in sd.items()}
    assert model.load_state_dict(renamed) == ([], [])


def test_grouped_gated_norm_option_changes_only_when_groups_differ(rng):
    kwargs = tiny_config_kwargs(n_groups=2)
    full = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**kwargs), seed=6)
    grouped = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(norm_groups="n_groups", **kwargs),
                                        seed=6)
    ids = rng.integers(0, 61, size=(1, 6))
    assert rel_err(full(input_ids=ids).logits, grouped(input_ids=ids).logits) > 1e-4
    kwargs = tiny_config_kwargs(n_groups=1)
    full = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**kwargs), seed=6)
    grouped = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(norm_groups="n_groups", **kwargs),
                                        seed=6)
    assert np.array_equal(full(input_ids=ids).logits, grouped(input_ids=ids).logits)


# ---- bad input ----

def test_input_errors(model):
    V = model.config.vocab_size
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model(input_ids=np.zeros((1, 2), int), inputs_embeds=np.zeros((1, 2, 16), np.float32))
    with pytest.raises(ValueError, match=f"token id {V}.*vocab_size={V}"):
        model(input_ids=np.array([[1, V]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(input_ids=np.array([[-1, 2]]))
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        model(input_ids=np.array([[1.5, 2.0]]))
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        model(input_ids=np.array([[True, False]]))
    with pytest.raises(ValueError, match=r"input_ids must have shape \[batch, tokens\]"):
        model(input_ids=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="empty"):
        model(input_ids=np.zeros((1, 0), np.int64))
    with pytest.raises(ValueError, match=r"inputs_embeds must have shape \[batch, tokens, 16\]"):
        model(inputs_embeds=np.zeros((1, 2, 15), np.float32))
    with pytest.raises(TypeError, match="inputs_embeds must hold floats"):
        model(inputs_embeds=np.zeros((1, 2, 16), np.int32))
    with pytest.raises(ValueError, match="attention_mask must have shape"):
        model(input_ids=np.ones((2, 3), int), attention_mask=np.ones((2, 2)))
    with pytest.raises(ValueError, match="labels must have shape"):
        model(input_ids=np.ones((2, 3), int), labels=np.ones((2, 4), int))
    with pytest.raises(ValueError, match="labels hold 99"):
        model(input_ids=np.ones((1, 3), int), labels=np.array([[1, 99, -100]]))
    with pytest.raises(ValueError, match="logits_to_keep=0"):
        model(input_ids=np.ones((1, 3), int), labels=np.ones((1, 3), int), logits_to_keep=1)
    with pytest.raises(ValueError, match="logits_to_keep must be >= 0"):
        model(input_ids=np.ones((1, 3), int), logits_to_keep=-2)
    with pytest.raises(TypeError, match="cache_params must be a Mamba2Cache"):
        model(input_ids=np.ones((1, 3), int), cache_params={})
    cache = mamba2c.Mamba2Cache(model.config, 2)
    with pytest.raises(ValueError, match="cache_params holds 2 sequences"):
        model(input_ids=np.ones((1, 3), int), cache_params=cache)


def test_non_contiguous_and_other_int_inputs_are_accepted(model, rng):
    ids = ids_for(model, rng, 3, 8)
    want = model(input_ids=ids[:, ::2]).logits
    got = model(input_ids=np.ascontiguousarray(ids[:, ::2]).astype(np.int32)).logits
    assert np.array_equal(want, got)
    assert np.array_equal(model(input_ids=ids[:, ::2].tolist()).logits, want)


def test_state_dict_errors(model):
    sd = {k: np.asarray(v) for k, v in model.state_dict().items()}
    bad = dict(sd)
    bad["lm_head.weight"] = np.zeros((3, 3), np.float32)
    with pytest.raises(ValueError, match=r"lm_head.weight has shape \(3, 3\)"):
        model.load_state_dict(bad)
    bad["lm_head.weight"] = np.zeros(sd["lm_head.weight"].shape, np.int32)
    with pytest.raises(TypeError, match="lm_head.weight must hold floats"):
        model.load_state_dict(bad)


def test_nan_propagates_without_crashing(model):
    sd = {k: np.array(v) for k, v in model.state_dict().items()}
    sd["backbone.layers.0.mixer.D"][0] = np.nan
    model.load_state_dict(sd)
    out = model(input_ids=np.array([[1, 2, 3]]))
    assert np.isnan(out.logits).any()


def test_threads_setting_keeps_results(model, rng):
    ids = ids_for(model, rng, 2, 20)
    before = mamba2c.get_num_threads()
    want = model(input_ids=ids).logits
    try:
        mamba2c.set_num_threads(1)
        assert mamba2c.get_num_threads() == 1
        got = model(input_ids=ids).logits
    finally:
        mamba2c.set_num_threads(before)
    assert rel_err(got, want) < 1e-6
