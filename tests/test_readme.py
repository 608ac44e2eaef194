"""Every ```python block of README.md runs: in order, each in a fresh namespace, all in one
temporary directory. Shell blocks are not run."""
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")

# The install-and-test command that CI runs verbatim (.ci/run).
TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest -q'


def python_blocks(text):
    """(line number, source) of each ```python block."""
    blocks = []
    for match in re.finditer(r"^```python\n(.*?)^```$", text, re.S | re.M):
        blocks.append((text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    with open(README, encoding="utf-8") as f:
        text = f.read()
    blocks = python_blocks(text)
    assert len(blocks) >= 3, "README.md should show Python examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MAMBA2C_HOME", str(tmp_path / "home"))
    for line, source in blocks:
        code = compile(source, f"README.md (block at line {line})", "exec")
        try:
            exec(code, {"__name__": "__main__"})
        except Exception as err:
            pytest.fail(f"README.md block at line {line} raised {type(err).__name__}: {err}")


def test_readme_keeps_the_ci_test_command():
    with open(README, encoding="utf-8") as f:
        assert TEST_COMMAND in f.read()
