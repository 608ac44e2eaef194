"""Mamba2Model and Mamba2ForCausalLM: transformers' API over the C engine.

Weights live in a dict of NumPy arrays under transformers' parameter names (without the
``backbone.`` prefix); the C engine borrows them. A forward is one C call for every layer.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

import numpy as np

from . import _C, cuda, hugepages
from .cache import Mamba2Cache
from .checkpoint import CheckpointMixin
from .configuration import Mamba2Config, html_table
from .cuda import DeviceArray
from .dtypes import STORAGE, as_numpy, convert, dtype_name, from_float32, public_view
from .generation import GenerationMixin
from .outputs import Mamba2CausalLMOutput, Mamba2Output

_Model = TypeVar("_Model", bound="Mamba2PreTrainedModel")

_LAYER_KEYS = (  # the engine's order of a layer's tensors
    "norm.weight", "mixer.in_proj.weight", "mixer.in_proj.bias", "mixer.conv1d.weight",
    "mixer.conv1d.bias", "mixer.dt_bias", "mixer.A_log", "mixer.D", "mixer.norm.weight",
    "mixer.out_proj.weight", "mixer.out_proj.bias",
)


def parameter_shapes(config: Mamba2Config, with_lm_head: bool) -> Dict[str, Tuple[int, ...]]:
    """Every parameter name (transformers', without the backbone prefix) and its shape."""
    D, I, H, K = config.hidden_size, config.intermediate_size, config.num_heads, config.conv_kernel
    conv, proj = config.conv_dim, config.in_proj_size
    shapes: Dict[str, Tuple[int, ...]] = {"embeddings.weight": (config.vocab_size, D)}
    for i in range(config.num_hidden_layers):
        p = f"layers.{i}."
        shapes[p + "norm.weight"] = (D,)
        shapes[p + "mixer.dt_bias"] = (H,)
        shapes[p + "mixer.A_log"] = (H,)
        shapes[p + "mixer.D"] = (H,)
        shapes[p + "mixer.conv1d.weight"] = (conv, 1, K)
        if config.use_conv_bias:
            shapes[p + "mixer.conv1d.bias"] = (conv,)
        shapes[p + "mixer.in_proj.weight"] = (proj, D)
        if config.use_bias:
            shapes[p + "mixer.in_proj.bias"] = (proj,)
        shapes[p + "mixer.norm.weight"] = (I,)
        shapes[p + "mixer.out_proj.weight"] = (D, I)
        if config.use_bias:
            shapes[p + "mixer.out_proj.bias"] = (D,)
    shapes["norm_f.weight"] = (D,)
    if with_lm_head and not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (config.vocab_size, D)
    return shapes


def init_weights(config: Mamba2Config, rng: np.random.Generator, with_lm_head: bool,
                 dtype: str = "float32") -> Dict[str, np.ndarray]:
    """Weights initialised as transformers initialises a fresh Mamba2 model, stored in `dtype`.
    Each tensor is drawn in float32 and converted at once, so a 16-bit model never holds a
    float32 copy of itself."""
    std = np.float32(config.initializer_range)
    H, I, K = config.num_heads, config.intermediate_size, config.conv_kernel

    def uniform(shape, bound):
        return (rng.random(shape, dtype=np.float32) * 2 - 1) * np.float32(bound)

    weights = {}
    for name, shape in parameter_shapes(config, with_lm_head).items():
        if name.endswith(("norm.weight", "norm_f.weight", "mixer.D")):
            value = np.ones(shape, np.float32)
        elif name.endswith("bias") and not name.endswith("dt_bias"):
            value = np.zeros(shape, np.float32)
        elif name.endswith("A_log"):
            value = np.log(np.arange(1, H + 1, dtype=np.float64))
        elif name.endswith("dt_bias"):
            lo, hi = math.log(config.time_step_min), math.log(config.time_step_max)
            dt = np.maximum(np.exp(rng.random(H) * (hi - lo) + lo), config.time_step_floor)
            value = dt + np.log(-np.expm1(-dt))  # inverse softplus
        elif name.endswith("conv1d.weight"):  # kaiming_uniform(a=sqrt(5)): bound 1/sqrt(fan_in)
            value = uniform(shape, 1 / math.sqrt(K))
        elif name.endswith("out_proj.weight"):
            scale = math.sqrt(config.num_hidden_layers) if config.rescale_prenorm_residual else 1
            value = uniform(shape, 1 / math.sqrt(I) / scale)
        else:  # embeddings, in_proj, lm_head
            value = rng.standard_normal(shape, dtype=np.float32) * std
        weights[name] = from_float32(value.astype(np.float32, copy=False), dtype)
    return weights


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _storage(array: np.ndarray, dtype: str) -> np.ndarray:
    """The storage form of a public weight array (bfloat16 as its uint16 bits)."""
    return np.ascontiguousarray(array).view(STORAGE[dtype][0])


def _on_gpu(value: Any, dtype: str) -> bool:
    """Whether `value` is a C-contiguous CUDA array of `dtype` that the engine can read in place."""
    if isinstance(value, DeviceArray):
        return value.dtype == dtype
    if not hasattr(value, "__dlpack_device__") or int(value.__dlpack_device__()[0]) != 2:
        return False
    try:
        return DeviceArray.from_dlpack(value).dtype == dtype
    except (TypeError, ValueError, BufferError):
        return False


def _int_array(value: Any, name: str) -> np.ndarray:
    array, _ = as_numpy(value)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


class Mamba2PreTrainedModel(CheckpointMixin):
    """Shared weight handling of Mamba2Model and Mamba2ForCausalLM.

    ``Mamba2Model(config, dtype="float32", seed=None, device="cpu")`` builds a model with fresh
    weights, initialised as transformers initialises a new Mamba2 model; `seed` (an int) makes
    them reproducible. `dtype` is the storage type of the weights: "float32", "bfloat16" or
    "float16" (NumPy, ml_dtypes and torch dtypes are accepted too); computation is float32
    whatever it is (on a GPU, products of 16-bit weights run on tensor cores with float32
    accumulation). `device`: "cpu", or "cuda" / "cuda:N". Use :meth:`from_pretrained` to load
    a checkpoint instead.
    """

    config_class = Mamba2Config
    base_model_prefix = "backbone"
    main_input_name = "input_ids"
    _with_lm_head = False

    def __init__(self, config: Mamba2Config, dtype: Any = "float32",
                 seed: Optional[int] = None, device: Any = "cpu") -> None:
        if not isinstance(config, Mamba2Config):
            raise TypeError(f"config must be a Mamba2Config, got {type(config).__name__}")
        self.config = config
        self._dtype = dtype_name(dtype)
        self._init_runtime()
        self._weights = init_weights(config, np.random.default_rng(seed), self._with_lm_head,
                                     self._dtype)
        self.to(device=device)

    def _init_runtime(self) -> None:
        self._weights: Dict[str, Any] = {}  # NumPy arrays on the CPU, DeviceArrays on a GPU
        self._engine: Any = None
        self._device: Optional[int] = None  # the GPU index, None on the CPU
        self._decoder: Any = None  # CUDA graphs of decode steps (see cuda_decode.py)
        self.training = False
        #: tokens per piece of a long prompt (0: the engine picks); pieces carry the state forward
        self.prefill_chunk = 0

    def _drop_engine(self) -> None:
        """Forget everything built over the weights (after they change)."""
        self._engine = None
        self._decoder = None

    def _host_weights(self) -> Dict[str, np.ndarray]:
        """The weights as NumPy storage arrays (copied from the GPU when they are there)."""
        if self._device is None:
            return self._weights
        return {k: _storage(v.numpy(), self._dtype) for k, v in self._weights.items()}

    # ---- properties like torch modules ----
    @property
    def dtype(self) -> str:
        """Storage type of the weights: "float32", "bfloat16" or "float16"."""
        return self._dtype

    @property
    def device(self) -> str:
        """Where the weights are and the model computes: "cpu" or "cuda:N"."""
        return "cpu" if self._device is None else f"cuda:{self._device}"

    def eval(self: _Model) -> _Model:
        """Returns the model (it is always in inference mode)."""
        return self

    def train(self: _Model, mode: bool = True) -> _Model:
        """``train(False)`` returns the model; ``train()`` raises NotImplementedError, since
        the model runs inference only (see :mod:`mamba2c.torch` for training kernels)."""
        if mode:
            raise NotImplementedError("mamba2c runs inference only")
        return self

    def to(self: _Model, dtype: Any = None, device: Any = None) -> _Model:
        """Converts the weights to another dtype ("float32", "bfloat16", "float16", or a NumPy,
        ml_dtypes or torch dtype) and/or moves them to a device ("cpu", "cuda", "cuda:N", or a
        torch device), in place, and returns the model. ``to("cuda")`` works as in torch."""
        if dtype is not None and (str(dtype) == "cpu" or str(dtype).startswith("cuda")):
            dtype, device = None, dtype
        target = self._device if device is None else cuda.parse_device(device)
        if dtype is not None and dtype_name(dtype) != self._dtype:
            new = dtype_name(dtype)
            host = self._host_weights()
            self._weights = {k: convert(v, self._dtype, new) for k, v in host.items()}
            self._dtype, self._device = new, None
            self._drop_engine()
        if target != self._device:
            host = self._host_weights()
            if target is None:
                self._weights = host
            else:
                self._weights = {k: DeviceArray.from_numpy(v, self._dtype, target)
                                 for k, v in host.items()}
                cuda.prepare_products(target, self._dtype)
            self._device = target
            self._drop_engine()
        if self._device is None and self._engine is None:  # no engine holds the weights
            hugepages.place_weights(self._weights)  # those made above, or at initialisation
        return self

    def cuda(self: _Model, device: Optional[int] = None) -> _Model:
        """``to("cuda")`` (or ``to(f"cuda:{device}")``)."""
        return self.to(device="cuda" if device is None else f"cuda:{device}")

    def cpu(self: _Model) -> _Model:
        """``to("cpu")``."""
        return self.to(device="cpu")

    def float(self: _Model) -> _Model:
        """``to("float32")``."""
        return self.to("float32")

    def half(self: _Model) -> _Model:
        """``to("float16")``."""
        return self.to("float16")

    def bfloat16(self: _Model) -> _Model:
        """``to("bfloat16")``."""
        return self.to("bfloat16")

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Number of parameters (a tied LM head counts once); `exclude_embeddings` leaves out
        the embeddings and the LM head. `only_trainable` is accepted for transformers'
        signature and changes nothing."""
        names = [k for k in self._weights if not (exclude_embeddings and k.startswith(
            ("embeddings.", "lm_head.")))]
        return int(sum(self._weights[k].size for k in names))

    # ---- state dict ----
    def _prefix(self, name: str) -> str:
        if self._with_lm_head and not name.startswith("lm_head."):
            return "backbone." + name
        return name

    def _unprefix(self, name: str) -> str:
        """Our internal name for a state-dict key, accepting transformers' naming either way round
        and mamba_ssm's `embedding.weight`."""
        if name.startswith("backbone."):
            name = name[len("backbone."):]
        if name == "embedding.weight":
            name = "embeddings.weight"
        return name

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Parameters under transformers' names; bfloat16 ones as ml_dtypes.bfloat16 when that is
        installed (otherwise as their uint16 bits). Read-only views of the model's weights; on
        a GPU, the DeviceArrays holding them."""
        out = {}
        for name, array in self._weights.items():
            if self._device is None:
                array = public_view(array, self._dtype).view()
                array.flags.writeable = False
            out[self._prefix(name)] = array
        if self._with_lm_head and self.config.tie_word_embeddings:
            out["lm_head.weight"] = out["backbone.embeddings.weight"]
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any],
                        strict: bool = True) -> Tuple[List[str], List[str]]:
        """Loads parameters by name (NumPy arrays, torch tensors, ...), converting them to the
        model's dtype. Names may carry transformers' ``backbone.`` prefix or not. Returns
        (missing_keys, unexpected_keys); with `strict`, either being non-empty raises KeyError.
        A wrong shape raises ValueError, integer values TypeError."""
        expected = parameter_shapes(self.config, self._with_lm_head)
        incoming: Dict[str, Any] = {}
        unexpected = []
        for key, value in state_dict.items():
            name = self._unprefix(key)
            if name == "lm_head.weight" and self._with_lm_head and self.config.tie_word_embeddings:
                continue  # tied: the embedding is the head
            if name in expected:
                incoming[name] = value
            else:
                unexpected.append(key)
        missing = [self._prefix(k) for k in expected if k not in incoming]
        if strict and (missing or unexpected):
            raise KeyError(f"state dict does not match the model: missing {missing}, "
                           f"unexpected {unexpected}")
        converted = {}
        for name, value in incoming.items():
            if self._device is not None:
                converted[name] = cuda.to_device(value, self._device, self._dtype)
                if converted[name].shape != expected[name]:
                    raise ValueError(f"{self._prefix(name)} has shape {converted[name].shape}, "
                                     f"expected {expected[name]}")
                continue
            array, src = as_numpy(value)
            if tuple(array.shape) != expected[name]:
                raise ValueError(f"{self._prefix(name)} has shape {tuple(array.shape)}, "
                                 f"expected {expected[name]}")
            if src is None:
                if not np.issubdtype(array.dtype, np.floating):
                    raise TypeError(f"{self._prefix(name)} must hold floats, got {array.dtype}")
                array, src = array.astype(np.float32), "float32"
            converted[name] = np.ascontiguousarray(convert(array, src, self._dtype))
        self._weights.update(converted if self._device is not None
                             else hugepages.place_weights(converted))
        self._drop_engine()
        return missing, unexpected

    # ---- engine ----
    def _weight(self, name: str):
        array = self._weights.get(name)
        if array is None:
            return None
        return (array if self._device is None else array.pointer, STORAGE[self._dtype][1])

    def _get_engine(self):
        if self._engine is None:
            c = self.config
            lo, hi = c.time_step_limit
            engine_config = (
                c.hidden_size, c.num_heads, c.head_dim, c.state_size, c.n_groups, c.conv_kernel,
                c.chunk_size, c.vocab_size, c.num_hidden_layers, float(c.layer_norm_epsilon),
                float(lo), float(min(hi, np.finfo(np.float32).max)),
                c.n_groups if c.norm_groups == "n_groups" else 1,
            )
            layers = []
            for i in range(c.num_hidden_layers):
                layers.append(tuple(self._weight(f"layers.{i}.{k}") for k in _LAYER_KEYS))
            lm_head = None
            if self._with_lm_head:
                lm_head = self._weight("embeddings.weight" if c.tie_word_embeddings
                                       else "lm_head.weight")
            backend = None if self._device is None else cuda._cuda.backend()
            self._engine = _C.Engine(engine_config, self._weight("embeddings.weight"),
                                     self._weight("norm_f.weight"), lm_head, layers, backend)
        return self._engine

    def _prepare_inputs(self, input_ids, inputs_embeds, attention_mask):
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        c = self.config
        if input_ids is not None:
            ids = _int_array(input_ids, "input_ids")
            if ids.ndim != 2:
                raise ValueError(f"input_ids must have shape [batch, tokens], got {ids.shape}")
            B, T = ids.shape
            if ids.size and (ids.min() < 0 or ids.max() >= c.vocab_size):
                bad = ids[(ids < 0) | (ids >= c.vocab_size)][0]
                raise ValueError(f"input_ids holds token id {bad}, outside [0, vocab_size="
                                 f"{c.vocab_size})")
            embeds = None
        elif self._device is not None and _on_gpu(inputs_embeds, "float32"):
            embeds = cuda.to_device(inputs_embeds, self._device)  # used in place, no copy
            if embeds.ndim != 3 or embeds.shape[2] != c.hidden_size:
                raise ValueError(f"inputs_embeds must have shape [batch, tokens, {c.hidden_size}]"
                                 f", got {embeds.shape}")
            B, T = embeds.shape[:2]
            ids = None
        else:
            embeds, _ = as_numpy(inputs_embeds)
            if embeds.ndim != 3 or embeds.shape[2] != c.hidden_size:
                raise ValueError(f"inputs_embeds must have shape [batch, tokens, {c.hidden_size}]"
                                 f", got {embeds.shape}")
            if _ == "bfloat16":
                embeds = convert(embeds, "bfloat16", "float32")
            elif not np.issubdtype(embeds.dtype, np.floating):
                raise TypeError(f"inputs_embeds must hold floats, got {embeds.dtype}")
            embeds = np.ascontiguousarray(embeds, dtype=np.float32)
            B, T = embeds.shape[:2]
            ids = None
        if B == 0 or T == 0:
            raise ValueError(f"the input is empty (batch {B}, tokens {T})")
        mask = None
        if attention_mask is not None:
            m, _ = as_numpy(attention_mask)
            if m.ndim != 2 or m.shape[0] != B or m.shape[1] < T:
                raise ValueError(f"attention_mask must have shape [{B}, {T}] (or [{B}, past + {T}]"
                                 f"), got {m.shape}")
            # Like transformers: the trailing T positions count, and one new token is never padding.
            m = m[:, m.shape[1] - T:].astype(np.float32)
            if T > 1 and not np.all(m == 1):
                mask = np.ascontiguousarray(m)
        return ids, embeds, mask, B, T

    def _run(self, input_ids, inputs_embeds, attention_mask, cache_params, use_cache,
             output_hidden_states, logits_to_keep=None, labels=None):
        """One engine call. Returns (last_hidden, hidden_states, logits, loss, cache)."""
        c = self.config
        ids, embeds, mask, B, T = self._prepare_inputs(input_ids, inputs_embeds, attention_mask)
        use_cache = c.use_cache if use_cache is None else bool(use_cache)
        cache = cache_params
        if cache is not None and not isinstance(cache, Mamba2Cache):
            raise TypeError(f"cache_params must be a Mamba2Cache, got {type(cache).__name__}")
        if cache is not None and cache.batch_size != B:
            raise ValueError(f"cache_params holds {cache.batch_size} sequences, the input {B}")
        if cache is not None and cache.device != self.device:
            raise ValueError(f"cache_params is on {cache.device}, the model on {self.device}")
        if cache is None and use_cache:
            cache = Mamba2Cache(c, B, device=self.device)
        new = self._new_output
        hidden = (new((c.num_hidden_layers + 1, B, T, c.hidden_size))
                  if output_hidden_states else None)
        # The LM head's caller never sees the final hidden state unless it asked for all of them.
        wants_last = hidden is None and logits_to_keep is None
        last = new((B, T, c.hidden_size)) if wants_last else None
        positions = logits = lab = None
        if logits_to_keep is not None:
            positions = self._logit_positions(logits_to_keep, T)
            logits = new((B, positions.size, c.vocab_size))
        if labels is not None:
            lab = _int_array(labels, "labels")
            if lab.shape != (B, T):
                raise ValueError(f"labels must have shape {(B, T)}, got {lab.shape}")
            bad = (lab != -100) & ((lab < 0) | (lab >= c.vocab_size))
            if bad.any():
                raise ValueError(f"labels hold {lab[bad][0]}, outside [0, vocab_size="
                                 f"{c.vocab_size}) and not the ignore index -100")
            if positions is None or positions.size != T:
                raise ValueError("labels need the logits of every position: use logits_to_keep=0")
        buffers = dict(input_ids=ids, inputs_embeds=embeds, attention_mask=mask, labels=lab,
                       conv_states=None if cache is None else cache.conv_states,
                       ssm_states=None if cache is None else cache.ssm_states,
                       last_hidden=last, hidden_states=hidden, logits=logits)
        if self._device is not None:
            cuda._cuda.set_device(self._device)
            placed = {k: None if v is None else cuda.to_device(v, self._device)
                      for k, v in buffers.items()}  # held until the call returns
            buffers = {k: None if v is None else v.pointer for k, v in placed.items()}
        try:
            loss = self._get_engine().forward(
                B, T, **buffers, has_state=cache is not None and cache.has_previous_state,
                logit_positions=positions, want_loss=lab is not None,
                prefill_tokens=int(self.prefill_chunk))
        except KeyboardInterrupt:
            # Stopped between layers: the cache holds some layers' update and not others'.
            if cache is not None:
                cache.reset()
            raise
        if cache is not None:
            cache.has_previous_state = True
            cache.seqlen_offset += T
        if hidden is not None:
            last = hidden[-1]
            hidden = tuple(hidden[i] for i in range(c.num_hidden_layers + 1))
        return last, hidden, logits, loss, cache if use_cache else None

    def _new_output(self, shape: Tuple[int, ...]) -> Any:
        """An uninitialised float32 output the engine fills, where the model computes."""
        if self._device is None:
            return np.empty(shape, np.float32)
        return DeviceArray.empty(shape, "float32", self._device)

    @staticmethod
    def _logit_positions(logits_to_keep, T: int) -> np.ndarray:
        if isinstance(logits_to_keep, np.ndarray):  # sorted unique positions from the LM head
            return logits_to_keep
        if isinstance(logits_to_keep, (int, np.integer)) and not isinstance(logits_to_keep, bool):
            k = int(logits_to_keep)
            if k < 0:
                raise ValueError(f"logits_to_keep must be >= 0, got {k}")
            return np.arange(0 if k == 0 or k >= T else T - k, T, dtype=np.int64)
        raise TypeError("logits_to_keep must be an int or a 1-D array of positions")

    if TYPE_CHECKING:
        def forward(self, *args: Any, **kwargs: Any) -> Any: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Same as :meth:`forward`."""
        return self.forward(*args, **kwargs)

    def __repr__(self) -> str:
        c = self.config
        return (f"{type(self).__name__}(layers={c.num_hidden_layers}, hidden={c.hidden_size}, "
                f"heads={c.num_heads}x{c.head_dim}, state={c.state_size}, groups={c.n_groups}, "
                f"params={self.num_parameters():,}, dtype={self.dtype}, device=cpu, backend=C)")

    def _repr_html_(self) -> str:
        """Jupyter's view: what ``repr`` says, as a table, with the weights' memory."""
        c = self.config
        nbytes = sum(array.nbytes for array in self._weights.values())
        gemm = "OpenBLAS" if _C.HAS_OPENBLAS else "built-in GEMM"
        rows = [
            ("layers", str(c.num_hidden_layers)),
            ("hidden size", str(c.hidden_size)),
            ("heads x head_dim", f"{c.num_heads} x {c.head_dim}"),
            ("state size", str(c.state_size)),
            ("groups", str(c.n_groups)),
            ("vocab size", str(c.vocab_size)),
            ("parameters", f"{self.num_parameters():,}"),
            ("weights", _bytes(nbytes)),
            ("dtype", self.dtype),
            ("device", self.device),
            ("backend", f"C ({gemm}, {_C.get_num_threads()} threads)"),
        ]
        return html_table(type(self).__name__, rows)


class Mamba2Model(Mamba2PreTrainedModel):
    """The Mamba-2 backbone: embeddings, blocks and the final norm."""

    def get_input_embeddings(self) -> np.ndarray:
        """The embedding table [V, D], read-only, in the model's dtype."""
        return self.state_dict()["embeddings.weight"]

    def forward(self, input_ids: Any = None, inputs_embeds: Any = None,
                cache_params: Optional[Mamba2Cache] = None, use_cache: Optional[bool] = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                attention_mask: Any = None, **kwargs: Any) -> Any:
        """Runs every layer in one C call.

        input_ids: [B, T] integers in [0, vocab_size) (NumPy array, nested lists or a torch
          tensor), or inputs_embeds: [B, T, D] floats (used as float32); exactly one of the two.
        attention_mask: [B, T] (or [B, past + T]) of 0/1; zeroes padded positions, as
          transformers does. Ignored for a single new token.
        cache_params: a :class:`Mamba2Cache` to continue from (its state is updated in place).
        use_cache: return the cache (a new one when none was given); default config.use_cache.
        output_hidden_states: also return the L+1 hidden states; default
          config.output_hidden_states.
        return_dict: False returns a tuple of the fields that are set; default
          config.return_dict.

        Returns a :class:`Mamba2Output`: last_hidden_state float32 [B, T, D], cache_params,
        hidden_states. Other keyword arguments are accepted and ignored, as transformers does.
        """
        c = self.config
        output_hidden_states = (c.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = c.return_dict if return_dict is None else return_dict
        last, hidden, _, _, cache = self._run(input_ids, inputs_embeds, attention_mask,
                                              cache_params, use_cache, output_hidden_states)
        if not return_dict:
            return tuple(v for v in (last, cache, hidden) if v is not None)
        return Mamba2Output(last_hidden_state=last, cache_params=cache, hidden_states=hidden)


class Mamba2ForCausalLM(GenerationMixin, Mamba2PreTrainedModel):
    """The Mamba-2 backbone with a language-model head (tied to the embeddings when
    config.tie_word_embeddings)."""

    _with_lm_head = True

    def get_input_embeddings(self) -> np.ndarray:
        """The embedding table [V, D], read-only, in the model's dtype."""
        return self.state_dict()["backbone.embeddings.weight"]

    def get_output_embeddings(self) -> np.ndarray:
        """The LM head [V, D], read-only (the embedding table itself when tied)."""
        return self.state_dict()["lm_head.weight"]

    def forward(self, input_ids: Any = None, inputs_embeds: Any = None,
                cache_params: Optional[Mamba2Cache] = None, labels: Any = None,
                output_hidden_states: Optional[bool] = None, return_dict: Optional[bool] = None,
                use_cache: Optional[bool] = None, attention_mask: Any = None,
                logits_to_keep: Union[int, Iterable[int]] = 0, **kwargs: Any) -> Any:
        """Runs every layer and the LM head in one C call.

        input_ids, inputs_embeds, attention_mask, cache_params, use_cache,
        output_hidden_states, return_dict: as in :meth:`Mamba2Model.forward`.
        labels: [B, T] integers; the loss is the mean cross-entropy of position t predicting
          labels[:, t + 1], skipping labels equal to -100. Needs the logits of every position
          (logits_to_keep=0).
        logits_to_keep: an int k, the logits of the last k positions only (0: all positions),
          or a 1-D sequence of positions (negative ones count from the end, repeats allowed).

        Returns a :class:`Mamba2CausalLMOutput` (with return_dict=False, a tuple of the fields
        that are set): loss (numpy.float32) when labels are given, logits float32 [B, T_kept,
        V], cache_params, hidden_states as in Mamba2Model.
        """
        c = self.config
        output_hidden_states = (c.output_hidden_states if output_hidden_states is None
                                else output_hidden_states)
        return_dict = c.return_dict if return_dict is None else return_dict
        positions, order = logits_to_keep, None
        if not isinstance(logits_to_keep, (int, np.integer)):
            T = self._sequence_length(input_ids, inputs_embeds)
            index = _int_array(logits_to_keep, "logits_to_keep")
            if index.ndim != 1 or index.size == 0 or index.min() < -T or index.max() >= T:
                raise ValueError(f"logits_to_keep positions must be a non-empty 1-D array in "
                                 f"[-{T}, {T}), got {index.tolist()}")
            index = index % T
            unique, order = np.unique(index, return_inverse=True)
            positions = unique
        _, hidden, logits, loss, cache = self._run(
            input_ids, inputs_embeds, attention_mask, cache_params, use_cache,
            output_hidden_states, logits_to_keep=positions, labels=labels)
        if order is not None:
            logits = np.asarray(logits)[:, order]
            if self._device is not None:
                logits = DeviceArray.from_numpy(logits, device=self._device)
        loss = None if loss is None else np.float32(loss)
        if not return_dict:
            out = tuple(v for v in (logits, cache, hidden) if v is not None)
            return ((loss,) + out) if loss is not None else out
        return Mamba2CausalLMOutput(loss=loss, logits=logits, cache_params=cache,
                                    hidden_states=hidden)

    def _decode_logits(self, ids: np.ndarray, cache: Mamba2Cache) -> np.ndarray:
        """generate's step: the logits [B, V] after one new token per row (ids [B, 1]) on a
        filled cache, which it advances. On a GPU, steps on the same cache after the first are
        replayed from a CUDA graph."""
        reuse = (self._device is not None and self._decoder is not None
                 and cache.has_previous_state and self._decoder.serves(cache))
        if not reuse:
            out = self(input_ids=ids, cache_params=cache, use_cache=True, logits_to_keep=1,
                       return_dict=True)
            if self._device is not None:
                # Captured after an eager step, so every buffer the engine makes lazily exists.
                from .cuda_graphs import DecodeGraph

                self._decoder = DecodeGraph(self, cache)
            return np.asarray(out.logits)[:, -1]
        ids = _int_array(ids, "input_ids")
        if ids.shape != (cache.batch_size, 1):
            raise ValueError(f"a decode step takes ids of shape ({cache.batch_size}, 1)")
        if ids.min() < 0 or ids.max() >= self.config.vocab_size:
            raise ValueError(f"input_ids hold a token id outside [0, {self.config.vocab_size})")
        cuda._cuda.set_device(self._device)
        logits = self._decoder.step(ids)
        cache.seqlen_offset += 1
        return logits

    @staticmethod
    def _sequence_length(input_ids, inputs_embeds) -> int:
        source = input_ids if input_ids is not None else inputs_embeds
        shape = np.shape(as_numpy(source)[0]) if source is not None else ()
        if len(shape) < 2:
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        return int(shape[1])
