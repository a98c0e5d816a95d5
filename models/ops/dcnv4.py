"""DCNv4 (FlashInternImage, Xiong et al., CVPR 2024) in pure PyTorch: any device, the CPU included
(the published op has no CPU implementation).

Layout (the published one)
--------------------------
Input and output are tokens ``(N, L, C)`` with ``shape = (H, W)`` (``L = H * W``; without
``shape`` the map is taken square). One linear layer ``offset_mask`` (optionally after a
depthwise conv ``offset_mask_dw``) gives ``ceil(3 * G * P / 8) * 8`` channels per unit: for
group ``g``, channels ``[3P * g, 3P * g + 2P)`` hold ``(dx, dy)`` pairs of its ``P`` points
(x-major, as DCNv3), the next ``P`` channels the points' weights; padding channels come last.
**No softmax**: the weights are unbounded and may be negative. The sampling formula is DCNv3's
(``models.geometry.dcnv3_grid_yx``); ``value_proj`` / ``output_proj`` are absent when
``without_pointwise``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from models.ops.dcnv3 import GroupedBlock, dcnv3_core


def offset_mask_channels(group: int, points: int) -> int:
    """Width of DCNv4's ``offset_mask`` output: ``3 * G * P`` rounded up to a multiple of 8."""
    return int(math.ceil(3 * group * points / 8) * 8)


def split_offset_mask(offset_mask: Tensor, group: int, points: int) -> tuple[Tensor, Tensor]:
    """``(..., ceil(3GP/8)*8)`` -> offsets ``(..., G * P * 2)`` (DCNv3's layout) and weights
    ``(..., G * P)``; the padding channels are dropped."""
    lead = offset_mask.shape[:-1]
    per_group = offset_mask[..., : 3 * group * points].reshape(*lead, group, 3 * points)
    offset = per_group[..., : 2 * points].reshape(*lead, group * points * 2)
    mask = per_group[..., 2 * points :].reshape(*lead, group * points)
    return offset, mask


def dcnv4_core(
    value: Tensor,
    offset_mask: Tensor,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
    group: int = 4,
    offset_scale: float = 1.0,
    remove_center: bool = False,
) -> Tensor:
    """DCNv4's sampling core.

    Args:
        value: ``(N, H, W, G * Cg)`` channels-last.
        offset_mask: ``(N, Ho, Wo, ceil(3GP/8)*8)`` (module docstring).

    Returns:
        ``(N, Ho, Wo, G * Cg)``.
    """
    points = kernel_size * kernel_size - int(remove_center)
    offset, mask = split_offset_mask(offset_mask, group, points)
    return dcnv3_core(value, offset, mask, kernel_size, stride, padding, dilation, group, offset_scale, remove_center)


class DCNv4(GroupedBlock):
    """FlashInternImage's DCNv4 block, pure PyTorch: tokens ``(N, L, C)`` and ``shape=(H, W)``.

    ``x = value_proj(input)``; ``offset_mask(input)`` (after ``offset_mask_dw`` when
    ``dw_kernel_size`` is given); the core with unnormalised weights; optional
    ``center_feature_scale``; ``output_proj``. ``out_channels`` (ours; default ``channels``)
    lets ``output_proj`` change the width.
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 3,
        stride: int = 1,
        pad: int = 1,
        dilation: int = 1,
        group: int = 4,
        offset_scale: float = 1.0,
        dw_kernel_size: int | None = None,
        center_feature_scale: bool = False,
        remove_center: bool = False,
        output_bias: bool = True,
        without_pointwise: bool = False,
        out_channels: int | None = None,
    ) -> None:
        if without_pointwise and out_channels not in (None, channels):
            raise ValueError("without_pointwise keeps the width: out_channels must equal channels")
        super().__init__(
            channels, kernel_size, stride, pad, dilation, group, offset_scale, center_feature_scale, remove_center,
            dw_kernel_size,
        )  # fmt: skip
        self.without_pointwise = without_pointwise
        self.K = group * (kernel_size * kernel_size - self.remove_center)
        if dw_kernel_size is not None:
            self.offset_mask_dw = nn.Conv2d(
                channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=channels
            )
        self.offset_mask = nn.Linear(channels, offset_mask_channels(group, self.K // group))
        if not without_pointwise:
            self.value_proj = nn.Linear(channels, channels)
            self.output_proj = nn.Linear(channels, out_channels or channels, bias=output_bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The published initialisation: offsets and weights start at zero.
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)
        if not self.without_pointwise:
            nn.init.xavier_uniform_(self.value_proj.weight)
            nn.init.zeros_(self.value_proj.bias)
            nn.init.xavier_uniform_(self.output_proj.weight)
            if self.output_proj.bias is not None:
                nn.init.zeros_(self.output_proj.bias)

    @torch.no_grad()
    def start_with_equal_weights(self) -> DCNv4:
        """Every point's weight starts at ``1 / P`` (the offsets still at zero), as DCNv3's softmax
        starts, instead of the published zero. FlashInternImage's blocks are residual
        (``x + dcn(norm(x))``), so a layer that outputs zero at first is harmless there; in a plain
        stack it outputs zero to the next layer, whose samples are then zero too, and no gradient
        reaches any weight: the stack never learns (measured: a scene model stuck at the
        background's loss for 6000 steps)."""
        p = self.K // self.group
        per_group = self.offset_mask.bias[: 3 * self.K].view(self.group, 3 * p)
        per_group[:, 2 * p :] = 1.0 / p
        return self

    def forward(self, input: Tensor, shape: tuple[int, int] | None = None) -> Tensor:
        """``(N, L, channels)`` -> ``(N, L, out_channels)``; ``shape=(H, W)`` with ``H * W = L``."""
        n, length, c = input.shape
        h, w = shape if shape is not None else (int(length**0.5), int(length**0.5))
        x = self.value_proj(input) if not self.without_pointwise else input
        x = x.reshape(n, h, w, -1)
        if self.dw_kernel_size is not None:
            om_in = (
                self.offset_mask_dw(input.view(n, h, w, c).permute(0, 3, 1, 2))
                .permute(0, 2, 3, 1)
                .reshape(n, length, c)
            )
        else:
            om_in = input
        offset_mask = self.offset_mask(om_in).reshape(n, h, w, -1)
        x_proj = x
        x = dcnv4_core(
            x, offset_mask, self.kernel_size, self.stride, self.pad, self.dilation, self.group,
            self.offset_scale, bool(self.remove_center),
        )  # fmt: skip
        x = self.blend(x, x_proj, x).reshape(n, length, -1)
        return self.output_proj(x) if not self.without_pointwise else x


__all__ = ["DCNv4", "dcnv4_core", "offset_mask_channels", "split_offset_mask"]
