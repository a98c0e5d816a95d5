from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_align

from models.ops.roi_pool import DeformRoIPool, bin_geometry, deform_roi_pool


def _case(seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(2, 5, 13, 11, generator=g, dtype=dtype)
    # boxes in image coordinates (scale 1/2): inside, touching the border, partly outside, tiny
    rois = torch.tensor(
        [[0, 2.0, 3.0, 15.0, 20.0], [1, 0.0, 0.0, 22.0, 26.0], [0, 14.0, 18.0, 30.0, 34.0], [1, 5.3, 7.1, 6.2, 7.9]],
        dtype=dtype,
    )
    return feats, rois


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("output_size", [3, (2, 4)])
def test_zero_offsets_equal_roi_align_outputs_and_gradients(aligned, output_size):
    feats, rois = _case()
    a = feats.clone().requires_grad_(True)
    b = feats.clone().requires_grad_(True)
    ours = deform_roi_pool(a, rois, None, output_size, 0.5, 2, aligned=aligned)
    ref = roi_align(b, rois, output_size, 0.5, 2, aligned)
    assert torch.allclose(ours, ref, atol=1e-5)
    w = torch.randn_like(ref)
    (ours * w).sum().backward()
    (ref * w).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)
    zeros = torch.zeros(rois.shape[0], 2, *((output_size,) * 2 if isinstance(output_size, int) else output_size))
    assert torch.allclose(deform_roi_pool(feats, rois, zeros, output_size, 0.5, 2, aligned=aligned), ref, atol=1e-5)


def test_each_moved_bin_equals_roi_align_of_its_shifted_box():
    feats, rois = _case(1)
    g = torch.Generator().manual_seed(2)
    offsets = torch.randn(rois.shape[0], 2, 3, 3, generator=g) * 3  # up to ~1 RoI size with gamma 0.1
    gamma, scale = 0.1, 0.5
    ours = deform_roi_pool(feats, rois, offsets, 3, scale, 2, gamma)
    w, h = rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]
    for r in range(rois.shape[0]):
        for i in range(3):
            for j in range(3):
                dy, dx = gamma * offsets[r, 0, i, j] * h[r], gamma * offsets[r, 1, i, j] * w[r]
                x1 = rois[r, 1] + j * w[r] / 3 + dx
                y1 = rois[r, 2] + i * h[r] / 3 + dy
                box = torch.tensor([[rois[r, 0], x1, y1, x1 + w[r] / 3, y1 + h[r] / 3]])
                ref = roi_align(feats, box, 1, scale, 2, True)  # a 1x1-output RoI per bin
                assert torch.allclose(ours[r, :, i, j], ref[0, :, 0, 0], atol=1e-5), (r, i, j)


def test_gradients_match_finite_differences():
    feats, rois = _case(3, torch.float64)
    feats = feats[:, :2].contiguous().requires_grad_(True)
    offsets = (torch.randn(rois.shape[0], 2, 2, 2, dtype=torch.float64) * 0.7).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f, o: deform_roi_pool(f, rois, o, 2, 0.5, 2, 0.1), (feats, offsets), eps=1e-6, atol=1e-5
    )


def test_layout_x_only_shift_moves_bins_sideways():
    feats = torch.zeros(1, 1, 8, 16)
    feats[0, 0, :, 8:] = 1.0  # bright on the right
    rois = torch.tensor([[0, 2.0, 2.0, 8.0, 6.0]])
    offsets = torch.zeros(1, 2, 2, 2)
    offsets[:, 1] = 10.0  # x: one RoI width (gamma 0.1) to the right
    top0, left0, _, _ = bin_geometry(rois, 2, 1.0)
    top1, left1, _, _ = bin_geometry(rois, 2, 1.0, offsets)
    assert torch.equal(top1, top0)
    assert torch.allclose(left1 - left0, torch.full_like(left0, 6.0))
    plain = deform_roi_pool(feats, rois, None, 2, 1.0)
    moved = deform_roi_pool(feats, rois, offsets, 2, 1.0)
    assert plain.max() == 0 and moved.min() > 0.5  # the bins slid onto the bright right half
    offsets_y = offsets.flip(1)  # the same numbers as a y shift move the bins down instead
    assert torch.allclose(bin_geometry(rois, 2, 1.0, offsets_y)[0] - top0, torch.full_like(top0, 4.0))


def test_module_starts_as_plain_roi_align():
    feats, rois = _case()
    pool = DeformRoIPool(5, 3, 0.5)
    assert torch.allclose(pool(feats, rois), roi_align(feats, rois, 3, 0.5, 2, True), atol=1e-5)
    assert pool.offsets(feats, rois).abs().max() == 0
