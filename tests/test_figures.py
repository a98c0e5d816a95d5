"""Figure specs hold exactly the data from viz (checked here, not pixels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import viz
from viz.figures import (
    adaptation_figure,
    levels_figure,
    modulation_figure,
    offset_field_figure,
    receptive_field_figure,
)
from viz.samples import load_samples
from viz.stats import background_unit, centre_unit


def _kind(panel, kind: str):
    return next(layer for layer in panel.layers if layer.kind == kind)


@pytest.fixture(scope="module")
def models():
    return {name: viz.load(name) for name in ("deform_rts", "regular_rts", "deform2_plain")}


@pytest.fixture(scope="module")
def digit():
    return load_samples().images[1]


def test_receptive_field_draws_729_backprojected_points_per_unit(models, digit):
    from models.data.transforms import rotate_scale

    images = torch.stack([digit, rotate_scale(digit, 0.0, 0.6), rotate_scale(digit, 0.0, 1.3)])
    spec = receptive_field_figure(viz.capture(models["deform_rts"], images), viz.capture(models["regular_rts"], images))
    assert len(spec.panels) == 6
    for panel in spec.panels:
        pts_layer = next(layer for layer in panel.layers if layer.kind == "points")
        unit_layer = next(layer for layer in panel.layers if layer.kind == "unit")
        assert len(pts_layer.x) == len(pts_layer.y) == 729
        assert len(unit_layer.x) == 1
    # The first panel's points are exactly viz.backproject of the background unit.
    cap = viz.capture(models["deform_rts"], digit)
    unit = background_unit(cap)
    pts = viz.backproject(cap, unit)
    final = pts.where(level=3)
    first = _kind(spec.panels[0], "points")
    # (the figure captures a batch of 3, this a batch of 1: equal up to float rounding)
    assert np.allclose(first.x, pts.x[final].numpy(), atol=1e-4) and np.allclose(
        first.y, pts.y[final].numpy(), atol=1e-4
    )
    assert np.allclose(_kind(spec.panels[0], "unit").x, pts.units_xy[:, 0].numpy())
    assert not viz.on_digit_units(cap)[unit]
    for panel in spec.panels:  # no point hidden outside the axes (the frame is outlined then)
        x0, x1, y1, y0 = panel.extent
        p = _kind(panel, "points")
        assert p.x.min() >= x0 and p.x.max() <= x1 and p.y.min() >= y0 and p.y.max() <= y1
    assert any(layer.label == "image frame" for panel in spec.panels for layer in panel.layers)
    # The regular row is the fixed lattice: 49 distinct positions, spacing 2 px.
    reg = _kind(spec.panels[3], "points")
    assert len(set(zip(reg.x.tolist(), reg.y.tolist(), strict=True))) == 49
    assert set(np.diff(np.unique(reg.x)).tolist()) == {2.0}


def test_centre_unit_is_the_unit_nearest_the_inks_centre_of_mass(models, digit):
    """The unit's pixel lies within half a unit spacing (1 px at stride 2) of the centre of mass,
    computed here by hand (the centre of mass itself may sit in a hole of the digit)."""
    cap = viz.capture(models["deform_rts"], digit)
    img = cap.images[0, 0].numpy().astype(np.float64)
    ys, xs = np.mgrid[: img.shape[0], : img.shape[1]]
    cy, cx = (ys * img).sum() / img.sum(), (xs * img).sum() / img.sum()
    row, col = centre_unit(cap)
    (sy, sx), (oy, ox) = cap.top.out_pixel_stride, cap.top.out_pixel_offset
    assert abs(oy + sy * row - cy) <= sy / 2 and abs(ox + sx * col - cx) <= sx / 2
    uy, ux = centre_unit(cap)
    img = digit[0]
    ys, xs = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    cy, cx = float((ys * img).sum() / img.sum()), float((xs * img).sum() / img.sum())
    assert abs(2 * uy + 0.5 - cy) <= 1.0 and abs(2 * ux + 0.5 - cx) <= 1.0


def test_levels_figure_links_children_to_parents(models, digit):
    spec = levels_figure(viz.capture(models["deform_rts"], digit), unit=(7, 7))
    counts = [
        len(next(layer for layer in p.layers if layer.label.startswith(f"level {i + 1}:")).x)
        for i, p in enumerate(spec.panels)
    ]
    assert counts == [9, 81, 729]
    cap = viz.capture(models["deform_rts"], digit)
    pts = viz.backproject(cap, (7, 7))
    seg = next(layer for layer in spec.panels[2].layers if layer.label == "parent to child")
    lvl3 = pts.where(level=3)
    assert np.allclose(seg.x, pts.x[pts.parent[lvl3]].numpy()) and np.allclose(seg.x2, pts.x[lvl3].numpy())


def test_offset_field_arrows_are_mean_offsets_in_pixels_subsampled_and_shortened_to_never_cross(models, digit):
    from viz.figures import ARROWS_PER_SIDE

    cap = viz.capture(models["deform_rts"], digit)
    spec = offset_field_figure(cap)
    assert len(spec.panels) == 3
    arrows = spec.panels[2].layers[0]
    mean = cap.layers[2].offsets_yx[0, 0].mean(0)  # (2, 14, 14)
    step = 2  # 14 units a side, at most 8 arrows: every 2nd unit, from unit 1
    assert len(arrows.x) == 7 * 7 <= ARROWS_PER_SIDE**2
    assert np.allclose(arrows.x[:3], [2.5, 6.5, 10.5])  # units 1, 3, 5 at pixel 2 * u + 0.5
    dx, dy = 2 * mean[1, 1::step, 1::step].flatten().numpy(), 2 * mean[0, 1::step, 1::step].flatten().numpy()
    longest = np.hypot(dx, dy).max()
    scale = 0.9 * step * 2 / longest  # the top layer's offsets (8.5 px on average) outgrow a 4 px spacing
    assert scale < 1 and f"arrows x{scale:.2g}" in spec.panels[2].title
    assert np.allclose(arrows.x2, scale * dx, atol=1e-5) and np.allclose(arrows.y2, scale * dy, atol=1e-5)
    assert np.hypot(arrows.x2, arrows.y2).max() <= 0.9 * 4 + 1e-5  # no arrow reaches the next one's unit
    mean_px = float(torch.hypot(2 * mean[0], 2 * mean[1]).mean())
    assert f"mean |offset| {mean_px:.2f} px" in spec.panels[2].title  # over every unit, full length


def test_adaptation_regular_curve_is_flat(models, digit):
    from models.data.transforms import rotate_scale

    scales = (0.6, 0.8, 1.0, 1.2, 1.4)
    variants = [(sc, 0.0) for sc in scales] + [(1.0, 45.0)]
    images = torch.stack([rotate_scale(digit, a, sc) for sc, a in variants])
    caps = viz.capture(models["deform_rts"], images), viz.capture(models["regular_rts"], images)
    spec = adaptation_figure(*caps, variants, scales)
    curves = {layer.label: layer for layer in spec.panels[-1].layers}
    assert np.allclose(curves["regular"].y, 2.0)
    assert curves["deformable"].x.tolist() == [0.6, 0.8, 1.0, 1.2, 1.4]
    assert np.isfinite(curves["deformable"].y).all()


def test_modulation_sizes_follow_mask_products(models, digit):
    spec = modulation_figure(viz.capture(models["deform2_plain"], digit), unit=(7, 7))
    cap = viz.capture(models["deform2_plain"], digit)
    pts = viz.backproject(cap, (7, 7))
    layer = _kind(spec.panels[2], "points")
    w = pts.weight[pts.where(level=3)].numpy()
    assert np.allclose(layer.sizes, 4 + 60 * w / w.max())
    with pytest.raises(ValueError, match="DCNv2"):
        modulation_figure(viz.capture(models["deform_rts"], digit))


def test_scene_figures_draw_the_backprojected_points_of_the_picked_units():
    from models import SceneNet
    from viz.figures import dilation_vs_size_figure, scene_receptive_field_figure
    from viz.scene_stats import pick_units, unit_digits

    torch.manual_seed(0)
    deform = SceneNet("deform", widths=(8, 8, 8, 8, 8)).eval()
    for name, p in deform.named_parameters():
        if "offset_conv" in name:
            torch.nn.init.normal_(p, std=2.0 if name.endswith("bias") else 0.3)
    regular = SceneNet("regular", widths=(8, 8, 8, 8, 8)).eval()
    images = torch.rand(2, 1, 64, 64)
    boxes = [torch.tensor([[2.0, 2.0, 14.0, 14.0], [20.0, 20.0, 62.0, 62.0]]), torch.tensor([[30.0, 5.0, 45.0, 20.0]])]
    heights = [torch.tensor([12.0, 42.0]), torch.tensor([15.0])]
    cap_d, cap_r = viz.capture(deform, images), viz.capture(regular, images)
    picks = [pick_units(cap_d, boxes[i], heights[i], image=i) for i in range(2)]
    spec = scene_receptive_field_figure(cap_d, cap_r, picks)
    # scene 1: background, small, large for both models; scene 2 has no large digit
    assert len(spec.panels) == 2 * 3 + 2 * 2
    first = spec.panels[0]
    pts = viz.backproject(cap_d, picks[0]["background"], image=0)
    drawn = next(layer for layer in first.layers if layer.kind == "points")
    assert np.array_equal(drawn.x, pts.x[pts.level == 3].numpy())
    for panel in spec.panels:  # every point is inside the axes, none hidden
        x0, x1, y1, y0 = panel.extent
        for layer in panel.layers:
            if layer.kind == "points":
                assert (
                    (layer.x >= x0).all() and (layer.x <= x1).all() and (layer.y >= y0).all() and (layer.y <= y1).all()
                )
    lattice = next(layer for layer in spec.panels[3].layers if layer.kind == "points")
    assert len(set(lattice.x.tolist())) <= 7  # the regular twin: a 7x7 lattice
    dil = dilation_vs_size_figure({"deform": cap_d, "regular": cap_r}, boxes, heights)
    dots = [layer for layer in dil.panels[0].layers if layer.kind == "points"]
    n_units = sum(int((unit_digits(cap_d, boxes[i]) >= 0).sum()) for i in range(2))
    assert [len(d.x) for d in dots] == [n_units, n_units]
    assert np.allclose(dots[1].y, 4.0)  # the regular twin: 4 px everywhere


def test_unit_points_figure_for_a_digit_pair(models, digit):
    from viz.figures import count_note, unit_points_figure

    cap_d, cap_r = viz.capture(models["deform_rts"], digit), viz.capture(models["regular_rts"], digit)
    spec = unit_points_figure(cap_d, cap_r, (5, 6))
    assert [p.title for p in spec.panels] == ["deformable", "regular twin"]
    units = next(layer for layer in spec.panels[0].layers if layer.kind == "units")
    assert len(units.x) == 196 and units.custom[6 * 14 + 3].tolist() == [6, 3]
    assert (units.x[6 * 14 + 3], units.y[6 * 14 + 3]) == (6.5, 12.5)  # x = 2*col + 0.5, y = 2*row + 0.5
    pts = viz.backproject(cap_d, (5, 6))
    drawn = next(layer for layer in spec.panels[0].layers if layer.kind == "points")
    assert np.array_equal(drawn.x, pts.x[pts.level == 3].numpy()) and drawn.label == count_note(pts)
    x0, x1, y1, y0 = spec.panels[0].extent  # every point inside the axes
    assert drawn.x.min() >= x0 and drawn.x.max() <= x1 and drawn.y.min() >= y0 and drawn.y.max() <= y1
    merged = next(layer for layer in spec.panels[1].layers if layer.kind == "points")
    assert len(merged.x) == 49 and merged.label == "729 samples on 49 positions (size = count)"
    assert merged.sizes.max() > merged.sizes.min()  # the centre holds 7*7 = 49 samples, a corner 1


def test_count_note_explains_each_method(models, digit):
    from viz.figures import count_note

    cap = viz.capture(models["deform_rts"], digit)
    near = viz.backproject(cap, (0, 0), method="nearest")
    assert count_note(near).startswith(f"{near.count(level=3)} of 729 sampling points (level 3)")
    assert "dropped" in count_note(near) or near.count(level=3) == 729
    exact = viz.backproject(cap, (0, 0), method="exact")
    assert count_note(exact).startswith(f"{exact.count(level=3)} positions (level 3) carrying the weight of all 729")


def test_signed_weights_are_drawn_as_such():
    """DCNv4's weights may be negative: the unit view draws positive ones red and negative ones
    blue, opacity by |weight| relative to the largest, and names the family in its note."""
    import numpy as np
    import torch

    from examples.dcn_families import randomise_offsets
    from models.nets.scenes import SceneNet
    from viz import capture
    from viz.figures import POINT_BLUE, POINT_RED, family_note, unit_points_figure

    torch.manual_seed(0)
    model = randomise_offsets(SceneNet("dcnv4").eval(), std=0.2)
    cap = capture(model, torch.rand(1, 1, 64, 64))
    twin = capture(SceneNet("regular").eval(), torch.rand(1, 1, 64, 64))
    spec = unit_points_figure(cap, twin, (8, 8), levels=2, method="bilinear", group=1)
    layers = [lay for lay in spec.panels[0].layers if lay.kind == "points"]
    colours = {lay.color for lay in layers}
    assert colours == {POINT_RED, POINT_BLUE}
    assert sum(len(lay.x) for lay in layers) == 9 * 36
    assert max(float(lay.alphas.max()) for lay in layers) == 1.0
    assert all(np.all(lay.alphas >= 0.08) for lay in layers)
    assert "DCNv4" in family_note(cap) and "4 group(s) x 9 points" in family_note(cap)


def test_a_colour_models_panels_show_its_input_in_colour():
    from viz.figures import unit_points_figure

    model = viz.load_user_model("examples.dcn_families:intern_image", input_size=32, in_channels=3, mean=0, std=1)
    image = viz.prepare_for(model, viz.sample_photo("chelsea"))
    assert image.shape == (3, 32, 32)
    cap = viz.capture(model, image)
    spec = unit_points_figure(cap, cap.without_offsets(), (4, 4))
    drawn = spec.panels[0].image
    assert drawn.shape == (32, 32, 3)
    np.testing.assert_array_equal(drawn, image.permute(1, 2, 0).numpy())  # as received, not one channel
    assert np.abs(drawn[..., 0] - drawn[..., 2]).max() > 0.1  # a photo, not grey


def test_the_levels_caption_names_the_bottom_layer_only_at_the_bottom():
    from tests.stack_model import Stack, constant_offsets
    from viz.figures import levels_caption

    size = (10, 10)
    cap = viz.capture(Stack([constant_offsets(0, 0, size) for _ in range(4)]), torch.rand(1, 10, 10))
    three = levels_caption(viz.backproject(cap, (5, 5), levels=3), "bilinear", layers=4)
    assert "bottom layer" not in three and "level 3: layer 3 from the top's 9 samples" in three
    assert three.endswith("The top 3 of the model's 4 stacked layers.")
    four = levels_caption(viz.backproject(cap, (5, 5)), "bilinear", layers=4)
    assert "level 4: the bottom layer's 9 samples" in four and "The top" not in four


def test_a_unit_with_more_samples_than_can_be_drawn_is_a_density_of_the_same_weight(tmp_path):
    from tests.stack_model import Stack, constant_offsets
    from viz.figures import DENSITY_ABOVE, density_heat, unit_points_figure
    from viz.render import panel_traces, render

    size = (12, 12)
    torch.manual_seed(0)
    fields = [constant_offsets(0.3 * (i - 2), 0.7 - 0.2 * i, size) for i in range(5)]
    masks = [torch.rand(9, *size) for _ in range(5)]  # DCNv2-like weights: products of masks
    cap = viz.capture(Stack(fields, masks), torch.rand(1, 12, 12))
    pts = viz.backproject(cap, (6, 6))
    assert pts.levels == 5 and pts.count(level=5) == 9**5 > DENSITY_ABOVE
    heat, (ox, oy) = density_heat(pts, 5)
    total = float(pts.weight[pts.where(level=5)].double().sum())
    assert np.nansum(heat) == pytest.approx(total, rel=1e-9)  # every sample's weight, once
    sel = pts.where(level=5)
    assert ox == float(pts.x[sel].round().min()) and oy == float(pts.y[sel].round().min())
    spec = unit_points_figure(cap, cap.without_offsets(), (6, 6))
    deformable, twin = spec.panels
    np.testing.assert_array_equal(deformable.heat, heat)  # NaN where no sample lands
    assert deformable.heat_origin == (ox, oy)
    assert np.nansum(deformable.heat) == pytest.approx(total, rel=1e-9)
    assert not [layer for layer in deformable.layers if layer.kind == "points"]  # no 59,049 markers
    assert twin.heat is None  # the twin's lattice stays points (merged, sized by count)
    x0, x1, y1, y0 = deformable.extent  # the density lies inside the axes
    assert x0 <= ox - 0.5 and x1 >= ox + heat.shape[1] - 0.5 and y0 <= oy - 0.5 and y1 >= oy + heat.shape[0] - 0.5
    heat_trace = next(t for t in panel_traces(deformable) if t["type"] == "heatmap" and "colorbar" in t)
    assert (heat_trace["x0"], heat_trace["y0"], heat_trace["dx"], heat_trace["dy"]) == (ox, oy, 1, 1)
    assert render(spec, tmp_path).exists()
