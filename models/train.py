"""Train an MNIST classifier and save a checkpoint.

Example (the shipped plain deformable model)::

    python -m models.train --arch deform --augment none --epochs 12 \\
        --data-dir ../shared/data --out checkpoints/deform_plain.pt
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

from models.checkpoint import save_checkpoint
from models.data import DEFAULT_DATA_DIR, DataError, load_mnist
from models.nets import ARCHS
from models.training import TrainConfig, accuracy, config_dict, model_config, train, use_all_cpu_threads
from models.transforms import AUGMENTS, describe


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.train",
        description=(
            "Train a deformable (DCNv1), modulated deformable (DCNv2) or regular-conv MNIST "
            "classifier on CPU and save a checkpoint with its config, training data, seed and "
            "measured test accuracy."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--arch",
        choices=ARCHS,
        default="deform",
        help="deform = DCNv1, deform2 = DCNv2 (modulated), regular = plain 3x3 convs",
    )
    p.add_argument("--augment", default="none", help=f"training augmentation: one of {', '.join(AUGMENTS)}")
    p.add_argument("--epochs", type=int, default=12, help="passes over the training set")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of the one-cycle schedule")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        describe(args.augment)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads = use_all_cpu_threads()
    try:
        train_split = load_mnist(args.data_dir, train=True).subset(args.train_limit)
        test_split = load_mnist(args.data_dir, train=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
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
        f"augmentation: {describe(args.augment)}, {threads} CPU threads"
    )
    model, log = train(config, train_split, progress=not args.no_progress)
    acc = accuracy(model, test_split)
    meta = {
        "train_data": train_split.description,
        "test_data": test_split.description,
        "train": config_dict(config),
        "log": log,
        "test_accuracy": acc,
        "torch": str(torch.__version__),
        "python": platform.python_version(),
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


if __name__ == "__main__":
    raise SystemExit(main())
