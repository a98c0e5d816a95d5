"""Print a Markdown table of checkpoints from their stored metadata (no data needed).

python -m models.catalog [checkpoints/*.pt]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.checkpoint import CheckpointError, load_checkpoint

#: Every shipped deformable checkpoint and its regular twin (same data, same recipe, no offsets),
#: with a one-line description. The one place this pairing is stated.
TWINS: dict[str, tuple[str, str]] = {
    "scene_deform": ("scene_regular", "scenes: DCNv1, per-pixel digit classes on 64x64 canvases"),
    "scene_deform2": ("scene_regular", "scenes: DCNv2 (modulated), per-pixel digit classes on 64x64 canvases"),
    "deform_rts": ("regular_rts", "digits: DCNv1, trained on rotated/translated/scaled digits"),
    "deform_plain": ("regular_plain", "digits: DCNv1, trained on plain digits"),
    "deform2_plain": ("regular_plain", "digits: DCNv2 (modulated), trained on plain digits"),
}


def twin_of(name: str) -> str | None:
    """The regular twin of a shipped deformable checkpoint name (or path), or None."""
    entry = TWINS.get(Path(name).stem)
    return entry[0] if entry else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.catalog", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoints", nargs="*", help="checkpoint files (default: checkpoints/*.pt)")
    args = p.parse_args(argv)
    paths = [Path(c) for c in args.checkpoints] or sorted(Path("checkpoints").glob("*.pt"))
    print(
        "| checkpoint | arch | training augmentation | epochs | test accuracy "
        "| same-augmentation test accuracy | size | command |"
    )
    print("|---|---|---|---|---|---|---|---|")
    status = 0
    for path in paths:
        try:
            meta = load_checkpoint(path).checkpoint_meta
        except CheckpointError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
            continue
        t = meta["train"]
        aug = meta.get("test_accuracy_augmented")
        print(
            f"| `{path.name}` | {t['arch']} | {t['augment_params']} | {t['epochs']} "
            f"| {100 * meta['test_accuracy']:.2f}% | {f'{100 * aug:.2f}%' if aug is not None else '-'} "
            f"| {path.stat().st_size / 1e6:.2f} MB | `{meta['command']}` |"
        )
    return status


if __name__ == "__main__":
    raise SystemExit(main())
