"""What the fuzz harnesses share: a byte reader that turns fuzz input into choices, and a driver
that runs a harness under atheris (coverage-guided libFuzzer) or, where atheris is missing, under
a plain random-mutation loop.

Every harness module defines ``TestOneInput(data: bytes)``, which returns normally or raises one
of the exceptions a caller is promised; anything else it raises, and any crash of the process,
is a finding. The reader does not use atheris, so a corpus file means the same call with or
without it: tests/test_fuzz.py replays the kept corpus through ``TestOneInput`` in every test run.

    python tests/fuzz/fuzz_<name>.py [libFuzzer flags, e.g. -max_total_time=60] corpus_dir...
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import struct
import sys
import time
from typing import Callable, Iterable, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Appended, not prepended: an installed mamba2c or PYTHONPATH (the sanitizer build) comes first,
# and the working tree is the fallback when nothing is installed.
if ROOT not in sys.path:
    sys.path.append(ROOT)

try:
    import atheris
except ImportError:  # the harnesses still run: replay, or the fallback mutation loop
    atheris = None


class Reader:
    """Choices read from fuzz bytes, front to back. When the bytes run out every read returns
    its smallest choice, so any input, the empty one included, describes exactly one call."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)
        self.pos = 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def int_in(self, low: int, high: int) -> int:
        """An int in [low, high], reading as few bytes as the range needs."""
        span = high - low
        if span <= 0:
            return low
        value, bits = 0, 0
        while (1 << bits) <= span:
            value = (value << 8) | self.byte()
            bits += 8
        return low + value % (span + 1)

    def bool(self) -> bool:
        return bool(self.byte() & 1)

    def pick(self, choices: Sequence):
        return choices[self.int_in(0, len(choices) - 1)]

    def chance(self, percent: int) -> bool:
        return self.int_in(0, 99) < percent

    def float64(self) -> float:
        raw = bytes(self.byte() for _ in range(8))
        return struct.unpack("<d", raw)[0]

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        self.pos += len(chunk)
        return chunk

    def rest(self) -> bytes:
        return self.take(self.remaining())


def instrumented_imports(module_name: str):
    """Atheris' bytecode instrumentation of the mamba2c modules imported in the with-block, when
    the harness runs as a fuzzer (replay and plain imports skip it: it only slows them)."""
    if module_name == "__main__" and atheris is not None:
        return atheris.instrument_imports(include=["mamba2c"])
    return contextlib.nullcontext()


# ------------------------------------------------------------------------ fallback mutation loop

_INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x20, 0x30, 0x5B, 0x7B, 0x22]


def _mutate(data: bytes, seeds: List[bytes], rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(7)
        if op == 0 and out:  # flip a bit
            i = rng.randrange(len(out))
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1 and out:  # an interesting byte
            out[rng.randrange(len(out))] = rng.choice(_INTERESTING)
        elif op == 2:  # insert random bytes
            i = rng.randint(0, len(out))
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 3 and out:  # delete a range
            i = rng.randrange(len(out))
            del out[i:i + rng.randint(1, 16)]
        elif op == 4 and out:  # duplicate a range
            i = rng.randrange(len(out))
            out[i:i] = out[i:i + rng.randint(1, 16)]
        elif op == 5 and seeds:  # splice in part of another seed
            other = rng.choice(seeds)
            if other:
                i = rng.randrange(len(other))
                j = rng.randint(0, len(out))
                out[j:j] = other[i:i + rng.randint(1, 32)]
        elif op == 6 and out:  # truncate
            del out[rng.randrange(len(out)):]
    return bytes(out[:1 << 16])


def _fallback(test_one_input: Callable[[bytes], None], argv: List[str]) -> None:
    """A coverage-blind stand-in for libFuzzer that understands the same main flags. A hard
    crash kills the process, so each input is written to <artifact_prefix>current-input first."""
    options = {"max_total_time": "0", "runs": "-1", "seed": "0", "artifact_prefix": "./"}
    dirs = []
    for arg in argv[1:]:
        if arg.startswith("-") and "=" in arg:
            key, value = arg[1:].split("=", 1)
            options[key] = value
        elif not arg.startswith("-"):
            dirs.append(arg)
    seeds = []
    for directory in dirs:
        for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
            with open(os.path.join(directory, name), "rb") as f:
                seeds.append(f.read())
    seeds = seeds or [b""]
    rng = random.Random(int(options["seed"]) or None)
    limit, runs = float(options["max_total_time"]), int(options["runs"])
    current = options["artifact_prefix"] + "current-input"
    start, done = time.monotonic(), 0
    print(f"plain random mutation of {len(seeds)} seeds (no coverage feedback)", flush=True)
    while (runs < 0 or done < runs) and (limit <= 0 or time.monotonic() - start < limit):
        data = seeds[done] if done < len(seeds) else _mutate(rng.choice(seeds), seeds, rng)
        with open(current, "wb") as f:
            f.write(data)
        try:
            test_one_input(data)
        except BaseException:
            crash = options["artifact_prefix"] + "crash-" + hashlib.sha1(data).hexdigest()
            with open(crash, "wb") as f:
                f.write(data)
            print(f"==fallback== the input in {crash} raised:", flush=True)
            raise
        done += 1
    os.unlink(current)
    print(f"Done {done} runs in {int(time.monotonic() - start)} second(s)", flush=True)


def _instrument_harness(module_globals: dict) -> None:
    """Coverage of the harness's own branches (which function, which kind of argument, raised or
    not), so libFuzzer keeps the inputs that reach a new combination: the C extension itself is
    not instrumented (that needs clang's -fsanitize=fuzzer-no-link)."""
    for value in list(module_globals.values()):
        if getattr(value, "__module__", None) != module_globals["__name__"]:
            continue
        if isinstance(value, type):
            for attr in vars(value).values():
                if callable(attr) and hasattr(attr, "__code__"):
                    atheris.instrument_func(attr)
        elif callable(value) and hasattr(value, "__code__"):
            atheris.instrument_func(value)


def main(test_one_input: Callable[[bytes], None], argv: Optional[Iterable[str]] = None) -> None:
    argv = list(sys.argv if argv is None else argv)
    # Under a preloaded ASan runtime atheris loses its coverage signal (ASan provides the
    # coverage symbols) and libFuzzer then drops every seed: the plain loop keeps them all.
    if atheris is None or os.environ.get("MAMBA2C_FUZZ_PLAIN") == "1":
        _fallback(test_one_input, argv)
        return
    # The harness's dictionary of tokens (field names, dtype strings) unless one was given.
    harness = test_one_input.__globals__.get("__file__", "")
    base = os.path.splitext(os.path.basename(harness))[0]
    dictionary = os.path.join(os.path.dirname(harness), base[len("fuzz_"):] + ".dict")
    if os.path.isfile(dictionary) and not any(arg.startswith("-dict=") for arg in argv):
        argv.insert(1, "-dict=" + dictionary)
    _instrument_harness(test_one_input.__globals__)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
