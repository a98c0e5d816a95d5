"""Datasets as whole in-memory tensors: MNIST (and CIFAR-10 for users who have it).

Both are read through torchvision's dataset classes, so a folder in torchvision's layout works
offline and, where the network allows, torchvision downloads them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

DEFAULT_DATA_DIR = "data"


class DataError(RuntimeError):
    """A dataset could not be found, read or downloaded; the message says what to do."""


@dataclass
class Split:
    """Images ``(N, C, H, W)`` float32 in [0, 1] and labels ``(N,)`` int64."""

    images: Tensor
    labels: Tensor
    description: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, n: int | None) -> Split:
        if n is None or n >= len(self):
            return self
        return Split(self.images[:n], self.labels[:n], f"{self.description}, first {n}")


def _hint(dataset: str, data_dir: str | Path) -> str:
    folder = "MNIST/raw/" if dataset == "MNIST" else "cifar-10-batches-py/"
    return (
        f"{dataset} is not in {str(data_dir)!r} and could not be downloaded. Pass --data-dir with "
        f"a folder that holds torchvision's layout ({folder} inside it), e.g. --data-dir ../shared/data"
    )


def _remove_empty_new_dirs(root: Path, existed: set[Path]) -> None:
    """A failed download leaves empty folders behind; remove the ones it created."""
    for p in (root / "MNIST" / "raw", root / "MNIST", root):
        if p not in existed and p.is_dir() and not any(p.iterdir()):
            p.rmdir()


def load_mnist(data_dir: str | Path = DEFAULT_DATA_DIR, train: bool = True, download: bool = True) -> Split:
    """One MNIST split; downloads through torchvision when missing and ``download`` is true."""
    from torchvision.datasets import MNIST

    try:
        ds = MNIST(root=str(data_dir), train=train, download=False)
    except RuntimeError:
        if not download:
            raise DataError(_hint("MNIST", data_dir)) from None
        existed = {
            p for p in (Path(data_dir), Path(data_dir) / "MNIST", Path(data_dir) / "MNIST" / "raw") if p.exists()
        }
        try:
            ds = MNIST(root=str(data_dir), train=train, download=True)
        except Exception as exc:  # network errors come in many types
            _remove_empty_new_dirs(Path(data_dir), existed)
            raise DataError(f"{_hint('MNIST', data_dir)} (download failed: {exc})") from None
    images = ds.data.unsqueeze(1).float().div_(255.0)
    labels = ds.targets.long()
    name = "train" if train else "test"
    return Split(images, labels, f"MNIST {name} split from {data_dir} ({len(labels)} digits)")


def _cifar_without_checksums(root: str, train: bool):
    """torchvision's CIFAR10 reader minus its md5 check, for copies that differ from the
    official archive (re-packed or generated sets); the files must still parse."""
    from torchvision.datasets import CIFAR10

    class _Unchecked(CIFAR10):
        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).exists() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:  # class names are not used here; skip their checksum
            self.classes = [str(i) for i in range(10)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return _Unchecked(root=root, train=train, download=False)


def load_cifar10(data_dir: str | Path = DEFAULT_DATA_DIR, train: bool = True, download: bool = True) -> Split:
    """One CIFAR-10 split in torchvision's ``cifar-10-batches-py`` layout."""
    from torchvision.datasets import CIFAR10

    try:
        ds = CIFAR10(root=str(data_dir), train=train, download=False)
    except RuntimeError:
        folder = Path(data_dir) / "cifar-10-batches-py"
        if folder.is_dir():
            try:
                ds = _cifar_without_checksums(str(data_dir), train)
            except Exception as exc:
                raise DataError(f"CIFAR-10 files in {str(folder)!r} could not be read: {exc}") from None
            print(f"note: {folder} differs from the official CIFAR-10 checksums; reading it anyway", file=sys.stderr)
        elif not download:
            raise DataError(_hint("CIFAR-10", data_dir)) from None
        else:
            try:
                ds = CIFAR10(root=str(data_dir), train=train, download=True)
            except Exception as exc:
                raise DataError(f"{_hint('CIFAR-10', data_dir)} (download failed: {exc})") from None
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).float().div_(255.0)
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    name = "train" if train else "test"
    return Split(images, labels, f"CIFAR-10 {name} split from {data_dir} ({len(labels)} images)")


def load(dataset: str, data_dir: str | Path, train: bool, download: bool = True) -> Split:
    """``dataset`` is ``"mnist"`` or ``"cifar10"``."""
    if dataset == "mnist":
        return load_mnist(data_dir, train, download)
    if dataset == "cifar10":
        return load_cifar10(data_dir, train, download)
    raise ValueError(f"unknown dataset {dataset!r}; expected 'mnist' or 'cifar10'")
