"""Sampling geometry of a (deformable) convolution, written once: tensors in, tensors out.

The deformable operator (``models.ops.deform_conv``), the nets' layer descriptions
(``models.contract``) and ``viz``'s back-projection all import these functions, so the tap
order, the output size and the sampling formula cannot drift apart.

Conventions: rows are ``y``, columns ``x``; unit (and pixel) centres sit at integer
coordinates. Kernel taps are numbered row-major, ``k = i * kw + j``. Output unit ``o`` of a
layer samples its tap ``k`` at input position::

    p = o * stride - padding + tap_k * dilation + offset_k          (per axis)

(Dai et al. 2017, eq. 2: ``p = p0 + p_n + dp_n``), read bilinearly, zero outside the input.
"""

from __future__ import annotations

import torch
from torch import Tensor

IntPair = int | tuple[int, int]


def pair(v: IntPair | list[int]) -> tuple[int, int]:
    """``3`` -> ``(3, 3)``; ``(3, 5)`` -> ``(3, 5)``."""
    if isinstance(v, int):
        return (v, v)
    a, b = v
    return (int(a), int(b))


def output_size(
    in_size: tuple[int, int],
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> tuple[int, int]:
    """Spatial output size ``(Ho, Wo)`` of a convolution on an ``(H, W)`` input."""
    (kh, kw), (sh, sw) = pair(kernel_size), pair(stride)
    (ph, pw), (dh, dw) = pair(padding), pair(dilation)
    h, w = in_size
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def tap_grid(
    kernel_size: IntPair, dilation: IntPair = 1, dtype: torch.dtype = torch.float32, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Regular-grid displacements ``p_n`` of the taps: ``(K,)`` rows and ``(K,)`` columns in tap
    order ``k = i * kw + j`` (torchvision's order)."""
    (kh, kw), (dh, dw) = pair(kernel_size), pair(dilation)
    tap_y = (torch.arange(kh, dtype=dtype, device=device) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dtype, device=device) * dw).repeat(kh)
    return tap_y, tap_x


def sample_position(unit: Tensor, tap: Tensor, offset: Tensor | float, stride: int, padding: int) -> Tensor:
    """The sampling formula along one axis: ``unit * stride - padding + tap + offset``.

    ``tap`` already includes the dilation (:func:`tap_grid`). Shapes broadcast; the caller
    arranges the unit, tap and offset axes.
    """
    return unit * stride - padding + tap + offset


def sampling_positions(
    offset: Tensor,
    kernel_size: IntPair,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
) -> tuple[Tensor, Tensor]:
    """Absolute sampling positions of every output unit from an offset map.

    Args:
        offset: ``(N, 2 * G * kh * kw, Ho, Wo)``; channel ``g * 2K + 2k`` is the row (y) shift
            of tap ``k`` in group ``g``, channel ``g * 2K + 2k + 1`` its column (x) shift.

    Returns:
        ``(y, x)``, each ``(N, G, K, Ho, Wo)``, in input-map coordinates.
    """
    (kh, kw), (sh, sw), (ph, pw) = pair(kernel_size), pair(stride), pair(padding)
    n, c, ho, wo = offset.shape
    k = kh * kw
    if c % (2 * k):
        raise ValueError(f"offset has {c} channels, not a multiple of 2*kh*kw = {2 * k}")
    off = offset.view(n, c // (2 * k), k, 2, ho, wo)
    tap_y, tap_x = tap_grid((kh, kw), dilation, offset.dtype, offset.device)
    rows = torch.arange(ho, device=offset.device, dtype=offset.dtype)
    cols = torch.arange(wo, device=offset.device, dtype=offset.dtype)
    y = sample_position(rows[None, :, None], tap_y[:, None, None], off[:, :, :, 0], sh, ph)
    x = sample_position(cols[None, None, :], tap_x[:, None, None], off[:, :, :, 1], sw, pw)
    return y, x


def to_pixels(
    y: Tensor, x: Tensor, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """Feature-map coordinates -> image pixel coordinates ``(y, x)``."""
    return y * pixel_stride[0] + pixel_offset[0], x * pixel_stride[1] + pixel_offset[1]


__all__ = ["IntPair", "output_size", "pair", "sample_position", "sampling_positions", "tap_grid", "to_pixels"]


def dcnv3_grid_yx(
    kernel_size: int,
    padding: int = 1,
    dilation: int = 1,
    offset_scale: float = 1.0,
    remove_center: bool = False,
    dtype: torch.dtype = torch.float32,
    device: torch.device | None = None,
) -> Tensor:
    """Regular-grid displacements of DCNv3/DCNv4's sampling points, ``(P, 2)`` as ``(y, x)``.

    InternImage's layout (DCNv3, and DCNv4 after it): points are numbered **x-major**,
    ``p = i * k + j`` for kernel column ``i`` and row ``j``; with ``c = dilation * (k - 1) // 2``
    and ``s = offset_scale`` output unit ``(ho, wo)`` samples its point ``p`` at::

        x = wo * stride + grid[p, 1] + s * dx,   grid[p, 1] = -padding + c + s * (i * dilation - c)
        y = ho * stride + grid[p, 0] + s * dy,   grid[p, 0] = -padding + c + s * (j * dilation - c)

    ``s`` scales the regular grid about its centre, not only the learned shifts.
    ``remove_center`` drops the centre point (``P = k * k - 1``).
    """
    k = int(kernel_size)
    if remove_center and k % 2 == 0:
        raise ValueError("remove_center needs an odd kernel size")
    c = dilation * (k - 1) // 2
    steps = torch.arange(k, dtype=dtype, device=device) * dilation - c
    col = steps.repeat_interleave(k)  # i, the column index, is the slow one: x-major
    row = steps.repeat(k)
    grid = torch.stack([row, col], dim=1) * offset_scale + (c - padding)
    if remove_center:
        grid = torch.cat([grid[: k * k // 2], grid[k * k // 2 + 1 :]])
    return grid


__all__ += ["dcnv3_grid_yx"]
