"""Seeded geometric transforms of digit batches: rotation, translation, scaling.

All transforms are one batched affine warp (``affine_grid`` + bilinear ``grid_sample``) about
the image centre, with zero (black) fill, so they are fast on CPU and reproducible from a
``torch.Generator``. The parameter ranges live in :data:`RANGES` and are stored in every
checkpoint and experiment result so numbers can be traced to the exact transform.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: Parameter ranges, drawn uniformly per image: degrees, pixels (per axis), scale factor.
RANGES: dict[str, tuple[float, float]] = {
    "rotate": (-60.0, 60.0),
    "translate": (-5.0, 5.0),
    "scale": (0.6, 1.4),
}
KINDS = tuple(RANGES)
#: Names accepted on command lines: "none" or kinds joined by "+".
AUGMENTS = ("none", "rotate", "translate", "rotate+translate", "scale", "rotate+translate+scale")
#: The seed of the transformed test sets, so every model is scored on the same images.
TEST_SEED = 1234


def parse_augment(name: str) -> tuple[str, ...]:
    """``"rotate+translate"`` -> ``("rotate", "translate")``; ``"none"`` -> ``()``."""
    if name in ("", "none"):
        return ()
    parts = tuple(name.split("+"))
    unknown = [p for p in parts if p not in RANGES]
    if unknown or len(set(parts)) != len(parts):
        raise ValueError(f"bad augmentation {name!r}: use 'none' or a '+'-joined set of {KINDS}")
    return parts


def describe(name: str) -> str:
    """Human-readable parameter ranges of an augmentation name."""
    kinds = parse_augment(name)
    if not kinds:
        return "none"
    units = {"rotate": " deg", "translate": " px per axis", "scale": "x"}
    return ", ".join(f"{k} U({RANGES[k][0]:g}, {RANGES[k][1]:g}){units[k]}" for k in kinds)


def affine(images: Tensor, angle_deg: Tensor, shift_yx: Tensor, scale: Tensor) -> Tensor:
    """Rotate (counter-clockwise on screen), scale about the centre, then shift.

    Args:
        images: ``(N, C, H, W)``.
        angle_deg: ``(N,)``; shift_yx: ``(N, 2)`` in pixels (rows, columns); scale: ``(N,)``.

    Returns:
        ``(N, C, H, W)`` warped images, zero outside the source.
    """
    n, _, h, w = images.shape
    a = torch.deg2rad(angle_deg.to(images.dtype))
    cos, sin = torch.cos(a), torch.sin(a)
    s = scale.to(images.dtype)
    # affine_grid maps output -> source in normalised (x, y); invert rotate+scale, undo shift.
    # A counter-clockwise rotation on screen (y down) is a clockwise one in (x, y) maths axes.
    tx = 2 * shift_yx[:, 1].to(images.dtype) / w
    ty = 2 * shift_yx[:, 0].to(images.dtype) / h
    inv = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], dim=1) / s.view(n, 1, 1)
    t = -torch.einsum("nij,nj->ni", inv, torch.stack([tx, ty], -1))
    theta = torch.cat([inv, t.unsqueeze(-1)], dim=2)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_transform(images: Tensor, augment: str, generator: torch.Generator) -> Tensor:
    """Apply the named augmentation with per-image parameters drawn from ``generator``."""
    kinds = parse_augment(augment)
    if not kinds:
        return images
    n = images.shape[0]

    def uniform(kind: str, *shape: int) -> Tensor:
        lo, hi = RANGES[kind]
        return lo + (hi - lo) * torch.rand(n, *shape, generator=generator)

    angle = uniform("rotate") if "rotate" in kinds else torch.zeros(n)
    shift = uniform("translate", 2) if "translate" in kinds else torch.zeros(n, 2)
    scale = uniform("scale") if "scale" in kinds else torch.ones(n)
    return affine(images, angle, shift, scale)


def transformed_test_set(images: Tensor, augment: str, seed: int = TEST_SEED) -> Tensor:
    """The test images under a fixed seeded draw of the augmentation (same for every model)."""
    if not parse_augment(augment):
        return images
    g = torch.Generator().manual_seed(seed)
    out = torch.empty_like(images)
    for start in range(0, images.shape[0], 2048):  # bounded memory for big sets
        out[start : start + 2048] = random_transform(images[start : start + 2048], augment, g)
    return out


def rotate_scale(image: Tensor, angle_deg: float, scale: float) -> Tensor:
    """One ``(C, H, W)`` image rotated and scaled about its centre (for figures)."""
    out = affine(
        image.unsqueeze(0),
        torch.tensor([angle_deg]),
        torch.zeros(1, 2),
        torch.tensor([float(scale)]),
    )
    return out[0]


__all__ = [
    "AUGMENTS",
    "KINDS",
    "RANGES",
    "TEST_SEED",
    "affine",
    "describe",
    "parse_augment",
    "random_transform",
    "rotate_scale",
    "transformed_test_set",
]
