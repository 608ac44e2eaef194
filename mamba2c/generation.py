"""Text generation for the causal LM: greedy decoding and sampling with transformers' semantics.

``GenerationMixin.generate`` follows ``transformers.GenerationMixin.generate`` (5.x) for the options
it supports: the same defaults, the same order and arithmetic of the logits processors, the same
stopping and padding rules. Everything runs in NumPy over the C engine; transformers and torch are
only used, when installed, to accept their objects.
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Union

import numpy as np

from .dtypes import as_numpy
from .outputs import ModelOutput

if TYPE_CHECKING:
    from .configuration import Mamba2Config

# Supported options and transformers' global defaults for them (GenerationConfig's
# `_get_default_generation_params`). Options a layer leaves at None fall through to these.
_DEFAULTS: dict[str, Any] = {
    "max_length": 20,
    "max_new_tokens": None,
    "min_length": 0,
    "min_new_tokens": None,
    "do_sample": False,
    "temperature": 1.0,
    "top_k": 50,
    "top_p": 1.0,
    "repetition_penalty": 1.0,
    "bos_token_id": None,
    "eos_token_id": None,
    "pad_token_id": None,
    "num_return_sequences": 1,
    "use_cache": True,
    "return_dict_in_generate": False,
    "output_scores": False,
    "output_logits": False,
}

# transformers options (GenerationConfig fields and generate() arguments) that change the result
# and are not implemented here, with the value at which they do nothing. Any other value raises.
_UNSUPPORTED: dict[str, Any] = {
    "num_beams": 1, "num_beam_groups": 1, "diversity_penalty": 0.0, "penalty_alpha": None,
    "dola_layers": None, "constraints": None, "force_words_ids": None, "typical_p": 1.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "min_p": None, "top_h": None,
    "no_repeat_ngram_size": 0, "encoder_no_repeat_ngram_size": 0,
    "encoder_repetition_penalty": 1.0, "bad_words_ids": None, "sequence_bias": None,
    "suppress_tokens": None, "begin_suppress_tokens": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "remove_invalid_values": False,
    "exponential_decay_length_penalty": None, "renormalize_logits": False, "guidance_scale": 1.0,
    "watermarking_config": None, "stop_strings": None, "max_time": None, "token_healing": False,
    "output_attentions": False, "output_hidden_states": False, "prompt_lookup_num_tokens": None,
    "assistant_early_exit": None, "is_assistant": False, "use_mtp": False,
    "cache_implementation": None, "cache_config": None, "low_memory": False,
    "prefill_chunk_size": None, "continuous_batching_config": None, "speculation_type": None,
    "assistant_model": None, "assistant_tokenizer": None, "tokenizer": None,
    "logits_processor": None, "stopping_criteria": None, "prefix_allowed_tokens_fn": None,
    "negative_prompt_ids": None, "negative_prompt_attention_mask": None, "custom_generate": None,
    "synced_gpus": False, "inputs_embeds": None, "cache_params": None, "past_key_values": None,
}

# transformers options that have no effect on greedy decoding or sampling of single sequences
# (beam-search or assistant tuning, compilation, bookkeeping): accepted and ignored.
_NO_EFFECT = frozenset({
    "length_penalty", "early_stopping", "num_assistant_tokens", "num_assistant_tokens_schedule",
    "assistant_confidence_threshold", "assistant_lookbehind", "target_lookbehind",
    "max_matching_ngram_size", "assistant_ensemble_weight", "decoder_start_token_id",
    "max_cache_len", "compile_config", "disable_compile", "return_legacy_cache",
    "trust_remote_code", "transformers_version", "logits_to_keep",
})


@dataclass(repr=False)
class GenerateDecoderOnlyOutput(ModelOutput):
    """What ``generate(..., return_dict_in_generate=True)`` returns, as transformers'
    ``GenerateDecoderOnlyOutput``.

    sequences: int64 [B * num_return_sequences, prompt + new]; scores: with ``output_scores``,
    one float32 [rows, V] array per step, the processed logits the token was chosen from;
    logits: with ``output_logits``, the raw float32 logits per step; past_key_values: with
    ``use_cache``, the Mamba2Cache after every token of ``sequences`` but the last one.
    """

    sequences: Optional[np.ndarray] = None
    scores: Optional[tuple] = None
    logits: Optional[tuple] = None
    attentions: Optional[tuple] = None
    hidden_states: Optional[tuple] = None
    past_key_values: Any = None


@dataclass(frozen=True)
class _Settings:
    """Validated options of one generate call, with the lengths resolved for its prompt."""

    max_length: int
    min_length: int
    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    repetition_penalty: float
    eos: Optional[np.ndarray]  # 1-D int64, None: no stopping on a token
    pad: Optional[int]  # fills finished rows; also marks padding in a prompt without a mask
    num_return_sequences: int
    use_cache: bool
    return_dict: bool
    output_scores: bool
    output_logits: bool


# ----------------------------------------------------------------------------- options

def _as_option_dict(source: Any, what: str) -> dict[str, Any]:
    """The options a GenerationConfig, dict or None sets; None values count as unset."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        items = dict(source)
    elif callable(getattr(source, "to_dict", None)):  # transformers.GenerationConfig
        items = source.to_dict()
    else:
        raise TypeError(f"{what} must be a transformers GenerationConfig, a dict or None, "
                        f"got {type(source).__name__}")
    return {k: v for k, v in items.items() if v is not None and not str(k).startswith("_")}


