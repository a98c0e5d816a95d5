"""viz.pages: what each app page computes, without Streamlit (the pages and viz.bench call these)."""

from __future__ import annotations

import pytest
import torch

import viz
from viz.pages import DIGIT_TABS, analyse, digit_tab, input_key, roi_view, scene_reads, scene_unit_words, unit_view
from viz.samples import load_samples, load_scene_samples
from viz.stats import centre_unit
from viz.views import VIEWS


@pytest.fixture(scope="module")
def digits():
    models = viz.load("deform_rts"), viz.load("regular_rts")
    return models, analyse(*models, load_samples().images[1], "deform_rts")


def test_analyse_captures_both_models_once_and_keys_by_image_and_names(digits):
    models, pair = digits
    image = load_samples().images[1]
    assert pair.key == input_key(image, "deform_rts") != input_key(image, "deform_plain")
    assert pair.deform.images.shape == (1, 1, 28, 28) and torch.equal(pair.image, image)
    assert torch.equal(pair.regular.logits, viz.capture(models[1], image).logits)
    flat = analyse(models[0], None, image, "x")  # no twin: the same layers with offsets zero
    assert all(torch.all(lc.offsets_yx == 0) for lc in flat.regular.layers)


def test_the_points_view_counts_what_it_draws(digits):
    models, pair = digits
    unit = centre_unit(pair.deform)
    shown = unit_view(pair, models, ("deformable", "regular twin"), unit, VIEWS[0])
    drawn = next(layer for layer in shown.spec.panels[0].layers if layer.kind == "points")
    assert len(drawn.x) == 729 and shown.found.startswith("729 sampling points") and shown.draws_points
    assert shown.entries[0]["pts"].count(level=3) == 729


def test_a_model_view_is_not_asked_of_a_twin_without_a_model(digits):
    models, pair = digits
    shown = unit_view(pair, (models[0], None), ("yours", "offsets zero"), (7, 7), "effective receptive field")
    assert len(shown.entries) == 1 and "pixels" in shown.found and not shown.draws_points


def test_every_digit_tab_has_a_figure_and_an_unknown_one_is_refused(digits):
    _, pair = digits
    names = {digit_tab(pair, tab, (7, 7)).name for tab in (*DIGIT_TABS, "probabilities")}
    assert len(names) == len(DIGIT_TABS) + 1
    with pytest.raises(ValueError, match="tab must be one of"):
        digit_tab(pair, "nope", (7, 7))


def test_scene_words_and_reads():
    models = viz.load("scene_deform"), viz.load("scene_regular")
    scenes = load_scene_samples()
    digits = scenes.digits_of(10)
    boxes, labels = scenes.boxes[digits], [int(v) for v in scenes.labels[digits]]
    pair = analyse(*models, scenes.images[10], "scene_deform", "scene_regular")
    rows = scene_reads(pair, boxes, labels)
    assert [r["true"] for r in rows] == [str(v) for v in labels]
    assert sum(r["deformable reads"] == r["true"] for r in rows) >= len(rows) - 1
    shown = unit_view(pair, models, ("d", "r"), (6, 10), VIEWS[0], levels=3)
    words = scene_unit_words(pair, shown, boxes, (6, 10), "bilinear", 3, None)
    assert words.startswith("Unit (6, 10) lies on digit") and "729 sampling points at level 3" in words
    spec, said = roi_view(
        viz.load("roi_deform"), viz.load("roi_regular"), scenes.images[10], tuple(boxes[0].tolist()), 0, labels[0]
    )
    assert spec.panels and f"(true label {labels[0]})" in said


def test_the_frame_holds_still_whichever_unit_is_chosen(digits):
    """A click moves the points, not the picture: every unit's view has the same axes, and every
    point drawn lies inside them."""
    from viz.pages import unit_frame

    models, pair = digits
    frame = unit_frame(pair, 3, "bilinear")
    extents = set()
    for unit in ((0, 0), (7, 7), (13, 13), (0, 13)):
        for view in (VIEWS[0], VIEWS[2]):
            shown = unit_view(pair, models, ("d", "r"), unit, view, frame=frame)
            for panel in shown.spec.panels:
                extents.add(tuple(round(v, 6) for v in panel.extent))
                x0, x1, y1, y0 = panel.extent
                for layer in panel.layers:
                    if layer.kind == "points":
                        assert (layer.x >= x0).all() and (layer.x <= x1).all()
                        assert (layer.y >= y0).all() and (layer.y <= y1).all()
    assert len(extents) == 1
