"""Our DCNv3 core equals the formula (a float64 loop), its gradients, and torchvision's op."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from models.ops.dcnv3 import DCNv3, dcnv3_core, dcnv3_locations


def bilinear(img: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``img`` (H, W, C) read at (y, x) (0-d tensors, differentiable), zero outside: the
    operator's rule written out."""
    h, w, _ = img.shape
    y0, x0 = math.floor(float(y.detach())), math.floor(float(x.detach()))
    out = torch.zeros(img.shape[-1], dtype=img.dtype)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out = out + wy * wx * img[yy, xx]
    return out


def loop_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center):
    """The issue's formula, one sample at a time: point (i, j) of group g at unit (ho, wo) reads
    x = wo*stride - pad + c + s*(i*dil - c + dx), y = ho*stride - pad + c + s*(j*dil - c + dy)."""
    n, h, w, ch = value.shape
    _, ho_n, wo_n, _ = offset.shape
    cg = ch // group
    c = dil * (k - 1) // 2
    pts = [(i, j) for i in range(k) for j in range(k)]
    if remove_center:
        del pts[len(pts) // 2]
    p_n = len(pts)
    out = torch.zeros(n, ho_n, wo_n, ch, dtype=value.dtype)
    for b in range(n):
        for ho in range(ho_n):
            for wo in range(wo_n):
                for g in range(group):
                    acc = torch.zeros(cg, dtype=value.dtype)
                    for p, (i, j) in enumerate(pts):
                        dx = offset[b, ho, wo, (g * p_n + p) * 2]
                        dy = offset[b, ho, wo, (g * p_n + p) * 2 + 1]
                        x = wo * stride - pad + c + scale * (i * dil - c + dx)
                        y = ho * stride - pad + c + scale * (j * dil - c + dy)
                        acc = acc + mask[b, ho, wo, g * p_n + p] * bilinear(value[b, :, :, g * cg : (g + 1) * cg], y, x)
                    out[b, ho, wo, g * cg : (g + 1) * cg] = acc
    return out


def out_size(size, k, stride, pad, dil):
    return (size + 2 * pad - dil * (k - 1) - 1) // stride + 1


def random_inputs(n, h, w, group, cg, k, stride, pad, dil, remove_center, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    p = k * k - int(remove_center)
    ho, wo = out_size(h, k, stride, pad, dil), out_size(w, k, stride, pad, dil)
    value = torch.randn(n, h, w, group * cg, generator=gen, dtype=dtype)
    offset = 1.5 * torch.randn(n, ho, wo, group * p * 2, generator=gen, dtype=dtype)
    mask = torch.randn(n, ho, wo, group * p, generator=gen, dtype=dtype)
    return value, offset, mask


@pytest.mark.parametrize(
    ("k", "stride", "pad", "dil", "group", "scale", "remove_center", "h", "w"),
    [
        (3, 1, 1, 1, 2, 1.0, False, 5, 7),
        (3, 1, 1, 1, 2, 0.5, True, 6, 4),
        (3, 2, 1, 1, 1, 2.0, False, 7, 6),
        (5, 1, 4, 2, 3, 1.0, True, 6, 5),
        (3, 1, 0, 1, 1, 0.75, False, 5, 5),
    ],
)
def test_core_equals_the_formula(k, stride, pad, dil, group, scale, remove_center, h, w):
    value, offset, mask = random_inputs(2, h, w, group, 3, k, stride, pad, dil, remove_center)
    ours = dcnv3_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center)
    want = loop_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10)


def test_gradients_equal_the_formula():
    k, stride, pad, dil, group, scale = 3, 1, 1, 1, 2, 0.5
    value, offset, mask = random_inputs(1, 4, 5, group, 2, k, stride, pad, dil, False, seed=3)
    grads = []
    for fn in (dcnv3_core, loop_core):
        leaves = [t.clone().requires_grad_(True) for t in (value, offset, mask)]
        out = fn(*leaves, k, stride, pad, dil, group, scale, False)
        weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
        grads.append(torch.autograd.grad((out * weights).sum(), leaves))
    for ours, want in zip(*grads, strict=True):
        torch.testing.assert_close(ours, want, rtol=1e-8, atol=1e-10)


def as_torchvision(value, offset, mask, k, stride, pad, dil, group, scale, remove_center):
    """The same computation with torchvision's op: depthwise weights of ones, offset groups = G,
    dilation s*dil, padding pad + c*(s-1), offsets s*d with x/y swapped and points reordered
    (x-major -> row-major); a removed centre is a zero mask."""
    n, h, w, ch = value.shape
    _, ho, wo, _ = offset.shape
    c = dil * (k - 1) // 2
    kk = k * k
    p = kk - int(remove_center)
    taps = [(i, j) for i in range(k) for j in range(k)]  # ours, x-major: (column i, row j)
    if remove_center:
        del taps[kk // 2]
    off_tv = offset.new_zeros(n, group, kk, 2, ho, wo)
    mask_tv = mask.new_zeros(n, group, kk, ho, wo)
    off = offset.view(n, ho, wo, group, p, 2).permute(0, 3, 4, 5, 1, 2)  # (N, G, P, 2, Ho, Wo)
    m = mask.view(n, ho, wo, group, p).permute(0, 3, 4, 1, 2)
    for q, (i, j) in enumerate(taps):
        t = j * k + i  # torchvision: row-major
        off_tv[:, :, t, 0] = scale * off[:, :, q, 1]
        off_tv[:, :, t, 1] = scale * off[:, :, q, 0]
        mask_tv[:, :, t] = m[:, :, q]
    weight = torch.ones(ch, 1, k, k, dtype=value.dtype)
    out = tv_deform_conv2d(
        value.permute(0, 3, 1, 2), off_tv.reshape(n, -1, ho, wo), weight, None, (stride, stride),
        (pad + c * (int(scale) - 1),) * 2, (int(scale) * dil,) * 2, mask_tv.reshape(n, -1, ho, wo),
    )  # fmt: skip
    return out.permute(0, 2, 3, 1)


@pytest.mark.parametrize(("scale", "remove_center", "group"), [(1.0, False, 2), (2.0, False, 1), (2.0, True, 3)])
def test_integer_scale_equals_torchvision(scale, remove_center, group):
    k, stride, pad, dil = 3, 1, 1, 1
    value, offset, mask = random_inputs(2, 6, 5, group, 2, k, stride, pad, dil, remove_center, seed=7, dtype=torch.float32)
    ours = dcnv3_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center)
    tv = as_torchvision(value, offset, mask, k, stride, pad, dil, group, scale, remove_center)
    torch.testing.assert_close(ours, tv, rtol=1e-4, atol=1e-4)


