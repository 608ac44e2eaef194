"""GPU speed of mamba2c against transformers (and mamba_ssm where it can be imported) on a
Mamba-Codestral-7B-shaped bfloat16 model with random weights, in one run.

    python benchmarks/compare_cuda.py [--repeats 5] [--layers 64] [--skip-transformers]
                                      [--long-prompt 1000000]

The weights are made once, by transformers on the GPU, and mamba2c uses the same tensors in
place (DLPack), so both engines compute the same model. Phases: prefill of 2,048 and 8,192
tokens at batch 1 (the last position's logits, as generation needs), decode steps at batch 1
and 16 on a filled cache (mamba2c: replayed CUDA graphs, logits copied to the host each step),
the first forward after loading against the steady state, and a very long prompt prefilled in
pieces with the peak GPU memory it took. The machine's ceilings (device copy bandwidth, bf16
matrix rate) are measured in the same run.
"""
import argparse
import gc
import json
import statistics
import time

import numpy as np
import torch

import mamba2c

CODESTRAL = dict(hidden_size=4096, num_hidden_layers=64, num_heads=128, head_dim=64,
                 state_size=128, n_groups=8, vocab_size=32768, expand=2, conv_kernel=4,
                 chunk_size=256, tie_word_embeddings=False, residual_in_fp32=True)


