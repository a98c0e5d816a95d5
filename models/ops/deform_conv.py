"""A fast pure-PyTorch deformable convolution with torchvision's exact semantics.

Offset channel layout (the same as ``torchvision.ops.deform_conv2d``)
--------------------------------------------------------------------
``offset`` has shape ``(N, 2 * offset_groups * kh * kw, Ho, Wo)``. Kernel taps are numbered
row-major, ``k = i * kw + j`` for kernel row ``i`` and column ``j``. For offset group ``g``
and tap ``k``::

    offset[:, g * 2 * kh * kw + 2 * k]      # dy: shift along rows    (y, height)
    offset[:, g * 2 * kh * kw + 2 * k + 1]  # dx: shift along columns (x, width)

so the row shift comes first, then the column shift. Output unit ``(oy, ox)`` samples its tap
``k`` of group ``g`` at input position (pixel centres at integers)::

    y = oy * stride_h - pad_h + i * dil_h + dy
    x = ox * stride_w - pad_w + j * dil_w + dx

by bilinear interpolation; the four neighbours that fall outside the input contribute zero.
The optional DCNv2 ``mask`` of shape ``(N, offset_groups * kh * kw, Ho, Wo)`` multiplies each
sampled value (channel ``g * kh * kw + k``). Input channels are split into ``offset_groups``
contiguous blocks that share an offset field.

How it is fast on CPU: the ``kh * kw`` shifted grids are sampled in one ``grid_sample`` call,
giving an im2col matrix already in the layout the weights need, followed by one batched matmul
with the weights (no layout copy). Both have efficient CPU kernels for forward and backward,
unlike torchvision's per-point CPU loop.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.geometry import IntPair, output_size, pair, sampling_positions
from models.runtime import time_runs


def deform_conv2d(
    input: Tensor,
    offset: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    mask: Tensor | None = None,
) -> Tensor:
    """Deformable convolution (DCNv1, or DCNv2 when ``mask`` is given).

    A drop-in equal of ``torchvision.ops.deform_conv2d`` (same arguments, same results and
    gradients), several times faster on CPU.

    Args:
        input: ``(N, C_in, H, W)``.
        offset: ``(N, 2 * offset_groups * kh * kw, Ho, Wo)``; channel ``2k`` of a group is the
            row (y) shift of tap ``k = i * kw + j``, channel ``2k + 1`` its column (x) shift.
        weight: ``(C_out, C_in / groups, kh, kw)``; ``groups`` is inferred from the shapes.
        bias: ``(C_out,)`` or None.
        stride, padding, dilation: int or ``(h, w)`` pair.
        mask: ``(N, offset_groups * kh * kw, Ho, Wo)`` modulation scalars, or None.

    Returns:
        ``(N, C_out, Ho, Wo)``.
    """
    n, c_in, h, w = input.shape
    c_out, c_in_per_group, kh, kw = weight.shape
    if c_in % c_in_per_group:
        raise ValueError(f"input has {c_in} channels; weight expects multiples of {c_in_per_group}")
    groups = c_in // c_in_per_group
    k = kh * kw
    ho, wo = output_size((h, w), (kh, kw), stride, padding, dilation)
    if offset.shape[0] != n or offset.shape[2:] != (ho, wo) or offset.shape[1] % (2 * k):
        raise ValueError(f"offset shape {tuple(offset.shape)} does not fit: expected (N={n}, 2*G*{k}, {ho}, {wo})")
    g = offset.shape[1] // (2 * k)
    if c_in % g:
        raise ValueError(f"{c_in} input channels cannot be split into {g} offset groups")

    y, x = sampling_positions(offset, (kh, kw), stride, padding, dilation)
    # grid_sample's align_corners=False convention: pixel centre i sits at (2i + 1) / size - 1.
    grid = torch.stack(((2 * x + 1) / w - 1, (2 * y + 1) / h - 1), dim=-1)
    grid = grid.view(n * g, k * ho, wo, 2)
    cols = F.grid_sample(
        input.reshape(n * g, c_in // g, h, w),
        grid,
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N*G, C_in/G, K*Ho, Wo)
    cols = cols.view(n, g, c_in // g, k, ho, wo)
    if mask is not None:
        if mask.shape != (n, g * k, ho, wo):
            raise ValueError(f"mask shape {tuple(mask.shape)}, expected {(n, g * k, ho, wo)}")
        cols = cols * mask.view(n, g, 1, k, ho, wo)
    # (N, C_in, K, Ho, Wo) viewed as (N, groups, C_in/groups * K, Ho * Wo) is the im2col matrix
    # with rows in weight.view(C_out, C_in/groups * K) order, already contiguous: one batched
    # matmul with the shared weights finishes the job without any layout copy.
    cols = cols.view(n, groups, c_in_per_group * k, ho * wo)
    # autograd forms the weight gradient as per-image products summed over the batch, from views
    # (measured as fast as a hand-written contraction, which had to permute the im2col matrix)
    out = torch.matmul(weight.reshape(groups, c_out // groups, c_in_per_group * k), cols)
    out = out.view(n, c_out, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


#: How :class:`DeformConv2d` runs on a CUDA GPU: ``"auto"`` times ours and torchvision's compiled
#: op once per input shape and use (forward alone for an inference, forward and backward when
#: the call will be differentiated) and keeps the faster; ``"ours"`` or ``"torchvision"`` force
#: one. Both compute the same function (tests/test_deform_conv.py), so the choice changes speed
#: only. On the CPU ours always runs (it is many times faster there).
CUDA_IMPL = "auto"
_CUDA_CHOICE: dict[tuple, str] = {}
_CHOICE_LOCK = threading.Lock()


def _implementations() -> dict[str, Callable[..., Tensor]]:
    from torchvision.ops import deform_conv2d as tv_deform_conv2d

    return {"ours": deform_conv2d, "torchvision": tv_deform_conv2d}


def measure_faster(args: tuple, repeats: int = 3, backward: bool = True) -> tuple[str, dict[str, float]]:
    """Which implementation runs ``deform_conv2d(*args)`` faster on the arguments' device, forward
    and backward (or forward alone, ``backward=False``): ``(name, {name: median seconds})``.
    Inputs are detached copies, so the caller's graph is untouched; the device is synchronised
    around every timed run. Works under ``torch.no_grad()`` and ``torch.inference_mode()`` too
    (a model's first call is often one)."""
    medians = {}
    # the copies are made outside inference mode: inference tensors cannot join a graph; and the
    # trial calls are hidden from torch function modes (viz records a layer's op calls with one)
    with torch._C.DisableTorchFunction(), torch.inference_mode(False), torch.set_grad_enabled(backward):
        copies = tuple(
            a.detach().clone().requires_grad_(backward and a.is_floating_point()) if isinstance(a, Tensor) else a
            for a in args
        )
        for name, fn in _implementations().items():
            run = (lambda fn=fn: fn(*copies).sum().backward()) if backward else (lambda fn=fn: fn(*copies))
            # the warm-up run loads kernels and fills the allocator
            medians[name] = statistics.median(time_runs(run, repeats, device=args[0].device))
    return min(medians, key=medians.__getitem__), medians


def _cuda_op(args: tuple) -> Callable[..., Tensor]:
    if CUDA_IMPL != "auto":
        return _implementations()[CUDA_IMPL]
    x, offset, weight = args[0], args[1], args[2]
    # an inference pays the forward alone (the app); training pays forward and backward
    backward = torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)
    key = (x.device, x.dtype, tuple(x.shape), tuple(offset.shape), tuple(weight.shape), args[-1] is not None, backward)
    with _CHOICE_LOCK:  # one measurement per shape and use, even with several threads arriving at once
        if key not in _CUDA_CHOICE:
            _CUDA_CHOICE[key] = measure_faster(args, backward=backward)[0]
        return _implementations()[_CUDA_CHOICE[key]]


