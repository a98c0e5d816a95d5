"""Back-projection: where a top-layer unit's 9^L samples fall in the image.

Level 1 holds the 9 samples of the top layer at the chosen unit, on the top layer's input
map. Each of them is a position on the output map of the layer below, where that layer's
offsets are read to give 9 samples of its own (level 2), and so on down to level L, whose
points lie on the bottom layer's input map; every level is finally mapped to image pixels.

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
    bilinear weights times masks: the true weighted set of input positions the unit depends on
    (with unit kernel weights it equals the gradient of the unit with respect to the input
    map). Up to 36^level points. ``parent`` is the heaviest contributing parent.
"""

from __future__ import annotations

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
        tap: ``(P,)`` kernel tap ``k = i * kw + j`` of the sample within its parent's filter
            (-1 for ``exact`` points, which merge several taps).
        inside: ``(P,)`` False for bilinear samples that read only zero padding (or descend
            from one); True otherwise.
        units_yx: ``(B, 2)`` the top-layer output units (row, column).
        units_xy: ``(B, 2)`` their positions in image pixels (x, y).
        method, levels: how and how deep the points were computed.
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
    taps: int = 9  # samples per filter: every level multiplies the paths by this

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


def _fields(layer: LayerCapture, image: int, group: int) -> tuple[Tensor, Tensor | None]:
    """Offset field ``(2K, Ho, Wo)`` (channel 2k = dy of tap k) and mask field ``(K, Ho, Wo)``."""
    off = layer.offsets_yx[image, group]  # (K, 2, Ho, Wo)
    k, _, ho, wo = off.shape
    mask = layer.mask[image, group] if layer.mask is not None else None
    return off.reshape(2 * k, ho, wo), mask


