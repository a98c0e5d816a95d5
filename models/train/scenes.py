"""Training and evaluation of the dense scene models (``python -m models.train --task scenes``).

Training scenes are drawn fresh for every step from the training digits: step ``t`` uses scenes
``t * batch_size .. (t + 1) * batch_size - 1`` of the set named by ``seed + TRAIN_SEED_OFFSET``,
so a run is reproducible from its seed and never sees a test digit. The loss is per-pixel
cross-entropy over 11 classes; pixels on a digit's ink weigh ``ink_weight`` times a background
pixel, because ink is only about a tenth of a scene and small digits are only a few pixels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from models.data.scenes import (
    BACKGROUND,
    NUM_CLASSES,
    SIZE_CLASSES,
    TEST_SCENES,
    TEST_SEED,
    SceneConfig,
    Scenes,
    config_from_dict,
    generate,
    size_class,
)
from models.nets.scenes import DEFAULT_WIDTHS, SceneNet
from models.runtime import model_device

TRAIN_SEED_OFFSET = 1_000_003  # training scene sets never share a seed with the test set


@dataclass
class SceneTrainConfig:
    """Everything that determines a scene training run (stored in the checkpoint)."""

    arch: str = "deform"
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    widths: tuple[int, ...] = DEFAULT_WIDTHS
    ink_weight: float = 3.0
    offset_lr_factor: float = 1.0
    scene: dict[str, Any] = field(default_factory=lambda: asdict(SceneConfig()))


def test_scenes(digits: Tensor, labels: Tensor, config: SceneConfig | None = None, count: int = TEST_SCENES) -> Scenes:
    """The fixed test set: the first ``count`` scenes of ``TEST_SEED`` from test digits."""
    return generate(digits, labels, count, TEST_SEED, config)


def is_offset_branch(name: str) -> bool:
    """Whether parameter ``name`` belongs to a layer's offset/mask branch: DCNv1/v2's
    ``offset_conv`` / ``mask_conv``, DCNv3's ``offset`` / ``mask`` linears, DCNv4's ``offset_mask``."""
    parts = name.split(".")
    return any(p in ("offset_conv", "mask_conv", "offset", "mask", "offset_mask") for p in parts[:-1])


def _param_groups(model: SceneNet, lr: float, offset_lr_factor: float, weight_decay: float) -> list[dict[str, Any]]:
    branch = [p for n, p in model.named_parameters() if is_offset_branch(n)]
    ids = {id(p) for p in branch}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
    if branch:
        groups.append({"params": branch, "lr": lr * offset_lr_factor, "weight_decay": 0.0})
    return groups


def pixel_loss(logits: Tensor, classes: Tensor, ink_weight: float) -> Tensor:
    """Per-pixel cross-entropy, ink pixels weighted ``ink_weight``."""
    loss = F.cross_entropy(logits, classes, reduction="none")
    w = torch.where(classes == BACKGROUND, 1.0, float(ink_weight))
    return (loss * w).sum() / w.sum()


def train_scenes(
    config: SceneTrainConfig,
    digits: Tensor,
    labels: Tensor,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[SceneNet, dict[str, Any]]:
    """Train a fresh scene model on scenes made from ``digits`` (training split only), on
    ``device`` (scenes are drawn on the CPU, the same on every device, then moved)."""
    device = torch.device(device)
    scene_cfg = config_from_dict(config.scene)
    torch.manual_seed(config.seed)
    seed = config.seed + TRAIN_SEED_OFFSET
    probe = generate(digits, labels, 256, seed, scene_cfg, start=10**9)  # statistics, not trained on
    model = SceneNet(
        config.arch, widths=tuple(config.widths), mean=float(probe.images.mean()), std=float(probe.images.std())
    ).to(device)  # type: ignore[arg-type]
    opt = torch.optim.AdamW(_param_groups(model, config.lr, config.offset_lr_factor, config.weight_decay))
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=[g["lr"] for g in opt.param_groups], total_steps=max(config.steps, 1)
    )
    log: dict[str, Any] = {"checkpoints": []}
    start = time.perf_counter()
    bar = tqdm(total=config.steps, desc=f"train scenes {config.arch}", disable=not progress, unit="step")
    model.train()
    loss_avg = None
    window_sum, window_n = 0.0, 0
    for step in range(config.steps):
        batch = generate(digits, labels, config.batch_size, seed, scene_cfg, start=step * config.batch_size)
        logits = model(batch.images.to(device, non_blocking=True))
        loss = pixel_loss(logits, batch.classes.to(device, non_blocking=True), config.ink_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = loss.item()
        loss_avg = value if loss_avg is None else 0.98 * loss_avg + 0.02 * value
        window_sum, window_n = window_sum + value, window_n + 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss_avg:.4f}")
        if (step + 1) % 250 == 0 or step + 1 == config.steps:
            # the mean loss over the steps since the previous entry
            entry = {"step": step + 1, "loss": window_sum / window_n, "seconds": time.perf_counter() - start}
            log["checkpoints"].append(entry)
            window_sum, window_n = 0.0, 0
    bar.close()
    log["train_seconds"] = time.perf_counter() - start
    log["steps"] = config.steps
    model.eval()
    return model, log


@torch.no_grad()
def predict_scenes(model: torch.nn.Module, images: Tensor, batch_size: int = 64) -> Tensor:
    """Per-pixel logits ``(N, 11, H, W)`` on the CPU, computed on the model's device."""
    model.eval()
    dev = model_device(model)
    return torch.cat([model(images[i : i + batch_size].to(dev)).cpu() for i in range(0, images.shape[0], batch_size)])


