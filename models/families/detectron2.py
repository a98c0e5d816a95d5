"""detectron2's ``DeformConv`` / ``ModulatedDeformConv`` (used by its ``DeformBottleneckBlock``,
whose sibling ``conv2_offset`` computes offsets, and mask through a sigmoid, and passes them as
forward arguments): NCHW maps, torchvision's offset layout, detectron2's own compiled op.
Recognised by a 4-D ``weight``, ``deformable_groups`` and ``forward(x, offset[, mask])``."""

from __future__ import annotations

import inspect

from torch import Tensor, nn

from models.contract import ForwardArgument, SamplingLayer, SamplingRecord, TorchvisionLayout, conv_geometry
from models.families.common import gated_conv


def gated_forward(module: nn.Module, args: tuple, kwargs: dict, record: SamplingRecord, gate: Tensor) -> Tensor:
    """The layer recomputed from its record, every sample's weight times ``gate`` (``viz.support``)."""
    return gated_conv(module, args[0], record, gate)


NAME = "detectron2"


def _forward_params(module: nn.Module) -> list[str]:
    try:
        return list(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        return []


def matches(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    params = _forward_params(module)
    return (
        weight is not None
        and weight.dim() == 4
        and hasattr(module, "deformable_groups")
        and len(params) >= 2
        and params[1] == "offset"
    )


def describe(
    name: str, module: nn.Module, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
) -> SamplingLayer:
    params = _forward_params(module)
    modulated = len(params) >= 3 and params[2] == "mask"
    return SamplingLayer(
        name=name,
        pixel_stride=(float(pixel_stride[0]), float(pixel_stride[1])),
        pixel_offset=(float(pixel_offset[0]), float(pixel_offset[1])),
        module=module,
        offset_source=ForwardArgument(module, 1, "offset"),
        mask_source=ForwardArgument(module, 2, "mask") if modulated else None,
        decoder=TorchvisionLayout(family=NAME),
        **conv_geometry(module),
    )
