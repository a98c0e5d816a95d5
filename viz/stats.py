"""Whole-map views: where all units sample (density) and how far apart a filter's samples are
(the paper's effective dilation), per unit, on the digit and on the background."""

from __future__ import annotations

import torch
from torch import Tensor

from models.geometry import sampling_positions
from viz.backproject import backproject
from viz.capture import Capture
from viz.geometry import BILINEAR, adjacent_pair_distance, splat, to_pixels


def _layer(cap: Capture, layer: int):
    try:
        return cap.layers[layer]
    except IndexError:
        raise ValueError(f"layer {layer} out of range: the model has {len(cap.layers)} sampling layers") from None


def unit_pixels(cap: Capture, layer: int = -1) -> tuple[Tensor, Tensor]:
    """Pixel positions ``(y, x)``, each ``(Ho, Wo)``, of a layer's output units."""
    lc = _layer(cap, layer)
    ho, wo = lc.out_size
    yy, xx = torch.meshgrid(torch.arange(ho, dtype=torch.float32), torch.arange(wo, dtype=torch.float32), indexing="ij")
    return to_pixels(yy, xx, lc.out_pixel_stride, lc.out_pixel_offset)


def on_digit_units(cap: Capture, image: int = 0, layer: int = -1, threshold: float = 0.3) -> Tensor:
    """Boolean ``(Ho, Wo)``: output units whose centre pixel has ink above ``threshold``.

    The image intensity (first channel, [0, 1], white digit on black) is read bilinearly at
    each unit's pixel position.
    """
    y, x = unit_pixels(cap, layer)
    img = cap.images[image, :1]
    from viz.geometry import read_bilinear

    vals, _ = read_bilinear(img, y.flatten(), x.flatten())
    return (vals[:, 0] > threshold).view(y.shape)


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