class DeformConv2d(nn.Module):
    """A deformable conv layer that predicts its own offsets (and DCNv2 mask) from its input.

    ``offset_conv`` (a regular conv with the same kernel, stride, padding and dilation) maps
    the input to the offset field; its weights and bias start at zero, as in the paper, so a
    fresh layer computes exactly a regular convolution. With ``modulated=True``, ``mask_conv``
    (conv + sigmoid, also zero-initialised, so every mask starts at 0.5 as in DCNv2) gives the
    modulation scalars. Tools read the offsets and masks by hooking these two submodules.

    Shapes: input ``(N, C_in, H, W)`` -> output ``(N, C_out, Ho, Wo)``; offsets
    ``(N, 2 * offset_groups * kh * kw, Ho, Wo)``; mask ``(N, offset_groups * kh * kw, Ho, Wo)``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair = 3,
        stride: IntPair = 1,
        padding: IntPair = 0,
        dilation: IntPair = 1,
        groups: int = 1,
        offset_groups: int = 1,
        bias: bool = True,
        modulated: bool = False,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups or in_channels % offset_groups:
            raise ValueError("channels must be divisible by groups and offset_groups")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size)
        self.stride, self.padding = pair(stride), pair(padding)
        self.dilation = pair(dilation)
        self.groups, self.offset_groups, self.modulated = groups, offset_groups, modulated
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        geometry = dict(
            kernel_size=self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
        )
        self.offset_conv = nn.Conv2d(in_channels, 2 * offset_groups * kh * kw, **geometry)
        self.mask_conv = (
            nn.Sequential(nn.Conv2d(in_channels, offset_groups * kh * kw, **geometry), nn.Sigmoid())
            if modulated
            else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Same initialisation as nn.Conv2d for the main weights.
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight.shape[1] * self.weight.shape[2] * self.weight.shape[3]
            bound = 1 / math.sqrt(fan_in)
            nn.init.uniform_(self.bias, -bound, bound)
        branches = [self.offset_conv] + ([self.mask_conv[0]] if self.mask_conv is not None else [])
        for conv in branches:
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        offset = self.offset_conv(x)
        mask = self.mask_conv(x) if self.mask_conv is not None else None
        args = (x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)
        op = _cuda_op(args) if x.is_cuda else deform_conv2d
        return op(*args)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, offset_groups={self.offset_groups}, modulated={self.modulated}"
        )


__all__ = ["DeformConv2d", "deform_conv2d", "output_size", "sampling_positions"]
