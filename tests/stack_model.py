"""A crafted model for geometry tests: single-channel deformable layers stacked directly, with
offsets (and masks) that are fixed fields instead of functions of the input."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from models import ModuleOutput, SamplingLayer, deform_conv2d


class FixedField(nn.Module):
    """Returns a stored ``(C, H, W)`` field for every image of the batch."""

    def __init__(self, field: Tensor) -> None:
        super().__init__()
        self.register_buffer("field", field)

    def forward(self, x: Tensor) -> Tensor:
        return self.field.unsqueeze(0).expand(x.shape[0], -1, -1, -1)


class FieldLayer(nn.Module):
    """A 1-channel 3x3 deformable layer (padding 1) whose offsets and mask come from fixed fields."""

    def __init__(self, offsets: Tensor, mask: Tensor | None, weight: Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.clone())
        self.offsets = FixedField(offsets)
        self.mask = FixedField(mask) if mask is not None else None

    def forward(self, x: Tensor) -> Tensor:
        mask = self.mask(x) if self.mask is not None else None
        return deform_conv2d(x, self.offsets(x), self.weight, padding=1, mask=mask)


class Stack(nn.Module):
    """``len(offsets)`` 3x3 deformable layers, 1 channel, all kernel weights 1, no bias, padding
    1, stride 1: the top unit is a plain weighted sum of the input, whose weights are exactly
    the back-projected ``exact`` weights."""

    def __init__(
        self,
        offsets: list[Tensor],
        masks: list[Tensor] | None = None,
        pixel_stride: tuple[float, float] = (1.0, 1.0),
        pixel_offset: tuple[float, float] = (0.0, 0.0),
        weights: list[Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        for i, off in enumerate(offsets):
            weight = weights[i] if weights is not None else torch.ones(1, 1, 3, 3)
            self.layers.append(FieldLayer(off, masks[i] if masks is not None else None, weight))
        self.pixel_stride, self.pixel_offset = pixel_stride, pixel_offset

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def sampling_layers(self) -> list[SamplingLayer]:
        return [
            SamplingLayer(
                name=f"layers.{i}",
                module=layer,
                kernel_size=(3, 3),
                stride=(1, 1),
                padding=(1, 1),
                dilation=(1, 1),
                pixel_stride=self.pixel_stride,
                pixel_offset=self.pixel_offset,
                offset_source=ModuleOutput(layer.offsets),
                mask_source=ModuleOutput(layer.mask) if layer.mask is not None else None,
            )
            for i, layer in enumerate(self.layers)
        ]


def constant_offsets(dy: float, dx: float, size: tuple[int, int]) -> Tensor:
    """Every tap of every unit shifted by ``(dy, dx)``: ``(18, H, W)`` in torchvision's layout."""
    field = torch.zeros(9, 2, *size)
    field[:, 0], field[:, 1] = dy, dx
    return field.view(18, *size)
