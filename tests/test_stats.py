"""Sampling density and effective dilation."""

from __future__ import annotations

import pytest
import torch

import viz
from models import build_model
from tests.stack_model import Stack, constant_offsets


def test_regular_effective_dilation_is_two_pixels_everywhere():
    cap = viz.capture(build_model("regular").eval(), torch.rand(1, 1, 28, 28))
    for layer in range(3):
        d = viz.effective_dilation(cap, layer=layer)
        assert d.shape == (14, 14)
        assert torch.allclose(d, torch.full((14, 14), 2.0))


def test_effective_dilation_of_a_stretched_filter_by_hand():
    # Top layer: taps of row i shifted by (i - 1) rows and columns by 2 * (j - 1): rows are
    # 2 apart, columns 3 apart -> 6 horizontal pairs of length 3, 6 vertical of length 2.
    size = (7, 9)
    field = torch.zeros(9, 2, *size)
    for k in range(9):
        i, j = divmod(k, 3)
        field[k, 0] = i - 1
        field[k, 1] = 2 * (j - 1)
    model = Stack([constant_offsets(0, 0, size), field.view(18, *size)], pixel_stride=(1.0, 2.0))
    cap = viz.capture(model, torch.rand(1, 1, *size))
    d = viz.effective_dilation(cap)
    # in pixels: horizontal pairs 3 units * 2 px = 6, vertical 2 units * 1 px = 2
    assert torch.allclose(d, torch.full(size, (6 * 6.0 + 6 * 2.0) / 12))
    assert torch.allclose(viz.effective_dilation(cap, layer=0), torch.full(size, (6 * 2.0 + 6 * 1.0) / 12))


def test_on_digit_units_and_summary():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10:18, 12:16] = 1.0
    cap = viz.capture(build_model("regular").eval(), image)
    on = viz.on_digit_units(cap)
    # units whose centre (2i + 0.5, 2j + 0.5) lies in rows 10..17, columns 12..15
    assert on.nonzero().tolist() == [[i, j] for i in range(5, 9) for j in range(6, 8)]
    summary = viz.dilation_summary(cap)
    assert summary == {"digit": 2.0, "background": 2.0, "all": 2.0}


def test_sampling_density_counts_points():
    cap = viz.capture(build_model("regular").eval(), torch.rand(1, 1, 28, 28))
    one = viz.sampling_density(cap, units=torch.tensor([[7, 7]]))
    assert one.shape == (28, 28)
    assert float(one.sum()) == pytest.approx(729.0)
    # the regular lattice: 7x7 sites at 2 px spacing around unit (7, 7) at pixel (14.5, 14.5);
    # half-pixel positions split mass over 4 pixels, so the sampled area spans rows 8..21
    rows = one.sum(1).nonzero().flatten()
    assert rows.min() == 8 and rows.max() == 21
    every = viz.sampling_density(cap, units="all")
    assert float(every.sum()) < 196 * 729  # padding samples of border units are off the image
    empty = viz.sampling_density(cap, units=torch.zeros(14, 14, dtype=torch.bool))
    assert float(empty.sum()) == 0.0


def test_layer_out_of_range():
    cap = viz.capture(build_model("regular").eval(), torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="out of range"):
        viz.effective_dilation(cap, layer=5)
