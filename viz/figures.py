"""Figure specs: exactly the data each figure draws, independent of any plotting library.

Builders here turn captures and back-projected points into :class:`FigureSpec` objects;
``viz.render`` draws them with matplotlib (PNG/SVG) or Plotly (HTML). Tests check the specs,
i.e. the data drawn, not pixels. All coordinates are image pixels (x = column, y = row).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from viz.backproject import Points, backproject, deepest_level, regular_grid
from viz.capture import Capture
from viz.geometry import BILINEAR
from viz.stats import (
    background_unit,
    centre_unit,
    dilation_summary,
    effective_dilation,
    sampling_density,
    unit_pixels,
)

POINT_RED, UNIT_GREEN, GRID_GREY = "#e41a1c", "#2ca02c", "#7f7f7f"
#: Colours of the 10 digit classes in segmentation overlays (matplotlib's tab10).
DIGIT_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)


@dataclass
class Layer:
    """One drawn element. ``kind``: ``points`` (x, y, sizes, alphas), ``unit`` (a marker),
    ``units`` (clickable unit cells with their (row, col) in ``custom``; interactive renderers
    only), ``segments`` (x, y, x2, y2), ``arrows`` (x, y, u, v), ``curve`` (x, y) or ``bars``
    (heights y at x)."""

    kind: str
    x: np.ndarray
    y: np.ndarray
    label: str
    color: str = POINT_RED
    x2: np.ndarray | None = None
    y2: np.ndarray | None = None
    sizes: np.ndarray | None = None
    alphas: np.ndarray | None = None
    custom: np.ndarray | None = None  # ``units``: (N, 2) row and column of each clickable unit
    offset: float = 0.0  # ``bars``: shift along x, so that several bar layers stand side by side


@dataclass
class Panel:
    title: str
    image: np.ndarray | None = None  # (H, W) grey or (H, W, 3) colour, in [0, 1], in input-pixel axes
    layers: list[Layer] = field(default_factory=list)
    xlabel: str = "x (input pixel)"
    ylabel: str = "y (input pixel)"
    extent: tuple[float, float, float, float] | None = None  # x0, x1, y0, y1 (image axes)
    labels: np.ndarray | None = None  # (H, W) class per pixel over the image, NaN = none (segmentation)
    label_colors: tuple[str, ...] = ()  # colour of class k; drawn with opacity 0.45
    heat: np.ndarray | None = None  # (H, W) values drawn as a colour map with a colour bar
    heat_title: str = ""  # the colour bar's title, with units
    heat_colors: str = "hot"  # a colour map name both renderers know: "hot" or "viridis"
    #: (x, y) pixel position of ``heat[0, 0]`` when the heat map is not the image's own pixel
    #: grid (a density over grown axes); pixels are 1 apart. None: heat spans ``extent``.
    heat_origin: tuple[float, float] | None = None
    xrange: tuple[float, float] | None = None  # axis limits for panels without an image
    yrange: tuple[float, float] | None = None


@dataclass
class FigureSpec:
    name: str
    title: str
    caption: str
    panels: list[Panel]
    ncols: int


def split_panels(spec: FigureSpec) -> list[FigureSpec]:
    """One figure per panel of ``spec`` (same name, title and caption): the app draws each as a
    chart of its own in a column, so that narrow screens stack them one per row at full width
    and no panel's colour bar or titles can reach into its neighbour."""
    return [replace(spec, panels=[panel], ncols=1) for panel in spec.panels]


def image_array(image: Tensor) -> np.ndarray:
    """A ``(C, H, W)`` image as drawn: ``(H, W)`` grey, or ``(H, W, 3)`` for a colour one."""
    return image.permute(1, 2, 0).numpy() if image.shape[0] == 3 else image[0].numpy()


def _img(cap: Capture, i: int = 0) -> np.ndarray:
    """Image ``i`` as the model received it before normalisation."""
    return image_array(cap.images[i])


def _extent(cap: Capture) -> tuple[float, float, float, float]:
    h, w = cap.images.shape[-2:]
    return (-0.5, w - 0.5, h - 0.5, -0.5)


def points_layer(
    pts: Points, level: int | None = None, label: str = "sampling points", color: str = POINT_RED
) -> Layer:
    sel = pts.where(level=level if level is not None else pts.levels)
    w = pts.weight[sel].numpy()
    return Layer(
        "points",
        pts.x[sel].numpy(),
        pts.y[sel].numpy(),
        label,
        color,
        alphas=np.clip(w, 0.05, 1.0) if pts.method != "exact" else None,
    )


POINT_BLUE = "#1f5fbf"


#: Above this many samples at the drawn level, a unit's points are drawn as a density (the
#: samples' weights summed per pixel) instead of one marker each: 9^5 = 59,049 and more (the
#: shipped models' 729 and 46,656 stay points).
DENSITY_ABOVE = 50_000


