"""The fuzz harnesses of tests/fuzz: the kept corpus replayed through each harness (always), and
each harness run under atheris for a bounded time (when atheris is installed).

Every crash a fuzzer found is kept in tests/fuzz/corpus/<harness>/regression-*, so replaying the
corpus re-runs it; the replay also runs under tools/sanitize.sh, where an out-of-bounds read that
does not crash a normal build is reported."""
import base64
import importlib
import os
import re
import subprocess
import sys

import pytest

FUZZ_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz")
HARNESSES = ["safetensors", "config", "arrays"]
# About 20 s a harness including start-up, a minute for the three.
FUZZ_SECONDS = int(os.environ.get("MAMBA2C_FUZZ_SECONDS", "15"))

sys.path.insert(0, FUZZ_DIR)


def corpus_files(name):
    directory = os.path.join(FUZZ_DIR, "corpus", name)
    return [os.path.join(directory, f) for f in sorted(os.listdir(directory))]


@pytest.mark.parametrize("name", HARNESSES)
def test_corpus_replays_cleanly(name):
    harness = importlib.import_module(f"fuzz_{name}")
    files = corpus_files(name)
    assert len(files) >= 5, f"the {name} corpus has only {len(files)} files"
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        try:
            harness.TestOneInput(data)
        except Exception as exc:
            raise AssertionError(f"{os.path.relpath(path, FUZZ_DIR)}: {exc!r}") from exc


def test_corpus_reaches_the_success_paths():
    """The harnesses' contracts are checked on calls that succeed: the corpus must contain some,
    or the replay would only ever exercise error paths."""
    from mamba2c import _C

    import fuzz_arrays

    succeeded = set()

    class Engine:
        def __init__(self, *args):
            self.engine = _C.Engine(*args)
            succeeded.add("Engine")

        def forward(self, *args, **kwargs):
            result = self.engine.forward(*args, **kwargs)
            succeeded.add("Engine.forward")
            return result

    class Recorder:
        def __getattr__(self, name):
            function = getattr(_C, name)

            def call(*args, **kwargs):
                result = function(*args, **kwargs)
                succeeded.add(name)
                return result
            return Engine if name == "Engine" else call

    original = fuzz_arrays._C
    fuzz_arrays._C = Recorder()
    try:
        for path in corpus_files("arrays"):
            with open(path, "rb") as f:
                fuzz_arrays.TestOneInput(f.read())
    finally:
        fuzz_arrays._C = original
    kernels = {name for name in fuzz_arrays.KERNELS}
    assert kernels | {"Engine", "Engine.forward"} <= succeeded, sorted(succeeded)


def test_reader_is_total():
    """Any bytes, the empty string included, describe one call: reads past the end give the
    smallest choice instead of raising."""
    from common import Reader

    r = Reader(b"\x05")
    assert r.int_in(0, 9) == 5
    assert r.int_in(3, 7) == 3 and r.pick("abc") == "a" and r.take(4) == b"" and not r.bool()
    assert Reader(b"\x01\x02").int_in(0, 1000) == (0x0102 % 1001)


def _fuzz(name, tmp_path, seconds):
    work = tmp_path / "corpus"
    work.mkdir()
    command = [sys.executable, os.path.join(FUZZ_DIR, f"fuzz_{name}.py"),
               f"-max_total_time={seconds}", "-timeout=30", "-rss_limit_mb=3072",
               f"-artifact_prefix={tmp_path}{os.sep}", str(work),
               os.path.join(FUZZ_DIR, "corpus", name)]
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 240,
                          cwd=tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", HARNESSES)
def test_fuzz_for_a_bounded_time(name, tmp_path):
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris); "
                                          "the corpus replay above still runs")
    result = _fuzz(name, tmp_path, FUZZ_SECONDS)
    crashes = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-",
                                                                                "oom-")))
    if result.returncode != 0 or crashes:
        # The inputs themselves, so that a CI failure can be reproduced: save one to
        # tests/fuzz/corpus/<name>/regression-<what it does> and fix what it finds.
        inputs = "\n".join(f"{crash}: {base64.b64encode((tmp_path / crash).read_bytes()).decode()}"
                           for crash in crashes)
        pytest.fail(f"fuzz_{name} failed (exit {result.returncode}); inputs (base64):\n{inputs}\n"
                    f"{result.stderr[-6000:]}")
    done = re.search(r"Done (\d+) runs in (\d+) second", result.stderr)
    assert done, result.stderr[-3000:]
    runs = int(done.group(1))
    # Even on two busy cores each harness manages thousands of executions in this time; a
    # handful means the harness is stuck on something slow.
    assert runs >= 20 * FUZZ_SECONDS, f"only {runs} executions in {done.group(2)} s"
