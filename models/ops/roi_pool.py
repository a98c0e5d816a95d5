"""Deformable RoI pooling (Dai et al. 2017, Section 2.2), pure PyTorch, vectorised, any device.

An RoI is cut into ``ph x pw`` bins; plain RoI Align averages each bin's bilinear samples. The
deformable version first shifts every bin by a learned offset, normalised by the RoI's size::

    bin (i, j) moves by (dy, dx) = gamma * (offset[r, 0, i, j] * roi_h, offset[r, 1, i, j] * roi_w)

Offset layout and units, plainly
--------------------------------
``offsets`` is ``(R, 2, ph, pw)``: channel **0 is the row (y) shift**, channel **1 the column
(x) shift** of bin ``(i, j)`` (row ``i``, column ``j``), each as a fraction of the RoI's height
(for y) or width (for x), multiplied by ``gamma`` (0.1 in the paper). That is the same
y-first order as deformscope's (and torchvision's) convolution offsets. Beware: the detection
toolkits' compiled deformable RoI pooling uses the **reverse** order (x first) for its RoI
offsets; convert with ``offsets.flip(1)``.

Sampling follows ``torchvision.ops.roi_align`` exactly (same bilinear rule at the borders,
``aligned`` half-pixel shift, ``sampling_ratio x sampling_ratio`` points per bin, averaged), so
with zero offsets the result equals ``roi_align``. ``sampling_ratio`` must be positive: the
adaptive grid of ``roi_align(sampling_ratio=0)`` differs per RoI and would not vectorise.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.geometry import pair


def _corners(size: tuple[int, int], batch: Tensor, y: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """The four bilinear neighbours of samples ``(y, x)`` ``(R, P)`` on image ``batch`` ``(R,)``
    of a ``(N, C, H, W)`` map with roi_align's rule (zero beyond one pixel outside, clamped to the
    border within it): row indices into the map viewed ``(N * H * W, C)`` and their weights,
    each ``(R, P, 4)`` (a sample outside has weight zero)."""
    h, w = size
    outside = (y < -1.0) | (y > h) | (x < -1.0) | (x > w)
    y, x = y.clamp_min(0), x.clamp_min(0)
    y0, x0 = y.floor().long(), x.floor().long()
    y_top = y0 >= h - 1
    x_top = x0 >= w - 1
    y0, x0 = torch.where(y_top, h - 1, y0), torch.where(x_top, w - 1, x0)
    y1, x1 = torch.where(y_top, h - 1, y0 + 1), torch.where(x_top, w - 1, x0 + 1)
    y = torch.where(y_top, y0.to(y.dtype), y)
    x = torch.where(x_top, x0.to(x.dtype), x)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    base = batch.view(-1, 1) * (h * w)
    index = torch.stack([y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1], dim=-1) + base.unsqueeze(-1)
    weight = torch.stack([hy * hx, hy * lx, ly * hx, ly * lx], dim=-1) * (~outside).unsqueeze(-1).to(y.dtype)
    return index, weight


def bin_geometry(
    rois: Tensor,
    output_size: int | tuple[int, int],
    spatial_scale: float,
    offsets: Tensor | None = None,
    gamma: float = 0.1,
    aligned: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Where every (moved) bin lies in roi_align's sampling frame (feature unit ``i`` centred at
    ``i``; with ``aligned`` the box corner ``x1`` maps to ``x1 * spatial_scale - 0.5``): ``top``,
    ``left`` ``(R, ph, pw)`` and the bin height and width ``(R,)``, in feature units."""
    ph, pw = pair(output_size)
    shift = 0.5 if aligned else 0.0
    x1, y1 = rois[:, 1] * spatial_scale - shift, rois[:, 2] * spatial_scale - shift
    roi_w, roi_h = (rois[:, 3] - rois[:, 1]) * spatial_scale, (rois[:, 4] - rois[:, 2]) * spatial_scale
    if not aligned:  # roi_align's legacy mode: at least one pixel
        roi_w, roi_h = roi_w.clamp_min(1.0), roi_h.clamp_min(1.0)
    bin_h, bin_w = roi_h / ph, roi_w / pw
    i = torch.arange(ph, dtype=rois.dtype, device=rois.device).view(1, ph, 1)
    j = torch.arange(pw, dtype=rois.dtype, device=rois.device).view(1, 1, pw)
    top = y1.view(-1, 1, 1) + i * bin_h.view(-1, 1, 1)
    left = x1.view(-1, 1, 1) + j * bin_w.view(-1, 1, 1)
    if offsets is not None:
        top = top + gamma * offsets[:, 0] * roi_h.view(-1, 1, 1)
        left = left + gamma * offsets[:, 1] * roi_w.view(-1, 1, 1)
    return top.expand(-1, ph, pw), left.expand(-1, ph, pw), bin_h, bin_w