def density_heat(pts: Points, level: int) -> tuple[np.ndarray, tuple[float, float]]:
    """The samples of ``level`` as a density: ``heat[r, c]`` is the sum of the weights of the
    samples nearest pixel ``(origin_y + r, origin_x + c)``; empty pixels are NaN (drawn
    transparent). The heat sums to the samples' total weight. Returns (heat, (origin_x, origin_y))."""
    sel = pts.where(level=level)
    xs = np.round(pts.x[sel].numpy()).astype(np.int64)
    ys = np.round(pts.y[sel].numpy()).astype(np.int64)
    w = pts.weight[sel].double().numpy()
    ox, oy = int(xs.min()), int(ys.min())
    heat = np.zeros((int(ys.max()) - oy + 1, int(xs.max()) - ox + 1))
    np.add.at(heat, (ys - oy, xs - ox), w)
    hit = np.zeros(heat.shape, dtype=bool)
    hit[ys - oy, xs - ox] = True
    heat[~hit] = np.nan
    return heat, (float(ox), float(oy))


def family_points_layers(pts: Points, level: int, label: str) -> list[Layer]:
    """Points of a layer family whose weights are not DCNv2's masks in [0, 1] (DCNv3's softmax
    products are small, DCNv4's are signed): opacity = |weight| / the level's largest |weight|,
    positive weights red, negative ones blue, each in its own legend entry."""
    sel = pts.where(level=level)
    w = pts.weight[sel].double().numpy()
    x, y = pts.x[sel].numpy(), pts.y[sel].numpy()
    top = float(np.abs(w).max()) if w.size else 1.0
    alphas = np.clip(np.abs(w) / (top or 1.0), 0.08, 1.0) if pts.method != "exact" or top else None
    neg = w < 0
    if not neg.any():
        return [Layer("points", x, y, f"{label}; opacity = weight / largest", POINT_RED, alphas=alphas)]
    pos = ~neg
    return [
        Layer("points", x[pos], y[pos], f"{int(pos.sum())} with positive weight", POINT_RED, alphas=alphas[pos]),
        Layer("points", x[neg], y[neg], f"{int(neg.sum())} with negative weight", POINT_BLUE, alphas=alphas[neg]),
    ]


FAMILY_WORDS = {
    "torchvision": "torchvision layout (per tap dy, dx; row-major taps)",
    "dcnv3": "InternImage's DCNv3 (channels-last; per point dx, dy, x-major; weights: softmax over a group's points)",
    "dcnv4": "FlashInternImage's DCNv4 (tokens; per group 2P offsets then P weights; weights unnormalised, signed)",
    "mmcv": "mmcv's pack layer (conv_offset; torchvision layout)",
    "detectron2": "detectron2's DeformConv (offsets as forward arguments; torchvision layout)",
}


def family_note(cap: Capture) -> str:
    """One sentence naming the deformable layers' family, groups, points and layout."""
    deformable = [lc for lc in cap.layers if lc.deformable] or cap.layers
    top = deformable[-1]
    words = FAMILY_WORDS.get(top.family, top.family)
    scale = ""
    if top.grid is not None:
        span = top.grid_span[0] / max(1, (top.kernel_size[0] - 1) * top.dilation[0])
        scale = f", grid scaled x{span:g}" if span != 1 else ""
    return f"{len(cap.layers)} stacked layers, {words}: {top.groups} group(s) x {top.taps} points{scale}."


def count_note(pts: Points, level: int | None = None) -> str:
    """How many points a level holds, explained for the method, so that the legend and the
    caption say the same thing: ``nearest`` drops samples whose nearest unit is off the map,
    ``exact`` merges coincident neighbours, ``bilinear`` keeps all and flags padding reads."""
    level = level or pts.levels
    n = pts.count(level=level)
    full = pts.paths(level) * len(pts.units_yx)
    if pts.method == "nearest":
        dropped = f"; {full - n} dropped: their nearest unit is off the map" if n < full else ""
        return f"{n} of {full} sampling points (level {level}){dropped}"
    if pts.method == "exact":
        return (
            f"{n} positions (level {level}) carrying the weight of all {full} samples, each split over its 4 neighbours"
        )
    padding = int((~pts.inside[pts.level == level]).sum())
    return f"{n} sampling points (level {level})" + (f"; {padding} read only zero padding" if padding else "")


def unit_layer(pts: Points, label: str = "activation unit") -> Layer:
    xy = pts.units_xy.numpy()
    return Layer("unit", xy[:, 0], xy[:, 1], label, UNIT_GREEN)


