"""Loading and saving models as transformers does: a directory with ``config.json`` and
``model.safetensors`` (or shards named by ``model.safetensors.index.json``).

Loading is zero-copy: a tensor whose dtype is the model's dtype becomes a read-only view of the
memory-mapped file, so a bfloat16 checkpoint stays bfloat16 and nothing is read from disk until
a forward touches it. Everything that can be checked is checked before anything is allocated:
the config's fields, the files' headers, the total parameter count, and each tensor's name,
shape and dtype.
"""
from __future__ import annotations

import json
import os
import re
from typing import (TYPE_CHECKING, Any, ClassVar, Dict, Iterable, List, NamedTuple, Optional,
                    Tuple, Union)

import numpy as np

# modeling imports this module for the mixin, so only the module is bound here; its functions
# are looked up when called.
from . import cuda, hugepages, modeling
from .configuration import CONFIG_NAME, Mamba2Config, _not_found
from .dtypes import convert, dtype_name, from_float32
from .safetensors import (WEIGHTS_INDEX_NAME, WEIGHTS_NAME, _read_index, load_checkpoint_dir,
                          save_sharded)

__all__ = ["CheckpointMixin", "CheckpointError", "CheckpointTensor", "checkpoint_directory",
           "read_checkpoint", "parameter_count", "GENERATION_CONFIG_NAME"]

GENERATION_CONFIG_NAME = "generation_config.json"

PathLike = Union[str, "os.PathLike[str]"]

# progress=None shows a bar only for checkpoints at least this large: smaller ones load or save
# in about a second, where a bar is only noise.
_PROGRESS_BYTES = 1 << 30

# Dtypes the engine stores, and float64, which is converted to one of them.
_FLOAT_DTYPES = ("float32", "bfloat16", "float16", "float64")

# Names listed in full in an error message; a hostile checkpoint may hold millions.
_LISTED_NAMES = 20


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: names, shapes, dtypes or sizes."""


class CheckpointTensor(NamedTuple):
    """One tensor of a checkpoint directory."""

    file: str  # file name inside the directory
    array: np.ndarray  # read-only view of the memory-mapped file (bfloat16 as uint16 bits)
    dtype: str  # "float32", "bfloat16", "int64", ...


def read_checkpoint(directory: PathLike) -> Dict[str, CheckpointTensor]:
    """Every tensor of a checkpoint directory by its name in the file, in file order.

    Headers are validated, but no tensor data is read: the arrays are views of the mappings.
    """
    directory = os.fspath(directory)
    tensors = load_checkpoint_dir(directory)
    if os.path.isfile(os.path.join(directory, WEIGHTS_NAME)):
        files = dict.fromkeys(tensors, WEIGHTS_NAME)
    else:  # load_checkpoint_dir has already validated the index against the shards
        files = _read_index(os.path.join(directory, WEIGHTS_INDEX_NAME))
    return {name: CheckpointTensor(files[name], array, dtype)
            for name, (array, dtype) in tensors.items()}


def parameter_count(config: Mamba2Config, with_lm_head: bool = True) -> int:
    """Parameters the config describes, computed from its sizes alone (so it is cheap even for
    a hostile config with billions of layers). A tied LM head adds nothing."""
    D, I, H, K = config.hidden_size, config.intermediate_size, config.num_heads, config.conv_kernel
    conv, proj = config.conv_dim, config.in_proj_size
    layer = D + 3 * H + conv * K + proj * D + I + D * I  # norm, dt_bias/A_log/D, conv, projections
    if config.use_conv_bias:
        layer += conv
    if config.use_bias:
        layer += proj + D
    total = config.vocab_size * D + config.num_hidden_layers * layer + D
    if with_lm_head and not config.tie_word_embeddings:
        total += config.vocab_size * D
    return total


# ----------------------------------------------------------------------------- helpers

def _listed(names: List[str]) -> str:
    shown = ", ".join(names[:_LISTED_NAMES])
    if len(names) > _LISTED_NAMES:
        shown += f", ... ({len(names) - _LISTED_NAMES} more)"
    return f"[{shown}]"


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:.3g} GB"


def _physical_memory() -> Optional[int]:
    """Bytes of RAM, or None where the platform does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


