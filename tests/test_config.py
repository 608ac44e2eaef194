import inspect
import json
import math
import os

import pytest

from mamba2c.configuration import Mamba2Config

# Fields of the base PreTrainedConfig that mamba2c does not model (transformers bookkeeping).
HF_BOOKKEEPING = {"transformers_version", "_name_or_path", "id2label", "label2id",
                  "chunk_size_feed_forward", "is_encoder_decoder", "problem_type", "output_attentions"}

SMALL = dict(hidden_size=64, num_heads=8, head_dim=16, n_groups=2, state_size=16,
             num_hidden_layers=3, vocab_size=101, chunk_size=32)


def hf_fields(hf_config):
    """transformers' config as a dict of the fields both libraries share."""
    d = hf_config.to_dict()
    return {k: v for k, v in d.items() if k not in HF_BOOKKEEPING}


def assert_same_fields(ours, hf_config):
    for key, value in hf_fields(hf_config).items():
        mine = ours.to_dict().get(key, getattr(ours, key, None))
        assert mine == value, key


@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


# ----------------------------------------------------------------------------- defaults

def test_defaults_match_transformers(transformers):
    ours, theirs = Mamba2Config(), transformers.Mamba2Config()
    assert_same_fields(ours, theirs)
    assert ours.time_step_rank == theirs.time_step_rank == 256
    assert ours.time_step_limit == (0.0, math.inf)
    assert ours.layer_types == theirs.layer_types
    assert ours.model_type == theirs.model_type == "mamba2"
    assert ours.dtype is None and ours.architectures is None
    assert ours.output_hidden_states is False and ours.return_dict is True


def test_field_order_matches_transformers(transformers):
    own = [name for name in transformers.Mamba2Config.__annotations__]
    ours = [name for name in inspect.signature(Mamba2Config).parameters if name in own]
    assert ours == own
    defaults = {n: p.default for n, p in inspect.signature(Mamba2Config).parameters.items()}
    for name in own:
        assert defaults[name] == getattr(transformers.Mamba2Config, name), name


def test_derived_sizes():
    c = Mamba2Config()
    assert c.intermediate_size == 8192
    assert c.conv_dim == 8192 + 2 * 8 * 128
    assert c.in_proj_size == 18560
    assert c.layer_types == ["linear_attention"] * 64
    assert Mamba2Config(num_hidden_layers=0).layer_types == []
    with pytest.raises(AttributeError):
        c.intermediate_size = 3


def test_time_step_rank():
    assert Mamba2Config(**SMALL).time_step_rank == 4
    assert Mamba2Config(**SMALL, time_step_rank=7).time_step_rank == 7
    with pytest.raises(ValueError, match="time_step_rank"):
        Mamba2Config(time_step_rank="big")


# ----------------------------------------------------------------------------- validation

@pytest.mark.parametrize("hidden_size,num_heads,expand,head_dim", [(2, 2, 2, 2), (4, 4, 2, 2), (2, 4, 4, 2)])
def test_consistent_architectures(hidden_size, num_heads, expand, head_dim):
    Mamba2Config(hidden_size=hidden_size, num_heads=num_heads, expand=expand, head_dim=head_dim,
                 n_groups=1)


@pytest.mark.parametrize("hidden_size,num_heads,expand,head_dim", [(2, 4, 2, 4), (4, 2, 4, 2)])
def test_inconsistent_architectures(hidden_size, num_heads, expand, head_dim):
    with pytest.raises(ValueError, match=r"Inconsistent configuration: hidden_size \* expand "
                                         r"\(\d+\) must equal num_heads \* head_dim \(\d+\)\."):
        Mamba2Config(hidden_size=hidden_size, num_heads=num_heads, expand=expand, head_dim=head_dim,
                     n_groups=1)


def test_num_heads_divisible_by_n_groups():
    with pytest.raises(ValueError, match=r"num_heads \(6\) must be divisible by n_groups \(4\)"):
        Mamba2Config(hidden_size=12, num_heads=6, head_dim=4, n_groups=4)


