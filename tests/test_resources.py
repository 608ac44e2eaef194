"""Memory stays flat over many calls: nothing leaks per forward or per decode step."""
import gc
import os

import numpy as np
import pytest

import mamba2c
from conftest import tiny_config_kwargs


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc")
def test_resident_memory_is_flat_over_a_thousand_calls(rng):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(hidden_size=64, head_dim=16))
    model = mamba2c.Mamba2ForCausalLM(config, seed=13)
    ids = rng.integers(0, config.vocab_size, size=(2, 40))

    def calls(n):
        for _ in range(n):
            out = model(input_ids=ids, use_cache=True, output_hidden_states=True, labels=ids)
            cache = out.cache_params
            for _ in range(4):
                model(input_ids=ids[:, :1], cache_params=cache, use_cache=True)

    calls(40)  # arenas, thread pools and allocator caches reach their steady size
    gc.collect()
    before = resident_bytes()
    calls(200)  # 1,000 model calls
    gc.collect()
    growth = resident_bytes() - before
    assert growth < 4 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB"
