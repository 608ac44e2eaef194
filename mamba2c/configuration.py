"""Configuration of a Mamba-2 model, field-compatible with transformers' ``Mamba2Config``."""
from __future__ import annotations

import copy
import html
import json
import math
import numbers
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

CONFIG_NAME = "config.json"

# The C engine indexes with 32-bit sizes in places; anything larger is a typo or an attack.
_MAX_SIZE = 2**31 - 1

# The engine always applies SiLU after the conv; "swish" is the same function.
_ACTIVATIONS = ("silu", "swish")

_NORM_GROUPS = ("full", "n_groups")

# The C engine's causal convolution takes at most this many taps (MAX_CONV_KERNEL in
# csrc/model/forward.c); a larger kernel is refused here rather than at the first forward.
_MAX_CONV_KERNEL = 16

# transformers' special-float encoding in config.json (5.x writes inf as {"__float__": "Infinity"}).
_FLOAT_TAG_KEY = "__float__"
_SPECIAL_FLOATS = {
    "inf": math.inf, "+inf": math.inf, "infinity": math.inf, "+infinity": math.inf,
    "-inf": -math.inf, "-infinity": -math.inf,
}

# Generic transformers fields left out of the diff dict at these values, as transformers does.
_BASE_DEFAULTS = {
    "output_hidden_states": False,
    "output_attentions": False,
    "return_dict": True,
    "dtype": None,
    "architectures": None,
}

# mamba2c-only (or transformers-4.x-only) fields, left out of to_dict() at their defaults so that
# transformers 5.x reads exactly its own fields.
_OMITTED_AT_DEFAULT = {"norm_groups": "full", "rms_norm": True}

# Bookkeeping keys of transformers that carry no model information.
_IGNORED_KEYS = ("transformers_version",)

# from_pretrained arguments that only make sense for downloads; mamba2c reads local files only.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies",
               "resume_download", "trust_remote_code", "_from_auto", "_from_pipeline", "_commit_hash")

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

PathLike = Union[str, "os.PathLike[str]"]


# ----------------------------------------------------------------------------- field checks

def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value}")
    if value > _MAX_SIZE:
        raise ValueError(f"{name} must be at most {_MAX_SIZE}, got {value}")
    return value


def _size(name: str, value: Any) -> int:
    return _int(name, value, 1)


def _count(name: str, value: Any) -> int:
    return _int(name, value, 0)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def _real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def _finite(name: str, value: Any, positive: bool) -> float:
    value = _real(name, value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        what = "a finite number > 0" if positive else "a finite number >= 0"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def _positive_real(name: str, value: Any) -> float:
    return _finite(name, value, positive=True)


def _non_negative_real(name: str, value: Any) -> float:
    return _finite(name, value, positive=False)


def _token_id(name: str, value: Any) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int or None, got {type(value).__name__} ({value!r})")
    if abs(int(value)) > _MAX_SIZE:
        raise ValueError(f"{name} must be at most {_MAX_SIZE} in magnitude, got {value}")
    return int(value)


def _token_ids(name: str, value: Any) -> Union[int, List[Optional[int]], None]:
    if isinstance(value, (list, tuple)):
        return [_token_id(f"{name}[{i}]", v) for i, v in enumerate(value)]
    return _token_id(name, value)


def _special_float(name: str, value: Any) -> float:
    """A float from a number, a string such as "inf", or transformers' {"__float__": "Infinity"}."""
    if isinstance(value, Mapping) and set(value) == {_FLOAT_TAG_KEY}:
        value = value[_FLOAT_TAG_KEY]
    if isinstance(value, str):
        text = value.strip().lower()
        if text not in _SPECIAL_FLOATS:
            raise ValueError(f"{name} must be a number, got the string {value!r}")
        return _SPECIAL_FLOATS[text]
    return _real(name, value)


def _time_step_limit(name: str, value: Any) -> Tuple[float, float]:
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a pair (low, high), got {type(value).__name__} ({value!r})")
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high), got {len(value)} values: {value!r}")
    low = _special_float(f"{name}[0]", value[0])
    high = _special_float(f"{name}[1]", value[1])
    if low > high:
        raise ValueError(f"{name} must satisfy low <= high, got ({low!r}, {high!r})")
    return (low, high)


