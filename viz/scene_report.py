"""The paper's Table 2, recreated on scenes: effective dilation by digit size, per layer.

    python -m viz.scene_report --data-dir ../shared/data [--scenes 500] [--out docs/scene_adaptation.md]

For every deformable scene model and its regular twin, over the fixed test scenes: the
effective dilation (mean distance between the sampling locations of adjacent taps, Dai et al.
2017, Table 2) of each stacked layer's units, grouped by where the unit's centre lies: in a
small, medium or large digit's box, or on the background; mean and std, in pixels and in units
of the layer's own stride (a regular 3x3 layer scores exactly 1). Also the fraction of each
unit's 9^3 points that land inside its own digit's box, and the models' test metrics.

What the units really use (DCNv2's views, ``viz.support``), over the first ``--support-scenes``
scenes, a few units per region and scene: the effective receptive field's area (pixels holding
90% of the gradient) and the error-bounded saliency region's area (10% tolerance).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

import viz
from models.data.mnist import DEFAULT_DATA_DIR, DataError, load_mnist
from models.data.scenes import SIZE_CLASSES, SIZE_EDGES, TEST_SEED, Scenes, size_class
from models.runtime import atomic_write_text, use_all_cpu_threads
from models.train.scenes import test_scenes
from viz.scene_stats import REGIONS, RegionStats, dilation_by_region, own_digit_fraction, regular_dilation
from viz.support import support_by_region

MODELS = ("scene_deform", "scene_deform2", "scene_dcnv3", "scene_dcnv4", "scene_regular")


def collect(model: torch.nn.Module, scenes: Scenes, batch: int = 50, progress: bool = True) -> dict[str, object]:
    """Per-layer :class:`RegionStats` of effective dilation (px) and own-digit fractions by size."""
    layers = len(model.sampling_layers())
    dil = [RegionStats.empty() for _ in range(layers)]
    own = RegionStats.empty()
    unit_px: list[float] = []
    bar = tqdm(total=len(scenes), desc="scenes", disable=not progress, unit="scene", leave=False)
    for start in range(0, len(scenes), batch):
        cap = viz.capture(model, scenes.images[start : start + batch])
        for i in range(cap.images.shape[0]):
            digits = scenes.digits_of(start + i)
            boxes, heights = scenes.boxes[digits], scenes.heights[digits]
            for layer in range(layers):
                d, regions = dilation_by_region(cap, boxes, heights, i, layer)
                dil[layer].add(d, regions)
            which, frac = own_digit_fraction(cap, boxes, image=i)
            if which.numel():
                own.add(frac, size_class(heights[which]))
            bar.update(1)
        unit_px = [regular_dilation(cap, layer) for layer in range(layers)]
    bar.close()
    top = model.sampling_layers()[-1]
    groups = int(cap.top.groups) if layers else 1
    return {"dilation": dil, "own": own, "regular_px": unit_px, "groups": groups, "family": top.family}


def _fmt(m: float, s: float) -> str:
    return f"{m:.2f} ± {s:.2f}"


def markdown(results: dict[str, dict[str, object]], scenes: Scenes, metrics: dict[str, dict], seconds: float) -> str:
    lines = [
        "# Scenes: effective dilation by digit size (the paper's Table 2, recreated)",
        "",
        f"Made by `python -m viz.scene_report` over the {len(scenes)} fixed test scenes (seed {TEST_SEED}, "
        f"{len(scenes.labels)} digits from the MNIST test split) in {seconds:.0f} s.",
        "",
        "Effective dilation: the mean distance between the sampling locations of horizontally and vertically "
        "adjacent taps of a unit's 3x3 filter (Dai et al. 2017, Table 2). Units are sorted by where their "
        f"centre lies: in the box of a small (height < {SIZE_EDGES[0]} px), medium ({SIZE_EDGES[0]}-{SIZE_EDGES[1] - 1} px) "
        f"or large (>= {SIZE_EDGES[1]} px) digit, or on the background (the smaller box wins where boxes overlap). "
        "Mean ± std over units, in pixels, then in units of the layer's own stride (4 px here), where a regular "
        "3x3 layer scores exactly 1.",
        "",
    ]
    for name, r in results.items():
        lines += [f"## `{name}`", ""]
        lines.append("| layer | " + " | ".join(REGIONS) + " | large / small |")
        lines.append("|---|" + "---|" * (len(REGIONS) + 1))
        dil: list[RegionStats] = r["dilation"]  # type: ignore[assignment]
        unit_px: list[float] = r["regular_px"]  # type: ignore[assignment]
        for layer, st in enumerate(dil):
            cells, cells_u = [], []
            for reg in REGIONS:
                m, s, _ = st.mean_std(reg)
                cells.append(_fmt(m, s))
                cells_u.append(_fmt(m / unit_px[layer], s / unit_px[layer]))
            ratio = st.mean_std("large")[0] / st.mean_std("small")[0]
            lines.append(f"| {layer + 1} (px) | " + " | ".join(cells) + f" | {ratio:.2f} |")
            lines.append(f"| {layer + 1} (stride units) | " + " | ".join(cells_u) + " | |")
        counts = ", ".join(f"{reg} {dil[-1].mean_std(reg)[2]}" for reg in REGIONS)
        own: RegionStats = r["own"]  # type: ignore[assignment]
        fracs = ", ".join(f"{reg} {100 * own.mean_std(reg)[0]:.1f}%" for reg in SIZE_CLASSES if own.mean_std(reg)[2])
        groups = int(r.get("groups", 1))  # type: ignore[arg-type]
        which = (
            "729 points (bilinear)"
            if groups == 1
            else f"{(9 * groups) ** 3:,} samples over {groups} groups (exact: merged onto map units, |weight|)"
        )
        extra = (
            f" The {groups} groups' filters are averaged for the effective dilation; weights: "
            f"{'softmax over a group' if r.get('family') == 'dcnv3' else 'unnormalised, signed'}."
            if groups > 1
            else ""
        )
        lines += [
            "",
            f"Top-layer units per region: {counts}. Weighted share of a unit's {which} inside its own "
            f"digit's box, by the digit's size: {fracs}.{extra}",
            "",
        ]
    lines += ["## The models on the same test scenes", ""]
    lines.append("| model | per-digit accuracy | small | medium | large | pixel accuracy on ink | mean IoU |")
    lines.append("|---|---|---|---|---|---|---|")
    for name, m in metrics.items():
        by = m["digit_accuracy_by_size"]
        lines.append(
            f"| `{name}` | {100 * m['digit_accuracy']:.2f}% | "
            + " | ".join(f"{100 * by[k]:.2f}%" for k in SIZE_CLASSES)
            + f" | {100 * m['pixel_accuracy_ink']:.2f}% | {100 * m['mean_iou']:.2f}% |"
        )
    lines.append("")
    return "\n".join(lines)


def support_markdown(supports: dict[str, dict[str, dict[str, list[float]]]]) -> str:
    """The ERF / saliency-region table, or nothing."""
    if not supports:
        return ""
    n = {name: sum(len(v) for v in s["erf_area"].values()) for name, s in supports.items()}
    lines = [
        "",
        "## What the units really use (DCNv2's views)",
        "",
        "Area in pixels, mean ± std over sampled top-layer units (up to 4 per region per scene; "
        f"{', '.join(f'{k}: {v} units' for k, v in n.items())}). ERF area: pixels holding 90% of "
        "|d response / d image|. Saliency region: the smallest square around the unit whose masked image keeps "
        "the response within 10% (`viz.support`).",
        "",
        "| model | view | " + " | ".join(REGIONS) + " |",
        "|---|---|" + "---|" * len(REGIONS),
    ]
    for name, s in supports.items():
        for key, label in (("erf_area", "ERF area"), ("saliency_area", "saliency region")):
            cells = []
            for r in REGIONS:
                v = torch.tensor(s[key][r], dtype=torch.float64)
                cells.append(
                    f"{float(v.mean()):.0f} ± {float(v.std()) if v.numel() > 1 else 0.0:.0f}" if v.numel() else "-"
                )
            lines.append(f"| `{name}` | {label} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m viz.scene_report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), help="scene checkpoints (shipped names or paths)")
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="folder with MNIST in torchvision's layout")
    p.add_argument("--scenes", type=int, default=500, help="how many of the fixed test scenes")
    p.add_argument(
        "--support-scenes", type=int, default=24, help="scenes for the ERF / saliency table (0: leave it out)"
    )
    p.add_argument("--out", default=None, help="also write the Markdown here (e.g. docs/scene_adaptation.md)")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    use_all_cpu_threads()
    try:
        models = {Path(m).stem: viz.load(m) for m in args.models}
        test = load_mnist(args.data_dir, train=False)
    except (viz.CheckpointError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    not_scene = [n for n, m in models.items() if getattr(m, "family", None) != "scenes"]
    if not_scene:
        print(f"error: not scene models: {', '.join(not_scene)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    scenes = test_scenes(test.images, test.labels, count=args.scenes)
    from models.train.scenes import evaluate_scenes

    results, metrics = {}, {}
    for name, model in models.items():
        print(f"{name}: collecting over {len(scenes)} scenes", file=sys.stderr)
        results[name] = collect(model, scenes, progress=not args.no_progress)
        metrics[name] = evaluate_scenes(model, scenes)
    supports = {}
    if args.support_scenes > 0:
        n = min(args.support_scenes, len(scenes))
        idx = range(n)
        for name, model in models.items():
            print(f"{name}: ERF and saliency regions over {n} scenes", file=sys.stderr)
            supports[name] = support_by_region(
                model,
                scenes.images[:n],
                [scenes.boxes[scenes.digits_of(i)] for i in idx],
                [scenes.heights[scenes.digits_of(i)] for i in idx],
            )
    text = markdown(results, scenes, metrics, time.perf_counter() - start) + support_markdown(supports)
    print(text)
    if args.out:
        atomic_write_text(Path(args.out), text)
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