def receptive_field_figure(
    deform: Capture,
    regular: Capture,
    labels: tuple[str, str, str] = ("small digit", "large digit", ""),
    method: str = BILINEAR,
) -> FigureSpec:
    """Figure 1: the paper's receptive-field figure on one digit. Both captures hold three images:
    the digit (a background unit is shown), the digit small and the digit large (their centre
    units). Columns: those three; rows: deformable model, regular twin."""
    panels = []
    for cap, row in ((deform, "deformable"), (regular, "regular")):
        units = [background_unit(cap, 0), centre_unit(cap, 1), centre_unit(cap, 2)]
        for i, (unit, what) in enumerate(zip(units, ("background", labels[0], labels[1]), strict=True)):
            pts = backproject(cap, unit, method=method, image=i)
            panels.append(image_panel(f"{row}: unit on the {what}", cap, i, [points_layer(pts), unit_layer(pts)]))
    return FigureSpec(
        "receptive_field",
        "Where three stacked 3x3 layers sample, for one top-layer unit",
        f"Red: the 9^3 = 729 sampling locations of the green activation unit, back-projected through three 3x3 layers ({method} method); "
        "top row deformable conv, bottom row its regular-conv twin (a fixed 7x7 lattice). After Dai et al., ICCV 2017, Fig. 5.",
        panels,
        ncols=3,
    )


def levels_caption(pts: Points, method: str, layers: int | None = None) -> str:
    """What each level of a back-projection holds, in words that fit any depth and any groups.
    ``layers``: how many stacked layers the model has (default: as many as levels); where it has
    more, the deepest level is not the bottom layer's and the caption says so."""
    layers = layers or pts.levels
    if pts.levels == 3 == layers and pts.fanout == (9, 9, 9):  # the shipped models: the paper's figure's words
        return (
            f"Level 1: the top layer's 9 samples; level 2: the 9 samples of the middle layer at each of those ({method} "
            "method); level 3: the bottom layer's. Grey lines join each sample to its parent."
        )
    parts = [f"level 1: the top layer's {pts.fanout[0]} samples"]
    for level in range(2, pts.levels + 1):
        below = "the bottom layer" if level == layers else f"layer {level} from the top"
        parts.append(f"level {level}: {below}'s {pts.fanout[level - 1]} samples at each level-{level - 1} point")
    groups = " (every group of the layer below: a sample reads all its channels)" if max(pts.fanout) > 9 else ""
    top = f" The top {pts.levels} of the model's {layers} stacked layers." if layers > pts.levels else ""
    return (
        "; ".join(parts).capitalize() + f" ({method} method){groups}. Grey lines join each sample to its parent." + top
    )


def levels_figure(cap: Capture, unit: tuple[int, int] | None = None, method: str = BILINEAR) -> FigureSpec:
    """Figure 2: the 9, 81 and 729 points of one unit, level by level, parent-to-child lines."""
    unit = unit or centre_unit(cap)
    pts = backproject(cap, unit, method=method)
    panels = []
    for level in range(1, pts.levels + 1):
        sel = pts.where(level=level)
        layers = []
        par = pts.parent[sel]
        if level == 1:
            ux, uy = pts.units_xy[0].numpy()
            px, py = np.full(int(sel.sum()), ux), np.full(int(sel.sum()), uy)
        else:
            px, py = pts.x[par].numpy(), pts.y[par].numpy()
        layers.append(
            Layer("segments", px, py, "parent to child", GRID_GREY, x2=pts.x[sel].numpy(), y2=pts.y[sel].numpy())
        )
        if level > 1:
            prev = pts.where(level=level - 1)
            layers.append(
                Layer("points", pts.x[prev].numpy(), pts.y[prev].numpy(), f"level {level - 1} (parents)", "#377eb8")
            )
        layers.append(
            Layer(
                "points", pts.x[sel].numpy(), pts.y[sel].numpy(), f"level {level}: {int(sel.sum())} points", POINT_RED
            )
        )
        layers.append(unit_layer(pts))
        panels.append(image_panel(f"level {level}: {int(sel.sum())} points", cap, 0, layers))
    return FigureSpec(
        "levels",
        f"The recursion, level by level, for unit {unit} of the top layer",
        levels_caption(pts, method, len(cap.layers)),
        panels,
        ncols=pts.levels,
    )


#: The offset field draws at most this many arrows along a side of a layer's map.
ARROWS_PER_SIDE = 8


