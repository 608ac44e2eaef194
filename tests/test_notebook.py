"""examples/quickstart.ipynb runs end to end in a fresh Jupyter kernel."""
import json
import os
import sys

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "examples", "quickstart.ipynb")


def outputs(cell):
    """Every output of a code cell as one string per MIME type (streams under their name)."""
    found = {}
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            found[out["name"]] = found.get(out["name"], "") + out["text"]
        for mime, value in out.get("data", {}).items():
            found[mime] = found.get(mime, "") + (value if isinstance(value, str) else "")
    return found


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    # A kernel spec for this interpreter, so the kernel imports the mamba2c under test
    # whatever "python" means on PATH.
    spec = tmp_path / "jupyter" / "kernels" / "mamba2c-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "mamba2c test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MAMBA2C_HOME", str(tmp_path / "home"))  # the demo model is built here
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    # Idle OpenMP threads sleep instead of spinning: CI machines share their cores.
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    work = tmp_path / "work"
    work.mkdir()
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="mamba2c-test",
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails

    shown = [outputs(cell) for cell in notebook.cells if cell.cell_type == "code"]
    text = "".join(o.get("stdout", "") + o.get("text/plain", "") for o in shown)
    assert any("image/png" in o for o in shown), "the plot was not drawn"
    assert any("<table>" in o.get("text/html", "") for o in shown), "no HTML repr"
    assert "Mamba2CausalLMOutput(\n  loss=float32(" in text
    assert "same logits after the round trip: True" in text
    assert "model.safetensors.index.json" in text
    try:
        import transformers  # noqa: F401
    except ImportError:
        assert "transformers is not installed" in text
    else:
        assert "largest difference" in text and "transformers 5." in text