class _Progress:
    """A tqdm bar when asked for and tqdm is installed; otherwise it does nothing."""

    def __init__(self, enabled: bool, total: int, desc: str, unit: str) -> None:
        self._bar = None
        if enabled:
            try:
                from tqdm.auto import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B")

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def set_total(self, total: int) -> None:
        if self._bar is not None:
            self._bar.total = total

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _wants_progress(progress: Optional[bool], nbytes: int) -> bool:
    return nbytes >= _PROGRESS_BYTES if progress is None else bool(progress)


def checkpoint_directory(path: PathLike) -> str:
    """`path` as a str when it is a directory; otherwise an error saying what to pass instead
    (for a Hugging Face Hub id: how to download it)."""
    directory = os.fspath(path)
    if not isinstance(directory, str):
        raise TypeError(f"the checkpoint path must be a str, got {type(directory).__name__}")
    if os.path.isdir(directory):
        return directory
    if os.path.exists(directory):
        raise NotADirectoryError(f"{directory!r} is a file; from_pretrained needs the directory "
                                 f"that holds {CONFIG_NAME} and {WEIGHTS_NAME}")
    raise _not_found(directory, directory)  # says how to download a hub id


# ----------------------------------------------------------------------------- loading steps

def _tensor_count(config: Mamba2Config, with_lm_head: bool) -> int:
    """Tensors the config describes, computed from its fields alone."""
    per_layer = 9 + config.use_conv_bias + 2 * config.use_bias
    head = with_lm_head and not config.tie_word_embeddings
    return 2 + config.num_hidden_layers * per_layer + head


def _check_size(config: Mamba2Config, with_lm_head: bool,
                tensors: Dict[str, CheckpointTensor], directory: str) -> None:
    """Refuses a config that describes far more than the checkpoint holds (a typo or a hostile
    file) before anything per layer is listed or allocated. A few missing tensors are left to
    the name checks, which say which ones; strict=False initialises them, so what the files
    lack must at least fit in memory."""
    config_path = os.path.join(directory, CONFIG_NAME)
    described = _tensor_count(config, with_lm_head)
    if described > 2 * len(tensors) + 16:
        raise CheckpointError(
            f"{config_path} describes a model of {described:,} tensors "
            f"({config.num_hidden_layers:,} layers), but the checkpoint holds only "
            f"{len(tensors):,}: the config does not match the weights")
    wanted = parameter_count(config, with_lm_head)
    held = sum(t.array.size for t in tensors.values())
    shortfall = (wanted - held) * 2  # bytes, at the smallest dtype the engine stores
    memory = _physical_memory()
    if memory is not None and shortfall > memory:
        raise CheckpointError(
            f"{config_path} describes a model of {wanted:,} parameters, but the checkpoint "
            f"holds only {held:,}: the config does not match the weights (the rest would "
            f"need {_gigabytes(shortfall)}, more than this machine's {_gigabytes(memory)})")


def _bare_model(cls: Any, config: Mamba2Config, dtype: str) -> Any:
    """A model with no weights yet. The constructor would draw a random initialisation first,
    which for a 7B model takes tens of seconds and as many GB of memory."""
    model = cls.__new__(cls)
    model.config = config
    model._dtype = dtype
    model._weights = {}
    model._init_runtime()
    return model


def _match_names(model: Any, tensors: Dict[str, CheckpointTensor], expected: Dict[str, tuple],
                 directory: str) -> Tuple[Dict[str, str], List[str], List[str], List[str]]:
    """Pairs the model's parameters with the checkpoint's tensors. Returns (matched: our name ->
    the file's name, missing: our names, unexpected: the file's names, unused heads: the file's
    names of an LM head that a bare Mamba2Model drops)."""
    matched: Dict[str, str] = {}
    unexpected, unused_heads = [], []
    for key in tensors:
        name = model._unprefix(key)
        if name in expected:
            if name in matched:
                raise CheckpointError(f"{directory}: tensors {matched[name]!r} and {key!r} both "
                                      f"hold {model._prefix(name)}")
            matched[name] = key
        elif name.startswith("lm_head.") and not model._with_lm_head:
            # A backbone loaded from a causal-LM checkpoint: transformers reports the head as
            # unexpected but loads the backbone, so strict does not refuse it either.
            unused_heads.append(key)
        elif name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue  # tied: the embeddings are the head, as in transformers
        else:
            unexpected.append(key)
    missing = [name for name in expected if name not in matched]
    return matched, missing, unexpected, unused_heads


