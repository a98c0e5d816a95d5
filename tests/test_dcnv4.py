"""Our DCNv4: the published channel layout of offset_mask, unnormalised weights, DCNv3's formula."""

from __future__ import annotations

import pytest
import torch

from models.ops.dcnv4 import DCNv4, dcnv4_core, offset_mask_channels, split_offset_mask
from tests.test_dcnv3 import loop_core


def test_offset_mask_width_rounds_up_to_eight():
    assert offset_mask_channels(4, 9) == 112  # 108 -> 112
    assert offset_mask_channels(1, 8) == 24
    assert offset_mask_channels(3, 9) == 88  # 81 -> 88


def test_split_reads_per_group_blocks_of_3p():
    """Group g: channels [3P g, 3P g + 2P) are (dx, dy) pairs, the next P its weights; the rest padding."""
    g, p = 3, 9
    om = torch.arange(offset_mask_channels(g, p), dtype=torch.float64).view(1, 1, 1, -1)
    offset, mask = split_offset_mask(om, g, p)
    for grp in range(g):
        for pt in range(p):
            assert offset[0, 0, 0, (grp * p + pt) * 2] == 3 * p * grp + 2 * pt  # dx
            assert offset[0, 0, 0, (grp * p + pt) * 2 + 1] == 3 * p * grp + 2 * pt + 1  # dy
            assert mask[0, 0, 0, grp * p + pt] == 3 * p * grp + 2 * p + pt
    assert mask.max() < 3 * g * p  # padding channels unused


@pytest.mark.parametrize(("scale", "remove_center", "group"), [(1.0, False, 2), (0.5, True, 1), (2.0, False, 3)])
def test_core_equals_the_formula_with_signed_weights(scale, remove_center, group):
    gen = torch.Generator().manual_seed(1)
    k, stride, pad, dil = 3, 1, 1, 1
    p = 9 - int(remove_center)
    value = torch.randn(2, 5, 6, group * 2, generator=gen, dtype=torch.float64)
    om = 1.5 * torch.randn(2, 5, 6, offset_mask_channels(group, p), generator=gen, dtype=torch.float64)
    offset, mask = split_offset_mask(om, group, p)
    assert (mask < 0).any()  # signed weights are used as they are
    ours = dcnv4_core(value, om, k, stride, pad, dil, group, scale, remove_center)
    want = loop_core(value, offset, mask, k, stride, pad, dil, group, scale, remove_center)
    torch.testing.assert_close(ours, want, rtol=1e-10, atol=1e-10)


def test_module_tokens_and_shape():
    torch.manual_seed(0)
    block = DCNv4(channels=32, group=2, dw_kernel_size=3, out_channels=48).double()
    torch.nn.init.normal_(block.offset_mask.weight, std=0.1)
    x = torch.randn(2, 4 * 7, 32, dtype=torch.float64)
    y = block(x, shape=(4, 7))
    assert y.shape == (2, 28, 48)
    # The same computation spelled out: value_proj, dw conv -> offset_mask, core, output_proj.
    v = block.value_proj(x).view(2, 4, 7, 32)
    om_in = block.offset_mask_dw(x.view(2, 4, 7, 32).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    core = dcnv4_core(v, block.offset_mask(om_in), 3, 1, 1, 1, 2, 1.0, False)
    torch.testing.assert_close(y, block.output_proj(core.reshape(2, 28, 32)))


def test_module_starts_with_zero_weights_and_without_pointwise():
    block = DCNv4(channels=16, group=1, without_pointwise=True)
    x = torch.randn(1, 9, 16)
    assert torch.equal(block(x), torch.zeros(1, 9, 16))  # weights start at 0: no sample counts yet
    block.offset_mask.bias.data[18:27] = 1.0  # every point weight 1: a depthwise 3x3 sum
    want = torch.nn.functional.conv2d(
        x.view(1, 3, 3, 16).permute(0, 3, 1, 2), torch.ones(16, 1, 3, 3), padding=1, groups=16
    ).permute(0, 2, 3, 1)
    torch.testing.assert_close(block(x), want.reshape(1, 9, 16))