def timed(fn, repeats, warmup=1):
    """Median seconds of fn() over `repeats` runs after `warmup`, the GPU drained each time."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ceilings():
    """Device-to-device copy bandwidth (bytes read + written per second) and bf16 matmul rate."""
    n = 2 << 30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy = timed(lambda: b.copy_(a), 10, 3)
    del a, b
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm = timed(lambda: m @ m, 10, 3)
    return {"copy_GBps": 2 * n / copy / 1e9, "bf16_TFLOPs": 2 * 8192 ** 3 / mm / 1e12}


def weight_bytes(model):
    return sum(p.numel() * p.element_size() for p in model.parameters())


def ours_prefill(model, ids):
    return lambda: model(ids, logits_to_keep=1, use_cache=False)


def ours_decode(model, batch, rng):
    """Per-step seconds of mamba2c decode at `batch` on a cache filled by a short prompt."""
    V = model.config.vocab_size
    out = model(rng.integers(0, V, size=(batch, 16)), use_cache=True, logits_to_keep=1)
    cache = out.cache_params
    ids = rng.integers(0, V, size=(batch, 1))
    model._decode_logits(ids, cache)  # eager step, then the graph is captured
    return lambda: model._decode_logits(ids, cache)


def profile_kernels(model, rng):
    """GPU time per kernel (CUPTI, through torch's profiler) of mamba2c's calls."""
    from torch.profiler import ProfilerActivity, profile

    ids = rng.integers(0, model.config.vocab_size, size=(1, 2048))
    step1, step16 = ours_decode(model, 1, rng), ours_decode(model, 16, rng)
    for name, fn in (("prefill 2048", ours_prefill(model, ids)),
                     ("10 decode steps b1", lambda: [step1() for _ in range(10)]),
                     ("10 decode steps b16", lambda: [step16() for _ in range(10)])):
        fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        print(f"--- {name}")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


def hf_prefill(model, ids):
    def run():
        with torch.no_grad():
            model(ids, logits_to_keep=1, use_cache=False)
    return run


def hf_decode(model, batch, rng, device):
    V = model.config.vocab_size
    prompt = torch.from_numpy(rng.integers(0, V, size=(batch, 16))).to(device)
    with torch.no_grad():
        out = model(prompt, use_cache=True, logits_to_keep=1)
    cache = out.cache_params
    token = torch.from_numpy(rng.integers(0, V, size=(batch, 1))).to(device)
    position = torch.tensor([16], device=device)

    def run():
        with torch.no_grad():
            model(token, cache_params=cache, use_cache=True, cache_position=position,
                  logits_to_keep=1)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--layers", type=int, default=64)
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--long-prompt", type=int, default=1_000_000)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--profile", action="store_true",
                        help="print mamba2c's GPU time per kernel for a prefill and decode steps")
    args = parser.parse_args()
    import transformers

    rng = np.random.default_rng(0)
    shape = dict(CODESTRAL, num_hidden_layers=args.layers)
    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "transformers": transformers.__version__, "layers": args.layers,
               "ceilings": ceilings(), "rows": []}
    try:
        import mamba_ssm  # noqa: F401
        results["mamba_ssm"] = "importable but not wired into this script"
    except ImportError as error:
        results["mamba_ssm"] = f"not importable here ({error})"

    torch.manual_seed(0)
    with torch.device("cuda"):
        hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**shape))
    hf = hf.to(torch.bfloat16).eval()
    results["weight_GB"] = weight_bytes(hf) / 1e9

    start = time.perf_counter()
    ours = mamba2c.Mamba2ForCausalLM.from_state_dict(
        mamba2c.Mamba2Config(**shape), hf.state_dict(), dtype="bfloat16", device="cuda")
    ids2k = rng.integers(0, shape["vocab_size"], size=(1, 2048))
    torch.cuda.synchronize()
    first = time.perf_counter()
    ours_prefill(ours, ids2k)()
    torch.cuda.synchronize()
    results["first_forward_s"] = time.perf_counter() - first
    results["load_s"] = first - start

    def add(engine, phase, seconds, tokens):
        results["rows"].append({"engine": engine, "phase": phase, "seconds": seconds,
                                "tokens_per_s": tokens / seconds})
        print(f"{engine:13s} {phase:18s} {seconds * 1e3:10.2f} ms  {tokens / seconds:12.1f} tok/s",
              flush=True)

    for T in (2048, 8192):
        ids = rng.integers(0, shape["vocab_size"], size=(1, T))
        add("mamba2c", f"prefill {T}", timed(ours_prefill(ours, ids), args.repeats), T)
    results["steady_2048_s"] = next(r["seconds"] for r in results["rows"]
                                    if r["phase"] == "prefill 2048")
    for batch in (1, 16):
        add("mamba2c", f"decode b{batch}", timed(ours_decode(ours, batch, rng), 20 * args.repeats),
            batch)

    if args.profile:
        profile_kernels(ours, rng)

    if not args.skip_transformers:
        for T in (2048, 8192):
            ids = torch.from_numpy(rng.integers(0, shape["vocab_size"], size=(1, T))).cuda()
            try:
                add("transformers", f"prefill {T}", timed(hf_prefill(hf, ids), args.repeats), T)
            except torch.OutOfMemoryError:
                results["rows"].append({"engine": "transformers", "phase": f"prefill {T}",
                                        "seconds": None, "note": "out of memory"})
                print(f"transformers prefill {T}: out of memory", flush=True)
            gc.collect()
            torch.cuda.empty_cache()
        for batch in (1, 16):
            try:
                add("transformers", f"decode b{batch}",
                    timed(hf_decode(hf, batch, rng, "cuda"), 3 * args.repeats), batch)
            except Exception as error:  # a transformers API change must not lose our numbers
                results["rows"].append({"engine": "transformers", "phase": f"decode b{batch}",
                                        "seconds": None, "note": repr(error)})
                print(f"transformers decode b{batch}: {error!r}", flush=True)

    if args.long_prompt:
        gc.collect()
        torch.cuda.empty_cache()
        free_before = mamba2c.cuda._cuda.mem_info()[0]
        ids = rng.integers(0, shape["vocab_size"], size=(1, args.long_prompt))
        start = time.perf_counter()
        ours(ids, logits_to_keep=1, use_cache=True)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        # mamba2c's own allocations do not show in torch's counters: read the driver's.
        results["long_prompt"] = {"tokens": args.long_prompt, "seconds": seconds,
                                  "free_before_GB": free_before / 1e9,
                                  "free_after_GB": mamba2c.cuda._cuda.mem_info()[0] / 1e9}
        print(f"long prompt: {args.long_prompt} tokens in {seconds:.1f} s", flush=True)

    print(json.dumps(results, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
