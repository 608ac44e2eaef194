"""Prefill speed on the CPU: one forward of a mamba2-130m-shaped model (hidden 768, 24 layers,
24 heads of 64, state 128, 1 group, vocab 50288, float32) on 512 tokens, mamba2c against
transformers (torch_forward) with the same random weights, in one run.

    python benchmarks/bench_forward.py [--tokens 512] [--repeats 5] [--threads 2]

Prints a Markdown table of median seconds and tokens/s, and the ratio.
"""
import argparse
import platform
import statistics
import time

import numpy as np

import mamba2c

SHAPE_130M = dict(hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64,
                  state_size=128, n_groups=1, vocab_size=50288, expand=2, conv_kernel=4,
                  chunk_size=256, tie_word_embeddings=True)


def median_seconds(fn, repeats):
    fn()  # warm-up: first-touch of buffers, thread pools
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    config = mamba2c.Mamba2Config(**SHAPE_130M)
    ours = mamba2c.Mamba2ForCausalLM(config, seed=0)
    mamba2c.set_num_threads(args.threads)
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(args.batch, args.tokens))
    rows = [("mamba2c", median_seconds(lambda: ours(input_ids=ids, use_cache=False),
                                       args.repeats))]

    try:
        import torch
        import transformers
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(args.threads)
        hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**SHAPE_130M)).eval()
        hf.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
        tids = torch.from_numpy(ids)

        def run_hf():
            with torch.no_grad():
                hf(input_ids=tids, use_cache=False)

        rows.append((f"transformers {transformers.__version__} (torch {torch.__version__})",
                     median_seconds(run_hf, args.repeats)))

    tokens = args.batch * args.tokens
    print(f"machine: {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"OpenBLAS: {bool(mamba2c.HAS_OPENBLAS)}")
    print(f"mamba2-130m shape, float32, batch {args.batch} x {args.tokens} tokens, "
          f"median of {args.repeats}\n")
    print("| engine | seconds | tokens/s | mamba2c speed-up |")
    print("|---|---|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} | {tokens / seconds:,.0f} | "
              f"{seconds / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
