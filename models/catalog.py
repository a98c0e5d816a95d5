"""Print a Markdown table of checkpoints from their stored metadata (no data needed).

python -m models.catalog [checkpoints/*.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.checkpoint import CHECKPOINT_DIR, CheckpointError, load_checkpoint

#: Every shipped deformable checkpoint and its regular twin (same data, same recipe, no offsets),
#: with a one-line description. The one place this pairing is stated.
TWINS: dict[str, tuple[str, str]] = {
    "scene_deform": ("scene_regular", "scenes: DCNv1, per-pixel digit classes on 64x64 canvases"),
    "scene_deform2": ("scene_regular", "scenes: DCNv2 (modulated), per-pixel digit classes on 64x64 canvases"),
    "scene_dcnv3": ("scene_regular", "scenes: DCNv3 (InternImage's layer, 4 groups), per-pixel digit classes"),
    "scene_dcnv4": ("scene_regular", "scenes: DCNv4 (FlashInternImage's layer, 4 groups), per-pixel digit classes"),
    "roi_deform": ("roi_regular", "RoI classification on scenes: deformable RoI pooling vs RoI Align"),
    "deform_rts": ("regular_rts", "digits: DCNv1, trained on rotated/translated/scaled digits"),
    "deform_plain": ("regular_plain", "digits: DCNv1, trained on plain digits"),
    "deform2_plain": ("regular_plain", "digits: DCNv2 (modulated), trained on plain digits"),
}


def twin_of(name: str) -> str | None:
    """The regular twin of a shipped deformable checkpoint name (or path), or None."""
    entry = TWINS.get(Path(name).stem)
    return entry[0] if entry else None


def _digit_row(path: Path, meta: dict) -> str:
    t = meta["train"]
    aug = meta.get("test_accuracy_augmented")
    return (
        f"| `{path.name}` | {t['arch']} | {t['augment_params']} | {t['epochs']} "
        f"| {100 * meta['test_accuracy']:.2f}% | {f'{100 * aug:.2f}%' if aug is not None else '-'} "
        f"| {path.stat().st_size / 1e6:.2f} MB | `{meta['command']}` |"
    )


def _scene_row(path: Path, meta: dict) -> str:
    t, m = meta["train"], meta["test_metrics"]
    by = m["digit_accuracy_by_size"]
    minutes = meta["log"]["train_seconds"] / 60
    return (
        f"| `{path.name}` | {t['arch']} | {t['steps']} x {t['batch_size']} ({minutes:.0f} min) "
        f"| {100 * m['digit_accuracy']:.2f}% | {100 * by['small']:.2f}% / {100 * by['medium']:.2f}% / "
        f"{100 * by['large']:.2f}% | {100 * m['pixel_accuracy_ink']:.2f}% | {100 * m['mean_iou']:.2f}% "
        f"| {path.stat().st_size / 1e6:.2f} MB | `{meta['command']}` |"
    )


def _roi_row(path: Path, meta: dict) -> str:
    t, m = meta["train"], meta["test_metrics"]
    ex, ji = m["exact"], m["jittered"]
    return (
        f"| `{path.name}` | {t['arch']} | {t['steps']} x {t['batch_size']}, jitter {t['jitter']:g} "
        f"| {100 * ex['accuracy']:.2f}% | {100 * ji['accuracy']:.2f}% "
        f"| {path.stat().st_size / 1e6:.2f} MB | `{meta['command']}` |"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.catalog", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (default: checkpoints/*.pt)")
    args = p.parse_args(argv)
    paths = [Path(c) for c in args.checkpoints] or sorted(CHECKPOINT_DIR.glob("*.pt"))
    digits, scenes, rois = [], [], []
    status = 0
    for path in paths:
        try:
            model = load_checkpoint(path)
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        meta = model.checkpoint_meta
        if getattr(model, "family", "digits") == "scenes":
            scenes.append(_scene_row(path, meta))
        elif getattr(model, "family", "digits") == "roi":
            rois.append(_roi_row(path, meta))
        else:
            digits.append(_digit_row(path, meta))
    if scenes:
        print(
            "| checkpoint | arch | training steps x scenes | per-digit accuracy | small / medium / large "
            "| pixel accuracy on ink | mean IoU (11 classes) | size | command |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(scenes))
    if rois:
        print(
            "\n| checkpoint | pooling | training | accuracy, exact boxes | accuracy, jittered boxes | size | command |"
        )
        print("|---|---|---|---|---|---|---|")
        print("\n".join(rois))
    if digits:
        if scenes or rois:
            print()
        print(
            "| checkpoint | arch | training augmentation | epochs | test accuracy "
            "| same-augmentation test accuracy | size | command |"
        )
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(digits))
    return status


if __name__ == "__main__":
    raise SystemExit(main())
