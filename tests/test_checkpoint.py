"""from_pretrained / save_pretrained against transformers 5.17, zero-copy loading, hostile
checkpoints and the ``python -m mamba2c info`` command."""
import copy
import json
import mmap
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest

import mamba2c
from conftest import randomize_torch_model, rel_err, tiny_config_kwargs
from mamba2c import safetensors as st
from mamba2c.checkpoint import CheckpointError, parameter_count
from mamba2c.modeling import parameter_shapes

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

BAR = 1e-5
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- helpers -----------------------------------------------------------------------------------

def hf_causal_lm(seed=0, **overrides):
    config = transformers.Mamba2Config(**tiny_config_kwargs(**overrides))
    return randomize_torch_model(transformers.Mamba2ForCausalLM(config).eval(), seed)


def save_hf(hf, path, dtype="float32", **save_kwargs):
    """Saves `hf` in `dtype`; returns the float32 model holding exactly the saved values."""
    if dtype == "bfloat16":
        copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(path, **save_kwargs)
        with torch.no_grad():
            for p in hf.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    else:
        hf.save_pretrained(path, **save_kwargs)
    return hf


def hf_logits(hf, ids):
    with torch.no_grad():
        return hf(input_ids=torch.from_numpy(ids), use_cache=False).logits.numpy()


def tensor_bytes(value):
    """The raw bytes of a torch tensor or NumPy array (bfloat16 included)."""
    if isinstance(value, torch.Tensor):
        value = value.detach().contiguous()
        if value.dtype == torch.bfloat16:
            value = value.view(torch.int16)
        return value.numpy().tobytes()
    return np.ascontiguousarray(value).tobytes()


def mapping_of(array):
    """The mmap an array's memory comes from, following .base (and memoryview.obj)."""
    obj = array
    while obj is not None and not isinstance(obj, mmap.mmap):
        obj = obj.obj if isinstance(obj, memoryview) else getattr(obj, "base", None)
    return obj


def shard_files(path):
    return sorted(f for f in os.listdir(path) if f.startswith("model-"))


def write_checkpoint(path, config_dict, tensors):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(config_dict, f)
    st.save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})
    return str(path)


def numpy_state(hf):
    return {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}


@pytest.fixture
def ids(rng):
    return rng.integers(0, tiny_config_kwargs()["vocab_size"], size=(2, 9))


@pytest.fixture
def tiny_dir(tmp_path):
    """A float32 untied checkpoint written by transformers."""
    save_hf(hf_causal_lm(), tmp_path / "ckpt")
    return str(tmp_path / "ckpt")


# --- transformers -> mamba2c -------------------------------------------------------------------

@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shard", [None, "4KB"], ids=["single", "sharded"])
def test_loads_transformers_checkpoint_with_same_logits(tmp_path, ids, tied, dtype, shard):
    save_kwargs = {} if shard is None else {"max_shard_size": shard}
    hf = save_hf(hf_causal_lm(seed=7, tie_word_embeddings=tied), tmp_path, dtype, **save_kwargs)
    files = os.listdir(tmp_path)
    assert ("model.safetensors.index.json" in files) == (shard is not None)

    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    assert model.dtype == dtype
    assert model.loading_info["missing_keys"] == model.loading_info["unexpected_keys"] == []
    assert ("lm_head.weight" in model._weights) == (not tied)
    assert rel_err(model(input_ids=ids).logits, hf_logits(hf, ids)) <= BAR


def test_base_model_loads_causal_lm_checkpoint_and_vice_versa(tmp_path, ids):
    hf = save_hf(hf_causal_lm(seed=3), tmp_path / "lm")
    base = mamba2c.Mamba2Model.from_pretrained(tmp_path / "lm")  # strict: the head is dropped
    assert base.loading_info["unexpected_keys"] == ["lm_head.weight"]
    with torch.no_grad():
        want = hf.backbone(input_ids=torch.from_numpy(ids), use_cache=False).last_hidden_state
    assert rel_err(base(input_ids=ids).last_hidden_state, want.numpy()) <= BAR

    # a bare Mamba2Model checkpoint (no prefix) into a tied causal LM
    hf_tied = hf_causal_lm(seed=4, tie_word_embeddings=True)
    hf_tied.backbone.save_pretrained(tmp_path / "base")
    lm = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path / "base", tie_word_embeddings=True)
    assert rel_err(lm(input_ids=ids).logits, hf_logits(hf_tied, ids)) <= BAR