def offset_field_figure(cap: Capture) -> FigureSpec:
    """Figure 3: per deformable layer, the mean offset over the 9 taps at a unit (over every
    group's points for a grouped layer), in input pixels. Readable at any depth: arrows at every
    ``step``-th unit (at most :data:`ARROWS_PER_SIDE` a side), and where the offsets are longer
    than the arrows' spacing, every arrow shortened by one factor (named in the title), so that
    arrows never cross; the title's mean is over every unit, at full length."""
    panels = []
    for li, lc in enumerate(cap.layers):
        uy, ux = unit_pixels(cap, li)
        off = lc.offsets_yx[0].mean(dim=(0, 1)) if lc.groups > 1 else lc.offsets_yx[0, 0].mean(dim=0)  # (2, Ho, Wo)
        dy, dx = off[0] * lc.pixel_stride[0], off[1] * lc.pixel_stride[1]
        length = torch.hypot(dx, dy)
        ho, wo = lc.out_size
        step = max(1, math.ceil(max(ho, wo) / ARROWS_PER_SIDE))
        pick = (slice(step // 2, None, step), slice(step // 2, None, step))
        spacing = step * min(lc.out_pixel_stride)
        longest = float(length[pick].max()) if length[pick].numel() else 0.0
        scale = min(1.0, 0.9 * spacing / longest) if longest > 0 else 1.0
        arrows = Layer(
            "arrows",
            ux[pick].flatten().numpy(),
            uy[pick].flatten().numpy(),
            "mean offset (px)" if scale == 1.0 else f"mean offset (px) x{scale:.2g}",
            POINT_RED,
            x2=(scale * dx[pick]).flatten().numpy(),
            y2=(scale * dy[pick]).flatten().numpy(),
        )
        title = f"layer {li + 1}: mean |offset| {float(length.mean()):.2f} px"
        title += "" if scale == 1.0 else f", arrows x{scale:.2g}"
        panels.append(Panel(title, _img(cap), [arrows], extent=_extent(cap)))
    return FigureSpec(
        "offset_field",
        "Offset fields: where each layer shifts its filter, on average",
        "Arrows: mean over the 9 taps of the learned offset at a unit, in input pixels, drawn from the unit's position "
        f"(every unit's, or every n-th unit's where a layer has more than {ARROWS_PER_SIDE} a side; where offsets are "
        "longer than the arrows' spacing, all are shortened by the factor in the title)."
        + (
            f" Grouped layers: the mean over all {cap.layers[-1].groups} groups' {cap.layers[-1].taps} points."
            if cap.layers[-1].groups > 1
            else ""
        ),
        panels,
        ncols=len(panels),
    )


def adaptation_figure(
    deform: Capture, regular: Capture, variants: list[tuple[float, float]], scales: tuple[float, ...]
) -> FigureSpec:
    """Figure 4: one digit transformed, with the centre unit's points, and mean effective
    dilation on the digit versus scale for both models. Image ``i`` of both captures is the digit
    scaled by ``variants[i][0]`` and rotated by ``variants[i][1]`` degrees; the first
    ``len(scales)`` variants are the pure scalings ``scales``."""
    cap_d, cap_r = deform, regular
    panels = []
    for i, (s, a) in enumerate(variants):
        pts = backproject(cap_d, centre_unit(cap_d, i), image=i)
        label = f"scale {s:g}x" if a == 0 else f"rotated {a:+g} deg"
        panels.append(image_panel(label, cap_d, i, [points_layer(pts), unit_layer(pts)]))
    curves = []
    for cap, name, color in ((cap_d, "deformable", POINT_RED), (cap_r, "regular", GRID_GREY)):
        ys = [dilation_summary(cap, image=i, threshold=0.3)["digit"] for i in range(len(scales))]
        curves.append(Layer("curve", np.array(scales, dtype=float), np.array(ys), name, color))
    panels.append(
        Panel(
            "effective dilation on the digit",
            None,
            curves,
            xlabel="digit scale",
            ylabel="effective dilation (px)",
        )
    )
    return FigureSpec(
        "adaptation",
        "Adaptation to scale and rotation",
        "Panels: the centre unit's 729 points as the digit is scaled and rotated (deformable model). Last panel: the paper's effective "
        "dilation (mean distance between adjacent taps' samples) averaged over top-layer units on the digit; the regular twin is flat by construction.",
        panels,
        ncols=4,
    )


def modulation_figure(cap: Capture, unit: tuple[int, int] | None = None) -> FigureSpec:
    """Figure 5: DCNv2: point size and opacity by modulation weight (product of masks)."""
    if cap.layers[-1].mask is None:
        raise ValueError("the modulation figure needs a DCNv2 (deform2) checkpoint")
    unit = unit or centre_unit(cap)
    pts = backproject(cap, unit)
    panels = []
    for level in range(1, pts.levels + 1):
        sel = pts.where(level=level)
        w = pts.weight[sel].numpy()
        rel = w / max(float(w.max()), 1e-12)
        layer = Layer(
            "points",
            pts.x[sel].numpy(),
            pts.y[sel].numpy(),
            "sample, size and opacity = modulation",
            POINT_RED,
            sizes=4 + 60 * rel,
            alphas=np.clip(rel, 0.05, 1.0),
        )
        panels.append(
            image_panel(f"level {level}: weight range {w.min():.3f}..{w.max():.3f}", cap, 0, [layer, unit_layer(pts)])
        )
    return FigureSpec(
        "modulation",
        "DCNv2: how much each sample counts",
        "Point size and opacity: the sample's modulation weight (product of the DCNv2 masks along its path), relative to the largest at that level.",
        panels,
        ncols=pts.levels,
    )


def probabilities_figure(captures: dict[str, Capture], colors: dict[str, str]) -> FigureSpec:
    """Class probabilities of image 0 for each model, bars side by side."""
    layers = []
    n = len(captures)
    for m, (name, cap) in enumerate(captures.items()):
        p = cap.probabilities[0].numpy()
        layers.append(
            Layer("bars", np.arange(len(p), dtype=float), p, name, colors[name], offset=(m - (n - 1) / 2) * 0.8 / n)
        )
    return FigureSpec(
        "probabilities",
        "What the models predict",
        "Softmax probability of each class.",
        [Panel("", None, layers, xlabel="class", ylabel="probability", yrange=(0.0, 1.0))],
        ncols=1,
    )


def density_figure(captures: dict[str, Capture], units: str = "all", method: str = BILINEAR) -> FigureSpec:
    """Where the chosen top-layer units sample, summed over units: one heat map per model."""
    panels = []
    for name, cap in captures.items():
        d = sampling_density(cap, units=units, method=method).numpy()
        panels.append(Panel(name, None, [], heat=d, heat_title="samples per pixel", extent=_extent(cap)))
    which = "every top-layer unit" if units == "all" else "the top-layer units on the digit"
    return FigureSpec(
        "density",
        "Sampling density",
        f"How many of the back-projected samples of {which} fall on each input pixel (weights summed, {method} method).",
        panels,
        ncols=len(panels),
    )


def dilation_figure(cap: Capture, name: str = "deformable") -> FigureSpec:
    """The effective dilation of every top-layer unit, as a map over the units."""
    d = effective_dilation(cap).numpy()
    ho, wo = d.shape
    return FigureSpec(
        "dilation",
        "Effective dilation of the top layer",
        "Mean distance between the sampling locations of adjacent taps of each unit's 3x3 filter (Dai et al. 2017).",
        [
            Panel(
                name,
                None,
                [],
                xlabel="unit column",
                ylabel="unit row",
                heat=d,
                heat_title="px",
                heat_colors="viridis",
                extent=(-0.5, wo - 0.5, ho - 0.5, -0.5),
            )
        ],
        ncols=1,
    )


__all__ = [
    "hold_frame",
    "split_panels",
    "FigureSpec",
    "Layer",
    "Panel",
    "adaptation_figure",
    "background_unit",
    "centre_unit",
    "count_note",
    "density_figure",
    "dilation_figure",
    "dilation_vs_size_figure",
    "probabilities_figure",
    "scene_receptive_field_figure",
    "unit_points_figure",
    "levels_figure",
    "modulation_figure",
    "offset_field_figure",
    "receptive_field_figure",
    "regular_grid",
]


def _extent_with(cap: Capture, xs: list[np.ndarray], ys: list[np.ndarray], margin: float = 1.0):
    """Image axes grown to hold every drawn point (the image frame is then outlined)."""
    x0, x1, y1, y0 = _extent(cap)  # (-0.5, w - 0.5, h - 0.5, -0.5)
    allx = np.concatenate([np.asarray(v, dtype=float).ravel() for v in xs] + [np.array([x0, x1])])
    ally = np.concatenate([np.asarray(v, dtype=float).ravel() for v in ys] + [np.array([y0, y1])])
    lo_x, hi_x = min(x0, allx.min() - margin), max(x1, allx.max() + margin)
    lo_y, hi_y = min(y0, ally.min() - margin), max(y1, ally.max() + margin)
    return (lo_x, hi_x, hi_y, lo_y), (lo_x, hi_x, lo_y, hi_y) != (x0, x1, y0, y1)


def image_panel(title: str, cap: Capture, image: int, layers: list[Layer]) -> Panel:
    """A panel showing image ``image`` of a capture under ``layers``, its axes grown to hold every
    point (never dropped silently) and the image frame outlined when they grow."""
    xs = [layer.x for layer in layers if layer.kind in ("points", "unit", "segments")]
    ys = [layer.y for layer in layers if layer.kind in ("points", "unit", "segments")]
    extent, grown = _extent_with(cap, xs, ys)
    return Panel(title, _img(cap, image), ([frame_layer(cap)] if grown else []) + layers, extent=extent)


def hold_frame(spec: FigureSpec, cap: Capture, box: tuple[float, float, float, float]) -> FigureSpec:
    """The same figure with every image panel on one frame: the image and ``box``
    (``x_min, x_max, y_min, y_max`` in pixels, e.g. :func:`viz.backproject.sample_box`: every
    unit's samples), so that choosing another unit moves the points, not the picture. A panel
    whose own layers reach further keeps them (nothing is cut); the image is outlined when the
    frame is larger than it."""
    image = _extent(cap)
    held, _ = _extent_with(cap, [np.array([box[0], box[1]])], [np.array([box[2], box[3]])])
    panels = []
    for panel in spec.panels:
        if panel.extent is None or (panel.image is None and panel.heat is None):
            panels.append(panel)
            continue
        x0, x1, y1, y0 = panel.extent
        extent = (min(x0, held[0]), max(x1, held[1]), max(y1, held[2]), min(y0, held[3]))
        layers = list(panel.layers)
        if extent != image and not any(layer.label == "image frame" for layer in layers):
            layers.insert(0, frame_layer(cap))
        # a heat map that spans the image keeps its pixels where they are on the larger frame
        origin = panel.heat_origin if panel.heat is None or panel.heat_origin is not None else (0.0, 0.0)
        panels.append(replace(panel, extent=extent, layers=layers, heat_origin=origin))
    return replace(spec, panels=panels)


def frame_layer(cap: Capture) -> Layer:
    """The image's outline, drawn when points fall outside it."""
    x0, x1, y1, y0 = _extent(cap)
    xs, ys = np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1])
    return Layer("segments", xs, ys, "image frame", GRID_GREY, x2=np.roll(xs, -1), y2=np.roll(ys, -1))


