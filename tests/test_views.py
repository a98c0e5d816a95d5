"""The views registry: every view computes once and draws from what it computed."""

from __future__ import annotations

import numpy as np
import pytest

import viz
from viz.views import REGISTRY, SUPPORT_VIEWS, VIEWS, SamplingPoints, View, get_view


@pytest.fixture(scope="module")
def scene():
    model, twin = viz.load("scene_deform"), viz.load("scene_regular")
    image = viz.load_scene_samples().images[10]
    return model, twin, viz.capture(model, image), viz.capture(twin, image)


def test_the_registry_offers_every_view_once_in_order():
    assert VIEWS == ("sampling points", "effective receptive field", "effective sampling locations", "saliency region")
    assert [v.name for v in SUPPORT_VIEWS] == list(VIEWS[1:])
    assert all(isinstance(v, View) and v.caption for v in REGISTRY.values())
    with pytest.raises(ValueError, match="view must be one of"):
        get_view("no such view")


def test_the_points_view_draws_the_points_it_computed(scene):
    model, twin, cap, cap_r = scene
    shown = get_view("sampling points")
    entries = [
        {**shown.compute(m, c, (6, 10), "bilinear"), "title": t} for m, c, t in ((model, cap, "d"), (twin, cap_r, "r"))
    ]
    spec = shown.figure(entries, (6, 10))
    drawn = next(layer for layer in spec.panels[0].layers if layer.kind == "points")
    pts = entries[0]["pts"]
    final = pts.where(level=3)
    assert np.array_equal(drawn.x, pts.x[final].numpy()) and len(drawn.x) == 729


@pytest.mark.parametrize("name", VIEWS[1:])
def test_each_support_view_computes_draws_and_says_what_it_found(scene, name):
    model, _, cap, _ = scene
    shown = get_view(name)
    result = shown.compute(model, cap, (6, 10), "bilinear")
    spec = shown.figure([{**result, "title": "deformable"}], (6, 10))
    assert spec.name == "unit_view" and name in spec.title and len(spec.panels) == 1
    assert spec.panels[0].layers[0].kind == "units"  # clickable
    sentence = shown.plain(result)
    assert sentence.endswith(".") and any(ch.isdigit() for ch in sentence)


def test_a_new_view_is_one_subclass(scene):
    """The architecture page's worked example: a view that marks the unit's level-1 samples."""
    from viz.figures import image_panel, points_layer

    class LevelOne(SamplingPoints):
        name = "level 1 only"
        caption = "the top layer's own samples"
        draws_points = False

        def compute(self, model, cap, unit, method="bilinear", levels=None, group=None):
            return {"cap": cap, "pts": viz.backproject(cap, unit, levels=1, method=method)}

        def panel(self, result, title, unit):
            return image_panel(title, result["cap"], 0, [points_layer(result["pts"])])

        figure = View.figure

    model, _, cap, _ = scene
    view = LevelOne()
    spec = view.figure([{**view.compute(model, cap, (6, 10)), "title": "d"}], (6, 10))
    assert len(next(layer for layer in spec.panels[0].layers if layer.kind == "points").x) == 9