def scene_metrics(logits: Tensor, scenes: Scenes) -> dict[str, Any]:
    """Per-pixel accuracy on ink, mean IoU over the 11 classes, and per-digit accuracy (majority
    vote of the digit classes predicted over the digit's ink) overall and by size class.

    Args:
        logits: ``(N, 11, H, W)`` for ``scenes``.
    """
    pred = logits.argmax(1)
    cls = scenes.classes
    ink = cls != BACKGROUND
    out: dict[str, Any] = {"pixel_accuracy_ink": float((pred[ink] == cls[ink]).float().mean())}
    ious = []
    for c in range(NUM_CLASSES):
        inter = ((pred == c) & (cls == c)).sum()
        union = ((pred == c) | (cls == c)).sum()
        if union > 0:
            ious.append(float(inter) / float(union))
    out["mean_iou"] = sum(ious) / len(ious)
    # Majority vote among the 10 digit classes over each digit's own ink pixels.
    digit_pred = logits[:, :BACKGROUND].argmax(1)
    correct = torch.zeros(len(scenes.labels), dtype=torch.bool)
    for d in range(len(scenes.labels)):
        s, i = int(scenes.scene[d]), int(scenes.index[d])
        votes = digit_pred[s][scenes.instances[s] == i]
        if votes.numel():
            correct[d] = int(torch.bincount(votes, minlength=10).argmax()) == int(scenes.labels[d])
    out["digit_accuracy"] = float(correct.float().mean())
    sizes = size_class(scenes.heights)
    out["digit_accuracy_by_size"] = {
        name: float(correct[sizes == k].float().mean()) if (sizes == k).any() else float("nan")
        for k, name in enumerate(SIZE_CLASSES)
    }
    out["digits_by_size"] = {name: int((sizes == k).sum()) for k, name in enumerate(SIZE_CLASSES)}
    out["digits"] = len(scenes.labels)
    out["scenes"] = len(scenes)
    return out


def evaluate_scenes(model: torch.nn.Module, scenes: Scenes) -> dict[str, Any]:
    return scene_metrics(predict_scenes(model, scenes.images), scenes)


def format_metrics(m: dict[str, Any]) -> str:
    by = m["digit_accuracy_by_size"]
    n = m["digits_by_size"]
    sizes = ", ".join(f"{k} {100 * by[k]:.2f}% (n={n[k]})" for k in SIZE_CLASSES)
    return (
        f"per-digit accuracy {100 * m['digit_accuracy']:.2f}% ({sizes}); "
        f"pixel accuracy on ink {100 * m['pixel_accuracy_ink']:.2f}%; mean IoU {100 * m['mean_iou']:.2f}% "
        f"({m['scenes']} scenes, {m['digits']} digits)"
    )