def test_mamba_ssm_names_and_missing_tied_head(tmp_path, ids):
    hf = hf_causal_lm(seed=5, tie_word_embeddings=True)
    tensors = numpy_state(hf)
    tensors["backbone.embedding.weight"] = tensors.pop("backbone.embeddings.weight")
    tensors.pop("lm_head.weight")
    write_checkpoint(tmp_path, hf.config.to_dict(), tensors)
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    assert model.loading_info["missing_keys"] == []
    assert rel_err(model(input_ids=ids).logits, hf_logits(hf, ids)) <= BAR


# --- zero copy and dtypes ----------------------------------------------------------------------

def test_bfloat16_loads_as_views_of_the_mapped_file(tmp_path):
    save_hf(hf_causal_lm(), tmp_path, "bfloat16")
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    path = os.path.join(tmp_path, "model.safetensors")
    with st.SafetensorsFile(path) as f:
        for name, weight in model._weights.items():
            assert weight.dtype == np.uint16  # bfloat16 bits, never widened to float32
            assert not weight.flags.writeable
            mm = mapping_of(weight)
            assert mm is not None and len(mm) == os.path.getsize(path)
            assert np.shares_memory(weight, np.frombuffer(mm, np.uint8))
            assert tensor_bytes(weight) == tensor_bytes(f.get(model._prefix(name)))


def test_conv_weights_keep_the_file_shape(tiny_dir):
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir)
    shapes = parameter_shapes(model.config, with_lm_head=True)
    assert {k: v.shape for k, v in model._weights.items()} == shapes
    assert model._weights["layers.0.mixer.conv1d.weight"].ndim == 3
    assert mapping_of(model._weights["layers.0.mixer.conv1d.weight"]) is not None


def test_dtype_argument_converts(tmp_path, ids):
    save_hf(hf_causal_lm(seed=2), tmp_path, "bfloat16")
    as_bf16 = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    as_f32 = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path, dtype="float32")
    assert as_f32.dtype == "float32"
    for name, weight in as_f32._weights.items():
        assert weight.dtype == np.float32 and mapping_of(weight) is None
        widened = (as_bf16._weights[name].astype(np.uint32) << 16).view(np.float32)
        assert np.array_equal(weight, widened)
    assert rel_err(as_f32(input_ids=ids).logits, as_bf16(input_ids=ids).logits) <= 1e-6

    as_f16 = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float16)
    assert as_f16.dtype == "float16"
    assert {w.dtype for w in as_f16._weights.values()} == {np.dtype(np.float16)}


def test_auto_dtype_follows_the_majority_of_bytes(tmp_path, ids):
    hf = hf_causal_lm(seed=6)
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    # transformers-style mixed checkpoint: bfloat16 except A_log and D in float32
    tensors = {}
    for key, value in hf.state_dict().items():
        if key.endswith(("A_log", "D")):
            tensors[key] = value.numpy()
        else:
            tensors[key] = (value.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16),
                            "bfloat16")
    write_checkpoint(tmp_path, hf.config.to_dict(), tensors)
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    assert model.dtype == "bfloat16"
    assert mapping_of(model._weights["embeddings.weight"]) is not None
    assert mapping_of(model._weights["layers.0.mixer.A_log"]) is None  # converted
    assert rel_err(model(input_ids=ids).logits, hf_logits(hf, ids)) <= BAR


# --- mamba2c -> transformers -------------------------------------------------------------------

@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("shard", ["5GB", "3KB"], ids=["single", "sharded"])
def test_transformers_loads_mamba2c_checkpoint_bit_for_bit(tmp_path, tied, dtype, shard):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(tie_word_embeddings=tied))
    ours = mamba2c.Mamba2ForCausalLM(config, dtype=dtype, seed=1)
    ours.save_pretrained(tmp_path, max_shard_size=shard)

    hf, info = transformers.Mamba2ForCausalLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert str(hf.dtype) == f"torch.{dtype}"
    theirs, mine = hf.state_dict(), ours.state_dict()
    assert set(theirs) == set(mine)
    for key, value in theirs.items():
        assert tuple(value.shape) == mine[key].shape, key
        assert tensor_bytes(value) == tensor_bytes(mine[key]), key

    files = [f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]
    assert (len(files) > 1) == (shard == "3KB")
    names = set()
    for name in files:
        with st.SafetensorsFile(os.path.join(tmp_path, name)) as f:
            assert f.metadata == {"format": "pt"}
            names.update(f.keys())
    assert ("lm_head.weight" in names) == (not tied)


