#!/usr/bin/env python3
"""Fuzzes the array arguments of the C engine: every ``mamba2c._C`` kernel function, the
``_C.Engine`` constructor and ``Engine.forward``, and a model's forward on hostile inputs.

Each input describes one call: which function, its size arguments (small, zero, negative, at the
int32/int64 limits, or chosen so that a product of sizes wraps around 64 bits), and for each
buffer argument an object: a matching array, a wrong dtype or element count, None, a non-buffer
object, a read-only or non-contiguous array, a 0-d or zero-stride array, a memoryview. Buffers
of "matching" size are sized by the product the C side computes, wrapped to 64 bits as C wraps
it, so an unchecked overflow meets a buffer that passes the size check.

The contract checked: a call raises TypeError, ValueError, OverflowError or MemoryError, or it
succeeds and then every buffer it was given holds exactly the element count its true sizes ask
for and no size was negative. Anything else (SystemError, a crash, a hang) is a finding.

    python tests/fuzz/fuzz_arrays.py [-max_total_time=N] tests/fuzz/corpus/arrays
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Reader, instrumented_imports, main  # noqa: E402

with instrumented_imports(__name__):
    import mamba2c  # noqa: E402
    from mamba2c import _C  # noqa: E402

ALLOWED = (TypeError, ValueError, OverflowError, MemoryError)

# Large enough to reach every code path, small enough that one call takes microseconds.
MAX_ELEMENTS = 1 << 14

# Sizes that break naive arithmetic: the int32/int64 limits, and 2**62 + 1 and 2**61 + 1,
# whose products with 4 and 8 wrap to small numbers in 64 bits.
EDGE_SIZES = [-1, -2, -(2**31), 2**31 - 1, 2**31, 2**32 + 1, 2**61 + 1, 2**62 + 1, 2**63 - 1,
              -(2**63), 2**63, 3 * 2**62, 2**64 + 4]
EDGE_FLOATS = [0.0, -0.0, 1e-30, 1e30, float("inf"), float("-inf"), float("nan"), 3.4e38, 1e300]


def wrap64(value: int) -> int:
    """The value a C int64 expression would hold: signed arithmetic wrapped to 64 bits."""
    return (value + 2**63) % 2**64 - 2**63


def pick_size(r: Reader) -> int:
    if r.chance(80):
        return r.pick([1, 2, 3, 4, 1, 2, 3, 0, 5, 8, 16, 17])
    return r.pick(EDGE_SIZES)


def pick_float(r: Reader) -> float:
    return r.pick(EDGE_FLOATS) if r.chance(20) else r.int_in(0, 200) / 100.0


# --------------------------------------------------------------------- hostile buffer arguments

F32, I64, F16, BF16 = "f32", "i64", "f16", "bf16"
_NP = {F32: np.float32, I64: np.int64, F16: np.float16, BF16: np.uint16}
_WRONG = [np.float64, np.float16, np.int32, np.int64, np.uint16, np.bool_, np.complex64,
          np.float32, np.uint8]


def _values(r: Reader, kind: str, n: int) -> np.ndarray:
    rng = np.random.default_rng(r.int_in(0, 255))
    if kind == I64:
        style = r.int_in(0, 3)
        if style == 0:
            return rng.integers(0, 4, size=n, dtype=np.int64)
        if style == 1:
            return rng.integers(-3, 20, size=n, dtype=np.int64)
        values = rng.integers(0, 4, size=n, dtype=np.int64)
        if n:
            values[rng.integers(0, n)] = r.pick([-100, -1, 2**62, -(2**63), 2**63 - 1, 1000])
        return values
    values = rng.standard_normal(n).astype(np.float32)
    if n and r.chance(20):
        values[rng.integers(0, n)] = r.pick([np.nan, np.inf, -np.inf, 3e38])
    if kind == F16:
        return values.astype(np.float16)
    if kind == BF16:
        return (values.view(np.uint32) >> 16).astype(np.uint16)
    return values


class Buffers:
    """The arrays handed to one call, with the element count each should have held."""

    def __init__(self) -> None:
        self.given = []  # (name, true element count, elements the object holds)

    def note(self, name: str, true_count: int, obj) -> None:
        try:
            elements = memoryview(obj).nbytes // max(memoryview(obj).itemsize, 1)
        except TypeError:
            return
        self.given.append((name, true_count, elements))

    def check_success(self, what: str, sizes: dict) -> None:
        negative = {k: v for k, v in sizes.items() if v < 0}
        if negative:
            raise AssertionError(f"{what} accepted negative sizes {negative}")
        for name, true_count, elements in self.given:
            if elements != true_count:
                raise AssertionError(f"{what} accepted {name} with {elements} elements where its "
                                     f"sizes {sizes} ask for {true_count}")


def make_buffer(r: Reader, name: str, kind: str, count: int, writable: bool, optional: bool,
                record: Buffers):
    """A hostile or matching object for a buffer argument whose true element count is `count`."""
    wrapped = wrap64(count)
    n = wrapped if 0 <= wrapped <= MAX_ELEMENTS else r.int_in(0, 8)
    mode = r.int_in(0, 15)
    if mode <= 6:
        obj = _values(r, kind, n)
    elif mode == 7:
        return None if optional or r.bool() else r.pick([0, 1.5, "abc", b"", object()])
    elif mode == 8:
        obj = _values(r, kind, n).astype(r.pick(_WRONG))
    elif mode == 9:
        obj = _values(r, kind, max(n + r.pick([-1, 1, 2]), 0))
    elif mode == 10:
        obj = r.pick([0, 2.5, "text", [1.0, 2.0], {}, object(), b"\0" * 4 * n, bytearray(4 * n)])
    elif mode == 11:  # a writable memoryview in the right format, not a NumPy array
        obj = memoryview(bytearray(_values(r, kind, n).tobytes()))
        obj = obj.cast({F32: "f", I64: "q", F16: "H", BF16: "H"}[kind])
    elif mode == 12:  # the right elements, not C-contiguous
        base = _values(r, kind, 2 * n)
        obj = base[::2] if r.bool() else base.reshape(2, n).T
    elif mode == 13:
        obj = _values(r, kind, n)
        obj.flags.writeable = False
    elif mode == 14:  # 0-d, or zero strides claiming many elements
        if r.bool():
            obj = np.asarray(_values(r, kind, 1)[0] if n else _NP[kind](0))
        else:
            obj = np.lib.stride_tricks.as_strided(np.zeros(1, _NP[kind]), shape=(max(n, 2),),
                                                  strides=(0,), writeable=False)
    else:  # 2-D but otherwise right
        obj = _values(r, kind, n).reshape(1, n) if r.bool() else _values(r, kind, n)[None]
    record.note(name, count, obj)
    return obj


_DTYPE_CODES = {F32: 0, BF16: 1, F16: 2}


def make_weight(r: Reader, name: str, count: int, optional: bool, record: Buffers):
    """A weight: (array, dtype code) or None, or one of the ways to get that wrong."""
    mode = r.int_in(0, 15)
    kind = r.pick([F32, F32, BF16, F16])
    if mode <= 8:  # a matching array, or (7, 8) any of make_buffer's objects in the pair
        array = make_buffer(r, name, kind, count, False, False, record) if mode >= 7 else None
        if array is None:
            wrapped = wrap64(count)
            array = _values(r, kind, wrapped if 0 <= wrapped <= MAX_ELEMENTS else r.int_in(0, 8))
            record.note(name, count, array)
        return (array, _DTYPE_CODES[kind])
    if mode == 9:
        return None
    array = _values(r, kind, max(wrap64(count), 0) if wrap64(count) <= MAX_ELEMENTS else 1)
    if mode == 10:
        return (array, r.pick([-1, 3, 99, 2**40, "0", None]))
    if mode == 11:
        return array
    if mode == 12:
        return (array,) if r.bool() else (array, _DTYPE_CODES[kind], 0)
    if mode == 13:
        return (r.pick([None, 1, "x"]), _DTYPE_CODES[kind])
    if mode == 14:
        return [array, _DTYPE_CODES[kind]]
    record.note(name, count, array)
    return (array, r.pick([0, 1, 2]))  # maybe the wrong code for this storage


# --------------------------------------------------------------------- the kernel functions

def buf(name, kind, count, writable=False, optional=False):
    return ("buf", name, kind, count, writable, optional)


def weight(name, count, optional=False):
    return ("weight", name, count, optional)


def size(name):
    return ("size", name)


def real(name):
    return ("float", name)


def flag(name):
    return ("flag", name)


def ld(s):
    return s["H"] * s["P"] + 2 * s["G"] * s["N"]


KERNELS = {
    "rmsnorm": [buf("out", F32, lambda s: s["R"] * s["D"], True),
                buf("x", F32, lambda s: s["R"] * s["D"]), weight("weight", lambda s: s["D"]),
                buf("row_scale", F32, lambda s: s["R"], optional=True),
                size("R"), size("D"), real("eps")],
    "rmsnorm_gated": [buf("out", F32, lambda s: s["R"] * s["I"], True),
                      buf("y", F32, lambda s: s["R"] * s["I"]),
                      buf("z", F32, lambda s: s["R"] * s["I"]),
                      weight("weight", lambda s: s["I"]), size("R"), size("I"), size("group"),
                      real("eps")],
    "linear": [buf("out", F32, lambda s: s["R"] * s["O"], True),
               buf("x", F32, lambda s: s["R"] * s["K"]),
               weight("weight", lambda s: s["O"] * s["K"]),
               weight("bias", lambda s: s["O"], optional=True),
               size("R"), size("K"), size("O"), flag("accumulate")],
    "conv1d": [buf("out", F32, lambda s: s["B"] * s["T"] * s["C"], True),
               buf("state", F32, lambda s: s["B"] * s["C"] * s["K"], True, optional=True),
               flag("has_state"), buf("x", F32, lambda s: s["B"] * s["T"] * s["C"]),
               weight("weight", lambda s: s["C"] * s["K"]),
               weight("bias", lambda s: s["C"], optional=True),
               buf("mask", F32, lambda s: s["B"] * s["T"], optional=True),
               size("B"), size("T"), size("C"), size("K"), flag("silu")],
    "dt_softplus": [buf("out", F32, lambda s: s["R"] * s["H"], True),
                    buf("dt", F32, lambda s: s["R"] * s["H"]),
                    weight("dt_bias", lambda s: s["H"]), size("R"), size("H"), real("lo"),
                    real("hi")],
    "ssd_chunked": [buf("y", F32, lambda s: s["B"] * s["T"] * s["H"] * s["P"], True),
                    buf("state", F32, lambda s: s["B"] * s["H"] * s["P"] * s["N"], True),
                    flag("has_state"), buf("xbc", F32, lambda s: s["B"] * s["T"] * ld(s)),
                    buf("dt", F32, lambda s: s["B"] * s["T"] * s["H"]),
                    buf("A", F32, lambda s: s["H"]), buf("D", F32, lambda s: s["H"]),
                    size("B"), size("T"), size("H"), size("P"), size("N"), size("G"),
                    size("Q")],
    "ssd_step": [buf("y", F32, lambda s: s["B"] * s["H"] * s["P"], True),
                 buf("state", F32, lambda s: s["B"] * s["H"] * s["P"] * s["N"], True),
                 flag("has_state"), buf("xbc", F32, lambda s: s["B"] * ld(s)),
                 buf("dt", F32, lambda s: s["B"] * s["H"]),
                 buf("A", F32, lambda s: s["H"]), buf("D", F32, lambda s: s["H"]),
                 size("B"), size("H"), size("P"), size("N"), size("G")],
    "cross_entropy": [buf("logits", F32, lambda s: s["B"] * s["T"] * s["V"]),
                      buf("labels", I64, lambda s: s["B"] * s["T"]),
                      size("B"), size("T"), size("V")],
    "embedding": [buf("out", F32, lambda s: s["R"] * s["D"], True),
                  buf("ids", I64, lambda s: s["R"]), weight("table", lambda s: s["V"] * s["D"]),
                  size("R"), size("V"), size("D")],
    "rmsnorm_backward": [buf("dx", F32, lambda s: s["R"] * s["D"], True),
                         buf("dweight", F32, lambda s: s["D"], True),
                         buf("dout", F32, lambda s: s["R"] * s["D"]),
                         buf("x", F32, lambda s: s["R"] * s["D"]),
                         weight("weight", lambda s: s["D"]),
                         buf("row_scale", F32, lambda s: s["R"], optional=True),
                         size("R"), size("D"), real("eps")],
    "rmsnorm_gated_backward": [buf("dy", F32, lambda s: s["R"] * s["I"], True),
                               buf("dz", F32, lambda s: s["R"] * s["I"], True),
                               buf("dweight", F32, lambda s: s["I"], True),
                               buf("dout", F32, lambda s: s["R"] * s["I"]),
                               buf("y", F32, lambda s: s["R"] * s["I"]),
                               buf("z", F32, lambda s: s["R"] * s["I"]),
                               weight("weight", lambda s: s["I"]),
                               size("R"), size("I"), size("group"), real("eps")],
    "conv1d_backward": [buf("dx", F32, lambda s: s["B"] * s["T"] * s["C"], True),
                        buf("dweight", F32, lambda s: s["C"] * s["K"], True),
                        buf("dbias", F32, lambda s: s["C"], True, optional=True),
                        buf("dstate", F32, lambda s: s["B"] * s["C"] * s["K"], True,
                            optional=True),
                        buf("dout", F32, lambda s: s["B"] * s["T"] * s["C"]),
                        buf("x", F32, lambda s: s["B"] * s["T"] * s["C"]),
                        buf("state", F32, lambda s: s["B"] * s["C"] * s["K"], optional=True),
                        weight("weight", lambda s: s["C"] * s["K"]),
                        weight("bias", lambda s: s["C"], optional=True),
                        buf("mask", F32, lambda s: s["B"] * s["T"], optional=True),
                        size("B"), size("T"), size("C"), size("K"), flag("silu")],
    "dt_softplus_backward": [buf("ddt_raw", F32, lambda s: s["R"] * s["H"], True),
                             buf("ddt_bias", F32, lambda s: s["H"], True, optional=True),
                             buf("ddt", F32, lambda s: s["R"] * s["H"]),
                             buf("dt", F32, lambda s: s["R"] * s["H"]),
                             weight("dt_bias", lambda s: s["H"]),
                             size("R"), size("H"), real("lo"), real("hi")],
    "ssd_chunked_backward": [
        buf("dxbc", F32, lambda s: s["B"] * s["T"] * ld(s), True),
        buf("ddt", F32, lambda s: s["B"] * s["T"] * s["H"], True),
        buf("dA", F32, lambda s: s["H"], True), buf("dD", F32, lambda s: s["H"], True),
        buf("dstate", F32, lambda s: s["B"] * s["H"] * s["P"] * s["N"], True, optional=True),
        buf("dy", F32, lambda s: s["B"] * s["T"] * s["H"] * s["P"]),
        buf("dfinal", F32, lambda s: s["B"] * s["H"] * s["P"] * s["N"], optional=True),
        buf("state", F32, lambda s: s["B"] * s["H"] * s["P"] * s["N"], optional=True),
        buf("xbc", F32, lambda s: s["B"] * s["T"] * ld(s)),
        buf("dt", F32, lambda s: s["B"] * s["T"] * s["H"]),
        buf("A", F32, lambda s: s["H"]), buf("D", F32, lambda s: s["H"]),
        size("B"), size("T"), size("H"), size("P"), size("N"), size("G"), size("Q")],
    "cross_entropy_backward": [buf("dlogits", F32, lambda s: s["B"] * s["T"] * s["V"], True),
                               buf("logits", F32, lambda s: s["B"] * s["T"] * s["V"]),
                               buf("labels", I64, lambda s: s["B"] * s["T"]),
                               size("B"), size("T"), size("V"), real("scale")],
    "cross_entropy_with_grad": [buf("dlogits", F32, lambda s: s["B"] * s["T"] * s["V"], True,
                                    optional=True),
                                buf("logits", F32, lambda s: s["B"] * s["T"] * s["V"]),
                                buf("labels", I64, lambda s: s["B"] * s["T"]),
                                size("B"), size("T"), size("V"), real("scale")],
}


def _size_names(params) -> list:
    return [p[1] for p in params if p[0] == "size"]


def call_kernel(r: Reader, name: str) -> None:
    params = KERNELS[name]
    sizes = {n: pick_size(r) for n in _size_names(params)}
    record = Buffers()
    args = []
    for p in params:
        kind = p[0]
        if kind == "buf":
            _, arg, dtype, count, writable, optional = p
            args.append(make_buffer(r, arg, dtype, count(sizes), writable, optional, record))
        elif kind == "weight":
            _, arg, count, optional = p
            args.append(make_weight(r, arg, count(sizes), optional, record))
        elif kind == "size":
            args.append(sizes[p[1]])
        elif kind == "float":
            args.append(pick_float(r))
        else:
            args.append(r.pick([True, False, 0, 1, None]))
    try:
        getattr(_C, name)(*args)
    except ALLOWED:
        return
    record.check_success(f"_C.{name}", sizes)


# --------------------------------------------------------------------- the engine

def _engine_sizes(r: Reader) -> dict:
    small = lambda *choices: r.pick(choices) if r.chance(90) else r.pick(EDGE_SIZES)  # noqa: E731
    c = dict(D=small(4, 8, 2, 1), H=small(2, 4, 1), P=small(2, 4, 1), N=small(2, 3, 1),
             G=small(1, 2), K=small(4, 1, 2, 16, 17, 0), Q=small(4, 8, 1, 2**40),
             V=small(5, 7, 1, 2), L=small(1, 2, 0))
    c["norm_groups"] = c["G"] if r.bool() else small(1)
    c["I"] = c["H"] * c["P"]
    c["conv"] = c["I"] + 2 * c["G"] * c["N"]
    c["proj"] = c["I"] + c["conv"] + c["H"]
    return c


def make_engine(r: Reader, record: Buffers):
    c = _engine_sizes(r)
    config = (c["D"], c["H"], c["P"], c["N"], c["G"], c["K"], c["Q"], c["V"], c["L"],
              pick_float(r) if r.chance(10) else 1e-5, 0.0,
              pick_float(r) if r.chance(10) else 3e38, c["norm_groups"])
    if r.chance(3):
        config = config[:r.int_in(0, len(config) - 1)]
    fuzz_weights = r.chance(15)

    def w(name, count, optional=False):
        if fuzz_weights:
            return make_weight(r, name, count, optional, record)
        if optional and r.bool():
            return None
        wrapped = wrap64(count)
        n = wrapped if 0 <= wrapped <= MAX_ELEMENTS else 1
        array = (np.ones if name.endswith(("norm", ".D")) else np.full)(
            *((n,) if name.endswith(("norm", ".D")) else ((n,), 0.1)), dtype=np.float32)
        record.note(name, count, array)
        return (array, 0)

    D, V, H, I, conv, proj, K = c["D"], c["V"], c["H"], c["I"], c["conv"], c["proj"], c["K"]
    emb, norm_f = w("embeddings", V * D), w("norm_f", D)
    lm_head = w("lm_head", V * D, optional=True)
    n_layers = c["L"] if 0 <= c["L"] <= 4 else r.int_in(0, 2)
    layers = [(w("norm", D), w("in_proj", proj * D), w("in_proj.bias", proj, True),
               w("conv1d", conv * K), w("conv1d.bias", conv, True), w("dt_bias", H),
               w("A_log", H), w(".D", H), w("mixer.norm", I), w("out_proj", D * I),
               w("out_proj.bias", D, True)) for _ in range(n_layers)]
    if r.chance(3) and layers:
        layers[0] = layers[0][:-1]
    engine = _C.Engine(config, emb, norm_f, lm_head, layers)
    return engine, c, lm_head is not None


def call_engine(r: Reader) -> None:
    record = Buffers()
    try:
        engine, c, has_head = make_engine(r, record)
    except ALLOWED:
        return
    record.check_success("_C.Engine", {k: v for k, v in c.items()})
    for _ in range(r.int_in(1, 3)):  # later calls reuse the engine's arena
        forward(r, engine, c)


def forward(r: Reader, engine, c: dict) -> None:
    B, T = pick_size(r), pick_size(r)
    D, L, V = c["D"], c["L"], c["V"]
    I, CK = c["I"], c["conv"] * c["K"]
    record = Buffers()
    kwargs = {}
    use_ids = r.chance(70)
    specs = [("input_ids" if use_ids else "inputs_embeds", I64 if use_ids else F32,
              B * T if use_ids else B * T * D, False, 95),
             ("attention_mask", F32, B * T, False, 30), ("labels", I64, B * T, False, 20),
             ("conv_states", F32, L * B * CK, True, 40),
             ("ssm_states", F32, L * B * I * c["N"], True, 40),
             ("last_hidden", F32, B * T * D, True, 40),
             ("hidden_states", F32, (L + 1) * B * T * D, True, 20)]
    for name, kind, count, writable, percent in specs:
        if r.chance(percent):
            kwargs[name] = make_buffer(r, name, kind, count, writable, True, record)
    if r.chance(60):
        n = r.int_in(0, 3) if r.chance(50) else (T if 0 < T <= 64 else 1)
        style = r.int_in(0, 3)
        if style == 0 and 0 < T <= MAX_ELEMENTS:
            positions = np.arange(T - min(n, T), T, dtype=np.int64)
        else:
            positions = _values(r, I64, n)
        if style == 3:
            positions = make_buffer(r, "logit_positions", I64, n, False, True, Buffers())
        kwargs["logit_positions"] = positions
        n_logits = len(positions) if isinstance(positions, np.ndarray) and positions.ndim else 0
        kwargs["logits"] = make_buffer(r, "logits", F32, B * n_logits * V, True, True, record)
    if r.chance(30):
        kwargs["has_state"] = r.bool()
    if r.chance(20):
        kwargs["want_loss"] = r.bool()
    if r.chance(30):
        kwargs["prefill_tokens"] = r.pick([0, 1, 2, 3, -1, 2**40, -(2**63), 2**63 - 1])
    try:
        engine.forward(B, T, **kwargs)
    except ALLOWED:
        return
    record.check_success("Engine.forward", {"batch": B, "tokens": T, **c})


# --------------------------------------------------------------------- a model's public forward

_MODEL = None


def _model():
    global _MODEL
    if _MODEL is None:
        config = mamba2c.Mamba2Config(vocab_size=7, hidden_size=8, num_hidden_layers=2,
                                      num_heads=4, head_dim=4, state_size=3, n_groups=2,
                                      conv_kernel=3, chunk_size=4)
        _MODEL = mamba2c.Mamba2ForCausalLM(config, seed=0)
    return _MODEL


def _input(r: Reader, kind: str):
    """input_ids-like (ints) or inputs_embeds-like (floats) objects, valid or not."""
    B, T = r.int_in(0, 3), r.int_in(0, 5)
    shape = r.pick([(B, T), (B, T, 8), (T,), (B, T, 1), ()])
    mode = r.int_in(0, 6)
    if mode == 0:
        return np.asarray(_values(r, kind, int(np.prod(shape)))).reshape(shape)
    if mode == 1:
        return _values(r, kind, int(np.prod(shape))).reshape(shape).astype(r.pick(_WRONG))
    if mode == 2:
        return np.asarray(_values(r, kind, int(np.prod(shape)))).reshape(shape).tolist()
    if mode == 3:
        return r.pick([None, 3, "ids", [[1, 2], [3]], [[]], object(), [[1.5, 2]]])
    if mode == 4:
        return np.asarray(_values(r, kind, int(np.prod(shape))), dtype=object).reshape(shape)
    if mode == 5:
        return np.lib.stride_tricks.as_strided(np.zeros(1, _NP[kind]), shape=shape,
                                               strides=(0,) * len(shape))
    return np.asarray(_values(r, kind, 2 * int(np.prod(shape)))).reshape((2,) + shape)[1]


def call_model(r: Reader) -> None:
    model = _model()
    kwargs = {}
    if r.chance(80):
        kwargs["input_ids"] = _input(r, I64)
    if r.chance(25):
        kwargs["inputs_embeds"] = _input(r, F32)
    if r.chance(25):
        kwargs["attention_mask"] = _input(r, I64)
    if r.chance(25):
        kwargs["labels"] = _input(r, I64)
    if r.chance(30):
        kwargs["logits_to_keep"] = r.pick([0, 1, 2, -1, 10**9, 2**70, [0], [-1, 0], [9], [],
                                           np.array([0, 0]), 1.5, None, "1", True])
    if r.chance(20):
        kwargs["cache_params"] = r.pick([None, object(), mamba2c.Mamba2Cache(model.config, 1),
                                         mamba2c.Mamba2Cache(model.config, 2)])
    if r.chance(30):
        kwargs["use_cache"] = r.bool()
    if r.chance(20):
        kwargs["output_hidden_states"] = r.bool()
    try:
        out = model(**kwargs)
    except ALLOWED:
        return
    if not np.all(np.isfinite(out.logits) | np.isnan(out.logits)):
        return  # inf logits from inf embeddings are values, not errors
    ids = kwargs.get("input_ids")
    ids = kwargs.get("inputs_embeds") if ids is None else ids
    batch = np.shape(ids)[0]
    if out.logits.ndim != 3 or out.logits.shape[0] != batch or out.logits.shape[2] != 7:
        raise AssertionError(f"logits of shape {out.logits.shape} for an input of shape "
                             f"{np.shape(ids)}")


TARGETS = sorted(KERNELS) + ["Engine", "Engine", "Engine", "model", "model"]


def TestOneInput(data: bytes) -> None:
    r = Reader(data)
    target = r.pick(TARGETS)
    with np.errstate(all="ignore"):  # casting NaN and inf to ints is part of the game
        if target == "Engine":
            call_engine(r)
        elif target == "model":
            call_model(r)
        else:
            call_kernel(r, target)


if __name__ == "__main__":
    mamba2c.set_num_threads(1)  # many tiny calls: threads would only add overhead
    main(TestOneInput)
