"""`python -m mamba2c generate`, with the demo model and with a checkpoint directory."""
import os
import subprocess
import sys

import numpy as np

import mamba2c
from conftest import tiny_config_kwargs


def run_cli(*args, home):
    env = dict(os.environ, MAMBA2C_HOME=str(home), PYTHONPATH=os.pathsep.join(sys.path))
    return subprocess.run([sys.executable, "-m", "mamba2c", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_generate_with_the_demo_model(tmp_path):
    result = run_cli("generate", "--prompt", "Hello", "--max-new-tokens", "8", home=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Hello")
    assert "random weights" in result.stderr
    assert "prefill: 5 tokens" in result.stderr and "decode: 7 tokens" in result.stderr
    # the demo is built once, deterministically: a second run prints the same greedy text
    again = run_cli("generate", "--prompt", "Hello", "--max-new-tokens", "8", home=tmp_path)
    assert again.stdout == result.stdout


def test_generate_with_a_checkpoint_without_tokenizer_streams_token_ids(tmp_path):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(eos_token_id=None))
    model = mamba2c.Mamba2ForCausalLM(config, seed=21)
    model.save_pretrained(tmp_path / "tiny")
    prompt = [3, 1, 4, 1, 5]
    result = run_cli("generate", "--model", str(tmp_path / "tiny"), "--prompt", "3 1 4 1 5",
                     "--max-new-tokens", "6", home=tmp_path)
    assert result.returncode == 0, result.stderr
    shown = [int(t) for t in result.stdout.split()[len(prompt):]]
    want = model.generate(np.array([prompt]), max_new_tokens=6, eos_token_id=None)[0, 5:]
    assert shown == want.tolist()


def test_generate_reports_bad_input(tmp_path):
    missing = run_cli("generate", "--model", str(tmp_path / "nowhere"), home=tmp_path)
    assert missing.returncode == 1 and "nowhere" in missing.stderr
    config = mamba2c.Mamba2Config(**tiny_config_kwargs())
    mamba2c.Mamba2ForCausalLM(config, seed=1).save_pretrained(tmp_path / "tiny")
    words = run_cli("generate", "--model", str(tmp_path / "tiny"), "--prompt", "some words",
                    home=tmp_path)
    assert words.returncode == 1 and "token ids" in words.stderr