def test_saved_files_match_what_transformers_writes(tmp_path):
    kwargs = tiny_config_kwargs(eos_token_id=[2, 3], pad_token_id=None)
    hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**kwargs))
    randomize_torch_model(hf, 0)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="3KB")
    ours = mamba2c.Mamba2ForCausalLM(mamba2c.Mamba2Config(**kwargs))
    ours.load_state_dict(hf.state_dict())
    ours.save_pretrained(tmp_path / "ours", max_shard_size="3KB")

    def read(name, side):
        with open(tmp_path / side / name) as f:
            data = json.load(f)
        data.pop("transformers_version", None)
        return data

    assert read("generation_config.json", "ours") == read("generation_config.json", "hf")
    index = "model.safetensors.index.json"
    assert read(index, "ours") == read(index, "hf")  # the same split into shards
    theirs, mine = read("config.json", "hf"), read("config.json", "ours")
    assert set(mine) == set(theirs)
    for key in set(mine) - {"time_step_limit"}:  # inf is spelled differently, read the same
        assert mine[key] == theirs[key], key
    assert (mamba2c.Mamba2Config.from_pretrained(tmp_path / "ours")
            == mamba2c.Mamba2Config.from_pretrained(tmp_path / "hf"))

    base = mamba2c.Mamba2Model(mamba2c.Mamba2Config(**kwargs))
    base.save_pretrained(tmp_path / "base")
    assert not os.path.exists(tmp_path / "base" / "generation_config.json")  # as transformers
    hf_base = transformers.Mamba2Model.from_pretrained(tmp_path / "base")
    for key, value in hf_base.state_dict().items():
        assert tensor_bytes(value) == tensor_bytes(base.state_dict()[key]), key


def test_round_trip_through_mamba2c_keeps_every_byte(tmp_path):
    save_hf(hf_causal_lm(seed=9), tmp_path / "a", "bfloat16", max_shard_size="4KB")
    mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path / "a").save_pretrained(
        tmp_path / "b", max_shard_size="4KB")
    for name in os.listdir(tmp_path / "a"):
        if name.endswith(".safetensors") or name.endswith(".index.json"):
            assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# --- saving over the loaded directory ----------------------------------------------------------

@pytest.mark.parametrize("before, after", [("4KB", "5GB"), ("5GB", "4KB")],
                         ids=["sharded-to-single", "single-to-sharded"])
def test_saving_over_the_loaded_directory(tmp_path, ids, before, after):
    save_hf(hf_causal_lm(seed=8), tmp_path, "bfloat16", max_shard_size=before)
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    want = model(input_ids=ids).logits
    snapshot = {k: v.copy() for k, v in model._weights.items()}

    model.save_pretrained(tmp_path, max_shard_size=after)
    assert bool(shard_files(tmp_path)) == (after == "4KB")  # the old layout's files are gone
    for name, weight in model._weights.items():  # the old mappings are still intact
        assert np.array_equal(weight, snapshot[name])
    assert np.array_equal(model(input_ids=ids).logits, want)

    reloaded = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    assert all(np.array_equal(reloaded._weights[k], v) for k, v in snapshot.items())
    assert np.array_equal(reloaded(input_ids=ids).logits, want)


# --- names: missing, unexpected, strict --------------------------------------------------------

def test_missing_and_unexpected_names(tmp_path, ids):
    hf = hf_causal_lm(seed=11)
    tensors = numpy_state(hf)
    tensors.pop("backbone.layers.1.mixer.D")
    tensors["backbone.layers.0.mixer.extra"] = np.zeros(3, np.float32)
    write_checkpoint(tmp_path, hf.config.to_dict(), tensors)

    with pytest.raises(CheckpointError) as err:
        mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    message = str(err.value)
    assert "backbone.layers.1.mixer.D" in message
    assert "backbone.layers.0.mixer.extra (in model.safetensors)" in message

    model, info = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path, strict=False,
                                                            output_loading_info=True)
    assert info["missing_keys"] == ["backbone.layers.1.mixer.D"]
    assert info["unexpected_keys"] == ["backbone.layers.0.mixer.extra"]
    assert model.loading_info is info
    assert np.array_equal(model._weights["layers.1.mixer.D"], np.ones(8, np.float32))  # fresh init
    assert np.array_equal(model._weights["layers.0.mixer.D"], tensors["backbone.layers.0.mixer.D"])
    assert np.isfinite(model(input_ids=ids).logits).all()


