"""Writes docs/api.md, the API reference, from the docstrings and signatures of mamba2c.

    python docs/generate_api.py           # rewrite docs/api.md
    python docs/generate_api.py --check   # exit 1 if docs/api.md is out of date

tests/test_docs.py runs the check, so a changed docstring or signature needs a rerun.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
from typing import Any, Callable, Iterable, List, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import mamba2c  # noqa: E402
from mamba2c import __main__ as cli  # noqa: E402
from mamba2c import checkpoint, cuda, ops, ops_backward, outputs  # noqa: E402
from mamba2c.checkpoint import CheckpointMixin  # noqa: E402
from mamba2c.generation import GenerateDecoderOnlyOutput, GenerationMixin  # noqa: E402

OUTPUT = os.path.join(HERE, "api.md")

HEADER = """\
# API reference

Generated from the docstrings by `python docs/generate_api.py`; edit the docstrings, not this
file. Shapes use B batch, T tokens, D hidden size, I intermediate size (expand * D = H * P),
H heads, P head_dim, N state size, G groups, K conv kernel, V vocabulary, L layers.
Array arguments accept NumPy arrays, nested lists and torch tensors unless a docstring says
otherwise; outputs are NumPy arrays on the CPU and `mamba2c.cuda.DeviceArray`s on a GPU.
"""

HAS_OPENBLAS_DOC = """\
1 when the extension was built with OpenBLAS (prompt GEMMs go to cblas_sgemm), else 0."""


# ----------------------------------------------------------------------------- formatting

# Type variables shown by what they stand for.
_RENAMED = {"_Model": "Self"}


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, str):  # modules with `from __future__ import annotations`
        text = annotation.strip("'\"")
    else:
        text = inspect.formatannotation(annotation)
    return _RENAMED.get(text, text)


def _parameter(p: inspect.Parameter) -> str:
    text = p.name
    if p.kind is p.VAR_POSITIONAL:
        text = "*" + text
    elif p.kind is p.VAR_KEYWORD:
        text = "**" + text
    if p.annotation is not p.empty:
        text += ": " + _annotation(p.annotation)
    if p.default is not p.empty:
        text += (" = " if p.annotation is not p.empty else "=") + repr(p.default)
    return text


def signature(name: str, func: Callable[..., Any], drop_first: bool) -> str:
    """`name(params) -> return`, one parameter a line when it does not fit in 96 columns."""
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    if drop_first and params:
        params = params[1:]
    parts: List[str] = []
    star_done = any(p.kind is p.VAR_POSITIONAL for p in params)
    for p in params:
        if p.kind is p.KEYWORD_ONLY and not star_done:
            parts.append("*")
            star_done = True
        parts.append(_parameter(p))
    returns = ""
    if sig.return_annotation is not sig.empty:
        returns = " -> " + _annotation(sig.return_annotation)
    one_line = f"{name}({', '.join(parts)}){returns}"
    if len(one_line) <= 96:
        return one_line
    return f"{name}(\n" + "".join(f"    {part},\n" for part in parts) + f"){returns}"


def docstring(obj: Any) -> str:
    doc = inspect.getdoc(obj)
    return doc.strip() if doc else "(no docstring)"


def entry(title: str, sig: str, doc: str, note: str = "") -> str:
    out = [f"### `{title}`", ""]
    if sig:
        out += ["```python", sig, "```", ""]
    if note:
        out += [note, ""]
    out += ["```text", doc, "```", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- members

def members(*classes: type) -> Iterable[Tuple[str, Any, type]]:
    """Public methods and properties defined in `classes` (not inherited from elsewhere), in
    source order."""
    seen = set()
    for cls in classes:
        for name, value in vars(cls).items():
            if name.startswith("_") or name in seen:
                continue
            if isinstance(value, (classmethod, staticmethod, property)) or inspect.isfunction(value):
                seen.add(name)
                yield name, value, cls


def document_member(owner: str, name: str, value: Any) -> str:
    title = f"{owner}.{name}"
    if isinstance(value, property):
        return entry(title, "", docstring(value.fget), "Property.")
    if isinstance(value, classmethod):
        return entry(title, signature(title, value.__func__, drop_first=True),
                     docstring(value.__func__), "Class method.")
    if isinstance(value, staticmethod):
        return entry(title, signature(title, value.__func__, drop_first=False),
                     docstring(value.__func__), "Static method.")
    return entry(title, signature(title, value, drop_first=True), docstring(value))


def document_class(title: str, cls: type, *sources: type, constructor: bool = True,
                   intro: str = "") -> str:
    out = [f"## `{title}`", ""]
    if constructor:
        out += ["```python", signature(title, cls.__init__, drop_first=True), "```", ""]
    if intro:
        out += [intro, ""]
    out += ["```text", docstring(cls), "```", ""]
    for name, value, _ in members(*(sources or (cls,))):
        out.append(document_member(title.split(".")[-1], name, value))
    return "\n".join(out)


def document_functions(functions: Iterable[Tuple[str, Callable[..., Any]]]) -> str:
    return "\n".join(entry(name, signature(name, func, drop_first=False), docstring(func))
                     for name, func in functions)


def module_functions(module: Any, names: Iterable[str]) -> List[Tuple[str, Callable[..., Any]]]:
    short = module.__name__
    return [(f"{short}.{name}", getattr(module, name)) for name in names]


def ops_names() -> List[str]:
    """The public functions of mamba2c.ops: its own in source order, then the backwards."""
    own = [name for name, value in vars(ops).items()
           if inspect.isfunction(value) and not name.startswith("_")
           and value.__module__ == ops.__name__]
    return own + [name for name in ops_backward.__all__ if hasattr(ops, name)]


# ----------------------------------------------------------------------------- the CLI

def document_cli() -> str:
    out = ["## Command line", "",
           "`mamba2c COMMAND ...` or `python -m mamba2c COMMAND ...`; `--help` after a command "
           "lists its arguments. Bad input (a missing directory, a malformed checkpoint) prints "
           "one line on stderr, `mamba2c COMMAND: error: ...`, and exits with status 1.", ""]
    for command in cli._COMMANDS:
        out += [f"### `mamba2c {command.name}`", "", command.help[0].upper() + command.help[1:] + ".",
                ""]
        for flags, options in command.arguments:
            text = f"- `{', '.join(flags)}`"
            if "type" in options:
                text += f" ({options['type'].__name__})"
            if options.get("nargs") == "?":
                text += " (optional)"
            details = []
            if options.get("help"):
                details.append(options["help"])
            if options.get("default") is not None:
                details.append(f"default: `{options['default']!r}`")
            if details:
                text += ": " + "; ".join(details)
            out.append(text)
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- the page

def render() -> str:
    sections = [
        ("Package", "\n".join([
            "## Package `mamba2c`", "",
            "```text", docstring(mamba2c), "```", "",
            document_functions(module_functions(mamba2c, ["set_num_threads", "get_num_threads"])),
            entry("mamba2c.HAS_OPENBLAS", "", HAS_OPENBLAS_DOC, "Constant (int)."),
        ])),
        ("Mamba2Config", document_class("mamba2c.Mamba2Config", mamba2c.Mamba2Config)),
        ("Models: shared methods", document_class(
            "mamba2c.Mamba2PreTrainedModel", mamba2c.Mamba2PreTrainedModel,
            mamba2c.Mamba2PreTrainedModel, CheckpointMixin,
            intro="The base of `Mamba2Model` and `Mamba2ForCausalLM`: everything below works on "
                  "both.")),
        ("Mamba2Model", document_class("mamba2c.Mamba2Model", mamba2c.Mamba2Model,
                                       constructor=False,
                                       intro="Constructor as `Mamba2PreTrainedModel`.")),
        ("Mamba2ForCausalLM", document_class(
            "mamba2c.Mamba2ForCausalLM", mamba2c.Mamba2ForCausalLM, mamba2c.Mamba2ForCausalLM,
            GenerationMixin, constructor=False, intro="Constructor as `Mamba2PreTrainedModel`.")),
        ("Mamba2Cache", document_class("mamba2c.Mamba2Cache", mamba2c.Mamba2Cache)),
        ("Outputs", "\n".join([
            "## Outputs", "",
            "```text", docstring(outputs.ModelOutput), "```", "",
            document_member("ModelOutput", "to_tuple", outputs.ModelOutput.to_tuple),
            entry("mamba2c.outputs.Mamba2Output", "", docstring(outputs.Mamba2Output)),
            entry("mamba2c.outputs.Mamba2CausalLMOutput", "",
                  docstring(outputs.Mamba2CausalLMOutput)),
            entry("mamba2c.generation.GenerateDecoderOnlyOutput", "",
                  docstring(GenerateDecoderOnlyOutput)),
        ])),
        ("Kernels: mamba2c.ops", "\n".join([
            "## Kernels: `mamba2c.ops`", "",
            "```text", docstring(ops), "```", "",
            "The backward functions (from `mamba2c.ops_backward`, re-exported by `mamba2c.ops`):",
            "", "```text", docstring(ops_backward), "```", "",
            document_functions(module_functions(ops, ops_names())),
        ])),
        ("Checkpoint helpers", "\n".join([
            "## Checkpoint helpers: `mamba2c.checkpoint`", "",
            entry("mamba2c.checkpoint.CheckpointError", "", docstring(checkpoint.CheckpointError),
                  "Exception (a `ValueError`)."),
            document_functions(module_functions(checkpoint, ["read_checkpoint",
                                                             "parameter_count"])),
        ])),
        ("GPU: mamba2c.cuda", "\n".join([
            "## GPU: `mamba2c.cuda`", "",
            "```text", docstring(cuda), "```", "",
            document_functions(module_functions(cuda, ["is_available", "unavailable_reason",
                                                       "device_count", "to_device"])),
            document_class("mamba2c.cuda.DeviceArray", cuda.DeviceArray, constructor=False),
        ])),
        ("Command line", document_cli()),
    ]
    contents = ["## Contents", ""]
    for title, body in sections:
        anchor = body.split("\n", 1)[0].lstrip("# ")
        slug = "".join(c for c in anchor.lower().replace(" ", "-") if c.isalnum() or c in "-_")
        contents.append(f"- [{title}](#{slug})")
    page = HEADER + "\n" + "\n".join(contents) + "\n\n" + "\n".join(body for _, body in sections)
    while "\n\n\n" in page:
        page = page.replace("\n\n\n", "\n\n")
    return page.rstrip("\n") + "\n"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if docs/api.md differs from what would be written")
    args = parser.parse_args(argv)
    page = render()
    if args.check:
        with open(OUTPUT, encoding="utf-8") as f:
            if f.read() != page:
                print("docs/api.md is out of date: run python docs/generate_api.py",
                      file=sys.stderr)
                return 1
        return 0
    with open(OUTPUT, "w", encoding="utf-8") as f:
        f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