def scene_receptive_field_figure(
    deform: Capture,
    regular: Capture | None,
    picks: list[dict[str, tuple[int, int] | None]],
    method: str = BILINEAR,
    names: tuple[str, str] = ("deformable", "regular twin"),
    more: list[tuple[Capture, str]] | tuple = (),
) -> FigureSpec:
    """The paper's Figure 6 on scenes: for every captured scene, a unit on the background, on a
    small digit and on a large digit with their 9^L back-projected points; the deformable model's
    row, then a row for each of ``more`` (other deformable models on the same scenes and units,
    e.g. DCNv3 and DCNv4: all their groups' samples, opacity by weight), then the regular twin's
    (left out when ``regular`` is None). ``picks[i]`` names the units of image ``i``
    (:func:`viz.scene_stats.pick_units`)."""
    panels = []
    rows = [(deform, names[0]), *more] + ([(regular, names[1])] if regular is not None else [])
    for i, units in enumerate(picks):
        for cap, row in rows:
            for what in ("background", "small", "large"):
                unit = units.get(what)
                if unit is None:
                    continue
                pts = backproject(cap, unit, method=method, image=i)
                if all(lc.family == "torchvision" for lc in cap.layers):
                    drawn = [points_layer(pts)]
                else:
                    drawn = family_points_layers(pts, pts.levels, f"{pts.count(level=pts.levels)} samples")
                layers = [*drawn, unit_layer(pts)]
                extent, grown = _extent_with(cap, [d.x for d in drawn], [d.y for d in drawn])
                if grown:
                    layers.insert(0, frame_layer(cap))
                label = "background" if what == "background" else f"{what} digit"
                prefix = f"{i + 1}. " if len(picks) > 1 else ""
                panels.append(Panel(f"{prefix}{row}: {label}", _img(cap, i), layers, extent=extent))
    more_words = (
        f" then {', '.join(name for _, name in more)} (4 groups: 36^3 = 46,656 samples, opacity by weight),"
        if more
        else ""
    )
    return FigureSpec(
        "scene_receptive_field",
        "Where three stacked 3x3 layers sample: background, small digit, large digit",
        f"Red: the 9^3 = 729 sampling locations of the green top-layer unit, back-projected through three 3x3 layers "
        f"({method} method). Rows alternate: the deformable scene model,{more_words} then its regular twin (a fixed "
        "7x7 lattice, 4 px apart). The deformable points reach wide on the background, gather on a small digit and "
        "spread over a large one. After Dai et al., ICCV 2017, Fig. 6.",
        panels,
        ncols=3,
    )


