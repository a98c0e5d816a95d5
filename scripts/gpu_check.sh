#!/usr/bin/env bash
# The checks that need a CUDA GPU, in one run: the GPU tests in tests/test_runtime.py (the layer
# with each implementation and under inference mode, training to a CPU checkpoint, every view
# against the CPU) and the CUDA benchmark whose numbers go in the README.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        (default OUT_DIR: runs/gpu_check)
#
# Python: $PYTHON, default .venv/bin/python (any Python whose torch sees the GPU and has its
# matching torchvision will do; the app's packages are not needed). Writes OUT_DIR/pytest.log and
# OUT_DIR/bench.log; exits non-zero when there is no GPU, a test fails or the benchmark fails.
set -uo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
out=${1:-runs/gpu_check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1

"$py" - <<'EOF' || exit 2
import sys

import torch
import torchvision

print(f"python {sys.version.split()[0]}, torch {torch.__version__}, torchvision {torchvision.__version__}")
if not torch.cuda.is_available():
    sys.exit("error: torch sees no CUDA GPU on this machine; these checks need one")
print(f"GPU 0: {torch.cuda.get_device_name(0)}")
EOF

status=0
echo "== GPU tests -> $out/pytest.log"
"$py" -m pytest -q -rs -p no:cacheprovider tests/test_runtime.py 2>&1 | tee "$out/pytest.log" \
    || status=1
echo "== python -m models.bench --device cuda -> $out/bench.log"
"$py" -m models.bench --device cuda 2>&1 | tee "$out/bench.log" || status=1
echo "== $([ $status -eq 0 ] && echo "all passed" || echo "FAILED: see the logs above")"
exit $status