@pytest.mark.parametrize("kwargs,error,words", [
    (dict(hidden_size=-64), ValueError, "hidden_size"),
    (dict(num_heads=0), ValueError, "num_heads"),
    (dict(vocab_size=True), TypeError, "vocab_size"),
    (dict(hidden_size=64.0), TypeError, "hidden_size"),
    (dict(state_size="16"), TypeError, "state_size"),
    (dict(vocab_size=2**40), ValueError, "vocab_size"),
    (dict(chunk_size=2**31), ValueError, "chunk_size"),
    (dict(num_hidden_layers=-1), ValueError, "num_hidden_layers"),
    (dict(num_hidden_layers=None), TypeError, "num_hidden_layers"),
    (dict(conv_kernel=0), ValueError, "conv_kernel"),
    (dict(layer_norm_epsilon=0.0), ValueError, "layer_norm_epsilon"),
    (dict(layer_norm_epsilon=-1e-5), ValueError, "layer_norm_epsilon"),
    (dict(layer_norm_epsilon=float("nan")), ValueError, "layer_norm_epsilon"),
    (dict(layer_norm_epsilon="1e-5"), TypeError, "layer_norm_epsilon"),
    (dict(hidden_act="gelu"), ValueError, "gelu"),
    (dict(hidden_act=None), TypeError, "hidden_act"),
    (dict(time_step_limit=(1.0,)), ValueError, "time_step_limit"),
    (dict(time_step_limit=(0.0, 1.0, 2.0)), ValueError, "time_step_limit"),
    (dict(time_step_limit=(2.0, 1.0)), ValueError, "low <= high"),
    (dict(time_step_limit=0.5), TypeError, "time_step_limit"),
    (dict(time_step_limit="inf"), TypeError, "time_step_limit"),
    (dict(time_step_limit=(0.0, "lots")), ValueError, "time_step_limit"),
    (dict(time_step_limit=(float("nan"), 1.0)), ValueError, "time_step_limit"),
    (dict(norm_groups="per_head"), ValueError, "norm_groups"),
    (dict(norm_groups=8), TypeError, "norm_groups"),
    (dict(use_bias=1), TypeError, "use_bias"),
    (dict(tie_word_embeddings="yes"), TypeError, "tie_word_embeddings"),
    (dict(pad_token_id=1.5), TypeError, "pad_token_id"),
    (dict(eos_token_id=[2, "x"]), TypeError, "eos_token_id"),
    (dict(dtype=5), TypeError, "dtype"),
    (dict(dtype="bf 16"), ValueError, "dtype"),
    (dict(architectures="Mamba2ForCausalLM"), TypeError, "architectures"),
    (dict(time_step_min=0.5, time_step_max=0.1), ValueError, "time_step_min"),
    (dict(hidden_size=2**30, num_heads=2**25, head_dim=64, n_groups=1), ValueError, "too large"),
    (dict(model_type="mamba"), ValueError, "model_type"),
    (dict(to_dict=1), ValueError, "to_dict"),
    (dict(intermediate_size=100), ValueError, "intermediate_size"),
])
def test_hostile_values(kwargs, error, words):
    with pytest.raises(error, match=words):
        Mamba2Config(**{**SMALL, **kwargs})


def test_assignment_is_checked():
    c = Mamba2Config(**SMALL)
    with pytest.raises(TypeError, match="hidden_size"):
        c.hidden_size = 3.5
    with pytest.raises(ValueError, match="hidden_act"):
        c.hidden_act = "relu"
    c.hidden_size = 32
    with pytest.raises(ValueError, match="Inconsistent configuration"):
        c.validate()
    c.update({"head_dim": 8})
    assert c.intermediate_size == 64


def test_accepted_variants():
    c = Mamba2Config(**{**SMALL, "num_hidden_layers": 0}, hidden_act="swish", eos_token_id=[2, 3],
                     pad_token_id=None, time_step_limit=[0, "inf"], norm_groups="n_groups",
                     intermediate_size=128)
    assert c.hidden_act == "swish"
    assert c.eos_token_id == [2, 3]
    assert c.time_step_limit == (0.0, math.inf)
    assert isinstance(c.time_step_limit[0], float)
    assert c.norm_groups == "n_groups"
    assert c.num_hidden_layers == 0 and c.layer_types == []
    c = Mamba2Config(**SMALL, time_step_limit=(0.0, {"__float__": "Infinity"}))
    assert c.time_step_limit == (0.0, math.inf)


# ----------------------------------------------------------------------------- extras, dtype

def test_unknown_kwargs_are_kept():
    c = Mamba2Config(**SMALL, n_embd=37, some_list=(1, 2))
    assert c.n_embd == 37
    d = c.to_dict()
    assert d["n_embd"] == 37 and d["some_list"] == [1, 2]
    again = Mamba2Config.from_dict(json.loads(c.to_json_string()))
    assert again.n_embd == 37 and again == c


