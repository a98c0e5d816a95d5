"""The sampling-layer contract: how a model tells ``viz`` where its stacked layers sample.

A model that ``viz`` understands has a method ``sampling_layers() -> list[SamplingLayer]``
listing, bottom to top, its directly stacked convolution layers (deformable or regular). Each
entry gives:

- the layer's conv geometry (kernel, stride, padding, dilation);
- where its *input* map lies on the image: input-map unit ``(i, j)`` is centred on image pixel
  ``(y, x) = (pixel_stride[0] * i + pixel_offset[0], pixel_stride[1] * j + pixel_offset[1])``
  (pixel centres at integers, x = column, y = row);
- ``module``: the layer itself; its first positional forward argument is the input map and its
  output the output map;
- ``offset_source``: what produces the offsets: :class:`ModuleOutput` (a module whose
  output *is* the offset tensor, like our layers' ``offset_conv``), :class:`ForwardArgument`
  (an argument of a module's forward, like ``offset`` of ``torchvision.ops.DeformConv2d``) or
  :class:`OpArgument` (what the ``torchvision.ops.deform_conv2d`` call inside a module got).
  ``None`` means a regular conv: offsets zero by definition;
- ``mask_source``: the same for the DCNv2 modulation mask (``None``: no mask).

- ``decoder``: how what the sources captured becomes the **canonical sampling record**
  (:class:`SamplingRecord`): per group ``g`` and point ``p`` of every output unit, the shift
  ``offsets_yx`` added to the layer's regular grid (``grid``) and the point's weight. The
  default, :class:`TorchvisionLayout`, reads offsets ``(N, 2 * G * kh * kw, Ho, Wo)`` in
  torchvision's layout (channel ``2k`` of a group: row shift of tap ``k = i * kw + j``;
  ``2k + 1``: column shift) and masks ``(N, G * kh * kw, Ho, Wo)``; other DCN families
  (``models.families``) bring their own.

Output unit ``(ho, wo)`` samples its point ``p`` of group ``g`` at input-map position
``(ho * stride_h, wo * stride_w) + grid[p] + offsets_yx[g, p]`` (``(y, x)``), bilinearly, zero
outside. ``grid`` defaults to the kernel's taps, ``grid[k] = (i * dil_h - pad_h, j * dil_w - pad_w)``;
a family whose regular grid differs (DCNv3's ``offset_scale``, a removed centre) gives its own.
"Directly stacked": the output map of layer ``l``, after only position-preserving operations
(BN, activations, 1x1 convs, same-size residual additions), is the input map of layer ``l + 1``.

:func:`describe_layer` fills the sources for the layer types this project knows (our
:class:`~models.ops.deform_conv.DeformConv2d`, torchvision's ``DeformConv2d`` and ``nn.Conv2d``);
``models.families`` describes the other DCN families.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from models.geometry import pair
from models.ops.deform_conv import DeformConv2d

#: Positions of the arguments of torchvision's op: ``torchvision::deform_conv2d(input, weight,
#: offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, weight_groups,
#: offset_groups, use_mask)``; written once, for capture, discovery and the support views.
TORCHVISION_OP_ARGS = {
    "input": 0, "weight": 1, "offset": 2, "mask": 3, "bias": 4, "groups": 11, "offset_groups": 12, "use_mask": 13,
}  # fmt: skip


def is_torchvision_deform_op(func: Any) -> bool:
    """Whether ``func`` (as a torch function mode sees it) is torchvision's deform_conv2d op."""
    return str(func).split(".")[:2] == ["torchvision", "deform_conv2d"]


@dataclass(frozen=True, eq=False)
class ModuleOutput:
    """The tensor is the output of ``module``'s forward."""

    module: nn.Module


