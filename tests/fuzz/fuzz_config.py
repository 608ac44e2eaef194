#!/usr/bin/env python3
"""Fuzzes ``config.json`` loading: ``Mamba2Config.from_pretrained`` on the input as the file, and
``Mamba2Config.from_dict`` on it when it parses to a JSON object.

Contract: ValueError or TypeError (OSError never: the file is there), or a config that
* passes ``validate()``;
* survives ``to_json_string`` -> ``from_dict`` and ``save_pretrained`` -> ``from_pretrained``
  unchanged;
* when it describes a small model, builds that model and runs a forward and a one-token decode
  on its cache without raising: a config that loads is a model that runs.

    python tests/fuzz/fuzz_config.py [-max_total_time=N] tests/fuzz/corpus/config
"""
from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import instrumented_imports, main  # noqa: E402

with instrumented_imports(__name__):
    import mamba2c  # noqa: E402
    from mamba2c.checkpoint import parameter_count  # noqa: E402

ALLOWED = (ValueError, TypeError)

# Models up to this size are built and run: a millisecond or two each.
MAX_PARAMETERS = 50_000
MAX_LAYERS = 3

_WORK = tempfile.mkdtemp(prefix="fuzz-config-",
                         dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _WORK, ignore_errors=True)
_IN = os.path.join(_WORK, "in")
_OUT = os.path.join(_WORK, "out")
os.makedirs(_IN)


def check_config(config: "mamba2c.Mamba2Config", source: str) -> None:
    """`source` "file": read from config.json, whose special floats ({"__float__": "Infinity"})
    were decoded; "dict": from_dict, which keeps such values as they are, so that only the file
    round trip decodes them and is compared after decoding."""
    config.validate()
    text = config.to_json_string()
    again = mamba2c.Mamba2Config.from_dict(json.loads(text))
    if again.to_json_string() != text:
        raise AssertionError(f"{source}: to_json_string -> from_dict changed the config:\n"
                             f"{text}\n{again.to_json_string()}")
    config.save_pretrained(_OUT)
    loaded = mamba2c.Mamba2Config.from_pretrained(_OUT)
    if source == "dict":
        decoded = mamba2c.Mamba2Config.from_pretrained(_OUT)
        loaded.save_pretrained(_OUT)
        loaded, text = mamba2c.Mamba2Config.from_pretrained(_OUT), decoded.to_json_string()
    if loaded.to_json_string() != text:
        raise AssertionError(f"{source}: save_pretrained -> from_pretrained changed the config")
    if config.num_hidden_layers > MAX_LAYERS or parameter_count(config) > MAX_PARAMETERS:
        return
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    ids = np.arange(5, dtype=np.int64)[None] % config.vocab_size
    out = model(input_ids=ids, use_cache=True)
    if out.logits.shape != (1, 5, config.vocab_size):
        raise AssertionError(f"{source}: logits of shape {out.logits.shape}")
    step = model(input_ids=ids[:, -1:], cache_params=out.cache_params, use_cache=True)
    if step.logits.shape != (1, 1, config.vocab_size):
        raise AssertionError(f"{source}: decode logits of shape {step.logits.shape}")


def TestOneInput(data: bytes) -> None:
    with open(os.path.join(_IN, "config.json"), "wb") as f:
        f.write(data)
    try:
        config = mamba2c.Mamba2Config.from_pretrained(_IN)
    except ALLOWED:
        config = None
    if config is not None:
        check_config(config, "file")
    try:
        parsed = json.loads(data)
    except (ValueError, RecursionError):
        return
    if not isinstance(parsed, dict):
        return
    try:
        config = mamba2c.Mamba2Config.from_dict(parsed)
    except ALLOWED:
        return
    check_config(config, "dict")


if __name__ == "__main__":
    mamba2c.set_num_threads(1)  # many tiny models: threads would only add overhead
    main(TestOneInput)
