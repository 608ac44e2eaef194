"""Ctrl-C during a long forward returns control quickly and leaves the model usable."""
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, signal, threading, time
    import numpy as np
    import mamba2c

    config = mamba2c.Mamba2Config(vocab_size=500, hidden_size=256, num_hidden_layers=8,
                                  num_heads=8, head_dim=64, state_size=64, n_groups=1)
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    ids = np.random.default_rng(0).integers(0, 500, size=(4, 16384))
    cache = mamba2c.Mamba2Cache(config, 4)
    threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
    start = time.perf_counter()
    try:
        model(input_ids=ids, cache_params=cache, use_cache=True, logits_to_keep=1)
        print("FINISHED", time.perf_counter() - start)
    except KeyboardInterrupt:
        print("INTERRUPTED", time.perf_counter() - start)
    assert not cache.has_previous_state and not cache.ssm_states.any()
    want = model(input_ids=ids[:, :7]).logits
    again = model(input_ids=ids[:, :7], cache_params=cache, use_cache=True).logits
    assert np.array_equal(want, again)
    print("USABLE")
""")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigint_stops_a_long_prefill_within_a_second():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                            env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert words[0] == "INTERRUPTED", result.stdout
    assert float(words[1]) < 0.5 + 1.0
    assert words[-1] == "USABLE"
