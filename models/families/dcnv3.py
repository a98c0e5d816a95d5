"""InternImage's DCNv3 (``DCNv3`` / ``DCNv3_pytorch``, and ``models.ops.dcnv3.DCNv3``): channels-last
``(N, H, W, C)`` maps; ``offset(x1)`` gives ``(N, Ho, Wo, G * P * 2)``, ``(dx, dy)`` per point,
points x-major; the weights are ``softmax(mask(x1))`` over each group's ``P`` points; the regular
grid is scaled by ``offset_scale`` (``models.geometry.dcnv3_grid_yx``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.contract import ModuleOutput, SamplingLayer, SamplingRecord
from models.families.common import record_locations
from models.geometry import dcnv3_grid_yx, output_size
from models.ops.dcnv3 import center_feature_blend, regular_sample, sample_points

NAME = "dcnv3"


def matches(module: nn.Module) -> bool:
    children = dict(module.named_children())
    return (
        isinstance(children.get("offset"), nn.Linear)
        and isinstance(children.get("mask"), nn.Linear)
        and "dw_conv" in children
        and hasattr(module, "group")
        and hasattr(module, "offset_scale")
    )


def layer_params(module: nn.Module) -> dict[str, Any]:
    """kernel, stride, pad, dilation, group, offset_scale, remove_center of a DCNv3/DCNv4 module
    (square kernels, as published)."""
    return {
        "k": int(module.kernel_size),
        "stride": int(getattr(module, "stride", 1)),
        "pad": int(getattr(module, "pad", (int(module.kernel_size) - 1) // 2)),
        "dil": int(getattr(module, "dilation", 1)),
        "group": int(module.group),
        "scale": float(module.offset_scale),
        "remove_center": bool(int(getattr(module, "remove_center", 0))),
    }


def grid_of(p: Mapping[str, Any]) -> tuple[tuple[float, float], ...]:
    grid = dcnv3_grid_yx(p["k"], p["pad"], p["dil"], p["scale"], p["remove_center"], torch.float64)
    return tuple((float(y), float(x)) for y, x in grid)


def offsets_yx_from(offset: Tensor, group: int, points: int, scale: float) -> Tensor:
    """``(N, Ho, Wo, G * P * 2)`` (dx, dy) -> ``(N, G, P, 2, Ho, Wo)`` (dy, dx) in input-map units."""
    n, ho, wo, _ = offset.shape
    return (offset.reshape(n, ho, wo, group, points, 2).flip(-1) * scale).permute(0, 3, 4, 5, 1, 2)


@dataclass(frozen=True)
class ChannelsLastLayout:
    """DCNv3's layout (the decoder of ``models.contract``)."""

    group: int
    points: int
    scale: float
    family: str = NAME

    def input_map(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        return args[0].permute(0, 3, 1, 2)

    def output_map(self, out: Tensor, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        return out.permute(0, 3, 1, 2)

    def regular(self, what: str, value: Tensor) -> Tensor:
        # zero offsets; zero mask logits: every point weighs 1/P, whatever the image
        return torch.zeros_like(value)

    def decode(self, layer: SamplingLayer, tensors: Mapping[str, Any]) -> SamplingRecord:
        args, kwargs = tensors["in"], tensors.get("kwargs", {})
        x_in, x_out = self.input_map(args, kwargs), self.output_map(tensors["out"], args, kwargs)
        n = x_in.shape[0]
        offsets_yx = offsets_yx_from(tensors["offset"], self.group, self.points, self.scale)
        logits = tensors["mask"]
        ho, wo = logits.shape[1:3]
        weights = torch.softmax(logits.reshape(n, ho, wo, self.group, self.points), dim=-1).permute(0, 3, 4, 1, 2)
        return SamplingRecord(
            tuple(x_in.shape[-2:]),
            tuple(x_out.shape[-2:]),
            offsets_yx,
            weights,
            x_in,
            x_out,  # type: ignore[arg-type]
        )


def around_core(module: nn.Module, x: Tensor, core, query_grad: bool = True) -> Tensor:
    """The published block around a sampling core: ``output_proj(blend(core(input_proj(x))))``,
    ``x`` channels-last; ``core`` maps the projected value ``(N, H, W, C)`` to its samples. The
    centre-feature blend's query (``dw_conv(x)``) is held constant when not ``query_grad``."""
    v = module.input_proj(x)
    out = core(v)
    if getattr(module, "center_feature_scale", False):
        with torch.set_grad_enabled(query_grad and torch.is_grad_enabled()):
            x1 = module.dw_conv(x.permute(0, 3, 1, 2))
        out = center_feature_blend(
            out, v, x1, module.center_feature_scale_proj_weight, module.center_feature_scale_proj_bias
        )
    return module.output_proj(out)


def regular_forward(module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
    """The layer's regular twin, exactly (discovery's probe): the published block with zero
    offsets, every point weighing ``1/P`` and ``center_feature_scale`` held at its value."""
    p = layer_params(module)
    x = args[0]
    grid = grid_tensor(p, x.dtype)
    weights = torch.full((p["group"], grid.shape[0]), 1.0 / grid.shape[0])
    out_size = output_size(tuple(x.shape[1:3]), p["k"], p["stride"], p["pad"], p["dil"])
    return around_core(module, x, lambda v: regular_sample(v, grid, weights, p["stride"], out_size), query_grad=False)


def gated_forward(
    module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], record: SamplingRecord, gate: Tensor
) -> Tensor:
    """The layer recomputed from its record with every sample's weight times ``gate``
    ``(N, G, P, Ho, Wo)`` (``viz.support``): the published block around the core."""
    p = layer_params(module)
    locations = record_locations(record, grid_tensor(p, record.offsets_yx.dtype), (p["stride"], p["stride"]))
    weights = (record.weights * gate).permute(0, 3, 4, 1, 2)  # (N, Ho, Wo, G, P)
    return around_core(module, args[0], lambda v: sample_points(v, locations, weights))


def grid_tensor(p: Mapping[str, Any], dtype: torch.dtype) -> Tensor:
    return dcnv3_grid_yx(p["k"], p["pad"], p["dil"], p["scale"], p["remove_center"], dtype)


def grouped_layer(
    name: str,
    module: nn.Module,
    pixel_stride: tuple[float, float],
    pixel_offset: tuple[float, float],
    decoder: Any,
    **sources: Any,
) -> SamplingLayer:
    """The contract's entry of a DCNv3/DCNv4 layer: its square geometry, scaled grid and sources."""
    p = layer_params(module)
    return SamplingLayer(
        name=name,
        kernel_size=(p["k"], p["k"]),
        stride=(p["stride"], p["stride"]),
        padding=(p["pad"], p["pad"]),
        dilation=(p["dil"], p["dil"]),
        pixel_stride=(float(pixel_stride[0]), float(pixel_stride[1])),
        pixel_offset=(float(pixel_offset[0]), float(pixel_offset[1])),
        module=module,
        decoder=decoder,
        grid=grid_of(p),
        **sources,
    )


def describe(
    name: str, module: nn.Module, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
) -> SamplingLayer:
    p = layer_params(module)
    decoder = ChannelsLastLayout(p["group"], len(grid_of(p)), p["scale"])
    return grouped_layer(
        name, module, pixel_stride, pixel_offset, decoder,
        offset_source=ModuleOutput(module.offset), mask_source=ModuleOutput(module.mask),
    )  # fmt: skip
