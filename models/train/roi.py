"""Train and evaluate the RoI classifiers (``models.nets.roi``) on scenes.

    python -m models.train.roi --arch deform --data-dir ../shared/data --out checkpoints/roi_deform.pt
    python -m models.train.roi --arch regular --data-dir ../shared/data --out checkpoints/roi_regular.pt

The backbone is the shipped ``scene_regular`` model's, frozen (BN in eval mode): both twins
start from the same features and differ only in the pooling, so their accuracies compare the
pooling alone. Every step draws fresh training scenes (as scene training does) and jitters
each digit's box by up to 30% of its size (shift and per-side scale), so that bins must move
to find the digit. Test: the 500 fixed test scenes, once with the exact boxes and once with
boxes jittered by a fixed seed (the same for every model).
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from models.checkpoint import CHECKPOINT_DIR, CheckpointError, load_checkpoint, save_checkpoint
from models.data.mnist import DEFAULT_DATA_DIR, DataError, load_mnist
from models.data.scenes import SIZE_CLASSES, TEST_SEED, Scenes, generate, size_class
from models.nets.roi import POOL_ARCHS, RoiNet, jitter_boxes, rois_from_boxes
from models.runtime import (
    add_device_argument,
    describe_device,
    device_or_exit,
    keep_freed_memory,
    model_device,
    use_all_cpu_threads,
)
from models.train.scenes import TRAIN_SEED_OFFSET, test_scenes

#: Jitter of the test boxes: its own seed, so every model sees the same boxes.
TEST_JITTER_SEED = TEST_SEED + 1


@dataclass
class RoiTrainConfig:
    arch: str = "deform"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    jitter: float = 0.3
    seed: int = 0
    backbone: str = "scene_regular"


def new_model(config: RoiTrainConfig) -> RoiNet:
    """A fresh RoI model on the frozen backbone of the ``config.backbone`` scene checkpoint."""
    path = Path(config.backbone)
    scene = load_checkpoint(path if path.exists() else CHECKPOINT_DIR / f"{config.backbone}.pt")
    if getattr(scene, "family", None) != "scenes" or scene.arch != "regular":
        raise CheckpointError(f"--backbone {config.backbone!r} is not a regular scene model")
    model = RoiNet(config.arch, widths=scene.widths, mean=float(scene.mean), std=float(scene.std))
    model.backbone.load_state_dict(scene.state_dict())
    for p in model.backbone.parameters():
        p.requires_grad_(False)
    return model


def train_roi(
    config: RoiTrainConfig,
    digits: Tensor,
    labels: Tensor,
    progress: bool = True,
    device: torch.device | str = "cpu",
) -> tuple[RoiNet, dict[str, Any]]:
    """Train the pooling and head of a fresh RoI model on ``device`` (scenes and jittered boxes
    are drawn on the CPU, the same on every device, then moved)."""
    device = torch.device(device)
    torch.manual_seed(config.seed)
    model = new_model(config).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(config.steps, 1))
    gen = torch.Generator().manual_seed(config.seed)
    seed = config.seed + TRAIN_SEED_OFFSET
    log: dict[str, Any] = {"checkpoints": []}
    start = time.perf_counter()
    model.train()
    model.backbone.eval()  # frozen, BN statistics included
    window, n = 0.0, 0
    with tqdm(total=config.steps, desc=f"train roi {config.arch}", disable=not progress, unit="step") as bar:
        for step in range(config.steps):
            batch = generate(digits, labels, config.batch_size, seed, start=step * config.batch_size)
            boxes = jitter_boxes(batch.boxes, gen, config.jitter)
            with torch.no_grad():
                feats = model.features(batch.images.to(device))
            logits = model.head(model.pooled(feats, rois_from_boxes(boxes, batch.scene).to(device)))
            loss = F.cross_entropy(logits, batch.labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            window, n = window + loss.item(), n + 1
            bar.update(1)
            if (step + 1) % 250 == 0 or step + 1 == config.steps:
                log["checkpoints"].append(
                    {"step": step + 1, "loss": window / n, "seconds": time.perf_counter() - start}
                )
                bar.set_postfix(loss=f"{window / n:.4f}")
                window, n = 0.0, 0
    log["train_seconds"] = time.perf_counter() - start
    model.eval()
    return model, log


@torch.no_grad()
def roi_accuracy(model: RoiNet, scenes: Scenes, jitter: float = 0.0, batch: int = 100) -> dict[str, Any]:
    """Per-digit accuracy on ``scenes`` with exact boxes (``jitter`` 0) or boxes jittered with
    :data:`TEST_JITTER_SEED`; overall and by size class."""
    gen = torch.Generator().manual_seed(TEST_JITTER_SEED)
    boxes = jitter_boxes(scenes.boxes, gen, jitter) if jitter > 0 else scenes.boxes
    preds = torch.empty(len(scenes.labels), dtype=torch.long)
    dev = model_device(model)
    for s0 in range(0, len(scenes), batch):
        sel = (scenes.scene >= s0) & (scenes.scene < s0 + batch)
        feats = model.features(scenes.images[s0 : s0 + batch].to(dev))
        rois = rois_from_boxes(boxes[sel], scenes.scene[sel] - s0).to(dev)
        preds[sel] = model.head(model.pooled(feats, rois)).argmax(1).cpu()
    right = preds == scenes.labels
    sizes = size_class(scenes.heights)
    return {
        "accuracy": float(right.float().mean()),
        "by_size": {name: float(right[sizes == k].float().mean()) for k, name in enumerate(SIZE_CLASSES)},
        "digits": int(right.numel()),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.train.roi", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", choices=POOL_ARCHS, default="deform", help="deformable RoI pooling or plain RoI Align")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32, help="scenes per step")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--jitter", type=float, default=0.3, help="box shift / scale, as a fraction of its size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="scene_regular", help="regular scene checkpoint whose backbone is reused")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--test-scenes", type=int, default=500)
    p.add_argument("--out", required=True, help="checkpoint to write")
    p.add_argument("--no-progress", action="store_true")
    add_device_argument(p)
    args = p.parse_args(argv)
    threads = use_all_cpu_threads()
    keep_freed_memory()  # large tensors are reused, not mapped afresh each step
    device = device_or_exit(args.device)
    config = RoiTrainConfig(
        args.arch, args.steps, args.batch_size, args.lr, jitter=args.jitter, seed=args.seed, backbone=args.backbone
    )
    try:
        train_split, test_split = load_mnist(args.data_dir, train=True), load_mnist(args.data_dir, train=False)
        new_model(config)  # fail early on a bad backbone
    except (DataError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"training RoI model {args.arch}: {args.steps} steps x {args.batch_size} scenes, "
        f"on {describe_device(device, threads)}"
    )
    model, log = train_roi(config, train_split.images, train_split.labels, progress=not args.no_progress, device=device)
    test = test_scenes(test_split.images, test_split.labels, count=args.test_scenes)
    metrics = {"exact": roi_accuracy(model, test), "jittered": roi_accuracy(model, test, args.jitter)}
    meta = {
        "task": "roi",
        "train_data": f"scenes from {train_split.description}, boxes jittered by {args.jitter:g}",
        "test_data": f"{len(test)} fixed test scenes from {test_split.description}",
        "train": asdict(config),
        "log": log,
        "test_metrics": metrics,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "command": "python -m models.train.roi " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    save_checkpoint(model, Path(args.out), model.config(), meta)
    for k, m in metrics.items():
        by = " / ".join(f"{100 * v:.2f}%" for v in m["by_size"].values())
        print(f"test, {k} boxes: {100 * m['accuracy']:.2f}% of {m['digits']} digits (small / medium / large {by})")
    print(f"saved {args.out} ({log['train_seconds']:.0f} s of training)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