def layer_points(cap: Capture, layer: int = -1, image: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Single layer: the sampling locations ``p = p0 + p_n + dp_n`` of every output unit.

    Returns:
        ``(y, x, weight)``, each ``(G, K, Ho, Wo)``, in the layer's *input-map* coordinates
        (row, column; unit centres at integers); ``weight`` is the sample's weight (DCNv2's mask,
        DCNv3/DCNv4's weights; 1 for DCNv1 and regular convs). Tap ``k = i * kw + j`` for a
        torchvision-style layer; the family's own point order otherwise.
    """
    lc = _layer(cap, layer)
    y, x = _positions(lc, image)
    weight = lc.mask[image] if lc.mask is not None else torch.ones_like(y)
    return y, x, weight


def _positions(lc, image: int) -> tuple[Tensor, Tensor]:
    """``(G, P, Ho, Wo)`` rows and columns of every sample of one image: the record's formula."""
    off = lc.offsets_yx[image]  # (G, P, 2, Ho, Wo)
    g, k, _, ho, wo = off.shape
    if lc.grid is None:  # a conv's taps: the operator's own formula, written once in models.geometry
        y, x = sampling_positions(off.reshape(1, g * 2 * k, ho, wo), lc.kernel_size, lc.stride, lc.padding, lc.dilation)
        return y[0], x[0]
    grid = lc.grid_yx(off.dtype)
    rows = torch.arange(ho, dtype=off.dtype).view(1, 1, ho, 1) * lc.stride[0]
    cols = torch.arange(wo, dtype=off.dtype).view(1, 1, 1, wo) * lc.stride[1]
    return rows + grid[:, 0].view(1, k, 1, 1) + off[:, :, 0], cols + grid[:, 1].view(1, k, 1, 1) + off[:, :, 1]


def adjacent_points(grid_yx: Tensor) -> Tensor:
    """``(A, 2)`` index pairs of a regular grid's horizontally or vertically adjacent points (one
    grid step apart along one axis, same position along the other), whatever their numbering:
    12 pairs for a 3x3 kernel, 8 when its centre is removed."""
    pairs = []
    for axis in (0, 1):
        other = 1 - axis
        vals = torch.unique(grid_yx[:, axis])
        step = float((vals[1:] - vals[:-1]).min()) if vals.numel() > 1 else 0.0
        for a in range(grid_yx.shape[0]):
            for b in range(grid_yx.shape[0]):
                same = bool(grid_yx[a, other] == grid_yx[b, other])
                if same and step > 0 and abs(float(grid_yx[b, axis] - grid_yx[a, axis]) - step) < 1e-9:
                    pairs.append((a, b))
    return torch.tensor(pairs, dtype=torch.long).view(-1, 2)


def effective_dilation(cap: Capture, layer: int = -1, image: int = 0, group: int | None = None) -> Tensor:
    """The paper's effective dilation of every output unit of a layer, in image pixels.

    The mean distance between the sampling locations of horizontally and vertically adjacent
    taps of the unit's filter (12 pairs for 3x3; DCNv3/DCNv4's points are paired by their place
    on the regular grid). A regular conv gives ``dilation * pixel_stride`` everywhere (2 px for
    the shipped models). ``group``: one group's filter; None (default): the mean over groups.

    Returns:
        ``(Ho, Wo)``.
    """
    lc = _layer(cap, layer)
    if lc.grid is not None or (group is None and lc.groups > 1):
        y, x = _positions(lc, image)  # (G, P, Ho, Wo)
        if group is not None:
            y, x = y[group : group + 1], x[group : group + 1]
        pairs = adjacent_points(lc.grid_yx(torch.float64))
        (sy, sx) = lc.pixel_stride
        dy = (y[:, pairs[:, 1]] - y[:, pairs[:, 0]]) * sy
        dx = (x[:, pairs[:, 1]] - x[:, pairs[:, 0]]) * sx
        return torch.hypot(dy, dx).mean(dim=1).mean(dim=0)
    group = group or 0
    off = lc.offsets_yx[image : image + 1, group : group + 1]  # (1, 1, K, 2, Ho, Wo)
    k, ho, wo = lc.taps, *lc.out_size
    y, x = sampling_positions(off.reshape(1, 2 * k, ho, wo), lc.kernel_size, lc.stride, lc.padding, lc.dilation)
    y, x = y[0, 0].permute(1, 2, 0), x[0, 0].permute(1, 2, 0)  # (Ho, Wo, K)
    return adjacent_pair_distance(y, x, lc.kernel_size, lc.pixel_stride)


def dilation_summary(cap: Capture, image: int = 0, layer: int = -1, threshold: float = 0.3) -> dict[str, float]:
    """Mean effective dilation over units on the digit, on the background, and all units."""
    d = effective_dilation(cap, layer, image)
    on = on_digit_units(cap, image, layer, threshold)
    nan = float("nan")
    return {
        "digit": float(d[on].mean()) if on.any() else nan,
        "background": float(d[~on].mean()) if (~on).any() else nan,
        "all": float(d.mean()),
    }


def sampling_density(
    cap: Capture,
    image: int = 0,
    units: str | Tensor = "all",
    method: str = BILINEAR,
    levels: int | None = None,
    threshold: float = 0.3,
) -> Tensor:
    """How often each image pixel is sampled by the chosen top-layer units' back-projected
    points (weights summed, bilinearly splatted onto pixel centres).

    Args:
        units: ``"all"``, ``"digit"`` (units on ink above ``threshold``), a boolean ``(Ho, Wo)``
            mask over the top map, or a ``(B, 2)`` tensor of units.

    Returns:
        ``(H, W)`` over the input image; points that read only zero padding are left out.
    """
    top = cap.layers[-1]
    if isinstance(units, str) and units == "digit":
        units = on_digit_units(cap, image, -1, threshold)
    if isinstance(units, Tensor) and units.dtype == torch.bool:
        if units.shape != top.out_size:
            raise ValueError(f"unit mask must be {top.out_size}, got {tuple(units.shape)}")
        units = units.nonzero()
    size = tuple(cap.images.shape[-2:])
    if isinstance(units, Tensor) and units.numel() == 0:
        return torch.zeros(size)
    pts = backproject(cap, units, levels=levels, method=method, image=image)
    final = pts.where(level=pts.levels, inside_only=True)
    return splat(pts.y[final], pts.x[final], pts.weight[final].float(), size)  # type: ignore[arg-type]