def test_unit_offset_moves_one_sample_along_x_then_y():
    """A unit dx on (group 1, point 5) moves that sample one step right, nothing else; dy moves it down."""
    k, group = 3, 2
    offset = torch.zeros(1, 4, 6, group * 9 * 2)
    base = dcnv3_locations(offset, k, 1, 1, 1, group)
    moved = offset.clone()
    moved[..., (1 * 9 + 5) * 2] = 1.0
    loc = dcnv3_locations(moved, k, 1, 1, 1, group)
    diff = loc - base
    assert torch.equal(diff[:, :, :, 1, 5], torch.tensor([0.0, 1.0]).expand(1, 4, 6, 2))
    diff[:, :, :, 1, 5] = 0
    assert not diff.any()
    moved = offset.clone()
    moved[..., 0 * 2 + 1] = 1.0  # dy of group 0, point 0
    assert torch.equal((dcnv3_locations(moved, k, 1, 1, 1, group) - base)[0, 0, 0, 0, 0], torch.tensor([1.0, 0.0]))


def test_point_numbering_is_x_major():
    """Point 1 lies below point 0 (same column): the column index is the slow one."""
    loc = dcnv3_locations(torch.zeros(1, 1, 1, 18), 3, 1, 1, 1, 1)[0, 0, 0, 0]
    assert loc[:3].tolist() == [[-1.0, -1.0], [0.0, -1.0], [1.0, -1.0]]
    assert loc[3].tolist() == [-1.0, 0.0]


@settings(max_examples=25, deadline=None)
@given(
    k=st.sampled_from([3, 5]),
    stride=st.integers(1, 2),
    dil=st.integers(1, 2),
    group=st.integers(1, 3),
    scale=st.sampled_from([0.5, 1.0, 1.5, 2.0]),
    remove_center=st.booleans(),
    h=st.integers(5, 9),
    w=st.integers(5, 9),
    seed=st.integers(0, 1000),
)
def test_random_configurations_equal_the_formula(k, stride, dil, group, scale, remove_center, h, w, seed):
    pad = dil * (k - 1) // 2
    value, offset, mask = random_inputs(1, h, w, group, 2, k, stride, pad, dil, remove_center, seed=seed)
    ours = dcnv3_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center)
    torch.testing.assert_close(
        ours, loop_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center), rtol=1e-9, atol=1e-9
    )


def test_module_is_channels_last_and_starts_regular():
    """At initialisation (zero offset and mask layers) the block samples the regular grid with
    equal weights 1/P: a depthwise 3x3 mean of input_proj(x), then output_proj."""
    torch.manual_seed(0)
    block = DCNv3(channels=8, group=2, out_channels=12).double()
    x = torch.randn(2, 5, 6, 8, dtype=torch.float64)
    y = block(x)
    assert y.shape == (2, 5, 6, 12)
    v = block.input_proj(x).permute(0, 3, 1, 2)
    mean3 = torch.nn.functional.conv2d(v, torch.full((8, 1, 3, 3), 1 / 9, dtype=torch.float64), padding=1, groups=8)
    torch.testing.assert_close(y, block.output_proj(mean3.permute(0, 2, 3, 1)))


def test_module_backward_reaches_offsets():
    torch.manual_seed(0)
    block = DCNv3(channels=8, group=2, center_feature_scale=True)
    torch.nn.init.normal_(block.offset.weight, std=0.1)
    block(torch.randn(1, 6, 6, 8)).square().sum().backward()
    assert block.offset.weight.grad.abs().sum() > 0
    assert block.mask.weight.grad.abs().sum() > 0
    assert block.center_feature_scale_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("scale", "remove_center", "stride"), [(1.0, False, 1), (0.5, True, 1), (1.5, False, 2)])
def test_regular_sample_equals_the_core_with_zero_offsets(scale, remove_center, stride):
    from models.geometry import dcnv3_grid_yx
    from models.ops.dcnv3 import regular_sample

    k, pad, dil, group = 3, 1, 1, 2
    value, offset, mask = random_inputs(1, 7, 6, group, 2, k, stride, pad, dil, remove_center, seed=2)
    p = 9 - int(remove_center)
    weights = torch.rand(group, p, dtype=torch.float64)
    want = dcnv3_core(value, torch.zeros_like(offset), weights.flatten().expand_as(mask), k, stride, pad, dil, group, scale, remove_center)
    grid = dcnv3_grid_yx(k, pad, dil, scale, remove_center, torch.float64)
    got = regular_sample(value, grid, weights, stride, tuple(offset.shape[1:3]))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