def deform_roi_pool(
    features: Tensor,
    rois: Tensor,
    offsets: Tensor | None,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    gamma: float = 0.1,
    aligned: bool = True,
) -> Tensor:
    """Deformable RoI pooling (RoI Align with moved bins; see the module docstring).

    Args:
        features: ``(N, C, H, W)``.
        rois: ``(R, 5)``: batch index, then ``x1, y1, x2, y2`` in image coordinates (as
            ``torchvision.ops.roi_align``).
        offsets: ``(R, 2, ph, pw)`` normalised bin shifts, row (y) first; None = plain RoI Align.
        output_size: ``ph`` or ``(ph, pw)`` bins.
        spatial_scale: feature-map units per image unit (1/4 for a stride-4 map).
        sampling_ratio: ``s``: each bin averages ``s x s`` bilinear samples (must be > 0).
        gamma: scale of the offsets (0.1 in the paper).
        aligned: roi_align's half-pixel alignment.

    Returns:
        ``(R, C, ph, pw)``.
    """
    if sampling_ratio <= 0:
        raise ValueError("sampling_ratio must be positive (the adaptive grid of 0 does not vectorise)")
    ph, pw = pair(output_size)
    r = rois.shape[0]
    if offsets is not None and offsets.shape != (r, 2, ph, pw):
        raise ValueError(f"offsets must be (R={r}, 2, {ph}, {pw}), got {tuple(offsets.shape)}")
    top, left, bin_h, bin_w = bin_geometry(rois, (ph, pw), spatial_scale, offsets, gamma, aligned)
    s = sampling_ratio
    frac = (torch.arange(s, dtype=rois.dtype, device=rois.device) + 0.5) / s  # (s,)
    # samples (R, ph, pw, s, s): row grid along dim 3, column grid along dim 4
    y = top[..., None, None] + frac.view(1, 1, 1, s, 1) * bin_h.view(-1, 1, 1, 1, 1)
    x = left[..., None, None] + frac.view(1, 1, 1, 1, s) * bin_w.view(-1, 1, 1, 1, 1)
    y, x = torch.broadcast_tensors(y, x)
    n, c, h, w = features.shape
    index, weight = _corners((h, w), rois[:, 0].long(), y.reshape(r, -1), x.reshape(r, -1))  # (R, P, 4)
    # A bin is a weighted sum of its s*s*4 corner reads (bilinear weights over s*s, the mean):
    # one index_select of channel rows (its backward is one index_add_, much faster than the
    # scatter behind advanced indexing) and one batched (1 x 4ss) @ (4ss x C) product per bin.
    rows = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
    reads = rows.index_select(0, index.reshape(-1)).view(r * ph * pw, s * s * 4, c)
    out = torch.bmm((weight / (s * s)).reshape(r * ph * pw, 1, s * s * 4), reads)  # (R*ph*pw, 1, C)
    return out.view(r, ph, pw, c).permute(0, 3, 1, 2)


class DeformRoIPool(nn.Module):
    """Deformable RoI pooling with its offset head, as in the paper: a plain RoI Align first,
    then a small fc head (``offset_fc``, initialised to zero, so a fresh module is plain RoI
    Align) predicts the normalised offsets ``(R, 2 * ph * pw)``, viewed ``(R, 2, ph, pw)``.

    ``forward(features, rois)`` returns ``(R, C, ph, pw)``. ``offset_fc``'s output is the offset
    tensor (hook it to read the offsets).
    """

    def __init__(
        self,
        channels: int,
        output_size: int | tuple[int, int] = 3,
        spatial_scale: float = 1.0,
        sampling_ratio: int = 2,
        gamma: float = 0.1,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        self.output_size = pair(output_size)
        self.spatial_scale, self.sampling_ratio, self.gamma = spatial_scale, sampling_ratio, gamma
        ph, pw = self.output_size
        self.offset_fc = nn.Sequential(
            nn.Flatten(), nn.Linear(channels * ph * pw, hidden), nn.ReLU(), nn.Linear(hidden, 2 * ph * pw)
        )
        nn.init.zeros_(self.offset_fc[-1].weight)
        nn.init.zeros_(self.offset_fc[-1].bias)

    def offsets(self, features: Tensor, rois: Tensor) -> Tensor:
        """``(R, 2, ph, pw)`` normalised offsets predicted from the plain pooling."""
        plain = deform_roi_pool(features, rois, None, self.output_size, self.spatial_scale, self.sampling_ratio)
        return self.offset_fc(plain).view(-1, 2, *self.output_size)

    def forward(self, features: Tensor, rois: Tensor) -> Tensor:
        off = self.offsets(features, rois)
        return deform_roi_pool(
            features, rois, off, self.output_size, self.spatial_scale, self.sampling_ratio, self.gamma
        )


__all__ = ["DeformRoIPool", "bin_geometry", "deform_roi_pool"]