@dataclass(frozen=True, eq=False)
class ForwardArgument:
    """The tensor is an argument of ``module``'s forward: positional ``index`` or keyword ``name``
    (a ``None`` argument means "absent", e.g. no mask passed)."""

    module: nn.Module
    index: int
    name: str

    def read(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The argument in a forward call's ``args`` / ``kwargs`` (None when it was not passed)."""
        if self.name in kwargs:
            return kwargs[self.name]
        return args[self.index] if len(args) > self.index else None


@dataclass(frozen=True, eq=False)
class OpArgument:
    """The tensor is argument ``name`` (``"offset"`` or ``"mask"``) of the
    ``torchvision.ops.deform_conv2d`` call made directly inside ``module``'s forward: what the
    operator itself received, for modules that compute their offsets inline (e.g. a chunk and
    a sigmoid of one conv's output) instead of passing them as a forward argument."""

    module: nn.Module
    name: str


Source = ModuleOutput | ForwardArgument | OpArgument


@dataclass(frozen=True)
class LayerGeometry:
    """A stacked layer's conv geometry and where its input map lies on the image.

    Input-map unit ``(i, j)`` is centred on image pixel
    ``(pixel_stride[0] * i + pixel_offset[0], pixel_stride[1] * j + pixel_offset[1])`` as ``(y, x)``.
    """

    name: str
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    pixel_stride: tuple[float, float]
    pixel_offset: tuple[float, float]
    #: Regular-grid displacement ``(y, x)`` of each point from ``unit * stride``; None: the
    #: kernel's taps in row-major order (``(i * dil - pad, j * dil - pad)``).
    grid: tuple[tuple[float, float], ...] | None = field(default=None, kw_only=True)

    def grid_yx(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(P, 2)`` the regular grid's displacements ``(y, x)``, in input-map units."""
        if self.grid is not None:
            return torch.tensor(self.grid, dtype=dtype).view(-1, 2)
        (kh, kw), (dh, dw), (ph, pw) = self.kernel_size, self.dilation, self.padding
        ys = (torch.arange(kh, dtype=dtype) * dh).repeat_interleave(kw) - ph
        xs = (torch.arange(kw, dtype=dtype) * dw).repeat(kh) - pw
        return torch.stack([ys, xs], dim=1)

    @property
    def taps(self) -> int:
        """Points per group (``kh * kw`` for a conv; fewer with a removed centre)."""
        return len(self.grid) if self.grid is not None else self.kernel_size[0] * self.kernel_size[1]

    def _grid_bounds(self, axis: int) -> tuple[float, float]:
        if self.grid is None:
            lo = -self.padding[axis]
            return float(lo), float(lo + self.dilation[axis] * (self.kernel_size[axis] - 1))
        vals = [pt[axis] for pt in self.grid]
        return float(min(vals)), float(max(vals))

    @property
    def grid_step(self) -> tuple[float, float]:
        """Spacing of the regular grid's neighbouring points per axis, in input-map units: the
        dilation of a conv; ``offset_scale * dilation`` for DCNv3/DCNv4."""
        return tuple(  # type: ignore[return-value]
            (self._grid_bounds(a)[1] - self._grid_bounds(a)[0]) / max(self.kernel_size[a] - 1, 1) for a in (0, 1)
        )

    @property
    def grid_span(self) -> tuple[int, int]:
        """Input units the regular grid's bilinear reads reach beyond one unit, per axis: how much a
        unit's receptive field grows through this layer (``(k - 1) * dil`` for a conv)."""
        return tuple(  # type: ignore[return-value]
            math.ceil(self._grid_bounds(a)[1]) - math.floor(self._grid_bounds(a)[0]) for a in (0, 1)
        )

    @property
    def out_pixel_stride(self) -> tuple[float, float]:
        """Pixel spacing of the output map's units."""
        return (self.pixel_stride[0] * self.stride[0], self.pixel_stride[1] * self.stride[1])

    @property
    def out_pixel_offset(self) -> tuple[float, float]:
        """Pixel position of output unit (0, 0): where the centre of its regular grid looks. The
        one home of the stacking formula: the next stacked layer's input map lies here."""
        return tuple(  # type: ignore[return-value]
            self.pixel_offset[a] + self.pixel_stride[a] * (sum(self._grid_bounds(a)) / 2) for a in (0, 1)
        )

    def geometry(self) -> LayerGeometry:
        """Just the geometry (drops any module references of subclasses)."""
        return LayerGeometry(
            self.name,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            self.pixel_stride,
            self.pixel_offset,
            grid=self.grid,
        )


@dataclass(frozen=True)
class SamplingRecord:
    """What one layer sampled on a batch, in the canonical layout every family decodes to.

    Attributes:
        in_size, out_size: ``(H, W)`` of the layer's input and output maps.
        offsets_yx: ``(N, G, P, 2, Ho, Wo)`` shift of point ``p`` of group ``g`` from the regular
            grid, ``[..., 0, :, :]`` rows (y), ``[..., 1, :, :]`` columns (x), in input-map units.
        weights: ``(N, G, P, Ho, Wo)`` each sample's weight (DCNv2's mask, DCNv3's softmax,
            DCNv4's signed weights), or None: 1 everywhere.
        inputs, outputs: the input and output maps as ``(N, C, H, W)`` (channels-last and token
            maps rearranged).
    """

    in_size: tuple[int, int]
    out_size: tuple[int, int]
    offsets_yx: Tensor
    weights: Tensor | None
    inputs: Tensor
    outputs: Tensor


class Decoder(Protocol):
    """A DCN family's layout: turns what a layer's sources captured into a :class:`SamplingRecord`.

    ``tensors`` holds ``"in"`` (the layer's forward arguments, a tuple), ``"kwargs"``, ``"out"``
    (its output), ``"offset"`` / ``"mask"`` (what the sources gave, or absent) and any extra
    sources by name.
    """

    family: str

    def decode(self, layer: SamplingLayer, tensors: Mapping[str, Any]) -> SamplingRecord: ...

    def input_map(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        """The layer's input map as ``(N, C, H, W)`` from its forward arguments."""

    def output_map(self, out: Tensor, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        """The layer's output as ``(N, C, Ho, Wo)``."""

    def regular(self, what: str, value: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class TorchvisionLayout:
    """torchvision's layout (also mmcv's and detectron2's): NCHW maps; offsets
    ``(N, 2 * G * K, Ho, Wo)``, per tap ``(dy, dx)``, row-major taps; masks ``(N, G * K, Ho, Wo)``.
    ``combined``: mmcv / detectron2's modulated layers compute offsets and mask with one conv
    (``o1, o2, m = chunk(3)``, offset ``cat(o1, o2)``, mask ``sigmoid(m)``), captured as the
    offset source."""

    family: str = "torchvision"
    combined: bool = False

    def input_map(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        return args[0]

    def output_map(self, out: Tensor, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Tensor:
        return out

    def split(self, raw: Tensor) -> tuple[Tensor, Tensor | None]:
        """Offsets and mask from what the offset source gave."""
        if not self.combined:
            return raw, None
        o1, o2, m = torch.chunk(raw, 3, dim=1)
        return torch.cat([o1, o2], dim=1), torch.sigmoid(m)

    def regular(self, what: str, value: Tensor) -> Tensor:
        """The regular twin's value of a source: zero offsets; a mask of ones (a combined
        tensor: zero offsets and mask logits, a constant 0.5)."""
        return torch.zeros_like(value) if what == "offset" else torch.ones_like(value)

    def decode(self, layer: SamplingLayer, tensors: Mapping[str, Any]) -> SamplingRecord:
        x_in = self.input_map(tensors["in"], tensors.get("kwargs", {}))
        n, _, h, w = x_in.shape
        ho, wo = tensors["out"].shape[-2:]
        k = layer.taps
        offsets, mask = tensors.get("offset"), tensors.get("mask")
        if offsets is not None:
            offsets, inline_mask = self.split(offsets)
            mask = inline_mask if inline_mask is not None else mask
            if offsets.shape[0] != n or offsets.shape[1] % (2 * k) or tuple(offsets.shape[2:]) != (ho, wo):
                raise ValueError(
                    f"layer {layer.name!r}: offsets of shape {tuple(offsets.shape)} do not fit "
                    f"(N={n}, 2*G*{k}, {ho}, {wo}); is offset_source right?"
                )
            offsets_yx = offsets.reshape(n, offsets.shape[1] // (2 * k), k, 2, ho, wo)
        else:
            offsets_yx = x_in.new_zeros(n, 1, k, 2, ho, wo)
        weights = mask.reshape(n, -1, k, ho, wo) if mask is not None else None
        return SamplingRecord((h, w), (int(ho), int(wo)), offsets_yx, weights, x_in, tensors["out"])


TORCHVISION = TorchvisionLayout()


@dataclass(frozen=True)
class SamplingLayer(LayerGeometry):
    """One stacked layer of a model: its geometry, the module, and what produces its offsets
    and mask (see the module docstring)."""

    module: nn.Module
    offset_source: Source | None = None
    mask_source: Source | None = None
    #: How the sources' tensors become the canonical record (default: torchvision's layout).
    decoder: Decoder = field(default=TORCHVISION, kw_only=True)
    #: Further tensors a decoder needs, by name (e.g. DCNv4's ``shape`` argument).
    extra_sources: tuple[tuple[str, Source], ...] = field(default=(), kw_only=True)
    #: Whether the layer weights its samples although no mask source is named (the weights
    #: come with the offsets, as in DCNv4 or a combined mmcv / detectron2 conv).
    weighted: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        # Layers written before sources existed: our own DeformConv2d names its branches.
        if self.offset_source is None and isinstance(self.module, DeformConv2d):
            object.__setattr__(self, "offset_source", ModuleOutput(self.module.offset_conv))
            if self.module.mask_conv is not None and self.mask_source is None:
                object.__setattr__(self, "mask_source", ModuleOutput(self.module.mask_conv))

    @property
    def deformable(self) -> bool:
        return self.offset_source is not None

    @property
    def modulated(self) -> bool:
        return self.mask_source is not None or self.weighted

    @property
    def family(self) -> str:
        return self.decoder.family


def conv_geometry(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Kernel, stride, padding and dilation of a conv-like module, as ``(h, w)`` pairs."""
    return {
        "kernel_size": pair(module.kernel_size),
        "stride": pair(module.stride),
        "padding": pair(module.padding),
        "dilation": pair(module.dilation),
    }


__all__ = [
    "TORCHVISION",
    "TORCHVISION_OP_ARGS",
    "is_torchvision_deform_op",
    "Decoder",
    "SamplingRecord",
    "TorchvisionLayout",
    "ForwardArgument",
    "LayerGeometry",
    "ModuleOutput",
    "OpArgument",
    "SamplingLayer",
    "Source",
    "conv_geometry",
]