def _check_names(cls: type, missing: List[str], unexpected: List[str],
                 tensors: Dict[str, CheckpointTensor], directory: str) -> None:
    """strict: every parameter from the checkpoint and every tensor used (`missing` holds the
    model's names with the prefix, `unexpected` the file's names)."""
    if not missing and not unexpected:
        return
    parts = []
    if missing:
        parts.append(f"missing {_listed(missing)}")
    if unexpected:
        where = [f"{key} (in {tensors[key].file})" for key in unexpected]
        parts.append(f"unexpected {_listed(where)}")
    raise CheckpointError(f"{directory}: the checkpoint does not match {cls.__name__}: "
                          f"{'; '.join(parts)}. Pass strict=False to load the tensors that match.")


def _check_tensors(matched: Dict[str, str], tensors: Dict[str, CheckpointTensor],
                   expected: Dict[str, tuple], directory: str) -> None:
    """Every matched tensor must have the shape the config asks for and a float dtype."""
    for name, key in matched.items():
        tensor = tensors[key]
        where = f"{os.path.join(directory, tensor.file)}: tensor {key}"
        if tensor.dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{where} has dtype {tensor.dtype}; weights must be float32, "
                                  f"bfloat16, float16 (or float64)")
        if tuple(tensor.array.shape) != expected[name]:
            raise CheckpointError(f"{where} has shape {list(tensor.array.shape)}, but "
                                  f"{CONFIG_NAME} asks for {list(expected[name])}")


def _choose_dtype(requested: Any, arrays: Iterable[CheckpointTensor]) -> str:
    """The model's dtype: the requested one, or for "auto" the dtype holding most of the
    parameter bytes (a few float32 tensors in a bfloat16 checkpoint are converted, not the
    other way round). float64 is not stored, so it becomes float32."""
    if requested is not None and not (isinstance(requested, str) and requested == "auto"):
        return dtype_name(requested)
    nbytes: Dict[str, int] = {}
    for tensor in arrays:
        name = "float32" if tensor.dtype == "float64" else tensor.dtype
        nbytes[name] = nbytes.get(name, 0) + tensor.array.nbytes
    return max(nbytes, key=lambda name: nbytes[name]) if nbytes else "float32"


def _as_weight(tensor: CheckpointTensor, dtype: str) -> np.ndarray:
    """The tensor in the model's dtype: the file's own view when it already is (zero-copy),
    else a converted copy."""
    if tensor.dtype == dtype:
        if tensor.array.flags.aligned:
            return tensor.array
        # A writer that did not align its data (the library always does): the C kernels read
        # whole floats, so give them an aligned copy.
        return np.array(tensor.array)
    return convert(tensor.array, tensor.dtype, dtype)


def _load_matched(matched: Dict[str, str], tensors: Dict[str, CheckpointTensor], dtype: str,
                  progress: Optional[bool]) -> Dict[str, np.ndarray]:
    """The matched tensors in `dtype`, with a progress bar over their bytes (conversions are
    what takes time; views cost nothing)."""
    total = sum(tensors[key].array.nbytes for key in matched.values())
    bar = _Progress(_wants_progress(progress, total), total, "Loading weights", "B")
    weights = {}
    try:
        for name, key in matched.items():
            weights[name] = _as_weight(tensors[key], dtype)
            bar.update(tensors[key].array.nbytes)
    finally:
        bar.close()
    return weights


