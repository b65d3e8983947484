#!/usr/bin/env bash
# Every GPU check in one call of the device tool, at most 6 minutes in all
# (docs/performance.md#on-a-gpu). Once per checkout, on the CPU machine:
#   ../shared/tools/gpu-bundle                    # fills the git-ignored .gpu/
# then one device call, with carry [".gpu"] and a timeout that leaves room for a rerun:
#   source .gpu/setup.sh && bash benchmarks/gpu.sh
# Parts, in order, each under its own `timeout` (seconds), each going on whatever the
# others did:
#   probe   30  versions; one deterministic graphed step in fp32 and one in bf16
#   tests  100  the CUDA tests only (tests/pipeline/training/test_cuda.py), 60 s a test
#   step    45  benchmarks.step: every row alone, graphed against eager, fp32 against bf16
#   repeat 110  benchmarks.repeat: conv d=100 (and linear d=10), 2 epochs, 8192 images,
#               twice in separate processes: the same bits?
#   epoch   65  benchmarks.epoch: the conv d=100 epoch against the exercise's loop on CUDA
# Each part's output goes to OUT/PART.log and here; OUT/gpu-summary.txt says which part
# passed, failed or timed out. OUT is the device tool's $OUT, else ./outputs/gpu.
# Without a CUDA device it stops at once: one line, exit 3, nothing written.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
if ! "$py" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null; then
  echo "benchmarks/gpu.sh: no CUDA device here (torch.cuda.is_available() is False in $py): run it on the GPU machine" >&2
  exit 3
fi
out=${OUT:-outputs/gpu}
mkdir -p "$out"
summary=$out/gpu-summary.txt
failed=0

part() { # part NAME SECONDS COMMAND...: the command under timeout; one summary line
  local name=$1 limit=$2 start=$SECONDS code verdict
  shift 2
  echo "== $name (at most $limit s): $*"
  timeout -k 5 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  code=${PIPESTATUS[0]}
  if [ "$code" = 0 ]; then
    verdict=passed
  elif [ "$code" = 124 ] || [ "$code" = 137 ]; then
    verdict="TIMED OUT"
  else
    verdict="FAILED (exit $code)"
  fi
  [ "$code" = 0 ] || failed=$((failed + 1))
  printf '%-7s %-18s %4d s  %s\n' "$name" "$verdict" $((SECONDS - start)) "$out/$name.log" |
    tee -a "$summary"
}

{
  echo "benchmarks/gpu.sh at $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1
} | tee "$summary"

# pytest-timeout stops a test that hangs (a capture that never returns) and goes on with
# the next; without it, only the part's own timeout stops them all.
per_test=()
if "$py" -c 'import pytest_timeout' 2>/dev/null; then
  per_test=(--timeout 60)
else
  echo "pytest-timeout is missing: the tests part has only its own timeout" | tee -a "$summary"
fi

part probe 30 "$py" -m benchmarks.step --probe
part tests 100 "$py" -m pytest -q -rs -p no:cacheprovider "${per_test[@]}" \
  tests/pipeline/training/test_cuda.py
part step 45 "$py" -m benchmarks.step --repeats 100
part repeat 110 "$py" -m benchmarks.repeat -P latent_dims=100 -P epochs=2 \
  -P train_limit=8192 -P test_limit=2048
part epoch 65 "$py" -m benchmarks.epoch --device cuda --models conv --epochs 3 --data-dir data

echo "$failed of 5 parts failed or timed out" | tee -a "$summary"
[ "$failed" = 0 ]
