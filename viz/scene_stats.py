"""Statistics of scene captures: which digit each unit lies in, effective dilation by digit size
(the paper's Table 2), how much of a unit's support lands on its own digit, and the choice of
representative units (background / small digit / large digit) for figures and the app.

Scene annotations come in as plain tensors (boxes ``(D, 4)`` as ``(x0, y0, x1, y1)`` pixel
edges and heights ``(D,)`` of one image's digits), so these functions know nothing of how the
scenes were made. A unit lies *in* a digit when its centre pixel lies inside the digit's box
(the paper sorts units by the ground-truth boxes); in two boxes, the smaller box wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from models.data.scenes import SIZE_CLASSES, size_class
from viz.backproject import backproject, exact_weight_maps
from viz.capture import Capture
from viz.geometry import BILINEAR, EXACT, to_pixels
from viz.stats import effective_dilation, unit_pixels

REGIONS = (*SIZE_CLASSES, "background")


def unit_digits(cap: Capture, boxes: Tensor, layer: int = -1) -> Tensor:
    """``(Ho, Wo)`` int64: index (into ``boxes``) of the digit each output unit of ``layer`` lies
    in, -1 on the background."""
    uy, ux = unit_pixels(cap, layer)
    if boxes.numel() == 0:
        return torch.full(uy.shape, -1, dtype=torch.long)
    b = boxes.to(uy.dtype)
    # pixel centres at integers: box (x0, y0, x1, y1) covers centres x0 .. x1 - 1, i.e. [x0 - 0.5, x1 - 0.5)
    inside = (
        (ux[..., None] >= b[:, 0] - 0.5)
        & (ux[..., None] < b[:, 2] - 0.5)
        & (uy[..., None] >= b[:, 1] - 0.5)
        & (uy[..., None] < b[:, 3] - 0.5)
    )  # (Ho, Wo, D)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    score = torch.where(inside, area, torch.full_like(area, math.inf))
    best = score.argmin(dim=-1)
    return torch.where(inside.any(dim=-1), best, torch.full_like(best, -1))


def unit_regions(cap: Capture, boxes: Tensor, heights: Tensor, layer: int = -1) -> Tensor:
    """``(Ho, Wo)`` int64 region of every unit: 0 small, 1 medium, 2 large digit, 3 background."""
    d = unit_digits(cap, boxes, layer)
    if heights.numel() == 0:
        return torch.full_like(d, 3)
    cls = size_class(heights)
    return torch.where(d >= 0, cls[d.clamp_min(0)], torch.full_like(d, 3))


def overlapping_boxes(boxes: Tensor, index: int) -> list[int]:
    """The digits (indices into ``boxes``, ``(D, 4)`` as ``x0, y0, x1, y1``) whose box overlaps
    digit ``index``'s: a digit rescaled into its neighbour."""
    x0, y0, x1, y1 = boxes[index].tolist()
    return [
        k
        for k, (a0, b0, a1, b1) in enumerate(boxes.tolist())
        if k != index and min(x1, a1) > max(x0, a0) and min(y1, b1) > max(y0, b0)
    ]


def ink_boxes(image: Tensor, threshold: float = 0.3, join: int = 2, min_pixels: int = 6) -> Tensor:
    """Boxes of the separate ink blobs of a scene ``(H, W)`` (or ``(1, H, W)``), for pictures that
    come without annotations (drawings, uploads).

    Pixels above ``threshold`` are joined into one blob when they lie within ``join`` pixels of
    each other (so a digit drawn in two strokes stays one), found by propagating the largest
    label through ``2 * join + 1`` square neighbourhoods until nothing changes. Blobs of fewer
    than ``min_pixels`` ink pixels are dropped. Returns ``(D, 4)`` boxes ``(x0, y0, x1, y1)`` over
    each blob's ink, sorted by ``y0`` then ``x0``.
    """
    img = image[0] if image.dim() == 3 else image
    ink = img > threshold
    h, w = ink.shape
    labels = torch.where(ink, torch.arange(1, h * w + 1, dtype=torch.float32).view(h, w), torch.zeros(h, w))
    grown = ink[None, None].float()
    near = torch.nn.functional.max_pool2d(grown, 2 * join + 1, stride=1, padding=join)[0, 0] > 0
    for _ in range(h * w):
        spread = torch.nn.functional.max_pool2d(labels[None, None], 2 * join + 1, stride=1, padding=join)[0, 0]
        new = torch.where(near, spread, torch.zeros_like(spread))
        if torch.equal(new, labels):
            break
        labels = new
    boxes = []
    for lab in labels[ink].unique():
        ys, xs = ((labels == lab) & ink).nonzero(as_tuple=True)
        if ys.numel() >= min_pixels:
            boxes.append([float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1])
    boxes.sort(key=lambda b: (b[1], b[0]))
    return torch.tensor(boxes, dtype=torch.float32).view(-1, 4)