def _hidden_act(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} ({value!r})")
    if value not in _ACTIVATIONS:
        raise ValueError(f"{name}={value!r} is not supported by mamba2c; use one of {list(_ACTIVATIONS)}")
    return value


def _norm_groups(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__} ({value!r})")
    if value not in _NORM_GROUPS:
        raise ValueError(f"{name} must be one of {list(_NORM_GROUPS)}, got {value!r}")
    return value


def _dtype(name: str, value: Any) -> Optional[str]:
    """The dtype as a name such as "bfloat16"; accepts torch, numpy and ml_dtypes dtypes too."""
    if value is None:
        return None
    if not isinstance(value, str):
        text = str(value)
        if text.startswith("torch."):
            value = text
        elif isinstance(getattr(value, "name", None), str):
            value = value.name
        elif isinstance(value, type):
            value = value.__name__
        else:
            raise TypeError(f"{name} must be a dtype name such as 'bfloat16' or None, "
                            f"got {type(value).__name__} ({value!r})")
    if value.startswith("torch."):
        value = value[len("torch."):]
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", value):
        raise ValueError(f"{name} must name a data type such as 'bfloat16', got {value!r}")
    return value


def _architectures(name: str, value: Any) -> Optional[List[str]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} must be a list of strings or None, got {value!r}")
    return list(value)


def _time_step_rank(name: str, value: Any) -> Union[str, int]:
    if isinstance(value, str):
        if value == "auto":
            return value
        raise ValueError(f"{name} must be 'auto' or a positive int, got {value!r}")
    return _size(name, value)


def _conv_kernel(name: str, value: Any) -> int:
    value = _size(name, value)
    if value > _MAX_CONV_KERNEL:
        raise ValueError(f"{name}={value} is not supported: mamba2c's convolution takes at most "
                         f"{_MAX_CONV_KERNEL} taps")
    return value


_CHECKS = {
    "num_heads": _size,
    "head_dim": _size,
    "vocab_size": _size,
    "hidden_size": _size,
    "state_size": _size,
    "num_hidden_layers": _count,
    "layer_norm_epsilon": _positive_real,
    "pad_token_id": _token_id,
    "bos_token_id": _token_id,
    "eos_token_id": _token_ids,
    "expand": _size,
    "conv_kernel": _conv_kernel,
    "n_groups": _size,
    "use_bias": _bool,
    "use_conv_bias": _bool,
    "hidden_act": _hidden_act,
    "initializer_range": _non_negative_real,
    "residual_in_fp32": _bool,
    "time_step_rank": _time_step_rank,
    "time_step_min": _positive_real,
    "time_step_max": _positive_real,
    "time_step_floor": _non_negative_real,
    "time_step_limit": _time_step_limit,
    "rescale_prenorm_residual": _bool,
    "use_cache": _bool,
    "rms_norm": _bool,
    "chunk_size": _size,
    "tie_word_embeddings": _bool,
    "output_hidden_states": _bool,
    "return_dict": _bool,
    "dtype": _dtype,
    "architectures": _architectures,
    "norm_groups": _norm_groups,
}

_DERIVED = ("intermediate_size", "conv_dim", "in_proj_size", "layer_types")


