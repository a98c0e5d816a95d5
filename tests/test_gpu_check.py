"""scripts/gpu_check.sh: on a machine without a GPU it stops at once, says why, and runs nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the script would run the real checks")
def test_without_a_gpu_it_says_so_and_runs_nothing(tmp_path):
    out = tmp_path / "logs"
    env = {**os.environ, "PYTHON": sys.executable}
    res = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh"), str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2
    assert "sees no CUDA GPU" in res.stderr and f"torch {torch.__version__}" in res.stdout
    assert list(out.iterdir()) == []  # neither the tests nor the benchmark started
