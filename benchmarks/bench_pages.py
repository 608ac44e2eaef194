"""Decode on the CPU with the weights on 2 MiB pages (as mamba2c places them) against the same
weights copied onto ordinary 4 KiB pages: two mamba2-130m-shaped models in one process, timed in
alternating rounds, so that both see the same machine.

    python benchmarks/bench_pages.py [--dtype float32] [--rounds 21] [--steps 16] [--threads 2]

Prints the median ms/token of each and the ratio of the medians. The cache's states are on huge
pages in both (the cache is made by each run). On a machine whose transparent huge pages are
"always", the 4 KiB copies may get huge pages too, and the two should then time the same.
"""
import argparse
import statistics
import time

import numpy as np

import mamba2c
from bench_forward import SHAPE_130M


def decode_ms(model, prompt, steps):
    """ms per one-token step, after the prompt (untimed)."""
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    cache = out.cache_params
    start = time.perf_counter()
    for _ in range(steps):
        token = out.logits[:, -1].argmax(-1)[:, None]
        out = model(input_ids=token, cache_params=cache, use_cache=True, logits_to_keep=1)
    return 1e3 * (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    mamba2c.set_num_threads(args.threads)

    config = mamba2c.Mamba2Config(**SHAPE_130M)
    huge = mamba2c.Mamba2ForCausalLM(config, dtype=args.dtype, seed=0)
    small = mamba2c.Mamba2ForCausalLM(config, dtype=args.dtype, seed=0)
    # np.array copies into memory from the ordinary allocator: 4 KiB pages where huge pages
    # are only given when advised.
    small._weights = {name: np.array(w) for name, w in small._weights.items()}
    small._drop_engine()
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, size=(1, 16))

    times = {"2 MiB pages": [], "4 KiB pages": []}
    for model in (huge, small):
        decode_ms(model, prompt, 2)  # warm-up: engine, thread pool
    for _ in range(args.rounds):
        for name, model in (("2 MiB pages", huge), ("4 KiB pages", small)):
            times[name].append(decode_ms(model, prompt, args.steps))
    print(f"mamba2-130m shape, {args.dtype}, batch 1, {args.steps} steps a round, "
          f"{args.rounds} alternating rounds, {args.threads} threads\n")
    print("| weights on | median ms/token | min | max |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
              f"{max(values):.2f} |")
    ratio = statistics.median(times["4 KiB pages"]) / statistics.median(times["2 MiB pages"])
    print(f"\n4 KiB / 2 MiB median: {ratio:.3f}")


if __name__ == "__main__":
    main()