def _plain(value: Any) -> Any:
    """A deep copy with tuples turned into lists, as JSON holds them."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return copy.deepcopy(value)


def _decode_special_floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        if set(obj) == {_FLOAT_TAG_KEY} and isinstance(obj[_FLOAT_TAG_KEY], str):
            tag = obj[_FLOAT_TAG_KEY]
            if tag == "NaN":
                return math.nan
            return _SPECIAL_FLOATS.get(tag.lower(), obj)
        return {k: _decode_special_floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode_special_floats(v) for v in obj]
    return obj


def _read_json_object(path: str) -> Dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.loads(f.read())
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError included
        raise ValueError(f"{path} is not a valid JSON config file: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object at the top level, got {type(data).__name__}")
    return _decode_special_floats(data)


def _naming_file(err: Exception, path: str) -> Exception:
    kind = TypeError if isinstance(err, TypeError) else ValueError
    return kind(f"{path}: {err}")


def _not_found(name: str, path: str) -> OSError:
    message = (f"{path!r} is not a local directory or config file. mamba2c never downloads "
               f"anything: pass a local directory that holds {CONFIG_NAME} (or the path of the file).")
    if _HUB_ID.match(name) and not os.path.exists(name.split("/")[0]):
        message += (f" {name!r} looks like a Hugging Face Hub id; download it first, e.g. "
                    f"`huggingface-cli download {name} --local-dir <dir>`, and pass <dir>.")
    return OSError(message)


# ----------------------------------------------------------------------------- the config

class Mamba2Config:
    """Hyper-parameters of a Mamba-2 model.

    Fields, defaults and their order are those of transformers' ``Mamba2Config`` (5.17), whose
    defaults describe Mamba-Codestral-7B. The sizes:

    * ``hidden_size`` D, ``num_hidden_layers`` L, ``vocab_size`` V;
    * ``expand``: the SSM branch is I = expand * D wide, split into ``num_heads`` H heads of
      ``head_dim`` P (so H * P must equal I);
    * ``state_size`` N per head; ``n_groups`` G groups of heads share their B and C (H must be
      a multiple of G); ``conv_kernel`` K, the width of the causal conv (at most 16);
    * ``chunk_size`` Q of the chunked scan (the CPU engine uses at most 64; the result does
      not depend on it beyond rounding).

    Also used: ``layer_norm_epsilon`` (every RMSNorm), ``time_step_limit`` (dt is clamped to
    it after the softplus), ``use_bias`` / ``use_conv_bias`` (biases of the projections /
    the conv), ``tie_word_embeddings`` (the LM head is the embedding table), the special
    tokens (defaults of ``generate``), and ``use_cache``, ``output_hidden_states``,
    ``return_dict`` (defaults of ``forward``). ``initializer_range``, ``time_step_min``,
    ``time_step_max``, ``time_step_floor`` and ``rescale_prenorm_residual`` only shape a fresh
    model's initialisation. ``dtype`` records the weights' dtype in config.json; models take
    theirs from the ``dtype`` argument or the checkpoint. ``residual_in_fp32`` and
    ``time_step_rank`` are kept for compatibility (the residual stream is always float32);
    ``hidden_act`` must be "silu" (or "swish", the same function).

    Extra options:

    * ``rms_norm``: kept for transformers 4.x configs; the norm is always RMSNorm.
    * ``norm_groups``: ``"full"`` (default, as transformers) normalises the gated output over the
      whole intermediate size; ``"n_groups"`` normalises each of the ``n_groups`` groups
      separately, as ``mamba_ssm`` does (and as Mamba-Codestral was trained).

    Unknown keyword arguments are kept as attributes and saved; keys starting with ``_`` and
    ``transformers_version`` are dropped. Fields are type-checked when set; relations between
    fields are checked by :meth:`validate` (at construction and when saving).
    """

    model_type = "mamba2"

    def __init__(
        self,
        num_heads: int = 128,
        head_dim: int = 64,
        vocab_size: int = 32768,
        hidden_size: int = 4096,
        state_size: int = 128,
        num_hidden_layers: int = 64,
        layer_norm_epsilon: float = 1e-5,
        pad_token_id: Optional[int] = 1,
        bos_token_id: Optional[int] = 0,
        eos_token_id: Union[int, List[int], None] = 2,
        expand: int = 2,
        conv_kernel: int = 4,
        n_groups: int = 8,
        use_bias: bool = False,
        use_conv_bias: bool = True,
        hidden_act: str = "silu",
        initializer_range: float = 0.1,
        residual_in_fp32: bool = True,
        time_step_rank: Union[str, int] = "auto",
        time_step_min: float = 0.001,
        time_step_max: float = 0.1,
        time_step_floor: float = 1e-4,
        time_step_limit: Sequence[float] = (0.0, float("inf")),
        rescale_prenorm_residual: bool = False,
        use_cache: bool = True,
        rms_norm: bool = True,
        chunk_size: int = 256,
        tie_word_embeddings: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        dtype: Any = None,
        architectures: Optional[List[str]] = None,
        norm_groups: str = "full",
        **kwargs: Any,
    ) -> None:
        # Older configs (and transformers 4.x) call it torch_dtype; like transformers, dtype wins.
        torch_dtype = kwargs.pop("torch_dtype", None)
        if dtype is None:
            dtype = torch_dtype
        model_type = kwargs.pop("model_type", None)
        if model_type is not None and model_type != self.model_type:
            raise ValueError(f"model_type must be {self.model_type!r}, got {model_type!r}")

        self.num_heads = num_heads
        self.head_dim = head_dim
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.state_size = state_size
        self.num_hidden_layers = num_hidden_layers
        self.layer_norm_epsilon = layer_norm_epsilon
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.expand = expand
        self.conv_kernel = conv_kernel
        self.n_groups = n_groups
        self.use_bias = use_bias
        self.use_conv_bias = use_conv_bias
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.residual_in_fp32 = residual_in_fp32
        self.time_step_rank = time_step_rank
        self.time_step_min = time_step_min
        self.time_step_max = time_step_max
        self.time_step_floor = time_step_floor
        self.time_step_limit = time_step_limit
        self.rescale_prenorm_residual = rescale_prenorm_residual
        self.use_cache = use_cache
        self.rms_norm = rms_norm
        self.chunk_size = chunk_size
        self.tie_word_embeddings = tie_word_embeddings
        self.output_hidden_states = output_hidden_states
        self.return_dict = return_dict
        self.dtype = dtype
        self.architectures = architectures
        self.norm_groups = norm_groups
        self._name_or_path = ""
        self.validate()

        for key, value in kwargs.items():
            if key.startswith("_") or key in _IGNORED_KEYS:
                continue
            if key in _DERIVED:
                # A saved derived value is fine as long as it agrees with the fields.
                if _plain(value) != _plain(getattr(self, key)):
                    raise ValueError(f"{key}={value!r} contradicts the other fields, which give "
                                     f"{key}={getattr(self, key)!r}")
                continue
            if hasattr(type(self), key):
                raise ValueError(f"{key!r} cannot be set from a keyword argument: it names a "
                                 f"method or property of {type(self).__name__}")
            setattr(self, key, value)

    def __setattr__(self, name: str, value: Any) -> None:
        check = _CHECKS.get(name)
        if check is not None:
            value = check(name, value)
            if name == "time_step_rank" and value == "auto":
                # Resolved as transformers resolves it; the value is unused by Mamba-2 itself.
                value = math.ceil(self.hidden_size / 16)
        super().__setattr__(name, value)

    def validate(self) -> None:
        """Checks the relations between fields; raises ValueError when they are inconsistent."""
        if self.hidden_size * self.expand != self.num_heads * self.head_dim:
            raise ValueError(
                "Inconsistent configuration: hidden_size * expand "
                f"({self.hidden_size * self.expand}) must equal num_heads * head_dim "
                f"({self.num_heads * self.head_dim})."
            )
        if self.num_heads % self.n_groups != 0:
            raise ValueError(
                f"Inconsistent configuration: num_heads ({self.num_heads}) must be divisible by "
                f"n_groups ({self.n_groups}), since each group's B and C are shared by "
                "num_heads // n_groups heads."
            )
        if self.in_proj_size > _MAX_SIZE:
            raise ValueError(
                f"Configuration too large: in_proj_size = 2 * intermediate_size + 2 * n_groups * "
                f"state_size + num_heads = {self.in_proj_size} exceeds {_MAX_SIZE}."
            )
        if self.time_step_min > self.time_step_max:
            raise ValueError(f"time_step_min ({self.time_step_min}) must not exceed "
                             f"time_step_max ({self.time_step_max})")

    # ------------------------------------------------------------------------- derived sizes

    @property
    def intermediate_size(self) -> int:
        """Width I of the SSM branch: ``int(expand * hidden_size)`` (= num_heads * head_dim)."""
        return int(self.expand * self.hidden_size)

    @property
    def conv_dim(self) -> int:
        """Channels of the depthwise convolution: x, B and C, ``I + 2 * n_groups * state_size``."""
        return self.intermediate_size + 2 * self.n_groups * self.state_size

    @property
    def in_proj_size(self) -> int:
        """Output features of ``in_proj``: z, xBC and dt, ``2*I + 2*n_groups*state_size + num_heads``."""
        return self.intermediate_size + self.conv_dim + self.num_heads

    @property
    def layer_types(self) -> List[str]:
        """One entry per layer, as transformers 5.17 reports it (``"linear_attention"``)."""
        return ["linear_attention"] * self.num_hidden_layers

    @property
    def torch_dtype(self) -> Optional[str]:
        """Older name of :attr:`dtype`."""
        return self.dtype

    @torch_dtype.setter
    def torch_dtype(self, value: Any) -> None:
        self.dtype = value

    @property
    def use_return_dict(self) -> bool:
        """Older name of :attr:`return_dict`, still read by transformers 4.x-style code."""
        return self.return_dict

    @property
    def name_or_path(self) -> str:
        """The path this config was loaded from ("" when built in code)."""
        return self._name_or_path

    @name_or_path.setter
    def name_or_path(self, value: PathLike) -> None:
        self._name_or_path = str(value)

    # ------------------------------------------------------------------------- serialisation

    def to_dict(self) -> Dict[str, Any]:
        """Every field as plain JSON-able values (``time_step_limit`` as a list), plus model_type.

        ``norm_groups`` and ``rms_norm`` are left out at their defaults, so that transformers sees
        a clean config.
        """
        out = {}
        for key, value in self.__dict__.items():
            if key.startswith("_"):
                continue
            if key in _OMITTED_AT_DEFAULT and value == _OMITTED_AT_DEFAULT[key]:
                continue
            out[key] = _plain(value)
        out["model_type"] = self.model_type
        return out

    def to_diff_dict(self) -> Dict[str, Any]:
        """:meth:`to_dict` without the generic fields (dtype, return_dict, ...) at their defaults,
        which is what transformers writes to config.json."""
        return {k: v for k, v in self.to_dict().items()
                if not (k in _BASE_DEFAULTS and v == _BASE_DEFAULTS[k])}

    def to_json_string(self, use_diff: bool = True) -> str:
        """JSON with sorted keys and an indent of 2, as transformers writes it; infinity is
        written as ``Infinity``, which every transformers version (and Python's json) reads."""
        data = self.to_diff_dict() if use_diff else self.to_dict()
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    def to_json_file(self, json_file_path: PathLike, use_diff: bool = True) -> None:
        """Writes :meth:`to_json_string` to ``json_file_path``."""
        with open(json_file_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string(use_diff=use_diff))

    def save_pretrained(self, save_directory: PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        """Writes ``config.json`` into ``save_directory`` (created if needed)."""
        if push_to_hub:
            raise ValueError("mamba2c never uploads: push_to_hub is not supported")
        if os.path.isfile(save_directory):
            raise NotADirectoryError(f"{os.fspath(save_directory)!r} should be a directory, not a file")
        self.validate()
        os.makedirs(save_directory, exist_ok=True)
        self.to_json_file(os.path.join(save_directory, CONFIG_NAME))

    @classmethod
    def from_dict(cls, config_dict: Mapping[str, Any], **kwargs: Any) -> Any:
        """Builds a config from a dict such as :meth:`to_dict` returns; ``kwargs`` override it.

        With ``return_unused_kwargs=True`` returns ``(config, unused)`` where ``unused`` holds the
        keyword arguments that are neither fields nor keys of ``config_dict``; otherwise those
        are kept as attributes. ``dtype="auto"`` is ignored, as in transformers.
        """
        if not isinstance(config_dict, Mapping):
            raise TypeError(f"config_dict must be a dict, got {type(config_dict).__name__}")
        return_unused_kwargs = kwargs.pop("return_unused_kwargs", False)
        merged = dict(config_dict)
        unused = {}
        for key, value in kwargs.items():
            if key in ("dtype", "torch_dtype"):
                if isinstance(value, str) and value == "auto":
                    continue
                merged.pop("dtype", None)
                merged.pop("torch_dtype", None)
                merged["dtype"] = value
            elif return_unused_kwargs and key not in _CHECKS and key not in config_dict:
                unused[key] = value
            else:
                merged[key] = value
        config = cls(**merged)
        return (config, unused) if return_unused_kwargs else config

    @classmethod
    def from_json_file(cls, json_file: PathLike) -> "Mamba2Config":
        """Builds a config from a JSON file; errors name the file."""
        path = os.fspath(json_file)
        config_dict = _read_json_object(path)
        try:
            return cls(**config_dict)
        except (ValueError, TypeError) as err:
            raise _naming_file(err, path) from err

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: PathLike, subfolder: str = "",
                        return_unused_kwargs: bool = False, **kwargs: Any) -> Any:
        """Reads ``config.json`` from a local directory (or a config file path).

        Keyword arguments override the file's values (see :meth:`from_dict`). Download options of
        transformers (``cache_dir``, ``revision``, ``token``, ...) are accepted and ignored:
        mamba2c never downloads, and a path that does not exist raises OSError.
        """
        name = os.fspath(pretrained_model_name_or_path)
        if not isinstance(name, str):
            raise TypeError(f"pretrained_model_name_or_path must be a str path, got {type(name).__name__}")
        for key in _HUB_KWARGS:
            kwargs.pop(key, None)
        path = os.path.join(name, subfolder) if subfolder else name
        if os.path.isdir(path):
            config_file = os.path.join(path, CONFIG_NAME)
            if not os.path.isfile(config_file):
                raise OSError(f"{path!r} has no {CONFIG_NAME}; mamba2c never downloads anything, "
                              f"so pass a local directory that holds {CONFIG_NAME}.")
        elif os.path.isfile(path):
            config_file = path
        else:
            raise _not_found(name, path)
        config_dict = _read_json_object(config_file)
        try:
            result = cls.from_dict(config_dict, return_unused_kwargs=return_unused_kwargs, **kwargs)
        except (ValueError, TypeError) as err:
            raise _naming_file(err, config_file) from err
        config = result[0] if return_unused_kwargs else result
        config.name_or_path = name
        return result

    # ------------------------------------------------------------------------- misc

    def update(self, config_dict: Mapping[str, Any]) -> None:
        """Sets several attributes, then checks the relations between fields."""
        for key, value in config_dict.items():
            setattr(self, key, value)
        self.validate()

    def copy(self) -> "Mamba2Config":
        """A deep copy."""
        return copy.deepcopy(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mamba2Config):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"{type(self).__name__} {self.to_json_string()}"

    def _repr_html_(self) -> str:
        """Jupyter's view: the fields of :meth:`to_diff_dict` (what ``repr`` and config.json
        show) as a table."""
        rows = [(key, json.dumps(value, default=repr))
                for key, value in sorted(self.to_diff_dict().items())]
        return html_table(type(self).__name__, rows)


def html_table(title: str, rows: Sequence[Tuple[str, str]]) -> str:
    """A two-column HTML table with a bold title, for the ``_repr_html_`` of config and models."""
    body = "".join(f"<tr><th style='text-align:left'>{html.escape(key)}</th>"
                   f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
                   for key, value in rows)
    return f"<b>{html.escape(title)}</b><table>{body}</table>"


__all__ = ["Mamba2Config", "CONFIG_NAME"]
