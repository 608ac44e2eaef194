"""One model shared by several Python threads: same results as serial use, and the GIL is free
while the engine computes."""
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import mamba2c
from conftest import tiny_config_kwargs


def test_eight_threads_with_their_own_caches_match_serial_runs(rng):
    config = mamba2c.Mamba2Config(**tiny_config_kwargs(num_hidden_layers=3, chunk_size=4))
    model = mamba2c.Mamba2ForCausalLM(config, seed=11)
    prompts = [rng.integers(0, config.vocab_size, size=(2, 9 + i)) for i in range(8)]

    def run(ids):
        out = model(input_ids=ids, use_cache=True)
        cache = out.cache_params
        steps = [out.logits]
        for t in range(5):
            nxt = steps[-1][:, -1].argmax(-1)[:, None]
            steps.append(model(input_ids=nxt, cache_params=cache, use_cache=True).logits)
        return np.concatenate(steps, axis=1)

    serial = [run(ids) for ids in prompts]
    results = [None] * len(prompts)

    def worker(i):
        for _ in range(3):
            results[i] = run(prompts[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for want, got in zip(serial, results):
        assert np.array_equal(want, got)


def test_gil_is_released_during_a_long_forward():
    config = mamba2c.Mamba2Config(vocab_size=300, hidden_size=128, num_hidden_layers=4,
                                  num_heads=4, head_dim=64, state_size=32, n_groups=1)
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    ids = np.random.default_rng(0).integers(0, 300, size=(2, 4096))
    ticks = 0
    done = threading.Event()

    def count():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0.001)

    counter = threading.Thread(target=count)
    counter.start()
    start = time.perf_counter()
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    elapsed = time.perf_counter() - start
    done.set()
    counter.join()
    # A held GIL would let the counter run only at the call's boundaries.
    assert elapsed > 0.05
    assert ticks >= 10, (ticks, elapsed)


def _forward_in_child(model, ids, queue):
    queue.put(model(input_ids=ids).logits)


def test_fork_after_use_does_not_hang(rng):
    import multiprocessing

    config = mamba2c.Mamba2Config(**tiny_config_kwargs(hidden_size=64, head_dim=16))
    model = mamba2c.Mamba2ForCausalLM(config, seed=12)
    ids = rng.integers(0, config.vocab_size, size=(4, 300))
    want = model(input_ids=ids).logits  # the thread pools now exist in the parent
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_forward_in_child, args=(model, ids, queue))
    child.start()
    got = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert np.allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy, spins", [(None, "300"), ("ACTIVE", None), ("PASSIVE", None)])
def test_openmp_wait_defaults_leave_a_users_policy_alone(policy, spins):
    # GNU OpenMP takes GOMP_SPINCOUNT over OMP_WAIT_POLICY: a spin count set beside a user's
    # ACTIVE policy would make idle threads sleep after all.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(mamba2c.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_root, env.get("PYTHONPATH", "")])
    code = ("import os, mamba2c; "
            "print(os.environ['OMP_WAIT_POLICY'], os.environ.get('GOMP_SPINCOUNT'))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [policy or "PASSIVE", str(spins)]
