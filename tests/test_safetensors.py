import json
import mmap
import os
import struct

import numpy as np
import pytest

from mamba2c import safetensors as st

ALL_DTYPES = {  # package dtype name -> NumPy storage dtype
    "float64": np.float64, "float32": np.float32, "bfloat16": np.uint16, "float16": np.float16,
    "int64": np.int64, "int32": np.int32, "int16": np.int16, "int8": np.int8,
    "uint64": np.uint64, "uint32": np.uint32, "uint16": np.uint16, "uint8": np.uint8,
    "bool": np.bool_,
}


def random_array(rng, storage, shape):
    storage = np.dtype(storage)
    if storage == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    # Random bit patterns: NaNs and infinities must survive too.
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * storage.itemsize, dtype=np.uint8)
    return raw.view(storage).reshape(shape)


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.shape == b.shape and a.tobytes() == b.tobytes()


def raw_file(tmp_path, header, data=b"", n=None, name="x.safetensors", pad=True):
    """A file from a header (dict, or raw bytes) and data, bypassing every check."""
    if not isinstance(header, bytes):
        header = json.dumps(header).encode()
    if pad:
        header += b" " * (-len(header) % 8)
    path = tmp_path / name
    path.write_bytes(struct.pack("<Q", len(header) if n is None else n) + header + data)
    return str(path)


