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

Offsets are ``(N, 2 * G * kh * kw, Ho, Wo)`` in torchvision's layout (channel ``2k`` of a group:
row shift of tap ``k = i * kw + j``; ``2k + 1``: column shift), masks ``(N, G * kh * kw, Ho,
Wo)``. "Directly stacked": the output map of layer ``l``, after only position-preserving
operations (BN, activations), is the input map of layer ``l + 1``.

:func:`describe_layer` fills the sources for the layer types this project knows (our
:class:`~models.deform_conv.DeformConv2d`, torchvision's ``DeformConv2d`` and ``nn.Conv2d``).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from models.deform_conv import DeformConv2d
from models.geometry import pair


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

    @property
    def taps(self) -> int:
        return self.kernel_size[0] * self.kernel_size[1]

    @property
    def out_pixel_stride(self) -> tuple[float, float]:
        """Pixel spacing of the output map's units."""
        return (self.pixel_stride[0] * self.stride[0], self.pixel_stride[1] * self.stride[1])

    @property
    def out_pixel_offset(self) -> tuple[float, float]:
        """Pixel position of output unit (0, 0): where the centre tap of a regular grid looks."""
        return tuple(  # type: ignore[return-value]
            self.pixel_offset[a]
            + self.pixel_stride[a] * (-self.padding[a] + self.dilation[a] * (self.kernel_size[a] - 1) / 2)
            for a in (0, 1)
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
        )


@dataclass(frozen=True)
class SamplingLayer(LayerGeometry):
    """One stacked layer of a model: its geometry, the module, and what produces its offsets
    and mask (see the module docstring)."""

    module: nn.Module
    offset_source: Source | None = None
    mask_source: Source | None = None

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
        return self.mask_source is not None


def conv_geometry(module: nn.Module) -> dict[str, tuple[int, int]]:
    """Kernel, stride, padding and dilation of a conv-like module, as ``(h, w)`` pairs."""
    return {
        "kernel_size": pair(module.kernel_size),
        "stride": pair(module.stride),
        "padding": pair(module.padding),
        "dilation": pair(module.dilation),
    }


def describe_layer(
    name: str,
    module: nn.Module,
    pixel_stride: tuple[float, float],
    pixel_offset: tuple[float, float],
    offset_source: Source | None = None,
    mask_source: Source | None = None,
) -> SamplingLayer:
    """A :class:`SamplingLayer` for a known layer type, sources filled in:

    - our ``DeformConv2d``: outputs of ``offset_conv`` / ``mask_conv``;
    - ``torchvision.ops.DeformConv2d``: forward arguments ``offset`` (1) and ``mask`` (2);
    - ``nn.Conv2d``: a regular layer, no sources.

    Explicit ``offset_source`` / ``mask_source`` win over the defaults.
    """
    from torchvision.ops import DeformConv2d as TorchvisionDeformConv2d

    if offset_source is None and isinstance(module, TorchvisionDeformConv2d):
        offset_source = ForwardArgument(module, 1, "offset")
        mask_source = mask_source or ForwardArgument(module, 2, "mask")
    return SamplingLayer(
        name=name,
        module=module,
        pixel_stride=(float(pixel_stride[0]), float(pixel_stride[1])),
        pixel_offset=(float(pixel_offset[0]), float(pixel_offset[1])),
        offset_source=offset_source,
        mask_source=mask_source,
        **conv_geometry(module),
    )


__all__ = [
    "ForwardArgument",
    "LayerGeometry",
    "ModuleOutput",
    "OpArgument",
    "SamplingLayer",
    "Source",
    "conv_geometry",
    "describe_layer",
]
