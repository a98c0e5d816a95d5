"""MNIST classifiers: a deformable net, its DCNv2 variant and a regular-conv twin.

Layout (all three architectures)::

    input (N, 1, 28, 28) in [0, 1], white digit on black
    -> normalise (inside the model)
    -> stem: conv3x3(1->32) BN ReLU, 28x28 -> maxpool 2x2 -> 14x14
    -> three stacked 3x3 layers at 14x14 (deformable, modulated deformable or regular):
       32->64, 64->64, 64->128, each followed by BN ReLU
    -> global average pool -> linear(128->10) logits

The three 3x3 layers form the "top": one top unit depends on 3 levels of 9 samples, 9^3 = 729
sampling points, as in the figure of Dai et al. (2017). The regular twin has exactly the same
parameters apart from the offset (and mask) branches.

The sampling-layer contract
---------------------------
Every model here (and any model the ``viz`` package should understand) has a method
``sampling_layers() -> list[SamplingLayer]`` that lists, bottom to top, its stacked 3x3
layers: the module to hook, its kernel/stride/padding/dilation, and where its *input* feature
map lies on the image: feature-map unit ``(i, j)`` of the layer's input is centred on input
pixel ``(y, x) = (pixel_stride[0] * i + pixel_offset[0], pixel_stride[1] * j + pixel_offset[1])``
(pixel centres at integer coordinates, x = column, y = row). The layers must be directly
stacked: the output map of layer ``l`` (after only pointwise ops such as BN and ReLU) is the
input map of layer ``l + 1``. For a deformable layer, ``module`` is a
:class:`models.deform_conv.DeformConv2d` whose ``offset_conv`` outputs the offsets (and
``mask_conv``, when modulated, the DCNv2 mask); for a regular layer it is an ``nn.Conv2d``,
whose offsets are zero by definition. The tensor that feeds a layer is the positional input of
``module.forward``.

Here the 2x2 max-pool means unit ``i`` of the 14x14 maps covers pixels ``2i`` and ``2i + 1``,
so ``pixel_stride = (2, 2)`` and ``pixel_offset = (0.5, 0.5)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from models.deform_conv import DeformConv2d

ARCHS = ("deform", "deform2", "regular")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


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


@dataclass(frozen=True)
class SamplingLayer(LayerGeometry):
    """One stacked 3x3 layer of a model, as ``viz`` needs to know it (see module docstring):
    its geometry plus the module to hook."""

    module: nn.Module

    @property
    def deformable(self) -> bool:
        return isinstance(self.module, DeformConv2d)

    @property
    def modulated(self) -> bool:
        return isinstance(self.module, DeformConv2d) and self.module.modulated


def _conv_geometry(module: nn.Module) -> dict[str, tuple[int, int]]:
    def pair(v: int | tuple[int, ...]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))

    return {
        "kernel_size": pair(module.kernel_size),
        "stride": pair(module.stride),
        "padding": pair(module.padding),
        "dilation": pair(module.dilation),
    }


class MnistNet(nn.Module):
    """Stem + three stacked 3x3 layers + global pool + linear. See the module docstring.

    Args:
        arch: ``"deform"`` (DCNv1), ``"deform2"`` (DCNv2, modulated) or ``"regular"``.
        widths: output channels of the stem and of the three stacked layers.
        in_channels: 1 for MNIST; 3 for CIFAR-style inputs.
        num_classes: size of the logits.

    Input ``(N, in_channels, H, W)`` in [0, 1]; output logits ``(N, num_classes)``.
    """

    def __init__(
        self,
        arch: str = "deform",
        widths: tuple[int, int, int, int] = (32, 64, 64, 128),
        in_channels: int = 1,
        num_classes: int = 10,
        mean: float = MNIST_MEAN,
        std: float = MNIST_STD,
    ) -> None:
        super().__init__()
        if arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; expected one of {ARCHS}")
        self.arch = arch
        self.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
        self.register_buffer("std", torch.tensor(float(std)), persistent=False)
        c0, c1, c2, c3 = widths
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, c0, 3, padding=1, bias=False),
            nn.BatchNorm2d(c0),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.top = nn.ModuleList()
        self.top_norms = nn.ModuleList()
        for cin, cout in ((c0, c1), (c1, c2), (c2, c3)):
            if arch == "regular":
                layer: nn.Module = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
            else:
                layer = DeformConv2d(cin, cout, 3, padding=1, bias=False, modulated=arch == "deform2")
            self.top.append(layer)
            self.top_norms.append(nn.BatchNorm2d(cout))
        self.head = nn.Linear(c3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        x = self.stem(x)
        for layer, norm in zip(self.top, self.top_norms, strict=True):
            x = torch.relu(norm(layer(x)))
        return self.head(x.mean(dim=(2, 3)))

    def sampling_layers(self) -> list[SamplingLayer]:
        """The three stacked 3x3 layers, bottom to top (the contract in the module docstring)."""
        return [
            SamplingLayer(
                name=f"top.{i}",
                module=layer,
                pixel_stride=(2.0, 2.0),
                pixel_offset=(0.5, 0.5),
                **_conv_geometry(layer),
            )
            for i, layer in enumerate(self.top)
        ]


def build_model(arch: str, **kwargs: object) -> MnistNet:
    """A fresh model of the given architecture (``deform``, ``deform2`` or ``regular``)."""
    return MnistNet(arch, **kwargs)  # type: ignore[arg-type]


def count_parameters(model: nn.Module, include_offset_branches: bool = True) -> int:
    """Number of parameters, optionally leaving out ``offset_conv``/``mask_conv`` branches."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if include_offset_branches or not any(b in name for b in ("offset_conv", "mask_conv"))
    )