def entry(dtype="F32", shape=(2,), offsets=(0, 8)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


# --- round trips -------------------------------------------------------------------------------

SHAPES = [(), (0,), (3,), (2, 3), (2, 0, 4), (1, 2, 3, 2)]


def test_round_trip_every_dtype(tmp_path, rng):
    tensors = {}
    for dtype_name, storage in ALL_DTYPES.items():
        for i, shape in enumerate(SHAPES):
            tensors[f"{dtype_name}.{i}"] = (random_array(rng, storage, shape), dtype_name)
    path = tmp_path / "all.safetensors"
    st.save_file(tensors, path, metadata={"format": "pt", "note": "é\n\"x\""})
    with st.SafetensorsFile(path) as f:
        assert sorted(f.keys()) == sorted(tensors)
        assert f.metadata == {"format": "pt", "note": "é\n\"x\""}
        for name, (array, dtype_name) in tensors.items():
            got = f.get(name)
            assert f.dtype_name(name) == dtype_name
            assert f.shape(name) == array.shape
            assert got.dtype == np.dtype(ALL_DTYPES[dtype_name])
            assert same_bits(got, array), name
    assert f.dtype("bfloat16.2") == "BF16" and f.dtype("uint16.2") == "U16"


def test_plain_arrays_get_their_dtype(tmp_path, rng):
    import ml_dtypes

    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    tensors = {
        "f32_transposed": f32.T,  # not C-contiguous
        "f32_big_endian": f32.astype(">f4"),
        "u16": np.arange(5, dtype=np.uint16),  # plain uint16 is U16, not bfloat16
        "bf16": f32.astype(ml_dtypes.bfloat16),
        "bf16_pair": (f32.astype(ml_dtypes.bfloat16), "bfloat16"),
        "scalar": np.float64(2.5),
    }
    path = tmp_path / "plain.safetensors"
    st.save_file(tensors, path)
    with st.SafetensorsFile(path) as f:
        assert f.metadata == {}
        assert same_bits(f.get("f32_transposed"), np.ascontiguousarray(f32.T))
        assert same_bits(f.get("f32_big_endian"), f32)
        assert f.dtype("u16") == "U16"
        assert f.dtype("bf16") == f.dtype("bf16_pair") == "BF16"
        assert same_bits(f.get("bf16"), f32.astype(ml_dtypes.bfloat16).view(np.uint16))
        assert f.get("scalar").shape == () and f.get("scalar")[()] == 2.5


@pytest.mark.parametrize("tensors", [
    {"a": (np.zeros(2, np.float32), "bfloat16")},
    {"a": (np.zeros(2, np.int16), "bfloat16")},
    {"a": (np.zeros(2, np.float64), "float32")},
    {"a": (np.zeros(2, np.float32), "float128")},
    {"a": (np.zeros(2, np.float32),)},
    {"a": np.zeros(2, np.complex64)},
    {"a": np.array(["x"])},
    {"__metadata__": np.zeros(2)},
    {"\ud800": np.zeros(2)},
    {3: np.zeros(2)},
])
def test_save_rejects_bad_input(tmp_path, tensors):
    path = tmp_path / "bad.safetensors"
    with pytest.raises(ValueError):
        st.save_file(tensors, path)
    assert os.listdir(tmp_path) == []


def test_save_rejects_bad_metadata(tmp_path):
    for metadata in ({"a": 1}, {1: "a"}, {"a": "\udc80"}):
        with pytest.raises(ValueError):
            st.save_file({"a": np.zeros(2)}, tmp_path / "bad.safetensors", metadata=metadata)
    assert os.listdir(tmp_path) == []


def test_failed_save_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "model.safetensors"
    st.save_file({"old": np.ones(3, np.float32)}, path)
    before = path.read_bytes()

    def fail(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError, match="disk full"):
        st.save_file({"new": np.zeros(1000, np.float32)}, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.safetensors"]


# --- interoperability with the safetensors library ---------------------------------------------

def test_reads_library_numpy_files(tmp_path, rng):
    from safetensors.numpy import save_file

    tensors = {}
    for dtype_name, storage in ALL_DTYPES.items():
        if dtype_name != "bfloat16":
            tensors[dtype_name] = random_array(rng, storage, (3, 5))
            tensors[dtype_name + ".empty"] = random_array(rng, storage, (0, 2))
    path = str(tmp_path / "lib.safetensors")
    save_file(tensors, path, metadata={"format": "np"})
    with st.SafetensorsFile(path) as f:
        assert f.metadata == {"format": "np"}
        assert sorted(f.keys()) == sorted(tensors)
        for name, array in tensors.items():
            assert f.get(name).dtype == array.dtype and same_bits(f.get(name), array)


def test_reads_library_torch_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(4, 7, generator=gen).to(torch.bfloat16),
        "f16": torch.randn(3, generator=gen).to(torch.float16),
        "f32": torch.randn(2, 2, 2, generator=gen),
        "i64": torch.arange(-3, 3),
        "mask": torch.tensor([True, False, True]),
        "scalar": torch.tensor(1.5),
    }
    path = str(tmp_path / "torch.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    with st.SafetensorsFile(path) as f:
        assert f.metadata == {"format": "pt"}
        assert f.dtype("bf16") == "BF16" and f.get("bf16").dtype == np.uint16
        assert same_bits(f.get("bf16"), tensors["bf16"].view(torch.int16).numpy().view(np.uint16))
        for name in ("f16", "f32", "i64", "mask", "scalar"):
            assert same_bits(f.get(name), tensors[name].numpy()), name


def test_library_reads_our_files(tmp_path, rng):
    import torch
    from safetensors.numpy import load_file as np_load
    from safetensors.torch import load_file as torch_load

    tensors = {name: (random_array(rng, storage, (2, 3)), name)
               for name, storage in ALL_DTYPES.items()}
    tensors["empty"] = (np.zeros((0, 4), np.float32), "float32")
    tensors["scalar"] = (np.array(7, np.int64), "int64")
    path = str(tmp_path / "ours.safetensors")
    st.save_file(tensors, path, metadata={"format": "pt"})
    loaded_t = torch_load(path)
    assert set(loaded_t) == set(tensors)
    for name, (array, dtype_name) in tensors.items():
        t = loaded_t[name]
        if dtype_name == "bfloat16":
            assert t.dtype == torch.bfloat16
            assert same_bits(t.view(torch.int16).numpy().view(np.uint16), array)
        else:
            assert same_bits(t.numpy(), array), name

    # NumPy has no bfloat16, so the library's NumPy loader gets a file without one.
    del tensors["bfloat16"]
    st.save_file(tensors, path)
    loaded = np_load(path)
    assert set(loaded) == set(tensors)
    for name, (array, _) in tensors.items():
        assert loaded[name].dtype == array.dtype and same_bits(loaded[name], array), name


def test_bytes_identical_to_library(tmp_path, rng):
    import torch
    from safetensors.numpy import save as np_save
    from safetensors.torch import save as torch_save

    tensors = {name: random_array(rng, storage, (3, 2)) for name, storage in ALL_DTYPES.items()
               if name != "bfloat16"}
    tensors.update({"zeta": np.zeros(0, np.float32), "é\x01\"名": np.ones(1, np.int8),
                    "a": np.array(3, np.float32)})
    path = tmp_path / "ours.safetensors"
    st.save_file(tensors, path, metadata={"format": "pt"})
    assert path.read_bytes() == np_save(tensors, metadata={"format": "pt"})
    st.save_file(tensors, path)
    assert path.read_bytes() == np_save(tensors)

    bf16 = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    st.save_file({"w": (bf16.view(torch.int16).numpy().view(np.uint16), "bfloat16"),
                  "b": np.zeros(3, np.float32)}, path, metadata={"format": "pt"})
    assert path.read_bytes() == torch_save({"w": bf16, "b": torch.zeros(3)},
                                           metadata={"format": "pt"})


# --- zero-copy views ---------------------------------------------------------------------------

def test_get_returns_read_only_views_of_the_map(tmp_path):
    path = tmp_path / "v.safetensors"
    st.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    f = st.SafetensorsFile(path)
    a, b = f.get("a"), f.get("a")
    assert np.shares_memory(a, b)
    assert a.flags.writeable is False
    with pytest.raises(ValueError):
        a.flags.writeable = True
    with pytest.raises(ValueError):
        a[0, 0] = 1
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    assert isinstance(getattr(base, "obj", base), mmap.mmap)

    f.close()  # views exist: must neither crash nor invalidate them
    f.close()
    assert a[1, 2] == 5 and b.sum() == 15
    with pytest.raises(ValueError, match="closed"):
        f.get("a")
    del f
    assert a.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_close_without_views_and_missing_name(tmp_path):
    path = tmp_path / "v.safetensors"
    st.save_file({"a": np.zeros(2, np.float32)}, path)
    with st.SafetensorsFile(path) as f:
        assert "a" in f and "b" not in f and len(f) == 1 and list(f) == ["a"]
        with pytest.raises(KeyError, match="b"):
            f.get("b")
    assert "closed" in repr(f)


# --- sharded checkpoints -----------------------------------------------------------------------

def test_parse_size():
    assert st.parse_size("5GB") == 5 * 10**9
    assert st.parse_size("500MB") == 500 * 10**6
    assert st.parse_size(" 10kb ") == 10_000
    assert st.parse_size("1.5GB") == 1_500_000_000
    assert st.parse_size(1234) == 1234
    for bad in ("5GiB", "5", "GB", "-1KB", 0, True, 1.5, None):
        with pytest.raises(ValueError):
            st.parse_size(bad)


def test_parse_size_matches_huggingface_hub():
    from huggingface_hub.serialization._base import parse_size_to_int

    for text in ("5GB", "500MB", "10KB", "1TB", "0.5GB", "3 kb"):
        assert st.parse_size(text) == parse_size_to_int(text)


def test_sharded_round_trip_and_split_matches_hub(tmp_path, rng):
    import torch
    from huggingface_hub import split_torch_state_dict_into_shards

    sizes = [(100,), (300,), (50, 4), (2000,), (10,), (250,), (1,)]
    tensors = {f"layer.{i}.w": (random_array(rng, np.uint16, s), "bfloat16")
               for i, s in enumerate(sizes)}
    tensors["layer.9.f"] = (random_array(rng, np.float32, (40,)), "float32")
    seen = []
    written = st.save_sharded(tensors, tmp_path, max_shard_size="1KB",
                              progress=lambda done, total: seen.append((done, total)))

    hub = split_torch_state_dict_into_shards(
        {k: torch.from_numpy(a.astype(np.int16) if d == "bfloat16" else a)
         for k, (a, d) in tensors.items()}, max_shard_size="1KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == hub.tensor_to_filename
    assert index["metadata"] == {"total_size": hub.metadata["total_size"],
                                 "total_parameters": sum(a.size for a, _ in tensors.values())}
    assert sorted(os.listdir(tmp_path)) == sorted(list(hub.filename_to_tensors)
                                                  + ["model.safetensors.index.json"])
    assert [os.path.basename(p) for p in written] == sorted(os.listdir(tmp_path))
    assert seen == [(i + 1, len(written)) for i in range(len(written))]
    raw = (tmp_path / "model.safetensors.index.json").read_text()
    assert raw == json.dumps(index, indent=2, sort_keys=True) + "\n"

    loaded = st.load_checkpoint_dir(tmp_path)
    assert list(loaded) == list(tensors)
    for name, (array, dtype_name) in tensors.items():
        assert loaded[name][1] == dtype_name and same_bits(loaded[name][0], array)
    for shard in hub.filename_to_tensors:
        with st.SafetensorsFile(tmp_path / shard) as f:
            assert f.metadata == {"format": "pt"}

    # Saving again in one file removes the shards and the index, which would otherwise linger.
    st.save_sharded(tensors, tmp_path)
    assert os.listdir(tmp_path) == ["model.safetensors"]
    assert list(st.load_checkpoint_dir(tmp_path)) == sorted(
        tensors, key=lambda k: (tensors[k][1] != "float32", k))


def test_sharded_files_identical_to_transformers(tmp_path):
    import torch
    from transformers import Mamba2Config, Mamba2ForCausalLM

    torch.manual_seed(0)
    model = Mamba2ForCausalLM(Mamba2Config(
        vocab_size=61, hidden_size=16, num_hidden_layers=2, num_heads=8, head_dim=4,
        state_size=6, n_groups=2, conv_kernel=4, chunk_size=8, expand=2))
    for max_size in ("3KB", "1MB"):
        theirs, ours = tmp_path / f"hf{max_size}", tmp_path / f"ours{max_size}"
        model.save_pretrained(theirs, max_shard_size=max_size)
        st.save_sharded({k: v.numpy() for k, v in model.state_dict().items()}, ours,
                        max_shard_size=max_size)
        files = sorted(n for n in os.listdir(theirs) if "safetensors" in n)
        assert files == sorted(os.listdir(ours))
        assert len(files) > 2 if max_size == "3KB" else files == ["model.safetensors"]
        for name in files:
            assert (theirs / name).read_bytes() == (ours / name).read_bytes(), name


def test_sharded_with_huge_tensor_and_int_size(tmp_path):
    tensors = {"small": np.zeros(10, np.float32), "huge": np.zeros(1000, np.float32),
               "tail": np.zeros(10, np.float32)}
    st.save_sharded(tensors, tmp_path, max_shard_size=100)
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"small": "model-00002-of-00002.safetensors",
                                   "huge": "model-00001-of-00002.safetensors",
                                   "tail": "model-00002-of-00002.safetensors"}
    assert index["metadata"]["total_size"] == 4080
    st.save_sharded({}, tmp_path / "empty")
    assert st.load_checkpoint_dir(tmp_path / "empty") == {}


# --- checkpoint index validation ---------------------------------------------------------------

@pytest.fixture
def sharded_dir(tmp_path):
    tensors = {f"t{i}": np.full(64, i, np.float32) for i in range(4)}
    st.save_sharded(tensors, tmp_path, max_shard_size=300)
    assert len(os.listdir(tmp_path)) == 5
    return tmp_path


def write_index(directory, index):
    path = directory / "model.safetensors.index.json"
    path.write_text(index if isinstance(index, str) else json.dumps(index))
    return str(path)


@pytest.mark.parametrize("weight_map,needle", [
    ({"t0": "../model-00001-of-00004.safetensors"}, "t0"),
    ({"t0": "/etc/passwd"}, "t0"),
    ({"t0": "sub/model-00001-of-00004.safetensors"}, "t0"),
    ({"t0": "..\\model-00001-of-00004.safetensors"}, "t0"),
    ({"t0": ".."}, "t0"),
    ({"t0": ""}, "t0"),
    ({"t0": "C:model-00001-of-00004.safetensors"}, "t0"),
    ({"t0": 3}, "t0"),
    ({"t0": "model-00002-of-00004.safetensors"}, "t0"),  # not in that shard
    (["t0"], "weight_map"),
])
def test_index_rejects_bad_weight_map(sharded_dir, weight_map, needle):
    path = write_index(sharded_dir, {"metadata": {}, "weight_map": weight_map})
    with pytest.raises(ValueError) as info:
        st.load_checkpoint_dir(sharded_dir)
    assert path in str(info.value) and needle in str(info.value)


@pytest.mark.parametrize("index", ["[]", "{", '{"weight_map": {}, "weight_map": {}}',
                                   '{"metadata": 3, "weight_map": {}}', '{"metadata": {}}',
                                   b"\xff\xfe".decode("latin-1")])
def test_index_rejects_bad_json(sharded_dir, index):
    path = write_index(sharded_dir, index)
    with pytest.raises(ValueError, match=path):
        st.load_checkpoint_dir(sharded_dir)


def test_index_rejects_tensor_in_two_shards(sharded_dir):
    st.save_file({"t0": np.zeros(64, np.float32), "t1": np.zeros(1, np.float32)},
                 sharded_dir / "model-00001-of-00004.safetensors")
    with pytest.raises(ValueError, match="'t1'.*in both"):
        st.load_checkpoint_dir(sharded_dir)


def test_index_missing_shard(sharded_dir):
    os.remove(sharded_dir / "model-00003-of-00004.safetensors")
    with pytest.raises(OSError, match="model-00003-of-00004"):
        st.load_checkpoint_dir(sharded_dir)
    with pytest.raises(FileNotFoundError):
        st.load_checkpoint_dir(sharded_dir / "nowhere")


def test_index_with_hostile_shard(sharded_dir):
    path = sharded_dir / "model-00002-of-00004.safetensors"
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(OSError, match="model-00002-of-00004.*t1.*truncated"):
        st.load_checkpoint_dir(sharded_dir)


# --- hostile files -----------------------------------------------------------------------------

@pytest.fixture
def valid_file(tmp_path):
    path = tmp_path / "valid.safetensors"
    st.save_file({"first": np.arange(4, dtype=np.int64), "last": np.ones(3, np.float32)}, path,
                 metadata={"format": "pt"})
    return path


def test_truncated_files_raise_oserror(valid_file, tmp_path):
    data = valid_file.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    cut_path = tmp_path / "cut.safetensors"
    for cut in [0, 1, 7, 8, 9, 8 + n // 2, 8 + n - 1]:
        cut_path.write_bytes(data[:cut])
        with pytest.raises(OSError, match="cut.safetensors"):
            st.SafetensorsFile(cut_path)
    # Inside the last tensor ("first" is I64, so it is written first).
    for cut in [8 + n + 33, len(data) - 1]:
        cut_path.write_bytes(data[:cut])
        with pytest.raises(OSError, match=r"cut.safetensors: tensor 'last'.*truncated"):
            st.SafetensorsFile(cut_path)
    cut_path.write_bytes(data[:8 + n + 1])
    with pytest.raises(OSError, match="'first'"):
        st.SafetensorsFile(cut_path)


@pytest.mark.parametrize("n", [st.MAX_HEADER_SIZE + 1, 2**63, 2**64 - 1])
def test_huge_header_length(tmp_path, n):
    path = raw_file(tmp_path, {}, n=n)
    with pytest.raises(ValueError, match=f"{path}: header length {n}"):
        st.SafetensorsFile(path)


def test_header_length_past_file(tmp_path):
    path = raw_file(tmp_path, {}, n=st.MAX_HEADER_SIZE)
    with pytest.raises(OSError, match="truncated"):
        st.SafetensorsFile(path)


@pytest.mark.parametrize("header,message", [
    (b"\xff\xfe{}", "UTF-8"),
    (b'{"a": ', "JSON"),
    (b"[]", "not an object"),
    (b'"text"', "not an object"),
    (b"null", "not an object"),
    (b'{"a": {"dtype": "F32", "shape": [NaN], "data_offsets": [0, 0]}}', "JSON"),
    (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
    (b"{}\x00\x00", "JSON"),
    (b'{"\\ud800": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}', "Unicode"),
], ids=["utf8", "cut", "array", "string", "null", "nan", "duplicate", "deep", "nul", "surrogate"])
def test_malformed_json(tmp_path, header, message):
    path = raw_file(tmp_path, header, pad=False)
    with pytest.raises(ValueError, match=message) as info:
        st.SafetensorsFile(path)
    assert path in str(info.value)


@pytest.mark.parametrize("metadata", [[], "pt", {"format": 1}, {"format": None}, {"a": {}}])
def test_metadata_wrong_type(tmp_path, metadata):
    path = raw_file(tmp_path, {"__metadata__": metadata})
    with pytest.raises(ValueError, match="__metadata__") as info:
        st.SafetensorsFile(path)
    assert path in str(info.value)


def test_null_metadata_and_empty_file_accepted(tmp_path):
    with st.SafetensorsFile(raw_file(tmp_path, {"__metadata__": None})) as f:
        assert f.metadata == {} and f.keys() == []
    with st.SafetensorsFile(raw_file(tmp_path, {})) as f:
        assert len(f) == 0


def test_empty_header_is_not_json(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        st.SafetensorsFile(raw_file(tmp_path, b"", pad=False))


BAD_ENTRIES = [
    ([1, 2], "exactly the fields"),
    ("F32", "exactly the fields"),
    ({"dtype": "F32", "shape": [2]}, "exactly the fields"),
    (dict(entry(), extra=1), "exactly the fields"),
    (entry(dtype="F128"), "unknown dtype 'F128'"),
    (entry(dtype="f32"), "unknown dtype"),
    (entry(dtype=5), "dtype must be a string"),
    (entry(dtype=[2, 3]), "dtype must be a string"),
    (entry(dtype={"F32": 1}), "dtype must be a string"),
    (entry(dtype="F8_E4M3", offsets=(0, 2)), "unsupported dtype"),
    (entry(shape=(-2,)), "shape"),
    (entry(shape=(2.0,)), "shape"),
    (entry(shape=("2",)), "shape"),
    (entry(shape=(True, 2)), "shape"),
    (dict(entry(), shape=2), "shape"),
    (dict(entry(), shape=None), "shape"),
    (entry(offsets=(-8, 0)), "data_offsets"),
    (entry(offsets=(8, 0)), "data_offsets"),
    (entry(offsets=(0,)), "data_offsets"),
    (entry(offsets=(0, 8, 8)), "data_offsets"),
    (entry(offsets=(0.0, 8)), "data_offsets"),
    (entry(offsets=("0", "8")), "data_offsets"),
    (dict(entry(), data_offsets={"0": 8}), "data_offsets"),
    (entry(shape=(3,)), "needs 12 bytes"),
    (entry(shape=()), "needs 4 bytes"),
    (entry(dtype="F64"), "needs 16 bytes"),
    (entry(shape=[10**6] * 10_000), "needs more than the file"),
]


@pytest.mark.parametrize("shape,offsets", [("[]", "[-0,4]"), ("[-0]", "[0,0]")])
def test_minus_zero_is_not_a_size(tmp_path, shape, offsets):
    # Python reads JSON's -0 as the integer 0; the safetensors library reads a float and
    # refuses the file, and so must we.
    header = f'{{"x":{{"dtype":"F32","shape":{shape},"data_offsets":{offsets}}}}}'.encode()
    path = raw_file(tmp_path, header, b"\0" * 4)
    with pytest.raises(ValueError, match="shape|data_offsets"):
        st.SafetensorsFile(path)


@pytest.mark.parametrize("bad,message", BAD_ENTRIES)
def test_bad_tensor_entry(tmp_path, bad, message):
    path = raw_file(tmp_path, {"good": entry(offsets=(8, 16)), "bad": bad}, b"\0" * 16)
    with pytest.raises(ValueError, match=message) as info:
        st.SafetensorsFile(path)
    assert f"{path}: tensor 'bad'" in str(info.value)
    assert "(truncated)" in str(info.value) or len(str(info.value)) < 1000


@pytest.mark.parametrize("layout,data_len,names,message", [
    ({"a": (0, 8), "b": (4, 12)}, 12, ("b", "a"), "overlap"),
    ({"a": (0, 8), "b": (0, 8)}, 8, ("b", "a"), "overlap"),
    ({"a": (0, 8), "z": (4, 4)}, 8, ("z", "a"), "overlap"),
    ({"a": (0, 8), "b": (12, 20)}, 20, ("b",), "unused"),
    ({"a": (4, 12)}, 12, ("a",), "unused"),
    ({"a": (0, 8)}, 12, (), "trailing"),
])
def test_bad_layout(tmp_path, layout, data_len, names, message):
    header = {name: entry("U8", (end - begin,), (begin, end))
              for name, (begin, end) in layout.items()}
    path = raw_file(tmp_path, header, b"\0" * data_len)
    with pytest.raises(ValueError, match=message) as info:
        st.SafetensorsFile(path)
    assert path in str(info.value)
    for name in names:
        assert repr(name) in str(info.value)


@pytest.mark.parametrize("offsets", [(0, 24), (16, 24), (2**64, 2**64 + 8), (0, 10**40)])
def test_offsets_past_the_end(tmp_path, offsets):
    begin, end = offsets
    path = raw_file(tmp_path, {"t": entry("U8", (end - begin,), offsets)}, b"\0" * 16)
    with pytest.raises(OSError, match=f"{path}: tensor 't'.*truncated"):
        st.SafetensorsFile(path)


def test_library_agrees_on_layout_rules(tmp_path):
    """Each layout we refuse, the library refuses too (and it reads the ones we read)."""
    from safetensors.numpy import load_file

    cases = [{"a": (0, 8), "b": (4, 12)}, {"a": (0, 8), "b": (12, 20)}, {"a": (4, 12)}]
    for i, layout in enumerate(cases):
        header = {n: entry("U8", (e - b,), (b, e)) for n, (b, e) in layout.items()}
        path = raw_file(tmp_path, header, b"\0" * 20, name=f"{i}.safetensors")
        with pytest.raises(Exception):
            load_file(path)
        with pytest.raises(ValueError):
            st.SafetensorsFile(path)


def test_shape_numpy_cannot_hold(tmp_path):
    path = raw_file(tmp_path, {"t": entry("F32", (0, 2**70), (0, 0))})
    with st.SafetensorsFile(path) as f:
        assert f.shape("t") == (0, 2**70)
        with pytest.raises(ValueError, match=f"{path}: tensor 't'"):
            f.get("t")


def test_bool_bytes_other_than_0_and_1(tmp_path):
    path = raw_file(tmp_path, {"m": entry("BOOL", (3,), (0, 3))}, b"\x01\x00\x02")
    with st.SafetensorsFile(path) as f:
        with pytest.raises(ValueError, match=f"{path}: tensor 'm'"):
            f.get("m")


def test_unreadable_paths(tmp_path):
    with pytest.raises(OSError):
        st.SafetensorsFile(tmp_path / "missing.safetensors")
    with pytest.raises(OSError):
        st.SafetensorsFile(tmp_path)


def test_long_names_are_shortened_in_messages(tmp_path):
    name = "n" * 100_000
    path = raw_file(tmp_path, {name: entry(dtype="X")}, b"\0" * 8)
    with pytest.raises(ValueError) as info:
        st.SafetensorsFile(path)
    assert "unknown dtype" in str(info.value) and len(str(info.value)) < 1000


def test_fuzzed_files_raise_only_value_or_os_errors(tmp_path):
    from safetensors.torch import load as library_load

    base_path = tmp_path / "base.safetensors"
    st.save_file({"emb": np.arange(12, dtype=np.float32).reshape(3, 4),
                  "bits": (np.arange(6, dtype=np.uint16), "bfloat16"),
                  "ids": np.arange(3, dtype=np.int64), "mask": np.array([True, False]),
                  "empty": np.zeros((0, 5), np.float16)},
                 base_path, metadata={"format": "pt"})
    base = base_path.read_bytes()
    n = struct.unpack("<Q", base[:8])[0]
    rng = np.random.default_rng(1234)
    path = tmp_path / "fuzz.safetensors"
    accepted = 0
    for trial in range(400):
        data = bytearray(base)
        kind = trial % 4
        if kind == 0:  # a few bytes anywhere in the header
            for _ in range(rng.integers(1, 4)):
                data[rng.integers(8, 8 + n)] = rng.integers(0, 256)
        elif kind == 1:  # a printable character swapped in the header: keeps it UTF-8 more often
            data[rng.integers(8, 8 + n)] = ord(rng.choice(list('0123456789[]{}",:- aFIU')))
        elif kind == 2:  # the header length
            data[rng.integers(0, 8)] = rng.integers(0, 256)
        else:  # truncate or extend
            data = data[:rng.integers(0, len(data))] if trial % 8 == 3 else data + b"\0" * 8
        path.write_bytes(bytes(data))
        try:
            with st.SafetensorsFile(path) as f:
                for name in f.keys():
                    view = f.get(name)
                    assert view.nbytes == np.prod(f.shape(name)) * view.itemsize
            ours = True
        except (ValueError, OSError):
            ours = False
        try:
            library_load(bytes(data))
            theirs = True
        except Exception:
            theirs = False
        # Our extra rules (duplicate keys, unknown entry fields, BOOL bytes) are out of reach of
        # these mutations, so both readers must take the same decision.
        assert ours == theirs, (trial, bytes(data[:8 + n]))
        accepted += ours
    assert 0 < accepted < 400
