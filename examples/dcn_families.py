"""Small models built the way the DCN toolkits build theirs, written from their published
forward passes (the toolkits themselves need not be installed): InternImage's DCNv3 block,
FlashInternImage's DCNv4 block, mmcv's pack layers (mmdetection's DCN) and detectron2's
DeformBottleneckBlock. The tests use them as stand-ins for the real ones; try them as "your own
model" (untrained: their offset branches get random weights, so the samples move)::

    python -m viz.export --model examples.dcn_families:intern_image --input-size 32 --in-channels 3 \
        --mean 0 --std 1 --figure model_points --out out/
    streamlit run app.py -- --model examples.dcn_families:flash_intern_image --input-size 32 --in-channels 3
    python -c "import viz; print(viz.load_user_model('examples.dcn_families:mmdet_dcn').report())"

Each samples with its own code, independent of ``models.ops.dcnv3`` / ``models.ops.dcnv4`` and of
torchvision's op (mmcv and detectron2 run compiled ops of their own; here the pure-PyTorch
``models.ops.deform_conv.deform_conv2d`` stands for them, which is not the op discovery watches).
Class names differ from deformscope's on purpose: discovery recognises the structure, not the name.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.ops.deform_conv import deform_conv2d as pure_deform_conv2d

# ---------------------------------------------------------------- DCNv3 / DCNv4 cores


def interned_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center):
    """The published pure-PyTorch core's method: pad the map, normalised reference points and
    a scaled dilation grid, ``grid_sample`` (align_corners=False) per group.

    value ``(N, H, W, G*Cg)``; offset ``(N, Ho, Wo, G*P*2)`` (dx, dy); mask ``(N, Ho, Wo, G*P)``.
    """
    n, h, w, c = value.shape
    _, ho, wo, _ = offset.shape
    cg = c // group
    padded = F.pad(value, (0, 0, pad, pad, pad, pad))
    hp, wp = h + 2 * pad, w + 2 * pad
    centre = dil * (k - 1) // 2
    # reference point of each output unit (padded pixel coordinates, centres at +0.5), normalised
    ref_y = (torch.arange(ho, dtype=value.dtype) * stride + centre + 0.5) / hp
    ref_x = (torch.arange(wo, dtype=value.dtype) * stride + centre + 0.5) / wp
    ry, rx = torch.meshgrid(ref_y, ref_x, indexing="ij")
    ref = torch.stack([rx, ry], -1).view(1, ho, wo, 1, 2)
    steps = torch.arange(k, dtype=value.dtype) * dil - centre
    gx, gy = torch.meshgrid(steps, steps, indexing="ij")  # first index: the column -> x-major
    grid = torch.stack([gx.flatten() / wp, gy.flatten() / hp], -1)  # (k*k, 2) as (x, y)
    if remove_center:
        grid = torch.cat([grid[: k * k // 2], grid[k * k // 2 + 1 :]])
    p = grid.shape[0]
    grid = grid.repeat(group, 1).view(1, 1, 1, group * p, 2)
    norm = torch.tensor([wp, hp], dtype=value.dtype)
    loc = ref + grid * scale + offset.view(n, ho, wo, group * p, 2) * scale / norm
    sampling = (2 * loc - 1).view(n, ho * wo, group, p, 2).transpose(1, 2).reshape(n * group, ho * wo, p, 2)
    maps = padded.view(n, hp * wp, group * cg).transpose(1, 2).reshape(n * group, cg, hp, wp)
    read = F.grid_sample(maps, sampling, mode="bilinear", padding_mode="zeros", align_corners=False)
    m = mask.view(n, ho * wo, group, p).transpose(1, 2).reshape(n * group, 1, ho * wo, p)
    out = (read * m).sum(-1).view(n, group * cg, ho * wo)
    return out.transpose(1, 2).reshape(n, ho, wo, group * cg)


class LayerNormCL(nn.Module):
    """InternImage's norm on NCHW input, channels-last output."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x.permute(0, 2, 3, 1))


