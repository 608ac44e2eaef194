#!/usr/bin/env bash
# Runs a small workload (tools/valgrind_workload.py: forward, decode on a cache, generate,
# save_pretrained / from_pretrained, the kernels forward and backward) under valgrind's memcheck
# with Python's allocator swapped for malloc, so that every C allocation is tracked. Fails on any
# definite leak or memory error that tools/valgrind.supp does not name as CPython, NumPy or glibc
# noise, and on any definite leak whose stack passes through mamba2c's extension.
#   tools/valgrind.sh [script.py]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
script=${1:-$root/tools/valgrind_workload.py}
# The interpreter itself: valgrind does not follow a wrapper script (pyenv's shims are shell).
python=$(python -c 'import sys; print(sys.executable)')
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
output=$(PYTHONMALLOC=malloc OMP_NUM_THREADS=2 valgrind --leak-check=full \
    --errors-for-leak-kinds=definite --show-leak-kinds=definite --error-exitcode=1 \
    --suppressions="$root/tools/valgrind.supp" --num-callers=40 --log-file="$log" \
    "$python" "$script") || status=$?
echo "$output"
grep -E "ERROR SUMMARY|(definitely|indirectly|possibly) lost:|still reachable:|suppressed:" \
    "$log" | sed 's/^==[0-9]*== *//'

# A definite leak from the extension, even one a suppression would hide.
if awk '/definitely lost in loss record/ {record = 1} record && /_C\.cpython/ {found = 1}
        /^==[0-9]+== $/ {record = 0} END {exit !found}' "$log"; then
    echo "valgrind: mamba2c's extension leaks (see above)" >&2
    status=1
fi
if [ $# -eq 0 ] && ! grep -q "valgrind workload done" <<<"$output"; then
    echo "valgrind: the workload did not finish" >&2
    status=1
fi
if [ "$status" -ne 0 ]; then
    tail -n 300 "$log" >&2
    echo "valgrind: FAILED" >&2
    exit 1
fi
echo "valgrind: no definite leaks and no memory errors outside the suppressions"
