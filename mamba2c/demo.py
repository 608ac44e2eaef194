"""The demo checkpoint: a small Mamba-2 with random weights and a byte tokenizer, built
deterministically on first use so that `mamba2c generate` runs with nothing downloaded."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any, Dict

from .configuration import Mamba2Config
from .tokenizer import BYTE_TOKENIZER_FILE

DEMO_NAME = "demo-v1"
DEMO_CONFIG: Dict[str, Any] = dict(vocab_size=264, hidden_size=256, num_hidden_layers=4, num_heads=8,
                   head_dim=64, state_size=64, n_groups=2, expand=2, conv_kernel=4,
                   chunk_size=64, bos_token_id=256, eos_token_id=257, pad_token_id=258,
                   tie_word_embeddings=True)


def cache_root() -> str:
    """$MAMBA2C_HOME, else $XDG_CACHE_HOME/mamba2c, else ~/.cache/mamba2c."""
    if os.environ.get("MAMBA2C_HOME"):
        return os.environ["MAMBA2C_HOME"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mamba2c")


def demo_directory() -> str:
    """The demo checkpoint's directory, built there (atomically) if it does not exist yet."""
    from .modeling import Mamba2ForCausalLM

    target = os.path.join(cache_root(), DEMO_NAME)
    if os.path.isfile(os.path.join(target, "config.json")):
        return target
    os.makedirs(cache_root(), exist_ok=True)
    scratch = tempfile.mkdtemp(prefix=DEMO_NAME + ".", dir=cache_root())
    try:
        model = Mamba2ForCausalLM(Mamba2Config(**DEMO_CONFIG), seed=0)
        model.save_pretrained(scratch)
        with open(os.path.join(scratch, BYTE_TOKENIZER_FILE), "w") as f:
            json.dump({"type": "bytes", "offset": 0}, f)
        try:
            os.rename(scratch, target)
        except OSError:  # another process built it first
            if not os.path.isfile(os.path.join(target, "config.json")):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target