def dilation_vs_size_figure(
    captures: dict[str, Capture], boxes: list[Tensor], heights: list[Tensor], colors: dict[str, str] | None = None
) -> FigureSpec:
    """Top-layer effective dilation of every unit lying in a digit against the digit's height:
    one dot per unit, binned means per model. ``boxes[i]``, ``heights[i]``: image ``i``'s digits."""
    from viz.scene_stats import unit_digits
    from viz.stats import effective_dilation

    layers = []
    palette = [POINT_RED, GRID_GREY, "#377eb8", "#984ea3"]
    for m, (name, cap) in enumerate(captures.items()):
        color = (colors or {}).get(name, palette[m % len(palette)])
        hs, ds = [], []
        for i in range(cap.images.shape[0]):
            d = unit_digits(cap, boxes[i])
            on = d >= 0
            if on.any():
                hs.append(heights[i][d[on]].numpy())
                ds.append(effective_dilation(cap, image=i)[on].numpy())
        h, dv = np.concatenate(hs), np.concatenate(ds)
        layers.append(Layer("points", h, dv, f"{name}: one unit", color, alphas=np.full(len(h), 0.25)))
        edges = np.arange(8, 60, 6)
        centres, means = [], []
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            sel = (h >= lo) & (h < hi)
            if sel.sum() >= 3:
                centres.append((lo + hi) / 2)
                means.append(float(dv[sel].mean()))
        layers.append(Layer("curve", np.array(centres), np.array(means), f"{name}: mean per 6 px bin", color))
    return FigureSpec(
        "scene_dilation",
        "Effective dilation grows with the digit",
        "Each dot: a top-layer unit whose centre lies in a digit's box, at that digit's height; lines: means per 6 px "
        "bin of height. Effective dilation = mean distance between adjacent taps' sampling locations (Dai et al. 2017, "
        "Table 2); a regular 3x3 layer at stride 4 scores 4 px everywhere.",
        [
            Panel(
                "top layer, test scenes",
                None,
                layers,
                xlabel="digit height (px)",
                ylabel="effective dilation (px)",
            )
        ],
        ncols=1,
    )


