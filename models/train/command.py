"""Train an MNIST classifier or a dense scene model and save a checkpoint.

Examples (a shipped digit model and a shipped scene model)::

    python -m models.train --arch deform --augment none --epochs 12 \\
        --data-dir ../shared/data --out checkpoints/deform_plain.pt
    python -m models.train --task scenes --arch deform --steps 4000 \\
        --data-dir ../shared/data --out checkpoints/scene_deform.pt
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from models.checkpoint import save_checkpoint
from models.data.mnist import DEFAULT_DATA_DIR, DataError, load_mnist
from models.data.scenes import TEST_SEED as TEST_SCENE_SEED
from models.data.transforms import AUGMENTS, describe
from models.nets.digits import ARCHS, SCENE_ARCHS
from models.runtime import add_device_argument, describe_device, device_or_exit, keep_freed_memory, use_all_cpu_threads
from models.train.loop import TrainConfig, accuracy, config_dict, model_config, train


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.train",
        description=(
            "Train a deformable (DCNv1), modulated deformable (DCNv2) or regular-conv model (on the GPU "
            "when there is one, else the CPU) "
            "and save a checkpoint with its config, training data, seed and measured test metrics. "
            "--task digits: an MNIST classifier (28x28). --task scenes: a per-pixel classifier of "
            "canvases holding 1-4 digits of very different sizes (models.data.scenes), where the "
            "deformable layers' adaptation to object size shows."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--task", choices=("digits", "scenes"), default="digits", help="what the model learns")
    p.add_argument(
        "--arch",
        choices=SCENE_ARCHS,
        default="deform",
        help="deform = DCNv1, deform2 = DCNv2 (modulated), regular = plain 3x3 convs; scenes only: "
        "dcnv3 = InternImage's DCNv3, dcnv4 = FlashInternImage's DCNv4 (4 groups)",
    )
    p.add_argument("--augment", default="none", help=f"digits: training augmentation, one of {', '.join(AUGMENTS)}")
    p.add_argument("--epochs", type=int, default=12, help="digits: passes over the training set")
    p.add_argument("--batch-size", type=int, default=None, help="default 128 for digits, 32 for scenes")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
    scenes = p.add_argument_group("scenes (--task scenes)")
    scenes.add_argument("--steps", type=int, default=4000, help="optimiser steps; every step draws fresh scenes")
    scenes.add_argument("--scene-size", type=int, default=64, help="canvas side in pixels (divisible by 4)")
    scenes.add_argument("--rotate", type=float, default=0.0, help="rotate digits by U(-deg, deg)")
    scenes.add_argument("--ink-weight", type=float, default=3.0, help="loss weight of ink pixels vs background")
    scenes.add_argument(
        "--offset-lr-factor", type=float, default=1.0, help="learning-rate factor of the offset/mask branches"
    )
    scenes.add_argument("--test-scenes", type=int, default=500, help="size of the fixed test set scored at the end")
    p.add_argument("--seed", type=int, default=0, help="seed for weights, batch order and augmentation")
    p.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="folder with MNIST in torchvision's layout (MNIST/raw/); downloaded there if missing and online",
    )
    p.add_argument("--train-limit", type=int, default=None, help="use only the first N training digits")
    p.add_argument("--max-steps", type=int, default=None, help="stop after N optimiser steps (smoke tests)")
    p.add_argument(
        "--out", required=True, help="checkpoint path to write (atomically), e.g. checkpoints/deform_plain.pt"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_argument(p)
    return p


def _splits(args: argparse.Namespace):
    """The training split (first ``--train-limit`` digits) and the test split."""
    return load_mnist(args.data_dir, train=True).subset(args.train_limit), load_mnist(args.data_dir, train=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # check the options before the data is read, then read it once for either task
    if args.task == "scenes" and args.scene_size % 4:
        print(f"error: --scene-size must be divisible by 4, got {args.scene_size}", file=sys.stderr)
        return 2
    if args.task == "digits":
        try:
            describe(args.augment)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    threads = use_all_cpu_threads()
    keep_freed_memory()  # large tensors are reused, not mapped afresh each step
    device = device_or_exit(args.device)
    args.device_name = describe_device(device, threads)
    try:
        train_split, test_split = _splits(args)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.task == "scenes":
        return train_scenes_command(args, argv, device, train_split, test_split)
    if args.arch not in ARCHS:
        print(
            f"error: --arch {args.arch} is for scene models (--task scenes); digit models are {', '.join(ARCHS)}",
            file=sys.stderr,
        )
        return 2
    args.batch_size = args.batch_size or 128
    config = TrainConfig(
        arch=args.arch,
        augment=args.augment,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    print(
        f"training {args.arch} on {train_split.description}, "
        f"augmentation: {describe(args.augment)}, on {args.device_name}"
    )
    model, log = train(config, train_split, progress=not args.no_progress, device=device)
    acc = accuracy(model, test_split)
    meta = {
        "train_data": train_split.description,
        "test_data": test_split.description,
        "train": config_dict(config),
        "log": log,
        "test_accuracy": acc,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "device": args.device_name,
        "command": "python -m models.train " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    if args.augment != "none":
        meta["test_accuracy_augmented"] = accuracy(model, test_split, args.augment)
    save_checkpoint(model, Path(args.out), model_config(model, config), meta)
    extra = (
        f", {meta['test_accuracy_augmented']:.2%} on the test split with the same augmentation"
        if "test_accuracy_augmented" in meta
        else ""
    )
    print(f"test accuracy {acc:.2%} on {test_split.description}{extra}")
    print(f"saved {args.out} ({log['train_seconds']:.0f} s of training)")
    return 0


def train_scenes_command(
    args: argparse.Namespace, argv: list[str] | None, device: torch.device, train_split, test_split
) -> int:
    from dataclasses import asdict

    from models.data.scenes import SceneConfig
    from models.train.scenes import SceneTrainConfig, evaluate_scenes, format_metrics, test_scenes, train_scenes

    scene = SceneConfig(size=args.scene_size, rotate=args.rotate, max_height=min(54.0, 0.85 * args.scene_size))
    config = SceneTrainConfig(
        arch=args.arch,
        steps=args.max_steps or args.steps,
        batch_size=args.batch_size or 32,
        lr=args.lr,
        seed=args.seed,
        ink_weight=args.ink_weight,
        offset_lr_factor=args.offset_lr_factor,
        scene=asdict(scene),
    )
    print(
        f"training scene model {args.arch}: {config.steps} steps x {config.batch_size} fresh {scene.size}x{scene.size} "
        f"scenes from {train_split.description}, on {args.device_name}"
    )
    model, log = train_scenes(
        config, train_split.images, train_split.labels, progress=not args.no_progress, device=device
    )
    test = test_scenes(test_split.images, test_split.labels, scene, args.test_scenes)
    metrics = evaluate_scenes(model, test)
    meta = {
        "task": "scenes",
        "train_data": f"scenes from {train_split.description}",
        "test_data": f"{len(test)} fixed test scenes (seed {TEST_SCENE_SEED}) from {test_split.description}",
        "train": asdict(config),
        "log": log,
        "test_metrics": metrics,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
        "device": args.device_name,
        "command": "python -m models.train " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    save_checkpoint(model, Path(args.out), model.config(), meta)
    print(f"test: {format_metrics(metrics)}")
    print(f"saved {args.out} ({log['train_seconds']:.0f} s of training)")
    return 0
