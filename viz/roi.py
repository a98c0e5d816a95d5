"""Deformable RoI pooling made visible (the paper's Figure 7): where an RoI's bins move.

:func:`roi_bins` runs an RoI model (``models.nets.roi``) on one scene and one box and returns,
in image pixels (pixel centres at integers), the box, its regular ``3 x 3`` bins and the bins as
the deformable pooling moved them, with the model's prediction. No hooks: the offsets come from
the model's own ``offsets`` method, so concurrent calls on a shared model are safe.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.ops.roi_pool import bin_geometry
from models.runtime import model_device

POOL_DEFAULTS = {"output_size": 3, "spatial_scale": 0.25, "gamma": 0.1}


@dataclass
class RoiBins:
    """One box on one scene.

    Attributes:
        box: ``(x0, y0, x1, y1)`` image coordinates (a pixel ``p`` spans ``[p, p + 1)``).
        regular, moved: ``(ph, pw, 4)`` bins as ``(x0, y0, x1, y1)`` in pixel-centre
            coordinates (the frame the figures draw in), before and after the offsets;
            ``moved`` equals ``regular`` for a plain RoI Align model.
        offsets: ``(2, ph, pw)`` normalised offsets (row shift first), zeros for the plain model.
        probabilities: ``(10,)``.
    """

    box: tuple[float, float, float, float]
    regular: Tensor
    moved: Tensor
    offsets: Tensor
    probabilities: Tensor

    @property
    def prediction(self) -> int:
        return int(self.probabilities.argmax())


def _rects(top: Tensor, left: Tensor, bin_h: Tensor, bin_w: Tensor, scale: float) -> Tensor:
    """Feature-map bins -> pixel-centre rectangles ``(ph, pw, 4)``. ``bin_geometry`` works in
    roi_align's sampling frame, where feature unit ``i`` is centred at ``i``; that unit sits at
    image pixel ``(i + 0.5) / scale - 0.5``."""
    y0, x0 = (top[0] + 0.5) / scale - 0.5, (left[0] + 0.5) / scale - 0.5
    y1, x1 = y0 + float(bin_h[0]) / scale, x0 + float(bin_w[0]) / scale
    return torch.stack([x0, y0, x1, y1], dim=-1)


@torch.no_grad()
def roi_bins(model: nn.Module, image: Tensor, box: tuple[float, float, float, float] | Tensor) -> RoiBins:
    """Bins and prediction of ``model`` for ``box`` on ``image`` ``(1, H, W)``."""
    from models.nets.roi import GAMMA, POOL_SIZE, SPATIAL_SCALE

    box_t = torch.as_tensor(box, dtype=torch.float32).view(4)
    if not (box_t[2] > box_t[0] and box_t[3] > box_t[1]):
        raise ValueError(f"box {tuple(box_t.tolist())} is empty: need x1 > x0 and y1 > y0")
    rois = torch.cat([torch.zeros(1), box_t]).view(1, 5)
    images = image.view(1, *image.shape[-3:]) if image.dim() == 3 else image[:1]
    dev = model_device(model)
    feats = model.features(images.to(dev))
    off = model.offsets(feats, rois.to(dev))
    probs = torch.softmax(model.head(model.pooled(feats, rois.to(dev))), dim=1)[0].cpu()
    off = off.cpu() if off is not None else None
    zero = torch.zeros(1, 2, POOL_SIZE, POOL_SIZE)
    regular = _rects(*bin_geometry(rois, POOL_SIZE, SPATIAL_SCALE), SPATIAL_SCALE)
    moved = _rects(
        *bin_geometry(rois, POOL_SIZE, SPATIAL_SCALE, off if off is not None else zero, GAMMA), SPATIAL_SCALE
    )
    return RoiBins(tuple(float(v) for v in box_t), regular, moved, (off if off is not None else zero)[0], probs)


__all__ = ["RoiBins", "roi_bins"]
