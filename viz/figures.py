"""Figure specs: exactly the data each figure draws, independent of any plotting library.

Builders here turn captures and back-projected points into :class:`FigureSpec` objects;
``viz.render`` draws them with matplotlib (PNG/SVG) or Plotly (HTML). Tests check the specs,
i.e. the data drawn, not pixels. All coordinates are image pixels (x = column, y = row).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from models.transforms import rotate_scale
from viz.backproject import Points, backproject, regular_grid
from viz.capture import Capture, capture
from viz.geometry import BILINEAR
from viz.stats import dilation_summary, on_digit_units, unit_pixels

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
    only), ``segments`` (x, y, x2, y2), ``arrows`` (x, y, u, v) or ``curve`` (x, y)."""

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


@dataclass
class Panel:
    title: str
    image: np.ndarray | None = None  # (H, W) in [0, 1], drawn grey in input-pixel axes
    layers: list[Layer] = field(default_factory=list)
    xlabel: str = "x (input pixel)"
    ylabel: str = "y (input pixel)"
    extent: tuple[float, float, float, float] | None = None  # x0, x1, y0, y1 (image axes)
    overlay: np.ndarray | None = None  # (H, W, 4) RGBA in [0, 1] over the image (segmentation)


@dataclass
class FigureSpec:
    name: str
    title: str
    caption: str
    panels: list[Panel]
    ncols: int


def _img(cap: Capture, i: int = 0) -> np.ndarray:
    return cap.images[i, 0].numpy()


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


def unit_layer(pts: Points, label: str = "activation unit") -> Layer:
    xy = pts.units_xy.numpy()
    return Layer("unit", xy[:, 0], xy[:, 1], label, UNIT_GREEN)


def centre_unit(cap: Capture, image: int = 0) -> tuple[int, int]:
    """The top-layer unit closest to the ink's centre of mass."""
    img = cap.images[image, 0]
    total = img.sum().clamp_min(1e-6)
    ys, xs = torch.meshgrid(
        torch.arange(img.shape[0], dtype=torch.float32), torch.arange(img.shape[1], dtype=torch.float32), indexing="ij"
    )
    cy, cx = float((ys * img).sum() / total), float((xs * img).sum() / total)
    uy, ux = unit_pixels(cap)
    d = (uy - cy) ** 2 + (ux - cx) ** 2
    i = int(d.argmin())
    return divmod(i, d.shape[1])


