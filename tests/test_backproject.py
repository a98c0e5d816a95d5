"""Proof that the back-projected points are where the operator really sampled."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as tv_deform_conv2d

import viz
from models import build_model
from tests.stack_model import Stack, constant_offsets

TAPS = list(itertools.product((-1, 0, 1), repeat=2))  # (dy, dx) of tap k = i*3 + j, row-major


@pytest.mark.parametrize("method", viz.METHODS)
def test_zero_offsets_give_the_regular_lattice(method):
    model = build_model("regular").eval()  # offsets are zero by definition
    cap = viz.capture(model, torch.rand(1, 1, 28, 28))
    pts = viz.backproject(cap, (6, 8), method=method)  # unit row 6, column 8
    assert pts.units_xy.tolist() == [[8 * 2 + 0.5, 6 * 2 + 0.5]]  # (x, y) in pixels
    assert [pts.count(level=k) for k in (1, 2, 3)] == ([9, 25, 49] if method == "exact" else [9, 81, 729])
    final = pts.where(level=3)
    # A 7x7 lattice, spacing 2 px (stride 2 of the 14x14 maps), centred on the unit.
    xs, ys = pts.x[final], pts.y[final]
    lattice = Counter(zip(((xs - 16.5) / 2).tolist(), ((ys - 12.5) / 2).tolist(), strict=True))
    assert set(lattice) == {(float(a), float(b)) for a in range(-3, 4) for b in range(-3, 4)}
    one_d = [1, 3, 6, 7, 6, 3, 1]  # paths per offset along one axis: [1,1,1] convolved 3 times
    for (a, b), n in lattice.items():
        expected = one_d[int(a) + 3] * one_d[int(b) + 3]
        if method == "exact":  # merged: one point, weight = number of paths
            assert n == 1 and float(pts.weight[final][(xs == 16.5 + 2 * a) & (ys == 12.5 + 2 * b)]) == expected
        else:
            assert n == expected
    regular = viz.regular_grid(cap, (6, 8), method=method)
    assert torch.equal(regular.x, pts.x) and torch.equal(regular.y, pts.y)


def test_regular_grid_of_a_deformable_model_ignores_its_offsets():
    torch.manual_seed(0)
    model = build_model("deform").eval()
    for layer in model.top:
        torch.nn.init.normal_(layer.offset_conv.weight, std=0.1)
    cap = viz.capture(model, torch.rand(1, 1, 28, 28))
    deformed = viz.backproject(cap, (7, 7))
    regular = viz.regular_grid(cap, (7, 7))
    assert not torch.allclose(deformed.x, regular.x)
    assert sorted(set(regular.x[regular.level == 3].tolist())) == [8.5 + 2 * i for i in range(7)]


def test_single_layer_points_reproduce_the_operator_output():
    """Bilinearly sampling the layer input at the level-1 points, weighted by mask and kernel,
    gives the layer's real output (torchvision's op) at that unit, incl. points off the map."""
    torch.manual_seed(0)
    h, w = 9, 13  # not square: a transposed x/y cannot pass
    offsets = [3 * torch.randn(18, h, w)]
    masks = [torch.rand(9, h, w)]
    kernel = torch.randn(1, 1, 3, 3)
    model = Stack(offsets, masks, pixel_stride=(2.0, 3.0), pixel_offset=(0.5, 1.0), weights=[kernel])
    x = torch.rand(1, 1, h, w)
    cap = viz.capture(model, x, keep_features=True)
    reference = tv_deform_conv2d(x, offsets[0][None], kernel, padding=1, mask=masks[0][None])
    assert torch.allclose(cap.top.outputs, reference, atol=1e-5)
    outside = 0
    for unit in [(0, 0), (4, 6), (8, 12), (2, 11)]:
        pts = viz.backproject(cap, unit, levels=1, method="bilinear")
        # Back from pixels to input-map coordinates (row = (py - 0.5) / 2, col = (px - 1) / 3).
        my, mx = (pts.y - 0.5) / 2.0, (pts.x - 1.0) / 3.0
        grid = torch.stack(((2 * mx + 1) / w - 1, (2 * my + 1) / h - 1), dim=-1).view(1, 1, 9, 2)
        vals = F.grid_sample(x, grid, align_corners=False).view(9)
        outside += int((~pts.inside).sum())
        value = (vals * pts.weight * kernel.view(9)).sum()
        assert float(value) == pytest.approx(float(reference[0, 0, unit[0], unit[1]]), abs=1e-5)
    assert outside > 0, "the random offsets should push some samples off the map"
    # viz.layer_points: every unit at once, in input-map coordinates; the same truth holds.
    ly, lx, lw = viz.layer_points(cap)
    assert ly.shape == lx.shape == lw.shape == (1, 9, h, w)
    grid = torch.stack(((2 * lx[0] + 1) / w - 1, (2 * ly[0] + 1) / h - 1), dim=-1)  # (9, H, W, 2)
    vals = F.grid_sample(x.expand(9, -1, -1, -1), grid, align_corners=False)[:, 0]  # (9, H, W)
    assert torch.allclose((vals * lw[0] * kernel.view(9, 1, 1)).sum(0), reference[0, 0], atol=1e-5)


def test_three_levels_constant_integer_offsets_by_hand():
    size = (11, 11)
    shifts = [(0.0, 0.0), (0.0, 2.0), (1.0, 0.0)]  # bottom, middle, top layer
    model = Stack([constant_offsets(dy, dx, size) for dy, dx in shifts])
    cap = viz.capture(model, torch.rand(1, 1, *size))
    expected = Counter()
    for t3, t2, t1 in itertools.product(TAPS, repeat=3):
        y = 5 + t3[0] + 1 + t2[0] + 0 + t1[0] + 0
        x = 5 + t3[1] + 0 + t2[1] + 2 + t1[1] + 0
        expected[(float(x), float(y))] += 1
    for method in ("nearest", "bilinear"):
        pts = viz.backproject(cap, (5, 5), method=method)
        final = pts.where(level=3)
        assert Counter(zip(pts.x[final].tolist(), pts.y[final].tolist(), strict=True)) == expected
    exact = viz.backproject(cap, (5, 5), method="exact")
    final = exact.where(level=3)
    got = {
        (x, y): w
        for x, y, w in zip(exact.x[final].tolist(), exact.y[final].tolist(), exact.weight[final].tolist(), strict=True)
    }
    assert got == {k: float(v) for k, v in expected.items()}


def test_position_dependent_offsets_by_hand():
    # Middle layer: units in the left half look one column right, the right half one left.
    size = (9, 9)
    mid = torch.zeros(9, 2, *size)
    mid[:, 1, :, :4] = 1.0
    mid[:, 1, :, 5:] = -1.0
    model = Stack([constant_offsets(0, 0, size), mid.view(18, *size), constant_offsets(0, 0, size)])
    cap = viz.capture(model, torch.rand(1, 1, *size))
    pts = viz.backproject(cap, (4, 4), method="nearest")
    expected = Counter()
    for t3, t2, t1 in itertools.product(TAPS, repeat=3):
        y1, x1 = 4 + t3[0], 4 + t3[1]  # level 1 on the middle layer's output map
        shift = 1 if x1 < 4 else (-1 if x1 > 4 else 0)
        y2, x2 = y1 + t2[0], x1 + t2[1] + shift
        expected[(float(x2 + t1[1]), float(y2 + t1[0]))] += 1
    final = pts.where(level=3)
    assert Counter(zip(pts.x[final].tolist(), pts.y[final].tolist(), strict=True)) == expected


@pytest.mark.parametrize("modulated", [False, True])
def test_exact_weights_equal_the_units_true_dependence(modulated):
    """With unit kernels the top unit is linear in the input; its gradient is the true
    dependence on each input pixel, and must equal the exact-mode weights."""
    torch.manual_seed(1)
    size = (10, 12)
    offsets = [2.5 * torch.randn(18, *size) for _ in range(3)]
    masks = [torch.rand(9, *size) for _ in range(3)] if modulated else None
    model = Stack(offsets, masks)
    x = torch.rand(1, 1, *size, requires_grad=True)
    unit = (4, 7)
    model(x)[0, 0, unit[0], unit[1]].backward()
    cap = viz.capture(model, x.detach())
    pts = viz.backproject(cap, unit, method="exact")
    final = pts.where(level=3)
    dependence = torch.zeros(size)
    dependence[pts.y[final].long(), pts.x[final].long()] = pts.weight[final]
    assert torch.allclose(dependence, x.grad[0, 0], atol=1e-5)
    assert len(set(zip(pts.x[final].tolist(), pts.y[final].tolist(), strict=True))) == int(final.sum())


def test_transposed_coordinates_cannot_pass():
    # Every tap moved 2 rows down on a 7x12 map: only y changes.
    size = (7, 12)
    model = Stack([constant_offsets(2.0, 0.0, size)])
    cap = viz.capture(model, torch.rand(1, 1, *size))
    pts = viz.backproject(cap, (1, 9), method="bilinear")
    assert pts.units_xy.tolist() == [[9.0, 1.0]]
    assert sorted(pts.y.tolist()) == [2.0] * 3 + [3.0] * 3 + [4.0] * 3
    assert sorted(pts.x.tolist()) == [8.0] * 3 + [9.0] * 3 + [10.0] * 3


def test_bilinear_offsets_are_interpolated_between_units():
    size = (8, 8)
    top = constant_offsets(0.5, 0.0, size)  # top samples land half-way between rows
    mid = torch.zeros(9, 2, *size)
    mid[:, 1] = torch.arange(8.0).view(8, 1).expand(8, 8)  # dx = row index: a function of row
    model = Stack([mid.view(18, *size), top])
    cap = viz.capture(model, torch.rand(1, 1, *size))
    pts = viz.backproject(cap, (3, 3), method="bilinear")
    lvl2 = pts.where(level=2)
    parents = pts.parent[lvl2]
    # dx read at a parent at row r + 0.5 is the interpolated r + 0.5.
    expected_shift = pts.y[parents]
    tap_dx = torch.tensor([t[1] for t in TAPS], dtype=torch.float32).repeat(9)
    assert torch.allclose(pts.x[lvl2] - pts.x[parents] - tap_dx, expected_shift)
    near = viz.backproject(cap, (3, 3), method="nearest")
    lvl2n = near.where(level=2)
    assert 0 < int(lvl2n.sum()) < 81  # samples pushed past the right edge are dropped
    tap_dx_n = torch.tensor([t[1] for t in TAPS], dtype=torch.float32)[near.tap[lvl2n]]
    # nearest: the row is rounded (r + 0.5 -> r + 1) before the offset is read there
    rounded_row = torch.floor(near.y[near.parent[lvl2n]] + 0.5)
    assert torch.allclose(near.x[lvl2n] - near.x[near.parent[lvl2n]] - tap_dx_n, rounded_row)
    assert torch.equal(pts.tap[lvl2], torch.arange(9).repeat(9))


def test_nearest_drops_points_off_the_map_and_bilinear_flags_them():
    size = (6, 6)
    model = Stack([constant_offsets(0, 0, size), constant_offsets(0.0, -4.0, size)])
    cap = viz.capture(model, torch.rand(1, 1, *size))
    near = viz.backproject(cap, (2, 1), method="nearest")
    bil = viz.backproject(cap, (2, 1), method="bilinear")
    assert bil.count(level=2) == 81 and near.count(level=2) < 81
    assert (bil.x[~bil.inside] <= -1).all() and (~bil.inside).any()
    assert (near.x >= -0.5).all()


def test_all_units_at_once_match_one_by_one():
    torch.manual_seed(0)
    model = build_model("deform2").eval()
    for layer in model.top:
        torch.nn.init.normal_(layer.offset_conv.weight, std=0.05)
        torch.nn.init.normal_(layer.mask_conv[0].weight, std=0.05)
    cap = viz.capture(model, torch.rand(3, 1, 28, 28))
    every = viz.backproject(cap, "all", image=2)
    assert len(every.units_yx) == 196 and every.count(level=3) == 196 * 729
    for b, unit in [(0, (0, 0)), (100, (7, 2)), (195, (13, 13))]:
        one = viz.backproject(cap, unit, image=2)
        sel = every.unit == b
        assert torch.allclose(every.x[sel], one.x) and torch.allclose(every.weight[sel], one.weight)
    # DCNv2 masks are the weights: products of sigmoids, in (0, 1) on the map.
    assert (every.weight < 1).all() and (every.weight[every.inside] > 0).all()


def test_bad_arguments_are_clear():
    cap = viz.capture(build_model("regular").eval(), torch.rand(1, 1, 28, 28))
    with pytest.raises(ValueError, match="outside the top layer's 14x14 map"):
        viz.backproject(cap, (14, 0))
    with pytest.raises(ValueError, match="levels must be between 1 and 3"):
        viz.backproject(cap, (1, 1), levels=4)
    with pytest.raises(ValueError, match="method must be one of"):
        viz.backproject(cap, (1, 1), method="cubic")


def test_path_count_equals_the_points_paths_for_grouped_layers():
    import torch

    from examples.dcn_families import randomise_offsets
    from models.nets.scenes import SceneNet
    from viz import backproject, capture
    from viz.backproject import path_count

    torch.manual_seed(0)
    cap = capture(randomise_offsets(SceneNet("dcnv4").eval(), std=0.05), torch.rand(1, 1, 64, 64))
    for levels in (1, 2, 3):
        for group in (None, 1):
            pts = backproject(cap, (4, 4), levels=levels, group=group)
            assert path_count(cap, levels, group) == pts.paths(levels) == pts.count(level=levels)
    assert path_count(cap, 3) == 36**3 and path_count(cap, 3, 0) == 9 * 36**2


@pytest.mark.parametrize("name", ["scene_deform2", "dcnv4"])
def test_exact_weight_maps_equal_the_exact_points_merged(name):
    """The exact method as a product of the layers' sparse sampling matrices gives the same
    weights, on the same units, as back-projecting and merging points."""
    import torch

    import viz
    from examples.dcn_families import randomise_offsets
    from models.nets.scenes import SceneNet
    from viz.backproject import exact_weight_maps

    torch.manual_seed(0)
    model = viz.load(name) if name.startswith("scene") else randomise_offsets(SceneNet(name).eval(), std=0.05)
    cap = viz.capture(model, viz.load_scene_samples().images[10])
    units = torch.tensor([[6, 10], [0, 15], [8, 8]])
    for levels in (1, 3):
        maps, layer = exact_weight_maps(cap, units, levels=levels)
        pts = viz.backproject(cap, units, levels=levels, method="exact")
        (sy, sx), (oy, ox) = layer.pixel_stride, layer.pixel_offset
        for u in range(len(units)):
            sel = pts.where(level=levels, unit=u)
            dense = torch.zeros_like(maps[u])
            dense[((pts.y[sel] - oy) / sy).round().long(), ((pts.x[sel] - ox) / sx).round().long()] = pts.weight[sel]
            torch.testing.assert_close(maps[u], dense, rtol=1e-5, atol=1e-6)


def test_a_deep_stack_is_back_projected_as_deep_as_the_point_budget_allows():
    from viz.backproject import POINT_BUDGET, deepest_level, path_count

    size = (12, 12)
    deep = Stack([constant_offsets(0.25, -0.5, size) for _ in range(6)])
    cap = viz.capture(deep, torch.rand(1, 12, 12))
    assert [path_count(cap, n) for n in (5, 6)] == [9**5, 9**6]
    assert deepest_level(cap) == 5  # 9^5 = 59,049 fits the budget, 9^6 does not
    pts = viz.backproject(cap, (6, 6))  # no level asked: the deepest that fits
    assert pts.levels == 5 and pts.count(level=5) == 9**5 <= POINT_BUDGET
    assert viz.backproject(cap, (6, 6), levels=6).count(level=6) == 9**6  # asked for: given
    shallow = viz.capture(Stack([constant_offsets(0, 0, size) for _ in range(3)]), torch.rand(1, 12, 12))
    assert deepest_level(shallow) == 3 and viz.backproject(shallow, (6, 6)).levels == 3
    assert deepest_level(cap, budget=80) == 1 and deepest_level(cap, budget=81) == 2


@pytest.mark.parametrize("method", ["nearest", "bilinear", "exact"])
def test_sample_box_holds_every_units_samples_and_its_bounds_hold_the_box(method, monkeypatch):
    """One frame for all units: exact when small; the cheaper bounds (one level less back-projected,
    or level by level over the whole map) never cut a sample."""
    import sys

    from viz.backproject import sample_box

    bp = sys.modules["viz.backproject"]
    model = viz.load("scene_deform")
    cap = viz.capture(model, viz.load_scene_samples().images[10])
    exact = sample_box(cap, 3, method)
    pts = viz.backproject(cap, "all", levels=3, method=method)
    final = pts.where(level=3)
    assert exact == pytest.approx(
        (float(pts.x[final].min()), float(pts.x[final].max()), float(pts.y[final].min()), float(pts.y[final].max()))
    )
    for budget in (100_000, 0):  # 256 units x 81 fits, x 729 does not; then nothing fits
        monkeypatch.setattr(bp, "BOX_SAMPLES", budget)
        bound = sample_box(cap, 3, method)
        assert bound[0] <= exact[0] + 1e-6 and bound[1] >= exact[1] - 1e-6
        assert bound[2] <= exact[2] + 1e-6 and bound[3] >= exact[3] - 1e-6
