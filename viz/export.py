"""Write the static figures from the shipped checkpoints and bundled sample digits.

    python -m viz.export                         # all figures, PNG, into figures/
    python -m viz.export --figure receptive_field --format svg
    python -m viz.export --digits 7 my_digit.png --out out/
    python -m viz.export --model examples.dcn_resnet:dcn_resnet --weights examples/dcn_resnet_digits.pt --image my.png

Scene figures (dense models on the bundled test scenes): scene_receptive_field (the paper's
Figure 6: background / small digit / large digit units, deformable vs regular twin),
scene_dilation (effective dilation against digit size), scene_support (DCNv2's views of
those units: effective receptive field, effective sampling locations, saliency region) and
roi_bins (the paper's Figure 7: deformable RoI pooling's moved bins, exact and jittered boxes).
Digit figures: receptive_field (the paper's figure on one digit), levels (9 -> 81 -> 729 points),
offset_field (mean offsets per layer), adaptation (scaled and rotated digit, effective dilation
vs scale), modulation (DCNv2 weights). No browser, GPU or download needed.
Your own model (--model): model_points (a unit's points beside the same layers with offsets
zero), levels, offset_field and, if it is modulated, modulation, for each --image.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

import viz
from models.catalog import twin_of
from models.data.scenes import size_class
from models.data.transforms import rotate_scale
from models.runtime import add_device_argument, describe_device, device_or_exit, use_all_cpu_threads
from viz.classes import names_mismatch, top_k, top_k_text
from viz.figures import (
    FigureSpec,
    adaptation_figure,
    dilation_vs_size_figure,
    levels_figure,
    modulation_figure,
    offset_field_figure,
    receptive_field_figure,
    roi_figure,
    scene_receptive_field_figure,
    unit_points_figure,
)
from viz.render import FORMATS, render
from viz.roi import roi_bins
from viz.samples import PHOTOS, load_samples, load_scene_samples, sample_photo
from viz.scene_stats import pick_units
from viz.user_model import add_model_arguments, model_from_args, prepare_for
from viz.views import SUPPORT_VIEWS, EffectiveReceptiveField, support_figure

SCENE_FIGURES = ("scene_receptive_field", "scene_dilation", "scene_support", "roi_bins")
DIGIT_FIGURES = ("receptive_field", "levels", "offset_field", "adaptation", "modulation")
FIGURES = SCENE_FIGURES + DIGIT_FIGURES
USER_FIGURES = ("model_points", "levels", "offset_field", "modulation")
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


def builders(deform, regular, modulated, digit: torch.Tensor) -> dict[str, Callable[[], FigureSpec]]:
    """The digit figures of one digit. The scenarios (the digit scaled, rotated) are made and
    captured here; the figure builders only take captures."""
    small, large = 0.6, 1.3

    def receptive_field() -> FigureSpec:
        images = torch.stack([digit, rotate_scale(digit, 0.0, small), rotate_scale(digit, 0.0, large)])
        labels = (f"small digit ({small:g}x)", f"large digit ({large:g}x)", "")
        return receptive_field_figure(viz.capture(deform, images), viz.capture(regular, images), labels)

    def adaptation() -> FigureSpec:
        scales, angles = (0.6, 0.8, 1.0, 1.2, 1.4), (-45.0, 45.0)
        variants = [(s, 0.0) for s in scales] + [(1.0, a) for a in angles]
        images = torch.stack([rotate_scale(digit, a, s) for s, a in variants])
        return adaptation_figure(viz.capture(deform, images), viz.capture(regular, images), variants, scales)

    return {
        "receptive_field": receptive_field,
        "levels": lambda: levels_figure(viz.capture(deform, digit)),
        "offset_field": lambda: offset_field_figure(viz.capture(deform, digit)),
        "adaptation": adaptation,
        "modulation": lambda: modulation_figure(viz.capture(modulated, digit)),
    }


def scene_builders(args: argparse.Namespace) -> dict[str, Callable[[], FigureSpec]]:
    """Capture the bundled test scenes with the scene model and its twin once; the two scene
    figures are built from those captures."""
    deform = viz.load(args.scene_checkpoint, args.device)
    regular = viz.load(args.scene_regular or twin_of(args.scene_checkpoint) or "scene_regular", args.device)
    scenes = load_scene_samples()
    boxes = [scenes.boxes[scenes.digits_of(i)] for i in range(len(scenes))]
    heights = [scenes.heights[scenes.digits_of(i)] for i in range(len(scenes))]
    if args.scenes is None:
        chosen = [i for i in range(len(scenes)) if {0, 2} <= set(size_class(heights[i]).tolist())][:2]
    else:
        bad = [i for i in args.scenes if not 0 <= i < len(scenes)]
        if bad:
            raise ExportError(f"scene index {bad[0]} out of range: the bundled scenes are 0..{len(scenes) - 1}")
        chosen = list(args.scenes)
    cap_d, cap_r = viz.capture(deform, scenes.images), viz.capture(regular, scenes.images)
    more_names = [m for m in args.scene_more if m != "none"]
    more = [(viz.capture(viz.load(m, args.device), scenes.images), Path(m).stem) for m in more_names]

    def receptive_field() -> FigureSpec:
        sub_d, sub_r = cap_d.select(chosen), cap_r.select(chosen)
        picks = [pick_units(sub_d, boxes[i], heights[i], image=k) for k, i in enumerate(chosen)]
        rows = [(cap.select(chosen), name) for cap, name in more]
        return scene_receptive_field_figure(sub_d, sub_r, picks, more=rows)

    names = (Path(args.scene_checkpoint).stem, Path(args.scene_regular or twin_of(args.scene_checkpoint) or "").stem)

    def support() -> FigureSpec:
        """DCNv2's views of a background, a small-digit and a large-digit unit of the first chosen
        scene, for the deformable model and its twin."""
        i = chosen[0]
        picks = pick_units(cap_d.select([i]), boxes[i], heights[i])
        rows = []
        for model, cap, name in ((deform, cap_d.select([i]), "deformable"), (regular, cap_r.select([i]), "twin")):
            for what in ("background", "small", "large"):
                unit = picks.get(what)
                if unit is None:
                    continue
                row = {"title": f"{name}, {what}", "unit": unit}
                for view in SUPPORT_VIEWS:  # the ERF reads the support that the ESL computed
                    if "support" not in row or not isinstance(view, EffectiveReceptiveField):
                        row.update(view.compute(model, cap, unit))
                rows.append(row)
        return replace(support_figure(rows), name="scene_support")

    def roi() -> FigureSpec:
        """Figure 7: the boxes of the first chosen scene, exact and jittered, deformable RoI pooling
        beside the plain twin."""
        from models.nets.roi import jitter_boxes

        deform_roi, plain_roi = (
            viz.load(args.roi_checkpoint, args.device),
            viz.load(twin_of(args.roi_checkpoint) or "roi_regular", args.device),
        )
        i = chosen[0]
        jittered = jitter_boxes(boxes[i], torch.Generator().manual_seed(7))
        rows = []
        for k in range(boxes[i].shape[0]):
            for how, bx in (("exact", boxes[i][k]), ("jittered", jittered[k])):
                rows.append(
                    {
                        "title": f"{int(heights[i][k])} px digit, {how}",
                        "image": scenes.images[i, 0].numpy(),
                        "deform": roi_bins(deform_roi, scenes.images[i], bx),
                        "plain": roi_bins(plain_roi, scenes.images[i], bx),
                    }
                )
        return roi_figure(rows)

    return {
        "roi_bins": roi,
        "scene_support": support,
        "scene_receptive_field": receptive_field,
        "scene_dilation": lambda: dilation_vs_size_figure({names[0]: cap_d, names[1]: cap_r}, boxes, heights),
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
    p.add_argument("--scene-checkpoint", default="scene_deform", help="deformable scene model for the scene figures")
    p.add_argument(
        "--scene-more",
        nargs="+",
        default=[m for m in ("scene_dcnv3", "scene_dcnv4") if m in viz.shipped_checkpoints()],
        help="more deformable scene models drawn as rows of scene_receptive_field on the same units "
        "(default: the shipped DCNv3 and DCNv4 models; 'none' for none)",
    )
    p.add_argument(
        "--scene-regular", default=None, help="regular scene model (default: the twin of --scene-checkpoint)"
    )
    p.add_argument("--roi-checkpoint", default="roi_deform", help="deformable RoI model for roi_bins (twin by name)")
    p.add_argument(
        "--scenes",
        nargs="+",
        type=int,
        default=None,
        help="bundled test scenes (0..47) for scene_receptive_field (default: the first two holding a small and a large digit)",
    )
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
    p.add_argument(
        "--figure",
        action="append",
        choices=sorted(set(FIGURES + USER_FIGURES)),
        help="make only this figure (repeatable)",
    )
    add_model_arguments(p)
    add_device_argument(p)
    p.add_argument(
        "--image",
        nargs="+",
        default=None,
        help="with --model: image files to show, or a bundled colour photo by name ("
        + ", ".join(PHOTOS)
        + ") (default: the --digits samples)",
    )
    p.add_argument(
        "--from-layer",
        type=int,
        default=None,
        metavar="N",
        help="with --model: back-project from stacked layer N (1 = bottom) instead of the top: a window of a deep stack",
    )
    p.add_argument(
        "--unit",
        type=int,
        nargs=2,
        default=None,
        metavar=("ROW", "COL"),
        help="with --model: top-layer unit (default: the centre)",
    )
    return p


def user_builders(cap: viz.Capture, unit: tuple[int, int]) -> dict[str, Callable[[], FigureSpec]]:
    """The figures of a user's model on one captured image."""

    def model_points() -> FigureSpec:
        spec = unit_points_figure(
            cap, cap.without_offsets(), unit, names=("your model", "same layers, offsets zero"), overlay=False
        )
        return replace(spec, name="model_points")

    return {
        "model_points": model_points,
        "levels": lambda: levels_figure(cap, unit),
        "offset_field": lambda: offset_field_figure(cap),
        "modulation": lambda: modulation_figure(cap, unit),
    }


