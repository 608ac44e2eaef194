#!/usr/bin/env bash
# Builds the extension with AddressSanitizer and UndefinedBehaviorSanitizer in a scratch copy of
# the tree and runs the tests that do not load PyTorch under it (PyTorch's own libraries are not
# built for a preloaded ASan runtime). Any report fails the run.
#   tools/sanitize.sh [pytest arguments]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root"/mamba2c "$root"/csrc "$root"/tests "$root"/setup.py "$root"/pyproject.toml \
      "$root"/README.md "$work"/
cd "$work"
# The CUDA module is checked on a GPU under compute-sanitizer (tools/gpu_check.sh), not here.
rm -f mamba2c/_C*.so mamba2c/_cuda*.so

sanitizers="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"
CFLAGS="$sanitizers" LDFLAGS="$sanitizers" MAMBA2C_DEBUG=1 MAMBA2C_WERROR=1 MAMBA2C_CUDA=0 \
    python setup.py build_ext --inplace -q >/dev/null

# Python itself is not instrumented: preload the runtimes, and leave leak checking to valgrind
# (CPython keeps allocations alive until exit by design).
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$work"
if [ $# -eq 0 ]; then
    set -- tests/test_kernels.py tests/test_model_api.py tests/test_threads.py \
        tests/test_safetensors.py -k "not transformers and not torch"
fi
python -m pytest -q -p no:cacheprovider "$@"
