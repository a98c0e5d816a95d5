"""Back-projection: where a top-layer unit's 9^L samples fall in the image.

Level 1 holds the samples of the top layer at the chosen unit, on the top layer's input
map: its ``P`` points (9 for a 3x3 kernel) in each of its ``G`` groups, ``G * P`` in all. Each
of them is a position on the output map of the layer below, where that layer's offsets are
read to give ``G * P`` samples of its own (level 2): the sample reads every channel there, and
every group of the layer below made some of them. And so on down to level L, whose points lie
on the bottom layer's input map; every level is finally mapped to image pixels. A DCNv1/v2
model has one group: ``9^L`` points. ``group=g`` keeps only group ``g`` at the top layer (a
readable picture of one group: ``P * (G * P)^(L - 1)`` points); the layers below still follow
every group.

Weights multiply along the path: DCNv2 masks (in [0, 1]), DCNv3's softmax weights (the ``P``
points of a group sum to 1), DCNv4's unnormalised, signed weights; 1 for DCNv1 and regular convs.

A sample usually lands between units. ``method`` says how the level below is read there:

``nearest``
    round to the nearest unit (half up), as the public visualisation code derived from the
    paper's MXNet demo does; samples whose nearest unit is off the map are dropped with
    their descendants. Weight: product of DCNv2 masks along the path (1 for DCNv1).
``bilinear``
    offsets (and masks) interpolated at the fractional position, zero outside the map as in
    the operator. Always 9^level points per level; ``inside`` is False for a sample with no
    neighbour on its map (the operator read an exact zero there) and for all descendants of
    such a sample. Weight: product of the interpolated masks.
``exact``
    every sample expands to its 4 bilinear neighbour units with their bilinear weights; units
    that coincide are merged (weights add). Points are units, weight = sum over paths of
    bilinear weights times sample weights: the true weighted set of input positions the unit
    depends on (with unit kernel weights, or identity projections, it equals the gradient of the
    unit with respect to the input map). Up to ``(4 G P)^level`` points. ``parent`` is the
    heaviest contributing parent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from viz.capture import Capture, LayerCapture
from viz.geometry import (
    BILINEAR,
    EXACT,
    METHODS,
    NEAREST,
    bilinear_neighbours,
    children,
    merge_coincident,
    read_bilinear,
    read_nearest,
    to_pixels,
)


@dataclass
class Points:
    """Back-projected points of one or more top-layer units, all levels, as flat arrays.

    Attributes:
        x, y: ``(P,)`` image pixel coordinates (x = column, y = row, pixel centres at integers).
        weight: ``(P,)`` see the module docstring for each method.
        level: ``(P,)`` 1 (the top layer's 9 samples) .. ``levels``.
        parent: ``(P,)`` index (into these arrays) of the level-above point it descends from;
            -1 at level 1, whose parent is the unit itself.
        unit: ``(P,)`` index into ``units_yx``.
        tap: ``(P,)`` point of the sample within its group's filter (kernel tap ``k = i * kw + j``
            for a torchvision-style layer; DCNv3/DCNv4 number theirs x-major); -1 for ``exact``
            points, which merge several taps.
        group: ``(P,)`` the group of the layer whose sample it is (-1 for ``exact`` points).
        inside: ``(P,)`` False for bilinear samples that read only zero padding (or descend
            from one); True otherwise.
        units_yx: ``(B, 2)`` the top-layer output units (row, column).
        units_xy: ``(B, 2)`` their positions in image pixels (x, y).
        method, levels: how and how deep the points were computed.
        fanout: samples per parent at each level (``G * P``; level 1 ``P`` when one group is kept).
    """

    x: Tensor
    y: Tensor
    weight: Tensor
    level: Tensor
    parent: Tensor
    unit: Tensor
    tap: Tensor
    inside: Tensor
    units_yx: Tensor
    units_xy: Tensor
    method: str
    levels: int
    taps: int = 9  # samples per unit at level 1 (G * P, or P for one group)
    group: Tensor | None = None
    fanout: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.group is None:
            self.group = torch.zeros_like(self.tap)
        if not self.fanout:
            self.fanout = (self.taps,) * self.levels

    def paths(self, level: int) -> int:
        """How many sample paths reach ``level`` from one unit (``9^level`` for DCNv1/v2)."""
        return math.prod(self.fanout[:level])

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def xy(self) -> Tensor:
        """``(P, 2)`` pixel positions as (x, y) pairs, for plotting."""
        return torch.stack([self.x, self.y], dim=1)

    def where(self, level: int | None = None, unit: int | None = None, inside_only: bool = False) -> Tensor:
        """Boolean ``(P,)`` selecting a level and/or a unit."""
        sel = torch.ones(len(self), dtype=torch.bool)
        if level is not None:
            sel &= self.level == level
        if unit is not None:
            sel &= self.unit == unit
        if inside_only:
            sel &= self.inside
        return sel

    def count(self, level: int | None = None, unit: int | None = None) -> int:
        return int(self.where(level, unit).sum())


def _as_units(units: tuple[int, int] | Tensor | str, size: tuple[int, int]) -> Tensor:
    h, w = size
    if isinstance(units, str):
        if units != "all":
            raise ValueError(f"units must be (row, col), a (B, 2) tensor or 'all', got {units!r}")
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        return torch.stack([yy.flatten(), xx.flatten()], dim=1)
    t = torch.as_tensor(units, dtype=torch.long)
    if t.dim() == 1:
        t = t.unsqueeze(0)
    if t.dim() != 2 or t.shape[1] != 2:
        raise ValueError(f"units must be (row, col) or (B, 2), got shape {tuple(t.shape)}")
    bad = (t[:, 0] < 0) | (t[:, 0] >= h) | (t[:, 1] < 0) | (t[:, 1] >= w)
    if bad.any():
        raise ValueError(f"unit {t[bad][0].tolist()} is outside the top layer's {h}x{w} map (row, col)")
    return t


def _fields(layer: LayerCapture, image: int, group: int | None) -> tuple[Tensor, Tensor | None, Tensor]:
    """The layer's offsets ``(G'P * 2, Ho, Wo)`` (channel ``2q`` = dy of sample ``q = g P + p``),
    weights ``(G'P, Ho, Wo)`` and regular grid ``(G'P, 2)`` of the groups followed (one, or all)."""
    off = layer.offsets_yx[image if layer.offsets_yx.shape[0] > 1 else 0]  # (G, P, 2, Ho, Wo)
    mask = layer.mask[image] if layer.mask is not None else None  # (G, P, Ho, Wo)
    if group is not None:
        if not 0 <= group < off.shape[0]:
            raise ValueError(f"group {group} not in layer {layer.name!r}'s {off.shape[0]} group(s)")
        off = off[group : group + 1]
        mask = mask[group : group + 1] if mask is not None else None
    g, p, _, ho, wo = off.shape
    grid = layer.grid_yx(off.dtype).repeat(g, 1)
    return off.reshape(2 * g * p, ho, wo), (mask.reshape(g * p, ho, wo) if mask is not None else None), grid


@dataclass
class Frontier:
    """Points of one level, ``(P,)`` each: positions on a map (rows ``y``, columns ``x``), their
    weight, the top unit they belong to, their parent's global index, their sample index
    ``q = g * P + p`` within the parent's samples and whether they (and all their ancestors)
    read something on the map."""

    y: Tensor
    x: Tensor
    weight: Tensor
    unit: Tensor
    parent: Tensor
    tap: Tensor
    inside: Tensor

    def select(self, keep: Tensor) -> Frontier:
        return Frontier(*(getattr(self, f)[keep] for f in ("y", "x", "weight", "unit", "parent", "tap", "inside")))


def _expand(
    f: Frontier, index: Tensor, layer: LayerCapture, off: Tensor, mask: Tensor | None, grid: Tensor, base
) -> Frontier:
    """Every frontier point's ``G'P`` children on the layer's input map (the sampling formula
    applied at ``base`` = the point's position, integer or fractional, with the offsets read there)."""
    k = grid.shape[0]
    cy, cx = children(base[0], base[1], off.view(-1, k, 2), grid, layer.stride)
    p = f.y.shape[0]
    w = f.weight.unsqueeze(1) * (mask if mask is not None else 1.0)
    return Frontier(
        y=cy.flatten(),
        x=cx.flatten(),
        weight=w.expand(-1, k).flatten(),
        unit=f.unit.unsqueeze(1).expand(-1, k).flatten(),
        parent=index.unsqueeze(1).expand(-1, k).flatten(),
        tap=torch.arange(k).unsqueeze(0).expand(p, -1).flatten(),
        inside=f.inside.unsqueeze(1).expand(-1, k).flatten(),
    )


