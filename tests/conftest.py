"""Shared fixtures: the MNIST folder beside the repo (CI has it) and the shipped checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("DEFORMSCOPE_DATA", REPO.parent / "shared" / "data"))
CHECKPOINTS = REPO / "checkpoints"


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    if not (DATA_DIR / "MNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
        pytest.skip(f"MNIST not found under {DATA_DIR} (set DEFORMSCOPE_DATA to a folder with MNIST/raw/)")
    return DATA_DIR
