"""Decode speed on the CPU: milliseconds per generated token for a mamba2-130m-shaped float32
model at batch 1 and batch 8, mamba2c against transformers `generate` with the same random
weights, in one run.

    python benchmarks/bench_decode.py [--new-tokens 32] [--repeats 3] [--threads 2]

Per-token time is (generate N+1 tokens - generate 1 token) / N, so the prefill cancels out.
"""
import argparse
import platform

import numpy as np

import mamba2c
from bench_forward import SHAPE_130M, median_seconds


def per_token_ms(generate, new_tokens, repeats):
    long = median_seconds(lambda: generate(new_tokens + 1), repeats)
    short = median_seconds(lambda: generate(1), repeats)
    return 1000 * (long - short) / new_tokens


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    args = parser.parse_args()

    config = mamba2c.Mamba2Config(**SHAPE_130M)
    ours = mamba2c.Mamba2ForCausalLM(config, seed=0)
    mamba2c.set_num_threads(args.threads)
    try:
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**SHAPE_130M)).eval()
        hf.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()})
    except ImportError:
        hf = None

    rows = []
    for batch in args.batches:
        ids = np.random.default_rng(batch).integers(0, config.vocab_size,
                                                    size=(batch, args.prompt_tokens))
        # No eos: every run generates exactly the number of tokens asked for.
        mine = per_token_ms(lambda n: ours.generate(ids, max_new_tokens=n, min_new_tokens=n,
                                                    do_sample=False), args.new_tokens,
                            args.repeats)
        theirs = None
        if hf is not None:
            tids = torch.from_numpy(ids)

            def run_hf(n):
                with torch.no_grad():
                    hf.generate(tids, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                pad_token_id=0)

            theirs = per_token_ms(run_hf, args.new_tokens, args.repeats)
        rows.append((batch, mine, theirs))

    print(f"machine: {platform.machine()}, {args.threads} threads; mamba2-130m shape, float32; "
          f"prompt {args.prompt_tokens} tokens, {args.new_tokens} new tokens, median of "
          f"{args.repeats}\n")
    print("| batch | mamba2c ms/step | transformers ms/step | speed-up |")
    print("|---|---|---|---|")
    for batch, mine, theirs in rows:
        other = f"{theirs:.1f}" if theirs is not None else "–"
        ratio = f"{theirs / mine:.1f}x" if theirs is not None else "–"
        print(f"| {batch} | {mine:.1f} | {other} | {ratio} |")


if __name__ == "__main__":
    main()