def segmentation_labels(classes: Tensor, background: int = 10) -> np.ndarray:
    """``(H, W)`` class map -> float labels with NaN on the background (drawn transparent)."""
    labels = classes.numpy().astype(float)
    labels[labels == background] = np.nan
    return labels


def units_layer(cap: Capture, label: str = "units (click one)") -> Layer:
    """Every top-layer unit as a clickable cell carrying its (row, col)."""
    uy, ux = unit_pixels(cap)
    rows, cols = np.meshgrid(np.arange(uy.shape[0]), np.arange(uy.shape[1]), indexing="ij")
    return Layer(
        "units",
        ux.flatten().numpy(),
        uy.flatten().numpy(),
        label,
        UNIT_GREEN,
        custom=np.stack([rows.flatten(), cols.flatten()], 1),
    )


def merged_points_layer(pts: Points, level: int, label: str, color: str = POINT_RED) -> Layer:
    """Points of one level with coincident positions merged, point size growing with how many
    samples share the position (a regular lattice stacks many samples on few positions)."""
    sel = pts.where(level=level)
    xy = np.stack([pts.x[sel].numpy(), pts.y[sel].numpy()], 1)
    uniq, counts = np.unique(np.round(xy, 4), axis=0, return_counts=True)
    return Layer("points", uniq[:, 0], uniq[:, 1], label, color, sizes=12 + 44 * counts / counts.max())


def unit_points_figure(
    deform: Capture,
    regular: Capture,
    unit: tuple[int, int],
    levels: int | None = None,
    method: str = BILINEAR,
    overlay: bool = True,
    names: tuple[str, str] = ("deformable", "regular twin"),
    group: int | None = None,
    points: tuple[Points, Points] | None = None,
) -> FigureSpec:
    """The app's main view: the chosen unit's back-projected points for the deformable model
    and, beside it, its regular twin (coincident samples merged, sized by count); clickable
    units; for dense models the predicted segmentation as a colour overlay. Axes grow to show
    every point; the image frame is outlined then. ``group``: keep one group of a grouped top
    layer (DCNv3/DCNv4); the twin always shows its lattice. ``points``: the two models' points,
    already back-projected (``viz.views``' sampling-points view), instead of computing them."""
    panels = []
    for k, (cap, name) in enumerate(((deform, names[0]), (regular, names[1]))):
        grouped = group if cap.top.groups > 1 else None
        if points is not None:
            pts = points[k]
        else:
            pts = backproject(cap, unit, levels=levels, method=method, group=grouped)
        lvl = pts.levels
        n = pts.count(level=lvl)
        # too many markers to draw or read: a density instead, its pixels inside the axes
        density = density_heat(pts, lvl) if cap.top.deformable and n > DENSITY_ABOVE else None
        if density is not None:
            drawn = []
            (dh, dw), (ox, oy) = density[0].shape, density[1]
            extent, grown = _extent_with(cap, [], [])
            extent = (
                min(extent[0], ox - 0.5),
                max(extent[1], ox + dw - 0.5),
                max(extent[2], oy + dh - 0.5),
                min(extent[3], oy - 0.5),
            )
            grown = grown or extent != _extent(cap)
        else:
            if cap.top.deformable and all(lc.family == "torchvision" for lc in cap.layers):
                drawn = [points_layer(pts, lvl, count_note(pts, lvl))]
            elif cap.top.deformable:
                note = count_note(pts, lvl) + (f", group {group} at the top" if grouped is not None else "")
                drawn = family_points_layers(pts, lvl, note)
            else:
                layer = merged_points_layer(pts, lvl, "")
                layer.label = f"{n} samples on {len(layer.x)} positions (size = count)"
                drawn = [layer]
            extent, grown = _extent_with(cap, [d.x for d in drawn], [d.y for d in drawn])
        layers = ([frame_layer(cap)] if grown else []) + [units_layer(cap), *drawn, unit_layer(pts, f"unit {unit}")]
        seg = segmentation_labels(cap.predictions[0]) if overlay and cap.logits.dim() == 4 else None
        panel = Panel(name, _img(cap), layers, extent=extent, labels=seg, label_colors=DIGIT_COLORS)
        if density is not None:
            panel.heat, panel.heat_origin = density
            panel.heat_title = f"weight of {n:,} samples per pixel"
        panels.append(panel)
    family = "" if all(lc.family == "torchvision" for lc in deform.layers) else f". {family_note(deform)}"
    shown_levels = levels or (points[0].levels if points is not None else deepest_level(deform, group))
    return FigureSpec(
        "unit_points",
        f"Unit {unit}: where it samples",
        f"{method} back-projection through {shown_levels} layers"
        + (f" (the top {shown_levels} of {len(deform.layers)})" if shown_levels < len(deform.layers) else "")
        + family,
        panels,
        ncols=2,
    )


