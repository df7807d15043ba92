#!/usr/bin/env bash
# Every GPU check in one go, on the lent GPU machine (../shared/device/README.md): stage-1 throughput
# for MiniLM and mpnet in fp32 and bf16 against the card's peak, a stage-3 step (bench_gpu.py), then
# the GPU tests (tests/test_gpu.py; the Ray case skips itself where Ray is not installed).
#
#   ../shared/device/prepare.sh engine        # here, once: .device/ (MiniLM, the data sets)
#   bash scripts/gpu_check.sh                 # there, from the project root (about 5 minutes on an H200)
set -u
source .device/env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 scripts/bench_gpu.py
if python3 -c "import pytest" 2>/dev/null; then
  python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py 2>&1 | tail -20
else
  echo "tests/test_gpu.py: not run (no pytest on this machine)"
fi