def _initial_values(config: Mamba2Config, with_lm_head: bool, names: List[str],
                    dtype: str) -> Dict[str, np.ndarray]:
    """A fresh model's initialisation for the missing `names` only, drawn one layer at a time
    (with a one-token vocabulary when the embeddings are not wanted), so a few missing tensors
    never cost a whole model's worth of memory."""
    rng = np.random.default_rng()
    by_layer: Dict[Optional[str], List[str]] = {}
    for name in names:
        match = re.match(r"layers\.(\d+)\.", name)
        by_layer.setdefault(match.group(1) if match else None, []).append(name)
    values = {}
    for layer, group in by_layer.items():
        part = config.copy()
        part.num_hidden_layers = 0 if layer is None else 1
        if layer is not None:
            part.vocab_size = 1
        drawn = modeling.init_weights(part, rng, with_lm_head)
        for name in group:
            values[name] = from_float32(drawn[re.sub(r"^layers\.\d+\.", "layers.0.", name)], dtype)
    return values


# ----------------------------------------------------------------------------- saving steps

def _generation_config(config: Mamba2Config) -> Dict[str, Any]:
    """generation_config.json as transformers 5.17 derives it from a Mamba2 model's config."""
    out: Dict[str, Any] = {"_from_model_config": True}
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, key)
        if value is not None:
            out[key] = value
    out["output_attentions"] = False
    out["output_hidden_states"] = config.output_hidden_states
    if config.output_hidden_states:  # transformers turns this on with any output_* flag
        out["return_dict_in_generate"] = True
    out["use_cache"] = config.use_cache
    return out