def own_digit_fraction(cap: Capture, boxes: Tensor, image: int = 0, method: str | None = None) -> tuple[Tensor, Tensor]:
    """For every top unit lying in a digit: the weighted fraction of its 9^L back-projected
    points (last level) that land inside its own digit's box. Weights count by their size
    (DCNv4's may be negative). ``method``: default ``bilinear``, or ``exact`` for grouped layers,
    whose ``(G P)^L`` samples per unit (46,656 for 4 groups of 3x3) merge onto map units.

    Returns:
        ``(digit (U,), fraction (U,))`` for the U units in digits: the digit index and fraction.
    """
    if method is None:
        method = EXACT if any(lc.groups > 1 for lc in cap.layers) else BILINEAR
    d = unit_digits(cap, boxes)
    units = (d >= 0).nonzero()
    if units.numel() == 0:
        return torch.empty(0, dtype=torch.long), torch.empty(0)
    owner_of_unit = d[units[:, 0], units[:, 1]]
    if method == EXACT:  # merged weights as dense maps: fast for grouped layers' (G P)^L samples
        maps, layer = exact_weight_maps(cap, units, image=image)
        h, w = maps.shape[-2:]
        ys, xs = to_pixels(
            torch.arange(h, dtype=torch.float32).view(h, 1), torch.arange(w, dtype=torch.float32).view(1, w),
            layer.pixel_stride, layer.pixel_offset,
        )  # fmt: skip
        b = boxes[owner_of_unit].float().view(-1, 4, 1, 1)
        on = (xs >= b[:, 0] - 0.5) & (xs < b[:, 2] - 0.5) & (ys >= b[:, 1] - 0.5) & (ys < b[:, 3] - 0.5)
        weights = maps.abs().float()
        return owner_of_unit, (weights * on).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1e-12)
    pts = backproject(cap, units, method=method, image=image)
    final = pts.where(level=pts.levels)
    owner = owner_of_unit[pts.unit[final]]
    b = boxes[owner]
    x, y, w = pts.x[final], pts.y[final], pts.weight[final].float().abs()
    on = (x >= b[:, 0] - 0.5) & (x < b[:, 2] - 0.5) & (y >= b[:, 1] - 0.5) & (y < b[:, 3] - 0.5)
    total = torch.zeros(len(units)).index_add_(0, pts.unit[final], w)
    hit = torch.zeros(len(units)).index_add_(0, pts.unit[final], w * on.float())
    return owner_of_unit, hit / total.clamp_min(1e-12)


@dataclass
class RegionStats:
    """Per-unit values gathered by region over many images: ``values[region]`` lists."""

    values: dict[str, list[float]]

    @classmethod
    def empty(cls) -> RegionStats:
        return cls({r: [] for r in REGIONS})

    def add(self, per_unit: Tensor, regions: Tensor) -> None:
        for k, name in enumerate(REGIONS):
            self.values[name].extend(per_unit[regions == k].flatten().tolist())

    def mean_std(self, region: str) -> tuple[float, float, int]:
        v = torch.tensor(self.values[region], dtype=torch.float64)
        if v.numel() == 0:
            return math.nan, math.nan, 0
        return float(v.mean()), float(v.std()) if v.numel() > 1 else 0.0, int(v.numel())


def dilation_by_region(cap: Capture, boxes: Tensor, heights: Tensor, image: int, layer: int) -> tuple[Tensor, Tensor]:
    """Effective dilation ``(Ho, Wo)`` of ``layer``'s units in pixels and each unit's region."""
    return effective_dilation(cap, layer, image), unit_regions(cap, boxes, heights, layer)


def regular_dilation(cap: Capture, layer: int) -> float:
    """What a regular 3x3 layer with this geometry scores: its grid step (the dilation; times
    ``offset_scale`` for DCNv3/DCNv4) times its pixel stride (rows and columns agree for the
    shipped models; their mean otherwise)."""
    lc = cap.layers[layer]
    step = lc.grid_step
    return 0.5 * (step[0] * lc.pixel_stride[0] + step[1] * lc.pixel_stride[1])


def pick_units(cap: Capture, boxes: Tensor, heights: Tensor, image: int = 0) -> dict[str, tuple[int, int] | None]:
    """Representative top units of one scene: ``background`` (the background unit farthest
    from every box, off the outermost ring), ``small`` and ``large`` (the unit nearest to the
    centre of the smallest / largest digit's box, among units in that digit); None when absent."""
    d = unit_digits(cap, boxes)
    uy, ux = unit_pixels(cap)
    h, w = d.shape
    out: dict[str, tuple[int, int] | None] = {"background": None, "small": None, "large": None}
    if boxes.numel():
        order = heights.argsort()
        for name, k in (("small", int(order[0])), ("large", int(order[-1]))):
            if name == "small" and size_class(heights[k : k + 1]).item() == 2:
                continue  # no small digit in this scene
            if name == "large" and size_class(heights[k : k + 1]).item() == 0:
                continue
            cx, cy = float(boxes[k, 0] + boxes[k, 2] - 1) / 2, float(boxes[k, 1] + boxes[k, 3] - 1) / 2
            dist = (uy - cy) ** 2 + (ux - cx) ** 2
            dist[d != k] = math.inf
            if torch.isfinite(dist).any():
                out[name] = divmod(int(dist.argmin()), w)
    bg = d < 0
    inner = bg.clone()
    inner[0], inner[-1], inner[:, 0], inner[:, -1] = False, False, False, False
    cand = inner if inner.any() else bg
    if cand.any():
        if boxes.numel():
            b = boxes.to(uy.dtype)
            gap_x = torch.maximum(b[:, 0] - 0.5 - ux[..., None], ux[..., None] - (b[:, 2] - 0.5)).clamp_min(0)
            gap_y = torch.maximum(b[:, 1] - 0.5 - uy[..., None], uy[..., None] - (b[:, 3] - 0.5)).clamp_min(0)
            clearance = torch.hypot(gap_x, gap_y).min(dim=-1).values
        else:
            clearance = -((uy - uy.mean()) ** 2 + (ux - ux.mean()) ** 2)
        clearance[~cand] = -math.inf
        out["background"] = divmod(int(clearance.argmax()), w)
    return out


__all__ = [
    "overlapping_boxes",
    "REGIONS",
    "RegionStats",
    "dilation_by_region",
    "ink_boxes",
    "own_digit_fraction",
    "pick_units",
    "regular_dilation",
    "unit_digits",
    "unit_regions",
]
