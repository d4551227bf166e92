#!/usr/bin/env bash
# Kernel and end-to-end speed (benchmarks/test_*.py, pytest-benchmark) against the baseline committed for
# this GPU in benchmarks/baselines/<GPU name>/; exits non-zero when a median is slower than the threshold.
#
#   benchmarks/regression.sh              compare with the newest baseline of this GPU (fails on a regression)
#   benchmarks/regression.sh --record     record a new baseline for this GPU (then commit benchmarks/baselines/)
#
# Further arguments go to pytest (e.g. -k prefill). RWKVBENCH_BENCH_FAIL sets the threshold
# (pytest-benchmark's --benchmark-compare-fail syntax; default median:15%). pytest-benchmark keeps
# baselines per machine id (OS, Python implementation and version): compare with the Python that recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
GPU=$("$PY" -c "import torch
print(torch.cuda.get_device_name().replace(' ', '_') if torch.cuda.is_available() else '')")
if [[ -z "$GPU" ]]; then
  echo "benchmarks/regression.sh: needs a CUDA GPU (torch.cuda.is_available() is False)" >&2
  exit 2
fi
STORE=benchmarks/baselines/$GPU
RUN=("$PY" -m pytest benchmarks/ -p no:cacheprovider --benchmark-only --benchmark-storage="$STORE"
     --benchmark-columns=min,median,iqr,rounds --benchmark-sort=fullname)
if [[ "${1:-}" == "--record" ]]; then
  shift
  exec "${RUN[@]}" --benchmark-save=baseline "$@"
fi
if ! compgen -G "$STORE/*/*.json" >/dev/null; then
  echo "benchmarks/regression.sh: no baseline for $GPU in $STORE; record one with $0 --record" >&2
  exit 2
fi
exec "${RUN[@]}" --benchmark-compare --benchmark-compare-fail="${RWKVBENCH_BENCH_FAIL:-median:15%}" "$@"
