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


def mapping_of(array: np.ndarray):
    """(start, end, VmFlags) of the mapping holding `array`, from /proc/self/smaps."""
    address = array.__array_interface__["data"][0]
    found = None
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(part, 16) for part in head.split("-"))
                found = (lo, hi) if lo <= address < hi else None
            elif found and head == "VmFlags:":
                return found + (line.split()[1:],)
    raise AssertionError("the array's mapping is not in /proc/self/smaps")


def huge_end_to_end(array: np.ndarray) -> bool:
    """Whether the huge pages that `array` touches all lie inside one mapping advised huge, so
    that Linux can back the array with huge pages from its first byte to its last."""
    lo, hi, flags = mapping_of(array)
    start = array.__array_interface__["data"][0]
    first = start - start % hugepages.HUGE_PAGE_BYTES
    last = first + -(-(start + array.nbytes - first) // hugepages.HUGE_PAGE_BYTES) * \
        hugepages.HUGE_PAGE_BYTES
    return "hg" in flags and lo <= first and last <= hi


@linux_advice
def test_large_zeros_are_advised_and_small_ones_are_not():
    big = hugepages.zeros((3, hugepages.HUGE_PAGE_BYTES // 4), np.float32)
    assert big.shape == (3, hugepages.HUGE_PAGE_BYTES // 4) and big.dtype == np.float32
    assert big.flags.writeable and big.flags.c_contiguous and not big.any()
    assert huge_end_to_end(big)
    small = hugepages.zeros((16,), np.float16)
    assert small.dtype == np.float16 and not small.any()
    big[1, 7] = 5.0  # writable memory of its own
    assert big.sum() == 5.0


@linux_advice
@pytest.mark.parametrize("rows", [1024, 1100])  # 4 MiB, and past a huge page's end
def test_large_zeros_start_on_a_huge_page(rows):
    big = hugepages.zeros((rows, 1024), np.float32)
    assert big.__array_interface__["data"][0] % hugepages.HUGE_PAGE_BYTES == 0
    assert huge_end_to_end(big)


@linux_advice
def test_place_weights_packs_writable_arrays_into_one_buffer_and_shares_the_rest(rng):
    # odd sizes, so that the arrays after the first start inside a huge page
    large = rng.normal(size=(1000, 1030)).astype(np.float32)
    shared = rng.normal(size=(1024, 1024)).astype(np.float32)
    shared.flags.writeable = False
    small = rng.normal(size=(67,)).astype(np.float16)
    second = rng.normal(size=(600, 999)).astype(np.float32)
    weights = {"large": large, "shared": shared, "small": small, "second": second}
    originals = {name: array.copy() for name, array in weights.items()}
    placed = hugepages.place_weights(weights)
    assert placed is weights and placed["shared"] is shared
    for name in ("large", "small", "second"):
        assert placed[name] is not originals[name] and huge_end_to_end(placed[name])
        assert placed[name].dtype == originals[name].dtype and placed[name].flags.writeable
        assert placed[name].__array_interface__["data"][0] % hugepages.WEIGHT_ALIGNMENT == 0
        np.testing.assert_array_equal(placed[name], originals[name])
    assert len({mapping_of(placed[name])[:2] for name in ("large", "small", "second")}) == 1
    again = dict(placed)
    assert all(again[name] is placed[name] for name in hugepages.place_weights(again))


@linux_advice
def test_place_weights_leaves_less_than_a_huge_page_alone(rng):
    weights = {"a": rng.normal(size=(64, 64)).astype(np.float32), "b": np.ones(3, np.float16)}
    kept = dict(weights)
    hugepages.place_weights(weights)
    assert all(weights[name] is kept[name] for name in kept)


@linux_advice
def test_model_weights_and_cache_states_on_huge_pages(rng):
    config = mamba2c.Mamba2Config(vocab_size=4096, hidden_size=256, num_hidden_layers=2,
                                  num_heads=8, head_dim=64, state_size=128, n_groups=1)
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    assert huge_end_to_end(model._weights["embeddings.weight"])  # 4 MiB of float32
    out = model(rng.integers(0, 4096, size=(4, 5)), use_cache=True)
    assert huge_end_to_end(out.cache_params.ssm_states)  # 2 layers x 4 x 8 x 64 x 128 floats
    half = model.to("bfloat16")
    assert huge_end_to_end(half._weights["embeddings.weight"])  # converted: placed again


@linux_advice
def test_checkpoint_views_stay_shared_and_conversions_are_placed(tmp_path):
    config = mamba2c.Mamba2Config(vocab_size=4096, hidden_size=256, num_hidden_layers=1,
                                  num_heads=8, head_dim=64, state_size=16, n_groups=1)
    mamba2c.Mamba2ForCausalLM(config, seed=0).save_pretrained(tmp_path)
    same = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path)  # float32 file, float32 model
    view = same._weights["embeddings.weight"]
    assert not view.flags.writeable and not huge_end_to_end(view)  # the file's own pages
    converted = mamba2c.Mamba2ForCausalLM.from_pretrained(tmp_path, dtype="float16")
    assert huge_end_to_end(converted._weights["embeddings.weight"])
