"""What each page of the app computes, without Streamlit: (input, models, unit, method, view) ->
figure specs and the sentences under them.

The app's pages (``ui/``) call these functions and draw what they return; ``viz.bench`` times the
same calls, so the benchmark measures what a page does. Nothing here caches: the pages keep
results per browser session (``ui.session``).

=======================  =====================================================================
function                 what it returns
=======================  =====================================================================
:func:`analyse`          one input through a deformable model and its twin (a :class:`Pair`)
:func:`unit_view`        the chosen view of one unit for both models: its spec and its words
:func:`unit_frame`       one frame for every unit of an input: a click moves points, not axes
:func:`digit_tab`        one of the digit page's other tabs (levels, offsets, density, ...)
:func:`scene_unit_words` what the scene page says under its unit view
:func:`scene_reads`      the per-digit table: what each model reads in each digit's box
:func:`scene_glance`     the background / small / large triplet
:func:`roi_view`         deformable RoI pooling of one box: the spec and its sentence
=======================  =====================================================================
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.data.scenes import BACKGROUND, size_class
from viz.backproject import deepest_level, path_count, sample_box
from viz.capture import Capture, capture
from viz.figures import (
    GRID_GREY,
    POINT_RED,
    FigureSpec,
    count_note,
    density_figure,
    dilation_figure,
    family_note,
    hold_frame,
    levels_figure,
    offset_field_figure,
    probabilities_figure,
    roi_figure,
    scene_receptive_field_figure,
)
from viz.geometry import BILINEAR
from viz.roi import roi_bins
from viz.scene_stats import pick_units, unit_digits
from viz.stats import effective_dilation
from viz.views import get_view

#: The digit page's tabs besides the unit view, in the order it shows them.
DIGIT_TABS: tuple[str, ...] = ("levels", "offsets", "density", "dilation")
#: Digit sizes by box height (``models.data.scenes.size_class``).
SIZE_NAMES: tuple[str, str, str] = ("small", "medium", "large")


def input_key(image: Tensor, *names: str) -> str:
    """A short digest of an input and the names of what it runs through: the pages' cache key."""
    h = hashlib.sha256(image.detach().cpu().numpy().tobytes())
    for n in names:
        h.update(n.encode())
    return h.hexdigest()[:16]


@dataclass
class Pair:
    """One input run through a deformable model and its twin.

    Attributes:
        key: :func:`input_key` of the image and the models' names.
        image: ``(C, H, W)`` the model input.
        deform, regular: the captures; for a model of yours ``regular`` is its own capture with
            every offset zero (:meth:`viz.capture.Capture.without_offsets`).
        seconds: how long both captures took.
    """

    key: str
    image: Tensor
    deform: Capture
    regular: Capture
    seconds: float


def analyse(deform: nn.Module, regular: nn.Module | None, image: Tensor, *names: str) -> Pair:
    """Capture ``image`` (``(C, H, W)``) through ``deform`` and ``regular``; with ``regular`` None,
    the twin is the same layers with offsets zero."""
    t0 = time.perf_counter()
    batch = image.unsqueeze(0) if image.dim() == 3 else image
    d = capture(deform, batch)
    r = capture(regular, batch) if regular is not None else d.without_offsets()
    return Pair(input_key(image, *names), batch[0], d, r, time.perf_counter() - t0)


@dataclass
class UnitView:
    """One view of one unit: what :meth:`viz.views.View.compute` gave for each model, the figure
    drawn from it and one sentence of what it found (points counted, or the view's own words)."""

    entries: list[dict[str, Any]]
    spec: FigureSpec
    found: str
    draws_points: bool


