"""The views registry: every view computes once and draws from what it computed."""

from __future__ import annotations

import numpy as np
import pytest

import viz
from viz.views import REGISTRY, SUPPORT_VIEWS, VIEWS, View, get_view


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


class LevelOne(View):
    """The architecture page's worked example: the top layer's own samples."""

    name = "level 1 only"
    caption = "the top layer's own samples, before any recursion"
    needs_model = False

    def compute(self, model, cap, unit, method="bilinear", levels=None, group=None):
        return {"cap": cap, "pts": viz.backproject(cap, unit, levels=1, method=method, group=group)}

    def panel(self, result, title, unit):
        from viz.figures import image_panel, points_layer

        return image_panel(title, result["cap"], 0, [points_layer(result["pts"])])

    def plain(self, result):
        return f"The top layer reads {len(result['pts'])} samples."


def test_a_new_view_is_one_subclass_and_one_registry_line(scene, monkeypatch):
    """The architecture page's worked example, registered as its one line would: the page
    function computes and draws it, and the app's scene page offers it, says what it found and
    puts it in the address, with no page changed."""
    import viz.views as views
    from viz.pages import analyse, unit_view

    registry = {**REGISTRY, "level 1 only": LevelOne()}
    monkeypatch.setattr(views, "REGISTRY", registry)
    monkeypatch.setattr(views, "VIEWS", tuple(registry))
    model, twin, cap, _ = scene
    pair = analyse(model, twin, viz.load_scene_samples().images[10], "scene_deform")
    shown = unit_view(pair, (model, twin), ("d", "r"), (6, 10), "level 1 only")
    assert shown.found == "The top layer reads 9 samples" and len(shown.spec.panels) == 2
    assert len(next(layer for layer in shown.spec.panels[0].layers if layer.kind == "points").x) == 9

    from streamlit.testing.v1 import AppTest

    from tests.conftest import REPO

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120).run()
    assert "level 1 only" in at.radio(key="scene_view").options
    at.radio(key="scene_view").set_value("level 1 only").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("The top layer reads 9 samples" in c.value for c in at.caption)
    assert at.query_params["view"] == "level 1 only"
