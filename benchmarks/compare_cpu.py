"""CPU speed of mamba2c against transformers and llama.cpp, with the same random weights in
every engine, in one run.

    python benchmarks/compare_cpu.py [--repeats 3] [--threads 2] [--skip-transformers]
                                     [--skip-llama] [--half bfloat16|float16] [--codestral]
                                     [--transformers-float32-only]

The model has the shape of mamba2-130m (hidden 768, 24 layers, 24 heads of 64, state 128,
1 group, vocab 50288, tied embeddings) and is built by mamba2c from a seed, in float32 and in a
16-bit dtype (bfloat16 by default). transformers loads mamba2c's state_dict; llama.cpp (through
llama-cpp-python) reads a GGUF file written here from the same state_dict with the `gguf`
package. Before anything is timed, the logits of llama.cpp and transformers on a short prompt are
compared with mamba2c's, so that every engine is known to compute the same model.

Phases: prefill of a 512-token prompt at batch 1 (only the last position's logits, as for
generation), greedy decode at batch 1 and at batch 8 after a short prompt. Each case is run once
to warm up, then the engines take turns for --repeats rounds, so that load from other work on
the machine falls on all of them alike; medians are reported. The machine's streaming read
bandwidth is measured in the same run, and decode is also stated as weight bytes read per
second as a fraction of it.

--codestral adds a Mamba-Codestral-7B-shaped bfloat16 mamba2c model (decode at batch 1 and its
resident memory), run in a child process so that its peak RSS is its own.
"""
import argparse
import atexit
import functools
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata

import numpy as np

import mamba2c

SHAPE_130M = dict(hidden_size=768, num_hidden_layers=24, num_heads=24, head_dim=64,
                  state_size=128, n_groups=1, vocab_size=50288, expand=2, conv_kernel=4,
                  chunk_size=256, tie_word_embeddings=True)

# Mamba-Codestral-7B: its gated norm is per group, as the original Mamba-2 code computes it.
SHAPE_CODESTRAL = dict(hidden_size=4096, num_hidden_layers=64, num_heads=128, head_dim=64,
                       state_size=128, n_groups=8, vocab_size=32768, expand=2, conv_kernel=4,
                       chunk_size=256, tie_word_embeddings=False, norm_groups="n_groups")

SHORT = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


# --------------------------------------------------------------------------- helpers

