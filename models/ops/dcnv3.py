"""DCNv3 (InternImage, Wang et al., CVPR 2023) in pure PyTorch: any device, the CPU included.

Layout (the published one; see ``models.geometry.dcnv3_grid_yx`` for the sampling formula)
------------------------------------------------------------------------------------------
Maps are **channels-last**, ``(N, H, W, C)``, with ``C = G * Cg`` split into ``G`` groups of
contiguous channels. For group ``g`` and point ``p`` (numbered x-major, ``p = i * k + j`` for
kernel column ``i`` and row ``j``; ``P = k * k - remove_center``)::

    offset[..., (g * P + p) * 2]      # dx: shift along columns (x), in grid steps
    offset[..., (g * P + p) * 2 + 1]  # dy: shift along rows (y)
    mask[..., g * P + p]              # the point's weight (DCNv3: softmax over a group's P points)

Output unit ``(ho, wo)``, channel block ``g`` = sum over the group's ``P`` points of
``mask * bilinear(value_g, y, x)``, zero outside the map. Unlike DCNv1/v2 there is no kernel
weight per tap: every channel of a group shares the point weights, and a linear ``input_proj``
/ ``output_proj`` mixes channels before and after.

The module (:class:`DCNv3`) follows the published block's structure and attribute names
(``input_proj``, ``dw_conv``, ``offset``, ``mask``, ``output_proj``, ``center_feature_scale``),
so the same discovery recognises ours and InternImage's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.geometry import dcnv3_grid_yx


def sample_points(value: Tensor, locations_yx: Tensor, weights: Tensor) -> Tensor:
    """Weighted bilinear samples of grouped channels-last maps.

    Args:
        value: ``(N, H, W, G * Cg)``.
        locations_yx: ``(N, Ho, Wo, G, P, 2)`` positions on the map as ``(y, x)``, pixel centres
            at integers; reads outside the map are zero.
        weights: ``(N, Ho, Wo, G, P)``.

    Returns:
        ``(N, Ho, Wo, G * Cg)``: per group, the weighted sum of its ``P`` samples.
    """
    n, h, w, c = value.shape
    _, ho, wo, g, p, _ = locations_yx.shape
    cg = c // g
    # grid_sample (align_corners=False) puts pixel x at normalised (2x + 1) / W - 1
    size = torch.tensor([h, w], dtype=locations_yx.dtype, device=locations_yx.device)
    grid = (2 * locations_yx + 1) / size - 1
    grid = grid.flip(-1).permute(0, 3, 1, 2, 4, 5).reshape(n * g, ho * wo, p, 2)  # (x, y) for grid_sample
    maps = value.view(n, h * w, g, cg).permute(0, 2, 3, 1).reshape(n * g, cg, h, w)
    samples = F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # (NG, Cg, HoWo, P)
    wts = weights.permute(0, 3, 1, 2, 4).reshape(n * g, 1, ho * wo, p)
    out = (samples * wts).sum(-1)  # (NG, Cg, HoWo)
    return out.view(n, g * cg, ho, wo).permute(0, 2, 3, 1).contiguous()


def regular_sample(value: Tensor, grid_yx: Tensor, weights: Tensor, stride: int, out_size: tuple[int, int]) -> Tensor:
    """The regular twin of the core, computed exactly: every group samples the fixed grid
    ``unit * stride + grid_yx[p]`` with fixed weights, by slicing a zero-padded map (no normalised
    coordinates, so an integer position reads exactly one unit and nothing of its neighbours).

    Args:
        value: ``(N, H, W, G * Cg)``; grid_yx: ``(P, 2)``; weights: ``(G, P)``.

    Returns:
        ``(N, Ho, Wo, G * Cg)``.
    """
    n, h, w, c = value.shape
    g, p = weights.shape
    ho, wo = out_size
    reach = int(grid_yx.abs().max().ceil()) + 2
    padded = torch.nn.functional.pad(value, (0, 0, reach, reach, reach, reach))
    out = value.new_zeros(n, ho, wo, g, c // g)
    groups = padded.view(n, h + 2 * reach, w + 2 * reach, g, c // g)
    for q in range(p):
        gy, gx = float(grid_yx[q, 0]), float(grid_yx[q, 1])
        fy, fx = int(torch.floor(torch.tensor(gy))), int(torch.floor(torch.tensor(gx)))
        ty, tx = gy - fy, gx - fx
        for dy, wy in ((0, 1 - ty), (1, ty)):
            for dx, wx in ((0, 1 - tx), (1, tx)):
                if wy * wx == 0:
                    continue
                y0, x0 = reach + fy + dy, reach + fx + dx
                window = groups[:, y0 : y0 + (ho - 1) * stride + 1 : stride, x0 : x0 + (wo - 1) * stride + 1 : stride]
                out = out + (wy * wx) * weights[:, q].to(value.dtype).view(1, 1, 1, g, 1) * window
    return out.reshape(n, ho, wo, c)


def dcnv3_locations(
    offset: Tensor,
    kernel_size: int,
    stride: int,
    padding: int,
    dilation: int,
    group: int,
    offset_scale: float = 1.0,
    remove_center: bool = False,
) -> Tensor:
    """Absolute sampling locations from a DCNv3 offset map.

    Args:
        offset: ``(N, Ho, Wo, G * P * 2)`` in the layout of the module docstring.

    Returns:
        ``(N, Ho, Wo, G, P, 2)`` positions ``(y, x)`` on the input map.
    """
    n, ho, wo, c = offset.shape
    grid = dcnv3_grid_yx(kernel_size, padding, dilation, offset_scale, remove_center, offset.dtype, offset.device)
    p = grid.shape[0]
    if c != group * p * 2:
        raise ValueError(f"offset has {c} channels; {group} groups of {p} points need {group * p * 2}")
    shift_yx = offset.view(n, ho, wo, group, p, 2).flip(-1) * offset_scale  # (dx, dy) -> (y, x)
    base_y = torch.arange(ho, dtype=offset.dtype, device=offset.device) * stride
    base_x = torch.arange(wo, dtype=offset.dtype, device=offset.device) * stride
    base = torch.stack(torch.meshgrid(base_y, base_x, indexing="ij"), dim=-1)  # (Ho, Wo, 2)
    return base[None, :, :, None, None, :] + grid + shift_yx


def dcnv3_core(
    value: Tensor,
    offset: Tensor,
    mask: Tensor,
    kernel_size: int = 3,
    stride: int = 1,
    padding: int = 1,
    dilation: int = 1,
    group: int = 4,
    offset_scale: float = 1.0,
    remove_center: bool = False,
) -> Tensor:
    """DCNv3's sampling core (no projections, no softmax: ``mask`` is used as given).

    Args:
        value: ``(N, H, W, G * Cg)`` channels-last.
        offset: ``(N, Ho, Wo, G * P * 2)``; mask: ``(N, Ho, Wo, G * P)`` (module docstring).

    Returns:
        ``(N, Ho, Wo, G * Cg)``.
    """
    n, ho, wo, _ = offset.shape
    locations = dcnv3_locations(offset, kernel_size, stride, padding, dilation, group, offset_scale, remove_center)
    weights = mask.reshape(n, ho, wo, group, locations.shape[-2])
    return sample_points(value, locations, weights.to(value.dtype))


class ToChannelsLast(nn.Module):
    """``(N, C, H, W)`` -> ``(N, H, W, C)``."""

    def forward(self, x: Tensor) -> Tensor:
        return x.permute(0, 2, 3, 1)


def center_feature_blend(out: Tensor, value: Tensor, query: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """InternImage's ``center_feature_scale``: per unit and group ``a = sigmoid(query @ weight.T
    + bias)`` blends the core's output with the projected value, ``out * (1 - a) + value * a``
    (``a`` repeated over each group's channels). ``query``: DCNv3's ``x1``, DCNv4's core output."""
    scale = torch.sigmoid(F.linear(query, weight, bias))  # (..., G)
    scale = scale.repeat_interleave(out.shape[-1] // weight.shape[0], dim=-1)
    return out * (1 - scale) + value * scale


class GroupedBlock(nn.Module):
    """What InternImage's DCNv3 and FlashInternImage's DCNv4 blocks share: their attributes (the
    published names, which discovery reads) and the optional ``center_feature_scale``."""

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        stride: int,
        pad: int,
        dilation: int,
        group: int,
        offset_scale: float,
        center_feature_scale: bool,
        remove_center: bool,
        dw_kernel_size: int | None,
    ) -> None:
        super().__init__()
        if channels % group:
            raise ValueError(f"channels ({channels}) must be divisible by group ({group})")
        if remove_center and kernel_size % 2 == 0:
            raise ValueError("remove_center needs an odd kernel size")
        self.channels, self.kernel_size, self.dw_kernel_size = channels, kernel_size, dw_kernel_size
        self.stride, self.pad, self.dilation = stride, pad, dilation
        self.group, self.group_channels = group, channels // group
        self.offset_scale = offset_scale
        self.center_feature_scale = center_feature_scale
        self.remove_center = int(remove_center)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))

    @property
    def points(self) -> int:
        """Sampling points per group."""
        return self.kernel_size * self.kernel_size - self.remove_center

    def blend(self, out: Tensor, value: Tensor, query: Tensor) -> Tensor:
        """``center_feature_scale`` when the block has it, else ``out`` unchanged."""
        if not self.center_feature_scale:
            return out
        return center_feature_blend(
            out, value, query, self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias
        )

    def extra_repr(self) -> str:
        return (
            f"channels={self.channels}, kernel_size={self.kernel_size}, stride={self.stride}, pad={self.pad}, "
            f"dilation={self.dilation}, group={self.group}, offset_scale={self.offset_scale}, "
            f"remove_center={bool(self.remove_center)}, dw_kernel_size={self.dw_kernel_size}"
        )


