"""Decode on the CPU with the weights where mamba2c places them (one buffer on 2 MiB pages from
end to end) against the same weights copied by NumPy's allocator: two mamba2-130m-shaped models
in one process, timed in alternating rounds, so that both see the same machine.

    python benchmarks/bench_pages.py [--dtype float32] [--rounds 21] [--steps 16] [--threads 2]

NumPy advises huge pages for its arrays of 4 MiB or more itself, but its arrays start just past
a page boundary, so only the 2 MiB-aligned inside of each gets them (about 80% of the
130m shape's float32 weights); the rest, and arrays under 4 MiB, stay on 4 KiB pages. Prints
the median ms/token of each and the ratio of the medians. The cache's states are placed by
mamba2c in both (the cache is made by each run).
"""
import argparse
import statistics

import numpy as np

import mamba2c
from bench_forward import SHAPE_130M
from compare_cpu import mamba2c_decode


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    mamba2c.set_num_threads(args.threads)

    config = mamba2c.Mamba2Config(**SHAPE_130M)
    placed = mamba2c.Mamba2ForCausalLM(config, dtype=args.dtype, seed=0)
    copied = mamba2c.Mamba2ForCausalLM(config, dtype=args.dtype, seed=0)
    copied._weights = {name: np.array(w) for name, w in copied._weights.items()}
    copied._drop_engine()
    prompt = np.random.default_rng(0).integers(0, config.vocab_size, size=(1, 16))

    times = {"mamba2c's placement": [], "NumPy's allocation": []}
    for model in (placed, copied):
        mamba2c_decode(model, prompt, 2)()  # warm-up: engine, thread pool
    for _ in range(args.rounds):
        for name, model in (("mamba2c's placement", placed), ("NumPy's allocation", copied)):
            times[name].append(1e3 * mamba2c_decode(model, prompt, args.steps)() / args.steps)
    print(f"mamba2-130m shape, {args.dtype}, batch 1, {args.steps} steps a round, "
          f"{args.rounds} alternating rounds, {args.threads} threads\n")
    print("| weights in | median ms/token | min | max |")
    print("|---|---|---|---|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | "
              f"{max(values):.2f} |")
    ratio = (statistics.median(times["NumPy's allocation"]) /
             statistics.median(times["mamba2c's placement"]))
    print(f"\nNumPy's / mamba2c's median: {ratio:.3f}")


if __name__ == "__main__":
    main()