def export_user_model(args: argparse.Namespace, out: Path) -> int:
    """The figures of a user's model (``--model``) for each ``--image``."""
    from models.discovery import DiscoveryError

    try:
        t0 = time.perf_counter()
        model = model_from_args(args, progress=lambda step: print(f"  {step} ...", flush=True))
        assert model is not None
        print(f"found in {time.perf_counter() - t0:.1f} s", flush=True)
        print(model.report(), flush=True)
        if args.image:
            for path in args.image:
                if path.isdigit() and not Path(path).exists():
                    raise ExportError(f"--image {path}: no such file (a bundled sample digit is --digits {path})")
            inputs = [
                (prepare_for(model, sample_photo(path), args.prepare), f"bundled photo {path}")
                if path in PHOTOS and not Path(path).exists()
                else (prepare_for(model, path, args.prepare), str(path))
                for path in args.image
            ]
        else:
            digits = [load_digit(d) for d in args.digits]  # bundled samples (or files) in MNIST format
            inputs = [(prepare_for(model, digit[0].numpy(), args.prepare), source) for digit, source in digits]
    except (DiscoveryError, viz.CheckpointError, viz.PreprocessError, viz.ClassNamesError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wanted = [f for f in USER_FIGURES if f in (args.figure or USER_FIGURES)]
    if "modulation" in wanted and not model.modulated:
        wanted.remove("modulation")
    stacked = len(model.sampling_layers())
    if args.from_layer is not None and not 1 <= args.from_layer <= stacked:
        print(f"error: --from-layer must be between 1 and {stacked} (the model's stacked layers)", file=sys.stderr)
        return 1
    for k, (image, source) in enumerate(inputs):
        cap = viz.capture(model, image)
        if args.from_layer is not None and args.from_layer < stacked:
            cap = cap.up_to(args.from_layer - 1)  # a window: that layer is the top
            print(f"back-projecting from stacked layer {args.from_layer} of {stacked} (1 = bottom)", flush=True)
        unit = tuple(args.unit) if args.unit else None
        if unit is not None and not all(0 <= u < n for u, n in zip(unit, cap.top.out_size, strict=True)):
            print(f"error: --unit {unit} is outside the top layer's {cap.top.out_size} map", file=sys.stderr)
            return 1
        unit = unit or (cap.top.out_size[0] // 2, cap.top.out_size[1] // 2)
        if cap.logits.dim() == 2:  # a classifier: what it reads in this image
            best = top_k(cap.probabilities[0], model.class_names, 5)
            if k == 0 and (mismatch := names_mismatch(model.class_names, cap.logits.shape[1])):
                print(f"note: {mismatch}", flush=True)
            print(f"{source}: predicts {top_k_text(best)}", flush=True)
        makers = user_builders(cap, unit)
        folder = out if len(inputs) == 1 else out / f"image_{k}"
        for name in wanted:
            t0 = time.perf_counter()
            path = render(makers[name](), folder, args.format)
            print(f"[{name}] {path} ({time.perf_counter() - t0:.1f} s; {source}, unit {unit})", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    threads = use_all_cpu_threads()
    args.device = device_or_exit(args.device)
    print(f"models run on {describe_device(args.device, threads)}", flush=True)
    if args.model:
        return export_user_model(args, Path(args.out))
    wanted = [f for f in FIGURES if f in (args.figure or FIGURES)]
    digit_wanted = [f for f in wanted if f in DIGIT_FIGURES]
    out = Path(args.out)
    start = time.perf_counter()
    try:
        if digit_wanted:
            deform = viz.load(args.checkpoint, args.device)
            regular = viz.load(args.regular or twin_of(args.checkpoint) or "regular_plain", args.device)
            if not any(layer.deformable for layer in deform.sampling_layers()):
                raise ExportError(
                    f"--checkpoint {args.checkpoint!r} has no deformable layer; pass a deformable model "
                    "(its regular twin goes in --regular)"
                )
            modulated = viz.load(args.dcnv2, args.device) if "modulation" in digit_wanted else None
            digits = [load_digit(d) for d in args.digits]
        scene_makers = scene_builders(args) if any(f in SCENE_FIGURES for f in wanted) else {}
    except (viz.CheckpointError, ExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name in (f for f in wanted if f in SCENE_FIGURES):
        t0 = time.perf_counter()
        path = render(scene_makers[name](), out, args.format)
        print(f"[{name}] {path} ({time.perf_counter() - t0:.1f} s; bundled test scenes)", flush=True)
    for k, (digit, source) in enumerate(digits if digit_wanted else []):
        folder = out if len(digits) == 1 else out / f"digit_{args.digits[k].replace('/', '_')}"
        makers = builders(deform, regular, modulated, digit)
        for name in digit_wanted:
            t0 = time.perf_counter()
            path = render(makers[name](), folder, args.format)
            print(f"[{name}] {path} ({time.perf_counter() - t0:.1f} s; {source})", flush=True)
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
