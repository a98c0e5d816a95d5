"""mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack`` (the DCN of mmdetection's configs):
NCHW maps; a sibling conv ``conv_offset`` computes the offsets (``2 * dg * kh * kw`` channels, in
torchvision's layout) or, modulated, offsets and mask together (``3 * dg * kh * kw``:
``o1, o2, m = chunk(3)``, offset ``cat(o1, o2)``, mask ``sigmoid(m)``); mmcv's own compiled op
samples. Recognised by ``conv_offset``, a 4-D ``weight`` and ``deform_groups`` (older:
``deformable_groups``)."""

from __future__ import annotations

from torch import Tensor, nn

from models.contract import ModuleOutput, SamplingLayer, SamplingRecord, TorchvisionLayout, conv_geometry
from models.families.common import gated_conv


def gated_forward(module: nn.Module, args: tuple, kwargs: dict, record: SamplingRecord, gate: Tensor) -> Tensor:
    """The layer recomputed from its record, every sample's weight times ``gate`` (``viz.support``)."""
    return gated_conv(module, args[0], record, gate)


NAME = "mmcv"


def _groups(module: nn.Module) -> int | None:
    for attr in ("deform_groups", "deformable_groups"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return None


def matches(module: nn.Module) -> bool:
    weight = getattr(module, "weight", None)
    return (
        isinstance(dict(module.named_children()).get("conv_offset"), nn.Conv2d)
        and weight is not None
        and weight.dim() == 4
        and _groups(module) is not None
    )


def describe(
    name: str, module: nn.Module, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
) -> SamplingLayer:
    geometry = conv_geometry(module)
    kh, kw = geometry["kernel_size"]
    combined = module.conv_offset.out_channels == 3 * _groups(module) * kh * kw  # type: ignore[operator]
    return SamplingLayer(
        name=name,
        pixel_stride=(float(pixel_stride[0]), float(pixel_stride[1])),
        pixel_offset=(float(pixel_offset[0]), float(pixel_offset[1])),
        module=module,
        offset_source=ModuleOutput(module.conv_offset),
        decoder=TorchvisionLayout(family=NAME, combined=combined),
        weighted=combined,
        **geometry,
    )
