"""The work tools/valgrind.sh runs under valgrind: a tiny model through every path that
allocates in C (engine, arenas, carried state, errors inside the engine, the backward kernels'
scratch), twice, so that a leak per call shows up as more than one block."""
import os
import sys
import tempfile

import numpy as np

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import mamba2c  # noqa: E402
from mamba2c import ops  # noqa: E402

config = mamba2c.Mamba2Config(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_heads=8,
                              head_dim=4, state_size=6, n_groups=2, conv_kernel=4, chunk_size=8)
rng = np.random.default_rng(0)
ids = rng.integers(2, config.vocab_size, size=(2, 21))

for _ in range(2):
    model = mamba2c.Mamba2ForCausalLM(config, seed=0)
    out = model(input_ids=ids, labels=ids, use_cache=True, output_hidden_states=True)
    cache = out.cache_params
    for t in range(3):  # decode on the cache
        model(input_ids=ids[:, t:t + 1], cache_params=cache, use_cache=True)
    model.prefill_chunk = 5  # several pieces: the engine's carried state
    model(input_ids=ids, use_cache=False, logits_to_keep=1)
    model.prefill_chunk = 0
    model.generate(ids[:, :4], max_new_tokens=5)
    model.generate(ids[:, :4], max_new_tokens=3, do_sample=True, seed=1, use_cache=False)
    with tempfile.TemporaryDirectory() as directory:
        model.save_pretrained(directory, max_shard_size="8KB")
        loaded = mamba2c.Mamba2ForCausalLM.from_pretrained(directory)
        assert np.array_equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
        half = mamba2c.Mamba2ForCausalLM.from_pretrained(directory, dtype="bfloat16")
        half(input_ids=ids[:, :3])
        del loaded, half
    # an error raised inside the engine, once its buffers are held
    engine = model._get_engine()
    try:
        engine.forward(2, 21, input_ids=np.full((2, 21), 99, np.int64))
    except ValueError:
        pass
    # the kernels on their own, forward and backward
    x = rng.standard_normal((3, 5, 16)).astype(np.float32)
    ops.rmsnorm(x, np.ones(16, np.float32))
    ops.rmsnorm_backward(x, x, np.ones(16, np.float32))
    ssd = dict(x=rng.standard_normal((1, 9, 2, 4)), dt=rng.random((1, 9, 2)), A=-rng.random(2),
               B=rng.standard_normal((1, 9, 1, 3)), C=rng.standard_normal((1, 9, 1, 3)),
               D=np.ones(2), chunk_size=4)
    y, _ = ops.ssd_chunked(**ssd)
    ops.ssd_chunked_backward(y, **ssd)
    ops.cross_entropy_with_grad(rng.standard_normal((2, 4, 7)), rng.integers(0, 7, (2, 4)))
    del model, out, cache, engine
print("valgrind workload done")
