"""FlashInternImage's DCNv4 (``DCNv4``, and ``models.ops.dcnv4.DCNv4``): tokens ``(N, L, C)`` with a
``shape=(H, W)`` argument; one linear ``offset_mask`` gives, per group, ``2P`` offset channels
``(dx, dy)`` (points x-major) then ``P`` signed, unnormalised weights; DCNv3's grid."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from models.contract import ForwardArgument, ModuleOutput, SamplingLayer, SamplingRecord
from models.families.common import record_locations
from models.families.dcnv3 import grid_of, grid_tensor, grouped_layer, layer_params, offsets_yx_from
from models.ops.dcnv3 import center_feature_blend, regular_sample, sample_points
from models.ops.dcnv4 import split_offset_mask

NAME = "dcnv4"


def matches(module: nn.Module) -> bool:
    return (
        isinstance(dict(module.named_children()).get("offset_mask"), nn.Linear)
        and hasattr(module, "group")
        and hasattr(module, "offset_scale")
    )


def _map_shape(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[int, int]:
    shape = kwargs.get("shape", args[1] if len(args) > 1 else None)
    if shape is None:  # the published default: a square map
        side = int(args[0].shape[1] ** 0.5)
        return side, side
    return int(shape[0]), int(shape[1])


@dataclass(frozen=True)
class TokenLayout:
    """DCNv4's layout (the decoder of ``models.contract``)."""

    group: int
    points: int
    scale: float
    family: str = NAME

    def input_map(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        h, w = _map_shape(args, kwargs)
        x = args[0]
        return x.transpose(1, 2).reshape(x.shape[0], x.shape[2], h, w)

    def output_map(self, out: Tensor, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        h, w = _map_shape(args, kwargs)
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], h, w)

    def regular(self, what: str, value: Tensor) -> Tensor:
        # zero offsets and every weight 1 (a zero weight would read nothing)
        out = torch.zeros_like(value)
        per_group = out[..., : 3 * self.group * self.points].unflatten(-1, (self.group, 3 * self.points))
        per_group[..., 2 * self.points :] = 1.0
        return out

    def decode(self, layer: SamplingLayer, tensors: Mapping[str, Any]) -> SamplingRecord:
        args, kwargs = tensors["in"], tensors.get("kwargs", {})
        x_in, x_out = self.input_map(args, kwargs), self.output_map(tensors["out"], args, kwargs)
        n, _, h, w = x_in.shape
        om = tensors["offset"].reshape(n, h, w, -1)
        offset, mask = split_offset_mask(om, self.group, self.points)
        weights = mask.reshape(n, h, w, self.group, self.points).permute(0, 3, 4, 1, 2)
        return SamplingRecord(
            (h, w), tuple(x_out.shape[-2:]), offsets_yx_from(offset, self.group, self.points, self.scale),  # type: ignore[arg-type]
            weights, x_in, x_out,
        )  # fmt: skip


def around_core(module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], core) -> Tensor:
    """The published block around a sampling core: tokens in, ``value_proj``, the core on the
    ``(N, H, W, C)`` map, the centre-feature blend (queried by the core's output), ``output_proj``."""
    x = args[0]
    n, length, _ = x.shape
    h, w = _map_shape(args, kwargs)
    pointwise = not getattr(module, "without_pointwise", False)
    v = (module.value_proj(x) if pointwise else x).reshape(n, h, w, -1)
    out = core(v)
    if getattr(module, "center_feature_scale", False):
        out = center_feature_blend(
            out, v, out, module.center_feature_scale_proj_weight, module.center_feature_scale_proj_bias
        )
    out = out.reshape(n, length, -1)
    return module.output_proj(out) if pointwise else out


def regular_forward(module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
    """The layer's regular twin, exactly (discovery's probe): the published block with zero
    offsets and every point weighing 1."""
    p = layer_params(module)
    grid = grid_tensor(p, args[0].dtype)
    ones = torch.ones(p["group"], grid.shape[0])
    return around_core(module, args, kwargs, lambda v: regular_sample(v, grid, ones, p["stride"], tuple(v.shape[1:3])))


def gated_forward(
    module: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any], record: SamplingRecord, gate: Tensor
) -> Tensor:
    """The layer recomputed from its record with every sample's weight times ``gate``
    ``(N, G, P, Ho, Wo)`` (``viz.support``): the published block around the core."""
    p = layer_params(module)
    locations = record_locations(record, grid_tensor(p, record.offsets_yx.dtype), (p["stride"], p["stride"]))
    weights = (record.weights * gate).permute(0, 3, 4, 1, 2)
    return around_core(module, args, kwargs, lambda v: sample_points(v, locations, weights))


def describe(
    name: str, module: nn.Module, pixel_stride: tuple[float, float], pixel_offset: tuple[float, float]
) -> SamplingLayer:
    p = layer_params(module)
    decoder = TokenLayout(p["group"], len(grid_of(p)), p["scale"])
    return grouped_layer(
        name, module, pixel_stride, pixel_offset, decoder,
        offset_source=ModuleOutput(module.offset_mask),
        extra_sources=(("shape", ForwardArgument(module, 1, "shape")),),
        weighted=True,
    )  # fmt: skip
