"""Scene statistics: which digit a unit lies in, own-digit fractions by hand, unit picks."""

from __future__ import annotations

import math

import pytest
import torch

import viz
from models import SceneNet
from viz.scene_stats import RegionStats, own_digit_fraction, pick_units, unit_digits, unit_regions

TINY = (8, 8, 8, 8, 8)


@pytest.fixture(scope="module")
def regular_cap():
    return viz.capture(SceneNet("regular", widths=TINY).eval(), torch.rand(2, 1, 64, 64))


def test_unit_digits_follow_the_boxes(regular_cap):
    # unit (i, j) sits at pixel (4i + 1.5, 4j + 1.5); box (x0, y0, x1, y1) covers centres x0 .. x1 - 1
    boxes = torch.tensor([[0.0, 0.0, 12.0, 12.0], [8.0, 8.0, 40.0, 40.0]])
    d = unit_digits(regular_cap, boxes)
    assert d.shape == (16, 16)
    assert d[0, 0] == 0 and d[2, 2] == 0  # (9.5, 9.5): in both boxes, the smaller wins
    assert d[3, 3] == 1 and d[9, 9] == 1  # 37.5 < 39.5
    assert d[10, 10] == -1 and d[0, 5] == -1
    regions = unit_regions(regular_cap, boxes, torch.tensor([12.0, 32.0]))
    assert regions[0, 0] == 0 and regions[5, 5] == 1 and regions[15, 15] == 3


def test_own_digit_fraction_of_the_regular_lattice_by_hand(regular_cap):
    # A box holding exactly the lattice offsets -1..1 (4 px steps) around unit (8, 8) at pixel (33.5, 33.5):
    # paths per offset along one axis are 1 3 6 7 6 3 1, so (6 + 7 + 6)^2 of the 729 paths land inside.
    boxes = torch.tensor([[29.0, 29.0, 39.0, 39.0]])  # centres 29..38 hold 29.5, 33.5, 37.5
    which, frac = own_digit_fraction(regular_cap, boxes)
    d = unit_digits(regular_cap, boxes)
    units = (d >= 0).nonzero().tolist()
    assert units == [[i, j] for i in (7, 8, 9) for j in (7, 8, 9)]  # pixels 29.5, 33.5, 37.5
    assert which.tolist() == [0] * 9
    assert float(frac[units.index([8, 8])]) == pytest.approx(19 * 19 / 729)
    # unit (7, 7) at 29.5: lattice offsets 0..2 inside -> (7 + 6 + 3)^2
    assert float(frac[units.index([7, 7])]) == pytest.approx(16 * 16 / 729)


def test_pick_units_and_region_stats(regular_cap):
    boxes = torch.tensor([[2.0, 2.0, 14.0, 14.0], [20.0, 20.0, 62.0, 62.0]])
    heights = torch.tensor([12.0, 42.0])
    picks = pick_units(regular_cap, boxes, heights)
    d = unit_digits(regular_cap, boxes)
    assert d[picks["small"]] == 0 and d[picks["large"]] == 1 and d[picks["background"]] == -1
    bg = picks["background"]
    assert 0 < bg[0] < 15 and 0 < bg[1] < 15  # off the outermost ring
    only_large = pick_units(regular_cap, boxes[1:], heights[1:])
    assert only_large["small"] is None and only_large["large"] is not None
    st = RegionStats.empty()
    dil = viz.effective_dilation(regular_cap)
    st.add(dil, unit_regions(regular_cap, boxes, heights))
    mean, std, n = st.mean_std("large")
    assert mean == pytest.approx(4.0) and std == pytest.approx(0.0) and n == int((d == 1).sum())
    assert math.isnan(st.mean_std("medium")[0]) and st.mean_std("medium")[2] == 0


def test_capture_select_keeps_the_chosen_images():
    torch.manual_seed(0)
    model = SceneNet("deform2", widths=TINY).eval()
    for name, p in model.named_parameters():
        if "offset_conv" in name:
            torch.nn.init.normal_(p, std=0.5)
    x = torch.rand(3, 1, 32, 32)
    cap = viz.capture(model, x)
    sub = cap.select([2, 0])
    one = viz.capture(model, x[2:3])
    assert torch.allclose(sub.layers[1].offsets_yx[0], one.layers[1].offsets_yx[0], atol=1e-6)
    assert torch.allclose(viz.backproject(sub, (3, 4)).x, viz.backproject(cap, (3, 4), image=2).x)
    assert torch.equal(sub.images[1], x[0])


def test_ink_boxes_find_separate_digits_and_join_close_strokes():
    from viz.scene_stats import ink_boxes

    img = torch.zeros(64, 64)
    img[5:15, 5:8] = 1.0  # a small bar
    img[30:60, 20:24] = 1.0  # a tall stroke ...
    img[30:33, 26:40] = 0.8  # ... and a second stroke 2 px away: the same digit
    img[50:52, 50:52] = 1.0  # 4 pixels: noise, dropped
    boxes = ink_boxes(img)
    assert boxes.tolist() == [[5.0, 5.0, 8.0, 15.0], [20.0, 30.0, 40.0, 60.0]]
    assert ink_boxes(torch.zeros(1, 64, 64)).shape == (0, 4)


def test_overlapping_boxes_names_the_digits_a_rescaled_one_runs_into():
    from viz.scene_stats import overlapping_boxes

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [9.0, 2.0, 20.0, 8.0], [30.0, 30.0, 40.0, 40.0], [10.0, 0.0, 12.0, 5.0]])
    assert overlapping_boxes(boxes, 0) == [1]  # box 3 only touches box 0's edge
    assert overlapping_boxes(boxes, 2) == []
