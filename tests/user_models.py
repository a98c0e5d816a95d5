"""Models written without deformscope's contract, as users write them: used by the discovery
tests and the concurrency test."""

from __future__ import annotations

import copy

import torch
import torchvision
from torch import nn
from torchvision.ops import DeformConv2d as TvDeformConv2d

from models.ops.deform_conv import DeformConv2d


class InlineDeform(nn.Module):
    """Calls ``torchvision.ops.deform_conv2d`` itself, with offsets and mask made inline from one
    conv's output (chunk, cat, sigmoid), as in detection toolkits' "pack" layers."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, modulated: bool = True) -> None:
        super().__init__()
        self.stride, self.dilation, self.modulated = stride, dilation, modulated
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) * 0.2)
        self.bias = nn.Parameter(torch.zeros(cout))
        self.conv_offset = nn.Conv2d(cin, 27 if modulated else 18, 3, stride, dilation, dilation)
        nn.init.normal_(self.conv_offset.weight, std=0.1)

    def forward(self, x):
        out = self.conv_offset(x)
        if self.modulated:
            dy_dx, m = out[:, :18], out[:, 18:]
            offset, mask = torch.cat(torch.chunk(dy_dx, 2, dim=1), dim=1), torch.sigmoid(m)
        else:
            offset, mask = out, None
        return torchvision.ops.deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.dilation, self.dilation, mask
        )


class TvPair(nn.Module):
    """A sibling offset (and mask) conv feeding a torchvision ``DeformConv2d``."""

    def __init__(self, cin: int, cout: int, stride: int = 1, padding: int = 1, dilation: int = 1, mask: bool = False):
        super().__init__()
        self.offset = nn.Conv2d(cin, 18, 3, stride, padding, dilation)
        self.mask = nn.Conv2d(cin, 9, 3, stride, padding, dilation) if mask else None
        nn.init.normal_(self.offset.weight, std=0.1)
        self.conv = TvDeformConv2d(cin, cout, 3, stride, padding, dilation)

    def forward(self, x):
        m = torch.sigmoid(self.mask(x)) if self.mask is not None else None
        return self.conv(x, self.offset(x), m)


class FrontAndStack(nn.Module):
    """``front`` (any position-moving ops), then ``layers`` with ``between`` after each but the last."""

    def __init__(self, front: list[nn.Module], layers: list[nn.Module], between: list[nn.Module] | None = None):
        super().__init__()
        self.front = nn.Sequential(*front)
        self.layers = nn.ModuleList(layers)
        self.between = nn.ModuleList(between or [nn.Identity() for _ in layers[:-1]])

    def forward(self, x):
        x = self.front(x)
        for i, layer in enumerate(self.layers):
            x = torch.relu(layer(x))
            if i < len(self.between):
                x = self.between[i](x)
        return x.mean(dim=(2, 3))


class _TvTwinLayer(nn.Module):
    """One of our ``DeformConv2d`` re-expressed with torchvision's module and the same weights."""

    def __init__(self, ours: DeformConv2d) -> None:
        super().__init__()
        self.offset_conv = copy.deepcopy(ours.offset_conv)
        self.mask_conv = copy.deepcopy(ours.mask_conv)
        self.conv = TvDeformConv2d(
            ours.in_channels, ours.out_channels, ours.kernel_size, ours.stride, ours.padding, ours.dilation,
            bias=ours.bias is not None,
        )  # fmt: skip
        self.conv.weight.data.copy_(ours.weight.data)
        if ours.bias is not None:
            self.conv.bias.data.copy_(ours.bias.data)

    def forward(self, x):
        mask = self.mask_conv(x) if self.mask_conv is not None else None
        return self.conv(x, self.offset_conv(x), mask)


def torchvision_twin(model: nn.Module) -> nn.Module:
    """A copy of a shipped model with every deformscope ``DeformConv2d`` replaced by torchvision's
    (weights copied): what the same network looks like in a user's code."""
    twin = copy.deepcopy(model)
    for module in list(twin.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, DeformConv2d):
                setattr(module, child_name, _TvTwinLayer(child))
    return twin  # its own sampling_layers() would name the replaced layers: discovery ignores it


def not_stacked() -> nn.Module:
    """A factory whose two deformable layers have a 3x3 conv between them: refused."""
    return FrontAndStack([nn.Conv2d(1, 4, 3, padding=1)], [TvPair(4, 4), TvPair(4, 4)], [nn.Conv2d(4, 4, 3, padding=1)])


def four_layers() -> nn.Module:
    """Four stacked torchvision-style deformable 3x3 layers after a 2x2 pool (offsets moved)."""
    torch.manual_seed(0)
    model = FrontAndStack([nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2)], [InlineDeform(4, 4) for _ in range(4)])
    return model


def six_layers() -> nn.Module:
    """Six stacked torchvision-style deformable 3x3 layers: 9^6 = 531,441 samples per unit at the bottom."""
    torch.manual_seed(0)
    return FrontAndStack([nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2)], [InlineDeform(4, 4) for _ in range(6)])