def backproject(
    cap: Capture,
    unit: tuple[int, int] | Tensor | str,
    levels: int | None = None,
    method: str = BILINEAR,
    image: int = 0,
    group: int = 0,
) -> Points:
    """Back-project top-layer unit(s) through the stacked layers to image pixels.

    Args:
        cap: from :func:`viz.capture`.
        unit: ``(row, col)`` on the top layer's output map, a ``(B, 2)`` tensor of them, or
            ``"all"``; all units are processed together, vectorised.
        levels: how many layers to descend (1..L); default all L, giving 9^L points per unit.
        method: ``"nearest"``, ``"bilinear"`` or ``"exact"`` (see the module docstring).
        image: which image of the captured batch.
        group: which offset group (the shipped models have one).

    Returns:
        :class:`Points` for all levels 1..levels.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    n_layers = len(cap.layers)
    levels = n_layers if levels is None else int(levels)
    if not 1 <= levels <= n_layers:
        raise ValueError(f"levels must be between 1 and {n_layers}, got {levels}")
    if not 0 <= image < cap.images.shape[0]:
        raise ValueError(f"image {image} not in the captured batch of {cap.images.shape[0]}")
    top = cap.layers[-1]
    units = _as_units(unit, top.out_size)
    b = units.shape[0]
    dtype = top.offsets_yx.dtype
    uy_pix, ux_pix = to_pixels(units[:, 0].to(dtype), units[:, 1].to(dtype), top.out_pixel_stride, top.out_pixel_offset)

    # The current frontier: positions on the output map of the layer about to be read.
    cur_y, cur_x = units[:, 0].to(dtype), units[:, 1].to(dtype)
    cur_w = torch.ones(b, dtype=dtype)
    cur_unit = torch.arange(b)
    cur_inside = torch.ones(b, dtype=torch.bool)
    cur_index = torch.full((b,), -1, dtype=torch.long)  # global index of each frontier point
    parts: dict[str, list[Tensor]] = {k: [] for k in ("x", "y", "weight", "level", "parent", "unit", "tap", "inside")}
    total = 0

    for depth in range(1, levels + 1):
        layer = cap.layers[n_layers - depth]
        field, mask = _fields(layer, image, group)
        k = layer.taps
        geom = (layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        if method == NEAREST:
            off, ry, rx, ok = read_nearest(field, cur_y, cur_x)
            # Points whose nearest unit is off the map are dropped (never kept at all, see below).
            base_y, base_x = ry, rx
            m = read_nearest(mask, cur_y, cur_x)[0] if mask is not None else None
            parent_ok = ok
        elif method == BILINEAR:
            off, _ = read_bilinear(field, cur_y, cur_x)
            base_y, base_x = cur_y, cur_x
            m = read_bilinear(mask, cur_y, cur_x)[0] if mask is not None else None
            parent_ok = torch.ones_like(cur_inside)
        else:  # EXACT: frontier points are integer units; read exactly there.
            iy, ix = cur_y.long(), cur_x.long()
            off = field[:, iy, ix].T
            base_y, base_x = iy, ix
            m = mask[:, iy, ix].T if mask is not None else None
            parent_ok = torch.ones_like(cur_inside)
        cy, cx = children(base_y, base_x, off.view(-1, k, 2), *geom)  # (P, K) on the input map
        cw = cur_w.unsqueeze(1) * (m if m is not None else 1.0)
        cw = cw.expand(-1, k)
        c_unit = cur_unit.unsqueeze(1).expand(-1, k)
        c_parent = cur_index.unsqueeze(1).expand(-1, k)
        c_tap = torch.arange(k).unsqueeze(0).expand(cur_y.shape[0], -1)
        h, w = layer.in_size

        if method == EXACT:
            ny, nx, nw = bilinear_neighbours(cy.flatten(), cx.flatten(), (h, w))  # (P*K, 4)
            weights = (cw.flatten().unsqueeze(1) * nw).flatten()
            keys = (c_unit.flatten().unsqueeze(1) * (h * w) + ny * w + nx).flatten()
            parents = c_parent.flatten().unsqueeze(1).expand(-1, 4).flatten()
            keep = weights != 0
            ukeys, uw, upar = merge_coincident(keys[keep], weights[keep], parents[keep])
            new_unit = ukeys // (h * w)
            new_y = ((ukeys % (h * w)) // w).to(dtype)
            new_x = (ukeys % w).to(dtype)
            new_w, new_parent = uw, upar
            new_tap = torch.full_like(new_unit, -1)
            new_inside = torch.ones_like(new_unit, dtype=torch.bool)
        else:
            keep_parent = parent_ok.unsqueeze(1).expand(-1, k).flatten()
            new_y, new_x = cy.flatten()[keep_parent], cx.flatten()[keep_parent]
            new_w = cw.flatten()[keep_parent]
            new_unit = c_unit.flatten()[keep_parent]
            new_parent = c_parent.flatten()[keep_parent]
            new_tap = c_tap.flatten()[keep_parent]
            on_map = (new_y > -1) & (new_y < h) & (new_x > -1) & (new_x < w)
            if method == NEAREST:
                ry2, rx2 = torch.floor(new_y + 0.5), torch.floor(new_x + 0.5)
                near_ok = (ry2 >= 0) & (ry2 < h) & (rx2 >= 0) & (rx2 < w)
                sel = near_ok
                new_y, new_x, new_w = new_y[sel], new_x[sel], new_w[sel]
                new_unit, new_parent, new_tap = new_unit[sel], new_parent[sel], new_tap[sel]
                new_inside = torch.ones_like(new_unit, dtype=torch.bool)
            else:
                parent_inside = cur_inside.unsqueeze(1).expand(-1, k).flatten()
                new_inside = on_map & parent_inside

        py, px = to_pixels(new_y, new_x, layer.pixel_stride, layer.pixel_offset)
        count = new_y.shape[0]
        parts["x"].append(px)
        parts["y"].append(py)
        parts["weight"].append(new_w)
        parts["level"].append(torch.full((count,), depth, dtype=torch.long))
        parts["parent"].append(new_parent)
        parts["unit"].append(new_unit)
        parts["tap"].append(new_tap)
        parts["inside"].append(new_inside)
        cur_y, cur_x, cur_w, cur_unit, cur_inside = new_y, new_x, new_w, new_unit, new_inside
        cur_index = torch.arange(total, total + count)
        total += count

    cat = {key: torch.cat(vals) for key, vals in parts.items()}
    return Points(
        **cat,
        units_yx=units,
        units_xy=torch.stack([ux_pix, uy_pix], dim=1),
        method=method,
        levels=levels,
        taps=top.taps,
    )


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
        replace(
            lc,
            offsets_yx=torch.zeros_like(lc.offsets_yx[:1, :1]),
            mask=None,
            deformable=False,
            modulated=False,
            inputs=None,
            outputs=None,
        )
        for lc in src
    ]
    dummy = Capture(images=torch.zeros(1, 1, 1, 1), logits=torch.zeros(1, 1), layers=zeroed)
    return backproject(dummy, unit, levels=levels, method=method, image=0)