def test_untied_model_needs_its_lm_head(tmp_path):
    hf = hf_causal_lm()
    tensors = numpy_state(hf)
    tensors.pop("lm_head.weight")
    write_checkpoint(tmp_path, hf.config.to_dict(), tensors)
    with pytest.raises(CheckpointError, match=r"missing \[lm_head.weight\]"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path, strict=False, dtype="bfloat16")
    assert model._weights["lm_head.weight"].shape == (61, 16)
    assert model._weights["lm_head.weight"].dtype == np.uint16


def test_two_names_for_one_parameter_are_refused(tmp_path):
    hf = hf_causal_lm()
    tensors = numpy_state(hf)
    tensors["backbone.embedding.weight"] = tensors["backbone.embeddings.weight"]
    write_checkpoint(tmp_path, hf.config.to_dict(), tensors)
    with pytest.raises(CheckpointError, match="both hold backbone.embeddings.weight"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)


# --- hostile configs and checkpoints -----------------------------------------------------------

@pytest.mark.parametrize("field, value, error, pattern", [
    ("hidden_size", -16, ValueError, "hidden_size must be a positive int"),
    ("num_heads", "8", TypeError, "num_heads must be an int"),
    ("num_hidden_layers", 10**30, ValueError, "num_hidden_layers must be at most"),
    ("tie_word_embeddings", "yes", TypeError, "tie_word_embeddings must be a bool"),
])
def test_hostile_config_fields(tiny_dir, field, value, error, pattern):
    path = os.path.join(tiny_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    config[field] = value
    with open(path, "w") as f:
        json.dump(config, f)
    with pytest.raises(error, match=pattern) as err:
        mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir)
    assert "config.json" in str(err.value)


def test_malformed_config_json(tiny_dir):
    with open(os.path.join(tiny_dir, "config.json"), "w") as f:
        f.write('{"hidden_size": 16,')
    with pytest.raises(ValueError, match="not a valid JSON config"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir)


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("sizes", [
    dict(vocab_size=2**30, hidden_size=1024, num_heads=8, head_dim=256),  # ~10^12 parameters
    dict(num_hidden_layers=2**31 - 1),
], ids=["huge-embeddings", "billions-of-layers"])
def test_absurd_config_fails_before_allocating(tiny_dir, sizes, strict):
    path = os.path.join(tiny_dir, "config.json")
    with open(path) as f:
        config = json.load(f)
    config.update(sizes)
    with open(path, "w") as f:
        json.dump(config, f)
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=r"describes a model of [\d,]+ (param|tens)"):
            mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir, strict=strict)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 10 * 2**20


def test_wrong_shape_names_tensor_and_file(tmp_path):
    save_hf(hf_causal_lm(), tmp_path, max_shard_size="4KB")
    with open(tmp_path / "config.json") as f:
        config = json.load(f)
    config["state_size"] = 5  # every in_proj and conv1d weight is now the wrong size
    with open(tmp_path / "config.json", "w") as f:
        json.dump(config, f)
    with pytest.raises(CheckpointError) as err:
        mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    message = str(err.value)
    # the first wrong tensor in file order, and the shard that holds it
    assert "model-00003-of-00006.safetensors: tensor backbone.layers.0.mixer.conv1d.bias" in message
    assert "has shape [56], but config.json asks for [52]" in message


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.bool_])
def test_integer_weights_are_refused(tmp_path, dtype):
    hf = hf_causal_lm()
    tensors = numpy_state(hf)
    tensors["backbone.norm_f.weight"] = tensors["backbone.norm_f.weight"].astype(dtype)
    write_checkpoint(tmp_path, hf.config.to_dict(), tensors)
    with pytest.raises(CheckpointError,
                       match=r"model.safetensors: tensor backbone.norm_f.weight has dtype"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)


