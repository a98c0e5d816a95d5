"""The bundled sample digits: 100 MNIST test digits (10 of each class), so the figures and the
app work on a fresh clone without any download."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

SAMPLES_FILE = Path(__file__).resolve().parent / "data" / "mnist_test_samples.npz"


@dataclass(frozen=True)
class Samples:
    """``images`` ``(100, 1, 28, 28)`` float32 in [0, 1]; ``labels`` ``(100,)``; ``test_indices``:
    each digit's index in the official MNIST test split."""

    images: Tensor
    labels: Tensor
    test_indices: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def load_samples() -> Samples:
    with np.load(SAMPLES_FILE, allow_pickle=False) as data:
        images = torch.from_numpy(data["images"].astype(np.float32) / 255.0).unsqueeze(1)
        return Samples(
            images,
            torch.from_numpy(data["labels"].astype(np.int64)),
            torch.from_numpy(data["test_indices"].astype(np.int64)),
        )
