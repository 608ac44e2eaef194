"""One training step on the CPU: transformers' Mamba-2 with and without mamba2c's kernels.

A step is forward + backward of the causal-LM loss (labels = inputs) of a mamba2-130m-shaped
model (hidden 768, 24 layers, 24 heads of 64, state 128, 1 group, vocab 50288, float32) on a
batch of 4 x 512 tokens, all parameters trainable. Each variant runs in its own process, so
its peak resident memory (getrusage's ru_maxrss) is its own: after building the model, one small
warm-up step, then the measured steps.

    python benchmarks/compare_training.py [--layers 24] [--batch 4] [--tokens 512]
                                          [--threads 2] [--steps 1] [--passive]

--layers shrinks the model: without kernels transformers materialises [B, chunks, Q, Q, H, N]
products in every layer, so on 2 cores one full-size (24-layer) step takes about half an hour
and more than 23 GiB (measured at 1 and 2 layers: ~70 s and ~0.5 GiB more per layer over an
~11 GiB transient); --layers 2 compares both in a few minutes. --passive sets
OMP_WAIT_POLICY=PASSIVE in both processes (OpenMP threads sleep instead of spinning between
parallel regions), which matters when other work shares the cores.
Prints a Markdown table.
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

SHAPE_130M = dict(hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64,
                  state_size=128, n_groups=1, vocab_size=50288, expand=2, conv_kernel=4,
                  chunk_size=256, tie_word_embeddings=True)

VARIANTS = {"transformers": "transformers 5.17 (torch, no kernels)",
            "mamba2c": "transformers + mamba2c kernels"}


def max_rss_bytes():
    # ru_maxrss is in KiB on Linux, in bytes on macOS
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def child(args):
    """Runs one variant and prints its measurements as JSON on the last line."""
    import torch
    import transformers

    import mamba2c

    torch.set_num_threads(args.threads)
    mamba2c.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = transformers.Mamba2Config(**dict(SHAPE_130M, num_hidden_layers=args.layers))
    model = transformers.Mamba2ForCausalLM(config).train()
    if args.child == "mamba2c":
        from mamba2c.torch import use_mamba2c_kernels

        use_mamba2c_kernels(model)
    gen = torch.Generator().manual_seed(0)

    def step(batch, tokens):
        ids = torch.randint(0, config.vocab_size, (batch, tokens), generator=gen)
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        forward = time.perf_counter() - start
        loss.backward()
        return time.perf_counter() - start, forward, loss.item()

    step(1, 64)  # first touch of the thread pools and allocator
    rss_before = max_rss_bytes()
    steps = [step(args.batch, args.tokens) for _ in range(args.steps)]
    best = min(steps)
    print(json.dumps(dict(seconds=best[0], forward=best[1], loss=best[2],
                          peak=max_rss_bytes(), peak_before=rss_before)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=1, help="measured steps (the best counts)")
    parser.add_argument("--passive", action="store_true")
    parser.add_argument("--variants", default="transformers,mamba2c")
    parser.add_argument("--child", choices=list(VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    env = dict(os.environ)
    if args.passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    results = {}
    for name in args.variants.split(","):
        command = [sys.executable, __file__, "--child", name] + [
            f"--{k}={getattr(args, k)}" for k in ("layers", "batch", "tokens", "threads", "steps")]
        run = subprocess.run(command, env=env, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"{name} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        results[name] = json.loads(run.stdout.strip().splitlines()[-1])

    import mamba2c

    gib = 2.0 ** 30
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads, OpenBLAS in mamba2c: {bool(mamba2c.HAS_OPENBLAS)}, "
          f"OMP_WAIT_POLICY={env.get('OMP_WAIT_POLICY', 'unset')}")
    print(f"mamba2-130m shape with {args.layers} layers, float32, batch {args.batch} x "
          f"{args.tokens} tokens, forward + backward of the LM loss, best of {args.steps}\n")
    print("| variant | step (s) | of which forward (s) | loss | peak RSS (GiB) | "
          "peak RSS - after warm-up (GiB) | speed-up |")
    print("|---|---|---|---|---|---|---|")
    base = results.get("transformers", {}).get("seconds")
    for name, r in results.items():
        speedup = f"{base / r['seconds']:.2f}x" if base else "-"
        print(f"| {VARIANTS[name]} | {r['seconds']:.2f} | {r['forward']:.2f} | {r['loss']:.4f} | "
              f"{r['peak'] / gib:.2f} | {(r['peak'] - r['peak_before']) / gib:.2f} | {speedup} |")


if __name__ == "__main__":
    main()
