#!/usr/bin/env bash
# The GPU checks of the CUDA backend, for a machine with an NVIDIA GPU and nvcc: builds the
# extension in place, runs the CUDA tests, compute-sanitizer (memcheck and racecheck) on a small
# forward and decode, and optionally the comparison benchmark. Results go to $OUT (default
# ./gpu-results).
#   bash tools/gpu_check.sh [--bench]
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
# --force: objects left by an earlier build can be newer than sources copied in since
MAMBA2C_CUDA=1 $PY setup.py build_ext --inplace --force -q >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
$PY -c "import mamba2c; print('cuda available:', mamba2c.cuda.is_available(), mamba2c.cuda.unavailable_reason())"
$PY -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py -rs -s 2>&1 | tee "$OUT/tests.txt" | tail -40
cat >"$OUT/sanitize.py" <<'PYEOF'
import numpy as np, mamba2c
config = mamba2c.Mamba2Config(vocab_size=61, hidden_size=16, num_hidden_layers=2, num_heads=8,
                              head_dim=4, state_size=6, n_groups=2, chunk_size=8)
model = mamba2c.Mamba2ForCausalLM(config, seed=0, device="cuda")
ids = np.random.default_rng(0).integers(0, 61, size=(2, 150))  # several chunks of the scan
out = model(ids, use_cache=True, labels=ids)
model.generate(ids, max_new_tokens=4, do_sample=False)
bf16 = mamba2c.Mamba2ForCausalLM(config, seed=0, device="cuda", dtype="bfloat16")
bf16(ids)  # tensor-core scan and products, norms writing bf16
bf16.generate(ids, max_new_tokens=2, do_sample=False)
# the scan's common layout (64-channel heads, 128 state columns), which the tiny heads above
# do not take
common = mamba2c.Mamba2Config(vocab_size=61, hidden_size=128, num_hidden_layers=1, num_heads=4,
                              head_dim=64, state_size=128, n_groups=2)
for dtype in ("float32", "bfloat16"):
    mamba2c.Mamba2ForCausalLM(common, seed=0, device="cuda", dtype=dtype)(ids[:1], use_cache=True)
print("sanitized run done", float(out.loss))
PYEOF
if command -v compute-sanitizer >/dev/null; then
    compute-sanitizer --tool memcheck --error-exitcode 3 $PY "$OUT/sanitize.py" 2>&1 | tail -15 | tee "$OUT/memcheck.txt"
    # shared-memory hazards between the warps of a block (the scan's pipeline)
    compute-sanitizer --tool racecheck --error-exitcode 3 $PY "$OUT/sanitize.py" 2>&1 | tail -15 | tee "$OUT/racecheck.txt"
fi
if [ "${1:-}" = "--bench" ]; then
    $PY benchmarks/compare_cuda.py --json "$OUT/compare_cuda.json" ${BENCH_ARGS:-} >"$OUT/bench.txt" 2>&1; tail -30 "$OUT/bench.txt"
fi