def unit_frame(
    pair: Pair, levels: int | None = None, method: str = BILINEAR, group: int | None = None
) -> tuple[float, float, float, float]:
    """One frame (``x_min, x_max, y_min, y_max``, pixels) for every unit of the pair's input: the
    samples of all top-layer units of both models at level ``levels`` (default: as deep as the
    points are drawn). :func:`unit_view` puts every panel on it, so a click moves the points,
    not the picture."""
    boxes = [
        sample_box(c, levels or deepest_level(c), method, group if c.top.groups > 1 else None)
        for c in (pair.deform, pair.regular)
    ]
    return (
        min(b[0] for b in boxes), max(b[1] for b in boxes), min(b[2] for b in boxes), max(b[3] for b in boxes)
    )  # fmt: skip


def frame_levels(view: str, levels: int | None) -> int | None:
    """The level whose samples a view draws: the chosen one for the points, the deepest for the
    others (the effective sampling locations draw every path)."""
    return levels if get_view(view).draws_points else None


def unit_view(
    pair: Pair,
    models: tuple[nn.Module | None, nn.Module | None],
    titles: tuple[str, str],
    unit: tuple[int, int],
    view: str,
    method: str = BILINEAR,
    levels: int | None = None,
    group: int | None = None,
    overlay: bool = True,
    frame: tuple[float, float, float, float] | None = None,
) -> UnitView:
    """The view named ``view`` of ``unit`` for the pair's deformable model and its twin (views that
    need the model itself are computed for the twin only when it is a model: a zero-offset twin
    has none). The points drawn are the points counted: computed once, here. ``frame``
    (:func:`unit_frame`): every image panel's axes, the same whichever unit is chosen."""
    shown = get_view(view)
    runs = [(models[0], pair.deform, titles[0]), (models[1], pair.regular, titles[1])]
    if shown.needs_model and models[1] is None:
        runs = runs[:1]
    entries = [{**shown.compute(m, c, unit, method, levels, group), "title": t} for m, c, t in runs]
    found = count_note(entries[0]["pts"]) if shown.draws_points else shown.plain(entries[0]).rstrip(".")
    spec = shown.figure(entries, unit, overlay=overlay)
    if frame is not None:
        spec = hold_frame(spec, pair.deform, frame)
    return UnitView(entries, spec, found, shown.draws_points)


def digit_tab(pair: Pair, tab: str, unit: tuple[int, int], method: str = BILINEAR, units: str = "all") -> FigureSpec:
    """One of the digit page's other tabs (:data:`DIGIT_TABS`) or ``"probabilities"``."""
    caps = {"deformable": pair.deform, "regular twin": pair.regular}
    if tab == "levels":
        return levels_figure(pair.deform, unit, method)
    if tab == "offsets":
        return offset_field_figure(pair.deform)
    if tab == "density":
        return density_figure(caps, units, method)
    if tab == "dilation":
        return dilation_figure(pair.deform)
    if tab == "probabilities":
        return probabilities_figure(caps, {"deformable": POINT_RED, "regular twin": GRID_GREY})
    raise ValueError(f"tab must be one of {(*DIGIT_TABS, 'probabilities')}, got {tab!r}")


def _size_name(heights: Tensor, k: int) -> str:
    return SIZE_NAMES[int(size_class(heights[k : k + 1]))]


def scene_unit_words(
    pair: Pair,
    shown: UnitView,
    boxes: Tensor,
    unit: tuple[int, int],
    method: str,
    levels: int,
    group: int | None,
    overlay: bool = True,
) -> str:
    """The sentence under the scene page's unit view: where the unit lies, what the view found and
    the effective dilation of its top-layer filter beside the twin's; the colours are explained
    only where they are drawn (the points view with the segmentation overlay)."""
    heights = boxes[:, 3] - boxes[:, 1]
    d = int(unit_digits(pair.deform, boxes)[unit])
    where = "the background" if d < 0 else f"digit {d + 1} ({_size_name(heights, d)}, {int(heights[d])} px)"
    dil_d = float(effective_dilation(pair.deform)[unit])
    dil_r = float(effective_dilation(pair.regular)[unit])
    what = (
        f"{path_count(pair.deform, levels, group)} sampling points at level {levels} ({method} method); "
        if shown.draws_points
        else f"{shown.found}; "
    )
    return (
        f"Unit {unit} lies on {where}: {what}"
        f"effective dilation of its top-layer filter {dil_d:.1f} px (regular twin {dil_r:.1f} px). "
        + ("" if pair.deform.top.family == "torchvision" else f"{family_note(pair.deform)} ")
        + "Click or tap any unit to move it."
        + (" Colours: the model's predicted digit classes." if shown.draws_points and overlay else "")
    )


