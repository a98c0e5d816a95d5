"""What the family adapters share: recomputing a layer from its canonical record with every
sample's weight multiplied by a gate (``viz.support``'s effective sampling locations)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.contract import SamplingRecord
from models.ops.deform_conv import deform_conv2d


def record_locations(record: SamplingRecord, grid_yx: Tensor, stride: tuple[int, int]) -> Tensor:
    """``(N, Ho, Wo, G, P, 2)`` absolute sampling positions ``(y, x)`` of a record."""
    off = record.offsets_yx  # (N, G, P, 2, Ho, Wo)
    _, _, _, _, ho, wo = off.shape
    rows = torch.arange(ho, dtype=off.dtype, device=off.device) * stride[0]
    cols = torch.arange(wo, dtype=off.dtype, device=off.device) * stride[1]
    base = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)  # (Ho, Wo, 2)
    return base[None, :, :, None, None, :] + grid_yx.to(off) + off.permute(0, 4, 5, 1, 2, 3)


def gated_conv(module: nn.Module, x: Tensor, record: SamplingRecord, gate: Tensor) -> Tensor:
    """A torchvision-layout layer (mmcv, detectron2) recomputed from its record, the weights
    (1 when unmodulated) times ``gate`` ``(N, G, K, Ho, Wo)``; detectron2's ``norm`` and
    ``activation`` applied after, as its layer does."""
    n, g, k, _, ho, wo = record.offsets_yx.shape
    mask = gate if record.weights is None else record.weights * gate
    out = deform_conv2d(
        x, record.offsets_yx.reshape(n, g * k * 2, ho, wo), module.weight, getattr(module, "bias", None),
        module.stride, module.padding, module.dilation, mask.reshape(n, g * k, ho, wo),
    )  # fmt: skip
    for post in ("norm", "activation"):
        fn = getattr(module, post, None)
        if callable(fn):
            out = fn(out)
    return out