def _with_mask(field: Tensor, mask: Tensor | None) -> Tensor:
    """Offsets and weights as one field, so that a step reads both in one gather."""
    return field if mask is None else torch.cat([field, mask])


def _split_mask(vals: Tensor, field: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """``(P, C)`` values read from :func:`_with_mask`'s field -> offsets, weights (or None)."""
    c = field.shape[0]
    return (vals, None) if mask is None else (vals[:, :c], vals[:, c:])


def _step_nearest(
    f: Frontier, index: Tensor, layer: LayerCapture, field: Tensor, mask: Tensor | None, grid: Tensor
) -> Frontier:
    """Round each point to its nearest unit, read the offsets there; drop children whose own
    nearest unit is off the input map (they could not be read one level further down)."""
    vals, ry, rx, _ = read_nearest(_with_mask(field, mask), f.y, f.x)
    off, m = _split_mask(vals, field, mask)
    child = _expand(f, index, layer, off, m, grid, (ry, rx))
    h, w = layer.in_size
    ny, nx = torch.floor(child.y + 0.5), torch.floor(child.x + 0.5)
    return child.select((ny >= 0) & (ny < h) & (nx >= 0) & (nx < w))


def _step_bilinear(
    f: Frontier, index: Tensor, layer: LayerCapture, field: Tensor, mask: Tensor | None, grid: Tensor
) -> Frontier:
    """Interpolate the offsets at the fractional position; keep every child, flagging those that
    read only zero padding (and, through ``inside``, all their descendants)."""
    vals, _ = read_bilinear(_with_mask(field, mask), f.y, f.x)
    off, m = _split_mask(vals, field, mask)
    child = _expand(f, index, layer, off, m, grid, (f.y, f.x))
    h, w = layer.in_size
    child.inside = child.inside & (child.y > -1) & (child.y < h) & (child.x > -1) & (child.x < w)
    return child


def _step_exact(
    f: Frontier, index: Tensor, layer: LayerCapture, field: Tensor, mask: Tensor | None, grid: Tensor
) -> Frontier:
    """Points are integer units: read exactly there; each child splits into its 4 bilinear
    neighbour units with their weights, and coincident units of one top unit merge."""
    iy, ix = f.y.long(), f.x.long()
    off = field[:, iy, ix].T
    m = mask[:, iy, ix].T if mask is not None else None
    child = _expand(f, index, layer, off, m, grid, (iy, ix))
    h, w = layer.in_size
    ny, nx, nw = bilinear_neighbours(child.y, child.x, (h, w))  # (P*K, 4)
    weights = (child.weight.unsqueeze(1) * nw).flatten()
    keys = (child.unit.unsqueeze(1) * (h * w) + ny * w + nx).flatten()
    parents = child.parent.unsqueeze(1).expand(-1, 4).flatten()
    keep = weights != 0
    ukeys, uw, upar = merge_coincident(keys[keep], weights[keep], parents[keep])
    dtype = f.y.dtype
    return Frontier(
        y=((ukeys % (h * w)) // w).to(dtype),
        x=(ukeys % w).to(dtype),
        weight=uw,
        unit=ukeys // (h * w),
        parent=upar,
        tap=torch.full_like(ukeys, -1),
        inside=torch.ones_like(ukeys, dtype=torch.bool),
    )


STEPS = {NEAREST: _step_nearest, BILINEAR: _step_bilinear, EXACT: _step_exact}


def backproject_layers(
    layers: list[LayerCapture],
    unit: tuple[int, int] | Tensor | str,
    levels: int | None = None,
    method: str = BILINEAR,
    image: int = 0,
    group: int | None = None,
) -> Points:
    """:func:`backproject` on a list of layer captures, bottom to top (see there)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    step = STEPS[method]
    n_layers = len(layers)
    levels = n_layers if levels is None else int(levels)
    if not 1 <= levels <= n_layers:
        raise ValueError(f"levels must be between 1 and {n_layers}, got {levels}")
    top = layers[-1]
    units = _as_units(unit, top.out_size)
    b = units.shape[0]
    dtype = top.offsets_yx.dtype
    uy_pix, ux_pix = to_pixels(units[:, 0].to(dtype), units[:, 1].to(dtype), top.out_pixel_stride, top.out_pixel_offset)
    # The frontier: positions on the output map of the layer about to be read (level 0: the units).
    frontier = Frontier(
        y=units[:, 0].to(dtype),
        x=units[:, 1].to(dtype),
        weight=torch.ones(b, dtype=dtype),
        unit=torch.arange(b),
        parent=torch.full((b,), -1, dtype=torch.long),
        tap=torch.full((b,), -1, dtype=torch.long),
        inside=torch.ones(b, dtype=torch.bool),
    )
    index = torch.full((b,), -1, dtype=torch.long)  # global index of each frontier point
    parts: dict[str, list[Tensor]] = {
        k: [] for k in ("x", "y", "weight", "level", "parent", "unit", "tap", "group", "inside")
    }
    fanout: list[int] = []
    total = 0
    for depth in range(1, levels + 1):
        layer = layers[n_layers - depth]
        field, mask, grid = _fields(layer, image, group if depth == 1 else None)
        fanout.append(grid.shape[0])
        frontier = step(frontier, index, layer, field, mask, grid)
        # sample index q = g * P + p of the groups followed (one group at the top: g is that one)
        p_count = layer.taps
        first_group = group if (depth == 1 and group is not None) else 0
        exact = frontier.tap < 0
        sample_group = torch.where(exact, -1, frontier.tap // p_count + first_group)
        sample_point = torch.where(exact, -1, frontier.tap % p_count)
        py, px = to_pixels(frontier.y, frontier.x, layer.pixel_stride, layer.pixel_offset)
        count = frontier.y.shape[0]
        for key, value in (
            ("x", px),
            ("y", py),
            ("weight", frontier.weight),
            ("level", torch.full((count,), depth, dtype=torch.long)),
            ("parent", frontier.parent),
            ("unit", frontier.unit),
            ("tap", sample_point),
            ("group", sample_group),
            ("inside", frontier.inside),
        ):
            parts[key].append(value)
        index = torch.arange(total, total + count)
        total += count
    cat = {key: torch.cat(vals) for key, vals in parts.items()}
    return Points(
        **cat,
        units_yx=units,
        units_xy=torch.stack([ux_pix, uy_pix], dim=1),
        method=method,
        levels=levels,
        taps=fanout[0],
        fanout=tuple(fanout),
    )


def sampling_matrix(layer: LayerCapture, image: int = 0) -> Tensor:
    """The layer as a sparse matrix ``(Ho*Wo, H*W)``: row ``o`` holds, for every sample of output
    unit ``o`` (all groups and points), its bilinear weights on the input units times the
    sample's weight (zero outside the map, as in the operator). ``exact`` back-projection is
    the product of these matrices (:func:`exact_weight_maps`)."""
    off = layer.offsets_yx[image if layer.offsets_yx.shape[0] > 1 else 0]  # (G, P, 2, Ho, Wo)
    g, p, _, ho, wo = off.shape
    h, w = layer.in_size
    grid = layer.grid_yx(off.dtype)
    rows = torch.arange(ho, dtype=off.dtype).view(1, 1, ho, 1) * layer.stride[0]
    cols = torch.arange(wo, dtype=off.dtype).view(1, 1, 1, wo) * layer.stride[1]
    y = (rows + grid[:, 0].view(1, p, 1, 1) + off[:, :, 0]).flatten()
    x = (cols + grid[:, 1].view(1, p, 1, 1) + off[:, :, 1]).flatten()
    weight = layer.mask[image].flatten() if layer.mask is not None else torch.ones_like(y)
    uy, ux, nw = bilinear_neighbours(y, x, (h, w))  # (G*P*Ho*Wo, 4)
    out_unit = torch.arange(ho * wo).repeat(g * p).unsqueeze(1).expand(-1, 4)
    values = (nw * weight.unsqueeze(1)).flatten()
    index = torch.stack([out_unit.flatten(), (uy * w + ux).flatten()])
    return torch.sparse_coo_tensor(index, values, (ho * wo, h * w), check_invariants=True).coalesce()


def exact_weight_maps(
    cap: Capture, units: Tensor, levels: int | None = None, image: int = 0
) -> tuple[Tensor, LayerCapture]:
    """Every top unit's ``exact`` weights at level ``levels`` as dense maps: ``(U, H, W)`` over
    the input map of the layer ``levels`` down (returned with it). The same weights as
    ``backproject(..., method="exact")``'s last level, computed as a product of sparse matrices
    instead of merging points: fast for grouped layers, whose ``(G P)^L`` samples per unit
    merge onto a few hundred units."""
    layers = cap.layers
    levels = len(layers) if levels is None else levels
    top = layers[-1]
    units = torch.as_tensor(units, dtype=torch.long).view(-1, 2)
    ho, wo = top.out_size
    maps = torch.zeros(units.shape[0], ho * wo, dtype=top.offsets_yx.dtype)
    maps[torch.arange(units.shape[0]), units[:, 0] * wo + units[:, 1]] = 1.0
    layer = top
    for depth in range(1, levels + 1):
        layer = layers[len(layers) - depth]
        maps = torch.sparse.mm(sampling_matrix(layer, image).t(), maps.t()).t()
    h, w = layer.in_size
    return maps.view(-1, h, w), layer


#: The most samples one unit's points hold where no level is asked for: a deep model's deeper
#: levels (9^6 = 531,441 and more) are neither drawable nor fast; 9^5 = 59,049 and a 4-group
#: stack's 36^3 = 46,656 fit.
POINT_BUDGET = 60_000


def deepest_level(cap: Capture, group: int | None = None, budget: int = POINT_BUDGET) -> int:
    """The most levels (counted from the top layer) whose samples per unit stay within ``budget``;
    at least 1. All of a model's layers for any stack of 3 layers of 9 points, or 4 groups."""
    level = 1
    while level < len(cap.layers) and path_count(cap, level + 1, group) <= budget:
        level += 1
    return level


def path_count(cap: Capture, levels: int | None = None, group: int | None = None) -> int:
    """How many sample paths reach ``levels`` from one top unit, without back-projecting:
    ``9^L`` for a one-group 3x3 stack, ``(G P)^L`` with groups (``P (G P)^(L-1)`` for one group
    at the top). Equals :meth:`Points.paths`."""
    layers = cap.layers[::-1][: levels or len(cap.layers)]
    total = 1
    for depth, lc in enumerate(layers):
        total *= lc.taps * (1 if depth == 0 and group is not None else lc.offsets_yx.shape[1])
    return total


def backproject(
    cap: Capture,
    unit: tuple[int, int] | Tensor | str,
    levels: int | None = None,
    method: str = BILINEAR,
    image: int = 0,
    group: int | None = None,
) -> Points:
    """Back-project top-layer unit(s) through the stacked layers to image pixels.

    Args:
        cap: from :func:`viz.capture`.
        unit: ``(row, col)`` on the top layer's output map, a ``(B, 2)`` tensor of them, or
            ``"all"``; all units are processed together, vectorised.
        levels: how many layers to descend (1..L); default all L, giving 9^L points per unit,
            or as many as keep the points within :data:`POINT_BUDGET` on a deeper model
            for a one-group 3x3 stack (``(G P)^L`` with groups).
        method: ``"nearest"``, ``"bilinear"`` or ``"exact"`` (see the module docstring).
        image: which image of the captured batch.
        group: keep only this group of the top layer (the layers below follow every group);
            None (default): every group. DCNv1/v2 models have one.

    Returns:
        :class:`Points` for all levels 1..levels.
    """
    if not 0 <= image < cap.images.shape[0]:
        raise ValueError(f"image {image} not in the captured batch of {cap.images.shape[0]}")
    if levels is None:
        levels = deepest_level(cap, group)
    return backproject_layers(cap.layers, unit, levels, method, image, group)


def regular_grid(
    layers: list[LayerCapture] | Capture,
    unit: tuple[int, int] | Tensor | str,
    levels: int | None = None,
    method: str = BILINEAR,
) -> Points:
    """The same back-projection with every offset set to zero and no mask: the fixed dilated
    grid of a regular conv with the same geometry, for comparison."""
    src = layers.layers if isinstance(layers, Capture) else layers
    zeroed = [
        replace(lc, offsets_yx=torch.zeros_like(lc.offsets_yx[:1, :1]), mask=None, deformable=False, modulated=False)
        for lc in src
    ]
    return backproject_layers(zeroed, unit, levels=levels, method=method)


#: Above this many samples (every unit of the top layer at the drawn level), :func:`sample_box`
#: bounds the samples instead of back-projecting them all.
BOX_SAMPLES = 400_000


def sample_box(
    cap: Capture, levels: int | None = None, method: str = BILINEAR, group: int | None = None
) -> tuple[float, float, float, float]:
    """``(x_min, x_max, y_min, y_max)`` in image pixels holding the level-``levels`` samples of
    **every** top-layer unit: one frame for all units of an image, so that choosing another
    unit moves the points, not the picture.

    Exact (every unit back-projected) up to :data:`BOX_SAMPLES` samples. Above (a grouped model:
    ``(G P)^3`` samples a unit), every unit is back-projected one level less and the last
    level is bounded: a parent's children lie at its position on the layer's output map times
    the stride plus a displacement (grid + offset) read between its (up to) four neighbouring
    units, which stays within those neighbours' smallest and largest displacement (zero offset
    outside the map). Deeper still: the same bound level by level over the whole map.
    """
    levels = levels or len(cap.layers)
    n_units = cap.top.out_size[0] * cap.top.out_size[1]
    if n_units * path_count(cap, levels, group) <= BOX_SAMPLES:
        pts = backproject(cap, "all", levels=levels, method=method, group=group)
        final = pts.where(level=levels)
        return _box(pts.x[final], pts.y[final])
    lc = cap.layers[len(cap.layers) - levels]  # the layer the last level reads
    if levels > 1 and n_units * path_count(cap, levels - 1, group) <= BOX_SAMPLES:
        pts = backproject(cap, "all", levels=levels - 1, method=method, group=group)
        final = pts.where(level=levels - 1)
        (sy, sx), (oy, ox) = lc.out_pixel_stride, lc.out_pixel_offset
        y, x = (pts.y[final].double() - oy) / sy, (pts.x[final].double() - ox) / sx  # on its output map
        lo, hi = _children_range(lc, y, x)
    else:
        lo, hi = _map_range(cap, levels, method, group)
    if method == "exact":  # the 4 neighbours of a fractional sample
        lo, hi = torch.floor(lo), torch.ceil(hi)
    (sy, sx), (oy, ox) = lc.pixel_stride, lc.pixel_offset
    return float(sx * lo[1] + ox), float(sx * hi[1] + ox), float(sy * lo[0] + oy), float(sy * hi[0] + oy)


def _box(xs: Tensor, ys: Tensor) -> tuple[float, float, float, float]:
    return float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())


def _displacements(lc: LayerCapture, group: int | None = None) -> tuple[Tensor, Tensor]:
    """Per unit of the layer's output map, the smallest and largest displacement (grid + offset)
    of its samples, ``(2, Ho, Wo)`` each (y, x)."""
    grid = lc.grid_yx(torch.float64)  # (P, 2)
    offsets = lc.offsets_yx[0].to(torch.float64)  # (G, P, 2, Ho, Wo)
    if group is not None:
        offsets = offsets[group : group + 1]
    shift = grid.view(1, -1, 2, 1, 1) + offsets
    return shift.amin(dim=(0, 1)), shift.amax(dim=(0, 1))


def _children_range(lc: LayerCapture, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(lo, hi)`` (y, x) on the layer's input map of the samples that parents at ``(y, x)`` on
    its output map read: base position times stride plus the neighbours' displacement range."""
    d_lo, d_hi = _displacements(lc)
    ho, wo = lc.out_size
    grid = lc.grid_yx(torch.float64)
    lo = torch.full((2,), float("inf"), dtype=torch.float64)
    hi = torch.full((2,), float("-inf"), dtype=torch.float64)
    stride = torch.tensor(lc.stride, dtype=torch.float64)
    for ny in (torch.floor(y), torch.ceil(y)):
        for nx in (torch.floor(x), torch.ceil(x)):
            inside = (ny >= 0) & (ny <= ho - 1) & (nx >= 0) & (nx <= wo - 1)
            iy, ix = ny.clamp(0, ho - 1).long(), nx.clamp(0, wo - 1).long()
            # outside the map an offset reads as zero: the bare grid
            n_lo = torch.where(inside.unsqueeze(1), d_lo[:, iy, ix].T, grid.amin(0).expand(len(y), 2))
            n_hi = torch.where(inside.unsqueeze(1), d_hi[:, iy, ix].T, grid.amax(0).expand(len(y), 2))
            base = torch.stack([torch.minimum(y, ny), torch.minimum(x, nx)], 1) * stride
            top = torch.stack([torch.maximum(y, ny), torch.maximum(x, nx)], 1) * stride
            lo = torch.minimum(lo, (base + n_lo).amin(0))
            hi = torch.maximum(hi, (top + n_hi).amax(0))
    return lo, hi


def _map_range(cap: Capture, levels: int, method: str, group: int | None) -> tuple[Tensor, Tensor]:
    """The loose bound, level by level over each layer's whole map."""
    ho, wo = cap.top.out_size
    lo = torch.tensor([0.0, 0.0], dtype=torch.float64)  # (y, x) on the current layer's output map
    hi = torch.tensor([ho - 1.0, wo - 1.0], dtype=torch.float64)
    for depth in range(1, levels + 1):
        lc = cap.layers[len(cap.layers) - depth]
        lo, hi = lo - 0.5 * (method == "nearest"), hi + 0.5 * (method == "nearest")  # a parent reads its nearest unit
        d_lo, d_hi = _displacements(lc, group if depth == 1 else None)
        grid = lc.grid_yx(torch.float64)
        d_lo = torch.minimum(d_lo.flatten(1).amin(1), grid.amin(0))  # zero offsets outside the map
        d_hi = torch.maximum(d_hi.flatten(1).amax(1), grid.amax(0))
        stride = torch.tensor(lc.stride, dtype=torch.float64)
        lo, hi = lo * stride + d_lo, hi * stride + d_hi
        if method == "exact" and depth < levels:
            lo, hi = torch.floor(lo), torch.ceil(hi)
    return lo, hi