def _votes(cap: Capture, boxes: Tensor) -> list[int | None]:
    """The digit each box is read as: majority of predicted digit classes over the box's ink."""
    pred = cap.logits[0, :BACKGROUND].argmax(0)
    ink = cap.images[0, 0] > 0.3
    out: list[int | None] = []
    for x0, y0, x1, y1 in boxes.long().tolist():
        votes = pred[y0:y1, x0:x1][ink[y0:y1, x0:x1]]
        out.append(int(torch.bincount(votes, minlength=10).argmax()) if votes.numel() else None)
    return out


def scene_reads(pair: Pair, boxes: Tensor, labels: list[int | None]) -> list[dict[str, Any]]:
    """One row per digit box: its size, its true label where known and what each model reads."""
    heights = boxes[:, 3] - boxes[:, 1]
    read_d, read_r = _votes(pair.deform, boxes), _votes(pair.regular, boxes)
    return [
        {
            "digit": k + 1,
            "size": f"{_size_name(heights, k)} ({int(heights[k])} px)",
            "true": "" if labels[k] is None else str(labels[k]),
            "deformable reads": "" if read_d[k] is None else str(read_d[k]),
            "regular reads": "" if read_r[k] is None else str(read_r[k]),
        }
        for k in range(len(boxes))
    ]


def scene_picks(pair: Pair, boxes: Tensor) -> dict[str, tuple[int, int] | None]:
    """The representative units (background, small, large) of the pair's scene."""
    return pick_units(pair.deform, boxes, boxes[:, 3] - boxes[:, 1])


def scene_glance(
    pair: Pair, picks: dict[str, tuple[int, int] | None], method: str = BILINEAR, name: str = ""
) -> FigureSpec:
    """The deformable model's points of a background unit, a small digit's and a large digit's
    (``picks``: :func:`scene_picks`, which the page has already found)."""
    return scene_receptive_field_figure(pair.deform, None, [picks], method, names=(name, ""))


def roi_view(
    deform: nn.Module, plain: nn.Module, image: Tensor, box: tuple[float, float, float, float], k: int,
    label: int | None,
) -> tuple[FigureSpec, str]:  # fmt: skip
    """Deformable RoI pooling and plain RoI Align of ``box`` (``x0, y0, x1, y1``) around digit
    ``k`` of a ``(1, H, W)`` scene: the bins' figure and the sentence under it."""
    bins_d, bins_p = roi_bins(deform, image, box), roi_bins(plain, image, box)
    spec = roi_figure([{"title": f"digit {k + 1}", "image": image[0].numpy(), "deform": bins_d, "plain": bins_p}])
    truth = "" if label is None else f" (true label {label})"
    words = (
        f"Deformable RoI pooling reads {bins_d.prediction}, plain RoI Align {bins_p.prediction}{truth}. "
        "Grey: the box's 3x3 bins; red: where the learned offsets moved them (0.1 x the box size per unit offset). "
        "Move or scale the box to see the bins go back to the digit."
    )
    return spec, words


__all__ = [
    "DIGIT_TABS",
    "SIZE_NAMES",
    "Pair",
    "UnitView",
    "analyse",
    "digit_tab",
    "input_key",
    "roi_view",
    "scene_glance",
    "scene_picks",
    "scene_reads",
    "scene_unit_words",
    "frame_levels",
    "unit_frame",
    "unit_view",
]