def _check_known(options: Mapping[str, Any], what: str) -> None:
    for name in options:
        if name not in _DEFAULTS and name not in _UNSUPPORTED and name not in _NO_EFFECT:
            raise ValueError(f"generate() got an unknown option {name!r} (from {what}); "
                             f"supported options: {', '.join(sorted(_DEFAULTS))}")


def _model_defaults(model: Any) -> dict[str, Any]:
    """The model's own defaults: its config's special tokens, then its `generation_config`
    (a dict from generation_config.json, or a GenerationConfig), as transformers does."""
    config = model.config
    defaults = {name: getattr(config, name, None)
                for name in ("bos_token_id", "eos_token_id", "pad_token_id")}
    defaults = {k: v for k, v in defaults.items() if v is not None}
    stored = _as_option_dict(getattr(model, "generation_config", None), "model.generation_config")
    # A file may carry entries of a newer transformers: ignore what we do not know there.
    defaults.update({k: v for k, v in stored.items()
                     if k in _DEFAULTS or k in _UNSUPPORTED or k in _NO_EFFECT})
    return defaults


def _merge_options(model: Any, generation_config: Any,
                   kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
    """Options by priority: kwargs > generation_config > model defaults > transformers' global
    defaults. Also whether max_length was left at its global default: transformers then reads it
    as 20 *new* tokens rather than a total length."""
    model_layer = _model_defaults(model)
    given = _as_option_dict(generation_config, "generation_config")
    _check_known(given, "generation_config")
    _check_known(kwargs, "keyword arguments")
    # In kwargs, None means "use the default", except eos_token_id=None: no stopping on eos.
    explicit = {k: v for k, v in kwargs.items() if v is not None or k == "eos_token_id"}
    options = dict(_DEFAULTS)
    for layer in (model_layer, given, explicit):
        options.update(layer)
    default_max_length = not any("max_length" in layer for layer in (model_layer, given, explicit))
    return options, default_max_length


def _is_inert(value: Any, inert: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, (list, tuple, dict)) and len(value) == 0:
        return True  # e.g. an empty LogitsProcessorList
    if isinstance(value, (bool, numbers.Number, str)) and isinstance(inert, (bool, numbers.Number)):
        return value == inert
    return False


def _reject_unsupported(options: Mapping[str, Any]) -> None:
    for name, inert in _UNSUPPORTED.items():
        value = options.get(name)
        if not _is_inert(value, inert):
            shown = value if isinstance(value, (bool, numbers.Number, str)) else type(value).__name__
            raise NotImplementedError(
                f"generate() does not support {name}={shown!r}: mamba2c implements greedy decoding "
                f"and sampling (with temperature, top_k, top_p, repetition_penalty, min_length/"
                f"min_new_tokens); leave {name} unset or at {inert!r}")


# ----------------------------------------------------------------------------- validation

def _int_option(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _real_option(name: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _bool_option(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} ({value!r})")
    return bool(value)


def _token_option(name: str, value: Any, vocab_size: int) -> int:
    token = _int_option(name, value, 0)
    if token >= vocab_size:
        raise ValueError(f"{name}={token} is outside the vocabulary [0, {vocab_size})")
    return token


def _eos_option(value: Any, vocab_size: int) -> Optional[np.ndarray]:
    """eos_token_id as a 1-D array of ids (None: generation only stops at the length limit)."""
    if value is None:
        return None
    values = [value] if isinstance(value, numbers.Integral) else list(np.ravel(as_numpy(value)[0]))
    if not values:
        return None
    ids = [_token_option(f"eos_token_id[{i}]" if len(values) > 1 else "eos_token_id", v,
                         vocab_size) for i, v in enumerate(values)]
    return np.asarray(ids, dtype=np.int64)


def _lengths(options: Mapping[str, Any], default_max_length: bool,
             prompt_length: int) -> tuple[int, int]:
    """(max_length, min_length) in total tokens, prompt included, as transformers resolves them:
    max_new_tokens wins over max_length; an unset max_length means 20 new tokens; min_new_tokens
    wins over min_length."""
    if options["max_new_tokens"] is not None:
        max_length = prompt_length + _int_option("max_new_tokens", options["max_new_tokens"], 0)
    else:
        max_length = _int_option("max_length", options["max_length"], 1)
        if default_max_length:
            max_length += prompt_length
        elif max_length <= prompt_length:
            raise ValueError(f"the prompt has {prompt_length} tokens but max_length is "
                             f"{max_length}: raise max_length or set max_new_tokens")
    if options["min_new_tokens"] is not None:
        min_length = prompt_length + _int_option("min_new_tokens", options["min_new_tokens"], 0)
    else:
        min_length = _int_option("min_length", options["min_length"], 0)
    return max_length, min_length


def _sampling_options(options: Mapping[str, Any], do_sample: bool) -> tuple[float, int, float]:
    """(temperature, top_k, top_p), checked; temperature only matters, and is only checked, when
    sampling (greedy decoding with temperature 0 is a common way to ask for argmax)."""
    temperature = _real_option("temperature", options["temperature"])
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature must be > 0 when sampling, got {temperature}; for greedy "
                         "decoding set do_sample=False")
    top_k = _int_option("top_k", options["top_k"], 0)
    top_p = _real_option("top_p", options["top_p"])
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    return temperature, top_k, top_p


def _settings(options: Mapping[str, Any], default_max_length: bool, prompt_length: int,
              vocab_size: int) -> _Settings:
    _reject_unsupported(options)
    do_sample = _bool_option("do_sample", options["do_sample"])
    temperature, top_k, top_p = _sampling_options(options, do_sample)
    penalty = _real_option("repetition_penalty", options["repetition_penalty"])
    if penalty <= 0:
        raise ValueError(f"repetition_penalty must be > 0, got {penalty}")
    num_return = _int_option("num_return_sequences", options["num_return_sequences"], 1)
    if num_return > 1 and not do_sample:
        raise ValueError(f"num_return_sequences={num_return} needs do_sample=True: greedy "
                         "decoding would return the same sequence each time")
    eos = _eos_option(options["eos_token_id"], vocab_size)
    pad = options["pad_token_id"]
    if pad is None and eos is not None:  # as transformers: pad falls back to the first eos
        pad = int(eos[0])
    elif eos is not None:  # it fills finished rows, which later steps may feed to the model
        pad = _token_option("pad_token_id", pad, vocab_size)
    elif pad is not None:  # only used to infer a mask from the prompt
        pad = _int_option("pad_token_id", pad, 0)
    max_length, min_length = _lengths(options, default_max_length, prompt_length)
    return _Settings(
        max_length=max_length, min_length=min_length, do_sample=do_sample,
        temperature=temperature, top_k=top_k, top_p=top_p, repetition_penalty=penalty,
        eos=eos, pad=pad, num_return_sequences=num_return,
        use_cache=_bool_option("use_cache", options["use_cache"]),
        return_dict=_bool_option("return_dict_in_generate", options["return_dict_in_generate"]),
        output_scores=_bool_option("output_scores", options["output_scores"]),
        output_logits=_bool_option("output_logits", options["output_logits"]))


# ----------------------------------------------------------------------------- inputs

def _prompt(input_ids: Any, bos_token_id: Any, vocab_size: int) -> np.ndarray:
    """The prompt as int64 [B, T]; without input_ids, a single bos token as transformers does."""
    if input_ids is None:
        if bos_token_id is None:
            raise ValueError("generate() needs input_ids (no bos_token_id to start from)")
        input_ids = [[_token_option("bos_token_id", bos_token_id, vocab_size)]]
    ids, _ = as_numpy(input_ids)
    if ids.dtype == np.bool_ or not np.issubdtype(ids.dtype, np.integer):
        raise TypeError(f"input_ids must hold integers, got dtype {ids.dtype}")
    if ids.ndim != 2:
        raise ValueError(f"input_ids must have shape [batch, tokens], got shape {ids.shape}")
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"input_ids is empty (shape {ids.shape})")
    bad = (ids < 0) | (ids >= vocab_size)
    if bad.any():
        raise ValueError(f"input_ids holds token id {ids[bad][0]}, outside [0, vocab_size="
                         f"{vocab_size})")
    return np.array(ids, dtype=np.int64)  # a copy: the caller's array is never touched


def _attention_mask(attention_mask: Any, prompt: np.ndarray,
                    settings: _Settings) -> Optional[np.ndarray]:
    """The prompt's 0/1 mask as int64 [B, T], or None when every position counts. Without a
    mask, transformers infers one from pad tokens in the prompt when pad is not an eos token."""
    if attention_mask is None:
        pad = settings.pad
        if pad is None or not (prompt == pad).any() or (
                settings.eos is not None and pad in settings.eos):
            return None
        mask = (prompt != pad).astype(np.int64)
    else:
        mask, _ = as_numpy(attention_mask)
        if mask.shape != prompt.shape:
            raise ValueError(f"attention_mask must have the shape of input_ids {prompt.shape}, "
                             f"got {mask.shape}")
        if not np.isin(mask, (0, 1)).all():
            raise ValueError("attention_mask must hold only 0 (padding) and 1 (token)")
        mask = np.array(mask, dtype=np.int64)
    if prompt.shape[0] > 1 and (mask[:, -1] == 0).any():
        import warnings

        warnings.warn("right padding detected: Mamba-2 generation needs left padding "
                      "(padding_side='left') for correct results", UserWarning, stacklevel=3)
    return None if mask.all() else mask


def _make_rng(seed: Any, generator: Any) -> np.random.Generator:
    """The NumPy generator sampling draws from: `seed` (an int or a Generator) or `generator`."""
    if seed is not None and generator is not None:
        raise ValueError("pass either seed or generator, not both")
    source = seed if seed is not None else generator
    if source is None:
        return np.random.default_rng()
    if isinstance(source, np.random.Generator):
        return source
    if isinstance(source, numbers.Integral) and not isinstance(source, bool):
        return np.random.default_rng(int(source))
    raise TypeError(f"seed/generator must be an int or a numpy.random.Generator, got "
                    f"{type(source).__name__}")


# ----------------------------------------------------------------------------- logits processors
# Each follows the transformers class named in its docstring, in float32 like transformers.

def repetition_penalty(scores: np.ndarray, sequences: np.ndarray, penalty: float) -> np.ndarray:
    """RepetitionPenaltyLogitsProcessor: every token already in the row (prompt and padding
    included), once: negative scores times the penalty, positive ones divided by it."""
    rows = np.arange(scores.shape[0])[:, None]
    seen = scores[rows, sequences]
    p = np.float32(penalty)
    out = scores.copy()
    out[rows, sequences] = np.where(seen < 0, seen * p, seen / p)
    return out


def suppress_eos(scores: np.ndarray, eos: np.ndarray) -> np.ndarray:
    """MinLengthLogitsProcessor / MinNewTokensLengthLogitsProcessor: eos cannot be chosen."""
    out = scores.copy()
    out[:, eos] = -np.inf
    return out


def temperature_scale(scores: np.ndarray, temperature: float) -> np.ndarray:
    """TemperatureLogitsWarper."""
    return scores / np.float32(temperature)


def top_k_filter(scores: np.ndarray, top_k: int) -> np.ndarray:
    """TopKLogitsWarper (min_tokens_to_keep=1): scores below the k-th largest become -inf (ties
    with it are kept)."""
    k = min(top_k, scores.shape[-1])
    kth = -np.partition(-scores, k - 1, axis=-1)[:, k - 1:k]
    return np.where(scores < kth, np.float32(-np.inf), scores)


def top_p_filter(scores: np.ndarray, top_p: float) -> np.ndarray:
    """TopPLogitsWarper (min_tokens_to_keep=1): drop the least likely tokens whose cumulative
    probability stays <= 1 - top_p, always keeping the most likely one."""
    order = np.argsort(scores, axis=-1, kind="stable")  # ascending, as transformers sorts
    sorted_scores = np.take_along_axis(scores, order, axis=-1)
    probs = _softmax(sorted_scores).astype(np.float32)
    # torch accumulates a float32 cumsum in double on the CPU; doing the same keeps the cut-off
    # on the same token.
    cumulative = np.cumsum(probs, axis=-1, dtype=np.float64).astype(np.float32)
    remove_sorted = cumulative <= np.float32(1 - top_p)
    remove_sorted[:, -1] = False
    remove = np.empty_like(remove_sorted)
    np.put_along_axis(remove, order, remove_sorted, axis=-1)
    return np.where(remove, np.float32(-np.inf), scores)


def _softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def process_logits(logits: np.ndarray, sequences: np.ndarray, settings: _Settings) -> np.ndarray:
    """The scores a token is chosen from: transformers' processors in transformers' order
    (repetition penalty, eos suppression below the minimum length, then, when sampling,
    temperature, top-k and top-p)."""
    scores = logits
    if settings.repetition_penalty != 1.0:
        scores = repetition_penalty(scores, sequences, settings.repetition_penalty)
    if settings.eos is not None and sequences.shape[1] < settings.min_length:
        scores = suppress_eos(scores, settings.eos)
    if settings.do_sample:
        if settings.temperature != 1.0:
            scores = temperature_scale(scores, settings.temperature)
        if settings.top_k != 0:
            scores = top_k_filter(scores, settings.top_k)
        if settings.top_p < 1.0:
            scores = top_p_filter(scores, settings.top_p)
    return scores


def choose_tokens(scores: np.ndarray, rng: Optional[np.random.Generator]) -> np.ndarray:
    """Argmax without a generator, else one draw per row from softmax(scores)."""
    if rng is None:
        return np.argmax(scores, axis=-1).astype(np.int64)
    probs = _softmax(scores.astype(np.float64))
    cdf = np.cumsum(probs, axis=-1)
    # Inverse CDF: the first token whose cumulative probability passes the draw. Tokens of zero
    # probability add nothing to the CDF, so they can never be the first to pass it.
    draws = rng.random(scores.shape[0]) * cdf[:, -1]
    tokens = (cdf <= draws[:, None]).sum(axis=-1)
    return np.minimum(tokens, scores.shape[-1] - 1).astype(np.int64)


# ----------------------------------------------------------------------------- model steps

class _Runner:
    """Feeds the model during generation. With the cache: the prompt once (with its mask), then
    one token per step. Without: the whole sequence each step, its mask grown by a column of ones."""

    def __init__(self, model: Any, mask: Optional[np.ndarray], use_cache: bool):
        self.model = model
        self.mask = mask
        self.use_cache = use_cache
        self.cache = None

    def _logits(self, **inputs: Any) -> np.ndarray:
        out = self.model(**inputs, use_cache=self.use_cache, logits_to_keep=1, return_dict=True,
                         output_hidden_states=False)
        if self.use_cache:
            self.cache = out.cache_params
        return np.asarray(out.logits)[:, -1]

    def prefill(self, prompt: np.ndarray) -> np.ndarray:
        return self._logits(input_ids=prompt, attention_mask=self.mask)

    def advance(self, sequences: np.ndarray) -> np.ndarray:
        """Logits after the last token of `sequences` (the tokens so far)."""
        if self.use_cache:  # decode steps run without a mask, as transformers' do
            return self.model._decode_logits(sequences[:, -1:], self.cache)
        if self.mask is not None:
            self.mask = np.concatenate([self.mask, np.ones((len(self.mask), 1), np.int64)], 1)
        return self._logits(input_ids=sequences, attention_mask=self.mask)


# ----------------------------------------------------------------------------- listeners

def _is_streamer(obj: Any) -> bool:
    return callable(getattr(obj, "put", None)) and callable(getattr(obj, "end", None))


class _Listeners:
    """Who hears about progress: a streamer (put the prompt, put each new token column, end), a
    plain callback (each new token column) and a tqdm bar."""

    def __init__(self, streamer: Any, progress: bool, total: int):
        self.streamer = self.callback = None
        if streamer is not None:
            if _is_streamer(streamer):
                self.streamer = streamer
            elif callable(streamer):
                self.callback = streamer
            else:
                raise TypeError("streamer must have put() and end() methods or be a callable "
                                f"taking the new token ids, got {type(streamer).__name__}")
        self.bar = _progress_bar(total) if progress else None

    def prompt(self, ids: np.ndarray) -> None:
        if self.streamer is not None:
            self.streamer.put(ids.copy())

    def step(self, tokens: np.ndarray) -> None:
        if self.streamer is not None:
            self.streamer.put(tokens.copy())
        if self.callback is not None:
            self.callback(tokens.copy())
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.streamer is not None:  # also after an error, so that a reading thread wakes up
            self.streamer.end()


def _progress_bar(total: int) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the bar is a nicety: no tqdm, no bar
        return None
    return tqdm(total=total, unit="tok", desc="generate")


# ----------------------------------------------------------------------------- the loop

def _decode(model: Any, prompt: np.ndarray, mask: Optional[np.ndarray], settings: _Settings,
            rng: Optional[np.random.Generator],
            listeners: _Listeners) -> tuple[np.ndarray, list, list, Any]:
    """Generates until every row has produced an eos token or the length limit; finished rows are
    filled with pad. Returns (sequences, scores, raw logits, cache)."""
    sequences = prompt
    scores: list = []
    raw: list = []
    listeners.prompt(prompt)
    if settings.max_length <= prompt.shape[1]:  # max_new_tokens=0
        return sequences, scores, raw, None
    runner = _Runner(model, mask, settings.use_cache)
    unfinished = np.ones(prompt.shape[0], dtype=bool)
    logits = runner.prefill(prompt)
    while True:
        processed = process_logits(logits, sequences, settings)
        tokens = choose_tokens(processed, rng)
        if settings.eos is not None:
            tokens = np.where(unfinished, tokens, settings.pad)
            unfinished &= ~np.isin(tokens, settings.eos)
        sequences = np.concatenate([sequences, tokens[:, None]], axis=1)
        if settings.output_scores:
            scores.append(np.array(processed, dtype=np.float32))
        if settings.output_logits:
            raw.append(np.array(logits, dtype=np.float32))
        listeners.step(tokens)
        if not unfinished.any() or sequences.shape[1] >= settings.max_length:
            return sequences, scores, raw, runner.cache
        logits = runner.advance(sequences)


class GenerationMixin:
    """Adds ``generate`` to a causal LM whose call returns ``.logits`` and ``.cache_params``."""

    if TYPE_CHECKING:  # provided by the model class
        config: "Mamba2Config"

    def generate(self, input_ids: Any = None, attention_mask: Any = None,
                 generation_config: Any = None,
                 streamer: Union[Any, Callable[[np.ndarray], None], None] = None,
                 seed: Union[int, np.random.Generator, None] = None,
                 **kwargs: Any) -> Union[np.ndarray, GenerateDecoderOnlyOutput]:
        """Generates token ids after a prompt, as ``transformers`` ``generate`` does for greedy
        decoding and multinomial sampling.

        Inputs:
          input_ids: the prompt, [batch, tokens] ints (NumPy array, nested lists or a torch
            tensor; ``inputs=`` is accepted too). Batched prompts of different lengths must be
            left-padded. Without input_ids, generation starts from ``bos_token_id``.
          attention_mask: [batch, tokens] of 0 (padding) and 1 (token). With the cache only the
            prompt pass uses it (one-token steps need none); without the cache every re-run
            does, grown by a 1 per new token. Without it, a mask is inferred from
            ``pad_token_id`` tokens in the prompt when pad is not also an eos token.
          generation_config: a ``transformers.GenerationConfig``, a dict of the options below,
            or None. Options it leaves unset come from the model's ``generation_config``
            attribute (a dict read from generation_config.json, when present), then from the
            model config's special tokens, then from transformers' global defaults. Keyword
            arguments override all of these.
          streamer: an object with ``put(ids)`` and ``end()`` (e.g. transformers' TextStreamer
            or TextIteratorStreamer): ``put`` gets the prompt [rows, tokens] once, then every new
            token column [rows] as an int64 NumPy array, and ``end()`` is called when generation
            stops (also after an error or Ctrl-C). Or a plain callable ``callback(token_ids)``,
            called with each new token column [rows].
          seed: an int or a ``numpy.random.Generator`` for sampling (``generator=`` is the same);
            without either, sampling draws fresh entropy. Ignored by greedy decoding.

        Options (keyword arguments or generation_config entries; None means the default):
          max_new_tokens: how many tokens to add at most (0 returns the prompt). Wins over
            max_length.
          max_length: the longest a row may get, prompt included. Without it (and without
            max_new_tokens) 20 new tokens are generated, as in transformers 5.
          min_new_tokens / min_length: eos cannot be chosen before this many new tokens / this
            total length (min_new_tokens wins).
          do_sample: False (default) picks the most likely token; True samples from the scores.
          temperature: divides the logits when sampling (default 1.0; must be > 0).
          top_k: when sampling, keep only the k most likely tokens (default 50, as transformers;
            0 turns it off).
          top_p: when sampling, keep the smallest set of most likely tokens whose probability
            reaches top_p (default 1.0: off; must be in (0, 1]).
          repetition_penalty: > 0; tokens already in the row (prompt included) get their score
            divided by it when positive and multiplied when negative (1.0: off). Applies to
            greedy decoding too.
          eos_token_id: an id or a list of ids that end a row (default: the config's; None
            turns stopping on eos off). Generation stops when every row has ended.
          pad_token_id: fills rows that have ended (default: the config's, else the first eos).
          num_return_sequences: samples per prompt (needs do_sample=True); the prompt rows are
            repeated with ``np.repeat``, so the output holds each prompt's samples together.
          use_cache: True (default) runs the prompt once and then one token per step on the
            recurrent state; False re-runs the whole sequence every step (same result, slower).
          return_dict_in_generate: return a GenerateDecoderOnlyOutput instead of the array.
          output_scores: with return_dict_in_generate, ``.scores`` holds the processed scores
            of every step, one float32 [rows, vocab] array each.
          output_logits: with return_dict_in_generate, ``.logits`` holds the raw logits of
            every step.
          progress: True shows a tqdm progress bar when tqdm is installed.
          Other transformers options (num_beams > 1, assistant models, logits_processor,
          stopping_criteria, no_repeat_ngram_size, min_p, ...) raise NotImplementedError;
          unknown names raise ValueError.

        Returns:
          int64 NumPy array [batch * num_return_sequences, prompt + new tokens], or with
          return_dict_in_generate a GenerateDecoderOnlyOutput (``sequences``, ``scores``,
          ``logits``, ``past_key_values``: the cache after every token but the last).

        Ctrl-C (KeyboardInterrupt) stops generation and is re-raised; the model stays usable,
        since each call works on a cache of its own.
        """
        kwargs = dict(kwargs)
        if "inputs" in kwargs:  # transformers' name for the prompt
            if input_ids is not None:
                raise ValueError("pass the prompt as input_ids or inputs, not both")
            input_ids = kwargs.pop("inputs")
        generator = kwargs.pop("generator", None)
        progress = _bool_option("progress", kwargs.pop("progress", False))
        vocab_size = self.config.vocab_size
        options, default_max_length = _merge_options(self, generation_config, kwargs)
        prompt = _prompt(input_ids, options["bos_token_id"], vocab_size)
        settings = _settings(options, default_max_length, prompt.shape[1], vocab_size)
        mask = _attention_mask(attention_mask, prompt, settings)
        rng = _make_rng(seed, generator) if settings.do_sample else None
        repeats = settings.num_return_sequences
        prompt = np.repeat(prompt, repeats, axis=0)
        mask = None if mask is None else np.repeat(mask, repeats, axis=0)
        listeners = _Listeners(streamer, progress, settings.max_length - prompt.shape[1])
        try:
            sequences, scores, raw, cache = _decode(self, prompt, mask, settings, rng, listeners)
        finally:
            listeners.close()
        if not settings.return_dict:
            return sequences
        return GenerateDecoderOnlyOutput(
            sequences=sequences,
            scores=tuple(scores) if settings.output_scores else None,
            logits=tuple(raw) if settings.output_logits else None,
            past_key_values=cache)