def _write_json(path: str, data: Dict[str, Any]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


# ----------------------------------------------------------------------------- the mixin

class CheckpointMixin:
    """``from_pretrained`` and ``save_pretrained`` for Mamba2Model and Mamba2ForCausalLM."""

    if TYPE_CHECKING:  # provided by Mamba2PreTrainedModel
        config: Mamba2Config
        _dtype: str
        _weights: Dict[str, np.ndarray]
        _with_lm_head: ClassVar[bool]

        def _prefix(self, name: str) -> str: ...

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: PathLike, *,
                        config: Optional[Mamba2Config] = None, dtype: Any = "auto",
                        device: Any = "cpu", strict: bool = True,
                        output_loading_info: bool = False, progress: Optional[bool] = None,
                        **kwargs: Any) -> Any:
        """Loads a model from a local checkpoint directory (mamba2c never downloads).

        Reads ``config.json`` (or uses `config`) and ``model.safetensors`` or the shards of
        ``model.safetensors.index.json``. Tensors already in the model's dtype are read-only
        views of the memory-mapped files. `dtype`: "auto" keeps the checkpoint's dtype (the
        one holding most bytes), or "float32", "bfloat16", "float16" to convert. Names may
        carry transformers' ``backbone.`` prefix or not, mamba_ssm's ``embedding.weight`` is
        accepted, and a tied ``lm_head.weight`` may be absent. With `strict`, missing or
        unexpected tensors raise :class:`CheckpointError`; without, the matching ones are
        loaded and the missing ones initialised as in a fresh model. The lists are kept in
        ``model.loading_info`` (and returned with ``output_loading_info=True`` as
        ``(model, loading_info)``). `progress`: a progress bar (tqdm) while loading; None
        shows one for checkpoints of 1 GB or more. Other keyword arguments override config
        fields; transformers' download options are ignored. `device`: "cpu", or "cuda" /
        "cuda:N" to put the weights on that GPU (see :mod:`mamba2c.cuda`).
        """
        device_index = cuda.parse_device("cpu" if device is None else device)
        dtype = kwargs.pop("torch_dtype", dtype)
        directory = checkpoint_directory(pretrained_model_name_or_path)
        if config is None:
            config, unused = Mamba2Config.from_pretrained(directory, return_unused_kwargs=True,
                                                          **kwargs)
        elif not isinstance(config, Mamba2Config):
            raise TypeError(f"config must be a Mamba2Config, got {type(config).__name__}")
        else:
            unused = kwargs
        if unused:
            raise TypeError(f"{cls.__name__}.from_pretrained got unexpected keyword arguments "
                            f"{sorted(unused)}")

        tensors = read_checkpoint(directory)
        _check_size(config, cls._with_lm_head, tensors, directory)
        model = _bare_model(cls, config, "float32")
        expected = modeling.parameter_shapes(config, cls._with_lm_head)
        matched, missing, unexpected, unused_heads = _match_names(model, tensors, expected,
                                                                  directory)
        missing_keys = [model._prefix(name) for name in missing]
        if strict:
            _check_names(cls, missing_keys, unexpected, tensors, directory)
        _check_tensors(matched, tensors, expected, directory)

        model._dtype = _choose_dtype(dtype, (tensors[key] for key in matched.values()))
        weights = _load_matched(matched, tensors, model._dtype, progress)
        if missing:
            weights.update(_initial_values(config, cls._with_lm_head, missing, model._dtype))
        model._weights = {name: weights[name] for name in expected}  # the engine's order
        if device_index is not None:
            model.to(device=f"cuda:{device_index}")
        else:  # converted tensors on huge pages; the file's views stay shared
            hugepages.place_weights(model._weights)

        model.loading_info = {"missing_keys": missing_keys,
                              "unexpected_keys": unexpected + unused_heads,
                              "mismatched_keys": [], "error_msgs": []}
        return (model, model.loading_info) if output_loading_info else model

    @classmethod
    def from_state_dict(cls, config: Mamba2Config, state_dict: Dict[str, Any],
                        dtype: Any = None, device: Any = "cpu") -> Any:
        """A model holding the tensors of `state_dict` (transformers' names; NumPy arrays or
        torch tensors), without drawing a random initialisation first. `dtype`: the storage
        type (default: that of the embeddings). On a GPU, CUDA tensors of that dtype are used
        in place, without a copy, and must stay alive as long as the model."""
        if not isinstance(config, Mamba2Config):
            raise TypeError(f"config must be a Mamba2Config, got {type(config).__name__}")
        if dtype is None:
            key = next((k for k in state_dict if k.endswith("embeddings.weight")), None)
            if key is None:
                raise KeyError("state_dict has no embeddings.weight to take the dtype from")
            dtype = str(getattr(state_dict[key], "dtype", "float32"))
        model = _bare_model(cls, config, dtype_name(dtype))
        model._device = cuda.parse_device("cpu" if device is None else device)
        model.load_state_dict(state_dict, strict=True)
        if model._device is not None:
            cuda.prepare_products(model._device, model._dtype)
        return model

    def save_pretrained(self, save_directory: PathLike, max_shard_size: Union[int, str] = "5GB",
                        *, safe_serialization: bool = True, progress: Optional[bool] = None,
                        push_to_hub: bool = False) -> None:
        """Writes the model as transformers does, so that transformers' ``from_pretrained``
        reads it: ``config.json``, ``generation_config.json`` (causal LM only) and
        ``model.safetensors``, or shards of at most `max_shard_size` ("5GB", "500MB", bytes)
        plus ``model.safetensors.index.json``. A tied ``lm_head.weight`` is not written.

        Each file is written to a temporary name and renamed, so saving over the directory
        the model was loaded from is safe: the model's views keep the old files' mappings,
        whose data stays valid after the rename. `progress`: a bar over the files written;
        None shows one for models of 1 GB or more.
        """
        if push_to_hub:
            raise ValueError("mamba2c never uploads: push_to_hub is not supported")
        if not safe_serialization:
            raise ValueError("mamba2c writes safetensors only (safe_serialization=True)")
        directory = os.fspath(save_directory)
        if os.path.isfile(directory):
            raise NotADirectoryError(f"{directory!r} should be a directory, not a file")
        os.makedirs(directory, exist_ok=True)

        host = self._host_weights()
        tensors = {self._prefix(name): (array, self._dtype) for name, array in host.items()}
        total = sum(array.nbytes for array in host.values())
        bar = _Progress(_wants_progress(progress, total), 0, "Writing model shards", "file")

        def report(done: int, files: int) -> None:  # called once per file written
            bar.set_total(files)
            bar.update(1)

        try:
            save_sharded(tensors, directory, max_shard_size, progress=report)
        finally:
            bar.close()
        self._save_configs(directory)

    def _save_configs(self, directory: str) -> None:
        """config.json with the architecture and dtype filled in, as transformers writes them,
        and for a causal LM the generation config derived from it."""
        config = self.config.copy()
        config.architectures = [type(self).__name__]
        config.dtype = self._dtype
        config.save_pretrained(directory)
        if self._with_lm_head:
            _write_json(os.path.join(directory, GENERATION_CONFIG_NAME), _generation_config(config))
