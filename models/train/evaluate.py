"""Accuracy of a checkpoint on the full MNIST test split, plain or transformed; scene models on
the fixed test scenes (per-digit accuracy by size, pixel accuracy on ink, mean IoU).

Examples::

    python -m models.train.evaluate checkpoints/deform_plain.pt --augment rotate --data-dir ../shared/data
    python -m models.train.evaluate checkpoints/scene_deform.pt --data-dir ../shared/data
"""

from __future__ import annotations

import argparse
import sys

from models.checkpoint import CheckpointError, load_checkpoint
from models.data.mnist import DEFAULT_DATA_DIR, DataError, load_mnist
from models.data.transforms import AUGMENTS, TEST_SEED, describe
from models.runtime import add_device_argument, describe_device, device_or_exit, keep_freed_memory, use_all_cpu_threads
from models.train.loop import accuracy


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.train.evaluate",
        description=(
            "Print a checkpoint's accuracy on the full MNIST test split (10,000 digits), "
            "untransformed or under a seeded augmentation (the same images for every model). Scene "
            "checkpoints are scored on the fixed test scenes made from the test split instead."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="+", help="one or more checkpoint files")
    p.add_argument(
        "--augment",
        default=["none"],
        nargs="+",
        help=f"test-time transform(s), each one of {', '.join(AUGMENTS)}",
    )
    p.add_argument("--seed", type=int, default=TEST_SEED, help="seed of the transformed test set")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with MNIST in torchvision's layout")
    p.add_argument("--test-scenes", type=int, default=500, help="scene checkpoints: how many fixed test scenes")
    add_device_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        for a in args.augment:
            describe(a)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    threads = use_all_cpu_threads()
    keep_freed_memory()  # large tensors are reused, not mapped afresh each step
    device = device_or_exit(args.device)
    print(f"# on {describe_device(device, threads)}", file=sys.stderr)
    try:
        test = load_mnist(args.data_dir, train=False)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    status = 0
    for path in args.checkpoint:
        try:
            model = load_checkpoint(path).to(device)
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        if getattr(model, "family", "digits") == "scenes":
            from models.train.scenes import evaluate_scenes, format_metrics, test_scenes

            scenes = test_scenes(test.images, test.labels, count=args.test_scenes)
            print(f"{path}\tscenes\t{format_metrics(evaluate_scenes(model, scenes))}")
            continue
        if getattr(model, "family", "digits") == "roi":
            from models.train.roi import roi_accuracy
            from models.train.scenes import test_scenes

            scenes = test_scenes(test.images, test.labels, count=args.test_scenes)
            exact, jittered = roi_accuracy(model, scenes), roi_accuracy(model, scenes, 0.3)
            print(f"{path}\troi\texact boxes {exact['accuracy']:.4f}\tjittered boxes {jittered['accuracy']:.4f}")
            continue
        for a in args.augment:
            acc = accuracy(model, test, a, args.seed)
            print(f"{path}\t{a}\t{acc:.4f}\t({describe(a)}; {test.description})")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