# ---------------------------------------------------------------- what a unit really uses


def box_layer(box: tuple[int, int, int, int], label: str, color: str = UNIT_GREEN) -> Layer:
    """A rectangle around inclusive pixel bounds ``(x0, y0, x1, y1)``."""
    x0, y0, x1, y1 = box[0] - 0.5, box[1] - 0.5, box[2] + 0.5, box[3] + 0.5
    xs, ys = np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1])
    return Layer("segments", xs, ys, label, color, x2=np.roll(xs, -1), y2=np.roll(ys, -1))


def esl_layer(pts: Points, attributions: Tensor, level: int | None = None) -> tuple[Layer, int]:
    """Effective sampling locations: the level's points sized and shaded by ``|attribution|``
    (normalised to the level's largest), so the few samples that matter stand out. Also returns
    how many of the largest carry half of the total."""
    level = level or pts.levels
    sel = pts.where(level=level, unit=0)
    a = attributions[sel[pts.where(unit=0)]].abs().numpy()
    rel = a / max(float(a.max()), 1e-12)
    share = np.sort(rel)[::-1]
    top = int(np.searchsorted(np.cumsum(share) / max(share.sum(), 1e-12), 0.5) + 1)
    layer = Layer(
        "points",
        pts.x[sel].numpy(),
        pts.y[sel].numpy(),
        "samples sized by |gradient x value|",
        POINT_RED,
        sizes=2 + 40 * rel,
        alphas=np.clip(rel, 0.08, 1.0),
    )
    return layer, top


def _rect_segments(rects: np.ndarray, label: str, color: str) -> Layer:
    """Rectangles ``(M, 4)`` (x0, y0, x1, y1) as one segments layer."""
    xs, ys, x2, y2 = [], [], [], []
    for x0, y0, x1, y1 in rects:
        cx, cy = [x0, x1, x1, x0], [y0, y0, y1, y1]
        xs += cx
        ys += cy
        x2 += cx[1:] + cx[:1]
        y2 += cy[1:] + cy[:1]
    return Layer("segments", np.array(xs), np.array(ys), label, color, x2=np.array(x2), y2=np.array(y2))


def roi_bins_panel(title: str, image: np.ndarray, bins, color: str = POINT_RED) -> Panel:
    """One box on one scene: the box (green), its regular bins (grey), the moved bins and arrows
    from each regular bin's centre to its moved centre (``bins``: :class:`viz.roi.RoiBins`)."""
    x0, y0, x1, y1 = bins.box
    box = np.array([[x0 - 0.5, y0 - 0.5, x1 - 0.5, y1 - 0.5]])
    reg, mov = bins.regular.reshape(-1, 4).numpy(), bins.moved.reshape(-1, 4).numpy()
    rc = np.stack([(reg[:, 0] + reg[:, 2]) / 2, (reg[:, 1] + reg[:, 3]) / 2], 1)
    mc = np.stack([(mov[:, 0] + mov[:, 2]) / 2, (mov[:, 1] + mov[:, 3]) / 2], 1)
    layers = [
        _rect_segments(box, "box", UNIT_GREEN),
        _rect_segments(reg, "regular bins", GRID_GREY),
        _rect_segments(mov, "moved bins", color),
        Layer("segments", rc[:, 0], rc[:, 1], "bin shift", color, x2=mc[:, 0], y2=mc[:, 1]),
        Layer("points", mc[:, 0], mc[:, 1], "moved bin centres", color),
    ]
    h, w = image.shape
    allx = np.concatenate([mov[:, [0, 2]].ravel(), box[:, [0, 2]].ravel(), [-0.5, w - 0.5]])
    ally = np.concatenate([mov[:, [1, 3]].ravel(), box[:, [1, 3]].ravel(), [-0.5, h - 0.5]])
    extent = (float(allx.min()), float(allx.max()), float(ally.max()), float(ally.min()))
    return Panel(f"{title}: reads {bins.prediction}", image, layers, extent=extent)


def roi_figure(rows: list[dict]) -> FigureSpec:
    """The paper's Figure 7 on scenes: each row one box (``title``, ``image`` (H, W),
    ``deform`` and ``plain`` :class:`viz.roi.RoiBins`); columns: the deformable pooling's moved
    bins, the plain RoI Align twin."""
    panels = []
    for r in rows:
        panels.append(roi_bins_panel(f"{r['title']}, deformable", r["image"], r["deform"]))
        panels.append(roi_bins_panel(f"{r['title']}, RoI Align", r["image"], r["plain"], GRID_GREY))
    return FigureSpec(
        "roi_bins",
        "Deformable RoI pooling: where the 3x3 bins move",
        "Green: the box given to the model (exact, or jittered by up to 30% of its size); grey: its 3x3 regular bins; "
        "red: the bins after the learned offsets (gamma 0.1 times the RoI size), lines from each regular bin centre to "
        "its moved centre. After Dai et al., ICCV 2017, Fig. 7.",
        panels,
        ncols=2,
    )
