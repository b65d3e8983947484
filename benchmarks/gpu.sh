#!/usr/bin/env bash
# The GPU checks, prepared to run on the lent GPU machine in as few device minutes as they
# take (docs/performance.md#on-a-gpu). Once per checkout, on the CPU machine:
#   ../shared/tools/gpu-bundle                    # fills the git-ignored .gpu/
# then through the device tool, with carry [".gpu"], one part per call (each under 10 min):
#   source .gpu/setup.sh && bash benchmarks/gpu.sh tests    # CUDA tests, step benchmark (~3 min)
#   source .gpu/setup.sh && bash benchmarks/gpu.sh epoch    # epoch against the exercise (~3 min)
#   source .gpu/setup.sh && bash benchmarks/gpu.sh study    # default study twice, 3 seeds (~6 min)
# Everything it prints goes to $OUT/gpu-PART.log too, where the device tool sets OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:?usage: benchmarks/gpu.sh tests|epoch|study}
log=${OUT:-.}/gpu-$part.log
py=${PYTHON:-python3}
{
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  "$py" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  case $part in
    tests)
      "$py" -m pytest -q -rs -p no:cacheprovider tests/pipeline/training/test_cuda.py \
        tests/pipeline/training/test_graphs.py tests/pipeline/training/test_hardware.py
      "$py" -m benchmarks.step
      ;;
    epoch)
      "$py" -m benchmarks.epoch --device cuda --epochs 3
      ;;
    study)
      "$py" -m benchmarks.repeat                          # sweep <= 30 s; the same MSEs twice
      "$py" -m benchmarks.study -P seeds=0,1,2 -P parallel=4   # sweep <= 60 s
      ;;
    *) echo "unknown part $part: tests, epoch or study" >&2; exit 2 ;;
  esac
} 2>&1 | tee "$log"
