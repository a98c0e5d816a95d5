"""RoI classifiers on scenes: which digit is inside a given box? Deformable RoI pooling and a
plain RoI Align twin on the scene backbone (Dai et al. 2017, Section 2.2 and Figure 7).

    scene (N, 1, 64, 64) -> the scene backbone (``SceneNet``: stem + three stacked 3x3 layers,
    stride 4, c4 channels) -> RoI pooling, 3x3 bins, sampling ratio 2, spatial scale 1/4
    (deformable: bins moved by the offset head, gamma 0.1; plain: roi_align)
    -> flatten -> fc(c4*9 -> 256) ReLU -> fc(256 -> 10) logits per RoI

The twins share every parameter apart from the deformable pool's offset head. Boxes are in
image coordinates ``(x0, y0, x1, y1)`` (a pixel ``p`` spans ``[p, p + 1)``), as the scenes store
them; ``rois`` are ``(R, 5)`` with the scene index first.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from models.nets.scenes import DEFAULT_WIDTHS, SceneNet
from models.ops.roi_pool import DeformRoIPool, deform_roi_pool

POOL_ARCHS = ("deform", "regular")
POOL_SIZE, SPATIAL_SCALE, SAMPLING_RATIO, GAMMA = 3, 0.25, 2, 0.1


class RoiNet(nn.Module):
    """Scene backbone + (deformable) RoI pooling + fc head. See the module docstring."""

    family = "roi"

    def __init__(
        self,
        arch: str,
        widths: tuple[int, ...] = DEFAULT_WIDTHS,
        hidden: int = 256,
        mean: float = 0.0,
        std: float = 1.0,
    ) -> None:
        super().__init__()
        if arch not in POOL_ARCHS:
            raise ValueError(f"unknown RoI pooling {arch!r}; expected one of {POOL_ARCHS}")
        self.arch = arch
        self.backbone = SceneNet("regular", widths=widths, mean=mean, std=std)
        c4 = self.backbone.widths[-1]
        self.hidden = hidden
        self.pool = DeformRoIPool(c4, POOL_SIZE, SPATIAL_SCALE, SAMPLING_RATIO, GAMMA) if arch == "deform" else None
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c4 * POOL_SIZE**2, hidden), nn.ReLU(), nn.Linear(hidden, 10))

    def features(self, images: Tensor) -> Tensor:
        """The backbone's top map ``(N, c4, S/4, S/4)``."""
        b = self.backbone
        x = b.stem((images - b.mean) / b.std)
        for layer, norm in zip(b.top, b.top_norms, strict=True):
            x = torch.relu(norm(layer(x)))
        return x

    def offsets(self, features: Tensor, rois: Tensor) -> Tensor | None:
        """``(R, 2, 3, 3)`` normalised bin offsets (row shift first), None for the plain twin."""
        return self.pool.offsets(features, rois) if self.pool is not None else None

    def pooled(self, features: Tensor, rois: Tensor) -> Tensor:
        if self.pool is not None:
            return self.pool(features, rois)
        return deform_roi_pool(features, rois, None, POOL_SIZE, SPATIAL_SCALE, SAMPLING_RATIO)

    def forward(self, images: Tensor, rois: Tensor) -> Tensor:
        return self.head(self.pooled(self.features(images), rois))

    def config(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "arch": self.arch,
            "widths": list(self.backbone.widths),
            "hidden": self.hidden,
            "mean": float(self.backbone.mean),
            "std": float(self.backbone.std),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> RoiNet:
        return cls(
            config["arch"],
            widths=tuple(config.get("widths", DEFAULT_WIDTHS)),  # type: ignore[arg-type]
            hidden=int(config.get("hidden", 256)),
            mean=float(config.get("mean", 0.0)),
            std=float(config.get("std", 1.0)),
        )


def rois_from_boxes(boxes: Tensor, scene: Tensor) -> Tensor:
    """``(D, 5)`` RoIs (scene index, x0, y0, x1, y1) from per-digit boxes and their scenes."""
    return torch.cat([scene.to(boxes.dtype).view(-1, 1), boxes], dim=1)


def jitter_boxes(boxes: Tensor, generator: torch.Generator, amount: float = 0.3) -> Tensor:
    """Boxes shifted by up to ``amount`` of their width/height and scaled by a factor in
    ``[1 - amount, 1 + amount]`` per side, independently for each box (centre-preserving scale,
    then the shift)."""
    d = boxes.shape[0]
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    u = (torch.rand(d, 4, generator=generator) * 2 - 1) * amount
    cx, cy = cx + u[:, 0] * w, cy + u[:, 1] * h
    w, h = w * (1 + u[:, 2]), h * (1 + u[:, 3])
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1)


__all__ = [
    "GAMMA",
    "POOL_ARCHS",
    "POOL_SIZE",
    "RoiNet",
    "SAMPLING_RATIO",
    "SPATIAL_SCALE",
    "jitter_boxes",
    "rois_from_boxes",
]
