"""The ``mamba2c`` command line: ``python -m mamba2c SUBCOMMAND ...``.

A subcommand is one function taking the parsed arguments and returning an exit status,
registered with the :func:`command` decorator, which names it and declares its arguments::

    @command("hello", "print a greeting", argument("--name", default="world"))
    def hello(args: argparse.Namespace) -> int:
        print(f"hello {args.name}")
        return 0
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

Handler = Callable[[argparse.Namespace], int]


class _Command(NamedTuple):
    name: str
    help: str
    arguments: Tuple[Tuple[tuple, dict], ...]
    handler: Handler


_COMMANDS: List[_Command] = []


def argument(*flags: str, **options: Any) -> Tuple[tuple, dict]:
    """One argument of a subcommand, in ``ArgumentParser.add_argument``'s terms."""
    return flags, options


def command(name: str, help: str, *arguments: Tuple[tuple, dict]) -> Callable[[Handler], Handler]:
    """Registers the decorated function as subcommand `name`."""
    def register(handler: Handler) -> Handler:
        _COMMANDS.append(_Command(name, help, arguments, handler))
        return handler
    return register


# ----------------------------------------------------------------------------- info

def _size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _print_build() -> None:
    import mamba2c

    print(f"mamba2c {mamba2c.__version__}")
    print(f"OpenBLAS: {'yes' if mamba2c.HAS_OPENBLAS else 'no (built-in GEMM)'}")
    print(f"threads: {mamba2c.get_num_threads()}")


def _print_checkpoint(directory: str) -> None:
    from .checkpoint import checkpoint_directory, parameter_count, read_checkpoint
    from .configuration import Mamba2Config
    from .safetensors import WEIGHTS_INDEX_NAME, WEIGHTS_NAME

    checkpoint_directory(directory)
    config = Mamba2Config.from_pretrained(directory)
    tensors = read_checkpoint(directory)

    print(f"checkpoint: {directory}")
    print("config:")
    for key, value in sorted(config.to_diff_dict().items()):
        print(f"  {key}: {value}")

    with_lm_head = config.architectures != ["Mamba2Model"]
    held = sum(t.array.size for t in tensors.values())
    print(f"parameters: {held:,} in {len(tensors)} tensors")
    described = parameter_count(config, with_lm_head)
    if described != held:
        print(f"  (config.json describes {described:,})")

    by_dtype: Dict[str, List[int]] = {}
    for tensor in tensors.values():
        count = by_dtype.setdefault(tensor.dtype, [0, 0, 0])
        count[0] += 1
        count[1] += tensor.array.size
        count[2] += tensor.array.nbytes
    print("dtypes:")
    for dtype, (n, size, nbytes) in sorted(by_dtype.items(), key=lambda item: -item[1][2]):
        print(f"  {dtype}: {n} tensors, {size:,} parameters, {_size(nbytes)}")

    print("files:")
    names = sorted(set(t.file for t in tensors.values()))
    if not os.path.isfile(os.path.join(directory, WEIGHTS_NAME)):
        names.append(WEIGHTS_INDEX_NAME)  # the shards were read through it
    total = 0
    for name in names:
        nbytes = os.path.getsize(os.path.join(directory, name))
        total += nbytes
        print(f"  {name}: {_size(nbytes)} ({nbytes:,} bytes)")
    print(f"  total: {_size(total)}")


@command("info", "print a checkpoint's config, parameter count, dtypes and file sizes; "
                 "without a directory, the build (version, OpenBLAS, threads)",
         argument("directory", nargs="?", help="a local checkpoint directory"))
def info(args: argparse.Namespace) -> int:
    if args.directory is None:
        _print_build()
    else:
        _print_checkpoint(args.directory)
    return 0


# ----------------------------------------------------------------------------- generate

def _parse_ids(text: str) -> list:
    try:
        return [int(tok) for tok in text.replace(",", " ").split()]
    except ValueError:
        raise ValueError("this checkpoint has no tokenizer: give the prompt as token ids, "
                         "e.g. --prompt '1 2 3'") from None


@command("generate", "stream text from a checkpoint (default: a small demo model with random "
                     "weights, built on first use)",
         argument("--model", help="a local checkpoint directory (default: the demo model)"),
         argument("--prompt", default="The state space model",
                  help="the prompt text (token ids when the checkpoint has no tokenizer)"),
         argument("--max-new-tokens", type=int, default=64, help="tokens to generate at most"),
         argument("--temperature", type=float, default=None,
                  help="sample with this temperature (default: greedy)"),
         argument("--top-k", type=int, default=None,
                  help="sample from the k most likely tokens (default: greedy)"),
         argument("--top-p", type=float, default=None,
                  help="sample from the most likely tokens whose probability reaches p "
                       "(default: greedy)"),
         argument("--seed", type=int, default=None, help="random seed for sampling"),
         argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16"),
         argument("--threads", type=int, default=0, help="CPU threads (0: all cores)"))
def generate(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    import mamba2c
    from .tokenizer import load_tokenizer

    directory = args.model
    if directory is None:
        from .demo import demo_directory

        directory = demo_directory()
        print(f"[demo model at {directory}: random weights, so the text is noise]",
              file=sys.stderr)
    if args.threads:
        mamba2c.set_num_threads(args.threads)
    model = mamba2c.Mamba2ForCausalLM.from_pretrained(directory, dtype=args.dtype)
    tokenizer = load_tokenizer(directory)
    prompt = tokenizer.encode(args.prompt) if tokenizer else _parse_ids(args.prompt)
    if not prompt:
        raise ValueError("the prompt is empty")
    decoder = tokenizer.decoder() if tokenizer else None
    sampling = any(v is not None for v in (args.temperature, args.top_k, args.top_p))
    options = dict(max_new_tokens=args.max_new_tokens, do_sample=sampling, seed=args.seed)
    for name in ("temperature", "top_k", "top_p"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)

    print(args.prompt, end="", flush=True)
    times = []

    def show(token_ids: np.ndarray) -> None:
        times.append(time.perf_counter())
        token = int(token_ids[0])
        print(decoder.add([token]) if decoder else f" {token}", end="", flush=True)

    start = time.perf_counter()
    model.generate(np.array([prompt]), streamer=show, **options)
    print()
    if times:
        prefill = times[0] - start
        decode = times[-1] - times[0]
        steps = len(times) - 1
        rate = f"{steps / decode:.1f} tokens/s" if steps and decode > 0 else "n/a"
        print(f"prefill: {len(prompt)} tokens in {prefill:.3f} s "
              f"({len(prompt) / prefill:.1f} tokens/s); decode: {steps} tokens, {rate}",
              file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- entry point

def build_parser() -> argparse.ArgumentParser:
    """The parser with every registered subcommand."""
    parser = argparse.ArgumentParser(prog="mamba2c", description="Mamba-2 models on the C engine")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS:
        sub = subcommands.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        for flags, options in cmd.arguments:
            sub.add_argument(*flags, **options)
        sub.set_defaults(handler=cmd.handler)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the command line; returns the exit status. Bad input (a missing directory, a
    malformed checkpoint) prints one line on stderr instead of a traceback."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (OSError, ValueError, TypeError) as err:
        print(f"mamba2c {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