def version(package):
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def as_float32(array, dtype):
    """float32 values of a mamba2c state_dict entry (bfloat16 comes as ml_dtypes.bfloat16 or as
    its uint16 bits, depending on whether ml_dtypes is installed)."""
    if dtype == "bfloat16":
        return (np.asarray(array).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return np.asarray(array, dtype=np.float32)


def weight_bytes_per_token(n_params, vocab, hidden, tied, itemsize):
    """Bytes of weights one decode step reads: every parameter once, except that an untied
    embedding table contributes one row (the LM head is read in full). Tied, the table is the
    head and is read once."""
    if tied:
        return n_params * itemsize
    return (n_params - vocab * hidden + hidden) * itemsize


def state_bytes_per_token(config):
    """The float32 SSM and conv state of one sequence, read and written once per step."""
    c = config
    per_layer = c.num_heads * c.head_dim * c.state_size + c.conv_dim * c.conv_kernel
    return 2 * 4 * c.num_hidden_layers * per_layer


# --------------------------------------------------------------------------- bandwidth

STREAM_C = r"""
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

/* Sum a large float buffer with every thread reading its own contiguous part; 32 partial
   sums keep the adds independent so that only memory limits the loop. The buffer is on 2 MiB
   pages when argv[3] is 1 (as mamba2c's weights are), on the kernel's default otherwise. */
int main(int argc, char **argv) {
    size_t n = (size_t)atoll(argv[1]) / sizeof(float) / 32 * 32;
    int repeats = atoi(argv[2]);
    float *a = aligned_alloc(2 << 20, n * sizeof(float));
    if (!a) return 1;
    madvise(a, n * sizeof(float), atoi(argv[3]) ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    #pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] = (float)(i & 7);   /* first touch by the reader */
    double check = 0;
    for (int r = 0; r < repeats; r++) {
        double total = 0, t0 = omp_get_wtime();
        #pragma omp parallel reduction(+:total)
        {
            size_t blocks = n / 32, nt = omp_get_num_threads(), id = omp_get_thread_num();
            size_t lo = blocks * id / nt * 32, hi = blocks * (id + 1) / nt * 32;
            float acc[32] = {0};
            for (size_t i = lo; i < hi; i += 32)
                for (int j = 0; j < 32; j++) acc[j] += a[i + j];
            for (int j = 0; j < 32; j++) total += acc[j];
        }
        double t = omp_get_wtime() - t0;
        check += total;
        printf("%.6f\n", t);
    }
    fprintf(stderr, "checksum %g\n", check);
    free(a);
    return 0;
}
"""


@functools.lru_cache(maxsize=None)
def stream_program():
    """The bandwidth program, compiled once a process (it is run several times a run), or None
    when gcc is missing or cannot build it."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    tmp = tempfile.mkdtemp(prefix="mamba2c-stream-")
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    src, exe = os.path.join(tmp, "stream.c"), os.path.join(tmp, "stream")
    with open(src, "w") as f:
        f.write(STREAM_C)
    build = subprocess.run([gcc, "-O3", "-march=native", "-fopenmp", src, "-o", exe],
                           capture_output=True, text=True)
    return exe if build.returncode == 0 else None


def stream_bandwidth(threads, huge_pages=True, nbytes=2 << 30, repeats=7):
    """Streaming read bandwidth samples in GB/s and how they were measured: a C program
    compiled here with OpenMP, over memory on 2 MiB pages or on 4 KiB ones, or a NumPy sum (one
    thread, the allocator's pages) when gcc is not available."""
    exe = stream_program()
    if exe is not None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OMP_PROC_BIND="spread")
        run = subprocess.run([exe, str(nbytes), str(repeats), str(int(huge_pages))],
                             capture_output=True, text=True, env=env, check=True)
        rates = [nbytes / float(t) / 1e9 for t in run.stdout.split()]
        pages = "2 MiB" if huge_pages else "4 KiB"
        return (rates, f"C sum over {nbytes / 2**30:.0f} GiB on {pages} pages, {threads} "
                f"threads, gcc -O3 -march=native -fopenmp")
    a = np.ones(nbytes // 4, np.float32)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        a.sum()
        rates.append(nbytes / (time.perf_counter() - start) / 1e9)
    return (rates, f"NumPy sum over {nbytes / 2**30:.0f} GiB, 1 thread")


# --------------------------------------------------------------------------- GGUF

def write_gguf(state_dict, config, dtype, path):
    """Writes the model as llama.cpp's Mamba-2 GGUF and returns the bytes of its tensors.

    The layout follows llama.cpp's conversion of Mamba-2 checkpoints: the conv weight without
    its middle axis ([conv_dim, K]); A stored as -exp(A_log) and D, both as [H, 1]; the gated
    norm's weight as [n_groups, I / n_groups]; dt_bias as ssm_dt.bias. The embedding and the
    two projections take the 16-bit dtype; norms, conv, A, D and biases stay float32 (llama.cpp
    expects them so), holding the same (rounded) values as mamba2c's weights.
    """
    import gguf

    c = config
    arch = gguf.MODEL_ARCH.MAMBA2
    ggml_type = {"float32": gguf.GGMLQuantizationType.F32,
                 "bfloat16": gguf.GGMLQuantizationType.BF16,
                 "float16": gguf.GGMLQuantizationType.F16}[dtype]
    file_type = {"float32": gguf.LlamaFileType.ALL_F32,
                 "bfloat16": gguf.LlamaFileType.MOSTLY_BF16,
                 "float16": gguf.LlamaFileType.MOSTLY_F16}[dtype]

    def name(tensor, bid=None, suffix=".weight"):
        assert tensor in gguf.MODEL_TENSORS[arch], tensor
        return gguf.TENSOR_NAMES[tensor].format(bid=bid) + suffix

    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    writer.add_context_length(1 << 20)       # a recurrent model has no context limit
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(0)        # read by the loader for every architecture
    writer.add_head_count(0)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_ssm_conv_kernel(c.conv_kernel)
    writer.add_ssm_inner_size(c.intermediate_size)
    writer.add_ssm_state_size(c.state_size)
    writer.add_ssm_time_step_rank(c.num_heads)
    writer.add_ssm_group_count(c.n_groups)
    writer.add_layer_norm_rms_eps(c.layer_norm_epsilon)
    writer.add_file_type(file_type)

    # llama.cpp refuses a model without a vocabulary. A SentencePiece-style ("llama") one of
    # vocab_size pieces is the smallest it accepts: control tokens, the 256 byte tokens (it looks
    # up <0x0A> for the newline) and placeholder pieces. Token ids are fed directly, so the
    # pieces are never used to tokenize.
    specials = ["<unk>", "<s>", "</s>"]
    pieces = specials + [f"<0x{b:02X}>" for b in range(256)]
    pieces += [f"\u2581t{i}" for i in range(c.vocab_size - len(pieces))]
    types = ([gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
             + [gguf.TokenType.BYTE] * 256
             + [gguf.TokenType.NORMAL] * (c.vocab_size - len(specials) - 256))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(pieces)
    writer.add_token_scores([0.0] * c.vocab_size)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)

    sd = {k.removeprefix("backbone."): v for k, v in state_dict.items()}
    nbytes = 0

    def matrix(key, value):  # a 16-bit (or float32) weight, bits kept as mamba2c holds them
        nonlocal nbytes
        value = np.asarray(value)
        if dtype == "bfloat16":
            value = np.ascontiguousarray(value.view(np.uint16))
            writer.add_tensor(key, value, raw_dtype=ggml_type)
        else:
            writer.add_tensor(key, np.ascontiguousarray(value))
        nbytes += value.nbytes

    def small(key, value):  # always float32
        nonlocal nbytes
        value = np.ascontiguousarray(value, dtype=np.float32)
        writer.add_tensor(key, value)
        nbytes += value.nbytes

    f32 = lambda k: as_float32(sd[k], dtype)  # noqa: E731
    H, G, I = c.num_heads, c.n_groups, c.intermediate_size
    matrix(name(gguf.MODEL_TENSOR.TOKEN_EMBD), sd["embeddings.weight"])
    for i in range(c.num_hidden_layers):
        p, T = f"layers.{i}.", gguf.MODEL_TENSOR
        small(name(T.ATTN_NORM, i), f32(p + "norm.weight"))
        matrix(name(T.SSM_IN, i), sd[p + "mixer.in_proj.weight"])
        small(name(T.SSM_CONV1D, i), f32(p + "mixer.conv1d.weight")[:, 0, :])
        small(name(T.SSM_CONV1D, i, ".bias"), f32(p + "mixer.conv1d.bias"))
        small(name(T.SSM_DT, i, ".bias"), f32(p + "mixer.dt_bias"))
        small(name(T.SSM_A, i, ""), -np.exp(f32(p + "mixer.A_log")).reshape(H, 1))
        small(name(T.SSM_D, i, ""), f32(p + "mixer.D").reshape(H, 1))
        small(name(T.SSM_NORM, i), f32(p + "mixer.norm.weight").reshape(G, I // G))
        matrix(name(T.SSM_OUT, i), sd[p + "mixer.out_proj.weight"])
    small(name(gguf.MODEL_TENSOR.OUTPUT_NORM), f32("norm_f.weight"))
    if not c.tie_word_embeddings:  # tied: llama.cpp uses token_embd as the head
        matrix(name(gguf.MODEL_TENSOR.OUTPUT), sd["lm_head.weight"])

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return nbytes


# --------------------------------------------------------------------------- mamba2c

def mamba2c_prefill(model, ids):
    def run():
        start = time.perf_counter()
        model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return time.perf_counter() - start
    return run


def mamba2c_decode(model, prompt, steps):
    """Greedy decode with the cache: the prompt is processed untimed, then `steps` one-token
    calls are timed."""
    def run():
        out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
        cache = out.cache_params
        start = time.perf_counter()
        for _ in range(steps):
            nxt = out.logits[:, -1].argmax(-1)[:, None]
            out = model(input_ids=nxt, cache_params=cache, use_cache=True, logits_to_keep=1)
        return time.perf_counter() - start
    return run


def mamba2c_logits(model, ids):
    return model(input_ids=ids[None], logits_to_keep=0).logits[0]


# --------------------------------------------------------------------------- transformers

def transformers_model(state_dict, dtype):
    """transformers' Mamba2ForCausalLM (its torch_forward path on the CPU) with mamba2c's
    weights, in float32 or in `dtype` holding the same 16-bit values."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()  # the "fast path is not available" notice
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                   "float16": torch.float16}[dtype]
    hf = transformers.Mamba2ForCausalLM(transformers.Mamba2Config(**SHAPE_130M))
    hf = hf.to(torch_dtype).eval()
    tensors = {}
    for key, value in state_dict.items():
        value = np.asarray(value)
        if dtype == "bfloat16":
            tensors[key] = torch.from_numpy(value.view(np.int16).copy()).view(torch.bfloat16)
        else:
            tensors[key] = torch.from_numpy(value.copy())
    hf.load_state_dict(tensors)
    return hf


def transformers_prefill(hf, ids):
    import torch

    tids = torch.from_numpy(ids)

    def run():
        with torch.inference_mode():
            start = time.perf_counter()
            hf(input_ids=tids, use_cache=True, logits_to_keep=1)
            return time.perf_counter() - start
    return run


def transformers_decode(hf, prompt, steps):
    import torch

    tids = torch.from_numpy(prompt)

    def run():
        with torch.inference_mode():
            out = hf(input_ids=tids, use_cache=True, logits_to_keep=1)
            cache = out.cache_params
            start = time.perf_counter()
            for _ in range(steps):
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                out = hf(input_ids=nxt, cache_params=cache, use_cache=True, logits_to_keep=1)
            return time.perf_counter() - start
    return run


def transformers_logits(hf, ids):
    import torch

    with torch.inference_mode():
        return hf(input_ids=torch.from_numpy(ids[None])).logits[0].float().numpy()


# --------------------------------------------------------------------------- llama.cpp

def llama_model(path, threads, n_ctx, logits_all=False):
    from llama_cpp import Llama

    return Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                 n_batch=512, logits_all=logits_all, verbose=False)


def llama_prefill(llm, ids):
    tokens = [int(t) for t in ids[0]]

    def run():
        llm.reset()  # clears the recurrent state
        start = time.perf_counter()
        llm.eval(tokens)  # logits of the last position only (logits_all=False)
        return time.perf_counter() - start
    return run


def llama_decode(llm, prompt, steps):
    import llama_cpp

    tokens = [int(t) for t in prompt[0]]
    n_vocab = llm.n_vocab()

    def last_logits():
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1),
                                     shape=(n_vocab,))

    def run():
        llm.reset()
        llm.eval(tokens)
        start = time.perf_counter()
        for _ in range(steps):
            llm.eval([int(last_logits().argmax())])
        return time.perf_counter() - start
    return run


class LlamaBatchDecode:
    """Greedy decode of several sequences at once through llama.cpp's C API (the `Llama` class
    decodes one sequence): a context with one recurrent state per sequence, and each step one
    llama_decode of a batch holding one token per sequence."""

    def __init__(self, llm, prompt, steps, threads):
        import llama_cpp

        self.lib, self.prompt, self.steps = llama_cpp, prompt, steps
        B, P = prompt.shape
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = 256 * B  # llama.cpp rounds n_ctx / n_seq_max up to 256
        params.n_batch = params.n_ubatch = max(512, B * P)
        params.n_seq_max = B
        params.n_threads = params.n_threads_batch = threads
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError("llama_init_from_model failed")
        self.batch = llama_cpp.llama_batch_init(max(512, B * P), 0, 1)
        self.n_vocab = llm.n_vocab()

    def _decode(self, tokens, first_pos):
        """tokens [B, n]: sequence s gets tokens[s] at positions first_pos...; returns the
        logits of each sequence's last token, [B, vocab]."""
        b, n = self.batch, 0
        for s, row in enumerate(tokens):
            for j, tok in enumerate(row):
                b.token[n], b.pos[n] = int(tok), first_pos + j
                b.n_seq_id[n], b.seq_id[n][0] = 1, s
                b.logits[n] = j == len(row) - 1
                n += 1
        b.n_tokens = n
        if self.lib.llama_decode(self.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")
        return np.ctypeslib.as_array(self.lib.llama_get_logits(self.ctx),
                                     shape=(len(tokens), self.n_vocab))

    def __call__(self):
        self.lib.llama_memory_clear(self.lib.llama_get_memory(self.ctx), True)
        P = self.prompt.shape[1]
        logits = self._decode(self.prompt, 0)
        start = time.perf_counter()
        for step in range(self.steps):
            logits = self._decode(logits.argmax(-1)[:, None], P + step)
        return time.perf_counter() - start

    def close(self):
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)


def llama_logits(path, ids, threads):
    llm = llama_model(path, threads, n_ctx=max(64, len(ids)), logits_all=True)
    llm.eval([int(t) for t in ids])
    logits = np.array(llm.scores[:len(ids)])
    llm.close()
    return logits


# --------------------------------------------------------------------------- agreement

def agreement(logits, reference):
    """Max |difference| over the largest |reference| logit, and the share of positions whose
    greedy token is the same."""
    rel = float(np.abs(logits - reference).max() / np.abs(reference).max())
    same = float((logits.argmax(-1) == reference.argmax(-1)).mean())
    return rel, same


# --------------------------------------------------------------------------- Codestral

def random_bfloat16(rng, shape, exponent):
    """Random bfloat16 weights drawn directly as bits, without a float32 copy: either sign,
    magnitude in [2**exponent, 2**(exponent + 1)). As ml_dtypes.bfloat16 when ml_dtypes is
    installed (loaded as they are), else widened to float32 for mamba2c to round back."""
    n = int(np.prod(shape))
    bits = rng.bit_generator.random_raw((n + 3) // 4).view(np.uint16)[:n].reshape(shape)
    bits = (bits & np.uint16(0x807F)) | np.uint16((exponent + 127) << 7)
    try:
        import ml_dtypes
    except ImportError:
        return as_float32(bits, "bfloat16")
    return bits.view(ml_dtypes.bfloat16)


def codestral_model(seed):
    """A Mamba-Codestral-7B-shaped bfloat16 mamba2c model with random weights.

    Mamba2ForCausalLM(config, dtype="bfloat16") would first draw every weight in float32
    (29 GB for 7.3 billion parameters), more than this machine holds. So the model is built
    as a tiny one, given the full config, and the full-size weights are then drawn as bfloat16
    bits and loaded one layer at a time, replacing every tiny weight.
    """
    config = mamba2c.Mamba2Config(**SHAPE_CODESTRAL)
    stub = mamba2c.Mamba2Config(hidden_size=64, num_hidden_layers=1, num_heads=2, head_dim=64,
                                state_size=16, n_groups=1, vocab_size=16,
                                tie_word_embeddings=False)
    model = mamba2c.Mamba2ForCausalLM(stub, dtype="bfloat16", seed=seed)
    model.config = config
    rng = np.random.default_rng(seed)
    c = config
    D, I, H, K = c.hidden_size, c.intermediate_size, c.num_heads, c.conv_kernel
    ones = lambda n: np.ones(n, np.float32)  # noqa: E731

    # Magnitudes about those of a trained model: 2**-7 ~ 0.01 for the embeddings, the head and
    # in_proj; out_proj smaller, as the residual stream adds 64 of them.
    model.load_state_dict({
        "backbone.embeddings.weight": random_bfloat16(rng, (c.vocab_size, D), -7),
        "lm_head.weight": random_bfloat16(rng, (c.vocab_size, D), -7),
        "backbone.norm_f.weight": ones(D),
    }, strict=False)
    for i in range(c.num_hidden_layers):
        p = f"backbone.layers.{i}."
        model.load_state_dict({
            p + "norm.weight": ones(D),
            p + "mixer.in_proj.weight": random_bfloat16(rng, (c.in_proj_size, D), -7),
            p + "mixer.conv1d.weight": rng.uniform(-0.5, 0.5, (c.conv_dim, 1, K)),
            p + "mixer.conv1d.bias": np.zeros(c.conv_dim, np.float32),
            p + "mixer.dt_bias": np.log(np.expm1(rng.uniform(1e-3, 0.1, H))),
            p + "mixer.A_log": np.log(np.arange(1, H + 1, dtype=np.float32)),
            p + "mixer.D": ones(H),
            p + "mixer.norm.weight": ones(I),
            p + "mixer.out_proj.weight": random_bfloat16(rng, (D, I), -10),
        }, strict=False)
    # Strict round trip (views, no copies): every weight present, at the full config's shape.
    model.load_state_dict(model.state_dict())
    return model


def rss_now_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def codestral_child(args):
    """Runs in its own process (see main) and prints one JSON line."""
    mamba2c.set_num_threads(args.threads)
    base_mb = rss_now_mb()
    start = time.perf_counter()
    model = codestral_model(seed=0)
    build_s = time.perf_counter() - start
    built_peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    c = model.config
    prompt = np.random.default_rng(1).integers(0, c.vocab_size, size=(1, 8))
    out = model(input_ids=prompt, use_cache=True, logits_to_keep=1)
    cache = out.cache_params
    steps = []
    for _ in range(args.codestral_steps):  # one-token steps timed one by one: median per step
        nxt = out.logits[:, -1].argmax(-1)[:, None]
        t0 = time.perf_counter()
        out = model(input_ids=nxt, cache_params=cache, use_cache=True, logits_to_keep=1)
        steps.append(time.perf_counter() - t0)
    n_params = model.num_parameters()
    print(json.dumps(dict(
        params=n_params, build_s=build_s, base_mb=base_mb, built_peak_mb=built_peak_mb,
        peak_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, rss_mb=rss_now_mb(),
        step_s=statistics.median(steps), steps=len(steps),
        weight_bytes=weight_bytes_per_token(n_params, c.vocab_size, c.hidden_size,
                                            c.tie_word_embeddings, 2),
        state_bytes=state_bytes_per_token(c))))


def codestral_parameters():
    c = mamba2c.Mamba2Config(**SHAPE_CODESTRAL)
    D, I, H, K = c.hidden_size, c.intermediate_size, c.num_heads, c.conv_kernel
    layer = D + c.in_proj_size * D + c.conv_dim * (K + 1) + 3 * H + I + I * D
    return 2 * c.vocab_size * D + D + c.num_hidden_layers * layer


def available_mb():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def run_codestral(args):
    # The bf16 weights plus about 1 GB of transients; other work may hold the rest.
    need_mb = codestral_parameters() * 2 / 2**20 + 1024
    if available_mb() < need_mb:
        return {"error": f"needs about {need_mb / 1024:.1f} GB, {available_mb() / 1024:.1f} GB "
                         f"available now"}
    cmd = [sys.executable, os.path.abspath(__file__), "--codestral-child",
           "--threads", str(args.threads), "--codestral-steps", str(args.codestral_steps)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- timing

class Case:
    def __init__(self, engine, phase, dtype, tokens, run, bytes_per_token=None):
        self.engine, self.phase, self.dtype, self.tokens = engine, phase, dtype, tokens
        self.run, self.bytes_per_token = run, bytes_per_token
        self.times = []
        self.error = None

    @property
    def seconds(self):
        return statistics.median(self.times) if self.times else None

    @property
    def tokens_per_s(self):
        return self.tokens / self.seconds if self.times else None


def measure(cases, repeats, slow_s):
    """Warms every case up, then runs them in turns, `repeats` rounds: a slow spell of the
    machine then hits every engine rather than one. A case whose warm-up took longer than
    `slow_s` (transformers' prefill takes minutes) keeps its warm-up as a sample and runs in
    the first round only: a first-touch cost is negligible against such a call."""
    for case in cases:
        try:
            seconds = case.run()
        except Exception as err:  # report it and go on with the other engines
            case.error = f"{type(err).__name__}: {err}"
            continue
        if seconds > slow_s:
            case.times.append(seconds)
    for r in range(repeats):
        for case in cases:
            if case.error is None and (r == 0 or len(case.times) < r + 1):
                case.times.append(case.run())
        print(f"  round {r + 1}/{repeats} done", file=sys.stderr)


# --------------------------------------------------------------------------- report

def print_tables(cases, bandwidth, checks, codestral, args, info):
    print("## mamba2c CPU comparison\n")
    for line in info:
        print(f"- {line}")
    print()
    print("### Same model in every engine (logits on a "
          f"{args.check_tokens}-token prompt vs mamba2c's)\n")
    print("| engine | dtype | max abs diff / max abs logit | same greedy token |")
    print("|---|---|---|---|")
    for engine, dtype, (rel, same) in checks:
        print(f"| {engine} | {dtype} | {rel:.1e} | {same:.0%} |")
    print()

    rates, how, small_page_rates = bandwidth
    bw_median = statistics.median(rates)
    print(f"### Speed (median of {args.repeats}; prefill {args.tokens} tokens at batch 1; "
          f"decode {args.decode_steps} steps after a {args.prompt_tokens}-token prompt)\n")
    print("| engine | phase | dtype | runs | median s | tokens/s | mamba2c speed-up |")
    print("|---|---|---|---|---|---|---|")
    ours = {(c.phase, c.dtype): c for c in cases if c.engine == "mamba2c"}
    for c in cases:
        if c.error is not None:
            print(f"| {c.engine} | {c.phase} | {SHORT[c.dtype]} | 0 | failed: {c.error} | | |")
            continue
        ref = ours.get((c.phase, c.dtype))
        ratio = (f"{c.seconds / ref.seconds:.2f}x" if ref is not None and ref.times
                 and c.engine != "mamba2c" else "–")
        print(f"| {c.engine} | {c.phase} | {SHORT[c.dtype]} | {len(c.times)} | "
              f"{c.seconds:.4f} | {c.tokens_per_s:,.1f} | {ratio} |")
    print()
    print("speed-up: the engine's median time / mamba2c's for the same phase and dtype "
          "(>1: mamba2c is faster). runs: timed calls after a warm-up (calls longer than "
          f"{args.slow_seconds:.0f} s: the warm-up and one more). llama.cpp decodes batch "
          f"{args.batch} through its C API, one context holding {args.batch} sequences.\n")

    print("### Decode at batch 1 against memory bandwidth\n")
    print(f"Streaming read bandwidth: {bw_median:.1f} GB/s median, {max(rates):.1f} GB/s best, "
          f"{min(rates):.1f} GB/s worst of {len(rates)} ({how}; measured before and after the "
          f"timings). Fractions use the median. The same read on 4 KiB pages: "
          f"{statistics.median(small_page_rates):.1f} GB/s median.\n")
    print("| engine | dtype | ms/token | weight MB/token | weight GB/s | % of bandwidth | "
          "% incl. state r/w |")
    print("|---|---|---|---|---|---|---|")
    rows = [c for c in cases if c.phase == "decode b1" and c.error is None]
    for c in rows:
        weights, state = c.bytes_per_token
        per_token = c.seconds / c.tokens
        gbs = weights / per_token / 1e9
        print(f"| {c.engine} | {SHORT[c.dtype]} | {1e3 * per_token:.1f} | {weights / 1e6:.0f} | "
              f"{gbs:.1f} | {100 * gbs / bw_median:.0f}% | "
              f"{100 * (weights + state) / per_token / 1e9 / bw_median:.0f}% |")
    if codestral is not None:
        print()
        print("### Mamba-Codestral-7B shape, mamba2c, bf16, decode at batch 1\n")
        if "error" in codestral:
            print(f"failed: {codestral['error']}")
        else:
            k = codestral
            gbs = k["weight_bytes"] / k["step_s"] / 1e9
            print("| params | build s | ms/token | tokens/s | weight GB/token | weight GB/s | "
                  "% of bandwidth | peak RSS GB | RSS after decode GB |")
            print("|---|---|---|---|---|---|---|---|---|")
            print(f"| {k['params'] / 1e9:.2f} B | {k['build_s']:.0f} | {1e3 * k['step_s']:.0f} | "
                  f"{1 / k['step_s']:.2f} | {k['weight_bytes'] / 1e9:.2f} | {gbs:.1f} | "
                  f"{100 * gbs / bw_median:.0f}% | {k['peak_mb'] / 1024:.1f} | "
                  f"{k['rss_mb'] / 1024:.1f} |")
            print(f"\nmedian of {k['steps']} one-token steps after an 8-token prompt; peak RSS "
                  f"(ru_maxrss) includes the transient float32 copy of one tensor group while "
                  f"building ({k['built_peak_mb'] / 1024:.1f} GB after building; "
                  f"{k['base_mb'] / 1024:.2f} GB before).")


def plot(cases, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    done = [c for c in cases if c.error is None]
    phases = list(dict.fromkeys(c.phase for c in done))
    engines = list(dict.fromkeys(c.engine for c in done))
    fig, axes = plt.subplots(1, len(phases), figsize=(4.2 * len(phases), 3.8))
    axes = np.atleast_1d(axes)
    for ax, phase in zip(axes, phases):
        dtypes = list(dict.fromkeys(c.dtype for c in done if c.phase == phase))
        width = 0.8 / len(engines)
        for e, engine in enumerate(engines):
            values = [next((c.tokens_per_s for c in done if c.phase == phase
                            and c.engine == engine and c.dtype == d), 0) for d in dtypes]
            ax.bar(np.arange(len(dtypes)) + e * width, values, width, label=engine)
        ax.set_xticks(np.arange(len(dtypes)) + width * (len(engines) - 1) / 2)
        ax.set_xticklabels([SHORT[d] for d in dtypes])
        ax.set_title(phase)
        ax.set_ylabel("tokens/s")
    axes[0].legend(fontsize=8)
    fig.suptitle("mamba2-130m shape on the CPU (higher is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


# --------------------------------------------------------------------------- main

def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=512, help="prefill length")
    parser.add_argument("--prompt-tokens", type=int, default=16, help="prompt before decode")
    parser.add_argument("--decode-steps", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8, help="the larger decode batch")
    parser.add_argument("--check-tokens", type=int, default=32)
    parser.add_argument("--half", choices=["bfloat16", "float16"], default="bfloat16",
                        help="the 16-bit weight dtype of every engine")
    parser.add_argument("--skip-transformers", action="store_true")
    parser.add_argument("--skip-llama", action="store_true")
    parser.add_argument("--transformers-float32-only", action="store_true",
                        help="time transformers in float32 only (its 16-bit CPU path is very "
                             "slow and no bar depends on it)")
    parser.add_argument("--slow-seconds", type=float, default=20.0,
                        help="cases slower than this per call are timed twice only")
    parser.add_argument("--codestral", action="store_true")
    parser.add_argument("--codestral-steps", type=int, default=16)
    parser.add_argument("--codestral-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plot", default=os.path.join(os.path.dirname(__file__),
                                                       "cpu_speed.png"))
    args = parser.parse_args()
    if args.codestral_child:
        return codestral_child(args)

    half = args.half
    dtypes = ["float32", half]
    mamba2c.set_num_threads(args.threads)
    config = mamba2c.Mamba2Config(**SHAPE_130M)
    models = {d: mamba2c.Mamba2ForCausalLM(config, dtype=d, seed=0) for d in dtypes}
    rng = np.random.default_rng(0)
    V = config.vocab_size
    prefill_ids = rng.integers(0, V, size=(1, args.tokens))
    prompt1 = rng.integers(0, V, size=(1, args.prompt_tokens))
    promptB = rng.integers(0, V, size=(args.batch, args.prompt_tokens))
    check_ids = rng.integers(0, V, size=args.check_tokens)
    state_bytes = state_bytes_per_token(config)
    info = [f"CPU: {cpu_name()}, {os.cpu_count()} cores visible, {args.threads} threads per "
            f"engine",
            f"mamba2c {mamba2c.__version__} (OpenBLAS: {bool(mamba2c.HAS_OPENBLAS)}), NumPy "
            f"{np.__version__}, Python {platform.python_version()}"]

    print("measuring memory bandwidth", file=sys.stderr)
    rates, how = stream_bandwidth(args.threads)
    small_page_rates = stream_bandwidth(args.threads, huge_pages=False)[0]

    cases, checks, cleanup = [], [], []
    refs = {d: mamba2c_logits(models[d], check_ids) for d in dtypes}
    # How far rounding the weights alone moves this random model's logits: the scale against
    # which the 16-bit rows below are to be read.
    checks.append(("mamba2c with the f32 weights", SHORT[half], agreement(refs["float32"],
                                                                          refs[half])))
    for d in dtypes:
        m = models[d]
        wb = weight_bytes_per_token(m.num_parameters(), V, config.hidden_size, True,
                                    2 if d != "float32" else 4)
        cases += [Case("mamba2c", "prefill", d, args.tokens, mamba2c_prefill(m, prefill_ids)),
                  Case("mamba2c", "decode b1", d, args.decode_steps,
                       mamba2c_decode(m, prompt1, args.decode_steps), (wb, state_bytes)),
                  Case("mamba2c", f"decode b{args.batch}", d, args.batch * args.decode_steps,
                       mamba2c_decode(m, promptB, args.decode_steps))]

    if not args.skip_transformers:
        import torch
        import transformers

        torch.set_num_threads(args.threads)
        info.append(f"transformers {transformers.__version__} (torch_forward path), torch "
                    f"{torch.__version__}, torch threads {torch.get_num_threads()}")
        for d in dtypes:
            if d != "float32" and args.transformers_float32_only:
                continue
            hf = transformers_model(models[d].state_dict(), d)
            checks.append(("transformers", SHORT[d],
                           agreement(transformers_logits(hf, check_ids), refs[d])))
            wb = sum(p.numel() * p.element_size() for p in hf.parameters())  # tied: once
            cases += [Case("transformers", "prefill", d, args.tokens,
                           transformers_prefill(hf, prefill_ids)),
                      Case("transformers", "decode b1", d, args.decode_steps,
                           transformers_decode(hf, prompt1, args.decode_steps),
                           (wb, state_bytes)),
                      Case("transformers", f"decode b{args.batch}", d,
                           args.batch * args.decode_steps,
                           transformers_decode(hf, promptB, args.decode_steps))]

    tmpdir = None
    if not args.skip_llama:
        import llama_cpp

        info.append(f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, gguf "
                    f"{version('gguf')}; {llama_cpp.llama_print_system_info().decode().strip()}")
        tmpdir = tempfile.mkdtemp(prefix="mamba2c-gguf-")
        for d in dtypes:
            path = os.path.join(tmpdir, f"mamba2-130m-{SHORT[d]}.gguf")
            print(f"writing {path}", file=sys.stderr)
            wb = write_gguf(models[d].state_dict(), config, d, path)
            checks.append(("llama.cpp", SHORT[d],
                           agreement(llama_logits(path, check_ids, args.threads), refs[d])))
            if d != "float32":
                # The same 16-bit values in a float32 file: llama.cpp then computes as mamba2c
                # does, so the row above differs only by llama.cpp rounding the activations to
                # 16 bits before each 16-bit matrix product.
                exact = {k: as_float32(v, d) for k, v in models[d].state_dict().items()}
                path32 = os.path.join(tmpdir, "values-f32.gguf")
                write_gguf(exact, config, "float32", path32)
                checks.append(("llama.cpp", f"{SHORT[d]} values in an f32 file",
                               agreement(llama_logits(path32, check_ids, args.threads), refs[d])))
                os.remove(path32)
            llm = llama_model(path, args.threads, n_ctx=max(1024, args.tokens + 1,
                                                            args.prompt_tokens
                                                            + args.decode_steps + 1))
            batched = LlamaBatchDecode(llm, promptB, args.decode_steps, args.threads)
            cleanup += [batched.close, llm.close]
            cases += [Case("llama.cpp", "prefill", d, args.tokens, llama_prefill(llm, prefill_ids)),
                      Case("llama.cpp", "decode b1", d, args.decode_steps,
                           llama_decode(llm, prompt1, args.decode_steps), (wb, state_bytes)),
                      Case("llama.cpp", f"decode b{args.batch}", d,
                           args.batch * args.decode_steps, batched)]

    # Group the table by phase and dtype, mamba2c first within each.
    order = {"mamba2c": 0, "transformers": 1, "llama.cpp": 2}
    phases = ["prefill", "decode b1", f"decode b{args.batch}"]
    cases.sort(key=lambda c: (phases.index(c.phase), dtypes.index(c.dtype), order[c.engine]))
    print(f"timing {len(cases)} cases, {args.repeats} rounds", file=sys.stderr)
    measure(cases, args.repeats, args.slow_seconds)

    for close in cleanup:
        close()
    # Once more after the timings: other work on the machine may have changed meanwhile.
    rates += stream_bandwidth(args.threads)[0]
    small_page_rates += stream_bandwidth(args.threads, huge_pages=False)[0]
    if tmpdir is not None:
        shutil.rmtree(tmpdir, ignore_errors=True)

    codestral = None
    if args.codestral:
        del models
        gc.collect()
        print("Codestral-7B shape (child process)", file=sys.stderr)
        codestral = run_codestral(args)

    print_tables(cases, (rates, how, small_page_rates), checks, codestral, args, info)
    if plot(cases, args.plot):
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