class InternDCN(nn.Module):
    """InternImage's ``DCNv3_pytorch``: channels-last in and out."""

    def __init__(self, channels, kernel_size=3, stride=1, pad=1, dilation=1, group=4, offset_scale=1.0,
                 remove_center=False, center_feature_scale=False) -> None:  # fmt: skip
        super().__init__()
        self.channels, self.kernel_size, self.stride, self.pad, self.dilation = channels, kernel_size, stride, pad, dilation
        self.group, self.group_channels, self.offset_scale = group, channels // group, offset_scale
        self.remove_center = int(remove_center)
        self.center_feature_scale = center_feature_scale
        p = kernel_size * kernel_size - self.remove_center
        self.dw_conv = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size, 1, (kernel_size - 1) // 2, groups=channels),
            LayerNormCL(channels),
            nn.GELU(),
        )
        self.offset = nn.Linear(channels, group * p * 2)
        self.mask = nn.Linear(channels, group * p)
        self.input_proj = nn.Linear(channels, channels)
        self.output_proj = nn.Linear(channels, channels)
        if center_feature_scale:
            self.center_feature_scale_proj_weight = nn.Parameter(torch.zeros(group, channels))
            self.center_feature_scale_proj_bias = nn.Parameter(torch.zeros(group))

    def forward(self, input: Tensor) -> Tensor:
        n, h, w, _ = input.shape
        x = self.input_proj(input)
        x_proj = x
        x1 = self.dw_conv(input.permute(0, 3, 1, 2))
        offset = self.offset(x1)
        mask = F.softmax(self.mask(x1).reshape(n, h, w, self.group, -1), -1).reshape(n, h, w, -1)
        x = interned_core(x, offset, mask, self.kernel_size, self.stride, self.pad, self.dilation, self.group,
                          self.offset_scale, bool(self.remove_center))  # fmt: skip
        if self.center_feature_scale:
            cfs = F.linear(x1, self.center_feature_scale_proj_weight, self.center_feature_scale_proj_bias).sigmoid()
            cfs = cfs[..., None].repeat(1, 1, 1, 1, self.channels // self.group).flatten(-2)
            x = x * (1 - cfs) + x_proj * cfs
        return self.output_proj(x)


class MLP(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class InternImageLayer(nn.Module):
    """InternImage's block: ``x + dcn(norm1(x))``, then ``x + mlp(norm2(x))``, channels-last."""

    def __init__(self, c: int, **dcn) -> None:
        super().__init__()
        self.norm1, self.dcn = nn.LayerNorm(c), InternDCN(c, **dcn)
        self.norm2, self.mlp = nn.LayerNorm(c), MLP(c)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.dcn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyInternImage(nn.Module):
    """A stem to stride 4, a stage of ``depth`` InternImage blocks, a downsampling 3x3 stride-2
    conv and a second stage (when ``second_stage``), a classifier."""

    def __init__(self, c: int = 16, depth: int = 2, second_stage: bool = False, classes: int = 10, **dcn) -> None:
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.GELU(), nn.Conv2d(c, c, 3, 2, 1))
        self.levels = nn.ModuleList([nn.ModuleList([InternImageLayer(c, **dcn) for _ in range(depth)])])
        if second_stage:
            self.downsample = nn.Conv2d(c, c, 3, 2, 1)
            self.levels.append(nn.ModuleList([InternImageLayer(c, **dcn) for _ in range(depth)]))
        self.head = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).permute(0, 2, 3, 1)
        for i, blocks in enumerate(self.levels):
            if i:
                x = self.downsample(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
            for blk in blocks:
                x = blk(x)
        return self.head(x.mean(dim=(1, 2)))


class FlashDCN(nn.Module):
    """FlashInternImage's ``DCNv4``: tokens ``(N, L, C)`` and ``shape``."""

    def __init__(self, channels, kernel_size=3, stride=1, pad=1, dilation=1, group=4, offset_scale=1.0,
                 dw_kernel_size=None, remove_center=False, without_pointwise=False) -> None:  # fmt: skip
        super().__init__()
        self.channels, self.kernel_size, self.stride, self.pad, self.dilation = channels, kernel_size, stride, pad, dilation
        self.group, self.group_channels, self.offset_scale = group, channels // group, offset_scale
        self.dw_kernel_size, self.remove_center, self.without_pointwise = dw_kernel_size, int(remove_center), without_pointwise
        self.K = group * (kernel_size * kernel_size - self.remove_center)
        if dw_kernel_size is not None:
            self.offset_mask_dw = nn.Conv2d(channels, channels, dw_kernel_size, 1, (dw_kernel_size - 1) // 2, groups=channels)
        self.offset_mask = nn.Linear(channels, int(math.ceil(self.K * 3 / 8) * 8))
        if not without_pointwise:
            self.value_proj = nn.Linear(channels, channels)
            self.output_proj = nn.Linear(channels, channels)

    def forward(self, input: Tensor, shape=None) -> Tensor:
        n, length, c = input.shape
        h, w = shape if shape is not None else (int(length**0.5),) * 2
        x = input if self.without_pointwise else self.value_proj(input)
        x = x.reshape(n, h, w, -1)
        om_in = input
        if self.dw_kernel_size is not None:
            om_in = self.offset_mask_dw(input.view(n, h, w, c).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).reshape(n, length, c)
        om = self.offset_mask(om_in).reshape(n, h, w, -1)
        p = self.K // self.group
        per_group = om[..., : self.K * 3].reshape(n, h, w, self.group, 3 * p)
        offset = per_group[..., : 2 * p].reshape(n, h, w, -1)
        mask = per_group[..., 2 * p :].reshape(n, h, w, -1)
        x = interned_core(x, offset, mask, self.kernel_size, self.stride, self.pad, self.dilation, self.group,
                          self.offset_scale, bool(self.remove_center)).reshape(n, length, -1)  # fmt: skip
        return x if self.without_pointwise else self.output_proj(x)


class FlashBlock(nn.Module):
    def __init__(self, c: int, **dcn) -> None:
        super().__init__()
        self.norm1, self.dcn = nn.LayerNorm(c), FlashDCN(c, **dcn)
        self.norm2, self.mlp = nn.LayerNorm(c), MLP(c)

    def forward(self, x: Tensor, shape: tuple[int, int]) -> Tensor:
        x = x + self.dcn(self.norm1(x), shape)
        return x + self.mlp(self.norm2(x))


class TinyFlashInternImage(nn.Module):
    """Stem to stride 4, tokens, ``depth`` DCNv4 blocks (shape passed as an argument), a classifier."""

    def __init__(self, c: int = 16, depth: int = 2, classes: int = 10, **dcn) -> None:
        super().__init__()
        self.patch_embed = nn.Sequential(nn.Conv2d(3, c, 3, 2, 1), nn.GELU(), nn.Conv2d(c, c, 3, 2, 1))
        self.blocks = nn.ModuleList([FlashBlock(c, **dcn) for _ in range(depth)])
        self.head = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x)
        h, w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        for blk in self.blocks:
            x = blk(x, (h, w))
        return self.head(x.mean(dim=1))


# ---------------------------------------------------------------- mmcv and detectron2


class PackedDeformConv(nn.Module):
    """mmcv's ``DeformConv2dPack`` / ``ModulatedDeformConv2dPack``: ``conv_offset`` beside the
    weights; modulated: ``o1, o2, mask = chunk(conv_offset(x), 3)``, offset ``cat(o1, o2)``,
    ``mask.sigmoid()``. mmcv's compiled op samples (stood in for by the pure-PyTorch op)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1, dilation: int = 1,
                 deform_groups: int = 1, modulated: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.kernel_size, self.stride = (k, k), (stride, stride)
        self.padding, self.dilation = (padding, padding), (dilation, dilation)
        self.deform_groups, self.modulated = deform_groups, modulated
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.conv_offset = nn.Conv2d(cin, (3 if modulated else 2) * deform_groups * k * k, k, stride, padding, dilation)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv_offset(x)
        if self.modulated:
            o1, o2, mask = torch.chunk(out, 3, dim=1)
            offset, mask = torch.cat((o1, o2), dim=1), torch.sigmoid(mask)
        else:
            offset, mask = out, None
        return pure_deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)


class MMDetNet(nn.Module):
    """An mmdetection-style backbone piece: a stem, three stacked pack layers with BN/ReLU."""

    def __init__(self, c: int = 8, modulated: bool = True, deform_groups: int = 1) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.layers = nn.ModuleList(
            [PackedDeformConv(c, c, deform_groups=deform_groups, modulated=modulated) for _ in range(3)]
        )
        self.norms = nn.ModuleList([nn.BatchNorm2d(c) for _ in range(3)])
        self.head = nn.Linear(c, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            x = torch.relu(norm(layer(x)))
        return self.head(x.mean(dim=(2, 3)))


class D2DeformConv(nn.Module):
    """detectron2's ``DeformConv``: ``forward(x, offset)``; its compiled op samples."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, padding: int = 1, dilation: int = 1,
                 deformable_groups: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.kernel_size, self.stride = (k, k), (stride, stride)
        self.padding, self.dilation = (padding, padding), (dilation, dilation)
        self.deformable_groups = deformable_groups
        self.weight = nn.Parameter(torch.randn(cout, cin, k, k) / math.sqrt(cin * k * k))

    def forward(self, x: Tensor, offset: Tensor) -> Tensor:
        return pure_deform_conv2d(x, offset, self.weight, None, self.stride, self.padding, self.dilation)


class D2ModulatedDeformConv(D2DeformConv):
    """detectron2's ``ModulatedDeformConv``: ``forward(x, offset, mask)``."""

    def forward(self, x: Tensor, offset: Tensor, mask: Tensor) -> Tensor:
        return pure_deform_conv2d(x, offset, self.weight, None, self.stride, self.padding, self.dilation, mask)


class DeformBottleneckBlock(nn.Module):
    """detectron2's block: 1x1, a 3x3 deformable conv fed by a sibling ``conv2_offset``, 1x1, and
    a residual; modulated: ``offset_x, offset_y, mask = chunk(3)``, ``cat``, ``sigmoid``."""

    def __init__(self, c: int, mid: int, modulated: bool = True, deformable_groups: int = 1) -> None:
        super().__init__()
        self.modulated = modulated
        self.conv1 = nn.Conv2d(c, mid, 1)
        self.conv2_offset = nn.Conv2d(mid, (3 if modulated else 2) * deformable_groups * 9, 3, padding=1)
        nn.init.normal_(self.conv2_offset.weight, std=0.05)
        conv = D2ModulatedDeformConv if modulated else D2DeformConv
        self.conv2 = conv(mid, mid, deformable_groups=deformable_groups)
        self.conv3 = nn.Conv2d(mid, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.conv1(x))
        if self.modulated:
            offset_mask = self.conv2_offset(out)
            offset_x, offset_y, mask = torch.chunk(offset_mask, 3, dim=1)
            out = self.conv2(out, torch.cat((offset_x, offset_y), dim=1), mask.sigmoid())
        else:
            out = self.conv2(out, self.conv2_offset(out))
        out = self.conv3(torch.relu(out))
        return torch.relu(out + x)


class Detectron2Net(nn.Module):
    def __init__(self, c: int = 8, modulated: bool = True) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.res = nn.Sequential(*[DeformBottleneckBlock(c, c, modulated) for _ in range(3)])
        self.head = nn.Linear(c, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.res(self.stem(x)).mean(dim=(2, 3)))


def randomise_offsets(model: nn.Module, std: float = 0.3, seed: int = 0) -> nn.Module:
    """Give every offset/mask branch random weights (they start at zero, as published), so the
    samples move and the weights vary."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # InternImage's centre-feature blend, where a block has it
        for name, param in model.named_parameters():
            if name.endswith("center_feature_scale_proj_weight"):
                param.copy_(std * torch.randn(param.shape, generator=gen))
    for name, mod in model.named_modules():
        last = name.rsplit(".", 1)[-1]
        if last in ("offset", "mask", "offset_mask", "conv_offset", "conv2_offset") and hasattr(mod, "weight"):
            with torch.no_grad():
                mod.weight.copy_(std * torch.randn(mod.weight.shape, generator=gen))
                mod.bias.copy_(std * torch.randn(mod.bias.shape, generator=gen))
    return model


# ---------------------------------------------------------------- factories (for --model)


def intern_image() -> nn.Module:
    """InternImage-style: RGB 32x32 (any multiple of 4), two DCNv3 blocks of 4 groups at stride 4."""
    torch.manual_seed(0)
    return randomise_offsets(TinyInternImage(c=16, depth=2), std=0.3).eval()


def flash_intern_image() -> nn.Module:
    """FlashInternImage-style: RGB 32x32, two DCNv4 blocks (tokens, 4 groups, depthwise offset conv)."""
    torch.manual_seed(0)
    return randomise_offsets(TinyFlashInternImage(c=16, depth=2, dw_kernel_size=3), std=0.3).eval()


def mmdet_dcn() -> nn.Module:
    """mmdetection-style: grey 28x28, three stacked ModulatedDeformConv2dPack-like layers."""
    torch.manual_seed(0)
    return randomise_offsets(MMDetNet(), std=0.3).eval()


def detectron2_dcn() -> nn.Module:
    """detectron2-style: grey 28x28, three DeformBottleneckBlocks (modulated)."""
    torch.manual_seed(0)
    return randomise_offsets(Detectron2Net(), std=0.3).eval()
