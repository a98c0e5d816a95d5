"""Our deformable conv equals torchvision's, values and every gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from models.ops.deform_conv import DeformConv2d, deform_conv2d, output_size, sampling_positions


def _inputs(stride, dilation, modulated, groups=1, offset_groups=1, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    n, c_in, c_out, h, w = 2, 4 * groups, 6 * groups, 9, 11
    x = torch.randn(n, c_in, h, w, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c_in // groups, 3, 3, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    ho, wo = output_size((h, w), 3, stride, 1, dilation)
    # Offsets up to several pixels: many samples fall outside the 9x11 input.
    offset = 4 * torch.randn(n, 2 * offset_groups * 9, ho, wo, generator=g, dtype=dtype)
    mask = torch.rand(n, offset_groups * 9, ho, wo, generator=g, dtype=dtype) if modulated else None
    return x, offset, weight, bias, mask


def _run(fn, tensors, stride, dilation):
    x, offset, weight, bias, mask = [t.clone().requires_grad_() if t is not None else None for t in tensors]
    out = fn(x, offset, weight, bias, stride=stride, padding=1, dilation=dilation, mask=mask)
    # A non-uniform upstream gradient, so every element's gradient is checked.
    upstream = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    leaves = [t for t in (x, offset, weight, bias, mask) if t is not None]
    grads = torch.autograd.grad((out * upstream).sum(), leaves)
    return [out.detach(), *grads]


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("modulated", [False, True])
def test_matches_torchvision_values_and_gradients(stride, dilation, modulated):
    tensors = _inputs(stride, dilation, modulated)
    ours = _run(deform_conv2d, tensors, stride, dilation)
    ref = _run(tv_deform_conv2d, tensors, stride, dilation)
    names = ["output", "grad input", "grad offset", "grad weight", "grad bias", "grad mask"]
    assert len(ours) == len(ref) == (6 if modulated else 5)
    for name, a, b in zip(names, ours, ref, strict=False):
        assert a.shape == b.shape, name
        assert _rel_err(a, b) < 1e-4, f"{name}: relative error {_rel_err(a, b):.2e}"


def test_matches_torchvision_with_groups_and_offset_groups_in_double():
    tensors = _inputs(1, 1, True, groups=2, offset_groups=2, dtype=torch.float64)
    ours = _run(deform_conv2d, tensors, 1, 1)
    ref = _run(tv_deform_conv2d, tensors, 1, 1)
    for a, b in zip(ours, ref, strict=True):
        assert _rel_err(a, b) < 1e-10


def test_offset_layout_row_shift_first():
    # One tap moved one row down must read the pixel one row below: channel 2k is dy.
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 3, 2] = 1.0  # row 3, column 2
    weight = torch.zeros(1, 1, 3, 3)
    weight[0, 0, 1, 1] = 1.0  # centre tap, k = 4
    offset = torch.zeros(1, 18, 5, 5)
    offset[0, 2 * 4] = 1.0  # dy of the centre tap
    out = deform_conv2d(x, offset, weight, padding=1)
    assert out[0, 0, 2, 2] == 1.0  # unit (2, 2) now samples (3, 2)
    offset = torch.zeros(1, 18, 5, 5)
    offset[0, 2 * 4 + 1] = 1.0  # dx instead: unit (3, 1) samples (3, 2)
    out = deform_conv2d(x, offset, weight, padding=1)
    assert out[0, 0, 3, 1] == 1.0 and out[0, 0, 2, 2] == 0.0
    assert torch.equal(out, tv_deform_conv2d(x, offset, weight, padding=1))


def test_sampling_positions_zero_offset_is_dilated_grid():
    y, x = sampling_positions(torch.zeros(1, 18, 4, 4), 3, stride=2, padding=1, dilation=2)
    assert y.shape == (1, 1, 9, 4, 4)
    # unit (1, 3): rows 2-1 + {0, 2, 4}; columns 6-1 + {0, 2, 4}; tap k = i*3 + j
    assert y[0, 0, :, 1, 3].tolist() == [1, 1, 1, 3, 3, 3, 5, 5, 5]
    assert x[0, 0, :, 1, 3].tolist() == [5, 7, 9] * 3


def test_fresh_layer_equals_regular_conv():
    torch.manual_seed(0)
    layer = DeformConv2d(3, 5, 3, stride=2, padding=1, dilation=1)
    x = torch.randn(2, 3, 10, 10)
    expected = F.conv2d(x, layer.weight, layer.bias, stride=2, padding=1)
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert torch.count_nonzero(layer.offset_conv.weight) == 0 and torch.count_nonzero(layer.offset_conv.bias) == 0


def test_fresh_modulated_layer_is_half_a_regular_conv():
    torch.manual_seed(0)
    layer = DeformConv2d(3, 5, 3, padding=1, bias=False, modulated=True)
    x = torch.randn(2, 3, 8, 8)
    assert torch.allclose(layer(x), 0.5 * F.conv2d(x, layer.weight, padding=1), atol=1e-5)


def test_module_offsets_train():
    torch.manual_seed(0)
    layer = DeformConv2d(2, 3, 3, padding=1, modulated=True)
    layer(torch.randn(2, 2, 6, 6)).square().sum().backward()
    assert layer.offset_conv.weight.grad.abs().sum() > 0
    assert layer.mask_conv[0].weight.grad.abs().sum() > 0


def test_bad_offset_shape_is_a_clear_error():
    x = torch.randn(1, 2, 6, 6)
    with pytest.raises(ValueError, match="offset shape"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 5), torch.randn(3, 2, 3, 3), padding=1)


@pytest.mark.slow
@pytest.mark.parametrize("groups", [1, 2])
def test_gradcheck_and_double_backward_float64(groups):
    from models.ops.deform_conv import deform_conv2d as ours

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 4 // groups, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True)
    # offsets away from integers: bilinear reading is not differentiable exactly at unit positions
    off = (0.3 + 0.9 * torch.rand(2, 18, 3, 3, generator=g, dtype=torch.float64)).requires_grad_(True)
    mask = torch.rand(2, 9, 3, 3, generator=g, dtype=torch.float64).requires_grad_(True)

    def f(x, off, w, b, mask):
        return ours(x, off, w, b, stride=2, padding=1, mask=mask)

    assert torch.autograd.gradcheck(f, (x, off, w, b, mask), eps=1e-6, atol=1e-5)
    assert torch.autograd.gradgradcheck(lambda x, w: f(x, off, w, b, mask), (x, w), eps=1e-6, atol=1e-5)