def background_unit(cap: Capture, image: int = 0) -> tuple[int, int]:
    """A top-layer unit on the background: at least 3 units from any unit on the digit, off the
    outermost ring, as near the digit's centre as possible."""
    on = on_digit_units(cap, image, threshold=0.1)
    h, w = on.shape
    if not on.any():
        return (h // 2, w // 2)
    near = torch.nn.functional.max_pool2d(on[None, None].float(), 5, stride=1, padding=2)[0, 0] > 0
    cand = (~near).clone()
    cand[:1], cand[-1:], cand[:, :1], cand[:, -1:] = False, False, False, False
    if not cand.any():
        cand = ~on
    cu = centre_unit(cap, image)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    d = ((ys - cu[0]) ** 2 + (xs - cu[1]) ** 2).float()
    d[~cand] = float("inf")
    return divmod(int(d.argmin()), w)


def receptive_field_figure(
    deform: nn.Module, regular: nn.Module, digit: Tensor, small: float = 0.6, large: float = 1.3, method: str = BILINEAR
) -> FigureSpec:
    """Figure 1: the paper's receptive-field figure. Columns: a unit on the background, on a
    small digit, on a large digit; rows: deformable model, regular twin."""
    images = torch.stack([digit, rotate_scale(digit, 0.0, small), rotate_scale(digit, 0.0, large)])
    panels = []
    for model, row in ((deform, "deformable"), (regular, "regular")):
        cap = capture(model, images)
        units = [background_unit(cap, 0), centre_unit(cap, 1), centre_unit(cap, 2)]
        for i, (unit, what) in enumerate(
            zip(units, ("background", f"small digit ({small:g}x)", f"large digit ({large:g}x)"), strict=True)
        ):
            pts = backproject(cap, unit, method=method, image=i)
            panels.append(
                Panel(
                    f"{row}: unit on the {what}",
                    _img(cap, i),
                    [points_layer(pts), unit_layer(pts)],
                    extent=_extent(cap),
                )
            )
    return FigureSpec(
        "receptive_field",
        "Where three stacked 3x3 layers sample, for one top-layer unit",
        f"Red: the 9^3 = 729 sampling locations of the green activation unit, back-projected through three 3x3 layers ({method} method); "
        "top row deformable conv, bottom row its regular-conv twin (a fixed 7x7 lattice). After Dai et al., ICCV 2017, Fig. 5.",
        panels,
        ncols=3,
    )


def levels_figure(
    model: nn.Module, digit: Tensor, unit: tuple[int, int] | None = None, method: str = BILINEAR
) -> FigureSpec:
    """Figure 2: the 9, 81 and 729 points of one unit, level by level, parent-to-child lines."""
    cap = capture(model, digit)
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
        panels.append(Panel(f"level {level}: {int(sel.sum())} points", _img(cap), layers, extent=_extent(cap)))
    return FigureSpec(
        "levels",
        f"The recursion, level by level, for unit {unit} of the top layer",
        f"Level 1: the top layer's 9 samples; level 2: the 9 samples of the middle layer at each of those ({method} method); "
        "level 3: the bottom layer's. Grey lines join each sample to its parent.",
        panels,
        ncols=pts.levels,
    )


def offset_field_figure(model: nn.Module, digit: Tensor) -> FigureSpec:
    """Figure 3: per deformable layer, the mean offset over the 9 taps at each unit."""
    cap = capture(model, digit)
    panels = []
    for li, lc in enumerate(cap.layers):
        uy, ux = unit_pixels(cap, li)
        off = lc.offsets_yx[0, 0].mean(dim=0)  # (2, Ho, Wo): mean over taps
        dy, dx = off[0] * lc.pixel_stride[0], off[1] * lc.pixel_stride[1]
        mag = float(torch.hypot(dx, dy).mean())
        arrows = Layer(
            "arrows",
            ux.flatten().numpy(),
            uy.flatten().numpy(),
            "mean offset (px)",
            POINT_RED,
            x2=dx.flatten().numpy(),
            y2=dy.flatten().numpy(),
        )
        panels.append(
            Panel(f"layer {li + 1} ({lc.name}): mean |offset| {mag:.2f} px", _img(cap), [arrows], extent=_extent(cap))
        )
    return FigureSpec(
        "offset_field",
        "Offset fields: where each layer shifts its filter, on average",
        "Arrows: mean over the 9 taps of the learned offset at each unit, in input pixels, drawn from the unit's position.",
        panels,
        ncols=len(panels),
    )


def adaptation_figure(
    deform: nn.Module, regular: nn.Module, digit: Tensor, scales=(0.6, 0.8, 1.0, 1.2, 1.4), angles=(-45.0, 45.0)
) -> FigureSpec:
    """Figure 4: the same digit scaled and rotated with the centre unit's points, and mean
    effective dilation on the digit versus scale for both models."""
    variants = [(s, 0.0) for s in scales] + [(1.0, a) for a in angles]
    images = torch.stack([rotate_scale(digit, a, s) for s, a in variants])
    cap_d, cap_r = capture(deform, images), capture(regular, images)
    panels = []
    for i, (s, a) in enumerate(variants):
        pts = backproject(cap_d, centre_unit(cap_d, i), image=i)
        label = f"scale {s:g}x" if a == 0 else f"rotated {a:+g} deg"
        panels.append(Panel(label, _img(cap_d, i), [points_layer(pts), unit_layer(pts)], extent=_extent(cap_d)))
    curves = []
    for cap, name, color in ((cap_d, "deformable", POINT_RED), (cap_r, "regular", GRID_GREY)):
        ys = [dilation_summary(cap, image=i, threshold=0.3)["digit"] for i in range(len(scales))]
        curves.append(Layer("curve", np.array(scales, dtype=float), np.array(ys), name, color))
    panels.append(
        Panel(
            "mean effective dilation on the digit, top layer",
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


def modulation_figure(model: nn.Module, digit: Tensor, unit: tuple[int, int] | None = None) -> FigureSpec:
    """Figure 5: DCNv2: point size and opacity by modulation weight (product of masks)."""
    cap = capture(model, digit)
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
            Panel(
                f"level {level}: weight range {w.min():.3f}..{w.max():.3f}",
                _img(cap),
                [layer, unit_layer(pts)],
                extent=_extent(cap),
            )
        )
    return FigureSpec(
        "modulation",
        "DCNv2: how much each sample counts",
        "Point size and opacity: the sample's modulation weight (product of the DCNv2 masks along its path), relative to the largest at that level.",
        panels,
        ncols=pts.levels,
    )


__all__ = [
    "FigureSpec",
    "Layer",
    "Panel",
    "adaptation_figure",
    "background_unit",
    "centre_unit",
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


def frame_layer(cap: Capture) -> Layer:
    """The image's outline, drawn when points fall outside it."""
    x0, x1, y1, y0 = _extent(cap)
    xs, ys = np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1])
    return Layer("segments", xs, ys, "image frame", GRID_GREY, x2=np.roll(xs, -1), y2=np.roll(ys, -1))


def scene_receptive_field_figure(
    deform: Capture,
    regular: Capture,
    picks: list[dict[str, tuple[int, int] | None]],
    method: str = BILINEAR,
    names: tuple[str, str] = ("deformable", "regular twin"),
) -> FigureSpec:
    """The paper's Figure 6 on scenes: for every captured scene, a unit on the background, on a
    small digit and on a large digit with their 9^L back-projected points; the deformable model's
    row, then the regular twin's. ``picks[i]`` names the units of image ``i``
    (:func:`viz.scene_stats.pick_units`)."""
    panels = []
    for i, units in enumerate(picks):
        for cap, row in ((deform, names[0]), (regular, names[1])):
            for what in ("background", "small", "large"):
                unit = units.get(what)
                if unit is None:
                    continue
                pts = backproject(cap, unit, method=method, image=i)
                layers = [points_layer(pts), unit_layer(pts)]
                extent, grown = _extent_with(cap, [pts.x.numpy()], [pts.y.numpy()])
                if grown:
                    layers.insert(0, frame_layer(cap))
                label = "background" if what == "background" else f"{what} digit"
                panels.append(Panel(f"scene {i + 1}, {row}: unit on the {label}", _img(cap, i), layers, extent=extent))
    return FigureSpec(
        "scene_receptive_field",
        "Where three stacked 3x3 layers sample: background, small digit, large digit",
        f"Red: the 9^3 = 729 sampling locations of the green top-layer unit, back-projected through three 3x3 layers "
        f"({method} method). Rows alternate: the deformable scene model, then its regular twin (a fixed 7x7 lattice, "
        "4 px apart). The deformable points reach wide on the background, gather on a small digit and spread over a "
        "large one. After Dai et al., ICCV 2017, Fig. 6.",
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


def segmentation_overlay(classes: Tensor, alpha: float = 0.45, background: int = 10) -> np.ndarray:
    """``(H, W)`` class map -> ``(H, W, 4)`` RGBA: each digit class in its colour, background clear."""
    from matplotlib.colors import to_rgb

    palette = np.array([to_rgb(c) for c in DIGIT_COLORS] + [(0.0, 0.0, 0.0)])
    cls = classes.numpy().astype(int).clip(0, background)
    rgba = np.zeros((*cls.shape, 4))
    rgba[..., :3] = palette[cls]
    rgba[..., 3] = np.where(cls == background, 0.0, alpha)
    return rgba


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
    return Layer("points", uniq[:, 0], uniq[:, 1], label, color, sizes=6 + 10 * np.sqrt(counts / counts.max()) ** 2)


def scene_unit_figure(
    deform: Capture,
    regular: Capture,
    unit: tuple[int, int],
    levels: int | None = None,
    method: str = BILINEAR,
    overlay: bool = True,
    names: tuple[str, str] = ("deformable", "regular twin"),
) -> FigureSpec:
    """The app's main scene view: the chosen unit's back-projected points for the deformable
    model and, beside it, its regular twin; clickable units; the predicted segmentation as a
    colour overlay. Axes grow to show every point; the image frame is outlined then."""
    panels = []
    for cap, name in ((deform, names[0]), (regular, names[1])):
        pts = backproject(cap, unit, levels=levels, method=method)
        lvl = pts.levels
        n = pts.count(level=lvl)
        if cap.top.deformable:
            layer = points_layer(pts, lvl, f"{n} sampling points (level {lvl})")
        else:
            layer = merged_points_layer(pts, lvl, "")
            layer.label = f"{n} samples on {len(layer.x)} positions (size = count)"
        extent, grown = _extent_with(cap, [layer.x], [layer.y])
        layers = ([frame_layer(cap)] if grown else []) + [units_layer(cap), layer, unit_layer(pts, f"unit {unit}")]
        seg = segmentation_overlay(cap.predictions[0]) if overlay and cap.logits.dim() == 4 else None
        panels.append(Panel(name, _img(cap), layers, extent=extent, overlay=seg))
    return FigureSpec(
        "scene_unit",
        f"Unit {unit}: where it samples",
        f"{method} back-projection through {levels or len(deform.layers)} layers",
        panels,
        ncols=2,
    )
