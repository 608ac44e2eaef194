"""Weights and decode states on transparent huge pages (mamba2c/hugepages.py)."""
import mmap
import os

import numpy as np
import pytest

import mamba2c
from mamba2c import hugepages

linux_advice = pytest.mark.skipif(
    not hasattr(mmap, "MADV_HUGEPAGE") or not os.path.exists("/proc/self/smaps"),
    reason="madvise(MADV_HUGEPAGE) and /proc/self/smaps are Linux's")


def advised_huge(array: np.ndarray) -> bool:
    """Whether the mapping holding `array` carries the huge-page advice ("hg" in VmFlags)."""
    address = array.__array_interface__["data"][0]
    inside = False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(part, 16) for part in head.split("-"))
                inside = lo <= address < hi
            elif inside and head == "VmFlags:":
                return "hg" in line.split()[1:]
    raise AssertionError("the array's mapping is not in /proc/self/smaps")


@linux_advice
def test_large_zeros_are_advised_and_small_ones_are_not():
    big = hugepages.zeros((3, hugepages.HUGE_PAGE_BYTES // 4), np.float32)
    assert big.shape == (3, hugepages.HUGE_PAGE_BYTES // 4) and big.dtype == np.float32
    assert big.flags.writeable and big.flags.c_contiguous and not big.any()
    assert advised_huge(big)
    small = hugepages.zeros((16,), np.float16)
    assert small.dtype == np.float16 and not small.any()
    big[1, 7] = 5.0  # writable memory of its own
    assert big.sum() == 5.0


@linux_advice
def test_place_weights_copies_writable_large_arrays_and_shares_the_rest(rng):
    large = rng.normal(size=(1024, 1024)).astype(np.float32)  # 4 MiB
    shared = rng.normal(size=(1024, 1024)).astype(np.float32)
    shared.flags.writeable = False
    small = rng.normal(size=(64,)).astype(np.float32)
    weights = {"large": large, "shared": shared, "small": small}
    placed = hugepages.place_weights(weights)
    assert placed is weights
    assert placed["large"] is not large and advised_huge(placed["large"])
    np.testing.assert_array_equal(placed["large"], large)
    assert placed["shared"] is shared and placed["small"] is small


@linux_advice
def test_model_weights_and_cache_states_on_huge_pages(rng):
    config = mamba2c.Mamba2Config(vocab_size=4096, hidden_size=256, num_hidden_layers=2,
                                  num_heads=8, head_dim=64, state_size=128, n_groups=1)
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    assert advised_huge(model._weights["embeddings.weight"])  # 4 MiB of float32
    out = model(rng.integers(0, 4096, size=(4, 5)), use_cache=True)
    assert advised_huge(out.cache_params.ssm_states)  # 2 layers x 4 x 8 x 64 x 128 floats
    half = model.to("bfloat16")
    assert advised_huge(half._weights["embeddings.weight"])  # converted: placed again


@linux_advice
def test_checkpoint_views_stay_shared_and_conversions_are_placed(tmp_path):
    config = mamba2c.Mamba2Config(vocab_size=4096, hidden_size=256, num_hidden_layers=1,
                                  num_heads=8, head_dim=64, state_size=16, n_groups=1)
    mamba2c.Mamba2ForCausalLM(config, seed=0).save_pretrained(tmp_path)
    same = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)  # float32 file, float32 model
    view = same._weights["embeddings.weight"]
    assert not view.flags.writeable and not advised_huge(view)  # the file's own pages
    converted = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path, dtype="float16")
    assert advised_huge(converted._weights["embeddings.weight"])