def test_transformers_bookkeeping_is_dropped():
    c = Mamba2Config(**SMALL, transformers_version="5.17.0", _name_or_path="x", _commit_hash="abc")
    assert "transformers_version" not in c.to_dict()
    assert not any(k.startswith("_") for k in c.to_dict())


@pytest.mark.parametrize("kwargs,expected", [
    (dict(dtype="bfloat16"), "bfloat16"),
    (dict(torch_dtype="float16"), "float16"),
    (dict(dtype="float32", torch_dtype="float16"), "float32"),
    (dict(dtype="torch.bfloat16"), "bfloat16"),
    (dict(), None),
])
def test_dtype_and_torch_dtype(kwargs, expected):
    c = Mamba2Config(**SMALL, **kwargs)
    assert c.dtype == c.torch_dtype == expected
    assert "torch_dtype" not in c.to_dict()
    assert c.to_dict()["dtype"] == expected


def test_dtype_objects():
    torch = pytest.importorskip("torch")
    np = pytest.importorskip("numpy")
    assert Mamba2Config(dtype=torch.bfloat16).dtype == "bfloat16"
    assert Mamba2Config(dtype=np.float32).dtype == "float32"
    assert Mamba2Config(dtype=np.dtype("float16")).dtype == "float16"


def test_extra_fields_written_only_when_set():
    d = Mamba2Config(**SMALL).to_dict()
    assert "norm_groups" not in d and "rms_norm" not in d
    c = Mamba2Config(**SMALL, norm_groups="n_groups", rms_norm=False)
    assert c.to_dict()["norm_groups"] == "n_groups"
    assert c.to_dict()["rms_norm"] is False
    again = Mamba2Config.from_dict(c.to_dict())
    assert again.norm_groups == "n_groups" and again.rms_norm is False


# ----------------------------------------------------------------------------- serialisation

def test_to_dict_is_plain_json():
    d = Mamba2Config(**SMALL, architectures=("Mamba2ForCausalLM",)).to_dict()
    assert d["model_type"] == "mamba2"
    assert d["time_step_limit"] == [0.0, math.inf] and isinstance(d["time_step_limit"], list)
    assert d["architectures"] == ["Mamba2ForCausalLM"]
    assert "transformers_version" not in d
    json.dumps(d)


def test_json_string_format():
    c = Mamba2Config(**SMALL)
    text = c.to_json_string()
    assert text.endswith("}\n")
    assert "Infinity" in text and "__float__" not in text
    data = json.loads(text)
    assert list(data) == sorted(data)
    assert text == json.dumps(data, indent=2, sort_keys=True) + "\n"
    # Generic fields at their defaults are left out, as transformers does.
    assert "return_dict" not in data and "dtype" not in data
    assert json.loads(c.to_json_string(use_diff=False))["return_dict"] is True
    assert repr(c) == "Mamba2Config " + text


def test_json_round_trip(tmp_path):
    c = Mamba2Config(**SMALL, dtype="bfloat16", time_step_limit=(0.0, 5.0), tie_word_embeddings=True,
                     output_hidden_states=True, return_dict=False, architectures=["Mamba2ForCausalLM"])
    path = tmp_path / "c.json"
    c.to_json_file(path)
    again = Mamba2Config.from_json_file(path)
    assert again == c
    assert again.to_dict() == c.to_dict()
    assert Mamba2Config.from_dict(c.to_dict()) == c


def test_save_and_load(tmp_path):
    c = Mamba2Config(**SMALL, norm_groups="n_groups", n_embd=37)
    target = tmp_path / "deep" / "model"
    c.save_pretrained(target)
    assert (target / "config.json").is_file()
    for source in (target, str(target), target / "config.json"):
        again = Mamba2Config.from_pretrained(source)
        assert again == c
    assert again.name_or_path == str(target / "config.json")


def test_from_pretrained_overrides(tmp_path):
    Mamba2Config(**SMALL, dtype="float16").save_pretrained(tmp_path)
    c = Mamba2Config.from_pretrained(tmp_path, num_hidden_layers=1, use_cache=False,
                                     cache_dir="/nowhere", revision="main")
    assert c.num_hidden_layers == 1 and c.use_cache is False
    assert not hasattr(c, "cache_dir")
    assert Mamba2Config.from_pretrained(tmp_path, dtype="auto").dtype == "float16"
    assert Mamba2Config.from_pretrained(tmp_path, torch_dtype="bfloat16").dtype == "bfloat16"
    c, unused = Mamba2Config.from_pretrained(tmp_path, return_unused_kwargs=True, foo=1, vocab_size=7)
    assert unused == {"foo": 1} and c.vocab_size == 7
    with pytest.raises(ValueError, match="Inconsistent"):
        Mamba2Config.from_pretrained(tmp_path, hidden_size=32)