class DCNv3(GroupedBlock):
    """InternImage's DCNv3 block, pure PyTorch, channels-last ``(N, H, W, C)`` in and out.

    ``x = input_proj(input)``; ``x1 = dw_conv(input)`` (depthwise conv, LayerNorm, GELU);
    ``offset(x1)`` and ``softmax(mask(x1))`` over each group's points; the core; optionally
    ``center_feature_scale`` blends the result with ``x``; ``output_proj``. ``out_channels``
    (an addition of ours, default ``channels``) lets ``output_proj`` change the width.
    Offsets and masks are computed at the input's resolution, so the output has the input's
    size: use stride 1 and ``pad = dilation * (kernel_size - 1) // 2``, as InternImage does.
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_size: int = 3,
        dw_kernel_size: int | None = None,
        stride: int = 1,
        pad: int = 1,
        dilation: int = 1,
        group: int = 4,
        offset_scale: float = 1.0,
        center_feature_scale: bool = False,
        remove_center: bool = False,
        out_channels: int | None = None,
    ) -> None:
        dw_kernel_size = dw_kernel_size or kernel_size
        super().__init__(
            channels, kernel_size, stride, pad, dilation, group, offset_scale, center_feature_scale, remove_center,
            dw_kernel_size,
        )  # fmt: skip
        points = self.points
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, dw_kernel_size, padding=(dw_kernel_size - 1) // 2, groups=channels),
            ToChannelsLast(),
            nn.LayerNorm(channels),
            nn.GELU(),
        )
        self.offset = nn.Linear(channels, group * points * 2)
        self.mask = nn.Linear(channels, group * points)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, out_channels or channels)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The published initialisation: zero offsets and equal point weights at the start.
        for lin in (self.offset, self.mask):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (self.input_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, input: Tensor) -> Tensor:
        """``(N, H, W, channels)`` -> ``(N, H, W, out_channels)``."""
        n, h, w, _ = input.shape
        x = self.input_proj(input)
        x_proj = x
        x1 = self.dw_conv(input.permute(0, 3, 1, 2))
        offset = self.offset(x1)
        mask = F.softmax(self.mask(x1).reshape(n, h, w, self.group, -1), dim=-1).reshape(n, h, w, -1)
        x = dcnv3_core(
            x, offset, mask, self.kernel_size, self.stride, self.pad, self.dilation, self.group,
            self.offset_scale, bool(self.remove_center),
        )  # fmt: skip
        return self.output_proj(self.blend(x, x_proj, x1))


__all__ = [
    "DCNv3",
    "GroupedBlock",
    "ToChannelsLast",
    "center_feature_blend",
    "dcnv3_core",
    "dcnv3_locations",
    "regular_sample",
    "sample_points",
]
