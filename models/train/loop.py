"""The training and evaluation loops shared by ``models.train``, ``models.train.evaluate`` and
``models.train.experiment``. Data lives in memory as tensors; augmentation is applied per batch."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from models.data.mnist import Split
from models.data.transforms import describe, parse_augment, random_transform, transformed_test_set
from models.nets.digits import MnistNet
from models.runtime import model_device


@dataclass
class TrainConfig:
    """Everything that determines a training run (stored in the checkpoint)."""

    arch: str = "deform"
    augment: str = "none"
    epochs: int = 12
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    seed: int = 0
    widths: tuple[int, int, int, int] = (32, 64, 64, 128)
    max_steps: int | None = None  # stop early (tests and smoke runs)
    extra: dict[str, Any] = field(default_factory=dict)


def build_for(config: TrainConfig, data: Split) -> MnistNet:
    in_channels = int(data.images.shape[1])
    mean = float(data.images.mean())
    std = float(data.images.std())
    return MnistNet(config.arch, widths=config.widths, in_channels=in_channels, mean=mean, std=std)


def model_config(model: MnistNet, config: TrainConfig) -> dict[str, Any]:
    return model.config()


def train(
    config: TrainConfig,
    data: Split,
    progress: bool = True,
    desc: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[MnistNet, dict[str, Any]]:
    """Train a fresh model on ``device``; returns it (eval mode, on ``device``) and a log of
    per-epoch loss/accuracy/time. Batches are drawn and augmented on the CPU with the seeded
    generator (the same batches on every device) and then moved."""
    parse_augment(config.augment)  # fail early on a bad name
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model = build_for(config, data).to(device)
    gen = torch.Generator().manual_seed(config.seed)
    n = len(data)
    steps_per_epoch = (n + config.batch_size - 1) // config.batch_size
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(total, 1))
    log: dict[str, Any] = {"epochs": []}
    step = 0
    start = time.perf_counter()
    bar = tqdm(total=total, desc=desc or f"train {config.arch}", disable=not progress, unit="step")
    model.train()
    for epoch in range(config.epochs):
        perm = torch.randperm(n, generator=gen)
        seen = correct = 0
        loss_sum = 0.0
        t0 = time.perf_counter()
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = perm[b * config.batch_size : (b + 1) * config.batch_size]
            x = random_transform(data.images[idx], config.augment, gen).to(device, non_blocking=True)
            y = data.labels[idx].to(device, non_blocking=True)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(y)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
            bar.update(1)
            bar.set_postfix(
                epoch=f"{epoch + 1}/{config.epochs}", loss=f"{loss_sum / seen:.4f}", acc=f"{correct / seen:.4f}"
            )
        if seen:
            log["epochs"].append(
                {
                    "epoch": epoch + 1,
                    "loss": loss_sum / seen,
                    "train_acc": correct / seen,
                    "seconds": time.perf_counter() - t0,
                }
            )
        if step >= total:
            break
    bar.close()
    log["train_seconds"] = time.perf_counter() - start
    log["steps"] = step
    model.eval()
    return model, log


@torch.no_grad()
def predict(model: torch.nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Class predictions ``(N,)`` (on the CPU) for images ``(N, C, H, W)``, run on the model's
    device."""
    model.eval()
    dev = model_device(model)
    out = [model(images[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: torch.nn.Module, data: Split, augment: str = "none", seed: int | None = None) -> float:
    """Accuracy on ``data``, optionally transformed with the seeded test-time augmentation."""
    images = (
        transformed_test_set(data.images, augment) if seed is None else transformed_test_set(data.images, augment, seed)
    )
    return float((predict(model, images) == data.labels).float().mean())


def config_dict(config: TrainConfig) -> dict[str, Any]:
    d = asdict(config)
    d["widths"] = list(config.widths)
    d["augment_params"] = describe(config.augment)
    return d