def test_copy_and_eq():
    c = Mamba2Config(**SMALL, eos_token_id=[2, 3])
    d = c.copy()
    assert d == c and d is not c
    d.eos_token_id.append(4)
    assert c.eos_token_id == [2, 3]
    assert d != c
    assert c != "not a config"


def test_save_pretrained_onto_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OSError, match="directory"):
        Mamba2Config(**SMALL).save_pretrained(f)


# ----------------------------------------------------------------------------- reading files

@pytest.mark.parametrize("limit_text", ["[0.0, Infinity]", "[0.0, 1e309]", '[0.0, "inf"]',
                                        '[0.0, {"__float__": "Infinity"}]'])
def test_time_step_limit_spellings(tmp_path, limit_text):
    data = json.dumps({**SMALL, "model_type": "mamba2"})[:-1] + f', "time_step_limit": {limit_text}}}'
    (tmp_path / "config.json").write_text(data)
    assert Mamba2Config.from_pretrained(tmp_path).time_step_limit == (0.0, math.inf)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '"a string"', "", "\xff\xfe"])
def test_malformed_json(tmp_path, text):
    path = tmp_path / "config.json"
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError, match="config.json"):
        Mamba2Config.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="config.json"):
        Mamba2Config.from_json_file(path)


def test_bad_value_in_file_names_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({**SMALL, "hidden_act": "gelu"}))
    with pytest.raises(ValueError, match=r"config\.json.*gelu"):
        Mamba2Config.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["/definitely/not/here", "state-spaces/mamba2-130m",
                                  "mistralai/Mamba-Codestral-7B-v0.1"])
def test_missing_path_never_downloads(name):
    with pytest.raises(OSError, match="never downloads") as info:
        Mamba2Config.from_pretrained(name)
    assert "local directory" in str(info.value)
    if "/" in name and not name.startswith("/"):
        assert "Hub id" in str(info.value)


def test_directory_without_config(tmp_path):
    with pytest.raises(OSError, match="no config.json"):
        Mamba2Config.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- interop

def test_reads_config_saved_by_transformers(tmp_path, transformers):
    theirs = transformers.Mamba2Config(**SMALL, dtype="bfloat16", tie_word_embeddings=True,
                                       architectures=["Mamba2ForCausalLM"], n_embd=37)
    theirs.save_pretrained(tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert "Infinity" in text and "bfloat16" in text
    ours = Mamba2Config.from_pretrained(tmp_path)
    assert_same_fields(ours, theirs)
    assert ours.dtype == "bfloat16"
    assert ours.time_step_limit == (0.0, math.inf)
    assert ours.n_embd == 37


def test_reads_legacy_torch_dtype_key(tmp_path, transformers):
    data = transformers.Mamba2Config(**SMALL).to_dict()
    data.pop("dtype", None)
    data["torch_dtype"] = "bfloat16"
    (tmp_path / "config.json").write_text(json.dumps(data))
    assert Mamba2Config.from_pretrained(tmp_path).dtype == "bfloat16"
    assert str(transformers.Mamba2Config.from_pretrained(tmp_path).dtype) == "torch.bfloat16"


def test_transformers_reads_config_saved_by_mamba2c(tmp_path, transformers):
    ours = Mamba2Config(**SMALL, dtype="bfloat16", time_step_limit=(0.0, math.inf),
                        tie_word_embeddings=True, use_bias=True, eos_token_id=[2, 5],
                        architectures=["Mamba2ForCausalLM"], n_embd=37)
    ours.save_pretrained(tmp_path)
    theirs = transformers.Mamba2Config.from_pretrained(tmp_path)
    assert_same_fields(ours, theirs)
    assert theirs.time_step_limit[1] == math.inf
    assert str(theirs.dtype) == "torch.bfloat16"
    assert theirs.n_embd == 37


def test_transformers_reads_default_config(tmp_path, transformers):
    Mamba2Config().save_pretrained(tmp_path)
    theirs = transformers.Mamba2Config.from_pretrained(tmp_path)
    assert hf_fields(theirs) == hf_fields(transformers.Mamba2Config())
