#!/usr/bin/env bash
# The GPU check of the losses, as one command for a machine with CUDA:
#   1. benchmarks/gpu_checks.py: every loss and miner on cuda against the CPU, and which ones
#      synchronise with the host (torch.cuda.set_sync_debug_mode("error"));
#   2. the loss tests that compare with PML and plain loops (CPU, for reference on that image);
#   3. benchmarks/losses.py --device cuda: likewise vs pytorch-metric-learning vs the GEMM floor.
# The report goes to $OUT/gpu.md (when $OUT is set, as on the device machine) and is appended to
# docs/benchmarks.md. Without CUDA it says so and exits 0.
#
# On the lent GPU machine (bare image: its python3 has torch, lightning, scikit-learn, but not
# pytorch-metric-learning, pydantic or faiss), carry the pure-Python wheels first:
#   here:   pip download --no-deps -d .gpu_wheels pytorch-metric-learning==2.9.0
#   there:  run(command="bash benchmarks/gpu.sh", carry=[".gpu_wheels"], timeout_s=540)
# (.gpu_wheels is ignored by git; wheels on PYTHONPATH are imported from the zip.)
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
WHEELS=$(ls .gpu_wheels/*.whl 2>/dev/null | tr '\n' ':')
export PYTHONPATH="src:${WHEELS}${PYTHONPATH:-}" PYTHONUNBUFFERED=1
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "benchmarks/gpu.sh: no CUDA device on this machine ($PY); nothing to check."
  exit 0
fi
report=${OUT:-/tmp}/gpu.md
{
  echo
  echo "## GPU: losses on CUDA ($(date -u '+%Y-%m-%d %H:%M') UTC)"
  echo
  echo "    bash benchmarks/gpu.sh"
  echo
  "$PY" benchmarks/gpu_checks.py --device cuda 2>&1
  echo
  echo "Loss tests (CPU) on that image:"
  echo
  echo '```'
  "$PY" -m pytest -q -p no:cacheprovider tests/test_losses_contract.py tests/test_no_host_sync.py \
    tests/test_losses_pair.py tests/test_losses_softmax.py tests/test_losses_triplet.py tests/test_losses_proxy.py \
    tests/test_losses_fast_paths.py 2>&1 | tail -3
  echo '```'
  echo
  "$PY" benchmarks/losses.py --device cuda --sizes 1024,4096,16384 --budget-s 0.5 2>&1
} | tee "$report"
cat "$report" >> docs/benchmarks.md
echo "gpu.sh: report in $report and appended to docs/benchmarks.md"
