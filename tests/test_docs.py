"""docs/api.md is what docs/generate_api.py writes from the current docstrings."""
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_api_reference_is_up_to_date():
    result = subprocess.run([sys.executable, os.path.join(REPO, "docs", "generate_api.py"),
                             "--check"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + "(run: python docs/generate_api.py)"
