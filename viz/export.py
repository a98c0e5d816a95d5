"""Write the static figures from the shipped checkpoints and bundled sample digits.

    python -m viz.export                         # all figures, PNG, into figures/
    python -m viz.export --figure receptive_field --format svg
    python -m viz.export --digits 7 my_digit.png --out out/

Figures: receptive_field (the paper's figure recreated), levels (9 -> 81 -> 729 points),
offset_field (mean offsets per layer), adaptation (scaled and rotated digit, effective dilation
vs scale), modulation (DCNv2 weights). No browser, GPU or download needed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

import viz
from models.runtime import use_all_cpu_threads
from viz.figures import (
    FigureSpec,
    adaptation_figure,
    levels_figure,
    modulation_figure,
    offset_field_figure,
    receptive_field_figure,
)
from viz.render import FORMATS, render
from viz.samples import load_samples

FIGURES = ("receptive_field", "levels", "offset_field", "adaptation", "modulation")
DEFAULT_DIGIT = 1  # a "2": its strokes leave background on both sides


class ExportError(RuntimeError):
    pass


def load_digit(spec: str) -> tuple[torch.Tensor, str]:
    """A bundled sample by index (``"0"``..``"99"``) or an image file, in MNIST format."""
    if spec.isdigit():
        samples = load_samples()
        i = int(spec)
        if not 0 <= i < len(samples):
            raise ExportError(f"digit index {i} out of range: the bundled samples are 0..{len(samples) - 1}")
        return samples.images[
            i
        ], f"sample {i} (MNIST test #{int(samples.test_indices[i])}, label {int(samples.labels[i])})"
    path = Path(spec)
    if not path.exists():
        raise ExportError(f"{spec!r} is neither a sample index (0..99) nor an existing image file")
    try:
        with Image.open(path) as img:
            img.load()
            return viz.preprocess(img), str(path)
    except (UnidentifiedImageError, OSError) as exc:
        raise ExportError(f"cannot read image {spec!r}: {exc}") from None
    except viz.PreprocessError as exc:
        raise ExportError(f"image {spec!r}: {exc}") from None


def _twin(checkpoint: str) -> str:
    """The regular twin of a shipped deformable checkpoint name (deform_rts -> regular_rts)."""
    name = Path(checkpoint).stem
    for prefix in ("deform2_", "deform_"):
        if name.startswith(prefix):
            return "regular_" + name[len(prefix) :]
    return "regular_plain"


def builders(deform, regular, modulated, digit: torch.Tensor) -> dict[str, Callable[[], FigureSpec]]:
    return {
        "receptive_field": lambda: receptive_field_figure(deform, regular, digit),
        "levels": lambda: levels_figure(deform, digit),
        "offset_field": lambda: offset_field_figure(deform, digit),
        "adaptation": lambda: adaptation_figure(deform, regular, digit),
        "modulation": lambda: modulation_figure(modulated, digit),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m viz.export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        default="deform_rts",
        help="deformable checkpoint (shipped name or path); its regular twin is found by name",
    )
    p.add_argument(
        "--regular",
        default=None,
        help="regular-conv checkpoint for comparison rows (default: the twin of --checkpoint)",
    )
    p.add_argument("--dcnv2", default="deform2_plain", help="DCNv2 checkpoint for the modulation figure")
    p.add_argument(
        "--digits",
        nargs="+",
        default=[str(DEFAULT_DIGIT)],
        help="bundled sample indices (0..99) and/or image files; one set of figures per digit",
    )
    p.add_argument("--out", default="figures", help="output folder")
    p.add_argument(
        "--format", default="png", choices=FORMATS, help="png and svg via matplotlib; html is interactive Plotly"
    )
    p.add_argument("--figure", action="append", choices=FIGURES, help="make only this figure (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    use_all_cpu_threads()
    try:
        deform = viz.load(args.checkpoint)
        regular = viz.load(args.regular or _twin(args.checkpoint))
        wanted = args.figure or list(FIGURES)
        modulated = viz.load(args.dcnv2) if "modulation" in wanted else None
        digits = [load_digit(d) for d in args.digits]
    except (viz.CheckpointError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    start = time.perf_counter()
    for k, (digit, source) in enumerate(digits):
        folder = out if len(digits) == 1 else out / f"digit_{args.digits[k].replace('/', '_')}"
        makers = builders(deform, regular, modulated, digit)
        for name in wanted:
            t0 = time.perf_counter()
            path = render(makers[name](), folder, args.format)
            print(f"[{name}] {path} ({time.perf_counter() - t0:.1f} s; {source})", flush=True)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
