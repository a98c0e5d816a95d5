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

The sampling-layer contract (``models.contract``)
-------------------------------------------------
``sampling_layers()`` lists the three stacked layers bottom to top with their geometry, where
their input maps lie on the image, and what produces their offsets and masks. Here the 2x2 max-pool means unit ``i`` of the 14x14 maps covers pixels ``2i`` and ``2i + 1``,
so ``pixel_stride = (2, 2)`` and ``pixel_offset = (0.5, 0.5)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models.contract import SamplingLayer
from models.families import describe_layer
from models.ops.dcnv3 import DCNv3
from models.ops.dcnv4 import DCNv4
from models.ops.deform_conv import DeformConv2d

ARCHS = ("deform", "deform2", "regular")
#: Scene models also come with InternImage's DCNv3 and FlashInternImage's DCNv4 layers.
SCENE_ARCHS = (*ARCHS, "dcnv3", "dcnv4")
#: Every architecture some model family knows (what a checkpoint may name).
ALL_ARCHS = SCENE_ARCHS
#: Groups of the DCNv3 / DCNv4 layers in the scene models (16 channels each at width 64).
SCENE_GROUPS = 4
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def set_identity(
    model: nn.Module, arch: str, widths: tuple[int, ...], mean: float, std: float, archs: tuple[str, ...] = ARCHS
) -> None:
    """What every model family records: a checked ``arch`` (one of ``archs``), its ``widths`` and
    the input normalisation as (non-persistent) buffers ``mean`` and ``std``."""
    if arch not in archs:
        raise ValueError(f"unknown architecture {arch!r} for {type(model).__name__}; expected one of {archs}")
    model.arch = arch
    model.widths = tuple(int(w) for w in widths)
    model.register_buffer("mean", torch.tensor(float(mean)), persistent=False)
    model.register_buffer("std", torch.tensor(float(std)), persistent=False)


def conv_bn_relu_pool(cin: int, cout: int) -> list[nn.Module]:
    """A stem stage: 3x3 conv (no bias), BatchNorm, ReLU, 2x2 max-pool (halves the map)."""
    return [
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    ]


class ChannelsLastBlock(nn.Module):
    """Runs a channels-last block (``(N, H, W, C)``, e.g. DCNv3) on ``(N, C, H, W)`` maps."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TokenBlock(nn.Module):
    """Runs a token block (``(N, L, C)`` and ``shape=(H, W)``, e.g. DCNv4) on ``(N, C, H, W)`` maps."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        y = self.block(x.flatten(2).transpose(1, 2), shape=(h, w))
        return y.transpose(1, 2).reshape(n, -1, h, w)


def stacked_layers(arch: str, channels: tuple[int, ...]) -> tuple[nn.ModuleList, nn.ModuleList]:
    """The stacked 3x3 layers (padding 1) ``channels[0] -> channels[1] -> ...`` of an
    architecture, and a BatchNorm after each: DCNv1 (``deform``), DCNv2 (``deform2``), plain
    convs (``regular``; the twins differ only in the offset/mask branches, no bias), or
    InternImage's DCNv3 / FlashInternImage's DCNv4 blocks (``dcnv3`` / ``dcnv4``, 4 groups, the
    output projection changing the width) run on NCHW maps."""
    top, norms = nn.ModuleList(), nn.ModuleList()
    for cin, cout in zip(channels[:-1], channels[1:], strict=True):
        if arch == "regular":
            layer: nn.Module = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        elif arch == "dcnv3":
            layer = ChannelsLastBlock(DCNv3(cin, 3, pad=1, group=SCENE_GROUPS, out_channels=cout))
        elif arch == "dcnv4":
            # equal point weights at the start: a plain stack of zero-output layers never learns
            dcn = DCNv4(cin, 3, pad=1, group=SCENE_GROUPS, dw_kernel_size=3, out_channels=cout)
            layer = TokenBlock(dcn.start_with_equal_weights())
        else:
            layer = DeformConv2d(cin, cout, 3, padding=1, bias=False, modulated=arch == "deform2")
        top.append(layer)
        norms.append(nn.BatchNorm2d(cout))
    return top, norms


class MnistNet(nn.Module):
    """Stem + three stacked 3x3 layers + global pool + linear. See the module docstring.

    Args:
        arch: ``"deform"`` (DCNv1), ``"deform2"`` (DCNv2, modulated) or ``"regular"``.
        widths: output channels of the stem and of the three stacked layers.
        in_channels: 1 for MNIST; 3 for CIFAR-style inputs.
        num_classes: size of the logits.

    Input ``(N, in_channels, H, W)`` in [0, 1]; output logits ``(N, num_classes)``.
    """

    family = "digits"

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
        set_identity(self, arch, widths, mean, std)
        c0, c1, c2, c3 = widths
        self.stem = nn.Sequential(*conv_bn_relu_pool(in_channels, c0))
        self.top, self.top_norms = stacked_layers(arch, (c0, c1, c2, c3))
        self.head = nn.Linear(c3, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = (x - self.mean) / self.std
        x = self.stem(x)
        for layer, norm in zip(self.top, self.top_norms, strict=True):
            x = torch.relu(norm(layer(x)))
        return self.head(x.mean(dim=(2, 3)))

    def sampling_layers(self) -> list[SamplingLayer]:
        """The three stacked 3x3 layers, bottom to top (the contract in the module docstring)."""
        return [describe_layer(f"top.{i}", layer, (2.0, 2.0), (0.5, 0.5)) for i, layer in enumerate(self.top)]

    def config(self) -> dict[str, object]:
        """What rebuilds this model (stored in checkpoints)."""
        return {
            "family": self.family,
            "arch": self.arch,
            "widths": list(self.widths),
            "in_channels": int(self.stem[0].in_channels),
            "num_classes": int(self.head.out_features),
            "mean": float(self.mean),
            "std": float(self.std),
        }

    @classmethod
    def from_config(cls, config: dict[str, object]) -> MnistNet:
        return cls(
            config["arch"],  # type: ignore[arg-type]
            widths=tuple(config.get("widths", (32, 64, 64, 128))),  # type: ignore[arg-type]
            in_channels=int(config.get("in_channels", 1)),  # type: ignore[arg-type]
            num_classes=int(config.get("num_classes", 10)),  # type: ignore[arg-type]
            mean=float(config.get("mean", MNIST_MEAN)),  # type: ignore[arg-type]
            std=float(config.get("std", MNIST_STD)),  # type: ignore[arg-type]
        )


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
