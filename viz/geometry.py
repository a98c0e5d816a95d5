"""Pure geometry of sampling points: tensors in, tensors out; no modules, no plotting.

Coordinate convention, used everywhere in ``viz``: ``x`` is the column, ``y`` is the row, and
pixel (or feature-map unit) centres sit at integer coordinates, so pixel ``(y, x) = (0, 0)``
covers ``[-0.5, 0.5]^2``. Pairs are written ``(y, x)`` when they index a tensor (``_yx``
names) and ``(x, y)`` when they are plotted (``_xy`` names).
"""

from __future__ import annotations

import torch
from torch import Tensor

NEAREST, BILINEAR, EXACT = "nearest", "bilinear", "exact"
METHODS = (NEAREST, BILINEAR, EXACT)


def read_nearest(field: Tensor, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Read ``field`` ``(C, H, W)`` at the units nearest to positions ``(P,)``.

    Rounds half up (``floor(v + 0.5)``). Returns ``(values (P, C), unit_y, unit_x, inside)``;
    values are zero where the nearest unit is off the map (``inside`` False).
    """
    _, h, w = field.shape
    uy, ux = torch.floor(y + 0.5).long(), torch.floor(x + 0.5).long()
    inside = (uy >= 0) & (uy < h) & (ux >= 0) & (ux < w)
    vals = field[:, uy.clamp(0, h - 1), ux.clamp(0, w - 1)].T
    return vals * inside.unsqueeze(1).to(vals.dtype), uy, ux, inside


def bilinear_neighbours(y: Tensor, x: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """The 4 neighbour units of positions ``(P,)`` and their bilinear weights.

    Returns ``(unit_y (P, 4), unit_x (P, 4), weight (P, 4))``. Neighbours off the map get
    weight 0 (zero padding, as in the deformable operator); their indices are clamped.
    """
    h, w = size
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    uy = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=1).long()
    ux = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=1).long()
    wt = torch.stack([(1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx], dim=1)
    inside = (uy >= 0) & (uy < h) & (ux >= 0) & (ux < w)
    return uy.clamp(0, h - 1), ux.clamp(0, w - 1), wt * inside.to(wt.dtype)


def read_bilinear(field: Tensor, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinearly interpolate ``field`` ``(C, H, W)`` at fractional positions ``(P,)``.

    Zero outside the map, exactly like the deformable operator reads its input. Returns
    ``(values (P, C), inside (P,))`` where ``inside`` is False for positions with no neighbour
    on the map (the operator reads an exact zero there).
    """
    _, h, w = field.shape
    uy, ux, wt = bilinear_neighbours(y, x, (h, w))
    vals = (field[:, uy, ux] * wt.unsqueeze(0)).sum(dim=2).T  # (P, C)
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    return vals, inside


def children(
    unit_y: Tensor,
    unit_x: Tensor,
    offsets_yx: Tensor,
    grid_yx: Tensor,
    stride: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Sampling positions ``p = p0 + p_n + dp_n`` of output positions ``(Q,)`` of a layer.

    Args:
        unit_y, unit_x: ``(Q,)`` output-map positions (integer units, or fractional ones when
            the offsets were interpolated there).
        offsets_yx: ``(Q, P, 2)`` offsets read at those positions (``[..., 0]`` = rows).
        grid_yx: ``(P, 2)`` the regular grid's displacement of each point from ``unit * stride``
            (``models.contract.LayerGeometry.grid_yx``: a conv's taps minus its padding).

    Returns:
        ``(y, x)``, each ``(Q, P)``, in the layer's input-map coordinates.
    """
    grid = grid_yx.to(offsets_yx.dtype)
    y0 = unit_y.to(offsets_yx.dtype) * stride[0]
    x0 = unit_x.to(offsets_yx.dtype) * stride[1]
    return (
        y0.unsqueeze(1) + grid[:, 0] + offsets_yx[..., 0],
        x0.unsqueeze(1) + grid[:, 1] + offsets_yx[..., 1],
    )


def to_pixels(
    y: Tensor, x: Tensor, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """Feature-map coordinates -> image pixel coordinates ``(y, x)``."""
    return y * pixel_stride[0] + pixel_offset[0], x * pixel_stride[1] + pixel_offset[1]


def merge_coincident(keys: Tensor, weights: Tensor, parents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Merge entries with equal integer ``keys``: weights add up; the parent kept is the one
    that contributes the most weight (ties: the lowest parent index).

    Returns ``(unique_keys (M,), summed_weights (M,), parent (M,))``, keys ascending.
    """
    uniq, inv = torch.unique(keys, return_inverse=True)
    m = uniq.shape[0]
    summed = torch.zeros(m, dtype=weights.dtype).index_add_(0, inv, weights)
    best = torch.full((m,), -torch.inf, dtype=weights.dtype).scatter_reduce(0, inv, weights, "amax")
    is_best = weights == best[inv]
    big = torch.iinfo(torch.long).max
    cand = torch.where(is_best, parents, torch.full_like(parents, big))
    parent = torch.full((m,), big, dtype=torch.long).scatter_reduce(0, inv, cand, "amin")
    return uniq, summed, parent


def adjacent_pair_distance(
    y: Tensor, x: Tensor, kernel_size: tuple[int, int], pixel_stride: tuple[float, float] = (1.0, 1.0)
) -> Tensor:
    """The paper's effective dilation: mean distance between the sampling locations of
    horizontally and vertically adjacent taps of a filter.

    Args:
        y, x: ``(..., K)`` sampling positions of filters (tap order ``k = i * kw + j``).
        pixel_stride: scales rows and columns to pixels.

    Returns:
        ``(...)`` mean adjacent-pair distance, in pixels when ``pixel_stride`` is given.
    """
    kh, kw = kernel_size
    gy = (y * pixel_stride[0]).unflatten(-1, (kh, kw))
    gx = (x * pixel_stride[1]).unflatten(-1, (kh, kw))
    horiz = torch.hypot(gy[..., :, 1:] - gy[..., :, :-1], gx[..., :, 1:] - gx[..., :, :-1]).flatten(-2)
    vert = torch.hypot(gy[..., 1:, :] - gy[..., :-1, :], gx[..., 1:, :] - gx[..., :-1, :]).flatten(-2)
    return torch.cat([horiz, vert], dim=-1).mean(dim=-1)


def splat(y: Tensor, x: Tensor, weights: Tensor, size: tuple[int, int]) -> Tensor:
    """Accumulate weighted points ``(P,)`` onto an ``(H, W)`` grid with bilinear splatting
    (the mass of each point is shared by its 4 neighbour cells; mass off the grid is lost)."""
    uy, ux, wt = bilinear_neighbours(y, x, size)
    out = torch.zeros(size[0] * size[1], dtype=weights.dtype)
    out.index_add_(0, (uy * size[1] + ux).flatten(), (wt * weights.unsqueeze(1)).flatten())
    return out.view(size)