def test_float64_weights_are_converted(tmp_path, ids):
    hf = hf_causal_lm(seed=12)
    tensors = {k: v.astype(np.float64) for k, v in numpy_state(hf).items()}
    write_checkpoint(tmp_path, hf.config.to_dict(), tensors)
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)
    assert model.dtype == "float32"
    assert rel_err(model(input_ids=ids).logits, hf_logits(hf, ids)) <= BAR


def test_missing_weights_file(tmp_path):
    mamba2c.Mamba2Config(**tiny_config_kwargs()).save_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)


def test_missing_shard(tmp_path):
    save_hf(hf_causal_lm(), tmp_path, max_shard_size="4KB")
    second = shard_files(tmp_path)[1]
    os.remove(tmp_path / second)
    with pytest.raises(FileNotFoundError, match=second):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)


def test_hub_id_and_bad_arguments(tmp_path, tiny_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="download it first"):
        mamba2c.Mamba2ForCausalLM.from_pretrained("state-spaces/mamba2-130m")
    with pytest.raises(NotADirectoryError):
        mamba2c.Mamba2ForCausalLM.from_pretrained(os.path.join(tiny_dir, "config.json"))
    with pytest.raises(ValueError, match="unknown device"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir, device="tpu")
    if not mamba2c.cuda.is_available():
        with pytest.raises(RuntimeError, match="not available"):
            mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir, device="cuda")
    with pytest.raises(TypeError, match="not_an_option"):
        mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir, not_an_option=1)
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir, use_cache=False, cache_dir="x")
    assert model.config.use_cache is False


# --- construction, counting, progress ----------------------------------------------------------

def test_loaded_model_has_the_constructors_attributes(tiny_dir):
    config = mamba2c.Mamba2Config.from_pretrained(tiny_dir)
    for cls in (mamba2c.Mamba2Model, mamba2c.Mamba2ForCausalLM):
        fresh = cls(config)
        loaded = cls.from_pretrained(tiny_dir, strict=False)
        assert set(vars(loaded)) - {"loading_info"} == set(vars(fresh))


@pytest.mark.parametrize("overrides", [{}, dict(use_bias=True, use_conv_bias=False),
                                       dict(tie_word_embeddings=True, num_hidden_layers=0)])
def test_parameter_count_matches_the_shapes(overrides):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(**overrides))
    for head in (False, True):
        shapes = parameter_shapes(config, head)
        assert parameter_count(config, head) == sum(int(np.prod(s)) for s in shapes.values())


def test_progress_bar_only_when_asked_or_large(tiny_dir, tmp_path, capsys):
    pytest.importorskip("tqdm")
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir)
    model.save_pretrained(tmp_path / "quiet")
    assert capsys.readouterr().err == ""  # tiny: no bar by default
    mamba2c.Mamba2ForCausalLM.from_pretrained(tiny_dir, progress=True)
    model.save_pretrained(tmp_path / "loud", max_shard_size="4KB", progress=True)
    err = capsys.readouterr().err
    assert "Loading weights" in err and "Writing model shards" in err


# --- python -m mamba2c info --------------------------------------------------------------------

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "mamba2c", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120)


def test_cli_info_on_a_checkpoint(tmp_path):
    save_hf(hf_causal_lm(), tmp_path, "bfloat16", max_shard_size="4KB")
    result = run_cli("info", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "hidden_size: 16" in out and "num_hidden_layers: 2" in out
    count = parameter_count(mamba2c.Mamba2Config.from_pretrained(tmp_path))
    assert f"parameters: {count:,} in 21 tensors" in out
    assert "bfloat16: 21 tensors" in out
    for name in shard_files(tmp_path) + ["model.safetensors.index.json"]:
        size = os.path.getsize(tmp_path / name)
        assert f"{name}: " in out and f"({size:,} bytes)" in out


def test_cli_info_without_a_directory():
    result = run_cli("info")
    assert result.returncode == 0, result.stderr
    assert f"mamba2c {mamba2c.__version__}" in result.stdout
    assert "OpenBLAS: " in result.stdout
    assert f"threads: {mamba2c.get_num_threads()}" in result.stdout


def test_cli_errors_are_one_line(tmp_path):
    result = run_cli("info", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert result.stderr.startswith("mamba2c info: error: ") and "Traceback" not in result.stderr
    assert run_cli().returncode == 2  # no subcommand: argparse usage error
